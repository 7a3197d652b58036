//! The webhook actor: posts every board's events to `WEBHOOK_URL`, per board in order, at
//! least once.
//!
//! A board has at most one request in flight, anywhere: its later events wait behind it, so
//! the receiver sees them in order. A request that fails (not 2xx, or no answer within 5 s)
//! is tried again after a growing wait (1 s doubling to 5 min, jittered), carrying the same
//! events and any that came meanwhile (up to 100 per request). What waits is bounded by
//! `REPLAY_EVENTS` per board: past it the oldest are dropped and the next request starts with
//! `board.resync`, telling the receiver to read the board.
//!
//! In the embedded mode the outboxes are queues in this actor, fed by the broker (durable
//! events, once stored) and the presence actor (joins and leaves); they do not outlive the
//! process. In Redis mode the scripts that make the events write them to the board's outbox
//! stream in the same step, and every instance looks for due boards; the one that takes a
//! board's lease delivers it, so each event is posted by one instance, and if that instance
//! dies its lease runs out and another one goes on from the last delivered event.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::backend::redis::RedisBackend;
use crate::event::BoardKey;
use crate::metrics;
use crate::webhook::{self, Poster, BATCH, TICK};

/// Deliveries one instance has in flight at most.
const CONCURRENCY: usize = 32;
/// How long a Redis-mode delivery holds its board: longer than a request may take.
const LEASE: Duration = Duration::from_secs(15);

/// An event for a board's webhook outbox (embedded mode).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Hook {
    pub board: BoardKey,
    /// The event's JSON text, `at` included.
    pub entry: String,
}

/// One board's outbox in the embedded mode.
#[derive(Default)]
struct Outbox {
    /// Waiting events, numbered in arrival order.
    entries: VecDeque<(u64, String)>,
    /// Number of the last event taken.
    next: u64,
    /// Events dropped so far (the outbox was full)...
    drops: u64,
    /// ...and how many of those drops a delivered `board.resync` has told of.
    told: u64,
    /// Failed requests in a row.
    failures: u32,
    /// When the next request may go.
    due: Option<Instant>,
}

/// Where outboxes live.
enum Source {
    /// In this actor (embedded mode), at most `cap` events per board.
    Memory {
        outboxes: HashMap<BoardKey, Outbox>,
        cap: usize,
    },
    /// In Redis, shared by every instance.
    Redis(Box<RedisBackend>),
}

/// The webhook actor. See the module documentation.
pub struct Webhooks {
    /// Signs and sends the requests.
    poster: Poster,
    source: Source,
    /// Boards with a delivery under way here.
    in_flight: HashSet<BoardKey>,
    /// A look for due boards in Redis is under way.
    polling: bool,
}

impl Webhooks {
    /// Webhooks of the embedded mode, keeping at most `cap` waiting events per board.
    pub(crate) fn in_memory(poster: Poster, cap: usize) -> Self {
        Webhooks {
            poster,
            source: Source::Memory {
                outboxes: HashMap::new(),
                cap: cap.max(1),
            },
            in_flight: HashSet::new(),
            polling: false,
        }
    }

    /// Webhooks of the Redis mode.
    pub(crate) fn over_redis(poster: Poster, redis: RedisBackend) -> Self {
        Webhooks {
            poster,
            source: Source::Redis(Box::new(redis)),
            in_flight: HashSet::new(),
            polling: false,
        }
    }

    /// Starts the deliveries that may go now.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        match &self.source {
            Source::Memory { outboxes, .. } => {
                let now = Instant::now();
                let due: Vec<BoardKey> = outboxes
                    .iter()
                    .filter(|(board, outbox)| {
                        !self.in_flight.contains(*board) && outbox.due.is_none_or(|d| d <= now)
                    })
                    .map(|(board, _)| board.clone())
                    .take(CONCURRENCY.saturating_sub(self.in_flight.len()))
                    .collect();
                for board in due {
                    self.send_memory(board, ctx);
                }
            }
            Source::Redis(redis) => {
                let room = CONCURRENCY.saturating_sub(self.in_flight.len());
                if self.polling || room == 0 {
                    return;
                }
                self.polling = true;
                let redis = RedisBackend::clone(redis);
                let poll = async move { redis.webhook_due(room).await };
                ctx.spawn(poll.into_actor(self).map(|due, hooks, ctx| {
                    hooks.polling = false;
                    for board in due.unwrap_or_default() {
                        if hooks.in_flight.len() < CONCURRENCY
                            && hooks.in_flight.insert(board.clone())
                        {
                            hooks.send_redis(board, ctx);
                        }
                    }
                }));
            }
        }
    }

    /// Posts the first events of a board's queue (embedded mode).
    fn send_memory(&mut self, board: BoardKey, ctx: &mut Context<Self>) {
        let Source::Memory { outboxes, .. } = &mut self.source else {
            return;
        };
        let Some(outbox) = outboxes.get_mut(&board) else {
            return;
        };
        let now = webhook::now_ms();
        let mut events = vec![];
        let drops = outbox.drops;
        if drops > outbox.told {
            events.push(webhook::resync_entry(now));
        }
        let batch: Vec<&(u64, String)> = outbox.entries.iter().take(BATCH).collect();
        let Some(last) = batch.last().map(|(n, _)| *n) else {
            outboxes.remove(&board);
            return;
        };
        events.extend(batch.into_iter().map(|(_, e)| e.clone()));
        let sent = events.len();
        observe_lag(&events, now);
        let body = webhook::body(&board, &events);
        self.in_flight.insert(board.clone());
        let poster = self.poster.clone();
        let post = async move { poster.post(body).await };
        ctx.spawn(post.into_actor(self).map(move |result, hooks, ctx| {
            hooks.in_flight.remove(&board);
            let Source::Memory { outboxes, .. } = &mut hooks.source else {
                return;
            };
            let Some(outbox) = outboxes.get_mut(&board) else {
                return;
            };
            match result {
                Ok(()) => {
                    delivered(sent);
                    while outbox.entries.front().is_some_and(|(n, _)| *n <= last) {
                        outbox.entries.pop_front();
                    }
                    outbox.told = drops;
                    outbox.failures = 0;
                    outbox.due = None;
                    if outbox.entries.is_empty() {
                        outboxes.remove(&board);
                    } else {
                        hooks.send_memory(board, ctx);
                    }
                }
                Err(why) => {
                    outbox.failures += 1;
                    let wait = webhook::retry_delay(outbox.failures, rand::random());
                    failed(&board, &why, outbox.failures, wait);
                    outbox.due = Some(Instant::now() + wait);
                }
            }
        }));
    }

    /// Claims a board's outbox in Redis and posts what waits there; `board` is in flight.
    fn send_redis(&mut self, board: BoardKey, ctx: &mut Context<Self>) {
        let Source::Redis(redis) = &self.source else {
            return;
        };
        let redis = RedisBackend::clone(redis);
        let poster = self.poster.clone();
        let key = board.clone();
        let work = async move {
            let Some(claimed) = redis.webhook_claim(&board, LEASE, BATCH).await? else {
                return Ok(());
            };
            let Some(last) = claimed.entries.last().map(|(n, _)| *n) else {
                redis.webhook_done(&board, None).await?;
                return Ok(());
            };
            let now = webhook::now_ms();
            let mut events = vec![];
            if claimed.dropped {
                events.push(webhook::resync_entry(now));
            }
            events.extend(claimed.entries.into_iter().map(|(_, e)| e));
            observe_lag(&events, now);
            let sent = events.len();
            match poster.post(webhook::body(&board, &events)).await {
                Ok(()) => {
                    delivered(sent);
                    redis.webhook_done(&board, Some(last)).await?;
                }
                Err(why) => {
                    let failures = claimed.failures.saturating_add(1);
                    let wait = webhook::retry_delay(failures, rand::random());
                    failed(&board, &why, failures, wait);
                    let at = webhook::now_ms() + wait.as_millis() as u64;
                    redis.webhook_fail(&board, at).await?;
                }
            }
            Ok::<(), crate::backend::BackendError>(())
        };
        ctx.spawn(work.into_actor(self).map(move |result, hooks, _| {
            hooks.in_flight.remove(&key);
            if let Err(e) = result {
                log::warn!("webhooks of {key}: {e} (tried again later)");
            }
        }));
    }
}

/// Counts events delivered.
fn delivered(events: usize) {
    metrics::WEBHOOK_EVENTS.add(events as u64);
}

/// Counts and logs a failed request.
fn failed(board: &BoardKey, why: &str, failures: u32, wait: Duration) {
    metrics::WEBHOOK_FAILURES.inc();
    log::warn!(
        "webhook for {board} failed ({why}), {failures} in a row; next try in {:.1} s",
        wait.as_secs_f64()
    );
}

/// Records how old the oldest event of a request is.
fn observe_lag(events: &[String], now: u64) {
    let oldest = events
        .iter()
        .filter_map(|e| serde_json::from_str::<serde_json::Value>(e).ok()?["at"].as_u64())
        .min();
    if let Some(at) = oldest {
        metrics::WEBHOOK_LAG_MS.set(now.saturating_sub(at));
    }
}

impl Actor for Webhooks {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Fed by the broker and the presence actor, which must never wait on it; the outboxes
        // behind it are bounded.
        ctx.set_mailbox_capacity(0);
        ctx.run_interval(TICK, |hooks, ctx| hooks.tick(ctx));
    }
}

impl Handler<Hook> for Webhooks {
    type Result = ();

    fn handle(&mut self, msg: Hook, ctx: &mut Self::Context) {
        let Source::Memory { outboxes, cap } = &mut self.source else {
            return;
        };
        let outbox = outboxes.entry(msg.board.clone()).or_default();
        if outbox.entries.len() >= *cap {
            outbox.entries.pop_front();
            outbox.drops += 1;
        }
        outbox.next += 1;
        outbox.entries.push_back((outbox.next, msg.entry));
        let ready = outbox.due.is_none_or(|d| d <= Instant::now());
        if ready && !self.in_flight.contains(&msg.board) && self.in_flight.len() < CONCURRENCY {
            self.send_memory(msg.board, ctx);
        }
    }
}
