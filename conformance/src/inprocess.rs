//! The production core (crate `sascribe`) as a [`System`]: one sans-IO [`Peer`] per trace
//! peer, every datagram captured and held by the harness, time and timers owned by the
//! harness. The mapping between production events and the trace's abstract actions is
//! documented in `conformance/MAPPING.md`; this module is its implementation.
//!
//! **The seam.** Everything the harness does to a peer goes through a [`Driver`]: the sans-IO
//! core called directly ([`Mode::Core`], the default), or the tokio runtime's event loop with
//! the harness's transport and clock ([`Mode::Runtime`]).

use crate::driver::{CoreDriver, Driver, RuntimeDriver};
use crate::sut::{ClientRequest, Input, Observed, System};
use crate::{AbstractMsg, ClientOutcome, Config as TraceConfig};
use bytes::Bytes;
use sascribe::event::{PublishError, SubRejectReason};
use sascribe::wire::{Codec, Latest, Msg, PublishReply, Routed};
use sascribe::{Config, ETag, Event, GroupId, Millis, NodeHandle, NodeId, Peer, PubHandle};
use sascribe::{RequestTimer, SubHandle};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

/// Intervals of the periodic maintenance the model has no counterpart for (keep-alives,
/// heartbeats, leaf-set exchanges, replica refresh): far beyond any trace, so they never fire.
pub const NEVER: Millis = 1_000_000_000;
/// Seconds per abstract expiry unit.
pub const EXPIRY_UNIT_SECS: u32 = 60;
/// Subscription expiry the harness asks for (seconds).
pub const SUB_EXPIRES: u32 = 3_600;
/// Bound on silent deliveries and timer firings while settling one input (loop guard).
const MAX_SETTLE: usize = 100_000;
/// How far ahead a deadline may lie for the harness to fire it as a silent timer (the record
/// fetch of a new root: `fetch_timeout` × its attempts); subscription and publication
/// expiries lie minutes or hours ahead and never fire by themselves.
const SILENT_HORIZON: Millis = 10_000;

/// A hook that adjusts the production configuration after the trace mapping (used by the
/// mutant tests to select a seeded bug).
pub type ConfigHook = Box<dyn Fn(&mut Config) + Send>;

/// How the harness drives each production peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// The sans-IO `Peer`, called directly.
    #[default]
    Core,
    /// The `Peer` inside the tokio runtime's event loop (`sascribe::runtime::Node`), with a
    /// harness transport and clock.
    Runtime,
}

/// The production core behind [`System`].
#[derive(Default)]
pub struct InProcess {
    hook: Option<ConfigHook>,
    mode: Mode,
    cluster: Option<Cluster>,
}

impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcess")
            .field("initialised", &self.cluster.is_some())
            .finish()
    }
}

impl InProcess {
    /// A system that builds its peers on `init`.
    pub fn new() -> Self {
        InProcess::default()
    }

    /// Like [`InProcess::new`], with `hook` applied to every peer's production configuration.
    pub fn with_config_hook(hook: ConfigHook) -> Self {
        InProcess {
            hook: Some(hook),
            ..InProcess::default()
        }
    }

    /// Drives the peers in `mode`.
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }
}

impl System for InProcess {
    fn handle(&mut self, input: &Input) -> Result<Observed, String> {
        if let Input::Init { config } = input {
            self.cluster = None;
            let mut c = Cluster::new(config, self.hook.as_deref(), self.mode)?;
            let obs = c.settle();
            self.cluster = Some(c);
            return Ok(obs);
        }
        let c = self
            .cluster
            .as_mut()
            .ok_or("the first input must be init")?;
        c.input(input)?;
        Ok(c.settle())
    }
}

/// The production configuration for a trace (see MAPPING.md, "Configuration").
pub fn production_config(t: &TraceConfig) -> Config {
    let max = EXPIRY_UNIT_SECS * u32::from(t.max_expires.max(1));
    Config {
        leaf_set_size: 2 * t.leaf_half,
        replicas: t.k,
        keepalive_interval: NEVER,
        leaf_fail_timeout: 4 * NEVER,
        table_fail_timeout: 4 * NEVER,
        table_ping_interval: NEVER,
        leaf_exchange_interval: NEVER,
        tombstone_ttl: 4 * NEVER,
        dead_probe_interval: NEVER,
        bootstrap_retry: NEVER,
        heartbeat_interval: NEVER,
        parent_timeout: 4 * NEVER,
        child_timeout: 4 * NEVER,
        request_retry: NEVER,
        request_timeout: 4 * NEVER,
        replica_refresh: NEVER,
        pub_min_expires: EXPIRY_UNIT_SECS,
        pub_max_expires: max,
        pub_default_expires: max,
        sub_min_expires: 60,
        sub_max_expires: SUB_EXPIRES,
        ..Config::default()
    }
}

/// Parses a 32-digit hex id.
fn parse_id(hex: &str) -> Result<u128, String> {
    u128::from_str_radix(hex, 16).map_err(|e| format!("bad 128-bit id '{hex}': {e}"))
}

/// The body of abstract value `v`.
pub fn body_of(v: u8) -> Bytes {
    Bytes::from(format!("v{v}"))
}

/// The abstract value of a body `vN` (`None` for anything else).
pub fn value_of(body: &[u8]) -> Option<u8> {
    std::str::from_utf8(body)
        .ok()?
        .strip_prefix('v')?
        .parse()
        .ok()
}

/// One production peer and the harness's bookkeeping about it: the seam.
struct Slot {
    name: String,
    tid: u16,
    handle: NodeHandle,
    driver: Box<dyn Driver>,
    crashed: bool,
    known_dead: BTreeSet<usize>,
    /// The model's per-peer request counter (subscriptions and re-JOINs).
    counter: u8,
    /// Counter of this peer's outstanding re-JOIN.
    rejoin: Option<u8>,
}

/// A captured datagram.
struct Flight {
    from: usize,
    to: usize,
    payload: Vec<u8>,
    abs: Option<AbstractMsg>,
    what: String,
}

/// What the harness does with a captured datagram of a kind the model does not have.
#[derive(PartialEq, Eq)]
enum Policy {
    /// A modelled kind: held until a `deliver` step names it.
    Modelled,
    /// Delivered at once, in FIFO order (overlay maintenance, root record fetch).
    Immediate,
    /// Never delivered (tree maintenance driven by timers the model abstracts).
    Held,
}

struct Ua {
    name: String,
    peer: usize,
    /// Publishes sent so far (the model's request counter of a publisher).
    sent: u8,
}

struct Cluster {
    cfg: TraceConfig,
    gid: GroupId,
    codec: Codec,
    now: Millis,
    slots: Vec<Slot>,
    uas: Vec<Ua>,
    in_flight: Vec<Flight>,
    silent: VecDeque<Flight>,
    held: usize,
    /// Subscriptions / publications called at a peer whose request id is not yet seen.
    sub_unassigned: Vec<VecDeque<(usize, String)>>,
    pub_unassigned: Vec<VecDeque<(u64, String)>>,
    join_names: HashMap<(u128, u64), String>,
    nonce_names: HashMap<(u128, u64), String>,
    sub_names: HashMap<u64, String>,
    pub_names: HashMap<u64, String>,
    etag_seq: HashMap<ETag, u8>,
    seq_etag: HashMap<u8, ETag>,
    rev_seq: HashMap<(usize, u64), u64>,
    obs: Observed,
}

impl Cluster {
    fn new(
        cfg: &TraceConfig,
        hook: Option<&(dyn Fn(&mut Config) + Send)>,
        mode: Mode,
    ) -> Result<Self, String> {
        if cfg.digit_bits == 0 || cfg.digit_bits > 8 {
            return Err(format!("digit_bits {} is not in 1..=8", cfg.digit_bits));
        }
        let mut pcfg = production_config(cfg);
        if let Some(h) = hook {
            h(&mut pcfg);
        }
        let now = 0;
        let mut handles = Vec::new();
        for (i, p) in cfg.peers.iter().enumerate() {
            let addr = SocketAddr::from(([127, 0, 0, 1], 20_000 + i as u16));
            handles.push(NodeHandle {
                id: NodeId(parse_id(&p.id128)?),
                addr,
            });
        }
        let index: HashMap<&str, usize> = cfg
            .peers
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.as_str(), i))
            .collect();
        let lookup = |n: &str| -> Result<NodeHandle, String> {
            index
                .get(n)
                .map(|&i| handles[i])
                .ok_or_else(|| format!("unknown peer '{n}' in routing state"))
        };
        let rt = match mode {
            Mode::Core => None,
            Mode::Runtime => Some(Arc::new(
                tokio::runtime::Builder::new_current_thread()
                    .build()
                    .map_err(|e| format!("cannot start a tokio runtime: {e}"))?,
            )),
        };
        let mut slots = Vec::new();
        for (i, p) in cfg.peers.iter().enumerate() {
            let mut peer = Peer::new(
                handles[i].id,
                handles[i].addr,
                pcfg.clone(),
                now,
                7 + i as u64,
            );
            let mut rows = Vec::new();
            let mut known = Vec::new();
            for r in &p.routing_table {
                let mut row = Vec::new();
                for c in r {
                    let h = c.as_deref().map(lookup).transpose()?;
                    known.extend(h);
                    row.push(h);
                }
                rows.push(row);
            }
            for n in &p.leaf_set {
                known.push(lookup(n)?);
            }
            peer.install_routing_state(now, &known);
            peer.set_explicit_routing(cfg.digit_bits, rows);
            let driver: Box<dyn Driver> = match &rt {
                None => Box::new(CoreDriver::new(peer)),
                Some(rt) => Box::new(RuntimeDriver::start(Arc::clone(rt), peer, now)),
            };
            slots.push(Slot {
                name: p.name.clone(),
                tid: p.id,
                handle: handles[i],
                driver,
                crashed: false,
                known_dead: BTreeSet::new(),
                counter: 0,
                rejoin: None,
            });
        }
        let mut uas = Vec::new();
        for u in cfg.subscribers.iter().chain(&cfg.publishers) {
            let peer = *index
                .get(u.peer.as_str())
                .ok_or_else(|| format!("user agent {} at unknown peer {}", u.name, u.peer))?;
            uas.push(Ua {
                name: u.name.clone(),
                peer,
                sent: 0,
            });
        }
        let n = slots.len();
        Ok(Cluster {
            gid: GroupId(parse_id(&cfg.gid128)?),
            cfg: cfg.clone(),
            codec: Codec::new(pcfg.cluster_key.as_deref()),
            now,
            slots,
            uas,
            in_flight: Vec::new(),
            silent: VecDeque::new(),
            held: 0,
            sub_unassigned: vec![VecDeque::new(); n],
            pub_unassigned: vec![VecDeque::new(); n],
            join_names: HashMap::new(),
            nonce_names: HashMap::new(),
            sub_names: HashMap::new(),
            pub_names: HashMap::new(),
            etag_seq: HashMap::new(),
            seq_etag: HashMap::new(),
            rev_seq: HashMap::new(),
            obs: Observed::default(),
        })
    }

    fn peer_ix(&self, name: &str) -> Result<usize, String> {
        self.slots
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| format!("unknown peer '{name}'"))
    }

    fn ua_ix(&self, name: &str) -> Result<usize, String> {
        self.uas
            .iter()
            .position(|u| u.name == name)
            .ok_or_else(|| format!("unknown user agent '{name}'"))
    }

    fn log(&mut self, s: String) {
        self.obs.log.push(s);
    }

    fn live(&mut self, i: usize, what: &str) -> Result<&mut Slot, String> {
        let s = &mut self.slots[i];
        if s.crashed {
            return Err(format!("{what}: peer {} has crashed", s.name));
        }
        Ok(s)
    }

    fn input(&mut self, input: &Input) -> Result<(), String> {
        let now = self.now;
        match input {
            Input::Init { .. } => return Err("init was already done".into()),
            Input::ClientRequest { ua, peer, request } => {
                let u = self.ua_ix(ua)?;
                let p = self.peer_ix(peer)?;
                if self.uas[u].peer != p {
                    return Err(format!("user agent {ua} is attached to another peer"));
                }
                let gid = self.gid;
                match request {
                    ClientRequest::Subscribe => {
                        let n = self.slots[p].counter;
                        self.slots[p].counter += 1;
                        let name = format!("{peer}/{ua}#{n}");
                        self.log(format!("{peer}.subscribe(handle {u}) as {name}"));
                        self.sub_names.insert(u as u64, name.clone());
                        self.sub_unassigned[p].push_back((u, name));
                        self.live(p, "subscribe")?.driver.call(
                            now,
                            Box::new(move |peer, now| {
                                peer.subscribe(now, gid, SubHandle(u as u64), SUB_EXPIRES)
                                    .map(|g| format!("granted {g} s"))
                                    .map_err(|e| format!("subscribe refused: {e}"))
                            }),
                        )?;
                    }
                    ClientRequest::Unsubscribe => {
                        self.log(format!("{peer}.unsubscribe(handle {u})"));
                        self.live(p, "unsubscribe")?.driver.call(
                            now,
                            Box::new(move |peer, now| {
                                // A subscription that already ended (rejected, timed out) is
                                // unknown by now: nothing to do, as in the model.
                                Ok(match peer.unsubscribe(now, SubHandle(u as u64)) {
                                    Ok(()) => "ended".to_string(),
                                    Err(e) => format!("nothing to end: {e}"),
                                })
                            }),
                        )?;
                    }
                    ClientRequest::Publish {
                        value,
                        if_match,
                        expires,
                    } => {
                        let n = self.uas[u].sent;
                        self.uas[u].sent += 1;
                        let name = format!("{peer}/{ua}#{n}");
                        let h = (u as u64) << 8 | u64::from(n);
                        self.pub_names.insert(h, name.clone());
                        self.pub_unassigned[p].push_back((h, name.clone()));
                        let etag = if_match.map(|s| self.etag_for(s));
                        let secs = EXPIRY_UNIT_SECS * u32::from(*expires);
                        self.log(format!(
                            "{peer}.publish(v{value}, if_match {etag:?}, expires {secs}) as {name}"
                        ));
                        let body = body_of(*value);
                        self.live(p, "publish")?.driver.call(
                            now,
                            Box::new(move |peer, now| {
                                peer.publish(now, gid, PubHandle(h), Some(body), etag, Some(secs));
                                Ok(String::new())
                            }),
                        )?;
                    }
                }
            }
            Input::Deliver { msg } | Input::Lose { msg } => {
                let Some(i) = self
                    .in_flight
                    .iter()
                    .position(|f| f.abs.as_ref() == Some(msg))
                else {
                    let mut have: Vec<String> = self
                        .in_flight
                        .iter()
                        .filter_map(|f| f.abs.as_ref().map(crate::chart::msg_label))
                        .collect();
                    have.sort();
                    return Err(format!(
                        "the implementation has no such message in flight: {}; in flight: [{}]",
                        crate::chart::msg_label(msg),
                        have.join("; ")
                    ));
                };
                let f = self.in_flight.remove(i);
                if matches!(input, Input::Deliver { .. }) {
                    self.deliver(f);
                } else {
                    self.log(format!("lost {}", f.what));
                }
            }
            Input::DetectFailure { at, peer } => {
                let a = self.peer_ix(at)?;
                let d = self.peer_ix(peer)?;
                let id = self.slots[d].handle.id;
                self.slots[a].known_dead.insert(d);
                let repaired = self.model_leaf_set(a);
                let s = self.live(a, "detect_failure")?;
                // The model's leaf-set repair is instantaneous and complete: hand the peer the
                // live neighbours the repair would find (MAPPING.md, "Failure detection").
                s.driver.call(
                    now,
                    Box::new(move |peer, now| {
                        peer.declare_dead(now, id, &repaired);
                        Ok(String::new())
                    }),
                )?;
                self.log(format!("{at}.declare_dead({peer}) + leaf-set repair"));
            }
            Input::FireTimer { at, req, attempt } => {
                let a = self.peer_ix(at)?;
                let timer = self.timer_of(a, req)?;
                let give_up = *attempt as usize > self.cfg.retry_limit;
                let s = self.live(a, "fire_timer")?;
                let found = s.driver.call(
                    now,
                    Box::new(move |peer, now| {
                        Ok(peer.fire_request_timer(now, timer, give_up).to_string())
                    }),
                )?;
                self.log(format!(
                    "{at}.fire_request_timer({timer:?}, give_up {give_up}) -> {found}"
                ));
            }
            Input::ReplicationRetry { at } => {
                let a = self.peer_ix(at)?;
                let s = self.live(a, "replication_retry")?;
                let root = s.driver.call(
                    now,
                    Box::new(move |peer, now| Ok(peer.fire_replication_retry(now).to_string())),
                )?;
                self.log(format!("{at}.fire_replication_retry() -> {root}"));
            }
            Input::Expire { at } => {
                let a = self.peer_ix(at)?;
                // Every granted expiry is at most `max_expires` units: move the clock past it,
                // then run the expiry the root's periodic tick runs.
                let lifetime = Millis::from(EXPIRY_UNIT_SECS * u32::from(self.cfg.max_expires));
                self.now += lifetime * 1000 + 1;
                let now = self.now;
                let s = self.live(a, "expire")?;
                let expired = s.driver.call(
                    now,
                    Box::new(move |peer, now| Ok(peer.fire_expiry(now).to_string())),
                )?;
                self.log(format!("{at}.fire_expiry() at t={now} -> {expired}"));
            }
            Input::Crash { peer } => {
                let p = self.peer_ix(peer)?;
                self.slots[p].crashed = true;
                self.log(format!("{peer} crashed"));
            }
            Input::Restart { peer } => {
                let p = self.peer_ix(peer)?;
                return Err(format!(
                    "restart of {} is not supported by the in-process system (version-1 traces are crash-stop)",
                    self.slots[p].name
                ));
            }
        }
        Ok(())
    }

    /// The model's leaf set of peer `a` given the crashes it detected (topology.rs rule).
    fn model_leaf_set(&self, a: usize) -> Vec<NodeHandle> {
        let me = self.slots[a].tid;
        let ring = 1u32 << self.cfg.id_bits;
        let mut live: Vec<(u32, usize)> = (0..self.slots.len())
            .filter(|&q| q != a && !self.slots[a].known_dead.contains(&q))
            .map(|q| {
                let off = (u32::from(self.slots[q].tid) + ring - u32::from(me)) % ring;
                (off, q)
            })
            .collect();
        live.sort_unstable();
        let h = self.cfg.leaf_half;
        let pick: Vec<usize> = if live.len() <= 2 * h {
            live.iter().map(|x| x.1).collect()
        } else {
            live[..h]
                .iter()
                .chain(&live[live.len() - h..])
                .map(|x| x.1)
                .collect()
        };
        pick.into_iter().map(|q| self.slots[q].handle).collect()
    }

    fn timer_of(&self, at: usize, req: &str) -> Result<RequestTimer, String> {
        let bad = || format!("request name '{req}' is not origin/who#n");
        let (origin, rest) = req.split_once('/').ok_or_else(bad)?;
        let (who, n) = rest.split_once('#').ok_or_else(bad)?;
        let n: u8 = n.parse().map_err(|_| bad())?;
        if origin != self.slots[at].name {
            return Err(format!(
                "request {req} was not issued by {}",
                self.slots[at].name
            ));
        }
        if who == origin {
            return Ok(RequestTimer::Rejoin(self.gid));
        }
        let u = self.ua_ix(who)?;
        if self.cfg.subscribers.iter().any(|s| s.name == who) {
            Ok(RequestTimer::Subscription(SubHandle(u as u64)))
        } else {
            Ok(RequestTimer::Publication(PubHandle(
                (u as u64) << 8 | u64::from(n),
            )))
        }
    }

    fn etag_for(&self, seq: u8) -> ETag {
        // An ETag never minted stands for a publication that does not exist (yet).
        self.seq_etag
            .get(&seq)
            .copied()
            .unwrap_or(ETag(0xE7A6_0000_0000_0000 | u64::from(seq)))
    }

    /// Records that the root minted `e` for `seq`; returns the seq the table holds for `e`
    /// (the first one seen: an ETag reused for another seq keeps mapping to the first).
    fn learn_etag(&mut self, e: ETag, seq: u64) -> u8 {
        let seq = seq.min(255) as u8;
        let s = *self.etag_seq.entry(e).or_insert(seq);
        self.seq_etag.entry(s).or_insert(e);
        s
    }

    fn seq_of_etag(&self, e: ETag) -> u8 {
        match self.etag_seq.get(&e) {
            Some(&s) => s,
            None if e.0 >> 16 == 0xE7A6_0000_0000 => e.0 as u8,
            None => u8::MAX,
        }
    }

    fn deliver(&mut self, f: Flight) {
        let to = &mut self.slots[f.to];
        if to.crashed {
            self.obs
                .log
                .push(format!("dropped (recipient crashed): {}", f.what));
            return;
        }
        // A re-JOIN's answer reaching its origin ends it.
        if let Ok(env) = self.codec.decode(&f.payload) {
            if let Msg::JoinAck {
                join_id: 0, path, ..
            }
            | Msg::JoinNack {
                join_id: 0, path, ..
            } = &env.msg
            {
                if path.len() == 1 && path[0].id == to.handle.id {
                    to.rejoin = None;
                }
            }
        }
        let from = self.slots[f.from].handle.addr;
        let now = self.now;
        self.slots[f.to].driver.datagram(now, from, f.payload);
        self.obs.log.push(format!("delivered {}", f.what));
    }

    /// Runs silent traffic and silent timers to quiescence and returns what the input made
    /// observable.
    fn settle(&mut self) -> Observed {
        let mut n = 0;
        loop {
            n += 1;
            self.collect();
            if n > MAX_SETTLE {
                self.log("settle: loop bound reached (silent traffic does not quiesce)".into());
                break;
            }
            if let Some(f) = self.silent.pop_front() {
                self.deliver(f);
                continue;
            }
            // Silent timers: a new root's record fetch timing out, due within a few seconds.
            // Subscription and publication expiries lie minutes or hours ahead: the trace
            // decides when a publication expires (`expire`), and subscriptions outlive it.
            let horizon = self.now + SILENT_HORIZON;
            let due = self
                .slots
                .iter_mut()
                .enumerate()
                .filter(|(_, s)| !s.crashed)
                .filter_map(|(i, s)| s.driver.next_deadline().map(|t| (t, i)))
                .filter(|(t, _)| *t <= horizon)
                .min();
            if let Some((t, i)) = due {
                self.now = self.now.max(t);
                let now = self.now;
                self.log(format!("timer at {} fired (t={now})", self.slots[i].name));
                let r = self.slots[i].driver.call(
                    now,
                    Box::new(|peer, now| {
                        peer.handle_timeout(now);
                        Ok(String::new())
                    }),
                );
                if let Err(e) = r {
                    self.log(format!("timer: {e}"));
                }
                continue;
            }
            break;
        }
        std::mem::take(&mut self.obs)
    }

    /// Takes every peer's outputs: datagrams are classified, events become client outcomes.
    fn collect(&mut self) {
        for i in 0..self.slots.len() {
            let (tx, evs, notes) = self.slots[i].driver.drain();
            self.obs.log.extend(notes);
            for t in tx {
                let Some(to) = self.slots.iter().position(|s| s.handle.addr == t.dst) else {
                    self.log(format!("datagram to unknown address {}", t.dst));
                    continue;
                };
                self.capture(i, to, t.payload);
            }
            for e in evs {
                self.event(e);
            }
        }
    }

    fn capture(&mut self, from: usize, to: usize, payload: Vec<u8>) {
        let msg = match self.codec.decode(&payload) {
            Ok(env) => env.msg,
            Err(e) => {
                self.log(format!(
                    "undecodable datagram from {}: {e}",
                    self.slots[from].name
                ));
                return;
            }
        };
        let what = format!(
            "{} -> {}: {}",
            self.slots[from].name,
            self.slots[to].name,
            short(&msg)
        );
        let (policy, abs) = self.abstract_of(from, to, &msg);
        let f = Flight {
            from,
            to,
            payload,
            abs,
            what,
        };
        match policy {
            Policy::Modelled => {
                if let Some(a) = &f.abs {
                    self.obs.sent.push(a.clone());
                }
                self.in_flight.push(f);
            }
            Policy::Immediate => self.silent.push_back(f),
            Policy::Held => {
                self.held += 1;
                self.obs.log.push(format!("held: {}", f.what));
            }
        }
    }

    fn name_join(&mut self, origin: NodeId, join_id: u64) -> String {
        let o = self.slots.iter().position(|s| s.handle.id == origin);
        let Some(o) = o else {
            return "?".into();
        };
        if join_id == 0 {
            let n = match self.slots[o].rejoin {
                Some(n) => n,
                None => {
                    let n = self.slots[o].counter;
                    self.slots[o].counter += 1;
                    self.slots[o].rejoin = Some(n);
                    n
                }
            };
            let name = &self.slots[o].name;
            return format!("{name}/{name}#{n}");
        }
        if let Some(n) = self.join_names.get(&(origin.0, join_id)) {
            return n.clone();
        }
        match self.sub_unassigned[o].pop_front() {
            Some((_, name)) => {
                self.join_names.insert((origin.0, join_id), name.clone());
                name
            }
            None => format!("{}/?{join_id:x}", self.slots[o].name),
        }
    }

    fn name_pub(&mut self, origin: NodeId, nonce: u64) -> String {
        if let Some(n) = self.nonce_names.get(&(origin.0, nonce)) {
            return n.clone();
        }
        let Some(o) = self.slots.iter().position(|s| s.handle.id == origin) else {
            return "?".into();
        };
        match self.pub_unassigned[o].pop_front() {
            Some((_, name)) => {
                self.nonce_names.insert((origin.0, nonce), name.clone());
                name
            }
            None => format!("{}/?{nonce:x}", self.slots[o].name),
        }
    }

    fn set_latest(a: &mut AbstractMsg, l: &Latest) {
        a.seq = Some(l.seq.min(255) as u8);
        a.value = l.body.as_deref().and_then(value_of);
    }

    fn abstract_of(&mut self, from: usize, to: usize, msg: &Msg) -> (Policy, Option<AbstractMsg>) {
        let mut a = AbstractMsg {
            kind: String::new(),
            from: self.slots[from].name.clone(),
            to: self.slots[to].name.clone(),
            gid: Some(self.cfg.gid),
            seq: None,
            value: None,
            req: None,
            if_match: None,
        };
        let ours = |g: &GroupId| *g == self.gid;
        match msg {
            Msg::Routed {
                body:
                    Routed::Join {
                        gid,
                        origin,
                        join_id,
                        carried,
                        ..
                    },
                ..
            } if ours(gid) => {
                a.kind = "join".into();
                a.req = Some(self.name_join(origin.id, *join_id));
                if let Some(c) = carried.as_ref().filter(|c| c.seq > 0) {
                    Self::set_latest(&mut a, c);
                }
            }
            Msg::Routed {
                body:
                    Routed::Publish {
                        gid,
                        req,
                        body,
                        if_match,
                        ..
                    },
                ..
            } if ours(gid) => {
                a.kind = "publish_fwd".into();
                a.req = Some(self.name_pub(req.origin, req.nonce));
                a.value = body.as_deref().and_then(value_of);
                a.if_match = if_match.map(|e| self.seq_of_etag(e));
            }
            Msg::Provisional { gid, .. } if ours(gid) => {
                a.kind = "pack".into();
                a.gid = None;
            }
            Msg::JoinAck {
                gid,
                join_id,
                latest,
                path,
            } if ours(gid) => {
                a.kind = "ack".into();
                let origin = path.first().map_or(NodeId(0), |h| h.id);
                a.req = Some(self.name_join(origin, *join_id));
                Self::set_latest(&mut a, latest);
            }
            Msg::JoinNack {
                gid,
                join_id,
                latest,
                path,
            } if ours(gid) => {
                a.kind = "nack".into();
                let origin = path.first().map_or(NodeId(0), |h| h.id);
                a.req = Some(self.name_join(origin, *join_id));
                if latest.seq > 0 {
                    Self::set_latest(&mut a, latest);
                }
            }
            Msg::Notify { gid, latest } if ours(gid) => {
                a.kind = "multicast".into();
                Self::set_latest(&mut a, latest);
            }
            Msg::PublishReply { req, reply } => {
                a.kind = "publish_reply".into();
                a.req = Some(self.name_pub(req.origin, req.nonce));
                if let PublishReply::Ok(o) = reply {
                    a.seq = Some(o.seq.min(255) as u8);
                }
            }
            Msg::Replicate { gid, rec } if ours(gid) => {
                self.rev_seq.insert((from, rec.rev), rec.seq);
                if let Some(e) = rec.etag.filter(|_| rec.body.is_some()) {
                    // The ETag the root minted for this seq (MAPPING.md, "ETags").
                    self.learn_etag(e, rec.seq);
                }
                if rec.seq == 0 {
                    // An empty record (a root that has nothing yet): the model has no record.
                    return (Policy::Immediate, None);
                }
                a.kind = "replicate".into();
                a.seq = Some(rec.seq.min(255) as u8);
                a.value = rec.body.as_deref().and_then(value_of);
            }
            Msg::ReplicateAck { gid, rev } if ours(gid) => {
                let seq = self.rev_seq.get(&(to, *rev)).copied().unwrap_or(0);
                if seq == 0 {
                    return (Policy::Immediate, None);
                }
                a.kind = "replica_ack".into();
                a.seq = Some(seq.min(255) as u8);
            }
            Msg::Leave { .. } | Msg::Heartbeat { .. } | Msg::HeartbeatAck { .. } => {
                return (Policy::Held, None)
            }
            _ => return (Policy::Immediate, None),
        }
        (Policy::Modelled, Some(a))
    }

    fn event(&mut self, e: Event) {
        let names: Vec<String> = self.uas.iter().map(|u| u.name.clone()).collect();
        let ua_of = |h: u64| names.get((h >> 8) as usize).cloned();
        let sub_ua = |h: SubHandle| names.get(h.0 as usize).cloned();
        let mut out = ClientOutcome {
            ua: String::new(),
            kind: String::new(),
            seq: None,
            value: None,
            etag: None,
            expires: None,
        };
        let (ua, kind) = match &e {
            Event::SubAccepted { handle, .. } => {
                self.forget_sub(*handle);
                (sub_ua(*handle), "subscribe_ok")
            }
            Event::SubRejected { handle, reason } => {
                self.forget_sub(*handle);
                let k = match reason {
                    SubRejectReason::NoState => "subscribe_rejected",
                    SubRejectReason::Timeout => "subscribe_timeout",
                };
                (sub_ua(*handle), k)
            }
            Event::Notify { handle, seq, state } => {
                out.seq = Some((*seq).min(255) as u8);
                out.value = state.as_deref().and_then(value_of);
                (sub_ua(*handle), "notify")
            }
            Event::SubTerminated { handle, .. } => (sub_ua(*handle), "subscribe_terminated"),
            Event::Published {
                req,
                etag,
                expires,
                seq,
            } => {
                self.forget_pub(req.0);
                let seq = (*seq).min(255) as u8;
                if let Some(e) = etag {
                    out.etag = Some(self.learn_etag(*e, u64::from(seq)));
                }
                out.expires = Some((*expires / EXPIRY_UNIT_SECS).min(255) as u8);
                (ua_of(req.0), "publish_ok")
            }
            Event::PublishFailed { req, reason } => {
                self.forget_pub(req.0);
                let k = match reason {
                    PublishError::PreconditionFailed => "publish_412",
                    PublishError::Timeout => "publish_timeout",
                    PublishError::IntervalTooBrief { .. } => "publish_423",
                    PublishError::BadRequest => "publish_400",
                    PublishError::TooLarge => "publish_413",
                };
                (ua_of(req.0), k)
            }
            other => {
                self.log(format!("event (not client-visible): {other:?}"));
                return;
            }
        };
        out.ua = ua.unwrap_or_else(|| "?".into());
        out.kind = kind.into();
        self.obs.client.push(out);
    }

    fn forget_sub(&mut self, h: SubHandle) {
        for q in &mut self.sub_unassigned {
            q.retain(|(u, _)| *u as u64 != h.0);
        }
    }

    fn forget_pub(&mut self, h: u64) {
        for q in &mut self.pub_unassigned {
            q.retain(|(x, _)| *x != h);
        }
    }
}

/// A short description of a production message (for logs).
fn short(m: &Msg) -> String {
    let s = format!("{m:?}");
    if s.len() > 160 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(160).map_or(s.len(), |c| c.0)]
        )
    } else {
        s
    }
}
