//! `sascribe-netns`: fault campaigns against real `sascribe peer` processes, each in its own
//! network namespace (run as root; needs `ip` from iproute2 and `nft` from nftables).
//!
//! * `campaign`: runs N schedules (named, then seeded random) and prints passed/failed each;
//! * `client`: the history-recording SIP load client (the campaign runs it in a namespace);
//! * `check`: the history checker over history and fault files;
//! * `cleanup`: removes namespaces left by a campaign that was killed.

mod campaign;
mod check;
mod client;
mod history;
mod net;
mod schedule;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "sascribe-netns", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run fault schedules against fresh clusters and check each history.
    Campaign(campaign::CampaignArgs),
    /// The load client (run inside the client's namespace by `campaign`).
    Client(client::ClientArgs),
    /// Check history files (the client's history and the campaign's fault log).
    Check {
        /// The convergence bound in seconds (after quiesce).
        #[arg(long, default_value_t = 10)]
        converge_secs: u64,
        /// Print every violation (one line each), not only the first with its excerpt.
        #[arg(long)]
        all: bool,
        /// History files (JSON lines), merged by time.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Remove namespaces left over by campaigns that no longer run.
    Cleanup,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Campaign(args) => {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            // On Ctrl-C or SIGTERM the campaign future is dropped: its lab kills the peers and
            // the client and deletes the namespaces.
            let ok = tokio::select! {
                r = campaign::run(args) => r?,
                _ = tokio::signal::ctrl_c() => { eprintln!("interrupted; cleaned up"); false }
                _ = term.recv() => { eprintln!("terminated; cleaned up"); false }
            };
            net::cleanup_stale();
            std::process::exit(if ok { 0 } else { 1 });
        }
        Cmd::Client(args) => client::run(args).await,
        Cmd::Check {
            converge_secs,
            all,
            files,
        } => {
            let paths: Vec<&std::path::Path> = files.iter().map(PathBuf::as_path).collect();
            let events = history::read(&paths)?;
            let t0 = events.first().map(history::Event::t).unwrap_or(0);
            let r = check::check(
                &events,
                check::Bounds {
                    converge_us: converge_secs * 1_000_000,
                },
            );
            println!("{}", r.render(t0));
            if all {
                for v in &r.violations {
                    let at = v.t.saturating_sub(t0) as f64 / 1e6;
                    println!("[{}] +{at:.3}s {}: {}", v.rule, v.pres, v.message);
                }
            }
            std::process::exit(if r.passed() { 0 } else { 1 });
        }
        Cmd::Cleanup => {
            println!("removed {} namespaces", net::cleanup_stale());
            Ok(())
        }
    }
}
