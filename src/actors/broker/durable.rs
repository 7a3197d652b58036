//! Durable operations through the broker: appends, catch-ups and gap fills, each answered
//! by the backend in use (in the embedded mode, once the store committed).

use super::*;

/// Waits for an answer the embedded backend gives once its store committed.
pub(super) async fn answer<T>(
    rx: oneshot::Receiver<Result<T, BackendError>>,
) -> Result<T, BackendError> {
    rx.await
        .unwrap_or_else(|_| Err(BackendError::unavailable_now("the storage stopped; retry")))
}

impl Handler<Flushed> for Broker {
    type Result = ();

    fn handle(&mut self, msg: Flushed, _: &mut Self::Context) {
        let rooms = &self.rooms;
        let hooks = &self.hooks;
        if let Backend::Embedded(embedded) = &mut self.backend {
            let at = crate::webhook::now_ms();
            embedded.flushed(msg, |board, event| {
                if let (Some(hooks), BoardEvent::Durable { frame, .. }) = (hooks, &event) {
                    hooks.do_send(Hook {
                        board: board.clone(),
                        entry: crate::webhook::durable_entry(frame, at),
                    });
                }
                if let Some(room) = rooms.get(board) {
                    room.events.do_send(event);
                }
            });
        }
    }
}

/// The answer while Redis is known to be out of reach: refused at once, so that nothing waits
/// to be applied long after its sender was told to retry.
pub(super) fn unreachable() -> BackendError {
    BackendError::unavailable_now("the backend is out of reach; retry")
}

// In Redis mode a board's operations go in batches, one batch of a board in flight at a time:
// what arrives meanwhile waits in the board's lane and goes with the next batch, so that a busy
// board costs one script call per batch instead of per operation (and, unless the instance's
// last commit of the board left what the batch reads, one read).
impl Handler<Append> for Broker {
    type Result = ResponseFuture<Result<Appended, BackendError>>;

    fn handle(&mut self, msg: Append, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        if let Backend::Embedded(embedded) = &mut self.backend {
            embedded.request(Request::Append(msg, tx));
            return Box::pin(answer(rx));
        }
        if !self.ready.load(Ordering::Relaxed) {
            return Box::pin(std::future::ready(Err(unreachable())));
        }
        match self.lanes.get_mut(&msg.board) {
            Some(lane) if lane.len() >= LANE_BOUND => {
                return Box::pin(std::future::ready(Err(BackendError::unavailable_now(
                    "too many operations are waiting on this board; retry",
                ))));
            }
            Some(lane) => lane.push((msg, tx)),
            None => {
                self.lanes.insert(msg.board.clone(), Vec::new());
                self.commit_batch(vec![(msg, tx)], ctx);
            }
        }
        Box::pin(answer(rx))
    }
}

/// Operations of a board waiting for its batch in flight, each with where its answer goes.
pub(super) type Lane = Vec<(Append, oneshot::Sender<Result<Appended, BackendError>>)>;

/// Operations that may wait in a board's lane; past it an operation is refused with
/// `unavailable` at once (sessions hold their own queue behind this one).
const LANE_BOUND: usize = 1024;

/// Operations of a board committed in one script call at most.
const COMMIT_BATCH: usize = 64;

impl Broker {
    /// Commits `batch` (operations of one board) as a task of its own: a future spawned on the
    /// broker's context would be polled at every wake-up of the broker, with all others in
    /// flight. When it is answered, the board's lane sends its next batch.
    fn commit_batch(&mut self, batch: Lane, ctx: &mut Context<Self>) {
        let Backend::Redis(redis) = &self.backend else {
            return;
        };
        let redis = RedisBackend::clone(redis);
        let me = ctx.address();
        let Some(board) = batch.first().map(|(a, _)| a.board.clone()) else {
            return;
        };
        let mut cache = self.read_caches.remove(&board).unwrap_or_default();
        actix::spawn(async move {
            let (appends, senders): (Vec<Append>, Vec<_>) = batch.into_iter().unzip();
            let answers = redis.append_batch(&board, &appends, &mut cache).await;
            let mut unanswered = false;
            for (answer, tx) in answers.into_iter().zip(senders) {
                match &answer {
                    Ok(_) => crate::metrics::DURABLE_EVENTS.inc(),
                    // Redis did not answer in time: refuse what follows at once until a ping
                    // succeeds.
                    Err(e) if e.is_unavailable() => unanswered = true,
                    Err(_) => {}
                }
                let _ = tx.send(answer);
            }
            if unanswered {
                me.do_send(Unanswered);
            }
            me.do_send(BatchDone(board, cache));
        });
    }
}

/// Boards whose [`ReadCache`] a broker keeps at most; a board past it takes the place of
/// another.
const CACHED_BOARDS: usize = 1024;

/// A board's batch of operations was answered: the next one may go.
#[derive(Message)]
#[rtype(result = "()")]
struct BatchDone(BoardKey, ReadCache);

impl Handler<BatchDone> for Broker {
    type Result = ();

    fn handle(&mut self, BatchDone(board, cache): BatchDone, ctx: &mut Self::Context) {
        if self.read_caches.len() >= CACHED_BOARDS {
            let other = self.read_caches.keys().next().cloned();
            if let Some(other) = other {
                self.read_caches.remove(&other);
            }
        }
        self.read_caches.insert(board.clone(), cache);
        let Some(lane) = self.lanes.get_mut(&board) else {
            return;
        };
        if lane.is_empty() {
            self.lanes.remove(&board);
            return;
        }
        let rest = lane.split_off(lane.len().min(COMMIT_BATCH));
        let batch = std::mem::replace(lane, rest);
        if !self.ready.load(Ordering::Relaxed) {
            // Redis is known to be out of reach: what waited is refused, not sent late.
            for (_, tx) in batch
                .into_iter()
                .chain(self.lanes.remove(&board).unwrap_or_default())
            {
                let _ = tx.send(Err(unreachable()));
            }
            return;
        }
        self.commit_batch(batch, ctx);
    }
}

/// Redis did not answer a request in time.
#[derive(Message)]
#[rtype(result = "()")]
struct Unanswered;

impl Handler<Unanswered> for Broker {
    type Result = ();

    fn handle(&mut self, _: Unanswered, _: &mut Self::Context) {
        self.ready.store(false, Ordering::Relaxed);
        self.ready_since = None;
    }
}

impl Handler<AppendCustom> for Broker {
    type Result = ResponseFuture<Result<u64, BackendError>>;

    fn handle(&mut self, msg: AppendCustom, _: &mut Self::Context) -> Self::Result {
        match &mut self.backend {
            Backend::Embedded(embedded) => {
                let (tx, rx) = oneshot::channel();
                embedded.request(Request::Custom(msg, tx));
                Box::pin(answer(rx))
            }
            Backend::Redis(_) if !self.ready.load(Ordering::Relaxed) => {
                Box::pin(async { Err(unreachable()) })
            }
            Backend::Redis(redis) => {
                let redis = redis.clone();
                Box::pin(async move {
                    let seq = redis
                        .append_custom(&msg.board, &msg.kind, &msg.payload, msg.key.as_ref())
                        .await?;
                    crate::metrics::DURABLE_EVENTS.inc();
                    Ok(seq)
                })
            }
        }
    }
}

impl Handler<GetCatchup> for Broker {
    type Result = ResponseFuture<Result<Catchup, BackendError>>;

    fn handle(&mut self, msg: GetCatchup, _: &mut Self::Context) -> Self::Result {
        match &mut self.backend {
            Backend::Embedded(embedded) => {
                let (tx, rx) = oneshot::channel();
                embedded.request(Request::Catchup(msg, tx));
                Box::pin(answer(rx))
            }
            Backend::Redis(redis) => {
                let redis = redis.clone();
                Box::pin(async move {
                    redis
                        .catchup(&msg.board, msg.last_seq, msg.epoch.as_deref())
                        .await
                })
            }
        }
    }
}

/// The durable events after `after`, with their acks, for a room that missed some (or that
/// checks that the store still holds what it delivered).
#[derive(Message)]
#[rtype(result = "Result<Filled, BackendError>")]
pub struct GetEvents {
    pub board: BoardKey,
    /// The last seq the room delivered.
    pub after: u64,
    /// The frame of that seq as the room delivered it, when it did (not from a snapshot).
    pub frame: Option<ByteString>,
    /// The epoch of that seq ("" when the room knows none).
    pub epoch: String,
}

impl Handler<GetEvents> for Broker {
    type Result = ResponseFuture<Result<Filled, BackendError>>;

    fn handle(&mut self, msg: GetEvents, _: &mut Self::Context) -> Self::Result {
        match self.redis() {
            // In memory every event reaches the room directly: there is never a gap.
            None => Box::pin(async { Ok(Filled::Events(vec![])) }),
            Some(_) if !self.ready.load(Ordering::Relaxed) => {
                Box::pin(async { Err(unreachable()) })
            }
            Some(redis) => Box::pin(async move {
                redis
                    .events_after(&msg.board, (msg.after, msg.frame.as_deref()), &msg.epoch)
                    .await
            }),
        }
    }
}
