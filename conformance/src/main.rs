//! `sascribe-conformance`: read, check and show sa-Scribe conformance traces.

use clap::{Args, Parser, Subcommand};
use sascribe_conformance::adapter::AdapterProcess;
use sascribe_conformance::inprocess::{InProcess, Mode};
use sascribe_conformance::runner::{self, describe, run_trace, run_trace_with, Families};
use sascribe_conformance::sut::System;
use sascribe_conformance::validate::{self, Schedule};
use sascribe_conformance::{chart, load, trace_files, Trace, TraceError};
use sascribe_model::cli::ConfigArgs;
use sascribe_model::Options;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "sascribe-conformance", about = "sa-Scribe conformance traces")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Render a trace as a sequence chart (like the paper's Fig. 4/5).
    Show {
        /// The trace file.
        file: PathBuf,
        /// Print a mermaid sequenceDiagram instead of text.
        #[arg(long)]
        mermaid: bool,
    },
    /// Check that trace files (or every *.json in directories) are well-formed traces.
    Validate {
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Replay traces (files or directories) against the production core (in-process) or an
    /// implementation behind the adapter protocol; prints each failure and `N passed, M failed`
    /// (with --adapter, first a table of the trace families passed).
    Run {
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        target: Target,
        /// Print every step of failing traces.
        #[arg(long)]
        verbose: bool,
        /// A list of traces on which the implementation is known to diverge from the model, one
        /// `NAME  # reason` per line. Each listed trace must still fail (it is then counted as
        /// skipped); one that passes is an error, so the list cannot go stale.
        #[arg(long)]
        known_divergences: Option<PathBuf>,
        /// Succeed exactly when N traces pass and no trace failed through the adapter itself
        /// (timeout, malformed or missing reply, exit): for tracking a partial implementation.
        #[arg(long, value_name = "N")]
        expect_pass: Option<usize>,
        /// Compare messages only, not the projected state after each step (for measuring
        /// what state comparison adds).
        #[arg(long)]
        messages_only: bool,
    },
    /// The implementation → model direction: seeded runs of the implementation, each step
    /// logged in the trace format and validated against the model (a model transition with
    /// the same messages, outcomes and projected state; every property holding). Prints a
    /// summary, and for each failing seed the step and why; `--regressions` keeps each
    /// failing run as a conformance trace with the model's expectations.
    ValidateRun {
        #[command(flatten)]
        model: ConfigArgs,
        /// Number of seeded runs.
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        /// First seed.
        #[arg(long, default_value_t = 0)]
        first_seed: u64,
        /// Most steps per run (a run also ends when nothing is left to do).
        #[arg(long, default_value_t = 400)]
        max_steps: usize,
        /// Percentage of steps that are faults (a loss, a crash) when one is possible.
        #[arg(long, default_value_t = 5)]
        fault_percent: u64,
        /// Write every run's log (the implementation's steps, trace format) to this directory.
        #[arg(long, value_name = "DIR")]
        log: Option<PathBuf>,
        /// Write each failing run as a regression trace (the model's expectations along the
        /// run's path up to the failing step) to this directory.
        #[arg(long, value_name = "DIR")]
        regressions: Option<PathBuf>,
        /// Parallel runs (default: one per core).
        #[arg(long)]
        jobs: Option<usize>,
        /// Also measure the transition labels the runs took against those the model's
        /// bounded search reaches on this configuration (`sascribe_model::coverage`).
        #[arg(long)]
        coverage: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Validate logged runs (trace files whose expectations are what an implementation did,
    /// e.g. from `validate-run --log`) against the model configuration given, step by step.
    ValidateLog {
        #[command(flatten)]
        model: ConfigArgs,
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Replay one trace step by step, printing each step, what the implementation did and its
    /// logs.
    Replay {
        /// The trace file.
        file: PathBuf,
        #[command(flatten)]
        target: Target,
        /// Also print the logs of passing steps (always printed for the failing one).
        #[arg(long)]
        verbose: bool,
    },
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    match s {
        "core" => Ok(Mode::Core),
        "runtime" => Ok(Mode::Runtime),
        _ => Err(format!("driver must be 'core' or 'runtime', not '{s}'")),
    }
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 && x < 1e6 => Ok(Duration::from_secs_f64(x)),
        _ => Err(format!("expected a positive number of seconds, not '{s}'")),
    }
}

/// What to run the traces against.
#[derive(Args)]
struct Target {
    /// Command of an adapter-protocol implementation (see ADAPTER.md), e.g.
    /// "target/debug/sascribe-adapter" (default: the production core, in-process).
    #[arg(long)]
    adapter: Option<String>,
    /// How long to wait for the adapter's reply to each request; an adapter that does not
    /// answer in time fails the trace and is restarted for the next one.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    adapter_timeout: Duration,
    /// How production peers are driven in-process: `core` (the sans-IO peer) or `runtime`
    /// (the tokio event loop `sascribe peer` runs, with harness socket and clock).
    #[arg(long, default_value = "core", value_parser = parse_mode)]
    driver: Mode,
    /// Seeded bug of the production core to enable (build with feature `mutants`).
    #[cfg(feature = "mutants")]
    #[arg(long)]
    mutant: Option<String>,
}

impl Target {
    fn mutant(&self) -> Option<&str> {
        #[cfg(feature = "mutants")]
        return self.mutant.as_deref();
        #[cfg(not(feature = "mutants"))]
        None
    }

    /// The adapter process, if the target is one.
    fn adapter(&self) -> Result<Option<AdapterProcess>, String> {
        match (&self.adapter, self.mutant()) {
            (Some(_), Some(_)) => {
                Err("--mutant applies to the in-process core, not to --adapter".into())
            }
            (Some(cmd), None) => Ok(Some(
                AdapterProcess::spawn(cmd)?.with_timeout(self.adapter_timeout),
            )),
            (None, _) => Ok(None),
        }
    }

    /// A fresh in-process system.
    fn in_process(&self) -> Result<InProcess, String> {
        let driver = self.driver;
        match self.mutant() {
            None => Ok(InProcess::new().with_mode(driver)),
            Some(_name) => {
                #[cfg(feature = "mutants")]
                {
                    let m = sascribe::mutants::Mutant::from_name(_name).ok_or_else(|| {
                        let all: Vec<String> = sascribe::mutants::Mutant::ALL
                            .iter()
                            .map(|m| m.name())
                            .collect();
                        format!("unknown mutant '{_name}' (known: {})", all.join(", "))
                    })?;
                    Ok(
                        InProcess::with_config_hook(Box::new(move |c| c.mutant = Some(m)))
                            .with_mode(driver),
                    )
                }
                #[cfg(not(feature = "mutants"))]
                Err("this build has no seeded bugs (build with --features mutants)".into())
            }
        }
    }
}

/// Reads a known-divergences list: `NAME  # reason` per line, blank lines and `#` comments
/// ignored.
fn read_known(file: &std::path::Path) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("{}: cannot read: {e}", file.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, reason) = line
            .split_once('#')
            .ok_or_else(|| format!("{}:{}: expected `NAME  # reason`", file.display(), i + 1))?;
        out.push((name.trim().to_string(), reason.trim().to_string()));
    }
    Ok(out)
}

/// A trace file read (or not), or a path whose files could not be listed.
enum Loaded {
    Unlisted(TraceError),
    File(PathBuf, Result<Box<Trace>, TraceError>),
}

/// Every trace file of `paths` (a directory's `*.json` files, sorted, or the file itself),
/// loaded and checked.
fn traces_in(paths: Vec<PathBuf>) -> impl Iterator<Item = Loaded> {
    paths.into_iter().flat_map(|p| match trace_files(&p) {
        Ok(files) => files
            .into_iter()
            .map(|f| {
                let t = load(&f).map(Box::new);
                Loaded::File(f, t)
            })
            .collect::<Vec<_>>(),
        Err(e) => vec![Loaded::Unlisted(e)],
    })
}

/// `run`'s options besides the traces and the target.
struct RunOptions {
    verbose: bool,
    known: Option<PathBuf>,
    expect_pass: Option<usize>,
    messages_only: bool,
}

fn run(paths: Vec<PathBuf>, target: Target, opts: RunOptions) -> ExitCode {
    let known = match opts.known.as_deref().map(read_known).transpose() {
        Ok(k) => k.unwrap_or_default(),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // One adapter for the run: each trace's init after the first restarts its process.
    let mut adapter = match target.adapter() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut families = Families::default();
    let (mut passed, mut failed, mut skipped, mut adapter_failures) = (0, 0, 0, 0);
    let ropts = runner::RunOptions {
        verbose: opts.verbose,
        state: !opts.messages_only,
    };
    for item in traces_in(paths) {
        let (f, t) = match item {
            Loaded::Unlisted(e) => {
                eprintln!("error: {e}");
                failed += 1;
                continue;
            }
            Loaded::File(f, Err(e)) => {
                println!("FAIL {}: unreadable trace: {e}", f.display());
                failed += 1;
                continue;
            }
            Loaded::File(f, Ok(t)) => (f, t),
        };
        let name = f.display().to_string();
        let r = match adapter.as_mut() {
            Some(a) => {
                let r = run_trace_with(&t, a, ropts);
                if let Some(e) = a.version_refused() {
                    print!(
                        "{}",
                        r.failure
                            .as_ref()
                            .map_or(String::new(), |f| describe(&name, f))
                    );
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
                adapter_failures += usize::from(a.adapter_failure().is_some());
                r
            }
            None => match target.in_process() {
                Ok(mut sys) => run_trace_with(&t, &mut sys, ropts),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            },
        };
        let divergence = known.iter().find(|(n, _)| *n == t.name);
        families.add(&t, &r, r.failure.is_some() && divergence.is_some());
        match (&r.failure, divergence) {
            (None, None) => passed += 1,
            (None, Some(_)) => {
                failed += 1;
                println!(
                    "FAIL {name}: listed as a known divergence but passes: remove it from the list"
                );
            }
            (Some(fail), Some((_, reason))) => {
                skipped += 1;
                println!("KNOWN {name} ({reason}): {}", fail.summary());
            }
            (Some(fail), None) => {
                failed += 1;
                print!("{}", describe(&name, fail));
                if opts.verbose {
                    print!("{}", r.transcript);
                }
            }
        }
    }
    if adapter.as_ref().is_some_and(|a| a.reports_no_state()) {
        println!("the adapter does not report its state (`state`): compared on messages only");
    }
    if adapter.is_some() {
        print!("\n{}", families.table());
        if adapter_failures > 0 {
            println!(
                "{adapter_failures} traces failed through the adapter itself (timeout, malformed \
                 or missing reply, exit)"
            );
        }
    }
    if skipped > 0 {
        println!("{passed} passed, {failed} failed, {skipped} skipped");
    } else {
        println!("{passed} passed, {failed} failed");
    }
    match opts.expect_pass {
        Some(n) if n == passed && adapter_failures == 0 => {
            println!("as expected: {n} passed, no adapter failure (--expect-pass {n})");
            ExitCode::SUCCESS
        }
        Some(n) => {
            println!(
                "UNEXPECTED: --expect-pass {n} wants {n} passed and no adapter failure, got \
                 {passed} passed and {adapter_failures} adapter failures"
            );
            ExitCode::from(1)
        }
        None if failed == 0 => ExitCode::SUCCESS,
        None => ExitCode::from(1),
    }
}

fn replay(file: PathBuf, target: Target, verbose: bool) -> ExitCode {
    let t = match load(&file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let sys: Result<Box<dyn System>, String> = match target.adapter() {
        Ok(Some(a)) => Ok(Box::new(a)),
        Ok(None) => target.in_process().map(|s| Box::new(s) as Box<dyn System>),
        Err(e) => Err(e),
    };
    let mut sys = match sys {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let r = run_trace(&t, sys.as_mut(), true);
    for line in r.transcript.lines() {
        if verbose || !line.trim_start().starts_with("log ") {
            println!("{line}");
        }
    }
    match &r.failure {
        None => {
            println!("{}: all {} steps passed", t.name, t.steps.len());
            ExitCode::SUCCESS
        }
        Some(f) => {
            print!("{}", describe(&file.display().to_string(), f));
            ExitCode::from(1)
        }
    }
}

/// `validate-run`'s arguments.
struct ValidateRun {
    options: Options,
    seeds: std::ops::Range<u64>,
    schedule: Schedule,
    log: Option<PathBuf>,
    regressions: Option<PathBuf>,
    jobs: usize,
    coverage: bool,
    target: Target,
}

/// What `validate-run` counts.
#[derive(Default)]
struct Tally {
    passed: u64,
    quiescent: u64,
    steps: usize,
    failed: Vec<(u64, String)>,
    labels: std::collections::BTreeSet<sascribe_model::coverage::Label>,
}

fn validate_run(a: ValidateRun) -> ExitCode {
    if let Err(e) = validate::Validator::new(&a.options) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    for dir in [&a.log, &a.regressions].into_iter().flatten() {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("error: {}: cannot create: {e}", dir.display());
            return ExitCode::from(2);
        }
    }
    let started = std::time::Instant::now();
    let next = std::sync::atomic::AtomicU64::new(a.seeds.start);
    let tally = std::sync::Mutex::new(Tally::default());
    let worker = || -> Result<(), String> {
        let mut sys: Box<dyn System> = match a.target.adapter()? {
            Some(ad) => Box::new(ad),
            None => Box::new(a.target.in_process()?),
        };
        loop {
            let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if seed >= a.seeds.end {
                return Ok(());
            }
            let r = validate::run(sys.as_mut(), &a.options, seed, a.schedule)?;
            if let Some(dir) = &a.log {
                write_trace(&dir.join(format!("run-{seed}.json")), &r.log)?;
            }
            let mut t = tally.lock().map_err(|_| "a worker panicked")?;
            t.steps += r.log.steps.len();
            t.labels.extend(r.labels.iter().copied());
            t.quiescent += u64::from(r.quiescent);
            match r.failure {
                None => t.passed += 1,
                Some(f) => {
                    let mut msg = format!("FAIL seed {seed} step {}: {}\n", f.step, f.action);
                    for l in f.reason.lines() {
                        msg.push_str(&format!("    {l}\n"));
                    }
                    if let (Some(dir), Some(reg)) = (&a.regressions, &f.regression) {
                        let file = dir.join(format!("{}.json", reg.name));
                        write_trace(&file, reg)?;
                        msg.push_str(&format!("    regression trace: {}\n", file.display()));
                    }
                    print!("{msg}");
                    t.failed.push((seed, msg));
                }
            }
        }
    };
    let errors: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..a.jobs.max(1)).map(|_| s.spawn(worker)).collect();
        handles
            .into_iter()
            .filter_map(|h| match h.join() {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some("a worker panicked".into()),
            })
            .collect()
    });
    let t = tally.into_inner().unwrap_or_default();
    let runs = t.passed + t.failed.len() as u64;
    println!(
        "{} of {runs} runs valid ({} ended with nothing left to do), {} steps validated, {:.1} s",
        t.passed,
        t.quiescent,
        t.steps,
        started.elapsed().as_secs_f64()
    );
    if a.coverage {
        // The same search `sascribe-model traces` runs for the corpus's figure.
        let model = sascribe_model::SaScribe::new(
            sascribe_model::Setup::new(&a.options).expect("checked above"),
        );
        let found = sascribe_model::coverage::explore(&model, 500_000, 5_000);
        let reachable: std::collections::BTreeSet<_> = found.paths.keys().copied().collect();
        let taken = t.labels.intersection(&reachable).count();
        println!(
            "transition coverage: {taken} of {} labels the model's search reaches ({:.1} %), {} taken in all",
            reachable.len(),
            100.0 * taken as f64 / reachable.len().max(1) as f64,
            t.labels.len()
        );
        let missing: Vec<String> = reachable
            .difference(&t.labels)
            .map(|l| l.to_string())
            .collect();
        for l in missing.iter().take(20) {
            println!("  not taken: {l}");
        }
    } else {
        println!("{} transition labels taken", t.labels.len());
    }
    if let Some(e) = errors.first() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if t.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Prints `N valid, M invalid`; success when nothing was invalid.
fn valid_invalid(ok: usize, bad: usize) -> ExitCode {
    println!("{ok} valid, {bad} invalid");
    if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Writes a trace as pretty JSON.
fn write_trace(file: &std::path::Path, t: &Trace) -> Result<(), String> {
    let mut text = serde_json::to_string_pretty(t).map_err(|e| e.to_string())?;
    text.push('\n');
    std::fs::write(file, text).map_err(|e| format!("{}: cannot write: {e}", file.display()))
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Show { file, mermaid } => match load(&file) {
            Ok(t) => {
                print!(
                    "{}",
                    if mermaid {
                        chart::mermaid(&t)
                    } else {
                        chart::text(&t)
                    }
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run {
            paths,
            target,
            verbose,
            known_divergences,
            expect_pass,
            messages_only,
        } => run(
            paths,
            target,
            RunOptions {
                verbose,
                known: known_divergences,
                expect_pass,
                messages_only,
            },
        ),
        Command::Replay {
            file,
            target,
            verbose,
        } => replay(file, target, verbose),
        Command::ValidateLog { model, paths } => {
            let options = model.options();
            let (mut ok, mut bad) = (0, 0);
            for item in traces_in(paths) {
                match item {
                    Loaded::Unlisted(e) | Loaded::File(_, Err(e)) => {
                        eprintln!("error: {e}");
                        bad += 1;
                    }
                    Loaded::File(f, Ok(t)) => match validate::validate_log(&t, &options) {
                        Ok(_) => ok += 1,
                        Err(e) => {
                            println!("FAIL {} step {}: {}", f.display(), e.step, e.action);
                            for l in e.reason.lines() {
                                println!("    {l}");
                            }
                            bad += 1;
                        }
                    },
                }
            }
            valid_invalid(ok, bad)
        }
        Command::ValidateRun {
            model,
            seeds,
            first_seed,
            max_steps,
            fault_percent,
            log,
            regressions,
            jobs,
            coverage,
            target,
        } => validate_run(ValidateRun {
            options: model.options(),
            seeds: first_seed..first_seed.saturating_add(seeds),
            schedule: Schedule {
                max_steps,
                fault_percent: fault_percent.min(100),
            },
            log,
            regressions,
            jobs: jobs
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            coverage,
            target,
        }),
        Command::Validate { paths } => {
            let (mut ok, mut bad) = (0, 0);
            for item in traces_in(paths) {
                match item {
                    Loaded::Unlisted(e) => {
                        eprintln!("error: {e}");
                        bad += 1;
                    }
                    Loaded::File(_, Err(e)) => {
                        eprintln!("invalid: {e}");
                        bad += 1;
                    }
                    Loaded::File(_, Ok(_)) => ok += 1,
                }
            }
            valid_invalid(ok, bad)
        }
    }
}
