//! The registry: finds the room of a board, starting it on first join.
//!
//! A plain shared map rather than an actor: a session learns its room's address at once, in
//! its `started`, so no frame of its client ever waits for a lookup. Rooms stop when their last
//! session leaves; the registry counts the joins it forwarded so that a room never stops while
//! a join is still on its way to it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use actix::prelude::*;

use crate::actors::presence::Presence;
use crate::actors::room::{CloseAll, Join, Room, RoomSettings};
use crate::broker::Broker;
use crate::event::BoardKey;

/// A running room and the joins sent to it.
struct Entry {
    /// The room.
    addr: Addr<Room>,
    /// Its id, to tell it from a later room of the same board.
    id: u64,
    /// Joins forwarded to it.
    joins: u64,
}

/// Rooms of this instance by board.
pub struct Registry {
    /// Running rooms.
    rooms: Mutex<HashMap<BoardKey, Entry>>,
    /// Given to new rooms.
    presence: Addr<Presence>,
    /// Given to new rooms.
    broker: Addr<Broker>,
    /// Given to new rooms.
    settings: RoomSettings,
}

impl Registry {
    /// An empty registry whose rooms use `presence` and `broker`.
    pub fn new(
        presence: Addr<Presence>,
        broker: Addr<Broker>,
        settings: RoomSettings,
    ) -> Arc<Self> {
        Arc::new(Registry {
            rooms: Mutex::new(HashMap::new()),
            presence,
            broker,
            settings,
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<BoardKey, Entry>> {
        // A panic while holding the lock cannot leave the map half-changed: every change is a
        // single insert, remove or increment.
        self.rooms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends `join` to the board's room, starting the room if needed; returns the room.
    pub fn join(self: &Arc<Self>, key: &BoardKey, join: Join) -> Addr<Room> {
        let mut rooms = self.lock();
        let entry = rooms.entry(key.clone()).or_insert_with(|| {
            let room = Room::new(
                key.clone(),
                Arc::clone(self),
                self.presence.clone(),
                self.broker.clone(),
                self.settings,
            );
            let id = room.id();
            Entry {
                addr: room.start(),
                id,
                joins: 0,
            }
        });
        entry.joins += 1;
        // Sent under the lock, so the count never runs behind the room's mailbox.
        entry.addr.do_send(join);
        entry.addr.clone()
    }

    /// The board's room, if it runs on this instance.
    pub fn get(&self, key: &BoardKey) -> Option<Addr<Room>> {
        self.lock().get(key).map(|e| e.addr.clone())
    }

    /// An emptied room asks to stop. Granted (and the room forgotten) unless a join was sent
    /// that the room has not handled yet.
    pub fn release(&self, key: &BoardKey, room_id: u64, joins_seen: u64) -> bool {
        let mut rooms = self.lock();
        match rooms.get(key) {
            Some(entry) if entry.id == room_id && entry.joins == joins_seen => {
                rooms.remove(key);
                true
            }
            Some(entry) if entry.id == room_id => false,
            _ => true,
        }
    }

    /// Closes every session of every room with 1012 (the instance is shutting down).
    pub fn close_all(&self) {
        for entry in self.lock().values() {
            entry.addr.do_send(CloseAll);
        }
    }

    /// Rooms running now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no room runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
