//! A short, tiny-load run of every scenario against the real server (in process, port 0), so
//! the load generator cannot rot.

use boardcast::config::{Config, JwtKey};
use boardcast::startup::Application;
use boardcast_bench::client::Encoding;
use boardcast_bench::reconnect::{self, ReconnectOpts};
use boardcast_bench::scenarios::{
    self, ChurnOpts, CursorsOpts, DurableOpts, IdleOpts, Spread, Target,
};

const SECRET: &str = "bench-smoke-secret-0123456789";

async fn server() -> Target {
    let config = Config {
        bind: "127.0.0.1:0".parse().expect("address"),
        jwt: JwtKey::Secret(SECRET.as_bytes().to_vec()),
        rate_per_sec: 10_000.0,
        rate_burst: 10_000.0,
        workers: 1,
        data_dir: ":memory:".into(),
        ..Config::default()
    };
    let app = Application::build(config).await.expect("the server starts");
    let port = app.port();
    actix_web::rt::spawn(app.run());
    Target {
        label: "boardcast".into(),
        urls: vec![format!("ws://127.0.0.1:{port}")],
        secret: SECRET.into(),
        pids: vec![std::process::id().to_string()],
        prefix: "smoke".into(),
    }
}

/// The scenarios run on a runtime of their own, as in the `loadgen` binary, beside the server's.
fn on_own_runtime<T: Send + 'static>(
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    })
    .join()
    .expect("the scenario thread")
}

#[actix_web::test]
async fn cursors_are_all_delivered_without_echo_in_every_encoding() {
    let target = server().await;
    for (encoding, spread) in [
        (Encoding::Json, Spread::Board),
        (Encoding::MsgPack, Spread::Board),
        (Encoding::Mixed, Spread::Board),
        (Encoding::Json, Spread::Socket),
    ] {
        let opts = CursorsOpts {
            boards: 2,
            users: 3,
            hz: 10.0,
            seconds: 1.0,
            warmup: 0.3,
            encoding,
            spread,
        };
        let mut target = target.clone();
        target.prefix = format!("smoke-{}-{}", encoding.name(), spread.name());
        let r = actix_web::rt::task::spawn_blocking(move || {
            on_own_runtime(async move { scenarios::cursors(&target, &opts).await })
        })
        .await
        .expect("join")
        .expect("the scenario runs");
        assert!(r.expected > 0);
        assert_eq!(r.received, r.expected, "{r:?}");
        assert_eq!((r.echoes, r.errors), (0, 0));
        assert!(r.latency.count as u64 == r.received && r.latency.max > 0.0);
        assert_eq!((r.encoding, r.spread), (encoding.name(), spread.name()));
        assert!(r.bytes_per_delivery > 20.0, "{r:?}");
    }
}

#[actix_web::test]
async fn sizes_are_measured_both_ways() {
    let target = server().await;
    let r = actix_web::rt::task::spawn_blocking(move || {
        on_own_runtime(async move { scenarios::sizes(&target).await })
    })
    .await
    .expect("join")
    .expect("the scenario runs");
    assert_eq!(r.messages.len(), 2);
    for m in &r.messages {
        assert!(m.msgpack_sent < m.json_sent, "{m:?}");
        assert!(m.msgpack_received < m.json_received, "{m:?}");
    }
}

#[actix_web::test]
async fn durable_acks_are_counted_and_seq_has_no_gap() {
    let target = server().await;
    let opts = DurableOpts {
        boards: 2,
        writers: 2,
        depth: 2,
        seconds: 1.0,
    };
    let r = actix_web::rt::task::spawn_blocking(move || {
        on_own_runtime(async move { scenarios::durable(&target, &opts).await })
    })
    .await
    .expect("join")
    .expect("the scenario runs");
    assert!(r.acked > 10, "{r:?}");
    assert_eq!((r.seq_gaps, r.errors), (0, 0), "{r:?}");
}

#[actix_web::test]
async fn idle_connections_are_opened_and_measured() {
    let target = server().await;
    let opts = IdleOpts {
        connections: 50,
        boards: 5,
        seconds: 0.5,
    };
    let r = actix_web::rt::task::spawn_blocking(move || {
        on_own_runtime(async move { scenarios::idle(&target, &opts).await })
    })
    .await
    .expect("join")
    .expect("the scenario runs");
    assert_eq!(r.connections, 50);
    assert!(r.connect_per_s > 0.0 && r.rss_after_mib > 0.0);
}

#[actix_web::test]
async fn churn_joins_are_seen_by_observers() {
    let target = server().await;
    let opts = ChurnOpts {
        boards: 2,
        observers: 2,
        rate: 20.0,
        stay_ms: 100,
        seconds: 1.0,
    };
    let r = actix_web::rt::task::spawn_blocking(move || {
        on_own_runtime(async move { scenarios::churn(&target, &opts).await })
    })
    .await
    .expect("join")
    .expect("the scenario runs");
    assert!(r.sessions >= 10, "{r:?}");
    assert_eq!(r.failures, 0);
    // Every join is seen by both observers of its board.
    assert_eq!(r.join_seen.count as u64, r.sessions * 2, "{r:?}");
}

/// A `redis-server` of this test's own on a free port, stopped when dropped.
struct Redis(std::process::Child, u16);

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--dir"])
            .arg(std::env::temp_dir())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs (the test command installs it)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Redis(child, port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[actix_web::test]
async fn reconnecting_sessions_get_their_snapshots_and_the_right_presence() {
    let redis = Redis::start();
    let mut urls = vec![];
    for _ in 0..2 {
        let config = Config {
            bind: "127.0.0.1:0".parse().expect("address"),
            jwt: JwtKey::Secret(SECRET.as_bytes().to_vec()),
            redis_url: Some(format!("redis://127.0.0.1:{}/", redis.1)),
            workers: 1,
            ..Config::default()
        };
        let app = Application::build(config).await.expect("the server starts");
        urls.push(format!("ws://127.0.0.1:{}", app.port()));
        actix_web::rt::spawn(app.run());
    }
    // Both instances reach Redis before the run.
    actix_web::rt::time::sleep(std::time::Duration::from_millis(500)).await;
    let target = Target {
        label: "boardcast".into(),
        urls,
        secret: SECRET.into(),
        pids: vec![std::process::id().to_string()],
        prefix: "smoke".into(),
    };
    let opts = ReconnectOpts {
        boards: 3,
        per_board: 3,
        kill: None,
        seconds: 3.0,
    };
    let r = actix_web::rt::task::spawn_blocking(move || {
        on_own_runtime(async move { reconnect::reconnect(&target, &opts).await })
    })
    .await
    .expect("join")
    .expect("the scenario runs");
    assert_eq!((r.sessions, r.failures, r.wrong_boards), (9, 0, 0), "{r:?}");
    assert_eq!(r.snapshot.count, 9, "{r:?}");
    assert!(r.all_snapshots_ms > 0.0, "{r:?}");
}
