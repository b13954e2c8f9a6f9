//! Overlay security with a cluster key, in the simulator: a peer without the key cannot join,
//! route, publish, subscribe, or forge tree or replication messages; a captured datagram
//! replayed later, again, or to another peer is refused. Each refusal is shown with its
//! counter, and with the state it would have changed left as it was.

use bytes::Bytes;
use sascribe::sim::{sim_addr, NetConfig, Sim, Tapped};
use sascribe::wire::{
    Beat, Codec, Dest, Latest, Msg, PastryMsg, PubReqId, PublishReply, Routed, ScribeMsg, Stamp,
    WireRecord, WireState, MAX_CLOCK_SKEW,
};
use sascribe::{Config, ETag, Event, GroupId, NodeHandle, NodeId, PubHandle, Stats, SubHandle};

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

fn keyed() -> Config {
    Config {
        cluster_key: Some(KEY.to_vec()),
        ..Config::default()
    }
}

fn cluster(seed: u64, net: NetConfig) -> Sim {
    let mut s = Sim::new(seed, keyed(), net);
    s.add_static_peers(8);
    s.run_for(500);
    s
}

/// The drop counters summed over every live peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Drops {
    bad_mac: u64,
    replayed: u64,
    stale: u64,
    wrong_destination: u64,
    other: u64,
}

fn drops(s: &Sim) -> Drops {
    let mut d = Drops::default();
    for i in s.live() {
        let st: &Stats = s.peer(i).unwrap().stats();
        d.bad_mac += st.rx_bad_mac;
        d.replayed += st.rx_replayed;
        d.stale += st.rx_stale;
        d.wrong_destination += st.rx_wrong_destination;
        d.other += st.rx_truncated + st.rx_oversized + st.rx_bad_version + st.rx_malformed;
    }
    d
}

fn knows(s: &Sim, i: usize, id: NodeId) -> bool {
    let o = s.peer(i).unwrap().overlay();
    o.leaf.iter().chain(o.rt.iter()).any(|e| e.handle.id == id)
}

fn notified_bodies(s: &mut Sim) -> Vec<Option<Bytes>> {
    s.drain_log()
        .into_iter()
        .filter_map(|e| match e.event {
            Event::Notify { state, .. } => Some(state),
            _ => None,
        })
        .collect()
}

const GID: GroupId = GroupId(0x4242_0000_0000_0000_0000_0000_0000_0042);

/// A group with a subscriber at peer 1 and one publication ("real") from peer 2.
fn with_group(s: &mut Sim) {
    s.subscribe(1, GID, SubHandle(1), 600).unwrap().unwrap();
    s.publish(
        2,
        GID,
        PubHandle(1),
        Some(Bytes::from_static(b"real")),
        None,
        Some(600),
    )
    .unwrap();
    s.run_for(3_000);
    let bodies = notified_bodies(s);
    assert_eq!(
        bodies.last(),
        Some(&Some(Bytes::from_static(b"real"))),
        "{bodies:?}"
    );
}

/// One peer's part of the group: its index, its record (root?, seq, states by etag and size),
/// and its tree neighbours (children, then parent).
type PeerGroup = (
    usize,
    Option<(bool, u64, Vec<(ETag, usize)>)>,
    Option<Vec<NodeId>>,
);

/// What the group looks like: every peer's record (seq, bodies), the root's children, the
/// subscriber's parent.
fn group_state(s: &Sim) -> Vec<PeerGroup> {
    s.live()
        .map(|i| {
            let p = s.peer(i).unwrap();
            let rec = p.record_view(GID).map(|r| {
                let states = r.states.iter().map(|st| (st.etag, st.bytes)).collect();
                (r.is_root, r.seq, states)
            });
            let tree = p.group_view(GID).map(|v| {
                let mut t = v.children.clone();
                t.extend(v.parent);
                t
            });
            (i, rec, tree)
        })
        .collect()
}

#[test]
fn outsiders_without_the_key_cannot_join() {
    for (what, key) in [("no key", None), ("another key", Some(b"other".to_vec()))] {
        let mut s = cluster(11, NetConfig::default());
        let before = drops(&s);
        s.set_config(Config {
            cluster_key: key,
            ..Config::default()
        });
        let o = s.add_joining_peer(None, 0);
        s.run_for(20_000);
        let after = drops(&s);
        assert!(
            !s.peer(o).unwrap().is_ready(),
            "{what}: the outsider joined"
        );
        assert!(
            after.bad_mac > before.bad_mac,
            "{what}: no bad-MAC drop counted: {after:?}"
        );
        let oid = s.id(o);
        for i in 0..8 {
            assert!(!knows(&s, i, oid), "{what}: peer {i} took the outsider in");
        }
        // Nobody answered it.
        assert_eq!(s.peer(o).unwrap().stats().rx_datagrams, 0, "{what}");
    }
}

/// The messages an attacker would forge, each with the peer it targets.
fn forgeries(s: &Sim, attacker: NodeHandle) -> Vec<(&'static str, usize, Msg)> {
    let root = s.closest_live(GID.0).unwrap();
    let replica = s
        .live()
        .find(|&i| {
            s.peer(i)
                .unwrap()
                .record_view(GID)
                .is_some_and(|r| !r.is_root)
        })
        .expect("a replica");
    let forged = || Some(Bytes::from_static(b"forged"));
    let latest = |seq| Latest {
        seq,
        body: forged(),
        content_type: None,
    };
    let record = WireRecord {
        epoch: 70,
        seq: 70,
        rev: 70,
        states: vec![WireState {
            etag: ETag(0xbad),
            body: Bytes::from_static(b"forged"),
            content_type: None,
            ttl: 600_000,
            created: 70,
            changed: 70,
        }],
        resource: None,
        dedup: Vec::new(),
    };
    let routed = |body| Msg::Routed {
        key: GID.0,
        hops: 0,
        body,
    };
    let sub = s.peer(1).unwrap().handle();
    vec![
        (
            "overlay join",
            0,
            Msg::Routed {
                key: attacker.id.0,
                hops: 0,
                body: Routed::OverlayJoin { joiner: attacker },
            },
        ),
        (
            "pastry: leaf set reply",
            0,
            Msg::Pastry(PastryMsg::LeafSetReply {
                leaves: vec![attacker],
            }),
        ),
        (
            "pastry: suspects",
            0,
            Msg::Pastry(PastryMsg::Suspects {
                peers: vec![attacker],
            }),
        ),
        (
            "route (lookup)",
            0,
            routed(Routed::Lookup {
                origin: attacker,
                token: 77,
            }),
        ),
        (
            "publish",
            root,
            routed(Routed::Publish {
                gid: GID,
                req: PubReqId {
                    origin: attacker.id,
                    nonce: 1,
                },
                origin: attacker,
                body: forged(),
                content_type: None,
                resource: None,
                if_match: None,
                expires: Some(600),
            }),
        ),
        (
            "subscribe (tree join)",
            root,
            routed(Routed::Join {
                gid: GID,
                origin: attacker,
                join_id: 5,
                graft: true,
                carried: Some(latest(50)),
                path: vec![attacker],
            }),
        ),
        (
            "tree: notify",
            1,
            Msg::Scribe(ScribeMsg::Notify {
                gid: GID,
                latest: latest(51),
            }),
        ),
        (
            "tree: join ack",
            1,
            Msg::Scribe(ScribeMsg::JoinAck {
                gid: GID,
                join_id: 0,
                latest: latest(52),
                path: vec![sub],
            }),
        ),
        (
            "tree: heartbeat",
            1,
            Msg::Scribe(ScribeMsg::Heartbeats {
                beats: vec![Beat {
                    gid: GID,
                    seq: 1,
                    depth: 0,
                }],
            }),
        ),
        (
            "tree: leave",
            root,
            Msg::Scribe(ScribeMsg::Leave { gid: GID }),
        ),
        (
            "replication: replicate",
            replica,
            Msg::Scribe(ScribeMsg::Replicate {
                gid: GID,
                rec: record.clone(),
                epoch: 70,
                stamp: 0,
            }),
        ),
        (
            "replication: fenced",
            root,
            Msg::Scribe(ScribeMsg::Fenced {
                gid: GID,
                epoch: 70,
                refused: 69,
                rec: Some(record.clone()),
            }),
        ),
        (
            "replication: fetch reply",
            root,
            Msg::Scribe(ScribeMsg::FetchReply {
                gid: GID,
                epoch: 70,
                rec: Some(record),
                promised: 70,
                granted: true,
                busy_for: 0,
            }),
        ),
        (
            "root: not root",
            root,
            Msg::Scribe(ScribeMsg::NotRoot {
                gid: GID,
                closer: attacker,
            }),
        ),
        (
            "publish reply",
            2,
            Msg::Scribe(ScribeMsg::PublishReply {
                req: PubReqId {
                    origin: s.id(2),
                    nonce: 1,
                },
                reply: PublishReply::PreconditionFailed,
            }),
        ),
    ]
}

#[test]
fn forged_messages_are_refused_and_counted() {
    for (what, forger) in [
        ("another key", Codec::new(Some(b"not the cluster key"))),
        ("no key", Codec::new(None)),
    ] {
        let mut s = cluster(12, NetConfig::default());
        with_group(&mut s);
        // An id just beside the group's: it would be the group's root if it got in.
        let attacker = NodeHandle {
            id: NodeId(GID.0 + 1),
            addr: sim_addr(99),
        };
        let state = group_state(&s);
        for (kind, target, msg) in forgeries(&s, attacker) {
            let stamp = Stamp {
                dst: Dest::Peer(s.id(target)),
                time: s.now(),
                seq: 1,
            };
            let d = forger.encode(&attacker, true, &msg, &stamp).unwrap();
            let before = drops(&s);
            s.inject(target, attacker.addr, &d);
            let after = drops(&s);
            assert_eq!(
                after,
                Drops {
                    bad_mac: before.bad_mac + 1,
                    ..before
                },
                "{what}: {kind} to peer {target} was not refused as a bad MAC"
            );
        }
        s.run_for(5_000);
        // Nothing moved: no record, tree or routing state, no upcall with forged content.
        assert_eq!(group_state(&s), state, "{what}");
        for i in 0..8 {
            assert!(
                !knows(&s, i, attacker.id),
                "{what}: peer {i} knows the attacker"
            );
        }
        let log = s.drain_log();
        assert!(
            !log.iter().any(|e| matches!(
                &e.event,
                Event::Notify { state: Some(b), .. } if b.as_ref() == b"forged"
            ) || matches!(e.event, Event::LookupDelivered { token: 77, .. })
                || matches!(e.event, Event::PublishFailed { .. })),
            "{what}: {log:?}"
        );
    }
}

/// Decodes a tapped datagram with the cluster key.
fn kind(t: &Tapped) -> &'static str {
    Codec::new(Some(KEY)).decode(&t.bytes).unwrap().msg.kind()
}

#[test]
fn captured_datagrams_replayed_are_refused() {
    let mut s = cluster(13, NetConfig::default());
    s.set_wiretap(true);
    with_group(&mut s);
    let tapped = s.take_tapped();
    s.set_wiretap(false);
    // Let every captured datagram arrive first.
    s.run_for(1_000);
    for k in ["join", "publish", "replicate", "notify"] {
        let kinds: Vec<_> = tapped.iter().map(kind).collect();
        assert!(
            kinds.contains(&k),
            "no {k} captured: {kinds:?} root {:?}",
            s.closest_live(GID.0)
        );
    }
    let state = group_state(&s);
    let n = tapped.len() as u64;

    // Replayed to the peer they were sent to: each refused as a replay.
    let before = drops(&s);
    for t in &tapped {
        s.inject(t.to, sim_addr(t.from), &t.bytes);
    }
    assert_eq!(
        drops(&s),
        Drops {
            replayed: before.replayed + n,
            ..before
        }
    );

    // Replayed to another peer: refused as addressed to someone else.
    let before = drops(&s);
    let mut m = 0;
    for t in &tapped {
        for other in (0..8).filter(|&o| o != t.to && o != t.from) {
            s.inject(other, sim_addr(t.from), &t.bytes);
            m += 1;
        }
    }
    assert_eq!(
        drops(&s),
        Drops {
            wrong_destination: before.wrong_destination + m,
            ..before
        }
    );

    // Replayed after the window: stale, whether or not the receiver remembers it.
    s.run_for(MAX_CLOCK_SKEW + 1_000);
    let before = drops(&s);
    for t in &tapped {
        s.inject(t.to, sim_addr(t.from), &t.bytes);
    }
    let after = drops(&s);
    assert_eq!(
        after,
        Drops {
            stale: before.stale + n,
            ..before
        }
    );
    // The group is as it was (the run in between only refreshed the tree).
    let now = group_state(&s);
    let records = |g: &[PeerGroup]| {
        g.iter()
            .map(|(i, r, _)| (*i, r.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(records(&now), records(&state));
    assert!(notified_bodies(&mut s)
        .iter()
        .all(|b| b.as_deref() == Some(&b"real"[..])));
}

/// A network that duplicates datagrams: the copies are refused as replays, and the protocol,
/// which tolerates loss, does not notice.
#[test]
fn duplicated_datagrams_are_dropped_as_replays_harmlessly() {
    let net = NetConfig {
        duplicate: 0.3,
        ..NetConfig::default()
    };
    let mut s = cluster(14, net);
    with_group(&mut s);
    let replayed = drops(&s).replayed;
    // Every copy delivered so far was refused (some may still be in flight).
    assert!(replayed > 0 && replayed <= s.stats.duplicated);
}

/// Clocks may disagree by up to [`MAX_CLOCK_SKEW`]; a peer further off is refused (stale) and
/// cannot publish.
#[test]
fn clock_skew_within_the_window_is_tolerated_beyond_it_refused() {
    for (skew, ok) in [
        (MAX_CLOCK_SKEW - 5_000, true),
        (MAX_CLOCK_SKEW + 5_000, false),
    ] {
        let mut s = cluster(15, NetConfig::default());
        // Peer 2's wall clock runs `skew` ahead of everyone else's.
        s.with_host(2, |h, now| h.set_unix_time(now, now + skew));
        let before = drops(&s);
        s.publish(
            2,
            GID,
            PubHandle(1),
            Some(Bytes::from_static(b"x")),
            None,
            Some(600),
        )
        .unwrap();
        s.run_for(3_000);
        let published = s.drain_log().iter().any(|e| {
            matches!(
                e.event,
                Event::Published {
                    req: PubHandle(1),
                    ..
                }
            )
        });
        assert_eq!(published, ok, "skew {skew}");
        assert_eq!(drops(&s).stale > before.stale, !ok, "skew {skew}");
    }
}

/// Without a cluster key a datagram's sender is whatever it claims. A `Suspects` (peers to
/// probe) is taken only from the last hop of the receiver's own join, so a forged one in the
/// name of a peer it knows does not make it probe addresses of the sender's choice.
#[test]
fn suspects_are_taken_from_the_last_hop_of_the_join_only() {
    let mut s = Sim::new(13, Config::default(), NetConfig::default());
    s.add_static_peers(4);
    s.run_for(1_000);
    let j = s.add_joining_peer(None, 0);
    s.run_for(2_000);
    let stranger = NodeHandle {
        id: NodeId(0x5eed),
        addr: sim_addr(99),
    };
    let msg = Msg::Pastry(PastryMsg::Suspects {
        peers: vec![stranger],
    });
    let nominal = |s: &Sim, i: usize| s.peer(i).unwrap().overlay().nominal_neighbours();
    // Peer 0 never joined (a static peer); the joiner's last hop is the peer closest to it.
    let last_hop = (0..4)
        .min_by_key(|&i| sascribe::id::ring_distance(s.id(i).0, s.id(j).0))
        .unwrap();
    let other = (0..4).find(|&i| i != last_hop).unwrap();
    for (target, claimed) in [(0, 1), (j, other)] {
        let before = nominal(&s, target);
        let from = s.peer(claimed).unwrap().handle();
        let stamp = Stamp {
            dst: Dest::Peer(s.id(target)),
            time: s.now(),
            seq: 1,
        };
        let d = Codec::new(None).encode(&from, true, &msg, &stamp).unwrap();
        s.inject(target, from.addr, &d);
        s.run_for(1_000);
        assert_eq!(
            nominal(&s, target),
            before,
            "peer {target} took a Suspects in the name of peer {claimed}"
        );
    }
}
