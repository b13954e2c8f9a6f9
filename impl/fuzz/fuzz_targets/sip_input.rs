//! Fuzzes the SIP input path of one gateway `Host`: arbitrary datagrams into its SIP socket,
//! with its timers driven between them, so that every state a datagram sequence can create is
//! exercised through the same entry point every driver uses. Run:
//! `cd impl/fuzz && cargo fuzz run sip_input corpus/sip_input`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sascribe::sip::SipConfig;
use sascribe::{Config, Host, Input, NodeId, Output, Seeds, Socket};
use std::net::SocketAddr;

fuzz_target!(|data: &[u8]| {
    let local: SocketAddr = "127.0.0.1:5060".parse().unwrap();
    let ua: SocketAddr = "127.0.0.1:5070".parse().unwrap();
    let overlay = "127.0.0.1:4000".parse().unwrap();
    let mut host = Host::new(NodeId(1 << 100), overlay, Config::default(), 0, Seeds::reproducible(1))
        .with_sip(SipConfig::new(local));
    // Datagrams are separated by NUL bytes so one input can be a short conversation.
    let mut now = 0;
    for part in data.split(|&b| b == 0) {
        let _ = host.handle_input(now, Input::Sip { from: ua, payload: part });
        now += 700;
        let _ = host.handle_input(now, Input::Timeout);
        loop {
            match host.poll_output() {
                Output::Transmit(t) if t.socket == Socket::SipUdp => {
                    // Whatever we send must itself be parseable SIP.
                    assert!(sascribe::sip::message::parse(&t.payload).is_ok());
                }
                Output::Transmit(_) | Output::Close(_) | Output::Event(_) => {}
                Output::Timeout(_) => break,
            }
        }
    }
});
