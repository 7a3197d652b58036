//! Several instances of the real binary sharing one `redis-server`: they must behave as one
//! service.

use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::{json, Value};

/// A Redis of the test's own and `n` instances of the binary using it.
fn cluster(n: usize, env: &[(&str, &str)]) -> (RedisServer, Vec<Instance>) {
    let redis = RedisServer::start();
    let instances = instances_on(&[("REDIS_URL", &redis.url())], n, env);
    (redis, instances)
}

/// `n` instances of the binary with `shared` (where Redis is) and `env`.
fn instances_on(shared: &[(&str, &str)], n: usize, env: &[(&str, &str)]) -> Vec<Instance> {
    (0..n)
        .map(|_| {
            let mut vars = shared.to_vec();
            vars.extend_from_slice(env);
            Instance::start(&vars)
        })
        .collect()
}

/// What the instances of a test share: one Redis, or a Redis Cluster.
#[derive(Clone, Copy)]
enum Shared {
    Single,
    Cluster,
}

/// A running [`Shared`], held for the test's length and stopped when dropped.
#[allow(dead_code)]
enum Running {
    Single(RedisServer),
    Cluster(RedisCluster),
}

impl Running {
    /// The instances' lease key and the pattern of their records of boards.
    fn instance_names(&self) -> (&'static str, &'static str) {
        match self {
            Running::Single(_) => ("bc:instances", "bc:instance:*:boards"),
            Running::Cluster(_) => ("bc:{instances}", "bc:{instances}:*:boards"),
        }
    }

    /// How many members a sorted set has.
    fn zcard(&self, key: &str) -> usize {
        match self {
            Running::Single(redis) => redis::cmd("ZCARD")
                .arg(key)
                .query(&mut redis.connection())
                .expect("ZCARD"),
            Running::Cluster(cluster) => cluster
                .cli(cluster.master_of(key), &["ZCARD", key])
                .trim()
                .parse()
                .expect("a count"),
        }
    }

    /// How many members a set has.
    fn scard(&self, key: &str) -> usize {
        match self {
            Running::Single(redis) => redis::cmd("SCARD")
                .arg(key)
                .query(&mut redis.connection())
                .expect("SCARD"),
            Running::Cluster(cluster) => cluster
                .cli(cluster.master_of(key), &["SCARD", key])
                .trim()
                .parse()
                .expect("a count"),
        }
    }

    /// The keys matching a pattern (on a cluster, those of the pattern's own slot).
    fn keys(&self, pattern: &str) -> Vec<String> {
        match self {
            Running::Single(redis) => redis::cmd("KEYS")
                .arg(pattern)
                .query(&mut redis.connection())
                .expect("KEYS"),
            Running::Cluster(cluster) => cluster
                .cli(cluster.master_of(pattern), &["KEYS", pattern])
                .lines()
                .map(str::to_string)
                .filter(|k| !k.is_empty())
                .collect(),
        }
    }

    /// The value of a string key, read from the node that holds it.
    fn get(&self, key: &str) -> Option<String> {
        match self {
            Running::Single(redis) => redis::cmd("GET")
                .arg(key)
                .query(&mut redis.connection())
                .expect("GET"),
            Running::Cluster(cluster) => {
                let value = cluster.cli(cluster.master_of(key), &["GET", key]);
                Some(value.trim().to_string()).filter(|v| !v.is_empty())
            }
        }
    }
}

impl Shared {
    /// Starts the Redis and `n` instances using it.
    fn start(self, n: usize, env: &[(&str, &str)]) -> (Running, Vec<Instance>) {
        match self {
            Shared::Single => {
                let (redis, instances) = cluster(n, env);
                (Running::Single(redis), instances)
            }
            Shared::Cluster => {
                let redis = RedisCluster::start();
                let urls = redis.urls();
                let shared = [("REDIS_URL", urls.as_str()), ("REDIS_CLUSTER", "on")];
                let instances = instances_on(&shared, n, env);
                (Running::Cluster(redis), instances)
            }
        }
    }
}

/// Runs a test of several instances over one Redis (`name::single`) and over a Redis Cluster
/// of three masters and three replicas (`name::redis_cluster`).
macro_rules! on_one_redis_and_a_cluster {
    (async fn $name:ident($redis:ident) $body:block) => {
        mod $name {
            use super::*;

            async fn body($redis: Shared) $body

            #[actix_web::test]
            async fn single() {
                body(Shared::Single).await
            }

            #[actix_web::test]
            async fn redis_cluster() {
                body(Shared::Cluster).await
            }
        }
    };
}

async fn ready(instances: &[Instance]) {
    for instance in instances {
        instance.app().wait_ready().await;
    }
}

on_one_redis_and_a_cluster! {
    async fn presence_and_colors_are_shared_across_instances(redis) {
    let (_redis, nodes) = redis.start(2, &[]);
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
}

on_one_redis_and_a_cluster! {
    async fn cursors_and_typing_cross_instances(redis) {
    let (_redis, nodes) = redis.start(2, &[]);
    ready(&nodes).await;
    let (mut bob, _) = nodes[1].app().join("b", "bob").await;
    let (mut ann, _) = nodes[0].app().join("b", "ann").await;
    bob.next_of("presence.join").await;
    ann.send_type("cursor.move", json!({"position":{"x":7,"y":8}}))
        .await;
    assert_eq!(
        bob.next_frame().await,
        json!({"type":"cursor.move","payload":{"userId":"ann","position":{"x":7,"y":8}}})
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
}

on_one_redis_and_a_cluster! {
    async fn seq_is_gap_free_with_writers_on_every_instance(redis) {
    // Each writer sends its hundreds of frames at once: above the default rate limit.
    let (_redis, nodes) = redis.start(3, &[("RATE_LIMIT", "10000"), ("RATE_BURST", "10000")]);
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
    // Each writer keeps up to 25 operations outstanding (a session holds at most 32 waiting).
    const WINDOW: usize = 25;
    // Per writer: acks seen, and the last seq seen in its events and acks together.
    let mut seen = vec![(0usize, 1u64); writers.len()];
    for window in (0..EACH).step_by(WINDOW) {
        for round in window..window + WINDOW {
            for (w, writer) in writers.iter_mut().enumerate() {
                writer
                    .send(json!({"type":"value.set","payload":{"itemId":"i","columnId":format!("c{w}"),"value":round},"id":format!("{w}-{round}")}))
                    .await;
            }
        }
        for (writer, (acks, last)) in writers.iter_mut().zip(seen.iter_mut()) {
            while *acks < window + WINDOW {
                let frame = writer.next_frame().await;
                assert_ne!(frame["type"], "error", "{frame}");
                let seq = frame["seq"].as_u64().or_else(|| {
                    (frame["type"] == "ack")
                        .then(|| frame["payload"]["seq"].as_u64())
                        .flatten()
                });
                if let Some(seq) = seq {
                    assert_eq!(
                        seq,
                        *last + 1,
                        "events and acks together are contiguous: {frame}"
                    );
                    *last = seq;
                    *acks += usize::from(frame["type"] == "ack");
                }
            }
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
    }
}

on_one_redis_and_a_cluster! {
    async fn a_client_resumes_on_another_instance(redis) {
    let (_redis, nodes) = redis.start(2, &[]);
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
}

on_one_redis_and_a_cluster! {
    async fn kicks_and_user_events_reach_every_instance(redis) {
    let (_redis, nodes) = redis.start(2, &[]);
    ready(&nodes).await;
    let (mut bob, _) = nodes[0].app().join("b", "bob").await;
    let (mut ann_a, _) = nodes[0].app().join("b", "ann").await;
    let (mut ann_b, _) = nodes[1].app().join("other", "ann").await;
    // The same user id in another tenant.
    let mut acme = claims("ann");
    acme.tenant = Some("acme".into());
    let (mut acme_ann, _) = nodes[0].app().join_with("b", &sign(&acme)).await;
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
    acme_ann.send_type("ping", json!({})).await;
    assert_eq!(acme_ann.next_frame().await["type"], "pong");
    // User events cross on the tenant's workspace channel: no channel per user. The instances
    // listen on their boards' and tenants' workspaces' channels only.
    if let Running::Single(redis) = &_redis {
        let mut channels: Vec<String> = redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .query(&mut redis.connection())
            .expect("PUBSUB CHANNELS");
        channels.sort();
        assert_eq!(
            channels,
            [
                "bc:{*|acme}:ch",
                "bc:{*|default}:ch",
                "bc:{b|acme}:ch",
                "bc:{b|default}:ch",
                "bc:{other|default}:ch"
            ]
        );
    }
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
}

on_one_redis_and_a_cluster! {
    async fn the_users_of_a_killed_instance_leave_within_seconds(redis) {
    let (_redis, mut nodes) = redis.start(2, &[]);
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

/// Asserts that `client` hears nothing (pings aside) for `quiet`.
async fn hears_nothing_for(client: &mut TestClient, quiet: Duration, who: &str) {
    use futures_util::StreamExt;
    let until = tokio::time::Instant::now() + quiet;
    loop {
        match tokio::time::timeout_at(until, client.ws.next()).await {
            Err(_) => return,
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text)))) => {
                panic!("{who} heard {text} while nothing should happen")
            }
            Ok(Some(Ok(_))) => continue,
            Ok(other) => panic!("{who}'s socket ended: {other:?}"),
        }
    }
}

on_one_redis_and_a_cluster! {
    async fn a_user_leaves_after_a_pause_and_then_a_crash_of_their_instance(redis) {
    let (_redis, nodes) = redis.start(2, &[]);
    ready(&nodes).await;
    let (mut bob, _) = nodes[0].app().join("b", "bob").await;
    let (_ann, _) = nodes[1].app().join("b", "ann").await;
    assert_eq!(
        bob.next_of("presence.join").await["payload"]["userId"],
        "ann"
    );

    // Paused past its lease: swept, so ann leaves; resumed: ann is back.
    nodes[1].signal("STOP");
    assert_eq!(
        bob.next_of("presence.leave").await["payload"]["userId"],
        "ann"
    );
    nodes[1].signal("CONT");
    assert_eq!(
        bob.next_of("presence.join").await["payload"]["userId"],
        "ann"
    );

    // Then it dies for good: ann must leave again, within the contract's 15 s.
    nodes[1].signal("KILL");
    let killed = Instant::now();
    assert_eq!(
        bob.next_of("presence.leave").await["payload"]["userId"],
        "ann"
    );
    assert!(
        killed.elapsed() < Duration::from_secs(15),
        "{:?}",
        killed.elapsed()
    );
    }
}

#[actix_web::test]
async fn sweeping_a_long_lived_dead_instance_never_makes_live_ones_sweep_each_other() {
    let (redis, nodes) = cluster(2, &[]);
    ready(&nodes).await;
    let (mut bob, _) = nodes[0].app().join("b", "bob").await;
    let (mut ann, _) = nodes[1].app().join("b", "ann").await;
    assert_eq!(
        bob.next_of("presence.join").await["payload"]["userId"],
        "ann"
    );

    // A dead instance that had sessions on 160,000 boards, as a long-lived one may have had.
    let mut conn = redis.connection();
    const BOARDS: usize = 160_000;
    for chunk in (0..BOARDS).collect::<Vec<_>>().chunks(10_000) {
        let mut sadd = redis::cmd("SADD");
        sadd.arg("bc:instance:ghost:boards");
        for n in chunk {
            sadd.arg(format!(r#"{{"tenant":"default","board":"old{n}"}}"#));
        }
        let _: () = sadd.query(&mut conn).expect("SADD");
    }
    let _: () = redis::cmd("ZADD")
        .arg("bc:instances")
        .arg(1)
        .arg("ghost")
        .query(&mut conn)
        .expect("ZADD");
    let started = Instant::now();

    // While it is swept, the live instances keep their leases: nobody leaves or rejoins.
    hears_nothing_for(&mut bob, Duration::from_secs(8), "bob").await;
    hears_nothing_for(&mut ann, Duration::from_millis(100), "ann").await;

    // And the sweep finishes.
    loop {
        let lease: Option<f64> = redis::cmd("ZSCORE")
            .arg("bc:instances")
            .arg("ghost")
            .query(&mut conn)
            .expect("ZSCORE");
        if lease.is_none() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the sweep never finished"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "160,000 boards of a dead instance swept in {:?}",
        started.elapsed()
    );
    let left: usize = redis::cmd("SCARD")
        .arg("bc:instance:ghost:boards")
        .query(&mut conn)
        .expect("SCARD");
    assert_eq!(left, 0);
    // Both are still present for each other.
    hears_nothing_for(&mut bob, Duration::from_millis(100), "bob").await;
    ann.send_type("ping", json!({})).await;
    assert_eq!(ann.next_frame().await["type"], "pong");
}

#[actix_web::test]
async fn an_instance_records_only_the_boards_it_has_sessions_on() {
    let (redis, nodes) = cluster(1, &[]);
    ready(&nodes).await;
    let app = nodes[0].app();
    let (_stay, _) = app.join("home", "ann").await;
    for n in 0..40 {
        let (mut visit, _) = app.join(&format!("room{n}"), "ann").await;
        visit.leave().await;
    }
    let mut conn = redis.connection();
    let deadline = Instant::now() + WAIT;
    loop {
        let records: Vec<String> = redis::cmd("KEYS")
            .arg("bc:instance:*:boards")
            .query(&mut conn)
            .expect("KEYS");
        assert_eq!(records.len(), 1, "{records:?}");
        let boards: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&records[0])
            .query(&mut conn)
            .expect("SMEMBERS");
        // The board it stays on, and its tenant's workspace.
        if boards.len() == 2 {
            assert!(boards.iter().any(|b| b.contains("home")), "{boards:?}");
            assert!(boards.iter().any(|b| b.contains("\"*\"")), "{boards:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the record still holds {boards:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing of the visited boards is kept but a revision counter and an epoch that expire.
    let kept: Vec<String> = redis::cmd("KEYS")
        .arg("bc:{room*")
        .query(&mut conn)
        .expect("KEYS");
    for key in &kept {
        assert!(
            key.ends_with(":p:rev") || key.ends_with(":epoch"),
            "{key} outlived its board's presence"
        );
        let ttl: i64 = redis::cmd("TTL").arg(key).query(&mut conn).expect("TTL");
        assert!(ttl > 0, "{key} never expires");
    }
}

on_one_redis_and_a_cluster! {
    async fn a_clean_stop_publishes_thousands_of_leaves_at_once_and_leaves_no_records(redis) {
    let (running, mut nodes) = redis.start(2, &[]);
    let (leases, records_pattern) = running.instance_names();
    ready(&nodes).await;
    let (a, b) = (nodes[0].app(), nodes[1].app());
    const BOARDS: usize = 100;
    const PER_BOARD: usize = 20;
    let mut sessions = vec![];
    for board in 0..BOARDS {
        for user in 0..PER_BOARD {
            let url = b.ws_url(&format!("s{board}"), &token(&format!("u{board}-{user}")));
            sessions.push(TestClient::connect(&url).await);
        }
    }
    let (_watcher, snapshot) = a.join("s0", "watcher").await;
    assert_eq!(
        snapshot["payload"]["users"].as_array().map(Vec::len),
        Some(PER_BOARD + 1)
    );
    assert_eq!(running.zcard(leases), 2);
    // Every session registered: the stopping instance has all its boards on record.
    let deadline = Instant::now() + WAIT;
    while !running
        .keys(records_pattern)
        .iter()
        .any(|record| running.scard(record) == BOARDS + 1)
    {
        assert!(Instant::now() < deadline, "the sessions never all registered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    nodes[1].signal("TERM");
    let stopped = Instant::now();
    let status = nodes[1].wait_exit().await;
    assert!(status.success(), "{status:?}");
    // Its lease and records went with it: nobody has to sweep it.
    if running.zcard(leases) != 1 {
        let log = nodes[1].log();
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("WARN"))
            .collect();
        panic!(
            "the lease is left behind; the stopping instance logged:\n{}",
            warnings.join("\n")
        );
    }
    let records = running.keys(records_pattern);
    assert_eq!(records.len(), 1, "{records:?}");
    // Every board is empty on the other instance already.
    for board in 0..BOARDS {
        let (status, body) = a
            .get(
                &format!("/api/boards/s{board}/presence"),
                Some(&server_token()),
            )
            .await;
        assert_eq!(status, 200);
        let users = body["users"].as_array().map(Vec::len).unwrap_or(0);
        let expected = usize::from(board == 0);
        assert_eq!(users, expected, "board s{board}: {body}");
    }
    // The stopping instance published the leaves itself; no sweep did.
    nodes[1]
        .logged(&format!(
            "left {} boards and workspaces in the shared presence",
            BOARDS + 1
        ))
        .await;
    eprintln!(
        "{} sessions left with a clean stop; presence empty {:?} after SIGTERM",
        BOARDS * PER_BOARD,
        stopped.elapsed()
    );
    drop(sessions);
    }
}

/// The value of one of an instance's metrics.
async fn metric(app: &TestApp, name: &str) -> u64 {
    let (_, metrics) = app.get_text("/metrics").await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{name} is not exported"))
}

/// Reads `writer`'s frames until it has an answer (ack or error) to each of `ids`; the answers
/// by id, in the order they came.
async fn answers_to(writer: &mut TestClient, ids: usize) -> Vec<(String, Value)> {
    let mut answers = vec![];
    while answers.len() < ids {
        let frame = writer.next_frame().await;
        if frame["type"] == "ack" || frame["type"] == "error" {
            let id = frame["payload"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            answers.push((id, frame));
        }
    }
    answers
}

#[actix_web::test]
async fn a_busy_board_s_operations_commit_in_batches_each_exactly_once() {
    let (redis, nodes) = cluster(
        2,
        &[
            ("RATE_LIMIT", "10000"),
            ("RATE_BURST", "10000"),
            ("MAX_ITEM_BYTES", "2000"),
        ],
    );
    ready(&nodes).await;
    let apps: Vec<TestApp> = nodes.iter().map(Instance::app).collect();
    let (mut watcher, _) = apps[0].join("b", "watcher").await;
    let (mut setup, _) = apps[1].join("b", "setup").await;
    setup
        .request("item.created", json!({"item":{"id":"i"}}), "c")
        .await;
    const WRITERS: usize = 8;
    const EACH: usize = 24;
    let mut writers = vec![];
    for w in 0..WRITERS {
        writers.push(apps[w % 2].join("b", &format!("w{w}")).await.0);
    }
    // Everyone writes at once, on both instances, to the same item and the same cell, so that
    // a batch holds operations judged on what the ones before it leave. One value is too
    // large for the item (refused mid-batch), and each writer sends its last operation twice
    // (a retry with the same id).
    for round in 0..EACH {
        for (w, writer) in writers.iter_mut().enumerate() {
            let id = format!("{w}-{round}");
            let frame = if round % 2 == 0 {
                json!({"type":"item.updated","payload":{"itemId":"i","changes":{format!("w{w}"): round}},"id":id})
            } else {
                let value = if (w, round) == (3, 5) {
                    "x".repeat(3000)
                } else {
                    id.clone()
                };
                json!({"type":"value.set","payload":{"itemId":"i","columnId":"shared","value":value},"id":id})
            };
            writer.send(frame.clone()).await;
            if round == EACH - 1 {
                writer.send(frame).await;
            }
        }
    }
    let mut seqs = vec![];
    for (w, writer) in writers.iter_mut().enumerate() {
        let answers = answers_to(writer, EACH + 1).await;
        // Acks come in seq order.
        let acked: Vec<u64> = answers
            .iter()
            .filter_map(|(_, frame)| frame["payload"]["seq"].as_u64())
            .collect();
        assert!(acked.is_sorted(), "writer {w}: {acked:?}");
        // Each operation is answered; the retry gets the first answer.
        let mut by_round: Vec<Vec<&Value>> = vec![vec![]; EACH];
        for (id, frame) in &answers {
            let round = id
                .strip_prefix(&format!("{w}-"))
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or_else(|| panic!("writer {w}: answer to {id:?}: {frame}"));
            by_round[round].push(frame);
        }
        let last = &by_round[EACH - 1];
        assert_eq!(last.len(), 2, "writer {w}: {last:?}");
        assert_eq!(
            last[0], last[1],
            "writer {w}: a retry gets the first answer"
        );
        // A writer's operations apply in the order it sent them.
        let mut previous = 0;
        for (round, frames) in by_round.iter().enumerate() {
            let frame = frames[0];
            if (w, round) == (3, 5) {
                assert_eq!(frame["payload"]["code"], "too_large", "{frame}");
                continue;
            }
            assert_eq!(frame["type"], "ack", "{frame}");
            let seq = frame["payload"]["seq"].as_u64().expect("a seq");
            assert!(
                seq > previous,
                "writer {w}: round {round} applied at {seq}, before {previous}"
            );
            previous = seq;
            seqs.push(seq);
        }
    }
    let updates = (WRITERS * EACH / 2) as u64;
    let total = 1 + WRITERS as u64 * EACH as u64 - 1;
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (2..=total).collect::<Vec<_>>(),
        "each applied once, no gap"
    );
    let mut last_value = Value::Null;
    for seq in 1..=total {
        let event = watcher.next_sequenced().await;
        assert_eq!(event["seq"], seq);
        if event["type"] == "value.set" {
            last_value = event["payload"]["value"].clone();
        }
    }
    // The board holds what the events say, once each.
    let (status, board) = apps[0].get("/api/boards/b", Some(&server_token())).await;
    assert_eq!(status, 200, "{board}");
    let item = &board["items"][0];
    assert_eq!(item["version"], 1 + updates, "{item}");
    for w in 0..WRITERS {
        assert_eq!(item[format!("w{w}")], EACH - 2, "{item}");
    }
    let cell = &board["values"][0];
    assert_eq!(cell["version"], total - 1 - updates, "{cell}");
    assert_eq!(cell["value"], last_value, "{cell}");

    // On one instance, with no other instance's writes in the way, a busy board takes fewer
    // script calls than operations.
    let mut writers = vec![];
    for w in 0..WRITERS {
        writers.push(apps[0].join("b", &format!("v{w}")).await.0);
    }
    let before = command_calls(&redis, "evalsha");
    for round in 0..EACH {
        for (w, writer) in writers.iter_mut().enumerate() {
            writer
                .send(json!({"type":"value.set","payload":{"itemId":"i","columnId":format!("c{w}"),"value":round},"id":format!("v{w}-{round}")}))
                .await;
        }
    }
    for writer in &mut writers {
        for (_, frame) in answers_to(writer, EACH).await {
            assert_eq!(frame["type"], "ack", "{frame}");
        }
    }
    let calls = command_calls(&redis, "evalsha") - before;
    let ops = (WRITERS * EACH) as u64;
    eprintln!("{ops} operations of one board committed in {calls} script calls");
    assert!(
        calls <= ops / 2,
        "{calls} script calls for {ops} operations"
    );
}

/// Calls of one Redis command so far, in or out of scripts.
fn command_calls(redis: &RedisServer, command: &str) -> u64 {
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut redis.connection())
        .expect("INFO");
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

// A board's next batch is staged on what the instance's last commit of it left: no read
// before the script. 20 operations one after the other cost the script's own three HGETs each
// (the record, the item, the cell); read first, they cost six.
#[actix_web::test]
async fn a_board_s_next_batch_is_staged_on_what_its_last_commit_left() {
    let (redis, nodes) = cluster(1, &[]);
    ready(&nodes).await;
    let app = nodes[0].app();
    let (mut ann, _) = app.join("b", "ann").await;
    let created = ann
        .request("item.created", json!({"item":{"id":"i"}}), "c")
        .await;
    assert_eq!(created["type"], "ack", "{created}");
    const OPS: u64 = 20;
    let before = command_calls(&redis, "hget");
    for n in 0..OPS {
        let set = ann
            .request(
                "value.set",
                json!({"itemId":"i","columnId":"c","value":n}),
                &format!("v{n}"),
            )
            .await;
        assert_eq!(set["payload"]["version"], n + 1, "{set}");
    }
    let reads = command_calls(&redis, "hget") - before;
    assert!(reads < 4 * OPS, "{reads} HGETs for {OPS} operations");
}

// A session joining a board where 30 users are present gets their colors, statuses and
// arrival order from one read of each presence hash, not three reads per user.
#[actix_web::test]
async fn a_board_s_listing_reads_each_presence_hash_once() {
    let (redis, nodes) = cluster(1, &[]);
    ready(&nodes).await;
    let app = nodes[0].app();
    let mut present = vec![];
    for n in 0..30 {
        present.push(app.join("crowd", &format!("u{n}")).await.0);
    }
    let before = command_calls(&redis, "hget");
    let (_late, snapshot) = app.join("crowd", "late").await;
    let reads = command_calls(&redis, "hget") - before;
    let users = snapshot["payload"]["users"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(users.len(), 31, "{snapshot}");
    assert!(
        users
            .iter()
            .all(|u| u["color"].as_str().is_some_and(|c| c.starts_with('#'))),
        "{snapshot}"
    );
    assert!(reads < 30, "{reads} HGETs for one arrival among 30 users");
}

// A workspace shows who is online and where, never a color: its users get no color entry in
// Redis (about 60 bytes an online user of the tenant, and a command at each arrival), while
// the board they are on keeps theirs.
#[actix_web::test]
async fn a_workspace_keeps_no_colors_in_redis() {
    let (redis, nodes) = cluster(1, &[]);
    ready(&nodes).await;
    let app = nodes[0].app();
    let (_ann, _) = app.join("b", "ann").await;
    let (_bob, _) = app.join("b", "bob").await;
    let mut conn = redis.connection();
    let mut hlen =
        |key: &str| -> usize { redis::cmd("HLEN").arg(key).query(&mut conn).expect("HLEN") };
    let deadline = Instant::now() + WAIT;
    while hlen("bc:{*|default}:p:sessions") < 2 {
        assert!(Instant::now() < deadline, "the workspace never had both");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(hlen("bc:{b|default}:p:color"), 2);
    assert_eq!(hlen("bc:{*|default}:p:color"), 0);
}

// What an instance's last commit left is a guess, never a judgement: another instance changed
// the item or the cell since, and the operation is judged on what the store holds, whether the
// guess would have refused it (a stale version, an item it saw deleted) or applied it.
#[actix_web::test]
async fn an_operation_is_judged_on_the_store_after_another_instance_wrote() {
    let (_redis, nodes) = cluster(2, &[]);
    ready(&nodes).await;
    let (a, b) = (nodes[0].app(), nodes[1].app());
    let (mut ann, _) = a.join("stale", "ann").await;
    let (mut bob, _) = b.join("stale", "bob").await;
    let ack = |frame: Value| {
        assert_eq!(frame["type"], "ack", "{frame}");
        frame["payload"].clone()
    };
    ack(ann
        .request("item.created", json!({"item":{"id":"x"}}), "1")
        .await);
    let set = |value: u64, expected: Option<u64>| {
        let mut payload = json!({"itemId":"x","columnId":"c","value":value});
        if let Some(version) = expected {
            payload["expectedVersion"] = json!(version);
        }
        payload
    };
    assert_eq!(
        ack(ann.request("value.set", set(1, None), "2").await)["version"],
        1
    );
    assert_eq!(
        ack(bob.request("value.set", set(5, None), "3").await)["version"],
        2
    );
    // ann's instance last saw version 1: the version bob left is the one that counts.
    assert_eq!(
        ack(ann.request("value.set", set(2, Some(2)), "4").await)["version"],
        3
    );
    // ann's instance saw the item deleted; bob created it again.
    ack(ann
        .request("item.deleted", json!({"itemId":"x"}), "5")
        .await);
    ack(bob
        .request("item.created", json!({"item":{"id":"x"}}), "6")
        .await);
    assert_eq!(
        ack(ann.request("value.set", set(7, None), "7").await)["version"],
        1
    );
    // bob changed the item since ann's instance wrote its cell.
    ack(bob
        .request(
            "item.updated",
            json!({"itemId":"x","changes":{"t":"b"}}),
            "8",
        )
        .await);
    assert_eq!(
        ack(ann.request("value.set", set(8, None), "9").await)["version"],
        2
    );
    let (_, snapshot) = b.join("stale", "carl").await;
    let payload = &snapshot["payload"];
    assert_eq!(payload["items"][0]["t"], "b", "{snapshot}");
    assert_eq!(payload["values"][0]["value"], 8, "{snapshot}");
    assert_eq!(payload["values"][0]["version"], 2, "{snapshot}");
}

/// Sessions coming or going at once (the users of a dead instance reconnecting, a proxy
/// restart) reach presence in batches: one script per board and batch, not one per session.
/// With Redis stopped meanwhile, the first request holds each board's lane and the rest gather
/// behind it; each session still gets its own color and everyone hears every transition.
#[actix_web::test]
async fn sessions_coming_or_going_at_once_reach_presence_in_batches() {
    let (redis, nodes) = cluster(2, &[]);
    ready(&nodes).await;
    let (a, b) = (nodes[0].app(), nodes[1].app());
    let (mut watcher, _) = b.join("b", "watcher").await;
    const USERS: usize = 100;
    let open = || metric(&a, "boardcast_sessions");
    let until_open = |n: u64| async move {
        let deadline = Instant::now() + WAIT;
        while open().await != n {
            assert!(Instant::now() < deadline, "sessions open: not {n}");
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    };

    let before = command_calls(&redis, "evalsha");
    redis.signal("STOP");
    let names: Vec<String> = (0..USERS).map(|n| format!("u{n}")).collect();
    let joining = futures_util::future::join_all(names.iter().map(|name| a.join("b", name)));
    let go_on = async {
        until_open(USERS as u64).await;
        redis.signal("CONT");
    };
    let (joined, ()) = futures_util::future::join(joining, go_on).await;
    let calls = command_calls(&redis, "evalsha") - before;
    eprintln!("{USERS} sessions arrived in {calls} script calls");
    let mut colors = std::collections::BTreeMap::new();
    while colors.len() < USERS {
        let join = watcher.next_of("presence.join").await;
        let user = join["payload"]["userId"].as_str().unwrap_or_default();
        colors.insert(user.to_string(), join["payload"]["color"].clone());
    }
    for (n, (_, snapshot)) in joined.iter().enumerate() {
        let user = format!("u{n}");
        assert_eq!(
            snapshot["payload"]["self"]["color"], colors[&user],
            "{user}'s own color is the one others see"
        );
        let listed = snapshot["payload"]["users"].as_array().map(Vec::len);
        assert!(listed >= Some(2), "{user}: {snapshot}");
    }
    // Each session reads the board once (a script of its own); its arrivals on the board and in
    // the workspace took two more before.
    let presence_calls = calls.saturating_sub(USERS as u64);
    assert!(
        presence_calls <= USERS as u64 / 4,
        "{presence_calls} presence script calls for {USERS} arrivals"
    );

    let before = command_calls(&redis, "evalsha");
    redis.signal("STOP");
    drop(joined);
    until_open(0).await;
    redis.signal("CONT");
    let mut left = std::collections::BTreeSet::new();
    while left.len() < USERS {
        let frame = watcher.next_of("presence.leave").await;
        left.insert(
            frame["payload"]["userId"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert!(!left.contains("watcher"), "{left:?}");
    let (status, present) = a.get("/api/boards/b/presence", Some(&server_token())).await;
    assert_eq!(status, 200, "{present}");
    assert_eq!(
        present["users"].as_array().map(Vec::len),
        Some(1),
        "{present}"
    );
    // The board's and the tenant workspace's departures: two scripts per session before.
    let calls = command_calls(&redis, "evalsha") - before;
    eprintln!("{USERS} sessions left in {calls} script calls");
    assert!(
        calls <= USERS as u64 / 4,
        "{calls} script calls for {USERS} departures"
    );
}

#[actix_web::test]
async fn durable_ops_are_refused_at_once_while_redis_stalls() {
    let (redis, nodes) = cluster(1, &[("RATE_LIMIT", "10000"), ("RATE_BURST", "10000")]);
    ready(&nodes).await;
    let app = nodes[0].app();
    let (mut writer, _) = app.join("b", "writer").await;
    let created = writer
        .request("item.created", json!({"item":{"id":"i"}}), "c")
        .await;
    assert_eq!(created["payload"]["seq"], 1);

    redis.signal("STOP");
    let stalled = Instant::now();
    // Past the 32 operations a session may have in flight and the 32 it may hold behind them.
    const OPS: usize = 80;
    for n in 0..OPS {
        writer
            .send(json!({"type":"value.set","payload":{"itemId":"i","columnId":"c","value":"v".repeat(1000)},"id":format!("s{n}")}))
            .await;
    }
    let mut answered = vec![];
    while answered.len() < OPS {
        let frame = writer.next_frame().await;
        if frame["type"] == "error" || frame["type"] == "ack" {
            assert_eq!(frame["payload"]["code"], "unavailable", "{frame}");
            answered.push(stalled.elapsed());
        }
    }
    redis.signal("CONT");
    let quick = answered
        .iter()
        .filter(|t| **t < Duration::from_secs(1))
        .count();
    let last = answered.iter().max().copied().unwrap_or_default();
    eprintln!("{OPS} ops during a stall: {quick} refused within 1 s, the last after {last:?}");
    assert!(
        quick >= OPS - 64 - 1,
        "the session's queue is bounded: {quick} quick"
    );
    assert!(
        last < Duration::from_secs(6),
        "refused at once once the stall is known: {last:?}"
    );

    app.wait_ready().await;
    let after = writer
        .request(
            "value.set",
            json!({"itemId":"i","columnId":"c","value":"after"}),
            "after",
        )
        .await;
    assert_eq!(after["type"], "ack", "{after}");
    // At most the one batch in flight when Redis stalled (the first operation, sent alone
    // while nothing else waited) was applied later.
    let seq = after["payload"]["seq"].as_u64().expect("seq");
    assert!(
        seq <= 3,
        "ops refused during the stall were applied anyway: seq {seq}"
    );
}

#[actix_web::test]
async fn a_kick_while_redis_is_down_still_closes_local_sessions_and_answers_503() {
    let (redis, nodes) = cluster(1, &[]);
    ready(&nodes).await;
    let app = nodes[0].app();
    let (mut victim, _) = app.join("b", "victim").await;
    let (mut bystander, _) = app.join("b", "bystander").await;
    redis.stop();
    app.wait_readyz(503).await;

    let (status, body) = app
        .post(
            "/api/boards/b/kick",
            Some(&server_token()),
            &json!({"userId":"victim"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (503, json!("unavailable"))
    );
    assert_eq!(
        victim.expect_close().await,
        4003,
        "kicked here all the same"
    );

    let (status, _) = app
        .post(
            "/api/boards/b/events",
            Some(&server_token()),
            &json!({"type":"note.flash","payload":{},"ephemeral":true}),
        )
        .await;
    assert_eq!(status, 503, "the other instances could not be told");
    assert_eq!(bystander.next_of("note.flash").await["type"], "note.flash");
    let (status, _) = app
        .post(
            "/api/users/bystander/events",
            Some(&server_token()),
            &json!({"type":"note.sent","payload":{}}),
        )
        .await;
    assert_eq!(status, 503);
    assert_eq!(bystander.next_of("note.sent").await["type"], "note.sent");
}

/// Sends a `value.set` under `id` again and again while it is answered `unavailable`.
async fn until_acked(
    client: &mut TestClient,
    op: serde_json::Value,
    id: &str,
) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = client.request("value.set", op.clone(), id).await;
        if answer["type"] == "ack" {
            return answer;
        }
        assert_eq!(answer["payload"]["code"], "unavailable", "{answer}");
        assert!(Instant::now() < deadline, "never acked");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[actix_web::test]
async fn an_operation_answered_unavailable_and_retried_elsewhere_applies_once() {
    let (redis, nodes) = cluster(2, &[]);
    ready(&nodes).await;
    let (a, b) = (nodes[0].app(), nodes[1].app());
    let (mut watcher, _) = a.join("b", "watcher").await;
    let (mut on_a, _) = a.join("b", "writer").await;
    on_a.request("item.created", json!({"item":{"id":"i"}}), "c")
        .await;
    assert_eq!(watcher.next_sequenced().await["seq"], 1);

    // Redis takes no writes for 3 s: the operation times out, but Redis runs it afterwards.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(3000)
        .arg("WRITE")
        .query(&mut redis.connection())
        .expect("CLIENT PAUSE");
    let op = json!({"itemId":"i","columnId":"c","value":"once"});
    let first = on_a.request("value.set", op.clone(), "v1").await;
    assert_eq!(first["payload"]["code"], "unavailable", "{first}");
    // The client retries with the same id, as the contract tells it to, here from its tab on
    // the other instance, whose request reaches Redis while the first is still waiting there.
    let (mut on_b, _) = b.join("b", "writer").await;
    let ack = until_acked(&mut on_b, op, "v1").await;
    assert_eq!(ack["payload"]["seq"], 2, "the first answer: {ack}");
    // Applied once: the next operation is seq 3, and the watcher saw seq 2 once.
    let next = until_acked(
        &mut on_b,
        json!({"itemId":"i","columnId":"c","value":"next"}),
        "v2",
    )
    .await;
    assert_eq!(next["payload"]["seq"], 3, "{next}");
    let seen = watcher.next_sequenced().await;
    assert_eq!(
        (seen["seq"].clone(), seen["payload"]["value"].clone()),
        (json!(2), json!("once"))
    );
    assert_eq!(watcher.next_sequenced().await["seq"], 3);
}

#[actix_web::test]
async fn a_starting_instance_does_not_take_its_first_lease_for_a_lost_one() {
    let (redis, nodes) = cluster(1, &[]);
    ready(&nodes).await;
    let app = nodes[0].app();
    let (mut bob, _) = app.join("b", "bob").await;
    let (mut ann, _) = app.join("b", "ann").await;
    assert_eq!(
        bob.next_of("presence.join").await["payload"]["userId"],
        "ann"
    );
    // Two renewals of the lease after its first.
    let id = nodes[0].id().await;
    let mut conn = redis.connection();
    let expiry = |conn: &mut redis::Connection| -> Option<u64> {
        redis::cmd("ZSCORE")
            .arg("bc:instances")
            .arg(&id)
            .query(conn)
            .expect("ZSCORE")
    };
    let mut seen = vec![];
    let deadline = Instant::now() + WAIT;
    while seen.len() < 3 {
        let now = expiry(&mut conn);
        if now.is_some() && seen.last() != Some(&now) {
            seen.push(now);
        }
        assert!(Instant::now() < deadline, "the lease was renewed {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Before, the first renewal always found no lease and, the instance being ready by then,
    // re-registered every room's sessions: needless work at every start, and a purge of the
    // instance's sessions running beside the first joins.
    let log = nodes[0].log();
    assert!(!log.contains("lease was missing"), "{log}");
    ann.request("item.created", json!({"item":{"id":"i"}}), "1")
        .await;
    loop {
        let frame = bob.next_frame().await;
        assert_ne!(frame["type"], "presence.leave", "{frame}");
        if frame["type"] == "item.created" {
            break;
        }
    }
}

#[actix_web::test]
async fn a_redis_that_lost_its_data_makes_clients_resync_instead_of_diverging() {
    let (redis, nodes) = cluster(1, &[]);
    ready(&nodes).await;
    let app = nodes[0].app();
    let (mut writer, _) = app.join("b", "writer").await;
    let (mut watcher, first) = app.join("b", "watcher").await;
    let old_epoch = first["payload"]["epoch"].clone();
    assert_eq!(old_epoch.as_str().map(str::len), Some(16), "{first}");
    for n in 1..=3 {
        writer
            .request(
                "item.created",
                json!({"item":{"id":format!("i{n}")}}),
                &n.to_string(),
            )
            .await;
    }
    for seq in 1..=3u64 {
        assert_eq!(watcher.next_sequenced().await["seq"], seq);
    }

    // Redis loses everything (a restart without persistence, a failover to an empty replica).
    let _: () = redis::cmd("FLUSHALL")
        .query(&mut redis.connection())
        .expect("FLUSHALL");
    let fresh = until_created(&app, "after").await;
    assert_eq!(fresh, json!({"seq":1}), "seq started again");

    // The room sees the new epoch: its sessions are told to reconnect...
    assert_eq!(watcher.expect_close().await, 1012);
    assert_eq!(writer.expect_close().await, 1012);
    // ...and its resume from seq 3 of the old epoch gets the board as it now is.
    let url = format!(
        "{}&last_seq=3&epoch={}",
        app.ws_url("b", &token("watcher")),
        old_epoch.as_str().expect("epoch")
    );
    let mut back = TestClient::connect(&url).await;
    let snapshot = back.next_frame().await;
    assert_eq!(snapshot["type"], "board.snapshot", "{snapshot}");
    assert_eq!(snapshot["payload"]["resync"], true);
    assert_eq!(snapshot["payload"]["seq"], 1);
    assert_eq!(
        snapshot["payload"]["items"],
        json!([{"id":"after","version":1}])
    );
    assert_ne!(snapshot["payload"]["epoch"], old_epoch);
    // A resume from seq 1 of the old epoch is no replay of the new seq 1.
    let url = format!(
        "{}&last_seq=1&epoch={}",
        app.ws_url("b", &token("late")),
        old_epoch.as_str().expect("epoch")
    );
    let mut late = TestClient::connect(&url).await;
    assert_eq!(late.next_frame().await["payload"]["resync"], true);
}

/// Creates item `id` on board `b` through the API, again while the answer is 503.
async fn until_created(app: &TestApp, id: &str) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = app
            .post(
                "/api/boards/b/events",
                Some(&server_token()),
                &json!({"type":"item.created","payload":{"item":{"id":id}}}),
            )
            .await;
        if status == 202 {
            return body;
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < deadline, "never accepted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[actix_web::test]
async fn an_instance_warns_when_redis_does_not_persist_and_a_restart_then_resyncs_clients() {
    let redis = RedisServer::start_forgetful();
    let instance = Instance::start(&[("REDIS_URL", &redis.url())]);
    let app = instance.app();
    app.wait_ready().await;
    let line = instance.logged("appendonly no").await;
    assert!(line.contains("WARN"), "{line}");

    let (mut ann, first) = app.join("b", "ann").await;
    let epoch = first["payload"]["epoch"].clone();
    ann.request("item.created", json!({"item":{"id":"i"}}), "1")
        .await;
    // Redis restarts with nothing; ann reconnects resuming from seq 1 of the lost epoch.
    ann.leave().await;
    redis.stop();
    redis.restart();
    app.wait_ready().await;
    let url = format!(
        "{}&last_seq=1&epoch={}",
        app.ws_url("b", &token("ann")),
        epoch.as_str().expect("epoch")
    );
    let mut back = TestClient::connect(&url).await;
    let snapshot = back.next_frame().await;
    assert_eq!(snapshot["type"], "board.snapshot", "{snapshot}");
    assert_eq!(snapshot["payload"]["resync"], true);
    assert_eq!(snapshot["payload"]["items"], json!([]));
}

/// The Lua scripts spell the JSON of the events they publish by hand: each must decode into
/// the Rust event it stands for, or Redis mode would drop it (the decoder logs and moves on).
#[actix_web::test]
async fn every_event_the_scripts_publish_decodes_into_a_board_event() {
    use boardcast::event::BoardEvent;
    let app = spawn_app_in(Mode::Redis).await;
    let redis = app.redis.clone().expect("a redis");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let mut listener = redis.connection();
    let subscribed = std::sync::Arc::new(std::sync::Barrier::new(2));
    let ready = std::sync::Arc::clone(&subscribed);
    std::thread::spawn(move || {
        let mut pubsub = listener.as_pubsub();
        pubsub.psubscribe("bc:*:ch").expect("PSUBSCRIBE");
        pubsub
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        ready.wait();
        loop {
            match pubsub.get_message() {
                Ok(msg) => {
                    let payload: String = msg.get_payload().expect("a text payload");
                    if tx.send(payload).is_err() {
                        return;
                    }
                }
                Err(e) if e.is_timeout() => {}
                Err(_) => return,
            }
        }
    });
    subscribed.wait();

    let (mut ann, _) = app.join("lua", "ann").await;
    let (mut bob, _) = app.join("lua", "bob").await;
    ann.next_of("presence.join").await;
    bob.send(json!({"type":"presence.update","payload":{"status":"idle"}}))
        .await;
    ann.next_of("presence.update").await;
    let created = ann
        .request(
            "item.created",
            json!({"item":{"id":"i","title":"ü \"quoted\""}}),
            "c",
        )
        .await;
    assert_eq!(created["type"], "ack", "{created}");
    let set = ann
        .request(
            "value.set",
            json!({"itemId":"i","columnId":"c","value":[1.5,null,{"k":"v"}]}),
            "v",
        )
        .await;
    assert_eq!(set["type"], "ack", "{set}");
    bob.leave().await;
    ann.next_of("presence.leave").await;

    // What the scripts published (origin "-") by kind; everything must decode.
    let mut kinds = std::collections::BTreeSet::new();
    let deadline = Instant::now() + WAIT;
    while kinds.len() < 4 && Instant::now() < deadline {
        let Ok(message) = rx.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        let (origin, events) = message.split_once('\n').expect("origin, then the events");
        for body in events.split('\n') {
            let event: BoardEvent = serde_json::from_str(body)
                .unwrap_or_else(|e| panic!("{e}: the published {body} is not a BoardEvent"));
            if origin == "-" {
                kinds.insert(match event {
                    BoardEvent::Joined { .. } => "Joined",
                    BoardEvent::Left { .. } => "Left",
                    BoardEvent::StatusChanged { .. } => "StatusChanged",
                    BoardEvent::Durable { .. } => "Durable",
                    _ => "other",
                });
            }
        }
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["Durable", "Joined", "Left", "StatusChanged"]
    );
}

/// The broker's queue of Redis messages is bounded: a flood past `REDIS_PUSH_BACKLOG` is
/// dropped, not held, and once the instance caught up its rooms resync, so a durable event whose
/// message was dropped still reaches the sessions, from the log.
#[actix_web::test]
async fn a_flood_of_redis_messages_past_the_backlog_is_dropped_and_rooms_resync() {
    let (redis, nodes) = cluster(2, &[("REDIS_PUSH_BACKLOG", "5")]);
    ready(&nodes).await;
    let (a, b) = (nodes[0].app(), nodes[1].app());
    let (mut ann, _) = a.join("b", "ann").await;
    let (mut bob, _) = b.join("b", "bob").await;
    ann.next_of("presence.join").await;
    // 2,000 cursor messages in one pipeline: they reach instance a in a few reads, far faster
    // than its broker takes them.
    let cursor = r#"-
{"Cursor":{"user_id":"ghost","position":{"x":1,"y":1},"origin":1}}"#;
    let mut flood = redis::pipe();
    for _ in 0..2000 {
        flood
            .cmd("PUBLISH")
            .arg("bc:{b|default}:ch")
            .arg(cursor)
            .ignore();
    }
    // ...and bob's durable event right behind them, whose message a drops too.
    let mut conn = redis.connection();
    flood.query::<()>(&mut conn).expect("PUBLISH");
    let created = bob
        .request("item.created", json!({"item":{"id":"behind"}}), "c")
        .await;
    assert_eq!(created["type"], "ack", "{created}");
    let line = nodes[0]
        .logged("redis messages past REDIS_PUSH_BACKLOG")
        .await;
    assert!(line.contains("every room resyncs"), "{line}");
    // The event reaches ann, dropped or not, and the instance works on.
    assert_eq!(
        ann.next_of("item.created").await["payload"]["item"]["id"],
        "behind"
    );
    let again = bob
        .request("item.created", json!({"item":{"id":"after"}}), "d")
        .await;
    assert_eq!(again["type"], "ack", "{again}");
    assert_eq!(
        ann.next_of("item.created").await["payload"]["item"]["id"],
        "after"
    );
}

// Ephemeral events leave for Redis in batches, a board's events in one message: ten users
// moving at once on one instance reach a watcher on the other with each user's moves in order
// and the last move of each delivered.
on_one_redis_and_a_cluster! {
    async fn batched_ephemeral_events_keep_each_users_order_across_instances(redis) {
    let (_redis, nodes) = redis.start(2, &[]);
    ready(&nodes).await;
    let (a, b) = (nodes[0].app(), nodes[1].app());
    let (mut watcher, _) = b.join("batch", "watcher").await;
    let mut movers = vec![];
    for n in 0..10 {
        let user = format!("m{n}");
        let (mover, _) = a.join("batch", &user).await;
        assert_eq!(
            watcher.next_of("presence.join").await["payload"]["userId"],
            user
        );
        movers.push(mover);
    }
    const MOVES: u64 = 30;
    for x in 1..=MOVES {
        for mover in &mut movers {
            mover
                .send_type("cursor.move", json!({"position":{"x":x,"y":0}}))
                .await;
        }
    }
    let mut last = std::collections::HashMap::new();
    while last.len() < 10 || last.values().any(|x| *x < MOVES) {
        let frame = watcher.next_of("cursor.move").await;
        let user = frame["payload"]["userId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let x = frame["payload"]["position"]["x"].as_u64().expect("x");
        let before = last.insert(user.clone(), x).unwrap_or(0);
        assert!(x > before, "{user}: {x} after {before}");
    }
    }
}

/// Ephemeral events waiting for Redis are bounded by `REDIS_PUBLISH_BACKLOG`: with Redis
/// stopped (SIGSTOP), what is past the bound is dropped and counted, and once Redis goes on
/// (SIGCONT) cursor moves cross instances again.
#[actix_web::test]
async fn ephemeral_events_waiting_for_a_stopped_redis_are_bounded() {
    let (redis, nodes) = cluster(2, &[("REDIS_PUBLISH_BACKLOG", "5")]);
    ready(&nodes).await;
    let (a, b) = (nodes[0].app(), nodes[1].app());
    let (mut watcher, _) = b.join("stall", "watcher").await;
    let (mut ann, _) = a.join("stall", "ann").await;
    watcher.next_of("presence.join").await;
    let dropped = || metric(&a, "boardcast_publish_dropped_total");
    assert_eq!(dropped().await, 0);
    redis.signal("STOP");
    // Moves a throttle interval apart, so each is published: more than the bound waits.
    let deadline = Instant::now() + WAIT;
    let mut x = 0;
    while dropped().await == 0 {
        assert!(Instant::now() < deadline, "nothing dropped after {x} moves");
        x += 1;
        ann.send_type("cursor.move", json!({"position":{"x":x,"y":0}}))
            .await;
        actix_web::rt::time::sleep(Duration::from_millis(60)).await;
    }
    redis.signal("CONT");
    let deadline = Instant::now() + WAIT;
    'crossed: loop {
        assert!(Instant::now() < deadline, "no move crossed after SIGCONT");
        ann.send_type("cursor.move", json!({"position":{"x":100000,"y":0}}))
            .await;
        while let Ok(frame) =
            tokio::time::timeout(Duration::from_millis(300), watcher.next_frame()).await
        {
            if frame["type"] == "cursor.move" && frame["payload"]["position"]["x"] == 100000 {
                break 'crossed;
            }
        }
    }
}

on_one_redis_and_a_cluster! {
    async fn the_workspace_spans_instances_and_a_killed_instance_goes_offline(redis) {
    let (_redis, mut nodes) = redis.start(2, &[]);
    ready(&nodes).await;
    let (a, b) = (nodes[0].app(), nodes[1].app());
    let mut watcher = a
        .connect(&format!("{}&workspace=1", a.ws_url("x", &token("watcher"))))
        .await;
    assert_eq!(watcher.next_frame().await["type"], "board.snapshot");
    assert_eq!(watcher.next_frame().await["type"], "workspace.snapshot");
    let online = |frame: Value| {
        assert_eq!(frame["type"], "workspace.online", "{frame}");
        frame["payload"]["userId"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let (_ann_on_b, _) = b.join("y", "ann").await;
    assert_eq!(online(watcher.next_frame().await), "ann");
    // ann's second session, on the other instance and board: no transition; bob's is next.
    let (_ann_on_a, _) = a.join("z", "ann").await;
    let (_bob, _) = b.join("y", "bob").await;
    assert_eq!(online(watcher.next_frame().await), "bob");
    let (mut cid, _) = b.join("w", "cid").await;
    assert_eq!(online(watcher.next_frame().await), "cid");

    // An event posted to one instance reaches the tenant's sessions on the other.
    let event = json!({"type":"release.shipped","payload":{"version":"3"}});
    let (status, _) = a.post("/api/events", Some(&server_token()), &event).await;
    assert_eq!(status, 202);
    assert_eq!(cid.next_frame().await, event);
    assert_eq!(watcher.next_frame().await, event);
    let (status, body) = a.get("/api/presence", Some(&server_token())).await;
    assert_eq!(status, 200);
    let boards: Vec<(String, Value)> = body["users"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|u| {
            (
                u["userId"].as_str().unwrap_or_default().into(),
                u["boards"].clone(),
            )
        })
        .collect();
    assert_eq!(
        boards,
        [
            ("watcher".into(), json!(["x"])),
            ("ann".into(), json!(["y", "z"])),
            ("bob".into(), json!(["y"])),
            ("cid".into(), json!(["w"])),
        ]
    );

    // The instance holding bob's and cid's only sessions dies: both go offline, ann stays.
    nodes[1].signal("KILL");
    nodes[1].wait_exit().await;
    let mut gone = vec![];
    for _ in 0..2 {
        let frame = watcher.next_frame().await;
        assert_eq!(frame["type"], "workspace.offline", "{frame}");
        gone.push(
            frame["payload"]["userId"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    gone.sort();
    assert_eq!(gone, ["bob", "cid"]);
    let (_, body) = a.get("/api/presence", Some(&server_token())).await;
    assert_eq!(body["users"][1]["userId"], "ann");
    assert_eq!(body["users"][1]["boards"], json!(["z"]));
    }
}

on_one_redis_and_a_cluster! {
    async fn webhooks_go_out_once_from_one_instance_and_go_on_when_it_is_killed(redis) {
    let receiver = Receiver::start().await;
    let url = receiver.url();
    let env = [
        ("WEBHOOK_URL", url.as_str()),
        ("WEBHOOK_SECRET", WEBHOOK_SECRET),
    ];
    let (running, mut nodes) = redis.start(2, &env);
    ready(&nodes).await;
    let (a, b) = (nodes[0].app(), nodes[1].app());
    async fn post(app: &TestApp, board: String, n: usize) {
        let (status, body) = app
            .post(
                &format!("/api/boards/{board}/events"),
                Some(&server_token()),
                &json!({"type":"order.placed","payload":{"n": n}}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }
    // Both instances deliver; each event goes out exactly once.
    for n in 0..60 {
        let app = if n % 2 == 0 { &a } else { &b };
        post(app, format!("b{}", n % 6), n).await;
    }
    let seqs_of = |events: &[Value], board: &str| -> Vec<u64> {
        events
            .iter()
            .filter(|e| e["board"] == board)
            .filter_map(|e| e["seq"].as_u64())
            .collect()
    };
    let events = receiver
        .until(WAIT, |e| {
            (0..6).all(|b| seqs_of(e, &format!("b{b}")).len() >= 10)
        })
        .await;
    for board in 0..6 {
        assert_eq!(
            seqs_of(&events, &format!("b{board}")),
            (1..=10).collect::<Vec<u64>>(),
            "board b{board}: once each, in order"
        );
    }

    // A slow receiver, so that requests are in flight, and the instance delivering killed
    // in the middle of a request.
    receiver.slow(Duration::from_millis(300));
    for n in 0..20 {
        let app = if n % 2 == 0 { &a } else { &b };
        post(app, "k".into(), n).await;
    }
    let deadline = Instant::now() + WAIT;
    let holder = loop {
        if let Some(holder) = running.get("bc:{k|default}:wh:lease") {
            break holder;
        }
        assert!(
            Instant::now() < deadline,
            "no delivery of board k under way"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let mut victim = None;
    for (i, node) in nodes.iter().enumerate() {
        if node.logged("redis reached").await.contains(&holder) {
            victim = Some(i);
        }
    }
    let victim = victim.expect("the lease holder is one of the instances");
    nodes[victim].signal("KILL");
    nodes[victim].wait_exit().await;
    let survivor = nodes[1 - victim].app();
    for n in 20..40 {
        post(&survivor, "k".into(), n).await;
    }
    let events = receiver
        .until(Duration::from_secs(40), |e| seqs_of(e, "k").contains(&40))
        .await;
    let delivered = seqs_of(&events, "k");
    // At least once: every event; in order: each first delivery after the one before it.
    let mut first_seen = vec![];
    for seq in &delivered {
        if !first_seen.contains(seq) {
            first_seen.push(*seq);
        }
    }
    assert_eq!(first_seen, (1..=40).collect::<Vec<u64>>(), "{delivered:?}");
    // Repeats only of what was in flight when the instance died: one request at most.
    assert!(delivered.len() - 40 <= 100, "{delivered:?}");
    }
}

on_one_redis_and_a_cluster! {
    async fn a_paused_instance_s_users_go_offline_and_come_back_online_in_the_workspace(redis) {
    let (_redis, nodes) = redis.start(2, &[]);
    ready(&nodes).await;
    let (a, b) = (nodes[0].app(), nodes[1].app());
    let mut watcher = a
        .connect(&format!("{}&workspace=1", a.ws_url("w", &token("watcher"))))
        .await;
    assert_eq!(watcher.next_frame().await["type"], "board.snapshot");
    assert_eq!(watcher.next_frame().await["type"], "workspace.snapshot");
    let (_ann, _) = b.join("x", "ann").await;
    let next = |frame: Value| (frame["type"].clone(), frame["payload"]["userId"].clone());
    assert_eq!(
        next(watcher.next_frame().await),
        (json!("workspace.online"), json!("ann"))
    );

    // Paused past its lease, the instance is swept: ann goes offline. Resumed, it registers
    // its sessions again, in its workspace too: ann is back, on her board.
    nodes[1].signal("STOP");
    assert_eq!(
        next(watcher.next_frame().await),
        (json!("workspace.offline"), json!("ann"))
    );
    nodes[1].signal("CONT");
    assert_eq!(
        next(watcher.next_frame().await),
        (json!("workspace.online"), json!("ann"))
    );
    let (_, body) = a.get("/api/presence", Some(&server_token())).await;
    let ann = body["users"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|u| u["userId"] == "ann")
        .cloned();
    assert_eq!(
        ann.map(|u| u["boards"].clone()),
        Some(json!(["x"])),
        "{body}"
    );
    }
}

/// On a Redis Cluster each board's keys and sharded channel live on the master that owns the
/// board's slot, and boards spread over every master: boards chosen to cover all three keep
/// their events on their own master, heard through a sharded subscription there.
#[actix_web::test]
async fn boards_live_on_the_master_of_their_slot_and_spread_over_all_three() {
    let (running, nodes) = Shared::Cluster.start(2, &[]);
    let Running::Cluster(redis) = &running else {
        unreachable!("a cluster was asked for")
    };
    ready(&nodes).await;
    let masters = redis.masters();
    assert_eq!(masters.len(), 3, "three masters: {masters:?}");
    // Two boards per master, by the slot of their keys.
    let mut boards: Vec<(String, u16)> = Vec::new();
    for i in 0..200 {
        let board = format!("s{i}");
        let master = redis.master_of(&format!("bc:{{{board}|default}}:seq"));
        if boards.iter().filter(|(_, m)| *m == master).count() < 2 {
            boards.push((board, master));
        }
        if boards.len() == 6 {
            break;
        }
    }
    assert_eq!(boards.len(), 6, "two boards for each master");
    for (board, master) in &boards {
        let (mut watcher, _) = nodes[1].app().join(board, "watcher").await;
        let (mut writer, _) = nodes[0].app().join(board, "writer").await;
        watcher.next_of("presence.join").await;
        writer
            .request("item.created", json!({"item":{"id":"i"}}), "c")
            .await;
        let created = watcher.next_of("item.created").await;
        assert_eq!(created["seq"], 1, "{board}: {created}");
        let on_master = |args: &[&str]| redis.cli(*master, args).trim().to_string();
        let seq_key = format!("bc:{{{board}|default}}:seq");
        assert_eq!(
            on_master(&["GET", &seq_key]),
            "1",
            "{board} lives on {master}"
        );
        let channel = format!("bc:{{{board}|default}}:ch");
        let listeners = on_master(&["PUBSUB", "SHARDNUMSUB", &channel]);
        assert!(
            listeners.ends_with('2'),
            "both instances hear {channel} on {master}: {listeners:?}"
        );
    }
    let used: std::collections::HashSet<u16> = boards.iter().map(|(_, m)| *m).collect();
    assert_eq!(used.len(), 3, "the boards spread over every master");
}

/// An instance paused long enough to be swept, and back while the sweep is still under way,
/// registers its sessions again carrying the sweep's token: the sweep's purge of that board,
/// however late it comes, leaves it alone, ends the sweep and puts the board back in the
/// instance's record. Its user is present at the end, and stays so.
#[actix_web::test]
async fn an_instance_back_during_its_own_sweep_keeps_its_sessions() {
    let (redis, nodes) = cluster(2, &[]);
    ready(&nodes).await;
    let (mut watcher, _) = nodes[1].app().join("f", "watcher").await;
    let (_ann, _) = nodes[0].app().join("f", "ann").await;
    assert_eq!(
        watcher.next_of("presence.join").await["payload"]["userId"],
        "ann"
    );
    let id = nodes[0].id().await;
    let record = format!("bc:instance:{id}:boards");
    let swept = format!("bc:instance:{id}:swept");
    let mut conn = redis.connection();
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg(&record)
        .query(&mut conn)
        .expect("SMEMBERS");
    let board_f = members
        .iter()
        .find(|m| m.contains(r#""f""#))
        .expect("board f on record")
        .clone();
    // Boards of its past, enough to keep a sweep busy for seconds.
    for chunk in (0..200_000).collect::<Vec<_>>().chunks(10_000) {
        let mut sadd = redis::cmd("SADD");
        sadd.arg(&record);
        for n in chunk {
            sadd.arg(board_f.replace(r#""f""#, &format!(r#""past{n}""#)));
        }
        let _: () = sadd.query(&mut conn).expect("SADD");
    }

    nodes[0].signal("STOP");
    // The sweep begins once the lease ran out: then the instance comes back.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let flagged: bool = redis::cmd("EXISTS")
            .arg(&swept)
            .query(&mut conn)
            .expect("EXISTS");
        if flagged {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the paused instance was never swept"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nodes[0].signal("CONT");
    // The sweep meets board f again at a random point of the 200,000: allow it the time the
    // whole sweep may take on a busy machine.
    let came_back = format!("instance {id} came back while being swept");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !nodes[1].log().contains(&came_back) {
        assert!(
            Instant::now() < deadline,
            "the sweep never met the fence; its log:\n{}",
            nodes[1].log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let on_record: bool = redis::cmd("SISMEMBER")
        .arg(&record)
        .arg(&board_f)
        .query(&mut conn)
        .expect("SISMEMBER");
    assert!(on_record, "board f is back on the instance's record");
    // Whether board f was purged before the instance came back (ann left, then joined again)
    // or only reached after (left alone), ann is present now for anyone who looks.
    let (_late, snapshot) = nodes[1].app().join("f", "late").await;
    let users: Vec<&str> = snapshot["payload"]["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["userId"].as_str())
        .collect();
    assert!(users.contains(&"ann"), "ann is present: {users:?}");
}

/// A master SIGKILLed while its replica was behind (stopped while three events were acked):
/// the replica takes over; meanwhile the API answers a write 202 or 503, never anything else;
/// an operation retried with its key applies once; and the three events the new master never
/// got are noticed, so every client resyncs (its resume from the old epoch gets a snapshot)
/// instead of diverging. Cursor moves cross again on the board afterwards.
#[actix_web::test]
async fn a_master_killed_with_its_replica_behind_fails_over_and_clients_resync() {
    let (running, nodes) = Shared::Cluster.start(2, &[]);
    let Running::Cluster(mut redis) = running else {
        unreachable!("a cluster was asked for")
    };
    ready(&nodes).await;
    let master = redis.master_of("bc:{fo|default}:seq");
    let replica = redis.replica_of(master);
    let (mut watcher, first) = nodes[1].app().join("fo", "watcher").await;
    let (mut writer, _) = nodes[0].app().join("fo", "writer").await;
    watcher.next_of("presence.join").await;
    writer
        .request("item.created", json!({"item":{"id":"i"}}), "c")
        .await;
    assert_eq!(watcher.next_sequenced().await["seq"], 1);
    let old_epoch = first["payload"]["epoch"]
        .as_str()
        .expect("an epoch")
        .to_string();
    redis.wait_replicated(master);

    // The replica falls behind: stopped, its link cut (so that nothing more waits for it in
    // its socket), three events acked by the master alone.
    redis.signal(replica, "STOP");
    assert_eq!(
        redis
            .cli(master, &["CLIENT", "KILL", "TYPE", "replica"])
            .trim(),
        "1"
    );
    for n in 1..=3u64 {
        let op = json!({"itemId":"i","columnId":"c","value":n});
        let ack = writer.request("value.set", op, &format!("v{n}")).await;
        assert_eq!(ack["payload"]["seq"], n + 1, "{ack}");
    }
    for seq in 2..=4u64 {
        assert_eq!(watcher.next_sequenced().await["seq"], seq);
    }
    redis.kill(master);
    redis.signal(replica, "CONT");

    // Meanwhile, writes through the API are accepted or refused as unavailable, with a key
    // that makes their retries apply once.
    let api = nodes[0].app();
    let write = json!({"type":"item.created","payload":{"item":{"id":"during"}}});
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut refused = 0;
    let first_answer = loop {
        let (status, body) = api
            .post_with_key("/api/boards/fo/events", "during-1", &write)
            .await;
        if status == 202 {
            break body;
        }
        assert_eq!(status, 503, "{body}");
        refused += 1;
        assert!(
            Instant::now() < deadline,
            "never accepted after the failover"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    redis.wait_ok();
    assert_eq!(
        redis.master_of("bc:{fo|default}:seq"),
        replica,
        "the replica took over"
    );
    eprintln!("failover: {refused} writes refused before {first_answer}");
    // The same write again, with its key: the first answer, not a second item.
    let (status, again) = api
        .post_with_key("/api/boards/fo/events", "during-1", &write)
        .await;
    assert_eq!((status, &again), (202, &first_answer));

    // The clients that saw the lost events are told to reconnect...
    assert_eq!(watcher.expect_close().await, 1012);
    // ...and a resume from the old epoch's seq 4 gets the board as the new master has it.
    let url = format!(
        "{}&last_seq=4&epoch={old_epoch}",
        nodes[1].app().ws_url("fo", &token("watcher"))
    );
    let mut back = TestClient::connect(&url).await;
    let snapshot = back.next_frame().await;
    assert_eq!(snapshot["type"], "board.snapshot", "{snapshot}");
    assert_eq!(snapshot["payload"]["resync"], true, "{snapshot}");
    assert_ne!(snapshot["payload"]["epoch"], json!(old_epoch));
    let items: Vec<&str> = snapshot["payload"]["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert_eq!(items, ["during", "i"], "{snapshot}");
    assert_eq!(
        snapshot["payload"]["values"],
        json!([]),
        "the lost values are gone"
    );

    // The writer, closed with 1012 too, leaves; its leave may wait for the new master.
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = nodes[1]
            .app()
            .get("/api/boards/fo/presence", Some(&server_token()))
            .await;
        let users: Vec<&str> = body["users"]
            .as_array()
            .map(|users| users.iter().filter_map(|u| u["userId"].as_str()).collect())
            .unwrap_or_default();
        if status == 200 && !users.contains(&"writer") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the writer stays present: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Ephemeral events cross instances again on the board.
    let (mut bob, _) = nodes[1].app().join("fo", "bob").await;
    let (mut ann, _) = nodes[0].app().join("fo", "ann").await;
    bob.next_of("presence.join").await;
    ann.send_type("cursor.move", json!({"position":{"x":1,"y":2}}))
        .await;
    assert_eq!(bob.next_of("cursor.move").await["payload"]["userId"], "ann");
}

/// A room checks, when it catches up, that the store still holds the last event it delivered:
/// a log whose seq 3 is now another event (as after a failover to a replica that was behind,
/// followed by new writes) gives the board a new epoch, and the room's clients resync.
#[actix_web::test]
async fn a_delivered_seq_that_now_holds_another_event_makes_clients_resync() {
    let (redis, nodes) = cluster(1, &[]);
    ready(&nodes).await;
    let app = nodes[0].app();
    let (mut writer, _) = app.join("b", "writer").await;
    let (mut watcher, first) = app.join("b", "watcher").await;
    let old_epoch = first["payload"]["epoch"]
        .as_str()
        .expect("epoch")
        .to_string();
    for n in 1..=3 {
        let item = json!({"item":{"id":format!("i{n}")}});
        writer.request("item.created", item, &n.to_string()).await;
    }
    for seq in 1..=3u64 {
        assert_eq!(watcher.next_sequenced().await["seq"], seq);
    }
    // Seq 3 of the log becomes another event; the board's seq stays 3.
    let mut conn = redis.connection();
    let frame = r#"{"type":"item.created","payload":{"item":{"id":"other","version":1}},"seq":3}"#;
    let _: () = redis::pipe()
        .cmd("DEL")
        .arg("bc:{b|default}:log")
        .cmd("XADD")
        .arg("bc:{b|default}:log")
        .arg("3-1")
        .arg("f")
        .arg(frame)
        .arg("a")
        .arg("null")
        .query(&mut conn)
        .expect("the log rewritten");
    // Redis restarts: the room catches up, and finds its seq 3 is not the store's.
    redis.stop();
    redis.restart();
    assert_eq!(watcher.expect_close().await, 1012);
    let url = format!(
        "{}&last_seq=3&epoch={old_epoch}",
        app.ws_url("b", &token("watcher"))
    );
    let mut back = TestClient::connect(&url).await;
    let snapshot = back.next_frame().await;
    assert_eq!(snapshot["payload"]["resync"], true, "{snapshot}");
    assert_ne!(snapshot["payload"]["epoch"], json!(old_epoch));
}

/// A board's slot moved to another master (`redis-cli --cluster reshard`) while a writer keeps
/// writing to it: every operation is acked once (a retry of one answered `unavailable` gets
/// the first answer), a watcher on the other instance sees every seq once and in order, and
/// the board's events are heard from its new master afterwards.
#[actix_web::test]
async fn a_board_s_slot_moved_mid_run_loses_and_duplicates_nothing() {
    // The writer sends its operations one after the other, faster than the default rate.
    let (running, nodes) =
        Shared::Cluster.start(2, &[("RATE_LIMIT", "10000"), ("RATE_BURST", "10000")]);
    let Running::Cluster(redis) = running else {
        unreachable!("a cluster was asked for")
    };
    ready(&nodes).await;
    let masters = redis.masters();
    let (from, to) = (masters[0], masters[1]);
    // A board in the lowest slot of the first master: the one a reshard of one slot moves.
    let (_, ranges) = redis.master_slots(from);
    let lowest = ranges.iter().map(|(first, _)| *first).min().expect("slots");
    let board = (0..)
        .map(|n| format!("m{n}"))
        .find(|b| key_slot(&format!("{{{b}|default}}")) == lowest)
        .expect("a board in that slot");
    let seq_key = format!("bc:{{{board}|default}}:seq");
    assert_eq!(redis.master_of(&seq_key), from);

    let (mut watcher, _) = nodes[1].app().join(&board, "watcher").await;
    let (mut writer, _) = nodes[0].app().join(&board, "writer").await;
    watcher.next_of("presence.join").await;
    writer
        .request("item.created", json!({"item":{"id":"i"}}), "c")
        .await;
    // Operations go on until 30 after the move has finished.
    let mut reshard = None;
    let mut refused = 0;
    let mut moved_at = None;
    let mut n = 0u64;
    while moved_at.is_none_or(|at| n < at + 30) {
        n += 1;
        assert!(n < 100_000, "the reshard never finished");
        if n == 20 {
            let mut command = redis.reshard_command(from, to, 1);
            reshard = Some(std::thread::spawn(move || command.output()));
        }
        if moved_at.is_none() && reshard.as_ref().is_some_and(|r| r.is_finished()) {
            moved_at = Some(n);
        }
        let op = json!({"itemId":"i","columnId":"c","value":n});
        let id = format!("v{n}");
        let deadline = Instant::now() + WAIT;
        loop {
            let answer = writer.request("value.set", op.clone(), &id).await;
            if answer["type"] == "ack" {
                assert_eq!(answer["payload"]["seq"], n + 1, "applied once: {answer}");
                break;
            }
            if answer["payload"]["code"] != "unavailable" {
                // What the instance logged with it, to tell where the answer came from.
                let errors: Vec<String> = nodes[0]
                    .log()
                    .lines()
                    .filter(|l| l.contains("ERROR") || l.contains("WARN"))
                    .map(str::to_string)
                    .collect();
                panic!(
                    "{answer}; the writer's instance logged:\n{}",
                    errors.join("\n")
                );
            }
            refused += 1;
            assert!(Instant::now() < deadline, "never acked");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let output = reshard
        .expect("the reshard started")
        .join()
        .expect("the reshard thread")
        .expect("redis-cli runs");
    assert!(
        output.status.success(),
        "the reshard failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    eprintln!("{refused} operations answered unavailable during the move");
    eprintln!("the move finished at operation {moved_at:?} of {n}");
    for seq in 1..=n + 1 {
        assert_eq!(
            watcher.next_sequenced().await["seq"],
            seq,
            "every seq once, in order"
        );
    }
    assert_eq!(redis.master_of(&seq_key), to, "the slot moved");
    writer
        .send_type("cursor.move", json!({"position":{"x":3,"y":4}}))
        .await;
    assert_eq!(
        watcher.next_of("cursor.move").await["payload"]["userId"],
        "writer",
        "cursor moves cross over the new master"
    );
}
