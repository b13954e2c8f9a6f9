//! The results file (`results.json`) and the Markdown tables (`summary.md`).

use crate::fanout::FanResult;
use crate::load::MemResult;
use crate::rates::Curve;
use crate::sys::Meta;
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::path::Path;

/// What a run was asked to do.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Settings {
    pub targets: Vec<String>,
    pub rates: Vec<u32>,
    pub step_s: f64,
    pub stop_after_failures: usize,
    pub max_probe_rate: u32,
    pub pool: usize,
    pub recv_timeout_ms: u64,
    pub watchers: Vec<usize>,
    pub rounds: usize,
    pub memory_count: usize,
    pub kamailio_workers: u32,
    pub kamailio_shm_mb: u32,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Results {
    pub meta: Meta,
    pub settings: Settings,
    pub rates: Vec<Curve>,
    pub fanout: Vec<FanResult>,
    pub memory: Vec<MemResult>,
    /// The overload run: publish-modify-remove at 1x, 2x and 4x each target's sustained rate.
    #[serde(default)]
    pub overload: Vec<Curve>,
}

impl Results {
    /// The results in `path`, or empty ones if there is none (or it cannot be read).
    pub fn load_or_default(path: &Path) -> Self {
        match std::fs::read_to_string(path) {
            Ok(s) => serde_json::from_str(&s).unwrap_or_else(|e| {
                eprintln!(
                    "sascribe-bench: ignoring unreadable {}: {e}",
                    path.display()
                );
                Results::default()
            }),
            Err(_) => Results::default(),
        }
    }
}

/// Distinct values in first-seen order.
pub fn unique<'a>(it: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut v: Vec<&str> = Vec::new();
    for x in it {
        if !v.contains(&x) {
            v.push(x);
        }
    }
    v
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.digits$}"))
}

/// "machine-wide (at the target's sockets)".
fn drops(all: Option<u64>, target: Option<u64>) -> String {
    match (all, target) {
        (Some(a), Some(t)) => format!("{a} ({t})"),
        (Some(a), None) => a.to_string(),
        _ => "–".into(),
    }
}

fn mb(v: f64) -> String {
    format!("{v:.1}")
}

/// The headline figures, one column per target.
pub fn side_by_side(r: &Results) -> String {
    let targets = unique(
        r.rates
            .iter()
            .map(|c| c.target.as_str())
            .chain(r.fanout.iter().map(|f| f.target.as_str()))
            .chain(r.memory.iter().map(|m| m.target.as_str())),
    );
    if targets.is_empty() {
        return String::new();
    }
    let mut s = String::from("### Side by side\n\n| |");
    for t in &targets {
        let _ = write!(s, " {t} |");
    }
    s.push_str("\n|---|");
    s.push_str(&"---:|".repeat(targets.len()));
    s.push('\n');
    let mut row = |label: &str, cell: &dyn Fn(&str) -> String| {
        let _ = write!(s, "| {label} |");
        for t in &targets {
            let _ = write!(s, " {} |", cell(t));
        }
        s.push('\n');
    };
    for scn in unique(r.rates.iter().map(|c| c.scenario.as_str())) {
        let curve = |t: &str| r.rates.iter().find(|c| c.scenario == scn && c.target == t);
        row(&format!("({scn}) highest sustained, calls/s"), &|t| {
            curve(t)
                .and_then(|c| c.highest_sustained)
                .map_or("–".into(), |h| h.to_string())
        });
        row(
            &format!("({scn}) goodput at 2× / 4× of it, calls/s"),
            &|t| {
                curve(t).map_or("–".into(), |c| {
                    format!("{} / {}", opt(c.goodput_2x, 0), opt(c.goodput_4x, 0))
                })
            },
        );
    }
    for w in r
        .fanout
        .iter()
        .map(|f| f.watchers)
        .collect::<std::collections::BTreeSet<_>>()
    {
        row(
            &format!("fan-out W={w}: publish→NOTIFY p50 / p99 ms"),
            &|t| {
                r.fanout
                    .iter()
                    .find(|f| f.target == t && f.watchers == w)
                    .map_or("–".into(), |f| {
                        let missing = f.expected.saturating_sub(f.received);
                        let tail = if missing > 0 {
                            format!(" ({missing} missing)")
                        } else {
                            String::new()
                        };
                        format!("{} / {}{tail}", opt(f.p50_ms, 1), opt(f.p99_ms, 1))
                    })
            },
        );
    }
    let mem = |t: &str, subs: bool| -> String {
        let Some(m) = r.memory.iter().find(|m| m.target == t) else {
            return "–".into();
        };
        let (p, stored) = if subs {
            (&m.per_100k_subscriptions, m.subscriptions)
        } else {
            (&m.per_100k_presentities, m.presentities)
        };
        if stored * 2 < m.requested {
            return format!("n/a ({stored} stored)");
        }
        match p.shm_mb {
            Some(shm) => format!("{} shm", mb(shm)),
            None => format!("{} RSS", mb(p.rss_mb)),
        }
    };
    if !r.memory.is_empty() {
        row("MB per 100k presentities", &|t| mem(t, false));
        row("MB per 100k subscriptions", &|t| mem(t, true));
    }
    s.push('\n');
    s
}

/// All tables, Markdown.
/// The overload table: goodput and refusals (503) at 1x, 2x and 4x the base rate.
pub fn overload(r: &Results) -> String {
    let mut md = String::new();
    if r.overload.is_empty() {
        return md;
    }
    md.push_str("\n## Overload: 1x, 2x, 4x the sustained rate (publish-modify-remove)\n\n");
    md.push_str("| target | offered calls/s | x | goodput calls/s | goodput / base | refused (503) | failed | p99 ms |\n");
    md.push_str("|---|---|---|---|---|---|---|---|\n");
    for c in &r.overload {
        let base = c.steps.iter().map(|s| s.offered).min().unwrap_or(1).max(1);
        let base_goodput = c.steps.first().map_or(0.0, |s| s.stats.achieved);
        for s in &c.steps {
            let rel = if base_goodput > 0.0 {
                format!("{:.0} %", 100.0 * s.stats.achieved / base_goodput)
            } else {
                "-".into()
            };
            md.push_str(&format!(
                "| {} | {} | {} | {:.0} | {} | {} | {} | {} |\n",
                c.target,
                s.offered,
                s.offered / base,
                s.stats.achieved,
                rel,
                s.stats.refused,
                s.stats.failed,
                s.latency.p99_ms.map_or("-".into(), |v| format!("{v:.0}")),
            ));
        }
    }
    md
}

pub fn markdown(r: &Results) -> String {
    let mut s = String::new();
    let m = &r.meta;
    let _ = writeln!(
        s,
        "Measured {} on {} × {} ({} MB RAM, kernel {}), load average {} at the start and {} at the end; {}; {}; sascribe {} (git {}).{}\n",
        m.date_utc,
        m.nproc,
        m.cpu_model,
        m.mem_total_mb,
        m.kernel,
        m.loadavg_start,
        m.loadavg_end,
        m.sipp_version,
        m.kamailio_version,
        m.sascribe_version,
        m.git_rev,
        if m.quick { " **Quick run** (short steps): a smoke test, not figures." } else { "" }
    );
    s.push_str(&side_by_side(r));
    if !r.rates.is_empty() {
        s.push_str("### Highest sustained rate and goodput beyond it\n\nSustained: 0 failed calls, every call completed, < 1 % retransmissions, ≥ 90 % of the rate offered by SIPp and ≥ 90 % of it completed while offered.\n\n");
        s.push_str("| scenario | target | highest sustained (calls/s) | goodput at 2× (calls/s) | goodput at 4× (calls/s) |\n|---|---|---:|---:|---:|\n");
        for c in &r.rates {
            let hs = c.highest_sustained.map_or("none".into(), |h| {
                format!(
                    "{h}{}",
                    if c.non_monotonic {
                        " (a lower rate failed)"
                    } else {
                        ""
                    }
                )
            });
            let _ = writeln!(
                s,
                "| {} | {} | {hs} | {} | {} |",
                c.scenario,
                c.target,
                opt(c.goodput_2x, 0),
                opt(c.goodput_4x, 0)
            );
        }
        s.push('\n');
        for scn in unique(r.rates.iter().map(|c| c.scenario.as_str())) {
            let _ = writeln!(s, "### {scn}: every step\n");
            s.push_str("| target | offered | actually offered | achieved (calls/s) | ok | failed | retrans % | p50 ms | p99 ms | UDP drops (at target) | sustained |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
            for c in r.rates.iter().filter(|c| c.scenario == scn) {
                for st in &c.steps {
                    let mark = if st.sustained { "yes" } else { "**no**" };
                    let note = if st.note.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", st.note.lines().next().unwrap_or(""))
                    };
                    let _ = writeln!(
                        s,
                        "| {} | {}{} | {:.0} | {:.0} | {} | {} | {:.2} | {} | {} | {} | {mark}{note} |",
                        c.target,
                        st.offered,
                        if st.probe { " (probe)" } else { "" },
                        st.stats.offered_actual,
                        st.stats.achieved,
                        st.stats.successful,
                        st.stats.failed,
                        st.retrans_pct,
                        opt(st.latency.p50_ms, 0),
                        opt(st.latency.p99_ms, 0),
                        drops(st.udp_drops, st.target_drops),
                    );
                }
                if let Some(e) = &c.error {
                    let _ = writeln!(
                        s,
                        "| {} | error: {} |||||||||",
                        c.target,
                        e.lines().next().unwrap_or("")
                    );
                }
            }
            s.push('\n');
        }
    }
    if !r.fanout.is_empty() {
        s.push_str("### Fan-out: PUBLISH → NOTIFY latency per watcher\n\n");
        s.push_str("| target | W | subscribed (got the initial NOTIFY) | NOTIFYs received / expected | rounds with every watcher notified | p50 ms | p99 ms | max ms | UDP drops (at target) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for f in &r.fanout {
            let _ = writeln!(
                s,
                "| {} | {} | {} ({}) | {} / {} | {} / {} | {} | {} | {} | {} |{}",
                f.target,
                f.watchers,
                f.subscribed,
                f.initially_notified,
                f.received,
                f.expected,
                f.complete_rounds,
                f.rounds,
                opt(f.p50_ms, 2),
                opt(f.p99_ms, 2),
                opt(f.max_ms, 2),
                drops(f.udp_drops, f.target_drops),
                f.error
                    .as_ref()
                    .map_or(String::new(), |e| format!(" error: {e}"))
            );
        }
        s.push('\n');
    }
    if !r.memory.is_empty() {
        s.push_str("### Memory per 100,000 presentities and per 100,000 active subscriptions (MB = 10^6 bytes)\n\n");
        s.push_str("| target | presentities / subscriptions stored | per 100k presentities: shm / PSS / RSS | per 100k subscriptions: shm / PSS / RSS | after both: PSS (processes) | load: s for PUBLISHes / SUBSCRIBEs, UDP drops (at target) |\n|---|---:|---:|---:|---:|---:|\n");
        for m in &r.memory {
            // Scaling the growth of a few stored items to 100k would mostly scale overload state.
            let fig = |p: &crate::load::Per100k, stored: usize| {
                if stored * 2 < m.requested {
                    return format!("n/a (only {stored} stored)");
                }
                format!(
                    "{} / {} / {}",
                    p.shm_mb.map_or("–".into(), mb),
                    mb(p.pss_mb),
                    mb(p.rss_mb)
                )
            };
            let _ = writeln!(
                s,
                "| {} | {} / {} of {} | {} | {} | {} ({}) | {:.0} / {:.0}, {} |{}",
                m.target,
                m.presentities,
                m.subscriptions,
                m.requested,
                fig(&m.per_100k_presentities, m.presentities),
                fig(&m.per_100k_subscriptions, m.subscriptions),
                mb(m.after_subscribe.procs.pss_sum as f64 / 1e6),
                m.after_subscribe.procs.processes,
                m.publish_s,
                m.subscribe_s,
                drops(m.udp_drops, m.target_drops),
                m.error
                    .as_ref()
                    .map_or(String::new(), |e| format!(" error: {e}"))
            );
        }
        s.push_str("\nshm: growth of Kamailio's shared memory in use (`kamcmd core.shmmem` real_used), where presentities and subscriptions live; PSS/RSS: growth of the proportional / resident set size summed over the target's processes (Kamailio's RSS sum counts each shared page once per process that touched it). sascribe is one process.\n");
    }
    s.push_str(&overload(r));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rates::Step;

    #[test]
    fn tables_show_the_sustained_rate_and_every_step() {
        let mut step = Step {
            offered: 500,
            calls: 5000,
            sustained: true,
            ..Step::default()
        };
        step.stats.successful = 5000;
        step.stats.achieved = 499.6;
        step.latency.p50_ms = Some(1.0);
        let mut c = Curve {
            scenario: "publish-modify-remove".into(),
            target: "kamailio".into(),
            steps: vec![step],
            ..Curve::default()
        };
        c.finish();
        let r = Results {
            rates: vec![c],
            ..Results::default()
        };
        let md = markdown(&r);
        assert!(
            md.contains("| publish-modify-remove | kamailio | 500 | – | – |"),
            "{md}"
        );
        assert!(
            md.contains("| kamailio | 500 | 0 | 500 | 5000 | 0 | 0.00 | 1 | – | – | yes |"),
            "{md}"
        );
        assert!(!md.contains("Fan-out"));
        assert!(
            md.contains("| (publish-modify-remove) highest sustained, calls/s | 500 |"),
            "{md}"
        );
    }

    #[test]
    fn memory_figures_of_a_few_stored_items_are_not_scaled_up() {
        let mut m = crate::load::MemResult {
            target: "sascribe-8".into(),
            requested: 100_000,
            presentities: 93_490,
            subscriptions: 294,
            ..Default::default()
        };
        m.per_100k_presentities.pss_mb = 855.8;
        m.per_100k_subscriptions.pss_mb = 60_785.2;
        let md = markdown(&Results {
            memory: vec![m],
            ..Results::default()
        });
        assert!(
            md.contains("| – / 855.8 / 0.0 | n/a (only 294 stored) |"),
            "{md}"
        );
        assert!(
            md.contains("| MB per 100k presentities | 0.0 RSS |"),
            "{md}"
        );
        assert!(
            md.contains("| MB per 100k subscriptions | n/a (294 stored) |"),
            "{md}"
        );
    }

    #[test]
    fn unique_keeps_first_seen_order() {
        assert_eq!(
            unique(["b", "a", "b", "c"].into_iter()),
            vec!["b", "a", "c"]
        );
    }
}
