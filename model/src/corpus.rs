//! The committed trace corpus: which configurations, which paths. Same build, same files.

use crate::coverage::{explore, labels_of, Coverage, Label};
use crate::model::{Action, State, PROPERTIES};
use crate::progress::{watch, Progress};
use crate::trace::{Origin, Trace};
use crate::Mutant;
use crate::{Options, Preset, SaScribe, Setup};
use stateright::{Checker, HasDiscoveries, Model};
use std::collections::BTreeSet;

/// `sometimes` properties only configurations with suspicions reach; no witness search runs
/// on those (the `paused` configuration's walks and coverage-directed traces take it).
pub const SUSPICION_ONLY: &[&str] = &["suspected-root-refetched"];

/// `sometimes` properties only configurations with moves (`--moves`) reach; moves have no
/// trace form yet (the harness cannot move a user agent to another peer).
pub const MOVE_ONLY: &[&str] = &["subscription-moved"];

/// `sometimes` properties only configurations with handovers (`--handovers`) reach; handovers
/// have no trace form yet (the harness cannot make a peer hand a dialog over).
pub const HANDOVER_ONLY: &[&str] = &["subscription-handed-over"];

/// `sometimes` properties only configurations with joins or restarts (`--joins`,
/// `--restarts`) reach; no witness search runs on those (the `restart` and `join`
/// configurations' walks and coverage-directed traces take the handover).
pub const REJOIN_ONLY: &[&str] = &["root-handed-to-closer"];

/// `sometimes` properties only configurations with tree losses (`--tree-losses`) reach; no
/// witness search runs on those (the `treeloss` configuration's coverage-directed traces take
/// the heartbeat round).
pub const TREE_LOSS_ONLY: &[&str] = &["tree-repaired"];

/// Random walks per configuration in the committed corpus (half as many on `lossy`).
pub const DEFAULT_WALKS: u64 = 100;

/// States the coverage search ([`explore`]) visits per configuration, at most.
pub const COVERAGE_STATES: usize = 500_000;

/// Random walks the coverage search adds per configuration when its BFS is bounded.
pub const COVERAGE_WALKS: u64 = 5_000;

/// Steps of the seeded random walk that continues a coverage-directed trace after the
/// transition it was made for.
const COVER_TAIL: usize = 60;

/// The configurations the corpus explores: (name, options of the random walks, options of the
/// witness search if there is one). A witness search is a BFS until every `sometimes` property
/// is witnessed, so its configuration must reach them all: one subscriber, three publishes (two
/// publishers' states composed, then a modify after an expiry: the 412), one crash, one expiry.
pub fn configs() -> Vec<(&'static str, Options, Option<Options>)> {
    // Two subscribers, one of which unsubscribes, three publishes and a crash.
    let unsubscribing = |preset| Options {
        preset,
        subscribers: Some(2),
        publishes: Some(3),
        crashes: Some(1),
        unsubscribes: 1,
        ..Default::default()
    };
    // Two tree losses, a crash and an unsubscribe: the tree's maintenance (heartbeat rounds,
    // LEAVE, parent timeouts) in its traces.
    let tree_lossy = |preset| Options {
        preset,
        tree_losses: 2,
        subscribers: Some(2),
        publishes: Some(3),
        crashes: Some(1),
        unsubscribes: 1,
        ..Default::default()
    };
    // The group's nominal root joins mid-run; two subscribers, three publishes and a crash.
    let joining = |preset| Options {
        preset,
        subscribers: Some(2),
        publishes: Some(3),
        crashes: Some(1),
        joins: 1,
        ..Default::default()
    };
    // A false suspicion and a crash, one subscriber and three publications.
    let paused_crashed = |preset| Options {
        preset,
        subscribers: Some(1),
        publishes: Some(3),
        crashes: Some(1),
        suspicions: 1,
        ..Default::default()
    };
    let witness = |preset| Options {
        preset,
        subscribers: Some(1),
        publishes: Some(3),
        crashes: Some(1),
        expiries: Some(1),
        ..Default::default()
    };
    vec![
        (
            "small",
            Options {
                subscribers: Some(2),
                publishes: Some(4),
                expiries: Some(1),
                ..Default::default()
            },
            Some(witness(Preset::Small)),
        ),
        (
            "multihop",
            unsubscribing(Preset::Multihop),
            Some(witness(Preset::Multihop)),
        ),
        ("fig3", unsubscribing(Preset::Fig3), None),
        (
            "lossy",
            Options {
                losses: 1,
                subscribers: Some(2),
                publishes: Some(2),
                ..Default::default()
            },
            None,
        ),
        // Two crashes: a new root whose fetch waits on a replica that dies too, a record
        // re-replicated twice, an orphan re-JOINing through an intermediate that crashes, and
        // each peer's failure detector reporting one crash before the other or after it.
        (
            "crash2",
            Options {
                preset: Preset::Multihop,
                subscribers: Some(2),
                publishes: Some(3),
                crashes: Some(2),
                ..Default::default()
            },
            None,
        ),
        ("treeloss", tree_lossy(Preset::Multihop), None),
        // Three subscribers at one peer (A, two hops from the root), two of which unsubscribe:
        // A answers each from what it holds, and stays in the tree (no LEAVE) while one is
        // left; a crash moves the tree under them, a lost multicast leaves all three behind
        // until a heartbeat round.
        (
            "colocated",
            Options {
                preset: Preset::Multihop,
                subscribers: Some(3),
                colocated: true,
                unsubscribes: 2,
                publishes: Some(3),
                crashes: Some(1),
                tree_losses: 1,
                ..Default::default()
            },
            None,
        ),
        // The root crashes, a replica takes over, and the old root restarts with nothing: the
        // peers take it back one by one, and the serving root hands the group to it (it is
        // closer) with its record, or fetches again if it stays root.
        (
            "restart",
            Options {
                subscribers: Some(1),
                publishes: Some(3),
                crashes: Some(1),
                restarts: 1,
                perfect_detector: true,
                ..Default::default()
            },
            None,
        ),
        // The same with leases (no perfect failure detector): promises, leases and fencing
        // order the two roots a restart makes. The replicas confirm the first root's lease;
        // the new root's fetch finds them busy until it lapses (`lapse`, `reask`), the old
        // root's late REPLICATEs are fenced, and a replica that knows the restarted peer
        // answers `not_root`.
        (
            "fenced",
            Options {
                subscribers: Some(1),
                publishes: Some(3),
                crashes: Some(1),
                restarts: 1,
                ..Default::default()
            },
            None,
        ),
        // The nominal root joins mid-run: D is outside the overlay at the start, so E roots
        // the group; D joins, the peers take it in one by one, and E hands the group over to
        // it with its record as soon as it hears of D (the others' routes follow as they do),
        // or fetches again in a new epoch (D may have served requests routed to it first).
        // A crash: of D once it serves (E takes the group back, counting D among the dead
        // closer to the group in its epoch, as it took D in), or of another peer.
        ("join", joining(Preset::Multihop), None),
        // A false suspicion: a live peer is paused, the others declare it dead (a replica
        // takes over a paused root, a paused member's parent drops it), and it runs again. A
        // paused root's lease lapses: its late REPLICATEs are fenced, it fetches again when
        // it finds out, and hands over or serves the newer record; a paused member re-JOINs.
        (
            "paused",
            Options {
                subscribers: Some(1),
                publishes: Some(3),
                crashes: Some(0),
                suspicions: 1,
                ..Default::default()
            },
            None,
        ),
        // The same with a crash: a root whose replica group (itself and its two replicas) is
        // three peers commits only while it reaches one replica, so with one dead and the
        // other paused it holds what it is asked until the paused one is back.
        ("paused-crash", paused_crashed(Preset::Small), None),
        // The same on multihop: the root's replicas are two of its three other peers, so a
        // replica's death brings a peer that never confirmed the root's lease into its
        // replica set, and the root fetches again from the new set before it serves; a pause
        // may meet the crash.
        ("paused-multihop", paused_crashed(Preset::Multihop), None),
        // Fig. 3's two subscribers share an intermediate hop: one's LEAVE can be overtaken by
        // the other's JOIN through it, which only a parent timeout repairs.
        ("fig3-treeloss", tree_lossy(Preset::Fig3), None),
        // Ids that share leading digits (D and the root P464): production's learnt routing
        // tables fill rows past the first as the overlay forms, and a peer may declare dead
        // a peer whose address it never held (a slot holds one of the peers that fit it).
        ("prefix", unsubscribing(Preset::Prefix), None),
        // The same ids with a false suspicion and a crash: a peer that a learnt routing table
        // holds in a slot it shares with another, but no leaf set holds, is declared dead and
        // comes back (production takes it back into its slot, not only into leaf sets).
        ("paused-prefix", paused_crashed(Preset::Prefix), None),
        // One replica (k = 1) and two crashes once two publications are committed: the root
        // and its replica may both die, so a new root can start with no record while the
        // tree still holds the latest state. Here the new root, C, is the subscribers' hop to
        // the old one: it takes the state in from its own member view as it activates, or
        // from a late NOTIFY or ACK as it serves (`stamp-above-view`). (A re-JOIN carrying a
        // state newer than the new root's cannot happen in `multihop`: every path to D runs
        // through C.)
        (
            "carried",
            Options {
                preset: Preset::Multihop,
                k: Some(1),
                subscribers: Some(2),
                publishes: Some(3),
                crashes: Some(2),
                crashes_after: 2,
                ..Default::default()
            },
            None,
        ),
        // Six peers, all in the group's replica group (k = 5), two crashes and a pause: the
        // root commits only while it reaches a majority of its replica group, so with two
        // peers dead and one paused it holds what it is asked until the paused one is back
        // (or, paused itself, the others' new root serves with three).
        (
            "quorum",
            Options {
                peers: Some(6),
                k: Some(5),
                subscribers: Some(1),
                publishes: Some(3),
                crashes: Some(2),
                suspicions: 1,
                ..Default::default()
            },
            None,
        ),
        // The `prefix` ids with the nominal root (P464) joining mid-run, next to D, which
        // shares its leading digits: a peer may learn of P464 into a routing-table slot
        // before its leaf set, and must still take it into its leaf set when it hears from
        // it (production's own join runs here; the harness only orders its datagrams).
        ("join-prefix", joining(Preset::Prefix), None),
    ]
}

/// Witness paths for every `sometimes` property (shortest, found by single-threaded BFS), for
/// the configurations small enough to search.
fn witnesses(name: &str, model: &SaScribe, progress: &mut Progress) -> Vec<(Trace, Vec<Action>)> {
    let wanted: BTreeSet<&'static str> = PROPERTIES
        .iter()
        .filter(|(name, kind, _)| {
            *kind == "sometimes"
                && !SUSPICION_ONLY.contains(name)
                && !MOVE_ONLY.contains(name)
                && !HANDOVER_ONLY.contains(name)
                && !REJOIN_ONLY.contains(name)
                && !TREE_LOSS_ONLY.contains(name)
        })
        .map(|(n, _, _)| *n)
        .collect();
    let mut checker = model
        .clone()
        .checker()
        .threads(1)
        .finish_when(HasDiscoveries::AllOf(wanted.clone()))
        .spawn_bfs();
    watch(&mut checker, None, progress);
    wanted
        .into_iter()
        .filter_map(|p| {
            let actions = checker.discovery(p)?.into_actions();
            let trace = model.trace(
                format!("{name}-witness-{p}"),
                Origin {
                    kind: "witness",
                    property: Some(p.to_string()),
                    transition: None,
                    seed: None,
                    mutant: None,
                },
                &actions,
            );
            Some((trace, actions))
        })
        .collect()
}

/// Mutant-directed path for seeded bug `m`: the counterexample the checker finds
/// (single-threaded BFS, on the configuration that catches it) replayed on the correct model
/// for as long as its actions are possible there. Such a path leads a correct implementation
/// to the very step where that bug shows, and expects the correct behaviour.
fn mutant_path(m: Mutant, progress: &mut Progress) -> Option<(Trace, BTreeSet<Label>)> {
    let c = m.catching_config();
    if (c.8 > 0 && c.9) || c.10 > 0 || c.11 > 0 {
        // Partitions, moves and handovers have no trace form yet: the harness cannot drive
        // production through them (a pause has one, and so has a join).
        return None;
    }
    let buggy = SaScribe::new(c.setup(Some(m)));
    let mut checker = buggy
        .checker()
        .threads(1)
        .finish_when(HasDiscoveries::AnyOf([m.property()].into_iter().collect()))
        .spawn_bfs();
    watch(&mut checker, None, progress);
    let path = checker.discovery(m.property())?;
    let correct = SaScribe::new(c.setup(None));
    let actions = feasible_prefix(&correct, &path.into_actions());
    let trace = correct.trace(
        format!("mutant-{}", m.name()),
        Origin {
            kind: "mutant-path",
            property: Some(m.property().to_string()),
            transition: None,
            seed: None,
            mutant: Some(m.name().to_string()),
        },
        &actions,
    );
    let taken = &actions[..trace.steps.len()];
    Some((trace, labels_of(&correct, taken)))
}

/// The longest prefix of `actions` the model can take from its initial state.
fn feasible_prefix(model: &SaScribe, actions: &[Action]) -> Vec<Action> {
    let mut state: State = model.init_states().remove(0);
    let mut out = Vec::new();
    for a in actions {
        let mut enabled = Vec::new();
        model.actions(&state, &mut enabled);
        let Some(next) = enabled
            .contains(a)
            .then(|| model.next_state(&state, a.clone()))
            .flatten()
        else {
            break;
        };
        state = next;
        out.push(a.clone());
    }
    out
}

/// The whole corpus: mutant-directed paths, witnesses on `small` and `multihop`, and `walks`
/// seeded random walks on every configuration (`walks / 2` on `lossy`).
pub fn corpus(walks: u64) -> Vec<Trace> {
    let mut out = Vec::new();
    corpus_each(walks, &mut Progress::quiet(), &mut |t| {
        out.push(t);
        Ok(())
    })
    .expect("collecting traces cannot fail");
    out
}

/// What [`corpus_each`] made.
pub struct Summary {
    /// Traces emitted.
    pub traces: usize,
    /// Coverage-directed traces among them.
    pub directed: usize,
    /// Transition coverage of the whole corpus.
    pub coverage: Coverage,
    /// Transition coverage without the coverage-directed traces (the walks, witnesses and
    /// mutant-directed paths alone), against the same reachable labels.
    pub undirected: Coverage,
    /// Per configuration: its name, the states its coverage search visited, whether that
    /// search was exhaustive, and how many labels only its random walks found.
    pub searches: Vec<(&'static str, usize, bool, usize)>,
}

impl Summary {
    /// The lines `traces` prints.
    pub fn report(&self) -> String {
        let mut out = format!(
            "transition coverage: {} ({} without the {} coverage-directed traces)\n",
            self.coverage.figure(),
            self.undirected.figure(),
            self.directed
        );
        for (name, states, exhaustive, walks_found) in &self.searches {
            out.push_str(&format!(
                "  reachable labels of {name}: BFS over {states} states{}\n",
                if *exhaustive {
                    " (exhaustive)".to_string()
                } else {
                    format!(
                        " (bounded), then {COVERAGE_WALKS} random walks: {walks_found} labels more"
                    )
                }
            ));
        }
        let missed: Vec<String> = (self.coverage.reachable.difference(&self.coverage.covered))
            .map(|l| format!("  not covered: {l}\n"))
            .collect();
        out.extend(missed);
        out
    }
}

/// The [`corpus`], each trace handed to `emit` as soon as it is made (in corpus order), with a
/// progress line at each stage (which configuration, how many traces so far) and every few
/// seconds within one (which mutant or walk, the checker's counters). Stops at the first error
/// of `emit`.
///
/// After each configuration's walks, a breadth-first search of it ([`explore`], at most
/// [`COVERAGE_STATES`] states, then [`COVERAGE_WALKS`] random walks) lists the transition
/// labels it can take; every one that no
/// trace so far takes gets a trace of its own (`NAME-cover-NNN`): the shortest path to it,
/// continued by a short seeded random walk.
pub fn corpus_each(
    walks: u64,
    progress: &mut Progress,
    emit: &mut dyn FnMut(Trace) -> Result<(), String>,
) -> Result<Summary, String> {
    let mut sum = Summary {
        traces: 0,
        directed: 0,
        coverage: Coverage::default(),
        undirected: Coverage::default(),
        searches: Vec::new(),
    };
    let mut emit = |t: Trace, labels: BTreeSet<Label>, directed: bool, sum: &mut Summary| {
        if !directed {
            sum.undirected.covered.extend(labels.iter().copied());
        }
        sum.coverage.covered.extend(labels);
        sum.traces += 1;
        sum.directed += usize::from(directed);
        emit(t)
    };
    let mutants = Mutant::ALL.len();
    progress.say(&format!(
        "traces: mutant-directed paths for {mutants} seeded bugs (a BFS each)"
    ));
    for (i, &m) in Mutant::ALL.iter().enumerate() {
        progress.set_context(format!(
            "traces: mutant {} of {mutants} ({}), {} traces so far",
            i + 1,
            m.name(),
            sum.traces
        ));
        if let Some((t, labels)) = mutant_path(m, progress) {
            emit(t, labels, false, &mut sum)?;
        }
    }
    for (name, opts, witness) in configs() {
        let model = SaScribe::new(Setup::new(&opts).expect("corpus configs are valid"));
        if let Some(w) = witness {
            let wmodel = SaScribe::new(Setup::new(&w).expect("corpus configs are valid"));
            progress.say(&format!(
                "traces: witnesses on {name} (BFS), {} traces so far",
                sum.traces
            ));
            progress.set_context(format!(
                "traces: witnesses on {name}, {} traces so far",
                sum.traces
            ));
            for (t, actions) in witnesses(name, &wmodel, progress) {
                let labels = labels_of(&wmodel, &actions[..t.steps.len()]);
                emit(t, labels, false, &mut sum)?;
            }
        }
        let walks = if name == "lossy" { walks / 2 } else { walks };
        progress.say(&format!(
            "traces: {walks} random walks on {name}, {} traces so far",
            sum.traces
        ));
        // A walk in which no user agent is told anything (their peers crashed before they
        // spoke) tests nothing a client sees: an implementation that answers nothing passes
        // it. It is left out, and the next seed drawn.
        let mut kept = 0;
        for seed in 0..walks * 4 {
            if kept == walks {
                break;
            }
            progress.set_context(format!(
                "traces: random walk {} of {walks} on {name}, {} traces so far",
                kept + 1,
                sum.traces
            ));
            progress.tick(None);
            let actions: Vec<Action> = model
                .random_walk(seed, 400)
                .into_iter()
                .map(|(a, _)| a)
                .collect();
            let t = model.trace(
                format!("{name}-walk-{seed:03}"),
                Origin {
                    kind: "walk",
                    property: None,
                    transition: None,
                    seed: Some(seed),
                    mutant: None,
                },
                &actions,
            );
            if t.steps.iter().all(|s| s.expect.client.is_empty()) {
                continue;
            }
            kept += 1;
            let labels = labels_of(&model, &actions[..t.steps.len()]);
            emit(t, labels, false, &mut sum)?;
        }
        progress.say(&format!(
            "traces: coverage search on {name} (BFS), {} traces so far",
            sum.traces
        ));
        progress.set_context(format!("traces: coverage search on {name}"));
        progress.tick(None);
        let found = explore(&model, COVERAGE_STATES, COVERAGE_WALKS);
        sum.searches
            .push((name, found.states, found.exhaustive, found.walks_found));
        let mut k = 0u64;
        for (label, path) in &found.paths {
            sum.coverage.reachable.insert(*label);
            if sum.coverage.covered.contains(label) {
                continue;
            }
            let end = feasible_state(&model, path);
            let mut actions = path.clone();
            actions.extend(
                model
                    .random_walk_from(end, k, COVER_TAIL)
                    .into_iter()
                    .map(|(a, _)| a),
            );
            let t = model.trace(
                format!("{name}-cover-{k:03}"),
                Origin {
                    kind: "coverage",
                    property: None,
                    transition: Some(label.to_string()),
                    seed: Some(k),
                    mutant: None,
                },
                &actions,
            );
            let labels = labels_of(&model, &actions[..t.steps.len()]);
            emit(t, labels, true, &mut sum)?;
            k += 1;
        }
    }
    let covered = sum.coverage.covered.clone();
    sum.coverage.reachable.extend(covered);
    sum.undirected.reachable = sum.coverage.reachable.clone();
    progress.set_context(String::new());
    Ok(sum)
}

/// The state `actions` lead to from the initial state (they are all possible).
fn feasible_state(model: &SaScribe, actions: &[Action]) -> State {
    let mut state: State = model.init_states().remove(0);
    for a in actions {
        state = model
            .next_state(&state, a.clone())
            .expect("a search path is possible");
    }
    state
}
