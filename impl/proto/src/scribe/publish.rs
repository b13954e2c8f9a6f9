//! The root serving its group: JOINs answered from the committed record (a group without
//! state too), PUBLISH with `SIP-If-Match` over several event states per presentity
//! (RFC 3903 §4, §6: one state per entity tag; a PUBLISH without `SIP-If-Match` creates one, a
//! conditional one refreshes, modifies or removes the state it names), root-decided expiry
//! and a new entity tag per change, one change committed at a time (later requests wait in
//! order; every change stamps the next seq), expiry of each state on its own, and the root's
//! periodic duties.

use super::record::{pub_req, Record, State, DEDUP_LEN, MAX_QUEUE};
use super::{secs, Ctx, Scribe};
use crate::id::GroupId;
use crate::mutants::Mutant;
use crate::pidf;
use crate::wire::{ETag, Latest, PubOutcome, PublishReply, Routed, ScribeMsg};
use std::collections::VecDeque;

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
            // be adopted in order with the pending commit), its lease lapsed or it reaches no
            // replica quorum (then the JOIN waits in the queue like any request).
            if carried.as_ref().is_none_or(|c| c.seq <= held) && self.serving(ctx, gid) {
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

    /// Serves queued requests in order while the root is active and no commit is pending,
    /// having first taken in a newer state its member view heard while a commit was pending
    /// ([`Scribe::root_absorb_latest`]): nothing is stamped below what members were told.
    pub(super) fn drain_queue(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) {
        self.root_absorb_latest(ctx, gid);
        loop {
            let Some(g) = self.groups.get_mut(&gid) else {
                return;
            };
            let Some(role) = g.root.as_mut() else { return };
            if !role.active || role.pending.is_some() || role.queue.is_empty() {
                return;
            }
            let rival = role.rival;
            if !self.may_answer(ctx, gid) {
                // A root that served after `MAX_ROUNDS` refused rounds (another root's
                // promise or lease stands) tries again on its tick (`retry_replication`), not
                // at once nor at every request: a bounded retry rather than a round storm.
                if !rival {
                    self.reconfirm(ctx, gid);
                }
                return;
            }
            if !self.reaches_quorum(ctx, gid) {
                // The smaller side of a partition: nothing it answers could be trusted, a
                // publisher's 200 or 412, or a JOIN's state (a watcher could be sent a version
                // older than one it was shown before). The request waits; the contact peer
                // retries it, and the root serves it once it reaches a quorum again.
                return;
            }
            let Some(role) = self.groups.get_mut(&gid).and_then(|g| g.root.as_mut()) else {
                return;
            };
            let Some(req) = role.queue.pop_front() else {
                return;
            };
            if role.queue.is_empty() {
                // Most requests pass through the queue at once: give its buffer back, or every
                // group a root serves keeps one (a few hundred bytes per presentity).
                role.queue = VecDeque::new();
            }
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

    /// Whether this peer serves `gid` as its root now ([`Scribe::serves`]).
    fn serving(&mut self, ctx: &Ctx<'_>, gid: GroupId) -> bool {
        let mut replicas = std::mem::take(&mut self.scratch);
        let serves = self.serves(ctx.overlay, ctx.cfg, gid, ctx.now, &mut replicas);
        self.scratch = replicas;
        serves
    }

    /// Whether the active root may answer from its record now: its lease holds (see
    /// [`super::takeover`]).
    fn may_answer(&mut self, ctx: &Ctx<'_>, gid: GroupId) -> bool {
        self.lease_holds(ctx, gid)
    }

    /// Whether the root of `gid` reaches a majority of its nominal replica group
    /// ([`super::replication::quorum`]).
    fn reaches_quorum(&mut self, ctx: &Ctx<'_>, gid: GroupId) -> bool {
        ctx.overlay
            .nearest_leaves(gid.0, ctx.cfg.replicas, &mut self.scratch);
        super::replication::quorum(ctx.cfg, ctx.overlay, self.scratch.len())
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
        // A JOIN for a group without state creates it here (subscribe before publish).
        let rec = g.record.get_or_insert_with(Record::default);
        if let Some(c) = carried {
            let lower = ctx.cfg.mutant_on(Mutant::RootAcceptsLowerSeq) && c.seq != newest;
            if c.seq > rec.seq || lower {
                // A member below knows a newer state than we do: keep the highest seq.
                let etag = ctx.secrets.etag();
                rec.adopt(c, ctx.now, ctx.cfg.pub_default_expires, etag);
                let latest = rec.latest();
                self.apply_latest(ctx, gid, latest);
                self.send_replicas(ctx, gid, true);
            }
        }
        let Some(rec) = self.groups.get(&gid).and_then(|g| g.record.as_ref()) else {
            return;
        };
        let back = *path.last().expect("non-empty");
        // The ACK carries the committed state: seq 0 and no body before any publication; the
        // seq of the last change and no body once every state is gone (so that re-JOINing
        // members learn it).
        let mut latest = rec.latest();
        if rec.is_empty() {
            if ctx.cfg.mutant_on(Mutant::EmptyRootSilent) {
                return;
            }
            if ctx.cfg.mutant_on(Mutant::AckForgetsExpiry) {
                latest = Latest::default();
            }
        }
        let msg = ScribeMsg::JoinAck {
            gid,
            join_id,
            latest,
            path,
        };
        ctx.out.send(&back, msg);
    }

    fn root_publish(&mut self, ctx: &mut Ctx<'_>, gid: GroupId, publish: Routed) {
        let request = publish.clone();
        let Routed::Publish {
            req,
            origin,
            body,
            content_type,
            resource,
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
            return fail(ctx, PublishReply::TooLarge);
        }
        // A SIP-If-Match must name a live event state (a removed or expired one has no entity
        // tag any more): only that state changes.
        let ignore = cfg.mutant_on(Mutant::IgnoreIfMatch);
        let mut named = if_match.and_then(|e| rec.states.iter().position(|s| s.etag == e));
        if if_match.is_some() && named.is_none() {
            if !ignore {
                return fail(ctx, PublishReply::PreconditionFailed);
            }
            // Seeded bug: a stale tag is taken for the most recent state, or for none.
            if body.is_none() {
                named = rec
                    .states
                    .iter()
                    .enumerate()
                    .max_by_key(|s| s.1.changed)
                    .map(|s| s.0);
            }
        }
        if named.is_none() && body.is_none() {
            // Neither a state to refresh or remove nor a body to create one with.
            return fail(ctx, PublishReply::BadRequest);
        }
        if let (Some(b), Some(ct)) = (&body, &content_type) {
            // An unparsable PIDF body would poison the composition of every later NOTIFY.
            if pidf::is_pidf(ct) && pidf::validate(b).is_err() {
                return fail(ctx, PublishReply::BadRequest);
            }
        }
        let requested = expires.unwrap_or(cfg.pub_default_expires);
        if requested != 0 && requested < cfg.pub_min_expires {
            let min = cfg.pub_min_expires;
            return fail(ctx, PublishReply::IntervalTooBrief { min });
        }
        let granted = if cfg.mutant_on(Mutant::NoExpiryClamp) {
            requested
        } else {
            requested.min(cfg.pub_max_expires)
        };
        let mut new = rec.clone();
        new.rev += 1;
        if !cfg.mutant_on(Mutant::SeqNotBumped) || new.seq == 0 {
            new.seq += 1;
        }
        let seq = new.seq;
        if resource.is_some() {
            new.resource = resource;
        }
        let outcome = match named {
            Some(i) if requested == 0 => {
                // Removal (RFC 3903 §4.6) of the named state; the others stay.
                if cfg.mutant_on(Mutant::RemoveAll) {
                    new.states.clear();
                } else {
                    new.states.remove(i);
                }
                PubOutcome {
                    etag: None,
                    expires: 0,
                    seq,
                }
            }
            Some(i) => {
                // Refresh (no body) or modify (body) of the named state: a new entity tag.
                let s = &mut new.states[i];
                let etag = if cfg.mutant_on(Mutant::ReuseEtag) {
                    s.etag
                } else {
                    ctx.secrets.etag()
                };
                s.etag = etag;
                s.expires_at = ctx.now + secs(granted);
                s.changed = seq;
                if let Some(b) = body {
                    s.body = b;
                    s.content_type = content_type;
                }
                PubOutcome {
                    etag: Some(etag),
                    expires: granted,
                    seq,
                }
            }
            None => {
                // A new event state (a PUBLISH without SIP-If-Match).
                if requested == 0 {
                    return fail(ctx, PublishReply::BadRequest);
                }
                if cfg.mutant_on(Mutant::OneState) {
                    new.states.clear();
                }
                if new.states.len() >= cfg.max_states {
                    let max = u32::try_from(cfg.max_states).unwrap_or(u32::MAX);
                    return fail(ctx, PublishReply::TooManyStates { max });
                }
                let etag = ctx.secrets.etag();
                // Exact growth: a presentity has one or a few states, kept for hours.
                new.states.reserve_exact(1);
                new.states.push(State {
                    etag,
                    body: body.unwrap_or_default(),
                    content_type,
                    expires_at: ctx.now + secs(granted),
                    created: seq,
                    changed: seq,
                });
                PubOutcome {
                    etag: Some(etag),
                    expires: granted,
                    seq,
                }
            }
        };
        new.recompose();
        if new.states_len() > cfg.max_document || new.doc_len() > cfg.max_document {
            return fail(ctx, PublishReply::TooLarge);
        }
        // One slot more, not a doubling: the window holds at most DEDUP_LEN + 1 for a moment.
        new.dedup.reserve_exact(1);
        new.dedup.push_back((req, outcome));
        while new.dedup.len() > DEDUP_LEN {
            new.dedup.pop_front();
        }
        let reply = Some((origin, req, PublishReply::Ok(outcome)));
        self.start_commit(ctx, gid, new, reply, Some(request));
    }

    /// Expiry (RFC 3903 §4.3): an active root with no commit pending whose event state
    /// `which` (or, with `None`, the live state whose granted expiry passed first, if any)
    /// outlived its expiry removes that one state with the next seq and commits the change
    /// like a publication (replicated, then multicast); the other states stay. One expiry is
    /// one commit. Returns whether it started one.
    pub(crate) fn root_expire(
        &mut self,
        ctx: &mut Ctx<'_>,
        gid: GroupId,
        which: Option<ETag>,
    ) -> bool {
        let now = ctx.now;
        let Some(g) = self.groups.get(&gid) else {
            return false;
        };
        let Some(role) = g.root.as_ref() else {
            return false;
        };
        if !role.active || role.pending.is_some() || ctx.cfg.mutant_on(Mutant::NoExpiry) {
            return false;
        }
        let Some(rec) = g.record.as_ref() else {
            return false;
        };
        let due = match which {
            Some(e) => rec.states.iter().position(|s| s.etag == e),
            None => rec
                .states
                .iter()
                .enumerate()
                .filter(|(_, s)| s.expires_at <= now)
                .min_by_key(|(_, s)| s.expires_at)
                .map(|(i, _)| i),
        };
        let Some(i) = due else {
            return false;
        };
        let mut new = rec.clone();
        new.seq += 1;
        new.rev += 1;
        new.states.remove(i);
        new.recompose();
        self.start_commit(ctx, gid, new, None, None);
        if self.try_commit(ctx, gid) {
            self.drain_queue(ctx, gid);
        }
        true
    }

    /// Root duties of the periodic tick: expiry, replication retries, collection.
    ///
    /// Collection: a root with nothing pending or queued and no member below it (no local
    /// subscription, no child) gives the role up when its group has no live state. The record
    /// of a group that had publications stays (a seq tombstone, so that a later root never
    /// reuses a seq); the empty record of a group nothing was ever published to (seq 0: a
    /// JOIN created it) goes too, and with it the group (`group_tick` drops a group holding
    /// nothing). A root with members keeps its empty group as long as they are there: they
    /// get the first publication.
    pub(crate) fn root_tick(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) {
        if !self.root_duties(ctx, gid) {
            return;
        }
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        let idle = g
            .root
            .as_ref()
            .is_some_and(|r| r.pending.is_none() && r.queue.is_empty());
        if idle && !g.has_interest() && g.record.as_ref().is_none_or(Record::is_empty) {
            g.root = None;
            if g.record.as_ref().is_some_and(|r| r.seq == 0) {
                g.record = None;
            }
        }
    }

    /// An active root's duties of the periodic tick: expire what is due, take in a newer
    /// state its member view heard, resend its record to the replicas behind and commit what
    /// they acknowledged. Returns whether this peer is `gid`'s active root.
    pub(crate) fn root_duties(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) -> bool {
        let Some(g) = self.groups.get_mut(&gid) else {
            return false;
        };
        let Some(role) = g.root.as_ref() else {
            return false;
        };
        if !role.active {
            return false;
        }
        self.root_expire(ctx, gid, None);
        self.root_absorb_latest(ctx, gid);
        self.retry_replication(ctx, gid);
        true
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
            let etag = ctx.secrets.etag();
            rec.adopt(g.latest.clone(), ctx.now, ctx.cfg.pub_default_expires, etag);
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

    /// Expires event state `etag` of group `gid` now, whatever its remaining lifetime, as the
    /// tick does once it is due: one commit removing that state. Returns false (nothing done)
    /// unless this peer is the group's active root, no commit is pending and `etag` names a
    /// live state.
    #[cfg(feature = "harness")]
    pub fn expire_state(&mut self, ctx: &mut Ctx<'_>, gid: GroupId, etag: ETag) -> bool {
        self.root_expire(ctx, gid, Some(etag))
    }
}
