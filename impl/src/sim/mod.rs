//! Deterministic network simulator: many [`Peer`]s in one process, virtual time that jumps to
//! the next event, seeded latency/jitter, loss, duplication, partitions, crash and restart.
//! Every random choice comes from one ChaCha8 generator seeded by [`Sim::new`], so a failing
//! seed replays exactly.
//!
//! Every simulated peer is a [`Host`], driven exactly as the tokio runtime drives it. Peers get
//! fake IPv4 addresses `10.x.y.z:4000` derived from their index. Large overlays are
//! built by [`Sim::add_static_peers`], which computes each peer's leaf set and routing table
//! directly from the sorted id list (O(N log N)); small ones can also be grown by real joins
//! ([`Sim::add_joining_peer`]).

use crate::id::{closest_of, shared_prefix_len, GroupId, NodeId};
use crate::{
    Call, CallError, Config, ETag, Event, Host, Input, Millis, Output, Peer, PubHandle, Seeds,
    SubHandle,
};
use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};

mod build;
mod ua;

pub use ua::UaLog;

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

/// An overlay datagram the wiretap saw ([`Sim::set_wiretap`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tapped {
    /// Virtual time it was sent.
    pub at: Millis,
    /// Sending peer.
    pub from: usize,
    /// Receiving peer.
    pub to: usize,
    /// The datagram, as sent.
    pub bytes: Vec<u8>,
}

/// Where a simulated datagram goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dest {
    /// Peer `i`'s overlay socket.
    Overlay(usize),
    /// Peer `i`'s SIP socket (gateways).
    Sip(usize),
    /// User agent `u`.
    Ua(usize),
}

enum Action {
    Deliver {
        to: Dest,
        from: SocketAddr,
        bytes: Vec<u8>,
    },
    Timer {
        to: u32,
        incarnation: u32,
    },
    UaTimer {
        ua: u32,
    },
}

/// The event queue: one FIFO bucket per virtual millisecond, in a map ordered by time.
/// Actions due at the same millisecond run in the order they were scheduled — the order a
/// binary heap keyed by `(at, sequence number)` gives — but pushing and popping touch only
/// the ends of one bucket instead of sifting through a heap of every action in flight.
#[derive(Default)]
struct Queue {
    buckets: BTreeMap<Millis, VecDeque<Action>>,
    /// Emptied buckets, kept for reuse (no allocation per millisecond of virtual time).
    spare: Vec<VecDeque<Action>>,
}

impl Queue {
    fn push(&mut self, at: Millis, action: Action) {
        if let Some(b) = self.buckets.get_mut(&at) {
            b.push_back(action);
            return;
        }
        let mut b = self.spare.pop().unwrap_or_default();
        b.push_back(action);
        self.buckets.insert(at, b);
    }

    /// Time of the earliest action.
    fn peek_at(&self) -> Option<Millis> {
        self.buckets.first_key_value().map(|(at, _)| *at)
    }

    fn pop(&mut self) -> Option<(Millis, Action)> {
        let mut e = self.buckets.first_entry()?;
        let at = *e.key();
        let action = e.get_mut().pop_front().expect("buckets are never empty");
        if e.get().is_empty() {
            let b = e.remove();
            if self.spare.len() < 64 {
                self.spare.push(b);
            }
        }
        Some((at, action))
    }

    /// Keeps only the actions `keep` accepts.
    fn retain(&mut self, mut keep: impl FnMut(&Action) -> bool) {
        for b in self.buckets.values_mut() {
            b.retain(&mut keep);
        }
        self.buckets.retain(|_, b| !b.is_empty());
    }
}

struct SimPeer {
    id: NodeId,
    addr: SocketAddr,
    host: Option<Box<Host>>,
    timer_at: Option<Millis>,
    incarnation: u32,
    side: u8,
    /// Paused (SIGSTOP) until then: what reaches it waits, its timer does not fire.
    paused_until: Option<Millis>,
    /// Leaving ([`Sim::leave`]): removed once its host has left the overlay.
    leaving: bool,
}

/// The simulator.
pub struct Sim {
    now: Millis,
    rng: ChaCha8Rng,
    /// Network behaviour (may be changed between steps).
    pub net: NetConfig,
    cfg: Config,
    nodes: Vec<SimPeer>,
    queue: Queue,
    log: Vec<SimEvent>,
    scratch: Vec<crate::Transmit>,
    /// `(id, index)` of every peer ever added, sorted by id.
    by_id: Vec<(u128, usize)>,
    /// Network counters.
    pub stats: NetStats,
    /// Peers added from now on are SIP gateways.
    gateways: bool,
    uas: Vec<ua::SimUa>,
    ua_log: Vec<ua::UaLog>,
    /// Overlay datagrams sent while the wiretap is on.
    tap: Option<Vec<Tapped>>,
    /// Links between two peers that drop every datagram, both ways (`(low, high)` indices).
    cut_links: Vec<(usize, usize)>,
}

/// Port of a simulated peer's overlay socket.
const OVERLAY_PORT: u16 = 4000;
/// Port of a simulated gateway's SIP socket.
const SIP_PORT: u16 = 5060;
/// First address of the peers (10.0.0.0/8).
const PEER_NET: u32 = 0x0A00_0000;
/// First address of the user agents (172.16.0.0/12).
const UA_NET: u32 = 0xAC10_0000;

/// Overlay address of simulated peer `i`.
pub fn sim_addr(i: usize) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::from(PEER_NET + i as u32), OVERLAY_PORT))
}

/// SIP address of simulated gateway `i`.
pub fn sim_sip_addr(i: usize) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::from(PEER_NET + i as u32), SIP_PORT))
}

/// Address of simulated user agent `u`.
pub fn sim_ua_addr(u: usize) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::from(UA_NET + u as u32), 5070))
}

fn dest_of(a: &SocketAddr) -> Option<Dest> {
    let SocketAddr::V4(v4) = a else {
        return None;
    };
    let ip = u32::from(*v4.ip());
    if let Some(u) = ip.checked_sub(UA_NET).filter(|u| *u < 1 << 20) {
        return Some(Dest::Ua(u as usize));
    }
    let i = ip.checked_sub(PEER_NET).filter(|i| *i < 1 << 24)? as usize;
    match v4.port() {
        OVERLAY_PORT => Some(Dest::Overlay(i)),
        SIP_PORT => Some(Dest::Sip(i)),
        _ => None,
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
            queue: Queue::default(),
            log: Vec::new(),
            scratch: Vec::new(),
            by_id: Vec::new(),
            stats: NetStats::default(),
            gateways: false,
            uas: Vec::new(),
            ua_log: Vec::new(),
            tap: None,
            cut_links: Vec::new(),
        }
    }

    /// Peers added from now on get configuration `cfg` (e.g. an outsider without the cluster
    /// key).
    pub fn set_config(&mut self, cfg: Config) {
        self.cfg = cfg;
    }

    /// Turns the wiretap on (recording every overlay datagram sent between peers, as an
    /// attacker on the path would) or off (discarding what it recorded).
    pub fn set_wiretap(&mut self, on: bool) {
        self.tap = on.then(|| self.tap.take().unwrap_or_default());
    }

    /// The datagrams the wiretap recorded since the last call.
    pub fn take_tapped(&mut self) -> Vec<Tapped> {
        self.tap.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Peers added from now on are SIP gateways (a SIP endpoint at [`sim_sip_addr`]).
    pub fn set_gateways(&mut self, on: bool) {
        self.gateways = on;
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
    /// The overlay layer of peer `i`, if alive.
    pub fn peer(&self, i: usize) -> Option<&Peer> {
        self.nodes[i].host.as_deref().map(Host::peer)
    }
    /// Host `i`, if alive.
    pub fn host(&self, i: usize) -> Option<&Host> {
        self.nodes[i].host.as_deref()
    }
    /// Whether peer `i` is alive.
    pub fn is_alive(&self, i: usize) -> bool {
        self.nodes[i].host.is_some()
    }
    /// Indices of live peers.
    pub fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].host.is_some())
    }
    /// Indices of live peers that completed their overlay join.
    pub fn ready(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].host.as_ref().is_some_and(|p| p.is_ready()))
    }
    /// The live, joined peer numerically closest to `key` (the key's rightful root).
    pub fn closest_live(&self, key: u128) -> Option<usize> {
        let n = self.by_id.len();
        if n == 0 {
            return None;
        }
        let ready = |j: usize| self.nodes[j].host.as_ref().is_some_and(|p| p.is_ready());
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

    /// A new host for peer slot `i` with id `id`.
    fn new_host(&mut self, id: NodeId, i: usize) -> Host {
        let seed = self.rng.random();
        let h = Host::new(
            id,
            sim_addr(i),
            self.cfg.clone(),
            self.now,
            Seeds::reproducible(seed),
        );
        if self.gateways {
            h.with_sip(crate::sip::SipConfig::new(sim_sip_addr(i)))
        } else {
            h
        }
    }

    fn push_node(&mut self, id: NodeId, host: Host) -> usize {
        let i = self.push_node_unindexed(id, host);
        let pos = self.by_id.partition_point(|e| e.0 < id.0);
        self.by_id.insert(pos, (id.0, i));
        i
    }

    fn push_node_unindexed(&mut self, id: NodeId, host: Host) -> usize {
        let i = self.nodes.len();
        self.nodes.push(SimPeer {
            id,
            addr: sim_addr(i),
            host: Some(Box::new(host)),
            timer_at: None,
            incarnation: 0,
            side: 0,
            paused_until: None,
            leaving: false,
        });
        i
    }

    /// Crashes peer `i`: its state is lost, datagrams to it are dropped.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].leaving = false;
        self.nodes[i].host = None;
        self.nodes[i].timer_at = None;
        self.nodes[i].incarnation += 1;
    }

    /// Peer `i` leaves the overlay gracefully ([`Call::Leave`]) and is then removed: at once,
    /// or, while a gateway hands its dialogs to other peers, once its host has left.
    pub fn leave(&mut self, i: usize) {
        self.call(i, Call::Leave);
        if self.nodes[i].host.as_ref().is_some_and(|h| h.is_leaving()) {
            self.nodes[i].leaving = true;
        } else {
            self.crash(i);
        }
    }

    /// Crashes peer `i` and also drops every datagram it sent that is still in flight (as if
    /// they never left its host): the strongest crash the model allows.
    pub fn crash_hard(&mut self, i: usize) {
        self.crash(i);
        let addr = self.nodes[i].addr;
        let sip = sim_sip_addr(i);
        self.queue.retain(
            |a| !matches!(a, Action::Deliver { from, .. } if *from == addr || *from == sip),
        );
    }

    /// Puts peer `i` on partition side `side`; datagrams between different sides are dropped.
    pub fn set_side(&mut self, i: usize, side: u8) {
        self.nodes[i].side = side;
    }

    /// Pauses peer `i` for `d` ms, as SIGSTOP then SIGCONT would: datagrams to it wait in its
    /// socket and are read, in order, when it resumes; its timers fire then too (late).
    pub fn pause(&mut self, i: usize, d: Millis) {
        self.nodes[i].paused_until = Some(self.now + d);
    }

    /// Removes all partitions and cut links.
    pub fn heal(&mut self) {
        for n in &mut self.nodes {
            n.side = 0;
        }
        self.cut_links.clear();
    }

    /// Cuts the link between peers `a` and `b`: datagrams between them are dropped, both ways,
    /// until [`Sim::heal`] or [`Sim::restore_link`] (an asymmetric partition: each still
    /// reaches everyone else).
    pub fn cut_link(&mut self, a: usize, b: usize) {
        let l = (a.min(b), a.max(b));
        if !self.cut_links.contains(&l) {
            self.cut_links.push(l);
        }
    }

    /// Restores the link between peers `a` and `b`.
    pub fn restore_link(&mut self, a: usize, b: usize) {
        let l = (a.min(b), a.max(b));
        self.cut_links.retain(|&x| x != l);
    }

    /// Runs `f` on live host `i` at the current time, then collects its outputs. Returns
    /// `None` when the peer is crashed.
    pub fn with_host<R>(&mut self, i: usize, f: impl FnOnce(&mut Host, Millis) -> R) -> Option<R> {
        let now = self.now;
        let r = f(self.nodes[i].host.as_deref_mut()?, now);
        self.flush(i);
        Some(r)
    }

    /// A local API call on live peer `i`; `None` when the peer is crashed.
    pub fn call(&mut self, i: usize, call: Call) -> Option<Result<(), CallError>> {
        self.with_host(i, |h, now| h.handle_input(now, Input::Call(call)))
    }

    /// [`Call::Subscribe`] on peer `i`.
    pub fn subscribe(
        &mut self,
        i: usize,
        gid: GroupId,
        handle: SubHandle,
        expires: u32,
    ) -> Option<Result<(), CallError>> {
        self.call(
            i,
            Call::Subscribe {
                gid,
                handle,
                expires,
            },
        )
    }

    /// [`Call::Publish`] on peer `i`.
    pub fn publish(
        &mut self,
        i: usize,
        gid: GroupId,
        req: PubHandle,
        body: Option<Bytes>,
        if_match: Option<ETag>,
        expires: Option<u32>,
    ) -> Option<()> {
        let call = Call::Publish {
            gid,
            req,
            body,
            if_match,
            expires,
        };
        self.call(i, call).map(|_| ())
    }

    /// Injects raw bytes into peer `i`'s overlay socket as if sent from `from`
    /// (malformed-input tests).
    pub fn inject(&mut self, i: usize, from: SocketAddr, bytes: &[u8]) {
        self.with_host(i, |h, now| {
            let _ = h.handle_input(
                now,
                Input::Overlay {
                    from,
                    payload: bytes,
                },
            );
        });
    }

    fn schedule(&mut self, at: Millis, action: Action) {
        self.queue.push(at, action);
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
        let Some(host) = self.nodes[i].host.as_deref_mut() else {
            return;
        };
        let mut out = std::mem::take(&mut self.scratch);
        let timeout = loop {
            match host.poll_output() {
                Output::Transmit(t) => out.push(t),
                // The simulated user agents speak UDP only: no stream ever reaches a host here,
                // so a host has no stream to close or write.
                Output::Close(_) => {}
                Output::Event(e) => self.log.push(SimEvent {
                    at: now,
                    peer: i,
                    event: e,
                }),
                Output::Timeout(at) => break (at != Millis::MAX).then_some(at),
            }
        };
        let side = self.nodes[i].side;
        for t in out.drain(..) {
            let from = match t.socket {
                crate::Socket::Overlay => sim_addr(i),
                crate::Socket::SipUdp => sim_sip_addr(i),
                crate::Socket::SipTcp(_) | crate::Socket::SipTcpConnect(_) => continue,
            };
            self.send(now, side, from, t.dst, t.payload);
        }
        self.scratch = out;
        if self.nodes[i].leaving && self.nodes[i].host.as_ref().is_some_and(|h| h.has_left()) {
            self.crash(i);
            return;
        }
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

    /// Puts a datagram on the network: partitions, loss, duplication, latency.
    fn send(&mut self, now: Millis, side: u8, from: SocketAddr, dst: SocketAddr, payload: Vec<u8>) {
        let Some(to) = dest_of(&dst) else {
            return;
        };
        if let (Some(tap), Dest::Overlay(j), Some(Dest::Overlay(i))) =
            (self.tap.as_mut(), to, dest_of(&from))
        {
            tap.push(Tapped {
                at: now,
                from: i,
                to: j,
                bytes: payload.clone(),
            });
        }
        let to_side = match to {
            Dest::Overlay(j) | Dest::Sip(j) if j < self.nodes.len() => self.nodes[j].side,
            Dest::Ua(u) if u < self.uas.len() => self.uas[u].side,
            _ => return,
        };
        let cut = match (dest_of(&from), to) {
            (Some(Dest::Overlay(i) | Dest::Sip(i)), Dest::Overlay(j) | Dest::Sip(j)) => {
                self.cut_links.contains(&(i.min(j), i.max(j)))
            }
            _ => false,
        };
        if to_side != side || cut {
            self.stats.partitioned += 1;
            return;
        }
        if self.net.loss > 0.0 && self.rng.random_bool(self.net.loss.min(1.0)) {
            self.stats.lost += 1;
            return;
        }
        if self.net.duplicate > 0.0 && self.rng.random_bool(self.net.duplicate.min(1.0)) {
            self.stats.duplicated += 1;
            let d = self.delay();
            let bytes = payload.clone();
            self.schedule(now + d, Action::Deliver { to, from, bytes });
        }
        let d = self.delay();
        self.schedule(
            now + d,
            Action::Deliver {
                to,
                from,
                bytes: payload,
            },
        );
    }

    /// Processes the next scheduled action if it is due by `limit`. Returns whether one ran.
    pub fn step(&mut self, limit: Millis) -> bool {
        match self.queue.peek_at() {
            Some(at) if at <= limit => {}
            _ => return false,
        }
        let (at, action) = self.queue.pop().expect("peeked");
        self.now = self.now.max(at);
        let now = self.now;
        let target = match &action {
            Action::Deliver {
                to: Dest::Overlay(i) | Dest::Sip(i),
                ..
            } => Some(*i),
            Action::Timer { to, .. } => Some(*to as usize),
            _ => None,
        };
        if let Some(until) = target
            .and_then(|i| self.nodes.get(i))
            .and_then(|n| n.paused_until)
            .filter(|&u| u > now)
        {
            // A paused peer: what reaches it waits until it resumes (in the order it came).
            let i = target.expect("some");
            if let Action::Timer { .. } = action {
                if self.nodes[i].timer_at == Some(at) {
                    self.nodes[i].timer_at = Some(until);
                    self.schedule(until, action);
                }
            } else {
                self.schedule(until, action);
            }
            return true;
        }
        match action {
            Action::Deliver {
                to: Dest::Ua(u),
                from,
                bytes,
            } => {
                self.stats.delivered += 1;
                self.uas[u].agent.handle_datagram(now, from, &bytes);
                self.flush_ua(u);
            }
            Action::Deliver { to, from, bytes } => {
                let (i, input) = match to {
                    Dest::Overlay(i) => (
                        i,
                        Input::Overlay {
                            from,
                            payload: &bytes,
                        },
                    ),
                    Dest::Sip(i) => (
                        i,
                        Input::Sip {
                            from,
                            payload: &bytes,
                        },
                    ),
                    Dest::Ua(_) => unreachable!("matched above"),
                };
                match self.nodes[i].host.as_deref_mut() {
                    Some(h) => {
                        self.stats.delivered += 1;
                        let _ = h.handle_input(now, input);
                        self.flush(i);
                    }
                    None => self.stats.to_dead += 1,
                }
            }
            Action::UaTimer { ua } => self.ua_timer(ua as usize, at),
            Action::Timer { to, incarnation } => {
                let to = to as usize;
                let n = &mut self.nodes[to];
                if n.incarnation == incarnation && n.timer_at == Some(at) {
                    n.timer_at = None;
                    if let Some(h) = n.host.as_deref_mut() {
                        let _ = h.handle_input(now, Input::Timeout);
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
