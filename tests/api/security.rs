//! Tried as an attacker with a valid token, and as a careless operator: tenant names, secrets,
//! claims, memory bounds, slow and flooding clients.

use std::time::{Duration, Instant};

use crate::support::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

/// A token of `sub` in `tenant` with `role`.
fn token_in(tenant: &str, sub: &str, role: boardcast::auth::Role) -> String {
    let mut c = claims(sub);
    c.tenant = Some(tenant.into());
    c.role = role;
    sign(&c)
}

in_both_modes! {
async fn tenant_names_that_could_collide_in_storage_are_refused(mode) {
    use boardcast::auth::Role;
    let app = spawn_app_in(mode).await;
    for tenant in ["acme|x", "t}:v:X", "a:b", "{t}", "", "x y"] {
        let status = app
            .upgrade_status(app.ws_url("b", &token_in(tenant, "ann", Role::Editor)))
            .await;
        assert_eq!(status, 401, "tenant {tenant:?}");
        let (status, body) = app
            .post(
                "/api/users/y/events",
                Some(&token_in(tenant, "backend", Role::Server)),
                &json!({"type":"a.b","payload":{}}),
            )
            .await;
        assert_eq!((status, body["error"]["code"].clone()), (401, json!("unauthorized")), "{tenant:?}");
    }
}
}

in_both_modes! {
async fn a_user_id_with_separators_reaches_that_user_only(mode) {
    use boardcast::auth::Role;
    let app = spawn_app_in(mode).await;
    // The victims of the old collision: user `y` of tenant `acme-x`, user `x|y` of `acme`, and
    // an `auth0|123` style id, which must keep working.
    let (mut target, _) = app.join_with("b", &token_in("acme", "x|y", Role::Editor)).await;
    let (mut bystander, _) = app.join_with("b", &token_in("acme-x", "y", Role::Editor)).await;
    let (mut plain, _) = app.join_with("b", &token_in("acme", "y", Role::Editor)).await;
    let (status, _) = app
        .post(
            "/api/users/x%7Cy/events",
            Some(&token_in("acme", "backend", Role::Server)),
            &json!({"type":"note.sent","payload":{"to":"x|y"}}),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(
        next_but_presence(&mut target).await,
        json!({"type":"note.sent","payload":{"to":"x|y"}})
    );
    for other in [&mut bystander, &mut plain] {
        other.send_type("ping", json!({})).await;
        assert_eq!(next_but_presence(other).await["type"], "pong", "nothing else came first");
    }
}
}

/// The next frame that is not a presence change.
async fn next_but_presence(client: &mut TestClient) -> Value {
    loop {
        let frame = client.next_frame().await;
        if !frame["type"]
            .as_str()
            .unwrap_or_default()
            .starts_with("presence.")
        {
            return frame;
        }
    }
}

in_both_modes! {
async fn an_item_id_shaped_like_a_key_stays_on_its_own_board(mode) {
    let app = spawn_app_in(mode).await;
    let mut mine = claims("ann");
    mine.tenant = Some("t".into());
    let (mut ann, _) = app.join_with("X", &sign(&mine)).await;
    for (n, (kind, payload)) in [
        ("item.created", json!({"item":{"id":"X}:items","title":"injected"}})),
        ("value.set", json!({"itemId":"X}:items","columnId":"{\"id\":\"evil\"}","value":1})),
        ("item.created", json!({"item":{"id":"v:X","title":"also"}})),
    ]
    .into_iter()
    .enumerate()
    {
        let answer = ann.request(kind, payload, &n.to_string()).await;
        assert_eq!(answer["type"], "ack", "{answer}");
    }
    // Every other tenant's board of the same id is empty.
    for tenant in ["t2", "t-v-X", "default"] {
        let mut theirs = claims("bob");
        theirs.tenant = Some(tenant.into());
        let (_, snapshot) = app.join_with("X", &sign(&theirs)).await;
        assert_eq!(snapshot["payload"]["items"], json!([]), "{tenant}: {snapshot}");
        assert_eq!(snapshot["payload"]["values"], json!([]), "{tenant}: {snapshot}");
    }
    let (_, own) = app.join_with("X", &sign(&mine)).await;
    assert_eq!(own["payload"]["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(own["payload"]["values"].as_array().map(Vec::len), Some(1));
}
}

/// Runs the binary with `env` and expects it to stop by itself; its exit code and log.
async fn refused_start(env: &[(&str, &str)]) -> (i32, String) {
    use std::io::Read;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_boardcast"))
        .env_remove("JWT_SECRET")
        .env("BIND", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the binary did not stop by itself");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut log = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut log);
    }
    (status.code().unwrap_or(-1), log)
}

#[actix_web::test]
async fn a_blank_or_short_secret_stops_start_up_instead_of_turning_on_dev_mode() {
    for secret in ["", "   ", "short-secret"] {
        let (code, log) = refused_start(&[("JWT_SECRET", secret)]).await;
        assert_eq!(code, 2, "JWT_SECRET={secret:?}: {log}");
        assert!(log.contains("JWT_SECRET"), "{log}");
        assert!(!log.contains("/dev/token is open"), "{log}");
    }
}

#[actix_web::test]
async fn dev_mode_on_a_network_address_needs_to_be_asked_for() {
    let (code, log) = refused_start(&[("BIND", "0.0.0.0:0")]).await;
    assert_eq!(code, 2, "{log}");
    assert!(log.contains("DEV_MODE=on"), "the log says why: {log}");
    // Asked for, it starts (and announces dev mode).
    let instance = Instance::start_in_dev_mode(&[("BIND", "0.0.0.0:0"), ("DEV_MODE", "on")]);
    let (status, body) = instance.app().get("/dev/token?user=u", None).await;
    assert_eq!(status, 200, "{body}");
}

#[actix_web::test]
async fn token_dates_and_audience_follow_rfc_7519() {
    let app = spawn_app().await;
    let now = boardcast::auth::now_secs();
    let not_yet = sign_value(&json!({"sub":"u","exp":now+7200,"nbf":now+3600}));
    assert_eq!(app.upgrade_status(app.ws_url("b", &not_yet)).await, 401);
    let fractional =
        sign_value(&json!({"sub":"u","exp":now as f64 + 3600.5,"nbf":now as f64 - 0.5}));
    assert_eq!(app.upgrade_status(app.ws_url("b", &fractional)).await, 101);
    let with_aud = sign_value(&json!({"sub":"u","exp":now+3600,"aud":"someone"}));
    assert_eq!(
        app.upgrade_status(app.ws_url("b", &with_aud)).await,
        101,
        "no audience configured: aud is not checked"
    );

    let mut config = test_config();
    config.jwt_audience = Some("boards".into());
    config.jwt_issuer = Some("https://id.example".into());
    let strict = spawn_app_with(config).await;
    let good = sign_value(
        &json!({"sub":"u","exp":now+3600,"aud":["boards","x"],"iss":"https://id.example"}),
    );
    assert_eq!(strict.upgrade_status(strict.ws_url("b", &good)).await, 101);
    for bad in [
        json!({"sub":"u","exp":now+3600}),
        json!({"sub":"u","exp":now+3600,"aud":"someone","iss":"https://id.example"}),
        json!({"sub":"u","exp":now+3600,"aud":"boards","iss":"https://other.example"}),
    ] {
        assert_eq!(
            strict
                .upgrade_status(strict.ws_url("b", &sign_value(&bad)))
                .await,
            401,
            "{bad}"
        );
    }
}

in_both_modes! {
async fn whole_numbers_written_as_floats_are_whole_numbers(mode) {
    let app = spawn_app_in(mode).await;
    let (mut ann, _) = app.join("b", "ann").await;
    ann.request("item.created", json!({"item":{"id":"i"}}), "1").await;
    let answer = ann
        .request("item.updated", json!({"itemId":"i","changes":{"t":1},"expectedVersion":1.0}), "2")
        .await;
    assert_eq!(answer["type"], "ack", "{answer}");
    assert_eq!(answer["payload"]["version"], 2);
}
}

in_both_modes! {
async fn one_editor_cannot_make_a_board_hold_more_than_its_bounds(mode) {
    let mut config = test_config();
    config.max_item_bytes = 2048;
    config.max_board_bytes = 32 * 1024;
    config.rate_per_sec = 1000.0;
    config.rate_burst = 1000.0;
    let app = spawn_app_with_in(mode, config).await;
    let (mut ann, _) = app.join("b", "ann").await;

    // One item over the bound, at once or grown through updates and values.
    let big = ann
        .request("item.created", json!({"item":{"id":"big","t":"x".repeat(3000)}}), "big")
        .await;
    assert_eq!(big["payload"]["code"], "too_large", "{big}");
    ann.request("item.created", json!({"item":{"id":"grown"}}), "g0").await;
    let mut refused = None;
    for n in 0..20 {
        let answer = ann
            .request(
                "value.set",
                json!({"itemId":"grown","columnId":format!("c{n}"),"value":"v".repeat(300)}),
                &format!("g{}", n + 1),
            )
            .await;
        if answer["type"] == "error" {
            assert_eq!(answer["payload"]["code"], "too_large", "{answer}");
            refused = Some(n);
            break;
        }
    }
    assert!(matches!(refused, Some(4..=7)), "values count towards their item: {refused:?}");
    let update = ann
        .request("item.updated", json!({"itemId":"grown","changes":{"t":"x".repeat(1500)}}), "u")
        .await;
    assert_eq!(update["payload"]["code"], "too_large", "{update}");

    // The worst case one editor reaches: as many nearly full items as the board takes.
    let mut made = 0;
    for n in 0..100 {
        let answer = ann
            .request("item.created", json!({"item":{"id":format!("i{n}"),"t":"x".repeat(1900)}}), &format!("i{n}"))
            .await;
        if answer["type"] == "error" {
            assert_eq!(answer["payload"]["code"], "too_large", "{answer}");
            break;
        }
        made += 1;
    }
    assert!((10..=16).contains(&made), "{made} items of ~2 KiB in 32 KiB");
    let mut bob = TestClient::connect(&app.ws_url("b", &token("bob"))).await;
    let snapshot = match tokio::time::timeout(WAIT, bob.ws.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => text,
        other => panic!("no snapshot: {other:?}"),
    };
    let items_and_values = {
        let v: Value = serde_json::from_str(&snapshot).expect("json");
        v["payload"]["items"].to_string().len() + v["payload"]["values"].to_string().len()
    };
    println!("worst case of one editor: snapshot {} bytes, items and values {items_and_values} bytes (bound 32768)", snapshot.len());
    // Items are counted as stored; the snapshot adds a few bytes of framing per value.
    assert!(items_and_values <= 32 * 1024 + 1024, "{items_and_values}");
}
}

in_both_modes! {
async fn one_user_holds_a_bounded_number_of_sessions(mode) {
    let mut config = test_config();
    config.max_sessions_per_user = 3;
    let app = spawn_app_with_in(mode, config).await;
    let mut held = vec![];
    for board in ["a", "b", "c"] {
        held.push(app.join(board, "ann").await.0);
    }
    assert_eq!(app.upgrade_status(app.ws_url("d", &token("ann"))).await, 429);
    assert_eq!(app.upgrade_status(app.ws_url("d", &token("bob"))).await, 101, "per user");
    let mut other = claims("ann");
    other.tenant = Some("elsewhere".into());
    assert_eq!(app.upgrade_status(app.ws_url("d", &sign(&other))).await, 101, "per tenant");
    held[0].leave().await;
    // The slot comes back when the session has ended.
    let deadline = Instant::now() + WAIT;
    while app.upgrade_status(app.ws_url("d", &token("ann"))).await != 101 {
        assert!(Instant::now() < deadline, "the slot never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
}

in_both_modes! {
async fn resuming_more_events_than_the_session_queue_gets_them_all(mode) {
    let mut config = test_config();
    config.session_queue = 64;
    let app = spawn_app_with_in(mode, config).await;
    let server = server_token();
    let total = 600u64;
    for n in 1..=total {
        let (status, body) = app
            .post("/api/boards/b/events", Some(&server), &json!({"type":"step.done","payload":{"n":n}}))
            .await;
        assert_eq!(status, 202, "{body}");
    }
    let mut bob = app.resume("b", "bob", 0).await;
    let first = bob.next_frame().await;
    assert_eq!(first["type"], "board.resumed", "{first}");
    assert_eq!(first["payload"]["toSeq"], total);
    for seq in 1..=total {
        let frame = bob.next_frame().await;
        assert_eq!(frame["seq"], seq, "{frame}");
    }
    // Still open and live afterwards.
    bob.send_type("ping", json!({})).await;
    assert_eq!(bob.next_of("pong").await["type"], "pong");
}
}

#[actix_web::test]
async fn a_client_that_stops_reading_is_dropped_after_the_write_timeout() {
    let mut config = test_config();
    config.write_timeout = Duration::from_secs(1);
    config.max_message_bytes = 600 * 1024;
    config.max_item_bytes = 600 * 1024;
    config.session_queue = 8;
    let app = spawn_app_with(config).await;
    let mut stalled =
        TestClient::connect_with_small_buffer(&app.ws_url("b", &token("stalled")), false).await;
    // Reads its snapshot, then never reads again.
    let snapshot = tokio::time::timeout(WAIT, stalled.ws.next())
        .await
        .expect("snapshot");
    assert!(matches!(snapshot, Some(Ok(Message::Text(_)))));
    let (mut ann, first) = app.join("b", "ann").await;
    assert_eq!(first["payload"]["users"].as_array().map(Vec::len), Some(2));
    ann.request("item.created", json!({"item":{"id":"i"}}), "0")
        .await;
    let started = Instant::now();
    let mut n = 0;
    let left_after = loop {
        n += 1;
        // Bounded in time, not in writes: a fast machine makes 200 of them within the timeout.
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the stalled session was never dropped ({n} writes)"
        );
        let id = n.to_string();
        ann.send(json!({"type":"value.set","payload":{"itemId":"i","columnId":"c","value":"v".repeat(500 * 1024)},"id":id}))
            .await;
        let mut left = false;
        loop {
            let frame = ann.next_frame().await;
            if frame["type"] == "presence.leave" {
                assert_eq!(frame["payload"]["userId"], "stalled");
                left = true;
            }
            if frame["payload"]["id"] == id.as_str() {
                break;
            }
        }
        if left {
            break started.elapsed();
        }
    };
    println!("a client that stopped reading was dropped {left_after:?} after the writes began");
    assert!(left_after < Duration::from_secs(8), "{left_after:?}");
    drop(stalled);
}

/// Writes `messages` in one go; false when the connection failed.
async fn send_batch(client: &mut TestClient, messages: impl Iterator<Item = Message>) -> bool {
    for msg in messages {
        if client.ws.feed(msg).await.is_err() {
            return false;
        }
    }
    client.ws.flush().await.is_ok()
}

/// Sends `msg` as fast as the socket takes it, in batches, looking for the server's close
/// between batches; the close code read (1006 when the connection broke instead).
async fn flood_until_closed(client: &mut TestClient, msg: impl Fn() -> Message) -> u16 {
    use futures_util::FutureExt;
    for _ in 0..1000 {
        if !send_batch(client, (0..200).map(|_| msg())).await {
            return client.expect_close().await;
        }
        match client.ws.next().now_or_never() {
            Some(Some(Ok(Message::Close(Some(frame))))) => return u16::from(frame.code),
            Some(Some(Err(_)) | None) => return 1006,
            _ => {}
        }
    }
    panic!("never closed");
}

#[actix_web::test]
async fn a_flooding_client_reads_its_4008_every_time() {
    let mut config = test_config();
    config.rate_per_sec = 2.0;
    config.rate_burst = 2.0;
    let app = spawn_app_with(config).await;
    let ping = json!({"type":"ping","payload":{"pad":"x".repeat(4000)}}).to_string();
    let cursor = json!({"type":"cursor.move","payload":{"position":{"x":1,"y":2}}}).to_string();
    for run in 0..10 {
        // A client that sends much faster than it reads: its receive buffer is full of pongs,
        // so the server's close frame waits in the server's send buffer while the client's
        // flood is still unread. Resetting the connection then would lose the close.
        let mut flood = TestClient::connect_with_small_buffer(
            &app.ws_url("b", &token(&format!("flood{run}"))),
            false,
        )
        .await;
        send_batch(&mut flood, (0..2).map(|_| Message::text(ping.clone()))).await;
        // It goes on sending for a while after the server has closed.
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            if !send_batch(&mut flood, (0..50).map(|_| Message::text(cursor.clone()))).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(flood.expect_close().await, 4008, "run {run}");
    }
}

#[actix_web::test]
async fn a_message_sent_in_fragments_is_read_as_one() {
    let app = spawn_app().await;
    let (mut client, _) = app.join("b", "frag").await;
    let pieces = [
        (&br#"{"type":"pi"#[..], OpCode::Data(Data::Text), false),
        (&br#"ng","payl"#[..], OpCode::Data(Data::Continue), false),
        (&br#"oad":{}}"#[..], OpCode::Data(Data::Continue), true),
    ];
    // Twice, so that the second message starts afresh.
    for _ in 0..2 {
        for (bytes, opcode, last) in pieces {
            client
                .ws
                .send(Message::Frame(Frame::message(bytes.to_vec(), opcode, last)))
                .await
                .expect("fragment");
        }
        assert_eq!(client.next_frame().await["type"], "pong");
    }
}

#[actix_web::test]
async fn fragments_pings_and_pongs_count_towards_the_rate_limit() {
    let mut config = test_config();
    config.rate_per_sec = 2.0;
    config.rate_burst = 2.0;
    let app = spawn_app_with(config).await;

    let (mut fragments, _) = app.join("b", "frag").await;
    fragments
        .ws
        .send(Message::Frame(Frame::message(
            b"{".to_vec(),
            OpCode::Data(Data::Text),
            false,
        )))
        .await
        .expect("first fragment");
    let piece = || {
        Message::Frame(Frame::message(
            b" ".to_vec(),
            OpCode::Data(Data::Continue),
            false,
        ))
    };
    assert_eq!(
        flood_until_closed(&mut fragments, piece).await,
        4008,
        "continuation frames"
    );

    for control in ["ping", "pong"] {
        let (mut client, _) = app.join("b", control).await;
        let msg = || {
            if control == "ping" {
                Message::Ping(Vec::new().into())
            } else {
                Message::Pong(Vec::new().into())
            }
        };
        assert_eq!(
            flood_until_closed(&mut client, msg).await,
            4008,
            "{control} frames"
        );
    }
}

in_both_modes! {
async fn the_replay_log_keeps_what_fits_in_its_bytes(mode) {
    let mut config = test_config();
    config.replay_bytes = 2_000;
    let app = spawn_app_with_in(mode, config).await;
    let server = server_token();
    for n in 1..=50u64 {
        let (status, body) = app
            .post(
                "/api/boards/b/events",
                Some(&server),
                &json!({"type":"step.done","payload":{"n":n,"pad":"x".repeat(100)}}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }
    // The oldest events no longer fit: a resume from the start gets a snapshot...
    let mut old = app.resume("b", "bob", 0).await;
    let first = old.next_frame().await;
    assert_eq!((first["type"].clone(), first["payload"]["resync"].clone()), (json!("board.snapshot"), json!(true)), "{first}");
    // ...while the newest ones are replayed.
    let mut recent = app.resume("b", "bob", 45).await;
    let first = recent.next_frame().await;
    assert_eq!(first["type"], "board.resumed", "{first}");
    for seq in 46..=50u64 {
        assert_eq!(recent.next_frame().await["seq"], seq);
    }
}
}

#[actix_web::test]
async fn a_malformed_idempotency_key_is_a_bad_request() {
    let app = spawn_app().await;
    let response = reqwest::Client::new()
        .post(app.url("/api/boards/b/events"))
        .bearer_auth(server_token())
        .header("Idempotency-Key", "has space")
        .json(&json!({"type":"order.shipped","payload":{}}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 400);
}
