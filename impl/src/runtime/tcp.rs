//! SIP over TCP in the runtime: the listener on the SIP port, one task per connection, and
//! bounded queues both ways, so that no connection can block the event loop.
//!
//! * An accept task hands new connections to the loop, which numbers them (ids below
//!   [`ConnId::HOST_BIT`]), refuses those beyond the endpoint's
//!   [`crate::sip::SipConfig::max_connections`], and announces the others to the host.
//! * Each connection's task writes what the loop queued for it, and reads (when nothing is
//!   queued) into one channel the loop selects on. Both ways are bounded: a task whose reads
//!   are not taken yet waits, and TCP flow control holds its sender back; the loop never
//!   waits on a connection: it queues at most [`WRITE_QUEUE_BYTES`] for one, and drops a
//!   connection whose peer does not read that much (telling the host it closed). A write or a
//!   connect that takes longer than [`IO_TIMEOUT`] ends the connection too.
//! * The loop opens the connections the host asks for ([`crate::Socket::SipTcpConnect`]) in
//!   the same kind of task, the connect first, and closes a connection on the host's
//!   [`crate::Output::Close`] once its queued writes are done.

use crate::ConnId;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Capacity of the channel all connection tasks report on.
const EVENT_CAPACITY: usize = 256;
/// Bytes queued and not yet written on one connection; beyond it the connection is dropped.
pub const WRITE_QUEUE_BYTES: usize = 1 << 20;
/// Bytes read at once from a connection.
const READ_CHUNK: usize = 16 * 1024;
/// Bound on connecting, and on one write.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (e.g. out of file descriptors), so that it does not spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// What the connection tasks report to the event loop.
pub(super) enum StreamEvent {
    /// The listener accepted a connection.
    Accepted(TcpStream, SocketAddr),
    /// Bytes read from a connection.
    Data(ConnId, Vec<u8>),
    /// A connection ended (EOF, error, failed connect or write).
    Closed(ConnId),
}

/// What the host is to be fed after a [`StreamEvent`].
pub(super) enum StreamInput {
    /// `Input::SipStream`.
    Data(ConnId, SocketAddr, Vec<u8>),
    /// `Input::SipStreamClosed`.
    Closed(ConnId),
}

struct Conn {
    remote: SocketAddr,
    writes: mpsc::UnboundedSender<Vec<u8>>,
    /// Bytes in `writes` (the task takes off what it wrote).
    queued: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

/// The loop's end of a new connection's write queue, and the task's.
fn write_queue() -> (mpsc::UnboundedSender<Vec<u8>>, Arc<AtomicUsize>, WriteQueue) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let q = WriteQueue {
        rx,
        queued: Arc::clone(&queued),
    };
    (tx, queued, q)
}

/// What a connection's task writes.
struct WriteQueue {
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
}

/// The SIP TCP listener and the open connections of one node.
pub(super) struct Streams {
    listener: Option<TcpListener>,
    accept: Option<JoinHandle<()>>,
    events_tx: mpsc::Sender<StreamEvent>,
    events: mpsc::Receiver<StreamEvent>,
    conns: HashMap<ConnId, Conn>,
    accepted: usize,
    max: usize,
    next_id: u64,
    /// Connections dropped on a full write queue, for the host to hear of.
    failed: Vec<ConnId>,
    /// Connections dropped on a full write queue, ever.
    dropped_slow: u64,
}

/// The write side of a node's SIP TCP connections, read at a metrics scrape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpGauges {
    /// Open connections (accepted and opened by the host).
    pub connections: usize,
    /// Bytes queued and not yet written, over every connection.
    pub queued_bytes: usize,
    /// The longest write queue of one connection, in bytes (the bound is
    /// [`WRITE_QUEUE_BYTES`]).
    pub largest_queue_bytes: usize,
    /// Connections dropped because their write queue reached the bound, ever.
    pub dropped_slow: u64,
}

impl Drop for Streams {
    fn drop(&mut self) {
        if let Some(a) = &self.accept {
            a.abort();
        }
        // Connection tasks end by themselves: their write queues close with `conns`, and
        // their reports fail with `events`.
    }
}

impl Streams {
    /// How full the channel of the connections' reports is, in percent.
    pub fn backlog_percent(&self) -> u8 {
        super::transport::percent(self.events.len(), EVENT_CAPACITY)
    }

    /// Serves `listener`, accepting up to `max` connections at a time.
    pub fn new(listener: TcpListener, max: usize) -> Streams {
        let (events_tx, events) = mpsc::channel(EVENT_CAPACITY);
        Streams {
            listener: Some(listener),
            accept: None,
            events_tx,
            events,
            conns: HashMap::new(),
            accepted: 0,
            max,
            next_id: 0,
            failed: Vec::new(),
            dropped_slow: 0,
        }
    }

    /// Starts accepting (within the tokio runtime the loop runs on).
    pub fn start(&mut self) {
        if let Some(listener) = self.listener.take() {
            let events = self.events_tx.clone();
            self.accept = Some(tokio::spawn(accept_loop(listener, events)));
        }
    }

    /// The next report of the connection tasks (cancel-safe).
    pub async fn next(&mut self) -> StreamEvent {
        match self.events.recv().await {
            Some(ev) => ev,
            // Never: `self` holds a sender.
            None => std::future::pending().await,
        }
    }

    /// Takes a report in: what the host must hear of it, if anything.
    pub fn on_event(&mut self, ev: StreamEvent) -> Option<StreamInput> {
        match ev {
            StreamEvent::Accepted(stream, from) => {
                if self.accepted >= self.max {
                    tracing::debug!(%from, max = self.max, "SIP TCP connection refused: too many open");
                    return None; // dropping the stream closes it
                }
                self.next_id += 1;
                let conn = ConnId(self.next_id);
                let _ = stream.set_nodelay(true);
                let (writes, queued, q) = write_queue();
                let task = tokio::spawn(run_conn(conn, stream, q, self.events_tx.clone()));
                self.conns.insert(
                    conn,
                    Conn {
                        remote: from,
                        writes,
                        queued,
                        task,
                    },
                );
                self.accepted += 1;
                Some(StreamInput::Data(conn, from, Vec::new()))
            }
            StreamEvent::Data(conn, bytes) => {
                let from = self.conns.get(&conn)?.remote;
                Some(StreamInput::Data(conn, from, bytes))
            }
            StreamEvent::Closed(conn) => {
                self.forget(conn)?;
                Some(StreamInput::Closed(conn))
            }
        }
    }

    /// Queues `bytes` on `conn` (dropped if it is gone). A connection whose queue would
    /// exceed [`WRITE_QUEUE_BYTES`] is dropped, and reported by [`Streams::take_failed`].
    pub fn write(&mut self, conn: ConnId, bytes: Vec<u8>) {
        let Some(c) = self.conns.get(&conn) else {
            tracing::debug!(%conn, "write on a closed SIP TCP connection dropped");
            return;
        };
        let len = bytes.len();
        let full = c.queued.load(Ordering::Acquire) + len > WRITE_QUEUE_BYTES;
        let sent = !full && {
            c.queued.fetch_add(len, Ordering::AcqRel);
            c.writes.send(bytes).is_ok()
        };
        if !sent {
            if full {
                self.dropped_slow += 1;
                tracing::warn!(%conn, remote = %c.remote, "SIP TCP connection dropped: its peer does not keep up");
            } else {
                tracing::debug!(%conn, "write on an ended SIP TCP connection dropped");
            }
            if let Some(c) = self.forget(conn) {
                c.task.abort();
            }
            self.failed.push(conn);
        }
    }

    /// Opens `conn` to `dst` (an id the host chose) and queues `first` on it.
    pub fn connect(&mut self, conn: ConnId, dst: SocketAddr, first: Vec<u8>) {
        if self.conns.contains_key(&conn) {
            return self.write(conn, first);
        }
        let (writes, queued, q) = write_queue();
        queued.fetch_add(first.len(), Ordering::AcqRel);
        let _ = writes.send(first);
        let events = self.events_tx.clone();
        let task = tokio::spawn(async move {
            match timeout(IO_TIMEOUT, TcpStream::connect(dst)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    run_conn(conn, stream, q, events).await;
                }
                Ok(Err(e)) => {
                    tracing::debug!(%conn, %dst, error = %e, "SIP TCP connect failed");
                    let _ = events.send(StreamEvent::Closed(conn)).await;
                }
                Err(_) => {
                    tracing::debug!(%conn, %dst, "SIP TCP connect timed out");
                    let _ = events.send(StreamEvent::Closed(conn)).await;
                }
            }
        });
        self.conns.insert(
            conn,
            Conn {
                remote: dst,
                writes,
                queued,
                task,
            },
        );
    }

    /// Closes `conn` once its queued writes are done.
    pub fn close(&mut self, conn: ConnId) {
        // Dropping the sender ends the task after the queue: it shuts the stream down.
        self.forget(conn);
    }

    /// The write queues now.
    pub fn gauges(&self) -> TcpGauges {
        let mut g = TcpGauges {
            connections: self.conns.len(),
            dropped_slow: self.dropped_slow,
            ..TcpGauges::default()
        };
        for c in self.conns.values() {
            let q = c.queued.load(Ordering::Acquire);
            g.queued_bytes += q;
            g.largest_queue_bytes = g.largest_queue_bytes.max(q);
        }
        g
    }

    /// Waits until every write queue is empty (written to the kernel), at most `within`.
    pub async fn flush(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.gauges().queued_bytes > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Connections dropped since the last call, which the host must hear of.
    pub fn take_failed(&mut self) -> Vec<ConnId> {
        std::mem::take(&mut self.failed)
    }

    fn forget(&mut self, conn: ConnId) -> Option<Conn> {
        let c = self.conns.remove(&conn)?;
        if !conn.is_host_opened() {
            self.accepted -= 1;
        }
        Some(c)
    }
}

async fn accept_loop(listener: TcpListener, events: mpsc::Sender<StreamEvent>) {
    loop {
        match listener.accept().await {
            Ok((stream, from)) => {
                if events
                    .send(StreamEvent::Accepted(stream, from))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "SIP TCP accept failed");
                tokio::time::sleep(ACCEPT_PAUSE).await;
            }
        }
    }
}

/// One connection: queued writes go out first, reads go to the loop; ends on EOF, an error,
/// or when the loop drops the write queue (after writing what it holds).
async fn run_conn(
    conn: ConnId,
    stream: TcpStream,
    mut writes: WriteQueue,
    events: mpsc::Sender<StreamEvent>,
) {
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        tokio::select! {
            biased;
            w = writes.rx.recv() => match w {
                Some(bytes) => {
                    let r = timeout(IO_TIMEOUT, wr.write_all(&bytes)).await;
                    writes.queued.fetch_sub(bytes.len(), Ordering::AcqRel);
                    match r {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::debug!(%conn, error = %e, "SIP TCP write failed");
                            break;
                        }
                        Err(_) => {
                            tracing::debug!(%conn, "SIP TCP write timed out");
                            break;
                        }
                    }
                }
                None => {
                    let _ = timeout(IO_TIMEOUT, wr.shutdown()).await;
                    return;
                }
            },
            r = rd.read(&mut buf) => match r {
                Ok(0) => break,
                Ok(n) => {
                    if events.send(StreamEvent::Data(conn, buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(%conn, error = %e, "SIP TCP read failed");
                    break;
                }
            },
        }
    }
    let _ = events.send(StreamEvent::Closed(conn)).await;
}

/// Binds a UDP socket on `listen` and a TCP listener on the same address and port. With port
/// 0 the port is the UDP socket's ephemeral one; if TCP cannot have it, both are bound again
/// (a few times).
pub(super) async fn bind_same_port(
    listen: SocketAddr,
) -> io::Result<(tokio::net::UdpSocket, TcpListener)> {
    const ATTEMPTS: usize = 16;
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let udp = tokio::net::UdpSocket::bind(listen).await?;
        super::transport::enlarge_recv_buffer(&udp);
        let local = udp.local_addr()?;
        match TcpListener::bind(local).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if listen.port() == 0 && e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("binding SIP TCP on {local}: {e}"),
                ))
            }
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no port free for both UDP and TCP")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that reads nothing: its queue grows while the connection's task cannot run
    /// (one thread, no await between the writes), the gauges show it, and the write past the
    /// bound drops the connection and counts it.
    #[tokio::test(flavor = "current_thread")]
    async fn write_queue_gauges_and_the_slow_reader_drop() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut streams = Streams::new(TcpListener::bind("127.0.0.1:0").await.unwrap(), 4);
        let _client = TcpStream::connect(addr).await.unwrap();
        let (stream, from) = listener.accept().await.unwrap();
        let Some(StreamInput::Data(conn, _, _)) =
            streams.on_event(StreamEvent::Accepted(stream, from))
        else {
            panic!("the connection was not taken");
        };
        assert_eq!(
            streams.gauges(),
            TcpGauges {
                connections: 1,
                ..TcpGauges::default()
            }
        );

        let chunk = WRITE_QUEUE_BYTES / 4;
        for _ in 0..4 {
            streams.write(conn, vec![b'x'; chunk]);
        }
        let g = streams.gauges();
        assert_eq!(g.queued_bytes, WRITE_QUEUE_BYTES);
        assert_eq!(g.largest_queue_bytes, WRITE_QUEUE_BYTES);
        assert_eq!(g.dropped_slow, 0);
        assert!(streams.take_failed().is_empty());

        streams.write(conn, vec![b'x'; 1]);
        assert_eq!(streams.take_failed(), vec![conn]);
        assert_eq!(
            streams.gauges(),
            TcpGauges {
                dropped_slow: 1,
                ..TcpGauges::default()
            }
        );
    }
}
