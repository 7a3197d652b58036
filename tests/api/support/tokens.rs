//! Tokens signed with the test secret.

use boardcast::auth::{now_secs, Claims, Role};
use serde_json::Value;

use super::*;

/// Claims for `sub`, valid for an hour.
pub fn claims(sub: &str) -> Claims {
    Claims {
        sub: sub.into(),
        exp: now_secs() + 3600,
        name: Some(format!("{sub} name")),
        avatar: None,
        tenant: None,
        boards: None,
        role: Role::Editor,
    }
}

/// Signs `claims` with the test secret.
pub fn sign(claims: &Claims) -> String {
    sign_value(&serde_json::to_value(claims).expect("claims serialize"))
}

/// Signs any JSON claims with the test secret.
pub fn sign_value(claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .expect("signing works")
}

/// A token for `sub`, valid for an hour.
pub fn token(sub: &str) -> String {
    sign(&claims(sub))
}

/// A token with role `server` for the HTTP API.
pub fn server_token() -> String {
    let mut c = claims("backend");
    c.role = Role::Server;
    sign(&c)
}
