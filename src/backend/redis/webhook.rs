//! The webhook outboxes in Redis: which boards are due, and a board's delivery by the one
//! instance holding its lease (`lua/webhook.lua`). The outboxes are written by the scripts
//! that make the events (`lua/hook.lua`).

use std::sync::atomic::Ordering;

use super::*;

/// Slots whose due sets a poll reads in turn besides the hinted ones: every slot in about a
/// minute, at one poll every 100 ms.
const SWEPT_SLOTS: usize = 32;

/// What a claim of a board's outbox found.
#[derive(Debug)]
pub struct Claimed {
    /// Entries were dropped before they could be delivered (the outbox is bounded).
    pub dropped: bool,
    /// Failed deliveries in a row so far.
    pub failures: u32,
    /// The entries after the cursor, in order: number and JSON text.
    pub entries: Vec<(u64, String)>,
}

impl RedisBackend {
    fn webhook_invocation<'a>(
        &self,
        script: &'a Script,
        board: &BoardKey,
    ) -> redis::ScriptInvocation<'a> {
        let keys = self.board(board);
        let mut inv = script.prepare_invoke();
        for suffix in ["wh", "wh:cur", "wh:lease"] {
            inv.key(keys.key(suffix));
        }
        inv.key(self.webhook_due_key(board))
            .key(keys.key("wh:tries"))
            .arg(&self.instance)
            .arg(board_record(board))
            .arg(now_ms());
        inv
    }

    /// Boards whose outbox is due for delivery now, at most `limit`. On a cluster: those of
    /// the slots hinted as holding due boards, and of the next [`SWEPT_SLOTS`] slots in turn,
    /// so that a board whose hint was lost (its writer died between its script and the hint)
    /// is still found within a minute or so.
    pub async fn webhook_due(&self, limit: usize) -> Result<Vec<BoardKey>, BackendError> {
        if self.slot_tags.is_none() {
            let (due, _) = self.due_in(&self.webhook_due_key_of_one(), limit).await?;
            return Ok(due);
        }
        let hinted: Vec<usize> = self
            .conn()
            .smembers(self.due_slots_key())
            .await
            .map_err(unavailable)?;
        let start = self.due_cursor.fetch_add(SWEPT_SLOTS, Ordering::Relaxed);
        let mut slots: std::collections::BTreeSet<usize> =
            hinted.iter().copied().filter(|&s| s < SLOTS).collect();
        slots.extend((0..SWEPT_SLOTS).map(|i| (start + i) % SLOTS));
        let reads = slots
            .iter()
            .map(|&slot| async move { (slot, self.due_in(&self.slot_due_key(slot), limit).await) });
        let mut boards = Vec::new();
        for (slot, read) in futures_util::future::join_all(reads).await {
            let (due, waiting) = read?;
            boards.extend(due);
            if waiting == 0 && hinted.contains(&slot) {
                self.unhint(slot).await?;
            }
        }
        boards.truncate(limit);
        Ok(boards)
    }

    /// The boards of a due set due now (at most `limit`), and how many it holds.
    async fn due_in(&self, key: &str, limit: usize) -> Result<(Vec<BoardKey>, u64), BackendError> {
        let (due, waiting): (Vec<String>, u64) = redis::pipe()
            .cmd("ZRANGEBYSCORE")
            .arg(key)
            .arg("-inf")
            .arg(now_ms())
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .zcard(key)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let due = due
            .iter()
            .filter_map(|text| serde_json::from_str(text).ok())
            .collect();
        Ok((due, waiting))
    }

    /// Takes a slot whose due set was found empty out of the hints, then puts it back if a
    /// board became due meanwhile (its writer hints after its script, so either this sees
    /// the board or the writer's hint comes after the removal).
    async fn unhint(&self, slot: usize) -> Result<(), BackendError> {
        let mut conn = self.conn();
        conn.srem::<_, _, ()>(self.due_slots_key(), slot)
            .await
            .map_err(unavailable)?;
        let waiting: u64 = conn
            .zcard(self.slot_due_key(slot))
            .await
            .map_err(unavailable)?;
        if waiting > 0 {
            conn.sadd::<_, _, ()>(self.due_slots_key(), slot)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    /// On a cluster with webhooks, hints that the board's slot may hold due boards, after a
    /// script that may have made the board due. Best effort: a lost hint only delays the
    /// delivery until the deliverers read that slot in turn.
    pub(super) async fn hint_due(&self, board: &BoardKey) {
        if self.slot_tags.is_none() || !self.hooks || board.is_workspace() {
            return;
        }
        let slot = self.board_slot(board);
        let hinted = self
            .conn()
            .sadd::<_, _, ()>(self.due_slots_key(), slot)
            .await;
        if let Err(e) = hinted {
            log::debug!("a webhook hint was not recorded: {e}");
        }
    }

    /// Takes the board's lease for `lease` and reads up to `max` entries to deliver; `None`
    /// when another instance holds the lease.
    pub async fn webhook_claim(
        &self,
        board: &BoardKey,
        lease: Duration,
        max: usize,
    ) -> Result<Option<Claimed>, BackendError> {
        let mut inv = self.webhook_invocation(&self.scripts.webhook_claim, board);
        inv.arg(lease.as_millis() as u64).arg(max);
        let reply: RedisValue = self.run(&inv).await?;
        let parts = array(reply)?;
        let mut parts = parts.iter();
        let (Some(dropped), Some(failures)) = (parts.next(), parts.next()) else {
            return Ok(None);
        };
        let mut entries = vec![];
        while let (Some(n), Some(entry)) = (parts.next(), parts.next()) {
            let n = int(n).ok_or_else(|| bad_data("an outbox entry number"))?;
            let entry = text_of(entry).ok_or_else(|| bad_data("an outbox entry"))?;
            entries.push((n, entry));
        }
        Ok(Some(Claimed {
            dropped: int(dropped) == Some(1),
            failures: int(failures).unwrap_or(0).min(u64::from(u32::MAX)) as u32,
            entries,
        }))
    }

    /// The entries up to `last` were delivered: moves the cursor and gives the lease back.
    /// False when the lease was lost meanwhile.
    pub async fn webhook_done(
        &self,
        board: &BoardKey,
        last: Option<u64>,
    ) -> Result<bool, BackendError> {
        let mut inv = self.webhook_invocation(&self.scripts.webhook_done, board);
        inv.arg(last.map(|n| n.to_string()).unwrap_or_default());
        let done: i64 = self.run(&inv).await?;
        Ok(done == 1)
    }

    /// A delivery failed: counts it and schedules the next try at `retry_at_ms`.
    pub async fn webhook_fail(
        &self,
        board: &BoardKey,
        retry_at_ms: u64,
    ) -> Result<bool, BackendError> {
        let mut inv = self.webhook_invocation(&self.scripts.webhook_fail, board);
        inv.arg(retry_at_ms);
        let done: i64 = self.run(&inv).await?;
        Ok(done == 1)
    }
}
