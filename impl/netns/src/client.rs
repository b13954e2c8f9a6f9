//! The history-recording load client. Runs inside its own network namespace:
//!
//! * one publisher per presentity, each a sequential SIP-If-Match chain: version `v` is sent as
//!   `<note>sxv=PRES/v</note>` in the PIDF body; a 200 moves the chain to the new SIP-ETag, a
//!   412 (or another 4xx) starts a fresh event state, no answer or a 5xx moves to the next peer;
//! * `watchers` subscriptions per presentity, each through a different peer, refreshed within
//!   the dialog, at the address its latest NOTIFY's `Contact` names (NOTIFY is a target refresh
//!   request: a dialog a leaving peer handed to another moves there); a terminated NOTIFY, an error response or no answer ends the dialog and a new
//!   SUBSCRIBE (through the next peer) starts another;
//! * after `publish_secs` the publishers stop (`quiesce`); half the convergence bound later a
//!   fresh SUBSCRIBE per presentity (watcher `final`) reads the state; after the bound every
//!   dialog is unsubscribed.
//!
//! Every request, final response and NOTIFY goes to the history with its wall-clock time.

use crate::history::{now_us, version_in, Event, Writer};
use anyhow::Context;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sascribe_sipua::{tag, Client, Msg, Notification};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The client's settings.
#[derive(Clone, Debug, clap::Args)]
pub struct ClientArgs {
    /// SIP addresses of the peers (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    pub peers: Vec<SocketAddr>,
    /// Address to bind the client's sockets to.
    #[arg(long)]
    pub bind: IpAddr,
    /// History file (JSON lines, appended to).
    #[arg(long)]
    pub history: PathBuf,
    /// Presentities, each with one publisher.
    #[arg(long, default_value_t = 20)]
    pub presentities: usize,
    /// Watchers per presentity, each through a different peer.
    #[arg(long, default_value_t = 3)]
    pub watchers: usize,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 20)]
    pub publish_secs: u64,
    /// The convergence bound in seconds: after quiesce, watchers have this long to show the
    /// latest acknowledged version (the final reads happen half-way).
    #[arg(long, default_value_t = 10)]
    pub converge_secs: u64,
    /// Milliseconds between one publisher's PUBLISHes.
    #[arg(long, default_value_t = 400)]
    pub interval_ms: u64,
    /// Seed of the client's choices (jitter) and of the presentity names.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// What the NOTIFY receiver needs to know about a dialog.
struct DialogInfo {
    pres: String,
    ended: mpsc::UnboundedSender<()>,
    /// Where the dialog's in-dialog requests go: the Contact of its latest NOTIFY (NOTIFY is a
    /// target refresh request; a dialog handed to another peer moves there).
    target: tokio::sync::watch::Sender<Option<SocketAddr>>,
}

struct Ctx {
    sip: Client,
    peers: Vec<SocketAddr>,
    log: mpsc::UnboundedSender<Event>,
    dialogs: Mutex<HashMap<String, DialogInfo>>,
    ops: AtomicU64,
    run: String,
}

impl Ctx {
    fn op(&self) -> u64 {
        self.ops.fetch_add(1, Ordering::Relaxed)
    }
    fn log(&self, e: Event) {
        let _ = self.log.send(e);
    }
    fn uri(&self, pres: &str) -> String {
        format!("sip:{pres}-{}@sx.test", self.run)
    }
}

const GIVE_UP: Duration = Duration::from_secs(6);

/// Runs the client to the end; the history is complete when it returns.
pub async fn run(args: ClientArgs) -> anyhow::Result<()> {
    let (ntx, nrx) = mpsc::unbounded_channel();
    let sip = Client::bind_on(args.bind, 4, Some(ntx))
        .await
        .context("binding the client")?;
    let (log, mut lrx) = mpsc::unbounded_channel::<Event>();
    let mut writer = Writer::open(&args.history)?;
    let writer_task = tokio::spawn(async move {
        while let Some(e) = lrx.recv().await {
            if let Err(err) = writer.write(&e) {
                eprintln!("history: {err:#}");
            }
        }
    });
    let ctx = Arc::new(Ctx {
        sip,
        peers: args.peers.clone(),
        log,
        dialogs: Mutex::new(HashMap::new()),
        ops: AtomicU64::new(1),
        run: format!("{:x}", args.seed),
    });
    tokio::spawn(receive(ctx.clone(), nrx));

    let start = Instant::now();
    let quiesce = start + Duration::from_secs(args.publish_secs);
    let final_read = quiesce + Duration::from_millis(args.converge_secs * 500);
    let unsubscribe = quiesce + Duration::from_secs(args.converge_secs + 1);
    let mut tasks = Vec::new();
    for w in 0..args.watchers {
        for p in 0..args.presentities {
            let gw = p + 1 + w * 2;
            tasks.push(tokio::spawn(watch(
                ctx.clone(),
                format!("p{p}"),
                format!("w{w}"),
                gw,
                start,
                unsubscribe,
                args.seed ^ ((w * 1000 + p) as u64) << 8,
            )));
        }
    }
    // Publishers start once the watchers had a moment to subscribe.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut pubs = Vec::new();
    for p in 0..args.presentities {
        pubs.push(tokio::spawn(publish(
            ctx.clone(),
            format!("p{p}"),
            p,
            quiesce,
            Duration::from_millis(args.interval_ms),
            args.seed ^ (p as u64) << 32,
        )));
    }
    for t in pubs {
        let _ = t.await;
    }
    tokio::time::sleep_until(quiesce.into()).await;
    ctx.log(Event::Quiesce { t: now_us() });
    tokio::time::sleep_until(final_read.into()).await;
    for p in 0..args.presentities {
        tasks.push(tokio::spawn(watch(
            ctx.clone(),
            format!("p{p}"),
            "final".into(),
            p + 3,
            final_read,
            unsubscribe,
            args.seed ^ 0xf1a1 ^ (p as u64) << 16,
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
    // Terminated NOTIFYs of the unsubscribes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(ctx);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer_task).await;
    Ok(())
}

/// Logs every NOTIFY (already answered 200 by the SIP client) and ends dialogs on a terminated
/// one.
async fn receive(ctx: Arc<Ctx>, mut rx: mpsc::UnboundedReceiver<Notification>) {
    while let Some(n) = rx.recv().await {
        let t = now_us().saturating_sub(n.at.elapsed().as_micros() as u64);
        let terminated = n
            .msg
            .header("Subscription-State")
            .is_some_and(|s| s.trim().to_ascii_lowercase().starts_with("terminated"));
        let cseq = n
            .msg
            .header("CSeq")
            .and_then(|c| c.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let seq = n
            .msg
            .header("X-Sascribe-Seq")
            .and_then(|s| s.trim().parse().ok());
        let contact = n.msg.header("Contact").and_then(contact_addr);
        let version = {
            let d = ctx.dialogs.lock().expect("dialogs");
            let info = d.get(&n.call_id);
            if terminated {
                if let Some(i) = info {
                    let _ = i.ended.send(());
                }
            } else if let (Some(i), Some(c)) = (info, contact) {
                i.target.send_replace(Some(c));
            }
            info.and_then(|i| version_in(&n.body, &i.pres))
        };
        ctx.log(Event::Notify {
            t,
            dialog: n.call_id,
            cseq,
            terminated,
            version,
            seq,
            contact: contact.map(|c| c.to_string()),
        });
    }
}

/// The address of a `Contact` whose URI names an IP literal and port (`<sip:10.0.0.3:5060>`).
fn contact_addr(v: &str) -> Option<SocketAddr> {
    let v = v.trim();
    let uri = v
        .strip_prefix('<')
        .and_then(|r| r.split('>').next())
        .unwrap_or(v);
    let hostport = uri.strip_prefix("sip:")?.split([';', '?']).next()?;
    let hostport = hostport.rsplit('@').next()?;
    hostport.parse().ok()
}

fn pidf(uri: &str, pres: &str, version: u64, chain: u64) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{uri}\"><tuple id=\"c{chain}\"><status><basic>open</basic></status></tuple><note>sxv={pres}/{version}</note></presence>"
    )
}

/// One presentity's publisher: a SIP-If-Match chain until `until`.
async fn publish(
    ctx: Arc<Ctx>,
    pres: String,
    mut gw: usize,
    until: Instant,
    interval: Duration,
    seed: u64,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let uri = ctx.uri(&pres);
    let mut etag: Option<String> = None;
    let mut version = 0u64;
    let mut chain = 0u64;
    while Instant::now() < until {
        version += 1;
        let peer = ctx.peers[gw % ctx.peers.len()];
        let n = ctx.sip.unique();
        let body = pidf(&uri, &pres, version, chain);
        let if_match = etag
            .as_ref()
            .map(|e| format!("SIP-If-Match: {e}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "PUBLISH {uri} SIP/2.0\r\nMax-Forwards: 70\r\nFrom: <{uri}>;tag=pf{n}\r\nTo: <{uri}>\r\nCall-ID: pub{n}-{}\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nExpires: 600\r\n{if_match}Content-Type: application/pidf+xml\r\nContent-Length: {}\r\n\r\n{body}",
            ctx.run,
            body.len()
        );
        let op = ctx.op();
        ctx.log(Event::Publish {
            t: now_us(),
            op,
            pres: pres.clone(),
            peer: peer.to_string(),
            version,
            if_match: etag.clone(),
        });
        let r = ctx.sip.request(gw, peer, &req, GIVE_UP).await;
        let status = r.as_ref().ok().and_then(Msg::status);
        let new_tag = r
            .as_ref()
            .ok()
            .and_then(|m| m.header("SIP-ETag"))
            .map(str::to_string);
        ctx.log(Event::PublishResult {
            t: now_us(),
            op,
            pres: pres.clone(),
            version,
            status,
            etag: new_tag.clone(),
        });
        match status {
            Some(200) => etag = new_tag,
            Some(s) if (400..500).contains(&s) && s != 408 => {
                etag = None;
                chain += 1;
            }
            _ => gw += 1,
        }
        let jitter = rng.random_range(0..=interval.as_millis() as u64 / 2);
        tokio::time::sleep(interval + Duration::from_millis(jitter)).await;
    }
}

/// One watcher of one presentity: subscribes, refreshes, resubscribes when a dialog ends,
/// unsubscribes at `end`.
async fn watch(
    ctx: Arc<Ctx>,
    pres: String,
    watcher: String,
    mut gw: usize,
    begin: Instant,
    end: Instant,
    seed: u64,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    tokio::time::sleep_until(begin.into()).await;
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..500))).await;
    let uri = ctx.uri(&pres);
    while Instant::now() < end {
        let peer = ctx.peers[gw % ctx.peers.len()];
        let n = ctx.sip.unique();
        let call_id = format!("sub{n}-{}-{watcher}-{pres}", ctx.run);
        let from_tag = format!("wf{n}");
        let (etx, mut erx) = mpsc::unbounded_channel();
        let (target, target_rx) = tokio::sync::watch::channel(None);
        ctx.dialogs.lock().expect("dialogs").insert(
            call_id.clone(),
            DialogInfo {
                pres: pres.clone(),
                ended: etx,
                target,
            },
        );
        let mut to_tag: Option<String> = None;
        let mut cseq = 1u32;
        let mut expires = 600u32;
        let mut initial = true;
        loop {
            let local = ctx.sip.local(gw);
            let peer = target_rx.borrow().unwrap_or(peer);
            let to = to_tag
                .as_ref()
                .map(|t| format!(";tag={t}"))
                .unwrap_or_default();
            let req = format!(
                "SUBSCRIBE {uri} SIP/2.0\r\nMax-Forwards: 70\r\nFrom: <sip:{watcher}-{pres}@sx.test>;tag={from_tag}\r\nTo: <{uri}>{to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} SUBSCRIBE\r\nContact: <sip:{watcher}@{local}>\r\nEvent: presence\r\nAccept: application/pidf+xml\r\nExpires: {expires}\r\nContent-Length: 0\r\n\r\n"
            );
            let op = ctx.op();
            ctx.log(Event::Subscribe {
                t: now_us(),
                op,
                pres: pres.clone(),
                watcher: watcher.clone(),
                dialog: call_id.clone(),
                peer: peer.to_string(),
                expires,
                initial,
            });
            let r = ctx.sip.request(gw, peer, &req, GIVE_UP).await;
            let status = r.as_ref().ok().and_then(Msg::status);
            ctx.log(Event::SubscribeResult {
                t: now_us(),
                op,
                dialog: call_id.clone(),
                status,
            });
            if expires == 0 {
                return;
            }
            match status {
                Some(s) if (200..300).contains(&s) => {
                    if to_tag.is_none() {
                        to_tag = r
                            .ok()
                            .and_then(|m| m.header("To").and_then(tag).map(str::to_string));
                    }
                }
                Some(s) if (400..500).contains(&s) && s != 408 => break,
                _ => {
                    gw += 1;
                    break;
                }
            }
            initial = false;
            cseq += 1;
            let refresh = Duration::from_millis(rng.random_range(6_000..10_000));
            let wake = (Instant::now() + refresh).min(end);
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = erx.recv() => break,
            }
            if Instant::now() >= end {
                expires = 0;
            }
        }
        // The dialog ended (terminated NOTIFY, error response or no answer): start another.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::contact_addr;

    #[test]
    fn contact_addresses() {
        let a = Some("10.9.0.3:5060".parse().unwrap());
        assert_eq!(contact_addr("<sip:10.9.0.3:5060>"), a);
        assert_eq!(contact_addr("<sip:10.9.0.3:5060;transport=tcp>"), a);
        assert_eq!(contact_addr("sip:gw@10.9.0.3:5060"), a);
        assert_eq!(contact_addr("<sip:peer.example.test>"), None);
        assert_eq!(contact_addr("garbage"), None);
    }
}
