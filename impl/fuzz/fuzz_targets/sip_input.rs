//! Fuzzes the SIP input path: arbitrary datagrams into `SipEndpoint::handle_datagram`, with the
//! endpoint's timers and the peer's upcalls driven afterwards so that every state a datagram can
//! create is also exercised. Run: `cd impl/fuzz && cargo fuzz run sip_input corpus/sip_input`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sascribe::sip::{SipConfig, SipEndpoint};
use sascribe::{Config, NodeId, Peer};
use std::net::SocketAddr;

fuzz_target!(|data: &[u8]| {
    let local: SocketAddr = "127.0.0.1:5060".parse().unwrap();
    let ua: SocketAddr = "127.0.0.1:5070".parse().unwrap();
    let mut peer = Peer::new(NodeId(1 << 100), "127.0.0.1:4000".parse().unwrap(), Config::default(), 0, 1);
    let mut ep = SipEndpoint::new(SipConfig::new(local), 7);
    // Datagrams are separated by a NUL-free marker so one input can be a short conversation.
    let mut now = 0;
    for part in data.split(|&b| b == 0) {
        ep.handle_datagram(now, ua, part, &mut peer);
        while let Some(e) = peer.poll_event() {
            ep.handle_peer_event(now, e, &mut peer);
        }
        while peer.poll_transmit().is_some() {}
        while let Some(t) = ep.poll_transmit() {
            // Whatever we send must itself be parseable SIP.
            assert!(sascribe::sip::message::parse(&t.payload).is_ok());
        }
        now += 700;
        if let Some(t) = ep.poll_timeout() {
            if t <= now {
                ep.handle_timeout(now, &mut peer);
                while ep.poll_transmit().is_some() {}
            }
        }
        peer.handle_timeout(now);
    }
});
