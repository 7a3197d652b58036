//! Board channels and user events: rooms subscribing, sessions listening for their user's
//! events (which cross Redis on the tenant's workspace channel), events published for every
//! instance, and what Redis pushes back.

use super::durable::unreachable;
use super::*;

/// A push from Redis: a pub/sub message or a lost connection.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Pushed(pub(super) ::redis::PushInfo);

impl Handler<Pushed> for Broker {
    type Result = ();

    fn handle(&mut self, Pushed(push): Pushed, ctx: &mut Self::Context) {
        match push.kind {
            // A cluster moved a sharded channel's slot to another node: the old node
            // unsubscribed us. A channel still wanted is heard again from its new node, and its
            // room catches up on what was said meanwhile (acks included).
            ::redis::PushKind::SUnsubscribe => {
                let channel = push.data.into_iter().next().and_then(bytes);
                if let Some(channel) = channel.and_then(|c| String::from_utf8(c).ok()) {
                    self.listen_again(channel, ctx);
                }
            }
            // A sharded channel's message (Redis Cluster) reads the same.
            ::redis::PushKind::Message | ::redis::PushKind::SMessage => {
                self.message(push);
                if let Some(dropped) = self.pushes.handled() {
                    log::warn!(
                        "dropped {dropped} redis messages past REDIS_PUSH_BACKLOG; every room resyncs"
                    );
                    self.resync_rooms();
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

impl Broker {
    /// Subscribes again to a channel the server dropped, if it is still wanted, then tells
    /// its room to catch up.
    fn listen_again(&mut self, channel: String, ctx: &mut Context<Self>) {
        let Some(wanted) = self.channels.get(&channel) else {
            return;
        };
        let Some(redis) = self.redis() else { return };
        let board = wanted.clone();
        log::info!("{channel} moved to another redis node: listening there");
        ctx.spawn(
            subscribe_channel(redis, channel.clone())
                .into_actor(self)
                .map(move |result, broker, ctx| match result {
                    Ok(()) => {
                        if let Some(room) = broker.rooms.get(&board) {
                            room.resync.do_send(Resync);
                        }
                    }
                    // The cluster is still settling: try again in a second.
                    Err(e) => {
                        log::warn!("{e}");
                        ctx.run_later(Duration::from_secs(1), move |broker, ctx| {
                            broker.listen_again(channel, ctx)
                        });
                    }
                }),
        );
    }

    /// A pub/sub message: delivered to the board's room, or a user event to the user's sessions.
    fn message(&mut self, push: ::redis::PushInfo) {
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
        let Some(board) = self.channels.get(&channel) else {
            return;
        };
        for event in decode_board_message(redis.instance(), &payload) {
            match event {
                BoardEvent::ToUser { user_id, frame } if board.is_workspace() => {
                    self.deliver_user(&board.tenant, &user_id, frame)
                }
                event => self.deliver(board, event),
            }
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

async fn subscribe_channel(redis: RedisBackend, channel: String) -> Result<(), BackendError> {
    let mut conn = redis.conn();
    conn.listen(&channel)
        .await
        .map_err(|e| BackendError::unavailable("cannot subscribe to a channel", e))
}

/// A room starts listening to its board; answered once it hears the board's events.
#[derive(Message)]
#[rtype(result = "Result<(), BackendError>")]
pub struct Subscribe {
    pub board: BoardKey,
    /// The room's id.
    pub room_id: u64,
    /// Where the board's events go.
    pub room: Recipient<BoardEvent>,
    /// Where catch-up requests go.
    pub resync: Recipient<Resync>,
}

impl Handler<Subscribe> for Broker {
    type Result = ResponseFuture<Result<(), BackendError>>;

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
                self.channels.insert(channel.clone(), msg.board.clone());
                Box::pin(subscribe_channel(redis, channel))
            }
        }
    }
}

/// Resolves once a subscriber hears its board's channel: true when it does.
pub type Subscription =
    futures_util::future::Shared<futures_util::future::BoxFuture<'static, bool>>;

/// Subscribes an actor (a board's room, a tenant's workspace) to the channel of `board`, as
/// the subscriber numbered `id` of that board.
pub fn subscribe<A>(
    broker: &Addr<Broker>,
    board: BoardKey,
    id: u64,
    ctx: &Context<A>,
) -> Subscription
where
    A: Actor<Context = Context<A>> + Handler<BoardEvent> + Handler<Resync>,
{
    use futures_util::FutureExt;
    let subscribe = broker.send(Subscribe {
        board,
        room_id: id,
        room: ctx.address().recipient(),
        resync: ctx.address().recipient(),
    });
    async move {
        match subscribe.await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                e.to_frame_error();
                false
            }
            Err(_) => false,
        }
    }
    .boxed()
    .shared()
}

/// A room stops listening.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
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

/// Events for every room of a board, on every instance.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish {
    pub board: BoardKey,
    /// What happened, in order.
    pub events: Vec<BoardEvent>,
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
                    for event in msg.events {
                        self.deliver(&msg.board, event);
                    }
                }
            }
            Some(_) => {
                // Ephemeral events are best effort: past the bound (Redis slower than the
                // rooms, or out of reach) they are dropped; the local sessions have them already,
                // and a dropped cursor move is superseded by the next.
                let room = self.publish_backlog.saturating_sub(self.outgoing.len());
                let dropped = msg.events.len().saturating_sub(room);
                if dropped > 0 {
                    crate::metrics::PUBLISH_DROPPED.add(dropped as u64);
                }
                for event in msg.events.into_iter().take(room) {
                    self.outgoing.push(Outgoing {
                        board: msg.board.clone(),
                        event,
                        from_here: msg.delivered_locally,
                    });
                }
                self.publish_outgoing(ctx);
            }
        }
    }
}

impl Broker {
    /// Sends what waits to be published as one batch, unless a batch is on its way already:
    /// the next goes when it is answered, so one round trip carries all that gathered meanwhile.
    fn publish_outgoing(&mut self, ctx: &mut Context<Self>) {
        if self.publishing || self.outgoing.is_empty() {
            return;
        }
        let Some(redis) = self.redis() else {
            self.outgoing.clear();
            return;
        };
        let batch = std::mem::take(&mut self.outgoing);
        self.publishing = true;
        ctx.spawn(
            async move {
                let _ = redis.publish_batch(&batch).await;
            }
            .into_actor(self)
            .map(|(), broker, ctx| {
                broker.publishing = false;
                broker.publish_outgoing(ctx);
            }),
        );
    }
}

/// A session starts listening for events sent to its user.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubscribeUser {
    /// The user's tenant.
    pub tenant: String,
    pub user_id: String,
    pub session: SessionId,
    pub out: Outlet,
}

impl Handler<SubscribeUser> for Broker {
    type Result = ();

    fn handle(&mut self, msg: SubscribeUser, _: &mut Self::Context) {
        let sessions = self
            .users
            .entry(user_key(&msg.tenant, &msg.user_id))
            .or_insert_with(|| Vec::with_capacity(1));
        match sessions.iter_mut().find(|(id, _)| *id == msg.session) {
            Some((_, out)) => *out = msg.out,
            None => sessions.push((msg.session, msg.out)),
        }
    }
}

/// A session stops listening for its user's events.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UnsubscribeUser {
    /// The user's tenant.
    pub tenant: String,
    pub user_id: String,
    pub session: SessionId,
}

impl Handler<UnsubscribeUser> for Broker {
    type Result = ();

    fn handle(&mut self, msg: UnsubscribeUser, _: &mut Self::Context) {
        let key = user_key(&msg.tenant, &msg.user_id);
        let Some(sessions) = self.users.get_mut(&key) else {
            return;
        };
        sessions.retain(|(id, _)| *id != msg.session);
        if sessions.is_empty() {
            self.users.remove(&key);
        }
    }
}

/// A frame for every session of a user, on any board and any instance.
#[derive(Message)]
#[rtype(result = "Result<(), BackendError>")]
pub struct PublishUser {
    /// The user's tenant.
    pub tenant: String,
    pub user_id: String,
    /// The encoded frame.
    pub frame: ByteString,
}

impl Handler<PublishUser> for Broker {
    type Result = ResponseFuture<Result<(), BackendError>>;

    fn handle(&mut self, msg: PublishUser, _: &mut Self::Context) -> Self::Result {
        // This instance's sessions of the user get it at once, whatever the state of Redis.
        self.deliver_user(&msg.tenant, &msg.user_id, msg.frame.clone());
        match self.redis() {
            None => Box::pin(async { Ok(()) }),
            Some(_) if !self.ready.load(Ordering::Relaxed) => {
                Box::pin(async { Err(unreachable()) })
            }
            Some(redis) => Box::pin(async move {
                let event = BoardEvent::ToUser {
                    user_id: msg.user_id,
                    frame: msg.frame,
                };
                // Marked as delivered here: this instance skips it when it comes back.
                redis
                    .publish(&BoardKey::workspace(msg.tenant), &event, true)
                    .await
            }),
        }
    }
}

/// An event from the HTTP API for every session of a board (a kick, an ephemeral event):
/// delivered to this instance's sessions at once, whatever the state of Redis, and published
/// for the others; answered `unavailable` when that could not be done.
#[derive(Message)]
#[rtype(result = "Result<(), BackendError>")]
pub struct Announce {
    pub board: BoardKey,
    pub event: BoardEvent,
}

impl Handler<Announce> for Broker {
    type Result = ResponseFuture<Result<(), BackendError>>;

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
