//! The model's actors and their dispatch: [`Participant`] is an overlay peer or a user agent, and its
//! [`Actor`] implementation routes each message and timer of a peer to the handler for its
//! concern (join, publish, failover, retry); the user agents' behaviour is small enough to live
//! here.
//!
//! A peer's handlers work on a copy of its state; the actor state is replaced only when the
//! copy differs, so that a delivery or timeout that changes nothing (and sends nothing) is pruned
//! by the checker.

use super::{peer_id, to_ix, Ctx, O};
use super::{
    Hashed, IfMatch, Msg, ParticipantState, PeerState, PendingPub, PubOp, PubResult,
    PublisherState, ReqId, Root, RootState, RootStateMsg, SubscriberState, Timer,
};
use crate::setup::Setup;
use crate::topology::PeerIx;
use stateright::actor::{model_timeout, Actor, Id};
use std::borrow::Cow;
use std::sync::Arc;

/// The model's actors.
#[derive(Clone, Debug)]
pub enum Participant {
    /// An overlay peer.
    Peer(Arc<Setup>),
    /// A subscribing UA attached to a peer.
    Subscriber {
        /// First-contact peer.
        peer: PeerIx,
        /// It unsubscribes at some point after subscribing.
        leaves: bool,
        /// The peers it may move its subscription to (none without a move budget).
        peers: u8,
    },
    /// A publishing UA attached to a peer, with its script.
    Publisher {
        /// First-contact peer.
        peer: PeerIx,
        /// Publishes it sends, one after the other.
        script: Arc<Vec<PubOp>>,
    },
}

impl Ctx<'_> {
    /// A message at a peer, from actor `src`.
    fn on_msg(&self, st: &mut PeerState, src: Id, msg: Msg, o: &mut O) {
        let from = to_ix(src);
        match msg {
            Msg::Subscribe => self.on_subscribe(st, from, o),
            Msg::Unsubscribe => self.on_unsubscribe(st, from, o),
            Msg::Handover { client, last } => self.on_handover(st, client, last, o),
            Msg::Publish {
                n,
                value,
                if_match,
                expires,
                last,
            } => self.on_ua_publish(
                st,
                PendingPub {
                    req: ReqId {
                        origin: self.me,
                        who: from,
                        n,
                    },
                    value,
                    if_match,
                    expires,
                    last,
                },
                o,
            ),
            Msg::Join { req, path, carried } => self.on_join(st, from, req, path, carried, o),
            // A pACK only tells the joiner that a hop grafted it: nothing here depends on it
            // (production's 100 Trying to the UA is not modelled). The delivery consumes it.
            Msg::PAck => {}
            Msg::JoinReply { req, path, state } => self.on_join_reply(st, req, path, state, o),
            Msg::Multicast(e) => {
                self.learn(st, e, None, o);
                self.absorb(st, o);
            }
            Msg::Leave => self.on_leave(st, from, o),
            Msg::Beat(seq) => self.on_beat(st, from, seq, o),
            Msg::BeatAck(seq) => self.on_beat_ack(st, from, seq, o),
            Msg::PubFwd {
                req,
                value,
                if_match,
                expires,
            } => self.forward_publish(
                st,
                PendingPub {
                    req,
                    value,
                    if_match,
                    expires,
                    last: false,
                },
                o,
            ),
            Msg::PubReply { req, result } => self.pub_answered(st, req, result, o),
            Msg::Replicate(RootStateMsg(rs), epoch) => self.on_replicate(st, src, &rs, epoch, o),
            Msg::ReplicaAck(seq) => self.on_replica_ack(st, from, seq, o),
            Msg::FetchState(epoch) => self.on_fetch_state(st, src, epoch, o),
            Msg::FetchReply {
                epoch,
                rec,
                promised,
                granted,
            } => {
                let rec = rec.as_ref().map(|r| &*r.0);
                self.on_fetch_reply(st, from, rec, (epoch, promised, granted), o)
            }
            Msg::Fenced(rec, known, refused) => {
                let rec = rec.as_ref().map(|r| &*r.0);
                self.on_fenced(st, rec, (known, refused), o)
            }
            Msg::NotRoot(closer) => self.on_not_root(st, closer, o),
            Msg::FetchBusy(epoch) => self.on_fetch_busy(st, from, epoch),
            Msg::ToSubscriber { .. } | Msg::PubResponse { .. } | Msg::Observe(_) => {}
        }
    }
}

impl Actor for Participant {
    type Msg = Msg;
    type Timer = Timer;
    type State = Hashed<ParticipantState>;
    /// A peer's incarnation: 0 when the run starts, one more at each restart (the only thing
    /// that survives a crash; production's equivalent is the random instance id a restarted
    /// process announces).
    type Storage = u8;
    type Random = ();

    fn on_start(&self, id: Id, storage: &Option<u8>, o: &mut O) -> Hashed<ParticipantState> {
        Hashed::new(match self {
            Participant::Peer(s) => {
                let me = to_ix(id);
                let ctx = Ctx { s, me };
                let incarnation = storage.map_or(0, |i| i + 1);
                if s.rejoins() > 0 {
                    o.save(incarnation);
                }
                // When the run starts, the joining peers are outside the overlay: nobody
                // knows them. A peer that (re)joins learns the membership as it joins, and
                // its failure detector reports the crashed peers it still routes to.
                let dead = if incarnation == 0 {
                    s.joiners & !(1 << me)
                } else {
                    0
                };
                let mut st = PeerState {
                    dead,
                    strangers: dead,
                    parent: None,
                    children: 0,
                    latest: None,
                    cut: false,
                    promised: (0, None),
                    leased: None,
                    root: None,
                    replica: None,
                    subs: Vec::new(),
                    pubs: Vec::new(),
                    rejoin: None,
                    // Request ids of an earlier incarnation may still be in flight.
                    next_n: incarnation << 5,
                    tries: Vec::new(),
                };
                for q in (0..s.topo.len() as PeerIx).filter(|&q| q != me) {
                    o.set_timer(Timer::Detect(q), model_timeout());
                }
                o.set_timer(Timer::Resend, model_timeout());
                if s.tree_maintenance() {
                    o.set_timer(Timer::Heartbeat, model_timeout());
                    o.set_timer(Timer::ParentTimeout, model_timeout());
                }
                if s.handovers > 0 {
                    for q in (0..s.topo.len() as PeerIx).filter(|&q| q != me) {
                        o.set_timer(Timer::Handover(q), model_timeout());
                    }
                }
                if s.suspicions > 0 {
                    o.set_timer(Timer::Suspect, model_timeout());
                    o.set_timer(Timer::Heal, model_timeout());
                }
                if s.suspicions + s.rejoins() > 0 {
                    for q in (0..s.topo.len() as PeerIx).filter(|&q| q != me) {
                        o.set_timer(Timer::Alive(q), model_timeout());
                        // Armed for good (re-armed when it fires): enabled only while a
                        // fetching root awaits `q`, which answered busy, with nothing in
                        // flight between them.
                        if s.fencing() {
                            o.set_timer(Timer::Reask(q), model_timeout());
                        }
                    }
                }
                // One expiry timer per possible entity tag, armed once (a constant timer set
                // keeps states apart only by what matters); each is enabled only while its
                // state is live and committed at a root.
                if s.expiries > 0 {
                    for e in 0..=s.max_seq() {
                        o.set_timer(Timer::Expire(e), model_timeout());
                    }
                }
                // The group's first root fetched from its replicas, which hold nothing yet,
                // before the run starts (production's first root fetches lazily, in epoch 1,
                // when the first request reaches it; the harness runs that fetch at init):
                // with fencing, each of them promised it epoch 1 and confirms its lease.
                if let Some(root) = (incarnation == 0 && s.fencing())
                    .then(|| s.first_root())
                    .flatten()
                    .filter(|&r| r != me && s.first_replicas(r) & (1 << me) != 0)
                {
                    st.promised = (1, Some(root));
                    st.leased = Some((root, 1));
                    o.set_timer(Timer::Lapse, model_timeout());
                }
                // The group's first root holds the role from the start. A peer that
                // (re)joins becomes the root only when a request reaches it as the closest
                // peer, and fetches its replicas' records first (production creates the role
                // lazily, in `ensure_root`); the seeded bug `restart-as-root` serves at once.
                let first = incarnation == 0 && s.joiners & (1 << me) == 0;
                if ctx.route(&st) == me && (first || ctx.mutant(crate::Mutant::RestartAsRoot)) {
                    st.root = Some(Root {
                        st: RootState::default(),
                        committed: None,
                        waiting: Vec::new(),
                        acks: ctx.replicas_of(&st),
                        queued: Vec::new(),
                        fetching: 0,
                        asked: 0,
                        seen: (0, 0),
                        // Production's first root fetches (from replicas holding nothing) when
                        // the first request reaches it, in epoch 1.
                        epoch: u8::from(first && s.epochs()),
                        rival: false,
                        busy: 0,
                        rounds: 0,
                        base: None,
                    });
                }
                ParticipantState::Peer(st)
            }
            Participant::Subscriber { peer, peers, .. } => {
                o.set_timer(Timer::Start, model_timeout());
                for q in (0..*peers).filter(|q| q != peer) {
                    o.set_timer(Timer::Move(q), model_timeout());
                }
                ParticipantState::Subscriber(SubscriberState {
                    started: false,
                    stopped: false,
                    at: None,
                })
            }
            Participant::Publisher { peer, script } => {
                let st = PublisherState {
                    next: 0,
                    etag: None,
                    rejected: 0,
                };
                send_step(*peer, script, &st, o);
                ParticipantState::Publisher(st)
            }
        })
    }

    fn on_msg(
        &self,
        id: Id,
        state: &mut Cow<Hashed<ParticipantState>>,
        src: Id,
        msg: Msg,
        o: &mut O,
    ) {
        match self {
            Participant::Peer(s) => {
                let ctx = Ctx { s, me: to_ix(id) };
                let mut st = match &***state {
                    ParticipantState::Peer(p) => p.clone(),
                    _ => return,
                };
                ctx.on_msg(&mut st, src, msg, o);
                if state.peer() != Some(&st) {
                    *state = Cow::Owned(ParticipantState::Peer(st).into());
                }
            }
            Participant::Subscriber { .. } => {}
            Participant::Publisher { peer, script } => {
                let ParticipantState::Publisher(st) = &***state else {
                    return;
                };
                let mut st = st.clone();
                match msg {
                    Msg::PubResponse { n, result, .. } if n == st.next => match result {
                        PubResult::Ok { etag, .. } => st.etag = Some(etag),
                        PubResult::Removed { .. } => st.etag = None,
                        PubResult::PreconditionFailed | PubResult::Timeout => st.rejected |= 1 << n,
                    },
                    _ => return,
                }
                st.next += 1;
                send_step(*peer, script, &st, o);
                *state = Cow::Owned(ParticipantState::Publisher(st).into());
            }
        }
    }

    fn on_timeout(
        &self,
        id: Id,
        state: &mut Cow<Hashed<ParticipantState>>,
        timer: &Timer,
        o: &mut O,
    ) {
        match (self, &***state) {
            (Participant::Peer(s), ParticipantState::Peer(p)) => {
                let ctx = Ctx { s, me: to_ix(id) };
                let mut st = p.clone();
                match *timer {
                    Timer::Detect(x) => ctx.on_detect(&mut st, x, o),
                    Timer::Retry(req) => ctx.on_retry(&mut st, req, o),
                    Timer::Expire(e) => ctx.on_expire(&mut st, e, o),
                    Timer::Resend => ctx.on_tick(&mut st, o),
                    Timer::Suspect => ctx.on_suspect(&mut st, o),
                    Timer::Heal => ctx.on_heal(&mut st, o),
                    Timer::Alive(x) => ctx.on_alive(&mut st, x, o),
                    Timer::Heartbeat => ctx.on_heartbeat(&mut st, o),
                    Timer::ParentTimeout => ctx.on_parent_timeout(&mut st, o),
                    Timer::Lapse => st.leased = None,
                    Timer::Reask(q) => ctx.reask(&mut st, q, o),
                    Timer::Handover(q) => ctx.hand_dialog_over(&mut st, q, o),
                    Timer::Start | Timer::Stop | Timer::Move(_) => {}
                }
                if state.peer() != Some(&st) {
                    *state = Cow::Owned(ParticipantState::Peer(st).into());
                }
            }
            (Participant::Subscriber { peer, leaves, .. }, ParticipantState::Subscriber(st))
                if !st.started && *timer == Timer::Start =>
            {
                let mut st = st.clone();
                st.started = true;
                o.send(peer_id(*peer), Msg::Subscribe);
                if *leaves {
                    o.set_timer(Timer::Stop, model_timeout());
                }
                *state = Cow::Owned(ParticipantState::Subscriber(st).into());
            }
            (Participant::Subscriber { peer, .. }, ParticipantState::Subscriber(st))
                if *timer == Timer::Stop && !st.stopped =>
            {
                let mut st = st.clone();
                st.stopped = true;
                o.send(peer_id(st.peer(*peer)), Msg::Unsubscribe);
                *state = Cow::Owned(ParticipantState::Subscriber(st).into());
            }
            // Its peer is gone: a new subscription (a new dialog) through `q`.
            (Participant::Subscriber { .. }, ParticipantState::Subscriber(st))
                if st.started && !st.stopped =>
            {
                if let Timer::Move(q) = *timer {
                    let mut st = st.clone();
                    st.at = Some(q);
                    o.send(peer_id(q), Msg::Subscribe);
                    *state = Cow::Owned(ParticipantState::Subscriber(st).into());
                }
            }
            _ => {}
        }
    }
}

/// A publishing UA sends the next publish of its script (if any).
fn send_step(peer: PeerIx, script: &[PubOp], st: &PublisherState, o: &mut O) {
    let Some(op) = script.get(st.next as usize) else {
        return;
    };
    let if_match = match op.if_match {
        IfMatch::None => None,
        // A modify without a state of its own is an initial publish; a removal names the
        // state it removes (e0, none, when the UA has no state: a 412).
        IfMatch::Mine => st.etag.or((op.expires == 0).then_some(0)),
        IfMatch::Fixed(e) => Some(e),
    };
    o.send(
        peer_id(peer),
        Msg::Publish {
            n: st.next,
            value: op.value,
            if_match,
            expires: op.expires,
            last: st.next as usize + 1 == script.len(),
        },
    );
}
