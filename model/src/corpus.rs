//! The committed trace corpus: which configurations, which paths. Same build, same files.

use crate::model::{Action, State, PROPERTIES};
use crate::trace::{Origin, Trace};
use crate::Mutant;
use crate::{Options, Preset, SaScribe, Setup};
use stateright::{Checker, HasDiscoveries, Model};
use std::collections::BTreeSet;

/// Random walks per configuration in the committed corpus (half as many on `lossy`).
pub const DEFAULT_WALKS: u64 = 100;

/// The configurations the corpus explores: (name, options).
pub fn configs() -> Vec<(&'static str, Options)> {
    vec![
        ("small", Options::default()),
        (
            "multihop",
            Options {
                preset: Preset::Multihop,
                subscribers: Some(2),
                publishes: Some(2),
                crashes: Some(1),
                unsubscribes: 1,
                ..Default::default()
            },
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
        ),
        (
            "lossy",
            Options {
                losses: 1,
                ..Default::default()
            },
        ),
    ]
}

/// Witness paths for every `sometimes` property (shortest, found by single-threaded BFS), for
/// the configurations small enough to search.
fn witnesses(name: &str, model: &SaScribe) -> Vec<Trace> {
    let wanted: BTreeSet<&'static str> = PROPERTIES
        .iter()
        .filter(|(_, kind, _)| *kind == "sometimes")
        .map(|(n, _, _)| *n)
        .collect();
    let checker = model
        .clone()
        .checker()
        .threads(1)
        .finish_when(HasDiscoveries::AllOf(wanted.clone()))
        .spawn_bfs()
        .join();
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

/// Mutant-directed paths: for each seeded bug of the model, the counterexample the checker
/// finds (single-threaded BFS, on the configuration that catches it) replayed on the correct
/// model for as long as its actions are possible there. Such a path leads a correct
/// implementation to the very step where that bug shows, and expects the correct behaviour.
fn mutant_paths() -> Vec<Trace> {
    Mutant::ALL
        .iter()
        .filter_map(|&m| {
            let c = m.catching_config();
            let buggy = SaScribe::new(c.setup(Some(m)));
            let checker = buggy
                .checker()
                .threads(1)
                .finish_when(HasDiscoveries::AnyOf([m.property()].into_iter().collect()))
                .spawn_bfs()
                .join();
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
        })
        .collect()
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

/// The whole corpus: witnesses on `small` and `multihop`, mutant-directed paths, and `walks`
/// seeded random walks on every configuration (`walks / 2` on `lossy`).
pub fn corpus(walks: u64) -> Vec<Trace> {
    let mut out = mutant_paths();
    for (name, opts) in configs() {
        let model = SaScribe::new(Setup::new(&opts).expect("corpus configs are valid"));
        if name == "small" || name == "multihop" {
            out.extend(witnesses(name, &model));
        }
        let walks = if name == "lossy" { walks / 2 } else { walks };
        for seed in 0..walks {
            let actions: Vec<Action> = model
                .random_walk(seed, 400)
                .into_iter()
                .map(|(a, _)| a)
                .collect();
            out.push(model.trace(
                format!("{name}-walk-{seed:03}"),
                Origin {
                    kind: "walk",
                    property: None,
                    seed: Some(seed),
                    mutant: None,
                },
                &actions,
            ));
        }
    }
    out
}
