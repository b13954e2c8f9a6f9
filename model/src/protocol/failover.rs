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
use super::{Obs, PeerState, Replica, ReqId, Root, RootState, Timer};
use crate::mutant::Mutant;
use crate::topology::{PeerIx, PeerSet};
use stateright::actor::model_timeout;

impl Ctx<'_> {
    /// The failure detector reports `x` crashed.
    pub(super) fn on_detect(&self, st: &mut PeerState, x: PeerIx, o: &mut O) {
        st.dead |= 1 << x;
        st.children &= !(1 << x);
        if st.root.is_none() && self.route(st) == self.me {
            self.take_over(st, o);
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
        if let Some(root) = st.root.as_mut() {
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

    /// This peer is now the closest live peer to the group id: it becomes the root with the
    /// replicated state (or whatever it knows as a tree member), treats it as committed,
    /// re-replicates it and passes it down the tree.
    fn take_over(&self, st: &mut PeerState, o: &mut O) {
        let with_replica = st.replica.is_some();
        let mut rs = st.replica.take().unwrap_or_default();
        if let Some(l) = st.latest.filter(|l| l.seq > rs.seq) {
            // The tree knew more than the replica: keep the higher seq.
            rs.adopt(l);
        }
        let committed = rs.entry();
        let mut root = Root {
            st: rs,
            committed,
            waiting: Vec::new(),
            acks: self.replicas_of(st),
            queued: Vec::new(),
        };
        push_replication(&mut root, ALL, o);
        st.root = Some(root);
        st.parent = None;
        if let Some(req) = st.rejoin.take() {
            o.cancel_timer(Timer::Retry(req));
        }
        self.observe(o, Obs::Takeover { with_replica });
        if let Some(e) = committed {
            self.commit_adopted(st, e, o);
        }
    }

    /// A replicate from a failed root reached its successor after the takeover. If it carries a
    /// newer state (applied by the old root, not yet committed), the new root keeps the highest
    /// seq: it adopts the state, with the old root's per-publisher results, and commits it.
    pub(super) fn late_replicate(&self, st: &mut PeerState, rs: &RootState, o: &mut O) {
        let root = st.root.as_mut().expect("root");
        if rs.seq <= root.st.seq {
            return;
        }
        root.st = rs.clone();
        let entry = rs.entry().expect("newer entry");
        root.committed = Some(entry);
        push_replication(root, ALL, o);
        self.commit_adopted(st, entry, o);
    }
}
