//! The harness-owned cluster (MAPPING.md, "Who owns what", "Actions", "Judging a step"): one
//! gateway host per trace peer behind a [`Driver`], the trace's user agents, every overlay
//! datagram captured and held until a step names it, SIP datagrams between user agents and
//! their peers delivered at once, time and timers owned by the harness.

use super::abstraction::{Policy, RawState};
use super::clients::{ua_addr, TraceUa};
use super::{
    parse_id, production_config, Mode, FAIL_TIMEOUT, KEEPALIVE, MAX_SETTLE, RESOURCE,
    SILENT_HORIZON,
};
use crate::driver::{Call, CoreDriver, Drained, Driver, RuntimeDriver};
use crate::sut::{Input, Observed};
use crate::{AbstractMsg, Config as TraceConfig, PeerState};
use sascribe::sip::SipConfig;
use sascribe::ua::UserAgent;
use sascribe::wire::{Codec, Dest, Msg, PastryMsg, Routed, ScribeMsg, Stamp, REJOIN_ID_BIT};
use sascribe::{
    Config, ETag, GroupId, Host, Millis, NodeHandle, NodeId, PubHandle, RequestTimer, Seeds,
    Socket, SubHandle,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

mod probe;
mod routes;
pub(super) use probe::Probe;

/// One production peer and the harness's bookkeeping about it: the seam.
pub(super) struct Slot {
    pub name: String,
    pub tid: u16,
    pub handle: NodeHandle,
    /// Its SIP address (where its user agents send requests).
    pub sip: SocketAddr,
    driver: Box<dyn Driver>,
    crashed: bool,
    /// Paused (`suspect`, until `heal`): it takes no step, and overlay datagrams to or from
    /// it are lost.
    paused: bool,
    known_dead: BTreeSet<usize>,
    /// Peers of `known_dead` it declared dead without ever holding their address (in neither
    /// its leaf set, its learnt routing table nor the trace's routing table loaded into it:
    /// with ids that share leading digits, a routing-table slot holds one of several peers
    /// that fit it). Production buries them with no address, so it has none to probe.
    unaddressed: BTreeSet<usize>,
    /// The peers that join mid-run which this incarnation has heard of (taken in at `alive`,
    /// or installed when it restarted): production never heard of the others.
    met: BTreeSet<usize>,
    /// The model's per-peer request counter (subscriptions and re-JOINs).
    pub counter: u8,
    /// Counter of this peer's outstanding re-JOIN.
    pub rejoin: Option<u8>,
    /// How far this peer's clock is ahead of the harness's: its keep-alive failure detector
    /// ran its clock on (each peer's detects on its own; MAPPING.md, "Actions", `detect_failure`).
    skew: Millis,
    /// Restarts so far (`restart`): each incarnation is a new host with new seeds.
    incarnation: u8,
    /// Its statistics' takeovers and demotions when last read (a step's counted events are
    /// what they grew by).
    counts: [u64; 2],
    /// What this incarnation did that its statistics count, as the harness saw it
    /// ([`Cluster::check_counters`]).
    tally: Tally,
}

/// What a peer's incarnation was seen doing that what an operator reads of it must agree
/// with.
#[derive(Default)]
struct Tally {
    /// Tree-repair re-JOINs it sent as their origin (retransmissions included).
    rejoins: u64,
    /// Whether its root role of the group served when last read.
    serving: bool,
    /// The seq and document size of the last state it sent down the tree: a NOTIFY multicast
    /// or a JOIN's ACK, its own or forwarded (one seq has one document, whoever sends it).
    told: Option<(u64, usize)>,
    /// Its statistics when last read.
    stats: sascribe::Stats,
    /// The fetch rounds in which a peer answered it busy: (the round's epoch, that peer).
    busy_from: BTreeSet<(u64, NodeId)>,
    /// The seq of the last state its core gave its SIP layer for each local subscription
    /// (`Event::Notify`; [`Cluster::check_upcalls`]).
    notified: HashMap<SubHandle, u64>,
}

/// Every counter of a peer's statistics but those per message kind, by name. The pattern
/// names every field: a counter added to `Stats` is checked too, or this does not compile.
/// (No allocation: the harness reads every live peer after every step.)
fn counters(s: &sascribe::Stats) -> [(&'static str, u64); 23] {
    let sascribe::Stats {
        rx_datagrams,
        rx_truncated,
        rx_oversized,
        rx_bad_version,
        rx_bad_mac,
        rx_malformed,
        rx_wrong_destination,
        rx_stale,
        rx_replayed,
        tx_datagrams,
        tx_bytes,
        tx_oversized,
        forwarded,
        peers_failed,
        takeovers,
        demotions,
        reconfirms,
        fetch_busy,
        fenced,
        revived,
        newcomers,
        pauses,
        rejoins,
        rx_kinds: _,
    } = s;
    [
        ("rx_datagrams", *rx_datagrams),
        ("rx_truncated", *rx_truncated),
        ("rx_oversized", *rx_oversized),
        ("rx_bad_version", *rx_bad_version),
        ("rx_bad_mac", *rx_bad_mac),
        ("rx_malformed", *rx_malformed),
        ("rx_wrong_destination", *rx_wrong_destination),
        ("rx_stale", *rx_stale),
        ("rx_replayed", *rx_replayed),
        ("tx_datagrams", *tx_datagrams),
        ("tx_bytes", *tx_bytes),
        ("tx_oversized", *tx_oversized),
        ("forwarded", *forwarded),
        ("peers_failed", *peers_failed),
        ("takeovers", *takeovers),
        ("demotions", *demotions),
        ("reconfirms", *reconfirms),
        ("fetch_busy", *fetch_busy),
        ("fenced", *fenced),
        ("revived", *revived),
        ("newcomers", *newcomers),
        ("pauses", *pauses),
        ("rejoins", *rejoins),
    ]
}

/// Everything the harness hands a peer goes through its clock: the harness's time plus the
/// peer's skew.
impl Slot {
    fn call(&mut self, now: Millis, f: Call) -> Result<String, String> {
        self.driver.call(now + self.skew, f)
    }

    fn datagram(&mut self, now: Millis, socket: Socket, from: SocketAddr, payload: Vec<u8>) {
        self.driver.datagram(now + self.skew, socket, from, payload);
    }

    fn timeout(&mut self, now: Millis) {
        self.driver.timeout(now + self.skew);
    }

    /// Its earliest deadline, on the harness's clock.
    fn next_deadline(&mut self) -> Option<Millis> {
        let t = self.driver.next_deadline()?;
        Some(t.saturating_sub(self.skew))
    }

    fn drain(&mut self) -> Drained {
        self.driver.drain()
    }
}

/// The SIP address of the trace's `i`-th peer.
fn sip_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 21_000 + i as u16))
}

/// The host of the trace's `i`-th peer in its `incarnation` (seeds differ per incarnation,
/// as a restarted process's CSPRNG does), with its SIP front end.
fn new_host(
    i: usize,
    incarnation: u8,
    h: NodeHandle,
    cfg: &Config,
    gid: GroupId,
    now: Millis,
) -> Host {
    let mut sip_cfg = SipConfig::new(sip_addr(i));
    sip_cfg.pinned.push((RESOURCE.to_string(), gid));
    // The front end grants what the overlay does (expiries are weeks long; subscriptions must
    // outlive the trace).
    sip_cfg.min_expires = cfg.pub_min_expires.min(cfg.sub_min_expires);
    sip_cfg.max_expires = cfg.pub_max_expires.max(cfg.sub_max_expires);
    // A SUBSCRIBE's 100 Trying comes from its JOIN's pACK alone (the front end's own, after a
    // delay, would reach the user agent first as a silent timer, and hide a missing one).
    sip_cfg.trying_delay = super::NEVER;
    let seeds = Seeds::reproducible(7 + i as u64 + 1000 * u64::from(incarnation));
    Host::new(h.id, h.addr, cfg.clone(), now, seeds).with_sip(sip_cfg)
}

/// A configured routing table's rows, each peer name looked up as a handle.
fn routing_rows(
    table: &[Vec<Option<String>>],
    lookup: impl Fn(&str) -> Result<NodeHandle, String>,
) -> Result<Vec<Vec<Option<NodeHandle>>>, String> {
    table
        .iter()
        .map(|r| {
            r.iter()
                .map(|c| c.as_deref().map(&lookup).transpose())
                .collect()
        })
        .collect()
}

/// The driver of `host`: called directly, or inside the runtime's event loop.
fn new_driver(
    rt: Option<&Arc<tokio::runtime::Runtime>>,
    host: Host,
    sip: SocketAddr,
    now: Millis,
) -> Box<dyn Driver> {
    match rt {
        None => Box::new(CoreDriver::new(host)),
        Some(rt) => Box::new(RuntimeDriver::start(Arc::clone(rt), host, sip, now)),
    }
}

/// A captured overlay datagram.
pub(super) struct Flight {
    from: usize,
    to: usize,
    payload: Vec<u8>,
    abs: Option<AbstractMsg>,
    what: String,
}

pub(super) struct Cluster {
    pub cfg: TraceConfig,
    pub gid: GroupId,
    codec: Codec,
    pub now: Millis,
    pub slots: Vec<Slot>,
    pub uas: Vec<TraceUa>,
    in_flight: Vec<Flight>,
    silent: VecDeque<Flight>,
    held: usize,
    /// Subscriptions / publications made at a peer whose request id is not yet seen.
    pub sub_unassigned: Vec<VecDeque<(usize, String)>>,
    pub pub_unassigned: Vec<VecDeque<(u64, String)>>,
    pub join_names: HashMap<(u128, u64), String>,
    /// The user agent whose SUBSCRIBE a JOIN (origin, request id) carries.
    pub join_ua: HashMap<(u128, u64), usize>,
    /// User agents that must have had a 100 Trying by the end of the step: a pACK for their
    /// SUBSCRIBE's JOIN reached its origin while the SUBSCRIBE awaited its answer.
    trying_due: Vec<usize>,
    /// What user agents were told that a SIP server must not tell them (a refresh refused).
    pub ua_faults: Vec<String>,
    /// What a core told its SIP layer that it must not ([`Cluster::check_upcalls`]).
    upcall_faults: Vec<String>,
    /// Busy answers delivered in the step to a fetching root: (root, the peer that answered,
    /// the round's epoch, the root's clock plus the time it named), checked after the step
    /// (`check_busy`).
    busy_due: Vec<(usize, usize, u64, Millis)>,
    pub nonce_names: HashMap<(u128, u64), String>,
    pub etag_seq: HashMap<ETag, u8>,
    pub seq_etag: HashMap<u8, ETag>,
    pub rev_seq: HashMap<(usize, u64), u64>,
    pub obs: Observed,
    /// The peer whose keep-alive failure detector the harness is running
    /// ([`Cluster::keepalive_detects`]).
    detecting: Option<usize>,
    /// The peers the detecting peer asked for their leaf set while its detector ran (its
    /// leaf-set repair, [`Cluster::keepalive_detects`]).
    repair_asked: Vec<usize>,
    /// The routing-table rows the detecting peer asked for meanwhile: (the peer asked, row).
    rows_asked: Vec<(usize, u8)>,
    /// What each peer's routes were last judged on ([`Cluster::check_routes`]).
    routes_judged: BTreeMap<usize, routes::Judged>,
    /// The keys whose routes [`Cluster::check_routes`] judges, as production's 128-bit keys
    /// ([`routes::route_keys`]; none when the peers' ids are not judged).
    route_keys: Arc<[u128]>,
    /// The peer closest to the group id with every peer alive: the group's first root, whose
    /// lazy record fetch is silent (the model's first root holds the role from the start).
    pub first_root: usize,
    /// Each peer's production configuration (the hook applied): a restarted peer's host is
    /// built from it again.
    peer_cfgs: Vec<Config>,
    /// The tokio runtime of [`Mode::Runtime`].
    rt: Option<Arc<tokio::runtime::Runtime>>,
}

impl Cluster {
    pub fn new(
        cfg: &TraceConfig,
        hook: Option<&(dyn Fn(&mut Config) + Send)>,
        mode: Mode,
    ) -> Result<Self, String> {
        if cfg.peers.is_empty() {
            return Err("config.peers is empty: a trace needs at least one peer".into());
        }
        if cfg.digit_bits == 0 || cfg.digit_bits > 8 {
            return Err(format!("digit_bits {} is not in 1..=8", cfg.digit_bits));
        }
        let mut pcfg = production_config(cfg);
        if let Some(h) = hook {
            h(&mut pcfg);
        }
        let gid = GroupId(parse_id(&cfg.gid128)?);
        let now = 0;
        let mut handles = Vec::new();
        for (i, p) in cfg.peers.iter().enumerate() {
            let addr = SocketAddr::from(([127, 0, 0, 1], 20_000 + i as u16));
            handles.push(NodeHandle {
                id: NodeId(parse_id(&p.id128)?),
                addr,
            });
        }
        // Peers that join mid-run are outside the overlay at the start: nobody knows them.
        let joiners: BTreeSet<usize> = (0..cfg.peers.len())
            .filter(|&i| cfg.peers[i].joins)
            .collect();
        let first_root = (0..handles.len())
            .filter(|i| !joiners.contains(i))
            .reduce(|best, i| {
                if sascribe::id::closer(gid.0, handles[i].id.0, handles[best].id.0) {
                    i
                } else {
                    best
                }
            })
            .unwrap_or(0);
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
        let mut hosts = Vec::new();
        let mut peer_cfgs = Vec::new();
        for (i, h) in handles.iter().enumerate() {
            let mut peer_cfg = pcfg.clone();
            if i == first_root && !cfg.leases {
                // The first root's lazy fetch is silent (the model's first root holds the role
                // from the start): a replica that crashed before it is given up on by
                // production's fetch timeout, fired as a silent timer.
                peer_cfg.fetch_timeout = sascribe::Config::default().fetch_timeout;
            }
            hosts.push(new_host(i, 0, *h, &peer_cfg, gid, now));
            peer_cfgs.push(peer_cfg);
        }
        // The peers form the overlay with production's own join, and it must be the one the
        // configuration describes; the model's routing tables are then loaded over it.
        let names: Vec<String> = cfg.peers.iter().map(|p| p.name.clone()).collect();
        let leaf_sets = cfg
            .peers
            .iter()
            .map(|p| {
                p.leaf_set
                    .iter()
                    .map(|n| {
                        index
                            .get(n.as_str())
                            .copied()
                            .ok_or_else(|| format!("unknown peer '{n}' in routing state"))
                    })
                    .collect::<Result<BTreeSet<usize>, String>>()
            })
            .collect::<Result<Vec<_>, String>>()?;
        let hosts = if joiners.is_empty() {
            super::overlay::form(&mut hosts, &names, now)?;
            super::overlay::check(&hosts, &names, &leaf_sets, gid.0)?;
            hosts
        } else {
            // The peers present from the start form the overlay among themselves; its leaf
            // sets are those of their ring (the configuration's include the joiners).
            let present: Vec<usize> = (0..hosts.len()).filter(|i| !joiners.contains(i)).collect();
            let ring: Vec<(u16, usize)> = present.iter().map(|&i| (cfg.peers[i].id, i)).collect();
            let leaf_sets = present
                .iter()
                .map(|&i| {
                    ring_leaf_set(cfg.peers[i].id, &ring, cfg.id_bits, cfg.leaf_half)
                        .into_iter()
                        .filter_map(|q| present.iter().position(|&x| x == q))
                        .collect()
                })
                .collect::<Vec<BTreeSet<usize>>>();
            let sub_names: Vec<String> = present.iter().map(|&i| names[i].clone()).collect();
            let mut all: Vec<Option<Host>> = hosts.into_iter().map(Some).collect();
            let mut sub: Vec<Host> = present.iter().filter_map(|&i| all[i].take()).collect();
            super::overlay::form(&mut sub, &sub_names, now)?;
            super::overlay::check(&sub, &sub_names, &leaf_sets, gid.0)?;
            for (&i, h) in present.iter().zip(sub) {
                all[i] = Some(h);
            }
            all.into_iter().flatten().collect()
        };
        let absent: Vec<NodeId> = joiners.iter().map(|&j| handles[j].id).collect();
        let mut slots = Vec::new();
        for ((i, p), mut host) in cfg.peers.iter().enumerate().zip(hosts) {
            let sip = sip_addr(i);
            let rows = routing_rows(&p.routing_table, lookup)?;
            let bits = cfg.digit_bits;
            let joins = joiners.contains(&i);
            if !joins {
                let absent = absent.clone();
                host.harness(now, |p, _, _| p.set_explicit_routing(bits, rows, &absent));
            }
            let driver = new_driver(rt.as_ref(), host, sip, now);
            slots.push(Slot {
                name: p.name.clone(),
                tid: p.id,
                handle: handles[i],
                sip,
                driver,
                // A joiner is down until its `restart`, and every peer has it for dead (the
                // harness's account: production never heard of it).
                crashed: joins,
                paused: false,
                known_dead: if joins {
                    BTreeSet::new()
                } else {
                    joiners.clone()
                },
                unaddressed: BTreeSet::new(),
                met: BTreeSet::new(),
                counter: 0,
                rejoin: None,
                skew: 0,
                incarnation: 0,
                counts: [0; 2],
                tally: Tally::default(),
            });
        }
        let mut uas = Vec::new();
        for (u, c) in cfg.subscribers.iter().chain(&cfg.publishers).enumerate() {
            let peer = *index
                .get(c.peer.as_str())
                .ok_or_else(|| format!("user agent {} at unknown peer {}", c.name, c.peer))?;
            let mut agent = UserAgent::new(
                ua_addr(u),
                &format!("sip:{}@trace.test", c.name),
                99 + u as u64,
            );
            // The harness owns time: the user agent sends each request once (the harness may
            // send it again itself), and never times out by itself.
            agent.retransmissions = false;
            uas.push(TraceUa {
                name: c.name.clone(),
                peer,
                agent,
                sent: 0,
                sub: None,
                leaving: false,
                left: false,
                publishes: Vec::new(),
                trying: None,
                refreshed: false,
                refresh: None,
                repeat_due: false,
                last_notify: None,
            });
        }
        let n = slots.len();
        let route_keys = routes::route_keys(cfg, &slots);
        Ok(Cluster {
            gid,
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
            join_ua: HashMap::new(),
            trying_due: Vec::new(),
            ua_faults: Vec::new(),
            upcall_faults: Vec::new(),
            busy_due: Vec::new(),
            nonce_names: HashMap::new(),
            etag_seq: HashMap::new(),
            seq_etag: HashMap::new(),
            rev_seq: HashMap::new(),
            obs: Observed::default(),
            detecting: None,
            repair_asked: Vec::new(),
            rows_asked: Vec::new(),
            routes_judged: BTreeMap::new(),
            route_keys,
            first_root,
            peer_cfgs,
            rt,
        })
    }

    /// The routing table the configuration gives peer `i` (loaded over what it learnt).
    fn explicit_rows(&self, i: usize) -> Result<Vec<Vec<Option<NodeHandle>>>, String> {
        routing_rows(&self.cfg.peers[i].routing_table, |n| {
            self.slots
                .iter()
                .find(|s| s.name == n)
                .map(|s| s.handle)
                .ok_or_else(|| format!("unknown peer '{n}' in routing state"))
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

    pub fn log(&mut self, s: String) {
        self.obs.log.push(s);
    }

    fn live(&mut self, i: usize, what: &str) -> Result<&mut Slot, String> {
        let s = &mut self.slots[i];
        if s.crashed {
            return Err(format!("{what}: peer {} has crashed", s.name));
        }
        if s.paused {
            return Err(format!("{what}: peer {} is paused", s.name));
        }
        Ok(s)
    }

    pub fn input(&mut self, input: &Input) -> Result<(), String> {
        let now = self.now;
        if now + SILENT_HORIZON >= KEEPALIVE {
            // Silent timers would fire the peers' keep-alive ticks, which only a detection
            // may run (they would detect crashes the trace has not reported).
            return Err(format!(
                "the harness's clock drifted to {now} ms, within reach of the keep-alive ticks"
            ));
        }
        match input {
            Input::Init { .. } => return Err("init was already done".into()),
            Input::ClientRequest { ua, peer, request } => {
                let u = self.ua_ix(ua)?;
                let p = self.peer_ix(peer)?;
                if self.uas[u].peer != p {
                    return Err(format!("user agent {ua} is attached to another peer"));
                }
                self.live(p, "client request")?;
                self.client_request(u, p, request)?;
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
                self.live(a, "detect_failure")?;
                self.slots[a].known_dead.insert(d);
                // The model's leaf-set repair is instantaneous and complete: hand the peer the
                // live neighbours the repair would find (MAPPING.md, "Actions", `detect_failure`).
                let repaired = self.model_leaf_set(a);
                if self.keepalive_detects(a, d, repaired.clone())? {
                    self.log(format!(
                        "{at}'s keep-alive declared {peer} dead + leaf-set repair"
                    ));
                    return Ok(());
                }
                // Whether it holds the peer's address: in its leaf set or the routing table it
                // learnt as the overlay formed (with ids that share leading digits, the slot
                // that fits the peer may hold it or another), or the trace's loaded over it.
                let learnt = self.slots[a].call(
                    now,
                    Box::new(move |host, now| {
                        let declare = |p: &mut sascribe::Peer, now, t: &mut _| {
                            let known = p.overlay().knows(id);
                            p.declare_dead(now, t, id, &repaired);
                            known
                        };
                        Ok(host.harness(now, declare).to_string())
                    }),
                )?;
                let loaded = self
                    .explicit_rows(a)?
                    .iter()
                    .flatten()
                    .flatten()
                    .any(|h| h.id == id);
                if learnt != "true" && !loaded {
                    self.slots[a].unaddressed.insert(d);
                }
                self.log(format!("{at}.declare_dead({peer}) + leaf-set repair"));
            }
            Input::FireTimer { at, req, attempt } => {
                let a = self.peer_ix(at)?;
                let Some(timer) = self.timer_of(a, req)? else {
                    self.log(format!("{at}: [{req}] was replaced by a newer re-JOIN"));
                    return Ok(());
                };
                let give_up = *attempt as usize > self.cfg.retry_limit;
                let s = self.live(a, "fire_timer")?;
                let found = s.call(
                    now,
                    Box::new(move |host, now| {
                        let fire = |p: &mut sascribe::Peer, now, t: &mut _| {
                            p.fire_request_timer(now, t, timer, give_up)
                        };
                        Ok(host.harness(now, fire).to_string())
                    }),
                )?;
                self.log(format!(
                    "{at}.fire_request_timer({timer:?}, give_up {give_up}) -> {found}"
                ));
            }
            Input::ReplicationRetry { at } => {
                let a = self.peer_ix(at)?;
                let s = self.live(a, "replication_retry")?;
                let root = s.call(
                    now,
                    Box::new(move |host, now| {
                        let retry = |p: &mut sascribe::Peer, now, t: &mut _| {
                            p.fire_replication_retry(now, t)
                        };
                        Ok(host.harness(now, retry).to_string())
                    }),
                )?;
                // The model resends only at a peer with a root role (serving or fetching).
                if root != "true" {
                    return Err(format!("replication_retry: {at} holds no root role"));
                }
                self.log(format!("{at}.fire_replication_retry()"));
            }
            Input::Expire { at, etag } => {
                let a = self.peer_ix(at)?;
                // The state's production ETag: one of this root's ETags minted for the change
                // with seq `etag` (learned from the REPLICATEs; two roots may each have minted
                // one for that seq), else the table's; the model's anonymous state (tag 0, a
                // state adopted from the tree) is the root's one ETag the table does not know.
                let minted = self.seq_etag.get(etag).copied();
                let learned: Vec<ETag> = self.etag_seq.keys().copied().collect();
                let tagged: Vec<ETag> = self
                    .etag_seq
                    .iter()
                    .filter(|(_, s)| *s == etag)
                    .map(|(e, _)| *e)
                    .collect();
                let gid = self.gid;
                let s = self.live(a, "expire")?;
                let expired = s.call(
                    now,
                    Box::new(move |host, now| {
                        let expire = |p: &mut sascribe::Peer, now, t: &mut _| {
                            let live = p.group_view(gid).map(|v| v.etags).unwrap_or_default();
                            let e = live
                                .iter()
                                .copied()
                                .find(|e| tagged.contains(e))
                                .or(minted)
                                .or_else(|| live.iter().copied().find(|e| !learned.contains(e)));
                            e.map(|e| (e, p.expire_state(now, t, gid, e)))
                        };
                        Ok(format!("{:?}", host.harness(now, expire)))
                    }),
                )?;
                self.log(format!("{at}.expire_state(e{etag}) -> {expired}"));
            }
            Input::Heartbeat { at } => {
                let a = self.peer_ix(at)?;
                if !self.cfg.tree_maintenance {
                    return Err(
                        "heartbeat: the trace's configuration has no tree maintenance".into(),
                    );
                }
                let gid = self.gid;
                let s = self.live(a, "heartbeat")?;
                let beaten = s.call(
                    now,
                    Box::new(move |host, now| {
                        let beat =
                            |p: &mut sascribe::Peer, now, t: &mut _| p.fire_heartbeat(now, t, gid);
                        Ok(host.harness(now, beat).to_string())
                    }),
                )?;
                self.log(format!("{at}.fire_heartbeat() -> {beaten} children"));
            }
            Input::ParentTimeout { at } => {
                let a = self.peer_ix(at)?;
                if !self.cfg.tree_maintenance {
                    return Err(
                        "parent_timeout: the trace's configuration has no tree maintenance".into(),
                    );
                }
                let gid = self.gid;
                let s = self.live(a, "parent_timeout")?;
                let left = s.call(
                    now,
                    Box::new(move |host, now| {
                        let time_out = |p: &mut sascribe::Peer, now, t: &mut _| {
                            p.fire_parent_timeout(now, t, gid)
                        };
                        Ok(host.harness(now, time_out).to_string())
                    }),
                )?;
                self.log(format!("{at}.fire_parent_timeout() -> {left}"));
            }
            Input::Crash { peer } => {
                let p = self.peer_ix(peer)?;
                self.slots[p].crashed = true;
                self.log(format!("{peer} crashed"));
            }
            Input::Restart { peer } => {
                let p = self.peer_ix(peer)?;
                self.restart(p)?;
                self.log(format!(
                    "{peer} restarted (a new host, every peer installed)"
                ));
            }
            Input::Lapse { at } | Input::Reask { at, .. } if !self.cfg.leases => {
                return Err(format!(
                    "{}: the trace's configuration has no leases ({at})",
                    crate::adapter::request_type(input)
                ));
            }
            Input::Lapse { at } => {
                let a = self.peer_ix(at)?;
                let gid = self.gid;
                let s = self.live(a, "lapse")?;
                let held = s.call(
                    now,
                    Box::new(move |host, now| {
                        let lapse =
                            |p: &mut sascribe::Peer, now, _: &mut _| p.lapse_confirmation(now, gid);
                        Ok(host.harness(now, lapse).to_string())
                    }),
                )?;
                if held != "true" {
                    return Err(format!("lapse: {at} confirms no root's lease"));
                }
                self.log(format!("{at}.lapse_confirmation()"));
            }
            Input::Reask { at, peer } => {
                let a = self.peer_ix(at)?;
                self.peer_ix(peer)?;
                let gid = self.gid;
                let s = self.live(a, "reask")?;
                let fetching = s.call(
                    now,
                    Box::new(move |host, now| {
                        let fire = |p: &mut sascribe::Peer, now, t: &mut _| {
                            p.fire_fetch_timer(now, t, gid)
                        };
                        Ok(host.harness(now, fire).to_string())
                    }),
                )?;
                if fetching != "true" {
                    return Err(format!("reask: {at} is not fetching as the group's root"));
                }
                self.log(format!("{at}.fire_fetch_timer() (asks {peer} again)"));
            }
            Input::Suspect { .. } | Input::Heal { .. } if !self.cfg.leases => {
                return Err(format!(
                    "{}: the trace's configuration has no leases",
                    crate::adapter::request_type(input)
                ));
            }
            Input::Suspect { peer } => {
                let x = self.peer_ix(peer)?;
                let gid = self.gid;
                let s = self.live(x, "suspect")?;
                s.paused = true;
                s.call(
                    now,
                    Box::new(move |host, now| {
                        let pause = |p: &mut sascribe::Peer, now, _: &mut _| p.pause(now, gid);
                        Ok(host.harness(now, pause).to_string())
                    }),
                )?;
                // Overlay datagrams in flight to or from it are lost.
                let lost = self.in_flight.len() + self.silent.len();
                self.in_flight.retain(|f| f.to != x && f.from != x);
                self.silent.retain(|f| f.to != x && f.from != x);
                let lost = lost - self.in_flight.len() - self.silent.len();
                self.log(format!(
                    "{peer} paused: the leases it holds and confirms lapse, {lost} datagrams to or from it lost"
                ));
            }
            Input::Heal { peer } => {
                let x = self.peer_ix(peer)?;
                if !self.slots[x].paused {
                    return Err(format!("heal: {peer} is not paused"));
                }
                self.slots[x].paused = false;
                self.slots[x].call(
                    now,
                    Box::new(move |host, now| {
                        host.harness(now, |p, now, t| p.resume_after_pause(now, t));
                        Ok(String::new())
                    }),
                )?;
                self.log(format!("{peer} runs again and finds out it was paused"));
            }
            Input::Alive { at, peer } => {
                let a = self.peer_ix(at)?;
                let x = self.peer_ix(peer)?;
                self.live(a, "alive")?;
                self.live(x, "alive")?;
                if !self.slots[a].known_dead.remove(&x) {
                    return Err(format!("alive: {at} has not declared {peer} dead"));
                }
                self.slots[a].unaddressed.remove(&x);
                // A peer that joins mid-run, announcing itself to a peer that never heard
                // from it: a newcomer there, once taken into its leaf set or routing table.
                let newcomer = self.cfg.peers[x].joins && !self.slots[a].met.contains(&x);
                self.slots[a].met.insert(x);
                let was = if newcomer {
                    Some(self.read(a)?.stats)
                } else {
                    None
                };
                self.announce(x, a)?;
                if let Some(was) = was {
                    self.check_newcomer(a, x, &was)?;
                }
                self.log(format!("{at} hears {peer}'s announcement of its new join"));
            }
        }
        Ok(())
    }

    /// Crashed peer `p` restarts with no state (MAPPING.md, "Actions", `restart`): a new host
    /// at the same id and addresses, in a new incarnation, that knows every peer of the
    /// configuration (installed routing state, the configuration's routing table over it:
    /// the model's restarted peer learns the membership as it joins, and its failure detector
    /// reports the crashed peers). Every live peer must have declared it dead, and no user
    /// agent may use it (its dialogs would be gone). What the live peers sent to its earlier
    /// incarnation is lost with it.
    fn restart(&mut self, p: usize) -> Result<(), String> {
        let name = self.slots[p].name.clone();
        if !self.slots[p].crashed {
            return Err(format!("restart: {name} has not crashed"));
        }
        if let Some(q) = (0..self.slots.len())
            .find(|&q| !self.slots[q].crashed && !self.slots[q].known_dead.contains(&p))
        {
            return Err(format!(
                "restart: {} has not declared {name} dead (a restart takes longer than failure detection)",
                self.slots[q].name
            ));
        }
        if let Some(u) = self.uas.iter().find(|u| u.peer == p) {
            return Err(format!("restart: user agent {} uses {name}", u.name));
        }
        let incarnation = self.slots[p].incarnation + 1;
        let handle = self.slots[p].handle;
        if p == self.first_root {
            // The first root's lazy fetch was silent because the model's first root holds the
            // role from the start; a restarted one fetches in the open, like any new root.
            self.first_root = usize::MAX;
            self.peer_cfgs[p].fetch_timeout = super::NEVER;
        }
        let host = new_host(
            p,
            incarnation,
            handle,
            &self.peer_cfgs[p],
            self.gid,
            self.now,
        );
        let others: Vec<NodeHandle> = (0..self.slots.len())
            .filter(|&q| q != p)
            .map(|q| self.slots[q].handle)
            .collect();
        let rows = self.explicit_rows(p)?;
        let bits = self.cfg.digit_bits;
        let now = self.now;
        let mut driver = new_driver(self.rt.as_ref(), host, self.slots[p].sip, now);
        driver.call(
            now,
            Box::new(move |host, now| {
                host.handle_input(
                    now,
                    sascribe::Input::Call(sascribe::Call::InstallRoutingState(others)),
                )
                .map_err(|e| format!("restart: installing routing state: {e}"))?;
                host.harness(now, |p, _, _| p.set_explicit_routing(bits, rows, &[]));
                Ok(String::new())
            }),
        )?;
        // Names of the earlier incarnation's requests and revisions are not this one's.
        let id = handle.id.0;
        self.join_names.retain(|k, _| k.0 != id);
        self.nonce_names.retain(|k, _| k.0 != id);
        self.rev_seq.retain(|k, _| k.0 != p);
        self.sub_unassigned[p].clear();
        self.pub_unassigned[p].clear();
        self.in_flight.retain(|f| f.to != p && f.from != p);
        self.silent.retain(|f| f.to != p && f.from != p);
        let everyone: BTreeSet<usize> = (0..self.slots.len()).collect();
        let s = &mut self.slots[p];
        s.driver = driver;
        s.crashed = false;
        s.known_dead.clear();
        s.unaddressed.clear();
        // Its routing state is installed with every peer of the configuration.
        s.met = everyone;
        s.incarnation = incarnation;
        // The model's request counter of a new incarnation (its requests are told apart from
        // an earlier one's still in flight).
        s.counter = incarnation << 5;
        s.rejoin = None;
        s.skew = 0;
        s.counts = [0; 2];
        s.tally = Tally::default();
        Ok(())
    }

    /// Restarted peer `x` announces its new join to peer `a` (production's `Announce`, which
    /// every peer the joiner learnt is sent when its join completes): `a` takes it back.
    fn announce(&mut self, x: usize, a: usize) -> Result<(), String> {
        let datagram = self
            .datagram_as(x, a, &Msg::Pastry(PastryMsg::Announce))
            .map_err(|e| format!("alive: {e}"))?;
        let (now, from) = (self.now, self.slots[x].handle.addr);
        self.slots[a].datagram(now, Socket::Overlay, from, datagram);
        Ok(())
    }

    /// The datagram in which peer `from` (joined) sends `msg` to peer `to`, sealed and stamped
    /// with time and seq 0, as is everything the harness delivers in a peer's name.
    pub(super) fn datagram_as(&self, from: usize, to: usize, msg: &Msg) -> Result<Vec<u8>, String> {
        let stamp = Stamp {
            dst: Dest::Peer(self.slots[to].handle.id),
            time: 0,
            seq: 0,
        };
        self.codec
            .encode(&self.slots[from].handle, true, msg, &stamp)
            .map_err(|e| format!("encoding a {}: {e}", msg.kind()))
    }

    /// Production's own failure detector at `a` declares the crashed peer `d` dead: `a`'s clock
    /// runs on from one maintenance tick to the next while every live peer answers its
    /// keep-alive pings, and the harness answers in the name of each crashed peer that `a`
    /// has not detected yet in the trace (the model's detector reports each crash to each
    /// peer on its own). Only `d` stays silent, and `a` must drop it from its leaf set and
    /// routing table within the failure timeout and five ticks more, and not before it has
    /// been silent for more than the failure timeout (since `a` last heard from it, by its
    /// entries' `last_heard`; the timeout is two ticks, so that a tick falls on its end).
    /// Unless the detection starts with a pause, it must drop `d` at the first tick after
    /// that. The repair completes at once, as the model's
    /// ([`sascribe::Peer::repair_at_next_detection`]). Returns `false`, with the clock left
    /// alone, when `a` knows nothing of `d` (in neither its leaf set nor its learnt routing
    /// table, no keep-alive watches it: the harness declares it dead instead).
    fn keepalive_detects(
        &mut self,
        a: usize,
        d: usize,
        repaired: Vec<NodeHandle>,
    ) -> Result<bool, String> {
        let id = self.slots[d].handle.id;
        let holds =
            |raw: &RawState| raw.leaves.contains(&id) || raw.table.iter().any(|e| e.0 == id);
        let before = self.read(a)?;
        if !holds(&before) {
            return Ok(false);
        }
        let was_leaf = before.leaves.contains(&id);
        let heard = self.last_heard(a, id)?;
        self.slots[a].call(
            self.now,
            Box::new(move |host, now| {
                host.harness(now, |p, _, _| p.repair_at_next_detection(repaired));
                Ok(String::new())
            }),
        )?;
        self.detecting = Some(a);
        self.repair_asked.clear();
        self.rows_asked.clear();
        // How late the first tick runs, by the places of the two peers. Half of the
        // detections start as if `a` had been paused for three ticks: it must forgive the
        // silence it measured itself rather than declare every peer dead, and still detect `d`
        // after the failure timeout. A quarter start with a tick one interval late, two
        // intervals after the one before: not more than two, so not a pause (`a` must not
        // forgive, and declares `d` dead on time).
        let mut late = match (a + d) % 4 {
            0 | 2 => 3 * KEEPALIVE,
            1 => KEEPALIVE,
            _ => 0,
        };
        let paused = late > KEEPALIVE;
        let bound = FAIL_TIMEOUT + 5 * KEEPALIVE;
        let until = self.now + self.slots[a].skew + bound;
        let (mut buried, mut clock) = (false, before.now);
        while !buried {
            let s = &mut self.slots[a];
            let Some(mut t) = s.driver.next_deadline().filter(|&t| t <= until) else {
                break;
            };
            t += std::mem::take(&mut late);
            s.skew = s.skew.max(t.saturating_sub(self.now));
            s.timeout(self.now);
            self.quiesce();
            let after = self.read(a)?;
            (buried, clock) = (!holds(&after), after.now);
            // A detector that ran without a pause declares `d` dead at the first tick at which
            // it has been silent for more than the failure timeout, not a tick later.
            let silence = clock.saturating_sub(heard);
            if !buried && !paused && silence > FAIL_TIMEOUT {
                return Err(format!(
                    "{}'s keep-alive failure detector ticked after {silence} ms of silence from \
                     {}, more than the failure timeout ({FAIL_TIMEOUT} ms), without declaring \
                     it dead (it was not paused)",
                    self.slots[a].name, self.slots[d].name,
                ));
            }
        }
        self.detecting = None;
        if !buried {
            return Err(format!(
                "{}'s keep-alive failure detector did not declare {} dead within {bound} ms",
                self.slots[a].name, self.slots[d].name,
            ));
        }
        let silence = clock.saturating_sub(heard);
        if silence <= FAIL_TIMEOUT {
            return Err(format!(
                "{}'s keep-alive failure detector declared {} dead after {silence} ms of \
                 silence, not more than the failure timeout ({FAIL_TIMEOUT} ms)",
                self.slots[a].name, self.slots[d].name,
            ));
        }
        self.check_row_asks(a, d, &before)?;
        if was_leaf {
            let left: Vec<NodeId> = before.leaves.into_iter().filter(|&l| l != id).collect();
            self.check_repair_asks(a, d, &left)?;
        } else if let Some(&q) = self.repair_asked.first() {
            // Its leaf set did not change: there is nothing to repair.
            return Err(format!(
                "{} declared {}, not a member of its leaf set, dead and asked {} for its leaf \
                 set (its leaf set did not change)",
                self.slots[a].name, self.slots[d].name, self.slots[q].name
            ));
        }
        Ok(true)
    }

    /// Peer `a` heard the announcement of `x`, a peer that joins mid-run and that it never
    /// heard from (`was`: its statistics before): it counts `x` as a newcomer exactly when it
    /// took `x` into its leaf set or learnt routing table (sa-Scribe's reaction to a join runs
    /// then), and counts no peer revived (it never declared `x` dead).
    fn check_newcomer(&mut self, a: usize, x: usize, was: &sascribe::Stats) -> Result<(), String> {
        let raw = self.read(a)?;
        let id = self.slots[x].handle.id;
        let took = raw.leaves.contains(&id) || raw.table.iter().any(|e| e.0 == id);
        let counted = raw.stats.newcomers.wrapping_sub(was.newcomers);
        let revived = raw.stats.revived.wrapping_sub(was.revived);
        if counted != u64::from(took) || revived != 0 {
            return Err(format!(
                "{}: {} announced its join and {} taken into its routing state, yet its \
                 statistics count {counted} newcomer(s) and {revived} peer(s) revived",
                self.slots[a].name,
                self.slots[x].name,
                if took { "was" } else { "was not" }
            ));
        }
        Ok(())
    }

    /// Production's routing-table repair, as peer `a` declared `d` dead (`before`: `a` before
    /// it did): when `d` held a slot of `a`'s learnt table, `a` asks one peer for that row, a
    /// peer of the same row when the row holds another, else a member of its leaf set; when
    /// it held none, `a` asks for no row. (The harness completes the repair itself, so a
    /// repair that asks the wrong peer, or asks when nothing changed, would pass unseen.)
    fn check_row_asks(&self, a: usize, d: usize, before: &RawState) -> Result<(), String> {
        let me = self.slots[a].handle.id.0;
        let dead = self.slots[d].handle.id;
        let row_of = |id: NodeId| sascribe::id::shared_prefix_len(me, id.0);
        let (name, dname) = (&self.slots[a].name, &self.slots[d].name);
        let asked: Vec<String> = self
            .rows_asked
            .iter()
            .map(|&(q, r)| format!("{} for row {r}", self.slots[q].name))
            .collect();
        if !before.table.iter().any(|e| e.0 == dead) {
            if !asked.is_empty() {
                return Err(format!(
                    "{name} declared {dname}, in no slot of its routing table, dead and asked {} \
                     (no slot to refill)",
                    asked.join(", ")
                ));
            }
            return Ok(());
        }
        let r = row_of(dead);
        let same_row: Vec<NodeId> = (before.table.iter())
            .map(|e| e.0)
            .filter(|&id| id != dead && row_of(id) == r)
            .collect();
        let leaves: Vec<NodeId> = before
            .leaves
            .iter()
            .copied()
            .filter(|&l| l != dead)
            .collect();
        let helpers = if same_row.is_empty() {
            &leaves
        } else {
            &same_row
        };
        let ok = match self.rows_asked.as_slice() {
            [] => helpers.is_empty(),
            [(q, row)] => usize::from(*row) == r && helpers.contains(&self.slots[*q].handle.id),
            _ => false,
        };
        if !ok {
            let want = if helpers.is_empty() {
                "nobody".to_string()
            } else {
                let names: Vec<String> = helpers.iter().map(|&h| self.name_of(h)).collect();
                format!(
                    "one of {} ({}) for row {r}",
                    names.join(", "),
                    if same_row.is_empty() {
                        "its leaf set"
                    } else {
                        "the same row"
                    }
                )
            };
            return Err(format!(
                "{name} declared {dname}, in row {r} of its routing table, dead and asked {} \
                 for a row, not {want}",
                if asked.is_empty() {
                    "nobody".to_string()
                } else {
                    asked.join(", ")
                }
            ));
        }
        Ok(())
    }

    /// Production's leaf-set repair, as peer `a` declared `d`, a member of its leaf set,
    /// dead: it asks the farthest member left on each side of its leaf set for its leaf set.
    /// Checked: the peers it asked are members left (`left`), at most two, and at least one
    /// when any is left. (The harness
    /// completes the repair itself, as the model's instantaneous one, so without this check
    /// a repair that asks nobody, or a peer no longer there, would pass unseen.)
    fn check_repair_asks(&self, a: usize, d: usize, left: &[NodeId]) -> Result<(), String> {
        let asked = &self.repair_asked;
        let (name, dead) = (&self.slots[a].name, &self.slots[d].name);
        if let Some(&q) = asked
            .iter()
            .find(|&&q| !left.contains(&self.slots[q].handle.id))
        {
            return Err(format!(
                "{name} declared {dead} dead and asked {} for its leaf set, which is not left \
                 in {name}'s leaf set",
                self.slots[q].name
            ));
        }
        if asked.is_empty() && !left.is_empty() {
            let names: Vec<String> = left.iter().map(|&l| self.name_of(l)).collect();
            return Err(format!(
                "{name} declared {dead}, a member of its leaf set, dead and asked none of the \
                 members left ({}) for its leaf set (no leaf-set repair)",
                names.join(", ")
            ));
        }
        if asked.len() > 2 {
            return Err(format!(
                "{name} declared {dead} dead and sent {} leaf-set requests (one per side at \
                 most)",
                asked.len()
            ));
        }
        Ok(())
    }

    /// The slot of the peer whose overlay address is `addr`.
    fn slot_at(&self, addr: SocketAddr) -> Option<usize> {
        self.slots.iter().position(|s| s.handle.addr == addr)
    }

    /// The slot of the peer whose id is `id`.
    pub(super) fn slot_of(&self, id: NodeId) -> Option<usize> {
        self.slots.iter().position(|s| s.handle.id == id)
    }

    /// Overlay maintenance from the peer whose failure detector runs (see
    /// [`Cluster::keepalive_detects`]) to a crashed or paused peer it has not detected yet in
    /// the trace (the model's detector reports each failure, and each suspicion, to each peer
    /// on its own), or to a live peer that declared it dead (it was suspected and healed):
    /// the harness stands in for the recipient. It answers a keep-alive ping in the
    /// recipient's name and drops the rest (the leaf-set and row requests of a repair the
    /// harness completes itself): a live peer that got them would take their sender back,
    /// which only the trace's `alive` step does (the model's detector is not driven by
    /// pings). Returns whether it stood in.
    fn stand_in(&mut self, f: &Flight) -> bool {
        let to = &self.slots[f.to];
        let silent = to.crashed || to.paused;
        let stands_in = if silent {
            !self.slots[f.from].known_dead.contains(&f.to)
        } else {
            to.known_dead.contains(&f.from)
        };
        if self.detecting != Some(f.from) || !stands_in {
            return false;
        }
        let (to, from) = (
            self.slots[f.to].name.clone(),
            self.slots[f.from].name.clone(),
        );
        let why = if silent {
            "crashed or paused, not detected by it yet"
        } else {
            "it declared the sender dead"
        };
        match self.codec.decode(&f.payload) {
            Ok(env) if matches!(env.msg, Msg::Pastry(PastryMsg::Ping)) => {}
            Ok(env) if matches!(env.msg, Msg::Pastry(_)) && !silent => {
                self.log(format!("{to} ignores {from}'s {}: {why}", f.what));
                return true;
            }
            _ => return false,
        }
        let Ok(pong) = self.datagram_as(f.to, f.from, &Msg::Pastry(PastryMsg::Pong)) else {
            return false;
        };
        let (now, me) = (self.now, self.slots[f.to].handle.addr);
        self.slots[f.from].datagram(now, Socket::Overlay, me, pong);
        self.log(format!("{to} answers {from}'s keep-alive ping: {why}"));
        true
    }

    /// The projected state of every live peer (MAPPING.md, "Projected state").
    pub fn project(&mut self) -> Result<BTreeMap<String, PeerState>, String> {
        let mut out = BTreeMap::new();
        for i in 0..self.slots.len() {
            if self.slots[i].crashed {
                continue;
            }
            let raw = self.read(i)?;
            self.check_routing_state(i, &raw)?;
            self.check_routes(i, &raw)?;
            let applied = raw.applied.as_ref().map(|r| r.seq);
            let round = self.decode_probe(raw.probe.round())?;
            self.check_probe(i, &raw.probe, &round, raw.view.as_ref(), applied)?;
            self.check_refresh_answered(i, &raw.probe, &round)?;
            self.check_fence_obeyed(i, &round)?;
            if let Some(why) = raw.view_disagrees().or_else(|| raw.deadline_beyond.clone()) {
                return Err(format!("{}: {why}", self.slots[i].name));
            }
            if let Some(etags) = raw.expiry_disabled() {
                self.probe_expiry(i, etags)?;
            }
            self.check_busy(i, &raw)?;
            self.check_counters(i, &raw)?;
            out.insert(self.slots[i].name.clone(), self.project_raw(&raw));
        }
        Ok(out)
    }

    /// What the user agents were told in the step that a SIP server must not leave out or say
    /// (MAPPING.md, "Client-visible outcomes"), and what a core must not tell its SIP layer
    /// ([`Cluster::check_upcalls`]): a refresh answered 200 and followed by a NOTIFY
    /// of the last state; 100 Trying once a SUBSCRIBE's JOIN got its pACK.
    pub fn client_faults(&mut self) -> Result<(), String> {
        if let Some(f) = self.ua_faults.first().or(self.upcall_faults.first()) {
            return Err(f.clone());
        }
        for c in &self.uas {
            if c.refresh.is_some() || c.repeat_due {
                return Err(format!(
                    "{}: its refresh got no 200, or no NOTIFY of the last state after it",
                    c.name
                ));
            }
        }
        for u in std::mem::take(&mut self.trying_due) {
            if self.uas[u].trying == Some(false) {
                return Err(format!(
                    "{}: no 100 Trying, though its SUBSCRIBE's JOIN was answered with a pACK",
                    self.uas[u].name
                ));
            }
        }
        Ok(())
    }

    /// The core's upcalls of peer `i` (those its driver sees): a local subscription is given
    /// a state only when it is newer than the last it was given (`notify_local` after a newer
    /// state was taken, `deliver_to` once). The SIP layer drops a repeat or an older state
    /// again (its own filter, for dialogs taken over), so no user agent can tell: the check
    /// holds the core to its filter, which the front end's would otherwise hide.
    fn check_upcalls(&mut self, i: usize, events: &[sascribe::Event]) {
        for e in events {
            let sascribe::Event::Notify { handle, seq, .. } = e else {
                continue;
            };
            let slot = &mut self.slots[i];
            if let Some(was) = slot.tally.notified.insert(*handle, *seq) {
                if *seq <= was {
                    let why = format!(
                        "{}: its core gave local subscription {} the state of seq {seq} after that of seq {was}",
                        slot.name, handle.0
                    );
                    self.upcall_faults.push(why);
                }
            }
        }
    }

    /// Asks production's root `i`, which may expire nothing now (`RawState::expiry_disabled`),
    /// to expire each of `etags`, as its periodic tick would once a deadline passed: it must
    /// refuse each, changing nothing (the model's root never expires a state there).
    fn probe_expiry(&mut self, i: usize, etags: Vec<ETag>) -> Result<(), String> {
        let gid = self.gid;
        let name = self.slots[i].name.clone();
        self.slots[i].call(
            self.now,
            Box::new(move |host, now| {
                let expired = host.harness(now, |p: &mut sascribe::Peer, now, t: &mut _| {
                    etags.into_iter().find(|&e| p.expire_state(now, t, gid, e))
                });
                match expired {
                    None => Ok(String::new()),
                    Some(e) => Err(format!(
                        "{name}: a root still fetching, or committing a change, expired its \
                         event state {e:?}"
                    )),
                }
            }),
        )?;
        Ok(())
    }

    /// What an operator reads (the metrics, the status page) must agree with what the peer
    /// did: every tree-repair re-JOIN it sent as their origin counts as one (`rejoins`); a
    /// root that served when last read and is fetching again without having handed the group
    /// over, or taken it over anew, ran one reconfirm round at least (`reconfirms`); and a
    /// root's record view gives the size of the document it last sent down the tree for that
    /// seq (`document_bytes`, the size the document limit is enforced on). Every counter only
    /// grows within an incarnation (a scraper's `rate()` reads a drop as a restart), and
    /// one that counts answers of a kind counts no more than the peer received of that kind
    /// (`fenced`, `fetch_busy`).
    fn check_counters(&mut self, i: usize, raw: &RawState) -> Result<(), String> {
        let slot = &mut self.slots[i];
        let (was, now) = (&slot.tally.stats, &raw.stats);
        // Per message kind, those counted before (one at zero cannot go down).
        let kinds = was.rx_kinds.iter().map(|(k, &a)| {
            let b = now.rx_kinds.get(k).unwrap_or(0);
            ("rx_kinds ", k, a, b)
        });
        let fields = counters(was).into_iter().zip(counters(now));
        let fields = fields.map(|((name, a), (_, b))| ("", name, a, b));
        if let Some((of, name, a, b)) = fields.chain(kinds).find(|c| c.3 < c.2) {
            return Err(format!(
                "{}: its statistics' counter {of}{name} went down from {a} to {b}",
                slot.name
            ));
        }
        for (counter, n, kind) in [
            ("fenced", now.fenced, "fenced"),
            ("fetch_busy", now.fetch_busy, "fetch_reply"),
        ] {
            let got = now.rx_kinds.get(kind).unwrap_or(0);
            if n > got {
                return Err(format!(
                    "{}: its statistics count {n} {counter}, yet it received {got} {kind} \
                     messages",
                    slot.name
                ));
            }
        }
        if now.rejoins != slot.tally.rejoins {
            return Err(format!(
                "{}: its statistics count {} re-JOINs, yet it sent {}",
                slot.name, now.rejoins, slot.tally.rejoins
            ));
        }
        let view = raw.view.as_ref();
        let fetching = view.is_some_and(|v| v.is_root && !v.root_active);
        let handed = now.demotions > was.demotions || now.takeovers > was.takeovers;
        if slot.tally.serving && fetching && !handed && now.reconfirms == was.reconfirms {
            return Err(format!(
                "{}: its root role served and fetches again, yet its statistics count no \
                 reconfirm round ({})",
                slot.name, now.reconfirms
            ));
        }
        let committed = raw.committed.as_ref().filter(|r| r.is_root);
        if let Some((r, &(seq, len))) = committed.zip(slot.tally.told.as_ref()) {
            if r.seq == seq && r.document_bytes != len {
                return Err(format!(
                    "{}: its record of seq {seq} is said to compose a document of {} bytes, \
                     yet the one it sent down the tree has {len}",
                    slot.name, r.document_bytes
                ));
            }
        }
        slot.tally.serving = view.is_some_and(|v| v.is_root && v.root_active);
        slot.tally.stats = now.clone();
        Ok(())
    }

    /// A fetching root that a peer answered busy in this step waits out the time that peer
    /// named before asking it again, and its fetch timer runs at least that long: asked
    /// earlier, the peer would still confirm the other root's lease and answer busy again.
    fn check_busy(&mut self, i: usize, raw: &RawState) -> Result<(), String> {
        let due: Vec<(usize, u64, Millis)> = self
            .busy_due
            .iter()
            .filter(|d| d.0 == i)
            .map(|d| (d.1, d.2, d.3))
            .collect();
        self.busy_due.retain(|d| d.0 != i);
        let Some(w) = &raw.busy_waits else {
            return Ok(());
        };
        let deadline = w.deadline;
        // A peer the root waits out answered this round busy, and is still awaited.
        for &(id, until) in &w.busy {
            let heard = self.slots[i].tally.busy_from.contains(&(w.epoch, id));
            if !heard || until == 0 || !w.awaited.contains(&id) {
                return Err(format!(
                    "{}: its fetch round (epoch {}) waits out {} until {until} ms, though that \
                     peer {}",
                    self.slots[i].name,
                    w.epoch,
                    self.name_of(id),
                    if heard && until > 0 {
                        "is no longer awaited"
                    } else {
                        "never answered it busy"
                    }
                ));
            }
        }
        // An answer to an earlier round changes nothing; one from a peer no longer awaited
        // (it answered otherwise since) neither. A peer still awaited that answered this
        // round busy is waited out, and the answer counted in the root's statistics.
        let mut waited = 0;
        for (q, _, not_before) in due.into_iter().filter(|d| d.1 == w.epoch) {
            let id = self.slots[q].handle.id;
            if !w.awaited.contains(&id) {
                continue;
            }
            waited += 1;
            let Some(&(_, until)) = w.busy.iter().find(|b| b.0 == id) else {
                return Err(format!(
                    "{0}: {1} answered its fetch busy until {not_before} ms, yet {0}, still \
                     awaiting {1}, holds no time before which it would not ask {1} again",
                    self.slots[i].name, self.slots[q].name
                ));
            };
            if until < not_before || deadline < not_before {
                return Err(format!(
                    "{0}: {1} answered its fetch busy until {not_before} ms, yet {0} would ask \
                     {1} again from {until} ms, with its fetch timer set for {deadline} ms",
                    self.slots[i].name, self.slots[q].name
                ));
            }
        }
        let was = self.slots[i].tally.stats.fetch_busy;
        let counted = raw.stats.fetch_busy.saturating_sub(was);
        if counted < waited {
            return Err(format!(
                "{}: it waits out {waited} busy answers to its fetch round that this step \
                 delivered, yet its statistics count {counted} more (fetch_busy {was} to {})",
                self.slots[i].name, raw.stats.fetch_busy
            ));
        }
        Ok(())
    }

    /// When peer `i` last heard from `id`: the later `last_heard` of its leaf-set and
    /// learnt routing-table entries for it (0 when it holds neither).
    fn last_heard(&mut self, i: usize, id: NodeId) -> Result<Millis, String> {
        let heard = self.slots[i].call(
            self.now,
            Box::new(move |host, _| {
                let o = host.peer().overlay();
                let entries = o.leaf.iter().chain(o.rt.iter());
                let t = entries.filter(|e| e.handle.id == id).map(|e| e.last_heard);
                Ok(t.max().unwrap_or_default().to_string())
            }),
        )?;
        heard
            .parse()
            .map_err(|e| format!("{}'s last_heard of {id:?}: {e}", self.slots[i].name))
    }

    /// What production's peer `i` holds (the group's views, its routing state).
    fn read(&mut self, i: usize) -> Result<RawState, String> {
        let raw = Arc::new(Mutex::new(None));
        let into = Arc::clone(&raw);
        let (gid, k) = (self.gid, self.cfg.k);
        let keys = Arc::clone(&self.route_keys);
        self.slots[i].call(
            self.now,
            Box::new(move |host, now| {
                let r = RawState::read(host.peer(), gid, now, k, &keys);
                *into.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                Ok(String::new())
            }),
        )?;
        let raw = raw
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or("the peer did not report its state")?;
        Ok(raw)
    }

    /// The leaf set production's peer `a` holds must be the model's: its topology's without the
    /// peers it declared dead, repaired (the leaf sets decide replica sets and the last routing
    /// hop; a peer declared dead that comes back second-hand, or one that stays, shows here
    /// first). Its learnt routing table holds no peer it declared dead, and each entry in the
    /// slot it fits; the operator's gauge of its size counts them all.
    fn check_routing_state(&self, a: usize, raw: &RawState) -> Result<(), String> {
        if raw.table_gauge != raw.table.len() {
            return Err(format!(
                "{}'s routing table holds {} peers, its size gauge says {}",
                self.slots[a].name,
                raw.table.len(),
                raw.table_gauge
            ));
        }
        for &(id, fits) in &raw.table {
            let q = self.slot_of(id);
            if q.is_none_or(|q| q == a || self.slots[a].known_dead.contains(&q)) || !fits {
                return Err(format!(
                    "{}'s routing table holds {}: not a live peer it knows, or not in its slot",
                    self.slots[a].name,
                    self.name_of(id)
                ));
            }
        }
        let leaves = &raw.leaves;
        let mut want: Vec<String> = self
            .model_leaf_set(a)
            .iter()
            .map(|h| self.name_of(h.id))
            .collect();
        let mut got: Vec<String> = leaves.iter().map(|&id| self.name_of(id)).collect();
        want.sort();
        got.sort();
        got.dedup();
        if got == want {
            return Ok(());
        }
        let dead: Vec<&str> = self.slots[a]
            .known_dead
            .iter()
            .map(|&q| self.slots[q].name.as_str())
            .collect();
        Err(format!(
            "{}'s leaf set is {got:?}, the model's {want:?} (peers it declared dead: {dead:?})",
            self.slots[a].name
        ))
    }

    /// The model's leaf set of peer `a` given the crashes it detected (topology.rs rule).
    fn model_leaf_set(&self, a: usize) -> Vec<NodeHandle> {
        self.model_leaves(a)
            .into_iter()
            .map(|q| self.slots[q].handle)
            .collect()
    }

    /// [`Cluster::model_leaf_set`], as the peers' places in the configuration.
    fn model_leaves(&self, a: usize) -> Vec<usize> {
        let live: Vec<(u16, usize)> = (0..self.slots.len())
            .filter(|&q| !self.slots[a].known_dead.contains(&q))
            .map(|q| (self.slots[q].tid, q))
            .collect();
        let (me, bits, half) = (self.slots[a].tid, self.cfg.id_bits, self.cfg.leaf_half);
        ring_leaf_set(me, &live, bits, half)
    }

    /// The production timer behind request name `origin/who#n` at peer `at`; `None` for a
    /// re-JOIN that a newer one replaced (production has one re-JOIN timer per group, the
    /// newest's; the model keeps the old request's timer, whose firing does nothing).
    fn timer_of(&mut self, at: usize, req: &str) -> Result<Option<RequestTimer>, String> {
        let bad = || format!("request name '{req}' is not origin/who#n");
        let (origin, rest) = req.split_once('/').ok_or_else(bad)?;
        let (who, _) = rest.split_once('#').ok_or_else(bad)?;
        if origin != self.slots[at].name {
            return Err(format!(
                "request {req} was not issued by {}",
                self.slots[at].name
            ));
        }
        if who == origin {
            let current = self.slots[at]
                .rejoin
                .map(|n| format!("{origin}/{origin}#{n}"));
            return Ok((current.as_deref() == Some(req)).then_some(RequestTimer::Rejoin(self.gid)));
        }
        let u = self.ua_ix(who)?;
        let call_id = self
            .pending_call_id(u, req)
            .ok_or_else(|| format!("request {req} is not pending at its user agent"))?;
        let handle = self.slots[at].call(
            self.now,
            Box::new(move |host, _| {
                let h = host.sip().and_then(|s| s.core_handle(&call_id));
                h.map(|h| h.to_string()).ok_or_else(|| {
                    format!("the SIP front end has no request with Call-ID {call_id}")
                })
            }),
        )?;
        let h: u64 = handle.parse().map_err(|_| "bad handle".to_string())?;
        if self.cfg.subscribers.iter().any(|s| s.name == who) {
            Ok(Some(RequestTimer::Subscription(SubHandle(h))))
        } else {
            Ok(Some(RequestTimer::Publication(PubHandle(h))))
        }
    }

    fn deliver(&mut self, f: Flight) {
        if self.stand_in(&f) {
            return;
        }
        let sender = self.slots[f.from].handle.id.0;
        let from_paused = self.slots[f.from].paused;
        let to = &mut self.slots[f.to];
        if to.crashed || to.paused || from_paused {
            let why = if to.crashed { "crashed" } else { "paused" };
            self.obs
                .log
                .push(format!("dropped (recipient {why}): {}", f.what));
            return;
        }
        // Every datagram carries its sender's address: one declared dead without it has one
        // to probe from now on.
        to.unaddressed.remove(&f.from);
        // A busy answer to a fetching root: the time the peer named, capped at the root's lease.
        let mut busy_for = None;
        // Peers the message names (another peer's word: production's `Overlay::vouched`).
        let mut named = Vec::new();
        // A re-JOIN's answer reaching its origin ends it (the answer to the current one: that
        // of a re-JOIN a newer one replaced leaves the newer one's name in place).
        if let Ok(env) = self.codec.decode(&f.payload) {
            if let Msg::Scribe(ScribeMsg::JoinAck { join_id, path, .. }) = &env.msg {
                let current = to.rejoin.map(|n| format!("{0}/{0}#{n}", to.name));
                let named = f.abs.as_ref().and_then(|a| a.req.clone());
                let rejoin = join_id & REJOIN_ID_BIT != 0;
                if rejoin && path.len() == 1 && path[0].id == to.handle.id && named == current {
                    to.rejoin = None;
                }
            }
            // A pACK for a JOIN this peer sent for its user agent's pending SUBSCRIBE: the
            // user agent is told 100 Trying (MAPPING.md, "Client-visible outcomes").
            if let Msg::Scribe(ScribeMsg::Provisional { join_id, .. }) = &env.msg {
                let u = self.join_ua.get(&(to.handle.id.0, *join_id)).copied();
                if let Some(u) = u.filter(|&u| self.uas[u].trying == Some(false)) {
                    self.trying_due.push(u);
                }
            }
            // A peer closer to the group asking for the record is taken back, as the
            // model's `take_back` (production: `Peer::dispatch` on a `FetchState`).
            if let Msg::Scribe(ScribeMsg::FetchState { gid, .. }) = &env.msg {
                if self.cfg.leases && sascribe::id::closer(gid.0, sender, to.handle.id.0) {
                    to.known_dead.remove(&f.from);
                    to.unaddressed.remove(&f.from);
                    to.met.insert(f.from);
                }
            }
            match &env.msg {
                Msg::Pastry(PastryMsg::LeafSetReply { leaves: hs })
                | Msg::Pastry(PastryMsg::RowReply { entries: hs }) => {
                    named.extend(hs.iter().map(|h| h.id));
                }
                Msg::Scribe(ScribeMsg::NotRoot { closer, .. }) => named.push(closer.id),
                _ => {}
            }
            if let Msg::Scribe(ScribeMsg::FetchReply {
                gid,
                busy_for: b,
                epoch,
                ..
            }) = env.msg
            {
                if gid == self.gid && b > 0 {
                    busy_for = Some((epoch, b.min(self.peer_cfgs[f.to].root_lease)));
                }
            }
        }
        // A peer declared dead without its address has one once another peer names it: it
        // is probed from then on.
        for id in named {
            if let Some(q) = self.slots.iter().position(|s| s.handle.id == id) {
                self.slots[f.to].unaddressed.remove(&q);
            }
        }
        if let Some((epoch, b)) = busy_for {
            // The root's clock as it takes the answer in: its own, or the harness's if ahead
            // (the delivery below hands it the harness's clock, without the peer's skew).
            let clock = self.slots[f.to].driver.call(
                self.now,
                Box::new(|host, now| Ok(host.now().max(now).to_string())),
            );
            if let Ok(at) = clock.and_then(|c| c.parse::<Millis>().map_err(|e| e.to_string())) {
                // A later busy answer from the same peer replaces the earlier one, as at the
                // root (the peer's clock moved on meanwhile, and it names the time left).
                self.busy_due.retain(|d| (d.0, d.1) != (f.to, f.from));
                let by = self.slots[f.from].handle.id;
                self.slots[f.to].tally.busy_from.insert((epoch, by));
                self.busy_due
                    .push((f.to, f.from, epoch, at.saturating_add(b)));
            }
        }
        let from = self.slots[f.from].handle.addr;
        let now = self.now;
        self.slots[f.to]
            .driver
            .datagram(now, Socket::Overlay, from, f.payload);
        self.obs.log.push(format!("delivered {}", f.what));
    }

    /// Runs SIP traffic, silent overlay traffic and silent timers to quiescence and returns
    /// what the input made observable.
    /// With leases, the group's first root fetches its replicas' records at `init` (silent:
    /// the model's first root holds the role from the start, and its replicas confirm its
    /// lease in epoch 1), and its later rounds are in the open.
    pub fn first_fetch(&mut self) -> Result<(), String> {
        if !self.cfg.leases {
            return Ok(());
        }
        let r = self.first_root;
        let gid = self.gid;
        let now = self.now;
        self.slots[r].call(
            now,
            Box::new(move |host, now| {
                host.harness(now, |p, now, t| p.take_root(now, t, gid));
                Ok(String::new())
            }),
        )?;
        self.quiesce();
        let name = self.slots[r].name.clone();
        self.log(format!(
            "{name} takes the root role (silent fetch, epoch 1)"
        ));
        self.first_root = usize::MAX;
        Ok(())
    }

    pub fn settle(&mut self) -> Observed {
        self.quiesce();
        let counted = self.counted();
        let mut obs = std::mem::take(&mut self.obs);
        match counted {
            Ok(c) => obs.counted = Some(c),
            Err(e) => obs.log.push(format!("statistics not read: {e}")),
        }
        obs
    }

    /// What the live peers counted since they were last read: every takeover and demotion
    /// their statistics grew by ([`crate::Counted`]).
    fn counted(&mut self) -> Result<Vec<crate::Counted>, String> {
        let mut out = Vec::new();
        for i in 0..self.slots.len() {
            if self.slots[i].crashed {
                continue;
            }
            let read = Arc::new(Mutex::new([0u64; 2]));
            let into = Arc::clone(&read);
            self.slots[i].call(
                self.now,
                Box::new(move |host, _| {
                    let s = host.peer().stats();
                    *into.lock().unwrap_or_else(|p| p.into_inner()) = [s.takeovers, s.demotions];
                    Ok(String::new())
                }),
            )?;
            let now = *read.lock().unwrap_or_else(|p| p.into_inner());
            let slot = &mut self.slots[i];
            for (k, kind) in crate::COUNTED_KINDS.iter().enumerate() {
                for _ in slot.counts[k]..now[k] {
                    out.push(crate::Counted {
                        peer: slot.name.clone(),
                        kind: (*kind).to_string(),
                    });
                }
            }
            slot.counts = now;
        }
        Ok(out)
    }

    /// Runs SIP traffic, silent overlay traffic and silent timers to quiescence.
    fn quiesce(&mut self) {
        let mut n = 0;
        loop {
            n += 1;
            let moved = self.collect();
            if n > MAX_SETTLE {
                self.log("settle: loop bound reached (silent traffic does not quiesce)".into());
                break;
            }
            if moved {
                continue;
            }
            if let Some(f) = self.silent.pop_front() {
                self.deliver(f);
                continue;
            }
            // Silent timers: a new root's record fetch timing out, due within a few seconds,
            // and the SIP front end's own (100 Trying, Timer J). Subscription and publication
            // expiries lie weeks ahead: the trace decides when a publication expires
            // (`expire`), and subscriptions outlive it.
            let horizon = self.now + SILENT_HORIZON;
            let due = self
                .slots
                .iter_mut()
                .enumerate()
                .filter(|(_, s)| !s.crashed && !s.paused)
                .filter_map(|(i, s)| s.next_deadline().map(|t| (t, i)))
                .filter(|(t, _)| *t <= horizon)
                .min();
            if let Some((t, i)) = due {
                self.now = self.now.max(t);
                let now = self.now;
                self.log(format!("timer at {} fired (t={now})", self.slots[i].name));
                self.slots[i].timeout(now);
                continue;
            }
            break;
        }
    }

    /// Takes every peer's and user agent's outputs: overlay datagrams are classified, SIP
    /// datagrams go to their user agent or peer at once, what user agents observe becomes
    /// client outcomes. Returns whether anything moved.
    fn collect(&mut self) -> bool {
        let mut moved = false;
        for i in 0..self.slots.len() {
            if self.slots[i].crashed {
                continue;
            }
            let Drained {
                transmits,
                notes,
                events,
            } = self.slots[i].drain();
            self.obs.log.extend(notes);
            let upcalls = events.iter().map(|e| format!("event {e:?}"));
            self.obs.log.extend(upcalls);
            self.check_upcalls(i, &events);
            for t in transmits {
                moved = true;
                match t.socket {
                    Socket::Overlay => {
                        let Some(to) = self.slot_at(t.dst) else {
                            self.log(format!("datagram to unknown address {}", t.dst));
                            continue;
                        };
                        self.capture(i, to, t.payload);
                    }
                    Socket::SipTcp(_) | Socket::SipTcpConnect(_) => {
                        // The trace's user agents speak UDP: no stream reaches a peer here.
                        self.log(format!("SIP stream output to {} ignored", t.dst));
                    }
                    Socket::SipUdp => {
                        let Some(u) = self.uas.iter().position(|u| u.agent.addr() == t.dst) else {
                            self.log(format!("SIP datagram to unknown address {}", t.dst));
                            continue;
                        };
                        let now = self.now;
                        let from = self.slots[i].sip;
                        self.uas[u].agent.handle_datagram(now, from, &t.payload);
                    }
                }
            }
        }
        for u in 0..self.uas.len() {
            self.observe_ua(u);
            let from = self.uas[u].agent.addr();
            while let Some(t) = self.uas[u].agent.poll_transmit() {
                moved = true;
                let Some(p) = self.slots.iter().position(|s| s.sip == t.dst) else {
                    self.log(format!("user agent datagram to unknown address {}", t.dst));
                    continue;
                };
                if self.slots[p].crashed {
                    self.log(format!(
                        "SIP request to crashed peer {} dropped",
                        self.slots[p].name
                    ));
                    continue;
                }
                let now = self.now;
                self.slots[p]
                    .driver
                    .datagram(now, Socket::SipUdp, from, t.payload);
            }
        }
        moved
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
        if let Msg::Routed {
            body: Routed::Join {
                origin, join_id, ..
            },
            ..
        } = &msg
        {
            if origin.id == self.slots[from].handle.id && join_id & REJOIN_ID_BIT != 0 {
                self.slots[from].tally.rejoins += 1;
            }
        }
        if let Msg::Scribe(
            ScribeMsg::Notify { gid, latest } | ScribeMsg::JoinAck { gid, latest, .. },
        ) = &msg
        {
            if *gid == self.gid {
                let len = latest.body.as_ref().map_or(0, |b| b.len());
                self.slots[from].tally.told = Some((latest.seq, len));
            }
        }
        if self.detecting == Some(from) {
            match msg {
                Msg::Pastry(PastryMsg::LeafSetRequest) => self.repair_asked.push(to),
                Msg::Pastry(PastryMsg::RowRequest { row }) => self.rows_asked.push((to, row)),
                _ => {}
            }
        }
        if let Some(j) = self.unmet_joiner_named(to, &msg) {
            // The model's peers learn of a peer that joins mid-run from its announcement
            // alone (`alive`); production's would also take it in second-hand, from another
            // peer's leaf set or routing row (its own leaf-set repair, which the harness
            // completes itself). Such a reply is dropped.
            self.obs.log.push(format!(
                "dropped (names {}, which {} has not taken in yet): {what}",
                self.slots[j].name, self.slots[to].name
            ));
            return;
        }
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
                if self.slots[from].paused || self.slots[to].paused {
                    // Lost across the pause (the model drops it as it is sent).
                    self.obs.log.push(format!("lost (paused): {}", f.what));
                    return;
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

    /// A peer that joins mid-run, which `to` has not taken in yet (it has it for dead and
    /// never heard of it), named in a leaf set or a routing row sent to `to`.
    fn unmet_joiner_named(&self, to: usize, msg: &Msg) -> Option<usize> {
        let named: &[NodeHandle] = match msg {
            Msg::Pastry(PastryMsg::LeafSetReply { leaves }) => leaves,
            Msg::Pastry(PastryMsg::RowReply { entries }) => entries,
            _ => return None,
        };
        named.iter().find_map(|h| {
            let j = self.slot_of(h.id)?;
            let unmet = self.cfg.peers[j].joins
                && self.slots[to].known_dead.contains(&j)
                && !self.slots[to].met.contains(&j);
            unmet.then_some(j)
        })
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

/// The leaf set (topology.rs rule) of the peer with id `me` among the `live` peers (id, index;
/// `me` itself may be among them): the `leaf_half` nearest on each side of the ring of
/// `id_bits`-bit ids, or every other live peer if there are no more than twice that many.
pub(super) fn ring_leaf_set(
    me: u16,
    live: &[(u16, usize)],
    id_bits: u32,
    leaf_half: usize,
) -> Vec<usize> {
    let ring = 1u32 << id_bits;
    let mut others: Vec<(u32, usize)> = live
        .iter()
        .filter(|&&(id, _)| id != me)
        .map(|&(id, q)| ((u32::from(id) + ring - u32::from(me)) % ring, q))
        .collect();
    others.sort_unstable();
    if others.len() <= 2 * leaf_half {
        return others.into_iter().map(|x| x.1).collect();
    }
    others[..leaf_half]
        .iter()
        .chain(&others[others.len() - leaf_half..])
        .map(|x| x.1)
        .collect()
}
