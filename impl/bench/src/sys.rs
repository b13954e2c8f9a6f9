//! Processes, ports, memory of process groups, and what machine and versions a run used.

use anyhow::{bail, Context};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// A long-running child (Kamailio, a sascribe cluster) in its own process group. Dropping the
/// guard sends SIGTERM to the whole group, waits up to 3 s, then sends SIGKILL: no process
/// outlives the benchmark, whether it ends normally, on an error or on Ctrl-C.
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
    pgid: Pid,
}

impl ChildGuard {
    /// Spawns `cmd` as the leader of a new process group, stderr to `log`; stdout piped (the
    /// caller must keep reading it) or to `log` as well.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        log: &Path,
        pipe_stdout: bool,
    ) -> anyhow::Result<Self> {
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("creating the log file {}", log.display()))?;
        let stdout = if pipe_stdout {
            Stdio::piped()
        } else {
            Stdio::from(log_file.try_clone()?)
        };
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log_file)
            .kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        let pid = child.id().context("the child has no pid")?;
        let pgid = Pid::from_raw(i32::try_from(pid).context("pid out of range")?);
        Ok(Self {
            name: name.to_string(),
            child: Some(child),
            pgid,
        })
    }

    pub fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("child present until drop")
    }

    /// The process group id (= the leader's pid).
    pub fn pgid(&self) -> i32 {
        self.pgid.as_raw()
    }

    /// Whether the leader has exited (its status, if so).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child_mut().try_wait().ok().flatten()
    }

    /// SIGTERM to the group, then SIGKILL after `grace`. Bounded; idempotent.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = killpg(self.pgid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) && group_pids(self.pgid()).is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "sascribe-bench: {} still running {grace:?} after SIGTERM; sending SIGKILL",
            self.name
        );
        let _ = killpg(self.pgid, Signal::SIGKILL);
        let _ = child.start_kill();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && !matches!(child.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

/// A UDP port on 127.0.0.1 that was free a moment ago (bound, then released).
pub fn free_udp_port() -> anyhow::Result<u16> {
    let s = UdpSocket::bind("127.0.0.1:0").context("binding a probe socket")?;
    Ok(s.local_addr()?.port())
}

pub fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `name` on the PATH (or in /usr/sbin, where Debian puts kamailio), if any.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs a short command to completion (bounded by `timeout`); its stdout and stderr, whatever
/// its exit status (`sipp -v` exits 99).
pub async fn output_any(program: &Path, args: &[&str], timeout: Duration) -> String {
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
    match tokio::time::timeout(timeout, cmd.output()).await {
        Ok(Ok(out)) => {
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr)
        }
        _ => String::new(),
    }
}

/// Runs a short command to completion (bounded by `timeout`); its stdout and stderr, or an
/// error if it failed.
pub async fn output(program: &Path, args: &[&str], timeout: Duration) -> anyhow::Result<String> {
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .with_context(|| format!("{} {args:?} timed out", program.display()))?
        .with_context(|| format!("running {}", program.display()))?;
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!(
            "{} {args:?} failed ({}): {s}",
            program.display(),
            out.status
        );
    }
    Ok(s)
}

/// Memory of a set of processes, in bytes.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ProcMem {
    pub processes: usize,
    /// Sum of VmRSS: counts a shared page once per process mapping it.
    pub rss_sum: u64,
    /// Sum of PSS (/proc/PID/smaps_rollup): a shared page split between its sharers.
    pub pss_sum: u64,
}

/// Pids of the processes whose process group is `pgid`.
pub fn group_pids(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| stat_pgrp(&s))
                == Some(pgid)
        })
        .collect()
}

/// The process group field of a /proc/PID/stat line (the command name may contain spaces and
/// parentheses, so fields are counted after the last ')').
pub fn stat_pgrp(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // state ppid pgrp
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// The value in kB of `key:` in a /proc status-like text, in bytes.
pub fn kb_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix(':')?;
        let kb: u64 = v.split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    })
}

/// RSS and PSS summed over the process group `pgid`.
pub fn group_memory(pgid: i32) -> ProcMem {
    let mut m = ProcMem::default();
    for pid in group_pids(pgid) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rollup =
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        m.processes += 1;
        m.rss_sum += kb_field(&status, "VmRSS").unwrap_or(0);
        m.pss_sum += kb_field(&rollup, "Pss").unwrap_or(0);
    }
    m
}

/// The `Udp: RcvbufErrors` counter of a /proc/net/snmp text: datagrams dropped because a
/// receiving socket's buffer was full (any socket of the network namespace).
pub fn snmp_rcvbuf_errors(snmp: &str) -> Option<u64> {
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = udp.next()?.split_whitespace().collect();
    let values: Vec<&str> = udp.next()?.split_whitespace().collect();
    let i = names.iter().position(|n| *n == "RcvbufErrors")?;
    values.get(i)?.parse().ok()
}

/// The machine's UDP receive-buffer drop counter now.
pub fn udp_rcvbuf_errors() -> Option<u64> {
    snmp_rcvbuf_errors(&std::fs::read_to_string("/proc/net/snmp").ok()?)
}

/// Sum of the `drops` column of /proc/net/udp (format of the kernel's udp4_format_sock) for
/// the sockets bound to one of `ports`.
pub fn proc_udp_drops(table: &str, ports: &[u16]) -> u64 {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            let drops: u64 = f.last()?.parse().ok()?;
            ports.contains(&port).then_some(drops)
        })
        .sum()
}

/// Datagrams dropped so far on the (IPv4) UDP sockets bound to `ports`.
pub fn udp_socket_drops(ports: &[u16]) -> Option<u64> {
    Some(proc_udp_drops(
        &std::fs::read_to_string("/proc/net/udp").ok()?,
        ports,
    ))
}

/// Drops counted between two readings.
pub fn drops_since(before: Option<u64>) -> Option<u64> {
    Some(udp_rcvbuf_errors()?.saturating_sub(before?))
}

/// When, where and with what a run was made.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Meta {
    pub date_utc: String,
    pub nproc: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub mem_total_mb: u64,
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub sipp_version: String,
    pub kamailio_version: String,
    pub sascribe_version: String,
    pub git_rev: String,
    pub command: String,
    pub quick: bool,
}

impl Meta {
    pub async fn collect(repo: &Path, sascribe: &Path, quick: bool) -> Self {
        let short = Duration::from_secs(10);
        let run = |p: &str, args: &'static [&'static str]| {
            let p = which(p).unwrap_or_else(|| PathBuf::from(p));
            async move { output_any(&p, args, short).await }
        };
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let git = which("git").unwrap_or_else(|| PathBuf::from("git"));
        let repo_s = repo.to_string_lossy().into_owned();
        let rev = output(
            &git,
            &["-C", &repo_s, "rev-parse", "--short=12", "HEAD"],
            short,
        )
        .await
        .unwrap_or_default();
        let dirty = output(&git, &["-C", &repo_s, "status", "--porcelain"], short)
            .await
            .map(|s| !s.trim().is_empty())
            .unwrap_or(false);
        Meta {
            date_utc: run("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"])
                .await
                .trim()
                .to_string(),
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            mem_total_mb: kb_field(&meminfo, "MemTotal").unwrap_or(0) / (1024 * 1024),
            loadavg_start: loadavg(),
            loadavg_end: String::new(),
            sipp_version: first_line_with(&run("sipp", &["-v"]).await, "SIPp"),
            kamailio_version: first_line_with(&run("kamailio", &["-v"]).await, "version"),
            sascribe_version: output(sascribe, &["--version"], short)
                .await
                .unwrap_or_default()
                .trim()
                .to_string(),
            git_rev: format!("{}{}", rev.trim(), if dirty { "-dirty" } else { "" }),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            quick,
        }
    }
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn first_line_with(text: &str, needle: &str) -> String {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or("")
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgrp_is_read_after_the_command_name() {
        let line = "4242 (kamailio (x) y) S 1 4240 4240 0 -1 4194560 1 0 0 0";
        assert_eq!(stat_pgrp(line), Some(4240));
        assert_eq!(stat_pgrp("garbage"), None);
    }

    #[test]
    fn udp_drop_counter() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\nUdp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\nUdp: 11216095 173733 5889598 17304326 5889597 0\nUdpLite: InDatagrams RcvbufErrors\nUdpLite: 0 0\n";
        assert_eq!(snmp_rcvbuf_errors(snmp), Some(5_889_597));
        assert_eq!(snmp_rcvbuf_errors("Ip: a\nIp: 1\n"), None);
    }

    #[test]
    fn per_socket_drops() {
        let t = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
          1: 0100007F:1F90 00000000:0000 07 00000000 00000000 00:00000000 00000000     0        0 123 2 0000000000000000 1860\n\
          2: 0100007F:1F91 00000000:0000 07 00000000 00000000 00:00000000 00000000     0        0 124 2 0000000000000000 7\n\
          3: 0100007F:0050 00000000:0000 07 00000000 00000000 00:00000000 00000000     0        0 125 2 0000000000000000 99\n";
        assert_eq!(proc_udp_drops(t, &[8080, 8081]), 1867);
        assert_eq!(proc_udp_drops(t, &[80]), 99);
        assert_eq!(proc_udp_drops(t, &[5060]), 0);
    }

    #[test]
    fn kb_fields_are_bytes() {
        let status = "Name:\tkamailio\nVmRSS:\t   12345 kB\nPss:  7 kB\n";
        assert_eq!(kb_field(status, "VmRSS"), Some(12345 * 1024));
        assert_eq!(kb_field(status, "Pss"), Some(7 * 1024));
        assert_eq!(kb_field(status, "VmSwap"), None);
    }

    #[test]
    fn this_process_is_in_its_own_group_listing() {
        let me = std::process::id() as i32;
        let stat = std::fs::read_to_string(format!("/proc/{me}/stat")).unwrap();
        let pgrp = stat_pgrp(&stat).unwrap();
        assert!(group_pids(pgrp).contains(&me));
        assert!(group_memory(pgrp).rss_sum > 0);
    }
}
