//! What the checker remembers of a run beyond the actors' states: a compact summary of the
//! client-visible events and the root's commits, updated as messages are sent and received.
//! Properties about orders of events (NOTIFY seqs, first NOTIFY vs. earlier 200s) are checked
//! here, as the events happen, and leave a flag.

use crate::protocol::{Entry, Msg, Obs, PubResult, Seq, UaEvent, Value, NO_STATE};
use crate::setup::Setup;
use serde::Serialize;
use stateright::actor::Envelope;
use std::sync::Arc;

/// A NOTIFY to a subscriber had a seq not above the previous one.
pub const OUT_OF_ORDER: u16 = 1 << 0;
/// A NOTIFY reached a subscriber before its 200 OK.
pub const NOTIFY_BEFORE_ACK: u16 = 1 << 1;
/// A NOTIFY carried a (seq, value) that no root committed.
pub const UNPUBLISHED: u16 = 1 << 2;
/// A subscriber's first NOTIFY (or a nACK) was older than a publication acknowledged before it
/// subscribed.
pub const STALE_FIRST: u16 = 1 << 3;
/// A conditional publish whose SIP-If-Match was not the current ETag was committed.
pub const STALE_ETAG_COMMITTED: u16 = 1 << 4;
/// Witness: a peer took over as root with replicated state.
pub const FAILOVER: u16 = 1 << 8;
/// Witness: a root received a re-JOIN carrying state.
pub const REJOIN_STATE: u16 = 1 << 9;
/// Witness: a publish was answered 412.
pub const REJECTED_412: u16 = 1 << 10;
/// Witness: a subscribe was answered with a nACK.
pub const NACKED: u16 = 1 << 11;
/// Witness: a subscriber was sent a NOTIFY telling it the publication expired.
pub const EXPIRY_NOTIFIED: u16 = 1 << 12;
/// A subscriber was sent something after it unsubscribed.
pub const AFTER_UNSUBSCRIBE: u16 = 1 << 5;

/// Per-subscriber record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct SubHist {
    /// Highest seq acknowledged to a publisher when this subscriber sent SUBSCRIBE.
    pub acked_before: Seq,
    /// Final response sent: `Some(true)` 200 OK, `Some(false)` rejected (nACK).
    pub result: Option<bool>,
    /// The last NOTIFY sent.
    pub last: Option<Entry>,
    /// The SUBSCRIBE timed out (408) instead of being answered by the root.
    pub timed_out: bool,
    /// The subscriber sent its unsubscribe.
    pub leaving: bool,
    /// Its first-contact peer ended the subscription.
    pub unsubscribed: bool,
}

/// The run's history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct History {
    /// `commits[s - 1]`: the value first committed with seq `s` (`Some(NO_STATE)` for an
    /// expiry, `None`: nothing committed with that seq yet).
    pub commits: Vec<Option<Value>>,
    /// Highest seq a first-contact peer has answered 200 OK for.
    pub acked_max: Seq,
    /// Per subscriber.
    pub subs: Vec<SubHist>,
    /// Violation and witness flags.
    pub flags: u16,
    /// Final responses other than a timeout sent to each publisher.
    pub answered: Vec<u8>,
    /// Messages the network lost so far.
    pub losses: u8,
    /// Publications expired so far.
    pub expiries: u8,
}

impl History {
    /// The empty history for a configuration.
    pub fn new(setup: &Setup) -> Self {
        History {
            subs: vec![SubHist::default(); setup.subscribers.len()],
            answered: vec![0; setup.publishers.len()],
            ..Default::default()
        }
    }

    /// Whether a flag is set.
    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    /// The latest committed (seq, value), if any (the value is [`NO_STATE`] for an expiry).
    pub fn latest(&self) -> Option<(Seq, Value)> {
        self.commits
            .iter()
            .enumerate()
            .rev()
            .find_map(|(i, v)| v.map(|v| (i as Seq + 1, v)))
    }

    fn committed(&self, seq: Seq) -> Option<Value> {
        self.commits
            .get((seq as usize).wrapping_sub(1))
            .copied()
            .flatten()
    }
}

/// Folds a sent message into the history (`record_msg_out`).
pub fn on_send(setup: &Arc<Setup>, h: &History, env: Envelope<&Msg>) -> Option<History> {
    let src = usize::from(env.src);
    let mut n = h.clone();
    match env.msg {
        Msg::Observe(Obs::Commit { entry, if_match }) => {
            if let Some(e) = if_match {
                let valid = *e + 1 == entry.seq && h.committed(*e).is_some_and(|v| v != NO_STATE);
                if !valid {
                    n.flags |= STALE_ETAG_COMMITTED;
                }
            }
            let i = entry.seq as usize - 1;
            if n.commits.len() <= i {
                n.commits.resize(i + 1, None);
            }
            if n.commits[i].is_none() {
                n.commits[i] = Some(entry.value);
            }
        }
        Msg::Observe(Obs::Expired) => n.expiries += 1,
        Msg::Observe(Obs::Takeover { with_replica: true }) => n.flags |= FAILOVER,
        Msg::Observe(Obs::Takeover {
            with_replica: false,
        }) => return None,
        Msg::Observe(Obs::RejoinWithState) => n.flags |= REJOIN_STATE,
        Msg::Subscribe => {
            let i = setup.subscriber_index(src)?;
            n.subs[i].acked_before = h.acked_max;
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
                UaEvent::Rejected(seq) => {
                    s.result = Some(false);
                    n.flags |= NACKED;
                    // A nACK is fresh only when it reflects an expiry newer than every
                    // publication acknowledged before the SUBSCRIBE.
                    if s.acked_before > 0 && *seq <= s.acked_before {
                        n.flags |= STALE_FIRST;
                    }
                }
                UaEvent::TimedOut => s.timed_out = true,
                UaEvent::Notify(e) => {
                    if s.result != Some(true) {
                        n.flags |= NOTIFY_BEFORE_ACK;
                    }
                    match s.last {
                        Some(last) if e.seq <= last.seq => n.flags |= OUT_OF_ORDER,
                        None if e.seq < s.acked_before => n.flags |= STALE_FIRST,
                        _ => {}
                    }
                    s.last = Some(*e);
                    if e.value == NO_STATE {
                        n.flags |= EXPIRY_NOTIFIED;
                    }
                    if h.committed(e.seq) != Some(e.value) {
                        n.flags |= UNPUBLISHED;
                    }
                }
            }
        }
        Msg::PubResponse { ua, result, .. } => {
            n.answered[setup.publisher_index(*ua as usize)?] += 1;
            match result {
                PubResult::PreconditionFailed => n.flags |= REJECTED_412,
                PubResult::Ok { etag, .. } => n.acked_max = n.acked_max.max(*etag),
                PubResult::Timeout => n.answered[setup.publisher_index(*ua as usize)?] -= 1,
            }
        }
        _ => return None,
    }
    (n != *h).then_some(n)
}
