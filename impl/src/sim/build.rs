//! Growing a simulated overlay: static overlays computed from the sorted id list, peers that
//! join through another, restarts.

use super::Sim;
use crate::id::{digit, NodeId, DIGITS, DIGIT_BITS, RADIX};
use crate::{Call, Input, NodeHandle};
use rand::Rng;
use std::collections::HashSet;

impl Sim {
    /// Adds `n` peers with random ids whose routing state is computed directly from the sorted
    /// id list (no join traffic). Returns their indices.
    pub fn add_static_peers(&mut self, n: usize) -> Vec<usize> {
        let mut taken: HashSet<u128> = self.nodes.iter().map(|n| n.id.0).collect();
        let first = self.nodes.len();
        for _ in 0..n {
            let id = self.fresh_id(&taken);
            taken.insert(id.0);
            let h = self.new_host(id, self.nodes.len());
            self.push_node_unindexed(id, h);
        }
        self.by_id = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.0, i))
            .collect();
        self.by_id.sort_unstable();
        let mut sorted: Vec<(u128, usize)> = self.live().map(|i| (self.nodes[i].id.0, i)).collect();
        sorted.sort_unstable();
        let half = (self.cfg.leaf_set_size / 2).max(1);
        let total = sorted.len();
        let mut known = Vec::new();
        for p in 0..total {
            let (me, idx) = sorted[p];
            if idx < first {
                continue;
            }
            known.clear();
            for d in 1..=half.min(total - 1) {
                known.push(sorted[(p + d) % total].1);
                known.push(sorted[(p + total - d) % total].1);
            }
            for r in 0..DIGITS {
                let shift = 128 - DIGIT_BITS as usize * (r + 1);
                let prefix = if r == 0 {
                    0
                } else {
                    me >> (128 - DIGIT_BITS as usize * r) << (128 - DIGIT_BITS as usize * r)
                };
                for c in 0..RADIX {
                    if c == digit(me, r) {
                        continue;
                    }
                    let lo = prefix | ((c as u128) << shift);
                    let hi = lo | ((1u128 << shift) - 1);
                    let a = sorted.partition_point(|s| s.0 < lo);
                    let b = sorted.partition_point(|s| s.0 <= hi);
                    if a < b {
                        known.push(sorted[self.rng.random_range(a..b)].1);
                    }
                }
                // Stop once no other peer shares r+1 digits with this one.
                let lo = me >> shift << shift;
                let hi = lo | ((1u128 << shift) - 1);
                let a = sorted.partition_point(|s| s.0 < lo);
                let b = sorted.partition_point(|s| s.0 <= hi);
                if b - a <= 1 {
                    break;
                }
            }
            let handles: Vec<NodeHandle> = known
                .iter()
                .map(|&j| NodeHandle {
                    id: self.nodes[j].id,
                    addr: self.nodes[j].addr,
                })
                .collect();
            let now = self.now;
            if let Some(host) = self.nodes[idx].host.as_mut() {
                let _ = host.handle_input(now, Input::Call(Call::InstallRoutingState(handles)));
            }
        }
        for i in first..self.nodes.len() {
            self.flush(i);
        }
        (first..self.nodes.len()).collect()
    }

    /// Adds the first peer of an overlay (alone, ready).
    pub fn add_first_peer(&mut self) -> usize {
        let taken: HashSet<u128> = self.nodes.iter().map(|n| n.id.0).collect();
        let id = self.fresh_id(&taken);
        let h = self.new_host(id, self.nodes.len());
        let i = self.push_node(id, h);
        self.flush(i);
        i
    }

    /// Adds a peer (random id unless given) that joins through peer `via`.
    pub fn add_joining_peer(&mut self, id: Option<NodeId>, via: usize) -> usize {
        let taken: HashSet<u128> = self.nodes.iter().map(|n| n.id.0).collect();
        let id = id.unwrap_or_else(|| self.fresh_id(&taken));
        let mut h = self.new_host(id, self.nodes.len());
        let _ = h.handle_input(self.now, Input::Call(Call::Bootstrap(self.nodes[via].addr)));
        let i = self.push_node(id, h);
        self.flush(i);
        i
    }

    /// Restarts crashed peer `i` with empty state and the same id and address; it rejoins the
    /// overlay through peer `via`.
    pub fn restart(&mut self, i: usize, via: usize) {
        assert!(self.nodes[i].host.is_none(), "restart of a live peer");
        let mut h = self.new_host(self.nodes[i].id, i);
        let _ = h.handle_input(self.now, Input::Call(Call::Bootstrap(self.nodes[via].addr)));
        self.nodes[i].host = Some(Box::new(h));
        self.flush(i);
    }
}
