//! The systems under test: Kamailio 5.6 presence (Debian packages, `bench/kamailio-presence.cfg`)
//! and `sascribe cluster --peers N`, each started fresh on free loopback ports and stopped (its
//! whole process group) when its [`Running`] is dropped.

use crate::sip::Client;
use crate::sys::{self, ChildGuard, ProcMem};
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::task::JoinHandle;

/// A target as named on the command line: `kamailio` or `sascribe-N`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Spec {
    Kamailio,
    Sascribe { peers: u16 },
}

impl Spec {
    pub fn name(&self) -> String {
        match self {
            Spec::Kamailio => "kamailio".into(),
            Spec::Sascribe { peers } => format!("sascribe-{peers}"),
        }
    }
}

impl std::str::FromStr for Spec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "kamailio" {
            return Ok(Spec::Kamailio);
        }
        s.strip_prefix("sascribe-")
            .or_else(|| s.strip_prefix("sascribe:"))
            .and_then(|n| n.parse().ok())
            .filter(|n| (1..=1024).contains(n))
            .map(|peers| Spec::Sascribe { peers })
            .ok_or_else(|| format!("unknown target {s:?} (kamailio or sascribe-N)"))
    }
}

/// Where the programs are and how Kamailio is sized.
#[derive(Clone, Debug)]
pub struct Env {
    pub sascribe: PathBuf,
    pub kamailio: Option<PathBuf>,
    pub kamcmd: Option<PathBuf>,
    pub kamailio_cfg: PathBuf,
    /// The sascribe configuration (`bench/sascribe.toml`).
    pub sascribe_cfg: PathBuf,
    pub kamailio_workers: u32,
    pub kamailio_shm_mb: u32,
    /// Scratch directory for logs and control sockets.
    pub tmp: PathBuf,
}

impl Env {
    /// Checks that what `specs` need is installed, with a clear message if not.
    pub fn check(&self, specs: &[Spec]) -> anyhow::Result<()> {
        if specs.iter().any(|s| matches!(s, Spec::Sascribe { .. })) && !self.sascribe.is_file() {
            bail!(
                "{} not found: build it with `cargo build --release -p sascribe` (or pass --sascribe PATH)",
                self.sascribe.display()
            );
        }
        if specs.contains(&Spec::Kamailio) {
            if self.kamailio.is_none() {
                bail!("kamailio not found: apt-get install -y kamailio kamailio-presence-modules (or run with --install)");
            }
            let modules = Path::new("/usr/lib/x86_64-linux-gnu/kamailio/modules/presence_xml.so");
            if !modules.is_file() {
                bail!(
                    "{} not found: apt-get install -y kamailio-presence-modules",
                    modules.display()
                );
            }
            if !self.kamailio_cfg.is_file() {
                bail!("{} not found", self.kamailio_cfg.display());
            }
        }
        Ok(())
    }
}

/// Memory of a running target at one moment.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct MemSnapshot {
    pub procs: ProcMem,
    /// Kamailio only: `kamcmd core.shmmem` real_used (bytes of the -m shared memory in use).
    pub shm_real_used: Option<u64>,
}

/// A started target. Dropping it stops it.
pub struct Running {
    pub name: String,
    pub addrs: Vec<SocketAddr>,
    /// Every UDP port the target listens on (SIP, and overlay for sascribe).
    pub ports: Vec<u16>,
    pub log: PathBuf,
    guard: ChildGuard,
    ctl: Option<(PathBuf, String)>,
    _drain: Option<JoinHandle<()>>,
}

impl Running {
    /// An error (with the end of the target's log) if it has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.guard.exited() {
            bail!(
                "{} exited ({status}); end of {}:\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log)
            );
        }
        Ok(())
    }

    /// Datagrams dropped so far on the target's sockets (full receive buffers).
    pub fn socket_drops(&self) -> Option<u64> {
        sys::udp_socket_drops(&self.ports)
    }

    pub async fn memory(&mut self) -> MemSnapshot {
        let procs = sys::group_memory(self.guard.pgid());
        let shm_real_used = match &self.ctl {
            Some((kamcmd, sock)) => sys::output(
                kamcmd,
                &["-s", sock, "core.shmmem"],
                Duration::from_secs(10),
            )
            .await
            .ok()
            .and_then(|o| shm_field(&o, "real_used")),
            None => None,
        };
        MemSnapshot {
            procs,
            shm_real_used,
        }
    }

    pub fn stop(mut self) {
        self.guard.stop(Duration::from_secs(5));
    }
}

/// `key: N` in kamcmd's core.shmmem output.
pub fn shm_field(out: &str, key: &str) -> Option<u64> {
    out.lines().find_map(|l| {
        let (k, v) = l.trim().split_once(':')?;
        (k.trim() == key).then(|| v.trim().parse().ok())?
    })
}

pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Starts `spec` and waits until every SIP address answers OPTIONS.
pub async fn start(spec: &Spec, env: &Env, probe: &Client) -> anyhow::Result<Running> {
    let mut running = match spec {
        Spec::Kamailio => start_kamailio(env).await?,
        Spec::Sascribe { peers } => start_sascribe(env, *peers).await?,
    };
    for &a in &running.addrs.clone() {
        if let Err(e) = probe.wait_up(a, Duration::from_secs(20)).await {
            running.check_alive()?;
            return Err(e).with_context(|| format!("{} did not come up", running.name));
        }
    }
    Ok(running)
}

fn unique_name(env: &Env, stem: &str, ext: &str) -> PathBuf {
    for i in 0.. {
        let p = env.tmp.join(format!("{stem}-{i}.{ext}"));
        if !p.exists() {
            return p;
        }
    }
    unreachable!()
}

async fn start_kamailio(env: &Env) -> anyhow::Result<Running> {
    let kamailio = env.kamailio.as_ref().context("kamailio not installed")?;
    let port = sys::free_udp_port()?;
    let log = unique_name(env, "kamailio", "log");
    let ctl = unique_name(env, "kamailio", "ctl");
    let mut cmd = Command::new(kamailio);
    cmd.arg("-f")
        .arg(&env.kamailio_cfg)
        .args(["-DD", "-E", "-M", "32", "-m"])
        .arg(env.kamailio_shm_mb.to_string())
        .args(["-A", &format!("SIP_PORT={port}")])
        .args(["-A", &format!("CTL_SOCKET=\"unix:{}\"", ctl.display())])
        .args(["-A", &format!("WORKERS={}", env.kamailio_workers)]);
    let guard = ChildGuard::spawn("kamailio", cmd, &log, false)?;
    let ctl = env
        .kamcmd
        .clone()
        .map(|k| (k, format!("unix:{}", ctl.display())));
    Ok(Running {
        name: Spec::Kamailio.name(),
        addrs: vec![sys::localhost(port)],
        ports: vec![port],
        log,
        guard,
        ctl,
        _drain: None,
    })
}

/// The address after `key` in a `sascribe cluster` line
/// `peer I id X overlay 127.0.0.1:O SIP 127.0.0.1:P` (key `SIP` or `overlay`).
pub fn cluster_addr(line: &str, key: &str) -> Option<SocketAddr> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == key)?;
    words.next()?.parse().ok()
}

async fn start_sascribe(env: &Env, peers: u16) -> anyhow::Result<Running> {
    let log = unique_name(env, &format!("sascribe-{peers}"), "log");
    let mut cmd = Command::new(&env.sascribe);
    cmd.args(["cluster", "--peers", &peers.to_string()])
        .args(["--base-port", "0", "--sip-base-port", "0"])
        .arg("--config")
        .arg(&env.sascribe_cfg)
        // Warnings and errors only, like Kamailio's debug=1.
        .env("RUST_LOG", "warn");
    let name = Spec::Sascribe { peers }.name();
    let mut guard = ChildGuard::spawn(&name, cmd, &log, true)?;
    let stdout = guard
        .child_mut()
        .stdout
        .take()
        .context("cluster stdout not piped")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut addrs = Vec::new();
    let mut ports = Vec::new();
    let startup = async {
        while let Some(line) = lines.next_line().await? {
            if line.trim() == "ready" {
                return anyhow::Ok(true);
            }
            if let Some(a) = cluster_addr(&line, "SIP") {
                addrs.push(a);
                ports.push(a.port());
            }
            if let Some(a) = cluster_addr(&line, "overlay") {
                ports.push(a.port());
            }
        }
        Ok(false)
    };
    // The cluster starts its peers one after the other (each may wait up to 30 s to join).
    let ready = tokio::time::timeout(Duration::from_secs(60 + 5 * u64::from(peers)), startup)
        .await
        .with_context(|| format!("{name} printed no `ready`"))??;
    if !ready || addrs.len() != usize::from(peers) {
        bail!(
            "{name} did not start ({} of {peers} SIP addresses); end of {}:\n{}",
            addrs.len(),
            log.display(),
            log_tail(&log)
        );
    }
    // Keep reading stdout so the cluster never blocks on a full pipe.
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Running {
        name,
        addrs,
        ports,
        log,
        guard,
        ctl: None,
        _drain: Some(drain),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names_round_trip() {
        for s in ["kamailio", "sascribe-1", "sascribe-8"] {
            assert_eq!(s.parse::<Spec>().unwrap().name(), s);
        }
        assert_eq!(
            "sascribe:3".parse::<Spec>(),
            Ok(Spec::Sascribe { peers: 3 })
        );
        assert!("sascribe-0".parse::<Spec>().is_err());
        assert!("opensips".parse::<Spec>().is_err());
    }

    #[test]
    fn cluster_lines_give_sip_and_overlay_addresses() {
        let l = "peer 3 id 9f00aa overlay 127.0.0.1:41000 SIP 127.0.0.1:41001";
        assert_eq!(
            cluster_addr(l, "SIP"),
            Some("127.0.0.1:41001".parse().unwrap())
        );
        assert_eq!(
            cluster_addr(l, "overlay"),
            Some("127.0.0.1:41000".parse().unwrap())
        );
        let no_sip = "peer 0 id 1 overlay 127.0.0.1:7000 SIP -";
        assert_eq!(cluster_addr(no_sip, "SIP"), None);
        assert_eq!(cluster_addr("ready", "SIP"), None);
    }

    #[test]
    fn kamcmd_shmmem_fields() {
        let out = "{\n\ttotal: 268435456\n\tfree: 265509248\n\tused: 2631256\n\treal_used: 2926208\n\tmax_used: 2926208\n}\n";
        assert_eq!(shm_field(out, "real_used"), Some(2_926_208));
        assert_eq!(shm_field(out, "used"), Some(2_631_256));
        assert_eq!(shm_field(out, "fragments"), None);
    }
}
