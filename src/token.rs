//! `boardcast token`: signs a token with the key the service is configured with, so that an
//! operator who set `JWT_SECRET` (or a key pair) can make one without writing JWT code.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::auth::{now_secs, valid_tenant, Role};
use crate::config::{Config, JwtKey};

/// What a token should say.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// The user id (`sub`).
    pub user: String,
    /// Display name.
    pub name: Option<String>,
    /// What the holder may do.
    pub role: Role,
    /// Tenant; `default` when absent.
    pub tenant: Option<String>,
    /// The only boards the token may join, when given.
    pub boards: Option<Vec<String>>,
    /// Lifetime, seconds.
    pub ttl: u64,
    /// PEM private key for RS256/ES256 (`JWT_ALGORITHM`), instead of `JWT_SECRET`.
    pub private_key: Option<String>,
}

/// Longest lifetime a token may be given here: 30 days.
pub const MAX_TTL_SECS: u64 = 30 * 86_400;

/// Why no token could be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// A value of the request is off.
    #[error("{0}")]
    Request(String),
    /// There is no key to sign with, or it cannot be read.
    #[error("{0}")]
    Key(String),
}

/// Signs a token for `request` with the key of `config` (or the request's private key).
pub fn make_token(config: &Config, request: &TokenRequest) -> Result<String, TokenError> {
    if request.user.is_empty() {
        return Err(TokenError::Request("--user must not be empty".into()));
    }
    if let Some(tenant) = request.tenant.as_deref().filter(|t| !valid_tenant(t)) {
        return Err(TokenError::Request(format!(
            "--tenant {tenant:?} must be 1-64 characters of A-Z a-z 0-9 _ -"
        )));
    }
    if request.ttl == 0 || request.ttl > MAX_TTL_SECS {
        return Err(TokenError::Request(format!(
            "--ttl must be 1 to {MAX_TTL_SECS} seconds"
        )));
    }
    let (algorithm, key) = signing_key(config, request.private_key.as_deref())?;
    let mut claims = json!({
        "sub": request.user,
        "exp": now_secs() + request.ttl,
        "role": request.role,
    });
    let fields = [
        ("name", request.name.clone().map(Value::from)),
        ("tenant", request.tenant.clone().map(Value::from)),
        ("boards", request.boards.clone().map(Value::from)),
        ("aud", config.jwt_audience.clone().map(Value::from)),
        ("iss", config.jwt_issuer.clone().map(Value::from)),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            claims[name] = value;
        }
    }
    jsonwebtoken::encode(&Header::new(algorithm), &claims, &key)
        .map_err(|e| TokenError::Key(format!("cannot sign: {e}")))
}

fn signing_key(
    config: &Config,
    private_key: Option<&str>,
) -> Result<(Algorithm, EncodingKey), TokenError> {
    if let Some(path) = private_key {
        let algorithm =
            match &config.jwt {
                JwtKey::PublicKey { algorithm, .. } => *algorithm,
                _ => return Err(TokenError::Key(
                    "--private-key needs JWT_PUBLIC_KEY (and JWT_ALGORITHM) set as for the service"
                        .into(),
                )),
            };
        let pem = std::fs::read(path)
            .map_err(|e| TokenError::Key(format!("--private-key {path}: {e}")))?;
        let key = match algorithm {
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
            _ => EncodingKey::from_rsa_pem(&pem),
        }
        .map_err(|e| TokenError::Key(format!("--private-key {path}: {e}")))?;
        return Ok((algorithm, key));
    }
    match &config.jwt {
        JwtKey::Secret(secret) => Ok((Algorithm::HS256, EncodingKey::from_secret(secret))),
        JwtKey::PublicKey { .. } => Err(TokenError::Key(
            "the service verifies with JWT_PUBLIC_KEY: give the private key with --private-key"
                .into(),
        )),
        JwtKey::Dev(_) => Err(TokenError::Key(
            "JWT_SECRET is not set: a running dev-mode service hands out its own tokens at \
             /dev/token; set JWT_SECRET (the service's) to sign one here"
                .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Verifier;

    fn request(user: &str) -> TokenRequest {
        TokenRequest {
            user: user.into(),
            name: Some("Ann".into()),
            role: Role::Server,
            tenant: Some("acme".into()),
            boards: Some(vec!["a".into(), "b".into()]),
            ttl: 60,
            private_key: None,
        }
    }

    fn config(jwt: JwtKey) -> Config {
        Config {
            jwt,
            ..Config::default()
        }
    }

    #[test]
    fn a_token_made_with_the_secret_verifies_with_its_claims() {
        let config = config(JwtKey::Secret(b"0123456789abcdef".to_vec()));
        let token = make_token(&config, &request("ann")).expect("a token");
        let identity = Verifier::new(&config.jwt)
            .expect("key")
            .verify(&token)
            .expect("valid");
        assert_eq!(identity.user_id, "ann");
        assert_eq!(identity.tenant, "acme");
        assert_eq!(identity.role, Role::Server);
        assert_eq!(
            identity.boards,
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert!(identity.exp <= now_secs() + 60);
    }

    #[test]
    fn audience_and_issuer_are_added_when_the_service_requires_them() {
        let mut config = config(JwtKey::Secret(b"0123456789abcdef".to_vec()));
        config.jwt_audience = Some("boards".into());
        config.jwt_issuer = Some("me".into());
        let token = make_token(&config, &request("ann")).expect("a token");
        let verifier = Verifier::new(&config.jwt)
            .expect("key")
            .expecting(Some("boards"), Some("me"));
        assert!(verifier.verify(&token).is_ok());
    }

    #[test]
    fn bad_requests_and_missing_keys_are_refused() {
        let secret = config(JwtKey::Secret(b"0123456789abcdef".to_vec()));
        let mut bad = request("");
        assert!(matches!(
            make_token(&secret, &bad),
            Err(TokenError::Request(_))
        ));
        bad = request("u");
        bad.tenant = Some("a|b".into());
        assert!(matches!(
            make_token(&secret, &bad),
            Err(TokenError::Request(_))
        ));
        bad = request("u");
        bad.ttl = 0;
        assert!(matches!(
            make_token(&secret, &bad),
            Err(TokenError::Request(_))
        ));
        let dev = config(JwtKey::Dev(vec![0; 32]));
        assert!(matches!(
            make_token(&dev, &request("u")),
            Err(TokenError::Key(_))
        ));
        let mut with_key = request("u");
        with_key.private_key = Some("/nonexistent.pem".into());
        assert!(matches!(
            make_token(&secret, &with_key),
            Err(TokenError::Key(_))
        ));
    }
}
