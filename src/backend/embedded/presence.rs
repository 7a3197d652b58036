//! Presence in the embedded mode: every board's [`BoardPresence`] in this process, with one
//! revision counter for all of them. Each change answers the transition it made, for the
//! presence actor to publish to the board's room (and to the webhooks). Its counterpart in
//! Redis is `redis/presence.rs` with `lua/presence.lua`.

use std::collections::HashMap;

use crate::backend::presence::{online_users, Arrived, BoardPresence, Local, OnlineUser};
use crate::event::{BoardEvent, BoardKey, PresentUser, SessionId};
use crate::protocol::Status;

/// Presence of every board (and workspace) of the instance.
#[derive(Default)]
pub(crate) struct MemoryPresence {
    /// Per board, while someone is there.
    boards: HashMap<BoardKey, BoardPresence>,
    /// The revision of the last transition, on any board; only ever grows.
    rev: u64,
}

impl MemoryPresence {
    /// Records sessions arriving on `board`; the answer (with who is present when `listing`,
    /// else the board's last revision) and the joins they made.
    pub(crate) fn arrive(
        &mut self,
        board: &BoardKey,
        sessions: Vec<Local>,
        listing: bool,
    ) -> (Arrived, Vec<BoardEvent>) {
        let present = self.boards.entry(board.clone()).or_default();
        let mut color = None;
        let mut joins = vec![];
        for local in sessions {
            let arrival = present.arrive(local.session, &local.user_id, local.info);
            color.get_or_insert(arrival.color);
            if let Some(user) = arrival.joined {
                self.rev += 1;
                present.last_rev = self.rev;
                joins.push(BoardEvent::Joined {
                    rev: self.rev,
                    user,
                });
            }
        }
        let arrived = Arrived {
            color: color.unwrap_or_default(),
            users: if listing { present.users() } else { vec![] },
            rev: if listing { self.rev } else { present.last_rev },
        };
        (arrived, joins)
    }

    /// Forgets a session; the leave, when it was its user's last.
    pub(crate) fn depart(
        &mut self,
        board: &BoardKey,
        session: SessionId,
        user_id: &str,
    ) -> Option<BoardEvent> {
        let present = self.boards.get_mut(board)?;
        let left = present.depart(session, user_id);
        if present.is_empty() {
            self.boards.remove(board);
        }
        left.then(|| {
            self.rev += 1;
            BoardEvent::Left {
                rev: self.rev,
                user_id: user_id.to_string(),
            }
        })
    }

    /// Sets a present user's status; the change, when the user is present.
    pub(crate) fn set_status(
        &mut self,
        board: &BoardKey,
        user_id: &str,
        status: Status,
        origin: SessionId,
    ) -> Option<BoardEvent> {
        let present = self
            .boards
            .get_mut(board)
            .is_some_and(|b| b.set_status(user_id, status));
        present.then(|| {
            self.rev += 1;
            BoardEvent::StatusChanged {
                rev: self.rev,
                user_id: user_id.to_string(),
                status,
                origin,
            }
        })
    }

    /// Who is present on `board`, in arrival order.
    pub(crate) fn list(&self, board: &BoardKey) -> Vec<PresentUser> {
        self.boards
            .get(board)
            .map(BoardPresence::users)
            .unwrap_or_default()
    }

    /// Who is present, with the revision that reflects (nothing to re-register: this
    /// presence is never out of reach).
    pub(crate) fn sync(&self, board: &BoardKey) -> (u64, Vec<PresentUser>) {
        (self.rev, self.list(board))
    }

    /// Who is online in `tenant`, with the boards each is on.
    pub(crate) fn workspace(&self, tenant: &str) -> Vec<OnlineUser> {
        let users = self.list(&BoardKey::workspace(tenant));
        let places = self
            .boards
            .iter()
            .filter(|(key, _)| key.tenant == tenant && !key.is_workspace())
            .flat_map(|(key, board)| {
                board
                    .users()
                    .into_iter()
                    .map(|u| (u.user_id, key.board.clone()))
            });
        online_users(users, places)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(session: u64, user: &str) -> Vec<Local> {
        vec![Local {
            session: SessionId(session),
            user_id: user.into(),
            info: std::sync::Arc::default(),
            place: None,
        }]
    }

    #[test]
    fn transitions_take_growing_revisions_across_boards() {
        let mut presence = MemoryPresence::default();
        let (a, b) = (BoardKey::new("t", "a"), BoardKey::new("t", "b"));
        let (arrived, joins) = presence.arrive(&a, local(1, "ann"), true);
        assert!(matches!(joins[..], [BoardEvent::Joined { rev: 1, .. }]));
        assert_eq!((arrived.rev, arrived.users.len()), (1, 1));
        let (_, joins) = presence.arrive(&b, local(2, "bob"), true);
        assert!(matches!(joins[..], [BoardEvent::Joined { rev: 2, .. }]));
        // A second session is no transition; a quiet arrival answers the board's last one.
        let (arrived, joins) = presence.arrive(&a, local(3, "ann"), false);
        assert!(joins.is_empty());
        assert_eq!((arrived.rev, arrived.users.len()), (1, 0));
        assert_eq!(presence.depart(&a, SessionId(1), "ann"), None);
        assert!(matches!(
            presence.depart(&a, SessionId(3), "ann"),
            Some(BoardEvent::Left { rev: 3, .. })
        ));
        assert!(presence.list(&a).is_empty());
        assert_eq!(
            presence.set_status(&a, "ann", Status::Idle, SessionId(3)),
            None
        );
        assert!(presence
            .set_status(&b, "bob", Status::Idle, SessionId(2))
            .is_some());
    }

    #[test]
    fn a_workspace_lists_its_users_with_their_boards_of_its_tenant_only() {
        let mut presence = MemoryPresence::default();
        let ws = BoardKey::workspace("t");
        presence.arrive(&ws, local(1, "ann"), false);
        presence.arrive(&BoardKey::new("t", "b1"), local(1, "ann"), true);
        presence.arrive(&BoardKey::new("u", "b2"), local(2, "ann"), true);
        let online = presence.workspace("t");
        assert_eq!(online.len(), 1);
        assert_eq!(online[0].boards, ["b1"]);
        assert!(
            presence.workspace("u").is_empty(),
            "no workspace session there"
        );
    }
}
