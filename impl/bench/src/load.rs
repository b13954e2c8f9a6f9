//! Requests of the Rust load client, and the memory measurement: RSS/PSS (and Kamailio's
//! shared memory) per 100,000 presentities and per 100,000 active subscriptions.

use crate::sip::{self, Client};
use crate::targets::{self, Env, MemSnapshot, Spec};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A PUBLISH for `sip:USER@example.test` (no Via: the client adds it). `note` = Some: a PIDF
/// body (basic open) carrying that note; None: no body (refresh, or remove with Expires: 0).
pub fn publish_req(
    c: &Client,
    user: &str,
    cseq: u32,
    if_match: Option<&str>,
    expires: u32,
    note: Option<&str>,
) -> String {
    let n = c.unique();
    let pid = std::process::id();
    let mut r = format!(
        "PUBLISH sip:{user}@example.test SIP/2.0\r\nMax-Forwards: 70\r\nFrom: <sip:{user}@example.test>;tag=p{n}\r\nTo: <sip:{user}@example.test>\r\nCall-ID: pub{n}-{pid}@bench\r\nCSeq: {cseq} PUBLISH\r\nEvent: presence\r\nExpires: {expires}\r\n"
    );
    if let Some(e) = if_match {
        r.push_str(&format!("SIP-If-Match: {e}\r\n"));
    }
    match note {
        Some(note) => {
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:{user}@example.test\">\r\n<tuple id=\"bench\"><status><basic>open</basic></status><note>{note}</note></tuple>\r\n</presence>\r\n"
            );
            r.push_str(&format!(
                "Content-Type: application/pidf+xml\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ));
        }
        None => r.push_str("Content-Length: 0\r\n\r\n"),
    }
    r
}

/// One watcher's subscription dialog to `sip:PRESENTITY@example.test`.
#[derive(Clone, Debug)]
pub struct Dialog {
    pub presentity: String,
    pub watcher: String,
    pub call_id: String,
    pub from_tag: String,
    /// The notifier's tag, from the 200.
    pub to_tag: Option<String>,
    pub sock: usize,
    pub dest: SocketAddr,
}

impl Dialog {
    pub fn new(c: &Client, presentity: &str, watcher: &str, sock: usize, dest: SocketAddr) -> Self {
        let n = c.unique();
        Dialog {
            presentity: presentity.into(),
            watcher: watcher.into(),
            call_id: format!("sub{n}-{}@bench", std::process::id()),
            from_tag: format!("s{n}"),
            to_tag: None,
            sock,
            dest,
        }
    }

    pub fn subscribe_req(&self, c: &Client, cseq: u32, expires: u32) -> String {
        let Dialog {
            presentity: p,
            watcher: w,
            ..
        } = self;
        let to_tag = self
            .to_tag
            .as_ref()
            .map_or(String::new(), |t| format!(";tag={t}"));
        format!(
            "SUBSCRIBE sip:{p}@example.test SIP/2.0\r\nMax-Forwards: 70\r\nFrom: <sip:{w}@example.test>;tag={}\r\nTo: <sip:{p}@example.test>{to_tag}\r\nCall-ID: {}\r\nCSeq: {cseq} SUBSCRIBE\r\nContact: <sip:{w}@{}>\r\nEvent: presence\r\nAccept: application/pidf+xml\r\nExpires: {expires}\r\nContent-Length: 0\r\n\r\n",
            self.from_tag,
            self.call_id,
            c.local(self.sock)
        )
    }

    /// Sends SUBSCRIBE (CSeq `cseq`); true on a 2xx, remembering the notifier's tag.
    pub async fn subscribe(
        &mut self,
        c: &Client,
        cseq: u32,
        expires: u32,
        give_up: Duration,
    ) -> bool {
        let req = self.subscribe_req(c, cseq, expires);
        match c.request(self.sock, self.dest, &req, give_up).await {
            Ok(r) if r.status().is_some_and(|s| (200..300).contains(&s)) => {
                if self.to_tag.is_none() {
                    self.to_tag = r.header("To").and_then(sip::tag).map(str::to_string);
                }
                true
            }
            _ => false,
        }
    }
}

/// Memory per 100,000 of something, in MB (10^6 bytes).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Per100k {
    /// Kamailio: growth of the shared memory in use (kamcmd core.shmmem real_used).
    pub shm_mb: Option<f64>,
    /// Growth of the PSS summed over the target's processes.
    pub pss_mb: f64,
    /// Growth of the RSS summed over the target's processes.
    pub rss_mb: f64,
}

fn per_100k(before: &MemSnapshot, after: &MemSnapshot, n: usize) -> Per100k {
    let scale = |b: u64, a: u64| (a as f64 - b as f64) / 1e6 * 100_000.0 / n.max(1) as f64;
    Per100k {
        shm_mb: match (before.shm_real_used, after.shm_real_used) {
            (Some(b), Some(a)) => Some(scale(b, a)),
            _ => None,
        },
        pss_mb: scale(before.procs.pss_sum, after.procs.pss_sum),
        rss_mb: scale(before.procs.rss_sum, after.procs.rss_sum),
    }
}

/// The memory measurement of one target.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MemResult {
    pub target: String,
    pub peers: usize,
    pub requested: usize,
    pub presentities: usize,
    pub subscriptions: usize,
    pub notifies: u64,
    /// Requests the load client retransmitted (no answer within T1, 2T1, ...).
    pub retransmissions: u64,
    /// UDP datagrams dropped on full receive buffers while loading (whole machine).
    pub udp_drops: Option<u64>,
    /// Of which on the target's own sockets.
    pub target_drops: Option<u64>,
    pub publish_s: f64,
    pub subscribe_s: f64,
    pub baseline: MemSnapshot,
    pub after_publish: MemSnapshot,
    pub after_subscribe: MemSnapshot,
    pub per_100k_presentities: Per100k,
    pub per_100k_subscriptions: Per100k,
    pub error: Option<String>,
}

/// How the memory measurement loads a target.
#[derive(Clone, Debug)]
pub struct MemPlan {
    pub count: usize,
    pub window: usize,
    /// Requests/s cap (0: as fast as the window allows).
    pub rate: f64,
    pub settle: Duration,
    /// Each of the two loading phases stops after this long; the figures are then scaled from
    /// what was stored (the table shows how many of the requested).
    pub phase_limit: Duration,
}

/// `n` distinct presentities with one PUBLISH each, then `n` subscriptions (watcher i to
/// presentity i), all with Expires: 3600, round robin over the target's SIP addresses.
pub async fn memory(spec: &Spec, env: &Env, plan: &MemPlan) -> MemResult {
    let mut r = MemResult {
        target: spec.name(),
        requested: plan.count,
        ..MemResult::default()
    };
    if let Err(e) = memory_inner(spec, env, plan, &mut r).await {
        r.error = Some(format!("{e:#}"));
    }
    r
}

async fn memory_inner(
    spec: &Spec,
    env: &Env,
    plan: &MemPlan,
    r: &mut MemResult,
) -> anyhow::Result<()> {
    let client = Client::bind(8, None).await?;
    let drops0 = crate::sys::udp_rcvbuf_errors();
    let mut t = targets::start(spec, env, &client).await?;
    r.peers = t.addrs.len();
    let target0 = t.socket_drops();
    tokio::time::sleep(plan.settle).await;
    r.baseline = t.memory().await;
    let rate = (plan.rate > 0.0).then_some(plan.rate);
    let limit = plan.phase_limit;
    let start = Instant::now();
    let (c, a) = (client.clone(), t.addrs.clone());
    let (out, _) = sip::drive(plan.count, plan.window, rate, limit, move |i| {
        let (c, a) = (c.clone(), a.clone());
        async move {
            let req = publish_req(&c, &format!("mem{i}"), 1, None, 3600, Some("m"));
            let resp = c
                .request(i, a[i % a.len()], &req, Duration::from_secs(16))
                .await;
            resp.is_ok_and(|m| m.status() == Some(200))
        }
    })
    .await;
    r.publish_s = start.elapsed().as_secs_f64();
    r.presentities = out.iter().filter(|ok| **ok).count();
    t.check_alive()?;
    tokio::time::sleep(plan.settle).await;
    r.after_publish = t.memory().await;
    println!(
        "  {:<11} {} presentities in {:.1} s",
        r.target, r.presentities, r.publish_s
    );

    let start = Instant::now();
    let (c, a) = (client.clone(), t.addrs.clone());
    let (out, _) = sip::drive(plan.count, plan.window, rate, limit, move |i| {
        let (c, a) = (c.clone(), a.clone());
        async move {
            let sock = i % c.sockets();
            let mut d = Dialog::new(
                &c,
                &format!("mem{i}"),
                &format!("w{i}"),
                sock,
                a[i % a.len()],
            );
            d.subscribe(&c, 1, 3600, Duration::from_secs(16)).await
        }
    })
    .await;
    r.subscribe_s = start.elapsed().as_secs_f64();
    r.subscriptions = out.iter().filter(|ok| **ok).count();
    t.check_alive()?;
    tokio::time::sleep(plan.settle).await;
    r.after_subscribe = t.memory().await;
    r.notifies = client.notifies();
    r.retransmissions = client.retransmissions();
    r.udp_drops = crate::sys::drops_since(drops0);
    r.target_drops = t
        .socket_drops()
        .zip(target0)
        .map(|(a, b)| a.saturating_sub(b));
    println!(
        "  {:<11} {} subscriptions in {:.1} s ({} NOTIFYs answered)",
        r.target, r.subscriptions, r.subscribe_s, r.notifies
    );
    r.per_100k_presentities = per_100k(&r.baseline, &r.after_publish, r.presentities);
    r.per_100k_subscriptions = per_100k(&r.after_publish, &r.after_subscribe, r.subscriptions);
    t.stop();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Msg;
    use crate::sys::ProcMem;

    #[tokio::test]
    async fn requests_parse_and_carry_what_was_asked() {
        let c = Client::bind(1, None).await.unwrap();
        let p = publish_req(&c, "alice", 2, Some("e1"), 0, None);
        let m = Msg::parse(p.as_bytes()).unwrap();
        assert_eq!(m.method(), Some("PUBLISH"));
        assert_eq!(m.header("SIP-If-Match"), Some("e1"));
        assert_eq!(m.header("Expires"), Some("0"));
        assert_eq!(m.header("Content-Length"), Some("0"));
        let p = publish_req(&c, "alice", 1, None, 3600, Some("v7"));
        let m = Msg::parse(p.as_bytes()).unwrap();
        assert_eq!(
            m.header("Content-Length").unwrap(),
            m.body.len().to_string()
        );
        assert!(m.body.contains("<note>v7</note>"));
        let mut d = Dialog::new(&c, "alice", "w1", 0, "127.0.0.1:5060".parse().unwrap());
        assert!(!d.subscribe_req(&c, 1, 600).contains(";tag=s0"));
        d.to_tag = Some("nt".into());
        let m = Msg::parse(d.subscribe_req(&c, 2, 0).as_bytes()).unwrap();
        assert_eq!(m.header("To"), Some("<sip:alice@example.test>;tag=nt"));
        assert_eq!(m.key().unwrap(), format!("{} 2 SUBSCRIBE", d.call_id));
        assert_eq!(
            m.header("Contact").unwrap(),
            format!("<sip:w1@{}>", c.local(0))
        );
    }

    #[test]
    fn growth_is_scaled_to_100k() {
        let snap = |shm, pss, rss| MemSnapshot {
            procs: ProcMem {
                processes: 1,
                rss_sum: rss,
                pss_sum: pss,
            },
            shm_real_used: shm,
        };
        let p = per_100k(
            &snap(Some(1_000_000), 0, 0),
            &snap(Some(6_000_000), 2_000_000, 4_000_000),
            50_000,
        );
        assert_eq!(p.shm_mb, Some(10.0));
        assert_eq!((p.pss_mb, p.rss_mb), (4.0, 8.0));
        let p = per_100k(
            &snap(None, 5_000_000, 0),
            &snap(None, 4_000_000, 0),
            100_000,
        );
        assert_eq!((p.shm_mb, p.pss_mb), (None, -1.0));
    }
}
