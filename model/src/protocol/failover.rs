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
use super::{
    Held, Msg, Obs, PeerState, Replica, ReqId, Root, RootState, RootStateMsg, Timer, MAX_ROUNDS,
};
use crate::mutant::Mutant;
use crate::topology::{PeerIx, PeerSet};
use stateright::actor::{model_timeout, Id};
use std::sync::Arc;

impl Ctx<'_> {
    /// The failure detector reports `x` crashed.
    pub(super) fn on_detect(&self, st: &mut PeerState, x: PeerIx, o: &mut O) {
        st.dead |= 1 << x;
        if st.leased.is_some_and(|l| l.0 == x) {
            // (The failure detector's timeout is longer than any lease.)
            st.leased = None;
        }
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
        } else if st.parent == Some(x) && st.subs.is_empty() && st.children == 0 {
            // An orphan that no longer needs the group (its subscribers and children gone)
            // leaves the tree rather than re-JOINing (production re-JOINs only with interest).
            st.parent = None;
        } else if st.parent == Some(x) {
            self.rejoin(st, o);
        }
        // A peer whose last child died no longer needs the group: it leaves the tree (and
        // drops a re-JOIN it had pending), as production does.
        self.prune(st, o);
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
                if fresh != 0 && self.s.fencing() {
                    // A peer that never confirmed this root's lease entered its replica set:
                    // the lease no longer holds, and it fetches again from the new set
                    // (production `root_replicas_changed`).
                    self.reconfirm(st, o);
                    return;
                }
                push_replication(root, fresh, o);
                self.try_commit(st, o);
            }
        }
    }

    /// An orphan (its parent gone) re-JOINs, carrying its latest state.
    pub(super) fn rejoin(&self, st: &mut PeerState, o: &mut O) {
        st.parent = None;
        if self.mutant(Mutant::RejoinViaChild) && st.children != 0 {
            st.parent = Some(st.children.trailing_zeros() as PeerIx);
        }
        self.start_rejoin(st, o);
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
        st.root = Some(Root {
            st: rs,
            committed,
            waiting: Vec::new(),
            acks: Vec::new(),
            queued: Vec::new(),
            fetching: 0,
            asked: 0,
            seen: (0, 0),
            epoch: 0,
            rival: false,
            busy: 0,
            rounds: 0,
            base: None,
        });
        // It leaves its parent (which keeps the branch without tree maintenance).
        self.leave_parent(st, o);
        if let Some(req) = st.rejoin.take() {
            st.tries.retain(|t| t.0 != req);
            o.cancel_timer(Timer::Retry(req));
        }
        self.observe(o, Obs::Takeover { with_replica });
        self.start_fetch(st, o);
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

    /// (Re)starts the fetch phase of this root: ask the replica set for their records. With
    /// suspicions it is a promise round: the root takes an epoch above every one it knows.
    fn start_fetch(&self, st: &mut PeerState, o: &mut O) {
        let fetching = self.fetch_set(st);
        // Above every epoch this peer knows, and above one per closer peer it declared dead:
        // each may have been the group's root before it, in an epoch it never heard of (a
        // REPLICATE of the first root lost, say), and a late record of that root must not tie
        // with this one's (production `start_fetch`). Joiners this peer never heard of are
        // not counted (production holds no tombstone for them); one it took in and then
        // declared dead is.
        let epoch = if self.s.epochs() {
            let dead = st.dead & !st.strangers;
            let floor = 1 + self.s.topo.closer_dead(self.me, self.s.gid, dead);
            known_epoch(st).saturating_add(1).max(floor)
        } else {
            0
        };
        let Some(root) = st.root.as_mut() else { return };
        root.fetching = fetching;
        root.asked = fetching;
        root.epoch = epoch;
        root.rival = false;
        root.busy = 0;
        for q in (0..8).filter(|q| fetching & (1 << q) != 0) {
            o.send(super::peer_id(q), Msg::FetchState(epoch));
        }
        if fetching == 0 {
            self.activate(st, o);
        }
    }

    /// Every peer asked answered or was declared dead: start over above a refused promise
    /// (a rival root) or a record of an epoch above this round's (a restarted peer, which
    /// knew no epoch, fetched the record of the root that served meanwhile: its commits
    /// would be ordered below that record), a few times, or serve.
    fn fetch_done(&self, st: &mut PeerState, o: &mut O) {
        let behind = self.s.epochs();
        let Some(root) = st.root.as_mut() else { return };
        let behind = behind && root.seen.0 > root.epoch;
        // A root that serves after MAX_ROUNDS refusals keeps `rival`: it holds no lease, and
        // answers nothing until a new round is granted (production's `lease_holds`).
        if (root.rival || behind) && root.rounds < MAX_ROUNDS {
            root.rounds += 1;
            self.start_fetch(st, o);
        } else {
            self.activate(st, o);
        }
    }

    /// The root's lease lapsed while it served (a peer it declared dead is back, a replica
    /// fenced it): unless a closer peer is known, it holds its pending requests again and
    /// fetches before it serves (production `reconfirm`); otherwise it demotes.
    fn reconfirm(&self, st: &mut PeerState, o: &mut O) {
        if self.route(st) != self.me {
            self.demote(st, o);
            return;
        }
        let Some(root) = st.root.as_mut() else { return };
        Self::lose_lease(root);
        self.start_fetch(st, o);
    }

    /// The root's periodic tick ([`Timer::Resend`]). A root that serves without a lease (its
    /// last rounds were refused: `rival`) and holds requests starts another promise round
    /// (production: `drain_queue` finds no lease and calls `reconfirm`, on every request and
    /// tick, for as long as requests wait). The checker enables it only when every replica it
    /// reaches would grant the round now (see `SaScribe::resend_useful`): production's retries
    /// in between are refused and change nothing, and bounding them so keeps the state graph
    /// finite (each round raises the root's epoch). Otherwise the tick resends the root's
    /// REPLICATE, or a fetching root's FetchState.
    pub(super) fn on_tick(&self, st: &mut PeerState, o: &mut O) {
        let idle = self.mutant(Mutant::LeaselessIdle);
        if st.root.as_ref().is_some_and(Root::leaseless_with_held) && !idle {
            o.set_timer(Timer::Resend, model_timeout());
            self.reconfirm(st, o);
        } else {
            super::publish::on_resend(st, self.me, o);
        }
    }

    /// The root's lease lapsed, or a replica fenced it: it serves nothing until it has fetched
    /// again; the requests of its pending commits are held again, in order, unanswered.
    fn lose_lease(root: &mut Root) {
        if let Some(base) = root.base.take() {
            root.st = base;
        }
        let mut held: Vec<Held> = root
            .waiting
            .drain(..)
            .filter_map(|(p, _, _)| p.map(Held::Pub))
            .collect();
        held.append(&mut root.queued);
        root.queued = held;
    }

    /// A peer this fetching root awaits was declared dead: stop waiting for it. It counts as
    /// not asked: should it be taken back into the replica set while the round lasts, the
    /// round asks it again (its grant, or its record), rather than serve beside a replica it
    /// never heard from (production `fetch_peer_dead`, whose lease needs every replica's
    /// grant).
    fn fetch_peer_dead(&self, st: &mut PeerState, x: PeerIx, o: &mut O) {
        let Some(root) = st.root.as_mut() else { return };
        if root.fetching & (1 << x) == 0 {
            return;
        }
        root.fetching &= !(1 << x);
        root.asked &= !(1 << x);
        self.fetch_progress(st, o);
    }

    /// A fetching root asks the peers of its replica set it has not asked in this round (the
    /// next nearest takes the place of one that died), and ends the round once it awaits
    /// nobody (production `fetch_progress`).
    fn fetch_progress(&self, st: &mut PeerState, o: &mut O) {
        let set = self.fetch_set(st);
        let Some(root) = st.root.as_mut() else { return };
        let new = set & !root.asked;
        root.asked |= new;
        root.fetching |= new;
        for q in (0..8).filter(|q| new & (1 << q) != 0) {
            o.send(super::peer_id(q), Msg::FetchState(root.epoch));
        }
        if root.fetching == 0 {
            self.fetch_done(st, o);
        }
    }

    /// Ends the fetch phase: the root keeps the highest record of its own, the replies and its
    /// member view, re-replicates it to every replica, passes it down the tree (a takeover
    /// commits it again, unchanged) and serves the requests it held.
    fn activate(&self, st: &mut PeerState, o: &mut O) {
        let acks = self.replicas_of(st);
        let latest = st.latest;
        let epochs = self.s.epochs();
        let root = st.root.as_mut().expect("root");
        root.fetching = 0;
        root.rounds = 0;
        let top = root.seen.1.max(root.st.seq);
        if let Some(l) = latest.filter(|l| l.seq > top) {
            // The tree knew more than every record: keep the higher seq.
            root.st.adopt(l);
        }
        if epochs && top > root.st.seq {
            // A record kept for its epoch whose seq is below one heard of gets a seq above
            // it, so that members take it as newer. (The record's epoch stays: only a commit
            // stamps one, so a root that could not commit wins nothing by fetching again.)
            root.st.seq = top + 1;
        }
        // What the round heard of is spent, except an epoch above the root's own (a round
        // that served after [`MAX_ROUNDS`] refusals): the next round must start above it.
        let above = if root.seen.0 > root.epoch {
            root.seen.0
        } else {
            0
        };
        root.seen = (above, 0);
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
    pub(super) fn on_fetch_state(&self, st: &mut PeerState, src: Id, epoch: u8, o: &mut O) {
        let from = usize::from(src) as PeerIx;
        let fencing = self.s.fencing();
        if fencing && self.closer(from) {
            // A closer peer runs: it is back (it may have been suspected, or restarted).
            // Production takes a closer peer it declared dead back on its own fetch, as on its
            // announcement (`Peer::dispatch`, with leases).
            self.take_back(st, from, o);
        }
        // It hands its record over too (production's `demote`), though the reply carries it.
        self.hand_over(st, o);
        // The promise: refuse records of a lower epoch from now on, unless another root was
        // promised as much already, or a peer closer to the group than the asking one runs
        // (as far as this one knows): the asker then cannot hold its lease here. (It is not
        // told which peer: one it declared dead would flap between handing over and taking
        // over again, for as long as this peer has not noticed the death.)
        let promised = if fencing { known_epoch(st) } else { 0 };
        let closer = self.s.topo.closer_than(self.me, from, self.s.gid, st.dead);
        let closer = closer.filter(|_| fencing);
        // A lease this peer confirms for another root may still run: that root may answer
        // a JOIN from its record until it lapses, so no newer root may commit past it yet.
        let busy = super::publish::busy(st, from);
        if fencing && closer.is_none() && busy && !self.mutant(Mutant::LeaseIgnored) {
            o.send(src, Msg::FetchBusy(epoch));
            return;
        }
        let granted = !fencing
            || (closer.is_none() && (epoch > promised || st.promised == (epoch, Some(from))));
        if fencing && granted {
            st.promised = (epoch, Some(from));
            self.confirm(st, from, epoch, o);
        }
        let rec = match &st.root {
            Some(r) => Some(r.st.clone()),
            None => st.replica.clone(),
        }
        .filter(|r| r.seq > 0);
        o.send(
            src,
            Msg::FetchReply {
                epoch,
                rec: rec.map(|r| RootStateMsg(Arc::new(r))),
                promised,
                granted,
            },
        );
    }

    /// A peer of this fetching root's round confirms another root's lease: keep awaiting it,
    /// and ask it again later ([`Timer::Reask`]).
    pub(super) fn on_fetch_busy(&self, st: &mut PeerState, from: PeerIx, epoch: u8) {
        let Some(root) = st.root.as_mut() else { return };
        if root.fetching & (1 << from) == 0 || epoch != root.epoch {
            return;
        }
        // Asked again by [`Timer::Reask`], armed at every peer from the start and re-armed
        // whenever it fires (so that a lost re-ask is asked again, as production's fetch
        // timer asks the peers it still awaits, busy or silent); it is enabled only while
        // the root awaits `from` in a round it answered busy, with nothing in flight.
        root.busy |= 1 << from;
    }

    /// The fetch timer, once the lease peer `q` (which answered busy) confirmed lapsed: asks
    /// every peer of the round it still awaits again for its record and promise (production's
    /// `fetch_timeout`).
    pub(super) fn reask(&self, st: &mut PeerState, q: PeerIx, o: &mut O) {
        // Re-armed at once: armed at every peer for good (see `on_fetch_busy`).
        o.set_timer(Timer::Reask(q), model_timeout());
        let Some(root) = st.root.as_ref() else { return };
        if root.fetching & root.busy & (1 << q) != 0 {
            for p in (0..8).filter(|p| root.fetching & (1 << p) != 0) {
                o.send(super::peer_id(p), Msg::FetchState(root.epoch));
            }
        }
    }

    /// A record for this fetching root: keep the highest; activate once every peer asked
    /// answered (or was declared dead).
    pub(super) fn on_fetch_reply(
        &self,
        st: &mut PeerState,
        from: PeerIx,
        rec: Option<&RootState>,
        (epoch, promised, granted): (u8, u8, bool),
        o: &mut O,
    ) {
        let fencing = self.s.fencing();
        let Some(root) = st.root.as_mut() else { return };
        if root.fetching & (1 << from) == 0 || epoch != root.epoch {
            return;
        }
        if fencing {
            root.seen.0 = root.seen.0.max(promised);
            root.rival |= !granted;
        }
        if let Some(r) = rec {
            root.seen = (
                root.seen.0.max(r.epoch).max(root.st.epoch),
                root.seen.1.max(r.seq).max(root.st.seq),
            );
            let higher = if self.s.epochs() {
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
        self.fetch_progress(st, o);
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
        if !st.subs.is_empty() || st.children != 0 {
            self.start_rejoin(st, o);
        }
        // The requests it held go on to the new root, those of changes applied but not
        // committed first (the new root has their record, and answers a retransmission from
        // it): publications along the route, JOINs up the tree with this peer on their
        // reverse path, as an intermediate forwards them (production `demote`).
        let uncommitted = root
            .waiting
            .into_iter()
            .filter_map(|(p, ..)| p.map(Held::Pub));
        for h in uncommitted.chain(root.queued) {
            match h {
                Held::Pub(p) if p.req.origin == self.me => self.forward_publish(st, p, o),
                Held::Pub(p) => o.send(
                    super::peer_id(self.route(st)),
                    Msg::PubFwd {
                        req: p.req,
                        value: p.value,
                        if_match: p.if_match,
                        expires: p.expires,
                    },
                ),
                Held::Join { req, path, carried } => {
                    let hop = match st.parent {
                        Some(p) if st.dead & (1 << p) == 0 => p,
                        _ => self.route(st),
                    };
                    st.parent = Some(hop);
                    if let Some(path) = path.push(self.me) {
                        let carried = super::state::newer(carried, st.latest);
                        o.send(super::peer_id(hop), Msg::Join { req, path, carried });
                    }
                }
            }
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

    /// This peer confirms root `root`'s lease (it granted its fetch, or acknowledged its
    /// REPLICATE): it promises no other root anything until the lease lapses.
    pub(super) fn confirm(&self, st: &mut PeerState, root: PeerIx, epoch: u8, o: &mut O) {
        st.leased = Some((root, epoch));
        o.set_timer(Timer::Lapse, model_timeout());
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
        st.strangers &= !(1 << x);
        o.set_timer(Timer::Detect(x), model_timeout());
    }

    /// The environment suspects this peer (it is paused or cut off; the others' failure
    /// detectors will report it dead). Its lease lapses before any of them does (the failure
    /// detector's timeout is longer than the lease): as a root it serves nothing more until it
    /// has fetched again.
    pub(super) fn on_suspect(&self, st: &mut PeerState, o: &mut O) {
        st.cut = true;
        // Whatever lease it confirmed lapses meanwhile.
        st.leased = None;
        self.observe(o, Obs::Suspected);
        if self.mutant(Mutant::NoLease) {
            return;
        }
        if self.s.partition {
            // It runs on, alone: its lease lapses (its replicas no longer confirm it) and it
            // fetches again, from peers it can no longer reach; its failure detector declares
            // every other peer dead (abstraction: at once, which only orders the detections
            // first among its steps), so it serves, but commits nothing without a quorum.
            if st.root.as_ref().is_some_and(|r| r.active()) {
                self.reconfirm(st, o);
            }
            for x in (0..self.s.peers() as PeerIx).filter(|&x| x != self.me) {
                if st.dead & (1 << x) == 0 {
                    self.on_detect(st, x, o);
                }
            }
        } else if let Some(root) = st.root.as_mut() {
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
    /// which `x` is closer hands the group over: it demotes and sends `x` its record. A root
    /// that stays root fetches again, which also puts `x` back in its replica set if it is
    /// among the k nearest (`x` may have restarted or joined with nothing).
    pub(super) fn on_alive(&self, st: &mut PeerState, x: PeerIx, o: &mut O) {
        self.take_back(st, x, o);
        o.set_timer(Timer::Alive(x), model_timeout());
        self.hand_over(st, o);
        // A root still: another root may have served on the other side; its lease lapses
        // and it fetches again (production `on_peer_revived`).
        if st.root.as_ref().is_some_and(|r| r.active()) {
            self.reconfirm(st, o);
        }
    }

    /// A replica knows `closer`, a peer closer to the group than this root: hand the group
    /// over if routing agrees (production `on_not_root`). A peer this one declared dead is not
    /// taken back on the replica's word: only its own announcement brings it back
    /// (`on_alive`), as production's overlay ignores second-hand news of a dead peer, and of
    /// a peer that joined and that it never heard of.
    pub(super) fn on_not_root(&self, st: &mut PeerState, _closer: PeerIx, o: &mut O) {
        if st.root.is_none() {
            return;
        }
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
        let epoch = root.epoch;
        self.demote(st, o);
        if self.s.rejoins() > 0 {
            self.observe(o, Obs::HandedToCloser);
        }
        if let Some(r) = rec {
            o.send(
                super::peer_id(to),
                Msg::Replicate(RootStateMsg(Arc::new(r)), epoch),
            );
        }
    }

    /// A replica fenced this root: it holds a record of a newer root epoch. The root goes back
    /// to the fetch phase (its pending commits' requests held again, unanswered) and activates
    /// above that record.
    pub(super) fn on_fenced(
        &self,
        st: &mut PeerState,
        rec: Option<&RootState>,
        (epoch, refused): (u8, u8),
        o: &mut O,
    ) {
        let Some(root) = st.root.as_mut() else { return };
        if refused != root.epoch {
            return; // about a REPLICATE of an earlier epoch of ours
        }
        root.seen.0 = root.seen.0.max(epoch);
        Self::lose_lease(root);
        if let Some(r) = rec {
            root.seen = (root.seen.0.max(r.epoch), root.seen.1.max(r.seq));
            if r.key() > root.st.key() {
                root.st = r.clone();
                root.committed = root.st.entry();
            }
        }
        self.reconfirm(st, o);
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
        epoch: u8,
        o: &mut O,
    ) {
        if self.s.fencing() && self.closer(from) && st.dead & (1 << from) == 0 {
            // A closer peer runs and acts as the root: hand the group over. (One declared
            // dead is not taken back on a REPLICATE, which may have been sent before it
            // crashed: only on its announcement, `on_alive`, as production's overlay.)
            self.hand_over(st, o);
            if st.root.is_none() {
                self.on_replicate(st, super::peer_id(from), rs, epoch, o);
                return;
            }
        }
        let fencing = self.s.fencing();
        let epochs = self.s.epochs();
        let root = st.root.as_mut().expect("root");
        if fencing {
            root.seen = (root.seen.0.max(rs.epoch), root.seen.1.max(rs.seq));
        }
        let higher = if epochs {
            rs.key() > root.st.key()
        } else {
            rs.seq > root.st.seq
        };
        if !higher {
            return;
        }
        if epochs && epoch > root.epoch {
            // A root of a newer epoch committed past this one (a partition or a pause made
            // two roots; a root handed the group over to this restarted peer, which fetched
            // first): keep its record, then fetch again, above its epoch, or step down,
            // before serving (production `replicate`).
            if fencing {
                Self::lose_lease(root);
            }
            root.st = rs.clone();
            root.committed = root.st.entry();
            self.reconfirm(st, o);
            return;
        }
        root.st = rs.clone();
        root.base = None;
        let entry = rs.entry().expect("newer entry");
        root.committed = Some(entry);
        if !root.active() {
            return;
        }
        push_replication(root, ALL, o);
        self.commit_adopted(st, entry, o);
    }
}

/// The highest root epoch peer `st` knows for the group: of its records, of the promise it
/// made, and of its root role (production `Group::known_epoch`).
pub(super) fn known_epoch(st: &PeerState) -> u8 {
    let rec = st.replica.as_ref().map_or(0, |r| r.epoch);
    let role = st
        .root
        .as_ref()
        .map_or(0, |r| r.st.epoch.max(r.seen.0).max(r.epoch));
    rec.max(st.promised.0).max(role)
}
