//! Which presentity a Request-URI names (its address-of-record, with served domains and
//! aliases), and where a subscription's NOTIFYs go (the subscriber's Contact, its Record-Route,
//! and the source address of a client behind NAT).
//!
//! Run: `cargo test -p sascribe --test sip_routing`.

mod sip_net;

use sascribe::sip::message::Request;
use sip_net::*;
use std::net::SocketAddr;

const PIDF: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
    <presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:alice@example.test\">\
    <tuple id=\"pc\"><status><basic>open</basic></status></tuple></presence>";

/// PUBLISHes Alice's state at peer 0 under Request-URI `uri`; returns the status.
fn publish_as(net: &mut Net, uri: &str, branch: &str) -> u16 {
    let text = publish(Pub {
        branch,
        body: PIDF,
        expires: Some(600),
        ..Pub::default()
    })
    .replacen(
        "PUBLISH sip:alice@example.test",
        &format!("PUBLISH {uri}"),
        1,
    );
    net.request(0, ua(1), &text).0.code
}

/// A SUBSCRIBE of watcher `n` from `ua(n)` for `uri`, with its Via, Contact and extra headers
/// rewritten by `edit`.
fn subscribe_as(n: u8, uri: &str, branch: &str, edit: impl Fn(String) -> String) -> String {
    let text = subscribe(n, branch, 1, None, 600).replacen(
        "SUBSCRIBE sip:alice@example.test",
        &format!("SUBSCRIBE {uri}"),
        1,
    );
    edit(text)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn notifies_at(net: &mut Net, a: SocketAddr) -> Vec<Request> {
    notifies(&net.take(a))
}

#[test]
fn the_port_and_scheme_of_a_uri_name_no_other_presentity() {
    let mut net = Net::new(4);
    assert_eq!(
        publish_as(&mut net, "sip:alice@Example.TEST:5099", "z9hG4bKp1"),
        200
    );
    let text = subscribe_as(
        2,
        "sips:alice@example.test:5061;transport=tcp",
        "z9hG4bKs1",
        |t| t,
    );
    let (r, rest) = net.request(2, ua(2), &text);
    assert_eq!(r.code, 200);
    let ns = notifies(&rest);
    assert_eq!(ns.len(), 1);
    assert!(
        String::from_utf8_lossy(&ns[0].body).contains("<basic>open</basic>"),
        "the state published under another port and scheme: {:?}",
        ns[0]
    );
}

#[test]
fn served_domains_and_aliases_decide_the_presentity() {
    let mut net = Net::with_sip(4, |mut c| {
        c.domains = vec!["example.test".into()];
        c.aliases = vec![("192.0.2.200:5060".into(), "example.test".into())];
        c
    });
    // A domain this deployment does not serve.
    let (r, _) = net.request(
        0,
        ua(1),
        &publish(Pub {
            branch: "z9hG4bKo1",
            body: PIDF,
            ..Pub::default()
        })
        .replacen(
            "PUBLISH sip:alice@example.test",
            "PUBLISH sip:alice@other.test",
            1,
        ),
    );
    assert_eq!(r.code, 404, "{r:?}");
    let text = subscribe_as(2, "sip:alice@other.test", "z9hG4bKo2", |t| t);
    assert_eq!(net.request(2, ua(2), &text).0.code, 404);
    // The alias names Alice of the served domain.
    assert_eq!(
        publish_as(&mut net, "sip:alice@example.test", "z9hG4bKa1"),
        200
    );
    let text = subscribe_as(2, "sip:alice@192.0.2.200:5060", "z9hG4bKa2", |t| t);
    let (r, rest) = net.request(2, ua(2), &text);
    assert_eq!(r.code, 200);
    let ns = notifies(&rest);
    assert_eq!(ns.len(), 1);
    assert!(String::from_utf8_lossy(&ns[0].body).contains("open"));
    // The address without the aliased port is no alias, and not served.
    let text = subscribe_as(3, "sip:alice@192.0.2.200", "z9hG4bKa3", |t| t);
    assert_eq!(net.request(3, ua(3), &text).0.code, 404);
}

#[test]
fn notifies_go_to_the_contact_of_the_subscriber() {
    let mut net = Net::new(4);
    // The watcher sends from 192.0.2.2:5070 but names another address as its Contact.
    let text = subscribe_as(2, "sip:alice@example.test", "z9hG4bKc1", |t| {
        t.replace(
            "Contact: <sip:watcher2@192.0.2.2:5070>",
            "Contact: <sip:watcher2@192.0.2.77:5080>",
        )
    });
    let (r, rest) = net.request(2, ua(2), &text);
    assert_eq!(r.code, 200);
    assert!(
        notifies(&rest).is_empty(),
        "no NOTIFY to the source: {rest:?}"
    );
    let ns = notifies_at(&mut net, addr("192.0.2.77:5080"));
    assert_eq!(ns.len(), 1, "the immediate NOTIFY goes to the Contact");
    assert_eq!(ns[0].uri, "sip:watcher2@192.0.2.77:5080");
    net.send(2, addr("192.0.2.77:5080"), &ok_for(&ns[0]));
    // A refresh with a new Contact moves the NOTIFYs there (a target refresh).
    let tag = to_tag(&r);
    let refresh = subscribe(2, "z9hG4bKc2", 2, Some(&tag), 600).replace(
        "Contact: <sip:watcher2@192.0.2.2:5070>",
        "Contact: <sip:watcher2@192.0.2.78:5080>",
    );
    let (r, _) = net.request(2, ua(2), &refresh);
    assert_eq!(r.code, 200);
    let ns = notifies_at(&mut net, addr("192.0.2.78:5080"));
    assert_eq!(ns.len(), 1, "the refresh's NOTIFY goes to the new Contact");
    assert_eq!(ns[0].uri, "sip:watcher2@192.0.2.78:5080");
}

#[test]
fn a_client_behind_nat_is_notified_at_its_source_address() {
    let mut net = Net::new(4);
    // Via and Contact carry the client's private address; the request came from ua(2).
    let text = subscribe_as(2, "sip:alice@example.test", "z9hG4bKn1", |t| {
        t.replace(
            "Via: SIP/2.0/UDP 192.0.2.2:5070",
            "Via: SIP/2.0/UDP 10.1.1.1:5070",
        )
        .replace(
            "Contact: <sip:watcher2@192.0.2.2:5070>",
            "Contact: <sip:watcher2@10.1.1.1:5070>",
        )
    });
    let (r, rest) = net.request(2, ua(2), &text);
    assert_eq!(r.code, 200);
    let ns = notifies(&rest);
    assert_eq!(
        ns.len(),
        1,
        "NOTIFY to the received/rport address: {rest:?}"
    );
    assert_eq!(ns[0].uri, "sip:watcher2@10.1.1.1:5070");
    assert!(notifies_at(&mut net, addr("10.1.1.1:5070")).is_empty());
}

#[test]
fn record_route_is_copied_and_notifies_follow_the_route_set() {
    let mut net = Net::new(4);
    let proxy = addr("192.0.2.50:5060");
    let text = subscribe_as(2, "sip:alice@example.test", "z9hG4bKr1", |t| {
        t.replace(
            "Event: presence\r\n",
            "Record-Route: <sip:192.0.2.50:5060;lr>, <sip:192.0.2.51;lr>\r\nEvent: presence\r\n",
        )
    });
    let (r, rest) = net.request(2, ua(2), &text);
    assert_eq!(r.code, 200);
    let rr: Vec<&str> = r.headers.all("Record-Route").collect();
    assert_eq!(rr, ["<sip:192.0.2.50:5060;lr>", "<sip:192.0.2.51;lr>"]);
    assert!(notifies(&rest).is_empty(), "{rest:?}");
    let ns = notifies_at(&mut net, proxy);
    assert_eq!(ns.len(), 1, "the NOTIFY goes to the first route");
    assert_eq!(ns[0].uri, "sip:watcher2@192.0.2.2:5070");
    let routes: Vec<&str> = ns[0].headers.all("Route").collect();
    assert_eq!(routes, ["<sip:192.0.2.50:5060;lr>", "<sip:192.0.2.51;lr>"]);
}
