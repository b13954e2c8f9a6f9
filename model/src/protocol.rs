//! The actors of the model: overlay peers running sa-Scribe, and the SIP user agents (subscribers
//! and publishers) attached to a first-contact peer.
//!
//! The peer's handlers follow §III.D–F of the paper; where the paper is silent the design choice
//! is stated on the handler (see also the crate documentation).

use crate::mutant::Mutant;
use crate::setup::Setup;
use crate::topology::{PeerIx, PeerSet};
use serde::Serialize;
use stateright::actor::{model_timeout, Actor, Id, Out};
use std::borrow::Cow;
use std::sync::Arc;

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

/// The longest publication lifetime a root grants (abstract units); longer requests are clamped.
pub const MAX_EXPIRES: u8 = 2;

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

/// Identifies a request end to end, so that a retransmission is recognised (dedup) and so the
/// checker can tell whether a request is still in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ReqId {
    /// The first-contact peer that issued the overlay request.
    pub origin: PeerIx,
    /// The actor the request is for: a client, or the origin peer itself for a re-JOIN.
    pub who: u8,
    /// The requester's counter.
    pub n: u8,
}

/// The reverse path of a JOIN: the peers it traversed, oldest first (at most 7 hops).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Hops {
    len: u8,
    at: [PeerIx; 7],
}

impl Hops {
    /// A path holding only `p`.
    pub fn from(p: PeerIx) -> Self {
        let mut at = [0; 7];
        at[0] = p;
        Hops { len: 1, at }
    }
    /// Appends a hop; `None` when the path is full (a routing loop, dropped).
    pub fn push(mut self, p: PeerIx) -> Option<Self> {
        if (self.len as usize) == self.at.len() {
            return None;
        }
        self.at[self.len as usize] = p;
        self.len += 1;
        Some(self)
    }
    /// Removes the last hop.
    pub fn pop(mut self) -> Self {
        self.len = self.len.saturating_sub(1);
        self
    }
    /// The last hop, if any.
    pub fn last(&self) -> Option<PeerIx> {
        (self.len > 0).then(|| self.at[self.len as usize - 1])
    }
    /// The hops, oldest first.
    pub fn as_slice(&self) -> &[PeerIx] {
        &self.at[..self.len as usize]
    }
}

/// The root's answer to a publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum PubResult {
    /// 200 OK with the new entity tag and the expiry the root chose.
    Ok {
        /// New entity tag.
        etag: ETag,
        /// Expiry granted by the root.
        expires: u8,
    },
    /// 412 Conditional Request Failed: the SIP-If-Match tag is not the current one.
    PreconditionFailed,
    /// The first-contact peer gave up after its retransmissions (408 Request Timeout).
    Timeout,
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

impl RootState {
    fn applied_result(&self, req: ReqId) -> Option<PubResult> {
        self.applied
            .iter()
            .find(|(w, n, _)| *w == req.who && *n == req.n)
            .map(|(_, _, r)| *r)
    }
    fn record(&mut self, req: ReqId, result: PubResult) {
        match self.applied.iter_mut().find(|(w, _, _)| *w == req.who) {
            Some(slot) => *slot = (req.who, req.n, result),
            None => {
                self.applied.push((req.who, req.n, result));
                self.applied.sort_unstable();
            }
        }
    }
}

/// Model bookkeeping sent to the observer sink (never delivered; folded into the history).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Obs {
    /// A root committed `entry` (multicast it and may acknowledge it).
    Commit {
        /// The committed entry.
        entry: Entry,
        /// The SIP-If-Match the publication carried, if it was conditional.
        if_match: Option<ETag>,
    },
    /// A root removed its expired publication (counts against the expiry budget).
    Expired,
    /// A peer took over as root after the root failed (`with_replica`: it held a replica).
    Takeover {
        /// Whether the new root held replicated state.
        with_replica: bool,
    },
    /// A root received a re-JOIN that carried state.
    RejoinWithState,
    /// A first-contact peer ended the subscription of user agent `ua` at its request.
    Unsubscribed(u8),
}

/// Every message of the model.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Msg {
    /// UA → first-contact peer: SIP SUBSCRIBE.
    Subscribe,
    /// UA → first-contact peer: SIP SUBSCRIBE with `Expires: 0` (ends its subscription).
    Unsubscribe,
    /// UA → first-contact peer: SIP PUBLISH (`n`: the UA's request counter).
    Publish {
        /// Request counter.
        n: u8,
        /// Body.
        value: Value,
        /// SIP-If-Match.
        if_match: Option<ETag>,
        /// Requested expiry.
        expires: u8,
        /// This is the UA's last scripted publish.
        last: bool,
    },
    /// First-contact peer → subscribing UA (`ua`: its actor index). These go to the observer
    /// sink: a subscriber's reaction does not affect the protocol, so delivering them would only
    /// multiply interleavings; the history records what each subscriber was sent.
    ToSubscriber {
        /// The subscriber's actor index.
        ua: u8,
        /// What it is sent.
        ev: UaEvent,
    },
    /// First-contact peer → publishing UA: the final response to its PUBLISH `n` (200 OK with
    /// ETag and expiry, or 412). The answer to a UA's last scripted publish goes to the
    /// observer sink instead (`to_sink`), as nothing depends on the UA receiving it.
    PubResponse {
        /// The publisher's actor index.
        ua: u8,
        /// Request counter.
        n: u8,
        /// The result.
        result: PubResult,
    },
    /// sa-Scribe JOIN, routed toward the group id; each hop grafts its predecessor.
    Join {
        /// End-to-end request id.
        req: ReqId,
        /// Reverse path.
        path: Hops,
        /// Latest state known to the joiner (re-JOIN reconciliation).
        carried: Option<Entry>,
    },
    /// Provisional acknowledgement from a hop that grafted the sender.
    PAck,
    /// ACK (with state) or nACK (no state: `None`, or an expired entry whose seq the members
    /// learn) from the root, back along the reverse path.
    JoinReply {
        /// End-to-end request id.
        req: ReqId,
        /// Remaining reverse path.
        path: Hops,
        /// The root's committed state; `None` is a nACK.
        state: Option<Entry>,
    },
    /// Multicast of a committed entry down the tree.
    Multicast(Entry),
    /// A publish routed toward the root.
    PubFwd {
        /// End-to-end request id.
        req: ReqId,
        /// Body.
        value: Value,
        /// SIP-If-Match.
        if_match: Option<ETag>,
        /// Requested expiry.
        expires: u8,
    },
    /// The root's result, sent straight to the origin peer.
    PubReply {
        /// End-to-end request id.
        req: ReqId,
        /// Result.
        result: PubResult,
    },
    /// Root → replica: the root state.
    Replicate(RootStateMsg),
    /// Replica → root: the seq it received (the root keeps the highest per replica).
    ReplicaAck(Seq),
    /// Observation for the checker's history (sent to the sink id).
    Observe(Obs),
}

/// What a first-contact peer sends a subscribing UA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum UaEvent {
    /// 200 OK to SUBSCRIBE (the root's ACK).
    Accepted,
    /// Final error to SUBSCRIBE (the root's nACK: no state), with the seq of the root's
    /// expired state it was based on (0: nothing was ever published). Only the checker uses
    /// the seq; the SIP response carries none.
    Rejected(Seq),
    /// SIP NOTIFY with the group state.
    Notify(Entry),
    /// The first-contact peer gave up after its retransmissions (408 Request Timeout).
    TimedOut,
}

/// A [`RootState`] inside a message (boxed in an `Arc` to keep messages cheap to clone).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct RootStateMsg(pub Arc<RootState>);

/// Timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Timer {
    /// A subscriber decides to subscribe (fires at an arbitrary point).
    Start,
    /// A subscriber that leaves decides to unsubscribe (at an arbitrary point after it
    /// subscribed).
    Stop,
    /// Failure detector: the peer notices that `PeerIx` has crashed (missing heartbeats and
    /// keep-alives). Enabled only once that peer has crashed: a perfect failure detector.
    Detect(PeerIx),
    /// Retransmission timeout for a request; enabled only once the request is lost.
    Retry(ReqId),
    /// The root's replication retry (production: its periodic tick) resends its state to the
    /// replicas that have not acknowledged it. Armed at every peer; enabled only at a root with
    /// such a replica that has nothing from it in flight and would now accept it.
    Resend,
    /// The root's publication expires (its granted lifetime passed without a refresh). Armed at
    /// every peer; enabled only at a live root holding a published state and no pending commit,
    /// within the expiry budget.
    Expire,
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

/// Every peer (a [`PeerSet`] mask).
const ALL: PeerSet = PeerSet::MAX;

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
pub enum NodeState {
    /// A peer.
    Peer(PeerState),
    /// A subscribing UA.
    Subscriber(SubscriberState),
    /// A publishing UA.
    Publisher(PublisherState),
}

impl NodeState {
    /// The peer state, if a peer.
    pub fn peer(&self) -> Option<&PeerState> {
        match self {
            NodeState::Peer(p) => Some(p),
            _ => None,
        }
    }
}

/// The model's actors.
#[derive(Clone, Debug)]
pub enum Node {
    /// An overlay peer.
    Peer(Arc<Setup>),
    /// A subscribing UA attached to a peer.
    Subscriber {
        /// First-contact peer.
        peer: PeerIx,
        /// It unsubscribes at some point after subscribing.
        leaves: bool,
    },
    /// A publishing UA attached to a peer, with its script.
    Publisher {
        /// First-contact peer.
        peer: PeerIx,
        /// Publishes it sends, one after the other.
        script: Arc<Vec<PubOp>>,
    },
}

type O = Out<Node>;

fn peer_id(p: PeerIx) -> Id {
    Id::from(p as usize)
}

fn to_ix(id: Id) -> u8 {
    usize::from(id) as u8
}

/// The peer's handlers, with the shared setup at hand.
struct Ctx<'a> {
    s: &'a Setup,
    me: PeerIx,
}

impl Ctx<'_> {
    fn mutant(&self, m: Mutant) -> bool {
        self.s.mutant == Some(m)
    }

    fn route(&self, st: &PeerState) -> PeerIx {
        self.s.topo.next_hop(self.me, self.s.gid, st.dead)
    }

    fn observe(&self, o: &mut O, obs: Obs) {
        o.send(self.s.sink(), Msg::Observe(obs));
    }

    fn to_ua(&self, o: &mut O, ua: u8, ev: UaEvent) {
        o.send(self.s.sink(), Msg::ToSubscriber { ua, ev });
    }

    fn replicas_of(&self, st: &PeerState) -> Vec<Replica> {
        self.replica_set(st)
            .into_iter()
            .map(|(peer, _)| Replica { peer, acked: 0 })
            .collect()
    }

    fn replica_set(&self, st: &PeerState) -> Vec<(PeerIx, Seq)> {
        if self.mutant(Mutant::NoReplication) {
            return Vec::new();
        }
        let set = self.s.topo.replicas(self.me, self.s.gid, self.s.k, st.dead);
        (0..8)
            .filter(|q| set & (1 << q) != 0)
            .map(|q| (q, 0))
            .collect()
    }

    /// Learns a (possibly) newer entry: store it, notify active local subscribers whose last
    /// NOTIFY is older, and pass it on to the children.
    /// `except`: a child not to pass it to (the next hop of an ACK carrying it).
    fn learn(&self, st: &mut PeerState, e: Entry, except: Option<PeerIx>, o: &mut O) {
        let newer = st.latest.is_none_or(|l| e.seq > l.seq);
        if !newer && !self.mutant(Mutant::NoStaleFilter) {
            return;
        }
        if newer {
            st.latest = Some(e);
        }
        for sub in st.subs.iter_mut() {
            match sub.phase {
                SubPhase::Active(last) if e.seq > last || self.mutant(Mutant::NoStaleFilter) => {
                    sub.phase = SubPhase::Active(e.seq.max(last));
                    self.to_ua(o, sub.client, UaEvent::Notify(e));
                }
                SubPhase::Pending(_) if self.mutant(Mutant::NotifyBeforeAck) => {
                    self.to_ua(o, sub.client, UaEvent::Notify(e));
                }
                _ => {}
            }
        }
        if newer && !(st.root.is_some() && self.mutant(Mutant::NoMulticast)) {
            for c in (0..8).filter(|&c| st.children & (1 << c) != 0 && Some(c) != except) {
                o.send(peer_id(c), Msg::Multicast(e));
            }
        }
    }

    /// Sends a JOIN for `req` toward the root (or answers it here if this peer is the root).
    fn send_join(&self, st: &mut PeerState, req: ReqId, o: &mut O) {
        if st.root.is_some() {
            let state = st.root.as_ref().and_then(|r| r.committed);
            self.join_answered(st, req, state, o);
            return;
        }
        let hop = match st.parent {
            Some(p) if st.dead & (1 << p) == 0 => p,
            _ => self.route(st),
        };
        st.parent = Some(hop);
        o.send(
            peer_id(hop),
            Msg::Join {
                req,
                path: Hops::from(self.me),
                carried: st.latest,
            },
        );
    }

    /// The origin of a JOIN gets the root's answer.
    fn join_answered(&self, st: &mut PeerState, req: ReqId, state: Option<Entry>, o: &mut O) {
        if req.who == self.me {
            if st.rejoin == Some(req) {
                st.rejoin = None;
                st.tries.retain(|t| t.0 != req);
                o.cancel_timer(Timer::Retry(req));
                if let Some(e) = state {
                    self.learn(st, e, None, o);
                }
            }
            return;
        }
        let Some(i) = st
            .subs
            .iter()
            .position(|s| s.client == req.who && s.phase == SubPhase::Pending(req.n))
        else {
            return;
        };
        st.tries.retain(|t| t.0 != req);
        o.cancel_timer(Timer::Retry(req));
        match (state, st.latest) {
            (Some(e), _) if e.value != NO_STATE => {
                self.learn(st, e, None, o);
                let latest = st.latest.unwrap_or(e);
                self.to_ua(o, req.who, UaEvent::Accepted);
                self.to_ua(o, req.who, UaEvent::Notify(latest));
                st.subs[i].phase = SubPhase::Active(latest.seq);
            }
            _ => {
                // A nACK after an expiry carries the expiry's seq: learn it, so that what is
                // below this peer is told the publication is gone.
                if let Some(e) = state {
                    self.learn(st, e, None, o);
                }
                let seq = state.map_or(0, |e| e.seq);
                self.to_ua(o, req.who, UaEvent::Rejected(seq));
                st.subs.remove(i);
            }
        }
    }

    fn on_join(
        &self,
        st: &mut PeerState,
        from: PeerIx,
        req: ReqId,
        path: Hops,
        carried: Option<Entry>,
        o: &mut O,
    ) {
        if from != self.me {
            st.children |= 1 << from;
        }
        if st.root.is_some() {
            self.root_join(st, req, path, carried, o);
            return;
        }
        if self.mutant(Mutant::AnswerFromIntermediate) && st.latest.is_some() {
            // seeded bug: an on-tree peer answers from its own, possibly stale, state
            o.send(
                peer_id(from),
                Msg::JoinReply {
                    req,
                    path,
                    state: st.latest,
                },
            );
            return;
        }
        o.send(peer_id(from), Msg::PAck);
        let hop = match st.parent {
            Some(p) if st.dead & (1 << p) == 0 => p,
            _ => self.route(st),
        };
        st.parent = Some(hop);
        if let Some(path) = path.push(self.me) {
            let carried = newer(carried, st.latest);
            o.send(peer_id(hop), Msg::Join { req, path, carried });
        }
    }

    fn root_join(
        &self,
        st: &mut PeerState,
        req: ReqId,
        path: Hops,
        carried: Option<Entry>,
        o: &mut O,
    ) {
        let is_rejoin = (req.who as usize) < self.s.topo.len();
        if let Some(c) = carried {
            if is_rejoin {
                self.observe(o, Obs::RejoinWithState);
            }
            let root = st.root.as_mut().expect("root");
            let adopt = match root.st.entry {
                None => true,
                Some(e) => c.seq > e.seq || (self.mutant(Mutant::RootAcceptsLowerSeq) && c != e),
            };
            if adopt {
                // The tree knew a newer state than the root (it survived in a subtree): keep
                // the highest seq, replicate it and pass it down.
                root.st.entry = Some(c);
                root.committed = Some(c);
                push_replication(root, ALL, o);
                self.commit_adopted(st, c, o);
            }
        }
        // An expired state answers a nACK that carries the expiry's seq (so that re-JOINing
        // members learn that the publication is gone).
        let mut state = st.root.as_ref().and_then(|r| r.committed);
        if state.is_some_and(|e| e.value == NO_STATE) && self.mutant(Mutant::NackForgetsExpiry) {
            state = None;
        }
        if state.is_none_or(|e| e.value == NO_STATE) && self.mutant(Mutant::NoNack) {
            return;
        }
        match path.last() {
            Some(last) => o.send(peer_id(last), Msg::JoinReply { req, path, state }),
            None => self.join_answered(st, req, state, o),
        }
    }

    fn on_publish_at_root(&self, st: &mut PeerState, p: PendingPub, o: &mut O) {
        let root = st.root.as_mut().expect("root");
        if !root.waiting.is_empty() {
            // One publication at a time: hold this one until the pending commit completes (a
            // retransmission of the pending one is dropped: its answer follows the commit).
            if !root.waiting.iter().any(|w| w.0 == Some(p.req))
                && !root.queued.iter().any(|q| q.req == p.req)
            {
                root.queued.push(p);
            }
            return;
        }
        if let Some(result) = root.st.applied_result(p.req) {
            // A retransmission of an applied publish: answer it again, apply nothing.
            self.reply(st, p.req, result, o);
            return;
        }
        // An expired publication has no ETag any more: every SIP-If-Match fails.
        let current = root.st.entry.filter(|e| e.value != NO_STATE).map(|e| e.seq);
        if p.if_match.is_some() && p.if_match != current && !self.mutant(Mutant::EtagIgnored) {
            self.reply(st, p.req, PubResult::PreconditionFailed, o);
            return;
        }
        let seq = match root.st.entry {
            Some(e) if self.mutant(Mutant::SeqNotBumped) => e.seq,
            Some(e) => e.seq + 1,
            None => 1,
        };
        let entry = Entry {
            seq,
            value: p.value,
        };
        let expires = p.expires.min(MAX_EXPIRES);
        let result = PubResult::Ok { etag: seq, expires };
        root.st.entry = Some(entry);
        root.st.expires = expires;
        root.st.record(p.req, result);
        root.waiting.push((Some(p.req), entry, result, p.if_match));
        push_replication(root, ALL, o);
        self.try_commit(st, o);
    }

    /// Commits every waiting publication that all replicas hold: multicast it, answer it.
    fn try_commit(&self, st: &mut PeerState, o: &mut O) {
        loop {
            let root = st.root.as_mut().expect("root");
            let held = root.acks.iter().map(|a| a.acked).min().unwrap_or(Seq::MAX);
            match root.waiting.first() {
                Some(w) if w.1.seq <= held => {
                    let (req, entry, result, if_match) = root.waiting.remove(0);
                    root.committed = Some(entry);
                    self.observe(o, Obs::Commit { entry, if_match });
                    self.learn(st, entry, None, o);
                    if let Some(req) = req {
                        self.reply(st, req, result, o);
                    }
                }
                Some(_) => return,
                None => {
                    let root = st.root.as_mut().expect("root");
                    if root.queued.is_empty() {
                        return;
                    }
                    // Serve held publishes in order until one starts a commit (a 412 or a
                    // retransmission's stored answer starts none).
                    let next = root.queued.remove(0);
                    self.on_publish_at_root(st, next, o);
                }
            }
        }
    }

    fn reply(&self, st: &mut PeerState, req: ReqId, result: PubResult, o: &mut O) {
        if req.origin == self.me {
            self.pub_answered(st, req, result, o);
        } else {
            o.send(peer_id(req.origin), Msg::PubReply { req, result });
        }
    }

    fn pub_answered(&self, st: &mut PeerState, req: ReqId, result: PubResult, o: &mut O) {
        let Some(i) = st.pubs.iter().position(|p| p.req == req) else {
            return;
        };
        let p = st.pubs.remove(i);
        st.tries.retain(|t| t.0 != req);
        o.cancel_timer(Timer::Retry(req));
        let to = if p.last {
            self.s.sink()
        } else {
            Id::from(req.who as usize)
        };
        o.send(
            to,
            Msg::PubResponse {
                ua: req.who,
                n: req.n,
                result,
            },
        );
    }

    fn forward_publish(&self, st: &mut PeerState, p: PendingPub, o: &mut O) {
        if st.root.is_some() {
            self.on_publish_at_root(st, p, o);
        } else {
            let hop = self.route(st);
            o.send(
                peer_id(hop),
                Msg::PubFwd {
                    req: p.req,
                    value: p.value,
                    if_match: p.if_match,
                    expires: p.expires,
                },
            );
        }
    }

    /// The failure detector reports `x` crashed.
    fn on_detect(&self, st: &mut PeerState, x: PeerIx, o: &mut O) {
        st.dead |= 1 << x;
        st.children &= !(1 << x);
        if st.root.is_none() && self.route(st) == self.me {
            self.take_over(st, o);
        } else if st.parent == Some(x) {
            st.parent = None;
            let req = ReqId {
                origin: self.me,
                who: self.me,
                n: st.next_n,
            };
            st.next_n += 1;
            st.rejoin = Some(req);
            o.set_timer(Timer::Retry(req), model_timeout());
            if self.mutant(Mutant::RejoinViaChild) && st.children != 0 {
                st.parent = Some(st.children.trailing_zeros() as PeerIx);
            }
            self.send_join(st, req, o);
        }
        let want = self.replica_set(st);
        if let Some(root) = st.root.as_mut() {
            if root.acks.iter().any(|a| a.peer == x) {
                root.acks.retain(|a| a.peer != x);
                let mut fresh: PeerSet = 0;
                for (q, _) in want {
                    if !root.acks.iter().any(|a| a.peer == q) {
                        root.acks.push(Replica { peer: q, acked: 0 });
                        fresh |= 1 << q;
                    }
                }
                root.acks.sort_unstable();
                push_replication(root, fresh, o);
                self.try_commit(st, o);
            }
        }
    }

    /// This peer is now the closest live peer to the group id: it becomes the root with the
    /// replicated state (or whatever it knows as a tree member), treats it as committed,
    /// re-replicates it and passes it down the tree.
    fn take_over(&self, st: &mut PeerState, o: &mut O) {
        let with_replica = st.replica.is_some();
        let mut rs = st.replica.take().unwrap_or_default();
        rs.entry = newer(rs.entry, st.latest);
        let committed = rs.entry;
        let mut root = Root {
            st: rs,
            committed,
            waiting: Vec::new(),
            acks: self.replicas_of(st),
            queued: Vec::new(),
        };
        push_replication(&mut root, ALL, o);
        st.root = Some(root);
        st.parent = None;
        if let Some(req) = st.rejoin.take() {
            o.cancel_timer(Timer::Retry(req));
        }
        self.observe(o, Obs::Takeover { with_replica });
        if let Some(e) = committed {
            self.commit_adopted(st, e, o);
        }
    }

    /// A replicate from a failed root reached its successor after the takeover. If it carries a
    /// newer state (applied by the old root, not yet committed), the new root keeps the highest
    /// seq: it adopts the state, with the old root's per-publisher results, and commits it.
    fn late_replicate(&self, st: &mut PeerState, rs: &RootState, o: &mut O) {
        let root = st.root.as_mut().expect("root");
        let theirs = rs.entry.map_or(0, |e| e.seq);
        if theirs <= root.st.entry.map_or(0, |e| e.seq) {
            return;
        }
        root.st = rs.clone();
        let entry = rs.entry.expect("newer entry");
        root.committed = Some(entry);
        push_replication(root, ALL, o);
        self.commit_adopted(st, entry, o);
    }

    /// A root takes an entry it did not stamp itself (from a replica, the tree or a failed
    /// root's late replicate) as committed: record it and pass it down the tree.
    fn commit_adopted(&self, st: &mut PeerState, entry: Entry, o: &mut O) {
        self.observe(
            o,
            Obs::Commit {
                entry,
                if_match: None,
            },
        );
        st.latest = None;
        self.learn(st, entry, None, o);
    }

    /// The root's publication expires: the root stamps the next seq with no state and commits
    /// it like a publication (replicated first, then multicast), so that subscribers are told
    /// and every later root knows the state is gone. Production does the same on its periodic
    /// tick once the granted expiry has passed and no commit is pending.
    fn on_expire(&self, st: &mut PeerState, o: &mut O) {
        o.set_timer(Timer::Expire, model_timeout());
        let Some(root) = st.root.as_mut() else {
            return;
        };
        let Some(e) = root.committed.filter(|e| e.value != NO_STATE) else {
            return;
        };
        if !root.waiting.is_empty() || root.st.entry != Some(e) {
            return;
        }
        self.observe(o, Obs::Expired);
        let entry = Entry {
            seq: e.seq + 1,
            value: NO_STATE,
        };
        root.st.entry = Some(entry);
        root.st.expires = 0;
        let result = PubResult::Ok {
            etag: entry.seq,
            expires: 0,
        };
        root.waiting.push((None, entry, result, None));
        push_replication(root, ALL, o);
        self.try_commit(st, o);
    }

    /// A retransmission timeout: resend the request, or give up after the retry budget (a
    /// request can be lost at most once per crash and per network loss, so the correct protocol
    /// never exhausts it; the bound keeps every behaviour finite).
    fn on_retry(&self, st: &mut PeerState, req: ReqId, o: &mut O) {
        if self.mutant(Mutant::NoRetry) {
            return;
        }
        let tries = match st.tries.iter_mut().find(|t| t.0 == req) {
            Some(t) => {
                t.1 += 1;
                t.1
            }
            None => {
                st.tries.push((req, 1));
                st.tries.sort_unstable();
                1
            }
        };
        let give_up = tries as usize > self.s.retry_limit();
        if give_up {
            st.tries.retain(|t| t.0 != req);
        } else {
            o.set_timer(Timer::Retry(req), model_timeout());
        }
        if req.who == self.me {
            if st.rejoin == Some(req) {
                if give_up {
                    st.rejoin = None;
                } else {
                    self.send_join(st, req, o);
                }
            }
        } else if let Some(p) = st.pubs.iter().find(|p| p.req == req).copied() {
            if give_up {
                self.pub_answered(st, req, PubResult::Timeout, o);
            } else {
                self.forward_publish(st, p, o);
            }
        } else if let Some(i) = st
            .subs
            .iter()
            .position(|s| s.client == req.who && s.phase == SubPhase::Pending(req.n))
        {
            if give_up {
                st.subs.remove(i);
                self.to_ua(o, req.who, UaEvent::TimedOut);
            } else {
                self.send_join(st, req, o);
            }
        }
    }

    fn on_msg(&self, st: &mut PeerState, src: Id, msg: Msg, o: &mut O) {
        let from = to_ix(src);
        match msg {
            Msg::Subscribe => {
                if st.subs.iter().any(|s| s.client == from) {
                    return;
                }
                let req = ReqId {
                    origin: self.me,
                    who: from,
                    n: st.next_n,
                };
                st.next_n += 1;
                st.subs.push(LocalSub {
                    client: from,
                    phase: SubPhase::Pending(req.n),
                });
                o.set_timer(Timer::Retry(req), model_timeout());
                self.send_join(st, req, o);
            }
            Msg::Unsubscribe => {
                // The subscription ends here; a pending one is abandoned (the root's later answer
                // finds no subscription). A peer that no longer needs the group (no local
                // subscription, no child, not the root) leaves the tree: it forgets its parent
                // and stops re-JOINing. (Production also sends the parent a LEAVE, which only
                // prunes after heartbeats the model abstracts away; the parent keeps it here.)
                self.observe(o, Obs::Unsubscribed(from));
                if self.mutant(Mutant::UnsubscribeIgnored) {
                    return;
                }
                if let Some(i) = st.subs.iter().position(|s| s.client == from) {
                    if let SubPhase::Pending(n) = st.subs[i].phase {
                        let req = ReqId {
                            origin: self.me,
                            who: from,
                            n,
                        };
                        st.tries.retain(|t| t.0 != req);
                        o.cancel_timer(Timer::Retry(req));
                    }
                    st.subs.remove(i);
                }
                if st.subs.is_empty() && st.children == 0 && st.root.is_none() {
                    st.parent = None;
                    if let Some(req) = st.rejoin.take() {
                        st.tries.retain(|t| t.0 != req);
                        o.cancel_timer(Timer::Retry(req));
                    }
                }
            }
            Msg::Publish {
                n,
                value,
                if_match,
                expires,
                last,
            } => {
                let req = ReqId {
                    origin: self.me,
                    who: from,
                    n,
                };
                if st.pubs.iter().any(|p| p.req == req) {
                    return;
                }
                let p = PendingPub {
                    req,
                    value,
                    if_match,
                    expires,
                    last,
                };
                st.pubs.push(p);
                o.set_timer(Timer::Retry(req), model_timeout());
                self.forward_publish(st, p, o);
            }
            Msg::Join { req, path, carried } => self.on_join(st, from, req, path, carried, o),
            Msg::PAck => st.packs = st.packs.saturating_add(1),
            Msg::JoinReply { req, path, state } => {
                let path = path.pop();
                match path.last() {
                    Some(prev) => {
                        // A hop forwarding the root's answer learns the state it carries
                        // (an expired one too: a nACK carries the expiry's seq).
                        if let Some(e) = state {
                            self.learn(st, e, Some(prev), o);
                        }
                        o.send(peer_id(prev), Msg::JoinReply { req, path, state });
                    }
                    None => self.join_answered(st, req, state, o),
                }
            }
            Msg::Multicast(e) => self.learn(st, e, None, o),
            Msg::PubFwd {
                req,
                value,
                if_match,
                expires,
            } => self.forward_publish(
                st,
                PendingPub {
                    req,
                    value,
                    if_match,
                    expires,
                    last: false,
                },
                o,
            ),
            Msg::PubReply { req, result } => self.pub_answered(st, req, result, o),
            Msg::Replicate(RootStateMsg(rs)) => {
                if st.root.is_some() {
                    self.late_replicate(st, &rs, o);
                    o.send(src, Msg::ReplicaAck(0));
                    return;
                }
                let seq = rs.entry.map_or(0, |e| e.seq);
                let held = st
                    .replica
                    .as_ref()
                    .and_then(|r| r.entry)
                    .map_or(0, |e| e.seq);
                if st.replica.is_none() || seq >= held {
                    st.replica = Some((*rs).clone());
                }
                // Only the closest peer may commit: a replica that knows a live peer closer to
                // the group than the sender keeps the state but does not acknowledge (production
                // answers NotRoot, which a root that still routes the group to itself ignores).
                if self.s.topo.refuses(self.me, from, self.s.gid, st.dead) {
                    return;
                }
                o.send(src, Msg::ReplicaAck(seq));
            }
            Msg::ReplicaAck(seq) => {
                if let Some(root) = st.root.as_mut() {
                    if let Some(a) = root.acks.iter_mut().find(|a| a.peer == from) {
                        a.acked = a.acked.max(seq);
                        self.try_commit(st, o);
                    }
                }
            }
            Msg::ToSubscriber { .. } | Msg::PubResponse { .. } | Msg::Observe(_) => {}
        }
    }
}

impl Actor for Node {
    type Msg = Msg;
    type Timer = Timer;
    type State = NodeState;
    type Storage = ();
    type Random = ();

    fn on_start(&self, id: Id, _storage: &Option<()>, o: &mut O) -> NodeState {
        match self {
            Node::Peer(s) => {
                let me = to_ix(id);
                let ctx = Ctx { s, me };
                let mut st = PeerState {
                    dead: 0,
                    parent: None,
                    children: 0,
                    latest: None,
                    root: None,
                    replica: None,
                    subs: Vec::new(),
                    pubs: Vec::new(),
                    rejoin: None,
                    next_n: 0,
                    packs: 0,
                    tries: Vec::new(),
                };
                for q in (0..s.topo.len() as PeerIx).filter(|&q| q != me) {
                    o.set_timer(Timer::Detect(q), model_timeout());
                }
                if s.expiries > 0 {
                    o.set_timer(Timer::Expire, model_timeout());
                }
                o.set_timer(Timer::Resend, model_timeout());
                if ctx.route(&st) == me {
                    st.root = Some(Root {
                        st: RootState::default(),
                        committed: None,
                        waiting: Vec::new(),
                        acks: ctx.replicas_of(&st),
                        queued: Vec::new(),
                    });
                }
                NodeState::Peer(st)
            }
            Node::Subscriber { .. } => {
                o.set_timer(Timer::Start, model_timeout());
                NodeState::Subscriber(SubscriberState {
                    started: false,
                    stopped: false,
                })
            }
            Node::Publisher { peer, script } => {
                let st = PublisherState {
                    next: 0,
                    etag: None,
                    rejected: 0,
                };
                send_step(*peer, script, &st, o);
                NodeState::Publisher(st)
            }
        }
    }

    fn on_msg(&self, id: Id, state: &mut Cow<NodeState>, src: Id, msg: Msg, o: &mut O) {
        match self {
            Node::Peer(s) => {
                let ctx = Ctx { s, me: to_ix(id) };
                let mut st = match &**state {
                    NodeState::Peer(p) => p.clone(),
                    _ => return,
                };
                ctx.on_msg(&mut st, src, msg, o);
                if state.peer() != Some(&st) {
                    *state.to_mut() = NodeState::Peer(st);
                }
            }
            Node::Subscriber { .. } => {}
            Node::Publisher { peer, script } => {
                let NodeState::Publisher(st) = &**state else {
                    return;
                };
                let mut st = st.clone();
                match msg {
                    Msg::PubResponse { n, result, .. } if n == st.next => match result {
                        PubResult::Ok { etag, .. } => st.etag = Some(etag),
                        PubResult::PreconditionFailed | PubResult::Timeout => st.rejected |= 1 << n,
                    },
                    _ => return,
                }
                st.next += 1;
                send_step(*peer, script, &st, o);
                *state.to_mut() = NodeState::Publisher(st);
            }
        }
    }

    fn on_timeout(&self, id: Id, state: &mut Cow<NodeState>, timer: &Timer, o: &mut O) {
        match (self, &**state) {
            (Node::Peer(s), NodeState::Peer(p)) => {
                let ctx = Ctx { s, me: to_ix(id) };
                let mut st = p.clone();
                match *timer {
                    Timer::Detect(x) => ctx.on_detect(&mut st, x, o),
                    Timer::Retry(req) => ctx.on_retry(&mut st, req, o),
                    Timer::Expire => ctx.on_expire(&mut st, o),
                    Timer::Resend => {
                        o.set_timer(Timer::Resend, model_timeout());
                        // Production's tick resends to every replica behind the root.
                        if let Some(root) = st.root.as_mut() {
                            push_replication(root, ALL, o);
                        }
                    }
                    Timer::Start | Timer::Stop => {}
                }
                if state.peer() != Some(&st) {
                    *state.to_mut() = NodeState::Peer(st);
                }
            }
            (Node::Subscriber { peer, leaves }, NodeState::Subscriber(st)) if !st.started => {
                let mut st = st.clone();
                st.started = true;
                o.send(peer_id(*peer), Msg::Subscribe);
                if *leaves {
                    o.set_timer(Timer::Stop, model_timeout());
                }
                *state.to_mut() = NodeState::Subscriber(st);
            }
            (Node::Subscriber { peer, .. }, NodeState::Subscriber(st))
                if *timer == Timer::Stop && !st.stopped =>
            {
                let mut st = st.clone();
                st.stopped = true;
                o.send(peer_id(*peer), Msg::Unsubscribe);
                *state.to_mut() = NodeState::Subscriber(st);
            }
            _ => {}
        }
    }
}

/// Sends the root's latest state to every replica in `to` that has not acknowledged it.
fn push_replication(root: &mut Root, to: PeerSet, o: &mut O) {
    let Some(seq) = root.st.entry.map(|e| e.seq) else {
        return;
    };
    let mut msg = None;
    for a in root.acks.iter() {
        if to & (1 << a.peer) != 0 && a.acked < seq {
            let m =
                msg.get_or_insert_with(|| Msg::Replicate(RootStateMsg(Arc::new(root.st.clone()))));
            o.send(peer_id(a.peer), m.clone());
        }
    }
}

fn send_step(peer: PeerIx, script: &[PubOp], st: &PublisherState, o: &mut O) {
    let Some(op) = script.get(st.next as usize) else {
        return;
    };
    let if_match = match op.if_match {
        IfMatch::None => None,
        IfMatch::Mine => st.etag,
        IfMatch::Fixed(e) => Some(e),
    };
    o.send(
        peer_id(peer),
        Msg::Publish {
            n: st.next,
            value: op.value,
            if_match,
            expires: op.expires,
            last: st.next as usize + 1 == script.len(),
        },
    );
}
