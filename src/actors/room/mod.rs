//! The room actor: one per board on this instance, alive while it has sessions.
//!
//! It holds the board's local sessions, fans every event out to them (serialized once, the
//! same bytes for all), throttles cursors, times out typing, acks durable events in `seq`
//! order, and answers a joining session with its snapshot or resume before anything else.
//!
//! Delivery never blocks on a slow session: frames go with `try_send` into the session's
//! bounded mailbox. When it is full, a cursor frame is kept aside (only the newest per user)
//! and retried; any other frame marks the session *lagged*: it is told once, gets nothing more,
//! and closes with 4009 so that its client resumes. That part is [`delivery`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytestring::ByteString;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use serde_json::json;

use crate::actors::broker::{
    Broker, GetCatchup, GetEvents, Publish, Resync, Subscribe, Unsubscribe,
};
use crate::actors::presence::{Arrive, Depart, Presence, SyncBoard};
use crate::actors::registry::Registry;
use crate::backend::presence::Arrived;
use crate::backend::Catchup;
use crate::event::{AckTo, BoardEvent, BoardKey, PresenceEntry, PresentUser, SessionId, UserInfo};
use crate::frames;
use crate::limits::{Offer, Throttle};
use crate::protocol::{close, ErrorCode, FrameError, Point};
use crate::wire::WireFrame;

mod delivery;
mod sequencer;

pub use self::delivery::Outbound;
use self::delivery::{keep_aside, Member, Order, SlowCursors};
use self::sequencer::{Sequenced, Sequencer};

/// How long a `typing.start` holds before the server sends `typing.stop` itself.
pub const TYPING_TIMEOUT: Duration = Duration::from_secs(5);
/// How often cursor frames kept aside for full mailboxes are retried.
const SLOW_RETRY: Duration = Duration::from_millis(50);
/// How often a session's queue (its snapshot or replay, then what came meanwhile) is moved
/// into its mailbox while the mailbox is full: often enough that a client reading at full
/// speed is never waiting on it.
const DRAIN_RETRY: Duration = Duration::from_millis(5);

static NEXT_ROOM_ID: AtomicU64 = AtomicU64::new(1);

/// Settings every room of an instance shares.
#[derive(Clone, Copy, Debug)]
pub struct RoomSettings {
    /// Frames a joining session may hold back before it counts as slow.
    pub backlog_bound: usize,
    /// Other instances exist (Redis mode): local events are also published for them.
    pub shared: bool,
}

/// Per-user cursor state.
#[derive(Default)]
struct Cursor {
    /// Paces deliveries at one per 50 ms, keeping the newest.
    throttle: Throttle<(SessionId, Option<Point>)>,
    /// Last known position, for snapshots.
    last: Option<Point>,
    /// A flush of the throttle is scheduled.
    flush_scheduled: bool,
}

/// A user typing in a cell.
struct Typing {
    /// The session that started it, which is not told of the stop; `None` when remote.
    origin: Option<SessionId>,
    /// The timer that sends `typing.stop` after [`TYPING_TIMEOUT`].
    timer: SpawnHandle,
}

/// The room actor. See the module documentation.
pub struct Room {
    /// The board.
    key: BoardKey,
    /// Distinguishes this room from a later one of the same board.
    id: u64,
    /// Where the room is found; told when the room empties.
    registry: Arc<Registry>,
    /// Presence of every board.
    presence: Addr<Presence>,
    /// The door to the shared world.
    broker: Addr<Broker>,
    /// Local sessions.
    members: HashMap<SessionId, Member>,
    /// Joins this room has handled, compared with the registry's count before stopping.
    joins_seen: u64,
    /// Cursor state per user.
    cursors: HashMap<String, Cursor>,
    /// Who types, per user.
    typing: HashMap<String, Typing>,
    /// Cursor frames kept aside for full mailboxes: per session, the newest per user.
    slow_cursors: SlowCursors,
    /// Members whose queue waits for room in their mailbox.
    draining: HashSet<SessionId>,
    /// A retry of `slow_cursors` and `draining` is scheduled.
    retry_scheduled: bool,
    /// Durable events in `seq` order.
    sequencer: Sequencer,
    /// The board's epoch the sequencer's seq belongs to ("" until one is seen).
    epoch: String,
    /// Present users as this room last heard, to tell its sessions what changed while the
    /// backend was out of reach. Kept only with a shared backend (Redis): the embedded one is
    /// never out of reach.
    present: HashMap<String, PresentUser>,
    /// Resolves once the room hears its board's channel; catch-ups wait for it so that no
    /// event falls between a snapshot and the live stream.
    subscribed: Option<Shared<BoxFuture<'static, bool>>>,
    /// Settings shared by the instance's rooms.
    settings: RoomSettings,
}

impl Room {
    /// A room for `key`.
    pub fn new(
        key: BoardKey,
        registry: Arc<Registry>,
        presence: Addr<Presence>,
        broker: Addr<Broker>,
        settings: RoomSettings,
    ) -> Self {
        Room {
            key,
            id: NEXT_ROOM_ID.fetch_add(1, Ordering::Relaxed),
            registry,
            presence,
            broker,
            members: HashMap::new(),
            joins_seen: 0,
            cursors: HashMap::new(),
            typing: HashMap::new(),
            slow_cursors: HashMap::new(),
            draining: HashSet::new(),
            retry_scheduled: false,
            sequencer: Sequencer::default(),
            epoch: String::new(),
            present: HashMap::new(),
            subscribed: None,
            settings,
        }
    }

    /// This room's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Sends `frame` to one member; `cursor_of` names the user when it is a droppable cursor
    /// frame.
    fn send(
        &mut self,
        sid: SessionId,
        frame: WireFrame,
        order: Order,
        cursor_of: Option<&str>,
        ctx: &mut Context<Self>,
    ) {
        let Some(member) = self.members.get_mut(&sid) else {
            return;
        };
        let delivery = member.deliver(
            frame,
            order,
            cursor_of.is_some(),
            self.settings.backlog_bound,
        );
        keep_aside(&mut self.slow_cursors, sid, member, delivery, cursor_of);
        self.schedule_retry(ctx);
    }

    /// Sends `frame` to every member but `except`: the same bytes for all.
    fn fan_out(
        &mut self,
        frame: &ByteString,
        order: Order,
        except: Option<SessionId>,
        cursor_of: Option<&str>,
        ctx: &mut Context<Self>,
    ) {
        let bound = self.settings.backlog_bound;
        let frame = WireFrame::from(frame.clone());
        for (sid, member) in &mut self.members {
            if Some(*sid) == except {
                continue;
            }
            let delivery = member.deliver(frame.clone(), order, cursor_of.is_some(), bound);
            keep_aside(&mut self.slow_cursors, *sid, member, delivery, cursor_of);
        }
        self.schedule_retry(ctx);
    }

    /// Drains the queues of members that wait, and then retries the cursor frames kept
    /// aside, after [`DRAIN_RETRY`] when a queue waits and [`SLOW_RETRY`] otherwise.
    fn schedule_retry(&mut self, ctx: &mut Context<Self>) {
        if self.retry_scheduled || (self.slow_cursors.is_empty() && self.draining.is_empty()) {
            return;
        }
        self.retry_scheduled = true;
        let wait = if self.draining.is_empty() {
            SLOW_RETRY
        } else {
            DRAIN_RETRY
        };
        ctx.run_later(wait, |room, ctx| {
            room.retry_scheduled = false;
            for sid in std::mem::take(&mut room.draining) {
                room.drain(sid);
            }
            let pending = std::mem::take(&mut room.slow_cursors);
            for (sid, frames) in pending {
                for (user, frame) in frames {
                    room.send(sid, frame, Order::None, Some(&user), ctx);
                }
            }
            room.schedule_retry(ctx);
        });
    }

    /// Moves what a member's queue holds into its mailbox, as far as there is room.
    fn drain(&mut self, sid: SessionId) {
        if self.members.get_mut(&sid).is_some_and(Member::drain) {
            self.draining.insert(sid);
        }
    }

    /// Delivers a cursor move locally and to other instances.
    fn emit_cursor(
        &mut self,
        user_id: &str,
        origin: SessionId,
        position: Option<Point>,
        ctx: &mut Context<Self>,
    ) {
        let frame = frames::cursor_move(user_id, position);
        self.fan_out(&frame, Order::None, Some(origin), Some(user_id), ctx);
        self.publish(BoardEvent::Cursor {
            user_id: user_id.to_string(),
            position,
            origin,
        });
    }

    /// Publishes an event this room has delivered to its own sessions, for other instances;
    /// with none (embedded mode) there is nothing to do.
    fn publish(&self, event: BoardEvent) {
        if !self.settings.shared {
            return;
        }
        self.broker.do_send(Publish {
            board: self.key.clone(),
            event,
            delivered_locally: true,
        });
    }

    fn flush_cursor(&mut self, user_id: String, ctx: &mut Context<Self>) {
        let Some(cursor) = self.cursors.get_mut(&user_id) else {
            return;
        };
        cursor.flush_scheduled = false;
        let now = Instant::now();
        if let Some((origin, position)) = cursor.throttle.flush(now) {
            self.emit_cursor(&user_id, origin, position, ctx);
        } else if let Some(due) = cursor.throttle.due() {
            // The timer fired a hair before the interval ended: try again then, so the held
            // move is never stranded.
            cursor.flush_scheduled = true;
            let wait = due.saturating_duration_since(now);
            ctx.run_later(wait, move |room, ctx| room.flush_cursor(user_id, ctx));
        }
    }

    fn typing_started(
        &mut self,
        user_id: &str,
        item_id: &str,
        column_id: &str,
        origin: Option<SessionId>,
        ctx: &mut Context<Self>,
    ) {
        if let Some(old) = self.typing.remove(user_id) {
            ctx.cancel_future(old.timer);
        }
        let user = user_id.to_string();
        let timer = ctx.run_later(TYPING_TIMEOUT, move |room, ctx| {
            if let Some(typing) = room.typing.remove(&user) {
                let frame = frames::typing_stop(&user);
                room.fan_out(&frame, Order::None, typing.origin, None, ctx);
            }
        });
        self.typing
            .insert(user_id.to_string(), Typing { origin, timer });
        let frame = frames::typing_start(user_id, item_id, column_id);
        self.fan_out(&frame, Order::None, origin, None, ctx);
    }

    /// Ends a user's typing, if any, telling everyone but `except`.
    fn typing_stopped(
        &mut self,
        user_id: &str,
        except: Option<SessionId>,
        ctx: &mut Context<Self>,
    ) {
        if let Some(typing) = self.typing.remove(user_id) {
            ctx.cancel_future(typing.timer);
            let frame = frames::typing_stop(user_id);
            self.fan_out(&frame, Order::None, except, None, ctx);
        }
    }

    /// Sends the joining session its first frame, then what it held back meanwhile.
    fn finish_join(
        &mut self,
        sid: SessionId,
        arrived: Arrived,
        catchup: Catchup,
        ctx: &mut Context<Self>,
    ) {
        self.see_epoch(catchup.epoch(), Some(sid));
        let Some(member) = self.members.get_mut(&sid) else {
            return;
        };
        let users: Vec<PresenceEntry<'_>> = arrived
            .users
            .iter()
            .map(|user: &PresentUser| PresenceEntry {
                user,
                cursor: self.cursors.get(&user.user_id).and_then(|c| c.last),
            })
            .collect();
        let me =
            json!({"userId": member.user_id, "sessionId": sid.to_string(), "color": arrived.color});
        let seq = catchup.seq();
        self.sequencer.know(seq);
        if self.settings.shared {
            for user in &arrived.users {
                self.present.insert(user.user_id.clone(), user.clone());
            }
        }
        let mut first = vec![];
        match catchup {
            Catchup::Snapshot {
                seq,
                items,
                values,
                resync,
                epoch,
            } => first.push(frames::snapshot(&frames::Snapshot {
                board: &self.key.board,
                seq,
                epoch: &epoch,
                me: &me,
                users: &users,
                items: &items,
                values: &values,
                resync,
            })),
            Catchup::Replay {
                from,
                to,
                frames,
                epoch,
            } => {
                first.push(frames::resumed(
                    &self.key.board,
                    &epoch,
                    &me,
                    &users,
                    (from, to),
                ));
                first.extend(frames);
            }
        }
        member.rev_floor = arrived.rev;
        member.seq_floor = seq;
        // The first frames go in front of what arrived meanwhile; all of it reaches the
        // session at the pace it reads (a replay may be far larger than its mailbox).
        let queue = member.queue.get_or_insert_with(VecDeque::new);
        for frame in first.into_iter().rev() {
            queue.push_front((Order::None, WireFrame::from(frame)));
        }
        member.ready = true;
        self.drain(sid);
        self.schedule_retry(ctx);
    }

    /// Takes note of the board's epoch. A new one means the store lost the board (and its
    /// `seq` started again): every session but `except` is closed with 1012 so that its client
    /// resumes and, its epoch being old, gets a snapshot with `resync`.
    fn see_epoch(&mut self, epoch: &str, except: Option<SessionId>) {
        if epoch.is_empty() || epoch == self.epoch {
            return;
        }
        if !self.epoch.is_empty() {
            log::warn!(
                "{}: the board's epoch changed (its store lost it): sessions resync",
                self.key
            );
            for (sid, member) in &mut self.members {
                if Some(*sid) != except && !member.lagged {
                    member.lagged = true;
                    member.queue = None;
                    member
                        .out
                        .do_send(Outbound::Close(close::RESTARTING, "board reset".into()));
                }
            }
            self.sequencer.forget();
        }
        self.epoch = epoch.to_string();
    }

    /// Takes a durable event in `seq` order: duplicates are dropped, and an event past a gap
    /// waits while the gap is filled from the log.
    fn on_durable(
        &mut self,
        seq: u64,
        frame: ByteString,
        ack: Option<AckTo>,
        epoch: &str,
        ctx: &mut Context<Self>,
    ) {
        self.see_epoch(epoch, None);
        let (ready, gap) = self.sequencer.offer(seq, frame, ack);
        self.deliver_all(ready, ctx);
        if gap {
            self.fill_gap(ctx);
        }
    }

    fn deliver_all(&mut self, ready: Vec<Sequenced>, ctx: &mut Context<Self>) {
        for (seq, frame, ack) in ready {
            self.deliver_durable(seq, frame, ack, ctx);
        }
    }

    fn deliver_durable(
        &mut self,
        seq: u64,
        frame: ByteString,
        ack: Option<AckTo>,
        ctx: &mut Context<Self>,
    ) {
        let Some(ack) = ack else {
            self.fan_out(&frame, Order::Seq(seq), None, None, ctx);
            return;
        };
        self.fan_out(&frame, Order::Seq(seq), Some(ack.session), None, ctx);
        // Never filtered: an op sent before the snapshot arrived is in the snapshot, and its
        // sender still needs the ack.
        self.send(
            ack.session,
            frames::ack(&ack.id, seq, ack.version).into(),
            Order::None,
            None,
            ctx,
        );
    }

    /// Reads the events after the last delivered one from the log and delivers them.
    fn fill_gap(&mut self, ctx: &mut Context<Self>) {
        let Some(after) = self.sequencer.fill_from() else {
            return;
        };
        let request = self.broker.send(GetEvents {
            board: self.key.clone(),
            after,
            epoch: self.epoch.clone(),
        });
        ctx.spawn(request.into_actor(self).map(|result, room, ctx| {
            room.sequencer.fill_done();
            match result {
                Ok(Ok(Some(events))) => {
                    let events = events.into_iter().filter_map(|event| match event {
                        BoardEvent::Durable {
                            seq, frame, ack, ..
                        } => Some((seq, frame, ack)),
                        _ => None,
                    });
                    let (ready, gap) = room.sequencer.filled(events);
                    room.deliver_all(ready, ctx);
                    if gap {
                        room.fill_gap(ctx);
                    }
                }
                Ok(Ok(None)) => {
                    // The missed events are gone from the log: every session must resync.
                    log::warn!(
                        "{}: missed events are no longer retained; sessions resync",
                        room.key
                    );
                    room.members.values_mut().for_each(Member::lag);
                    room.sequencer.forget();
                    room.epoch.clear();
                }
                // The backend is out of reach; the next resync tries again.
                _ => {}
            }
        }));
    }

    /// Tells local sessions how presence changed while the room could not hear it.
    fn apply_presence(&mut self, rev: u64, users: Vec<PresentUser>, ctx: &mut Context<Self>) {
        let now: HashMap<String, PresentUser> =
            users.into_iter().map(|u| (u.user_id.clone(), u)).collect();
        let gone: Vec<String> = self
            .present
            .keys()
            .filter(|u| !now.contains_key(*u))
            .cloned()
            .collect();
        for user_id in gone {
            self.typing_stopped(&user_id, None, ctx);
            self.cursors.remove(&user_id);
            let frame = frames::presence_leave(&user_id);
            self.fan_out(&frame, Order::None, None, None, ctx);
        }
        for (user_id, user) in &now {
            match self.present.get(user_id) {
                None => {
                    let frame = frames::presence_join(user);
                    self.fan_out(&frame, Order::None, None, None, ctx);
                }
                Some(before) if before.status != user.status => {
                    let frame = frames::presence_update(user_id, user.status);
                    self.fan_out(&frame, Order::None, None, None, ctx);
                }
                _ => {}
            }
        }
        self.present = now;
        for member in self.members.values_mut() {
            member.rev_floor = member.rev_floor.max(rev);
        }
    }

    fn on_event(&mut self, event: BoardEvent, ctx: &mut Context<Self>) {
        match event {
            BoardEvent::Joined { rev, user } => {
                if self.settings.shared {
                    self.present.insert(user.user_id.clone(), user.clone());
                }
                let frame = frames::presence_join(&user);
                self.fan_out(&frame, Order::Rev(rev), None, None, ctx);
            }
            BoardEvent::Left { rev, user_id } => {
                self.present.remove(&user_id);
                self.typing_stopped(&user_id, None, ctx);
                self.cursors.remove(&user_id);
                let frame = frames::presence_leave(&user_id);
                self.fan_out(&frame, Order::Rev(rev), None, None, ctx);
            }
            BoardEvent::StatusChanged {
                rev,
                user_id,
                status,
                origin,
            } => {
                if let Some(user) = self.present.get_mut(&user_id) {
                    user.status = status;
                }
                let frame = frames::presence_update(&user_id, status);
                self.fan_out(&frame, Order::Rev(rev), Some(origin), None, ctx);
            }
            BoardEvent::Cursor {
                user_id,
                position,
                origin,
            } => {
                self.cursors.entry(user_id.clone()).or_default().last = position;
                let frame = frames::cursor_move(&user_id, position);
                self.fan_out(&frame, Order::None, Some(origin), Some(&user_id), ctx);
            }
            BoardEvent::TypingStarted {
                user_id,
                item_id,
                column_id,
                ..
            } => {
                self.typing_started(&user_id, &item_id, &column_id, None, ctx);
            }
            BoardEvent::TypingStopped { user_id, .. } => self.typing_stopped(&user_id, None, ctx),
            BoardEvent::Durable {
                seq,
                frame,
                ack,
                epoch,
            } => self.on_durable(seq, frame, ack, &epoch, ctx),
            BoardEvent::Broadcast { frame } => self.fan_out(&frame, Order::None, None, None, ctx),
            BoardEvent::Kick { user_id } => {
                for member in self.members.values().filter(|m| m.user_id == user_id) {
                    member.out.do_send(Outbound::Close(
                        close::KICKED,
                        "removed from the board".into(),
                    ));
                }
            }
        }
    }
}

impl Actor for Room {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(0); // 0: unbounded; sessions are rate limited instead
        let subscribe = self.broker.send(Subscribe {
            board: self.key.clone(),
            room_id: self.id,
            room: ctx.address().recipient(),
            resync: ctx.address().recipient(),
        });
        let subscribed = async move { matches!(subscribe.await, Ok(Ok(()))) }
            .boxed()
            .shared();
        self.subscribed = Some(subscribed);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.broker.do_send(Unsubscribe {
            board: self.key.clone(),
            room_id: self.id,
        });
        // A room stops with sessions only when something went wrong: forget it, so the next
        // join starts a new one, let its users leave, and have their clients reconnect.
        self.registry.forget(&self.key, self.id);
        for (sid, member) in self.members.drain() {
            log::error!("room {} stopped with session {sid} in it", self.key);
            self.presence.do_send(Depart {
                board: self.key.clone(),
                session: sid,
                user_id: member.user_id,
            });
            member
                .out
                .do_send(Outbound::Close(close::RESTARTING, "room restarted".into()));
        }
    }
}

/// A session asks to join; sent by the registry.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Join {
    /// The session.
    pub session: SessionId,
    /// Its user.
    pub user_id: String,
    /// Name and avatar.
    pub info: UserInfo,
    /// Its mailbox.
    pub out: Recipient<Outbound>,
    /// The last seq its client saw, when it resumes.
    pub last_seq: Option<u64>,
    /// The epoch of that seq, when its client gave it.
    pub epoch: Option<String>,
}

impl Handler<Join> for Room {
    type Result = ();

    fn handle(&mut self, msg: Join, ctx: &mut Self::Context) {
        self.joins_seen += 1;
        let sid = msg.session;
        self.members.insert(
            sid,
            Member {
                user_id: msg.user_id.clone(),
                info: msg.info.clone(),
                out: msg.out,
                queue: Some(VecDeque::new()),
                ready: false,
                held: 0,
                lagged: false,
                rev_floor: 0,
                seq_floor: 0,
            },
        );
        // Both requests are queued now, before any later Depart of this session.
        let arrived = self.presence.send(Arrive {
            board: self.key.clone(),
            session: sid,
            user_id: msg.user_id,
            info: msg.info,
        });
        let catchup = GetCatchup {
            board: self.key.clone(),
            last_seq: msg.last_seq,
            epoch: msg.epoch,
        };
        let broker = self.broker.clone();
        let subscribed = self.subscribed.clone();
        let work = async move {
            if let Some(subscribed) = subscribed {
                subscribed.await;
            }
            (arrived.await, broker.send(catchup).await)
        };
        ctx.spawn(
            work.into_actor(self)
                .map(move |result, room, ctx| match result {
                    (Ok(Ok(arrived)), Ok(Ok(catchup))) => {
                        room.finish_join(sid, arrived, catchup, ctx)
                    }
                    (Ok(Err(err)), _) | (_, Ok(Err(err))) => {
                        if let Some(member) = room.members.get(&sid) {
                            member.out.do_send(Outbound::Frame(err.to_frame().into()));
                            member.out.do_send(Outbound::Close(
                                close::RESTARTING,
                                "backend unavailable".into(),
                            ));
                        }
                    }
                    _ => {
                        if let Some(member) = room.members.get(&sid) {
                            let err = FrameError::new(None, ErrorCode::Internal, "join failed");
                            member.out.do_send(Outbound::Frame(err.to_frame().into()));
                            member
                                .out
                                .do_send(Outbound::Close(close::RESTARTING, "join failed".into()));
                        }
                    }
                }),
        );
    }
}

/// A session ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    /// The session.
    pub session: SessionId,
}

impl Handler<Leave> for Room {
    type Result = ();

    fn handle(&mut self, msg: Leave, ctx: &mut Self::Context) {
        let Some(member) = self.members.remove(&msg.session) else {
            return;
        };
        self.slow_cursors.remove(&msg.session);
        self.draining.remove(&msg.session);
        self.presence.do_send(Depart {
            board: self.key.clone(),
            session: msg.session,
            user_id: member.user_id,
        });
        if self.members.is_empty() && self.registry.release(&self.key, self.id, self.joins_seen) {
            ctx.stop();
        }
    }
}

/// A local session moved its cursor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct MoveCursor {
    /// The session.
    pub session: SessionId,
    /// The new position, or `None` when the cursor left the canvas.
    pub position: Option<Point>,
}

impl Handler<MoveCursor> for Room {
    type Result = ();

    fn handle(&mut self, msg: MoveCursor, ctx: &mut Self::Context) {
        let Some(user_id) = self.members.get(&msg.session).map(|m| m.user_id.clone()) else {
            return;
        };
        let cursor = self.cursors.entry(user_id.clone()).or_default();
        cursor.last = msg.position;
        match cursor
            .throttle
            .offer((msg.session, msg.position), Instant::now())
        {
            Offer::Send((origin, position)) => self.emit_cursor(&user_id, origin, position, ctx),
            Offer::HeldUntil(due) => {
                if !cursor.flush_scheduled {
                    cursor.flush_scheduled = true;
                    let wait = due.saturating_duration_since(Instant::now());
                    ctx.run_later(wait, move |room, ctx| room.flush_cursor(user_id, ctx));
                }
            }
        }
    }
}

/// A local session started or stopped typing.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetTyping {
    /// The session.
    pub session: SessionId,
    /// The cell (item, column) for `typing.start`; `None` for `typing.stop`.
    pub cell: Option<(String, String)>,
}

impl Handler<SetTyping> for Room {
    type Result = ();

    fn handle(&mut self, msg: SetTyping, ctx: &mut Self::Context) {
        let Some(user_id) = self.members.get(&msg.session).map(|m| m.user_id.clone()) else {
            return;
        };
        let origin = msg.session;
        match msg.cell {
            Some((item_id, column_id)) => {
                self.typing_started(&user_id, &item_id, &column_id, Some(origin), ctx);
                self.publish(BoardEvent::TypingStarted {
                    user_id,
                    item_id,
                    column_id,
                    origin,
                });
            }
            None => {
                self.typing_stopped(&user_id, Some(origin), ctx);
                self.publish(BoardEvent::TypingStopped { user_id, origin });
            }
        }
    }
}

impl Handler<BoardEvent> for Room {
    type Result = ();

    fn handle(&mut self, event: BoardEvent, ctx: &mut Self::Context) {
        self.on_event(event, ctx);
    }
}

/// The instance is shutting down: close every session with 1012.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseAll;

impl Handler<CloseAll> for Room {
    type Result = ();

    fn handle(&mut self, _: CloseAll, _: &mut Self::Context) {
        for member in self.members.values() {
            member.out.do_send(Outbound::Close(
                close::RESTARTING,
                "instance shutting down".into(),
            ));
        }
    }
}

/// The last known cursor of every user the room has seen move (the HTTP presence listing).
#[derive(Message)]
#[rtype(result = "HashMap<String, Option<Point>>")]
pub struct GetCursors;

impl Handler<GetCursors> for Room {
    type Result = MessageResult<GetCursors>;

    fn handle(&mut self, _: GetCursors, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.cursors
                .iter()
                .map(|(user, cursor)| (user.clone(), cursor.last))
                .collect(),
        )
    }
}

impl Handler<Resync> for Room {
    type Result = ();

    fn handle(&mut self, _: Resync, ctx: &mut Self::Context) {
        self.fill_gap(ctx);
        let sessions = self
            .members
            .iter()
            .map(|(sid, m)| (*sid, m.user_id.clone(), m.info.clone()))
            .collect();
        let sync = self.presence.send(SyncBoard {
            board: self.key.clone(),
            sessions,
        });
        ctx.spawn(sync.into_actor(self).map(|result, room, ctx| match result {
            Ok(Ok((rev, users))) => room.apply_presence(rev, users, ctx),
            _ => log::warn!(
                "{}: presence not re-registered; the next resync tries again",
                room.key
            ),
        }));
    }
}

/// Stops a room as a fault would, for the tests of what follows a room's abnormal stop.
#[cfg(test)]
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Crash;

#[cfg(test)]
impl Handler<Crash> for Room {
    type Result = ();

    fn handle(&mut self, _: Crash, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
