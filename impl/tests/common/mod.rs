//! Seed campaigns shared by the simulation tests: one seeded check run over a range of seeds,
//! on several threads, with every failing seed reported (not only the first).
//!
//! Environment (all optional):
//! - `SASCRIBE_CAMPAIGN_SEEDS`: how many seeds (default: the caller's);
//! - `SASCRIBE_CAMPAIGN_START`: the first seed (default 0);
//! - `SASCRIBE_CAMPAIGN_THREADS`: worker threads (default: the machine's cores).
//!
//! A seed fails when its check returns an error or panics. Failing seeds are kept as
//! regression tests in the calling file.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

/// Runs `check` for every seed of the campaign and panics, listing the failing seeds and their
/// errors, if any failed.
pub fn campaign(name: &str, default_seeds: u64, check: impl Fn(u64) -> Result<(), String> + Sync) {
    let count = env_u64("SASCRIBE_CAMPAIGN_SEEDS").unwrap_or(default_seeds);
    let start = env_u64("SASCRIBE_CAMPAIGN_START").unwrap_or(0);
    let threads = env_u64("SASCRIBE_CAMPAIGN_THREADS")
        .map(|t| t.max(1) as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let next = AtomicU64::new(start);
    let done = AtomicU64::new(0);
    let failures = Mutex::new(Vec::new());
    let began = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= start + count {
                    break;
                }
                let outcome = catch_unwind(AssertUnwindSafe(|| check(seed)))
                    .unwrap_or_else(|p| Err(format!("panicked: {}", panic_text(&p))));
                if let Err(e) = outcome {
                    eprintln!("{name}: seed {seed} FAILED: {e}");
                    failures.lock().unwrap().push((seed, e));
                }
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_multiple_of(1_000) {
                    eprintln!(
                        "{name}: {n} of {count} seeds run, {} failed, {:.0} s",
                        failures.lock().unwrap().len(),
                        began.elapsed().as_secs_f64()
                    );
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort();
    eprintln!(
        "campaign {name}: {} passed, {} failed of {count} seeds ({start}..{}) in {:.0} s on {threads} threads",
        count - failures.len() as u64,
        failures.len(),
        start + count,
        began.elapsed().as_secs_f64()
    );
    if !failures.is_empty() {
        let list: Vec<String> = failures
            .iter()
            .map(|(s, e)| format!("seed {s}: {e}"))
            .collect();
        panic!(
            "{name}: {} seeds failed:\n{}",
            failures.len(),
            list.join("\n")
        );
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}
