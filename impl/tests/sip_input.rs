//! The SIP front end against hostile input: a corpus of malformed requests, each with the
//! status it must get, the fuzz corpus replayed, and generated requests.
//!
//! Run: `cargo test -p sascribe --test sip_input`.

mod sip_net;

use proptest::prelude::*;
use sascribe::sip::headers::Via;
use sascribe::sip::message::Message;
use sip_net::*;
use std::path::Path;

fn corpus_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sip-corpus"))
}

/// Each file `NAME.CODE.sip` in `tests/sip-corpus/` is one raw datagram and the status code it
/// must get (`000`: no answer at all).
#[test]
fn malformed_corpus_is_answered_correctly() {
    let mut files: Vec<_> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sip"))
        .collect();
    files.sort();
    assert!(files.len() >= 15, "corpus too small: {}", files.len());
    let mut net = Net::new(2);
    for f in files {
        let name = f.file_stem().unwrap().to_string_lossy().to_string();
        let want: u16 = name
            .rsplit('.')
            .next()
            .unwrap()
            .parse()
            .expect("NAME.CODE.sip");
        let bytes = std::fs::read(&f).unwrap();
        net.send_bytes(0, ua(7), &bytes);
        net.advance(500);
        let got: Vec<u16> = net
            .take(ua(7))
            .iter()
            .filter_map(|m| match m {
                Message::Response(r) if r.code >= 200 => Some(r.code),
                _ => None,
            })
            .collect();
        if want == 0 {
            assert!(got.is_empty(), "{name}: expected silence, got {got:?}");
        } else {
            assert_eq!(got, vec![want], "{name}");
        }
    }
}

/// Replays the fuzz corpus and the malformed corpus through one endpoint (CI does not need
/// cargo-fuzz), then checks the endpoint still serves a well-formed request.
#[test]
fn corpus_replay_does_not_disturb_service() {
    let mut net = Net::new(2);
    publish_initial(&mut net, 0);
    let (tag, _) = establish(&mut net, 1, 2);
    let fuzz = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/corpus/sip_input"
    ));
    let mut n = 0;
    for dir in [fuzz, corpus_dir()] {
        for e in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(e.unwrap().path()).unwrap();
            // As in the fuzz target, NUL separates the datagrams of one input.
            for part in bytes.split(|&b| b == 0) {
                net.send_bytes(1, ua(8), part);
                net.advance(20);
            }
            n += 1;
        }
    }
    assert!(n > 20);
    net.advance(1_000);
    // Well within the subscription's 600 s, so the answer below must be a refresh.
    assert!(net.now < 300_000, "replay took {} ms", net.now);
    let (r, rest) = net.request(1, ua(2), &subscribe(2, "z9hG4bKafter", 2, Some(&tag), 600));
    assert_eq!(r.code, 200);
    assert_eq!(notifies(&rest).len(), 1);
}

fn valid_requests() -> Vec<String> {
    vec![
        publish(Pub::default()),
        subscribe(3, "z9hG4bKprop", 1, None, 600),
        subscribe(3, "z9hG4bKprop2", 2, Some("t"), 0),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Mutated requests never panic, and whatever is sent back parses.
    #[test]
    fn mutated_requests_never_panic(
        which in 0usize..3,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = valid_requests()[which].clone().into_bytes();
        for (at, b, op) in edits {
            let i = at.index(bytes.len().max(1)).min(bytes.len());
            match op {
                0 if i < bytes.len() => bytes[i] = b,
                1 => bytes.insert(i, b),
                2 if i < bytes.len() => { bytes.remove(i); }
                _ => bytes.insert(i, b"\r\n:;<>\"=,"[b as usize % 9]),
            }
        }
        if cut.index(4) == 0 {
            let c = cut.index(bytes.len().max(1));
            bytes.truncate(c);
        }
        let mut net = Net::new(1);
        net.send_bytes(0, ua(6), &bytes);
        net.advance(100);
        net.take(ua(6));
    }
}

#[test]
fn via_received_and_rport_are_filled() {
    let mut net = Net::new(1);
    let (r, _) = net.request(
        0,
        ua(2),
        &subscribe(2, "z9hG4bKrp", 1, None, 600).replace("192.0.2.2:5070;", "host.invalid;"),
    );
    // The Via tells the UA where it was seen from.
    assert_eq!(r.code, 200);
    let v = r.headers.get("Via").unwrap();
    assert!(v.contains("received=192.0.2.2"), "{v}");
    assert!(v.contains("rport=5070"), "{v}");
    assert!(Via::parse(v).is_ok());
}
