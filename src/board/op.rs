//! The durable operations of section 6, decoded from a client's frame or a backend's request:
//! every field checked, nothing trusted.

use serde_json::{json, Map, Value};

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
            Some(v) => whole_number(&v)
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

    /// The payload this operation was decoded from, as far as it matters (for digests).
    pub fn payload(&self) -> Value {
        match self {
            DurableOp::Create { item } => json!({ "item": item }),
            DurableOp::Update {
                item_id,
                changes,
                expected_version,
            } => {
                json!({"itemId": item_id, "changes": changes, "expectedVersion": expected_version})
            }
            DurableOp::Move {
                item_id,
                group_id,
                position,
                expected_version,
            } => json!({"itemId": item_id, "groupId": group_id, "position": position,
                        "expectedVersion": expected_version}),
            DurableOp::Delete {
                item_id,
                expected_version,
            } => json!({"itemId": item_id, "expectedVersion": expected_version}),
            DurableOp::SetValue {
                item_id,
                column_id,
                value,
                expected_version,
            } => json!({"itemId": item_id, "columnId": column_id, "value": value,
                        "expectedVersion": expected_version}),
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

/// A whole number at or above 0, also when written as a float (`1.0`): JSON does not tell the
/// two apart and some encoders write every number as a float.
pub(crate) fn whole_number(v: &Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let f = v.as_f64()?;
    (f >= 0.0 && f.fract() == 0.0 && f < 9_007_199_254_740_992.0).then_some(f as u64)
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

/// Takes a required string field out of a payload.
pub fn string_field(payload: &mut Map<String, Value>, name: &str) -> Result<String, String> {
    match payload.remove(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("{name} must be a string")),
        None => Err(format!("{name} is required")),
    }
}
