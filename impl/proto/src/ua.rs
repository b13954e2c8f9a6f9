//! # A SIP user agent, sans-IO: the client side of PUBLISH and SUBSCRIBE
//!
//! [`UserAgent`] plays what SIPp, baresip or linphone play against a presence server, so that
//! the simulator, the conformance harness and tests can drive a [`crate::Host`] with real SIP
//! text and judge what a user agent actually receives:
//!
//! * PUBLISH (RFC 3903) with `SIP-If-Match`, and SUBSCRIBE dialogs (RFC 6665): initial,
//!   refresh, un-SUBSCRIBE (`Expires: 0`);
//! * RFC 3261 §17.1.2 non-INVITE client transactions over UDP: retransmission on Timer E
//!   (T1 doubling to T2; T2 after a provisional response), give-up on Timer F;
//! * NOTIFYs matched to their dialog and answered 200 (or, for fault tests, not at all or
//!   with another code), with the dialog's remote tag and target learnt from them (a NOTIFY
//!   is a target refresh request: in-dialog requests go to its `Contact`);
//! * digest authentication ([`UserAgent::set_credentials`]): a 401 or 407 is answered by
//!   sending the request again with credentials (new branch, next CSeq), and later requests
//!   carry credentials for the last challenge with increasing nonce counts, as real clients
//!   do. A request is re-sent at most once per challenge, more only after `stale=true`.
//!
//! Like the host, it reads no clock and owns no socket: feed it datagrams and `now`, drain its
//! transmits and [`UaEvent`]s, and call [`UserAgent::handle_timeout`] at
//! [`UserAgent::poll_timeout`].

use crate::io::{Socket, Transmit};
use crate::rng::SplitMix64;
use crate::sip::auth::ClientAuth;
use crate::sip::dialog::SEQ_HEADER;
use crate::sip::headers::{delta_seconds, CSeq, NameAddr, SubscriptionState, Via};
use crate::sip::message::{parse, Headers, Message, Method, Request, Response};
use crate::sip::transaction::{T1, T2, TIMER_F};
use crate::Millis;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;

/// How the agent answers NOTIFYs (fault injection for tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotifyAnswer {
    /// 200 OK (a well-behaved subscriber).
    Ok,
    /// No answer at all (the NOTIFY is lost, or the subscriber is gone).
    Silent,
    /// This final status code.
    Code(u16),
}

/// What the agent observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UaEvent {
    /// A final response to request `req`.
    Response {
        /// The request.
        req: u64,
        /// Its method.
        method: Method,
        /// Status code.
        code: u16,
        /// `SIP-ETag` (a PUBLISH's new entity tag).
        etag: Option<String>,
        /// `Expires` granted.
        expires: Option<u32>,
        /// `Min-Expires` (with 423).
        min_expires: Option<u32>,
        /// The group sequence number the server reports ([`SEQ_HEADER`], on a PUBLISH's 200).
        seq: Option<u64>,
        /// The subscription the request belongs to.
        sub: Option<u64>,
    },
    /// A provisional response (1xx) to request `req`, still waiting for its final one: the
    /// request is retransmitted at T2 from then on.
    Provisional {
        /// The request.
        req: u64,
        /// Its method.
        method: Method,
        /// Status code.
        code: u16,
    },
    /// Timer F fired: request `req` got no final response.
    Timeout {
        /// The request.
        req: u64,
        /// Its method.
        method: Method,
        /// The subscription the request belongs to.
        sub: Option<u64>,
    },
    /// A NOTIFY in subscription `sub`.
    Notify {
        /// The subscription.
        sub: u64,
        /// `Subscription-State: terminated`.
        terminated: bool,
        /// Its `reason` (`timeout`, `deactivated`, …), if any.
        reason: Option<String>,
        /// `expires` of an active subscription.
        expires: Option<u32>,
        /// The group sequence number the server stamped ([`SEQ_HEADER`]).
        seq: Option<u64>,
        /// `Content-Type`, if there is a body.
        content_type: Option<String>,
        /// The body.
        body: Bytes,
    },
}

/// A request waiting for its final response.
#[derive(Debug)]
struct Pending {
    method: Method,
    call_id: String,
    sub: Option<u64>,
    dst: SocketAddr,
    bytes: Vec<u8>,
    next: Millis,
    interval: Millis,
    deadline: Millis,
    /// What the request is made of, to send it again with credentials.
    request: Request,
    /// Times it was sent again after a challenge.
    challenged: u32,
}

/// A subscription as the subscriber sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// The server the dialog talks to (where in-dialog requests go).
    pub server: SocketAddr,
    /// The resource subscribed to.
    pub uri: String,
    /// The `Event` header value.
    pub event: String,
    /// Call-ID.
    pub call_id: String,
    /// Our tag.
    pub local_tag: String,
    /// The notifier's tag, once learnt (from the 200 or a NOTIFY).
    pub remote_tag: Option<String>,
    /// Our last CSeq.
    pub cseq: u32,
    /// Established (a 2xx or a NOTIFY arrived) and not terminated.
    pub active: bool,
    /// Ended (terminated NOTIFY, or the initial SUBSCRIBE failed).
    pub terminated: bool,
    /// Highest CSeq of the notifier's requests (NOTIFY retransmissions are answered, not
    /// reported again).
    pub remote_cseq: Option<u32>,
}

/// A SIP user agent. See the [module docs](self).
#[derive(Debug)]
pub struct UserAgent {
    addr: SocketAddr,
    aor: String,
    rng: SplitMix64,
    pending: BTreeMap<u64, Pending>,
    branches: HashMap<String, u64>,
    subs: BTreeMap<u64, Subscription>,
    out: VecDeque<Transmit>,
    events: VecDeque<UaEvent>,
    next_id: u64,
    /// How NOTIFYs are answered.
    pub notify_answer: NotifyAnswer,
    /// Whether unanswered requests are retransmitted (Timer E); off for a driver that
    /// retransmits by hand ([`UserAgent::retransmit`]).
    pub retransmissions: bool,
    auth: Option<ClientAuth>,
}

impl UserAgent {
    /// An agent at `addr` (its Via and Contact), identifying itself as `aor` in `From`.
    pub fn new(addr: SocketAddr, aor: &str, seed: u64) -> UserAgent {
        UserAgent {
            addr,
            aor: aor.to_string(),
            rng: SplitMix64::new(seed ^ 0x0a6e_0a6e_0a6e_0a6e),
            pending: BTreeMap::new(),
            branches: HashMap::new(),
            subs: BTreeMap::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            next_id: 1,
            notify_answer: NotifyAnswer::Ok,
            retransmissions: true,
            auth: None,
        }
    }

    /// Answers digest challenges as `user` with `password` from now on.
    pub fn set_credentials(&mut self, user: &str, password: &str) {
        self.auth = Some(ClientAuth::new(user, password));
    }

    /// The agent's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Subscription `sub`.
    pub fn subscription(&self, sub: u64) -> Option<&Subscription> {
        self.subs.get(&sub)
    }

    /// Whether request `req` still waits for its final response.
    pub fn is_pending(&self, req: u64) -> bool {
        self.pending.contains_key(&req)
    }

    /// The Call-ID of pending request `req`.
    pub fn call_id(&self, req: u64) -> Option<&str> {
        self.pending.get(&req).map(|p| p.call_id.as_str())
    }

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn token(&mut self) -> String {
        format!("{:012x}", self.rng.next_u64() & 0xffff_ffff_ffff)
    }

    /// Sends a PUBLISH for `uri` to `server`: `body` is `(Content-Type, bytes)` (none for a
    /// refresh or removal), `if_match` the `SIP-If-Match`, `expires` the `Expires` header.
    /// Returns the request id its [`UaEvent::Response`] carries.
    #[allow(clippy::too_many_arguments)]
    pub fn publish(
        &mut self,
        now: Millis,
        server: SocketAddr,
        uri: &str,
        event: &str,
        body: Option<(&str, Bytes)>,
        if_match: Option<&str>,
        expires: Option<u32>,
    ) -> u64 {
        let call_id = format!("pub-{}@{}", self.token(), self.addr.ip());
        let tag = self.token();
        let mut h = Headers::default();
        h.push("To", format!("<{uri}>"));
        h.push("From", format!("<{}>;tag={tag}", self.aor));
        h.push("Call-ID", call_id);
        h.push("CSeq", "1 PUBLISH");
        h.push("Event", event);
        if let Some(e) = if_match {
            h.push("SIP-If-Match", e);
        }
        if let Some(e) = expires {
            h.push("Expires", e.to_string());
        }
        let (ct, body) = match body {
            Some((ct, b)) => (Some(ct), b),
            None => (None, Bytes::new()),
        };
        if let Some(ct) = ct {
            h.push("Content-Type", ct);
        }
        self.send_request(now, server, Method::Publish, uri, h, body, None)
    }

    /// Starts a subscription to `uri` at `server` with `Expires: expires` (0 is a fetch).
    /// Returns `(subscription, request)`.
    pub fn subscribe(
        &mut self,
        now: Millis,
        server: SocketAddr,
        uri: &str,
        event: &str,
        expires: u32,
    ) -> (u64, u64) {
        let sub = self.id();
        let s = Subscription {
            server,
            uri: uri.to_string(),
            event: event.to_string(),
            call_id: format!("sub-{}@{}", self.token(), self.addr.ip()),
            local_tag: self.token(),
            remote_tag: None,
            cseq: 0,
            active: false,
            terminated: false,
            remote_cseq: None,
        };
        self.subs.insert(sub, s);
        let req = self.in_dialog(now, sub, expires).expect("just created");
        (sub, req)
    }

    /// Refreshes subscription `sub` (`Expires: 0` ends it); `None` if it is unknown or over.
    pub fn resubscribe(&mut self, now: Millis, sub: u64, expires: u32) -> Option<u64> {
        if self.subs.get(&sub)?.terminated {
            return None;
        }
        self.in_dialog(now, sub, expires)
    }

    fn in_dialog(&mut self, now: Millis, sub: u64, expires: u32) -> Option<u64> {
        let s = self.subs.get_mut(&sub)?;
        s.cseq += 1;
        let mut h = Headers::default();
        let to_tag = s
            .remote_tag
            .as_ref()
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        h.push("To", format!("<{}>{to_tag}", s.uri));
        h.push("From", format!("<{}>;tag={}", self.aor, s.local_tag));
        h.push("Call-ID", s.call_id.clone());
        h.push("CSeq", format!("{} SUBSCRIBE", s.cseq));
        h.push("Event", s.event.clone());
        h.push("Expires", expires.to_string());
        h.push("Accept", "application/pidf+xml");
        let (server, uri) = (s.server, s.uri.clone());
        Some(self.send_request(
            now,
            server,
            Method::Subscribe,
            &uri,
            h,
            Bytes::new(),
            Some(sub),
        ))
    }

    /// Sends request `req` again now, byte for byte (a retransmission the driver decides).
    /// Returns whether it is still pending.
    pub fn retransmit(&mut self, req: u64) -> bool {
        let Some(p) = self.pending.get(&req) else {
            return false;
        };
        let t = Transmit {
            socket: Socket::SipUdp,
            dst: p.dst,
            payload: p.bytes.clone(),
        };
        self.out.push_back(t);
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn send_request(
        &mut self,
        now: Millis,
        dst: SocketAddr,
        method: Method,
        uri: &str,
        extra: Headers,
        body: Bytes,
        sub: Option<u64>,
    ) -> u64 {
        let id = self.id();
        let call_id = extra.get("Call-ID").unwrap_or("").to_string();
        let request = Request {
            method: method.clone(),
            uri: uri.to_string(),
            headers: extra,
            body,
        };
        let (branch, bytes) = self.wire(&request);
        self.out.push_back(Transmit {
            socket: Socket::SipUdp,
            dst,
            payload: bytes.clone(),
        });
        self.branches.insert(branch, id);
        self.pending.insert(
            id,
            Pending {
                method,
                call_id,
                sub,
                dst,
                bytes,
                next: now + T1,
                interval: T1,
                deadline: now + TIMER_F,
                request,
                challenged: 0,
            },
        );
        id
    }

    /// The datagram of `r` with a new branch (and credentials, after a challenge).
    fn wire(&mut self, r: &Request) -> (String, Vec<u8>) {
        let branch = format!("z9hG4bK{}", self.token());
        let mut h = Headers::default();
        h.push(
            "Via",
            format!("SIP/2.0/UDP {};branch={branch};rport", self.addr),
        );
        h.push("Max-Forwards", "70");
        for (n, v) in r.headers.iter() {
            h.push(n, v);
        }
        h.push("Contact", format!("<sip:ua@{}>", self.addr));
        let cnonce = self.token();
        if let Some((name, value)) = self
            .auth
            .as_mut()
            .and_then(|a| a.header(r.method.as_str(), &r.uri, &cnonce))
        {
            h.push(name, value);
        }
        let bytes = Request {
            method: r.method.clone(),
            uri: r.uri.clone(),
            headers: h,
            body: r.body.clone(),
        }
        .to_bytes();
        (branch, bytes)
    }

    /// A 401/407 to pending request `id`: sends it again with credentials (next CSeq, new
    /// branch) when there are credentials and the challenge is new or stale. Returns whether
    /// it did (the challenge is then not reported).
    fn answer_challenge(&mut self, now: Millis, id: u64, r: &Response) -> bool {
        let Some(stale) = self
            .auth
            .as_mut()
            .and_then(|a| a.on_challenge(r.code, &r.headers))
        else {
            return false;
        };
        let Some(p) = self.pending.get(&id) else {
            return false;
        };
        if p.challenged >= 3 || (p.challenged >= 1 && !stale) {
            return false;
        }
        let mut request = p.request.clone();
        let old = request
            .headers
            .get("CSeq")
            .and_then(|c| CSeq::parse(c).ok())
            .map_or(0, |c| c.seq);
        let mut seq = old + 1;
        if let Some(s) = p.sub.and_then(|s| self.subs.get_mut(&s)) {
            s.cseq = s.cseq.max(old) + 1;
            seq = s.cseq;
        }
        let mut h = Headers::default();
        for (n, v) in request.headers.iter() {
            if n.eq_ignore_ascii_case("CSeq") {
                h.push(n, format!("{seq} {}", request.method));
            } else {
                h.push(n, v);
            }
        }
        request.headers = h;
        let (branch, bytes) = self.wire(&request);
        self.branches.retain(|_, &mut v| v != id);
        self.branches.insert(branch, id);
        let Some(p) = self.pending.get_mut(&id) else {
            return false;
        };
        p.challenged += 1;
        p.request = request;
        p.bytes = bytes.clone();
        p.interval = T1;
        p.next = now + T1;
        p.deadline = now + TIMER_F;
        let dst = p.dst;
        self.out.push_back(Transmit {
            socket: Socket::SipUdp,
            dst,
            payload: bytes,
        });
        true
    }

    /// A datagram arrived from `from`. Anything unparsable is ignored.
    pub fn handle_datagram(&mut self, now: Millis, from: SocketAddr, bytes: &[u8]) {
        match parse(bytes) {
            Ok(Message::Response(r)) => self.on_response(now, r),
            Ok(Message::Request(r)) if r.method == Method::Notify => self.on_notify(from, r),
            Ok(Message::Request(r)) => {
                if r.method != Method::Ack {
                    self.answer(from, &r, 501);
                }
            }
            Err(_) => {}
        }
    }

    fn on_response(&mut self, now: Millis, r: Response) {
        let branch = r
            .headers
            .get("Via")
            .and_then(|v| Via::parse(v).ok())
            .and_then(|v| v.branch);
        let Some(&id) = branch.as_ref().and_then(|b| self.branches.get(b)) else {
            return;
        };
        if r.code < 200 {
            if let Some(p) = self.pending.get_mut(&id) {
                p.interval = T2;
                p.next = now + T2;
                self.events.push_back(UaEvent::Provisional {
                    req: id,
                    method: p.method.clone(),
                    code: r.code,
                });
            }
            return;
        }
        if matches!(r.code, 401 | 407) && self.answer_challenge(now, id, &r) {
            return;
        }
        let Some(p) = self.pending.remove(&id) else {
            return; // a retransmitted final response
        };
        let num = |name: &str| r.headers.get(name).and_then(delta_seconds);
        if let (Method::Subscribe, Some(sub)) = (&p.method, p.sub) {
            if let Some(s) = self.subs.get_mut(&sub) {
                if (200..300).contains(&r.code) {
                    if s.remote_tag.is_none() {
                        s.remote_tag = r
                            .headers
                            .get("To")
                            .and_then(|t| NameAddr::parse(t).ok())
                            .and_then(|n| n.tag);
                    }
                    s.active = num("Expires") != Some(0);
                    s.terminated |= !s.active;
                } else if !s.active {
                    s.terminated = true;
                }
            }
        }
        self.events.push_back(UaEvent::Response {
            req: id,
            method: p.method,
            code: r.code,
            etag: r.headers.get("SIP-ETag").map(|e| e.trim().to_string()),
            expires: num("Expires"),
            min_expires: num("Min-Expires"),
            seq: r
                .headers
                .get(SEQ_HEADER)
                .and_then(|v| v.trim().parse().ok()),
            sub: p.sub,
        });
    }

    fn on_notify(&mut self, from: SocketAddr, r: Request) {
        let call_id = r.headers.get("Call-ID").unwrap_or("");
        let to_tag = r
            .headers
            .get("To")
            .and_then(|t| NameAddr::parse(t).ok())
            .and_then(|n| n.tag);
        let found = self
            .subs
            .iter_mut()
            .find(|(_, s)| s.call_id == call_id && to_tag.as_deref() == Some(s.local_tag.as_str()));
        let Some((&sub, s)) = found else {
            self.answer(from, &r, 481);
            return;
        };
        let cseq = r
            .headers
            .get("CSeq")
            .and_then(|c| CSeq::parse(c).ok())
            .map(|c| c.seq);
        if cseq.is_some() && cseq <= s.remote_cseq {
            // A retransmission (or a late, reordered NOTIFY): answer it, report nothing.
            if self.notify_answer != NotifyAnswer::Silent {
                let code = match self.notify_answer {
                    NotifyAnswer::Code(c) => c,
                    _ => 200,
                };
                self.answer(from, &r, code);
            }
            return;
        }
        s.remote_cseq = cseq;
        let remote = r
            .headers
            .get("From")
            .and_then(|f| NameAddr::parse(f).ok())
            .and_then(|n| n.tag);
        if s.remote_tag.is_none() {
            s.remote_tag = remote;
        }
        // NOTIFY is a target refresh request (RFC 6665): later in-dialog requests go to
        // its Contact (a dialog handed to another peer moves there).
        if let Some(c) = r
            .headers
            .get("Contact")
            .and_then(|c| NameAddr::parse(c).ok())
        {
            s.server = crate::sip::conn::contact_addr(&c.uri, from.ip());
        }
        let state = r
            .headers
            .get("Subscription-State")
            .and_then(|v| SubscriptionState::parse(v).ok());
        let (terminated, expires, reason) = match state {
            Some(SubscriptionState::Terminated { reason }) => (true, None, reason),
            Some(SubscriptionState::Active { expires }) => (false, Some(expires), None),
            _ => (false, None, None),
        };
        if terminated {
            s.active = false;
            s.terminated = true;
        } else if !s.terminated {
            s.active = true;
        }
        match self.notify_answer {
            NotifyAnswer::Ok => self.answer(from, &r, 200),
            NotifyAnswer::Code(c) => self.answer(from, &r, c),
            NotifyAnswer::Silent => {}
        }
        self.events.push_back(UaEvent::Notify {
            sub,
            terminated,
            reason,
            expires,
            seq: r
                .headers
                .get(SEQ_HEADER)
                .and_then(|v| v.trim().parse().ok()),
            content_type: (!r.body.is_empty())
                .then(|| r.headers.get("Content-Type").map(str::to_string))
                .flatten(),
            body: r.body,
        });
    }

    /// Answers request `r` statelessly with `code`.
    fn answer(&mut self, to: SocketAddr, r: &Request, code: u16) {
        let mut h = Headers::default();
        for v in r.headers.all("Via") {
            h.push("Via", v);
        }
        for n in ["From", "To", "Call-ID", "CSeq"] {
            if let Some(v) = r.headers.get(n) {
                h.push(n, v);
            }
        }
        let resp = Response {
            code,
            reason: crate::sip::message::reason_phrase(code).to_string(),
            headers: h,
            body: Bytes::new(),
        };
        let valid = r
            .headers
            .get("CSeq")
            .is_some_and(|c| CSeq::parse(c).is_ok());
        if valid {
            self.out.push_back(Transmit {
                socket: Socket::SipUdp,
                dst: to,
                payload: resp.to_bytes(),
            });
        }
    }

    /// Time passed: retransmissions (Timer E) and give-ups (Timer F).
    pub fn handle_timeout(&mut self, now: Millis) {
        let mut failed = Vec::new();
        for (&id, p) in self.pending.iter_mut() {
            if now >= p.deadline {
                failed.push(id);
            } else if self.retransmissions && now >= p.next {
                p.interval = (p.interval * 2).min(T2);
                p.next = now + p.interval;
                self.out.push_back(Transmit {
                    socket: Socket::SipUdp,
                    dst: p.dst,
                    payload: p.bytes.clone(),
                });
            }
        }
        for id in failed {
            if let Some(p) = self.pending.remove(&id) {
                if let Some(s) = p.sub.and_then(|s| self.subs.get_mut(&s)) {
                    if !s.active {
                        s.terminated = true;
                    }
                }
                self.events.push_back(UaEvent::Timeout {
                    req: id,
                    method: p.method,
                    sub: p.sub,
                });
            }
        }
    }

    /// When [`UserAgent::handle_timeout`] must run next (`None`: nothing pending). An agent
    /// keeps few requests in flight, so this looks at each.
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.pending
            .values()
            .map(|p| {
                if self.retransmissions {
                    p.next.min(p.deadline)
                } else {
                    p.deadline
                }
            })
            .min()
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// Next observation.
    pub fn poll_event(&mut self) -> Option<UaEvent> {
        self.events.pop_front()
    }
}
