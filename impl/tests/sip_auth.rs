//! Digest authentication and authorisation at the SIP front end (RFC 3903 §13, RFC 3261 §22,
//! RFC 7616, RFC 8760): raw SIP text against in-memory gateway peers, then the sans-IO user
//! agent answering challenges by itself.
//!
//! Run: `cargo test -p sascribe --test sip_auth`.

mod sip_net;

use sascribe::sip::auth::digest::{self, Algorithm, Params};
use sascribe::sip::auth::{AllowList, AuthConfig, Challenge, Users, WatchPolicy};
use sascribe::sip::message::{Message, Response};
use sascribe::sip::SipConfig;
use sascribe::ua::{UaEvent, UserAgent};
use sascribe::Millis;
use sip_net::*;
use std::net::SocketAddr;

const REALM: &str = "example.test";

fn users() -> Users {
    Users::new(REALM)
        .with_password("alice", "wonderland")
        .with_password("bob", "builder")
        .with_password("carol", "singing")
        .with_password("eve@evil.test", "apple")
}

/// Hosts with authentication on, `tune` adjusting the defaults.
fn net(n: usize, tune: impl Fn(&mut AuthConfig)) -> Net {
    Net::with_sip(n, |mut c| {
        let mut a = AuthConfig::new(users());
        tune(&mut a);
        c.auth = Some(a);
        c
    })
}

/// A request line and headers from UA `n` (no Content-Length, no blank line yet).
fn head(method: &str, uri: &str, from: &str, branch: &str, cseq: u32) -> String {
    format!(
        "{method} {uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.1:5070;branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <{from}>;tag=t-{branch}\r\n\
         To: <{uri}>\r\n\
         Call-ID: c-{branch}\r\n\
         CSeq: {cseq} {method}\r\n\
         Event: presence\r\n"
    )
}

fn publish_as(uri: &str, branch: &str, auth: Option<&str>) -> String {
    let mut h = head("PUBLISH", uri, uri, branch, 1);
    h.push_str("Expires: 600\r\nContent-Type: application/pidf+xml\r\n");
    if let Some(a) = auth {
        h.push_str(&format!("{a}\r\n"));
    }
    with_len(h, PIDF_OPEN)
}

fn subscribe_as(watcher: &str, uri: &str, branch: &str, auth: Option<&str>) -> String {
    let mut h = head("SUBSCRIBE", uri, watcher, branch, 1);
    h.push_str("Contact: <sip:w@192.0.2.1:5070>\r\nExpires: 600\r\n");
    if let Some(a) = auth {
        h.push_str(&format!("{a}\r\n"));
    }
    with_len(h, "")
}

/// The challenges of a 401 (or 407), parsed, in order.
fn challenges(r: &Response, header: &str) -> Vec<Params> {
    r.headers
        .all(header)
        .map(|v| Params::parse(v).expect("a Digest challenge"))
        .collect()
}

/// Credentials for `user`/`password` answering challenge `ch`, with explicit nc and cnonce.
fn creds(ch: &Params, user: &str, password: &str, method: &str, uri: &str, nc: u32) -> String {
    let a = digest::answer(ch, user, password, method, uri, nc, "0a4f113b").unwrap();
    format!("Authorization: {a}")
}

fn stats(net: &Net, i: usize) -> sascribe::sip::SipStats {
    net.hosts[i].sip().unwrap().stats().clone()
}

#[test]
fn challenge_then_credentials_then_200_with_either_algorithm() {
    let mut net = net(3, |_| {});
    let alice = "sip:alice@example.test";
    let (r, _) = net.request(0, ua(1), &publish_as(alice, "z9hG4bKa1", None));
    assert_eq!((r.code, r.reason.as_str()), (401, "Unauthorized"));
    let ch = challenges(&r, "WWW-Authenticate");
    assert_eq!(ch.len(), 2, "{r:?}");
    let algs: Vec<_> = ch.iter().map(|c| c.get("algorithm").unwrap()).collect();
    assert_eq!(algs, ["SHA-256", "MD5"], "SHA-256 first (RFC 8760 §2.4)");
    for c in &ch {
        assert_eq!(c.get("realm"), Some(REALM));
        assert_eq!(c.get("qop"), Some("auth"));
        assert_eq!(c.get("stale"), None);
        assert_eq!(c.get("nonce"), ch[0].get("nonce"), "one nonce for both");
        assert_eq!(c.get("nonce").unwrap().len(), 64);
    }
    assert!(r.headers.get("Proxy-Authenticate").is_none());
    assert_eq!(stats(&net, 0).auth_challenges, 1);
    // Nothing reached the overlay: no publication exists.
    let (r, _) = net.request(1, ua(2), &subscribe(2, "z9hG4bKw0", 1, None, 600));
    assert_eq!(r.code, 401);

    // SHA-256 (answering the first challenge), then MD5 with the same nonce and the next nc.
    let a = creds(&ch[0], "alice", "wonderland", "PUBLISH", alice, 1);
    let (r, _) = net.request(0, ua(1), &publish_as(alice, "z9hG4bKa2", Some(&a)));
    assert_eq!(r.code, 200, "{r:?}");
    assert!(r.headers.get("SIP-ETag").is_some());
    let a = creds(&ch[1], "alice", "wonderland", "PUBLISH", alice, 2);
    let (r, _) = net.request(0, ua(1), &publish_as(alice, "z9hG4bKa3", Some(&a)));
    assert_eq!(r.code, 200, "{r:?}");
    let s = stats(&net, 0);
    assert_eq!((s.auth_failures, s.auth_replays, s.forbidden), (0, 0, 0));
}

#[test]
fn wrong_password_unknown_user_and_foreign_nonce_get_a_new_challenge() {
    let mut net = net(2, |_| {});
    let alice = "sip:alice@example.test";
    let (r, _) = net.request(0, ua(1), &publish_as(alice, "z9hG4bKb1", None));
    let ch = challenges(&r, "WWW-Authenticate");
    let cases = [
        ("alice", "wrong", 0, "z9hG4bKb2"),
        ("mallory", "wonderland", 0, "z9hG4bKb3"),
        // A nonce of peer 0 is worth nothing at peer 1 (another key: so after a restart).
        ("alice", "wonderland", 1, "z9hG4bKb4"),
    ];
    for (k, (user, pw, at, branch)) in cases.into_iter().enumerate() {
        let a = creds(&ch[0], user, pw, "PUBLISH", alice, 1);
        let (r, _) = net.request(at, ua(1), &publish_as(alice, branch, Some(&a)));
        assert_eq!(r.code, 401, "case {k}: {r:?}");
        let again = challenges(&r, "WWW-Authenticate");
        assert_eq!(again[0].get("stale"), None, "case {k}: not stale");
        assert_ne!(again[0].get("nonce"), ch[0].get("nonce"), "a fresh nonce");
    }
    assert_eq!(stats(&net, 0).auth_failures, 2);
    assert_eq!(stats(&net, 1).auth_failures, 1);
    // A digest over another URI than the Request-URI: 400 (RFC 7616 §3.4.6).
    let a = creds(
        &ch[0],
        "alice",
        "wonderland",
        "PUBLISH",
        "sip:bob@example.test",
        1,
    );
    let (r, _) = net.request(0, ua(1), &publish_as(alice, "z9hG4bKb5", Some(&a)));
    assert_eq!(r.code, 400, "{r:?}");
    assert!(r.reason.contains("uri"), "{}", r.reason);
    // Credentials for another realm are no credentials: a plain challenge.
    let other = creds(&ch[0], "alice", "wonderland", "PUBLISH", alice, 1)
        .replace("realm=\"example.test\"", "realm=\"elsewhere\"");
    let (r, _) = net.request(0, ua(1), &publish_as(alice, "z9hG4bKb6", Some(&other)));
    assert_eq!(r.code, 401);
}

#[test]
fn a_replayed_nonce_count_is_challenged_again() {
    let mut net = net(1, |_| {});
    let alice = "sip:alice@example.test";
    let (r, _) = net.request(0, ua(1), &publish_as(alice, "z9hG4bKc1", None));
    let ch = challenges(&r, "WWW-Authenticate");
    let a1 = creds(&ch[0], "alice", "wonderland", "PUBLISH", alice, 1);
    let (r, _) = net.request(0, ua(1), &publish_as(alice, "z9hG4bKc2", Some(&a1)));
    assert_eq!(r.code, 200);
    // The same credentials in a new transaction (a captured request sent again): 401.
    let (r, _) = net.request(0, ua(1), &publish_as(alice, "z9hG4bKc3", Some(&a1)));
    assert_eq!(r.code, 401, "{r:?}");
    assert_eq!(stats(&net, 0).auth_replays, 1);
    // A retransmission of the accepted request is the transaction's business: the same 200.
    let (r, _) = net.request(0, ua(1), &publish_as(alice, "z9hG4bKc2", Some(&a1)));
    assert_eq!(r.code, 200);
    assert_eq!(stats(&net, 0).auth_replays, 1);
    // The next nc is fine; going back is not.
    let a3 = creds(&ch[0], "alice", "wonderland", "PUBLISH", alice, 3);
    let (r, _) = net.request(0, ua(1), &publish_as(alice, "z9hG4bKc4", Some(&a3)));
    assert_eq!(r.code, 200);
    let a2 = creds(&ch[0], "alice", "wonderland", "PUBLISH", alice, 2);
    let (r, _) = net.request(0, ua(1), &publish_as(alice, "z9hG4bKc5", Some(&a2)));
    assert_eq!(r.code, 401);
    assert_eq!(stats(&net, 0).auth_replays, 2);
    assert_eq!(net.hosts[0].sip().unwrap().nonces_remembered(), 1);
}

#[test]
fn an_expired_nonce_gets_stale_true_and_a_new_one_works() {
    let mut net = net(1, |a| a.nonce_lifetime = 20_000);
    let alice = "sip:alice@example.test";
    let (r, _) = net.request(0, ua(1), &publish_as(alice, "z9hG4bKd1", None));
    let ch = challenges(&r, "WWW-Authenticate");
    net.advance(20_001);
    let a = creds(&ch[0], "alice", "wonderland", "PUBLISH", alice, 1);
    let (r, _) = net.request(0, ua(1), &publish_as(alice, "z9hG4bKd2", Some(&a)));
    assert_eq!(r.code, 401, "{r:?}");
    let fresh = challenges(&r, "WWW-Authenticate");
    assert!(fresh.iter().all(|c| c
        .get("stale")
        .is_some_and(|s| s.eq_ignore_ascii_case("true"))));
    assert_eq!(stats(&net, 0).auth_stale, 1);
    // A wrong password over the expired nonce is not told "stale" (RFC 7616 §3.3).
    let a = creds(&ch[0], "alice", "nope", "PUBLISH", alice, 2);
    let (r, _) = net.request(0, ua(1), &publish_as(alice, "z9hG4bKd3", Some(&a)));
    assert_eq!(challenges(&r, "WWW-Authenticate")[0].get("stale"), None);
    let a = creds(&fresh[1], "alice", "wonderland", "PUBLISH", alice, 1);
    let (r, _) = net.request(0, ua(1), &publish_as(alice, "z9hG4bKd4", Some(&a)));
    assert_eq!(r.code, 200, "{r:?}");
}

#[test]
fn publishing_someone_elses_presence_is_forbidden() {
    let mut net = net(1, |_| {});
    let alice = "sip:alice@example.test";
    let (r, _) = net.request(0, ua(1), &publish_as(alice, "z9hG4bKe1", None));
    let ch = challenges(&r, "WWW-Authenticate");
    let a = creds(&ch[0], "bob", "builder", "PUBLISH", alice, 1);
    let (r, _) = net.request(0, ua(1), &publish_as(alice, "z9hG4bKe2", Some(&a)));
    assert_eq!(r.code, 403, "{r:?}");
    assert!(r.reason.starts_with("Forbidden"), "{}", r.reason);
    assert_eq!(stats(&net, 0).forbidden, 1);
    // The canonical form: host case and port do not matter, the user part's case does.
    for (uri, code) in [
        ("sip:alice@EXAMPLE.test:5060", 200),
        ("sip:Alice@example.test", 403),
    ] {
        let a = creds(
            &ch[0],
            "alice",
            "wonderland",
            "PUBLISH",
            uri,
            2 + code as u32,
        );
        let (r, _) = net.request(
            0,
            ua(1),
            &publish_as(uri, &format!("z9hG4bKe{code}"), Some(&a)),
        );
        assert_eq!(r.code, code, "{uri}: {r:?}");
    }
}

/// Subscribes `watcher` (authenticating as `user`) to Alice at peer 0; the final response.
fn watch(net: &mut Net, user: &str, pw: &str, branch: &str) -> (Response, Vec<Message>) {
    let alice = "sip:alice@example.test";
    let watcher = if user.contains('@') {
        format!("sip:{user}")
    } else {
        format!("sip:{user}@example.test")
    };
    let (r, _) = net.request(
        0,
        ua(1),
        &subscribe_as(&watcher, alice, &format!("{branch}x"), None),
    );
    assert_eq!(r.code, 401);
    let ch = challenges(&r, "WWW-Authenticate");
    let a = creds(&ch[0], user, pw, "SUBSCRIBE", alice, 1);
    net.request(0, ua(1), &subscribe_as(&watcher, alice, branch, Some(&a)))
}

fn publish_alice(net: &mut Net) {
    let alice = "sip:alice@example.test";
    let (r, _) = net.request(0, ua(1), &publish_as(alice, "z9hG4bKpa", None));
    let ch = challenges(&r, "WWW-Authenticate");
    let a = creds(&ch[1], "alice", "wonderland", "PUBLISH", alice, 1);
    let (r, _) = net.request(0, ua(1), &publish_as(alice, "z9hG4bKpb", Some(&a)));
    assert_eq!(r.code, 200);
}

#[test]
fn the_watch_policy_decides_who_may_subscribe() {
    let list = AllowList::parse("bob@example.test alice@example.test\n").unwrap();
    let mut net = net(2, |a| a.watch = WatchPolicy::AllowList(list.clone()));
    publish_alice(&mut net);
    let (r, rest) = watch(&mut net, "bob", "builder", "z9hG4bKf1");
    assert_eq!(r.code, 200, "{r:?}");
    assert_eq!(notifies(&rest).len(), 1);
    let (r, rest) = watch(&mut net, "carol", "singing", "z9hG4bKf2");
    assert_eq!(r.code, 403, "{r:?}");
    assert!(notifies(&rest).is_empty());
    assert_eq!(stats(&net, 0).forbidden, 1);
    // Anyone may watch themselves.
    let (r, _) = watch(&mut net, "alice", "wonderland", "z9hG4bKf3");
    assert_eq!(r.code, 200, "{r:?}");

    let mut net = net_same_domain();
    publish_alice(&mut net);
    let (r, _) = watch(&mut net, "carol", "singing", "z9hG4bKg1");
    assert_eq!(r.code, 200, "{r:?}");
    let (r, _) = watch(&mut net, "eve@evil.test", "apple", "z9hG4bKg2");
    assert_eq!(r.code, 403, "{r:?}");
}

fn net_same_domain() -> Net {
    net(1, |a| a.watch = WatchPolicy::SameDomain)
}

#[test]
fn a_proxy_style_challenger_answers_407_and_options_stays_open() {
    let mut net = net(1, |a| {
        a.challenge = Challenge::Proxy;
        a.algorithms = vec![Algorithm::Md5];
    });
    let alice = "sip:alice@example.test";
    let (r, _) = net.request(0, ua(1), &publish_as(alice, "z9hG4bKh1", None));
    assert_eq!(
        (r.code, r.reason.as_str()),
        (407, "Proxy Authentication Required")
    );
    assert!(r.headers.get("WWW-Authenticate").is_none());
    let ch = challenges(&r, "Proxy-Authenticate");
    assert_eq!(ch.len(), 1);
    assert_eq!(ch[0].get("algorithm"), Some("MD5"));
    let a = creds(&ch[0], "alice", "wonderland", "PUBLISH", alice, 1)
        .replace("Authorization:", "Proxy-Authorization:");
    let (r, _) = net.request(0, ua(1), &publish_as(alice, "z9hG4bKh2", Some(&a)));
    assert_eq!(r.code, 200, "{r:?}");
    // SHA-256 is not offered here, so credentials using it do not count.
    let sha = Params::parse(&format!(
        "Digest realm=\"{REALM}\", nonce=\"{}\", qop=\"auth\", algorithm=SHA-256",
        ch[0].get("nonce").unwrap()
    ))
    .unwrap();
    let a = creds(&sha, "alice", "wonderland", "PUBLISH", alice, 2);
    let (r, _) = net.request(0, ua(1), &publish_as(alice, "z9hG4bKh3", Some(&a)));
    assert_eq!(r.code, 407);

    let options = with_len(
        head(
            "OPTIONS",
            "sip:x@example.test",
            "sip:y@example.test",
            "z9hG4bKh4",
            1,
        ),
        "",
    );
    let (r, _) = net.request(0, ua(1), &options);
    assert_eq!(r.code, 200);
}

#[test]
fn authentication_is_off_by_default() {
    assert!(SipConfig::new("127.0.0.1:5060".parse().unwrap())
        .auth
        .is_none());
    let mut net = Net::new(1);
    let (r, _) = net.request(
        0,
        ua(1),
        &publish_as("sip:alice@example.test", "z9hG4bKi1", None),
    );
    assert_eq!(r.code, 200);
    assert_eq!(stats(&net, 0).auth_challenges, 0);
}

/// A user agent wired to peer 0 of `net`: its transmits delivered, the host's answers back.
fn pump(net: &mut Net, ua: &mut UserAgent, events: &mut Vec<UaEvent>, ms: Millis) {
    let end = net.now + ms;
    while net.now < end {
        while let Some(t) = ua.poll_transmit() {
            net.send_bytes(0, ua.addr(), &t.payload);
        }
        for bytes in net.inbox.remove(&ua.addr()).unwrap_or_default() {
            ua.handle_datagram(net.now, sip_addr(0), &bytes);
        }
        while let Some(t) = ua.poll_transmit() {
            net.send_bytes(0, ua.addr(), &t.payload);
        }
        events.extend(std::iter::from_fn(|| ua.poll_event()));
        net.advance(10);
        ua.handle_timeout(net.now);
    }
}

fn responses(events: &[UaEvent]) -> Vec<(u64, u16)> {
    events
        .iter()
        .filter_map(|e| match e {
            UaEvent::Response { req, code, .. } => Some((*req, *code)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_user_agent_answers_challenges_and_reuses_them() {
    let mut net = net(1, |_| {});
    let server: SocketAddr = sip_addr(0);
    let alice = "sip:alice@example.test";
    let pidf = Some(("application/pidf+xml", bytes::Bytes::from(PIDF_OPEN)));

    let mut publisher = UserAgent::new(ua(1), alice, 1);
    publisher.set_credentials("alice", "wonderland");
    let mut ev = Vec::new();
    let p1 = publisher.publish(
        net.now,
        server,
        alice,
        "presence",
        pidf.clone(),
        None,
        Some(600),
    );
    pump(&mut net, &mut publisher, &mut ev, 300);
    assert_eq!(
        responses(&ev),
        [(p1, 200)],
        "the 401 is answered, not reported"
    );
    // The next request carries credentials for the same nonce at once: no new challenge.
    let p2 = publisher.publish(
        net.now,
        server,
        alice,
        "presence",
        pidf.clone(),
        None,
        Some(600),
    );
    pump(&mut net, &mut publisher, &mut ev, 300);
    assert_eq!(responses(&ev)[1], (p2, 200));
    assert_eq!(stats(&net, 0).auth_challenges, 1);

    let mut watcher = UserAgent::new(ua(2), "sip:bob@example.test", 2);
    watcher.set_credentials("bob", "builder");
    let mut ev = Vec::new();
    let (sub, s1) = watcher.subscribe(net.now, server, alice, "presence", 600);
    pump(&mut net, &mut watcher, &mut ev, 300);
    assert_eq!(responses(&ev), [(s1, 200)]);
    assert!(ev.iter().any(|e| matches!(e, UaEvent::Notify { .. })));
    // An in-dialog refresh, authenticated with the next nonce count.
    let s2 = watcher.resubscribe(net.now, sub, 600).unwrap();
    pump(&mut net, &mut watcher, &mut ev, 300);
    assert_eq!(responses(&ev)[1], (s2, 200));
    assert_eq!(stats(&net, 0).auth_challenges, 2);

    // Without credentials the challenge is the final answer; with wrong ones, after one retry.
    let mut anon = UserAgent::new(ua(3), alice, 3);
    let mut ev = Vec::new();
    let p = anon.publish(
        net.now,
        server,
        alice,
        "presence",
        pidf.clone(),
        None,
        Some(600),
    );
    pump(&mut net, &mut anon, &mut ev, 300);
    assert_eq!(responses(&ev), [(p, 401)]);
    let mut liar = UserAgent::new(ua(4), alice, 4);
    liar.set_credentials("alice", "guess");
    let mut ev = Vec::new();
    let p = liar.publish(net.now, server, alice, "presence", pidf, None, Some(600));
    pump(&mut net, &mut liar, &mut ev, 300);
    assert_eq!(responses(&ev), [(p, 401)]);
    assert_eq!(stats(&net, 0).auth_failures, 1);
}

/// The same request over TCP (its `Via` says so).
fn over_tcp(text: String) -> String {
    text.replace("SIP/2.0/UDP", "SIP/2.0/TCP")
}

#[test]
fn authentication_over_tcp_challenges_and_answers_on_the_connection() {
    let mut net = net(2, |_| {});
    publish_alice(&mut net);
    let alice = "sip:alice@example.test";
    let (bob, conn) = ("sip:bob@example.test", sascribe::ConnId(7));
    let from: SocketAddr = "192.0.2.1:40001".parse().unwrap();
    net.stream_send(1, conn, from, b"");
    let sub = |branch: &str, auth: Option<&str>| over_tcp(subscribe_as(bob, alice, branch, auth));
    // The challenge comes back on the connection, nothing over UDP.
    let (r, _) = net.stream_request(1, conn, from, &sub("z9hG4bKt1", None));
    assert_eq!(r.code, 401, "{r:?}");
    assert!(net.inbox.is_empty(), "nothing over UDP: {:?}", net.inbox);
    let ch = challenges(&r, "WWW-Authenticate");
    // A wrong password on the same connection: challenged again, the connection stays.
    let bad = creds(&ch[0], "bob", "nope", "SUBSCRIBE", alice, 1);
    let (r, _) = net.stream_request(1, conn, from, &sub("z9hG4bKt2", Some(&bad)));
    assert_eq!(r.code, 401, "{r:?}");
    assert_eq!(net.hosts[1].stats().sip_connections, 1);
    // Good credentials: 200 and the immediate NOTIFY, both on the connection.
    let good = creds(&ch[0], "bob", "builder", "SUBSCRIBE", alice, 1);
    let (r, rest) = net.stream_request(1, conn, from, &sub("z9hG4bKt3", Some(&good)));
    assert_eq!(r.code, 200, "{r:?}");
    let contact = r.headers.get("Contact").unwrap();
    assert!(contact.ends_with(";transport=tcp>"), "{contact}");
    let ns = notifies(&rest);
    assert_eq!(ns.len(), 1, "{rest:?}");
    assert!(ns[0]
        .headers
        .get("Via")
        .unwrap()
        .starts_with("SIP/2.0/TCP "));
    assert!(net.inbox.is_empty(), "nothing over UDP: {:?}", net.inbox);
    // The same credentials again in a new transaction: a replay, whatever the transport.
    let (r, _) = net.stream_request(1, conn, from, &sub("z9hG4bKt4", Some(&good)));
    assert_eq!(r.code, 401, "{r:?}");
    let s = stats(&net, 1);
    assert_eq!((s.auth_failures, s.auth_replays), (1, 1));
    assert_eq!(s.connections_closed, 0);
}

/// An in-dialog SUBSCRIBE (refresh) of the dialog `watch` made with branch `first`: same
/// Call-ID and From tag, the To tag of the 200, a new branch and CSeq.
/// An in-dialog SUBSCRIBE of `watcher`'s dialog (initial branch `first`) whose Contact is
/// `contact` (a target refresh: the next NOTIFYs go there).
fn refresh_as(
    watcher: &str,
    first: &str,
    to_tag: &str,
    branch: &str,
    auth: &str,
    contact: &str,
) -> String {
    let alice = "sip:alice@example.test";
    let mut h = head("SUBSCRIBE", alice, watcher, first, 2)
        .replace(&format!(";branch={first};"), &format!(";branch={branch};"))
        .replace(
            &format!("To: <{alice}>\r\n"),
            &format!("To: <{alice}>;tag={to_tag}\r\n"),
        );
    h.push_str(&format!("Contact: <{contact}>\r\nExpires: 600\r\n"));
    h.push_str(&format!("{auth}\r\n"));
    with_len(h, "")
}

/// Bob's Contact (he sends from `ua(1)`), and the one Carol would move his NOTIFYs to.
const BOB: &str = "sip:w@192.0.2.1:5070";
const CAROL: &str = "sip:w@192.0.2.66:5070";

#[test]
fn an_in_dialog_subscribe_is_held_to_the_watch_policy_of_its_dialog() {
    let list = AllowList::parse("bob@example.test alice@example.test\n").unwrap();
    let mut net = net(2, |a| a.watch = WatchPolicy::AllowList(list.clone()));
    publish_alice(&mut net);
    let (r, rest) = watch(&mut net, "bob", "builder", "z9hG4bKh1");
    assert_eq!(r.code, 200, "{r:?}");
    let ack = ok_for(&notifies(&rest)[0]);
    net.send(0, ua(1), &ack);
    let tag = to_tag(&r);
    let (bob, alice) = ("sip:bob@example.test", "sip:alice@example.test");
    // Carol, who may not watch Alice, learnt the dialog's identifiers: her refresh (which
    // would move the NOTIFYs to her Contact) is refused, whatever her credentials.
    let (r, _) = net.request(0, ua(1), &subscribe_as(bob, alice, "z9hG4bKh2x", None));
    let ch = challenges(&r, "WWW-Authenticate");
    let carol = creds(&ch[0], "carol", "singing", "SUBSCRIBE", alice, 1);
    let (r, rest) = net.request(
        0,
        ua(1),
        &refresh_as(bob, "z9hG4bKh1", &tag, "z9hG4bKh3", &carol, CAROL),
    );
    assert_eq!(r.code, 403, "{r:?}");
    assert!(notifies(&rest).is_empty(), "{rest:?}");
    assert_eq!(stats(&net, 0).forbidden, 1);
    // Bob's own refresh of his dialog passes.
    let bob_creds = creds(&ch[0], "bob", "builder", "SUBSCRIBE", alice, 2);
    let (r, rest) = net.request(
        0,
        ua(1),
        &refresh_as(bob, "z9hG4bKh1", &tag, "z9hG4bKh4", &bob_creds, BOB),
    );
    assert_eq!(r.code, 200, "{r:?}");
    assert_eq!(notifies(&rest).len(), 1, "{rest:?}");
    // An in-dialog request for a dialog that does not exist is the dialog layer's: 481.
    let bob_creds = creds(&ch[0], "bob", "builder", "SUBSCRIBE", alice, 3);
    let (r, _) = net.request(
        0,
        ua(1),
        &refresh_as(
            bob,
            "z9hG4bKh1",
            "no-such-tag",
            "z9hG4bKh5",
            &bob_creds,
            BOB,
        ),
    );
    assert_eq!(r.code, 481, "{r:?}");
}

/// The policy judges the presentity a request reaches: with an alias (`10.0.0.1:5060` for
/// `example.test`), Alice may publish to her address at the alias and Bob may not; her
/// address in a domain not served is not hers to publish (403).
#[test]
fn the_policy_sees_aliases_as_their_domain() {
    let mut net = Net::with_sip(1, |mut c| {
        c.auth = Some(AuthConfig::new(users()));
        c.domains = vec![REALM.to_string()];
        c.aliases = vec![("10.0.0.1:5060".to_string(), REALM.to_string())];
        c
    });
    let at_alias = "sip:alice@10.0.0.1:5060";
    let (r, _) = net.request(0, ua(1), &publish_as(at_alias, "z9hG4bKal1", None));
    assert_eq!(r.code, 401, "{r:?}");
    let ch = challenges(&r, "WWW-Authenticate");
    let a = creds(&ch[0], "bob", "builder", "PUBLISH", at_alias, 1);
    let (r, _) = net.request(0, ua(1), &publish_as(at_alias, "z9hG4bKal2", Some(&a)));
    assert_eq!(r.code, 403, "{r:?}");
    let a = creds(&ch[0], "alice", "wonderland", "PUBLISH", at_alias, 2);
    let (r, _) = net.request(0, ua(1), &publish_as(at_alias, "z9hG4bKal3", Some(&a)));
    assert_eq!(r.code, 200, "{r:?}");
    let other = "sip:alice@elsewhere.test";
    let a = creds(&ch[0], "alice", "wonderland", "PUBLISH", other, 3);
    let (r, _) = net.request(0, ua(1), &publish_as(other, "z9hG4bKal4", Some(&a)));
    assert_eq!(r.code, 403, "{r:?}");
}
