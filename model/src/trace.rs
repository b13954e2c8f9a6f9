//! Conformance traces exported from the model (format `sascribe-trace`, version 3; documented
//! in `conformance/TRACE-FORMAT.md` with a JSON Schema beside it).
//!
//! A trace is a configuration (peer ids — the paper's 10-bit ids and their 128-bit images with
//! order and prefixes preserved —, each peer's routing table and leaf set as the model has them,
//! k, the user agents and where they attach) and numbered steps. Each step is one model action
//! (a delivery of a named in-flight message, a timer firing, a crash, a loss) with its expected
//! observable outcomes: what user agents are sent (the ACK as 200, NOTIFY with seq and the
//! composed state, 200/412 to PUBLISH) and the abstract overlay messages each peer sends (kind, from, to,
//! gid, seq). Since version 4 each step also carries the projected abstract state of the peers
//! whose projection the step changed ([`PeerProjection`]): root and replica records, the
//! member's latest seq, tree edges and local subscriptions, for the runner to compare with the
//! implementation's after every step. Since version 11 a step also lists what it makes a peer
//! count in its statistics ([`Counted`]: a root role taken over at a failure detection, a
//! demotion), for the runner to compare with the implementation's counters. Since version 12
//! a peer of the configuration may join mid-run ([`Peer::joins`]).

use crate::model::{Action, SaScribe, State};
use crate::protocol::{
    Entry, EventState, IfMatch, Msg, PeerState, PubResult, ReqId, SubPhase, Timer, UaEvent, Values,
};
use crate::topology::{PeerIx, DIGITS};
use serde::Serialize;
use stateright::actor::{ActorModelAction, Envelope, Id, Network};
use stateright::Model;
use std::collections::BTreeMap;

/// Format name written in every trace.
pub const FORMAT: &str = "sascribe-trace";
/// Format version.
pub const VERSION: u32 = 12;

/// Where a trace comes from.
#[derive(Clone, Debug, Serialize)]
pub struct Origin {
    /// `witness`, `walk`, `counterexample`, `mutant-path` or `coverage`.
    pub kind: &'static str,
    /// The property witnessed or violated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    /// The transition label ([`crate::coverage::Label`]) a coverage-directed trace was made for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transition: Option<String>,
    /// The seed of a random walk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The seeded bug of a counterexample.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mutant: Option<String>,
}

/// A whole trace.
#[derive(Clone, Debug, Serialize)]
pub struct Trace {
    /// Always [`FORMAT`].
    pub format: &'static str,
    /// Always [`VERSION`].
    pub version: u32,
    /// Trace name (also its file name without `.json`).
    pub name: String,
    /// Provenance.
    pub origin: Origin,
    /// The configuration.
    pub config: Config,
    /// The steps, numbered from 1.
    pub steps: Vec<Step>,
}

/// A peer of the configuration.
#[derive(Clone, Debug, Serialize)]
pub struct Peer {
    /// Name (Fig. 3 letter).
    pub name: String,
    /// 10-bit id.
    pub id: u16,
    /// The id in the 128-bit space: the 10-bit id in the top bits (hex, 32 digits).
    pub id128: String,
    /// Leaf set (names), as the model computes it with no peer known dead.
    pub leaf_set: Vec<String>,
    /// Routing table: `DIGITS` rows of 4 base-4 columns, each a peer name or null.
    pub routing_table: Vec<Vec<Option<String>>>,
    /// The peer starts outside the overlay and joins it mid-run (`--joins`): at the start no
    /// peer knows it (its leaf set and routing table above are those it has once in), it
    /// joins at its `restart` step (its first incarnation is 1), and each live peer takes it
    /// in at an `alive` step. Since version 12.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub joins: bool,
}

/// A user agent.
#[derive(Clone, Debug, Serialize)]
pub struct Ua {
    /// Name (`S1`, `U1`, …).
    pub name: String,
    /// First-contact peer.
    pub peer: String,
    /// For publishers: the publishes sent one after the other.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub script: Vec<ScriptStep>,
}

/// A scripted publish.
#[derive(Clone, Debug, Serialize)]
pub struct ScriptStep {
    /// Body (abstract).
    pub value: u8,
    /// `none`, `mine` (the UA's last ETag) or `e<N>` (a fixed ETag).
    pub if_match: String,
    /// Requested expiry (abstract units).
    pub expires: u8,
}

/// The configuration of a trace.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    /// Bits of the model's ids.
    pub id_bits: u32,
    /// Bits per routing digit.
    pub digit_bits: u32,
    /// Leaf set size on each side.
    pub leaf_half: usize,
    /// Peers.
    pub peers: Vec<Peer>,
    /// The group key (10-bit).
    pub gid: u16,
    /// The group key in the 128-bit space.
    pub gid128: String,
    /// Replication factor.
    pub k: usize,
    /// Longest expiry a root grants.
    pub max_expires: u8,
    /// Retransmissions before a request times out.
    pub retry_limit: usize,
    /// Crash budget.
    pub max_crashes: usize,
    /// Network semantics.
    pub network: String,
    /// The tree's maintenance messages (heartbeat rounds, LEAVE) are modelled and delivered
    /// by the trace ([`Setup::tree_maintenance`](crate::Setup::tree_maintenance)); without
    /// it a harness holds them.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tree_maintenance: bool,
    /// Roots hold leases, and peers keep promises and fence older roots
    /// ([`Setup::fencing`](crate::Setup::fencing): restarts without a perfect failure
    /// detector): a harness runs production with a finite root lease, and the group's first
    /// root's fetch (silent) runs at `init`, so that its replicas confirm its lease in epoch 1
    /// from the start. Since version 9.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub leases: bool,
    /// Subscribing user agents.
    pub subscribers: Vec<Ua>,
    /// Publishing user agents.
    pub publishers: Vec<Ua>,
}

/// One abstract message.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct AbstractMsg {
    /// Kind: subscribe, unsubscribe, publish, join, pack, ack, multicast, publish_fwd,
    /// publish_reply, replicate, replica_ack, leave, beat, beat_ack, fetch_state,
    /// fetch_reply, fetch_busy, fenced, not_root.
    pub kind: &'static str,
    /// Sender.
    pub from: String,
    /// Recipient.
    pub to: String,
    /// Group key, for overlay messages about the group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<u16>,
    /// Sequence number carried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u8>,
    /// Publication body carried (a publish).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<u8>,
    /// Composed group state carried (join, ack, multicast, replicate): the values of the live
    /// event states, ascending; absent when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<u8>>,
    /// End-to-end request (`origin/ua#n`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub req: Option<String>,
    /// SIP-If-Match carried by a publish.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub if_match: Option<u8>,
    /// The root epoch of a fetch round (`fetch_state`: the round the new root asks for;
    /// `fetch_reply` and `fetch_busy`: the round it answers; `fenced`: the epoch of the
    /// REPLICATE refused). Since version 8 (`fetch_busy` and `fenced` since version 9).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u8>,
}

/// What a user agent is sent.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ClientOutcome {
    /// The user agent.
    pub ua: String,
    /// `subscribe_ok`, `subscribe_timeout`, `notify`, `publish_ok`, `publish_412`,
    /// `publish_timeout`.
    pub kind: &'static str,
    /// Seq of a NOTIFY (0: nothing published yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u8>,
    /// State of a NOTIFY: the values of the composed event states, ascending; absent when
    /// there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<u8>>,
    /// ETag of a 200 to PUBLISH.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<u8>,
    /// Expiry of a 200 to PUBLISH.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<u8>,
}

/// A step's action.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepAction {
    /// Deliver the named in-flight message.
    Deliver {
        /// The message.
        msg: AbstractMsg,
    },
    /// The network loses the named in-flight message.
    Lose {
        /// The message.
        msg: AbstractMsg,
    },
    /// A subscriber sends its SUBSCRIBE.
    UaSubscribes {
        /// The subscriber.
        ua: String,
    },
    /// A peer's failure detector reports a crashed peer.
    DetectFailure {
        /// The detecting peer.
        at: String,
        /// The crashed peer.
        peer: String,
    },
    /// A peer's retransmission timer for a request fires.
    Retransmit {
        /// The peer.
        at: String,
        /// The request.
        req: String,
    },
    /// A subscribing user agent ends its subscription (SUBSCRIBE with `Expires: 0`).
    UaUnsubscribes {
        /// The user agent.
        ua: String,
    },
    /// The root's replication retry fires: it resends its state to the replicas that have not
    /// acknowledged it.
    ReplicationRetry {
        /// The root.
        at: String,
    },
    /// An event state at the root expires (its expiry timer fires after the granted
    /// lifetime).
    Expire {
        /// The root.
        at: String,
        /// The entity tag of the state (`e<N>`: the seq of the change that last set it).
        etag: u8,
    },
    /// A peer crashes.
    Crash {
        /// The peer.
        peer: String,
    },
    /// A peer's tree round runs for the group: it sends each child a beat with its latest
    /// seq.
    Heartbeat {
        /// The peer.
        at: String,
    },
    /// A peer times its tree parent out: it leaves it and re-JOINs.
    ParentTimeout {
        /// The peer.
        at: String,
    },
    /// A crashed peer, which every live peer has declared dead, comes back with no state: a
    /// new incarnation at the same id and address rejoins the overlay. It knows every peer of
    /// the configuration (its failure detector reports the crashed ones, `detect_failure`);
    /// no live peer knows it is back until it hears from it (`alive`).
    Restart {
        /// The peer.
        peer: String,
    },
    /// A peer hears from a peer it declared dead that restarted (its announcement of the new
    /// join) or that was only paused and runs again. It takes it back (a root farther from
    /// the group than it hands the group over; a root that stays fetches its replicas'
    /// records again).
    Alive {
        /// The peer that hears.
        at: String,
        /// The peer that came back.
        peer: String,
    },
    /// The lease a peer confirms (it granted a root's fetch or acknowledged its REPLICATE)
    /// lapses, its root no longer serving with it (crashed, demoted, or past that epoch):
    /// it may promise another root again. Since version 9.
    Lapse {
        /// The peer.
        at: String,
    },
    /// A fetching root asks a peer that answered `fetch_busy` again, in the same round, once
    /// the lease it confirmed lapsed (production's fetch timer). Since version 9.
    Reask {
        /// The fetching root.
        at: String,
        /// The peer asked again.
        peer: String,
    },
    /// A live peer is paused (SIGSTOP, a VM pause): it takes no step, the overlay messages
    /// in flight to or from it are lost, and so is every one sent to it meanwhile; what its
    /// user agents send it waits. The leases it holds and confirms lapse. The others' failure
    /// detectors then declare it dead (`detect_failure`). Since version 10.
    Suspect {
        /// The paused peer.
        peer: String,
    },
    /// A paused peer runs again and finds out it was paused: each root role it holds fetches
    /// again, and it re-JOINs each group it is a member of, carrying its latest state. The
    /// others take it back as they hear from it (`alive`). Since version 10.
    Heal {
        /// The peer.
        peer: String,
    },
}

/// Expected outcomes of a step.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Expect {
    /// What user agents are sent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub client: Vec<ClientOutcome>,
    /// The abstract messages sent, peer to peer and user agent to peer.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sent: Vec<AbstractMsg>,
    /// What the step makes peers count (since version 11), by peer name and kind.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub counted: Vec<Counted>,
}

/// One event a step makes a peer count in its statistics (production's `Stats`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Counted {
    /// The peer.
    pub peer: String,
    /// `takeover`: the peer took the group's root role over when its failure detector declared
    /// a peer dead (production `takeovers`); `demotion`: it gave its root role up to a closer
    /// peer (production `demotions`).
    pub kind: &'static str,
}

/// One step.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    /// Step number, from 1.
    pub n: usize,
    /// The action.
    pub action: StepAction,
    /// What must be observed after it.
    pub expect: Expect,
    /// The projected state after it of every live peer whose projection this step changed
    /// (the others keep theirs; before step 1 every projection is empty).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub state: BTreeMap<String, PeerProjection>,
}

/// One event state of a projected record: its entity tag (`e<N>`: the seq of the change that
/// last set it; 0 for a state adopted from the tree or a replica, whose tag is not known), its
/// values, and the expiry the root granted it (in the model's units).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct StateProjection {
    /// Entity tag, as a seq.
    pub etag: u8,
    /// Its values, ascending.
    pub values: Vec<u8>,
    /// The expiry granted, in units of the configuration's `max_expires` scale (a state
    /// adopted from the tree or a replica: the longest, `max_expires`).
    pub expires: u8,
}

/// A projected record (a root's, or a replica's copy): its seq and live event states.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecordProjection {
    /// Seq of the latest change applied to it.
    pub seq: u8,
    /// The live event states, ordered by (etag, values).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<StateProjection>,
}

/// A committed entry: what a root answers JOINs with and has multicast.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EntryProjection {
    /// Its seq.
    pub seq: u8,
    /// Its composed values; absent when no state is live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<u8>>,
}

/// A projected root record: the latest change applied (committed or waiting for the replicas)
/// and the latest committed entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RootProjection {
    /// Seq of the latest applied change.
    pub seq: u8,
    /// Its live event states, ordered by (etag, values).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<StateProjection>,
    /// The latest committed entry, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub committed: Option<EntryProjection>,
}

/// What a local subscription count says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SubsProjection {
    /// Subscriptions waiting for the root's ACK.
    #[serde(skip_serializing_if = "is_zero")]
    pub pending: u8,
    /// Subscriptions accepted.
    #[serde(skip_serializing_if = "is_zero")]
    pub active: u8,
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

/// The abstract state of one peer that the runner compares with the implementation's after
/// every step (`conformance/MAPPING.md`, "Projected state"). A root or replica record with seq
/// 0 (nothing published yet) is not projected: production creates its root role lazily.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PeerProjection {
    /// The root record, if this peer is the group's root and has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<RootProjection>,
    /// The replica record held here (never at a root).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<RecordProjection>,
    /// Seq of the latest group state known here as a tree member (0: none).
    #[serde(skip_serializing_if = "is_zero")]
    pub latest: u8,
    /// Tree parent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Tree children, by name, sorted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<String>,
    /// Local subscriptions.
    #[serde(skip_serializing_if = "SubsProjection::is_empty")]
    pub subs: SubsProjection,
}

impl SubsProjection {
    fn is_empty(&self) -> bool {
        self.pending == 0 && self.active == 0
    }
}

fn states_of(states: &[EventState]) -> Vec<StateProjection> {
    let mut v: Vec<StateProjection> = states
        .iter()
        .map(|s| StateProjection {
            etag: s.etag,
            values: values_list(s.values).unwrap_or_default(),
            expires: s.expires,
        })
        .collect();
    v.sort();
    v
}

/// The values of a set, ascending; `None` for the empty set.
pub fn values_list(v: Values) -> Option<Vec<u8>> {
    let list: Vec<u8> = (1..8).filter(|i| v & (1 << i) != 0).collect();
    (!list.is_empty()).then_some(list)
}

fn id128(id: u16) -> String {
    format!("{:032x}", (id as u128) << 118)
}

fn all_envelopes(net: &Network<Msg>) -> BTreeMap<Envelope<Msg>, usize> {
    let mut m = BTreeMap::new();
    match net {
        Network::UnorderedDuplicating(set, _) => {
            for e in set.iter() {
                *m.entry(e.clone()).or_insert(0) += 1;
            }
        }
        Network::UnorderedNonDuplicating(map) => {
            for (e, n) in map.iter() {
                *m.entry(e.clone()).or_insert(0) += n;
            }
        }
        Network::Ordered(map) => {
            for ((src, dst), q) in map.iter() {
                for msg in q {
                    *m.entry(Envelope {
                        src: *src,
                        dst: *dst,
                        msg: msg.clone(),
                    })
                    .or_insert(0) += 1;
                }
            }
        }
    }
    m
}

impl SaScribe {
    fn name_of(&self, id: Id) -> String {
        self.setup.actor_name(usize::from(id))
    }

    fn req_name(&self, r: &ReqId) -> String {
        format!(
            "{}/{}#{}",
            self.setup.topo.name(r.origin),
            self.setup.actor_name(r.who as usize),
            r.n
        )
    }

    /// The abstract form of an overlay or user-agent-to-peer message; `None` for what user
    /// agents are sent and for model bookkeeping.
    pub fn abstract_msg(&self, src: Id, dst: Id, msg: &Msg) -> Option<AbstractMsg> {
        let gid = Some(self.setup.gid);
        let mut a = AbstractMsg {
            kind: "",
            from: self.name_of(src),
            to: self.name_of(dst),
            gid,
            seq: None,
            value: None,
            values: None,
            req: None,
            if_match: None,
            epoch: None,
        };
        let set = |a: &mut AbstractMsg, e: Option<Entry>| {
            a.seq = e.map(|e| e.seq);
            a.values = e.and_then(|e| values_list(e.values));
        };
        match msg {
            Msg::Subscribe => a.kind = "subscribe",
            Msg::Unsubscribe => a.kind = "unsubscribe",
            Msg::Publish {
                value, if_match, ..
            } => {
                a.kind = "publish";
                a.value = Some(*value);
                a.if_match = *if_match;
            }
            Msg::Join { req, carried, .. } => {
                a.kind = "join";
                a.req = Some(self.req_name(req));
                set(&mut a, *carried);
            }
            Msg::PAck => a.kind = "pack",
            Msg::JoinReply { req, state, .. } => {
                a.req = Some(self.req_name(req));
                // The root's ACK carries its committed state: none before the first
                // publication, only a seq once every state is gone.
                a.kind = "ack";
                set(&mut a, *state);
            }
            Msg::Multicast(e) => {
                a.kind = "multicast";
                set(&mut a, Some(*e));
            }
            Msg::Leave => a.kind = "leave",
            Msg::Beat(seq) => {
                a.kind = "beat";
                a.seq = (*seq > 0).then_some(*seq);
            }
            Msg::BeatAck(seq) => {
                a.kind = "beat_ack";
                a.seq = (*seq > 0).then_some(*seq);
            }
            Msg::PubFwd {
                req,
                value,
                if_match,
                expires,
            } => {
                a.kind = "publish_fwd";
                a.req = Some(self.req_name(req));
                // A removal (`Expires: 0`) carries no body.
                a.value = (*expires != 0).then_some(*value);
                a.if_match = *if_match;
            }
            Msg::PubReply { req, result } => {
                a.kind = "publish_reply";
                a.req = Some(self.req_name(req));
                match result {
                    PubResult::Ok { etag, .. } => a.seq = Some(*etag),
                    PubResult::Removed { seq } => a.seq = Some(*seq),
                    PubResult::PreconditionFailed | PubResult::Timeout => {}
                }
            }
            Msg::Replicate(rs, epoch) => {
                a.kind = "replicate";
                set(&mut a, rs.0.entry());
                // With leases, the root epoch it was sent in (since version 10): two roots'
                // REPLICATEs of one record, or one root's in two epochs, are told apart.
                if self.setup.fencing() {
                    a.epoch = Some(*epoch);
                }
            }
            Msg::ReplicaAck(s) => {
                a.kind = "replica_ack";
                a.seq = Some(*s);
            }
            Msg::FetchState(epoch) => {
                a.kind = "fetch_state";
                a.epoch = Some(*epoch);
            }
            // Promises, leases and fencing (fenced restarts; since version 9).
            Msg::FetchBusy(epoch) => {
                a.kind = "fetch_busy";
                a.epoch = Some(*epoch);
            }
            Msg::Fenced(rec, _, refused) => {
                a.kind = "fenced";
                a.epoch = Some(*refused);
                set(&mut a, rec.as_ref().and_then(|r| r.0.entry()));
            }
            Msg::NotRoot(_) => a.kind = "not_root",
            // Handovers have no trace form yet (no trace can reach one: see `corpus`).
            Msg::Handover { .. } => return None,
            Msg::FetchReply { rec, epoch, .. } => {
                a.kind = "fetch_reply";
                a.epoch = Some(*epoch);
                set(&mut a, rec.as_ref().and_then(|r| r.0.entry()));
            }
            Msg::ToSubscriber { .. } | Msg::PubResponse { .. } | Msg::Observe(_) => return None,
        }
        if matches!(a.kind, "subscribe" | "unsubscribe" | "publish" | "pack") {
            a.gid = if a.kind == "pack" { None } else { gid };
        }
        Some(a)
    }

    fn client_outcome(&self, msg: &Msg) -> Option<ClientOutcome> {
        let mut c = ClientOutcome {
            ua: String::new(),
            kind: "",
            seq: None,
            values: None,
            etag: None,
            expires: None,
        };
        match msg {
            Msg::ToSubscriber { ua, ev } => {
                c.ua = self.setup.actor_name(*ua as usize);
                match ev {
                    UaEvent::Accepted => c.kind = "subscribe_ok",
                    UaEvent::TimedOut => c.kind = "subscribe_timeout",
                    UaEvent::Notify(e) => {
                        c.kind = "notify";
                        c.seq = Some(e.seq);
                        c.values = values_list(e.values);
                    }
                }
            }
            Msg::PubResponse { ua, result, .. } => {
                c.ua = self.setup.actor_name(*ua as usize);
                match result {
                    PubResult::Ok { etag, expires } => {
                        c.kind = "publish_ok";
                        c.etag = Some(*etag);
                        c.expires = Some(*expires);
                    }
                    PubResult::Removed { .. } => {
                        c.kind = "publish_ok";
                        c.expires = Some(0);
                    }
                    PubResult::PreconditionFailed => c.kind = "publish_412",
                    PubResult::Timeout => c.kind = "publish_timeout",
                }
            }
            _ => return None,
        }
        Some(c)
    }

    /// The trace configuration of this model.
    pub fn trace_config(&self) -> Config {
        let s = &self.setup;
        let t = &s.topo;
        let peers = (0..t.len() as PeerIx)
            .map(|p| {
                let leaf = t.leaf_names(p);
                let table = (0..DIGITS)
                    .map(|row| {
                        (0..4)
                            .map(|col| t.table[p as usize][row][col].map(|q| t.name(q)))
                            .collect()
                    })
                    .collect();
                Peer {
                    name: t.name(p),
                    id: t.ids[p as usize],
                    id128: id128(t.ids[p as usize]),
                    leaf_set: leaf,
                    routing_table: table,
                    joins: s.joiners & (1 << p) != 0,
                }
            })
            .collect();
        Config {
            id_bits: 10,
            digit_bits: 2,
            leaf_half: t.leaf_half,
            peers,
            gid: s.gid,
            gid128: id128(s.gid),
            k: s.k,
            max_expires: crate::protocol::MAX_EXPIRES,
            retry_limit: s.retry_limit(),
            max_crashes: s.max_crashes,
            tree_maintenance: s.tree_maintenance(),
            leases: s.fencing(),
            network: format!("{:?}", s.network).to_lowercase(),
            subscribers: s
                .subscribers
                .iter()
                .enumerate()
                .map(|(i, &p)| Ua {
                    name: format!("S{}", i + 1),
                    peer: t.name(p),
                    script: Vec::new(),
                })
                .collect(),
            publishers: s
                .publishers
                .iter()
                .enumerate()
                .map(|(j, (p, script))| Ua {
                    name: format!("U{}", j + 1),
                    peer: t.name(*p),
                    script: script
                        .iter()
                        .map(|op| ScriptStep {
                            value: op.value,
                            if_match: match op.if_match {
                                IfMatch::None => "none".into(),
                                IfMatch::Mine => "mine".into(),
                                IfMatch::Fixed(e) => format!("e{e}"),
                            },
                            expires: op.expires,
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// The trace form of a model action; `None` for the actions that have none yet
    /// (partitions, moves and handovers: the harness cannot drive them).
    pub fn step_action(&self, action: &Action) -> Option<StepAction> {
        let name = |id: &Id| self.name_of(*id);
        Some(match action {
            ActorModelAction::Deliver { src, dst, msg } => match self.abstract_msg(*src, *dst, msg)
            {
                Some(m) => StepAction::Deliver { msg: m },
                None => StepAction::Deliver {
                    msg: AbstractMsg {
                        kind: "response",
                        from: name(src),
                        to: name(dst),
                        gid: None,
                        seq: None,
                        value: None,
                        values: None,
                        req: None,
                        if_match: None,
                        epoch: None,
                    },
                },
            },
            ActorModelAction::Drop(env) => StepAction::Lose {
                msg: self
                    .abstract_msg(env.src, env.dst, &env.msg)
                    .expect("only overlay messages are lost"),
            },
            ActorModelAction::Timeout(id, Timer::Start) => {
                StepAction::UaSubscribes { ua: name(id) }
            }
            ActorModelAction::Timeout(id, Timer::Stop) => {
                StepAction::UaUnsubscribes { ua: name(id) }
            }
            ActorModelAction::Timeout(id, Timer::Detect(x)) => StepAction::DetectFailure {
                at: name(id),
                peer: self.setup.topo.name(*x),
            },
            ActorModelAction::Timeout(id, Timer::Retry(r)) => StepAction::Retransmit {
                at: name(id),
                req: self.req_name(r),
            },
            ActorModelAction::Timeout(id, Timer::Expire(e)) => StepAction::Expire {
                at: name(id),
                etag: *e,
            },
            ActorModelAction::Timeout(id, Timer::Resend) => {
                StepAction::ReplicationRetry { at: name(id) }
            }
            ActorModelAction::Timeout(id, Timer::Heartbeat) => {
                StepAction::Heartbeat { at: name(id) }
            }
            ActorModelAction::Timeout(id, Timer::ParentTimeout) => {
                StepAction::ParentTimeout { at: name(id) }
            }
            ActorModelAction::Timeout(id, Timer::Alive(x)) => StepAction::Alive {
                at: name(id),
                peer: self.setup.topo.name(*x),
            },
            ActorModelAction::Recover(id) => StepAction::Restart { peer: name(id) },
            ActorModelAction::Timeout(id, Timer::Lapse) => StepAction::Lapse { at: name(id) },
            ActorModelAction::Timeout(id, Timer::Reask(q)) => StepAction::Reask {
                at: name(id),
                peer: self.setup.topo.name(*q),
            },
            // A pause has a trace form; a partition (the cut-off peer runs on, alone) not yet.
            ActorModelAction::Timeout(id, Timer::Suspect) if !self.setup.partition => {
                StepAction::Suspect { peer: name(id) }
            }
            ActorModelAction::Timeout(id, Timer::Heal) if !self.setup.partition => {
                StepAction::Heal { peer: name(id) }
            }
            ActorModelAction::Timeout(_, Timer::Suspect | Timer::Heal)
            | ActorModelAction::Timeout(_, Timer::Move(_) | Timer::Handover(_)) => return None,
            ActorModelAction::Crash(id) => StepAction::Crash { peer: name(id) },
            ActorModelAction::SelectRandom { actor, .. } => StepAction::Crash { peer: name(actor) },
        })
    }

    /// One step of a trace: the action from `before` and what it makes observable.
    ///
    /// # Panics
    /// On an action without a trace form ([`Self::step_action`]).
    pub fn trace_step(&self, n: usize, before: &State, action: &Action) -> Step {
        let step_action = self.step_action(action).unwrap_or_else(|| {
            panic!(
                "{} has no trace form yet (the harness cannot drive it)",
                self.describe(action)
            )
        });
        // Re-run the action without the wrapper's clean-up to see every message it sent.
        let mut expect = Expect::default();
        if let Some(after) = self.inner_next_state(before, action.clone()) {
            let mut old = all_envelopes(&before.network);
            if let ActorModelAction::Deliver { src, dst, msg } = action {
                let e = Envelope {
                    src: *src,
                    dst: *dst,
                    msg: msg.clone(),
                };
                if let Some(c) = old.get_mut(&e) {
                    *c -= 1;
                }
            }
            expect.counted = self.counted(before, action, &after);
            for (env, count) in all_envelopes(&after.network) {
                let fresh = count.saturating_sub(old.get(&env).copied().unwrap_or(0));
                for _ in 0..fresh {
                    if let Some(c) = self.client_outcome(&env.msg) {
                        expect.client.push(c);
                    } else if let Some(m) = self.abstract_msg(env.src, env.dst, &env.msg) {
                        expect.sent.push(m);
                    }
                }
            }
        }
        // The network is a multiset, so sends are put in a canonical order: per user agent, the
        // final response before the NOTIFYs, NOTIFYs by seq.
        let rank = |k: &str| match k {
            "subscribe_ok" | "subscribe_timeout" => 0,
            "notify" => 1,
            _ => 2,
        };
        expect
            .client
            .sort_by(|a, b| (&a.ua, rank(a.kind), a.seq).cmp(&(&b.ua, rank(b.kind), b.seq)));
        expect.sent.sort();
        Step {
            n,
            action: step_action,
            expect,
            state: BTreeMap::new(),
        }
    }

    /// What `action` from `before` to `after` makes peers count ([`Counted`]): a live peer that
    /// held a root role and holds none after demoted (the model's only way a live peer gives its
    /// role up); one that held none and holds one after a failure detection, its own or the
    /// suspicion of a peer, took it over (a JOIN or PUBLISH that makes a peer root is no
    /// takeover: production counts the one at detection only).
    fn counted(&self, before: &State, action: &Action, after: &State) -> Vec<Counted> {
        let detects = |p: usize| match action {
            ActorModelAction::Timeout(id, Timer::Detect(_)) => usize::from(*id) == p,
            ActorModelAction::Timeout(id, Timer::Suspect) => usize::from(*id) != p,
            _ => false,
        };
        let root = |s: &State, p: usize| {
            let st = s.actor_states.get(p).and_then(|a| a.peer());
            (!s.crashed[p]).then(|| st.is_some_and(|st| st.root.is_some()))
        };
        let mut out = Vec::new();
        for p in 0..self.setup.peers() {
            let (Some(was), Some(is)) = (root(before, p), root(after, p)) else {
                continue;
            };
            let kind = match (was, is) {
                (true, false) => "demotion",
                (false, true) if detects(p) => "takeover",
                _ => continue,
            };
            out.push(Counted {
                peer: self.setup.topo.name(p as PeerIx),
                kind,
            });
        }
        out
    }

    /// The projection of one peer's state (see [`PeerProjection`]).
    pub fn project_peer(&self, st: &PeerState) -> PeerProjection {
        let t = &self.setup.topo;
        let root = st
            .root
            .as_ref()
            .filter(|r| r.st.seq > 0)
            .map(|r| RootProjection {
                seq: r.st.seq,
                states: states_of(&r.st.states),
                committed: r.committed.map(|e| EntryProjection {
                    seq: e.seq,
                    values: values_list(e.values),
                }),
            });
        let replica = st
            .replica
            .as_ref()
            .filter(|r| r.seq > 0 && st.root.is_none())
            .map(|r| RecordProjection {
                seq: r.seq,
                states: states_of(&r.states),
            });
        let mut subs = SubsProjection::default();
        for s in &st.subs {
            match s.phase {
                SubPhase::Pending(_) | SubPhase::Handed(..) => subs.pending += 1,
                SubPhase::Active(_) => subs.active += 1,
            }
        }
        PeerProjection {
            root,
            replica,
            latest: st.latest.map_or(0, |e| e.seq),
            parent: st.parent.map(|p| t.name(p)),
            children: (0..t.len() as PeerIx)
                .filter(|&c| st.children & (1 << c) != 0)
                .map(|c| t.name(c))
                .collect(),
            subs,
        }
    }

    /// The projections of every live peer of `state`, by name.
    pub fn project(&self, state: &State) -> BTreeMap<String, PeerProjection> {
        (0..self.setup.peers())
            .filter(|&p| !state.crashed[p])
            .filter_map(|p| {
                let st = state.actor_states.get(p)?.peer()?;
                Some((self.setup.topo.name(p as PeerIx), self.project_peer(st)))
            })
            .collect()
    }

    /// Whether `action` delivers or loses a message whose abstract form another message in
    /// flight shares, though the two differ (two fetch rounds of one root, whose abstract
    /// messages carry no epoch): a trace step could not say which one it names.
    fn ambiguous(&self, state: &State, action: &Action) -> bool {
        let (src, dst, msg) = match action {
            ActorModelAction::Deliver { src, dst, msg } => (*src, *dst, msg),
            ActorModelAction::Drop(env) => (env.src, env.dst, &env.msg),
            _ => return false,
        };
        let Some(named) = self.abstract_msg(src, dst, msg) else {
            return false;
        };
        all_envelopes(&state.network).keys().any(|e| {
            (e.src, e.dst) == (src, dst)
                && e.msg != *msg
                && self.abstract_msg(e.src, e.dst, &e.msg).as_ref() == Some(&named)
        })
    }

    /// A trace following `actions` from the initial state, up to the first action it could
    /// not name unambiguously.
    pub fn trace(&self, name: String, origin: Origin, actions: &[Action]) -> Trace {
        let mut state = self.init_states().remove(0);
        let mut steps = Vec::new();
        let mut shown = self.project(&state);
        // Before step 1 every projection is empty, as the reader assumes: show any that is not.
        shown.retain(|_, p| *p == PeerProjection::default());
        for (i, a) in actions.iter().enumerate() {
            if self.ambiguous(&state, a) {
                // The trace ends before a step it cannot name unambiguously.
                break;
            }
            let mut step = self.trace_step(i + 1, &state, a);
            state = self
                .next_state(&state, a.clone())
                .expect("trace actions come from the model");
            for (peer, p) in self.project(&state) {
                if shown.get(&peer) != Some(&p) {
                    step.state.insert(peer.clone(), p.clone());
                    shown.insert(peer, p);
                }
            }
            steps.push(step);
        }
        Trace {
            format: FORMAT,
            version: VERSION,
            name,
            origin,
            config: self.trace_config(),
            steps,
        }
    }
}

/// Serialises a trace as pretty JSON with a final newline.
pub fn to_json(t: &Trace) -> String {
    let mut s = serde_json::to_string_pretty(t).expect("traces serialise");
    s.push('\n');
    s
}
