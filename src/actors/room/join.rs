//! A session joining a room: its arrival in presence, then its first frame (a snapshot or a
//! resume) ahead of everything that reached the room meanwhile.

use super::*;

impl Room {
    /// Sends the joining session its first frame, then what it held back meanwhile.
    pub(super) fn finish_join(
        &mut self,
        sid: SessionId,
        arrived: Arrived,
        catchup: Catchup,
        ctx: &mut Context<Self>,
    ) {
        self.see_epoch(catchup.epoch(), Some(sid));
        let Some(member) = self.members.get_mut(&sid) else {
            return;
        };
        let users: Vec<PresenceEntry<'_>> = arrived
            .users
            .iter()
            .map(|user: &PresentUser| PresenceEntry {
                user,
                cursor: self.cursors.get(&user.user_id).and_then(|c| c.last),
            })
            .collect();
        let me = json!({"userId": &*member.user_id, "sessionId": sid.to_string(), "color": arrived.color});
        let seq = catchup.seq();
        self.sequencer.know(seq);
        if self.settings.shared {
            for user in &arrived.users {
                self.present.insert(user.user_id.clone(), user.clone());
            }
        }
        let mut first = vec![];
        match catchup {
            Catchup::Snapshot {
                seq,
                items,
                values,
                resync,
                epoch,
            } => first.push(frames::snapshot(&frames::Snapshot {
                board: &self.key.board,
                seq,
                epoch: &epoch,
                me: &me,
                users: &users,
                items: &items,
                values: &values,
                resync,
            })),
            Catchup::Replay {
                from,
                to,
                frames,
                epoch,
            } => {
                first.push(frames::resumed(
                    &self.key.board,
                    &epoch,
                    &me,
                    &users,
                    (from, to),
                ));
                first.extend(frames);
            }
        }
        member.rev_floor = arrived.rev;
        member.seq_floor = seq;
        // The first frames go in front of what arrived meanwhile; all of it reaches the
        // session at the pace it reads (a replay may be far larger than its mailbox).
        let queue = member.queue.get_or_insert_with(Box::default);
        for frame in first.into_iter().rev() {
            queue.push_front((Order::None, WireFrame::from(frame)));
        }
        member.ready = true;
        self.drain(sid);
        self.schedule_retry(ctx);
    }
}

/// A session asks to join; sent by the registry.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Join {
    pub session: SessionId,
    /// The user id, shared with the session's other holders.
    pub user_id: Arc<str>,
    /// Name and avatar, shared with the session's other holders.
    pub info: Arc<UserInfo>,
    pub out: Outlet,
    /// The last seq its client saw, when it resumes.
    pub last_seq: Option<u64>,
    /// The epoch of that seq, when its client gave it.
    pub epoch: Option<String>,
}

impl Handler<Join> for Room {
    type Result = ();

    fn handle(&mut self, msg: Join, ctx: &mut Self::Context) {
        self.joins_seen += 1;
        let sid = msg.session;
        self.members.insert(
            sid,
            Member {
                user_id: msg.user_id.clone(),
                info: msg.info.clone(),
                out: msg.out,
                queue: Some(Box::default()),
                ready: false,
                held: 0,
                lagged: false,
                rev_floor: 0,
                seq_floor: 0,
            },
        );
        // Both requests are queued now, before any later Depart of this session.
        let arrived = self.presence.send(Arrive {
            board: self.key.clone(),
            sessions: vec![Local {
                session: sid,
                user_id: msg.user_id,
                info: msg.info,
                place: None,
            }],
            listing: true,
        });
        let catchup = GetCatchup {
            board: self.key.clone(),
            last_seq: msg.last_seq,
            epoch: msg.epoch,
        };
        let broker = self.broker.clone();
        let subscribed = self.subscribed.clone();
        // The catch-up is read once the board's channel is subscribed (no event falls between
        // the two), and meanwhile the arrival is on its way: in Redis mode, a new board's first
        // session waits for two round trips, not three.
        let catchup = async move {
            if let Some(subscribed) = subscribed {
                subscribed.await;
            }
            broker.send(catchup).await
        };
        let work = futures_util::future::join(arrived, catchup);
        ctx.spawn(
            work.into_actor(self)
                .map(move |result, room, ctx| match result {
                    (Ok(Ok(arrived)), Ok(Ok(catchup))) => {
                        room.finish_join(sid, arrived, catchup, ctx)
                    }
                    (Ok(Err(err)), _) | (_, Ok(Err(err))) => {
                        if let Some(member) = room.members.get(&sid) {
                            member
                                .out
                                .do_send(Outbound::Frame(err.to_frame_error().to_frame().into()));
                            member.out.do_send(Outbound::Close(
                                close::RESTARTING,
                                "backend unavailable".into(),
                            ));
                        }
                    }
                    _ => {
                        if let Some(member) = room.members.get(&sid) {
                            let err = FrameError::new(None, ErrorCode::Internal, "join failed");
                            member.out.do_send(Outbound::Frame(err.to_frame().into()));
                            member
                                .out
                                .do_send(Outbound::Close(close::RESTARTING, "join failed".into()));
                        }
                    }
                }),
        );
    }
}
