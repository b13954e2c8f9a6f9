//! SIP over TCP through the host (RFC 3261 §18): responses on the request's connection,
//! NOTIFYs on the subscriber's connection or a new one to its Contact, no retransmissions on a
//! reliable transport, framing errors, keep-alives, limits and idle connections.
//!
//! Run: `cargo test -p sascribe --test sip_tcp`.

mod sip_net;

use sascribe::sip::message::{Message, Request};
use sascribe::sip::transaction::TIMER_F;
use sascribe::ConnId;
use sip_net::*;
use std::net::SocketAddr;

/// UA `n`'s TCP connection source (an ephemeral port; its Contact and Via say 5070).
fn tcp_ua(n: u8) -> SocketAddr {
    format!("192.0.2.{n}:4{n:04}").parse().unwrap()
}

fn tcp(text: String) -> String {
    text.replace("SIP/2.0/UDP", "SIP/2.0/TCP")
}

fn options(branch: &str) -> String {
    with_len(
        format!(
            "OPTIONS sip:alice@example.test SIP/2.0\r\n\
             Via: SIP/2.0/TCP 192.0.2.9:5070;branch={branch}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:ua9@example.test>;tag=9\r\n\
             To: <sip:alice@example.test>\r\n\
             Call-ID: opt-{branch}\r\n\
             CSeq: 1 OPTIONS\r\n"
        ),
        "",
    )
}

fn finals(msgs: &[Message]) -> Vec<u16> {
    msgs.iter()
        .filter_map(|m| match m {
            Message::Response(r) if r.code >= 200 => Some(r.code),
            _ => None,
        })
        .collect()
}

/// Subscribes UA `n` over TCP connection `conn` at peer `i`; answers the first NOTIFY on the
/// same connection; returns the To tag and that NOTIFY.
fn establish_tcp(net: &mut Net, i: usize, n: u8, conn: ConnId) -> (String, Request) {
    let sub = tcp(subscribe(n, &format!("z9hG4bKt{n}"), 1, None, 600));
    let (r, rest) = net.stream_request(i, conn, tcp_ua(n), &sub);
    assert_eq!(r.code, 200, "{r:?}");
    let contact = r.headers.get("Contact").unwrap();
    assert!(contact.ends_with(";transport=tcp>"), "{contact}");
    let ns = notifies(&rest);
    assert_eq!(ns.len(), 1, "one immediate NOTIFY on the connection");
    net.stream_send(i, conn, tcp_ua(n), ok_for(&ns[0]).as_bytes());
    (to_tag(&r), ns[0].clone())
}

#[test]
fn publish_over_tcp_is_answered_on_its_connection() {
    let mut net = Net::new(2);
    let conn = ConnId(1);
    net.stream_send(0, conn, tcp_ua(1), b"");
    let (r, _) = net.stream_request(0, conn, tcp_ua(1), &tcp(publish(Pub::default())));
    assert!(net.inbox.is_empty(), "nothing over UDP: {:?}", net.inbox);
    assert_eq!(r.code, 200, "{r:?}");
    assert!(r.headers.get("SIP-ETag").is_some());
    let via = r.headers.get("Via").unwrap();
    // Echoed as sent: the sent-by host is the source address, and no rport was asked for.
    assert_eq!(via, "SIP/2.0/TCP 192.0.2.1:5070;branch=z9hG4bKpub1");
    // Timer J is 0 over TCP: the transaction is gone at once (over UDP it stays 32 s).
    net.advance(1);
    assert_eq!(net.hosts[0].stats().sip_transactions.0, 0);
    let (r, _) = net.request(
        0,
        ua(1),
        &publish(Pub {
            branch: "z9hG4bKudp",
            ..Pub::default()
        }),
    );
    assert_eq!(r.code, 200);
    net.advance(1);
    assert_eq!(net.hosts[0].stats().sip_transactions.0, 1);
    let s = net.hosts[0].stats().sip.unwrap();
    assert_eq!((s.connections_opened, s.connections_closed), (1, 0));
    assert_eq!(net.hosts[0].stats().sip_connections, 1);
}

#[test]
fn split_reads_and_several_messages_per_read() {
    let mut net = Net::new(1);
    let conn = ConnId(5);
    // One request, one byte at a time: answered once, when its last byte is in.
    let one = options("z9hG4bKsplit");
    for (k, b) in one.as_bytes().iter().enumerate() {
        net.stream_send(0, conn, tcp_ua(9), &[*b]);
        let got = finals(&net.take_stream(conn));
        if k + 1 < one.len() {
            assert!(got.is_empty(), "answered after {k} bytes");
        } else {
            assert_eq!(got, vec![200]);
        }
    }
    // Three requests and a keep-alive in one read, then half of a fourth.
    let mut many = String::new();
    for b in ["z9hG4bKm1", "z9hG4bKm2", "z9hG4bKm3"] {
        many.push_str(&options(b));
    }
    many.push_str("\r\n\r\n");
    let fourth = options("z9hG4bKm4");
    let (head, tail) = fourth.split_at(40);
    many.push_str(head);
    net.stream_send(0, conn, tcp_ua(9), many.as_bytes());
    let got = net.take_stream(conn);
    assert_eq!(finals(&got), vec![200, 200, 200]);
    let call_ids: Vec<&str> = got
        .iter()
        .filter_map(|m| match m {
            Message::Response(r) => r.headers.get("Call-ID"),
            Message::Request(_) => None,
        })
        .collect();
    assert_eq!(
        call_ids,
        ["opt-z9hG4bKm1", "opt-z9hG4bKm2", "opt-z9hG4bKm3"]
    );
    net.stream_send(0, conn, tcp_ua(9), tail.as_bytes());
    assert_eq!(finals(&net.take_stream(conn)), vec![200]);
    let s = net.hosts[0].stats().sip.unwrap();
    assert_eq!((s.keepalives, s.stream_framing_errors), (1, 0));
    assert!(net.closed.is_empty());
}

#[test]
fn keep_alive_ping_gets_a_pong() {
    let mut net = Net::new(1);
    let conn = ConnId(2);
    net.stream_send(0, conn, tcp_ua(9), b"\r\n");
    assert_eq!(net.streams.get(&conn).map_or(0, Vec::len), 0);
    net.stream_send(0, conn, tcp_ua(9), b"\r\n");
    assert_eq!(net.streams.get(&conn).unwrap(), b"\r\n");
    net.streams.clear();
    let (r, _) = net.stream_request(0, conn, tcp_ua(9), &format!("\r\n{}", options("z9hG4bKk")));
    assert_eq!(r.code, 200);
    assert!(net.closed.is_empty());
}

/// A stream that cannot be framed, or a message that does not parse: answered when a request's
/// header fields can be read, then closed; the other connection and UDP go on.
#[test]
fn malformed_streams_are_answered_then_closed() {
    let ok = options("z9hG4bKok");
    let no_len = ok.replace("Content-Length: 0\r\n", "");
    let big_body = ok.replace("Content-Length: 0", "Content-Length: 70000");
    let big_head = ok.replace(
        "Max-Forwards: 70\r\n",
        &format!("Subject: {}\r\nMax-Forwards: 70\r\n", "x".repeat(17_000)),
    );
    let bad_header = ok.replace("Max-Forwards: 70", "Max-Forwards 70");
    let cases: [(&str, &[u8], Option<u16>); 7] = [
        ("garbage", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", Some(400)),
        (
            "binary",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n",
            None,
        ),
        ("no Content-Length", no_len.as_bytes(), Some(400)),
        (
            "bad Content-Length",
            b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bKb\r\nl: x\r\n\r\n",
            Some(400),
        ),
        ("oversized body", big_body.as_bytes(), Some(513)),
        ("oversized header", big_head.as_bytes(), Some(513)),
        ("unparsable header", bad_header.as_bytes(), Some(400)),
    ];
    for (k, (name, bytes, want)) in cases.into_iter().enumerate() {
        let mut net = Net::new(1);
        let (bad, good) = (ConnId(10 + k as u64), ConnId(100));
        net.stream_send(0, good, tcp_ua(8), b"");
        net.stream_send(0, bad, tcp_ua(9), bytes);
        let got = net.take_stream(bad);
        match want {
            Some(code) => {
                assert_eq!(finals(&got), vec![code], "{name}");
                if let Some(Message::Response(r)) = got.first() {
                    if code == 513 || name.contains("Content-Length") {
                        assert!(r.headers.get("Via").is_some(), "{name}: {r:?}");
                    }
                }
            }
            None => assert!(got.is_empty(), "{name}: {got:?}"),
        }
        assert_eq!(net.closed, vec![bad], "{name}");
        // The other connection and UDP are served.
        let (r, _) = net.stream_request(0, good, tcp_ua(8), &ok);
        assert_eq!(r.code, 200, "{name}");
        let (r, _) = net.request(0, ua(7), &ok.replace("SIP/2.0/TCP", "SIP/2.0/UDP"));
        assert_eq!(r.code, 200, "{name}");
        let s = net.hosts[0].stats().sip.unwrap();
        let framing = u64::from(name != "unparsable header");
        assert_eq!(s.stream_framing_errors, framing, "{name}");
        assert_eq!(
            (s.connections_opened, s.connections_closed),
            (2, 1),
            "{name}"
        );
        assert_eq!(net.closed, vec![bad], "{name}");
    }
}

#[test]
fn an_invalid_but_framed_request_keeps_its_connection() {
    let mut net = Net::new(1);
    let conn = ConnId(3);
    let no_call_id = options("z9hG4bKnc").replace("Call-ID: opt-z9hG4bKnc\r\n", "");
    let (r, _) = net.stream_request(0, conn, tcp_ua(9), &no_call_id);
    assert_eq!(r.code, 400);
    assert_eq!(r.reason, "Bad Request - missing Call-ID");
    assert!(net.closed.is_empty());
    let (r, _) = net.stream_request(0, conn, tcp_ua(9), &options("z9hG4bKafter"));
    assert_eq!(r.code, 200);
}

#[test]
fn connections_beyond_the_limit_are_closed() {
    let mut net = Net::with_sip(1, |mut c| {
        c.max_connections = 2;
        c
    });
    for k in 1..=3 {
        net.stream_send(0, ConnId(k), tcp_ua(9), b"");
    }
    assert_eq!(net.closed, vec![ConnId(3)]);
    net.stream_closed(0, ConnId(1));
    net.stream_send(0, ConnId(4), tcp_ua(9), b"");
    assert_eq!(net.closed, vec![ConnId(3)]);
    let (r, _) = net.stream_request(0, ConnId(4), tcp_ua(9), &options("z9hG4bKl"));
    assert_eq!(r.code, 200);
    let s = net.hosts[0].stats().sip.unwrap();
    assert_eq!(s.connections_refused, 1);
    assert_eq!(net.hosts[0].stats().sip_connections, 2);
}

#[test]
fn subscribe_over_tcp_gets_its_notifies_over_tcp() {
    let mut net = Net::new(4);
    publish_initial(&mut net, 0);
    let conn = ConnId(7);
    let (_, first) = establish_tcp(&mut net, 1, 2, conn);
    let via = first.headers.get("Via").unwrap();
    assert!(via.starts_with("SIP/2.0/TCP 10.0.0.2:5060;"), "{via}");
    assert_eq!(
        first.headers.get("Contact"),
        Some("<sip:10.0.0.2:5060;transport=tcp>")
    );
    assert_eq!(first.uri, "sip:watcher2@192.0.2.2:5070");
    // A new publication: one NOTIFY on the connection, never retransmitted over TCP ...
    republish(&mut net, 3, "z9hG4bKp3");
    net.advance(10_000);
    let ns = notifies(&net.take_stream(conn));
    assert_eq!(ns.len(), 1, "{ns:?}");
    assert!(net.take(ua(2)).is_empty());
    let s = net.hosts[1].stats().sip.unwrap();
    assert_eq!(s.notify_retransmissions, 0);
    // ... but Timer F still applies: unanswered, it ends the subscription.
    net.advance(TIMER_F);
    let s = net.hosts[1].stats().sip.unwrap();
    assert_eq!(s.notify_timeouts, 1);
    assert_eq!(net.hosts[1].stats().sip_dialogs, 0);
}

/// A new publication of Alice's state from UA 1 at peer `i`, whose NOTIFYs the test awaits.
fn republish(net: &mut Net, i: usize, branch: &str) {
    let (r, _) = net.request(
        i,
        ua(1),
        &publish(Pub {
            branch,
            ..Pub::default()
        }),
    );
    assert_eq!(r.code, 200, "{r:?}");
}

#[test]
fn notify_after_the_connection_closed_opens_one_to_the_contact() {
    let mut net = Net::new(3);
    publish_initial(&mut net, 0);
    let conn = ConnId(7);
    establish_tcp(&mut net, 1, 2, conn);
    net.stream_closed(1, conn);
    republish(&mut net, 2, "z9hG4bKp2");
    let [(1, fresh, dst)] = net.connects[..] else {
        panic!("one connection opened by peer 1: {:?}", net.connects)
    };
    assert!(fresh.is_host_opened());
    assert_eq!(dst, "192.0.2.2:5070".parse::<SocketAddr>().unwrap());
    let ns = notifies(&net.take_stream(fresh));
    assert_eq!(ns.len(), 1);
    assert!(ns[0]
        .headers
        .get("Via")
        .unwrap()
        .starts_with("SIP/2.0/TCP "));
    net.stream_send(1, fresh, dst, ok_for(&ns[0]).as_bytes());
    // The dialog now uses that connection.
    republish(&mut net, 2, "z9hG4bKp3");
    assert_eq!(net.connects.len(), 1);
    let ns = notifies(&net.take_stream(fresh));
    assert_eq!(ns.len(), 1);
    // It closes with that NOTIFY unanswered: a transport error on a connection we opened
    // ends the subscription.
    net.stream_closed(1, fresh);
    let s = net.hosts[1].stats().sip.unwrap();
    assert_eq!(s.notify_transport_errors, 1);
    assert_eq!(net.hosts[1].stats().sip_dialogs, 0);
    assert_eq!(net.connects.len(), 1);
}

#[test]
fn notify_in_flight_when_the_subscriber_closes_is_sent_again() {
    let mut net = Net::new(3);
    publish_initial(&mut net, 0);
    let conn = ConnId(9);
    establish_tcp(&mut net, 1, 4, conn);
    republish(&mut net, 2, "z9hG4bKp2");
    let sent = notifies(&net.take_stream(conn));
    assert_eq!(sent.len(), 1);
    net.stream_closed(1, conn);
    let [(1, fresh, _)] = net.connects[..] else {
        panic!("{:?}", net.connects)
    };
    let again = notifies(&net.take_stream(fresh));
    assert_eq!(again, sent, "the same request, same branch");
    net.stream_send(1, fresh, tcp_ua(4), ok_for(&again[0]).as_bytes());
    assert_eq!(net.hosts[1].stats().sip_dialogs, 1);
    assert_eq!(net.hosts[1].stats().sip_transactions.1, 0);
}

#[test]
fn a_response_whose_connection_closed_goes_to_the_via_port() {
    let mut net = Net::new(3);
    publish_initial(&mut net, 0);
    // Not the root, so that the SUBSCRIBE waits on the (held) overlay.
    let i = (net.root() + 1) % 3;
    let conn = ConnId(11);
    net.held = Some(Vec::new());
    let sub = tcp(subscribe(5, "z9hG4bKheld", 1, None, 600));
    net.stream_send(i, conn, tcp_ua(5), sub.as_bytes());
    net.stream_closed(i, conn);
    net.release();
    let [(p, fresh, dst)] = net.connects[..] else {
        panic!("{:?}", net.connects)
    };
    assert_eq!(p, i);
    assert_eq!(dst, "192.0.2.5:5070".parse::<SocketAddr>().unwrap());
    let got = net.take_stream(fresh);
    assert_eq!(finals(&got), vec![200]);
    assert_eq!(
        notifies(&got).len(),
        1,
        "the NOTIFY follows on the same new connection (the Contact's address too)"
    );
}

#[test]
fn idle_connections_are_closed() {
    let mut net = Net::new(2);
    publish_initial(&mut net, 0);
    let (quiet, busy, dialog) = (ConnId(1), ConnId(2), ConnId(3));
    net.stream_send(0, quiet, tcp_ua(7), b"");
    net.stream_send(0, busy, tcp_ua(8), b"");
    let t0 = net.now;
    establish_tcp(&mut net, 0, 3, dialog);
    let t1 = net.now;
    net.advance(t0 + 200_000 - net.now);
    net.stream_request(0, busy, tcp_ua(8), &options("z9hG4bKbusy"));
    assert_eq!(net.now, t0 + 200_000, "OPTIONS is answered at once");
    net.advance(99_000);
    assert!(net.closed.is_empty());
    net.advance(2_000);
    assert_eq!(net.closed, vec![quiet]);
    net.advance(t0 + 499_000 - net.now);
    assert_eq!(net.closed, vec![quiet]);
    net.advance(2_000);
    assert_eq!(net.closed, vec![quiet, busy]);
    // The subscription (600 s) keeps its connection beyond the idle timeout; when it expires
    // its final NOTIFY is traffic, and the connection goes idle from then on.
    net.advance(t1 + 590_000 - net.now);
    assert_eq!(net.closed, vec![quiet, busy]);
    let mut terminated = None;
    for _ in 0..200 {
        net.advance(1_000);
        let ns = notifies(&net.take_stream(dialog));
        if ns
            .iter()
            .any(|n| sub_state(n).to_string().starts_with("terminated"))
        {
            terminated = Some(net.now);
            break;
        }
    }
    let t2 = terminated.expect("a final NOTIFY at expiry");
    net.advance(t2 + 298_000 - net.now);
    assert_eq!(net.closed, vec![quiet, busy]);
    net.advance(2_000);
    assert_eq!(net.closed, vec![quiet, busy, dialog]);
    let s = net.hosts[0].stats().sip.unwrap();
    assert_eq!(s.connections_closed, 3);
    assert_eq!(net.hosts[0].stats().sip_connections, 0);
}

/// The malformed-request corpus of `tests/sip-corpus/` over TCP, each file on a connection of
/// its own: the status it gets over UDP, on a connection that stays open, except where the
/// stream decides otherwise (listed).
#[test]
fn malformed_corpus_over_tcp() {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sip-corpus"));
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sip"))
        .collect();
    files.sort();
    // (file, final status over TCP (0: none), whether the connection is closed after it)
    let over_tcp: &[(&str, u16, bool)] = &[
        // The body it announces has not all come, or the header section is not over yet:
        // the stream waits for the rest.
        ("content-length-exceeds-datagram.400", 0, false),
        ("no-empty-line.400", 0, false),
        // Not a start line: nothing to address an answer with, and closed.
        ("binary-garbage.000", 0, true),
        ("lf-only-line-endings.400", 0, true),
        // Answered as over UDP, but a message that does not parse ends its stream.
        ("content-length-not-a-number.400", 400, true),
        ("header-line-without-colon.400", 400, true),
        ("non-utf8-header.400", 400, true),
        ("oversized.513", 513, true),
        ("sip-version-3.505", 505, true),
    ];
    let mut net = Net::new(2);
    let mut seen = 0;
    for (k, f) in files.iter().enumerate() {
        let name = f.file_stem().unwrap().to_string_lossy().to_string();
        let udp: u16 = name.rsplit_once('.').unwrap().1.parse().unwrap();
        let (want, want_closed) = match over_tcp.iter().find(|(n, _, _)| *n == name) {
            Some(&(_, code, closed)) => {
                seen += 1;
                (code, closed)
            }
            None => (udp, false),
        };
        let conn = ConnId(1_000 + k as u64);
        let closed_before = net.closed.len();
        net.stream_send(0, conn, tcp_ua(7), &std::fs::read(f).unwrap());
        net.advance(500);
        let got = finals(&net.take_stream(conn));
        let want: Vec<u16> = if want == 0 { vec![] } else { vec![want] };
        assert_eq!(got, want, "{name}");
        let closed = net.closed[closed_before..].contains(&conn);
        assert_eq!(closed, want_closed, "{name}: closed");
        if !closed {
            net.stream_closed(0, conn);
        }
    }
    assert_eq!(seen, over_tcp.len(), "every listed file exists");
    // The endpoint still serves after the whole corpus.
    let (r, _) = net.stream_request(0, ConnId(1), tcp_ua(8), &options("z9hG4bKend"));
    assert_eq!(r.code, 200);
    // This one, and the one opened to the Contact of `subscribe-no-state.200`'s subscription
    // (accepted before any publication) for its NOTIFYs once its own connection closed.
    assert_eq!(net.hosts[0].stats().sip_connections, 2);
}
