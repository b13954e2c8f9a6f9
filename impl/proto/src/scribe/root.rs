//! The root role of a group: serving JOINs from the committed record, PUBLISH with ETags and
//! root-decided expiry, replication to the `k` nearest leaf-set peers with commit on all acks,
//! activation by fetching replicas' records, expiry, and demotion when a closer peer appears.
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
//!
//! Records are kept after the publication expires (seq tombstones), so a later root never
//! reuses a seq.

use super::{secs, Ctx, Group, Scribe};
use crate::id::{GroupId, NodeId};
use crate::mutants::Mutant;
use crate::pastry::Hop;
use crate::wire::{
    ETag, Latest, Msg, NodeHandle, PubOutcome, PubReqId, PublishReply, Routed, WireRecord,
};
use crate::Millis;
use bytes::Bytes;
use std::collections::VecDeque;

/// Committed publications remembered for deduplication of retries.
pub const DEDUP_LEN: usize = 32;
/// How many times a new root asks silent replicas for their record before serving.
pub const FETCH_ATTEMPTS: u8 = 3;
/// Requests a root queues while it activates or commits; more are dropped (they are retried).
pub const MAX_QUEUE: usize = 1024;

/// A group record: held authoritatively by the root, as a copy by replicas.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Record {
    pub seq: u64,
    pub rev: u64,
    pub body: Option<Bytes>,
    pub etag: Option<ETag>,
    pub expires_at: Option<Millis>,
    pub dedup: VecDeque<(PubReqId, PubOutcome)>,
}

impl Record {
    pub fn key(&self) -> (u64, u64) {
        (self.seq, self.rev)
    }
    pub fn latest(&self) -> Latest {
        Latest {
            seq: self.seq,
            body: self.body.clone(),
        }
    }
    pub fn to_wire(&self, now: Millis) -> WireRecord {
        WireRecord {
            seq: self.seq,
            rev: self.rev,
            body: self.body.clone(),
            etag: self.etag,
            ttl: self.expires_at.map(|e| e.saturating_sub(now)),
            dedup: self.dedup.iter().copied().collect(),
        }
    }
    pub fn from_wire(w: WireRecord, now: Millis) -> Self {
        Record {
            seq: w.seq,
            rev: w.rev,
            body: w.body,
            etag: w.etag,
            expires_at: w.ttl.map(|t| now + t),
            dedup: w.dedup.into_iter().take(DEDUP_LEN).collect(),
        }
    }
    /// Takes a state carried up the tree (its ETag and expiry are unknown here).
    fn adopt(&mut self, l: Latest, now: Millis, default_expires: u32) {
        self.seq = l.seq;
        self.expires_at = l.body.as_ref().map(|_| now + secs(default_expires));
        self.body = l.body;
        self.etag = None;
        self.rev += 1;
    }
}

/// A change waiting for all replicas' acknowledgements.
#[derive(Debug)]
pub(crate) struct Commit {
    rec: Record,
    reply: Option<(NodeHandle, PubReqId, PublishReply)>,
}

/// State of a peer acting as a group's root.
#[derive(Debug)]
pub(crate) struct RootRole {
    pub active: bool,
    pub fetch_deadline: Millis,
    fetch_attempts: u8,
    waiting: Vec<NodeId>,
    queue: VecDeque<Routed>,
    pending: Option<Commit>,
    acked: Vec<(NodeId, u64)>,
}

impl Group {
    /// The highest record held here (a pending commit counts).
    pub(crate) fn best_record(&self) -> Option<&Record> {
        let pending = self
            .root
            .as_ref()
            .and_then(|r| r.pending.as_ref())
            .map(|c| &c.rec);
        match (pending, self.record.as_ref()) {
            (Some(p), Some(r)) if r.key() > p.key() => Some(r),
            (Some(p), _) => Some(p),
            (None, r) => r,
        }
    }
}

/// Seq of the committed record of `gid` (0 if none).
fn g_record_seq(groups: &std::collections::BTreeMap<GroupId, Group>, gid: GroupId) -> u64 {
    groups
        .get(&gid)
        .and_then(|g| g.record.as_ref())
        .map_or(0, |r| r.seq)
}

/// Shorthand: the requests's id when it is a publication.
fn pub_req(r: &Routed) -> Option<PubReqId> {
    match r {
        Routed::Publish { req, .. } => Some(*req),
        _ => None,
    }
}

impl Scribe {
    /// Makes this peer the group's root if it is not already: leaves its tree parent and starts
    /// fetching the nearest peers' records.
    pub(crate) fn ensure_root(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) {
        let g = self.groups.entry(gid).or_default();
        if g.root.is_some() {
            return;
        }
        if let Some(p) = g.parent.take() {
            ctx.out.send(&p, Msg::Leave { gid });
        }
        g.rejoin_at = None;
        ctx.overlay
            .nearest_leaves(gid.0, ctx.cfg.replicas, &mut self.scratch);
        ctx.out
            .send_many(self.scratch.iter(), &Msg::FetchState { gid });
        g.root = Some(Box::new(RootRole {
            active: false,
            fetch_deadline: ctx.now + ctx.cfg.fetch_timeout,
            fetch_attempts: 1,
            waiting: self.scratch.iter().map(|h| h.id).collect(),
            queue: VecDeque::new(),
            pending: None,
            acked: Vec::new(),
        }));
        if self.scratch.is_empty() {
            self.activate(ctx, gid);
        } else {
            self.activating.push(gid);
        }
    }

    /// The fetch timed out: ask the silent peers again (they may have lost the datagram), up
    /// to [`FETCH_ATTEMPTS`] times, then serve with what we have.
    pub(crate) fn fetch_timeout(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) {
        let Some(role) = self.groups.get_mut(&gid).and_then(|g| g.root.as_mut()) else {
            self.activating.retain(|g| *g != gid);
            return;
        };
        if role.active {
            self.activating.retain(|g| *g != gid);
            return;
        }
        if role.fetch_attempts < FETCH_ATTEMPTS && !role.waiting.is_empty() {
            role.fetch_attempts += 1;
            role.fetch_deadline = ctx.now + ctx.cfg.fetch_timeout;
            self.scratch.clear();
            ctx.overlay
                .nearest_leaves(gid.0, ctx.cfg.replicas, &mut self.scratch);
            let waiting = &role.waiting;
            self.scratch.retain(|h| waiting.contains(&h.id));
            ctx.out
                .send_many(self.scratch.iter(), &Msg::FetchState { gid });
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
        self.activating.retain(|g| *g != gid);
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
            rec.adopt(g.latest.clone(), ctx.now, ctx.cfg.pub_default_expires);
        }
        let latest = rec.latest();
        g.record = Some(rec);
        self.apply_latest(ctx, gid, latest);
        self.send_replicas(ctx, gid, true);
        self.drain_queue(ctx, gid);
    }

    /// Queues a routed request at the root and serves what can be served.
    pub(crate) fn root_request(&mut self, ctx: &mut Ctx<'_>, gid: GroupId, req: Routed) {
        let Some(role) = self.groups.get_mut(&gid).and_then(|g| g.root.as_mut()) else {
            return;
        };
        if let Some(id) = pub_req(&req) {
            let dup_pending = role
                .pending
                .as_ref()
                .and_then(|c| c.reply.as_ref())
                .is_some_and(|r| r.1 == id);
            if dup_pending || role.queue.iter().any(|q| pub_req(q) == Some(id)) {
                return;
            }
        }
        if let Routed::Join { carried, .. } = &req {
            // An active root answers a JOIN from its committed record at once, even while a
            // publication is being replicated, unless the JOIN carries a newer state (which must
            // be adopted in order with the pending commit).
            let active = role.active;
            let held = g_record_seq(&self.groups, gid);
            if active && carried.as_ref().is_none_or(|c| c.seq <= held) {
                self.root_join(ctx, gid, req);
                return;
            }
        }
        let Some(role) = self.groups.get_mut(&gid).and_then(|g| g.root.as_mut()) else {
            return;
        };
        if role.queue.len() >= MAX_QUEUE {
            return;
        }
        role.queue.push_back(req);
        self.drain_queue(ctx, gid);
    }

    /// Serves queued requests in order while the root is active and no commit is pending.
    fn drain_queue(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) {
        loop {
            let Some(g) = self.groups.get_mut(&gid) else {
                return;
            };
            let Some(role) = g.root.as_mut() else { return };
            if !role.active || role.pending.is_some() {
                return;
            }
            let Some(req) = role.queue.pop_front() else {
                return;
            };
            match req {
                Routed::Join { .. } => self.root_join(ctx, gid, req),
                Routed::Publish { .. } => {
                    self.root_publish(ctx, gid, req);
                    self.try_commit(ctx, gid);
                }
                _ => {}
            }
        }
    }

    fn root_join(&mut self, ctx: &mut Ctx<'_>, gid: GroupId, join: Routed) {
        let Routed::Join {
            origin,
            join_id,
            carried,
            mut path,
            ..
        } = join
        else {
            return;
        };
        if path.is_empty() {
            path.push(origin);
        }
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        // Seeded bug: adopt a carried state that is not the root's newest (applied) one.
        let newest = g.best_record().map_or(0, |r| r.seq);
        let rec = g.record.get_or_insert_with(Record::default);
        if let Some(c) = carried {
            let lower = ctx.cfg.mutant_on(Mutant::RootAcceptsLowerSeq) && c.seq != newest;
            if c.seq > rec.seq || lower {
                // A member below knows a newer state than we do: keep the highest seq.
                rec.adopt(c, ctx.now, ctx.cfg.pub_default_expires);
                let latest = rec.latest();
                self.apply_latest(ctx, gid, latest);
                self.send_replicas(ctx, gid, true);
            }
        }
        let Some(rec) = self.groups.get(&gid).and_then(|g| g.record.as_ref()) else {
            return;
        };
        let back = *path.last().expect("non-empty");
        let msg = if rec.body.is_some() {
            Msg::JoinAck {
                gid,
                join_id,
                latest: rec.latest(),
                path,
            }
        } else if ctx.cfg.mutant_on(Mutant::NoNack) {
            return;
        } else {
            Msg::JoinNack {
                gid,
                join_id,
                latest: if ctx.cfg.mutant_on(Mutant::NackForgetsExpiry) {
                    Latest::default()
                } else {
                    rec.latest()
                },
                path,
            }
        };
        ctx.out.send(&back, msg);
    }

    fn root_publish(&mut self, ctx: &mut Ctx<'_>, gid: GroupId, publish: Routed) {
        let Routed::Publish {
            req,
            origin,
            body,
            if_match,
            expires,
            ..
        } = publish
        else {
            return;
        };
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        let rec = g.record.get_or_insert_with(Record::default);
        if let Some((_, o)) = rec.dedup.iter().find(|(r, _)| *r == req) {
            ctx.out.send(
                &origin,
                Msg::PublishReply {
                    req,
                    reply: PublishReply::Ok(*o),
                },
            );
            return;
        }
        let cfg = ctx.cfg;
        let fail =
            |ctx: &mut Ctx<'_>, reply| ctx.out.send(&origin, Msg::PublishReply { req, reply });
        if body.as_ref().is_some_and(|b| b.len() > cfg.max_body) {
            return fail(ctx, PublishReply::BadRequest);
        }
        if let Some(e) = if_match.filter(|_| !cfg.mutant_on(Mutant::IgnoreIfMatch)) {
            if rec.body.is_none() || rec.etag != Some(e) {
                return fail(ctx, PublishReply::PreconditionFailed);
            }
        } else if body.is_none() {
            return fail(ctx, PublishReply::BadRequest);
        }
        let requested = expires.unwrap_or(cfg.pub_default_expires);
        let mut new = rec.clone();
        new.rev += 1;
        let outcome = if requested == 0 {
            // Removal (RFC 3903 §4.6): only with SIP-If-Match, checked above.
            new.seq += 1;
            new.body = None;
            new.etag = None;
            new.expires_at = None;
            PubOutcome {
                etag: None,
                expires: 0,
                seq: new.seq,
            }
        } else {
            if requested < cfg.pub_min_expires {
                return fail(
                    ctx,
                    PublishReply::IntervalTooBrief {
                        min: cfg.pub_min_expires,
                    },
                );
            }
            let granted = if cfg.mutant_on(Mutant::NoExpiryClamp) {
                requested
            } else {
                requested.min(cfg.pub_max_expires)
            };
            if let Some(b) = body {
                if !cfg.mutant_on(Mutant::SeqNotBumped) || new.seq == 0 {
                    new.seq += 1;
                }
                new.body = Some(b);
            }
            let etag = match new.etag {
                Some(e) if cfg.mutant_on(Mutant::ReuseEtag) => e,
                _ => ETag(ctx.rng.nonzero()),
            };
            new.etag = Some(etag);
            new.expires_at = Some(ctx.now + secs(granted));
            PubOutcome {
                etag: Some(etag),
                expires: granted,
                seq: new.seq,
            }
        };
        new.dedup.push_back((req, outcome));
        while new.dedup.len() > DEDUP_LEN {
            new.dedup.pop_front();
        }
        self.start_commit(
            ctx,
            gid,
            new,
            Some((origin, req, PublishReply::Ok(outcome))),
        );
    }

    fn start_commit(
        &mut self,
        ctx: &mut Ctx<'_>,
        gid: GroupId,
        rec: Record,
        reply: Option<(NodeHandle, PubReqId, PublishReply)>,
    ) {
        let Some(role) = self.groups.get_mut(&gid).and_then(|g| g.root.as_mut()) else {
            return;
        };
        role.pending = Some(Commit { rec, reply });
        self.send_replicas(ctx, gid, true);
    }

    /// Sends the best record to the replicas (all of them, or only those behind).
    fn send_replicas(&mut self, ctx: &mut Ctx<'_>, gid: GroupId, all: bool) {
        let Some(g) = self.groups.get(&gid) else {
            return;
        };
        let (Some(role), Some(rec)) = (g.root.as_ref(), g.best_record()) else {
            return;
        };
        ctx.overlay
            .nearest_leaves(gid.0, ctx.cfg.replicas, &mut self.scratch);
        if ctx.cfg.mutant_on(Mutant::SkipReplication) {
            self.scratch.clear();
        }
        let rev = rec.rev;
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
        let msg = Msg::Replicate {
            gid,
            rec: rec.to_wire(ctx.now),
        };
        ctx.out.send_many(self.scratch.iter(), &msg);
    }

    /// Commits the pending change once every current replica acknowledged it. Returns whether
    /// it committed.
    fn try_commit(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) -> bool {
        ctx.overlay
            .nearest_leaves(gid.0, ctx.cfg.replicas, &mut self.scratch);
        if ctx.cfg.mutant_on(Mutant::SkipReplication) {
            self.scratch.clear();
        }
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
        if !all {
            return false;
        }
        let c = role.pending.take().expect("checked");
        let latest = c.rec.latest();
        g.record = Some(c.rec);
        if let Some((origin, req, reply)) = c.reply {
            ctx.out.send(&origin, Msg::PublishReply { req, reply });
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
    ) {
        let rev = w.rev;
        // Only the numerically closest peer may commit: refuse when we know a closer one.
        let best = ctx
            .overlay
            .leaf
            .closest(gid.0, Some(from.id))
            .unwrap_or(ctx.me());
        let refuse = crate::id::closer(gid.0, best.id.0, from.id.0);
        let inc = Record::from_wire(w, ctx.now);
        let g = self.groups.entry(gid).or_default();
        let active = g.root.as_ref().map(|r| (r.active, r.pending.is_some()));
        let newer = g.record.as_ref().is_none_or(|r| inc.key() >= r.key());
        match active {
            Some((true, true)) => {}
            Some((true, false)) => {
                if g.record.as_ref().is_none_or(|r| inc.key() > r.key()) {
                    // A late record of the previous root: keep the highest and make our own
                    // replicas hold it too before anything builds on it.
                    let latest = inc.latest();
                    g.record = Some(inc);
                    self.apply_latest(ctx, gid, latest);
                    self.send_replicas(ctx, gid, true);
                }
            }
            _ => {
                if newer {
                    g.record = Some(inc);
                }
            }
        }
        if refuse {
            ctx.out.send(&from, Msg::NotRoot { gid, closer: best });
        } else {
            ctx.out.send(&from, Msg::ReplicateAck { gid, rev });
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

    pub(crate) fn on_replicate_ack(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: NodeHandle,
        gid: GroupId,
        rev: u64,
    ) {
        let Some(role) = self.groups.get_mut(&gid).and_then(|g| g.root.as_mut()) else {
            return;
        };
        match role.acked.iter_mut().find(|a| a.0 == from.id) {
            Some(a) => a.1 = a.1.max(rev),
            None => role.acked.push((from.id, rev)),
        }
        if self.try_commit(ctx, gid) {
            self.drain_queue(ctx, gid);
        }
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
            let inc = Record::from_wire(w, ctx.now);
            if g.record.as_ref().is_none_or(|r| inc.key() > r.key()) {
                g.record = Some(inc);
            }
        }
        role.waiting.retain(|id| *id != from.id);
        if role.waiting.is_empty() {
            self.activate(ctx, gid);
        }
    }

    /// Replica sets of the groups this peer serves as root (taken before a peer is declared
    /// dead, to tell afterwards which replicas are new).
    pub(crate) fn root_replica_sets(
        &self,
        ctx_overlay: &crate::pastry::Overlay,
        k: usize,
    ) -> Vec<(GroupId, Vec<NodeHandle>)> {
        let mut out = Vec::new();
        for (gid, g) in &self.groups {
            if g.root.as_ref().is_some_and(|r| r.active) {
                let mut v = Vec::new();
                ctx_overlay.nearest_leaves(gid.0, k, &mut v);
                out.push((*gid, v));
            }
        }
        out
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
        let Some(g) = self.groups.get(&gid) else {
            return;
        };
        let (Some(role), Some(rec)) = (g.root.as_ref(), g.best_record()) else {
            return;
        };
        if !role.active {
            return;
        }
        ctx.overlay
            .nearest_leaves(gid.0, ctx.cfg.replicas, &mut self.scratch);
        if ctx.cfg.mutant_on(Mutant::SkipReplication) {
            self.scratch.clear();
        }
        self.scratch
            .retain(|h| !before.iter().any(|b| b.id == h.id));
        if !self.scratch.is_empty() {
            let msg = Msg::Replicate {
                gid,
                rec: rec.to_wire(ctx.now),
            };
            ctx.out.send_many(self.scratch.iter(), &msg);
        }
        if self.try_commit(ctx, gid) {
            self.drain_queue(ctx, gid);
        }
    }

    /// Publication expiry (RFC 3903 §4.3): an active root with no commit pending whose
    /// publication outlived its granted expiry stamps the next seq with no body and commits it
    /// like a publication (replicated, then multicast). Returns whether it started one.
    pub(crate) fn root_expire(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) -> bool {
        let now = ctx.now;
        let Some(g) = self.groups.get(&gid) else {
            return false;
        };
        let Some(role) = g.root.as_ref() else {
            return false;
        };
        if !role.active || role.pending.is_some() {
            return false;
        }
        let Some(rec) = g.record.as_ref() else {
            return false;
        };
        if rec.body.is_none()
            || rec.expires_at.is_none_or(|e| now < e)
            || ctx.cfg.mutant_on(Mutant::NoExpiry)
        {
            return false;
        }
        let mut new = rec.clone();
        new.seq += 1;
        new.rev += 1;
        new.body = None;
        new.etag = None;
        new.expires_at = None;
        self.start_commit(ctx, gid, new, None);
        if self.try_commit(ctx, gid) {
            self.drain_queue(ctx, gid);
        }
        true
    }

    /// Resends the record to the replicas behind it (one refused it with NotRoot, or a datagram
    /// was lost) and commits what their acknowledgements allow.
    pub(crate) fn retry_replication(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) {
        self.send_replicas(ctx, gid, false);
        if self.try_commit(ctx, gid) {
            self.drain_queue(ctx, gid);
        }
    }

    /// Root duties of the periodic tick: publication expiry, replication retries, idle drop.
    pub(crate) fn root_tick(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) {
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        let Some(role) = g.root.as_ref() else { return };
        if !role.active {
            return;
        }
        self.root_expire(ctx, gid);
        self.root_absorb_latest(ctx, gid);
        self.retry_replication(ctx, gid);
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        let idle = g
            .root
            .as_ref()
            .is_some_and(|r| r.pending.is_none() && r.queue.is_empty());
        if idle && !g.has_interest() && g.record.as_ref().is_none_or(|r| r.body.is_none()) {
            g.root = None;
        }
    }

    /// An active root whose member view got ahead of its record (a newer state pushed up the
    /// tree) takes that state as its record, so that it never serves an older one.
    pub(crate) fn root_absorb_latest(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) {
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        let Some(role) = g.root.as_ref() else { return };
        if !role.active || role.pending.is_some() {
            return;
        }
        let rec = g.record.get_or_insert_with(Record::default);
        if g.latest.seq > rec.seq {
            rec.adopt(g.latest.clone(), ctx.now, ctx.cfg.pub_default_expires);
            self.send_replicas(ctx, gid, true);
        }
    }

    /// The groups this peer serves as an active root (not fetching).
    pub(crate) fn active_roots(&self) -> Vec<GroupId> {
        self.groups
            .iter()
            .filter(|(_, g)| g.root.as_ref().is_some_and(|r| r.active))
            .map(|(k, _)| *k)
            .collect()
    }

    /// Periodic full re-replication (covers replicas that restarted or joined).
    pub(crate) fn refresh_replicas(&mut self, ctx: &mut Ctx<'_>) {
        for gid in self.active_roots() {
            self.send_replicas(ctx, gid, true);
        }
    }

    /// A closer peer is now responsible for the group: hand queued requests on and re-JOIN the
    /// tree as an ordinary member (carrying our state, which the new root will adopt if newer).
    pub(crate) fn demote(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) {
        self.activating.retain(|g| *g != gid);
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        let Some(role) = g.root.take() else { return };
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
