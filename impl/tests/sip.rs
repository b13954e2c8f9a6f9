//! The SIP front end driven like a stock UA would drive a presence server: raw SIP text in,
//! raw SIP text out, over a small in-memory overlay with virtual time.
//!
//! Run: `cargo test -p sascribe --test sip`.

use proptest::prelude::*;
use sascribe::sip::headers::{CSeq, NameAddr, SubscriptionState, Via};
use sascribe::sip::message::{parse, Message, Response};
use sascribe::sip::SipConfig;
use sascribe::{Call, Config, Host, Input, Millis, NodeHandle, NodeId, Output, Seeds, Socket};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;

const PIDF_OPEN: &str = "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:alice@example.test\"><tuple id=\"t\"><status><basic>open</basic></status></tuple></presence>";
const PIDF_CLOSED: &str = "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:alice@example.test\"><tuple id=\"t\"><status><basic>closed</basic></status></tuple></presence>";

fn overlay_addr(i: usize) -> SocketAddr {
    format!("10.0.0.{}:4000", i + 1).parse().unwrap()
}
fn sip_addr(i: usize) -> SocketAddr {
    format!("10.0.0.{}:5060", i + 1).parse().unwrap()
}
fn ua(n: u8) -> SocketAddr {
    format!("192.0.2.{n}:5070").parse().unwrap()
}

/// `n` gateway hosts wired in memory; UAs are plain addresses whose inboxes collect what the
/// hosts send them.
struct Net {
    now: Millis,
    hosts: Vec<Host>,
    inbox: HashMap<SocketAddr, Vec<Vec<u8>>>,
    /// UAs whose incoming datagrams are lost.
    deaf: HashSet<SocketAddr>,
    /// While set, overlay datagrams are held here instead of delivered (a slow overlay).
    held: Option<Vec<(usize, SocketAddr, Vec<u8>)>>,
}

impl Net {
    fn new(n: usize) -> Net {
        let handles: Vec<NodeHandle> = (0..n)
            .map(|i| NodeHandle {
                id: NodeId((i as u128 * 0x3b9a_ca07 + 17) << 96 | 0x1234_5678),
                addr: overlay_addr(i),
            })
            .collect();
        let hosts = handles
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let seeds = Seeds::reproducible(i as u64 + 1);
                let mut host = Host::new(h.id, h.addr, Config::default(), 0, seeds)
                    .with_sip(SipConfig::new(sip_addr(i)));
                let install = Call::InstallRoutingState(handles.clone());
                host.handle_input(0, Input::Call(install)).unwrap();
                host
            })
            .collect();
        let mut net = Net {
            now: 0,
            hosts,
            inbox: HashMap::new(),
            deaf: HashSet::new(),
            held: None,
        };
        net.settle();
        net
    }

    /// Delivers everything in flight at the current instant.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            for i in 0..self.hosts.len() {
                while let Output::Transmit(t) = self.hosts[i].poll_output() {
                    moved = true;
                    if t.socket == Socket::SipUdp {
                        if !self.deaf.contains(&t.dst) {
                            self.inbox.entry(t.dst).or_default().push(t.payload);
                        }
                        continue;
                    }
                    if let Some(held) = self.held.as_mut() {
                        held.push((i, t.dst, t.payload));
                        continue;
                    }
                    self.deliver(i, t.dst, &t.payload);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("no quiescence");
    }

    fn deliver(&mut self, from: usize, dst: SocketAddr, payload: &[u8]) {
        if let Some(j) = (0..self.hosts.len()).find(|&j| overlay_addr(j) == dst) {
            let input = Input::Overlay {
                from: overlay_addr(from),
                payload,
            };
            self.hosts[j].handle_input(self.now, input).unwrap();
        }
    }

    /// Delivers the held overlay datagrams and stops holding.
    fn release(&mut self) {
        for (i, dst, payload) in self.held.take().unwrap_or_default() {
            self.deliver(i, dst, &payload);
        }
        self.settle();
    }

    /// The index of the root of Alice's presence group.
    fn root(&self) -> usize {
        let gid = sascribe::GroupId::from_event("sip:alice@example.test", "presence", None);
        let ids = self.hosts.iter().map(|p| p.id().0);
        let root = sascribe::id::closest_of(gid.0, ids).unwrap();
        (0..self.hosts.len())
            .find(|&i| self.hosts[i].id().0 == root)
            .unwrap()
    }

    /// Advances virtual time by `d` ms, firing every timer on the way.
    fn advance(&mut self, d: Millis) {
        let end = self.now + d;
        loop {
            let next = self.hosts.iter().map(Host::poll_timeout).min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    for h in &mut self.hosts {
                        if h.poll_timeout() <= self.now {
                            h.handle_input(self.now, Input::Timeout).unwrap();
                        }
                    }
                    self.settle();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    /// UA `from` sends `text` to peer `i`'s SIP port.
    fn send(&mut self, i: usize, from: SocketAddr, text: &str) {
        self.send_bytes(i, from, text.as_bytes());
    }
    fn send_bytes(&mut self, i: usize, from: SocketAddr, bytes: &[u8]) {
        let input = Input::Sip {
            from,
            payload: bytes,
        };
        self.hosts[i].handle_input(self.now, input).unwrap();
        self.settle();
    }

    /// Everything UA `at` received so far, parsed.
    fn take(&mut self, at: SocketAddr) -> Vec<Message> {
        self.inbox
            .remove(&at)
            .unwrap_or_default()
            .iter()
            .map(|b| parse(b).expect("front end sent an unparsable message"))
            .collect()
    }

    /// Sends and lets the overlay answer (up to 5 s of virtual time, in 50 ms steps, stopping
    /// at the first final response); returns it and whatever else arrived.
    fn request(&mut self, i: usize, from: SocketAddr, text: &str) -> (Response, Vec<Message>) {
        self.send(i, from, text);
        let mut msgs = Vec::new();
        for _ in 0..100 {
            msgs.extend(self.take(from));
            if msgs
                .iter()
                .any(|m| matches!(m, Message::Response(r) if r.code >= 200))
            {
                break;
            }
            self.advance(50);
        }
        let fin = msgs
            .iter()
            .find_map(|m| match m {
                Message::Response(r) if r.code >= 200 => Some(r.clone()),
                _ => None,
            })
            .expect("no final response");
        let rest = msgs
            .into_iter()
            .filter(|m| !matches!(m, Message::Response(r) if r.code >= 200))
            .collect();
        (fin, rest)
    }
}

fn with_len(head: String, body: &str) -> String {
    format!("{head}Content-Length: {}\r\n\r\n{body}", body.len())
}

struct Pub<'a> {
    branch: &'a str,
    uri: &'a str,
    etag: Option<&'a str>,
    expires: Option<u32>,
    body: &'a str,
    event: &'a str,
}

impl Default for Pub<'_> {
    fn default() -> Self {
        Pub {
            branch: "z9hG4bKpub1",
            uri: "sip:alice@example.test",
            etag: None,
            expires: Some(600),
            body: PIDF_OPEN,
            event: "presence",
        }
    }
}

fn publish(p: Pub) -> String {
    let mut h = format!(
        "PUBLISH {uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.1:5070;branch={b}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@example.test>;tag=a1\r\n\
         To: <sip:alice@example.test>\r\n\
         Call-ID: pub-{b}\r\n\
         CSeq: 1 PUBLISH\r\n",
        uri = p.uri,
        b = p.branch
    );
    if !p.event.is_empty() {
        h.push_str(&format!("Event: {}\r\n", p.event));
    }
    if let Some(e) = p.etag {
        h.push_str(&format!("SIP-If-Match: {e}\r\n"));
    }
    if let Some(e) = p.expires {
        h.push_str(&format!("Expires: {e}\r\n"));
    }
    if !p.body.is_empty() {
        h.push_str("Content-Type: application/pidf+xml\r\n");
    }
    with_len(h, p.body)
}

/// A SUBSCRIBE from UA `n`; `to_tag` makes it in-dialog.
fn subscribe(n: u8, branch: &str, cseq: u32, to_tag: Option<&str>, expires: u32) -> String {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    with_len(
        format!(
            "SUBSCRIBE sip:alice@example.test SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.{n}:5070;branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:watcher{n}@example.test>;tag=w{n}\r\n\
             To: <sip:alice@example.test>{to_tag}\r\n\
             Call-ID: sub-{n}@192.0.2.{n}\r\n\
             CSeq: {cseq} SUBSCRIBE\r\n\
             Contact: <sip:watcher{n}@192.0.2.{n}:5070>\r\n\
             Event: presence\r\n\
             Accept: application/pidf+xml\r\n\
             Expires: {expires}\r\n"
        ),
        "",
    )
}

/// The 200 OK a UA sends for a NOTIFY.
fn ok_for(req: &sascribe::sip::message::Request) -> String {
    let h = &req.headers;
    with_len(
        format!(
            "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {}\r\n",
            h.get("Via").unwrap(),
            h.get("From").unwrap(),
            h.get("To").unwrap(),
            h.get("Call-ID").unwrap(),
            h.get("CSeq").unwrap()
        ),
        "",
    )
}

fn notifies(msgs: &[Message]) -> Vec<sascribe::sip::message::Request> {
    msgs.iter()
        .filter_map(|m| match m {
            Message::Request(r) if r.method.as_str() == "NOTIFY" => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn sub_state(r: &sascribe::sip::message::Request) -> SubscriptionState {
    SubscriptionState::parse(r.headers.get("Subscription-State").unwrap()).unwrap()
}

fn to_tag(r: &Response) -> String {
    NameAddr::parse(r.headers.get("To").unwrap())
        .unwrap()
        .tag
        .unwrap()
}

/// Subscribes UA `n` at peer `i`, answers the first NOTIFY, returns (To tag, that NOTIFY).
fn establish(net: &mut Net, i: usize, n: u8) -> (String, sascribe::sip::message::Request) {
    let (r, rest) = net.request(
        i,
        ua(n),
        &subscribe(n, &format!("z9hG4bKs{n}"), 1, None, 600),
    );
    assert_eq!(r.code, 200, "{r:?}");
    assert_eq!(r.headers.get("Expires"), Some("600"));
    assert!(r.headers.get("Contact").is_some());
    let ns = notifies(&rest);
    assert_eq!(ns.len(), 1, "exactly one immediate NOTIFY");
    net.send(i, ua(n), &ok_for(&ns[0]));
    (to_tag(&r), ns[0].clone())
}

fn publish_initial(net: &mut Net, i: usize) -> String {
    let (r, _) = net.request(i, ua(1), &publish(Pub::default()));
    assert_eq!(r.code, 200, "{r:?}");
    r.headers.get("SIP-ETag").expect("SIP-ETag").to_string()
}

#[test]
fn publication_on_one_peer_reaches_subscribers_on_others() {
    let mut net = Net::new(5);
    // No state yet: the root's nACK becomes 480.
    let (r, _) = net.request(1, ua(2), &subscribe(2, "z9hG4bKearly", 1, None, 600));
    assert_eq!(r.code, 480);
    assert_eq!(net.hosts[1].sip().unwrap().dialog_count(), 0);

    let etag = publish_initial(&mut net, 0);
    let (_, n2) = establish(&mut net, 1, 2);
    let (_, n3) = establish(&mut net, 2, 3);
    for n in [&n2, &n3] {
        assert_eq!(&n.body[..], PIDF_OPEN.as_bytes());
        assert_eq!(n.headers.get("Content-Type"), Some("application/pidf+xml"));
        assert_eq!(n.headers.get("Event"), Some("presence"));
        assert!(
            matches!(sub_state(n), SubscriptionState::Active { expires } if expires > 590 && expires <= 600)
        );
    }
    assert_eq!(n2.uri, "sip:watcher2@192.0.2.2:5070");
    assert_eq!(n3.uri, "sip:watcher3@192.0.2.3:5070");

    // Modify from a third peer: each subscriber gets exactly one NOTIFY with the new state.
    let (r, _) = net.request(
        3,
        ua(1),
        &publish(Pub {
            branch: "z9hG4bKpub2",
            etag: Some(&etag),
            body: PIDF_CLOSED,
            ..Pub::default()
        }),
    );
    assert_eq!(r.code, 200);
    let etag2 = r.headers.get("SIP-ETag").unwrap().to_string();
    assert_ne!(etag2, etag, "a new entity tag for every publication");
    for (n, first) in [(2u8, &n2), (3, &n3)] {
        let ns = notifies(&net.take(ua(n)));
        assert_eq!(ns.len(), 1);
        assert_eq!(&ns[0].body[..], PIDF_CLOSED.as_bytes());
        let c0 = CSeq::parse(first.headers.get("CSeq").unwrap()).unwrap().seq;
        let c1 = CSeq::parse(ns[0].headers.get("CSeq").unwrap()).unwrap().seq;
        assert!(c1 > c0, "NOTIFY CSeq increases");
        assert_eq!(ns[0].headers.get("Call-ID"), first.headers.get("Call-ID"));
        let i = if n == 2 { 1 } else { 2 };
        net.send(i, ua(n), &ok_for(&ns[0]));
    }

    // Refresh-only publication (no body): no state change for subscribers' bodies, new ETag.
    let (r, _) = net.request(
        4,
        ua(1),
        &publish(Pub {
            branch: "z9hG4bKpub3",
            etag: Some(&etag2),
            body: "",
            expires: Some(1200),
            ..Pub::default()
        }),
    );
    assert_eq!(r.code, 200);
    assert_eq!(r.headers.get("Expires"), Some("1200"));

    // Removal: subscribers learn the state is gone (empty body).
    let etag3 = r.headers.get("SIP-ETag").unwrap().to_string();
    let (r, _) = net.request(
        0,
        ua(1),
        &publish(Pub {
            branch: "z9hG4bKpub4",
            etag: Some(&etag3),
            body: "",
            expires: Some(0),
            ..Pub::default()
        }),
    );
    assert_eq!(r.code, 200);
    assert_eq!(r.headers.get("Expires"), Some("0"));
}

#[test]
fn refresh_and_unsubscribe() {
    let mut net = Net::new(3);
    let etag = publish_initial(&mut net, 0);
    let (tag, _) = establish(&mut net, 1, 2);

    // Refresh in the dialog: 200 + NOTIFY with the current state.
    let (r, rest) = net.request(1, ua(2), &subscribe(2, "z9hG4bKr1", 2, Some(&tag), 900));
    assert_eq!(r.code, 200);
    assert_eq!(r.headers.get("Expires"), Some("900"));
    let ns = notifies(&rest);
    assert_eq!(ns.len(), 1);
    assert_eq!(&ns[0].body[..], PIDF_OPEN.as_bytes());
    assert!(matches!(sub_state(&ns[0]), SubscriptionState::Active { expires } if expires > 890));
    net.send(1, ua(2), &ok_for(&ns[0]));

    // An out-of-order CSeq in the dialog is refused; an unknown dialog gets 481.
    let (r, _) = net.request(1, ua(2), &subscribe(2, "z9hG4bKr2", 2, Some(&tag), 900));
    assert_eq!(r.code, 500);
    let (r, _) = net.request(
        1,
        ua(2),
        &subscribe(2, "z9hG4bKr3", 5, Some("nosuchtag"), 900),
    );
    assert_eq!(r.code, 481);

    // Unsubscribe: 200 + final NOTIFY terminated;reason=timeout.
    let (r, rest) = net.request(1, ua(2), &subscribe(2, "z9hG4bKr4", 3, Some(&tag), 0));
    assert_eq!(r.code, 200);
    assert_eq!(r.headers.get("Expires"), Some("0"));
    let ns = notifies(&rest);
    assert_eq!(ns.len(), 1);
    assert_eq!(
        sub_state(&ns[0]),
        SubscriptionState::Terminated {
            reason: Some("timeout".into())
        }
    );
    net.send(1, ua(2), &ok_for(&ns[0]));
    assert_eq!(net.hosts[1].sip().unwrap().dialog_count(), 0);

    // Later publications no longer reach it.
    let (r, _) = net.request(
        2,
        ua(1),
        &publish(Pub {
            branch: "z9hG4bKpubX",
            etag: Some(&etag),
            body: PIDF_CLOSED,
            ..Pub::default()
        }),
    );
    assert_eq!(r.code, 200);
    assert!(notifies(&net.take(ua(2))).is_empty());
}

#[test]
fn fetch_is_one_terminated_notify() {
    let mut net = Net::new(3);
    publish_initial(&mut net, 0);
    let (r, rest) = net.request(2, ua(4), &subscribe(4, "z9hG4bKf", 1, None, 0));
    assert_eq!(r.code, 200);
    assert_eq!(r.headers.get("Expires"), Some("0"));
    let ns = notifies(&rest);
    assert_eq!(ns.len(), 1);
    assert_eq!(&ns[0].body[..], PIDF_OPEN.as_bytes());
    assert!(matches!(
        sub_state(&ns[0]),
        SubscriptionState::Terminated { .. }
    ));
    net.send(2, ua(4), &ok_for(&ns[0]));
    assert_eq!(net.hosts[2].sip().unwrap().dialog_count(), 0);
}

#[test]
fn rfc3903_error_cases() {
    let mut net = Net::new(3);
    let etag = publish_initial(&mut net, 0);
    // Stale entity tag (a well-formed one we could have issued, and a foreign one).
    let stale = if etag == "0000000000000001" {
        "0000000000000002"
    } else {
        "0000000000000001"
    };
    for (b, e) in [("z9hG4bKst1", stale), ("z9hG4bKst2", "not-ours")] {
        let (r, _) = net.request(
            1,
            ua(1),
            &publish(Pub {
                branch: b,
                etag: Some(e),
                body: "",
                ..Pub::default()
            }),
        );
        assert_eq!(r.code, 412, "etag {e}");
    }
    // Too brief.
    let (r, _) = net.request(
        1,
        ua(1),
        &publish(Pub {
            branch: "z9hG4bKbrief",
            expires: Some(10),
            ..Pub::default()
        }),
    );
    assert_eq!(r.code, 423);
    assert_eq!(r.headers.get("Min-Expires"), Some("60"));
    // Missing or unsupported event package.
    for (b, ev) in [("z9hG4bKev1", ""), ("z9hG4bKev2", "dialog")] {
        let (r, _) = net.request(
            1,
            ua(1),
            &publish(Pub {
                branch: b,
                event: ev,
                ..Pub::default()
            }),
        );
        assert_eq!(r.code, 489);
        assert_eq!(r.headers.get("Allow-Events"), Some("presence"));
    }
    // Neither body nor SIP-If-Match.
    let (r, _) = net.request(
        1,
        ua(1),
        &publish(Pub {
            branch: "z9hG4bKempty",
            body: "",
            ..Pub::default()
        }),
    );
    assert_eq!(r.code, 400);
    assert!(r.reason.contains("SIP-If-Match"), "{}", r.reason);
}

#[test]
fn methods_and_options() {
    let mut net = Net::new(2);
    let req = |m: &str| {
        with_len(
            format!(
                "{m} sip:alice@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9:5070;branch=z9hG4bK{m}\r\n\
                 From: <sip:x@example.test>;tag=1\r\nTo: <sip:alice@example.test>\r\nCall-ID: m-{m}\r\n\
                 CSeq: 1 {m}\r\nMax-Forwards: 70\r\n"
            ),
            "",
        )
    };
    for (m, code) in [
        ("INVITE", 405),
        ("REGISTER", 405),
        ("NOTIFY", 405),
        ("FROB", 501),
        ("OPTIONS", 200),
    ] {
        let (r, _) = net.request(0, ua(9), &req(m));
        assert_eq!(r.code, code, "{m}");
        assert!(r.headers.get("Allow").unwrap().contains("SUBSCRIBE"));
        assert!(to_tag(&r).len() >= 8, "final responses carry a To tag");
    }
    // Responses matching nothing are ignored (no output, no panic).
    net.send(0, ua(9), "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKnone\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: x\r\nCSeq: 1 NOTIFY\r\nContent-Length: 0\r\n\r\n");
    assert!(net.take(ua(9)).is_empty());
    assert_eq!(net.hosts[0].sip().unwrap().stats().stray_responses, 1);
}

#[test]
fn retransmissions_are_absorbed() {
    let mut net = Net::new(3);
    let text = publish(Pub::default());
    net.send(2, ua(1), &text);
    net.send(2, ua(1), &text);
    net.advance(1_000);
    let msgs = net.take(ua(1));
    let finals: Vec<&Response> = msgs
        .iter()
        .filter_map(|m| match m {
            Message::Response(r) if r.code >= 200 => Some(r),
            _ => None,
        })
        .collect();
    // The retransmission got the stored final response again: one publication, one ETag.
    assert!(!finals.is_empty());
    assert!(finals.iter().all(|r| r == &finals[0]));
    assert_eq!(finals[0].code, 200);
    // A late retransmission gets the very same final response (same ETag), not a new publish.
    net.send(2, ua(1), &text);
    let again = net.take(ua(1));
    assert_eq!(again.len(), 1);
    let Message::Response(r) = &again[0] else {
        panic!()
    };
    assert_eq!(r.headers.get("SIP-ETag"), finals[0].headers.get("SIP-ETag"));
    assert!(net.hosts[2].sip().unwrap().stats().retransmissions_absorbed >= 2);
    // After Timer J the transaction is gone (the same branch is a new request then).
    net.advance(40_000);
    assert!(net.hosts[2].stats().sip_transactions == (0, 0));
}

#[test]
fn slow_overlay_gets_100_trying() {
    let mut net = Net::new(4);
    let at = (net.root() + 1) % 4;
    net.held = Some(Vec::new());
    let text = publish(Pub::default());
    net.send(at, ua(1), &text);
    assert!(
        net.take(ua(1)).is_empty(),
        "no provisional at once (RFC 4320)"
    );
    net.advance(250);
    let msgs = net.take(ua(1));
    assert_eq!(msgs.len(), 1);
    let Message::Response(trying) = &msgs[0] else {
        panic!("{msgs:?}")
    };
    assert_eq!(trying.code, 100);
    assert!(NameAddr::parse(trying.headers.get("To").unwrap())
        .unwrap()
        .tag
        .is_none());
    // A retransmission while waiting gets the 100 again, and no second publication.
    net.send(at, ua(1), &text);
    assert_eq!(net.take(ua(1)), msgs);
    net.release();
    net.advance(1_500);
    let fin: Vec<u16> = net
        .take(ua(1))
        .iter()
        .filter_map(|m| match m {
            Message::Response(r) => Some(r.code),
            _ => None,
        })
        .collect();
    assert_eq!(fin, vec![200]);
}

#[test]
fn notify_retransmission_and_481() {
    let mut net = Net::new(3);
    let etag = publish_initial(&mut net, 0);
    let (_, _) = establish(&mut net, 1, 2);
    let (_, _) = establish(&mut net, 1, 3);
    let start = net.now;
    let (r, _) = net.request(
        2,
        ua(1),
        &publish(Pub {
            branch: "z9hG4bKp2",
            etag: Some(&etag),
            body: PIDF_CLOSED,
            ..Pub::default()
        }),
    );
    assert_eq!(r.code, 200);
    // UA 2 does not answer: Timer E retransmits at T1, 2·T1, 4·T1 … capped at T2.
    net.advance(1_000);
    let first = notifies(&net.take(ua(2)));
    assert_eq!(first.len(), 2, "original + retransmission at T1");
    assert_eq!(first[0].headers.get("Via"), first[1].headers.get("Via"));
    net.advance(3_000);
    let more = notifies(&net.take(ua(2)));
    assert_eq!(more.len(), 2, "at 1.5 s and 3.5 s");
    // UA 3 answers 481: its subscription ends.
    let n3 = notifies(&net.take(ua(3)));
    let resp = ok_for(&n3[0]).replace("200 OK", "481 Call/Transaction Does Not Exist");
    net.send(1, ua(3), &resp);
    assert_eq!(net.hosts[1].sip().unwrap().dialog_count(), 1);
    // UA 2 never answers: Timer F (32 s) ends its subscription too.
    net.advance(30_000);
    assert!(net.hosts[1].sip().unwrap().stats().notify_timeouts >= 1);
    assert_eq!(net.hosts[1].sip().unwrap().dialog_count(), 0);
    assert!(net.now - start >= 32_000);
    net.take(ua(2));
    // Later publications reach neither.
    let (r, _) = net.request(0, ua(1), &publish(Pub::default()));
    assert_eq!(r.code, 200);
    assert!(notifies(&net.take(ua(2))).is_empty());
    assert!(notifies(&net.take(ua(3))).is_empty());
}

#[test]
fn many_publications_arrive_once_each_in_order() {
    let mut net = Net::new(4);
    let mut etag = publish_initial(&mut net, 0);
    let (_, _) = establish(&mut net, 3, 5);
    let mut got = Vec::new();
    for k in 0..6 {
        let body = format!("{PIDF_OPEN}<!-- {k} -->");
        let branch = format!("z9hG4bKseq{k}");
        let (r, _) = net.request(
            k % 4,
            ua(1),
            &publish(Pub {
                branch: &branch,
                etag: Some(&etag),
                body: &body,
                ..Pub::default()
            }),
        );
        assert_eq!(r.code, 200);
        etag = r.headers.get("SIP-ETag").unwrap().to_string();
        for n in notifies(&net.take(ua(5))) {
            got.push(String::from_utf8_lossy(&n.body).to_string());
            net.send(3, ua(5), &ok_for(&n));
        }
    }
    let want: Vec<String> = (0..6).map(|k| format!("{PIDF_OPEN}<!-- {k} -->")).collect();
    assert_eq!(got, want);
}

// ----- malformed input -----

fn corpus_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sip-corpus"))
}

/// Each file `NAME.CODE.sip` in `tests/sip-corpus/` is one raw datagram and the status code it
/// must get (`000`: no answer at all).
#[test]
fn malformed_corpus_is_answered_correctly() {
    let mut files: Vec<_> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sip"))
        .collect();
    files.sort();
    assert!(files.len() >= 15, "corpus too small: {}", files.len());
    let mut net = Net::new(2);
    for f in files {
        let name = f.file_stem().unwrap().to_string_lossy().to_string();
        let want: u16 = name
            .rsplit('.')
            .next()
            .unwrap()
            .parse()
            .expect("NAME.CODE.sip");
        let bytes = std::fs::read(&f).unwrap();
        net.send_bytes(0, ua(7), &bytes);
        net.advance(500);
        let got: Vec<u16> = net
            .take(ua(7))
            .iter()
            .filter_map(|m| match m {
                Message::Response(r) if r.code >= 200 => Some(r.code),
                _ => None,
            })
            .collect();
        if want == 0 {
            assert!(got.is_empty(), "{name}: expected silence, got {got:?}");
        } else {
            assert_eq!(got, vec![want], "{name}");
        }
    }
}

/// Replays the fuzz corpus and the malformed corpus through one endpoint (CI does not need
/// cargo-fuzz), then checks the endpoint still serves a well-formed request.
#[test]
fn corpus_replay_does_not_disturb_service() {
    let mut net = Net::new(2);
    publish_initial(&mut net, 0);
    let (tag, _) = establish(&mut net, 1, 2);
    let fuzz = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/corpus/sip_input"
    ));
    let mut n = 0;
    for dir in [fuzz, corpus_dir()] {
        for e in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(e.unwrap().path()).unwrap();
            // As in the fuzz target, NUL separates the datagrams of one input.
            for part in bytes.split(|&b| b == 0) {
                net.send_bytes(1, ua(8), part);
                net.advance(20);
            }
            n += 1;
        }
    }
    assert!(n > 20);
    net.advance(1_000);
    // Well within the subscription's 600 s, so the answer below must be a refresh.
    assert!(net.now < 300_000, "replay took {} ms", net.now);
    let (r, rest) = net.request(1, ua(2), &subscribe(2, "z9hG4bKafter", 2, Some(&tag), 600));
    assert_eq!(r.code, 200);
    assert_eq!(notifies(&rest).len(), 1);
}

fn valid_requests() -> Vec<String> {
    vec![
        publish(Pub::default()),
        subscribe(3, "z9hG4bKprop", 1, None, 600),
        subscribe(3, "z9hG4bKprop2", 2, Some("t"), 0),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Mutated requests never panic, and whatever is sent back parses.
    #[test]
    fn mutated_requests_never_panic(
        which in 0usize..3,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = valid_requests()[which].clone().into_bytes();
        for (at, b, op) in edits {
            let i = at.index(bytes.len().max(1)).min(bytes.len());
            match op {
                0 if i < bytes.len() => bytes[i] = b,
                1 => bytes.insert(i, b),
                2 if i < bytes.len() => { bytes.remove(i); }
                _ => bytes.insert(i, b"\r\n:;<>\"=,"[b as usize % 9]),
            }
        }
        if cut.index(4) == 0 {
            let c = cut.index(bytes.len().max(1));
            bytes.truncate(c);
        }
        let mut net = Net::new(1);
        net.send_bytes(0, ua(6), &bytes);
        net.advance(100);
        net.take(ua(6));
    }
}

#[test]
fn via_received_and_rport_are_filled() {
    let mut net = Net::new(1);
    let (r, _) = net.request(
        0,
        ua(2),
        &subscribe(2, "z9hG4bKrp", 1, None, 600).replace("192.0.2.2:5070;", "host.invalid;"),
    );
    // No state yet: 480, but the Via tells the UA where it was seen from.
    assert_eq!(r.code, 480);
    let v = r.headers.get("Via").unwrap();
    assert!(v.contains("received=192.0.2.2"), "{v}");
    assert!(v.contains("rport=5070"), "{v}");
    assert!(Via::parse(v).is_ok());
}
