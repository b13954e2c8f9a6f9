//! How the harness reaches one production peer: the transport/clock seam.
//!
//! * [`CoreDriver`] calls the sans-IO [`Peer`] directly.
//! * [`RuntimeDriver`] runs the peer inside the tokio event loop `sascribe peer` runs
//!   ([`sascribe::runtime::Node`]), with only the socket and the clock swapped for
//!   harness-controlled ones ([`HarnessTransport`], [`HarnessClock`]): datagrams reach the peer
//!   through the loop's `recv_from`, what it sends leaves through `send_to`, and API calls and
//!   the harness's timer firings go through the node's command channel
//!   ([`sascribe::runtime::RuntimeHandle::with_peer`]). After every input the driver waits until
//!   the loop has handled it and drained its outputs (a no-op command queued behind it).

use sascribe::runtime::{Clock, Node, RuntimeHandle, Transport};
use sascribe::{Event, Millis, Peer, Transmit};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc};

/// A call on the peer at the harness's time: `Ok(log line)` or `Err(why it failed)`.
pub type Call = Box<dyn FnOnce(&mut Peer, Millis) -> Result<String, String> + Send>;

/// One production peer as the harness drives it.
pub trait Driver {
    /// Runs `f` on the peer at time `now`.
    fn call(&mut self, now: Millis, f: Call) -> Result<String, String>;
    /// Hands the peer a datagram from `from` at time `now`.
    fn datagram(&mut self, now: Millis, from: SocketAddr, payload: Vec<u8>);
    /// The peer's next deadline.
    fn next_deadline(&mut self) -> Option<Millis>;
    /// Takes what the peer sent and told its user agents since the last drain, with notes
    /// about anything lost on the way.
    fn drain(&mut self) -> (Vec<Transmit>, Vec<Event>, Vec<String>);
}

/// The sans-IO core, called directly.
#[derive(Debug)]
pub struct CoreDriver {
    peer: Peer,
}

impl CoreDriver {
    /// Drives `peer`.
    pub fn new(peer: Peer) -> Self {
        CoreDriver { peer }
    }
}

impl Driver for CoreDriver {
    fn call(&mut self, now: Millis, f: Call) -> Result<String, String> {
        f(&mut self.peer, now)
    }
    fn datagram(&mut self, now: Millis, from: SocketAddr, payload: Vec<u8>) {
        self.peer.handle_datagram(now, from, &payload);
    }
    fn next_deadline(&mut self) -> Option<Millis> {
        self.peer.poll_timeout()
    }
    fn drain(&mut self) -> (Vec<Transmit>, Vec<Event>, Vec<String>) {
        let mut t = Vec::new();
        while let Some(x) = self.peer.poll_transmit() {
            t.push(x);
        }
        let mut e = Vec::new();
        while let Some(x) = self.peer.poll_event() {
            e.push(x);
        }
        (t, e, Vec::new())
    }
}

/// The harness's clock: it reads what the harness set, and a sleep completes only if its
/// deadline already passed (the harness fires due timers itself, through the command channel).
#[derive(Clone, Debug, Default)]
pub struct HarnessClock {
    now: Arc<AtomicU64>,
}

impl HarnessClock {
    /// Sets the time.
    pub fn set(&self, t: Millis) {
        self.now.fetch_max(t, Ordering::SeqCst);
    }
}

impl Clock for HarnessClock {
    fn now(&self) -> Millis {
        self.now.load(Ordering::SeqCst)
    }
    fn sleep_until(&self, at: Millis) -> impl Future<Output = ()> + Send {
        let due = self.now() >= at;
        async move {
            if !due {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The harness's socket: datagrams the harness delivers come out of `recv_from`; what the
/// node sends is captured, never sent.
#[derive(Debug)]
pub struct HarnessTransport {
    addr: SocketAddr,
    inbox: tokio::sync::Mutex<mpsc::UnboundedReceiver<(Vec<u8>, SocketAddr)>>,
    queued: Arc<AtomicUsize>,
    sent: Arc<Mutex<Vec<Transmit>>>,
}

impl Transport for HarnessTransport {
    async fn send_to(&self, buf: &[u8], dst: SocketAddr) -> io::Result<()> {
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Transmit {
                dst,
                payload: buf.to_vec(),
            });
        Ok(())
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let mut inbox = self.inbox.lock().await;
        match inbox.recv().await {
            Some((d, from)) => {
                self.queued.fetch_sub(1, Ordering::SeqCst);
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                Ok((n, from))
            }
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

/// A peer inside the runtime's event loop, on a current-thread tokio runtime the harness
/// blocks on.
pub struct RuntimeDriver {
    rt: Arc<tokio::runtime::Runtime>,
    handle: RuntimeHandle,
    clock: HarnessClock,
    inbox: mpsc::UnboundedSender<(Vec<u8>, SocketAddr)>,
    queued: Arc<AtomicUsize>,
    sent: Arc<Mutex<Vec<Transmit>>>,
    events: broadcast::Receiver<Event>,
}

impl std::fmt::Debug for RuntimeDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeDriver")
            .field("id", &self.handle.id())
            .finish()
    }
}

impl RuntimeDriver {
    /// Starts `peer` in a runtime node on `rt`, with the harness's transport and clock.
    pub fn start(rt: Arc<tokio::runtime::Runtime>, peer: Peer, now: Millis) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let clock = HarnessClock::default();
        clock.set(now);
        let transport = HarnessTransport {
            addr: peer.handle().addr,
            inbox: tokio::sync::Mutex::new(rx),
            queued: Arc::clone(&queued),
            sent: Arc::clone(&sent),
        };
        let node = Node::new(peer, transport, clock.clone());
        let handle = node.handle();
        let events = handle.events();
        let _guard = rt.enter();
        tokio::spawn(node.run());
        let mut d = RuntimeDriver {
            rt,
            handle,
            clock,
            inbox: tx,
            queued,
            sent,
            events,
        };
        d.barrier();
        d
    }

    /// Waits until the loop handled everything queued before and drained its outputs.
    fn barrier(&mut self) {
        let h = self.handle.clone();
        let queued = Arc::clone(&self.queued);
        self.rt.block_on(async move {
            while queued.load(Ordering::SeqCst) > 0 {
                tokio::task::yield_now().await;
            }
            // Two no-op commands: the second runs after the first one's iteration drained.
            let _ = h.with_peer(|_, _| ()).await;
            let _ = h.with_peer(|_, _| ()).await;
        });
    }
}

impl Drop for RuntimeDriver {
    fn drop(&mut self) {
        let h = self.handle.clone();
        self.rt.block_on(async move { h.abort().await });
    }
}

impl Driver for RuntimeDriver {
    fn call(&mut self, now: Millis, f: Call) -> Result<String, String> {
        self.clock.set(now);
        let h = self.handle.clone();
        let r = self
            .rt
            .block_on(async move { h.with_peer(f).await })
            .map_err(|_| "the runtime node stopped".to_string())?;
        self.barrier();
        r
    }

    fn datagram(&mut self, now: Millis, from: SocketAddr, payload: Vec<u8>) {
        self.clock.set(now);
        self.queued.fetch_add(1, Ordering::SeqCst);
        if self.inbox.send((payload, from)).is_err() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
        }
        self.barrier();
    }

    fn next_deadline(&mut self) -> Option<Millis> {
        let h = self.handle.clone();
        self.rt
            .block_on(async move { h.with_peer(|p, _| p.poll_timeout()).await })
            .ok()
            .flatten()
    }

    fn drain(&mut self) -> (Vec<Transmit>, Vec<Event>, Vec<String>) {
        let t = std::mem::take(&mut *self.sent.lock().unwrap_or_else(|p| p.into_inner()));
        let (mut e, mut notes) = (Vec::new(), Vec::new());
        loop {
            match self.events.try_recv() {
                Ok(ev) => e.push(ev),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    notes.push(format!("runtime event stream lagged: {n} events lost"));
                }
                Err(_) => break,
            }
        }
        (t, e, notes)
    }
}
