//! # The host: one sans-IO object per peer
//!
//! A [`Host`] owns everything one sa-Scribe peer runs: the overlay layer ([`Peer`]: Pastry and
//! sa-Scribe), on gateway peers the SIP front end ([`SipEndpoint`]) above it, and the one
//! [`Timers`] queue both layers arm. A peer without a SIP endpoint is one of the paper's
//! non-gateway peers.
//!
//! Drivers — the tokio runtime, the deterministic simulator, the conformance harness — differ
//! only in how they deliver datagrams and pass time. They all do the same two things:
//!
//! * feed it with [`Host::handle_input`]: a datagram from the overlay socket or the SIP
//!   socket, bytes from a SIP stream connection, [`Input::Timeout`] when the deadline it asked
//!   for has come, or a local API [`Call`]. Every input carries `now`, milliseconds of the
//!   driver's clock (a reading that goes backwards is taken as the last one);
//! * after **every** input, drain [`Host::poll_output`] until it returns
//!   [`Output::Timeout`]: each [`Output::Transmit`] goes out on the socket it names, each
//!   [`Output::Close`] closes a stream connection, each [`Output::Event`] is the driver's to
//!   observe (or ignore), and the timeout is when to feed [`Input::Timeout`] next.
//!
//! ## The drain order, in one place
//! An input runs to completion inside `handle_input`; `poll_output` only empties queues.
//! 1. The input goes to its layer: an overlay datagram or a local call to the peer, a SIP
//!    datagram to the SIP endpoint (which may call the peer's local API), each due timer to
//!    the layer that armed it, in deadline order.
//! 2. The peer handles every message it sends itself before returning (its loopback).
//! 3. Then the host *settles*: each upcall the peer emitted is handed to the SIP endpoint (a
//!    200, a NOTIFY, a 412…), which may call the peer again, whose new upcalls are handed on in
//!    turn, until the peer has none; each upcall is also queued as an [`Output::Event`].
//! 4. `poll_output` yields the overlay datagrams, then the SIP transmits and closes (in the
//!    order the SIP layer produced them: a close follows what was written before it), then
//!    the events, and last the next deadline. Only that last read depends on everything
//!    before, since an input can bring the deadline forward.
//!
//! ## SIP over TCP: what a driver does with streams
//! SIP is served over UDP and TCP on the same port (RFC 3261 §18). The host frames streams;
//! the driver only moves bytes and owns the sockets:
//! * It numbers each connection it accepts with a [`ConnId`] below [`ConnId::HOST_BIT`],
//!   never reused, and feeds [`Input::SipStream`] at once with empty `bytes` (so that the
//!   idle timeout covers a connection that never speaks), then with the bytes as they arrive,
//!   in any split; [`Input::SipStreamClosed`] when it ends (EOF, error).
//! * [`Socket::SipTcp`](crate::io::Socket::SipTcp)`(conn)`: write the payload on `conn` (drop it if `conn` is gone; the
//!   host hears of that from the `SipStreamClosed` the driver feeds).
//!   [`Socket::SipTcpConnect`](crate::io::Socket::SipTcpConnect)`(conn)`: open a connection to `dst`, known as `conn` (an id
//!   the host chose, with [`ConnId::HOST_BIT`] set), write the payload once connected, and
//!   queue later writes to `conn` behind it; a failed connect is a `SipStreamClosed`.
//! * [`Output::Close`]`(conn)`: close `conn` after the writes queued before it; feed nothing
//!   more from it (the host has forgotten it, and needs no `SipStreamClosed`).
//! * Writes are bounded per connection; a connection whose peer does not keep up may be
//!   closed (then reported with `SipStreamClosed`). A driver without TCP feeds no stream
//!   input, and the host then never names a stream.
//!
//! Nothing here reads a clock, touches a socket or draws OS randomness: the driver passes
//! `now`, moves the bytes, and seeds both generators ([`Seeds`]). Same inputs, same outputs.

use crate::config::Config;
use crate::event::{Event, PubHandle, SubHandle, SubscribeError};
use crate::id::{GroupId, NodeId};
use crate::io::{ConnId, Stats, Transmit};
use crate::peer::Peer;
use crate::rng::Secrets;
use crate::sip::{Env, SipConfig, SipEndpoint, SipOutput, SipStats, HANDLE_BIT};
use crate::timer::Timers;
use crate::wire::{ETag, NodeHandle};
use crate::Millis;
use bytes::Bytes;
use std::collections::VecDeque;
use std::net::SocketAddr;

/// Bound on timers fired by one [`Input::Timeout`] (a guard against a handler that keeps
/// re-arming in the past; what is left fires at the next input).
const MAX_FIRED: usize = 1_000_000;

/// What a host is fed.
#[derive(Debug)]
pub enum Input<'a> {
    /// A datagram arrived on the overlay socket.
    Overlay {
        /// Source address.
        from: SocketAddr,
        /// The datagram.
        payload: &'a [u8],
    },
    /// A datagram arrived on the SIP socket (UDP).
    Sip {
        /// Source address.
        from: SocketAddr,
        /// The datagram.
        payload: &'a [u8],
    },
    /// Bytes arrived on a SIP stream (TCP) connection, in any split; empty when the driver
    /// announces a connection it accepted. See the [module docs](self).
    SipStream {
        /// The connection (driver-assigned for accepted ones).
        conn: ConnId,
        /// Its remote address.
        from: SocketAddr,
        /// The bytes, as read.
        bytes: &'a [u8],
    },
    /// A SIP stream connection ended, or one the host asked for could not be opened.
    SipStreamClosed {
        /// The connection.
        conn: ConnId,
    },
    /// The driver's own input backlog: how full its fullest input queue is (socket receive
    /// buffers, channels of reports not yet fed), in percent. The SIP front end refuses new
    /// work with 503 while it is at or above its `max_backlog` ([`crate::sip::admission`]);
    /// the last report holds until the next. Drivers with no queues of their own (the
    /// simulator) never send it.
    Backlog {
        /// Percent full (values above 100 count as 100).
        percent: u8,
    },
    /// The deadline of the last [`Output::Timeout`] came: fire every timer due at `now`.
    Timeout,
    /// A local API call.
    Call(Call),
}

/// A local API call (the paper's sa-Scribe API, and overlay membership).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// Join the overlay through the peer at this address (retried until it completes; then
    /// [`Event::Joined`]).
    Bootstrap(SocketAddr),
    /// Load routing state computed by the driver (large static overlays, the Fig. 3 topology):
    /// every peer is put where it fits in the leaf set and routing table, and the peer is
    /// ready.
    InstallRoutingState(Vec<NodeHandle>),
    /// Subscribe local subscription `handle` to `gid` for `expires` seconds: then
    /// [`Event::SubProvisional`], [`Event::SubAccepted`] + [`Event::Notify`], or
    /// [`Event::SubRejected`].
    Subscribe {
        /// Group.
        gid: GroupId,
        /// Caller-chosen handle, below [`HANDLE_BIT`].
        handle: SubHandle,
        /// Requested expiry (seconds).
        expires: u32,
    },
    /// Refresh a subscription (0 ends it).
    Refresh {
        /// Subscription.
        handle: SubHandle,
        /// Requested expiry (seconds).
        expires: u32,
    },
    /// End a subscription.
    Unsubscribe {
        /// Subscription.
        handle: SubHandle,
    },
    /// Publish (RFC 3903 semantics): then [`Event::Published`] or [`Event::PublishFailed`].
    Publish {
        /// Group.
        gid: GroupId,
        /// Caller-chosen handle, below [`HANDLE_BIT`].
        req: PubHandle,
        /// New state (`None`: refresh or removal), an opaque body (no content type; the SIP
        /// front end publishes with the PUBLISH's `Content-Type` and Request-URI).
        body: Option<Bytes>,
        /// `SIP-If-Match`.
        if_match: Option<ETag>,
        /// Requested expiry in seconds (0 removes).
        expires: Option<u32>,
    },
    /// Route a diagnostic lookup for `key`; the responsible peer emits
    /// [`Event::LookupDelivered`].
    Lookup {
        /// Key.
        key: u128,
        /// Token echoed in the event.
        token: u64,
    },
    /// Leave the overlay gracefully; the host ignores all further input.
    Leave,
}

/// Why a [`Call`] was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The core refused the subscription call.
    #[error(transparent)]
    Subscribe(#[from] SubscribeError),
    /// Handles with [`HANDLE_BIT`] set belong to the SIP layer.
    #[error("handles with the top bit set are reserved for the SIP layer")]
    ReservedHandle,
}

/// What a host asks its driver to do.
#[derive(Debug)]
#[must_use]
pub enum Output {
    /// Send this datagram on the socket it names (or write it on the stream it names).
    Transmit(Transmit),
    /// Close this SIP stream connection once the writes queued on it before are done.
    Close(ConnId),
    /// An upcall of the overlay layer (also handed to the SIP endpoint, when there is one).
    Event(Event),
    /// Everything is drained; feed [`Input::Timeout`] at this time (`Millis::MAX`: never).
    Timeout(Millis),
}

/// The ChaCha20 stream of [`Seeds::secret`] the SIP endpoint draws from (the overlay's is 0).
pub const SIP_SECRETS_STREAM: u64 = 0x5119;

/// The two generators a driver seeds.
#[derive(Clone, Copy, Debug)]
pub struct Seeds {
    /// Reproducible choices that need not be secret (leaf exchange, request nonces, SIP tags).
    pub prng: u64,
    /// The CSPRNG for entity tags (the overlay, ChaCha20 stream 0), SIP digest nonces and
    /// their key (the SIP endpoint, stream [`SIP_SECRETS_STREAM`]) and the first sequence
    /// number of authenticated overlay datagrams (stream
    /// [`crate::peer::WIRE_SECRETS_STREAM`]); from the OS in production.
    pub secret: [u8; 32],
}

impl Seeds {
    /// Both seeds from one number: for the simulator, the harness and tests, never for a
    /// deployment (entity tags become predictable).
    pub fn reproducible(seed: u64) -> Seeds {
        Seeds {
            prng: seed,
            secret: crate::rng::Secrets::seed_from_u64(seed),
        }
    }
}

/// Counters of a host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostStats {
    /// The overlay layer's counters.
    pub overlay: Stats,
    /// The SIP endpoint's counters (gateway peers).
    pub sip: Option<SipStats>,
    /// SIP datagrams and stream inputs received by a peer without a SIP endpoint (dropped).
    pub sip_without_endpoint: u64,
    /// Timers fired.
    pub timers_fired: u64,
    /// Entries in the timer queue.
    pub timers_queued: usize,
    /// Live SIP server and client transactions.
    pub sip_transactions: (usize, usize),
    /// Live SIP subscription dialogs.
    pub sip_dialogs: usize,
    /// Open SIP stream connections.
    pub sip_connections: usize,
}

/// One peer as its driver sees it. See the [module docs](self).
pub struct Host {
    now: Millis,
    timers: Timers,
    peer: Peer,
    sip: Option<SipEndpoint>,
    events: VecDeque<Event>,
    sip_without_endpoint: u64,
    timers_fired: u64,
    /// [`Seeds::secret`], for the SIP endpoint's own CSPRNG stream.
    secret: [u8; 32],
    /// Leaving: the SIP endpoint hands its dialogs over; the peer leaves once it is done.
    leaving: bool,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("peer", &self.peer)
            .field("sip", &self.sip.as_ref().map(|s| s.config().local))
            .finish()
    }
}

impl Host {
    /// A non-gateway peer with id `id`, reached at `overlay_addr`. It starts as a one-peer
    /// overlay; bootstrap it with [`Call::Bootstrap`] or [`Call::InstallRoutingState`].
    pub fn new(
        id: NodeId,
        overlay_addr: SocketAddr,
        config: Config,
        now: Millis,
        seeds: Seeds,
    ) -> Host {
        let mut timers = Timers::new();
        let peer = Peer::new(
            id,
            overlay_addr,
            config,
            now,
            seeds.prng,
            seeds.secret,
            &mut timers,
        );
        Host {
            now,
            timers,
            peer,
            sip: None,
            events: VecDeque::new(),
            sip_without_endpoint: 0,
            timers_fired: 0,
            secret: seeds.secret,
            leaving: false,
        }
    }

    /// Makes this peer a SIP gateway with endpoint configuration `sip`.
    pub fn with_sip(mut self, sip: SipConfig) -> Host {
        let seed = self.peer.id().0 as u64 ^ 0x0051_9051_9051_9051;
        let secrets = Secrets::from_seed_stream(self.secret, SIP_SECRETS_STREAM);
        self.sip = Some(SipEndpoint::new(sip, seed, secrets));
        self
    }

    /// This peer's id.
    pub fn id(&self) -> NodeId {
        self.peer.id()
    }
    /// This peer's id and overlay address.
    pub fn handle(&self) -> NodeHandle {
        self.peer.handle()
    }
    /// The overlay layer, read-only (routing state, group views, configuration).
    pub fn peer(&self) -> &Peer {
        &self.peer
    }
    /// The SIP endpoint, read-only (gateway peers).
    pub fn sip(&self) -> Option<&SipEndpoint> {
        self.sip.as_ref()
    }
    /// Whether the overlay join completed.
    pub fn is_ready(&self) -> bool {
        self.peer.is_ready()
    }
    /// Whether the host left the overlay.
    pub fn has_left(&self) -> bool {
        self.peer.has_left()
    }
    /// Whether the host is leaving: [`Call::Leave`] was made and the SIP endpoint still
    /// hands its dialogs to other peers or waits for the answers to its final NOTIFYs (at
    /// most [`crate::sip::handover::DEPART_MAX`]; the peer then leaves, and
    /// [`Host::has_left`] holds). A driver keeps feeding it until then.
    pub fn is_leaving(&self) -> bool {
        self.leaving
    }
    /// The latest `now` the host was given.
    pub fn now(&self) -> Millis {
        self.now
    }

    /// Tells the host the wall-clock time: `unix_ms` (milliseconds since the Unix epoch) is
    /// driver time `now`. With a cluster key, overlay datagrams carry and are checked against
    /// wall-clock time (within [`crate::wire::MAX_CLOCK_SKEW`]), since the driver clocks of
    /// peers on different machines do not share an origin; a production driver calls this
    /// before every input. Drivers whose peers share one clock (the simulator, the harness)
    /// need not: driver time is then used as it is.
    pub fn set_unix_time(&mut self, now: Millis, unix_ms: u64) {
        let now = self.tick(now);
        self.peer.set_unix_time(now, unix_ms);
    }

    /// Counters and gauges.
    pub fn stats(&self) -> HostStats {
        HostStats {
            overlay: self.peer.stats().clone(),
            sip: self.sip.as_ref().map(|s| s.metrics()),
            sip_without_endpoint: self.sip_without_endpoint,
            timers_fired: self.timers_fired,
            timers_queued: self.timers.len(),
            sip_transactions: self.sip.as_ref().map_or((0, 0), |s| s.transaction_count()),
            sip_dialogs: self.sip.as_ref().map_or(0, |s| s.dialog_count()),
            sip_connections: self.sip.as_ref().map_or(0, |s| s.connection_count()),
        }
    }

    /// Handles one input at `now`. Errors only come from a [`Call`] the core refuses; the
    /// outputs of the input are ready in [`Host::poll_output`] either way.
    pub fn handle_input(&mut self, now: Millis, input: Input<'_>) -> Result<(), CallError> {
        let now = self.tick(now);
        let result = match input {
            Input::Overlay { payload, .. } => {
                self.peer.handle_datagram(now, &mut self.timers, payload);
                Ok(())
            }
            Input::Sip { from, payload } => {
                if self
                    .in_sip(now, |sip, env| sip.handle_datagram(env, from, payload))
                    .is_none()
                {
                    self.sip_without_endpoint += 1;
                }
                Ok(())
            }
            Input::SipStream { conn, from, bytes } => {
                let handled =
                    self.in_sip(now, |sip, env| sip.handle_stream(env, conn, from, bytes));
                if handled.is_none() {
                    self.sip_without_endpoint += 1;
                }
                Ok(())
            }
            Input::SipStreamClosed { conn } => {
                self.in_sip(now, |sip, env| sip.handle_stream_closed(env, conn));
                Ok(())
            }
            Input::Backlog { percent } => {
                if let Some(sip) = self.sip.as_mut() {
                    sip.set_backlog(percent);
                }
                Ok(())
            }
            Input::Timeout => {
                self.fire_timers(now);
                Ok(())
            }
            Input::Call(call) => self.call(now, call),
        };
        self.settle(now);
        if self.leaving && !self.sip.as_ref().is_some_and(|s| s.handing_over(now)) {
            self.leaving = false;
            self.peer.leave(now, &mut self.timers);
        }
        result
    }

    /// The next output. Call until it returns [`Output::Timeout`].
    pub fn poll_output(&mut self) -> Output {
        if let Some(t) = self.peer.poll_transmit() {
            return Output::Transmit(t);
        }
        match self.sip.as_mut().and_then(|s| s.poll_output()) {
            Some(SipOutput::Transmit(t)) => return Output::Transmit(t),
            Some(SipOutput::Close(c)) => return Output::Close(c),
            None => {}
        }
        if let Some(e) = self.events.pop_front() {
            return Output::Event(e);
        }
        Output::Timeout(self.poll_timeout())
    }

    /// The next deadline (`Millis::MAX`: none), without draining anything.
    pub fn poll_timeout(&self) -> Millis {
        self.timers.next().unwrap_or(Millis::MAX)
    }

    /// Runs `f` on the overlay layer with the host's timers at `now`, then settles: the
    /// harness's doors into the core (failure detector, timer firings, explicit routing).
    #[cfg(feature = "harness")]
    pub fn harness<R>(
        &mut self,
        now: Millis,
        f: impl FnOnce(&mut Peer, Millis, &mut Timers) -> R,
    ) -> R {
        let now = self.tick(now);
        let r = f(&mut self.peer, now, &mut self.timers);
        self.settle(now);
        r
    }

    fn tick(&mut self, now: Millis) -> Millis {
        self.now = self.now.max(now);
        self.now
    }

    fn call(&mut self, now: Millis, call: Call) -> Result<(), CallError> {
        let t = &mut self.timers;
        match call {
            Call::Bootstrap(via) => self.peer.bootstrap(now, t, via),
            Call::InstallRoutingState(peers) => self.peer.install_routing_state(now, t, &peers),
            Call::Subscribe {
                gid,
                handle,
                expires,
            } => {
                if handle.0 & HANDLE_BIT != 0 {
                    return Err(CallError::ReservedHandle);
                }
                self.peer.subscribe(now, t, gid, handle, expires)?;
            }
            Call::Refresh { handle, expires } => {
                self.peer.refresh(now, t, handle, expires)?;
            }
            Call::Unsubscribe { handle } => self.peer.unsubscribe(now, t, handle)?,
            Call::Publish {
                gid,
                req,
                body,
                if_match,
                expires,
            } => {
                if req.0 & HANDLE_BIT != 0 {
                    return Err(CallError::ReservedHandle);
                }
                let meta = crate::event::PubMeta::default();
                self.peer
                    .publish(now, t, gid, req, body, meta, if_match, expires);
            }
            Call::Lookup { key, token } => self.peer.lookup(now, t, key, token),
            Call::Leave => {
                if self.leaving || self.peer.has_left() {
                    return Ok(());
                }
                // The front end first, while the peer still routes: it hands its dialogs to
                // other peers, and the peer leaves once their answers are in (or given up).
                let waiting = self.in_sip(now, |sip, env| sip.depart(env));
                if waiting == Some(true) {
                    self.leaving = true;
                } else {
                    self.peer.leave(now, &mut self.timers)
                }
            }
        }
        Ok(())
    }

    /// Fires every timer due at `now`, each in the layer that armed it, settling after each.
    fn fire_timers(&mut self, now: Millis) {
        for _ in 0..MAX_FIRED {
            let Some(timer) = self.timers.pop_due(now) else {
                return;
            };
            self.timers_fired += 1;
            if timer.is_sip() {
                self.in_sip(now, |sip, env| sip.handle_timer(env, timer));
            } else {
                self.peer.handle_timer(now, &mut self.timers, timer);
            }
            self.settle(now);
        }
    }

    /// Hands every upcall of the peer to the SIP endpoint (which may call the peer again) and
    /// queues it as an output, until the peer has none.
    fn settle(&mut self, now: Millis) {
        loop {
            if let Some((from, msg)) = self.peer.poll_handover() {
                if self.sip.is_some() {
                    self.in_sip(now, |sip, env| sip.on_handover(env, from, msg));
                } else {
                    // Not a gateway: it carries no dialog.
                    if let crate::wire::HandoverMsg::Offer { batch, .. } = msg {
                        let taken = Vec::new();
                        let answer = crate::wire::HandoverMsg::Taken { batch, taken };
                        self.peer.send_handover(&from, answer);
                    }
                }
                continue;
            }
            let Some(ev) = self.peer.poll_event() else {
                break;
            };
            self.in_sip(now, |sip, env| sip.handle_peer_event(env, &ev));
            self.events.push_back(ev);
        }
    }

    /// Runs `f` on the SIP endpoint with the peer and the timers below it; `None` (and
    /// nothing run) for a peer without SIP.
    fn in_sip<R>(
        &mut self,
        now: Millis,
        f: impl FnOnce(&mut SipEndpoint, &mut Env<'_>) -> R,
    ) -> Option<R> {
        let sip = self.sip.as_mut()?;
        let mut env = Env {
            now,
            peer: &mut self.peer,
            timers: &mut self.timers,
        };
        Some(f(sip, &mut env))
    }
}
