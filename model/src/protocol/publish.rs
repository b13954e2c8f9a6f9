//! Publishing (§III.D, RFC 3903) and keeping the root state safe: a PUBLISH travels from the
//! first-contact peer to the root, which holds one event state per entity tag. A PUBLISH without
//! SIP-If-Match creates a new state; one with SIP-If-Match refreshes, modifies or (with
//! `Expires: 0`) removes the state that tag names — a tag naming no live state gets 412 and
//! changes nothing, and no publisher's change touches another publisher's state. Each change
//! stamps the next group seq and mints the changed state a new ETag; the root clamps the expiry
//! to [`MAX_EXPIRES`] and replicates its state to its k nearest peers. Once every replica holds it the publication is **committed**: the root
//! multicasts it down the tree and answers 200. A root commits one publication at a time;
//! publishes that arrive meanwhile are held and served in order. A retransmitted publish is
//! answered from the per-publisher results the root state keeps, never applied twice.
//!
//! Replication: each change of the root state is sent to every replica behind it; a replica that
//! knows a live peer closer to the group than the sender keeps the state but does not
//! acknowledge, and the root's replication retry ([`Timer::Resend`]) resends it.
//!
//! Expiry (RFC 3903 §4.3): a lapsed event state is removed by the next seq, committed like a
//! publication; the others stay.

use super::message::Change;
use super::state::{single, EventState};
use super::{peer_id, to_ix, Ctx, ALL, O};
use super::{
    Entry, Held, Msg, Obs, PeerState, PendingPub, PubResult, ReqId, Root, RootState, RootStateMsg,
    Seq, Timer,
};
use crate::mutant::Mutant;
use crate::topology::{PeerIx, PeerSet};
use stateright::actor::{model_timeout, Id};
use std::sync::Arc;

/// The longest publication lifetime a root grants (abstract units); longer requests are clamped.
pub const MAX_EXPIRES: u8 = 2;

impl RootState {
    /// The result stored for publish `req`, if it was applied.
    fn applied_result(&self, req: ReqId) -> Option<PubResult> {
        self.applied
            .iter()
            .find(|(w, n, _)| *w == req.who && *n == req.n)
            .map(|(_, _, r)| *r)
    }

    /// Stores `result` as the last applied publish of `req`'s publisher.
    fn record(&mut self, req: ReqId, result: PubResult) {
        match self.applied.iter_mut().find(|(w, _, _)| *w == req.who) {
            Some(slot) => *slot = (req.who, req.n, result),
            None => {
                self.applied.push((req.who, req.n, result));
                self.applied.sort_unstable();
            }
        }
    }
}

impl Ctx<'_> {
    /// A UA's PUBLISH at its first-contact peer: remember it (a retransmission of one already
    /// pending is ignored) and send it toward the root.
    pub(super) fn on_ua_publish(&self, st: &mut PeerState, p: PendingPub, o: &mut O) {
        if st.pubs.iter().any(|q| q.req == p.req) {
            return;
        }
        st.pubs.push(p);
        o.set_timer(Timer::Retry(p.req), model_timeout());
        self.forward_publish(st, p, o);
    }

    /// Sends a publish toward the root, or serves it here if this peer is the root.
    pub(super) fn forward_publish(&self, st: &mut PeerState, p: PendingPub, o: &mut O) {
        if st.root.is_none() && self.route(st) == self.me {
            // The publish reached the closest peer: it becomes the root (fetching first).
            self.ensure_root(st, o);
        }
        if st.root.is_some() {
            self.on_publish_at_root(st, p, o);
        } else {
            let hop = self.route(st);
            o.send(
                peer_id(hop),
                Msg::PubFwd {
                    req: p.req,
                    value: p.value,
                    if_match: p.if_match,
                    expires: p.expires,
                },
            );
        }
    }

    /// The root serves a publish: hold it behind a pending commit, answer a retransmission
    /// from the stored result, refuse a stale SIP-If-Match (412), or apply it and replicate.
    fn on_publish_at_root(&self, st: &mut PeerState, p: PendingPub, o: &mut O) {
        let quorum = self.quorum(st);
        let root = st.root.as_mut().expect("root");
        if !root.waiting.is_empty() || !root.active() || !quorum {
            // One publication at a time, and none before the fetch phase ends or without a
            // replica quorum: hold this one until the pending commit completes (a
            // retransmission of the pending one is dropped: its answer follows the commit).
            // (Production applies it, then waits for the quorum, and drops the applied change
            // when its lease lapses; holding the request is the same to every observer.)
            if !root
                .waiting
                .iter()
                .any(|w| w.0.is_some_and(|q| q.req == p.req))
                && !root.queued.iter().any(|q| q.req() == p.req)
            {
                root.queued.push(Held::Pub(p));
            }
            return;
        }
        if let Some(result) = root
            .st
            .applied_result(p.req)
            .filter(|_| !self.mutant(Mutant::NoDedup))
        {
            // A retransmission of an applied publish: answer it again, apply nothing.
            self.reply(st, p.req, result, o);
            return;
        }
        // A SIP-If-Match must name a live event state (an expired or removed one has no ETag
        // any more); only that state changes.
        let named = p
            .if_match
            .and_then(|e| root.st.states.iter().position(|s| s.etag == e));
        if let (Some(e), None) = (p.if_match, named) {
            if !self.mutant(Mutant::EtagIgnored) {
                if self.mutant(Mutant::RefusalConsumesSeq) {
                    // seeded bug: the seq is stamped before SIP-If-Match is checked
                    root.st.seq += 1;
                }
                let refused = Obs::Refused {
                    who: p.req.who,
                    if_match: e,
                    applied: root.st.entry(),
                    committed: root.committed,
                    pending: !root.waiting.is_empty(),
                };
                self.observe(o, refused);
                self.reply(st, p.req, PubResult::PreconditionFailed, o);
                return;
            }
        }
        let root = st.root.as_mut().expect("root");
        if self.s.fencing() && root.waiting.is_empty() {
            root.base = Some(root.st.clone());
        }
        let seq = if self.mutant(Mutant::SeqNotBumped) && root.st.seq > 0 {
            root.st.seq
        } else {
            root.st.seq + 1
        };
        let expires = if self.mutant(Mutant::NoExpiryClamp) {
            p.expires
        } else {
            p.expires.min(MAX_EXPIRES)
        };
        let result = match named {
            Some(i) if p.expires == 0 => {
                if self.mutant(Mutant::RemoveAll) {
                    root.st.states.clear();
                } else {
                    root.st.states.remove(i);
                }
                PubResult::Removed { seq }
            }
            Some(i) => {
                let old = root.st.states[i].etag;
                root.st.states[i] = EventState {
                    etag: seq,
                    values: single(p.value),
                    expires,
                };
                let etag = if self.mutant(Mutant::AnswerOldEtag) {
                    old
                } else {
                    seq
                };
                PubResult::Ok { etag, expires }
            }
            None => {
                if self.mutant(Mutant::OneState) {
                    root.st.states.clear();
                }
                root.st.states.push(EventState {
                    etag: seq,
                    values: single(p.value),
                    expires,
                });
                PubResult::Ok { etag: seq, expires }
            }
        };
        root.st.states.sort_unstable();
        root.st.seq = seq;
        if st.latest.is_some_and(|l| l.seq >= seq) {
            self.observe(o, Obs::StampedBelowView);
        }
        let root = st.root.as_mut().expect("root");
        root.st.epoch = root.epoch;
        root.st.record(p.req, result);
        let (who, n) = (p.req.who, p.req.n);
        self.observe(o, Obs::Applied { seq, who, n });
        let root = st.root.as_mut().expect("root");
        let entry = root.st.entry().expect("a change stamps a seq");
        let change = Change::Publish {
            if_match: p.if_match,
            who: p.req.who,
            n: p.req.n,
        };
        let obs = Obs::Commit {
            entry,
            change,
            live: root.st.live(),
        };
        root.waiting.push((Some(p), result, obs));
        push_replication(root, ALL, o);
        if self.mutant(Mutant::NotifyBeforeCommit) {
            // seeded bug: the applied state goes down the tree before the replicas hold it
            self.learn(st, entry, None, o);
        }
        self.try_commit(st, o);
    }

    /// Commits every waiting publication that all replicas hold: multicast it, answer it.
    pub(super) fn try_commit(&self, st: &mut PeerState, o: &mut O) {
        loop {
            let quorum = self.quorum(st);
            let root = st.root.as_mut().expect("root");
            let held = if self.mutant(Mutant::AckBeforeReplicated) {
                Seq::MAX
            } else {
                root.acks.iter().map(|a| a.acked).min().unwrap_or(Seq::MAX)
            };
            match root.waiting.first() {
                Some((_, _, Obs::Commit { entry, .. })) if entry.seq <= held && quorum => {
                    let (req, result, obs) = root.waiting.remove(0);
                    if root.waiting.is_empty() {
                        root.base = None;
                    }
                    let Obs::Commit { entry, .. } = obs else {
                        unreachable!("waiting changes are commits")
                    };
                    root.committed = Some(entry);
                    self.observe(o, obs);
                    self.learn(st, entry, None, o);
                    if let Some(p) = req {
                        self.reply(st, p.req, result, o);
                    }
                }
                Some(_) => return,
                None => {
                    // Nothing pending: a state the member view heard meanwhile is taken in
                    // before anything is served (production `drain_queue`).
                    self.absorb(st, o);
                    let root = st.root.as_mut().expect("root");
                    if root.queued.is_empty() || !root.active() || !quorum {
                        return;
                    }
                    // Serve held requests in order until a publish starts a commit (a JOIN,
                    // a 412 or a retransmission's stored answer starts none).
                    match root.queued.remove(0) {
                        Held::Pub(next) => self.on_publish_at_root(st, next, o),
                        Held::Join { req, path, carried } => {
                            self.root_join(st, req, path, carried, o)
                        }
                    }
                }
            }
        }
    }

    /// A root takes an entry it did not stamp itself (from a replica, the tree or a failed
    /// root's late replicate) as committed: record it and pass it down the tree. Its states
    /// can expire like its own.
    pub(super) fn commit_adopted(&self, st: &mut PeerState, entry: Entry, o: &mut O) {
        let live = st.root.as_ref().map_or(0, |r| r.st.live());
        let change = Change::Adopt;
        self.observe(
            o,
            Obs::Commit {
                entry,
                change,
                live,
            },
        );
        // What this peer already knew as a tree member it passed on to its children then
        // (production `apply_latest`: only a newer entry goes down the tree).
        self.learn(st, entry, None, o);
    }

    /// Sends the root's result for `req` to the publish's first-contact peer (or answers it
    /// here).
    fn reply(&self, st: &mut PeerState, req: ReqId, result: PubResult, o: &mut O) {
        if req.origin == self.me {
            self.pub_answered(st, req, result, o);
        } else {
            o.send(peer_id(req.origin), Msg::PubReply { req, result });
        }
    }

    /// The first-contact peer gets the result of a publish it is waiting on, and passes it on
    /// to the UA (the answer to a UA's last scripted publish goes to the observer sink).
    pub(super) fn pub_answered(
        &self,
        st: &mut PeerState,
        req: ReqId,
        result: PubResult,
        o: &mut O,
    ) {
        let Some(i) = st.pubs.iter().position(|p| p.req == req) else {
            return;
        };
        let p = st.pubs.remove(i);
        st.tries.retain(|t| t.0 != req);
        o.cancel_timer(Timer::Retry(req));
        let to = if p.last {
            self.s.sink()
        } else {
            Id::from(req.who as usize)
        };
        o.send(
            to,
            Msg::PubResponse {
                ua: req.who,
                n: req.n,
                result,
            },
        );
    }

    /// The root state from the root, at a replica (or, after a takeover, at the new root: see
    /// `late_replicate`).
    pub(super) fn on_replicate(
        &self,
        st: &mut PeerState,
        src: Id,
        rs: &RootState,
        epoch: u8,
        o: &mut O,
    ) {
        let from = to_ix(src);
        let fencing = self.s.fencing();
        if st.root.is_some() {
            self.late_replicate(st, from, rs, epoch, o);
            if st.root.is_none() {
                return;
            }
            let closer = self.s.topo.closer_than(self.me, from, self.s.gid, st.dead);
            match closer {
                Some(c) if fencing => o.send(src, Msg::NotRoot(c)),
                // Production answers `NotRoot` (this root, or a peer it knows, is closer to
                // the group than the sender), which a sender that still routes the group to
                // itself ignores: nothing the model needs.
                Some(_) => {}
                _ if fencing && self.refuse(st, src, epoch, o) => {}
                // A root acknowledges a record only if it holds it (it adopted it, or its own
                // is that very change): one that keeps a different record of its own would
                // confirm what it does not store (production `replicate`).
                _ => {
                    if st.root.as_ref().is_some_and(|r| r.st.key() == rs.key()) {
                        o.send(src, Msg::ReplicaAck(rs.seq));
                    }
                }
            }
            return;
        }
        let seq = rs.seq;
        // Only the closest peer may commit: a replica that knows a live peer closer to
        // the group than the sender keeps the state but does not acknowledge (production
        // answers NotRoot, which a root that still routes the group to itself ignores).
        let closer = self.s.topo.closer_than(self.me, from, self.s.gid, st.dead);
        // Fencing: a record of a root epoch below one held or promised here, or of the epoch
        // promised another root, is neither stored nor acknowledged; the sender learns the
        // epoch and the record held here. (A closer peer is named first: the sender hands
        // over rather than fetching again.)
        if fencing && closer.is_none() && self.refuse(st, src, epoch, o) {
            return;
        }
        // An acknowledgement confirms the sender's lease: while this peer confirms another
        // root's, it confirms nothing (the sender's replication retry asks again).
        if fencing && closer.is_none() && busy(st, from) && !self.mutant(Mutant::LeaseIgnored) {
            return;
        }
        let newer = match st.replica.as_ref() {
            None => true,
            Some(h) if self.s.epochs() => rs.key() >= h.key(),
            Some(h) => seq >= h.seq,
        };
        if newer {
            st.replica = Some(rs.clone());
        }
        match closer {
            Some(c) if fencing => o.send(src, Msg::NotRoot(c)),
            Some(_) => {}
            None => {
                if fencing {
                    self.confirm(st, from, epoch, o);
                }
                o.send(src, Msg::ReplicaAck(seq));
            }
        }
    }

    /// With suspicions, whether this peer refuses a REPLICATE of root epoch `epoch` from
    /// `src` (below what it holds or promised, or the epoch promised another root), sending
    /// `Fenced` if so.
    fn refuse(&self, st: &PeerState, src: Id, epoch: u8, o: &mut O) -> bool {
        let known = super::failover::known_epoch(st);
        let other = st.promised.0 == epoch && st.promised.1.is_some_and(|p| p != to_ix(src));
        if epoch >= known && !other {
            return false;
        }
        let held = match &st.root {
            Some(r) => Some(r.st.clone()),
            None => st.replica.clone(),
        };
        o.send(
            src,
            Msg::Fenced(held.map(|h| RootStateMsg(Arc::new(h))), known, epoch),
        );
        true
    }

    /// A replica acknowledges `seq`: the root records it and commits what every replica holds.
    ///
    /// With suspicions an acknowledgement confirms the root's lease (production's
    /// `RootRole::grant`): a root that served after [`super::MAX_ROUNDS`] refused rounds holds
    /// its lease again once every replica acknowledged its record (a peer refuses a round
    /// while it still sees a closer peer that the root knows has crashed).
    pub(super) fn on_replica_ack(&self, st: &mut PeerState, from: u8, seq: Seq, o: &mut O) {
        let fencing = self.s.fencing();
        if let Some(root) = st.root.as_mut() {
            if let Some(a) = root.acks.iter_mut().find(|a| a.peer == from) {
                a.acked = a.acked.max(seq);
                let seq = root.st.seq;
                // Only a serving root: while it fetches, `acks` are of its previous epoch's
                // replica set and record, and this round's refusals stand.
                let serving = root.active();
                let all = root.acks.iter().all(|a| a.acked >= seq);
                if fencing && root.rival && serving && seq > 0 && all {
                    root.rival = false;
                }
                self.try_commit(st, o);
            }
        }
    }

    /// Event state `etag` expires at the root: the root stamps the next seq without it and
    /// commits that like a publication (replicated first, then multicast), so that subscribers
    /// are told and every later root knows the state is gone; the other states stay.
    /// Production does the same on its periodic tick once the granted expiry has passed and no
    /// commit is pending.
    pub(super) fn on_expire(&self, st: &mut PeerState, etag: Seq, o: &mut O) {
        let quorum = self.quorum(st);
        let Some(root) = st.root.as_mut() else {
            return;
        };
        if !expirable(root, etag) || !quorum {
            return;
        }
        if self.s.fencing() && root.waiting.is_empty() {
            root.base = Some(root.st.clone());
        }
        self.observe(o, Obs::Expired);
        root.st.states.retain(|s| s.etag != etag);
        root.st.seq += 1;
        root.st.epoch = root.epoch;
        let seq = root.st.seq;
        if st.latest.is_some_and(|l| l.seq >= seq) {
            self.observe(o, Obs::StampedBelowView);
        }
        let root = st.root.as_mut().expect("root");
        let entry = root.st.entry().expect("a change stamps a seq");
        let obs = Obs::Commit {
            entry,
            change: Change::Expire(etag),
            live: root.st.live(),
        };
        root.waiting.push((None, PubResult::Removed { seq }, obs));
        push_replication(root, ALL, o);
        self.try_commit(st, o);
    }
}

impl Ctx<'_> {
    /// Whether this root reaches a majority of its nominal replica group (always, without
    /// suspicions; never checked with the `no-quorum` mutant).
    pub(super) fn quorum(&self, st: &PeerState) -> bool {
        let replicas = st.root.as_ref().map_or(0, |r| r.acks.len());
        let leased = st.root.as_ref().is_none_or(|r| !r.rival);
        (self.s.quorum(replicas) || self.mutant(Mutant::NoQuorum)) && leased
    }
}

/// Whether peer `st` confirms the lease of a root other than `from` that it has not declared
/// dead (it may still run): it promises `from` nothing and acknowledges none of its records.
/// (The failure detector's timeout outlasts any lease; a lease confirmed since to a peer
/// still counted as dead, which asked, is not counted either: production's `busy_for`.)
pub fn busy(st: &PeerState, from: PeerIx) -> bool {
    st.leased
        .is_some_and(|(x, _)| x != from && st.dead & (1 << x) == 0)
}

/// Whether event state `etag` of a root can expire now: the root serves (its fetch phase is
/// over), the state is live and committed, and no commit is pending (production checks expiry
/// on its periodic tick, between commits).
pub fn expirable(root: &Root, etag: Seq) -> bool {
    root.active()
        && root.waiting.is_empty()
        && root.committed.map(|e| e.seq) == Some(root.st.seq)
        && root.st.states.iter().any(|s| s.etag == etag)
}

/// The root's replication retry: re-arm the timer and resend the root state to every replica
/// that has not acknowledged it.
pub(super) fn on_resend(st: &mut PeerState, me: u8, o: &mut O) {
    o.set_timer(Timer::Resend, model_timeout());
    match st.root.as_mut() {
        // Production's tick resends to every replica behind the root.
        Some(root) if root.active() => push_replication(root, ALL, o),
        // A fetching root asks the peers it still awaits again (production's fetch timeout:
        // a FetchState or its reply lost while a partition lasted).
        Some(root) => {
            let awaited = root.fetching & !root.busy & !(1 << me);
            for q in (0..8).filter(|q| awaited & (1 << q) != 0) {
                o.send(peer_id(q), Msg::FetchState(root.epoch));
            }
        }
        None => {}
    }
}

/// Sends the root's latest state to every replica in `to` that has not acknowledged it.
pub(super) fn push_replication(root: &mut Root, to: PeerSet, o: &mut O) {
    let seq = root.st.seq;
    if seq == 0 {
        return;
    }
    let mut msg = None;
    for a in root.acks.iter() {
        if to & (1 << a.peer) != 0 && a.acked < seq {
            let m = msg.get_or_insert_with(|| {
                Msg::Replicate(RootStateMsg(Arc::new(root.st.clone())), root.epoch)
            });
            o.send(peer_id(a.peer), m.clone());
        }
    }
}
