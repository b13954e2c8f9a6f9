//! The Pastry leaf set: the `L/2` numerically closest peers on each side of this peer.

use super::Entry;
use crate::id::{closer, NodeId};
use crate::wire::NodeHandle;
use crate::Millis;

/// Leaf set of one peer. `cw` holds successors sorted by clockwise distance, `ccw` predecessors
/// sorted by counter-clockwise distance; on a small ring a peer can be in both halves.
#[derive(Clone, Debug)]
pub struct LeafSet {
    me: NodeId,
    half: usize,
    cw: Vec<Entry>,
    ccw: Vec<Entry>,
}

impl LeafSet {
    /// An empty leaf set of total size `size` (`size/2` per side, at least 1).
    pub fn new(me: NodeId, size: usize) -> Self {
        let half = (size / 2).max(1);
        LeafSet {
            me,
            half,
            cw: Vec::with_capacity(half + 1),
            ccw: Vec::with_capacity(half + 1),
        }
    }

    fn cw_dist(&self, id: NodeId) -> u128 {
        id.0.wrapping_sub(self.me.0)
    }
    fn ccw_dist(&self, id: NodeId) -> u128 {
        self.me.0.wrapping_sub(id.0)
    }

    /// Inserts `h` if it belongs; returns whether the membership changed.
    pub fn insert(&mut self, h: NodeHandle, now: Millis) -> bool {
        if h.id == self.me {
            return false;
        }
        let half = self.half;
        let dc = self.cw_dist(h.id);
        let dcc = self.ccw_dist(h.id);
        let a = insert_side(
            &mut self.cw,
            half,
            h,
            now,
            |e| e.handle.id.0.wrapping_sub(self.me.0),
            dc,
        );
        let me = self.me.0;
        let b = insert_side(
            &mut self.ccw,
            half,
            h,
            now,
            |e| me.wrapping_sub(e.handle.id.0),
            dcc,
        );
        a || b
    }

    /// Removes `id`; returns whether it was a member.
    pub fn remove(&mut self, id: NodeId) -> bool {
        let before = self.cw.len() + self.ccw.len();
        self.cw.retain(|e| e.handle.id != id);
        self.ccw.retain(|e| e.handle.id != id);
        before != self.cw.len() + self.ccw.len()
    }

    /// Whether `id` is a member.
    pub fn contains(&self, id: NodeId) -> bool {
        self.cw.iter().chain(&self.ccw).any(|e| e.handle.id == id)
    }

    /// Records that `id` was heard from at `now`; returns whether it is a member.
    ///
    /// Each side is sorted by distance, so this is a binary search per side (it runs for
    /// every datagram received: touching a few cache lines, not the whole set, matters).
    pub fn touch(&mut self, id: NodeId, now: Millis) -> bool {
        let me = self.me.0;
        let dc = id.0.wrapping_sub(me);
        let dcc = me.wrapping_sub(id.0);
        let mut found = false;
        if let Ok(i) = self
            .cw
            .binary_search_by_key(&dc, |e| e.handle.id.0.wrapping_sub(me))
        {
            self.cw[i].last_heard = now;
            found = true;
        }
        if let Ok(i) = self
            .ccw
            .binary_search_by_key(&dcc, |e| me.wrapping_sub(e.handle.id.0))
        {
            self.ccw[i].last_heard = now;
            found = true;
        }
        found
    }

    /// Whether [`LeafSet::insert`] of `id` (not a member) would add it.
    pub fn would_insert(&self, id: NodeId) -> bool {
        if id == self.me {
            return false;
        }
        let fits = |side: &Vec<Entry>, d: u128, dist: &dyn Fn(&Entry) -> u128| {
            side.len() < self.half || side.last().is_some_and(|e| d < dist(e))
        };
        let me = self.me.0;
        fits(&self.cw, self.cw_dist(id), &|e| {
            e.handle.id.0.wrapping_sub(me)
        }) || fits(&self.ccw, self.ccw_dist(id), &|e| {
            me.wrapping_sub(e.handle.id.0)
        })
    }

    /// Whether the leaf set spans `key` (so the closest leaf is the key's root). When a side is
    /// not full the leaf set holds the whole ring and covers everything.
    pub fn covers(&self, key: u128) -> bool {
        if self.cw.len() < self.half || self.ccw.len() < self.half {
            return true;
        }
        let far_cw = self.cw.last().map_or(0, |e| self.cw_dist(e.handle.id));
        let far_ccw = self.ccw.last().map_or(0, |e| self.ccw_dist(e.handle.id));
        key.wrapping_sub(self.me.0) <= far_cw || self.me.0.wrapping_sub(key) <= far_ccw
    }

    /// The member (or `None` for this peer itself) closest to `key`, skipping `exclude`.
    pub fn closest(&self, key: u128, exclude: Option<NodeId>) -> Option<NodeHandle> {
        let mut best: Option<NodeHandle> = None;
        let mut best_id = self.me.0;
        for e in self.cw.iter().chain(&self.ccw) {
            if Some(e.handle.id) == exclude {
                continue;
            }
            if closer(key, e.handle.id.0, best_id) {
                best_id = e.handle.id.0;
                best = Some(e.handle);
            }
        }
        best
    }

    /// Members (a peer in both halves appears once).
    pub fn iter(&self) -> impl Iterator<Item = &Entry> + '_ {
        let cw = &self.cw;
        cw.iter().chain(
            self.ccw
                .iter()
                .filter(move |e| !cw.iter().any(|c| c.handle.id == e.handle.id)),
        )
    }

    /// Number of distinct members.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether the leaf set is empty.
    pub fn is_empty(&self) -> bool {
        self.cw.is_empty() && self.ccw.is_empty()
    }

    /// The farthest member on each side (used for leaf-set repair).
    pub fn extremes(&self) -> (Option<NodeHandle>, Option<NodeHandle>) {
        (
            self.cw.last().map(|e| e.handle),
            self.ccw.last().map(|e| e.handle),
        )
    }

    /// Successors, nearest first (the unit tests' view of one side).
    #[cfg(test)]
    fn successors(&self) -> impl Iterator<Item = NodeHandle> + '_ {
        self.cw.iter().map(|e| e.handle)
    }

    /// Predecessors, nearest first (the unit tests' view of the other side).
    #[cfg(test)]
    fn predecessors(&self) -> impl Iterator<Item = NodeHandle> + '_ {
        self.ccw.iter().map(|e| e.handle)
    }

    /// The `k` members closest to `key` (closest first), written into `out`.
    pub fn nearest_to(&self, key: u128, k: usize, out: &mut Vec<NodeHandle>) {
        out.clear();
        out.extend(self.iter().map(|e| e.handle));
        out.sort_by_key(|h| (crate::id::ring_distance(h.id.0, key), h.id.0));
        out.truncate(k);
    }
}

fn insert_side(
    side: &mut Vec<Entry>,
    half: usize,
    h: NodeHandle,
    now: Millis,
    dist: impl Fn(&Entry) -> u128,
    d: u128,
) -> bool {
    if let Some(e) = side.iter_mut().find(|e| e.handle.id == h.id) {
        e.handle.addr = h.addr;
        return false;
    }
    let pos = side.partition_point(|e| dist(e) < d);
    if pos >= half {
        return false;
    }
    side.insert(
        pos,
        Entry {
            handle: h,
            last_heard: now,
        },
    );
    side.truncate(half);
    true
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
    fn keeps_closest_per_side() {
        let mut ls = LeafSet::new(NodeId(1000), 4);
        for i in [990u128, 995, 999, 1001, 1010, 1020, 500, 2000] {
            ls.insert(h(i), 0);
        }
        let s: Vec<u128> = ls.successors().map(|h| h.id.0).collect();
        let p: Vec<u128> = ls.predecessors().map(|h| h.id.0).collect();
        assert_eq!(s, vec![1001, 1010]);
        assert_eq!(p, vec![999, 995]);
        assert!(ls.covers(1005));
        assert!(ls.covers(996));
        assert!(!ls.covers(1500));
        assert_eq!(ls.closest(1008, None).unwrap().id.0, 1010);
        assert_eq!(ls.closest(1000, None), None);
        assert_eq!(ls.closest(1008, Some(NodeId(1010))).unwrap().id.0, 1001);
        assert!(ls.remove(NodeId(1001)));
        assert!(!ls.contains(NodeId(1001)));
        assert_eq!(ls.len(), 3);
    }

    #[test]
    fn small_ring_covers_everything_and_wraps() {
        let mut ls = LeafSet::new(NodeId(5), 16);
        ls.insert(h(u128::MAX - 2), 0);
        ls.insert(h(1u128 << 100), 0);
        assert!(ls.covers(1u128 << 126));
        assert_eq!(ls.len(), 2);
        assert_eq!(ls.closest(u128::MAX, None).unwrap().id.0, u128::MAX - 2);
        let mut v = Vec::new();
        ls.nearest_to(0, 1, &mut v);
        assert_eq!(v[0].id.0, u128::MAX - 2);
    }
}
