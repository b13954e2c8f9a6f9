//! # SIP front end: a presence/event server backed by the sa-Scribe overlay
//!
//! [`SipEndpoint`] speaks SIP over UDP to ordinary user agents (SIPp, sipsak, baresip) and turns
//! their requests into calls on a local [`Peer`] — the "modified SIP stack" of the paper's
//! Fig. 6. To a UA it is indistinguishable from a central event state compositor (RFC 3903)
//! and notifier (RFC 6665); behind it, the overlay root for each group decides.
//!
//! ## Flows (paper Fig. 4 and 5)
//! * **PUBLISH** (RFC 3903 §6): Event checked (489 + `Allow-Events` when missing or not
//!   served), `Expires` checked (423 + `Min-Expires`), `SIP-If-Match` read, body type checked
//!   (415), then `Peer::publish`. The root's answer becomes 200 with the `SIP-ETag` and
//!   `Expires` it chose, or 412 (stale/unknown entity tag), 423, 400, 413, 504 (no answer).
//! * **SUBSCRIBE** (RFC 6665 §4.2.1): an initial SUBSCRIBE creates a dialog (our To tag,
//!   `Contact`, route set from `Record-Route`) and calls `Peer::subscribe`. The root's ACK
//!   becomes 200 + an immediate NOTIFY with the latest state and
//!   `Subscription-State: active;expires=N`. In-dialog SUBSCRIBEs refresh (200 + NOTIFY with
//!   the current state) or, with `Expires: 0`, end the subscription (200 + final NOTIFY
//!   `terminated;reason=timeout`). An initial `Expires: 0` is a fetch (§4.4.3): 200 + one
//!   terminated NOTIFY. Every publication the core reports reaches the subscriber as exactly
//!   one NOTIFY, in seq order; one NOTIFY is in flight per dialog, the next waits for its
//!   final response (this keeps order over UDP).
//! * **NOTIFY** client transactions retransmit on Timer E and give up on Timer F; a timeout, a
//!   481 or a 408 ends the subscription (`Peer::unsubscribe`; RFC 6665 §4.2.2, RFC 5057).
//! * Core expiry (`SubTerminated`) becomes a final NOTIFY `terminated;reason=timeout`.
//!
//! ## The nACK mapping: 480 Temporarily Unavailable
//! RFC 6665 lets a presence server accept a subscription to a resource with no state and send
//! a NOTIFY with a neutral body (or `pending`). This core, however, forgets the subscriber on a
//! nACK (the JOIN is undone): answering 200 would promise NOTIFYs that never come. So we
//! follow the paper (nACK ↦ a final 3xx–6xx) and answer **480 Temporarily Unavailable**: the
//! presentity exists as far as we know but has published nothing yet — not 404, which would
//! claim the resource does not exist, while a PUBLISH may create it any time. A UA that gets
//! 480 retries later, which is what a watcher of an offline presentity should do. An overlay
//! timeout becomes 504 Server Time-out.
//!
//! ## Other requests
//! Processing follows RFC 3261 §8.2: malformed requests get 400 with a reason phrase naming
//! the problem (missing Via/From/To/Call-ID/CSeq, bad CSeq, CSeq method mismatch,
//! Content-Length exceeding the datagram, …) — or are dropped when nothing can address a
//! reply; other SIP versions get 505; methods not served get 405 with `Allow`, unknown
//! methods 501; `Require` with any option tag 420; OPTIONS 200 with `Allow`, `Accept` and
//! `Allow-Events`; in-dialog requests for no dialog 481; datagrams over
//! [`SipConfig::max_message`] 513. Responses that match no transaction are ignored. A SIPp
//! (or any) UA may address any peer with any Request-URI: the group id is
//! `GroupId::from_event(Request-URI, package, id)`, independent of the receiving peer.
//!
//! ## Addressing
//! Responses go to the source address of the request (symmetric response routing, RFC 3581;
//! `received`/`rport` are filled in the top `Via` when asked for). NOTIFYs are sent to the
//! address the subscriber's last SUBSCRIBE came from (its flow), with the Contact URI as
//! Request-URI and the route set as `Route` headers: the front end does no DNS.
//!
//! ## Driving
//! The same verbs as [`Peer`]: feed [`SipEndpoint::handle_datagram`],
//! [`SipEndpoint::handle_peer_event`] (every event drained from the peer) and
//! [`SipEndpoint::handle_timeout`]; after each, drain the peer's outputs, then
//! [`SipEndpoint::poll_transmit`], and read [`SipEndpoint::poll_timeout`] last.

pub mod dialog;
pub mod headers;
pub mod message;
mod publish;
mod subscribe;
pub mod transaction;

use crate::event::{Event, PubHandle, SubHandle};
use crate::io::Transmit;
use crate::peer::Peer;
use crate::rng::SplitMix64;
use crate::Millis;
use dialog::{Dialog, DialogId, Phase, Queued};
use headers::{CSeq, NameAddr, Via};
use message::{reason_phrase, Headers, Message, Method, Request, Response};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use transaction::{ClientTx, ServerState, ServerTx, TxKey, TIMER_J};

/// Methods served (the `Allow` header).
pub const ALLOW: &str = "PUBLISH, SUBSCRIBE, OPTIONS";

/// Configuration of a [`SipEndpoint`].
#[derive(Clone, Debug)]
pub struct SipConfig {
    /// The endpoint's own SIP address (for `Via` and `Contact`).
    pub local: SocketAddr,
    /// Event packages served (lowercase). `presence` bodies must be `application/pidf+xml`;
    /// other packages take any body type.
    pub event_packages: Vec<String>,
    /// Minimum `Expires` of PUBLISH and SUBSCRIBE (seconds); shorter ones get 423. The
    /// overlay's own minimum applies too (the larger wins).
    pub min_expires: u32,
    /// Maximum `Expires` (seconds); longer requests are shortened.
    pub max_expires: u32,
    /// `Expires` used when a request gives none (RFC 3856 §6.4: 3600 for presence).
    pub default_expires: u32,
    /// Datagrams longer than this are answered 513 (or dropped if unreadable).
    pub max_message: usize,
    /// Bound on concurrent server transactions and dialogs; beyond it new requests get 503.
    pub max_transactions: usize,
}

impl SipConfig {
    /// Defaults: `presence` only, expiry 60 s … 3600 s, 3600 s by default, 64 KiB messages.
    pub fn new(local: SocketAddr) -> SipConfig {
        SipConfig {
            local,
            event_packages: vec!["presence".into()],
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_message: 65_507,
            max_transactions: 100_000,
        }
    }
}

/// Counters of a [`SipEndpoint`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SipStats {
    /// Datagrams received.
    pub rx: u64,
    /// Malformed datagrams (answered 400/505 or dropped).
    pub rx_malformed: u64,
    /// Oversized datagrams.
    pub rx_oversized: u64,
    /// Request retransmissions absorbed by a server transaction.
    pub retransmissions_absorbed: u64,
    /// Responses that matched no client transaction.
    pub stray_responses: u64,
    /// NOTIFY retransmissions sent.
    pub notify_retransmissions: u64,
    /// NOTIFY transactions that timed out.
    pub notify_timeouts: u64,
}

/// What a validated request says about itself (RFC 3261 §8.1.1 mandatory headers).
#[derive(Clone, Debug)]
pub struct ReqCtx {
    /// Source address.
    pub src: SocketAddr,
    /// Via values as received (top first), the top one with `received`/`rport` filled.
    pub vias: Vec<String>,
    /// Top Via.
    pub via: Via,
    /// From header value.
    pub from: String,
    /// Parsed From.
    pub from_na: NameAddr,
    /// To header value.
    pub to: String,
    /// Parsed To.
    pub to_na: NameAddr,
    /// Call-ID.
    pub call_id: String,
    /// CSeq value as received.
    pub cseq_raw: String,
    /// Parsed CSeq.
    pub cseq: CSeq,
    /// Tag for our To header (set for dialog-creating responses; otherwise random).
    pub to_tag: Option<String>,
}

/// The SIP front end of one peer. See the [module docs](self).
#[derive(Debug)]
pub struct SipEndpoint {
    cfg: SipConfig,
    rng: SplitMix64,
    out: VecDeque<Transmit>,
    stats: SipStats,
    server: HashMap<TxKey, ServerTx<ReqCtx>>,
    client: HashMap<String, ClientTx>,
    pubs: HashMap<PubHandle, TxKey>,
    dialogs: HashMap<SubHandle, Dialog>,
    dialog_ids: HashMap<DialogId, SubHandle>,
    next_handle: u64,
}

impl SipEndpoint {
    /// A front end with configuration `cfg`; `seed` seeds tags and branches.
    pub fn new(cfg: SipConfig, seed: u64) -> SipEndpoint {
        SipEndpoint {
            cfg,
            rng: SplitMix64::new(seed ^ 0x5119_5119_5119_5119),
            out: VecDeque::new(),
            stats: SipStats::default(),
            server: HashMap::new(),
            client: HashMap::new(),
            pubs: HashMap::new(),
            dialogs: HashMap::new(),
            dialog_ids: HashMap::new(),
            next_handle: 1,
        }
    }

    /// Configuration.
    pub fn config(&self) -> &SipConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> &SipStats {
        &self.stats
    }

    /// Number of subscription dialogs (any phase).
    pub fn dialog_count(&self) -> usize {
        self.dialogs.len()
    }

    /// A SIP datagram arrived from `from`.
    pub fn handle_datagram(
        &mut self,
        now: Millis,
        from: SocketAddr,
        bytes: &[u8],
        peer: &mut Peer,
    ) {
        self.stats.rx += 1;
        let parsed = message::parse(bytes);
        if bytes.len() > self.cfg.max_message {
            self.stats.rx_oversized += 1;
            let (hs, is_req) = match &parsed {
                Ok(Message::Request(r)) => (r.headers.clone(), r.method != Method::Ack),
                Ok(Message::Response(_)) => (Headers::default(), false),
                Err(e) => (
                    e.headers.clone(),
                    e.code != 0 && e.method != Some(Method::Ack),
                ),
            };
            if is_req {
                self.stateless(from, &hs, 513, "Message Too Large");
            }
            return;
        }
        match parsed {
            Ok(Message::Request(r)) => self.on_request(now, from, r, peer),
            Ok(Message::Response(r)) => self.on_response(now, r, peer),
            Err(e) => {
                self.stats.rx_malformed += 1;
                if e.code != 0 && e.method != Some(Method::Ack) {
                    let reason = if e.code == 505 {
                        reason_phrase(505).to_string()
                    } else {
                        format!("Bad Request - {}", e.reason)
                    };
                    self.stateless(from, &e.headers, e.code, &reason);
                }
            }
        }
    }

    /// An upcall drained from the local peer.
    pub fn handle_peer_event(&mut self, now: Millis, event: Event, peer: &mut Peer) {
        match event {
            Event::Published {
                req, etag, expires, ..
            } => {
                let mut h = Headers::default();
                if let Some(e) = etag {
                    h.push("SIP-ETag", e.to_string());
                }
                h.push("Expires", expires.to_string());
                self.finish_pub(now, req, 200, h);
            }
            Event::PublishFailed { req, reason } => {
                let (code, h) = publish::failure(reason);
                self.finish_pub(now, req, code, h);
            }
            Event::SubProvisional { handle } => {
                if let Some(Phase::Establishing { tx }) =
                    self.dialogs.get(&handle).map(|d| &d.phase)
                {
                    let tx = tx.clone();
                    self.send_trying(&tx);
                }
            }
            Event::SubAccepted { handle, expires } => self.sub_accepted(now, handle, expires, peer),
            Event::SubRejected { handle, reason } => self.sub_rejected(now, handle, reason),
            Event::Notify {
                handle, seq, state, ..
            } => self.sub_notify(now, handle, seq, state, peer),
            Event::SubTerminated { handle, .. } => {
                if let Some(d) = self.dialogs.get_mut(&handle) {
                    let body = d.last.as_ref().and_then(|(_, b)| b.clone());
                    d.enqueue(Queued {
                        body,
                        terminated: Some("timeout"),
                    });
                    self.pump(now, handle);
                }
            }
            Event::Joined | Event::LookupDelivered { .. } => {}
        }
    }

    /// Time passed: 100 Trying, Timer J, Timers E and F.
    pub fn handle_timeout(&mut self, now: Millis, peer: &mut Peer) {
        let due: Vec<TxKey> = self
            .server
            .iter()
            .filter(|(_, t)| t.deadline() <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            let trying = matches!(
                self.server.get(&k).map(|t| &t.state),
                Some(ServerState::Proceeding { trying: None, .. })
            );
            if trying {
                self.send_trying(&k);
            } else {
                self.server.remove(&k);
            }
        }
        let due: Vec<String> = self
            .client
            .iter()
            .filter(|(_, t)| t.wakeup() <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for b in due {
            let Some(t) = self.client.get_mut(&b) else {
                continue;
            };
            if t.deadline <= now {
                let h = t.handle;
                self.client.remove(&b);
                self.stats.notify_timeouts += 1;
                self.end_dialog(now, h, peer);
            } else {
                t.backoff(now);
                let tx = Transmit {
                    dst: t.dst,
                    payload: t.bytes.clone(),
                };
                self.stats.notify_retransmissions += 1;
                self.out.push_back(tx);
            }
        }
    }

    /// Next datagram to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// When [`SipEndpoint::handle_timeout`] must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Millis> {
        let s = self.server.values().map(|t| t.deadline()).min();
        let c = self.client.values().map(|t| t.wakeup()).min();
        match (s, c) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ----- requests -----

    fn on_request(&mut self, now: Millis, src: SocketAddr, req: Request, peer: &mut Peer) {
        let ctx = match self.validate(src, &req) {
            Ok(c) => c,
            Err(reason) => {
                self.stats.rx_malformed += 1;
                if req.method != Method::Ack {
                    self.stateless(src, &req.headers, 400, &format!("Bad Request - {reason}"));
                }
                return;
            }
        };
        if req.method == Method::Ack {
            return; // no INVITE transactions here
        }
        let key = TxKey::new(
            &ctx.via,
            req.method.as_str(),
            &ctx.call_id,
            &ctx.cseq,
            ctx.from_na.tag.as_deref().unwrap_or(""),
        );
        if let Some(tx) = self.server.get_mut(&key) {
            self.stats.retransmissions_absorbed += 1;
            match &tx.state {
                ServerState::Completed { response, .. } => {
                    let t = Transmit {
                        dst: src,
                        payload: response.clone(),
                    };
                    self.out.push_back(t);
                }
                ServerState::Proceeding {
                    trying: Some(t), ..
                } => {
                    let t = Transmit {
                        dst: src,
                        payload: t.clone(),
                    };
                    self.out.push_back(t);
                }
                ServerState::Proceeding { trying: None, .. } => self.send_trying(&key),
            }
            return;
        }
        if self.server.len() >= self.cfg.max_transactions {
            let mut h = Headers::default();
            h.push("Retry-After", "5");
            self.reply(now, key, ctx, 503, reason_phrase(503), h, None);
            return;
        }
        match &req.method {
            Method::Publish => self.on_publish(now, key, ctx, &req, peer),
            Method::Subscribe => self.on_subscribe(now, key, ctx, &req, peer),
            Method::Options => {
                let mut h = Headers::default();
                h.push("Allow", ALLOW);
                h.push("Accept", "application/pidf+xml");
                h.push("Allow-Events", self.cfg.event_packages.join(", "));
                self.reply(now, key, ctx, 200, "OK", h, None);
            }
            Method::Cancel => {
                // Non-INVITE transactions are not affected by CANCEL (RFC 3261 §9.2).
                let target = ["PUBLISH", "SUBSCRIBE", "OPTIONS"]
                    .iter()
                    .any(|m| self.server.contains_key(&key.with_method(m)));
                let code = if target { 200 } else { 481 };
                self.reply(
                    now,
                    key,
                    ctx,
                    code,
                    reason_phrase(code),
                    Headers::default(),
                    None,
                );
            }
            Method::Ack => {}
            Method::Notify | Method::Known(_) => {
                let mut h = Headers::default();
                h.push("Allow", ALLOW);
                self.reply(now, key, ctx, 405, reason_phrase(405), h, None);
            }
            Method::Extension(_) => {
                let mut h = Headers::default();
                h.push("Allow", ALLOW);
                self.reply(now, key, ctx, 501, reason_phrase(501), h, None);
            }
        }
    }

    /// RFC 3261 §8.1.1 / §8.2.2: the headers every request needs.
    fn validate(&mut self, src: SocketAddr, req: &Request) -> Result<ReqCtx, String> {
        let h = &req.headers;
        let via_raw = h.get("Via").ok_or("missing Via")?;
        let via = Via::parse(via_raw).map_err(|e| e.to_string())?;
        let from = h.get("From").ok_or("missing From")?;
        let from_na = NameAddr::parse(from).map_err(|e| format!("From: {e}"))?;
        let to = h.get("To").ok_or("missing To")?;
        let to_na = NameAddr::parse(to).map_err(|e| format!("To: {e}"))?;
        let call_id = h.get("Call-ID").ok_or("missing Call-ID")?;
        if call_id.is_empty() || call_id.contains(char::is_whitespace) {
            return Err("bad Call-ID".into());
        }
        let cseq_raw = h.get("CSeq").ok_or("missing CSeq")?;
        let cseq = CSeq::parse(cseq_raw).map_err(|e| e.to_string())?;
        if cseq.method != req.method.as_str() {
            return Err("CSeq method mismatch".into());
        }
        for one in ["From", "To", "Call-ID", "CSeq"] {
            if h.count(one) > 1 {
                return Err(format!("duplicate {one}"));
            }
        }
        let mut vias: Vec<String> = h
            .all("Via")
            .flat_map(headers::split_outside_owned)
            .collect();
        if let Some(top) = vias.first_mut() {
            *top = fill_received(top, src);
        }
        Ok(ReqCtx {
            src,
            vias,
            via,
            from: from.to_string(),
            from_na,
            to: to.to_string(),
            to_na,
            call_id: call_id.to_string(),
            cseq_raw: cseq_raw.to_string(),
            cseq,
            to_tag: None,
        })
    }

    fn random_hex(&mut self) -> String {
        format!("{:016x}", self.rng.next_u64())
    }

    fn response(&mut self, ctx: &ReqCtx, code: u16, reason: &str, extra: Headers) -> Response {
        let mut h = Headers::default();
        for v in &ctx.vias {
            h.push("Via", v.clone());
        }
        h.push("From", ctx.from.clone());
        let to = if ctx.to_na.tag.is_some() || code == 100 {
            ctx.to.clone()
        } else {
            let tag = ctx.to_tag.clone().unwrap_or_else(|| self.random_hex());
            format!("{};tag={tag}", ctx.to)
        };
        h.push("To", to);
        h.push("Call-ID", ctx.call_id.clone());
        h.push("CSeq", ctx.cseq_raw.clone());
        for (n, v) in extra.iter() {
            h.push(n, v);
        }
        h.push("Server", "sascribe");
        Response {
            code,
            reason: reason.to_string(),
            headers: h,
            body: Default::default(),
        }
    }

    /// 400 with a reason phrase naming the problem.
    fn bad_request(&mut self, now: Millis, key: TxKey, ctx: ReqCtx, reason: &str) {
        self.reply(
            now,
            key,
            ctx,
            400,
            &format!("Bad Request - {reason}"),
            Headers::default(),
            None,
        )
    }

    /// RFC 3261 §8.2.2.3: this endpoint supports no extension, so a request that `Require`s
    /// one gets 420 with `Unsupported` naming it.
    fn unsupported_extension(&mut self, now: Millis, key: TxKey, ctx: ReqCtx, ext: &str) {
        let mut h = Headers::default();
        h.push("Unsupported", ext);
        self.reply(now, key, ctx, 420, reason_phrase(420), h, None)
    }

    /// Sends a final response and moves the transaction to Completed.
    #[allow(clippy::too_many_arguments)]
    fn reply(
        &mut self,
        now: Millis,
        key: TxKey,
        ctx: ReqCtx,
        code: u16,
        reason: &str,
        extra: Headers,
        body: Option<(&str, bytes::Bytes)>,
    ) {
        let mut r = self.response(&ctx, code, reason, extra);
        if let Some((ct, b)) = body {
            r.headers.push("Content-Type", ct);
            r.body = b;
        }
        let bytes = r.to_bytes();
        self.out.push_back(Transmit {
            dst: ctx.src,
            payload: bytes.clone(),
        });
        self.server.insert(
            key,
            ServerTx {
                dst: ctx.src,
                state: ServerState::Completed {
                    response: bytes,
                    until: now + TIMER_J,
                },
            },
        );
    }

    /// Answers a request that has no transaction (malformed, oversized).
    fn stateless(&mut self, src: SocketAddr, hs: &Headers, code: u16, reason: &str) {
        let mut h = Headers::default();
        for (i, v) in hs.all("Via").enumerate() {
            h.push(
                "Via",
                if i == 0 {
                    fill_received(v, src)
                } else {
                    v.to_string()
                },
            );
        }
        for n in ["From", "To", "Call-ID", "CSeq"] {
            if let Some(v) = hs.get(n) {
                let v = if n == "To" && !v.contains("tag=") {
                    format!("{v};tag={}", self.random_hex())
                } else {
                    v.to_string()
                };
                h.push(n, v);
            }
        }
        if code == 513 || code == 400 {
            h.push("Server", "sascribe");
        }
        let r = Response {
            code,
            reason: reason.to_string(),
            headers: h,
            body: Default::default(),
        };
        self.out.push_back(Transmit {
            dst: src,
            payload: r.to_bytes(),
        });
    }

    /// Keeps the transaction Proceeding until the overlay answers.
    fn proceed(&mut self, now: Millis, key: TxKey, ctx: ReqCtx) {
        self.server.insert(
            key,
            ServerTx {
                dst: ctx.src,
                state: ServerState::Proceeding {
                    ctx: Box::new(ctx),
                    started: now,
                    trying: None,
                },
            },
        );
    }

    fn send_trying(&mut self, key: &TxKey) {
        let Some(tx) = self.server.get(key) else {
            return;
        };
        let ServerState::Proceeding { ctx, .. } = &tx.state else {
            return;
        };
        let ctx = (**ctx).clone();
        let bytes = self
            .response(&ctx, 100, "Trying", Headers::default())
            .to_bytes();
        if let Some(ServerTx {
            state: ServerState::Proceeding { trying, .. },
            dst,
        }) = self.server.get_mut(key)
        {
            *trying = Some(bytes.clone());
            let dst = *dst;
            self.out.push_back(Transmit {
                dst,
                payload: bytes,
            });
        }
    }

    /// Completes a Proceeding transaction with a final response.
    fn complete(
        &mut self,
        now: Millis,
        key: &TxKey,
        code: u16,
        reason: &str,
        extra: Headers,
        to_tag: Option<String>,
    ) -> bool {
        let Some(ServerTx {
            state: ServerState::Proceeding { ctx, .. },
            ..
        }) = self.server.get(key)
        else {
            return false;
        };
        let mut ctx = (**ctx).clone();
        if to_tag.is_some() {
            ctx.to_tag = to_tag;
        }
        self.reply(now, key.clone(), ctx, code, reason, extra, None);
        true
    }

    fn finish_pub(&mut self, now: Millis, req: PubHandle, code: u16, h: Headers) {
        if let Some(key) = self.pubs.remove(&req) {
            self.complete(now, &key, code, reason_phrase(code), h, None);
        }
    }

    // ----- responses (to our NOTIFYs) -----

    fn on_response(&mut self, now: Millis, r: Response, peer: &mut Peer) {
        let branch = r
            .headers
            .get("Via")
            .and_then(|v| Via::parse(v).ok())
            .and_then(|v| v.branch);
        let is_notify = r
            .headers
            .get("CSeq")
            .and_then(|c| CSeq::parse(c).ok())
            .is_some_and(|c| c.method == "NOTIFY");
        let Some(branch) = branch.filter(|b| is_notify && self.client.contains_key(b)) else {
            self.stats.stray_responses += 1;
            return;
        };
        if r.code < 200 {
            if let Some(t) = self.client.get_mut(&branch) {
                t.proceeding(now);
            }
            return;
        }
        let Some(t) = self.client.remove(&branch) else {
            return;
        };
        let h = t.handle;
        if let Some(d) = self.dialogs.get_mut(&h) {
            if d.in_flight.as_deref() == Some(branch.as_str()) {
                d.in_flight = None;
            }
        }
        // RFC 6665 §4.2.2 / RFC 5057: these end the subscription.
        if matches!(r.code, 481 | 408) {
            self.end_dialog(now, h, peer);
            return;
        }
        self.pump(now, h);
    }

    /// Removes a subscription after a failed NOTIFY (or once its final NOTIFY completed).
    fn end_dialog(&mut self, _now: Millis, h: SubHandle, peer: &mut Peer) {
        if let Some(d) = self.dialogs.remove(&h) {
            self.dialog_ids.remove(&d.id);
            if let Some(b) = d.in_flight {
                self.client.remove(&b);
            }
            if d.phase != Phase::Terminating {
                // The core may already have dropped it (expiry); nothing to undo then.
                let _ = peer.unsubscribe(_now, h);
            }
        }
    }

    /// Sends the next queued NOTIFY of dialog `h` if none is in flight; removes a terminated
    /// dialog whose queue is done.
    fn pump(&mut self, now: Millis, h: SubHandle) {
        let local = self.cfg.local;
        let branch = format!("z9hG4bK{}", self.random_hex());
        let Some(d) = self.dialogs.get_mut(&h) else {
            return;
        };
        if d.in_flight.is_some() {
            return;
        }
        let Some(q) = d.queue.pop_front() else {
            if d.phase == Phase::Terminating {
                let id = d.id.clone();
                self.dialogs.remove(&h);
                self.dialog_ids.remove(&id);
            }
            return;
        };
        let ct = content_type(&d.event.package);
        let req = d.notify(now, &q, local, &branch, ct);
        let bytes = req.to_bytes();
        d.in_flight = Some(branch.clone());
        let dst = d.dst;
        self.out.push_back(Transmit {
            dst,
            payload: bytes.clone(),
        });
        self.client
            .insert(branch, ClientTx::new(now, h, dst, bytes));
    }

    fn new_handle(&mut self) -> u64 {
        let h = self.next_handle;
        self.next_handle += 1;
        h
    }
}

/// The body type of an event package's NOTIFYs.
fn content_type(package: &str) -> &'static str {
    match package {
        "presence" => "application/pidf+xml",
        _ => "application/octet-stream",
    }
}

/// RFC 3261 §18.2.1 / RFC 3581: `received` when the sent-by host is not the source address,
/// `rport` filled when asked for.
fn fill_received(via: &str, src: SocketAddr) -> String {
    let mut parts: Vec<String> = headers::split_outside(via, ';')
        .into_iter()
        .map(|s| s.trim().to_string())
        .collect();
    let host = Via::parse(via).ok().map(|v| {
        let sb = v.sent_by;
        if let Some(rest) = sb.strip_prefix('[') {
            rest.split(']').next().unwrap_or("").to_string()
        } else {
            sb.split(':').next().unwrap_or("").to_string()
        }
    });
    let mut has_received = false;
    let mut want_rport = false;
    for p in parts.iter_mut().skip(1) {
        let name = p
            .split('=')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if name == "received" {
            has_received = true;
        }
        if p.eq_ignore_ascii_case("rport") {
            *p = format!("rport={}", src.port());
            want_rport = true;
        }
    }
    if !has_received && (want_rport || host.as_deref() != Some(&src.ip().to_string())) {
        parts.push(format!("received={}", src.ip()));
    }
    parts.join(";")
}

impl crate::runtime::Frontend for SipEndpoint {
    fn handle_datagram(&mut self, now: Millis, from: SocketAddr, bytes: &[u8], peer: &mut Peer) {
        SipEndpoint::handle_datagram(self, now, from, bytes, peer);
    }
    fn handle_peer_event(&mut self, now: Millis, event: Event, peer: &mut Peer) {
        SipEndpoint::handle_peer_event(self, now, event, peer);
    }
    fn handle_timeout(&mut self, now: Millis, peer: &mut Peer) {
        SipEndpoint::handle_timeout(self, now, peer);
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        SipEndpoint::poll_transmit(self)
    }
    fn poll_timeout(&self) -> Option<Millis> {
        SipEndpoint::poll_timeout(self)
    }
}
