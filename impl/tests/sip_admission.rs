//! Admission control of the SIP front end (issue 12 item 3, issue 13 item 7): overload 503s
//! with Retry-After decided in the core, the abuse limits, each with its counter, and
//! in-dialog requests preferred over new work. Sans-IO, virtual time, no timing assertions.
//!
//! Run: `cargo test -p sascribe --test sip_admission`.

mod sip_net;

use sascribe::sip::message::{Message, Response};
use sascribe::sip::SipConfig;
use sascribe::Input;
use sip_net::*;

/// `Retry-After` of `r` in seconds (panics without one).
fn retry_after(r: &Response) -> u32 {
    r.headers
        .get("Retry-After")
        .unwrap_or_else(|| panic!("no Retry-After: {r:?}"))
        .parse()
        .unwrap()
}

/// The final responses UA `at` received so far.
fn finals(net: &mut Net, at: std::net::SocketAddr) -> Vec<Response> {
    net.take(at)
        .into_iter()
        .filter_map(|m| match m {
            Message::Response(r) if r.code >= 200 => Some(r),
            _ => None,
        })
        .collect()
}

/// A PUBLISH of its own event state (no SIP-If-Match) with branch `b`.
fn new_publish(b: &str) -> String {
    publish(Pub {
        branch: b,
        ..Pub::default()
    })
}

/// An initial SUBSCRIBE from UA `n` in a dialog of its own (`k` makes the Call-ID), to `uri`.
fn subscribe_k(n: u8, k: u32, uri: &str) -> String {
    subscribe(n, &format!("z9hG4bKk{n}x{k}"), 1, None, 600)
        .replace("Call-ID: sub-", &format!("Call-ID: sub{k}-"))
        .replace(
            "SUBSCRIBE sip:alice@example.test",
            &format!("SUBSCRIBE {uri}"),
        )
        .replace("To: <sip:alice@example.test>", &format!("To: <{uri}>"))
}

fn options(n: u8, b: &str) -> String {
    with_len(
        format!(
            "OPTIONS sip:alice@example.test SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.{n}:5070;branch={b}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:u{n}@example.test>;tag=o{n}\r\n\
             To: <sip:alice@example.test>\r\n\
             Call-ID: opt-{b}\r\n\
             CSeq: 1 OPTIONS\r\n"
        ),
        "",
    )
}

fn admission(
    f: impl Fn(&mut sascribe::sip::admission::AdmissionConfig),
) -> impl Fn(SipConfig) -> SipConfig {
    move |mut c| {
        f(&mut c.admission);
        c
    }
}

fn stats(net: &Net, i: usize) -> sascribe::sip::SipStats {
    net.hosts[i].sip().unwrap().metrics()
}

/// While the overlay is slow, PUBLISHes waiting for it pile up to 3/4 of `max_pending`; then
/// new publications get a stateless 503 with Retry-After at once, while a conditional PUBLISH
/// (work already acknowledged) and retransmissions of accepted requests still go through.
/// Nothing accepted is lost: every accepted PUBLISH gets its 200 once the overlay answers.
#[test]
fn pending_bound_refuses_new_work_first() {
    let mut net = Net::with_sip(4, admission(|a| a.max_pending = 8));
    let at = (net.root() + 1) % 4;
    let etag = publish_initial(&mut net, at);
    net.held = Some(Vec::new());
    for k in 0..6 {
        net.send(at, ua(1), &new_publish(&format!("z9hG4bKp{k}")));
    }
    assert!(finals(&mut net, ua(1)).is_empty());
    assert_eq!(net.hosts[at].stats().sip_transactions.0, 6 + 1);
    // The seventh new publication is refused at once, and keeps no transaction.
    net.send(at, ua(1), &new_publish("z9hG4bKp6"));
    let r = finals(&mut net, ua(1));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].code, 503);
    assert!((2..=4).contains(&retry_after(&r[0])), "{:?}", r[0]);
    assert_eq!(net.hosts[at].stats().sip_transactions.0, 7);
    assert_eq!(stats(&net, at).overload_refused, 1);
    assert_eq!(
        stats(&net, at).responses.get(&("PUBLISH".into(), 503)),
        Some(&1)
    );
    // A refresh of the acknowledged state is continuing work: admitted.
    let modify = publish(Pub {
        branch: "z9hG4bKmod",
        etag: Some(&etag),
        body: PIDF_CLOSED,
        ..Pub::default()
    });
    net.send(at, ua(1), &modify);
    assert!(finals(&mut net, ua(1)).is_empty());
    // A retransmission of an accepted request is absorbed, never refused.
    net.send(at, ua(1), &new_publish("z9hG4bKp0"));
    assert!(finals(&mut net, ua(1)).is_empty());
    assert_eq!(stats(&net, at).overload_refused, 1);
    // Nothing accepted is lost.
    net.release();
    net.advance(2_000);
    let done = finals(&mut net, ua(1));
    assert_eq!(done.len(), 7, "{done:?}");
    assert!(done.iter().all(|r| r.code == 200), "{done:?}");
    // The queue is gone: new work is admitted again.
    let (r, _) = net.request(at, ua(1), &new_publish("z9hG4bKp7"));
    assert_eq!(r.code, 200);
}

/// The driver's input backlog is an input of the core: at or above `max_backlog` percent a
/// new PUBLISH or SUBSCRIBE gets 503 + Retry-After; OPTIONS and in-dialog requests are
/// served; below it new work is admitted again.
#[test]
fn driver_backlog_refuses_new_work() {
    let mut net = Net::with_sip(3, admission(|a| a.max_backlog = 40));
    let (tag, _) = establish(&mut net, 1, 2);
    let now = net.now;
    net.hosts[1]
        .handle_input(now, Input::Backlog { percent: 40 })
        .unwrap();
    assert_eq!(net.hosts[1].sip().unwrap().backlog(), 40);
    let (r, _) = net.request(1, ua(1), &new_publish("z9hG4bKb1"));
    assert_eq!(r.code, 503);
    assert!(retry_after(&r) >= 2);
    let (r, _) = net.request(1, ua(3), &subscribe(3, "z9hG4bKb2", 1, None, 600));
    assert_eq!(r.code, 503);
    assert!(retry_after(&r) >= 2);
    let (r, _) = net.request(1, ua(3), &options(3, "z9hG4bKb3"));
    assert_eq!(r.code, 200);
    let (r, _) = net.request(1, ua(2), &subscribe(2, "z9hG4bKb4", 2, Some(&tag), 600));
    assert_eq!(r.code, 200, "in-dialog refresh served under load");
    assert_eq!(stats(&net, 1).overload_refused, 2);
    net.hosts[1]
        .handle_input(net.now, Input::Backlog { percent: 39 })
        .unwrap();
    let (r, _) = net.request(1, ua(1), &new_publish("z9hG4bKb5"));
    assert_eq!(r.code, 200);
}

/// A slow overlay (a root or a replica falling behind) shows in how long it takes to answer:
/// once the mean answer delay of recent requests reaches `max_delay`, new work gets 503 +
/// Retry-After at once, before anything piles up, while a conditional PUBLISH is served; once
/// nothing was answered for two windows, new work is admitted again.
#[test]
fn slow_overlay_answers_refuse_new_work() {
    let mut net = Net::with_sip(4, admission(|a| a.max_delay = 200));
    let at = (net.root() + 1) % 4;
    let etag = publish_initial(&mut net, at);
    assert_eq!(net.hosts[at].sip().unwrap().overlay_delay(net.now), None);
    net.held = Some(Vec::new());
    for k in 0..8 {
        net.send(at, ua(1), &new_publish(&format!("z9hG4bKs{k}")));
    }
    net.advance(300);
    net.release();
    let done = finals(&mut net, ua(1));
    assert_eq!(done.len(), 8, "{done:?}");
    assert!(done.iter().all(|r| r.code == 200), "{done:?}");
    let delay = net.hosts[at].sip().unwrap().overlay_delay(net.now);
    assert!(delay.is_some_and(|d| d >= 200), "{delay:?}");
    // Far below max_pending, the delay alone refuses new work.
    net.send(at, ua(1), &new_publish("z9hG4bKs8"));
    let r = finals(&mut net, ua(1));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].code, 503);
    assert!((2..=4).contains(&retry_after(&r[0])), "{:?}", r[0]);
    let (r, _) = net.request(at, ua(3), &subscribe(3, "z9hG4bKs9", 1, None, 600));
    assert_eq!(r.code, 503);
    assert_eq!(stats(&net, at).overload_refused, 2);
    // Work already acknowledged goes on.
    let modify = publish(Pub {
        branch: "z9hG4bKsmod",
        etag: Some(&etag),
        body: PIDF_CLOSED,
        ..Pub::default()
    });
    let (r, _) = net.request(at, ua(1), &modify);
    assert_eq!(r.code, 200);
    // Nothing answered for two windows: admitted again.
    net.advance(2 * sascribe::sip::admission::DELAY_WINDOW);
    assert_eq!(net.hosts[at].sip().unwrap().overlay_delay(net.now), None);
    let (r, _) = net.request(at, ua(1), &new_publish("z9hG4bKs10"));
    assert_eq!(r.code, 200);
}

/// A flood of new requests — from other sources and from the subscriber's own address,
/// against a slow overlay — cannot starve the un-SUBSCRIBE of an existing dialog: the flood
/// gets 503s (rate and overload), the un-SUBSCRIBE its 200 and the terminated NOTIFY.
#[test]
fn flood_cannot_starve_unsubscribe() {
    let mut net = Net::with_sip(
        4,
        admission(|a| {
            a.max_pending = 8;
            a.source_rate = 20;
            a.source_burst = 20;
        }),
    );
    let at = (net.root() + 1) % 4;
    let (tag, _) = establish(&mut net, at, 2);
    net.held = Some(Vec::new());
    for k in 0..300u32 {
        let n = [1u8, 2, 3, 4][k as usize % 4];
        let text = if k % 2 == 0 {
            new_publish(&format!("z9hG4bKf{k}"))
        } else {
            subscribe_k(n, k, "sip:bob@example.test")
        };
        let from = ua(n);
        let text = text.replace("192.0.2.1:5070", &from.to_string());
        net.send(at, from, &text);
    }
    let s = stats(&net, at);
    assert!(s.rate_limited > 0 && s.overload_refused > 0, "{s:?}");
    assert!(net.hosts[at].stats().sip_transactions.0 <= 8);
    for n in 1..=4 {
        net.take(ua(n));
    }
    // The un-SUBSCRIBE of the existing dialog, from the flooding address itself.
    net.send(at, ua(2), &subscribe(2, "z9hG4bKunsub", 2, Some(&tag), 0));
    let msgs = net.take(ua(2));
    let codes: Vec<u16> = msgs
        .iter()
        .filter_map(|m| match m {
            Message::Response(r) => Some(r.code),
            _ => None,
        })
        .collect();
    assert_eq!(codes, vec![200], "{msgs:?}");
    let ns = notifies(&msgs);
    assert_eq!(ns.len(), 1);
    assert!(ns[0]
        .headers
        .get("Subscription-State")
        .unwrap()
        .starts_with("terminated"));
}

/// Per-source token bucket: `source_burst` requests at once, then 503 with the Retry-After
/// of the next token; other sources are not affected; the bucket refills with time. The
/// per-source state is an LRU map of at most `max_sources` addresses.
#[test]
fn per_source_rate_limit() {
    let mut net = Net::with_sip(
        2,
        admission(|a| {
            a.source_rate = 2;
            a.source_burst = 3;
            a.max_sources = 16;
        }),
    );
    for k in 0..3 {
        let (r, _) = net.request(0, ua(1), &options(1, &format!("z9hG4bKr{k}")));
        assert_eq!(r.code, 200);
    }
    let (r, _) = net.request(0, ua(1), &options(1, "z9hG4bKr3"));
    assert_eq!(r.code, 503);
    assert_eq!(retry_after(&r), 1);
    assert!(r.reason.contains("rate"), "{}", r.reason);
    assert_eq!(stats(&net, 0).rate_limited, 1);
    let (r, _) = net.request(0, ua(9), &options(9, "z9hG4bKr4"));
    assert_eq!(r.code, 200);
    net.advance(1_000);
    let (r, _) = net.request(0, ua(1), &options(1, "z9hG4bKr5"));
    assert_eq!(r.code, 200);
    // A spoofed-source flood: the state stays within max_sources.
    for n in 10..=250u8 {
        net.send(0, ua(n), &options(n, &format!("z9hG4bKs{n}")));
    }
    assert_eq!(net.hosts[0].sip().unwrap().rate_limited_sources(), 16);
}

/// Subscriptions per source (403), per presentity (403) and dialogs per peer (503 +
/// Retry-After), each counted; a dialog that ends frees its place.
#[test]
fn subscription_limits() {
    let mut net = Net::with_sip(
        1,
        admission(|a| {
            a.max_subs_per_source = 2;
            a.max_subs_per_presentity = 3;
        }),
    );
    let bob = "sip:bob@example.test";
    let mut tags = Vec::new();
    for k in 0..2 {
        let (r, rest) = net.request(0, ua(1), &subscribe_k(1, k, bob));
        assert_eq!(r.code, 200, "{r:?}");
        for n in notifies(&rest) {
            net.send(0, ua(1), &ok_for(&n));
        }
        tags.push(to_tag(&r));
    }
    let carol = "sip:carol@example.test";
    let (r, _) = net.request(0, ua(1), &subscribe_k(1, 2, carol));
    assert_eq!(r.code, 403);
    assert!(r
        .reason
        .contains("more than 2 subscriptions from this source"));
    assert_eq!(stats(&net, 0).source_sub_limited, 1);
    // Another source may watch bob once more; then bob has max_subs_per_presentity.
    let (r, _) = net.request(0, ua(2), &subscribe_k(2, 0, bob));
    assert_eq!(r.code, 200);
    let (r, _) = net.request(0, ua(3), &subscribe_k(3, 0, bob));
    assert_eq!(r.code, 403);
    assert!(r
        .reason
        .contains("more than 3 subscriptions to this resource"));
    assert_eq!(stats(&net, 0).presentity_sub_limited, 1);
    // Ending a dialog frees its place: source 1 may subscribe again.
    let unsub = subscribe_k(1, 0, bob)
        .replace("CSeq: 1 ", "CSeq: 2 ")
        .replace("Expires: 600", "Expires: 0")
        .replace("branch=z9hG4bKk1x0", "branch=z9hG4bKk1x0u")
        .replace(
            &format!("To: <{bob}>"),
            &format!("To: <{bob}>;tag={}", tags[0]),
        );
    let (r, rest) = net.request(0, ua(1), &unsub);
    assert_eq!(r.code, 200);
    for n in notifies(&rest) {
        net.send(0, ua(1), &ok_for(&n));
    }
    let (r, _) = net.request(0, ua(1), &subscribe_k(1, 3, carol));
    assert_eq!(r.code, 200, "{r:?}");

    // Dialogs per peer.
    let mut net = Net::with_sip(1, admission(|a| a.max_dialogs = 1));
    let (r, _) = net.request(0, ua(1), &subscribe_k(1, 0, bob));
    assert_eq!(r.code, 200);
    let (r, _) = net.request(0, ua(2), &subscribe_k(2, 0, bob));
    assert_eq!(r.code, 503);
    assert!(retry_after(&r) >= 2);
    assert_eq!(stats(&net, 0).dialog_limited, 1);
}

/// A body over `max_body` gets 413 from the front end (counted, before the overlay sees it);
/// a message over `max_message` 513 (RFC 3261 §21.5.14).
#[test]
fn body_and_message_size() {
    let mut net = Net::with_sip(2, |c| SipConfig {
        max_message: 20_000,
        ..c
    });
    let big = PIDF_OPEN.replace("<tuple", &format!("<!-- {} --><tuple", "x".repeat(9_000)));
    let (r, _) = net.request(
        0,
        ua(1),
        &publish(Pub {
            body: &big,
            ..Pub::default()
        }),
    );
    assert_eq!(r.code, 413);
    assert_eq!(stats(&net, 0).body_too_large, 1);
    let huge = PIDF_OPEN.replace("<tuple", &format!("<!-- {} --><tuple", "x".repeat(30_000)));
    let (r, _) = net.request(
        0,
        ua(1),
        &publish(Pub {
            branch: "z9hG4bKhuge",
            body: &huge,
            ..Pub::default()
        }),
    );
    assert_eq!(r.code, 513);
    assert_eq!(stats(&net, 0).rx_oversized, 1);
}
