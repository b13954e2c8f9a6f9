//! Running SIPp for one rate step and reading what it measured: the statistics CSV
//! (`-trace_stat -stf FILE -fd 1`, one row a second with periodic (P) and cumulative (C)
//! counters) and the per-request response times (`-trace_rtt`, one row per `rtd` marker).

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

/// The SIPp scenarios in `bench/sipp/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// (a) PUBLISH initial, modify (SIP-If-Match), remove (Expires: 0).
    PublishModifyRemove,
    /// (b) SUBSCRIBE + NOTIFY, un-SUBSCRIBE + final NOTIFY.
    SubscribeUnsubscribe,
}

impl Scenario {
    pub const ALL: [Scenario; 2] = [
        Scenario::PublishModifyRemove,
        Scenario::SubscribeUnsubscribe,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::PublishModifyRemove => "publish-modify-remove",
            Scenario::SubscribeUnsubscribe => "subscribe-unsubscribe",
        }
    }

    pub fn file(self, repo: &Path) -> PathBuf {
        repo.join("bench/sipp").join(format!("{}.xml", self.name()))
    }

    /// Requests the UAC sends per call (the denominator of the retransmission ratio).
    pub fn requests_per_call(self) -> u64 {
        match self {
            Scenario::PublishModifyRemove => 3,
            Scenario::SubscribeUnsubscribe => 2,
        }
    }
}

/// One row of SIPp's statistics file (only the columns the benchmark uses).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatRow {
    /// Seconds since the epoch.
    pub start: f64,
    pub last_reset: f64,
    pub current: f64,
    pub created: u64,
    pub outgoing_p: u64,
    pub successful_p: u64,
    pub successful_c: u64,
    pub failed_c: u64,
    pub retransmissions_c: u64,
    /// Calls the scenario ended on a 503 (`stop_call`: SIPp's rejected calls): the target's
    /// refusals under overload.
    pub rejected_c: u64,
}

/// A SIPp time stamp field, `DATE<TAB>TIME<TAB>EPOCH`: the epoch seconds.
fn epoch(field: &str) -> Option<f64> {
    field.split_whitespace().last()?.parse().ok()
}

/// Parses the `;`-separated statistics file by its header names.
pub fn parse_stat_csv(text: &str) -> anyhow::Result<Vec<StatRow>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .context("empty statistics file")?
        .split(';')
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h.trim() == name)
            .with_context(|| format!("no column {name} in the statistics file"))
    };
    let c_start = col("StartTime")?;
    let c_reset = col("LastResetTime")?;
    let c_current = col("CurrentTime")?;
    let c_created = col("TotalCallCreated")?;
    let c_out_p = col("OutgoingCall(P)")?;
    let c_succ_p = col("SuccessfulCall(P)")?;
    let c_succ_c = col("SuccessfulCall(C)")?;
    let c_fail_c = col("FailedCall(C)")?;
    let c_retr_c = col("Retransmissions(C)")?;
    let c_rejected_c = col("FailedCallRejected(C)").ok();
    let mut rows = Vec::new();
    for (i, line) in lines.enumerate() {
        let f: Vec<&str> = line.split(';').collect();
        let bad = || format!("statistics row {} is malformed", i + 1);
        let num = |c: usize| -> anyhow::Result<u64> {
            f.get(c)
                .and_then(|v| v.trim().parse().ok())
                .with_context(bad)
        };
        let time =
            |c: usize| -> anyhow::Result<f64> { f.get(c).and_then(|v| epoch(v)).with_context(bad) };
        rows.push(StatRow {
            start: time(c_start)?,
            last_reset: time(c_reset)?,
            current: time(c_current)?,
            created: num(c_created)?,
            outgoing_p: num(c_out_p)?,
            successful_p: num(c_succ_p)?,
            successful_c: num(c_succ_c)?,
            failed_c: num(c_fail_c)?,
            retransmissions_c: num(c_retr_c)?,
            rejected_c: c_rejected_c.map(num).transpose()?.unwrap_or(0),
        });
    }
    if rows.is_empty() {
        bail!("no rows in the statistics file");
    }
    Ok(rows)
}

/// What one SIPp run measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub created: u64,
    pub successful: u64,
    pub failed: u64,
    pub retransmissions: u64,
    /// Failed calls that ended on a 503 (the scenarios end a call on a 503 to any of its
    /// requests, as a user agent does on a final response): the target's refusals under
    /// overload (503 + Retry-After).
    #[serde(default)]
    pub refused: u64,
    /// From the start to the last statistics row (the last call finished or timed out).
    pub elapsed_s: f64,
    /// Calls started per second while offering (steady window, see [`summarize`]).
    pub offered_actual: f64,
    /// Successful calls completed per second in the steady window: the goodput.
    pub achieved: f64,
    /// Length of the steady window the rates were computed on (0: whole run).
    pub window_s: f64,
}

/// Sums the rows of the steady window — from 1 s after the start (ramp-up) to the end of the
/// nominal offering time `offer_s` — into rates; with no row in it, rates over the whole run.
pub fn summarize(rows: &[StatRow], offer_s: f64) -> Option<Summary> {
    let last = rows.last()?;
    let start = rows[0].start;
    let mut s = Summary {
        created: last.created,
        successful: last.successful_c,
        failed: last.failed_c,
        retransmissions: last.retransmissions_c,
        refused: last.rejected_c,
        elapsed_s: last.current - start,
        ..Summary::default()
    };
    let window: Vec<&StatRow> = rows
        .iter()
        .filter(|r| r.last_reset >= start + 0.9 && r.current <= start + offer_s + 0.25)
        .collect();
    let span: f64 = window.iter().map(|r| r.current - r.last_reset).sum();
    if window.len() >= 2 && span > 0.5 {
        s.window_s = span;
        s.offered_actual = window.iter().map(|r| r.outgoing_p).sum::<u64>() as f64 / span;
        s.achieved = window.iter().map(|r| r.successful_p).sum::<u64>() as f64 / span;
    } else if s.elapsed_s > 0.0 {
        s.offered_actual = s.created as f64 / s.elapsed_s.max(offer_s);
        s.achieved = s.successful as f64 / s.elapsed_s;
    }
    Some(s)
}

/// `-trace_rtt` rows `Date_ms;response_time_ms;rtd_no`: (rtd number, response time in ms).
pub fn parse_rtt(text: &str) -> Vec<(u32, f64)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(';');
            let _date = f.next()?;
            let ms: f64 = f.next()?.trim().parse().ok()?;
            let rtd: u32 = f.next()?.trim().parse().ok()?;
            Some((rtd, ms))
        })
        .collect()
}

/// Nearest-rank percentile of sorted values (`p` in 0..=1).
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Response-time percentiles of one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub samples: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Per `rtd` marker: (rtd, p50, p99).
    pub per_rtd: Vec<(u32, f64, f64)>,
}

pub fn latency(samples: &[(u32, f64)]) -> Latency {
    let mut all: Vec<f64> = samples.iter().map(|s| s.1).collect();
    all.sort_by(f64::total_cmp);
    let mut by: HashMap<u32, Vec<f64>> = HashMap::new();
    for &(r, ms) in samples {
        by.entry(r).or_default().push(ms);
    }
    let mut per_rtd: Vec<(u32, f64, f64)> = by
        .into_iter()
        .map(|(r, mut v)| {
            v.sort_by(f64::total_cmp);
            (
                r,
                percentile(&v, 0.5).unwrap_or(0.0),
                percentile(&v, 0.99).unwrap_or(0.0),
            )
        })
        .collect();
    per_rtd.sort_by_key(|x| x.0);
    Latency {
        samples: all.len(),
        p50_ms: percentile(&all, 0.5),
        p99_ms: percentile(&all, 0.99),
        per_rtd,
    }
}

/// One SIPp invocation.
pub struct Invocation<'a> {
    pub sipp: &'a Path,
    pub scenario_file: &'a Path,
    /// Working directory: SIPp's statistics, response times and errors end up here.
    pub dir: &'a Path,
    /// The injection file's content (destinations, and presentities for subscriptions).
    pub inject: String,
    /// `-s`: the user part prefix of this step's resources or watchers.
    pub service: String,
    pub rate: u32,
    pub calls: u64,
    pub recv_timeout_ms: u64,
}

/// The outcome of an invocation.
pub struct Outcome {
    pub rows: Vec<StatRow>,
    pub rtt: Vec<(u32, f64)>,
    pub exit: Option<i32>,
}

impl Invocation<'_> {
    pub async fn run(&self) -> anyhow::Result<Outcome> {
        std::fs::create_dir_all(self.dir)?;
        let inject = self.dir.join("inject.csv");
        std::fs::write(&inject, &self.inject)?;
        let port = crate::sys::free_udp_port()?;
        let offer_s = self.calls as f64 / f64::from(self.rate.max(1));
        // Room for every call of a collapsing target to be open until it times out, so that
        // SIPp keeps offering the rate (open loop) instead of throttling.
        let limit = (u64::from(self.rate) * (self.recv_timeout_ms / 1000 + 5)).max(100);
        let global = offer_s.ceil() as u64 + 4 * self.recv_timeout_ms / 1000 + 10;
        let stderr = std::fs::File::create(self.dir.join("sipp.stderr"))?;
        let mut cmd = Command::new(self.sipp);
        cmd.current_dir(self.dir)
            // The remote address is a placeholder: every call sets its destination from the
            // injection file (`setdest`).
            .arg("127.0.0.1:9")
            .arg("-sf")
            .arg(self.scenario_file)
            .args(["-inf", "inject.csv", "-s", &self.service])
            .args(["-m", &self.calls.to_string(), "-r", &self.rate.to_string()])
            .args(["-rp", "1000", "-l", &limit.to_string()])
            .args(["-t", "u1", "-i", "127.0.0.1", "-p", &port.to_string()])
            // -aa: answer NOTIFYs of calls already over; -nd: an aborted call just ends
            // (no BYE).
            .args(["-nostdin", "-aa", "-nd"])
            // 4 MB socket buffers: the client must not be where datagrams are dropped.
            .args(["-buff_size", "4194304"])
            .args(["-trace_stat", "-stf", "stat.csv", "-fd", "1"])
            .args(["-trace_rtt", "-rtt_freq", "1000"])
            .args(["-trace_err", "-error_file", "errors.log"])
            .args(["-max_log_size", "2000000"])
            .args(["-recv_timeout", &self.recv_timeout_ms.to_string()])
            .args(["-timeout", &format!("{global}s")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("starting sipp")?;
        let status = tokio::time::timeout(Duration::from_secs(global + 30), child.wait())
            .await
            .context("sipp did not exit in time (killed)")??;
        let stat = std::fs::read_to_string(self.dir.join("stat.csv")).with_context(|| {
            format!(
                "sipp wrote no statistics (exit {status}); see {}",
                self.dir.join("sipp.stderr").display()
            )
        })?;
        let mut rtt = Vec::new();
        for e in std::fs::read_dir(self.dir)?.flatten() {
            if e.file_name().to_string_lossy().ends_with("_rtt.csv") {
                rtt.extend(parse_rtt(&std::fs::read_to_string(e.path())?));
            }
        }
        Ok(Outcome {
            rows: parse_stat_csv(&stat)?,
            rtt,
            exit: status.code(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three rows of a real SIPp 3.6.1 file (cut to the columns the parser needs, plus one it
    /// does not, in SIPp's order), 500 calls/s for 4 s.
    const STAT: &str = "\
StartTime;LastResetTime;CurrentTime;ElapsedTime(P);TotalCallCreated;CurrentCall;OutgoingCall(P);SuccessfulCall(P);SuccessfulCall(C);FailedCall(P);FailedCall(C);Retransmissions(P);Retransmissions(C)
2026-11-30\t05:07:19.389982\t1796015239.389982;2026-11-30\t05:07:19.389982\t1796015239.389982;2026-11-30\t05:07:20.400000\t1796015240.400000;00:00:01;505;3;505;502;502;0;0;0;0
2026-11-30\t05:07:19.389982\t1796015239.389982;2026-11-30\t05:07:20.400000\t1796015240.400000;2026-11-30\t05:07:21.412246\t1796015241.412246;00:00:01;1009;4;504;505;1007;0;0;1;1
2026-11-30\t05:07:19.389982\t1796015239.389982;2026-11-30\t05:07:21.412246\t1796015241.412246;2026-11-30\t05:07:22.424221\t1796015242.424221;00:00:01;1514;11;505;500;1507;0;0;0;1
2026-11-30\t05:07:19.389982\t1796015239.389982;2026-11-30\t05:07:22.424221\t1796015242.424221;2026-11-30\t05:07:23.406393\t1796015243.406393;00:00:00;2000;0;486;493;2000;0;0;0;1
";

    #[test]
    fn stat_rows_are_read_by_column_name() {
        let rows = parse_stat_csv(STAT).unwrap();
        assert_eq!(rows.len(), 4);
        assert!((rows[0].start - 1_796_015_239.389_982).abs() < 1e-6);
        assert_eq!(rows[1].outgoing_p, 504);
        assert_eq!(rows[3].successful_c, 2000);
        assert_eq!(rows[3].retransmissions_c, 1);
        assert_eq!(rows[3].created, 2000);
    }

    #[test]
    fn steady_window_skips_the_first_second_and_the_tail() {
        let rows = parse_stat_csv(STAT).unwrap();
        let s = summarize(&rows, 4.0).unwrap();
        assert_eq!(
            (s.created, s.successful, s.failed, s.retransmissions),
            (2000, 2000, 0, 1)
        );
        assert!((s.elapsed_s - 4.016_411).abs() < 1e-3, "{}", s.elapsed_s);
        // Rows 2..4 are inside [start + 0.9, start + 4.25].
        assert!((s.window_s - 3.006_393).abs() < 1e-3, "{}", s.window_s);
        assert!((s.achieved - (505.0 + 500.0 + 493.0) / 3.006_393).abs() < 0.1);
        assert!((s.offered_actual - (504.0 + 505.0 + 486.0) / 3.006_393).abs() < 0.1);
    }

    /// Calls a scenario ended on a 503 (`stop_call`) are SIPp's rejected calls: the refusals.
    #[test]
    fn rejected_calls_are_the_refusals() {
        let text = STAT
            .replace(
                "Retransmissions(C)\n",
                "Retransmissions(C);FailedUnexpectedMessage(C);FailedCallRejected(C)\n",
            )
            .lines()
            .enumerate()
            .map(|(i, l)| match i {
                0 => l.to_string(),
                _ => format!("{l};1;{}", 10 * i),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let rows = parse_stat_csv(&text).unwrap();
        assert_eq!(rows[3].rejected_c, 40);
        assert_eq!(summarize(&rows, 4.0).unwrap().refused, 40);
        // Older files without the column: no refusal counted.
        assert_eq!(
            summarize(&parse_stat_csv(STAT).unwrap(), 4.0)
                .unwrap()
                .refused,
            0
        );
    }

    #[test]
    fn short_runs_fall_back_to_whole_run_rates() {
        let rows = parse_stat_csv(STAT).unwrap();
        let s = summarize(&rows[..2], 1.0).unwrap();
        assert_eq!(s.window_s, 0.0);
        assert!(
            (s.achieved - 1007.0 / 2.022_264).abs() < 0.1,
            "{}",
            s.achieved
        );
    }

    #[test]
    fn malformed_statistics_are_errors() {
        assert!(parse_stat_csv("").is_err());
        assert!(parse_stat_csv("StartTime;CurrentTime\n1;2\n").is_err());
        let cut = STAT.lines().next().unwrap().to_string() + "\nx;y;z\n";
        assert!(parse_stat_csv(&cut).is_err());
        let header_only = STAT.lines().next().unwrap();
        assert!(parse_stat_csv(header_only).is_err());
    }

    #[test]
    fn rtt_rows_and_percentiles() {
        let text =
            "Date_ms;response_time_ms;rtd_no\n24.001;8;1\n25.5;2;2\n26;4;1\nbad line\n27;1;3\n";
        let s = parse_rtt(text);
        assert_eq!(s, vec![(1, 8.0), (2, 2.0), (1, 4.0), (3, 1.0)]);
        let l = latency(&s);
        assert_eq!(l.samples, 4);
        assert_eq!(l.p50_ms, Some(2.0));
        assert_eq!(l.p99_ms, Some(8.0));
        assert_eq!(l.per_rtd, vec![(1, 4.0, 8.0), (2, 2.0, 2.0), (3, 1.0, 1.0)]);
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(latency(&[]).p99_ms, None);
    }
}
