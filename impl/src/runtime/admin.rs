//! The admin endpoint (`--admin ADDR`, loopback only unless `--admin-allow-remote`), which
//! `sascribe status ADDR …` talks to: the analogue of `kamcmd presence.presentity_show`.
//!
//! Protocol: the client opens a TCP connection and sends one command line; the endpoint
//! answers with JSON lines (one JSON object per line) and closes. Commands:
//!
//! | command | answer |
//! |---|---|
//! | `root URI EVENT` | one line: the group id (computed by the SIP front end's own function), the root peer (or, from a single peer that is not root and whose leaf set does not cover the gid, the next hop) and the root's view of the group |
//! | `presentities` | one line per record held by a root: peer, gid, resource, seq, number of states |
//! | `presentity URI [EVENT]` | one line per peer holding the record (root or replica): its event states (etag, content type, bytes, expires in, seq created/changed), then one line per watcher (dialog) at the gateways |
//! | `overlay` | one line per peer: id, addresses, joined, authenticated (a cluster key), a `warning` when it runs without a key on a non-loopback address, leaf set, routing table |
//!
//! An error is one line `{"error": "…"}`. Event defaults to `presence`.

use super::RuntimeHandle;
use crate::id::GroupId;
use crate::pastry::Hop;
use crate::{Host, Millis};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Why an admin address was refused.
pub fn check_addr(addr: SocketAddr, allow_remote: bool) -> Result<(), String> {
    if addr.ip().is_loopback() || allow_remote {
        Ok(())
    } else {
        Err(format!(
            "--admin {addr} is not a loopback address: the admin endpoint has no \
             authentication; pass --admin-allow-remote to serve it anyway"
        ))
    }
}

/// Binds the admin endpoint on `addr` and serves it on a new task; returns the bound address.
pub async fn start(addr: SocketAddr, handles: Vec<RuntimeHandle>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(super::metrics::serve_each(
        listener,
        handles,
        |stream, handles| async move { serve(stream, &handles).await },
    ));
    Ok(local)
}

async fn serve(stream: TcpStream, handles: &[RuntimeHandle]) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    BufReader::new(r.take(4096)).read_line(&mut line).await?;
    let lines = answer(line.trim(), handles).await;
    let mut out = String::new();
    for l in lines {
        out.push_str(&l.to_string());
        out.push('\n');
    }
    w.write_all(out.as_bytes()).await?;
    w.shutdown().await
}

use tokio::io::AsyncReadExt;

/// The answer to one command line, as JSON lines.
pub async fn answer(cmd: &str, handles: &[RuntimeHandle]) -> Vec<Value> {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    match words.as_slice() {
        ["root", uri, rest @ ..] if rest.len() <= 1 => {
            root(handles, uri, rest.first().copied().unwrap_or("presence")).await
        }
        ["presentities"] => presentities(handles).await,
        ["presentity", uri, rest @ ..] if rest.len() <= 1 => {
            presentity(handles, uri, rest.first().copied().unwrap_or("presence")).await
        }
        ["overlay"] => overlay(handles).await,
        _ => vec![json!({"error": format!(
            "unknown command {cmd:?}: root URI [EVENT] | presentities | presentity URI [EVENT] | overlay"
        )})],
    }
}

/// Runs `f` on every running peer.
async fn each<R: Send + 'static>(
    handles: &[RuntimeHandle],
    f: impl Fn(&Host, Millis) -> R + Send + Sync + Clone + 'static,
) -> Vec<R> {
    let mut out = Vec::new();
    for h in handles {
        let f = f.clone();
        if let Ok(r) = h.with_host(move |host, now| f(host, now)).await {
            out.push(r);
        }
    }
    out
}

/// The group of `uri` and `event` exactly as a SIP front end computes it.
async fn gid_of(handles: &[RuntimeHandle], uri: &str, event: &str) -> Result<GroupId, Value> {
    let (uri, event) = (uri.to_string(), event.to_string());
    let r = each(handles, move |h, _| {
        h.sip().map(|s| s.group_of_resource(&uri, &event))
    })
    .await;
    match r.into_iter().flatten().next() {
        Some(Some(g)) => Ok(g),
        Some(None) => Err(json!({"error": "the event does not parse"})),
        None => Err(json!({"error": "no peer with a SIP front end answers"})),
    }
}

fn gid_str(g: GroupId) -> String {
    g.to_string()
}

async fn root(handles: &[RuntimeHandle], uri: &str, event: &str) -> Vec<Value> {
    let gid = match gid_of(handles, uri, event).await {
        Ok(g) => g,
        Err(e) => return vec![e],
    };
    let views = each(handles, move |h, _| {
        let o = h.peer().overlay();
        let hop = o.route(gid.0, None);
        let covered = o.leaf.covers(gid.0);
        let closest = o.leaf.closest(gid.0, None);
        let view = h.peer().group_view(gid);
        (h.handle(), h.is_ready(), hop, covered, closest, view)
    })
    .await;
    let mut root = None;
    let mut next_hop = None;
    for (me, ready, hop, covered, closest, view) in &views {
        match hop {
            Hop::Local if *ready => root = Some((*me, view.clone())),
            Hop::Next(n) if *covered && root.is_none() => {
                let c = closest.unwrap_or(*n);
                next_hop = Some(c);
            }
            Hop::Next(n) if next_hop.is_none() => next_hop = Some(*n),
            _ => {}
        }
    }
    let mut v = json!({
        "uri": uri,
        "event": event,
        "gid": gid_str(gid),
    });
    match root {
        Some((h, view)) => {
            v["root"] = json!(h.id.to_string());
            v["root_addr"] = json!(h.addr.to_string());
            if let Some(g) = view {
                v["group"] = json!({
                    "root_active": g.root_active,
                    "seq": g.record_seq,
                    "etags": g.etags.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
                    "children": g.children.len(),
                    "local_subscriptions": g.local_subs,
                });
            }
        }
        None => {
            v["root"] = Value::Null;
            v["next_hop"] = json!(next_hop.map(|h| h.id.to_string()));
            v["next_hop_addr"] = json!(next_hop.map(|h| h.addr.to_string()));
        }
    }
    vec![v]
}

async fn presentities(handles: &[RuntimeHandle]) -> Vec<Value> {
    let rows = each(handles, |h, _| {
        let peer = h.peer();
        let mut rows = Vec::new();
        for gid in peer.groups() {
            let watchers = h.sip().map_or(0, |s| s.watchers(gid, 0).len());
            if let Some(r) = peer.record_view(gid).filter(|r| r.is_root) {
                rows.push(json!({
                    "peer": h.id().to_string(),
                    "gid": gid_str(gid),
                    "resource": r.resource,
                    "seq": r.seq,
                    "states": r.states.len(),
                    "watchers_here": watchers,
                }));
            }
        }
        rows
    })
    .await;
    rows.into_iter().flatten().collect()
}

async fn presentity(handles: &[RuntimeHandle], uri: &str, event: &str) -> Vec<Value> {
    let gid = match gid_of(handles, uri, event).await {
        Ok(g) => g,
        Err(e) => return vec![e],
    };
    let rows = each(handles, move |h, now| {
        let mut rows = Vec::new();
        if let Some(r) = h.peer().record_view(gid) {
            rows.push(json!({
                "peer": h.id().to_string(),
                "gid": gid_str(gid),
                "role": if r.is_root { "root" } else { "replica" },
                "resource": r.resource,
                "seq": r.seq,
                "document_bytes": r.document_bytes,
                "states": r.states.iter().map(|s| json!({
                    "etag": s.etag.to_string(),
                    "content_type": s.content_type,
                    "bytes": s.bytes,
                    "expires_in": s.expires_at.saturating_sub(now) / 1000,
                    "created_seq": s.created,
                    "changed_seq": s.changed,
                })).collect::<Vec<_>>(),
            }));
        }
        if let Some(sip) = h.sip() {
            for w in sip.watchers(gid, now) {
                rows.push(json!({
                    "peer": h.id().to_string(),
                    "gid": gid_str(gid),
                    "watcher": w.watcher,
                    "contact": w.contact,
                    "event": w.event,
                    "state": w.state,
                    "expires_in": w.expires_in,
                    "last_seq": w.last_seq,
                }));
            }
        }
        rows
    })
    .await;
    let rows: Vec<Value> = rows.into_iter().flatten().collect();
    if rows.is_empty() {
        return vec![
            json!({"gid": gid_str(gid), "uri": uri, "event": event, "error": "no record and no watcher of this presentity here"}),
        ];
    }
    rows
}

async fn overlay(handles: &[RuntimeHandle]) -> Vec<Value> {
    let sips: Vec<Option<SocketAddr>> = handles.iter().map(RuntimeHandle::sip_addr).collect();
    let mut rows = each(handles, |h, _| {
        let o = h.peer().overlay();
        let leaf: Vec<Value> = o
            .leaf
            .iter()
            .map(|e| json!({"id": e.handle.id.to_string(), "addr": e.handle.addr.to_string()}))
            .collect();
        let rt: Vec<Value> =
            o.rt.iter()
                .map(|e| json!({"id": e.handle.id.to_string(), "addr": e.handle.addr.to_string()}))
                .collect();
        let mut v = json!({
            "peer": h.id().to_string(),
            "overlay_addr": h.handle().addr.to_string(),
            "joined": h.is_ready(),
            "authenticated": h.peer().is_authenticated(),
            "groups": h.peer().groups().count(),
            "leaf_set": leaf,
            "routing_table": rt,
        });
        if let Some(w) = super::keyless_warning(h) {
            v["warning"] = json!(w);
        }
        v
    })
    .await;
    for (r, sip) in rows.iter_mut().zip(sips) {
        r["sip_addr"] = json!(sip.map(|a| a.to_string()));
    }
    rows
}

/// `sascribe status`: sends one command line to the admin endpoint at `addr` and returns its
/// answer (JSON lines).
pub async fn query(addr: &str, cmd: &str) -> std::io::Result<String> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    s.write_all(format!("{cmd}\n").as_bytes()).await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(15), s.read_to_string(&mut out))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
    Ok(out)
}
