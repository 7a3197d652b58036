//! The broker: the one door between this instance's rooms and the shared world.
//!
//! Rooms subscribe to their board's channel; presence and rooms publish on it; sessions append
//! durable operations and rooms read snapshots and replays through it. This module is the
//! interface, as the broker actor's messages; [`memory`] is the embedded single-instance backend
//! behind it. A Redis backend fills the same messages so that several instances act as one.

pub mod memory;

use std::collections::HashMap;

use actix::prelude::*;
use bytestring::ByteString;
use serde_json::Value;

use crate::actors::room::Outbound;
use crate::board::DurableOp;
use crate::event::{AckTo, BoardEvent, BoardKey, SessionId};
use crate::protocol::FrameError;

use memory::MemoryStore;

/// The broker actor.
pub struct Broker {
    /// Where durable state, sequence numbers and the replay log live.
    store: MemoryStore,
    /// This instance's room per board, with the room's id so a stale unsubscribe is ignored.
    rooms: HashMap<BoardKey, (u64, Recipient<BoardEvent>)>,
    /// This instance's sessions per (tenant, user), for user events.
    users: HashMap<(String, String), HashMap<SessionId, Recipient<Outbound>>>,
}

impl Broker {
    /// An embedded broker keeping `replay_events` events and at most `max_items` items a board.
    pub fn embedded(replay_events: usize, max_items: usize) -> Self {
        Broker {
            store: MemoryStore::new(replay_events, max_items),
            rooms: HashMap::new(),
            users: HashMap::new(),
        }
    }

    fn deliver(&self, board: &BoardKey, event: BoardEvent) {
        if let Some((_, room)) = self.rooms.get(board) {
            room.do_send(event);
        }
    }
}

impl Actor for Broker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Requests must never wait on a full mailbox: their order is the board's order.
        ctx.set_mailbox_capacity(0); // 0: unbounded
    }
}

/// A room starts listening to its board.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    /// The board.
    pub board: BoardKey,
    /// The room's id.
    pub room_id: u64,
    /// Where the board's events go.
    pub room: Recipient<BoardEvent>,
}

impl Handler<Subscribe> for Broker {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _: &mut Self::Context) {
        self.rooms.insert(msg.board, (msg.room_id, msg.room));
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

    fn handle(&mut self, msg: Unsubscribe, _: &mut Self::Context) {
        if self
            .rooms
            .get(&msg.board)
            .is_some_and(|(id, _)| *id == msg.room_id)
        {
            self.rooms.remove(&msg.board);
        }
    }
}

/// An event for every room of a board.
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

    fn handle(&mut self, msg: Publish, _: &mut Self::Context) {
        if !msg.delivered_locally {
            self.deliver(&msg.board, msg.event);
        }
    }
}

/// A durable operation from a session (or the HTTP API) to apply, sequence and publish.
#[derive(Message)]
#[rtype(result = "Result<Appended, FrameError>")]
pub struct Append {
    /// The board.
    pub board: BoardKey,
    /// The operation.
    pub op: DurableOp,
    /// The author, `"server"` for the HTTP API.
    pub user_id: String,
    /// The session to ack, with its frame id; `None` for the HTTP API.
    pub ack: Option<(SessionId, Option<String>)>,
}

/// An accepted operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Its sequence number.
    pub seq: u64,
    /// The item's or value's new version; `None` for deletions.
    pub version: Option<u64>,
}

impl Handler<Append> for Broker {
    type Result = Result<Appended, FrameError>;

    fn handle(&mut self, msg: Append, _: &mut Self::Context) -> Self::Result {
        let (seq, applied, frame) = self.store.append(&msg.board, msg.op, &msg.user_id)?;
        crate::metrics::DURABLE_EVENTS.inc();
        let ack = msg.ack.map(|(session, id)| AckTo {
            session,
            id,
            version: applied.version,
        });
        self.deliver(&msg.board, BoardEvent::Durable { seq, frame, ack });
        Ok(Appended {
            seq,
            version: applied.version,
        })
    }
}

/// A backend's event of its own type, sequenced and stored in the log but not in the state.
#[derive(Message)]
#[rtype(result = "Result<u64, FrameError>")]
pub struct AppendCustom {
    /// The board.
    pub board: BoardKey,
    /// The event's type.
    pub kind: String,
    /// Its payload, `userId` included.
    pub payload: Value,
}

impl Handler<AppendCustom> for Broker {
    type Result = Result<u64, FrameError>;

    fn handle(&mut self, msg: AppendCustom, _: &mut Self::Context) -> Self::Result {
        let (seq, frame) = self
            .store
            .append_custom(&msg.board, &msg.kind, &msg.payload);
        crate::metrics::DURABLE_EVENTS.inc();
        self.deliver(
            &msg.board,
            BoardEvent::Durable {
                seq,
                frame,
                ack: None,
            },
        );
        Ok(seq)
    }
}

/// What a joining session starts from: a snapshot, or the events it missed.
#[derive(Debug, Clone, PartialEq)]
pub enum Catchup {
    /// The whole board.
    Snapshot {
        /// The last durable seq the state includes.
        seq: u64,
        /// Items, each with its version.
        items: Vec<Value>,
        /// Cell values, each with its version.
        values: Vec<Value>,
        /// A resume was asked for but its events are gone (or `last_seq` was ahead).
        resync: bool,
    },
    /// Events `from..=to`, in order, as encoded frames.
    Replay {
        /// First seq replayed (`last_seq + 1`).
        from: u64,
        /// Last seq replayed; `from - 1` when nothing was missed.
        to: u64,
        /// The frames.
        frames: Vec<ByteString>,
    },
}

impl Catchup {
    /// The last seq this catch-up covers.
    pub fn seq(&self) -> u64 {
        match self {
            Catchup::Snapshot { seq, .. } => *seq,
            Catchup::Replay { to, .. } => *to,
        }
    }
}

/// Asks for a snapshot, or for the events after `last_seq`.
#[derive(Message)]
#[rtype(result = "Result<Catchup, FrameError>")]
pub struct GetCatchup {
    /// The board.
    pub board: BoardKey,
    /// The last seq the client saw, when it resumes.
    pub last_seq: Option<u64>,
}

impl Handler<GetCatchup> for Broker {
    type Result = Result<Catchup, FrameError>;

    fn handle(&mut self, msg: GetCatchup, _: &mut Self::Context) -> Self::Result {
        Ok(self.store.catchup(&msg.board, msg.last_seq))
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

    fn handle(&mut self, msg: SubscribeUser, _: &mut Self::Context) {
        self.users
            .entry((msg.tenant, msg.user_id))
            .or_default()
            .insert(msg.session, msg.out);
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

    fn handle(&mut self, msg: UnsubscribeUser, _: &mut Self::Context) {
        let key = (msg.tenant, msg.user_id);
        if let Some(sessions) = self.users.get_mut(&key) {
            sessions.remove(&msg.session);
            if sessions.is_empty() {
                self.users.remove(&key);
            }
        }
    }
}

/// A frame for every session of a user, on any board.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PublishUser {
    /// The user's tenant.
    pub tenant: String,
    /// The user.
    pub user_id: String,
    /// The encoded frame.
    pub frame: ByteString,
}

impl Handler<PublishUser> for Broker {
    type Result = ();

    fn handle(&mut self, msg: PublishUser, _: &mut Self::Context) {
        let Some(sessions) = self.users.get(&(msg.tenant, msg.user_id)) else {
            return;
        };
        for out in sessions.values() {
            if let Err(SendError::Full(_)) = out.try_send(Outbound::Frame(msg.frame.clone())) {
                // A session too slow to take it must not silently miss it.
                out.do_send(Outbound::Lagged);
            }
        }
    }
}
