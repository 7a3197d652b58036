//! The wire contract: client frames in, server frames out, error codes and close codes.
//!
//! Everything a peer sends is decoded here, once, into typed messages; anything that does not
//! fit becomes a [`FrameError`] with code `bad_request` and never a panic. Error and close codes
//! are defined once, with the numbers `docs/protocol.md` documents.

use bytestring::ByteString;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::board::{string_field, DurableOp, Refusal};

/// Longest `id` a client may attach to a frame.
pub const MAX_ID_CHARS: usize = 64;

/// Close codes: 1000–1999 are the WebSocket standard's, 4000–4999 are boardcast's own.
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// A frame over `MAX_MESSAGE_BYTES`.
    pub const TOO_BIG: u16 = 1009;
    /// The instance is shutting down; reconnect at once with `last_seq`.
    pub const RESTARTING: u16 = 1012;
    /// The token expired or became invalid.
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// Kicked or access revoked; do not reconnect.
    pub const KICKED: u16 = 4003;
    /// Sustained rate abuse.
    pub const RATE_ABUSE: u16 = 4008;
    /// The session could not keep up with its board.
    pub const TOO_SLOW: u16 = 4009;
}

/// The `code` of an `error` frame (and of HTTP API errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame was not understood.
    BadRequest,
    /// The token's role or boards do not allow this.
    Forbidden,
    /// The item does not exist.
    NotFound,
    /// A version check failed or the item exists already.
    Conflict,
    /// The session is sending faster than its rate.
    RateLimited,
    /// A limit on size or count was reached.
    TooLarge,
    /// The backend cannot be reached; retry later.
    Unavailable,
    /// A fault of the server's own.
    Internal,
}

/// An error to send back to the client, with the `id` of the frame it answers.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameError {
    /// The `id` of the offending frame, when it had a valid one.
    pub id: Option<String>,
    /// What kind of error.
    pub code: ErrorCode,
    /// A human-readable explanation.
    pub message: String,
    /// For conflicts: the item or value as the server holds it.
    pub current: Option<Value>,
}

impl From<Refusal> for FrameError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::NotFound(message) => FrameError::new(None, ErrorCode::NotFound, message),
            Refusal::TooLarge(message) => FrameError::new(None, ErrorCode::TooLarge, message),
            Refusal::Conflict { message, current } => FrameError {
                id: None,
                code: ErrorCode::Conflict,
                message,
                current: Some(current),
            },
        }
    }
}

impl FrameError {
    /// An error without `current`.
    pub fn new(id: Option<String>, code: ErrorCode, message: impl Into<String>) -> Self {
        FrameError {
            id,
            code,
            message: message.into(),
            current: None,
        }
    }

    /// A `bad_request` error.
    pub fn bad_request(id: Option<String>, message: impl Into<String>) -> Self {
        Self::new(id, ErrorCode::BadRequest, message)
    }

    /// The `error` frame for this error.
    pub fn to_frame(&self) -> ByteString {
        #[derive(Serialize)]
        struct Payload<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            id: Option<&'a str>,
            code: ErrorCode,
            message: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            current: Option<&'a Value>,
        }
        encode(
            "error",
            &Payload {
                id: self.id.as_deref(),
                code: self.code,
                message: &self.message,
                current: self.current.as_ref(),
            },
            None,
        )
    }
}

/// A point on the board's canvas.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Horizontal coordinate; finite.
    #[serde(serialize_with = "coordinate")]
    pub x: f64,
    /// Vertical coordinate; finite.
    #[serde(serialize_with = "coordinate")]
    pub y: f64,
}

/// Writes a coordinate in one form wherever it appears (events and snapshots alike): a whole
/// number as an integer (`1`, not `1.0`), anything else as a float.
fn coordinate<S: serde::Serializer>(value: &f64, out: S) -> Result<S::Ok, S::Error> {
    if value.fract() == 0.0 && value.abs() < 9_007_199_254_740_992.0 {
        out.serialize_i64(*value as i64)
    } else {
        out.serialize_f64(*value)
    }
}

/// A user's presence status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The default for a user who just joined.
    #[default]
    Active,
    /// Set by the client when its user is away.
    Idle,
}

/// What a client can ask for, decoded and validated.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientMessage {
    /// `cursor.move`; `None` when the cursor left the canvas.
    CursorMove(Option<Point>),
    /// `typing.start` on one cell.
    TypingStart {
        /// The item being edited.
        item_id: String,
        /// The column being edited.
        column_id: String,
    },
    /// `typing.stop`.
    TypingStop,
    /// `presence.update`.
    PresenceUpdate(Status),
    /// `ping`, with the payload to echo.
    Ping(Value),
    /// `auth.refresh` with a new token.
    AuthRefresh(String),
    /// One of the durable board events.
    Durable(DurableOp),
}

/// A decoded client frame: the message and the `id` to answer with.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientFrame {
    /// The client's correlation id, at most [`MAX_ID_CHARS`] characters.
    pub id: Option<String>,
    /// The message itself.
    pub message: ClientMessage,
}

#[derive(Deserialize)]
struct RawFrame {
    #[serde(rename = "type")]
    kind: Value,
    #[serde(default)]
    payload: Option<Value>,
    #[serde(default)]
    id: Option<Value>,
}

/// Decodes one text frame. Unknown fields are ignored; anything else off-contract is
/// `bad_request`, with the frame's `id` echoed when it had a valid one.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, FrameError> {
    let raw: RawFrame = serde_json::from_str(text)
        .map_err(|e| FrameError::bad_request(None, format!("invalid frame: {e}")))?;
    decode_raw(raw)
}

/// Decodes a frame already read as a map (a MessagePack frame), with the same rules as
/// [`parse_client_frame`]; a missing `type` is "type must be a string".
pub(crate) fn parse_client_map(mut map: Map<String, Value>) -> Result<ClientFrame, FrameError> {
    decode_raw(RawFrame {
        kind: map.remove("type").unwrap_or(Value::Null),
        payload: map.remove("payload"),
        id: map.remove("id"),
    })
}

fn decode_raw(raw: RawFrame) -> Result<ClientFrame, FrameError> {
    let id = match raw.id {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() <= MAX_ID_CHARS => Some(s),
        Some(Value::String(_)) => {
            return Err(FrameError::bad_request(
                None,
                "id is longer than 64 characters",
            ))
        }
        Some(_) => return Err(FrameError::bad_request(None, "id must be a string")),
    };
    let kind = match raw.kind {
        Value::String(s) => s,
        _ => return Err(FrameError::bad_request(id, "type must be a string")),
    };
    let payload = match raw.payload {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(FrameError::bad_request(id, "payload must be an object")),
    };
    match decode_message(&kind, payload) {
        Ok(message) => Ok(ClientFrame { id, message }),
        Err(message) => Err(FrameError::bad_request(id, message)),
    }
}

/// Whether a decoded frame is a cursor move: moves over the rate limit are dropped quietly,
/// without the error other frames get.
pub fn is_cursor_move(frame: &ClientFrame) -> bool {
    matches!(frame.message, ClientMessage::CursorMove(_))
}

fn decode_message(kind: &str, mut payload: Map<String, Value>) -> Result<ClientMessage, String> {
    Ok(match kind {
        "cursor.move" => match payload.remove("position") {
            None => return Err("cursor.move needs position".into()),
            Some(Value::Null) => ClientMessage::CursorMove(None),
            Some(v) => ClientMessage::CursorMove(Some(point(v)?)),
        },
        "typing.start" => ClientMessage::TypingStart {
            item_id: string_field(&mut payload, "itemId")?,
            column_id: string_field(&mut payload, "columnId")?,
        },
        "typing.stop" => ClientMessage::TypingStop,
        "presence.update" => {
            let status = payload.remove("status").unwrap_or(Value::Null);
            ClientMessage::PresenceUpdate(
                serde_json::from_value(status)
                    .map_err(|_| "status must be \"active\" or \"idle\"".to_string())?,
            )
        }
        "ping" => ClientMessage::Ping(Value::Object(payload)),
        "auth.refresh" => ClientMessage::AuthRefresh(string_field(&mut payload, "token")?),
        _ => match DurableOp::decode(kind, payload)? {
            Some(op) => ClientMessage::Durable(op),
            None => return Err(format!("unknown type {kind:?}")),
        },
    })
}

/// Reads a finite `{"x","y"}` point.
pub fn point(v: Value) -> Result<Point, String> {
    let p: Point =
        serde_json::from_value(v).map_err(|_| "position must be {\"x\":number,\"y\":number}")?;
    if p.x.is_finite() && p.y.is_finite() {
        Ok(p)
    } else {
        Err("position must be finite".into())
    }
}

/// Serializes a server frame once; the bytes are then shared by every recipient.
pub fn encode<P: Serialize + ?Sized>(kind: &str, payload: &P, seq: Option<u64>) -> ByteString {
    #[derive(Serialize)]
    struct Out<'a, P: ?Sized> {
        #[serde(rename = "type")]
        kind: &'a str,
        payload: &'a P,
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    }
    match serde_json::to_string(&Out { kind, payload, seq }) {
        Ok(s) => ByteString::from(s),
        Err(e) => {
            log::error!("cannot encode a {kind} frame: {e}");
            ByteString::from_static(
                r#"{"type":"error","payload":{"code":"internal","message":"encoding failed"}}"#,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClientFrame, FrameError> {
        parse_client_frame(text)
    }

    #[test]
    fn a_cursor_move_decodes_with_its_id() {
        let frame =
            parse(r#"{"type":"cursor.move","payload":{"position":{"x":1,"y":2.5}},"id":"a"}"#)
                .expect("valid");
        assert_eq!(frame.id.as_deref(), Some("a"));
        assert_eq!(
            frame.message,
            ClientMessage::CursorMove(Some(Point { x: 1.0, y: 2.5 }))
        );
    }

    #[test]
    fn a_null_position_means_the_cursor_left() {
        let frame = parse(r#"{"type":"cursor.move","payload":{"position":null}}"#).expect("valid");
        assert_eq!(frame.message, ClientMessage::CursorMove(None));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let frame = parse(r#"{"type":"ping","payload":{"a":1},"extra":true}"#).expect("valid");
        assert_eq!(
            frame.message,
            ClientMessage::Ping(serde_json::json!({"a":1}))
        );
    }

    #[test]
    fn off_contract_frames_are_bad_requests_that_echo_the_id() {
        for text in [
            r#"{"type":"nope","id":"x"}"#,
            r#"{"type":"cursor.move","payload":{"position":{"x":"1","y":2}},"id":"x"}"#,
            r#"{"type":"cursor.move","payload":{},"id":"x"}"#,
            r#"{"type":"typing.start","payload":{"itemId":1},"id":"x"}"#,
            r#"{"type":"presence.update","payload":{"status":"away"},"id":"x"}"#,
            r#"{"type":"ping","payload":[1],"id":"x"}"#,
        ] {
            let err = parse(text).expect_err(text);
            assert_eq!(err.code, ErrorCode::BadRequest, "{text}");
            assert_eq!(err.id.as_deref(), Some("x"), "{text}");
        }
    }

    #[test]
    fn invalid_json_and_long_ids_are_bad_requests() {
        assert_eq!(
            parse("{nope").expect_err("json").code,
            ErrorCode::BadRequest
        );
        let long = format!(r#"{{"type":"ping","id":"{}"}}"#, "i".repeat(65));
        assert_eq!(parse(&long).expect_err("id").code, ErrorCode::BadRequest);
        let ok = format!(r#"{{"type":"ping","id":"{}"}}"#, "i".repeat(64));
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn numbers_out_of_range_are_refused() {
        let err = parse(r#"{"type":"cursor.move","payload":{"position":{"x":1e400,"y":0}}}"#)
            .expect_err("overflow");
        assert_eq!(err.code, ErrorCode::BadRequest);
    }

    #[test]
    fn whole_coordinates_are_written_as_integers() {
        let p = Point { x: 1.0, y: 2.5 };
        assert_eq!(
            serde_json::to_string(&p).expect("json"),
            r#"{"x":1,"y":2.5}"#
        );
        let far = Point { x: -1e300, y: 0.0 };
        let back: Point =
            serde_json::from_str(&serde_json::to_string(&far).expect("json")).expect("read back");
        assert_eq!(back, far);
    }

    #[test]
    fn frames_encode_with_seq_only_when_given() {
        let plain = encode("pong", &serde_json::json!({}), None);
        assert_eq!(&*plain, r#"{"type":"pong","payload":{}}"#);
        let durable = encode("x.y", &serde_json::json!({}), Some(3));
        assert_eq!(&*durable, r#"{"type":"x.y","payload":{},"seq":3}"#);
    }

    #[test]
    fn errors_encode_with_their_id() {
        let frame =
            FrameError::new(Some("7".into()), ErrorCode::RateLimited, "slow down").to_frame();
        let v: Value = serde_json::from_str(&frame).expect("json");
        assert_eq!(v["type"], "error");
        assert_eq!(v["payload"]["id"], "7");
        assert_eq!(v["payload"]["code"], "rate_limited");
    }
}
