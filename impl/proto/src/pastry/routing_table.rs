//! The Pastry routing table: row `r`, column `c` holds a peer sharing the first `r` digits with
//! this peer and whose digit `r` is `c`. Only filled slots are stored (sorted), so a peer in a
//! 10^5-peer overlay keeps ~70 entries instead of 32 × 16 slots.

use super::Entry;
use crate::id::{digit, shared_prefix_len, NodeId, DIGITS, RADIX};
use crate::wire::NodeHandle;
use crate::Millis;

/// A filled slot: the entry, and what lazy probing needs to know of it.
#[derive(Clone, Debug)]
struct Slot {
    /// `row * 16 + column`.
    key: u16,
    entry: Entry,
    /// Routing chose this entry as a next hop since it was last heard from.
    used: bool,
    /// When the first probe went unanswered so far (cleared when it is heard from).
    probing_since: Option<Millis>,
}

/// Sparse routing table.
#[derive(Clone, Debug)]
pub struct RoutingTable {
    me: NodeId,
    /// The filled slots, sorted by `row * 16 + column`.
    slots: Vec<Slot>,
    /// Bit `column` of `filled[row]` is set when that slot is filled: the index of a slot in
    /// `slots` is a count of bits (one cache line, where a binary search over `slots` would
    /// touch one line per probe; it runs for every datagram received).
    filled: [u16; DIGITS],
}

impl RoutingTable {
    /// An empty table.
    pub fn new(me: NodeId) -> Self {
        RoutingTable {
            me,
            slots: Vec::new(),
            filled: [0; DIGITS],
        }
    }

    /// The slot `id` belongs to, `None` for this peer's own id.
    pub fn slot_of(&self, id: NodeId) -> Option<(usize, usize)> {
        if id == self.me {
            return None;
        }
        let r = shared_prefix_len(self.me.0, id.0);
        Some((r, digit(id.0, r)))
    }

    fn key(row: usize, col: usize) -> u16 {
        (row * RADIX + col) as u16
    }

    /// Where slot `(row, col)` is in `slots`: `Ok(i)` when filled, else `Err(i)`, where it
    /// would go (as a binary search by key answers).
    fn index(&self, row: usize, col: usize) -> Result<usize, usize> {
        let before: u32 = self.filled[..row].iter().map(|m| m.count_ones()).sum();
        let m = self.filled[row];
        let i = (before + (m & ((1u16 << col) - 1)).count_ones()) as usize;
        if m & (1 << col) != 0 {
            Ok(i)
        } else {
            Err(i)
        }
    }

    /// Entry at `(row, col)`.
    pub fn get(&self, row: usize, col: usize) -> Option<&Entry> {
        if row >= DIGITS || col >= RADIX {
            return None;
        }
        self.index(row, col).ok().map(|i| &self.slots[i].entry)
    }

    /// Puts `h` in its slot when that slot is empty; returns whether it was added. An entry
    /// learnt second-hand (`verified == false`) is checked like a used one until it is heard
    /// from.
    pub fn insert(&mut self, h: NodeHandle, now: Millis) -> bool {
        self.insert_learnt(h, now, true)
    }

    pub(crate) fn insert_learnt(&mut self, h: NodeHandle, now: Millis, verified: bool) -> bool {
        let Some((r, c)) = self.slot_of(h.id) else {
            return false;
        };
        let k = Self::key(r, c);
        match self.index(r, c) {
            Ok(i) => {
                if self.slots[i].entry.handle.id == h.id {
                    self.slots[i].entry.handle.addr = h.addr;
                }
                false
            }
            Err(i) => {
                self.filled[r] |= 1 << c;
                self.slots.insert(
                    i,
                    Slot {
                        key: k,
                        entry: Entry {
                            handle: h,
                            last_heard: now,
                        },
                        used: !verified,
                        probing_since: None,
                    },
                );
                true
            }
        }
    }

    /// Removes `id`; returns the freed slot.
    pub fn remove(&mut self, id: NodeId) -> Option<(usize, usize)> {
        let (r, c) = self.slot_of(id)?;
        let i = self.index(r, c).ok()?;
        if self.slots[i].entry.handle.id != id {
            return None;
        }
        self.slots.remove(i);
        self.filled[r] &= !(1 << c);
        Some((r, c))
    }

    /// Whether `id` is in the table.
    pub fn contains(&self, id: NodeId) -> bool {
        self.slot_of(id)
            .and_then(|(r, c)| self.get(r, c))
            .is_some_and(|e| e.handle.id == id)
    }

    /// Records that `id` was heard from; returns whether its slot is filled (by it or by
    /// another peer, in which case there is nothing to add).
    pub fn touch(&mut self, id: NodeId, now: Millis) -> bool {
        let Some((r, c)) = self.slot_of(id) else {
            return true;
        };
        match self.index(r, c) {
            Ok(i) => {
                let s = &mut self.slots[i];
                if s.entry.handle.id == id {
                    s.entry.last_heard = now;
                    s.used = false;
                    s.probing_since = None;
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Routing chose `id` as a next hop: it is checked (probed when silent for
    /// `table_ping_interval`) until it is heard from.
    pub fn note_used(&mut self, id: NodeId) {
        if let Some((r, c)) = self.slot_of(id) {
            if let Ok(i) = self.index(r, c) {
                if self.slots[i].entry.handle.id == id {
                    self.slots[i].used = true;
                }
            }
        }
    }

    /// The lazy keep-alive of the routing table, run at each maintenance tick for the entries
    /// `skip` does not claim (leaf-set members: the leaf set checks them). With `ping_after`,
    /// `probe_after` and `fail_after` the configuration's `table_ping_interval`,
    /// `table_probe_interval` and `table_fail_timeout`: an entry is pinged when it has been
    /// silent for `ping_after` and routing used it since it was last heard
    /// from, or it is already being probed, or it has been silent for `probe_after` (the rare
    /// check of entries nothing uses). Once probed, it is declared dead when silent for
    /// `fail_after` and its first probe went unanswered for `fail_after - ping_after` — the
    /// probes it would have had if it had been checked all along.
    pub(crate) fn check(
        &mut self,
        now: Millis,
        cfg: &crate::config::Config,
        skip: impl Fn(NodeId) -> bool,
        ping: &mut Vec<NodeHandle>,
        dead: &mut Vec<NodeId>,
    ) {
        let ping_after = cfg.table_ping_interval;
        let probe_after = cfg.table_probe_interval.max(ping_after);
        let fail_after = cfg.table_fail_timeout;
        let grace = fail_after.saturating_sub(ping_after);
        for s in &mut self.slots {
            let id = s.entry.handle.id;
            if skip(id) {
                continue;
            }
            let age = now.saturating_sub(s.entry.last_heard);
            if let Some(p) = s.probing_since {
                if age > fail_after && now.saturating_sub(p) >= grace {
                    dead.push(id);
                    continue;
                }
            }
            if age >= ping_after && (s.used || s.probing_since.is_some() || age >= probe_after) {
                s.probing_since.get_or_insert(now);
                ping.push(s.entry.handle);
            }
        }
    }

    /// Entries of row `row`.
    pub fn row(&self, row: usize) -> impl Iterator<Item = &Entry> + '_ {
        let lo = Self::key(row, 0);
        let hi = lo + RADIX as u16;
        let start = self.slots.partition_point(|s| s.key < lo);
        self.slots[start..]
            .iter()
            .take_while(move |s| s.key < hi)
            .map(|s| &s.entry)
    }

    /// All entries.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.slots.iter().map(|s| &s.entry)
    }

    /// Number of filled slots (the operator's gauge; no routing decision reads it).
    pub fn filled(&self) -> usize {
        self.slots.len()
    }

    /// Number of rows up to the last non-empty one (the unit tests' check of slot keys).
    #[cfg(test)]
    fn depth(&self) -> usize {
        self.slots.last().map_or(0, |s| s.key as usize / RADIX + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn h(i: u128) -> NodeHandle {
        NodeHandle {
            id: NodeId(i),
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
        }
    }

    #[test]
    fn slots_follow_prefix_and_digit() {
        let me = NodeId(0x1234u128 << 112);
        let mut rt = RoutingTable::new(me);
        assert!(rt.insert(h(0x5000u128 << 112), 0)); // row 0, col 5
        assert!(rt.insert(h(0x1300u128 << 112), 0)); // row 1, col 3
        assert!(!rt.insert(h(0x5fffu128 << 112), 0)); // slot taken
        assert!(rt.insert(h(0x1235u128 << 112), 0)); // row 3, col 5
        assert!(!rt.insert(h(me.0), 0));
        assert_eq!(rt.get(0, 5).unwrap().handle.id.0, 0x5000u128 << 112);
        assert_eq!(rt.get(1, 3).unwrap().handle.id.0, 0x1300u128 << 112);
        assert_eq!(rt.get(3, 5).unwrap().handle.id.0, 0x1235u128 << 112);
        assert!(rt.get(2, 0).is_none());
        assert_eq!(rt.row(1).count(), 1);
        assert_eq!(rt.depth(), 4);
        assert_eq!(rt.remove(NodeId(0x5fffu128 << 112)), None);
        assert_eq!(rt.remove(NodeId(0x5000u128 << 112)), Some((0, 5)));
        assert!(rt.insert(h(0x5fffu128 << 112), 0));
        assert!(rt.contains(NodeId(0x5fffu128 << 112)));
        assert_eq!(rt.filled(), 3);
    }
}
