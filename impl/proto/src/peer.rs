//! The overlay layer of a host: Pastry + sa-Scribe behind one interface.
//!
//! A [`Peer`] is not driven on its own: a [`crate::Host`] owns it, together with the host's
//! [`Timers`] (passed into every call that may arm one) and, on gateway peers, the SIP front
//! end above it. Every input first runs to completion here — messages the peer sends itself are
//! handled before the call returns — and leaves its outputs in two queues the host drains:
//! datagrams ([`Peer::poll_transmit`]) and upcalls ([`Peer::poll_event`]).

use crate::config::Config;
use crate::event::{Event, GroupView, PubHandle, PubMeta, SubHandle, SubscribeError};
use crate::id::{GroupId, NodeId};
use crate::io::{Outbox, Stats, Transmit};
use crate::pastry::{Hop, Overlay};
use crate::rng::{Secrets, SplitMix64};
use crate::scribe::{Ctx, Scribe};
use crate::timer::{Armed, Timer, Timers};
use crate::wire::{
    Codec, ETag, HandoverMsg, Msg, NodeHandle, PastryMsg, ReplayGuard, Routed, ScribeMsg,
};
use crate::Millis;
use bytes::Bytes;
use std::collections::VecDeque;
use std::net::SocketAddr;

/// Routed messages that took more hops than this are dropped (routing loop guard).
pub const MAX_HOPS: u8 = 64;
/// Local routed requests kept while the overlay join is in progress.
const MAX_HELD: usize = 1024;
/// Bound on messages a peer sends to itself while handling one input (loop guard).
const MAX_LOOPBACK: usize = 100_000;
/// The ChaCha20 stream of the driver's secret seed that starts the sequence numbers of
/// authenticated datagrams (entity tags draw from stream 0, the SIP endpoint from its own).
pub const WIRE_SECRETS_STREAM: u64 = 0x5e9;

/// One overlay peer: Pastry routing and maintenance, and sa-Scribe above it.
pub struct Peer {
    cfg: Config,
    out: Outbox,
    overlay: Overlay,
    scribe: Scribe,
    rng: SplitMix64,
    secrets: Secrets,
    events: VecDeque<Event>,
    departed: bool,
    /// Routed messages originated here before the overlay join completed.
    held: Vec<Msg>,
    /// The overlay maintenance timer armed in the host's timers.
    overlay_armed: Armed,
    /// Authenticated datagrams seen (with a cluster key).
    replay: ReplayGuard,
    /// Unix milliseconds minus driver milliseconds ([`Peer::set_unix_time`]).
    unix_offset: i64,
    /// Dialog handover messages received, for the SIP endpoint above (bounded).
    handovers: VecDeque<(NodeHandle, HandoverMsg)>,
    /// Peers the next keep-alive timeout's leaf-set repair finds at once
    /// ([`Peer::repair_at_next_detection`]).
    #[cfg(feature = "harness")]
    repair: Vec<NodeHandle>,
}

/// Bound on handover messages waiting for the SIP endpoint (the host drains them after every
/// input, so more means a flood).
const MAX_HANDOVERS_QUEUED: usize = 256;

/// A request timer a driver that owns the timers can fire (the conformance harness).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestTimer {
    /// Retransmission of a local subscription's JOIN.
    Subscription(SubHandle),
    /// Retransmission of a local publication request.
    Publication(PubHandle),
    /// Tree repair: the re-JOIN of a group this peer needs.
    Rejoin(GroupId),
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("id", &self.out.me.id)
            .field("addr", &self.out.me.addr)
            .finish()
    }
}

macro_rules! ctx {
    ($s:ident, $now:expr, $timers:expr) => {
        Ctx {
            now: $now,
            cfg: &$s.cfg,
            out: &mut $s.out,
            overlay: &$s.overlay,
            rng: &mut $s.rng,
            secrets: &mut $s.secrets,
            events: &mut $s.events,
            timers: $timers,
        }
    };
}

impl Peer {
    /// A peer with id `id` reachable at `addr`. It starts as a one-peer overlay (ready); call
    /// [`Peer::bootstrap`] to join an existing overlay or [`Peer::install_routing_state`] to
    /// load precomputed state. `seed` seeds the reproducible PRNG, `secret` the CSPRNG for
    /// entity tags.
    pub fn new(
        id: NodeId,
        addr: SocketAddr,
        config: Config,
        now: Millis,
        seed: u64,
        secret: [u8; 32],
        timers: &mut Timers,
    ) -> Self {
        let me = NodeHandle { id, addr };
        let codec = Codec::new(config.cluster_key.as_deref());
        let first_seq = Secrets::from_seed_stream(secret, WIRE_SECRETS_STREAM).next_u64();
        let mut peer = Peer {
            overlay: Overlay::new(me, &config, now),
            scribe: Scribe::new(),
            out: Outbox::new(me, codec, first_seq),
            rng: SplitMix64::new(seed ^ (id.0 as u64) ^ ((id.0 >> 64) as u64)),
            secrets: Secrets::from_seed(secret),
            events: VecDeque::new(),
            departed: false,
            held: Vec::new(),
            overlay_armed: Armed::default(),
            replay: ReplayGuard::new(),
            unix_offset: 0,
            handovers: VecDeque::new(),
            #[cfg(feature = "harness")]
            repair: Vec::new(),
            cfg: config,
        };
        peer.at(now);
        peer.rearm(timers);
        peer
    }

    /// Tells the peer the wall-clock time: `unix_ms` (milliseconds since the Unix epoch) is
    /// driver time `now`. Authenticated datagrams carry and are checked against wall-clock
    /// time, since peers' driver clocks do not share an origin. A driver whose peers all share
    /// one clock (the simulator, the harness) need not call it: driver time is then used.
    pub fn set_unix_time(&mut self, now: Millis, unix_ms: u64) {
        self.unix_offset = (unix_ms as i64).wrapping_sub(now as i64);
        self.at(now);
    }

    /// Wall-clock time at driver time `now`.
    fn unix(&self, now: Millis) -> u64 {
        (now as i64).wrapping_add(self.unix_offset).max(0) as u64
    }

    /// Starts handling an input at `now`: datagrams sent from here on carry its time.
    fn at(&mut self, now: Millis) {
        self.out.time = self.unix(now);
    }

    /// Whether overlay datagrams are authenticated (a cluster key is configured).
    pub fn is_authenticated(&self) -> bool {
        self.out.codec().is_authenticated()
    }

    /// This peer's id.
    pub fn id(&self) -> NodeId {
        self.out.me.id
    }
    /// This peer's id and address.
    pub fn handle(&self) -> NodeHandle {
        self.out.me
    }
    /// Configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.out.stats
    }
    /// Whether the overlay join completed.
    pub fn is_ready(&self) -> bool {
        self.out.ready
    }
    /// Pastry state (leaf set, routing table), read-only.
    pub fn overlay(&self) -> &Overlay {
        &self.overlay
    }
    /// Next hop this peer would choose for `key`.
    pub fn route(&self, key: u128) -> Hop {
        self.overlay.route(key, None)
    }
    /// Queues a log event for the driver (the SIP layer's failures go out this way too).
    pub(crate) fn emit_log(&mut self, e: crate::diag::LogEvent) {
        self.events.push_back(Event::Log(e));
    }

    /// Whether [`Peer::leave`] was called.
    pub fn has_left(&self) -> bool {
        self.departed
    }
    /// Projected state of one group at this peer.
    pub fn group_view(&self, gid: GroupId) -> Option<GroupView> {
        self.scribe.view(gid)
    }
    /// The first deadline this peer holds for `gid` that lies further ahead of `now` than the
    /// interval that sets it, named (for conformance checks; `None` when all are in bounds).
    #[cfg(feature = "harness")]
    pub fn deadline_beyond(&self, gid: GroupId, now: Millis) -> Option<String> {
        self.scribe.deadline_beyond(&self.cfg, gid, now)
    }
    /// A fetching root's wait on the peers that answered it busy (for conformance checks;
    /// `None` unless this peer is fetching as `gid`'s root).
    #[cfg(feature = "harness")]
    pub fn busy_waits(&self, gid: GroupId) -> Option<crate::event::BusyWaits> {
        self.scribe.busy_waits(gid)
    }
    /// When this peer last heard from its parent in `gid` (for conformance checks; `None`
    /// without a parent).
    #[cfg(feature = "harness")]
    pub fn parent_heard(&self, gid: GroupId) -> Option<Millis> {
        let g = self.scribe.groups.get(&gid)?;
        g.parent.map(|_| g.parent_heard)
    }
    /// Each accepted local subscription of `gid`, with the time it expires and the deadline
    /// its timer ([`Timer::Subscription`]) is armed at (for conformance checks).
    #[cfg(feature = "harness")]
    pub fn sub_expiries(&self, gid: GroupId) -> Vec<(SubHandle, Millis, Millis)> {
        let subs = self.scribe.subs.iter();
        subs.filter(|(_, s)| s.gid == gid && s.accepted)
            .map(|(&h, s)| (h, s.expires_at, s.armed.0))
            .collect()
    }
    /// Whether this peer serves `gid` as its root at `now`: its role is active, its lease
    /// holds (every current replica confirmed it within `root_lease`) and it reaches a
    /// replica quorum. At most one peer of a group serves at any instant while replicas
    /// confirm one root at a time.
    pub fn serves(&self, gid: GroupId, now: Millis) -> bool {
        self.scribe
            .serves(&self.overlay, &self.cfg, gid, now, &mut Vec::new())
    }
    /// The record of `gid` held here (root or replica), for operators.
    pub fn record_view(&self, gid: GroupId) -> Option<crate::event::RecordView> {
        self.scribe.record_view(gid)
    }
    /// The record of `gid` with the change a root applied and waits on its replicas for (else
    /// its committed record, or a replica's copy): for conformance projections.
    pub fn applied_record_view(&self, gid: GroupId) -> Option<crate::event::RecordView> {
        self.scribe.applied_record_view(gid)
    }
    /// Groups this peer holds any state for.
    pub fn groups(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.scribe.group_ids()
    }

    /// Joins the overlay through the peer at `via` (retried until it completes; then
    /// [`Event::Joined`]).
    pub fn bootstrap(&mut self, now: Millis, timers: &mut Timers, via: SocketAddr) {
        self.at(now);
        self.overlay.bootstrap(now, via, &self.cfg, &mut self.out);
        self.rearm(timers);
    }

    /// Loads routing state computed by the driver (large static overlays in the simulator, the
    /// paper's Fig. 3 topology in conformance tests). Each peer is put where it fits in the
    /// leaf set and routing table; the peer is marked ready.
    pub fn install_routing_state(
        &mut self,
        now: Millis,
        timers: &mut Timers,
        peers: &[NodeHandle],
    ) {
        self.at(now);
        self.overlay.install(now, peers, &mut self.out);
        self.rearm(timers);
    }

    /// A datagram arrived from `from`. Malformed, oversized, wrong-version and badly
    /// authenticated datagrams are dropped and counted in [`Peer::stats`]; so are, with a
    /// cluster key, datagrams addressed to another peer, outside the replay window, or
    /// replayed (see [`crate::wire::ReplayGuard`]).
    pub fn handle_datagram(&mut self, now: Millis, timers: &mut Timers, bytes: &[u8]) {
        self.at(now);
        self.out.stats.rx_datagrams += 1;
        let decoded = self
            .out
            .codec()
            .decode(bytes)
            .and_then(|env| match &env.stamp {
                Some(stamp) => {
                    let now = self.unix(now);
                    let me = self.out.me;
                    self.replay
                        .check(now, &me, env.from.id, stamp)
                        .map(|()| env)
                }
                None => Ok(env),
            });
        match decoded {
            Ok(env) => {
                if env.from.id != self.out.me.id {
                    self.out.stats.rx_kinds.count(env.msg.kind_index());
                    self.dispatch(now, timers, env.from, env.ready, env.msg);
                }
            }
            Err(e) => self.out.stats.count_rx_error(e),
        }
        self.run_loopback(now, timers);
    }

    /// One of the overlay layer's timers fired (see [`Timer`]).
    pub fn handle_timer(&mut self, now: Millis, timers: &mut Timers, timer: Timer) {
        self.at(now);
        if self.departed {
            return;
        }
        match timer {
            Timer::Overlay => {
                if self.overlay_armed.take_due(now) && now >= self.overlay.next_timeout() {
                    self.overlay_tick(now, timers);
                }
            }
            t => self.scribe.handle_timer(&mut ctx!(self, now, timers), t),
        }
        self.run_loopback(now, timers);
    }

    /// Pastry's maintenance tick, with sa-Scribe's reaction to the peers it declares dead.
    fn overlay_tick(&mut self, now: Millis, timers: &mut Timers) {
        let dead = self.overlay.tick_detect(now, &self.cfg, &mut self.out);
        if !dead.is_empty() {
            self.out.stats.peers_failed += dead.len() as u64;
            self.events.extend(
                dead.iter()
                    .map(|&id| Event::Log(crate::diag::LogEvent::PeerFailed { id })),
            );
            #[cfg(feature = "harness")]
            let repaired = std::mem::take(&mut self.repair);
            #[cfg(not(feature = "harness"))]
            let repaired: Vec<NodeHandle> = Vec::new();
            self.bury(now, timers, &dead, &repaired);
        }
        // A pause long enough for its leases to lapse, or for a parent to drop it: the
        // others may have moved on without it. (A shorter one the overlay only forgives.)
        let paused = self.overlay.take_paused();
        if paused > self.cfg.root_lease.min(self.cfg.child_timeout) {
            self.out.stats.pauses += 1;
            self.scribe.on_resumed(&mut ctx!(self, now, timers));
        }
        self.overlay
            .tick_rest(now, &self.cfg, &mut self.out, &mut self.rng);
    }

    /// Declares `dead` peers dead: tombstones, leaf-set and routing-table repair (taking
    /// `repaired` peers in at once), then sa-Scribe's reaction to each.
    fn bury(&mut self, now: Millis, timers: &mut Timers, dead: &[NodeId], repaired: &[NodeHandle]) {
        let sets = self
            .scribe
            .root_replica_sets(&self.overlay, self.cfg.replicas);
        self.overlay.bury(now, dead, &self.cfg, &mut self.out);
        for h in repaired {
            self.overlay.consider(*h, true, now);
        }
        for &id in dead {
            self.scribe
                .on_peer_dead(&mut ctx!(self, now, timers), id, &sets);
        }
    }

    /// Leaves the overlay gracefully: tree parents and children are told (children re-JOIN at
    /// once), roots push their record to the replicas a last time, and every known peer forgets
    /// this one. Drain [`Peer::poll_transmit`] afterwards; the peer ignores all further input.
    pub fn leave(&mut self, now: Millis, timers: &mut Timers) {
        self.at(now);
        self.out.ready = false;
        self.scribe.depart(&mut ctx!(self, now, timers));
        self.overlay.depart(&mut self.out);
        self.out.loopback.clear();
        self.departed = true;
    }

    /// The live leaf-set peers nearest this one, nearest first (at most `n`): where a
    /// leaving gateway hands its dialogs.
    pub fn leaf_neighbours(&self, n: usize) -> Vec<NodeHandle> {
        let mut out = Vec::new();
        self.overlay.nearest_leaves(self.out.me.id.0, n, &mut out);
        out.retain(|h| h.id != self.out.me.id);
        out
    }

    /// Sends a dialog handover message straight to `to` (nothing once the peer has left).
    pub(crate) fn send_handover(&mut self, to: &NodeHandle, msg: HandoverMsg) {
        if !self.departed {
            self.out.send(to, Msg::Handover(msg));
        }
    }

    /// The next dialog handover message received, with its sender.
    pub(crate) fn poll_handover(&mut self) -> Option<(NodeHandle, HandoverMsg)> {
        self.handovers.pop_front()
    }

    /// Next datagram to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.transmits.pop_front()
    }

    /// Next upcall.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Whether upcalls are waiting.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Subscribes local subscription `handle` to `gid` for `expires` seconds. Returns the
    /// granted expiry; the outcome follows as [`Event::SubProvisional`], then
    /// [`Event::SubAccepted`] + [`Event::Notify`] or [`Event::SubRejected`].
    pub fn subscribe(
        &mut self,
        now: Millis,
        timers: &mut Timers,
        gid: GroupId,
        handle: SubHandle,
        expires: u32,
    ) -> Result<u32, SubscribeError> {
        self.at(now);
        let r = self
            .scribe
            .subscribe(&mut ctx!(self, now, timers), gid, handle, expires);
        self.run_loopback(now, timers);
        r
    }

    /// Refreshes a subscription (expires 0 = unsubscribe). Returns the granted expiry.
    pub fn refresh(
        &mut self,
        now: Millis,
        timers: &mut Timers,
        handle: SubHandle,
        expires: u32,
    ) -> Result<u32, SubscribeError> {
        self.at(now);
        let r = self
            .scribe
            .refresh(&mut ctx!(self, now, timers), handle, expires);
        self.run_loopback(now, timers);
        r
    }

    /// Ends a subscription; the tree is pruned when nothing else needs the group here.
    pub fn unsubscribe(
        &mut self,
        now: Millis,
        timers: &mut Timers,
        handle: SubHandle,
    ) -> Result<(), SubscribeError> {
        self.at(now);
        let r = self
            .scribe
            .unsubscribe(&mut ctx!(self, now, timers), handle);
        self.run_loopback(now, timers);
        r
    }

    /// Publishes to `gid` (RFC 3903 semantics: without `if_match` (`SIP-If-Match`) `body` is a
    /// new event state beside the presentity's others; with it, the state it names is
    /// refreshed (no body), modified (`body`) or removed (`expires` 0); `expires` in seconds).
    /// `meta` gives the body's content type and the presentity's URI. The outcome follows as [`Event::Published`] or
    /// [`Event::PublishFailed`].
    #[allow(clippy::too_many_arguments)]
    pub fn publish(
        &mut self,
        now: Millis,
        timers: &mut Timers,
        gid: GroupId,
        req: PubHandle,
        body: Option<Bytes>,
        meta: PubMeta,
        if_match: Option<ETag>,
        expires: Option<u32>,
    ) {
        self.at(now);
        self.scribe.publish(
            &mut ctx!(self, now, timers),
            gid,
            req,
            body,
            meta,
            if_match,
            expires,
        );
        self.run_loopback(now, timers);
    }

    /// Routes a diagnostic lookup for `key`; the responsible peer emits
    /// [`Event::LookupDelivered`].
    pub fn lookup(&mut self, now: Millis, timers: &mut Timers, key: u128, token: u64) {
        self.at(now);
        let origin = self.out.me;
        let body = Routed::Lookup { origin, token };
        self.out
            .loopback
            .push_back((origin, Msg::Routed { key, hops: 0, body }));
        self.run_loopback(now, timers);
    }

    // ----------------------------------------------------------------- harness doors

    /// Loads an explicit routing table in digits of `digit_bits` bits (see
    /// [`crate::pastry::ExplicitTable`]): the conformance harness gives each peer the model's
    /// base-4 table so that requests take the model's hops. Use with
    /// [`Peer::install_routing_state`] (for the leaf set). The peers in `absent` (not in the
    /// overlay yet) are left out of their slots until this peer hears from them directly.
    /// Panics if `digit_bits` is not in `1..=8`.
    #[cfg(feature = "harness")]
    pub fn set_explicit_routing(
        &mut self,
        digit_bits: u32,
        rows: Vec<Vec<Option<NodeHandle>>>,
        absent: &[NodeId],
    ) {
        let mut table = crate::pastry::ExplicitTable::new(digit_bits, rows);
        for &id in absent {
            table.forget(id);
        }
        self.overlay.set_explicit_table(Some(table));
    }

    /// The driver's failure detector reports that peer `id` crashed: runs what the keep-alive
    /// timeout runs when it declares a peer dead (tombstone, leaf-set and routing-table repair,
    /// then sa-Scribe's reaction: drop the child, re-JOIN if it was our parent, take the root
    /// role over if we are now the closest peer, re-replicate if it was a replica).
    ///
    /// `repaired` lists peers a completed leaf-set repair found, taken into the routing state
    /// before sa-Scribe reacts (a harness modelling instantaneous repair passes them; with `&[]`
    /// the repair proceeds by messages, as after a keep-alive timeout).
    #[cfg(feature = "harness")]
    pub fn declare_dead(
        &mut self,
        now: Millis,
        timers: &mut Timers,
        id: NodeId,
        repaired: &[NodeHandle],
    ) {
        self.at(now);
        if self.departed || id == self.out.me.id {
            return;
        }
        self.bury(now, timers, &[id], repaired);
        self.run_loopback(now, timers);
    }

    /// The peers the leaf-set repair after the next keep-alive timeout finds: taken into the
    /// routing state before sa-Scribe reacts to the peers the timeout declares dead, as
    /// [`Peer::declare_dead`]'s `repaired` (a harness whose model repairs instantaneously sets
    /// this, then lets the keep-alive tick run).
    #[cfg(feature = "harness")]
    pub fn repair_at_next_detection(&mut self, repaired: Vec<NodeHandle>) {
        self.repair = repaired;
    }

    /// Fires a request's retransmission timer now: the request is sent again, or with
    /// `give_up` it fails as when its deadline passes. Returns whether the timer exists.
    #[cfg(feature = "harness")]
    pub fn fire_request_timer(
        &mut self,
        now: Millis,
        timers: &mut Timers,
        timer: RequestTimer,
        give_up: bool,
    ) -> bool {
        self.at(now);
        let ctx = &mut ctx!(self, now, timers);
        let due = match timer {
            RequestTimer::Subscription(h) => self.scribe.due_sub_timer(ctx, h, give_up),
            RequestTimer::Publication(h) => self.scribe.due_pub_timer(ctx, h, give_up),
            RequestTimer::Rejoin(gid) => {
                let found = self.scribe.fire_rejoin_timer(ctx, gid);
                self.run_loopback(now, timers);
                return found;
            }
        };
        // Through the dispatch a due timer takes (its stale entry in `timers` is ignored when
        // it comes up: the request re-armed a later deadline).
        match due {
            Some(t) => {
                self.handle_timer(now, timers, t);
                true
            }
            None => false,
        }
    }

    /// Expires event state `etag` of group `gid` now, whatever is left of its lifetime (a
    /// harness that names the state a trace expires): the root removes that one state with
    /// the next seq and commits the change like a publication (replicated, then multicast).
    /// Returns false, doing nothing, unless this peer is `gid`'s active root with no commit
    /// pending and `etag` names a live state.
    #[cfg(feature = "harness")]
    pub fn expire_state(
        &mut self,
        now: Millis,
        timers: &mut Timers,
        gid: GroupId,
        etag: ETag,
    ) -> bool {
        self.at(now);
        let expired = self
            .scribe
            .expire_state(&mut ctx!(self, now, timers), gid, etag);
        self.run_loopback(now, timers);
        expired
    }

    /// Runs the roots' part of the periodic tick now: each active root runs its tick duties
    /// (the replication retry among them), each fetching root its fetch timeout. Returns
    /// whether this peer is a root.
    #[cfg(feature = "harness")]
    pub fn fire_replication_retry(&mut self, now: Millis, timers: &mut Timers) -> bool {
        self.at(now);
        let root = self
            .scribe
            .fire_replication_retry(&mut ctx!(self, now, timers));
        self.run_loopback(now, timers);
        root
    }

    /// Makes this peer group `gid`'s root now, as the first request for the group to reach
    /// it would (it fetches its nearest peers' records first): a harness whose model's first
    /// root holds the role from the start.
    #[cfg(feature = "harness")]
    pub fn take_root(&mut self, now: Millis, timers: &mut Timers, gid: GroupId) {
        self.at(now);
        self.scribe.ensure_root(&mut ctx!(self, now, timers), gid);
        self.run_loopback(now, timers);
    }

    /// Fires group `gid`'s fetch timer now, whatever its deadline: a fetching root asks the
    /// peers it still awaits again (after `fetch_attempts` it serves without them). Returns
    /// whether this peer is fetching as `gid`'s root.
    #[cfg(feature = "harness")]
    pub fn fire_fetch_timer(&mut self, now: Millis, timers: &mut Timers, gid: GroupId) -> bool {
        self.at(now);
        let fetching = self
            .scribe
            .fire_fetch_timer(&mut ctx!(self, now, timers), gid);
        self.run_loopback(now, timers);
        fetching
    }

    /// Lapses the lease this peer confirms for group `gid`'s root now, whatever is left of it
    /// (a harness that owns time: that root no longer serves with it). Returns whether it
    /// confirmed one.
    #[cfg(feature = "harness")]
    pub fn lapse_confirmation(&mut self, now: Millis, gid: GroupId) -> bool {
        self.at(now);
        self.scribe.lapse_confirmation(gid)
    }

    /// This peer is paused from now on (a harness that owns time): the leases it holds and
    /// the ones it confirms for group `gid` lapse meanwhile (see
    /// [`Peer::resume_after_pause`]). Returns whether it holds `gid`'s root role.
    #[cfg(feature = "harness")]
    pub fn pause(&mut self, now: Millis, gid: GroupId) -> bool {
        self.at(now);
        self.scribe.lapse_lease(gid)
    }

    /// This peer runs again after a pause, as its maintenance tick finds out (a harness that
    /// owns time): every root role fetches again before it serves, and every member re-JOINs
    /// its groups carrying its latest state (see `Scribe::on_resumed`).
    #[cfg(feature = "harness")]
    pub fn resume_after_pause(&mut self, now: Millis, timers: &mut Timers) {
        self.at(now);
        self.out.stats.pauses += 1;
        self.scribe.on_resumed(&mut ctx!(self, now, timers));
        self.run_loopback(now, timers);
    }

    /// A copy of this peer for a probe: the harness asks what it would do next without
    /// touching it. The copy has no queued output and a CSPRNG of its own, seeded with a
    /// constant: nothing a fork draws or sends leaves the harness.
    #[cfg(feature = "harness")]
    pub fn fork(&self) -> Peer {
        let mut out = self.out.clone();
        out.transmits.clear();
        out.loopback.clear();
        Peer {
            cfg: self.cfg.clone(),
            out,
            overlay: self.overlay.clone(),
            scribe: self.scribe.clone(),
            rng: self.rng.clone(),
            secrets: Secrets::from_seed([0x5a; 32]),
            events: VecDeque::new(),
            departed: self.departed,
            held: self.held.clone(),
            overlay_armed: self.overlay_armed,
            replay: self.replay.clone(),
            unix_offset: self.unix_offset,
            handovers: VecDeque::new(),
            repair: self.repair.clone(),
        }
    }

    /// Runs group `gid`'s tree round now as though every deadline in it had come: the
    /// maintenance tick, the replica refresh, and the re-JOIN an orphan waits to send (for a
    /// [`Peer::fork`]: the harness's clocks never reach those intervals). Returns whether this
    /// peer holds the group.
    #[cfg(feature = "harness")]
    pub fn fire_round_due(&mut self, now: Millis, timers: &mut Timers, gid: GroupId) -> bool {
        self.at(now);
        if !self.scribe.due_round(&mut ctx!(self, now, timers), gid) {
            return false;
        }
        self.handle_timer(now, timers, Timer::Tree);
        true
    }

    /// Runs the overlay's probes of the peers it declared dead and its leaf-set exchange now,
    /// as though both were due (for a [`Peer::fork`], as [`Peer::fire_round_due`]).
    #[cfg(feature = "harness")]
    pub fn fire_overlay_rest_due(&mut self, now: Millis) {
        self.at(now);
        self.overlay.due_rest(now);
        self.overlay
            .tick_rest(now, &self.cfg, &mut self.out, &mut self.rng);
    }

    /// Runs group `gid`'s maintenance tick now, in a tree round of its own (the root's duties,
    /// timeouts, a beat to each child, pruning), whatever the round's deadline. Returns how
    /// many children it had.
    #[cfg(feature = "harness")]
    pub fn fire_heartbeat(&mut self, now: Millis, timers: &mut Timers, gid: GroupId) -> usize {
        self.at(now);
        let Some(n) = self.scribe.due_heartbeat(&mut ctx!(self, now, timers), gid) else {
            return 0;
        };
        self.handle_timer(now, timers, Timer::Tree);
        n
    }

    /// Times group `gid`'s tree parent out now, as the maintenance tick does after
    /// `parent_timeout` without a beat: the peer leaves it and, if it still needs the group,
    /// re-JOINs. Returns whether it had a parent.
    #[cfg(feature = "harness")]
    pub fn fire_parent_timeout(&mut self, now: Millis, timers: &mut Timers, gid: GroupId) -> bool {
        self.at(now);
        let left = self
            .scribe
            .fire_parent_timeout(&mut ctx!(self, now, timers), gid);
        self.run_loopback(now, timers);
        left
    }

    // ----------------------------------------------------------------- internals

    /// Arms the overlay maintenance timer for its next deadline.
    fn rearm(&mut self, timers: &mut Timers) {
        if !self.departed {
            let at = self.overlay.next_timeout();
            timers.arm(at, Timer::Overlay, &mut self.overlay_armed);
        }
    }

    fn run_loopback(&mut self, now: Millis, timers: &mut Timers) {
        let mut n = 0;
        while let Some((from, msg)) = self.out.loopback.pop_front() {
            n += 1;
            if n > MAX_LOOPBACK {
                self.out.loopback.clear();
                break;
            }
            self.dispatch(now, timers, from, true, msg);
        }
        self.rearm(timers);
    }

    fn dispatch(
        &mut self,
        now: Millis,
        timers: &mut Timers,
        from: NodeHandle,
        ready: bool,
        msg: Msg,
    ) {
        if self.departed {
            return;
        }
        let departing = matches!(msg, Msg::Pastry(PastryMsg::Departing));
        if !ready && !departing && self.overlay.knows(from.id) {
            // A peer we route through says it is not part of the overlay (any more): it is
            // leaving — this message overtook its Departing — or it restarted and rejoins.
            // Forget it before acting on the message, so that a re-JOIN this message triggers
            // is not routed back to it.
            self.overlay
                .forget(now, from, false, &self.cfg, &mut self.out);
        }
        // A peer announcing its join that this one never knew (neither in its routing state
        // nor declared dead): a newcomer. sa-Scribe reacts as to a peer taken back, but for
        // the heal window (a root whose group now routes to it hands the group over at once,
        // one that stays the root fetches again: the newcomer may already have served
        // requests routed to it).
        let newcomer = matches!(msg, Msg::Pastry(PastryMsg::Announce))
            && !self.overlay.knows(from.id)
            && !self.overlay.tombstoned(from.id);
        if !departing {
            let direct = matches!(msg, Msg::Pastry(PastryMsg::Announce | PastryMsg::Pong));
            self.overlay.heard_from(&from, ready, direct, now);
        }
        match msg {
            Msg::Routed { .. } if !self.out.ready && from.id == self.out.me.id => {
                // Local requests wait for the overlay join (we would wrongly be their root).
                if self.held.len() < MAX_HELD {
                    self.held.push(msg);
                }
            }
            Msg::Routed { key, hops, body } => self.on_routed(now, timers, from, key, hops, body),
            Msg::Pastry(m) => {
                if self.overlay.handle(now, from, &m, &self.cfg, &mut self.out) {
                    self.events.push_back(Event::Joined);
                    let me = self.out.me;
                    self.out
                        .loopback
                        .extend(self.held.drain(..).map(|m| (me, m)));
                }
            }
            Msg::Handover(m) => {
                if self.handovers.len() < MAX_HANDOVERS_QUEUED {
                    self.handovers.push_back((from, m));
                }
            }
            Msg::Scribe(m) => {
                if let ScribeMsg::NotRoot { closer, .. } = &m {
                    // Second-hand news of a closer peer: one declared dead is vouched for (and
                    // probed); one never heard of is not taken in on hearsay, only on its own
                    // announcement (the model's root ignores the peer a `not_root` names).
                    self.overlay.vouched(closer);
                }
                if let ScribeMsg::FetchState { gid, .. } = &m {
                    // A peer closer to the group than us asks for our record to take the
                    // group over: it runs now (it was suspected, or it restarted), and is
                    // taken back as on its announcement, so that the group routes to it.
                    // (Not under a failure detector that never suspects a live peer, whose
                    // dead peers come back by their announcement only.)
                    let closer = crate::id::closer(gid.0, from.id.0, self.out.me.id.0);
                    let leases = self.cfg.root_lease != Millis::MAX;
                    if leases && closer && self.overlay.tombstoned(from.id) {
                        self.overlay.consider(from, true, now);
                    }
                }
                self.scribe.handle(&mut ctx!(self, now, timers), from, m);
            }
        }
        let revived = self.overlay.take_revived(&mut self.out);
        let joined = newcomer && self.overlay.knows(from.id);
        if revived > 0 {
            self.out.stats.revived += revived as u64;
            self.scribe.on_peer_revived(&mut ctx!(self, now, timers));
        } else if joined {
            self.out.stats.newcomers += 1;
            self.scribe.on_peer_joined(&mut ctx!(self, now, timers));
        }
    }

    fn on_routed(
        &mut self,
        now: Millis,
        timers: &mut Timers,
        from: NodeHandle,
        key: u128,
        hops: u8,
        mut body: Routed,
    ) {
        if hops > MAX_HOPS {
            return;
        }
        let exclude = match &body {
            Routed::OverlayJoin { joiner } => Some(joiner.id),
            _ => None,
        };
        let hop = self.overlay.route(key, exclude);
        if hop == Hop::Local && !self.out.ready {
            // Still joining (e.g. restarted with an id others remember): our state is too thin
            // to be anyone's root. Drop; the sender's request is retried.
            return;
        }
        match &body {
            Routed::OverlayJoin { joiner } => {
                if joiner.id == self.out.me.id {
                    return;
                }
                let last = hop == Hop::Local;
                let entries = self.overlay.join_state_for(joiner.id, last);
                let joiner = *joiner;
                self.out
                    .send(&joiner, PastryMsg::JoinState { entries, last });
                if last {
                    let peers = self.overlay.suspects_for(joiner.id);
                    if !peers.is_empty() {
                        self.out.send(&joiner, PastryMsg::Suspects { peers });
                    }
                }
            }
            Routed::Lookup { origin, token } => {
                if hop == Hop::Local {
                    self.events.push_back(Event::LookupDelivered {
                        token: *token,
                        key,
                        hops,
                        origin: origin.id,
                    });
                }
            }
            Routed::Join { .. } => match hop {
                Hop::Local => {
                    self.scribe
                        .deliver_join(&mut ctx!(self, now, timers), from, body);
                    return;
                }
                Hop::Next(n) => {
                    let next =
                        self.scribe
                            .forward_join(&mut ctx!(self, now, timers), from, &mut body, n);
                    if let Some(next) = next {
                        self.overlay.note_used(next.id);
                        self.out.stats.forwarded += 1;
                        let msg = Msg::Routed {
                            key,
                            hops: hops.saturating_add(1),
                            body,
                        };
                        self.out.send(&next, msg);
                    }
                    return;
                }
            },
            Routed::Publish { .. } => {
                if hop == Hop::Local {
                    self.scribe
                        .deliver_publish(&mut ctx!(self, now, timers), body);
                    return;
                }
            }
        }
        if let Hop::Next(n) = hop {
            self.overlay.note_used(n.id);
            self.out.stats.forwarded += 1;
            self.out.send(
                &n,
                Msg::Routed {
                    key,
                    hops: hops.saturating_add(1),
                    body,
                },
            );
        }
    }
}
