//! `sascribe`: run sa-Scribe peers.
//!
//! * `sascribe peer --listen ADDR [--bootstrap ADDR] [--sip ADDR] [--config FILE.toml] [--id HEX]`
//!   runs one peer on its own UDP socket (and, with `--sip`, the SIP front end on UDP and TCP,
//!   on the same port).
//! * `sascribe cluster [--peers 8] [--base-port 7000] [--sip-base-port 5060] [--config FILE.toml]`
//!   starts a local overlay on 127.0.0.1 in this process and prints one line per peer with the
//!   address user agents send SIP requests to (over UDP or TCP), then `ready`.
//!
//! The configuration file's `[auth]` table turns on SIP digest authentication (off by default;
//! `sascribe peer` warns when its SIP front end listens beyond loopback without it).
//!
//! Logs go to stderr (`RUST_LOG`, default `info`). Ctrl-C or SIGTERM makes every peer leave the
//! overlay gracefully, then the process exits 0. Invalid arguments or configuration exit 2.

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use sascribe::runtime::{ConfigFile, HostLoop, RuntimeHandle};
use sascribe::sip::auth::{AuthConfig, WatchPolicy};
use sascribe::{Config, NodeId};
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "sascribe",
    version,
    about = "sa-Scribe: P2P SIP event notification over Pastry"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one peer.
    Peer(PeerArgs),
    /// Run a local overlay of several peers on 127.0.0.1 in this process.
    Cluster(ClusterArgs),
}

#[derive(clap::Args, Debug)]
struct PeerArgs {
    /// UDP address of the overlay socket.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// Overlay address of a peer to join through (none: start a new overlay).
    #[arg(long, value_name = "ADDR")]
    bootstrap: Option<SocketAddr>,
    /// Address of the SIP front end, served over UDP and TCP (where user agents send requests).
    #[arg(long, value_name = "ADDR")]
    sip: Option<SocketAddr>,
    /// Address announced to other peers (default: the bound address of --listen).
    #[arg(long, value_name = "ADDR")]
    advertise: Option<SocketAddr>,
    /// Configuration file (TOML; keys are the fields of sascribe::Config).
    #[arg(long, value_name = "FILE.toml")]
    config: Option<PathBuf>,
    /// Overlay id: a 128-bit number in hex, up to 32 digits (default: random).
    #[arg(long, value_name = "HEX", value_parser = parse_id)]
    id: Option<NodeId>,
}

#[derive(clap::Args, Debug)]
struct ClusterArgs {
    /// Number of peers.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    peers: u16,
    /// Overlay port of peer 0; peer i listens on base + i (0: ephemeral ports).
    #[arg(long, value_name = "P", default_value_t = 7000)]
    base_port: u16,
    /// SIP port of peer 0 (UDP and TCP); peer i's front end listens on base + i (0: ephemeral
    /// ports).
    #[arg(long, value_name = "Q", default_value_t = 5060)]
    sip_base_port: u16,
    /// Configuration file applied to every peer.
    #[arg(long, value_name = "FILE.toml")]
    config: Option<PathBuf>,
}

fn parse_id(s: &str) -> Result<NodeId, String> {
    let hex = s.strip_prefix("0x").unwrap_or(s);
    if hex.is_empty() || hex.len() > 32 {
        return Err("expected 1 to 32 hex digits".into());
    }
    u128::from_str_radix(hex, 16)
        .map(NodeId)
        .map_err(|_| "expected hex digits (0-9, a-f)".into())
}

/// 64 bits of OS-seeded randomness (std's hash seeds), without an RNG dependency.
fn random_u64() -> u64 {
    RandomState::new().hash_one(std::time::SystemTime::now())
}

fn random_id() -> NodeId {
    NodeId((u128::from(random_u64()) << 64) | u128::from(random_u64()))
}

/// What the SIP front end of every peer is configured with.
#[derive(Clone, Debug, Default)]
struct SipSettings {
    /// Event packages (empty: the front end's default).
    packages: Vec<String>,
    /// Served domains (empty: every domain) and their aliases.
    domains: (Vec<String>, Vec<(String, String)>),
    /// Digest authentication (`[auth]`), if on.
    auth: Option<AuthConfig>,
}

/// The overlay configuration and the SIP settings a configuration file asks for (files it
/// names are relative to its directory).
fn load_config(path: Option<&PathBuf>) -> anyhow::Result<(Config, SipSettings)> {
    let (file, dir) = match path {
        Some(p) => (
            ConfigFile::load(p)?,
            p.parent().map(PathBuf::from).unwrap_or_default(),
        ),
        None => (ConfigFile::default(), PathBuf::new()),
    };
    let sip = SipSettings {
        packages: file.event_packages()?,
        domains: file.domains()?,
        auth: file.auth(&dir)?,
    };
    Ok((file.apply(Config::default())?, sip))
}

/// Ports `base .. base + n` (all 0 when `base` is 0), or `None` when they overflow.
fn port_range(base: u16, n: u16) -> Option<Vec<u16>> {
    if base == 0 {
        return Some(vec![0; usize::from(n)]);
    }
    let last = base.checked_add(n - 1)?;
    Some((base..=last).collect())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let usage = |msg: String| -> ExitCode {
        let _ = Cli::command()
            .error(clap::error::ErrorKind::ValueValidation, msg)
            .print();
        ExitCode::from(2)
    };
    let config = match &cli.command {
        Command::Peer(a) => load_config(a.config.as_ref()),
        Command::Cluster(a) => load_config(a.config.as_ref()),
    };
    let (config, sip) = match config {
        Ok(c) => c,
        Err(e) => return usage(format!("{e:#}")),
    };
    if let Command::Cluster(a) = &cli.command {
        let (Some(o), Some(s)) = (
            port_range(a.base_port, a.peers),
            port_range(a.sip_base_port, a.peers),
        ) else {
            return usage("port range exceeds 65535".into());
        };
        if o.iter().any(|p| *p != 0 && s.contains(p)) {
            return usage("overlay and SIP port ranges overlap".into());
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sascribe: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Peer(a) => run_peer(a, config, &sip).await,
            Command::Cluster(a) => run_cluster(a, config, &sip).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sascribe: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}

/// Binds one peer (and its SIP front end) and starts it.
async fn start(
    listen: SocketAddr,
    advertise: Option<SocketAddr>,
    sip: Option<SocketAddr>,
    bootstrap: Option<SocketAddr>,
    id: NodeId,
    config: Config,
    settings: &SipSettings,
) -> anyhow::Result<RuntimeHandle> {
    let seed = random_u64();
    let mut node = HostLoop::bind_advertised(listen, advertise, id, config, seed)
        .await
        .with_context(|| format!("binding the overlay socket on {listen}"))?;
    if let Some(sip) = sip {
        node = frontend::attach(node, sip, advertise, settings).await?;
    }
    if let Some(via) = bootstrap {
        node.bootstrap(via);
    }
    Ok(node.spawn())
}

fn describe(h: &RuntimeHandle) -> String {
    let sip = h
        .sip_addr()
        .map_or_else(|| "-".to_string(), |a| a.to_string());
    format!("id {} overlay {} SIP {sip}", h.id(), h.overlay_addr())
}

async fn run_peer(a: PeerArgs, config: Config, settings: &SipSettings) -> anyhow::Result<()> {
    let id = a.id.unwrap_or_else(random_id);
    if let (Some(sip), None) = (a.sip, &settings.auth) {
        if !sip.ip().is_loopback() {
            tracing::warn!(
                %sip,
                "NO SIP AUTHENTICATION: the SIP front end listens beyond loopback without an \
                 [auth] table in the configuration, so anyone who reaches it can publish and \
                 watch anyone's presence (see README: Authentication)"
            );
        }
    }
    let h = start(
        a.listen,
        a.advertise,
        a.sip,
        a.bootstrap,
        id,
        config,
        settings,
    )
    .await?;
    println!("peer {}", describe(&h));
    let joined = async {
        loop {
            match h.wait_ready(Duration::from_secs(10)).await {
                Ok(()) => return Ok(()),
                Err(sascribe::runtime::ReadyError::Timeout) => {
                    tracing::warn!(bootstrap = ?a.bootstrap, "still joining the overlay");
                }
                Err(e) => return Err(anyhow::Error::from(e)),
            }
        }
    };
    let signal = shutdown_signal();
    tokio::pin!(signal);
    tokio::select! {
        r = joined => { r?; println!("ready"); }
        r = &mut signal => { r?; h.shutdown().await; return Ok(()); }
    }
    signal.await?;
    tracing::info!("shutting down");
    h.shutdown().await;
    Ok(())
}

async fn run_cluster(a: ClusterArgs, config: Config, settings: &SipSettings) -> anyhow::Result<()> {
    let n = a.peers;
    // Checked in main.
    let ports = port_range(a.base_port, n).context("overlay ports")?;
    let sip_ports = port_range(a.sip_base_port, n).context("SIP ports")?;
    let mut handles: Vec<RuntimeHandle> = Vec::new();
    let startup = async {
        for i in 0..usize::from(n) {
            let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, ports[i]));
            let sip = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, sip_ports[i])));
            let via = handles.first().map(RuntimeHandle::overlay_addr);
            let h = start(
                listen,
                None,
                sip,
                via,
                random_id(),
                config.clone(),
                settings,
            )
            .await?;
            h.wait_ready(Duration::from_secs(30))
                .await
                .with_context(|| format!("peer {i} did not join"))?;
            println!("peer {i} {}", describe(&h));
            handles.push(h);
        }
        anyhow::Ok(())
    };
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let started = tokio::select! {
        r = startup => r.map(|()| true),
        r = &mut signal => r.map(|()| false),
    };
    if let Ok(true) = started {
        println!("ready");
        let r = signal.await;
        tracing::info!("shutting down");
        leave_all(&handles).await;
        return r;
    }
    leave_all(&handles).await;
    started.map(|_| ())
}

async fn leave_all(handles: &[RuntimeHandle]) {
    for h in handles {
        h.shutdown().await;
    }
}

/// The SIP front end ([`sascribe::sip::SipEndpoint`]) on its own port, UDP and TCP.
mod frontend {
    use super::*;
    use sascribe::runtime::TokioClock;
    use sascribe::sip::SipConfig;
    use tokio::net::UdpSocket;

    /// Attaches the SIP front end on `listen` (a UDP socket and a TCP listener). Its own
    /// address (in `Via` and `Contact`) is the bound address, with the IP of `advertise` when
    /// `listen` is a wildcard.
    pub async fn attach(
        node: HostLoop<UdpSocket, TokioClock>,
        listen: SocketAddr,
        advertise: Option<SocketAddr>,
        settings: &SipSettings,
    ) -> anyhow::Result<HostLoop<UdpSocket, TokioClock>> {
        let packages = settings.packages.clone();
        let (domains, aliases) = settings.domains.clone();
        let auth = settings.auth.clone();
        if let Some(a) = &auth {
            tracing::info!(
                realm = %a.realm,
                users = a.users.len(),
                algorithms = ?a.algorithms.iter().map(|a| a.name()).collect::<Vec<_>>(),
                challenge = ?a.challenge,
                watch = match a.watch {
                    WatchPolicy::All => "all",
                    WatchPolicy::SameDomain => "same-domain",
                    WatchPolicy::AllowList(_) => "allow-list",
                },
                "SIP digest authentication on"
            );
        }
        node.bind_sip(listen, |mut local| {
            if local.ip().is_unspecified() {
                match advertise {
                    Some(a) => local.set_ip(a.ip()),
                    None => tracing::warn!(%local, "SIP front end bound to a wildcard address; Contact headers will not be routable (pass --advertise)"),
                }
            }
            let mut cfg = SipConfig::new(local);
            if !packages.is_empty() {
                cfg.event_packages = packages;
            }
            cfg.domains = domains;
            cfg.aliases = aliases;
            cfg.auth = auth;
            cfg
        })
        .await
        .with_context(|| format!("binding the SIP socket on {listen}"))
    }
}
