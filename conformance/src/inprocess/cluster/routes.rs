//! The routing probe (MAPPING.md, "Projected state", routing): production's own routing at
//! each live peer, asked for keys all round the ring, judged against the model's routing rule
//! (topology.rs, `next_hop`) over the peers that peer has not declared dead. It is asked twice:
//! over the trace's routing table loaded into it, and over the table it learnt itself (its
//! hexadecimal one, which the loaded table replaces in routing decisions). A trace routes
//! nothing but its group's JOINs, and only over the loaded table, so without this probe a
//! routing rule that errs for other keys or over the learnt table (a wrong digit or prefix,
//! the rare case's prefix bound, a table entry passed over) would pass unseen.

use super::super::abstraction::RawState;
use super::super::overlay::slot;
use super::{Cluster, Slot};
use crate::Config as TraceConfig;
use sascribe::pastry::Hop;
use sascribe::NodeId;
use std::collections::BTreeSet;
use std::sync::Arc;

/// A trace's `id_bits`-bit id or key as production's 128-bit one (its top bits).
pub(super) fn key128(key: u16, id_bits: u32) -> u128 {
    u128::from(key) << (128 - id_bits)
}

/// The distance between `a` and `b` on the ring of 128-bit ids.
fn ring_distance(a: u128, b: u128) -> u128 {
    let d = a.wrapping_sub(b);
    d.min(d.wrapping_neg())
}

/// What a peer's routes were judged on: the peers it declared dead, its leaf set and learnt
/// table, and its answers. The same again would be judged the same, so it is not judged again.
#[derive(PartialEq)]
pub(super) struct Judged {
    dead: BTreeSet<usize>,
    leaves: Vec<NodeId>,
    table: Vec<(NodeId, bool)>,
    routes: Vec<(u128, Hop)>,
    learnt_routes: Vec<(u128, Hop)>,
}

impl Cluster {
    /// Production's own routing at peer `a` (`raw.routes`, `raw.learnt_routes`) must be the
    /// model's for every key asked.
    pub(super) fn check_routes(&mut self, a: usize, raw: &RawState) -> Result<(), String> {
        if self.route_keys.is_empty() {
            return Ok(()); // 128-bit ids that are not the trace's ids' top bits: not judged
        }
        let judged = Judged {
            dead: self.slots[a].known_dead.clone(),
            leaves: raw.leaves.clone(),
            table: raw.table.clone(),
            routes: raw.routes.clone(),
            learnt_routes: raw.learnt_routes.clone(),
        };
        if self.routes_judged.get(&a) == Some(&judged) {
            return Ok(());
        }
        self.judge_routes(a, raw)?;
        self.routes_judged.insert(a, judged);
        Ok(())
    }

    /// [`Cluster::check_routes`]'s judgement.
    fn judge_routes(&self, a: usize, raw: &RawState) -> Result<(), String> {
        let model = self.model_router(a);
        let loaded = self.loaded_table(a)?;
        let learnt = self.learnt_table(a, &raw.table);
        let asked = [
            (&raw.routes, &loaded, "the trace's routing table"),
            (&raw.learnt_routes, &learnt, "the table it learnt"),
        ];
        let name = |q: usize| {
            if q == a {
                "itself".to_string()
            } else {
                self.slots[q].name.clone()
            }
        };
        for (routes, table, which) in asked {
            for &(key, hop) in routes {
                let got = match hop {
                    Hop::Local => Some(a),
                    Hop::Next(h) => self.slot_of(h.id),
                };
                let want = model.next_hop(key, table);
                if got == Some(want) {
                    continue;
                }
                let got = match (got, hop) {
                    (Some(q), _) => name(q),
                    (None, Hop::Next(h)) => self.name_of(h.id),
                    (None, Hop::Local) => name(a),
                };
                return Err(format!(
                    "{} routes key {} over {which} to {got}, the model to {}",
                    self.slots[a].name,
                    key >> (128 - self.cfg.id_bits),
                    name(want)
                ));
            }
        }
        Ok(())
    }

    /// Peer `a`'s leaf set as the model has it, over the peers it has not declared dead.
    fn model_router(&self, a: usize) -> ModelRouter {
        let half = self.cfg.leaf_half;
        let ids: Vec<u128> = self.slots.iter().map(|s| s.handle.id.0).collect();
        let mut offsets: Vec<u128> = (0..ids.len())
            .filter(|&q| q != a && !self.slots[a].known_dead.contains(&q))
            .map(|q| ids[q].wrapping_sub(ids[a]))
            .collect();
        offsets.sort_unstable();
        // A leaf set short of `2 * leaf_half` peers holds every live peer: it spans the ring.
        let span =
            (offsets.len() >= 2 * half).then(|| (offsets[half - 1], offsets[offsets.len() - half]));
        ModelRouter {
            a,
            ids,
            leaf: self.model_leaves(a),
            span,
        }
    }

    /// The trace's routing table of peer `a` (in its `digit_bits`-bit digits), less the peers
    /// it declared dead.
    fn loaded_table(&self, a: usize) -> Result<Table, String> {
        let mut entries = Vec::new();
        for (row, slots) in self.cfg.peers[a].routing_table.iter().enumerate() {
            for (col, name) in slots.iter().enumerate() {
                if let Some(name) = name {
                    let q = self.peer_ix(name)?;
                    if !self.slots[a].known_dead.contains(&q) {
                        entries.push((q, row, col as u128));
                    }
                }
            }
        }
        Ok(Table {
            digit_bits: self.cfg.digit_bits,
            entries,
        })
    }

    /// The table peer `a` learnt (`held`: the ids it holds, and whether each sits in the slot
    /// it fits), in production's hexadecimal digits: each entry in the slot it fits.
    fn learnt_table(&self, a: usize, held: &[(NodeId, bool)]) -> Table {
        let me = self.slots[a].handle.id.0;
        let entries = held
            .iter()
            .filter(|&&(_, fits)| fits)
            .filter_map(|&(id, _)| {
                let (row, col) = slot(me, id.0);
                Some((self.slot_of(id)?, row, col as u128))
            })
            .collect();
        Table {
            digit_bits: sascribe::id::DIGIT_BITS,
            entries,
        }
    }
}

/// The keys whose routes [`Cluster::check_routes`] judges, as production's 128-bit keys: one
/// in every `2^(id_bits - 6)`, the group's, each peer's id and its neighbours, and the keys
/// midway between any two peers, either way round the ring (where the closest peer is a tie,
/// or nearly). None when a peer's 128-bit id is not its trace id's top bits (a hand-written
/// trace's): its routes are not judged.
pub(super) fn route_keys(cfg: &TraceConfig, slots: &[Slot]) -> Arc<[u128]> {
    let bits = cfg.id_bits;
    if slots.iter().any(|s| s.handle.id.0 != key128(s.tid, bits)) {
        return Arc::from([]);
    }
    let ring = 1u32 << bits;
    let step = (ring >> 6).max(1);
    let mut ids: Vec<u32> = slots.iter().map(|s| u32::from(s.tid)).collect();
    ids.sort_unstable();
    let mut keys: Vec<u32> = (0..ring).step_by(step as usize).collect();
    keys.push(u32::from(cfg.gid));
    for (i, &id) in ids.iter().enumerate() {
        keys.extend([id + ring - 1, id, id + 1]);
        for &other in &ids[i + 1..] {
            let (gap, back) = (other - id, ring - (other - id));
            keys.extend([id + gap / 2, id + gap.div_ceil(2)]);
            keys.extend([other + back / 2, other + back.div_ceil(2)]);
        }
    }
    let mut keys: Vec<u16> = keys.into_iter().map(|x| (x % ring) as u16).collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter().map(|k| key128(k, bits)).collect()
}

/// Digit `i` of `x`, in digits of `bits` bits from the top.
fn digit(x: u128, i: usize, bits: u32) -> u128 {
    let shift = 128u32.saturating_sub(bits * (i as u32 + 1));
    (x >> shift) & ((1 << bits) - 1)
}

/// How many leading digits of `bits` bits `x` and `key` share.
fn shared_prefix(x: u128, key: u128, bits: u32) -> usize {
    (0..(128 / bits) as usize)
        .take_while(|&i| digit(x, i, bits) == digit(key, i, bits))
        .count()
}

/// A routing table, as `(peer, row, column)` entries in digits of `digit_bits` bits.
struct Table {
    digit_bits: u32,
    entries: Vec<(usize, usize, u128)>,
}

/// One peer's leaf set as the model sees it (topology.rs), for [`ModelRouter::next_hop`].
struct ModelRouter {
    a: usize,
    /// Every peer's 128-bit id, by index.
    ids: Vec<u128>,
    leaf: Vec<usize>,
    /// The ring offsets from the peer of its leaf set's farthest successor and predecessor;
    /// `None` when the leaf set spans the whole ring.
    span: Option<(u128, u128)>,
}

impl ModelRouter {
    /// The model's next hop for `key` over `table` (topology.rs, `next_hop`): the closest of
    /// the leaf set and the peer itself when the leaf set spans the key; else the table's
    /// entry sharing one more digit with the key; else the closest peer it knows (leaf set or
    /// table) sharing as long a prefix and closer than itself; else the peer itself.
    fn next_hop(&self, key: u128, table: &Table) -> usize {
        let a = self.a;
        let rank = |q: usize| (ring_distance(self.ids[q], key), self.ids[q]);
        let me = self.ids[a];
        let offset = key.wrapping_sub(me);
        if self
            .span
            .is_none_or(|(cw, ccw)| offset <= cw || offset >= ccw)
        {
            let closest = self
                .leaf
                .iter()
                .copied()
                .chain([a])
                .min_by_key(|&q| rank(q));
            return closest.unwrap_or(a);
        }
        let bits = table.digit_bits;
        let row = shared_prefix(me, key, bits);
        let col = digit(key, row, bits);
        if let Some(&(q, ..)) = table.entries.iter().find(|e| (e.1, e.2) == (row, col)) {
            return q;
        }
        let mine = ring_distance(me, key);
        let known = self.leaf.iter().copied();
        known
            .chain(table.entries.iter().map(|e| e.0))
            .filter(|&q| shared_prefix(self.ids[q], key, bits) >= row && rank(q).0 < mine)
            .min_by_key(|&q| rank(q))
            .unwrap_or(a)
    }
}
