//! Output plumbing shared by the layers of a peer: encoded datagrams to send, messages a peer
//! sends to itself (processed before control returns to the driver), and counters.

use crate::wire::{Codec, Dest, Frame, Msg, NodeHandle, Stamp, WireError, KINDS};
use std::collections::VecDeque;
use std::net::SocketAddr;

/// A SIP stream (TCP) connection, as the driver and the host both name it.
///
/// Ids are never reused. The driver numbers the connections it accepts with ids below
/// [`ConnId::HOST_BIT`]; the host numbers the connections it asks the driver to open
/// ([`Socket::SipTcpConnect`]) with that bit set, so the two never collide.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl ConnId {
    /// Set in the ids of connections the host opens; clear in those a driver accepted.
    pub const HOST_BIT: u64 = 1 << 63;

    /// Whether the host asked for this connection (rather than a driver accepting it).
    pub fn is_host_opened(self) -> bool {
        self.0 & Self::HOST_BIT != 0
    }
}

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_host_opened() {
            write!(f, "conn h{}", self.0 & !Self::HOST_BIT)
        } else {
            write!(f, "conn {}", self.0)
        }
    }
}

/// The socket a [`Transmit`] leaves on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Socket {
    /// The overlay's UDP socket (peer-to-peer datagrams).
    Overlay,
    /// The SIP front end's UDP socket (user agents).
    SipUdp,
    /// An open SIP stream connection: write the payload on it (`dst` is its remote address,
    /// for logs). If the driver no longer has it, it drops the payload: the host learns of
    /// the close from [`crate::Input::SipStreamClosed`].
    SipTcp(ConnId),
    /// Open a TCP connection to `dst`, known as this (host-allocated) id from now on, then
    /// write the payload on it. Later transmits on it name [`Socket::SipTcp`]; a connection
    /// that fails or ends is reported with [`crate::Input::SipStreamClosed`].
    SipTcpConnect(ConnId),
}

impl Socket {
    /// The stream connection this socket names, if any.
    pub fn conn(self) -> Option<ConnId> {
        match self {
            Socket::SipTcp(c) | Socket::SipTcpConnect(c) => Some(c),
            Socket::Overlay | Socket::SipUdp => None,
        }
    }
}

/// A datagram (or a piece of a stream) the driver must send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The socket to send it on.
    pub socket: Socket,
    /// Destination address.
    pub dst: SocketAddr,
    /// Encoded datagram, or the bytes to write on a stream.
    pub payload: Vec<u8>,
}

/// Messages counted by kind ([`crate::wire::Msg::kind`]): one counter per kind in an array
/// (counting is an index, not a map lookup: it runs for every datagram received). Iterates
/// like a map from kind name to count, in name order, over the kinds counted at least once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KindCounts([u64; KINDS.len()]);

impl KindCounts {
    /// Counts one message of kind `index` ([`crate::wire::Msg::kind_index`]).
    pub fn count(&mut self, index: usize) {
        self.0[index] += 1;
    }

    /// The count of kind `kind` (`None` if none was counted).
    pub fn get(&self, kind: &str) -> Option<u64> {
        let i = KINDS.binary_search(&kind).ok()?;
        (self.0[i] > 0).then_some(self.0[i])
    }

    /// `(kind, count)` of every kind counted at least once, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &u64)> + '_ {
        KINDS
            .iter()
            .zip(self.0.iter())
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| (*k, n))
    }
}

impl<'a> IntoIterator for &'a KindCounts {
    type Item = (&'static str, &'a u64);
    type IntoIter = Box<dyn Iterator<Item = (&'static str, &'a u64)> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

/// Counters of one peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handed to `handle_datagram`.
    pub rx_datagrams: u64,
    /// Dropped: empty or truncated.
    pub rx_truncated: u64,
    /// Dropped: longer than the maximum datagram length.
    pub rx_oversized: u64,
    /// Dropped: unknown wire version.
    pub rx_bad_version: u64,
    /// Dropped: authentication tag did not verify.
    pub rx_bad_mac: u64,
    /// Dropped: payload did not decode.
    pub rx_malformed: u64,
    /// Dropped: authenticated, but addressed to another peer (replayed to the wrong peer).
    pub rx_wrong_destination: u64,
    /// Dropped: authenticated, but outside the replay window (its time too far from ours, or
    /// older than what this peer remembers of its sender).
    pub rx_stale: u64,
    /// Dropped: authenticated, but received before (a replay).
    pub rx_replayed: u64,
    /// Datagrams queued for sending.
    pub tx_datagrams: u64,
    /// Bytes queued for sending.
    pub tx_bytes: u64,
    /// Messages not sent because they would exceed the maximum datagram length.
    pub tx_oversized: u64,
    /// Routed messages forwarded by this peer.
    pub forwarded: u64,
    /// Overlay messages received (decoded), by kind (`ping`, `join`, `notify`, …).
    pub rx_kinds: KindCounts,
    /// Peers the failure detector declared dead.
    pub peers_failed: u64,
    /// Groups this peer took over as root after a peer died.
    pub takeovers: u64,
    /// Groups this peer stopped being root of (a closer peer appeared).
    pub demotions: u64,
    /// Fetch rounds an active root ran again before answering (its lease lapsed, a replica
    /// fenced it, or a root of a newer epoch showed up).
    pub reconfirms: u64,
    /// Fetch replies saying the peer confirms another root's lease (ask again later).
    pub fetch_busy: u64,
    /// REPLICATEs of this peer's refused by a replica that knew a newer root epoch.
    pub fenced: u64,
    /// Peers declared dead that turned out alive (a partition healed, a paused peer resumed).
    pub revived: u64,
    /// Peers this one never knew that announced their join to it (newcomers: its root roles
    /// hand over to one that is closer, or fetch again).
    pub newcomers: u64,
    /// Times this peer found it had been paused (its maintenance tick ran late).
    pub pauses: u64,
    /// JOINs re-sent toward a group's root (orphans, and JOINs that got no answer).
    pub rejoins: u64,
}

impl Stats {
    /// Total datagrams dropped on input.
    pub fn rx_dropped(&self) -> u64 {
        self.rx_truncated
            + self.rx_oversized
            + self.rx_bad_version
            + self.rx_bad_mac
            + self.rx_malformed
            + self.rx_wrong_destination
            + self.rx_stale
            + self.rx_replayed
    }

    pub(crate) fn count_rx_error(&mut self, e: WireError) {
        match e {
            WireError::Truncated => self.rx_truncated += 1,
            WireError::Oversized(_) => self.rx_oversized += 1,
            WireError::BadVersion(_) => self.rx_bad_version += 1,
            WireError::BadMac => self.rx_bad_mac += 1,
            WireError::Malformed => self.rx_malformed += 1,
            WireError::WrongDestination => self.rx_wrong_destination += 1,
            WireError::Stale => self.rx_stale += 1,
            WireError::Replayed => self.rx_replayed += 1,
        }
    }
}

/// Queue of outputs of one peer.
#[derive(Clone, Debug)]
pub(crate) struct Outbox {
    pub me: NodeHandle,
    /// Whether this peer completed its overlay join (carried in every envelope).
    pub ready: bool,
    codec: Codec,
    /// Unix milliseconds of the input being handled: the time authenticated datagrams carry.
    pub time: u64,
    /// The next datagram's sequence number (authenticated datagrams).
    seq: u64,
    pub transmits: VecDeque<Transmit>,
    pub loopback: VecDeque<(NodeHandle, Msg)>,
    pub stats: Stats,
}

impl Outbox {
    /// An outbox; `first_seq` (from the CSPRNG) numbers the first authenticated datagram.
    pub fn new(me: NodeHandle, codec: Codec, first_seq: u64) -> Self {
        Outbox {
            me,
            ready: true,
            codec,
            time: 0,
            seq: first_seq,
            transmits: VecDeque::new(),
            loopback: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    /// Encodes `msg` once, counting a message too large to send.
    fn frame(&mut self, msg: &Msg) -> Option<Frame> {
        match self.codec.frame(&self.me, self.ready, msg) {
            Ok(f) => Some(f),
            Err(_) => {
                self.stats.tx_oversized += 1;
                None
            }
        }
    }

    /// The next stamp, for `dst`.
    fn stamp(&mut self, dst: Dest) -> Stamp {
        let stamp = Stamp {
            dst,
            time: self.time,
            seq: self.seq,
        };
        self.seq = self.seq.wrapping_add(1);
        stamp
    }

    /// Seals `frame` for `dst` with the next stamp, counting a datagram too large to send.
    fn seal(&mut self, frame: &Frame, dst: Dest) -> Option<Vec<u8>> {
        let stamp = self.stamp(dst);
        match frame.seal(&stamp) {
            Ok(b) => Some(b),
            Err(_) => {
                self.stats.tx_oversized += 1;
                None
            }
        }
    }

    /// [`Outbox::seal`] of a frame with one destination (no copy without a cluster key).
    fn seal_once(&mut self, frame: Frame, dst: Dest) -> Option<Vec<u8>> {
        let stamp = self.stamp(dst);
        match frame.seal_once(&stamp) {
            Ok(b) => Some(b),
            Err(_) => {
                self.stats.tx_oversized += 1;
                None
            }
        }
    }

    fn push(&mut self, dst: SocketAddr, payload: Vec<u8>) {
        self.stats.tx_datagrams += 1;
        self.stats.tx_bytes += payload.len() as u64;
        self.transmits.push_back(Transmit {
            socket: Socket::Overlay,
            dst,
            payload,
        });
    }

    /// Sends `msg` to `to` (to the loopback queue when `to` is this peer).
    pub fn send(&mut self, to: &NodeHandle, msg: impl Into<Msg>) {
        let msg = msg.into();
        if to.id == self.me.id {
            self.loopback.push_back((self.me, msg));
            return;
        }
        if let Some(b) = self
            .frame(&msg)
            .and_then(|f| self.seal_once(f, Dest::Peer(to.id)))
        {
            self.push(to.addr, b);
        }
    }

    /// Sends `msg` to a bare address (overlay bootstrap).
    pub fn send_addr(&mut self, to: SocketAddr, msg: impl Into<Msg>) {
        if let Some(b) = self
            .frame(&msg.into())
            .and_then(|f| self.seal_once(f, Dest::Addr(to)))
        {
            self.push(to, b);
        }
    }

    /// Sends the same message to several peers, encoding it once (and, with a cluster key,
    /// sealing it for each).
    pub fn send_many<'a>(
        &mut self,
        tos: impl IntoIterator<Item = &'a NodeHandle>,
        msg: impl Into<Msg>,
    ) {
        let msg = &msg.into();
        let mut frame: Option<Frame> = None;
        for to in tos {
            if to.id == self.me.id {
                self.loopback.push_back((self.me, msg.clone()));
                continue;
            }
            if frame.is_none() {
                frame = self.frame(msg);
            }
            let Some(f) = &frame else {
                return;
            };
            if let Some(b) = self.seal(f, Dest::Peer(to.id)) {
                self.push(to.addr, b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_counts_iterate_like_a_map() {
        assert!(
            KINDS.windows(2).all(|w| w[0] < w[1]),
            "KINDS sorted, unique"
        );
        let mut k = KindCounts::default();
        let ping = Msg::Pastry(crate::wire::PastryMsg::Ping);
        let pong = Msg::Pastry(crate::wire::PastryMsg::Pong);
        k.count(pong.kind_index());
        k.count(ping.kind_index());
        k.count(ping.kind_index());
        assert_eq!(ping.kind(), "ping");
        assert_eq!(k.get("ping"), Some(2));
        assert_eq!(k.get("join"), None);
        let v: Vec<(&str, u64)> = (&k).into_iter().map(|(n, c)| (n, *c)).collect();
        assert_eq!(v, vec![("ping", 2), ("pong", 1)]);
    }
}
