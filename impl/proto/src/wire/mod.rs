//! Overlay wire format: one envelope per datagram, its message either Pastry's
//! ([`PastryMsg`]), sa-Scribe's ([`ScribeMsg`]) or a message routed towards a key ([`Routed`]).
//!
//! Without a cluster key a datagram is `[VERSION][postcard(Envelope)]`. With one it is
//!
//! ```text
//! [VERSION][postcard(Envelope)][postcard(Stamp)][tag]
//! tag = HMAC-SHA-256(key, every byte before it), 32 bytes
//! ```
//!
//! The [`Stamp`] binds the datagram to one destination (a peer id, or an address before the id
//! is known), a sending time (Unix milliseconds) and a per-sender sequence number; the envelope
//! carries the sender's id. All of it is under the tag, so a captured datagram cannot be
//! re-addressed or re-dated, and [`ReplayGuard`] refuses it when it is replayed: to another
//! peer ([`WireError::WrongDestination`]), outside [`MAX_CLOCK_SKEW`] of the receiver's clock
//! ([`WireError::Stale`]), or to the same peer again ([`WireError::Replayed`]).
//!
//! Datagrams longer than [`MAX_DATAGRAM_LEN`], with another version, a bad tag, trailing bytes
//! or an undecodable payload are rejected with a [`WireError`]; the peer drops and counts them.

use crate::id::NodeId;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::fmt;
use std::net::SocketAddr;

mod handover;
mod pastry;
mod replay;
mod scribe;

pub use handover::{HandoverMsg, WireDialog, MAX_DIALOGS_PER_OFFER};
pub use pastry::{PastryMsg, MAX_SUSPECTS};
pub use replay::{ReplayGuard, MAX_CLOCK_SKEW, MAX_SENDERS, SEEN_PER_SENDER};
pub use scribe::{
    Beat, BeatAck, Latest, PubOutcome, PubReqId, PublishReply, ReplicaItem, Routed, ScribeMsg,
    WireRecord, WireState, MAX_BEATS, REJOIN_ID_BIT, REPLICAS_BUDGET,
};

/// Wire format version carried in the first byte of every datagram (5: the [`Stamp`] of
/// authenticated datagrams; 7: `FetchReply` and `Fenced` name the epoch they answer;
/// 8: `FetchReply::busy_for`; 9: the heartbeats of all groups a parent shares with a child in
/// one `Heartbeats` message, and the periodic refresh of many records in one `Replicates`;
/// peers of version 8 and 9 drop each other's datagrams, so an overlay is upgraded to 9 as a
/// whole, not one peer at a time). [`Msg::Handover`] came without a new version: it is a variant
/// after the others, so no earlier message's encoding changed, and a peer that predates it
/// drops it as malformed (its leaving neighbour's offer then goes unanswered, and the dialogs
/// end with `deactivated` as before), so a rolling upgrade keeps the overlay whole.
pub const VERSION: u8 = 9;
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

/// Every overlay message.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Msg {
    /// Pastry maintenance, sent straight to one peer.
    Pastry(PastryMsg),
    /// sa-Scribe, sent straight to one peer.
    Scribe(ScribeMsg),
    /// A message routed towards `key`.
    Routed {
        /// Destination key.
        key: u128,
        /// Overlay hops taken so far.
        hops: u8,
        /// Payload.
        body: Routed,
    },
    /// Dialog handover between SIP gateway peers (an orderly shutdown), sent straight to one
    /// peer.
    Handover(HandoverMsg),
}

/// The names [`Msg::kind`] gives, sorted.
pub const KINDS: [&str; 29] = [
    "ack",
    "announce",
    "departing",
    "fenced",
    "fetch_reply",
    "fetch_state",
    "handover_offer",
    "handover_taken",
    "heartbeat",
    "heartbeat_ack",
    "join",
    "join_state",
    "leafset_reply",
    "leafset_request",
    "leave",
    "lookup",
    "not_root",
    "notify",
    "overlay_join",
    "pack",
    "ping",
    "pong",
    "publish",
    "publish_reply",
    "replicate",
    "replicate_ack",
    "row_reply",
    "row_request",
    "suspects",
];

impl Msg {
    /// A short name of the message's kind, for counters (`ping`, `join`, `notify`, …).
    pub fn kind(&self) -> &'static str {
        KINDS[self.kind_index()]
    }

    /// The position of [`Msg::kind`] in [`KINDS`].
    pub fn kind_index(&self) -> usize {
        match self {
            Msg::Pastry(m) => match m {
                PastryMsg::Ping => 20,                // ping
                PastryMsg::Pong => 21,                // pong
                PastryMsg::LeafSetRequest => 13,      // leafset_request
                PastryMsg::LeafSetReply { .. } => 12, // leafset_reply
                PastryMsg::RowRequest { .. } => 27,   // row_request
                PastryMsg::RowReply { .. } => 26,     // row_reply
                PastryMsg::JoinState { .. } => 11,    // join_state
                PastryMsg::Announce => 1,             // announce
                PastryMsg::Departing => 2,            // departing
                PastryMsg::Suspects { .. } => 28,     // suspects
            },
            Msg::Scribe(m) => match m {
                ScribeMsg::Provisional { .. } => 19,   // pack
                ScribeMsg::JoinAck { .. } => 0,        // ack
                ScribeMsg::Notify { .. } => 17,        // notify
                ScribeMsg::Heartbeats { .. } => 8,     // heartbeat
                ScribeMsg::HeartbeatAcks { .. } => 9,  // heartbeat_ack
                ScribeMsg::Leave { .. } => 14,         // leave
                ScribeMsg::PublishReply { .. } => 23,  // publish_reply
                ScribeMsg::Replicate { .. } => 24,     // replicate
                ScribeMsg::NotRoot { .. } => 16,       // not_root
                ScribeMsg::ReplicateAck { .. } => 25,  // replicate_ack
                ScribeMsg::Replicates { .. } => 24,    // replicate
                ScribeMsg::ReplicateAcks { .. } => 25, // replicate_ack
                ScribeMsg::Fenced { .. } => 3,         // fenced
                ScribeMsg::FetchState { .. } => 5,     // fetch_state
                ScribeMsg::FetchReply { .. } => 4,     // fetch_reply
            },
            Msg::Handover(m) => match m {
                HandoverMsg::Offer { .. } => 6, // handover_offer
                HandoverMsg::Taken { .. } => 7, // handover_taken
            },
            Msg::Routed { body, .. } => match body {
                Routed::OverlayJoin { .. } => 18, // overlay_join
                Routed::Lookup { .. } => 15,      // lookup
                Routed::Join { .. } => 10,        // join
                Routed::Publish { .. } => 22,     // publish
            },
        }
    }
}

impl From<PastryMsg> for Msg {
    fn from(m: PastryMsg) -> Msg {
        Msg::Pastry(m)
    }
}

impl From<ScribeMsg> for Msg {
    fn from(m: ScribeMsg) -> Msg {
        Msg::Scribe(m)
    }
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
    /// The authenticated stamp (with a cluster key; `None` without). Not part of the
    /// envelope's encoding: it follows it on the wire.
    #[serde(skip)]
    pub stamp: Option<Stamp>,
}

/// Whom an authenticated datagram is for.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Dest {
    /// The peer with this id (every message to a known peer).
    Peer(NodeId),
    /// Whoever is reached at this address: only the overlay join's first message, sent to a
    /// bootstrap address before its id is known. The receiver accepts it only if the address
    /// is the one it advertises.
    Addr(SocketAddr),
}

/// What the tag of an authenticated datagram covers beside the envelope: where it goes, when
/// and in which order it was sent.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Stamp {
    /// The destination.
    pub dst: Dest,
    /// Sending time, Unix milliseconds of the sender's clock.
    pub time: u64,
    /// The sender's sequence number: it starts at a random value (from the CSPRNG) and counts
    /// every authenticated datagram the sender sends, so that `(sender, time, seq)` is unique.
    pub seq: u64,
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
    #[error("unsupported wire version {0} (this peer speaks version {VERSION}: upgrade every peer of the cluster together)")]
    BadVersion(u8),
    /// The HMAC tag does not verify under the cluster key.
    #[error("bad message authentication tag")]
    BadMac,
    /// The payload does not decode (or has trailing bytes).
    #[error("malformed payload")]
    Malformed,
    /// Authenticated, but addressed to another peer (a datagram replayed to a peer it was not
    /// sent to, or a bootstrap address that is not the receiver's advertised one).
    #[error("datagram addressed to another peer")]
    WrongDestination,
    /// Authenticated, but its time is more than [`MAX_CLOCK_SKEW`] from the receiver's clock, or
    /// older than anything the receiver still remembers of that sender.
    #[error("datagram outside the replay window")]
    Stale,
    /// Authenticated, but this peer already received it.
    #[error("datagram replayed")]
    Replayed,
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

/// A message encoded once, to be sealed for each destination ([`Frame::seal`]).
#[derive(Clone)]
pub struct Frame {
    body: Vec<u8>,
    /// The HMAC with the body already absorbed (with a cluster key).
    mac: Option<Hmac<Sha256>>,
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("len", &self.body.len())
            .field("authenticated", &self.mac.is_some())
            .finish()
    }
}

impl Frame {
    /// The datagram for one destination: without a cluster key the frame itself (`stamp` is
    /// unused), with one the frame, `stamp` and the tag over both. Fails only when the result
    /// would exceed [`MAX_DATAGRAM_LEN`].
    pub fn seal(&self, stamp: &Stamp) -> Result<Vec<u8>, WireError> {
        let Some(mac) = &self.mac else {
            return Ok(self.body.clone());
        };
        let mut buf = Vec::with_capacity(self.body.len() + 48 + TAG_LEN);
        buf.extend_from_slice(&self.body);
        let mut buf = postcard::to_extend(stamp, buf).map_err(|_| WireError::Malformed)?;
        let mut m = mac.clone();
        m.update(&buf[self.body.len()..]);
        buf.extend_from_slice(&m.finalize().into_bytes());
        if buf.len() > MAX_DATAGRAM_LEN {
            return Err(WireError::Oversized(buf.len()));
        }
        Ok(buf)
    }
}

impl Frame {
    /// [`Frame::seal`] for the frame's only destination: without a cluster key the encoded
    /// frame itself is the datagram (no copy).
    pub fn seal_once(self, stamp: &Stamp) -> Result<Vec<u8>, WireError> {
        if self.mac.is_none() {
            return Ok(self.body);
        }
        self.seal(stamp)
    }
}

impl Codec {
    /// A codec; with `Some(key)` every datagram is stamped, tagged and verified.
    pub fn new(cluster_key: Option<&[u8]>) -> Self {
        Codec {
            mac: cluster_key
                .map(|k| <Hmac<Sha256> as Mac>::new_from_slice(k).expect("HMAC takes any key")),
        }
    }

    /// Whether datagrams are authenticated (a cluster key is configured).
    pub fn is_authenticated(&self) -> bool {
        self.mac.is_some()
    }

    /// Encodes a message from `from` once, for [`Frame::seal`] to address. Fails only when it
    /// would exceed [`MAX_DATAGRAM_LEN`].
    pub fn frame(&self, from: &NodeHandle, ready: bool, msg: &Msg) -> Result<Frame, WireError> {
        let mut buf = Vec::with_capacity(64);
        buf.push(VERSION);
        let env = EnvelopeRef { from, ready, msg };
        let buf = postcard::to_extend(&env, buf).map_err(|_| WireError::Malformed)?;
        if buf.len() > MAX_DATAGRAM_LEN {
            return Err(WireError::Oversized(buf.len()));
        }
        let mac = self.mac.as_ref().map(|mac| {
            let mut m = mac.clone();
            m.update(&buf);
            m
        });
        Ok(Frame { body: buf, mac })
    }

    /// Encodes a message from `from` into a datagram stamped with `stamp` (which only an
    /// authenticated codec uses). Fails only when the result would exceed [`MAX_DATAGRAM_LEN`].
    pub fn encode(
        &self,
        from: &NodeHandle,
        ready: bool,
        msg: &Msg,
        stamp: &Stamp,
    ) -> Result<Vec<u8>, WireError> {
        self.frame(from, ready, msg)?.seal(stamp)
    }

    /// Decodes and authenticates a datagram. The [`Stamp`] of an authenticated one is in
    /// [`Envelope::stamp`]: its destination, time and freshness are the receiver's to check
    /// ([`ReplayGuard::check`]).
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
        let (mut env, rest) =
            postcard::take_from_bytes::<Envelope>(&body[1..]).map_err(|_| WireError::Malformed)?;
        let rest = if self.mac.is_some() {
            let (stamp, rest) =
                postcard::take_from_bytes::<Stamp>(rest).map_err(|_| WireError::Malformed)?;
            env.stamp = Some(stamp);
            rest
        } else {
            rest
        };
        if !rest.is_empty() {
            return Err(WireError::Malformed);
        }
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::GroupId;
    use bytes::Bytes;

    fn h(i: u128) -> NodeHandle {
        NodeHandle {
            id: NodeId(i),
            addr: SocketAddr::from(([10, 0, 0, 1], 5000)),
        }
    }

    fn st(seq: u64) -> Stamp {
        Stamp {
            dst: Dest::Peer(NodeId(2)),
            time: 1_800_000_000_000,
            seq,
        }
    }

    fn samples() -> Vec<Msg> {
        let gid = GroupId(77);
        vec![
            Msg::Pastry(PastryMsg::Ping),
            Msg::Pastry(PastryMsg::LeafSetReply {
                leaves: vec![h(1), h(u128::MAX)],
            }),
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
                        content_type: Some("text/plain".into()),
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
                    content_type: None,
                    resource: Some("sip:alice@example.com".into()),
                    if_match: Some(ETag(0xfeed)),
                    expires: Some(60),
                },
            },
            Msg::Scribe(ScribeMsg::Replicate {
                gid,
                rec: WireRecord {
                    epoch: 3,
                    seq: 2,
                    rev: 5,
                    states: vec![WireState {
                        etag: ETag(1),
                        body: Bytes::from_static(b"x"),
                        content_type: Some("application/pidf+xml".into()),
                        ttl: 1000,
                        created: 1,
                        changed: 2,
                    }],
                    resource: None,
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
                epoch: 4,
                stamp: 7,
            }),
            Msg::Scribe(ScribeMsg::Fenced {
                gid,
                epoch: 4,
                refused: 3,
                rec: None,
            }),
            Msg::Scribe(ScribeMsg::FetchState { gid, epoch: 9 }),
            Msg::Scribe(ScribeMsg::FetchReply {
                gid,
                epoch: 9,
                rec: None,
                promised: 8,
                granted: false,
                busy_for: 1_200,
            }),
            Msg::Scribe(ScribeMsg::PublishReply {
                req: PubReqId {
                    origin: NodeId(1),
                    nonce: 2,
                },
                reply: PublishReply::IntervalTooBrief { min: 60 },
            }),
        ]
    }

    #[test]
    fn round_trip_plain_and_authenticated() {
        for key in [None, Some(&b"cluster secret"[..])] {
            let c = Codec::new(key);
            for m in samples() {
                let b = c.encode(&h(42), true, &m, &st(3)).unwrap();
                let e = c.decode(&b).unwrap();
                assert_eq!(e.msg, m);
                assert_eq!(e.from, h(42));
                assert!(e.ready);
                assert_eq!(e.stamp, key.map(|_| st(3)));
            }
        }
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let c = Codec::new(None);
        let b = c.encode(&h(42), true, &samples()[2], &st(1)).unwrap();
        assert_eq!(c.decode(&[]), Err(WireError::Truncated));
        for cut in 1..b.len() {
            assert!(c.decode(&b[..cut]).is_err(), "truncated at {cut}");
        }
        let mut v = b.clone();
        v[0] = VERSION + 1;
        assert_eq!(c.decode(&v), Err(WireError::BadVersion(VERSION + 1)));
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
    fn a_full_heartbeat_batch_fits_a_datagram() {
        let beat = Beat {
            gid: crate::id::GroupId(u128::MAX),
            seq: u64::MAX,
            depth: u8::MAX,
        };
        let ack = BeatAck {
            gid: beat.gid,
            seq: beat.seq,
        };
        let c = Codec::new(Some(b"cluster secret"));
        let from = NodeHandle {
            id: NodeId(u128::MAX),
            addr: "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
                .parse()
                .unwrap(),
        };
        for m in [
            ScribeMsg::Heartbeats {
                beats: vec![beat; MAX_BEATS],
            },
            ScribeMsg::HeartbeatAcks {
                acks: vec![ack; MAX_BEATS],
                left: Vec::new(),
            },
            ScribeMsg::HeartbeatAcks {
                acks: vec![ack; MAX_BEATS / 2],
                left: vec![beat.gid; MAX_BEATS / 2],
            },
        ] {
            let m = Msg::Scribe(m);
            let b = c.encode(&from, true, &m, &st(u64::MAX)).unwrap();
            assert!(b.len() <= MAX_DATAGRAM_LEN, "{} bytes", b.len());
            assert_eq!(c.decode(&b).unwrap().msg, m);
        }
    }

    /// `Replicates` packed as the tree round packs them (items while their encoded lengths
    /// add up to at most `REPLICAS_BUDGET`) fits a datagram, with the longest envelope.
    #[test]
    fn a_full_replicates_fits_a_datagram() {
        let state = WireState {
            etag: ETag(u64::MAX),
            body: bytes::Bytes::from(vec![b'x'; 700]),
            content_type: Some("application/pidf+xml".into()),
            ttl: u64::MAX,
            created: u64::MAX,
            changed: u64::MAX,
        };
        let item = ReplicaItem {
            gid: crate::id::GroupId(u128::MAX),
            rec: WireRecord {
                epoch: u64::MAX,
                seq: u64::MAX,
                rev: u64::MAX,
                states: vec![state; 2],
                resource: Some("sip:someone@example.com".into()),
                dedup: Vec::new(),
            },
            epoch: u64::MAX,
        };
        let len = postcard::to_allocvec(&item).unwrap().len();
        let n = REPLICAS_BUDGET / len;
        assert!(n >= 2, "{len}");
        let m = Msg::Scribe(ScribeMsg::Replicates {
            stamp: u64::MAX,
            items: vec![item; n],
        });
        let from = NodeHandle {
            id: NodeId(u128::MAX),
            addr: "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
                .parse()
                .unwrap(),
        };
        let c = Codec::new(Some(b"cluster secret"));
        let b = c.encode(&from, true, &m, &st(u64::MAX)).unwrap();
        assert!(b.len() <= MAX_DATAGRAM_LEN, "{} bytes", b.len());
    }

    #[test]
    fn bad_mac_rejected() {
        let a = Codec::new(Some(b"key-a"));
        let b = Codec::new(Some(b"key-b"));
        let plain = Codec::new(None);
        let ping = Msg::Pastry(PastryMsg::Ping);
        let d = a.encode(&h(1), false, &ping, &st(1)).unwrap();
        assert_eq!(b.decode(&d), Err(WireError::BadMac));
        let mut flipped = d.clone();
        flipped[2] ^= 1;
        assert_eq!(a.decode(&flipped), Err(WireError::BadMac));
        let p = plain.encode(&h(1), false, &ping, &st(1)).unwrap();
        assert!(a.decode(&p).is_err());
    }

    #[test]
    fn stamp_is_under_the_tag() {
        let a = Codec::new(Some(b"key-a"));
        let ping = Msg::Pastry(PastryMsg::Ping);
        let frame = a.frame(&h(1), true, &ping).unwrap();
        let d = frame.seal(&st(1)).unwrap();
        assert_eq!(a.encode(&h(1), true, &ping, &st(1)).unwrap(), d);
        // One frame sealed for two destinations: two datagrams, each with its own stamp.
        let other = Stamp {
            dst: Dest::Addr(SocketAddr::from(([10, 0, 0, 9], 7000))),
            ..st(2)
        };
        let e = frame.seal(&other).unwrap();
        assert_eq!(a.decode(&e).unwrap().stamp, Some(other));
        // Changing any byte of the stamp (re-addressing, re-dating) breaks the tag.
        let stamp_at = d.len() - TAG_LEN - 1;
        for i in (stamp_at - 8)..(d.len() - TAG_LEN) {
            let mut v = d.clone();
            v[i] ^= 1;
            assert_eq!(a.decode(&v), Err(WireError::BadMac), "byte {i}");
        }
        // Without a key there is no stamp on the wire.
        let plain = Codec::new(None);
        let p = plain.encode(&h(1), true, &ping, &st(1)).unwrap();
        assert_eq!(p, plain.encode(&h(1), true, &ping, &st(99)).unwrap());
        assert_eq!(plain.decode(&p).unwrap().stamp, None);
    }

    #[test]
    fn oversized_encode_refused() {
        let c = Codec::new(None);
        let big = Msg::Scribe(ScribeMsg::Notify {
            gid: GroupId(1),
            latest: Latest {
                seq: 1,
                body: Some(Bytes::from(vec![0u8; MAX_DATAGRAM_LEN])),
                content_type: None,
            },
        });
        assert!(matches!(
            c.encode(&h(1), true, &big, &st(1)),
            Err(WireError::Oversized(_))
        ));
    }

    #[test]
    fn etag_text_round_trip() {
        let e = ETag(0x00ab_cdef_0123_4567);
        assert_eq!(e.to_string().parse::<ETag>().unwrap(), e);
    }
}
