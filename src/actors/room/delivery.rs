//! Delivery to a room's members: each session's mailbox, the queue a joining session drains
//! (its snapshot or replay first, then what arrived meanwhile, minus what its snapshot holds),
//! and cursor frames kept aside for mailboxes that are full.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use actix::prelude::*;

use crate::event::{SessionId, UserInfo};
use crate::wire::WireFrame;

/// How one delivery to one session went.
pub(super) enum Delivery {
    /// Written to its mailbox, held in its backlog, or not needed.
    Done,
    /// A cursor frame met a full mailbox: kept aside to retry, newest per user.
    Deferred(WireFrame),
}

impl Member {
    /// Whether its snapshot or replay already holds a frame of this order.
    pub(super) fn holds(&self, order: Order) -> bool {
        match order {
            Order::Rev(rev) => rev <= self.rev_floor,
            Order::Seq(seq) => seq <= self.seq_floor,
            Order::None => false,
        }
    }

    /// Delivers `frame` to this member without blocking. A `cursor` frame that meets a full
    /// mailbox, or a queue, is deferred; any other marks the member lagged when its mailbox is
    /// full, or more than `backlog_bound` frames wait in its queue.
    pub(super) fn deliver(
        &mut self,
        frame: WireFrame,
        order: Order,
        cursor: bool,
        backlog_bound: usize,
    ) -> Delivery {
        if self.lagged || self.holds(order) {
            return Delivery::Done;
        }
        if let Some(queue) = &mut self.queue {
            if cursor {
                return Delivery::Deferred(frame);
            }
            queue.push_back((order, frame));
            self.held += 1;
            if self.held > backlog_bound {
                self.lag();
            }
            return Delivery::Done;
        }
        match self.out.try_send(Outbound::Frame(frame)) {
            Err(SendError::Full(Outbound::Frame(frame))) if cursor => Delivery::Deferred(frame),
            Err(SendError::Full(_)) => {
                self.lag();
                Delivery::Done
            }
            // Closed: the session is gone and its Leave is on the way.
            Ok(()) | Err(_) => Delivery::Done,
        }
    }

    /// Delivers a turn's cursor frames (each with its user) as one message. Those that do not
    /// go (a full mailbox, or a member whose join is not finished) come back, to be kept
    /// aside like a single deferred cursor frame; none for a member that lagged.
    pub(super) fn deliver_cursors(&mut self, frames: CursorFrames) -> CursorFrames {
        if self.lagged {
            return Vec::new();
        }
        if self.queue.is_some() {
            return frames;
        }
        match self.out.try_send(Outbound::Cursors(frames)) {
            Err(SendError::Full(Outbound::Cursors(frames))) => frames,
            // Sent, or closed: the session is gone and its Leave is on the way.
            _ => Vec::new(),
        }
    }

    /// Moves queued frames into its mailbox while there is room, once its join is finished;
    /// true while frames remain. When the queue empties the member goes live.
    pub(super) fn drain(&mut self) -> bool {
        if !self.ready {
            return false;
        }
        let Some(mut queue) = self.queue.take().filter(|_| !self.lagged) else {
            return false;
        };
        while let Some((order, frame)) = queue.pop_front() {
            if self.holds(order) {
                continue;
            }
            match self.out.try_send(Outbound::Frame(frame)) {
                Ok(()) => {}
                Err(SendError::Full(Outbound::Frame(frame))) => {
                    queue.push_front((order, frame));
                    self.queue = Some(queue);
                    return true;
                }
                // Closed, or not a frame (never): the session is gone.
                Err(_) => break,
            }
        }
        self.held = 0;
        false
    }

    /// It missed a frame it must not miss: nothing more is sent, and it closes with 4009.
    pub(super) fn lag(&mut self) {
        self.lagged = true;
        self.queue = None;
        self.out.do_send(Outbound::Lagged);
    }
}

/// Cursor frames kept aside for full mailboxes: per session, the newest per user.
pub(super) type SlowCursors = HashMap<SessionId, HashMap<String, WireFrame>>;

/// Keeps a deferred cursor frame aside, or forgets those of a member that lagged.
pub(super) fn keep_aside(
    slow: &mut SlowCursors,
    sid: SessionId,
    member: &Member,
    delivery: Delivery,
    cursor_of: Option<&str>,
) {
    if member.lagged {
        slow.remove(&sid);
        return;
    }
    match (delivery, cursor_of) {
        (Delivery::Deferred(frame), Some(user)) => {
            slow.entry(sid).or_default().insert(user.to_string(), frame);
        }
        // A newer move of this user went through: the older one kept aside must not follow.
        (Delivery::Done, Some(user)) if !slow.is_empty() => {
            if let Some(kept) = slow.get_mut(&sid) {
                kept.remove(user);
            }
        }
        _ => {}
    }
}

/// What a room sends a session.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub enum Outbound {
    /// A frame to write, in the session's encoding.
    Frame(WireFrame),
    /// Cursor frames of one turn of the room, each with its user, written in order; at most
    /// `TURN_CURSORS` of them.
    Cursors(CursorFrames),
    /// A frame from outside the board (its workspace, its user's events): written once the
    /// board's first frame went out, so a session always starts with its snapshot.
    Aside(WireFrame),
    /// The session's mailbox overflowed and it missed events: close with 4009.
    Lagged,
    /// Close with this code and reason (kicks, failures).
    Close(u16, String),
    /// Time to look at the heartbeat, the client's silence and the token's expiry; sent by the
    /// session's workspace to each of its sessions once every heartbeat tick, so that an idle
    /// session holds no timer of its own.
    Tick,
}

/// Cursor frames, each with the user whose move it is.
pub type CursorFrames = Vec<(Arc<str>, WireFrame)>;

/// Where a session's frames go: one recipient, shared by its room, its workspace and the
/// broker. Each clone of an actix address allocates its own parking state (about 110 bytes with
/// the recipient's box); a session handed out three.
pub type Outlet = std::sync::Arc<Recipient<Outbound>>;

/// Where a frame sits in the board's orders, so a joining session's backlog can drop what its
/// snapshot already holds.
#[derive(Clone, Copy, Debug)]
pub(super) enum Order {
    /// A presence change with this revision.
    Rev(u64),
    /// A durable event with this seq.
    Seq(u64),
    /// Ephemeral: always delivered.
    None,
}

/// A local session of the board.
pub(super) struct Member {
    /// Its user, shared with the session's other holders.
    pub(super) user_id: Arc<str>,
    /// Its user's name and avatar, to register it again after an outage.
    pub(super) info: Arc<UserInfo>,
    pub(super) out: Outlet,
    /// Frames waiting for room in its mailbox, in order: from its join on, those that arrive
    /// while its snapshot is being made; then its first frame (snapshot or resume) and replayed
    /// events go in front, and the queue drains as the session reads. `None` once live; boxed,
    /// as every idle member of every board would otherwise hold its empty room.
    #[allow(clippy::box_collection)]
    pub(super) queue: Option<Box<VecDeque<(Order, WireFrame)>>>,
    /// Its first frame is queued: the queue may drain.
    pub(super) ready: bool,
    /// Frames queued since its join that are not part of its catch-up, bounded by the
    /// room's `backlog_bound`.
    pub(super) held: usize,
    /// It overflowed and is being closed; nothing more is sent.
    pub(super) lagged: bool,
    /// Presence changes up to this revision are in its snapshot: not sent again.
    pub(super) rev_floor: u64,
    /// Durable events up to this seq are in its snapshot or replay: not sent again.
    pub(super) seq_floor: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix::dev::channel::{channel, AddressReceiver};
    use bytestring::ByteString;
    use futures_util::FutureExt;

    /// A session that never reads its mailbox.
    struct Stuck;

    impl Actor for Stuck {
        type Context = Context<Self>;
    }

    impl Handler<Outbound> for Stuck {
        type Result = ();

        fn handle(&mut self, _: Outbound, _: &mut Self::Context) {}
    }

    fn stuck_member(capacity: usize) -> (Member, AddressReceiver<Stuck>) {
        let (tx, rx) = channel::<Stuck>(capacity);
        let member = Member {
            user_id: "bob".into(),
            info: Arc::default(),
            out: std::sync::Arc::new(Addr::new(tx).recipient()),
            queue: None,
            ready: true,
            held: 0,
            lagged: false,
            rev_floor: 0,
            seq_floor: 0,
        };
        (member, rx)
    }

    fn cursor(x: u32) -> WireFrame {
        frame(&format!(
            r#"{{"type":"cursor.move","payload":{{"userId":"ann","position":{{"x":{x},"y":0}}}}}}"#
        ))
    }

    fn frame(json: &str) -> WireFrame {
        WireFrame::from(ByteString::from(json))
    }

    #[test]
    fn a_full_mailbox_keeps_only_the_newest_cursor_and_lags_on_anything_else() {
        let (mut member, _mailbox) = stuck_member(2);
        let sid = SessionId(1);
        let mut slow = SlowCursors::new();
        let mut deferred = 0;
        for x in 0..10 {
            let delivery = member.deliver(cursor(x), Order::None, true, 100);
            deferred += usize::from(matches!(delivery, Delivery::Deferred(_)));
            keep_aside(&mut slow, sid, &member, delivery, Some("ann"));
        }
        assert!(deferred > 0, "the mailbox filled up");
        assert!(!member.lagged, "cursor frames never lag a session");
        assert_eq!(slow[&sid].len(), 1, "one frame kept per user");
        assert_eq!(slow[&sid]["ann"].json(), cursor(9).json(), "the newest one");

        let frame = frame(r#"{"type":"presence.leave","payload":{"userId":"cid"}}"#);
        let delivery = member.deliver(frame, Order::Rev(1), false, 100);
        keep_aside(&mut slow, sid, &member, delivery, None);
        assert!(member.lagged, "a frame that must arrive lags the session");
        assert!(
            !slow.contains_key(&sid),
            "nothing is retried for a lagged session"
        );
        assert!(matches!(
            member.deliver(cursor(10), Order::None, true, 100),
            Delivery::Done
        ));
    }

    #[test]
    fn a_kept_aside_cursor_is_forgotten_once_a_newer_one_goes_through() {
        use futures_util::StreamExt;
        let (mut member, mut mailbox) = stuck_member(1);
        let sid = SessionId(1);
        let mut slow = SlowCursors::new();
        for x in 0..4 {
            let delivery = member.deliver(cursor(x), Order::None, true, 100);
            keep_aside(&mut slow, sid, &member, delivery, Some("ann"));
        }
        assert_eq!(
            slow[&sid]["ann"].json(),
            cursor(3).json(),
            "kept aside while full"
        );
        // The session reads its mailbox; the next move fits and is delivered.
        while mailbox.next().now_or_never().flatten().is_some() {}
        let delivery = member.deliver(cursor(4), Order::None, true, 100);
        assert!(matches!(delivery, Delivery::Done));
        keep_aside(&mut slow, sid, &member, delivery, Some("ann"));
        assert!(
            slow.get(&sid).is_none_or(|kept| !kept.contains_key("ann")),
            "the older move must not be retried after the newer one"
        );
    }

    #[test]
    fn a_turn_of_cursor_frames_goes_as_one_message_or_comes_back_whole() {
        use futures_util::StreamExt;
        let turn = |from: u32| -> CursorFrames {
            (from..from + 3)
                .map(|x| (Arc::from(format!("u{x}")), cursor(x)))
                .collect()
        };
        let (mut member, mut mailbox) = stuck_member(2);
        let mut sent = 0;
        let kept = loop {
            assert!(sent < 10, "the mailbox never filled");
            let kept = member.deliver_cursors(turn(3 * sent));
            if !kept.is_empty() {
                break kept;
            }
            sent += 1;
        };
        let users: Vec<&str> = kept.iter().map(|(u, _)| &**u).collect();
        let expected: Vec<String> = (3 * sent..3 * sent + 3).map(|x| format!("u{x}")).collect();
        assert_eq!(users, expected, "a full mailbox gives the whole turn back");
        assert!(!member.lagged, "cursor frames never lag a session");
        let mut messages = 0;
        while mailbox.next().now_or_never().flatten().is_some() {
            messages += 1;
        }
        assert_eq!(messages, sent, "each turn that went is one message");

        member.queue = Some(Box::default());
        assert_eq!(
            member.deliver_cursors(turn(6)).len(),
            3,
            "a joining member waits"
        );
        member.lagged = true;
        assert!(
            member.deliver_cursors(turn(9)).is_empty(),
            "a lagged one gets none"
        );
    }

    #[test]
    fn frames_a_snapshot_already_holds_are_not_sent_again() {
        let (mut member, _mailbox) = stuck_member(16);
        member.rev_floor = 5;
        member.seq_floor = 7;
        member.queue = Some(Box::default());
        let frame = frame("{}");
        member.deliver(frame.clone(), Order::Rev(5), false, 100);
        member.deliver(frame.clone(), Order::Seq(7), false, 100);
        member.deliver(frame.clone(), Order::Seq(8), false, 100);
        member.deliver(frame, Order::Rev(6), false, 100);
        let kept: Vec<_> = member
            .queue
            .iter()
            .flat_map(|queue| queue.iter())
            .map(|(o, _)| format!("{o:?}"))
            .collect();
        assert_eq!(kept, ["Seq(8)", "Rev(6)"]);
    }

    #[test]
    fn a_queue_larger_than_the_mailbox_drains_as_the_session_reads() {
        use futures_util::StreamExt;
        let (mut member, mut mailbox) = stuck_member(4);
        member.queue = Some(Box::new(
            (1..=20)
                .map(|n| (Order::Seq(n), frame(&n.to_string())))
                .collect(),
        ));
        member.seq_floor = 2;
        let mut received = vec![];
        let mut rounds = 0;
        while member.drain() {
            rounds += 1;
            assert!(!member.lagged, "a queue never lags a session that reads");
            while let Some(Some(env)) = mailbox.next().now_or_never() {
                received.push(env);
            }
        }
        while let Some(Some(env)) = mailbox.next().now_or_never() {
            received.push(env);
        }
        assert!(rounds >= 4, "drained in steps: {rounds}");
        assert_eq!(received.len(), 18, "all but what the catch-up held");
        assert!(member.queue.is_none(), "live once drained");
    }

    #[test]
    fn live_frames_queued_behind_a_catch_up_are_bounded() {
        let (mut member, _mailbox) = stuck_member(4);
        member.queue = Some(Box::default());
        for n in 1..=3 {
            member.deliver(frame(&n.to_string()), Order::Seq(n), false, 3);
        }
        assert!(!member.lagged);
        assert!(
            matches!(
                member.deliver(cursor(1), Order::None, true, 3),
                Delivery::Deferred(_)
            ),
            "cursors wait aside, newest per user, and do not count"
        );
        member.deliver(frame("4"), Order::Seq(4), false, 3);
        assert!(member.lagged, "the fourth live frame passes the bound");
    }
}
