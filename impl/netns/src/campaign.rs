//! The campaign: for each schedule, a fresh lab of `sascribe peer` processes, the load client
//! in its own namespace, the schedule's faults at their times, the heal, then the checker over
//! the client's history and the fault log.

use crate::check::{check, Bounds, Report};
use crate::history;
use crate::net::Lab;
use crate::schedule::{self, Action, Schedule, Who};
use anyhow::{bail, Context};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The campaign's settings.
#[derive(Clone, Debug, clap::Args)]
pub struct CampaignArgs {
    /// Schedules to run: the named ones first (in the order of --only, or all of them), then
    /// seeded random ones.
    #[arg(long, default_value_t = 8)]
    pub schedules: usize,
    /// Only these named schedules (comma-separated), then random ones if --schedules asks for
    /// more. Names: root-kill, loss5, rolling-restart, loss20, root-partition, root-pause,
    /// root-successor-partition, root-oneway, jitter, root-kill-jitter,
    /// orderly-rolling-restart.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Only random schedules.
    #[arg(long)]
    pub random_only: bool,
    /// Seed of the campaign (peer ids, random schedules, client).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Peers per cluster.
    #[arg(long, default_value_t = 7)]
    pub peers: usize,
    /// Presentities (one publisher each).
    #[arg(long, default_value_t = 20)]
    pub presentities: usize,
    /// Watchers per presentity.
    #[arg(long, default_value_t = 3)]
    pub watchers: usize,
    /// The convergence bound in seconds (after quiesce).
    #[arg(long, default_value_t = 10)]
    pub converge_secs: u64,
    /// Where histories, fault logs, peer logs and reports go (one directory per schedule).
    #[arg(long, default_value = "target/netns-campaign")]
    pub out: PathBuf,
    /// The `sascribe` binary.
    #[arg(long, default_value = "target/release/sascribe")]
    pub sascribe: PathBuf,
    /// What the `impair` faults do to every datagram a peer sends while on (`sascribe peer
    /// --impair`): delay and uniform jitter in ms, duplication in percent. Jitter well above
    /// the time between two datagrams reorders them.
    #[arg(long, default_value = "delay=5,jitter=150,dup=10")]
    pub impair: String,
    /// Exit 0 even if a schedule fails (a survey rather than a gate).
    #[arg(long)]
    pub no_fail: bool,
}

/// Runs the campaign; returns whether every schedule passed.
pub async fn run(args: CampaignArgs) -> anyhow::Result<bool> {
    if !args.sascribe.exists() {
        bail!(
            "{} not found (cargo build --release -p sascribe)",
            args.sascribe.display()
        );
    }
    let sascribe = std::fs::canonicalize(&args.sascribe)?;
    let removed = crate::net::cleanup_stale();
    if removed > 0 {
        println!("removed {removed} stale namespaces of an earlier campaign");
    }
    let names: Vec<String> = if args.random_only {
        Vec::new()
    } else if args.only.is_empty() {
        schedule::NAMED.iter().map(|s| s.to_string()).collect()
    } else {
        args.only.clone()
    };
    let mut plan: Vec<Schedule> = Vec::new();
    for n in names.iter().take(args.schedules) {
        plan.push(schedule::named(n, args.peers).with_context(|| format!("no schedule {n}"))?);
    }
    let mut i = 0u64;
    while plan.len() < args.schedules {
        plan.push(schedule::random(
            args.seed.wrapping_mul(1000) + i,
            args.peers,
        ));
        i += 1;
    }
    let total = plan.len();
    let mut failed = Vec::new();
    let started = Instant::now();
    for (i, s) in plan.iter().enumerate() {
        let seed = args.seed.wrapping_mul(7919).wrapping_add(i as u64);
        let dir = args.out.join(format!("{i:03}"));
        let _ = std::fs::remove_dir_all(&dir);
        let t = Instant::now();
        let verdict = run_one(&args, &sascribe, i, s, seed, &dir).await;
        let secs = t.elapsed().as_secs();
        let line = match &verdict {
            Ok(r) if r.passed() => format!("passed  ({secs} s) {}", r.render(0)),
            Ok(r) => {
                failed.push(s.name.clone());
                let known = if s.known_bug {
                    " [expected today: issue 13 item 9]"
                } else {
                    ""
                };
                format!("FAILED{known}  ({secs} s) {}", r.render(first_t(&dir)))
            }
            Err(e) => {
                failed.push(s.name.clone());
                format!("ERROR   ({secs} s) the run itself failed: {e:#}")
            }
        };
        println!(
            "[{:>3}/{total}] {} (seed {seed}, {}): {line}",
            i + 1,
            s.name,
            dir.display()
        );
        let _ = std::fs::write(dir.join("report.txt"), format!("{}\n{line}\n", s.name));
    }
    println!(
        "campaign: {} passed, {} failed of {total} schedules in {} s{}",
        total - failed.len(),
        failed.len(),
        started.elapsed().as_secs(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(" (failed: {})", failed.join("; "))
        }
    );
    Ok(failed.is_empty() || args.no_fail)
}

fn first_t(dir: &std::path::Path) -> u64 {
    history::read(&[&dir.join("history.jsonl"), &dir.join("faults.jsonl")])
        .ok()
        .and_then(|h| h.first().map(history::Event::t))
        .unwrap_or(0)
}

async fn run_one(
    args: &CampaignArgs,
    sascribe: &std::path::Path,
    index: usize,
    s: &Schedule,
    seed: u64,
    dir: &std::path::Path,
) -> anyhow::Result<Report> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ids: Vec<u128> = (0..args.peers).map(|_| rng.random()).collect();
    let mut lab = Lab::create(&format!("{index}"), &ids, sascribe, &args.impair, dir)?;
    lab.start(0, true, Duration::from_secs(20)).await?;
    for i in 1..args.peers {
        lab.start(i, false, Duration::from_secs(20)).await?;
    }
    // Leaf sets and routing tables fill in.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let run = format!("{seed:x}");
    let gid = lab.gid(&format!("sip:p0-{run}@sx.test")).await?;
    let ring = lab.ring(gid);
    std::fs::write(
        dir.join("schedule.txt"),
        format!(
            "{}\nring of p0 (root first): {ring:?}\n{:#?}\n",
            s.name, s.steps
        ),
    )?;
    let peers: Vec<String> = lab.peers.iter().map(|p| p.sip().to_string()).collect();
    let exe = std::env::current_exe()?;
    let log = std::fs::File::create(dir.join("client.log"))?;
    let mut client = lab
        .client_command(&exe)
        .arg("client")
        .args(["--peers", &peers.join(",")])
        .args(["--bind", &lab.client_ip.to_string()])
        .arg("--history")
        .arg(dir.join("history.jsonl"))
        .args(["--publish-secs", &s.publish_secs.to_string()])
        .args(["--converge-secs", &args.converge_secs.to_string()])
        .args(["--presentities", &args.presentities.to_string()])
        .args(["--watchers", &args.watchers.to_string()])
        .args(["--seed", &seed.to_string()])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting the client")?;
    let t0 = Instant::now();
    let who = |w: Who| match w {
        Who::Ring(j) => ring[j % ring.len()],
        Who::Peer(i) => i % ring.len(),
    };
    for (at, action) in &s.steps {
        tokio::time::sleep_until((t0 + Duration::from_secs_f64(*at)).into()).await;
        match action {
            Action::Kill(w) => lab.kill(who(*w)).await,
            Action::Restart(w) => lab.restart(who(*w)).await?,
            Action::OrderlyRestart(w) => lab.orderly_restart(who(*w)).await?,
            Action::Stop(w) => lab.pause(who(*w), true),
            Action::Cont(w) => lab.pause(who(*w), false),
            Action::Loss(p) => lab.loss(*p)?,
            Action::Impair(on) => lab.impair(*on),
            Action::Block(a, b) => {
                let a: Vec<usize> = a.iter().map(|w| who(*w)).collect();
                let b: Vec<usize> = b.iter().map(|w| who(*w)).collect();
                lab.block(&a, &b)?
            }
            Action::Clear => lab.clear()?,
            Action::Heal => lab.heal().await?,
        }
    }
    let limit = Duration::from_secs(s.publish_secs + args.converge_secs + 30);
    match tokio::time::timeout(limit.saturating_sub(t0.elapsed()), client.wait()).await {
        Ok(st) => {
            let st = st?;
            if !st.success() {
                bail!(
                    "the client exited with {st}; see {}",
                    dir.join("client.log").display()
                );
            }
        }
        Err(_) => bail!("the client did not finish within {limit:?}"),
    }
    drop(lab);
    let events = history::read(&[&dir.join("history.jsonl"), &dir.join("faults.jsonl")])?;
    Ok(check(
        &events,
        Bounds {
            converge_us: args.converge_secs * 1_000_000,
        },
    ))
}
