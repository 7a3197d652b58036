//! The session actor: one per WebSocket.
//!
//! It decodes and validates every frame, applies the rate limit, forwards typed commands to
//! its room (ephemeral), the presence actor (status) or the broker (durable), writes what the
//! room sends it, and pings, times out and expires on the heartbeat tick its workspace sends it
//! (a timer of its own only when its token expires before the next tick). One file, a
//! little over the size the others keep to: every part works on the same socket state (its
//! encoding, its limits, whether it is closing), and splitting it would pass that state around.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use actix_web_actors::ws;
use bytestring::ByteString;

use crate::actors::broker::{Append, SubscribeUser, UnsubscribeUser};
use crate::actors::presence::SetStatus;
use crate::actors::room::{
    Join, Leave, MoveCursor, Outbound, Outlet, ReplayedAck, Room, SetTyping,
};
use crate::actors::workspace::{Enter, Exit, Workspace};
use crate::auth::{Identity, Role};
use crate::backend::ops::OpKey;
use crate::board::DurableOp;
use crate::event::{BoardKey, SessionId, UserInfo};
use crate::frames;
use crate::limits::{AbuseWindow, SessionSlot, TokenBucket};
use crate::metrics;
use crate::protocol::{
    close, is_cursor_move, parse_client_frame, ClientFrame, ClientMessage, ErrorCode, FrameError,
};
use crate::startup::AppState;
use crate::wire::{pack, parse_packed_frame, Encoding, WireFrame};

/// Durable operations a session may have waiting behind those in flight; past it they are
/// answered `unavailable` at once (the backend is slow or stalled, and a client that retries
/// later does better than one whose operations apply long after it gave up on them).
const DURABLE_QUEUE: usize = 32;
/// Durable operations a session may have in flight. The broker applies a board's operations in
/// the order they arrive, in both modes (with Redis, a board's operations go in batches, one
/// batch at a time, and a batch stops at the first operation that must be tried again).
const DURABLE_WINDOW: usize = 32;

/// How a session joins: where its client resumes from, and whether it wants the workspace.
pub struct Joining {
    /// The last seq its client saw, and the epoch of it.
    pub resume: (Option<u64>, Option<String>),
    /// It asked for the workspace frames (`workspace=1`).
    pub workspace: bool,
}

/// Everything a session needs from the instance, shared by all sessions.
pub type Shared = Arc<AppState>;

/// The session actor. See the module documentation.
pub struct Session {
    /// This session's id, shown to its client in `self.sessionId`.
    id: SessionId,
    /// The board it joined.
    key: BoardKey,
    /// Who it speaks for; replaced by `auth.refresh`.
    identity: Identity,
    /// Its resume point, and whether it wants the workspace frames; taken when it starts.
    /// Boxed, as are the other fields few sessions use for long: the session lives inline in
    /// its connection's task, which every idle connection pays for.
    joining: Option<Box<Joining>>,
    /// Instance-wide actors and settings.
    shared: Shared,
    /// The board's room, known from `started` on.
    room: Option<Arc<Addr<Room>>>,
    /// The tenant's workspace, known from `started` on.
    workspace: Option<Arc<Addr<Workspace>>>,
    /// The board's first frame (its snapshot or resume) went out.
    board_started: bool,
    /// Frames from outside the board waiting for the board's first frame; at most
    /// `SESSION_QUEUE`, past which the session closes with 4009.
    #[allow(clippy::box_collection)]
    aside: Option<Box<VecDeque<WireFrame>>>,
    /// When the client last sent anything, pongs included.
    last_seen: Instant,
    /// When the server last pinged.
    last_ping: Instant,
    /// The per-session rate limit.
    bucket: TokenBucket,
    /// Sustained-abuse detector.
    abuse: AbuseWindow,
    /// The timer for its token's expiry, armed only when that comes before the next tick.
    timer: Option<SpawnHandle>,
    /// How its frames are encoded, both ways.
    encoding: Encoding,
    /// A fragmented message being reassembled, and whether it is binary; `None` between
    /// messages.
    fragments: Option<Box<(bool, Vec<u8>)>>,
    /// Durable operations waiting for those in flight, in the order the client sent them.
    durable_queue: VecDeque<(Option<String>, DurableOp)>,
    /// Durable operations in flight.
    durable_in_flight: usize,
    /// Its place among its user's sessions on this instance, given back when it ends.
    _slot: SessionSlot,
    /// A close frame was sent: what the client still sends is ignored.
    closing: bool,
}

impl Session {
    /// A session of `identity` on `key`.
    pub fn new(
        key: BoardKey,
        identity: Identity,
        joining: Joining,
        encoding: Encoding,
        slot: SessionSlot,
        shared: Shared,
    ) -> Self {
        let now = Instant::now();
        let config = &shared.config;
        Session {
            id: SessionId::random(),
            key,
            identity,
            joining: Some(Box::new(joining)),
            bucket: TokenBucket::new(config.rate_per_sec, config.rate_burst, now),
            abuse: AbuseWindow::new(config.rate_per_sec, now),
            shared,
            room: None,
            workspace: None,
            board_started: false,
            aside: None,
            last_seen: now,
            last_ping: now,
            timer: None,
            encoding,
            fragments: None,
            durable_queue: VecDeque::new(),
            durable_in_flight: 0,
            _slot: slot,
            closing: false,
        }
    }

    fn close(&mut self, code: u16, reason: &str, ctx: &mut ws::WebsocketContext<Self>) {
        if self.closing {
            return;
        }
        self.closing = true;
        metrics::closed_with(code);
        ctx.close(Some(ws::CloseReason {
            code: ws::CloseCode::from(code),
            description: Some(reason.to_string()),
        }));
        ctx.stop();
    }

    fn error(&self, err: FrameError, ctx: &mut ws::WebsocketContext<Self>) {
        self.write(err.to_frame(), ctx);
    }

    /// Writes a frame of this session's own (an ack, an error, a pong) in its encoding.
    fn write(&self, frame: ByteString, ctx: &mut ws::WebsocketContext<Self>) {
        match self.encoding {
            Encoding::Json => ctx.text(frame),
            Encoding::MsgPack => ctx.binary(pack(&frame)),
        }
    }

    /// Writes a frame the room or workspace sent, in this session's encoding (its MessagePack
    /// form made once for all sessions).
    fn send_frame(&self, frame: &WireFrame, ctx: &mut ws::WebsocketContext<Self>) {
        match self.encoding {
            Encoding::Json => ctx.text(frame.json().clone()),
            Encoding::MsgPack => ctx.binary(frame.packed()),
        }
    }

    /// How long until the token expires; zero once it has.
    fn until_expiry(&self) -> Duration {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Duration::from_millis(
            self.identity
                .exp
                .saturating_mul(1000)
                .saturating_sub(now_ms),
        )
    }

    /// Arms a timer for the token's expiry when it comes before the next heartbeat tick. The
    /// heartbeat itself needs none: the session's workspace sends [`Outbound::Tick`] to each
    /// of its sessions every tick, so an idle session holds no timer (about 110 bytes each).
    fn arm_timer(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        if let Some(handle) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        let until = self.until_expiry();
        if until <= self.shared.config.heartbeat_tick() {
            self.timer = Some(ctx.run_later(until, |session, ctx| {
                session.timer = None;
                session.on_tick(ctx);
            }));
        }
    }

    /// Closes the session with 4001 once its token expired, or with 1000 when its client has
    /// been silent for `client_timeout`; else pings when a heartbeat is due, and arms the
    /// expiry's timer when the expiry is near.
    fn on_tick(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        if self.until_expiry().is_zero() {
            return self.close(close::TOKEN_EXPIRED, "token expired", ctx);
        }
        let now = Instant::now();
        let config = &self.shared.config;
        if now.duration_since(self.last_seen) >= config.client_timeout {
            log::debug!("session {} timed out", self.id);
            return self.close(close::NORMAL, "client timeout", ctx);
        }
        if now.duration_since(self.last_ping) >= config.heartbeat_interval {
            self.last_ping = now;
            ctx.ping(b"");
        }
        if self.timer.is_none() {
            self.arm_timer(ctx);
        }
    }

    /// Counts a frame against the limits; false when the session was closed for abuse.
    fn admit(&mut self, ctx: &mut ws::WebsocketContext<Self>) -> bool {
        if self.abuse.record(Instant::now()) {
            self.close(close::RATE_ABUSE, "rate abuse", ctx);
            return false;
        }
        true
    }

    /// One whole message from the client: a text one when `binary` is false.
    fn on_message(&mut self, binary: bool, bytes: &[u8], ctx: &mut ws::WebsocketContext<Self>) {
        metrics::FRAMES_RECEIVED.inc();
        if !self.admit(ctx) {
            return;
        }
        let decoded = match (self.encoding, binary) {
            (Encoding::Json, false) => match std::str::from_utf8(bytes) {
                Ok(text) => parse_client_frame(text),
                Err(_) => Err(FrameError::bad_request(None, "text is not UTF-8")),
            },
            (Encoding::MsgPack, true) => parse_packed_frame(bytes),
            (Encoding::Json, true) => Err(FrameError::bad_request(
                None,
                "binary frames need the boardcast.v1.msgpack subprotocol",
            )),
            (Encoding::MsgPack, false) => Err(FrameError::bad_request(
                None,
                "text frames are not accepted on a boardcast.v1.msgpack socket",
            )),
        };
        let frame = match decoded {
            Ok(frame) => frame,
            Err(err) => {
                self.bucket.try_take(Instant::now());
                return self.error(err, ctx);
            }
        };
        if !self.bucket.try_take(Instant::now()) {
            metrics::RATE_LIMITED.inc();
            if !is_cursor_move(&frame) {
                self.error(
                    FrameError::new(frame.id, ErrorCode::RateLimited, "too many frames"),
                    ctx,
                );
            }
            return;
        }
        self.dispatch(frame, ctx);
    }

    fn dispatch(&mut self, frame: ClientFrame, ctx: &mut ws::WebsocketContext<Self>) {
        let ClientFrame { id, message } = frame;
        let Some(room) = self.room.clone() else {
            return;
        };
        match message {
            ClientMessage::CursorMove(position) => room.do_send(MoveCursor {
                session: self.id,
                position,
            }),
            ClientMessage::TypingStart { item_id, column_id } => room.do_send(SetTyping {
                session: self.id,
                cell: Some((item_id, column_id)),
            }),
            ClientMessage::TypingStop => room.do_send(SetTyping {
                session: self.id,
                cell: None,
            }),
            ClientMessage::PresenceUpdate(status) => self.shared.presence.do_send(SetStatus {
                board: self.key.clone(),
                user_id: self.identity.user_id.clone(),
                status,
                origin: self.id,
            }),
            ClientMessage::Ping(payload) => self.write(frames::pong(&payload), ctx),
            ClientMessage::AuthRefresh(token) => self.refresh(id, &token, ctx),
            ClientMessage::Durable(op) => {
                if self.identity.role != Role::Editor {
                    return self.error(
                        FrameError::new(
                            id,
                            ErrorCode::Forbidden,
                            "viewers cannot change the board",
                        ),
                        ctx,
                    );
                }
                if self.durable_queue.len() >= DURABLE_QUEUE {
                    return self.error(
                        FrameError::new(
                            id,
                            ErrorCode::Unavailable,
                            "too many operations waiting; retry",
                        ),
                        ctx,
                    );
                }
                self.durable_queue.push_back((id, op));
                self.next_durable(ctx);
            }
        }
    }

    /// Sends queued durable operations while the window allows, so that a session's
    /// operations apply in the order it sent them.
    fn next_durable(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        while self.durable_in_flight < DURABLE_WINDOW {
            let Some((id, op)) = self.durable_queue.pop_front() else {
                return;
            };
            self.send_durable(id, op, ctx);
        }
    }

    fn send_durable(
        &mut self,
        id: Option<String>,
        op: DurableOp,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        self.durable_in_flight += 1;
        let user_id = &self.identity.user_id;
        let key = id
            .as_deref()
            .map(|id| OpKey::new(user_id, id, op.kind(), &op.payload()));
        let append = self.shared.broker.send(Append {
            board: self.key.clone(),
            op,
            user_id: user_id.clone(),
            ack: Some((self.id, id.clone())),
            key,
        });
        ctx.spawn(append.into_actor(self).map(move |result, session, ctx| {
            session.durable_in_flight -= 1;
            let err = match result {
                // A retry of an operation applied before: no event carries its ack now. The
                // room writes it once it delivered the event applied then (a moment ago,
                // perhaps), so that acks stay in seq order.
                Ok(Ok(appended)) if appended.replayed => {
                    let frame = frames::ack(&id, appended.seq, appended.version);
                    match &session.room {
                        Some(room) => room.do_send(ReplayedAck {
                            session: session.id,
                            seq: appended.seq,
                            frame: frame.into(),
                        }),
                        None => session.write(frame, ctx),
                    }
                    None
                }
                Ok(Ok(_)) => None,
                Ok(Err(err)) => Some(err.to_frame_error()),
                Err(_) => Some(FrameError::new(
                    None,
                    ErrorCode::Unavailable,
                    "broker unavailable",
                )),
            };
            if let Some(err) = err {
                session.error(FrameError { id, ..err }, ctx);
            }
            session.next_durable(ctx);
        }));
    }

    fn refresh(&mut self, id: Option<String>, token: &str, ctx: &mut ws::WebsocketContext<Self>) {
        let accepted = self.shared.verifier.verify(token).ok().filter(|new| {
            new.user_id == self.identity.user_id
                && new.tenant == self.identity.tenant
                && new.role != Role::Server
                && new.may_join(&self.key.board)
        });
        match accepted {
            Some(identity) => {
                self.identity = identity;
                self.arm_timer(ctx);
                self.write(frames::ack_id(&id), ctx);
            }
            None => self.error(
                FrameError::new(
                    id,
                    ErrorCode::Forbidden,
                    "the token is not valid for this session",
                ),
                ctx,
            ),
        }
    }

    fn on_fragment(&mut self, item: actix_http::ws::Item, ctx: &mut ws::WebsocketContext<Self>) {
        // Every fragment counts towards abuse: a message cut into many tiny frames costs the
        // server a frame's work each.
        if !self.admit(ctx) {
            return;
        }
        let max = self.shared.config.max_message_bytes;
        let (bytes, last) = match item {
            actix_http::ws::Item::FirstText(b) => {
                self.fragments = Some(Box::new((false, Vec::new())));
                (b, false)
            }
            actix_http::ws::Item::FirstBinary(b) => {
                self.fragments = Some(Box::new((true, Vec::new())));
                (b, false)
            }
            actix_http::ws::Item::Continue(b) => (b, false),
            actix_http::ws::Item::Last(b) => (b, true),
        };
        let Some((_, buf)) = self.fragments.as_deref_mut() else {
            return self.error(
                FrameError::bad_request(None, "continuation without a first frame"),
                ctx,
            );
        };
        buf.extend_from_slice(&bytes);
        if buf.len() > max {
            return self.close(close::TOO_BIG, "message too big", ctx);
        }
        if last {
            if let Some(fragments) = self.fragments.take() {
                let (binary, buf) = *fragments;
                self.on_message(binary, &buf, ctx);
            }
        }
    }
}

impl Actor for Session {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.shared.config.session_queue);
        let out: Outlet = Arc::new(ctx.address().recipient());
        let (last_seq, epoch, wants) = match self.joining.take() {
            Some(joining) => {
                let Joining { resume, workspace } = *joining;
                (resume.0, resume.1, workspace)
            }
            None => (None, None, false),
        };
        // One copy of the user id, name and avatar for the room, the workspace and presence.
        let user_id: Arc<str> = Arc::from(self.identity.user_id.as_str());
        let info = Arc::new(UserInfo {
            name: self.identity.name.clone(),
            avatar: self.identity.avatar.clone(),
        });
        let room = self.shared.registry.join(
            &self.key,
            Join {
                session: self.id,
                user_id: Arc::clone(&user_id),
                info: Arc::clone(&info),
                out: Arc::clone(&out),
                last_seq,
                epoch,
            },
        );
        self.room = Some(room);
        let workspace = self.shared.registry.enter(
            &self.key.tenant,
            Enter {
                session: self.id,
                user_id,
                info,
                board: self.key.board.clone(),
                out: Arc::clone(&out),
                wants,
            },
        );
        self.workspace = Some(workspace);
        self.shared.broker.do_send(SubscribeUser {
            tenant: self.identity.tenant.clone(),
            user_id: self.identity.user_id.clone(),
            session: self.id,
            out,
        });
        metrics::SESSIONS_OPENED.inc();
        self.arm_timer(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some(room) = &self.room {
            room.do_send(Leave { session: self.id });
        }
        if let Some(workspace) = &self.workspace {
            workspace.do_send(Exit { session: self.id });
        }
        self.shared.broker.do_send(UnsubscribeUser {
            tenant: self.identity.tenant.clone(),
            user_id: self.identity.user_id.clone(),
            session: self.id,
        });
        metrics::SESSIONS_CLOSED.inc();
    }
}

impl Handler<Outbound> for Session {
    type Result = ();

    fn handle(&mut self, msg: Outbound, ctx: &mut Self::Context) {
        match msg {
            Outbound::Frame(frame) => {
                self.send_frame(&frame, ctx);
                if !self.board_started {
                    self.board_started = true;
                    for frame in self.aside.take().into_iter().flat_map(|aside| *aside) {
                        self.send_frame(&frame, ctx);
                    }
                }
            }
            Outbound::Cursors(frames) => {
                for (_, frame) in frames {
                    Handler::<Outbound>::handle(self, Outbound::Frame(frame), ctx);
                }
            }
            Outbound::Aside(frame) if self.board_started => self.send_frame(&frame, ctx),
            Outbound::Aside(frame) => {
                let aside = self.aside.get_or_insert_default();
                aside.push_back(frame);
                if aside.len() > self.shared.config.session_queue {
                    self.aside = None;
                    self.close(close::TOO_SLOW, "too slow", ctx);
                }
            }
            Outbound::Lagged => self.close(close::TOO_SLOW, "too slow", ctx),
            Outbound::Close(code, reason) => self.close(code, &reason, ctx),
            Outbound::Tick => self.on_tick(ctx),
        }
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for Session {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        if self.closing {
            return;
        }
        self.last_seen = Instant::now();
        match msg {
            Ok(ws::Message::Text(text)) => self.on_message(false, text.as_bytes(), ctx),
            Ok(ws::Message::Binary(bytes)) => self.on_message(true, &bytes, ctx),
            Ok(ws::Message::Continuation(item)) => self.on_fragment(item, ctx),
            Ok(ws::Message::Ping(bytes)) => {
                if self.admit(ctx) {
                    ctx.pong(&bytes);
                }
            }
            Ok(ws::Message::Pong(_)) => {
                self.admit(ctx);
            }
            Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Err(ws::ProtocolError::Overflow) => self.close(close::TOO_BIG, "message too big", ctx),
            Err(err) => {
                log::debug!("session {}: protocol error: {err}", self.id);
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
