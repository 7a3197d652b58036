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

// A plain future, run as a task of its own: a future spawned on the broker's context would be
// polled at every wake-up of the broker, with all others in flight (hundreds under load).
impl Handler<Append> for Broker {
    type Result = ResponseFuture<Result<Appended, BackendError>>;

    fn handle(&mut self, msg: Append, ctx: &mut Self::Context) -> Self::Result {
        let redis = match &mut self.backend {
            Backend::Embedded(embedded) => {
                let (tx, rx) = oneshot::channel();
                embedded.request(Request::Append(msg, tx));
                return Box::pin(answer(rx));
            }
            Backend::Redis(redis) => RedisBackend::clone(redis),
        };
        if !self.ready.load(Ordering::Relaxed) {
            return Box::pin(std::future::ready(Err(unreachable())));
        }
        let me = ctx.address();
        Box::pin(async move {
            let result = redis
                .append(&msg.board, msg.op, &msg.user_id, msg.ack, msg.key.as_ref())
                .await;
            match &result {
                Ok(_) => crate::metrics::DURABLE_EVENTS.inc(),
                // Redis did not answer in time: refuse what follows at once until a ping succeeds.
                Err(e) if e.is_unavailable() => me.do_send(Unanswered),
                Err(_) => {}
            }
            result
        })
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
