//! Pastry routing: hop counts, delivery to the numerically closest live peer, real joins,
//! failure detection and repair.

use rand::Rng;
use sascribe::pastry::Hop;
use sascribe::sim::{NetConfig, Sim};
use sascribe::{Call, Config, Event};

/// Sends `n` lookups for random keys from random live peers; returns (mean hops, misrouted).
fn lookups(s: &mut Sim, n: usize) -> (f64, usize) {
    let live: Vec<usize> = s.live().collect();
    let mut want = Vec::with_capacity(n);
    for t in 0..n {
        let from = live[s.rng().random_range(0..live.len())];
        let key: u128 = s.rng().random();
        want.push((key, s.closest_live(key).unwrap()));
        s.call(
            from,
            Call::Lookup {
                key,
                token: t as u64,
            },
        );
    }
    s.run_for(5_000);
    let mut hops = 0u64;
    let mut got = vec![None; n];
    for e in s.drain_log() {
        if let Event::LookupDelivered { token, hops: h, .. } = e.event {
            assert!(got[token as usize].is_none(), "delivered twice");
            got[token as usize] = Some(e.peer);
            hops += u64::from(h);
        }
    }
    let misrouted = got
        .iter()
        .zip(&want)
        .filter(|(g, w)| **g != Some(w.1))
        .count();
    (hops as f64 / n as f64, misrouted)
}

#[test]
fn thousand_peers_log16_hops_and_exact_delivery() {
    let n = 1_000;
    let mut s = Sim::new(7, Config::default(), NetConfig::default());
    s.add_static_peers(n);
    let (mean, misrouted) = lookups(&mut s, 2_000);
    let bound = (n as f64).log(16.0).ceil();
    eprintln!("N={n}: mean hops {mean:.3} (bound {bound})");
    assert_eq!(misrouted, 0);
    assert!(mean <= bound, "mean hops {mean} > {bound}");
    for i in 0..n {
        assert!(s.leaf_set_correct(i));
    }
}

#[test]
fn real_joins_build_correct_leaf_sets() {
    let mut s = Sim::new(9, Config::default(), NetConfig::default());
    let first = s.add_first_peer();
    let mut joined = 0;
    for _ in 0..40 {
        let via = s.live().next().unwrap();
        s.add_joining_peer(None, via);
        s.run_for(300);
    }
    s.run_for(15_000);
    for e in s.drain_log() {
        if e.event == Event::Joined {
            joined += 1;
        }
    }
    assert_eq!(joined, 40);
    assert_eq!(first, 0);
    for i in s.live().collect::<Vec<_>>() {
        assert!(s.peer(i).unwrap().is_ready());
        assert!(s.leaf_set_correct(i), "leaf set of {i}");
    }
    let (_, misrouted) = lookups(&mut s, 500);
    assert_eq!(misrouted, 0);
}

#[test]
fn failures_are_detected_and_repaired() {
    let net = NetConfig {
        loss: 0.02,
        ..NetConfig::default()
    };
    let mut s = Sim::new(10, Config::default(), net);
    s.add_static_peers(200);
    s.run_for(2_000);
    // Crash 20 peers, including neighbours of each other.
    let mut victims: Vec<usize> = (0..200).step_by(10).collect();
    victims.push(1);
    for &v in &victims {
        s.crash(v);
    }
    s.run_for(30_000);
    s.net.loss = 0.0;
    s.run_for(10_000);
    let bad: Vec<usize> = s.live().filter(|&i| !s.leaf_set_correct(i)).collect();
    assert!(bad.is_empty(), "incorrect leaf sets at {bad:?}");
    for i in s.live() {
        for h in s.peer(i).unwrap().overlay().known() {
            let j = s.live().find(|&j| s.id(j) == h.id);
            assert!(j.is_some(), "peer {i} still knows a dead peer");
        }
    }
    let (_, misrouted) = lookups(&mut s, 500);
    assert_eq!(misrouted, 0);
    // A restarted peer rejoins and is found again.
    s.restart(victims[0], 5);
    s.run_for(15_000);
    let key = s.id(victims[0]).0;
    assert_eq!(s.peer(5).map(|p| p.route(key) != Hop::Local), Some(true));
    assert!(s.leaf_set_correct(victims[0]));
    let (_, misrouted) = lookups(&mut s, 300);
    assert_eq!(misrouted, 0);
}

#[test]
fn ten_thousand_peers_static_overlay() {
    let n = 10_000;
    let mut s = Sim::new(8, Config::default(), NetConfig::default());
    s.add_static_peers(n);
    let (mean, misrouted) = lookups(&mut s, 2_000);
    let bound = (n as f64).log(16.0).ceil();
    eprintln!("N={n}: mean hops {mean:.3} (bound {bound})");
    assert_eq!(misrouted, 0);
    assert!(mean <= bound, "mean hops {mean} > {bound}");
    // Per-peer routing state stays small (sparse routing table).
    let max_rt = s
        .live()
        .map(|i| s.peer(i).unwrap().overlay().rt.filled())
        .max()
        .unwrap();
    assert!(max_rt <= 5 * 15, "routing table of {max_rt} entries");
}

/// A peer that joins through a peer cut off by a partition learns of no one else from it. The
/// join's last hop names the peers it declared dead (`Suspects`) and the joiner probes them:
/// when the partition has healed and the peer it joined through dies, it is still in the
/// overlay (found by `small_overlays`: an isolated joiner served every group as root).
#[test]
fn a_join_through_a_cut_off_peer_finds_the_rest() {
    let mut s = Sim::new(12, Config::default(), NetConfig::default());
    s.add_static_peers(4);
    s.run_for(2_000);
    s.set_side(0, 1);
    s.run_for(10_000);
    assert!(
        s.peer(0).unwrap().overlay().leaf.is_empty(),
        "peer 0 buried the other side"
    );
    s.heal();
    let j = s.add_joining_peer(None, 0);
    let mut waited = 0;
    while !s.peer(j).is_some_and(|p| p.is_ready()) {
        assert!(waited < 30_000, "the joiner was not ready after 30 s");
        s.run_for(1);
        waited += 1;
    }
    assert!(
        s.peer(0).unwrap().overlay().leaf.is_empty(),
        "peer 0 found the other side before the join completed (the test needs it not to)"
    );
    s.crash(0);
    s.run_for(20_000);
    for i in s.live().collect::<Vec<_>>() {
        assert!(s.leaf_set_correct(i), "peer {i}'s leaf set is wrong");
    }
    let (_, misrouted) = lookups(&mut s, 200);
    assert_eq!(misrouted, 0);
}
