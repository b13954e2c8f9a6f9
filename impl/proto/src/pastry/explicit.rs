//! Routing tables given explicitly by a driver (the conformance harness; feature `harness`).

use super::{Hop, Overlay};
use crate::id::{closer, NodeId};
use crate::wire::NodeHandle;

/// A routing table given explicitly by a driver, in digits of `digit_bits` bits (counted from
/// the most significant bit) instead of the core's hexadecimal digits: row `r`, column `c`
/// holds a peer sharing `r` such digits with this peer whose digit `r` is `c`. The conformance
/// harness loads the model's base-4 tables (the paper's Fig. 3) with it, so that JOINs and
/// PUBLISHes take the model's hops. While it is set it replaces the learnt routing table in
/// routing decisions (rules 2 and 3); the leaf set works as usual. Peers declared dead are
/// removed from it, and put back in their slots when taken back (the model routes by its fixed
/// table without the peers it knows dead).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExplicitTable {
    /// Bits per digit (1..=8).
    pub digit_bits: u32,
    /// Rows of `1 << digit_bits` columns.
    pub rows: Vec<Vec<Option<NodeHandle>>>,
    /// Slots (row, column) emptied by a peer declared dead.
    forgotten: Vec<(usize, usize, NodeId)>,
}

impl ExplicitTable {
    /// A table in digits of `digit_bits` bits with the given rows.
    pub fn new(digit_bits: u32, rows: Vec<Vec<Option<NodeHandle>>>) -> Self {
        ExplicitTable {
            digit_bits,
            rows,
            forgotten: Vec::new(),
        }
    }

    fn digit(&self, key: u128, i: usize) -> usize {
        let shift = 128 - self.digit_bits as usize * (i + 1);
        ((key >> shift) & ((1u128 << self.digit_bits) - 1)) as usize
    }
    fn shared_prefix(&self, a: u128, b: u128) -> usize {
        ((a ^ b).leading_zeros() / self.digit_bits) as usize
    }
}

impl ExplicitTable {
    /// Removes a peer from every slot until it is taken back (heard from directly): one
    /// declared dead, or one not in the overlay yet (a harness whose configuration has peers
    /// join mid-run loads the whole table and forgets those).
    pub fn forget(&mut self, id: NodeId) {
        for (r, row) in self.rows.iter_mut().enumerate() {
            for (c, slot) in row.iter_mut().enumerate() {
                if slot.is_some_and(|h| h.id == id) {
                    *slot = None;
                    self.forgotten.push((r, c, id));
                }
            }
        }
    }

    /// Puts a peer taken back into the slots it was removed from (those still empty).
    pub(super) fn revive(&mut self, h: NodeHandle) {
        let rows = &mut self.rows;
        self.forgotten.retain(|&(r, c, id)| {
            if id != h.id {
                return true;
            }
            let slot = &mut rows[r][c];
            if slot.is_none() {
                *slot = Some(h);
            }
            false
        });
    }
}

impl Overlay {
    /// Rules 2 and 3 over an explicit table: the entry sharing one more digit with the key, or
    /// any known peer (leaf set or table) sharing at least as long a prefix that is closer.
    pub(super) fn route_explicit(
        &self,
        t: &ExplicitTable,
        key: u128,
        exclude: Option<NodeId>,
    ) -> Hop {
        let l = t.shared_prefix(self.me.id.0, key);
        if let Some(Some(h)) = t.rows.get(l).and_then(|r| r.get(t.digit(key, l))) {
            if Some(h.id) != exclude {
                return Hop::Next(*h);
            }
        }
        let mut best: Option<NodeHandle> = None;
        let mut best_id = self.me.id.0;
        let table = t.rows.iter().flatten().flatten().copied();
        for h in self.leaf.iter().map(|e| e.handle).chain(table) {
            if Some(h.id) == exclude || t.shared_prefix(h.id.0, key) < l {
                continue;
            }
            if closer(key, h.id.0, best_id) {
                best_id = h.id.0;
                best = Some(h);
            }
        }
        match best {
            Some(h) => Hop::Next(h),
            None => Hop::Local,
        }
    }

    /// Loads (or, with `None`, clears) an explicit routing table; see [`ExplicitTable`].
    /// Panics if `digit_bits` is not in `1..=8`.
    pub fn set_explicit_table(&mut self, table: Option<ExplicitTable>) {
        if let Some(t) = &table {
            assert!(
                (1..=8).contains(&t.digit_bits),
                "digit_bits must be in 1..=8, got {}",
                t.digit_bits
            );
        }
        self.explicit = table;
    }

    /// The explicit routing table, if one is loaded (the unit tests' view of it).
    #[cfg(test)]
    pub fn explicit_table(&self) -> Option<&ExplicitTable> {
        self.explicit.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pastry::Hop;
    use crate::{Call, Config, Host, Input, Seeds};
    use std::net::SocketAddr;

    fn handle(id10: u16, port: u16) -> NodeHandle {
        NodeHandle {
            id: NodeId::from_paper_10bit(id10),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// The model's 4-peer overlay (ids 64, 320, 448, 576; leaf sets of one peer per side):
    /// with the model's base-4 tables, key 500 goes A → C → D as in the model, not the way
    /// the core's hexadecimal table would send it.
    #[test]
    fn base4_tables_route_like_the_model() {
        let (a, c, d, e) = (
            handle(64, 1),
            handle(320, 2),
            handle(448, 3),
            handle(576, 4),
        );
        let key = NodeId::from_paper_10bit(500).0;
        let cfg = Config {
            leaf_set_size: 2,
            ..Config::default()
        };
        let peer = |me: NodeHandle, leaves: &[NodeHandle], row0: [Option<NodeHandle>; 4]| {
            let mut p = Host::new(me.id, me.addr, cfg.clone(), 0, Seeds::reproducible(1));
            let mut known = leaves.to_vec();
            known.extend(row0.iter().flatten());
            p.handle_input(0, Input::Call(Call::InstallRoutingState(known)))
                .unwrap();
            let before = p.peer().route(key);
            let mut rows = vec![row0.to_vec()];
            rows.extend((1..5).map(|_| vec![None; 4]));
            if me.id == c.id {
                rows[1][3] = Some(d);
            }
            p.harness(0, |p, _, _| p.set_explicit_routing(2, rows, &[]));
            (p, before)
        };
        let (mut pa, hex_hop) = peer(a, &[c, e], [None, Some(c), Some(e), None]);
        let (pc, _) = peer(c, &[a, d], [Some(a), None, Some(e), None]);
        let (pd, _) = peer(d, &[c, e], [Some(a), None, Some(e), None]);
        assert_eq!(hex_hop, Hop::Next(e), "hexadecimal digits take another hop");
        assert_eq!(pa.peer().route(key), Hop::Next(c));
        assert_eq!(pc.peer().route(key), Hop::Next(d));
        assert_eq!(pd.peer().route(key), Hop::Local);
        let table = |h: &Host| h.peer().overlay().explicit_table().cloned();
        assert_eq!(table(&pa).map(|t| t.digit_bits), Some(2));
        // A declared-dead entry leaves the table; the rare case then picks the closest peer.
        pa.harness(0, |p, now, t| p.declare_dead(now, t, c.id, &[]));
        assert!(table(&pa).is_some_and(|t| t
            .rows
            .iter()
            .flatten()
            .flatten()
            .all(|h| h.id != c.id)));
        assert_eq!(pa.peer().route(key), Hop::Next(e));
    }

    #[test]
    #[should_panic(expected = "digit_bits must be in 1..=8")]
    fn digit_width_is_checked() {
        let h = handle(64, 1);
        let mut p = Host::new(h.id, h.addr, Config::default(), 0, Seeds::reproducible(1));
        p.harness(0, |p, _, _| p.set_explicit_routing(0, Vec::new(), &[]));
    }
}
