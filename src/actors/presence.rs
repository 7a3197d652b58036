//! The presence actor: who is on each board, with how many sessions, in which color.
//!
//! It turns session arrivals and departures into `presence.join`/`presence.leave`
//! *transitions* (first session in, last session out) and publishes them on the board's channel
//! through the broker, so every room hears them in one order. Each change carries a revision
//! (`rev`) that lets a room drop transitions a joining session's snapshot already contains.
//!
//! The presence itself is the backend's: `backend/embedded/presence.rs` in this process, or
//! `backend/redis/presence.rs` (whose scripts publish the transitions themselves).

use std::collections::HashMap;

use std::future::Future;

use actix::prelude::*;
use futures_util::future::{FutureExt, LocalBoxFuture, Shared};

use crate::actors::broker::{Broker, Publish};
use crate::actors::webhook::Hook;
use crate::backend::embedded::presence::MemoryPresence;
use crate::backend::presence::{Arrived, Local, OnlineUser};
use crate::backend::redis::RedisBackend;
use crate::backend::BackendError;
use crate::event::{BoardEvent, BoardKey, PresentUser, SessionId};
use crate::protocol::Status;
use crate::webhook::{self, now_ms};

/// Where presence lives: the two backends' presence side by side.
enum Store {
    /// In this process (embedded mode).
    Memory(MemoryPresence),
    /// In Redis, shared by every instance; scripts decide and publish transitions.
    Redis(Box<RedisBackend>),
}

/// Holds the presence of every board and publishes its transitions.
///
/// In Redis mode each request is one script. Requests of one board run one after the other, in
/// the order they came (a session's arrival always reaches Redis before its departure); those
/// of different boards run side by side, so that thousands of sessions arriving at once (the
/// users of a dead instance reconnecting) take as many round trips as the busiest board has
/// sessions, not as all of them together.
pub struct Presence {
    /// The presence data.
    store: Store,
    /// Where transitions are published in embedded mode.
    broker: Addr<Broker>,
    /// Where a board's joins and leaves go for webhooks (embedded mode, with `WEBHOOK_URL`).
    hooks: Option<Recipient<Hook>>,
    /// Per board with requests under way: the last one's number and its completion.
    lanes: HashMap<BoardKey, (u64, Lane)>,
    /// Numbers requests, to tell whose completion a lane holds.
    next_request: u64,
}

/// Resolves when a board's latest request has finished.
type Lane = Shared<LocalBoxFuture<'static, ()>>;

impl Presence {
    /// Runs `work` once every earlier request of `board` has finished.
    fn in_lane<T: 'static>(
        &mut self,
        board: &BoardKey,
        work: impl Future<Output = T> + 'static,
    ) -> ResponseActFuture<Self, T> {
        self.next_request += 1;
        let id = self.next_request;
        let before = self.lanes.get(board).map(|(_, lane)| lane.clone());
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        let lane: Lane = async move {
            let _ = finished.await;
        }
        .boxed_local()
        .shared();
        self.lanes.insert(board.clone(), (id, lane));
        let board = board.clone();
        let run = async move {
            if let Some(before) = before {
                before.await;
            }
            let out = work.await;
            let _ = done.send(());
            out
        };
        Box::pin(run.into_actor(self).map(move |out, presence, _| {
            // The last request of the board: nothing waits on the lane any more.
            if presence
                .lanes
                .get(&board)
                .is_some_and(|(last, _)| *last == id)
            {
                presence.lanes.remove(&board);
            }
            out
        }))
    }
}

impl Presence {
    /// A presence actor publishing through `broker`; over `redis` when given. In embedded
    /// mode, boards' joins and leaves also go to `hooks`.
    pub fn new(
        broker: Addr<Broker>,
        redis: Option<RedisBackend>,
        hooks: Option<Recipient<Hook>>,
    ) -> Self {
        let store = match redis {
            Some(redis) => Store::Redis(Box::new(redis)),
            None => Store::Memory(MemoryPresence::default()),
        };
        Presence {
            store,
            broker,
            hooks,
            lanes: HashMap::new(),
            next_request: 0,
        }
    }
}

impl Presence {
    /// Publishes an embedded-mode transition to the board's room, and a board's join or leave
    /// to the webhooks when they are on (never a workspace's: those are not board events).
    fn publish(&self, board: &BoardKey, event: BoardEvent) {
        if let (Some(hooks), false) = (&self.hooks, board.is_workspace()) {
            let entry = match &event {
                BoardEvent::Joined { user, .. } => Some(webhook::join_entry(user, now_ms())),
                BoardEvent::Left { user_id, .. } => Some(webhook::leave_entry(user_id, now_ms())),
                _ => None,
            };
            if let Some(entry) = entry {
                hooks.do_send(Hook {
                    board: board.clone(),
                    entry,
                });
            }
        }
        self.broker.do_send(Publish {
            board: board.clone(),
            event,
            delivered_locally: false,
        });
    }
}

fn log_failure<T>(result: Result<T, BackendError>, what: &str) {
    if let Err(e) = result {
        log::warn!("presence {what} not recorded: {e} (repaired when the backend is back)");
    }
}

impl Actor for Presence {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Rooms must never wait on a full mailbox: order between their requests matters.
        ctx.set_mailbox_capacity(0); // 0: unbounded
    }
}

/// Sessions opened on a board (a room's one, or a workspace's batch).
#[derive(Message)]
#[rtype(result = "Result<Arrived, BackendError>")]
pub struct Arrive {
    pub board: BoardKey,
    /// The new sessions; the answer's color is the first one's.
    pub sessions: Vec<Local>,
    /// Whether the answer lists who is present. Without it, the answer's `users` is empty and
    /// its `rev` is that of the board's last transition: what its asker must have heard of
    /// before its view includes these arrivals.
    pub listing: bool,
}

impl Handler<Arrive> for Presence {
    type Result = ResponseActFuture<Self, Result<Arrived, BackendError>>;

    fn handle(&mut self, msg: Arrive, _: &mut Self::Context) -> Self::Result {
        let result = match &mut self.store {
            Store::Redis(redis) => {
                let redis = redis.clone();
                let board = msg.board.clone();
                return self.in_lane(&board, async move {
                    redis
                        .presence_join(&msg.board, &msg.sessions, msg.listing)
                        .await
                });
            }
            Store::Memory(memory) => {
                let (arrived, joins) = memory.arrive(&msg.board, msg.sessions, msg.listing);
                for join in joins {
                    self.publish(&msg.board, join);
                }
                Ok(arrived)
            }
        };
        Box::pin(fut::ready(result))
    }
}

/// A session closed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Depart {
    pub board: BoardKey,
    /// The session that ended.
    pub session: SessionId,
    pub user_id: String,
}

impl Handler<Depart> for Presence {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Depart, _: &mut Self::Context) -> Self::Result {
        match &mut self.store {
            Store::Redis(redis) => {
                let redis = redis.clone();
                let board = msg.board.clone();
                self.in_lane(&board, async move {
                    log_failure(
                        redis.presence_leave(&msg.board, msg.session).await,
                        "departure",
                    )
                })
            }
            Store::Memory(memory) => {
                if let Some(left) = memory.depart(&msg.board, msg.session, &msg.user_id) {
                    self.publish(&msg.board, left);
                }
                Box::pin(fut::ready(()))
            }
        }
    }
}

/// A client's `presence.update`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetStatus {
    pub board: BoardKey,
    pub user_id: String,
    /// The new status.
    pub status: Status,
    /// The session that sent it; it gets no echo.
    pub origin: SessionId,
}

impl Handler<SetStatus> for Presence {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: SetStatus, _: &mut Self::Context) -> Self::Result {
        match &mut self.store {
            Store::Redis(redis) => {
                let redis = redis.clone();
                let board = msg.board.clone();
                self.in_lane(&board, async move {
                    let result = redis
                        .presence_status(&msg.board, &msg.user_id, msg.status, msg.origin)
                        .await;
                    log_failure(result, "status");
                })
            }
            Store::Memory(memory) => {
                let SetStatus {
                    board,
                    user_id,
                    status,
                    origin,
                } = msg;
                if let Some(change) = memory.set_status(&board, &user_id, status, origin) {
                    self.publish(&board, change);
                }
                Box::pin(fut::ready(()))
            }
        }
    }
}

/// Lists a board's present users (the HTTP API).
#[derive(Message)]
#[rtype(result = "Result<Vec<PresentUser>, BackendError>")]
pub struct ListPresence {
    pub board: BoardKey,
}

impl Handler<ListPresence> for Presence {
    type Result = ResponseFuture<Result<Vec<PresentUser>, BackendError>>;

    fn handle(&mut self, msg: ListPresence, _: &mut Self::Context) -> Self::Result {
        match &self.store {
            Store::Redis(redis) => {
                let redis = redis.clone();
                Box::pin(async move { redis.presence_list(&msg.board).await })
            }
            Store::Memory(memory) => {
                let users = memory.list(&msg.board);
                Box::pin(async move { Ok(users) })
            }
        }
    }
}

/// After the backend was out of reach: makes the shared presence hold exactly this instance's
/// sessions on a board, and answers the board's presence as it then is.
#[derive(Message)]
#[rtype(result = "Result<(u64, Vec<PresentUser>), BackendError>")]
pub struct SyncBoard {
    pub board: BoardKey,
    /// This instance's sessions on it.
    pub sessions: Vec<Local>,
}

impl Handler<SyncBoard> for Presence {
    type Result = ResponseActFuture<Self, Result<(u64, Vec<PresentUser>), BackendError>>;

    fn handle(&mut self, msg: SyncBoard, _: &mut Self::Context) -> Self::Result {
        match &self.store {
            Store::Redis(redis) => {
                let redis = redis.clone();
                let board = msg.board.clone();
                self.in_lane(&board, async move {
                    redis.presence_sync(&msg.board, &msg.sessions).await
                })
            }
            Store::Memory(memory) => Box::pin(fut::ready(Ok(memory.sync(&msg.board)))),
        }
    }
}

/// Lists who is online in a tenant, with the boards each is on (the HTTP API).
#[derive(Message)]
#[rtype(result = "Result<Vec<OnlineUser>, BackendError>")]
pub struct ListWorkspace {
    pub tenant: String,
}

impl Handler<ListWorkspace> for Presence {
    type Result = ResponseFuture<Result<Vec<OnlineUser>, BackendError>>;

    fn handle(&mut self, msg: ListWorkspace, _: &mut Self::Context) -> Self::Result {
        match &self.store {
            Store::Redis(redis) => {
                let redis = redis.clone();
                Box::pin(async move { redis.workspace_list(&msg.tenant).await })
            }
            Store::Memory(memory) => {
                let online = memory.workspace(&msg.tenant);
                Box::pin(async move { Ok(online) })
            }
        }
    }
}
