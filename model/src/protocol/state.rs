//! What the actors hold: the group state and its entries, a peer's view of the tree and of the
//! root role, replicas, local subscriptions and pending publishes, and the user agents' state.
//!
//! States are compact and cheap to hash (small integers, sorted small vectors, [`PeerSet`]
//! masks): the checker stores and compares millions of them.

use super::message::{Obs, PubResult, ReqId};
use crate::topology::{PeerIx, PeerSet};
use serde::Serialize;

/// A group sequence number, stamped by the root on each committed change (0 = none yet).
pub type Seq = u8;
/// A publication body, abstracted to a small number chosen by the publisher (1 ≤ v ≤ 7).
pub type Value = u8;
/// What subscribers are told: the composition of every live event state of the presentity
/// (RFC 3903 §4, several publishers of one resource), abstracted to the set of their values,
/// bit `v` for value `v`. [`NO_STATE`] (the empty set): nothing published yet, or every
/// publication removed or expired — subscribers get a NOTIFY without state (RFC 3856: the
/// presentity is offline), and a SIP-If-Match naming a state that is gone gets a 412.
pub type Values = u8;
/// No event state.
pub const NO_STATE: Values = 0;
/// An entity tag. The root mints a new one per change of an event state; in the model the tag
/// of a state is the seq of the change that last set it, unique as long as seqs never roll
/// back. Tag 0 names no publication (a state adopted from the tree, whose tag is unknown).
pub type ETag = Seq;

/// The set holding only value `v`.
pub fn single(v: Value) -> Values {
    1 << v
}

/// A piece of group state: the composed `values` stamped with `seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Entry {
    /// Sequence number stamped by the root.
    pub seq: Seq,
    /// The composition of the live event states.
    pub values: Values,
}

/// Keeps the newer of two optional entries (by seq).
pub fn newer(a: Option<Entry>, b: Option<Entry>) -> Option<Entry> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y.seq > x.seq { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

/// One event state of the presentity (RFC 3903 §4): its tag, its body, its granted expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct EventState {
    /// Entity tag (the seq of the change that last set this state).
    pub etag: ETag,
    /// Its body: one value, or several for a state adopted from the tree.
    pub values: Values,
    /// Expiry the root granted.
    pub expires: u8,
}

/// What a root holds for its group, and what it replicates to its k nearest peers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct RootState {
    /// The root epoch (term) of the root that committed this record's last change (a root
    /// that only fetched raises no record's epoch): with suspicions, records are ordered by
    /// (epoch, seq) ([`RootState::key`]); always 0 without.
    pub epoch: u8,
    /// Seq of the latest applied change (0: nothing ever published).
    pub seq: Seq,
    /// The live event states, sorted by entity tag.
    pub states: Vec<EventState>,
    /// Last applied request and its result per publisher (`who`, `n`, result): answers a
    /// retransmitted publish without applying it twice.
    pub applied: Vec<(u8, u8, PubResult)>,
}

impl RootState {
    /// The record's order: (epoch, seq).
    pub fn key(&self) -> (u8, Seq) {
        (self.epoch, self.seq)
    }

    /// The composed entry subscribers are told (`None` before any publication).
    pub fn entry(&self) -> Option<Entry> {
        (self.seq > 0).then(|| Entry {
            seq: self.seq,
            values: self.states.iter().fold(NO_STATE, |m, s| m | s.values),
        })
    }

    /// The set of live entity tags, bit `e` for tag `e`.
    pub fn live(&self) -> u16 {
        self.states.iter().fold(0, |m, s| m | 1 << s.etag)
    }

    /// Takes an entry adopted from the tree or a replica: its states' tags are unknown, so it
    /// becomes one anonymous state (tag 0) holding the composition.
    pub fn adopt(&mut self, e: Entry) {
        self.seq = e.seq;
        self.states.clear();
        if e.values != NO_STATE {
            self.states.push(EventState {
                etag: 0,
                values: e.values,
                expires: super::publish::MAX_EXPIRES,
            });
        }
    }
}

/// A subscriber attached to a first-contact peer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct LocalSub {
    /// The client's actor index.
    pub client: u8,
    /// Where the subscription stands.
    pub phase: SubPhase,
}

/// Phase of a local subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum SubPhase {
    /// JOIN sent with request counter `n`; waiting for the ACK.
    Pending(u8),
    /// Accepted; `last` is the seq of the last NOTIFY sent to the client.
    Active(Seq),
    /// Handed over from a peer that left, JOIN sent with request counter `n`; `last` is the
    /// seq of the state that peer showed the client last. The root's answer makes it active
    /// with a NOTIFY (a target refresh) of the newest state known here, unless that is older
    /// than `last` (then it waits for a newer one, like any stale state).
    Handed(u8, Seq),
}

impl SubPhase {
    /// The request counter of the JOIN it waits on, if it waits on one.
    pub fn pending(self) -> Option<u8> {
        match self {
            SubPhase::Pending(n) | SubPhase::Handed(n, _) => Some(n),
            SubPhase::Active(_) => None,
        }
    }
}

/// A publish a first-contact peer is waiting on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct PendingPub {
    /// Request id.
    pub req: ReqId,
    /// Body (ignored by a removal, `expires` 0).
    pub value: Value,
    /// SIP-If-Match.
    pub if_match: Option<ETag>,
    /// Requested expiry (0: remove the state `if_match` names).
    pub expires: u8,
    /// The UA's last scripted publish: its answer goes to the observer.
    pub last: bool,
}

/// A replica as its root tracks it. The root sends its state to every replica behind it each
/// time the state changes (and to a replica new in the set); a replica that did not
/// acknowledge (it refused, see [`Topology::refuses`]) gets it again when the root's
/// replication retry fires.
///
/// [`Topology::refuses`]: crate::topology::Topology::refuses
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Replica {
    /// The replica.
    pub peer: PeerIx,
    /// Highest seq it acknowledged.
    pub acked: Seq,
}

/// Root-only state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Root {
    /// State replicated to the replicas.
    pub st: RootState,
    /// Latest committed entry: what JOINs are answered with.
    pub committed: Option<Entry>,
    /// Applied changes waiting for every replica's ack, in seq order: publications (with their
    /// request) and expiries (none), with the change's observation for the history.
    pub waiting: Vec<(Option<PendingPub>, PubResult, Obs)>,
    /// Current replica set and the highest seq each has acknowledged.
    pub acks: Vec<Replica>,
    /// Requests held while a commit is pending (one publication is committed at a time) or
    /// while the root fetches its replicas' records, served in order.
    pub queued: Vec<Held>,
    /// The peers whose records this root still awaits before it serves (its fetch phase,
    /// production's `RootRole::active` false); empty once active. Its own bit: the fetch is
    /// to be (re)started once this peer is reachable again (it lost its lease).
    pub fetching: PeerSet,
    /// The peers asked in the current fetch round (production `RootRole::asked`): a peer of
    /// the replica set not among them is asked when the round progresses.
    pub asked: PeerSet,
    /// The highest epoch and the highest seq the fetch phase heard of (fetched and fenced
    /// records, promises), for the next round's epoch and the activation's seq (with
    /// suspicions only).
    pub seen: (u8, Seq),
    /// This root's epoch: above every epoch it knew when it started its last fetch round; it
    /// stamps the changes it commits with it (0 without suspicions).
    pub epoch: u8,
    /// A peer of the current fetch round refused its promise (it promised another root as
    /// much): the round starts over above that, up to [`MAX_ROUNDS`] times, then serves anyway.
    pub rival: bool,
    /// Fetch rounds started over since the last activation.
    pub rounds: u8,
    /// Peers of the current round that answered [`Msg::FetchBusy`]: asked again by
    /// [`Timer::Reask`], not by the replication retry.
    ///
    /// [`Msg::FetchBusy`]: super::Msg::FetchBusy
    /// [`Timer::Reask`]: super::Timer::Reask
    pub busy: PeerSet,
    /// With suspicions, the record as last committed while changes wait for their replicas:
    /// a root whose lease lapses drops what it applied but did not commit (production
    /// `reconfirm`), so that it never re-commits it as its own record on a later epoch.
    pub base: Option<RootState>,
}

/// Fetch rounds a root starts over after a refused promise before it serves anyway
/// (production's `MAX_ROUNDS`).
pub const MAX_ROUNDS: u8 = 3;

impl Root {
    /// Whether the root serves (its fetch phase is over).
    pub fn active(&self) -> bool {
        self.fetching == 0
    }

    /// Whether the root serves without a lease (its last promise rounds were refused, and no
    /// acknowledgement of its record has granted it one since) while it holds requests: its
    /// next tick starts another round ([`Timer::Resend`](super::Timer::Resend)).
    pub fn leaseless_with_held(&self) -> bool {
        self.active() && self.rival && !self.queued.is_empty()
    }
}

/// A request a root holds until it can serve it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Held {
    /// A publish.
    Pub(PendingPub),
    /// A JOIN with its reverse path (empty: the root's own) and the state it carries.
    Join {
        /// End-to-end request id.
        req: ReqId,
        /// Reverse path.
        path: super::message::Hops,
        /// Latest state known to the joiner.
        carried: Option<Entry>,
    },
}

impl Held {
    /// The request's id.
    pub fn req(&self) -> ReqId {
        match self {
            Held::Pub(p) => p.req,
            Held::Join { req, .. } => *req,
        }
    }
}

/// An overlay peer's state for the model's one group.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct PeerState {
    /// Peers this one has detected as crashed.
    pub dead: PeerSet,
    /// Peers that join mid-run which this one has never heard of (in `dead` since the run
    /// started, until it takes them in): production's overlay holds no tombstone for them,
    /// so they are not counted among the dead closer to a group when it picks a fetch epoch.
    /// A joiner taken in and later declared dead is counted, as production's tombstone is.
    pub strangers: PeerSet,
    /// Parent in the multicast tree.
    pub parent: Option<PeerIx>,
    /// Children in the multicast tree.
    pub children: PeerSet,
    /// Latest group state known here.
    pub latest: Option<Entry>,
    /// Suspected by the others and not yet healed: paused (it takes no step) or, with
    /// `--partition`, cut off (it runs alone).
    pub cut: bool,
    /// The highest root epoch this peer promised a fetching root, and to whom (with
    /// suspicions only): it refuses REPLICATEs of a lower epoch, or of that epoch from
    /// another root.
    pub promised: (u8, Option<PeerIx>),
    /// The root whose lease this peer confirms (it granted that root's fetch or acknowledged
    /// its REPLICATE), with that root's epoch, as long as the lease may still run (with
    /// suspicions only): it promises no other root anything meanwhile ([`Msg::FetchBusy`]).
    /// It lapses ([`Timer::Lapse`]) once that root can no longer serve with it (it crashed,
    /// demoted, or started a new round), when the peer declares that root dead, or when this
    /// peer is suspected itself (its pause outlasts any lease).
    ///
    /// [`Msg::FetchBusy`]: super::Msg::FetchBusy
    /// [`Timer::Lapse`]: super::Timer::Lapse
    pub leased: Option<(PeerIx, u8)>,
    /// Root role, if this peer is the group's root.
    pub root: Option<Root>,
    /// Replica of the root's state, if this peer is one of its k nearest peers.
    pub replica: Option<RootState>,
    /// Subscribers attached here.
    pub subs: Vec<LocalSub>,
    /// Publishes from UAs attached here awaiting the root's result.
    pub pubs: Vec<PendingPub>,
    /// This peer's own outstanding re-JOIN.
    pub rejoin: Option<ReqId>,
    /// Counter for requests this peer issues.
    pub next_n: u8,
    /// Retransmissions made per outstanding request.
    pub tries: Vec<(ReqId, u8)>,
}

/// A subscribing UA: it only decides when to send its SUBSCRIBE (what it is sent back is
/// recorded in the history).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct SubscriberState {
    /// SUBSCRIBE sent.
    pub started: bool,
    /// Unsubscribe sent.
    pub stopped: bool,
    /// The peer its subscription moved to (`None`: still its first-contact peer).
    pub at: Option<PeerIx>,
}

impl SubscriberState {
    /// The peer of its current subscription, `first` being its first-contact peer.
    pub fn peer(&self, first: PeerIx) -> PeerIx {
        self.at.unwrap_or(first)
    }
}

/// A publishing UA running its script.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct PublisherState {
    /// Index of the script step awaiting its response (== script length when done).
    pub next: u8,
    /// ETag of this UA's last successful publish.
    pub etag: Option<ETag>,
    /// Bit `i` set when step `i` got a 412.
    pub rejected: u8,
}

/// How a scripted publish chooses its SIP-If-Match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum IfMatch {
    /// Unconditional (initial publish).
    None,
    /// The ETag of this UA's previous successful publish (a modify), unconditional if none.
    Mine,
    /// A fixed ETag learned elsewhere (may be stale, or not yet exist).
    Fixed(ETag),
}

/// One scripted publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct PubOp {
    /// Body.
    pub value: Value,
    /// SIP-If-Match choice.
    pub if_match: IfMatch,
    /// Requested expiry (0: a removal of the state `if_match` names).
    pub expires: u8,
}

/// Any actor's state. (Actor states already live behind an `Arc` in the checker, so the
/// peer variant is not boxed.)
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum ParticipantState {
    /// A peer.
    Peer(PeerState),
    /// A subscribing UA.
    Subscriber(SubscriberState),
    /// A publishing UA.
    Publisher(PublisherState),
}

impl ParticipantState {
    /// The peer state, if a peer.
    pub fn peer(&self) -> Option<&PeerState> {
        match self {
            ParticipantState::Peer(p) => Some(p),
            _ => None,
        }
    }
}
