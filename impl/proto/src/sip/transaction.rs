//! RFC 3261 §17 non-INVITE transactions over UDP and TCP, server side (PUBLISH, SUBSCRIBE,
//! OPTIONS) and client side (NOTIFY).
//!
//! Server (§17.2.2): a request is matched to its transaction by the topmost `Via` branch (with
//! the `z9hG4bK` cookie), sent-by and method (§17.2.3; an RFC 2543 fallback key is built from
//! Call-ID, CSeq, From tag and the `Via`). A retransmission is absorbed: in *Proceeding* the
//! last provisional response is resent, in *Completed* the final one. *Completed* lasts Timer
//! J = 64·T1 over UDP, 0 over TCP (§17.2.2). A transaction waiting on the overlay sends 100
//! Trying after `SipConfig::trying_delay` ([`TRYING_DELAY`] by default), or on the first
//! retransmission, or on the overlay's pACK, so answers the root gives quickly need no
//! provisional response (RFC 4320 §4.1).
//!
//! Client (§17.1.2): a NOTIFY is retransmitted after Timer E, starting at T1 and doubling up to
//! T2 (T2 at once after a provisional response), and times out at Timer F = 64·T1. Over TCP
//! it is never retransmitted (Timer E is for unreliable transports only, §17.1.2.2); Timer F
//! still applies.
//!
//! [`Transactions`] is the endpoint's table of both kinds. Each transaction has a numeric id and
//! one entry in the host's [`Timers`] for its next deadline, so a timeout costs O(log n) and
//! nothing scans the table.

use super::headers::{CSeq, Via};
use super::Flow;
use crate::event::SubHandle;
use crate::io::ConnId;
use crate::timer::{Armed, Timer, Timers};
use crate::Millis;
use std::collections::{HashMap, VecDeque};

/// RTT estimate T1 (ms).
pub const T1: Millis = 500;
/// Maximum retransmit interval T2 (ms).
pub const T2: Millis = 4_000;
/// Timer F: a NOTIFY without final response fails after this long (ms).
pub const TIMER_F: Millis = 64 * T1;
/// Timer J: a completed server transaction absorbs retransmissions this long (ms).
pub const TIMER_J: Millis = 64 * T1;
/// A request still waiting on the overlay after this long gets 100 Trying (ms): the default of
/// `SipConfig::trying_delay`.
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

    /// A 64-bit digest of this key and the request's source, stable across processes (the
    /// deduplication key of a request forwarded into the overlay: a retransmission carries
    /// the same branch, sent-by and method, from the same source).
    pub fn digest(&self, src: std::net::SocketAddr) -> u64 {
        use sha1::{Digest, Sha1};
        let mut h = Sha1::new();
        for part in [
            self.branch.as_str(),
            self.sent_by.as_str(),
            self.method.as_str(),
        ] {
            h.update(part.as_bytes());
            h.update(b"\n");
        }
        h.update(src.to_string().as_bytes());
        let d = h.finalize();
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[..8]);
        u64::from_be_bytes(b)
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
        /// When 100 Trying goes out if the overlay has not answered (`SipConfig::trying_delay`).
        trying_at: Millis,
        /// When the transaction is given up if the overlay never answers (the overlay answers
        /// every request, if only with a timeout, so this is a safety net).
        abandon: Millis,
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
    /// Its key.
    pub key: TxKey,
    /// Where responses go.
    pub dst: Flow,
    /// State.
    pub state: ServerState<C>,
    armed: Armed,
}

impl<C> ServerTx<C> {
    /// When this transaction needs attention.
    pub fn deadline(&self) -> Millis {
        match &self.state {
            ServerState::Proceeding {
                trying_at,
                abandon,
                trying: None,
                ..
            } => (*trying_at).min(*abandon),
            ServerState::Proceeding { abandon, .. } => *abandon,
            ServerState::Completed { until, .. } => *until,
        }
    }
}

/// A NOTIFY client transaction.
#[derive(Debug)]
pub struct ClientTx {
    /// Its `Via` branch.
    pub branch: String,
    /// Subscription it belongs to.
    pub handle: SubHandle,
    /// Where it was sent.
    pub flow: Flow,
    /// The request.
    pub bytes: Vec<u8>,
    /// Next retransmission (Timer E; never over TCP).
    pub next: Millis,
    /// Current retransmit interval.
    pub interval: Millis,
    /// Timer F.
    pub deadline: Millis,
    armed: Armed,
}

impl ClientTx {
    /// A transaction for `bytes` sent on `flow` at `now`.
    pub fn new(
        now: Millis,
        branch: String,
        handle: SubHandle,
        flow: Flow,
        bytes: Vec<u8>,
    ) -> ClientTx {
        let next = if flow.is_reliable() {
            Millis::MAX
        } else {
            now + T1
        };
        ClientTx {
            branch,
            handle,
            flow,
            bytes,
            next,
            interval: T1,
            deadline: now + TIMER_F,
            armed: Armed::default(),
        }
    }

    /// Timer E fired: the next interval doubles, capped at T2.
    pub fn backoff(&mut self, now: Millis) {
        self.interval = (self.interval * 2).min(T2);
        self.next = now + self.interval;
    }

    /// A provisional response arrived: retransmit every T2 from now on (over UDP).
    pub fn proceeding(&mut self, now: Millis) {
        self.interval = T2;
        if !self.flow.is_reliable() {
            self.next = now + T2;
        }
    }

    /// When this transaction needs attention.
    pub fn wakeup(&self) -> Millis {
        self.next.min(self.deadline)
    }
}

/// What a server transaction's timer asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum ServerDue {
    /// Nothing (a stale entry, or not due yet: re-armed).
    Nothing,
    /// Still waiting for the overlay: send 100 Trying.
    Trying,
    /// Timer J ended, or the overlay never answered: the transaction was removed.
    Removed,
}

/// What a client transaction's timer asks for.
#[derive(Debug)]
pub enum ClientDue {
    /// Nothing (a stale entry, or not due yet: re-armed).
    Nothing,
    /// Timer E: retransmit this datagram on this (UDP) flow.
    Retransmit(Flow, Vec<u8>),
    /// Timer F: the transaction failed and was removed.
    TimedOut(ClientTx),
}

/// The server and client transactions of an endpoint, by id, each with its timer.
#[derive(Debug)]
pub struct Transactions<C> {
    next_id: u64,
    server_ids: HashMap<TxKey, u64>,
    server: HashMap<u64, ServerTx<C>>,
    client_ids: HashMap<String, u64>,
    client: HashMap<u64, ClientTx>,
    /// Client transactions started so far.
    clients_started: u64,
    /// Server transactions in Proceeding (waiting for the overlay).
    proceeding: usize,
    /// Server transaction ids in the order they completed (ids removed since are skipped
    /// when met): the oldest is evicted first when the table is full.
    completed: VecDeque<u64>,
    /// Completed server transactions evicted before their Timer J ended.
    evicted: u64,
}

impl<C> Default for Transactions<C> {
    fn default() -> Self {
        Transactions {
            next_id: 1,
            server_ids: HashMap::new(),
            server: HashMap::new(),
            client_ids: HashMap::new(),
            client: HashMap::new(),
            clients_started: 0,
            proceeding: 0,
            completed: VecDeque::new(),
            evicted: 0,
        }
    }
}

impl<C> Transactions<C> {
    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Number of live server transactions.
    pub fn servers(&self) -> usize {
        self.server.len()
    }

    /// Number of server transactions waiting for the overlay (Proceeding).
    pub fn proceeding(&self) -> usize {
        self.proceeding
    }

    /// Client transactions started so far.
    pub fn clients_started(&self) -> u64 {
        self.clients_started
    }

    /// Number of live client transactions.
    pub fn clients(&self) -> usize {
        self.client.len()
    }

    /// The server transaction with key `key`.
    pub fn server_id(&self, key: &TxKey) -> Option<u64> {
        self.server_ids.get(key).copied()
    }

    /// Server transaction `id`.
    pub fn server(&self, id: u64) -> Option<&ServerTx<C>> {
        self.server.get(&id)
    }

    /// Server transaction `id`, mutably.
    pub fn server_mut(&mut self, id: u64) -> Option<&mut ServerTx<C>> {
        self.server.get_mut(&id)
    }

    /// Creates (or replaces) the server transaction `key` in `state`; arms its timer.
    pub fn put_server(
        &mut self,
        timers: &mut Timers,
        key: TxKey,
        dst: Flow,
        state: ServerState<C>,
    ) -> u64 {
        let id = match self.server_ids.get(&key) {
            Some(&id) => id,
            None => {
                let id = self.id();
                self.server_ids.insert(key.clone(), id);
                id
            }
        };
        let tx = self.server.entry(id).or_insert_with(|| ServerTx {
            key,
            dst,
            state: ServerState::Completed {
                response: Vec::new(),
                until: 0,
            },
            armed: Armed::default(),
        });
        tx.dst = dst;
        let was = matches!(tx.state, ServerState::Proceeding { .. });
        let is = matches!(state, ServerState::Proceeding { .. });
        self.proceeding = self.proceeding + usize::from(is) - usize::from(was);
        tx.state = state;
        timers.arm(tx.deadline(), Timer::SipServer(id), &mut tx.armed);
        if !is {
            self.completed.push_back(id);
        }
        id
    }

    /// Drops the server transaction that completed first, if any is still held: it only
    /// absorbs retransmissions of a request already answered (a full table would otherwise
    /// refuse new requests while it holds answered ones for Timer J, 32 s over UDP; Kamailio's
    /// `tm` keeps them 5 s). Returns whether one was dropped.
    pub fn evict_completed(&mut self) -> bool {
        while let Some(id) = self.completed.pop_front() {
            let done = self
                .server
                .get(&id)
                .is_some_and(|t| matches!(t.state, ServerState::Completed { .. }));
            if done {
                if let Some(tx) = self.server.remove(&id) {
                    self.server_ids.remove(&tx.key);
                }
                self.evicted += 1;
                return true;
            }
        }
        false
    }

    /// Completed server transactions evicted before their Timer J ended, so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Re-arms server transaction `id` after its state changed.
    pub fn rearm_server(&mut self, timers: &mut Timers, id: u64) {
        if let Some(tx) = self.server.get_mut(&id) {
            timers.arm(tx.deadline(), Timer::SipServer(id), &mut tx.armed);
        }
    }

    /// Server transaction `id`'s timer fired at `now`.
    pub fn server_timer(&mut self, timers: &mut Timers, id: u64, now: Millis) -> ServerDue {
        let Some(tx) = self.server.get_mut(&id) else {
            return ServerDue::Nothing;
        };
        if !tx.armed.take_due(now) {
            return ServerDue::Nothing;
        }
        if now < tx.deadline() {
            timers.arm(tx.deadline(), Timer::SipServer(id), &mut tx.armed);
            return ServerDue::Nothing;
        }
        if matches!(tx.state, ServerState::Proceeding { trying: None, .. }) {
            return ServerDue::Trying;
        }
        if let Some(tx) = self.server.remove(&id) {
            self.server_ids.remove(&tx.key);
            if matches!(tx.state, ServerState::Proceeding { .. }) {
                self.proceeding -= 1;
            }
            shrink_sparse(&mut self.server);
            shrink_sparse(&mut self.server_ids);
            // Forget the ids of transactions gone (they leave in about the order they
            // completed), so that the completion order stays as long as the table.
            while self
                .completed
                .front()
                .is_some_and(|id| !self.server.contains_key(id))
            {
                self.completed.pop_front();
            }
            if self.completed.capacity() > 1024
                && self.completed.len() * 8 < self.completed.capacity()
            {
                self.completed.shrink_to(self.completed.len() * 2);
            }
        }
        ServerDue::Removed
    }

    /// The client transaction with `Via` branch `branch`.
    pub fn client_id(&self, branch: &str) -> Option<u64> {
        self.client_ids.get(branch).copied()
    }

    /// The client transactions whose request went on stream connection `conn`.
    pub fn clients_on(&self, conn: ConnId) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .client
            .iter()
            .filter(|(_, t)| t.flow.conn() == Some(conn))
            .map(|(&id, _)| id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Client transaction `id`, mutably.
    pub fn client_mut(&mut self, id: u64) -> Option<&mut ClientTx> {
        self.client.get_mut(&id)
    }

    /// Starts client transaction `tx`; arms its timer.
    pub fn put_client(&mut self, timers: &mut Timers, mut tx: ClientTx) -> u64 {
        self.clients_started += 1;
        let id = self.id();
        timers.arm(tx.wakeup(), Timer::SipClient(id), &mut tx.armed);
        self.client_ids.insert(tx.branch.clone(), id);
        self.client.insert(id, tx);
        id
    }

    /// A provisional response to client transaction `id` arrived.
    pub fn client_proceeding(&mut self, timers: &mut Timers, id: u64, now: Millis) {
        if let Some(t) = self.client.get_mut(&id) {
            t.proceeding(now);
            timers.arm(t.wakeup(), Timer::SipClient(id), &mut t.armed);
        }
    }

    /// Removes client transaction `id` (final response, or its dialog went away).
    pub fn remove_client(&mut self, id: u64) -> Option<ClientTx> {
        let t = self.client.remove(&id)?;
        self.client_ids.remove(&t.branch);
        shrink_sparse(&mut self.client);
        shrink_sparse(&mut self.client_ids);
        Some(t)
    }

    /// Client transaction `id`'s timer fired at `now`.
    pub fn client_timer(&mut self, timers: &mut Timers, id: u64, now: Millis) -> ClientDue {
        let Some(t) = self.client.get_mut(&id) else {
            return ClientDue::Nothing;
        };
        if !t.armed.take_due(now) {
            return ClientDue::Nothing;
        }
        if now >= t.deadline {
            return match self.remove_client(id) {
                Some(t) => ClientDue::TimedOut(t),
                None => ClientDue::Nothing,
            };
        }
        if now < t.next {
            timers.arm(t.wakeup(), Timer::SipClient(id), &mut t.armed);
            return ClientDue::Nothing;
        }
        t.backoff(now);
        timers.arm(t.wakeup(), Timer::SipClient(id), &mut t.armed);
        ClientDue::Retransmit(t.flow, t.bytes.clone())
    }
}

/// Gives back most of a table's memory once a burst of transactions has ended (a hash map
/// keeps the capacity of its largest size): when it is at most an eighth full, it shrinks to
/// twice its size. The hysteresis keeps this to O(1) amortised per removal.
fn shrink_sparse<K: std::hash::Hash + Eq, V>(m: &mut HashMap<K, V>) {
    const FLOOR: usize = 1024;
    if m.capacity() > FLOOR && m.len() * 8 < m.capacity() {
        m.shrink_to((m.len() * 2).max(FLOOR));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty table, its timers, a client's flow, and the key of its SUBSCRIBE on branch `b`.
    fn table() -> (Transactions<()>, Timers, Flow, impl Fn(&str) -> TxKey) {
        let key = |b: &str| TxKey {
            branch: b.into(),
            sent_by: "127.0.0.1:1".into(),
            method: "SUBSCRIBE".into(),
        };
        let flow = Flow::Udp("127.0.0.1:1".parse().unwrap());
        (Transactions::default(), Timers::new(), flow, key)
    }

    #[test]
    fn a_request_waiting_on_the_overlay_gets_100_trying_at_its_delay_else_at_abandon() {
        let (mut txs, mut timers, flow, key) = table();
        let working = |trying_at| ServerState::Proceeding {
            ctx: Box::new(()),
            started: 1_000,
            trying_at,
            abandon: 1_000 + TIMER_J,
            trying: None,
        };
        let soon = txs.put_server(&mut timers, key("a"), flow, working(1_000 + TRYING_DELAY));
        let never = txs.put_server(&mut timers, key("b"), flow, working(Millis::MAX));
        let at = |txs: &Transactions<()>, id| txs.server(id).map(ServerTx::deadline);
        assert_eq!(at(&txs, soon), Some(1_000 + TRYING_DELAY));
        assert_eq!(at(&txs, never), Some(1_000 + TIMER_J));
        assert!(matches!(
            txs.server_timer(&mut timers, soon, 1_000 + TRYING_DELAY),
            ServerDue::Trying
        ));
        // Before its deadline a transaction is only armed again.
        assert!(matches!(
            txs.server_timer(&mut timers, never, 1_000 + TRYING_DELAY),
            ServerDue::Nothing
        ));
    }

    #[test]
    fn a_full_table_gives_up_its_oldest_answered_transaction_first() {
        let (mut txs, mut timers, flow, key) = table();
        let done = || ServerState::Completed {
            response: b"SIP/2.0 200 OK".to_vec(),
            until: TIMER_J,
        };
        let working = || ServerState::Proceeding {
            ctx: Box::new(()),
            started: 0,
            trying_at: TRYING_DELAY,
            abandon: TIMER_J,
            trying: None,
        };
        let a = txs.put_server(&mut timers, key("a"), flow, done());
        let b = txs.put_server(&mut timers, key("b"), flow, working());
        let c = txs.put_server(&mut timers, key("c"), flow, done());
        assert_eq!(txs.servers(), 3);
        // The oldest answered one goes first; one still being worked on never does.
        assert!(txs.evict_completed());
        assert!(!txs.server.contains_key(&a) && !txs.server_ids.contains_key(&key("a")));
        assert!(txs.evict_completed());
        assert!(!txs.server.contains_key(&c));
        assert!(!txs.evict_completed());
        assert!(txs.server.contains_key(&b));
        assert_eq!(txs.evicted(), 2);
        // Answered later, it becomes evictable.
        txs.put_server(&mut timers, key("b"), flow, done());
        assert!(txs.evict_completed());
        assert_eq!(txs.servers(), 0);
    }

    #[test]
    fn timer_e_doubles_to_t2() {
        let a = Flow::Udp("127.0.0.1:1".parse().unwrap());
        let mut t = ClientTx::new(0, "b".into(), SubHandle(1), a, vec![]);
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
    fn no_timer_e_over_tcp() {
        let f = Flow::Tcp {
            conn: ConnId(3),
            remote: "127.0.0.1:1".parse().unwrap(),
        };
        let mut t = ClientTx::new(100, "b".into(), SubHandle(1), f, vec![]);
        assert_eq!(t.wakeup(), 100 + TIMER_F);
        t.proceeding(200);
        assert_eq!(t.wakeup(), 100 + TIMER_F);
        let mut timers = Timers::new();
        let mut txs: Transactions<()> = Transactions::default();
        let id = txs.put_client(&mut timers, t);
        assert_eq!(txs.clients_on(ConnId(3)), vec![id]);
        assert!(txs.clients_on(ConnId(4)).is_empty());
        assert_eq!(timers.pop_due(100 + TIMER_F - 1), None);
        assert_eq!(timers.pop_due(100 + TIMER_F), Some(Timer::SipClient(id)));
        assert!(matches!(
            txs.client_timer(&mut timers, id, 100 + TIMER_F),
            ClientDue::TimedOut(_)
        ));
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
