//! The Redis backend: board state, sequence numbers, replay logs and presence in Redis, and
//! board channels over its pub/sub (a tenant's user events on its workspace's), so that any
//! number of instances act as one.
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
//! | `P:{board\|tenant}:p:*` | hashes | presence: sessions, info, color, status, count, order, rev, places |
//! | `P:{*\|tenant}:*` | | the tenant's workspace: presence of all its sessions, and its channel (which also carries the tenant's user events) |
//! | `P:{board\|tenant}:ch` | channel | the board's events |
//! | `P:instances` | sorted set | instance id → lease expiry (ms) |
//! | `P:instance:ID:boards` | set | boards where instance ID may have sessions now |
//! | `P:{board\|tenant}:p:inst` | hash | instance id → its sessions on the board |
//! | `P:{board\|tenant}:p:fence` | hash | instance id → the sweep it re-registered after |
//! | `P:instance:ID:swept` | string | the sweep's token while instance ID is swept, for an hour |
//! | `P:{board\|tenant}:wh` | stream | webhook outbox: the events not yet delivered, id `N-1` |
//! | `P:{board\|tenant}:wh:*` | | its counter `n`, cursor `cur`, delivery `lease`, failures `tries` |
//! | `P:wh:due` | sorted set | board → when its outbox is next due for delivery (ms) |
//!
//! On a Redis Cluster (`REDIS_CLUSTER=on`) the instance keys are named `P:{instances}`,
//! `P:{instances}:ID:boards` and `P:{instances}:ID:swept`, one slot of their own; the due set
//! is one per slot, `P:wh:due:{T}` with `T` a text that hashes to the slot, and `P:{wh}:slots`
//! hints which slots hold due boards; the channels are sharded (`SPUBLISH`, `SSUBSCRIBE`).
//!
//! Everything that must be atomic is a Lua script (`lua/`): a durable operation is checked,
//! written, sequenced, logged and published in one script, so `seq` has no gaps and pub/sub
//! order is `seq` order; presence transitions are decided and published in one script each.
//! Every script touches the keys of one slot only: a board's, or the instances'.
//!
//! This file holds the connection, the key names and the scripts; the work is split by concern:
//! [`durable`] events, [`presence`], instance [`liveness`], [`pubsub`] channels, and [`reply`]
//! parsing.

mod conn;
mod durable;
mod liveness;
mod presence;
mod pubsub;
mod reply;
mod webhook;

pub use self::conn::Conn;
pub(crate) use self::durable::ReadCache;
pub(crate) use self::pubsub::{decode_board_message, Outgoing};
use self::reply::*;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytestring::ByteString;
use redis::{AsyncCommands, Script, Value as RedisValue};
use serde_json::{json, Value};

use crate::backend::ops::{self, OpKey};
use crate::backend::presence::{color_of, online_users, Arrived, Local, OnlineUser, PALETTE};
use crate::backend::{new_epoch, Appended, BackendError, Catchup, Filled};
use crate::board::{BoardLimits, BoardState, DurableOp, Refusal};
use crate::event::{AckTo, BoardEvent, BoardKey, PresentUser, SessionId, UserInfo};
use crate::protocol::{encode, Status};

/// How long an instance's lease lasts without renewal; its sessions are purged after that.
pub const LEASE: Duration = Duration::from_secs(4);
/// How often leases are renewed and dead instances swept.
pub const LEASE_TICK: Duration = Duration::from_secs(1);
/// Tries of a durable operation whose item changed under it before giving up.
const COMMIT_TRIES: usize = 32;

const COMMIT_LUA: &str = include_str!("lua/commit.lua");
const HOOK_LUA: &str = include_str!("lua/hook.lua");
const WEBHOOK_LUA: &str = include_str!("lua/webhook.lua");
const CATCHUP_LUA: &str = include_str!("lua/catchup.lua");
const PRESENCE_LUA: &str = include_str!("lua/presence.lua");
const RENEW_LUA: &str = include_str!("lua/renew.lua");
const SWEEP_BEGIN_LUA: &str = include_str!("lua/sweep_begin.lua");
const SWEEP_END_LUA: &str = include_str!("lua/sweep_end.lua");
/// Boards of a dead instance purged per step of a sweep; the instance's lease is checked again
/// before each step.
const SWEEP_BATCH: usize = 64;
/// Passes over the boards whose purge failed when an instance stops cleanly, before it leaves
/// them to a sweep.
const RETIRE_ATTEMPTS: usize = 3;

/// Connection, key names and scripts of the Redis backend; cheap to clone.
#[derive(Clone)]
pub struct RedisBackend {
    /// One multiplexed RESP3 connection: commands, and pub/sub pushes to the broker.
    conn: Conn,
    /// A connection for lease renewals only, so they never wait behind other commands.
    lease_conn: Conn,
    /// Redis is a cluster: instance keys share one slot, channels are sharded.
    cluster: bool,
    /// Key prefix (`REDIS_PREFIX`).
    prefix: String,
    /// This instance's id, random per process.
    instance: String,
    /// What a board may hold, and what its log keeps.
    limits: BoardLimits,
    /// The scripts, by entry point; shared, since the backend is cloned for every request and
    /// the scripts' sources are tens of kilobytes.
    scripts: std::sync::Arc<Scripts>,
    /// Set when the instance stops: it registers no more sessions in the shared presence.
    retired: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The token of the last sweep of this instance it learnt of ('' = none): its
    /// registrations carry it, so that a late purge of that sweep leaves them alone.
    fence: std::sync::Arc<std::sync::Mutex<String>>,
    /// Board events go to webhook outboxes.
    hooks: bool,
    /// On a cluster, for every slot a text that hashes to it: the webhook due set of a slot
    /// is named with it, so that the scripts of the slot's boards reach it.
    slot_tags: Option<std::sync::Arc<Vec<String>>>,
    /// On a cluster, the next slot whose due set a poll reads besides the hinted ones.
    due_cursor: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// The slots of a Redis Cluster.
const SLOTS: usize = 16_384;

/// The cluster slot of a hash tag's text (CRC16/XMODEM modulo 16,384), as Redis computes it.
pub(crate) fn key_slot(tag: &[u8]) -> usize {
    let mut crc: u16 = 0;
    for &byte in tag {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    usize::from(crc) % SLOTS
}

/// For every slot, the first decimal number whose text hashes to it.
fn slot_tags() -> Vec<String> {
    let mut tags = vec![String::new(); SLOTS];
    let mut left = SLOTS;
    let mut n: u64 = 0;
    while left > 0 {
        let text = n.to_string();
        let slot = key_slot(text.as_bytes());
        if tags[slot].is_empty() {
            tags[slot] = text;
            left -= 1;
        }
        n += 1;
    }
    tags
}

struct Scripts {
    commit: Script,
    catchup: Script,
    join: Script,
    join_quiet: Script,
    leave: Script,
    purge: Script,
    retire: Script,
    renew: Script,
    sweep_begin: Script,
    sweep_end: Script,
    status: Script,
    list: Script,
    sync: Script,
    places: Script,
    webhook_claim: Script,
    webhook_done: Script,
    webhook_fail: Script,
}

/// A script that makes board events: the webhook outbox helper in front, with its bound
/// (0: webhooks off), and the command that publishes.
fn event_script(hook_cap: usize, cluster: bool, body: &str) -> Script {
    let publish = conn::publish_command(cluster);
    Script::new(&format!(
        "local HOOK_CAP = {hook_cap}\nlocal PUBLISH = '{publish}'\n{HOOK_LUA}\n{body}\n"
    ))
}

fn webhook_script(entry: &str) -> Script {
    Script::new(&format!("{WEBHOOK_LUA}\nreturn {entry}()\n"))
}

/// Milliseconds since the epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn unavailable(err: redis::RedisError) -> BackendError {
    BackendError::unavailable("the backend is unavailable; retry", err)
}

fn too_large(message: String) -> Refusal {
    Refusal::TooLarge(message)
}

fn bad_data(what: impl std::fmt::Display) -> BackendError {
    BackendError::BadData(what.to_string())
}

/// A board as an instance's record of boards holds it.
fn board_record(board: &BoardKey) -> String {
    serde_json::to_string(board).unwrap_or_default()
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
    /// A backend over `conn`. With `hook_cap` above 0, the board events go to webhook
    /// outboxes too, each keeping at most that many.
    pub fn new(
        conn: Conn,
        lease_conn: Conn,
        prefix: String,
        instance: String,
        limits: BoardLimits,
        hook_cap: usize,
    ) -> Self {
        let cluster = conn.is_cluster();
        let presence_script =
            |entry: &str| event_script(hook_cap, cluster, &format!("{PRESENCE_LUA}\n{entry}"));
        RedisBackend {
            conn,
            lease_conn,
            cluster,
            prefix,
            instance,
            limits,
            retired: Default::default(),
            fence: Default::default(),
            hooks: hook_cap > 0,
            slot_tags: cluster.then(|| std::sync::Arc::new(slot_tags())),
            due_cursor: Default::default(),
            scripts: std::sync::Arc::new(Scripts {
                commit: event_script(hook_cap, cluster, COMMIT_LUA),
                catchup: Script::new(CATCHUP_LUA),
                join: presence_script("join_many()\nreturn listing()"),
                join_quiet: presence_script(
                    "join_many()\nreturn {tonumber(redis.call('GET', K[7]) or '0'), {}}",
                ),
                leave: presence_script("leave_many()\nreturn sessions_of(ARGV[16])"),
                purge: presence_script("return purge_dead(ARGV[16], ARGV[17])"),
                retire: presence_script("purge(ARGV[16], nil)\nreturn 1"),
                status: presence_script("set_status(ARGV[16], ARGV[17], ARGV[18])\nreturn 1"),
                list: presence_script("return listing()"),
                sync: presence_script("return sync()"),
                places: presence_script("return places()"),
                webhook_claim: webhook_script("claim"),
                webhook_done: webhook_script("done"),
                webhook_fail: webhook_script("fail"),
                renew: Script::new(RENEW_LUA),
                sweep_begin: Script::new(SWEEP_BEGIN_LUA),
                sweep_end: Script::new(SWEEP_END_LUA),
            }),
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

    /// Boards whose webhook outbox is due, by when: one set, or on a cluster one per slot
    /// (in the slot of the board, so that the scripts stay within it).
    fn webhook_due_key(&self, board: &BoardKey) -> String {
        match &self.slot_tags {
            Some(_) => self.slot_due_key(self.board_slot(board)),
            None => self.webhook_due_key_of_one(),
        }
    }

    /// The one due set of a single Redis.
    fn webhook_due_key_of_one(&self) -> String {
        format!("{}:wh:due", self.prefix)
    }

    /// On a cluster, the due set of a slot's boards.
    fn slot_due_key(&self, slot: usize) -> String {
        let tag = self
            .slot_tags
            .as_ref()
            .and_then(|tags| tags.get(slot))
            .map_or("", String::as_str);
        format!("{}:wh:due:{{{tag}}}", self.prefix)
    }

    /// The cluster slot of a board's keys.
    fn board_slot(&self, board: &BoardKey) -> usize {
        key_slot(format!("{}|{}", board.board, board.tenant).as_bytes())
    }

    /// On a cluster, the slots whose due sets may hold boards: a hint for the deliverers,
    /// who also read every slot's due set in turn.
    fn due_slots_key(&self) -> String {
        format!("{}:{{wh}}:slots", self.prefix)
    }

    fn instances_key(&self) -> String {
        if self.cluster {
            format!("{}:{{instances}}", self.prefix)
        } else {
            format!("{}:instances", self.prefix)
        }
    }

    /// The boards where an instance may have sessions.
    fn instance_boards_key(&self, instance: &str) -> String {
        self.instance_key(instance, "boards")
    }

    /// The sweep's token while an instance is being swept, so that it learns of it if it
    /// comes back.
    fn swept_key(&self, instance: &str) -> String {
        self.instance_key(instance, "swept")
    }

    fn instance_key(&self, instance: &str, suffix: &str) -> String {
        if self.cluster {
            format!("{}:{{instances}}:{instance}:{suffix}", self.prefix)
        } else {
            format!("{}:instance:{instance}:{suffix}", self.prefix)
        }
    }

    /// The fence this instance's registrations carry now.
    fn fence(&self) -> String {
        self.fence.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// Runs a script on the shared connection; any failure of it is the backend being
    /// unavailable.
    async fn run<T: redis::FromRedisValue>(
        &self,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T, BackendError> {
        inv.invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    /// A connection handle (cheap clone of the multiplexed connection).
    pub fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// Whether Redis answers `PING` (on a cluster, every master).
    pub async fn ping(&self) -> bool {
        self.conn().ping().await
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_cluster_s_and_every_slot_has_a_tag_of_its_own() {
        // CLUSTER KEYSLOT answers these.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"somekey"), 11058);
        assert_eq!(key_slot(b""), 0);
        let tags = slot_tags();
        assert_eq!(tags.len(), SLOTS);
        for (slot, tag) in tags.iter().enumerate() {
            assert_eq!(key_slot(tag.as_bytes()), slot, "{tag}");
        }
    }
}
