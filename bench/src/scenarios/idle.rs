//! `idle`: many connections doing nothing, for memory per connection and connect rate.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;

use super::*;

/// `idle`: many connections doing nothing.
#[derive(Clone, Debug)]
pub struct IdleOpts {
    /// Connections.
    pub connections: usize,
    /// Boards they spread over.
    pub boards: usize,
    /// Seconds to hold them.
    pub seconds: f64,
}

/// What `idle` measured.
#[derive(Clone, Debug, Serialize)]
pub struct IdleReport {
    /// Always `idle`.
    pub scenario: &'static str,
    /// Which server.
    pub target: String,
    /// Connections held.
    pub connections: usize,
    /// Boards.
    pub boards: usize,
    /// Connections opened per second (snapshot received).
    pub connect_per_s: f64,
    /// Server memory before, MiB.
    pub rss_before_mib: f64,
    /// Server memory with every connection open, MiB.
    pub rss_after_mib: f64,
    /// (after − before) / connections.
    pub bytes_per_connection: f64,
}

/// Runs `idle`.
pub async fn idle(target: &Target, opts: &IdleOpts) -> Result<IdleReport, String> {
    let before = target.rss();
    let started = Instant::now();
    let prefix = target.prefix.clone();
    let boards = opts.boards.max(1);
    let sockets = open_all(target, opts.connections, |n| {
        (format!("{prefix}-i{}", n % boards), format!("i{n}"))
    })
    .await?;
    let connect_secs = started.elapsed().as_secs_f64();
    let end = Instant::now() + Duration::from_secs_f64(opts.seconds);
    let open = Arc::new(AtomicUsize::new(0));
    let mut tasks = vec![];
    for mut ws in sockets {
        let open = Arc::clone(&open);
        open.fetch_add(1, Ordering::Relaxed);
        // Each connection keeps reading (answering pings, taking presence) until the end.
        tasks.push(tokio::spawn(async move {
            let deadline = tokio::time::Instant::from_std(end);
            while let Ok(Some(Ok(_))) = tokio::time::timeout_at(deadline, ws.next()).await {}
            let _ = ws.close(None).await;
        }));
    }
    // Let the presence announcements of the last arrivals settle before reading memory.
    tokio::time::sleep(Duration::from_secs_f64(opts.seconds.min(3.0))).await;
    let after = target.rss();
    for task in tasks {
        let _ = task.await;
    }
    Ok(IdleReport {
        scenario: "idle",
        target: target.label.clone(),
        connections: opts.connections,
        boards,
        connect_per_s: opts.connections as f64 / connect_secs.max(1e-9),
        rss_before_mib: before as f64 / 1_048_576.0,
        rss_after_mib: after as f64 / 1_048_576.0,
        bytes_per_connection: after.saturating_sub(before) as f64 / opts.connections.max(1) as f64,
    })
}

// ----- churn -----
