//! `sascribe`: run sa-Scribe peers.
//!
//! * `sascribe peer --listen ADDR [--bootstrap HOST:PORT]... [--sip ADDR] [--config FILE.toml]
//!   [--id HEX] [--metrics ADDR] [--admin ADDR]` runs one peer on its own UDP socket (and, with
//!   `--sip`, the SIP front end on UDP and TCP, on the same port). `--bootstrap` may be given
//!   several times (or comma-separated); hostnames are resolved, and they are tried in turn
//!   until one answers. `sascribe peer --config FILE --check-config` validates and exits.
//! * `sascribe cluster [--peers 8] [--base-port 7000] [--sip-base-port 5060] [--config FILE.toml]
//!   [--metrics ADDR] [--admin ADDR] [--insecure-no-key | --key-out FILE]` starts a local
//!   overlay on 127.0.0.1 in this process and prints one line per peer with the address user
//!   agents send SIP requests to (over UDP or TCP), `metrics http://ADDR/metrics` and `admin
//!   ADDR` when asked for, then `ready`. Its peers authenticate their datagrams with the
//!   configuration's `cluster_key`, or a key generated from the OS CSPRNG.
//! * `sascribe status ADDR [root URI [EVENT] | presentities | presentity URI [EVENT] | overlay]`
//!   asks a peer's (or a cluster's) admin endpoint; answers are JSON lines.
//! * `sascribe config --print-defaults` prints `sascribe.example.toml`: every key, its default.
//!
//! The configuration file's `[auth]` table turns on SIP digest authentication (off by default;
//! `sascribe peer` warns when its SIP front end listens beyond loopback without it).
//! `sascribe peer` warns too, and `sascribe status … overlay` shows a `warning`, when it runs
//! without a `cluster_key` on a non-loopback overlay address.
//!
//! Logs go to stderr (`RUST_LOG`, default `info`; `--log-format json` for JSON lines; colour
//! only on a terminal). Ctrl-C or SIGTERM makes every peer leave the overlay gracefully (its
//! subscription dialogs handed to nearby peers, which carry them on; its groups to their
//! replicas; a dialog no peer takes ends with `terminated;reason=deactivated` so that its
//! subscriber subscribes again), then the process exits 0. Invalid arguments or
//! configuration exit 2.

use anyhow::Context;

/// The peer allocates and frees per datagram and per SIP transaction from several runtime
/// threads, and holds 100,000s of small records: mimalloc returns freed pages to the system
/// (glibc's allocator kept the peak of a load as resident memory) and allocates faster
/// (`docs/PERFORMANCE.md`, "Memory").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand, ValueEnum};
use sascribe::runtime::impair::{self, ImpairSpec, Impaired, Impairment};
use sascribe::runtime::{
    admin, metrics, ConfigError, ConfigFile, HostLoop, RuntimeHandle, TokioClock,
};
use sascribe::sip::auth::{AuthConfig, WatchPolicy};
use sascribe::{Call, Config, NodeId};
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::IsTerminal;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::net::UdpSocket;

#[derive(Parser, Debug)]
#[command(
    name = "sascribe",
    version,
    about = "sa-Scribe: P2P SIP event notification over Pastry"
)]
struct Cli {
    /// Log format on stderr: text (coloured only on a terminal) or json (one object a line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one peer.
    Peer(PeerArgs),
    /// Run a local overlay of several peers on 127.0.0.1 in this process.
    Cluster(ClusterArgs),
    /// Ask a running peer's (or cluster's) admin endpoint (--admin): root, presentities,
    /// presentity, overlay. Answers are JSON lines.
    Status(StatusArgs),
    /// The configuration file: `--print-defaults` prints every key with its default.
    Config(ConfigArgs),
}

#[derive(clap::Args, Debug)]
struct PeerArgs {
    /// UDP address of the overlay socket.
    #[arg(long, value_name = "ADDR", required_unless_present = "check_config")]
    listen: Option<SocketAddr>,
    /// Overlay address (HOST:PORT, a hostname or an IP) of a peer to join through; repeat it
    /// (or separate with commas) to give several, tried in turn until one answers. None:
    /// start a new overlay.
    #[arg(long, value_name = "HOST:PORT", value_delimiter = ',')]
    bootstrap: Vec<String>,
    /// Address of the SIP front end, served over UDP and TCP (where user agents send requests).
    #[arg(long, value_name = "ADDR")]
    sip: Option<SocketAddr>,
    /// Address announced to other peers (default: the bound address of --listen).
    #[arg(long, value_name = "ADDR")]
    advertise: Option<SocketAddr>,
    /// Configuration file (TOML; every key: sascribe.example.toml, `sascribe config
    /// --print-defaults`).
    #[arg(long, value_name = "FILE.toml")]
    config: Option<PathBuf>,
    /// Overlay id: a 128-bit number in hex, up to 32 digits (default: random).
    #[arg(long, value_name = "HEX", value_parser = parse_id)]
    id: Option<NodeId>,
    /// Validate the configuration file (and the arguments), print `OK`, and exit.
    #[arg(long)]
    check_config: bool,
    /// For fault campaigns only: delay, jitter and duplicate the datagrams this peer sends
    /// (`delay=MS,jitter=MS,dup=PCT`) while switched on, by SIGUSR1 (SIGUSR2 switches it off;
    /// it starts off). Stands in for `tc netem` where the kernel lacks it.
    #[arg(long, value_name = "SPEC")]
    impair: Option<ImpairSpec>,
    #[command(flatten)]
    ops: OpsArgs,
}

/// Operator endpoints, off by default.
#[derive(clap::Args, Debug, Clone)]
struct OpsArgs {
    /// Serve Prometheus metrics (text format) on http://ADDR/metrics (port 0: any free port;
    /// the bound address is printed as `metrics http://ADDR/metrics`).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Serve the admin endpoint `sascribe status` talks to (loopback only, unless
    /// --admin-allow-remote; the bound address is printed as `admin ADDR`).
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// Allow --admin on a non-loopback address (it has no authentication).
    #[arg(long)]
    admin_allow_remote: bool,
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
    /// Configuration file applied to every peer. Without a `cluster_key` in it, the cluster
    /// generates one (32 bytes from the OS CSPRNG) unless --insecure-no-key.
    #[arg(long, value_name = "FILE.toml")]
    config: Option<PathBuf>,
    /// Run without a cluster key: overlay datagrams are neither authenticated nor protected
    /// against replay (anyone who reaches the overlay ports can inject messages).
    #[arg(long, conflicts_with = "key_out")]
    insecure_no_key: bool,
    /// Write the cluster key (generated or from --config) to FILE as a configuration line
    /// `cluster_key = "HEX"` (mode 0600), for `sascribe peer --config FILE` to join this
    /// cluster from another process.
    #[arg(long, value_name = "FILE")]
    key_out: Option<PathBuf>,
    #[command(flatten)]
    ops: OpsArgs,
}

#[derive(clap::Args, Debug)]
struct StatusArgs {
    /// The admin endpoint (--admin of `sascribe peer` or `sascribe cluster`).
    #[arg(value_name = "ADDR")]
    addr: String,
    /// `root URI [EVENT]` | `presentities` | `presentity URI [EVENT]` | `overlay` (default).
    #[arg(value_name = "QUERY", trailing_var_arg = true)]
    query: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct ConfigArgs {
    /// Print sascribe.example.toml: every key, its default and its meaning.
    #[arg(long)]
    print_defaults: bool,
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

/// What every peer is configured with beyond [`Config`]: its SIP front end and its runtime.
#[derive(Clone, Debug, Default)]
struct Settings {
    /// Event packages (empty: the front end's default).
    packages: Vec<String>,
    /// Served domains (empty: every domain) and their aliases.
    domains: (Vec<String>, Vec<(String, String)>),
    /// Digest authentication (`[auth]`), if on.
    auth: Option<AuthConfig>,
    /// Overload control and abuse limits.
    admission: sascribe::sip::admission::AdmissionConfig,
    /// Whether each peer sends on threads of its own (`send_threads`).
    send_threads: bool,
}

/// The overlay configuration and the SIP settings a configuration file asks for (files it
/// names are relative to its directory). Errors name the file.
fn load_config(path: Option<&PathBuf>) -> Result<(Config, Settings), String> {
    let Some(p) = path else {
        return Ok((Config::default(), Settings::default()));
    };
    let named = |e: ConfigError| match e {
        // These name their file already.
        ConfigError::Parse { .. } | ConfigError::File { .. } | ConfigError::Read { .. } => match &e
        {
            ConfigError::Read { source, .. } => format!("{e}: {source}"),
            _ => e.to_string(),
        },
        ConfigError::Invalid(_) => format!("{}: {e}", p.display()),
    };
    let file = ConfigFile::load(p).map_err(named)?;
    let dir = p.parent().map(PathBuf::from).unwrap_or_default();
    let sip = Settings {
        packages: file.event_packages().map_err(named)?,
        domains: file.domains().map_err(named)?,
        auth: file.auth(&dir).map_err(named)?,
        admission: file.admission().map_err(named)?,
        send_threads: file.send_threads.unwrap_or(false),
    };
    Ok((file.apply(Config::default()).map_err(named)?, sip))
}

/// Ports `base .. base + n` (all 0 when `base` is 0), or `None` when they overflow.
fn port_range(base: u16, n: u16) -> Option<Vec<u16>> {
    if base == 0 {
        return Some(vec![0; usize::from(n)]);
    }
    let last = base.checked_add(n - 1)?;
    Some((base..=last).collect())
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// An error in the arguments or the configuration: one line on stderr, exit 2.
fn invalid(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let config = match &cli.command {
        Command::Peer(a) => load_config(a.config.as_ref()),
        Command::Cluster(a) => load_config(a.config.as_ref()),
        Command::Config(a) => {
            if a.print_defaults {
                print!("{}", sascribe::runtime::EXAMPLE_CONFIG);
                return ExitCode::SUCCESS;
            }
            return invalid("config: nothing to do (try --print-defaults)");
        }
        Command::Status(_) => Ok(Default::default()),
    };
    let (config, sip) = match config {
        Ok(c) => c,
        Err(e) => return invalid(e),
    };
    match &cli.command {
        Command::Peer(a) => {
            if let Err(e) = check_peer_args(a) {
                return invalid(e);
            }
            if a.check_config {
                let what = a
                    .config
                    .as_ref()
                    .map_or_else(|| "defaults".to_string(), |p| p.display().to_string());
                println!("{what}: OK");
                return ExitCode::SUCCESS;
            }
        }
        Command::Cluster(a) => {
            let (Some(o), Some(s)) = (
                port_range(a.base_port, a.peers),
                port_range(a.sip_base_port, a.peers),
            ) else {
                return invalid("port range exceeds 65535");
            };
            if o.iter().any(|p| *p != 0 && s.contains(p)) {
                return invalid("overlay and SIP port ranges overlap");
            }
            if let Err(e) = check_ops(&a.ops) {
                return invalid(e);
            }
        }
        _ => {}
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
            Command::Status(a) => run_status(a).await,
            Command::Config(_) => Ok(()),
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

fn check_ops(o: &OpsArgs) -> Result<(), String> {
    match o.admin {
        Some(a) => admin::check_addr(a, o.admin_allow_remote),
        None => Ok(()),
    }
}

/// Checks that need no network: a bootstrap address that is this peer's own, the admin
/// address.
fn check_peer_args(a: &PeerArgs) -> Result<(), String> {
    check_ops(&a.ops)?;
    for b in &a.bootstrap {
        if let Ok(addr) = b.parse::<SocketAddr>() {
            if Some(addr) == a.listen || Some(addr) == a.advertise {
                return Err(format!(
                    "--bootstrap {addr} is this peer's own address (--listen/--advertise): name \
                     another peer of the overlay, or leave --bootstrap out to start a new one"
                ));
            }
        }
    }
    Ok(())
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed when this is called,
/// not when the future is first polled: a signal right after `ready` is printed must find them.
fn shutdown_signal() -> impl std::future::Future<Output = anyhow::Result<()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            let mut term = term.context("installing the SIGTERM handler")?;
            let mut int = int.context("installing the SIGINT handler")?;
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            Ok(())
        }
    }
    #[cfg(not(unix))]
    async {
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        Ok(())
    }
}

/// An "address in use" error, with a hint of who may hold the port.
fn bind_error(e: std::io::Error, what: &str, addr: SocketAddr, flag: &str) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        let who = if what == "SIP" {
            " (another SIP server on this host, e.g. Kamailio, Asterisk or a softphone, often \
             holds 5060)"
        } else {
            ""
        };
        anyhow::anyhow!(
            "binding the {what} socket on {addr}: the address is in use{who}; choose another \
             with {flag}"
        )
    } else {
        anyhow::Error::from(e).context(format!("binding the {what} socket on {addr}"))
    }
}

/// Binds one peer (and its SIP front end), ready to spawn.
async fn start(
    listen: SocketAddr,
    advertise: Option<SocketAddr>,
    sip: Option<(SocketAddr, &str)>,
    bootstrap: Option<SocketAddr>,
    id: NodeId,
    config: Config,
    settings: &Settings,
) -> anyhow::Result<HostLoop<UdpSocket, TokioClock>> {
    // The flag to change the port with: a cluster's SIP ports come from --sip-base-port.
    let overlay_flag = match sip {
        Some((_, "--sip-base-port")) => "--base-port",
        _ => "--listen",
    };
    let seed = random_u64();
    let sub_default = config.sub_default_expires;
    let mut node = HostLoop::bind_advertised(listen, advertise, id, config, seed)
        .await
        .map_err(|e| bind_error(e, "overlay", listen, overlay_flag))?
        .with_send_threads(settings.send_threads);
    if let Some((sip, flag)) = sip {
        node = frontend::attach(node, sip, advertise, settings, sub_default)
            .await
            .map_err(|e| bind_error(e, "SIP", sip, flag))?;
    }
    if let Some(via) = bootstrap {
        node.bootstrap(via);
    }
    Ok(node)
}

fn describe(h: &RuntimeHandle) -> String {
    let sip = h
        .sip_addr()
        .map_or_else(|| "-".to_string(), |a| a.to_string());
    format!("id {} overlay {} SIP {sip}", h.id(), h.overlay_addr())
}

/// Starts the metrics and admin endpoints asked for, and prints their addresses.
async fn start_ops(o: &OpsArgs, handles: &[RuntimeHandle]) -> anyhow::Result<()> {
    if let Some(addr) = o.metrics {
        let local = metrics::start(addr, handles.to_vec())
            .await
            .map_err(|e| bind_error(e, "metrics", addr, "--metrics"))?;
        println!("metrics http://{local}/metrics");
        tracing::info!(%local, "metrics endpoint");
    }
    if let Some(addr) = o.admin {
        let local = admin::start(addr, handles.to_vec())
            .await
            .map_err(|e| bind_error(e, "admin", addr, "--admin"))?;
        println!("admin {local}");
        tracing::info!(%local, "admin endpoint");
    }
    Ok(())
}

/// Resolves a bootstrap `HOST:PORT` (a hostname or an IP address).
async fn resolve(spec: &str) -> anyhow::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(spec)
        .await
        .with_context(|| format!("cannot resolve bootstrap {spec}"))?
        .collect();
    anyhow::ensure!(!addrs.is_empty(), "bootstrap {spec} resolves to no address");
    Ok(addrs)
}

/// Joins through the bootstrap peers in turn: each resolved address gets `patience`, then
/// the next is tried; round after round until one answers.
async fn join_any(h: &RuntimeHandle, specs: &[String], me: SocketAddr, patience: Duration) {
    loop {
        let mut tried = false;
        for spec in specs {
            let addrs = match resolve(spec).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("{e:#}");
                    continue;
                }
            };
            for addr in addrs.into_iter().filter(|a| *a != me) {
                tried = true;
                tracing::info!(bootstrap = %spec, %addr, "joining the overlay through {spec} ({addr})");
                if h.call(Call::Bootstrap(addr)).await.is_err() {
                    return;
                }
                match h.wait_ready(patience).await {
                    Ok(()) => return,
                    Err(sascribe::runtime::ReadyError::Timeout) => tracing::warn!(
                        bootstrap = %spec,
                        %addr,
                        "no answer from bootstrap {spec} ({addr}) within {} s; trying the next",
                        patience.as_secs()
                    ),
                    Err(_) => return,
                }
            }
        }
        if !tried {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

async fn run_peer(a: PeerArgs, config: Config, settings: &Settings) -> anyhow::Result<()> {
    let id = a.id.unwrap_or_else(random_id);
    let listen = a.listen.context("--listen is required")?;
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
    let patience = Duration::from_millis((3 * config.bootstrap_retry).max(3_000));
    // A peer that will join starts joining before its loop runs: until the join completes it
    // answers SIP with 503 and holds what it would route, rather than serving for a moment as
    // a one-peer overlay, the root of every group with empty records (a restarted peer once
    // answered a PUBLISH 412 that way, its ETag acknowledged just before). `join_any` then
    // goes on through every bootstrap given (a name that does not resolve within `patience`
    // is left to it).
    let first = match a.bootstrap.first() {
        Some(spec) => tokio::time::timeout(patience, resolve(spec))
            .await
            .ok()
            .and_then(Result::ok)
            .and_then(|v| {
                v.into_iter()
                    .find(|x| *x != listen && Some(*x) != a.advertise)
            }),
        None => None,
    };
    let h = start(
        listen,
        a.advertise,
        a.sip.map(|s| (s, "--sip")),
        first,
        id,
        config,
        settings,
    )
    .await?;
    let h = match a.impair {
        Some(spec) => {
            let imp = Impairment::new(spec, random_u64());
            impair::switch_on_signals(imp.clone()).context("installing the SIGUSR1/2 handlers")?;
            tracing::warn!(%spec, "NETWORK IMPAIRMENT armed (--impair): SIGUSR1 switches it on, SIGUSR2 off; for fault campaigns only");
            h.map_transport(|s| Impaired::new(s, imp.clone())).spawn()
        }
        None => h.spawn(),
    };
    println!("peer {}", describe(&h));
    start_ops(&a.ops, std::slice::from_ref(&h)).await?;
    let me = a.advertise.unwrap_or(h.overlay_addr());
    let joined = async {
        if a.bootstrap.is_empty() {
            tracing::info!("started a new overlay (no --bootstrap)");
            return;
        }
        join_any(&h, &a.bootstrap, me, patience).await;
    };
    let signal = shutdown_signal();
    tokio::pin!(signal);
    tokio::select! {
        () = joined => { println!("ready"); }
        r = &mut signal => { r?; h.shutdown().await; return Ok(()); }
    }
    signal.await?;
    tracing::info!("shutting down");
    h.shutdown().await;
    Ok(())
}

/// The cluster's key: the configuration's, else (unless `--insecure-no-key`) a new one from the
/// OS CSPRNG; written to `--key-out` when asked.
fn cluster_key(a: &ClusterArgs, mut config: Config) -> anyhow::Result<Config> {
    if config.cluster_key.is_none() && !a.insecure_no_key {
        let mut key = vec![0u8; 32];
        getrandom::fill(&mut key)
            .map_err(|e| anyhow::anyhow!("OS randomness for the cluster key: {e}"))?;
        config.cluster_key = Some(key);
        tracing::info!("generated a cluster key (32 bytes from the OS); --key-out FILE writes it");
    }
    if a.insecure_no_key {
        tracing::warn!("--insecure-no-key: overlay datagrams are not authenticated");
    }
    if let Some(path) = &a.key_out {
        let key = config
            .cluster_key
            .as_deref()
            .context("--key-out without a cluster key")?;
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        write_private(path, format!("cluster_key = \"{hex}\"\n").as_bytes())
            .with_context(|| format!("writing the cluster key to {}", path.display()))?;
    }
    Ok(config)
}

/// Writes `bytes` to a new file only its owner can read (on Unix).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)?.write_all(bytes)
}

async fn run_cluster(a: ClusterArgs, config: Config, settings: &Settings) -> anyhow::Result<()> {
    let config = cluster_key(&a, config)?;
    let n = a.peers;
    // Checked in main.
    let ports = port_range(a.base_port, n).context("overlay ports")?;
    let sip_ports = port_range(a.sip_base_port, n).context("SIP ports")?;
    let mut handles: Vec<RuntimeHandle> = Vec::new();
    let startup = async {
        for i in 0..usize::from(n) {
            let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, ports[i]));
            let sip = SocketAddr::from((Ipv4Addr::LOCALHOST, sip_ports[i]));
            let via = handles.first().map(RuntimeHandle::overlay_addr);
            let h = start(
                listen,
                None,
                Some((sip, "--sip-base-port")),
                via,
                random_id(),
                config.clone(),
                settings,
            )
            .await?
            .spawn();
            h.wait_ready(Duration::from_secs(30))
                .await
                .with_context(|| format!("peer {i} did not join"))?;
            println!("peer {i} {}", describe(&h));
            handles.push(h);
        }
        start_ops(&a.ops, &handles).await?;
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

async fn run_status(a: StatusArgs) -> anyhow::Result<()> {
    let cmd = if a.query.is_empty() {
        "overlay".to_string()
    } else {
        a.query.join(" ")
    };
    let out = admin::query(&a.addr, &cmd)
        .await
        .with_context(|| format!("asking the admin endpoint at {}", a.addr))?;
    print!("{out}");
    if out.lines().any(|l| l.starts_with("{\"error\"")) {
        anyhow::bail!("the admin endpoint answered an error");
    }
    Ok(())
}

async fn leave_all(handles: &[RuntimeHandle]) {
    for h in handles {
        h.shutdown().await;
    }
}

/// The SIP front end ([`sascribe::sip::SipEndpoint`]) on its own port, UDP and TCP.
mod frontend {
    use super::*;
    use sascribe::sip::SipConfig;

    /// Attaches the SIP front end on `listen` (a UDP socket and a TCP listener). Its own
    /// address (in `Via` and `Contact`) is the bound address, with the IP of `advertise` when
    /// `listen` is a wildcard.
    pub async fn attach(
        node: HostLoop<UdpSocket, TokioClock>,
        listen: SocketAddr,
        advertise: Option<SocketAddr>,
        settings: &Settings,
        sub_default_expires: u32,
    ) -> std::io::Result<HostLoop<UdpSocket, TokioClock>> {
        let packages = settings.packages.clone();
        let (domains, aliases) = settings.domains.clone();
        let auth = settings.auth.clone();
        let admission = settings.admission.clone();
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
            // The expiry bounds are the overlay configuration's (one source); only the
            // default of a SUBSCRIBE without Expires is the front end's to apply.
            cfg.default_expires = sub_default_expires;
            if !packages.is_empty() {
                cfg.event_packages = packages;
            }
            cfg.domains = domains;
            cfg.aliases = aliases;
            cfg.auth = auth;
            cfg.admission = admission;
            cfg
        })
        .await
    }
}
