//! sa-Scribe's messages: the routed JOIN and PUBLISH bodies, and the direct messages of trees,
//! publications, replication and root takeover.

use super::{ETag, NodeHandle};
use crate::id::{GroupId, NodeId};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The latest event state of a group as members know it: a sequence number stamped by the root
/// and the composed document of the presentity's live event states with its content type
/// (`None` before any publication, and once every state was removed or expired).
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Latest {
    /// Sequence number; 0 means "nothing ever published".
    pub seq: u64,
    /// The composed document.
    pub body: Option<Bytes>,
    /// Its content type (`None` with no body, or for a body published without one).
    pub content_type: Option<String>,
}

/// Identifies one publication request across retries (deduplication at the root).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct PubReqId {
    /// The peer that issued the request.
    pub origin: NodeId,
    /// Its nonce.
    pub nonce: u64,
}

/// Result of a successful publication, as decided by the root.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct PubOutcome {
    /// New entity tag (`None` after a removal).
    pub etag: Option<ETag>,
    /// Granted expiry in seconds (0 after a removal).
    pub expires: u32,
    /// Sequence number of the state after the publication.
    pub seq: u64,
}

/// The root's answer to a PUBLISH.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum PublishReply {
    /// Accepted, replicated and (if the state changed) multicast.
    Ok(PubOutcome),
    /// `SIP-If-Match` does not name the current entity tag (412).
    PreconditionFailed,
    /// Requested expiry below the minimum (423 with Min-Expires).
    IntervalTooBrief {
        /// Minimum expiry in seconds.
        min: u32,
    },
    /// Request without body and without `SIP-If-Match`, a removal without it, or a PIDF body
    /// that does not parse (400).
    BadRequest,
    /// A new event state would exceed the presentity's maximum number of states (403).
    TooManyStates {
        /// The maximum.
        max: u32,
    },
    /// The body, the presentity's states or their composed document would exceed the
    /// configured maximum size (413).
    TooLarge,
}

/// One event state of a presentity as replicated (RFC 3903 §4: one per entity tag).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct WireState {
    /// Its entity tag.
    pub etag: ETag,
    /// Its body.
    pub body: Bytes,
    /// Its content type, as published.
    pub content_type: Option<String>,
    /// Remaining lifetime in milliseconds at send time.
    pub ttl: u64,
    /// Seq of the change that created it (orders the states; 0: a state adopted from the
    /// tree, whose tag no publisher was given).
    pub created: u64,
    /// Seq of the change that last set it (the most recent one wins composition).
    pub changed: u64,
}

/// A root's group record as replicated to its replicas.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct WireRecord {
    /// Root epoch (term) of the root that committed the record's latest change: records are
    /// ordered by it first, so the side that committed last wins when two roots meet.
    pub epoch: u64,
    /// Sequence number of the current state.
    pub seq: u64,
    /// Revision: bumped by every change of the record.
    pub rev: u64,
    /// The live event states, in creation order.
    pub states: Vec<WireState>,
    /// The presentity's URI (the `entity` of a composed PIDF), when a publisher named it.
    pub resource: Option<String>,
    /// Recently committed publications, for retry deduplication.
    pub dedup: Vec<(PubReqId, PubOutcome)>,
}

/// Set in the request id of a tree-repair re-JOIN ([`Routed::Join`]), clear in a local
/// subscription's: the two kinds of JOIN answered to one peer are told apart on the wire.
pub const REJOIN_ID_BIT: u64 = 1 << 63;

/// Messages routed through the overlay towards a key (hop by hop, with forward upcalls).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Routed {
    /// A new peer joins the overlay; routed towards its own id.
    OverlayJoin {
        /// The joining peer.
        joiner: NodeHandle,
    },
    /// A diagnostic lookup; delivered to the peer responsible for the key.
    Lookup {
        /// Who asked.
        origin: NodeHandle,
        /// Opaque token echoed in the delivery event.
        token: u64,
    },
    /// sa-Scribe JOIN (subscription or tree repair).
    Join {
        /// Group.
        gid: GroupId,
        /// The peer that wants the answer (the ACK).
        origin: NodeHandle,
        /// Origin's request id: a local subscription's, or (with [`REJOIN_ID_BIT`] set) a
        /// tree-repair re-JOIN's, the same for each of its retransmissions.
        join_id: u64,
        /// Whether the previous hop asks to be grafted as a child.
        graft: bool,
        /// Latest state known below (carried by re-JOINs).
        carried: Option<Latest>,
        /// Reverse path: the origin, then every peer that forwarded the JOIN. The root's
        /// answer retraces it.
        path: Vec<NodeHandle>,
    },
    /// sa-Scribe PUBLISH (Scribe create + multicast merged).
    Publish {
        /// Group.
        gid: GroupId,
        /// Request id.
        req: PubReqId,
        /// Where to send the reply.
        origin: NodeHandle,
        /// New state (None: refresh or removal).
        body: Option<Bytes>,
        /// Its content type.
        content_type: Option<String>,
        /// The presentity's URI (the PUBLISH's Request-URI), for composition.
        resource: Option<String>,
        /// `SIP-If-Match`.
        if_match: Option<ETag>,
        /// Requested expiry in seconds.
        expires: Option<u32>,
    },
}

/// Most beats (or acknowledgements) one [`ScribeMsg::Heartbeats`] (or
/// [`ScribeMsg::HeartbeatAcks`]) carries: a beat encodes in at most 30 bytes (a 19-byte group
/// id, a 10-byte seq and the depth), so a full message stays within
/// [`super::MAX_DATAGRAM_LEN`] with room for the envelope and the tag.
pub const MAX_BEATS: usize = 480;

/// Bytes of [`ReplicaItem`]s one [`ScribeMsg::Replicates`] carries at most: a datagram less
/// room for the envelope, the stamp and the tag. A record too large to share a datagram
/// travels alone, as a [`ScribeMsg::Replicate`].
pub const REPLICAS_BUDGET: usize = super::MAX_DATAGRAM_LEN - 1024;

/// One group's record in a [`ScribeMsg::Replicates`].
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ReplicaItem {
    /// Group.
    pub gid: GroupId,
    /// Record.
    pub rec: WireRecord,
    /// The sender's root epoch for the group.
    pub epoch: u64,
}

/// A parent's heartbeat in one group.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Beat {
    /// Group.
    pub gid: GroupId,
    /// Parent's latest seq.
    pub seq: u64,
    /// Parent's depth in the tree (root = 0).
    pub depth: u8,
}

/// A child's acknowledgement of a heartbeat in one group.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct BeatAck {
    /// Group.
    pub gid: GroupId,
    /// Child's latest seq (the parent re-sends the state when it is behind).
    pub seq: u64,
}

/// An sa-Scribe message sent straight to one peer.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum ScribeMsg {
    /// pACK: the next hop grafted the sender and took its JOIN.
    Provisional {
        /// Group.
        gid: GroupId,
        /// Origin's request id.
        join_id: u64,
    },
    /// ACK from the root with the current state (it is also the first NOTIFY). A root without
    /// state answers too: `seq` 0 and no body before any publication, its seq and no body once
    /// every state is gone (so that every peer on the path learns it).
    JoinAck {
        /// Group.
        gid: GroupId,
        /// Origin's request id.
        join_id: u64,
        /// Current state.
        latest: Latest,
        /// Remaining reverse path (the receiver is its last element).
        path: Vec<NodeHandle>,
    },
    /// Multicast of a new state down the tree.
    Notify {
        /// Group.
        gid: GroupId,
        /// State.
        latest: Latest,
    },
    /// Parent → child heartbeats, one per group the two share (sa-Scribe's tree
    /// round sends a child all of them in one datagram).
    Heartbeats {
        /// One per group.
        beats: Vec<Beat>,
    },
    /// Child → parent answer to [`ScribeMsg::Heartbeats`]: one acknowledgement per beat
    /// whose sender is the child's parent in that group, and the groups in which it is not
    /// (the parent drops the child there, as on a [`ScribeMsg::Leave`]).
    HeartbeatAcks {
        /// One per group in which the sender is the child.
        acks: Vec<BeatAck>,
        /// The groups in which the sender is not (or no longer) the child.
        left: Vec<GroupId>,
    },
    /// Child leaves the tree (or tells a stale parent it is not its child).
    Leave {
        /// Group.
        gid: GroupId,
    },
    /// Root → publisher.
    PublishReply {
        /// Request.
        req: PubReqId,
        /// Outcome.
        reply: PublishReply,
    },
    /// Root → replica.
    Replicate {
        /// Group.
        gid: GroupId,
        /// Record.
        rec: WireRecord,
        /// The sender's root epoch (a replica refuses one below what it holds or promised).
        epoch: u64,
        /// The root's clock when it sent this (echoed in the acknowledgement: the root's
        /// lease runs from it).
        stamp: u64,
    },
    /// Replica → root: refused, because `closer` is nearer to the group id than the sender, so
    /// the sender is not the group's root.
    NotRoot {
        /// Group.
        gid: GroupId,
        /// A peer closer to `gid` than the sender (possibly the replica itself).
        closer: NodeHandle,
    },
    /// Replica → root.
    ReplicateAck {
        /// Group.
        gid: GroupId,
        /// Revision stored.
        rev: u64,
        /// The `stamp` of the REPLICATE acknowledged.
        stamp: u64,
    },
    /// Replica → root: refused, because the replica holds (or promised) a higher root epoch
    /// than the record's: another root took the group over meanwhile.
    Fenced {
        /// Group.
        gid: GroupId,
        /// The highest epoch the replica knows for the group.
        epoch: u64,
        /// The epoch of the REPLICATE refused (a root ignores a fence of one it sent in an
        /// earlier epoch: it may be its own promise that refused it).
        refused: u64,
        /// The replica's copy of the record, if any.
        rec: Option<WireRecord>,
    },
    /// A root taking the group over (or confirming it still holds it) → its nearest peers:
    /// send me your copy of the group record, and accept records of epoch `epoch` or above only.
    FetchState {
        /// Group.
        gid: GroupId,
        /// The epoch the asking root will serve with.
        epoch: u64,
    },
    /// Answer to [`ScribeMsg::FetchState`].
    FetchReply {
        /// Group.
        gid: GroupId,
        /// The epoch of the fetch round answered (a root ignores an answer to an earlier
        /// round: its promise was for that round's epoch, not the current one).
        epoch: u64,
        /// The sender's copy, if any.
        rec: Option<WireRecord>,
        /// The highest epoch the sender had promised or held before this fetch.
        promised: u64,
        /// Whether the sender promised the asked epoch (no other root asked for it or a
        /// higher one first).
        granted: bool,
        /// Non-zero: the sender confirms another root's lease for this many milliseconds
        /// more. It promised nothing and sent no record; the root asks it again then.
        busy_for: u64,
    },
    /// Root → replica: the periodic refresh of the records of every group whose root
    /// replicates to the receiver, as many as fit one datagram ([`REPLICAS_BUDGET`]), each
    /// handled as its own [`ScribeMsg::Replicate`] sent at `stamp`.
    Replicates {
        /// The root's clock when it sent this (echoed in the acknowledgements).
        stamp: u64,
        /// One per group.
        items: Vec<ReplicaItem>,
    },
    /// Replica → root: the acknowledgements of a [`ScribeMsg::Replicates`] (refusals travel
    /// as their own [`ScribeMsg::NotRoot`] and [`ScribeMsg::Fenced`]).
    ReplicateAcks {
        /// The `stamp` of the `Replicates` acknowledged.
        stamp: u64,
        /// Group and revision stored, one per item acknowledged.
        acks: Vec<(GroupId, u64)>,
    },
}
