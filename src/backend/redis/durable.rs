//! Durable events in Redis: operations checked, applied, sequenced, logged and published by
//! one script (`lua/commit.lua`), retries answered from their records, and catch-ups.

use super::*;

impl RedisBackend {
    /// Applies a durable operation, sequencing and publishing its event. A retry of an
    /// operation answered before (same `key`) gets that answer again, applied or refused.
    pub async fn append(
        &self,
        board: &BoardKey,
        op: DurableOp,
        user_id: &str,
        ack: Option<(SessionId, Option<String>)>,
        key: Option<&OpKey>,
    ) -> Result<Appended, BackendError> {
        let keys = self.board(board);
        let item_id = op.item_id().to_string();
        let column = op.column_id().map(str::to_string);
        let items_key = keys.key("items");
        let values_key = keys.key(&format!("v:{item_id}"));
        let mut conn = self.conn();
        for _ in 0..COMMIT_TRIES {
            // What the rules need, and the answer to an earlier try, in one round trip.
            let (item_text, cell_text, record): (Option<String>, Option<String>, Option<String>) =
                redis::pipe()
                    .hget(&items_key, &item_id)
                    .hget(&values_key, column.as_deref().unwrap_or_default())
                    .hget(keys.key("ops"), key.map_or("", |k| k.field.as_str()))
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
            let cell_text = cell_text.filter(|_| column.is_some());
            if let Some(outcome) = key.and_then(|k| earlier_answer(k, record.as_deref())) {
                return replayed(outcome);
            }
            let cell = column.as_deref().zip(cell_text.as_deref());
            let mut state =
                BoardState::from_stored(item_text.as_deref(), cell).map_err(bad_data)?;
            // The bounds are checked by the script, which sees the whole board.
            let applied = match state.apply(op.clone(), user_id, BoardLimits::NONE) {
                Ok(applied) => applied,
                Err(err) => return Err(self.remember_refusal(&keys, key, err).await),
            };
            let kind = match op {
                DurableOp::Create { .. } => "create",
                DurableOp::Delete { .. } => "delete",
                DurableOp::SetValue { .. } => "value",
                _ => "update",
            };
            let ack_json = ack_json(&ack, applied.version);
            let new_cell = column
                .as_deref()
                .and_then(|c| state.cell_text(&item_id, c))
                .unwrap_or_default();
            let mut inv = self.scripts.commit.prepare_invoke();
            inv.key(&items_key)
                .key(&values_key)
                .arg(kind)
                .arg(&item_id)
                .arg(item_text.as_deref().unwrap_or_default())
                .arg(state.item_text(&item_id).unwrap_or_default())
                .arg(column.as_deref().unwrap_or_default())
                .arg(cell_text.as_deref().unwrap_or_default())
                .arg(new_cell)
                .arg(frame_prefix(applied.kind, &applied.payload))
                .arg(ack_json);
            self.commit_args(&mut inv, board, &keys, key, applied.version);
            let reply: RedisValue = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
            let refusal = match self.commit_reply(reply, key)? {
                CommitReply::Seq(seq) => {
                    self.hint_due(board).await;
                    return Ok(Appended {
                        seq,
                        version: applied.version,
                        replayed: false,
                    });
                }
                CommitReply::Earlier(outcome) => return replayed(outcome),
                CommitReply::Retry => continue,
                CommitReply::Refused(refusal) => refusal,
            };
            return Err(self.remember_refusal(&keys, key, refusal).await);
        }
        Err(BackendError::unavailable_now(
            "the item changes too fast; retry",
        ))
    }

    /// The keys and arguments every commit takes after the operation's own.
    pub(super) fn commit_args(
        &self,
        inv: &mut redis::ScriptInvocation<'_>,
        board: &BoardKey,
        keys: &BoardKeys,
        key: Option<&OpKey>,
        version: Option<u64>,
    ) {
        for suffix in [
            "seq", "log", "ch", "sizes", "bytes", "logbytes", "ops", "opsorder", "epoch", "wh",
            "wh:n",
        ] {
            inv.key(keys.key(suffix));
        }
        inv.key(self.webhook_due_key(board));
        inv.arg(self.limits.replay_events)
            .arg(self.limits.max_items)
            .arg(self.limits.max_item_bytes)
            .arg(self.limits.max_board_bytes)
            .arg(self.limits.replay_bytes)
            .arg(key.map_or("", |k| k.field.as_str()))
            .arg(key.map_or("", |k| k.digest.as_str()))
            .arg(now_ms())
            .arg(ops::RETENTION.as_millis() as u64)
            .arg(ops::MAX_RECORDS)
            .arg(version.map_or_else(|| "null".to_string(), |v| v.to_string()))
            .arg(new_epoch())
            .arg(board_record(board));
    }

    /// Reads what the commit script answered.
    pub(super) fn commit_reply(
        &self,
        reply: RedisValue,
        key: Option<&OpKey>,
    ) -> Result<CommitReply, BackendError> {
        if let RedisValue::Int(seq) = reply {
            return Ok(CommitReply::Seq(seq as u64));
        }
        if let RedisValue::Push { kind, .. } = &reply {
            // On a cluster, a node that lost a slot sends its subscribers an unasked
            // `sunsubscribe`, and the client takes it for the reply to the oldest request on
            // that connection. Whether the script ran is unknown: the client retries, and an
            // operation with an id is then answered from its record.
            log::warn!("redis answered a commit with a {kind:?} push; the client retries");
            return Err(BackendError::unavailable_now(
                "the backend answered out of turn; retry",
            ));
        }
        if let RedisValue::Array(parts) = &reply {
            if let (Some(tag), Some(text), Some(key)) = (
                parts.first().and_then(status_text),
                parts.get(1).and_then(text_of),
                key,
            ) {
                if tag == "dup" {
                    let record = format!("{}\n{text}", key.digest);
                    return earlier_answer(key, Some(&record))
                        .map(CommitReply::Earlier)
                        .ok_or_else(|| bad_data(format!("operation record {text:?}")));
                }
            }
        }
        let limit = |message: String| Ok(CommitReply::Refused(too_large(message)));
        match status_text(&reply).as_deref() {
            Some("retry") => Ok(CommitReply::Retry),
            Some("full") => limit(format!(
                "a board holds at most {} items",
                self.limits.max_items
            )),
            Some("item_bytes") => limit(format!(
                "an item holds at most {} bytes with its values",
                self.limits.max_item_bytes
            )),
            Some("board_bytes") => limit(format!(
                "a board holds at most {} bytes",
                self.limits.max_board_bytes
            )),
            _ => Err(bad_data(format!("commit answered {reply:?}"))),
        }
    }

    /// Records a refusal under the operation's key, so that a retry is refused alike; returns
    /// the refusal. Recording is best effort: a retry that finds no record is judged again.
    pub(super) async fn remember_refusal(
        &self,
        keys: &BoardKeys,
        key: Option<&OpKey>,
        refusal: Refusal,
    ) -> BackendError {
        let Some(key) = key else {
            return refusal.into();
        };
        let text = format!(
            "{}\n{}",
            key.digest,
            ops::outcome_text(&Err(refusal.clone()))
        );
        let recorded = redis::pipe()
            .hset(keys.key("ops"), &key.field, text)
            .zadd(keys.key("opsorder"), &key.field, now_ms())
            .query_async::<()>(&mut self.conn())
            .await;
        if let Err(err) = recorded {
            log::warn!("a refusal was not recorded for retries: {err}");
        }
        refusal.into()
    }

    /// Sequences, logs and publishes a backend's own event type; a retry (same `key`) gets
    /// the first seq.
    pub async fn append_custom(
        &self,
        board: &BoardKey,
        kind: &str,
        payload: &Value,
        key: Option<&OpKey>,
    ) -> Result<u64, BackendError> {
        let keys = self.board(board);
        let mut conn = self.conn();
        let mut inv = self.scripts.commit.prepare_invoke();
        inv.key(keys.key("items"))
            .key(keys.key("v:"))
            .arg("custom")
            .arg("")
            .arg("")
            .arg("")
            .arg("")
            .arg("")
            .arg("")
            .arg(frame_prefix(kind, payload))
            .arg("null");
        self.commit_args(&mut inv, board, &keys, key, None);
        let reply: RedisValue = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
        match self.commit_reply(reply, key)? {
            CommitReply::Seq(seq) => {
                self.hint_due(board).await;
                Ok(seq)
            }
            CommitReply::Earlier(outcome) => Ok(outcome.map(|(seq, _)| seq)?),
            CommitReply::Retry | CommitReply::Refused(_) => {
                Err(bad_data("a custom event was refused"))
            }
        }
    }

    pub(super) async fn run_catchup(
        &self,
        board: &BoardKey,
        last_seq: Option<u64>,
        mode: &str,
        (epoch, frame): (&str, &str),
    ) -> Result<RedisValue, BackendError> {
        let keys = self.board(board);
        let mut conn = self.conn();
        self.scripts
            .catchup
            .key(keys.key("items"))
            .key(keys.key("seq"))
            .key(keys.key("log"))
            .key(keys.key("v:"))
            .key(keys.key("epoch"))
            .arg(last_seq.map(|n| n.to_string()).unwrap_or_default())
            .arg(mode)
            .arg(epoch)
            .arg(new_epoch())
            .arg(frame)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)
    }

    /// A snapshot, or the retained events after `last_seq` when they are of `epoch` (or no
    /// epoch is given).
    pub async fn catchup(
        &self,
        board: &BoardKey,
        last_seq: Option<u64>,
        epoch: Option<&str>,
    ) -> Result<Catchup, BackendError> {
        let reply = self
            .run_catchup(board, last_seq, "session", (epoch.unwrap_or_default(), ""))
            .await?;
        let parts = array(reply)?;
        let tag = parts.first().and_then(status_text).unwrap_or_default();
        let seq = parts.get(1).and_then(int).unwrap_or(0);
        match (tag.as_str(), last_seq) {
            ("R", Some(n)) => {
                let epoch = parts.get(3).and_then(text_of).unwrap_or_default();
                let entries = log_entries(parts.into_iter().nth(2).unwrap_or(RedisValue::Nil))?;
                Ok(Catchup::Replay {
                    from: n + 1,
                    to: seq,
                    frames: entries.into_iter().map(|(_, frame, _)| frame).collect(),
                    epoch,
                })
            }
            ("S", _) => {
                let epoch = parts.get(4).and_then(text_of).unwrap_or_default();
                let mut parts = parts.into_iter().skip(2);
                let items = pairs(parts.next().unwrap_or(RedisValue::Nil))?;
                let cells = array(parts.next().unwrap_or(RedisValue::Nil))?;
                let mut items: Vec<(String, Value)> = items
                    .into_iter()
                    .map(|(id, text)| {
                        serde_json::from_str(&text)
                            .map(|v| (id, v))
                            .map_err(bad_data)
                    })
                    .collect::<Result<_, _>>()?;
                items.sort_by(|a, b| a.0.cmp(&b.0));
                let mut values = vec![];
                for triple in cells.chunks(3) {
                    let [item, column, text] = triple else { break };
                    let (Some(item), Some(column), Some(text)) =
                        (text_of(item), text_of(column), text_of(text))
                    else {
                        return Err(bad_data("a value entry is not text"));
                    };
                    let cell: Value = serde_json::from_str(&text).map_err(bad_data)?;
                    values.push(json!({"itemId": item, "columnId": column, "value": cell["value"], "version": cell["version"]}));
                }
                values.sort_by(|a, b| {
                    (a["itemId"].as_str(), a["columnId"].as_str())
                        .cmp(&(b["itemId"].as_str(), b["columnId"].as_str()))
                });
                Ok(Catchup::Snapshot {
                    seq,
                    items: items.into_iter().map(|(_, v)| v).collect(),
                    values,
                    resync: last_seq.is_some(),
                    epoch,
                })
            }
            _ => Err(bad_data(format!("catch-up answered {tag:?}"))),
        }
    }

    /// The events after `after`, with their acks, for a room filling a gap; gone when they are
    /// no longer retained; the board's epoch when it is no longer `epoch` ("": not known), or
    /// a new one when the store no longer holds `after` as the room delivered it (its `frame`,
    /// when known): the store lost events (a failover to a replica behind its master), and
    /// every client must resync.
    pub async fn events_after(
        &self,
        board: &BoardKey,
        (after, frame): (u64, Option<&str>),
        epoch: &str,
    ) -> Result<Filled, BackendError> {
        let reply = self
            .run_catchup(
                board,
                Some(after),
                "events",
                (epoch, frame.unwrap_or_default()),
            )
            .await?;
        let parts = array(reply)?;
        match parts.first().and_then(status_text).as_deref() {
            Some("R") => {}
            Some("L") => {
                let epoch = parts.get(2).and_then(text_of).unwrap_or_default();
                return Ok(Filled::Reset(epoch));
            }
            _ => return Ok(Filled::Gone),
        }
        let epoch = parts.get(3).and_then(text_of).unwrap_or_default();
        let entries = log_entries(parts.into_iter().nth(2).unwrap_or(RedisValue::Nil))?;
        Ok(Filled::Events(
            entries
                .into_iter()
                .map(|(seq, frame, ack)| BoardEvent::Durable {
                    seq,
                    frame,
                    ack,
                    epoch: epoch.clone(),
                })
                .collect(),
        ))
    }
}

/// The frame of an event up to its `seq` value: the script appends the seq and `}`.
pub(super) fn frame_prefix(kind: &str, payload: &Value) -> String {
    let mut frame = encode(kind, payload, None).to_string();
    frame.pop();
    frame.push_str(",\"seq\":");
    frame
}

pub(super) fn ack_json(ack: &Option<(SessionId, Option<String>)>, version: Option<u64>) -> String {
    match ack {
        Some((session, id)) => serde_json::to_string(&AckTo {
            session: *session,
            id: id.clone(),
            version,
        })
        .unwrap_or_else(|_| "null".into()),
        None => "null".into(),
    }
}

/// What a commit script answered.
pub(super) enum CommitReply {
    /// Applied with this seq.
    Seq(u64),
    /// Answered before under the same key.
    Earlier(ops::Outcome),
    /// The item or cell changed since it was read.
    Retry,
    /// A bound was reached.
    Refused(Refusal),
}

/// The earlier answer a record holds for this operation, if it is the same operation.
pub(super) fn earlier_answer(key: &OpKey, record: Option<&str>) -> Option<ops::Outcome> {
    let (digest, outcome) = record?.split_once('\n')?;
    if digest != key.digest {
        return None;
    }
    ops::parse_outcome(outcome)
}

/// The answer to a retry.
pub(super) fn replayed(outcome: ops::Outcome) -> Result<Appended, BackendError> {
    Ok(outcome.map(|(seq, version)| Appended {
        seq,
        version,
        replayed: true,
    })?)
}
