//! Seeded simulations with SIP user agents: a publisher and watchers speak real SIP over the
//! simulated network (latency, jitter, loss, duplication) to the SIP sockets of different
//! gateway peers, with transactions, retransmissions and dialogs, while the root of the
//! presentity may crash. What is judged is what the user agents received:
//!
//! 1. every watcher's SUBSCRIBE gets a 200, and its NOTIFYs carry strictly increasing sequence
//!    numbers (retransmissions are absorbed by the user agent, as a real one does);
//! 2. every notified state was published;
//! 3. each 200 to a PUBLISH carries a fresh entity tag;
//! 4. after the faults stop, every watcher is still subscribed and its last NOTIFY is the
//!    latest acknowledged state, and every request got a final response or timed out.

mod common;

use bytes::Bytes;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use sascribe::sim::{NetConfig, Sim};
use sascribe::ua::UaEvent;
use sascribe::Config;
use std::collections::BTreeSet;

const URI: &str = "sip:hal@example.test";
const PIDF: &str = "application/pidf+xml";

/// The notes of a (composed) PIDF body: which publications it shows.
fn notes(body: &[u8]) -> Result<Vec<String>, String> {
    let s = sascribe::pidf::summary(body).map_err(|e| e.to_string())?;
    Ok(s.tuples.into_iter().flat_map(|t| t.notes).collect())
}

fn pidf(n: u32) -> Bytes {
    Bytes::from(format!(
        "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" \
         entity=\"{URI}\"><tuple id=\"t\"><status><basic>open</basic></status>\
         <note>v{n}</note></tuple></presence>"
    ))
}

#[derive(Debug, Clone)]
struct Params {
    seed: u64,
    peers: usize,
    watchers: usize,
    publishes: u32,
    loss: f64,
    duplicate: f64,
    crash_root: bool,
    /// The crashed root restarts (empty, same id) 6 s after its crash.
    restart_root: bool,
    /// A peer joins 8 s in with an id closer to the presentity than its root's: the root role
    /// is handed over.
    join_closer: bool,
    /// The gateway of the first watcher leaves in an orderly way 12 s in (its dialogs go to
    /// other gateways) and starts again, empty, 3 s later.
    leave_gateway: bool,
}

/// The publisher's script: an initial PUBLISH, then modifies chained on each 200's ETag;
/// a 412 or a timeout starts the chain over with an initial PUBLISH.
#[derive(Default)]
struct Publisher {
    ua: usize,
    etag: Option<String>,
    /// The request in flight and its body.
    pending: Option<(u64, Bytes)>,
    sent: u32,
}

/// What one watcher saw.
#[derive(Default)]
struct Watcher {
    ua: usize,
    sub: u64,
    /// The gateway it subscribed through.
    gateway: usize,
    accepted: bool,
    ended: bool,
    /// Told `terminated;reason=deactivated` (its gateway left and no peer took the dialog):
    /// it subscribes again, through another gateway.
    moving: bool,
    last: Option<(u64, Bytes)>,
}

struct Run {
    /// Bodies published, in the order they were sent.
    published: Vec<Bytes>,
    /// Bodies acknowledged with 200, in order.
    acked: Vec<Bytes>,
    etags: BTreeSet<String>,
    publisher: Publisher,
    watchers: Vec<Watcher>,
    /// The gateway that left, if one did.
    left: Option<usize>,
}

impl Run {
    /// Takes the user agents' observations, checking properties 1–3 on the way.
    fn observe(&mut self, s: &mut Sim) -> Result<(), String> {
        for e in s.drain_ua_log() {
            if e.ua == self.publisher.ua {
                self.on_publisher(e.event)?;
                continue;
            }
            let Some(w) = self.watchers.iter_mut().find(|w| w.ua == e.ua) else {
                continue;
            };
            match e.event {
                UaEvent::Response { sub, code, .. } if sub == Some(w.sub) => {
                    if code == 200 {
                        w.accepted = true;
                    } else if code == 503 && w.last.is_none() {
                        // A gateway that is leaving refuses new subscriptions (Retry-After):
                        // subscribe again, through another one.
                        w.moving = true;
                    } else if code == 503 && w.last.is_some() && self.left == Some(w.gateway) {
                        // Its 200 was lost, and the retransmitted SUBSCRIBE reached its
                        // gateway after it left (or restarted): the dialog, established by
                        // its NOTIFYs (RFC 6665 §4.1.2.4), lives on at the peer that took it.
                        w.accepted = true;
                    } else {
                        return Err(format!("watcher {} SUBSCRIBE answered {code}", w.ua));
                    }
                }
                UaEvent::Timeout { sub, .. } if sub == Some(w.sub) && !w.accepted => {
                    return Err(format!("watcher {} SUBSCRIBE timed out", w.ua));
                }
                UaEvent::Notify {
                    sub,
                    terminated,
                    reason,
                    seq,
                    body,
                    ..
                } if sub == w.sub => {
                    // (A NOTIFY may overtake the 200 on UDP: RFC 6665 §4.1.2.4.)
                    if terminated {
                        if reason.as_deref() == Some("deactivated") {
                            w.moving = true;
                        } else {
                            w.ended = true;
                        }
                        continue;
                    }
                    let seq = seq.ok_or("NOTIFY without a sequence number")?;
                    if let Some((last, shown)) = &w.last {
                        // The same state again only as the NOTIFY of a gateway that took the
                        // dialog over (it tells the watcher where the dialog went).
                        if seq == *last && *shown == body {
                            continue;
                        }
                        if seq <= *last {
                            return Err(format!(
                                "watcher {}: NOTIFY seq {seq} after seq {last}",
                                w.ua
                            ));
                        }
                    }
                    // A composed document: each of its tuples comes from a publication.
                    if !body.is_empty() {
                        let published: Vec<String> = self
                            .published
                            .iter()
                            .flat_map(|b| notes(b).unwrap())
                            .collect();
                        if !notes(&body)?.iter().all(|n| published.contains(n)) {
                            return Err(format!("watcher {}: unpublished state notified", w.ua));
                        }
                    }
                    w.last = Some((seq, body));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn on_publisher(&mut self, e: UaEvent) -> Result<(), String> {
        let p = &mut self.publisher;
        let Some((pending, body)) = p.pending.clone() else {
            return Ok(());
        };
        match e {
            UaEvent::Response {
                req, code, etag, ..
            } if req == pending => {
                p.pending = None;
                match code {
                    200 => {
                        let etag = etag.ok_or("200 to PUBLISH without SIP-ETag")?;
                        if !self.etags.insert(etag.clone()) {
                            return Err(format!("entity tag {etag} handed out twice"));
                        }
                        p.etag = Some(etag);
                        self.acked.push(body);
                    }
                    // The entity tag died with a root, or a publication went unacknowledged.
                    412 => p.etag = None,
                    // Its retransmission reached a gateway that left or restarted (not
                    // joined yet): not applied, the next one goes elsewhere.
                    503 => {}
                    _ => return Err(format!("PUBLISH answered {code}")),
                }
            }
            UaEvent::Timeout { req, .. } if req == pending => {
                p.pending = None;
                p.etag = None;
            }
            _ => {}
        }
        Ok(())
    }
}

fn run(p: &Params) -> Result<(), String> {
    let net = NetConfig {
        loss: p.loss,
        duplicate: p.duplicate,
        ..NetConfig::default()
    };
    let mut s = Sim::new(p.seed, Config::default(), net);
    s.set_gateways(true);
    s.add_static_peers(p.peers);
    s.run_for(500);
    let gid = sascribe::GroupId::from_event(URI, "presence", None);
    let root = s.closest_live(gid.0).ok_or("no root")?;
    // User agents talk to gateways other than the root, which may crash.
    let gateways: Vec<usize> = (0..p.peers).filter(|&i| i != root).collect();
    // (Not the gateway that left: clients would move away from one that answers 503 or
    // nothing.)
    let pick = |s: &mut Sim, left: Option<usize>| loop {
        let g = gateways[s.rng().random_range(0..gateways.len())];
        if Some(g) != left {
            return g;
        }
    };
    let mut r = Run {
        published: Vec::new(),
        acked: Vec::new(),
        etags: BTreeSet::new(),
        publisher: Publisher {
            ua: s.add_ua(URI),
            ..Publisher::default()
        },
        watchers: Vec::new(),
        left: None,
    };
    let (mut crashed, mut restarted, mut joined) = (false, false, false);
    let mut left: Option<usize> = None;
    let mut back = false;
    // Faults for 20 s of virtual time, then a quiet period.
    while s.now() < 20_000 {
        if p.crash_root && !crashed && s.now() >= 3_000 {
            s.crash(root);
            crashed = true;
        }
        if p.restart_root && crashed && !restarted && s.now() >= 9_000 {
            s.restart(root, gateways[0]);
            restarted = true;
        }
        if p.join_closer && !joined && s.now() >= 8_000 {
            let id = gid.0.wrapping_add(s.rng().random_range(0..1u128 << 90));
            s.add_joining_peer(Some(sascribe::NodeId(id)), gateways[0]);
            joined = true;
        }
        if p.leave_gateway && left.is_none() && s.now() >= 12_000 {
            let g = r
                .watchers
                .first()
                .map(|w| w.gateway)
                .filter(|&g| s.is_alive(g));
            if let Some(g) = g {
                s.leave(g);
                left = Some(g);
                r.left = left;
            }
        }
        if let Some(g) = left.filter(|_| !back && s.now() >= 15_000) {
            if s.host(g).is_none() {
                let via = gateways.iter().copied().find(|&i| i != g && s.is_alive(i));
                s.restart(g, via.ok_or("no live gateway")?);
                back = true;
            }
        }
        // Watchers told `deactivated` subscribe again, through another gateway.
        for i in 0..r.watchers.len() {
            if r.watchers[i].moving {
                let gw = pick(&mut s, left);
                let server = s.sip_addr(gw);
                let ua = r.watchers[i].ua;
                let (sub, _) = s.with_ua(ua, |a, now| {
                    a.subscribe(now, server, URI, "presence", 3_600)
                });
                let w = &mut r.watchers[i];
                (w.sub, w.gateway, w.moving, w.accepted, w.last) = (sub, gw, false, false, None);
            }
        }
        if r.publisher.pending.is_none() && r.publisher.sent < p.publishes {
            r.publisher.sent += 1;
            let body = pidf(r.publisher.sent);
            r.published.push(body.clone());
            let gw = pick(&mut s, left);
            let server = s.sip_addr(gw);
            let etag = r.publisher.etag.clone();
            let b = body.clone();
            let req = s.with_ua(r.publisher.ua, |a, now| {
                let content = Some((PIDF, b));
                a.publish(
                    now,
                    server,
                    URI,
                    "presence",
                    content,
                    etag.as_deref(),
                    Some(600),
                )
            });
            r.publisher.pending = Some((req, body));
        }
        // Watchers subscribe one every 300 ms, through gateways chosen at random, whether the
        // presentity has published yet or not.
        let due = r.watchers.len() < p.watchers;
        if due && s.now() % 300 < 100 {
            let w = r.watchers.len();
            let ua = s.add_ua(&format!("sip:watcher{w}@example.test"));
            let gateway = pick(&mut s, left);
            let server = s.sip_addr(gateway);
            let (sub, _) = s.with_ua(ua, |a, now| {
                a.subscribe(now, server, URI, "presence", 3_600)
            });
            r.watchers.push(Watcher {
                ua,
                sub,
                gateway,
                ..Watcher::default()
            });
        }
        s.run_for(100);
        r.observe(&mut s)?;
    }
    if r.watchers.len() < p.watchers {
        return Err("the watchers did not all get to subscribe".into());
    }
    s.net.loss = 0.0;
    s.net.duplicate = 0.0;
    s.run_for(60_000);
    r.observe(&mut s)?;
    if r.publisher.pending.is_some() {
        return Err("a PUBLISH got neither a final response nor a timeout".into());
    }
    let latest = r.acked.last();
    for w in &r.watchers {
        if !w.accepted || w.ended {
            return Err(format!("watcher {} is not subscribed any more", w.ua));
        }
        // The overlay may also have committed a later publication whose 200 was lost: the
        // watcher converges to the newest state, at least as new as the acknowledged one (a
        // publisher that lost its entity tag to a 412 or a timeout publishes a new event state
        // beside its old one: the composition shows both, the newest among them).
        let seen = w.last.as_ref().map(|l| &l.1);
        let rank_note = |n: &String| {
            r.published
                .iter()
                .position(|x| notes(x).unwrap().contains(n))
        };
        let rank_seen = |b: &Bytes| notes(b).ok()?.iter().filter_map(rank_note).max();
        let rank = |b: &Bytes| r.published.iter().position(|x| x == b);
        if let Some(latest) = latest {
            if seen.and_then(rank_seen) < rank(latest) {
                return Err(format!(
                    "watcher {} converged to {:?}, behind the latest acknowledged state",
                    w.ua,
                    seen.map(|b| String::from_utf8_lossy(b).into_owned())
                ));
            }
        }
    }
    // Every dialog lives where its last NOTIFY said (a gateway that left handed it over): a
    // refresh sent there is answered 200.
    let refreshes: Vec<(usize, Option<u64>)> = r
        .watchers
        .iter()
        .map(|w| {
            (
                w.ua,
                s.with_ua(w.ua, |a, now| a.resubscribe(now, w.sub, 3_600)),
            )
        })
        .collect();
    s.run_for(5_000);
    let log = s.drain_ua_log();
    for (ua, req) in refreshes {
        let req = req.ok_or(format!("watcher {ua}: no dialog to refresh"))?;
        let code = log.iter().find_map(|e| match e.event {
            UaEvent::Response { req: q, code, .. } if e.ua == ua && q == req => Some(code),
            _ => None,
        });
        if code != Some(200) {
            return Err(format!("watcher {ua}: refresh answered {code:?}"));
        }
    }
    Ok(())
}

fn params() -> impl Strategy<Value = Params> {
    (
        any::<u64>(),
        8usize..24,
        1usize..6,
        1u32..6,
        prop_oneof![Just(0.0), Just(0.05), Just(0.15)],
        prop_oneof![Just(0.0), Just(0.05)],
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(
                seed,
                peers,
                watchers,
                publishes,
                loss,
                duplicate,
                crash_root,
                restart,
                join,
                leave,
            )| {
                Params {
                    seed,
                    peers,
                    watchers,
                    publishes,
                    loss,
                    duplicate,
                    crash_root,
                    restart_root: crash_root && restart,
                    join_closer: join,
                    leave_gateway: leave,
                }
            },
        )
}

/// The parameters of campaign seed `seed`: 5 % loss always; a root crash, its restart, a
/// closer peer joining and a gateway leaving in an orderly way in some of the seeds.
fn campaign_params(seed: u64) -> Params {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let crash_root = r.random_bool(0.5);
    Params {
        seed,
        peers: r.random_range(8..24),
        watchers: r.random_range(1..6),
        publishes: r.random_range(1..6),
        loss: 0.05,
        duplicate: r.random_range(0.0..0.05),
        crash_root,
        restart_root: crash_root && r.random_bool(0.5),
        join_closer: r.random_bool(0.3),
        leave_gateway: r.random_bool(0.5),
    }
}

/// Seeds of the campaign that failed once, kept as regressions.
/// 9287 and 9983: a gateway leaves under 5 % loss; its offer (or the answer) was lost twice
/// and the `deactivated` NOTIFY sent in its place was lost too (sent once, as the gateway
/// left at once): a watcher silently dropped. Offers are now sent four times and a leaving
/// gateway waits (bounded) for the answers to its final NOTIFYs, retransmitting them.
const CAMPAIGN_REGRESSIONS: &[u64] = &[9287, 9983];

/// The SIP campaign: `cargo test --release -p sascribe --test sip_sim -- --ignored campaign`
/// runs 10^4 seeds (`tests/common/mod.rs` for the knobs).
#[test]
#[ignore = "the 10^4-seed campaign (minutes); see docs/RELIABILITY.md"]
fn campaign() {
    common::campaign("sip", 10_000, |seed| run(&campaign_params(seed)));
}

/// The campaign's first seeds and its past failures, on every `cargo test`.
#[test]
fn campaign_seeds_and_regressions() {
    for seed in (0..4).chain(CAMPAIGN_REGRESSIONS.iter().copied()) {
        let p = campaign_params(seed);
        assert_eq!(run(&p), Ok(()), "{p:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
    #[test]
    fn user_agents_see_one_central_server(p in params()) {
        prop_assert_eq!(run(&p), Ok(()));
    }
}

/// A fixed lossy case with a root crash, so that a regression shows without proptest's search.
#[test]
fn watchers_survive_a_root_crash_over_lossy_sip() {
    let p = Params {
        seed: 7,
        peers: 16,
        watchers: 4,
        publishes: 5,
        loss: 0.1,
        duplicate: 0.05,
        crash_root: true,
        restart_root: false,
        join_closer: false,
        leave_gateway: false,
    };
    assert_eq!(run(&p), Ok(()));
}

/// A simulation of `n` SIP gateway peers, settled for half a second.
fn gateways(seed: u64, n: usize) -> Sim {
    let mut s = Sim::new(seed, Config::default(), NetConfig::default());
    s.set_gateways(true);
    s.add_static_peers(n);
    s.run_for(500);
    s
}

/// The final response to request `req` of user agent `ua` in the log: (code, ETag).
fn response(s: &Sim, ua: usize, req: u64) -> Option<(u16, Option<String>)> {
    s.ua_log().iter().rev().find_map(|l| match &l.event {
        UaEvent::Response {
            req: r, code, etag, ..
        } if l.ua == ua && *r == req => Some((*code, etag.clone())),
        _ => None,
    })
}

/// A modify PUBLISH that the root applied, whose 200 was lost with its first-contact peer
/// (killed, then restarted with the same id), is retransmitted by the user agent through the
/// restarted peer: the root recognises the retransmission and answers it with the ETag it
/// minted then. Before, the restarted peer forwarded it as a new request, and the root
/// answered 412: the SIP-If-Match named the state the first copy had replaced.
#[test]
fn publish_retransmitted_through_a_restarted_gateway_is_answered_from_the_first_copy() {
    for seed in 1..=5 {
        let mut s = gateways(seed, 8);
        let gid = sascribe::GroupId::from_event(URI, "presence", None);
        let root = s.closest_live(gid.0).expect("a root");
        let gw = (0..8).find(|&i| i != root).expect("a gateway");
        let via = (0..8)
            .find(|&i| i != root && i != gw)
            .expect("a third peer");
        let server = s.sip_addr(gw);
        let ua = s.add_ua(URI);
        let publish = |s: &mut Sim, n: u32, etag: Option<&str>| {
            s.with_ua(ua, |a, now| {
                a.publish(
                    now,
                    server,
                    URI,
                    "presence",
                    Some((PIDF, pidf(n))),
                    etag,
                    Some(600),
                )
            })
        };
        let first = publish(&mut s, 1, None);
        s.run_for(1_000);
        let (code, e1) = response(&s, ua, first).expect("an answer to the initial PUBLISH");
        assert_eq!(code, 200, "seed {seed}");
        let e1 = e1.expect("an ETag");
        // The modify reaches the gateway (one-way latency ≤ 25 ms); then the user agent is cut
        // off, so that the 200 is lost, and the gateway dies and comes back empty.
        let modify = publish(&mut s, 2, Some(&e1));
        s.run_for(30);
        s.set_ua_side(ua, 1);
        s.run_for(1_000);
        assert_eq!(
            response(&s, ua, modify),
            None,
            "seed {seed}: the 200 was lost"
        );
        s.crash(gw);
        s.run_for(100);
        s.restart(gw, via);
        s.run_for(2_000);
        s.set_ua_side(ua, 0);
        s.run_for(20_000);
        let (code, e2) = response(&s, ua, modify).expect("an answer to the retransmission");
        assert_eq!(code, 200, "seed {seed}: the retransmitted modify");
        let e2 = e2.expect("an ETag");
        assert_ne!(e2, e1, "seed {seed}: the modify's own ETag");
        // That ETag names the live state: a further modify with it succeeds.
        let next = publish(&mut s, 3, Some(&e2));
        s.run_for(2_000);
        assert_eq!(
            response(&s, ua, next).map(|r| r.0),
            Some(200),
            "seed {seed}: a modify with the retransmission's ETag"
        );
    }
}

/// One watcher of the rolling restart: its user agent, current subscription and gateway, and
/// the last sequence number it was notified of.
struct Rolling {
    ua: usize,
    sub: u64,
    gateway: usize,
    last: u64,
    live: bool,
}

/// Issue 13, item 8: every gateway in turn leaves the overlay in an orderly way (SIGTERM) and
/// starts again 1.5 s later, while a presentity keeps publishing. A leaving gateway hands its
/// dialogs to leaf-set peers; each taker tells its subscriber with a NOTIFY from its own
/// address (a target refresh), so nobody is told `terminated` and nobody subscribes again. At
/// the end every watcher still holds its first dialog, shows the latest acknowledged state,
/// and its refresh, sent where the last NOTIFY pointed, is answered 200 by a live peer (every
/// gateway it first subscribed through has restarted since, empty). Were a dialog not taken,
/// its subscriber would get `terminated;reason=deactivated` and subscribe again through
/// another gateway (RFC 6665 §4.2.2); the test counts those, and there must be none.
#[test]
fn rolling_orderly_restart_keeps_every_watcher_subscribed() {
    const N: usize = 6;
    for seed in 0..4 {
        let mut s = gateways(seed, N);
        let subscribe = |s: &mut Sim, ua: usize, gw: usize| {
            let server = s.sip_addr(gw);
            s.with_ua(ua, |a, now| {
                a.subscribe(now, server, URI, "presence", 3_600)
            })
            .0
        };
        let mut watchers: Vec<Rolling> = (0..2 * N)
            .map(|w| {
                let ua = s.add_ua(&format!("sip:watcher{w}@example.test"));
                let gateway = w % N;
                let sub = subscribe(&mut s, ua, gateway);
                Rolling {
                    ua,
                    sub,
                    gateway,
                    last: 0,
                    live: true,
                }
            })
            .collect();
        let publisher = s.add_ua(URI);
        let (mut etag, mut acked, mut deactivated) = (None::<String>, 0u64, 0);
        // Runs `ms`, re-subscribing watchers told `deactivated` through a gateway other than
        // `leaving`, and recording what the publisher's 200s and the watchers' NOTIFYs say.
        let mut run = |s: &mut Sim,
                       watchers: &mut Vec<Rolling>,
                       etag: &mut Option<String>,
                       acked: &mut u64,
                       leaving: usize,
                       ms: u64|
         -> Result<(), String> {
            for _ in 0..ms / 50 {
                s.run_for(50);
                for e in s.drain_ua_log() {
                    if e.ua == publisher {
                        if let UaEvent::Response {
                            code, etag: t, seq, ..
                        } = e.event
                        {
                            match code {
                                200 => {
                                    *etag = t;
                                    *acked = (*acked).max(seq.ok_or("200 without a seq")?);
                                }
                                _ => *etag = None,
                            }
                        }
                        continue;
                    }
                    let Some(w) = watchers.iter_mut().find(|w| w.ua == e.ua) else {
                        continue;
                    };
                    match e.event {
                        UaEvent::Notify {
                            sub,
                            terminated: true,
                            reason,
                            ..
                        } if sub == w.sub => {
                            if reason.as_deref() != Some("deactivated") {
                                return Err(format!(
                                    "watcher {} at gateway {} terminated ({reason:?}) while \
                                     gateway {leaving} left",
                                    w.ua, w.gateway
                                ));
                            }
                            deactivated += 1;
                            w.gateway = (leaving + 1) % N;
                            w.sub = subscribe(s, w.ua, w.gateway);
                            w.live = true;
                        }
                        UaEvent::Notify { sub, seq, .. } if sub == w.sub => {
                            let seq = seq.unwrap_or(0);
                            if seq < w.last {
                                return Err(format!(
                                    "watcher {} shown seq {seq} after seq {}",
                                    w.ua, w.last
                                ));
                            }
                            w.last = seq;
                            // The gateway its dialog lives at now (a NOTIFY is a target refresh).
                            let server =
                                s.with_ua(w.ua, |a, _| a.subscription(w.sub).map(|x| x.server));
                            if let Some(g) = (0..N).find(|&g| Some(s.sip_addr(g)) == server) {
                                w.gateway = g;
                            }
                        }
                        UaEvent::Response { sub, code, .. } if sub == Some(w.sub) => {
                            w.live = code == 200;
                        }
                        UaEvent::Timeout { sub, .. } if sub == Some(w.sub) => w.live = false,
                        _ => {}
                    }
                }
            }
            Ok(())
        };
        run(&mut s, &mut watchers, &mut etag, &mut acked, N, 2_000).unwrap();
        for i in 0..N {
            s.leave(i);
            run(&mut s, &mut watchers, &mut etag, &mut acked, i, 1_500).unwrap();
            s.restart(i, (i + 1) % N);
            run(&mut s, &mut watchers, &mut etag, &mut acked, i, 2_500).unwrap();
            let server = s.sip_addr((i + 1) % N);
            let body = pidf(i as u32 + 1);
            let t = etag.clone();
            s.with_ua(publisher, |a, now| {
                a.publish(
                    now,
                    server,
                    URI,
                    "presence",
                    Some((PIDF, body)),
                    t.as_deref(),
                    Some(600),
                )
            });
            run(&mut s, &mut watchers, &mut etag, &mut acked, i, 1_500).unwrap();
        }
        run(&mut s, &mut watchers, &mut etag, &mut acked, N, 10_000).unwrap();
        // Once more, the gateway holding the most dialogs, with nothing published after: only
        // the takers' NOTIFYs of the same state tell those watchers where their dialogs went.
        let busiest = (0..N)
            .max_by_key(|&g| watchers.iter().filter(|w| w.gateway == g).count())
            .expect("gateways");
        s.leave(busiest);
        run(&mut s, &mut watchers, &mut etag, &mut acked, busiest, 1_500).unwrap();
        s.restart(busiest, (busiest + 1) % N);
        run(&mut s, &mut watchers, &mut etag, &mut acked, busiest, 2_500).unwrap();
        assert!(
            acked >= N as u64,
            "seed {seed}: only seq {acked} acknowledged"
        );
        assert_eq!(
            deactivated, 0,
            "seed {seed}: dialogs ended instead of moving"
        );
        let taken: u64 = (0..N)
            .filter_map(|i| {
                s.host(i)
                    .and_then(|h| h.sip())
                    .map(|x| x.stats().taken_over)
            })
            .sum();
        assert!(taken > 0, "seed {seed}: no gateway took a dialog over");
        for w in &watchers {
            assert!(w.live, "seed {seed}: watcher {} not subscribed", w.ua);
            assert_eq!(
                w.last, acked,
                "seed {seed}: watcher {} (gateway {}) shows seq {}, the latest is {acked}",
                w.ua, w.gateway, w.last
            );
        }
        // Each dialog's refresh goes where its last NOTIFY pointed, and is answered there.
        let refreshes: Vec<(usize, u64)> = watchers
            .iter()
            .map(|w| {
                let req = s
                    .with_ua(w.ua, |a, now| a.resubscribe(now, w.sub, 3_600))
                    .expect("dialog alive");
                (w.ua, req)
            })
            .collect();
        s.run_for(2_000);
        let log = s.drain_ua_log();
        for (ua, req) in refreshes {
            let code = log.iter().find_map(|e| match e.event {
                UaEvent::Response { req: r, code, .. } if e.ua == ua && r == req => Some(code),
                _ => None,
            });
            assert_eq!(code, Some(200), "seed {seed}: watcher {ua}'s refresh");
        }
    }
}

/// Issue 13, item 8, the fallback: a leaving gateway whose offers reach no peer (every overlay
/// link from it cut) gives them up after four tries and ends each dialog with
/// `terminated;reason=deactivated`, within two seconds of the leave; the subscribers are never
/// left without word. Each subscribes again through another gateway, and its new dialog's
/// first NOTIFY is no older than what the old one showed (the model's `moved-no-rollback`).
#[test]
fn dialogs_no_peer_takes_end_with_deactivated() {
    const N: usize = 4;
    for seed in 0..4 {
        let mut s = gateways(seed, N);
        let server = s.sip_addr(0);
        let subs: Vec<(usize, u64)> = (0..3)
            .map(|w| {
                let ua = s.add_ua(&format!("sip:watcher{w}@example.test"));
                let sub = s
                    .with_ua(ua, |a, now| {
                        a.subscribe(now, server, URI, "presence", 3_600)
                    })
                    .0;
                (ua, sub)
            })
            .collect();
        let publisher = s.add_ua(URI);
        let gw1 = s.sip_addr(1);
        s.with_ua(publisher, |a, now| {
            a.publish(
                now,
                gw1,
                URI,
                "presence",
                Some((PIDF, pidf(1))),
                None,
                Some(600),
            )
        });
        s.run_for(2_000);
        let before = s.drain_ua_log();
        let shown = |ua: usize| {
            before
                .iter()
                .filter_map(|e| match e.event {
                    UaEvent::Notify { seq, .. } if e.ua == ua => seq,
                    _ => None,
                })
                .max()
                .unwrap_or(0)
        };
        for &(ua, _) in &subs {
            assert_eq!(
                shown(ua),
                1,
                "seed {seed}: watcher {ua} saw the publication"
            );
        }
        for j in 1..N {
            s.cut_link(0, j);
        }
        s.leave(0);
        s.run_for(2_000);
        let log = s.drain_ua_log();
        for &(ua, sub) in &subs {
            let reason = log.iter().find_map(|e| match &e.event {
                UaEvent::Notify {
                    sub: x,
                    terminated: true,
                    reason,
                    ..
                } if e.ua == ua && *x == sub => Some(reason.clone()),
                _ => None,
            });
            assert_eq!(
                reason,
                Some(Some("deactivated".to_string())),
                "seed {seed}: watcher {ua}"
            );
        }
        assert!(s.host(0).is_none(), "seed {seed}: the gateway left");
        let again = s.sip_addr(1);
        for &(ua, _) in &subs {
            s.with_ua(ua, |a, now| a.subscribe(now, again, URI, "presence", 3_600));
        }
        // (If the gateway that left was the root, the others find out by timeout: its
        // `Departing` was cut off too.)
        s.run_for(15_000);
        let after = s.drain_ua_log();
        for &(ua, _) in &subs {
            let first = after.iter().find_map(|e| match e.event {
                UaEvent::Notify { seq, .. } if e.ua == ua => seq,
                _ => None,
            });
            assert_eq!(first, Some(1), "seed {seed}: watcher {ua}'s new dialog");
        }
    }
}
