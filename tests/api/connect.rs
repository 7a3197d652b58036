//! Section 1 (connecting) and section 2 (frames) of the protocol, and the snapshot.

use crate::support::*;
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

in_both_modes! {
async fn a_valid_token_gets_a_snapshot_first(mode) {
    let app = spawn_app_in(mode).await;
    let (_c, snapshot) = app.join("b1", "ann").await;
    assert_eq!(snapshot["type"], "board.snapshot");
    let p = &snapshot["payload"];
    assert_eq!(p["boardId"], "b1");
    assert_eq!(p["seq"], 0);
    assert_eq!(p["self"]["userId"], "ann");
    assert!(p["self"]["sessionId"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    assert_eq!(p["self"]["color"], "#e6194b");
    assert_eq!(
        p["users"],
        json!([{"userId":"ann","user":{"name":"ann name","avatar":null},"color":"#e6194b","cursor":null,"status":"active"}])
    );
    assert_eq!(p["items"], json!([]));
    assert_eq!(p["values"], json!([]));
    assert_eq!(p["resync"], false);
}
}

in_both_modes! {
async fn a_malformed_board_id_is_400(mode) {
    let app = spawn_app_in(mode).await;
    let t = token("ann");
    for board in ["has.dot", "sp%20ace", &"x".repeat(65)] {
        assert_eq!(
            app.upgrade_status(app.ws_url(board, &t)).await,
            400,
            "{board}"
        );
    }
    assert_eq!(
        app.upgrade_status(app.ws_url(&"x".repeat(64), &t)).await,
        101
    );
}
}

in_both_modes! {
async fn missing_or_bad_tokens_are_401(mode) {
    let app = spawn_app_in(mode).await;
    let mut expired = claims("ann");
    expired.exp = boardcast::auth::now_secs() - 30;
    let other_secret = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims("ann"),
        &jsonwebtoken::EncodingKey::from_secret(b"some other secret 123"),
    )
    .expect("sign");
    let hs384 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384),
        &claims("ann"),
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .expect("sign");
    // {"alg":"none"} with valid claims and no signature.
    let none = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
        base64url(&json!({"sub":"ann","exp": boardcast::auth::now_secs() + 60}).to_string())
    );
    let no_sub = sign_value(&json!({"exp": boardcast::auth::now_secs() + 60}));
    let no_exp = sign_value(&json!({"sub": "ann"}));
    for (what, t) in [
        ("empty", String::new()),
        ("garbage", "not-a-jwt".to_string()),
        ("expired", sign(&expired)),
        ("wrong secret", other_secret),
        ("other algorithm", hs384),
        ("alg none", none),
        ("no sub", no_sub),
        ("no exp", no_exp),
    ] {
        assert_eq!(app.upgrade_status(app.ws_url("b", &t)).await, 401, "{what}");
    }
    let bare = format!("ws://127.0.0.1:{}/ws/b", app.port);
    assert_eq!(app.upgrade_status(bare).await, 401, "no token at all");
}
}

in_both_modes! {
async fn expiry_within_the_leeway_is_accepted(mode) {
    let app = spawn_app_in(mode).await;
    let mut c = claims("ann");
    c.exp = boardcast::auth::now_secs() - 2;
    // Accepted, then closed at once with 4001 since its exp has passed.
    let mut client = TestClient::connect(&app.ws_url("b", &sign(&c))).await;
    assert_eq!(client.expect_close().await, 4001);
}
}

in_both_modes! {
async fn a_bearer_header_works_like_the_query(mode) {
    let app = spawn_app_in(mode).await;
    let mut request = format!("ws://127.0.0.1:{}/ws/b", app.port)
        .into_client_request()
        .expect("request");
    let value = HeaderValue::from_str(&format!("Bearer {}", token("ann"))).expect("header");
    request.headers_mut().insert("Authorization", value);
    assert_eq!(app.upgrade_status(request).await, 101);
}
}

in_both_modes! {
async fn boards_claim_and_server_role_are_403(mode) {
    let app = spawn_app_in(mode).await;
    let mut limited = claims("ann");
    limited.boards = Some(vec!["allowed".into()]);
    let limited = sign(&limited);
    assert_eq!(app.upgrade_status(app.ws_url("other", &limited)).await, 403);
    assert_eq!(
        app.upgrade_status(app.ws_url("allowed", &limited)).await,
        101
    );
    let mut server = claims("backend");
    server.role = boardcast::auth::Role::Server;
    assert_eq!(
        app.upgrade_status(app.ws_url("b", &sign(&server))).await,
        403
    );
}
}

in_both_modes! {
async fn a_foreign_origin_is_403_when_origins_are_set(mode) {
    let mut config = test_config();
    config.allowed_origins = Some(["https://app.example.com".to_string()].into());
    let app = spawn_app_with_in(mode, config).await;
    let with_origin = |origin: &str| {
        let mut request = app
            .ws_url("b", &token("ann"))
            .into_client_request()
            .expect("request");
        request
            .headers_mut()
            .insert("Origin", HeaderValue::from_str(origin).expect("header"));
        request
    };
    assert_eq!(
        app.upgrade_status(with_origin("https://evil.example.com"))
            .await,
        403
    );
    assert_eq!(
        app.upgrade_status(with_origin("https://app.example.com"))
            .await,
        101
    );
    // No Origin header (a non-browser client) is allowed.
    assert_eq!(
        app.upgrade_status(app.ws_url("b", &token("ann"))).await,
        101
    );
}
}

in_both_modes! {
backends_only async fn bad_frames_get_bad_request_and_the_connection_stays_open(mode) {
    let app = spawn_app_in(mode).await;
    let (mut c, _) = app.join("b", "ann").await;
    let long_id = "i".repeat(65);
    let cases = [
        ("invalid JSON", "{not json".to_string(), None),
        (
            "unknown type",
            json!({"type":"no.such","id":"1"}).to_string(),
            Some("1"),
        ),
        (
            "wrong shape",
            json!({"type":"cursor.move","payload":{"position":{"x":"a","y":1}},"id":"2"})
                .to_string(),
            Some("2"),
        ),
        (
            "non-finite number",
            r#"{"type":"cursor.move","payload":{"position":{"x":1e999,"y":1}},"id":"3"}"#
                .to_string(),
            None,
        ),
        (
            "id too long",
            json!({"type":"ping","id": long_id}).to_string(),
            None,
        ),
        (
            "payload not an object",
            json!({"type":"ping","payload":"x","id":"4"}).to_string(),
            Some("4"),
        ),
    ];
    for (what, text, id) in cases {
        c.send_text(&text).await;
        let frame = c.next_frame().await;
        assert_eq!(frame["type"], "error", "{what}");
        assert_eq!(frame["payload"]["code"], "bad_request", "{what}");
        if let Some(id) = id {
            assert_eq!(frame["payload"]["id"], id, "{what}");
        }
    }
    c.ws.send(tokio_tungstenite::tungstenite::Message::binary(vec![
        1u8, 2, 3,
    ]))
    .await
    .expect("send binary");
    let frame = c.next_frame().await;
    assert_eq!(frame["payload"]["code"], "bad_request", "binary");
    // Still open: a ping is answered with its payload.
    c.send(json!({"type":"ping","payload":{"n":1}})).await;
    let pong = c.next_frame().await;
    assert_eq!(pong, json!({"type":"pong","payload":{"n":1}}));
}
}

in_both_modes! {
async fn dev_tokens_exist_only_in_dev_mode(mode) {
    let app = spawn_app_in(mode).await;
    let response = reqwest::get(app.url("/dev/token?user=ann"))
        .await
        .expect("request");
    assert_eq!(response.status(), 404);

    let mut config = test_config();
    config.jwt = boardcast::config::JwtKey::Dev(b"a random dev secret of 32 bytes!".to_vec());
    let dev = spawn_app_with_in(mode, config).await;
    let body: serde_json::Value = reqwest::get(dev.url("/dev/token?user=ann&name=Ann"))
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let token = body["token"].as_str().expect("a token");
    let (_c, snapshot) = dev.join_with("b", token).await;
    assert_eq!(snapshot["payload"]["users"][0]["user"]["name"], "Ann");
}
}

in_both_modes! {
async fn health_and_readiness_answer(mode) {
    let app = spawn_app_in(mode).await;
    assert_eq!(app.get("/healthz", None).await.0, 200);
    assert_eq!(app.get("/favicon.ico", None).await.0, 204, "no 404 in the console");
    assert_eq!(
        reqwest::get(app.url("/readyz"))
            .await
            .expect("get")
            .status(),
        200
    );
}
}

fn base64url(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[actix_web::test]
async fn the_demo_and_the_client_are_served_and_the_demo_can_be_turned_off() {
    let app = spawn_app().await;
    let page = reqwest::get(app.url("/")).await.expect("get");
    assert_eq!(page.status(), 200);
    assert!(page
        .text()
        .await
        .expect("text")
        .contains("/client/boardcast.js"));
    let client = reqwest::get(app.url("/client/boardcast.js"))
        .await
        .expect("get");
    assert_eq!(client.status(), 200);
    assert!(client.headers()["content-type"]
        .to_str()
        .expect("type")
        .starts_with("text/javascript"));
    assert!(client
        .text()
        .await
        .expect("text")
        .contains("export class BoardClient"));
    let types = reqwest::get(app.url("/client/boardcast.d.ts"))
        .await
        .expect("get");
    assert_eq!(types.status(), 200);

    let mut config = test_config();
    config.demo = false;
    let quiet = spawn_app_with(config).await;
    assert_eq!(
        reqwest::get(quiet.url("/")).await.expect("get").status(),
        404
    );
    assert_eq!(
        reqwest::get(quiet.url("/client/boardcast.js"))
            .await
            .expect("get")
            .status(),
        200
    );
}

/// An upgrade request for `/ws/b` with `token`, as raw bytes.
fn raw_upgrade(token: &str) -> Vec<u8> {
    format!(
        "GET /ws/b?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

#[actix_web::test]
async fn a_refused_upgrade_is_answered_with_the_json_error_and_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect");
    tcp.write_all(&raw_upgrade("garbage")).await.expect("write");
    let mut answer = String::new();
    tokio::time::timeout(WAIT, tcp.read_to_string(&mut answer))
        .await
        .expect("the server closes the connection")
        .expect("read");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let body: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
    assert_eq!(body["error"]["code"], "unauthorized");
}

#[actix_web::test]
async fn an_upgrade_elsewhere_is_404_and_a_plain_get_of_the_socket_is_checked_then_400() {
    let app = spawn_app().await;
    let elsewhere = format!("ws://127.0.0.1:{}/healthz?token={}", app.port, token("ann"));
    assert_eq!(app.upgrade_status(elsewhere).await, 404);
    let nested = format!("ws://127.0.0.1:{}/ws/b/c?token={}", app.port, token("ann"));
    assert_eq!(app.upgrade_status(nested).await, 404);
    // Without upgrade headers the request is routed: the same checks, then 400.
    assert_eq!(app.get("/ws/b", None).await.0, 401);
    let (status, body) = app.get("/ws/b", Some(&token("ann"))).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "bad_request");
}

#[actix_web::test]
async fn a_frame_sent_along_with_the_upgrade_request_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect");
    let mut bytes = raw_upgrade(&token("ann"));
    // One masked text frame, in the same write as the request.
    let payload = br#"{"type":"ping","payload":{"early":true}}"#;
    let mask = [7u8, 42, 99, 200];
    bytes.extend([0x81, 0x80 | payload.len() as u8]);
    bytes.extend(mask);
    bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    tcp.write_all(&bytes).await.expect("write");
    let mut seen = Vec::new();
    let found = tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 4096];
        loop {
            let n = tcp.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before the pong");
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen);
            if text.contains(r#"{"type":"pong","payload":{"early":true}}"#) {
                return text.starts_with("HTTP/1.1 101");
            }
        }
    })
    .await;
    assert_eq!(found, Ok(true), "{}", String::from_utf8_lossy(&seen));
}

#[actix_web::test]
async fn a_last_seq_that_is_not_a_whole_number_is_400() {
    let app = spawn_app().await;
    let t = token("ann");
    for bad in ["abc", "-1", "1.5"] {
        let url = format!("{}&last_seq={bad}", app.ws_url("b", &t));
        assert_eq!(app.upgrade_status(url).await, 400, "{bad}");
    }
    let url = format!("{}&last_seq=0", app.ws_url("b", &t));
    assert_eq!(app.upgrade_status(url).await, 101);
}
