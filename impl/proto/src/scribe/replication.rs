//! Replication of the root record to the `k` leaf-set peers nearest the group id: a change is
//! committed (answered and multicast) only once every current replica acknowledged it; a
//! replica refuses a sender it does not believe is the root; the root resends to replicas that
//! fell behind and to replicas new in its set.

use super::record::{Commit, Record};
use super::{Ctx, Scribe};
use crate::id::{GroupId, NodeId};
use crate::mutants::Mutant;
use crate::pastry::{Hop, Overlay};
use crate::wire::{NodeHandle, PubReqId, PublishReply, ReplicaItem, Routed, ScribeMsg, WireRecord};

impl Scribe {
    pub(super) fn start_commit(
        &mut self,
        ctx: &mut Ctx<'_>,
        gid: GroupId,
        rec: Record,
        reply: Option<(NodeHandle, PubReqId, PublishReply)>,
        req: Option<Routed>,
    ) {
        let Some(role) = self.groups.get_mut(&gid).and_then(|g| g.root.as_mut()) else {
            return;
        };
        let mut rec = rec;
        // A change is stamped with the epoch of the root that commits it.
        rec.epoch = role.epoch;
        role.pending = Some(Box::new(Commit { rec, reply, req }));
        self.send_replicas(ctx, gid, true);
    }

    /// The replica set of `gid` as this peer sees it, into `self.scratch` (empty with the
    /// `SkipReplication` mutant).
    fn replica_set(&mut self, ctx: &Ctx<'_>, gid: GroupId) {
        ctx.overlay
            .nearest_leaves(gid.0, ctx.cfg.replicas, &mut self.scratch);
        if ctx.cfg.mutant_on(Mutant::SkipReplication) {
            self.scratch.clear();
        }
    }

    /// Sends the best record to the replicas (all of them, or only those behind).
    pub(super) fn send_replicas(&mut self, ctx: &mut Ctx<'_>, gid: GroupId, all: bool) {
        self.replicate_record(ctx, gid, all, false);
    }

    /// The periodic refresh: the record goes to every replica in the tree round's
    /// `Replicates`, with the other groups' records this peer refreshes at the same replica.
    pub(super) fn refresh_replicas(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) {
        self.replicate_record(ctx, gid, true, true);
    }

    fn replicate_record(&mut self, ctx: &mut Ctx<'_>, gid: GroupId, all: bool, refresh: bool) {
        self.replica_set(ctx, gid);
        let Some(g) = self.groups.get(&gid) else {
            return;
        };
        let (Some(role), Some(rec)) = (g.root.as_ref(), g.best_record()) else {
            return;
        };
        if rec.seq == 0 {
            // An empty group (a JOIN created it, nothing published yet): nothing to replicate
            // until the first commit. Its members are not in the record but in the tree: a new
            // root after a failure gets them back by their re-JOINs.
            return;
        }
        let rev = rec.rev;
        let epoch = role.epoch;
        self.scratch.retain(|h| {
            all || role
                .acked
                .iter()
                .find(|a| a.0 == h.id)
                .is_none_or(|a| a.1 < rev)
        });
        if self.scratch.is_empty() {
            return;
        }
        let rec = rec.to_wire(ctx.now);
        if refresh {
            self.round
                .refresh(&self.scratch, ReplicaItem { gid, rec, epoch });
        } else {
            let msg = ScribeMsg::Replicate {
                gid,
                rec,
                epoch,
                stamp: ctx.now,
            };
            ctx.out.send_many(self.scratch.iter(), msg);
        }
    }

    /// Commits the pending change once every current replica acknowledged it. Returns whether
    /// it committed.
    pub(super) fn try_commit(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) -> bool {
        self.replica_set(ctx, gid);
        let Some(g) = self.groups.get_mut(&gid) else {
            return false;
        };
        let Some(role) = g.root.as_mut() else {
            return false;
        };
        let scratch = &self.scratch;
        role.acked.retain(|a| scratch.iter().any(|h| h.id == a.0));
        let Some(c) = role.pending.as_ref() else {
            return false;
        };
        let rev = c.rec.rev;
        let all = scratch
            .iter()
            .all(|h| role.acked.iter().any(|a| a.0 == h.id && a.1 >= rev));
        if !all || !quorum(ctx.cfg, ctx.overlay, scratch.len()) {
            return false;
        }
        let c = role.pending.take().expect("checked");
        let latest = c.rec.latest();
        g.record = Some(c.rec);
        if let Some((origin, req, reply)) = c.reply {
            ctx.out
                .send(&origin, ScribeMsg::PublishReply { req, reply });
        }
        self.apply_latest(ctx, gid, latest);
        true
    }

    pub(crate) fn on_replicate(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: NodeHandle,
        gid: GroupId,
        w: WireRecord,
        epoch: u64,
        stamp: u64,
    ) {
        if let Some(rev) = self.replicate(ctx, from, gid, w, epoch) {
            ctx.out
                .send(&from, ScribeMsg::ReplicateAck { gid, rev, stamp });
        }
    }

    /// A root's periodic refresh of many records: each is handled as its own REPLICATE, and
    /// the acknowledgements go back together in one datagram.
    pub(crate) fn on_replicates(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: NodeHandle,
        items: Vec<ReplicaItem>,
        stamp: u64,
    ) {
        let mut acks = Vec::with_capacity(items.len());
        for it in items {
            if let Some(rev) = self.replicate(ctx, from, it.gid, it.rec, it.epoch) {
                acks.push((it.gid, rev));
            }
        }
        if !acks.is_empty() {
            ctx.out
                .send(&from, ScribeMsg::ReplicateAcks { stamp, acks });
        }
    }

    /// A REPLICATE of `gid`'s record: stores it (or refuses it, answering `NotRoot` or
    /// `Fenced`). Returns the revision to acknowledge, if any.
    fn replicate(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: NodeHandle,
        gid: GroupId,
        w: WireRecord,
        epoch: u64,
    ) -> Option<u64> {
        let rev = w.rev;
        let held = self.groups.get(&gid).and_then(|g| g.best_record());
        let inc = Record::from_wire_reusing(w, ctx.now, held);
        let perfect = ctx.cfg.root_lease == crate::Millis::MAX;
        let g = self.group(ctx, gid);
        let role = g
            .root
            .as_ref()
            .map(|r| (r.active, r.pending.is_some(), r.epoch));
        let higher = g.best_record().is_none_or(|r| inc.key() > r.key());
        match role {
            Some((true, false, mine)) if higher && epoch <= mine => {
                // A late record of an earlier root (it applied a change it had not committed
                // when we took over): keep the highest and make our own replicas hold it too
                // before anything builds on it.
                let latest = inc.latest();
                g.record = Some(inc.clone());
                self.apply_latest(ctx, gid, latest);
                self.send_replicas(ctx, gid, true);
            }
            Some((false, _, mine)) if higher && epoch <= mine => {
                // The same, while we still fetch: it counts like a fetched record.
                g.record = Some(inc.clone());
            }
            Some((_, _, mine)) if higher && epoch > mine => {
                // A root of a newer epoch committed past us (a partition or a pause made two
                // roots, or it hands the group over): keep its record, then fetch again (or
                // step down) before serving. (`higher` is over the best record, a pending
                // commit's included, so over the committed one too.)
                g.record = Some(inc.clone());
                if ctx.overlay.route(gid.0, None) == Hop::Local {
                    self.reconfirm(ctx, gid);
                } else {
                    self.demote(ctx, gid);
                }
            }
            _ => {}
        }
        // Only the numerically closest peer may commit: refuse when we know a closer one
        // (named first: the sender hands the group over rather than fetching again).
        let closer = ctx.closer_than(gid, &from);
        let refuse = closer.is_some();
        let g = self.group(ctx, gid);
        let known = g.known_epoch();
        // Refuse a root of an older epoch, or of the epoch we promised another root (not
        // needed, and not done, under a failure detector that never suspects a live peer).
        let other = g.promised.0 == epoch && g.promised.1.is_some_and(|p| p != from.id);
        if (epoch < known || other) && !perfect && !refuse {
            // Another root fetched from us since, or we hold a newer root's record: refuse,
            // so that this one cannot commit, and tell it what we hold.
            let rec = g.best_record().map(|r| r.to_wire(ctx.now));
            let msg = ScribeMsg::Fenced {
                gid,
                epoch: known,
                refused: epoch,
                rec,
            };
            ctx.out.send(&from, msg);
            return None;
        }
        let g = self.group(ctx, gid);
        if g.root.is_none() && !refuse && !perfect {
            // An acknowledgement confirms the sender's lease; while another root's may still
            // run, confirm nothing (the sender's replication retry asks again).
            if g.busy_for(from.id, ctx.now, ctx.cfg, ctx.overlay) > 0 {
                return None;
            }
            g.confirms = Some((from.id, ctx.now.saturating_add(ctx.cfg.root_lease)));
        }
        // A root acknowledges a record only if it holds it (it adopted it, or its own is that
        // very change): one that keeps a different record of its own (a restarted peer's, of
        // an older epoch and a higher seq, say) would confirm what it does not store.
        let holds = g.root.is_none()
            || g.best_record()
                .is_some_and(|r| (r.epoch, r.seq) == (inc.epoch, inc.seq));
        if g.root.is_none() {
            let first = ctx.cfg.mutant_on(Mutant::ReplicaKeepsFirst) && g.record.is_some();
            let newer = g.record.as_ref().is_none_or(|r| inc.key() >= r.key());
            if newer && !first {
                g.record = Some(inc);
            }
        }
        match closer {
            Some(best) => {
                ctx.out
                    .send(&from, ScribeMsg::NotRoot { gid, closer: best });
                None
            }
            None => holds.then_some(rev),
        }
    }

    pub(crate) fn on_replicate_ack(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: NodeHandle,
        gid: GroupId,
        rev: u64,
        stamp: u64,
    ) {
        let Some(role) = self.groups.get_mut(&gid).and_then(|g| g.root.as_mut()) else {
            return;
        };
        role.grant(from.id, stamp);
        match role.acked.iter_mut().find(|a| a.0 == from.id) {
            Some(a) => a.1 = a.1.max(rev),
            None => role.acked.push((from.id, rev)),
        }
        // Serve what the root holds, also when nothing was pending: the acknowledgement may
        // be the confirmation its lease waited for (a root that activated after refused
        // rounds holds requests until its replicas confirm it).
        self.try_commit(ctx, gid);
        self.drain_queue(ctx, gid);
    }

    /// Replica `dead` of the group (whose replica set was `before`) was declared dead: send the
    /// record to the replicas that joined the set, and commit what every current replica holds.
    pub(crate) fn root_replicas_changed(
        &mut self,
        ctx: &mut Ctx<'_>,
        gid: GroupId,
        dead: NodeId,
        before: &[NodeHandle],
    ) {
        if !before.iter().any(|h| h.id == dead) {
            return;
        }
        self.replica_set(ctx, gid);
        let active = self
            .groups
            .get(&gid)
            .and_then(|g| g.root.as_ref())
            .is_some_and(|r| r.active);
        let new = self
            .scratch
            .iter()
            .any(|h| !before.iter().any(|b| b.id == h.id));
        if active && new && ctx.cfg.root_lease != crate::Millis::MAX {
            // A peer that never confirmed this root entered its replica set: the lease no
            // longer holds (every current replica must confirm it). Fetch again now, from the
            // new set, rather than at the next request.
            self.reconfirm(ctx, gid);
            return;
        }
        let Some(g) = self.groups.get(&gid) else {
            return;
        };
        let (Some(role), Some(rec)) = (g.root.as_ref(), g.best_record()) else {
            return;
        };
        if !role.active {
            return;
        }
        self.scratch
            .retain(|h| !before.iter().any(|b| b.id == h.id));
        if !self.scratch.is_empty() && rec.seq > 0 {
            let msg = ScribeMsg::Replicate {
                gid,
                rec: rec.to_wire(ctx.now),
                epoch: role.epoch,
                stamp: ctx.now,
            };
            ctx.out.send_many(self.scratch.iter(), msg);
        }
        if self.try_commit(ctx, gid) {
            self.drain_queue(ctx, gid);
        }
    }

    /// Resends the record to the replicas behind it (one refused it with NotRoot, or a datagram
    /// was lost) and commits what their acknowledgements allow.
    pub(crate) fn retry_replication(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) {
        let rival = self
            .groups
            .get(&gid)
            .and_then(|g| g.root.as_ref())
            .is_some_and(|r| r.active && r.rival && r.pending.is_none() && !r.queue.is_empty());
        if rival && !self.lease_holds(ctx, gid) {
            // It served after `MAX_ROUNDS` refused rounds and holds requests: another round
            // (`drain_queue` leaves that to the tick).
            self.reconfirm(ctx, gid);
            return;
        }
        self.send_replicas(ctx, gid, false);
        if self.try_commit(ctx, gid) {
            self.drain_queue(ctx, gid);
        }
    }

    /// Runs the roots' retries now (a driver that owns the timers): every active root runs
    /// its duties of the periodic tick (`root_duties`, the very code the tick runs: expire
    /// what is due, take in a newer state its member view heard, resend its record to the
    /// replicas that have not acknowledged it and commit what their acknowledgements allow;
    /// not the tick's giving up of an idle, empty root role, which the model does not have);
    /// every root still fetching asks the peers it awaits again, as its fetch timeout does.
    /// Returns whether this peer is a root.
    #[cfg(feature = "harness")]
    pub fn fire_replication_retry(&mut self, ctx: &mut Ctx<'_>) -> bool {
        let gids = self.active_roots();
        // (Taken first: a root that serves without a lease starts a round in its retry.)
        let fetching: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, g)| g.root.as_ref().is_some_and(|r| !r.active))
            .map(|(gid, _)| *gid)
            .collect();
        for &gid in &gids {
            self.root_duties(ctx, gid);
        }
        for &gid in &fetching {
            self.fetch_timeout(ctx, gid, false);
        }
        !gids.is_empty() || !fetching.is_empty()
    }
}

/// Whether `replicas` reachable replicas make a majority of the group's nominal replica group
/// (the root and `k` replicas, or fewer in an overlay that small, dead peers counted until
/// forgotten): only the larger side of a partition commits, hence acknowledges. Below three
/// there is no majority to protect, and a lone root serves. A driver whose failure detector
/// never suspects a live peer (`root_lease` off) has no partitions to guard against.
pub(super) fn quorum(cfg: &crate::Config, overlay: &Overlay, replicas: usize) -> bool {
    let n = 1 + cfg.replicas.min(overlay.nominal_neighbours());
    n < 3
        || replicas >= n / 2
        || cfg.root_lease == crate::Millis::MAX
        || cfg.mutant_on(Mutant::NoQuorum)
}
