//! Taking the root role over, keeping it, and handing it on.
//!
//! Keeping a single root while Pastry's view is inconsistent (joins, partitions, pauses,
//! failures):
//! * **Epochs** (terms). A root serves with an epoch above every one it heard of, and stamps
//!   every change it commits with it; records are ordered by `(epoch, seq, rev)`, so the record
//!   of the root that committed last supersedes what an older root still holds, and a new root
//!   keeps the highest record it can find. (A root that only fetched — it could not commit —
//!   raises no record's epoch: trying again and again on the smaller side of a partition wins
//!   nothing when the sides meet.)
//! * **Fetch** (a promise round). A root that takes over, or must confirm it still holds the
//!   role, asks its `k` nearest peers for their records with the epoch it will serve with
//!   (retrying silent ones a few times). Each grants it — promises to refuse records of a lower
//!   epoch from then on — unless it promised another root as much or more, in which case the
//!   root starts over above that. The root keeps the highest record (and, should that record's
//!   seq be lower than one it heard of, stamps a seq above every one, so that no member takes
//!   the result for old news), re-replicates it and serves.
//! * **Fencing.** A replica refuses (`Fenced`, with its record) a REPLICATE of a lower epoch
//!   than it holds or promised, so an old root can no longer commit, hence acknowledge,
//!   anything once a newer root fetched from one of its replicas; it fetches again (or
//!   demotes) and serves what it was serving on the newer record.
//! * **Lease.** A root answers from its record (a 200 or 412, a JOIN's first state) only while
//!   every current replica confirmed it (a grant or an acknowledgement) within `root_lease`,
//!   which is shorter than the silence after which a replica takes over; otherwise it fetches
//!   again first. A paused or cut-off root therefore never answers from a record another root
//!   moved past: its first request after it comes back finds the newer record.
//! * **Exclusive leases.** A peer that confirmed a root (granted its fetch, acknowledged its
//!   REPLICATE) confirms no other root until `root_lease` has passed since: it answers
//!   another root's fetch with `busy_for` (no promise, no record; that root asks again once
//!   the time is up) and leaves its REPLICATEs unacknowledged. The root's own lease runs
//!   from before the confirmation (from when it asked), so it has lapsed by then: two roots
//!   whose replica sets meet never both serve, even when the newer one did not reach the
//!   older one to make it demote (a partial heal).
//! * **Heal.** When a peer this one declared dead turns out alive, every root role here drops
//!   its lease, and a fetch waits `fetch_timeout` for the other peers declared dead to answer
//!   before it settles, so that it asks the root that served meanwhile.
//! * An old root that receives a fetch from a closer peer demotes itself *before* answering,
//!   so everything it acknowledged is in the answer; one that learns of a closer peer demotes
//!   and hands its record to it.
//! * A replica refuses to acknowledge a record from a peer when it knows one closer to the
//!   group id (`NotRoot`); the sender learns that peer and demotes.
//! * A member that knows a newer seq than its parent pushes it up; an active root absorbs any
//!   newer seq it hears (from re-JOINs or from below), so state never rolls back.
//!
//! What this promises during a partition: each side may keep a root that acknowledges
//! (presence favours availability), but when the sides meet again the records merge by epoch,
//! so the side whose root took over last wins and everything acknowledged there survives; what
//! a minority side's older-epoch root acknowledged meanwhile is superseded (its publishers get
//! 412 on their next refresh and publish afresh, as after a server restart).

use super::record::{Ask, RootRole};
use super::{Ctx, Scribe};
use crate::id::{GroupId, NodeId};
use crate::pastry::{Hop, Overlay};
use crate::timer::Timer;
use crate::wire::{Msg, NodeHandle, Routed, ScribeMsg, WireRecord};

/// Fetch rounds a root starts over with a higher epoch (another root was promised as much)
/// before it serves anyway.
pub const MAX_ROUNDS: u8 = 3;

impl Scribe {
    /// Makes this peer the group's root if it is not already: leaves its tree parent and starts
    /// fetching the nearest peers' records.
    pub(crate) fn ensure_root(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) {
        let g = super::group::entry(&mut self.groups, &mut self.round.armed, ctx, gid);
        if g.root.is_some() {
            return;
        }
        if let Some(p) = g.parent.take() {
            ctx.out.send(&p, ScribeMsg::Leave { gid });
        }
        g.rejoin_done();
        g.root = Some(Box::default());
        self.start_fetch(ctx, gid);
    }

    /// Starts a fetch round (see the module docs) with an epoch above every one this peer
    /// knows for the group, and above one per closer peer it declared dead: each may have
    /// served the group before it in an epoch it never heard of (the first root, whose
    /// REPLICATE to this peer was lost, is in epoch 1 as a root that knew nothing would be),
    /// and a late record of that root must not tie with this one's on (epoch, seq).
    fn start_fetch(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) {
        let floor = 1 + ctx.overlay.dead_closer(gid.0);
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        let epoch = (g.known_epoch() + 1).max(floor);
        let seq = g.best_record().map_or(0, |r| r.seq).max(g.latest.seq);
        let Some(role) = g.root.as_mut() else { return };
        role.active = false;
        role.epoch = epoch;
        role.seen_seq = role.seen_seq.max(seq);
        role.rival = false;
        role.asked.clear();
        role.waiting.clear();
        role.asks.clear();
        role.grants.clear();
        role.fetch_deadline = ctx.now + ctx.cfg.fetch_timeout;
        self.fetch_progress(ctx, gid);
    }

    /// A fetching root asks the nearest peers it has not asked yet, and activates once none
    /// is awaited (after a heal, not before the other revived peers had time to answer).
    fn fetch_progress(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) {
        let now = ctx.now;
        ctx.overlay
            .nearest_leaves(gid.0, ctx.cfg.replicas, &mut self.scratch);
        let Some(role) = self.groups.get_mut(&gid).and_then(|g| g.root.as_mut()) else {
            return;
        };
        if role.active {
            return;
        }
        let asked = &role.asked;
        self.scratch.retain(|h| !asked.iter().any(|a| a.0 == h.id));
        if !self.scratch.is_empty() {
            let msg = ScribeMsg::FetchState {
                gid,
                epoch: role.epoch,
            };
            ctx.out.send_many(self.scratch.iter(), msg);
            for h in &self.scratch {
                role.asked.push((h.id, now));
                role.waiting.push(h.id);
                role.asks.push(Ask {
                    id: h.id,
                    unanswered: 1,
                    busy_until: 0,
                });
            }
        }
        if !role.waiting.is_empty() {
            ctx.timers.arm(
                role.fetch_deadline,
                Timer::Fetch(gid),
                &mut role.fetch_armed,
            );
            return;
        }
        if now < self.heal_until {
            ctx.timers
                .arm(self.heal_until, Timer::Fetch(gid), &mut role.fetch_armed);
            return;
        }
        // A refused promise (a rival root), or a record of an epoch above this round's (a
        // restarted peer knew no epoch, and fetched the record of the root that served
        // meanwhile: what it commits would be ordered below that record): a new round, above.
        let behind = role.seen_epoch > role.epoch;
        if (role.rival || behind) && role.rounds < MAX_ROUNDS {
            role.rounds += 1;
            self.start_fetch(ctx, gid);
            return;
        }
        self.activate(ctx, gid);
    }

    /// The fetch timer of `gid` fired.
    pub(super) fn fetch_timer(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) {
        let now = ctx.now;
        let Some(role) = self.groups.get_mut(&gid).and_then(|g| g.root.as_mut()) else {
            return;
        };
        // Clear the slot first, even for a root that activated meanwhile, so that a later
        // fetch round arms its timer anew.
        if !role.fetch_armed.take_due(now) || role.active {
            return;
        }
        if now >= role.fetch_deadline && !role.waiting.is_empty() {
            self.fetch_timeout(ctx, gid, false);
        } else {
            self.fetch_progress(ctx, gid);
        }
    }

    /// The fetch timed out: ask the silent peers again (they may have lost the datagram), each
    /// up to `fetch_attempts` times in a row without an answer, then serve without it. A
    /// peer that answered busy is asked again once the time it named has passed (or at once,
    /// `busy_passed`: a driver that owns time says it has).
    pub(crate) fn fetch_timeout(&mut self, ctx: &mut Ctx<'_>, gid: GroupId, busy_passed: bool) {
        let Some(role) = self.groups.get_mut(&gid).and_then(|g| g.root.as_mut()) else {
            return;
        };
        if role.active {
            return;
        }
        let now = ctx.now;
        let (waiting, asks) = (&mut role.waiting, &mut role.asks);
        let mut again = Vec::new();
        let mut busy_until = crate::Millis::MAX;
        waiting.retain(|id| match asks.iter_mut().find(|a| a.id == *id) {
            Some(a) if a.busy_until > now && !busy_passed => {
                busy_until = busy_until.min(a.busy_until);
                true
            }
            Some(a) if a.unanswered < ctx.cfg.fetch_attempts => {
                a.unanswered += 1;
                again.push(*id);
                true
            }
            _ => false,
        });
        if waiting.is_empty() {
            self.fetch_progress(ctx, gid);
            return;
        }
        role.fetch_deadline = if again.is_empty() {
            busy_until
        } else {
            now + ctx.cfg.fetch_timeout
        };
        ctx.timers.arm(
            role.fetch_deadline,
            Timer::Fetch(gid),
            &mut role.fetch_armed,
        );
        // Every peer still awaited, in the replica set or not any more (a closer peer taken
        // back meanwhile pushed it out): it was asked in this round, which waits for it.
        self.scratch.clear();
        self.scratch
            .extend(ctx.overlay.known().filter(|h| again.contains(&h.id)));
        self.scratch.sort_unstable_by_key(|h| h.id);
        self.scratch.dedup_by_key(|h| h.id);
        let msg = ScribeMsg::FetchState {
            gid,
            epoch: role.epoch,
        };
        ctx.out.send_many(self.scratch.iter(), msg);
    }

    /// `gid`'s fetch timer, now (a driver that owns the timers): a fetching root asks the
    /// peers it still awaits again (see [`Scribe::fetch_timeout`]), whatever the deadline and
    /// whatever time the busy ones named (their busy times stay as they are: a later
    /// replication retry still passes them over).
    /// Returns whether this peer is fetching as `gid`'s root.
    #[cfg(feature = "harness")]
    pub fn fire_fetch_timer(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) -> bool {
        let fetching = self
            .groups
            .get(&gid)
            .and_then(|g| g.root.as_ref())
            .is_some_and(|r| !r.active);
        self.fetch_timeout(ctx, gid, true);
        fetching
    }

    /// The lease this peer confirms for `gid`'s root lapses now, whatever is left of it (a
    /// driver that owns time: the root no longer serves with it). Returns whether it
    /// confirmed one.
    #[cfg(feature = "harness")]
    pub fn lapse_confirmation(&mut self, gid: GroupId) -> bool {
        self.groups
            .get_mut(&gid)
            .and_then(|g| g.confirms.take())
            .is_some()
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
        // Not asked any more: should it be taken back into the replica set while the round
        // lasts, the round asks it again (as the model's): the lease needs its grant.
        role.asked.retain(|a| a.0 != dead);
        role.asks.retain(|a| a.id != dead);
        self.fetch_progress(ctx, gid);
    }

    /// Ends the fetch phase: the record is the highest of ours, the replies and our member
    /// view, stamped with this root's epoch (and a seq above every one heard of, if it had a
    /// lower one).
    pub(crate) fn activate(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) {
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        let Some(role) = g.root.as_mut() else { return };
        if role.active {
            return;
        }
        role.active = true;
        role.rounds = 0;
        role.waiting.clear();
        // Every replica acknowledges the new epoch's record afresh (an acknowledgement of an
        // earlier epoch's REPLICATE, arrived during the fetch, does not spare it the resend:
        // the model's activated root awaits every replica's).
        role.acked.clear();
        if role.rival {
            // It serves after `MAX_ROUNDS` refused rounds: its lease holds again only once
            // every replica acknowledged the record it now replicates (as the model's
            // `rival` root), not on grants of the round that a refusal outweighed.
            role.grants.clear();
        }
        let mut seen = role.seen_seq;
        let mut rec = g.record.take().unwrap_or_default();
        if g.latest.seq > rec.seq {
            let etag = ctx.secrets.etag();
            rec.adopt(g.latest.clone(), ctx.now, ctx.cfg.pub_default_expires, etag);
        }
        seen = seen.max(g.latest.seq);
        if rec.seq < seen {
            // A newer-epoch record with a lower seq than an older root reached: members may
            // hold that seq, so the record's state is stamped above it.
            rec.seq = seen + 1;
            rec.rev += 1;
        }
        let latest = rec.latest();
        g.record = Some(rec);
        self.apply_latest(ctx, gid, latest);
        self.send_replicas(ctx, gid, true);
        self.drain_queue(ctx, gid);
    }

    /// The lease of an active root lapsed, or a replica fenced it, or a newer root showed up:
    /// the pending commit (not acknowledged yet) is dropped and its request served again once
    /// a new fetch round settled which record is the newest.
    pub(crate) fn reconfirm(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) {
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        let Some(role) = g.root.as_mut() else { return };
        ctx.out.stats.reconfirms += 1;
        if let Some(c) = role.pending.take() {
            if let Some(req) = c.req {
                role.queue.push_front(req);
            }
        }
        self.start_fetch(ctx, gid);
    }

    /// Whether the active root of `gid` may answer from its record now (its lease holds).
    pub(super) fn lease_holds(&mut self, ctx: &Ctx<'_>, gid: GroupId) -> bool {
        ctx.overlay
            .nearest_leaves(gid.0, ctx.cfg.replicas, &mut self.scratch);
        let Some(role) = self.groups.get(&gid).and_then(|g| g.root.as_ref()) else {
            return false;
        };
        role.lease_holds(&self.scratch, ctx.now, ctx.cfg.root_lease)
            || ctx.cfg.mutant_on(crate::mutants::Mutant::NoLease)
    }

    /// A root asks for our record of `gid`, and that we refuse records of an epoch below
    /// `epoch` from now on.
    pub(super) fn on_fetch_state(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: NodeHandle,
        gid: GroupId,
        epoch: u64,
    ) {
        // A closer peer is taking the group over: stop serving *before* answering, so that
        // everything we acknowledged is in the record it receives.
        let is_root = self.groups.get(&gid).is_some_and(|g| g.root.is_some());
        if is_root && ctx.overlay.route(gid.0, None) != Hop::Local {
            self.demote(ctx, gid);
        }
        // A peer that knows one closer to the group than the asking root promises nothing, so
        // that the asker holds no lease and serves no stale record (after a heal, before it
        // heard from that peer). It is not told which peer: one it declared dead would flap
        // between handing over and taking over for as long as we have not noticed the death;
        // its REPLICATEs get `NotRoot` once it serves.
        let perfect = ctx.cfg.root_lease == crate::Millis::MAX;
        let closer_known = !perfect && ctx.closer_than(gid, &from).is_some();
        // Under a failure detector that never suspects a live peer there is no rival root
        // to refuse, and a peer that holds nothing of the group keeps no state for it.
        let g = match self.groups.get_mut(&gid) {
            Some(g) => g,
            None if perfect => {
                let reply = ScribeMsg::FetchReply {
                    gid,
                    epoch,
                    rec: None,
                    promised: 0,
                    granted: true,
                    busy_for: 0,
                };
                ctx.out.send(&from, reply);
                return;
            }
            // Even holding nothing, the promise and the lease are kept: a root counts this
            // grant in its lease.
            None => super::group::entry(&mut self.groups, &mut self.round.armed, ctx, gid),
        };
        // Another root's lease that we confirmed may still run: that root may answer a JOIN
        // from its record until then, so no newer root may commit past it yet. Ask again.
        let busy_for = g.busy_for(from.id, ctx.now, ctx.cfg, ctx.overlay);
        if !perfect && !closer_known && busy_for > 0 {
            let reply = ScribeMsg::FetchReply {
                gid,
                epoch,
                rec: None,
                promised: g.known_epoch(),
                granted: false,
                busy_for,
            };
            ctx.out.send(&from, reply);
            return;
        }
        let promised = g.known_epoch();
        let granted = perfect
            || (!closer_known && (epoch > promised || g.promised == (epoch, Some(from.id))));
        if granted {
            g.promised = (epoch, Some(from.id));
            if !perfect {
                g.confirms = Some((from.id, ctx.now.saturating_add(ctx.cfg.root_lease)));
            }
        }
        let reply = ScribeMsg::FetchReply {
            gid,
            epoch,
            rec: g.best_record().map(|r| r.to_wire(ctx.now)),
            promised,
            granted,
            busy_for: 0,
        };
        ctx.out.send(&from, reply);
    }

    /// A peer we asked confirms another root's lease for `busy_for` ms more: keep awaiting
    /// it, and ask it again once that lease lapsed (the fetch timer, pushed back to then, asks
    /// it afresh: up to `fetch_attempts` times without an answer, past which the root serves
    /// without that peer's grant, so its lease does not hold and its first request starts a
    /// new round). A peer that keeps answering busy is waited for: without its grant the
    /// root would hold no lease anyway.
    pub(crate) fn on_fetch_busy(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: NodeHandle,
        gid: GroupId,
        epoch: u64,
        busy_for: u64,
    ) {
        let Some(role) = self.groups.get_mut(&gid).and_then(|g| g.root.as_mut()) else {
            return;
        };
        if role.active || !role.waiting.contains(&from.id) || epoch != role.epoch {
            return;
        }
        ctx.out.stats.fetch_busy += 1;
        // (At most a lease more: a confused or hostile peer cannot park the fetch.)
        let wait = busy_for.min(ctx.cfg.root_lease) + 1;
        if let Some(a) = role.asks.iter_mut().find(|a| a.id == from.id) {
            a.busy_until = ctx.now + wait;
            a.unanswered = 0;
        }
        role.fetch_deadline = role.fetch_deadline.max(ctx.now + wait);
        ctx.timers.arm(
            role.fetch_deadline,
            Timer::Fetch(gid),
            &mut role.fetch_armed,
        );
    }

    pub(crate) fn on_fetch_reply(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: NodeHandle,
        gid: GroupId,
        rec: Option<WireRecord>,
        (epoch, promised, granted): (u64, u64, bool),
    ) {
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        let Some(role) = g.root.as_mut() else { return };
        // An answer to an earlier round promised that round's epoch, not this one's.
        if role.active || !role.waiting.contains(&from.id) || epoch != role.epoch {
            return;
        }
        role.waiting.retain(|id| *id != from.id);
        if ctx.cfg.root_lease != crate::Millis::MAX {
            // (Under a failure detector that never suspects a live peer nobody keeps
            // promises: an epoch only promised, never committed, orders no record.)
            role.seen_epoch = role.seen_epoch.max(promised);
        }
        if granted {
            if let Some(at) = role.asked.iter().find(|a| a.0 == from.id).map(|a| a.1) {
                role.grant(from.id, at);
            }
        } else {
            role.rival = true;
        }
        if let Some(w) = rec {
            role.seen_epoch = role.seen_epoch.max(w.epoch);
            role.seen_seq = role.seen_seq.max(w.seq);
            let inc = super::Record::from_wire(w, ctx.now);
            if g.record.as_ref().is_none_or(|r| inc.key() > r.key()) {
                g.record = Some(inc);
            }
        }
        self.fetch_progress(ctx, gid);
    }

    /// A replica refused our REPLICATE of epoch `refused`: it holds or promised epoch
    /// `epoch`, above it.
    pub(crate) fn on_fenced(
        &mut self,
        ctx: &mut Ctx<'_>,
        gid: GroupId,
        (epoch, refused): (u64, u64),
        rec: Option<WireRecord>,
    ) {
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        let Some(role) = g.root.as_mut() else { return };
        if refused != role.epoch {
            // About a REPLICATE of an earlier epoch of ours (possibly refused for the promise
            // made to our current round).
            return;
        }
        ctx.out.stats.fenced += 1;
        role.seen_epoch = role.seen_epoch.max(epoch);
        if let Some(w) = rec {
            role.seen_seq = role.seen_seq.max(w.seq);
            let inc = super::Record::from_wire(w, ctx.now);
            if g.record.as_ref().is_none_or(|r| inc.key() > r.key()) {
                g.record = Some(inc);
            }
        }
        if ctx.overlay.route(gid.0, None) == Hop::Local {
            self.reconfirm(ctx, gid);
        } else {
            self.demote(ctx, gid);
        }
    }

    /// A peer this one had declared dead is alive: the overlay may have been split, and a
    /// root may have served on the other side. Every active root role here drops its lease
    /// and fetches again at once (rather than at its next request: it learns of a newer
    /// root's record before anyone asks), and fetches wait for the other revived peers until
    /// `heal_window` from now. A root role
    /// whose group now routes to the revived peer (it restarted, or came back, closer to the
    /// group) is handed to it at once, with the record, rather than at the next tree tick:
    /// until then it would keep committing beside the new root.
    pub(crate) fn on_peer_revived(&mut self, ctx: &mut Ctx<'_>) {
        self.heal_until = ctx.now + ctx.cfg.heal_window;
        self.on_peer_joined(ctx);
    }

    /// A peer this one never heard of announced its join (a newcomer): as for a peer taken
    /// back, a root role whose group now routes to it is handed to it at once, and every other
    /// active root role fetches again (the newcomer may have served requests routed to it
    /// before this peer heard of it). No peer declared dead came back, so no fetch waits for
    /// the heal window.
    pub(crate) fn on_peer_joined(&mut self, ctx: &mut Ctx<'_>) {
        let (mut moved, mut stay) = (Vec::new(), Vec::new());
        for (gid, g) in self.groups.iter_mut() {
            if let Some(role) = g.root.as_ref() {
                // An active root fetches again (its lease dropped with the new round's
                // start); a root still fetching keeps its round and the grants given in it,
                // and asks a revived peer that entered its replica set (`fetch_progress`).
                if ctx.overlay.route(gid.0, None) != Hop::Local {
                    moved.push(*gid);
                } else if role.active {
                    stay.push(*gid);
                }
            }
        }
        for gid in moved {
            self.demote(ctx, gid);
        }
        for gid in stay {
            self.reconfirm(ctx, gid);
        }
    }

    /// This peer had not run for a while (its maintenance tick found the gap: SIGSTOP, a VM
    /// pause, starvation). The others may have declared it dead, a replica may have taken
    /// its root roles over, and its parents may have dropped it: every lease it holds or
    /// confirms has lapsed. Every root role here fetches again before it serves (or hands
    /// the group over, if it now routes elsewhere), and every member that needs a group
    /// re-JOINs it at once, carrying its latest state, rather than at a parent timeout.
    pub(crate) fn on_resumed(&mut self, ctx: &mut Ctx<'_>) {
        let gids: Vec<GroupId> = self.groups.keys().copied().collect();
        for gid in gids {
            let Some(g) = self.groups.get_mut(&gid) else {
                continue;
            };
            g.confirms = None;
            if g.root.is_some() {
                if ctx.overlay.route(gid.0, None) == Hop::Local {
                    self.reconfirm(ctx, gid);
                } else {
                    self.demote(ctx, gid);
                }
            } else if g.parent.is_some() && g.has_interest() {
                g.parent = None;
                g.rejoin_now(ctx.now);
                Self::send_rejoin(ctx, gid, g);
            }
        }
    }

    /// What a pause does to group `gid` before the peer finds out (a driver that owns time):
    /// the lease this peer confirms lapses, and so does its own as `gid`'s root, whose
    /// pending commit (not acknowledged) is dropped and its request held again. Returns
    /// whether it holds `gid`'s root role.
    #[cfg(feature = "harness")]
    pub fn lapse_lease(&mut self, gid: GroupId) -> bool {
        let Some(g) = self.groups.get_mut(&gid) else {
            return false;
        };
        g.confirms = None;
        let Some(role) = g.root.as_mut() else {
            return false;
        };
        role.grants.clear();
        if let Some(c) = role.pending.take() {
            if let Some(req) = c.req {
                role.queue.push_front(req);
            }
        }
        true
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

    /// A closer peer is now responsible for the group: hand our record to it (it keeps it if
    /// newer), hand queued requests on and re-JOIN the tree as an ordinary member (carrying
    /// our state, which the new root will adopt if newer).
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
        let RootRole {
            pending,
            queue,
            epoch: old_epoch,
            ..
        } = *role;
        let mut queue = queue;
        if let Some(c) = pending {
            if g.record.as_ref().is_none_or(|r| c.rec.key() > r.key()) {
                g.record = Some(c.rec);
            }
            // Not acknowledged: the new root serves it.
            if let Some(req) = c.req {
                queue.push_front(req);
            }
        }
        // It keeps a record of the group, empty if it demoted before its fetch found one (the
        // model's demoted root keeps its state as a replica): should the new root die, this
        // peer, holding the group, takes it over at once.
        g.record.get_or_insert_with(Default::default);
        g.parent = None;
        g.rejoin_done();
        if g.has_interest() {
            // Back in the tree at once, under the new root, carrying our state.
            Self::send_rejoin(ctx, gid, g);
        }
        let me = ctx.me();
        if let (Some(rec), Some(closer)) = (
            g.record.as_ref().filter(|r| r.seq > 0),
            ctx.overlay.leaf.closest(gid.0, None),
        ) {
            if closer.id != me.id {
                let msg = ScribeMsg::Replicate {
                    gid,
                    rec: rec.to_wire(ctx.now),
                    epoch: old_epoch,
                    stamp: ctx.now,
                };
                ctx.out.send(&closer, msg);
            }
        }
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
