//! Renders a trace as a sequence chart, like the paper's Fig. 4 and 5: as text, or as a mermaid
//! `sequenceDiagram`.

use crate::{AbstractMsg, ClientOutcome, StepAction, Trace};
use std::fmt::Write;

/// A one-line label of an abstract message: `from → to: KIND epoch … seq … [req]`.
pub fn msg_label(m: &AbstractMsg) -> String {
    format!("{} → {}: {}", m.from, m.to, label(m))
}

/// A one-line label of a client outcome: `ua ⇐ 200 OK (PUBLISH) ETag e1 …`.
pub fn outcome_label(o: &ClientOutcome) -> String {
    format!("{} ⇐ {}", o.ua, outcome(o))
}

fn label(m: &AbstractMsg) -> String {
    let mut s = m.kind.to_uppercase();
    if let Some(e) = m.epoch {
        let _ = write!(s, " epoch {e}");
    }
    if let Some(seq) = m.seq {
        let _ = write!(s, " seq {seq}");
    }
    if let Some(v) = m.value {
        let _ = write!(s, " v{v}");
    }
    if let Some(vs) = &m.values {
        let _ = write!(s, " {}", values_label(vs));
    }
    if let Some(e) = m.if_match {
        let _ = write!(s, " If-Match e{e}");
    }
    if let Some(r) = &m.req {
        let _ = write!(s, " [{r}]");
    }
    s
}

/// A composed state: `{v1,v2}`.
fn values_label(vs: &[u8]) -> String {
    let v: Vec<String> = vs.iter().map(|v| format!("v{v}")).collect();
    format!("{{{}}}", v.join(","))
}

fn outcome(o: &ClientOutcome) -> String {
    let mut s = match o.kind.as_str() {
        "subscribe_ok" => "200 OK (SUBSCRIBE)".to_string(),
        "subscribe_timeout" => "408 (SUBSCRIBE)".to_string(),
        "publish_ok" => "200 OK (PUBLISH)".to_string(),
        "publish_412" => "412 (PUBLISH)".to_string(),
        "publish_timeout" => "408 (PUBLISH)".to_string(),
        "notify" => "NOTIFY".to_string(),
        other => other.to_string(),
    };
    if let Some(seq) = o.seq {
        let _ = write!(s, " seq {seq}");
    }
    if let Some(vs) = &o.values {
        let _ = write!(s, " {}", values_label(vs));
    }
    if let Some(e) = o.etag {
        let _ = write!(s, " ETag e{e}");
    }
    if let Some(x) = o.expires {
        let _ = write!(s, " Expires {x}");
    }
    s
}

/// A text sequence chart: one line per step, arrows for messages, `⇒` for what user agents
/// are sent, `·` for the messages a step sends.
pub fn text(t: &Trace) -> String {
    let mut out = String::new();
    let c = &t.config;
    let peers: Vec<String> = c
        .peers
        .iter()
        .map(|p| format!("{}={}", p.name, p.id))
        .collect();
    let _ = writeln!(out, "trace {} ({})", t.name, t.origin.kind);
    let _ = writeln!(
        out,
        "peers {}  gid {}  k={}  subscribers {}  publishers {}",
        peers.join(" "),
        c.gid,
        c.k,
        c.subscribers
            .iter()
            .map(|u| format!("{}@{}", u.name, u.peer))
            .collect::<Vec<_>>()
            .join(" "),
        c.publishers
            .iter()
            .map(|u| format!("{}@{}", u.name, u.peer))
            .collect::<Vec<_>>()
            .join(" ")
    );
    for s in &t.steps {
        let head = match &s.action {
            StepAction::Deliver { msg } => {
                format!("{:>4} ──{}──▶ {}", msg.from, label(msg), msg.to)
            }
            StepAction::Lose { msg } => {
                format!("{:>4} ──{}──✗ {} (lost)", msg.from, label(msg), msg.to)
            }
            StepAction::UaSubscribes { ua } => format!("{ua:>4} decides to SUBSCRIBE"),
            StepAction::UaUnsubscribes { ua } => format!("{ua:>4} decides to unsubscribe"),
            StepAction::DetectFailure { at, peer } => format!("{at:>4} detects {peer} crashed"),
            StepAction::Retransmit { at, req } => format!("{at:>4} retransmits [{req}]"),
            StepAction::Expire { at, etag } => format!("{at:>4} ⌛ state e{etag} expires"),
            StepAction::ReplicationRetry { at } => format!("{at:>4} ↻ replication retry"),
            StepAction::Heartbeat { at } => format!("{at:>4} ♥ tree heartbeat round"),
            StepAction::ParentTimeout { at } => format!("{at:>4} ⌛ times its parent out"),
            StepAction::Crash { peer } => format!("{peer:>4} ✗ crashes"),
            StepAction::Restart { peer } => format!("{peer:>4} ↺ restarts with no state"),
            StepAction::Alive { at, peer } => format!("{at:>4} hears from {peer}, back again"),
            StepAction::Lapse { at } => format!("{at:>4} ⌛ the lease it confirms lapses"),
            StepAction::Reask { at, peer } => format!("{at:>4} ↻ asks {peer} again"),
            StepAction::Suspect { peer } => format!("{peer:>4} ⏸ paused (suspected)"),
            StepAction::Heal { peer } => format!("{peer:>4} ▶ runs again"),
        };
        let _ = writeln!(out, "{:>3}. {head}", s.n);
        for o in &s.expect.client {
            let _ = writeln!(out, "          ⇒ {}: {}", o.ua, outcome(o));
        }
        for m in &s.expect.sent {
            let _ = writeln!(out, "          · {} → {}: {}", m.from, m.to, label(m));
        }
    }
    out
}

/// A mermaid `sequenceDiagram` of the deliveries and what user agents are sent.
pub fn mermaid(t: &Trace) -> String {
    let mut out = String::from("sequenceDiagram\n");
    let c = &t.config;
    for u in &c.subscribers {
        let _ = writeln!(out, "    participant {}", u.name);
    }
    for u in &c.publishers {
        let _ = writeln!(out, "    participant {}", u.name);
    }
    for p in &c.peers {
        let _ = writeln!(out, "    participant {} as {} ({})", p.name, p.name, p.id);
    }
    for s in &t.steps {
        match &s.action {
            StepAction::Deliver { msg } => {
                let _ = writeln!(
                    out,
                    "    {}->>{}: {}. {}",
                    msg.from,
                    msg.to,
                    s.n,
                    label(msg)
                );
            }
            StepAction::Lose { msg } => {
                let _ = writeln!(
                    out,
                    "    {}-x{}: {}. {} (lost)",
                    msg.from,
                    msg.to,
                    s.n,
                    label(msg)
                );
            }
            StepAction::UaSubscribes { ua } => {
                let _ = writeln!(out, "    Note over {ua}: {}. subscribes", s.n);
            }
            StepAction::UaUnsubscribes { ua } => {
                let _ = writeln!(out, "    Note over {ua}: {}. unsubscribes", s.n);
            }
            StepAction::DetectFailure { at, peer } => {
                let _ = writeln!(out, "    Note over {at}: {}. detects {peer} crashed", s.n);
            }
            StepAction::Retransmit { at, req } => {
                let _ = writeln!(out, "    Note over {at}: {}. retransmits {req}", s.n);
            }
            StepAction::Expire { at, etag } => {
                let _ = writeln!(out, "    Note over {at}: {}. state e{etag} expires", s.n);
            }
            StepAction::ReplicationRetry { at } => {
                let _ = writeln!(out, "    Note over {at}: {}. replication retry", s.n);
            }
            StepAction::Heartbeat { at } => {
                let _ = writeln!(out, "    Note over {at}: {}. tree heartbeat round", s.n);
            }
            StepAction::ParentTimeout { at } => {
                let _ = writeln!(out, "    Note over {at}: {}. times its parent out", s.n);
            }
            StepAction::Crash { peer } => {
                let _ = writeln!(out, "    Note over {peer}: {}. crashes", s.n);
            }
            StepAction::Restart { peer } => {
                let _ = writeln!(out, "    Note over {peer}: {}. restarts", s.n);
            }
            StepAction::Alive { at, peer } => {
                let _ = writeln!(out, "    Note over {at}: {}. hears from {peer} again", s.n);
            }
            StepAction::Lapse { at } => {
                let _ = writeln!(out, "    Note over {at}: {}. its lease lapses", s.n);
            }
            StepAction::Reask { at, peer } => {
                let _ = writeln!(out, "    Note over {at}: {}. asks {peer} again", s.n);
            }
            StepAction::Suspect { peer } => {
                let _ = writeln!(out, "    Note over {peer}: {}. paused (suspected)", s.n);
            }
            StepAction::Heal { peer } => {
                let _ = writeln!(out, "    Note over {peer}: {}. runs again", s.n);
            }
        }
        for o in &s.expect.client {
            let at = c
                .subscribers
                .iter()
                .chain(&c.publishers)
                .find(|u| u.name == o.ua)
                .map_or("?", |u| u.peer.as_str());
            let _ = writeln!(out, "    {at}-->>{}: {}", o.ua, outcome(o));
        }
    }
    out
}
