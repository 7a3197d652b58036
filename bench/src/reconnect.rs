//! `reconnect`: the users of a dead instance all come back at once, to another instance.
//!
//! Sessions on the first instance (`--url` A), an observer per board on the second (B). The
//! first instance is killed (`--kill PID`, SIGKILL) or, without a pid, its sessions just drop;
//! then every session reconnects to B at once. Measured: how long until every session has its
//! snapshot, and until every observer's view of its board's presence is right (every user
//! present) and stays so until the end of the window, which covers the sweep of the dead
//! instance.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{connect, source_for, token, Socket};
use crate::scenarios::{open_all, Target};
use crate::stats::{Latencies, Summary};

/// Sessions reconnecting at the same moment, at most.
const RECONNECT_CONCURRENCY: usize = 512;

/// Options of `reconnect`.
#[derive(Clone, Debug)]
pub struct ReconnectOpts {
    /// Boards.
    pub boards: usize,
    /// Sessions per board (one user each).
    pub per_board: usize,
    /// The process of the first instance, killed with SIGKILL; `None` drops its sessions.
    pub kill: Option<u32>,
    /// Seconds after the kill during which observers watch (long enough for the sweep).
    pub seconds: f64,
}

/// What `reconnect` measured.
#[derive(Clone, Debug, Serialize)]
pub struct ReconnectReport {
    /// Always `reconnect`.
    pub scenario: &'static str,
    /// Which server.
    pub target: String,
    /// Sessions that reconnected.
    pub sessions: usize,
    /// Boards.
    pub boards: usize,
    /// Whether the first instance was killed (or its sessions dropped).
    pub killed: bool,
    /// From the kill until the last session had its snapshot, ms.
    pub all_snapshots_ms: f64,
    /// Per session, from the kill to its snapshot.
    pub snapshot: Summary,
    /// From the kill until the last observer's view became right for good, ms.
    pub presence_right_ms: f64,
    /// Boards whose observer did not see every user present at the end.
    pub wrong_boards: usize,
    /// Sessions that could not reconnect.
    pub failures: usize,
}

/// Connects to `url` and returns the socket with its first frame, parsed.
async fn join_reading(
    url: &str,
    n: usize,
    board: &str,
    user: &str,
    secret: &str,
) -> Result<(Socket, Value), String> {
    let mut ws = connect(url, board, &token(secret, user), source_for(n), false).await?;
    match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => {
            let first: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            Ok((ws, first))
        }
        other => Err(format!("no snapshot: {other:?}")),
    }
}

/// Watches one board's presence until `until`; returns when the view last became right (after
/// `start`), and whether it is right at the end.
async fn observe(
    mut ws: Socket,
    mut present: HashSet<String>,
    expected: HashSet<String>,
    start: Instant,
    until: Instant,
) -> (Duration, bool) {
    let mut right_since = Duration::ZERO;
    let deadline = tokio::time::Instant::from_std(until);
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, ws.next()).await {
        let Message::Text(text) = msg else { continue };
        let Ok(frame) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let user = frame["payload"]["userId"].as_str().unwrap_or_default();
        let was_right = present == expected;
        match frame["type"].as_str() {
            Some("presence.join") => {
                present.insert(user.to_string());
            }
            Some("presence.leave") => {
                present.remove(user);
            }
            _ => continue,
        }
        if present == expected && !was_right {
            right_since = start.elapsed();
        }
    }
    (right_since, present == expected)
}

/// Runs `reconnect`.
pub async fn reconnect(target: &Target, opts: &ReconnectOpts) -> Result<ReconnectReport, String> {
    let [a, b] = &target.urls[..] else {
        return Err("reconnect needs two --url: the instance that dies, then the other".into());
    };
    let per = opts.per_board.max(1);
    let count = opts.boards * per;
    let prefix = target.prefix.clone();
    let board_of = |n: usize| format!("{prefix}-r{}", n / per);
    let first = Target {
        urls: vec![a.clone()],
        ..target.clone()
    };
    let sessions = open_all(&first, count, |n| (board_of(n), format!("r{n}"))).await?;

    // One observer per board on the instance that lives.
    let mut watching = vec![];
    for board in 0..opts.boards {
        let name = format!("{prefix}-r{board}");
        let observer = format!("w{board}");
        let (ws, snapshot) =
            join_reading(b, count + board, &name, &observer, &target.secret).await?;
        let present: HashSet<String> = snapshot["payload"]["users"]
            .as_array()
            .map(|users| {
                users
                    .iter()
                    .filter_map(|u| u["userId"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let mut expected: HashSet<String> = (board * per..(board + 1) * per)
            .map(|n| format!("r{n}"))
            .collect();
        expected.insert(observer);
        watching.push((ws, present, expected));
    }

    let start = Instant::now();
    let until = start + Duration::from_secs_f64(opts.seconds);
    match opts.kill {
        Some(pid) => {
            let status = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .map_err(|e| e.to_string())?;
            if !status.success() {
                return Err(format!("kill -KILL {pid} failed"));
            }
        }
        None => drop(sessions),
    }
    let observers: Vec<_> = watching
        .into_iter()
        .map(|(ws, present, expected)| tokio::spawn(observe(ws, present, expected, start, until)))
        .collect();

    // Everyone comes back at once.
    let gate = Arc::new(Semaphore::new(RECONNECT_CONCURRENCY));
    let mut tasks = Vec::with_capacity(count);
    for n in 0..count {
        let (url, secret, board, gate) = (
            b.clone(),
            target.secret.clone(),
            board_of(n),
            Arc::clone(&gate),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.map_err(|e| e.to_string())?;
            let (ws, _) = join_reading(&url, n, &board, &format!("r{n}"), &secret).await?;
            Ok::<_, String>((ws, start.elapsed()))
        }));
    }
    let (mut snapshots, mut last, mut failures, mut held) =
        (Latencies::default(), Duration::ZERO, 0, vec![]);
    for task in tasks {
        match task.await.map_err(|e| e.to_string())? {
            Ok((ws, took)) => {
                snapshots.record(took);
                last = last.max(took);
                held.push(ws);
            }
            Err(_) => failures += 1,
        }
    }
    let (mut right, mut wrong_boards) = (Duration::ZERO, 0);
    for observer in observers {
        let (since, ok) = observer.await.map_err(|e| e.to_string())?;
        right = right.max(since);
        wrong_boards += usize::from(!ok);
    }
    drop(held);
    Ok(ReconnectReport {
        scenario: "reconnect",
        target: target.label.clone(),
        sessions: count,
        boards: opts.boards,
        killed: opts.kill.is_some(),
        all_snapshots_ms: last.as_secs_f64() * 1000.0,
        snapshot: snapshots.summary(),
        presence_right_ms: right.as_secs_f64() * 1000.0,
        wrong_boards,
        failures,
    })
}
