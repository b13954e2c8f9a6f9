//! Fan-out: W watchers of one presentity, spread round robin over the target's SIP addresses,
//! then modify PUBLISHes one at a time; the latency from sending each PUBLISH to each
//! watcher's NOTIFY carrying it.

use crate::load::{publish_req, Dialog};
use crate::sip::{self, Client, Notification};
use crate::sipp::percentile;
use crate::targets::{self, Env, Running, Spec};
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

#[derive(Clone, Debug)]
pub struct FanPlan {
    pub watchers: Vec<usize>,
    pub rounds: usize,
    /// How long a round waits for the last NOTIFY.
    pub round_timeout: Duration,
}

/// One (target, W) measurement.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FanResult {
    pub target: String,
    pub peers: usize,
    pub watchers: usize,
    pub subscribed: usize,
    /// Watchers that got the initial NOTIFY with the published state.
    pub initially_notified: usize,
    pub rounds: usize,
    /// NOTIFYs expected (subscribed x rounds) and received in time.
    pub expected: usize,
    pub received: usize,
    /// Rounds in which every subscribed watcher was notified.
    pub complete_rounds: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Requests the load client retransmitted during this W.
    pub retransmissions: u64,
    /// UDP datagrams dropped on full receive buffers during this W (whole machine).
    pub udp_drops: Option<u64>,
    /// Of which on the target's own sockets.
    pub target_drops: Option<u64>,
    pub error: Option<String>,
}

/// Runs every W of `plan` on a fresh `spec`.
pub async fn fanout(spec: &Spec, env: &Env, plan: &FanPlan) -> Vec<FanResult> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let started = async {
        let client = Client::bind(32, Some(tx)).await?;
        let t = targets::start(spec, env, &client).await?;
        anyhow::Ok((client, t))
    }
    .await;
    let (client, mut t) = match started {
        Ok(x) => x,
        Err(e) => {
            return plan
                .watchers
                .iter()
                .map(|&w| FanResult {
                    target: spec.name(),
                    watchers: w,
                    error: Some(format!("{e:#}")),
                    ..FanResult::default()
                })
                .collect()
        }
    };
    let mut out = Vec::new();
    for &w in &plan.watchers {
        let mut r = FanResult {
            target: spec.name(),
            peers: t.addrs.len(),
            watchers: w,
            rounds: plan.rounds,
            ..FanResult::default()
        };
        let retrans0 = client.retransmissions();
        let drops0 = crate::sys::udp_rcvbuf_errors();
        let target0 = t.socket_drops();
        if let Err(e) = one(&client, &mut t, &mut rx, plan, &mut r).await {
            r.error = Some(format!("{e:#}"));
        }
        r.retransmissions = client.retransmissions() - retrans0;
        r.udp_drops = crate::sys::drops_since(drops0);
        r.target_drops = t
            .socket_drops()
            .zip(target0)
            .map(|(a, b)| a.saturating_sub(b));
        println!(
            "  {:<11} W={:<5} notified {}/{} (complete rounds {}/{}) publish→NOTIFY p50 {} ms p99 {} ms{}",
            r.target,
            w,
            r.received,
            r.expected,
            r.complete_rounds,
            r.rounds,
            r.p50_ms.map_or("-".into(), |v| format!("{v:.2}")),
            r.p99_ms.map_or("-".into(), |v| format!("{v:.2}")),
            r.error.as_ref().map_or(String::new(), |e| format!(" error: {e}")),
        );
        out.push(r);
        // Late NOTIFYs of this W must not be counted for the next.
        tokio::time::sleep(Duration::from_millis(500)).await;
        while rx.try_recv().is_ok() {}
    }
    t.stop();
    out
}

/// Whether a NOTIFY body carries publication `marker` (the PIDF note `marker`).
pub fn carries(body: &str, marker: &str) -> bool {
    body.contains(&format!(">{marker}<"))
}

async fn one(
    client: &Client,
    t: &mut Running,
    rx: &mut mpsc::UnboundedReceiver<Notification>,
    plan: &FanPlan,
    r: &mut FanResult,
) -> anyhow::Result<()> {
    let w = r.watchers;
    let addrs = t.addrs.clone();
    let n = addrs.len();
    let presentity = format!("fan{w}x{}", client.unique());
    let give_up = Duration::from_secs(8);
    let marker = |k: usize| format!("{presentity}-v{k}");

    let req = publish_req(client, &presentity, 1, None, 3600, Some(&marker(0)));
    let resp = client.request(0, addrs[0], &req, give_up).await?;
    let mut etag = resp
        .header("SIP-ETag")
        .filter(|_| resp.status() == Some(200))
        .with_context(|| format!("initial PUBLISH answered {}", resp.first))?
        .to_string();

    // Subscribe the watchers, round robin over the peers.
    let c = client.clone();
    let (p, a) = (presentity.clone(), addrs.clone());
    let (dialogs, _) = sip::drive(w, 100, None, Duration::from_secs(120), move |i| {
        let (c, p, a) = (c.clone(), p.clone(), a.clone());
        async move {
            let sock = i % c.sockets();
            let mut d = Dialog::new(&c, &p, &format!("{p}w{i}"), sock, a[i % a.len()]);
            let ok = d.subscribe(&c, 1, 3600, Duration::from_secs(8)).await;
            ok.then_some(d)
        }
    })
    .await;
    let dialogs: Vec<Dialog> = dialogs.into_iter().flatten().collect();
    r.subscribed = dialogs.len();
    let index: HashMap<String, usize> = dialogs
        .iter()
        .enumerate()
        .map(|(i, d)| (d.call_id.clone(), i))
        .collect();
    let got = collect(rx, &index, &marker(0), Instant::now(), plan.round_timeout).await;
    r.initially_notified = got.iter().filter(|x| x.is_some()).count();
    if r.subscribed == 0 {
        bail!("no watcher could subscribe");
    }

    let mut lat: Vec<f64> = Vec::new();
    for k in 1..=plan.rounds {
        t.check_alive()?;
        let req = publish_req(client, &presentity, 1, Some(&etag), 3600, Some(&marker(k)));
        let t0 = Instant::now();
        let c = client.clone();
        let dest = addrs[k % n];
        let publish = tokio::spawn(async move { c.request(k, dest, &req, give_up).await });
        let got = collect(rx, &index, &marker(k), t0, plan.round_timeout).await;
        let resp = publish.await.context("publish task")??;
        etag = match (resp.status(), resp.header("SIP-ETag")) {
            (Some(200), Some(e)) => e.to_string(),
            _ => bail!("modify PUBLISH {k} answered {}", resp.first),
        };
        let this: Vec<f64> = got
            .iter()
            .flatten()
            .map(|d| d.as_secs_f64() * 1e3)
            .collect();
        r.expected += r.subscribed;
        r.received += this.len();
        if this.len() == r.subscribed {
            r.complete_rounds += 1;
        }
        lat.extend(this);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lat.sort_by(f64::total_cmp);
    r.p50_ms = percentile(&lat, 0.5);
    r.p99_ms = percentile(&lat, 0.99);
    r.max_ms = lat.last().copied();

    // Clean up: un-SUBSCRIBE everyone, remove the publication.
    let c = client.clone();
    let _ = sip::drive(
        dialogs.len(),
        100,
        None,
        Duration::from_secs(60),
        move |i| {
            let (c, mut d) = (c.clone(), dialogs[i].clone());
            async move { d.subscribe(&c, 2, 0, Duration::from_secs(4)).await }
        },
    )
    .await;
    let req = publish_req(client, &presentity, 1, Some(&etag), 0, None);
    let _ = client.request(0, addrs[0], &req, give_up).await;
    Ok(())
}

/// Waits until every watcher in `index` got a NOTIFY carrying `marker` (or `timeout` after
/// `t0`); per watcher, the delay from `t0` to the first such NOTIFY.
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<Notification>,
    index: &HashMap<String, usize>,
    marker: &str,
    t0: Instant,
    timeout: Duration,
) -> Vec<Option<Duration>> {
    let mut got = vec![None; index.len()];
    let mut left = index.len();
    let deadline = tokio::time::Instant::from_std(t0 + timeout);
    while left > 0 {
        let Ok(Some(note)) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            break;
        };
        if !carries(&note.body, marker) {
            continue;
        }
        if let Some(&i) = index.get(&note.call_id) {
            if got[i].is_none() {
                got[i] = Some(note.at.saturating_duration_since(t0));
                left -= 1;
            }
        }
    }
    got
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_do_not_match_their_prefixes() {
        let body = "<tuple id=\"bench\"><note>fan10x3-v12</note></tuple>";
        assert!(carries(body, "fan10x3-v12"));
        assert!(!carries(body, "fan10x3-v1"));
        assert!(!carries(body, "fan10x3-v2"));
    }

    #[tokio::test]
    async fn collect_takes_the_first_matching_notify_per_watcher() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let index: HashMap<String, usize> = [("a", 0), ("b", 1), ("c", 2)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let t0 = Instant::now();
        let note = |id: &str, body: &str, ms: u64| Notification {
            call_id: id.into(),
            body: body.into(),
            at: t0 + Duration::from_millis(ms),
            msg: sip::Msg::parse(b"NOTIFY sip:w@x SIP/2.0\r\n\r\n").unwrap(),
        };
        tx.send(note("a", "<note>m-v1</note>", 5)).unwrap();
        tx.send(note("b", "<note>m-v0</note>", 6)).unwrap();
        tx.send(note("a", "<note>m-v1</note>", 9)).unwrap();
        tx.send(note("zz", "<note>m-v1</note>", 7)).unwrap();
        tx.send(note("b", "<note>m-v1</note>", 8)).unwrap();
        let got = collect(&mut rx, &index, "m-v1", t0, Duration::from_millis(100)).await;
        assert_eq!(
            got,
            vec![
                Some(Duration::from_millis(5)),
                Some(Duration::from_millis(8)),
                None
            ]
        );
        assert!(
            t0.elapsed() >= Duration::from_millis(100),
            "waited for the missing watcher"
        );
    }
}
