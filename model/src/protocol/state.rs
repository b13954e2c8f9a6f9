//! What the actors hold: the group state and its entries, a peer's view of the tree and of the
//! root role, replicas, local subscriptions and pending publishes, and the user agents' state.
//!
//! States are compact and cheap to hash (small integers, sorted small vectors, [`PeerSet`]
//! masks): the checker stores and compares millions of them.

use super::message::{PubResult, ReqId};
use crate::topology::{PeerIx, PeerSet};
use serde::Serialize;

/// A group sequence number, stamped by the root on each committed publication (0 = none yet).
pub type Seq = u8;
/// A publication body, abstracted to a small number chosen by the publisher (never 0).
pub type Value = u8;
/// The value of an entry whose publication expired: the seq goes on, the body is gone (RFC 3903
/// §4.3 — the event state is removed). Subscribers are sent a NOTIFY without state, a JOIN is
/// answered with a nACK, and a SIP-If-Match naming the expired ETag gets a 412.
pub const NO_STATE: Value = 0;
/// An entity tag. The root mints a new one per successful publication; in the model the tag of a
/// publication is its sequence number, which is unique as long as seqs never roll back.
pub type ETag = Seq;

/// A piece of group state: the publication `value` stamped with `seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Entry {
    /// Sequence number stamped by the root.
    pub seq: Seq,
    /// The published body.
    pub value: Value,
}

/// Keeps the newer of two optional entries (by seq).
pub fn newer(a: Option<Entry>, b: Option<Entry>) -> Option<Entry> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y.seq > x.seq { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

/// What a root holds for its group, and what it replicates to its k nearest peers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct RootState {
    /// Latest applied publication.
    pub entry: Option<Entry>,
    /// Expiry the root granted to the latest publication.
    pub expires: u8,
    /// Last applied request and its result per publisher (`who`, `n`, result): answers a
    /// retransmitted publish without applying it twice.
    pub applied: Vec<(u8, u8, PubResult)>,
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
    /// JOIN sent with request counter `n`; waiting for ACK/nACK.
    Pending(u8),
    /// Accepted; `last` is the seq of the last NOTIFY sent to the client.
    Active(Seq),
}

/// A publish a first-contact peer is waiting on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct PendingPub {
    /// Request id.
    pub req: ReqId,
    /// Body.
    pub value: Value,
    /// SIP-If-Match.
    pub if_match: Option<ETag>,
    /// Requested expiry.
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
    /// Applied publications (and expiries, with no request) waiting for every replica's ack,
    /// in seq order.
    pub waiting: Vec<(Option<ReqId>, Entry, PubResult, Option<ETag>)>,
    /// Current replica set and the highest seq each has acknowledged.
    pub acks: Vec<Replica>,
    /// Publishes held while a commit is pending (one publication is committed at a time),
    /// served in order.
    pub queued: Vec<PendingPub>,
}

/// An overlay peer's state for the model's one group.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct PeerState {
    /// Peers this one has detected as crashed.
    pub dead: PeerSet,
    /// Parent in the multicast tree.
    pub parent: Option<PeerIx>,
    /// Children in the multicast tree.
    pub children: PeerSet,
    /// Latest group state known here.
    pub latest: Option<Entry>,
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
    /// Provisional acknowledgements received (saturating).
    pub packs: u8,
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
    /// Requested expiry.
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
