//! Scripted sa-Scribe scenarios on a small static overlay without faults.

use bytes::Bytes;
use sascribe::sim::{NetConfig, Sim};
use sascribe::{Call, CallError, Config, Event, GroupId, PubHandle, PublishError, SubHandle};

fn sim(n: usize, seed: u64) -> Sim {
    let mut s = Sim::new(seed, Config::default(), NetConfig::default());
    s.add_static_peers(n);
    s.run_for(500);
    s
}

fn events_of(s: &mut Sim) -> Vec<(usize, Event)> {
    s.drain_log()
        .into_iter()
        .map(|e| (e.peer, e.event))
        .collect()
}

fn published(ev: &[(usize, Event)], req: u64) -> Option<(Option<sascribe::ETag>, u32, u64)> {
    ev.iter().find_map(|(_, e)| match e {
        Event::Published {
            req: r,
            etag,
            expires,
            seq,
        } if r.0 == req => Some((*etag, *expires, *seq)),
        _ => None,
    })
}

fn failed(ev: &[(usize, Event)], req: u64) -> Option<PublishError> {
    ev.iter().find_map(|(_, e)| match e {
        Event::PublishFailed { req: r, reason } if r.0 == req => Some(*reason),
        _ => None,
    })
}

fn notifies(ev: &[(usize, Event)], h: u64) -> Vec<(u64, Option<Bytes>)> {
    ev.iter()
        .filter_map(|(_, e)| match e {
            Event::Notify {
                handle, seq, state, ..
            } if handle.0 == h => Some((*seq, state.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn subscribe_publish_notify_with_etags() {
    let mut s = sim(40, 1);
    let gid = GroupId::from_event("sip:alice@example.com", "presence", None);
    // No state yet: accepted all the same, with a first NOTIFY saying nothing was published.
    s.subscribe(3, gid, SubHandle(1), 600).unwrap().unwrap();
    s.run_for(3_000);
    let ev = events_of(&mut s);
    assert!(ev
        .iter()
        .any(|(i, e)| *i == 3 && matches!(e, Event::SubAccepted { handle, .. } if handle.0 == 1)));
    assert_eq!(notifies(&ev, 1), vec![(0, None)]);

    // Initial publication.
    s.publish(
        7,
        gid,
        PubHandle(1),
        Some(Bytes::from_static(b"open")),
        None,
        Some(120),
    )
    .unwrap();
    s.run_for(3_000);
    let ev = events_of(&mut s);
    let (etag1, exp, seq1) = published(&ev, 1).expect("published");
    assert!(etag1.is_some());
    assert_eq!(exp, 120);
    assert_eq!(seq1, 1);
    // The early subscriber gets the first publication.
    assert_eq!(
        notifies(&ev, 1),
        vec![(1, Some(Bytes::from_static(b"open")))]
    );

    // Two subscribers get ACK then the state.
    s.subscribe(3, gid, SubHandle(2), 600).unwrap().unwrap();
    s.subscribe(20, gid, SubHandle(3), 600).unwrap().unwrap();
    s.run_for(3_000);
    let ev = events_of(&mut s);
    for h in [2, 3] {
        let acc = ev
            .iter()
            .position(|(_, e)| matches!(e, Event::SubAccepted { handle, .. } if handle.0 == h));
        let not = ev
            .iter()
            .position(|(_, e)| matches!(e, Event::Notify { handle, .. } if handle.0 == h));
        assert!(acc.unwrap() < not.unwrap(), "ACK before NOTIFY");
        assert_eq!(
            notifies(&ev, h),
            vec![(1, Some(Bytes::from_static(b"open")))]
        );
    }

    // Modify with the right ETag: new ETag, new seq, multicast.
    s.publish(
        9,
        gid,
        PubHandle(2),
        Some(Bytes::from_static(b"busy")),
        etag1,
        Some(120),
    )
    .unwrap();
    s.run_for(3_000);
    let ev = events_of(&mut s);
    let (etag2, _, seq2) = published(&ev, 2).expect("published");
    assert_ne!(etag2, etag1);
    assert_eq!(seq2, 2);
    assert_eq!(
        notifies(&ev, 2),
        vec![(2, Some(Bytes::from_static(b"busy")))]
    );
    assert_eq!(
        notifies(&ev, 3),
        vec![(2, Some(Bytes::from_static(b"busy")))]
    );

    // Stale ETag: 412 and nothing changes.
    s.publish(
        9,
        gid,
        PubHandle(3),
        Some(Bytes::from_static(b"away")),
        etag1,
        Some(120),
    )
    .unwrap();
    s.run_for(3_000);
    let ev = events_of(&mut s);
    assert_eq!(failed(&ev, 3), Some(PublishError::PreconditionFailed));
    assert!(notifies(&ev, 2).is_empty());
    s.subscribe(30, gid, SubHandle(4), 600).unwrap().unwrap();
    s.run_for(3_000);
    let ev = events_of(&mut s);
    assert_eq!(
        notifies(&ev, 4),
        vec![(2, Some(Bytes::from_static(b"busy")))]
    );

    // Refresh (no body) with the current ETag: new ETag; a refresh is a change, with a seq.
    s.publish(9, gid, PubHandle(4), None, etag2, Some(300))
        .unwrap();
    s.run_for(3_000);
    let ev = events_of(&mut s);
    let (etag3, _, seq3) = published(&ev, 4).expect("refreshed");
    assert_ne!(etag3, etag2);
    assert_eq!(seq3, 3);
    assert_eq!(
        notifies(&ev, 2),
        vec![(3, Some(Bytes::from_static(b"busy")))]
    );

    // Refresh without ETag and without body: bad request.
    s.publish(9, gid, PubHandle(5), None, None, Some(300))
        .unwrap();
    s.run_for(3_000);
    assert_eq!(
        failed(&events_of(&mut s), 5),
        Some(PublishError::BadRequest)
    );

    // Removal: subscribers learn the state is gone; new subscribers are accepted and told
    // so (the seq of the removal, no state).
    s.publish(9, gid, PubHandle(6), None, etag3, Some(0))
        .unwrap();
    s.run_for(3_000);
    let ev = events_of(&mut s);
    assert_eq!(published(&ev, 6).unwrap().2, 4);
    assert_eq!(notifies(&ev, 3), vec![(4, None)]);
    s.subscribe(31, gid, SubHandle(5), 600).unwrap().unwrap();
    s.run_for(3_000);
    let ev = events_of(&mut s);
    assert_eq!(notifies(&ev, 5), vec![(4, None)]);
}

#[test]
fn root_decides_expiry_and_expiry_removes_state() {
    let mut s = sim(32, 2);
    let gid = GroupId::from_event("sip:bob@example.com", "presence", None);
    let cfg = Config::default();
    s.publish(
        1,
        gid,
        PubHandle(1),
        Some(Bytes::from_static(b"x")),
        None,
        Some(cfg.pub_min_expires - 1),
    );
    s.publish(
        2,
        gid,
        PubHandle(2),
        Some(Bytes::from_static(b"y")),
        None,
        Some(cfg.pub_max_expires * 10),
    );
    s.run_for(5_000);
    let ev = events_of(&mut s);
    assert_eq!(
        failed(&ev, 1),
        Some(PublishError::IntervalTooBrief {
            min: cfg.pub_min_expires
        })
    );
    assert_eq!(published(&ev, 2).unwrap().1, cfg.pub_max_expires);

    s.publish(
        2,
        gid,
        PubHandle(3),
        Some(Bytes::from_static(b"z")),
        None,
        Some(cfg.pub_min_expires),
    );
    s.run_for(3_000);
    let ev = events_of(&mut s);
    let (_, exp, seq) = published(&ev, 3).unwrap();
    assert_eq!(exp, cfg.pub_min_expires);
    s.subscribe(5, gid, SubHandle(1), 3_600).unwrap().unwrap();
    s.run_for(3_000);
    assert_eq!(
        notifies(&events_of(&mut s), 1),
        vec![(seq, Some(Bytes::from_static(b"z")))]
    );
    // Two event states (no SIP-If-Match: the second did not replace the first); the most
    // recent one (z) is what subscribers get. It expires after 60 s, on its own: one commit,
    // and the other state (y, clamped to the maximum) is what is left.
    s.run_for(u64::from(cfg.pub_min_expires) * 1000);
    let ev = events_of(&mut s);
    assert_eq!(
        notifies(&ev, 1),
        vec![(seq + 1, Some(Bytes::from_static(b"y")))]
    );
    s.subscribe(6, gid, SubHandle(2), 3_600).unwrap().unwrap();
    s.run_for(3_000);
    let ev = events_of(&mut s);
    assert_eq!(
        notifies(&ev, 2),
        vec![(seq + 1, Some(Bytes::from_static(b"y")))]
    );
}

#[test]
fn subscription_expiry_and_unsubscribe_prune_the_tree() {
    let mut s = sim(48, 3);
    let gid = GroupId::from_event("sip:carol@example.com", "dialog", Some("7"));
    s.publish(
        0,
        gid,
        PubHandle(1),
        Some(Bytes::from_static(b"s")),
        None,
        None,
    );
    s.run_for(2_000);
    let subs: Vec<usize> = (1..48).step_by(5).collect();
    for (k, &i) in subs.iter().enumerate() {
        s.subscribe(i, gid, SubHandle(k as u64), 60)
            .unwrap()
            .unwrap();
    }
    s.subscribe(2, gid, SubHandle(100), 3_600).unwrap().unwrap();
    s.run_for(5_000);
    // pACKs come from intermediate peers only, and always before the ACK.
    let ev = s.log().to_vec();
    let mut provisional = 0;
    for k in 0..subs.len() as u64 {
        let pos = |f: &dyn Fn(&Event) -> bool| ev.iter().position(|e| f(&e.event));
        let p = pos(&|e| matches!(e, Event::SubProvisional { handle } if handle.0 == k));
        let a = pos(&|e| matches!(e, Event::SubAccepted { handle, .. } if handle.0 == k));
        assert!(a.is_some());
        if let Some(p) = p {
            provisional += 1;
            assert!(p < a.unwrap());
        }
    }
    assert!(provisional > 0, "no JOIN crossed an intermediate peer");
    let in_tree = |s: &Sim| {
        s.live()
            .filter(|&i| {
                s.peer(i)
                    .unwrap()
                    .group_view(gid)
                    .is_some_and(|v| v.parent.is_some() || v.is_root)
            })
            .count()
    };
    let before = in_tree(&s);
    assert!(before >= 2);
    s.call(
        2,
        Call::Unsubscribe {
            handle: SubHandle(100),
        },
    )
    .unwrap()
    .unwrap();
    // One subscription is refreshed before it expires and outlives the others.
    s.run_for(30_000);
    let refresh = |expires| Call::Refresh {
        handle: SubHandle(0),
        expires,
    };
    assert_eq!(s.call(subs[0], refresh(120)).unwrap(), Ok(()));
    assert_eq!(
        s.call(subs[0], refresh(5)).unwrap(),
        Err(CallError::Subscribe(
            sascribe::SubscribeError::IntervalTooBrief { min: 60 }
        ))
    );
    s.run_for(31_000);
    let ev = events_of(&mut s);
    let terminated = ev
        .iter()
        .filter(|(_, e)| matches!(e, Event::SubTerminated { .. }))
        .count();
    assert_eq!(terminated, subs.len() - 1);
    assert!(!ev
        .iter()
        .any(|(_, e)| matches!(e, Event::SubTerminated { handle, .. } if handle.0 == 0)));
    s.run_for(90_000);
    let ev = events_of(&mut s);
    assert!(ev
        .iter()
        .any(|(_, e)| matches!(e, Event::SubTerminated { handle, .. } if handle.0 == 0)));
    s.run_for(10_000);
    // Only the root keeps the group (it still has state); nobody else is in the tree.
    let root = s.closest_live(gid.0).unwrap();
    for i in s.live() {
        let v = s.peer(i).unwrap().group_view(gid);
        if i != root {
            assert!(
                v.as_ref()
                    .is_none_or(|v| v.parent.is_none() && v.children.is_empty()),
                "peer {i}: {v:?}"
            );
        } else {
            assert!(v.unwrap().children.is_empty());
        }
    }
}

/// The tree round sends a child the heartbeats of every group it shares with its parent in one
/// datagram (Scribe's per-neighbour aggregation; more than `MAX_BEATS` groups take more): on
/// a 3-peer overlay, 1,500 groups with a subscriber at one peer cost that peer a few heartbeat
/// datagrams per second, not one per group; and the trees stay whole on them: nobody
/// re-JOINs, and every subscriber gets the next publication.
#[test]
fn heartbeats_of_all_groups_share_one_datagram_per_neighbour() {
    let mut s = sim(3, 11);
    let member = 0;
    let gids: Vec<GroupId> = (0..1_500)
        .map(|i| GroupId::from_event(&format!("sip:u{i}@example.com"), "presence", None))
        .collect();
    for (k, gid) in gids.iter().enumerate() {
        s.subscribe(member, *gid, SubHandle(k as u64), 3_600)
            .unwrap()
            .unwrap();
    }
    s.run_for(5_000);
    let heard = |s: &Sim| {
        let st = s.peer(member).unwrap().stats();
        (
            st.rx_kinds.get("heartbeat").unwrap_or(0),
            st.rx_kinds.get("heartbeat_ack").unwrap_or(0),
            st.rejoins,
        )
    };
    // Per round: one datagram per MAX_BEATS groups from each other peer that roots some.
    let per_round: u64 = (0..s.len())
        .filter(|&r| r != member)
        .map(|r| {
            let n = gids
                .iter()
                .filter(|g| s.closest_live(g.0) == Some(r))
                .count();
            n.div_ceil(sascribe::wire::MAX_BEATS) as u64
        })
        .sum();
    assert!(
        per_round >= 3,
        "{per_round}: too few groups to need a second datagram"
    );
    let (beats0, acks0, rejoins0) = heard(&s);
    s.run_for(10_000);
    let (beats1, acks1, rejoins1) = heard(&s);
    // Ten rounds (eleven, depending on the phase), against one heartbeat per group and round.
    let beats = beats1 - beats0;
    assert!(
        (10 * per_round..=11 * per_round).contains(&beats),
        "{beats} heartbeat datagrams, {per_round} per round"
    );
    assert_eq!(
        acks1, acks0,
        "a member with no children acknowledges, never gets acks"
    );
    assert_eq!(rejoins1, rejoins0, "a tree fell apart");
    for (k, gid) in gids.iter().enumerate().step_by(100) {
        s.publish(
            1,
            *gid,
            PubHandle(k as u64),
            Some(Bytes::from_static(b"open")),
            None,
            None,
        );
    }
    s.run_for(3_000);
    let ev = events_of(&mut s);
    for k in (0..gids.len()).step_by(100) {
        assert!(
            notifies(&ev, k as u64).iter().any(|(seq, _)| *seq == 1),
            "subscription {k} not notified"
        );
    }
}

/// A peer heartbeated in groups it is no child of (its parent lost track: a restart, a missed
/// `Leave`) answers them all in the one `HeartbeatAcks`, naming those groups in `left` (one
/// datagram, not a `Leave` per group); the parent drops it from them.
#[test]
fn beats_of_groups_a_child_is_not_in_come_back_as_leaves_in_one_datagram() {
    use sascribe::wire::{Beat, Codec, Dest, Msg, ScribeMsg, Stamp};
    let mut s = sim(3, 13);
    let gid = GroupId::from_event("sip:member@example.com", "presence", None);
    let root = s.closest_live(gid.0).unwrap();
    let member = (root + 1) % 3;
    s.subscribe(member, gid, SubHandle(1), 3_600)
        .unwrap()
        .unwrap();
    s.run_for(3_000);
    let children = |s: &Sim| s.peer(root).unwrap().group_view(gid).unwrap().children;
    assert_eq!(children(&s), vec![s.id(member)]);
    let strangers: Vec<GroupId> = (0..50)
        .map(|i| GroupId::from_event(&format!("sip:x{i}@example.com"), "presence", None))
        .collect();
    let beat = |gid| Beat {
        gid,
        seq: 0,
        depth: 0,
    };
    let mut beats: Vec<Beat> = strangers.iter().map(|g| beat(*g)).collect();
    beats.push(beat(gid));
    let msg = Msg::Scribe(ScribeMsg::Heartbeats { beats });
    let stamp = Stamp {
        dst: Dest::Peer(s.id(member)),
        time: 0,
        seq: 0,
    };
    let from = s.peer(root).unwrap().handle();
    let bytes = Codec::new(None).encode(&from, true, &msg, &stamp).unwrap();
    s.set_wiretap(true);
    s.inject(member, sascribe::sim::sim_addr(root), &bytes);
    s.run_for(50);
    let answers: Vec<ScribeMsg> = s
        .take_tapped()
        .into_iter()
        .filter(|t| t.from == member && t.to == root)
        .filter_map(|t| match Codec::new(None).decode(&t.bytes).ok()?.msg {
            Msg::Scribe(m @ ScribeMsg::HeartbeatAcks { .. }) => Some(m),
            _ => None,
        })
        .collect();
    // The first answer is to the injected beats (the round's own may follow).
    let Some(ScribeMsg::HeartbeatAcks { acks, left }) = answers.first() else {
        panic!("{answers:?}");
    };
    assert_eq!(acks.iter().map(|a| a.gid).collect::<Vec<_>>(), vec![gid]);
    assert_eq!(left, &strangers);
    assert_eq!(children(&s), vec![s.id(member)]);
    // A parent told "left" drops the child there at once; this one is still a member, so it
    // misses its parent's heartbeats and re-JOINs.
    let left = Msg::Scribe(ScribeMsg::HeartbeatAcks {
        acks: Vec::new(),
        left: vec![gid],
    });
    let stamp = Stamp {
        dst: Dest::Peer(s.id(root)),
        time: 0,
        seq: 1,
    };
    let from = s.peer(member).unwrap().handle();
    let bytes = Codec::new(None).encode(&from, true, &left, &stamp).unwrap();
    s.inject(root, sascribe::sim::sim_addr(member), &bytes);
    assert!(children(&s).is_empty());
    s.run_for(8_000);
    assert_eq!(children(&s), vec![s.id(member)]);
}

/// A root's periodic re-replication (every `replica_refresh`, 10 s) of all the records it
/// holds goes to each replica in as few datagrams as the records fit (`REPLICATES`), not one
/// per record; the replicas still hold every record and acknowledge them all, and the roots
/// still commit.
#[test]
fn a_roots_refresh_of_many_records_shares_datagrams() {
    let mut s = sim(3, 12);
    let gids: Vec<GroupId> = (0..300)
        .map(|i| GroupId::from_event(&format!("sip:r{i}@example.com"), "presence", None))
        .collect();
    for (k, gid) in gids.iter().enumerate() {
        let body = Bytes::from_static(b"<presence>open</presence>");
        s.publish(
            k % 3,
            *gid,
            PubHandle(k as u64),
            Some(body),
            None,
            Some(3_600),
        );
    }
    s.run_for(5_000);
    let ev = events_of(&mut s);
    assert_eq!(
        (0..gids.len() as u64)
            .filter(|k| published(&ev, *k).is_some())
            .count(),
        gids.len()
    );
    let counts = |s: &Sim| {
        (0..s.len()).fold((0, 0), |(r, a), i| {
            let k = &s.peer(i).unwrap().stats().rx_kinds;
            (
                r + k.get("replicate").unwrap_or(0),
                a + k.get("replicate_ack").unwrap_or(0),
            )
        })
    };
    let (r0, a0) = counts(&s);
    s.run_for(30_000);
    let (r1, a1) = counts(&s);
    // Three refreshes (four, depending on the phase) of 300 records to 2 replicas each:
    // 1,800 REPLICATEs one by one; here a datagram or two per root, replica and refresh.
    let (sent, acked) = (r1 - r0, a1 - a0);
    assert!(
        (3 * 3 * 2..=4 * 3 * 2 * 2).contains(&sent),
        "{sent} replicate datagrams"
    );
    assert_eq!(acked, sent, "every refresh datagram acknowledged in one");
    for gid in &gids {
        for i in 0..s.len() {
            let rec = s.peer(i).unwrap().record_view(*gid).map(|r| r.seq);
            assert_eq!(rec, Some(1), "peer {i} lacks {gid:?}");
        }
    }
    // A root still commits (its replicas acknowledge) after the refreshes.
    s.publish(
        1,
        gids[0],
        PubHandle(1_000),
        Some(Bytes::from_static(b"x")),
        None,
        None,
    );
    s.run_for(3_000);
    assert!(published(&events_of(&mut s), 1_000).is_some());
}

#[test]
fn malformed_datagrams_are_counted_not_fatal() {
    let mut s = sim(8, 4);
    let from = sascribe::sim::sim_addr(1);
    s.inject(0, from, &[]);
    s.inject(0, from, &[sascribe::wire::VERSION + 1, 1, 2]);
    s.inject(0, from, &[sascribe::wire::VERSION, 0xff, 0xff]);
    s.inject(
        0,
        from,
        &vec![sascribe::wire::VERSION; sascribe::wire::MAX_DATAGRAM_LEN + 1],
    );
    let st = s.peer(0).unwrap().stats().clone();
    assert_eq!(st.rx_truncated, 1);
    assert_eq!(st.rx_bad_version, 1);
    assert_eq!(st.rx_malformed, 1);
    assert_eq!(st.rx_oversized, 1);
    assert_eq!(st.rx_dropped(), 4);
    s.run_for(2_000);
    assert!(s.is_alive(0));
}

#[test]
fn cluster_key_rejects_foreign_datagrams() {
    let cfg = Config {
        cluster_key: Some(b"secret".to_vec()),
        ..Config::default()
    };
    let mut s = Sim::new(5, cfg, NetConfig::default());
    s.add_static_peers(8);
    s.run_for(2_000);
    let foreign = sascribe::wire::Codec::new(Some(b"other"));
    let me = sascribe::NodeHandle {
        id: sascribe::NodeId(1),
        addr: sascribe::sim::sim_addr(99),
    };
    let stamp = sascribe::wire::Stamp {
        dst: sascribe::wire::Dest::Peer(s.id(0)),
        time: s.now(),
        seq: 1,
    };
    let d = foreign
        .encode(
            &me,
            true,
            &sascribe::wire::Msg::Pastry(sascribe::wire::PastryMsg::Ping),
            &stamp,
        )
        .unwrap();
    s.inject(0, me.addr, &d);
    assert_eq!(s.peer(0).unwrap().stats().rx_bad_mac, 1);
    // The authenticated cluster itself works.
    let gid = GroupId(42);
    s.publish(
        1,
        gid,
        PubHandle(1),
        Some(Bytes::from_static(b"a")),
        None,
        None,
    );
    s.run_for(2_000);
    assert!(published(&events_of(&mut s), 1).is_some());
}

#[test]
fn same_seed_replays_exactly() {
    let run = |seed| {
        let net = NetConfig {
            loss: 0.05,
            duplicate: 0.05,
            ..NetConfig::default()
        };
        let mut s = Sim::new(seed, Config::default(), net);
        s.add_static_peers(32);
        let gid = GroupId(7);
        for k in 0..5u64 {
            s.publish(
                (k * 3) as usize,
                gid,
                PubHandle(k),
                Some(Bytes::from(format!("v{k}"))),
                None,
                None,
            );
            s.subscribe((k * 5 + 1) as usize, gid, SubHandle(k), 600);
            s.run_for(1_500);
        }
        s.crash(s.closest_live(gid.0).unwrap());
        s.run_for(20_000);
        (s.drain_log(), s.stats.delivered)
    };
    assert_eq!(run(11), run(11));
    assert_ne!(run(11).1, run(12).1);
}
