//! Deterministic network simulator: many [`Peer`]s in one process, virtual time that jumps to
//! the next event, seeded latency/jitter, loss, duplication, partitions, crash and restart.
//! Every random choice comes from one ChaCha8 generator seeded by [`Sim::new`], so a failing
//! seed replays exactly.
//!
//! Peers get fake IPv4 addresses `10.x.y.z:5060` derived from their index. Large overlays are
//! built by [`Sim::add_static_peers`], which computes each peer's leaf set and routing table
//! directly from the sorted id list (O(N log N)); small ones can also be grown by real joins
//! ([`Sim::add_joining_peer`]).

use crate::config::Config;
use crate::event::{Event, PubHandle, SubHandle, SubscribeError};
use crate::id::{closest_of, digit, shared_prefix_len, GroupId, NodeId, DIGITS, DIGIT_BITS, RADIX};
use crate::peer::Peer;
use crate::wire::{ETag, NodeHandle};
use crate::Millis;
use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};

/// Network behaviour.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Minimum one-way latency (ms).
    pub latency: u64,
    /// Uniform extra latency in `0..=jitter` (ms); reorders datagrams.
    pub jitter: u64,
    /// Probability a datagram is lost.
    pub loss: f64,
    /// Probability a datagram is delivered twice.
    pub duplicate: f64,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            latency: 5,
            jitter: 20,
            loss: 0.0,
            duplicate: 0.0,
        }
    }
}

/// An upcall observed by the simulator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimEvent {
    /// Virtual time.
    pub at: Millis,
    /// Peer index.
    pub peer: usize,
    /// The upcall.
    pub event: Event,
}

/// Counters of the simulated network.
#[derive(Clone, Debug, Default)]
pub struct NetStats {
    /// Datagrams delivered to a live peer.
    pub delivered: u64,
    /// Dropped by random loss.
    pub lost: u64,
    /// Dropped by a partition.
    pub partitioned: u64,
    /// Addressed to a crashed peer.
    pub to_dead: u64,
    /// Extra copies injected.
    pub duplicated: u64,
}

enum Action {
    Deliver {
        to: u32,
        from: SocketAddr,
        bytes: Vec<u8>,
    },
    Timer {
        to: u32,
        incarnation: u32,
    },
}

struct Scheduled {
    at: Millis,
    seq: u64,
    action: Action,
}
impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

struct Node {
    id: NodeId,
    addr: SocketAddr,
    peer: Option<Box<Peer>>,
    timer_at: Option<Millis>,
    incarnation: u32,
    side: u8,
}

/// The simulator.
pub struct Sim {
    now: Millis,
    rng: ChaCha8Rng,
    /// Network behaviour (may be changed between steps).
    pub net: NetConfig,
    cfg: Config,
    nodes: Vec<Node>,
    queue: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    log: Vec<SimEvent>,
    scratch: Vec<crate::io::Transmit>,
    /// `(id, index)` of every peer ever added, sorted by id.
    by_id: Vec<(u128, usize)>,
    /// Network counters.
    pub stats: NetStats,
}

/// Address of simulated peer `i`.
pub fn sim_addr(i: usize) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::from(0x0A00_0000u32 + i as u32), 5060))
}

fn sim_index(a: &SocketAddr) -> Option<usize> {
    match a {
        SocketAddr::V4(v4) => u32::from(*v4.ip())
            .checked_sub(0x0A00_0000)
            .map(|i| i as usize),
        SocketAddr::V6(_) => None,
    }
}

impl Sim {
    /// An empty simulation.
    pub fn new(seed: u64, cfg: Config, net: NetConfig) -> Self {
        Sim {
            now: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            net,
            cfg,
            nodes: Vec::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            log: Vec::new(),
            scratch: Vec::new(),
            by_id: Vec::new(),
            stats: NetStats::default(),
        }
    }

    /// Current virtual time.
    pub fn now(&self) -> Millis {
        self.now
    }
    /// Number of peers ever added (crashed ones included).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    /// Whether no peer was added.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
    /// The simulator's RNG (for test workloads that must replay with the seed).
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }
    /// Id of peer `i`.
    pub fn id(&self, i: usize) -> NodeId {
        self.nodes[i].id
    }
    /// Peer `i`, if alive.
    pub fn peer(&self, i: usize) -> Option<&Peer> {
        self.nodes[i].peer.as_deref()
    }
    /// Whether peer `i` is alive.
    pub fn is_alive(&self, i: usize) -> bool {
        self.nodes[i].peer.is_some()
    }
    /// Indices of live peers.
    pub fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].peer.is_some())
    }
    /// Indices of live peers that completed their overlay join.
    pub fn ready(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].peer.as_ref().is_some_and(|p| p.is_ready()))
    }
    /// The live, joined peer numerically closest to `key` (the key's rightful root).
    pub fn closest_live(&self, key: u128) -> Option<usize> {
        let n = self.by_id.len();
        if n == 0 {
            return None;
        }
        let ready = |j: usize| self.nodes[j].peer.as_ref().is_some_and(|p| p.is_ready());
        let start = self.by_id.partition_point(|e| e.0 < key);
        // Nearest ready peer clockwise and counter-clockwise from `key`, then the closer one.
        let cw = (0..n)
            .map(|d| self.by_id[(start + d) % n])
            .find(|e| ready(e.1));
        let ccw = (1..=n)
            .map(|d| self.by_id[(start + n - d) % n])
            .find(|e| ready(e.1));
        let best = closest_of(key, cw.iter().chain(ccw.iter()).map(|e| e.0))?;
        cw.into_iter().chain(ccw).find(|e| e.0 == best).map(|e| e.1)
    }
    /// Takes the upcalls logged so far.
    pub fn drain_log(&mut self) -> Vec<SimEvent> {
        std::mem::take(&mut self.log)
    }
    /// Upcalls logged so far.
    pub fn log(&self) -> &[SimEvent] {
        &self.log
    }

    fn fresh_id(&mut self, taken: &HashSet<u128>) -> NodeId {
        loop {
            let id: u128 = self.rng.random();
            if !taken.contains(&id) {
                return NodeId(id);
            }
        }
    }

    fn push_node(&mut self, id: NodeId, peer: Peer) -> usize {
        let i = self.push_node_unindexed(id, peer);
        let pos = self.by_id.partition_point(|e| e.0 < id.0);
        self.by_id.insert(pos, (id.0, i));
        i
    }

    fn push_node_unindexed(&mut self, id: NodeId, peer: Peer) -> usize {
        let i = self.nodes.len();
        self.nodes.push(Node {
            id,
            addr: sim_addr(i),
            peer: Some(Box::new(peer)),
            timer_at: None,
            incarnation: 0,
            side: 0,
        });
        i
    }

    /// Adds `n` peers with random ids whose routing state is computed directly from the sorted
    /// id list (no join traffic). Returns their indices.
    pub fn add_static_peers(&mut self, n: usize) -> Vec<usize> {
        let mut taken: HashSet<u128> = self.nodes.iter().map(|n| n.id.0).collect();
        let first = self.nodes.len();
        for _ in 0..n {
            let id = self.fresh_id(&taken);
            taken.insert(id.0);
            let seed = self.rng.random();
            let addr = sim_addr(self.nodes.len());
            let p = Peer::new(id, addr, self.cfg.clone(), self.now, seed);
            self.push_node_unindexed(id, p);
        }
        self.by_id = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.0, i))
            .collect();
        self.by_id.sort_unstable();
        let mut sorted: Vec<(u128, usize)> = self.live().map(|i| (self.nodes[i].id.0, i)).collect();
        sorted.sort_unstable();
        let half = (self.cfg.leaf_set_size / 2).max(1);
        let total = sorted.len();
        let mut known = Vec::new();
        for p in 0..total {
            let (me, idx) = sorted[p];
            if idx < first {
                continue;
            }
            known.clear();
            for d in 1..=half.min(total - 1) {
                known.push(sorted[(p + d) % total].1);
                known.push(sorted[(p + total - d) % total].1);
            }
            for r in 0..DIGITS {
                let shift = 128 - DIGIT_BITS as usize * (r + 1);
                let prefix = if r == 0 {
                    0
                } else {
                    me >> (128 - DIGIT_BITS as usize * r) << (128 - DIGIT_BITS as usize * r)
                };
                for c in 0..RADIX {
                    if c == digit(me, r) {
                        continue;
                    }
                    let lo = prefix | ((c as u128) << shift);
                    let hi = lo | ((1u128 << shift) - 1);
                    let a = sorted.partition_point(|s| s.0 < lo);
                    let b = sorted.partition_point(|s| s.0 <= hi);
                    if a < b {
                        known.push(sorted[self.rng.random_range(a..b)].1);
                    }
                }
                // Stop once no other peer shares r+1 digits with this one.
                let lo = me >> shift << shift;
                let hi = lo | ((1u128 << shift) - 1);
                let a = sorted.partition_point(|s| s.0 < lo);
                let b = sorted.partition_point(|s| s.0 <= hi);
                if b - a <= 1 {
                    break;
                }
            }
            let handles: Vec<NodeHandle> = known
                .iter()
                .map(|&j| NodeHandle {
                    id: self.nodes[j].id,
                    addr: self.nodes[j].addr,
                })
                .collect();
            let now = self.now;
            if let Some(peer) = self.nodes[idx].peer.as_mut() {
                peer.install_routing_state(now, &handles);
            }
        }
        for i in first..self.nodes.len() {
            self.flush(i);
        }
        (first..self.nodes.len()).collect()
    }

    /// Adds the first peer of an overlay (alone, ready).
    pub fn add_first_peer(&mut self) -> usize {
        let taken: HashSet<u128> = self.nodes.iter().map(|n| n.id.0).collect();
        let id = self.fresh_id(&taken);
        let seed = self.rng.random();
        let p = Peer::new(
            id,
            sim_addr(self.nodes.len()),
            self.cfg.clone(),
            self.now,
            seed,
        );
        let i = self.push_node(id, p);
        self.flush(i);
        i
    }

    /// Adds a peer (random id unless given) that joins through peer `via`.
    pub fn add_joining_peer(&mut self, id: Option<NodeId>, via: usize) -> usize {
        let taken: HashSet<u128> = self.nodes.iter().map(|n| n.id.0).collect();
        let id = id.unwrap_or_else(|| self.fresh_id(&taken));
        let seed = self.rng.random();
        let mut p = Peer::new(
            id,
            sim_addr(self.nodes.len()),
            self.cfg.clone(),
            self.now,
            seed,
        );
        p.bootstrap(self.now, self.nodes[via].addr);
        let i = self.push_node(id, p);
        self.flush(i);
        i
    }

    /// Crashes peer `i`: its state is lost, datagrams to it are dropped.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].peer = None;
        self.nodes[i].timer_at = None;
        self.nodes[i].incarnation += 1;
    }

    /// Peer `i` leaves the overlay gracefully ([`Peer::leave`]) and is then removed.
    pub fn leave(&mut self, i: usize) {
        self.with_peer(i, |p, now| p.leave(now));
        self.crash(i);
    }

    /// Crashes peer `i` and also drops every datagram it sent that is still in flight (as if
    /// they never left its host): the strongest crash the model allows.
    pub fn crash_hard(&mut self, i: usize) {
        self.crash(i);
        let addr = self.nodes[i].addr;
        let q = std::mem::take(&mut self.queue);
        self.queue = q
            .into_iter()
            .filter(
                |Reverse(s)| !matches!(&s.action, Action::Deliver { from, .. } if *from == addr),
            )
            .collect();
    }

    /// Restarts crashed peer `i` with empty state and the same id and address; it rejoins the
    /// overlay through peer `via`.
    pub fn restart(&mut self, i: usize, via: usize) {
        assert!(self.nodes[i].peer.is_none(), "restart of a live peer");
        let seed = self.rng.random();
        let mut p = Peer::new(
            self.nodes[i].id,
            self.nodes[i].addr,
            self.cfg.clone(),
            self.now,
            seed,
        );
        p.bootstrap(self.now, self.nodes[via].addr);
        self.nodes[i].peer = Some(Box::new(p));
        self.flush(i);
    }

    /// Puts peer `i` on partition side `side`; datagrams between different sides are dropped.
    pub fn set_side(&mut self, i: usize, side: u8) {
        self.nodes[i].side = side;
    }

    /// Removes all partitions.
    pub fn heal(&mut self) {
        for n in &mut self.nodes {
            n.side = 0;
        }
    }

    /// Runs a local API call on live peer `i` at the current time, then collects its outputs.
    /// Returns `None` when the peer is crashed.
    pub fn with_peer<R>(&mut self, i: usize, f: impl FnOnce(&mut Peer, Millis) -> R) -> Option<R> {
        let now = self.now;
        let r = f(self.nodes[i].peer.as_deref_mut()?, now);
        self.flush(i);
        Some(r)
    }

    /// [`Peer::subscribe`] on peer `i`.
    pub fn subscribe(
        &mut self,
        i: usize,
        gid: GroupId,
        h: SubHandle,
        expires: u32,
    ) -> Option<Result<u32, SubscribeError>> {
        self.with_peer(i, |p, now| p.subscribe(now, gid, h, expires))
    }

    /// [`Peer::publish`] on peer `i`.
    pub fn publish(
        &mut self,
        i: usize,
        gid: GroupId,
        req: PubHandle,
        body: Option<Bytes>,
        if_match: Option<ETag>,
        expires: Option<u32>,
    ) -> Option<()> {
        self.with_peer(i, |p, now| {
            p.publish(now, gid, req, body, if_match, expires)
        })
    }

    /// Injects raw bytes into peer `i` as if sent from `from` (malformed-input tests).
    pub fn inject(&mut self, i: usize, from: SocketAddr, bytes: &[u8]) {
        self.with_peer(i, |p, now| p.handle_datagram(now, from, bytes));
    }

    fn schedule(&mut self, at: Millis, action: Action) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            action,
        }));
    }

    fn delay(&mut self) -> Millis {
        self.net.latency
            + if self.net.jitter > 0 {
                self.rng.random_range(0..=self.net.jitter)
            } else {
                0
            }
    }

    /// Collects transmits, events and the timer of peer `i` after an input.
    fn flush(&mut self, i: usize) {
        let now = self.now;
        let Some(peer) = self.nodes[i].peer.as_deref_mut() else {
            return;
        };
        let mut out = std::mem::take(&mut self.scratch);
        while let Some(t) = peer.poll_transmit() {
            out.push(t);
        }
        while let Some(e) = peer.poll_event() {
            self.log.push(SimEvent {
                at: now,
                peer: i,
                event: e,
            });
        }
        let timeout = peer.poll_timeout();
        let from = self.nodes[i].addr;
        for t in out.drain(..) {
            let Some(to) = sim_index(&t.dst).filter(|&j| j < self.nodes.len()) else {
                continue;
            };
            if self.nodes[to].side != self.nodes[i].side {
                self.stats.partitioned += 1;
                continue;
            }
            if self.net.loss > 0.0 && self.rng.random_bool(self.net.loss.min(1.0)) {
                self.stats.lost += 1;
                continue;
            }
            if self.net.duplicate > 0.0 && self.rng.random_bool(self.net.duplicate.min(1.0)) {
                self.stats.duplicated += 1;
                let d = self.delay();
                self.schedule(
                    now + d,
                    Action::Deliver {
                        to: to as u32,
                        from,
                        bytes: t.payload.clone(),
                    },
                );
            }
            let d = self.delay();
            self.schedule(
                now + d,
                Action::Deliver {
                    to: to as u32,
                    from,
                    bytes: t.payload,
                },
            );
        }
        self.scratch = out;
        if let Some(t) = timeout {
            let t = t.max(now + 1);
            if self.nodes[i].timer_at != Some(t) {
                self.nodes[i].timer_at = Some(t);
                let incarnation = self.nodes[i].incarnation;
                self.schedule(
                    t,
                    Action::Timer {
                        to: i as u32,
                        incarnation,
                    },
                );
            }
        }
    }

    /// Processes the next scheduled action if it is due by `limit`. Returns whether one ran.
    pub fn step(&mut self, limit: Millis) -> bool {
        let Some(Reverse(top)) = self.queue.peek() else {
            return false;
        };
        if top.at > limit {
            return false;
        }
        let Reverse(s) = self.queue.pop().expect("peeked");
        self.now = self.now.max(s.at);
        let now = self.now;
        match s.action {
            Action::Deliver { to, from, bytes } => {
                let to = to as usize;
                match self.nodes[to].peer.as_deref_mut() {
                    Some(p) => {
                        self.stats.delivered += 1;
                        p.handle_datagram(now, from, &bytes);
                        self.flush(to);
                    }
                    None => self.stats.to_dead += 1,
                }
            }
            Action::Timer { to, incarnation } => {
                let to = to as usize;
                let n = &mut self.nodes[to];
                if n.incarnation == incarnation && n.timer_at == Some(s.at) {
                    n.timer_at = None;
                    if let Some(p) = n.peer.as_deref_mut() {
                        p.handle_timeout(now);
                        self.flush(to);
                    }
                }
            }
        }
        true
    }

    /// Runs until virtual time `t` (inclusive).
    pub fn run_until(&mut self, t: Millis) {
        while self.step(t) {}
        self.now = self.now.max(t);
    }

    /// Runs for `d` more milliseconds.
    pub fn run_for(&mut self, d: Millis) {
        let t = self.now + d;
        self.run_until(t);
    }

    /// Whether peer `i`'s leaf set equals the true `L/2` live neighbours on each side
    /// (a consistency check used by tests).
    pub fn leaf_set_correct(&self, i: usize) -> bool {
        let Some(p) = self.peer(i) else { return false };
        let me = p.id().0;
        let mut ids: Vec<u128> = self
            .live()
            .map(|j| self.nodes[j].id.0)
            .filter(|&x| x != me)
            .collect();
        let half = (self.cfg.leaf_set_size / 2).max(1);
        ids.sort_unstable_by_key(|&x| x.wrapping_sub(me));
        let mut want: Vec<u128> = ids.iter().take(half).copied().collect();
        ids.sort_unstable_by_key(|&x| me.wrapping_sub(x));
        want.extend(ids.iter().take(half));
        want.sort_unstable();
        want.dedup();
        let mut have: Vec<u128> = p.overlay().leaf.iter().map(|e| e.handle.id.0).collect();
        have.sort_unstable();
        have == want
    }

    /// Length of the longest common prefix (digits) between two peers (diagnostics).
    pub fn shared_digits(&self, a: usize, b: usize) -> usize {
        shared_prefix_len(self.nodes[a].id.0, self.nodes[b].id.0)
    }
}
