//! One timer structure for every layer of a host: Pastry maintenance, sa-Scribe groups and local
//! requests, SIP transactions and connections.
//!
//! A [`Timers`] is a binary heap of `(deadline, Timer)` entries. Arming is O(log n), finding the
//! next deadline O(1) and firing one timer O(log n): the cost of a poll does not grow with the
//! number of live transactions, dialogs or groups. (sa-Scribe's tree round, one entry, walks
//! every group once per `heartbeat_interval`: see [`Timer::Tree`].)
//!
//! Entries are never removed early. The entity a [`Timer`] names keeps its own authoritative
//! deadline; when an entry fires, its owner checks that deadline and either acts, re-arms for
//! the real (later) deadline, or ignores the entry if the entity is gone. To keep the heap from
//! filling with such stale entries, owners arm through an [`Armed`] slot, which pushes a new
//! entry only when the new deadline is *earlier* than the one already armed: an entity then has
//! at most a few entries in the heap at any time.

use crate::event::SubHandle;
use crate::id::GroupId;
use crate::Millis;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// What a timer entry is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// Pastry maintenance: keep-alives, failure detection, leaf-set exchange, probes of dead
    /// peers, the overlay join's retry.
    Overlay,
    /// sa-Scribe's tree round: the maintenance tick of every group (heartbeats to children,
    /// parent and child timeouts, tree repair, the root's expiry, replication retries and
    /// periodic re-replication).
    Tree,
    /// A new root's fetch of its replicas' records timed out.
    Fetch(GroupId),
    /// A local subscription: JOIN retransmission, give-up, or expiry.
    Subscription(SubHandle),
    /// A local publication request: retransmission or give-up (by request nonce).
    Publication(u64),
    /// A SIP server transaction: 100 Trying, Timer J, abandonment.
    SipServer(u64),
    /// A SIP client (NOTIFY) transaction: Timers E and F.
    SipClient(u64),
    /// A SIP stream connection: idle timeout.
    SipConn(u64),
    /// A dialog offer of a leaving SIP gateway: resend it, then give it up
    /// ([`crate::sip::handover`]).
    SipHandover(u64),
}

/// Which layer a timer belongs to.
impl Timer {
    /// Whether the SIP layer handles this timer.
    pub fn is_sip(&self) -> bool {
        matches!(
            self,
            Timer::SipServer(_) | Timer::SipClient(_) | Timer::SipConn(_) | Timer::SipHandover(_)
        )
    }
}

/// The deadline an entity has armed in a [`Timers`] (`Millis::MAX`: none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Armed(pub Millis);

impl Default for Armed {
    fn default() -> Self {
        Armed(Millis::MAX)
    }
}

impl Armed {
    /// An entry of this entity fired at `now`: returns whether it is the armed one (the slot
    /// is then cleared, and the owner acts and re-arms) rather than an earlier, stale entry
    /// superseded by a later deadline (ignore it: the armed entry comes).
    pub fn take_due(&mut self, now: Millis) -> bool {
        if self.0 <= now {
            self.0 = Millis::MAX;
            true
        } else {
            false
        }
    }
}

/// A heap of timer entries, earliest first; equal deadlines fire in arming order.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Millis, u64, Timer)>>,
    seq: u64,
}

impl Timers {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry for `timer` at `at` unconditionally.
    pub fn push(&mut self, at: Millis, timer: Timer) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, timer)));
    }

    /// Arms `timer` at `at` through `slot`: pushes an entry only if none at or before `at` is
    /// armed already (a later deadline is found when the earlier entry fires).
    pub fn arm(&mut self, at: Millis, timer: Timer, slot: &mut Armed) {
        if at < slot.0 {
            slot.0 = at;
            self.push(at, timer);
        }
    }

    /// The earliest deadline, if any.
    pub fn next(&self) -> Option<Millis> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    pub fn pop_due(&mut self, now: Millis) -> Option<Timer> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e.2),
            _ => None,
        }
    }

    /// Number of entries (stale ones included).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_deadline_then_arming_order() {
        let mut t = Timers::new();
        t.push(30, Timer::Overlay);
        t.push(10, Timer::SipServer(1));
        t.push(10, Timer::SipServer(2));
        assert_eq!(t.next(), Some(10));
        assert_eq!(t.pop_due(9), None);
        assert_eq!(t.pop_due(10), Some(Timer::SipServer(1)));
        assert_eq!(t.pop_due(10), Some(Timer::SipServer(2)));
        assert_eq!(t.pop_due(29), None);
        assert_eq!(t.pop_due(100), Some(Timer::Overlay));
        assert!(t.is_empty());
    }

    #[test]
    fn armed_slot_pushes_only_earlier_deadlines() {
        let mut t = Timers::new();
        let mut slot = Armed::default();
        t.arm(50, Timer::SipClient(7), &mut slot);
        t.arm(80, Timer::SipClient(7), &mut slot);
        assert_eq!(t.len(), 1);
        t.arm(20, Timer::SipClient(7), &mut slot);
        assert_eq!(t.len(), 2);
        assert_eq!(t.pop_due(20), Some(Timer::SipClient(7)));
        assert!(slot.take_due(20));
        t.arm(90, Timer::SipClient(7), &mut slot);
        assert_eq!(t.len(), 2);
        // The superseded entry at 50 fires: stale, ignored; the one at 90 is still armed.
        assert_eq!(t.pop_due(50), Some(Timer::SipClient(7)));
        assert!(!slot.take_due(50));
        assert_eq!(t.pop_due(90), Some(Timer::SipClient(7)));
        assert!(slot.take_due(90));
    }
}
