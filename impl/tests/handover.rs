//! Dialog handover (issue 13, item 8) at the host's edge: a gateway offered dialogs by a
//! leaving peer takes the valid ones, answers which, and sends each subscriber a NOTIFY from
//! its own address that continues the dialog; it refuses what it cannot or must not carry, and
//! a peer without SIP takes nothing.
//!
//! Run: `cargo test -p sascribe --test handover`.

use sascribe::id::{GroupId, NodeId};
use sascribe::sip::admission::AdmissionConfig;
use sascribe::sip::message::{parse, Message, Method};
use sascribe::sip::SipConfig;
use sascribe::wire::{Codec, Dest, HandoverMsg, Msg, NodeHandle, Stamp, WireDialog};
use sascribe::{Config, Host, Input, Output, Seeds, Socket};
use std::net::SocketAddr;

const RESOURCE: &str = "sip:alice@example.test";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn gid() -> GroupId {
    GroupId::from_event(RESOURCE, "presence", None)
}

/// The taker's id: the group's key itself, so that it is the root however many peers it knows
/// (the leaving peer among them).
fn taker_id() -> NodeId {
    NodeId(gid().0)
}

fn gateway(admission: AdmissionConfig) -> Host {
    let mut sip = SipConfig::new(addr("127.0.0.1:5060"));
    sip.admission = admission;
    Host::new(
        taker_id(),
        addr("127.0.0.1:4000"),
        Config::default(),
        0,
        Seeds::reproducible(7),
    )
    .with_sip(sip)
}

/// The peer that leaves.
fn leaver() -> NodeHandle {
    NodeHandle {
        id: NodeId(gid().0 ^ (1 << 127)),
        addr: addr("127.0.0.1:4001"),
    }
}

fn dialog(n: u32) -> WireDialog {
    WireDialog {
        call_id: format!("handed-{n}"),
        local_tag: format!("nt{n}"),
        remote_tag: format!("st{n}"),
        local: format!("<{RESOURCE}>;tag=nt{n}"),
        remote: format!("<sip:bob{n}@example.test>;tag=st{n}"),
        target: format!("sip:bob{n}@127.0.0.1:{}", 6000 + n),
        route_set: Vec::new(),
        package: "presence".into(),
        event_id: None,
        resource: RESOURCE.into(),
        gid: gid(),
        tcp: false,
        remote_addr: addr(&format!("127.0.0.1:{}", 6000 + n)),
        local_cseq: 41,
        remote_cseq: 3,
        expires_in: 1_800_000,
        last_seq: Some(0),
    }
}

fn datagram(msg: HandoverMsg) -> Vec<u8> {
    let stamp = Stamp {
        dst: Dest::Peer(taker_id()),
        time: 0,
        seq: 1,
    };
    // Sent as "not ready" so that the taker does not take the (fictitious) leaving peer into its
    // leaf set: it stays alone, and root of the group at once.
    Codec::new(None)
        .encode(&leaver(), false, &Msg::Handover(msg), &stamp)
        .unwrap()
}

/// Feeds `msg` from the leaving peer; returns the host's overlay answers and SIP requests.
fn offer(
    host: &mut Host,
    now: u64,
    msg: HandoverMsg,
) -> (Vec<HandoverMsg>, Vec<(SocketAddr, String)>) {
    let bytes = datagram(msg);
    let from = leaver().addr;
    host.handle_input(
        now,
        Input::Overlay {
            from,
            payload: &bytes,
        },
    )
    .unwrap();
    let (mut answers, mut sip) = (Vec::new(), Vec::new());
    // Then a second of the host's own timers (the root's work for the new subscriptions).
    let until = now + 1_000;
    loop {
        match host.poll_output() {
            Output::Transmit(t) if t.socket == Socket::Overlay => {
                if let Ok(env) = Codec::new(None).decode(&t.payload) {
                    if let Msg::Handover(m) = env.msg {
                        answers.push(m);
                    }
                }
            }
            Output::Transmit(t) => sip.push((t.dst, String::from_utf8(t.payload).unwrap())),
            Output::Timeout(at) if at <= until => {
                host.handle_input(at, Input::Timeout).unwrap();
            }
            Output::Timeout(_) => break,
            _ => {}
        }
    }
    (answers, sip)
}

#[test]
fn a_gateway_takes_valid_dialogs_and_notifies_from_its_own_address() {
    let mut host = gateway(AdmissionConfig::default());
    let bad_gid = WireDialog {
        gid: GroupId(12345),
        ..dialog(1)
    };
    let bad_package = WireDialog {
        package: "no-such-package".into(),
        ..dialog(2)
    };
    let bad_target = WireDialog {
        target: "not a uri".into(),
        ..dialog(3)
    };
    let expired = WireDialog {
        expires_in: 0,
        ..dialog(4)
    };
    let dialogs = vec![
        dialog(0),
        bad_gid,
        bad_package,
        bad_target,
        expired,
        dialog(5),
    ];
    let (answers, sip) = offer(&mut host, 10, HandoverMsg::Offer { batch: 7, dialogs });
    assert_eq!(
        answers,
        vec![HandoverMsg::Taken {
            batch: 7,
            taken: vec![0, 5]
        }]
    );
    let st = host.sip().unwrap().stats();
    assert_eq!((st.taken_over, st.handover_refused), (2, 4));
    // The lone gateway is the root: each taken dialog is notified at once, from here.
    for n in [0u32, 5] {
        let (dst, text) = sip
            .iter()
            .find(|(_, t)| t.contains(&format!("Call-ID: handed-{n}")))
            .unwrap_or_else(|| panic!("no NOTIFY for dialog {n}: {sip:?}"));
        assert_eq!(*dst, addr(&format!("127.0.0.1:{}", 6000 + n)));
        let Ok(Message::Request(r)) = parse(text.as_bytes()) else {
            panic!("{text}");
        };
        assert_eq!(r.method, Method::Notify);
        assert_eq!(r.uri, format!("sip:bob{n}@127.0.0.1:{}", 6000 + n));
        assert_eq!(
            r.headers.get("CSeq"),
            Some("42 NOTIFY"),
            "the dialog's CSeq goes on"
        );
        assert_eq!(r.headers.get("Contact"), Some("<sip:127.0.0.1:5060>"));
        assert_eq!(
            r.headers.get("From"),
            Some(format!("<{RESOURCE}>;tag=nt{n}").as_str())
        );
        assert!(
            r.headers
                .get("Subscription-State")
                .is_some_and(|s| s.starts_with("active")),
            "{text}"
        );
    }
    // (Retransmissions aside: nobody answers these NOTIFYs.)
    let dialogs: std::collections::BTreeSet<SocketAddr> = sip.iter().map(|(d, _)| *d).collect();
    assert_eq!(
        dialogs.len(),
        2,
        "only the taken dialogs are notified: {sip:?}"
    );
    // The same offer again (our answer was lost): the same dialogs are reported taken, and
    // nothing is taken twice.
    let (answers, _) = offer(
        &mut host,
        2_000,
        HandoverMsg::Offer {
            batch: 7,
            dialogs: vec![dialog(0), dialog(5)],
        },
    );
    assert_eq!(
        answers,
        vec![HandoverMsg::Taken {
            batch: 7,
            taken: vec![0, 1]
        }]
    );
    assert_eq!(host.stats().sip_dialogs, 2);
}

#[test]
fn the_abuse_limits_hold_for_dialogs_taken_over() {
    let mut host = gateway(AdmissionConfig {
        max_dialogs: 1,
        ..AdmissionConfig::default()
    });
    let (answers, _) = offer(
        &mut host,
        10,
        HandoverMsg::Offer {
            batch: 1,
            dialogs: vec![dialog(0), dialog(1)],
        },
    );
    assert_eq!(
        answers,
        vec![HandoverMsg::Taken {
            batch: 1,
            taken: vec![0]
        }]
    );
    assert_eq!(host.stats().sip_dialogs, 1);
}

#[test]
fn a_peer_without_sip_takes_nothing() {
    let mut host = Host::new(
        taker_id(),
        addr("127.0.0.1:4000"),
        Config::default(),
        0,
        Seeds::reproducible(7),
    );
    let (answers, sip) = offer(
        &mut host,
        10,
        HandoverMsg::Offer {
            batch: 3,
            dialogs: vec![dialog(0)],
        },
    );
    assert_eq!(
        answers,
        vec![HandoverMsg::Taken {
            batch: 3,
            taken: vec![]
        }]
    );
    assert!(sip.is_empty());
}

#[test]
fn a_lone_gateway_ends_its_dialogs_when_it_leaves_and_waits_for_the_answers() {
    // A lone gateway with one dialog leaves: with no leaf-set peer to hand it to, it ends the
    // dialog at once with `deactivated`, retransmits that final NOTIFY while nobody answers,
    // and leaves the overlay when its departure bound runs out.
    let mut host = gateway(AdmissionConfig::default());
    offer(
        &mut host,
        10,
        HandoverMsg::Offer {
            batch: 1,
            dialogs: vec![dialog(0)],
        },
    );
    host.handle_input(2_000, Input::Call(sascribe::Call::Leave))
        .unwrap();
    assert!(host.is_leaving() && !host.has_left());
    let st = host.sip().unwrap().stats();
    assert_eq!((st.handover_offered, st.deactivated), (0, 1));
    let mut finals = 0;
    let until = 2_000 + sascribe::sip::handover::DEPART_MAX;
    loop {
        match host.poll_output() {
            Output::Transmit(t) if t.socket != Socket::Overlay => {
                let text = String::from_utf8(t.payload).unwrap();
                assert!(text.contains("terminated;reason=deactivated"), "{text}");
                finals += 1;
            }
            Output::Timeout(at) if at <= until => {
                host.handle_input(at, Input::Timeout).unwrap();
            }
            Output::Timeout(_) => break,
            _ => {}
        }
    }
    assert!(finals >= 3, "the final NOTIFY is retransmitted: {finals}");
    assert!(host.has_left() && !host.is_leaving());
}

/// Writes the overlay fuzz target's seed with a handover offer and its answer (the record
/// layout of `impl/tests/fuzz_corpora.rs`).
#[test]
#[ignore = "writes a seed; run with --ignored to regenerate it"]
fn write_handover_seed() {
    let mut seed = Vec::new();
    for msg in [
        HandoverMsg::Offer {
            batch: 1,
            dialogs: vec![dialog(0), dialog(1)],
        },
        HandoverMsg::Taken {
            batch: 1,
            taken: vec![0],
        },
    ] {
        let d = datagram(msg);
        seed.push(1u8);
        seed.extend_from_slice(&(d.len() as u16).to_be_bytes());
        seed.extend_from_slice(&d);
    }
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/corpus/overlay_input/seed-handover"
    );
    std::fs::write(path, seed).unwrap();
}
