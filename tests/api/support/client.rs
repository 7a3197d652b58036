//! A real WebSocket client whose every wait has a timeout.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::*;

/// The MessagePack subprotocol's name.
pub const MSGPACK: &str = "boardcast.v1.msgpack";

/// An upgrade request for `url`, naming `protocols` in `Sec-WebSocket-Protocol` when given.
pub fn upgrade_request(
    url: &str,
    protocols: Option<&str>,
) -> tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().expect("a WebSocket URL");
    if let Some(protocols) = protocols {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            protocols.parse().expect("header value"),
        );
    }
    request
}

/// A real WebSocket client, speaking JSON or MessagePack; either way its frames are read and
/// written as JSON values.
pub struct TestClient {
    /// The socket.
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// It negotiated `boardcast.v1.msgpack`: binary frames both ways.
    pub packed: bool,
}

impl TestClient {
    /// Connects to `url` with JSON frames, panicking if the upgrade fails.
    pub async fn connect(url: &str) -> TestClient {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("the upgrade succeeds");
        TestClient { ws, packed: false }
    }

    /// Connects to `url` asking for `boardcast.v1.msgpack`, and checks the answer names it.
    pub async fn connect_packed(url: &str) -> TestClient {
        let request = upgrade_request(url, Some(MSGPACK));
        let (ws, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("connect in time")
            .expect("the upgrade succeeds");
        assert_eq!(
            response
                .headers()
                .get("Sec-WebSocket-Protocol")
                .and_then(|v| v.to_str().ok()),
            Some(MSGPACK)
        );
        TestClient { ws, packed: true }
    }

    /// Connects to `url` (in MessagePack when `packed`) over a socket with a 4 KiB receive
    /// buffer, so that the server's writes back up as soon as the client stops reading.
    pub async fn connect_with_small_buffer(url: &str, packed: bool) -> TestClient {
        let addr: std::net::SocketAddr = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .expect("address");
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket.set_recv_buffer_size(4096).expect("rcvbuf");
        socket.connect(&addr.into()).expect("connect");
        socket.set_nonblocking(true).expect("nonblocking");
        let tcp = TcpStream::from_std(socket.into()).expect("tokio stream");
        let request = upgrade_request(url, packed.then_some(MSGPACK));
        let (ws, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp))
            .await
            .expect("upgrade");
        TestClient { ws, packed }
    }

    /// Sends a frame in the socket's encoding.
    pub async fn send(&mut self, frame: Value) {
        if self.packed {
            let bytes = rmp_serde::to_vec(&frame).expect("MessagePack");
            self.ws
                .send(Message::binary(bytes))
                .await
                .expect("send works");
        } else {
            self.send_text(&frame.to_string()).await;
        }
    }

    /// Sends a text frame as is.
    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_string()))
            .await
            .expect("send works");
    }

    /// Sends `{"type": kind, "payload": payload}`.
    pub async fn send_type(&mut self, kind: &str, payload: Value) {
        self.send(json!({"type": kind, "payload": payload})).await;
    }

    /// The next frame as a JSON value, from a text frame on a JSON socket and a binary one on
    /// a MessagePack socket (any other kind fails the test); panics on close or after
    /// [`WAIT`].
    pub async fn next_frame(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("the socket is open")
                .expect("a valid frame");
            match msg {
                Message::Text(text) => {
                    assert!(!self.packed, "a text frame on a MessagePack socket: {text}");
                    return serde_json::from_str(&text).expect("JSON frame");
                }
                Message::Binary(bytes) => {
                    assert!(self.packed, "a binary frame on a JSON socket");
                    return rmp_serde::from_slice(&bytes).expect("a MessagePack frame");
                }
                Message::Close(frame) => panic!("closed while waiting for a frame: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// The next frame of type `kind`, skipping cursor moves and typing of others; panics on
    /// any other frame type, so nothing unexpected slips by.
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.next_frame().await;
            if frame["type"] == kind {
                return frame;
            }
            let t = frame["type"].as_str().unwrap_or_default();
            assert!(
                t == "cursor.move" || t.starts_with("typing."),
                "expected {kind}, got {frame}"
            );
        }
    }

    /// Closes the socket and waits for the server's answer.
    pub async fn leave(&mut self) {
        self.ws.close(None).await.expect("close");
        self.expect_close().await;
    }

    /// Reads until the server closes; returns the close code (1006 when the socket just ended).
    pub async fn expect_close(&mut self) -> u16 {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a close in time");
            match next {
                Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
                Some(Ok(Message::Close(None))) => return u16::from(CloseCode::Status),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return 1006,
            }
        }
    }
}

impl TestClient {
    /// Sends a durable operation with `id` and returns the answer to it (ack or error),
    /// skipping anything else.
    pub async fn request(&mut self, kind: &str, payload: Value, id: &str) -> Value {
        self.send(json!({"type": kind, "payload": payload, "id": id}))
            .await;
        loop {
            let frame = self.next_frame().await;
            if (frame["type"] == "ack" || frame["type"] == "error") && frame["payload"]["id"] == id
            {
                return frame;
            }
        }
    }

    /// The next frame carrying a `seq` (durable events; acks count via their payload).
    pub async fn next_sequenced(&mut self) -> Value {
        loop {
            let frame = self.next_frame().await;
            if frame.get("seq").is_some() {
                return frame;
            }
        }
    }
}
