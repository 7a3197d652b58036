//! A short, tiny-load run of every scenario against the real server (in process, port 0), so
//! the load generator cannot rot.

use boardcast::config::{Config, JwtKey};
use boardcast::startup::Application;
use boardcast_bench::scenarios::{self, ChurnOpts, CursorsOpts, DurableOpts, IdleOpts, Target};

const SECRET: &str = "bench-smoke-secret-0123456789";

async fn server() -> Target {
    let config = Config {
        bind: "127.0.0.1:0".parse().expect("address"),
        jwt: JwtKey::Secret(SECRET.as_bytes().to_vec()),
        rate_per_sec: 10_000.0,
        rate_burst: 10_000.0,
        workers: 1,
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
async fn cursors_are_all_delivered_without_echo() {
    let target = server().await;
    let opts = CursorsOpts {
        boards: 2,
        users: 3,
        hz: 10.0,
        seconds: 1.0,
        warmup: 0.3,
    };
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
