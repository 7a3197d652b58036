//! `churn`: sessions joining and leaving while observers watch for the transitions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use crate::client::parse;
use crate::stats::{Latencies, Summary};

use super::*;

/// `churn`: sessions joining and leaving while observers watch.
#[derive(Clone, Debug)]
pub struct ChurnOpts {
    /// Boards.
    pub boards: usize,
    /// Observers per board, connected throughout.
    pub observers: usize,
    /// Sessions joining per second, over all boards.
    pub rate: f64,
    /// How long each joining session stays, ms.
    pub stay_ms: u64,
    /// Seconds of churn.
    pub seconds: f64,
}

/// What `churn` measured.
#[derive(Clone, Debug, Serialize)]
pub struct ChurnReport {
    /// Always `churn`.
    pub scenario: &'static str,
    /// Which server.
    pub target: String,
    /// Sessions that joined and left.
    pub sessions: u64,
    /// Joins and leaves seen by observers, per second per observer.
    pub transitions_per_s: f64,
    /// From a session's connect to an observer seeing its `presence.join`.
    pub join_seen: Summary,
    /// Sessions that failed to connect.
    pub failures: u64,
}

/// Runs `churn`.
pub async fn churn(target: &Target, opts: &ChurnOpts) -> Result<ChurnReport, String> {
    let prefix = target.prefix.clone();
    let observers_per = opts.observers.max(1);
    let sockets = open_all(target, opts.boards * observers_per, |n| {
        (format!("{prefix}-h{}", n / observers_per), format!("o{n}"))
    })
    .await?;
    let starts: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let end = Instant::now() + Duration::from_secs_f64(opts.seconds);
    let settle = end + Duration::from_millis(opts.stay_ms) + GRACE;
    let mut watchers = vec![];
    for mut ws in sockets {
        let starts = Arc::clone(&starts);
        watchers.push(tokio::spawn(async move {
            let (mut seen, mut transitions) = (Latencies::default(), 0u64);
            let deadline = tokio::time::Instant::from_std(settle);
            while let Ok(Some(Ok(Message::Text(text)))) =
                tokio::time::timeout_at(deadline, ws.next()).await
            {
                let Some(frame) = parse(&text) else { continue };
                match &*frame.kind {
                    "presence.join" => {
                        transitions += 1;
                        let user = frame
                            .payload
                            .user_id
                            .as_deref()
                            .unwrap_or_default()
                            .to_string();
                        let started = starts.lock().ok().and_then(|s| s.get(&user).copied());
                        if let Some(started) = started {
                            seen.record(started.elapsed());
                        }
                    }
                    "presence.leave" => transitions += 1,
                    _ => {}
                }
            }
            (seen, transitions)
        }));
    }
    let failures = Arc::new(AtomicU64::new(0));
    let mut churners = vec![];
    let period = Duration::from_secs_f64(1.0 / opts.rate);
    let mut tick = tokio::time::interval(period);
    let mut n = 0usize;
    let base = opts.boards * observers_per;
    loop {
        tick.tick().await;
        if Instant::now() >= end {
            break;
        }
        let user = format!("c{n}");
        let board = format!("{prefix}-h{}", n % opts.boards);
        let target = target.clone();
        let starts = Arc::clone(&starts);
        let failures = Arc::clone(&failures);
        let stay = Duration::from_millis(opts.stay_ms);
        let index = base + n;
        churners.push(tokio::spawn(async move {
            if let Ok(mut s) = starts.lock() {
                s.insert(user.clone(), Instant::now());
            }
            match target.join(index, &board, &user).await {
                Ok(mut ws) => {
                    tokio::time::sleep(stay).await;
                    let _ = ws.close(None).await;
                    while let Ok(Some(_)) =
                        tokio::time::timeout(Duration::from_secs(2), ws.next()).await
                    {
                    }
                }
                Err(_) => {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
        n += 1;
    }
    for c in churners {
        let _ = c.await;
    }
    let (mut seen, mut transitions) = (Latencies::default(), 0u64);
    let observers = watchers.len();
    for w in watchers {
        let (s, t) = w.await.map_err(|e| e.to_string())?;
        seen.merge(s);
        transitions += t;
    }
    Ok(ChurnReport {
        scenario: "churn",
        target: target.label.clone(),
        sessions: n as u64,
        transitions_per_s: transitions as f64 / opts.seconds / observers.max(1) as f64,
        join_seen: seen.summary(),
        failures: failures.load(Ordering::Relaxed),
    })
}
