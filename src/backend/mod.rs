//! The shared world behind the broker actor: where boards, presence and channels live.
//!
//! Two backends side by side, a folder each: [`embedded`] (one instance: its working set in
//! memory, its boards in SQLite) and [`redis`] (any number of instances sharing one Redis).
//! What both speak is here: the answers to an append and to a join ([`Appended`],
//! [`Catchup`]), their error ([`BackendError`]: the board rules' [`Refusal`], or an outage with
//! its cause), the epoch, the idempotency records ([`ops`]) and the presence model
//! ([`presence`]: the palette and the color rule). Nothing here knows the actors; the broker
//! actor ([`crate::actors::broker`]) is the only caller.

pub(crate) mod embedded;
pub(crate) mod ops;
pub(crate) mod presence;
pub(crate) mod redis;

use actix::Message;
use bytestring::ByteString;
use serde_json::Value;

use std::sync::Arc;

use crate::board::{DurableOp, Refusal};
use crate::event::{BoardKey, SessionId};
use crate::protocol::{ErrorCode, FrameError};

use self::ops::OpKey;

/// Why the shared world did not do what was asked: the board rules refused it, or the backend
/// could not be reached, or holds what it should not. It keeps its cause, and becomes the error
/// a client sees only at the edges (the session, the HTTP API), where it is logged.
#[derive(Clone, Debug, thiserror::Error)]
pub enum BackendError {
    /// The board rules refused the operation.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The backend is out of reach, did not answer, or is stopping: worth a retry.
    #[error("{what}")]
    Unavailable {
        /// What the client is told.
        what: &'static str,
        /// What went wrong underneath, when something did.
        #[source]
        cause: Option<Cause>,
    },
    /// The backend holds data of a shape it never writes.
    #[error("unexpected data in the backend: {0}")]
    BadData(String),
}

/// A failure known only by its description (the storage thread's, say).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Failure(pub String);

/// The error beneath a [`BackendError`], shared so the error can be cloned to every waiter.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

impl BackendError {
    /// Unavailable for `what`, because of `cause`.
    pub fn unavailable(
        what: &'static str,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        BackendError::Unavailable {
            what,
            cause: Some(Arc::new(cause)),
        }
    }

    /// Unavailable for `what`, with nothing beneath.
    pub fn unavailable_now(what: &'static str) -> Self {
        BackendError::Unavailable { what, cause: None }
    }

    /// Whether a retry may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, BackendError::Unavailable { .. })
    }

    /// The error its client is told, logged here with its cause: an edge calls this once.
    pub fn to_frame_error(&self) -> FrameError {
        match self {
            BackendError::Refused(refusal) => FrameError::from(refusal.clone()),
            BackendError::Unavailable { what, cause } => {
                match cause {
                    Some(cause) => log::warn!("{what}: {cause}"),
                    None => log::debug!("{what}"),
                }
                FrameError::new(None, ErrorCode::Unavailable, *what)
            }
            BackendError::BadData(what) => {
                log::error!("the backend holds unexpected data: {what}");
                FrameError::new(None, ErrorCode::Internal, "unexpected data in the backend")
            }
        }
    }
}

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

/// What a room's gap fill found.
#[derive(Debug)]
pub enum Filled {
    /// The events after the room's last seq, in order.
    Events(Vec<crate::event::BoardEvent>),
    /// They are no longer retained: the room's sessions resync.
    Gone,
    /// The board is of this other epoch: the store lost it, or no longer holds the last event
    /// the room delivered (it lost events and gave their seqs to others) and took a new one.
    Reset(String),
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
#[rtype(result = "Result<Appended, BackendError>")]
pub struct Append {
    pub board: BoardKey,
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
#[rtype(result = "Result<u64, BackendError>")]
pub struct AppendCustom {
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
#[rtype(result = "Result<Catchup, BackendError>")]
pub struct GetCatchup {
    pub board: BoardKey,
    /// The last seq the client saw, when it resumes.
    pub last_seq: Option<u64>,
    /// The epoch of that seq, when the client knows it.
    pub epoch: Option<String>,
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use serde_json::json;

    use super::*;

    #[test]
    fn a_refusal_reaches_the_client_as_the_rules_said_it() {
        let refusal = Refusal::Conflict {
            message: "stale".into(),
            current: json!({"id":"i","version":3}),
        };
        let wire = BackendError::from(refusal).to_frame_error();
        assert_eq!(wire.code, ErrorCode::Conflict);
        assert_eq!(wire.message, "stale");
        assert_eq!(wire.current, Some(json!({"id":"i","version":3})));
        let wire = BackendError::from(Refusal::NotFound("no item i".into())).to_frame_error();
        assert_eq!(
            (wire.code, wire.message.as_str()),
            (ErrorCode::NotFound, "no item i")
        );
    }

    #[test]
    fn an_outage_keeps_its_cause_and_tells_the_client_only_to_retry() {
        let cause = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "10.0.0.7:6379");
        let err = BackendError::unavailable("the backend is unavailable; retry", cause);
        assert!(err.is_unavailable());
        let source = err.source().map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("10.0.0.7:6379"));
        let wire = err.to_frame_error();
        assert_eq!(wire.code, ErrorCode::Unavailable);
        assert_eq!(wire.message, "the backend is unavailable; retry");
        let wire = BackendError::BadData("seq is \"x\"".into()).to_frame_error();
        assert_eq!(wire.code, ErrorCode::Internal);
        assert!(
            !wire.message.contains("seq"),
            "what the backend holds stays in the log"
        );
    }
}
