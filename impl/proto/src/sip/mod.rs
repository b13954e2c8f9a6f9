//! # SIP front end: a presence/event server backed by the sa-Scribe overlay
//!
//! [`SipEndpoint`] speaks SIP over UDP and TCP to ordinary user agents (SIPp, sipsak, baresip) and turns
//! their requests into calls on the local [`Peer`] — the "modified SIP stack" of the paper's
//! Fig. 6. To a UA it is indistinguishable from a central event state compositor (RFC 3903)
//! and notifier (RFC 6665); behind it, the overlay root for each group decides. It lives inside
//! the sans-IO [`crate::Host`], which hands it datagrams, the peer's upcalls and its timers.
//!
//! ## Flows (paper Fig. 4 and 5)
//! * **PUBLISH** (RFC 3903 §6, `publish`): Event checked (489 + `Allow-Events` when missing or
//!   not served), `Expires` checked (423 + `Min-Expires`), `SIP-If-Match` read, body type
//!   checked (415; a PIDF body must parse, 400), then `Peer::publish` with the body's
//!   `Content-Type` and the Request-URI. The root's answer becomes 200 with the `SIP-ETag`
//!   and `Expires` it chose (a removal: 200 without `SIP-ETag`, `Expires: 0`), or 412
//!   (no live state has that entity tag), 423, 400, 403 (too many states), 413, 504 (no
//!   answer).
//! * **SUBSCRIBE** (RFC 6665 §4.2.1, `subscribe`): an initial SUBSCRIBE creates a dialog (our
//!   To tag, `Contact`, route set from `Record-Route`) and calls `Peer::subscribe`. The root's
//!   ACK (also for a resource nothing was published to yet) becomes 200 + an immediate NOTIFY
//!   with the latest state and
//!   `Subscription-State: active;expires=N`. In-dialog SUBSCRIBEs refresh (200 + NOTIFY with
//!   the current state) or, with `Expires: 0`, end the subscription (200 + final NOTIFY
//!   `terminated;reason=timeout`). An initial `Expires: 0` is a fetch (§4.4.3): 200 + one
//!   terminated NOTIFY. Every publication the core reports reaches the subscriber as exactly
//!   one NOTIFY, in seq order; one NOTIFY is in flight per dialog, the next waits for its
//!   final response (this keeps order over UDP).
//! * **NOTIFY** client transactions (`notify`) retransmit on Timer E and give up on Timer F;
//!   a timeout, a 481 or a 408 ends the subscription (`Peer::unsubscribe`; RFC 6665 §4.2.2,
//!   RFC 5057).
//! * Core expiry (`SubTerminated`) becomes a final NOTIFY `terminated;reason=timeout`.
//! * An orderly shutdown (the peer leaves) hands every dialog to a leaf-set peer, which
//!   carries it on and tells the subscriber with a NOTIFY from its own address ([`handover`]);
//!   a dialog no peer takes ends with a final NOTIFY `terminated;reason=deactivated`, and its
//!   subscriber subscribes again at once, through another peer (RFC 6665 §4.2.2).
//!
//! ## Subscribing before anything is published: 200 and a NOTIFY without state
//! The paper's root answers a JOIN for a group without state with a nACK, mapped to a final
//! 3xx–6xx. Watchers subscribe before their presentities publish all the time (a buddy list
//! at start-up), and clients treat a failed SUBSCRIBE badly: linphone never retries, baresip
//! only after 30 s. A central presence server (Kamailio's `presence` module, RFC 6665 §4.2.1)
//! accepts such a subscription and sends a NOTIFY with no state. So does this front end: the
//! root creates the group and answers ACK with seq 0; the subscriber gets 200 and an immediate
//! NOTIFY (`Subscription-State: active`, `X-Sascribe-Seq: 0`, no body), then one NOTIFY per
//! later change. Once every event state was removed or expired (seq > 0), a `presence` NOTIFY
//! carries the neutral `closed` PIDF (RFC 3856 §6.6.2), other packages an empty body. An
//! overlay timeout becomes 504 Server Time-out.
//!
//! ## Several publishers of one presentity
//! Each PUBLISH without `SIP-If-Match` creates an event state of its own (RFC 3903 §4) with
//! its own `SIP-ETag`; a conditional PUBLISH refreshes, modifies or (`Expires: 0`) removes the
//! state it names, 412 when it names none. NOTIFYs carry the composition ([`crate::pidf`]):
//! for `application/pidf+xml`, every state's `<tuple>`s in one `<presence>`; for other
//! packages, the most recently changed state with its own `Content-Type`. A PIDF body that
//! does not parse is refused (400). Limits: more states than `Config::max_states` → 403 (the
//! reason phrase names the limit), a body over `Config::max_body` or a presentity's states
//! or composed document over `Config::max_document` → 413.
//!
//! ## Other requests
//! Processing follows RFC 3261 §8.2 (`request`): malformed requests get 400 with a reason
//! phrase naming the problem (missing Via/From/To/Call-ID/CSeq, bad CSeq, CSeq method mismatch,
//! Content-Length exceeding the datagram, …) — or are dropped when nothing can address a
//! reply; other SIP versions get 505; methods not served get 405 with `Allow`, unknown
//! methods 501; `Require` with any option tag 420; OPTIONS 200 with `Allow`, `Accept` and
//! `Allow-Events`; in-dialog requests for no dialog 481; datagrams over
//! [`SipConfig::max_message`] 513. Responses that match no transaction are ignored. A SIPp
//! (or any) UA may address any peer with any Request-URI: the group id is
//! `GroupId::from_event(Request-URI, package, id)`, independent of the receiving peer.
//!
//! ## Authentication and authorisation
//! Off by default. With [`SipConfig::auth`] set, every PUBLISH and SUBSCRIBE first passes
//! [`auth`] (one call in request dispatch, before any method-specific check and before the
//! overlay sees it): digest credentials (RFC 7616, RFC 8760: SHA-256 and MD5, `qop=auth`) or
//! 401/407 with challenges and a fresh nonce, then 403 unless the authenticated user publishes
//! their own address-of-record or may watch the one subscribed to. OPTIONS is never
//! challenged.
//!
//! ## Addressing
//! Every request arrives on a [`Flow`]: a UDP source address, or a TCP connection. Responses
//! go back on it (symmetric response routing, RFC 3581; `received`/`rport` are filled in the
//! top `Via` when asked for). NOTIFYs are sent on the flow the subscriber's last SUBSCRIBE came
//! on, with the Contact URI as Request-URI and the route set as `Route` headers: the front end
//! does no DNS.
//!
//! ## Transports
//! UDP datagrams and TCP streams (RFC 3261 §18) reach the same processing: a stream is cut
//! into messages first ([`stream`]: `Content-Length` framing, CRLF keep-alives, limits), and
//! [`conn`] keeps the open connections, reopens one for a NOTIFY or a response when the
//! subscriber's has closed, and closes idle ones. Over TCP there are no retransmissions
//! (Timer E) and server transactions complete at once (Timer J = 0).
//!
//! ## Timers
//! Server transactions (100 Trying, Timer J), NOTIFY client transactions (Timers E and F):
//! one entry each in the host's [`Timers`] ([`transaction::Transactions`]); stream
//! connections (idle timeout): one each ([`conn`]).

pub mod admission;
pub mod auth;
pub mod conn;
pub mod dialog;
pub mod handover;
pub mod headers;
pub mod message;
mod notify;
mod ops;
mod publish;
mod request;
mod response;
pub mod stream;
mod subscribe;
pub mod transaction;

use crate::event::{Event, PubHandle, SubHandle};
use crate::io::{ConnId, Transmit};
use crate::peer::Peer;
use crate::rng::{Secrets, SplitMix64};
use crate::timer::{Timer, Timers};
use crate::Millis;
use dialog::{Dialog, DialogId, Phase, Queued};
use headers::{CSeq, NameAddr, Via};
use message::{reason_phrase, Headers, Message, Method};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use transaction::{ClientDue, ServerDue, Transactions};

/// Methods served (the `Allow` header).
pub const ALLOW: &str = "PUBLISH, SUBSCRIBE, OPTIONS";

/// The body type of an event package's NOTIFYs, for the packages whose RFC names one:
/// `presence` (RFC 3856), `dialog` (RFC 4235), `message-summary` (RFC 3842).
pub fn package_media_type(package: &str) -> Option<&'static str> {
    match package {
        "presence" => Some(crate::pidf::MEDIA_TYPE),
        "dialog" => Some("application/dialog-info+xml"),
        "message-summary" => Some("application/simple-message-summary"),
        _ => None,
    }
}

/// Handles the SIP layer hands to the core carry this bit, so that they never collide with
/// handles a driver chooses for its own local calls.
pub const HANDLE_BIT: u64 = 1 << 63;

/// Configuration of a [`SipEndpoint`].
#[derive(Clone, Debug)]
pub struct SipConfig {
    /// The endpoint's own SIP address (for `Via` and `Contact`).
    pub local: SocketAddr,
    /// Event packages served (lowercase). `presence` bodies must be `application/pidf+xml`;
    /// other packages take any body type.
    pub event_packages: Vec<String>,
    /// An extra floor on `Expires` of PUBLISH and SUBSCRIBE (seconds), above the overlay's
    /// [`crate::Config`] `pub_min_expires` / `sub_min_expires` (the larger wins; shorter
    /// requests get 423). Default 0: the overlay's configuration is the one source.
    pub min_expires: u32,
    /// An extra cap on `Expires` (seconds), below the overlay's `pub_max_expires` /
    /// `sub_max_expires`. Default `u32::MAX`: none.
    pub max_expires: u32,
    /// `Expires` of a SUBSCRIBE that gives none (RFC 3856 §6.4: 3600 for presence); drivers
    /// set it from [`crate::Config::sub_default_expires`]. (A PUBLISH without one gets the
    /// overlay's `pub_default_expires`.)
    pub default_expires: u32,
    /// Messages longer than this (datagrams, or header section and body on a stream) are
    /// answered 513 (or dropped if unreadable; a stream is then closed).
    pub max_message: usize,
    /// Longest header section on a stream (start line and empty line included); a longer one
    /// is answered 513 and its connection closed.
    pub max_header: usize,
    /// Bound on open TCP connections a driver hands in; beyond it new ones are closed at once.
    /// (Connections the endpoint opens for NOTIFYs are bounded by the dialogs.)
    pub max_connections: usize,
    /// A stream connection is closed after this long without traffic (ms), unless a
    /// subscription notified over it lasts longer.
    pub conn_idle_timeout: Millis,
    /// A SUBSCRIBE or PUBLISH the overlay has not answered after this long (ms) gets 100 Trying
    /// (a SUBSCRIBE gets it earlier, once its JOIN's first hop grafted it: the pACK). It stops
    /// the client's retransmissions over UDP from T1 doubling to every T2.
    pub trying_delay: Millis,
    /// Bound on concurrent server transactions. At it, a new request first evicts the
    /// transaction answered longest ago (it only absorbs retransmissions, for Timer J); when
    /// every one is still being worked on, it gets 503 (a stateless one, with
    /// `Retry-After`).
    pub max_transactions: usize,
    /// Overload control and abuse limits ([`admission`]).
    pub admission: admission::AdmissionConfig,
    /// Domains this deployment serves (lowercase hosts, no port). Empty: every domain. A
    /// PUBLISH or SUBSCRIBE for another domain gets 404 (see [`SipConfig::resource`]).
    pub domains: Vec<String>,
    /// Other names of served domains: `(alias, domain)`, where the alias is a host or
    /// `host:port` (e.g. a peer's own address, `10.0.0.5:5060` → `example.com`).
    pub aliases: Vec<(String, String)>,
    /// Digest authentication of PUBLISH and SUBSCRIBE, and who may publish and watch whom
    /// ([`auth`]); `None` (the default): anyone may do anything.
    pub auth: Option<auth::AuthConfig>,
    /// Resources whose group id is given rather than hashed (the conformance harness maps a
    /// trace's group onto a resource URI with it).
    #[cfg(feature = "harness")]
    pub pinned: Vec<(String, crate::id::GroupId)>,
}

impl SipConfig {
    /// Defaults: `presence`, `dialog` and `message-summary`, every domain, no expiry bounds of
    /// its own (the overlay's apply), 3600 s for a SUBSCRIBE without `Expires`, 64 KiB messages,
    /// 16 KiB header sections on streams, 1024 TCP connections idle for at most 300 s.
    pub fn new(local: SocketAddr) -> SipConfig {
        SipConfig {
            local,
            event_packages: vec!["presence".into(), "dialog".into(), "message-summary".into()],
            min_expires: 0,
            max_expires: u32::MAX,
            default_expires: 3600,
            max_message: 65_507,
            max_header: 16_384,
            max_connections: 1_024,
            conn_idle_timeout: 300_000,
            trying_delay: transaction::TRYING_DELAY,
            max_transactions: 100_000,
            admission: admission::AdmissionConfig::default(),
            domains: Vec::new(),
            aliases: Vec::new(),
            auth: None,
            #[cfg(feature = "harness")]
            pinned: Vec::new(),
        }
    }

    /// The resource a Request-URI names: its address-of-record `sip:user@domain`
    /// ([`crate::id::canonical_uri`]: scheme `sip`, host lowercased, port, password,
    /// parameters and headers dropped), with an alias (matched as `host:port`, then as `host`)
    /// replaced by its domain. `None` when [`SipConfig::domains`] is set and the domain is
    /// not one of them. Two URIs name the same presentity exactly when their resources are
    /// equal, whichever peer receives them: the group id hashes the resource.
    pub fn resource(&self, uri: &str) -> Option<String> {
        let aor = crate::id::canonical_uri(uri);
        let (head, host) = match aor.rsplit_once('@') {
            Some((u, h)) => (format!("{u}@"), h.to_string()),
            None => (
                "sip:".to_string(),
                aor.trim_start_matches("sip:").to_string(),
            ),
        };
        let hostport = crate::id::uri_hostport(uri);
        let host = self
            .aliases
            .iter()
            .find(|(a, _)| a.eq_ignore_ascii_case(&hostport))
            .or_else(|| {
                self.aliases
                    .iter()
                    .find(|(a, _)| a.eq_ignore_ascii_case(&host))
            })
            .map_or(host, |(_, d)| d.to_ascii_lowercase());
        if !self.domains.is_empty() && !self.domains.iter().any(|d| d.eq_ignore_ascii_case(&host)) {
            return None;
        }
        Some(format!("{head}{host}"))
    }
}

/// Counters of a [`SipEndpoint`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SipStats {
    /// Messages received (datagrams, and messages framed on streams).
    pub rx: u64,
    /// Malformed messages (answered 400/505 or dropped).
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
    /// NOTIFY transactions that failed because the connection we opened for them failed or
    /// closed (a transport error).
    pub notify_transport_errors: u64,
    /// Subscriptions ended with `terminated;reason=deactivated` because this peer left the
    /// overlay and no other peer took them (their subscribers subscribe again).
    pub deactivated: u64,
    /// Dialogs this peer offered to another as it left ([`handover`]).
    pub handover_offered: u64,
    /// Dialogs another peer took from this one as it left.
    pub handed_over: u64,
    /// Dialogs this peer took over from a peer that left.
    pub taken_over: u64,
    /// Dialogs offered to this peer that it refused (invalid, over its limits, or leaving).
    pub handover_refused: u64,
    /// Stream connections taken on (announced by the driver, or opened for a NOTIFY or a
    /// response).
    pub connections_opened: u64,
    /// Stream connections ended (by either side, idle ones included).
    pub connections_closed: u64,
    /// Stream connections closed at once, beyond [`SipConfig::max_connections`].
    pub connections_refused: u64,
    /// Streams that could not be framed (garbage, no `Content-Length`, over the limits).
    pub stream_framing_errors: u64,
    /// CRLF keep-alive pings answered.
    pub keepalives: u64,
    /// Challenges sent (401 or 407), whatever the reason.
    pub auth_challenges: u64,
    /// Credentials that did not authenticate (unknown user, wrong password, an algorithm or
    /// qop not offered, a nonce not ours) or were malformed (400).
    pub auth_failures: u64,
    /// Correct credentials over an expired nonce (challenged again with `stale=true`).
    pub auth_stale: u64,
    /// Credentials replaying a nonce count already used with their nonce.
    pub auth_replays: u64,
    /// Authenticated requests refused by the authorisation policy (403).
    pub forbidden: u64,
    /// Requests received (well-formed enough to have a method), by method.
    pub requests: std::collections::BTreeMap<String, u64>,
    /// Final and provisional responses sent, by the request's method and status.
    pub responses: std::collections::BTreeMap<(String, u16), u64>,
    /// NOTIFY transactions started (first transmissions).
    pub notifies_sent: u64,
    /// OPTIONS, PUBLISH and SUBSCRIBE answered 503 because the peer has not joined the overlay.
    pub not_joined: u64,
    /// Requests refused with 503 for overload: pending transactions, the driver's input
    /// backlog, or the bound on transactions ([`admission`]).
    pub overload_refused: u64,
    /// Requests refused with 503 by the per-source rate limit.
    pub rate_limited: u64,
    /// Initial SUBSCRIBEs refused (403) by the limit on subscriptions per source.
    pub source_sub_limited: u64,
    /// Initial SUBSCRIBEs refused (403) by the limit on subscriptions per presentity.
    pub presentity_sub_limited: u64,
    /// Initial SUBSCRIBEs refused (503) by the limit on dialogs of this peer.
    pub dialog_limited: u64,
    /// PUBLISH and SUBSCRIBE requests refused (413) for a body over `max_body`.
    pub body_too_large: u64,
    /// At this gateway, from a PUBLISH's arrival to its 200 OK (the root answers once the
    /// replicas hold the new state, in the step it multicasts it to the tree), in ms.
    pub publish_latency: crate::diag::Histogram,
}

/// The flow a request came on, and its responses and NOTIFYs leave on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flow {
    /// UDP, from and to this address.
    Udp(SocketAddr),
    /// A TCP connection, with its remote address.
    Tcp {
        /// The connection.
        conn: ConnId,
        /// Its remote address.
        remote: SocketAddr,
    },
}

impl Flow {
    /// The remote address.
    pub fn remote(&self) -> SocketAddr {
        match *self {
            Flow::Udp(a) | Flow::Tcp { remote: a, .. } => a,
        }
    }
    /// Whether the transport is reliable (no retransmissions, RFC 3261 §17).
    pub fn is_reliable(&self) -> bool {
        matches!(self, Flow::Tcp { .. })
    }
    /// The stream connection, if any.
    pub fn conn(&self) -> Option<ConnId> {
        match *self {
            Flow::Tcp { conn, .. } => Some(conn),
            Flow::Udp(_) => None,
        }
    }
    /// The transport token of a `Via` header sent on this flow.
    pub fn via_transport(&self) -> &'static str {
        match self {
            Flow::Udp(_) => "UDP",
            Flow::Tcp { .. } => "TCP",
        }
    }
}

/// What the SIP endpoint asks its driver to do.
#[derive(Debug)]
pub enum SipOutput {
    /// Send a datagram, or write on a stream (opening it first for
    /// [`crate::Socket::SipTcpConnect`]).
    Transmit(Transmit),
    /// Close this stream connection once what was queued for it before is written.
    Close(ConnId),
}

/// What a validated request says about itself (RFC 3261 §8.1.1 mandatory headers).
#[derive(Clone, Debug)]
pub struct ReqCtx {
    /// Source address.
    pub src: SocketAddr,
    /// The flow it came on (responses leave on it).
    pub flow: Flow,
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

/// What the SIP layer works with below it: the time, the local peer and the host's timers.
pub(crate) struct Env<'a> {
    pub now: Millis,
    pub peer: &'a mut Peer,
    pub timers: &'a mut Timers,
}

/// The SIP front end of one peer. See the [module docs](self).
#[derive(Debug)]
pub struct SipEndpoint {
    cfg: SipConfig,
    rng: SplitMix64,
    out: VecDeque<SipOutput>,
    stats: SipStats,
    conns: conn::Conns,
    tx: Transactions<ReqCtx>,
    /// Publication requests waiting for the root: core handle → server transaction.
    pubs: HashMap<PubHandle, u64>,
    dialogs: HashMap<SubHandle, Dialog>,
    dialog_ids: HashMap<DialogId, SubHandle>,
    next_handle: u64,
    /// Digest nonces (with authentication on).
    nonces: Option<auth::Nonces>,
    /// Token buckets and dialog counts of the abuse limits, the driver's backlog.
    admission: admission::Admission,
    /// Dialog offers waiting for their answers, by number ([`handover`]).
    offers: HashMap<u64, handover::Offer>,
    /// The next offer's number.
    next_batch: u64,
    /// Set when the peer starts leaving (new subscriptions are then refused, dialogs handed
    /// over): when the departure gives up waiting ([`handover::DEPART_MAX`] after it began).
    depart_by: Option<Millis>,
}

impl SipEndpoint {
    /// A front end with configuration `cfg`; `seed` seeds tags and branches, `secrets` (a
    /// CSPRNG, from the OS in production) the digest nonces and their key.
    pub fn new(cfg: SipConfig, seed: u64, secrets: Secrets) -> SipEndpoint {
        let nonces = cfg.auth.as_ref().map(|a| auth::nonces(a, secrets));
        let admission = admission::Admission::new(&cfg.admission);
        SipEndpoint {
            cfg,
            rng: SplitMix64::new(seed ^ 0x5119_5119_5119_5119),
            out: VecDeque::new(),
            stats: SipStats::default(),
            conns: conn::Conns::default(),
            tx: Transactions::default(),
            pubs: HashMap::new(),
            dialogs: HashMap::new(),
            dialog_ids: HashMap::new(),
            next_handle: 1,
            nonces,
            admission,
            offers: HashMap::new(),
            next_batch: 1,
            depart_by: None,
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

    /// Number of live server and client transactions.
    pub fn transaction_count(&self) -> (usize, usize) {
        (self.tx.servers(), self.tx.clients())
    }

    /// Number of open stream connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// A SIP datagram arrived from `from`.
    pub(crate) fn handle_datagram(&mut self, env: &mut Env<'_>, from: SocketAddr, bytes: &[u8]) {
        self.handle_message(env, Flow::Udp(from), bytes);
    }

    /// One message (a datagram, or framed on a stream) arrived on `flow`. Returns false when
    /// it did not parse (a stream is then closed: its framing cannot be trusted).
    fn handle_message(&mut self, env: &mut Env<'_>, flow: Flow, bytes: &[u8]) -> bool {
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
                self.stateless(&flow, &hs, 513, "Message Too Large");
            }
            return false;
        }
        match parsed {
            Ok(Message::Request(r)) => self.on_request(env, flow, r),
            Ok(Message::Response(r)) => self.on_response(env, r),
            Err(e) => {
                self.stats.rx_malformed += 1;
                if e.code != 0 && e.method != Some(Method::Ack) {
                    let reason = if e.code == 505 {
                        reason_phrase(505).to_string()
                    } else {
                        format!("Bad Request - {}", e.reason)
                    };
                    self.stateless(&flow, &e.headers, e.code, &reason);
                }
                return false;
            }
        }
        true
    }

    /// An upcall drained from the local peer.
    pub(crate) fn handle_peer_event(&mut self, env: &mut Env<'_>, event: &Event) {
        match *event {
            Event::Published {
                req,
                etag,
                expires,
                seq,
            } => {
                let mut h = Headers::default();
                if let Some(e) = etag {
                    h.push("SIP-ETag", e.to_string());
                }
                h.push("Expires", expires.to_string());
                h.push(dialog::SEQ_HEADER, seq.to_string());
                self.finish_pub(env, req, 200, "OK", h);
            }
            Event::PublishFailed { req, reason } => {
                let (code, phrase, h) = publish::failure(reason, env.peer.config());
                self.finish_pub(env, req, code, &phrase, h);
            }
            Event::SubProvisional { handle } => {
                if let Some(Phase::Establishing { tx }) =
                    self.dialogs.get(&handle).map(|d| &d.phase)
                {
                    let tx = *tx;
                    self.send_trying(env, tx);
                }
            }
            Event::SubAccepted { handle, expires } => self.sub_accepted(env, handle, expires),
            Event::SubRejected { handle, reason } => self.sub_rejected(env, handle, reason),
            Event::Notify {
                handle,
                seq,
                ref state,
                ref content_type,
            } => {
                let shown = dialog::Shown {
                    seq,
                    body: state.clone(),
                    content_type: content_type.clone(),
                };
                self.sub_notify(env, handle, shown)
            }
            Event::SubTerminated { handle, .. } => {
                if let Some(d) = self.dialogs.get_mut(&handle) {
                    let state = d.last.clone().unwrap_or_default();
                    d.enqueue(Queued {
                        state,
                        terminated: Some("timeout"),
                    });
                    self.pump(env, handle);
                }
            }
            Event::Joined | Event::LookupDelivered { .. } | Event::Log(_) => {}
        }
    }

    /// One of the SIP layer's timers fired: 100 Trying, Timer J, Timers E and F, idle
    /// connections, dialog offers.
    pub(crate) fn handle_timer(&mut self, env: &mut Env<'_>, timer: Timer) {
        match timer {
            Timer::SipServer(id) => match self.tx.server_timer(env.timers, id, env.now) {
                ServerDue::Trying => self.send_trying(env, id),
                ServerDue::Removed | ServerDue::Nothing => {}
            },
            Timer::SipClient(id) => match self.tx.client_timer(env.timers, id, env.now) {
                ClientDue::Retransmit(flow, payload) => {
                    self.stats.notify_retransmissions += 1;
                    self.transmit(&flow, payload);
                }
                ClientDue::TimedOut(t) => {
                    self.stats.notify_timeouts += 1;
                    self.log_notify_timeout(env, t.handle);
                    if let Some(d) = self.dialogs.get_mut(&t.handle) {
                        d.in_flight = None;
                    }
                    self.end_dialog(env, t.handle);
                }
                ClientDue::Nothing => {}
            },
            Timer::SipConn(id) => self.conn_timer(env, id),
            Timer::SipHandover(batch) => self.handover_timer(env, batch),
            _ => {}
        }
    }

    /// Next transmit or close, in the order they were produced.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<SipOutput> {
        self.out.pop_front()
    }

    /// The group of resource `uri` and event package `event` (with its `id` parameter).
    /// The group of `resource` ([`SipConfig::resource`]) and `event`.
    fn group_of(&self, resource: &str, event: &headers::EventHeader) -> crate::id::GroupId {
        #[cfg(feature = "harness")]
        if let Some((_, gid)) = self
            .cfg
            .pinned
            .iter()
            .find(|(u, _)| self.cfg.resource(u).as_deref() == Some(resource))
        {
            return *gid;
        }
        crate::id::GroupId::from_event(resource, &event.package, event.id.as_deref())
    }

    /// The core handle (a subscription's or a pending publication's) of the request with
    /// Call-ID `call_id`: how a harness that owns the core's timers names them.
    #[cfg(feature = "harness")]
    pub fn core_handle(&self, call_id: &str) -> Option<u64> {
        let sub = self.dialogs.values().find(|d| d.id.call_id == call_id);
        if let Some(d) = sub {
            return Some(d.handle.0);
        }
        self.pubs.iter().find_map(|(h, &tx)| {
            let st = &self.tx.server(tx)?.state;
            match st {
                transaction::ServerState::Proceeding { ctx, .. } if ctx.call_id == call_id => {
                    Some(h.0)
                }
                _ => None,
            }
        })
    }

    fn random_hex(&mut self) -> String {
        format!("{:016x}", self.rng.next_u64())
    }

    fn new_handle(&mut self) -> u64 {
        let h = self.next_handle;
        self.next_handle += 1;
        h | HANDLE_BIT
    }
}
