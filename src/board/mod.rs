//! Board state: items and values with their versions, and the rules of section 6.
//!
//! Pure and synchronous, so the rules are tested without a server. The operations themselves,
//! decoded from a client's or backend's payload, are [`DurableOp`]s. The state and its rules
//! stay in one file: each rule reads and writes the same few maps, and a third of the file is
//! their tests. [`BoardState::apply`] turns an operation into the event everyone else
//! receives, or refuses it with a [`Refusal`] (a conflict, not found, a bound reached). Both
//! backends build a board from what they stored ([`BoardState::from_stored`] and the loaders),
//! never by replaying events.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value};

mod op;

pub use self::op::{string_field, DurableOp};

/// Why the board rules refuse an operation: what the sender is told, whichever way it came.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// The item does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A version check failed; `current` is the item or value as the board holds it.
    #[error("{message}")]
    Conflict {
        /// What differed.
        message: String,
        /// The item or value now.
        current: Value,
    },
    /// A bound of the board was reached.
    #[error("{0}")]
    TooLarge(String),
}

/// An accepted operation: the event for the others, and what the sender's ack carries.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    /// The event's wire type.
    pub kind: &'static str,
    /// The event payload, `userId` of the author included.
    pub payload: Value,
    /// The version to put in the ack; `None` for deletions.
    pub version: Option<u64>,
}

/// The size bounds of one board, so that one editor cannot make the service hold more than a
/// known amount for a board. Sizes are bytes of stored JSON text: an item counts its own text
/// plus, for each of its cells, the column id and the cell's `{"value","version"}` text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoardLimits {
    /// Items one board may hold (`MAX_ITEMS`).
    pub max_items: usize,
    /// Bytes one item may hold, its values included (`MAX_ITEM_BYTES`).
    pub max_item_bytes: usize,
    /// Bytes all items of a board may hold together (`MAX_BOARD_BYTES`).
    pub max_board_bytes: usize,
    /// Events the replay log keeps per board (`REPLAY_EVENTS`).
    pub replay_events: usize,
    /// Bytes of event frames the replay log keeps per board (`REPLAY_BYTES`); the oldest go
    /// first when either bound is passed.
    pub replay_bytes: usize,
}

impl BoardLimits {
    /// No bound at all: for a partial state whose bounds are checked elsewhere.
    pub const NONE: BoardLimits = BoardLimits {
        max_items: usize::MAX,
        max_item_bytes: usize::MAX,
        max_board_bytes: usize::MAX,
        replay_events: usize::MAX,
        replay_bytes: usize::MAX,
    };
}

/// A value of one cell and its version.
#[derive(Clone, Debug, PartialEq)]
struct Cell {
    /// The value as last set.
    value: Value,
    /// Counts sets of this (item, column), from 1.
    version: u64,
}

/// The durable state of one board.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BoardState {
    /// Items by id, each holding its `version` field.
    items: HashMap<String, Map<String, Value>>,
    /// Cell values by item, then column; ordered so snapshots are stable.
    values: HashMap<String, BTreeMap<String, Cell>>,
    /// Stored size of each item, its values included (see [`BoardLimits`]).
    sizes: HashMap<String, usize>,
    /// Sum of `sizes`.
    bytes: usize,
}

impl BoardState {
    /// A state holding one item and, optionally, one of its cells, as stored elsewhere (JSON
    /// text); the rest of the board is not needed to apply an operation to them.
    pub fn from_stored(
        item: Option<&str>,
        cell: Option<(&str, &str)>,
    ) -> Result<BoardState, String> {
        let mut state = BoardState::default();
        if let Some(text) = item {
            let item: Map<String, Value> =
                serde_json::from_str(text).map_err(|e| format!("stored item: {e}"))?;
            let id = item_id_of(&item);
            if let Some((column, text)) = cell {
                state
                    .values
                    .entry(id.clone())
                    .or_default()
                    .insert(column.to_string(), stored_cell(text)?);
            }
            state.items.insert(id.clone(), item);
            state.resize(&id, BoardLimits::NONE).ok();
        }
        Ok(state)
    }

    /// A whole board as stored (JSON text): its items, and its cells as `(item, column, text)`.
    /// Sizes are measured as they load; bounds are not checked (the board was within them
    /// when it was written).
    pub fn from_rows<'a>(
        items: impl IntoIterator<Item = &'a str>,
        cells: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
    ) -> Result<BoardState, String> {
        let mut state = BoardState::default();
        for text in items {
            let item: Map<String, Value> =
                serde_json::from_str(text).map_err(|e| format!("stored item: {e}"))?;
            state.items.insert(item_id_of(&item), item);
        }
        for (item, column, text) in cells {
            state
                .values
                .entry(item.to_string())
                .or_default()
                .insert(column.to_string(), stored_cell(text)?);
        }
        let ids: Vec<String> = state.items.keys().cloned().collect();
        for id in ids {
            state.resize(&id, BoardLimits::NONE).ok();
        }
        Ok(state)
    }

    /// The stored form of an item, `None` when absent.
    pub fn item_text(&self, item_id: &str) -> Option<String> {
        self.items
            .get(item_id)
            .map(|i| Value::Object(i.clone()).to_string())
    }

    /// The stored form of a cell, `{"value","version"}`, `None` when absent.
    pub fn cell_text(&self, item_id: &str, column_id: &str) -> Option<String> {
        Some(cell_json(self.values.get(item_id)?.get(column_id)?).to_string())
    }

    /// Bytes the board's items and values hold (see [`BoardLimits`]).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The stored size of an item: its text, and the column id and text of each of its cells.
    fn measure(&self, item_id: &str) -> usize {
        let Some(item) = self.items.get(item_id) else {
            return 0;
        };
        let cells = self.values.get(item_id).map_or(0, |cells| {
            cells
                .iter()
                .map(|(column, cell)| cell_bytes(column, cell))
                .sum()
        });
        json_len(item) + cells
    }

    /// Brings the recorded size of `item_id` up to date after a change, or refuses a change
    /// that grew it past a bound (the caller then undoes the change).
    fn resize(&mut self, item_id: &str, limits: BoardLimits) -> Result<(), Refusal> {
        let new = self.measure(item_id);
        self.resize_to(item_id, new, limits)
    }

    /// [`resize`](Self::resize) with the item's new size known.
    fn resize_to(&mut self, item_id: &str, new: usize, limits: BoardLimits) -> Result<(), Refusal> {
        let old = self.sizes.get(item_id).copied().unwrap_or(0);
        if new > old {
            if new > limits.max_item_bytes {
                return Err(too_large(format!(
                    "an item holds at most {} bytes with its values",
                    limits.max_item_bytes
                )));
            }
            if self.bytes - old + new > limits.max_board_bytes {
                return Err(too_large(format!(
                    "a board holds at most {} bytes",
                    limits.max_board_bytes
                )));
            }
        }
        self.bytes = self.bytes - old + new;
        if new == 0 {
            self.sizes.remove(item_id);
        } else {
            self.sizes.insert(item_id.to_string(), new);
        }
        Ok(())
    }

    /// Applies `op` by `user_id`, or says why not; `limits` bound what the board may hold.
    pub fn apply(
        &mut self,
        op: DurableOp,
        user_id: &str,
        limits: BoardLimits,
    ) -> Result<Applied, Refusal> {
        let item_id = op.item_id().to_string();
        let undo = self.undo_record(&op);
        let applied = self.apply_unchecked(op, user_id, limits)?;
        // A value set changes one cell's share of its item's size: measuring the whole item
        // would serialize every cell it has at each set.
        let new = match (&undo, self.sizes.get(&item_id)) {
            (Undo::Cell(column, old), Some(size)) => {
                let cell = self.values.get(&item_id).and_then(|c| c.get(column));
                size.saturating_sub(old.as_ref().map_or(0, |c| cell_bytes(column, c)))
                    + cell.map_or(0, |c| cell_bytes(column, c))
            }
            _ => self.measure(&item_id),
        };
        if let Err(err) = self.resize_to(&item_id, new, limits) {
            self.restore(&item_id, undo);
            return Err(err);
        }
        Ok(applied)
    }

    /// What an operation may change, kept to undo it when it breaks a size bound.
    fn undo_record(&self, op: &DurableOp) -> Undo {
        let item_id = op.item_id();
        match op {
            DurableOp::SetValue { column_id, .. } => Undo::Cell(
                column_id.clone(),
                self.values
                    .get(item_id)
                    .and_then(|cells| cells.get(column_id))
                    .cloned(),
            ),
            // Deletions only shrink the board.
            DurableOp::Delete { .. } => Undo::Nothing,
            _ => Undo::Item(self.items.get(item_id).cloned()),
        }
    }

    fn restore(&mut self, item_id: &str, undo: Undo) {
        match undo {
            Undo::Nothing => {}
            Undo::Item(Some(item)) => {
                self.items.insert(item_id.to_string(), item);
            }
            Undo::Item(None) => {
                self.items.remove(item_id);
            }
            Undo::Cell(column, cell) => {
                let cells = self.values.entry(item_id.to_string()).or_default();
                match cell {
                    Some(cell) => cells.insert(column, cell),
                    None => cells.remove(&column),
                };
                if cells.is_empty() {
                    self.values.remove(item_id);
                }
            }
        }
    }

    fn apply_unchecked(
        &mut self,
        op: DurableOp,
        user_id: &str,
        limits: BoardLimits,
    ) -> Result<Applied, Refusal> {
        match op {
            DurableOp::Create { mut item } => {
                let id = item_id_of(&item);
                if let Some(current) = self.items.get(&id) {
                    return Err(conflict(
                        format!("item {id} exists"),
                        Value::Object(current.clone()),
                    ));
                }
                if self.items.len() >= limits.max_items {
                    return Err(too_large(format!(
                        "a board holds at most {} items",
                        limits.max_items
                    )));
                }
                item.insert("version".into(), json!(1));
                self.items.insert(id, item.clone());
                Ok(Applied {
                    kind: "item.created",
                    payload: json!({"item": item, "userId": user_id}),
                    version: Some(1),
                })
            }
            DurableOp::Update {
                item_id,
                changes,
                expected_version,
            } => {
                let item = self.item_mut(&item_id, expected_version)?;
                for (k, v) in &changes {
                    item.insert(k.clone(), v.clone());
                }
                let version = bump(item);
                Ok(Applied {
                    kind: "item.updated",
                    payload: json!({"itemId": item_id, "changes": changes, "version": version, "userId": user_id}),
                    version: Some(version),
                })
            }
            DurableOp::Move {
                item_id,
                group_id,
                position,
                expected_version,
            } => {
                let item = self.item_mut(&item_id, expected_version)?;
                item.insert("groupId".into(), group_id.clone());
                item.insert("position".into(), position.clone());
                let version = bump(item);
                Ok(Applied {
                    kind: "item.moved",
                    payload: json!({"itemId": item_id, "groupId": group_id, "position": position, "version": version, "userId": user_id}),
                    version: Some(version),
                })
            }
            DurableOp::Delete {
                item_id,
                expected_version,
            } => {
                self.item_mut(&item_id, expected_version)?;
                self.items.remove(&item_id);
                self.values.remove(&item_id);
                Ok(Applied {
                    kind: "item.deleted",
                    payload: json!({"itemId": item_id, "userId": user_id}),
                    version: None,
                })
            }
            DurableOp::SetValue {
                item_id,
                column_id,
                value,
                expected_version,
            } => {
                if !self.items.contains_key(&item_id) {
                    return Err(not_found(&item_id));
                }
                let held = self
                    .values
                    .get(&item_id)
                    .and_then(|cells| cells.get(&column_id));
                let current = held.map_or(0, |c| c.version);
                if let Some(expected) = expected_version {
                    if expected != current {
                        return Err(conflict(
                            format!("value version is {current}, not {expected}"),
                            json!({
                                "itemId": item_id,
                                "columnId": column_id,
                                "value": held.map_or(Value::Null, |c| c.value.clone()),
                                "version": current,
                            }),
                        ));
                    }
                }
                let version = current + 1;
                self.values.entry(item_id.clone()).or_default().insert(
                    column_id.clone(),
                    Cell {
                        value: value.clone(),
                        version,
                    },
                );
                Ok(Applied {
                    kind: "value.set",
                    payload: json!({"itemId": item_id, "columnId": column_id, "value": value, "version": version, "userId": user_id}),
                    version: Some(version),
                })
            }
        }
    }

    fn item_mut(
        &mut self,
        item_id: &str,
        expected_version: Option<u64>,
    ) -> Result<&mut Map<String, Value>, Refusal> {
        let item = self
            .items
            .get_mut(item_id)
            .ok_or_else(|| not_found(item_id))?;
        let current = version_of(item);
        match expected_version {
            Some(expected) if expected != current => Err(conflict(
                format!("item version is {current}, not {expected}"),
                Value::Object(item.clone()),
            )),
            _ => Ok(item),
        }
    }

    /// Applies an event accepted earlier, as the log holds it. Boards load from their stored
    /// state, not from their log; the tests rebuild boards with this to show that every event
    /// carries what the state keeps. Events that do not fit the state are skipped.
    #[cfg(test)]
    fn replay(&mut self, kind: &str, payload: &Value) {
        self.replay_unmeasured(kind, payload);
        let touched = match kind {
            "item.created" => payload.get("item").and_then(|i| i.get("id")),
            _ => payload.get("itemId"),
        };
        if let Some(id) = touched.and_then(Value::as_str) {
            self.resize(id, BoardLimits::NONE).ok();
        }
    }

    #[cfg(test)]
    fn replay_unmeasured(&mut self, kind: &str, payload: &Value) {
        let text = |k: &str| payload.get(k).and_then(Value::as_str).map(str::to_string);
        let version = payload.get("version").and_then(Value::as_u64);
        match kind {
            "item.created" => {
                if let Some(Value::Object(item)) = payload.get("item") {
                    self.items.insert(item_id_of(item), item.clone());
                }
            }
            "item.updated" => {
                if let (Some(id), Some(Value::Object(changes)), Some(v)) =
                    (text("itemId"), payload.get("changes"), version)
                {
                    if let Some(item) = self.items.get_mut(&id) {
                        item.extend(changes.clone());
                        item.insert("version".into(), json!(v));
                    }
                }
            }
            "item.moved" => {
                if let (Some(id), Some(v)) = (text("itemId"), version) {
                    if let Some(item) = self.items.get_mut(&id) {
                        for k in ["groupId", "position"] {
                            item.insert(k.into(), payload.get(k).cloned().unwrap_or(Value::Null));
                        }
                        item.insert("version".into(), json!(v));
                    }
                }
            }
            "item.deleted" => {
                if let Some(id) = text("itemId") {
                    self.items.remove(&id);
                    self.values.remove(&id);
                }
            }
            "value.set" => {
                if let (Some(id), Some(column), Some(v)) =
                    (text("itemId"), text("columnId"), version)
                {
                    let value = payload.get("value").cloned().unwrap_or(Value::Null);
                    self.values
                        .entry(id)
                        .or_default()
                        .insert(column, Cell { value, version: v });
                }
            }
            _ => {}
        }
    }

    /// Items for a snapshot, ordered by id so snapshots are stable.
    pub fn items(&self) -> Vec<Value> {
        let mut items: Vec<_> = self.items.iter().collect();
        items.sort_by(|a, b| a.0.cmp(b.0));
        items
            .into_iter()
            .map(|(_, i)| Value::Object(i.clone()))
            .collect()
    }

    /// Values for a snapshot, ordered by item then column.
    pub fn values(&self) -> Vec<Value> {
        let mut ids: Vec<_> = self.values.keys().collect();
        ids.sort();
        ids.into_iter()
            .flat_map(|id| {
                self.values[id].iter().map(move |(column, cell)| {
                    json!({"itemId": id, "columnId": column, "value": cell.value, "version": cell.version})
                })
            })
            .collect()
    }
}

/// What [`BoardState::apply`] keeps to undo an operation.
enum Undo {
    /// Nothing to undo.
    Nothing,
    /// The item as it was (absent: `None`).
    Item(Option<Map<String, Value>>),
    /// A column's cell as it was.
    Cell(String, Option<Cell>),
}

/// A cell from its stored text, `{"value","version"}`.
fn stored_cell(text: &str) -> Result<Cell, String> {
    let cell: Value = serde_json::from_str(text).map_err(|e| format!("stored value: {e}"))?;
    let version = cell.get("version").and_then(Value::as_u64).unwrap_or(0);
    let value = cell.get("value").cloned().unwrap_or(Value::Null);
    Ok(Cell { value, version })
}

fn cell_json(cell: &Cell) -> Value {
    json!({"value": cell.value, "version": cell.version})
}

/// A cell's share of its item's size: the column id and the cell's stored text.
fn cell_bytes(column: &str, cell: &Cell) -> usize {
    column.len() + json_len(&cell_json(cell))
}

/// Length of a value's JSON text, without keeping the text.
fn json_len(value: &impl serde::Serialize) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, value).ok();
    counter.0
}

fn too_large(message: String) -> Refusal {
    Refusal::TooLarge(message)
}

fn item_id_of(item: &Map<String, Value>) -> String {
    item.get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn version_of(item: &Map<String, Value>) -> u64 {
    item.get("version").and_then(Value::as_u64).unwrap_or(0)
}

fn bump(item: &mut Map<String, Value>) -> u64 {
    let version = version_of(item) + 1;
    item.insert("version".into(), json!(version));
    version
}

fn not_found(item_id: &str) -> Refusal {
    Refusal::NotFound(format!("no item {item_id}"))
}

fn conflict(message: String, current: Value) -> Refusal {
    Refusal::Conflict { message, current }
}

#[cfg(test)]
mod tests {
    use super::op::whole_number;
    use super::*;
    use proptest::prelude::*;

    fn items(max_items: usize) -> BoardLimits {
        BoardLimits {
            max_items,
            ..BoardLimits::NONE
        }
    }

    fn op(kind: &str, payload: Value) -> DurableOp {
        let Value::Object(map) = payload else {
            panic!("object")
        };
        DurableOp::decode(kind, map)
            .expect("valid")
            .expect("durable")
    }

    fn create(id: &str) -> DurableOp {
        op("item.created", json!({"item": {"id": id, "title": "t"}}))
    }

    #[test]
    fn a_created_item_has_version_one() {
        let mut board = BoardState::default();
        let applied = board.apply(create("a"), "u", items(10)).expect("created");
        assert_eq!(applied.payload["item"]["version"], 1);
        assert_eq!(applied.payload["userId"], "u");
        assert_eq!(
            board.items(),
            vec![json!({"id":"a","title":"t","version":1})]
        );
    }

    #[test]
    fn creating_an_existing_id_conflicts_with_the_current_item() {
        let mut board = BoardState::default();
        board.apply(create("a"), "u", items(10)).expect("created");
        let err = board
            .apply(create("a"), "u", items(10))
            .expect_err("exists");
        let Refusal::Conflict { current, .. } = err else {
            panic!("a conflict: {err:?}");
        };
        assert_eq!(current["version"], 1);
    }

    #[test]
    fn updates_merge_shallowly_and_bump_the_version() {
        let mut board = BoardState::default();
        board.apply(create("a"), "u", items(10)).expect("created");
        let applied = board
            .apply(
                op(
                    "item.updated",
                    json!({"itemId":"a","changes":{"color":"red"}}),
                ),
                "u",
                items(10),
            )
            .expect("updated");
        assert_eq!(applied.version, Some(2));
        assert_eq!(
            board.items()[0],
            json!({"id":"a","title":"t","color":"red","version":2})
        );
    }

    #[test]
    fn a_stale_expected_version_conflicts_and_changes_nothing() {
        let mut board = BoardState::default();
        board.apply(create("a"), "u", items(10)).expect("created");
        let before = board.clone();
        let err = board
            .apply(
                op(
                    "item.moved",
                    json!({"itemId":"a","groupId":"g","position":1,"expectedVersion":7}),
                ),
                "u",
                items(10),
            )
            .expect_err("stale");
        assert!(matches!(err, Refusal::Conflict { .. }), "{err:?}");
        assert_eq!(board, before);
    }

    #[test]
    fn touching_an_unknown_item_is_not_found() {
        let mut board = BoardState::default();
        for o in [
            op("item.updated", json!({"itemId":"x","changes":{}})),
            op("item.deleted", json!({"itemId":"x"})),
            op("value.set", json!({"itemId":"x","columnId":"c","value":1})),
        ] {
            let err = board.apply(o, "u", items(10)).expect_err("unknown");
            assert!(matches!(err, Refusal::NotFound(_)), "{err:?}");
        }
    }

    #[test]
    fn values_are_versioned_per_cell() {
        let mut board = BoardState::default();
        board.apply(create("a"), "u", items(10)).expect("created");
        let set = |v: i64, expected: Option<u64>| {
            op(
                "value.set",
                json!({"itemId":"a","columnId":"c","value":v,"expectedVersion":expected}),
            )
        };
        assert_eq!(
            board
                .apply(set(1, Some(0)), "u", items(10))
                .expect("first")
                .version,
            Some(1)
        );
        assert_eq!(
            board
                .apply(set(2, None), "u", items(10))
                .expect("second")
                .version,
            Some(2)
        );
        let err = board
            .apply(set(3, Some(1)), "u", items(10))
            .expect_err("stale");
        assert_eq!(
            err,
            Refusal::Conflict {
                message: err.to_string(),
                current: json!({"itemId":"a","columnId":"c","value":2,"version":2})
            }
        );
    }

    #[test]
    fn deleting_an_item_drops_its_values() {
        let mut board = BoardState::default();
        board.apply(create("a"), "u", items(10)).expect("created");
        board
            .apply(
                op("value.set", json!({"itemId":"a","columnId":"c","value":1})),
                "u",
                items(10),
            )
            .expect("set");
        let applied = board
            .apply(op("item.deleted", json!({"itemId":"a"})), "u", items(10))
            .expect("deleted");
        assert_eq!(applied.version, None);
        assert!(board.items().is_empty() && board.values().is_empty());
    }

    #[test]
    fn the_item_bound_answers_too_large() {
        let mut board = BoardState::default();
        board.apply(create("a"), "u", items(1)).expect("created");
        let err = board.apply(create("b"), "u", items(1)).expect_err("full");
        assert!(matches!(err, Refusal::TooLarge(_)), "{err:?}");
    }

    #[test]
    fn items_and_boards_are_bounded_by_bytes_and_a_refusal_changes_nothing() {
        let limits = BoardLimits {
            max_items: 100,
            max_item_bytes: 200,
            max_board_bytes: 500,
            ..BoardLimits::NONE
        };
        let mut board = BoardState::default();
        let big = op(
            "item.created",
            json!({"item":{"id":"big","t":"x".repeat(300)}}),
        );
        let err = board.apply(big, "u", limits).expect_err("item");
        assert!(matches!(err, Refusal::TooLarge(_)), "{err:?}");
        assert!(board.items().is_empty());
        assert_eq!(board.bytes(), 0);
        board.apply(create("a"), "u", limits).expect("small");
        // Values count towards their item.
        let value = |v: &str| op("value.set", json!({"itemId":"a","columnId":"c","value": v}));
        board
            .apply(value(&"v".repeat(100)), "u", limits)
            .expect("fits");
        let grown = board.clone();
        let err = board
            .apply(value(&"v".repeat(190)), "u", limits)
            .expect_err("too big");
        assert!(matches!(err, Refusal::TooLarge(_)), "{err:?}");
        assert_eq!(board, grown, "a refused value changes nothing");
        let err = board
            .apply(
                op(
                    "item.updated",
                    json!({"itemId":"a","changes":{"t":"x".repeat(150)}}),
                ),
                "u",
                limits,
            )
            .expect_err("too big");
        assert!(matches!(err, Refusal::TooLarge(_)), "{err:?}");
        assert_eq!(board, grown, "a refused update changes nothing");
        // Shrinking is always allowed.
        board.apply(value("v"), "u", limits).expect("shrinks");
        assert!(board.bytes() < grown.bytes());
        board
            .apply(op("item.deleted", json!({"itemId":"a"})), "u", limits)
            .expect("deleted");
        assert_eq!(board.bytes(), 0);
        // The board's bound: items of 100-odd bytes until 500 is reached.
        let mut board = BoardState::default();
        let mut made = 0;
        for n in 0..10 {
            let item = op(
                "item.created",
                json!({"item":{"id":format!("i{n}"),"t":"x".repeat(80)}}),
            );
            match board.apply(item, "u", limits) {
                Ok(_) => made += 1,
                Err(err) => assert!(matches!(err, Refusal::TooLarge(_)), "{err:?}"),
            }
            assert!(board.bytes() <= 500, "{}", board.bytes());
        }
        assert!((3..10).contains(&made), "{made}");
    }

    #[test]
    fn whole_numbers_may_be_written_as_floats() {
        let decoded = DurableOp::decode(
            "item.deleted",
            json!({"itemId":"a","expectedVersion":1.0})
                .as_object()
                .cloned()
                .expect("object"),
        );
        assert_eq!(
            decoded,
            Ok(Some(DurableOp::Delete {
                item_id: "a".into(),
                expected_version: Some(1)
            }))
        );
        for bad in [json!(1.5), json!(-1.0), json!("1"), json!(1e300)] {
            assert_eq!(whole_number(&bad), None, "{bad}");
        }
    }

    #[test]
    fn bad_payloads_are_refused() {
        let decode = |kind: &str, v: Value| {
            let Value::Object(map) = v else {
                panic!("object")
            };
            DurableOp::decode(kind, map)
        };
        assert!(decode("item.created", json!({"item":{"id":3}})).is_err());
        assert!(decode(
            "item.updated",
            json!({"itemId":"a","changes":{"version":3}})
        )
        .is_err());
        assert!(decode("value.set", json!({"itemId":"a","columnId":"c"})).is_err());
        assert!(decode("item.deleted", json!({"itemId":"a","expectedVersion":-1})).is_err());
        assert_eq!(decode("other.type", json!({})), Ok(None));
    }

    fn arb_op() -> impl Strategy<Value = DurableOp> {
        let id = prop::sample::select(vec!["a", "b", "c"]);
        let column = prop::sample::select(vec!["x", "y"]);
        let expected = prop::option::of(0u64..4);
        prop_oneof![
            id.clone().prop_map(create),
            (id.clone(), 0i64..5, expected.clone()).prop_map(|(id, n, e)| op(
                "item.updated",
                json!({"itemId": id, "changes": {"n": n}, "expectedVersion": e})
            )),
            (id.clone(), 0i64..3, expected.clone()).prop_map(|(id, p, e)| op(
                "item.moved",
                json!({"itemId": id, "groupId": "g", "position": p, "expectedVersion": e})
            )),
            (id.clone(), expected.clone()).prop_map(|(id, e)| op(
                "item.deleted",
                json!({"itemId": id, "expectedVersion": e})
            )),
            (id, column, 0i64..5, expected).prop_map(|(id, c, v, e)| op(
                "value.set",
                json!({"itemId": id, "columnId": c, "value": v, "expectedVersion": e})
            )),
        ]
    }

    proptest! {
        #[test]
        fn replaying_the_log_rebuilds_the_live_state(ops in prop::collection::vec(arb_op(), 0..60)) {
            let mut live = BoardState::default();
            let mut log = Vec::new();
            for o in ops {
                let limits = BoardLimits { max_item_bytes: 110, max_board_bytes: 250, ..items(2) };
                if let Ok(applied) = live.apply(o, "u", limits) {
                    log.push(applied);
                }
            }
            let mut rebuilt = BoardState::default();
            for event in &log {
                rebuilt.replay(event.kind, &event.payload);
            }
            prop_assert_eq!(rebuilt, live);
        }
    }
}
