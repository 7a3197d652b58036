//! Section 5 of the protocol: cursors, typing, ping.

use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::json;

in_both_modes! {
async fn a_cursor_move_reaches_the_others_but_not_the_sender(mode) {
    let app = spawn_app_in(mode).await;
    let (mut bob, mut ann) = app.bob_then_ann("b").await;
    ann.send_type("cursor.move", json!({"position":{"x":10.5,"y":-2}}))
        .await;
    assert_eq!(
        bob.next_frame().await,
        json!({"type":"cursor.move","payload":{"userId":"ann","position":{"x":10.5,"y":-2}}})
    );
    ann.send_type("cursor.move", json!({"position":null})).await;
    assert_eq!(bob.next_frame().await["payload"]["position"], json!(null));
    // No echo: ann's next frame is the answer to her ping.
    ann.send_type("ping", json!({"after":"cursor"})).await;
    assert_eq!(
        ann.next_frame().await,
        json!({"type":"pong","payload":{"after":"cursor"}})
    );
}
}

in_both_modes! {
async fn the_senders_other_tab_sees_its_cursor(mode) {
    let app = spawn_app_in(mode).await;
    let (mut t1, _) = app.join("b", "ann").await;
    let (mut t2, _) = app.join("b", "ann").await;
    t1.send_type("cursor.move", json!({"position":{"x":1,"y":2}}))
        .await;
    assert_eq!(t2.next_frame().await["payload"]["userId"], "ann");
}
}

in_both_modes! {
async fn cursors_are_throttled_and_the_newest_always_arrives(mode) {
    let app = spawn_app_in(mode).await;
    let (mut bob, mut ann) = app.bob_then_ann("b").await;
    let started = Instant::now();
    for x in 1..=40 {
        ann.send_type("cursor.move", json!({"position":{"x":x,"y":0}}))
            .await;
    }
    let mut received = vec![];
    let mut times = vec![];
    loop {
        let frame = bob.next_of("cursor.move").await;
        let x = frame["payload"]["position"]["x"].as_f64().expect("x");
        received.push(x);
        times.push(Instant::now());
        if x == 40.0 {
            break;
        }
    }
    let elapsed = started.elapsed().as_millis() as usize;
    assert_eq!(received[0], 1.0, "the first move goes out at once");
    assert!(
        received.len() <= 2 + elapsed / 50,
        "{} deliveries in {elapsed} ms exceed 20/s: {received:?}",
        received.len()
    );
    assert!(
        received.windows(2).all(|w| w[0] < w[1]),
        "in order: {received:?}"
    );
}
}

in_both_modes! {
async fn typing_is_relayed_and_stops_by_itself_after_five_seconds(mode) {
    let app = spawn_app_in(mode).await;
    let (mut bob, mut ann) = app.bob_then_ann("b").await;
    ann.send_type("typing.start", json!({"itemId":"i1","columnId":"c1"}))
        .await;
    let started = Instant::now();
    assert_eq!(
        bob.next_frame().await,
        json!({"type":"typing.start","payload":{"userId":"ann","itemId":"i1","columnId":"c1"}})
    );
    assert_eq!(
        bob.next_frame().await,
        json!({"type":"typing.stop","payload":{"userId":"ann"}})
    );
    assert!(
        started.elapsed() >= Duration::from_millis(4500),
        "stopped after {:?}",
        started.elapsed()
    );
    // ann heard no echo of either.
    ann.send_type("ping", json!({})).await;
    assert_eq!(ann.next_frame().await["type"], "pong");
}
}

in_both_modes! {
async fn an_explicit_typing_stop_is_relayed(mode) {
    let app = spawn_app_in(mode).await;
    let (mut bob, mut ann) = app.bob_then_ann("b").await;
    ann.send_type("typing.start", json!({"itemId":"i1","columnId":"c1"}))
        .await;
    ann.send_type("typing.stop", json!({})).await;
    assert_eq!(bob.next_frame().await["type"], "typing.start");
    let stop = bob.next_frame().await;
    assert_eq!(
        stop,
        json!({"type":"typing.stop","payload":{"userId":"ann"}})
    );
}
}

in_both_modes! {
async fn typing_stops_when_the_user_leaves(mode) {
    let app = spawn_app_in(mode).await;
    let (mut bob, mut ann) = app.bob_then_ann("b").await;
    ann.send_type("typing.start", json!({"itemId":"i1","columnId":"c1"}))
        .await;
    assert_eq!(bob.next_frame().await["type"], "typing.start");
    ann.ws.close(None).await.expect("close");
    let started = Instant::now();
    assert_eq!(
        bob.next_frame().await,
        json!({"type":"typing.stop","payload":{"userId":"ann"}})
    );
    assert_eq!(bob.next_frame().await["type"], "presence.leave");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "not the 5 s timer"
    );
}
}
