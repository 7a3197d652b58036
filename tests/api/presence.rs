//! Section 4 of the protocol: presence, colors and join/leave transitions; and tenant isolation.

use std::time::Duration;

use crate::support::*;
use serde_json::json;

in_both_modes! {
async fn colors_go_to_the_lowest_free_index_and_are_reused_after_leave(mode) {
    let app = spawn_app_in(mode).await;
    let (mut ann, a) = app.join("b", "ann").await;
    let (mut bob, b) = app.join("b", "bob").await;
    assert_eq!(a["payload"]["self"]["color"], "#e6194b");
    assert_eq!(b["payload"]["self"]["color"], "#3cb44b");
    assert_eq!(
        ann.next_of("presence.join").await["payload"]["color"],
        "#3cb44b"
    );
    ann.ws.close(None).await.expect("close");
    assert_eq!(
        bob.next_of("presence.leave").await["payload"],
        json!({"userId":"ann"})
    );
    let (_cid, c) = app.join("b", "cid").await;
    assert_eq!(c["payload"]["self"]["color"], "#e6194b");
}
}

in_both_modes! {
async fn all_tabs_of_a_user_share_one_color_and_one_entry(mode) {
    let app = spawn_app_in(mode).await;
    let (_bob, _) = app.join("b", "bob").await;
    let (_t1, first) = app.join("b", "ann").await;
    let (_t2, second) = app.join("b", "ann").await;
    assert_eq!(
        first["payload"]["self"]["color"],
        second["payload"]["self"]["color"]
    );
    assert_ne!(
        first["payload"]["self"]["sessionId"],
        second["payload"]["self"]["sessionId"]
    );
    let users = second["payload"]["users"].as_array().expect("users");
    assert_eq!(users.len(), 2, "one entry per user: {users:?}");
}
}

in_both_modes! {
async fn a_second_tab_does_not_announce_a_join(mode) {
    let app = spawn_app_in(mode).await;
    let (mut bob, _) = app.join("b", "bob").await;
    let (_t1, _) = app.join("b", "ann").await;
    let join = bob.next_of("presence.join").await;
    assert_eq!(
        join["payload"],
        json!({"userId":"ann","user":{"name":"ann name","avatar":null},"color":"#3cb44b"})
    );
    let (_t2, _) = app.join("b", "ann").await;
    // The next transition bob sees is cid's arrival, not a second one for ann.
    let (_cid, _) = app.join("b", "cid").await;
    assert_eq!(
        bob.next_of("presence.join").await["payload"]["userId"],
        "cid"
    );
}
}

in_both_modes! {
async fn a_user_leaves_only_when_the_last_tab_closes(mode) {
    let app = spawn_app_in(mode).await;
    let (mut bob, _) = app.join("b", "bob").await;
    let (mut t1, _) = app.join("b", "ann").await;
    let (mut t2, _) = app.join("b", "ann").await;
    assert_eq!(
        bob.next_of("presence.join").await["payload"]["userId"],
        "ann"
    );
    t1.ws.close(None).await.expect("close");
    assert!(t1.expect_close().await > 0);
    let (_cid, _) = app.join("b", "cid").await;
    assert_eq!(
        bob.next_of("presence.join").await["payload"]["userId"],
        "cid"
    );
    t2.ws.close(None).await.expect("close");
    assert_eq!(
        bob.next_of("presence.leave").await["payload"]["userId"],
        "ann"
    );
}
}

in_both_modes! {
async fn the_server_pings_every_heartbeat_interval(mode) {
    let mut config = test_config();
    config.heartbeat_interval = Duration::from_millis(100);
    let app = spawn_app_with_in(mode, config).await;
    let (mut ann, _) = app.join("b", "ann").await;
    let mut pings = 0;
    while pings < 2 {
        let msg = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut ann.ws))
            .await
            .expect("a ping in time")
            .expect("open")
            .expect("a valid frame");
        if msg.is_ping() {
            pings += 1;
        }
    }
}
}

in_both_modes! {
async fn a_client_that_stops_answering_pings_leaves(mode) {
    let mut config = test_config();
    config.heartbeat_interval = Duration::from_millis(100);
    config.client_timeout = Duration::from_millis(800);
    let app = spawn_app_with_in(mode, config).await;
    let (mut bob, _) = app.join("b", "bob").await;
    // ann reads nothing, so she answers no ping.
    let (_silent_ann, _) = app.join("b", "ann").await;
    assert_eq!(
        bob.next_of("presence.join").await["payload"]["userId"],
        "ann"
    );
    // bob keeps answering (reading answers pings), so only ann times out.
    assert_eq!(
        bob.next_of("presence.leave").await["payload"]["userId"],
        "ann"
    );
}
}

in_both_modes! {
async fn a_status_update_reaches_the_others(mode) {
    let app = spawn_app_in(mode).await;
    let (mut bob, mut ann) = app.bob_then_ann("b").await;
    ann.send_type("presence.update", json!({"status":"idle"}))
        .await;
    assert_eq!(
        bob.next_of("presence.update").await["payload"],
        json!({"userId":"ann","status":"idle"})
    );
    // ann gets no echo: her next frame answers her ping.
    ann.send_type("ping", json!({})).await;
    assert_eq!(ann.next_frame().await["type"], "pong");
    // Newcomers see the status in their snapshot.
    let (_cid, snapshot) = app.join("b", "cid").await;
    let users = snapshot["payload"]["users"]
        .as_array()
        .expect("users")
        .clone();
    let ann_entry = users
        .iter()
        .find(|u| u["userId"] == "ann")
        .expect("ann present");
    assert_eq!(ann_entry["status"], "idle");
}
}

in_both_modes! {
async fn a_snapshot_shows_the_cursors_of_present_users(mode) {
    let app = spawn_app_in(mode).await;
    let (mut bob, mut ann) = app.bob_then_ann("b").await;
    ann.send_type("cursor.move", json!({"position":{"x":3,"y":4}}))
        .await;
    bob.next_of("cursor.move").await;
    let (_cid, snapshot) = app.join("b", "cid").await;
    let users = snapshot["payload"]["users"]
        .as_array()
        .expect("users")
        .clone();
    let ann_entry = users
        .iter()
        .find(|u| u["userId"] == "ann")
        .expect("ann present");
    assert_eq!(ann_entry["cursor"], json!({"x":3,"y":4}));
}
}

in_both_modes! {
async fn two_tenants_with_the_same_board_id_see_nothing_of_each_other(mode) {
    let app = spawn_app_in(mode).await;
    let in_tenant = |sub: &str, tenant: &str| {
        let mut c = claims(sub);
        c.tenant = Some(tenant.into());
        sign(&c)
    };
    let (mut ann, _) = app.join_with("b", &in_tenant("ann", "t1")).await;
    let (mut bob, snapshot) = app.join_with("b", &in_tenant("bob", "t2")).await;
    assert_eq!(
        snapshot["payload"]["users"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(
        snapshot["payload"]["self"]["color"], "#e6194b",
        "colors are per tenant board"
    );
    bob.send_type("cursor.move", json!({"position":{"x":1,"y":1}}))
        .await;
    bob.send_type("typing.start", json!({"itemId":"i","columnId":"c"}))
        .await;
    // The next thing ann hears of is cid of her own tenant; nothing of bob came first.
    let (_cid, _) = app.join_with("b", &in_tenant("cid", "t1")).await;
    let frame = ann.next_frame().await;
    assert_eq!(frame["type"], "presence.join");
    assert_eq!(frame["payload"]["userId"], "cid");
}
}

in_both_modes! {
async fn past_twelve_users_colors_repeat_from_the_least_used(mode) {
    // The rule lives twice: in Rust (embedded) and in the Redis join script. Both must give a
    // thirteenth user the first color again, and a freed color to the next newcomer.
    let app = spawn_app_in(mode).await;
    let mut sessions = vec![];
    let mut colors = vec![];
    for n in 0..14 {
        let (client, snapshot) = app.join("many", &format!("u{n}")).await;
        colors.push(
            snapshot["payload"]["self"]["color"]
                .as_str()
                .expect("a color")
                .to_string(),
        );
        sessions.push(client);
    }
    let distinct: std::collections::HashSet<_> = colors[..12].iter().collect();
    assert_eq!(distinct.len(), 12, "{colors:?}");
    assert_eq!(colors[12], colors[0], "the thirteenth repeats the first");
    assert_eq!(colors[13], colors[1]);
    // u5's color is now the only one nobody holds: the next newcomer gets it.
    sessions[5].leave().await;
    let mut watcher = sessions.remove(0);
    loop {
        let frame = watcher.next_frame().await;
        if frame["type"] == "presence.leave" && frame["payload"]["userId"] == "u5" {
            break;
        }
    }
    let (_late, snapshot) = app.join("many", "late").await;
    assert_eq!(snapshot["payload"]["self"]["color"], colors[5].as_str());
}
}
