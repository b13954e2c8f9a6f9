//! Failure handling (§III.F): what a peer does when its failure detector reports a crash.
//!
//! An orphaned tree member (its parent crashed) re-JOINs carrying its latest state. A root
//! repairs its replica set (a crashed replica is replaced by the next nearest peer, which is sent
//! the root state). The closest live peer to the group id, once the root crashed, takes over with
//! its replica: it becomes the root, treats the replicated state as committed, re-replicates it
//! and passes it down the tree. A replicate from the failed root that arrives after the takeover
//! is reconciled by keeping the higher seq.

use super::publish::push_replication;
use super::{Ctx, ALL, O};
use super::{Held, Msg, Obs, PeerState, Replica, ReqId, Root, RootState, RootStateMsg, Timer};
use crate::mutant::Mutant;
use crate::topology::{PeerIx, PeerSet};
use stateright::actor::{model_timeout, Id};
use std::sync::Arc;

impl Ctx<'_> {
    /// The failure detector reports `x` crashed.
    pub(super) fn on_detect(&self, st: &mut PeerState, x: PeerIx, o: &mut O) {
        st.dead |= 1 << x;
        st.children &= !(1 << x);
        // Production takes the root role over at once only for a group it holds something for
        // (a record, a latest state, a subscriber or a child); otherwise the first request that
        // reaches it makes it the root (`ensure_root` on a JOIN or PUBLISH).
        let holds =
            st.replica.is_some() || st.latest.is_some() || !st.subs.is_empty() || st.children != 0;
        if st.root.is_none() && self.route(st) == self.me && holds {
            if st.parent == Some(x) {
                st.parent = None;
            }
            self.ensure_root(st, o);
        } else if st.root.is_some() {
            self.fetch_peer_dead(st, x, o);
        } else if st.parent == Some(x) && self.mutant(Mutant::NoRejoin) {
            // seeded bug: an orphan forgets its parent but does not re-JOIN
            st.parent = None;
        } else if st.parent == Some(x) {
            st.parent = None;
            let req = ReqId {
                origin: self.me,
                who: self.me,
                n: st.next_n,
            };
            st.next_n += 1;
            st.rejoin = Some(req);
            o.set_timer(Timer::Retry(req), model_timeout());
            if self.mutant(Mutant::RejoinViaChild) && st.children != 0 {
                st.parent = Some(st.children.trailing_zeros() as PeerIx);
            }
            self.send_join(st, req, o);
        }
        let want = self.replica_set(st);
        if let Some(root) = st.root.as_mut().filter(|r| r.active()) {
            if root.acks.iter().any(|a| a.peer == x) {
                root.acks.retain(|a| a.peer != x);
                let mut fresh: PeerSet = 0;
                for (q, _) in want {
                    if !root.acks.iter().any(|a| a.peer == q) {
                        root.acks.push(Replica { peer: q, acked: 0 });
                        fresh |= 1 << q;
                    }
                }
                root.acks.sort_unstable();
                push_replication(root, fresh, o);
                self.try_commit(st, o);
            }
        }
    }

    /// This peer is now the closest live peer to the group id (as far as it knows): it becomes
    /// the root, starting with its own record (its replica), and fetches the records of its
    /// replica set before it serves (production `ensure_root`); requests meanwhile are held.
    pub(super) fn ensure_root(&self, st: &mut PeerState, o: &mut O) {
        if st.root.is_some() {
            return;
        }
        let with_replica = st.replica.is_some();
        let rs = st.replica.take().unwrap_or_default();
        let committed = rs.entry();
        let fetching = self.fetch_set(st);
        st.root = Some(Root {
            st: rs,
            committed,
            waiting: Vec::new(),
            acks: Vec::new(),
            queued: Vec::new(),
            fetching,
            seen: (0, 0),
        });
        // Production sends its parent a LEAVE (held by the harness: the model keeps branches).
        st.parent = None;
        if let Some(req) = st.rejoin.take() {
            st.tries.retain(|t| t.0 != req);
            o.cancel_timer(Timer::Retry(req));
        }
        self.observe(o, Obs::Takeover { with_replica });
        for q in (0..8).filter(|q| fetching & (1 << q) != 0) {
            o.send(super::peer_id(q), Msg::FetchState);
        }
        if fetching == 0 {
            self.activate(st, o);
        }
    }

    /// The peers a root fetches from: its replica set (none with the `no-fetch` mutant).
    fn fetch_set(&self, st: &PeerState) -> PeerSet {
        if self.mutant(Mutant::NoFetch) {
            return 0;
        }
        self.replica_set(st)
            .into_iter()
            .fold(0, |m: PeerSet, (q, _)| m | 1 << q)
    }

    /// (Re)starts the fetch phase of this root: ask the replica set for their records.
    fn start_fetch(&self, st: &mut PeerState, o: &mut O) {
        let fetching = self.fetch_set(st);
        let Some(root) = st.root.as_mut() else { return };
        root.fetching = fetching;
        for q in (0..8).filter(|q| fetching & (1 << q) != 0) {
            o.send(super::peer_id(q), Msg::FetchState);
        }
        if fetching == 0 {
            self.activate(st, o);
        }
    }

    /// The root's lease lapsed, or a replica fenced it: it serves nothing until it has fetched
    /// again; the requests of its pending commits are held again, in order, unanswered.
    fn lose_lease(root: &mut Root) {
        let mut held: Vec<Held> = root
            .waiting
            .drain(..)
            .filter_map(|(p, _, _)| p.map(Held::Pub))
            .collect();
        held.append(&mut root.queued);
        root.queued = held;
    }

    /// A peer this fetching root awaits was declared dead: stop waiting for it.
    fn fetch_peer_dead(&self, st: &mut PeerState, x: PeerIx, o: &mut O) {
        let Some(root) = st.root.as_mut() else { return };
        if root.fetching & (1 << x) == 0 {
            return;
        }
        root.fetching &= !(1 << x);
        if root.fetching == 0 {
            self.activate(st, o);
        }
    }

    /// Ends the fetch phase: the root keeps the highest record of its own, the replies and its
    /// member view, re-replicates it to every replica, passes it down the tree (a takeover
    /// commits it again, unchanged) and serves the requests it held.
    fn activate(&self, st: &mut PeerState, o: &mut O) {
        let acks = self.replicas_of(st);
        let latest = st.latest;
        let fencing = self.s.fencing();
        let root = st.root.as_mut().expect("root");
        root.fetching = 0;
        let top = root.seen.1.max(root.st.seq);
        if let Some(l) = latest.filter(|l| l.seq > top) {
            // The tree knew more than every record: keep the higher seq.
            root.st.adopt(l);
        }
        if fencing {
            // A new term: above every epoch heard of. A record kept for its epoch whose seq is
            // below one heard of gets a seq above it, so that members take it as newer.
            root.st.epoch = root.st.epoch.max(root.seen.0) + 1;
            if top > root.st.seq {
                root.st.seq = top + 1;
            }
        }
        root.seen = (0, 0);
        let committed = root.st.entry();
        root.committed = committed;
        root.acks = acks;
        push_replication(root, ALL, o);
        if let Some(e) = committed {
            self.commit_adopted(st, e, o);
        }
        self.try_commit(st, o);
    }

    /// A peer asks for this peer's record (it is taking the root role over). A root that
    /// knows a closer live peer demotes itself first, so that everything it acknowledged is
    /// in the reply.
    pub(super) fn on_fetch_state(&self, st: &mut PeerState, src: Id, o: &mut O) {
        let from = usize::from(src) as PeerIx;
        if self.s.fencing() && self.closer(from) {
            // A closer peer runs: it is back (it may have been suspected).
            self.take_back(st, from, o);
        }
        if st.root.is_some() && self.route(st) != self.me {
            self.demote(st, o);
        }
        let rec = match &st.root {
            Some(r) => Some(r.st.clone()),
            None => st.replica.clone(),
        }
        .filter(|r| r.seq > 0);
        o.send(src, Msg::FetchReply(rec.map(|r| RootStateMsg(Arc::new(r)))));
    }

    /// A record for this fetching root: keep the highest; activate once every peer asked
    /// answered (or was declared dead).
    pub(super) fn on_fetch_reply(
        &self,
        st: &mut PeerState,
        from: PeerIx,
        rec: Option<&RootState>,
        o: &mut O,
    ) {
        let fencing = self.s.fencing();
        let Some(root) = st.root.as_mut() else { return };
        if root.fetching & (1 << from) == 0 {
            return;
        }
        if let Some(r) = rec {
            root.seen = (
                root.seen.0.max(r.epoch).max(root.st.epoch),
                root.seen.1.max(r.seq).max(root.st.seq),
            );
            let higher = if fencing {
                r.key() > root.st.key()
            } else {
                r.seq > root.st.seq
            };
            if higher {
                root.st = r.clone();
                root.committed = root.st.entry();
            }
        }
        root.fetching &= !(1 << from);
        if root.fetching == 0 {
            self.activate(st, o);
        }
    }

    /// A closer peer is responsible for the group: become an ordinary member holding the root
    /// state as its record (production's demote). Held publishes go on toward the closer peer
    /// (production loops them back into routing); held JOINs and pending commits are not
    /// answered here: their origins retransmit them. A member with subscribers or children
    /// re-JOINs toward it.
    pub(super) fn demote(&self, st: &mut PeerState, o: &mut O) {
        let Some(root) = st.root.take() else { return };
        st.replica = Some(root.st);
        st.parent = None;
        for h in root.queued {
            if let Held::Pub(p) = h {
                if p.req.origin == self.me {
                    self.forward_publish(st, p, o);
                } else {
                    o.send(
                        super::peer_id(self.route(st)),
                        Msg::PubFwd {
                            req: p.req,
                            value: p.value,
                            if_match: p.if_match,
                            expires: p.expires,
                        },
                    );
                }
            }
        }
        if !st.subs.is_empty() || st.children != 0 {
            self.start_rejoin(st, o);
        }
    }

    /// Starts a re-JOIN carrying the latest state known here.
    fn start_rejoin(&self, st: &mut PeerState, o: &mut O) {
        let req = ReqId {
            origin: self.me,
            who: self.me,
            n: st.next_n,
        };
        st.next_n += 1;
        st.rejoin = Some(req);
        o.set_timer(Timer::Retry(req), model_timeout());
        self.send_join(st, req, o);
    }

    /// Whether peer `x` is closer to the group id than this peer.
    fn closer(&self, x: PeerIx) -> bool {
        let others = !((1 << x) | (1 << self.me));
        self.s.topo.closest_live(self.s.gid, others) == Some(x)
    }

    /// This peer hears from `x`, which it declared dead, that it runs (it was only suspected):
    /// it takes it back, and its failure detector watches it again.
    fn take_back(&self, st: &mut PeerState, x: PeerIx, o: &mut O) {
        if st.dead & (1 << x) == 0 {
            return;
        }
        st.dead &= !(1 << x);
        o.set_timer(Timer::Detect(x), model_timeout());
    }

    /// The environment suspects this peer (it is paused or cut off; the others' failure
    /// detectors will report it dead). Its lease lapses before any of them does (the failure
    /// detector's timeout is longer than the lease): as a root it serves nothing more until it
    /// has fetched again.
    pub(super) fn on_suspect(&self, st: &mut PeerState, o: &mut O) {
        st.cut = true;
        self.observe(o, Obs::Suspected);
        if self.mutant(Mutant::NoLease) {
            return;
        }
        if let Some(root) = st.root.as_mut() {
            Self::lose_lease(root);
            root.fetching = 1 << self.me;
        }
    }

    /// The suspected peer runs and is reachable again. A root that lost its lease fetches its
    /// replicas' records before it serves.
    pub(super) fn on_heal(&self, st: &mut PeerState, o: &mut O) {
        st.cut = false;
        o.set_timer(Timer::Suspect, model_timeout());
        o.set_timer(Timer::Heal, model_timeout());
        if st.root.is_none() && st.parent.is_some() && (!st.subs.is_empty() || st.children != 0) {
            // Its parent may have declared it dead and dropped it, and multicasts to it were
            // lost: it re-JOINs, carrying its latest state (production: the heartbeat exchange
            // with its parent after the pause).
            st.parent = None;
            if let Some(req) = st.rejoin.take() {
                st.tries.retain(|t| t.0 != req);
                o.cancel_timer(Timer::Retry(req));
            }
            self.start_rejoin(st, o);
        }
        if st
            .root
            .as_ref()
            .is_some_and(|r| r.fetching & (1 << self.me) != 0)
        {
            self.observe(o, Obs::Refetched);
            self.start_fetch(st, o);
        }
    }

    /// This peer hears again from `x`, which it declared dead: it takes it back. A root to
    /// which `x` is closer hands the group over: it demotes and sends `x` its record.
    pub(super) fn on_alive(&self, st: &mut PeerState, x: PeerIx, o: &mut O) {
        self.take_back(st, x, o);
        o.set_timer(Timer::Alive(x), model_timeout());
        self.hand_over(st, o);
    }

    /// A root that is no longer the closest peer it knows demotes and sends its record to the
    /// closer one (which keeps it if it is higher than its own).
    fn hand_over(&self, st: &mut PeerState, o: &mut O) {
        let to = self.route(st);
        if to == self.me {
            return;
        }
        let Some(root) = st.root.as_ref() else { return };
        let rec = (root.st.seq > 0).then(|| root.st.clone());
        self.demote(st, o);
        if let Some(r) = rec {
            o.send(
                super::peer_id(to),
                Msg::Replicate(RootStateMsg(Arc::new(r))),
            );
        }
    }

    /// A replica fenced this root: it holds a record of a newer root epoch. The root goes back
    /// to the fetch phase (its pending commits' requests held again, unanswered) and activates
    /// above that record.
    pub(super) fn on_fenced(&self, st: &mut PeerState, rec: &RootState, o: &mut O) {
        let Some(root) = st.root.as_mut() else { return };
        if rec.key() <= root.st.key() {
            return;
        }
        if !root.active() {
            root.seen = (root.seen.0.max(rec.epoch), root.seen.1.max(rec.seq));
            return;
        }
        Self::lose_lease(root);
        root.seen = (rec.epoch, rec.seq.max(root.st.seq));
        root.st = rec.clone();
        root.committed = root.st.entry();
        self.start_fetch(st, o);
    }

    /// A replicate from a failed root reached its successor after the takeover. If it carries a
    /// newer state (applied by the old root, not yet committed), the new root keeps the highest
    /// seq: it adopts the state, with the old root's per-publisher results, and commits it. A
    /// root still fetching keeps it as a record like a fetched one.
    pub(super) fn late_replicate(
        &self,
        st: &mut PeerState,
        from: PeerIx,
        rs: &RootState,
        o: &mut O,
    ) {
        if self.s.fencing() && self.closer(from) {
            // A closer peer runs and acts as the root: take it back and hand the group over.
            self.take_back(st, from, o);
            self.hand_over(st, o);
            if st.root.is_none() {
                self.on_replicate(st, super::peer_id(from), rs, o);
                return;
            }
        }
        let fencing = self.s.fencing();
        let root = st.root.as_mut().expect("root");
        if fencing {
            root.seen = (root.seen.0.max(rs.epoch), root.seen.1.max(rs.seq));
        }
        let higher = if fencing {
            rs.key() > root.st.key()
        } else {
            rs.seq > root.st.seq
        };
        if !higher {
            return;
        }
        root.st = rs.clone();
        let entry = rs.entry().expect("newer entry");
        root.committed = Some(entry);
        if !root.active() {
            return;
        }
        push_replication(root, ALL, o);
        self.commit_adopted(st, entry, o);
    }
}
