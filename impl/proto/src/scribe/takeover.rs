//! Taking the root role over and handing it on.
//!
//! Keeping a single root while Pastry's view is inconsistent (joins, partitions, failures):
//! * a new root fetches the records of its `k` nearest peers before serving (retrying silent
//!   ones a few times) and keeps the highest `(seq, rev)`;
//! * an old root that receives such a fetch from a closer peer demotes itself *before*
//!   answering, so everything it acknowledged is in the answer;
//! * a replica refuses to acknowledge a record from a peer when it knows one closer to the
//!   group id (`NotRoot`); the sender learns that peer and demotes, and its publication is
//!   retried towards the right root. A root therefore acknowledges only what its replicas hold;
//! * a member that knows a newer seq than its parent pushes it up; an active root absorbs any
//!   newer seq it hears (from re-JOINs or from below), so state never rolls back.

use super::record::{RootRole, FETCH_ATTEMPTS};
use super::{Ctx, Scribe};
use crate::id::{GroupId, NodeId};
use crate::pastry::{Hop, Overlay};
use crate::timer::{Armed, Timer};
use crate::wire::{Msg, NodeHandle, Routed, ScribeMsg, WireRecord};
use std::collections::VecDeque;

impl Scribe {
    /// Makes this peer the group's root if it is not already: leaves its tree parent and starts
    /// fetching the nearest peers' records.
    pub(crate) fn ensure_root(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) {
        let g = super::group::entry(&mut self.groups, ctx, gid);
        if g.root.is_some() {
            return;
        }
        if let Some(p) = g.parent.take() {
            ctx.out.send(&p, ScribeMsg::Leave { gid });
        }
        g.rejoin_at = None;
        ctx.overlay
            .nearest_leaves(gid.0, ctx.cfg.replicas, &mut self.scratch);
        ctx.out
            .send_many(self.scratch.iter(), ScribeMsg::FetchState { gid });
        let mut role = Box::new(RootRole {
            active: false,
            fetch_deadline: ctx.now + ctx.cfg.fetch_timeout,
            fetch_attempts: 1,
            fetch_armed: Armed::default(),
            waiting: self.scratch.iter().map(|h| h.id).collect(),
            queue: VecDeque::new(),
            pending: None,
            acked: Vec::new(),
        });
        if !self.scratch.is_empty() {
            ctx.timers.arm(
                role.fetch_deadline,
                Timer::Fetch(gid),
                &mut role.fetch_armed,
            );
        }
        g.root = Some(role);
        if self.scratch.is_empty() {
            self.activate(ctx, gid);
        }
    }

    /// The fetch timer of `gid` fired.
    pub(super) fn fetch_timer(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) {
        let now = ctx.now;
        let Some(role) = self.groups.get_mut(&gid).and_then(|g| g.root.as_mut()) else {
            return;
        };
        if role.active || !role.fetch_armed.take_due(now) {
            return;
        }
        if now >= role.fetch_deadline {
            self.fetch_timeout(ctx, gid);
        } else {
            ctx.timers.arm(
                role.fetch_deadline,
                Timer::Fetch(gid),
                &mut role.fetch_armed,
            );
        }
    }

    /// The fetch timed out: ask the silent peers again (they may have lost the datagram), up
    /// to [`FETCH_ATTEMPTS`] times, then serve with what we have.
    pub(crate) fn fetch_timeout(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) {
        let Some(role) = self.groups.get_mut(&gid).and_then(|g| g.root.as_mut()) else {
            return;
        };
        if role.active {
            return;
        }
        if role.fetch_attempts < FETCH_ATTEMPTS && !role.waiting.is_empty() {
            role.fetch_attempts += 1;
            role.fetch_deadline = ctx.now + ctx.cfg.fetch_timeout;
            ctx.timers.arm(
                role.fetch_deadline,
                Timer::Fetch(gid),
                &mut role.fetch_armed,
            );
            self.scratch.clear();
            ctx.overlay
                .nearest_leaves(gid.0, ctx.cfg.replicas, &mut self.scratch);
            let waiting = &role.waiting;
            self.scratch.retain(|h| waiting.contains(&h.id));
            ctx.out
                .send_many(self.scratch.iter(), ScribeMsg::FetchState { gid });
            return;
        }
        self.activate(ctx, gid);
    }

    /// A peer whose record a fetching root awaits was declared dead: stop waiting for it (and
    /// serve once nobody else is awaited) rather than for the fetch timeout.
    pub(crate) fn fetch_peer_dead(&mut self, ctx: &mut Ctx<'_>, gid: GroupId, dead: NodeId) {
        let Some(role) = self.groups.get_mut(&gid).and_then(|g| g.root.as_mut()) else {
            return;
        };
        if role.active || !role.waiting.contains(&dead) {
            return;
        }
        role.waiting.retain(|id| *id != dead);
        if role.waiting.is_empty() {
            self.activate(ctx, gid);
        }
    }

    /// Ends the fetch phase: the record is the highest of ours, the replies and our member view.
    pub(crate) fn activate(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) {
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        let Some(role) = g.root.as_mut() else { return };
        if role.active {
            return;
        }
        role.active = true;
        role.waiting.clear();
        let mut rec = g.record.take().unwrap_or_default();
        if g.latest.seq > rec.seq {
            let etag = ctx.secrets.etag();
            rec.adopt(g.latest.clone(), ctx.now, ctx.cfg.pub_default_expires, etag);
        }
        let latest = rec.latest();
        g.record = Some(rec);
        self.apply_latest(ctx, gid, latest);
        self.send_replicas(ctx, gid, true);
        self.drain_queue(ctx, gid);
    }

    /// A new root asks for our record of `gid`.
    pub(super) fn on_fetch_state(&mut self, ctx: &mut Ctx<'_>, from: NodeHandle, gid: GroupId) {
        // A closer peer is taking the group over: stop serving *before* answering, so that
        // everything we acknowledged is in the record it receives.
        let is_root = self.groups.get(&gid).is_some_and(|g| g.root.is_some());
        if is_root && ctx.overlay.route(gid.0, None) != Hop::Local {
            self.demote(ctx, gid);
        }
        let rec = self
            .groups
            .get(&gid)
            .and_then(|g| g.best_record())
            .map(|r| r.to_wire(ctx.now));
        ctx.out.send(&from, ScribeMsg::FetchReply { gid, rec });
    }

    pub(crate) fn on_fetch_reply(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: NodeHandle,
        gid: GroupId,
        rec: Option<WireRecord>,
    ) {
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        let Some(role) = g.root.as_mut() else { return };
        if role.active {
            return;
        }
        if let Some(w) = rec {
            let inc = super::Record::from_wire(w, ctx.now);
            if g.record.as_ref().is_none_or(|r| inc.key() > r.key()) {
                g.record = Some(inc);
            }
        }
        let Some(role) = g.root.as_mut() else { return };
        role.waiting.retain(|id| *id != from.id);
        if role.waiting.is_empty() {
            self.activate(ctx, gid);
        }
    }

    /// A replica knows a peer closer to the group id (already added to our routing state by
    /// the peer): hand the group over if routing agrees.
    pub(crate) fn on_not_root(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) {
        let is_root = self.groups.get(&gid).is_some_and(|g| g.root.is_some());
        if is_root && ctx.overlay.route(gid.0, None) != Hop::Local {
            self.demote(ctx, gid);
        }
    }

    /// Replica sets of the groups this peer serves as root (taken before a peer is declared
    /// dead, to tell afterwards which replicas are new).
    pub(crate) fn root_replica_sets(
        &self,
        overlay: &Overlay,
        k: usize,
    ) -> Vec<(GroupId, Vec<NodeHandle>)> {
        let mut out = Vec::new();
        for (gid, g) in &self.groups {
            if g.root.as_ref().is_some_and(|r| r.active) {
                let mut v = Vec::new();
                overlay.nearest_leaves(gid.0, k, &mut v);
                out.push((*gid, v));
            }
        }
        out
    }

    /// A closer peer is now responsible for the group: hand queued requests on and re-JOIN the
    /// tree as an ordinary member (carrying our state, which the new root will adopt if newer).
    pub(crate) fn demote(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) {
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        let Some(role) = g.root.take() else { return };
        ctx.out.stats.demotions += 1;
        ctx.events
            .push_back(crate::event::Event::Log(crate::diag::LogEvent::Demoted {
                gid,
            }));
        let RootRole { pending, queue, .. } = *role;
        if let Some(c) = pending {
            if g.record.as_ref().is_none_or(|r| c.rec.key() > r.key()) {
                g.record = Some(c.rec);
            }
        }
        g.parent = None;
        g.rejoin_at = Some(ctx.now);
        let me = ctx.me();
        for mut q in queue {
            if let Routed::Join { graft, .. } = &mut q {
                *graft = false;
            }
            ctx.out.loopback.push_back((
                me,
                Msg::Routed {
                    key: gid.0,
                    hops: 0,
                    body: q,
                },
            ));
        }
    }
}
