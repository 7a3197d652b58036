//! What travels between actors, and later between instances: board keys, session ids, presence
//! entries and [`BoardEvent`]s.
//!
//! Every type here is serializable, because in Redis mode the same events cross the wire
//! between instances on a board's channel.

use std::fmt;

use bytestring::ByteString;
use serde::{Deserialize, Serialize};

use crate::protocol::{Point, Status};

/// A board, scoped by tenant: boards of different tenants never share anything.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BoardKey {
    /// The tenant from the token.
    pub tenant: String,
    /// The board id from the URL.
    pub board: String,
}

impl BoardKey {
    /// A key for `board` in `tenant`.
    pub fn new(tenant: impl Into<String>, board: impl Into<String>) -> Self {
        BoardKey {
            tenant: tenant.into(),
            board: board.into(),
        }
    }
}

/// The board id under which a tenant's workspace (its tenant-wide presence and events) is kept:
/// outside the board id alphabet, so no board of a client can be it.
const WORKSPACE_BOARD: &str = "*";

impl BoardKey {
    /// The key of `tenant`'s workspace: presence and channel kept like a board's, holding every
    /// session of the tenant.
    pub fn workspace(tenant: impl Into<String>) -> Self {
        BoardKey::new(tenant, WORKSPACE_BOARD)
    }

    /// Whether this is a tenant's workspace rather than a board.
    pub fn is_workspace(&self) -> bool {
        self.board == WORKSPACE_BOARD
    }
}

impl fmt::Display for BoardKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.board)
    }
}

/// Whether a board id is 1–64 characters of `[A-Za-z0-9_-]`.
pub fn valid_board_id(board: &str) -> bool {
    (1..=64).contains(&board.len())
        && board
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Identifies one WebSocket across all instances (random, 64 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionId(pub u64);

impl SessionId {
    /// A fresh random id.
    pub fn random() -> Self {
        SessionId(rand::random())
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What others see of a user: the `user` object of a presence entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// Display name from the token.
    pub name: Option<String>,
    /// Avatar URL from the token.
    pub avatar: Option<String>,
}

/// One present user of a board, as the presence actor knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PresentUser {
    /// The user id.
    #[serde(rename = "userId")]
    pub user_id: String,
    /// Name and avatar.
    pub user: UserInfo,
    /// The color assigned while present, `#rrggbb`.
    pub color: String,
    /// Active or idle.
    pub status: Status,
}

/// A presence entry on the wire: the user plus the cursor the room last saw.
#[derive(Serialize)]
pub struct PresenceEntry<'a> {
    /// The user, flattened.
    #[serde(flatten)]
    pub user: &'a PresentUser,
    /// Last known cursor, or null.
    pub cursor: Option<Point>,
}

/// Which session's frame an ack answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AckTo {
    /// The session that sent the operation.
    pub session: SessionId,
    /// The `id` of its frame.
    pub id: Option<String>,
    /// The version to report; `None` for deletions.
    pub version: Option<u64>,
}

/// Something that happened on a board, on its way to the board's rooms.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, actix::Message)]
#[rtype(result = "()")]
pub enum BoardEvent {
    /// A user's first session arrived. `rev` orders presence changes.
    Joined {
        /// Presence revision of this transition.
        rev: u64,
        /// The user who arrived.
        user: PresentUser,
    },
    /// A user's last session left.
    Left {
        /// Presence revision of this transition.
        rev: u64,
        /// The user who left.
        user_id: String,
    },
    /// A user's status changed.
    StatusChanged {
        /// Presence revision of this change.
        rev: u64,
        /// The user.
        user_id: String,
        /// The new status.
        status: Status,
        /// The session that asked; it gets no echo.
        origin: SessionId,
    },
    /// A cursor moved (already throttled by the origin's room).
    Cursor {
        /// Whose cursor.
        user_id: String,
        /// Where, or `None` when it left the canvas.
        position: Option<Point>,
        /// The session that moved it; it gets no echo.
        origin: SessionId,
    },
    /// A user started typing in a cell.
    TypingStarted {
        /// Who types.
        user_id: String,
        /// The item being edited.
        item_id: String,
        /// The column being edited.
        column_id: String,
        /// The session typing; it gets no echo.
        origin: SessionId,
    },
    /// A user stopped typing.
    TypingStopped {
        /// Who stopped.
        user_id: String,
        /// The session that said so.
        origin: SessionId,
    },
    /// A sequenced event: the frame the others get, and whom to ack instead.
    Durable {
        /// The board's sequence number of this event.
        seq: u64,
        /// The encoded event frame, `seq` included.
        frame: ByteString,
        /// The session that sent it, when it came from a session.
        ack: Option<AckTo>,
        /// The board's epoch the seq belongs to.
        #[serde(default)]
        epoch: String,
    },
    /// An unsequenced frame for every session (backend ephemeral events).
    Broadcast {
        /// The encoded frame.
        frame: ByteString,
    },
    /// Close this user's sessions on the board with 4003.
    Kick {
        /// The user to remove.
        user_id: String,
    },
    /// A frame for every session of one user of the tenant (`POST /api/users/{user}/events`).
    /// It crosses Redis on the tenant's workspace channel, which every instance with a session
    /// of the tenant hears already, and the broker hands it to the user's sessions; no room or
    /// workspace gets it.
    ToUser {
        /// The user.
        user_id: String,
        /// The encoded frame.
        frame: ByteString,
    },
}
