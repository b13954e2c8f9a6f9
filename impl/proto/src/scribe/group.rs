//! Per-group state and its maintenance tick: heartbeats to children, parent and child
//! timeouts, tree repair, the root's periodic duties, and collection of groups nobody needs.

use super::record::{Record, RootRole};
use super::{Ctx, Scribe};
use crate::config::Config;
use crate::event::SubHandle;
use crate::id::{GroupId, NodeId};
use crate::pastry::Hop;
use crate::timer::{Armed, Timer};
use crate::wire::{Latest, NodeHandle, ScribeMsg};
use crate::Millis;
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
pub(crate) struct Child {
    pub handle: NodeHandle,
    pub last_ack: Millis,
}

/// Per-group state of a peer (member, root, or replica holder).
#[derive(Debug)]
pub(crate) struct Group {
    pub latest: Latest,
    pub parent: Option<NodeHandle>,
    pub parent_heard: Millis,
    pub depth: u8,
    pub children: Vec<Child>,
    pub subs: Vec<SubHandle>,
    pub rejoin_at: Option<Millis>,
    pub root: Option<Box<RootRole>>,
    /// Root record (authoritative while the root role is active) or replica copy.
    pub record: Option<Record>,
    /// The highest epoch promised to a fetching root, and to whom: records of a lower epoch
    /// are refused from then on (fencing).
    pub promised: (u64, Option<NodeId>),
    /// The root whose lease this peer confirmed last (it granted that root's fetch or
    /// acknowledged its REPLICATE), and until when the lease may run: `root_lease` from the
    /// confirmation, at least as long as the root's own lease, which runs from before it.
    /// Meanwhile this peer promises no other root anything (`FetchReply::busy_for`) and
    /// acknowledges no other root's REPLICATE, so that no newer root commits past a state
    /// the older one may still answer a JOIN from.
    pub confirms: Option<(NodeId, Millis)>,
    /// Next maintenance tick (every `heartbeat_interval`).
    pub next_tick: Millis,
    /// Next periodic re-replication of the root record (every `replica_refresh`).
    pub next_refresh: Millis,
    /// The maintenance timer armed in the host's timers.
    pub armed: Armed,
}

impl Group {
    fn new(now: Millis, cfg: &Config) -> Self {
        Group {
            latest: Latest::default(),
            parent: None,
            parent_heard: 0,
            depth: 0,
            children: Vec::new(),
            subs: Vec::new(),
            rejoin_at: None,
            root: None,
            record: None,
            promised: (0, None),
            confirms: None,
            next_tick: now + cfg.heartbeat_interval,
            next_refresh: now + cfg.replica_refresh,
            armed: Armed::default(),
        }
    }
    /// Milliseconds for which this peer still confirms the lease of a root other than `root`
    /// (0: none runs).
    pub(crate) fn busy_for(&self, root: NodeId, now: Millis, cfg: &Config) -> Millis {
        if cfg.mutant_on(crate::mutants::Mutant::LeaseIgnored) {
            return 0;
        }
        match self.confirms {
            Some((other, until)) if other != root => until.saturating_sub(now),
            _ => 0,
        }
    }
    pub(crate) fn has_interest(&self) -> bool {
        !self.subs.is_empty() || !self.children.is_empty()
    }
    pub(crate) fn add_child(&mut self, h: NodeHandle, now: Millis) {
        match self.children.iter_mut().find(|c| c.handle.id == h.id) {
            Some(c) => {
                c.handle = h;
                c.last_ack = now;
            }
            None => self.children.push(Child {
                handle: h,
                last_ack: now,
            }),
        }
    }
    fn wakeup(&self) -> Millis {
        self.next_tick.min(self.next_refresh)
    }
}

/// The group `gid` of `groups`, created (and its maintenance timer armed) if absent.
pub(super) fn entry<'g>(
    groups: &'g mut BTreeMap<GroupId, Group>,
    ctx: &mut Ctx<'_>,
    gid: GroupId,
) -> &'g mut Group {
    let g = groups
        .entry(gid)
        .or_insert_with(|| Group::new(ctx.now, ctx.cfg));
    ctx.timers.arm(g.wakeup(), Timer::Group(gid), &mut g.armed);
    g
}

impl Scribe {
    /// The group's maintenance timer fired.
    pub(super) fn group_timer(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) {
        let now = ctx.now;
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        if !g.armed.take_due(now) {
            return;
        }
        if now >= g.next_refresh {
            // Periodic full re-replication (covers replicas that restarted or joined).
            g.next_refresh = now + ctx.cfg.replica_refresh;
            if g.root.as_ref().is_some_and(|r| r.active) {
                self.send_replicas(ctx, gid, true);
            }
        }
        if self.groups.get(&gid).is_some_and(|g| now >= g.next_tick) {
            if let Some(g) = self.groups.get_mut(&gid) {
                g.next_tick = now + ctx.cfg.heartbeat_interval;
            }
            self.group_tick(ctx, gid);
        }
        if let Some(g) = self.groups.get_mut(&gid) {
            ctx.timers.arm(g.wakeup(), Timer::Group(gid), &mut g.armed);
        }
    }

    /// Heartbeats, failure handling, root duties of one group. Runs every
    /// `heartbeat_interval`.
    fn group_tick(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) {
        let now = ctx.now;
        // Root duties (may demote this peer).
        let is_root = self.groups.get(&gid).is_some_and(|g| g.root.is_some());
        if is_root {
            if ctx.overlay.route(gid.0, None) != Hop::Local {
                self.demote(ctx, gid);
            } else {
                self.root_tick(ctx, gid);
            }
        }
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        if let Some(p) = g.parent {
            if now.saturating_sub(g.parent_heard) > ctx.cfg.parent_timeout {
                g.parent = None;
                g.rejoin_at = Some(now);
                ctx.out.send(&p, ScribeMsg::Leave { gid });
            }
        }
        if g.root.is_none()
            && g.parent.is_none()
            && g.has_interest()
            && g.rejoin_at.is_none_or(|t| now >= t)
        {
            Self::send_rejoin(ctx, gid, g);
        }
        let timeout = ctx.cfg.child_timeout;
        g.children
            .retain(|c| now.saturating_sub(c.last_ack) <= timeout);
        if !g.children.is_empty() {
            let depth = if g.root.is_some() { 0 } else { g.depth };
            let msg = ScribeMsg::Heartbeat {
                gid,
                seq: g.latest.seq,
                depth,
            };
            ctx.out.send_many(g.children.iter().map(|c| &c.handle), msg);
        }
        self.prune(ctx, gid);
        let g = &self.groups[&gid];
        let confirming = g.confirms.is_some_and(|c| c.1 > now);
        if !g.has_interest()
            && g.root.is_none()
            && g.parent.is_none()
            && g.record.is_none()
            && !confirming
        {
            self.groups.remove(&gid);
        }
    }

    /// Leaves the tree when nothing below or here needs the group any more.
    pub(super) fn prune(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) {
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        if g.has_interest() || g.root.is_some() {
            return;
        }
        let keep = ctx.cfg.mutant_on(crate::mutants::Mutant::PruneKeepsParent);
        if let Some(p) = if keep { g.parent } else { g.parent.take() } {
            ctx.out.send(&p, ScribeMsg::Leave { gid });
        }
        g.rejoin_at = None;
    }

    /// Graceful departure: parents and children are told, replicas get the record once more.
    pub fn depart(&mut self, ctx: &mut Ctx<'_>) {
        for gid in self.active_roots() {
            self.send_replicas(ctx, gid, true);
        }
        for (gid, g) in &mut self.groups {
            let msg = ScribeMsg::Leave { gid: *gid };
            if let Some(p) = g.parent.take() {
                ctx.out.send(&p, msg.clone());
            }
            ctx.out.send_many(g.children.iter().map(|c| &c.handle), msg);
            g.children.clear();
        }
    }
}
