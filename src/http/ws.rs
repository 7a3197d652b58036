//! `GET /ws/{board}`: every check of the connection table, then the upgrade to a session.

use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;

use crate::actors::session::Session;
use crate::auth::{AuthError, Identity, Role};
use crate::event::{valid_board_id, BoardKey};
use crate::http::ApiError;
use crate::startup::AppState;

/// The token from `?token=` or, for non-browser clients, `Authorization: Bearer`.
pub fn bearer_or_query(req: &HttpRequest, query_token: Option<&str>) -> Option<String> {
    if let Some(token) = query_token.filter(|t| !t.is_empty()) {
        return Some(token.to_string());
    }
    let header = req.headers().get(actix_web::http::header::AUTHORIZATION)?;
    let value = header.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// Verifies the request's token, mapping failures to 401.
pub fn authenticate(
    state: &AppState,
    req: &HttpRequest,
    query_token: Option<&str>,
) -> Result<Identity, ApiError> {
    let token = bearer_or_query(req, query_token).ok_or(AuthError::Missing);
    token
        .and_then(|t| state.verifier.verify(&t))
        .map_err(|e| ApiError::Unauthorized(e.to_string()))
}

/// Query parameters of the upgrade request.
#[derive(serde::Deserialize)]
pub struct WsQuery {
    /// The JWT, for browsers that cannot set headers on a WebSocket.
    token: Option<String>,
    /// The last seq the client saw, to resume.
    last_seq: Option<String>,
}

/// Checks board, token, role, boards claim and origin, then upgrades.
pub async fn connect(
    req: HttpRequest,
    stream: web::Payload,
    board: web::Path<String>,
    query: web::Query<WsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let board = board.into_inner();
    if !valid_board_id(&board) {
        return Err(ApiError::BadRequest(
            "board must be 1-64 characters of A-Z a-z 0-9 _ -".into(),
        ));
    }
    let identity = authenticate(&state, &req, query.token.as_deref())?;
    if identity.role == Role::Server {
        return Err(ApiError::Forbidden(
            "server tokens are for the HTTP API".into(),
        ));
    }
    if !identity.may_join(&board) {
        return Err(ApiError::Forbidden(
            "the token does not allow this board".into(),
        ));
    }
    if let (Some(allowed), Some(origin)) =
        (&state.config.allowed_origins, req.headers().get("origin"))
    {
        let origin = origin.to_str().unwrap_or_default().trim_end_matches('/');
        if !allowed.contains(origin) {
            return Err(ApiError::Forbidden("origin not allowed".into()));
        }
    }
    let last_seq = match query.last_seq.as_deref() {
        None | Some("") => None,
        Some(n) => Some(
            n.parse::<u64>()
                .map_err(|_| ApiError::BadRequest("last_seq must be a whole number".into()))?,
        ),
    };
    let key = BoardKey::new(identity.tenant.clone(), board);
    let session = Session::new(key, identity, last_seq, state.into_inner());
    let max = session_frame_limit(&req);
    ws::WsResponseBuilder::new(session, &req, stream)
        .frame_size(max)
        .start()
        .map_err(|e| ApiError::BadRequest(format!("not a WebSocket upgrade: {e}")))
}

fn session_frame_limit(req: &HttpRequest) -> usize {
    req.app_data::<web::Data<AppState>>()
        .map_or(65_536, |s| s.config.max_message_bytes)
}
