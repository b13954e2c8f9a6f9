//! The overlay of the paper's Fig. 3: 10-bit ids, Pastry-style routing.
//!
//! Ids live on a ring of `2^10 = 1024` keys. Digits are base 4 (Pastry's `b = 2`), so an id has
//! five digits and a routing table five rows of four columns. Routing a key from a peer follows
//! Pastry's rule:
//!
//! 1. if the key falls within the arc covered by the peer's leaf set (the `leaf_half` nearest live
//!    peers on each side, as the peer knows liveness), deliver to the numerically closest member of
//!    the leaf set (possibly the peer itself);
//! 2. otherwise forward to the routing-table entry that shares one more digit with the key;
//! 3. otherwise (the entry is missing or known dead) forward to any known live peer that shares at
//!    least as long a prefix and is numerically closer than the peer itself ("rare case").
//!
//! **Abstraction.** Leaf-set repair is instantaneous: once a peer has detected a crash, its leaf
//! set is recomputed from the static membership minus the peers it knows dead. Routing-table
//! entries are static; a dead entry falls back to rule 3, which stands for table repair. The
//! membership is the configuration's peers; one that has not joined yet, or has crashed, is
//! one its neighbours know dead. Pastry's own join protocol is not modelled (a peer that
//! joins or restarts knows the membership at once), because sa-Scribe's properties concern
//! groups over an overlay; the production core implements Pastry joins.

use serde::Serialize;

/// Size of the id space (10-bit ids, as in the paper's Fig. 3).
pub const RING: u16 = 1024;
/// Digits per id (base 4, five digits for ten bits).
pub const DIGITS: usize = 5;

/// Index of a peer in [`Topology::ids`] (and its actor index in the model).
pub type PeerIx = u8;

/// A bitmask of peers (bit `i` is peer `i`); at most 8 peers.
pub type PeerSet = u8;

/// The eight peers A–H of Fig. 3, each owning an equal 128-key arc: D = 448 owns `[384, 511]`.
pub const FIG3_IDS: [u16; 8] = [64, 192, 320, 448, 576, 704, 832, 960];

/// Returns the peer name used in Fig. 3 for a Fig. 3 id, or `P<id>`.
pub fn peer_name(id: u16) -> String {
    match FIG3_IDS.iter().position(|&x| x == id) {
        Some(i) => ((b'A' + i as u8) as char).to_string(),
        None => format!("P{id}"),
    }
}

/// Circular distance between two keys.
pub fn distance(a: u16, b: u16) -> u16 {
    let d = a.abs_diff(b) % RING;
    d.min(RING - d)
}

/// Base-4 digit `i` (0 = most significant) of a 10-bit key.
pub fn digit(key: u16, i: usize) -> u8 {
    ((key >> (2 * (DIGITS - 1 - i))) & 3) as u8
}

/// Length of the shared base-4 prefix of two keys.
pub fn shared_prefix(a: u16, b: u16) -> usize {
    (0..DIGITS)
        .take_while(|&i| digit(a, i) == digit(b, i))
        .count()
}

/// Static overlay: ids, routing tables and leaf-set size.
#[derive(Clone, Debug, Serialize)]
pub struct Topology {
    /// Peer ids, indexed by [`PeerIx`]; distinct, 10-bit.
    pub ids: Vec<u16>,
    /// Leaf-set half size (`L/2`): live peers kept on each side.
    pub leaf_half: usize,
    /// `table[p][row][col]`: a peer sharing `row` digits with `p` whose next digit is `col`.
    pub table: Vec<[[Option<PeerIx>; 4]; DIGITS]>,
}

impl Topology {
    /// Builds the overlay. Each routing-table slot holds the numerically smallest peer with the
    /// required prefix, which reproduces Fig. 3's example (A routes key 500 through C to D).
    pub fn new(ids: Vec<u16>, leaf_half: usize) -> Result<Self, String> {
        if ids.is_empty() || ids.len() > 8 {
            return Err(format!("the model needs 1 to 8 peers, got {}", ids.len()));
        }
        if let Some(bad) = ids.iter().find(|&&i| i >= RING) {
            return Err(format!("peer id {bad} is not a 10-bit id (0..1023)"));
        }
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != ids.len() {
            return Err("peer ids must be distinct".into());
        }
        if leaf_half == 0 {
            return Err("the leaf set needs at least one peer on each side".into());
        }
        let mut table = vec![[[None; 4]; DIGITS]; ids.len()];
        for (p, &pid) in ids.iter().enumerate() {
            for (row, slots) in table[p].iter_mut().enumerate() {
                for (col, slot) in slots.iter_mut().enumerate() {
                    if digit(pid, row) as usize == col {
                        continue;
                    }
                    *slot = ids
                        .iter()
                        .enumerate()
                        .filter(|(_, &q)| {
                            shared_prefix(pid, q) == row && digit(q, row) as usize == col
                        })
                        .min_by_key(|(_, &q)| q)
                        .map(|(i, _)| i as PeerIx);
                }
            }
        }
        Ok(Topology {
            ids,
            leaf_half,
            table,
        })
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the overlay is empty (never, once built).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Display name of a peer.
    pub fn name(&self, p: PeerIx) -> String {
        peer_name(self.ids[p as usize])
    }

    /// The live leaf set of `p` (excluding `p`) given the peers `p` knows dead, and whether
    /// `key` lies on the arc it spans (from the farthest predecessor to the farthest successor).
    fn leaf_set(&self, p: PeerIx, key: u16, dead: PeerSet) -> (PeerSet, bool) {
        let pid = self.ids[p as usize];
        let mut live: Vec<(u16, PeerIx)> = (0..self.len() as PeerIx)
            .filter(|&q| q != p && dead & (1 << q) == 0)
            .map(|q| ((self.ids[q as usize] + RING - pid) % RING, q))
            .collect();
        live.sort_unstable();
        if live.len() < 2 * self.leaf_half {
            let set = live.iter().fold(0, |s, &(_, q)| s | (1 << q));
            return (set, true); // a leaf set that is not full holds every live peer
        }
        let succ = &live[..self.leaf_half];
        let pred = &live[live.len() - self.leaf_half..];
        let set = succ.iter().chain(pred).fold(0, |s, &(_, q)| s | (1 << q));
        let cw = succ.last().map_or(0, |&(o, _)| o);
        let ccw = pred.first().map_or(RING, |&(o, _)| o);
        let k = (key + RING - pid) % RING;
        (set, k <= cw || k >= ccw)
    }

    /// Names of `p`'s leaf set when every peer is alive.
    pub fn leaf_names(&self, p: PeerIx) -> Vec<String> {
        let (set, _) = self.leaf_set(p, 0, 0);
        (0..self.len() as PeerIx)
            .filter(|&q| set & (1 << q) != 0)
            .map(|q| self.name(q))
            .collect()
    }

    /// The live peer numerically closest to `key` among `set` (ties: smaller id).
    fn closest_in(&self, key: u16, set: PeerSet) -> Option<PeerIx> {
        (0..self.len() as PeerIx)
            .filter(|&q| set & (1 << q) != 0)
            .min_by_key(|&q| (distance(self.ids[q as usize], key), self.ids[q as usize]))
    }

    /// Next hop from `p` toward `key`, knowing the peers in `dead` have crashed; `p` itself means
    /// "deliver here" (`p` is the key's root as far as it knows).
    pub fn next_hop(&self, p: PeerIx, key: u16, dead: PeerSet) -> PeerIx {
        let (leaf, in_range) = self.leaf_set(p, key, dead);
        if in_range {
            return self.closest_in(key, leaf | (1 << p)).unwrap_or(p);
        }
        let pid = self.ids[p as usize];
        let row = shared_prefix(pid, key);
        if row < DIGITS {
            if let Some(q) = self.table[p as usize][row][digit(key, row) as usize] {
                if dead & (1 << q) == 0 {
                    return q;
                }
            }
        }
        // rare case: any known live peer with as long a prefix that is closer than p
        let mut known = leaf;
        for slots in &self.table[p as usize] {
            for q in slots.iter().flatten() {
                known |= 1 << q;
            }
        }
        known &= !dead;
        let mine = distance(pid, key);
        (0..self.len() as PeerIx)
            .filter(|&q| known & (1 << q) != 0)
            .filter(|&q| {
                let qid = self.ids[q as usize];
                shared_prefix(qid, key) >= row && distance(qid, key) < mine
            })
            .min_by_key(|&q| (distance(self.ids[q as usize], key), self.ids[q as usize]))
            .unwrap_or(p)
    }

    /// The live peer numerically closest to `key` (ground truth, used by properties and tests).
    pub fn closest_live(&self, key: u16, dead: PeerSet) -> Option<PeerIx> {
        let all: PeerSet = ((1u16 << self.len()) - 1) as PeerSet;
        self.closest_in(key, all & !dead)
    }

    /// How many of the peers in `dead` are closer to `key` than `p` (the roots that may have
    /// served the group before `p`: a new root's epoch floor).
    pub fn closer_dead(&self, p: PeerIx, key: u16, dead: PeerSet) -> u8 {
        let rank = |q: usize| (distance(self.ids[q], key), self.ids[q]);
        (0..self.len())
            .filter(|&q| dead & (1 << q) != 0 && rank(q) < rank(p as usize))
            .count() as u8
    }

    /// Whether replica `q`, knowing the peers in `dead` crashed, refuses a REPLICATE from
    /// `from`: some peer it knows (itself or a live leaf-set member other than `from`) is
    /// closer to `key` than `from` (production's NotRoot rule; ties go to the smaller id).
    pub fn refuses(&self, q: PeerIx, from: PeerIx, key: u16, dead: PeerSet) -> bool {
        self.closer_than(q, from, key, dead).is_some()
    }

    /// The peer `q` knows (itself or a live leaf-set member other than `from`) closest to
    /// `key`, if it is closer than `from`: the one a `NotRoot` names.
    pub fn closer_than(&self, q: PeerIx, from: PeerIx, key: u16, dead: PeerSet) -> Option<PeerIx> {
        let (leaf, _) = self.leaf_set(q, key, dead);
        let cands = (leaf | (1 << q)) & !(1 << from);
        let rank = |p: PeerIx| (distance(self.ids[p as usize], key), self.ids[p as usize]);
        self.closest_in(key, cands)
            .filter(|&best| rank(best) < rank(from))
    }

    /// The replica set of `root`: the `k` members of its live leaf set (as `root` knows
    /// liveness) closest to `key`, as Scribe replicates to the root's nearest leaf-set peers.
    pub fn replicas(&self, root: PeerIx, key: u16, k: usize, dead: PeerSet) -> PeerSet {
        let (leaf, _) = self.leaf_set(root, key, dead);
        let mut cands: Vec<PeerIx> = (0..self.len() as PeerIx)
            .filter(|&q| leaf & (1 << q) != 0)
            .collect();
        cands
            .sort_unstable_by_key(|&q| (distance(self.ids[q as usize], key), self.ids[q as usize]));
        cands.iter().take(k).fold(0, |s, &q| s | (1 << q))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fig3() -> Topology {
        Topology::new(FIG3_IDS.to_vec(), 1).unwrap()
    }

    #[test]
    fn fig3_route_500_from_a_goes_through_c_to_d() {
        let t = fig3();
        let (a, b, c, d, e) = (0, 1, 2, 3, 4);
        assert_eq!(t.next_hop(a, 500, 0), c);
        assert_eq!(t.next_hop(b, 500, 0), c);
        assert_eq!(t.next_hop(c, 500, 0), d);
        assert_eq!(t.next_hop(d, 500, 0), d);
        assert_eq!(t.next_hop(e, 500, 0), d, "E knows D from its leaf set");
    }

    #[test]
    fn every_key_reaches_the_closest_live_peer() {
        let t = fig3();
        for dead in [0u8, 0b1000, 0b1100, 0b1000_0001] {
            for key in 0..RING {
                let want = t.closest_live(key, dead).unwrap();
                for start in (0..8).filter(|q| dead & (1 << q) == 0) {
                    let mut at = start;
                    let mut hops = 0;
                    loop {
                        let next = t.next_hop(at, key, dead);
                        if next == at {
                            break;
                        }
                        at = next;
                        hops += 1;
                        assert!(hops <= 8, "routing loop for key {key} from {start}");
                    }
                    assert_eq!(at, want, "key {key} from {start} dead {dead:b}");
                }
            }
        }
    }

    #[test]
    fn bad_topologies_are_rejected() {
        assert!(Topology::new(vec![], 1).is_err());
        assert!(Topology::new(vec![1, 1], 1).is_err());
        assert!(Topology::new(vec![2000], 1).is_err());
        assert!(Topology::new(vec![1, 2], 0).is_err());
    }
}
