//! Scale check of the simulator and the core: builds a static overlay of N peers (default
//! 100 000), routes lookups, runs one sa-Scribe group with many subscribers, and prints time,
//! memory and hop figures.
//!
//! `cargo run --release -p sascribe --example sim_scale -- [N] [lookups] [subscribers] [maint]`
//!
//! With `maint = 1` the default keep-alive / heartbeat timers run (and 60 virtual seconds of
//! maintenance traffic are measured); otherwise they are slowed down so that the run measures
//! routing and multicast only.

use bytes::Bytes;
use rand::Rng;
use sascribe::sim::{NetConfig, Sim};
use sascribe::{Call, Config, Event, GroupId, PubHandle, SubHandle};
use std::time::Instant;

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(100_000);
    let lookups = args.get(1).copied().unwrap_or(10_000);
    let subscribers = args.get(2).copied().unwrap_or(1_000);
    let maint = args.get(3).copied().unwrap_or(0) == 1;
    let slow = Config {
        keepalive_interval: 600_000,
        table_ping_interval: 600_000,
        leaf_fail_timeout: 3_600_000,
        table_fail_timeout: 3_600_000,
        leaf_exchange_interval: 600_000,
        dead_probe_interval: 600_000,
        ..Config::default()
    };
    let cfg = if maint { Config::default() } else { slow };
    let rss0 = rss_mib();
    let t = Instant::now();
    let mut s = Sim::new(1, cfg, NetConfig::default());
    s.add_static_peers(n);
    let build = t.elapsed();
    let rss1 = rss_mib();
    println!(
        "N={n}: static build {:.2} s, RSS {:.0} MiB ({:.1} KiB/peer)",
        build.as_secs_f64(),
        rss1,
        (rss1 - rss0) * 1024.0 / n as f64
    );

    let t = Instant::now();
    let mut want = Vec::with_capacity(lookups);
    for tok in 0..lookups {
        let from = s.rng().random_range(0..n);
        let key: u128 = s.rng().random();
        want.push(s.closest_live(key).unwrap_or(0));
        s.call(
            from,
            Call::Lookup {
                key,
                token: tok as u64,
            },
        );
    }
    s.run_for(2_000);
    let (mut hops, mut ok) = (0u64, 0usize);
    for e in s.drain_log() {
        if let Event::LookupDelivered { token, hops: h, .. } = e.event {
            hops += u64::from(h);
            ok += usize::from(want[token as usize] == e.peer);
        }
    }
    println!(
        "{lookups} lookups: mean hops {:.3} (ceil(log16 N) = {}), {ok} delivered to the closest peer, {:.2} s",
        hops as f64 / lookups as f64,
        (n as f64).log(16.0).ceil(),
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let gid = GroupId::from_event("sip:scale@example.com", "presence", None);
    s.publish(
        0,
        gid,
        PubHandle(0),
        Some(Bytes::from_static(b"v0")),
        None,
        None,
    );
    s.run_for(2_000);
    for k in 0..subscribers {
        let at = s.rng().random_range(0..n);
        let _ = s.subscribe(at, gid, SubHandle(k as u64), 3_600);
    }
    s.run_for(3_000);
    s.drain_log();
    s.publish(
        1,
        gid,
        PubHandle(1),
        Some(Bytes::from_static(b"v1")),
        None,
        None,
    );
    s.run_for(3_000);
    let log = s.drain_log();
    let notified = log
        .iter()
        .filter(|e| matches!(&e.event, Event::Notify { seq: 2, .. }))
        .count();
    let tree = (0..n)
        .filter(|&i| {
            s.peer(i)
                .and_then(|p| p.group_view(gid))
                .is_some_and(|v| v.parent.is_some())
        })
        .count();
    println!(
        "group with {subscribers} subscribers: {notified} notified of the 2nd publication, {tree} tree members, {:.2} s, {} datagrams delivered in all, RSS {:.0} MiB",
        t.elapsed().as_secs_f64(),
        s.stats.delivered,
        rss_mib()
    );
    if maint {
        let t = Instant::now();
        let before = s.stats.delivered;
        s.run_for(60_000);
        let d = s.stats.delivered - before;
        let wall = t.elapsed().as_secs_f64();
        println!(
            "60 virtual s of maintenance: {d} datagrams ({:.1} per peer per s), {wall:.2} s wall, {:.0} datagrams/s simulated",
            d as f64 / n as f64 / 60.0,
            d as f64 / wall
        );
    }
}
