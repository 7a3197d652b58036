//! `relay --bind 127.0.0.1:PORT --secret S`: the minimal Rust relay boardcast is measured
//! against: tokio and a WebSocket crate, no actors, each frame serialized once, bounded
//! per-socket queues. It speaks the subset of the wire contract the scenarios use (snapshot,
//! presence join and leave, cursor fan-out, sequenced durable events with acks, ping) and
//! keeps no board state. It is the ceiling that tells what boardcast's architecture costs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Frames queued per socket before further ones are dropped.
const QUEUE: usize = 256;

struct Member {
    user: String,
    tx: mpsc::Sender<Utf8Bytes>,
}

#[derive(Default)]
struct Board {
    members: HashMap<u64, Member>,
    seq: u64,
}

type Boards = Arc<Mutex<HashMap<String, Board>>>;

fn text(v: &Value) -> Utf8Bytes {
    Utf8Bytes::from(v.to_string())
}

fn fan_out(board: &Board, except: u64, frame: &Utf8Bytes) {
    for (sid, m) in &board.members {
        if *sid != except {
            let _ = m.tx.try_send(frame.clone());
        }
    }
}

// The handshake callback's error type is tungstenite's own HTTP response.
#[allow(clippy::result_large_err)]
async fn serve(
    stream: TcpStream,
    boards: Boards,
    key: Arc<jsonwebtoken::DecodingKey>,
    next: Arc<AtomicU64>,
) {
    let _ = stream.set_nodelay(true);
    let mut path = String::new();
    let ws = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        |req: &Request, resp: Response| {
            path = req.uri().to_string();
            Ok(resp)
        },
        Some(boardcast_bench::client::socket_config()),
    )
    .await;
    let Ok(ws) = ws else { return };
    let (board_id, token) = match path
        .strip_prefix("/ws/")
        .and_then(|r| r.split_once("?token="))
    {
        Some((b, t)) => (
            b.to_string(),
            t.split('&').next().unwrap_or_default().to_string(),
        ),
        None => return,
    };
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    let Ok(data) = jsonwebtoken::decode::<Value>(&token, &key, &validation) else {
        return;
    };
    let user = data.claims["sub"].as_str().unwrap_or_default().to_string();
    let sid = next.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(QUEUE);
    let (mut sink, mut source) = ws.split();
    {
        let Ok(mut all) = boards.lock() else { return };
        let board = all.entry(board_id.clone()).or_default();
        let users: Vec<Value> = board
            .members
            .values()
            .map(|m| json!({"userId": m.user, "user": {"name": m.user, "avatar": null}, "color": "#000000", "cursor": null, "status": "active"}))
            .collect();
        let snapshot = json!({"type": "board.snapshot", "payload": {"boardId": board_id, "seq": board.seq,
            "self": {"userId": user, "sessionId": sid.to_string(), "color": "#000000"}, "users": users,
            "items": [], "values": [], "resync": false}});
        let _ = tx.try_send(text(&snapshot));
        let join = json!({"type": "presence.join", "payload": {"userId": user, "user": {"name": user, "avatar": null}, "color": "#000000"}});
        fan_out(board, sid, &text(&join));
        board.members.insert(
            sid,
            Member {
                user: user.clone(),
                tx: tx.clone(),
            },
        );
    }
    let writer = tokio::spawn(async move {
        // Frames queued while the previous write went out, or while this task let the others
        // run once, leave in one write (as boardcast's sessions do).
        while let Some(frame) = rx.recv().await {
            if sink.feed(Message::Text(frame)).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
            while let Ok(frame) = rx.try_recv() {
                if sink.feed(Message::Text(frame)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                break;
            }
        }
    });
    while let Some(Ok(msg)) = source.next().await {
        let Message::Text(t) = msg else {
            if matches!(msg, Message::Close(_)) {
                break;
            }
            continue;
        };
        let Ok(frame) = serde_json::from_str::<Value>(&t) else {
            continue;
        };
        let kind = frame["type"].as_str().unwrap_or_default();
        let Ok(mut all) = boards.lock() else { break };
        let Some(board) = all.get_mut(&board_id) else {
            break;
        };
        match kind {
            "cursor.move" => {
                let out = json!({"type": "cursor.move", "payload": {"userId": user, "position": frame["payload"]["position"]}});
                fan_out(board, sid, &text(&out));
            }
            "ping" => {
                let _ = tx.try_send(text(&json!({"type": "pong", "payload": frame["payload"]})));
            }
            "item.created" | "item.updated" | "item.moved" | "item.deleted" | "value.set" => {
                board.seq += 1;
                let mut payload = frame["payload"].clone();
                payload["userId"] = json!(user);
                payload["version"] = json!(board.seq);
                fan_out(
                    board,
                    sid,
                    &text(&json!({"type": kind, "payload": payload, "seq": board.seq})),
                );
                let ack = json!({"type": "ack", "payload": {"id": frame["id"], "seq": board.seq, "version": board.seq}});
                let _ = tx.try_send(text(&ack));
            }
            _ => {}
        }
    }
    if let Ok(mut all) = boards.lock() {
        if let Some(board) = all.get_mut(&board_id) {
            board.members.remove(&sid);
            if !board.members.values().any(|m| m.user == user) {
                fan_out(
                    board,
                    sid,
                    &text(&json!({"type": "presence.leave", "payload": {"userId": user}})),
                );
            }
        }
    }
    writer.abort();
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut bind = "127.0.0.1:9090".to_string();
    let mut secret = String::new();
    let mut args = std::env::args().skip(1);
    while let Some(k) = args.next() {
        match (k.as_str(), args.next()) {
            ("--bind", Some(v)) => bind = v,
            ("--secret", Some(v)) => secret = v,
            _ => {
                eprintln!("usage: relay --bind 127.0.0.1:PORT --secret S");
                std::process::exit(2);
            }
        }
    }
    let listener = match TcpListener::bind(&bind).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("relay: cannot listen on {bind}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("relay listening on {bind}");
    let boards: Boards = Arc::default();
    let key = Arc::new(jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()));
    let next = Arc::new(AtomicU64::new(1));
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(serve(
            stream,
            Arc::clone(&boards),
            Arc::clone(&key),
            Arc::clone(&next),
        ));
    }
}
