//! Presence in Redis: arrivals, departures and status changes decided and published by
//! `lua/presence.lua`, and the listing a snapshot shows.

use super::*;

impl RedisBackend {
    pub(super) fn presence_invocation<'a>(
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
    pub(super) fn check_not_retired(&self) -> Result<(), FrameError> {
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
}

pub(super) fn info_json(info: &UserInfo) -> String {
    serde_json::to_string(info).unwrap_or_else(|_| "{}".into())
}
