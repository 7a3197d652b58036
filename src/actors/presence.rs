//! The presence actor: who is on each board, with how many sessions, in which color.
//!
//! It turns session arrivals and departures into `presence.join`/`presence.leave`
//! *transitions* (first session in, last session out) and publishes them on the board's channel
//! through the broker, so every room hears them in one order. Each change carries a revision
//! (`rev`) that lets a room drop transitions a joining session's snapshot already contains.
//!
//! The presence itself is the backend's: `backend/embedded/presence.rs` in this process, or
//! `backend/redis/presence.rs` (whose scripts publish the transitions themselves).

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use actix::prelude::*;
use futures_util::future::{FutureExt, LocalBoxFuture, Shared};
use tokio::sync::oneshot;

use crate::actors::broker::{Broker, Publish};
use crate::actors::webhook::Hook;
use crate::backend::embedded::presence::MemoryPresence;
use crate::backend::presence::{color_of, Arrived, Local, OnlineUser};
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
/// sessions, not as all of them together. A room's arrival (or a departure) that comes while
/// the board's last request is a batch of arrivals (or departures) not yet started joins that
/// batch, up to [`BATCH`] requests, so that sessions coming or going at once cost one script
/// per board and batch; joining only the *last* request keeps every departure behind its
/// arrival.
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
    /// Per board, its latest batch of rooms' arrivals (Redis mode).
    arrivals: HashMap<BoardKey, Gathering<Asked>>,
    /// Per board, its latest batch of departures (Redis mode).
    departures: HashMap<BoardKey, Gathering<SessionId>>,
}

/// Resolves when a board's latest request has finished.
type Lane = Shared<LocalBoxFuture<'static, ()>>;

/// The most requests one script serves; past it, a new batch starts behind the full one.
const BATCH: usize = 500;

/// A board's batch of requests: the lane request that runs them, and what they carry until it
/// starts (`None` once it has taken them).
struct Gathering<T> {
    request: u64,
    items: Rc<RefCell<Option<Vec<T>>>>,
}

/// A room's arrival in a batch: its sessions, and where its answer goes.
type Asked = (Vec<Local>, oneshot::Sender<Result<Arrived, BackendError>>);

/// Adds `item` to the board's batch in `batches` when that batch is the board's last request
/// and has not started; gives it back otherwise.
fn gather<T>(
    batches: &HashMap<BoardKey, Gathering<T>>,
    lanes: &HashMap<BoardKey, (u64, Lane)>,
    board: &BoardKey,
    item: T,
) -> Result<(), T> {
    let Some(batch) = batches.get(board) else {
        return Err(item);
    };
    if lanes.get(board).map(|(last, _)| *last) != Some(batch.request) {
        return Err(item);
    }
    match batch.items.borrow_mut().as_mut() {
        Some(items) if items.len() < BATCH => {
            items.push(item);
            Ok(())
        }
        _ => Err(item),
    }
}

/// Once request `id` of `board` has finished, a batch of the board at or before it has started:
/// nothing may join it any more.
fn forget_started<T>(batches: &mut HashMap<BoardKey, Gathering<T>>, board: &BoardKey, id: u64) {
    if batches.get(board).is_some_and(|batch| batch.request <= id) {
        batches.remove(board);
    }
}

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
            forget_started(&mut presence.arrivals, &board, id);
            forget_started(&mut presence.departures, &board, id);
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
            arrivals: HashMap::new(),
            departures: HashMap::new(),
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
            events: vec![event],
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

    fn handle(&mut self, msg: Arrive, ctx: &mut Self::Context) -> Self::Result {
        let result = match &mut self.store {
            Store::Redis(redis) if msg.listing => {
                let redis = redis.clone();
                let (answer, answered) = oneshot::channel();
                if let Err(first) = gather(
                    &self.arrivals,
                    &self.lanes,
                    &msg.board,
                    (msg.sessions, answer),
                ) {
                    let items = Rc::new(RefCell::new(Some(vec![first])));
                    let taken = items.clone();
                    let board = msg.board.clone();
                    let work = self.in_lane(&msg.board, async move {
                        let batch = taken.borrow_mut().take().unwrap_or_default();
                        let sessions: Vec<Local> =
                            batch.iter().flat_map(|(s, _)| s.iter().cloned()).collect();
                        let mut result = Some(redis.presence_join(&board, &sessions, true).await);
                        let last = batch.len().saturating_sub(1);
                        for (n, (sessions, answer)) in batch.into_iter().enumerate() {
                            // The last answer takes the listing; the others copy it.
                            let all = if n == last {
                                result.take()
                            } else {
                                result.clone()
                            };
                            let Some(all) = all else { break };
                            let first = sessions.first().map(|s| &*s.user_id);
                            let _ = answer.send(all.map(|all| Arrived {
                                color: color_of(&all.users, first),
                                users: all.users,
                                rev: all.rev,
                            }));
                        }
                    });
                    ctx.spawn(work);
                    let request = self.next_request;
                    self.arrivals
                        .insert(msg.board, Gathering { request, items });
                }
                let answer = async move {
                    answered.await.unwrap_or_else(|_| {
                        Err(BackendError::unavailable_now("the presence batch ended"))
                    })
                };
                return Box::pin(answer.into_actor(self));
            }
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
    pub user_id: Arc<str>,
}

impl Handler<Depart> for Presence {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Depart, _: &mut Self::Context) -> Self::Result {
        match &mut self.store {
            Store::Redis(redis) => {
                let redis = redis.clone();
                let Err(first) = gather(&self.departures, &self.lanes, &msg.board, msg.session)
                else {
                    return Box::pin(fut::ready(()));
                };
                let items = Rc::new(RefCell::new(Some(vec![first])));
                let taken = items.clone();
                let board = msg.board.clone();
                let work = self.in_lane(&msg.board, async move {
                    let batch = taken.borrow_mut().take().unwrap_or_default();
                    if let Err(e) = redis.presence_leave(&board, &batch).await {
                        log::warn!(
                            "presence departure of {} sessions not recorded: {e} (repaired when \
                             the backend is back)",
                            batch.len()
                        );
                    }
                });
                let request = self.next_request;
                self.departures
                    .insert(msg.board, Gathering { request, items });
                work
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
