//! The actors of the model: overlay peers running sa-Scribe, and the SIP user agents (subscribers
//! and publishers) attached to a first-contact peer.
//!
//! The peer's handlers follow §III.D–F of the paper; where the paper is silent the design choice
//! is stated on the handler (see also the crate documentation).
//!
//! The module is split by concern; every public item is re-exported here
//! (`crate::protocol::Entry`, `crate::protocol::Msg`, …):
//! - `message`: what actors send each other ([`Msg`], [`Obs`], [`UaEvent`]) and their
//!   [`Timer`]s;
//! - `state`: what they hold ([`Entry`], [`RootState`], [`Root`], [`PeerState`], the user agents'
//!   states);
//! - `join`: SUBSCRIBE and unsubscribe at the first-contact peer, JOIN / pACK / ACK along
//!   the reverse path, and a root's reconciliation of a re-JOIN;
//! - `publish`: PUBLISH at the first-contact peer and at the root (412, seq and ETag), replication,
//!   commit, and expiry;
//! - `failover`: failure detection (re-JOIN of an orphan, replica set repair) and root takeover;
//! - `retry`: retransmission after a loss;
//! - `actor`: the [`Participant`] actor, dispatching each message and timer to the above.
//!
//! This file holds what the handlers share: the per-call context and latest-state sync
//! (passing a newer entry on to local subscribers and children).

mod actor;
mod failover;
mod hashed;
mod join;
mod message;
mod publish;
mod retry;
mod state;

pub use actor::Participant;
pub use hashed::Hashed;
pub use join::handable;
pub use message::{Change, Hops, Msg, Obs, PubResult, ReqId, RootStateMsg, Timer, UaEvent};
pub use publish::{busy, expirable, MAX_EXPIRES};
pub use state::{
    newer, single, ETag, Entry, EventState, Held, IfMatch, LocalSub, ParticipantState, PeerState,
    PendingPub, PubOp, PublisherState, Replica, Root, RootState, Seq, SubPhase, SubscriberState,
    Value, Values, MAX_ROUNDS, NO_STATE,
};

use crate::mutant::Mutant;
use crate::setup::Setup;
use crate::topology::{PeerIx, PeerSet};
use stateright::actor::{Id, Out};

/// Every peer (a [`PeerSet`] mask).
const ALL: PeerSet = PeerSet::MAX;

/// What a handler emits into.
type O = Out<Participant>;

/// The actor id of peer `p`.
fn peer_id(p: PeerIx) -> Id {
    Id::from(p as usize)
}

/// The actor index of `id` (a peer's index for a peer).
fn to_ix(id: Id) -> u8 {
    usize::from(id) as u8
}

/// The peer's handlers, with the shared setup at hand.
struct Ctx<'a> {
    s: &'a Setup,
    me: PeerIx,
}

impl Ctx<'_> {
    /// Whether the seeded bug `m` is switched on.
    fn mutant(&self, m: Mutant) -> bool {
        self.s.mutant == Some(m)
    }

    /// The next hop from this peer toward the group id (this peer itself if it is the group's
    /// root as far as it knows).
    fn route(&self, st: &PeerState) -> PeerIx {
        self.s.topo.next_hop(self.me, self.s.gid, st.dead)
    }

    /// Records an observation in the checker's history (sent to the sink).
    fn observe(&self, o: &mut O, obs: Obs) {
        o.send(self.s.sink(), Msg::Observe(obs));
    }

    /// Sends subscriber `ua` an event (through the sink: recorded, never delivered).
    fn to_ua(&self, o: &mut O, ua: u8, ev: UaEvent) {
        o.send(self.s.sink(), Msg::ToSubscriber { ua, ev });
    }

    /// This peer's replica set as a root, none of them holding anything yet.
    fn replicas_of(&self, st: &PeerState) -> Vec<Replica> {
        self.replica_set(st)
            .into_iter()
            .map(|(peer, _)| Replica { peer, acked: 0 })
            .collect()
    }

    /// The k nearest live peers that replicate this peer's root state.
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

    /// The tree's heartbeat round (production's tree round, for this group): an active root's
    /// duties first, as production's tick runs them — its record resent to every replica
    /// behind it (the replication retry's code) — then a beat with this peer's latest seq to
    /// each child. The timer stays armed.
    fn on_heartbeat(&self, st: &mut PeerState, o: &mut O) {
        o.set_timer(Timer::Heartbeat, stateright::actor::model_timeout());
        self.observe(o, Obs::HeartbeatRound);
        if let Some(root) = st.root.as_mut().filter(|r| r.active()) {
            publish::push_replication(root, ALL, o);
        }
        let seq = st.latest.map_or(0, |e| e.seq);
        for c in (0..8).filter(|&c| st.children & (1 << c) != 0) {
            o.send(peer_id(c), Msg::Beat(seq));
        }
    }

    /// The parent timed out (production's tick, `parent_timeout`): leave it, and re-JOIN. The
    /// LEAVE is not sent when the re-JOIN goes through the same parent, as it could overtake
    /// the JOIN and cut the branch off again (a cycle the checker found). The timer stays
    /// armed.
    fn on_parent_timeout(&self, st: &mut PeerState, o: &mut O) {
        o.set_timer(Timer::ParentTimeout, stateright::actor::model_timeout());
        let rejoins = st.root.is_none() && (!st.subs.is_empty() || st.children != 0);
        if rejoins && st.parent == Some(self.route(st)) {
            st.parent = None;
        } else {
            self.leave_parent(st, o);
        }
        if rejoins {
            self.rejoin(st, o);
        }
    }

    /// A beat from `from` (production `on_heartbeat`): from this peer's parent, it is
    /// acknowledged with this peer's latest seq, and a newer state than the parent's is pushed
    /// up first (so that a root keeps the highest); from any other peer, this peer is not its
    /// child: it answers LEAVE.
    fn on_beat(&self, st: &PeerState, from: PeerIx, seq: Seq, o: &mut O) {
        if st.parent != Some(from) {
            o.send(peer_id(from), Msg::Leave);
            return;
        }
        let mine = st.latest.map_or(0, |e| e.seq);
        if let Some(e) = st.latest.filter(|e| e.seq > seq) {
            o.send(peer_id(from), Msg::Multicast(e));
        }
        o.send(peer_id(from), Msg::BeatAck(mine));
    }

    /// A child's acknowledgement of a beat (production `on_heartbeat_ack`): a child that is
    /// behind this peer's latest state is sent it.
    fn on_beat_ack(&self, st: &PeerState, from: PeerIx, seq: Seq, o: &mut O) {
        if self.mutant(Mutant::HeartbeatWithoutSeq) {
            return;
        }
        let Some(e) = st.latest.filter(|e| e.seq > seq) else {
            return;
        };
        if st.children & (1 << from) != 0 {
            self.observe(o, Obs::TreeRepaired);
            o.send(peer_id(from), Msg::Multicast(e));
        }
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
}
