//! The server frames of the protocol's sessions, built in one place, each with the payload
//! `docs/protocol.md` gives it. Durable events are the exception: the backend builds their
//! frames as it sequences them (an event's frame is part of the board's log), and backends
//! name their own event types.

use bytestring::ByteString;
use serde_json::{json, Value};

use crate::event::{PresenceEntry, PresentUser, UserInfo};
use crate::protocol::{encode, Point, Status};

/// `ack` of a durable operation: its `id`, `seq` and the new `version` (none for deletions).
pub(crate) fn ack(id: &Option<String>, seq: u64, version: Option<u64>) -> ByteString {
    let mut payload = json!({"id": id, "seq": seq});
    if let Some(version) = version {
        payload["version"] = json!(version);
    }
    encode("ack", &payload, None)
}

/// `ack` of a frame that is not a durable operation (`auth.refresh`): its `id` only.
pub(crate) fn ack_id(id: &Option<String>) -> ByteString {
    encode("ack", &json!({ "id": id }), None)
}

/// `pong`, echoing the ping's payload.
pub(crate) fn pong(payload: &Value) -> ByteString {
    encode("pong", payload, None)
}

/// `board.snapshot`: the whole board and who is here.
pub(crate) struct Snapshot<'a> {
    /// The board id.
    pub(crate) board: &'a str,
    /// The last durable seq the state includes.
    pub(crate) seq: u64,
    /// The board's epoch.
    pub(crate) epoch: &'a str,
    /// The session itself: `userId`, `sessionId`, `color`.
    pub(crate) me: &'a Value,
    /// Who is present, with cursors.
    pub(crate) users: &'a [PresenceEntry<'a>],
    /// Items and values.
    pub(crate) items: &'a [Value],
    /// Cell values.
    pub(crate) values: &'a [Value],
    /// A resume was asked for but could not be served.
    pub(crate) resync: bool,
}

/// `board.snapshot`.
pub(crate) fn snapshot(s: &Snapshot<'_>) -> ByteString {
    encode(
        "board.snapshot",
        &json!({"boardId": s.board, "seq": s.seq, "epoch": s.epoch, "self": s.me,
                "users": s.users, "items": s.items, "values": s.values, "resync": s.resync}),
        None,
    )
}

/// `board.resumed`: who is here, and the range of events replayed after it.
pub(crate) fn resumed(
    board: &str,
    epoch: &str,
    me: &Value,
    users: &[PresenceEntry<'_>],
    (from, to): (u64, u64),
) -> ByteString {
    encode(
        "board.resumed",
        &json!({"boardId": board, "epoch": epoch, "self": me,
                "users": users, "fromSeq": from, "toSeq": to}),
        None,
    )
}

/// `presence.join`.
pub(crate) fn presence_join(user: &PresentUser) -> ByteString {
    encode(
        "presence.join",
        &json!({"userId": user.user_id, "user": user.user, "color": user.color}),
        None,
    )
}

/// `presence.leave`.
pub(crate) fn presence_leave(user_id: &str) -> ByteString {
    encode("presence.leave", &json!({ "userId": user_id }), None)
}

/// `presence.update`.
pub(crate) fn presence_update(user_id: &str, status: Status) -> ByteString {
    encode(
        "presence.update",
        &json!({"userId": user_id, "status": status}),
        None,
    )
}

/// `cursor.move`; `None` when the cursor left the canvas.
pub(crate) fn cursor_move(user_id: &str, position: Option<Point>) -> ByteString {
    encode(
        "cursor.move",
        &json!({"userId": user_id, "position": position}),
        None,
    )
}

/// `typing.start`.
pub(crate) fn typing_start(user_id: &str, item_id: &str, column_id: &str) -> ByteString {
    encode(
        "typing.start",
        &json!({"userId": user_id, "itemId": item_id, "columnId": column_id}),
        None,
    )
}

/// `typing.stop`.
pub(crate) fn typing_stop(user_id: &str) -> ByteString {
    encode("typing.stop", &json!({ "userId": user_id }), None)
}

/// A user as the workspace frames show them.
fn workspace_user(user_id: &str, user: &UserInfo) -> Value {
    json!({"userId": user_id, "user": user})
}

/// `workspace.snapshot`: who is online in the tenant, in the order they came.
pub(crate) fn workspace_snapshot<'a>(
    users: impl IntoIterator<Item = (&'a str, &'a UserInfo)>,
) -> ByteString {
    let users: Vec<Value> = users
        .into_iter()
        .map(|(id, user)| workspace_user(id, user))
        .collect();
    encode("workspace.snapshot", &json!({ "users": users }), None)
}

/// `workspace.online`: a user of the tenant opened their first session.
pub(crate) fn workspace_online(user_id: &str, user: &UserInfo) -> ByteString {
    encode("workspace.online", &workspace_user(user_id, user), None)
}

/// `workspace.offline`: a user of the tenant closed their last session.
pub(crate) fn workspace_offline(user_id: &str, user: &UserInfo) -> ByteString {
    encode("workspace.offline", &workspace_user(user_id, user), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(frame: ByteString) -> Value {
        serde_json::from_str(&frame).expect("JSON")
    }

    #[test]
    fn acks_carry_a_version_only_when_there_is_one() {
        assert_eq!(
            parsed(ack(&Some("c1".into()), 4, Some(2))),
            json!({"type":"ack","payload":{"id":"c1","seq":4,"version":2}})
        );
        assert_eq!(
            parsed(ack(&None, 5, None)),
            json!({"type":"ack","payload":{"id":null,"seq":5}})
        );
        assert_eq!(
            parsed(ack_id(&Some("r".into()))),
            json!({"type":"ack","payload":{"id":"r"}})
        );
    }

    #[test]
    fn ephemeral_frames_have_the_documented_payloads() {
        assert_eq!(
            parsed(cursor_move("ann", Some(Point { x: 1.0, y: 2.5 }))),
            json!({"type":"cursor.move","payload":{"userId":"ann","position":{"x":1,"y":2.5}}})
        );
        assert_eq!(
            parsed(cursor_move("ann", None)),
            json!({"type":"cursor.move","payload":{"userId":"ann","position":null}})
        );
        assert_eq!(
            parsed(typing_start("ann", "i", "c")),
            json!({"type":"typing.start","payload":{"userId":"ann","itemId":"i","columnId":"c"}})
        );
        assert_eq!(
            parsed(typing_stop("ann")),
            json!({"type":"typing.stop","payload":{"userId":"ann"}})
        );
        assert_eq!(
            parsed(presence_update("ann", Status::Idle)),
            json!({"type":"presence.update","payload":{"userId":"ann","status":"idle"}})
        );
        assert_eq!(
            parsed(presence_leave("ann")),
            json!({"type":"presence.leave","payload":{"userId":"ann"}})
        );
    }
}
