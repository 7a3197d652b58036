//! The workspace actor: one per tenant on this instance, alive while the tenant has sessions
//! here. It is the tenant-wide layer above the boards.
//!
//! Every session of the tenant enters it, so that the shared presence knows who is online in
//! the tenant (first session in, last session out, on any board and instance) and which boards
//! each user is on. The workspace's presence and channel are kept like a board's, under
//! [`BoardKey::workspace`]; the same scripts decide its transitions and the same liveness purges
//! the sessions of a dead instance. Sessions that asked for it (`workspace=1`) are told
//! `workspace.snapshot` once and then `workspace.online`/`workspace.offline`; every session
//! gets the tenant's events from the HTTP API.
//!
//! Who is online is kept here while it is of use: one listing when the first session that asked
//! for the workspace frames arrives (later arrivals do not ask, as a tenant's listing grows
//! with the tenant), then the transitions, each with its presence revision. Until then the
//! transitions are not kept: a tenant whose sessions never ask pays nothing per online user
//! here (about 0.17 KiB a user, with 19,000 users in one tenant). Once listed, the workspace
//! keeps it until it stops, so a watcher reconnecting does not list the tenant again. A
//! transition older than what is known is dropped; those that come before the listing wait for
//! it. An arrival is answered with the revision its user's view must include, and its session
//! gets its snapshot once the workspace has heard that far. After the backend was out of reach
//! a fresh listing is told to the sessions as the difference. Frames go with `try_send` into
//! the session's mailbox; a session whose mailbox is full closes with 4009, as on a board.
//!
//! The workspace is also its sessions' clock: every heartbeat tick each of them is told
//! [`Outbound::Tick`] (in groups spread over the tick) and pings, times out its client or ends
//! at its token's expiry, so that an idle session holds no timer of its own.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytestring::ByteString;

use crate::actors::broker::{subscribe, Broker, Resync, Subscription};
use crate::actors::presence::{Arrive, Depart, Presence, SyncBoard};
use crate::actors::registry::Registry;
use crate::actors::room::{Outbound, Outlet};
use crate::backend::presence::Local;
use crate::event::{BoardEvent, BoardKey, PresentUser, SessionId, UserInfo};
use crate::frames;
use crate::protocol::close;
use crate::wire::WireFrame;

static NEXT_WORKSPACE_ID: AtomicU64 = AtomicU64::new(1);

/// Transitions kept while the first listing is on its way; past it they are dropped and the
/// workspace lists its presence afresh.
const EARLY_BOUND: usize = 10_000;
/// Most sessions registered in one step (one script, in Redis).
const ARRIVAL_BATCH: usize = 500;
/// The members are told [`Outbound::Tick`] in this many groups (by session id), one group at a
/// time spread over the heartbeat tick, so that a tenant's sessions do not all ping at once.
const TICK_GROUPS: u64 = 16;

/// One session of the tenant on this instance.
struct Member {
    /// Its user, shared with the session's other holders.
    user_id: Arc<str>,
    /// Name and avatar, shared with the session's other holders.
    info: Arc<UserInfo>,
    /// The board it is on.
    board: String,
    out: Outlet,
    /// It has had its `workspace.snapshot` (when it is a watcher): transitions may follow.
    ready: bool,
    /// Its mailbox overflowed: nothing more is sent.
    lagged: bool,
    /// Its arrival was sent to the shared presence: its end must be too.
    registered: bool,
}

/// The workspace actor. See the module documentation.
pub struct Workspace {
    tenant: String,
    /// Where its presence and channel are kept.
    key: BoardKey,
    /// Distinguishes it from a later workspace of the same tenant.
    id: u64,
    /// Where it is found; told when it empties.
    registry: Arc<Registry>,
    /// Presence of every board and workspace.
    presence: Addr<Presence>,
    /// The door to the shared world.
    broker: Addr<Broker>,
    /// Local sessions of the tenant.
    members: HashMap<SessionId, Member>,
    /// The members that asked for the workspace frames: a transition goes through these, not
    /// through every session of the tenant.
    watchers: HashSet<SessionId>,
    /// Joins handled, compared with the registry's count before stopping.
    joins_seen: u64,
    /// Who is online in the tenant, with the arrival number that orders them.
    online: HashMap<String, (u64, UserInfo)>,
    /// Numbers arrivals for `online`.
    next_order: u64,
    /// The presence revision `online` reflects.
    rev: u64,
    /// `online` holds a listing: transitions apply to it.
    listed: bool,
    /// An arrival asked for the listing and its answer is on the way. While neither this nor
    /// `listed` holds, nobody watches and transitions are dropped.
    listing_asked: bool,
    /// Transitions heard before the listing came, at most [`EARLY_BOUND`].
    early: Vec<BoardEvent>,
    /// Sessions waiting for their snapshot, with the revision it must include.
    pending: Vec<(SessionId, u64)>,
    /// Sessions to register in the shared presence, in the order they came (those that ended
    /// meanwhile are skipped).
    queued: Vec<SessionId>,
    /// A batch of them is on its way.
    arriving: bool,
    /// Resolves once the workspace's channel is heard; arrivals wait for it.
    subscribed: Option<Subscription>,
    /// How often each member is told [`Outbound::Tick`].
    heartbeat_tick: Duration,
    /// The group of members told next.
    tick_group: u64,
}

impl Workspace {
    /// A workspace for `tenant`.
    pub fn new(
        tenant: &str,
        registry: Arc<Registry>,
        presence: Addr<Presence>,
        broker: Addr<Broker>,
        heartbeat_tick: Duration,
    ) -> Self {
        Workspace {
            tenant: tenant.to_string(),
            key: BoardKey::workspace(tenant),
            id: NEXT_WORKSPACE_ID.fetch_add(1, Ordering::Relaxed),
            registry,
            presence,
            broker,
            members: HashMap::new(),
            watchers: HashSet::new(),
            joins_seen: 0,
            online: HashMap::new(),
            next_order: 0,
            rev: 0,
            listed: false,
            listing_asked: false,
            early: vec![],
            pending: vec![],
            queued: vec![],
            arriving: false,
            subscribed: None,
            heartbeat_tick,
            tick_group: 0,
        }
    }

    /// Tells the next group of members to look at their heartbeat. A member whose mailbox is
    /// full misses this tick (it is busy; what fills its mailbox closes it if it stays so).
    fn tick(&mut self) {
        let groups = tick_groups(self.heartbeat_tick);
        self.tick_group = (self.tick_group + 1) % groups;
        let group = self.tick_group;
        for (sid, member) in &self.members {
            if sid.0 % groups == group {
                let _ = member.out.try_send(Outbound::Tick);
            }
        }
    }

    /// This workspace's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Sends `frame` to the members that take it: those that want the workspace frames and
    /// had their snapshot, or with `all`, every member.
    fn send(&mut self, frame: &ByteString, all: bool) {
        let frame = WireFrame::from(frame.clone());
        if all {
            for member in self.members.values_mut() {
                if !member.lagged {
                    deliver(member, frame.clone());
                }
            }
            return;
        }
        for sid in &self.watchers {
            if let Some(member) = self.members.get_mut(sid) {
                if member.ready && !member.lagged {
                    deliver(member, frame.clone());
                }
            }
        }
    }

    fn went_online(&mut self, user: &PresentUser) {
        if self.online.contains_key(&user.user_id) {
            return;
        }
        self.next_order += 1;
        self.online
            .insert(user.user_id.clone(), (self.next_order, user.user.clone()));
        let frame = frames::workspace_online(&user.user_id, &user.user);
        self.send(&frame, false);
    }

    fn went_offline(&mut self, user_id: &str) {
        if let Some((_, info)) = self.online.remove(user_id) {
            let frame = frames::workspace_offline(user_id, &info);
            self.send(&frame, false);
        }
    }

    /// Takes a listing of who is online at `rev`, telling the sessions what differs; then
    /// the transitions that came before it and are newer, and the snapshots that waited.
    fn take_listing(&mut self, rev: u64, users: &[PresentUser], ctx: &mut Context<Self>) {
        self.rev = rev;
        self.listed = true;
        let now: HashSet<&str> = users.iter().map(|u| u.user_id.as_str()).collect();
        let gone: Vec<String> = self
            .online
            .keys()
            .filter(|id| !now.contains(id.as_str()))
            .cloned()
            .collect();
        for user_id in gone {
            self.went_offline(&user_id);
        }
        for user in users {
            self.went_online(user);
        }
        for event in std::mem::take(&mut self.early) {
            self.on_event(event, ctx);
        }
        // The listing is the truth now, whatever revision an arrival was told.
        let waiting: Vec<SessionId> = self.pending.drain(..).map(|(sid, _)| sid).collect();
        self.start_views(waiting);
    }

    /// Sends the snapshot to the sessions whose arrival the workspace has heard of.
    fn flush_pending(&mut self) {
        if !self.listed || self.pending.is_empty() {
            return;
        }
        let rev = self.rev;
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(_, needed)| *needed <= rev);
        self.pending = waiting;
        self.start_views(due.into_iter().map(|(sid, _)| sid).collect());
    }

    /// The sessions' views start: each that wants the frames gets the snapshot (one for all),
    /// and the transitions after it.
    fn start_views(&mut self, sessions: Vec<SessionId>) {
        let mut snapshot = None;
        for sid in sessions {
            let watches = self.watchers.contains(&sid);
            let Some(wants) = self.members.get(&sid).map(|m| watches && !m.lagged) else {
                continue;
            };
            if wants && snapshot.is_none() {
                snapshot = Some(WireFrame::from(self.snapshot()));
            }
            if let Some(member) = self.members.get_mut(&sid) {
                member.ready = true;
                if let (true, Some(frame)) = (wants, &snapshot) {
                    deliver(member, frame.clone());
                }
            }
        }
    }

    /// The `workspace.snapshot` of who is online now.
    fn snapshot(&self) -> ByteString {
        let mut users: Vec<(&u64, &str, &UserInfo)> = self
            .online
            .iter()
            .map(|(id, (order, info))| (order, id.as_str(), info))
            .collect();
        users.sort_by_key(|(order, _, _)| **order);
        frames::workspace_snapshot(users.into_iter().map(|(_, id, info)| (id, info)))
    }

    fn on_event(&mut self, event: BoardEvent, ctx: &mut Context<Self>) {
        match event {
            // Nobody watches yet: the listing the first watcher asks for includes these.
            BoardEvent::Joined { .. } | BoardEvent::Left { .. }
                if !self.listed && !self.listing_asked => {}
            BoardEvent::Joined { .. } | BoardEvent::Left { .. } if !self.listed => {
                if self.early.len() < EARLY_BOUND {
                    self.early.push(event);
                } else {
                    self.early.clear();
                    ctx.notify(Resync);
                }
            }
            BoardEvent::Joined { rev, user } if rev > self.rev => {
                self.rev = rev;
                self.went_online(&user);
                self.flush_pending();
            }
            BoardEvent::Left { rev, user_id } if rev > self.rev => {
                self.rev = rev;
                self.went_offline(&user_id);
                self.flush_pending();
            }
            BoardEvent::Broadcast { frame } => self.send(&frame, true),
            // Older transitions, and what only boards carry.
            _ => {}
        }
    }
}

/// How many groups of members a heartbeat tick is spread over: one every 10 ms at most, and at
/// most [`TICK_GROUPS`].
fn tick_groups(tick: Duration) -> u64 {
    let tens_of_ms = (tick.as_millis() / 10).max(1);
    u64::try_from(tens_of_ms).map_or(TICK_GROUPS, |n| n.min(TICK_GROUPS))
}

/// Writes `frame` into a member's mailbox without blocking; a full one closes it with 4009.
fn deliver(member: &mut Member, frame: WireFrame) {
    if let Err(SendError::Full(_)) = member.out.try_send(Outbound::Aside(frame)) {
        member.lagged = true;
        member.out.do_send(Outbound::Lagged);
    }
}

impl Actor for Workspace {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(0); // 0: unbounded; its senders are bounded sessions
        self.subscribed = Some(subscribe(&self.broker, self.key.clone(), self.id, ctx));
        let every = self.heartbeat_tick / tick_groups(self.heartbeat_tick) as u32;
        ctx.run_interval(every, |ws, _| ws.tick());
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        let left = self
            .members
            .drain()
            .map(|(sid, m)| (sid, m.user_id, m.out))
            .collect();
        self.registry.workspace_stopped(&self.tenant, self.id, left);
    }
}

/// A session of the tenant opened; sent by the registry.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Enter {
    pub session: SessionId,
    /// The user id, shared with the session's other holders.
    pub user_id: Arc<str>,
    /// Name and avatar, shared with the session's other holders.
    pub info: Arc<UserInfo>,
    /// The board it is on.
    pub board: String,
    pub out: Outlet,
    /// It asked for the workspace frames (`workspace=1`).
    pub wants: bool,
}

impl Handler<Enter> for Workspace {
    type Result = ();

    fn handle(&mut self, msg: Enter, ctx: &mut Self::Context) {
        self.joins_seen += 1;
        if msg.wants {
            self.watchers.insert(msg.session);
        }
        self.members.insert(
            msg.session,
            Member {
                user_id: msg.user_id,
                info: msg.info,
                board: msg.board,
                out: msg.out,
                ready: false,
                lagged: false,
                registered: false,
            },
        );
        self.queued.push(msg.session);
        self.arrive(ctx);
    }
}

impl Workspace {
    /// Registers the queued sessions in the shared presence, as one batch of at most
    /// [`ARRIVAL_BATCH`], unless a batch is on its way (then they go next): a tenant's sessions
    /// arriving together (the users of a dead instance reconnecting) take a few round trips,
    /// not one each.
    fn arrive(&mut self, ctx: &mut Context<Self>) {
        if self.arriving || self.queued.is_empty() {
            return;
        }
        let take = self.queued.len().min(ARRIVAL_BATCH);
        let batch: Vec<SessionId> = self.queued.drain(..take).collect();
        let sessions = batch
            .iter()
            .filter_map(|sid| {
                let m = self.members.get_mut(sid)?;
                m.registered = true;
                Some(Local {
                    session: *sid,
                    user_id: m.user_id.clone(),
                    info: m.info.clone(),
                    place: Some(m.board.clone()),
                })
            })
            .collect();
        let listing = !self.listed && !self.listing_asked && !self.watchers.is_empty();
        self.listing_asked |= listing;
        self.arriving = true;
        // Queued now, before any later Depart of these sessions.
        let arrived = self.presence.send(Arrive {
            board: self.key.clone(),
            sessions,
            listing,
        });
        let subscribed = self.subscribed.clone();
        let work = async move {
            if let Some(subscribed) = subscribed {
                subscribed.await;
            }
            arrived.await
        };
        ctx.spawn(work.into_actor(self).map(move |result, ws, ctx| {
            ws.arriving = false;
            match result {
                Ok(Ok(arrived)) => {
                    // Only a watcher's view waits for anything.
                    let watchers = &ws.watchers;
                    ws.pending.extend(
                        batch
                            .iter()
                            .filter(|sid| watchers.contains(sid))
                            .map(|sid| (*sid, arrived.rev)),
                    );
                    // A resync may have listed the workspace meanwhile, later than this.
                    if listing && !ws.listed {
                        ws.take_listing(arrived.rev, &arrived.users, ctx);
                    } else {
                        ws.flush_pending();
                    }
                }
                Ok(Err(err)) => {
                    ws.listing_asked &= !listing;
                    for member in batch.iter().filter_map(|sid| ws.members.get(sid)) {
                        member
                            .out
                            .do_send(Outbound::Aside(err.to_frame_error().to_frame().into()));
                        member.out.do_send(Outbound::Close(
                            close::RESTARTING,
                            "backend unavailable".into(),
                        ));
                    }
                }
                Err(_) => ws.listing_asked &= !listing,
            }
            ws.arrive(ctx);
        }));
    }
}

/// A session of the tenant ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Exit {
    pub session: SessionId,
}

impl Handler<Exit> for Workspace {
    type Result = ();

    fn handle(&mut self, msg: Exit, ctx: &mut Self::Context) {
        self.watchers.remove(&msg.session);
        let Some(member) = self.members.remove(&msg.session) else {
            return;
        };
        // Not registered yet: nothing to take back (its batch leaves it out).
        if member.registered {
            self.presence.do_send(Depart {
                board: self.key.clone(),
                session: msg.session,
                user_id: member.user_id,
            });
        }
        if self.members.is_empty()
            && self
                .registry
                .release_workspace(&self.tenant, self.id, self.joins_seen)
        {
            ctx.stop();
        }
    }
}

impl Handler<BoardEvent> for Workspace {
    type Result = ();

    fn handle(&mut self, event: BoardEvent, ctx: &mut Self::Context) {
        self.on_event(event, ctx);
    }
}

impl Handler<Resync> for Workspace {
    type Result = ();

    /// The backend was out of reach (or transitions were dropped): registers this instance's
    /// sessions of the tenant again and tells the sessions who came and went meanwhile.
    fn handle(&mut self, _: Resync, ctx: &mut Self::Context) {
        let sessions = self
            .members
            .iter()
            .map(|(sid, m)| Local {
                session: *sid,
                user_id: m.user_id.clone(),
                info: m.info.clone(),
                place: Some(m.board.clone()),
            })
            .collect();
        let sync = self.presence.send(SyncBoard {
            board: self.key.clone(),
            sessions,
        });
        ctx.spawn(sync.into_actor(self).map(|result, ws, ctx| match result {
            Ok(Ok((rev, users))) => {
                // What came before the listing is in it.
                ws.early.clear();
                if ws.listed || ws.listing_asked {
                    ws.take_listing(rev, &users, ctx);
                }
            }
            _ => log::warn!(
                "workspace {}: presence not re-registered; the next resync tries again",
                ws.tenant
            ),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tick_is_spread_over_groups_of_at_least_ten_milliseconds() {
        let groups = |ms| tick_groups(Duration::from_millis(ms));
        assert_eq!(groups(1), 1);
        assert_eq!(groups(10), 1);
        assert_eq!(groups(55), 5);
        assert_eq!(groups(375), TICK_GROUPS);
        assert_eq!(groups(25_000), TICK_GROUPS);
    }
}
