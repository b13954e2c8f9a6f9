//! `sascribe-conformance`: read, check and show sa-Scribe conformance traces.

use clap::{Parser, Subcommand};
use sascribe_conformance::adapter::AdapterProcess;
use sascribe_conformance::inprocess::{InProcess, Mode};
use sascribe_conformance::runner::{describe, run_trace};
use sascribe_conformance::sut::System;
use sascribe_conformance::{chart, load, trace_files, Trace, TraceError};
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// implementation behind the adapter protocol; prints each failure and `N passed, M failed`.
    Run {
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Command of an adapter-protocol implementation (see ADAPTER.md), e.g.
        /// "target/debug/sascribe-adapter".
        #[arg(long)]
        adapter: Option<String>,
        /// Print every step of failing traces.
        #[arg(long)]
        verbose: bool,
        /// A list of traces on which the implementation is known to diverge from the model, one
        /// `NAME  # reason` per line. Each listed trace must still fail (it is then counted as
        /// skipped); one that passes is an error, so the list cannot go stale.
        #[arg(long)]
        known_divergences: Option<PathBuf>,
        /// How production peers are driven in-process: `core` (the sans-IO peer) or `runtime`
        /// (the tokio event loop `sascribe peer` runs, with harness socket and clock).
        #[arg(long, default_value = "core", value_parser = parse_mode)]
        driver: Mode,
        /// Seeded bug of the production core to enable (build with feature `mutants`).
        #[cfg(feature = "mutants")]
        #[arg(long)]
        mutant: Option<String>,
    },
    /// Replay one trace step by step, printing each step, what the implementation did and its
    /// logs.
    Replay {
        /// The trace file.
        file: PathBuf,
        /// Command of an adapter-protocol implementation (default: in-process).
        #[arg(long)]
        adapter: Option<String>,
        /// Also print the logs of passing steps (always printed for the failing one).
        #[arg(long)]
        verbose: bool,
        /// How production peers are driven in-process: `core` (the sans-IO peer) or `runtime`
        /// (the tokio event loop `sascribe peer` runs, with harness socket and clock).
        #[arg(long, default_value = "core", value_parser = parse_mode)]
        driver: Mode,
        /// Seeded bug of the production core to enable (build with feature `mutants`).
        #[cfg(feature = "mutants")]
        #[arg(long)]
        mutant: Option<String>,
    },
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    match s {
        "core" => Ok(Mode::Core),
        "runtime" => Ok(Mode::Runtime),
        _ => Err(format!("driver must be 'core' or 'runtime', not '{s}'")),
    }
}

/// What to run the traces against.
struct Target {
    adapter: Option<String>,
    mutant: Option<String>,
    driver: Mode,
}

fn system(target: &Target) -> Result<Box<dyn System>, String> {
    let driver = target.driver;
    match (&target.adapter, &target.mutant) {
        (Some(_), Some(_)) => {
            Err("--mutant applies to the in-process core, not to --adapter".into())
        }
        (Some(cmd), None) => Ok(Box::new(AdapterProcess::spawn(cmd)?)),
        (None, None) => Ok(Box::new(InProcess::new().with_mode(driver))),
        (None, Some(_name)) => {
            #[cfg(feature = "mutants")]
            {
                let m = sascribe::mutants::Mutant::from_name(_name).ok_or_else(|| {
                    let all: Vec<String> = sascribe::mutants::Mutant::ALL
                        .iter()
                        .map(|m| m.name())
                        .collect();
                    format!("unknown mutant '{_name}' (known: {})", all.join(", "))
                })?;
                Ok(Box::new(
                    InProcess::with_config_hook(Box::new(move |c| c.mutant = Some(m)))
                        .with_mode(driver),
                ))
            }
            #[cfg(not(feature = "mutants"))]
            Err("this build has no seeded bugs (build with --features mutants)".into())
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

fn run(paths: Vec<PathBuf>, target: Target, verbose: bool, known: Option<PathBuf>) -> ExitCode {
    let known = match known.as_deref().map(read_known).transpose() {
        Ok(k) => k.unwrap_or_default(),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
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
        let mut sys = match system(&target) {
            Ok(s) => s,
            Err(e) => {
                println!("FAIL {name}: {e}");
                failed += 1;
                continue;
            }
        };
        let r = run_trace(&t, sys.as_mut(), verbose);
        let divergence = known.iter().find(|(n, _)| *n == t.name);
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
                if verbose {
                    print!("{}", r.transcript);
                }
            }
        }
    }
    if skipped > 0 {
        println!("{passed} passed, {failed} failed, {skipped} skipped");
    } else {
        println!("{passed} passed, {failed} failed");
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
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
    let mut sys = match system(&target) {
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
        #[cfg(feature = "mutants")]
        Command::Run {
            paths,
            adapter,
            verbose,
            known_divergences,
            driver,
            mutant,
        } => run(
            paths,
            Target {
                adapter,
                mutant,
                driver,
            },
            verbose,
            known_divergences,
        ),
        #[cfg(not(feature = "mutants"))]
        Command::Run {
            paths,
            adapter,
            verbose,
            known_divergences,
            driver,
        } => run(
            paths,
            Target {
                adapter,
                mutant: None,
                driver,
            },
            verbose,
            known_divergences,
        ),
        #[cfg(feature = "mutants")]
        Command::Replay {
            file,
            adapter,
            verbose,
            driver,
            mutant,
        } => replay(
            file,
            Target {
                adapter,
                mutant,
                driver,
            },
            verbose,
        ),
        #[cfg(not(feature = "mutants"))]
        Command::Replay {
            file,
            adapter,
            verbose,
            driver,
        } => replay(
            file,
            Target {
                adapter,
                mutant: None,
                driver,
            },
            verbose,
        ),
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
            println!("{ok} valid, {bad} invalid");
            if bad == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}
