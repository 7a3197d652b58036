//! `GET /ws/{board}`: every check of the connection table, then the upgrade to a session.
//!
//! Upgrade requests are taken out of the HTTP/1 dispatcher before routing
//! ([`crate::http::upgrade`]); both that path and the routed one check with [`admit`], so
//! they answer the same errors.

use actix_web::http::header::HeaderMap;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::auth::{AuthError, Identity, Role};
use crate::event::{valid_board_id, BoardKey};
use crate::http::ApiError;
use crate::startup::AppState;
use crate::wire::{negotiate, Encoding};

/// The token from `?token=` or, for non-browser clients, `Authorization: Bearer`.
pub fn bearer_or_query(headers: &HeaderMap, query_token: Option<&str>) -> Option<String> {
    if let Some(token) = query_token.filter(|t| !t.is_empty()) {
        return Some(token.to_string());
    }
    let header = headers.get(actix_web::http::header::AUTHORIZATION)?;
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
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<Identity, ApiError> {
    let token = bearer_or_query(headers, query_token).ok_or(AuthError::Missing);
    token
        .and_then(|t| state.verifier.verify(&t))
        .map_err(|e| ApiError::Unauthorized(e.to_string()))
}

/// `board`, checked: 400 unless it is 1–64 characters of `[A-Za-z0-9_-]`.
pub fn checked_board(board: &str) -> Result<&str, ApiError> {
    if valid_board_id(board) {
        Ok(board)
    } else {
        Err(ApiError::BadRequest(
            "board must be 1-64 characters of A-Z a-z 0-9 _ -".into(),
        ))
    }
}

/// Query parameters of the upgrade request.
#[derive(serde::Deserialize)]
pub struct WsQuery {
    /// The JWT, for browsers that cannot set headers on a WebSocket.
    token: Option<String>,
    /// The last seq the client saw, to resume.
    last_seq: Option<String>,
    /// The board's epoch that seq belongs to.
    epoch: Option<String>,
    /// `1` for the workspace frames.
    workspace: Option<String>,
}

/// A connection that passed every check: who joins which board, resuming from where.
pub struct Admitted {
    /// The board, in the token's tenant.
    pub key: BoardKey,
    /// The verified token.
    pub identity: Identity,
    /// The resume point, from `?last_seq=`.
    pub last_seq: Option<u64>,
    /// The epoch of the resume point, from `?epoch=`.
    pub epoch: Option<String>,
    /// The encoding from `Sec-WebSocket-Protocol`; `None` when the client named none.
    pub encoding: Option<Encoding>,
    /// It asked for the workspace frames, with `?workspace=1`.
    pub workspace: bool,
}

/// Checks board, token, role, boards claim, origin, `last_seq`, `epoch`, `workspace` and the
/// subprotocol, in that order.
pub fn admit(
    state: &AppState,
    board: &str,
    query: &str,
    headers: &HeaderMap,
) -> Result<Admitted, ApiError> {
    let board = checked_board(board)?;
    let query = web::Query::<WsQuery>::from_query(query)
        .map_err(|e| ApiError::BadRequest(format!("query: {e}")))?
        .into_inner();
    let identity = authenticate(state, headers, query.token.as_deref())?;
    if identity.role == Role::Server {
        return Err(ApiError::Forbidden(
            "server tokens are for the HTTP API".into(),
        ));
    }
    if !identity.may_join(board) {
        return Err(ApiError::Forbidden(
            "the token does not allow this board".into(),
        ));
    }
    if let (Some(allowed), Some(origin)) = (&state.config.allowed_origins, headers.get("origin")) {
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
    let epoch = match query.epoch {
        None => None,
        Some(e) if e.is_empty() => None,
        Some(e) if e.len() <= 64 && e.bytes().all(|b| b.is_ascii_alphanumeric()) => Some(e),
        Some(_) => {
            return Err(ApiError::BadRequest(
                "epoch must be 1-64 characters of A-Z a-z 0-9".into(),
            ))
        }
    };
    let workspace = match query.workspace.as_deref() {
        None | Some("") | Some("0") => false,
        Some("1") => true,
        Some(_) => return Err(ApiError::BadRequest("workspace must be 0 or 1".into())),
    };
    let encoding = negotiate(headers).map_err(ApiError::BadRequest)?;
    Ok(Admitted {
        key: BoardKey::new(identity.tenant.clone(), board),
        identity,
        last_seq,
        epoch,
        encoding,
        workspace,
    })
}

/// The routed path. An upgrade request never reaches it: actix-http hands every request with
/// `Upgrade: websocket` to [`crate::http::upgrade`] before routing. What does arrive is a plain
/// request for the socket: it gets the same checks, then 400.
pub async fn connect(
    req: HttpRequest,
    board: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    admit(&state, &board, req.query_string(), req.headers())?;
    let reason = match actix_http::ws::verify_handshake(req.head()) {
        Err(err) => err.to_string(),
        Ok(()) => "chunked upgrade requests are not supported".into(),
    };
    Err(ApiError::BadRequest(format!(
        "not a WebSocket upgrade: {reason}"
    )))
}
