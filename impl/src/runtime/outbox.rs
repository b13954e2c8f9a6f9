//! Sending on a thread of its own, so that one peer uses a second core when it has the work.
//!
//! Profiled under SIPp at 12,000 publish-modify-remove calls/s (`perf record` on
//! `sascribe cluster --peers 1`, docs/PERFORMANCE.md), the peer's task was the only busy thread:
//! one core at 99 %, a quarter of it in `sendto` (on loopback the kernel delivers the datagram
//! to the receiving socket inside the sender's system call). The host is one state machine and
//! runs on one task, but handing each encoded datagram to a thread that makes the system call
//! takes that quarter off the task's core.
//!
//! An [`Outbox`] is a bounded queue ([`OUTBOX_CAPACITY`] datagrams) in front of one socket and
//! a thread that drains it in order. The event loop awaits room in the queue, so a slow socket
//! slows the loop as an inline send would; the queue's fill counts in the loop's backlog
//! (admission control refuses new SIP work before it grows). On stop the queue is closed and
//! the thread sends what is left, for at most the time the loop gives it.

use super::transport::{percent, Transport};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Datagrams an outbox holds at most before the event loop waits for room.
pub const OUTBOX_CAPACITY: usize = 4_096;

/// A queue of datagrams to one socket and the thread that sends them.
pub(super) struct Outbox {
    tx: mpsc::Sender<(Vec<u8>, SocketAddr)>,
    closing: Closing,
}

/// A sending thread whose queue was closed: it sends what is queued, unless aborted.
pub(super) struct Closing {
    thread: std::thread::JoinHandle<()>,
    /// Set: drop what is still queued (checked before each datagram).
    abort: Arc<AtomicBool>,
}

impl Closing {
    /// Whether the thread has ended.
    pub(super) fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Makes the thread drop what is still queued and end after the datagram it is sending.
    pub(super) fn abort(&self) {
        self.abort.store(true, Ordering::Relaxed);
    }

    /// Waits for the thread to end (at once for one that [`Closing::is_finished`]).
    pub(super) fn join(self) {
        let _ = self.thread.join();
    }
}

impl Outbox {
    /// Starts the sending thread for `socket` (`what` names it in logs and the thread's name).
    /// Must be called within a tokio runtime: the thread drives the socket's futures on it.
    pub(super) fn start<T: Transport>(socket: Arc<T>, what: &'static str) -> std::io::Result<Self> {
        let (tx, mut rx) = mpsc::channel::<(Vec<u8>, SocketAddr)>(OUTBOX_CAPACITY);
        let rt = tokio::runtime::Handle::current();
        let span = tracing::Span::current();
        let abort = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&abort);
        let thread = std::thread::Builder::new()
            .name(format!("tx-{what}"))
            .spawn(move || {
                let _entered = span.enter();
                while let Some((payload, dst)) = rx.blocking_recv() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Err(e) = rt.block_on(socket.send_to(&payload, dst)) {
                        super::log_send_error(what, dst, &e);
                    }
                }
            })?;
        Ok(Outbox {
            tx,
            closing: Closing { thread, abort },
        })
    }

    /// Queues `payload` for `dst`, waiting for room; gives it back if the thread is gone.
    pub(super) async fn send(
        &self,
        payload: Vec<u8>,
        dst: SocketAddr,
    ) -> Result<(), (Vec<u8>, SocketAddr)> {
        self.tx.send((payload, dst)).await.map_err(|e| e.0)
    }

    /// How full the queue is, in percent.
    pub(super) fn fill_percent(&self) -> u8 {
        let max = self.tx.max_capacity();
        percent(max - self.tx.capacity(), max)
    }

    /// Closes the queue; the thread sends what is queued and ends. Returns the thread, for the
    /// caller to wait on as long as it chooses (and to abort).
    pub(super) fn close(self) -> Closing {
        drop(self.tx);
        self.closing
    }
}
