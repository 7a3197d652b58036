//! `/healthz` (the process serves) and `/readyz` (its backend answers).

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::startup::AppState;

/// 200 while the process serves.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// 200 when the backend answers; embedded mode always does.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.ready() {
        HttpResponse::Ok().json(json!({"status": "ready"}))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({"status": "unavailable"}))
    }
}
