//! Replay protection for authenticated datagrams: the receiver's side of [`Stamp`].
//!
//! A datagram is accepted once, by the peer it was addressed to, within [`MAX_CLOCK_SKEW`] of
//! the receiver's clock. The guard remembers the `(time, seq)` of every datagram it accepted
//! from each sender while that datagram is still inside the window; what falls out of the window
//! is forgotten, since the window check refuses it anyway.
//!
//! Memory is bounded: at most [`SEEN_PER_SENDER`] entries per sender and [`MAX_SENDERS`]
//! senders. A sender's overflow forgets its oldest entry and raises that sender's floor to it:
//! everything of that sender at or below the floor is refused as [`WireError::Stale`] (so a
//! legitimate datagram overtaken by more than [`SEEN_PER_SENDER`] later ones is dropped, never a
//! replay accepted). Senders are counted in the sender's own clock, so skew between peers does
//! not matter beyond the window. Only when more than [`MAX_SENDERS`] senders were heard within
//! the window is the least recently heard one forgotten entirely (counted in
//! [`ReplayGuard::senders_evicted`]); its datagrams of the last window could then be replayed to
//! this peer once.

use super::{Dest, NodeHandle, Stamp, WireError};
use crate::id::NodeId;
use crate::Millis;
use std::collections::{BTreeSet, HashMap};

/// How far a datagram's time may be from the receiver's clock, either way: 30 s. Peers' clocks
/// must agree within this (NTP does far better); a datagram older than this is refused.
pub const MAX_CLOCK_SKEW: Millis = 30_000;
/// Datagrams remembered per sender within the window.
pub const SEEN_PER_SENDER: usize = 1024;
/// Senders remembered at once.
pub const MAX_SENDERS: usize = 1024;

/// What one sender's accepted datagrams left behind.
#[derive(Clone, Debug, Default)]
struct Seen {
    /// `(time, seq)` of datagrams accepted within the window, oldest first.
    recent: BTreeSet<(u64, u64)>,
    /// Everything at or below this was forgotten on overflow and is refused.
    floor: Option<(u64, u64)>,
    /// Receiver time this sender was last heard (for eviction).
    last_heard: u64,
}

/// The receiver's memory of authenticated datagrams.
#[derive(Clone, Debug, Default)]
pub struct ReplayGuard {
    senders: HashMap<NodeId, Seen>,
    evicted: u64,
}

impl ReplayGuard {
    /// An empty guard.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the stamp of a datagram that `from` sent to `me` against the receiver's clock
    /// `now` (Unix milliseconds) and remembers it. `Ok` means: addressed to `me`, within the
    /// window, never seen before.
    pub fn check(
        &mut self,
        now: u64,
        me: &NodeHandle,
        from: NodeId,
        stamp: &Stamp,
    ) -> Result<(), WireError> {
        let addressed = match stamp.dst {
            Dest::Peer(id) => id == me.id,
            Dest::Addr(a) => a == me.addr,
        };
        if !addressed {
            return Err(WireError::WrongDestination);
        }
        if stamp.time.abs_diff(now) > MAX_CLOCK_SKEW {
            return Err(WireError::Stale);
        }
        let key = (stamp.time, stamp.seq);
        if !self.senders.contains_key(&from) && self.senders.len() >= MAX_SENDERS {
            self.make_room(now);
        }
        let seen = self.senders.entry(from).or_default();
        seen.last_heard = now;
        // Entries that left the window: the window check refuses their replays.
        let oldest = now.saturating_sub(MAX_CLOCK_SKEW);
        while seen.recent.first().is_some_and(|&(t, _)| t < oldest) {
            seen.recent.pop_first();
        }
        if seen.floor.is_some_and(|f| key <= f) {
            return Err(WireError::Stale);
        }
        if !seen.recent.insert(key) {
            return Err(WireError::Replayed);
        }
        if seen.recent.len() > SEEN_PER_SENDER {
            seen.floor = seen.recent.pop_first();
        }
        Ok(())
    }

    /// Senders forgotten because more than [`MAX_SENDERS`] were heard within the window.
    pub fn senders_evicted(&self) -> u64 {
        self.evicted
    }

    /// Senders currently remembered.
    pub fn senders(&self) -> usize {
        self.senders.len()
    }

    /// Drops senders with nothing left in the window; if none, the least recently heard one.
    fn make_room(&mut self, now: u64) {
        let oldest = now.saturating_sub(MAX_CLOCK_SKEW);
        self.senders.retain(|_, s| {
            s.last_heard >= oldest && s.recent.last().is_some_and(|&(t, _)| t >= oldest)
        });
        if self.senders.len() >= MAX_SENDERS {
            if let Some(id) = self
                .senders
                .iter()
                .min_by_key(|(id, s)| (s.last_heard, **id))
                .map(|(id, _)| *id)
            {
                self.senders.remove(&id);
                self.evicted += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn me() -> NodeHandle {
        NodeHandle {
            id: NodeId(7),
            addr: SocketAddr::from(([10, 0, 0, 7], 7000)),
        }
    }

    fn to_me(time: u64, seq: u64) -> Stamp {
        Stamp {
            dst: Dest::Peer(NodeId(7)),
            time,
            seq,
        }
    }

    const T0: u64 = 1_800_000_000_000;

    #[test]
    fn accepts_once_then_refuses_the_replay() {
        let mut g = ReplayGuard::new();
        let s = to_me(T0, 1);
        assert_eq!(g.check(T0 + 5, &me(), NodeId(1), &s), Ok(()));
        assert_eq!(
            g.check(T0 + 9, &me(), NodeId(1), &s),
            Err(WireError::Replayed)
        );
        // The same stamp from another sender is another datagram.
        assert_eq!(g.check(T0 + 9, &me(), NodeId(2), &s), Ok(()));
        // Out of order within the window is fine.
        assert_eq!(g.check(T0 + 9, &me(), NodeId(1), &to_me(T0 - 3, 0)), Ok(()));
    }

    #[test]
    fn destination_is_checked() {
        let mut g = ReplayGuard::new();
        let other = Stamp {
            dst: Dest::Peer(NodeId(8)),
            ..to_me(T0, 1)
        };
        assert_eq!(
            g.check(T0, &me(), NodeId(1), &other),
            Err(WireError::WrongDestination)
        );
        let by_addr = Stamp {
            dst: Dest::Addr(me().addr),
            ..to_me(T0, 2)
        };
        assert_eq!(g.check(T0, &me(), NodeId(1), &by_addr), Ok(()));
        let other_addr = Stamp {
            dst: Dest::Addr(SocketAddr::from(([10, 0, 0, 8], 7000))),
            ..to_me(T0, 3)
        };
        assert_eq!(
            g.check(T0, &me(), NodeId(1), &other_addr),
            Err(WireError::WrongDestination)
        );
    }

    #[test]
    fn window_is_the_clock_skew_either_way() {
        let mut g = ReplayGuard::new();
        let now = T0;
        for (time, ok) in [
            (now - MAX_CLOCK_SKEW, true),
            (now + MAX_CLOCK_SKEW, true),
            (now - MAX_CLOCK_SKEW - 1, false),
            (now + MAX_CLOCK_SKEW + 1, false),
        ] {
            let r = g.check(now, &me(), NodeId(1), &to_me(time, 1));
            assert_eq!(r.is_ok(), ok, "time {time}: {r:?}");
            if !ok {
                assert_eq!(r, Err(WireError::Stale));
            }
        }
        // A datagram accepted once is refused later as stale, whether or not it is remembered.
        let s = to_me(now, 2);
        assert_eq!(g.check(now, &me(), NodeId(1), &s), Ok(()));
        assert_eq!(
            g.check(now + MAX_CLOCK_SKEW + 1, &me(), NodeId(1), &s),
            Err(WireError::Stale)
        );
    }

    #[test]
    fn memory_is_bounded_and_overflow_refuses_rather_than_forgets() {
        let mut g = ReplayGuard::new();
        let n = SEEN_PER_SENDER as u64 + 10;
        for seq in 0..n {
            assert_eq!(g.check(T0, &me(), NodeId(1), &to_me(T0, seq)), Ok(()));
        }
        assert_eq!(g.senders[&NodeId(1)].recent.len(), SEEN_PER_SENDER);
        // Every replay is refused: recent ones as replays, forgotten ones as stale.
        for seq in 0..n {
            let r = g.check(T0, &me(), NodeId(1), &to_me(T0, seq));
            let want = if seq < 10 {
                WireError::Stale
            } else {
                WireError::Replayed
            };
            assert_eq!(r, Err(want), "seq {seq}");
        }
        // Senders are bounded too; the least recently heard goes first.
        for i in 0..MAX_SENDERS as u128 + 5 {
            let now = T0 + i as u64;
            assert_eq!(g.check(now, &me(), NodeId(100 + i), &to_me(now, 0)), Ok(()));
        }
        assert_eq!(g.senders(), MAX_SENDERS);
        assert_eq!(g.senders_evicted(), 6);
        assert!(!g.senders.contains_key(&NodeId(1)));
    }

    #[test]
    fn senders_out_of_the_window_are_dropped_first() {
        let mut g = ReplayGuard::new();
        for i in 0..MAX_SENDERS as u128 {
            assert_eq!(g.check(T0, &me(), NodeId(i), &to_me(T0, 0)), Ok(()));
        }
        let later = T0 + MAX_CLOCK_SKEW + 1;
        assert_eq!(
            g.check(later, &me(), NodeId(9999), &to_me(later, 0)),
            Ok(())
        );
        assert_eq!(g.senders(), 1);
        assert_eq!(g.senders_evicted(), 0);
    }
}
