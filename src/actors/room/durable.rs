//! Durable events as the room delivers them: in `seq` order (the [`super::sequencer`]), gaps
//! read from the log, acks to their senders, and a new epoch noticed.

use super::*;

impl Room {
    /// Takes note of the board's epoch. A new one means the store lost the board (and its
    /// `seq` started again): every session but `except` is closed with 1012 so that its client
    /// resumes and, its epoch being old, gets a snapshot with `resync`.
    pub(super) fn see_epoch(&mut self, epoch: &str, except: Option<SessionId>) {
        if epoch.is_empty() || epoch == self.epoch {
            return;
        }
        if !self.epoch.is_empty() {
            log::warn!(
                "{}: the board's epoch changed (its store lost it, or events of it): sessions resync",
                self.key
            );
            for (sid, member) in &mut self.members {
                if Some(*sid) != except && !member.lagged {
                    member.lagged = true;
                    member.queue = None;
                    member
                        .out
                        .do_send(Outbound::Close(close::RESTARTING, "board reset".into()));
                }
            }
            self.sequencer.forget();
        }
        self.epoch = epoch.to_string();
    }
    /// Takes a durable event in `seq` order: duplicates are dropped, and an event past a gap
    /// waits while the gap is filled from the log.
    pub(super) fn on_durable(
        &mut self,
        seq: u64,
        frame: ByteString,
        ack: Option<AckTo>,
        epoch: &str,
        ctx: &mut Context<Self>,
    ) {
        self.see_epoch(epoch, None);
        // A seq delivered already, perhaps with another event: a duplicate (a gap fill and the
        // channel both carried it), or the store lost events and gave their seqs to others (a
        // Redis failover to a replica that was behind). A gap fill sends the last frame
        // delivered, and the store tells (a new epoch) when it no longer holds it. At most one
        // such check a second: duplicates come in bursts after a gap fill.
        let check = self.sequencer.may_differ(seq, &frame)
            && self
                .verified_at
                .is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(1));
        let (ready, gap) = self.sequencer.offer(seq, frame, ack);
        self.deliver_all(ready, ctx);
        if gap || check {
            if check {
                self.verified_at = Some(std::time::Instant::now());
            }
            self.fill_gap(ctx);
        }
    }
    pub(super) fn deliver_all(&mut self, ready: Vec<Sequenced>, ctx: &mut Context<Self>) {
        for (seq, frame, ack) in ready {
            self.deliver_durable(seq, frame, ack, ctx);
        }
        self.release_acks(ctx);
    }

    /// Writes the held acks whose events went out (all of them once the seq is forgotten).
    pub(super) fn release_acks(&mut self, ctx: &mut Context<Self>) {
        if self.held_acks.is_empty() {
            return;
        }
        let (ready, held): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held_acks)
            .into_iter()
            .partition(|ack| self.sequencer.handed_out(ack.seq));
        self.held_acks = held;
        for ack in ready {
            self.send(ack.session, ack.frame, Order::None, None, ctx);
        }
    }
    pub(super) fn deliver_durable(
        &mut self,
        seq: u64,
        frame: ByteString,
        ack: Option<AckTo>,
        ctx: &mut Context<Self>,
    ) {
        let Some(ack) = ack else {
            self.fan_out(&frame, Order::Seq(seq), None, None, ctx);
            return;
        };
        self.fan_out(&frame, Order::Seq(seq), Some(ack.session), None, ctx);
        // Never filtered: an op sent before the snapshot arrived is in the snapshot, and its
        // sender still needs the ack.
        self.send(
            ack.session,
            frames::ack(&ack.id, seq, ack.version).into(),
            Order::None,
            None,
            ctx,
        );
    }
    /// Reads the events after the last delivered one from the log and delivers them.
    pub(super) fn fill_gap(&mut self, ctx: &mut Context<Self>) {
        let Some((after, frame)) = self.sequencer.fill_from() else {
            return;
        };
        let request = self.broker.send(GetEvents {
            board: self.key.clone(),
            after,
            frame,
            epoch: self.epoch.clone(),
        });
        ctx.spawn(request.into_actor(self).map(|result, room, ctx| {
            room.sequencer.fill_done();
            match result {
                Ok(Ok(Filled::Events(events))) => {
                    let events = events.into_iter().filter_map(|event| match event {
                        BoardEvent::Durable {
                            seq, frame, ack, ..
                        } => Some((seq, frame, ack)),
                        _ => None,
                    });
                    let (ready, gap) = room.sequencer.filled(events);
                    room.deliver_all(ready, ctx);
                    if gap {
                        room.fill_gap(ctx);
                    }
                }
                Ok(Ok(Filled::Reset(epoch))) => {
                    // The board is of a new epoch: its sessions are closed with 1012.
                    room.see_epoch(&epoch, None);
                }
                Ok(Ok(Filled::Gone)) => {
                    // The missed events are gone from the log: every session must resync.
                    log::warn!(
                        "{}: missed events are no longer retained; sessions resync",
                        room.key
                    );
                    room.members.values_mut().for_each(Member::lag);
                    room.sequencer.forget();
                    room.release_acks(ctx);
                    room.epoch.clear();
                }
                // The backend is out of reach: try again in a second (the broker answers at once
                // while it knows Redis is out of reach).
                _ => {
                    ctx.run_later(std::time::Duration::from_secs(1), |room, ctx| {
                        room.fill_gap(ctx)
                    });
                }
            }
        }));
    }
}

/// The ack of a retry answered from its operation's record. The operation may have been
/// applied a moment ago, its event still on its way to the room: the ack waits for that event,
/// so that a session's acks stay in `seq` order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReplayedAck {
    /// The session to ack.
    pub session: SessionId,
    /// The seq the operation was applied at.
    pub seq: u64,
    /// The ack frame.
    pub frame: WireFrame,
}

impl Handler<ReplayedAck> for Room {
    type Result = ();

    fn handle(&mut self, ack: ReplayedAck, ctx: &mut Self::Context) {
        if self.sequencer.handed_out(ack.seq) {
            self.send(ack.session, ack.frame, Order::None, None, ctx);
        } else {
            self.held_acks.push(ack);
        }
    }
}
