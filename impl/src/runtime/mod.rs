//! # Tokio driver: one [`Host`] per task, real sockets, real time
//!
//! The runtime is deliberately thin: it moves datagrams and stream bytes between its sockets
//! and the sans-IO [`Host`], sleeps until the host's next deadline, and carries local API calls
//! in from a [`RuntimeHandle`]. Every protocol decision, the SIP front end's included (TCP
//! framing too), stays in the host.
//!
//! The datagram socket and the clock are behind two small traits, [`Transport`] and [`Clock`],
//! so that a conformance harness can run exactly this event loop over its own delivery and its
//! own time. The production implementations are [`tokio::net::UdpSocket`] and [`TokioClock`].
//! SIP over TCP ([`HostLoop::with_sip_tcp`], bound by [`HostLoop::bind_sip`] on the same port
//! as SIP over UDP) uses tokio's TCP sockets: one task per connection, bounded queues (see
//! `tcp.rs`); a harness may serve UDP only.
//!
//! # Event loop
//! One task per peer selects over: a local command (a call on the host, or stop), an overlay
//! datagram, a SIP datagram (gateway peers), a SIP TCP connection's report (accepted, bytes,
//! closed), and the host's deadline. After every input it drains [`Host::poll_output`] as the
//! host documents: each transmit goes out on the socket it names (a TCP write is queued on its
//! connection, or opens it), each close closes its connection, each event is broadcast to
//! [`RuntimeHandle::events`] receivers, and the final [`Output::Timeout`] is the next deadline.
//! I/O errors are logged and the loop goes on.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use sascribe::runtime::HostLoop;
//! use sascribe::{Config, NodeId};
//! let mut node = HostLoop::bind("127.0.0.1:0".parse().unwrap(), NodeId(42), Config::default(), 7).await?;
//! node.bootstrap("127.0.0.1:7000".parse().unwrap());
//! let handle = node.spawn();
//! handle.wait_ready(std::time::Duration::from_secs(10)).await.expect("joined");
//! handle.shutdown().await;
//! # Ok(()) }
//! ```

pub mod admin;
mod clock;
mod config_auth;
mod config_file;
mod handle;
pub mod impair;
mod log;
pub mod metrics;
mod outbox;
pub use outbox::OUTBOX_CAPACITY;
mod tcp;
pub use tcp::{TcpGauges, WRITE_QUEUE_BYTES};
mod transport;

pub use clock::{Clock, TokioClock};
pub use config_file::{AuthSection, ConfigError, ConfigFile, EXAMPLE as EXAMPLE_CONFIG};
pub use handle::{CallFailed, ReadyError, RuntimeHandle, Stopped};
pub use transport::Transport;

use crate::sip::SipConfig;
use crate::{Config, Event, Host, Input, Millis, NodeId, Output, Seeds, Socket, Transmit};
use handle::Command;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{broadcast, mpsc};
use tracing::Instrument;

/// Largest datagram the runtime reads (the UDP maximum).
pub const MAX_DATAGRAM: usize = 65_535;
/// Capacity of the event broadcast; a receiver that falls further behind sees
/// [`broadcast::error::RecvError::Lagged`].
pub const EVENT_CAPACITY: usize = 16_384;
/// Capacity of the command queue of one node.
const COMMAND_CAPACITY: usize = 1_024;
/// SIP datagrams waiting in the socket at once that count as a full input queue (100 %
/// backlog, [`Input::Backlog`]). Each turn of the loop reads the datagram it awaited and every
/// one already waiting behind it, up to this many, before handling them: how many it found is
/// the queue's depth.
pub const SIP_QUEUE_FULL: usize = 2048;
/// Bytes of SIP datagrams one turn reads ahead at most (beyond the largest datagram).
const SIP_STAGE_BYTES: usize = 2 * 1024 * 1024;

/// The SIP datagrams one turn of the loop read before handling them.
struct Stage {
    arena: Vec<u8>,
    /// (start, length, source) of each datagram in `arena`.
    items: Vec<(usize, usize, SocketAddr)>,
}

impl Stage {
    /// Where a turn's first datagram is read (the start of the arena).
    fn first(&mut self) -> &mut [u8] {
        let n = self.arena.len().min(MAX_DATAGRAM);
        &mut self.arena[..n]
    }
}
/// How long a leaving node waits at most for its TCP write queues to empty.
const LEAVE_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);

/// Bound on an orderly leave's dialog handover (the SIP front end stops waiting after
/// [`crate::sip::handover::DEPART_MAX`]; this only guards against a host that never
/// finishes).
const LEAVE_HANDOVER_MAX: Millis = crate::sip::handover::DEPART_MAX + 1_000;
/// After this many consecutive receive errors on a socket the loop pauses briefly.
const ERROR_BURST: u32 = 16;
/// Length of that pause (ms).
const ERROR_PAUSE: Millis = 10;

/// Seeds for a host in production: the PRNG from `seed`, the CSPRNG for entity tags from the
/// operating system.
pub fn os_seeds(seed: u64) -> io::Result<Seeds> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| io::Error::other(format!("OS randomness: {e}")))?;
    Ok(Seeds { prng: seed, secret })
}

/// One host bound to its transports and clock. Build it, call [`HostLoop::bootstrap`] if it joins
/// an existing overlay, then [`HostLoop::spawn`] (or await [`HostLoop::run`]).
pub struct HostLoop<T: Transport, C: Clock> {
    host: Host,
    overlay: Arc<T>,
    sip: Option<Arc<T>>,
    /// Whether [`HostLoop::run`] sends on threads of its own ([`HostLoop::with_send_threads`]).
    send_threads: bool,
    /// The sending threads' queues while the loop runs: overlay, SIP.
    outboxes: [Option<outbox::Outbox>; 2],
    tcp: Option<tcp::Streams>,
    clock: C,
    last_now: Millis,
    /// Dropped when the loop starts: only handles keep the node alive.
    commands_tx: Option<mpsc::Sender<Command>>,
    commands: mpsc::Receiver<Command>,
    events: broadcast::Sender<Event>,
    sip_addr: Option<SocketAddr>,
    log: log::EventLog,
    /// Capacity of `events`.
    event_capacity: usize,
    /// SIP datagrams that were waiting in the socket at the start of the last SIP turn.
    sip_depth: usize,
    /// The backlog last reported to the host (percent).
    backlog: u8,
}

impl<T: Transport, C: Clock> std::fmt::Debug for HostLoop<T, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostLoop")
            .field("host", &self.host)
            .field("sip_addr", &self.sip_addr)
            .finish()
    }
}

/// The warning for a peer without a cluster key on an address other hosts can reach (logged at
/// start, shown by `sascribe status … overlay`); `None` with a key, or on loopback.
pub fn keyless_warning(host: &Host) -> Option<&'static str> {
    let reachable = !host.handle().addr.ip().is_loopback();
    (reachable && !host.peer().is_authenticated()).then_some(
        "NO CLUSTER KEY on a non-loopback overlay address: anyone who reaches this port can \
         join the overlay, forge and replay its messages. Set cluster_key (the same on every \
         peer; docs/DEPLOY.md)",
    )
}

impl HostLoop<UdpSocket, TokioClock> {
    /// Binds a UDP socket on `listen` and creates a peer with `id` there (the peer is known by
    /// the socket's local address; see [`HostLoop::bind_advertised`] when that is a wildcard).
    pub async fn bind(
        listen: SocketAddr,
        id: NodeId,
        config: Config,
        seed: u64,
    ) -> io::Result<Self> {
        Self::bind_advertised(listen, None, id, config, seed).await
    }

    /// Like [`HostLoop::bind`], announcing `advertise` (when given) as the peer's address.
    pub async fn bind_advertised(
        listen: SocketAddr,
        advertise: Option<SocketAddr>,
        id: NodeId,
        config: Config,
        seed: u64,
    ) -> io::Result<Self> {
        let socket = UdpSocket::bind(listen).await?;
        transport::enlarge_recv_buffer(&socket);
        let addr = match advertise {
            Some(a) => a,
            None => socket.local_addr()?,
        };
        if addr.ip().is_unspecified() || addr.port() == 0 {
            tracing::warn!(%addr, "the peer's overlay address is not routable; pass an advertised address");
        }
        let clock = TokioClock::new();
        let host = Host::new(id, addr, config, clock.now(), os_seeds(seed)?);
        if let Some(w) = keyless_warning(&host) {
            tracing::warn!(%addr, "{w}");
        }
        Ok(HostLoop::new(host, socket, clock))
    }

    /// Binds a UDP socket and a TCP listener on `listen` (the same port; with port 0, one
    /// ephemeral port free for both) for the SIP front end and makes this peer a gateway;
    /// `config` builds the endpoint's configuration from the socket's local address (front
    /// ends put their own address in what they send).
    pub async fn bind_sip(
        self,
        listen: SocketAddr,
        config: impl FnOnce(SocketAddr) -> SipConfig,
    ) -> io::Result<Self> {
        let (socket, listener) = tcp::bind_same_port(listen).await?;
        let local = socket.local_addr()?;
        Ok(self.with_sip(config(local), socket).with_sip_tcp(listener))
    }
}

impl<T: Transport, C: Clock> HostLoop<T, C> {
    /// Wraps a host, its overlay transport and a clock. The host's address should be the one
    /// `overlay` is reached at, and its `now` readings must come from `clock`.
    pub fn new(host: Host, overlay: T, clock: C) -> Self {
        let (commands_tx, commands) = mpsc::channel(COMMAND_CAPACITY);
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let last_now = clock.now();
        HostLoop {
            host,
            overlay: Arc::new(overlay),
            sip: None,
            send_threads: false,
            outboxes: [None, None],
            tcp: None,
            clock,
            last_now,
            commands_tx: Some(commands_tx),
            commands,
            events,
            sip_addr: None,
            log: log::EventLog::default(),
            event_capacity: EVENT_CAPACITY,
            sip_depth: 0,
            backlog: 0,
        }
    }

    /// Bounds the event broadcast at `capacity` (default [`EVENT_CAPACITY`]). Call it before
    /// taking handles: those taken earlier keep the old channel.
    pub fn with_event_capacity(mut self, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        self.events = broadcast::channel(capacity).0;
        self.event_capacity = capacity;
        self
    }

    /// Makes the host a SIP gateway with endpoint configuration `config` on transport
    /// `socket`.
    pub fn with_sip(mut self, config: SipConfig, socket: T) -> Self {
        self.host = self.host.with_sip(config);
        self.with_sip_transport(socket)
    }

    /// Gives a host that already is a SIP gateway its SIP transport.
    pub fn with_sip_transport(mut self, socket: T) -> Self {
        self.sip_addr = socket.local_addr().ok();
        self.sip = Some(Arc::new(socket));
        self
    }

    /// Sends each socket's datagrams on a thread of its own (default off: every send is made
    /// by the loop's task). With it, one busy peer uses two cores: its task runs the host, the
    /// threads make the system calls (see `outbox.rs`; the `send_threads` configuration key).
    /// Order per socket is kept. Measured in docs/PERFORMANCE.md ("One peer on two cores"): it
    /// takes a quarter of the work off the peer's task, for more CPU in all.
    pub fn with_send_threads(mut self, on: bool) -> Self {
        self.send_threads = on;
        self
    }

    /// Serves SIP over TCP on `listener` too (normally bound on the SIP transport's address);
    /// the host must be a SIP gateway already. It accepts at most the endpoint's
    /// `max_connections` at a time.
    pub fn with_sip_tcp(mut self, listener: TcpListener) -> Self {
        let max = self.host.sip().map_or(0, |s| s.config().max_connections);
        self.tcp = Some(tcp::Streams::new(listener, max));
        self
    }

    /// The same node over other transports: `f` wraps the overlay transport and the SIP one
    /// (e.g. in an [`impair::Impaired`] for a fault campaign). Call it before taking handles.
    pub fn map_transport<U: Transport>(self, f: impl Fn(T) -> U) -> HostLoop<U, C> {
        // Not shared before the loop runs: the sending threads take their references then.
        let own = |t: Arc<T>| match Arc::try_unwrap(t) {
            Ok(t) => t,
            Err(_) => unreachable!("a transport is shared only while the loop runs"),
        };
        HostLoop {
            host: self.host,
            overlay: Arc::new(f(own(self.overlay))),
            sip: self.sip.map(|s| Arc::new(f(own(s)))),
            send_threads: self.send_threads,
            outboxes: [None, None],
            tcp: self.tcp,
            clock: self.clock,
            last_now: self.last_now,
            commands_tx: self.commands_tx,
            commands: self.commands,
            events: self.events,
            sip_addr: self.sip_addr,
            log: self.log,
            event_capacity: self.event_capacity,
            sip_depth: self.sip_depth,
            backlog: self.backlog,
        }
    }

    /// Starts joining the overlay through the peer at `via`.
    pub fn bootstrap(&mut self, via: SocketAddr) {
        let now = self.now();
        let _ = self
            .host
            .handle_input(now, Input::Call(crate::Call::Bootstrap(via)));
    }

    /// The host, before the node runs (e.g. to install routing state).
    pub fn host_mut(&mut self) -> &mut Host {
        &mut self.host
    }

    /// A handle to this node (valid once it runs). Dropping every handle stops the node.
    #[must_use = "dropping every handle makes the node leave and stop"]
    pub fn handle(&self) -> RuntimeHandle {
        RuntimeHandle::new(
            self.host.id(),
            self.host.handle().addr,
            self.sip_addr,
            self.commands_tx
                .clone()
                .expect("handles are taken before the node runs"),
            self.events.clone(),
        )
    }

    /// Runs the node on a new tokio task and returns its handle. Must be called within a
    /// tokio runtime.
    #[must_use = "dropping every handle makes the node leave and stop"]
    pub fn spawn(self) -> RuntimeHandle {
        let handle = self.handle();
        tokio::spawn(self.run());
        handle
    }

    /// A reading of the clock that never goes backwards (and the wall-clock time at it, for
    /// the host's authenticated datagrams).
    fn now(&mut self) -> Millis {
        self.last_now = self.last_now.max(self.clock.now());
        self.host
            .set_unix_time(self.last_now, self.clock.unix_millis());
        self.last_now
    }

    /// The event loop; returns when the node is stopped (or every handle was dropped, which
    /// counts as a graceful stop).
    pub fn run(self) -> impl Future<Output = ()> + Send {
        let span = tracing::info_span!("peer", id = %self.host.id());
        async move {
            let mut node = self;
            node.commands_tx = None;
            let mut obuf = vec![0u8; MAX_DATAGRAM];
            let mut stage = Stage {
                arena: vec![
                    0u8;
                    if node.sip.is_some() {
                        SIP_STAGE_BYTES + MAX_DATAGRAM
                    } else {
                        0
                    }
                ],
                items: Vec::with_capacity(SIP_QUEUE_FULL),
            };
            let (mut oerr, mut serr) = (ErrorBurst::default(), ErrorBurst::default());
            if let Some(t) = &mut node.tcp {
                t.start();
            }
            if node.send_threads {
                node.start_outboxes();
            }
            let mut deadline = node.drain().await;
            tracing::info!(addr = %node.host.handle().addr, "peer running");
            // Leaving: who to tell once done, and the bound on the dialog handover.
            let mut leaving: Option<(Option<tokio::sync::oneshot::Sender<()>>, Millis)> = None;
            let done = loop {
                let mut pause = false;
                let stop = tokio::select! {
                    cmd = node.commands.recv(), if leaving.is_none() => match cmd {
                        Some(Command::Run(f)) => {
                            let now = node.now();
                            f(&mut node.host, now);
                            None
                        }
                        Some(Command::Gauges(reply)) => {
                            let _ = reply.send(node.tcp.as_ref().map(tcp::Streams::gauges).unwrap_or_default());
                            None
                        }
                        Some(Command::Stop { leave, done }) => Some((leave, Some(done))),
                        None => Some((true, None)),
                    },
                    r = node.overlay.recv_from(&mut obuf) => {
                        let now = node.now();
                        pause = oerr.on_result("overlay", &r);
                        if let Ok((n, from)) = r {
                            let input = Input::Overlay { from, payload: &obuf[..n] };
                            let _ = node.host.handle_input(now, input);
                        }
                        None
                    }
                    r = recv_opt(node.sip.as_deref(), stage.first()) => {
                        pause = serr.on_result("sip", &r);
                        if let Ok(got) = r {
                            node.sip_batch(got, &mut stage).await;
                        }
                        None
                    }
                    ev = stream_event(node.tcp.as_mut()) => {
                        let now = node.now();
                        match node.tcp.as_mut().and_then(|t| t.on_event(ev)) {
                            Some(tcp::StreamInput::Data(conn, from, bytes)) => {
                                node.report_backlog(now);
                                let input = Input::SipStream { conn, from, bytes: &bytes };
                                let _ = node.host.handle_input(now, input);
                            }
                            Some(tcp::StreamInput::Closed(conn)) => {
                                let _ = node.host.handle_input(now, Input::SipStreamClosed { conn });
                            }
                            None => {}
                        }
                        None
                    }
                    at = sleep_opt(&node.clock, deadline) => {
                        // The timer fired: run what is due even if the clock reads a hair early.
                        node.last_now = node.last_now.max(at);
                        let now = node.now();
                        let _ = node.host.handle_input(now, Input::Timeout);
                        None
                    }
                };
                if let Some((leave, done)) = stop {
                    if leave && !node.host.has_left() {
                        let now = node.now();
                        let _ = node.host.handle_input(now, Input::Call(crate::Call::Leave));
                        // The SIP front end hands its dialogs to other peers first; the loop
                        // runs on (taking no more commands) until the host has left.
                        leaving = Some((done, now + LEAVE_HANDOVER_MAX));
                    } else {
                        tracing::info!("stopped without leaving");
                        break done;
                    }
                }
                if let Some((_, until)) = &leaving {
                    let now = node.now();
                    if node.host.has_left() || now >= *until {
                        node.drain().await;
                        // The final NOTIFYs to subscribers on TCP are queued on their
                        // connections: give them a moment to leave.
                        if let Some(t) = &node.tcp {
                            t.flush(LEAVE_FLUSH).await;
                        }
                        if node.host.has_left() {
                            tracing::info!("left the overlay");
                        } else {
                            tracing::warn!("dialog handover unfinished; stopping without leaving");
                        }
                        break leaving.take().and_then(|(done, _)| done);
                    }
                }
                deadline = node.drain().await;
                if pause {
                    let now = node.now();
                    node.clock.sleep_until(now + ERROR_PAUSE).await;
                }
            };
            // Let the sending threads send what is queued, then close the sockets before
            // reporting that the node stopped.
            node.close_outboxes().await;
            let HostLoop {
                overlay,
                sip,
                tcp,
                commands,
                ..
            } = node;
            drop(overlay);
            drop(sip);
            drop(tcp);
            drop(commands);
            if let Some(done) = done {
                let _ = done.send(());
            }
        }
        .instrument(span)
    }

    /// Feeds the SIP datagram `got` (read into [`Stage::first`]) and every datagram already waiting
    /// behind it, read first (up to [`SIP_QUEUE_FULL`], and as many as fit in `stage`): how
    /// many were waiting is the SIP socket's queue depth, reported as the backlog before they
    /// are handled, each drained before the next. A closed-loop client that keeps W requests
    /// outstanding keeps at most W waiting, however busy the socket; an overloaded peer's
    /// queue grows until the kernel drops.
    async fn sip_batch(&mut self, got: (usize, SocketAddr), stage: &mut Stage) {
        let (n, from) = got;
        stage.items.clear();
        stage.items.push((0, n, from));
        let mut off = n;
        if let Some(socket) = self.sip.as_deref() {
            while stage.items.len() < SIP_QUEUE_FULL && off <= SIP_STAGE_BYTES {
                match socket.try_recv_from(&mut stage.arena[off..off + MAX_DATAGRAM]) {
                    Ok((n, from)) => {
                        stage.items.push((off, n, from));
                        off += n;
                    }
                    // Nothing waiting (errors come back through `recv_from`).
                    Err(_) => break,
                }
            }
        }
        self.sip_depth = stage.items.len();
        for (i, &(start, len, from)) in stage.items.iter().enumerate() {
            if i > 0 {
                self.drain().await;
            }
            let now = self.now();
            self.report_backlog(now);
            let input = Input::Sip {
                from,
                payload: &stage.arena[start..start + len],
            };
            let _ = self.host.handle_input(now, input);
        }
    }

    /// The loop's input backlog in percent: the fullest of its input queues (SIP datagrams
    /// waiting in the socket at the last SIP turn, against [`SIP_QUEUE_FULL`]; the TCP
    /// connections' reports; local calls; events not yet taken by a receiver).
    pub fn backlog_percent(&self) -> u8 {
        let pct = transport::percent;
        let mut p = pct(self.sip_depth, SIP_QUEUE_FULL);
        if let Some(t) = &self.tcp {
            p = p.max(t.backlog_percent());
        }
        p = p.max(pct(self.commands.len(), COMMAND_CAPACITY));
        for o in self.outboxes.iter().flatten() {
            p = p.max(o.fill_percent());
        }
        if self.events.receiver_count() > 0 {
            p = p.max(pct(self.events.len(), self.event_capacity));
        }
        p
    }

    /// Tells the host the backlog when it changed ([`Input::Backlog`]).
    fn report_backlog(&mut self, now: Millis) {
        let percent = self.backlog_percent();
        if percent != self.backlog {
            self.backlog = percent;
            let _ = self.host.handle_input(now, Input::Backlog { percent });
        }
    }

    /// Drains the host's outputs; returns its next deadline.
    async fn drain(&mut self) -> Option<Millis> {
        loop {
            match self.host.poll_output() {
                Output::Transmit(t) => self.send(t).await,
                Output::Close(conn) => {
                    if let Some(tcp) = &mut self.tcp {
                        tcp.close(conn);
                    }
                }
                Output::Event(ev) => {
                    self.log.event(&ev, self.clock.now());
                    if self.events.receiver_count() > 0 {
                        let _ = self.events.send(ev);
                    }
                }
                Output::Timeout(at) => {
                    // Connections dropped on a full write queue: the host hears of them, and
                    // what that makes it do is drained too.
                    let failed = self.tcp.as_mut().map(tcp::Streams::take_failed);
                    match failed.filter(|f| !f.is_empty()) {
                        Some(failed) => {
                            let now = self.now();
                            for conn in failed {
                                let input = Input::SipStreamClosed { conn };
                                let _ = self.host.handle_input(now, input);
                            }
                        }
                        None => return (at != Millis::MAX).then_some(at),
                    }
                }
            }
        }
    }

    /// Starts a sending thread per datagram socket; a socket whose thread cannot start is
    /// sent on by the loop itself.
    fn start_outboxes(&mut self) {
        let sockets = [(Some(&self.overlay), "overlay"), (self.sip.as_ref(), "sip")];
        for (slot, (socket, what)) in self.outboxes.iter_mut().zip(sockets) {
            let Some(socket) = socket else { continue };
            match outbox::Outbox::start(Arc::clone(socket), what) {
                Ok(o) => *slot = Some(o),
                Err(e) => {
                    tracing::warn!(socket = what, error = %e, "no sending thread; the loop sends")
                }
            }
        }
    }

    /// Closes the sending threads' queues and waits, at most [`LEAVE_FLUSH`], for them to send
    /// what is queued; past that it aborts them (they drop the rest) and waits as long again
    /// for them to end.
    async fn close_outboxes(&mut self) {
        let threads: Vec<_> = self
            .outboxes
            .iter_mut()
            .filter_map(Option::take)
            .map(outbox::Outbox::close)
            .collect();
        let start = self.now();
        let (flush, abort) = (
            start + LEAVE_FLUSH.as_millis() as Millis,
            start + 2 * LEAVE_FLUSH.as_millis() as Millis,
        );
        let mut aborted = false;
        while threads.iter().any(|t| !t.is_finished()) {
            let now = self.now();
            if now >= flush && !aborted {
                aborted = true;
                // Past the bound: the rest of the queue is dropped; each thread ends after the
                // datagram it is sending, and with it its hold on the socket.
                tracing::warn!("sending threads still busy at stop; dropping what is queued");
                threads.iter().for_each(outbox::Closing::abort);
            }
            if now >= abort {
                tracing::warn!("a sending thread did not end; its socket stays open until it does");
                break;
            }
            self.clock.sleep_until(now + 1).await;
        }
        // Reap those that ended (at once: their work is done), so none outlives the loop.
        for t in threads.into_iter().filter(|t| t.is_finished()) {
            t.join();
        }
    }

    async fn send(&mut self, t: Transmit) {
        let (socket, what, i) = match t.socket {
            Socket::Overlay => (Some(&self.overlay), "overlay", 0),
            Socket::SipUdp => (self.sip.as_ref(), "sip", 1),
            Socket::SipTcp(conn) | Socket::SipTcpConnect(conn) => {
                match &mut self.tcp {
                    Some(tcp) if matches!(t.socket, Socket::SipTcp(_)) => {
                        tcp.write(conn, t.payload)
                    }
                    Some(tcp) => tcp.connect(conn, t.dst, t.payload),
                    None => tracing::warn!(dst = %t.dst, "SIP TCP transmit without TCP dropped"),
                }
                return;
            }
        };
        let Some(socket) = socket else {
            tracing::warn!(dst = %t.dst, "SIP transmit without a SIP socket dropped");
            return;
        };
        let (payload, dst) = match &self.outboxes[i] {
            Some(o) => match o.send(t.payload, t.dst).await {
                Ok(()) => return,
                // The thread is gone (it panicked): send here.
                Err(back) => back,
            },
            None => (t.payload, t.dst),
        };
        if let Err(e) = socket.send_to(&payload, dst).await {
            log_send_error(what, dst, &e);
        }
    }
}

/// Logs a failed send: at debug level when it only reports an earlier datagram to a closed
/// port ([`quiet`]).
fn log_send_error(what: &str, dst: SocketAddr, e: &io::Error) {
    if quiet(e) {
        tracing::debug!(socket = what, %dst, error = %e, "send failed");
    } else {
        tracing::warn!(socket = what, %dst, error = %e, "send failed");
    }
}

/// Errors that only report an earlier datagram to a closed port (ICMP), routine in an overlay
/// with departed peers.
fn quiet(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
    )
}

async fn recv_opt<T: Transport>(
    socket: Option<&T>,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

async fn stream_event(tcp: Option<&mut tcp::Streams>) -> tcp::StreamEvent {
    match tcp {
        Some(t) => t.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_opt<C: Clock>(clock: &C, at: Option<Millis>) -> Millis {
    match at {
        Some(at) => {
            clock.sleep_until(at).await;
            at
        }
        None => std::future::pending().await,
    }
}

/// Counts consecutive receive errors of one socket and pauses the loop when they pile up
/// (a transport that keeps failing must not spin the CPU).
#[derive(Default)]
struct ErrorBurst(u32);

impl ErrorBurst {
    fn on_result<R>(&mut self, what: &str, r: &io::Result<R>) -> bool {
        match r {
            Ok(_) => {
                self.0 = 0;
                false
            }
            Err(e) => {
                self.0 += 1;
                if quiet(e) {
                    tracing::debug!(socket = what, error = %e, "receive failed");
                } else {
                    tracing::warn!(socket = what, error = %e, "receive failed");
                }
                self.0 >= ERROR_BURST
            }
        }
    }
}
