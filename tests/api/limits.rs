//! Section 7 of the protocol: frame size, rate limits, token expiry and refresh, slow readers.

use std::time::{Duration, Instant};

use crate::support::*;
use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

in_both_modes! {
async fn a_frame_over_the_limit_closes_with_1009(mode) {
    let mut config = test_config();
    config.max_message_bytes = 1024;
    let app = spawn_app_with_in(mode, config).await;
    let (mut ann, _) = app.join("b", "ann").await;
    // Just under the limit is fine.
    ann.send(json!({"type":"ping","payload":{"p":"x".repeat(900)}}))
        .await;
    assert_eq!(ann.next_frame().await["type"], "pong");
    ann.send(json!({"type":"ping","payload":{"p":"x".repeat(2000)}}))
        .await;
    assert_eq!(ann.expect_close().await, 1009);
}
}

in_both_modes! {
async fn excess_frames_are_rate_limited_and_excess_cursors_dropped_quietly(mode) {
    let mut config = test_config();
    config.rate_per_sec = 1.0;
    config.rate_burst = 3.0;
    let app = spawn_app_with_in(mode, config).await;
    let (mut ann, _) = app.join("b", "ann").await;
    for i in 0..6 {
        ann.send(json!({"type":"ping","payload":{"n":i},"id":format!("p{i}")}))
            .await;
    }
    for i in 0..5 {
        ann.send(
            json!({"type":"cursor.move","payload":{"position":{"x":i,"y":0}},"id":format!("c{i}")}),
        )
        .await;
    }
    ann.send(json!({"type":"ping","payload":{"n":"last"},"id":"last"}))
        .await;
    let (mut pongs, mut limited) = (0, vec![]);
    loop {
        let frame = ann.next_frame().await;
        if frame["type"] == "pong" {
            pongs += 1;
        } else {
            assert_eq!(frame["payload"]["code"], "rate_limited", "{frame}");
            let id = frame["payload"]["id"].as_str().expect("id").to_string();
            assert!(
                !id.starts_with('c'),
                "cursor moves are dropped quietly: {frame}"
            );
            limited.push(id.clone());
            if id == "last" {
                break;
            }
        }
    }
    assert_eq!(pongs, 3, "the burst passes");
    assert_eq!(limited, ["p3", "p4", "p5", "last"]);
}
}

in_both_modes! {
async fn sustained_abuse_closes_with_4008(mode) {
    let mut config = test_config();
    config.rate_per_sec = 2.0;
    config.rate_burst = 2.0;
    let app = spawn_app_with_in(mode, config).await;
    let (mut ann, _) = app.join("b", "ann").await;
    // 2/s × 10 × 5 s = 100 frames allowed in the window; send more.
    for i in 0..150 {
        ann.send(json!({"type":"cursor.move","payload":{"position":{"x":i,"y":0}}}))
            .await;
    }
    assert_eq!(ann.expect_close().await, 4008);
}
}

in_both_modes! {
async fn the_session_closes_with_4001_when_its_token_expires(mode) {
    let app = spawn_app_in(mode).await;
    let mut c = claims("ann");
    c.exp = boardcast::auth::now_secs() + 2;
    let started = Instant::now();
    let (mut ann, _) = app.join_with("b", &sign(&c)).await;
    assert_eq!(ann.expect_close().await, 4001);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed early: {:?}",
        started.elapsed()
    );
}
}

in_both_modes! {
async fn auth_refresh_extends_the_session(mode) {
    let app = spawn_app_in(mode).await;
    let mut short = claims("ann");
    short.exp = boardcast::auth::now_secs() + 2;
    let old_exp = short.exp;
    let (mut ann, _) = app.join_with("b", &sign(&short)).await;
    ann.send(json!({"type":"auth.refresh","payload":{"token": token("ann")},"id":"r1"}))
        .await;
    assert_eq!(
        ann.next_frame().await,
        json!({"type":"ack","payload":{"id":"r1"}})
    );
    // Still answering after the old token's expiry.
    let mut n = 0;
    while boardcast::auth::now_secs() <= old_exp + 1 {
        n += 1;
        ann.send(json!({"type":"ping","payload":{"n":n}})).await;
        assert_eq!(ann.next_frame().await["type"], "pong");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
}

in_both_modes! {
async fn auth_refresh_for_another_user_is_forbidden(mode) {
    let app = spawn_app_in(mode).await;
    let (mut ann, _) = app.join("b", "ann").await;
    ann.send(json!({"type":"auth.refresh","payload":{"token": token("bob")},"id":"r"}))
        .await;
    let frame = ann.next_frame().await;
    assert_eq!(frame["payload"]["code"], "forbidden");
    assert_eq!(frame["payload"]["id"], "r");
    ann.send(json!({"type":"auth.refresh","payload":{"token": "junk"},"id":"r2"}))
        .await;
    assert_eq!(ann.next_frame().await["payload"]["code"], "forbidden");
}
}

in_both_modes! {
async fn a_client_that_stops_reading_is_cut_off_without_slowing_the_others(mode) {
    let mut config = test_config();
    config.rate_per_sec = 100_000.0;
    config.rate_burst = 100_000.0;
    config.session_queue = 64;
    let app = spawn_app_with_in(mode, config).await;
    let mut slow = TestClient::connect_with_small_buffer(&app.ws_url("b", &token("slow")), app.packed).await;
    assert_eq!(slow.next_frame().await["type"], "board.snapshot");
    let (mut bob, _) = app.join("b", "bob").await;
    let (mut cid, _) = app.join("b", "cid").await;
    bob.next_of("presence.join").await;
    // 1000 frames of 8 kB (8 MB, more than socket buffers hold) while `slow` reads nothing.
    const FRAMES: usize = 1000;
    let filler = "x".repeat(8_000);
    // The sender keeps at most WINDOW frames ahead of bob, a healthy reader: bob's queue never
    // fills, while slow's does.
    const WINDOW: usize = 32;
    let mut seen = 0;
    for i in 0..FRAMES {
        cid.send(
            json!({"type":"typing.start","payload":{"itemId": filler, "columnId": i.to_string()}}),
        )
        .await;
        while i >= WINDOW + seen {
            if bob.next_frame().await["type"] == "typing.start" {
                seen += 1;
            }
        }
    }
    while seen < FRAMES {
        if bob.next_frame().await["type"] == "typing.start" {
            seen += 1;
        }
    }
    assert_eq!(seen, FRAMES, "the reader got everything");
    // Now the slow client reads: it gets a bounded part of the stream, then 4009.
    let mut got = 0;
    let code = loop {
        match tokio::time::timeout(WAIT, slow.ws.next())
            .await
            .expect("frames in time")
        {
            Some(Ok(Message::Text(_) | Message::Binary(_))) => got += 1,
            Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
            Some(Ok(_)) => {}
            other => panic!("unexpected end: {other:?}"),
        }
    };
    assert_eq!(code, 4009);
    assert!(
        got < FRAMES,
        "the server queued all {got} frames for a client that did not read"
    );
}
}
