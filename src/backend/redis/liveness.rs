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
    pub async fn sweep(&self) -> Result<usize, BackendError> {
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
    pub async fn retire(&self) -> Result<usize, BackendError> {
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
}
