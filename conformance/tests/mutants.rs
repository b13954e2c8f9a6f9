//! Non-vacuity: every seeded bug of the production core (`sascribe::mutants`, feature
//! `mutants`, enabled through this package's dev-dependency) must make at least one corpus
//! trace fail that passes against the unmodified core, with the projected state compared after
//! every step. The report also gives, per bug, how many traces kill it on messages alone: the
//! five state-only bugs of `Mutant::ALL` (`dead-child-kept` to `unsubscribe-keeps-sub`) keep
//! the messages right on most paths (the LEAVEs of the `treeloss` traces show them on a few),
//! and mostly only the state comparison catches them.

use sascribe::mutants::Mutant;
use sascribe_conformance::inprocess::InProcess;
use sascribe_conformance::runner::{run_trace_with, RunOptions};
use sascribe_conformance::{load, trace_files, Trace};
use std::path::Path;

fn corpus() -> Vec<Trace> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../traces");
    trace_files(&dir)
        .expect("corpus directory")
        .iter()
        .map(|f| load(f).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

fn passes_with(t: &Trace, mutant: Option<Mutant>, state: bool) -> bool {
    let mut sys = InProcess::with_config_hook(Box::new(move |c| c.mutant = mutant));
    let opts = RunOptions {
        verbose: false,
        state,
    };
    run_trace_with(t, &mut sys, opts).passed()
}

fn passes(t: &Trace, mutant: Option<Mutant>) -> bool {
    passes_with(t, mutant, true)
}

#[test]
fn the_corpus_kills_every_seeded_bug() {
    let traces = corpus();
    let baseline: Vec<&Trace> = traces.iter().filter(|t| passes(t, None)).collect();
    assert!(
        baseline.len() >= 100,
        "only {} corpus traces pass against the unmodified core",
        baseline.len()
    );
    let mut survivors = Vec::new();
    let mut report = String::new();
    let mut killed_by_messages = 0;
    for m in Mutant::ALL {
        let killers: Vec<&str> = baseline
            .iter()
            .filter(|t| !passes(t, Some(m)))
            .map(|t| t.name.as_str())
            .collect();
        let by_messages = baseline
            .iter()
            .filter(|t| !passes_with(t, Some(m), false))
            .count();
        killed_by_messages += usize::from(by_messages > 0);
        report.push_str(&format!(
            "{:<28} killed by {:>3} traces ({:>3} on messages alone){}\n",
            m.name(),
            killers.len(),
            by_messages,
            killers
                .first()
                .map(|k| format!(" (e.g. {k})"))
                .unwrap_or_default()
        ));
        if killers.is_empty() {
            survivors.push(m.name());
        }
    }
    let killed = Mutant::ALL.len() - survivors.len();
    println!(
        "{report}kill rate: {killed}/{} mutants with state comparison, {killed_by_messages}/{} \
         on messages alone (baseline: {} of {} traces pass)",
        Mutant::ALL.len(),
        Mutant::ALL.len(),
        baseline.len(),
        traces.len()
    );
    assert!(
        survivors.is_empty(),
        "mutants not killed by the corpus: {survivors:?}\n{report}"
    );
}

#[test]
fn a_mutant_build_without_a_selected_bug_behaves_like_the_core() {
    // The feature alone changes nothing: with `mutant: None` the same traces pass.
    let traces = corpus();
    let t = traces
        .iter()
        .find(|t| t.name == "small-witness-412-happened")
        .expect("witness trace");
    assert!(passes(t, None));
}
