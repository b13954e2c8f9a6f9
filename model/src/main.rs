//! `sascribe-model`: check the sa-Scribe model, or explore it in Stateright's Explorer.

use clap::{Args, Parser, Subcommand, ValueEnum};
use sascribe_model::cli::ConfigArgs;
use sascribe_model::model::{applicable, claimed, FLAGS_CLEAN, PROPERTIES, STATE_CLEAN};
use sascribe_model::progress::{mib, peak_rss_bytes, watch, Counts, Ending, Progress};
use sascribe_model::{Mutant, SaScribe};

/// The checker allocates and frees states from every thread: mimalloc is faster at it than
/// glibc's allocator (`model/bench/paxos.sh`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use stateright::{Checker, Model, UniformChooser};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "sascribe-model",
    about = "Model-check sa-Scribe (SIP-aware Scribe) with Stateright"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check every property; print statistics, verdicts and counterexamples.
    Check(CheckArgs),
    /// Export the conformance trace corpus (deterministic: same build, same files).
    Traces {
        /// Directory to write `*.json` traces into (created; stale traces removed).
        #[arg(long, default_value = "traces")]
        out: std::path::PathBuf,
        /// Seeded random walks per configuration.
        #[arg(long, default_value_t = sascribe_model::corpus::DEFAULT_WALKS)]
        walks: u64,
        /// Seconds between progress lines on stderr (0: none).
        #[arg(long, default_value_t = DEFAULT_PROGRESS)]
        progress: u64,
    },
    /// Serve the Stateright Explorer (a web UI) on 127.0.0.1.
    Explore {
        #[command(flatten)]
        config: ConfigArgs,
        /// Run with a seeded protocol bug (see `check --list-mutants`).
        #[arg(long, value_parser = sascribe_model::cli::parse_mutant)]
        mutant: Option<Mutant>,
        /// Port to listen on.
        #[arg(long, default_value_t = 3000)]
        port: u16,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Strategy {
    Bfs,
    Dfs,
    Simulate,
}

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Run with a seeded protocol bug (see --list-mutants).
    #[arg(long, value_parser = sascribe_model::cli::parse_mutant)]
    mutant: Option<Mutant>,
    /// Search strategy.
    #[arg(long, value_enum, default_value = "bfs")]
    strategy: Strategy,
    /// Stop exploring paths deeper than this (no liveness verdicts on cut paths).
    #[arg(long)]
    depth: Option<usize>,
    /// Seed for --strategy simulate.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Checker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Stop after this many seconds, with any number of threads, and report what was found so
    /// far; such a run is not exhaustive (default: none; 60 for simulate).
    #[arg(long)]
    timeout: Option<u64>,
    /// Seconds between progress lines on stderr (0: none).
    #[arg(long, default_value_t = DEFAULT_PROGRESS)]
    progress: u64,
    /// List the seeded bugs and the property each one breaks, then exit.
    #[arg(long)]
    list_mutants: bool,
    /// Write the first counterexample found as a conformance trace (JSON) to this file.
    #[arg(long)]
    save_trace: Option<std::path::PathBuf>,
    /// Keep pACKs in flight until delivered, as the corpus and `validate-run` do. By default
    /// the checker elides them: a pACK's delivery changes nothing but the network, so the
    /// verdicts are the same with about two fifths fewer states (see `SaScribe` in the
    /// model's documentation).
    #[arg(long)]
    deliver_packs: bool,
}

/// Default seconds between progress lines.
const DEFAULT_PROGRESS: u64 = sascribe_model::progress::DEFAULT_EVERY.as_secs();

fn main() -> ExitCode {
    // Output piped into a reader that stops early (`| head`) ends the process as it ends other
    // command-line tools, not in a panic. Nothing here writes to a pipe it must survive: the
    // explorer's sockets are sent to with MSG_NOSIGNAL by the standard library.
    sigpipe::reset();
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => check(args),
        Command::Traces {
            out,
            walks,
            progress,
        } => traces(&out, walks, progress),
        Command::Explore {
            config,
            mutant,
            port,
        } => {
            let setup = match config.setup(mutant) {
                Ok(s) => s,
                Err(e) => return fail(&e),
            };
            println!("config: {}", setup.summary());
            println!("Explorer on http://127.0.0.1:{port}/ (Ctrl-C to stop)");
            let checker = SaScribe::new(setup).checker().serve(("127.0.0.1", port));
            // serve() explores in the background and answers HTTP until the process is stopped
            while !checker.is_done() {
                std::thread::sleep(Duration::from_secs(1));
            }
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    }
}

fn traces(out: &std::path::Path, walks: u64, progress: u64) -> ExitCode {
    if let Err(e) = std::fs::create_dir_all(out) {
        return fail(&format!("cannot create {}: {e}", out.display()));
    }
    if let Ok(dir) = std::fs::read_dir(out) {
        for entry in dir.flatten() {
            let p = entry.path();
            if p.extension().is_some_and(|x| x == "json") {
                let _ = std::fs::remove_file(p);
            }
        }
    }
    let mut progress = Progress::stderr(Duration::from_secs(progress));
    let written = sascribe_model::corpus::corpus_each(walks, &mut progress, &mut |t| {
        let path = out.join(format!("{}.json", t.name));
        std::fs::write(&path, sascribe_model::trace::to_json(&t))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    });
    match written {
        Ok(sum) => {
            println!("wrote {} traces to {}", sum.traces, out.display());
            print!("{}", sum.report());
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

fn check(args: CheckArgs) -> ExitCode {
    if args.list_mutants {
        for m in Mutant::ALL {
            println!(
                "{:<26} breaks {:<24} {}",
                m.name(),
                m.property(),
                m.description()
            );
        }
        return ExitCode::SUCCESS;
    }
    let setup = match args.config.setup(args.mutant) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    if args.threads == Some(0) {
        return fail("--threads must be at least 1");
    }
    if args.depth == Some(0) {
        return fail("--depth must be at least 1");
    }
    let elided = if args.deliver_packs {
        ""
    } else {
        " (pACKs elided)"
    };
    println!("config: {}{elided}", setup.summary());
    let mut model = SaScribe::new(setup);
    if !args.deliver_packs {
        model = model.eliding_packs();
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let timeout = args.timeout.or(match args.strategy {
        Strategy::Simulate => Some(60),
        _ => None,
    });
    // A search that runs to its end checks the flag properties as one first, and the state
    // properties as another (cheaper per state); if either fails, it runs again with each
    // apart, to name each and give its own counterexample. (One that may time out checks them
    // apart at once: its abandoned threads would slow the second run down.) Every search
    // tests a sometimes-property only until its first witness.
    // (`SaScribe::witnessing_once`: Stateright's `report` would misread its shrinking
    // property list; `watch` does not use it.)
    let mut fused = timeout.is_none();
    let (ending, elapsed, counts, discoveries) = loop {
        let checked = if fused {
            model.clone().fusing_flag_properties()
        } else {
            model.clone()
        }
        .witnessing_once();
        let mut builder = checked.checker().threads(threads);
        if let Some(d) = args.depth {
            builder = builder.target_max_depth(d);
        }
        // The deadline is enforced here rather than by the checker builder, whose timeout a
        // single-threaded BFS or DFS never looks at (see `sascribe_model::progress`).
        let start = Instant::now();
        let deadline = timeout.map(|t| start + Duration::from_secs(t));
        let mut checker: Box<dyn Checker<SaScribe>> = match args.strategy {
            Strategy::Bfs => Box::new(builder.spawn_bfs()),
            Strategy::Dfs => Box::new(builder.spawn_dfs()),
            Strategy::Simulate => Box::new(builder.spawn_simulation(args.seed, UniformChooser)),
        };
        let mut progress = Progress::stderr(Duration::from_secs(args.progress));
        progress.set_context("check");
        let ending = watch(&mut *checker, deadline, &mut progress);
        let elapsed = start.elapsed();
        // On a timeout the abandoned checker threads go on: report one snapshot.
        let counts = Counts::of(&*checker);
        let discoveries = checker.discoveries();
        if fused && (discoveries.contains_key(FLAGS_CLEAN) || discoveries.contains_key(STATE_CLEAN))
        {
            println!(
                "a safety property checked with others as one failed ({:.2} s, {} unique \
                 states): checking again with each apart",
                elapsed.as_secs_f64(),
                counts.unique
            );
            fused = false;
            continue;
        }
        break (ending, elapsed, counts, discoveries);
    };
    let all_discovered = PROPERTIES
        .iter()
        .filter(|(name, _, _)| applicable(&model.setup, name) && claimed(&model.setup, name))
        .all(|(name, _, _)| discoveries.contains_key(name));
    let search = match (ending, args.strategy, args.depth) {
        (Ending::TimedOut, _, _) => Search::TimedOut(timeout.unwrap_or_default()),
        (_, Strategy::Simulate, _) => Search::Simulation,
        (_, _, Some(d)) => Search::DepthBounded(d),
        (Ending::Finished, _, None) if all_discovered => Search::AllDiscovered,
        (Ending::Finished, _, None) => Search::Exhaustive,
    };
    let exhaustive = search == Search::Exhaustive;
    let secs = elapsed.as_secs_f64().max(1e-9);
    println!("states generated: {}", counts.generated);
    println!("unique states:    {}", counts.unique);
    println!("max depth:        {}", counts.max_depth);
    println!(
        "states/s:         {:.0} (unique {:.0})",
        counts.generated as f64 / secs,
        counts.unique as f64 / secs
    );
    println!("time:             {:.2} s on {threads} thread(s)", secs);
    if let Some(peak) = peak_rss_bytes() {
        println!("peak RSS:         {}", mib(peak));
    }
    println!("search:           {}", search.describe());
    let width = PROPERTIES
        .iter()
        .map(|(n, _, _)| n.len())
        .max()
        .unwrap_or(0);
    let mut violated = Vec::new();
    let mut cycles = Vec::new();
    let (mut sometimes, mut witnessed, mut inapplicable, mut unclaimed) = (0, 0, 0, 0);
    for (name, kind, meaning) in PROPERTIES {
        let (set_aside, count) = if !applicable(&model.setup, name) {
            ("not applicable here", &mut inapplicable)
        } else if !claimed(&model.setup, name) {
            ("not claimed here", &mut unclaimed)
        } else {
            ("", &mut 0)
        };
        if !set_aside.is_empty() {
            println!("  {kind:<10} {name:<width$}  {set_aside:<25}  {meaning}");
            *count += 1;
            continue;
        }
        let found = discoveries.contains_key(name);
        let cycle = *kind == "eventually" && found && ends_in_cycle(&model, &discoveries[name]);
        if cycle {
            cycles.push(*name);
        }
        let verdict = match (*kind, found, exhaustive) {
            ("sometimes", true, _) => "witnessed",
            ("sometimes", false, _) => "not witnessed (sometimes)",
            (_, true, _) if cycle => "VIOLATED on a cycle",
            (_, true, _) => "VIOLATED",
            (_, false, true) => "holds",
            (_, false, false) => "not violated so far",
        };
        println!("  {kind:<10} {name:<width$}  {verdict:<25}  {meaning}");
        if *kind == "sometimes" {
            sometimes += 1;
            witnessed += usize::from(found);
        } else if found {
            violated.push(*name);
        }
    }
    let mut summary = summary(
        search,
        &violated,
        PROPERTIES.len() - sometimes - inapplicable - unclaimed,
        (witnessed, sometimes),
        inapplicable,
        unclaimed,
    );
    if !cycles.is_empty() {
        summary.push_str(&format!(
            "; on a cycle only (no fairness assumed): {}",
            cycles.join(", ")
        ));
    }
    if args.save_trace.is_some() && model.setup.suspicions > 0 {
        eprintln!("--save-trace: suspicions have no trace form yet; no trace written");
    } else if args.save_trace.is_some() && model.setup.fencing() {
        eprintln!(
            "--save-trace: joins, and restarts without --perfect-detector, have no trace form \
             yet; no trace written"
        );
    } else if let (Some(file), Some(name)) = (&args.save_trace, violated.first()) {
        let path = &discoveries[name];
        let trace = model.trace(
            file.file_stem().map_or("counterexample".into(), |s| {
                s.to_string_lossy().into_owned()
            }),
            sascribe_model::trace::Origin {
                kind: "counterexample",
                property: Some(name.to_string()),
                transition: None,
                seed: None,
                mutant: args.mutant.map(|m| m.name().to_string()),
            },
            &path.clone().into_actions(),
        );
        if let Err(e) = std::fs::write(file, sascribe_model::trace::to_json(&trace)) {
            return fail(&format!("cannot write {}: {e}", file.display()));
        }
        println!(
            "counterexample to {name} saved as a trace in {}",
            file.display()
        );
    }
    for name in &violated {
        let path = &discoveries[name];
        let steps = path.clone().into_actions().len();
        if cycles.contains(name) {
            println!(
                "\ncounterexample to {name} ({steps} steps; it ends on a cycle, not at a \
                 terminal state: the walk came back to a state it had visited, and the property \
                 is never met on that loop; no fairness is assumed, so an action enabled all \
                 along it may be one the loop never takes):"
            );
        } else {
            println!("\ncounterexample to {name} ({steps} steps):");
        }
        print!("{}", model.describe_path(path));
    }
    println!("{summary}");
    if violated.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Whether a counterexample to an `eventually` property ends in a state that has a
/// successor: a simulation's walk stops where it comes back to a state it visited, and
/// Stateright reports the property unmet there, on a loop that need not be fair. (An
/// exhaustive search reports `eventually` counterexamples at terminal states only.)
fn ends_in_cycle(
    model: &SaScribe,
    path: &stateright::Path<<SaScribe as Model>::State, <SaScribe as Model>::Action>,
) -> bool {
    let last = path.last_state();
    let mut actions = Vec::new();
    model.actions(last, &mut actions);
    actions
        .into_iter()
        .any(|a| model.next_state(last, a).is_some())
}

/// How far a check got.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Search {
    /// Every reachable state was explored.
    Exhaustive,
    /// The search stopped early because every property already has a discovery.
    AllDiscovered,
    /// Paths were cut at this depth.
    DepthBounded(usize),
    /// Random walks.
    Simulation,
    /// The deadline (this many seconds) passed before the search ended.
    TimedOut(u64),
}

impl Search {
    fn describe(self) -> String {
        match self {
            Search::Exhaustive => "exhaustive (every reachable state explored)".into(),
            Search::AllDiscovered => {
                "stopped early: every property has a discovery (verdicts final)".into()
            }
            Search::DepthBounded(d) => {
                format!("NOT exhaustive: paths cut at depth {d} (no verdict is a proof)")
            }
            Search::Simulation => "NOT exhaustive: random walks (no verdict is a proof)".into(),
            Search::TimedOut(t) => {
                format!("NOT exhaustive: stopped by timeout after {t} s (no verdict is a proof)")
            }
        }
    }
}

/// The last line of a check: whether it was exhaustive, and what it found.
fn summary(
    search: Search,
    violated: &[&str],
    safety_and_liveness: usize,
    (witnessed, sometimes): (usize, usize),
    inapplicable: usize,
    unclaimed: usize,
) -> String {
    let how = match search {
        Search::Exhaustive => "exhaustive".to_string(),
        Search::AllDiscovered => "stopped early, every property decided".to_string(),
        Search::DepthBounded(d) => format!("NOT exhaustive (depth-bounded at {d})"),
        Search::Simulation => "NOT exhaustive (random walks)".to_string(),
        Search::TimedOut(t) => format!("NOT exhaustive (stopped by timeout after {t} s)"),
    };
    let proven = matches!(search, Search::Exhaustive | Search::AllDiscovered);
    let found = match (violated.is_empty(), proven) {
        (true, true) => format!("all {safety_and_liveness} safety and liveness properties hold"),
        (true, false) => "no violation found so far, nothing is proven".to_string(),
        (false, _) => format!(
            "{} of {safety_and_liveness} safety and liveness properties VIOLATED ({})",
            violated.len(),
            violated.join(", ")
        ),
    };
    let besides = match inapplicable {
        0 => String::new(),
        n => format!(" ({n} more not applicable to this configuration)"),
    };
    let besides = match unclaimed {
        0 => besides,
        n => format!(
            "{besides}; {n} not claimed beyond k-1 crashes (broken by design there: \
             DURABILITY_BOUND in model/src/model.rs)"
        ),
    };
    format!(
        "result: {how}: {found}; {witnessed} of {sometimes} sometimes-properties witnessed{besides}"
    )
}
