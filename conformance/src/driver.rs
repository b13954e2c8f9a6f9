//! How the harness reaches one production peer: the transport/clock seam.
//!
//! Both drivers drive the same sans-IO [`Host`] — overlay, sa-Scribe and the SIP front end:
//!
//! * [`CoreDriver`] calls the host directly.
//! * [`RuntimeDriver`] runs the host inside the tokio event loop `sascribe peer` runs
//!   ([`sascribe::runtime::HostLoop`]), with only the sockets and the clock swapped for
//!   harness-controlled ones ([`HarnessTransport`], [`HarnessClock`]): datagrams reach the host
//!   through the loop's `recv_from` on its overlay or its SIP socket, what it sends leaves
//!   through `send_to`, and the harness's doors and timer firings go through the node's command
//!   channel ([`sascribe::runtime::RuntimeHandle::with_host`]). After every input the driver
//!   waits until the loop has handled it and drained its outputs (no-op commands queued behind
//!   it).

use sascribe::runtime::{Clock, HostLoop, RuntimeHandle, Transport};
use sascribe::{Event, Host, Input, Millis, Output, Socket, Transmit};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// A call on the host at the harness's time: `Ok(log line)` or `Err(why it failed)`.
pub type Call = Box<dyn FnOnce(&mut Host, Millis) -> Result<String, String> + Send>;

/// One production peer as the harness drives it.
pub trait Driver {
    /// Runs `f` on the host at time `now` (the harness's doors, reads).
    fn call(&mut self, now: Millis, f: Call) -> Result<String, String>;
    /// Hands the host a datagram on `socket` from `from` at time `now`.
    fn datagram(&mut self, now: Millis, socket: Socket, from: SocketAddr, payload: Vec<u8>);
    /// Fires the host's timers due at `now`.
    fn timeout(&mut self, now: Millis);
    /// The host's next deadline.
    fn next_deadline(&mut self) -> Option<Millis>;
    /// Takes what the host sent and told since the last drain.
    fn drain(&mut self) -> Drained;
}

/// What a host put out since the last drain.
#[derive(Debug, Default)]
pub struct Drained {
    /// Datagrams and stream bytes it sent.
    pub transmits: Vec<Transmit>,
    /// Lines for the log (connections it closed).
    pub notes: Vec<String>,
    /// The core's upcalls to its SIP layer, as the SIP layer took them (empty where the
    /// driver cannot see them: the runtime's loop consumes them).
    pub events: Vec<Event>,
}

/// The sans-IO host, called directly.
#[derive(Debug)]
pub struct CoreDriver {
    host: Host,
}

impl CoreDriver {
    /// Drives `host`.
    pub fn new(host: Host) -> Self {
        CoreDriver { host }
    }
}

impl Driver for CoreDriver {
    fn call(&mut self, now: Millis, f: Call) -> Result<String, String> {
        f(&mut self.host, now)
    }
    fn datagram(&mut self, now: Millis, socket: Socket, from: SocketAddr, payload: Vec<u8>) {
        let input = match socket {
            Socket::Overlay => Input::Overlay {
                from,
                payload: &payload,
            },
            Socket::SipUdp => Input::Sip {
                from,
                payload: &payload,
            },
            Socket::SipTcp(conn) | Socket::SipTcpConnect(conn) => Input::SipStream {
                conn,
                from,
                bytes: &payload,
            },
        };
        let _ = self.host.handle_input(now, input);
    }
    fn timeout(&mut self, now: Millis) {
        let _ = self.host.handle_input(now, Input::Timeout);
    }
    fn next_deadline(&mut self) -> Option<Millis> {
        Some(self.host.poll_timeout()).filter(|&t| t != Millis::MAX)
    }
    fn drain(&mut self) -> Drained {
        let mut out = Drained::default();
        loop {
            match self.host.poll_output() {
                Output::Transmit(x) => out.transmits.push(x),
                Output::Close(c) => out.notes.push(format!("close {c}")),
                Output::Event(e) => out.events.push(e),
                Output::Timeout(_) => return out,
            }
        }
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
/// node sends is captured (tagged with the socket it left on), never sent.
#[derive(Debug)]
pub struct HarnessTransport {
    socket: Socket,
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
                socket: self.socket,
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

/// A host inside the runtime's event loop, on a current-thread tokio runtime the harness
/// blocks on.
pub struct RuntimeDriver {
    rt: Arc<tokio::runtime::Runtime>,
    handle: RuntimeHandle,
    clock: HarnessClock,
    overlay: mpsc::UnboundedSender<(Vec<u8>, SocketAddr)>,
    sip: mpsc::UnboundedSender<(Vec<u8>, SocketAddr)>,
    queued: Arc<AtomicUsize>,
    sent: Arc<Mutex<Vec<Transmit>>>,
}

impl std::fmt::Debug for RuntimeDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeDriver")
            .field("id", &self.handle.id())
            .finish()
    }
}

impl RuntimeDriver {
    /// Starts `host` (a SIP gateway reached at `sip_addr`) in a runtime node on `rt`, with the
    /// harness's transports and clock.
    pub fn start(
        rt: Arc<tokio::runtime::Runtime>,
        host: Host,
        sip_addr: SocketAddr,
        now: Millis,
    ) -> Self {
        let queued = Arc::new(AtomicUsize::new(0));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let clock = HarnessClock::default();
        clock.set(now);
        let transport = |socket, addr| {
            let (tx, rx) = mpsc::unbounded_channel();
            let t = HarnessTransport {
                socket,
                addr,
                inbox: tokio::sync::Mutex::new(rx),
                queued: Arc::clone(&queued),
                sent: Arc::clone(&sent),
            };
            (tx, t)
        };
        let (overlay, ot) = transport(Socket::Overlay, host.handle().addr);
        let (sip, st) = transport(Socket::SipUdp, sip_addr);
        let node = HostLoop::new(host, ot, clock.clone()).with_sip_transport(st);
        let handle = node.handle();
        let _guard = rt.enter();
        tokio::spawn(node.run());
        let mut d = RuntimeDriver {
            rt,
            handle,
            clock,
            overlay,
            sip,
            queued,
            sent,
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
            let _ = h.with_host(|_, _| ()).await;
            let _ = h.with_host(|_, _| ()).await;
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
            .block_on(async move { h.with_host(f).await })
            .map_err(|_| "the runtime node stopped".to_string())?;
        self.barrier();
        r
    }

    fn datagram(&mut self, now: Millis, socket: Socket, from: SocketAddr, payload: Vec<u8>) {
        self.clock.set(now);
        let inbox = match socket {
            Socket::Overlay => &self.overlay,
            Socket::SipUdp => &self.sip,
            Socket::SipTcp(conn) | Socket::SipTcpConnect(conn) => {
                // The harness's transports are datagram sockets: stream bytes go in as a call.
                let fed = Box::new(move |h: &mut Host, now| {
                    let input = Input::SipStream {
                        conn,
                        from,
                        bytes: &payload,
                    };
                    let _ = h.handle_input(now, input);
                    Ok(String::new())
                });
                let _ = self.call(now, fed);
                return;
            }
        };
        self.queued.fetch_add(1, Ordering::SeqCst);
        if inbox.send((payload, from)).is_err() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
        }
        self.barrier();
    }

    fn timeout(&mut self, now: Millis) {
        let fired = Box::new(|h: &mut Host, now| {
            let _ = h.handle_input(now, Input::Timeout);
            Ok(String::new())
        });
        let _ = self.call(now, fired);
    }

    fn next_deadline(&mut self) -> Option<Millis> {
        let h = self.handle.clone();
        self.rt
            .block_on(async move { h.with_host(|h, _| h.poll_timeout()).await })
            .ok()
            .filter(|&t| t != Millis::MAX)
    }

    fn drain(&mut self) -> Drained {
        let transmits = std::mem::take(&mut *self.sent.lock().unwrap_or_else(|p| p.into_inner()));
        Drained {
            transmits,
            ..Drained::default()
        }
    }
}
