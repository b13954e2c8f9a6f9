//! Overlay wire format.
//!
//! A datagram is `[VERSION][postcard(Envelope)][tag]` where `tag` is present only when the
//! cluster is configured with a key: `HMAC-SHA-256(key, version ‖ payload)`, 32 bytes. Datagrams
//! longer than [`MAX_DATAGRAM_LEN`], with another version, a bad tag, trailing bytes or an
//! undecodable payload are rejected with a [`WireError`]; the peer drops and counts them.

use crate::id::{GroupId, NodeId};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::fmt;
use std::net::SocketAddr;

/// Wire format version carried in the first byte of every datagram.
pub const VERSION: u8 = 2;
/// Largest datagram a peer sends or accepts.
pub const MAX_DATAGRAM_LEN: usize = 16 * 1024;
/// Length of the HMAC-SHA-256 tag appended when a cluster key is configured.
pub const TAG_LEN: usize = 32;

/// A peer's id with the address it is reached at.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct NodeHandle {
    /// Overlay id.
    pub id: NodeId,
    /// Transport address.
    pub addr: SocketAddr,
}

/// Entity tag of a publication (RFC 3903), chosen by the root from its seeded PRNG.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ETag(pub u64);

impl fmt::Debug for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ETag({:016x})", self.0)
    }
}
impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}
impl std::str::FromStr for ETag {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s.trim(), 16).map(ETag)
    }
}

/// The latest event state of a group as members know it: a sequence number stamped by the root
/// and the state (`None` once the publication was removed or expired).
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Latest {
    /// Sequence number; 0 means "nothing ever published".
    pub seq: u64,
    /// Event state body.
    pub body: Option<Bytes>,
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
    /// Request without body and without `SIP-If-Match`, or a removal without it (400).
    BadRequest,
}

/// A root's group record as replicated to its replicas.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct WireRecord {
    /// Sequence number of the current state.
    pub seq: u64,
    /// Revision: bumped by every change of the record (also refreshes that keep the state).
    pub rev: u64,
    /// Current state.
    pub body: Option<Bytes>,
    /// Current entity tag.
    pub etag: Option<ETag>,
    /// Remaining lifetime of the publication in milliseconds at send time.
    pub ttl: Option<u64>,
    /// Recently committed publications, for retry deduplication.
    pub dedup: Vec<(PubReqId, PubOutcome)>,
}

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
        /// The peer that wants the answer (ACK/nACK).
        origin: NodeHandle,
        /// Origin's request id (0 for a tree-repair re-JOIN).
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
        /// `SIP-If-Match`.
        if_match: Option<ETag>,
        /// Requested expiry in seconds.
        expires: Option<u32>,
    },
}

/// Every overlay message.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Msg {
    /// Keep-alive probe.
    Ping,
    /// Keep-alive answer.
    Pong,
    /// Ask for the receiver's leaf set.
    LeafSetRequest,
    /// Leaf set (the sender itself is implied).
    LeafSetReply {
        /// Members.
        leaves: Vec<NodeHandle>,
    },
    /// Ask for one routing-table row (repair).
    RowRequest {
        /// Row index.
        row: u8,
    },
    /// Routing-table row entries.
    RowReply {
        /// Entries.
        entries: Vec<NodeHandle>,
    },
    /// State sent to a joining peer by every peer its join passes.
    JoinState {
        /// Routing-table entries (and, from the last hop, its leaf set).
        entries: Vec<NodeHandle>,
        /// Sent by the last hop (numerically closest peer): the join is complete.
        last: bool,
    },
    /// A newly joined peer announces itself.
    Announce,
    /// The sender leaves the overlay gracefully: forget it now.
    Departing,
    /// A message routed towards `key`.
    Routed {
        /// Destination key.
        key: u128,
        /// Overlay hops taken so far.
        hops: u8,
        /// Payload.
        body: Routed,
    },
    /// pACK: the next hop grafted the sender and took its JOIN.
    Provisional {
        /// Group.
        gid: GroupId,
        /// Origin's request id.
        join_id: u64,
    },
    /// ACK from the root with the current state (it is also the first NOTIFY).
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
    /// nACK: the root has no state for the group.
    JoinNack {
        /// Group.
        gid: GroupId,
        /// Origin's request id.
        join_id: u64,
        /// The root's seq with no body (`seq` 0 when nothing was ever published; above 0 after
        /// an expiry or removal, so that every peer on the path learns the state is gone).
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
    /// Parent → child heartbeat.
    Heartbeat {
        /// Group.
        gid: GroupId,
        /// Parent's latest seq.
        seq: u64,
        /// Parent's depth in the tree (root = 0).
        depth: u8,
    },
    /// Child → parent answer to a heartbeat.
    HeartbeatAck {
        /// Group.
        gid: GroupId,
        /// Child's latest seq (the parent re-sends the state when it is behind).
        seq: u64,
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
    },
    /// New root → neighbours: send me your copy of the group record.
    FetchState {
        /// Group.
        gid: GroupId,
    },
    /// Answer to [`Msg::FetchState`].
    FetchReply {
        /// Group.
        gid: GroupId,
        /// The sender's copy, if any.
        rec: Option<WireRecord>,
    },
}

/// A decoded datagram.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// Sender.
    pub from: NodeHandle,
    /// Whether the sender completed its overlay join (only then is it added to routing state).
    pub ready: bool,
    /// Message.
    pub msg: Msg,
}

#[derive(Serialize)]
struct EnvelopeRef<'a> {
    from: &'a NodeHandle,
    ready: bool,
    msg: &'a Msg,
}

/// Why a datagram was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum WireError {
    /// Empty or shorter than the tag.
    #[error("datagram truncated")]
    Truncated,
    /// Longer than [`MAX_DATAGRAM_LEN`].
    #[error("datagram of {0} bytes exceeds the maximum length")]
    Oversized(usize),
    /// Unknown version byte.
    #[error("unsupported wire version {0}")]
    BadVersion(u8),
    /// The HMAC tag does not verify under the cluster key.
    #[error("bad message authentication tag")]
    BadMac,
    /// The payload does not decode (or has trailing bytes).
    #[error("malformed payload")]
    Malformed,
}

/// Encoder/decoder bound to an optional cluster key.
#[derive(Clone)]
pub struct Codec {
    mac: Option<Hmac<Sha256>>,
}

impl fmt::Debug for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Codec")
            .field("authenticated", &self.mac.is_some())
            .finish()
    }
}

impl Codec {
    /// A codec; with `Some(key)` every datagram is tagged and verified.
    pub fn new(cluster_key: Option<&[u8]>) -> Self {
        Codec {
            mac: cluster_key
                .map(|k| <Hmac<Sha256> as Mac>::new_from_slice(k).expect("HMAC takes any key")),
        }
    }

    /// Encodes a message from `from` into a datagram. Fails only when the result would exceed
    /// [`MAX_DATAGRAM_LEN`].
    pub fn encode(&self, from: &NodeHandle, ready: bool, msg: &Msg) -> Result<Vec<u8>, WireError> {
        let mut buf = Vec::with_capacity(64);
        buf.push(VERSION);
        let env = EnvelopeRef { from, ready, msg };
        let mut buf = postcard::to_extend(&env, buf).map_err(|_| WireError::Malformed)?;
        if let Some(mac) = &self.mac {
            let mut m = mac.clone();
            m.update(&buf);
            buf.extend_from_slice(&m.finalize().into_bytes());
        }
        if buf.len() > MAX_DATAGRAM_LEN {
            return Err(WireError::Oversized(buf.len()));
        }
        Ok(buf)
    }

    /// Decodes and authenticates a datagram.
    pub fn decode(&self, bytes: &[u8]) -> Result<Envelope, WireError> {
        if bytes.len() > MAX_DATAGRAM_LEN {
            return Err(WireError::Oversized(bytes.len()));
        }
        let min = 1 + if self.mac.is_some() { TAG_LEN } else { 0 };
        if bytes.len() < min {
            return Err(WireError::Truncated);
        }
        if bytes[0] != VERSION {
            return Err(WireError::BadVersion(bytes[0]));
        }
        let body = match &self.mac {
            Some(mac) => {
                let (body, tag) = bytes.split_at(bytes.len() - TAG_LEN);
                let mut m = mac.clone();
                m.update(body);
                m.verify_slice(tag).map_err(|_| WireError::BadMac)?;
                body
            }
            None => bytes,
        };
        let (env, rest) =
            postcard::take_from_bytes::<Envelope>(&body[1..]).map_err(|_| WireError::Malformed)?;
        if !rest.is_empty() {
            return Err(WireError::Malformed);
        }
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(i: u128) -> NodeHandle {
        NodeHandle {
            id: NodeId(i),
            addr: SocketAddr::from(([10, 0, 0, 1], 5000)),
        }
    }

    fn samples() -> Vec<Msg> {
        let gid = GroupId(77);
        vec![
            Msg::Ping,
            Msg::LeafSetReply {
                leaves: vec![h(1), h(u128::MAX)],
            },
            Msg::Routed {
                key: 5,
                hops: 3,
                body: Routed::Join {
                    gid,
                    origin: h(9),
                    join_id: 4,
                    graft: true,
                    carried: Some(Latest {
                        seq: 3,
                        body: Some(Bytes::from_static(b"open")),
                    }),
                    path: vec![h(9), h(10)],
                },
            },
            Msg::Routed {
                key: 5,
                hops: 0,
                body: Routed::Publish {
                    gid,
                    req: PubReqId {
                        origin: NodeId(3),
                        nonce: 8,
                    },
                    origin: h(3),
                    body: None,
                    if_match: Some(ETag(0xfeed)),
                    expires: Some(60),
                },
            },
            Msg::Replicate {
                gid,
                rec: WireRecord {
                    seq: 2,
                    rev: 5,
                    body: Some(Bytes::from_static(b"x")),
                    etag: Some(ETag(1)),
                    ttl: Some(1000),
                    dedup: vec![(
                        PubReqId {
                            origin: NodeId(1),
                            nonce: 2,
                        },
                        PubOutcome {
                            etag: Some(ETag(1)),
                            expires: 60,
                            seq: 2,
                        },
                    )],
                },
            },
            Msg::PublishReply {
                req: PubReqId {
                    origin: NodeId(1),
                    nonce: 2,
                },
                reply: PublishReply::IntervalTooBrief { min: 60 },
            },
        ]
    }

    #[test]
    fn round_trip_plain_and_authenticated() {
        for key in [None, Some(&b"cluster secret"[..])] {
            let c = Codec::new(key);
            for m in samples() {
                let b = c.encode(&h(42), true, &m).unwrap();
                let e = c.decode(&b).unwrap();
                assert_eq!(e.msg, m);
                assert_eq!(e.from, h(42));
                assert!(e.ready);
            }
        }
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let c = Codec::new(None);
        let b = c.encode(&h(42), true, &samples()[2]).unwrap();
        assert_eq!(c.decode(&[]), Err(WireError::Truncated));
        for cut in 1..b.len() {
            assert!(c.decode(&b[..cut]).is_err(), "truncated at {cut}");
        }
        let mut v = b.clone();
        v[0] = 9;
        assert_eq!(c.decode(&v), Err(WireError::BadVersion(9)));
        let mut v = b.clone();
        v.push(0);
        assert_eq!(c.decode(&v), Err(WireError::Malformed));
        assert_eq!(
            c.decode(&vec![VERSION; MAX_DATAGRAM_LEN + 1]),
            Err(WireError::Oversized(MAX_DATAGRAM_LEN + 1))
        );
        assert_eq!(
            c.decode(&[VERSION, 0xff, 0xff, 0xff]),
            Err(WireError::Malformed)
        );
    }

    #[test]
    fn bad_mac_rejected() {
        let a = Codec::new(Some(b"key-a"));
        let b = Codec::new(Some(b"key-b"));
        let plain = Codec::new(None);
        let d = a.encode(&h(1), false, &Msg::Ping).unwrap();
        assert_eq!(b.decode(&d), Err(WireError::BadMac));
        let mut flipped = d.clone();
        flipped[2] ^= 1;
        assert_eq!(a.decode(&flipped), Err(WireError::BadMac));
        let p = plain.encode(&h(1), false, &Msg::Ping).unwrap();
        assert!(a.decode(&p).is_err());
    }

    #[test]
    fn oversized_encode_refused() {
        let c = Codec::new(None);
        let big = Msg::Notify {
            gid: GroupId(1),
            latest: Latest {
                seq: 1,
                body: Some(Bytes::from(vec![0u8; MAX_DATAGRAM_LEN])),
            },
        };
        assert!(matches!(
            c.encode(&h(1), true, &big),
            Err(WireError::Oversized(_))
        ));
    }

    #[test]
    fn etag_text_round_trip() {
        let e = ETag(0x00ab_cdef_0123_4567);
        assert_eq!(e.to_string().parse::<ETag>().unwrap(), e);
    }
}
