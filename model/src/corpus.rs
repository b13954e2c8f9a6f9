//! The committed trace corpus: which configurations, which paths. Same build, same files.

use crate::model::{Action, State, PROPERTIES};
use crate::progress::{watch, Progress};
use crate::trace::{Origin, Trace};
use crate::Mutant;
use crate::{Options, Preset, SaScribe, Setup};
use stateright::{Checker, HasDiscoveries, Model};
use std::collections::BTreeSet;

/// `sometimes` properties only configurations with suspicions reach; suspicion traces are not
/// exported yet (production has no epochs; the harness cannot drive a suspicion).
pub const SUSPICION_ONLY: &[&str] = &["suspected-root-refetched"];

/// `sometimes` properties only configurations with moves (`--moves`) reach; moves have no
/// trace form yet (the harness cannot move a user agent to another peer).
pub const MOVE_ONLY: &[&str] = &["subscription-moved"];

/// `sometimes` properties only configurations with handovers (`--handovers`) reach; handovers
/// have no trace form yet (the harness cannot make a peer hand a dialog over).
pub const HANDOVER_ONLY: &[&str] = &["subscription-handed-over"];

/// Random walks per configuration in the committed corpus (half as many on `lossy`).
pub const DEFAULT_WALKS: u64 = 100;

/// The configurations the corpus explores: (name, options of the random walks, options of the
/// witness search if there is one). A witness search is a BFS until every `sometimes` property
/// is witnessed, so its configuration must reach them all: one subscriber, three publishes (two
/// publishers' states composed, then a modify after an expiry: the 412), one crash, one expiry.
pub fn configs() -> Vec<(&'static str, Options, Option<Options>)> {
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
            Options {
                preset: Preset::Multihop,
                subscribers: Some(2),
                publishes: Some(3),
                crashes: Some(1),
                unsubscribes: 1,
                ..Default::default()
            },
            Some(witness(Preset::Multihop)),
        ),
        (
            "fig3",
            Options {
                preset: Preset::Fig3,
                subscribers: Some(2),
                publishes: Some(3),
                crashes: Some(1),
                unsubscribes: 1,
                ..Default::default()
            },
            None,
        ),
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
    ]
}

/// Witness paths for every `sometimes` property (shortest, found by single-threaded BFS), for
/// the configurations small enough to search.
fn witnesses(name: &str, model: &SaScribe, progress: &mut Progress) -> Vec<Trace> {
    let wanted: BTreeSet<&'static str> = PROPERTIES
        .iter()
        .filter(|(name, kind, _)| {
            *kind == "sometimes"
                && !SUSPICION_ONLY.contains(name)
                && !MOVE_ONLY.contains(name)
                && !HANDOVER_ONLY.contains(name)
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
            let path = checker.discovery(p)?;
            Some(model.trace(
                format!("{name}-witness-{p}"),
                Origin {
                    kind: "witness",
                    property: Some(p.to_string()),
                    seed: None,
                    mutant: None,
                },
                &path.into_actions(),
            ))
        })
        .collect()
}

/// Mutant-directed path for seeded bug `m`: the counterexample the checker finds
/// (single-threaded BFS, on the configuration that catches it) replayed on the correct model
/// for as long as its actions are possible there. Such a path leads a correct implementation
/// to the very step where that bug shows, and expects the correct behaviour.
fn mutant_path(m: Mutant, progress: &mut Progress) -> Option<Trace> {
    let c = m.catching_config();
    if c.8 > 0 || c.10 > 0 || c.11 > 0 {
        // Suspicions, moves and handovers have no trace form yet: the harness cannot drive production
        // through them.
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
    Some(correct.trace(
        format!("mutant-{}", m.name()),
        Origin {
            kind: "mutant-path",
            property: Some(m.property().to_string()),
            seed: None,
            mutant: Some(m.name().to_string()),
        },
        &actions,
    ))
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

/// The [`corpus`], each trace handed to `emit` as soon as it is made (in corpus order), with a
/// progress line at each stage (which configuration, how many traces so far) and every few
/// seconds within one (which mutant or walk, the checker's counters). Stops at the first error
/// of `emit`; returns how many traces were emitted.
pub fn corpus_each(
    walks: u64,
    progress: &mut Progress,
    emit: &mut dyn FnMut(Trace) -> Result<(), String>,
) -> Result<usize, String> {
    let mut n = 0;
    let mutants = Mutant::ALL.len();
    progress.say(&format!(
        "traces: mutant-directed paths for {mutants} seeded bugs (a BFS each)"
    ));
    for (i, &m) in Mutant::ALL.iter().enumerate() {
        progress.set_context(format!(
            "traces: mutant {} of {mutants} ({}), {n} traces so far",
            i + 1,
            m.name()
        ));
        if let Some(t) = mutant_path(m, progress) {
            emit(t)?;
            n += 1;
        }
    }
    for (name, opts, witness) in configs() {
        let model = SaScribe::new(Setup::new(&opts).expect("corpus configs are valid"));
        if let Some(w) = witness {
            let wmodel = SaScribe::new(Setup::new(&w).expect("corpus configs are valid"));
            progress.say(&format!(
                "traces: witnesses on {name} (BFS), {n} traces so far"
            ));
            progress.set_context(format!("traces: witnesses on {name}, {n} traces so far"));
            for t in witnesses(name, &wmodel, progress) {
                emit(t)?;
                n += 1;
            }
        }
        let walks = if name == "lossy" { walks / 2 } else { walks };
        progress.say(&format!(
            "traces: {walks} random walks on {name}, {n} traces so far"
        ));
        for seed in 0..walks {
            progress.set_context(format!(
                "traces: random walk {} of {walks} on {name}, {n} traces so far",
                seed + 1
            ));
            progress.tick(None);
            let actions: Vec<Action> = model
                .random_walk(seed, 400)
                .into_iter()
                .map(|(a, _)| a)
                .collect();
            emit(model.trace(
                format!("{name}-walk-{seed:03}"),
                Origin {
                    kind: "walk",
                    property: None,
                    seed: Some(seed),
                    mutant: None,
                },
                &actions,
            ))?;
            n += 1;
        }
    }
    progress.set_context(String::new());
    Ok(n)
}
