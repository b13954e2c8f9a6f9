//! Per-group state and its maintenance tick: heartbeats to children, parent and child
//! timeouts, tree repair, the root's periodic duties, and collection of groups nobody needs.
//!
//! The ticks of all groups run together, in one peer-wide *tree round* every
//! `heartbeat_interval` ([`Timer::Tree`]), and what a round sends one neighbour for all the
//! groups they share travels together (Scribe's per-neighbour aggregation: maintenance
//! traffic grows with the number of neighbours, not with neighbours × groups):
//!
//! * the heartbeats to a child: one [`ScribeMsg::Heartbeats`] datagram per child and round
//!   (split at [`MAX_BEATS`]), answered by one [`ScribeMsg::HeartbeatAcks`];
//! * a root's periodic re-replication (every `replica_refresh`, in the first round due): one
//!   [`ScribeMsg::Replicates`] per replica and round, packed up to [`REPLICAS_BUDGET`]
//!   bytes, answered by one [`ScribeMsg::ReplicateAcks`].
//!
//! Each beat and each record is handled exactly as its own group's message would be; only the
//! datagrams are shared.

use super::record::{Record, RootRole};
use super::{Ctx, Scribe};
use crate::config::Config;
use crate::event::SubHandle;
use crate::id::{GroupId, NodeId};
use crate::pastry::Hop;
use crate::timer::{Armed, Timer};
use crate::wire::{Beat, Latest, NodeHandle, ReplicaItem, ScribeMsg, MAX_BEATS, REPLICAS_BUDGET};
use crate::Millis;
use std::collections::BTreeMap;

/// The peer-wide tree round: when it runs next, and what it collects per neighbour.
#[derive(Clone, Debug, Default)]
pub(crate) struct Round {
    pub armed: Armed,
    /// The groups due in this round: whether to refresh the record, whether to tick (kept
    /// between rounds for its capacity).
    due: Vec<(GroupId, bool, bool)>,
    /// Heartbeats of this round, per child: the child's handle as the group that heard from
    /// it last knows it, and the beats.
    beats: BTreeMap<NodeId, (NodeHandle, Millis, Vec<Beat>)>,
    /// Records this round refreshes, per replica, with their encoded length.
    records: BTreeMap<NodeId, (NodeHandle, Vec<(ReplicaItem, usize)>)>,
}

impl Round {
    fn beat(&mut self, to: &Child, beat: Beat) {
        let e = self
            .beats
            .entry(to.handle.id)
            .or_insert_with(|| (to.handle, to.last_ack, Vec::new()));
        if to.last_ack > e.1 {
            // A peer that came back at another address: the freshest handle wins.
            (e.0, e.1) = (to.handle, to.last_ack);
        }
        e.2.push(beat);
    }

    /// Queues `item` for every replica in `to`.
    pub(super) fn refresh(&mut self, to: &[NodeHandle], item: ReplicaItem) {
        let len = postcard::to_allocvec(&item).map_or(usize::MAX, |b| b.len());
        for h in to {
            self.records
                .entry(h.id)
                .or_insert_with(|| (*h, Vec::new()))
                .1
                .push((item.clone(), len));
        }
    }

    /// Sends what the round collected: per child, its heartbeats (one datagram per
    /// [`MAX_BEATS`]); per replica, its records (one datagram per [`REPLICAS_BUDGET`] bytes;
    /// a record too large to share one goes alone, as a plain `Replicate`).
    fn flush(&mut self, ctx: &mut Ctx<'_>) {
        for (_, (to, _, beats)) in std::mem::take(&mut self.beats) {
            for chunk in beats.chunks(MAX_BEATS) {
                let beats = chunk.to_vec();
                ctx.out.send(&to, ScribeMsg::Heartbeats { beats });
            }
        }
        let stamp = ctx.now;
        for (_, (to, records)) in std::mem::take(&mut self.records) {
            let (mut items, mut bytes) = (Vec::new(), 0);
            for (item, len) in records {
                if len > REPLICAS_BUDGET {
                    let ReplicaItem { gid, rec, epoch } = item;
                    let msg = ScribeMsg::Replicate {
                        gid,
                        rec,
                        epoch,
                        stamp,
                    };
                    ctx.out.send(&to, msg);
                    continue;
                }
                if bytes + len > REPLICAS_BUDGET {
                    let items = std::mem::take(&mut items);
                    ctx.out.send(&to, ScribeMsg::Replicates { stamp, items });
                    bytes = 0;
                }
                bytes += len;
                items.push(item);
            }
            if !items.is_empty() {
                ctx.out.send(&to, ScribeMsg::Replicates { stamp, items });
            }
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Child {
    pub handle: NodeHandle,
    pub last_ack: Millis,
}

/// Per-group state of a peer (member, root, or replica holder).
#[derive(Clone, Debug)]
pub(crate) struct Group {
    pub latest: Latest,
    pub parent: Option<NodeHandle>,
    pub parent_heard: Millis,
    pub depth: u8,
    pub children: Vec<Child>,
    pub subs: Vec<SubHandle>,
    /// When to send (or resend) a tree-repair re-JOIN, if one is needed.
    pub rejoin_at: Option<Millis>,
    /// The request id of the re-JOIN in progress (0: none yet). Its retransmissions reuse
    /// it; a new need (the parent lost again, a demotion) draws a new one, so that an answer
    /// to an older re-JOIN is told from the current one's.
    pub rejoin_id: u64,
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
    /// The tree round from which this group's maintenance ticks (a new group's first tick is
    /// at least `heartbeat_interval` away).
    pub next_tick: Millis,
    /// The tree round from which a root re-replicates its record (every `replica_refresh`).
    pub next_refresh: Millis,
}

impl Group {
    /// The parent is lost (or the tree must be joined anew): re-JOIN at the next tick, as a
    /// new request.
    pub fn rejoin_now(&mut self, now: Millis) {
        self.rejoin_at = Some(now);
        self.rejoin_id = 0;
    }

    /// No re-JOIN is needed any more (answered, or the group is no longer wanted here).
    pub fn rejoin_done(&mut self) {
        self.rejoin_at = None;
        self.rejoin_id = 0;
    }

    fn new(now: Millis, cfg: &Config) -> Self {
        Group {
            latest: Latest::default(),
            parent: None,
            parent_heard: 0,
            depth: 0,
            children: Vec::new(),
            subs: Vec::new(),
            rejoin_at: None,
            rejoin_id: 0,
            root: None,
            record: None,
            promised: (0, None),
            confirms: None,
            next_tick: now + cfg.heartbeat_interval,
            next_refresh: now + cfg.replica_refresh,
        }
    }
    /// Milliseconds for which this peer still confirms the lease of a root other than `root`
    /// (0: none runs).
    ///
    /// A confirmation of a root this peer declared dead counts for nothing (a late
    /// REPLICATE of a crashed root acknowledged after its death, say): the failure timeout
    /// outlasts any lease. A root that comes back is taken back first (its announcement, or
    /// its own fetch), and counts again.
    pub(crate) fn busy_for(
        &self,
        root: NodeId,
        now: Millis,
        cfg: &Config,
        overlay: &crate::pastry::Overlay,
    ) -> Millis {
        if cfg.mutant_on(crate::mutants::Mutant::LeaseIgnored) {
            return 0;
        }
        match self.confirms {
            Some((other, until)) if other != root && !overlay.tombstoned(other) => {
                until.saturating_sub(now)
            }
            _ => 0,
        }
    }
    /// Whether a maintenance tick would send nothing and keep the group as it is (but for
    /// clearing a re-JOIN deadline that matters only with interest): no root role, no tree
    /// edge, no local subscriber, and a record (a replica's copy) that keeps the group.
    fn idle(&self) -> bool {
        self.root.is_none()
            && self.parent.is_none()
            && !self.has_interest()
            && self.record.is_some()
    }
    /// This group's heartbeat to its children: this peer's latest seq and depth (0 at the
    /// root).
    fn beat(&self, gid: GroupId) -> Beat {
        Beat {
            gid,
            seq: self.latest.seq,
            depth: if self.root.is_some() { 0 } else { self.depth },
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
}

/// The group `gid` of `groups`, created (and the tree round armed) if absent.
pub(super) fn entry<'g>(
    groups: &'g mut BTreeMap<GroupId, Group>,
    round: &mut Armed,
    ctx: &mut Ctx<'_>,
    gid: GroupId,
) -> &'g mut Group {
    let g = groups
        .entry(gid)
        .or_insert_with(|| Group::new(ctx.now, ctx.cfg));
    ctx.timers
        .arm(ctx.now + ctx.cfg.heartbeat_interval, Timer::Tree, round);
    g
}

impl Scribe {
    /// The tree round: the maintenance tick of every group due and the refresh of every
    /// record due, then what they send, one datagram per neighbour. Re-armed while this peer
    /// holds any group.
    pub(super) fn tree_round(&mut self, ctx: &mut Ctx<'_>) {
        if self.round.armed.take_due(ctx.now) {
            self.run_round(ctx);
        }
    }

    /// The tree round itself (see [`Scribe::tree_round`]).
    fn run_round(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        // One pass to find what is due (most groups need nothing: a replica's copy, say), then
        // the work, which needs the whole peer.
        let mut due = std::mem::take(&mut self.round.due);
        due.clear();
        for (gid, g) in self.groups.iter_mut() {
            let mut refresh = false;
            if now >= g.next_refresh {
                // Periodic full re-replication (covers replicas that restarted or joined).
                g.next_refresh = now + ctx.cfg.replica_refresh;
                refresh = g.root.as_ref().is_some_and(|r| r.active);
            }
            let mut tick = false;
            if now >= g.next_tick {
                g.next_tick = now + ctx.cfg.heartbeat_interval;
                tick = !g.idle();
            }
            if refresh || tick {
                due.push((*gid, refresh, tick));
            }
        }
        for &(gid, refresh, tick) in &due {
            if refresh {
                self.refresh_replicas(ctx, gid);
            }
            if tick && self.groups.contains_key(&gid) {
                self.group_tick(ctx, gid);
            }
        }
        self.round.due = due;
        self.round.flush(ctx);
        if !self.groups.is_empty() {
            let at = now + ctx.cfg.heartbeat_interval;
            ctx.timers.arm(at, Timer::Tree, &mut self.round.armed);
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
        let silent = now.saturating_sub(g.parent_heard) > ctx.cfg.parent_timeout;
        Self::member_duties(ctx, gid, g, silent);
        let timeout = ctx.cfg.child_timeout;
        g.children
            .retain(|c| now.saturating_sub(c.last_ack) <= timeout);
        self.beat_children(gid);
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

    /// Makes `gid`'s maintenance tick due now and arms the tree round at `now` (a driver that
    /// owns the timers), whatever the round's own deadline; the driver then fires
    /// [`Timer::Tree`] through [`Scribe::handle_timer`]. Returns how many children the group
    /// has, or `None` if this peer holds no such group.
    #[cfg(feature = "harness")]
    pub fn due_heartbeat(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) -> Option<usize> {
        let g = self.groups.get_mut(&gid)?;
        g.next_tick = ctx.now;
        let children = g.children.len();
        ctx.timers.arm(ctx.now, Timer::Tree, &mut self.round.armed);
        Some(children)
    }

    /// Makes every deadline of `gid`'s tree round due now (its maintenance tick, its replica
    /// refresh, an orphan's re-JOIN) and arms the round at `now` (a probe on a fork: the
    /// harness's clocks never reach those intervals). Returns whether this peer holds `gid`.
    #[cfg(feature = "harness")]
    pub fn due_round(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) -> bool {
        let Some(g) = self.groups.get_mut(&gid) else {
            return false;
        };
        g.next_refresh = ctx.now;
        g.rejoin_at = g.rejoin_at.map(|t| t.min(ctx.now));
        self.due_heartbeat(ctx, gid).is_some()
    }

    /// Queues `gid`'s heartbeat to each of its children in this tree round; returns how many.
    fn beat_children(&mut self, gid: GroupId) -> usize {
        let Some(g) = self.groups.get(&gid) else {
            return 0;
        };
        let beat = g.beat(gid);
        for c in &g.children {
            self.round.beat(c, beat);
        }
        g.children.len()
    }

    /// Times `gid`'s parent out now, as the tick does after `parent_timeout` without a beat
    /// (a driver that owns the timers): the tick's member duties run with the parent taken
    /// as silent (it leaves its parent and re-JOINs if it still needs the group), and nothing
    /// else of the tick runs. Returns whether it had a parent.
    #[cfg(feature = "harness")]
    pub fn fire_parent_timeout(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) -> bool {
        let Some(g) = self.groups.get_mut(&gid) else {
            return false;
        };
        if g.parent.is_none() {
            return false;
        }
        Self::member_duties(ctx, gid, g, true);
        true
    }

    /// The tick's duties as a member of `gid`: it times its parent out when the parent has
    /// been `silent` for longer than `parent_timeout`, and an orphan that still needs the
    /// group re-JOINs once its re-JOIN is due.
    fn member_duties(ctx: &mut Ctx<'_>, gid: GroupId, g: &mut Group, silent: bool) {
        if g.parent.is_some() && silent {
            Self::parent_timed_out(ctx, gid, g);
        }
        if g.root.is_none()
            && g.parent.is_none()
            && g.has_interest()
            && g.rejoin_at.is_none_or(|t| ctx.now >= t)
        {
            Self::send_rejoin(ctx, gid, g);
        }
    }

    /// The parent of `gid` timed out: forget it (the tick re-JOINs if the group is still
    /// needed) and tell it with a LEAVE, unless that re-JOIN goes through it again: the LEAVE
    /// could overtake the JOIN and cut off the very branch the JOIN grafts anew.
    fn parent_timed_out(ctx: &mut Ctx<'_>, gid: GroupId, g: &mut Group) {
        let Some(p) = g.parent.take() else {
            return;
        };
        g.rejoin_now(ctx.now);
        let rejoins = g.root.is_none() && g.has_interest();
        let through_it = matches!(ctx.overlay.route(gid.0, None), Hop::Next(h) if h.id == p.id);
        if !(rejoins && through_it) {
            ctx.out.send(&p, ScribeMsg::Leave { gid });
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
        g.rejoin_done();
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
