//! # sa-Scribe conformance traces
//!
//! Reader, validator and viewer for the traces the model exports (`sascribe-model traces`),
//! format `sascribe-trace` version 8 (the reader refuses others by name), documented in
//! `conformance/TRACE-FORMAT.md` with the JSON
//! Schema `conformance/trace.schema.json`. The reader is independent of the exporter (it does
//! not link the model): it is what a third party reading the corpus would write.
//!
//! The conformance runner replays traces against an implementation: [`runner`] plays the user
//! agents and judges each step; [`sut`] is the interface of a system under test; [`inprocess`]
//! is the production peer (crate `sascribe`) behind it — its user agents are SIP user agents
//! talking to the peers' SIP front ends — driven through [`driver`] (the sans-IO host, or the
//! tokio runtime's event loop with harness sockets and clock); [`adapter`] is the
//! JSON-lines protocol for other implementations (`ADAPTER.md`). The mapping between production
//! and the model is `MAPPING.md`.

#![warn(missing_docs)]

pub mod adapter;
pub mod chart;
pub mod driver;
pub mod fuzz;
pub mod inprocess;
pub mod runner;
pub mod sut;
pub mod validate;

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The format name this reader accepts.
pub const FORMAT: &str = "sascribe-trace";
/// The format version this reader writes and reads.
pub const VERSION: u32 = 12;
/// The oldest version it still reads: version 10 is version 11 without [`Expect::counted`]
/// (a step of it lists no counted events, and a runner does not compare them), and version 11
/// is version 12 without [`Peer::joins`]. The regression traces `validate-run` kept before
/// version 11 are of version 10.
pub const OLDEST_VERSION: u32 = 10;
/// The first version whose steps list [`Expect::counted`]; a runner compares counts only in
/// traces of it or later.
pub const COUNTED_SINCE: u32 = 11;
/// The first version whose peers may join mid-run ([`Peer::joins`]).
pub const JOINS_SINCE: u32 = 12;

/// Why a trace could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Io {
        /// The file.
        file: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The JSON is malformed or does not have the trace's shape.
    #[error("{file}: line {line}, column {column}: {message}")]
    Syntax {
        /// The file.
        file: PathBuf,
        /// Line of the problem.
        line: usize,
        /// Column of the problem.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The trace is well-formed JSON but inconsistent.
    #[error("{file}: {message}")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Provenance of a trace.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    /// `witness`, `walk`, `counterexample`, `mutant-path` or `coverage`.
    pub kind: String,
    /// Property witnessed or violated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    /// The transition label a coverage-directed trace was made for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transition: Option<String>,
    /// Seed of a random walk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Seeded bug of a counterexample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutant: Option<String>,
}

/// A peer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Name.
    pub name: String,
    /// 10-bit id.
    pub id: u16,
    /// 128-bit id (hex).
    pub id128: String,
    /// Leaf set (names).
    pub leaf_set: Vec<String>,
    /// Routing table rows of 4 columns.
    pub routing_table: Vec<Vec<Option<String>>>,
    /// The peer starts outside the overlay and joins it mid-run: no peer knows it at `init`,
    /// it joins at its `restart` step, and each live peer takes it in at an `alive` step.
    /// Since version 12.
    #[serde(default)]
    pub joins: bool,
}

/// A scripted publish.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptStep {
    /// Body.
    pub value: u8,
    /// `none`, `mine` or `e<N>`.
    pub if_match: String,
    /// Requested expiry.
    pub expires: u8,
}

/// A user agent.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ua {
    /// Name.
    pub name: String,
    /// First-contact peer.
    pub peer: String,
    /// Publisher script.
    #[serde(default)]
    pub script: Vec<ScriptStep>,
}

/// Configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Id bits.
    pub id_bits: u32,
    /// Bits per digit.
    pub digit_bits: u32,
    /// Leaf set size per side.
    pub leaf_half: usize,
    /// Peers.
    pub peers: Vec<Peer>,
    /// Group key.
    pub gid: u16,
    /// Group key, 128-bit hex.
    pub gid128: String,
    /// Replication factor.
    pub k: usize,
    /// Longest expiry a root grants.
    pub max_expires: u8,
    /// Retransmissions before a timeout.
    pub retry_limit: usize,
    /// Crash budget.
    pub max_crashes: usize,
    /// Network semantics.
    pub network: String,
    /// The tree's maintenance messages (heartbeats, LEAVE) are modelled: the trace delivers
    /// or loses them, and `heartbeat` steps run a peer's tree round. Without it the harness
    /// holds them (the model's parents keep branches that left).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tree_maintenance: bool,
    /// Roots hold leases, peers keep promises and fence older roots: the harness runs
    /// production with a finite root lease, and the group's first root fetches (silently)
    /// at `init`, so that its replicas confirm its lease in epoch 1 from the start; the
    /// trace delivers `fetch_busy`, `fenced` and `not_root`, and may `lapse` and `reask`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub leases: bool,
    /// Subscribers.
    pub subscribers: Vec<Ua>,
    /// Publishers.
    pub publishers: Vec<Ua>,
}

/// An abstract message.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbstractMsg {
    /// Kind.
    pub kind: String,
    /// Sender.
    pub from: String,
    /// Recipient.
    pub to: String,
    /// Group key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u16>,
    /// Seq.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u8>,
    /// Publication body carried (a publish).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<u8>,
    /// Composed group state carried (join, ack, multicast, replicate): the values of the live
    /// event states, ascending; absent when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<u8>>,
    /// Request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<String>,
    /// SIP-If-Match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_match: Option<u8>,
    /// Root epoch of a fetch round (`fetch_state`, `fetch_reply`, `fetch_busy`), or of the
    /// REPLICATE a replica refused (`fenced`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u8>,
}

/// What a user agent is sent.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientOutcome {
    /// The user agent.
    pub ua: String,
    /// Kind.
    pub kind: String,
    /// Seq of a NOTIFY (0: nothing published yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u8>,
    /// State of a NOTIFY: the values of the composed event states, ascending; absent when
    /// there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<u8>>,
    /// ETag of a 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<u8>,
    /// Expiry of a 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u8>,
}

/// A step's action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StepAction {
    /// Deliver a message.
    Deliver {
        /// The message.
        msg: AbstractMsg,
    },
    /// Lose a message.
    Lose {
        /// The message.
        msg: AbstractMsg,
    },
    /// A subscriber sends SUBSCRIBE.
    UaSubscribes {
        /// The subscriber.
        ua: String,
    },
    /// A subscriber ends its subscription (SUBSCRIBE with `Expires: 0`).
    UaUnsubscribes {
        /// The subscriber.
        ua: String,
    },
    /// A failure detector fires.
    DetectFailure {
        /// Detecting peer.
        at: String,
        /// Crashed peer.
        peer: String,
    },
    /// A retransmission timer fires.
    Retransmit {
        /// The peer.
        at: String,
        /// The request.
        req: String,
    },
    /// The root's replication retry fires.
    ReplicationRetry {
        /// The root.
        at: String,
    },
    /// An event state at the root expires.
    Expire {
        /// The root.
        at: String,
        /// The state's entity tag (`eN`: the seq of the change that last set it).
        etag: u8,
    },
    /// A peer crashes.
    Crash {
        /// The peer.
        peer: String,
    },
    /// A crashed peer that every live peer declared dead restarts with no state: a new
    /// incarnation at the same id and address rejoins the overlay; no live peer knows it is
    /// back until it hears from it (`alive`).
    Restart {
        /// The peer.
        peer: String,
    },
    /// Peer `at` hears from `peer`, which it declared dead and which restarted: it takes it
    /// back.
    Alive {
        /// The peer that hears.
        at: String,
        /// The restarted peer.
        peer: String,
    },
    /// The lease peer `at` confirms lapses (its root no longer serves with it): it may
    /// promise another root again (trace configurations with `leases` only).
    Lapse {
        /// The peer.
        at: String,
    },
    /// Fetching root `at` asks `peer`, which answered `fetch_busy`, again (its fetch timer;
    /// trace configurations with `leases` only).
    Reask {
        /// The fetching root.
        at: String,
        /// The peer asked again.
        peer: String,
    },
    /// Live peer `peer` is paused: it takes no step, and the overlay messages in flight to or
    /// from it, or sent to it meanwhile, are lost; the leases it holds and confirms lapse
    /// (trace configurations with `leases` only). Since version 10.
    Suspect {
        /// The paused peer.
        peer: String,
    },
    /// Paused peer `peer` runs again and finds out it was paused: its root roles fetch again,
    /// and it re-JOINs the groups it is a member of (trace configurations with `leases`
    /// only). Since version 10.
    Heal {
        /// The peer.
        peer: String,
    },
    /// A peer's tree round runs for the group: it sends each child a beat with its latest
    /// seq (trace configurations with `tree_maintenance` only).
    Heartbeat {
        /// The peer.
        at: String,
    },
    /// A peer times its tree parent out (it heard no beat from it): it leaves it and
    /// re-JOINs (trace configurations with `tree_maintenance` only).
    ParentTimeout {
        /// The peer.
        at: String,
    },
}

/// Expected outcomes.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// What user agents are sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client: Vec<ClientOutcome>,
    /// Abstract messages sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sent: Vec<AbstractMsg>,
    /// What the step makes peers count in their statistics (since version 11).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counted: Vec<Counted>,
}

/// One event a step makes a peer count in its statistics (since version 11).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counted {
    /// The peer.
    pub peer: String,
    /// `takeover` (the peer took the group's root role over when its failure detector declared
    /// a peer dead) or `demotion` (it gave its root role up to a closer peer).
    pub kind: String,
}

/// The kinds of [`Counted`] events.
pub const COUNTED_KINDS: [&str; 2] = ["takeover", "demotion"];

/// One step.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Number, from 1.
    pub n: usize,
    /// Action.
    pub action: StepAction,
    /// Expected outcomes.
    pub expect: Expect,
    /// The projected state after the step of every live peer whose projection it changed
    /// (the others keep theirs; before step 1 every projection is empty).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub state: BTreeMap<String, PeerState>,
}

/// One event state of a projected record.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateProj {
    /// Entity tag as a seq (`eN`; 0: a state adopted from the tree, its tag unknown).
    pub etag: u8,
    /// Its values, ascending.
    pub values: Vec<u8>,
    /// The expiry granted, in abstract units (the time left until its deadline, rounded up:
    /// traces last seconds, units are minutes).
    pub expires: u8,
}

/// A replica's record: its seq and live event states (ordered by etag, then values).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordProj {
    /// Seq of the latest change it holds.
    pub seq: u8,
    /// Live event states.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<StateProj>,
}

/// A committed entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryProj {
    /// Its seq.
    pub seq: u8,
    /// Its composed values; absent when no state is live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<u8>>,
}

/// A root's record: the latest change applied (committed or waiting for its replicas) and the
/// latest committed entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootProj {
    /// Seq of the latest applied change.
    pub seq: u8,
    /// Its live event states (ordered by etag, then values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<StateProj>,
    /// The latest committed entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed: Option<EntryProj>,
}

/// Local subscriptions by phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubsProj {
    /// Waiting for the root's ACK.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pending: u8,
    /// Accepted.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub active: u8,
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

impl SubsProj {
    fn is_empty(&self) -> bool {
        self.pending == 0 && self.active == 0
    }
}

/// The projected abstract state of one peer (TRACE-FORMAT.md, "Projected state"); the default
/// is the empty projection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerState {
    /// The root record (a root that has one with seq > 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<RootProj>,
    /// The replica record held here (seq > 0; never at a root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<RecordProj>,
    /// Seq of the latest state known here as a tree member (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub latest: u8,
    /// Tree parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Tree children, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<String>,
    /// Local subscriptions.
    #[serde(default, skip_serializing_if = "SubsProj::is_empty")]
    pub subs: SubsProj,
}

impl PeerState {
    /// The fields in which `self` (expected) and `got` differ: `(field, expected, got)`, in a
    /// fixed order (root, replica, latest, parent, children, subs).
    pub fn diff(&self, got: &PeerState) -> Vec<(&'static str, String, String)> {
        fn show<T: Serialize>(v: &T) -> String {
            serde_json::to_string(v).unwrap_or_default()
        }
        let mut d = Vec::new();
        let mut field = |name, a: String, b: String| {
            if a != b {
                d.push((name, a, b));
            }
        };
        let root = |r: &Option<RootProj>| r.as_ref().map(|r| (r.seq, r.states.clone()));
        let comm = |r: &Option<RootProj>| r.as_ref().and_then(|r| r.committed.clone());
        field("root", show(&root(&self.root)), show(&root(&got.root)));
        field(
            "root.committed",
            show(&comm(&self.root)),
            show(&comm(&got.root)),
        );
        field("replica", show(&self.replica), show(&got.replica));
        field("latest", show(&self.latest), show(&got.latest));
        field("parent", show(&self.parent), show(&got.parent));
        field("children", show(&self.children), show(&got.children));
        field("subs", show(&self.subs), show(&got.subs));
        d
    }
}

/// A trace.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trace {
    /// Format name.
    pub format: String,
    /// Format version.
    pub version: u32,
    /// Name.
    pub name: String,
    /// Provenance.
    pub origin: Origin,
    /// Configuration.
    pub config: Config,
    /// Steps.
    pub steps: Vec<Step>,
}

/// Parses a trace from text; `file` names it in errors.
pub fn parse(file: &Path, text: &str) -> Result<Trace, TraceError> {
    // Format and version first: a trace of another version is refused by name, before its
    // fields (which that version may spell differently) are read.
    #[derive(Deserialize)]
    struct Head {
        format: Option<String>,
        version: Option<u32>,
    }
    if let Ok(Head {
        format: Some(format),
        version: Some(version),
    }) = serde_json::from_str::<Head>(text)
    {
        let invalid = |message| TraceError::Invalid {
            file: file.to_path_buf(),
            message,
        };
        if format != FORMAT {
            return Err(invalid(format!(
                "format is '{format}', expected '{FORMAT}'"
            )));
        }
        if !(OLDEST_VERSION..=VERSION).contains(&version) {
            return Err(invalid(version_error(version)));
        }
    }
    let t: Trace = serde_json::from_str(text).map_err(|e| TraceError::Syntax {
        file: file.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    validate(&t).map_err(|message| TraceError::Invalid {
        file: file.to_path_buf(),
        message,
    })?;
    Ok(t)
}

/// Reads and checks a trace file.
pub fn load(file: &Path) -> Result<Trace, TraceError> {
    let text = std::fs::read_to_string(file).map_err(|source| TraceError::Io {
        file: file.to_path_buf(),
        source,
    })?;
    parse(file, &text)
}

/// The `*.json` files of a directory (sorted), or the file itself.
pub fn trace_files(path: &Path) -> Result<Vec<PathBuf>, TraceError> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|source| TraceError::Io {
                file: path.to_path_buf(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        Ok(files)
    } else {
        Ok(vec![path.to_path_buf()])
    }
}

fn version_error(version: u32) -> String {
    format!(
        "version {version} is not supported (this reader reads versions {OLDEST_VERSION} to \
         {VERSION}: regenerate the trace with `sascribe-model traces`)"
    )
}

/// A fetch round's messages name its epoch, and so does a `replicate` with leases
/// (`config.leases`); no other message has one.
fn epoch_where_due(m: &AbstractMsg, n: usize, leases: bool) -> Result<(), String> {
    let due = match m.kind.as_str() {
        "fetch_state" | "fetch_reply" | "fetch_busy" | "fenced" => true,
        "replicate" => leases,
        _ => false,
    };
    match (due, m.epoch) {
        (true, None) => Err(format!(
            "step {n}: {} {} → {} carries no epoch (a fetch round's messages name it, and \
             so does a replicate with config.leases)",
            m.kind, m.from, m.to
        )),
        (false, Some(_)) => Err(format!(
            "step {n}: {} {} → {} carries an epoch (only fetch_state, fetch_reply, \
             fetch_busy and fenced do, and replicate with config.leases)",
            m.kind, m.from, m.to
        )),
        _ => Ok(()),
    }
}

/// Checks what the schema cannot: format and version, step numbering, and that every name
/// refers to a configured peer or user agent.
pub fn validate(t: &Trace) -> Result<(), String> {
    if t.format != FORMAT {
        return Err(format!("format is '{}', expected '{FORMAT}'", t.format));
    }
    if !(OLDEST_VERSION..=VERSION).contains(&t.version) {
        return Err(version_error(t.version));
    }
    let c = &t.config;
    let peers: BTreeSet<&str> = c.peers.iter().map(|p| p.name.as_str()).collect();
    if peers.len() != c.peers.len() || peers.is_empty() {
        return Err("config.peers must be non-empty with distinct names".into());
    }
    // Ids are 16-bit numbers (the model's are 10-bit); a harness computes ring distances
    // modulo 2^id_bits.
    if !(1..=16).contains(&c.id_bits) {
        return Err(format!(
            "config.id_bits must be between 1 and 16, got {}",
            c.id_bits
        ));
    }
    if !(1..=c.id_bits).contains(&c.digit_bits) {
        return Err(format!(
            "config.digit_bits must be between 1 and id_bits ({}), got {}",
            c.id_bits, c.digit_bits
        ));
    }
    if !(1..=16).contains(&c.leaf_half) {
        return Err(format!(
            "config.leaf_half must be between 1 and 16, got {}",
            c.leaf_half
        ));
    }
    match c.network.as_str() {
        "unordered" | "ordered" => {}
        "duplicating" => {
            return Err(
                "config.network \"duplicating\": the runner delivers each message \
                 at most once, so traces of a duplicating network cannot be replayed yet"
                    .into(),
            )
        }
        other => {
            return Err(format!(
                "config.network must be \"unordered\" or \"ordered\", got \"{other}\""
            ))
        }
    }
    if let Some(p) = c.peers.iter().find(|p| p.joins) {
        if t.version < JOINS_SINCE {
            return Err(format!(
                "peer {}: a version-{} trace has no peer that joins mid-run (since version \
                 {JOINS_SINCE})",
                p.name, t.version
            ));
        }
        if c.peers.iter().all(|p| p.joins) {
            return Err("config.peers: every peer joins mid-run, none forms the overlay".into());
        }
        if let Some(u) = c
            .subscribers
            .iter()
            .chain(&c.publishers)
            .find(|u| c.peers.iter().any(|p| p.joins && p.name == u.peer))
        {
            return Err(format!(
                "user agent {} is attached to {}, which joins mid-run",
                u.name, u.peer
            ));
        }
    }
    let ring = 1u32 << c.id_bits;
    if let Some(p) = c.peers.iter().find(|p| u32::from(p.id) >= ring) {
        return Err(format!(
            "peer {}'s id {} does not fit config.id_bits ({})",
            p.name, p.id, c.id_bits
        ));
    }
    if u32::from(c.gid) >= ring {
        return Err(format!(
            "config.gid {} does not fit config.id_bits ({})",
            c.gid, c.id_bits
        ));
    }
    let mut actors = peers.clone();
    for ua in c.subscribers.iter().chain(&c.publishers) {
        if !peers.contains(ua.peer.as_str()) {
            return Err(format!(
                "user agent {} attaches to unknown peer {}",
                ua.name, ua.peer
            ));
        }
        if !actors.insert(ua.name.as_str()) {
            return Err(format!("duplicate actor name {}", ua.name));
        }
    }
    let known = |who: &str, what: &str, n: usize| -> Result<(), String> {
        if actors.contains(who) {
            Ok(())
        } else {
            Err(format!("step {n}: {what} names unknown actor '{who}'"))
        }
    };
    for (i, s) in t.steps.iter().enumerate() {
        if s.n != i + 1 {
            return Err(format!(
                "step {} is numbered {} (steps count from 1)",
                i + 1,
                s.n
            ));
        }
        for e in &s.expect.counted {
            known(&e.peer, "counting peer", s.n)?;
            if !COUNTED_KINDS.contains(&e.kind.as_str()) {
                return Err(format!(
                    "step {}: counted kind '{}' is none of {COUNTED_KINDS:?}",
                    s.n, e.kind
                ));
            }
        }
        if t.version < COUNTED_SINCE && !s.expect.counted.is_empty() {
            return Err(format!(
                "step {}: a version-{} trace lists no counted events (since version {COUNTED_SINCE})",
                s.n, t.version
            ));
        }
        match &s.action {
            StepAction::Deliver { msg } | StepAction::Lose { msg } => {
                known(&msg.from, "message sender", s.n)?;
                known(&msg.to, "message recipient", s.n)?;
                epoch_where_due(msg, s.n, c.leases)?;
            }
            StepAction::UaSubscribes { ua } | StepAction::UaUnsubscribes { ua } => {
                known(ua, "subscriber", s.n)?
            }
            StepAction::DetectFailure { at, peer } => {
                known(at, "detecting peer", s.n)?;
                known(peer, "crashed peer", s.n)?;
            }
            StepAction::Retransmit { at, .. } => known(at, "retransmitting peer", s.n)?,
            StepAction::Expire { at, .. } => known(at, "expiring root", s.n)?,
            StepAction::ReplicationRetry { at } => known(at, "retrying root", s.n)?,
            StepAction::Heartbeat { .. } | StepAction::ParentTimeout { .. }
                if !c.tree_maintenance =>
            {
                return Err(format!(
                    "step {}: heartbeat and parent_timeout steps need config.tree_maintenance",
                    s.n
                ))
            }
            StepAction::Heartbeat { at } => known(at, "heartbeating peer", s.n)?,
            StepAction::ParentTimeout { at } => known(at, "peer timing its parent out", s.n)?,
            StepAction::Crash { peer } => known(peer, "crashed peer", s.n)?,
            StepAction::Restart { peer } => known(peer, "restarting peer", s.n)?,
            StepAction::Alive { at, peer } => {
                known(at, "peer taking a restarted one back", s.n)?;
                known(peer, "restarted peer", s.n)?;
            }
            StepAction::Lapse { .. } | StepAction::Reask { .. } if !c.leases => {
                return Err(format!(
                    "step {}: lapse and reask steps need config.leases",
                    s.n
                ))
            }
            StepAction::Suspect { .. } | StepAction::Heal { .. } if !c.leases => {
                return Err(format!(
                    "step {}: suspect and heal steps need config.leases",
                    s.n
                ))
            }
            StepAction::Suspect { peer } => known(peer, "paused peer", s.n)?,
            StepAction::Heal { peer } => known(peer, "healed peer", s.n)?,
            StepAction::Lapse { at } => known(at, "peer whose lease lapses", s.n)?,
            StepAction::Reask { at, peer } => {
                known(at, "fetching root", s.n)?;
                known(peer, "peer asked again", s.n)?;
            }
        }
        for m in &s.expect.sent {
            known(&m.from, "expected sender", s.n)?;
            known(&m.to, "expected recipient", s.n)?;
            epoch_where_due(m, s.n, c.leases)?;
        }
        for o in &s.expect.client {
            known(&o.ua, "expected user agent", s.n)?;
        }
        for p in s.state.keys() {
            if !peers.contains(p.as_str()) {
                return Err(format!("step {}: state names unknown peer '{p}'", s.n));
            }
        }
    }
    Ok(())
}
