//! The tokio runtime over real loopback UDP: joins, publish → NOTIFY fan-out, root crash,
//! garbage input, and the front-end hook.

use bytes::Bytes;
use sascribe::runtime::{HostLoop, RuntimeHandle};
use sascribe::{Config, Event, GroupId, Host, NodeId, PubHandle, Seeds, SubHandle};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::broadcast;
use tokio::time::{timeout, Instant};

const WAIT: Duration = Duration::from_secs(15);

/// Timers tightened so failures are detected within about a second.
fn fast() -> Config {
    Config {
        keepalive_interval: 200,
        leaf_fail_timeout: 900,
        table_fail_timeout: 1_500,
        table_ping_interval: 500,
        leaf_exchange_interval: 1_000,
        dead_probe_interval: 1_000,
        bootstrap_retry: 200,
        heartbeat_interval: 200,
        parent_timeout: 900,
        child_timeout: 900,
        request_retry: 300,
        request_timeout: 8_000,
        fetch_timeout: 300,
        replica_refresh: 2_000,
        ..Config::default()
    }
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Ids spread over the ring so every peer owns a visible share of it.
fn id(i: usize) -> NodeId {
    NodeId(((i as u128 * 0x1f) << 120) | 0x5a5a_u128 << 40 | i as u128)
}

/// Starts `n` peers; peer 0 is the bootstrap of all others. Returns once all joined.
async fn cluster(n: usize) -> Vec<RuntimeHandle> {
    cluster_with(n, false).await
}

/// [`cluster`], each peer sending on threads of its own when `send_threads`.
async fn cluster_with(n: usize, send_threads: bool) -> Vec<RuntimeHandle> {
    let mut handles: Vec<RuntimeHandle> = Vec::new();
    for i in 0..n {
        let mut node = HostLoop::bind(loopback(), id(i), fast(), i as u64)
            .await
            .unwrap()
            .with_send_threads(send_threads);
        if let Some(first) = handles.first() {
            node.bootstrap(first.overlay_addr());
        }
        let h = node.spawn();
        h.wait_ready(WAIT).await.expect("peer joined");
        handles.push(h);
    }
    // Let leaf-set exchanges spread the late joiners to the early ones.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    handles
}

/// Waits for the first event matching `f`.
async fn wait_for<T>(
    rx: &mut broadcast::Receiver<Event>,
    what: &str,
    mut f: impl FnMut(&Event) -> Option<T>,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        match timeout(deadline - Instant::now(), rx.recv()).await {
            Ok(Ok(e)) => {
                if let Some(t) = f(&e) {
                    return t;
                }
            }
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("event stream ended while waiting for {what}: {e}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

/// Publishes `body` at `h` and waits for the root's answer; returns the committed seq.
/// Retries after a failure (e.g. a request timed out while its root died).
async fn publish(h: &RuntimeHandle, gid: GroupId, req: u64, body: &'static str) -> u64 {
    let deadline = Instant::now() + WAIT;
    let mut attempt = 0;
    loop {
        assert!(
            Instant::now() < deadline,
            "publication {body} never committed"
        );
        let mut rx = h.events();
        let req = PubHandle(req * 100 + attempt);
        attempt += 1;
        h.publish(
            gid,
            req,
            Some(Bytes::from_static(body.as_bytes())),
            None,
            None,
        )
        .await
        .unwrap();
        let outcome = wait_for(&mut rx, "publication outcome", |e| match e {
            Event::Published { req: r, seq, .. } if *r == req => Some(Ok(*seq)),
            Event::PublishFailed { req: r, reason } if *r == req => Some(Err(*reason)),
            _ => None,
        })
        .await;
        match outcome {
            Ok(seq) => return seq,
            Err(e) => eprintln!("publication {body} failed ({e}), retrying"),
        }
    }
}

/// Waits until subscription `sub` is notified of `body`; returns that NOTIFY's seq.
async fn notified(rx: &mut broadcast::Receiver<Event>, sub: SubHandle, body: &str) -> u64 {
    wait_for(rx, &format!("NOTIFY {body} for {sub:?}"), |e| match e {
        Event::Notify {
            handle,
            seq,
            state: Some(s),
            ..
        } if *handle == sub && s[..] == *body.as_bytes() => Some(*seq),
        _ => None,
    })
    .await
}

async fn subscribe(h: &RuntimeHandle, gid: GroupId, sub: SubHandle) -> broadcast::Receiver<Event> {
    let mut rx = h.events();
    h.subscribe(gid, sub, 600).await.unwrap();
    wait_for(&mut rx, "SubAccepted", |e| match e {
        Event::SubAccepted { handle, expires } if *handle == sub => {
            assert_eq!(*expires, 600, "granted expiry");
            Some(())
        }
        Event::SubRejected { handle, reason } if *handle == sub => panic!("rejected: {reason:?}"),
        _ => None,
    })
    .await;
    rx
}

async fn root_of(peers: &[RuntimeHandle], gid: GroupId) -> usize {
    let deadline = Instant::now() + WAIT;
    loop {
        for (i, h) in peers.iter().enumerate() {
            if h.group_view(gid)
                .await
                .unwrap()
                .is_some_and(|v| v.root_active)
            {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no root for {gid}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reaches_subscribers_on_other_peers() {
    let peers = cluster(5).await;
    let gid = GroupId::from_event("sip:alice@example.com", "presence", None);
    assert_eq!(publish(&peers[3], gid, 1, "open").await, 1);

    let (s1, s2) = (SubHandle(11), SubHandle(22));
    let mut rx1 = subscribe(&peers[1], gid, s1).await;
    let mut rx2 = subscribe(&peers[2], gid, s2).await;
    // Synchronous half: each new subscriber gets the latest state at once.
    assert_eq!(notified(&mut rx1, s1, "open").await, 1);
    assert_eq!(notified(&mut rx2, s2, "open").await, 1);

    // Asynchronous half: a later publication from a third peer reaches both.
    assert_eq!(publish(&peers[3], gid, 2, "closed").await, 2);
    assert_eq!(notified(&mut rx1, s1, "closed").await, 2);
    assert_eq!(notified(&mut rx2, s2, "closed").await, 2);

    for p in &peers {
        p.shutdown().await;
        assert!(!p.is_running());
    }
}

/// The process's threads named `tx-…` (the peers' sending threads).
fn send_thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("tx-"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_sending_on_threads_of_their_own_work_and_stop_them() {
    let peers = cluster_with(3, true).await;
    // Only this test turns sending threads on: one per peer (no SIP socket here).
    assert_eq!(send_thread_count(), 3);
    let gid = GroupId::from_event("sip:threads@example.com", "presence", None);
    assert_eq!(publish(&peers[0], gid, 1, "open").await, 1);
    let s = SubHandle(5);
    let mut rx = subscribe(&peers[1], gid, s).await;
    assert_eq!(notified(&mut rx, s, "open").await, 1);
    assert_eq!(publish(&peers[2], gid, 2, "closed").await, 2);
    assert_eq!(notified(&mut rx, s, "closed").await, 2);
    for p in &peers {
        p.shutdown().await;
    }
    // A stopped peer has sent what was queued and ended its thread (joined: the kernel may
    // list a thread a moment after it ended, so look again briefly).
    for _ in 0..50 {
        if send_thread_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(send_thread_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_survives_root_crash() {
    let peers = cluster(6).await;
    let gid = GroupId::from_event("sip:bob@example.com", "presence", None);
    assert_eq!(publish(&peers[0], gid, 1, "v1").await, 1);
    let root = root_of(&peers, gid).await;
    // Subscribers and publisher are three distinct peers other than the root.
    let others: Vec<usize> = (0..peers.len()).filter(|&i| i != root).collect();
    let (a, b, publisher) = (others[0], others[1], others[2]);
    let (sa, sb) = (SubHandle(1), SubHandle(2));
    let mut rxa = subscribe(&peers[a], gid, sa).await;
    let mut rxb = subscribe(&peers[b], gid, sb).await;
    assert_eq!(notified(&mut rxa, sa, "v1").await, 1);
    assert_eq!(notified(&mut rxb, sb, "v1").await, 1);
    assert_eq!(publish(&peers[publisher], gid, 2, "v2").await, 2);
    assert_eq!(notified(&mut rxa, sa, "v2").await, 2);
    assert_eq!(notified(&mut rxb, sb, "v2").await, 2);
    // Give the root time to push the record to its replicas, then crash it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    peers[root].abort().await;
    assert!(!peers[root].is_running());
    assert!(peers[root].stats().await.is_err());

    let seq = publish(&peers[publisher], gid, 3, "v3").await;
    assert!(seq > 2, "new root reused seq {seq}");
    let (na, nb) = (
        notified(&mut rxa, sa, "v3").await,
        notified(&mut rxb, sb, "v3").await,
    );
    assert_eq!((na, nb), (seq, seq));
    let survivors: Vec<RuntimeHandle> = (0..peers.len())
        .filter(|&i| i != root)
        .map(|i| peers[i].clone())
        .collect();
    let new_root = &survivors[root_of(&survivors, gid).await];
    assert_ne!(new_root.id(), peers[root].id());
    let view = new_root.group_view(gid).await.unwrap().unwrap();
    assert_eq!(view.record_seq, Some(seq));
    for (i, p) in peers.iter().enumerate() {
        if i != root {
            p.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_are_counted_and_ignored() {
    let peers = cluster(2).await;
    let target = &peers[1];
    let before = target.stats().await.unwrap();
    let junk = UdpSocket::bind(loopback()).await.unwrap();
    for bytes in [
        &b""[..],
        b"\xff",
        b"INVITE sip:x SIP/2.0\r\n\r\n",
        &[0u8; 3000],
    ] {
        junk.send_to(bytes, target.overlay_addr()).await.unwrap();
    }
    let deadline = Instant::now() + WAIT;
    let after = loop {
        let s = target.stats().await.unwrap();
        if s.overlay.rx_dropped() >= before.overlay.rx_dropped() + 4 {
            break s;
        }
        assert!(Instant::now() < deadline, "garbage not counted: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(after.overlay.rx_dropped(), before.overlay.rx_dropped() + 4);
    // The peer still works: a lookup from the other peer is answered by one of the two.
    let key = target.id().0;
    let mut rx = target.events();
    peers[0].lookup(key, 99).await.unwrap();
    wait_for(&mut rx, "lookup", |e| match e {
        Event::LookupDelivered { token: 99, .. } => Some(()),
        _ => None,
    })
    .await;
    assert!(target.is_ready().await.unwrap());
    for p in &peers {
        p.shutdown().await;
    }
}

/// The runtime's SIP socket reaches the host's SIP endpoint, and the SIP layer's timers fire
/// through the event loop: a NOTIFY the user agent does not answer is retransmitted (Timer E),
/// unchanged, until it is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_socket_and_sip_timers_run_in_the_event_loop() {
    let node = HostLoop::bind(loopback(), id(1), fast(), 1).await.unwrap();
    let node = node
        .bind_sip(loopback(), sascribe::sip::SipConfig::new)
        .await
        .unwrap();
    let h = node.spawn();
    let sip = h.sip_addr().expect("SIP socket bound");
    let mut ua = Ua::new().await;
    let ct = "Event: presence\r\nExpires: 600\r\nContent-Type: application/pidf+xml\r\n";
    ua.send(sip, "PUBLISH", "rt-pub", ct, &pidf("open")).await;
    ua.expect("SIP/2.0 200").await;
    ua.send(
        sip,
        "SUBSCRIBE",
        "rt-sub",
        "Event: presence\r\nExpires: 600\r\n",
        "",
    )
    .await;
    ua.expect("SIP/2.0 200").await;
    // Read NOTIFYs without answering: the first one comes again after T1 = 500 ms.
    let first = ua.recv_raw().await;
    assert!(first.starts_with("NOTIFY "), "{first}");
    let started = Instant::now();
    let again = ua.recv_raw().await;
    assert_eq!(
        again, first,
        "a retransmission repeats the NOTIFY byte for byte"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "Timer E starts at T1"
    );
    assert!(
        h.stats().await.unwrap().sip.unwrap().notify_retransmissions >= 1,
        "counted"
    );
    h.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The same event loop over a harness-owned network and clock.

mod harness {
    use sascribe::runtime::{Clock, Transport};
    use sascribe::Millis;
    use std::collections::HashMap;
    use std::future::Future;
    use std::io;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};
    use tokio::sync::{mpsc, watch};

    type Datagram = (Vec<u8>, SocketAddr);

    /// An in-memory datagram network: instant, lossless delivery between registered addresses.
    #[derive(Clone, Default)]
    pub struct MemNet {
        links: Arc<Mutex<HashMap<SocketAddr, mpsc::UnboundedSender<Datagram>>>>,
    }

    impl MemNet {
        pub fn socket(&self, addr: SocketAddr) -> MemSocket {
            let (tx, rx) = mpsc::unbounded_channel();
            self.links.lock().unwrap().insert(addr, tx);
            MemSocket {
                net: self.clone(),
                addr,
                rx: tokio::sync::Mutex::new(rx),
            }
        }
    }

    pub struct MemSocket {
        net: MemNet,
        addr: SocketAddr,
        rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Datagram>>,
    }

    impl Transport for MemSocket {
        async fn send_to(&self, buf: &[u8], dst: SocketAddr) -> io::Result<()> {
            let link = self.net.links.lock().unwrap().get(&dst).cloned();
            match link {
                Some(l) if l.send((buf.to_vec(), self.addr)).is_ok() => Ok(()),
                _ => Err(io::ErrorKind::ConnectionRefused.into()),
            }
        }
        async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
            let mut rx = self.rx.lock().await;
            let (bytes, from) = rx.recv().await.ok_or(io::ErrorKind::NotConnected)?;
            let n = bytes.len().min(buf.len());
            buf[..n].copy_from_slice(&bytes[..n]);
            Ok((n, from))
        }
        fn local_addr(&self) -> io::Result<SocketAddr> {
            Ok(self.addr)
        }
    }

    /// Virtual time that moves only when the test says so.
    #[derive(Clone)]
    pub struct ManualClock(Arc<watch::Sender<Millis>>);

    impl ManualClock {
        pub fn new() -> Self {
            ManualClock(Arc::new(watch::channel(0).0))
        }
        pub fn advance(&self, by: Millis) {
            self.0.send_modify(|t| *t += by);
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Millis {
            *self.0.borrow()
        }
        fn sleep_until(&self, at: Millis) -> impl Future<Output = ()> + Send {
            let mut rx = self.0.subscribe();
            async move {
                // The sender lives as long as the clock: `Err` cannot happen while we run.
                let _ = rx.wait_for(|t| *t >= at).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_over_a_harness_network_and_clock() {
    use harness::{ManualClock, MemNet};
    use sascribe::runtime::Clock;
    let net = MemNet::default();
    let clock = ManualClock::new();
    let addr = |i: u8| SocketAddr::from(([10, 0, 0, i], 5060));
    let mut handles = Vec::new();
    for i in 0..3u8 {
        let host = Host::new(
            id(usize::from(i)),
            addr(i),
            fast(),
            0,
            Seeds::reproducible(u64::from(i)),
        );
        let mut node = HostLoop::new(host, net.socket(addr(i)), clock.clone());
        if i > 0 {
            node.bootstrap(addr(0));
        }
        handles.push(node.spawn());
    }
    // Joins need no time to pass: delivery is instant.
    for h in &handles {
        h.wait_ready(WAIT)
            .await
            .expect("joined over the in-memory network");
    }
    let gid = GroupId::from_event("sip:dave@example.com", "presence", None);
    assert_eq!(publish(&handles[2], gid, 1, "here").await, 1);
    let sub = SubHandle(5);
    let mut rx = subscribe(&handles[1], gid, sub).await;
    assert_eq!(notified(&mut rx, sub, "here").await, 1);

    // The subscription (60 s, the minimum) expires on the virtual clock, in well under a second
    // of real time; heartbeats keep the overlay alive meanwhile.
    handles[1].refresh(sub, 60).await.unwrap();
    let started = Instant::now();
    let expired = async {
        wait_for(&mut rx, "expiry", |e| match e {
            Event::SubTerminated { handle, .. } if *handle == sub => Some(()),
            _ => None,
        })
        .await
    };
    let ticker = async {
        for _ in 0..800 {
            clock.advance(100);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::select! {
        () = expired => {}
        () = ticker => panic!("no expiry after 80 virtual seconds"),
    }
    assert!(
        clock.now() >= 60_000,
        "expired at virtual {} ms",
        clock.now()
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    for h in &handles {
        h.shutdown().await;
    }
}

// ---------------------------------------------------------------------------------------------
// The `sascribe` binary.

#[cfg(unix)]
#[test]
fn cli_cluster_prints_addresses_and_stops_cleanly() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_sascribe"))
        .args([
            "cluster",
            "--peers",
            "3",
            "--base-port",
            "0",
            "--sip-base-port",
            "0",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sascribe runs");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    while lines.last().map(String::as_str) != Some("ready") {
        match rx.recv_timeout(WAIT) {
            Ok(l) => lines.push(l),
            Err(e) => {
                let _ = child.kill();
                panic!("no `ready` ({e}); got {lines:?}");
            }
        }
    }
    assert_eq!(lines.len(), 4, "{lines:?}");
    for (i, l) in lines[..3].iter().enumerate() {
        assert!(l.starts_with(&format!("peer {i} id ")), "{l}");
        let sip: SocketAddr = l
            .split_once(" SIP ")
            .and_then(|(_, a)| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("no SIP address in {l:?}"));
        assert!(sip.ip().is_loopback() && sip.port() != 0, "{l}");
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = std::time::Instant::now() + WAIT;
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0));
}

#[test]
fn cli_rejects_invalid_arguments_with_status_2() {
    use std::process::Command;
    let dir = std::env::temp_dir().join(format!("sascribe-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad_toml = dir.join("bad.toml");
    std::fs::write(&bad_toml, "leaf_set_size = 3\n").unwrap();
    let bad_toml = bad_toml.to_str().unwrap().to_owned();
    let cases: &[&[&str]] = &[
        &[],
        &["peer"],
        &["peer", "--listen", "not-an-address"],
        &["peer", "--listen", "127.0.0.1:0", "--id", "xyz"],
        &[
            "peer",
            "--listen",
            "127.0.0.1:0",
            "--id",
            "123456789012345678901234567890123",
        ],
        &["peer", "--listen", "127.0.0.1:0", "--config", &bad_toml],
        &[
            "peer",
            "--listen",
            "127.0.0.1:0",
            "--config",
            "/nonexistent/sascribe.toml",
        ],
        &["cluster", "--peers", "0"],
        &["cluster", "--base-port", "65530"],
        &["cluster", "--base-port", "7000", "--sip-base-port", "7004"],
        &["frobnicate"],
    ];
    for args in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_sascribe"))
            .args(*args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.trim().is_empty() && !err.contains("panicked"),
            "{args:?}: {err}"
        );
        if !args.is_empty() {
            assert!(err.contains("error:"), "{args:?}: {err}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs `sascribe peer ARGS` until it is ready, stops it with SIGTERM, and returns what it
/// logged on stderr (at `warn`).
fn peer_stderr(args: &[&str]) -> String {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_sascribe"))
        .arg("peer")
        .args(args)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sascribe runs");
    let mut stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    while lines.last().map(String::as_str) != Some("ready") {
        match rx.recv_timeout(WAIT) {
            Ok(l) => lines.push(l),
            Err(e) => {
                let _ = child.kill();
                panic!("{args:?}: no `ready` ({e}); got {lines:?}");
            }
        }
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(0), "{args:?}");
    err.join().unwrap()
}

#[test]
fn cli_peer_warns_when_sip_beyond_loopback_has_no_authentication() {
    const WARNING: &str = "NO SIP AUTHENTICATION";
    let listen = ["--listen", "127.0.0.1:0"];
    let auth = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/auth/sascribe.toml");
    let wildcard = peer_stderr(&[&listen[..], &["--sip", "0.0.0.0:0"]].concat());
    assert!(wildcard.contains(WARNING), "{wildcard}");
    assert!(wildcard.contains("WARN"), "{wildcard}");
    let loopback = peer_stderr(&[&listen[..], &["--sip", "127.0.0.1:0"]].concat());
    assert!(!loopback.contains(WARNING), "{loopback}");
    let with_auth = peer_stderr(&[&listen[..], &["--sip", "0.0.0.0:0", "--config", auth]].concat());
    assert!(!with_auth.contains(WARNING), "{with_auth}");
}

// ---------------------------------------------------------------------------------------------
// SIP user agents over real UDP, through the runtime and the SIP front end.

/// A bare-bones SIP UA on a loopback socket: sends requests, answers NOTIFYs with 200.
struct Ua {
    sock: UdpSocket,
    cseq: u32,
}

impl Ua {
    async fn new() -> Ua {
        Ua {
            sock: UdpSocket::bind(loopback()).await.unwrap(),
            cseq: 0,
        }
    }

    async fn send(&mut self, to: SocketAddr, method: &str, call_id: &str, extra: &str, body: &str) {
        self.cseq += 1;
        let me = self.sock.local_addr().unwrap();
        let msg = format!(
            "{method} sip:erin@example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};branch=z9hG4bK-{call_id}-{cseq}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:ua@example.com>;tag=ua-{call_id}\r\n\
             To: <sip:erin@example.com>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:ua@{me}>\r\n\
             {extra}Content-Length: {len}\r\n\r\n{body}",
            cseq = self.cseq,
            len = body.len()
        );
        self.sock.send_to(msg.as_bytes(), to).await.unwrap();
    }

    /// The next datagram, unanswered.
    async fn recv_raw(&self) -> String {
        let mut buf = vec![0u8; 65_535];
        let (n, _) = timeout(WAIT, self.sock.recv_from(&mut buf))
            .await
            .expect("a datagram in time")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Next message whose first line starts with `start`; NOTIFYs met on the way are answered.
    async fn expect(&self, start: &str) -> String {
        let mut buf = vec![0u8; 65_535];
        let deadline = Instant::now() + WAIT;
        loop {
            let (n, from) = timeout(deadline - Instant::now(), self.sock.recv_from(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {start}"))
                .unwrap();
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if text.starts_with("NOTIFY ") {
                self.answer(&text, from).await;
            }
            if text.starts_with(start) {
                return text;
            }
        }
    }

    async fn answer(&self, request: &str, to: SocketAddr) {
        let mut resp = String::from("SIP/2.0 200 OK\r\n");
        for line in request.lines().take_while(|l| !l.is_empty()) {
            let name = line
                .split(':')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if ["via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"].contains(&name.as_str())
            {
                resp.push_str(line);
                resp.push_str("\r\n");
            }
        }
        resp.push_str("Content-Length: 0\r\n\r\n");
        self.sock.send_to(resp.as_bytes(), to).await.unwrap();
    }
}

fn pidf(basic: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" \
         entity=\"sip:erin@example.com\"><tuple id=\"t\"><status><basic>{basic}</basic></status></tuple></presence>"
    )
}

/// Starts `n` SIP gateway peers; peer 0 is the bootstrap of all others. Returns once all
/// joined.
async fn gateways(n: usize) -> Vec<RuntimeHandle> {
    use sascribe::sip::SipConfig;
    let mut peers: Vec<RuntimeHandle> = Vec::new();
    for i in 0..n {
        let mut node = HostLoop::bind(loopback(), id(i), fast(), i as u64)
            .await
            .unwrap()
            .bind_sip(loopback(), SipConfig::new)
            .await
            .unwrap();
        if let Some(first) = peers.first() {
            node.bootstrap(first.overlay_addr());
        }
        let h = node.spawn();
        h.wait_ready(WAIT).await.unwrap();
        peers.push(h);
    }
    peers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_user_agents_through_the_runtime() {
    let peers = gateways(4).await;
    let sip = |i: usize| peers[i].sip_addr().unwrap();
    let (mut alice, mut bob) = (Ua::new().await, Ua::new().await);
    let ct = "Event: presence\r\nExpires: 600\r\nContent-Type: application/pidf+xml\r\n";

    alice
        .send(sip(3), "PUBLISH", "pub-1", ct, &pidf("open"))
        .await;
    let ok = alice.expect("SIP/2.0 200").await;
    assert!(ok.to_ascii_lowercase().contains("sip-etag:"), "{ok}");

    bob.send(
        sip(1),
        "SUBSCRIBE",
        "sub-1",
        "Event: presence\r\nExpires: 600\r\nAccept: application/pidf+xml\r\n",
        "",
    )
    .await;
    bob.expect("SIP/2.0 200").await;
    let first = bob.expect("NOTIFY ").await;
    assert!(first.contains("<basic>open</basic>"), "{first}");

    alice
        .send(sip(2), "PUBLISH", "pub-2", ct, &pidf("closed"))
        .await;
    alice.expect("SIP/2.0 200").await;
    let second = bob.expect("NOTIFY ").await;
    assert!(second.contains("<basic>closed</basic>"), "{second}");
    for p in &peers {
        p.shutdown().await;
    }
}

/// The header `name`'s value in SIP message `text` (first occurrence).
fn header<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().take_while(|l| !l.is_empty()).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Issue 13, item 8, through the runtime: a gateway stopped in an orderly way hands its
/// subscriber's dialog to another gateway, whose NOTIFY (same dialog, its own Contact) reaches
/// the subscriber; the subscriber's refresh, sent to that Contact, is answered 200 there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_gateway_hands_its_dialogs_over() {
    let peers = gateways(3).await;
    // Every peer knows both others before one leaves.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let sip = |i: usize| peers[i].sip_addr().unwrap();
    let mut bob = Ua::new().await;
    let sub = "Event: presence\r\nExpires: 600\r\nAccept: application/pidf+xml\r\n";
    bob.send(sip(1), "SUBSCRIBE", "moving", sub, "").await;
    let ok = bob.expect("SIP/2.0 200").await;
    let to = header(&ok, "To").expect("To").to_string();
    let first = bob.expect("NOTIFY ").await;
    assert!(first.contains("Subscription-State: active"), "{first}");
    peers[1].shutdown().await;
    let moved = bob.expect("NOTIFY ").await;
    assert!(moved.contains("Call-ID: moving"), "{moved}");
    assert!(moved.contains("Subscription-State: active"), "{moved}");
    let contact = header(&moved, "Contact").expect("Contact");
    let taker = [0, 2]
        .into_iter()
        .find(|&i| contact.contains(&sip(i).to_string()))
        .unwrap_or_else(|| panic!("the NOTIFY comes from a live gateway: {moved}"));
    // The refresh, in the dialog, to where the NOTIFY pointed.
    let me = bob.sock.local_addr().unwrap();
    let refresh = format!(
        "SUBSCRIBE sip:erin@example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch=z9hG4bK-moving-refresh\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:ua@example.com>;tag=ua-moving\r\n\
         To: {to}\r\n\
         Call-ID: moving\r\n\
         CSeq: 2 SUBSCRIBE\r\n\
         Contact: <sip:ua@{me}>\r\n\
         {sub}Content-Length: 0\r\n\r\n"
    );
    bob.sock
        .send_to(refresh.as_bytes(), sip(taker))
        .await
        .unwrap();
    let answer = bob.expect("SIP/2.0 ").await;
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
    let st = peers[taker].stats().await.unwrap().sip.unwrap();
    assert_eq!(st.taken_over, 1);
    for (i, p) in peers.iter().enumerate() {
        if i != 1 {
            p.shutdown().await;
        }
    }
}
