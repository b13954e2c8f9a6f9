//! The implementation → model direction (`sascribe-conformance validate-run`): seeded runs of
//! the production core, each step validated against the model, and what a failure leaves
//! behind. This is also the second half of "the conformance suite alone" for a mutation
//! campaign (with `corpus_passes`):
//!
//! ```text
//! cargo mutants -f 'impl/proto/src/scribe/*.rs' -f 'impl/proto/src/pastry/*.rs' \
//!     --test-workspace=true --profile mutants -- --test corpus_passes --test validate_run
//! ```

use sascribe_conformance::inprocess::{InProcess, Mode};
use sascribe_conformance::runner::{run_trace_with, RunOptions};
use sascribe_conformance::sut::{Input, Observed, System};
use sascribe_conformance::validate::{run, validate_log, Schedule};
use sascribe_conformance::PeerState;
use sascribe_conformance::StepAction;
use sascribe_model::setup::NetworkKind;
use sascribe_model::{Options, Preset};
use std::collections::BTreeMap;

/// The configurations the campaign runs: every preset with a crash, losses, an expiry and an
/// unsubscribe; then the two multihop presets with tree losses instead (heartbeats, LEAVEs,
/// parent timeouts); then a paused peer on `small` and on `multihop`; then crash-restart with
/// leases; then a pause and a crash together on `small`; then a pause with tree losses on
/// every preset; then colocated subscribers, crash-restart with leases and an ordered network
/// on `multihop`; then a pause and a crash on `multihop`, and on six peers with five replicas
/// and two crashes; then a pause, a crash and tree losses on `multihop`; then a peer that joins
/// mid-run on `multihop`.
fn configs() -> Vec<Options> {
    let presets = [Preset::Small, Preset::Multihop, Preset::Fig3];
    let lossy_of = |preset| Options {
        preset,
        subscribers: Some(if preset == Preset::Fig3 { 3 } else { 2 }),
        publishes: Some(6),
        crashes: Some(1),
        losses: 2,
        expiries: Some(1),
        unsubscribes: 1,
        ..Options::default()
    };
    let lossy = presets.into_iter().map(lossy_of);
    let tree_lossy = [Preset::Multihop, Preset::Fig3].map(|preset| Options {
        preset,
        subscribers: Some(2),
        publishes: Some(4),
        crashes: Some(1),
        tree_losses: 2,
        expiries: Some(1),
        unsubscribes: 1,
        ..Options::default()
    });
    // A false suspicion: a live peer paused, declared dead, running again (leases, promises,
    // fencing against production with a finite lease).
    // On `multihop` the paused peer is taken back by a root still fetching, which keeps its
    // round's grants (production's `on_peer_revived` once dropped them and started again).
    let paused = [Preset::Small, Preset::Multihop].map(|preset| Options {
        preset,
        subscribers: Some(2),
        publishes: Some(6),
        crashes: Some(0),
        suspicions: 1,
        losses: 1,
        expiries: Some(1),
        unsubscribes: 1,
        ..Options::default()
    });
    // Crash-restart with leases: the restarted peer is ordered by promises, leases and
    // fencing (production's `on_replicate_ack` once held a JOIN here for good).
    let fenced_restart = Options {
        preset: Preset::Small,
        subscribers: Some(2),
        publishes: Some(6),
        crashes: Some(1),
        restarts: 1,
        losses: 1,
        ..Options::default()
    };
    // A pause and a crash together on `small`: two of three peers gone, a root alone short
    // of a replica quorum holds every request (production's fast path for JOINs once
    // answered them).
    let paused_and_crashed = Options {
        preset: Preset::Small,
        subscribers: Some(2),
        publishes: Some(6),
        crashes: Some(1),
        suspicions: 1,
        losses: 1,
        ..Options::default()
    };
    // A pause with lost tree, replication and fetch messages: a fetching root asks again
    // every peer it awaits (one a closer peer taken back pushed out of its replica set
    // included) but a busy one only at its re-ask, and an activated root awaits every
    // replica's acknowledgement of its record (production once counted one of the earlier
    // epoch).
    let paused_tree = [Preset::Small, Preset::Multihop, Preset::Fig3].map(|preset| Options {
        preset,
        subscribers: Some(if preset == Preset::Fig3 { 3 } else { 2 }),
        publishes: Some(4),
        crashes: Some(0),
        suspicions: 1,
        tree_losses: 2,
        ..Options::default()
    });
    // An ordered network (per-link FIFO): the scheduler delivers each link's oldest message.
    let ordered = Options {
        network: NetworkKind::Ordered,
        ..lossy_of(Preset::Multihop)
    };
    // Several local subscriptions of the group at one peer.
    let colocated = Options {
        colocated: true,
        ..lossy_of(Preset::Multihop)
    };
    // Crash-restart with leases on multihop.
    let fenced_restart_multihop = Options {
        preset: Preset::Multihop,
        ..fenced_restart.clone()
    };
    // A pause and a crash on `multihop`: a fetching root takes back a replica it had given up
    // for dead, and asks it again (production once served without its grant, found its lease
    // short, and started another round where the model served). Then six peers and five
    // replicas, three of them gone: the root's quorum counts the dead it remembers.
    let paused_and_crashed_multihop = Options {
        preset: Preset::Multihop,
        ..paused_and_crashed.clone()
    };
    let quorum_of_six = Options {
        peers: Some(6),
        k: Some(5),
        publishes: Some(4),
        crashes: Some(2),
        ..paused_and_crashed.clone()
    };
    // A pause, a crash and lost tree messages on `multihop`: a fetching root's retry fires
    // while its asks are in flight, and it asks a live peer until that peer answers.
    let paused_crashed_tree = Options {
        preset: Preset::Multihop,
        publishes: Some(4),
        crashes: Some(1),
        tree_losses: 2,
        suspicions: 1,
        ..Options::default()
    };
    // The group's nominal root joins mid-run: the peers take it in one by one, and the root
    // that served hands the group over to it (production once did so only when a request or
    // the newcomer's fetch reached it), or fetches again; a joined peer's crash counts in the
    // next root's epoch.
    let join = Options {
        joins: 1,
        ..lossy_of(Preset::Multihop)
    };
    lossy
        .chain(tree_lossy)
        .chain(paused)
        .chain([fenced_restart, paused_and_crashed])
        .chain(paused_tree)
        .chain([colocated, fenced_restart_multihop, ordered])
        .chain([paused_and_crashed_multihop, quorum_of_six])
        .chain([paused_crashed_tree, join])
        .collect()
}

/// Runs `seeds` of `options` against `sys`; the failing seeds with their reasons.
fn failures(
    sys: &mut dyn System,
    options: &Options,
    seeds: impl IntoIterator<Item = u64>,
) -> Vec<(u64, String)> {
    seeds
        .into_iter()
        .filter_map(|seed| {
            let r = run(sys, options, seed, Schedule::default()).expect("options are valid");
            r.failure
                .map(|f| (seed, format!("step {} {}: {}", f.step, f.action, f.reason)))
        })
        .collect()
}

#[test]
fn production_runs_are_model_runs() {
    for options in configs() {
        let mut sys = InProcess::new();
        let failed = failures(&mut sys, &options, 0..150);
        assert!(failed.is_empty(), "{:?}: {failed:#?}", options.preset);
    }
}

/// Seeds past the 150 above that once failed, each on its configuration (the last three of
/// [`configs`]): on `multihop` a root serving after refused rounds took its lease from the
/// grants of the round (production now awaits every replica's acknowledgement, as the
/// model); on six peers the model's fetching root let acknowledgements of its previous
/// epoch clear a refusal of the current round (the model now clears it only while serving);
/// with lost tree messages, production gave up on a live peer after three asks (the harness
/// now lets it ask until the peer answers, as the model's root does).
#[test]
fn seeds_that_once_failed_pass() {
    let c = configs();
    let n = c.len();
    let cases = [
        (&c[n - 3], 8540),
        (&c[n - 2], 9946),
        (&c[n - 1], 509),
        (&c[n - 1], 6948),
    ];
    for (options, seed) in cases {
        let failed = failures(&mut InProcess::new(), options, [seed]);
        assert!(failed.is_empty(), "{failed:#?}");
    }
}

#[test]
fn runs_of_the_runtime_event_loop_are_model_runs_too() {
    let options = &configs()[1];
    let mut sys = InProcess::new().with_mode(Mode::Runtime);
    let failed = failures(&mut sys, options, 0..40);
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn a_run_is_logged_in_the_trace_format_and_its_log_validates_offline() {
    let options = &configs()[0];
    let mut sys = InProcess::new();
    let r = run(&mut sys, options, 7, Schedule::default()).expect("valid options");
    assert!(r.failure.is_none() && r.quiescent, "{:?}", r.failure);
    assert_eq!(r.log.origin.kind, "production-run");
    assert!(
        r.log.steps.len() > 10,
        "a run of {} steps",
        r.log.steps.len()
    );
    // Written and read back as any trace is.
    let text = serde_json::to_string_pretty(&r.log).expect("serialises");
    let back = sascribe_conformance::parse(std::path::Path::new("run-7.json"), &text)
        .expect("a log is a well-formed trace");
    assert_eq!(validate_log(&back, options).ok(), Some(back.steps.len()));

    // A log whose implementation told a subscriber something else is not a model run.
    let mut forged = back.clone();
    let (i, o) = forged
        .steps
        .iter_mut()
        .enumerate()
        .find_map(|(i, s)| {
            s.expect
                .client
                .iter_mut()
                .find(|o| o.kind == "notify")
                .map(|o| (i, o))
        })
        .expect("the run notified someone");
    o.seq = Some(o.seq.unwrap_or(0) + 7);
    let f = validate_log(&forged, options).expect_err("a forged NOTIFY");
    assert_eq!(f.step, forged.steps[i].n);
    assert!(f.reason.contains("incorrect_outcome"), "{}", f.reason);

    // A log of another configuration is refused by name.
    let mut other = options.clone();
    other.losses = 0;
    let f = validate_log(&back, &other).expect_err("another configuration");
    assert!(f.reason.contains("configuration"), "{}", f.reason);
}

/// A system that does not report what its peers counted, as an adapter may leave it out.
struct Uncounted(InProcess);

impl System for Uncounted {
    fn handle(&mut self, input: &Input) -> Result<Observed, String> {
        let mut o = self.0.handle(input)?;
        o.counted = None;
        Ok(o)
    }
    fn state(&mut self) -> Option<Result<BTreeMap<String, PeerState>, String>> {
        self.0.state()
    }
}

#[test]
fn a_log_of_a_system_that_reports_no_counts_lists_none_and_still_validates() {
    let options = &configs()[0];
    // A seed whose run makes some peer count a takeover or a demotion.
    let seed = (0..200)
        .find(|&seed| {
            let r = run(&mut InProcess::new(), options, seed, Schedule::default()).expect("valid");
            r.log.steps.iter().any(|s| !s.expect.counted.is_empty())
        })
        .expect("some run counts a takeover");
    let r = run(
        &mut Uncounted(InProcess::new()),
        options,
        seed,
        Schedule::default(),
    )
    .expect("valid options");
    assert!(r.failure.is_none(), "{:?}", r.failure);
    assert_eq!(r.log.version, sascribe_conformance::OLDEST_VERSION);
    assert!(r.log.steps.iter().all(|s| s.expect.counted.is_empty()));
    assert_eq!(validate_log(&r.log, options).ok(), Some(r.log.steps.len()));
    // Labelled with the version that lists counts, the same log would claim none were made.
    let mut claimed = r.log.clone();
    claimed.version = sascribe_conformance::VERSION;
    let f = validate_log(&claimed, options).expect_err("counts the model makes are missing");
    assert!(f.reason.contains("count"), "{}", f.reason);
}

#[test]
fn a_seed_replays_the_same_run() {
    let options = &configs()[2];
    let log = |seed| {
        let r = run(&mut InProcess::new(), options, seed, Schedule::default()).expect("valid");
        serde_json::to_string(&r.log).expect("serialises")
    };
    assert_eq!(log(11), log(11));
    assert_ne!(log(11), log(12));
}

#[test]
fn the_validator_refuses_what_it_cannot_log() {
    let mut sys = InProcess::new();
    let options = Options {
        suspicions: 1,
        partition: true,
        ..configs()[0].clone()
    };
    let e = run(&mut sys, &options, 0, Schedule::default()).expect_err("partitions");
    assert!(e.contains("--partition"), "{e}");
    let options = Options {
        network: NetworkKind::Duplicating,
        ..configs()[0].clone()
    };
    let e = run(&mut sys, &options, 0, Schedule::default()).expect_err("duplicates");
    assert!(e.contains("--network duplicating"), "{e}");
}

/// A seeded production bug fails validation; the regression trace it leaves is an ordinary
/// conformance trace that the buggy core fails at the same step and the correct core passes.
#[test]
fn a_seeded_bug_fails_and_leaves_a_regression_trace() {
    use sascribe::mutants::Mutant;
    let m = Mutant::from_name("notify-before-ack").expect("known mutant");
    let buggy = || InProcess::with_config_hook(Box::new(move |c| c.mutant = Some(m)));
    let options = &configs()[0];
    let mut sys = buggy();
    let (seed, failure) = (0..200)
        .find_map(|seed| {
            let r = run(&mut sys, options, seed, Schedule::default()).expect("valid options");
            r.failure.map(|f| (seed, f))
        })
        .expect("the bug shows within 200 seeds");
    let reg = failure.regression.expect("a regression trace");
    assert_eq!(reg.origin.kind, "regression");
    assert_eq!(reg.origin.seed, Some(seed));
    assert_eq!(
        reg.steps.len(),
        failure.step,
        "the path up to the failing step"
    );
    assert!(!matches!(
        reg.steps.last().map(|s| &s.action),
        Some(StepAction::Crash { peer }) if peer.is_empty()
    ));
    let opts = RunOptions {
        verbose: false,
        state: true,
    };
    let r = run_trace_with(&reg, &mut buggy(), opts);
    assert_eq!(
        r.failure.as_ref().map(|f| f.step),
        Some(failure.step),
        "the buggy core fails the regression trace where the run failed"
    );
    let r = run_trace_with(&reg, &mut InProcess::new(), opts);
    assert!(r.failure.is_none(), "{:?}", r.failure);
}
