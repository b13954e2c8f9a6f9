//! The production peer (crate `sascribe`) as a [`System`]: one sans-IO [`sascribe::Host`] per
//! trace peer, a SIP gateway; the trace's user agents are SIP user agents that talk to it; every
//! overlay datagram is captured and held by the harness, and time and timers are the
//! harness's. The mapping between production events and the trace's abstract actions is
//! documented in `conformance/MAPPING.md`; this module is its implementation, in the same
//! parts:
//!
//! * `cluster`: who owns what, the actions, settling a step;
//! * `clients`: client requests as SIP requests, SIP responses and NOTIFYs as client
//!   outcomes;
//! * `abstraction`: production overlay messages as abstract messages, request naming, the
//!   ETag table.
//!
//! **The seam.** Everything the harness does to a peer goes through a
//! [`crate::driver::Driver`]: the sans-IO host called directly ([`Mode::Core`], the default),
//! or the tokio runtime's event loop with the harness's transports and clock
//! ([`Mode::Runtime`]).

mod abstraction;
mod clients;
mod cluster;
mod overlay;

use crate::sut::{Input, Observed, System};
use crate::{Config as TraceConfig, PeerState};
use bytes::Bytes;
use cluster::Cluster;
use sascribe::{Config, Millis};
use std::collections::{BTreeMap, BTreeSet};

/// Intervals of the periodic maintenance the harness fires itself or the model has no
/// counterpart for (heartbeats, leaf-set exchanges, replica refresh, request retries): far
/// beyond any trace, so they never fire by themselves.
pub const NEVER: Millis = 1_000_000_000;
/// The root lease of a trace with leases: longer than any time the harness's clocks move in
/// a trace (each lapses when the trace says, `lapse`), yet finite, so that production runs
/// its promises, leases and fencing.
pub const ROOT_LEASE: Millis = 100 * NEVER;
/// Production's keep-alive interval: each peer's failure detector runs on its own clock,
/// moved on tick by tick when the trace says it detects a crash (the routing table's pings
/// too). An hour: far beyond the silent horizon and the clock's drift in the longest run
/// (silent timers move it seconds), so that it never ticks otherwise. At 30 s, a long
/// `validate-run` drifted within the horizon of the peers' ticks, which then fired one after
/// another for hours of the clock (regression `fig3-keepalive-ticks-held-back`).
pub const KEEPALIVE: Millis = 3_600_000;
/// Production's leaf-set and routing-table failure timeout: two keep-alive ticks, so that a
/// peer last heard at a tick (as most are: the pings' answers) has been silent for exactly the
/// timeout two ticks later, where a detector that declares it dead at the timeout rather than
/// after it shows (`Cluster::keepalive_detects` checks that it does not).
pub const FAIL_TIMEOUT: Millis = 2 * KEEPALIVE;
/// Seconds per abstract expiry unit: a week, so that the hours a peer's failure detector
/// runs its clock on (at most the failure timeout and five ticks per crash) do not change
/// the units left.
pub const EXPIRY_UNIT_SECS: u32 = 604_800;
/// The peers' maximum subscription expiry (seconds), a year; their minimum is half of it.
/// Both are longer than any publication's (at most 3 units), so that the SIP front end's
/// bound (the longer of the two maxima) leaves the publications' clamp to the overlay. Each
/// user agent asks for one bound and refreshes for the other (`clients::sub_ask`).
pub const SUB_EXPIRES: u32 = 31_536_000;
/// Bound on silent deliveries and timer firings while settling one input (loop guard).
const MAX_SETTLE: usize = 100_000;
/// The resource every trace user agent publishes to and subscribes to; its group is the
/// trace's group (pinned in each SIP front end).
pub const RESOURCE: &str = "sip:trace@conformance.test";
/// The body type of the trace's publications.
pub const PIDF: &str = "application/pidf+xml";
/// How far ahead a deadline may lie for the harness to fire it as a silent timer (the SIP
/// front end's own timers; a new root's record fetch never times out here); subscription and publication
/// expiries lie weeks ahead, keep-alive ticks an hour, and never fire by themselves.
const SILENT_HORIZON: Millis = 10_000;

/// A hook that adjusts the production configuration after the trace mapping (used by the
/// mutant tests to select a seeded bug).
pub type ConfigHook = Box<dyn Fn(&mut Config) + Send + Sync>;

/// How the harness drives each production peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// The sans-IO `Peer`, called directly.
    #[default]
    Core,
    /// The `Peer` inside the tokio runtime's event loop (`sascribe::runtime::HostLoop`), with a
    /// harness transport and clock.
    Runtime,
}

/// The production core behind [`System`].
#[derive(Default)]
pub struct InProcess {
    hook: Option<ConfigHook>,
    mode: Mode,
    cluster: Option<Cluster>,
    /// The document limit for the next `init` (see [`System::prepare`]).
    max_document: Option<usize>,
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
            let doc = self.max_document.take();
            let hook = self.hook.as_deref();
            let sized = move |c: &mut Config| {
                if let Some(d) = doc {
                    c.max_document = d;
                }
                if let Some(h) = hook {
                    h(c);
                }
            };
            let mut c = Cluster::new(config, Some(&sized), self.mode)?;
            c.first_fetch()?;
            let obs = c.settle();
            self.cluster = Some(c);
            return Ok(obs);
        }
        let c = self
            .cluster
            .as_mut()
            .ok_or("the first input must be init")?;
        c.input(input)?;
        let obs = c.settle();
        c.client_faults()?;
        Ok(obs)
    }

    /// The trace's largest record sits exactly at the document limit: a limit that refuses a
    /// record of its own size refuses a publication the model accepts.
    fn prepare(&mut self, trace: &crate::Trace) {
        self.max_document = largest_record(trace);
    }

    fn state(&mut self) -> Option<Result<BTreeMap<String, PeerState>, String>> {
        let c = self.cluster.as_mut()?;
        Some(c.project())
    }
}

/// The production configuration for a trace (see MAPPING.md, "Configuration").
pub fn production_config(t: &TraceConfig) -> Config {
    let max = EXPIRY_UNIT_SECS * u32::from(t.max_expires.max(1));
    Config {
        leaf_set_size: 2 * t.leaf_half,
        replicas: t.k,
        keepalive_interval: KEEPALIVE,
        leaf_fail_timeout: FAIL_TIMEOUT,
        table_fail_timeout: FAIL_TIMEOUT,
        table_ping_interval: KEEPALIVE,
        table_probe_interval: KEEPALIVE,
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
        // A perfect failure detector (the model's): no false suspicion, no lease; with
        // leases, one that outlasts any clock the harness moves (a lease lapses at `lapse`).
        root_lease: if t.leases { ROOT_LEASE } else { u64::MAX },
        // A new root's fetch ends when every asked peer answered or was declared dead (the
        // model's failure detector stands for production's fetch timeout).
        fetch_timeout: NEVER,
        // Nor does it give up on a silent peer after a few asks: the model's fetching root
        // asks a live peer until it answers (its retry may fire while an ask is in flight, so
        // a bound would count asks the model still waits on).
        fetch_attempts: u8::MAX,
        // Production's heal window (the default, `Config::heal_window`): after a revival a
        // fetch whose asked peers all answered still waits out the window, a silent timer
        // the harness fires within the same step (the model's fetch settles at the last
        // answer, and the trace tells each peer of each revived one, `alive`).
        pub_min_expires: EXPIRY_UNIT_SECS,
        pub_max_expires: max,
        pub_default_expires: max,
        // Every SUBSCRIBE and refresh asks for exactly the minimum or the maximum (half of the
        // user agents each way, `clients::sub_ask`): a bound that refuses its own value, or
        // one compared the wrong way, refuses a subscription or a refresh the model accepts.
        sub_min_expires: SUB_EXPIRES / 2,
        sub_max_expires: SUB_EXPIRES,
        // The largest body the trace publishes sits exactly at the limit: a limit that refuses
        // a body of its own size refuses a publication the model accepts.
        max_body: largest_body(t),
        ..Config::default()
    }
}

/// The length of the largest publication body in the trace's publisher scripts (the default
/// limit when there is none).
fn largest_body(t: &TraceConfig) -> usize {
    t.publishers
        .iter()
        .flat_map(|ua| &ua.script)
        .map(|s| body_of(s.value).len())
        .max()
        .unwrap_or(Config::default().max_body)
}

/// The size of the largest record the trace's peers hold (root or replica, at any step), as
/// production's root measures a record against `max_document` when it applies a publication:
/// the larger of its states' bodies added up and its composed document. A state holds the body
/// of its one value, or, adopted from the tree (tag 0), the composed document it was adopted
/// as. `None` when the trace holds no record.
fn largest_record(trace: &crate::Trace) -> Option<usize> {
    let compose = |values: &[u8]| -> usize {
        let bodies: Vec<Bytes> = values.iter().map(|&v| body_of(v)).collect();
        let parts: Vec<sascribe::pidf::Part<'_>> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| sascribe::pidf::Part {
                body: b,
                latest: i + 1 == bodies.len(),
            })
            .collect();
        sascribe::pidf::compose(&parts, Some(RESOURCE)).map_or(0, |d| d.len())
    };
    let size = |states: &[crate::StateProj]| -> usize {
        let bodies: usize = states
            .iter()
            .map(|s| match s.values.as_slice() {
                // A state adopted from the tree (tag 0) holds the document it was adopted
                // as, composed even for one value.
                [v] if s.etag > 0 => body_of(*v).len(),
                vs => compose(vs),
            })
            .sum();
        let all: BTreeSet<u8> = states.iter().flat_map(|s| s.values.clone()).collect();
        let all: Vec<u8> = all.into_iter().collect();
        bodies.max(compose(&all))
    };
    trace
        .steps
        .iter()
        .flat_map(|s| s.state.values())
        .flat_map(|p| {
            let root = p.root.as_ref().map(|r| size(&r.states));
            let replica = p.replica.as_ref().map(|r| size(&r.states));
            root.into_iter().chain(replica)
        })
        .max()
}

/// Parses a 32-digit hex id.
fn parse_id(hex: &str) -> Result<u128, String> {
    u128::from_str_radix(hex, 16).map_err(|e| format!("bad 128-bit id '{hex}': {e}"))
}

/// The body of abstract value `v`: a PIDF document whose one tuple (id `tN`, so that the
/// tuples of several publications stay distinct once composed) has the note `vN`. Its entity
/// is the publisher's own URI, not the presentity's: the notifier's document names the
/// presentity (RFC 3863 §4.1.1), which the NOTIFYs are checked for.
///
/// Its length grows with `v` (`v` spaces after the tuple), so that a trace publishing several
/// values has bodies below the body limit as well as one at it: a limit compared the wrong way
/// refuses the smaller ones. It has no XML declaration, which the root's composed document
/// has: a record of one state is longer composed than its body, so that the document's limit,
/// not the sum of the bodies', decides for it.
pub fn body_of(v: u8) -> Bytes {
    let pad = " ".repeat(usize::from(v));
    Bytes::from(format!(
        "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:publisher@conformance.test\">\
         <tuple id=\"t{v}\"><status><basic>open</basic></status><note>v{v}</note></tuple>{pad}\
         </presence>"
    ))
}

/// The abstract state of a (composed) body: the `N`s of its `<note>vN</note>` elements,
/// ascending and without repeats (`None` for a body without one: no state, or the `closed`
/// document sent once every state is gone).
pub fn values_of(body: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(body).ok()?;
    let mut vs = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("<note>v") {
        rest = &rest[i + "<note>v".len()..];
        if let Some(v) = rest.find("</note>").and_then(|e| rest[..e].parse().ok()) {
            vs.insert(v);
        }
    }
    (!vs.is_empty()).then(|| vs.into_iter().collect())
}

/// The abstract value of a publication's body: its one note (see [`values_of`]).
pub fn value_of(body: &[u8]) -> Option<u8> {
    values_of(body).and_then(|v| v.first().copied())
}
