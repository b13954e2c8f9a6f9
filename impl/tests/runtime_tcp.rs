//! SIP over TCP through the tokio runtime: tokio `TcpStream` user agents against a `HostLoop`
//! whose SIP front end serves UDP and TCP on one port.
//!
//! Run: `cargo test -p sascribe --test runtime_tcp`.

use sascribe::runtime::{HostLoop, RuntimeHandle};
use sascribe::sip::stream::{next_frame, Frame, Limits};
use sascribe::sip::SipConfig;
use sascribe::{Config, NodeId};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::time::{timeout, Instant};

const WAIT: Duration = Duration::from_secs(15);

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// One gateway peer (a one-peer overlay) with SIP on UDP and TCP; `cfg` adjusts its endpoint.
async fn gateway(cfg: impl FnOnce(SipConfig) -> SipConfig) -> RuntimeHandle {
    let node = HostLoop::bind(loopback(), NodeId(7 << 100), Config::default(), 7)
        .await
        .unwrap()
        .bind_sip(loopback(), |a| cfg(SipConfig::new(a)))
        .await
        .unwrap();
    let h = node.spawn();
    h.wait_ready(WAIT).await.unwrap();
    h
}

fn pidf(basic: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" \
         entity=\"sip:tess@example.com\"><tuple id=\"t\"><status><basic>{basic}</basic></status></tuple></presence>"
    )
}

/// A SIP user agent on one TCP connection: writes requests, frames what it reads.
struct TcpUa {
    stream: TcpStream,
    buf: Vec<u8>,
    cseq: u32,
    /// The Contact it puts in its SUBSCRIBEs.
    contact: SocketAddr,
}

impl TcpUa {
    async fn connect(to: SocketAddr, contact: SocketAddr) -> TcpUa {
        let stream = timeout(WAIT, TcpStream::connect(to))
            .await
            .expect("connect in time")
            .unwrap();
        TcpUa::on(stream, contact)
    }

    fn on(stream: TcpStream, contact: SocketAddr) -> TcpUa {
        TcpUa {
            stream,
            buf: Vec::new(),
            cseq: 0,
            contact,
        }
    }

    fn request(&mut self, method: &str, call_id: &str, extra: &str, body: &str) -> String {
        self.cseq += 1;
        let me = self.contact;
        format!(
            "{method} sip:tess@example.com SIP/2.0\r\n\
             Via: SIP/2.0/TCP {me};branch=z9hG4bK-{call_id}-{cseq}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:ua@example.com>;tag=ua-{call_id}\r\n\
             To: <sip:tess@example.com>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:ua@{me}>\r\n\
             {extra}Content-Length: {len}\r\n\r\n{body}",
            cseq = self.cseq,
            len = body.len()
        )
    }

    async fn write(&mut self, bytes: &[u8]) {
        timeout(WAIT, self.stream.write_all(bytes))
            .await
            .expect("write in time")
            .unwrap();
    }

    async fn send(&mut self, method: &str, call_id: &str, extra: &str, body: &str) {
        let msg = self.request(method, call_id, extra, body);
        self.write(msg.as_bytes()).await;
    }

    /// The next message on the connection (`None`: it was closed).
    async fn next(&mut self) -> Option<String> {
        let lim = Limits {
            max_header: 1 << 16,
            max_message: 1 << 20,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            match next_frame(&self.buf, &lim).expect("the peer writes framable SIP") {
                Some(Frame::Message(n)) => {
                    let m = String::from_utf8_lossy(&self.buf[..n]).into_owned();
                    self.buf.drain(..n);
                    return Some(m);
                }
                Some(f) => {
                    self.buf.drain(..f.len());
                    continue;
                }
                None => {}
            }
            let mut chunk = [0u8; 4096];
            let n = timeout(deadline - Instant::now(), self.stream.read(&mut chunk))
                .await
                .expect("a message or EOF in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next message whose first line starts with `start`; NOTIFYs met on the way are
    /// answered with 200 on the connection.
    async fn expect(&mut self, start: &str) -> String {
        loop {
            let m = self
                .next()
                .await
                .unwrap_or_else(|| panic!("connection closed while waiting for {start}"));
            if m.starts_with("NOTIFY ") {
                let ok = ok_for(&m);
                self.write(ok.as_bytes()).await;
            }
            if m.starts_with(start) {
                return m;
            }
        }
    }
}

/// The 200 a UA sends for request `m`.
fn ok_for(m: &str) -> String {
    let mut resp = String::from("SIP/2.0 200 OK\r\n");
    for line in m.lines().take_while(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
        if ["via", "from", "to", "call-id", "cseq"].contains(&name.trim()) {
            resp.push_str(line);
            resp.push_str("\r\n");
        }
    }
    resp.push_str("Content-Length: 0\r\n\r\n");
    resp
}

const PUB: &str = "Event: presence\r\nExpires: 600\r\nContent-Type: application/pidf+xml\r\n";
const SUB: &str = "Event: presence\r\nExpires: 600\r\nAccept: application/pidf+xml\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_subscribe_over_tcp() {
    let h = gateway(|c| c).await;
    let sip = h.sip_addr().unwrap();
    // The subscriber's Contact: a listener of its own, for when its connection is gone.
    let contact = TcpListener::bind(loopback()).await.unwrap();
    let contact_addr = contact.local_addr().unwrap();

    let mut alice = TcpUa::connect(sip, "127.0.0.1:5999".parse().unwrap()).await;
    // A request split across two writes, then read back on the same connection.
    let publish = alice.request("PUBLISH", "tcp-pub-1", PUB, &pidf("open"));
    let (a, b) = publish.split_at(publish.len() / 2);
    alice.write(a.as_bytes()).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    alice.write(b.as_bytes()).await;
    let ok = alice.expect("SIP/2.0 200").await;
    assert!(ok.to_ascii_lowercase().contains("sip-etag:"), "{ok}");
    assert!(ok.contains("Via: SIP/2.0/TCP 127.0.0.1:5999"), "{ok}");

    let mut bob = TcpUa::connect(sip, contact_addr).await;
    bob.send("SUBSCRIBE", "tcp-sub-1", SUB, "").await;
    let ok = bob.expect("SIP/2.0 200").await;
    assert!(ok.contains(";transport=tcp>"), "{ok}");
    let first = bob.expect("NOTIFY ").await;
    assert!(first.contains("<basic>open</basic>"), "{first}");
    assert!(first.contains("Via: SIP/2.0/TCP "), "{first}");

    alice
        .send("PUBLISH", "tcp-pub-2", PUB, &pidf("closed"))
        .await;
    alice.expect("SIP/2.0 200").await;
    let second = bob.expect("NOTIFY ").await;
    assert!(second.contains("<basic>closed</basic>"), "{second}");

    // The subscriber's connection goes away: the next NOTIFY comes on a new connection to
    // its Contact.
    drop(bob);
    let deadline = Instant::now() + WAIT;
    while h.stats().await.unwrap().sip_connections != 1 {
        assert!(
            Instant::now() < deadline,
            "the close never reached the host"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    alice.send("PUBLISH", "tcp-pub-3", PUB, &pidf("away")).await;
    alice.expect("SIP/2.0 200").await;
    let (stream, _) = timeout(WAIT, contact.accept())
        .await
        .expect("the peer connects to the Contact")
        .unwrap();
    let mut bob = TcpUa::on(stream, contact_addr);
    let third = bob.expect("NOTIFY ").await;
    assert!(third.contains("<basic>away</basic>"), "{third}");
    let s = h.stats().await.unwrap();
    let sip_stats = s.sip.unwrap();
    assert_eq!(sip_stats.connections_opened, 3, "{sip_stats:?}");
    assert_eq!(sip_stats.notify_retransmissions, 0);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_closes_only_its_connection() {
    let h = gateway(|c| c).await;
    let sip = h.sip_addr().unwrap();
    let me: SocketAddr = "127.0.0.1:5998".parse().unwrap();
    let mut good = TcpUa::connect(sip, me).await;
    let mut bad = TcpUa::connect(sip, me).await;
    bad.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let answer = bad.next().await.expect("a 400 before the close");
    assert!(answer.starts_with("SIP/2.0 400 "), "{answer}");
    assert_eq!(bad.next().await, None, "then the connection is closed");
    // A keep-alive ping, then a request: both answered on the other connection.
    good.write(b"\r\n\r\n").await;
    good.send("OPTIONS", "tcp-opt", "", "").await;
    let ok = good.expect("SIP/2.0 200").await;
    assert!(ok.contains("Allow:"), "{ok}");
    // UDP on the same port is served too.
    let udp = UdpSocket::bind(loopback()).await.unwrap();
    let opt = good.request("OPTIONS", "udp-opt", "", "").replace(
        "SIP/2.0/TCP 127.0.0.1:5998",
        &format!("SIP/2.0/UDP {}", udp.local_addr().unwrap()),
    );
    udp.send_to(opt.as_bytes(), sip).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    let (n, _) = timeout(WAIT, udp.recv_from(&mut buf))
        .await
        .expect("a UDP answer in time")
        .unwrap();
    assert!(buf[..n].starts_with(b"SIP/2.0 200 "));
    let s = h.stats().await.unwrap().sip.unwrap();
    assert_eq!((s.stream_framing_errors, s.keepalives), (1, 1), "{s:?}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_surplus_connections_are_closed() {
    let h = gateway(|mut c| {
        c.conn_idle_timeout = 2_000;
        c.max_connections = 2;
        c
    })
    .await;
    let sip = h.sip_addr().unwrap();
    let me: SocketAddr = "127.0.0.1:5997".parse().unwrap();
    let started = Instant::now();
    let mut idle = TcpUa::connect(sip, me).await;
    let mut other = TcpUa::connect(sip, me).await;
    // Both are open (the second answered, the first was accepted before it): a third is
    // refused at once.
    other.send("OPTIONS", "tcp-opt-2", "", "").await;
    other.expect("SIP/2.0 200").await;
    let mut surplus = TcpUa::connect(sip, me).await;
    assert_eq!(surplus.next().await, None, "closed beyond max_connections");
    // One that never speaks is closed by the idle timeout.
    assert_eq!(idle.next().await, None, "closed when idle");
    // (The host's clock counts whole milliseconds, and its timers may fire a hair early.)
    assert!(started.elapsed() >= Duration::from_millis(1_900));
    let s = h.stats().await.unwrap();
    assert!(s.sip.unwrap().connections_closed >= 1);
    h.shutdown().await;
}

/// A user agent that sends requests and never reads its responses: once its write queue is
/// full, or a write to it has waited `IO_TIMEOUT` (10 s), the connection is dropped (and the
/// host told), while the loop goes on serving others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_does_not_read_is_dropped_without_blocking_the_loop() {
    let h = gateway(|c| c).await;
    let sip = h.sip_addr().unwrap();
    let me: SocketAddr = "127.0.0.1:5996".parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let deaf = timeout(WAIT, socket.connect(sip))
        .await
        .expect("connect in time")
        .unwrap();
    let (mut rd, mut wr) = deaf.into_split();
    let mut ua = TcpUa::on(TcpStream::connect(sip).await.unwrap(), me);
    let flood: String = (0..200)
        .map(|i| ua.request("OPTIONS", &format!("flood-{i}"), "", ""))
        .collect();
    // Writes until the peer stops reading (then this task waits) or drops the connection.
    let writer = tokio::spawn(async move {
        for _ in 0..500 {
            if wr.write_all(flood.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + 3 * WAIT;
    loop {
        let s = h.stats().await.unwrap().sip.unwrap();
        if s.connections_closed >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the deaf connection was never dropped: {s:?}"
        );
        // The loop serves another connection all along.
        ua.send("OPTIONS", "still-served", "", "").await;
        ua.expect("SIP/2.0 200").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The deaf side finds its connection gone: what it reads ends (EOF or reset) in time.
    let mut sink = vec![0u8; 1 << 16];
    let gone = timeout(WAIT, async {
        loop {
            match rd.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(gone.is_ok(), "the dropped connection still delivers");
    writer.abort();
    ua.send("OPTIONS", "after", "", "").await;
    ua.expect("SIP/2.0 200").await;
    h.shutdown().await;
}

/// An orderly shutdown (SIGTERM: `RuntimeHandle::shutdown`) tells every subscriber, on its
/// own connection, that its subscription ended with `reason=deactivated` (subscribe again,
/// elsewhere: RFC 6665 §4.2.2), and the connection closes after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_subscribers_to_subscribe_again() {
    let h = gateway(|c| c).await;
    let sip = h.sip_addr().unwrap();
    let mut bob = TcpUa::connect(sip, "127.0.0.1:5998".parse().unwrap()).await;
    bob.send("SUBSCRIBE", "tcp-sub-bye", SUB, "").await;
    bob.expect("SIP/2.0 200").await;
    let first = bob.expect("NOTIFY ").await;
    assert!(first.contains("Subscription-State: active"), "{first}");
    h.shutdown().await;
    let last = bob.expect("NOTIFY ").await;
    assert!(
        last.contains("Subscription-State: terminated;reason=deactivated"),
        "{last}"
    );
    assert!(bob.next().await.is_none(), "the connection closes");
}

/// Issue 13, item 8, over TCP: a gateway stopped in an orderly way hands its TCP subscriber's
/// dialog to the other gateway, which opens a connection to the subscriber's Contact and
/// notifies it there, in the same dialog, with its own Contact (`;transport=tcp`); the old
/// connection closes without a terminated NOTIFY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_gateway_hands_a_tcp_dialog_over() {
    let a = gateway(|c| c).await;
    let node = HostLoop::bind(loopback(), NodeId(9 << 100), Config::default(), 9)
        .await
        .unwrap()
        .bind_sip(loopback(), SipConfig::new);
    let mut node = node.await.unwrap();
    node.bootstrap(a.overlay_addr());
    let b = node.spawn();
    b.wait_ready(WAIT).await.unwrap();
    // Both know each other before one leaves.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let contact = TcpListener::bind(loopback()).await.unwrap();
    let contact_addr = contact.local_addr().unwrap();
    let mut bob = TcpUa::connect(a.sip_addr().unwrap(), contact_addr).await;
    bob.send("SUBSCRIBE", "tcp-moving", SUB, "").await;
    bob.expect("SIP/2.0 200").await;
    let first = bob.expect("NOTIFY ").await;
    assert!(first.contains("Subscription-State: active"), "{first}");
    a.shutdown().await;
    let (stream, _) = timeout(WAIT, contact.accept())
        .await
        .expect("the taker connects to the Contact")
        .unwrap();
    let mut moved = TcpUa::on(stream, contact_addr);
    let notify = moved.expect("NOTIFY ").await;
    assert!(notify.contains("Call-ID: tcp-moving"), "{notify}");
    assert!(notify.contains("Subscription-State: active"), "{notify}");
    let b_sip = b.sip_addr().unwrap();
    assert!(
        notify.contains(&format!("Contact: <sip:{b_sip};transport=tcp>")),
        "{notify}"
    );
    // The old connection ends with nothing more on it.
    assert_eq!(bob.next().await, None, "the old connection closes quietly");
    b.shutdown().await;
}
