//! The room actor: one per board on this instance, alive while it has sessions.
//!
//! It holds the board's local sessions, fans every event out to them (serialized once, the
//! same bytes for all), throttles cursors, times out typing, acks durable events in `seq`
//! order, and answers a joining session with its snapshot or resume before anything else.
//!
//! Delivery never blocks on a slow session: frames go with `try_send` into the session's
//! bounded mailbox. When it is full, a cursor frame is kept aside (only the newest per user)
//! and retried; any other frame marks the session *lagged*: it is told once, gets nothing more,
//! and closes with 4009 so that its client resumes.
//!
//! This file holds the actor, its members and fan-out; the rest by job: [`delivery`] to each
//! member, the [`join`] (and its first frame), [`ephemeral`] cursors and typing, [`durable`]
//! events in order (with the [`sequencer`]), and the presence [`mirror`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytestring::ByteString;
use serde_json::json;

use crate::actors::broker::{
    subscribe, Broker, GetCatchup, GetEvents, Publish, Resync, Subscription,
};
use crate::actors::presence::{Arrive, Depart, Presence, SyncBoard};
use crate::actors::registry::Registry;
use crate::backend::presence::{Arrived, Local};
use crate::backend::{Catchup, Filled};
use crate::event::{AckTo, BoardEvent, BoardKey, PresenceEntry, PresentUser, SessionId, UserInfo};
use crate::frames;
use crate::limits::{Offer, Throttle};
use crate::protocol::{close, ErrorCode, FrameError, Point};
use crate::wire::WireFrame;

mod delivery;
mod durable;
mod ephemeral;
mod join;
mod mirror;
mod sequencer;

use self::delivery::{keep_aside, CursorFrames, Member, Order, SlowCursors};
pub use self::delivery::{Outbound, Outlet};
pub use self::durable::ReplayedAck;
use self::ephemeral::{Cursor, Typing};
pub use self::ephemeral::{MoveCursor, SetTyping};
pub use self::join::Join;
use self::sequencer::{Sequenced, Sequencer};

/// How often cursor frames kept aside for full mailboxes are retried.
const SLOW_RETRY: Duration = Duration::from_millis(50);
/// Cursor frames a turn of the room gathers at most before sending them. A session's queue
/// holds `SESSION_QUEUE` messages, one of which may be such a batch: this bounds what a slow
/// session holds (README, "How it is built").
const TURN_CURSORS: usize = 32;
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
    /// How often a workspace tells each of its sessions to look at its heartbeat
    /// ([`crate::config::Config::heartbeat_tick`]).
    pub heartbeat_tick: std::time::Duration,
}

/// The room actor. See the module documentation.
pub struct Room {
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
    /// Acks of retries answered from their records, waiting for the room to deliver the event
    /// they ack (see [`ReplayedAck`]); at most the durable operations its members have in
    /// flight.
    held_acks: Vec<ReplayedAck>,
    /// The board's epoch the sequencer's seq belongs to ("" until one is seen).
    epoch: String,
    /// When the room last asked the store to confirm the events it delivered, after one came
    /// again that may not be the same (see `on_durable`).
    verified_at: Option<std::time::Instant>,
    /// Present users as this room last heard, to tell its sessions what changed while the
    /// backend was out of reach. Kept only with a shared backend (Redis): the embedded one is
    /// never out of reach.
    present: HashMap<String, PresentUser>,
    /// Resolves once the room hears its board's channel; catch-ups wait for it so that no
    /// event falls between a snapshot and the live stream.
    subscribed: Option<Subscription>,
    /// Settings shared by the instance's rooms.
    settings: RoomSettings,
    /// Events of this turn of the mailbox for other instances, sent to the broker as one
    /// message when the turn ends (see [`Room::publish`]); empty between turns.
    unpublished: Vec<BoardEvent>,
    /// Cursor frames of this turn of the mailbox, with their user and the session they came
    /// from, sent to each member as one message when the turn ends (see [`Room::fan_out`]).
    turn_cursors: Vec<(Arc<str>, Option<SessionId>, WireFrame)>,
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
            held_acks: Vec::new(),
            epoch: String::new(),
            verified_at: None,
            present: HashMap::new(),
            unpublished: Vec::new(),
            turn_cursors: Vec::new(),
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

    /// Sends `frame` to every member but `except`: the same bytes for all. A cursor frame
    /// (`cursor_of` its user) waits for the end of the mailbox's turn and goes with the turn's
    /// other cursor frames, one message per member; any other frame sends those first.
    fn fan_out(
        &mut self,
        frame: &ByteString,
        order: Order,
        except: Option<SessionId>,
        cursor_of: Option<&str>,
        ctx: &mut Context<Self>,
    ) {
        let frame = WireFrame::from(frame.clone());
        if let Some(user) = cursor_of {
            if self.turn_cursors.is_empty() {
                ctx.spawn(fut::ready(()).map(|(), room: &mut Room, ctx| room.send_cursors(ctx)));
            }
            self.turn_cursors.push((Arc::from(user), except, frame));
            if self.turn_cursors.len() >= TURN_CURSORS {
                self.send_cursors(ctx);
            }
            return;
        }
        // What the turn's cursors are waiting for goes first: a member's frames stay in order.
        self.send_cursors(ctx);
        let bound = self.settings.backlog_bound;
        for (sid, member) in &mut self.members {
            if Some(*sid) == except {
                continue;
            }
            // Not a cursor frame: it is never deferred, only lags a member it cannot reach.
            let delivery = member.deliver(frame.clone(), order, false, bound);
            keep_aside(&mut self.slow_cursors, *sid, member, delivery, None);
        }
        self.schedule_retry(ctx);
    }

    /// Sends each member the cursor frames of this turn but its own, as one message. What
    /// does not fit is kept aside as a single deferred cursor frame would be.
    fn send_cursors(&mut self, ctx: &mut Context<Self>) {
        if self.turn_cursors.is_empty() {
            return;
        }
        let turn = std::mem::take(&mut self.turn_cursors);
        for (sid, member) in &mut self.members {
            let frames: CursorFrames = turn
                .iter()
                .filter(|(_, origin, _)| *origin != Some(*sid))
                .map(|(user, _, frame)| (Arc::clone(user), frame.clone()))
                .collect();
            if frames.is_empty() {
                continue;
            }
            let kept = member.deliver_cursors(frames);
            if member.lagged {
                self.slow_cursors.remove(sid);
            } else if kept.is_empty() {
                // Newer moves went through: older ones kept aside must not follow.
                if let Some(slow) = self.slow_cursors.get_mut(sid) {
                    for (user, origin, _) in &turn {
                        if *origin != Some(*sid) {
                            slow.remove(&**user);
                        }
                    }
                }
            } else {
                let slow = self.slow_cursors.entry(*sid).or_default();
                for (user, frame) in kept {
                    slow.insert(user.to_string(), frame);
                }
            }
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

    /// Publishes an event this room has delivered to its own sessions, for other instances;
    /// with none (embedded mode) there is nothing to do. The events of one turn of the mailbox
    /// go to the broker together when it ends: the broker runs on another thread, and one
    /// message a turn instead of one an event spares it most of the wake-ups. As many as the
    /// turn made; what waits in the broker after that is bounded by `REDIS_PUBLISH_BACKLOG`.
    fn publish(&mut self, event: BoardEvent, ctx: &mut Context<Self>) {
        if !self.settings.shared {
            return;
        }
        if self.unpublished.is_empty() {
            // Spawned items run after the mailbox is drained, in the same poll.
            ctx.spawn(fut::ready(()).map(|(), room: &mut Room, _| room.send_unpublished()));
        }
        self.unpublished.push(event);
    }

    /// Hands this turn's events to the broker.
    fn send_unpublished(&mut self) {
        if self.unpublished.is_empty() {
            return;
        }
        self.broker.do_send(Publish {
            board: self.key.clone(),
            events: std::mem::take(&mut self.unpublished),
            delivered_locally: true,
        });
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
                if let Some(cursor) = self.cursor_state(&user_id) {
                    cursor.last = position;
                }
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
                for member in self.members.values().filter(|m| *m.user_id == *user_id) {
                    member.out.do_send(Outbound::Close(
                        close::KICKED,
                        "removed from the board".into(),
                    ));
                }
            }
            // The broker hands these to the user's sessions; none reaches a room.
            BoardEvent::ToUser { .. } => {}
        }
    }
}

impl Actor for Room {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(0); // 0: unbounded; sessions are rate limited instead
        self.subscribed = Some(subscribe(&self.broker, self.key.clone(), self.id, ctx));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.send_unpublished();
        let left = self
            .members
            .drain()
            .map(|(sid, m)| (sid, m.user_id, m.out))
            .collect();
        self.registry.room_stopped(&self.key, self.id, left);
    }
}

/// A session ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
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
