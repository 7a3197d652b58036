//! The shared world behind the broker actor: where boards, presence and channels live.
//!
//! Two backends side by side, a folder each: [`embedded`] (one instance: its working set in
//! memory, its boards in SQLite) and [`redis`] (any number of instances sharing one Redis).
//! What both speak is here: the answers to an append and to a join ([`Appended`],
//! [`Catchup`]), the epoch, the idempotency records ([`ops`]) and the presence model
//! ([`presence`]: the palette and the color rule). Nothing here knows the actors; the broker
//! actor ([`crate::actors::broker`]) is the only caller.

pub(crate) mod embedded;
pub(crate) mod ops;
pub(crate) mod presence;
pub(crate) mod redis;

use actix::Message;
use bytestring::ByteString;
use serde_json::Value;

use crate::board::DurableOp;
use crate::event::{BoardKey, SessionId};
use crate::protocol::FrameError;

use self::ops::OpKey;

/// An accepted operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Its sequence number.
    pub seq: u64,
    /// The item's or value's new version; `None` for deletions.
    pub version: Option<u64>,
    /// It was applied before: this answers a retry, and no event or ack went out for it now.
    pub replayed: bool,
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
        /// A resume was asked for but its events are gone (or `last_seq` was ahead, or of
        /// another epoch).
        resync: bool,
        /// The board's epoch ("" before its first event).
        epoch: String,
    },
    /// Events `from..=to`, in order, as encoded frames.
    Replay {
        /// First seq replayed (`last_seq + 1`).
        from: u64,
        /// Last seq replayed; `from - 1` when nothing was missed.
        to: u64,
        /// The frames.
        frames: Vec<ByteString>,
        /// The board's epoch.
        epoch: String,
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

    /// The epoch of the board's `seq`: a random id made with its first event, new whenever the
    /// store lost the board (a Redis without persistence restarted, a `FLUSHALL`, a failover to
    /// an empty replica; a restart of the embedded mode). Positions of different epochs cannot
    /// be compared.
    pub fn epoch(&self) -> &str {
        match self {
            Catchup::Snapshot { epoch, .. } | Catchup::Replay { epoch, .. } => epoch,
        }
    }
}

/// A new random epoch.
pub fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
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
    /// For operations sent with an id: a retry gets the first answer instead of applying again.
    pub key: Option<OpKey>,
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
    /// With an idempotency key: a retry gets the first seq instead of a second event.
    pub key: Option<OpKey>,
}

/// Asks for a snapshot, or for the events after `last_seq`.
#[derive(Message)]
#[rtype(result = "Result<Catchup, FrameError>")]
pub struct GetCatchup {
    /// The board.
    pub board: BoardKey,
    /// The last seq the client saw, when it resumes.
    pub last_seq: Option<u64>,
    /// The epoch of that seq, when the client knows it.
    pub epoch: Option<String>,
}
