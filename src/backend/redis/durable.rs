//! Durable events in Redis: operations checked, applied, sequenced, logged and published by
//! one script (`lua/commit.lua`), retries answered from their records, and catch-ups.

use super::*;
use crate::backend::Append;

impl RedisBackend {
    /// Applies durable operations of one board in order, sequencing and publishing their
    /// events with one script call for the whole batch (and one read before it, unless
    /// `cache` holds what the batch reads); an answer per operation, in order. A retry of an
    /// operation answered before (same `key`) gets that answer again, applied or refused. The
    /// script's compare-and-set judges every operation on the stored texts, whether staged on
    /// the cache or on the read.
    pub(crate) async fn append_batch(
        &self,
        board: &BoardKey,
        batch: &[Append],
        cache: &mut ReadCache,
    ) -> Vec<Result<Appended, BackendError>> {
        let mut answers: Vec<Option<Result<Appended, BackendError>>> =
            batch.iter().map(|_| None).collect();
        if let Err(e) = self.commit_batch(board, batch, &mut answers, cache).await {
            cache.clear();
            for answer in answers.iter_mut().filter(|a| a.is_none()) {
                *answer = Some(Err(e.clone()));
            }
        }
        let committed = answers.iter().any(|a| {
            matches!(
                a,
                Some(Ok(Appended {
                    replayed: false,
                    ..
                }))
            )
        });
        if committed {
            self.hint_due(board).await;
        }
        answers
            .into_iter()
            .map(|a| {
                a.unwrap_or_else(|| {
                    Err(BackendError::unavailable_now(
                        "the item changes too fast; retry",
                    ))
                })
            })
            .collect()
    }

    /// Fills `answers` for the operations of `batch` that get one; those whose item kept
    /// changing under them for [`COMMIT_TRIES`] rounds stay `None`.
    async fn commit_batch(
        &self,
        board: &BoardKey,
        batch: &[Append],
        answers: &mut [Option<Result<Appended, BackendError>>],
        cache: &mut ReadCache,
    ) -> Result<(), BackendError> {
        let keys = self.board(board);
        let mut todo: Vec<usize> = (0..batch.len()).collect();
        let mut conflicts = 0;
        while !todo.is_empty() && conflicts < COMMIT_TRIES {
            // From the cache when every operation stages on what it holds; anything else
            // (a refusal, an item it does not hold) is judged on the board as read.
            let (view, staged, deferred) = match cache.stage(batch, &todo) {
                Some((view, staged)) => (view, staged, Vec::new()),
                None => {
                    cache.clear();
                    self.stage_read(&keys, batch, &todo, answers).await?
                }
            };
            // Nothing staged means nothing deferred either: every operation is answered.
            if staged.is_empty() {
                break;
            }
            let ops: Vec<&Staged> = staged.iter().map(|(_, op)| op).collect();
            let replies = self.commit(board, &keys, &ops).await?;
            let mut again = Vec::new();
            let all_applied = self
                .take_replies(&keys, batch, &staged, replies, answers, &mut again)
                .await;
            // An operation refused or answered from its record left the board otherwise than
            // staged.
            if all_applied {
                cache.absorb(view);
            } else {
                cache.clear();
            }
            if !again.is_empty() {
                conflicts += 1;
            }
            again.extend(deferred);
            todo = again;
        }
        Ok(())
    }

    /// Reads what the operations of `todo` need and stages them on it: the view they leave,
    /// those staged, and those deferred to the next round. Each operation is judged on the
    /// state the ones before it in the batch leave. A refusal is final (and answered here, as
    /// is a retry answered from its record) only when it was judged on the board as read:
    /// after an operation staged before it, whose commit may still fail, it waits for the
    /// next round with the operations after it.
    async fn stage_read(
        &self,
        keys: &BoardKeys,
        batch: &[Append],
        todo: &[usize],
        answers: &mut [Option<Result<Appended, BackendError>>],
    ) -> Result<(BatchView, Vec<(usize, Staged)>, Vec<usize>), BackendError> {
        let mut stored = self.read(keys, batch, todo).await?.into_iter();
        let mut view = BatchView::default();
        let mut staged: Vec<(usize, Staged)> = Vec::new();
        let mut deferred = Vec::new();
        for &i in todo {
            let (item, cell, record) = stored.next().unwrap_or_default();
            let append = &batch[i];
            let key = append.key.as_ref();
            if !deferred.is_empty() {
                deferred.push(i);
                continue;
            }
            if let Some(outcome) = key.and_then(|k| earlier_answer(k, record.as_deref())) {
                answers[i] = Some(replayed(outcome));
                continue;
            }
            match stage(append, &mut view, (item, cell)) {
                Ok(Ok(op)) => staged.push((i, op)),
                Ok(Err(_)) if !staged.is_empty() => deferred.push(i),
                Ok(Err(refusal)) => {
                    answers[i] = Some(Err(self.remember_refusal(keys, key, refusal).await))
                }
                Err(e) => answers[i] = Some(Err(e)),
            }
        }
        Ok((view, staged, deferred))
    }

    /// What the rules need of each operation of `todo`, and the answer to an earlier try of
    /// it, in one round trip: (item, cell, record) per operation.
    async fn read(
        &self,
        keys: &BoardKeys,
        batch: &[Append],
        todo: &[usize],
    ) -> Result<Vec<(Option<String>, Option<String>, Option<String>)>, BackendError> {
        let (items_key, ops_key) = (keys.key("items"), keys.key("ops"));
        let mut read = redis::pipe();
        for &i in todo {
            let append = &batch[i];
            let item_id = append.op.item_id();
            read.hget(&items_key, item_id)
                .hget(
                    keys.key(&format!("v:{item_id}")),
                    append.op.column_id().unwrap_or_default(),
                )
                .hget(
                    &ops_key,
                    append.key.as_ref().map_or("", |k| k.field.as_str()),
                );
        }
        let stored: Vec<Option<String>> = read
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if stored.len() != todo.len() * 3 {
            return Err(bad_data(format!(
                "{} answers to {} reads",
                stored.len(),
                todo.len() * 3
            )));
        }
        let mut stored = stored.into_iter();
        Ok(todo
            .iter()
            .map(|_| {
                (
                    stored.next().flatten(),
                    stored.next().flatten(),
                    stored.next().flatten(),
                )
            })
            .collect())
    }

    /// Answers the staged operations from the script's replies; those to try again go to
    /// `again`. True when every one was applied.
    async fn take_replies(
        &self,
        keys: &BoardKeys,
        batch: &[Append],
        staged: &[(usize, Staged)],
        replies: Vec<CommitReply>,
        answers: &mut [Option<Result<Appended, BackendError>>],
        again: &mut Vec<usize>,
    ) -> bool {
        let mut all_applied = true;
        for ((i, op), reply) in staged.iter().zip(replies) {
            let key = batch[*i].key.as_ref();
            all_applied &= matches!(reply, CommitReply::Seq(_));
            answers[*i] = Some(match reply {
                CommitReply::Seq(seq) => Ok(Appended {
                    seq,
                    version: op.version,
                    replayed: false,
                }),
                CommitReply::Earlier(outcome) => replayed(outcome),
                CommitReply::Retry => {
                    again.push(*i);
                    continue;
                }
                CommitReply::Refused(refusal) => {
                    Err(self.remember_refusal(keys, key, refusal).await)
                }
            });
        }
        all_applied
    }

    /// Runs the commit script over the staged operations of a board; a reply per operation.
    async fn commit(
        &self,
        board: &BoardKey,
        keys: &BoardKeys,
        staged: &[&Staged],
    ) -> Result<Vec<CommitReply>, BackendError> {
        let mut inv = self.scripts.commit.prepare_invoke();
        for suffix in [
            "items", "seq", "log", "ch", "sizes", "bytes", "logbytes", "ops", "opsorder", "epoch",
            "wh", "wh:n",
        ] {
            inv.key(keys.key(suffix));
        }
        inv.key(self.webhook_due_key(board));
        inv.arg(self.limits.replay_events)
            .arg(self.limits.max_items)
            .arg(self.limits.max_item_bytes)
            .arg(self.limits.max_board_bytes)
            .arg(self.limits.replay_bytes)
            .arg(now_ms())
            .arg(ops::RETENTION.as_millis() as u64)
            .arg(ops::MAX_RECORDS)
            .arg(new_epoch())
            .arg(board_record(board));
        for op in staged {
            let key = op.key.as_ref();
            inv.key(keys.key(&format!("v:{}", op.item_id)));
            inv.arg(op.kind)
                .arg(&op.item_id)
                .arg(&op.item_read)
                .arg(&op.new_item)
                .arg(&op.column)
                .arg(&op.cell_read)
                .arg(&op.new_cell)
                .arg(&op.prefix)
                .arg(&op.ack)
                .arg(key.map_or("", |k| k.field.as_str()))
                .arg(key.map_or("", |k| k.digest.as_str()))
                .arg(
                    op.version
                        .map_or_else(|| "null".to_string(), |v| v.to_string()),
                );
        }
        let reply: RedisValue = inv
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let parts = match reply {
            RedisValue::Array(parts) if parts.len() == staged.len() => parts,
            other => return Err(self.out_of_turn(other)),
        };
        parts
            .into_iter()
            .zip(staged)
            .map(|(part, op)| self.commit_reply(part, op.key.as_ref()))
            .collect()
    }

    /// The error for a commit answered with something else than an answer per operation.
    fn out_of_turn(&self, reply: RedisValue) -> BackendError {
        if let RedisValue::Push { kind, .. } = &reply {
            // On a cluster, a node that lost a slot sends its subscribers an unasked
            // `sunsubscribe`, and the client takes it for the reply to the oldest request on
            // that connection. Whether the script ran is unknown: the client retries, and an
            // operation with an id is then answered from its record.
            log::warn!("redis answered a commit with a {kind:?} push; the client retries");
            return BackendError::unavailable_now("the backend answered out of turn; retry");
        }
        bad_data(format!("commit answered {reply:?}"))
    }

    /// Reads what the commit script answered for one operation.
    pub(super) fn commit_reply(
        &self,
        reply: RedisValue,
        key: Option<&OpKey>,
    ) -> Result<CommitReply, BackendError> {
        if let RedisValue::Int(seq) = reply {
            return Ok(CommitReply::Seq(seq as u64));
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
            Some("retry") | Some("later") => Ok(CommitReply::Retry),
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
        let op = Staged {
            kind: "custom",
            item_id: String::new(),
            column: String::new(),
            key: key.cloned(),
            item_read: String::new(),
            new_item: String::new(),
            cell_read: String::new(),
            new_cell: String::new(),
            prefix: frame_prefix(kind, payload),
            ack: "null".into(),
            version: None,
        };
        let reply = self.commit(board, &keys, &[&op]).await?.into_iter().next();
        match reply {
            Some(CommitReply::Seq(seq)) => {
                self.hint_due(board).await;
                Ok(seq)
            }
            Some(CommitReply::Earlier(outcome)) => Ok(outcome.map(|(seq, _)| seq)?),
            _ => Err(bad_data("a custom event was refused")),
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

/// Applies the board rules to one operation on what `view` holds of its item and cell
/// (else what was read), and records its result in `view` for the operations after it.
fn stage(
    append: &Append,
    view: &mut BatchView,
    (item_read, cell_read): (Option<String>, Option<String>),
) -> Result<Result<Staged, Refusal>, BackendError> {
    let item_id = append.op.item_id().to_string();
    let column = append.op.column_id().map(str::to_string);
    let item_text = view.item(&item_id, item_read);
    let cell_text = column
        .as_deref()
        .and_then(|c| view.cell(&item_id, c, cell_read));
    let cell = column.as_deref().zip(cell_text.as_deref());
    let mut state = BoardState::from_stored(item_text.as_deref(), cell).map_err(bad_data)?;
    // The bounds are checked by the script, which sees the whole board.
    let applied = match state.apply(append.op.clone(), &append.user_id, BoardLimits::NONE) {
        Ok(applied) => applied,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let kind = match append.op {
        DurableOp::Create { .. } => "create",
        DurableOp::Delete { .. } => "delete",
        DurableOp::SetValue { .. } => "value",
        _ => "update",
    };
    let new_item = state.item_text(&item_id);
    let new_cell = column.as_deref().and_then(|c| state.cell_text(&item_id, c));
    view.wrote(
        &item_id,
        kind,
        new_item.clone(),
        column.as_deref(),
        new_cell.clone(),
    );
    Ok(Ok(Staged {
        kind,
        key: append.key.clone(),
        column: column.unwrap_or_default(),
        item_id,
        item_read: item_text.unwrap_or_default(),
        new_item: new_item.unwrap_or_default(),
        cell_read: cell_text.unwrap_or_default(),
        new_cell: new_cell.unwrap_or_default(),
        prefix: frame_prefix(applied.kind, &applied.payload),
        ack: ack_json(&append.ack, applied.version),
        version: applied.version,
    }))
}

/// One operation of a batch as the commit script takes it: the texts it read and those it
/// writes, its event up to the seq, and its ack.
pub(super) struct Staged {
    kind: &'static str,
    item_id: String,
    column: String,
    key: Option<OpKey>,
    item_read: String,
    new_item: String,
    cell_read: String,
    new_cell: String,
    prefix: String,
    ack: String,
    version: Option<u64>,
}

/// What the operations staged so far in a batch left of the items and cells they touched;
/// what they did not touch is read from the store.
#[derive(Default)]
pub(super) struct BatchView {
    /// Item id → its text after the batch's operations so far (`None`: absent).
    items: HashMap<String, Option<String>>,
    /// (item id, column) → the cell's text after them.
    cells: HashMap<(String, String), Option<String>>,
    /// Items deleted in the batch: their cells are gone, whatever the store held.
    deleted: std::collections::HashSet<String>,
}

impl BatchView {
    fn item(&self, item_id: &str, read: Option<String>) -> Option<String> {
        match self.items.get(item_id) {
            Some(text) => text.clone(),
            None => read,
        }
    }

    fn cell(&self, item_id: &str, column: &str, read: Option<String>) -> Option<String> {
        match self.cells.get(&(item_id.to_string(), column.to_string())) {
            Some(text) => text.clone(),
            None if self.deleted.contains(item_id) => None,
            None => read,
        }
    }

    fn wrote(
        &mut self,
        item_id: &str,
        kind: &str,
        item: Option<String>,
        column: Option<&str>,
        cell: Option<String>,
    ) {
        if kind == "delete" {
            self.deleted.insert(item_id.to_string());
            self.cells.retain(|(item, _), _| item != item_id);
        }
        self.items.insert(item_id.to_string(), item);
        if let Some(column) = column {
            self.cells
                .insert((item_id.to_string(), column.to_string()), cell);
        }
    }
}

/// What a board's items and cells held after this instance's last commit of the board, so
/// that the next batch of the board need not read them first. It may be stale (another
/// instance wrote since): the commit script compares every text an operation was staged on
/// with the stored one and answers `retry` when they differ, which clears the cache; a
/// refusal is never judged on it.
#[derive(Default)]
pub(crate) struct ReadCache {
    items: HashMap<String, Option<String>>,
    cells: HashMap<(String, String), Option<String>>,
    /// Bytes of the ids and texts held, kept within [`CACHE_BYTES`].
    bytes: usize,
}

/// Bytes of ids and texts a board's [`ReadCache`] holds at most; past it, it is emptied.
const CACHE_BYTES: usize = 16 * 1024;

impl ReadCache {
    /// Forgets everything: the next batch reads.
    pub(crate) fn clear(&mut self) {
        *self = ReadCache::default();
    }

    /// The operations of `todo` staged on what the cache holds, with the view they leave;
    /// `None` when it lacks an item or cell one of them reads, or when one is refused.
    fn stage(&self, batch: &[Append], todo: &[usize]) -> Option<(BatchView, Vec<(usize, Staged)>)> {
        let mut view = BatchView::default();
        let mut staged = Vec::with_capacity(todo.len());
        for &i in todo {
            let append = &batch[i];
            let item_id = append.op.item_id();
            let item = self.items.get(item_id)?.clone();
            let cell = match append.op.column_id() {
                Some(column) => self
                    .cells
                    .get(&(item_id.to_string(), column.to_string()))?
                    .clone(),
                None => None,
            };
            match stage(append, &mut view, (item, cell)) {
                Ok(Ok(op)) => staged.push((i, op)),
                _ => return None,
            }
        }
        Some((view, staged))
    }

    /// Takes in what a batch whose every operation was applied left of the items and cells
    /// it touched.
    fn absorb(&mut self, view: BatchView) {
        let size = |text: &Option<String>| text.as_ref().map_or(0, String::len);
        let mut bytes = self.bytes;
        if !view.deleted.is_empty() {
            self.cells.retain(|(item, column), text| {
                let keep = !view.deleted.contains(item);
                if !keep {
                    bytes = bytes.saturating_sub(item.len() + column.len() + size(text));
                }
                keep
            });
        }
        for (id, text) in view.items {
            let id_len = id.len();
            bytes += id_len + size(&text);
            if let Some(old) = self.items.insert(id, text) {
                bytes = bytes.saturating_sub(id_len + size(&old));
            }
        }
        for (at, text) in view.cells {
            let at_len = at.0.len() + at.1.len();
            bytes += at_len + size(&text);
            if let Some(old) = self.cells.insert(at, text) {
                bytes = bytes.saturating_sub(at_len + size(&old));
            }
        }
        self.bytes = bytes;
        if self.bytes > CACHE_BYTES {
            self.clear();
        }
    }
}
