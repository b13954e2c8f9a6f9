//! Decoding never panics: arbitrary bytes, and valid datagrams with random corruption.

use proptest::prelude::*;
use sascribe::wire::{Codec, Dest, Latest, Msg, Routed, Stamp, MAX_DATAGRAM_LEN, VERSION};
use sascribe::{GroupId, NodeHandle, NodeId};

fn sample() -> Vec<u8> {
    let h = NodeHandle {
        id: NodeId(5),
        addr: "10.0.0.1:5060".parse().unwrap(),
    };
    let msg = Msg::Routed {
        key: 77,
        hops: 2,
        body: Routed::Join {
            gid: GroupId(77),
            origin: h,
            join_id: 9,
            graft: true,
            carried: Some(Latest {
                seq: 4,
                body: Some(bytes::Bytes::from_static(b"<presence/>")),
                content_type: Some("application/pidf+xml".into()),
            }),
            path: vec![h, h],
        },
    };
    Codec::new(None).encode(&h, true, &msg, &stamp()).unwrap()
}

fn stamp() -> Stamp {
    Stamp {
        dst: Dest::Peer(NodeId(6)),
        time: 1_800_000_000_000,
        seq: 1,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..512), versioned in any::<bool>()) {
        if versioned && !bytes.is_empty() {
            bytes[0] = VERSION;
        }
        let _ = Codec::new(None).decode(&bytes);
        let _ = Codec::new(Some(b"k")).decode(&bytes);
    }

    #[test]
    fn corrupted_datagrams_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8), cut in any::<prop::sample::Index>()) {
        let mut d = sample();
        for (i, v) in flips {
            let at = i.index(d.len());
            d[at] ^= v;
        }
        let len = cut.index(d.len() + 1);
        let c = Codec::new(None);
        if let Ok(env) = c.decode(&d[..len]) {
            // Whatever decodes re-encodes within bounds.
            let again = c.encode(&env.from, env.ready, &env.msg, &stamp()).unwrap();
            prop_assert!(again.len() <= MAX_DATAGRAM_LEN);
        }
    }
}
