//! Static assets compiled into the binary: the demo board page.

use actix_web::{web, HttpResponse};

use crate::http::ApiError;
use crate::startup::AppState;

const INDEX_HTML: &str = include_str!("../../static/index.html");

/// `GET /`: the demo board, unless `DEMO=off`.
pub async fn index(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if !state.config.demo {
        return Err(ApiError::NotFound("the demo board is off".into()));
    }
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(INDEX_HTML))
}
