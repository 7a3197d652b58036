//! The Redis backend: board state, sequence numbers, replay logs and presence in Redis, and
//! board and user channels over its pub/sub, so that any number of instances act as one.
//!
//! Layout of the keys, all under `REDIS_PREFIX` (default `bc`), with the board part in `{}` so
//! a board's keys stay together under Redis Cluster:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:{board\|tenant}:items` | hash | item id → item JSON (with `version`) |
//! | `P:{board\|tenant}:v:ITEM` | hash | column → `{"value","version"}` |
//! | `P:{board\|tenant}:seq` | string | the board's last seq |
//! | `P:{board\|tenant}:log` | stream | the last events within `REPLAY_EVENTS` and `REPLAY_BYTES`, id `SEQ-1` |
//! | `P:{board\|tenant}:logbytes` | string | bytes of the frames in the log |
//! | `P:{board\|tenant}:sizes` | hash | item id → bytes of the item and its values |
//! | `P:{board\|tenant}:bytes` | string | bytes of all items and values |
//! | `P:{board\|tenant}:p:*` | hashes | presence: sessions, info, color, status, count, order, rev |
//! | `P:{board\|tenant}:ch` | channel | the board's events |
//! | `P:user:{tenant\|user}` | channel | events for one user |
//! | `P:instances` | sorted set | instance id → lease expiry (ms) |
//! | `P:instance:ID:boards` | set | boards where instance ID has sessions now |
//! | `P:{board\|tenant}:p:inst` | hash | instance id → its sessions on the board |
//! | `P:instance:ID:swept` | string | set while instance ID is swept, for an hour |
//!
//! Everything that must be atomic is a Lua script (`lua/`): a durable operation is checked,
//! written, sequenced, logged and published in one script, so `seq` has no gaps and pub/sub
//! order is `seq` order; presence transitions are decided and published in one script each.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytestring::ByteString;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script, Value as RedisValue};
use serde_json::{json, Value};

use crate::backend::ops::{self, OpKey};
use crate::backend::presence::{Arrived, PALETTE};
use crate::backend::{new_epoch, Appended, Catchup};
use crate::board::{BoardLimits, BoardState, DurableOp};
use crate::event::{AckTo, BoardEvent, BoardKey, PresentUser, SessionId, UserInfo};
use crate::protocol::{encode, ErrorCode, FrameError, Status};

/// How long an instance's lease lasts without renewal; its sessions are purged after that.
pub const LEASE: Duration = Duration::from_secs(4);
/// How often leases are renewed and dead instances swept.
pub const LEASE_TICK: Duration = Duration::from_secs(1);
/// Tries of a durable operation whose item changed under it before giving up.
const COMMIT_TRIES: usize = 32;

const COMMIT_LUA: &str = include_str!("lua/commit.lua");
const CATCHUP_LUA: &str = include_str!("lua/catchup.lua");
const PRESENCE_LUA: &str = include_str!("lua/presence.lua");
const RENEW_LUA: &str = include_str!("lua/renew.lua");
const SWEEP_BEGIN_LUA: &str = include_str!("lua/sweep_begin.lua");
const SWEEP_END_LUA: &str = include_str!("lua/sweep_end.lua");
/// Boards of a dead instance purged per step of a sweep; the instance's lease is checked again
/// before each step.
const SWEEP_BATCH: usize = 64;

/// Connection, key names and scripts of the Redis backend; cheap to clone.
#[derive(Clone)]
pub struct RedisBackend {
    /// One multiplexed RESP3 connection: commands, and pub/sub pushes to the broker.
    conn: ConnectionManager,
    /// A connection for lease renewals only, so they never wait behind other commands.
    lease_conn: ConnectionManager,
    /// Key prefix (`REDIS_PREFIX`).
    prefix: String,
    /// This instance's id, random per process.
    instance: String,
    /// What a board may hold, and what its log keeps.
    limits: BoardLimits,
    /// The scripts, by entry point.
    scripts: Scripts,
    /// Set when the instance stops: it registers no more sessions in the shared presence.
    retired: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Clone)]
struct Scripts {
    commit: Script,
    catchup: Script,
    join: Script,
    leave: Script,
    purge: Script,
    retire: Script,
    renew: Script,
    sweep_begin: Script,
    sweep_end: Script,
    status: Script,
    list: Script,
    sync: Script,
}

fn presence_script(entry: &str) -> Script {
    Script::new(&format!("{PRESENCE_LUA}\n{entry}\n"))
}

/// Milliseconds since the epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn unavailable(err: redis::RedisError) -> FrameError {
    log::warn!("redis: {err}");
    FrameError::new(
        None,
        ErrorCode::Unavailable,
        "the backend is unavailable; retry",
    )
}

fn too_large(message: String) -> FrameError {
    FrameError::new(None, ErrorCode::TooLarge, message)
}

fn bad_data(what: impl std::fmt::Display) -> FrameError {
    log::error!("redis holds unexpected data: {what}");
    FrameError::new(None, ErrorCode::Internal, "unexpected data in the backend")
}

/// The board's keys.
struct BoardKeys {
    tag: String,
}

impl BoardKeys {
    fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.tag)
    }
}

impl RedisBackend {
    /// A backend over `conn`.
    pub fn new(
        conn: ConnectionManager,
        lease_conn: ConnectionManager,
        prefix: String,
        instance: String,
        limits: BoardLimits,
    ) -> Self {
        RedisBackend {
            conn,
            lease_conn,
            prefix,
            instance,
            limits,
            retired: Default::default(),
            scripts: Scripts {
                commit: Script::new(COMMIT_LUA),
                catchup: Script::new(CATCHUP_LUA),
                join: presence_script(
                    "join_one(ARGV[16], ARGV[17], ARGV[18], ARGV[19])\nreturn listing()",
                ),
                leave: presence_script("leave_one(ARGV[16])\nreturn 1"),
                purge: presence_script("return purge_dead(ARGV[16])"),
                retire: presence_script("purge(ARGV[16], nil)\nreturn 1"),
                status: presence_script("set_status(ARGV[16], ARGV[17], ARGV[18])\nreturn 1"),
                list: presence_script("return listing()"),
                sync: presence_script("return sync()"),
                renew: Script::new(RENEW_LUA),
                sweep_begin: Script::new(SWEEP_BEGIN_LUA),
                sweep_end: Script::new(SWEEP_END_LUA),
            },
        }
    }

    /// This instance's id.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    fn board(&self, board: &BoardKey) -> BoardKeys {
        BoardKeys {
            tag: format!("{}:{{{}|{}}}", self.prefix, board.board, board.tenant),
        }
    }

    /// The pub/sub channel of a board.
    pub fn board_channel(&self, board: &BoardKey) -> String {
        self.board(board).key("ch")
    }

    /// The pub/sub channel of a user.
    pub fn user_channel(&self, tenant: &str, user_id: &str) -> String {
        format!("{}:user:{{{tenant}|{user_id}}}", self.prefix)
    }

    fn instances_key(&self) -> String {
        format!("{}:instances", self.prefix)
    }

    fn instance_boards_key(&self, instance: &str) -> String {
        format!("{}:instance:{instance}:boards", self.prefix)
    }

    /// Set while an instance is being swept, so that it learns of it if it comes back.
    fn swept_key(&self, instance: &str) -> String {
        format!("{}:instance:{instance}:swept", self.prefix)
    }

    /// A connection handle (cheap clone of the multiplexed connection).
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Answers `PING`.
    pub async fn ping(&self) -> bool {
        let mut conn = self.conn();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .is_ok()
    }

    // ----- durable events -----

    /// Applies a durable operation, sequencing and publishing its event. A retry of an
    /// operation answered before (same `key`) gets that answer again, applied or refused.
    pub async fn append(
        &self,
        board: &BoardKey,
        op: DurableOp,
        user_id: &str,
        ack: Option<(SessionId, Option<String>)>,
        key: Option<&OpKey>,
    ) -> Result<Appended, FrameError> {
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
            self.commit_args(&mut inv, &keys, key, applied.version);
            let reply: RedisValue = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
            let refusal = match self.commit_reply(reply, key)? {
                CommitReply::Seq(seq) => {
                    return Ok(Appended {
                        seq,
                        version: applied.version,
                        replayed: false,
                    })
                }
                CommitReply::Earlier(outcome) => return replayed(outcome),
                CommitReply::Retry => continue,
                CommitReply::Refused(refusal) => refusal,
            };
            return Err(self.remember_refusal(&keys, key, refusal).await);
        }
        Err(FrameError::new(
            None,
            ErrorCode::Unavailable,
            "the item changes too fast; retry",
        ))
    }

    /// The keys and arguments every commit takes after the operation's own.
    fn commit_args(
        &self,
        inv: &mut redis::ScriptInvocation<'_>,
        keys: &BoardKeys,
        key: Option<&OpKey>,
        version: Option<u64>,
    ) {
        for suffix in [
            "seq", "log", "ch", "sizes", "bytes", "logbytes", "ops", "opsorder", "epoch",
        ] {
            inv.key(keys.key(suffix));
        }
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
            .arg(new_epoch());
    }

    /// Reads what the commit script answered.
    fn commit_reply(
        &self,
        reply: RedisValue,
        key: Option<&OpKey>,
    ) -> Result<CommitReply, FrameError> {
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
    async fn remember_refusal(
        &self,
        keys: &BoardKeys,
        key: Option<&OpKey>,
        refusal: FrameError,
    ) -> FrameError {
        let Some(key) = key else { return refusal };
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
        refusal
    }

    /// Sequences, logs and publishes a backend's own event type; a retry (same `key`) gets
    /// the first seq.
    pub async fn append_custom(
        &self,
        board: &BoardKey,
        kind: &str,
        payload: &Value,
        key: Option<&OpKey>,
    ) -> Result<u64, FrameError> {
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
        self.commit_args(&mut inv, &keys, key, None);
        let reply: RedisValue = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
        match self.commit_reply(reply, key)? {
            CommitReply::Seq(seq) => Ok(seq),
            CommitReply::Earlier(outcome) => outcome.map(|(seq, _)| seq),
            CommitReply::Retry | CommitReply::Refused(_) => {
                Err(bad_data("a custom event was refused"))
            }
        }
    }

    async fn run_catchup(
        &self,
        board: &BoardKey,
        last_seq: Option<u64>,
        mode: &str,
        epoch: &str,
    ) -> Result<RedisValue, FrameError> {
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
    ) -> Result<Catchup, FrameError> {
        let reply = self
            .run_catchup(board, last_seq, "session", epoch.unwrap_or_default())
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

    /// The events after `after`, with their acks, for a room filling a gap; `None` when they
    /// are no longer retained or the board is no longer of `epoch` ("": not known).
    pub async fn events_after(
        &self,
        board: &BoardKey,
        after: u64,
        epoch: &str,
    ) -> Result<Option<Vec<BoardEvent>>, FrameError> {
        let reply = self
            .run_catchup(board, Some(after), "events", epoch)
            .await?;
        let parts = array(reply)?;
        if parts.first().and_then(status_text).as_deref() != Some("R") {
            return Ok(None);
        }
        let epoch = parts.get(3).and_then(text_of).unwrap_or_default();
        let entries = log_entries(parts.into_iter().nth(2).unwrap_or(RedisValue::Nil))?;
        Ok(Some(
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

    /// Warns when Redis does not persist its data: a restart then loses every board (clients
    /// resync, by the board's epoch, but the boards are gone).
    pub async fn warn_if_not_durable(&self) {
        let reply: redis::RedisResult<std::collections::HashMap<String, String>> =
            redis::cmd("CONFIG")
                .arg("GET")
                .arg("appendonly")
                .query_async(&mut self.conn())
                .await;
        match reply.as_ref().map(|config| config.get("appendonly")) {
            Ok(Some(value)) if value == "no" => log::warn!(
                "redis runs with appendonly no: boards are lost if it restarts; \
                 run it with --appendonly yes to make this mode durable"
            ),
            Ok(_) => {}
            // CONFIG may be disabled (managed Redis): nothing to tell.
            Err(err) => log::debug!("CONFIG GET appendonly: {err}"),
        }
    }

    // ----- presence -----

    fn presence_invocation<'a>(
        &self,
        script: &'a Script,
        board: &BoardKey,
    ) -> redis::ScriptInvocation<'a> {
        let keys = self.board(board);
        let mut inv = script.prepare_invoke();
        for suffix in [
            "p:sessions",
            "p:info",
            "p:color",
            "p:status",
            "p:count",
            "p:order",
            "p:rev",
            "ch",
            "p:inst",
        ] {
            inv.key(keys.key(suffix));
        }
        inv.key(self.instances_key());
        for color in PALETTE {
            inv.arg(color);
        }
        inv.arg(format!("{}:instance:", self.prefix))
            .arg(board_record(board))
            .arg(now_ms());
        inv
    }

    /// Refuses presence registrations once the instance has retired: what it registered after
    /// leaving would stay present with nobody to sweep it.
    fn check_not_retired(&self) -> Result<(), FrameError> {
        if self.retired.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(FrameError::new(
                None,
                ErrorCode::Unavailable,
                "the instance is stopping",
            ));
        }
        Ok(())
    }

    /// Records a session; publishes `presence.join` when it is the user's first.
    pub async fn presence_join(
        &self,
        board: &BoardKey,
        session: SessionId,
        user_id: &str,
        info: &UserInfo,
    ) -> Result<Arrived, FrameError> {
        self.check_not_retired()?;
        let mut inv = self.presence_invocation(&self.scripts.join, board);
        inv.arg(session.0.to_string())
            .arg(&self.instance)
            .arg(user_id)
            .arg(info_json(info));
        let reply: RedisValue = inv
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let (rev, users) = listing(reply)?;
        let color = users
            .iter()
            .find(|u| u.user_id == user_id)
            .map(|u| u.color.clone())
            .unwrap_or_else(|| PALETTE[0].to_string());
        Ok(Arrived { color, users, rev })
    }

    /// Forgets a session; publishes `presence.leave` when it was the user's last.
    pub async fn presence_leave(
        &self,
        board: &BoardKey,
        session: SessionId,
    ) -> Result<(), FrameError> {
        // A retiring instance purges all its sessions in one script per board; leaving one by
        // one as well would put thousands of scripts in front of the purges.
        if self.retired.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        let mut inv = self.presence_invocation(&self.scripts.leave, board);
        inv.arg(session.0.to_string());
        inv.invoke_async::<RedisValue>(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Sets a user's status and publishes the change.
    pub async fn presence_status(
        &self,
        board: &BoardKey,
        user_id: &str,
        status: Status,
        origin: SessionId,
    ) -> Result<(), FrameError> {
        let mut inv = self.presence_invocation(&self.scripts.status, board);
        let status = match status {
            Status::Active => "active",
            Status::Idle => "idle",
        };
        inv.arg(user_id).arg(status).arg(origin.0.to_string());
        inv.invoke_async::<RedisValue>(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Present users of a board.
    pub async fn presence_list(&self, board: &BoardKey) -> Result<Vec<PresentUser>, FrameError> {
        let inv = self.presence_invocation(&self.scripts.list, board);
        let reply: RedisValue = inv
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(listing(reply)?.1)
    }

    /// Makes this instance's sessions on the board exactly `sessions`, publishing the
    /// transitions that makes; returns the board's presence after it.
    pub async fn presence_sync(
        &self,
        board: &BoardKey,
        sessions: &[(SessionId, String, UserInfo)],
    ) -> Result<(u64, Vec<PresentUser>), FrameError> {
        self.check_not_retired()?;
        let mut inv = self.presence_invocation(&self.scripts.sync, board);
        inv.arg(&self.instance);
        for (sid, user, info) in sessions {
            inv.arg(sid.0.to_string()).arg(user).arg(info_json(info));
        }
        let reply: RedisValue = inv
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        listing(reply)
    }

    // ----- instance liveness -----

    /// Renews this instance's lease over a connection of its own, so that renewal never waits
    /// behind other commands; true when the lease was missing or this instance was
    /// swept meanwhile (it was presumed dead), in which case its sessions must be registered
    /// again.
    pub async fn renew(&self) -> Result<bool, FrameError> {
        let mut conn = self.lease_conn.clone();
        let missing: i64 = self
            .scripts
            .renew
            .key(self.instances_key())
            .key(self.swept_key(&self.instance))
            .arg(&self.instance)
            .arg(now_ms() + LEASE.as_millis() as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(missing == 1)
    }

    /// Purges the sessions of every instance whose lease ran out; returns how many instances
    /// were swept to the end. Several instances may sweep at once: they share the work, and
    /// purging is idempotent. The work goes in steps of [`SWEEP_BATCH`] boards, each checking
    /// the lease again, so an instance that comes back mid-sweep keeps its sessions.
    pub async fn sweep(&self) -> Result<usize, FrameError> {
        let mut conn = self.conn();
        let dead: Vec<String> = conn
            .zrangebyscore_limit(self.instances_key(), 0, now_ms(), 0, 16)
            .await
            .map_err(unavailable)?;
        let mut swept = 0;
        for instance in dead.into_iter().filter(|i| *i != self.instance) {
            let began: i64 = self
                .scripts
                .sweep_begin
                .key(self.instances_key())
                .key(self.swept_key(&instance))
                .arg(&instance)
                .arg(now_ms())
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            if began != 1 {
                continue;
            }
            let record = self.instance_boards_key(&instance);
            let mut purged = 0;
            loop {
                let batch: Vec<String> = redis::cmd("SPOP")
                    .arg(&record)
                    .arg(SWEEP_BATCH)
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                if batch.is_empty() {
                    break;
                }
                let purges = batch.iter().filter_map(|text| {
                    let board = serde_json::from_str::<BoardKey>(text).ok()?;
                    let mut conn = self.conn();
                    let instance = instance.clone();
                    Some(async move {
                        let mut inv = self.presence_invocation(&self.scripts.purge, &board);
                        inv.arg(&instance);
                        inv.invoke_async::<i64>(&mut conn).await
                    })
                });
                // One step's purges travel together over the multiplexed connection.
                let results = futures_util::future::join_all(purges).await;
                for result in results {
                    match result.map_err(unavailable)? {
                        1 => purged += 1,
                        // Its lease is alive again: it registers its sessions itself.
                        _ => {
                            log::info!("instance {instance} came back while being swept");
                            return Ok(swept);
                        }
                    }
                }
            }
            let ended: i64 = self
                .scripts
                .sweep_end
                .key(self.instances_key())
                .key(&record)
                .arg(&instance)
                .arg(now_ms())
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            if ended == 1 {
                log::info!(
                    "swept the sessions of instance {instance} on {purged} boards: its lease ran out"
                );
                swept += 1;
            }
        }
        Ok(swept)
    }

    /// On a clean stop: publishes the leaves of this instance's sessions, board by board in
    /// steps, and removes its lease and records, so that nobody needs to sweep it.
    pub async fn retire(&self) -> Result<usize, FrameError> {
        // From now on nothing registers; what was sent before runs before the purges below
        // (one connection, in order).
        self.retired
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let mut conn = self.conn();
        let record = self.instance_boards_key(&self.instance);
        let boards: Vec<String> = conn.smembers(&record).await.map_err(unavailable)?;
        for chunk in boards.chunks(SWEEP_BATCH) {
            let purges = chunk.iter().filter_map(|text| {
                let board = serde_json::from_str::<BoardKey>(text).ok()?;
                let mut conn = self.conn();
                Some(async move {
                    let mut inv = self.presence_invocation(&self.scripts.retire, &board);
                    inv.arg(&self.instance);
                    inv.invoke_async::<i64>(&mut conn).await
                })
            });
            for result in futures_util::future::join_all(purges).await {
                result.map_err(unavailable)?;
            }
        }
        redis::pipe()
            .zrem(self.instances_key(), &self.instance)
            .del(&record)
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(boards.len())
    }

    /// Publishes an event on a board's channel. `from_here` marks events this instance has
    /// delivered to its own sessions already; other instances still deliver them.
    pub async fn publish(
        &self,
        board: &BoardKey,
        event: &BoardEvent,
        from_here: bool,
    ) -> Result<(), FrameError> {
        let origin = if from_here {
            self.instance.as_str()
        } else {
            "-"
        };
        let json = serde_json::to_string(event).map_err(bad_data)?;
        let mut conn = self.conn();
        conn.publish::<_, _, ()>(self.board_channel(board), format!("{origin}\n{json}"))
            .await
            .map_err(unavailable)
    }

    /// Publishes a frame on a user's channel.
    pub async fn publish_user(
        &self,
        tenant: &str,
        user_id: &str,
        frame: &str,
    ) -> Result<(), FrameError> {
        let mut conn = self.conn();
        conn.publish::<_, _, ()>(self.user_channel(tenant, user_id), frame)
            .await
            .map_err(unavailable)
    }
}

/// Decodes a board channel message: `None` for this instance's own ephemeral events.
pub fn decode_board_message(instance: &str, payload: &[u8]) -> Option<BoardEvent> {
    let text = std::str::from_utf8(payload).ok()?;
    let (origin, json) = text.split_once('\n')?;
    if origin == instance {
        return None;
    }
    match serde_json::from_str(json) {
        Ok(event) => Some(event),
        Err(e) => {
            log::warn!("ignoring a board message that does not decode: {e}");
            None
        }
    }
}

/// The frame of an event up to its `seq` value: the script appends the seq and `}`.
fn frame_prefix(kind: &str, payload: &Value) -> String {
    let mut frame = encode(kind, payload, None).to_string();
    frame.pop();
    frame.push_str(",\"seq\":");
    frame
}

fn ack_json(ack: &Option<(SessionId, Option<String>)>, version: Option<u64>) -> String {
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
enum CommitReply {
    /// Applied with this seq.
    Seq(u64),
    /// Answered before under the same key.
    Earlier(ops::Outcome),
    /// The item or cell changed since it was read.
    Retry,
    /// A bound was reached.
    Refused(FrameError),
}

/// The earlier answer a record holds for this operation, if it is the same operation.
fn earlier_answer(key: &OpKey, record: Option<&str>) -> Option<ops::Outcome> {
    let (digest, outcome) = record?.split_once('\n')?;
    if digest != key.digest {
        return None;
    }
    ops::parse_outcome(outcome)
}

/// The answer to a retry.
fn replayed(outcome: ops::Outcome) -> Result<Appended, FrameError> {
    outcome.map(|(seq, version)| Appended {
        seq,
        version,
        replayed: true,
    })
}

/// A board as an instance's record of boards holds it.
fn board_record(board: &BoardKey) -> String {
    serde_json::to_string(board).unwrap_or_default()
}

fn info_json(info: &UserInfo) -> String {
    serde_json::to_string(info).unwrap_or_else(|_| "{}".into())
}

fn text_of(v: &RedisValue) -> Option<String> {
    match v {
        RedisValue::BulkString(b) => String::from_utf8(b.clone()).ok(),
        RedisValue::SimpleString(s) => Some(s.clone()),
        RedisValue::VerbatimString { text, .. } => Some(text.clone()),
        RedisValue::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn status_text(v: &RedisValue) -> Option<String> {
    text_of(v)
}

fn int(v: &RedisValue) -> Option<u64> {
    match v {
        RedisValue::Int(n) => u64::try_from(*n).ok(),
        other => text_of(other)?.parse().ok(),
    }
}

fn array(v: RedisValue) -> Result<Vec<RedisValue>, FrameError> {
    match v {
        RedisValue::Array(items) | RedisValue::Set(items) => Ok(items),
        RedisValue::Nil => Ok(vec![]),
        other => Err(bad_data(format!("expected an array, got {other:?}"))),
    }
}

/// A flat `[k, v, k, v, ...]` array as pairs of text.
fn pairs(v: RedisValue) -> Result<Vec<(String, String)>, FrameError> {
    if let RedisValue::Map(entries) = v {
        return entries
            .into_iter()
            .map(|(k, v)| {
                text_of(&k)
                    .zip(text_of(&v))
                    .ok_or_else(|| bad_data("a hash entry is not text"))
            })
            .collect();
    }
    let flat = array(v)?;
    flat.chunks(2)
        .map(|kv| match kv {
            [k, v] => text_of(k)
                .zip(text_of(v))
                .ok_or_else(|| bad_data("a hash entry is not text")),
            _ => Err(bad_data("an odd hash listing")),
        })
        .collect()
}

/// Log entries `[[id, [field, value, ...]], ...]` as (seq, frame, ack).
fn log_entries(v: RedisValue) -> Result<Vec<(u64, ByteString, Option<AckTo>)>, FrameError> {
    let mut out = vec![];
    for entry in array(v)? {
        let mut parts = array(entry)?.into_iter();
        let id = parts.next().as_ref().and_then(text_of).unwrap_or_default();
        let seq = id
            .split('-')
            .next()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| bad_data(format!("log entry id {id:?}")))?;
        let fields = pairs(parts.next().unwrap_or(RedisValue::Nil))?;
        let mut frame = None;
        let mut ack = None;
        for (k, v) in fields {
            match k.as_str() {
                "f" => frame = Some(ByteString::from(v)),
                "a" => ack = serde_json::from_str::<Option<AckTo>>(&v).ok().flatten(),
                _ => {}
            }
        }
        let frame = frame.ok_or_else(|| bad_data("a log entry without its frame"))?;
        out.push((seq, frame, ack));
    }
    Ok(out)
}

/// The presence listing `{rev, [user, info, color, status, order, ...]}`.
fn listing(v: RedisValue) -> Result<(u64, Vec<PresentUser>), FrameError> {
    let mut parts = array(v)?.into_iter();
    let rev = parts.next().as_ref().and_then(int).unwrap_or(0);
    let flat = array(parts.next().unwrap_or(RedisValue::Nil))?;
    let mut users = vec![];
    for entry in flat.chunks(5) {
        let [user, info, color, status, order] = entry else {
            break;
        };
        let user_id = text_of(user).ok_or_else(|| bad_data("presence user"))?;
        let info: UserInfo = text_of(info)
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let color = int(color)
            .and_then(|i| PALETTE.get(i as usize))
            .unwrap_or(&PALETTE[0]);
        let status = match text_of(status).as_deref() {
            Some("idle") => Status::Idle,
            _ => Status::Active,
        };
        let order = int(order).unwrap_or(0);
        users.push((
            order,
            PresentUser {
                user_id,
                user: info,
                color: color.to_string(),
                status,
            },
        ));
    }
    users.sort_by_key(|(order, _)| *order);
    Ok((rev, users.into_iter().map(|(_, u)| u).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> RedisValue {
        RedisValue::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn numbers_and_text_read_from_any_reply_kind() {
        assert_eq!(int(&RedisValue::Int(7)), Some(7));
        assert_eq!(int(&bulk("12")), Some(12));
        assert_eq!(int(&RedisValue::Int(-1)), None, "no negative counts");
        assert_eq!(int(&bulk("x")), None);
        assert_eq!(int(&RedisValue::Nil), None);
        assert_eq!(
            text_of(&RedisValue::SimpleString("OK".into())).as_deref(),
            Some("OK")
        );
        assert_eq!(
            text_of(&RedisValue::BulkString(vec![0xff])),
            None,
            "not UTF-8"
        );
    }

    #[test]
    fn hashes_read_as_flat_arrays_and_as_maps() {
        let flat = RedisValue::Array(vec![bulk("a"), bulk("1"), bulk("b"), RedisValue::Int(2)]);
        let map = RedisValue::Map(vec![
            (bulk("a"), bulk("1")),
            (bulk("b"), RedisValue::Int(2)),
        ]);
        let expected = vec![("a".to_string(), "1".to_string()), ("b".into(), "2".into())];
        assert_eq!(pairs(flat).ok(), Some(expected.clone()));
        assert_eq!(pairs(map).ok(), Some(expected));
        assert_eq!(pairs(RedisValue::Nil).ok(), Some(vec![]));
        assert!(pairs(RedisValue::Array(vec![bulk("a")])).is_err(), "odd");
        assert!(pairs(RedisValue::Array(vec![bulk("a"), RedisValue::Nil])).is_err());
        assert!(pairs(RedisValue::Int(3)).is_err());
    }

    #[test]
    fn log_entries_give_seq_frame_and_ack() {
        let ack = r#"{"session":5,"id":"c1","version":2}"#;
        let reply = RedisValue::Array(vec![
            RedisValue::Array(vec![
                bulk("7-1"),
                RedisValue::Array(vec![bulk("f"), bulk("{\"seq\":7}"), bulk("a"), bulk(ack)]),
            ]),
            RedisValue::Array(vec![
                bulk("8-1"),
                RedisValue::Array(vec![
                    bulk("f"),
                    bulk("{\"seq\":8}"),
                    bulk("a"),
                    bulk("null"),
                ]),
            ]),
        ]);
        let entries = log_entries(reply).expect("entries");
        assert_eq!(entries.len(), 2);
        assert_eq!((entries[0].0, &*entries[0].1), (7, "{\"seq\":7}"));
        let to = entries[0].2.as_ref().expect("an ack");
        assert_eq!(
            (to.session, to.id.as_deref(), to.version),
            (SessionId(5), Some("c1"), Some(2))
        );
        assert!(entries[1].2.is_none());

        let bad_id = RedisValue::Array(vec![RedisValue::Array(vec![
            bulk("x-1"),
            RedisValue::Array(vec![bulk("f"), bulk("{}")]),
        ])]);
        assert!(log_entries(bad_id).is_err());
        let no_frame = RedisValue::Array(vec![RedisValue::Array(vec![
            bulk("3-1"),
            RedisValue::Array(vec![bulk("a"), bulk("null")]),
        ])]);
        assert!(log_entries(no_frame).is_err());
        assert!(log_entries(RedisValue::Int(1)).is_err());
    }

    #[test]
    fn a_presence_listing_is_in_arrival_order_with_palette_colors() {
        let reply = RedisValue::Array(vec![
            RedisValue::Int(9),
            RedisValue::Array(vec![
                bulk("bob"),
                bulk(r#"{"name":"Bob","avatar":null}"#),
                RedisValue::Int(1),
                bulk("idle"),
                RedisValue::Int(2),
                bulk("ann"),
                bulk("not json"),
                bulk("999"),
                bulk("active"),
                RedisValue::Int(1),
            ]),
        ]);
        let (rev, users) = listing(reply).expect("listing");
        assert_eq!(rev, 9);
        let ids: Vec<_> = users.iter().map(|u| u.user_id.as_str()).collect();
        assert_eq!(ids, ["ann", "bob"]);
        assert_eq!(
            users[0].color, PALETTE[0],
            "an unknown color index falls back"
        );
        assert_eq!(
            users[0].user,
            UserInfo::default(),
            "unreadable info is empty"
        );
        assert_eq!(users[1].color, PALETTE[1]);
        assert_eq!(users[1].status, Status::Idle);
        assert_eq!(users[1].user.name.as_deref(), Some("Bob"));
        // A truncated entry ends the listing rather than shifting every field after it.
        let truncated = RedisValue::Array(vec![
            RedisValue::Int(1),
            RedisValue::Array(vec![bulk("ann"), bulk("{}")]),
        ]);
        assert_eq!(listing(truncated).map(|(_, u)| u.len()).ok(), Some(0));
    }

    #[test]
    fn board_messages_skip_this_instances_own_and_what_does_not_decode() {
        let left = br#"{"Left":{"rev":3,"user_id":"ann"}}"#;
        let message = |origin: &str| [origin.as_bytes(), b"\n", left].concat();
        assert_eq!(
            decode_board_message("me", &message("-")),
            Some(BoardEvent::Left {
                rev: 3,
                user_id: "ann".into()
            })
        );
        assert_eq!(decode_board_message("me", &message("me")), None);
        assert_eq!(decode_board_message("me", b"-\n{\"Left\":{}}"), None);
        assert_eq!(decode_board_message("me", b"no newline"), None);
        assert_eq!(decode_board_message("me", &[0xff, b'\n']), None);
    }
}
