//! The webhook outboxes in Redis: which boards are due, and a board's delivery by the one
//! instance holding its lease (`lua/webhook.lua`). The outboxes are written by the scripts
//! that make the events (`lua/hook.lua`).

use super::*;

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

    /// Boards whose outbox is due for delivery now, at most `limit`.
    pub async fn webhook_due(&self, limit: usize) -> Result<Vec<BoardKey>, BackendError> {
        let due: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.due_set_key())
            .arg("-inf")
            .arg(now_ms())
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(due
            .iter()
            .filter_map(|text| serde_json::from_str(text).ok())
            .collect())
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
