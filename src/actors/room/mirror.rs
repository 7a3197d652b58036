//! The room's mirror of the board's presence (Redis mode): after the backend was out of reach,
//! the room tells its sessions what changed in presence meanwhile.

use super::*;

impl Room {
    /// Tells local sessions how presence changed while the room could not hear it.
    pub(super) fn apply_presence(
        &mut self,
        rev: u64,
        users: Vec<PresentUser>,
        ctx: &mut Context<Self>,
    ) {
        let now: HashMap<String, PresentUser> =
            users.into_iter().map(|u| (u.user_id.clone(), u)).collect();
        let gone: Vec<String> = self
            .present
            .keys()
            .filter(|u| !now.contains_key(*u))
            .cloned()
            .collect();
        for user_id in gone {
            self.typing_stopped(&user_id, None, ctx);
            self.cursors.remove(&user_id);
            let frame = frames::presence_leave(&user_id);
            self.fan_out(&frame, Order::None, None, None, ctx);
        }
        for (user_id, user) in &now {
            match self.present.get(user_id) {
                None => {
                    let frame = frames::presence_join(user);
                    self.fan_out(&frame, Order::None, None, None, ctx);
                }
                Some(before) if before.status != user.status => {
                    let frame = frames::presence_update(user_id, user.status);
                    self.fan_out(&frame, Order::None, None, None, ctx);
                }
                _ => {}
            }
        }
        self.present = now;
        for member in self.members.values_mut() {
            member.rev_floor = member.rev_floor.max(rev);
        }
    }
}

impl Handler<Resync> for Room {
    type Result = ();

    fn handle(&mut self, _: Resync, ctx: &mut Self::Context) {
        self.fill_gap(ctx);
        let sessions = self
            .members
            .iter()
            .map(|(sid, m)| Local {
                session: *sid,
                user_id: m.user_id.clone(),
                info: m.info.clone(),
                place: None,
            })
            .collect();
        let sync = self.presence.send(SyncBoard {
            board: self.key.clone(),
            sessions,
        });
        ctx.spawn(sync.into_actor(self).map(|result, room, ctx| match result {
            Ok(Ok((rev, users))) => room.apply_presence(rev, users, ctx),
            _ => log::warn!(
                "{}: presence not re-registered; the next resync tries again",
                room.key
            ),
        }));
    }
}
