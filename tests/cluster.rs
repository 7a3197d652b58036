//! Several instances of the real binary sharing one `redis-server`: they must behave as one
//! service.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// A Redis of the test's own and `n` instances of the binary using it.
fn cluster(n: usize, env: &[(&str, &str)]) -> (RedisServer, Vec<Instance>) {
    let redis = RedisServer::start();
    let url = redis.url();
    let instances = (0..n)
        .map(|_| {
            let mut vars = vec![("REDIS_URL", url.as_str())];
            vars.extend_from_slice(env);
            Instance::start(&vars)
        })
        .collect();
    (redis, instances)
}

async fn ready(instances: &[Instance]) {
    for instance in instances {
        instance.app().wait_ready().await;
    }
}

#[actix_web::test]
async fn presence_and_colors_are_shared_across_instances() {
    let (_redis, nodes) = cluster(2, &[]);
    ready(&nodes).await;
    let (a, b) = (nodes[0].app(), nodes[1].app());
    let (mut bob, bob_snap) = b.join("b", "bob").await;
    let (_ann1, ann_snap) = a.join("b", "ann").await;
    assert_eq!(bob_snap["payload"]["self"]["color"], "#e6194b");
    assert_eq!(ann_snap["payload"]["self"]["color"], "#3cb44b");
    assert_eq!(
        ann_snap["payload"]["users"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(
        bob.next_of("presence.join").await["payload"]["userId"],
        "ann"
    );
    // ann's second tab, on the other instance: same color, no second join.
    let (mut ann2, ann2_snap) = b.join("b", "ann").await;
    assert_eq!(ann2_snap["payload"]["self"]["color"], "#3cb44b");
    let (_cid, _) = a.join("b", "cid").await;
    assert_eq!(
        bob.next_of("presence.join").await["payload"]["userId"],
        "cid"
    );
    // Closing one of ann's tabs announces nothing; the last one does.
    ann2.leave().await;
    drop(_ann1);
    assert_eq!(
        bob.next_of("presence.leave").await["payload"]["userId"],
        "ann"
    );
}

#[actix_web::test]
async fn cursors_and_typing_cross_instances() {
    let (_redis, nodes) = cluster(2, &[]);
    ready(&nodes).await;
    let (mut bob, _) = nodes[1].app().join("b", "bob").await;
    let (mut ann, _) = nodes[0].app().join("b", "ann").await;
    bob.next_of("presence.join").await;
    ann.send_type("cursor.move", json!({"position":{"x":7,"y":8}}))
        .await;
    assert_eq!(
        bob.next_frame().await,
        json!({"type":"cursor.move","payload":{"userId":"ann","position":{"x":7.0,"y":8.0}}})
    );
    ann.send_type("typing.start", json!({"itemId":"i","columnId":"c"}))
        .await;
    assert_eq!(bob.next_frame().await["type"], "typing.start");
    ann.send_type("typing.stop", json!({})).await;
    assert_eq!(
        bob.next_frame().await,
        json!({"type":"typing.stop","payload":{"userId":"ann"}})
    );
    // Nothing came back to ann through Redis: her next frame answers her ping.
    ann.send_type("ping", json!({})).await;
    assert_eq!(ann.next_frame().await["type"], "pong");
}

#[actix_web::test]
async fn seq_is_gap_free_with_writers_on_every_instance() {
    // Each writer sends its hundreds of frames at once: above the default rate limit.
    let (_redis, nodes) = cluster(3, &[("RATE_LIMIT", "10000"), ("RATE_BURST", "10000")]);
    ready(&nodes).await;
    let (mut setup, _) = nodes[0].app().join("b", "setup").await;
    setup
        .request("item.created", json!({"item":{"id":"i"}}), "c")
        .await;
    let mut watchers = vec![];
    for node in &nodes {
        watchers.push(node.app().join("b", "watcher").await.0);
    }
    let mut writers = vec![];
    for (n, node) in nodes.iter().enumerate() {
        writers.push(node.app().join("b", &format!("writer{n}")).await.0);
    }
    const EACH: usize = 200;
    for round in 0..EACH {
        for (w, writer) in writers.iter_mut().enumerate() {
            writer
                .send(json!({"type":"value.set","payload":{"itemId":"i","columnId":format!("c{w}"),"value":round},"id":format!("{w}-{round}")}))
                .await;
        }
    }
    let total = 1 + (EACH * nodes.len()) as u64;
    for watcher in &mut watchers {
        let mut expected = 2;
        while expected <= total {
            let frame = watcher.next_sequenced().await;
            assert_eq!(
                frame["seq"], expected,
                "gap-free and in order on every instance"
            );
            expected += 1;
        }
    }
    for writer in &mut writers {
        let mut acks = 0;
        let mut last = 1;
        while acks < EACH {
            let frame = writer.next_frame().await;
            let seq = frame["seq"].as_u64().or_else(|| {
                (frame["type"] == "ack")
                    .then(|| frame["payload"]["seq"].as_u64())
                    .flatten()
            });
            if let Some(seq) = seq {
                assert_eq!(
                    seq,
                    last + 1,
                    "events and acks together are contiguous: {frame}"
                );
                last = seq;
                acks += usize::from(frame["type"] == "ack");
            }
        }
    }
}

#[actix_web::test]
async fn a_client_resumes_on_another_instance() {
    let (_redis, nodes) = cluster(2, &[]);
    ready(&nodes).await;
    let (mut ann, last) = values_set_while_bob_is_away(&nodes[0].app()).await;
    let mut bob = nodes[1].app().resume("b", "bob", last).await;
    let resumed = bob.next_frame().await;
    assert_eq!(resumed["type"], "board.resumed");
    assert_eq!(
        (
            resumed["payload"]["fromSeq"].as_u64(),
            resumed["payload"]["toSeq"].as_u64()
        ),
        (Some(last + 1), Some(last + 3))
    );
    for n in 1..=3u64 {
        assert_eq!(bob.next_frame().await["seq"], last + n);
    }
    ann.request(
        "value.set",
        json!({"itemId":"i","columnId":"c","value":4}),
        "4",
    )
    .await;
    assert_eq!(bob.next_sequenced().await["seq"], last + 4);
}

#[actix_web::test]
async fn kicks_and_user_events_reach_every_instance() {
    let (_redis, nodes) = cluster(2, &[]);
    ready(&nodes).await;
    let (mut bob, _) = nodes[0].app().join("b", "bob").await;
    let (mut ann_a, _) = nodes[0].app().join("b", "ann").await;
    let (mut ann_b, _) = nodes[1].app().join("other", "ann").await;
    bob.next_of("presence.join").await;
    let (status, _) = nodes[1]
        .app()
        .post(
            "/api/users/ann/events",
            Some(&server_token()),
            &json!({"type":"notice.sent","payload":{"m":1}}),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(ann_a.next_frame().await["type"], "notice.sent");
    assert_eq!(ann_b.next_frame().await["type"], "notice.sent");
    let (status, _) = nodes[1]
        .app()
        .post(
            "/api/boards/b/kick",
            Some(&server_token()),
            &json!({"userId":"ann"}),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(ann_a.expect_close().await, 4003);
    assert_eq!(
        bob.next_of("presence.leave").await["payload"]["userId"],
        "ann"
    );
    // ann on the other board was not kicked.
    ann_b.send_type("ping", json!({})).await;
    assert_eq!(ann_b.next_frame().await["type"], "pong");
}

#[actix_web::test]
async fn the_users_of_a_killed_instance_leave_within_seconds() {
    let (_redis, mut nodes) = cluster(2, &[]);
    ready(&nodes).await;
    let (mut bob, _) = nodes[0].app().join("b", "bob").await;
    let (_ann, _) = nodes[1].app().join("b", "ann").await;
    assert_eq!(
        bob.next_of("presence.join").await["payload"]["userId"],
        "ann"
    );
    nodes[1].signal("KILL");
    let killed = Instant::now();
    assert_eq!(
        bob.next_of("presence.leave").await["payload"]["userId"],
        "ann"
    );
    let took = killed.elapsed();
    eprintln!("the leave was seen {took:?} after SIGKILL");
    assert!(took < Duration::from_secs(15), "the leave took {took:?}");
    let _ = nodes[1].wait_exit().await;
    // The service still answers for the board: a newcomer sees only bob.
    let (_cid, snapshot) = nodes[0].app().join("b", "cid").await;
    let users: Vec<_> = snapshot["payload"]["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| u["userId"].clone())
        .collect();
    assert_eq!(users, vec![json!("bob"), json!("cid")]);
}

#[actix_web::test]
async fn a_redis_restart_is_survived_without_gaps_or_duplicates() {
    let (redis, nodes) = cluster(2, &[]);
    ready(&nodes).await;
    let (a, b) = (nodes[0].app(), nodes[1].app());
    let (mut watcher, _) = a.join("b", "watcher").await;
    let (mut local, _) = a.join("b", "local").await;
    let (mut writer, _) = b.join("b", "writer").await;
    writer
        .request("item.created", json!({"item":{"id":"i"}}), "c")
        .await;
    assert_eq!(watcher.next_sequenced().await["seq"], 1);

    redis.stop();
    a.wait_readyz(503).await;
    b.wait_readyz(503).await;
    // Durable writes are refused, not lost.
    let err = writer
        .request(
            "value.set",
            json!({"itemId":"i","columnId":"c","value":0}),
            "down",
        )
        .await;
    assert_eq!(err["payload"]["code"], "unavailable");
    // Ephemeral events still reach the sessions of the same instance.
    local
        .send_type("cursor.move", json!({"position":{"x":1,"y":1}}))
        .await;
    assert_eq!(
        watcher.next_of("cursor.move").await["payload"]["userId"],
        "local"
    );

    redis.restart();
    b.wait_ready().await;
    // Written as soon as instance b is back, perhaps before instance a has resubscribed.
    for n in 1..=5 {
        let ack = writer
            .request(
                "value.set",
                json!({"itemId":"i","columnId":"c","value":n}),
                &format!("w{n}"),
            )
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
    }
    for expected in 2..=6u64 {
        let frame = watcher.next_sequenced().await;
        assert_eq!(frame["seq"], expected, "no gap, no duplicate");
    }
    a.wait_ready().await;
    // Presence survived: the watcher's instance still lists everyone.
    let (status, body) = a.get("/api/boards/b/presence", Some(&server_token())).await;
    assert_eq!(status, 200);
    assert_eq!(body["users"].as_array().map(Vec::len), Some(3), "{body}");
}

#[actix_web::test]
async fn an_instance_started_before_redis_is_unready_until_redis_answers() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/");
    let instance = Instance::start(&[("REDIS_URL", &url)]);
    let app = instance.app();
    app.wait_readyz(503).await;
    assert_eq!(app.get("/healthz", None).await.0, 200);
    let redis = RedisServer::start_on(port);
    app.wait_ready().await;
    let (mut ann, _) = app.join("b", "ann").await;
    let ack = ann
        .request("item.created", json!({"item":{"id":"i"}}), "1")
        .await;
    assert_eq!(ack["payload"]["seq"], 1);
    drop(redis);
}
