//! The SIP front end driven like a stock UA would drive a presence server: raw SIP text in,
//! raw SIP text out, over a small in-memory overlay with virtual time.
//!
//! Run: `cargo test -p sascribe --test sip`.

mod sip_net;

use sascribe::sip::headers::{CSeq, NameAddr, SubscriptionState};
use sascribe::sip::message::{Message, Response};
use sip_net::*;

#[test]
fn publication_on_one_peer_reaches_subscribers_on_others() {
    let mut net = Net::new(5);
    // No state yet: 200 all the same, and an immediate NOTIFY without body (seq 0); the
    // first publication reaches this early watcher too.
    let (r, rest) = net.request(4, ua(5), &subscribe(5, "z9hG4bKearly", 1, None, 600));
    assert_eq!(r.code, 200);
    let ns = notifies(&rest);
    assert_eq!(ns.len(), 1);
    assert!(matches!(
        sub_state(&ns[0]),
        SubscriptionState::Active { .. }
    ));
    assert_eq!(ns[0].headers.get("X-Sascribe-Seq"), Some("0"));
    assert!(ns[0].body.is_empty());
    assert_eq!(ns[0].headers.get("Content-Type"), None);
    net.send(4, ua(5), &ok_for(&ns[0]));

    let etag = publish_initial(&mut net, 0);
    let early = notifies(&net.take(ua(5)));
    assert_eq!(early.len(), 1);
    assert_eq!(early[0].headers.get("X-Sascribe-Seq"), Some("1"));
    assert_eq!(basics(&early[0].body), ["open"]);
    net.send(4, ua(5), &ok_for(&early[0]));
    let (_, n2) = establish(&mut net, 1, 2);
    let (_, n3) = establish(&mut net, 2, 3);
    for n in [&n2, &n3] {
        assert_eq!(basics(&n.body), ["open"]);
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
        assert_eq!(basics(&ns[0].body), ["closed"]);
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
    assert_eq!(basics(&ns[0].body), ["open"]);
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
    assert_eq!(basics(&ns[0].body), ["open"]);
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
    for (b, ev) in [("z9hG4bKev1", ""), ("z9hG4bKev2", "conference")] {
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
        assert_eq!(
            r.headers.get("Allow-Events"),
            Some("presence, dialog, message-summary")
        );
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
        let body = PIDF_OPEN.replace("</tuple>", &format!("<note>{k}</note></tuple>"));
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
            let s = sascribe::pidf::summary(&n.body).unwrap();
            got.push(s.tuples[0].notes.join(","));
            net.send(3, ua(5), &ok_for(&n));
        }
    }
    let want: Vec<String> = (0..6).map(|k| k.to_string()).collect();
    assert_eq!(got, want);
}

// ----- malformed input -----
