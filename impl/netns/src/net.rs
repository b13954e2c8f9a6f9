//! The lab: network namespaces on one machine, one per peer plus one for the load client,
//! each joined by a veth pair to a bridge in a namespace of its own, where an nftables
//! `bridge` table drops what the faults say (random UDP loss, partitions, one-way ones too).
//! Delay, jitter, duplication and reordering come from the peers themselves: each runs with
//! `--impair SPEC` and impairs what it sends between a `SIGUSR1` and a `SIGUSR2` (the kernel
//! here has no `sch_netem` for `tc netem`).
//! Addresses (10.77.0.0/24) exist only inside these namespaces. Dropping the lab kills every
//! process it started and deletes its namespaces.

use crate::history::{now_us, Event, Writer};
use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// The prefix of every namespace a campaign creates (`sxc<pid>-…`); `cleanup` removes those
/// whose owner is gone.
pub const PREFIX: &str = "sxc";

/// Overlay port of every peer (each has its own address).
pub const OVERLAY_PORT: u16 = 7000;
/// SIP port of every peer.
pub const SIP_PORT: u16 = 5060;
/// The admin endpoint inside each peer's namespace.
const ADMIN: &str = "127.0.0.1:9000";

/// Runs `ip`/`nft` (or any tool) synchronously, failing with its stderr.
pub fn sh(args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args[0]))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One `sascribe peer` in its namespace.
pub struct Peer {
    pub ns: String,
    pub ip: Ipv4Addr,
    pub id: u128,
    child: Option<Child>,
    pub stopped: bool,
    starts: u32,
}

impl Peer {
    /// Its SIP address.
    pub fn sip(&self) -> SocketAddr {
        SocketAddr::from((self.ip, SIP_PORT))
    }
    /// Its overlay address.
    pub fn overlay(&self) -> SocketAddr {
        SocketAddr::from((self.ip, OVERLAY_PORT))
    }
    /// Running (possibly stopped)?
    pub fn up(&self) -> bool {
        self.child.is_some()
    }
    fn pid(&self) -> Option<Pid> {
        self.child.as_ref()?.id().map(|p| Pid::from_raw(p as i32))
    }
}

/// The namespaces, the bridge, the peers and the fault log of one schedule.
pub struct Lab {
    pub name: String,
    namespaces: Vec<String>,
    pub peers: Vec<Peer>,
    pub client_ns: String,
    pub client_ip: Ipv4Addr,
    bridge_ns: String,
    sascribe: PathBuf,
    dir: PathBuf,
    faults: Writer,
    rules: Vec<String>,
    /// `sascribe peer --impair` of every peer, and whether the impairment is on.
    impair: String,
    impaired: bool,
}

impl Lab {
    /// Creates the namespaces (`PREFIX<pid>-<tag>-…`) and the bridge; starts no peer yet.
    /// `ids` are the peers' overlay ids.
    pub fn create(
        tag: &str,
        ids: &[u128],
        sascribe: &Path,
        impair: &str,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let name = format!("{PREFIX}{}-{tag}", std::process::id());
        std::fs::create_dir_all(dir)?;
        let mut lab = Lab {
            bridge_ns: format!("{name}-br"),
            client_ns: format!("{name}-c"),
            client_ip: Ipv4Addr::new(10, 77, 0, 200),
            name,
            namespaces: Vec::new(),
            peers: Vec::new(),
            sascribe: sascribe.to_path_buf(),
            dir: dir.to_path_buf(),
            faults: Writer::open(&dir.join("faults.jsonl"))?,
            rules: Vec::new(),
            impair: impair.to_string(),
            impaired: false,
        };
        let br = lab.bridge_ns.clone();
        lab.add_ns(&br)?;
        sh(&["ip", "-n", &br, "link", "add", "br0", "type", "bridge"])?;
        sh(&["ip", "-n", &br, "link", "set", "br0", "up"])?;
        nft(
            &br,
            "table bridge sx {\n chain filt {\n  type filter hook forward priority 0; policy accept;\n }\n}\n",
        )?;
        for (i, id) in ids.iter().enumerate() {
            let ns = format!("{}-p{i}", lab.name);
            let ip = Ipv4Addr::new(10, 77, 0, i as u8 + 1);
            lab.attach(&ns, ip, &format!("v{i}"))?;
            lab.peers.push(Peer {
                ns,
                ip,
                id: *id,
                child: None,
                stopped: false,
                starts: 0,
            });
        }
        let (cns, cip) = (lab.client_ns.clone(), lab.client_ip);
        lab.attach(&cns, cip, "vc")?;
        Ok(lab)
    }

    fn add_ns(&mut self, ns: &str) -> anyhow::Result<()> {
        sh(&["ip", "netns", "add", ns])?;
        self.namespaces.push(ns.to_string());
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// A namespace with `eth0` = `ip`/24, its veth peer `port` on the bridge.
    fn attach(&mut self, ns: &str, ip: Ipv4Addr, port: &str) -> anyhow::Result<()> {
        self.add_ns(ns)?;
        let br = &self.bridge_ns;
        sh(&[
            "ip", "-n", br, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns",
            ns,
        ])?;
        sh(&["ip", "-n", br, "link", "set", port, "master", "br0"])?;
        sh(&["ip", "-n", br, "link", "set", port, "up"])?;
        sh(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "eth0",
        ])?;
        sh(&["ip", "-n", ns, "link", "set", "eth0", "up"])?;
        Ok(())
    }

    /// Logs a fault (or the heal) to the fault history.
    pub fn log(&mut self, e: Event) {
        if let Err(err) = self.faults.write(&e) {
            eprintln!("fault history: {err:#}");
        }
    }

    fn log_fault(&mut self, what: String, peer: Option<usize>) {
        let peer = peer.map(|i| self.peers[i].sip().to_string());
        self.log(Event::Fault {
            t: now_us(),
            what,
            peer,
        });
    }

    /// Starts peer `i` (bootstrapping through every other peer in turn, unless it is the
    /// first) and waits until it prints `ready` (at most `within`; not at all if zero).
    pub async fn start(&mut self, i: usize, first: bool, within: Duration) -> anyhow::Result<()> {
        let others: Vec<String> = self
            .peers
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| p.overlay().to_string())
            .collect();
        let p = &mut self.peers[i];
        p.starts += 1;
        let out_path = self.dir.join(format!("p{i}.{}.out", p.starts));
        let err_path = self.dir.join(format!("p{i}.{}.log", p.starts));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &p.ns])
            .arg(&self.sascribe)
            .args(["peer", "--listen", &p.overlay().to_string()])
            .args(["--sip", &p.sip().to_string()])
            .args(["--id", &format!("{:032x}", p.id)])
            .args(["--admin", ADMIN])
            .args(["--impair", &self.impair]);
        if !first {
            cmd.args(["--bootstrap", &others.join(",")]);
        }
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path)?)
            .stderr(std::fs::File::create(&err_path)?)
            .kill_on_drop(true);
        p.child = Some(cmd.spawn().context("starting a peer")?);
        p.stopped = false;
        if self.impaired {
            // It prints `peer …` once its signal handlers are in place (an earlier SIGUSR1
            // would kill it).
            self.wait_line(i, &out_path, &err_path, "peer ", Duration::from_secs(20))
                .await?;
            self.signal(i, Signal::SIGUSR1);
        }
        if within.is_zero() {
            return Ok(());
        }
        self.wait_line(i, &out_path, &err_path, "ready", within)
            .await
    }

    /// Waits until peer `i` prints a line starting with `prefix` (at most `within`).
    async fn wait_line(
        &mut self,
        i: usize,
        out_path: &Path,
        err_path: &Path,
        prefix: &str,
        within: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let out = std::fs::read_to_string(out_path).unwrap_or_default();
            if out.lines().any(|l| l.starts_with(prefix)) {
                return Ok(());
            }
            if let Some(c) = self.peers[i].child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    bail!(
                        "peer {i} exited at start ({st}); see {}",
                        err_path.display()
                    );
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "peer {i} did not print {prefix:?} within {within:?}; see {}",
                    err_path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL to peer `i` (continued first if stopped, so nothing lingers).
    pub async fn kill(&mut self, i: usize) {
        self.log_fault(format!("kill p{i}"), Some(i));
        let p = &mut self.peers[i];
        if let Some(mut c) = p.child.take() {
            let _ = c.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(5), c.wait()).await;
        }
        p.stopped = false;
    }

    /// Kills peer `i` if it runs, then starts it again (same id and address). While drop
    /// rules are in place the peer may be unable to join until they are cleared, so it is not
    /// waited for (the checker's bounds count from the heal).
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        if self.peers[i].up() {
            self.kill(i).await;
        }
        self.log_fault(format!("restart p{i}"), Some(i));
        let within = if self.rules.is_empty() {
            Duration::from_secs(20)
        } else {
            Duration::ZERO
        };
        self.start(i, false, within).await
    }

    /// SIGTERM to peer `i` (resumed first if paused): it leaves the overlay in an orderly way
    /// (it hands its dialogs over: at most 4 s); waits up to 8 s for it to exit (then SIGKILL),
    /// and starts it again (same id and address).
    pub async fn orderly_restart(&mut self, i: usize) -> anyhow::Result<()> {
        if self.peers[i].stopped {
            self.pause(i, false);
        }
        self.log_fault(format!("SIGTERM p{i}"), Some(i));
        if let Some(mut c) = self.peers[i].child.take() {
            if let Some(pid) = c.id() {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
            if tokio::time::timeout(Duration::from_secs(8), c.wait())
                .await
                .is_err()
            {
                eprintln!("peer {i} still running 8 s after SIGTERM: killed");
                let _ = c.start_kill();
                let _ = tokio::time::timeout(Duration::from_secs(5), c.wait()).await;
            }
        }
        self.restart(i).await
    }

    /// SIGSTOP (pause) or SIGCONT (resume) to peer `i`.
    pub fn pause(&mut self, i: usize, stop: bool) {
        let sig = if stop {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        self.log_fault(format!("{sig} p{i}"), Some(i));
        if self.signal(i, sig) {
            self.peers[i].stopped = stop;
        }
    }

    /// Sends `sig` to peer `i`'s process; whether it runs (a signal was sent).
    fn signal(&self, i: usize, sig: Signal) -> bool {
        let Some(pid) = self.peers[i].pid() else {
            return false;
        };
        let _ = kill(pid, sig);
        true
    }

    /// Switches every running peer's impairment on (delay, jitter, duplication of what it
    /// sends) or off. Peers started while it is on get it too.
    pub fn impair(&mut self, on: bool) {
        if on == self.impaired {
            return;
        }
        self.impaired = on;
        let what = if on {
            format!("impair {}", self.impair)
        } else {
            "impair off".to_string()
        };
        self.log_fault(what, None);
        let sig = if on { Signal::SIGUSR1 } else { Signal::SIGUSR2 };
        for i in 0..self.peers.len() {
            self.signal(i, sig);
        }
    }

    /// Drops `pct` % of all UDP crossing the bridge (0: none).
    pub fn loss(&mut self, pct: u8) -> anyhow::Result<()> {
        self.rules
            .retain(|r| !r.starts_with("meta l4proto udp numgen"));
        if pct > 0 {
            self.rules.push(format!(
                "meta l4proto udp numgen random mod 100 < {pct} drop"
            ));
        }
        self.log_fault(format!("loss {pct}%"), None);
        self.apply()
    }

    /// Drops every packet from the peers `from` to the peers `to` (one way); call twice for
    /// a symmetric partition.
    pub fn block(&mut self, from: &[usize], to: &[usize]) -> anyhow::Result<()> {
        let set = |v: &[usize]| -> String {
            let ips: Vec<String> = v.iter().map(|i| self.peers[*i].ip.to_string()).collect();
            format!("{{ {} }}", ips.join(", "))
        };
        self.rules
            .push(format!("ip saddr {} ip daddr {} drop", set(from), set(to)));
        self.log_fault(format!("block {from:?} -> {to:?}"), None);
        self.apply()
    }

    /// Removes every drop rule.
    pub fn clear(&mut self) -> anyhow::Result<()> {
        self.rules.clear();
        self.log_fault("clear rules".into(), None);
        self.apply()
    }

    fn apply(&self) -> anyhow::Result<()> {
        let mut script = String::from("flush chain bridge sx filt\n");
        for r in &self.rules {
            script.push_str(&format!("add rule bridge sx filt {r}\n"));
        }
        nft(&self.bridge_ns, &script)
    }

    /// Resumes stopped peers, restarts killed ones, clears the rules, and logs the heal.
    pub async fn heal(&mut self) -> anyhow::Result<()> {
        for i in 0..self.peers.len() {
            if self.peers[i].stopped {
                self.pause(i, false);
            }
        }
        self.clear()?;
        self.impair(false);
        for i in 0..self.peers.len() {
            if !self.peers[i].up() {
                self.restart(i).await?;
            }
        }
        self.log(Event::Heal { t: now_us() });
        Ok(())
    }

    /// The gid of `uri` (presence) as a running peer's admin endpoint computes it.
    pub async fn gid(&self, uri: &str) -> anyhow::Result<u128> {
        let p = self
            .peers
            .iter()
            .find(|p| p.up() && !p.stopped)
            .context("no peer up")?;
        let out = tokio::time::timeout(
            Duration::from_secs(10),
            Command::new("ip")
                .args(["netns", "exec", &p.ns])
                .arg(&self.sascribe)
                .args(["status", ADMIN, "root", uri, "presence"])
                .kill_on_drop(true)
                .output(),
        )
        .await
        .context("sascribe status timed out")??;
        let text = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(text.trim())
            .with_context(|| format!("sascribe status root: {text}"))?;
        let gid = v["gid"].as_str().context("no gid in the status answer")?;
        Ok(u128::from_str_radix(gid, 16)?)
    }

    /// The peers ordered by ring distance of their ids to `gid`: the root first, then its
    /// successors (the replicas the takeover would pick).
    pub fn ring(&self, gid: u128) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.peers.len()).collect();
        v.sort_by_key(|i| {
            let d = self.peers[*i].id.wrapping_sub(gid);
            d.min(gid.wrapping_sub(self.peers[*i].id))
        });
        v
    }

    /// A command run inside the client's namespace.
    pub fn client_command(&self, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.client_ns]).arg(program);
        c
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for p in &mut self.peers {
            if let Some(c) = p.child.as_mut() {
                let _ = c.start_kill();
            }
        }
        for ns in self.namespaces.iter().rev() {
            remove_ns(ns);
        }
    }
}

fn nft(ns: &str, script: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut c = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft (apt-get install nftables)")?;
    c.stdin
        .take()
        .context("nft stdin")?
        .write_all(script.as_bytes())?;
    let out = c.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft failed: {}\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Kills whatever still runs in `ns` and deletes it.
fn remove_ns(ns: &str) {
    if let Ok(pids) = sh(&["ip", "netns", "pids", ns]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    let _ = sh(&["ip", "netns", "del", ns]);
}

/// Removes the namespaces of campaigns whose process is gone (a campaign killed with
/// SIGKILL cannot clean up after itself). Returns how many were removed.
pub fn cleanup_stale() -> usize {
    let Ok(list) = sh(&["ip", "netns", "list"]) else {
        return 0;
    };
    let mut n = 0;
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let alive = pid
            .parse::<i32>()
            .ok()
            .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists() && p != 0);
        let mine = pid == std::process::id().to_string();
        if !alive || mine {
            remove_ns(name);
            n += 1;
        }
    }
    n
}
