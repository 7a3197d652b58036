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
            "p:fence",
            "p:places",
        ] {
            inv.key(keys.key(suffix));
        }
        inv.key(keys.key("wh"))
            .key(keys.key("wh:n"))
            .key(self.webhook_due_key(board));
        for color in PALETTE {
            inv.arg(if board.is_workspace() { "" } else { color });
        }
        inv.arg(self.fence()).arg(board_record(board)).arg(now_ms());
        inv
    }

    /// Refuses presence registrations once the instance has retired: what it registered after
    /// leaving would stay present with nobody to sweep it.
    pub(super) fn check_not_retired(&self) -> Result<(), BackendError> {
        if self.retired.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(BackendError::unavailable_now("the instance is stopping"));
        }
        Ok(())
    }

    /// Records sessions (in a workspace, each with the board it is on); publishes
    /// `presence.join` for each user's first. With `with_listing`, answers who is present;
    /// without, only the revision after it (a workspace's listing grows with its tenant).
    /// The color answered is the first session's user's.
    pub async fn presence_join(
        &self,
        board: &BoardKey,
        sessions: &[Local],
        with_listing: bool,
    ) -> Result<Arrived, BackendError> {
        self.check_not_retired()?;
        let script = if with_listing {
            &self.scripts.join
        } else {
            &self.scripts.join_quiet
        };
        if !sessions.is_empty() {
            self.record_board(board).await?;
        }
        let mut inv = self.presence_invocation(script, board);
        inv.arg(&self.instance);
        push_sessions(&mut inv, sessions);
        let reply: RedisValue = self.run(&inv).await?;
        self.hint_due(board).await;
        self.undo_if_retired(board).await?;
        let (rev, users) = listing(reply)?;
        let color = color_of(&users, sessions.first().map(|s| &*s.user_id));
        Ok(Arrived { color, users, rev })
    }

    /// Forgets sessions of the board, in order; publishes `presence.leave` for each that was
    /// its user's last. One script for them all: a mass disconnect costs Redis one call per
    /// board and batch, not one per session.
    pub async fn presence_leave(
        &self,
        board: &BoardKey,
        sessions: &[SessionId],
    ) -> Result<(), BackendError> {
        // A retiring instance purges all its sessions in one script per board; leaving one by
        // one as well would put thousands of scripts in front of the purges.
        if sessions.is_empty() || self.retired.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        let mut inv = self.presence_invocation(&self.scripts.leave, board);
        inv.arg(&self.instance);
        for session in sessions {
            inv.arg(session.0.to_string());
        }
        let left: i64 = self.run(&inv).await?;
        self.hint_due(board).await;
        if left == 0 {
            self.forget_board(board).await?;
        }
        Ok(())
    }

    /// Sets a user's status and publishes the change.
    pub async fn presence_status(
        &self,
        board: &BoardKey,
        user_id: &str,
        status: Status,
        origin: SessionId,
    ) -> Result<(), BackendError> {
        let mut inv = self.presence_invocation(&self.scripts.status, board);
        let status = match status {
            Status::Active => "active",
            Status::Idle => "idle",
        };
        inv.arg(user_id).arg(status).arg(origin.0.to_string());
        self.run::<RedisValue>(&inv).await?;
        Ok(())
    }

    /// Present users of a board.
    pub async fn presence_list(&self, board: &BoardKey) -> Result<Vec<PresentUser>, BackendError> {
        let inv = self.presence_invocation(&self.scripts.list, board);
        let reply: RedisValue = self.run(&inv).await?;
        Ok(listing(reply)?.1)
    }

    /// Makes this instance's sessions on the board exactly `sessions`, publishing the
    /// transitions that makes; returns the board's presence after it.
    pub async fn presence_sync(
        &self,
        board: &BoardKey,
        sessions: &[Local],
    ) -> Result<(u64, Vec<PresentUser>), BackendError> {
        self.check_not_retired()?;
        if !sessions.is_empty() {
            self.record_board(board).await?;
        }
        let mut inv = self.presence_invocation(&self.scripts.sync, board);
        inv.arg(&self.instance);
        push_sessions(&mut inv, sessions);
        let reply: RedisValue = self.run(&inv).await?;
        self.hint_due(board).await;
        self.undo_if_retired(board).await?;
        if sessions.is_empty() {
            self.forget_board(board).await?;
        }
        listing(reply)
    }

    /// A registration that was under way when the instance began to retire may land after the
    /// retirement purged its board: it purges the board again itself, so that nothing of a
    /// stopped instance stays present with nobody to sweep it. (A retirement that begins after
    /// this check finds the board on the record and purges it.)
    async fn undo_if_retired(&self, board: &BoardKey) -> Result<(), BackendError> {
        if !self.retired.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        let mut inv = self.presence_invocation(&self.scripts.retire, board);
        inv.arg(&self.instance);
        self.run::<i64>(&inv).await?;
        self.forget_board(board).await?;
        Err(BackendError::unavailable_now("the instance is stopping"))
    }

    /// Adds a board to this instance's record before a session of it is registered there,
    /// so that a sweep after its death finds the board. A board recorded with no session
    /// left costs a sweep one purge that finds nothing.
    async fn record_board(&self, board: &BoardKey) -> Result<(), BackendError> {
        self.conn()
            .sadd::<_, _, ()>(
                self.instance_boards_key(&self.instance),
                board_record(board),
            )
            .await
            .map_err(unavailable)
    }

    /// Takes a board out of this instance's record once the scripts said it has no session
    /// left there. Requests of one board run one after the other (see the presence actor), so
    /// no registration of this instance on the board runs in between.
    async fn forget_board(&self, board: &BoardKey) -> Result<(), BackendError> {
        self.conn()
            .srem::<_, _, ()>(
                self.instance_boards_key(&self.instance),
                board_record(board),
            )
            .await
            .map_err(unavailable)
    }

    /// Who is online in a tenant, with the boards each is on.
    pub async fn workspace_list(&self, tenant: &str) -> Result<Vec<OnlineUser>, BackendError> {
        let inv = self.presence_invocation(&self.scripts.places, &BoardKey::workspace(tenant));
        let reply: RedisValue = self.run(&inv).await?;
        let mut parts = array(reply)?.into_iter();
        let (Some(list), Some(places)) = (parts.next(), parts.next()) else {
            return Err(bad_data("a workspace listing of the wrong shape"));
        };
        let (_, users) = listing(list)?;
        Ok(online_users(users, pairs(places)?))
    }
}

/// Adds the (sid, user, info, place) quadruple of each session.
fn push_sessions(inv: &mut redis::ScriptInvocation<'_>, sessions: &[Local]) {
    for local in sessions {
        inv.arg(local.session.0.to_string())
            .arg(&*local.user_id)
            .arg(info_json(&local.info))
            .arg(local.place.as_deref().unwrap_or_default());
    }
}

pub(super) fn info_json(info: &UserInfo) -> String {
    serde_json::to_string(info).unwrap_or_else(|_| "{}".into())
}
