//! The broker actor: the one door between this instance's actors and the shared world.
//!
//! Rooms subscribe to their board's channel; presence and rooms publish on it; sessions append
//! durable operations and rooms read snapshots and replays through it; sessions listen on their
//! user's channel. This module is that interface, as the actor's messages, over the two
//! backends of [`crate::backend`]: the embedded one (one instance, boards in SQLite) and Redis
//! (any number of instances sharing one Redis).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytestring::ByteString;
use tokio::sync::oneshot;

use crate::actors::room::Outbound;
use crate::board::BoardLimits;
use crate::event::{BoardEvent, BoardKey, SessionId};
use crate::protocol::{ErrorCode, FrameError};
use crate::wire::WireFrame;

use crate::backend::embedded::memory::MemoryStore;
use crate::backend::embedded::sqlite::{Flushed, Store};
use crate::backend::embedded::{Embedded, Request};
use crate::backend::redis::{decode_board_message, RedisBackend, LEASE, LEASE_TICK};
pub use crate::backend::{Append, AppendCustom, GetCatchup};
use crate::backend::{Appended, Catchup};

/// Where shared state lives.
enum Backend {
    /// In this process, stored in SQLite (embedded mode).
    Embedded(Box<Embedded>),
    /// In Redis (scale-out mode).
    Redis(Box<RedisBackend>),
}

/// What a Redis channel this instance listens on is for.
enum Channel {
    /// A board's events.
    Board(BoardKey),
    /// A user's events.
    User(String, String),
}

/// A room as the broker knows it.
struct RoomEntry {
    /// The room's id; a stale unsubscribe of an older room is ignored.
    id: u64,
    /// Where the board's events go.
    events: Recipient<BoardEvent>,
    /// Told to catch up after the backend was out of reach.
    resync: Recipient<Resync>,
}

/// The broker actor.
pub struct Broker {
    /// Where durable state, sequence numbers, replay logs and presence live.
    backend: Backend,
    /// This instance's room per board.
    rooms: HashMap<BoardKey, RoomEntry>,
    /// This instance's sessions per (tenant, user), for user events.
    users: HashMap<(String, String), HashMap<SessionId, Recipient<Outbound>>>,
    /// Redis channels subscribed, by name.
    channels: HashMap<String, Channel>,
    /// Whether the backend answers (`/readyz`); shared with the HTTP layer.
    ready: Arc<AtomicBool>,
    /// When the backend last came back; dead instances are swept only a lease after it.
    ready_since: Option<Instant>,
    /// A liveness tick (reach Redis, sweep) is under way.
    ticking: bool,
    /// A lease renewal is under way.
    renewing: bool,
    /// The instance is stopping and has left the shared presence: no more liveness work.
    retired: bool,
    /// Redis's persistence setting was looked at (once, when first reached).
    durability_checked: bool,
}

impl Broker {
    /// Starts an embedded broker storing in `store`, whose boards are bounded by `limits`.
    pub fn start_embedded(store: Store, limits: BoardLimits) -> Addr<Broker> {
        Broker::create(|ctx| {
            let writer = store.start(ctx.address().recipient());
            let embedded = Embedded::new(MemoryStore::new(limits), writer);
            Broker::with_backend(Backend::Embedded(Box::new(embedded)), true)
        })
    }

    /// Starts a broker over Redis at `url`. The connection is made lazily and retried, so this
    /// succeeds while Redis is down; `/readyz` answers 503 until it is reached.
    pub fn start_redis(
        url: &str,
        prefix: String,
        limits: BoardLimits,
    ) -> Result<Addr<Broker>, ::redis::RedisError> {
        use ::redis::IntoConnectionInfo;
        let info = url.into_connection_info()?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(::redis::ProtocolVersion::RESP3);
        let client = ::redis::Client::open(info.set_redis_settings(settings))?;
        let instance = format!("{:016x}", rand::random::<u64>());
        let ctx = Context::new();
        let me = ctx.address();
        let config = ::redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(2))
            .set_automatic_resubscription()
            .set_push_sender(move |push: ::redis::PushInfo| {
                me.do_send(Pushed(push));
                Ok::<(), ::redis::aio::SendError>(())
            });
        // Leases are renewed on a connection of their own, never queued behind other work.
        let lease_config = ::redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ::redis::aio::ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        let lease_conn =
            ::redis::aio::ConnectionManager::new_lazy_with_config(client, lease_config)?;
        let backend = RedisBackend::new(conn, lease_conn, prefix, instance, limits);
        let broker = Broker::with_backend(Backend::Redis(Box::new(backend)), false);
        Ok(ctx.run(broker))
    }

    fn with_backend(backend: Backend, ready: bool) -> Self {
        Broker {
            backend,
            rooms: HashMap::new(),
            users: HashMap::new(),
            channels: HashMap::new(),
            ready: Arc::new(AtomicBool::new(ready)),
            ready_since: None,
            ticking: false,
            renewing: false,
            retired: false,
            durability_checked: false,
        }
    }

    /// The readiness flag, for `/readyz`.
    pub fn ready_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.ready)
    }

    fn deliver(&self, board: &BoardKey, event: BoardEvent) {
        if let Some(room) = self.rooms.get(board) {
            room.events.do_send(event);
        }
    }

    fn deliver_user(&self, tenant: String, user_id: String, frame: ByteString) {
        let Some(sessions) = self.users.get(&(tenant, user_id)) else {
            return;
        };
        let frame = WireFrame::from(frame);
        for out in sessions.values() {
            if let Err(SendError::Full(_)) = out.try_send(Outbound::Frame(frame.clone())) {
                // A session too slow to take it must not silently miss it.
                out.do_send(Outbound::Lagged);
            }
        }
    }

    fn redis(&self) -> Option<RedisBackend> {
        match &self.backend {
            Backend::Redis(r) => Some(RedisBackend::clone(r)),
            Backend::Embedded(_) => None,
        }
    }

    /// Stops listening on a Redis channel nothing here needs any more.
    fn leave_channel(&mut self, channel: String, ctx: &mut Context<Self>) {
        self.channels.remove(&channel);
        let Some(redis) = self.redis() else { return };
        ctx.spawn(
            async move {
                let _ = redis.conn().unsubscribe(&channel).await;
            }
            .into_actor(self),
        );
    }

    /// Tells every room to catch up: fill missed events and re-register its sessions.
    fn resync_rooms(&self) {
        for room in self.rooms.values() {
            room.resync.do_send(Resync);
        }
    }

    /// Renews this instance's lease, on a connection and a task of its own: a long sweep or a
    /// slow command never holds it up. A lease found missing (swept while this instance was
    /// paused, or lost by Redis) makes every room register its sessions again.
    fn renew_lease(&mut self, ctx: &mut Context<Self>) {
        let Some(redis) = self.redis() else { return };
        if self.renewing || self.retired {
            return;
        }
        self.renewing = true;
        let work = async move { redis.renew().await };
        ctx.spawn(work.into_actor(self).map(|result, broker, _| {
            broker.renewing = false;
            if let Ok(true) = result {
                if broker.ready.load(Ordering::Relaxed) {
                    log::info!("this instance's lease was missing: registering its sessions again");
                    broker.resync_rooms();
                }
            }
        }));
    }

    /// One liveness round: reach Redis, sweep dead instances.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        let Some(redis) = self.redis() else { return };
        if self.ticking || self.retired {
            return;
        }
        self.ticking = true;
        let was_ready = self.ready.load(Ordering::Relaxed);
        let sweep_allowed = self.ready_since.is_some_and(|t| t.elapsed() >= LEASE);
        let work = async move {
            if !redis.ping().await {
                return false;
            }
            if sweep_allowed {
                if let Err(e) = redis.sweep().await {
                    log::warn!("sweep failed: {}", e.message);
                }
            }
            true
        };
        ctx.spawn(work.into_actor(self).map(move |up, broker, ctx| {
            broker.ticking = false;
            broker.ready.store(up, Ordering::Relaxed);
            if !up {
                if was_ready {
                    log::warn!(
                        "redis is out of reach; durable events are refused until it is back"
                    );
                }
                broker.ready_since = None;
                return;
            }
            if broker.ready_since.is_none() {
                broker.ready_since = Some(Instant::now());
            }
            if !was_ready {
                log::info!("redis reached: catching up every room");
                broker.resync_rooms();
                if !broker.durability_checked {
                    broker.durability_checked = true;
                    if let Some(redis) = broker.redis() {
                        ctx.spawn(
                            async move { redis.warn_if_not_durable().await }.into_actor(broker),
                        );
                    }
                }
            }
        }));
    }
}

impl Actor for Broker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(0); // 0: unbounded
        if let Backend::Embedded(_) = self.backend {
            ctx.run_interval(crate::backend::embedded::IDLE_BOARD / 2, |broker, _| {
                let rooms = &broker.rooms;
                if let Backend::Embedded(embedded) = &mut broker.backend {
                    embedded.evict_idle(|board| rooms.contains_key(board));
                }
            });
        }
        if self.redis().is_some() {
            self.renew_lease(ctx);
            self.tick(ctx);
            ctx.run_interval(LEASE_TICK, |broker, ctx| {
                broker.renew_lease(ctx);
                broker.tick(ctx);
            });
        }
    }
}

/// Waits for an answer the embedded backend gives once its store committed.
async fn answer<T>(rx: oneshot::Receiver<Result<T, FrameError>>) -> Result<T, FrameError> {
    rx.await.unwrap_or_else(|_| {
        Err(FrameError::new(
            None,
            ErrorCode::Unavailable,
            "the storage stopped; retry",
        ))
    })
}

impl Handler<Flushed> for Broker {
    type Result = ();

    fn handle(&mut self, msg: Flushed, _: &mut Self::Context) {
        let rooms = &self.rooms;
        if let Backend::Embedded(embedded) = &mut self.backend {
            embedded.flushed(msg, |board, event| {
                if let Some(room) = rooms.get(board) {
                    room.events.do_send(event);
                }
            });
        }
    }
}

/// A room must catch up with the shared state: the backend was out of reach.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Resync;

/// A push from Redis: a pub/sub message or a lost connection.
#[derive(Message)]
#[rtype(result = "()")]
struct Pushed(::redis::PushInfo);

impl Handler<Pushed> for Broker {
    type Result = ();

    fn handle(&mut self, Pushed(push): Pushed, _: &mut Self::Context) {
        match push.kind {
            ::redis::PushKind::Message => {
                let mut data = push.data.into_iter();
                let (Some(channel), Some(payload)) = (data.next(), data.next()) else {
                    return;
                };
                let (Some(channel), Some(payload)) = (bytes(channel), bytes(payload)) else {
                    return;
                };
                let Ok(channel) = String::from_utf8(channel) else {
                    return;
                };
                let Some(redis) = self.redis() else { return };
                match self.channels.get(&channel) {
                    Some(Channel::Board(board)) => {
                        if let Some(event) = decode_board_message(redis.instance(), &payload) {
                            self.deliver(board, event);
                        }
                    }
                    Some(Channel::User(tenant, user)) => {
                        if let Ok(frame) = ByteString::try_from(payload) {
                            self.deliver_user(tenant.clone(), user.clone(), frame);
                        }
                    }
                    None => {}
                }
            }
            ::redis::PushKind::Disconnection => {
                if self.ready.swap(false, Ordering::Relaxed) {
                    log::warn!("lost the connection to redis");
                }
                self.ready_since = None;
            }
            _ => {}
        }
    }
}

fn bytes(v: ::redis::Value) -> Option<Vec<u8>> {
    match v {
        ::redis::Value::BulkString(b) => Some(b),
        ::redis::Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

async fn subscribe_channel(redis: RedisBackend, channel: String) -> Result<(), FrameError> {
    let mut conn = redis.conn();
    conn.subscribe(&channel).await.map_err(|e| {
        log::warn!("cannot subscribe to {channel}: {e}");
        FrameError::new(None, ErrorCode::Unavailable, "the backend is unavailable")
    })?;
    Ok(())
}

/// A room starts listening to its board; answered once it hears the board's events.
#[derive(Message)]
#[rtype(result = "Result<(), FrameError>")]
pub struct Subscribe {
    /// The board.
    pub board: BoardKey,
    /// The room's id.
    pub room_id: u64,
    /// Where the board's events go.
    pub room: Recipient<BoardEvent>,
    /// Where catch-up requests go.
    pub resync: Recipient<Resync>,
}

impl Handler<Subscribe> for Broker {
    type Result = ResponseFuture<Result<(), FrameError>>;

    fn handle(&mut self, msg: Subscribe, _: &mut Self::Context) -> Self::Result {
        let entry = RoomEntry {
            id: msg.room_id,
            events: msg.room,
            resync: msg.resync,
        };
        self.rooms.insert(msg.board.clone(), entry);
        match self.redis() {
            None => Box::pin(async { Ok(()) }),
            Some(redis) => {
                let channel = redis.board_channel(&msg.board);
                self.channels
                    .insert(channel.clone(), Channel::Board(msg.board.clone()));
                Box::pin(subscribe_channel(redis, channel))
            }
        }
    }
}

/// A room stops listening.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    /// The board.
    pub board: BoardKey,
    /// The room's id; a newer room of the same board stays subscribed.
    pub room_id: u64,
}

impl Handler<Unsubscribe> for Broker {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, ctx: &mut Self::Context) {
        if self
            .rooms
            .get(&msg.board)
            .is_none_or(|r| r.id != msg.room_id)
        {
            return;
        }
        self.rooms.remove(&msg.board);
        match &mut self.backend {
            // A room that stops frees its board's memory.
            Backend::Embedded(embedded) => embedded.evict(&msg.board),
            Backend::Redis(redis) => {
                let channel = redis.board_channel(&msg.board);
                self.leave_channel(channel, ctx);
            }
        }
    }
}

/// An event for every room of a board, on every instance.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish {
    /// The board.
    pub board: BoardKey,
    /// What happened.
    pub event: BoardEvent,
    /// The publishing room has delivered it to its own sessions already; only other
    /// instances need it.
    pub delivered_locally: bool,
}

impl Handler<Publish> for Broker {
    type Result = ();

    fn handle(&mut self, msg: Publish, ctx: &mut Self::Context) {
        match self.redis() {
            None => {
                if !msg.delivered_locally {
                    self.deliver(&msg.board, msg.event);
                }
            }
            Some(redis) => {
                // Ephemeral events are best effort while Redis is out of reach; the local
                // sessions have them already.
                ctx.spawn(
                    async move {
                        let _ = redis
                            .publish(&msg.board, &msg.event, msg.delivered_locally)
                            .await;
                    }
                    .into_actor(self),
                );
            }
        }
    }
}

/// The answer while Redis is known to be out of reach: refused at once, so that nothing waits
/// to be applied long after its sender was told to retry.
fn unreachable() -> FrameError {
    FrameError::new(
        None,
        ErrorCode::Unavailable,
        "the backend is out of reach; retry",
    )
}

impl Handler<Append> for Broker {
    type Result = ResponseActFuture<Self, Result<Appended, FrameError>>;

    fn handle(&mut self, msg: Append, _: &mut Self::Context) -> Self::Result {
        let redis = match &mut self.backend {
            Backend::Embedded(embedded) => {
                let (tx, rx) = oneshot::channel();
                embedded.request(Request::Append(msg, tx));
                return Box::pin(answer(rx).into_actor(self));
            }
            Backend::Redis(redis) => RedisBackend::clone(redis),
        };
        if !self.ready.load(Ordering::Relaxed) {
            return Box::pin(fut::ready(Err(unreachable())));
        }
        let work = async move {
            let appended = redis
                .append(&msg.board, msg.op, &msg.user_id, msg.ack, msg.key.as_ref())
                .await?;
            crate::metrics::DURABLE_EVENTS.inc();
            Ok(appended)
        };
        Box::pin(
            work.into_actor(self)
                .map(|result: Result<Appended, FrameError>, broker, _| {
                    // Redis did not answer in time: refuse what follows at once until a ping succeeds.
                    if matches!(&result, Err(e) if e.code == ErrorCode::Unavailable) {
                        broker.ready.store(false, Ordering::Relaxed);
                        broker.ready_since = None;
                    }
                    result
                }),
        )
    }
}

impl Handler<AppendCustom> for Broker {
    type Result = ResponseFuture<Result<u64, FrameError>>;

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
    type Result = ResponseFuture<Result<Catchup, FrameError>>;

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

/// The durable events after `after`, with their acks, for a room that missed some; `None`
/// when they are no longer retained, or the board's epoch is no longer `epoch`.
#[derive(Message)]
#[rtype(result = "Result<Option<Vec<BoardEvent>>, FrameError>")]
pub struct GetEvents {
    /// The board.
    pub board: BoardKey,
    /// The last seq the room delivered.
    pub after: u64,
    /// The epoch of that seq ("" when the room knows none).
    pub epoch: String,
}

impl Handler<GetEvents> for Broker {
    type Result = ResponseFuture<Result<Option<Vec<BoardEvent>>, FrameError>>;

    fn handle(&mut self, msg: GetEvents, _: &mut Self::Context) -> Self::Result {
        match self.redis() {
            // In memory every event reaches the room directly: there is never a gap.
            None => Box::pin(async { Ok(Some(vec![])) }),
            Some(redis) => {
                Box::pin(async move { redis.events_after(&msg.board, msg.after, &msg.epoch).await })
            }
        }
    }
}

/// A session starts listening for events sent to its user.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubscribeUser {
    /// The user's tenant.
    pub tenant: String,
    /// The user.
    pub user_id: String,
    /// The session.
    pub session: SessionId,
    /// Its mailbox.
    pub out: Recipient<Outbound>,
}

impl Handler<SubscribeUser> for Broker {
    type Result = ();

    fn handle(&mut self, msg: SubscribeUser, ctx: &mut Self::Context) {
        let key = (msg.tenant, msg.user_id);
        let sessions = self.users.entry(key.clone()).or_default();
        let first = sessions.is_empty();
        sessions.insert(msg.session, msg.out);
        if let (true, Some(redis)) = (first, self.redis()) {
            let channel = redis.user_channel(&key.0, &key.1);
            self.channels
                .insert(channel.clone(), Channel::User(key.0, key.1));
            ctx.spawn(
                async move {
                    let _ = subscribe_channel(redis, channel).await;
                }
                .into_actor(self),
            );
        }
    }
}

/// A session stops listening for its user's events.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UnsubscribeUser {
    /// The user's tenant.
    pub tenant: String,
    /// The user.
    pub user_id: String,
    /// The session.
    pub session: SessionId,
}

impl Handler<UnsubscribeUser> for Broker {
    type Result = ();

    fn handle(&mut self, msg: UnsubscribeUser, ctx: &mut Self::Context) {
        let key = (msg.tenant, msg.user_id);
        let Some(sessions) = self.users.get_mut(&key) else {
            return;
        };
        sessions.remove(&msg.session);
        if !sessions.is_empty() {
            return;
        }
        self.users.remove(&key);
        if let Some(redis) = self.redis() {
            self.leave_channel(redis.user_channel(&key.0, &key.1), ctx);
        }
    }
}

/// A frame for every session of a user, on any board and any instance.
#[derive(Message)]
#[rtype(result = "Result<(), FrameError>")]
pub struct PublishUser {
    /// The user's tenant.
    pub tenant: String,
    /// The user.
    pub user_id: String,
    /// The encoded frame.
    pub frame: ByteString,
}

impl Handler<PublishUser> for Broker {
    type Result = ResponseFuture<Result<(), FrameError>>;

    fn handle(&mut self, msg: PublishUser, _: &mut Self::Context) -> Self::Result {
        match self.redis() {
            None => {
                self.deliver_user(msg.tenant, msg.user_id, msg.frame);
                Box::pin(async { Ok(()) })
            }
            Some(_) if !self.ready.load(Ordering::Relaxed) => {
                // This instance's own sessions of the user still get it; the others cannot.
                self.deliver_user(msg.tenant, msg.user_id, msg.frame);
                Box::pin(async { Err(unreachable()) })
            }
            Some(redis) => Box::pin(async move {
                redis
                    .publish_user(&msg.tenant, &msg.user_id, &msg.frame)
                    .await
            }),
        }
    }
}

/// An event from the HTTP API for every session of a board (a kick, an ephemeral event):
/// delivered to this instance's sessions at once, whatever the state of Redis, and published
/// for the others; answered `unavailable` when that could not be done.
#[derive(Message)]
#[rtype(result = "Result<(), FrameError>")]
pub struct Announce {
    /// The board.
    pub board: BoardKey,
    /// The event.
    pub event: BoardEvent,
}

impl Handler<Announce> for Broker {
    type Result = ResponseFuture<Result<(), FrameError>>;

    fn handle(&mut self, msg: Announce, _: &mut Self::Context) -> Self::Result {
        self.deliver(&msg.board, msg.event.clone());
        match self.redis() {
            None => Box::pin(async { Ok(()) }),
            Some(_) if !self.ready.load(Ordering::Relaxed) => {
                Box::pin(async { Err(unreachable()) })
            }
            Some(redis) => Box::pin(async move {
                // Marked as delivered here: this instance skips it when it comes back.
                redis.publish(&msg.board, &msg.event, true).await
            }),
        }
    }
}

/// The Redis backend, for the presence actor to share; `None` in embedded mode.
#[derive(Message)]
#[rtype(result = "Option<RedisBackend>")]
pub struct GetRedis;

impl Handler<GetRedis> for Broker {
    type Result = MessageResult<GetRedis>;

    fn handle(&mut self, _: GetRedis, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.redis())
    }
}

/// The readiness flag, for `/readyz`.
#[derive(Message)]
#[rtype(result = "Arc<AtomicBool>")]
pub struct GetReady;

impl Handler<GetReady> for Broker {
    type Result = MessageResult<GetReady>;

    fn handle(&mut self, _: GetReady, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.ready_flag())
    }
}

/// The instance is stopping cleanly: its sessions' leaves are published now, in batches, and
/// its lease and records are removed, so that nobody has to sweep it. Liveness work stops.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

impl Handler<Retire> for Broker {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Retire, _: &mut Self::Context) -> Self::Result {
        self.retired = true;
        let redis = self.redis();
        Box::pin(
            async move {
                let Some(redis) = redis else { return };
                match redis.retire().await {
                    Ok(boards) => log::info!("left {boards} boards in the shared presence"),
                    Err(e) => log::warn!("could not leave the shared presence: {}", e.message),
                }
            }
            .into_actor(self),
        )
    }
}
