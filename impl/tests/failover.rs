//! Tree repair and root takeover scenarios.

use bytes::Bytes;
use sascribe::sim::{NetConfig, Sim};
use sascribe::{Config, Event, GroupId, PubHandle, SubHandle};

fn last_notify(log: &[sascribe::sim::SimEvent], h: u64) -> Option<(u64, Option<Bytes>)> {
    log.iter().rev().find_map(|e| match &e.event {
        Event::Notify {
            handle, seq, state, ..
        } if handle.0 == h => Some((*seq, state.clone())),
        _ => None,
    })
}

fn published_seq(log: &[sascribe::sim::SimEvent], req: u64) -> Option<u64> {
    log.iter().find_map(|e| match e.event {
        Event::Published { req: r, seq, .. } if r.0 == req => Some(seq),
        _ => None,
    })
}

/// Peers ordered by distance to `gid` (root first).
fn by_distance(s: &Sim, gid: GroupId) -> Vec<usize> {
    let mut v: Vec<usize> = s.live().collect();
    v.sort_by_key(|&i| (sascribe::id::ring_distance(s.id(i).0, gid.0), s.id(i).0));
    v
}

#[test]
fn state_never_rolls_back_when_root_and_all_replicas_crash() {
    for seed in 0..6 {
        let mut s = Sim::new(seed, Config::default(), NetConfig::default());
        s.add_static_peers(40);
        s.run_for(1_000);
        let gid = GroupId::from_event("sip:frank@example.com", "presence", None);
        let order = by_distance(&s, gid);
        let (holders, others) = order.split_at(4); // root + k = 3 replicas
        s.publish(
            others[0],
            gid,
            PubHandle(1),
            Some(Bytes::from_static(b"v1")),
            None,
            None,
        );
        s.run_for(2_000);
        s.publish(
            others[1],
            gid,
            PubHandle(2),
            Some(Bytes::from_static(b"v2")),
            None,
            None,
        );
        s.run_for(2_000);
        let subs: Vec<usize> = others.iter().copied().skip(2).step_by(4).collect();
        for (k, &i) in subs.iter().enumerate() {
            s.subscribe(i, gid, SubHandle(k as u64), 3_600);
        }
        s.run_for(3_000);
        assert_eq!(published_seq(s.log(), 2), Some(2));
        for &h in holders {
            s.crash_hard(h);
        }
        s.run_for(20_000);
        // A fresh subscriber sees the state the members carried up, not an empty group.
        s.subscribe(others[3], gid, SubHandle(100), 3_600);
        s.run_for(5_000);
        assert_eq!(
            last_notify(s.log(), 100),
            Some((2, Some(Bytes::from_static(b"v2")))),
            "seed {seed}"
        );
        s.publish(
            others[1],
            gid,
            PubHandle(3),
            Some(Bytes::from_static(b"v3")),
            None,
            None,
        );
        s.run_for(5_000);
        assert_eq!(
            published_seq(s.log(), 3),
            Some(3),
            "seed {seed}: seq rolled back"
        );
        for k in 0..subs.len() as u64 {
            assert_eq!(
                last_notify(s.log(), k),
                Some((3, Some(Bytes::from_static(b"v3"))))
            );
        }
    }
}

#[test]
fn graceful_root_leave_hands_over_quickly() {
    for seed in 0..6 {
        let mut s = Sim::new(seed, Config::default(), NetConfig::default());
        s.add_static_peers(40);
        s.run_for(1_000);
        let gid = GroupId::from_event("sip:grace@example.com", "presence", None);
        let order = by_distance(&s, gid);
        let root = order[0];
        s.publish(
            order[10],
            gid,
            PubHandle(1),
            Some(Bytes::from_static(b"a")),
            None,
            None,
        );
        s.run_for(2_000);
        let subs: Vec<usize> = order[5..].iter().copied().step_by(5).collect();
        for (k, &i) in subs.iter().enumerate() {
            s.subscribe(i, gid, SubHandle(k as u64), 3_600);
        }
        s.run_for(3_000);
        s.leave(root);
        // Well below the parent and leaf failure timeouts.
        s.run_for(1_500);
        s.publish(
            order[10],
            gid,
            PubHandle(2),
            Some(Bytes::from_static(b"b")),
            None,
            None,
        );
        s.run_for(1_500);
        assert_eq!(published_seq(s.log(), 2), Some(2), "seed {seed}");
        for k in 0..subs.len() as u64 {
            assert_eq!(
                last_notify(s.log(), k),
                Some((2, Some(Bytes::from_static(b"b")))),
                "seed {seed}"
            );
        }
        // Peers that learnt of it second-hand drop it by failure detection.
        s.run_for(10_000);
        for i in s.live() {
            assert!(s
                .peer(i)
                .unwrap()
                .overlay()
                .known()
                .all(|h| h.id != s.id(root)));
        }
    }
}

/// Several event states survive a root crash with their entity tags: the replica that takes
/// over holds the whole set, so each publisher's next SIP-If-Match still works, and the other
/// publisher's state is untouched.
#[test]
fn takeover_keeps_every_state_and_its_etag() {
    for seed in 0..4 {
        let mut s = Sim::new(seed, Config::default(), NetConfig::default());
        s.add_static_peers(24);
        s.run_for(1_000);
        let gid = GroupId::from_event("sip:grace@example.com", "presence", None);
        let order = by_distance(&s, gid);
        let etag_of = |s: &Sim, req: u64| {
            s.log().iter().find_map(|e| match e.event {
                Event::Published { req: r, etag, .. } if r.0 == req => etag,
                _ => None,
            })
        };
        for (req, body) in [(1, "a"), (2, "b")] {
            let b = Some(Bytes::from(body));
            s.publish(order[10], gid, PubHandle(req), b, None, Some(600));
            s.run_for(2_000);
        }
        let (ea, eb) = (etag_of(&s, 1).unwrap(), etag_of(&s, 2).unwrap());
        s.crash_hard(order[0]);
        s.run_for(15_000);
        let b = Some(Bytes::from_static(b"a2"));
        s.publish(order[11], gid, PubHandle(3), b, Some(ea), Some(600));
        s.run_for(5_000);
        let ea2 =
            etag_of(&s, 3).unwrap_or_else(|| panic!("seed {seed}: A's modify after takeover"));
        let v = s.peer(order[1]).unwrap().group_view(gid).unwrap();
        assert!(v.root_active, "seed {seed}");
        assert_eq!(
            v.etags,
            vec![ea2, eb],
            "seed {seed}: both states, in creation order"
        );
        s.publish(order[12], gid, PubHandle(4), None, Some(eb), Some(0));
        s.run_for(5_000);
        assert!(s.log().iter().any(|e| matches!(
            e.event,
            Event::Published {
                req: PubHandle(4),
                ..
            }
        )));
        let v = s.peer(order[1]).unwrap().group_view(gid).unwrap();
        assert_eq!(v.etags, vec![ea2], "seed {seed}");
    }
}
