//! The registry: finds the room of a board, and the workspace of a tenant, starting either on
//! first join.
//!
//! A plain shared map rather than an actor: a session learns its room's address at once, in
//! its `started`, so no frame of its client ever waits for a lookup. Rooms and workspaces stop
//! when their last session leaves; the registry counts the joins it forwarded so that neither
//! stops while a join is still on its way to it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use actix::dev::ToEnvelope;
use actix::prelude::*;

use crate::actors::broker::{Broker, Unsubscribe};
use crate::actors::presence::{Depart, Presence};
use crate::actors::room::{CloseAll, Join, Outbound, Outlet, Room, RoomSettings};
use crate::actors::workspace::{Enter, Workspace};
use crate::event::{BoardKey, SessionId};
use crate::protocol::close;

/// A running actor and the joins sent to it.
struct Entry<A: Actor> {
    /// Shared with every session that joined: each clone of an actix address allocates its
    /// own parking state (about 80 bytes), and a session holds its room's and its workspace's.
    addr: Arc<Addr<A>>,
    /// Its id, to tell it from a later one of the same key.
    id: u64,
    /// Joins forwarded to it.
    joins: u64,
}

/// Running actors of one kind by key, with the count of joins each was sent.
struct Hosts<K, A: Actor> {
    map: Mutex<HashMap<K, Entry<A>>>,
}

impl<K: Eq + Hash + Clone, A: Actor<Context = Context<A>>> Hosts<K, A> {
    fn new() -> Self {
        Hosts {
            map: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Entry<A>>> {
        // A panic while holding the lock cannot leave the map half-changed: every change is a
        // single insert, remove or increment.
        self.map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends `join` to the actor of `key`, starting it with `start` (which gives the actor and
    /// its id) if needed.
    fn join<M>(&self, key: &K, start: impl FnOnce() -> (A, u64), join: M) -> Arc<Addr<A>>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        let mut map = self.lock();
        let entry = map.entry(key.clone()).or_insert_with(|| {
            let (actor, id) = start();
            Entry {
                addr: Arc::new(actor.start()),
                id,
                joins: 0,
            }
        });
        entry.joins += 1;
        // Sent under the lock, so the count never runs behind the actor's mailbox.
        entry.addr.do_send(join);
        Arc::clone(&entry.addr)
    }

    fn get(&self, key: &K) -> Option<Addr<A>> {
        self.lock().get(key).map(|e| Addr::clone(&e.addr))
    }

    fn release(&self, key: &K, id: u64, joins_seen: u64) -> bool {
        let mut map = self.lock();
        match map.get(key) {
            Some(entry) if entry.id == id && entry.joins == joins_seen => {
                map.remove(key);
                true
            }
            Some(entry) if entry.id == id => false,
            _ => true,
        }
    }

    fn forget(&self, key: &K, id: u64) {
        let mut map = self.lock();
        if map.get(key).is_some_and(|entry| entry.id == id) {
            map.remove(key);
        }
    }
}

/// A session a stopped room or workspace still held: its id, its user, its mailbox.
pub type Left = (SessionId, Arc<str>, Outlet);

/// Rooms of this instance by board, and workspaces by tenant.
pub struct Registry {
    /// Running rooms.
    rooms: Hosts<BoardKey, Room>,
    /// Running workspaces.
    workspaces: Hosts<String, Workspace>,
    /// Given to new rooms and workspaces.
    presence: Addr<Presence>,
    /// Given to new rooms and workspaces.
    broker: Addr<Broker>,
    /// Given to new rooms (and the heartbeat tick to workspaces).
    settings: RoomSettings,
    /// The instance is shutting down: rooms stopping with sessions in them are expected.
    stopping: std::sync::atomic::AtomicBool,
}

impl Registry {
    /// An empty registry whose rooms use `presence` and `broker`.
    pub fn new(
        presence: Addr<Presence>,
        broker: Addr<Broker>,
        settings: RoomSettings,
    ) -> Arc<Self> {
        Arc::new(Registry {
            rooms: Hosts::new(),
            workspaces: Hosts::new(),
            presence,
            broker,
            settings,
            stopping: Default::default(),
        })
    }

    /// Sends `join` to the board's room, starting the room if needed; returns the room.
    pub fn join(self: &Arc<Self>, key: &BoardKey, join: Join) -> Arc<Addr<Room>> {
        let start = || {
            let room = Room::new(
                key.clone(),
                Arc::clone(self),
                self.presence.clone(),
                self.broker.clone(),
                self.settings,
            );
            let id = room.id();
            (room, id)
        };
        self.rooms.join(key, start, join)
    }

    /// Sends `enter` to the tenant's workspace, starting it if needed; returns the workspace.
    pub fn enter(self: &Arc<Self>, tenant: &str, enter: Enter) -> Arc<Addr<Workspace>> {
        let start = || {
            let workspace = Workspace::new(
                tenant,
                Arc::clone(self),
                self.presence.clone(),
                self.broker.clone(),
                self.settings.heartbeat_tick,
            );
            let id = workspace.id();
            (workspace, id)
        };
        self.workspaces.join(&tenant.to_string(), start, enter)
    }

    /// The board's room, if it runs on this instance.
    pub fn get(&self, key: &BoardKey) -> Option<Addr<Room>> {
        self.rooms.get(key)
    }

    /// An emptied room asks to stop. Granted (and the room forgotten) unless a join was sent
    /// that the room has not handled yet.
    pub fn release(&self, key: &BoardKey, room_id: u64, joins_seen: u64) -> bool {
        self.rooms.release(key, room_id, joins_seen)
    }

    /// A room stopped: forgets it, unless a later room of the board took its place, and
    /// winds up what it left.
    pub fn room_stopped(&self, key: &BoardKey, room_id: u64, left: Vec<Left>) {
        self.rooms.forget(key, room_id);
        self.wind_up(key, room_id, left, "room restarted");
    }

    /// An emptied workspace asks to stop, as a room does.
    pub fn release_workspace(&self, tenant: &str, id: u64, joins_seen: u64) -> bool {
        self.workspaces.release(&tenant.to_string(), id, joins_seen)
    }

    /// A workspace stopped: forgets it, unless a later one of the tenant took its place, and
    /// winds up what it left.
    pub fn workspace_stopped(&self, tenant: &str, id: u64, left: Vec<Left>) {
        self.workspaces.forget(&tenant.to_string(), id);
        self.wind_up(
            &BoardKey::workspace(tenant),
            id,
            left,
            "workspace restarted",
        );
    }

    /// Ends the stopped room's (or workspace's) subscription to `key`; and since one stops with
    /// sessions in it only when something went wrong, those sessions leave presence and their
    /// clients are told to reconnect.
    fn wind_up(&self, key: &BoardKey, id: u64, left: Vec<Left>, reason: &str) {
        self.broker.do_send(Unsubscribe {
            board: key.clone(),
            room_id: id,
        });
        for (session, user_id, out) in left {
            if self.stopping.load(std::sync::atomic::Ordering::Relaxed) {
                log::debug!("{key} stopped with session {session} in it (shutting down)");
            } else {
                log::error!("{key} stopped with session {session} in it");
            }
            self.presence.do_send(Depart {
                board: key.clone(),
                session,
                user_id,
            });
            out.do_send(Outbound::Close(close::RESTARTING, reason.into()));
        }
    }

    /// Closes every session of every room with 1012 (the instance is shutting down).
    pub fn close_all(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        for entry in self.rooms.lock().values() {
            entry.addr.do_send(CloseAll);
        }
    }

    /// Rooms running now.
    pub fn len(&self) -> usize {
        self.rooms.lock().len()
    }

    /// Whether no room runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::actors::room::{Crash, Outbound};
    use crate::board::BoardLimits;
    use crate::event::SessionId;

    /// Records what a room sends one session.
    struct Probe(Arc<StdMutex<Vec<Outbound>>>);

    impl Actor for Probe {
        type Context = Context<Self>;
    }

    impl Handler<Outbound> for Probe {
        type Result = ();

        fn handle(&mut self, msg: Outbound, _: &mut Self::Context) {
            self.0.lock().expect("probe").push(msg);
        }
    }

    fn join(
        registry: &Arc<Registry>,
        key: &BoardKey,
    ) -> (Addr<Room>, Arc<StdMutex<Vec<Outbound>>>) {
        let seen = Arc::new(StdMutex::new(vec![]));
        let out = Arc::new(Probe(Arc::clone(&seen)).start().recipient());
        let join = Join {
            session: SessionId::random(),
            user_id: "ann".into(),
            info: Arc::default(),
            out,
            last_seq: None,
            epoch: None,
        };
        (Addr::clone(&registry.join(key, join)), seen)
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            actix_web::rt::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn got_snapshot(seen: &StdMutex<Vec<Outbound>>) -> bool {
        seen.lock()
            .expect("probe")
            .iter()
            .any(|m| matches!(m, Outbound::Frame(f) if f.json().contains("board.snapshot")))
    }

    #[actix_web::test]
    async fn a_room_that_stops_abnormally_is_forgotten_and_started_again_on_the_next_join() {
        let store = crate::backend::embedded::sqlite::Store::open(
            ":memory:",
            crate::backend::embedded::sqlite::SyncMode::Normal,
        )
        .expect("an in-memory store");
        let broker = Broker::start_embedded(store, BoardLimits::NONE, None);
        let presence = Presence::new(broker.clone(), None, None).start();
        let settings = RoomSettings {
            backlog_bound: 16,
            shared: false,
            heartbeat_tick: std::time::Duration::from_secs(25),
        };
        let registry = Registry::new(presence, broker, settings);
        let key = BoardKey::new("t", "b");
        let (room, first) = join(&registry, &key);
        until("the first snapshot", || got_snapshot(&first)).await;

        room.do_send(Crash);
        until("the room to be forgotten", || registry.get(&key).is_none()).await;
        until("its session to be told to reconnect", || {
            first.lock().expect("probe").iter().any(|m| {
                matches!(m, Outbound::Close(code, _) if *code == crate::protocol::close::RESTARTING)
            })
        })
        .await;

        let (again, second) = join(&registry, &key);
        assert!(again.connected(), "a new room");
        until("a snapshot from the new room", || got_snapshot(&second)).await;
        let snapshot = second.lock().expect("probe").iter().find_map(|m| match m {
            Outbound::Frame(f) if f.json().contains("board.snapshot") => Some(f.json().to_string()),
            _ => None,
        });
        let snapshot: serde_json::Value =
            serde_json::from_str(&snapshot.expect("snapshot")).expect("json");
        assert_eq!(
            snapshot["payload"]["users"].as_array().map(Vec::len),
            Some(1),
            "the crashed room's session left: only the new one is present: {snapshot}"
        );
    }
}
