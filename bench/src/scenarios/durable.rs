//! `durable`: writers sending `value.set` with acks, checked for seq gaps.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::client::{parse, Encoding};
use crate::lean;
use crate::stats::{Latencies, Summary};

use super::*;

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
    let mut sockets = open_all_lean(target, opts.boards * per_board, Encoding::Json, |n| {
        (format!("{prefix}-d{}", n / per_board), format!("w{n}"))
    })
    .await?;
    // The first writer of each board creates the item the others set values on.
    for b in 0..opts.boards {
        let (reader, writer) = &mut sockets[b * per_board];
        let create = r#"{"type":"item.created","payload":{"item":{"id":"i"}},"id":"create"}"#;
        writer
            .send(lean::TEXT, create.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut created = false;
        while !created {
            if reader.fill().await.map_err(|e| e.to_string())? == 0 {
                return Err("closed while creating the item".into());
            }
            reader
                .frames(|_, payload| {
                    let frame = std::str::from_utf8(payload).ok().and_then(parse);
                    created |= frame.is_some_and(|f| f.payload.id.as_deref() == Some("create"));
                })
                .map_err(|e| e.to_string())?;
        }
    }
    let start = Instant::now() + Duration::from_millis(500);
    let end = start + Duration::from_secs_f64(opts.seconds);
    let acked = Arc::new(AtomicU64::new(0));
    let mut tasks = vec![];
    for (n, (mut reader, mut ws)) in sockets.into_iter().enumerate() {
        let writer = n % per_board != per_board - 1;
        let depth = opts.depth;
        let acked = Arc::clone(&acked);
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut check, mut errors) = (Latencies::default(), SeqCheck::default(), 0u64);
            let mut in_flight: HashMap<u64, Instant> = HashMap::new();
            let mut next = 0u64;
            let mut frame = String::new();
            tokio::time::sleep_until(tokio::time::Instant::from_std(start)).await;
            let deadline = tokio::time::Instant::from_std(end + GRACE);
            loop {
                // Every operation a turn can send goes out in one write.
                let now = Instant::now();
                let mut queued = false;
                while writer && now < end && in_flight.len() < depth {
                    next += 1;
                    frame.clear();
                    let _ = write!(
                        frame,
                        r#"{{"type":"value.set","payload":{{"itemId":"i","columnId":"c{n}","value":{next}}},"id":"{next}"}}"#
                    );
                    ws.push(lean::TEXT, frame.as_bytes());
                    in_flight.insert(next, now);
                    queued = true;
                }
                if queued && ws.flush().await.is_err() {
                    break;
                }
                if now >= end && in_flight.is_empty() {
                    break;
                }
                match tokio::time::timeout_at(deadline, reader.fill()).await {
                    Ok(Ok(read)) if read > 0 => {}
                    _ => break,
                }
                // Frames other than text (the server's pings, every 30 s) are skipped.
                let handled = reader.frames(|opcode, payload| {
                    let Some(frame) = (opcode == lean::TEXT)
                        .then(|| std::str::from_utf8(payload).ok().and_then(parse))
                        .flatten()
                    else {
                        return;
                    };
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
                });
                if handled.is_err() {
                    break;
                }
            }
            let _ = ws.close().await;
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
