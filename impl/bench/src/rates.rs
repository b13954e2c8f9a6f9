//! Rising-rate runs of the SIPp scenarios against one target: one step per offered rate, the
//! highest sustained rate, and the goodput at 2x and 4x that rate (the congestion-collapse curve).

use crate::sip::{self, Client};
use crate::sipp::{self, Invocation, Scenario};
use crate::targets::{self, Env, Running, Spec};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How the rate steps are run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub rates: Vec<u32>,
    pub step_s: f64,
    /// Stop rising after this many consecutive steps that were not sustained (0: never).
    pub stop_after_failures: usize,
    /// Also measure 2x and 4x the highest sustained rate, up to this rate.
    pub max_probe_rate: u32,
    /// Presentities published before the subscription steps (the SUBSCRIBEs cycle over them).
    pub pool: usize,
    pub recv_timeout_ms: u64,
    pub pause: Duration,
    pub sipp: PathBuf,
    pub repo: PathBuf,
}

/// One rate step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Requested calls/s (SIPp -r).
    pub offered: u32,
    /// Calls in the step (SIPp -m = offered x step length).
    pub calls: u64,
    #[serde(flatten)]
    pub stats: sipp::Summary,
    /// Retransmissions per request sent, in %.
    pub retrans_pct: f64,
    #[serde(flatten)]
    pub latency: sipp::Latency,
    pub sipp_exit: Option<i32>,
    /// UDP datagrams dropped on full receive buffers during the step (whole machine:
    /// target, SIPp and anything else), from /proc/net/snmp.
    pub udp_drops: Option<u64>,
    /// Of which on the target's own sockets (/proc/net/udp drops).
    pub target_drops: Option<u64>,
    pub sustained: bool,
    /// Run to measure 2x/4x the highest sustained rate.
    pub probe: bool,
    pub note: String,
}

/// 0 failed calls, every call completed, < 1 % retransmissions; and the client really offered
/// at least 90 % of the requested rate (otherwise the step says nothing about the target), and
/// the target completed at least 90 % of what was offered while it was offered (otherwise a
/// backlog builds up that a longer step would turn into failures).
pub fn is_sustained(s: &Step) -> bool {
    s.stats.failed == 0
        && s.stats.successful >= s.calls
        && s.retrans_pct < 1.0
        && s.stats.offered_actual >= 0.9 * f64::from(s.offered)
        && s.stats.achieved >= 0.9 * s.stats.offered_actual
}

/// The highest offered rate of a sustained step, and whether some lower rate was not sustained
/// (a noisy or non-monotonic curve).
pub fn highest_sustained(steps: &[Step]) -> Option<(u32, bool)> {
    let best = steps
        .iter()
        .filter(|s| s.sustained)
        .map(|s| s.offered)
        .max()?;
    let dip = steps.iter().any(|s| !s.sustained && s.offered < best);
    Some((best, dip))
}

/// The step measured at `rate` (within 2 %), if any.
pub fn step_at(steps: &[Step], rate: u32) -> Option<&Step> {
    steps
        .iter()
        .find(|s| (f64::from(s.offered) - f64::from(rate)).abs() <= 0.02 * f64::from(rate))
}

/// The multiples (2x, 4x) of the highest sustained rate not measured yet, up to `max`.
pub fn probes_needed(steps: &[Step], max: u32) -> Vec<u32> {
    let Some((best, _)) = highest_sustained(steps) else {
        return Vec::new();
    };
    [2, 4]
        .iter()
        .map(|f| best.saturating_mul(*f))
        .filter(|&r| r <= max && step_at(steps, r).is_none())
        .collect()
}

/// The curve of one scenario on one target.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Curve {
    pub scenario: String,
    pub target: String,
    pub peers: usize,
    pub steps: Vec<Step>,
    pub highest_sustained: Option<u32>,
    /// A rate below the highest sustained one was not sustained.
    pub non_monotonic: bool,
    /// Goodput (successful calls/s) at 2x and 4x the highest sustained rate, if measured.
    pub goodput_2x: Option<f64>,
    pub goodput_4x: Option<f64>,
    pub error: Option<String>,
}

impl Curve {
    pub fn finish(&mut self) {
        self.steps.sort_by_key(|s| s.offered);
        let hs = highest_sustained(&self.steps);
        self.highest_sustained = hs.map(|h| h.0);
        self.non_monotonic = hs.is_some_and(|h| h.1);
        let at = |f: u32| {
            self.highest_sustained
                .and_then(|r| step_at(&self.steps, r * f))
                .map(|s| s.stats.achieved)
        };
        self.goodput_2x = at(2);
        self.goodput_4x = at(4);
    }
}

/// Publishes `n` presentities `pool{i}` (Expires 3600) round robin over `addrs`.
pub async fn publish_pool(client: &Client, addrs: &[SocketAddr], n: usize) -> anyhow::Result<()> {
    let c = client.clone();
    let a = addrs.to_vec();
    let (out, done) = sip::drive(n, 64, None, Duration::from_secs(120), move |i| {
        let (c, a) = (c.clone(), a.clone());
        async move {
            let req =
                crate::load::publish_req(&c, &format!("pool{i}"), 1, None, 3600, Some("open"));
            c.request(i, a[i % a.len()], &req, Duration::from_secs(8))
                .await
                .map(|r| r.status() == Some(200))
                .unwrap_or(false)
        }
    })
    .await;
    let ok = out.iter().filter(|x| **x).count();
    anyhow::ensure!(
        done && ok == n,
        "only {ok} of {n} pool presentities were published"
    );
    Ok(())
}

fn inject(scenario: Scenario, addrs: &[SocketAddr], pool: usize) -> String {
    let mut s = String::from("SEQUENTIAL\n");
    match scenario {
        Scenario::PublishModifyRemove => {
            for a in addrs {
                s.push_str(&format!("{};{}\n", a.ip(), a.port()));
            }
        }
        Scenario::SubscribeUnsubscribe => {
            for i in 0..pool.max(1) {
                let a = addrs[i % addrs.len()];
                s.push_str(&format!("pool{i};{};{}\n", a.ip(), a.port()));
            }
        }
    }
    s
}

async fn fresh(
    spec: &Spec,
    env: &Env,
    client: &Client,
    scenario: Scenario,
    plan: &Plan,
) -> anyhow::Result<Running> {
    let t = targets::start(spec, env, client).await?;
    if scenario == Scenario::SubscribeUnsubscribe {
        publish_pool(client, &t.addrs, plan.pool)
            .await
            .with_context(|| format!("publishing the subscription pool on {}", t.name))?;
    }
    Ok(t)
}

async fn step(
    scenario: Scenario,
    target: &Running,
    plan: &Plan,
    dir: &Path,
    rate: u32,
    tag: &str,
) -> Step {
    let calls = ((f64::from(rate) * plan.step_s).round() as u64).max(1);
    let file = scenario.file(&plan.repo);
    let inv = Invocation {
        sipp: &plan.sipp,
        scenario_file: &file,
        dir: &dir.join(format!("{rate}")),
        inject: inject(scenario, &target.addrs, plan.pool),
        service: format!("{tag}r{rate}n"),
        rate,
        calls,
        recv_timeout_ms: plan.recv_timeout_ms,
    };
    let mut s = Step {
        offered: rate,
        calls,
        ..Step::default()
    };
    let drops = crate::sys::udp_rcvbuf_errors();
    let target_drops = target.socket_drops();
    let result = inv.run().await;
    s.udp_drops = crate::sys::drops_since(drops);
    s.target_drops = target
        .socket_drops()
        .zip(target_drops)
        .map(|(a, b)| a.saturating_sub(b));
    match result {
        Ok(out) => {
            let offer_s = calls as f64 / f64::from(rate);
            s.stats = sipp::summarize(&out.rows, offer_s).unwrap_or_default();
            let requests = s.stats.created * scenario.requests_per_call();
            s.retrans_pct = 100.0 * s.stats.retransmissions as f64 / requests.max(1) as f64;
            s.latency = sipp::latency(&out.rtt);
            s.sipp_exit = out.exit;
            s.sustained = is_sustained(&s);
            if s.stats.offered_actual < 0.9 * f64::from(rate) {
                s.note = "SIPp could not offer the requested rate".into();
            } else if s.stats.failed == 0
                && s.stats.successful >= calls
                && s.retrans_pct < 1.0
                && s.stats.achieved < 0.9 * s.stats.offered_actual
            {
                s.note = "backlog: completions fell behind".into();
            }
        }
        Err(e) => s.note = format!("error: {e:#}"),
    }
    s
}

/// Rounds of 2x/4x probes after the rising rates.
const MAX_PROBE_ROUNDS: usize = 3;

/// Runs the rising rates of `scenario` on `spec`, a fresh target after every step that was
/// not sustained, then the 2x/4x probes on fresh targets.
pub async fn curve(
    scenario: Scenario,
    spec: &Spec,
    env: &Env,
    plan: &Plan,
    client: &Client,
    dir: &Path,
) -> Curve {
    let mut c = Curve {
        scenario: scenario.name().into(),
        target: spec.name(),
        ..Curve::default()
    };
    if let Err(e) = curve_steps(scenario, spec, env, plan, client, dir, &mut c).await {
        eprintln!("  {} {}: {e:#}", c.target, c.scenario);
        c.error = Some(format!("{e:#}"));
    }
    c.finish();
    c
}

async fn curve_steps(
    scenario: Scenario,
    spec: &Spec,
    env: &Env,
    plan: &Plan,
    client: &Client,
    dir: &Path,
    c: &mut Curve,
) -> anyhow::Result<()> {
    let mut target = Some(fresh(spec, env, client, scenario, plan).await?);
    let tag = format!("{}{}", &scenario.name()[..1], std::process::id() % 10_000);
    let mut misses = 0;
    let mut rates = plan.rates.clone();
    let mut probing = false;
    let mut probe_rounds = 0;
    let mut i = 0;
    loop {
        if i == rates.len() {
            // A sustained probe raises the highest sustained rate: probe its multiples in
            // turn (a few rounds at most).
            let more = probes_needed(&c.steps, plan.max_probe_rate);
            if more.is_empty() || probe_rounds == MAX_PROBE_ROUNDS {
                break;
            }
            rates.extend(more);
            probing = true;
            probe_rounds += 1;
            // Each probe starts from a fresh target.
            if let Some(t) = target.take() {
                t.stop();
            }
        }
        let rate = rates[i];
        i += 1;
        let t = match target.as_mut() {
            Some(t) => t,
            None => target.insert(fresh(spec, env, client, scenario, plan).await?),
        };
        c.peers = t.addrs.len();
        let mut s = step(scenario, t, plan, dir, rate, &tag).await;
        s.probe = probing;
        if let Err(e) = t.check_alive() {
            s.sustained = false;
            s.note = format!("target died: {e:#}");
        }
        print_step(&c.target, scenario, &s);
        let sustained = s.sustained;
        c.steps.push(s);
        if sustained {
            misses = 0;
            tokio::time::sleep(plan.pause).await;
        } else {
            // Start over from a fresh target: the next step must not inherit a backlog.
            if let Some(t) = target.take() {
                t.stop();
            }
            misses += 1;
            if !probing && plan.stop_after_failures > 0 && misses >= plan.stop_after_failures {
                i = rates.len();
            }
        }
        if probing {
            if let Some(t) = target.take() {
                t.stop();
            }
        }
    }
    if let Some(t) = target.take() {
        t.stop();
    }
    Ok(())
}

fn print_step(target: &str, scenario: Scenario, s: &Step) {
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
    println!(
        "  {target:<11} {:<22} {}offered {:>5}/s (actual {:>7.1}) achieved {:>7.1}/s ok {:>6} failed {:>6} retrans {:>5.2}% p50 {:>4} ms p99 {:>5} ms {}{}",
        scenario.name(),
        if s.probe { "probe " } else { "" },
        s.offered,
        s.stats.offered_actual,
        s.stats.achieved,
        s.stats.successful,
        s.stats.failed,
        s.retrans_pct,
        ms(s.latency.p50_ms),
        ms(s.latency.p99_ms),
        if s.sustained { "sustained" } else { "NOT sustained" },
        if s.note.is_empty() { String::new() } else { format!(" ({})", s.note) },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(offered: u32, ok: u64, failed: u64, retrans: f64, actual: f64) -> Step {
        let mut s = Step {
            offered,
            calls: u64::from(offered) * 10,
            retrans_pct: retrans,
            ..Step::default()
        };
        s.stats.successful = ok;
        s.stats.failed = failed;
        s.stats.offered_actual = actual;
        s.stats.achieved = ok as f64 / 10.0;
        s.sustained = is_sustained(&s);
        s
    }

    #[test]
    fn sustained_needs_no_failure_all_calls_few_retransmissions_and_the_rate_offered() {
        assert!(step(1000, 10_000, 0, 0.5, 995.0).sustained);
        assert!(
            !step(1000, 9_999, 1, 0.0, 1000.0).sustained,
            "a failed call"
        );
        assert!(
            !step(1000, 9_990, 0, 0.0, 1000.0).sustained,
            "unfinished calls"
        );
        assert!(
            !step(1000, 10_000, 0, 1.0, 1000.0).sustained,
            "1 % retransmissions"
        );
        assert!(
            !step(1000, 10_000, 0, 0.0, 850.0).sustained,
            "SIPp fell behind"
        );
        let mut s = step(1000, 10_000, 0, 0.0, 1000.0);
        s.stats.achieved = 611.0;
        assert!(
            !is_sustained(&s),
            "every call succeeded, but late: a backlog"
        );
    }

    #[test]
    fn highest_sustained_rate_and_dips() {
        let steps = vec![
            step(250, 2500, 0, 0.0, 250.0),
            step(500, 5000, 0, 0.0, 500.0),
            step(1000, 9000, 1000, 3.0, 1000.0),
            step(1500, 15_000, 0, 0.2, 1500.0),
            step(2000, 12_000, 8000, 40.0, 2000.0),
        ];
        assert_eq!(highest_sustained(&steps), Some((1500, true)));
        assert_eq!(highest_sustained(&steps[..2]), Some((500, false)));
        assert_eq!(highest_sustained(&steps[2..3]), None);
        assert_eq!(highest_sustained(&[]), None);
    }

    #[test]
    fn probes_are_the_unmeasured_multiples_below_the_cap() {
        let steps = vec![
            step(500, 5000, 0, 0.0, 500.0),
            step(1000, 10_000, 0, 0.0, 1000.0),
            step(2000, 10_000, 10_000, 30.0, 2000.0),
        ];
        // 2x1000 was measured; 4x1000 was not.
        assert_eq!(probes_needed(&steps, 10_000), vec![4000]);
        assert_eq!(probes_needed(&steps, 3000), Vec::<u32>::new());
        assert_eq!(probes_needed(&steps[2..], 10_000), Vec::<u32>::new());
        assert!(step_at(&steps, 1010).is_some() && step_at(&steps, 1100).is_none());
    }

    #[test]
    fn sustained_probes_lead_to_probes_of_their_own_multiples() {
        let mut steps = vec![
            step(200, 2000, 0, 0.0, 200.0),
            step(1000, 9000, 1000, 5.0, 1000.0),
            step(3000, 9000, 21_000, 50.0, 3000.0),
        ];
        assert_eq!(probes_needed(&steps, 16_000), vec![400, 800]);
        steps.push(step(400, 4000, 0, 0.0, 400.0));
        steps.push(step(800, 8000, 0, 0.0, 800.0));
        assert_eq!(probes_needed(&steps, 16_000), vec![1600, 3200]);
        steps.push(step(1600, 9000, 7000, 30.0, 1600.0));
        steps.push(step(3200, 9000, 23_000, 60.0, 3200.0));
        assert!(probes_needed(&steps, 16_000).is_empty());
    }

    #[test]
    fn a_curve_reports_goodput_at_the_multiples() {
        let mut s4 = step(4000, 8000, 32_000, 60.0, 4000.0);
        s4.stats.achieved = 812.5;
        let mut s2 = step(2000, 14_000, 6000, 20.0, 2000.0);
        s2.stats.achieved = 1400.0;
        let mut c = Curve {
            steps: vec![s4, s2, step(1000, 10_000, 0, 0.0, 1000.0)],
            ..Curve::default()
        };
        c.finish();
        assert_eq!(c.steps[0].offered, 1000);
        assert_eq!(c.highest_sustained, Some(1000));
        assert_eq!((c.goodput_2x, c.goodput_4x), (Some(1400.0), Some(812.5)));
        assert!(!c.non_monotonic);
    }

    #[test]
    fn injection_files_spread_calls_over_the_peers() {
        let addrs: Vec<SocketAddr> = vec![
            "127.0.0.1:5000".parse().unwrap(),
            "127.0.0.1:5001".parse().unwrap(),
        ];
        assert_eq!(
            inject(Scenario::PublishModifyRemove, &addrs, 3),
            "SEQUENTIAL\n127.0.0.1;5000\n127.0.0.1;5001\n"
        );
        assert_eq!(
            inject(Scenario::SubscribeUnsubscribe, &addrs, 3),
            "SEQUENTIAL\npool0;127.0.0.1;5000\npool1;127.0.0.1;5001\npool2;127.0.0.1;5000\n"
        );
    }
}
