//! Forming the trace's overlay (MAPPING.md, "Configuration"): the production peers join it with
//! production's own Pastry join, one after the other through the first peer, and the harness
//! checks that what they formed is the overlay the trace's configuration describes, before the
//! trace's routing tables are loaded over it. A peer whose join does not complete, a leaf set
//! that differs from the configuration's, a routing-table entry in the wrong slot, a member
//! left out of a slot it fits, or a key that the learnt routing does not deliver to its
//! numerically closest peer fails the trace's `init`.

use sascribe::pastry::Hop;
use sascribe::{Call, Host, Input as HostInput, Millis, NodeHandle, Output, Socket};
use std::collections::{BTreeSet, VecDeque};

/// Bound on the datagrams one peer's join may take (loop guard).
const MAX_JOIN_DATAGRAMS: usize = 10_000;

/// Production's routing-table digits: bits per digit, digits per id.
const DIGIT_BITS: usize = 4;
const DIGITS: usize = 128 / DIGIT_BITS;

/// Has every host join the overlay with production's Pastry join: the first starts it alone,
/// each other joins through the first and runs its join to quiescence before the next starts.
pub(super) fn form(hosts: &mut [Host], names: &[String], now: Millis) -> Result<(), String> {
    let Some(first) = hosts.first_mut() else {
        return Ok(());
    };
    let seed = first.handle().addr;
    call(first, now, Call::InstallRoutingState(Vec::new()))?;
    for i in 1..hosts.len() {
        call(&mut hosts[i], now, Call::Bootstrap(seed))?;
        pump(hosts, now).map_err(|e| format!("overlay join of {}: {e}", names[i]))?;
        if !hosts[i].is_ready() {
            return Err(format!(
                "overlay join of {} through {}: the join did not complete (no last JoinState)",
                names[i], names[0]
            ));
        }
    }
    Ok(())
}

fn call(host: &mut Host, now: Millis, c: Call) -> Result<(), String> {
    host.handle_input(now, HostInput::Call(c))
        .map_err(|e| format!("overlay join: {e}"))
}

/// Delivers overlay datagrams between the hosts, in the order sent, until none is left.
fn pump(hosts: &mut [Host], now: Millis) -> Result<(), String> {
    let mut queue = VecDeque::new();
    let mut delivered = 0;
    loop {
        for (i, h) in hosts.iter_mut().enumerate() {
            loop {
                match h.poll_output() {
                    Output::Transmit(t) if t.socket == Socket::Overlay => {
                        queue.push_back((i, t.dst, t.payload));
                    }
                    Output::Timeout(_) => break,
                    _ => {}
                }
            }
        }
        let Some((from, dst, payload)) = queue.pop_front() else {
            return Ok(());
        };
        delivered += 1;
        if delivered > MAX_JOIN_DATAGRAMS {
            return Err(format!(
                "more than {MAX_JOIN_DATAGRAMS} overlay datagrams (the join does not quiesce)"
            ));
        }
        let Some(to) = hosts.iter().position(|h| h.handle().addr == dst) else {
            return Err(format!("datagram to unknown address {dst}"));
        };
        let from = hosts[from].handle().addr;
        hosts[to]
            .handle_input(
                now,
                HostInput::Overlay {
                    from,
                    payload: &payload,
                },
            )
            .map_err(|e| format!("delivering a join datagram: {e}"))?;
    }
}

/// The filled slots of a peer's learnt routing table: (row, column, id).
pub(super) fn table_of(o: &sascribe::pastry::Overlay) -> Vec<(usize, usize, sascribe::NodeId)> {
    let mut v = Vec::new();
    for row in 0..DIGITS {
        for col in 0..(1 << DIGIT_BITS) {
            if let Some(e) = o.rt.get(row, col) {
                v.push((row, col, e.handle.id));
            }
        }
    }
    v
}

/// The entries of a peer's learnt routing table (that of peer `me`): each one's id, and whether
/// it sits in the slot it fits (cheaper than [`table_of`]: it runs after every step).
pub(super) fn entries_of(
    o: &sascribe::pastry::Overlay,
    me: sascribe::NodeId,
) -> Vec<(sascribe::NodeId, bool)> {
    o.rt.iter()
        .map(|e| {
            let id = e.handle.id;
            let (row, col) = slot(me.0, id.0);
            (id, o.rt.get(row, col).is_some_and(|s| s.handle.id == id))
        })
        .collect()
}

/// The slot `(row, column)` of production's routing table that `id` fits in at `me`.
pub(super) fn slot(me: u128, id: u128) -> (usize, usize) {
    let row = ((me ^ id).leading_zeros() as usize / DIGIT_BITS).min(DIGITS - 1);
    let col = (id >> (128 - DIGIT_BITS * (row + 1))) as usize & ((1 << DIGIT_BITS) - 1);
    (row, col)
}

/// The member numerically closest to `key` on the ring (ties to the lower id).
fn closest(key: u128, members: &[NodeHandle]) -> Option<NodeHandle> {
    let dist = |id: u128| {
        let d = key.wrapping_sub(id);
        d.min(id.wrapping_sub(key))
    };
    members
        .iter()
        .min_by_key(|h| (dist(h.id.0), h.id.0))
        .copied()
}

/// Checks the overlay the hosts formed: each leaf set is the configuration's (`leaf_sets`,
/// member indices per host), each routing-table entry is a member in the slot it fits, every
/// slot a member fits is filled, and the learnt routing takes every member id, the group id and
/// the keys around them from every peer to the closest member in at most one hop per member.
pub(super) fn check(
    hosts: &[Host],
    names: &[String],
    leaf_sets: &[BTreeSet<usize>],
    gid: u128,
) -> Result<(), String> {
    let members: Vec<NodeHandle> = hosts.iter().map(Host::handle).collect();
    let index = |id| members.iter().position(|h| h.id == id);
    for (i, h) in hosts.iter().enumerate() {
        let o = h.peer().overlay();
        let me = members[i].id.0;
        let mut leaves = BTreeSet::new();
        for e in o.leaf.iter() {
            let Some(j) = index(e.handle.id) else {
                return Err(format!(
                    "{}'s leaf set holds {:032x}, no peer of the trace",
                    names[i], e.handle.id.0
                ));
            };
            leaves.insert(j);
        }
        if leaves != leaf_sets[i] {
            let show =
                |s: &BTreeSet<usize>| s.iter().map(|&j| names[j].as_str()).collect::<Vec<_>>();
            return Err(format!(
                "{}'s leaf set after the overlay join is {:?}, the configuration's {:?}",
                names[i],
                show(&leaves),
                show(&leaf_sets[i])
            ));
        }
        for (row, col, id) in table_of(o) {
            let Some(j) = index(id) else {
                return Err(format!(
                    "{}'s routing table holds {:032x} (row {row}, column {col}), no peer of the trace",
                    names[i], id.0
                ));
            };
            if j == i || slot(me, id.0) != (row, col) {
                return Err(format!(
                    "{}'s routing table holds {} in row {row}, column {col}, where it does not fit",
                    names[i], names[j]
                ));
            }
        }
        for (j, m) in members.iter().enumerate().filter(|&(j, _)| j != i) {
            let (row, col) = slot(me, m.id.0);
            if o.rt.get(row, col).is_none() {
                return Err(format!(
                    "{}'s routing table leaves row {row}, column {col} empty after the overlay join, though {} fits there",
                    names[i], names[j]
                ));
            }
        }
    }
    let mut keys = vec![gid, gid.wrapping_add(1), gid.wrapping_sub(1)];
    for m in &members {
        keys.extend([m.id.0, m.id.0.wrapping_add(1), m.id.0.wrapping_sub(1)]);
    }
    for key in keys {
        let Some(want) = closest(key, &members) else {
            break;
        };
        for (i, _) in hosts.iter().enumerate() {
            let mut at = i;
            let mut path = vec![names[i].as_str()];
            loop {
                match hosts[at].peer().route(key) {
                    Hop::Local => break,
                    Hop::Next(n) => {
                        let Some(j) = index(n.id) else {
                            return Err(format!(
                                "{} routes key {key:032x} to {:032x}, no peer of the trace",
                                names[at], n.id.0
                            ));
                        };
                        at = j;
                        path.push(names[j].as_str());
                    }
                }
                if path.len() > members.len() {
                    return Err(format!(
                        "the overlay's routing loops on key {key:032x}: {}",
                        path.join(" -> ")
                    ));
                }
            }
            if members[at].id != want.id {
                return Err(format!(
                    "the overlay routes key {key:032x} to {} ({}), not to the closest peer {}",
                    names[at],
                    path.join(" -> "),
                    names[index(want.id).expect("a member")]
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sascribe::id::{digit, shared_prefix_len};
    use sascribe::NodeId;
    use std::net::SocketAddr;

    #[test]
    fn slots_are_the_cores_rows_and_columns() {
        let mut x: u128 = 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834;
        for _ in 0..1000 {
            x = x.rotate_left(17).wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x5851_f42d;
            let me = x;
            let id = x ^ (1u128 << (x % 128) as u32);
            let row = shared_prefix_len(me, id);
            assert_eq!(slot(me, id), (row, digit(id, row)));
        }
    }

    #[test]
    fn the_closest_member_is_on_the_ring_both_ways() {
        let h = |id: u128| NodeHandle {
            id: NodeId(id),
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
        };
        let members = [h(10), h(u128::MAX - 5), h(1000)];
        let at = |key| closest(key, &members).map(|h| h.id.0);
        assert_eq!(at(0), Some(u128::MAX - 5));
        assert_eq!(at(8), Some(10));
        assert_eq!(at(600), Some(1000));
        assert_eq!(closest(0, &[]), None);
    }
}
