//! The test harness of the SIP front-end tests: `n` gateway hosts wired in memory with
//! virtual time, raw SIP text in and out (datagrams, and TCP streams by connection id), and
//! builders for the requests a stock UA sends.
#![allow(dead_code)]

use sascribe::sip::headers::{NameAddr, SubscriptionState};
use sascribe::sip::message::{parse, Message, Response};
use sascribe::sip::stream::{next_frame, Frame, Limits};
use sascribe::sip::SipConfig;
use sascribe::{
    Call, Config, ConnId, Host, Input, Millis, NodeHandle, NodeId, Output, Seeds, Socket,
};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

pub const PIDF_OPEN: &str = "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:alice@example.test\"><tuple id=\"t\"><status><basic>open</basic></status></tuple></presence>";
pub const PIDF_CLOSED: &str = "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:alice@example.test\"><tuple id=\"t\"><status><basic>closed</basic></status></tuple></presence>";

pub fn overlay_addr(i: usize) -> SocketAddr {
    format!("10.0.0.{}:4000", i + 1).parse().unwrap()
}
pub fn sip_addr(i: usize) -> SocketAddr {
    format!("10.0.0.{}:5060", i + 1).parse().unwrap()
}
pub fn ua(n: u8) -> SocketAddr {
    format!("192.0.2.{n}:5070").parse().unwrap()
}

/// `n` gateway hosts wired in memory; UAs are plain addresses whose inboxes collect what the
/// hosts send them.
pub struct Net {
    pub now: Millis,
    pub hosts: Vec<Host>,
    pub inbox: HashMap<SocketAddr, Vec<Vec<u8>>>,
    /// UAs whose incoming datagrams are lost.
    pub deaf: HashSet<SocketAddr>,
    /// While set, overlay datagrams are held here instead of delivered (a slow overlay).
    pub held: Option<Vec<(usize, SocketAddr, Vec<u8>)>>,
    /// Bytes the hosts wrote on each stream connection, not yet taken.
    pub streams: HashMap<ConnId, Vec<u8>>,
    /// Connections the hosts asked to open: (host, id, destination).
    pub connects: Vec<(usize, ConnId, SocketAddr)>,
    /// Connections the hosts closed, in order.
    pub closed: Vec<ConnId>,
}

impl Net {
    pub fn new(n: usize) -> Net {
        Net::with_sip(n, |c| c)
    }

    /// `n` gateways whose endpoint configuration `f` adjusts.
    pub fn with_sip(n: usize, f: impl Fn(SipConfig) -> SipConfig) -> Net {
        Net::build(n, Config::default(), f)
    }

    /// `n` hosts with overlay configuration `cfg`, serving event `packages`.
    pub fn with_config(n: usize, cfg: Config, packages: &[&str]) -> Net {
        let packages: Vec<String> = packages.iter().map(|p| p.to_string()).collect();
        Net::build(n, cfg, move |mut c| {
            c.event_packages = packages.clone();
            c
        })
    }

    fn build(n: usize, cfg: Config, f: impl Fn(SipConfig) -> SipConfig) -> Net {
        let handles: Vec<NodeHandle> = (0..n)
            .map(|i| NodeHandle {
                id: NodeId((i as u128 * 0x3b9a_ca07 + 17) << 96 | 0x1234_5678),
                addr: overlay_addr(i),
            })
            .collect();
        let hosts = handles
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let seeds = Seeds::reproducible(i as u64 + 1);
                let mut host = Host::new(h.id, h.addr, cfg.clone(), 0, seeds)
                    .with_sip(f(SipConfig::new(sip_addr(i))));
                let install = Call::InstallRoutingState(handles.clone());
                host.handle_input(0, Input::Call(install)).unwrap();
                host
            })
            .collect();
        let mut net = Net {
            now: 0,
            hosts,
            inbox: HashMap::new(),
            deaf: HashSet::new(),
            held: None,
            streams: HashMap::new(),
            connects: Vec::new(),
            closed: Vec::new(),
        };
        net.settle();
        net
    }

    /// Delivers everything in flight at the current instant.
    pub fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            for i in 0..self.hosts.len() {
                loop {
                    let t = match self.hosts[i].poll_output() {
                        Output::Transmit(t) => t,
                        Output::Close(c) => {
                            moved = true;
                            self.closed.push(c);
                            continue;
                        }
                        Output::Event(_) => continue,
                        Output::Timeout(_) => break,
                    };
                    moved = true;
                    match t.socket {
                        Socket::SipUdp => {
                            if !self.deaf.contains(&t.dst) {
                                self.inbox.entry(t.dst).or_default().push(t.payload);
                            }
                            continue;
                        }
                        Socket::SipTcpConnect(c) => {
                            self.connects.push((i, c, t.dst));
                            self.streams.entry(c).or_default().extend(t.payload);
                            continue;
                        }
                        Socket::SipTcp(c) => {
                            self.streams.entry(c).or_default().extend(t.payload);
                            continue;
                        }
                        Socket::Overlay => {}
                    }
                    if let Some(held) = self.held.as_mut() {
                        held.push((i, t.dst, t.payload));
                        continue;
                    }
                    self.deliver(i, t.dst, &t.payload);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("no quiescence");
    }

    pub fn deliver(&mut self, from: usize, dst: SocketAddr, payload: &[u8]) {
        if let Some(j) = (0..self.hosts.len()).find(|&j| overlay_addr(j) == dst) {
            let input = Input::Overlay {
                from: overlay_addr(from),
                payload,
            };
            self.hosts[j].handle_input(self.now, input).unwrap();
        }
    }

    /// Delivers the held overlay datagrams and stops holding.
    pub fn release(&mut self) {
        for (i, dst, payload) in self.held.take().unwrap_or_default() {
            self.deliver(i, dst, &payload);
        }
        self.settle();
    }

    /// The index of the root of Alice's presence group.
    pub fn root(&self) -> usize {
        let gid = sascribe::GroupId::from_event("sip:alice@example.test", "presence", None);
        let ids = self.hosts.iter().map(|p| p.id().0);
        let root = sascribe::id::closest_of(gid.0, ids).unwrap();
        (0..self.hosts.len())
            .find(|&i| self.hosts[i].id().0 == root)
            .unwrap()
    }

    /// Advances virtual time by `d` ms, firing every timer on the way.
    pub fn advance(&mut self, d: Millis) {
        let end = self.now + d;
        loop {
            let next = self.hosts.iter().map(Host::poll_timeout).min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    for h in &mut self.hosts {
                        if h.poll_timeout() <= self.now {
                            h.handle_input(self.now, Input::Timeout).unwrap();
                        }
                    }
                    self.settle();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    /// UA `from` sends `text` to peer `i`'s SIP port.
    pub fn send(&mut self, i: usize, from: SocketAddr, text: &str) {
        self.send_bytes(i, from, text.as_bytes());
    }
    pub fn send_bytes(&mut self, i: usize, from: SocketAddr, bytes: &[u8]) {
        let input = Input::Sip {
            from,
            payload: bytes,
        };
        self.hosts[i].handle_input(self.now, input).unwrap();
        self.settle();
    }

    /// UA `from` writes `bytes` on its connection `conn` to peer `i` (an empty write
    /// announces the connection).
    pub fn stream_send(&mut self, i: usize, conn: ConnId, from: SocketAddr, bytes: &[u8]) {
        let input = Input::SipStream { conn, from, bytes };
        self.hosts[i].handle_input(self.now, input).unwrap();
        self.settle();
    }

    /// Connection `conn` of peer `i` ends.
    pub fn stream_closed(&mut self, i: usize, conn: ConnId) {
        let input = Input::SipStreamClosed { conn };
        self.hosts[i].handle_input(self.now, input).unwrap();
        self.settle();
    }

    /// The messages written on `conn` so far, framed and parsed (keep-alive CRLFs skipped; a
    /// partial message stays).
    pub fn take_stream(&mut self, conn: ConnId) -> Vec<Message> {
        let lim = Limits {
            max_header: 1 << 20,
            max_message: 1 << 20,
        };
        let buf = self.streams.entry(conn).or_default();
        let mut out = Vec::new();
        let mut off = 0;
        while let Some(f) = next_frame(&buf[off..], &lim).expect("the host wrote a framable stream")
        {
            if let Frame::Message(n) = f {
                out.push(parse(&buf[off..off + n]).expect("the host wrote an unparsable message"));
            }
            off += f.len();
        }
        buf.drain(..off);
        out
    }

    /// Sends `text` on `conn` and lets the overlay answer (as [`Net::request`]); returns the
    /// final response written on `conn` and whatever else was.
    pub fn stream_request(
        &mut self,
        i: usize,
        conn: ConnId,
        from: SocketAddr,
        text: &str,
    ) -> (Response, Vec<Message>) {
        self.stream_send(i, conn, from, text.as_bytes());
        let mut msgs = Vec::new();
        for _ in 0..100 {
            msgs.extend(self.take_stream(conn));
            if msgs
                .iter()
                .any(|m| matches!(m, Message::Response(r) if r.code >= 200))
            {
                break;
            }
            self.advance(50);
        }
        split_final(msgs)
    }

    /// Everything UA `at` received so far, parsed.
    pub fn take(&mut self, at: SocketAddr) -> Vec<Message> {
        self.inbox
            .remove(&at)
            .unwrap_or_default()
            .iter()
            .map(|b| parse(b).expect("front end sent an unparsable message"))
            .collect()
    }

    /// Sends and lets the overlay answer (up to 5 s of virtual time, in 50 ms steps, stopping
    /// at the first final response); returns it and whatever else arrived.
    pub fn request(&mut self, i: usize, from: SocketAddr, text: &str) -> (Response, Vec<Message>) {
        self.send(i, from, text);
        let mut msgs = Vec::new();
        for _ in 0..100 {
            msgs.extend(self.take(from));
            if msgs
                .iter()
                .any(|m| matches!(m, Message::Response(r) if r.code >= 200))
            {
                break;
            }
            self.advance(50);
        }
        split_final(msgs)
    }
}

/// The first final response among `msgs`, and the other messages.
pub fn split_final(msgs: Vec<Message>) -> (Response, Vec<Message>) {
    let fin = msgs
        .iter()
        .find_map(|m| match m {
            Message::Response(r) if r.code >= 200 => Some(r.clone()),
            _ => None,
        })
        .expect("no final response");
    let rest = msgs
        .into_iter()
        .filter(|m| !matches!(m, Message::Response(r) if r.code >= 200))
        .collect();
    (fin, rest)
}

pub fn with_len(head: String, body: &str) -> String {
    format!("{head}Content-Length: {}\r\n\r\n{body}", body.len())
}

pub struct Pub<'a> {
    pub branch: &'a str,
    /// Content-Type of a body (`application/pidf+xml` when empty).
    pub content_type: &'a str,
    pub uri: &'a str,
    pub etag: Option<&'a str>,
    pub expires: Option<u32>,
    pub body: &'a str,
    pub event: &'a str,
}

impl Default for Pub<'_> {
    fn default() -> Self {
        Pub {
            branch: "z9hG4bKpub1",
            content_type: "",
            uri: "sip:alice@example.test",
            etag: None,
            expires: Some(600),
            body: PIDF_OPEN,
            event: "presence",
        }
    }
}

pub fn publish(p: Pub) -> String {
    let mut h = format!(
        "PUBLISH {uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.1:5070;branch={b}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@example.test>;tag=a1\r\n\
         To: <sip:alice@example.test>\r\n\
         Call-ID: pub-{b}\r\n\
         CSeq: 1 PUBLISH\r\n",
        uri = p.uri,
        b = p.branch
    );
    if !p.event.is_empty() {
        h.push_str(&format!("Event: {}\r\n", p.event));
    }
    if let Some(e) = p.etag {
        h.push_str(&format!("SIP-If-Match: {e}\r\n"));
    }
    if let Some(e) = p.expires {
        h.push_str(&format!("Expires: {e}\r\n"));
    }
    if !p.body.is_empty() {
        let ct = if p.content_type.is_empty() {
            "application/pidf+xml"
        } else {
            p.content_type
        };
        h.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    with_len(h, p.body)
}

/// A SUBSCRIBE from UA `n`; `to_tag` makes it in-dialog.
pub fn subscribe(n: u8, branch: &str, cseq: u32, to_tag: Option<&str>, expires: u32) -> String {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    with_len(
        format!(
            "SUBSCRIBE sip:alice@example.test SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.{n}:5070;branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:watcher{n}@example.test>;tag=w{n}\r\n\
             To: <sip:alice@example.test>{to_tag}\r\n\
             Call-ID: sub-{n}@192.0.2.{n}\r\n\
             CSeq: {cseq} SUBSCRIBE\r\n\
             Contact: <sip:watcher{n}@192.0.2.{n}:5070>\r\n\
             Event: presence\r\n\
             Accept: application/pidf+xml\r\n\
             Expires: {expires}\r\n"
        ),
        "",
    )
}

/// The 200 OK a UA sends for a NOTIFY.
pub fn ok_for(req: &sascribe::sip::message::Request) -> String {
    let h = &req.headers;
    with_len(
        format!(
            "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {}\r\n",
            h.get("Via").unwrap(),
            h.get("From").unwrap(),
            h.get("To").unwrap(),
            h.get("Call-ID").unwrap(),
            h.get("CSeq").unwrap()
        ),
        "",
    )
}

pub fn notifies(msgs: &[Message]) -> Vec<sascribe::sip::message::Request> {
    msgs.iter()
        .filter_map(|m| match m {
            Message::Request(r) if r.method.as_str() == "NOTIFY" => Some(r.clone()),
            _ => None,
        })
        .collect()
}

pub fn sub_state(r: &sascribe::sip::message::Request) -> SubscriptionState {
    SubscriptionState::parse(r.headers.get("Subscription-State").unwrap()).unwrap()
}

pub fn to_tag(r: &Response) -> String {
    NameAddr::parse(r.headers.get("To").unwrap())
        .unwrap()
        .tag
        .unwrap()
}

/// Subscribes UA `n` at peer `i`, answers the first NOTIFY, returns (To tag, that NOTIFY).
pub fn establish(net: &mut Net, i: usize, n: u8) -> (String, sascribe::sip::message::Request) {
    let (r, rest) = net.request(
        i,
        ua(n),
        &subscribe(n, &format!("z9hG4bKs{n}"), 1, None, 600),
    );
    assert_eq!(r.code, 200, "{r:?}");
    assert_eq!(r.headers.get("Expires"), Some("600"));
    assert!(r.headers.get("Contact").is_some());
    let ns = notifies(&rest);
    assert_eq!(ns.len(), 1, "exactly one immediate NOTIFY");
    net.send(i, ua(n), &ok_for(&ns[0]));
    (to_tag(&r), ns[0].clone())
}

/// The `<basic>` status of each tuple of a PIDF body, in document order.
pub fn basics(body: &[u8]) -> Vec<String> {
    let s = sascribe::pidf::summary(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)));
    s.tuples.into_iter().filter_map(|t| t.basic).collect()
}

pub fn publish_initial(net: &mut Net, i: usize) -> String {
    let (r, _) = net.request(i, ua(1), &publish(Pub::default()));
    assert_eq!(r.code, 200, "{r:?}");
    r.headers.get("SIP-ETag").expect("SIP-ETag").to_string()
}
