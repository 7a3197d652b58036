//! A room's durable events in `seq` order, whatever order they arrive in.
//!
//! Events come from the board's channel; one may arrive twice (a gap fill and the channel both
//! carry it) or after a later one (Redis was out of reach for a moment). The sequencer hands
//! the room each event once, in order; an event past a gap waits while the room reads the gap
//! from the log. No actor here: the room asks, and does the delivering and the reading.

use std::collections::BTreeMap;

use bytestring::ByteString;

use crate::event::AckTo;

/// A durable event ready to deliver: its seq, its frame and whom to ack.
pub(super) type Sequenced = (u64, ByteString, Option<AckTo>);

/// See the module documentation.
#[derive(Default)]
pub(super) struct Sequencer {
    /// The last seq handed out, once one is known.
    last: Option<u64>,
    /// The frame of that seq, when it was handed out here (not when the seq came from a
    /// snapshot): a gap fill sends it so that the store can tell whether it still holds that
    /// same event (a failed-over Redis may have lost it and given its seq to another).
    last_frame: Option<ByteString>,
    /// Events that arrived past a gap, held until the gap is filled.
    ahead: BTreeMap<u64, (ByteString, Option<AckTo>)>,
    /// A gap fill is under way.
    filling: bool,
}

impl Sequencer {
    /// Whether the event of `seq` was handed out already, or no seq is known (nothing to wait
    /// for).
    pub(super) fn handed_out(&self, seq: u64) -> bool {
        self.last.is_none_or(|last| last >= seq)
    }

    /// Takes the board's seq from a snapshot or replay, when none is known yet.
    pub(super) fn know(&mut self, seq: u64) {
        if self.last.is_none() {
            self.last = Some(seq);
            self.last_frame = None;
        }
    }

    /// Forgets everything: the board's seq started again (a new epoch) or the missed events are
    /// gone from the log.
    pub(super) fn forget(&mut self) {
        self.ahead.clear();
        self.last = None;
        self.last_frame = None;
    }

    /// Whether an event at or below the last seq handed out may not be the one handed out:
    /// at the last seq with another frame, or below it (only the last frame is kept). Such an
    /// event is a duplicate, or the store lost events and gave their seqs to others.
    pub(super) fn may_differ(&self, seq: u64, frame: &ByteString) -> bool {
        match self.last {
            Some(last) if seq < last => true,
            Some(last) if seq == last => self.last_frame.as_ref().is_some_and(|f| f != frame),
            _ => false,
        }
    }

    /// An event from the channel: what may be delivered now, in order, and whether a gap opened
    /// that must be read from the log.
    pub(super) fn offer(
        &mut self,
        seq: u64,
        frame: ByteString,
        ack: Option<AckTo>,
    ) -> (Vec<Sequenced>, bool) {
        let mut ready = vec![];
        match self.last {
            Some(last) if seq <= last => {}
            Some(last) if seq > last + 1 => {
                self.ahead.insert(seq, (frame, ack));
                return (ready, true);
            }
            _ => {
                self.last = Some(seq);
                self.last_frame = Some(frame.clone());
                ready.push((seq, frame, ack));
                self.drain(&mut ready);
            }
        }
        (ready, false)
    }

    /// Starts a gap fill: the seq to read after and its frame when known here, unless one is
    /// under way or no seq is known.
    pub(super) fn fill_from(&mut self) -> Option<(u64, Option<ByteString>)> {
        if self.filling {
            return None;
        }
        let after = self.last?;
        self.filling = true;
        Some((after, self.last_frame.clone()))
    }

    /// The gap fill ended, whatever its outcome.
    pub(super) fn fill_done(&mut self) {
        self.filling = false;
    }

    /// Events read from the log after a gap: what may be delivered now, in order, and whether
    /// a gap remains (events are still held past one).
    pub(super) fn filled(
        &mut self,
        events: impl IntoIterator<Item = Sequenced>,
    ) -> (Vec<Sequenced>, bool) {
        let mut ready = vec![];
        for (seq, frame, ack) in events {
            if self.last.is_none_or(|last| seq > last) {
                self.last = Some(seq);
                self.last_frame = Some(frame.clone());
                ready.push((seq, frame, ack));
            }
        }
        self.drain(&mut ready);
        (ready, !self.ahead.is_empty())
    }

    /// Moves held events that are next in order to `ready`; drops those already handed out.
    fn drain(&mut self, ready: &mut Vec<Sequenced>) {
        while let Some(entry) = self.ahead.first_entry() {
            let next = self.last.map_or(*entry.key(), |last| last + 1);
            if *entry.key() < next {
                entry.remove();
            } else if *entry.key() == next {
                let (frame, ack) = entry.remove();
                self.last = Some(next);
                self.last_frame = Some(frame.clone());
                ready.push((next, frame, ack));
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64) -> Sequenced {
        (seq, ByteString::from(seq.to_string()), None)
    }

    fn seqs(ready: &[Sequenced]) -> Vec<u64> {
        ready.iter().map(|(seq, _, _)| *seq).collect()
    }

    fn offer(s: &mut Sequencer, seq: u64) -> (Vec<u64>, bool) {
        let (seq, frame, ack) = event(seq);
        let (ready, gap) = s.offer(seq, frame, ack);
        (seqs(&ready), gap)
    }

    #[test]
    fn an_event_at_or_below_the_last_seq_may_differ_unless_it_is_the_last_frame_again() {
        let mut s = Sequencer::default();
        assert!(
            !s.may_differ(1, &ByteString::from("1")),
            "nothing known yet"
        );
        s.know(4);
        assert!(
            !s.may_differ(4, &ByteString::from("x")),
            "a seq known from a snapshot has no frame to compare"
        );
        assert_eq!(offer(&mut s, 5), (vec![5], false));
        assert!(
            !s.may_differ(5, &ByteString::from("5")),
            "the same event again"
        );
        assert!(s.may_differ(5, &ByteString::from("another")));
        assert!(
            s.may_differ(3, &ByteString::from("3")),
            "below the last: not kept"
        );
        assert!(!s.may_differ(6, &ByteString::from("6")), "a new seq");
        s.forget();
        assert!(!s.may_differ(5, &ByteString::from("another")));
    }

    #[test]
    fn events_in_order_pass_at_once_and_duplicates_are_dropped() {
        let mut s = Sequencer::default();
        s.know(4);
        assert_eq!(offer(&mut s, 5), (vec![5], false));
        assert_eq!(offer(&mut s, 6), (vec![6], false));
        assert_eq!(offer(&mut s, 6), (vec![], false));
        assert_eq!(offer(&mut s, 3), (vec![], false));
    }

    #[test]
    fn the_first_event_sets_the_order_when_none_is_known() {
        let mut s = Sequencer::default();
        assert_eq!(offer(&mut s, 9), (vec![9], false));
        s.know(2);
        assert_eq!(
            offer(&mut s, 10),
            (vec![10], false),
            "know keeps what it saw"
        );
    }

    #[test]
    fn an_event_past_a_gap_waits_for_the_fill_and_follows_it() {
        let mut s = Sequencer::default();
        s.know(1);
        assert_eq!(offer(&mut s, 4), (vec![], true));
        assert_eq!(offer(&mut s, 5), (vec![], true));
        assert_eq!(s.fill_from(), Some((1, None)), "1 came from a snapshot");
        assert_eq!(s.fill_from(), None, "one fill at a time");
        s.fill_done();
        // The log has 2..=4; 4 arrives twice and passes once.
        let (ready, gap) = s.filled([event(2), event(3), event(4)]);
        assert_eq!((seqs(&ready), gap), (vec![2, 3, 4, 5], false));
        assert_eq!(offer(&mut s, 6), (vec![6], false));
    }

    #[test]
    fn a_fill_that_falls_short_leaves_the_gap_open() {
        let mut s = Sequencer::default();
        s.know(1);
        offer(&mut s, 5);
        assert_eq!(s.fill_from(), Some((1, None)));
        s.fill_done();
        let (ready, gap) = s.filled([event(2)]);
        assert_eq!((seqs(&ready), gap), (vec![2], true));
        assert_eq!(
            s.fill_from(),
            Some((2, Some(ByteString::from("2")))),
            "the next fill starts after what came, with its frame"
        );
    }

    #[test]
    fn an_event_that_fills_the_gap_itself_releases_those_behind_it() {
        let mut s = Sequencer::default();
        s.know(1);
        offer(&mut s, 3);
        offer(&mut s, 4);
        assert_eq!(offer(&mut s, 2), (vec![2, 3, 4], false));
    }

    #[test]
    fn forgetting_drops_what_was_held() {
        let mut s = Sequencer::default();
        s.know(1);
        offer(&mut s, 3);
        s.forget();
        assert_eq!(s.fill_from(), None, "no seq known: nothing to fill from");
        assert_eq!(
            offer(&mut s, 1),
            (vec![1], false),
            "a new epoch starts again"
        );
        assert_eq!(offer(&mut s, 2), (vec![2], false));
        assert_eq!(offer(&mut s, 3), (vec![3], false), "3 was not kept");
    }
}
