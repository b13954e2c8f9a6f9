//! Entry points shared by the fuzz targets (`impl/fuzz/`, run with cargo-fuzz) and the tests
//! that replay their corpora on stable (`impl/tests/fuzz_corpora.rs`): each takes arbitrary
//! bytes, drives one sans-IO [`Host`] (or a parser) with them, and panics only on a bug — a
//! crash, or output that breaks an invariant checked here.
//!
//! Input layouts (what the committed seeds follow, and what the fuzzer mutates):
//! * [`sip_datagrams`]: SIP datagrams separated by NUL bytes, timers run between them;
//! * [`sip_stream`]: byte chunks of one or more SIP-over-TCP connections: each chunk is
//!   `[connection: u8][length: u16 BE][bytes]`, a length of `0xFFFF` closing the connection;
//! * [`overlay_datagrams`]: overlay datagrams `[sender: u8][length: u16 BE][bytes]`;
//! * [`config_file`]: the text of a configuration file.

use crate::sip::SipConfig;
use crate::{Config, ConnId, Host, Input, Millis, NodeId, Output, Seeds, Socket};
use std::net::SocketAddr;

/// Virtual time between two inputs (ms): enough to make retransmission and idle timers fire
/// along a long input.
const STEP_MS: Millis = 700;

/// A gateway peer alone in its overlay (so joined at once: requests reach the root logic).
fn lone_gateway() -> Host {
    let sip: SocketAddr = "127.0.0.1:5060".parse().expect("literal address");
    let overlay: SocketAddr = "127.0.0.1:4000".parse().expect("literal address");
    Host::new(
        NodeId(1 << 100),
        overlay,
        Config::default(),
        0,
        Seeds::reproducible(1),
    )
    .with_sip(SipConfig::new(sip))
}

/// Runs the host's timers at `now` and drains its outputs, checking that every SIP message it
/// writes parses; returns the bytes it sent.
fn settle(host: &mut Host, now: Millis) -> usize {
    let _ = host.handle_input(now, Input::Timeout);
    let mut sent = 0;
    loop {
        match host.poll_output() {
            Output::Transmit(t) => {
                sent += t.payload.len();
                if matches!(t.socket, Socket::SipUdp) {
                    assert!(
                        crate::sip::message::parse(&t.payload).is_ok(),
                        "the host sent SIP that does not parse: {:?}",
                        String::from_utf8_lossy(&t.payload)
                    );
                }
            }
            Output::Close(_) | Output::Event(_) => {}
            Output::Timeout(_) => return sent,
        }
    }
}

/// Splits `[tag: u8][length: u16 BE][bytes]` records; a truncated last record takes what is
/// left.
fn records(mut data: &[u8]) -> impl Iterator<Item = (u8, Option<&[u8]>)> {
    std::iter::from_fn(move || {
        let (&tag, rest) = data.split_first()?;
        let (len, rest) = match rest {
            [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]), rest),
            _ => (rest.len() as u16, rest),
        };
        if len == u16::MAX {
            data = rest;
            return Some((tag, None));
        }
        let n = usize::from(len).min(rest.len());
        let (chunk, rest) = rest.split_at(n);
        data = rest;
        Some((tag, Some(chunk)))
    })
}

/// SIP datagrams (NUL-separated) into a lone gateway, timers between them. Returns the bytes
/// the host sent (how much of its logic the input reached).
pub fn sip_datagrams(data: &[u8]) -> usize {
    let ua: SocketAddr = "127.0.0.1:5070".parse().expect("literal address");
    let mut host = lone_gateway();
    let (mut now, mut sent) = (0, 0);
    for part in data.split(|&b| b == 0) {
        let _ = host.handle_input(
            now,
            Input::Sip {
                from: ua,
                payload: part,
            },
        );
        now += STEP_MS;
        sent += settle(&mut host, now);
    }
    sent
}

/// SIP over TCP: chunks of up to four connections (`[conn][len][bytes]`, `len = 0xFFFF`
/// closes), timers between them. Every connection is opened as a driver would (an empty first
/// read), and whatever the host writes on a stream must frame and parse. Returns the bytes it
/// wrote.
pub fn sip_stream(data: &[u8]) -> usize {
    let mut host = lone_gateway();
    let mut now = 0;
    let mut open = [false; 4];
    let mut written: Vec<Vec<u8>> = vec![Vec::new(); 4];
    for (tag, chunk) in records(data) {
        let c = usize::from(tag % 4);
        let conn = ConnId(c as u64 + 1);
        let from = SocketAddr::from(([127, 0, 0, 1], 6000 + c as u16));
        match chunk {
            None => {
                if open[c] {
                    let _ = host.handle_input(now, Input::SipStreamClosed { conn });
                    open[c] = false;
                }
            }
            Some(bytes) => {
                if !open[c] {
                    let _ = host.handle_input(
                        now,
                        Input::SipStream {
                            conn,
                            from,
                            bytes: &[],
                        },
                    );
                    open[c] = true;
                }
                let _ = host.handle_input(now, Input::SipStream { conn, from, bytes });
            }
        }
        now += STEP_MS;
        let _ = host.handle_input(now, Input::Timeout);
        loop {
            match host.poll_output() {
                Output::Transmit(t) => {
                    if let Socket::SipTcp(id) = t.socket {
                        if let Some(w) = written.get_mut((id.0 as usize).wrapping_sub(1)) {
                            w.extend_from_slice(&t.payload);
                        }
                    }
                }
                Output::Close(id) => {
                    if let Some(o) = open.get_mut((id.0 as usize).wrapping_sub(1)) {
                        *o = false;
                    }
                }
                Output::Event(_) => {}
                Output::Timeout(_) => break,
            }
        }
    }
    for w in &written {
        check_stream_output(w);
    }
    written.iter().map(Vec::len).sum()
}

/// What a host wrote on one connection is whole SIP messages, each with a Content-Length that
/// frames it, and each parses; CRLFs between them are keep-alive pongs (RFC 5626 §3.5.1).
fn check_stream_output(mut out: &[u8]) {
    loop {
        while let Some(rest) = out.strip_prefix(b"\r\n") {
            out = rest;
        }
        if out.is_empty() {
            break;
        }
        let end = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a message the host wrote has no end of headers");
        let head = String::from_utf8_lossy(&out[..end]);
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                let name = name.trim();
                (name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l"))
                    .then(|| value.trim().parse().ok())?
            })
            .expect("a message the host wrote on a stream has no Content-Length");
        let total = end + 4 + len;
        assert!(
            total <= out.len(),
            "a message the host wrote is cut short ({} of {total} bytes): {:?}",
            out.len(),
            String::from_utf8_lossy(out)
        );
        assert!(
            crate::sip::message::parse(&out[..total]).is_ok(),
            "the host wrote SIP that does not parse: {head}"
        );
        out = &out[total..];
    }
}

/// Overlay datagrams from up to four senders into a lone gateway, timers between them. Returns
/// the bytes the host sent.
pub fn overlay_datagrams(data: &[u8]) -> usize {
    let mut host = lone_gateway();
    let (mut now, mut sent) = (0, 0);
    for (tag, chunk) in records(data) {
        let from = SocketAddr::from(([127, 0, 0, 1], 4001 + u16::from(tag % 4)));
        let payload = chunk.unwrap_or_default();
        let _ = host.handle_input(now, Input::Overlay { from, payload });
        now += STEP_MS;
        sent += settle(&mut host, now);
    }
    sent
}

/// A configuration file's text: parsing and applying it to the defaults never panic, and a
/// configuration that passes validation runs a gateway that serves a PUBLISH and a SUBSCRIBE
/// and runs its timers for a minute without panicking or spinning. Returns the bytes that
/// gateway sent (0 for a file refused).
pub fn config_file(data: &[u8]) -> usize {
    use crate::runtime::ConfigFile;
    let Ok(text) = std::str::from_utf8(data) else {
        return 0;
    };
    let Ok(file) = ConfigFile::parse(text) else {
        return 0;
    };
    let _ = file.event_packages();
    let _ = file.domains();
    let Ok(config) = file.apply(Config::default()) else {
        return 0;
    };
    let sip: SocketAddr = "127.0.0.1:5060".parse().expect("literal address");
    let overlay: SocketAddr = "127.0.0.1:4000".parse().expect("literal address");
    let mut host = Host::new(NodeId(1 << 100), overlay, config, 0, Seeds::reproducible(1))
        .with_sip(SipConfig::new(sip));
    let ua: SocketAddr = "127.0.0.1:5070".parse().expect("literal address");
    let (mut now, mut sent) = (0, 0);
    for req in [CONFIG_PUBLISH, CONFIG_SUBSCRIBE] {
        let _ = host.handle_input(
            now,
            Input::Sip {
                from: ua,
                payload: req.as_bytes(),
            },
        );
        now += STEP_MS;
        sent += settle(&mut host, now);
    }
    // The timers a minute brings, each drained (a configuration that made them spin would
    // hang here: the fuzzer reports it as a timeout).
    while now < 60_000 {
        now += 100;
        sent += settle(&mut host, now);
    }
    sent
}

const CONFIG_PUBLISH: &str = "PUBLISH sip:alice@example.com SIP/2.0\r\n\
    Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKf1\r\nMax-Forwards: 70\r\n\
    From: <sip:alice@example.com>;tag=a\r\nTo: <sip:alice@example.com>\r\n\
    Call-ID: f1\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nExpires: 3600\r\n\
    Content-Type: application/pidf+xml\r\nContent-Length: 0\r\n\r\n";

const CONFIG_SUBSCRIBE: &str = "SUBSCRIBE sip:alice@example.com SIP/2.0\r\n\
    Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKf2\r\nMax-Forwards: 70\r\n\
    From: <sip:bob@example.com>;tag=b\r\nTo: <sip:alice@example.com>\r\n\
    Call-ID: f2\r\nCSeq: 1 SUBSCRIBE\r\nEvent: presence\r\nExpires: 600\r\n\
    Contact: <sip:bob@127.0.0.1:5070>\r\nContent-Length: 0\r\n\r\n";
