//! SIP over TCP (RFC 3261 §18): the endpoint's stream connections and the flows it sends on.
//!
//! The driver owns the sockets and numbers the connections it accepts; the endpoint keeps, per
//! open connection, the bytes not yet framed ([`super::stream`]), when it was last used, and
//! its idle deadline. What it does with them:
//!
//! * **Input.** Bytes are appended to the connection's buffer and cut into messages, each
//!   handled exactly like a datagram, with the connection as its [`Flow`]. A double-CRLF ping
//!   gets a CRLF pong. A stream that cannot be framed (garbage, no `Content-Length`, header
//!   section or message over the limits) or a message that does not parse gets 400/513 when
//!   it is a request whose header fields can be read, and then the connection is closed:
//!   nothing after it can be trusted to start at a message boundary. Other connections, the
//!   UDP socket and the peer are not affected. A connection the driver announces beyond
//!   [`super::SipConfig::max_connections`] is closed at once.
//! * **Responses** leave on the connection the request came on. If it has closed meanwhile, a
//!   final response goes on a new connection to the `received` address (the source address)
//!   and the `Via` sent-by port, 5060 by default (§18.2.2). A connection the endpoint opened
//!   is reused for everything it sends to the same address (§18.1.1).
//! * **NOTIFYs** of a subscription whose SUBSCRIBE came over TCP leave on that connection
//!   while it is open, otherwise on a new one to the host and port of the subscriber's
//!   Contact (an IP literal; a name falls back to the address the SUBSCRIBE came from), which
//!   the dialog uses from then on. A NOTIFY in flight on a subscriber's connection that closes
//!   is sent again on a new connection to the Contact; one in flight on a connection the
//!   endpoint opened that fails or closes has failed with a transport error (§17.1.4) and
//!   ends the subscription, like Timer F. Over TCP there are no Timer E retransmissions, and a
//!   server transaction completes at once (Timer J = 0, §17.2.2).
//! * **Idle connections** are closed after [`super::SipConfig::conn_idle_timeout`] without
//!   traffic, but not before the expiry of a subscription last notified over them.

use super::headers::Via;
use super::message::{self, Headers, Message, Method};
use super::stream::{readable_head, Frame, FrameError, Framer, Limits};
use super::{Env, Flow, SipEndpoint, SipOutput};
use crate::io::{ConnId, Socket, Transmit};
use crate::timer::{Armed, Timer};
use crate::Millis;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// The default SIP port (RFC 3261 §19.1.2), used when a URI or `Via` names none.
const SIP_PORT: u16 = 5060;
/// The default port of `sips:` URIs.
const SIPS_PORT: u16 = 5061;

/// One open stream connection.
#[derive(Debug)]
struct Conn {
    /// The remote address (the driver's report, or where the endpoint asked to connect).
    remote: SocketAddr,
    /// Bytes received and not yet framed.
    buf: Vec<u8>,
    /// How far the message at the front of `buf` was framed.
    framer: Framer,
    /// Last input on it, or NOTIFY sent on it.
    last_active: Millis,
    /// It carries a subscription that lasts until then.
    hold_until: Millis,
    armed: Armed,
}

impl Conn {
    fn deadline(&self, idle: Millis) -> Millis {
        self.last_active.saturating_add(idle).max(self.hold_until)
    }
}

/// The endpoint's open stream connections.
#[derive(Debug, Default)]
pub(crate) struct Conns {
    open: HashMap<ConnId, Conn>,
    /// Of which the driver accepted (what [`super::SipConfig::max_connections`] bounds).
    accepted: usize,
    /// The open connections the endpoint opened, by destination (reused, §18.1.1).
    outbound: HashMap<SocketAddr, ConnId>,
    next_host: u64,
}

impl Conns {
    /// Number of open connections.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    fn is_open(&self, conn: ConnId) -> bool {
        self.open.contains_key(&conn)
    }

    fn insert(&mut self, env: &mut Env<'_>, conn: ConnId, remote: SocketAddr, idle: Millis) {
        let mut c = Conn {
            remote,
            buf: Vec::new(),
            framer: Framer::default(),
            last_active: env.now,
            hold_until: 0,
            armed: Armed::default(),
        };
        env.timers
            .arm(c.deadline(idle), Timer::SipConn(conn.0), &mut c.armed);
        if conn.is_host_opened() {
            self.outbound.insert(remote, conn);
        } else {
            self.accepted += 1;
        }
        self.open.insert(conn, c);
    }

    fn remove(&mut self, conn: ConnId) -> Option<Conn> {
        let c = self.open.remove(&conn)?;
        if !conn.is_host_opened() {
            self.accepted -= 1;
        } else if self.outbound.get(&c.remote) == Some(&conn) {
            self.outbound.remove(&c.remote);
        }
        Some(c)
    }

    fn host_id(&mut self) -> ConnId {
        self.next_host += 1;
        ConnId(ConnId::HOST_BIT | self.next_host)
    }
}

/// Where a request for `uri` (a Contact) goes over TCP: its host, when an IP literal, else
/// `fallback`; its port, else 5060 (5061 for `sips:`).
pub fn contact_addr(uri: &str, fallback: IpAddr) -> SocketAddr {
    let lower = uri.get(..5).unwrap_or("").to_ascii_lowercase();
    let (rest, default_port) = match lower.as_str() {
        "sips:" => (&uri[5..], SIPS_PORT),
        _ => (uri.get(4..).unwrap_or(""), SIP_PORT),
    };
    let hostport = rest
        .split([';', '?'])
        .next()
        .unwrap_or("")
        .rsplit('@')
        .next()
        .unwrap_or("");
    let (host, port) = split_host_port(hostport);
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .unwrap_or(fallback);
    SocketAddr::new(ip, port.unwrap_or(default_port))
}

/// `host[:port]`, `[v6][:port]`.
fn split_host_port(s: &str) -> (&str, Option<u16>) {
    if let Some(end) = s.find(']') {
        let port = s[end + 1..].strip_prefix(':').and_then(|p| p.parse().ok());
        return (&s[..=end], port);
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()),
        _ => (s, None),
    }
}

/// Where a subscription's NOTIFYs go: the next hop of the dialog (RFC 3261 §12.2.1.1 and
/// §8.1.2, RFC 6665 §4.1.2), i.e. the first Record-Route of the SUBSCRIBE when there is one,
/// else the subscriber's Contact (the remote target). Three cases keep the SUBSCRIBE's own flow:
/// a stream (the connection is reused, RFC 3261 §18); a next hop that is not an IP literal (the
/// core resolves no names); and a client behind NAT (RFC 3581: its top Via's sent-by is not
/// where the request came from, and its Contact names that same unreachable private address), so
/// NOTIFYs go to the `received`/`rport` address the SUBSCRIBE came from, as a central server's
/// NAT handling does.
pub(super) fn notify_flow(ctx: &super::ReqCtx, target: &str, route_set: &[String]) -> Flow {
    if ctx.flow.is_reliable() {
        return ctx.flow;
    }
    let hop = match route_set.first() {
        Some(r) => match super::headers::NameAddr::parse(r) {
            Ok(na) => na.uri,
            Err(_) => return ctx.flow,
        },
        None => target.to_string(),
    };
    let Some(addr) = ip_literal_addr(&hop) else {
        return ctx.flow;
    };
    if route_set.is_empty() {
        let (host, port) = split_host_port(&ctx.via.sent_by);
        let sent_by = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, port.unwrap_or(SIP_PORT)));
        let natted = sent_by != Some(ctx.src);
        if natted && (sent_by == Some(addr) || sent_by.is_none()) {
            return ctx.flow;
        }
    }
    Flow::Udp(addr)
}

/// The address of a SIP URI whose host is an IP literal (port: 5060, 5061 for `sips:`).
fn ip_literal_addr(uri: &str) -> Option<SocketAddr> {
    let unspecified = IpAddr::from([0, 0, 0, 0]);
    let a = contact_addr(uri, unspecified);
    (!a.ip().is_unspecified()).then_some(a)
}

/// RFC 3261 §18.2.2: a response whose connection closed goes to the `received` address (the
/// request's source) at the `Via` sent-by port, or 5060.
fn response_addr(via: &Via, remote: SocketAddr) -> SocketAddr {
    let (_, port) = split_host_port(&via.sent_by);
    SocketAddr::new(remote.ip(), port.unwrap_or(SIP_PORT))
}

/// Our Contact for a dialog on `flow` (`;transport=tcp` over TCP, so that the subscriber's
/// in-dialog requests come back over TCP, RFC 3263 §4.1).
pub fn contact(local: SocketAddr, flow: &Flow) -> String {
    match flow {
        Flow::Udp(_) => format!("<sip:{local}>"),
        Flow::Tcp { .. } => format!("<sip:{local};transport=tcp>"),
    }
}

impl SipEndpoint {
    fn limits(&self) -> Limits {
        Limits {
            max_header: self.cfg.max_header,
            max_message: self.cfg.max_message,
        }
    }

    /// Bytes arrived on stream connection `conn` from `from` (any split; empty: the driver
    /// announces a connection it accepted).
    pub(crate) fn handle_stream(
        &mut self,
        env: &mut Env<'_>,
        conn: ConnId,
        from: SocketAddr,
        bytes: &[u8],
    ) {
        if !self.conns.is_open(conn) {
            if conn.is_host_opened() {
                return; // a connection of ours that is gone: stale input
            }
            if self.conns.accepted >= self.cfg.max_connections {
                self.stats.connections_refused += 1;
                self.out.push_back(SipOutput::Close(conn));
                return;
            }
            self.stats.connections_opened += 1;
            let idle = self.cfg.conn_idle_timeout;
            self.conns.insert(env, conn, from, idle);
        }
        let Some(c) = self.conns.open.get_mut(&conn) else {
            return;
        };
        c.last_active = env.now;
        if bytes.is_empty() {
            return;
        }
        let flow = Flow::Tcp {
            conn,
            remote: c.remote,
        };
        let mut buf = std::mem::take(&mut c.buf);
        let mut framer = c.framer;
        buf.extend_from_slice(bytes);
        let lim = self.limits();
        let mut off = 0;
        let failed = loop {
            match framer.next(&buf[off..], &lim) {
                Ok(None) => break None,
                Ok(Some(f)) => {
                    let at = off;
                    off += f.len();
                    match f {
                        Frame::Ping => {
                            self.stats.keepalives += 1;
                            self.transmit(&flow, b"\r\n".to_vec());
                        }
                        Frame::Pad => {}
                        Frame::Message(n) => {
                            if !self.handle_message(env, flow, &buf[at..at + n]) {
                                break Some(None);
                            }
                        }
                    }
                }
                Err(e) => break Some(Some(e)),
            }
        };
        match failed {
            None => {
                buf.drain(..off);
                if let Some(c) = self.conns.open.get_mut(&conn) {
                    c.buf = buf;
                    c.framer = framer;
                }
            }
            Some(e) => {
                if let Some(e) = e {
                    self.stats.stream_framing_errors += 1;
                    self.answer_framing_error(&flow, &buf[off..], e);
                }
                self.close(env, conn);
            }
        }
    }

    /// 400/513 to a stream that cannot be framed, if a request's header fields can be read.
    fn answer_framing_error(&mut self, flow: &Flow, rest: &[u8], e: FrameError) {
        let head = &rest[..readable_head(rest, &self.limits())];
        let (hs, is_req) = match message::parse(head) {
            Ok(Message::Request(r)) => (r.headers, r.method != Method::Ack),
            Ok(Message::Response(_)) => (Headers::default(), false),
            Err(pe) => (pe.headers, pe.code != 0 && pe.method != Some(Method::Ack)),
        };
        if is_req {
            let (code, reason) = e.answer();
            self.stateless(flow, &hs, code, reason);
        }
    }

    /// The driver reports that stream connection `conn` closed (or never opened).
    pub(crate) fn handle_stream_closed(&mut self, env: &mut Env<'_>, conn: ConnId) {
        if self.conns.remove(conn).is_some() {
            self.stats.connections_closed += 1;
            self.rescue_notifies(env, conn);
        }
    }

    /// Closes `conn` (after what was queued for it is written).
    pub(super) fn close(&mut self, env: &mut Env<'_>, conn: ConnId) {
        if self.conns.remove(conn).is_some() {
            self.stats.connections_closed += 1;
            self.out.push_back(SipOutput::Close(conn));
            self.rescue_notifies(env, conn);
        }
    }

    /// NOTIFYs in flight on `conn`, which just closed: sent again on a new connection to the
    /// Contact if it was the subscriber's connection; failed if it was one we opened.
    fn rescue_notifies(&mut self, env: &mut Env<'_>, conn: ConnId) {
        for id in self.tx.clients_on(conn) {
            let Some(h) = self.tx.client_mut(id).map(|t| t.handle) else {
                continue;
            };
            let target = self
                .dialogs
                .get(&h)
                .map(|d| contact_addr(&d.target, d.dst.remote().ip()));
            match target {
                Some(to) if !conn.is_host_opened() => {
                    let Some(bytes) = self.tx.client_mut(id).map(|t| t.bytes.clone()) else {
                        continue;
                    };
                    let flow = self.open_and_send(env, to, bytes);
                    if let Some(t) = self.tx.client_mut(id) {
                        t.flow = flow;
                    }
                    if let Some(d) = self.dialogs.get_mut(&h) {
                        d.dst = flow;
                    }
                }
                _ => {
                    self.tx.remove_client(id);
                    self.stats.notify_transport_errors += 1;
                    if let Some(d) = self.dialogs.get_mut(&h) {
                        d.in_flight = None;
                    }
                    self.end_dialog(env, h);
                }
            }
        }
    }

    /// Stream connection `id`'s idle timer fired.
    pub(super) fn conn_timer(&mut self, env: &mut Env<'_>, id: u64) {
        let conn = ConnId(id);
        let idle = self.cfg.conn_idle_timeout;
        let Some(c) = self.conns.open.get_mut(&conn) else {
            return;
        };
        if !c.armed.take_due(env.now) {
            return;
        }
        let due = c.deadline(idle);
        if env.now < due {
            env.timers.arm(due, Timer::SipConn(id), &mut c.armed);
            return;
        }
        self.close(env, conn);
    }

    /// Keeps `flow`'s connection open until at least `until` (a subscription notified over
    /// it), and counts as traffic on it.
    pub(super) fn hold(&mut self, env: &mut Env<'_>, flow: &Flow, until: Millis) {
        if let Flow::Tcp { conn, .. } = flow {
            if let Some(c) = self.conns.open.get_mut(conn) {
                c.last_active = env.now;
                c.hold_until = c.hold_until.max(until);
            }
        }
    }

    /// Queues `payload` on `flow`; returns false (dropping it) if its connection is closed.
    pub(super) fn transmit(&mut self, flow: &Flow, payload: Vec<u8>) -> bool {
        let (socket, dst) = match *flow {
            Flow::Udp(a) => (Socket::SipUdp, a),
            Flow::Tcp { conn, remote } if self.conns.is_open(conn) => {
                (Socket::SipTcp(conn), remote)
            }
            Flow::Tcp { .. } => return false,
        };
        self.out.push_back(SipOutput::Transmit(Transmit {
            socket,
            dst,
            payload,
        }));
        true
    }

    /// Queues `payload` on `flow`, or, when `flow` is a connection that closed, on a new one
    /// to `to`; returns the flow it left on.
    pub(super) fn transmit_or_open(
        &mut self,
        env: &mut Env<'_>,
        flow: Flow,
        payload: Vec<u8>,
        to: SocketAddr,
    ) -> Flow {
        match flow {
            Flow::Tcp { conn, .. } if !self.conns.is_open(conn) => {
                self.open_and_send(env, to, payload)
            }
            _ => {
                self.transmit(&flow, payload);
                flow
            }
        }
    }

    /// A final response to the request of `ctx`, on its flow (§18.2.2).
    pub(super) fn send_response(&mut self, env: &mut Env<'_>, ctx: &super::ReqCtx, bytes: Vec<u8>) {
        let to = response_addr(&ctx.via, ctx.src);
        self.transmit_or_open(env, ctx.flow, bytes, to);
    }

    /// Queues `payload` on the connection we opened to `to`, or asks the driver for one.
    fn open_and_send(&mut self, env: &mut Env<'_>, to: SocketAddr, payload: Vec<u8>) -> Flow {
        if let Some(&conn) = self.conns.outbound.get(&to) {
            let flow = Flow::Tcp { conn, remote: to };
            self.transmit(&flow, payload);
            return flow;
        }
        let conn = self.conns.host_id();
        let idle = self.cfg.conn_idle_timeout;
        self.conns.insert(env, conn, to, idle);
        self.stats.connections_opened += 1;
        self.out.push_back(SipOutput::Transmit(Transmit {
            socket: Socket::SipTcpConnect(conn),
            dst: to,
            payload,
        }));
        Flow::Tcp { conn, remote: to }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_addresses() {
        let fb: IpAddr = "198.51.100.7".parse().unwrap();
        for (uri, want) in [
            ("sip:w@192.0.2.1:5070", "192.0.2.1:5070"),
            ("sip:192.0.2.1", "192.0.2.1:5060"),
            ("sips:w@192.0.2.1", "192.0.2.1:5061"),
            ("sip:w@192.0.2.1:5070;transport=tcp", "192.0.2.1:5070"),
            ("SIP:w@192.0.2.1:7?subject=x", "192.0.2.1:7"),
            ("sip:w@[2001:db8::1]:5080", "[2001:db8::1]:5080"),
            ("sip:w@[2001:db8::1]", "[2001:db8::1]:5060"),
            ("sip:w@host.example:5070", "198.51.100.7:5070"),
            ("sip:w@host.example", "198.51.100.7:5060"),
            ("sip:a@b@192.0.2.9:1", "192.0.2.9:1"),
            ("sip:", "198.51.100.7:5060"),
        ] {
            assert_eq!(contact_addr(uri, fb), want.parse().unwrap(), "{uri}");
        }
    }

    #[test]
    fn responses_to_closed_connections_use_the_via_port() {
        let src: SocketAddr = "192.0.2.4:40000".parse().unwrap();
        let via = |v| Via::parse(v).unwrap();
        let at = |v| response_addr(&via(v), src);
        assert_eq!(
            at("SIP/2.0/TCP ua.example:5070"),
            "192.0.2.4:5070".parse().unwrap()
        );
        assert_eq!(
            at("SIP/2.0/TCP ua.example"),
            "192.0.2.4:5060".parse().unwrap()
        );
        assert_eq!(
            at("SIP/2.0/TCP [::1]:5071"),
            "192.0.2.4:5071".parse().unwrap()
        );
    }
}
