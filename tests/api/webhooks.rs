//! Webhooks: every durable event and every presence join/leave of a board, posted to a real
//! HTTP receiver of the test's own, signed, per board in order, at least once.

use std::time::Duration;

use crate::support::*;
use boardcast::config::{Config, WebhookConfig};
use serde_json::{json, Value};

/// Long enough for three retries (about 1 + 2 + 4 s) and a slow machine.
const RETRIES: Duration = Duration::from_secs(40);

fn config_for(receiver: &Receiver) -> Config {
    Config {
        webhook: Some(WebhookConfig {
            url: receiver.url(),
            secret: WEBHOOK_SECRET.as_bytes().to_vec(),
        }),
        ..test_config()
    }
}

/// The seqs of the durable events delivered for `board`, in the order they came.
fn seqs(events: &[Value], board: &str) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e["board"] == board)
        .filter_map(|e| e["seq"].as_u64())
        .collect()
}

/// Posts `n` custom durable events to `board` through the API.
async fn post_events(app: &TestApp, board: &str, n: u64) {
    for i in 0..n {
        let (status, body) = app
            .post(
                &format!("/api/boards/{board}/events"),
                Some(&server_token()),
                &json!({"type":"order.placed","payload":{"n": i}}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }
}

in_both_modes! {
backends_only async fn board_events_and_presence_are_posted_signed_and_in_order(mode) {
    let receiver = Receiver::start().await;
    let app = spawn_app_with_in(mode, config_for(&receiver)).await;
    let (mut ann, _) = app.join("b1", "ann").await;
    for id in ["i1", "i2"] {
        let ack = ann.request("item.created", json!({"item":{"id":id}}), id).await;
        assert_eq!(ack["type"], "ack", "{ack}");
    }
    ann.request("value.set", json!({"itemId":"i1","columnId":"c","value":7}), "v").await;
    post_events(&app, "b2", 1).await;
    ann.leave().await;

    let events = receiver
        .until(WAIT, |e| e.iter().filter(|e| e["board"] == "b1").count() == 5
            && e.iter().any(|e| e["board"] == "b2"))
        .await;
    let b1: Vec<(&str, Option<u64>)> = events
        .iter()
        .filter(|e| e["board"] == "b1")
        .map(|e| (e["type"].as_str().unwrap_or_default(), e["seq"].as_u64()))
        .collect();
    assert_eq!(
        b1,
        [
            ("presence.join", None),
            ("item.created", Some(1)),
            ("item.created", Some(2)),
            ("value.set", Some(3)),
            ("presence.leave", None),
        ]
    );
    let join = events.iter().find(|e| e["type"] == "presence.join").expect("a join");
    assert_eq!(join["payload"]["userId"], "ann");
    assert_eq!(join["payload"]["user"]["name"], "ann name");
    assert_eq!(join["payload"]["color"], "#e6194b");
    let created = events.iter().find(|e| e["type"] == "item.created").expect("an item");
    assert_eq!(created["payload"]["item"]["id"], "i1");
    assert_eq!(created["payload"]["userId"], "ann");
    let now = boardcast::auth::now_secs() * 1000;
    for event in &events {
        let at = event["at"].as_u64().expect("at, in ms");
        assert!(at <= now + 1000 && at + 60_000 > now, "{event}");
    }
    for request in receiver.received() {
        assert!(signature_holds(&request.signature, &request.raw), "{request:?}");
        assert_eq!(request.body["tenant"], "default");
        let board = request.body["boardId"].as_str().unwrap_or_default();
        assert!(board == "b1" || board == "b2", "one board per request: {}", request.raw);
        assert!(request.body["events"].as_array().is_some_and(|e| e.len() <= 100));
    }
    let (_, metrics) = app.get_text("/metrics").await;
    assert!(metrics.contains("boardcast_webhook_events_total"), "{metrics}");
}
}

in_both_modes! {
backends_only async fn a_receiver_that_fails_three_times_gets_everything_once_in_order(mode) {
    let receiver = Receiver::start().await;
    receiver.fail_next(3);
    let app = spawn_app_with_in(mode, config_for(&receiver)).await;
    post_events(&app, "b", 5).await;
    let events = receiver.until(RETRIES, |e| seqs(e, "b").len() >= 5).await;
    assert_eq!(seqs(&events, "b"), [1, 2, 3, 4, 5], "once each, in order");
    let statuses: Vec<u16> = receiver.received().iter().map(|r| r.status).collect();
    assert_eq!(&statuses[..3], [500, 500, 500]);
    // Each failed request was tried again with the same first event.
    for request in receiver.received() {
        assert_eq!(request.body["events"][0]["seq"], 1, "{}", request.raw);
    }
    // The counter is the process's, shared with other tests: at least these three.
    let (_, metrics) = app.get_text("/metrics").await;
    let failures = metrics
        .lines()
        .find_map(|l| l.strip_prefix("boardcast_webhook_failures_total "))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(failures >= Some(3), "{metrics}");
}
}

in_both_modes! {
backends_only async fn a_board_whose_requests_fail_holds_up_no_other_board(mode) {
    let receiver = Receiver::start().await;
    receiver.fail_board("stuck");
    let app = spawn_app_with_in(mode, config_for(&receiver)).await;
    post_events(&app, "stuck", 3).await;
    // Wait for the stuck board's first failure, so that its retries are under way.
    let deadline = std::time::Instant::now() + WAIT;
    while !receiver.received().iter().any(|r| r.status == 500) {
        assert!(std::time::Instant::now() < deadline, "no request for the stuck board");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    post_events(&app, "ok", 3).await;
    let events = receiver.until(WAIT, |e| seqs(e, "ok").len() >= 3).await;
    assert_eq!(seqs(&events, "ok"), [1, 2, 3]);
    assert!(seqs(&events, "stuck").is_empty(), "nothing of it answered 200");
}
}

in_both_modes! {
backends_only async fn a_request_not_answered_within_5_s_is_sent_again(mode) {
    let receiver = Receiver::start().await;
    receiver.hang_next(1, Duration::from_secs(7));
    let app = spawn_app_with_in(mode, config_for(&receiver)).await;
    post_events(&app, "b", 3).await;
    // The held request is answered after the sender gave up on it; the events came again,
    // in order, each at least once: the duplicates the contract allows.
    let events = receiver
        .until(RETRIES, |e| {
            let seqs = seqs(e, "b");
            seqs.len() > 3 && seqs.iter().filter(|s| **s == 1).count() == 2
        })
        .await;
    let mut delivered = seqs(&events, "b");
    let requests: Vec<Vec<u64>> = receiver
        .received()
        .iter()
        .map(|r| {
            let events = r.body["events"].as_array().cloned().unwrap_or_default();
            events.iter().filter_map(|e| e["seq"].as_u64()).collect()
        })
        .collect();
    assert_eq!(
        requests.iter().filter(|r| r.first() == Some(&1)).count(),
        2,
        "sent again from the first unanswered event: {requests:?}"
    );
    assert!(requests.iter().all(|r| r.windows(2).all(|w| w[0] < w[1])), "{requests:?}");
    delivered.sort();
    delivered.dedup();
    assert_eq!(delivered, [1, 2, 3]);
}
}

in_both_modes! {
backends_only async fn a_receiver_down_during_100_events_gets_them_all_once_back(mode) {
    let receiver = Receiver::start().await;
    receiver.down();
    let app = spawn_app_with_in(mode, config_for(&receiver)).await;
    post_events(&app, "b", 100).await;
    receiver.up();
    let events = receiver.until(RETRIES, |e| seqs(e, "b").len() >= 100).await;
    assert_eq!(seqs(&events, "b"), (1..=100).collect::<Vec<u64>>());
    assert!(
        receiver.received().iter().all(|r| r.body["events"].as_array().is_some_and(|e| e.len() <= 100)),
        "at most 100 events per request"
    );
}
}

in_both_modes! {
backends_only async fn a_receiver_that_falls_behind_the_bound_is_told_to_read_the_board(mode) {
    let receiver = Receiver::start().await;
    receiver.down();
    let mut config = config_for(&receiver);
    config.replay_events = 5;
    let app = spawn_app_with_in(mode, config).await;
    post_events(&app, "b", 20).await;
    receiver.up();
    let events = receiver.until(RETRIES, |e| seqs(e, "b").last() == Some(&20)).await;
    assert_eq!(events[0]["type"], "board.resync", "{events:?}");
    assert!(events[0]["payload"]["reason"].is_string());
    let delivered = seqs(&events, "b");
    assert!(delivered.len() <= 5, "only what the bound kept: {delivered:?}");
    assert!(delivered.windows(2).all(|w| w[0] < w[1]), "{delivered:?}");
    // The board holds everything, for the receiver to read.
    let (_, board) = app.get("/api/boards/b", Some(&server_token())).await;
    assert_eq!(board["seq"], 20);
}
}
