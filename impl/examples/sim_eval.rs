//! The paper's evaluation scenario in the deterministic simulator, seeded and replayable.
//!
//! A static overlay of N peers (default 10^5) at the default configuration (keep-alives and
//! heartbeats at their defaults), G groups (default 10^4) of S subscribers each (default 10,
//! at random peers), one publication per group from a random peer, T virtual seconds in all
//! (default 60): subscriptions are spread over the first 2 s, publications over
//! `[5 s, T - 10 s)`. Prints the wall time, the datagrams simulated and their rate, and the
//! paper's figures: delivery ratio, notification delay (overlay hops and simulated ms, mean
//! and p99), per-peer load (overlay datagrams sent + received, busiest peer and mean) against
//! a central server's Σ S_i, and the mean lookup hops against ⌈log16 N⌉.
//!
//! ```text
//! cargo run --release -p sascribe --example sim_eval -- [--peers N] [--groups G] [--subs S]
//!     [--secs T] [--seed X] [--maint-only] [--root-failures F] [--churn R]
//!     [--sweep N1,N2,... | --sweep-groups G1,G2,... | --sweep-subs S1,S2,...] [--csv FILE]
//! ```
//!
//! `--maint-only`: no groups, T virtual seconds of overlay maintenance only. `--sweep`: one
//! run per N (with G = N/10 unless `--groups` is given), one CSV line each (`--csv`, else
//! stdout); `--sweep-groups` and `--sweep-subs` likewise over G and S, the rest as given.
//! `sascribe-bench sim-plot` draws the CSV files (docs/PERFORMANCE.md).
//!
//! Faults (both seeded, both off by default):
//! * `--root-failures F`: for a fraction F of the groups, whichever peer is the group's root
//!   2 s before its publication crashes then (its replicas take over; its own subscribers are
//!   lost with it).
//! * `--churn R`: R peers a second, chosen at random, crash over `[3 s, T - 10 s)`, each
//!   replaced at once by a new peer that joins through a random ready one.
//!
//! The delivery ratio then counts the subscriptions whose peer is still alive at the end, of
//! the groups whose publication was acknowledged to its publisher: a subscriber's own peer
//! crashing takes its dialog with it (its user agent would subscribe again elsewhere), and a
//! publisher crashing before its 200 OK may lose its publication (as a user agent whose
//! server dies before answering may), neither a delivery the overlay promised.
//! `--explain-misses` prints what the overlay holds of up to 10 subscriptions it missed.

use bytes::Bytes;
use rand::Rng;
use sascribe::sim::{NetConfig, Sim};
use sascribe::{Call, Config, Event, GroupId, PubHandle, SubHandle};
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Instant;

/// The allocator production runs with (`impl/src/main.rs`); glibc's malloc was 13 % of the
/// samples of a 10^5-peer run (`_int_malloc`, `malloc_consolidate`, `unlink_chunk`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone, Debug)]
struct Opts {
    peers: usize,
    groups: Option<usize>,
    subs: usize,
    secs: u64,
    seed: u64,
    maint_only: bool,
    explain: bool,
    root_failures: f64,
    churn: f64,
    /// The values swept, and over which parameter.
    sweep: Vec<usize>,
    sweep_over: Sweep,
    csv: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Sweep {
    Peers,
    Groups,
    Subs,
}

fn parse() -> Opts {
    let mut o = Opts {
        peers: 100_000,
        groups: None,
        subs: 10,
        secs: 60,
        seed: 1,
        maint_only: false,
        explain: false,
        root_failures: 0.0,
        churn: 0.0,
        sweep: Vec::new(),
        sweep_over: Sweep::Peers,
        csv: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--peers" => o.peers = val().parse().expect("--peers N"),
            "--groups" => o.groups = Some(val().parse().expect("--groups G")),
            "--subs" => o.subs = val().parse().expect("--subs S"),
            "--secs" => o.secs = val().parse().expect("--secs T"),
            "--seed" => o.seed = val().parse().expect("--seed X"),
            "--maint-only" => o.maint_only = true,
            "--explain-misses" => o.explain = true,
            "--root-failures" => {
                o.root_failures = val().parse().expect("--root-failures F (0 to 1)");
                assert!(
                    (0.0..=1.0).contains(&o.root_failures),
                    "--root-failures F: 0 to 1"
                );
            }
            "--churn" => o.churn = val().parse().expect("--churn R (crashes per second)"),
            "--sweep" | "--sweep-groups" | "--sweep-subs" => {
                o.sweep_over = match a.as_str() {
                    "--sweep" => Sweep::Peers,
                    "--sweep-groups" => Sweep::Groups,
                    _ => Sweep::Subs,
                };
                o.sweep = val()
                    .split(',')
                    .map(|s| s.trim().parse().expect("a comma-separated list of counts"))
                    .collect()
            }
            "--csv" => o.csv = Some(val()),
            _ => panic!("unknown argument {a}"),
        }
    }
    o
}

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

/// A peer drawn at random among those that have joined the overlay.
fn random_ready(s: &mut Sim) -> usize {
    let ready: Vec<usize> = s.ready().collect();
    ready[s.rng().random_range(0..ready.len())]
}

fn mean(v: &[u64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.iter().sum::<u64>() as f64 / v.len() as f64
}

/// p99 of `v` (nearest rank); sorts it.
fn p99(v: &mut [u64]) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let rank = ((v.len() as f64) * 0.99).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Overlay datagrams sent + received by each peer so far.
fn loads(s: &Sim) -> Vec<u64> {
    (0..s.len())
        .map(|i| {
            s.peer(i)
                .map_or(0, |p| p.stats().tx_datagrams + p.stats().rx_datagrams)
        })
        .collect()
}

/// Maintenance kinds (overlay keep-alive and repair, tree heartbeats).
const MAINT: &[&str] = &[
    "ping",
    "pong",
    "leafset_request",
    "leafset_reply",
    "row_request",
    "row_reply",
    "heartbeat",
    "heartbeat_ack",
];

#[derive(Default)]
struct Row {
    n: usize,
    groups: usize,
    subs: usize,
    secs: u64,
    seed: u64,
    build_s: f64,
    run_s: f64,
    datagrams: u64,
    rate: f64,
    rss: f64,
    delivered: usize,
    expected: usize,
    delay_ms_mean: f64,
    delay_ms_p99: u64,
    hops_mean: f64,
    hops_p99: u64,
    tree_hops_mean: f64,
    lookup_hops: f64,
    log16: f64,
    busiest: u64,
    mean_load: f64,
    busiest_event: u64,
    mean_event: f64,
    central: u64,
    per_peer_s: f64,
    busiest_notify: u64,
    mean_notify: f64,
    root_crashes: usize,
    churn_crashes: usize,
    lost_with_peer: usize,
    unacked: usize,
    root_failures: f64,
    churn: f64,
}

impl Row {
    const HEADER: &'static str = "n,groups,subs,secs,seed,build_s,run_s,datagrams,datagrams_per_s,rss_mib,delivered,expected,delivery_ratio,delay_ms_mean,delay_ms_p99,hops_mean,hops_p99,tree_hops_mean,lookup_hops_mean,ceil_log16_n,busiest_load,mean_load,busiest_event_load,mean_event_load,central_load,busiest_over_central,maint_per_peer_per_s,busiest_notification_load,mean_notification_load,busiest_notification_over_central,root_crashes,churn_crashes,subscriptions_lost_with_their_peer,root_failures,churn,publications_not_acknowledged";

    fn csv(&self) -> String {
        format!(
            "{},{},{},{},{},{:.2},{:.2},{},{:.0},{:.0},{},{},{:.6},{:.1},{},{:.3},{},{:.3},{:.3},{},{},{:.1},{},{:.2},{},{:.6},{:.2},{},{:.2},{:.6},{},{},{},{},{},{}",
            self.n,
            self.groups,
            self.subs,
            self.secs,
            self.seed,
            self.build_s,
            self.run_s,
            self.datagrams,
            self.rate,
            self.rss,
            self.delivered,
            self.expected,
            self.delivered as f64 / self.expected.max(1) as f64,
            self.delay_ms_mean,
            self.delay_ms_p99,
            self.hops_mean,
            self.hops_p99,
            self.tree_hops_mean,
            self.lookup_hops,
            self.log16,
            self.busiest,
            self.mean_load,
            self.busiest_event,
            self.mean_event,
            self.central,
            self.busiest_event as f64 / self.central.max(1) as f64,
            self.per_peer_s,
            self.busiest_notify,
            self.mean_notify,
            self.busiest_notify as f64 / self.central.max(1) as f64,
            self.root_crashes,
            self.churn_crashes,
            self.lost_with_peer,
            self.root_failures,
            self.churn,
            self.unacked,
        )
    }
}

fn run(o: &Opts, n: usize, groups: Option<usize>, subs: usize) -> Row {
    let groups = if o.maint_only {
        0
    } else {
        groups.unwrap_or(n / 10)
    };
    let secs = o.secs.max(15);
    let mut row = Row {
        n,
        groups,
        subs,
        secs,
        seed: o.seed,
        root_failures: o.root_failures,
        churn: o.churn,
        ..Row::default()
    };
    let wall = Instant::now();
    let mut s = Sim::new(o.seed, Config::default(), NetConfig::default());
    s.add_static_peers(n);
    row.build_s = wall.elapsed().as_secs_f64();
    println!(
        "N={n} G={groups} S={subs} T={secs} s seed={}: static build {:.2} s, RSS {:.0} MiB",
        o.seed,
        row.build_s,
        rss_mib()
    );
    let t_run = Instant::now();
    let load0 = loads(&s);
    let kinds0: Vec<BTreeMap<&'static str, u64>> = (0..n)
        .map(|i| {
            s.peer(i)
                .map(|p| p.stats().rx_kinds.iter().map(|(k, c)| (k, *c)).collect())
                .unwrap_or_default()
        })
        .collect();

    // Lookups: mean hops against ceil(log16 N).
    let lookups = 1_000.min(n);
    for tok in 0..lookups {
        let from = s.rng().random_range(0..n);
        let key: u128 = s.rng().random();
        s.call(
            from,
            Call::Lookup {
                key,
                token: tok as u64,
            },
        );
    }

    // Subscriptions over the first 2 s; publications over [5 s, T - 10 s).
    let gids: Vec<GroupId> = (0..groups)
        .map(|k| GroupId::from_event(&format!("sip:g{k}@example.com"), "presence", None))
        .collect();
    let mut sub_at: Vec<(u64, usize, usize)> = Vec::with_capacity(groups * subs); // (ms, group, peer)
    for k in 0..groups {
        for _ in 0..subs {
            let at = s.rng().random_range(0..2_000u64);
            let peer = s.rng().random_range(0..n);
            sub_at.push((at, k, peer));
        }
    }
    let mut pub_at: Vec<(u64, usize, usize)> = (0..groups)
        .map(|k| {
            let span = (secs - 15) * 1_000;
            let at = 5_000 + (k as u64 * span) / groups.max(1) as u64;
            let peer = s.rng().random_range(0..n);
            (at, k, peer)
        })
        .collect();
    // Faults: root crashes 2 s before a chosen group's publication, churn spread evenly.
    let mut faults: Vec<(u64, Option<usize>)> = Vec::new(); // (ms, group whose root) / random
    for &(at, k, _) in &pub_at {
        if o.root_failures > 0.0 && s.rng().random_bool(o.root_failures) {
            faults.push((at.saturating_sub(2_000), Some(k)));
        }
    }
    let churn_span = (secs - 13) * 1_000;
    let churn_n = (o.churn * churn_span as f64 / 1e3).round() as u64;
    for c in 0..churn_n {
        faults.push((3_000 + c * churn_span / churn_n.max(1), None));
    }
    faults.sort_unstable();
    let mut fi = 0;
    let mut crashed_at: BTreeMap<sascribe::NodeId, u64> = BTreeMap::new();
    // Handle h = k * subs + j: subscription j of group k.
    let mut sub_peer = vec![0usize; groups * subs];
    let mut sub_order: Vec<(u64, usize, usize, usize)> = sub_at
        .iter()
        .enumerate()
        .map(|(h, &(at, k, p))| (at, h, k, p))
        .collect();
    sub_order.sort_unstable();
    pub_at.sort_unstable();
    let mut pub_time = vec![0u64; groups];
    let mut pub_by = vec![0usize; groups];
    // Publications acknowledged to their publisher (200 OK): only those must be delivered.
    let mut acked = vec![false; groups];
    let mut pub_hops = vec![0u64; groups];
    let mut notified: Vec<Option<u64>> = vec![None; groups * subs];
    let mut lookup_hops = 0u64;
    let mut lookup_n = 0u64;
    let (mut si, mut pi) = (0, 0);
    let end = secs * 1_000;
    let mut last_report = Instant::now();
    let mut t = 0u64;
    while t < end {
        while fi < faults.len() && faults[fi].0 <= t {
            let victim = match faults[fi].1 {
                Some(k) => s.closest_live(gids[k].0),
                None => {
                    let live: Vec<usize> = s.live().collect();
                    (live.len() > 2).then(|| live[s.rng().random_range(0..live.len())])
                }
            };
            if let Some(v) = victim {
                crashed_at.insert(s.id(v), t);
                s.crash(v);
                if faults[fi].1.is_some() {
                    row.root_crashes += 1;
                } else {
                    row.churn_crashes += 1;
                    let via = random_ready(&mut s);
                    s.add_joining_peer(None, via);
                }
            }
            fi += 1;
        }
        while si < sub_order.len() && sub_order[si].0 <= t {
            let (_, h, k, p) = sub_order[si];
            sub_peer[h] = p;
            let _ = s.subscribe(p, gids[k], SubHandle(h as u64), 3_600);
            si += 1;
        }
        while pi < pub_at.len() && pub_at[pi].0 <= t {
            let (_, k, mut p) = pub_at[pi];
            if !s.is_alive(p) {
                p = random_ready(&mut s);
            }
            // Overlay hops from the publisher to the root, as routed now. A next hop that
            // crashed, not yet known dead, ends the walk (the request is retransmitted and
            // routed around it later; the delay counts that, the hops do not).
            let mut cur = p;
            let mut hops = 0;
            while let Some(sascribe::pastry::Hop::Next(nh)) =
                s.peer(cur).map(|x| x.route(gids[k].0))
            {
                match s.closest_live(nh.id.0) {
                    Some(j) if s.id(j) == nh.id && hops < 64 => {
                        cur = j;
                        hops += 1;
                    }
                    _ => break,
                }
            }
            pub_hops[k] = hops;
            pub_time[k] = s.now();
            pub_by[k] = p;
            s.publish(
                p,
                gids[k],
                PubHandle(k as u64),
                Some(Bytes::from(format!("state of g{k}"))),
                None,
                None,
            );
            pi += 1;
        }
        t += 100;
        s.run_until(t);
        for e in s.drain_log() {
            match e.event {
                // The publication (seq 1, or later after a takeover), not the empty state a
                // subscription is answered with before it.
                Event::Notify { handle, seq, .. } if seq >= 1 => {
                    let h = handle.0 as usize;
                    if h < notified.len() && notified[h].is_none() {
                        notified[h] = Some(e.at);
                    }
                }
                Event::Published { req, .. } => {
                    if let Some(a) = acked.get_mut(req.0 as usize) {
                        *a = true;
                    }
                }
                Event::LookupDelivered { hops, .. } => {
                    lookup_hops += u64::from(hops);
                    lookup_n += 1;
                }
                _ => {}
            }
        }
        if t.is_multiple_of(10_000) || last_report.elapsed().as_secs() >= 30 {
            last_report = Instant::now();
            let el = t_run.elapsed().as_secs_f64();
            println!(
                "  t={:>5.1} s virtual: {:.1} s wall, {} datagrams, {:.0} datagrams/s",
                t as f64 / 1e3,
                el,
                s.stats.delivered,
                s.stats.delivered as f64 / el
            );
        }
    }
    row.run_s = t_run.elapsed().as_secs_f64();
    row.datagrams = s.stats.delivered;
    row.rate = row.datagrams as f64 / row.run_s;
    row.rss = rss_mib();
    row.lookup_hops = lookup_hops as f64 / lookup_n.max(1) as f64;
    row.log16 = (n as f64).log(16.0).ceil();

    // Delivery and delay.
    let mut delays = Vec::new();
    let mut hops = Vec::new();
    let mut tree_hops = Vec::new();
    // Notification load per peer: the multicasts it sends down its tree edges (one per
    // child per publication, from the parent pointers walked below), the ones it receives
    // (counted by kind), and the SIP NOTIFYs it sends its own subscribers; a central server
    // sends Σ S_i NOTIFYs.
    let mut notify_load = vec![0u64; s.len()];
    let mut edges = std::collections::HashSet::new();
    for (h, at) in notified.iter().enumerate() {
        if !s.is_alive(sub_peer[h]) {
            row.lost_with_peer += 1;
            continue;
        }
        let k = h / subs.max(1);
        if !acked[k] {
            continue;
        }
        let Some(at) = *at else { continue };
        delays.push(at - pub_time[k]);
        notify_load[sub_peer[h]] += 1;
        // Tree hops: parent pointers from the subscriber's peer up to the root.
        let mut cur = sub_peer[h];
        let mut d = 0u64;
        while let Some(pid) = s
            .peer(cur)
            .and_then(|p| p.group_view(gids[k]))
            .and_then(|v| v.parent)
        {
            match s.closest_live(pid.0) {
                // (A parent that crashed ends the walk.)
                Some(j) if s.id(j) == pid && d < 64 => {
                    if edges.insert((k, cur)) {
                        notify_load[j] += 1;
                    }
                    cur = j;
                    d += 1;
                }
                _ => break,
            }
        }
        tree_hops.push(d);
        hops.push(pub_hops[k] + d);
    }
    row.delivered = delays.len();
    if o.explain {
        let pubs = Pubs {
            time: &pub_time,
            by: &pub_by,
            acked: &acked,
            crashed_at: &crashed_at,
        };
        explain_misses(&s, &notified, &sub_peer, &gids, &pubs, subs);
    }
    row.unacked = acked.iter().filter(|a| !**a).count();
    row.expected = (0..groups * subs)
        .filter(|&h| s.is_alive(sub_peer[h]) && acked[h / subs.max(1)])
        .count();
    row.delay_ms_mean = mean(&delays);
    row.delay_ms_p99 = p99(&mut delays);
    row.hops_mean = mean(&hops);
    row.hops_p99 = p99(&mut hops);
    row.tree_hops_mean = mean(&tree_hops);

    // Per-peer load over the run: every overlay datagram, and the event traffic alone
    // (received datagrams that are not maintenance, counted twice for their sending side).
    // Busiest and mean are taken over the peers alive at the end (those churn added
    // included, counted from their start).
    let alive: Vec<usize> = s.live().collect();
    let over_alive = |v: &[u64]| -> Vec<u64> { alive.iter().map(|&i| v[i]).collect() };
    let load1 = loads(&s);
    let per: Vec<u64> = (0..s.len())
        .map(|i| load1[i] - load0.get(i).copied().unwrap_or(0))
        .collect();
    let per = over_alive(&per);
    row.busiest = per.iter().copied().max().unwrap_or(0);
    row.mean_load = mean(&per);
    let mut maint_rx = 0u64;
    let none = BTreeMap::new();
    let event: Vec<u64> = (0..s.len())
        .map(|i| {
            let Some(p) = s.peer(i) else { return 0 };
            let before = kinds0.get(i).unwrap_or(&none);
            let mut ev = 0;
            for (kind, c) in &p.stats().rx_kinds {
                let c = c - before.get(kind).copied().unwrap_or(0);
                if kind == "notify" {
                    notify_load[i] += c;
                }
                if MAINT.contains(&kind) {
                    maint_rx += c;
                } else {
                    ev += c;
                }
            }
            ev
        })
        .collect();
    let (event, notify_load) = (over_alive(&event), over_alive(&notify_load));
    row.busiest_event = event.iter().copied().max().unwrap_or(0);
    row.mean_event = 2.0 * mean(&event);
    row.central = (groups * subs) as u64;
    row.busiest_notify = notify_load.iter().copied().max().unwrap_or(0);
    row.mean_notify = mean(&notify_load);
    row.per_peer_s = maint_rx as f64 / alive.len().max(1) as f64 / secs as f64;

    println!(
        "  done: {:.2} s wall for {secs} virtual s ({:.2} s with the build), {} datagrams, {:.0} datagrams/s, RSS {:.0} MiB",
        row.run_s,
        row.run_s + row.build_s,
        row.datagrams,
        row.rate,
        row.rss
    );
    println!(
        "  maintenance (pings, pongs, leaf-set/row repair, heartbeats): {:.2} datagrams received per peer per s",
        row.per_peer_s
    );
    if groups > 0 {
        if row.root_crashes + row.churn_crashes > 0 {
            println!(
                "  faults: {} root crashes, {} churn crashes (each replaced by a joining peer); {} subscriptions lost with their own peer; {} publications never acknowledged (their publisher crashed first), their groups not counted",
                row.root_crashes, row.churn_crashes, row.lost_with_peer, row.unacked
            );
        }
        println!(
            "  delivery ratio {:.4} ({} of {} subscriptions notified of their group's publication)",
            row.delivered as f64 / row.expected.max(1) as f64,
            row.delivered,
            row.expected
        );
        println!(
            "  notification delay: {:.1} ms mean, {} ms p99; {:.2} overlay hops mean (publisher -> root -> subscriber), {} p99; tree depth {:.2} mean",
            row.delay_ms_mean, row.delay_ms_p99, row.hops_mean, row.hops_p99, row.tree_hops_mean
        );
        println!(
            "  per-peer load (overlay datagrams sent + received): busiest {}, mean {:.1}; event traffic alone (no keep-alives, no heartbeats): busiest peer received {}, mean sent + received {:.2}",
            row.busiest, row.mean_load, row.busiest_event, row.mean_event
        );
        println!(
            "  central server: sum S_i = {} NOTIFYs; busiest peer's event load / central = {:.5} (2/N = {:.5})",
            row.central,
            row.busiest_event as f64 / row.central.max(1) as f64,
            2.0 / n as f64
        );
        println!(
            "  notification load (multicasts sent down tree edges + received + SIP NOTIFYs to its own subscribers): busiest peer {}, mean {:.2} (busiest / mean {:.2}); busiest / central = {:.5} (2/N = {:.5})",
            row.busiest_notify,
            row.mean_notify,
            row.busiest_notify as f64 / row.mean_notify.max(f64::MIN_POSITIVE),
            row.busiest_notify as f64 / row.central.max(1) as f64,
            2.0 / n as f64
        );
    }
    println!(
        "  lookups: mean hops {:.3}, ceil(log16 N) = {}",
        row.lookup_hops, row.log16
    );
    let mut kinds: BTreeMap<&'static str, u64> = BTreeMap::new();
    for i in 0..s.len() {
        let before = kinds0.get(i).unwrap_or(&none);
        if let Some(p) = s.peer(i) {
            for (k, c) in &p.stats().rx_kinds {
                *kinds.entry(k).or_default() += c - before.get(k).copied().unwrap_or(0);
            }
        }
    }
    let parts: Vec<String> = kinds.iter().map(|(k, c)| format!("{k} {c}")).collect();
    println!("  received by kind: {}", parts.join(", "));
    row
}

/// Each group's publication: when, by which peer, whether acknowledged.
struct Pubs<'a> {
    time: &'a [u64],
    by: &'a [usize],
    acked: &'a [bool],
    /// When each crashed peer crashed (virtual ms).
    crashed_at: &'a BTreeMap<sascribe::NodeId, u64>,
}

/// Prints, for up to 10 subscriptions alive but never notified, what the overlay holds of
/// their group now: the subscriber's peer's view (parent, latest seq), the root's (record seq),
/// and the publisher.
fn explain_misses(
    s: &Sim,
    notified: &[Option<u64>],
    sub_peer: &[usize],
    gids: &[GroupId],
    pubs: &Pubs,
    subs: usize,
) {
    let (pub_time, pub_by) = (pubs.time, pubs.by);
    let missed = (0..notified.len())
        .filter(|&h| {
            notified[h].is_none() && s.is_alive(sub_peer[h]) && pubs.acked[h / subs.max(1)]
        })
        .take(10);
    for h in missed {
        let k = h / subs.max(1);
        let p = sub_peer[h];
        let view = s.peer(p).and_then(|x| x.group_view(gids[k]));
        let root = s.closest_live(gids[k].0);
        let rview = root.and_then(|r| s.peer(r).and_then(|x| x.group_view(gids[k])));
        println!(
            "  missed: subscription {h} of group {k} at peer {p}; published at {} ms by peer {} (alive {}); subscriber's view: parent {:?} latest seq {:?}; root peer {:?}: root {:?} active {:?} record seq {:?}",
            pub_time[k],
            pub_by[k],
            s.is_alive(pub_by[k]),
            view.as_ref().map(|v| v.parent),
            view.as_ref().map(|v| v.latest_seq),
            root,
            rview.as_ref().map(|v| v.is_root),
            rview.as_ref().map(|v| v.root_active),
            rview.as_ref().map(|v| v.record_seq),
        );
        // The chain of parents up to the root, as each hop sees the group.
        let mut cur = p;
        for _ in 0..16 {
            let Some(parent) = s
                .peer(cur)
                .and_then(|x| x.group_view(gids[k]))
                .and_then(|v| v.parent)
            else {
                break;
            };
            let Some(j) = s.closest_live(parent.0).filter(|&j| s.id(j) == parent) else {
                println!(
                    "    parent {parent} is not alive (crashed at {:?} ms); peer {cur} routes the group to {:?}",
                    pubs.crashed_at.get(&parent),
                    s.peer(cur).map(|x| x.route(gids[k].0)),
                );
                break;
            };
            let v = s.peer(j).and_then(|x| x.group_view(gids[k]));
            println!(
                "    parent peer {j}: member {} root {:?} latest seq {:?} children {:?} parent {:?}",
                v.is_some(),
                v.as_ref().map(|v| v.is_root),
                v.as_ref().map(|v| v.latest_seq),
                v.as_ref().map(|v| v.children.len()),
                v.as_ref().map(|v| v.parent),
            );
            cur = j;
        }
    }
}

fn main() {
    let o = parse();
    let points = if o.sweep.is_empty() {
        vec![(o.peers, o.groups, o.subs)]
    } else {
        (o.sweep.iter())
            .map(|&v| match o.sweep_over {
                Sweep::Peers => (v, o.groups, o.subs),
                Sweep::Groups => (o.peers, Some(v), o.subs),
                Sweep::Subs => (o.peers, o.groups, v),
            })
            .collect()
    };
    let mut rows = Vec::new();
    for &(n, groups, subs) in &points {
        rows.push(run(&o, n, groups, subs));
    }
    if !o.sweep.is_empty() || o.csv.is_some() {
        let mut text = String::from(Row::HEADER);
        text.push('\n');
        for r in &rows {
            text.push_str(&r.csv());
            text.push('\n');
        }
        match &o.csv {
            Some(f) => {
                let mut file = std::fs::File::create(f).expect("create the CSV file");
                file.write_all(text.as_bytes()).expect("write the CSV file");
                println!("wrote {f}");
            }
            None => print!("{text}"),
        }
    }
}
