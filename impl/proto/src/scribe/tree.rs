//! The multicast tree: JOINs grafting the reverse path, the root's answer retracing it, the
//! multicast of new states, heartbeats, leaves, and the reaction to a dead peer (orphans
//! re-JOIN carrying their state; the closest peer takes a root over).

use super::{Ctx, Group, Scribe, MAX_DEPTH, MAX_PATH};
use crate::diag::LogEvent;
use crate::event::Event;
use crate::id::{GroupId, NodeId};
use crate::mutants::Mutant;
use crate::pastry::Hop;
use crate::wire::{Beat, BeatAck, Latest, NodeHandle, Routed, ScribeMsg, REJOIN_ID_BIT};

impl Scribe {
    /// Forward upcall of a JOIN at a non-root peer (or at its origin). Grafts the previous
    /// hop as a child and answers it with a pACK, adds the newest state known here to the
    /// JOIN, and returns where it goes next: up the tree to our parent, or (not in the tree
    /// yet) to the overlay's next hop `route_next`, which becomes our parent. `None` drops it.
    pub fn forward_join(
        &mut self,
        ctx: &mut Ctx<'_>,
        prev: NodeHandle,
        join: &mut Routed,
        route_next: NodeHandle,
    ) -> Option<NodeHandle> {
        let Routed::Join {
            gid,
            join_id,
            graft,
            carried,
            path,
            ..
        } = join
        else {
            return Some(route_next);
        };
        if path.len() >= MAX_PATH {
            return None;
        }
        let me = ctx.me();
        let now = ctx.now;
        path.push(me);
        let g = self.group(ctx, *gid);
        if *graft && prev.id != me.id {
            g.add_child(prev, now);
            let msg = ScribeMsg::Provisional {
                gid: *gid,
                join_id: *join_id,
            };
            ctx.out.send(&prev, msg);
        }
        if ctx.cfg.mutant_on(Mutant::JoinDropsState) {
            *carried = None;
        } else if g.latest.seq > carried.as_ref().map_or(0, |c| c.seq) {
            *carried = Some(g.latest.clone());
        }
        if g.root.is_some() {
            // Root being handed over: pass the JOIN on without attaching ourselves.
            *graft = false;
            return Some(route_next);
        }
        *graft = true;
        if ctx.cfg.mutant_on(Mutant::AnswerFromIntermediate) && g.latest.seq > 0 && !path.is_empty()
        {
            // Seeded bug: answer from this peer's own, possibly stale, state.
            let mut back = path.clone();
            back.pop();
            if let Some(to) = back.last().copied() {
                let msg = ScribeMsg::JoinAck {
                    gid: *gid,
                    join_id: *join_id,
                    latest: g.latest.clone(),
                    path: back,
                };
                ctx.out.send(&to, msg);
                return None;
            }
        }
        match g.parent {
            // Up the tree (unless that would bounce straight back: a two-cycle).
            Some(p) if p.id != prev.id => Some(p),
            _ => {
                g.parent = Some(route_next);
                g.parent_heard = now;
                // This JOIN grafts us: a pending re-JOIN need not be resent (its id stays
                // until a new need: an answer to it may still come).
                g.rejoin_at = None;
                Some(route_next)
            }
        }
    }

    /// A JOIN reached the root (this peer).
    pub fn deliver_join(&mut self, ctx: &mut Ctx<'_>, prev: NodeHandle, join: Routed) {
        let Routed::Join { gid, graft, .. } = &join else {
            return;
        };
        let gid = *gid;
        self.ensure_root(ctx, gid);
        let g = self.group(ctx, gid);
        if *graft && prev.id != ctx.me().id {
            g.add_child(prev, ctx.now);
        }
        self.root_request(ctx, gid, join);
    }

    /// The root's ACK retracing a JOIN's reverse path.
    pub(super) fn on_join_ack(
        &mut self,
        ctx: &mut Ctx<'_>,
        gid: GroupId,
        join_id: u64,
        latest: Latest,
        mut path: Vec<NodeHandle>,
    ) {
        // Retrace the reverse path; every peer on it learns the state.
        let Some(next) = self.retrace(ctx, gid, &mut path, &latest, true) else {
            return;
        };
        if let Some(next) = next {
            let msg = ScribeMsg::JoinAck {
                gid,
                join_id,
                latest,
                path,
            };
            ctx.out.send(&next, msg);
            return;
        }
        let accepted = self.accept_sub(ctx, gid, join_id);
        // A tree-repair JOIN answered after this peer left the tree (its last subscriber and
        // child gone): the answer is not for a member any more.
        let member = self
            .groups
            .get(&gid)
            .is_some_and(|g| g.has_interest() || g.root.is_some());
        if member {
            if self.apply_latest(ctx, gid, latest) {
                self.root_absorb_latest(ctx, gid);
            }
            if let Some(h) = accepted {
                // The first NOTIFY: the newest state known here (seq 0, no state, when
                // nothing was published yet).
                self.deliver_to(ctx, gid, h);
            }
        }
    }

    /// A JOIN's answer retracing its reverse `path` reached this peer: pops this peer off it
    /// and, when a hop remains, learns `latest` (if `learn`) without multicasting it to that
    /// hop, which gets it in the answer itself. `None`: the path does not name this peer;
    /// `Some(None)`: this peer is the JOIN's origin; `Some(Some(next))`: forward to `next`.
    fn retrace(
        &mut self,
        ctx: &mut Ctx<'_>,
        gid: GroupId,
        path: &mut Vec<NodeHandle>,
        latest: &Latest,
        learn: bool,
    ) -> Option<Option<NodeHandle>> {
        if path.pop().is_none_or(|h| h.id != ctx.me().id) {
            return None;
        }
        let next = path.last().copied();
        if let Some(next) = next {
            let learn = learn && !ctx.cfg.mutant_on(Mutant::ReversePathForgets);
            if learn && self.apply_latest_except(ctx, gid, latest.clone(), Some(next.id)) {
                self.root_absorb_latest(ctx, gid);
            }
        }
        Some(next)
    }

    pub(super) fn on_notify(&mut self, ctx: &mut Ctx<'_>, gid: GroupId, latest: Latest) {
        if self.apply_latest(ctx, gid, latest) {
            self.root_absorb_latest(ctx, gid);
        }
    }

    /// Takes `latest` if newer: delivers it to accepted local subscribers and multicasts it to
    /// the children. Returns whether it was newer.
    pub(crate) fn apply_latest(&mut self, ctx: &mut Ctx<'_>, gid: GroupId, latest: Latest) -> bool {
        self.apply_latest_except(ctx, gid, latest, None)
    }

    /// [`Scribe::apply_latest`], not multicasting to child `skip` (which gets the state
    /// another way).
    pub(crate) fn apply_latest_except(
        &mut self,
        ctx: &mut Ctx<'_>,
        gid: GroupId,
        latest: Latest,
        skip: Option<NodeId>,
    ) -> bool {
        let Some(g) = self.groups.get_mut(&gid) else {
            return false;
        };
        let stale_ok = ctx.cfg.mutant_on(Mutant::NoStaleFilter) && latest.seq > 0;
        if latest.seq <= g.latest.seq && !stale_ok {
            return false;
        }
        let newer = latest.seq > g.latest.seq;
        if newer {
            g.latest = latest;
        }
        self.notify_local(ctx, gid);
        let Some(g) = self.groups.get(&gid) else {
            return newer;
        };
        let silenced = g.root.is_some() && ctx.cfg.mutant_on(Mutant::NoMulticast);
        if !g.children.is_empty() && newer && !silenced {
            let msg = ScribeMsg::Notify {
                gid,
                latest: g.latest.clone(),
            };
            let to = g.children.iter().filter(|c| Some(c.handle.id) != skip);
            ctx.out.send_many(to.map(|c| &c.handle), msg);
        }
        newer
    }

    /// Sends a tree-repair re-JOIN for `gid` carrying the latest state known here: the one in
    /// progress again (a retransmission), or a new one (request id [`REJOIN_ID_BIT`] set).
    pub(super) fn send_rejoin(ctx: &mut Ctx<'_>, gid: GroupId, g: &mut Group) {
        g.rejoin_at = Some(ctx.now + ctx.cfg.request_retry);
        if g.rejoin_id == 0 {
            g.rejoin_id = ctx.rng.nonzero() | REJOIN_ID_BIT;
        }
        ctx.out.stats.rejoins += 1;
        ctx.events.push_back(Event::Log(LogEvent::Rejoin { gid }));
        let carried = (g.latest.seq > 0).then(|| g.latest.clone());
        Self::send_join(ctx, gid, g.rejoin_id, carried);
    }

    /// A parent's heartbeats: each beat is handled as its group's own heartbeat, and the
    /// answers go back together in one datagram: an acknowledgement per group in which the
    /// sender is this peer's parent, and the groups in which it is not (or no longer: a
    /// cycle), which the sender takes as leaves.
    pub(super) fn on_heartbeats(&mut self, ctx: &mut Ctx<'_>, from: NodeHandle, beats: &[Beat]) {
        let (mut acks, mut left) = (Vec::with_capacity(beats.len()), Vec::new());
        for b in beats {
            match self.on_heartbeat(ctx, from, b) {
                Ok(ack) => acks.push(ack),
                Err(gid) => left.push(gid),
            }
        }
        if !acks.is_empty() || !left.is_empty() {
            ctx.out.send(&from, ScribeMsg::HeartbeatAcks { acks, left });
        }
    }

    /// One group's heartbeat: the acknowledgement to send if `from` is this peer's parent, or
    /// the group to leave.
    fn on_heartbeat(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: NodeHandle,
        beat: &Beat,
    ) -> Result<BeatAck, GroupId> {
        let now = ctx.now;
        let gid = beat.gid;
        match self.groups.get_mut(&gid) {
            Some(g) if g.parent.is_some_and(|p| p.id == from.id) => {
                g.parent_heard = now;
                g.depth = beat.depth.saturating_add(1);
                if g.depth > MAX_DEPTH {
                    // Probably a cycle: leave the parent and re-JOIN.
                    g.parent = None;
                    g.rejoin_now(now);
                    return Err(gid);
                }
                let seq = g.latest.seq;
                if beat.seq < seq {
                    // We know a newer state than our parent (e.g. after a partition or a
                    // root change): push it up so the root keeps the highest.
                    let latest = g.latest.clone();
                    ctx.out.send(&from, ScribeMsg::Notify { gid, latest });
                }
                Ok(BeatAck { gid, seq })
            }
            _ => Err(gid),
        }
    }

    pub(super) fn on_heartbeat_ack(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: NodeHandle,
        gid: GroupId,
        seq: u64,
    ) {
        let ignored = ctx.cfg.mutant_on(Mutant::BeatAckIgnored);
        if let Some(g) = self.groups.get_mut(&gid) {
            if let Some(c) = g.children.iter_mut().find(|c| c.handle.id == from.id) {
                c.last_ack = ctx.now;
                if seq < g.latest.seq && !ignored {
                    let latest = g.latest.clone();
                    ctx.out.send(&from, ScribeMsg::Notify { gid, latest });
                }
            }
        }
    }

    pub(super) fn on_leave(&mut self, ctx: &mut Ctx<'_>, from: NodeHandle, gid: GroupId) {
        if ctx.cfg.mutant_on(Mutant::LeaveIgnored) {
            return;
        }
        if let Some(g) = self.groups.get_mut(&gid) {
            g.children.retain(|c| c.handle.id != from.id);
            if g.parent.is_some_and(|p| p.id == from.id) {
                // Our parent left the tree (or the overlay): re-JOIN at the next tick.
                g.parent = None;
                g.rejoin_now(ctx.now);
            }
            self.prune(ctx, gid);
        }
    }

    /// The overlay declared peer `id` dead (keep-alive timeout, or a driver's failure detector
    /// through the harness's `declare_dead`). Per group: `id` stops being a child; an orphan
    /// re-JOINs at once carrying its latest state; a peer that is now the closest to a group
    /// it holds anything for takes the root role over (fetching the replicas' records before
    /// serving); a root re-replicates to its new replica set and commits what it holds.
    pub fn on_peer_dead(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: NodeId,
        replica_sets: &[(GroupId, Vec<NodeHandle>)],
    ) {
        let gids: Vec<GroupId> = self.groups.keys().copied().collect();
        for gid in gids {
            let local = ctx.overlay.route(gid.0, None) == Hop::Local;
            let Some(g) = self.groups.get_mut(&gid) else {
                continue;
            };
            if !ctx.cfg.mutant_on(Mutant::DeadChildKept) {
                g.children.retain(|c| c.handle.id != id);
            }
            // A lease confirmed for it has lapsed by now (the failure timeout is longer than
            // `root_lease`): another root may be promised again.
            if g.confirms.is_some_and(|c| c.0 == id) {
                g.confirms = None;
            }
            let orphan = g.parent.is_some_and(|p| p.id == id);
            if orphan {
                g.parent = None;
                g.rejoin_now(ctx.now);
            }
            let holds = g.record.is_some() || g.has_interest() || g.latest.seq > 0;
            if g.root.is_none() && local && holds {
                ctx.out.stats.takeovers += 1;
                ctx.events
                    .push_back(Event::Log(LogEvent::Takeover { gid, dead: id }));
                self.ensure_root(ctx, gid);
            } else if g.root.is_some() {
                self.fetch_peer_dead(ctx, gid, id);
                if let Some((_, before)) = replica_sets.iter().find(|(g, _)| *g == gid) {
                    self.root_replicas_changed(ctx, gid, id, before);
                }
            } else if orphan && g.has_interest() {
                Self::send_rejoin(ctx, gid, g);
            }
            // A peer whose last child died no longer needs the group: it leaves the tree now
            // (and drops a re-JOIN it had pending) rather than at its next tick.
            self.prune(ctx, gid);
        }
    }

    /// The tree-repair timer of `gid` fires now: an orphan (or a peer whose re-JOIN got no
    /// answer) re-JOINs, through the parent that acknowledged it (pACK) if it has one (as
    /// the model retransmits), else by routing. Returns whether this peer needs the group.
    #[cfg(feature = "harness")]
    pub fn fire_rejoin_timer(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) -> bool {
        let Some(g) = self.groups.get_mut(&gid) else {
            return false;
        };
        if g.root.is_some() || !g.has_interest() {
            return false;
        }
        Self::send_rejoin(ctx, gid, g);
        true
    }
}
