//! The system under test, as the runner sees it: a set of peers that take abstract inputs
//! (harness-owned deliveries, timer firings, crashes, client requests) and report what they
//! sent (abstract overlay messages) and what user agents were told (client outcomes).
//!
//! The same request/reply types are the bodies of the JSON-lines adapter protocol (see
//! `conformance/ADAPTER.md`), so the in-process implementation ([`crate::inprocess`]) and an
//! external process ([`crate::adapter::AdapterProcess`]) are interchangeable behind [`System`].

use crate::{AbstractMsg, ClientOutcome, Config, PeerState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A client request a user agent makes to its first-contact peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientRequest {
    /// SIP SUBSCRIBE.
    Subscribe,
    /// SIP SUBSCRIBE with `Expires: 0` in the subscription's dialog: ends it.
    Unsubscribe,
    /// SIP PUBLISH.
    Publish {
        /// Body (the abstract value `N`; an implementation sends the body `vN`).
        value: u8,
        /// SIP-If-Match: the seq `N` of the publication whose ETag is meant (`eN`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        if_match: Option<u8>,
        /// Requested expiry in abstract units (see MAPPING.md for seconds).
        expires: u8,
    },
}

/// One input to the system under test (the body of an adapter request).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Input {
    /// Set up the peers of `config` (first message).
    Init {
        /// The trace's configuration.
        config: Config,
    },
    /// User agent `ua` hands `request` to its first-contact peer `peer`.
    ClientRequest {
        /// The user agent.
        ua: String,
        /// Its first-contact peer.
        peer: String,
        /// The request.
        request: ClientRequest,
    },
    /// Deliver the in-flight overlay message `msg` (one the implementation reported as sent).
    Deliver {
        /// The message.
        msg: AbstractMsg,
    },
    /// The network loses the in-flight overlay message `msg`.
    Lose {
        /// The message.
        msg: AbstractMsg,
    },
    /// Peer `at`'s failure detector reports that `peer` crashed.
    DetectFailure {
        /// Detecting peer.
        at: String,
        /// Crashed peer.
        peer: String,
    },
    /// Peer `at`'s retransmission timer for request `req` (`origin/who#n`) fires. `attempt`
    /// counts the firings of this timer from 1; when it exceeds the configured retry limit the
    /// request times out instead of being retransmitted.
    FireTimer {
        /// The peer.
        at: String,
        /// The request.
        req: String,
        /// Firing number, from 1.
        attempt: u32,
    },
    /// Root `at`'s replication retry fires: it resends its state to the replicas that have not
    /// acknowledged it.
    ReplicationRetry {
        /// The root.
        at: String,
    },
    /// Root `at`'s expiry timer for the event state whose entity tag is `eN` (`etag`: the seq
    /// `N` of the change that last set it) fires: the lifetime granted to that state has passed
    /// (the implementation's clock may be advanced past it first). Only that state expires.
    Expire {
        /// The root.
        at: String,
        /// The state's entity tag, as a seq.
        etag: u8,
    },
    /// Peer `at`'s tree round runs for the group (configurations with `tree_maintenance`):
    /// it sends each of its children a heartbeat carrying its latest seq. A child answers
    /// with its own seq (a parent behind it is pushed its state first), or that it is not a
    /// child; the parent sends a child behind its state that state. Nothing else of the
    /// periodic tick runs.
    Heartbeat {
        /// The peer.
        at: String,
    },
    /// Peer `at` times its tree parent out, as its tick does when it heard no beat from it
    /// for a while (configurations with `tree_maintenance`): it leaves the parent and, if it
    /// still needs the group, re-JOINs. Nothing else of the periodic tick runs.
    ParentTimeout {
        /// The peer.
        at: String,
    },
    /// Peer `peer` crashes (crash-stop): it handles nothing more and sends nothing more.
    Crash {
        /// The peer.
        peer: String,
    },
    /// Crashed peer `peer`, which every live peer declared dead, restarts with empty state: a
    /// new incarnation at the same id and address rejoins the overlay knowing every peer of
    /// the configuration; the live peers do not know it is back until `alive`.
    Restart {
        /// The peer.
        peer: String,
    },
    /// Peer `at` hears from `peer`, which it declared dead and which restarted (its
    /// announcement of the new join) or ran again after a pause: it takes it back.
    Alive {
        /// The peer that hears.
        at: String,
        /// The restarted peer.
        peer: String,
    },
    /// The lease peer `at` confirms for a root (it granted its fetch or acknowledged its
    /// REPLICATE) lapses: that root no longer serves with it (configurations with `leases`).
    /// The peer may promise another root again.
    Lapse {
        /// The peer.
        at: String,
    },
    /// Fetching root `at` asks `peer`, which answered `fetch_busy`, again for its record and
    /// promise, in the same round (its fetch timer; configurations with `leases`).
    Reask {
        /// The fetching root.
        at: String,
        /// The peer asked again.
        peer: String,
    },
    /// Live peer `peer` is paused (configurations with `leases`): it takes no step until it
    /// heals; the overlay messages in flight to or from it are lost, and so is every one sent
    /// to it meanwhile (what its user agents send it waits). The leases it holds and confirms
    /// lapse meanwhile.
    Suspect {
        /// The paused peer.
        peer: String,
    },
    /// Paused peer `peer` runs again and finds out it was paused (configurations with
    /// `leases`): each root role it holds fetches again, and it re-JOINs each group it is a
    /// member of, carrying its latest state.
    Heal {
        /// The peer.
        peer: String,
    },
}

/// What one input made observable (the body of an adapter reply).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observed {
    /// Overlay messages of the modelled kinds that were sent (in any order).
    #[serde(default)]
    pub sent: Vec<AbstractMsg>,
    /// What user agents were told (in any order).
    #[serde(default)]
    pub client: Vec<ClientOutcome>,
    /// What the input made peers count in their statistics (`takeover`, `demotion`), in any
    /// order; `None` when this system does not report it (it is then not compared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted: Option<Vec<crate::Counted>>,
    /// Free-form diagnostics (shown with `--verbose`).
    #[serde(default)]
    pub log: Vec<String>,
}

/// A system under test.
pub trait System {
    /// Told the trace about to be run, before its `init` (the in-process system sizes its
    /// document limit from the records the trace holds). Nothing by default.
    fn prepare(&mut self, _trace: &crate::Trace) {}

    /// Handles one input; `Err` is a description of why the input could not be applied (e.g.
    /// the message to deliver is not in flight), which the runner reports as a failure.
    fn handle(&mut self, input: &Input) -> Result<Observed, String>;

    /// The projected state of every live peer, by name (a peer left out has the empty
    /// projection), read after the last input settled; `None` when this system cannot report
    /// it (it is then compared on messages only).
    fn state(&mut self) -> Option<Result<BTreeMap<String, PeerState>, String>> {
        None
    }
}
