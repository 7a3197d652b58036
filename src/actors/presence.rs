//! The presence actor: who is on each board, with how many sessions, in which color.
//!
//! It turns session arrivals and departures into `presence.join`/`presence.leave`
//! *transitions* (first session in, last session out) and publishes them on the board's channel
//! through the broker, so every room hears them in one order. Each change carries a revision
//! (`rev`) that lets a room drop transitions a joining session's snapshot already contains.

use std::collections::{HashMap, HashSet};

use std::future::Future;

use actix::prelude::*;
use futures_util::future::{FutureExt, LocalBoxFuture, Shared};

use crate::broker::redis::RedisBackend;
use crate::broker::{Broker, Publish};
use crate::event::{BoardEvent, BoardKey, PresentUser, SessionId, UserInfo};
use crate::protocol::FrameError;
use crate::protocol::Status;

/// Twelve distinct colors; a user gets the lowest index no other present user holds.
pub const PALETTE: [&str; 12] = [
    "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324",
    "#469990", "#800000", "#000075", "#808000",
];

/// Picks the color index for a newcomer given the indices present users hold: the lowest free
/// one, or with all taken, the lowest among the least used.
pub fn pick_color(held: impl IntoIterator<Item = usize>) -> usize {
    let mut uses = [0usize; PALETTE.len()];
    for i in held {
        if let Some(n) = uses.get_mut(i) {
            *n += 1;
        }
    }
    let least = uses.iter().copied().min().unwrap_or(0);
    uses.iter().position(|&n| n == least).unwrap_or(0)
}

/// A present user and the sessions that keep them present.
#[derive(Debug)]
struct Present {
    /// What others see.
    user: PresentUser,
    /// Index into [`PALETTE`].
    color: usize,
    /// Open sessions of this user on the board, on any instance.
    sessions: HashSet<SessionId>,
    /// Arrival order, so listings are stable.
    order: u64,
}

/// Presence of one board.
#[derive(Debug, Default)]
pub struct BoardPresence {
    /// Present users by id.
    users: HashMap<String, Present>,
    /// Next arrival number.
    next_order: u64,
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
    pub fn arrive(&mut self, session: SessionId, user_id: &str, info: UserInfo) -> Arrival {
        if let Some(present) = self.users.get_mut(user_id) {
            present.sessions.insert(session);
            return Arrival {
                color: present.user.color.clone(),
                joined: None,
            };
        }
        let color = pick_color(self.users.values().map(|p| p.color));
        let user = PresentUser {
            user_id: user_id.to_string(),
            user: info,
            color: PALETTE[color].to_string(),
            status: Status::Active,
        };
        self.next_order += 1;
        self.users.insert(
            user_id.to_string(),
            Present {
                user: user.clone(),
                color,
                sessions: HashSet::from([session]),
                order: self.next_order,
            },
        );
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
        if !present.sessions.remove(&session) || !present.sessions.is_empty() {
            return false;
        }
        self.users.remove(user_id);
        true
    }

    /// Sets a present user's status; false when the user is not present.
    pub fn set_status(&mut self, user_id: &str, status: Status) -> bool {
        match self.users.get_mut(user_id) {
            Some(present) => {
                present.user.status = status;
                true
            }
            None => false,
        }
    }

    /// Present users in arrival order.
    pub fn users(&self) -> Vec<PresentUser> {
        let mut present: Vec<&Present> = self.users.values().collect();
        present.sort_by_key(|p| p.order);
        present.into_iter().map(|p| p.user.clone()).collect()
    }

    /// Whether nobody is present.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// Where presence lives.
enum Store {
    /// In this process (embedded mode), with a revision counter shared by all boards.
    Memory {
        /// Per-board presence.
        boards: HashMap<BoardKey, BoardPresence>,
        /// Only ever grows.
        rev: u64,
    },
    /// In Redis, shared by every instance; scripts decide and publish transitions.
    Redis(Box<RedisBackend>),
}

/// Holds the presence of every board and publishes its transitions.
///
/// In Redis mode each request is one script. Requests of one board run one after the other, in
/// the order they came (a session's arrival always reaches Redis before its departure); those
/// of different boards run side by side, so that thousands of sessions arriving at once (the
/// users of a dead instance reconnecting) take as many round trips as the busiest board has
/// sessions, not as all of them together.
pub struct Presence {
    /// The presence data.
    store: Store,
    /// Where transitions are published in embedded mode.
    broker: Addr<Broker>,
    /// Per board with requests under way: the last one's number and its completion.
    lanes: HashMap<BoardKey, (u64, Lane)>,
    /// Numbers requests, to tell whose completion a lane holds.
    next_request: u64,
}

/// Resolves when a board's latest request has finished.
type Lane = Shared<LocalBoxFuture<'static, ()>>;

impl Presence {
    /// Runs `work` once every earlier request of `board` has finished.
    fn in_lane<T: 'static>(
        &mut self,
        board: &BoardKey,
        work: impl Future<Output = T> + 'static,
    ) -> ResponseActFuture<Self, T> {
        self.next_request += 1;
        let id = self.next_request;
        let before = self.lanes.get(board).map(|(_, lane)| lane.clone());
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        let lane: Lane = async move {
            let _ = finished.await;
        }
        .boxed_local()
        .shared();
        self.lanes.insert(board.clone(), (id, lane));
        let board = board.clone();
        let run = async move {
            if let Some(before) = before {
                before.await;
            }
            let out = work.await;
            let _ = done.send(());
            out
        };
        Box::pin(run.into_actor(self).map(move |out, presence, _| {
            // The last request of the board: nothing waits on the lane any more.
            if presence
                .lanes
                .get(&board)
                .is_some_and(|(last, _)| *last == id)
            {
                presence.lanes.remove(&board);
            }
            out
        }))
    }
}

impl Presence {
    /// A presence actor publishing through `broker`; over `redis` when given.
    pub fn new(broker: Addr<Broker>, redis: Option<RedisBackend>) -> Self {
        let store = match redis {
            Some(redis) => Store::Redis(Box::new(redis)),
            None => Store::Memory {
                boards: HashMap::new(),
                rev: 0,
            },
        };
        Presence {
            store,
            broker,
            lanes: HashMap::new(),
            next_request: 0,
        }
    }
}

/// Publishes a memory-mode transition with the next revision.
fn publish(
    broker: &Addr<Broker>,
    rev: &mut u64,
    board: &BoardKey,
    event: impl FnOnce(u64) -> BoardEvent,
) {
    *rev += 1;
    broker.do_send(Publish {
        board: board.clone(),
        event: event(*rev),
        delivered_locally: false,
    });
}

fn log_failure<T>(result: Result<T, FrameError>, what: &str) {
    if let Err(e) = result {
        log::warn!(
            "presence {what} not recorded: {} (repaired when the backend is back)",
            e.message
        );
    }
}

impl Actor for Presence {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Rooms must never wait on a full mailbox: order between their requests matters.
        ctx.set_mailbox_capacity(0); // 0: unbounded
    }
}

/// A session opened on a board.
#[derive(Message)]
#[rtype(result = "Result<Arrived, FrameError>")]
pub struct Arrive {
    /// The board.
    pub board: BoardKey,
    /// The new session.
    pub session: SessionId,
    /// Its user.
    pub user_id: String,
    /// Name and avatar from the token.
    pub info: UserInfo,
}

/// The answer to [`Arrive`]: everything a snapshot needs from presence.
#[derive(Debug, Clone)]
pub struct Arrived {
    /// The user's color.
    pub color: String,
    /// Everyone present, the newcomer included.
    pub users: Vec<PresentUser>,
    /// Presence revision the list reflects.
    pub rev: u64,
}

impl Handler<Arrive> for Presence {
    type Result = ResponseActFuture<Self, Result<Arrived, FrameError>>;

    fn handle(&mut self, msg: Arrive, _: &mut Self::Context) -> Self::Result {
        let result = match &mut self.store {
            Store::Redis(redis) => {
                let redis = redis.clone();
                let board = msg.board.clone();
                return self.in_lane(&board, async move {
                    redis
                        .presence_join(&msg.board, msg.session, &msg.user_id, &msg.info)
                        .await
                });
            }
            Store::Memory { boards, rev } => {
                let board = boards.entry(msg.board.clone()).or_default();
                let arrival = board.arrive(msg.session, &msg.user_id, msg.info);
                let users_before = board.users();
                if let Some(user) = arrival.joined {
                    publish(&self.broker, rev, &msg.board, |rev| BoardEvent::Joined {
                        rev,
                        user,
                    });
                }
                Ok(Arrived {
                    color: arrival.color,
                    users: users_before,
                    rev: *rev,
                })
            }
        };
        Box::pin(fut::ready(result))
    }
}

/// A session closed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Depart {
    /// The board.
    pub board: BoardKey,
    /// The session that ended.
    pub session: SessionId,
    /// Its user.
    pub user_id: String,
}

impl Handler<Depart> for Presence {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Depart, _: &mut Self::Context) -> Self::Result {
        match &mut self.store {
            Store::Redis(redis) => {
                let redis = redis.clone();
                let board = msg.board.clone();
                self.in_lane(&board, async move {
                    log_failure(
                        redis.presence_leave(&msg.board, msg.session).await,
                        "departure",
                    )
                })
            }
            Store::Memory { boards, rev } => {
                if let Some(board) = boards.get_mut(&msg.board) {
                    let left = board.depart(msg.session, &msg.user_id);
                    if board.is_empty() {
                        boards.remove(&msg.board);
                    }
                    if left {
                        let user_id = msg.user_id;
                        publish(&self.broker, rev, &msg.board, |rev| BoardEvent::Left {
                            rev,
                            user_id,
                        });
                    }
                }
                Box::pin(fut::ready(()))
            }
        }
    }
}

/// A client's `presence.update`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetStatus {
    /// The board.
    pub board: BoardKey,
    /// The user.
    pub user_id: String,
    /// The new status.
    pub status: Status,
    /// The session that sent it; it gets no echo.
    pub origin: SessionId,
}

impl Handler<SetStatus> for Presence {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: SetStatus, _: &mut Self::Context) -> Self::Result {
        match &mut self.store {
            Store::Redis(redis) => {
                let redis = redis.clone();
                let board = msg.board.clone();
                self.in_lane(&board, async move {
                    let result = redis
                        .presence_status(&msg.board, &msg.user_id, msg.status, msg.origin)
                        .await;
                    log_failure(result, "status");
                })
            }
            Store::Memory { boards, rev } => {
                let present = boards
                    .get_mut(&msg.board)
                    .is_some_and(|b| b.set_status(&msg.user_id, msg.status));
                if present {
                    let SetStatus {
                        board,
                        user_id,
                        status,
                        origin,
                    } = msg;
                    publish(&self.broker, rev, &board, |rev| BoardEvent::StatusChanged {
                        rev,
                        user_id,
                        status,
                        origin,
                    });
                }
                Box::pin(fut::ready(()))
            }
        }
    }
}

/// Lists a board's present users (the HTTP API).
#[derive(Message)]
#[rtype(result = "Result<Vec<PresentUser>, FrameError>")]
pub struct ListPresence {
    /// The board.
    pub board: BoardKey,
}

impl Handler<ListPresence> for Presence {
    type Result = ResponseFuture<Result<Vec<PresentUser>, FrameError>>;

    fn handle(&mut self, msg: ListPresence, _: &mut Self::Context) -> Self::Result {
        match &self.store {
            Store::Redis(redis) => {
                let redis = redis.clone();
                Box::pin(async move { redis.presence_list(&msg.board).await })
            }
            Store::Memory { boards, .. } => {
                let users = boards
                    .get(&msg.board)
                    .map(BoardPresence::users)
                    .unwrap_or_default();
                Box::pin(async move { Ok(users) })
            }
        }
    }
}

/// After the backend was out of reach: makes the shared presence hold exactly this instance's
/// sessions on a board, and answers the board's presence as it then is.
#[derive(Message)]
#[rtype(result = "Result<(u64, Vec<PresentUser>), FrameError>")]
pub struct SyncBoard {
    /// The board.
    pub board: BoardKey,
    /// This instance's sessions on it: id, user, name and avatar.
    pub sessions: Vec<(SessionId, String, UserInfo)>,
}

impl Handler<SyncBoard> for Presence {
    type Result = ResponseActFuture<Self, Result<(u64, Vec<PresentUser>), FrameError>>;

    fn handle(&mut self, msg: SyncBoard, _: &mut Self::Context) -> Self::Result {
        match &self.store {
            Store::Redis(redis) => {
                let redis = redis.clone();
                let board = msg.board.clone();
                self.in_lane(&board, async move {
                    redis.presence_sync(&msg.board, &msg.sessions).await
                })
            }
            Store::Memory { boards, rev } => {
                let users = boards
                    .get(&msg.board)
                    .map(BoardPresence::users)
                    .unwrap_or_default();
                Box::pin(fut::ready(Ok((*rev, users))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> UserInfo {
        UserInfo::default()
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
        let first = board.arrive(SessionId(1), "ann", info());
        assert!(first.joined.is_some());
        let second = board.arrive(SessionId(2), "ann", info());
        assert_eq!(second.joined, None);
        assert_eq!(second.color, first.color);
        assert!(!board.depart(SessionId(1), "ann"));
        assert!(board.depart(SessionId(2), "ann"));
        assert!(board.is_empty());
    }

    #[test]
    fn a_freed_color_is_reused() {
        let mut board = BoardPresence::default();
        let ann = board.arrive(SessionId(1), "ann", info()).color;
        let bob = board.arrive(SessionId(2), "bob", info()).color;
        assert_ne!(ann, bob);
        board.depart(SessionId(1), "ann");
        assert_eq!(board.arrive(SessionId(3), "cid", info()).color, ann);
    }

    #[test]
    fn departing_twice_is_harmless() {
        let mut board = BoardPresence::default();
        board.arrive(SessionId(1), "ann", info());
        assert!(board.depart(SessionId(1), "ann"));
        assert!(!board.depart(SessionId(1), "ann"));
    }
}
