//! Board state: items and values with their versions, and the rules of section 6.
//!
//! Pure and synchronous, so the rules are tested without a server. [`BoardState::apply`] turns
//! an operation into the event everyone else receives, or refuses it with a conflict or
//! not-found; [`BoardState::replay`] applies an already-accepted event, so that the log rebuilds
//! the same state as the live board.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value};

use crate::protocol::{string_field, ErrorCode, FrameError};

/// One durable operation a client or backend asked for.
#[derive(Clone, Debug, PartialEq)]
pub enum DurableOp {
    /// `item.created`: the item object, with a string `id`.
    Create {
        /// The item as its creator sent it.
        item: Map<String, Value>,
    },
    /// `item.updated`: shallow-merge `changes` into the item.
    Update {
        /// The item to change.
        item_id: String,
        /// Fields to replace; `id` and `version` may not be among them.
        changes: Map<String, Value>,
        /// When present, the version the client last saw.
        expected_version: Option<u64>,
    },
    /// `item.moved`: a new group and position.
    Move {
        /// The item to move.
        item_id: String,
        /// The group it moves to.
        group_id: Value,
        /// Its position within the group.
        position: Value,
        /// When present, the version the client last saw.
        expected_version: Option<u64>,
    },
    /// `item.deleted`.
    Delete {
        /// The item to delete.
        item_id: String,
        /// When present, the version the client last saw.
        expected_version: Option<u64>,
    },
    /// `value.set` on one cell.
    SetValue {
        /// The item the cell belongs to.
        item_id: String,
        /// The column of the cell.
        column_id: String,
        /// The new value.
        value: Value,
        /// When present, the cell version the client last saw (0: no value yet).
        expected_version: Option<u64>,
    },
}

impl DurableOp {
    /// Decodes the payload of a durable type; `Ok(None)` when `kind` is not durable.
    pub fn decode(
        kind: &str,
        mut payload: Map<String, Value>,
    ) -> Result<Option<DurableOp>, String> {
        let expected = |payload: &mut Map<String, Value>| match payload.remove("expectedVersion") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| "expectedVersion must be a whole number".to_string()),
        };
        let op = match kind {
            "item.created" => {
                let item = match payload.remove("item") {
                    Some(Value::Object(item)) => item,
                    _ => return Err("item.created needs an item object".into()),
                };
                match item.get("id") {
                    Some(Value::String(id)) if valid_id(id) => {}
                    _ => return Err("item.id must be a string of 1 to 128 characters".into()),
                }
                DurableOp::Create { item }
            }
            "item.updated" => {
                let item_id = item_id(&mut payload)?;
                let changes = match payload.remove("changes") {
                    Some(Value::Object(changes)) => changes,
                    _ => return Err("item.updated needs a changes object".into()),
                };
                if changes.contains_key("id") || changes.contains_key("version") {
                    return Err("changes may not set id or version".into());
                }
                DurableOp::Update {
                    item_id,
                    changes,
                    expected_version: expected(&mut payload)?,
                }
            }
            "item.moved" => DurableOp::Move {
                item_id: item_id(&mut payload)?,
                group_id: payload
                    .remove("groupId")
                    .ok_or("item.moved needs groupId")?,
                position: payload
                    .remove("position")
                    .ok_or("item.moved needs position")?,
                expected_version: expected(&mut payload)?,
            },
            "item.deleted" => DurableOp::Delete {
                item_id: item_id(&mut payload)?,
                expected_version: expected(&mut payload)?,
            },
            "value.set" => DurableOp::SetValue {
                item_id: item_id(&mut payload)?,
                column_id: string_field(&mut payload, "columnId")?,
                value: payload.remove("value").ok_or("value.set needs value")?,
                expected_version: expected(&mut payload)?,
            },
            _ => return Ok(None),
        };
        Ok(Some(op))
    }

    /// The item this operation touches.
    pub fn item_id(&self) -> &str {
        match self {
            DurableOp::Create { item } => {
                item.get("id").and_then(Value::as_str).unwrap_or_default()
            }
            DurableOp::Update { item_id, .. }
            | DurableOp::Move { item_id, .. }
            | DurableOp::Delete { item_id, .. }
            | DurableOp::SetValue { item_id, .. } => item_id,
        }
    }

    /// The column a `value.set` touches.
    pub fn column_id(&self) -> Option<&str> {
        match self {
            DurableOp::SetValue { column_id, .. } => Some(column_id),
            _ => None,
        }
    }

    /// The wire type of this operation.
    pub fn kind(&self) -> &'static str {
        match self {
            DurableOp::Create { .. } => "item.created",
            DurableOp::Update { .. } => "item.updated",
            DurableOp::Move { .. } => "item.moved",
            DurableOp::Delete { .. } => "item.deleted",
            DurableOp::SetValue { .. } => "value.set",
        }
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.chars().count() <= 128
}

fn item_id(payload: &mut Map<String, Value>) -> Result<String, String> {
    let id = string_field(payload, "itemId")?;
    if valid_id(&id) {
        Ok(id)
    } else {
        Err("itemId must be 1 to 128 characters".into())
    }
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
                let cell: Value =
                    serde_json::from_str(text).map_err(|e| format!("stored value: {e}"))?;
                let version = cell.get("version").and_then(Value::as_u64).unwrap_or(0);
                let value = cell.get("value").cloned().unwrap_or(Value::Null);
                state
                    .values
                    .entry(id.clone())
                    .or_default()
                    .insert(column.to_string(), Cell { value, version });
            }
            state.items.insert(id, item);
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
        let cell = self.values.get(item_id)?.get(column_id)?;
        Some(json!({"value": cell.value, "version": cell.version}).to_string())
    }

    /// Number of items on the board.
    pub fn item_count(&self) -> usize {
        self.items.len()
    }

    /// Applies `op` by `user_id`, or says why not. `max_items` bounds creations.
    pub fn apply(
        &mut self,
        op: DurableOp,
        user_id: &str,
        max_items: usize,
    ) -> Result<Applied, FrameError> {
        match op {
            DurableOp::Create { mut item } => {
                let id = item_id_of(&item);
                if let Some(current) = self.items.get(&id) {
                    return Err(conflict(
                        format!("item {id} exists"),
                        Value::Object(current.clone()),
                    ));
                }
                if self.items.len() >= max_items {
                    return Err(FrameError::new(
                        None,
                        ErrorCode::TooLarge,
                        format!("a board holds at most {max_items} items"),
                    ));
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
    ) -> Result<&mut Map<String, Value>, FrameError> {
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

    /// Applies an event that was accepted earlier (from the log). Events that do not fit the
    /// state are skipped: the log is the authority and was produced by [`Self::apply`].
    pub fn replay(&mut self, kind: &str, payload: &Value) {
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

fn not_found(item_id: &str) -> FrameError {
    FrameError::new(None, ErrorCode::NotFound, format!("no item {item_id}"))
}

fn conflict(message: String, current: Value) -> FrameError {
    FrameError {
        id: None,
        code: ErrorCode::Conflict,
        message,
        current: Some(current),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        let applied = board.apply(create("a"), "u", 10).expect("created");
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
        board.apply(create("a"), "u", 10).expect("created");
        let err = board.apply(create("a"), "u", 10).expect_err("exists");
        assert_eq!(err.code, ErrorCode::Conflict);
        assert_eq!(err.current.expect("current")["version"], 1);
    }

    #[test]
    fn updates_merge_shallowly_and_bump_the_version() {
        let mut board = BoardState::default();
        board.apply(create("a"), "u", 10).expect("created");
        let applied = board
            .apply(
                op(
                    "item.updated",
                    json!({"itemId":"a","changes":{"color":"red"}}),
                ),
                "u",
                10,
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
        board.apply(create("a"), "u", 10).expect("created");
        let before = board.clone();
        let err = board
            .apply(
                op(
                    "item.moved",
                    json!({"itemId":"a","groupId":"g","position":1,"expectedVersion":7}),
                ),
                "u",
                10,
            )
            .expect_err("stale");
        assert_eq!(err.code, ErrorCode::Conflict);
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
            assert_eq!(
                board.apply(o, "u", 10).expect_err("unknown").code,
                ErrorCode::NotFound
            );
        }
    }

    #[test]
    fn values_are_versioned_per_cell() {
        let mut board = BoardState::default();
        board.apply(create("a"), "u", 10).expect("created");
        let set = |v: i64, expected: Option<u64>| {
            op(
                "value.set",
                json!({"itemId":"a","columnId":"c","value":v,"expectedVersion":expected}),
            )
        };
        assert_eq!(
            board
                .apply(set(1, Some(0)), "u", 10)
                .expect("first")
                .version,
            Some(1)
        );
        assert_eq!(
            board.apply(set(2, None), "u", 10).expect("second").version,
            Some(2)
        );
        let err = board.apply(set(3, Some(1)), "u", 10).expect_err("stale");
        assert_eq!(
            err.current.expect("current"),
            json!({"itemId":"a","columnId":"c","value":2,"version":2})
        );
    }

    #[test]
    fn deleting_an_item_drops_its_values() {
        let mut board = BoardState::default();
        board.apply(create("a"), "u", 10).expect("created");
        board
            .apply(
                op("value.set", json!({"itemId":"a","columnId":"c","value":1})),
                "u",
                10,
            )
            .expect("set");
        let applied = board
            .apply(op("item.deleted", json!({"itemId":"a"})), "u", 10)
            .expect("deleted");
        assert_eq!(applied.version, None);
        assert!(board.items().is_empty() && board.values().is_empty());
    }

    #[test]
    fn the_item_bound_answers_too_large() {
        let mut board = BoardState::default();
        board.apply(create("a"), "u", 1).expect("created");
        assert_eq!(
            board.apply(create("b"), "u", 1).expect_err("full").code,
            ErrorCode::TooLarge
        );
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
                if let Ok(applied) = live.apply(o, "u", 2) {
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
