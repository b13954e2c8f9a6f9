//! # Tokio driver: one [`Peer`] per UDP socket, real timers
//!
//! The runtime is deliberately thin: it moves datagrams between sockets and the sans-IO core,
//! turns the core's [`Peer::poll_timeout`] into a timer, and carries local API calls in from a
//! [`RuntimeHandle`]. Every protocol decision stays in the core.
//!
//! The socket and the clock are behind two small traits, [`Transport`] and [`Clock`], so that a
//! conformance harness can run exactly this event loop over its own delivery and its own time.
//! The production implementations are [`tokio::net::UdpSocket`] and [`TokioClock`].
//!
//! An optional [`Frontend`] (the SIP front end) sits above the peer with its own socket: it gets
//! that socket's datagrams, every [`Event`] of the core, and its own timer; it may call the
//! peer's local API from any of those.
//!
//! # Event loop
//! One task per peer selects over: a local command (API call or stop), an overlay datagram, a
//! front-end datagram, and the earliest of the core's and the front end's deadlines. After every
//! input it drains the outputs in the order [`Peer`] documents: overlay transmits, then events
//! (each broadcast to [`RuntimeHandle::events`] receivers and handed to the front end), then the
//! front end's transmits, repeated until nothing moves; the next deadline is read last. I/O
//! errors are logged and the loop goes on.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use sascribe::runtime::Node;
//! use sascribe::{Config, NodeId};
//! let mut node = Node::bind("127.0.0.1:0".parse().unwrap(), NodeId(42), Config::default(), 7).await?;
//! node.bootstrap("127.0.0.1:7000".parse().unwrap());
//! let handle = node.spawn();
//! handle.wait_ready(std::time::Duration::from_secs(10)).await.expect("joined");
//! handle.shutdown().await;
//! # Ok(()) }
//! ```

mod clock;
mod config_file;
mod transport;

pub use clock::{Clock, TokioClock};
pub use config_file::{ConfigError, ConfigFile};
pub use transport::Transport;

use crate::event::{Event, GroupView, PubHandle, SubHandle, SubscribeError};
use crate::id::{GroupId, NodeId};
use crate::io::{Stats, Transmit};
use crate::peer::Peer;
use crate::wire::ETag;
use crate::{Config, Millis};
use bytes::Bytes;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::Instrument;

/// Largest datagram the runtime reads (the UDP maximum).
pub const MAX_DATAGRAM: usize = 65_535;
/// Capacity of the event broadcast; a receiver that falls further behind sees
/// [`broadcast::error::RecvError::Lagged`].
pub const EVENT_CAPACITY: usize = 16_384;
/// Capacity of the command queue of one node.
const COMMAND_CAPACITY: usize = 1_024;
/// After this many consecutive receive errors on a socket the loop pauses briefly.
const ERROR_BURST: u32 = 16;
/// Length of that pause (ms).
const ERROR_PAUSE: Millis = 10;

/// A sans-IO component above the peer that talks to user agents over its own UDP socket.
pub trait Frontend: Send + 'static {
    /// A datagram arrived on the front end's socket from `from`.
    fn handle_datagram(&mut self, now: Millis, from: SocketAddr, bytes: &[u8], peer: &mut Peer);
    /// The peer emitted `event` (every core event is offered, in order).
    fn handle_peer_event(&mut self, now: Millis, event: Event, peer: &mut Peer);
    /// Time passed; called once `now` reached [`Frontend::poll_timeout`].
    fn handle_timeout(&mut self, now: Millis, peer: &mut Peer);
    /// Next datagram to send on the front end's socket.
    fn poll_transmit(&mut self) -> Option<Transmit>;
    /// When [`Frontend::handle_timeout`] must be called next (`None`: no timer).
    fn poll_timeout(&self) -> Option<Millis>;
}

/// The runtime of this peer is no longer running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the peer runtime has stopped")]
pub struct Stopped;

/// Error of a local subscription call made through a [`RuntimeHandle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The runtime has stopped.
    #[error(transparent)]
    Stopped(#[from] Stopped),
    /// The core refused the call.
    #[error(transparent)]
    Subscribe(#[from] SubscribeError),
}

/// Why [`RuntimeHandle::wait_ready`] gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadyError {
    /// The runtime has stopped.
    #[error(transparent)]
    Stopped(#[from] Stopped),
    /// The overlay join did not complete in time.
    #[error("the overlay join did not complete in time")]
    Timeout,
}

type Call = Box<dyn FnOnce(&mut Peer, Millis) + Send>;

enum Command {
    /// Run a closure on the peer (a local API call).
    Call(Call),
    /// Stop the loop; `leave` first when graceful.
    Stop {
        leave: bool,
        done: oneshot::Sender<()>,
    },
}

/// Cloneable handle to a running [`Node`]: local API calls, the event stream, and stop.
///
/// Calls are queued to the node's task and answered once the core handled them (their
/// outputs are drained before the next input). Dropping every handle makes the node leave the
/// overlay gracefully and stop.
#[derive(Clone, Debug)]
pub struct RuntimeHandle {
    id: NodeId,
    overlay_addr: SocketAddr,
    frontend_addr: Option<SocketAddr>,
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<Event>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Call(_) => f.write_str("Call"),
            Command::Stop { leave, .. } => write!(f, "Stop {{ leave: {leave} }}"),
        }
    }
}

impl RuntimeHandle {
    /// The peer's overlay id.
    pub fn id(&self) -> NodeId {
        self.id
    }
    /// The address the peer is known by in the overlay.
    pub fn overlay_addr(&self) -> SocketAddr {
        self.overlay_addr
    }
    /// Local address of the front end's socket (where user agents send requests), if any.
    pub fn frontend_addr(&self) -> Option<SocketAddr> {
        self.frontend_addr
    }
    /// A new receiver of the core's events, from now on (every event, in order).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
    /// Whether the node's task is still running.
    pub fn is_running(&self) -> bool {
        !self.commands.is_closed()
    }

    /// Runs `f` on the peer inside the node's task (with the node's current time) and returns
    /// its result. The peer's outputs are drained right after.
    pub async fn with_peer<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Peer, Millis) -> R + Send + 'static,
    ) -> Result<R, Stopped> {
        let (tx, rx) = oneshot::channel();
        let call: Call = Box::new(move |peer, now| {
            let _ = tx.send(f(peer, now));
        });
        self.commands
            .send(Command::Call(call))
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// [`Peer::subscribe`]; the outcome follows on the event stream.
    pub async fn subscribe(
        &self,
        gid: GroupId,
        handle: SubHandle,
        expires: u32,
    ) -> Result<u32, CallError> {
        Ok(self
            .with_peer(move |p, now| p.subscribe(now, gid, handle, expires))
            .await??)
    }
    /// [`Peer::refresh`].
    pub async fn refresh(&self, handle: SubHandle, expires: u32) -> Result<u32, CallError> {
        Ok(self
            .with_peer(move |p, now| p.refresh(now, handle, expires))
            .await??)
    }
    /// [`Peer::unsubscribe`].
    pub async fn unsubscribe(&self, handle: SubHandle) -> Result<(), CallError> {
        Ok(self
            .with_peer(move |p, now| p.unsubscribe(now, handle))
            .await??)
    }
    /// [`Peer::publish`]; the outcome follows on the event stream.
    pub async fn publish(
        &self,
        gid: GroupId,
        req: PubHandle,
        body: Option<Bytes>,
        if_match: Option<ETag>,
        expires: Option<u32>,
    ) -> Result<(), Stopped> {
        self.with_peer(move |p, now| p.publish(now, gid, req, body, if_match, expires))
            .await
    }
    /// [`Peer::lookup`]; the responsible peer emits [`Event::LookupDelivered`].
    pub async fn lookup(&self, key: u128, token: u64) -> Result<(), Stopped> {
        self.with_peer(move |p, now| p.lookup(now, key, token))
            .await
    }
    /// The peer's counters.
    pub async fn stats(&self) -> Result<Stats, Stopped> {
        self.with_peer(|p, _| p.stats().clone()).await
    }
    /// [`Peer::group_view`].
    pub async fn group_view(&self, gid: GroupId) -> Result<Option<GroupView>, Stopped> {
        self.with_peer(move |p, _| p.group_view(gid)).await
    }
    /// Whether the overlay join completed.
    pub async fn is_ready(&self) -> Result<bool, Stopped> {
        self.with_peer(|p, _| p.is_ready()).await
    }

    /// Waits until the peer completed its overlay join (returns at once if it has).
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), ReadyError> {
        let mut events = self.events();
        if self.is_ready().await? {
            return Ok(());
        }
        let joined = async {
            loop {
                match events.recv().await {
                    Ok(Event::Joined) => return Ok(()),
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(ReadyError::Stopped(Stopped))
                    }
                }
            }
        };
        match tokio::time::timeout(timeout, joined).await {
            Ok(r) => r,
            // The event may have been missed by a lagging receiver: ask once more.
            Err(_) if self.is_ready().await? => Ok(()),
            Err(_) => Err(ReadyError::Timeout),
        }
    }

    /// Leaves the overlay gracefully ([`Peer::leave`], departure messages sent) and stops the
    /// node; returns once its task has ended. Does nothing if it already stopped.
    pub async fn shutdown(&self) {
        self.stop(true).await;
    }

    /// Stops the node at once without telling anyone, as a crash would (sockets closed, state
    /// lost); returns once its task has ended.
    pub async fn abort(&self) {
        self.stop(false).await;
    }

    async fn stop(&self, leave: bool) {
        let (done, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Stop { leave, done })
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }
}

/// The core state the loop mutates: the peer, the front end, the event fan-out, the clock's
/// last reading.
struct Core {
    peer: Peer,
    frontend: Option<Box<dyn Frontend>>,
    events: broadcast::Sender<Event>,
    last_now: Millis,
}

impl Core {
    /// A reading of the clock that never goes backwards.
    fn tick(&mut self, reading: Millis) -> Millis {
        self.last_now = self.last_now.max(reading);
        self.last_now
    }

    fn deadline(&self) -> Option<Millis> {
        let p = self.peer.poll_timeout();
        let f = self.frontend.as_ref().and_then(|f| f.poll_timeout());
        match (p, f) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_timeout(&mut self, now: Millis) {
        if self.peer.poll_timeout().is_some_and(|t| t <= now) {
            self.peer.handle_timeout(now);
        }
        if let Some(fe) = &mut self.frontend {
            if fe.poll_timeout().is_some_and(|t| t <= now) {
                fe.handle_timeout(now, &mut self.peer);
            }
        }
    }

    /// Drains every output until nothing moves.
    async fn drain<T: Transport>(&mut self, now: Millis, overlay: &T, sip: Option<&T>) {
        loop {
            let mut moved = false;
            while let Some(t) = self.peer.poll_transmit() {
                moved = true;
                send(overlay, "overlay", t).await;
            }
            while let Some(ev) = self.peer.poll_event() {
                moved = true;
                tracing::debug!(peer = %self.peer.id(), event = ?ev, "event");
                if self.events.receiver_count() > 0 {
                    let _ = self.events.send(ev.clone());
                }
                if let Some(fe) = &mut self.frontend {
                    fe.handle_peer_event(now, ev, &mut self.peer);
                }
            }
            if let Some(fe) = &mut self.frontend {
                while let Some(t) = fe.poll_transmit() {
                    match sip {
                        Some(s) => send(s, "frontend", t).await,
                        None => {
                            tracing::warn!(dst = %t.dst, "front end transmit without a socket dropped")
                        }
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }
}

async fn send<T: Transport>(socket: &T, what: &str, t: Transmit) {
    if let Err(e) = socket.send_to(&t.payload, t.dst).await {
        if quiet(&e) {
            tracing::debug!(socket = what, dst = %t.dst, error = %e, "send failed");
        } else {
            tracing::warn!(socket = what, dst = %t.dst, error = %e, "send failed");
        }
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

/// One peer bound to its transport and clock, with an optional front end. Build it, call
/// [`Node::bootstrap`] if it joins an existing overlay, then [`Node::spawn`] (or await
/// [`Node::run`]).
pub struct Node<T: Transport, C: Clock> {
    core: Core,
    overlay: T,
    sip: Option<T>,
    clock: C,
    commands_tx: mpsc::Sender<Command>,
    commands: mpsc::Receiver<Command>,
    frontend_addr: Option<SocketAddr>,
}

impl<T: Transport, C: Clock> std::fmt::Debug for Node<T, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("peer", &self.core.peer)
            .field("frontend_addr", &self.frontend_addr)
            .finish()
    }
}

impl Node<UdpSocket, TokioClock> {
    /// Binds a UDP socket on `listen` and creates a peer with `id` there (the peer is known by
    /// the socket's local address; see [`Node::bind_advertised`] when that is a wildcard).
    pub async fn bind(
        listen: SocketAddr,
        id: NodeId,
        config: Config,
        seed: u64,
    ) -> io::Result<Self> {
        Self::bind_advertised(listen, None, id, config, seed).await
    }

    /// Like [`Node::bind`], announcing `advertise` (when given) as the peer's address.
    pub async fn bind_advertised(
        listen: SocketAddr,
        advertise: Option<SocketAddr>,
        id: NodeId,
        config: Config,
        seed: u64,
    ) -> io::Result<Self> {
        let socket = UdpSocket::bind(listen).await?;
        let addr = match advertise {
            Some(a) => a,
            None => socket.local_addr()?,
        };
        if addr.ip().is_unspecified() || addr.port() == 0 {
            tracing::warn!(%addr, "the peer's overlay address is not routable; pass an advertised address");
        }
        let clock = TokioClock::new();
        let peer = Peer::new(id, addr, config, clock.now(), seed);
        Ok(Node::new(peer, socket, clock))
    }

    /// Binds a UDP socket on `listen` and attaches the front end `make` builds for the
    /// socket's local address (front ends put their own address in what they send).
    pub async fn bind_frontend<F: Frontend>(
        self,
        listen: SocketAddr,
        make: impl FnOnce(SocketAddr) -> F,
    ) -> io::Result<Self> {
        let socket = UdpSocket::bind(listen).await?;
        let local = socket.local_addr()?;
        Ok(self.with_frontend(make(local), socket))
    }
}

impl<T: Transport, C: Clock> Node<T, C> {
    /// Wraps an existing peer, its overlay transport and a clock. The peer's address should be
    /// the one `overlay` is reached at, and its `now` readings must come from `clock`.
    pub fn new(peer: Peer, overlay: T, clock: C) -> Self {
        let (commands_tx, commands) = mpsc::channel(COMMAND_CAPACITY);
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let now = clock.now();
        Node {
            core: Core {
                peer,
                frontend: None,
                events,
                last_now: now,
            },
            overlay,
            sip: None,
            clock,
            commands_tx,
            commands,
            frontend_addr: None,
        }
    }

    /// Attaches a front end with its own transport (replacing any earlier one).
    pub fn with_frontend(mut self, frontend: impl Frontend, socket: T) -> Self {
        self.frontend_addr = socket.local_addr().ok();
        self.core.frontend = Some(Box::new(frontend));
        self.sip = Some(socket);
        self
    }

    /// Starts joining the overlay through the peer at `via` ([`Peer::bootstrap`]).
    pub fn bootstrap(&mut self, via: SocketAddr) {
        let now = self.core.tick(self.clock.now());
        self.core.peer.bootstrap(now, via);
    }

    /// The peer, before the node runs (e.g. to install routing state).
    pub fn peer_mut(&mut self) -> &mut Peer {
        &mut self.core.peer
    }

    /// A handle to this node (valid once it runs). Dropping every handle stops the node.
    #[must_use = "dropping every handle makes the node leave and stop"]
    pub fn handle(&self) -> RuntimeHandle {
        RuntimeHandle {
            id: self.core.peer.id(),
            overlay_addr: self.core.peer.handle().addr,
            frontend_addr: self.frontend_addr,
            commands: self.commands_tx.clone(),
            events: self.core.events.clone(),
        }
    }

    /// Runs the node on a new tokio task and returns its handle. Must be called within a
    /// tokio runtime.
    #[must_use = "dropping every handle makes the node leave and stop"]
    pub fn spawn(self) -> RuntimeHandle {
        let handle = self.handle();
        tokio::spawn(self.run());
        handle
    }

    /// The event loop; returns when the node is stopped (or every handle was dropped, which
    /// counts as a graceful stop).
    pub fn run(self) -> impl Future<Output = ()> + Send {
        let Node {
            mut core,
            overlay,
            sip,
            clock,
            commands_tx,
            mut commands,
            ..
        } = self;
        // Only handles keep the node alive.
        drop(commands_tx);
        let span = tracing::info_span!("peer", id = %core.peer.id());
        async move {
            let mut obuf = vec![0u8; MAX_DATAGRAM];
            let mut sbuf = vec![0u8; if sip.is_some() { MAX_DATAGRAM } else { 0 }];
            let (mut oerr, mut serr) = (ErrorBurst::default(), ErrorBurst::default());
            let mut now = core.tick(clock.now());
            core.drain(now, &overlay, sip.as_ref()).await;
            tracing::info!(addr = %core.peer.handle().addr, "peer running");
            let done = loop {
                let deadline = core.deadline();
                let mut pause = false;
                let stop = tokio::select! {
                    cmd = commands.recv() => match cmd {
                        Some(Command::Call(f)) => {
                            now = core.tick(clock.now());
                            f(&mut core.peer, now);
                            None
                        }
                        Some(Command::Stop { leave, done }) => Some((leave, Some(done))),
                        None => Some((true, None)),
                    },
                    r = overlay.recv_from(&mut obuf) => {
                        now = core.tick(clock.now());
                        pause = oerr.on_result("overlay", &r);
                        if let Ok((n, from)) = r {
                            core.peer.handle_datagram(now, from, &obuf[..n]);
                        }
                        None
                    }
                    r = recv_opt(sip.as_ref(), &mut sbuf) => {
                        now = core.tick(clock.now());
                        pause = serr.on_result("frontend", &r);
                        if let (Ok((n, from)), Some(fe)) = (r, core.frontend.as_mut()) {
                            fe.handle_datagram(now, from, &sbuf[..n], &mut core.peer);
                        }
                        None
                    }
                    at = sleep_opt(&clock, deadline) => {
                        // The timer fired: run what is due even if the clock reads a hair early.
                        now = core.tick(clock.now().max(at));
                        core.on_timeout(now);
                        None
                    }
                };
                if let Some((leave, done)) = stop {
                    if leave && !core.peer.has_left() {
                        now = core.tick(clock.now());
                        core.peer.leave(now);
                        core.drain(now, &overlay, sip.as_ref()).await;
                        tracing::info!("left the overlay");
                    } else {
                        tracing::info!("stopped without leaving");
                    }
                    break done;
                }
                core.drain(now, &overlay, sip.as_ref()).await;
                if pause {
                    clock.sleep_until(now + ERROR_PAUSE).await;
                }
            };
            // Close the sockets before reporting that the node stopped.
            drop(overlay);
            drop(sip);
            drop(commands);
            if let Some(done) = done {
                let _ = done.send(());
            }
        }
        .instrument(span)
    }
}
