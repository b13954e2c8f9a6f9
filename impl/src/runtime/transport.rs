//! The runtime's datagram socket.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use tokio::net::UdpSocket;

/// A datagram socket for the event loop. A harness can substitute its own delivery.
pub trait Transport: Send + Sync + 'static {
    /// Sends one datagram to `dst`.
    fn send_to(&self, buf: &[u8], dst: SocketAddr) -> impl Future<Output = io::Result<()>> + Send;
    /// Receives one datagram into `buf`: its length and sender. Must be cancel-safe (the loop
    /// drops the future when another input wins the select): no datagram may be lost then.
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;
    /// The local address the socket is bound to.
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// Receives one datagram if one is waiting, without waiting
    /// ([`io::ErrorKind::WouldBlock`] when none is). The loop reads what piled up this way,
    /// and learns from it how far behind it is (the backlog it reports to the host). The
    /// default has nothing waiting.
    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let _ = buf;
        Err(io::ErrorKind::WouldBlock.into())
    }
}

impl Transport for UdpSocket {
    async fn send_to(&self, buf: &[u8], dst: SocketAddr) -> io::Result<()> {
        let n = UdpSocket::send_to(self, buf, dst).await?;
        if n != buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("datagram truncated to {n} of {} bytes", buf.len()),
            ));
        }
        Ok(())
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        UdpSocket::recv_from(self, buf).await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        UdpSocket::local_addr(self)
    }

    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        UdpSocket::try_recv_from(self, buf)
    }
}

/// `used` of `size` in percent, capped at 100 (0 for an empty `size`).
pub(super) fn percent(used: usize, size: usize) -> u8 {
    if size == 0 {
        return 0;
    }
    u8::try_from((used.saturating_mul(100) / size).min(100)).unwrap_or(100)
}

/// Receive buffer asked for on the UDP sockets (overlay and SIP). The kernel's default
/// (`net.core.rmem_default`, often 208 KiB: about 160 SIP datagrams) overflows in a burst, and
/// a datagram dropped there costs a retransmission, 500 ms for a SIP client. The kernel caps
/// the request at `net.core.rmem_max`; the SIP admission control refuses new work long before
/// this much is queued (its queue depth saturates at [`super::SIP_QUEUE_FULL`] datagrams).
pub const UDP_RECV_BUFFER: usize = 4 << 20;

/// Asks for a [`UDP_RECV_BUFFER`] receive buffer on `socket`; what the kernel grants is logged
/// at debug level.
pub(super) fn enlarge_recv_buffer(socket: &UdpSocket) {
    let s = socket2::SockRef::from(socket);
    match s.set_recv_buffer_size(UDP_RECV_BUFFER) {
        Ok(()) => tracing::debug!(granted = s.recv_buffer_size().ok(), "UDP receive buffer"),
        Err(e) => tracing::debug!(error = %e, "UDP receive buffer left at the default"),
    }
}
