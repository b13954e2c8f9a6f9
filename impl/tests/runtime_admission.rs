//! Admission control through the tokio runtime: its queues stay bounded, and the backlog it
//! reports to the core ([`sascribe::Input::Backlog`]) makes the SIP front end refuse new work
//! with 503 + Retry-After until the backlog is gone.
//!
//! Run: `cargo test -p sascribe --test runtime_admission`.

use sascribe::runtime::{HostLoop, RuntimeHandle};
use sascribe::sip::SipConfig;
use sascribe::{Config, NodeId};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(15);
const EVENTS: usize = 32;

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn gateway() -> RuntimeHandle {
    let node = HostLoop::bind(loopback(), NodeId(9 << 100), Config::default(), 9)
        .await
        .unwrap()
        .bind_sip(loopback(), SipConfig::new)
        .await
        .unwrap()
        .with_event_capacity(EVENTS);
    let h = node.spawn();
    h.wait_ready(WAIT).await.unwrap();
    h
}

fn publish(me: SocketAddr, k: u32) -> String {
    let body = "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" \
                entity=\"sip:tess@example.com\"><tuple id=\"t\"><status><basic>open</basic></status></tuple></presence>";
    format!(
        "PUBLISH sip:tess{k}@example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch=z9hG4bK-q{k}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:tess@example.com>;tag=q{k}\r\n\
         To: <sip:tess{k}@example.com>\r\n\
         Call-ID: q{k}\r\n\
         CSeq: 1 PUBLISH\r\n\
         Event: presence\r\n\
         Expires: 600\r\n\
         Content-Type: application/pidf+xml\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Sends `text` and returns the first final response's status line.
async fn ask(ua: &UdpSocket, to: SocketAddr, text: &str) -> String {
    ua.send_to(text.as_bytes(), to).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, _) = timeout(WAIT, ua.recv_from(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        let r = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !r.starts_with("SIP/2.0 1") {
            return r;
        }
    }
}

/// An event receiver that stops reading fills the (bounded) event broadcast; once it is half
/// full the runtime reports the backlog and new PUBLISHes get 503 + Retry-After; the queue
/// never exceeds its capacity; when the receiver goes, publications are served again.
#[tokio::test]
async fn event_queue_stays_bounded_and_backs_off_new_work() {
    let h = gateway().await;
    let to = h.sip_addr().unwrap();
    let ua = UdpSocket::bind(loopback()).await.unwrap();
    let me = ua.local_addr().unwrap();
    let idle = h.events();
    let mut refused = None;
    for k in 0..4 * EVENTS as u32 {
        let r = ask(&ua, to, &publish(me, k)).await;
        assert!(h.events_queued() <= EVENTS);
        if r.starts_with("SIP/2.0 503") {
            refused = Some((k, r));
            break;
        }
        assert!(r.starts_with("SIP/2.0 200"), "{r}");
    }
    let (k, r) = refused.expect("new work refused once the event queue backed up");
    assert!(k as usize >= EVENTS / 4, "refused after {k} publications");
    assert!(r.contains("\r\nRetry-After: "), "{r}");
    let sip = h.stats().await.unwrap().sip.unwrap();
    assert_eq!(sip.overload_refused, 1);
    assert!(h.events_queued() <= EVENTS);
    drop(idle);
    let r = ask(&ua, to, &publish(me, 1_000)).await;
    assert!(r.starts_with("SIP/2.0 200"), "{r}");
    h.shutdown().await;
}

/// A busy socket is not a backed-up one: a client that keeps 64 PUBLISHes outstanding (each
/// answer lets it send the next) keeps the SIP socket busy without a pause, yet never more
/// than 64 datagrams wait in it, a quarter of a full queue. All 1,000 get 200, none 503
/// (the backlog was once the length of a run of reads that never found the socket empty,
/// which such a client made grow without bound).
#[tokio::test]
async fn a_busy_socket_with_a_short_queue_is_not_overloaded() {
    let h = gateway().await;
    let to = h.sip_addr().unwrap();
    let ua = UdpSocket::bind(loopback()).await.unwrap();
    let me = ua.local_addr().unwrap();
    let (total, window) = (1_000u32, 64u32);
    let mut sent = 0;
    while sent < window {
        ua.send_to(publish(me, sent).as_bytes(), to).await.unwrap();
        sent += 1;
    }
    let mut buf = vec![0u8; 65_535];
    let (mut ok, mut other) = (0u32, Vec::new());
    while ok + (other.len() as u32) < total {
        let (n, _) = timeout(WAIT, ua.recv_from(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        let r = String::from_utf8_lossy(&buf[..n]).into_owned();
        if r.starts_with("SIP/2.0 1") {
            continue;
        }
        if r.starts_with("SIP/2.0 200") {
            ok += 1;
        } else {
            other.push(r.lines().next().unwrap_or_default().to_string());
        }
        if sent < total {
            ua.send_to(publish(me, sent).as_bytes(), to).await.unwrap();
            sent += 1;
        }
    }
    assert!(
        other.is_empty(),
        "{} refused: {:?}",
        other.len(),
        &other[..other.len().min(3)]
    );
    assert_eq!(ok, total);
    assert_eq!(h.stats().await.unwrap().sip.unwrap().overload_refused, 0);
    h.shutdown().await;
}
