//! Throughput and latency figures of the core and of the tokio runtime.
//!
//! * `cargo run --release -p sascribe --example bench -- sim [peers] [groups] [subs/group] [rounds]`
//!   (defaults 10000 1000 10 5): a static overlay in the deterministic simulator with default
//!   timers (keep-alives and heartbeats run); every group gets an initial publication and
//!   `subs/group` subscribers on random peers, then `rounds` publications per group. Prints
//!   simulated events (datagram deliveries + timer firings) per wall-clock second.
//! * `cargo run --release -p sascribe --example bench -- cluster [peers] [groups] [publications]`
//!   (defaults 8 32 20000): an in-process loopback cluster of tokio peers; each group has three
//!   subscribers on peers other than its publisher. Measures publish→NOTIFY latency with one
//!   publication in flight, then throughput and latency with one in flight per group.
//! * `cargo run --release -p sascribe --example bench -- poll [max transactions]` (default
//!   100000): one gateway host filled with live SIP server transactions (completed PUBLISHes
//!   kept for Timer J) and publications, 10² … max of them; at each size, the cost of an idle
//!   poll (`poll_output` + `Input::Timeout` when nothing is due) and of one more request. The
//!   per-poll cost must not grow with the number of live transactions.
//!
//! With `BENCH_CLUSTER_KEY=1` in the environment, `sim` and `cluster` run with a cluster key
//! (authenticated, replay-protected datagrams), to compare with a run without.

use bytes::Bytes;
use rand::Rng;
use sascribe::runtime::{HostLoop, RuntimeHandle};
use sascribe::sim::{NetConfig, Sim};
use sascribe::{Config, Event, GroupId, NodeId, PubHandle, SubHandle};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};

/// The peers' configuration: the default, with a cluster key when `BENCH_CLUSTER_KEY` is set.
fn bench_config() -> Config {
    let keyed = std::env::var_os("BENCH_CLUSTER_KEY").is_some();
    if keyed {
        eprintln!("with a cluster key");
    }
    Config {
        cluster_key: keyed.then(|| b"bench cluster key, 32 bytes long".to_vec()),
        ..Config::default()
    }
}

fn arg(args: &[String], i: usize, default: usize) -> usize {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("sim") => sim(
            arg(&args, 1, 10_000),
            arg(&args, 2, 1_000),
            arg(&args, 3, 10),
            arg(&args, 4, 5),
        ),
        Some("poll") => poll(arg(&args, 1, 100_000)),
        Some("cluster") => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(cluster(
                arg(&args, 1, 8),
                arg(&args, 2, 32),
                arg(&args, 3, 20_000),
            ));
        }
        _ => {
            eprintln!("usage: bench sim [peers] [groups] [subs/group] [rounds] | bench cluster [peers] [groups] [publications] | bench poll [max transactions]");
            std::process::exit(2);
        }
    }
}

/// Runs the simulator for `d` virtual ms; returns the number of events processed.
fn run_counting(s: &mut Sim, d: u64) -> u64 {
    let until = s.now() + d;
    let mut n = 0;
    while s.step(until) {
        n += 1;
    }
    s.run_until(until);
    n
}

fn sim(peers: usize, groups: usize, subs: usize, rounds: usize) {
    let t = Instant::now();
    let mut s = Sim::new(7, bench_config(), NetConfig::default());
    s.add_static_peers(peers);
    println!(
        "sim: {peers} peers built in {:.2} s; {groups} groups x {subs} subscribers, {rounds} publication rounds",
        t.elapsed().as_secs_f64()
    );
    let gids: Vec<GroupId> = (0..groups)
        .map(|g| GroupId::from_event(&format!("sip:user{g}@example.com"), "presence", None))
        .collect();
    let mut req = 0u64;
    let t = Instant::now();
    let mut events = 0u64;
    let delivered0 = s.stats.delivered;
    for &gid in &gids {
        let at = s.rng().random_range(0..peers);
        req += 1;
        s.publish(
            at,
            gid,
            PubHandle(req),
            Some(Bytes::from_static(b"init")),
            None,
            None,
        );
    }
    events += run_counting(&mut s, 2_000);
    for (g, &gid) in gids.iter().enumerate() {
        for j in 0..subs {
            let at = s.rng().random_range(0..peers);
            let _ = s.subscribe(at, gid, SubHandle((g * subs + j) as u64), 3_600);
        }
    }
    events += run_counting(&mut s, 3_000);
    s.drain_log();
    let mut notifies = 0usize;
    for r in 0..rounds {
        for &gid in &gids {
            let at = s.rng().random_range(0..peers);
            req += 1;
            let body = Bytes::from(format!("round {r}"));
            s.publish(at, gid, PubHandle(req), Some(body), None, None);
        }
        events += run_counting(&mut s, 1_000);
        notifies += s
            .drain_log()
            .iter()
            .filter(|e| matches!(e.event, Event::Notify { .. }))
            .count();
    }
    events += run_counting(&mut s, 2_000);
    notifies += s
        .drain_log()
        .iter()
        .filter(|e| matches!(e.event, Event::Notify { .. }))
        .count();
    let wall = t.elapsed().as_secs_f64();
    let virt = (2_000 + 3_000 + rounds as u64 * 1_000 + 2_000) as f64 / 1_000.0;
    println!(
        "sim: {events} events ({} datagrams) in {virt:.0} virtual s, {wall:.2} s wall",
        s.stats.delivered - delivered0
    );
    println!(
        "sim: {:.0} simulated events/s; {notifies} NOTIFYs of {} expected after publications ({:.0} NOTIFY/s wall)",
        events as f64 / wall,
        groups * subs * rounds,
        notifies as f64 / wall
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

const SUBS_PER_GROUP: usize = 3;

async fn cluster(n: usize, groups: usize, publications: usize) {
    let n = n.max(SUBS_PER_GROUP + 1);
    let groups = groups.max(1);
    let mut peers: Vec<RuntimeHandle> = Vec::new();
    let t = Instant::now();
    for i in 0..n {
        let id = NodeId((i as u128).wrapping_mul(u128::MAX / n as u128) ^ 0x9e37_79b9);
        let mut node = HostLoop::bind("127.0.0.1:0".parse().unwrap(), id, bench_config(), i as u64)
            .await
            .expect("bind");
        if let Some(first) = peers.first() {
            node.bootstrap(first.overlay_addr());
        }
        let h = node.spawn();
        h.wait_ready(Duration::from_secs(30)).await.expect("join");
        peers.push(h);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "cluster: {n} peers joined in {:.2} s",
        t.elapsed().as_secs_f64()
    );

    // Every NOTIFY of every peer goes to one collector: (subscription, body, arrival).
    let (tx, mut rx) = mpsc::unbounded_channel::<(SubHandle, Bytes, Instant)>();
    for p in &peers {
        let mut events = p.events();
        let tx = tx.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(Event::Notify {
                        handle,
                        state: Some(b),
                        ..
                    }) => {
                        if tx.send((handle, b, Instant::now())).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(k)) => {
                        eprintln!("collector lagged by {k}")
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
    drop(tx);

    let gids: Vec<GroupId> = (0..groups)
        .map(|g| GroupId::from_event(&format!("sip:bench{g}@example.com"), "presence", None))
        .collect();
    let publisher = |g: usize| &peers[g % n];
    let mut req = 0u64;
    for (g, &gid) in gids.iter().enumerate() {
        req += 1;
        let body = Bytes::from(format!("{g}:0"));
        publisher(g)
            .publish(gid, PubHandle(req), Some(body), None, None)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (g, &gid) in gids.iter().enumerate() {
        for j in 0..SUBS_PER_GROUP {
            let at = &peers[(g + 1 + j * 2) % n];
            at.subscribe(gid, SubHandle((g * SUBS_PER_GROUP + j) as u64), 3_600)
                .await
                .unwrap();
        }
    }
    // Initial NOTIFYs.
    let want = groups * SUBS_PER_GROUP;
    let mut got = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while got < want {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(_)) => got += 1,
            _ => break,
        }
    }
    println!(
        "cluster: {groups} groups x {SUBS_PER_GROUP} subscribers, {got}/{want} initial NOTIFYs"
    );

    let seq_n = (publications / 10).clamp(1, 500);
    let (lat, lost, wall) = drive(&peers, &gids, 1, seq_n, &mut rx, &mut req).await;
    report("one publication in flight", &lat, lost, wall);
    let (lat, lost, wall) = drive(&peers, &gids, groups, publications, &mut rx, &mut req).await;
    report(
        &format!("{groups} publications in flight"),
        &lat,
        lost,
        wall,
    );
    for p in &peers {
        p.shutdown().await;
    }
}

fn report(what: &str, lat: &[Duration], lost: usize, wall: Duration) {
    let mut sorted = lat.to_vec();
    sorted.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "cluster [{what}]: {} NOTIFYs in {:.2} s = {:.0} NOTIFY/s ({:.0} publications/s), publish→NOTIFY p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {lost} missing",
        lat.len(),
        wall.as_secs_f64(),
        lat.len() as f64 / wall.as_secs_f64(),
        lat.len() as f64 / SUBS_PER_GROUP as f64 / wall.as_secs_f64(),
        ms(percentile(&sorted, 0.5)),
        ms(percentile(&sorted, 0.99)),
        ms(sorted.last().copied().unwrap_or_default()),
    );
}

/// Publishes `total` times, keeping one publication in flight in each of the first `window`
/// groups; a publication is done when its three subscribers were notified (or after 5 s).
async fn drive(
    peers: &[RuntimeHandle],
    gids: &[GroupId],
    window: usize,
    total: usize,
    rx: &mut mpsc::UnboundedReceiver<(SubHandle, Bytes, Instant)>,
    req: &mut u64,
) -> (Vec<Duration>, usize, Duration) {
    let n = peers.len();
    let window = window.min(gids.len()).max(1);
    // group → (publication number, sent at, subscribers still to notify)
    let mut inflight: HashMap<usize, (usize, Instant, usize)> = HashMap::new();
    let mut next_k = vec![1usize; window];
    let mut sent = 0;
    let mut lat = Vec::with_capacity(total * SUBS_PER_GROUP);
    let mut lost = 0;
    let start = Instant::now();
    let publish = |g: usize, k: usize, req: u64| {
        let h = peers[g % n].clone();
        let gid = gids[g];
        async move {
            let body = Bytes::from(format!("{g}:{k}"));
            h.publish(gid, PubHandle(req), Some(body), None, None)
                .await
                .unwrap();
        }
    };
    for (g, &k) in next_k.iter().enumerate().take(total) {
        *req += 1;
        inflight.insert(g, (k, Instant::now(), SUBS_PER_GROUP));
        publish(g, k, *req).await;
        sent += 1;
    }
    while !inflight.is_empty() {
        let done_group = match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some((_sub, body, at))) => {
                let text = String::from_utf8_lossy(&body);
                let Some((g, k)) = text
                    .split_once(':')
                    .and_then(|(g, k)| Some((g.parse::<usize>().ok()?, k.parse::<usize>().ok()?)))
                else {
                    continue;
                };
                match inflight.get_mut(&g) {
                    Some((kk, t0, left)) if *kk == k => {
                        lat.push(at - *t0);
                        *left -= 1;
                        (*left == 0).then_some(g)
                    }
                    _ => None,
                }
            }
            Ok(None) => break,
            Err(_) => {
                // Give up on the stragglers.
                let stuck: Vec<usize> = inflight.keys().copied().collect();
                for g in &stuck {
                    lost += inflight[g].2;
                }
                inflight.clear();
                None
            }
        };
        if let Some(g) = done_group {
            inflight.remove(&g);
            next_k[g] += 1;
            if sent < total {
                *req += 1;
                inflight.insert(g, (next_k[g], Instant::now(), SUBS_PER_GROUP));
                publish(g, next_k[g], *req).await;
                sent += 1;
            }
        }
    }
    (lat, lost, start.elapsed())
}

/// A PUBLISH of presentity `n` from a UA at `ua`, with a unique branch.
fn publish_request(n: usize, ua: std::net::SocketAddr) -> Vec<u8> {
    let body = "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" \
                entity=\"sip:p@example.test\"><tuple id=\"t\"><status><basic>open</basic></status></tuple></presence>";
    format!(
        "PUBLISH sip:p{n}@example.test SIP/2.0\r\nVia: SIP/2.0/UDP {ua};branch=z9hG4bKpoll{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:p{n}@example.test>;tag=t{n}\r\nTo: <sip:p{n}@example.test>\r\n\
         Call-ID: poll-{n}\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nExpires: 3600\r\n\
         Content-Type: application/pidf+xml\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Drains a host's outputs; returns how many there were.
fn drain_host(h: &mut sascribe::Host) -> usize {
    let mut n = 0;
    while !matches!(h.poll_output(), sascribe::Output::Timeout(_)) {
        n += 1;
    }
    n
}

fn poll(max: usize) {
    use sascribe::{Host, Input, Seeds};
    let ua: std::net::SocketAddr = "192.0.2.1:5070".parse().expect("address");
    let sip = "127.0.0.1:5060".parse().expect("address");
    let overlay = "127.0.0.1:4000".parse().expect("address");
    let mut host = Host::new(
        NodeId(1 << 120),
        overlay,
        Config::default(),
        0,
        Seeds::reproducible(1),
    )
    .with_sip(sascribe::sip::SipConfig::new(sip));
    let now = 1_000;
    println!(
        "{:>10} {:>12} {:>14} {:>16} {:>12}",
        "live tx", "timer heap", "idle poll ns", "new request us", "fill s"
    );
    let mut filled = 0;
    let mut size = 100;
    while size <= max {
        let t = Instant::now();
        while filled < size {
            let req = publish_request(filled, ua);
            let _ = host.handle_input(
                now,
                Input::Sip {
                    from: ua,
                    payload: &req,
                },
            );
            drain_host(&mut host);
            filled += 1;
        }
        let fill = t.elapsed();
        // Idle polls: nothing is due (Timer J of every transaction lies 32 s ahead).
        let rounds = 200_000;
        let t = Instant::now();
        for _ in 0..rounds {
            let _ = host.handle_input(now, Input::Timeout);
            drain_host(&mut host);
        }
        let idle = t.elapsed().as_nanos() as f64 / rounds as f64;
        // One more request each (then the transactions are left to live).
        let extra = 1_000;
        let t = Instant::now();
        for k in 0..extra {
            let req = publish_request(max + filled + k, ua);
            let _ = host.handle_input(
                now,
                Input::Sip {
                    from: ua,
                    payload: &req,
                },
            );
            drain_host(&mut host);
        }
        filled += extra;
        let per = t.elapsed().as_secs_f64() * 1e6 / extra as f64;
        let st = host.stats();
        println!(
            "{:>10} {:>12} {:>14.0} {:>16.1} {:>12.2}",
            st.sip_transactions.0,
            st.timers_queued,
            idle,
            per,
            fill.as_secs_f64()
        );
        size *= 10;
    }
}
