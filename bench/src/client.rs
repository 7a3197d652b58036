//! Tokens, connections and frames: the few parts of the wire contract the scenarios use.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client socket.
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connections per loopback source address before the next one is used. The kernel looks for a
/// free ephemeral port of a source address by scanning its range (28k ports here); once about
/// half of them are taken, each bind scans thousands: 19,000 connections from one address cost
/// the load generator 34 to 46 s of kernel CPU and held the measured connect rate near 700/s,
/// against 2.6 s and about 4,000/s with 5,000 per address (same server, back to back).
pub const PER_SOURCE: usize = 5_000;

/// An HS256 token for `sub`, valid for a day.
pub fn token(secret: &str, sub: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 86_400;
    let claims = serde_json::json!({"sub": sub, "name": sub, "exp": exp});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap_or_default()
}

/// The loopback source address for the `n`-th connection.
pub fn source_for(n: usize) -> IpAddr {
    let block = (n / PER_SOURCE) as u8;
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + block))
}

/// Host and port of a `ws://host:port` URL; only loopback targets are accepted.
pub fn target(base: &str) -> Result<SocketAddr, String> {
    let rest = base
        .strip_prefix("ws://")
        .ok_or("the URL must start with ws://")?;
    let host_port = rest.split('/').next().unwrap_or(rest);
    let addr: SocketAddr = host_port
        .replace("localhost", "127.0.0.1")
        .parse()
        .map_err(|_| format!("{host_port} is not host:port"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{addr} is not a loopback address; the load generator only targets this machine"
        ));
    }
    Ok(addr)
}

/// Buffer sizes for a load generator's sockets. tungstenite zero-fills the free part of its
/// read buffer before every read, so its 128 KiB default costs a 128 KiB memset per read of a
/// few hundred bytes: a sixth of the load generator's CPU, measured.
pub fn socket_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(8 * 1024)
}

/// How a scenario's sockets encode their frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// JSON text frames, every socket.
    Json,
    /// MessagePack binary frames (`boardcast.v1.msgpack`), every socket.
    MsgPack,
    /// Every other socket MessagePack, the rest JSON: rooms with both.
    Mixed,
}

impl Encoding {
    /// `json`, `msgpack` or `mixed`.
    pub fn parse(name: &str) -> Result<Encoding, String> {
        match name {
            "json" => Ok(Encoding::Json),
            "msgpack" => Ok(Encoding::MsgPack),
            "mixed" => Ok(Encoding::Mixed),
            _ => Err(format!("--encoding {name}: json, msgpack or mixed")),
        }
    }

    /// The name `parse` reads.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::MsgPack => "msgpack",
            Encoding::Mixed => "mixed",
        }
    }

    /// Whether the `n`-th socket speaks MessagePack.
    pub fn packed(self, n: usize) -> bool {
        match self {
            Encoding::Json => false,
            Encoding::MsgPack => true,
            Encoding::Mixed => n % 2 == 1,
        }
    }
}

/// A TCP connection to the loopback target `base`, from `source`, with Nagle off.
pub async fn dial(base: &str, source: IpAddr) -> Result<TcpStream, String> {
    let addr = target(base)?;
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .map_err(|e| e.to_string())?;
    port_at_connect(&socket);
    socket
        .bind(&SocketAddr::new(source, 0).into())
        .map_err(|e| format!("bind {source}: {e}"))?;
    socket.set_nonblocking(true).map_err(|e| e.to_string())?;
    let _ = socket.set_nodelay(true);
    let std: std::net::TcpStream = socket.into();
    tokio::net::TcpSocket::from_std_stream(std)
        .connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))
}

/// Asks the kernel to choose the socket's port at `connect`, where it only needs to be unique
/// for this destination, rather than at `bind`, where a port in TIME_WAIT from an earlier run
/// to any other server counts as taken: two idle runs back to back left 34,000 sockets in
/// TIME_WAIT, and the second measured 1,600 to 5,000 connects/s instead of 10,000 (the relay's
/// as well as boardcast's). Best effort: without it, binds work as before.
fn port_at_connect(socket: &socket2::Socket) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: a valid socket descriptor, and a pointer to an int with its size.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                std::ptr::addr_of!(on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

/// Opens a WebSocket to `base` for `board`, from `source`; with `packed`, asking for the
/// `boardcast.v1.msgpack` subprotocol.
pub async fn connect(
    base: &str,
    board: &str,
    token: &str,
    source: IpAddr,
    packed: bool,
) -> Result<Socket, String> {
    let tcp = dial(base, source).await?;
    let url = format!("{base}/ws/{board}?token={token}");
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    if packed {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            tokio_tungstenite::tungstenite::http::HeaderValue::from_static("boardcast.v1.msgpack"),
        );
    }
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::client_async_with_config(
            request,
            MaybeTlsStream::Plain(tcp),
            Some(socket_config()),
        ),
    )
    .await
    .map_err(|_| "upgrade timed out".to_string())?
    .map_err(|e| format!("upgrade: {e}"))?;
    Ok(ws)
}

/// The parts of a server frame the scenarios read; everything else is skipped.
#[derive(Deserialize)]
pub struct Incoming<'a> {
    /// The frame's type.
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    /// Its payload.
    #[serde(default, borrow)]
    pub payload: Payload<'a>,
    /// Its seq, on durable events.
    #[serde(default)]
    pub seq: Option<u64>,
}

/// Payload fields the scenarios read.
#[derive(Deserialize, Default)]
pub struct Payload<'a> {
    /// Author or subject of the event.
    #[serde(rename = "userId", default, borrow)]
    pub user_id: Option<Cow<'a, str>>,
    /// Cursor position.
    #[serde(default)]
    pub position: Option<Position>,
    /// The frame id an ack or error answers.
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
    /// An ack's seq.
    #[serde(default)]
    pub seq: Option<u64>,
    /// An error's code.
    #[serde(default, borrow)]
    pub code: Option<Cow<'a, str>>,
}

/// A cursor position: the scenarios encode a message number in `x` and the sender in `y`.
#[derive(Deserialize, Clone, Copy)]
pub struct Position {
    /// Message number.
    pub x: f64,
    /// Sender index.
    pub y: f64,
}

/// Parses a text frame; `None` for anything that is not JSON of the contract's shape.
pub fn parse(text: &str) -> Option<Incoming<'_>> {
    serde_json::from_str(text).ok()
}

/// The message number and sender of a `cursor.move` text frame as the servers write it, read
/// without a JSON parser: parsing, then searching with `str::find`, were each a tenth of the
/// load generator's CPU (measured). `None` for anything else, which then goes through [`parse`].
/// Only a cursor move has a `"position":{"x":` in the contract.
pub fn cursor_numbers(text: &[u8]) -> Option<(u64, u64)> {
    const BEFORE: &[u8] = br#""position":{""#;
    let mut from = 0;
    let at = loop {
        let x = from + text.get(from..)?.iter().position(|b| *b == b'x')?;
        if text[..x].ends_with(BEFORE) && text[x + 1..].starts_with(br#"":"#) {
            break x + 3;
        }
        from = x + 1;
    };
    let (number, used) = unsigned(&text[at..])?;
    let rest = text[at + used..].strip_prefix(br#","y":"#)?;
    let (sender, _) = unsigned(rest)?;
    Some((number, sender))
}

/// A whole non-negative number at the start of `text` (`17` or `17.0`) and the bytes it took.
fn unsigned(text: &[u8]) -> Option<(u64, usize)> {
    let digits = text.iter().take_while(|b| b.is_ascii_digit()).count();
    let mut value: u64 = 0;
    for b in &text[..digits] {
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    let zeros = match text.get(digits) {
        Some(b'.') => {
            1 + text[digits + 1..]
                .iter()
                .take_while(|b| **b == b'0')
                .count()
        }
        _ => 0,
    };
    let end = digits + zeros;
    let whole = digits > 0 && matches!(text.get(end), Some(b',' | b'}'));
    whole.then_some((value, end))
}

/// Parses a binary frame of a MessagePack socket; `None` for anything off the contract.
pub fn parse_packed(bytes: &[u8]) -> Option<Incoming<'_>> {
    rmp_serde::from_slice(bytes).ok()
}

/// A frame as its socket's encoding writes it: `value` as JSON text, or as a MessagePack map.
pub fn frame(value: &serde_json::Value, packed: bool) -> Message {
    if packed {
        Message::binary(rmp_serde::to_vec(value).unwrap_or_default())
    } else {
        Message::text(value.to_string())
    }
}

/// Parses a server frame of either kind.
pub fn parse_message(msg: &Message) -> Option<Incoming<'_>> {
    match msg {
        Message::Text(text) => parse(text),
        Message::Binary(bytes) => parse_packed(bytes),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn a_socket_takes_its_port_at_connect() {
        use std::os::fd::AsRawFd;
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("a socket");
        port_at_connect(&socket);
        let mut on: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a valid socket descriptor, and a pointer to an int with its size.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                std::ptr::addr_of_mut!(on).cast(),
                &mut len,
            )
        };
        assert_eq!((rc, on), (0, 1));
    }

    #[test]
    fn only_loopback_targets_are_accepted() {
        assert!(target("ws://127.0.0.1:8080").is_ok());
        assert!(target("ws://localhost:8080").is_ok());
        assert!(target("ws://10.0.0.1:8080").is_err());
        assert!(target("http://127.0.0.1:8080").is_err());
    }

    #[test]
    fn sources_spread_over_loopback() {
        assert_eq!(source_for(0), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(
            source_for(PER_SOURCE),
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))
        );
    }

    #[test]
    fn cursor_frames_parse_to_sender_and_number() {
        let frame =
            parse(r#"{"type":"cursor.move","payload":{"userId":"u3","position":{"x":17,"y":3}}}"#)
                .expect("frame");
        assert_eq!(frame.kind, "cursor.move");
        let p = frame.payload.position.expect("position");
        assert_eq!((p.x, p.y), (17.0, 3.0));
        let ack =
            parse(r#"{"type":"ack","payload":{"id":"w1-5","seq":9,"version":2}}"#).expect("ack");
        assert_eq!(
            (ack.payload.id.as_deref(), ack.payload.seq),
            (Some("w1-5"), Some(9))
        );
    }

    #[test]
    fn cursor_numbers_are_read_without_a_parser() {
        let text = br#"{"type":"cursor.move","payload":{"userId":"x3","position":{"x":17,"y":3}}}"#;
        assert_eq!(cursor_numbers(text), Some((17, 3)));
        let floats = br#"{"type":"cursor.move","payload":{"userId":"u3","position":{"x":17.0,"y":3.0},"at":1}}"#;
        assert_eq!(cursor_numbers(floats), Some((17, 3)));
        let sorted =
            br#"{"payload":{"position":{"x":5,"y":9},"userId":"u9"},"type":"cursor.move"}"#;
        assert_eq!(cursor_numbers(sorted), Some((5, 9)));
        for other in [
            &br#"{"type":"cursor.move","payload":{"userId":"u3","position":null}}"#[..],
            br#"{"type":"error","payload":{"code":"x"}}"#,
            br#"{"type":"cursor.move","payload":{"position":{"x":1.5,"y":3}}}"#,
            br#"{"type":"cursor.move","payload":{"position":{"x":-1,"y":3}}}"#,
            br#"{"type":"item.moved","payload":{"x":1,"y":3}}"#,
            br#"{ "type": "cursor.move" }"#,
            br#"{"position":{"x":99999999999999999999999,"y":1}}"#,
        ] {
            assert_eq!(
                cursor_numbers(other),
                None,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn packed_frames_parse_like_text_ones() {
        let value = serde_json::json!({"type":"cursor.move","payload":{"userId":"u3","position":{"x":17,"y":3}}});
        let msg = frame(&value, true);
        assert!(matches!(msg, Message::Binary(_)));
        let parsed = parse_message(&msg).expect("frame");
        assert_eq!(parsed.payload.user_id.as_deref(), Some("u3"));
        let p = parsed.payload.position.expect("position");
        assert_eq!((p.x, p.y), (17.0, 3.0));
        assert_eq!(Encoding::parse("mixed").map(|e| e.packed(1)), Ok(true));
    }
}
