//! RFC 3261 §17 non-INVITE transactions over UDP, server side (PUBLISH, SUBSCRIBE, OPTIONS)
//! and client side (NOTIFY).
//!
//! Server (§17.2.2): a request is matched to its transaction by the topmost `Via` branch (with
//! the `z9hG4bK` cookie), sent-by and method (§17.2.3; an RFC 2543 fallback key is built from
//! Call-ID, CSeq, From tag and the `Via`). A retransmission is absorbed: in *Proceeding* the
//! last provisional response is resent, in *Completed* the final one. *Completed* lasts Timer
//! J = 64·T1. A transaction waiting on the overlay sends 100 Trying after [`TRYING_DELAY`] (or on
//! the first retransmission, or on the overlay's pACK), so answers the root gives quickly need
//! no provisional response (RFC 4320 §4.1).
//!
//! Client (§17.1.2): a NOTIFY is retransmitted after Timer E, starting at T1 and doubling up to
//! T2 (T2 at once after a provisional response), and times out at Timer F = 64·T1.

use super::headers::{CSeq, Via};
use crate::event::SubHandle;
use crate::Millis;
use std::net::SocketAddr;

/// RTT estimate T1 (ms).
pub const T1: Millis = 500;
/// Maximum retransmit interval T2 (ms).
pub const T2: Millis = 4_000;
/// Timer F: a NOTIFY without final response fails after this long (ms).
pub const TIMER_F: Millis = 64 * T1;
/// Timer J: a completed server transaction absorbs retransmissions this long (ms).
pub const TIMER_J: Millis = 64 * T1;
/// A request still waiting on the overlay after this long gets 100 Trying (ms).
pub const TRYING_DELAY: Millis = 200;

/// Server transaction identifier (RFC 3261 §17.2.3).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct TxKey {
    branch: String,
    sent_by: String,
    method: String,
}

impl TxKey {
    /// The key of a request with top `via`, for `method`.
    pub fn new(via: &Via, method: &str, call_id: &str, cseq: &CSeq, from_tag: &str) -> TxKey {
        let branch = match via.rfc3261_branch() {
            Some(b) => b.to_string(),
            None => format!("2543|{call_id}|{}|{from_tag}|{:?}", cseq.seq, via.branch),
        };
        TxKey {
            branch,
            sent_by: via.sent_by.to_ascii_lowercase(),
            method: method.to_string(),
        }
    }

    /// The same transaction id, for another method (CANCEL matching).
    pub fn with_method(&self, method: &str) -> TxKey {
        TxKey {
            method: method.to_string(),
            ..self.clone()
        }
    }
}

/// What a server transaction waits for or holds.
#[derive(Debug)]
pub enum ServerState<C> {
    /// Waiting for the overlay; `ctx` builds the final response.
    Proceeding {
        /// Request context.
        ctx: Box<C>,
        /// Arrival time.
        started: Millis,
        /// The 100 Trying, once sent.
        trying: Option<Vec<u8>>,
    },
    /// Final response sent; retransmissions get it again until `until`.
    Completed {
        /// The final response.
        response: Vec<u8>,
        /// End of Timer J.
        until: Millis,
    },
}

/// A server transaction.
#[derive(Debug)]
pub struct ServerTx<C> {
    /// Where responses go.
    pub dst: SocketAddr,
    /// State.
    pub state: ServerState<C>,
}

impl<C> ServerTx<C> {
    /// When this transaction needs attention.
    pub fn deadline(&self) -> Millis {
        match &self.state {
            ServerState::Proceeding {
                started,
                trying: None,
                ..
            } => started + TRYING_DELAY,
            // Abandoned if the overlay never answers (the client's Timer F fired long ago).
            ServerState::Proceeding { started, .. } => started + 2 * TIMER_F,
            ServerState::Completed { until, .. } => *until,
        }
    }
}

/// A NOTIFY client transaction.
#[derive(Debug)]
pub struct ClientTx {
    /// Subscription it belongs to.
    pub handle: SubHandle,
    /// Destination.
    pub dst: SocketAddr,
    /// The request datagram.
    pub bytes: Vec<u8>,
    /// Next retransmission (Timer E).
    pub next: Millis,
    /// Current retransmit interval.
    pub interval: Millis,
    /// Timer F.
    pub deadline: Millis,
}

impl ClientTx {
    /// A transaction for `bytes` sent at `now`.
    pub fn new(now: Millis, handle: SubHandle, dst: SocketAddr, bytes: Vec<u8>) -> ClientTx {
        ClientTx {
            handle,
            dst,
            bytes,
            next: now + T1,
            interval: T1,
            deadline: now + TIMER_F,
        }
    }

    /// Timer E fired: the next interval doubles, capped at T2.
    pub fn backoff(&mut self, now: Millis) {
        self.interval = (self.interval * 2).min(T2);
        self.next = now + self.interval;
    }

    /// A provisional response arrived: retransmit every T2 from now on.
    pub fn proceeding(&mut self, now: Millis) {
        self.interval = T2;
        self.next = now + T2;
    }

    /// When this transaction needs attention.
    pub fn wakeup(&self) -> Millis {
        self.next.min(self.deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_e_doubles_to_t2() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut t = ClientTx::new(0, SubHandle(1), a, vec![]);
        let mut sent = vec![];
        let mut now = 0;
        while t.next < t.deadline {
            now = t.next;
            sent.push(now);
            t.backoff(now);
        }
        assert_eq!(
            sent,
            [500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
        );
        assert!(now < TIMER_F);
    }

    #[test]
    fn keys_follow_rfc3261() {
        let via = Via::parse("SIP/2.0/UDP h:5060;branch=z9hG4bKx").unwrap();
        let cs = CSeq::parse("1 PUBLISH").unwrap();
        let k = TxKey::new(&via, "PUBLISH", "c", &cs, "t");
        let cs2 = CSeq::parse("2 PUBLISH").unwrap();
        assert_eq!(k, TxKey::new(&via, "PUBLISH", "other", &cs2, "u"));
        assert_ne!(k, k.with_method("CANCEL"));
        let old = Via::parse("SIP/2.0/UDP h:5060").unwrap();
        assert_ne!(
            TxKey::new(&old, "PUBLISH", "c", &cs, "t"),
            TxKey::new(&old, "PUBLISH", "c", &cs2, "t")
        );
    }
}
