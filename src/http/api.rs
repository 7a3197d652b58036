//! The HTTP API for backends (`/api/*`): board events, user events, presence and kicks, and
//! reading a board and its retained events.
//!
//! Every route takes a bearer JWT with role `server` and acts within its tenant.

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::actors::broker::{Announce, Append, AppendCustom, GetCatchup, PublishUser};
use crate::actors::presence::{ListPresence, ListWorkspace};
use crate::actors::room::GetCursors;
use crate::auth::{Identity, Role};
use crate::backend::ops::OpKey;
use crate::backend::Catchup;
use crate::board::DurableOp;
use crate::event::{BoardEvent, BoardKey, PresenceEntry};
use crate::http::ws::{authenticate, checked_board};
use crate::http::ApiError;
use crate::protocol::encode;
use crate::startup::AppState;

/// Prefixes and names a backend may not use: they belong to the protocol itself.
const RESERVED_PREFIXES: [&str; 6] = [
    "presence.",
    "cursor.",
    "typing.",
    "board.",
    "auth.",
    "workspace.",
];
const RESERVED_NAMES: [&str; 3] = ["ack", "error", "pong"];

/// The author of events sent through the API.
pub const SERVER_USER: &str = "server";

/// Whether `kind` matches `^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$`.
pub fn valid_type_name(kind: &str) -> bool {
    let mut parts = 0;
    for part in kind.split('.') {
        let mut bytes = part.bytes();
        let starts_with_letter = bytes.next().is_some_and(|b| b.is_ascii_lowercase());
        if !starts_with_letter
            || !bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return false;
        }
        parts += 1;
    }
    parts >= 2
}

fn check_type(kind: &str) -> Result<(), ApiError> {
    if !valid_type_name(kind) {
        return Err(ApiError::BadRequest(format!(
            "{kind:?} is not a dotted lower-case type name"
        )));
    }
    if RESERVED_NAMES.contains(&kind) || RESERVED_PREFIXES.iter().any(|p| kind.starts_with(p)) {
        return Err(ApiError::BadRequest(format!(
            "{kind:?} is reserved for the protocol"
        )));
    }
    Ok(())
}

/// The caller, who must hold a `server` token.
fn server(state: &AppState, req: &HttpRequest) -> Result<Identity, ApiError> {
    let identity = authenticate(state, req.headers(), None)?;
    if identity.role != Role::Server {
        return Err(ApiError::Forbidden(
            "the HTTP API needs a token with role server".into(),
        ));
    }
    Ok(identity)
}

/// The board a `server` token's request is about, in the token's tenant.
fn server_board(state: &AppState, req: &HttpRequest, board: &str) -> Result<BoardKey, ApiError> {
    let identity = server(state, req)?;
    Ok(BoardKey::new(identity.tenant, checked_board(board)?))
}

/// Reads a JSON body of at most `MAX_MESSAGE_BYTES`.
async fn json_body<T: for<'de> Deserialize<'de>>(
    state: &AppState,
    mut payload: web::Payload,
) -> Result<T, ApiError> {
    let limit = state.config.max_message_bytes;
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::BadRequest(format!("cannot read the body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge(format!(
                "the body is over {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

fn mailbox_error<E>(_: E) -> ApiError {
    ApiError::Unavailable("the broker is not answering".into())
}

/// Body of an event request.
#[derive(Deserialize)]
pub struct EventBody {
    /// The event's type.
    #[serde(rename = "type")]
    kind: String,
    /// Its payload; an object.
    #[serde(default)]
    payload: Option<Value>,
    /// Deliver without sequencing or storing (custom types only).
    #[serde(default)]
    ephemeral: bool,
}

fn payload_object(payload: Option<Value>) -> Result<Map<String, Value>, ApiError> {
    match payload {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map),
        Some(_) => Err(ApiError::BadRequest("payload must be an object".into())),
    }
}

/// The `Idempotency-Key` header, when present: 1 to 255 visible ASCII characters.
fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(key.to_string()))
        }
        _ => Err(ApiError::BadRequest(
            "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
        )),
    }
}

/// `POST /api/boards/{board}/events`.
pub async fn board_event(
    req: HttpRequest,
    board: web::Path<String>,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let key = server_board(&state, &req, &board)?;
    let retry_key = idempotency_key(&req)?;
    let body: EventBody = json_body(&state, body).await?;
    check_type(&body.kind)?;
    let payload = payload_object(body.payload)?;
    // Records of the API's operations are kept under the empty user, which no token's `sub`
    // can be, so they never meet a session's.
    let op_key = |kind: &str, payload: &Value| {
        retry_key
            .as_deref()
            .map(|k| OpKey::new("", k, kind, payload))
    };
    if body.kind.starts_with("item.") || body.kind == "value.set" {
        if body.ephemeral {
            return Err(ApiError::BadRequest(format!(
                "{} is always durable",
                body.kind
            )));
        }
        let op = DurableOp::decode(&body.kind, payload)
            .map_err(ApiError::BadRequest)?
            .ok_or_else(|| ApiError::BadRequest(format!("unknown board event {}", body.kind)))?;
        let op_key = op_key(op.kind(), &op.payload());
        let appended = state
            .broker
            .send(Append {
                board: key,
                op,
                user_id: SERVER_USER.into(),
                ack: None,
                key: op_key,
            })
            .await
            .map_err(mailbox_error)??;
        return Ok(HttpResponse::Accepted().json(json!({"seq": appended.seq})));
    }
    let mut payload = payload;
    payload.insert("userId".into(), json!(SERVER_USER));
    let payload = Value::Object(payload);
    if body.ephemeral {
        state
            .broker
            .send(Announce {
                board: key,
                event: BoardEvent::Broadcast {
                    frame: encode(&body.kind, &payload, None),
                },
            })
            .await
            .map_err(mailbox_error)??;
        return Ok(HttpResponse::Accepted().json(json!({})));
    }
    let op_key = op_key(&body.kind, &payload);
    let seq = state
        .broker
        .send(AppendCustom {
            board: key,
            kind: body.kind,
            payload,
            key: op_key,
        })
        .await
        .map_err(mailbox_error)??;
    Ok(HttpResponse::Accepted().json(json!({ "seq": seq })))
}

/// `POST /api/users/{user}/events`.
pub async fn user_event(
    req: HttpRequest,
    user: web::Path<String>,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let identity = server(&state, &req)?;
    let user = user.into_inner();
    if user.is_empty() || user.chars().count() > 256 {
        return Err(ApiError::BadRequest(
            "user must be 1 to 256 characters".into(),
        ));
    }
    let body: EventBody = json_body(&state, body).await?;
    check_type(&body.kind)?;
    let payload = Value::Object(payload_object(body.payload)?);
    state
        .broker
        .send(PublishUser {
            tenant: identity.tenant,
            user_id: user,
            frame: encode(&body.kind, &payload, None),
        })
        .await
        .map_err(mailbox_error)??;
    Ok(HttpResponse::Accepted().json(json!({})))
}

/// `POST /api/events`: for every session of the tenant, on any board and instance.
pub async fn tenant_event(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let identity = server(&state, &req)?;
    let body: EventBody = json_body(&state, body).await?;
    check_type(&body.kind)?;
    let payload = Value::Object(payload_object(body.payload)?);
    state
        .broker
        .send(Announce {
            board: BoardKey::workspace(identity.tenant),
            event: BoardEvent::Broadcast {
                frame: encode(&body.kind, &payload, None),
            },
        })
        .await
        .map_err(mailbox_error)??;
    Ok(HttpResponse::Accepted().json(json!({})))
}

/// `GET /api/presence`: who is online in the tenant, with their boards.
pub async fn tenant_presence(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let identity = server(&state, &req)?;
    let users = state
        .presence
        .send(ListWorkspace {
            tenant: identity.tenant,
        })
        .await
        .map_err(mailbox_error)??;
    Ok(HttpResponse::Ok().json(json!({ "users": users })))
}

/// `GET /api/boards/{board}/presence`.
pub async fn presence(
    req: HttpRequest,
    board: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let key = server_board(&state, &req, &board)?;
    let cursors = match state.registry.get(&key) {
        Some(room) => room.send(GetCursors).await.unwrap_or_default(),
        None => Default::default(),
    };
    let users = state
        .presence
        .send(ListPresence { board: key })
        .await
        .map_err(mailbox_error)??;
    let entries: Vec<PresenceEntry<'_>> = users
        .iter()
        .map(|user| PresenceEntry {
            user,
            cursor: cursors.get(&user.user_id).copied().flatten(),
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "users": entries })))
}

/// Most events one page of `GET /api/boards/{board}/events` holds, and how many by default.
const EVENTS_PAGE_MAX: usize = 1000;
const EVENTS_PAGE_DEFAULT: usize = 100;

/// A snapshot, or the events after `after` (of `epoch` when given), from the broker.
async fn catchup(
    state: &AppState,
    board: BoardKey,
    after: Option<u64>,
    epoch: Option<String>,
) -> Result<Catchup, ApiError> {
    Ok(state
        .broker
        .send(GetCatchup {
            board,
            last_seq: after,
            epoch,
        })
        .await
        .map_err(mailbox_error)??)
}

/// `GET /api/boards/{board}`: the board's items and values with their versions, as a snapshot
/// holds them; an unknown board is empty at seq 0.
pub async fn board(
    req: HttpRequest,
    board: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let key = server_board(&state, &req, &board)?;
    let board_id = key.board.clone();
    match catchup(&state, key, None, None).await? {
        Catchup::Snapshot {
            seq,
            items,
            values,
            epoch,
            ..
        } => Ok(HttpResponse::Ok().json(json!({
            "boardId": board_id, "seq": seq, "epoch": epoch, "items": items, "values": values
        }))),
        Catchup::Replay { .. } => Err(ApiError::Internal(
            "the backend answered a snapshot request with a replay".into(),
        )),
    }
}

/// Query of `GET /api/boards/{board}/events`.
#[derive(Deserialize)]
pub struct EventsQuery {
    /// Events after this seq (0 when absent).
    after: Option<String>,
    /// At most this many (1 to 1000, 100 when absent).
    limit: Option<String>,
    /// The epoch `after` belongs to; when the board's is another, 410.
    epoch: Option<String>,
}

/// `GET /api/boards/{board}/events?after=N&limit=M&epoch=E`: the retained durable events after
/// `N`, in order, at most `M`; 410 when some after `N` are no longer retained (or `N` is of
/// another epoch, or ahead of the board): the caller reads the board instead.
pub async fn events(
    req: HttpRequest,
    board: web::Path<String>,
    query: web::Query<EventsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let key = server_board(&state, &req, &board)?;
    let after = match query.after.as_deref() {
        None | Some("") => 0,
        Some(n) => n
            .parse::<u64>()
            .map_err(|_| ApiError::BadRequest("after must be a whole number".into()))?,
    };
    let limit = match query.limit.as_deref() {
        None | Some("") => EVENTS_PAGE_DEFAULT,
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=EVENTS_PAGE_MAX).contains(n))
            .ok_or_else(|| ApiError::BadRequest("limit must be 1 to 1000".into()))?,
    };
    let epoch = match query.epoch.as_deref() {
        None | Some("") => None,
        Some(e) if e.len() <= 64 && e.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            Some(e.to_string())
        }
        Some(_) => {
            return Err(ApiError::BadRequest(
                "epoch must be 1-64 characters of A-Z a-z 0-9".into(),
            ))
        }
    };
    match catchup(&state, key, Some(after), epoch).await? {
        Catchup::Replay {
            frames, to, epoch, ..
        } => {
            let events = frames
                .iter()
                .take(limit)
                .map(|frame| serde_json::from_str::<Value>(frame))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ApiError::Internal(format!("a stored event does not decode: {e}")))?;
            Ok(HttpResponse::Ok().json(json!({"events": events, "seq": to, "epoch": epoch})))
        }
        Catchup::Snapshot { seq, .. } => Err(ApiError::Gone(format!(
            "events after {after} are not retained (the board is at seq {seq}); read the board \
             with GET /api/boards/{{board}}"
        ))),
    }
}

/// Body of a kick.
#[derive(Deserialize)]
pub struct KickBody {
    /// The user to remove from the board.
    #[serde(rename = "userId")]
    user_id: String,
}

/// `POST /api/boards/{board}/kick`.
pub async fn kick(
    req: HttpRequest,
    board: web::Path<String>,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let key = server_board(&state, &req, &board)?;
    let body: KickBody = json_body(&state, body).await?;
    state
        .broker
        .send(Announce {
            board: key,
            event: BoardEvent::Kick {
                user_id: body.user_id,
            },
        })
        .await
        .map_err(mailbox_error)??;
    Ok(HttpResponse::Accepted().json(json!({})))
}

/// `GET /metrics`.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::metrics::render(state.registry.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_are_dotted_lower_case() {
        for ok in ["a.b", "order.shipped", "x1.y_2.z"] {
            assert!(valid_type_name(ok), "{ok}");
        }
        for bad in [
            "ab", "A.b", "a..b", "a.b.", ".a.b", "1a.b", "a.B", "a-b.c", "",
        ] {
            assert!(!valid_type_name(bad), "{bad}");
        }
    }

    #[test]
    fn protocol_types_are_reserved() {
        for reserved in [
            "presence.join",
            "cursor.move",
            "typing.x",
            "board.snapshot",
            "auth.refresh",
            "workspace.online",
        ] {
            assert!(check_type(reserved).is_err(), "{reserved}");
        }
        assert!(check_type("order.shipped").is_ok());
    }
}
