//! Joining the group's multicast tree (§III.E), and leaving it.
//!
//! A SUBSCRIBE at a first-contact peer becomes a JOIN routed toward the group id. Each hop
//! grafts its predecessor as a child and answers pACK; the JOIN always travels on to the root,
//! which answers ACK with its latest committed state (the first NOTIFY). A root that holds no
//! state — nothing published yet, or every state removed or expired — accepts the subscriber
//! all the same (**a deviation from the paper**, whose nACK made watchers that subscribe before
//! the presentity publishes give up; central presence servers answer 200 and a NOTIFY without
//! state, and clients rely on it): its ACK carries no state, or the seq of the last removal so
//! that members learn the states are gone. The answer retraces the JOIN's reverse path, and
//! each hop learns the state it carries. A JOIN carries the latest state known on its
//! way, so that a root that knows less (after a failover) reconciles by keeping the higher seq
//! (§III.F, re-JOIN). An unsubscribe ends a local subscription; a peer that no longer needs the
//! group leaves the tree. A peer that leaves the overlay hands its subscriptions to another
//! peer with the last state each was shown (`--handovers`); that peer JOINs for them and
//! sends each a NOTIFY from its own address, never older than what the subscriber saw.

use super::publish::push_replication;
use super::{newer, peer_id, Ctx, ALL, O};
use super::{
    Entry, Held, Hops, LocalSub, Msg, Obs, PeerState, ReqId, Seq, SubPhase, Timer, UaEvent,
    NO_STATE,
};
use crate::mutant::Mutant;
use crate::setup::Setup;
use crate::topology::PeerIx;
use stateright::actor::model_timeout;

impl Ctx<'_> {
    /// A UA's SUBSCRIBE: a new local subscription, pending until the root's answer; its JOIN is
    /// sent toward the root (a repeated SUBSCRIBE from the same UA is ignored).
    pub(super) fn on_subscribe(&self, st: &mut PeerState, from: u8, o: &mut O) {
        if st.subs.iter().any(|s| s.client == from) {
            return;
        }
        if self.mutant(Mutant::LocalAnswer) && st.root.is_none() && st.parent.is_some() {
            // seeded bug: an on-tree peer accepts a new local subscriber at once, from the
            // state it holds (nothing published, if it holds none), without asking the root
            let latest = st.latest.unwrap_or(Entry {
                seq: 0,
                values: NO_STATE,
            });
            self.to_ua(o, from, UaEvent::Accepted);
            self.to_ua(o, from, UaEvent::Notify(latest));
            st.subs.push(LocalSub {
                client: from,
                phase: SubPhase::Active(latest.seq),
            });
            return;
        }
        self.join_for(st, from, SubPhase::Pending, o);
    }

    /// A new local subscription of `client` in phase `phase(n)`, `n` the request counter of
    /// the JOIN sent for it toward the root (retransmitted if it is lost).
    fn join_for(&self, st: &mut PeerState, client: u8, phase: impl Fn(u8) -> SubPhase, o: &mut O) {
        let req = ReqId {
            origin: self.me,
            who: client,
            n: st.next_n,
        };
        st.next_n += 1;
        st.subs.push(LocalSub {
            client,
            phase: phase(req.n),
        });
        o.set_timer(Timer::Retry(req), model_timeout());
        self.send_join(st, req, o);
    }

    /// A UA ends its subscription (SUBSCRIBE with `Expires: 0`).
    pub(super) fn on_unsubscribe(&self, st: &mut PeerState, from: u8, o: &mut O) {
        // The subscription ends here; a pending one is abandoned (the root's later answer
        // finds no subscription). A peer that no longer needs the group (no local
        // subscription, no child, not the root) leaves the tree: it tells its parent
        // (with tree maintenance), forgets it and stops re-JOINing.
        self.observe(o, Obs::Unsubscribed(from));
        if self.mutant(Mutant::UnsubscribeIgnored) {
            return;
        }
        if let Some(i) = st.subs.iter().position(|s| s.client == from) {
            if let Some(n) = st.subs[i].phase.pending() {
                let req = ReqId {
                    origin: self.me,
                    who: from,
                    n,
                };
                st.tries.retain(|t| t.0 != req);
                o.cancel_timer(Timer::Retry(req));
            }
            st.subs.remove(i);
        }
        self.prune(st, o);
    }

    /// A peer that no longer needs the group (no local subscription, no child, not the root)
    /// leaves the tree: it tells its parent, forgets it and stops re-JOINing.
    pub(super) fn prune(&self, st: &mut PeerState, o: &mut O) {
        if st.subs.is_empty() && st.children == 0 && st.root.is_none() {
            self.leave_parent(st, o);
            if let Some(req) = st.rejoin.take() {
                st.tries.retain(|t| t.0 != req);
                o.cancel_timer(Timer::Retry(req));
            }
        }
    }

    /// Forgets the tree parent, telling it with a [`Msg::Leave`] under tree maintenance
    /// (production `prune`, `ensure_root`); without it the parent keeps the branch.
    pub(super) fn leave_parent(&self, st: &mut PeerState, o: &mut O) {
        if let Some(p) = st.parent.take() {
            if self.s.tree_maintenance() {
                o.send(peer_id(p), Msg::Leave);
            }
        }
    }

    /// A child's LEAVE (production `on_leave`): it is dropped, and this peer leaves in turn
    /// if nothing else needs the group here. A LEAVE from this peer's own parent (a cycle
    /// broken from above) makes it an orphan that re-JOINs if it still needs the group
    /// (production: at its next tick).
    pub(super) fn on_leave(&self, st: &mut PeerState, from: PeerIx, o: &mut O) {
        st.children &= !(1 << from);
        if st.parent == Some(from) {
            st.parent = None;
            if st.root.is_none() && (!st.subs.is_empty() || st.children != 0) {
                self.rejoin(st, o);
            }
        }
        self.prune(st, o);
    }

    /// Before it leaves, this peer hands its first active subscription of a subscriber that
    /// stays to peer `q`, with the last state it showed it (production: the orderly shutdown's
    /// `DialogHandover`), and forgets it.
    pub(super) fn hand_dialog_over(&self, st: &mut PeerState, q: PeerIx, o: &mut O) {
        let Some(i) = handable(self.s, st) else {
            return;
        };
        let sub = st.subs.remove(i);
        let SubPhase::Active(last) = sub.phase else {
            return;
        };
        if !self.mutant(Mutant::HandoverDropped) {
            o.send(
                peer_id(q),
                Msg::Handover {
                    client: sub.client,
                    last,
                },
            );
        }
        self.prune(st, o);
    }

    /// A subscription handed over by a peer that leaves: join the group for it, like a new
    /// local subscriber, but the root's answer makes it active without a 200 (the dialog
    /// exists) and with a NOTIFY from here whatever the state (a target refresh).
    pub(super) fn on_handover(&self, st: &mut PeerState, client: u8, last: Seq, o: &mut O) {
        if st.subs.iter().any(|s| s.client == client) {
            return;
        }
        self.join_for(st, client, |n| SubPhase::Handed(n, last), o);
    }

    /// Sends a JOIN for `req` toward the root (or answers it here if this peer is the root).
    pub(super) fn send_join(&self, st: &mut PeerState, req: ReqId, o: &mut O) {
        let hop = match st.parent {
            Some(p) if st.dead & (1 << p) == 0 => p,
            _ => self.route(st),
        };
        if st.root.is_none() && hop == self.me {
            // The closest peer as far as it knows: it becomes the root (fetching first).
            self.ensure_root(st, o);
        }
        // A local JOIN at the root waits as a routed one does (`root_join`): for the fetch
        // phase to end, and for a replica quorum (the smaller side of a partition would
        // show its subscriber a state older than one acknowledged on the other side;
        // production queues every request alike, `drain_queue`).
        let quorum = self.quorum(st);
        if let Some(root) = st.root.as_mut() {
            if !root.active() || (!quorum && !self.mutant(Mutant::LocalJoinNoQuorum)) {
                let h = Held::Join {
                    req,
                    path: Hops::from(self.me).pop(),
                    carried: st.latest,
                };
                if !root.queued.iter().any(|q| q.req() == req) {
                    root.queued.push(h);
                }
                return;
            }
            let state = root.committed;
            self.join_answered(st, req, state, o);
            return;
        }
        st.parent = Some(hop);
        o.send(
            peer_id(hop),
            Msg::Join {
                req,
                path: Hops::from(self.me),
                carried: st.latest,
            },
        );
    }

    /// The origin of a JOIN gets the root's answer.
    fn join_answered(&self, st: &mut PeerState, req: ReqId, state: Option<Entry>, o: &mut O) {
        // The answer to a request that ended meanwhile (a re-JOIN replaced or abandoned, a
        // subscription ended) still carries the root's committed state: a peer that is on the
        // tree learns it, one that left does not (production `on_join_ack`).
        let member = !st.subs.is_empty() || st.children != 0 || st.root.is_some();
        if req.who == self.me {
            if st.rejoin == Some(req) {
                st.rejoin = None;
                st.tries.retain(|t| t.0 != req);
                o.cancel_timer(Timer::Retry(req));
            }
            if let Some(e) = state.filter(|_| member) {
                self.learn(st, e, None, o);
            }
            return;
        }
        let Some(i) = st
            .subs
            .iter()
            .position(|s| s.client == req.who && s.phase.pending() == Some(req.n))
        else {
            if let Some(e) = state.filter(|_| member) {
                self.learn(st, e, None, o);
            }
            return;
        };
        st.tries.retain(|t| t.0 != req);
        o.cancel_timer(Timer::Retry(req));
        if let Some(e) = state {
            self.learn(st, e, None, o);
        }
        // The first NOTIFY: the newest state known here (nothing published yet: seq 0).
        let latest = st.latest.unwrap_or(Entry {
            seq: 0,
            values: NO_STATE,
        });
        match st.subs[i].phase {
            SubPhase::Handed(_, last) => {
                // A handed-over dialog: no 200 (it exists); a NOTIFY from here, whether or
                // not the state moved on, tells the subscriber where the dialog lives now.
                // Never an older state than it was shown.
                if latest.seq >= last && (latest.seq > last || !self.mutant(Mutant::HandoverSilent))
                {
                    self.to_ua(o, req.who, UaEvent::Notify(latest));
                }
                st.subs[i].phase = SubPhase::Active(latest.seq.max(last));
            }
            _ => {
                self.to_ua(o, req.who, UaEvent::Accepted);
                self.to_ua(o, req.who, UaEvent::Notify(latest));
                st.subs[i].phase = SubPhase::Active(latest.seq);
            }
        }
    }

    /// A JOIN from peer `from` (or from this peer itself): graft the sender as a child, then
    /// answer pACK and pass the JOIN on toward the root, or, at the root, answer it.
    pub(super) fn on_join(
        &self,
        st: &mut PeerState,
        from: PeerIx,
        req: ReqId,
        path: Hops,
        carried: Option<Entry>,
        o: &mut O,
    ) {
        if from != self.me {
            st.children |= 1 << from;
        }
        if st.root.is_none() && self.route(st) == self.me {
            // The JOIN reached the closest peer: it becomes the root (fetching first).
            self.ensure_root(st, o);
        }
        if st.root.is_some() {
            self.root_join(st, req, path, carried, o);
            return;
        }
        if self.mutant(Mutant::AnswerFromIntermediate) && st.latest.is_some() {
            // seeded bug: an on-tree peer answers from its own, possibly stale, state
            o.send(
                peer_id(from),
                Msg::JoinReply {
                    req,
                    path,
                    state: st.latest,
                },
            );
            return;
        }
        o.send(peer_id(from), Msg::PAck);
        let hop = match st.parent {
            Some(p) if st.dead & (1 << p) == 0 => p,
            _ => self.route(st),
        };
        st.parent = Some(hop);
        if let Some(path) = path.push(self.me) {
            let carried = newer(carried, st.latest);
            o.send(peer_id(hop), Msg::Join { req, path, carried });
        }
    }

    /// The root answers a JOIN: it first reconciles with the state the JOIN carries (keeping
    /// the higher seq), then sends its ACK back along the reverse path.
    pub(super) fn root_join(
        &self,
        st: &mut PeerState,
        req: ReqId,
        path: Hops,
        carried: Option<Entry>,
        o: &mut O,
    ) {
        let quorum = self.quorum(st);
        let root = st.root.as_mut().expect("root");
        // A JOIN carrying a state newer than the committed one while a commit is pending
        // (the pending state itself, passed down by a root that handed the group over) waits
        // for that commit, to be taken in order with it (production `root_request`).
        let ahead = !root.waiting.is_empty()
            && carried.is_some_and(|c| root.committed.is_none_or(|e| c.seq > e.seq));
        if !root.active() || !quorum || ahead {
            // Held until the fetch phase ends, or until the root reaches a replica quorum
            // again (a state served from the smaller side of a partition could be older than
            // one the subscriber was shown before), or until the pending commit is done.
            if !root.queued.iter().any(|q| q.req() == req) {
                root.queued.push(Held::Join { req, path, carried });
            }
            return;
        }
        let is_rejoin = (req.who as usize) < self.s.topo.len();
        if let Some(c) = carried {
            if is_rejoin {
                self.observe(o, Obs::RejoinWithState);
            }
            let root = st.root.as_mut().expect("root");
            let adopt = match root.st.entry() {
                None => true,
                Some(e) => c.seq > e.seq || (self.mutant(Mutant::RootAcceptsLowerSeq) && c != e),
            };
            if adopt {
                // The tree knew a newer state than the root (it survived in a subtree): keep
                // the highest seq, replicate it and pass it down.
                root.st.adopt(c);
                root.committed = Some(c);
                push_replication(root, ALL, o);
                self.commit_adopted(st, c, o);
            }
        }
        // A root without state answers too; after a removal or expiry its ACK carries that
        // seq (so that re-JOINing members learn that the states are gone).
        let mut state = st.root.as_ref().and_then(|r| r.committed);
        if state.is_some_and(|e| e.values == NO_STATE) && self.mutant(Mutant::AckForgetsExpiry) {
            state = None;
        }
        if state.is_none_or(|e| e.values == NO_STATE) && self.mutant(Mutant::EmptyRootSilent) {
            return;
        }
        match path.last() {
            Some(last) => o.send(peer_id(last), Msg::JoinReply { req, path, state }),
            None => self.join_answered(st, req, state, o),
        }
    }

    /// The root's ACK, travelling back along the JOIN's reverse path.
    pub(super) fn on_join_reply(
        &self,
        st: &mut PeerState,
        req: ReqId,
        path: Hops,
        state: Option<Entry>,
        o: &mut O,
    ) {
        let path = path.pop();
        match path.last() {
            Some(prev) => {
                // A hop forwarding the root's answer learns the state it carries (a state
                // without values too: the seq of a removal or expiry).
                if let Some(e) = state {
                    self.learn(st, e, Some(prev), o);
                    self.absorb(st, o);
                }
                o.send(peer_id(prev), Msg::JoinReply { req, path, state });
            }
            None => {
                self.join_answered(st, req, state, o);
                self.absorb(st, o);
            }
        }
    }

    /// A late NOTIFY or ACK of an earlier root, passing through the active root, told its
    /// member view a state newer than its record (the root and every replica that held it
    /// died, beyond what `k` replicas keep): the root takes it as its record, replicates it
    /// and serves it, rather than stamp a later change below what members were told
    /// (production `root_absorb_latest`). Not while a commit is pending: the root takes it
    /// in once that commit is done, before it serves anything else.
    pub(super) fn absorb(&self, st: &mut PeerState, o: &mut O) {
        let Some(l) = st.latest else { return };
        let Some(root) = st.root.as_mut() else { return };
        if !root.active()
            || !root.waiting.is_empty()
            || l.seq <= root.st.seq
            || self.mutant(Mutant::NoAbsorb)
        {
            return;
        }
        root.st.adopt(l);
        root.committed = Some(l);
        push_replication(root, ALL, o);
        self.commit_adopted(st, l, o);
    }
}

/// The local subscription a peer that leaves hands over (`Timer::Handover`): its first
/// active one of a subscriber that never unsubscribes.
pub fn handable(setup: &Setup, st: &PeerState) -> Option<usize> {
    st.subs.iter().position(|s| {
        matches!(s.phase, SubPhase::Active(_))
            && setup
                .subscriber_index(s.client as usize)
                .is_some_and(|i| i >= setup.unsubscribes)
    })
}
