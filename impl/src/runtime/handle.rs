//! [`RuntimeHandle`]: local API calls into a running node, its event stream, and stop.

use crate::{
    Call, CallError, ETag, Event, GroupId, GroupView, Host, HostStats, Input, Millis, NodeId,
    PubHandle, SubHandle,
};
use bytes::Bytes;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};

/// The runtime of this peer is no longer running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the peer runtime has stopped")]
pub struct Stopped;

/// Error of a local call made through a [`RuntimeHandle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallFailed {
    /// The runtime has stopped.
    #[error(transparent)]
    Stopped(#[from] Stopped),
    /// The host refused the call.
    #[error(transparent)]
    Refused(#[from] CallError),
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

type Run = Box<dyn FnOnce(&mut Host, Millis) + Send>;

pub(super) enum Command {
    /// Run a closure on the host (a local call or a read); its outputs are drained after.
    Run(Run),
    /// Read the loop's own gauges (its SIP TCP write queues).
    Gauges(oneshot::Sender<super::tcp::TcpGauges>),
    /// Stop the loop; `leave` first when graceful.
    Stop {
        leave: bool,
        done: oneshot::Sender<()>,
    },
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Run(_) => f.write_str("Run"),
            Command::Gauges(_) => f.write_str("Gauges"),
            Command::Stop { leave, .. } => write!(f, "Stop {{ leave: {leave} }}"),
        }
    }
}

/// Cloneable handle to a running [`super::HostLoop`]: local API calls, the event stream, and
/// stop.
///
/// Calls are queued to the node's task and answered once the host handled them (their
/// outputs are drained before the next input). Dropping every handle makes the node leave the
/// overlay gracefully and stop.
#[derive(Clone, Debug)]
pub struct RuntimeHandle {
    id: NodeId,
    overlay_addr: SocketAddr,
    sip_addr: Option<SocketAddr>,
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<Event>,
}

impl RuntimeHandle {
    pub(super) fn new(
        id: NodeId,
        overlay_addr: SocketAddr,
        sip_addr: Option<SocketAddr>,
        commands: mpsc::Sender<Command>,
        events: broadcast::Sender<Event>,
    ) -> Self {
        RuntimeHandle {
            id,
            overlay_addr,
            sip_addr,
            commands,
            events,
        }
    }

    /// The peer's overlay id.
    pub fn id(&self) -> NodeId {
        self.id
    }
    /// The address the peer is known by in the overlay.
    pub fn overlay_addr(&self) -> SocketAddr {
        self.overlay_addr
    }
    /// Local address of the SIP socket (where user agents send requests), on gateway peers.
    pub fn sip_addr(&self) -> Option<SocketAddr> {
        self.sip_addr
    }
    /// A new receiver of the host's events, from now on (every event, in order).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
    /// Local calls queued for the node's task, not yet taken.
    pub fn queue_depth(&self) -> usize {
        self.commands.max_capacity() - self.commands.capacity()
    }
    /// Events in the broadcast buffer not yet seen by the slowest receiver.
    pub fn events_queued(&self) -> usize {
        self.events.len()
    }
    /// Whether the node's task is still running.
    pub fn is_running(&self) -> bool {
        !self.commands.is_closed()
    }

    /// Runs `f` on the host inside the node's task (with the node's current time) and returns
    /// its result. The host's outputs are drained right after.
    pub async fn with_host<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Host, Millis) -> R + Send + 'static,
    ) -> Result<R, Stopped> {
        let (tx, rx) = oneshot::channel();
        let run: Run = Box::new(move |host, now| {
            let _ = tx.send(f(host, now));
        });
        self.commands
            .send(Command::Run(run))
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// The node's SIP TCP write queues (all zero without a TCP listener).
    pub async fn tcp_gauges(&self) -> Result<super::tcp::TcpGauges, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Gauges(tx))
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Makes a local [`Call`] on the host.
    pub async fn call(&self, call: Call) -> Result<(), CallFailed> {
        Ok(self
            .with_host(move |h, now| h.handle_input(now, Input::Call(call)))
            .await??)
    }

    /// [`Call::Subscribe`]; the outcome follows on the event stream.
    pub async fn subscribe(
        &self,
        gid: GroupId,
        handle: SubHandle,
        expires: u32,
    ) -> Result<(), CallFailed> {
        self.call(Call::Subscribe {
            gid,
            handle,
            expires,
        })
        .await
    }
    /// [`Call::Refresh`].
    pub async fn refresh(&self, handle: SubHandle, expires: u32) -> Result<(), CallFailed> {
        self.call(Call::Refresh { handle, expires }).await
    }
    /// [`Call::Unsubscribe`].
    pub async fn unsubscribe(&self, handle: SubHandle) -> Result<(), CallFailed> {
        self.call(Call::Unsubscribe { handle }).await
    }
    /// [`Call::Publish`]; the outcome follows on the event stream.
    pub async fn publish(
        &self,
        gid: GroupId,
        req: PubHandle,
        body: Option<Bytes>,
        if_match: Option<ETag>,
        expires: Option<u32>,
    ) -> Result<(), CallFailed> {
        self.call(Call::Publish {
            gid,
            req,
            body,
            if_match,
            expires,
        })
        .await
    }
    /// [`Call::Lookup`]; the responsible peer emits [`Event::LookupDelivered`].
    pub async fn lookup(&self, key: u128, token: u64) -> Result<(), CallFailed> {
        self.call(Call::Lookup { key, token }).await
    }
    /// The host's counters.
    pub async fn stats(&self) -> Result<HostStats, Stopped> {
        self.with_host(|h, _| h.stats()).await
    }
    /// The peer's view of one group.
    pub async fn group_view(&self, gid: GroupId) -> Result<Option<GroupView>, Stopped> {
        self.with_host(move |h, _| h.peer().group_view(gid)).await
    }
    /// Whether the overlay join completed.
    pub async fn is_ready(&self) -> Result<bool, Stopped> {
        self.with_host(|h, _| h.is_ready()).await
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

    /// Leaves the overlay gracefully (departure messages sent) and stops the node; returns
    /// once its task has ended. Does nothing if it already stopped.
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
