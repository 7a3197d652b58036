//! `cursors`: boards × users × hz of `cursor.move`, every delivery timed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{frame, parse_message, Encoding};
use crate::stats::{Latencies, SendTimes, Summary};

use super::*;

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
    /// JSON, MessagePack, or rooms with both.
    pub encoding: Encoding,
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
    /// `json`, `msgpack` or `mixed`.
    pub encoding: &'static str,
    /// Measured seconds.
    pub seconds: f64,
    /// Mean size of a delivered cursor frame's payload, bytes.
    pub bytes_per_delivery: f64,
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
    let encoding = opts.encoding;
    let sockets = open_all_as(target, total, encoding, |n| {
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
                let frame = if encoding.packed(n) {
                    frame(
                        &serde_json::json!({"type":"cursor.move","payload":{"position":{"x":count,"y":n}}}),
                        true,
                    )
                } else {
                    Message::text(format!(
                        r#"{{"type":"cursor.move","payload":{{"position":{{"x":{count},"y":{n}}}}}}}"#
                    ))
                };
                // One instant decides both the latency and whether the move counts in the
                // window, for the sender and every receiver alike.
                let now = Instant::now();
                send_times[n].sent(count, now.duration_since(epoch).as_nanos() as u64);
                if sink.send(frame).await.is_err() {
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
            let (mut latencies, mut received, mut echoes, mut errors, mut bytes) =
                (Latencies::default(), 0u64, 0u64, 0u64, 0u64);
            let deadline = tokio::time::Instant::from_std(window_end + GRACE);
            while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, stream.next()).await {
                let Some(frame) = parse_message(&msg) else {
                    continue;
                };
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
                            bytes += msg.len() as u64;
                            latencies.record(Instant::now().saturating_duration_since(sent_at));
                        }
                    }
                    "error" => errors += 1,
                    _ => {}
                }
            }
            (latencies, received, echoes, errors, bytes)
        }));
    }
    tokio::time::sleep_until(tokio::time::Instant::from_std(window_start)).await;
    let meter = Meter::start(target);
    tokio::time::sleep_until(tokio::time::Instant::from_std(window_end + GRACE)).await;
    let usage = meter.stop(target);
    let (mut latencies, mut received, mut echoes, mut errors, mut bytes) =
        (Latencies::default(), 0, 0, 0, 0u64);
    for task in tasks {
        let (l, r, e, x, b) = task.await.map_err(|e| e.to_string())?;
        latencies.merge(l);
        received += r;
        echoes += e;
        errors += x;
        bytes += b;
    }
    let expected = sent_in_window.load(Ordering::Relaxed) * (opts.users as u64 - 1);
    Ok(CursorsReport {
        scenario: "cursors",
        target: target.label.clone(),
        instances: target.urls.len(),
        boards: opts.boards,
        users: opts.users,
        hz: opts.hz,
        encoding: encoding.name(),
        seconds: opts.seconds,
        bytes_per_delivery: if received == 0 {
            0.0
        } else {
            bytes as f64 / received as f64
        },
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
