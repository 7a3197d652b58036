//! Cursors and typing: moves paced per user and published, typing that stops by itself, and
//! the messages a session sends for them.

use super::*;

/// How long a `typing.start` holds before the server sends `typing.stop` itself.
pub const TYPING_TIMEOUT: Duration = Duration::from_secs(5);

/// Per-user cursor state.
#[derive(Default)]
pub(super) struct Cursor {
    /// Paces deliveries at one per 50 ms, keeping the newest.
    pub(super) throttle: Throttle<(SessionId, Option<Point>)>,
    /// Last known position, for snapshots.
    pub(super) last: Option<Point>,
    /// A flush of the throttle is scheduled.
    pub(super) flush_scheduled: bool,
}

/// A user typing in a cell.
pub(super) struct Typing {
    /// The session that started it, which is not told of the stop; `None` when remote.
    pub(super) origin: Option<SessionId>,
    /// The timer that sends `typing.stop` after [`TYPING_TIMEOUT`].
    pub(super) timer: SpawnHandle,
}

impl Room {
    /// Delivers a cursor move locally and to other instances.
    pub(super) fn emit_cursor(
        &mut self,
        user_id: &str,
        origin: SessionId,
        position: Option<Point>,
        ctx: &mut Context<Self>,
    ) {
        let frame = frames::cursor_move(user_id, position);
        self.fan_out(&frame, Order::None, Some(origin), Some(user_id), ctx);
        self.publish(
            BoardEvent::Cursor {
                user_id: user_id.to_string(),
                position,
                origin,
            },
            ctx,
        );
    }

    /// The user's cursor state, made at their first move: the moves after it, local or from
    /// another instance, look it up without allocating a key. `None` never happens.
    pub(super) fn cursor_state(&mut self, user_id: &str) -> Option<&mut Cursor> {
        if !self.cursors.contains_key(user_id) {
            self.cursors.insert(user_id.to_string(), Cursor::default());
        }
        self.cursors.get_mut(user_id)
    }

    pub(super) fn flush_cursor(&mut self, user_id: Arc<str>, ctx: &mut Context<Self>) {
        let Some(cursor) = self.cursors.get_mut(&*user_id) else {
            return;
        };
        cursor.flush_scheduled = false;
        let now = Instant::now();
        if let Some((origin, position)) = cursor.throttle.flush(now) {
            self.emit_cursor(&user_id, origin, position, ctx);
        } else if let Some(due) = cursor.throttle.due() {
            // The timer fired a hair before the interval ended: try again then, so the held
            // move is never stranded.
            cursor.flush_scheduled = true;
            let wait = due.saturating_duration_since(now);
            ctx.run_later(wait, move |room, ctx| room.flush_cursor(user_id, ctx));
        }
    }
    pub(super) fn typing_started(
        &mut self,
        user_id: &str,
        item_id: &str,
        column_id: &str,
        origin: Option<SessionId>,
        ctx: &mut Context<Self>,
    ) {
        if let Some(old) = self.typing.remove(user_id) {
            ctx.cancel_future(old.timer);
        }
        let user = user_id.to_string();
        let timer = ctx.run_later(TYPING_TIMEOUT, move |room, ctx| {
            if let Some(typing) = room.typing.remove(&user) {
                let frame = frames::typing_stop(&user);
                room.fan_out(&frame, Order::None, typing.origin, None, ctx);
            }
        });
        self.typing
            .insert(user_id.to_string(), Typing { origin, timer });
        let frame = frames::typing_start(user_id, item_id, column_id);
        self.fan_out(&frame, Order::None, origin, None, ctx);
    }
    /// Ends a user's typing, if any, telling everyone but `except`.
    pub(super) fn typing_stopped(
        &mut self,
        user_id: &str,
        except: Option<SessionId>,
        ctx: &mut Context<Self>,
    ) {
        if let Some(typing) = self.typing.remove(user_id) {
            ctx.cancel_future(typing.timer);
            let frame = frames::typing_stop(user_id);
            self.fan_out(&frame, Order::None, except, None, ctx);
        }
    }
}

/// A local session moved its cursor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct MoveCursor {
    pub session: SessionId,
    /// The new position, or `None` when the cursor left the canvas.
    pub position: Option<Point>,
}

impl Handler<MoveCursor> for Room {
    type Result = ();

    fn handle(&mut self, msg: MoveCursor, ctx: &mut Self::Context) {
        let Some(user_id) = self
            .members
            .get(&msg.session)
            .map(|m| Arc::clone(&m.user_id))
        else {
            return;
        };
        let Some(cursor) = self.cursor_state(&user_id) else {
            return;
        };
        cursor.last = msg.position;
        match cursor
            .throttle
            .offer((msg.session, msg.position), Instant::now())
        {
            Offer::Send((origin, position)) => self.emit_cursor(&user_id, origin, position, ctx),
            Offer::HeldUntil(due) => {
                if !cursor.flush_scheduled {
                    cursor.flush_scheduled = true;
                    let wait = due.saturating_duration_since(Instant::now());
                    ctx.run_later(wait, move |room, ctx| room.flush_cursor(user_id, ctx));
                }
            }
        }
    }
}

/// A local session started or stopped typing.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetTyping {
    pub session: SessionId,
    /// The cell (item, column) for `typing.start`; `None` for `typing.stop`.
    pub cell: Option<(String, String)>,
}

impl Handler<SetTyping> for Room {
    type Result = ();

    fn handle(&mut self, msg: SetTyping, ctx: &mut Self::Context) {
        let Some(user_id) = self
            .members
            .get(&msg.session)
            .map(|m| m.user_id.to_string())
        else {
            return;
        };
        let origin = msg.session;
        match msg.cell {
            Some((item_id, column_id)) => {
                self.typing_started(&user_id, &item_id, &column_id, Some(origin), ctx);
                self.publish(
                    BoardEvent::TypingStarted {
                        user_id,
                        item_id,
                        column_id,
                        origin,
                    },
                    ctx,
                );
            }
            None => {
                self.typing_stopped(&user_id, Some(origin), ctx);
                self.publish(BoardEvent::TypingStopped { user_id, origin }, ctx);
            }
        }
    }
}
