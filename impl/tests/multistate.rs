//! Presence semantics v3 through the SIP front end: subscribe before any state, several event
//! states per presentity (RFC 3903 §4) composed into one PIDF, each refreshed, modified,
//! removed and expiring on its own, the limits, and other packages' content types.
//!
//! Run: `cargo test -p sascribe --test multistate`.

mod sip_net;

use sascribe::pidf::summary;
use sascribe::sip::headers::SubscriptionState;
use sascribe::sip::message::{Request, Response};
use sascribe::Config;
use sip_net::*;

/// A PIDF body with one tuple `id`, status `basic` and note `note`.
fn doc(id: &str, basic: &str, note: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <presence xmlns=\"urn:ietf:params:xml:ns:pidf\" \
         xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\" entity=\"sip:alice@example.test\">\
         <tuple id=\"{id}\"><status><basic>{basic}</basic></status><note>{note}</note></tuple>\
         <dm:person id=\"p-{id}\"><dm:note>{note} person</dm:note></dm:person>\
         </presence>"
    )
}

/// (tuple id, basic) of each tuple of a NOTIFY's PIDF body.
fn tuples(n: &Request) -> Vec<(String, String)> {
    let s = summary(&n.body).unwrap_or_else(|e| panic!("{e}: {:?}", n.body));
    assert_eq!(s.entity.as_deref(), Some("sip:alice@example.test"));
    s.tuples
        .into_iter()
        .map(|t| (t.id, t.basic.unwrap_or_default()))
        .collect()
}

fn seq_of(n: &Request) -> u64 {
    n.headers.get("X-Sascribe-Seq").unwrap().parse().unwrap()
}

/// Sends a PUBLISH from UA 1 to peer `i`.
fn pubreq(
    net: &mut Net,
    i: usize,
    branch: &str,
    etag: Option<&str>,
    body: &str,
    expires: u32,
) -> Response {
    let (r, _) = net.request(
        i,
        ua(1),
        &publish(Pub {
            branch,
            etag,
            body,
            expires: Some(expires),
            ..Pub::default()
        }),
    );
    r
}

/// The NOTIFYs UA `n` (subscribed at peer `i`) got since last asked, each answered 200 (a
/// retransmitted one counted once).
fn drain(net: &mut Net, i: usize, n: u8) -> Vec<Request> {
    let mut all = Vec::new();
    loop {
        let ns = notifies(&net.take(ua(n)));
        if ns.is_empty() {
            return all;
        }
        for x in ns {
            net.send(i, ua(n), &ok_for(&x));
            // Timer E retransmissions of a NOTIFY sent while time advanced: one each.
            let cseq = |r: &Request| r.headers.get("CSeq").map(str::to_string);
            if !all.iter().any(|y: &Request| cseq(y) == cseq(&x)) {
                all.push(x);
            }
        }
    }
}

fn etag(r: &Response) -> String {
    assert_eq!(r.code, 200, "{r:?}");
    r.headers.get("SIP-ETag").expect("SIP-ETag").to_string()
}

#[test]
fn subscribe_before_publish_gets_200_and_an_empty_notify_then_the_first_publication() {
    let mut net = Net::new(4);
    let (r, rest) = net.request(2, ua(2), &subscribe(2, "z9hG4bKfirst", 1, None, 600));
    assert_eq!(r.code, 200);
    let ns = notifies(&rest);
    assert_eq!(ns.len(), 1, "one immediate NOTIFY");
    assert!(matches!(
        sub_state(&ns[0]),
        SubscriptionState::Active { .. }
    ));
    assert_eq!(seq_of(&ns[0]), 0);
    assert!(ns[0].body.is_empty());
    net.send(2, ua(2), &ok_for(&ns[0]));

    let e = etag(&pubreq(
        &mut net,
        0,
        "z9hG4bKp1",
        None,
        &doc("pc", "open", "v1"),
        600,
    ));
    assert!(!e.is_empty());
    let ns = drain(&mut net, 2, 2);
    assert_eq!(ns.len(), 1);
    assert_eq!(seq_of(&ns[0]), 1);
    assert_eq!(
        ns[0].headers.get("Content-Type"),
        Some("application/pidf+xml")
    );
    assert_eq!(tuples(&ns[0]), [("pc".to_string(), "open".to_string())]);
}

#[test]
fn two_publishers_are_composed_modified_and_removed_one_by_one() {
    let mut net = Net::new(5);
    let (_, first) = establish(&mut net, 3, 3);
    assert_eq!(seq_of(&first), 0);
    // Two publishers of one presentity, each without SIP-If-Match: two event states.
    let ea = etag(&pubreq(
        &mut net,
        0,
        "z9hG4bKa1",
        None,
        &doc("pc", "open", "a1"),
        600,
    ));
    let eb = etag(&pubreq(
        &mut net,
        1,
        "z9hG4bKb1",
        None,
        &doc("phone", "closed", "b1"),
        600,
    ));
    assert_ne!(ea, eb);
    let ns = drain(&mut net, 3, 3);
    let last = ns.last().unwrap();
    assert_eq!(seq_of(last), 2);
    assert_eq!(
        tuples(last),
        [
            ("pc".to_string(), "open".to_string()),
            ("phone".to_string(), "closed".to_string())
        ]
    );
    // The latest state's other children (its dm:person) only; namespaces preserved.
    let text = String::from_utf8(last.body.to_vec()).unwrap();
    assert!(
        text.contains("b1 person") && !text.contains("a1 person"),
        "{text}"
    );
    assert!(
        text.contains("xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\""),
        "{text}"
    );

    // A modifies its own state with its own entity tag while B's exists: 200.
    let ea2 = etag(&pubreq(
        &mut net,
        2,
        "z9hG4bKa2",
        Some(&ea),
        &doc("pc", "closed", "a2"),
        600,
    ));
    assert_ne!(ea2, ea);
    let ns = drain(&mut net, 3, 3);
    assert_eq!(ns.len(), 1);
    assert_eq!(seq_of(&ns[0]), 3);
    assert_eq!(
        tuples(&ns[0]),
        [
            ("pc".to_string(), "closed".to_string()),
            ("phone".to_string(), "closed".to_string())
        ]
    );
    // A's old tag names no live state: 412, nothing changes.
    let r = pubreq(
        &mut net,
        2,
        "z9hG4bKa3",
        Some(&ea),
        &doc("pc", "open", "a3"),
        600,
    );
    assert_eq!(r.code, 412);
    assert!(drain(&mut net, 3, 3).is_empty());
    // A refresh (no body) of B: new tag, a new seq, same composition.
    let eb2 = etag(&pubreq(&mut net, 4, "z9hG4bKb2", Some(&eb), "", 900));
    assert_ne!(eb2, eb);

    // B removes its state: 200 without SIP-ETag; A's stays.
    let r = pubreq(&mut net, 1, "z9hG4bKb3", Some(&eb2), "", 0);
    assert_eq!(r.code, 200);
    assert_eq!(r.headers.get("SIP-ETag"), None);
    assert_eq!(r.headers.get("Expires"), Some("0"));
    let ns = drain(&mut net, 3, 3);
    let last = ns.last().unwrap();
    assert_eq!(seq_of(last), 5);
    assert_eq!(tuples(last), [("pc".to_string(), "closed".to_string())]);
    // B's tag is gone.
    assert_eq!(
        pubreq(&mut net, 1, "z9hG4bKb4", Some(&eb2), "", 600).code,
        412
    );

    // The last removal: the neutral `closed` document.
    let r = pubreq(&mut net, 0, "z9hG4bKa4", Some(&ea2), "", 0);
    assert_eq!(r.code, 200);
    let ns = drain(&mut net, 3, 3);
    assert_eq!(ns.len(), 1);
    assert_eq!(seq_of(&ns[0]), 6);
    assert_eq!(
        ns[0].headers.get("Content-Type"),
        Some("application/pidf+xml")
    );
    let t = tuples(&ns[0]);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].1, "closed");
    // A new watcher is accepted and gets the closed document with the removal's seq.
    let (_, n) = establish(&mut net, 4, 4);
    assert_eq!(seq_of(&n), 6);
    assert_eq!(tuples(&n)[0].1, "closed");
}

#[test]
fn each_state_expires_on_its_own() {
    let mut net = Net::new(4);
    let (_, _) = establish(&mut net, 1, 2);
    let short = etag(&pubreq(
        &mut net,
        0,
        "z9hG4bKs",
        None,
        &doc("pc", "open", "s"),
        60,
    ));
    let _long = etag(&pubreq(
        &mut net,
        0,
        "z9hG4bKl",
        None,
        &doc("phone", "open", "l"),
        300,
    ));
    drain(&mut net, 1, 2);
    net.advance(62_000);
    let ns = drain(&mut net, 1, 2);
    let seqs: Vec<u64> = ns.iter().map(seq_of).collect();
    assert_eq!(ns.len(), 1, "one expiry, one NOTIFY: {seqs:?}");
    assert_eq!(seq_of(&ns[0]), 3);
    assert_eq!(tuples(&ns[0]), [("phone".to_string(), "open".to_string())]);
    // The expired state's tag is gone.
    assert_eq!(
        pubreq(&mut net, 0, "z9hG4bKs2", Some(&short), "", 600).code,
        412
    );
    net.advance(240_000);
    let ns = drain(&mut net, 1, 2);
    let expired: Vec<&Request> = ns
        .iter()
        .filter(|n| matches!(sub_state(n), SubscriptionState::Active { .. }))
        .collect();
    assert_eq!(expired.len(), 1);
    assert_eq!(seq_of(expired[0]), 4);
    assert_eq!(tuples(expired[0])[0].1, "closed");
}

#[test]
fn limits_are_answered_403_and_413() {
    let cfg = Config {
        max_states: 2,
        max_document: 700,
        ..Config::default()
    };
    let mut net = Net::with_config(3, cfg, &["presence"]);
    etag(&pubreq(
        &mut net,
        0,
        "z9hG4bKl1",
        None,
        &doc("a", "open", "1"),
        600,
    ));
    let e2 = etag(&pubreq(
        &mut net,
        1,
        "z9hG4bKl2",
        None,
        &doc("b", "open", "2"),
        600,
    ));
    let r = pubreq(&mut net, 2, "z9hG4bKl3", None, &doc("c", "open", "3"), 600);
    assert_eq!(r.code, 403);
    assert!(
        r.reason.contains("more than 2 event states"),
        "{}",
        r.reason
    );
    // Together the states would exceed 700 bytes: 413, and nothing changed.
    let big = doc("b", "open", &"x".repeat(400));
    let r = pubreq(&mut net, 2, "z9hG4bKl4", Some(&e2), &big, 600);
    assert_eq!(r.code, 413);
    assert_eq!(
        pubreq(&mut net, 2, "z9hG4bKl5", Some(&e2), "", 600).code,
        200
    );
    // A body over max_body (8 KiB) is refused by the front end's peer at once.
    let huge = doc("d", "open", &"y".repeat(9000));
    assert_eq!(pubreq(&mut net, 0, "z9hG4bKl6", None, &huge, 600).code, 413);
    // An unparsable PIDF body is refused.
    let r = pubreq(&mut net, 0, "z9hG4bKl7", None, "<presence><tuple>", 600);
    assert_eq!(r.code, 400);
    assert!(r.reason.contains("PIDF"), "{}", r.reason);
}

#[test]
fn other_packages_keep_their_content_type_and_the_latest_state_wins() {
    let mut net = Net::with_config(3, Config::default(), &["presence", "dialog"]);
    let sub = subscribe(2, "z9hG4bKd", 1, None, 600).replace("Event: presence", "Event: dialog");
    let sub = sub.replace("Accept: application/pidf+xml\r\n", "");
    let (r, rest) = net.request(1, ua(2), &sub);
    assert_eq!(r.code, 200);
    let ns = notifies(&rest);
    assert_eq!(seq_of(&ns[0]), 0);
    assert!(ns[0].body.is_empty());
    net.send(1, ua(2), &ok_for(&ns[0]));
    let body1 = "<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"1\" state=\"full\" entity=\"sip:alice@example.test\"/>";
    let body2 = "<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"2\" state=\"full\" entity=\"sip:alice@example.test\"/>";
    let mk = |branch, body| {
        publish(Pub {
            branch,
            body,
            event: "dialog",
            content_type: "application/dialog-info+xml",
            ..Pub::default()
        })
    };
    let (r, _) = net.request(0, ua(1), &mk("z9hG4bKd1", body1));
    let e1 = etag(&r);
    let (r, _) = net.request(2, ua(1), &mk("z9hG4bKd2", body2));
    etag(&r);
    let ns = drain(&mut net, 1, 2);
    assert_eq!(ns.len(), 2);
    for (n, body) in ns.iter().zip([body1, body2]) {
        assert_eq!(
            n.headers.get("Content-Type"),
            Some("application/dialog-info+xml")
        );
        assert_eq!(&n.body[..], body.as_bytes());
    }
    // Removing the first state: the latest is what is left (with a new seq).
    let (r, _) = net.request(
        0,
        ua(1),
        &publish(Pub {
            branch: "z9hG4bKd3",
            etag: Some(&e1),
            body: "",
            expires: Some(0),
            event: "dialog",
            ..Pub::default()
        }),
    );
    assert_eq!(r.code, 200);
    let ns = drain(&mut net, 1, 2);
    assert_eq!(&ns[0].body[..], body2.as_bytes());
}
