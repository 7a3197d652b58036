//! Static assets compiled into the binary: the demo board page and the browser client.

use actix_web::{web, HttpResponse};

use crate::http::ApiError;
use crate::startup::AppState;

const INDEX_HTML: &str = include_str!("../../static/index.html");
const CLIENT_JS: &str = include_str!("../../static/boardcast.js");
const CLIENT_TYPES: &str = include_str!("../../static/boardcast.d.ts");

/// `GET /`: the demo board, unless `DEMO=off`.
pub async fn index(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if !state.config.demo {
        return Err(ApiError::NotFound("the demo board is off".into()));
    }
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(INDEX_HTML))
}

/// `GET /client/boardcast.js`: the browser client, an ES module.
pub async fn client_js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(("Cache-Control", "no-cache"))
        .body(CLIENT_JS)
}

/// `GET /client/boardcast.d.ts`: its TypeScript declarations.
pub async fn client_types() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(CLIENT_TYPES)
}

/// `GET /favicon.ico`: nothing, said plainly (204), so browsers log no error for it.
pub async fn favicon() -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header(("Cache-Control", "max-age=86400"))
        .finish()
}
