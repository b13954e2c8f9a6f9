//! What actors send each other, and the timers they set.
//!
//! Overlay messages ([`Msg::Join`], [`Msg::PubFwd`], [`Msg::Replicate`], …) travel between peers;
//! SIP requests travel from a user agent to its first-contact peer. What a peer sends a user agent
//! ([`Msg::ToSubscriber`], the answer to a UA's last publish) and the model's bookkeeping
//! ([`Msg::Observe`]) go to the observer sink: they are recorded in the history, never delivered.
//! Timers are tags (the checker ignores durations); each one is enabled only when it can change
//! something (see [`Timer`]).

use super::state::{ETag, Entry, RootState, Seq, Value};
use crate::topology::PeerIx;
use serde::Serialize;
use std::sync::Arc;

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
    /// 200 OK to a removal (`Expires: 0`): the state is gone, no entity tag; `seq` stamps the
    /// change (what subscribers are told).
    Removed {
        /// The seq of the removal.
        seq: Seq,
    },
    /// 412 Conditional Request Failed: the SIP-If-Match tag is not the current one.
    PreconditionFailed,
    /// The first-contact peer gave up after its retransmissions (408 Request Timeout).
    Timeout,
}

/// What kind of change a commit is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Change {
    /// A publication: a new event state (no SIP-If-Match), or a refresh, modification or
    /// removal of the state its SIP-If-Match names.
    Publish {
        /// The SIP-If-Match the publication carried, if it was conditional.
        if_match: Option<ETag>,
        /// The publishing user agent's actor index.
        who: u8,
        /// Its request counter: (`who`, `n`) names the PUBLISH, retransmissions included.
        n: u8,
    },
    /// The event state with this tag expired.
    Expire(ETag),
    /// A state the root did not stamp itself (from a replica, the tree, a failed root).
    Adopt,
}

/// Model bookkeeping sent to the observer sink (never delivered; folded into the history).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Obs {
    /// A root committed `entry` (multicast it and may acknowledge it).
    Commit {
        /// The committed entry.
        entry: Entry,
        /// The change it is.
        change: Change,
        /// The live entity tags after it (bit `e` for tag `e`).
        live: u16,
    },
    /// A root answered 412 to publisher `who`'s publish whose SIP-If-Match named `if_match`;
    /// `applied` and `committed` are the root's applied and committed entries right after it
    /// answered (a 412 changes nothing, so they are equal: no seq consumed, no state touched).
    Refused {
        /// The publisher's actor index.
        who: u8,
        /// The tag.
        if_match: ETag,
        /// The root's applied state ([`RootState::entry`]) after the 412.
        applied: Option<Entry>,
        /// The root's committed entry after the 412.
        committed: Option<Entry>,
        /// Whether a commit was pending after the 412.
        pending: bool,
    },
    /// A root applied publisher `who`'s PUBLISH `n` (a change, not a 412) and stamped it `seq`.
    Applied {
        /// The seq it stamped.
        seq: Seq,
        /// The publisher's actor index.
        who: u8,
        /// Its request counter.
        n: u8,
    },
    /// A root removed an expired event state (counts against the expiry budget).
    Expired,
    /// A root stamped a change with a seq no higher than one its own member view holds: the
    /// members that were told that seq take the change as old.
    StampedBelowView,
    /// A peer took over as root after the root failed (`with_replica`: it held a replica).
    Takeover {
        /// Whether the new root held replicated state.
        with_replica: bool,
    },
    /// A root received a re-JOIN that carried state.
    RejoinWithState,
    /// A live peer was suspected by the others (counts against the suspicion budget).
    Suspected,
    /// A root that had been suspected (and lost its lease) activated again after its fetch.
    Refetched,
    /// A first-contact peer ended the subscription of user agent `ua` at its request.
    Unsubscribed(u8),
    /// A root demoted in favour of a closer peer that joined or restarted, and sent it its
    /// record.
    HandedToCloser,
    /// A heartbeat round resent a state a child had missed (a multicast was lost).
    TreeRepaired,
    /// A peer ran a tree heartbeat round (counts against the tree losses: see
    /// [`Timer::Heartbeat`]).
    HeartbeatRound,
}

/// Every message of the model.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Msg {
    /// UA → first-contact peer: SIP SUBSCRIBE.
    Subscribe,
    /// UA → first-contact peer: SIP SUBSCRIBE with `Expires: 0` (ends its subscription).
    Unsubscribe,
    /// Peer → peer: a peer about to leave hands the subscription dialog of user agent
    /// `client` to another peer, with the last state it showed it (production:
    /// `DialogHandover` in `wire`, carrying the dialog's Call-ID, tags, CSeqs, route set,
    /// target and expiry besides). The receiver joins the group for it and, once the root
    /// answers, sends it a NOTIFY from its own address (a target refresh).
    Handover {
        /// The subscriber's actor index.
        client: u8,
        /// The seq of the last state the subscriber was shown (production carries no body:
        /// the root's answer has the state).
        last: Seq,
    },
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
    /// ACK from the root, back along the reverse path, with its committed state: `None` when
    /// nothing was published yet (the subscriber is accepted all the same and told "no
    /// state"); an entry without values after every state was removed or expired (its seq
    /// tells members that the states are gone).
    JoinReply {
        /// End-to-end request id.
        req: ReqId,
        /// Remaining reverse path.
        path: Hops,
        /// The root's committed state.
        state: Option<Entry>,
    },
    /// Multicast of a committed entry down the tree (also the state a heartbeat round resends
    /// a child that is behind, or a child pushes up to a parent that is behind).
    Multicast(Entry),
    /// Child → parent: this peer no longer needs the group (its last subscriber and child
    /// gone, or it became the root), or, answering a beat, the sender is not its parent
    /// (production: `Leave`, and a group in the `left` of `HeartbeatAcks`). The parent drops
    /// the child and leaves in turn if nothing else needs the group there. With
    /// [`Setup::tree_maintenance`](crate::Setup::tree_maintenance) only.
    Leave,
    /// Parent → child: the tree's heartbeat, with the parent's latest seq (production: a beat
    /// in `Heartbeats`).
    Beat(Seq),
    /// Child → parent: the acknowledgement of a beat, with the child's latest seq (production:
    /// an acknowledgement in `HeartbeatAcks`).
    BeatAck(Seq),
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
    /// Root → replica: the root state, with the sender's root epoch (0 without suspicions).
    Replicate(RootStateMsg, u8),
    /// Replica → root: the seq it received (the root keeps the highest per replica).
    ReplicaAck(Seq),
    /// New root → its replica set: send me your record, and promise to refuse records of a
    /// lower root epoch than this one from now on (production `FetchState`; epoch 0 without
    /// suspicions).
    FetchState(u8),
    /// The record a peer holds (its replica, or its root state), to a fetching root, with the
    /// highest epoch it knew and whether it granted the promise (production `FetchReply`).
    FetchReply {
        /// The epoch of the fetch round it answers (a reply to an earlier round of the same
        /// root is ignored).
        epoch: u8,
        /// The record.
        rec: Option<RootStateMsg>,
        /// The highest root epoch the peer knew before this fetch (its records', its
        /// promises').
        promised: u8,
        /// Whether it promised: it had promised no other root as much.
        granted: bool,
    },
    /// The peer confirms another root's lease, which may still run: it neither promises nor
    /// sends its record; the fetching root (whose round it is, by epoch) keeps awaiting it and
    /// asks again later (production `FetchBusy`). Without it, a peer would grant a newer
    /// root's round while the older root still answers JOINs under its lease: a stale read.
    FetchBusy(u8),
    /// Replica → root: the REPLICATE's epoch (the second) is below the one held or promised
    /// here (the first): it is not stored and not acknowledged; the reply carries both and
    /// the record held here (production `Fenced`). A root ignores a fence of a REPLICATE it
    /// sent in an earlier epoch.
    Fenced(Option<RootStateMsg>, u8, u8),
    /// Replica → root: a peer closer to the group than the sender runs (as far as the replica
    /// knows): the REPLICATE is not acknowledged; the sender takes that peer back and hands
    /// the group over (production `NotRoot`).
    NotRoot(PeerIx),
    /// Observation for the checker's history (sent to the sink id).
    Observe(Obs),
}

/// What a first-contact peer sends a subscribing UA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum UaEvent {
    /// 200 OK to SUBSCRIBE (the root's ACK).
    Accepted,
    /// SIP NOTIFY with the group state (seq 0, no values: nothing published yet).
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
    /// A subscriber whose first-contact peer is gone subscribes again through this peer
    /// (production: told `terminated;reason=deactivated` by a peer that leaves, or its
    /// refresh to a crashed peer failed). Enabled only once its current peer crashed, for a
    /// live target, within the move budget.
    Move(PeerIx),
    /// The peer hands one of its active local subscriptions to this peer before it leaves
    /// (an orderly shutdown, `--handovers`): enabled at a live peer holding an active
    /// subscription of a subscriber that never unsubscribes, for a live, reachable target,
    /// within the handover budget.
    Handover(PeerIx),
    /// Failure detector: the peer notices that `PeerIx` has crashed (missing heartbeats and
    /// keep-alives). Enabled only once that peer has crashed: a perfect failure detector.
    Detect(PeerIx),
    /// Retransmission timeout for a request; enabled only once the request is lost.
    Retry(ReqId),
    /// The root's replication retry (production: its periodic tick) resends its state to the
    /// replicas that have not acknowledged it. Armed at every peer; enabled only at a root with
    /// such a replica that has nothing from it in flight and would now accept it. A fetching
    /// root asks the peers it awaits again. A root serving without a lease (its promise
    /// rounds refused) that holds requests starts another round instead, enabled once every
    /// replica it reaches would grant it (production's `drain_queue` → `reconfirm`).
    Resend,
    /// The event state with this tag expires at the root (its granted lifetime passed without
    /// a refresh). Armed by the root for each state it applies; enabled only at a live root
    /// holding that state, committed, with no commit pending, within the expiry budget.
    Expire(ETag),
    /// The environment: this peer is paused or cut off, and the others' failure detectors will
    /// report it dead (a false suspicion, within the budget). Its lease lapses first.
    Suspect,
    /// The environment: the suspected peer runs and is reachable again.
    Heal,
    /// The lease this peer confirms (`PeerState::leased`) lapses. Enabled only once that root
    /// can no longer serve with it: it crashed, demoted, or started a new fetch round (a
    /// new epoch: the confirmation was for the earlier one). Production: the confirmation
    /// runs `root_lease` from when it was given, longer than the root's own lease, which runs
    /// from before it.
    Lapse,
    /// A fetching root asks the peer that answered it [`Msg::FetchBusy`] again (production:
    /// once the time it was told has passed). Armed at every peer for good (with fencing) and
    /// re-armed when it fires, so that a lost re-ask is asked again; enabled only while the
    /// root still awaits that peer in the same round, with nothing in flight between them.
    Reask(PeerIx),
    /// This peer hears from a peer it declared dead, which runs again (Pastry's proof of life:
    /// an announce, a pong): it takes it back.
    Alive(PeerIx),
    /// The tree's heartbeat round (production's tree round, for this group): the peer sends
    /// each child a [`Msg::Beat`] with its latest seq; a child whose parent it is answers
    /// [`Msg::BeatAck`] with its own (pushing its state up first if it is newer), any other
    /// [`Msg::Leave`]; the parent sends a child that is behind its latest state. Armed at every
    /// peer with `--tree-losses`; enabled only when a live child that names this peer its
    /// parent holds an older state and nothing is in flight between the two (a multicast or a
    /// round's message was lost), and fewer rounds ran than messages were lost: each round
    /// repairs what one loss broke, or has a message of its own lost. (Production's round is
    /// periodic; a round that cannot repair would repeat for ever, a livelock the checker
    /// cannot see in a cycle: the budget makes it a quiescent state that fails
    /// `subscribers-converge`, which is how the mutant `heartbeat-without-seq` is caught.)
    Heartbeat,
    /// The peer times its tree parent out (production: no beat from it for `parent_timeout`):
    /// it leaves it (a LEAVE) and re-JOINs, carrying its latest state. What makes a parent
    /// stop beating a child that still names it is a LEAVE the child sent before it grafted
    /// itself again, overtaken by its JOIN (the parent drops the branch it just grafted).
    /// Armed at every peer with tree maintenance; enabled only at a live peer that needs the
    /// group (a subscriber or a child), is not the root, has no request of its own pending,
    /// and names as parent a live peer that does not hold it as a child, with nothing in
    /// flight between the two.
    ParentTimeout,
}
