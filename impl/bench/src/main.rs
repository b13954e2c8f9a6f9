//! `sascribe-bench`: a sascribe cluster side by side with Kamailio 5.6 presence.
//!
//! * `side-by-side`: everything below, every target, one results file.
//! * `rates`: SIPp scenarios (a) publish-modify-remove and (b) subscribe-unsubscribe at rising
//!   offered rates; highest sustained rate (0 failed calls, < 1 % retransmissions) and goodput
//!   at 2x and 4x that rate.
//! * `fanout`: (c) W watchers of one presentity spread over the peers, modify PUBLISHes,
//!   publish→NOTIFY latency per watcher.
//! * `memory`: RSS/PSS (and Kamailio's shared memory) per 100,000 presentities and per 100,000
//!   active subscriptions.
//! * `plot`: redraw the SVGs and `summary.md` from `results.json`.
//!
//! Every child process runs in its own process group and is killed when the benchmark ends,
//! fails or is interrupted (Ctrl-C); every wait is bounded. See docs/PERFORMANCE.md.

#![forbid(unsafe_code)]

mod fanout;
mod load;
mod plot;
mod rates;
mod report;
use sascribe_sipua as sip;
mod simplot;
mod sipp;
mod sys;
mod targets;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use report::Results;
use sipp::Scenario;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use targets::{Env, Spec};

#[derive(Parser, Debug)]
#[command(
    name = "sascribe-bench",
    about = "Side-by-side benchmark: sascribe cluster vs Kamailio 5.6 presence"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Rates (a) and (b), fan-out (c) and memory, on every target, in one run.
    SideBySide {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        rates: RateOpts,
        #[command(flatten)]
        fan: FanOpts,
        #[command(flatten)]
        mem: MemOpts,
    },
    /// SIPp scenarios at rising offered rates.
    Rates {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        rates: RateOpts,
    },
    /// Publish→NOTIFY latency with W watchers on one presentity.
    Fanout {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        fan: FanOpts,
    },
    /// Memory per 100,000 presentities and per 100,000 subscriptions.
    Memory {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        mem: MemOpts,
    },
    /// Publish-modify-remove at 1x, 2x and 4x each target's sustained rate, each on a fresh
    /// target: goodput and 503s (the congestion-collapse curve).
    Overload {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        over: OverloadOpts,
    },
    /// Redraw the plots and summary.md from OUT/results.json.
    Plot {
        /// Directory of results.json.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Draw the simulator's evaluation (`sim_eval --csv` files, together) against the
    /// parameter their runs vary: delivery ratio, delay, notification load per peer, hops.
    SimPlot {
        /// CSV files written by `cargo run --release -p sascribe --example sim_eval -- ... --csv FILE`.
        #[arg(required = true)]
        csv: Vec<PathBuf>,
        /// Where the SVGs go (`sim-PARAMETER-*.svg`) [default: docs/perf in the repository].
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
struct Common {
    /// A few short steps: checks that the tool works (a few minutes), not figures.
    #[arg(long)]
    quick: bool,
    /// Where results.json, summary.md and the SVG plots go [default: docs/perf in the repository].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Systems under test: kamailio, sascribe-N (a `sascribe cluster --peers N`).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kamailio,sascribe-1,sascribe-8"
    )]
    targets: Vec<Spec>,
    /// The sascribe binary [default: target/release/sascribe in the repository, built first].
    #[arg(long)]
    sascribe: Option<PathBuf>,
    /// Do not run `cargo build --release -p sascribe` first.
    #[arg(long)]
    no_build: bool,
    /// apt-get install what is missing (sip-tester, kamailio, kamailio-presence-modules).
    #[arg(long)]
    install: bool,
    /// Kamailio UDP worker processes (`children`).
    #[arg(long, default_value_t = 4)]
    kamailio_workers: u32,
    /// Kamailio shared memory (-m), MB.
    #[arg(long, default_value_t = 1024)]
    kamailio_shm_mb: u32,
    /// Keep the scratch directory (logs, SIPp traces) after a successful run.
    #[arg(long)]
    keep_tmp: bool,
}

#[derive(Args, Debug)]
struct RateOpts {
    /// Offered rates, calls/s [default: 250,500,1000,1500,2000,3000,4000,6000; quick: 200,1000,3000].
    #[arg(long, value_delimiter = ',')]
    rates: Option<Vec<u32>>,
    /// Seconds of offered load per step [default: 10; quick: 3].
    #[arg(long)]
    step_secs: Option<f64>,
    /// Stop rising after this many consecutive unsustained steps (0: run every rate).
    #[arg(long, default_value_t = 2)]
    stop_after: usize,
    /// Highest rate the 2x/4x probes may ask for.
    #[arg(long, default_value_t = 16_000)]
    max_probe_rate: u32,
    /// Presentities published before the subscription steps [default: 1000; quick: 200].
    #[arg(long)]
    pool: Option<usize>,
    /// SIPp -recv_timeout, ms: a call waiting longer for a message fails.
    #[arg(long, default_value_t = 5000)]
    recv_timeout_ms: u64,
    /// Which scenarios.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "publish-modify-remove,subscribe-unsubscribe"
    )]
    scenarios: Vec<String>,
}

#[derive(Args, Debug)]
struct OverloadOpts {
    /// Sustained rate of each target, `target=calls/s` (e.g. kamailio=2000,sascribe-1=1000)
    /// [default: the highest sustained publish-modify-remove rate in OUT/results.json].
    #[arg(long, value_delimiter = ',')]
    base: Vec<String>,
    /// Seconds of offered load per step [default: 10; quick: 3].
    #[arg(long)]
    step_secs: Option<f64>,
    /// SIPp -recv_timeout, ms: a call waiting longer for a message fails.
    #[arg(long, default_value_t = 5000)]
    recv_timeout_ms: u64,
}

#[derive(Args, Debug)]
struct FanOpts {
    /// Watcher counts W [default: 10,100,1000; quick: 10,100].
    #[arg(long, value_delimiter = ',')]
    watchers: Option<Vec<usize>>,
    /// Modify PUBLISHes per W [default: 20; quick: 5].
    #[arg(long)]
    rounds: Option<usize>,
}

#[derive(Args, Debug)]
struct MemOpts {
    /// Presentities and subscriptions [default: 100000; quick: 5000].
    #[arg(long)]
    memory_count: Option<usize>,
    /// Requests in flight while loading (small: a deep queue of requests that time out and
    /// are retransmitted would measure overload, not memory).
    #[arg(long, default_value_t = 32)]
    memory_window: usize,
    /// Requests/s cap while loading (0: only the window limits).
    #[arg(long, default_value_t = 0.0)]
    memory_rate: f64,
    /// Idle seconds before each memory reading, so that finished transactions are freed and
    /// what is measured is what the presentities and subscriptions keep: Kamailio's tm keeps
    /// a transaction 5 s, sascribe keeps a completed UDP transaction Timer J = 32 s (RFC 3261
    /// §17.2.2) [default: 35; quick: 6].
    #[arg(long)]
    memory_settle_secs: Option<u64>,
    /// Longest each loading phase (PUBLISHes, SUBSCRIBEs) may take [default: 180; quick: 60].
    #[arg(long)]
    memory_phase_secs: Option<u64>,
}

fn repo_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = here.join("../..");
    root.canonicalize().unwrap_or(root)
}

async fn install_missing(common: &Common, need_kamailio: bool) -> anyhow::Result<()> {
    let mut pkgs = Vec::new();
    if sys::which("sipp").is_none() {
        pkgs.push("sip-tester");
    }
    if need_kamailio
        && (sys::which("kamailio").is_none()
            || !Path::new("/usr/lib/x86_64-linux-gnu/kamailio/modules/presence_xml.so").is_file())
    {
        pkgs.extend(["kamailio", "kamailio-presence-modules"]);
    }
    if pkgs.is_empty() {
        return Ok(());
    }
    if !common.install {
        bail!(
            "missing: {} — apt-get install -y {0} (or rerun with --install)",
            pkgs.join(" ")
        );
    }
    println!("installing {}", pkgs.join(" "));
    let apt = sys::which("apt-get").context("apt-get not found")?;
    let mut args = vec!["install", "-y"];
    args.extend(pkgs);
    sys::output(&apt, &args, Duration::from_secs(900)).await?;
    Ok(())
}

async fn build_sascribe(repo: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    println!("building sascribe: cargo build --release -p sascribe --bin sascribe");
    let status = tokio::process::Command::new(cargo)
        .current_dir(repo)
        .args(["build", "--release", "-p", "sascribe", "--bin", "sascribe"])
        .kill_on_drop(true)
        .status();
    let status = tokio::time::timeout(Duration::from_secs(1800), status)
        .await
        .context("building sascribe timed out")??;
    anyhow::ensure!(status.success(), "building sascribe failed");
    Ok(())
}

struct Ctx {
    repo: PathBuf,
    out: PathBuf,
    env: Env,
    specs: Vec<Spec>,
    quick: bool,
}

async fn setup(common: &Common, needs_sipp: bool) -> anyhow::Result<Ctx> {
    let repo = repo_root();
    let need_kam = common.targets.contains(&Spec::Kamailio);
    install_missing(common, need_kam).await?;
    if needs_sipp && sys::which("sipp").is_none() {
        bail!("sipp not found: apt-get install -y sip-tester (or rerun with --install)");
    }
    let sascribe = match &common.sascribe {
        Some(p) => p.clone(),
        None => {
            if !common.no_build
                && common
                    .targets
                    .iter()
                    .any(|s| matches!(s, Spec::Sascribe { .. }))
            {
                build_sascribe(&repo).await?;
            }
            repo.join("target/release/sascribe")
        }
    };
    let tmp = std::env::temp_dir().join(format!("sascribe-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let env = Env {
        sascribe,
        kamailio: sys::which("kamailio"),
        kamcmd: sys::which("kamcmd"),
        kamailio_cfg: repo.join("bench/kamailio-presence.cfg"),
        sascribe_cfg: repo.join("bench/sascribe.toml"),
        kamailio_workers: common.kamailio_workers,
        kamailio_shm_mb: common.kamailio_shm_mb,
        tmp,
    };
    env.check(&common.targets)?;
    let out = common.out.clone().unwrap_or_else(|| repo.join("docs/perf"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    Ok(Ctx {
        repo,
        out,
        env,
        specs: common.targets.clone(),
        quick: common.quick,
    })
}

fn scenarios(names: &[String]) -> anyhow::Result<Vec<Scenario>> {
    names
        .iter()
        .map(|n| {
            Scenario::ALL
                .into_iter()
                .find(|s| s.name() == n)
                .with_context(|| format!("unknown scenario {n}"))
        })
        .collect()
}

async fn run_rates(ctx: &Ctx, o: &RateOpts, r: &mut Results) -> anyhow::Result<()> {
    let q = ctx.quick;
    let plan = rates::Plan {
        rates: o.rates.clone().unwrap_or_else(|| {
            if q {
                vec![200, 1000, 3000]
            } else {
                vec![250, 500, 1000, 1500, 2000, 3000, 4000, 6000]
            }
        }),
        step_s: o.step_secs.unwrap_or(if q { 3.0 } else { 10.0 }),
        stop_after_failures: o.stop_after,
        max_probe_rate: o.max_probe_rate,
        pool: o.pool.unwrap_or(if q { 200 } else { 1000 }),
        recv_timeout_ms: o.recv_timeout_ms,
        pause: Duration::from_secs(if q { 1 } else { 2 }),
        sipp: sys::which("sipp").context("sipp not found")?,
        repo: ctx.repo.clone(),
    };
    r.settings.rates = plan.rates.clone();
    r.settings.step_s = plan.step_s;
    r.settings.stop_after_failures = plan.stop_after_failures;
    r.settings.max_probe_rate = plan.max_probe_rate;
    r.settings.pool = plan.pool;
    r.settings.recv_timeout_ms = plan.recv_timeout_ms;
    let probe = sip::Client::bind(4, None).await?;
    r.rates.clear();
    for scn in scenarios(&o.scenarios)? {
        println!("== rates: {} ==", scn.name());
        for spec in &ctx.specs {
            let dir = ctx.env.tmp.join(format!("{}-{}", scn.name(), spec.name()));
            let c = rates::curve(scn, spec, &ctx.env, &plan, &probe, &dir).await;
            println!(
                "  {:<11} {:<22} highest sustained {}",
                c.target,
                c.scenario,
                c.highest_sustained
                    .map_or("none".into(), |h| format!("{h} calls/s"))
            );
            r.rates.push(c);
        }
    }
    Ok(())
}

/// The base rate of `target`: from `--base`, else the highest sustained publish-modify-remove
/// rate of an earlier `rates` run.
fn base_rate(o: &OverloadOpts, r: &Results, target: &str) -> anyhow::Result<u32> {
    for b in &o.base {
        let (t, rate) = b
            .split_once('=')
            .with_context(|| format!("--base {b}: expected target=calls/s"))?;
        if t == target {
            return rate
                .parse()
                .with_context(|| format!("--base {b}: not a rate"));
        }
    }
    r.rates
        .iter()
        .find(|c| c.target == target && c.scenario == Scenario::PublishModifyRemove.name())
        .and_then(|c| c.highest_sustained)
        .with_context(|| format!("no sustained rate of {target}: run `rates` first or pass --base"))
}

async fn run_overload(ctx: &Ctx, o: &OverloadOpts, r: &mut Results) -> anyhow::Result<()> {
    let probe = sip::Client::bind(4, None).await?;
    let scn = Scenario::PublishModifyRemove;
    println!("== overload: {} at 1x, 2x, 4x ==", scn.name());
    let mut curves = Vec::new();
    for spec in &ctx.specs {
        let base = base_rate(o, r, &spec.name())?;
        let plan = rates::Plan {
            rates: vec![base, 2 * base, 4 * base],
            step_s: o.step_secs.unwrap_or(if ctx.quick { 3.0 } else { 10.0 }),
            stop_after_failures: 0,
            max_probe_rate: 0,
            pool: 0,
            recv_timeout_ms: o.recv_timeout_ms,
            pause: Duration::from_secs(2),
            sipp: sys::which("sipp").context("sipp not found")?,
            repo: ctx.repo.clone(),
        };
        let dir = ctx.env.tmp.join(format!("overload-{}", spec.name()));
        let c = rates::curve(scn, spec, &ctx.env, &plan, &probe, &dir).await;
        for s in &c.steps {
            println!(
                "  {:<11} {:>6} calls/s offered: goodput {:.0}/s, {} refused (503), {} failed",
                c.target, s.offered, s.stats.achieved, s.stats.refused, s.stats.failed
            );
        }
        curves.push(c);
    }
    r.overload = curves;
    Ok(())
}

async fn run_fanout(ctx: &Ctx, o: &FanOpts, r: &mut Results) {
    let plan = fanout::FanPlan {
        watchers: o.watchers.clone().unwrap_or_else(|| {
            if ctx.quick {
                vec![10, 100]
            } else {
                vec![10, 100, 1000]
            }
        }),
        rounds: o.rounds.unwrap_or(if ctx.quick { 5 } else { 20 }),
        round_timeout: Duration::from_secs(5),
    };
    r.settings.watchers = plan.watchers.clone();
    r.settings.rounds = plan.rounds;
    println!("== fan-out ==");
    r.fanout.clear();
    for spec in &ctx.specs {
        r.fanout.extend(fanout::fanout(spec, &ctx.env, &plan).await);
    }
}

async fn run_memory(ctx: &Ctx, o: &MemOpts, r: &mut Results) {
    let plan = load::MemPlan {
        count: o
            .memory_count
            .unwrap_or(if ctx.quick { 5_000 } else { 100_000 }),
        window: o.memory_window,
        rate: o.memory_rate,
        settle: Duration::from_secs(
            o.memory_settle_secs
                .unwrap_or(if ctx.quick { 6 } else { 35 }),
        ),
        phase_limit: Duration::from_secs(o.memory_phase_secs.unwrap_or(if ctx.quick {
            60
        } else {
            180
        })),
    };
    r.settings.memory_count = plan.count;
    println!(
        "== memory: {} presentities, then {0} subscriptions ==",
        plan.count
    );
    r.memory.clear();
    for spec in &ctx.specs {
        let m = load::memory(spec, &ctx.env, &plan).await;
        if let Some(e) = &m.error {
            eprintln!("  {}: {e}", m.target);
        }
        r.memory.push(m);
    }
}

/// Saves results.json (after each part, so an interrupted run keeps what it measured).
fn save(out: &Path, r: &Results) -> anyhow::Result<()> {
    let json = out.join("results.json");
    std::fs::write(&json, serde_json::to_string_pretty(r)? + "\n")
        .with_context(|| format!("writing {}", json.display()))
}

fn write(out: &Path, r: &Results) -> anyhow::Result<()> {
    save(out, r)?;
    let json = out.join("results.json");
    let md = report::markdown(r);
    std::fs::write(out.join("summary.md"), &md)?;
    let plots = plot::all(out, &r.rates, &r.fanout, &r.overload)?;
    println!("\n{md}");
    println!(
        "wrote {} and {}",
        json.display(),
        out.join("summary.md").display()
    );
    for p in plots {
        println!("wrote {}", p.display());
    }
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let (common, needs_sipp) = match &cli.command {
        Cmd::SimPlot { csv, out } => {
            let out = out.clone().unwrap_or_else(|| repo_root().join("docs/perf"));
            let mut rows = Vec::new();
            for f in csv {
                rows.extend(simplot::read(f)?);
            }
            for p in simplot::draw(&rows, &out)? {
                println!("wrote {}", p.display());
            }
            return Ok(());
        }
        Cmd::Plot { out } => {
            let out = out.clone().unwrap_or_else(|| repo_root().join("docs/perf"));
            let path = out.join("results.json");
            anyhow::ensure!(path.is_file(), "{} not found", path.display());
            return write(&out, &Results::load_or_default(&path));
        }
        Cmd::SideBySide { common, .. }
        | Cmd::Rates { common, .. }
        | Cmd::Overload { common, .. } => (common, true),
        Cmd::Fanout { common, .. } | Cmd::Memory { common, .. } => (common, false),
    };
    let ctx = setup(common, needs_sipp).await?;
    let mut r = Results::load_or_default(&ctx.out.join("results.json"));
    r.meta = sys::Meta::collect(&ctx.repo, &ctx.env.sascribe, ctx.quick).await;
    r.settings.targets = ctx.specs.iter().map(Spec::name).collect();
    r.settings.kamailio_workers = ctx.env.kamailio_workers;
    r.settings.kamailio_shm_mb = ctx.env.kamailio_shm_mb;
    println!(
        "sascribe-bench: {} on {} × {}; scratch directory {}",
        r.meta.date_utc,
        r.meta.nproc,
        r.meta.cpu_model,
        ctx.env.tmp.display()
    );
    match &cli.command {
        Cmd::SideBySide {
            rates, fan, mem, ..
        } => {
            run_rates(&ctx, rates, &mut r).await?;
            save(&ctx.out, &r)?;
            run_fanout(&ctx, fan, &mut r).await;
            save(&ctx.out, &r)?;
            run_memory(&ctx, mem, &mut r).await;
        }
        Cmd::Rates { rates, .. } => run_rates(&ctx, rates, &mut r).await?,
        Cmd::Fanout { fan, .. } => run_fanout(&ctx, fan, &mut r).await,
        Cmd::Memory { mem, .. } => run_memory(&ctx, mem, &mut r).await,
        Cmd::Overload { over, .. } => run_overload(&ctx, over, &mut r).await?,
        Cmd::Plot { .. } | Cmd::SimPlot { .. } => unreachable!(),
    }
    r.meta.loadavg_end = sys::loadavg();
    write(&ctx.out, &r)?;
    if !common.keep_tmp {
        let _ = std::fs::remove_dir_all(&ctx.env.tmp);
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sascribe-bench: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        tokio::select! {
            r = run(cli) => r,
            // Dropping `run` drops every target guard: their process groups are killed.
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    rt.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sascribe-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
