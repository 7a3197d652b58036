//! The encodings: subprotocol negotiation, frames of the wrong kind, and rooms where JSON and
//! MessagePack sessions meet. (Every other behavioural test also runs with MessagePack
//! clients: `in_both_modes!`.)

use crate::support::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// Upgrades with `Sec-WebSocket-Protocol: protocols` (none when `None`); the subprotocol the
/// answer names, and the socket.
async fn upgrade(
    app: &TestApp,
    protocols: Option<&str>,
) -> (
    Option<String>,
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) {
    let request = upgrade_request(&app.ws_url("b", &token("ann")), protocols);
    let (ws, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("connect in time")
        .expect("the upgrade succeeds");
    let chosen = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (chosen, ws)
}

/// Sends an upgrade request naming `protocols` over a plain socket and reads the answer to
/// its end (a refused upgrade closes the connection): the status and the JSON body.
async fn refused_upgrade(app: &TestApp, protocols: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect");
    let request = format!(
        "GET /ws/b?token={} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: {protocols}\r\n\r\n",
        token("ann")
    );
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer))
        .await
        .expect("the answer in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (_, body) = answer.split_once("\r\n\r\n").unwrap_or_default();
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"));
    (status, body)
}

/// The first frame's kind: "text" or "binary".
async fn first_frame_kind(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> &'static str {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
        {
            Some(Ok(Message::Text(_))) => return "text",
            Some(Ok(Message::Binary(_))) => return "binary",
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("no first frame: {other:?}"),
        }
    }
}

in_both_modes! {
backends_only async fn each_subprotocol_name_is_answered_and_an_unknown_list_is_400(mode) {
    let app = spawn_app_in(mode).await;
    // No header: JSON text frames, and no subprotocol in the answer.
    let (chosen, mut ws) = upgrade(&app, None).await;
    assert_eq!(chosen, None);
    assert_eq!(first_frame_kind(&mut ws).await, "text");
    let (chosen, mut ws) = upgrade(&app, Some("boardcast.v1.json")).await;
    assert_eq!(chosen.as_deref(), Some("boardcast.v1.json"));
    assert_eq!(first_frame_kind(&mut ws).await, "text");
    let (chosen, mut ws) = upgrade(&app, Some("boardcast.v1.msgpack")).await;
    assert_eq!(chosen.as_deref(), Some("boardcast.v1.msgpack"));
    assert_eq!(first_frame_kind(&mut ws).await, "binary");
    // The client's order decides; names boardcast does not speak are passed over.
    let (chosen, _ws) = upgrade(&app, Some("mqtt, boardcast.v1.msgpack, boardcast.v1.json")).await;
    assert_eq!(chosen.as_deref(), Some("boardcast.v1.msgpack"));
    let (chosen, _ws) = upgrade(&app, Some("boardcast.v1.json, boardcast.v1.msgpack")).await;
    assert_eq!(chosen.as_deref(), Some("boardcast.v1.json"));
    // A list with nothing boardcast speaks is refused before the upgrade, with the JSON error.
    let (status, body) = refused_upgrade(&app, "mqtt, boardcast.v2.json").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("boardcast.v1.msgpack"), "{body}");
}
}

in_both_modes! {
backends_only async fn frames_of_the_wrong_kind_are_bad_requests_and_the_socket_stays_open(mode) {
    let app = spawn_app_in(mode).await;
    let url = app.ws_url("b", &token("ann"));
    let mut packed = TestClient::connect_packed(&url).await;
    assert_eq!(packed.next_frame().await["type"], "board.snapshot");
    // Text on a MessagePack socket.
    packed
        .ws
        .send(Message::text(r#"{"type":"ping","id":"t"}"#))
        .await
        .expect("send");
    let err = packed.next_frame().await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["payload"]["code"], "bad_request", "{err}");
    assert!(
        err["payload"]["message"].as_str().unwrap_or_default().contains("text frames"),
        "{err}"
    );
    // Binary that is not one MessagePack map.
    let not_a_map = rmp_serde::to_vec(&json!(["ping"])).expect("encode");
    let mut trailing = rmp_serde::to_vec(&json!({"type":"ping"})).expect("encode");
    trailing.push(0xc0);
    for (what, bytes) in [
        ("not a map", not_a_map),
        ("trailing bytes", trailing),
        ("truncated", vec![0x82, 0xa4, b't']),
    ] {
        packed.ws.send(Message::binary(bytes)).await.expect("send");
        let err = packed.next_frame().await;
        assert_eq!(err["payload"]["code"], "bad_request", "{what}: {err}");
    }
    // A map off the contract keeps its id in the answer, as in JSON.
    packed
        .send(json!({"type":"ping","payload":"x","id":"p1"}))
        .await;
    let err = packed.next_frame().await;
    assert_eq!(err["payload"]["code"], "bad_request");
    assert_eq!(err["payload"]["id"], "p1");
    packed.send(json!({"type":"ping","payload":{"n":1}})).await;
    assert_eq!(
        packed.next_frame().await,
        json!({"type":"pong","payload":{"n":1}})
    );

    // Binary on a JSON socket.
    let mut text = TestClient::connect(&url).await;
    assert_eq!(text.next_frame().await["type"], "board.snapshot");
    let ping = rmp_serde::to_vec(&json!({"type":"ping"})).expect("encode");
    text.ws.send(Message::binary(ping)).await.expect("send");
    let err = text.next_frame().await;
    assert_eq!(err["payload"]["code"], "bad_request");
    assert!(
        err["payload"]["message"].as_str().unwrap_or_default().contains("boardcast.v1.msgpack"),
        "{err}"
    );
    text.send(json!({"type":"ping","payload":{"n":2}})).await;
    assert_eq!(text.next_frame().await["type"], "pong");
}
}

in_both_modes! {
backends_only async fn json_and_msgpack_sessions_see_the_same_events_with_the_same_seq(mode) {
    let app = spawn_app_in(mode).await;
    let url = |user: &str| app.ws_url("b", &token(user));
    let mut json_tab = TestClient::connect(&url("ann")).await;
    let snapshot = json_tab.next_frame().await;
    assert_eq!(snapshot["type"], "board.snapshot");
    let mut packed_tab = TestClient::connect_packed(&url("bob")).await;
    let packed_snapshot = packed_tab.next_frame().await;
    assert_eq!(packed_snapshot["payload"]["users"].as_array().map(Vec::len), Some(2));
    assert_eq!(json_tab.next_of("presence.join").await["payload"]["userId"], "bob");

    // Durable events from either side reach both, identical, with one seq.
    let created = json_tab
        .request("item.created", json!({"item":{"id":"i1","title":"note","w":2.5,"n":-3}}), "c1")
        .await;
    assert_eq!(created["type"], "ack", "{created}");
    let seen = packed_tab.next_of("item.created").await;
    assert_eq!(seen["seq"], created["payload"]["seq"]);
    assert_eq!(seen["payload"]["item"]["w"], 2.5, "floats stay floats");
    assert_eq!(seen["payload"]["item"]["n"], -3, "integers stay integers");
    let set = packed_tab
        .request("value.set", json!({"itemId":"i1","columnId":"c","value":{"text":"hi","big":1u64 << 40}}), "v1")
        .await;
    assert_eq!(set["type"], "ack", "{set}");
    let as_json = json_tab.next_of("value.set").await;
    assert_eq!(as_json["seq"], set["payload"]["seq"]);
    assert_eq!(as_json["payload"]["value"], json!({"text":"hi","big":1u64 << 40}));
    // The JSON tab's own event, as the MessagePack tab sees it, matches what a JSON observer
    // sees.
    let mut observer = TestClient::connect(&url("cid")).await;
    observer.next_frame().await;
    json_tab.next_of("presence.join").await;
    packed_tab.next_of("presence.join").await;
    json_tab
        .request("item.updated", json!({"itemId":"i1","changes":{"title":"renamed"}}), "u1")
        .await;
    let packed_update = packed_tab.next_of("item.updated").await;
    let json_update = observer.next_of("item.updated").await;
    assert_eq!(packed_update, json_update);

    // Ephemeral traffic both ways.
    packed_tab
        .send(json!({"type":"cursor.move","payload":{"position":{"x":12,"y":3.5}}}))
        .await;
    let cursor = loop {
        let frame = json_tab.next_frame().await;
        if frame["type"] == "cursor.move" {
            break frame;
        }
    };
    assert_eq!(cursor["payload"]["userId"], "bob");
    assert_eq!(cursor["payload"]["position"], json!({"x":12,"y":3.5}));
    json_tab
        .send(json!({"type":"typing.start","payload":{"itemId":"i1","columnId":"c"}}))
        .await;
    let typing = packed_tab.next_of("typing.start").await;
    assert_eq!(typing["payload"]["userId"], "ann");
}
}
