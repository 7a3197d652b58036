//! The two encodings of the WebSocket protocol, chosen by each socket with a subprotocol.
//!
//! Server frames are built once as JSON text ([`crate::protocol::encode`]), which is also what
//! the broker carries between instances. A MessagePack socket gets the same message as one
//! MessagePack map with the same keys and values. [`WireFrame`] makes that form the first time
//! a MessagePack session needs it and shares it with every other session the frame goes to, so
//! a room pays one encoding per event per encoding present in it, never one per session.

use std::sync::{Arc, OnceLock};

use actix_web::http::header::{HeaderMap, SEC_WEBSOCKET_PROTOCOL};
use actix_web::web::Bytes;
use bytestring::ByteString;
use serde::Deserialize;
use serde_json::Value;

use crate::protocol::{parse_client_map, ClientFrame, FrameError};

/// The subprotocol of JSON text frames, the default.
pub(crate) const JSON_PROTOCOL: &str = "boardcast.v1.json";
/// The subprotocol of MessagePack binary frames.
pub(crate) const MSGPACK_PROTOCOL: &str = "boardcast.v1.msgpack";
/// Deepest nesting a MessagePack frame may have, as serde_json allows JSON.
const MAX_DEPTH: usize = 128;

/// How one socket's frames are encoded, both ways.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Encoding {
    /// One JSON text frame per message.
    #[default]
    Json,
    /// One binary frame per message, holding a MessagePack map.
    MsgPack,
}

impl Encoding {
    /// The subprotocol's name, as the upgrade answer names it.
    pub(crate) fn protocol(self) -> &'static str {
        match self {
            Encoding::Json => JSON_PROTOCOL,
            Encoding::MsgPack => MSGPACK_PROTOCOL,
        }
    }
}

/// The encoding an upgrade request asks for in `Sec-WebSocket-Protocol`: `None` without the
/// header (JSON, and the answer names no subprotocol), otherwise the first entry of the
/// client's list that boardcast speaks. A list without one is an error naming those it does.
pub(crate) fn negotiate(headers: &HeaderMap) -> Result<Option<Encoding>, String> {
    let mut asked = false;
    for value in headers.get_all(SEC_WEBSOCKET_PROTOCOL) {
        asked = true;
        let Ok(list) = value.to_str() else { continue };
        for name in list.split(',').map(str::trim) {
            match name {
                JSON_PROTOCOL => return Ok(Some(Encoding::Json)),
                MSGPACK_PROTOCOL => return Ok(Some(Encoding::MsgPack)),
                _ => {}
            }
        }
    }
    if asked {
        Err(format!(
            "Sec-WebSocket-Protocol names no supported subprotocol (supported: {JSON_PROTOCOL}, \
             {MSGPACK_PROTOCOL})"
        ))
    } else {
        Ok(None)
    }
}

/// A server frame as it goes out to many sessions: the JSON text, and the MessagePack form
/// made once, by the first MessagePack session that writes it. Cloning shares both.
#[derive(Clone, Debug)]
pub struct WireFrame(Arc<Forms>);

#[derive(Debug)]
struct Forms {
    json: ByteString,
    packed: OnceLock<Bytes>,
}

impl WireFrame {
    /// The frame as JSON text.
    pub fn json(&self) -> &ByteString {
        &self.0.json
    }

    /// The frame as MessagePack, encoded on first use.
    pub fn packed(&self) -> Bytes {
        self.0.packed.get_or_init(|| pack(&self.0.json)).clone()
    }
}

impl From<ByteString> for WireFrame {
    fn from(json: ByteString) -> Self {
        WireFrame(Arc::new(Forms {
            json,
            packed: OnceLock::new(),
        }))
    }
}

/// `{"type":"error","payload":{"code":"internal","message":"encoding failed"}}` as
/// MessagePack, for a frame that cannot be encoded (never expected: every frame is built by
/// the server).
const PACKED_ENCODING_FAILED: &[u8] = b"\x82\xa4type\xa5error\xa7payload\x82\xa4code\xa8internal\
\xa7message\xafencoding failed";

/// Re-encodes one of the server's JSON frames as a MessagePack map: objects as maps, integers
/// as integers, other numbers as 64-bit floats.
pub(crate) fn pack(json: &str) -> Bytes {
    let packed = serde_json::from_str::<Value>(json)
        .map_err(|e| e.to_string())
        .and_then(|value| rmp_serde::to_vec(&value).map_err(|e| e.to_string()));
    match packed {
        Ok(bytes) => Bytes::from(bytes),
        Err(e) => {
            log::error!("cannot encode a frame as MessagePack: {e}");
            Bytes::from_static(PACKED_ENCODING_FAILED)
        }
    }
}

/// Decodes one binary frame of a MessagePack socket: exactly one map, read with the rules of
/// a JSON frame ([`crate::protocol::parse_client_frame`]). Anything else is `bad_request`.
pub(crate) fn parse_packed_frame(bytes: &[u8]) -> Result<ClientFrame, FrameError> {
    let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
    de.set_max_depth(MAX_DEPTH);
    let value = Value::deserialize(&mut de)
        .map_err(|e| FrameError::bad_request(None, format!("invalid MessagePack frame: {e}")))?;
    if de.position() != bytes.len() as u64 {
        return Err(FrameError::bad_request(
            None,
            "a frame holds one MessagePack map and nothing after it",
        ));
    }
    match value {
        Value::Object(map) => parse_client_map(map),
        _ => Err(FrameError::bad_request(
            None,
            "a frame must be a MessagePack map",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ClientMessage, ErrorCode};
    use actix_web::http::header::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(
                SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_str(v).expect("value"),
            );
        }
        map
    }

    #[test]
    fn the_first_supported_subprotocol_of_the_list_wins() {
        assert_eq!(negotiate(&headers(&[])), Ok(None));
        assert_eq!(
            negotiate(&headers(&["boardcast.v1.json"])),
            Ok(Some(Encoding::Json))
        );
        assert_eq!(
            negotiate(&headers(&["x.v9, boardcast.v1.msgpack, boardcast.v1.json"])),
            Ok(Some(Encoding::MsgPack))
        );
        assert_eq!(
            negotiate(&headers(&["x.v9", "boardcast.v1.json"])),
            Ok(Some(Encoding::Json))
        );
        let err = negotiate(&headers(&["mqtt, boardcast.v2.json"])).expect_err("refused");
        assert!(err.contains("boardcast.v1.msgpack"), "{err}");
    }

    #[test]
    fn a_frame_keeps_its_keys_integers_and_floats() {
        let packed = pack(
            r#"{"type":"cursor.move","payload":{"userId":"ann","position":{"x":10,"y":2.5}}}"#,
        );
        let back: Value = rmp_serde::from_slice(&packed).expect("MessagePack");
        assert_eq!(
            back,
            serde_json::json!({"type":"cursor.move","payload":{"userId":"ann","position":{"x":10,"y":2.5}}})
        );
        // 10 is a positive fixint, 2.5 a float 64; the browser client's tests decode the same
        // bytes.
        let hex: String = packed.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "82a77061796c6f616482a8706f736974696f6e82a1780aa179cb4004000000000000a6757365724964a3\
             616e6ea474797065ab637572736f722e6d6f7665"
        );
    }

    #[test]
    fn the_fallback_error_is_the_packed_json_error() {
        let json = r#"{"type":"error","payload":{"code":"internal","message":"encoding failed"}}"#;
        let fallback: Value = rmp_serde::from_slice(PACKED_ENCODING_FAILED).expect("MessagePack");
        let packed: Value = rmp_serde::from_slice(&pack(json)).expect("MessagePack");
        assert_eq!(fallback, packed);
    }

    #[test]
    fn the_packed_form_is_made_once_and_shared() {
        let frame = WireFrame::from(ByteString::from_static(r#"{"type":"pong","payload":{}}"#));
        let copy = frame.clone();
        assert_eq!(frame.packed().as_ptr(), copy.packed().as_ptr());
    }

    #[test]
    fn client_maps_decode_like_json_frames() {
        let bytes = rmp_serde::to_vec(&serde_json::json!({
            "type": "cursor.move", "payload": {"position": {"x": 1, "y": 2.5}}, "id": "c1"
        }))
        .expect("encode");
        let frame = parse_packed_frame(&bytes).expect("decodes");
        assert_eq!(frame.id.as_deref(), Some("c1"));
        assert!(matches!(frame.message, ClientMessage::CursorMove(Some(_))));
    }

    #[test]
    fn any_integer_width_and_float_32_are_read() {
        // {"type":"cursor.move","payload":{"position":{"x":<uint16 300>,"y":<float32 1.5>}}}
        let mut bytes = b"\x82\xa4type\xabcursor.move\xa7payload\x81\xa8position\x82".to_vec();
        bytes.extend_from_slice(b"\xa1x\xcd\x01\x2c\xa1y\xca\x3f\xc0\x00\x00");
        let frame = parse_packed_frame(&bytes).expect("decodes");
        match frame.message {
            ClientMessage::CursorMove(Some(p)) => assert_eq!((p.x, p.y), (300.0, 1.5)),
            other => panic!("expected a cursor move, got {other:?}"),
        }
    }

    #[test]
    fn anything_but_one_map_is_a_bad_request() {
        let map = rmp_serde::to_vec(&serde_json::json!({"type": "ping"})).expect("encode");
        let mut trailing = map.clone();
        trailing.push(0xc0);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("truncated", map[..map.len() - 1].to_vec()),
            ("trailing bytes", trailing),
            ("an array", vec![0x92, 0x01, 0x02]),
            ("a string", b"\xa4ping".to_vec()),
            ("an integer key", vec![0x81, 0x01, 0x02]),
            (
                "binary data",
                vec![0x81, 0xa4, b't', b'y', b'p', b'e', 0xc4, 0x01, 0x00],
            ),
            (
                "an extension type",
                vec![0x81, 0xa4, b't', b'y', b'p', b'e', 0xd4, 0x01, 0x00],
            ),
            (
                "a huge declared string",
                vec![0xdb, 0xff, 0xff, 0xff, 0xff, b'x'],
            ),
            ("nesting too deep", [vec![0x91; 200], vec![0xc0]].concat()),
            (
                "unknown type",
                rmp_serde::to_vec(&serde_json::json!({"type": "nope"})).expect("encode"),
            ),
        ];
        for (what, bytes) in cases {
            let err = parse_packed_frame(&bytes).expect_err(what);
            assert_eq!(err.code, ErrorCode::BadRequest, "{what}");
        }
    }
}
