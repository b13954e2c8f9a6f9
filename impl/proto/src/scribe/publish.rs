//! The root serving its group: JOINs answered from the committed record, PUBLISH with
//! `SIP-If-Match`, root-decided expiry and a new entity tag per change (RFC 3903 §6), one
//! change committed at a time (later requests wait in order), publication expiry, and the
//! root's periodic duties.

use super::record::{pub_req, Record, DEDUP_LEN, MAX_QUEUE};
use super::{secs, Ctx, Scribe};
use crate::id::GroupId;
use crate::mutants::Mutant;
use crate::wire::{Latest, PubOutcome, PublishReply, Routed, ScribeMsg};

impl Scribe {
    /// A PUBLISH reached the root (this peer).
    pub fn deliver_publish(&mut self, ctx: &mut Ctx<'_>, publish: Routed) {
        let Routed::Publish { gid, .. } = &publish else {
            return;
        };
        let gid = *gid;
        self.ensure_root(ctx, gid);
        self.root_request(ctx, gid, publish);
    }

    /// Queues a routed request at the root and serves what can be served.
    pub(crate) fn root_request(&mut self, ctx: &mut Ctx<'_>, gid: GroupId, req: Routed) {
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        let held = g.record_seq();
        let Some(role) = g.root.as_mut() else {
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
            if role.active && carried.as_ref().is_none_or(|c| c.seq <= held) {
                self.root_join(ctx, gid, req);
                return;
            }
        }
        if role.queue.len() >= MAX_QUEUE {
            return;
        }
        role.queue.push_back(req);
        self.drain_queue(ctx, gid);
    }

    /// Serves queued requests in order while the root is active and no commit is pending.
    pub(super) fn drain_queue(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) {
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
            ScribeMsg::JoinAck {
                gid,
                join_id,
                latest: rec.latest(),
                path,
            }
        } else if ctx.cfg.mutant_on(Mutant::NoNack) {
            return;
        } else {
            ScribeMsg::JoinNack {
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
            let reply = PublishReply::Ok(*o);
            ctx.out
                .send(&origin, ScribeMsg::PublishReply { req, reply });
            return;
        }
        let cfg = ctx.cfg;
        let fail = |ctx: &mut Ctx<'_>, reply| {
            ctx.out
                .send(&origin, ScribeMsg::PublishReply { req, reply })
        };
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
                let min = cfg.pub_min_expires;
                return fail(ctx, PublishReply::IntervalTooBrief { min });
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
                _ => ctx.secrets.etag(),
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
        let reply = Some((origin, req, PublishReply::Ok(outcome)));
        self.start_commit(ctx, gid, new, reply);
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

    /// Runs the publication expiry of the periodic tick now, for every group this peer is the
    /// active root of (a driver that owns the timers, such as the conformance harness).
    /// Returns whether a publication expired.
    #[cfg(feature = "harness")]
    pub fn fire_expiry(&mut self, ctx: &mut Ctx<'_>) -> bool {
        let mut any = false;
        for gid in self.active_roots() {
            any |= self.root_expire(ctx, gid);
        }
        any
    }
}
