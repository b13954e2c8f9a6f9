//! What the checker remembers of a run beyond the actors' states: a compact summary of the
//! client-visible events and the root's commits, updated as messages are sent and received.
//! Properties about orders of events (NOTIFY seqs, first NOTIFY vs. earlier 200s) are checked
//! here, as the events happen, and leave a flag.

use crate::protocol::{
    Change, ETag, Entry, Hashed, Msg, Obs, PubResult, Seq, UaEvent, Values, MAX_EXPIRES, NO_STATE,
};
use crate::setup::Setup;
use crate::topology::PeerIx;
use serde::Serialize;
use stateright::actor::Envelope;
use std::sync::Arc;

/// A NOTIFY to a subscriber had a seq not above the previous one.
pub const OUT_OF_ORDER: u32 = 1 << 0;
/// A NOTIFY reached a subscriber before its 200 OK.
pub const NOTIFY_BEFORE_ACK: u32 = 1 << 1;
/// A NOTIFY carried a (seq, value) that no root committed.
pub const UNPUBLISHED: u32 = 1 << 2;
/// A subscriber's first NOTIFY was older than a publication acknowledged before it
/// subscribed.
pub const STALE_FIRST: u32 = 1 << 3;
/// A conditional publish whose SIP-If-Match named no live event state was committed.
pub const STALE_ETAG_COMMITTED: u32 = 1 << 4;
/// A publisher's modify or removal of its own live, acknowledged event state got 412.
pub const MODIFY_REFUSED: u32 = 1 << 6;
/// A publication or an expiry dropped an event state it did not name.
pub const STATES_LOST: u32 = 1 << 7;
/// Witness: a peer took over as root with replicated state.
pub const FAILOVER: u32 = 1 << 8;
/// Witness: a root received a re-JOIN carrying state.
pub const REJOIN_STATE: u32 = 1 << 9;
/// Witness: a publish was answered 412.
pub const REJECTED_412: u32 = 1 << 10;
/// Witness: a subscriber accepted before anything was published was later notified of a state.
pub const SUBSCRIBED_EMPTY: u32 = 1 << 11;
/// Witness: a subscriber was notified of the composition of two or more event states.
pub const COMPOSED: u32 = 1 << 13;
/// Witness: a subscriber was sent a NOTIFY telling it an event state expired.
pub const EXPIRY_NOTIFIED: u32 = 1 << 12;
/// A subscriber was sent something after it unsubscribed.
pub const AFTER_UNSUBSCRIBE: u32 = 1 << 5;
/// Two changes were stamped with one seq, or one seq was committed with two compositions.
pub const DOUBLE_STAMP: u32 = 1 << 14;
/// One PUBLISH (a request and its retransmissions) was applied twice.
pub const DOUBLE_APPLY: u32 = 1 << 15;
/// A 200 OK to PUBLISH granted an expiry outside `1..=min(requested, MAX_EXPIRES)`.
pub const EXPIRY_OUT_OF_BOUNDS: u32 = 1 << 16;
/// A root answered 412 and its state moved on: it applied something it did not commit, or a
/// commit was pending.
pub const REFUSAL_CHANGED: u32 = 1 << 17;
/// A user agent got an answer a central RFC 3903 server, applying the commits in seq order,
/// would not give: a 200 that is not the commit of that very PUBLISH, or a 412 naming an event
/// state that is live.
pub const NOT_CENTRAL: u32 = 1 << 19;
/// Witness: a peer took over as root holding no replica (the root crashed before it
/// replicated anything).
pub const TAKEOVER_EMPTY: u32 = 1 << 18;
/// Witness: a root that had been suspected (and lost its lease) healed and fetched its
/// replicas' records again before serving.
pub const REFETCHED: u32 = 1 << 20;
/// A subscriber that subscribed again through another peer was shown an older state than
/// one it had been shown before.
pub const MOVED_BACK: u32 = 1 << 21;
/// Witness: a subscriber that subscribed again through another peer was notified there.
pub const MOVED: u32 = 1 << 22;
/// Witness: a subscription handed over by a peer that left was notified by the peer that
/// took it.
pub const HANDED: u32 = 1 << 23;

/// Witness: a root demoted in favour of a closer peer that joined or restarted, and handed
/// it its record.
pub const HANDED_TO_CLOSER: u32 = 1 << 24;

/// Witness: a heartbeat round resent a state a child had missed.
pub const TREE_REPAIRED: u32 = 1 << 25;

/// A root stamped a change with a seq no higher than one its own member view held.
pub const STAMPED_BELOW_VIEW: u32 = 1 << 26;

/// Per-subscriber record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct SubHist {
    /// Highest seq acknowledged to a publisher when this subscriber sent SUBSCRIBE.
    pub acked_before: Seq,
    /// 200 OK sent (the root's ACK).
    pub result: Option<bool>,
    /// Its first NOTIFY said "nothing published yet".
    pub empty_first: bool,
    /// The last NOTIFY sent.
    pub last: Option<Entry>,
    /// The SUBSCRIBE timed out (408) instead of being answered by the root.
    pub timed_out: bool,
    /// The subscriber sent its unsubscribe.
    pub leaving: bool,
    /// Its first-contact peer ended the subscription.
    pub unsubscribed: bool,
    /// SUBSCRIBEs it sent (more than one: it moved to another peer).
    pub dialogs: u8,
    /// The highest seq it was shown in its earlier subscriptions (dialogs).
    pub floor: Seq,
    /// The peer its dialog was last handed over to (it now carries the subscription).
    pub carrier: Option<PeerIx>,
    /// Its dialog was handed over and the new peer has not notified it yet (the NOTIFY that
    /// tells it where the dialog went, which may repeat the last state).
    pub handed: bool,
}

/// The run's history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct History {
    /// `commits[s - 1]`: the composition first committed with seq `s` (`Some(NO_STATE)` once
    /// every state is gone, `None`: nothing committed with that seq yet).
    pub commits: Vec<Option<Values>>,
    /// The live entity tags after the latest commit (bit `e` for tag `e`).
    pub live: u16,
    /// The tags a commit retired: expired, or replaced or removed by the publication whose
    /// SIP-If-Match named them.
    pub dead: u16,
    /// Each publisher's event state as it knows it: the tag of its last 200 OK (`None` after
    /// a removal, an expiry of that state, or a timeout, which leaves it unknown).
    pub pub_etag: Vec<Option<ETag>>,
    /// Highest seq a first-contact peer has answered 200 OK for.
    pub acked_max: Seq,
    /// Per subscriber.
    pub subs: Vec<SubHist>,
    /// Violation and witness flags.
    pub flags: u32,
    /// Final responses other than a timeout sent to each publisher.
    pub answered: Vec<u8>,
    /// Messages the network lost so far.
    pub losses: u8,
    /// Tree and replication messages the network lost so far.
    pub tree_losses: u8,
    /// Tree heartbeat rounds so far (at most one per tree loss: each round repairs what one
    /// loss broke, or has one of its own messages lost).
    pub heartbeats: u8,
    /// Publications expired so far.
    pub expiries: u8,
    /// False suspicions so far.
    pub suspicions: u8,
    /// Subscriptions moved to another peer so far.
    pub moves: u8,
    /// Subscriptions handed over so far.
    pub handovers: u8,
    /// Peer crashes so far (a restarted peer that crashes again counts twice).
    pub crashes: u8,
    /// Restarts of crashed peers so far.
    pub restarts: u8,
    /// The joining peers that have joined (bit `p` for peer `p`).
    pub joined: u8,
    /// The seqs that committed an expiry (bit `s` for seq `s`).
    pub expiry_seqs: u16,
    /// The seqs a root stamped on a change of its own (a publication or an expiry; bit `s` for
    /// seq `s`). A takeover re-commits a seq it did not stamp.
    pub stamped: u32,
    /// Compositions committed with a seq besides the first one (`commits`): each one is a
    /// violation of `single-committer`, kept so that a NOTIFY carrying it still counts as
    /// published.
    pub extra: Vec<(Seq, Values)>,
    /// The publications applied (bit `8 j + n` for publisher `j`'s PUBLISH `n`).
    pub applied: u16,
    /// Which PUBLISH a root applied with which seq: (seq, publisher's actor index, its request
    /// counter), sorted.
    pub stamps: Vec<(Seq, u8, u8)>,
}

impl History {
    /// The empty history for a configuration.
    pub fn new(setup: &Setup) -> Self {
        History {
            subs: vec![SubHist::default(); setup.subscribers.len()],
            answered: vec![0; setup.publishers.len()],
            pub_etag: vec![None; setup.publishers.len()],
            ..Default::default()
        }
    }

    /// Whether a flag is set.
    pub fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    /// The latest committed (seq, composition), if any.
    pub fn latest(&self) -> Option<(Seq, Values)> {
        self.commits
            .iter()
            .enumerate()
            .rev()
            .find_map(|(i, v)| v.map(|v| (i as Seq + 1, v)))
    }

    fn committed(&self, seq: Seq) -> Option<Values> {
        self.commits
            .get((seq as usize).wrapping_sub(1))
            .copied()
            .flatten()
    }

    /// Whether some root committed `values` with `seq` (the first commit of that seq or a
    /// later, conflicting one).
    pub fn was_committed(&self, seq: Seq, values: Values) -> bool {
        self.committed(seq) == Some(values) || self.extra.contains(&(seq, values))
    }
}

/// The history as the checker keeps it in each state: shared by the states that did not
/// change it (most transitions), and hashed once ([`Hashed`]).
pub type SharedHistory = Arc<Hashed<History>>;

/// Folds a sent message into the history (`record_msg_out`): a new history if the message
/// changed it.
pub fn on_send(
    setup: &Arc<Setup>,
    h: &SharedHistory,
    env: Envelope<&Msg>,
) -> Option<SharedHistory> {
    // Messages between peers leave the history alone: they are most of the messages, and
    // need no copy of it to find that out.
    let recorded = matches!(
        env.msg,
        Msg::Observe(_)
            | Msg::Subscribe
            | Msg::Unsubscribe
            | Msg::Handover { .. }
            | Msg::ToSubscriber { .. }
            | Msg::PubResponse { .. }
    );
    if !recorded {
        return None;
    }
    fold(setup, h, env).map(|n| Arc::new(Hashed::new(n)))
}

/// What `on_send` does to the history itself.
fn fold(setup: &Arc<Setup>, h: &History, env: Envelope<&Msg>) -> Option<History> {
    let src = usize::from(env.src);
    let mut n = h.clone();
    match env.msg {
        Msg::Observe(Obs::Commit {
            entry,
            change,
            live,
        }) => {
            let i = entry.seq as usize - 1;
            let first = n.commits.get(i).is_none_or(|c| c.is_none());
            if n.commits.len() <= i {
                n.commits.resize(i + 1, None);
            }
            // Every seq is stamped once, by one root; a takeover may commit it again, with the
            // same composition.
            let stamps = !matches!(change, Change::Adopt);
            if stamps && n.stamped & (1 << (entry.seq & 31)) != 0 {
                n.flags |= DOUBLE_STAMP;
            }
            if stamps {
                n.stamped |= 1 << (entry.seq & 31);
            }
            if let Change::Publish { who, n: req, .. } = change {
                if let Some(j) = setup.publisher_index(*who as usize) {
                    let bit = 1u16 << ((j * 8 + *req as usize) & 15);
                    if h.applied & bit != 0 {
                        n.flags |= DOUBLE_APPLY;
                    }
                    n.applied |= bit;
                }
            }
            if !first && n.commits[i] != Some(entry.values) {
                n.flags |= DOUBLE_STAMP;
                if !n.extra.contains(&(entry.seq, entry.values)) {
                    n.extra.push((entry.seq, entry.values));
                    n.extra.sort_unstable();
                }
            }
            if first {
                // Only the tags a change names may leave the live set.
                let kept = |named: Option<ETag>| {
                    let gone = h.live & !live & !named.map_or(0, |e| 1u16 << e);
                    gone == 0
                };
                match change {
                    Change::Publish { if_match, .. } => {
                        if let Some(e) = if_match {
                            if h.live & (1 << e) == 0 {
                                n.flags |= STALE_ETAG_COMMITTED;
                            }
                            n.dead |= 1 << e;
                        }
                        if !kept(*if_match) {
                            n.flags |= STATES_LOST;
                        }
                    }
                    Change::Expire(e) => {
                        if !kept(Some(*e)) {
                            n.flags |= STATES_LOST;
                        }
                        n.expiry_seqs |= 1 << (entry.seq & 15);
                        n.dead |= 1 << e;
                    }
                    // A record a crashed root stamped but never committed, adopted by its
                    // successor: the tags it retired (its expiry, a modify) are gone for good.
                    Change::Adopt => n.dead |= h.live & !live,
                }
                n.commits[i] = Some(entry.values);
                n.live = *live;
            }
        }
        Msg::Observe(Obs::Refused {
            who,
            if_match,
            applied,
            committed,
            pending,
        }) => {
            if applied != committed || *pending {
                n.flags |= REFUSAL_CHANGED;
            }
            // A central server refuses only a tag that names no live event state.
            if h.live & (1 << (if_match & 15)) != 0 {
                n.flags |= NOT_CENTRAL;
            }
            // The publisher's own acknowledged state, which no commit retired.
            if let Some(j) = setup.publisher_index(*who as usize) {
                if h.pub_etag[j] == Some(*if_match) && h.dead & (1 << if_match) == 0 {
                    n.flags |= MODIFY_REFUSED;
                }
            }
        }
        Msg::Observe(Obs::Expired) => n.expiries += 1,
        Msg::Observe(Obs::StampedBelowView) => n.flags |= STAMPED_BELOW_VIEW,
        Msg::Observe(Obs::Suspected) => n.suspicions += 1,
        Msg::Observe(Obs::Refetched) => n.flags |= REFETCHED,
        Msg::Observe(Obs::HandedToCloser) => n.flags |= HANDED_TO_CLOSER,
        Msg::Observe(Obs::TreeRepaired) => n.flags |= TREE_REPAIRED,
        Msg::Observe(Obs::HeartbeatRound) => n.heartbeats += 1,
        Msg::Observe(Obs::Applied { seq, who, n: req }) => {
            if !n.stamps.contains(&(*seq, *who, *req)) {
                n.stamps.push((*seq, *who, *req));
                n.stamps.sort_unstable();
            }
        }
        Msg::Observe(Obs::Takeover { with_replica: true }) => n.flags |= FAILOVER,
        Msg::Observe(Obs::Takeover {
            with_replica: false,
        }) => n.flags |= TAKEOVER_EMPTY,
        Msg::Observe(Obs::RejoinWithState) => n.flags |= REJOIN_STATE,
        Msg::Subscribe => {
            let i = setup.subscriber_index(src)?;
            let s = &mut n.subs[i];
            if s.dialogs > 0 {
                // A new subscription through another peer: a new dialog, which must not
                // start below what the old one showed.
                n.moves += 1;
                s.floor = s.floor.max(s.last.map_or(0, |e| e.seq));
                s.result = None;
                s.last = None;
                s.timed_out = false;
                s.empty_first = false;
            }
            s.dialogs = s.dialogs.saturating_add(1);
            s.acked_before = h.acked_max;
        }
        Msg::Handover { client, .. } => {
            let i = setup.subscriber_index(*client as usize)?;
            n.handovers += 1;
            n.subs[i].carrier = Some(usize::from(env.dst) as PeerIx);
            n.subs[i].handed = true;
        }
        Msg::Unsubscribe => {
            let i = setup.subscriber_index(src)?;
            n.subs[i].leaving = true;
        }
        Msg::Observe(Obs::Unsubscribed(ua)) => {
            let i = setup.subscriber_index(*ua as usize)?;
            n.subs[i].unsubscribed = true;
        }
        Msg::ToSubscriber { ua, ev } => {
            let i = setup.subscriber_index(*ua as usize)?;
            let s = &mut n.subs[i];
            if s.unsubscribed {
                n.flags |= AFTER_UNSUBSCRIBE;
                return Some(n);
            }
            match ev {
                UaEvent::Accepted => s.result = Some(true),
                UaEvent::TimedOut => s.timed_out = true,
                UaEvent::Notify(e) => {
                    if s.result != Some(true) {
                        n.flags |= NOTIFY_BEFORE_ACK;
                    }
                    if s.last.is_none() && s.dialogs > 1 {
                        n.flags |= if e.seq < s.floor { MOVED_BACK } else { MOVED };
                    }
                    let handed = std::mem::take(&mut s.handed);
                    if handed {
                        n.flags |= HANDED;
                    }
                    match s.last {
                        // The handed-over dialog's first NOTIFY may repeat the last state.
                        Some(last) if handed && e.seq == last.seq => {}
                        Some(last) if e.seq <= last.seq => n.flags |= OUT_OF_ORDER,
                        None if e.seq < s.acked_before => n.flags |= STALE_FIRST,
                        None if e.seq == 0 => s.empty_first = true,
                        Some(_) if s.empty_first && e.values != NO_STATE => {
                            n.flags |= SUBSCRIBED_EMPTY
                        }
                        _ => {}
                    }
                    s.last = Some(*e);
                    if h.expiry_seqs & (1 << (e.seq & 15)) != 0 {
                        n.flags |= EXPIRY_NOTIFIED;
                    }
                    if e.values.count_ones() > 1 {
                        n.flags |= COMPOSED;
                    }
                    if e.seq > 0 && !h.was_committed(e.seq, e.values) {
                        n.flags |= UNPUBLISHED;
                    }
                }
            }
        }
        Msg::PubResponse {
            ua,
            n: n_req,
            result,
        } => {
            let j = setup.publisher_index(*ua as usize)?;
            n.answered[j] += 1;
            match result {
                PubResult::PreconditionFailed => n.flags |= REJECTED_412,
                PubResult::Ok { etag, expires } => {
                    let asked = setup.publishers[j]
                        .1
                        .get(*n_req as usize)
                        .map_or(0, |op| op.expires);
                    if *expires == 0 || *expires > asked.min(MAX_EXPIRES) {
                        n.flags |= EXPIRY_OUT_OF_BOUNDS;
                    }
                    if !h.stamps.contains(&(*etag, *ua, *n_req)) || h.committed(*etag).is_none() {
                        n.flags |= NOT_CENTRAL;
                    }
                    n.acked_max = n.acked_max.max(*etag);
                    n.pub_etag[j] = Some(*etag);
                }
                PubResult::Removed { seq } => {
                    if !h.stamps.contains(&(*seq, *ua, *n_req)) || h.committed(*seq).is_none() {
                        n.flags |= NOT_CENTRAL;
                    }
                    n.acked_max = n.acked_max.max(*seq);
                    n.pub_etag[j] = None;
                }
                PubResult::Timeout => {
                    n.answered[j] -= 1;
                    n.pub_etag[j] = None;
                }
            }
        }
        _ => return None,
    }
    (n != *h).then_some(n)
}
