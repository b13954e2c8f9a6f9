//! The checked model: the actors wrapped with the guards that stand for timing assumptions, the
//! fault budget, and the properties.

use crate::history::{self, History, SharedHistory};
use crate::protocol::{expirable, Hashed, Msg, Participant, ParticipantState, ReqId, Timer};
use crate::setup::{NetworkKind, Setup};
use crate::topology::PeerIx;
use stateright::actor::{
    ActorModel, ActorModelAction, ActorModelState, Envelope, Id, LossyNetwork, Network,
};
use stateright::{Model, Path, Property};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// The history of `state`, to change: its own copy if other states share it.
fn history_mut(state: &mut State) -> &mut History {
    let h: &mut Hashed<History> = Arc::make_mut(&mut state.history);
    h
}

/// A state of the model.
pub type State = ActorModelState<Participant, SharedHistory>;
/// An action of the model.
pub type Action = ActorModelAction<Msg, Timer, ()>;

/// The sa-Scribe model.
///
/// It is a Stateright [`ActorModel`] whose enabled actions are filtered by guards that stand
/// for the fault budget and timing assumptions (`SaScribe::enabled`), among them:
/// - **crashes of peers only**: `Crash` is offered for peers (user agents do not crash), within
///   the crash budget (with `--crashes-after n`, only once n publications were committed); a
///   crashed peer comes back (empty) only with `--restarts`, once every live peer has declared
///   it dead, and a joining peer starts crashed until it joins;
/// - **failure detection**: a peer's `Detect(x)` timer (missed heartbeats/keep-alives) fires
///   only once `x` has crashed or, with `--suspicions`, is suspected within that budget;
/// - **timeouts longer than round trips**: a `Retry(req)` timer fires only when the request is
///   lost (no message about it is in flight to a live actor, no live root is still working on it)
///   and every live peer has detected every crash.
///
/// After each step, envelopes addressed to a crashed peer (a restarted one has lost them) or
/// cut off by a suspicion, and observation envelopes (already folded into the history), are
/// removed.
///
/// **pACK elision** ([`SaScribe::eliding_packs`], what `sascribe-model check` runs unless
/// `--deliver-packs`): a pACK is taken out of the network in the step that sends it. Its
/// delivery changes nothing but the network (the joiner's SIP front end answers 100 Trying,
/// which the model does not have), so it commutes with every action and no property reads it:
/// every run of the model that delivers pACKs has one that delivers each at once, with the
/// same states apart from the network, and elision checks exactly those. It cuts the states
/// of a configuration whose JOINs cross an intermediate hop by a third to two thirds. The
/// trace exporter still records the pACK a step sends; the corpus and `validate-run` use the
/// model that delivers them.
#[derive(Clone)]
pub struct SaScribe {
    /// The configuration.
    pub setup: Arc<Setup>,
    inner: ActorModel<Participant, Arc<Setup>, SharedHistory>,
    /// pACKs are taken out of the network when sent (see above).
    elide_packs: bool,
    /// The safety properties that each read one violation flag of the history are checked as
    /// one ([`FLAGS_CLEAN`]; see [`SaScribe::fusing_flag_properties`]).
    fuse_flags: bool,
    /// The flags of the [`FLAG_PROPERTIES`] this configuration claims ([`claimed`]): what
    /// [`FLAGS_CLEAN`] tests.
    violation_flags: u32,
    /// The [`STATE_PROPERTIES`] this configuration claims, bit `i` for the `i`th: what
    /// [`STATE_CLEAN`] tests.
    state_checks: u8,
    /// The sometimes-properties' flags witnessed so far in this search, when each holds only
    /// at its first witness ([`SaScribe::witnessing_once`]); `None`: at every state it does.
    witnessed: Option<Arc<AtomicU32>>,
}

impl SaScribe {
    /// Builds the model for a configuration.
    pub fn new(setup: Setup) -> Self {
        let setup = Arc::new(setup);
        let mut m = ActorModel::new(setup.clone(), Arc::new(History::new(&setup).into()));
        for _ in 0..setup.peers() {
            m = m.actor(Participant::Peer(setup.clone()));
        }
        for (i, &peer) in setup.subscribers.iter().enumerate() {
            m = m.actor(Participant::Subscriber {
                peer,
                leaves: i < setup.unsubscribes,
                peers: if setup.moves > 0 {
                    setup.peers() as u8
                } else {
                    0
                },
            });
        }
        for (peer, script) in &setup.publishers {
            m = m.actor(Participant::Publisher {
                peer: *peer,
                script: script.clone(),
            });
        }
        let network = match setup.network {
            NetworkKind::Unordered => Network::new_unordered_nonduplicating([]),
            NetworkKind::Ordered => Network::new_ordered([]),
            NetworkKind::Duplicating => Network::new_unordered_duplicating([]),
        };
        let m = m
            .init_network(network)
            .lossy_network(if setup.losses + setup.tree_losses > 0 {
                LossyNetwork::Yes
            } else {
                LossyNetwork::No
            })
            // (Peers that join later start crashed: they count among the contemporary
            // crashes Stateright allows; `enabled` bounds the crashes of the run.)
            .max_crashes(setup.max_crashes + setup.joiners.count_ones() as usize)
            .record_msg_out(history::on_send);
        let violation_flags = FLAG_PROPERTIES
            .iter()
            .filter(|(name, _)| claimed(&setup, name))
            .fold(0, |all, (_, flag)| all | flag);
        let state_checks = STATE_PROPERTIES
            .iter()
            .enumerate()
            .filter(|(_, name)| claimed(&setup, name))
            .fold(0, |all, (i, _)| all | 1 << i);
        SaScribe {
            setup,
            inner: m,
            elide_packs: false,
            fuse_flags: false,
            violation_flags,
            state_checks,
            witnessed: None,
        }
    }

    /// The same model with pACK elision (see [`SaScribe`]): a sound reduction for checking.
    pub fn eliding_packs(mut self) -> Self {
        self.elide_packs = true;
        self
    }

    /// Whether pACKs are elided.
    pub fn elides_packs(&self) -> bool {
        self.elide_packs
    }

    /// The same model with the safety properties of [`FLAG_PROPERTIES`] checked as one,
    /// [`FLAGS_CLEAN`] (no violation flag in the history), in their place, and those of
    /// [`STATE_PROPERTIES`] as another, [`STATE_CLEAN`]. Stateright looks each property's name
    /// up in a map its threads share at every state, which costs more than the flag
    /// properties' own test (one bit of the history each); two of the state properties also
    /// share their test of quiescence. The verdict is exact when both hold (each of them
    /// holds); when one fails, a run checking them apart names which (what
    /// `sascribe-model check` does).
    pub fn fusing_flag_properties(mut self) -> Self {
        self.fuse_flags = true;
        self
    }

    /// Whether the flag properties are checked as one.
    pub fn fuses_flag_properties(&self) -> bool {
        self.fuse_flags
    }

    /// The same model with each sometimes-property holding only at the first state of this
    /// search that witnesses it, with a fresh record of what was witnessed (so one model per
    /// search: a clone shares the record). Stateright evaluates a sometimes-property at every
    /// state even once it is witnessed, and at each state where it holds records that state's
    /// path again: a write to the map its threads share and a copy of the path. A witness
    /// flag stays set on every later state of a path, so that is most states of a search once
    /// a failover, say, has happened. The verdict is the same (witnessed if and only if some
    /// state has the flag); the witness reported is the first one found rather than the last.
    ///
    /// A witnessed property leaves [`Model::properties`], which Stateright asks again for
    /// each block of states (the sometimes-properties come last, so the indices it keeps for
    /// the eventually-properties stay the same). Stateright's own `Checker::report` and
    /// `is_done` compare the number of discoveries with the length of that list: read such a
    /// search by its threads, as [`crate::progress::watch`] does.
    pub fn witnessing_once(mut self) -> Self {
        self.witnessed = Some(Arc::new(AtomicU32::new(0)));
        self
    }

    /// Sometimes-property `flag`: whether `state`'s history has it, and (witnessing once) no
    /// earlier state of this search had it.
    fn witness(&self, state: &State, flag: u32) -> bool {
        let Some(seen) = &self.witnessed else {
            return state.history.has(flag);
        };
        if seen.load(Ordering::Relaxed) & flag != 0 || !state.history.has(flag) {
            return false;
        }
        // Another thread may witness it at the same moment: both record a witness, as
        // Stateright's threads do; the later one is kept.
        seen.fetch_or(flag, Ordering::Relaxed);
        true
    }

    fn peer<'s>(&self, state: &'s State, p: usize) -> Option<&'s crate::protocol::PeerState> {
        state.actor_states.get(p).and_then(|s| s.peer())
    }

    fn live_peers<'s>(
        &'s self,
        state: &'s State,
    ) -> impl Iterator<Item = (usize, &'s crate::protocol::PeerState)> + 's {
        (0..self.setup.peers())
            .filter(|&p| !state.crashed[p])
            .filter_map(move |p| self.peer(state, p).map(|s| (p, s)))
    }

    /// The peers that are crashed or suspected and not healed (cut off).
    fn gone(&self, state: &State) -> u8 {
        (0..self.setup.peers())
            .filter(|&p| state.crashed[p] || self.peer(state, p).is_some_and(|s| s.cut))
            .fold(0, |m, p| m | (1 << p))
    }

    /// Every live peer has detected every crash and suspicion, and taken back every healed
    /// peer: the failure detectors' views are settled.
    fn detection_complete(&self, state: &State) -> bool {
        let gone = self.gone(state);
        let all = ((1u16 << self.setup.peers()) - 1) as u8;
        self.live_peers(state).all(|(p, s)| match s.cut {
            // A cut-off peer that runs (a partition) declares every other peer dead.
            true if self.setup.partition => s.dead == all & !(1 << p),
            true => true,
            false => s.dead == gone & !(1 << p),
        })
    }

    /// Whether actor `id` is a peer cut off by a suspicion.
    fn is_cut(&self, state: &State, id: Id) -> bool {
        let p = usize::from(id);
        p < self.setup.peers() && self.peer(state, p).is_some_and(|s| s.cut)
    }

    /// Quiescence: nothing is in flight to a live actor and no protocol timer is enabled (no
    /// failure to detect, no retransmission, no replication retry) that would change
    /// anything (a timer whose firing changes nothing is no activity: a broken repair that
    /// does nothing must not keep a stuck state from counting as quiescent). What may still happen is
    /// up to the environment: a crash, an event state's expiry, a user agent subscribing or
    /// unsubscribing.
    pub fn quiescent(&self, state: &State) -> bool {
        if for_each_envelope(&state.network, |_, _| true) {
            return false;
        }
        let mut all = Vec::new();
        self.inner.actions(state, &mut all);
        !all.iter().any(|a| {
            matches!(
                a,
                ActorModelAction::Timeout(
                    _,
                    Timer::Detect(_)
                        | Timer::Retry(_)
                        | Timer::Resend
                        | Timer::Heal
                        | Timer::Alive(_)
                        | Timer::Heartbeat
                        | Timer::ParentTimeout
                        | Timer::Lapse
                        | Timer::Reask(_)
                )
            ) && self.enabled(state, a)
                && self.inner.next_state(state, a.clone()).is_some()
        })
    }

    /// No message about `req` is in flight to a live actor and no live root holds it.
    fn lost(&self, state: &State, req: ReqId) -> bool {
        let mentions = |m: &Msg| match m {
            Msg::Join { req: r, .. }
            | Msg::JoinReply { req: r, .. }
            | Msg::PubFwd { req: r, .. }
            | Msg::PubReply { req: r, .. } => *r == req,
            Msg::Replicate(rs, _) => rs.0.applied.iter().any(|a| a.0 == req.who && a.1 == req.n),
            _ => false,
        };
        let in_flight = for_each_envelope(&state.network, |dst, m| {
            let d = usize::from(dst);
            d < self.setup.actors() && !state.crashed[d] && mentions(m)
        });
        if in_flight {
            return false;
        }
        !self.live_peers(state).any(|(_, s)| {
            s.root.as_ref().is_some_and(|r| {
                r.waiting.iter().any(|w| w.0.is_some_and(|p| p.req == req))
                    || r.queued.iter().any(|q| q.req() == req)
            })
        })
    }

    /// A root's replication retry would reach a live replica that has not acknowledged the
    /// root's state, has no REPLICATE in flight to it nor an acknowledgement in flight from it,
    /// and would now accept it; or a fetching root awaits a live, reachable peer with no
    /// FetchState in flight to it nor a reply in flight from it (both were lost in a cut).
    fn resend_useful(&self, state: &State, id: Id) -> bool {
        let Some(root) = self
            .peer(state, usize::from(id))
            .and_then(|s| s.root.as_ref())
        else {
            return false;
        };
        let me = usize::from(id) as PeerIx;
        if root.leaseless_with_held() && self.setup.mutant != Some(crate::Mutant::LeaselessIdle) {
            // Another promise round, once every replica it reaches would grant it: nothing in
            // flight between them, no lease of another root confirmed there, no closer peer
            // known there (see `Ctx::on_tick`).
            return !self.is_cut(state, id)
                && root.acks.iter().all(|a| {
                    let q = a.peer as usize;
                    state.crashed[q]
                        || self.is_cut(state, Id::from(q))
                        || !self.between(state, me as usize, q)
                            && self.peer(state, q).is_some_and(|s| {
                                !crate::protocol::busy(s, me)
                                    && !self.setup.topo.refuses(a.peer, me, self.setup.gid, s.dead)
                            })
                });
        }
        if !root.active() {
            let awaited = root.fetching & !root.busy & !(1 << me);
            return !self.is_cut(state, id)
                && (0..self.setup.peers()).any(|q| {
                    awaited & (1 << q) != 0
                        && !state.crashed[q]
                        && !self.is_cut(state, Id::from(q))
                        && !any_envelope(&state.network, |src, dst, m| match m {
                            Msg::FetchState(_) => usize::from(dst) == q,
                            Msg::FetchReply { .. } | Msg::FetchBusy(_) => usize::from(src) == q,
                            _ => false,
                        })
                });
        }
        let seq = root.st.seq;
        if seq == 0 {
            return false;
        }
        if self.is_cut(state, id) {
            return false; // it reaches nobody
        }
        root.acks.iter().any(|a| {
            let q = a.peer as usize;
            a.acked < seq
                && !state.crashed[q]
                && !self.is_cut(state, Id::from(q))
                && !any_envelope(&state.network, |src, dst, m| match m {
                    Msg::Replicate(..) => usize::from(dst) == q,
                    Msg::ReplicaAck(_) | Msg::Fenced(..) | Msg::NotRoot(_) => usize::from(src) == q,
                    _ => false,
                })
                && self.peer(state, q).is_some_and(|s| {
                    let fenced = self.setup.fencing()
                        && s.replica.as_ref().is_some_and(|r| r.epoch > root.st.epoch);
                    let busy = self.setup.fencing()
                        && self.setup.mutant != Some(crate::Mutant::LeaseIgnored)
                        && crate::protocol::busy(s, me);
                    !self.setup.topo.refuses(a.peer, me, self.setup.gid, s.dead) && !fenced && !busy
                })
        })
    }

    /// Whether a fetch or replication message is in flight between root `me` and peer `q`,
    /// either way.
    fn between(&self, state: &State, me: usize, q: usize) -> bool {
        any_envelope(&state.network, |src, dst, m| {
            let (src, dst) = (usize::from(src), usize::from(dst));
            matches!(
                m,
                Msg::FetchState(_)
                    | Msg::FetchReply { .. }
                    | Msg::FetchBusy(_)
                    | Msg::Replicate(..)
                    | Msg::ReplicaAck(_)
                    | Msg::Fenced(..)
                    | Msg::NotRoot(_)
            ) && (src == me && dst == q || src == q && dst == me)
        })
    }

    fn enabled(&self, state: &State, action: &Action) -> bool {
        // A peer cut off by a suspicion does not crash until it heals. Paused, it takes no
        // step: nothing is delivered to it and none of its timers fires. Partitioned, it runs
        // alone (`normalize` drops overlay messages across the cut).
        let paused = |id: &Id| self.is_cut(state, *id) && !self.setup.partition;
        match action {
            ActorModelAction::Timeout(id, Timer::Heal) => return self.is_cut(state, *id),
            ActorModelAction::Crash(id) if self.is_cut(state, *id) => return false,
            ActorModelAction::Timeout(id, _) if paused(id) => return false,
            ActorModelAction::Deliver { dst, .. } if paused(dst) => return false,
            _ => {}
        }
        match action {
            ActorModelAction::Crash(id) => {
                usize::from(*id) < self.setup.peers()
                    && (state.history.crashes as usize) < self.setup.max_crashes
                    && (self.setup.crashes_after == 0
                        || state.history.commits.iter().flatten().count()
                            >= usize::from(self.setup.crashes_after))
            }
            ActorModelAction::Recover(id) => self.may_rejoin(state, usize::from(*id)),
            ActorModelAction::Timeout(id, Timer::Detect(x)) => {
                (state.crashed[*x as usize]
                    || self.is_cut(state, Id::from(*x as usize))
                    || self.is_cut(state, *id))
                    && self
                        .peer(state, usize::from(*id))
                        .is_some_and(|s| s.dead & (1 << x) == 0)
            }
            // One suspicion at a time, within the budget, of a live peer.
            ActorModelAction::Timeout(id, Timer::Suspect) => {
                (state.history.suspicions as usize) < self.setup.suspicions
                    && usize::from(*id) < self.setup.peers()
                    && !state.crashed[usize::from(*id)]
                    && self.gone(state) & !self.crashed_mask(state) == 0
            }
            ActorModelAction::Timeout(id, Timer::Alive(x)) => {
                let x = *x as usize;
                !state.crashed[x]
                    && !self.is_cut(state, Id::from(x))
                    && !self.is_cut(state, *id)
                    && self
                        .peer(state, usize::from(*id))
                        .is_some_and(|s| s.dead & (1 << x) != 0)
            }
            ActorModelAction::Timeout(id, Timer::Resend) => self.resend_useful(state, *id),
            // A fetching root asks the peers of its round it still awaits again (its fetch
            // timer), once the lease a peer that answered busy confirmed lapsed (production's
            // fetch timer waits the `busy_for` the peer named: asked earlier, it would answer
            // busy again, and production gives up after a few attempts), with nothing in
            // flight between the root and any peer it awaits (production asks them all again).
            ActorModelAction::Timeout(id, Timer::Reask(q)) => {
                let me = usize::from(*id);
                let q = *q as usize;
                let Some(root) = self.peer(state, me).and_then(|s| s.root.as_ref()) else {
                    return false;
                };
                let awaited = root.fetching;
                awaited & root.busy & (1 << q) != 0
                    && !state.crashed[q]
                    && self
                        .peer(state, q)
                        .is_some_and(|s| !crate::protocol::busy(s, me as PeerIx))
                    && !self.is_cut(state, *id)
                    && !self.is_cut(state, Id::from(q))
                    && !any_envelope(&state.network, |src, dst, m| {
                        let (src, dst) = (usize::from(src), usize::from(dst));
                        match m {
                            Msg::FetchState(_) => src == me && awaited & (1 << dst) != 0,
                            Msg::FetchReply { .. } | Msg::FetchBusy(_) => {
                                dst == me && awaited & (1 << src) != 0
                            }
                            _ => false,
                        }
                    })
            }
            // A lease a peer confirms lapses once its root can no longer serve with it.
            ActorModelAction::Timeout(id, Timer::Lapse) => self
                .peer(state, usize::from(*id))
                .and_then(|s| s.leased)
                .is_some_and(|(x, epoch)| {
                    state.crashed[x as usize]
                        || self
                            .peer(state, x as usize)
                            .is_none_or(|r| r.root.as_ref().is_none_or(|r| r.epoch != epoch))
                }),
            // A subscriber moves once its current peer crashed, to a live, reachable peer,
            // within the budget.
            ActorModelAction::Timeout(id, Timer::Move(q)) => {
                let id = usize::from(*id);
                (state.history.moves as usize) < self.setup.moves
                    && self.setup.subscriber_index(id).is_some_and(|i| {
                        matches!(
                            state.actor_states.get(id).map(|s| &***s),
                            Some(ParticipantState::Subscriber(s)) if s.started && !s.stopped
                        ) && state.crashed[sub_peer(self, state, i) as usize]
                    })
                    && !state.crashed[*q as usize]
                    && !self.is_cut(state, Id::from(*q as usize))
            }
            // A live peer hands an active subscription over to a live, reachable peer, within
            // the budget.
            ActorModelAction::Timeout(id, Timer::Handover(q)) => {
                let me = usize::from(*id);
                (state.history.handovers as usize) < self.setup.handovers
                    && !state.crashed[*q as usize]
                    && !self.is_cut(state, *id)
                    && !self.is_cut(state, Id::from(*q as usize))
                    && self
                        .peer(state, me)
                        .is_some_and(|s| crate::protocol::handable(&self.setup, s).is_some())
            }
            // An unsubscribe is an in-dialog request (RFC 6665 §4.1.2.3): a SIP user agent can
            // send it only once its SUBSCRIBE was answered 200 OK (the dialog exists then).
            ActorModelAction::Timeout(id, Timer::Stop) => self
                .setup
                .subscriber_index(usize::from(*id))
                .is_some_and(|i| state.history.subs[i].result == Some(true)),
            ActorModelAction::Timeout(id, Timer::Expire(e)) => {
                (state.history.expiries as usize) < self.setup.expiries
                    && self
                        .peer(state, usize::from(*id))
                        .and_then(|s| s.root.as_ref())
                        .is_some_and(|r| expirable(r, *e))
            }
            ActorModelAction::Timeout(_, Timer::Retry(req)) => {
                self.detection_complete(state) && self.lost(state, *req)
            }
            ActorModelAction::Drop(env) if tree_message(&env.msg) => {
                (state.history.tree_losses as usize) < self.setup.tree_losses
            }
            ActorModelAction::Drop(env) => {
                (state.history.losses as usize) < self.setup.losses
                    && matches!(
                        env.msg,
                        Msg::Join { .. }
                            | Msg::PAck
                            | Msg::JoinReply { .. }
                            | Msg::PubFwd { .. }
                            | Msg::PubReply { .. }
                    )
            }
            ActorModelAction::Timeout(id, Timer::Heartbeat) => self.heartbeat_useful(state, *id),
            ActorModelAction::Timeout(id, Timer::ParentTimeout) => self.parent_lost(state, *id),
            _ => true,
        }
    }

    fn normalize(&self, mut state: State) -> State {
        let actors = self.setup.actors();
        let peers = self.setup.peers();
        // (Only peers crash.)
        let crashed = self.crashed_mask(&state);
        // Overlay messages to or from a peer cut off by a suspicion are lost (a partition or
        // a pause); what its user agents send it waits.
        let cut = self.gone(&state) & !crashed;
        let gone = |src: Id, dst: Id| {
            let (s, d) = (usize::from(src), usize::from(dst));
            d >= actors
                || (d < peers && crashed & 1 << d != 0)
                || (s < peers && d < peers && cut & ((1 << s) | (1 << d)) != 0)
        };
        if any_envelope(&state.network, |src, dst, _| gone(src, dst)) {
            drop_envelopes(&mut state.network, |src, dst, _| gone(src, dst));
        }
        let pack = |_: Id, _: Id, m: &Msg| matches!(m, Msg::PAck);
        if self.elide_packs && any_envelope(&state.network, pack) {
            drop_envelopes(&mut state.network, pack);
        }
        state
    }

    /// Whether peer bit `bit` is a joining peer that has not joined yet.
    fn yet_to_join(&self, state: &State, bit: u8) -> bool {
        self.setup.joiners & bit != 0 && state.history.joined & bit == 0
    }

    fn crashed_mask(&self, state: &State) -> u8 {
        (0..self.setup.peers())
            .filter(|&p| state.crashed[p])
            .fold(0, |m, p| m | (1 << p))
    }

    /// A readable description of an action, with actor names.
    pub fn describe(&self, action: &Action) -> String {
        let name = |id: &Id| self.setup.actor_name(usize::from(*id));
        match action {
            ActorModelAction::Deliver { src, dst, msg } => {
                format!("{} → {}: {}", name(src), name(dst), self.describe_msg(msg))
            }
            ActorModelAction::Drop(env) => format!(
                "network loses {} → {}: {}",
                name(&env.src),
                name(&env.dst),
                self.describe_msg(&env.msg)
            ),
            ActorModelAction::Timeout(id, Timer::Start) => format!("{} subscribes", name(id)),
            ActorModelAction::Timeout(id, Timer::Stop) => format!("{} unsubscribes", name(id)),
            ActorModelAction::Timeout(id, Timer::Move(q)) => format!(
                "{} subscribes again through {} (its peer is gone)",
                name(id),
                self.setup.topo.name(*q)
            ),
            ActorModelAction::Timeout(id, Timer::Handover(q)) => format!(
                "{} leaves and hands a subscription over to {}",
                name(id),
                self.setup.topo.name(*q)
            ),
            ActorModelAction::Timeout(id, Timer::Detect(x)) => format!(
                "{} detects that {} crashed",
                name(id),
                self.setup.topo.name(*x)
            ),
            ActorModelAction::Timeout(id, Timer::Retry(req)) => {
                format!("{} retransmits {}", name(id), self.describe_req(req))
            }
            ActorModelAction::Timeout(id, Timer::Expire(e)) => {
                format!("{}'s event state e{e} expires", name(id))
            }
            ActorModelAction::Timeout(id, Timer::Resend) => {
                format!("{}'s replication retry fires", name(id))
            }
            ActorModelAction::Timeout(id, Timer::Suspect) => format!(
                "{} is suspected (paused or cut off; its lease lapses)",
                name(id)
            ),
            ActorModelAction::Timeout(id, Timer::Heal) => format!("{} heals", name(id)),
            ActorModelAction::Timeout(id, Timer::Lapse) => {
                format!("the lease {} confirmed lapses", name(id))
            }
            ActorModelAction::Timeout(id, Timer::Reask(q)) => {
                format!("{} asks {} again", name(id), self.setup.topo.name(*q))
            }
            ActorModelAction::Timeout(id, Timer::Heartbeat) => {
                format!("{}'s tree heartbeat round beats its children", name(id))
            }
            ActorModelAction::Timeout(id, Timer::ParentTimeout) => {
                format!("{} times its tree parent out", name(id))
            }
            ActorModelAction::Timeout(id, Timer::Alive(x)) => format!(
                "{} hears from {} again and takes it back",
                name(id),
                self.setup.topo.name(*x)
            ),
            ActorModelAction::Crash(id) => format!("{} crashes", name(id)),
            ActorModelAction::Recover(id) => {
                format!("{} (re)joins the overlay, with no state", name(id))
            }
            ActorModelAction::SelectRandom { actor, .. } => format!("{} chooses", name(actor)),
        }
    }

    fn describe_req(&self, r: &ReqId) -> String {
        format!(
            "req {}/{}#{}",
            self.setup.topo.name(r.origin),
            self.setup.actor_name(r.who as usize),
            r.n
        )
    }

    /// A readable description of a message.
    pub fn describe_msg(&self, m: &Msg) -> String {
        let e = |x: &Option<crate::protocol::Entry>| match x {
            Some(e) if e.values == crate::protocol::NO_STATE => format!("seq {} no state", e.seq),
            Some(e) => format!("seq {} values {}", e.seq, values_text(e.values)),
            None => "nothing published".into(),
        };
        match m {
            Msg::Subscribe => "SUBSCRIBE".into(),
            Msg::Unsubscribe => "SUBSCRIBE Expires: 0 (unsubscribe)".into(),
            Msg::Handover { client, last } => format!(
                "hand-over of {}'s dialog, last shown seq {last}",
                self.setup.actor_name(*client as usize),
            ),
            Msg::Publish {
                n,
                value,
                if_match,
                expires,
                ..
            } => format!(
                "PUBLISH #{n} v{value}{} expires {expires}",
                if_match
                    .map(|t| format!(" If-Match e{t}"))
                    .unwrap_or_default()
            ),
            Msg::ToSubscriber { ua, ev } => format!(
                "to {}: {}",
                self.setup.actor_name(*ua as usize),
                match ev {
                    crate::protocol::UaEvent::Accepted => "200 OK (SUBSCRIBE)".to_string(),
                    crate::protocol::UaEvent::Notify(x) => format!("NOTIFY {}", e(&Some(*x))),
                    crate::protocol::UaEvent::TimedOut => "408 (SUBSCRIBE)".to_string(),
                }
            ),
            Msg::PubResponse { ua, n, result } => format!(
                "to {}: {}",
                self.setup.actor_name(*ua as usize),
                match result {
                    crate::protocol::PubResult::Ok { etag, expires } =>
                        format!("200 OK (PUBLISH #{n}) ETag e{etag} expires {expires}"),
                    crate::protocol::PubResult::Removed { seq } =>
                        format!("200 OK (PUBLISH #{n}) removed, seq {seq}"),
                    crate::protocol::PubResult::PreconditionFailed => format!("412 (PUBLISH #{n})"),
                    crate::protocol::PubResult::Timeout => format!("408 (PUBLISH #{n})"),
                }
            ),
            Msg::Join { req, path, carried } => format!(
                "JOIN {} path {:?} carrying {}",
                self.describe_req(req),
                path.as_slice()
                    .iter()
                    .map(|&p| self.setup.topo.name(p))
                    .collect::<Vec<_>>(),
                e(carried)
            ),
            Msg::PAck => "pACK".into(),
            Msg::JoinReply { req, state, .. } => {
                format!("ACK {} with {}", self.describe_req(req), e(state))
            }
            Msg::Multicast(x) => format!("MULTICAST {}", e(&Some(*x))),
            Msg::Leave => "LEAVE".into(),
            Msg::Beat(seq) => format!("beat s{seq}"),
            Msg::BeatAck(seq) => format!("beat ack s{seq}"),
            Msg::PubFwd {
                req,
                value,
                if_match,
                ..
            } => format!(
                "publish {} v{value}{}",
                self.describe_req(req),
                if_match
                    .map(|t| format!(" If-Match e{t}"))
                    .unwrap_or_default()
            ),
            Msg::PubReply { req, result } => {
                format!("publish result {} {:?}", self.describe_req(req), result)
            }
            Msg::Replicate(rs, epoch) if self.setup.fencing() => format!(
                "REPLICATE root epoch {epoch}, record epoch {} {}",
                rs.0.epoch,
                e(&rs.0.entry())
            ),
            Msg::Replicate(rs, _) => format!("REPLICATE {}", e(&rs.0.entry())),
            Msg::ReplicaAck(s) => format!("replica ack seq {s}"),
            Msg::FetchState(epoch) if self.setup.fencing() => format!("FETCH STATE epoch {epoch}"),
            Msg::FetchState(_) => "FETCH STATE".into(),
            Msg::Fenced(r, epoch, refused) => format!(
                "FENCED epoch {refused} below {epoch}: {}",
                e(&r.as_ref().and_then(|r| r.0.entry()))
            ),
            Msg::NotRoot(c) => format!("NOT ROOT, closer {}", self.setup.topo.name(*c)),
            Msg::FetchBusy(ep) => format!("BUSY (another root's lease runs), round e{ep}"),
            Msg::FetchReply {
                epoch,
                rec,
                promised,
                granted,
            } if self.setup.fencing() => format!(
                "FETCH REPLY to epoch {epoch}: {} (knew epoch {promised}, {})",
                e(&rec.as_ref().and_then(|r| r.0.entry())),
                if *granted { "granted" } else { "refused" }
            ),
            Msg::FetchReply { rec, .. } => {
                format!("FETCH REPLY {}", e(&rec.as_ref().and_then(|r| r.0.entry())))
            }
            Msg::Observe(o) => format!("observe {o:?}"),
        }
    }

    /// Renders a path as numbered steps, each followed by what the user agents were sent.
    pub fn describe_path(&self, path: &Path<State, Action>) -> String {
        let mut out = String::new();
        let steps = path.clone().into_vec();
        for (i, pair) in steps.windows(2).enumerate() {
            let (before, action) = (&pair[0].0, pair[0].1.as_ref());
            let after = &pair[1].0;
            if let Some(a) = action {
                out.push_str(&format!("{:>3}. {}\n", i + 1, self.describe(a)));
            }
            for line in self.ua_effects(&before.history, &after.history) {
                out.push_str(&format!("       ↳ {line}\n"));
            }
        }
        out
    }

    /// What user agents were sent between two histories, for counterexample output.
    pub fn ua_effects(&self, before: &History, after: &History) -> Vec<String> {
        let mut lines = Vec::new();
        for (i, (b, a)) in before.subs.iter().zip(&after.subs).enumerate() {
            let who = format!("S{}", i + 1);
            if b.result != a.result {
                let r = if a.result == Some(true) {
                    "200 OK to SUBSCRIBE"
                } else {
                    "no final response to SUBSCRIBE"
                };
                lines.push(format!("{who} gets {r}"));
            }
            if b.timed_out != a.timed_out {
                lines.push(format!("{who} gets 408 to SUBSCRIBE"));
            }
            if b.last != a.last {
                if let Some(e) = a.last {
                    lines.push(format!(
                        "{who} gets NOTIFY seq {} {}",
                        e.seq,
                        values_text(e.values)
                    ));
                }
            }
        }
        for (j, (b, a)) in before.answered.iter().zip(&after.answered).enumerate() {
            if a != b {
                lines.push(format!("U{} gets a final response to PUBLISH", j + 1));
            }
        }
        if after.acked_max != before.acked_max {
            lines.push(format!("a 200 OK acknowledges seq {}", after.acked_max));
        }
        if after.commits != before.commits {
            if let Some((seq, v)) = after.latest() {
                lines.push(format!("the root commits seq {seq} value v{v}"));
            }
        }
        lines
    }

    /// The wrapped actor model's successor, without the wrapper's clean-up (used to see every
    /// message an action sends).
    pub(crate) fn inner_next_state(&self, last: &State, action: Action) -> Option<State> {
        self.inner.next_state(last, action)
    }

    /// Peers that lost their state so far: every crash, restarted or not (a peer that has
    /// not joined yet held nothing).
    fn losses_of_state(state: &State) -> usize {
        state.history.crashes as usize
    }

    /// A heartbeat round at `id` would repair something: a live child that names it its
    /// parent holds an older state than its latest, and nothing is in flight from it to that
    /// child (a multicast to it was lost).
    fn heartbeat_useful(&self, state: &State, id: Id) -> bool {
        if state.history.heartbeats >= state.history.tree_losses {
            return false;
        }
        let me = usize::from(id);
        let Some(p) = self.peer(state, me) else {
            return false;
        };
        let Some(latest) = p.latest else { return false };
        (0..self.setup.peers()).any(|c| {
            p.children & (1 << c) != 0
                && !state.crashed[c]
                && self.peer(state, c).is_some_and(|s| {
                    s.parent == Some(me as PeerIx) && s.latest.is_none_or(|l| l.seq < latest.seq)
                })
                && !any_envelope(&state.network, |src, dst, _| {
                    let (s, d) = (usize::from(src), usize::from(dst));
                    (s, d) == (me, c) || (s, d) == (c, me)
                })
        })
    }

    /// Whether peer `id` names as parent a live peer that no longer holds it as a child, with
    /// nothing in flight between them, while it needs the group and has no request of its own
    /// pending ([`Timer::ParentTimeout`]).
    fn parent_lost(&self, state: &State, id: Id) -> bool {
        if self.setup.mutant == Some(crate::Mutant::NoParentTimeout) {
            return false;
        }
        let me = usize::from(id);
        let Some(st) = self.peer(state, me) else {
            return false;
        };
        let Some(p) = st.parent.map(usize::from) else {
            return false;
        };
        let pending = st.rejoin.is_some() || st.subs.iter().any(|s| s.phase.pending().is_some());
        st.root.is_none()
            && (!st.subs.is_empty() || st.children != 0)
            && !pending
            && !state.crashed[p]
            && self
                .peer(state, p)
                .is_some_and(|q| q.children & (1 << me) == 0)
            && !any_envelope(&state.network, |src, dst, _| {
                let (s, d) = (usize::from(src), usize::from(dst));
                (s, d) == (me, p) || (s, d) == (p, me)
            })
    }

    /// Whether peer `x` may (re)join the overlay now, with no state: it is a joining peer
    /// that has not joined yet, or a crashed peer within the restart budget; every live peer
    /// has declared it dead (a restart takes longer than failure detection); and no user
    /// agent uses it (their dialogs and transactions would be lost as at a crash, and the
    /// model's user agents have no way to notice that yet: production answers 481 and the
    /// user agent subscribes again, a move).
    fn may_rejoin(&self, state: &State, x: usize) -> bool {
        if x >= self.setup.peers() || !state.crashed[x] {
            return false;
        }
        let bit = 1u8 << x;
        if !self.yet_to_join(state, bit) && state.history.restarts as usize >= self.setup.restarts {
            return false;
        }
        self.live_peers(state).all(|(_, s)| s.dead & bit != 0)
            && (0..self.setup.subscribers.len()).all(|i| sub_peer(self, state, i) as usize != x)
            && self.setup.publishers.iter().all(|(p, _)| *p as usize != x)
    }

    fn peer_down(&self, state: &State, p: PeerIx) -> bool {
        state.crashed[p as usize]
    }
}

/// A set of values as text (`{v1,v3}`; `{}` for no state).
pub fn values_text(v: crate::protocol::Values) -> String {
    let items: Vec<String> = (1..8)
        .filter(|i| v & (1 << i) != 0)
        .map(|i| format!("v{i}"))
        .collect();
    format!("{{{}}}", items.join(","))
}

/// Calls `f` on every envelope's destination and message; returns whether any call said true.
fn for_each_envelope(net: &Network<Msg>, mut f: impl FnMut(Id, &Msg) -> bool) -> bool {
    any_envelope(net, |_, dst, m| f(dst, m))
}

/// Calls `f` on every envelope's source, destination and message; returns whether any call
/// said true.
fn any_envelope(net: &Network<Msg>, mut f: impl FnMut(Id, Id, &Msg) -> bool) -> bool {
    match net {
        Network::UnorderedDuplicating(set, _) => set.iter().any(|e| f(e.src, e.dst, &e.msg)),
        Network::UnorderedNonDuplicating(map) => map.keys().any(|e| f(e.src, e.dst, &e.msg)),
        Network::Ordered(map) => map
            .iter()
            .any(|((src, dst), q)| q.iter().any(|m| f(*src, *dst, m))),
    }
}

// ---- properties ----------------------------------------------------------------------------

fn pub_done(m: &SaScribe, state: &State, j: usize) -> bool {
    let (peer, script) = &m.setup.publishers[j];
    m.peer_down(state, *peer) || state.history.answered[j] as usize == script.len()
}

fn subs_answered(m: &SaScribe, state: &State) -> bool {
    (0..m.setup.subscribers.len()).all(|i| {
        let s = &state.history.subs[i];
        m.peer_down(state, sub_peer(m, state, i)) || s.result.is_some() || s.leaving
    })
}

/// The peer of subscriber `i`'s current subscription (its first-contact peer unless it moved
/// or was handed over).
fn sub_peer(m: &SaScribe, state: &State, i: usize) -> PeerIx {
    if let Some(q) = state.history.subs[i].carrier {
        return q;
    }
    let first = m.setup.subscribers[i];
    match state
        .actor_states
        .get(m.setup.subscriber_id(i))
        .map(|s| &***s)
    {
        Some(ParticipantState::Subscriber(s)) => s.peer(first),
        _ => first,
    }
}

fn pubs_answered(m: &SaScribe, state: &State) -> bool {
    (0..m.setup.publishers.len()).all(|j| pub_done(m, state, j))
}

/// Whether subscriber `i` has sent its SUBSCRIBE.
fn sub_started(m: &SaScribe, state: &State, i: usize) -> bool {
    matches!(
        state.actor_states.get(m.setup.subscriber_id(i)).map(|s| &***s),
        Some(ParticipantState::Subscriber(s)) if s.started
    )
}

/// At a quiescent state, every request is answered and every live subscriber holds the latest
/// committed state. (A subscriber that has not subscribed yet has asked nothing.)
fn converged(m: &SaScribe, state: &State) -> bool {
    !m.quiescent(state) || converged_at_rest(m, state)
}

/// [`converged`]'s test at a state known to be quiescent.
fn converged_at_rest(m: &SaScribe, state: &State) -> bool {
    if !pubs_answered(m, state) {
        return false;
    }
    // Before any publication, the latest state is "nothing published" (seq 0).
    let latest = state
        .history
        .latest()
        .unwrap_or((0, crate::protocol::NO_STATE));
    (0..m.setup.subscribers.len()).all(|i| {
        let s = &state.history.subs[i];
        m.peer_down(state, sub_peer(m, state, i))
            || s.leaving
            || !sub_started(m, state, i)
            || (s.result == Some(true)
                && !s.handed
                && s.last.map(|e| (e.seq, e.values)) == Some(latest))
    })
}

/// At a quiescent state, the first-contact peer of every accepted, live subscriber reaches the
/// live root by parent links through live peers, each of which has the one below as a child
/// (so a multicast from the root reaches it).
fn tree_connected(m: &SaScribe, state: &State) -> bool {
    !m.quiescent(state) || connected_at_rest(m, state)
}

/// [`tree_connected`]'s test at a state known to be quiescent.
fn connected_at_rest(m: &SaScribe, state: &State) -> bool {
    let dead = (0..m.setup.peers())
        .filter(|&p| state.crashed[p])
        .fold(0, |d, p| d | (1 << p));
    let Some(root) = m.setup.topo.closest_live(m.setup.gid, dead) else {
        return true;
    };
    (0..m.setup.subscribers.len()).all(|i| {
        let s = &state.history.subs[i];
        let first = sub_peer(m, state, i);
        if m.peer_down(state, first) || s.leaving || s.result != Some(true) {
            return true;
        }
        let mut at = first;
        for _ in 0..m.setup.peers() {
            let Some(here) = m.peer(state, at as usize) else {
                return false;
            };
            if here.root.is_some() {
                return at == root;
            }
            match here.parent {
                Some(q) if !state.crashed[q as usize] => {
                    if m.peer(state, q as usize)
                        .is_none_or(|p| p.children & (1 << at) == 0)
                    {
                        return false;
                    }
                    at = q;
                }
                _ => return false,
            }
        }
        false
    })
}

/// While at most k-1 peers crashed, the latest acknowledged publication is held by a live root
/// or replica (in the state it applied or holds, not only in flight).
fn acked_durable(m: &SaScribe, state: &State) -> bool {
    let acked = state.history.acked_max;
    if acked == 0 || SaScribe::losses_of_state(state) >= m.setup.k {
        return true;
    }
    m.live_peers(state).any(|(_, s)| {
        s.root.as_ref().is_some_and(|r| r.st.seq >= acked)
            || s.replica.as_ref().is_some_and(|r| r.seq >= acked)
    })
}

fn no_rollback(m: &SaScribe, state: &State) -> bool {
    let acked = state.history.acked_max;
    // (Nothing acknowledged: no seq is below it.)
    if acked == 0 || SaScribe::losses_of_state(state) >= m.setup.k {
        return true;
    }
    m.live_peers(state).all(|(_, s)| {
        // A root still fetching its replicas' records serves nothing yet, nor does one that
        // reaches no replica quorum (the smaller side of a partition, or a root that has not
        // yet heard that the other side is back), nor one whose last round was refused (it
        // holds no lease): it holds every request.
        s.root.as_ref().is_none_or(|r| {
            !r.active()
                || !m.setup.quorum(r.acks.len())
                || r.rival
                || r.committed.map_or(0, |e| e.seq) >= acked
        })
    })
}

fn acyclic(m: &SaScribe, state: &State) -> bool {
    let n = m.setup.peers();
    m.live_peers(state).all(|(p, _)| {
        let mut at = p;
        for _ in 0..=n {
            match m.peer(state, at).and_then(|s| s.parent) {
                Some(q) if !state.crashed[q as usize] => at = q as usize,
                _ => return true,
            }
            if at == p {
                return false;
            }
        }
        false
    })
}

/// The safety properties that each say that the history never gets a violation flag, with
/// their flags (`model/tests/mutants.rs` checks that each property is exactly that test).
pub const FLAG_PROPERTIES: &[(&str, u32)] = {
    use history::*;
    &[
        ("notify-seq-increasing", OUT_OF_ORDER),
        ("notify-after-ack", NOTIFY_BEFORE_ACK),
        ("notified-was-published", UNPUBLISHED),
        ("single-committer", DOUBLE_STAMP),
        ("first-notify-fresh", STALE_FIRST),
        (
            "412-changes-nothing",
            STALE_ETAG_COMMITTED | REFUSAL_CHANGED,
        ),
        ("publish-applied-once", DOUBLE_APPLY),
        ("expiry-in-bounds", EXPIRY_OUT_OF_BOUNDS),
        ("central-notifier", NOT_CENTRAL),
        ("modify-not-refused", MODIFY_REFUSED),
        ("removal-keeps-others", STATES_LOST),
        ("no-notify-after-unsubscribe", AFTER_UNSUBSCRIBE),
        ("moved-no-rollback", MOVED_BACK),
        ("stamp-above-view", STAMPED_BELOW_VIEW),
    ]
};

/// The safety properties that read the state rather than one flag of the history, checked as
/// one by [`SaScribe::fusing_flag_properties`] ([`STATE_CLEAN`]).
pub const STATE_PROPERTIES: &[&str] = &[
    "no-rollback",
    "acked-durable",
    "tree-acyclic",
    "tree-connected",
    "subscribers-converge",
];

/// The name of the properties of [`STATE_PROPERTIES`] checked as one.
pub const STATE_CLEAN: &str = "state-properties";

/// The conjunction of the [`STATE_PROPERTIES`] the configuration claims, quiescence tested
/// once for the two that read it.
fn state_clean(m: &SaScribe, s: &State) -> bool {
    let on = |i: usize| m.state_checks & 1 << i != 0;
    (!on(0) || no_rollback(m, s))
        && (!on(1) || acked_durable(m, s))
        && (!on(2) || acyclic(m, s))
        && (!(on(3) || on(4))
            || !m.quiescent(s)
            || ((!on(3) || connected_at_rest(m, s)) && (!on(4) || converged_at_rest(m, s))))
}

/// The sometimes-properties, each witnessed by a history flag.
pub const WITNESS_FLAGS: &[(&str, u32)] = {
    use history::*;
    &[
        ("failover-happened", FAILOVER),
        ("suspected-root-refetched", REFETCHED),
        ("takeover-without-replica", TAKEOVER_EMPTY),
        ("rejoin-carried-state", REJOIN_STATE),
        ("412-happened", REJECTED_412),
        ("subscribed-before-publish", SUBSCRIBED_EMPTY),
        ("states-composed", COMPOSED),
        ("expiry-notified", EXPIRY_NOTIFIED),
        ("subscription-moved", MOVED),
        ("subscription-handed-over", HANDED),
        ("root-handed-to-closer", HANDED_TO_CLOSER),
        ("tree-repaired", TREE_REPAIRED),
    ]
};

/// Every flag of [`FLAG_PROPERTIES`].
pub const VIOLATION_FLAGS: u32 = {
    let mut all = 0;
    let mut i = 0;
    while i < FLAG_PROPERTIES.len() {
        all |= FLAG_PROPERTIES[i].1;
        i += 1;
    }
    all
};

/// The safety and liveness properties the protocol keeps only while at most k−1 peers crash
/// (`no-rollback` and `acked-durable` say so themselves). Beyond, the root and every replica
/// holding a committed state can die with it, its entity tags and the results it stored: a
/// new root stamps that seq again, members that were told it miss what follows, a state they
/// were told is lost, a publisher's tag is unknown (412) and a retransmission is applied
/// again. What the protocol still keeps there (a NOTIFY's order, `stamp-above-view`…) the
/// other properties say, in configurations such as `--k 1 --crashes 2`.
///
/// A configuration that allows k or more crashes does not claim them ([`claimed`]): the
/// checker is not handed them, and `check` reports them "not claimed here".
pub const DURABILITY_BOUND: &[&str] = &[
    "single-committer",
    "first-notify-fresh",
    "no-rollback",
    "acked-durable",
    "publish-applied-once",
    "central-notifier",
    "modify-not-refused",
    "removal-keeps-others",
    "subscribers-converge",
];

/// The name of the properties of [`FLAG_PROPERTIES`] checked as one
/// ([`SaScribe::fusing_flag_properties`]).
pub const FLAGS_CLEAN: &str = "flag-properties";

/// The property names, in report order, with their kind and meaning.
pub const PROPERTIES: &[(&str, &str, &str)] = &[
    ("notify-seq-increasing", "always", "each subscriber's NOTIFY seqs strictly increase"),
    ("notify-after-ack", "always", "no NOTIFY reaches a subscriber before its 200 OK"),
    ("notified-was-published", "always", "every NOTIFY carries a (seq, state) some root committed with that seq"),
    ("single-committer", "always", "every seq is stamped once, by one root, and committed with one composition (a takeover re-commits it unchanged)"),
    ("first-notify-fresh", "always", "a subscriber's first NOTIFY is at least as new as every publication acknowledged before it subscribed"),
    ("no-rollback", "always", "while at most k-1 peers crashed, a serving root's committed seq is never below an acknowledged one (a root still fetching its replicas' records serves nothing; nor does one short of a replica quorum, on the smaller side of a partition, nor one whose promise round was refused)"),
    ("acked-durable", "always", "while at most k-1 peers crashed, a live root or replica holds the latest acknowledged publication"),
    ("412-changes-nothing", "always", "a conditional publish whose ETag names no live event state is never committed, and its 412 leaves the root's state as committed (no seq consumed, nothing pending)"),
    ("publish-applied-once", "always", "a PUBLISH is applied at most once, however often it is retransmitted"),
    ("expiry-in-bounds", "always", "a 200 OK to PUBLISH grants an expiry between 1 and the smaller of the requested one and the maximum"),
    ("central-notifier", "always", "every answer to a PUBLISH is one a central RFC 3903 server applying the commits in seq order gives: a 200 is the commit of that very PUBLISH (its ETag or removal seq), a 412 names no live event state"),
    ("modify-not-refused", "always", "a publisher's refresh, modify or removal of its own live, acknowledged event state never gets 412 (another publisher's state changes nothing for it)"),
    ("removal-keeps-others", "always", "a publication or expiry changes only the event state it names: the others stay"),
    ("tree-acyclic", "always", "no live peer is its own ancestor"),
    ("tree-connected", "always", "at every quiescent state, each accepted live subscriber's peer reaches the live root by parent links, each parent holding the child"),
    ("no-notify-after-unsubscribe", "always", "a subscriber is sent nothing (no NOTIFY, no answer) after it unsubscribed"),
    ("moved-no-rollback", "always", "a subscriber that subscribed again through another peer (its own was gone) is never first shown an older state than it was shown before"),
    ("stamp-above-view", "always", "a root stamps every change above every seq its own member view holds (a late NOTIFY or ACK of a root that died with every replica is taken in, not undercut)"),
    ("subscribe-answered", "eventually", "every SUBSCRIBE to a live peer is accepted by the root (with or without state, not a timeout)"),
    ("publish-answered", "eventually", "every PUBLISH to a live peer gets the root's final answer (200 or 412, not a timeout)"),
    ("subscribers-converge", "always", "at every quiescent state (nothing in flight, no protocol timer enabled), every request is answered and every live subscriber holds the latest committed state, told by the peer that carries its dialog (after a handover, that peer has notified it)"),
    ("failover-happened", "sometimes", "a replica took over as root"),
    ("suspected-root-refetched", "sometimes", "a root that was suspected (and lost its lease) healed and fetched its replicas' records again before serving (with --suspicions)"),
    ("takeover-without-replica", "sometimes", "a peer took over as root holding no replica (the root crashed before it replicated anything)"),
    ("rejoin-carried-state", "sometimes", "a root received a re-JOIN carrying state"),
    ("412-happened", "sometimes", "a publish was answered 412"),
    ("subscribed-before-publish", "sometimes", "a subscriber accepted before anything was published was later notified of a state"),
    ("states-composed", "sometimes", "a subscriber was notified of the composition of two event states"),
    ("expiry-notified", "sometimes", "a subscriber was told by NOTIFY that an event state expired (with --expiries)"),
    ("subscription-moved", "sometimes", "a subscriber whose peer crashed subscribed again through another peer and was notified there"),
    ("subscription-handed-over", "sometimes", "a peer that left handed a subscription over to another peer, which notified the subscriber (with --handovers)"),
    ("root-handed-to-closer", "sometimes", "a root demoted in favour of a closer peer that joined or restarted, and handed it its record (with --joins or --restarts)"),
    ("tree-repaired", "sometimes", "a tree heartbeat round resent a state that a child had missed when a multicast was lost (with --tree-losses)"),
];

/// Whether the property can decide anything in this configuration. A sometimes-property
/// whose event needs an option the configuration leaves off (its meaning says which) can never
/// be witnessed: it is not handed to the checker, which would evaluate it at every state for
/// nothing, and the report calls it not applicable. Every safety and liveness property
/// applies everywhere.
pub fn applicable(setup: &Setup, name: &str) -> bool {
    match name {
        "suspected-root-refetched" => setup.suspicions > 0,
        "expiry-notified" => setup.expiries > 0,
        "subscription-handed-over" => setup.handovers > 0,
        "root-handed-to-closer" => setup.rejoins() > 0,
        "tree-repaired" => setup.tree_losses > 0,
        _ => true,
    }
}

/// Whether the configuration claims property `name`: every property but those of
/// [`DURABILITY_BOUND`] when k or more peers may crash (`--crashes` at least `--k`), where the
/// protocol breaks them by design. An unclaimed property is not handed to the checker, as an
/// inapplicable one is not, and `check` reports it "not claimed here" rather than violated.
pub fn claimed(setup: &Setup, name: &str) -> bool {
    setup.max_crashes < setup.k || !DURABILITY_BOUND.contains(&name)
}

impl Model for SaScribe {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        self.inner
            .init_states()
            .into_iter()
            .map(|mut s| {
                // The joining peers start outside the overlay.
                for p in (0..self.setup.peers()).filter(|p| self.setup.joiners & (1 << p) != 0) {
                    s.crashed[p] = true;
                    s.timers_set[p].cancel_all();
                }
                self.normalize(s)
            })
            .collect()
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        let start = actions.len();
        self.inner.actions(state, actions);
        let mut i = 0;
        actions.retain(|a| {
            i += 1;
            i <= start || self.enabled(state, a)
        });
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let dropped = match &action {
            ActorModelAction::Drop(env) => Some(tree_message(&env.msg)),
            _ => None,
        };
        let crash = matches!(action, ActorModelAction::Crash(_));
        let rejoin = match &action {
            ActorModelAction::Recover(id) => Some(*id),
            _ => None,
        };
        let consumed = match &action {
            ActorModelAction::Deliver { src, dst, msg } => Some(Envelope {
                src: *src,
                dst: *dst,
                msg: msg.clone(),
            }),
            _ => None,
        };
        let Some(mut next) = self.inner.next_state(last, action) else {
            // A delivery the recipient ignores: Stateright leaves such a message in the network
            // forever; consuming it instead lets states that differ only by ignored messages
            // merge (on a non-duplicating network delivering it is exactly consuming it).
            let env = consumed?;
            if self.setup.network != NetworkKind::Unordered {
                return None;
            }
            let mut next = last.clone();
            if let Network::UnorderedNonDuplicating(map) = &mut next.network {
                match map.get_mut(&env) {
                    Some(n) if *n > 1 => *n -= 1,
                    Some(_) => {
                        map.remove(&env);
                    }
                    None => return None,
                }
            }
            return Some(next);
        };
        match dropped {
            Some(true) => history_mut(&mut next).tree_losses += 1,
            Some(false) => history_mut(&mut next).losses += 1,
            None => {}
        }
        if crash {
            history_mut(&mut next).crashes += 1;
        }
        if let Some(x) = rejoin {
            // A restart takes longer than any message delay: what the crashed incarnation
            // sent was delivered or lost before it comes back.
            drop_envelopes(&mut next.network, |src, _, _| src == x);
            let bit = 1u8 << usize::from(x);
            if self.yet_to_join(&next, bit) {
                history_mut(&mut next).joined |= bit;
            } else {
                history_mut(&mut next).restarts += 1;
            }
        }
        Some(self.normalize(next))
    }

    fn format_action(&self, action: &Action) -> String {
        self.describe(action)
    }

    fn as_svg(&self, path: Path<State, Action>) -> Option<String> {
        self.inner.as_svg(path)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        use history::*;
        let mut all = vec![
            Property::always("notify-seq-increasing", |_, s: &State| {
                !s.history.has(OUT_OF_ORDER)
            }),
            Property::always("notify-after-ack", |_, s: &State| {
                !s.history.has(NOTIFY_BEFORE_ACK)
            }),
            Property::always("notified-was-published", |_, s: &State| {
                !s.history.has(UNPUBLISHED)
            }),
            Property::always("single-committer", |_, s: &State| {
                !s.history.has(DOUBLE_STAMP)
            }),
            Property::always("first-notify-fresh", |_, s: &State| {
                !s.history.has(STALE_FIRST)
            }),
            Property::always("no-rollback", no_rollback),
            Property::always("acked-durable", acked_durable),
            Property::always("412-changes-nothing", |_, s: &State| {
                !s.history.has(STALE_ETAG_COMMITTED | REFUSAL_CHANGED)
            }),
            Property::always("publish-applied-once", |_, s: &State| {
                !s.history.has(DOUBLE_APPLY)
            }),
            Property::always("expiry-in-bounds", |_, s: &State| {
                !s.history.has(EXPIRY_OUT_OF_BOUNDS)
            }),
            Property::always("central-notifier", |_, s: &State| {
                !s.history.has(NOT_CENTRAL)
            }),
            Property::always("modify-not-refused", |_, s: &State| {
                !s.history.has(MODIFY_REFUSED)
            }),
            Property::always("removal-keeps-others", |_, s: &State| {
                !s.history.has(STATES_LOST)
            }),
            Property::always("tree-acyclic", acyclic),
            Property::always("tree-connected", tree_connected),
            Property::always("no-notify-after-unsubscribe", |_, s: &State| {
                !s.history.has(AFTER_UNSUBSCRIBE)
            }),
            Property::always("moved-no-rollback", |_, s: &State| {
                !s.history.has(MOVED_BACK)
            }),
            Property::always("stamp-above-view", |_, s: &State| {
                !s.history.has(STAMPED_BELOW_VIEW)
            }),
            Property::eventually("subscribe-answered", subs_answered),
            Property::eventually("publish-answered", pubs_answered),
            Property::always("subscribers-converge", converged),
            Property::sometimes("failover-happened", |m, s| m.witness(s, FAILOVER)),
            Property::sometimes("suspected-root-refetched", |m, s| m.witness(s, REFETCHED)),
            Property::sometimes("takeover-without-replica", |m, s| {
                m.witness(s, TAKEOVER_EMPTY)
            }),
            Property::sometimes("rejoin-carried-state", |m, s| m.witness(s, REJOIN_STATE)),
            Property::sometimes("412-happened", |m, s| m.witness(s, REJECTED_412)),
            Property::sometimes("subscribed-before-publish", |m, s| {
                m.witness(s, SUBSCRIBED_EMPTY)
            }),
            Property::sometimes("states-composed", |m, s| m.witness(s, COMPOSED)),
            Property::sometimes("expiry-notified", |m, s| m.witness(s, EXPIRY_NOTIFIED)),
            Property::sometimes("subscription-moved", |m, s| m.witness(s, MOVED)),
            Property::sometimes("subscription-handed-over", |m, s| m.witness(s, HANDED)),
            Property::sometimes("root-handed-to-closer", |m, s| {
                m.witness(s, HANDED_TO_CLOSER)
            }),
            Property::sometimes("tree-repaired", |m, s| m.witness(s, TREE_REPAIRED)),
        ];
        all.retain(|p| applicable(&self.setup, p.name) && claimed(&self.setup, p.name));
        if let Some(seen) = &self.witnessed {
            let seen = seen.load(Ordering::Relaxed);
            all.retain(|p| {
                WITNESS_FLAGS
                    .iter()
                    .all(|&(name, flag)| name != p.name || seen & flag == 0)
            });
        }
        if self.fuse_flags {
            all.retain(|p| {
                !FLAG_PROPERTIES.iter().any(|(name, _)| *name == p.name)
                    && !STATE_PROPERTIES.contains(&p.name)
            });
            all.insert(0, Property::always(STATE_CLEAN, state_clean));
            all.insert(
                0,
                Property::always(FLAGS_CLEAN, |m: &SaScribe, s: &State| {
                    s.history.flags & m.violation_flags == 0
                }),
            );
        }
        all
    }
}

/// A small, pinned PRNG (SplitMix64) so seeded walks are the same on every build.
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    /// Seeds the generator.
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

impl SaScribe {
    /// A seeded random walk from the initial state: at each step one enabled action is chosen
    /// uniformly, until no action is enabled or `max_steps` is reached. Same seed, same walk.
    pub fn random_walk(&self, seed: u64, max_steps: usize) -> Vec<(Action, State)> {
        self.random_walk_from(self.init_states().remove(0), seed, max_steps)
    }

    /// A seeded random walk of at most `max_steps` steps from `state` (see [`Self::random_walk`]).
    pub fn random_walk_from(
        &self,
        mut state: State,
        seed: u64,
        max_steps: usize,
    ) -> Vec<(Action, State)> {
        let mut rng = SplitMix::new(seed);
        let mut out = Vec::new();
        for _ in 0..max_steps {
            let mut actions = Vec::new();
            self.actions(&state, &mut actions);
            let steps: Vec<(Action, State)> = actions
                .into_iter()
                .filter_map(|a| self.next_state(&state, a.clone()).map(|s| (a, s)))
                .collect();
            if steps.is_empty() {
                break;
            }
            let (a, s) = steps[rng.below(steps.len())].clone();
            state = s.clone();
            out.push((a, s));
        }
        out
    }
}

/// Tree and replication messages: lost within `--tree-losses`, repaired by tree heartbeats
/// and the root's replication retry (the other overlay messages within `--losses`, repaired
/// by retransmission).
fn tree_message(m: &Msg) -> bool {
    matches!(
        m,
        Msg::Multicast(_)
            | Msg::Leave
            | Msg::Beat(_)
            | Msg::BeatAck(_)
            | Msg::Replicate(..)
            | Msg::ReplicaAck(_)
            | Msg::FetchState(_)
            | Msg::FetchReply { .. }
    )
}

/// Removes from the network every envelope (`src`, `dst`, message) for which `drop` holds (a
/// flow of an ordered network left empty goes, as Stateright removes an empty flow).
fn drop_envelopes(network: &mut Network<Msg>, drop: impl Fn(Id, Id, &Msg) -> bool) {
    match network {
        Network::Ordered(map) => map.retain(|&(src, dst), flow| {
            flow.retain(|m| !drop(src, dst, m));
            !flow.is_empty()
        }),
        Network::UnorderedDuplicating(set, _) => set.retain(|e| !drop(e.src, e.dst, &e.msg)),
        // (Stateright 0.31's `iter_all` repeats envelopes whose count is above one, so the
        // multiset is edited in place rather than rebuilt from it.)
        Network::UnorderedNonDuplicating(map) => map.retain(|e, _| !drop(e.src, e.dst, &e.msg)),
    }
}
