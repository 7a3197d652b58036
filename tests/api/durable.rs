//! Section 6 of the protocol (durable events) and section 3's resume.

use crate::support::*;
use serde_json::{json, Value};

in_both_modes! {
async fn every_durable_event_type_reaches_the_others_with_its_seq(mode) {
    let app = spawn_app_in(mode).await;
    let (mut bob, _) = app.join("b", "bob").await;
    let (mut ann, _) = app.join("b", "ann").await;
    let ack = ann
        .request("item.created", json!({"item":{"id":"i1","title":"T"}}), "1")
        .await;
    assert_eq!(
        ack,
        json!({"type":"ack","payload":{"id":"1","seq":1,"version":1}})
    );
    assert_eq!(
        bob.next_sequenced().await,
        json!({"type":"item.created","payload":{"item":{"id":"i1","title":"T","version":1},"userId":"ann"},"seq":1})
    );
    let ack = ann
        .request(
            "item.updated",
            json!({"itemId":"i1","changes":{"title":"U"}}),
            "2",
        )
        .await;
    assert_eq!(ack["payload"], json!({"id":"2","seq":2,"version":2}));
    assert_eq!(
        bob.next_sequenced().await,
        json!({"type":"item.updated","payload":{"itemId":"i1","changes":{"title":"U"},"version":2,"userId":"ann"},"seq":2})
    );
    ann.request(
        "item.moved",
        json!({"itemId":"i1","groupId":"g2","position":3,"expectedVersion":2}),
        "3",
    )
    .await;
    assert_eq!(
        bob.next_sequenced().await,
        json!({"type":"item.moved","payload":{"itemId":"i1","groupId":"g2","position":3,"version":3,"userId":"ann"},"seq":3})
    );
    let ack = ann
        .request(
            "value.set",
            json!({"itemId":"i1","columnId":"c","value":{"v":1}}),
            "4",
        )
        .await;
    assert_eq!(ack["payload"], json!({"id":"4","seq":4,"version":1}));
    assert_eq!(
        bob.next_sequenced().await,
        json!({"type":"value.set","payload":{"itemId":"i1","columnId":"c","value":{"v":1},"version":1,"userId":"ann"},"seq":4})
    );
    let ack = ann
        .request("item.deleted", json!({"itemId":"i1"}), "5")
        .await;
    assert_eq!(
        ack["payload"],
        json!({"id":"5","seq":5}),
        "no version for deletions"
    );
    assert_eq!(
        bob.next_sequenced().await,
        json!({"type":"item.deleted","payload":{"itemId":"i1","userId":"ann"},"seq":5})
    );
}
}

in_both_modes! {
async fn the_sender_gets_an_ack_and_its_other_tab_the_event(mode) {
    let app = spawn_app_in(mode).await;
    let (mut t1, _) = app.join("b", "ann").await;
    let (mut t2, _) = app.join("b", "ann").await;
    t1.send(json!({"type":"item.created","payload":{"item":{"id":"x"}},"id":"a"}))
        .await;
    assert_eq!(t1.next_frame().await["type"], "ack");
    assert_eq!(t2.next_sequenced().await["type"], "item.created");
    // t1 never sees its own event: its next frame answers its ping.
    t1.send_type("ping", json!({})).await;
    assert_eq!(t1.next_frame().await["type"], "pong");
}
}

in_both_modes! {
async fn seq_is_contiguous_and_identical_for_every_receiver_under_concurrent_writers(mode) {
    let app = spawn_app_in(mode).await;
    let (mut watcher, _) = app.join("b", "watcher").await;
    let (mut setup, _) = app.join("b", "setup").await;
    setup
        .request("item.created", json!({"item":{"id":"i"}}), "c")
        .await;
    let mut writers = vec![];
    for w in 0..3 {
        writers.push(app.join("b", &format!("w{w}")).await.0);
    }
    // Within the 32 operations a session may have waiting.
    const EACH: usize = 30;
    // Everyone writes at once: sends first, reads after.
    for round in 0..EACH {
        for (w, writer) in writers.iter_mut().enumerate() {
            writer
                .send(json!({"type":"value.set","payload":{"itemId":"i","columnId":format!("c{w}"),"value":round},"id":format!("{w}-{round}")}))
                .await;
        }
    }
    let total = 1 + 3 * EACH as u64;
    let seqs_of = |frames: &[Value]| -> Vec<u64> {
        frames
            .iter()
            .map(|f| {
                f["seq"]
                    .as_u64()
                    .or_else(|| f["payload"]["seq"].as_u64())
                    .expect("a seq")
            })
            .collect()
    };
    // The watcher sees events 1..=total in order.
    let mut seen = vec![];
    while seen.len() < total as usize {
        seen.push(watcher.next_sequenced().await);
    }
    assert_eq!(seqs_of(&seen), (1..=total).collect::<Vec<_>>());
    // Each writer sees the others' events and its own acks, together 2..=total in order.
    for writer in &mut writers {
        let mut frames = vec![];
        while frames.len() < (total - 1) as usize {
            let frame = writer.next_frame().await;
            if frame.get("seq").is_some() || frame["type"] == "ack" {
                frames.push(frame);
            }
        }
        assert_eq!(seqs_of(&frames), (2..=total).collect::<Vec<_>>());
        let acks = frames.iter().filter(|f| f["type"] == "ack").count();
        assert_eq!(acks, EACH);
    }
}
}

in_both_modes! {
async fn a_retry_sent_right_behind_its_original_is_acked_after_it(mode) {
    let app = spawn_app_in(mode).await;
    let (mut ann, _) = app.join("b", "ann").await;
    ann.request("item.created", json!({"item":{"id":"i"}}), "c")
        .await;
    // Each operation sent twice at once, the second a retry of the first, while the first may
    // still be on its way.
    const OPS: u64 = 12;
    for n in 0..OPS {
        let frame = json!({"type":"value.set","payload":{"itemId":"i","columnId":"c","value":n},"id":format!("v{n}")});
        ann.send(frame.clone()).await;
        ann.send(frame).await;
    }
    // Acks by id, in the order they came.
    let mut acks: Vec<(String, u64)> = vec![];
    while acks.len() < 2 * OPS as usize {
        let frame = ann.next_frame().await;
        assert_ne!(frame["type"], "error", "{frame}");
        if frame["type"] == "ack" {
            let id = frame["payload"]["id"].as_str().unwrap_or_default().to_string();
            acks.push((id, frame["payload"]["seq"].as_u64().expect("a seq")));
        }
    }
    // Each operation applied once, in the order sent; the first ack of each comes in seq order,
    // and its retry's ack repeats that seq, after it.
    let mut first: Vec<(String, u64)> = vec![];
    for (id, seq) in &acks {
        match first.iter().find(|(seen, _)| seen == id) {
            Some((_, earlier)) => assert_eq!(seq, earlier, "{id}: {acks:?}"),
            None => first.push((id.clone(), *seq)),
        }
    }
    let expected: Vec<(String, u64)> = (0..OPS).map(|n| (format!("v{n}"), n + 2)).collect();
    assert_eq!(first, expected, "{acks:?}");
}
}

in_both_modes! {
async fn a_stale_expected_version_is_a_conflict_with_the_current_item(mode) {
    let app = spawn_app_in(mode).await;
    let (mut ann, _) = app.join("b", "ann").await;
    ann.request("item.created", json!({"item":{"id":"i","t":1}}), "1")
        .await;
    ann.request("item.updated", json!({"itemId":"i","changes":{"t":2}}), "2")
        .await;
    let err = ann
        .request(
            "item.updated",
            json!({"itemId":"i","changes":{"t":3},"expectedVersion":1}),
            "3",
        )
        .await;
    assert_eq!(err["payload"]["code"], "conflict");
    assert_eq!(
        err["payload"]["current"],
        json!({"id":"i","t":2,"version":2})
    );
    let err = ann
        .request(
            "value.set",
            json!({"itemId":"i","columnId":"c","value":1,"expectedVersion":4}),
            "4",
        )
        .await;
    assert_eq!(
        err["payload"]["current"],
        json!({"itemId":"i","columnId":"c","value":null,"version":0})
    );
    // Nothing was applied: a new session's snapshot still shows version 2.
    let (_c, snapshot) = app.join("b", "cid").await;
    assert_eq!(
        snapshot["payload"]["items"],
        json!([{"id":"i","t":2,"version":2}])
    );
    assert_eq!(snapshot["payload"]["seq"], 2);
}
}

in_both_modes! {
async fn unknown_items_are_not_found_and_existing_ids_conflict(mode) {
    let app = spawn_app_in(mode).await;
    let (mut ann, _) = app.join("b", "ann").await;
    for (kind, payload) in [
        ("item.updated", json!({"itemId":"nope","changes":{}})),
        (
            "item.moved",
            json!({"itemId":"nope","groupId":"g","position":0}),
        ),
        ("item.deleted", json!({"itemId":"nope"})),
        (
            "value.set",
            json!({"itemId":"nope","columnId":"c","value":1}),
        ),
    ] {
        let err = ann.request(kind, payload, "x").await;
        assert_eq!(err["payload"]["code"], "not_found", "{kind}");
    }
    ann.request("item.created", json!({"item":{"id":"dup"}}), "1")
        .await;
    let err = ann
        .request("item.created", json!({"item":{"id":"dup","other":1}}), "2")
        .await;
    assert_eq!(err["payload"]["code"], "conflict");
    assert_eq!(err["payload"]["current"], json!({"id":"dup","version":1}));
}
}

in_both_modes! {
async fn viewers_may_not_send_durable_events(mode) {
    let app = spawn_app_in(mode).await;
    let mut viewer = claims("vic");
    viewer.role = boardcast::auth::Role::Viewer;
    let (mut vic, _) = app.join_with("b", &sign(&viewer)).await;
    let err = vic
        .request("item.created", json!({"item":{"id":"i"}}), "1")
        .await;
    assert_eq!(err["payload"]["code"], "forbidden");
    // Ephemeral events are fine.
    vic.send_type("ping", json!({})).await;
    assert_eq!(vic.next_frame().await["type"], "pong");
}
}

in_both_modes! {
async fn board_state_outlives_its_sessions(mode) {
    let app = spawn_app_in(mode).await;
    let (mut ann, _) = app.join("b", "ann").await;
    ann.request("item.created", json!({"item":{"id":"keep"}}), "1")
        .await;
    ann.request(
        "value.set",
        json!({"itemId":"keep","columnId":"c","value":"v"}),
        "2",
    )
    .await;
    ann.leave().await;
    let (_bob, snapshot) = app.join("b", "bob").await;
    assert_eq!(snapshot["payload"]["seq"], 2);
    assert_eq!(
        snapshot["payload"]["items"],
        json!([{"id":"keep","version":1}])
    );
    assert_eq!(
        snapshot["payload"]["values"],
        json!([{"itemId":"keep","columnId":"c","value":"v","version":1}])
    );
}
}

in_both_modes! {
async fn a_resume_gets_exactly_the_missed_events_then_live_ones(mode) {
    let app = spawn_app_in(mode).await;
    let (mut ann, last) = values_set_while_bob_is_away(&app).await;
    let mut bob = app.resume("b", "bob", last).await;
    let resumed = bob.next_frame().await;
    assert_eq!(resumed["type"], "board.resumed");
    assert_eq!(resumed["payload"]["fromSeq"], last + 1);
    assert_eq!(resumed["payload"]["toSeq"], last + 3);
    assert_eq!(resumed["payload"]["self"]["userId"], "bob");
    for n in 1..=3u64 {
        let event = bob.next_frame().await;
        assert_eq!(event["seq"], last + n);
        assert_eq!(event["payload"]["value"], n);
    }
    ann.request(
        "value.set",
        json!({"itemId":"i","columnId":"c","value":4}),
        "4",
    )
    .await;
    let live = bob.next_sequenced().await;
    assert_eq!(
        live["seq"],
        last + 4,
        "no gap and no duplicate after the replay"
    );
}
}

in_both_modes! {
async fn a_resume_at_the_head_replays_nothing_and_one_ahead_resyncs(mode) {
    let app = spawn_app_in(mode).await;
    let (mut ann, _) = app.join("b", "ann").await;
    ann.request("item.created", json!({"item":{"id":"i"}}), "0")
        .await;
    let mut bob = app.resume("b", "bob", 1).await;
    let resumed = bob.next_frame().await;
    assert_eq!(resumed["type"], "board.resumed");
    assert_eq!(
        (
            resumed["payload"]["fromSeq"].as_u64(),
            resumed["payload"]["toSeq"].as_u64()
        ),
        (Some(2), Some(1))
    );
    let mut ahead = app.resume("b", "bob", 9).await;
    let snapshot = ahead.next_frame().await;
    assert_eq!(snapshot["type"], "board.snapshot");
    assert_eq!(snapshot["payload"]["resync"], true);
}
}

in_both_modes! {
async fn a_resume_older_than_the_log_gets_a_resync_snapshot(mode) {
    let mut config = test_config();
    config.replay_events = 3;
    let app = spawn_app_with_in(mode, config).await;
    let (mut ann, _) = app.join("b", "ann").await;
    ann.request("item.created", json!({"item":{"id":"i"}}), "0")
        .await;
    for n in 1..=5 {
        ann.request(
            "value.set",
            json!({"itemId":"i","columnId":"c","value":n}),
            &n.to_string(),
        )
        .await;
    }
    let mut bob = app.resume("b", "bob", 1).await;
    let snapshot = bob.next_frame().await;
    assert_eq!(snapshot["type"], "board.snapshot");
    assert_eq!(snapshot["payload"]["resync"], true);
    assert_eq!(snapshot["payload"]["seq"], 6);
    assert_eq!(snapshot["payload"]["values"][0]["value"], 5);
}
}

in_both_modes! {
async fn a_retried_operation_applies_once_and_gets_its_first_answer(mode) {
    let app = spawn_app_in(mode).await;
    let (mut watcher, _) = app.join("b", "watcher").await;
    let (mut ann, _) = app.join("b", "ann").await;
    let created = ann.request("item.created", json!({"item":{"id":"i"}}), "c1").await;
    let set = json!({"itemId":"i","columnId":"c","value":1});
    let first = ann.request("value.set", set.clone(), "v1").await;
    assert_eq!(first["type"], "ack", "{first}");
    // The same operation under the same id, as a client retries after `unavailable`.
    let again = ann.request("value.set", set.clone(), "v1").await;
    assert_eq!(again, first, "the retry gets the first ack");
    // A retry of the create too, although the item now exists.
    assert_eq!(ann.request("item.created", json!({"item":{"id":"i"}}), "c1").await, created);
    // Another operation under a used id is a new operation (ids numbered per connection).
    let other = ann
        .request("value.set", json!({"itemId":"i","columnId":"c","value":2}), "v1")
        .await;
    assert_eq!(other["payload"]["seq"], 3, "{other}");
    // Others saw each operation once.
    for expected in 1..=3u64 {
        assert_eq!(watcher.next_sequenced().await["seq"], expected);
    }
    ann.send_type("ping", json!({})).await;
    assert_eq!(ann.next_frame().await["type"], "pong", "no second ack or event");
    watcher.send_type("ping", json!({})).await;
    assert_eq!(watcher.next_of("pong").await["type"], "pong", "no event applied twice");
}
}

in_both_modes! {
async fn a_retried_refusal_is_refused_again(mode) {
    let app = spawn_app_in(mode).await;
    let (mut ann, _) = app.join("b", "ann").await;
    ann.request("item.created", json!({"item":{"id":"x"}}), "1").await;
    let refused = ann.request("item.created", json!({"item":{"id":"x"}}), "2").await;
    assert_eq!(refused["payload"]["code"], "conflict", "{refused}");
    ann.request("item.deleted", json!({"itemId":"x"}), "3").await;
    // Retried after the item went away: the first answer stands, nothing is created.
    let retried = ann.request("item.created", json!({"item":{"id":"x"}}), "2").await;
    assert_eq!(retried, refused);
    let (_, snapshot) = app.join("b", "bob").await;
    assert_eq!(snapshot["payload"]["items"], json!([]));
}
}

in_both_modes! {
async fn a_backend_retry_with_the_same_idempotency_key_applies_once(mode) {
    let app = spawn_app_in(mode).await;
    let (mut watcher, _) = app.join("b", "watcher").await;
    let post = |body: serde_json::Value, key: &'static str| {
        let request = reqwest::Client::new()
            .post(app.url("/api/boards/b/events"))
            .bearer_auth(server_token())
            .header("Idempotency-Key", key)
            .json(&body);
        async move {
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    let create = json!({"type":"item.created","payload":{"item":{"id":"i"}}});
    let first = post(create.clone(), "k-1").await;
    assert_eq!(first, (202, json!({"seq":1})));
    assert_eq!(post(create.clone(), "k-1").await, first, "same key, same answer");
    let custom = json!({"type":"order.shipped","payload":{"n":1}});
    let shipped = post(custom.clone(), "k-2").await;
    assert_eq!(shipped, (202, json!({"seq":2})));
    assert_eq!(post(custom, "k-2").await, shipped);
    // The same key with another body is another request.
    let other = post(json!({"type":"order.shipped","payload":{"n":2}}), "k-2").await;
    assert_eq!(other, (202, json!({"seq":3})));
    for expected in 1..=3u64 {
        assert_eq!(watcher.next_sequenced().await["seq"], expected);
    }
    watcher.send_type("ping", json!({})).await;
    assert_eq!(watcher.next_of("pong").await["type"], "pong");
    let (status, _) = app
        .post("/api/boards/b/events", Some(&server_token()), &create)
        .await;
    assert_eq!(status, 409, "without a key, a second create is a new request");
}
}

in_both_modes! {
async fn a_resume_from_another_epoch_gets_a_resync_snapshot(mode) {
    let app = spawn_app_in(mode).await;
    let (mut ann, _) = app.join("b", "ann").await;
    ann.request("item.created", json!({"item":{"id":"i"}}), "1").await;
    ann.request("item.deleted", json!({"itemId":"i"}), "2").await;
    let (_, snapshot) = app.join("b", "bob").await;
    let epoch = snapshot["payload"]["epoch"].as_str().expect("an epoch").to_string();
    assert_eq!(epoch.len(), 16, "{snapshot}");
    let resume = |epoch: &str| {
        format!("{}&last_seq=1&epoch={epoch}", app.ws_url("b", &token("bob")))
    };
    // Of this epoch: the missed event.
    let mut same = TestClient::connect(&resume(&epoch)).await;
    let resumed = same.next_frame().await;
    assert_eq!(resumed["type"], "board.resumed", "{resumed}");
    assert_eq!(resumed["payload"]["epoch"], epoch.as_str());
    assert_eq!(same.next_frame().await["seq"], 2);
    // Of another (the board was lost and written again since): a snapshot, marked resync.
    let mut other = TestClient::connect(&resume("0123456789abcdef")).await;
    let first = other.next_frame().await;
    assert_eq!(first["type"], "board.snapshot", "{first}");
    assert_eq!(first["payload"]["resync"], true);
    assert_eq!(first["payload"]["epoch"], epoch.as_str());
    let bad = format!("{}&last_seq=1&epoch=not-an-epoch", app.ws_url("b", &token("bob")));
    assert_eq!(app.upgrade_status(bad).await, 400);
}
}

// The embedded mode's storage: what was acked is still there after the process ends.

/// Sends `count` `value.set` operations on columns `c{from}`.. of item `i`, `window` at a
/// time, and waits for every ack; the last seq acked.
async fn set_values(client: &mut TestClient, from: u64, count: u64, window: u64) -> u64 {
    let mut last = 0;
    let mut n = from;
    while n < from + count {
        let upto = (n + window).min(from + count);
        for k in n..upto {
            client
                .send(json!({"type":"value.set","payload":{"itemId":"i","columnId":format!("c{k}"),"value":k},"id":format!("v{k}")}))
                .await;
        }
        for _ in n..upto {
            let ack = client.next_of("ack").await;
            last = last.max(ack["payload"]["seq"].as_u64().expect("a seq"));
        }
        n = upto;
    }
    last
}

/// Starts the binary on `dir`, with limits that let a test write fast and much.
fn start_on(dir: &std::path::Path) -> Instance {
    let dir = dir.to_str().expect("a UTF-8 path");
    Instance::start(&[
        ("DATA_DIR", dir),
        ("RATE_LIMIT", "100000"),
        ("RATE_BURST", "100000"),
        ("MAX_ITEM_BYTES", "1000000"),
    ])
}

#[actix_web::test]
async fn acked_events_survive_sigkill_and_sigterm_and_a_resume_crosses_the_restart() {
    for signal in ["KILL", "TERM"] {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut first = start_on(dir.path());
        let app = first.app();
        let (mut ann, snapshot) = app.join("b", "ann").await;
        let epoch = snapshot["payload"]["epoch"]
            .as_str()
            .expect("an epoch")
            .to_string();
        ann.request("item.created", json!({"item":{"id":"i","title":"T"}}), "0")
            .await;
        let last = set_values(&mut ann, 1, 4, 2).await;
        assert_eq!(last, 5);
        first.signal(signal);
        first.wait_exit().await;

        let second = start_on(dir.path());
        let app = second.app();
        let (_, snapshot) = app.join("b", "bob").await;
        assert_eq!(snapshot["type"], "board.snapshot", "{signal}: {snapshot}");
        assert_eq!(snapshot["payload"]["seq"], 5, "{signal}: seq continues");
        assert_eq!(snapshot["payload"]["epoch"], epoch.as_str(), "{signal}");
        assert_eq!(
            snapshot["payload"]["items"],
            json!([{"id":"i","title":"T","version":1}]),
            "{signal}"
        );
        let values = snapshot["payload"]["values"].as_array().expect("values");
        assert_eq!(values.len(), 4, "{signal}: {snapshot}");
        // A client that saw seq 2 before the restart gets exactly 3..=5, no resync.
        let url = format!(
            "{}&last_seq=2&epoch={epoch}",
            app.ws_url("b", &token("carl"))
        );
        let mut carl = TestClient::connect(&url).await;
        let resumed = carl.next_frame().await;
        assert_eq!(resumed["type"], "board.resumed", "{signal}: {resumed}");
        assert_eq!(
            (
                resumed["payload"]["fromSeq"].as_u64(),
                resumed["payload"]["toSeq"].as_u64()
            ),
            (Some(3), Some(5))
        );
        for seq in 3..=5u64 {
            assert_eq!(carl.next_frame().await["seq"], seq, "{signal}");
        }
        // A retry of an operation acked before the restart is answered, not applied again.
        let (mut ann, _) = app.join("b", "ann").await;
        ann.send(json!({"type":"value.set","payload":{"itemId":"i","columnId":"c4","value":4},"id":"v4"}))
            .await;
        let ack = ann.next_of("ack").await;
        assert_eq!(ack["payload"]["seq"], 5, "{signal}: {ack}");
        let next = ann
            .request(
                "item.updated",
                json!({"itemId":"i","changes":{"title":"U"}}),
                "1",
            )
            .await;
        assert_eq!(next["payload"]["seq"], 6, "{signal}: {next}");
        assert_eq!(carl.next_sequenced().await["seq"], 6, "{signal}");
    }
}

#[actix_web::test]
async fn a_board_of_ten_thousand_items_reloads() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut first = start_on(dir.path());
    let app = first.app();
    let (mut ann, _) = app.join("big", "ann").await;
    let mut n = 0;
    while n < 10_000 {
        for k in n..n + 25 {
            ann.send(json!({"type":"item.created","payload":{"item":{"id":format!("i{k}"),"title":format!("note {k}")}},"id":format!("{k}")}))
                .await;
        }
        for _ in 0..25 {
            ann.next_of("ack").await;
        }
        n += 25;
    }
    first.signal("KILL");
    first.wait_exit().await;
    let second = start_on(dir.path());
    let (_, snapshot) = second.app().join("big", "bob").await;
    assert_eq!(snapshot["payload"]["seq"], 10_000);
    let items = snapshot["payload"]["items"].as_array().expect("items");
    assert_eq!(items.len(), 10_000);
    assert!(items.iter().any(|i| i["title"] == "note 9999"));
}

#[actix_web::test]
async fn a_second_instance_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().to_str().expect("a UTF-8 path");
    let _first = start_on(dir.path());
    let (status, log) = start_refused(&[("DATA_DIR", path)]);
    assert!(!status.success());
    assert!(
        log.contains(&format!(
            "DATA_DIR {path} is in use by another boardcast process"
        )),
        "{log}"
    );
}

#[actix_web::test]
async fn an_unusable_data_dir_stops_start_up_with_its_name() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").expect("a file");
    let data_dir = file.join("data");
    let data_dir = data_dir.to_str().expect("a UTF-8 path");
    let (status, log) = start_refused(&[("DATA_DIR", data_dir)]);
    assert!(!status.success());
    assert!(log.contains(&format!("DATA_DIR {data_dir}:")), "{log}");
}

#[actix_web::test]
async fn a_database_of_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut first = start_on(dir.path());
    first.signal("TERM");
    first.wait_exit().await;
    let db = dir.path().join("boardcast.db");
    rusqlite::Connection::open(&db)
        .and_then(|c| c.execute("INSERT INTO schema_version (version) VALUES (99)", []))
        .expect("the schema version is written");
    let path = dir.path().to_str().expect("a UTF-8 path");
    let (status, log) = start_refused(&[("DATA_DIR", path)]);
    assert!(!status.success());
    assert!(
        log.contains("has schema version 99, newer than this boardcast knows"),
        "{log}"
    );
}

#[actix_web::test]
async fn a_backup_taken_under_write_load_restores_to_a_consistent_board() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().to_str().expect("a UTF-8 path");
    let first = start_on(dir.path());
    let app = first.app();
    let (mut ann, _) = app.join("b", "ann").await;
    ann.request("item.created", json!({"item":{"id":"i"}}), "0")
        .await;
    set_values(&mut ann, 0, 300, 20).await;
    // The backup runs while a window of operations is in flight, and more follow.
    for k in 300..330u64 {
        ann.send(json!({"type":"value.set","payload":{"itemId":"i","columnId":format!("c{k}"),"value":k},"id":format!("v{k}")}))
            .await;
    }
    let target = dir.path().join("copy.db");
    let target = target.to_str().expect("a UTF-8 path");
    let backup = std::process::Command::new(env!("CARGO_BIN_EXE_boardcast"))
        .args(["backup", target])
        .env("DATA_DIR", path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the backup starts");
    for _ in 300..330 {
        ann.next_of("ack").await;
    }
    set_values(&mut ann, 330, 310, 20).await;
    let output = backup.wait_with_output().expect("the backup ends");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // A second backup to the same file is refused rather than overwriting it.
    let (ok, log) = run_tool(&["backup", target], &[("DATA_DIR", path)]);
    assert!(!ok && log.contains("exists"), "{log}");
    drop(first);

    let restored = tempfile::tempdir().expect("a temporary directory");
    std::fs::copy(target, restored.path().join("boardcast.db")).expect("the copy is restored");
    let second = start_on(restored.path());
    let app = second.app();
    let (_, snapshot) = app.join("b", "bob").await;
    let seq = snapshot["payload"]["seq"].as_u64().expect("a seq");
    assert!((301..=641).contains(&seq), "{snapshot}");
    // Every event up to seq is in the copy, none after: one item, then a value per event.
    let values = snapshot["payload"]["values"].as_array().expect("values");
    assert_eq!(values.len() as u64, seq - 1, "{snapshot}");
    assert!(values.iter().all(|v| v["version"] == 1));
    // And its replay log ends at that same seq.
    let mut carl = app.resume("b", "carl", seq - 3).await;
    let resumed = carl.next_frame().await;
    assert_eq!(resumed["type"], "board.resumed", "{resumed}");
    assert_eq!(resumed["payload"]["toSeq"], seq);
}
