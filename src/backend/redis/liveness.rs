//! Instance liveness: each instance renews a lease; the sessions of one whose lease ran out
//! are swept by the others, and a clean stop retires its own.

use super::*;

impl RedisBackend {
    /// Renews this instance's lease over a connection of its own, so that renewal never waits
    /// behind other commands; true when the lease was missing or this instance was
    /// swept meanwhile (it was presumed dead), in which case its sessions must be registered
    /// again.
    pub async fn renew(&self) -> Result<bool, BackendError> {
        let mut conn = self.lease_conn.clone();
        let (missing, token): (i64, String) = self
            .scripts
            .renew
            .key(self.instances_key())
            .key(self.swept_key(&self.instance))
            .arg(&self.instance)
            .arg(now_ms() + LEASE.as_millis() as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if !token.is_empty() {
            // Every registration from now on carries the sweep's token: a purge of that sweep
            // still under way on another instance leaves the boards it reaches alone.
            if let Ok(mut fence) = self.fence.lock() {
                *fence = token;
            }
        }
        Ok(missing == 1)
    }

    /// Purges the sessions of every instance whose lease ran out; returns how many instances
    /// were swept to the end. Several instances may sweep at once: they share the work (one
    /// token per sweep), and purging is idempotent. The work goes in steps of [`SWEEP_BATCH`]
    /// boards. An instance that comes back mid-sweep registers its sessions again fenced with
    /// the sweep's token, and a purge that meets the fence leaves the board alone: the sweep
    /// puts such boards back in the instance's record and stops.
    pub async fn sweep(&self) -> Result<usize, BackendError> {
        let mut conn = self.conn();
        let dead: Vec<String> = conn
            .zrangebyscore_limit(self.instances_key(), 0, now_ms(), 0, 16)
            .await
            .map_err(unavailable)?;
        let mut swept = 0;
        for instance in dead.into_iter().filter(|i| *i != self.instance) {
            let token: String = self
                .scripts
                .sweep_begin
                .key(self.instances_key())
                .key(self.swept_key(&instance))
                .arg(&instance)
                .arg(now_ms())
                .arg(format!("{}:{}", self.instance, now_ms()))
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            if token.is_empty() {
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
                    let (instance, token) = (&instance, &token);
                    Some(async move {
                        let mut inv = self.presence_invocation(&self.scripts.purge, &board);
                        inv.arg(instance).arg(token);
                        let purged = inv.invoke_async::<i64>(&mut conn).await;
                        self.hint_due(&board).await;
                        (text, purged)
                    })
                });
                // One step's purges travel together over the multiplexed connection.
                let results = futures_util::future::join_all(purges).await;
                let mut fenced = Vec::new();
                for (text, result) in results {
                    match result.map_err(unavailable)? {
                        1 => purged += 1,
                        _ => fenced.push(text),
                    }
                }
                if !fenced.is_empty() {
                    // It came back and registered its sessions there again: it keeps those
                    // boards in its record, and registers the rest itself.
                    conn.sadd::<_, _, ()>(&record, fenced)
                        .await
                        .map_err(unavailable)?;
                    log::info!("instance {instance} came back while being swept");
                    return Ok(swept);
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

    /// From now on this instance registers nothing in the shared presence, and its sessions'
    /// departures are left to [`Self::retire`] (one script per board instead of one per
    /// session).
    pub fn stop_registering(&self) {
        self.retired
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// On a clean stop: publishes the leaves of this instance's sessions, board by board in
    /// steps, and removes its lease and records, so that nobody needs to sweep it.
    pub async fn retire(&self) -> Result<usize, BackendError> {
        // What was sent before runs before the purges below (one connection to each node, in
        // order).
        self.stop_registering();
        let mut conn = self.conn();
        let record = self.instance_boards_key(&self.instance);
        let boards: Vec<String> = conn.smembers(&record).await.map_err(unavailable)?;
        let mut pending: Vec<BoardKey> = boards
            .iter()
            .filter_map(|text| serde_json::from_str::<BoardKey>(text).ok())
            .collect();
        // A board whose purge failed (a reply lost to a moved slot, a node failing over) is
        // tried again: the purge is idempotent. The lease and record go only when every board
        // is purged; otherwise another instance sweeps them when the lease runs out.
        let mut last_error = None;
        for _attempt in 0..RETIRE_ATTEMPTS {
            if pending.is_empty() {
                break;
            }
            let mut failed = Vec::new();
            for chunk in pending.chunks(SWEEP_BATCH) {
                let purges = chunk.iter().map(|board| {
                    let mut conn = self.conn();
                    async move {
                        let mut inv = self.presence_invocation(&self.scripts.retire, board);
                        inv.arg(&self.instance);
                        let retired = inv.invoke_async::<i64>(&mut conn).await;
                        self.hint_due(board).await;
                        retired
                    }
                });
                let results = futures_util::future::join_all(purges).await;
                for (board, result) in chunk.iter().zip(results) {
                    if let Err(e) = result {
                        log::warn!("leaving board {board:?} failed, trying again: {e}");
                        failed.push(board.clone());
                        last_error = Some(e);
                    }
                }
            }
            pending = failed;
        }
        if let Some(e) = last_error.filter(|_| !pending.is_empty()) {
            return Err(unavailable(e));
        }
        redis::pipe()
            .zrem(self.instances_key(), &self.instance)
            .del(&record)
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(boards.len())
    }
}
