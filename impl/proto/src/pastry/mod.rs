//! Pastry: prefix routing over the 128-bit ring (`b = 4`), leaf set, join through a bootstrap
//! peer, keep-alive failure detection, and leaf-set / routing-table repair.
//!
//! Routing of a key: if the leaf set spans the key, deliver to the numerically closest of the
//! leaf set and this peer; otherwise forward to the routing-table entry sharing one more digit
//! with the key; otherwise (rare case) to any known peer that shares at least as long a prefix
//! and is numerically closer; otherwise deliver here.

#[cfg(feature = "harness")]
mod explicit;
pub mod leaf_set;
pub mod routing_table;

#[cfg(feature = "harness")]
pub use explicit::ExplicitTable;

use crate::config::Config;
use crate::id::{closer, digit, shared_prefix_len, NodeId};
use crate::io::Outbox;
use crate::rng::SplitMix64;
use crate::wire::{Msg, NodeHandle, PastryMsg};
use crate::Millis;
use leaf_set::LeafSet;
use routing_table::RoutingTable;
use std::net::SocketAddr;

/// Most peers remembered as dead at once.
pub const MAX_TOMBSTONES: usize = 256;

/// A known peer and when it was last heard from.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    /// The peer.
    pub handle: NodeHandle,
    /// Last time any datagram from it arrived.
    pub last_heard: Millis,
}

/// Routing decision for a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hop {
    /// This peer is responsible for the key.
    Local,
    /// Forward to this peer.
    Next(NodeHandle),
}

/// The Pastry state of one peer.
#[derive(Clone, Debug)]
pub struct Overlay {
    me: NodeHandle,
    /// Leaf set.
    pub leaf: LeafSet,
    /// Routing table.
    pub rt: RoutingTable,
    /// Peers declared dead: ignored when learnt second-hand, probed now and then so that a
    /// healed partition or a restarted peer is found again; forgotten at the deadline.
    /// `(peer, forget at, not probed)`: peers that left, and peers declared dead before this
    /// one knew them (their address unknown), are neither probed nor counted until someone
    /// vouches for them ([`Overlay::vouched`]): they come back by announcing a new join, or
    /// by answering a probe that a sign of life from them (a message, a third peer's leaf
    /// set) set off — an announcement can be lost, or reach too few peers.
    tombstones: Vec<(NodeHandle, Millis, bool)>,
    next_probe: Millis,
    bootstrap: Option<(SocketAddr, Millis)>,
    next_tick: Millis,
    /// When the keep-alive tick last ran (a much longer gap means this peer was paused).
    last_tick: Millis,
    next_exchange: Millis,
    scratch: Vec<NodeHandle>,
    /// Peers declared dead that proved alive since the caller last looked
    /// ([`Overlay::take_revived`]).
    revived: Vec<NodeId>,
    /// The longest a tick found this peer had not run since the caller last looked
    /// ([`Overlay::take_paused`]; 0: no pause).
    paused: Millis,
    /// The last hop of this peer's join (the sender of its last `JoinState`): the one peer
    /// whose [`PastryMsg::Suspects`] it takes once joined.
    last_hop: Option<NodeId>,
    /// Routing table loaded by a driver in place of the learnt one (see [`ExplicitTable`]).
    #[cfg(feature = "harness")]
    explicit: Option<ExplicitTable>,
}

impl Overlay {
    pub(crate) fn new(me: NodeHandle, cfg: &Config, now: Millis) -> Self {
        Overlay {
            me,
            leaf: LeafSet::new(me.id, cfg.leaf_set_size),
            rt: RoutingTable::new(me.id),
            tombstones: Vec::new(),
            bootstrap: None,
            next_tick: now + cfg.keepalive_interval,
            last_tick: now,
            revived: Vec::new(),
            paused: 0,
            last_hop: None,
            next_exchange: now + cfg.leaf_exchange_interval,
            next_probe: now + cfg.dead_probe_interval,
            scratch: Vec::new(),
            #[cfg(feature = "harness")]
            explicit: None,
        }
    }

    /// Next hop for `key`, never choosing `exclude`.
    pub fn route(&self, key: u128, exclude: Option<NodeId>) -> Hop {
        if self.leaf.covers(key) {
            return match self.leaf.closest(key, exclude) {
                Some(h) => Hop::Next(h),
                None => Hop::Local,
            };
        }
        #[cfg(feature = "harness")]
        if let Some(t) = &self.explicit {
            return self.route_explicit(t, key, exclude);
        }
        let l = shared_prefix_len(self.me.id.0, key);
        if l < crate::id::DIGITS {
            if let Some(e) = self.rt.get(l, digit(key, l)) {
                if Some(e.handle.id) != exclude {
                    return Hop::Next(e.handle);
                }
            }
        }
        // Rare case: any known peer with at least as long a prefix that is numerically closer.
        let mut best: Option<NodeHandle> = None;
        let mut best_id = self.me.id.0;
        for e in self.leaf.iter().chain(self.rt.iter()) {
            let id = e.handle.id;
            if Some(id) == exclude || shared_prefix_len(id.0, key) < l {
                continue;
            }
            if closer(key, id.0, best_id) {
                best_id = id.0;
                best = Some(e.handle);
            }
        }
        match best {
            Some(h) => Hop::Next(h),
            None => Hop::Local,
        }
    }

    /// The `k` leaf-set peers closest to `key` (replica set of a group rooted here).
    pub fn nearest_leaves(&self, key: u128, k: usize, out: &mut Vec<NodeHandle>) {
        self.leaf.nearest_to(key, k, out);
    }

    /// How many peers declared dead (and not yet forgotten) are closer to `key` than this
    /// one: the roots that may have served `key`'s group before it.
    pub fn dead_closer(&self, key: u128) -> u64 {
        let me = self.me.id.0;
        self.tombstones
            .iter()
            .filter(|t| crate::id::closer(key, t.0.id.0, me))
            .count() as u64
    }

    pub(crate) fn tombstoned(&self, id: NodeId) -> bool {
        self.tombstones.iter().any(|t| t.0.id == id)
    }

    /// Adds a tombstone for `h` until `now` + the tombstone TTL (`unprobed`: neither probed
    /// nor counted until vouched for), the oldest making room when [`MAX_TOMBSTONES`] are kept.
    fn entomb(&mut self, h: NodeHandle, now: Millis, unprobed: bool, cfg: &Config) {
        if self.tombstones.len() >= MAX_TOMBSTONES {
            self.tombstones.remove(0);
        }
        self.tombstones.push((h, now + cfg.tombstone_ttl, unprobed));
    }

    /// A peer we buried shows signs of life that do not prove it alive now (a message that
    /// may be old, another peer's word): probe it with the peers declared dead, whose answer
    /// does prove it. A peer that left and rejoined is found again this way even when its
    /// announcement to us was lost or never sent (it learnt of us after announcing).
    pub(crate) fn vouched(&mut self, h: &NodeHandle) {
        if let Some(t) = self.tombstones.iter_mut().find(|t| t.0.id == h.id) {
            t.0 = *h;
            t.2 = false;
        }
    }

    /// Adds a peer to the leaf set and/or routing table where it fits. Second-hand knowledge
    /// (`direct == false`) of a peer recently declared dead is ignored.
    pub(crate) fn consider(&mut self, h: NodeHandle, direct: bool, now: Millis) -> bool {
        if h.id == self.me.id {
            return false;
        }
        if self.tombstoned(h.id) {
            if !direct {
                self.vouched(&h);
                return false;
            }
            self.tombstones.retain(|t| t.0.id != h.id);
            self.revived.push(h.id);
        }
        // A peer heard from directly goes back into the explicit table's slots it was
        // removed from: declared dead, or not in the overlay yet when the table was loaded.
        #[cfg(feature = "harness")]
        if let Some(t) = self.explicit.as_mut().filter(|_| direct) {
            t.revive(h);
        }
        let a = self.leaf.insert(h, now);
        let b = self.rt.insert_learnt(h, now, direct);
        a || b
    }

    /// Every datagram refreshes its sender's liveness and teaches us about it.
    /// A peer declared dead or that left is only taken back on proof that it is alive *now*:
    /// it announces a new join, or answers our probe (`alive_now`). A datagram it sent before
    /// it crashed, delivered late, does not bring it back.
    pub(crate) fn heard_from(
        &mut self,
        from: &NodeHandle,
        ready: bool,
        alive_now: bool,
        now: Millis,
    ) {
        if !ready || from.id == self.me.id {
            return;
        }
        let in_leaf = self.leaf.touch(from.id, now);
        let slot_filled = self.rt.touch(from.id, now);
        if in_leaf && slot_filled {
            return; // the common case: nothing to learn
        }
        if !alive_now && self.tombstoned(from.id) {
            self.vouched(from);
            return;
        }
        if slot_filled && !in_leaf && !self.leaf.would_insert(from.id) && !self.tombstoned(from.id)
        {
            return; // `consider` would change nothing
        }
        self.consider(*from, true, now);
    }

    /// Starts joining through `via`.
    pub(crate) fn bootstrap(
        &mut self,
        now: Millis,
        via: SocketAddr,
        cfg: &Config,
        out: &mut Outbox,
    ) {
        out.ready = false;
        self.bootstrap = Some((via, now + cfg.bootstrap_retry));
        out.send_addr(via, Self::join_msg(self.me));
    }

    fn join_msg(me: NodeHandle) -> Msg {
        Msg::Routed {
            key: me.id.0,
            hops: 0,
            body: crate::wire::Routed::OverlayJoin { joiner: me },
        }
    }

    /// Installs routing state computed by the driver (static overlays) and marks the peer ready.
    pub(crate) fn install(&mut self, now: Millis, peers: &[NodeHandle], out: &mut Outbox) {
        for h in peers {
            self.consider(*h, true, now);
        }
        self.bootstrap = None;
        out.ready = true;
    }

    /// Entries a joining peer gets from this hop: rows `0..=l` (l = shared prefix with the
    /// joiner), plus the leaf set when this is the last hop.
    pub(crate) fn join_state_for(&self, joiner: NodeId, last: bool) -> Vec<NodeHandle> {
        let l = shared_prefix_len(self.me.id.0, joiner.0);
        let mut v: Vec<NodeHandle> = (0..=l)
            .flat_map(|r| self.rt.row(r).map(|e| e.handle))
            .collect();
        if last {
            v.extend(self.leaf.iter().map(|e| e.handle));
        }
        v
    }

    /// Handles an overlay maintenance message. Returns `true` when this completed our join.
    pub(crate) fn handle(
        &mut self,
        now: Millis,
        from: NodeHandle,
        msg: &PastryMsg,
        cfg: &Config,
        out: &mut Outbox,
    ) -> bool {
        match msg {
            PastryMsg::Ping => out.send(&from, PastryMsg::Pong),
            PastryMsg::Pong => {}
            PastryMsg::Announce => {
                // Tell the newcomer whom we know: concurrent joiners learn of each other.
                let leaves = self.leaf.iter().map(|e| e.handle).collect();
                out.send(&from, PastryMsg::LeafSetReply { leaves });
            }
            PastryMsg::Departing => self.forget(now, from, true, cfg, out),
            PastryMsg::LeafSetRequest => {
                let leaves = self.leaf.iter().map(|e| e.handle).collect();
                out.send(&from, PastryMsg::LeafSetReply { leaves });
            }
            PastryMsg::LeafSetReply { leaves } => {
                for h in leaves {
                    self.consider(*h, false, now);
                }
            }
            PastryMsg::RowRequest { row } => {
                let entries = self.rt.row(*row as usize).map(|e| e.handle).collect();
                out.send(&from, PastryMsg::RowReply { entries });
            }
            PastryMsg::RowReply { entries } => {
                for h in entries {
                    self.consider(*h, false, now);
                }
            }
            PastryMsg::Suspects { peers } => {
                // From the last hop of this peer's join (possibly ahead of its JoinState):
                // a peer that did not answer the join cannot have this one probe addresses.
                if self.bootstrap.is_some() || self.last_hop == Some(from.id) {
                    self.suspect(now, peers, cfg, out);
                }
            }
            PastryMsg::JoinState { entries, last } => {
                if self.bootstrap.is_none() {
                    return false;
                }
                self.consider(from, true, now);
                for h in entries {
                    self.consider(*h, false, now);
                }
                if *last {
                    self.bootstrap = None;
                    self.last_hop = Some(from.id);
                    out.ready = true;
                    let mut targets: Vec<NodeHandle> = self
                        .leaf
                        .iter()
                        .chain(self.rt.iter())
                        .map(|e| e.handle)
                        .collect();
                    targets.sort_by_key(|h| h.id);
                    targets.dedup_by_key(|h| h.id);
                    out.send_many(targets.iter(), PastryMsg::Announce);
                    return true;
                }
            }
        }
        false
    }

    /// The peers a joiner gets in [`PastryMsg::Suspects`] from the join's last hop: those this
    /// one declared dead and probes, nearest to the joiner first.
    pub(crate) fn suspects_for(&self, joiner: NodeId) -> Vec<NodeHandle> {
        let mut v = self.declared_dead();
        v.retain(|h| h.id != joiner);
        v.sort_by_key(|h| crate::id::ring_distance(h.id.0, joiner.0));
        v.truncate(crate::wire::MAX_SUSPECTS);
        v
    }

    /// Takes peers another one declared dead as declared dead here too, and probes them now:
    /// those alive answer, and come back as any buried peer does. Peers this one knows or
    /// already buried are left as they are.
    fn suspect(&mut self, now: Millis, peers: &[NodeHandle], cfg: &Config, out: &mut Outbox) {
        for h in peers.iter().take(crate::wire::MAX_SUSPECTS) {
            if h.id == self.me.id || self.knows(h.id) || self.tombstoned(h.id) {
                continue;
            }
            self.entomb(*h, now, false, cfg);
            out.send(h, PastryMsg::Ping);
        }
    }

    /// Forgets `from`, which left (`departed`: it said so; it comes back only by announcing
    /// a new join) or is out of the overlay for now (it spoke while not ready: it restarted
    /// and rejoins, or is leaving and this overtook its `Departing`). The second kind is
    /// probed like a peer declared dead: a message sent while it was joining can arrive after
    /// its announcement (reordering), and must not keep it out once it answers.
    pub(crate) fn forget(
        &mut self,
        now: Millis,
        from: NodeHandle,
        departed: bool,
        cfg: &Config,
        out: &mut Outbox,
    ) {
        let mut leaf_changed = self.leaf.remove(from.id);
        leaf_changed |= self.rt.remove(from.id).is_some();
        self.tombstones.retain(|t| t.0.id != from.id);
        self.entomb(from, now, departed, cfg);
        if leaf_changed {
            let (a, b) = self.leaf.extremes();
            for h in a.iter().chain(b.iter()) {
                out.send(h, PastryMsg::LeafSetRequest);
            }
        }
    }

    /// Tells every known peer that this one leaves the overlay.
    pub(crate) fn depart(&mut self, out: &mut Outbox) {
        let mut targets: Vec<NodeHandle> = self.known().collect();
        targets.sort_by_key(|h| h.id);
        targets.dedup_by_key(|h| h.id);
        out.send_many(targets.iter(), PastryMsg::Departing);
        self.bootstrap = None;
    }

    /// Earliest time the maintenance tick must run.
    pub(crate) fn next_timeout(&self) -> Millis {
        let mut t = self.next_tick.min(self.next_exchange).min(self.next_probe);
        if let Some((_, at)) = self.bootstrap {
            t = t.min(at);
        }
        t
    }

    /// Keep-alives and failure detection, the first half of the maintenance tick: returns the
    /// peers whose keep-alive timeout passed. The caller declares them dead with
    /// [`Overlay::bury`] (after noting what their death changes above), then runs
    /// [`Overlay::tick_rest`].
    pub(crate) fn tick_detect(
        &mut self,
        now: Millis,
        cfg: &Config,
        out: &mut Outbox,
    ) -> Vec<NodeId> {
        let mut dead = Vec::new();
        if let Some((via, at)) = self.bootstrap {
            if now >= at {
                self.bootstrap = Some((via, now + cfg.bootstrap_retry));
                out.send_addr(via, Self::join_msg(self.me));
            }
        }
        if now >= self.next_tick {
            self.next_tick = now + cfg.keepalive_interval;
            let gap = now.saturating_sub(self.last_tick);
            self.last_tick = now;
            if gap > (2 * cfg.keepalive_interval).max(cfg.leaf_fail_timeout / 2) {
                // This peer did not run for a while (SIGSTOP, a VM pause, starvation): the
                // silence it measured is its own. Probe everyone now instead of declaring the
                // whole leaf set dead.
                self.forgive(now.saturating_sub(cfg.keepalive_interval));
                self.paused = self.paused.max(gap);
            }
            self.tombstones.retain(|t| t.1 > now);
            let mut ping = std::mem::take(&mut self.scratch);
            ping.clear();
            for e in self.leaf.iter() {
                let age = now.saturating_sub(e.last_heard);
                if age > cfg.leaf_fail_timeout {
                    dead.push(e.handle.id);
                } else if age >= cfg.keepalive_interval {
                    ping.push(e.handle);
                }
            }
            let leaf = &self.leaf;
            self.rt
                .check(now, cfg, |id| leaf.contains(id), &mut ping, &mut dead);
            dead.sort();
            dead.dedup();
            ping.retain(|h| dead.binary_search(&h.id).is_err());
            ping.sort_by_key(|h| h.id);
            ping.dedup_by_key(|h| h.id);
            out.send_many(ping.iter(), PastryMsg::Ping);
            self.scratch = ping;
        }
        dead
    }

    /// Counts every known peer heard from at `floor` at the latest as heard from at `floor`.
    fn forgive(&mut self, floor: Millis) {
        let stale: Vec<NodeId> = self
            .leaf
            .iter()
            .chain(self.rt.iter())
            .filter(|e| e.last_heard < floor)
            .map(|e| e.handle.id)
            .collect();
        for id in stale {
            self.leaf.touch(id, floor);
            self.rt.touch(id, floor);
        }
    }

    /// The peers declared dead that did not leave (those are probed; a departed peer comes
    /// back only by joining again).
    fn declared_dead(&self) -> Vec<NodeHandle> {
        self.tombstones
            .iter()
            .filter(|t| !t.2)
            .map(|t| t.0)
            .collect()
    }

    /// How long this peer had been paused, if a tick found it had since the last call (0:
    /// it had not).
    pub(crate) fn take_paused(&mut self) -> Millis {
        std::mem::take(&mut self.paused)
    }

    /// Whether peers declared dead proved alive since the last call (a partition healed, a
    /// paused peer resumed). If so, every other peer declared dead is sent an announcement
    /// now, rather than at the next probe: whoever is alive takes this peer back at once
    /// and answers, so both sides find each other together.
    pub(crate) fn take_revived(&mut self, out: &mut Outbox) -> usize {
        if self.revived.is_empty() {
            return 0;
        }
        let n = self.revived.len();
        self.revived.clear();
        out.send_many(self.declared_dead().iter(), PastryMsg::Announce);
        n
    }

    /// Makes the probes of peers declared dead and the leaf-set exchange due now (a probe on
    /// a fork, see `Peer::fire_overlay_rest_due`).
    #[cfg(feature = "harness")]
    pub(crate) fn due_rest(&mut self, now: Millis) {
        self.next_probe = now;
        self.next_exchange = now;
    }

    /// The second half of the maintenance tick: probes of peers declared dead and the leaf-set
    /// exchange.
    pub(crate) fn tick_rest(
        &mut self,
        now: Millis,
        cfg: &Config,
        out: &mut Outbox,
        rng: &mut SplitMix64,
    ) {
        if now >= self.next_probe {
            self.next_probe = now + cfg.dead_probe_interval;
            out.send_many(self.declared_dead().iter(), PastryMsg::Ping);
        }
        if now >= self.next_exchange {
            self.next_exchange = now + cfg.leaf_exchange_interval;
            let n = self.leaf.len();
            if n > 0 && out.ready {
                let pick = rng.below(n);
                if let Some(h) = self.leaf.iter().nth(pick).map(|e| e.handle) {
                    out.send(&h, PastryMsg::LeafSetRequest);
                }
            }
        }
    }

    /// Declares `dead` peers dead: tombstones them, removes them from the leaf set and routing
    /// tables, and starts leaf-set and routing-table repair. The keep-alive timeout runs this;
    /// so does [`crate::Peer::declare_dead`] (a driver's failure detector).
    pub(crate) fn bury(&mut self, now: Millis, dead: &[NodeId], cfg: &Config, out: &mut Outbox) {
        let mut leaf_changed = false;
        for &id in dead {
            let known = self.leaf.iter().chain(self.rt.iter()).map(|e| e.handle);
            #[cfg(feature = "harness")]
            let known = known.chain(
                self.explicit
                    .iter()
                    .flat_map(|t| t.rows.iter().flatten().flatten().copied()),
            );
            let handle = known.into_iter().find(|h| h.id == id);
            if !self.tombstoned(id) {
                // A peer declared dead that this one did not know yet is tombstoned too, or
                // another peer's stale leaf set would bring it in as a replica; with no address
                // to probe, it is neither probed nor counted until someone vouches for it.
                let h = handle.unwrap_or(NodeHandle {
                    id,
                    addr: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
                });
                self.entomb(h, now, handle.is_none(), cfg);
            }
            #[cfg(feature = "harness")]
            if let Some(t) = self.explicit.as_mut() {
                t.forget(id);
            }
            leaf_changed |= self.leaf.remove(id);
            if let Some((r, _)) = self.rt.remove(id) {
                // Ask another peer of the same row (or a leaf) for its row to refill the slot.
                let helper = self
                    .rt
                    .row(r)
                    .next()
                    .map(|e| e.handle)
                    .or_else(|| self.leaf.iter().next().map(|e| e.handle));
                if let Some(h) = helper {
                    out.send(&h, PastryMsg::RowRequest { row: r as u8 });
                }
            }
        }
        if leaf_changed {
            let (a, b) = self.leaf.extremes();
            for h in a.iter().chain(b.iter()) {
                out.send(h, PastryMsg::LeafSetRequest);
            }
        }
    }

    /// How many peers near this one it counts on: the leaf set's members and the peers it
    /// declared dead (until their tombstones expire) — for a small overlay, every other peer,
    /// whether this one can reach it now or not. A root compares its reachable replicas with
    /// this (a replica quorum) to tell the larger side of a partition from the smaller.
    pub fn nominal_neighbours(&self) -> usize {
        self.leaf.len() + self.tombstones.iter().filter(|t| !t.2).count()
    }

    /// Routing chose `next` as the next hop of a message: if it is a routing-table entry, it
    /// is checked until it is heard from (lazy routing-table keep-alive).
    pub(crate) fn note_used(&mut self, next: NodeId) {
        self.rt.note_used(next);
    }

    /// Whether `id` is in the leaf set or the routing table.
    pub fn knows(&self, id: NodeId) -> bool {
        self.leaf.contains(id) || self.rt.contains(id)
    }

    /// Every peer this peer knows (leaf set and routing table, possibly with repeats).
    pub fn known(&self) -> impl Iterator<Item = NodeHandle> + '_ {
        self.leaf.iter().chain(self.rt.iter()).map(|e| e.handle)
    }
}
