//! The embedded mode's working set: the boards in use, held in memory while their rooms live
//! (or for a minute after their last API write), loaded from and written to the store
//! ([`super::sqlite`]). Operations are applied here, in the broker's turn, so that they are
//! sequenced in the order they arrive; what they change is then stored by the writer.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytestring::ByteString;
use serde_json::Value;

use crate::backend::embedded::sqlite::{now_ms, Change, Edit, LoadedBoard};
use crate::backend::ops::{OpKey, OpLog, RETENTION};
use crate::backend::BackendError;
use crate::backend::Catchup;
use crate::board::{Applied, BoardLimits, BoardState, DurableOp};
use crate::event::BoardKey;
use crate::protocol::encode;

/// One board's durable data.
struct StoredBoard {
    /// Made when the board was first stored; a board the store lost gets another.
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
    /// Last asked for, so that boards nobody uses are let go.
    used: Instant,
}

impl StoredBoard {
    fn new(epoch: String) -> StoredBoard {
        StoredBoard {
            epoch,
            state: BoardState::default(),
            seq: 0,
            log: VecDeque::new(),
            log_bytes: 0,
            ops: OpLog::default(),
            used: Instant::now(),
        }
    }
}

/// What committing an operation did.
#[derive(Debug)]
pub(crate) enum Committed {
    /// It was applied now: its seq, what it changed, the event frame, the board's epoch and
    /// the change to store.
    New(u64, Applied, ByteString, String, Box<Change>),
    /// It was applied before (a retry): its seq and version then.
    Replayed(u64, Option<u64>),
}

/// An event logged now, and what it takes to store it.
#[derive(Debug)]
pub(crate) struct NewEvent {
    /// The event frame.
    pub(crate) frame: ByteString,
    /// The board's epoch.
    pub(crate) epoch: String,
    /// The change to store.
    pub(crate) change: Box<Change>,
}

/// The boards in use, in memory.
pub(crate) struct MemoryStore {
    /// Boards by key, as loaded.
    boards: HashMap<BoardKey, StoredBoard>,
    /// What a board may hold, and what its log keeps.
    limits: BoardLimits,
}

fn not_loaded(board: &BoardKey) -> BackendError {
    BackendError::BadData(format!("board {board} was used before it was loaded"))
}

impl MemoryStore {
    /// An empty working set.
    pub(crate) fn new(limits: BoardLimits) -> Self {
        MemoryStore {
            boards: HashMap::new(),
            limits,
        }
    }

    /// Whether `board` is loaded.
    pub(crate) fn has(&self, board: &BoardKey) -> bool {
        self.boards.contains_key(board)
    }

    /// Takes a board as the store gave it: its state, and its log within the replay bounds
    /// with the answers of the operations in it (a retry after a restart is still answered).
    pub(crate) fn insert(&mut self, board: BoardKey, loaded: LoadedBoard) -> Result<(), String> {
        let state = BoardState::from_rows(
            loaded.items.iter().map(String::as_str),
            loaded
                .cells
                .iter()
                .map(|(i, c, t)| (i.as_str(), c.as_str(), t.as_str())),
        )?;
        let mut stored = StoredBoard::new(loaded.epoch);
        stored.state = state;
        stored.seq = loaded.seq;
        let (now, now_ms) = (Instant::now(), now_ms());
        for event in loaded.events {
            let age = Duration::from_millis(now_ms.saturating_sub(event.at_ms).max(0) as u64);
            if let Some(key) = event.op.filter(|_| age < RETENTION) {
                let at = now.checked_sub(age).unwrap_or(now);
                stored
                    .ops
                    .remember(&key, Ok((event.seq, event.version)), at);
            }
            stored.log_bytes += event.frame.len();
            stored
                .log
                .push_back((event.seq, ByteString::from(event.frame)));
        }
        trim(&mut stored, &self.limits);
        self.boards.insert(board, stored);
        Ok(())
    }

    /// Lets go of a board.
    pub(crate) fn evict(&mut self, board: &BoardKey) {
        self.boards.remove(board);
    }

    /// Lets go of every board (after a failed write: what is here may not be what is stored).
    pub(crate) fn clear(&mut self) {
        self.boards.clear();
    }

    /// Lets go of boards unused for `idle` that `keep` does not claim.
    pub(crate) fn evict_idle(&mut self, idle: Duration, keep: impl Fn(&BoardKey) -> bool) {
        self.boards
            .retain(|board, stored| keep(board) || stored.used.elapsed() < idle);
    }

    /// A loaded board, marked used now; and now.
    fn touch(&mut self, board: &BoardKey) -> Result<(&mut StoredBoard, Instant), BackendError> {
        let stored = self
            .boards
            .get_mut(board)
            .ok_or_else(|| not_loaded(board))?;
        let now = Instant::now();
        stored.used = now;
        Ok((stored, now))
    }

    /// Applies `op`, and on success sequences and logs the event; a retry of an operation
    /// answered before (same `key`) gets that answer again.
    pub(crate) fn append(
        &mut self,
        board: &BoardKey,
        op: DurableOp,
        user_id: &str,
        key: Option<&OpKey>,
    ) -> Result<Committed, BackendError> {
        let limits = self.limits;
        let (stored, now) = self.touch(board)?;
        if let Some(outcome) = key.and_then(|k| stored.ops.answered(k, now)) {
            return Ok(outcome.map(|(seq, version)| Committed::Replayed(seq, version))?);
        }
        let item = op.item_id().to_string();
        let column = op.column_id().map(str::to_string);
        let result = stored.state.apply(op, user_id, limits);
        if let Some(key) = key {
            let outcome = result
                .as_ref()
                .map(|applied| (stored.seq + 1, applied.version));
            stored.ops.remember(key, outcome.map_err(Clone::clone), now);
        }
        let applied = result?;
        let edit = match column {
            Some(column) if applied.kind == "value.set" => {
                let text = stored.state.cell_text(&item, &column).unwrap_or_default();
                Edit::Cell(item, column, text)
            }
            _ => {
                let text = stored.state.item_text(&item);
                Edit::Item(item, text)
            }
        };
        let (seq, frame) = log_event(stored, &limits, applied.kind, &applied.payload);
        let change = Change {
            board: board.clone(),
            seq,
            frame: frame.clone(),
            op: key.cloned(),
            version: applied.version,
            edit,
            oldest: oldest(stored),
        };
        Ok(Committed::New(
            seq,
            applied,
            frame,
            stored.epoch.clone(),
            Box::new(change),
        ))
    }

    /// Sequences and logs an event that does not touch the state; `None` when it is a retry
    /// of one logged before (same `key`), with that one's seq.
    pub(crate) fn append_custom(
        &mut self,
        board: &BoardKey,
        kind: &str,
        payload: &Value,
        key: Option<&OpKey>,
    ) -> Result<(u64, Option<NewEvent>), BackendError> {
        let limits = self.limits;
        let (stored, now) = self.touch(board)?;
        if let Some(Ok((seq, _))) = key.and_then(|k| stored.ops.answered(k, now)) {
            return Ok((seq, None));
        }
        let (seq, frame) = log_event(stored, &limits, kind, payload);
        if let Some(key) = key {
            stored.ops.remember(key, Ok((seq, None)), now);
        }
        let change = Change {
            board: board.clone(),
            seq,
            frame: frame.clone(),
            op: key.cloned(),
            version: None,
            edit: Edit::Nothing,
            oldest: oldest(stored),
        };
        let event = NewEvent {
            frame,
            epoch: stored.epoch.clone(),
            change: Box::new(change),
        };
        Ok((seq, Some(event)))
    }

    /// A snapshot, or the retained events after `last_seq` when they are of `epoch` (or no
    /// epoch is given).
    pub(crate) fn catchup(
        &mut self,
        board: &BoardKey,
        last_seq: Option<u64>,
        epoch: Option<&str>,
    ) -> Result<Catchup, BackendError> {
        let (stored, _) = self.touch(board)?;
        let same_epoch = epoch.is_none_or(|e| e == stored.epoch);
        if let Some(n) = last_seq.filter(|_| same_epoch) {
            if n <= stored.seq && n + 1 >= oldest(stored) {
                let frames = stored
                    .log
                    .iter()
                    .filter(|(seq, _)| *seq > n)
                    .map(|(_, frame)| frame.clone())
                    .collect();
                return Ok(Catchup::Replay {
                    from: n + 1,
                    to: stored.seq,
                    frames,
                    epoch: stored.epoch.clone(),
                });
            }
        }
        Ok(Catchup::Snapshot {
            seq: stored.seq,
            items: stored.state.items(),
            values: stored.state.values(),
            resync: last_seq.is_some(),
            epoch: stored.epoch.clone(),
        })
    }
}

/// The oldest seq the board's log holds (the next seq when it is empty).
fn oldest(stored: &StoredBoard) -> u64 {
    stored.log.front().map_or(stored.seq + 1, |(seq, _)| *seq)
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
    trim(stored, limits);
    (stored.seq, frame)
}

/// Drops the oldest events past either replay bound.
fn trim(stored: &mut StoredBoard, limits: &BoardLimits) {
    while stored.log.len() > limits.replay_events || stored.log_bytes > limits.replay_bytes {
        match stored.log.pop_front() {
            Some((_, old)) => stored.log_bytes -= old.len(),
            None => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::new_epoch;
    use serde_json::json;

    fn board() -> BoardKey {
        BoardKey::new("t", "b")
    }

    fn with_log(replay_events: usize) -> MemoryStore {
        with_limits(BoardLimits {
            max_items: 10,
            replay_events,
            ..BoardLimits::NONE
        })
    }

    fn with_limits(limits: BoardLimits) -> MemoryStore {
        let mut store = MemoryStore::new(limits);
        store.boards.insert(board(), StoredBoard::new(new_epoch()));
        store
    }

    fn set(store: &mut MemoryStore, n: u64) {
        store
            .append_custom(&board(), "x.y", &json!({ "n": n }), None)
            .expect("the board is loaded");
    }

    #[test]
    fn a_resume_within_the_log_replays_exactly_the_missing_events() {
        let mut store = with_log(3);
        (1..=5).for_each(|n| set(&mut store, n));
        match store.catchup(&board(), Some(2), None).expect("loaded") {
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
            store
                .catchup(&board(), Some(5), Some(&epoch))
                .expect("loaded"),
            Catchup::Replay {
                from: 6,
                to: 5,
                frames: vec![],
                epoch,
            }
        );
        assert!(matches!(
            with_log(3).catchup(&board(), Some(0), None).expect("loaded"),
            Catchup::Replay { from: 1, to: 0, ref frames, .. } if frames.is_empty()
        ));
    }

    #[test]
    fn the_log_is_bounded_by_bytes_as_well_as_count() {
        let mut store = with_limits(BoardLimits {
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
            match store.catchup(&board(), Some(last), None).expect("loaded") {
                Catchup::Snapshot { seq, resync, .. } => assert_eq!((seq, resync), (5, true)),
                other => panic!("expected a snapshot, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_resume_from_another_epoch_is_a_resync_snapshot() {
        let mut store = with_log(10);
        (1..=5).for_each(|n| set(&mut store, n));
        match store
            .catchup(&board(), Some(3), Some("another"))
            .expect("loaded")
        {
            Catchup::Snapshot { seq, resync, .. } => assert_eq!((seq, resync), (5, true)),
            other => panic!("expected a snapshot, got {other:?}"),
        }
        let epoch = store.boards[&board()].epoch.clone();
        assert_eq!(epoch.len(), 16);
        assert!(matches!(
            store
                .catchup(&board(), Some(3), Some(&epoch))
                .expect("loaded"),
            Catchup::Replay { from: 4, .. }
        ));
    }
}
