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
        let fetching = self
            .replica_set(st)
            .into_iter()
            .fold(0, |m: PeerSet, (q, _)| m | 1 << q);
        st.root = Some(Root {
            st: rs,
            committed,
            waiting: Vec::new(),
            acks: Vec::new(),
            queued: Vec::new(),
            fetching,
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
        let root = st.root.as_mut().expect("root");
        root.fetching = 0;
        if let Some(l) = latest.filter(|l| l.seq > root.st.seq) {
            // The tree knew more than the records: keep the higher seq.
            root.st.adopt(l);
        }
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
        let Some(root) = st.root.as_mut() else { return };
        if root.fetching & (1 << from) == 0 {
            return;
        }
        if let Some(r) = rec.filter(|r| r.seq > root.st.seq) {
            root.st = r.clone();
            root.committed = root.st.entry();
        }
        root.fetching &= !(1 << from);
        if root.fetching == 0 {
            self.activate(st, o);
        }
    }

    /// A closer peer is responsible for the group: hand the held requests on (toward the
    /// group id, as production loops them back into routing) and become an ordinary member
    /// holding the root state as its record.
    pub(super) fn demote(&self, st: &mut PeerState, o: &mut O) {
        let Some(root) = st.root.take() else { return };
        st.replica = Some(root.st);
        for h in root.queued {
            match h {
                Held::Pub(p) => {
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
                Held::Join { req, path, carried } => match path.last() {
                    None => self.send_join(st, req, o),
                    Some(_) => {
                        o.send(
                            super::peer_id(self.route(st)),
                            Msg::Join {
                                req,
                                path: path.push(self.me).unwrap_or(path),
                                carried,
                            },
                        );
                    }
                },
            }
        }
        // A pending commit's requests get no answer here: their origins retransmit.
    }

    /// A replicate from a failed root reached its successor after the takeover. If it carries a
    /// newer state (applied by the old root, not yet committed), the new root keeps the highest
    /// seq: it adopts the state, with the old root's per-publisher results, and commits it. A
    /// root still fetching keeps it as a record like a fetched one.
    pub(super) fn late_replicate(&self, st: &mut PeerState, rs: &RootState, o: &mut O) {
        let root = st.root.as_mut().expect("root");
        if rs.seq <= root.st.seq {
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
