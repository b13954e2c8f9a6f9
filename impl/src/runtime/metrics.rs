//! The Prometheus endpoint (`--metrics ADDR`): every peer's counters, read from the core at
//! each scrape and encoded with `prometheus-client` in the Prometheus text format (0.0.4),
//! one series per peer (label `peer`: its overlay id in hex).
//!
//! The counters live in the sans-IO core as plain structs ([`crate::HostStats`],
//! [`crate::sip::SipStats`], [`crate::Stats`]); a scrape asks each running peer for a
//! [`Snapshot`] through its [`RuntimeHandle`] and encodes them. The HTTP side is a minimal
//! HTTP/1.0 responder on a tokio TCP listener: `GET /metrics` (or `/`), one response per
//! connection.

use super::{RuntimeHandle, TcpGauges, WRITE_QUEUE_BYTES};
use crate::diag::LATENCY_BUCKETS_MS;
use crate::{Host, HostStats};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What one peer reports at a scrape.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The peer's overlay id (hex): the `peer` label.
    pub peer: String,
    /// Whether it has joined the overlay.
    pub joined: bool,
    /// The host's counters.
    pub stats: HostStats,
    /// Groups this peer is root of.
    pub groups_rooted: usize,
    /// Groups whose record this peer holds as a replica (not root).
    pub groups_replicated: usize,
    /// Groups this peer is a tree member of (a parent, or local subscriptions).
    pub groups_joined: usize,
    /// Tree children over all groups.
    pub tree_children: usize,
    /// Leaf-set size.
    pub leaf_set: usize,
    /// Routing-table entries.
    pub routing_table: usize,
    /// Local calls (and admin/metrics reads) queued for the peer's task.
    pub commands_queued: usize,
    /// Host events in the broadcast buffer not yet seen by the slowest receiver.
    pub events_queued: usize,
    /// The SIP TCP write queues.
    pub tcp: TcpGauges,
}

impl Snapshot {
    /// Reads a host's counters and gauges.
    pub fn of(host: &Host) -> Snapshot {
        let peer = host.peer();
        let mut s = Snapshot {
            peer: host.id().to_string(),
            joined: host.is_ready(),
            stats: host.stats(),
            leaf_set: peer.overlay().leaf.len(),
            routing_table: peer.overlay().rt.filled(),
            ..Snapshot::default()
        };
        for gid in peer.groups() {
            let Some(v) = peer.group_view(gid) else {
                continue;
            };
            if v.is_root {
                s.groups_rooted += 1;
            } else if v.record_seq.is_some() {
                s.groups_replicated += 1;
            }
            if v.parent.is_some() || v.local_subs > 0 {
                s.groups_joined += 1;
            }
            s.tree_children += v.children.len();
        }
        s
    }
}

/// Snapshots of every running peer behind `handles` (stopped ones are left out).
pub async fn gather(handles: &[RuntimeHandle]) -> Vec<Snapshot> {
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        let queued = h.queue_depth();
        let events_queued = h.events_queued();
        let Ok(tcp) = h.tcp_gauges().await else {
            continue;
        };
        if let Ok(mut s) = h.with_host(|host, _| Snapshot::of(host)).await {
            s.commands_queued = queued;
            s.events_queued = events_queued;
            s.tcp = tcp;
            out.push(s);
        }
    }
    out
}

/// Encodes snapshots in the Prometheus text format.
pub fn encode(snapshots: Vec<Snapshot>) -> String {
    let mut registry = Registry::with_prefix("sascribe");
    registry.register_collector(Box::new(Scrape(Arc::new(snapshots))));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

#[derive(Debug)]
struct Scrape(Arc<Vec<Snapshot>>);

type Labels = Vec<(&'static str, String)>;
/// A metric family: name, help, type and its series.
type Family<'a> = (&'a str, &'a str, MetricType, Vec<(Labels, u64)>);

fn family(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    ty: MetricType,
    rows: Vec<(Labels, u64)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, ty)?;
    for (labels, v) in rows {
        let mut f = m.encode_family(&labels)?;
        write_value(&mut f, ty, v)?;
    }
    Ok(())
}

fn write_value(f: &mut MetricEncoder<'_>, ty: MetricType, v: u64) -> fmt::Result {
    match ty {
        MetricType::Counter => f.encode_counter::<NoLabelSet, u64, f64>(&v, None),
        _ => f.encode_gauge(&v),
    }
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        use MetricType::{Counter, Gauge};
        let snaps = &self.0;
        let per = |f: &dyn Fn(&Snapshot) -> u64| -> Vec<(Labels, u64)> {
            snaps
                .iter()
                .map(|s| (vec![("peer", s.peer.clone())], f(s)))
                .collect()
        };
        let sip = |s: &Snapshot| s.stats.sip.clone().unwrap_or_default();
        let simple: Vec<Family<'_>> = vec![
            (
                "joined",
                "1 once the peer has joined the overlay",
                Gauge,
                per(&|s| s.joined.into()),
            ),
            (
                "sip_transactions_server",
                "live SIP server transactions",
                Gauge,
                per(&|s| s.stats.sip_transactions.0 as u64),
            ),
            (
                "sip_transactions_client",
                "live SIP client (NOTIFY) transactions",
                Gauge,
                per(&|s| s.stats.sip_transactions.1 as u64),
            ),
            (
                "sip_dialogs",
                "live SIP subscription dialogs",
                Gauge,
                per(&|s| s.stats.sip_dialogs as u64),
            ),
            (
                "sip_connections",
                "open SIP TCP connections",
                Gauge,
                per(&|s| s.stats.sip_connections as u64),
            ),
            (
                "sip_tcp_write_queued_bytes",
                "bytes queued on SIP TCP connections and not yet written",
                Gauge,
                per(&|s| s.tcp.queued_bytes as u64),
            ),
            (
                "sip_tcp_write_queue_largest_bytes",
                "the longest write queue of one SIP TCP connection, in bytes",
                Gauge,
                per(&|s| s.tcp.largest_queue_bytes as u64),
            ),
            (
                "sip_tcp_write_queue_limit_bytes",
                "a SIP TCP connection whose write queue would exceed this is dropped",
                Gauge,
                per(&|_| WRITE_QUEUE_BYTES as u64),
            ),
            (
                "sip_tcp_dropped_slow",
                "SIP TCP connections dropped because their write queue reached the limit",
                Counter,
                per(&|s| s.tcp.dropped_slow),
            ),
            (
                "sip_notifies_sent",
                "NOTIFY transactions started",
                Counter,
                per(&|s| sip(s).notifies_sent),
            ),
            (
                "sip_notifies_retried",
                "NOTIFY retransmissions (UDP, Timer E)",
                Counter,
                per(&|s| sip(s).notify_retransmissions),
            ),
            (
                "sip_notifies_failed",
                "NOTIFY transactions that timed out or lost their connection",
                Counter,
                per(&|s| {
                    let x = sip(s);
                    x.notify_timeouts + x.notify_transport_errors
                }),
            ),
            (
                "sip_subscriptions_deactivated",
                "subscriptions ended with terminated;reason=deactivated as this peer left (no peer took them)",
                Counter,
                per(&|s| sip(s).deactivated),
            ),
            (
                "sip_subscriptions_handed_over",
                "subscription dialogs another peer took from this one as it left",
                Counter,
                per(&|s| sip(s).handed_over),
            ),
            (
                "sip_subscriptions_taken_over",
                "subscription dialogs this peer took over from a peer that left",
                Counter,
                per(&|s| sip(s).taken_over),
            ),
            (
                "sip_handover_refused",
                "dialogs offered to this peer by a leaving peer that it refused (invalid, over its limits, or leaving itself)",
                Counter,
                per(&|s| sip(s).handover_refused),
            ),
            (
                "sip_malformed",
                "malformed SIP messages (answered 400 or dropped)",
                Counter,
                per(&|s| {
                    let x = sip(s);
                    x.rx_malformed + x.rx_oversized + x.stream_framing_errors
                }),
            ),
            (
                "sip_not_joined",
                "requests answered 503 because the peer had not joined the overlay",
                Counter,
                per(&|s| sip(s).not_joined),
            ),
            (
                "sip_overload_refused",
                "requests answered 503 + Retry-After for overload (pending transactions, input backlog, overlay delay)",
                Counter,
                per(&|s| sip(s).overload_refused),
            ),
            (
                "sip_rate_limited",
                "requests answered 503 + Retry-After by the per-source rate limit",
                Counter,
                per(&|s| sip(s).rate_limited),
            ),
            (
                "sip_source_subscriptions_limited",
                "initial SUBSCRIBEs refused 403 by max_subs_per_source",
                Counter,
                per(&|s| sip(s).source_sub_limited),
            ),
            (
                "sip_presentity_subscriptions_limited",
                "initial SUBSCRIBEs refused 403 by max_subs_per_presentity",
                Counter,
                per(&|s| sip(s).presentity_sub_limited),
            ),
            (
                "sip_dialogs_limited",
                "initial SUBSCRIBEs refused 503 + Retry-After by max_dialogs",
                Counter,
                per(&|s| sip(s).dialog_limited),
            ),
            (
                "sip_body_too_large",
                "PUBLISH and SUBSCRIBE requests refused 413 for a body over max_body",
                Counter,
                per(&|s| sip(s).body_too_large),
            ),
            (
                "sip_oversized",
                "SIP messages over max_message (513 or dropped)",
                Counter,
                per(&|s| sip(s).rx_oversized),
            ),
            (
                "sip_auth_failures",
                "SIP digest credentials that did not authenticate",
                Counter,
                per(&|s| sip(s).auth_failures),
            ),
            (
                "groups_rooted",
                "groups this peer is root of",
                Gauge,
                per(&|s| s.groups_rooted as u64),
            ),
            (
                "groups_replicated",
                "groups whose record this peer holds as a replica",
                Gauge,
                per(&|s| s.groups_replicated as u64),
            ),
            (
                "groups_joined",
                "groups this peer is a tree member of",
                Gauge,
                per(&|s| s.groups_joined as u64),
            ),
            (
                "tree_children",
                "tree children over all groups",
                Gauge,
                per(&|s| s.tree_children as u64),
            ),
            (
                "leaf_set_size",
                "peers in the leaf set",
                Gauge,
                per(&|s| s.leaf_set as u64),
            ),
            (
                "routing_table_size",
                "entries in the routing table",
                Gauge,
                per(&|s| s.routing_table as u64),
            ),
            (
                "overlay_bad_mac",
                "overlay datagrams dropped: the cluster key's MAC did not verify",
                Counter,
                per(&|s| s.stats.overlay.rx_bad_mac),
            ),
            (
                "overlay_replayed",
                "overlay datagrams dropped: authenticated, but received before (a replay)",
                Counter,
                per(&|s| s.stats.overlay.rx_replayed),
            ),
            (
                "overlay_stale",
                "overlay datagrams dropped: authenticated, but outside the replay window (clock skew beyond 30 s, or older than what is remembered of the sender)",
                Counter,
                per(&|s| s.stats.overlay.rx_stale),
            ),
            (
                "overlay_wrong_destination",
                "overlay datagrams dropped: authenticated, but addressed to another peer",
                Counter,
                per(&|s| s.stats.overlay.rx_wrong_destination),
            ),
            (
                "overlay_malformed",
                "overlay datagrams dropped: truncated, oversized, bad version or undecodable",
                Counter,
                per(&|s| {
                    let o = &s.stats.overlay;
                    o.rx_truncated + o.rx_oversized + o.rx_bad_version + o.rx_malformed
                }),
            ),
            (
                "overlay_tx_datagrams",
                "overlay datagrams sent",
                Counter,
                per(&|s| s.stats.overlay.tx_datagrams),
            ),
            (
                "overlay_forwarded",
                "routed overlay messages forwarded",
                Counter,
                per(&|s| s.stats.overlay.forwarded),
            ),
            (
                "peers_failed",
                "peers the failure detector declared dead",
                Counter,
                per(&|s| s.stats.overlay.peers_failed),
            ),
            (
                "takeovers",
                "groups taken over as root after a peer died",
                Counter,
                per(&|s| s.stats.overlay.takeovers),
            ),
            (
                "demotions",
                "groups handed to a closer root",
                Counter,
                per(&|s| s.stats.overlay.demotions),
            ),
            (
                "root_reconfirms",
                "fetch rounds a root ran again before answering (lease lapsed, fenced, newer root seen)",
                Counter,
                per(&|s| s.stats.overlay.reconfirms),
            ),
            (
                "root_fenced",
                "REPLICATEs refused by a replica that knew a newer root epoch",
                Counter,
                per(&|s| s.stats.overlay.fenced),
            ),
            (
                "root_fetch_busy",
                "fetch answers saying the peer still confirmed another root's lease (asked again later)",
                Counter,
                per(&|s| s.stats.overlay.fetch_busy),
            ),
            (
                "peers_revived",
                "peers declared dead that turned out alive (healed partition, resumed pause)",
                Counter,
                per(&|s| s.stats.overlay.revived),
            ),
            (
                "peers_joined",
                "peers never known before that announced their join (a root hands a group over to one that is closer, or fetches again)",
                Counter,
                per(&|s| s.stats.overlay.newcomers),
            ),
            (
                "pauses",
                "times this peer found it had not run for longer than its leases (its maintenance tick ran late): its roots fetch again, its members re-JOIN",
                Counter,
                per(&|s| s.stats.overlay.pauses),
            ),
            (
                "rejoins",
                "JOINs re-sent toward a root (orphans, unanswered JOINs)",
                Counter,
                per(&|s| s.stats.overlay.rejoins),
            ),
            (
                "timers_queued",
                "entries in the core's timer queue",
                Gauge,
                per(&|s| s.stats.timers_queued as u64),
            ),
            (
                "commands_queued",
                "local calls queued for the peer's task",
                Gauge,
                per(&|s| s.commands_queued as u64),
            ),
            (
                "events_queued",
                "host events buffered for the slowest event receiver (log, tests)",
                Gauge,
                per(&|s| s.events_queued as u64),
            ),
        ];
        for (name, help, ty, rows) in simple {
            family(&mut enc, name, help, ty, rows)?;
        }
        let mut req = Vec::new();
        let mut resp = Vec::new();
        let mut kinds = Vec::new();
        for s in snaps.iter() {
            let x = sip(s);
            for (m, n) in &x.requests {
                req.push((vec![("peer", s.peer.clone()), ("method", m.clone())], *n));
            }
            for ((m, c), n) in &x.responses {
                resp.push((
                    vec![
                        ("peer", s.peer.clone()),
                        ("method", m.clone()),
                        ("status", c.to_string()),
                    ],
                    *n,
                ));
            }
            for (k, n) in &s.stats.overlay.rx_kinds {
                kinds.push((vec![("peer", s.peer.clone()), ("kind", k.to_string())], *n));
            }
        }
        family(
            &mut enc,
            "sip_requests",
            "SIP requests received, by method",
            Counter,
            req,
        )?;
        family(
            &mut enc,
            "sip_responses",
            "SIP responses sent, by request method and status",
            Counter,
            resp,
        )?;
        family(
            &mut enc,
            "overlay_messages",
            "overlay messages received, by kind",
            Counter,
            kinds,
        )?;
        let mut m = enc.encode_descriptor(
            "publish_latency_seconds",
            "at the gateway, PUBLISH arrival to its 200 OK: the root answers once the replicas hold the state, in the step it multicasts it to the tree",
            None,
            MetricType::Histogram,
        )?;
        for s in snaps.iter() {
            let h = sip(s).publish_latency;
            let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS_MS
                .iter()
                .zip(h.buckets.iter())
                .map(|(&b, &n)| (b as f64 / 1000.0, n))
                .collect();
            buckets.push((f64::INFINITY, h.buckets[LATENCY_BUCKETS_MS.len()]));
            let labels = vec![("peer", s.peer.clone())];
            let mut f = m.encode_family(&labels)?;
            f.encode_histogram::<NoLabelSet>(h.sum_ms as f64 / 1000.0, h.count, &buckets, None)?;
        }
        Ok(())
    }
}

/// Serves `GET /metrics` on `listener` for the peers behind `handles`, until the task is
/// dropped.
pub async fn serve(listener: TcpListener, handles: Vec<RuntimeHandle>) {
    serve_each(listener, handles, |stream, handles| async move {
        answer(stream, &handles).await
    })
    .await
}

/// Accepts connections on `listener` until the task is dropped and runs `answer` on each in
/// its own task, bounded to 10 s (the metrics and admin endpoints: one exchange per
/// connection). A failed accept (e.g. out of file descriptors) pauses 50 ms, so that it does
/// not spin.
pub(super) async fn serve_each<F, Fut>(
    listener: TcpListener,
    handles: Vec<RuntimeHandle>,
    answer: F,
) where
    F: Fn(TcpStream, Arc<Vec<RuntimeHandle>>) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    let handles = Arc::new(handles);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let exchange = answer(stream, handles.clone());
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), exchange).await;
        });
    }
}

async fn answer(mut stream: TcpStream, handles: &[RuntimeHandle]) -> std::io::Result<()> {
    let head = read_head(&mut stream).await?;
    let path = head.split_whitespace().nth(1).unwrap_or("");
    let (status, ctype, body) = if head.starts_with("GET ") && matches!(path, "/" | "/metrics") {
        let body = encode(gather(handles).await);
        ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body)
    } else {
        ("404 Not Found", "text/plain", "GET /metrics\n".to_string())
    };
    let resp = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(resp.as_bytes()).await?;
    stream.shutdown().await
}

/// Reads an HTTP request head (up to its empty line, at most 8 KiB).
pub(crate) async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Binds the metrics listener on `addr` and serves it on a new task; returns the bound
/// address.
pub async fn start(addr: SocketAddr, handles: Vec<RuntimeHandle>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(serve(listener, handles));
    Ok(local)
}
