//! The embedded backend: board state, sequence numbers and replay logs in this process's
//! memory, kept for the life of the process.

use std::collections::{HashMap, VecDeque};

use bytestring::ByteString;
use serde_json::Value;

use std::time::Instant;

use crate::board::{Applied, BoardLimits, BoardState, DurableOp};
use crate::broker::ops::{OpKey, OpLog};
use crate::broker::Catchup;
use crate::event::BoardKey;
use crate::protocol::{encode, FrameError};

/// One board's durable data.
#[derive(Default)]
struct StoredBoard {
    /// Made with the board (its first event or catch-up): a restart makes every board anew,
    /// with another epoch.
    epoch: String,
    /// Items and values.
    state: BoardState,
    /// The last seq given out.
    seq: u64,
    /// The last event frames, oldest first, with their seqs, within the replay bounds.
    log: VecDeque<(u64, ByteString)>,
    /// Bytes of the frames in `log`.
    log_bytes: usize,
    /// Answers to recent operations, for retries.
    ops: OpLog,
}

/// What committing an operation did.
#[derive(Debug)]
pub enum Committed {
    /// It was applied now: its seq, what it changed, the event frame and the board's epoch.
    New(u64, Applied, ByteString, String),
    /// It was applied before (a retry): its seq and version then.
    Replayed(u64, Option<u64>),
}

/// Durable data of every board, in memory.
pub struct MemoryStore {
    /// Boards by key; created on first use.
    boards: HashMap<BoardKey, StoredBoard>,
    /// What a board may hold, and what its log keeps.
    limits: BoardLimits,
}

impl MemoryStore {
    /// An empty store.
    pub fn new(limits: BoardLimits) -> Self {
        MemoryStore {
            boards: HashMap::new(),
            limits,
        }
    }

    /// Applies `op`, and on success sequences and logs the event; a retry of an operation
    /// answered before (same `key`) gets that answer again.
    pub fn append(
        &mut self,
        board: &BoardKey,
        op: DurableOp,
        user_id: &str,
        key: Option<&OpKey>,
    ) -> Result<Committed, FrameError> {
        let limits = self.limits;
        let stored = self.board(board);
        let now = Instant::now();
        if let Some(outcome) = key.and_then(|k| stored.ops.answered(k, now)) {
            return outcome.map(|(seq, version)| Committed::Replayed(seq, version));
        }
        let result = stored.state.apply(op, user_id, limits);
        if let Some(key) = key {
            let outcome = result
                .as_ref()
                .map(|applied| (stored.seq + 1, applied.version));
            stored.ops.remember(key, outcome.map_err(Clone::clone), now);
        }
        let applied = result?;
        let (seq, frame) = log_event(stored, &limits, applied.kind, &applied.payload);
        Ok(Committed::New(seq, applied, frame, stored.epoch.clone()))
    }

    /// Sequences and logs an event that does not touch the state, with the board's epoch;
    /// no frame when it is a retry of one logged before (same `key`), with that one's seq.
    pub fn append_custom(
        &mut self,
        board: &BoardKey,
        kind: &str,
        payload: &Value,
        key: Option<&OpKey>,
    ) -> (u64, Option<(ByteString, String)>) {
        let limits = self.limits;
        let stored = self.board(board);
        let now = Instant::now();
        if let Some(Ok((seq, _))) = key.and_then(|k| stored.ops.answered(k, now)) {
            return (seq, None);
        }
        let (seq, frame) = log_event(stored, &limits, kind, payload);
        if let Some(key) = key {
            stored.ops.remember(key, Ok((seq, None)), now);
        }
        (seq, Some((frame, stored.epoch.clone())))
    }

    fn board(&mut self, board: &BoardKey) -> &mut StoredBoard {
        self.boards
            .entry(board.clone())
            .or_insert_with(|| StoredBoard {
                epoch: crate::broker::new_epoch(),
                ..StoredBoard::default()
            })
    }

    /// A snapshot, or the retained events after `last_seq` when they are of `epoch` (or no
    /// epoch is given).
    pub fn catchup(
        &mut self,
        board: &BoardKey,
        last_seq: Option<u64>,
        epoch: Option<&str>,
    ) -> Catchup {
        let stored = self.board(board);
        let same_epoch = epoch.is_none_or(|e| e == stored.epoch);
        if let Some(n) = last_seq.filter(|_| same_epoch) {
            let oldest = stored.log.front().map_or(stored.seq + 1, |(seq, _)| *seq);
            if n <= stored.seq && n + 1 >= oldest {
                let frames = stored
                    .log
                    .iter()
                    .filter(|(seq, _)| *seq > n)
                    .map(|(_, frame)| frame.clone())
                    .collect();
                return Catchup::Replay {
                    from: n + 1,
                    to: stored.seq,
                    frames,
                    epoch: stored.epoch.clone(),
                };
            }
        }
        Catchup::Snapshot {
            seq: stored.seq,
            items: stored.state.items(),
            values: stored.state.values(),
            resync: last_seq.is_some(),
            epoch: stored.epoch.clone(),
        }
    }
}

/// Sequences and logs an event, dropping the oldest events past either replay bound.
fn log_event(
    stored: &mut StoredBoard,
    limits: &BoardLimits,
    kind: &str,
    payload: &Value,
) -> (u64, ByteString) {
    stored.seq += 1;
    let frame = encode(kind, payload, Some(stored.seq));
    stored.log_bytes += frame.len();
    stored.log.push_back((stored.seq, frame.clone()));
    while stored.log.len() > limits.replay_events || stored.log_bytes > limits.replay_bytes {
        match stored.log.pop_front() {
            Some((_, old)) => stored.log_bytes -= old.len(),
            None => break,
        }
    }
    (stored.seq, frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn board() -> BoardKey {
        BoardKey::new("t", "b")
    }

    fn with_log(replay_events: usize) -> MemoryStore {
        MemoryStore::new(BoardLimits {
            max_items: 10,
            replay_events,
            ..BoardLimits::NONE
        })
    }

    fn set(store: &mut MemoryStore, n: u64) {
        store.append_custom(&board(), "x.y", &json!({ "n": n }), None);
    }

    #[test]
    fn a_resume_within_the_log_replays_exactly_the_missing_events() {
        let mut store = with_log(3);
        (1..=5).for_each(|n| set(&mut store, n));
        match store.catchup(&board(), Some(2), None) {
            Catchup::Replay {
                from, to, frames, ..
            } => {
                assert_eq!((from, to, frames.len()), (3, 5, 3));
                assert!(frames[0].contains("\"seq\":3"));
            }
            other => panic!("expected a replay, got {other:?}"),
        }
    }

    #[test]
    fn a_resume_at_the_head_replays_nothing() {
        let mut store = with_log(3);
        (1..=5).for_each(|n| set(&mut store, n));
        let epoch = store.boards[&board()].epoch.clone();
        assert_eq!(
            store.catchup(&board(), Some(5), Some(&epoch)),
            Catchup::Replay {
                from: 6,
                to: 5,
                frames: vec![],
                epoch,
            }
        );
        assert!(matches!(
            with_log(3).catchup(&board(), Some(0), None),
            Catchup::Replay { from: 1, to: 0, ref frames, .. } if frames.is_empty()
        ));
    }

    #[test]
    fn the_log_is_bounded_by_bytes_as_well_as_count() {
        let mut store = MemoryStore::new(BoardLimits {
            replay_events: 1000,
            replay_bytes: 200,
            ..BoardLimits::NONE
        });
        (1..=50).for_each(|n| set(&mut store, n));
        let stored = &store.boards[&board()];
        assert!(stored.log_bytes <= 200, "{}", stored.log_bytes);
        assert_eq!(
            stored.log_bytes,
            stored.log.iter().map(|(_, f)| f.len()).sum::<usize>()
        );
        assert_eq!(stored.log.back().map(|(seq, _)| *seq), Some(50));
        assert!(stored.log.len() < 50);
    }

    #[test]
    fn a_resume_too_old_or_ahead_is_a_resync_snapshot() {
        let mut store = with_log(3);
        (1..=5).for_each(|n| set(&mut store, n));
        for last in [1, 6] {
            match store.catchup(&board(), Some(last), None) {
                Catchup::Snapshot { seq, resync, .. } => assert_eq!((seq, resync), (5, true)),
                other => panic!("expected a snapshot, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_resume_from_another_epoch_is_a_resync_snapshot() {
        let mut store = with_log(10);
        (1..=5).for_each(|n| set(&mut store, n));
        match store.catchup(&board(), Some(3), Some("another")) {
            Catchup::Snapshot { seq, resync, .. } => assert_eq!((seq, resync), (5, true)),
            other => panic!("expected a snapshot, got {other:?}"),
        }
        let epoch = store.boards[&board()].epoch.clone();
        assert_eq!(epoch.len(), 16);
        assert!(matches!(
            store.catchup(&board(), Some(3), Some(&epoch)),
            Catchup::Replay { from: 4, .. }
        ));
    }
}
