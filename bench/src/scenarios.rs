//! The scenarios. Each connects its clients, measures over a fixed window, and returns a report
//! that prints as a human summary and as one JSON line.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{connect, parse, source_for, token, Socket};
use crate::procfs::{cpu_seconds, rss_bytes};
use crate::stats::{Latencies, SendTimes, Summary};

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
        let mut ws = connect(
            self.url(n),
            board,
            &token(&self.secret, user),
            source_for(n),
        )
        .await?;
        // The first frame is the snapshot.
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => Ok(ws),
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
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut tasks = Vec::with_capacity(count);
    for n in 0..count {
        let (board, user) = make(n);
        let target = target.clone();
        let gate = Arc::clone(&gate);
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.map_err(|e| e.to_string())?;
            target.join(n, &board, &user).await
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

/// `cursors`: boards × users × hz of `cursor.move`.
#[derive(Clone, Debug)]
pub struct CursorsOpts {
    /// Boards.
    pub boards: usize,
    /// Users per board.
    pub users: usize,
    /// Moves per second per user.
    pub hz: f64,
    /// Measured seconds.
    pub seconds: f64,
    /// Seconds of load before measuring.
    pub warmup: f64,
}

/// What `cursors` measured.
#[derive(Clone, Debug, Serialize)]
pub struct CursorsReport {
    /// Always `cursors`.
    pub scenario: &'static str,
    /// Which server.
    pub target: String,
    /// Instances the clients were spread over.
    pub instances: usize,
    /// Boards.
    pub boards: usize,
    /// Users per board.
    pub users: usize,
    /// Moves per second per user.
    pub hz: f64,
    /// Measured seconds.
    pub seconds: f64,
    /// Deliveries per second offered (moves × other users).
    pub offered_per_s: f64,
    /// Deliveries expected for the moves sent in the window.
    pub expected: u64,
    /// Deliveries received of those.
    pub received: u64,
    /// Received over expected.
    pub delivered_ratio: f64,
    /// Moves a sender got back (must be 0).
    pub echoes: u64,
    /// Error frames received.
    pub errors: u64,
    /// Send-to-receive latency.
    pub latency: Summary,
    /// CPU and memory.
    pub usage: Usage,
    /// Server CPU seconds per million deliveries.
    pub server_cpu_s_per_million: f64,
}

/// Runs `cursors`.
pub async fn cursors(target: &Target, opts: &CursorsOpts) -> Result<CursorsReport, String> {
    let total = opts.boards * opts.users;
    let prefix = target.prefix.clone();
    let users = opts.users;
    let sockets = open_all(target, total, |n| {
        (format!("{prefix}-c{}", n / users), format!("u{n}"))
    })
    .await?;
    let ring = ((opts.hz * (opts.seconds + opts.warmup + 5.0)) as usize).max(64);
    let times: Arc<Vec<SendTimes>> = Arc::new((0..total).map(|_| SendTimes::new(ring)).collect());
    let epoch = Instant::now();
    let window_start = epoch + Duration::from_secs_f64(opts.warmup);
    let window_end = window_start + Duration::from_secs_f64(opts.seconds);
    let sent_in_window = Arc::new(AtomicU64::new(0));
    let interval = Duration::from_secs_f64(1.0 / opts.hz);
    let mut tasks = vec![];
    for (n, ws) in sockets.into_iter().enumerate() {
        let (mut sink, mut stream) = ws.split();
        let send_times = Arc::clone(&times);
        let sent = Arc::clone(&sent_in_window);
        let phase = interval.mul_f64(rand::random::<f64>());
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::from_std(epoch + phase), interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut count: u64 = 0;
            loop {
                let at = tick.tick().await.into_std();
                if at >= window_end {
                    break;
                }
                count += 1;
                let frame = format!(
                    r#"{{"type":"cursor.move","payload":{{"position":{{"x":{count},"y":{n}}}}}}}"#
                );
                // One instant decides both the latency and whether the move counts in the
                // window, for the sender and every receiver alike.
                let now = Instant::now();
                send_times[n].sent(count, now.duration_since(epoch).as_nanos() as u64);
                if sink.send(Message::text(frame)).await.is_err() {
                    break;
                }
                if now >= window_start && now < window_end {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            // Keep the socket open until the receivers are done.
            tokio::time::sleep_until(tokio::time::Instant::from_std(window_end + GRACE)).await;
            let _ = sink.close().await;
        });
        let times = Arc::clone(&times);
        let me = format!("u{n}");
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut received, mut echoes, mut errors) =
                (Latencies::default(), 0u64, 0u64, 0u64);
            let deadline = tokio::time::Instant::from_std(window_end + GRACE);
            while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, stream.next()).await {
                let Message::Text(text) = msg else { continue };
                let Some(frame) = parse(&text) else { continue };
                match &*frame.kind {
                    "cursor.move" => {
                        if frame.payload.user_id.as_deref() == Some(me.as_str()) {
                            echoes += 1;
                        }
                        let Some(p) = frame.payload.position else {
                            continue;
                        };
                        let Some(sent_at) =
                            times.get(p.y as usize).and_then(|t| t.when(p.x as u64))
                        else {
                            continue;
                        };
                        let sent_at = epoch + Duration::from_nanos(sent_at);
                        if sent_at >= window_start && sent_at < window_end {
                            received += 1;
                            latencies.record(Instant::now().saturating_duration_since(sent_at));
                        }
                    }
                    "error" => errors += 1,
                    _ => {}
                }
            }
            (latencies, received, echoes, errors)
        }));
    }
    tokio::time::sleep_until(tokio::time::Instant::from_std(window_start)).await;
    let meter = Meter::start(target);
    tokio::time::sleep_until(tokio::time::Instant::from_std(window_end + GRACE)).await;
    let usage = meter.stop(target);
    let (mut latencies, mut received, mut echoes, mut errors) = (Latencies::default(), 0, 0, 0);
    for task in tasks {
        let (l, r, e, x) = task.await.map_err(|e| e.to_string())?;
        latencies.merge(l);
        received += r;
        echoes += e;
        errors += x;
    }
    let expected = sent_in_window.load(Ordering::Relaxed) * (opts.users as u64 - 1);
    Ok(CursorsReport {
        scenario: "cursors",
        target: target.label.clone(),
        instances: target.urls.len(),
        boards: opts.boards,
        users: opts.users,
        hz: opts.hz,
        seconds: opts.seconds,
        offered_per_s: (total as f64) * opts.hz * (opts.users as f64 - 1.0),
        expected,
        received,
        delivered_ratio: if expected == 0 {
            0.0
        } else {
            received as f64 / expected as f64
        },
        echoes,
        errors,
        latency: latencies.summary(),
        usage,
        server_cpu_s_per_million: if received == 0 {
            0.0
        } else {
            usage.server_cpu_s / (received as f64 / 1e6)
        },
    })
}

// ----- durable -----

/// `durable`: writers sending `value.set`, each with a few in flight.
#[derive(Clone, Debug)]
pub struct DurableOpts {
    /// Boards.
    pub boards: usize,
    /// Writers per board.
    pub writers: usize,
    /// Operations each writer keeps in flight.
    pub depth: usize,
    /// Measured seconds.
    pub seconds: f64,
}

/// What `durable` measured.
#[derive(Clone, Debug, Serialize)]
pub struct DurableReport {
    /// Always `durable`.
    pub scenario: &'static str,
    /// Which server.
    pub target: String,
    /// Instances the clients were spread over.
    pub instances: usize,
    /// Boards.
    pub boards: usize,
    /// Writers per board.
    pub writers: usize,
    /// Operations in flight per writer.
    pub depth: usize,
    /// Measured seconds.
    pub seconds: f64,
    /// Operations acknowledged.
    pub acked: u64,
    /// Acks per second.
    pub acks_per_s: f64,
    /// Send-to-ack latency.
    pub latency: Summary,
    /// Places where a receiver's seq skipped or repeated (must be 0).
    pub seq_gaps: u64,
    /// Error frames.
    pub errors: u64,
    /// CPU and memory.
    pub usage: Usage,
}

/// Follows one receiver's seqs (events and acks), counting skips and repeats.
#[derive(Default)]
struct SeqCheck {
    last: Option<u64>,
    gaps: u64,
}

impl SeqCheck {
    fn see(&mut self, seq: u64) {
        if let Some(last) = self.last {
            if seq != last + 1 {
                self.gaps += 1;
            }
        }
        self.last = Some(seq);
    }
}

/// Runs `durable`.
pub async fn durable(target: &Target, opts: &DurableOpts) -> Result<DurableReport, String> {
    let per_board = opts.writers + 1;
    let prefix = target.prefix.clone();
    let mut sockets = open_all(target, opts.boards * per_board, |n| {
        (format!("{prefix}-d{}", n / per_board), format!("w{n}"))
    })
    .await?;
    // The first writer of each board creates the item the others set values on.
    for b in 0..opts.boards {
        let ws = &mut sockets[b * per_board];
        let create = r#"{"type":"item.created","payload":{"item":{"id":"i"}},"id":"create"}"#;
        ws.send(Message::text(create))
            .await
            .map_err(|e| e.to_string())?;
        loop {
            let Some(Ok(Message::Text(text))) = ws.next().await else {
                return Err("closed while creating the item".into());
            };
            if parse(&text).is_some_and(|f| f.payload.id.as_deref() == Some("create")) {
                break;
            }
        }
    }
    let start = Instant::now() + Duration::from_millis(500);
    let end = start + Duration::from_secs_f64(opts.seconds);
    let acked = Arc::new(AtomicU64::new(0));
    let mut tasks = vec![];
    for (n, mut ws) in sockets.into_iter().enumerate() {
        let writer = n % per_board != per_board - 1;
        let depth = opts.depth;
        let acked = Arc::clone(&acked);
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut check, mut errors) = (Latencies::default(), SeqCheck::default(), 0u64);
            let mut in_flight: HashMap<u64, Instant> = HashMap::new();
            let mut next = 0u64;
            tokio::time::sleep_until(tokio::time::Instant::from_std(start)).await;
            loop {
                let now = Instant::now();
                while writer && now < end && in_flight.len() < depth {
                    next += 1;
                    let frame = format!(
                        r#"{{"type":"value.set","payload":{{"itemId":"i","columnId":"c{n}","value":{next}}},"id":"{next}"}}"#
                    );
                    if ws.send(Message::text(frame)).await.is_err() {
                        return (latencies, check.gaps, errors);
                    }
                    in_flight.insert(next, Instant::now());
                }
                let deadline = tokio::time::Instant::from_std(end + GRACE);
                if now >= end && in_flight.is_empty() {
                    break;
                }
                let Ok(Some(Ok(Message::Text(text)))) = tokio::time::timeout_at(deadline, ws.next()).await else {
                    break;
                };
                let Some(frame) = parse(&text) else { continue };
                if let Some(seq) = frame.seq {
                    check.see(seq);
                }
                match &*frame.kind {
                    "ack" => {
                        if let Some(seq) = frame.payload.seq {
                            check.see(seq);
                        }
                        let id = frame.payload.id.as_deref().and_then(|i| i.parse::<u64>().ok());
                        if let Some(sent) = id.and_then(|i| in_flight.remove(&i)) {
                            latencies.record(sent.elapsed());
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    "error" => {
                        errors += 1;
                        if let Some(i) = frame.payload.id.as_deref().and_then(|i| i.parse::<u64>().ok()) {
                            in_flight.remove(&i);
                        }
                    }
                    _ => {}
                }
            }
            let _ = ws.close(None).await;
            (latencies, check.gaps, errors)
        }));
    }
    tokio::time::sleep_until(tokio::time::Instant::from_std(start)).await;
    let meter = Meter::start(target);
    let (mut latencies, mut gaps, mut errors) = (Latencies::default(), 0, 0);
    for task in tasks {
        let (l, g, e) = task.await.map_err(|e| e.to_string())?;
        latencies.merge(l);
        gaps += g;
        errors += e;
    }
    let usage = meter.stop(target);
    let acked = acked.load(Ordering::Relaxed);
    Ok(DurableReport {
        scenario: "durable",
        target: target.label.clone(),
        instances: target.urls.len(),
        boards: opts.boards,
        writers: opts.writers,
        depth: opts.depth,
        seconds: opts.seconds,
        acked,
        acks_per_s: acked as f64 / opts.seconds,
        latency: latencies.summary(),
        seq_gaps: gaps,
        errors,
        usage,
    })
}

// ----- idle -----

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_check_counts_skips_and_repeats() {
        let mut c = SeqCheck::default();
        for s in [1, 2, 3, 5, 5, 6] {
            c.see(s);
        }
        assert_eq!(c.gaps, 2);
    }
}
