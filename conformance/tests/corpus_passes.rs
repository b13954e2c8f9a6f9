//! The committed corpus passes against the production core (in-process, with the projected
//! state compared after every step), with no known divergence. `.ci/run` runs the same through
//! the binary; this test is what a mutation campaign runs as "the conformance suite alone":
//!
//! ```text
//! cargo mutants -f 'impl/proto/src/scribe/*.rs' -f 'impl/proto/src/pastry/*.rs' \
//!     --test-workspace=true --profile mutants -- --test corpus_passes
//! ```

use sascribe_conformance::inprocess::InProcess;
use sascribe_conformance::runner::{run_trace_with, RunOptions};
use sascribe_conformance::{load, trace_files};
use std::path::Path;

#[test]
fn the_corpus_passes_against_the_core() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../traces");
    let files = trace_files(&dir).expect("corpus directory");
    assert!(files.len() >= 300, "corpus too small: {}", files.len());
    let mut failed = Vec::new();
    for f in &files {
        let t = load(f).unwrap_or_else(|e| panic!("{e}"));
        let mut sys = InProcess::new();
        let opts = RunOptions {
            verbose: false,
            state: true,
        };
        let r = run_trace_with(&t, &mut sys, opts);
        if let Some(why) = r.failure {
            failed.push(format!("{}: {}\n{}", t.name, why.summary(), why.detail));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} traces fail:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}
