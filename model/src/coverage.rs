//! Transition coverage of the trace corpus.
//!
//! A trace is only as good as the transitions it takes. A transition is labelled by what
//! happens ([`Label::kind`]: which message is delivered or lost, which timer fires, a crash,
//! refined where the protocol branches on the message: a PUBLISH with or without SIP-If-Match,
//! a removal, a JOIN carrying a state (newer than the root's, or not), an ACK with or without
//! one, a REPLICATE with a record above a root's by its epoch against the root's, a FENCED of
//! the root's current epoch or an earlier one, a NOT ROOT at a root that routes the group
//! elsewhere or not), by the role of the peer that takes it ([`Label::role`]: root, a root still fetching, replica, tree member, off the
//! tree, with or without local subscribers, or a user agent) and by its context
//! ([`Label::context`]: a commit pending at that root, a peer crashed before, a message lost
//! before).
//!
//! [`explore`] finds the labels a configuration can take (a breadth-first search over its
//! state space, bounded in states) and, for each, the shortest path that takes it. The corpus
//! ([`crate::corpus`]) measures which of them its random walks, witnesses and mutant-directed
//! paths take, then adds one trace for every label they miss: coverage-directed generation.

use crate::model::{Action, State};
use crate::protocol::{Msg, ParticipantState, PeerState, PubResult, Root, Timer, UaEvent};
use crate::SaScribe;
use stateright::actor::{ActorModelAction, Id};
use stateright::Model;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::fmt;
use std::hash::{Hash, Hasher};

/// One class of transition: what happens, to whom, in what context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    /// What happens: the step (`deliver`, `lose`, `timer`, `crash`…) and what it is about
    /// (`JOIN carrying a state`, `retransmission`, `REPLICATE`…; empty for a crash).
    pub kind: (&'static str, &'static str),
    /// The role of the actor that takes the step (its state before it).
    pub role: &'static str,
    /// The context: `commit pending` (at a root), `after a crash`, `after a loss`.
    pub context: &'static str,
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            (step, "") => write!(f, "{step} | {}", self.role)?,
            (step, what) => write!(f, "{step} {what} | {}", self.role)?,
        }
        if !self.context.is_empty() {
            write!(f, " | {}", self.context)?;
        }
        Ok(())
    }
}

/// What a message is, refined where the receiver branches on it.
fn msg_kind(msg: &Msg) -> &'static str {
    match msg {
        Msg::Subscribe => "SUBSCRIBE",
        Msg::Unsubscribe => "un-SUBSCRIBE",
        Msg::Handover { .. } => "HANDOVER",
        Msg::Publish { if_match: None, .. } => "PUBLISH initial",
        Msg::Publish { expires: 0, .. } => "PUBLISH removal",
        Msg::Publish { .. } => "PUBLISH conditional",
        Msg::ToSubscriber {
            ev: UaEvent::Accepted,
            ..
        } => "200 to SUBSCRIBE",
        Msg::ToSubscriber {
            ev: UaEvent::Notify(_),
            ..
        } => "NOTIFY",
        Msg::ToSubscriber {
            ev: UaEvent::TimedOut,
            ..
        } => "408 to SUBSCRIBE",
        Msg::PubResponse {
            result: PubResult::PreconditionFailed,
            ..
        } => "412 to PUBLISH",
        Msg::PubResponse { .. } => "200 to PUBLISH",
        Msg::Join { carried: None, .. } => "JOIN",
        Msg::Join { .. } => "JOIN carrying a state",
        Msg::PAck => "pACK",
        Msg::JoinReply { state: None, .. } => "ACK, nothing published",
        Msg::JoinReply { .. } => "ACK with a state",
        Msg::Multicast(_) => "MULTICAST",
        Msg::Leave => "LEAVE",
        Msg::Beat(_) => "beat",
        Msg::BeatAck(_) => "beat ack",
        Msg::PubFwd { if_match: None, .. } => "publish forward, initial",
        Msg::PubFwd { expires: 0, .. } => "publish forward, removal",
        Msg::PubFwd { .. } => "publish forward, conditional",
        Msg::PubReply {
            result: PubResult::PreconditionFailed,
            ..
        } => "publish reply 412",
        Msg::PubReply { .. } => "publish reply 200",
        Msg::Replicate(..) => "REPLICATE",
        Msg::ReplicaAck(_) => "replica ack",
        Msg::FetchState(_) => "FETCH STATE",
        Msg::FetchReply { rec: None, .. } => "FETCH REPLY, no record",
        Msg::FetchReply { .. } => "FETCH REPLY with a record",
        Msg::FetchBusy(_) => "FETCH BUSY",
        Msg::Fenced(..) => "FENCED",
        Msg::NotRoot(_) => "NOT ROOT",
        Msg::Observe(_) => "observation",
    }
}

fn timer_kind(t: &Timer) -> &'static str {
    match t {
        Timer::Start => "subscriber starts",
        Timer::Stop => "subscriber stops",
        Timer::Move(_) => "subscription moves",
        Timer::Handover(_) => "handover",
        Timer::Detect(_) => "failure detected",
        Timer::Retry(_) => "retransmission",
        Timer::Resend => "replication retry",
        Timer::Expire(_) => "expiry",
        Timer::Suspect => "suspicion",
        Timer::Heal => "heal",
        Timer::Lapse => "lease lapses",
        Timer::Reask(_) => "fetch asked again",
        Timer::Alive(_) => "dead peer back",
        Timer::Heartbeat => "tree heartbeat",
        Timer::ParentTimeout => "parent timed out",
    }
}

/// The label of `action` taken in `state` of `model`.
pub fn label(model: &SaScribe, state: &State, action: &Action) -> Label {
    let (kind, actor) = match action {
        ActorModelAction::Deliver { dst, msg, .. } => (("deliver", msg_kind(msg)), *dst),
        ActorModelAction::Drop(env) => (("lose", msg_kind(&env.msg)), env.dst),
        ActorModelAction::Timeout(id, t) => (("timer", timer_kind(t)), *id),
        ActorModelAction::Crash(id) => (("crash", ""), *id),
        ActorModelAction::Recover(id) => (("recover", ""), *id),
        ActorModelAction::SelectRandom { actor, .. } => (("random choice", ""), *actor),
    };
    let (role, pending) = role(state, actor);
    let kind = match action {
        ActorModelAction::Deliver {
            msg: Msg::Join {
                carried: Some(c), ..
            },
            ..
        } if carried_ahead(state, actor, c.seq) => ("deliver", "JOIN carrying a newer state"),
        ActorModelAction::Deliver {
            msg: Msg::Fenced(_, _, refused),
            ..
        } if root_of(state, actor).is_some_and(|r| r.epoch == *refused) => {
            ("deliver", "FENCED of the root's epoch")
        }
        ActorModelAction::Deliver {
            msg: Msg::Replicate(rs, epoch),
            ..
        } => match root_of(state, actor).filter(|r| rs.0.key() > r.st.key()) {
            Some(r) if *epoch > r.epoch => ("deliver", "REPLICATE, higher, of a newer epoch"),
            Some(r) if *epoch == r.epoch => ("deliver", "REPLICATE, higher, of the root's epoch"),
            Some(_) => ("deliver", "REPLICATE, higher, of an older epoch"),
            None => kind,
        },
        ActorModelAction::Deliver {
            msg: Msg::NotRoot(_),
            ..
        } if routes_elsewhere(model, state, actor) => ("deliver", "NOT ROOT, routing elsewhere"),
        _ => kind,
    };
    let crashed = state.crashed.iter().any(|c| *c);
    let lost = state.history.losses > 0;
    let context = match (pending, crashed, lost) {
        (true, true, _) => "commit pending, after a crash",
        (true, false, true) => "commit pending, after a loss",
        (true, false, false) => "commit pending",
        (false, true, _) => "after a crash",
        (false, false, true) => "after a loss",
        (false, false, false) => "",
    };
    Label {
        kind,
        role,
        context,
    }
}

/// The state of peer `actor` in `state` (`None` for a user agent).
fn peer_of(state: &State, actor: Id) -> Option<&PeerState> {
    match state.actor_states.get(usize::from(actor)).map(|a| &***a) {
        Some(ParticipantState::Peer(p)) => Some(p),
        _ => None,
    }
}

/// The root role of `actor` in `state`, if it holds one.
fn root_of(state: &State, actor: Id) -> Option<&Root> {
    peer_of(state, actor)?.root.as_ref()
}

/// Whether `actor` holds a root role yet routes the group to another peer (as far as it knows
/// who is dead): a `NotRoot` makes it hand the group over.
fn routes_elsewhere(model: &SaScribe, state: &State, actor: Id) -> bool {
    let Some(p) = peer_of(state, actor) else {
        return false;
    };
    let me = usize::from(actor) as crate::topology::PeerIx;
    p.root.is_some() && model.setup.topo.next_hop(me, model.setup.gid, p.dead) != me
}

/// Whether `actor` is a root whose entry is older than a carried state of seq `seq`: a JOIN
/// carrying it makes the root adopt it (re-JOIN reconciliation), a branch of its own.
fn carried_ahead(state: &State, actor: Id, seq: u8) -> bool {
    root_of(state, actor).is_some_and(|r| r.st.entry().is_none_or(|e| seq > e.seq))
}

/// The role of `actor` in `state`, and whether it is a root with a commit pending.
fn role(state: &State, actor: Id) -> (&'static str, bool) {
    let Some(p) = peer_of(state, actor) else {
        return ("user agent", false);
    };
    let local = !p.subs.is_empty();
    if let Some(r) = &p.root {
        let pending = !r.waiting.is_empty();
        let role = match (r.fetching == 0, local) {
            (false, _) => "root, fetching",
            (true, true) => "root with local subscribers",
            (true, false) => "root",
        };
        return (role, pending);
    }
    let on_tree = p.parent.is_some() || p.children != 0;
    let role = match (p.replica.is_some(), on_tree, local) {
        (true, true, _) => "replica on the tree",
        (true, false, _) => "replica",
        (false, true, true) => "member with local subscribers",
        (false, true, false) => "member",
        (false, false, true) => "off the tree, local subscribers",
        (false, false, false) => "off the tree",
    };
    (role, false)
}

/// The labels `actions` take from the model's initial state (stopping at the first action the
/// model cannot take).
pub fn labels_of(model: &SaScribe, actions: &[Action]) -> BTreeSet<Label> {
    let mut state = model.init_states().remove(0);
    let mut out = BTreeSet::new();
    for a in actions {
        let l = label(model, &state, a);
        let Some(next) = model.next_state(&state, a.clone()) else {
            break;
        };
        out.insert(l);
        state = next;
    }
    out
}

/// What [`explore`] found.
pub struct Exploration {
    /// Every label taken, with the shortest path (its last action takes the label).
    pub paths: BTreeMap<Label, Vec<Action>>,
    /// States visited.
    pub states: usize,
    /// The whole reachable state space was visited (not cut by the state bound).
    pub exhaustive: bool,
    /// Labels the walks found that the bounded search did not reach.
    pub walks_found: usize,
}

/// Breadth-first search of `model` from its initial state over at most `max_states` distinct
/// states: every transition label it takes, each with its shortest path. When the bound cuts
/// the search, `walks` seeded random walks (400 steps each) look deeper, and a label only they
/// take comes with the walk's prefix up to it. Single-threaded and in the model's action
/// order, so the same model gives the same paths.
pub fn explore(model: &SaScribe, max_states: usize, walks: u64) -> Exploration {
    // Node i: (parent node, action from it); node 0 is the initial state.
    let mut nodes: Vec<(u32, Option<Action>)> = vec![(0, None)];
    let mut seen: HashSet<u64> = HashSet::new();
    let mut queue: VecDeque<(u32, State)> = VecDeque::new();
    let mut paths = BTreeMap::new();
    let init = model.init_states().remove(0);
    seen.insert(hash(&init));
    queue.push_back((0, init));
    let path_to = |nodes: &[(u32, Option<Action>)], mut i: u32| {
        let mut out = Vec::new();
        while let (parent, Some(a)) = &nodes[i as usize] {
            out.push(a.clone());
            i = *parent;
        }
        out.reverse();
        out
    };
    let mut exhaustive = true;
    let mut actions = Vec::new();
    while let Some((node, state)) = queue.pop_front() {
        actions.clear();
        model.actions(&state, &mut actions);
        for a in actions.drain(..) {
            let l = label(model, &state, &a);
            let Some(next) = model.next_state(&state, a.clone()) else {
                continue;
            };
            paths.entry(l).or_insert_with(|| {
                let mut p = path_to(&nodes, node);
                p.push(a.clone());
                p
            });
            if !seen.insert(hash(&next)) {
                continue;
            }
            if seen.len() > max_states {
                exhaustive = false;
                continue;
            }
            nodes.push((node, Some(a)));
            queue.push_back(((nodes.len() - 1) as u32, next));
        }
    }
    let states = seen.len().min(max_states);
    drop(queue);
    drop(seen);
    // Deeper than the bounded search reaches: seeded random walks, each label's first walk
    // prefix that takes it.
    let mut walks_found = 0;
    if !exhaustive {
        for seed in 0..walks {
            let walk = model.random_walk(WALK_SEED_BASE + seed, WALK_STEPS);
            let mut state = model.init_states().remove(0);
            for (i, (a, next)) in walk.iter().enumerate() {
                let l = label(model, &state, a);
                if let std::collections::btree_map::Entry::Vacant(e) = paths.entry(l) {
                    e.insert(walk[..=i].iter().map(|(a, _)| a.clone()).collect());
                    walks_found += 1;
                }
                state = next.clone();
            }
        }
    }
    Exploration {
        paths,
        states,
        exhaustive,
        walks_found,
    }
}

/// Seeds of [`explore`]'s walks start here, apart from the corpus's own walks (seeds from 0).
const WALK_SEED_BASE: u64 = 1 << 32;
/// Steps of each of [`explore`]'s walks.
const WALK_STEPS: usize = 400;

fn hash(state: &State) -> u64 {
    let mut h = DefaultHasher::new();
    state.hash(&mut h);
    h.finish()
}

/// The corpus's coverage: labels reachable on its configurations (found by [`explore`] or
/// taken by a trace), labels its traces take.
#[derive(Default)]
pub struct Coverage {
    /// Labels taken by the traces so far.
    pub covered: BTreeSet<Label>,
    /// Labels found reachable so far.
    pub reachable: BTreeSet<Label>,
}

impl Coverage {
    /// The figure: `covered of reachable (percent)`.
    pub fn figure(&self) -> String {
        let c = self.covered.len();
        let r = self.reachable.union(&self.covered).count();
        format!(
            "{c} of {r} transition labels ({:.1} %)",
            100.0 * c as f64 / r.max(1) as f64
        )
    }
}
