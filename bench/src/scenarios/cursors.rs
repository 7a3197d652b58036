//! `cursors`: boards × users × hz of `cursor.move`, every delivery timed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::client::{cursor_numbers, parse, parse_packed, Encoding};
use crate::lean;
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
    /// When in each interval the sockets send.
    pub spread: Spread,
}

/// When in each interval the sockets send their moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spread {
    /// A board's users together, boards spread evenly over the interval.
    Board,
    /// Each socket at its own random instant.
    Socket,
}

impl Spread {
    /// `board` or `socket`.
    pub fn parse(name: &str) -> Result<Spread, String> {
        match name {
            "board" => Ok(Spread::Board),
            "socket" => Ok(Spread::Socket),
            _ => Err(format!("--spread {name}: board or socket")),
        }
    }

    /// The name `parse` reads.
    pub fn name(self) -> &'static str {
        match self {
            Spread::Board => "board",
            Spread::Socket => "socket",
        }
    }
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
    /// `board` or `socket`.
    pub spread: &'static str,
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
    let sockets = open_all_lean(target, total, encoding, |n| {
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
    // Sockets grouped by the instant in each interval they send at: a board's users together
    // (the default), or each socket at its own.
    let groups = match opts.spread {
        Spread::Board => opts.boards,
        Spread::Socket => total,
    };
    let mut sinks: Vec<Vec<(usize, _)>> = (0..groups).map(|_| Vec::new()).collect();
    let mut streams = Vec::with_capacity(total);
    for (n, (stream, sink)) in sockets.into_iter().enumerate() {
        let group = match opts.spread {
            Spread::Board => n / opts.users,
            Spread::Socket => n,
        };
        sinks[group].push((n, sink));
        streams.push(stream);
    }
    if opts.spread == Spread::Socket {
        // Random phases, so neighbours in a room do not send in a fixed order.
        use rand::seq::SliceRandom;
        sinks.shuffle(&mut rand::rng());
    }
    let send_times = Arc::clone(&times);
    let sent = Arc::clone(&sent_in_window);
    // One task paces every socket: one timer firing once per group, instead of a timer per
    // socket. Ticks missed while the process was busy fire at once, so the offered load holds.
    tokio::spawn(async move {
        let step = interval.div_f64(groups as f64);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::from_std(epoch), step);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut turn: u64 = 0;
        'run: loop {
            let at = tick.tick().await.into_std();
            if at >= window_end {
                break;
            }
            let group = &mut sinks[(turn % groups as u64) as usize];
            let count = turn / groups as u64 + 1;
            turn += 1;
            for (n, sink) in group.iter_mut() {
                let n = *n;
                let (opcode, frame) = if encoding.packed(n) {
                    let value = serde_json::json!({"type":"cursor.move","payload":{"position":{"x":count,"y":n}}});
                    (lean::BINARY, rmp_serde::to_vec(&value).unwrap_or_default())
                } else {
                    let text = format!(
                        r#"{{"type":"cursor.move","payload":{{"position":{{"x":{count},"y":{n}}}}}}}"#
                    );
                    (lean::TEXT, text.into_bytes())
                };
                // One instant decides both the latency and whether the move counts in the
                // window, for the sender and every receiver alike.
                let now = Instant::now();
                send_times[n].sent(count, now.duration_since(epoch).as_nanos() as u64);
                if sink.send(opcode, &frame).await.is_err() {
                    break 'run;
                }
                if now >= window_start && now < window_end {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // Keep the sockets open until the receivers are done.
        tokio::time::sleep_until(tokio::time::Instant::from_std(window_end + GRACE)).await;
        for (_, sink) in sinks.iter_mut().flatten() {
            let _ = sink.close().await;
        }
    });
    let mut tasks = Vec::with_capacity(total);
    for (n, mut stream) in streams.into_iter().enumerate() {
        let times = Arc::clone(&times);
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut received, mut echoes, mut errors, mut bytes) =
                (Latencies::default(), 0u64, 0u64, 0u64, 0u64);
            let deadline = tokio::time::Instant::from_std(window_end + GRACE);
            while let Ok(Ok(1..)) = tokio::time::timeout_at(deadline, stream.fill()).await {
                // Every frame of one read arrived at the same instant.
                let now = Instant::now();
                let outcome = stream.frames(|opcode, payload| {
                    let numbers = match opcode {
                        lean::TEXT => cursor_numbers(payload)
                            .map(Ok)
                            .or_else(|| std::str::from_utf8(payload).ok().and_then(parse).map(Err)),
                        lean::BINARY => parse_packed(payload).map(Err),
                        _ => None,
                    };
                    let (number, sender) = match numbers {
                        Some(Ok(numbers)) => numbers,
                        Some(Err(frame)) => match (&*frame.kind, frame.payload.position) {
                            ("cursor.move", Some(p)) => (p.x as u64, p.y as u64),
                            ("error", _) => {
                                errors += 1;
                                return;
                            }
                            _ => return,
                        },
                        None => return,
                    };
                    if sender == n as u64 {
                        echoes += 1;
                    }
                    let Some(sent_at) = times.get(sender as usize).and_then(|t| t.when(number))
                    else {
                        return;
                    };
                    let sent_at = epoch + Duration::from_nanos(sent_at);
                    if sent_at >= window_start && sent_at < window_end {
                        received += 1;
                        bytes += payload.len() as u64;
                        latencies.record(now.saturating_duration_since(sent_at));
                    }
                });
                if outcome.is_err() {
                    break;
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
        spread: opts.spread.name(),
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
