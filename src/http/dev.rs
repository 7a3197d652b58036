//! `GET /dev/token`: tokens for the demo page, only in dev mode (no `JWT_SECRET`).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{now_secs, valid_tenant, Claims, Role};
use crate::http::ApiError;
use crate::startup::AppState;

/// How long a dev token lasts unless `ttl` says otherwise.
const DEFAULT_TTL_SECS: u64 = 3600;

/// Query of `/dev/token`.
#[derive(Deserialize)]
pub struct DevTokenQuery {
    /// The user id (`sub`).
    user: Option<String>,
    /// Display name.
    name: Option<String>,
    /// Role: editor (default), viewer or server.
    role: Option<Role>,
    /// Tenant; `default` when absent.
    tenant: Option<String>,
    /// Lifetime in seconds, at most a day.
    ttl: Option<u64>,
}

/// Signs a token with the dev secret; 404 outside dev mode.
pub async fn token(
    query: web::Query<DevTokenQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if !state.config.jwt.is_dev() {
        return Err(ApiError::NotFound(
            "dev tokens are off: JWT_SECRET is set".into(),
        ));
    }
    let user = query.user.clone().unwrap_or_default();
    if user.is_empty() || user.chars().count() > 64 {
        return Err(ApiError::BadRequest(
            "user must be 1 to 64 characters".into(),
        ));
    }
    if let Some(tenant) = query.tenant.as_deref().filter(|t| !valid_tenant(t)) {
        return Err(ApiError::BadRequest(format!(
            "tenant {tenant:?} must be 1-64 characters of A-Z a-z 0-9 _ -"
        )));
    }
    let exp = now_secs() + query.ttl.unwrap_or(DEFAULT_TTL_SECS).clamp(1, 86_400);
    let claims = Claims {
        sub: user.clone(),
        exp,
        name: query.name.clone().or_else(|| Some(user.clone())),
        avatar: None,
        tenant: query.tenant.clone(),
        boards: None,
        role: query.role.unwrap_or_default(),
    };
    let token = state
        .verifier
        .sign_dev(&claims)
        .ok_or_else(|| ApiError::Internal("cannot sign a dev token".into()))?;
    Ok(HttpResponse::Ok().json(json!({"token": token, "userId": user, "expiresAt": exp})))
}
