//! The presence model both backends follow: twelve colors, the rule that gives a newcomer one,
//! and a board's presence in memory (the embedded mode's; Redis keeps the same in hashes and
//! applies the same rule in `redis/lua/presence.lua`, with the palette passed in).

use std::collections::HashMap;
use std::sync::Arc;

use crate::event::{PresentUser, SessionId, UserInfo};
use crate::protocol::Status;

/// Twelve distinct colors; a user gets the lowest index no other present user holds.
pub const PALETTE: [&str; 12] = [
    "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324",
    "#469990", "#800000", "#000075", "#808000",
];

/// The color index for a newcomer, given how many present users hold each: the lowest free
/// one, or with all taken, the lowest among the least used.
fn least_used(uses: &[usize; PALETTE.len()]) -> u8 {
    let least = uses.iter().copied().min().unwrap_or(0);
    let index = uses.iter().position(|&n| n == least).unwrap_or(0);
    u8::try_from(index).unwrap_or(0)
}

/// A present user and the sessions that keep them present; the user id is its key. Only what
/// cannot be derived is kept (the color as its index, no second copy of the id, the name and
/// avatar shared with the session's other holders, the first session inline): every connection
/// holds one of these on its board and one in its workspace, 32 bytes beside its key.
#[derive(Debug)]
struct Present {
    /// Name and avatar.
    info: Arc<UserInfo>,
    /// The sessions that keep this user on the board.
    sessions: Sessions,
    /// Arrival order, so listings are stable; renumbered before it would wrap.
    order: u32,
    /// Index into [`PALETTE`].
    color: u8,
    /// Active or idle.
    status: Status,
}

/// Open sessions of one user on a board: one for most users, a few at most
/// (`MAX_SESSIONS_PER_USER`) for the rest, so the first is inline and the others, when there
/// are any, in a list on the heap.
#[derive(Debug)]
struct Sessions {
    first: SessionId,
    #[allow(clippy::box_collection)]
    more: Option<Box<Vec<SessionId>>>,
}

impl Sessions {
    fn one(session: SessionId) -> Self {
        Sessions {
            first: session,
            more: None,
        }
    }

    fn contains(&self, session: SessionId) -> bool {
        self.first == session || self.more.as_ref().is_some_and(|m| m.contains(&session))
    }

    /// Adds `session` unless it is held already.
    fn add(&mut self, session: SessionId) {
        if !self.contains(session) {
            self.more.get_or_insert_with(Box::default).push(session);
        }
    }

    /// Whether `session` is the only one held.
    fn only(&self, session: SessionId) -> bool {
        self.first == session && self.more.is_none()
    }

    /// Removes `session`, which is held and not the only one.
    fn remove(&mut self, session: SessionId) {
        let Some(more) = self.more.as_mut() else {
            return;
        };
        if self.first == session {
            if let Some(next) = more.pop() {
                self.first = next;
            }
        } else if let Some(at) = more.iter().position(|s| *s == session) {
            more.swap_remove(at);
        }
        if more.is_empty() {
            self.more = None;
        }
    }
}

impl Present {
    /// The user as others see them.
    fn user(&self, user_id: &str) -> PresentUser {
        PresentUser {
            user_id: user_id.to_string(),
            user: UserInfo::clone(&self.info),
            color: color_name(self.color),
            status: self.status,
        }
    }
}

/// The `#rrggbb` of a palette index.
fn color_name(index: u8) -> String {
    PALETTE
        .get(usize::from(index))
        .copied()
        .unwrap_or(PALETTE[0])
        .to_string()
}

/// Presence of one board.
#[derive(Debug, Default)]
pub struct BoardPresence {
    /// Present users by id (the id shared with the session's other holders).
    users: HashMap<Arc<str>, Present>,
    /// The last arrival number given.
    last_order: u32,
    /// How many present users hold each palette index, so that a newcomer's color costs the
    /// same on a board of thousands (a tenant's workspace) as on one of two.
    uses: [usize; PALETTE.len()],
    /// The revision of this board's last transition.
    pub last_rev: u64,
}

/// What an arrival changed.
#[derive(Debug, PartialEq)]
pub struct Arrival {
    /// The user's color.
    pub color: String,
    /// The user as others see them, when this was their first session (a transition).
    pub joined: Option<PresentUser>,
}

impl BoardPresence {
    /// Records a session of `user_id`.
    pub fn arrive(
        &mut self,
        session: SessionId,
        user_id: &Arc<str>,
        info: Arc<UserInfo>,
    ) -> Arrival {
        if let Some(present) = self.users.get_mut(&**user_id) {
            present.sessions.add(session);
            return Arrival {
                color: color_name(present.color),
                joined: None,
            };
        }
        let color = least_used(&self.uses);
        if let Some(n) = self.uses.get_mut(usize::from(color)) {
            *n += 1;
        }
        if self.last_order == u32::MAX {
            self.renumber();
        }
        self.last_order += 1;
        let present = Present {
            info,
            sessions: Sessions::one(session),
            order: self.last_order,
            color,
            status: Status::Active,
        };
        let user = present.user(user_id);
        self.users.insert(Arc::clone(user_id), present);
        Arrival {
            color: user.color.clone(),
            joined: Some(user),
        }
    }

    /// Forgets a session; true when it was the user's last (a transition).
    pub fn depart(&mut self, session: SessionId, user_id: &str) -> bool {
        let Some(present) = self.users.get_mut(user_id) else {
            return false;
        };
        if !present.sessions.contains(session) {
            return false;
        }
        if !present.sessions.only(session) {
            present.sessions.remove(session);
            return false;
        }
        if let Some(gone) = self.users.remove(user_id) {
            if let Some(n) = self.uses.get_mut(usize::from(gone.color)) {
                *n = n.saturating_sub(1);
            }
        }
        true
    }

    /// Sets a present user's status; false when the user is not present.
    pub fn set_status(&mut self, user_id: &str, status: Status) -> bool {
        match self.users.get_mut(user_id) {
            Some(present) => {
                present.status = status;
                true
            }
            None => false,
        }
    }

    /// Present users in arrival order.
    pub fn users(&self) -> Vec<PresentUser> {
        let mut present: Vec<(&Arc<str>, &Present)> = self.users.iter().collect();
        present.sort_by_key(|(_, p)| p.order);
        present.into_iter().map(|(id, p)| p.user(id)).collect()
    }

    /// Numbers the present users 1, 2, ... in their arrival order, so that arrival numbers
    /// never wrap (a board would need four billion arrivals with someone present throughout).
    fn renumber(&mut self) {
        let mut present: Vec<&mut Present> = self.users.values_mut().collect();
        present.sort_by_key(|p| p.order);
        let mut order = 0;
        for p in present {
            order += 1;
            p.order = order;
        }
        self.last_order = order;
    }

    /// Whether nobody is present.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// The answer to an arrival: everything a snapshot needs from presence.
#[derive(Debug, Clone)]
pub struct Arrived {
    /// The user's color.
    pub color: String,
    /// Everyone present, the newcomer included.
    pub users: Vec<PresentUser>,
    /// Presence revision the list reflects.
    pub rev: u64,
}

/// The color `user_id` holds among `users` (the first of the palette when not listed).
pub fn color_of(users: &[PresentUser], user_id: Option<&str>) -> String {
    users
        .iter()
        .find(|u| Some(u.user_id.as_str()) == user_id)
        .map(|u| u.color.clone())
        .unwrap_or_else(|| PALETTE[0].to_string())
}

/// One of this instance's sessions, as the shared presence is told of it again after the
/// backend was out of reach.
#[derive(Debug, Clone)]
pub struct Local {
    pub session: SessionId,
    /// The user id, shared with the session's other holders.
    pub user_id: Arc<str>,
    /// Name and avatar, shared with the session's other holders.
    pub info: Arc<UserInfo>,
    /// In a workspace, the board the session is on.
    pub place: Option<String>,
}

/// A user online in a tenant (on any board, any instance), with the boards they are on: the
/// tenant-wide listing for backends.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OnlineUser {
    /// The user id.
    #[serde(rename = "userId")]
    pub user_id: String,
    /// Name and avatar.
    pub user: UserInfo,
    /// Boards where the user has a session, sorted.
    pub boards: Vec<String>,
}

/// Joins a workspace's users (in arrival order) with the boards each is on.
pub fn online_users(
    users: Vec<PresentUser>,
    places: impl IntoIterator<Item = (String, String)>,
) -> Vec<OnlineUser> {
    let mut boards: HashMap<String, Vec<String>> = HashMap::new();
    for (user_id, board) in places {
        boards.entry(user_id).or_default().push(board);
    }
    users
        .into_iter()
        .map(|u| {
            let mut on = boards.remove(&u.user_id).unwrap_or_default();
            on.sort();
            on.dedup();
            OnlineUser {
                user_id: u.user_id,
                user: u.user,
                boards: on,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> Arc<UserInfo> {
        Arc::default()
    }

    /// The color index a newcomer gets, given the indices present users hold.
    fn pick_color(held: impl IntoIterator<Item = usize>) -> usize {
        let mut uses = [0usize; PALETTE.len()];
        for i in held {
            uses[i] += 1;
        }
        usize::from(least_used(&uses))
    }

    #[test]
    fn colors_are_the_lowest_free_index() {
        assert_eq!(pick_color([]), 0);
        assert_eq!(pick_color([0, 1]), 2);
        assert_eq!(pick_color([1, 2]), 0);
        // All twelve taken: repeat, starting again from the lowest least-used.
        assert_eq!(pick_color(0..12), 0);
        assert_eq!(pick_color((0..12).chain([0])), 1);
    }

    #[test]
    fn a_second_session_is_no_transition_and_keeps_the_color() {
        let mut board = BoardPresence::default();
        let first = board.arrive(SessionId(1), &"ann".into(), info());
        assert!(first.joined.is_some());
        let second = board.arrive(SessionId(2), &"ann".into(), info());
        assert_eq!(second.joined, None);
        assert_eq!(second.color, first.color);
        assert!(!board.depart(SessionId(1), "ann"));
        assert!(board.depart(SessionId(2), "ann"));
        assert!(board.is_empty());
    }

    #[test]
    fn colors_follow_what_is_held_through_arrivals_and_departures() {
        let mut board = BoardPresence::default();
        let colors: Vec<String> = (0..13)
            .map(|n| {
                board
                    .arrive(SessionId(n), &format!("u{n}").into(), info())
                    .color
            })
            .collect();
        // All twelve taken: the thirteenth shares the first.
        assert_eq!(colors[12], PALETTE[0]);
        board.depart(SessionId(1), "u1");
        assert_eq!(
            board.arrive(SessionId(20), &"v".into(), info()).color,
            PALETTE[1]
        );
        // A second session of a present user holds nothing more.
        board.arrive(SessionId(21), &"u2".into(), info());
        // u0 leaves: index 0 is held once again, like every other, so it is the lowest.
        board.depart(SessionId(0), "u0");
        assert_eq!(
            board.arrive(SessionId(22), &"w".into(), info()).color,
            PALETTE[0]
        );
    }

    #[test]
    fn a_freed_color_is_reused() {
        let mut board = BoardPresence::default();
        let ann = board.arrive(SessionId(1), &"ann".into(), info()).color;
        let bob = board.arrive(SessionId(2), &"bob".into(), info()).color;
        assert_ne!(ann, bob);
        board.depart(SessionId(1), "ann");
        assert_eq!(board.arrive(SessionId(3), &"cid".into(), info()).color, ann);
    }

    #[test]
    fn online_users_list_each_board_once_in_order() {
        let mut ws = BoardPresence::default();
        ws.arrive(SessionId(1), &"bob".into(), info());
        ws.arrive(SessionId(2), &"ann".into(), info());
        let places = [("ann", "b2"), ("bob", "b1"), ("ann", "b1"), ("ann", "b2")]
            .map(|(u, b)| (u.to_string(), b.to_string()));
        let online = online_users(ws.users(), places);
        let listed: Vec<(&str, Vec<&str>)> = online
            .iter()
            .map(|u| {
                let boards = u.boards.iter().map(String::as_str).collect();
                (u.user_id.as_str(), boards)
            })
            .collect();
        assert_eq!(listed, [("bob", vec!["b1"]), ("ann", vec!["b1", "b2"])]);
    }

    #[test]
    fn a_session_arriving_twice_is_held_once() {
        let mut board = BoardPresence::default();
        board.arrive(SessionId(1), &"ann".into(), info());
        board.arrive(SessionId(1), &"ann".into(), info());
        assert!(board.depart(SessionId(1), "ann"));
        assert!(board.is_empty());
    }

    #[test]
    fn a_user_stays_until_the_last_of_several_sessions_departs() {
        for order in [[1, 2, 3], [3, 2, 1], [2, 1, 3], [2, 3, 1]] {
            let mut board = BoardPresence::default();
            for n in 1..=3 {
                board.arrive(SessionId(n), &"ann".into(), info());
            }
            assert!(!board.depart(SessionId(9), "ann"), "not one of hers");
            let left: Vec<bool> = order
                .iter()
                .map(|&n| board.depart(SessionId(n), "ann"))
                .collect();
            assert_eq!(
                left,
                [false, false, true],
                "departing in the order {order:?}"
            );
            assert!(board.is_empty());
        }
    }

    #[test]
    fn arrival_numbers_are_renumbered_before_they_wrap() {
        let mut board = BoardPresence::default();
        board.arrive(SessionId(1), &"ann".into(), info());
        board.arrive(SessionId(2), &"bob".into(), info());
        board.last_order = u32::MAX - 1;
        board.arrive(SessionId(3), &"cid".into(), info());
        board.arrive(SessionId(4), &"dan".into(), info());
        let listed: Vec<String> = board.users().into_iter().map(|u| u.user_id).collect();
        assert_eq!(listed, ["ann", "bob", "cid", "dan"]);
        assert_eq!(board.last_order, 4);
    }

    #[test]
    fn a_present_user_costs_32_bytes_beside_its_key() {
        // Every connection holds two; see `Present`.
        assert_eq!(std::mem::size_of::<Present>(), 32);
    }

    #[test]
    fn departing_twice_is_harmless() {
        let mut board = BoardPresence::default();
        board.arrive(SessionId(1), &"ann".into(), info());
        assert!(board.depart(SessionId(1), "ann"));
        assert!(!board.depart(SessionId(1), "ann"));
    }
}
