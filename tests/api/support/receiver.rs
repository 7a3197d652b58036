//! A webhook receiver of a test's own: a real HTTP server on a free port that records every
//! request, answers 500 when told to, can be slow, and can go down (closing every connection)
//! and come back.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::*;

/// The secret test servers sign webhooks with.
pub const WEBHOOK_SECRET: &str = "webhook-secret-0123456789";

/// One request the receiver took.
#[derive(Clone, Debug)]
pub struct Received {
    /// The status it was answered with.
    pub status: u16,
    /// Its `Boardcast-Signature` header.
    pub signature: String,
    /// Its body as sent.
    pub raw: String,
    /// Its body as JSON.
    pub body: Value,
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    /// Requests still to answer 500.
    fail_next: usize,
    /// A board whose requests are all answered 500.
    failing_board: Option<String>,
    /// How long to wait before answering.
    delay: Duration,
    /// Requests still to hold for `hang` before answering.
    hang_next: usize,
    /// How long those are held.
    hang: Duration,
    /// Connections are closed as they come.
    down: bool,
    /// The accept loop.
    accept: Option<tokio::task::JoinHandle<()>>,
    /// The connections, aborted when it goes down.
    connections: Vec<tokio::task::JoinHandle<()>>,
}

/// See the module documentation.
pub struct Receiver {
    /// Its port on 127.0.0.1.
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl Receiver {
    /// A receiver answering 200 at once, listening on a free port.
    pub async fn start() -> Receiver {
        let receiver = Receiver {
            port: free_port(),
            state: Arc::default(),
        };
        receiver.listen().await;
        receiver
    }

    /// The URL to configure as `WEBHOOK_URL`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks", self.port)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers the next `n` requests with 500.
    pub fn fail_next(&self, n: usize) {
        self.lock().fail_next = n;
    }

    /// Answers every request for `board` with 500.
    pub fn fail_board(&self, board: &str) {
        self.lock().failing_board = Some(board.to_string());
    }

    /// Waits `delay` before answering each request.
    pub fn slow(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// Holds the next `n` requests for `hang` before answering them (200).
    pub fn hang_next(&self, n: usize, hang: Duration) {
        let mut state = self.lock();
        state.hang_next = n;
        state.hang = hang;
    }

    /// Goes down: drops every connection, and closes each new one at once (the port stays
    /// its own, so nothing else takes it meanwhile).
    pub fn down(&self) {
        let mut state = self.lock();
        state.down = true;
        for task in state.connections.drain(..) {
            task.abort();
        }
    }

    /// Comes back up.
    pub fn up(&self) {
        self.lock().down = false;
    }

    async fn listen(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("the receiver listens");
        let state = Arc::clone(&self.state);
        let accept = actix_web::rt::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let mut held = state.lock().unwrap_or_else(|p| p.into_inner());
                if held.down {
                    drop(socket);
                    continue;
                }
                let conn = actix_web::rt::spawn(serve(socket, Arc::clone(&state)));
                held.connections.push(conn);
            }
        });
        self.lock().accept = Some(accept);
    }

    /// Every request taken so far.
    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// The events of every request answered 200, in the order they came, each with the
    /// request's `boardId` added as `board`.
    pub fn delivered(&self) -> Vec<Value> {
        self.received()
            .into_iter()
            .filter(|r| r.status == 200)
            .flat_map(|r| {
                let board = r.body["boardId"].clone();
                r.body["events"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |mut e| {
                        e["board"] = board.clone();
                        e
                    })
            })
            .collect()
    }

    /// Waits until `done` holds for the delivered events; them.
    pub async fn until(&self, within: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let events = self.delivered();
            if done(&events) {
                return events;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the receiver has {} events: {:?}",
                events.len(),
                events
                    .iter()
                    .map(|e| (&e["type"], &e["seq"]))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.down();
        if let Some(accept) = self.lock().accept.take() {
            accept.abort();
        }
    }
}

/// Checks a `Boardcast-Signature` header against `body`, as a receiver would.
pub fn signature_holds(header: &str, body: &str) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = Some(value),
            Some(("v1", value)) => v1 = Some(value),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()) else {
        return false;
    };
    mac.update(format!("{t}.{body}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let now = boardcast::auth::now_secs();
    hex == v1 && t.parse::<u64>().is_ok_and(|t| t.abs_diff(now) < 300)
}

/// Serves one connection, request after request.
async fn serve(socket: tokio::net::TcpStream, state: Arc<Mutex<State>>) {
    let mut reader = BufReader::new(socket);
    loop {
        let mut length = 0usize;
        let mut signature = String::new();
        let mut line = String::new();
        // The request line, then headers up to the blank line.
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "boardcast-signature" => signature = value.trim().to_string(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let raw = String::from_utf8_lossy(&body).to_string();
        let delay = {
            let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
            if state.hang_next > 0 {
                state.hang_next -= 1;
                state.hang
            } else {
                state.delay
            }
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let status = {
            let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
            let body: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
            let failing = state
                .failing_board
                .as_deref()
                .is_some_and(|b| body["boardId"] == b);
            let status = if failing {
                500
            } else if state.fail_next > 0 {
                state.fail_next -= 1;
                500
            } else {
                200
            };
            state.received.push(Received {
                status,
                signature,
                body,
                raw,
            });
            status
        };
        let reason = if status == 200 {
            "OK"
        } else {
            "Internal Server Error"
        };
        let answer = format!("HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\n\r\n");
        if reader.get_mut().write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}
