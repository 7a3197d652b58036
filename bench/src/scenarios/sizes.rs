//! `sizes`: the bytes of a cursor move and of a `value.set` on the wire, in JSON and in
//! MessagePack, both ways: what the sender writes and what another session receives.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};

use crate::client::{frame, parse_message, Socket};

use super::*;

/// One message's sizes: WebSocket payload bytes (the frame header adds 2 to 4 more, and 4 for
/// the client's mask).
#[derive(Clone, Debug, Serialize)]
pub struct MessageSizes {
    /// The message type.
    pub message: &'static str,
    /// What a JSON client sends.
    pub json_sent: usize,
    /// What a MessagePack client sends.
    pub msgpack_sent: usize,
    /// What a JSON session receives.
    pub json_received: usize,
    /// What a MessagePack session receives.
    pub msgpack_received: usize,
}

/// What `sizes` measured.
#[derive(Clone, Debug, Serialize)]
pub struct SizesReport {
    /// Always `sizes`.
    pub scenario: &'static str,
    /// Which server.
    pub target: String,
    /// A row per message.
    pub messages: Vec<MessageSizes>,
}

/// Reads until a frame of `kind` arrives; its payload size.
async fn received(ws: &mut Socket, kind: &str) -> Result<usize, String> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .map_err(|_| format!("no {kind} in time"))?
            .ok_or("the socket closed")?
            .map_err(|e| e.to_string())?;
        if parse_message(&msg).is_some_and(|f| f.kind == kind) {
            return Ok(msg.len());
        }
    }
}

/// Sends `value` from `from` and reads its size at `to`; the sent size and the received one.
async fn exchange(
    from: &mut Socket,
    packed: bool,
    to: &mut Socket,
    value: &Value,
) -> Result<(usize, usize), String> {
    let msg = frame(value, packed);
    let sent = msg.len();
    from.send(msg).await.map_err(|e| e.to_string())?;
    let kind = value["type"].as_str().unwrap_or_default();
    Ok((sent, received(to, kind).await?))
}

/// Runs `sizes`: a JSON and a MessagePack session on one board send each message to the
/// other. Cursor positions are whole numbers, as the browser client sends them.
pub async fn sizes(target: &Target) -> Result<SizesReport, String> {
    let board = format!("{}-sizes", target.prefix);
    let mut json_tab = target.join_as(0, &board, "sizes-json", false).await?;
    let mut packed_tab = target.join_as(1, &board, "sizes-msgpack", true).await?;
    received(&mut json_tab, "presence.join").await?;
    let create = json!({"type":"item.created","payload":{"item":{"id":"card-1","title":"Ship it"}},"id":"c1"});
    json_tab
        .send(frame(&create, false))
        .await
        .map_err(|e| e.to_string())?;
    received(&mut packed_tab, "item.created").await?;
    let mut messages = vec![];
    let samples = [
        (
            "cursor.move",
            json!({"type":"cursor.move","payload":{"position":{"x":412,"y":187}}}),
        ),
        (
            "value.set",
            json!({"type":"value.set","payload":{"itemId":"card-1","columnId":"status","value":"done"},"id":"3f9a1c2b-1"}),
        ),
    ];
    for (message, value) in samples {
        let (json_sent, msgpack_received) =
            exchange(&mut json_tab, false, &mut packed_tab, &value).await?;
        let (msgpack_sent, json_received) =
            exchange(&mut packed_tab, true, &mut json_tab, &value).await?;
        messages.push(MessageSizes {
            message,
            json_sent,
            msgpack_sent,
            json_received,
            msgpack_received,
        });
    }
    Ok(SizesReport {
        scenario: "sizes",
        target: target.label.clone(),
        messages,
    })
}
