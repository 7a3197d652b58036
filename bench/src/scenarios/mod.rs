//! The scenarios, one file each. Each connects its clients, measures over a fixed window, and
//! returns a report that prints as a human summary and as one JSON line. This file holds what
//! they share: the target, setting up connections, and CPU and memory around a window.

mod churn;
mod cursors;
mod durable;
mod idle;
mod sizes;

pub use churn::{churn, ChurnOpts, ChurnReport};
pub use cursors::{cursors, CursorsOpts, CursorsReport, Spread};
pub use durable::{durable, DurableOpts, DurableReport};
pub use idle::{idle, IdleOpts, IdleReport};
pub use sizes::{sizes, SizesReport};

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{connect, source_for, token, Encoding, Socket};
use crate::lean;
use crate::procfs::{cpu_seconds, rss_bytes};

/// Connections opened at once while setting up.
const CONNECT_CONCURRENCY: usize = 128;
/// Time after a window for deliveries still in flight.
const GRACE: Duration = Duration::from_millis(1500);

/// What every scenario needs.
#[derive(Clone, Debug)]
pub struct Target {
    /// A name for the report (`boardcast`, `relay`, `node`...).
    pub label: String,
    /// `ws://127.0.0.1:PORT` of each instance; clients are spread over them.
    pub urls: Vec<String>,
    /// The HS256 secret tokens are signed with.
    pub secret: String,
    /// Server process ids, for CPU and memory.
    pub pids: Vec<String>,
    /// Board names start with this, so runs do not share boards.
    pub prefix: String,
}

impl Target {
    fn url(&self, n: usize) -> &str {
        &self.urls[n % self.urls.len()]
    }

    fn cpu(&self) -> f64 {
        self.pids.iter().filter_map(|p| cpu_seconds(p)).sum()
    }

    fn rss(&self) -> u64 {
        self.pids.iter().filter_map(|p| rss_bytes(p)).sum()
    }

    pub(crate) async fn join(&self, n: usize, board: &str, user: &str) -> Result<Socket, String> {
        self.join_as(n, board, user, false).await
    }

    /// Joins as [`Target::join`] does, speaking MessagePack when `packed`.
    pub(crate) async fn join_as(
        &self,
        n: usize,
        board: &str,
        user: &str,
        packed: bool,
    ) -> Result<Socket, String> {
        let mut ws = connect(
            self.url(n),
            board,
            &token(&self.secret, user),
            source_for(n),
            packed,
        )
        .await?;
        // The first frame is the snapshot.
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(_) | Message::Binary(_)))) => Ok(ws),
            other => Err(format!("no snapshot: {other:?}")),
        }
    }
}

/// Opens `count` sessions, `make(n)` naming the board and user of the n-th.
pub(crate) async fn open_all(
    target: &Target,
    count: usize,
    make: impl Fn(usize) -> (String, String),
) -> Result<Vec<Socket>, String> {
    open_all_as(target, count, Encoding::Json, make).await
}

/// Opens sessions as [`open_all`] does, each in its share of `encoding`.
pub(crate) async fn open_all_as(
    target: &Target,
    count: usize,
    encoding: Encoding,
    make: impl Fn(usize) -> (String, String),
) -> Result<Vec<Socket>, String> {
    open_many(count, make, |n, board, user| {
        let target = target.clone();
        async move { target.join_as(n, &board, &user, encoding.packed(n)).await }
    })
    .await
}

/// Opens sessions as [`open_all_as`] does, as lean clients.
pub(crate) async fn open_all_lean(
    target: &Target,
    count: usize,
    encoding: Encoding,
    make: impl Fn(usize) -> (String, String),
) -> Result<Vec<(lean::Reader, lean::Writer)>, String> {
    open_many(count, make, |n, board, user| {
        let (url, token) = (target.url(n).to_string(), token(&target.secret, &user));
        async move { lean::open(&url, &board, &token, source_for(n), encoding.packed(n)).await }
    })
    .await
}

/// Opens `count` connections at most [`CONNECT_CONCURRENCY`] at a time, `make(n)` naming the
/// board and user of the n-th and `open` connecting it.
async fn open_many<T, F>(
    count: usize,
    make: impl Fn(usize) -> (String, String),
    open: impl Fn(usize, String, String) -> F,
) -> Result<Vec<T>, String>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, String>> + Send + 'static,
{
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut tasks = Vec::with_capacity(count);
    for n in 0..count {
        let (board, user) = make(n);
        let connecting = open(n, board, user);
        let gate = Arc::clone(&gate);
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.map_err(|e| e.to_string())?;
            connecting.await
        }));
    }
    let mut sockets = Vec::with_capacity(count);
    for task in tasks {
        sockets.push(task.await.map_err(|e| e.to_string())??);
    }
    Ok(sockets)
}

/// CPU and memory around a measurement window.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Usage {
    /// Server CPU seconds during the window (all instances).
    pub server_cpu_s: f64,
    /// Server resident memory at the end (all instances), MiB.
    pub server_rss_mib: f64,
    /// The load generator's own CPU seconds during the window.
    pub loadgen_cpu_s: f64,
}

struct Meter {
    server: f64,
    own: f64,
}

impl Meter {
    fn start(target: &Target) -> Meter {
        Meter {
            server: target.cpu(),
            own: cpu_seconds("self").unwrap_or(0.0),
        }
    }

    fn stop(self, target: &Target) -> Usage {
        Usage {
            server_cpu_s: target.cpu() - self.server,
            server_rss_mib: target.rss() as f64 / 1_048_576.0,
            loadgen_cpu_s: cpu_seconds("self").unwrap_or(0.0) - self.own,
        }
    }
}

// ----- cursors -----
