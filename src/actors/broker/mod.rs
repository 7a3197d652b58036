//! The broker actor: the one door between this instance's actors and the shared world.
//!
//! Rooms subscribe to their board's channel; presence and rooms publish on it; sessions append
//! durable operations and rooms read snapshots and replays through it; sessions listen for their
//! user's events. This module is that interface, as the actor's messages, over the two
//! backends of [`crate::backend`]: the embedded one (one instance, boards in SQLite) and Redis
//! (any number of instances sharing one Redis).
//!
//! This file holds the actor, its rooms and its liveness work; its messages are split by job:
//! board [`channels`] and user events, and [`durable`] operations.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytestring::ByteString;
use tokio::sync::oneshot;

use crate::actors::room::{Outbound, Outlet};
use crate::actors::webhook::Hook;
use crate::backend::BackendError;
use crate::board::BoardLimits;
use crate::event::{BoardEvent, BoardKey, SessionId};
use crate::wire::WireFrame;

use crate::backend::embedded::memory::MemoryStore;
use crate::backend::embedded::sqlite::{Flushed, Store};
use crate::backend::embedded::{Embedded, Request};
use crate::backend::redis::{
    decode_board_message, Conn, Outgoing, ReadCache, RedisBackend, LEASE, LEASE_TICK,
};
pub use crate::backend::{Append, AppendCustom, GetCatchup};

mod channels;
mod durable;

use self::channels::Pushed;
pub use self::channels::{
    subscribe, Announce, Publish, PublishUser, SubscribeUser, Subscription, Unsubscribe,
    UnsubscribeUser,
};
pub use self::durable::GetEvents;
use crate::backend::{Appended, Catchup, Filled};

/// Where shared state lives.
enum Backend {
    /// In this process, stored in SQLite (embedded mode).
    Embedded(Box<Embedded>),
    /// In Redis (scale-out mode).
    Redis(Box<RedisBackend>),
}

/// Redis pub/sub messages on their way to the broker, bounded (`REDIS_PUSH_BACKLOG`). Past the
/// bound, messages are dropped rather than queued without end, and once the broker has worked
/// through those it took, every room resyncs, as after an outage: it reads the durable events it
/// missed from the log and presence afresh. A dropped cursor move or typing state is not sent
/// again; the user's next one supersedes it.
pub(crate) struct PushBacklog {
    limit: usize,
    /// Messages handed to the broker and not yet handled.
    pending: AtomicUsize,
    /// Messages dropped since the last resync.
    dropped: AtomicUsize,
}

impl PushBacklog {
    fn new(limit: usize) -> Self {
        PushBacklog {
            limit,
            pending: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
        }
    }

    /// Whether one more message may be queued; counts it when it may, and the drop when not.
    fn admit(&self) -> bool {
        if self.pending.load(Ordering::Relaxed) >= self.limit {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.pending.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// One queued message was handled. When none is left and some were dropped meanwhile, how
    /// many: the rooms must resync.
    fn handled(&self) -> Option<usize> {
        let left = self
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            })
            .map_or(0, |before| before.saturating_sub(1));
        if left > 0 {
            return None;
        }
        Some(self.dropped.swap(0, Ordering::Relaxed)).filter(|&n| n > 0)
    }
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

/// A user's sessions on this instance, each with where its user events go.
type UserSessions = Vec<(SessionId, Outlet)>;

/// The key of a user's sessions in the broker's `users`: tenant and user id in one allocation,
/// the tenant's length first, so that no two pairs make the same key.
fn user_key(tenant: &str, user_id: &str) -> Box<str> {
    format!("{}:{tenant}{user_id}", tenant.len()).into_boxed_str()
}

/// The broker actor.
pub struct Broker {
    /// Where durable state, sequence numbers, replay logs and presence live.
    backend: Backend,
    /// This instance's room per board.
    rooms: HashMap<BoardKey, RoomEntry>,
    /// This instance's sessions per user ([`user_key`]), for user events: a few each at most
    /// (`MAX_SESSIONS_PER_USER`), so a list, not a map (one cost about 120 bytes more for
    /// every connection).
    users: HashMap<Box<str>, UserSessions>,
    /// Redis channels subscribed, by name, with the board (or workspace) each is for. User
    /// events cross on their tenant's workspace channel: no channel per user.
    channels: HashMap<String, BoardKey>,
    /// Whether the backend answers (`/readyz`); shared with the HTTP layer.
    ready: Arc<AtomicBool>,
    /// When the backend last came back; dead instances are swept only a lease after it.
    ready_since: Option<Instant>,
    /// A liveness tick (reach Redis, sweep) is under way.
    ticking: bool,
    /// A lease renewal is under way.
    renewing: bool,
    /// A renewal has answered once: before it, a missing lease is only the first one.
    leased: bool,
    /// The instance is stopping and has left the shared presence: no more liveness work.
    retired: bool,
    /// Redis's persistence setting was looked at (once, when first reached).
    durability_checked: bool,
    /// Redis messages waiting in this actor's mailbox, bounded.
    pushes: Arc<PushBacklog>,
    /// Ephemeral events waiting to be published, at most `publish_backlog`.
    outgoing: Vec<Outgoing>,
    publish_backlog: usize,
    /// A batch of `outgoing` is on its way to Redis; the next waits for it, keeping order.
    publishing: bool,
    /// Where stored durable events go for webhooks (embedded mode, with `WEBHOOK_URL`).
    hooks: Option<Recipient<Hook>>,
    /// Redis mode: per board with a batch of durable operations in flight, those waiting for
    /// the next batch, at most `LANE_BOUND`.
    lanes: HashMap<BoardKey, durable::Lane>,
    /// Redis mode: per board, what this instance's last commit left of its items and cells,
    /// for at most `CACHED_BOARDS` boards; taken out while a batch of the board is in flight.
    read_caches: HashMap<BoardKey, ReadCache>,
}

impl Broker {
    /// Starts an embedded broker storing in `store`, whose boards are bounded by `limits`;
    /// stored durable events also go to `hooks`.
    pub fn start_embedded(
        store: Store,
        limits: BoardLimits,
        hooks: Option<Recipient<Hook>>,
    ) -> Addr<Broker> {
        Broker::create(|ctx| {
            let writer = store.start(ctx.address().recipient());
            let embedded = Embedded::new(MemoryStore::new(limits), writer);
            let mut broker = Broker::with_backend(Backend::Embedded(Box::new(embedded)), true);
            broker.hooks = hooks;
            broker
        })
    }

    /// Starts a broker over Redis at `url` (with `cluster`, a Redis Cluster whose seed nodes
    /// `url` lists, separated by commas). A single Redis is connected lazily and retried, so
    /// this succeeds while it is down and `/readyz` answers 503 until it is reached; a
    /// cluster's nodes and slots must be learnt first, so this waits until one node answers.
    /// With `hook_cap` above 0, board events also go to webhook outboxes of that bound.
    pub async fn start_redis(
        url: &str,
        cluster: bool,
        prefix: String,
        limits: BoardLimits,
        backlogs: (usize, usize),
        hook_cap: usize,
    ) -> Result<Addr<Broker>, ::redis::RedisError> {
        let (push_backlog, publish_backlog) = backlogs;
        let instance = format!("{:016x}", rand::random::<u64>());
        let ctx = Context::new();
        let me = ctx.address();
        let pushes = Arc::new(PushBacklog::new(push_backlog));
        let backlog = Arc::clone(&pushes);
        let push_sender = move |push: ::redis::PushInfo| {
            // A disconnection always passes: it changes readiness.
            let message = matches!(
                push.kind,
                ::redis::PushKind::Message | ::redis::PushKind::SMessage
            );
            if !message || backlog.admit() {
                me.do_send(Pushed(push));
            }
            Ok::<(), ::redis::aio::SendError>(())
        };
        let (conn, lease_conn) = if cluster {
            connect_cluster(url, push_sender).await?
        } else {
            connect_single(url, push_sender)?
        };
        let backend = RedisBackend::new(conn, lease_conn, prefix, instance, limits, hook_cap);
        let mut broker = Broker::with_backend(Backend::Redis(Box::new(backend)), false);
        broker.pushes = pushes;
        broker.publish_backlog = publish_backlog;
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
            leased: false,
            retired: false,
            durability_checked: false,
            pushes: Arc::new(PushBacklog::new(usize::MAX)),
            outgoing: Vec::new(),
            publish_backlog: usize::MAX,
            publishing: false,
            hooks: None,
            lanes: HashMap::new(),
            read_caches: HashMap::new(),
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

    fn deliver_user(&self, tenant: &str, user_id: &str, frame: ByteString) {
        let Some(sessions) = self.users.get(&user_key(tenant, user_id)) else {
            return;
        };
        let frame = WireFrame::from(frame);
        for (_, out) in sessions {
            if let Err(SendError::Full(_)) = out.try_send(Outbound::Aside(frame.clone())) {
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
        // A stopping instance's connection goes with it: unsubscribing each of its channels
        // would only queue commands in front of its leaving the shared presence.
        if self.retired {
            return;
        }
        let Some(redis) = self.redis() else { return };
        ctx.spawn(
            async move {
                let _ = redis.conn().unlisten(&channel).await;
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
    /// paused, or lost by Redis) makes every room register its sessions again; not at the first
    /// renewal, which always finds none (and a session registered before it was never swept:
    /// a sweep only purges instances whose lease it saw).
    fn renew_lease(&mut self, ctx: &mut Context<Self>) {
        let Some(redis) = self.redis() else { return };
        if self.renewing || self.retired {
            return;
        }
        self.renewing = true;
        let work = async move { redis.renew().await };
        ctx.spawn(work.into_actor(self).map(|result, broker, _| {
            broker.renewing = false;
            let first = !broker.leased;
            broker.leased |= result.is_ok();
            if let Ok(true) = result {
                if !first && broker.ready.load(Ordering::Relaxed) {
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
                    log::warn!("sweep failed: {e}");
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
                let instance = broker.redis().map(|r| r.instance().to_string());
                log::info!(
                    "redis reached (this is instance {}): catching up every room",
                    instance.unwrap_or_default()
                );
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

/// A room must catch up with the shared state: the backend was out of reach.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Resync;

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
        if let Some(redis) = &redis {
            redis.stop_registering();
        }
        Box::pin(
            async move {
                let Some(redis) = redis else { return };
                match redis.retire().await {
                    Ok(boards) => {
                        log::info!("left {boards} boards and workspaces in the shared presence")
                    }
                    Err(e) => log::warn!("could not leave the shared presence: {e} ({e:?})"),
                }
            }
            .into_actor(self),
        )
    }
}

/// Connections to one Redis: commands and pub/sub, and one for leases.
fn connect_single(
    url: &str,
    push_sender: impl ::redis::aio::AsyncPushSender,
) -> Result<(Conn, Conn), ::redis::RedisError> {
    use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
    use ::redis::IntoConnectionInfo;
    let info = url.into_connection_info()?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(::redis::ProtocolVersion::RESP3);
    let client = ::redis::Client::open(info.set_redis_settings(settings))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(100))
        .set_max_delay(Duration::from_secs(2))
        .set_automatic_resubscription()
        .set_push_sender(push_sender);
    // Leases are renewed on a connection of their own, never queued behind other work.
    let lease_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(1)))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(1));
    let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
    let lease_conn = ConnectionManager::new_lazy_with_config(client, lease_config)?;
    Ok((Conn::Single(conn), Conn::Single(lease_conn)))
}

/// Connections to a Redis Cluster whose seed nodes `urls` lists (commas between): commands and
/// sharded pub/sub, and one for leases. Waits until the cluster's slots are known, trying
/// again every second.
async fn connect_cluster(
    urls: &str,
    push_sender: impl ::redis::aio::AsyncPushSender,
) -> Result<(Conn, Conn), ::redis::RedisError> {
    use ::redis::cluster::ClusterClientBuilder;
    let nodes: Vec<String> = urls.split(',').map(|u| u.trim().to_string()).collect();
    let builder = |nodes: Vec<String>| {
        ClusterClientBuilder::new(nodes)
            .use_protocol(::redis::ProtocolVersion::RESP3)
            .connection_timeout(Duration::from_secs(1))
            .response_timeout(Duration::from_secs(2))
            .retries(2)
            .min_retry_wait(100)
            .max_retry_wait(1000)
    };
    let client = builder(nodes.clone()).push_sender(push_sender).build()?;
    let lease_client = builder(nodes).build()?;
    let mut tries = 0u32;
    loop {
        let connected = async {
            let conn = client.get_async_connection().await?;
            let lease_conn = lease_client.get_async_connection().await?;
            Ok::<_, ::redis::RedisError>((conn, lease_conn))
        };
        match connected.await {
            Ok((conn, lease_conn)) => return Ok((Conn::Cluster(conn), Conn::Cluster(lease_conn))),
            Err(e) if e.kind() == ::redis::ErrorKind::InvalidClientConfig => return Err(e),
            Err(e) => {
                if tries.is_multiple_of(10) {
                    log::warn!("the redis cluster is out of reach, trying again: {e}");
                }
                tries += 1;
                actix::clock::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
