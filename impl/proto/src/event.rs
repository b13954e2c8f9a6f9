//! Upcalls of a peer to its SIP layer, and the handles that tie them to SIP transactions.

use crate::id::{GroupId, NodeId};
use crate::wire::ETag;
use bytes::Bytes;

/// Caller-chosen handle of a local subscription (e.g. a SIP dialog).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct SubHandle(pub u64);

/// Caller-chosen handle of a local publication request (e.g. a SIP server transaction).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct PubHandle(pub u64);

/// What a publication says about its body besides the bytes (the SIP layer fills it from the
/// PUBLISH; a local caller may leave it empty: the body is then opaque, and the most recent
/// state is what subscribers get).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct PubMeta {
    /// The body's `Content-Type` (kept with the state and given to subscribers; an
    /// `application/pidf+xml` body must parse and is composed with the presentity's other
    /// PIDF states).
    pub content_type: Option<String>,
    /// The presentity's URI (the PUBLISH's Request-URI): the `entity` of a composed PIDF.
    pub resource: Option<String>,
    /// Identifies the request across its retransmissions, whoever forwards them (the SIP
    /// layer derives it from the server transaction's key and the source): the root answers
    /// a retransmission it already applied from its stored result. A retransmission that
    /// reaches a first-contact peer restarted since (its transaction is gone) is then
    /// answered 200 with the first copy's ETag, not 412 for the ETag that copy replaced.
    /// `None`: a fresh random nonce per call.
    pub retry_key: Option<u64>,
}

/// Why a subscription got a final negative answer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SubRejectReason {
    /// No final answer within the request timeout.
    Timeout,
}

/// Why an accepted subscription ended without the SIP layer asking.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TerminateReason {
    /// Its expiry passed without refresh.
    Expired,
}

/// Why a publication failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum PublishError {
    /// `SIP-If-Match` does not match the current entity tag (412).
    #[error("precondition failed")]
    PreconditionFailed,
    /// Requested expiry below the minimum (423).
    #[error("interval too brief, minimum {min} s")]
    IntervalTooBrief {
        /// Minimum expiry in seconds.
        min: u32,
    },
    /// Neither body nor `SIP-If-Match`, a removal without `SIP-If-Match`, or a PIDF body that
    /// does not parse (400).
    #[error("bad request")]
    BadRequest,
    /// A new event state would exceed the presentity's maximum number of states (403).
    #[error("more than {max} event states for this presentity")]
    TooManyStates {
        /// The maximum ([`crate::Config::max_states`]).
        max: u32,
    },
    /// Body, the presentity's states or their composed document larger than the configured
    /// maximum (413).
    #[error("body too large")]
    TooLarge,
    /// No answer from the root in time (the outcome is unknown; 408/504).
    #[error("timeout")]
    Timeout,
}

/// Errors of the synchronous local subscription API.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum SubscribeError {
    /// Requested expiry below the minimum (423).
    #[error("interval too brief, minimum {min} s")]
    IntervalTooBrief {
        /// Minimum expiry in seconds.
        min: u32,
    },
    /// The handle is already in use.
    #[error("duplicate subscription handle")]
    DuplicateHandle,
    /// No such subscription.
    #[error("unknown subscription handle")]
    UnknownHandle,
}

/// An upcall from the core.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Event {
    /// The overlay join completed.
    Joined,
    /// pACK: an intermediate peer took the subscription's JOIN (maps to a provisional response).
    SubProvisional {
        /// Subscription.
        handle: SubHandle,
    },
    /// ACK: the root accepted the subscription (maps to 200); a [`Event::Notify`] follows at
    /// once, with seq 0 and no state when nothing was published yet.
    SubAccepted {
        /// Subscription.
        handle: SubHandle,
        /// Granted expiry in seconds.
        expires: u32,
    },
    /// Timeout (no answer from the root); the subscription is gone.
    SubRejected {
        /// Subscription.
        handle: SubHandle,
        /// Why.
        reason: SubRejectReason,
    },
    /// New state for a subscriber. The first follows [`Event::SubAccepted`] at once (seq 0
    /// when nothing was published yet); seqs per handle then strictly increase. `state ==
    /// None` means no live event state: nothing published yet (seq 0), or every state removed
    /// or expired.
    Notify {
        /// Subscription.
        handle: SubHandle,
        /// Sequence number stamped by the root.
        seq: u64,
        /// The composed event state.
        state: Option<Bytes>,
        /// Its content type (`None` with no state or for a body published without one).
        content_type: Option<String>,
    },
    /// The subscription ended (final NOTIFY with `Subscription-State: terminated`).
    SubTerminated {
        /// Subscription.
        handle: SubHandle,
        /// Why.
        reason: TerminateReason,
    },
    /// The root committed a publication (maps to 200 with `SIP-ETag` and `Expires`).
    Published {
        /// Request.
        req: PubHandle,
        /// New entity tag (`None` after a removal).
        etag: Option<ETag>,
        /// Granted expiry in seconds (0 after a removal).
        expires: u32,
        /// Sequence number of the resulting state.
        seq: u64,
    },
    /// A publication failed.
    PublishFailed {
        /// Request.
        req: PubHandle,
        /// Why.
        reason: PublishError,
    },
    /// A diagnostic lookup (see `Peer::lookup`) reached this peer, responsible for `key`.
    LookupDelivered {
        /// Token given by the origin.
        token: u64,
        /// Key looked up.
        key: u128,
        /// Overlay hops taken.
        hops: u8,
        /// The peer that started the lookup.
        origin: NodeId,
    },
    /// Something an operator wants a log line for (no SIP meaning; drivers log it).
    Log(crate::diag::LogEvent),
}

/// A third-party view of this peer's state for one group (for conformance projections).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct GroupView {
    /// Group.
    pub gid: GroupId,
    /// This peer acts as root (serving, or fetching state before serving).
    pub is_root: bool,
    /// Root role is active (serving requests).
    pub root_active: bool,
    /// Tree parent.
    pub parent: Option<NodeId>,
    /// Tree children.
    pub children: Vec<NodeId>,
    /// Latest (seq) known as a member.
    pub latest_seq: u64,
    /// Seq of the root record or replica copy held here.
    pub record_seq: Option<u64>,
    /// Entity tags of the live event states of the record held here, in creation order.
    pub etags: Vec<ETag>,
    /// Number of local subscriptions.
    pub local_subs: usize,
    /// How many of them the root accepted (its ACK arrived).
    pub accepted_subs: usize,
    /// The root whose lease this peer confirms (it granted that root's fetch or acknowledged
    /// its REPLICATE, and promises no other root meanwhile), and until when, if any.
    pub confirms: Option<(NodeId, crate::Millis)>,
}

/// A fetching root's wait on the peers that answered it busy ([`crate::Peer::busy_waits`]).
#[cfg(feature = "harness")]
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BusyWaits {
    /// The fetch round's epoch (a busy answer to another round changes nothing).
    pub epoch: u64,
    /// When its fetch timer runs next.
    pub deadline: crate::Millis,
    /// Each peer it still awaits that answered busy, with the time before which it is not
    /// asked again.
    pub busy: Vec<(crate::NodeId, crate::Millis)>,
    /// Every peer it still awaits (busy or not).
    pub awaited: Vec<crate::NodeId>,
}

/// One event state of a record, as an operator sees it (admin endpoint).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StateView {
    /// Its entity tag (`SIP-ETag`).
    pub etag: ETag,
    /// Its content type.
    pub content_type: Option<String>,
    /// Body size in bytes.
    pub bytes: usize,
    /// When it expires (the host's clock, ms).
    pub expires_at: crate::Millis,
    /// Seq of the change that created it.
    pub created: u64,
    /// Seq of the change that last set it.
    pub changed: u64,
    /// Its body (a cheap reference to the record's).
    pub body: bytes::Bytes,
}

/// The record of a group held at this peer (as root, or as a replica's copy).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RecordView {
    /// Group.
    pub gid: GroupId,
    /// This peer is the group's root.
    pub is_root: bool,
    /// The record's seq.
    pub seq: u64,
    /// The presentity's URI, once a publisher named it.
    pub resource: Option<String>,
    /// Live event states, in creation order.
    pub states: Vec<StateView>,
    /// Size of the composed document (what NOTIFYs carry).
    pub document_bytes: usize,
}
