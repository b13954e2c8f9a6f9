//! The committed corpus in `traces/` is exactly what the exporter produces: a change to the
//! model or the exporter that alters a trace fails here until the corpus is regenerated
//! (`cargo run --release -p sascribe-model -- traces --out traces`) and the index snapshot
//! reviewed (`cargo insta review`).

use sascribe_model::corpus::{configs, corpus_each, DEFAULT_WALKS};
use sascribe_model::progress::Progress;
use sascribe_model::trace::{to_json, Trace};
use sascribe_model::Mutant;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// A `Write` the test can read back.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The corpus as the `traces` command makes it, made once for all the tests here, with the
/// stage lines of its progress report (the periodic lines are an hour apart: never due).
fn generated() -> &'static (Vec<Trace>, String) {
    static CORPUS: OnceLock<(Vec<Trace>, String)> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let log = Shared::default();
        let mut progress = Progress::new(Some(Duration::from_secs(3600)), Box::new(log.clone()));
        let mut traces = Vec::new();
        let n = corpus_each(DEFAULT_WALKS, &mut progress, &mut |t| {
            traces.push(t);
            Ok(())
        })
        .unwrap()
        .traces;
        assert_eq!(n, traces.len());
        let log = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        (traces, log)
    })
}

#[test]
fn committed_corpus_matches_the_exporter() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../traces");
    let traces = &generated().0;
    assert!(traces.len() >= 300, "corpus too small: {}", traces.len());
    let mut index = String::new();
    for t in traces {
        let file = dir.join(format!("{}.json", t.name));
        let committed = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e}; regenerate the corpus", file.display()));
        assert!(
            committed == to_json(t),
            "{} differs from the exporter's output; regenerate the corpus and review",
            file.display()
        );
        let kinds: std::collections::BTreeSet<_> = t
            .steps
            .iter()
            .flat_map(|s| s.expect.sent.iter().map(|m| m.kind))
            .collect();
        index.push_str(&format!(
            "{} steps={} sent={}\n",
            t.name,
            t.steps.len(),
            kinds.into_iter().collect::<Vec<_>>().join(",")
        ));
    }
    let on_disk = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json"))
        })
        .count();
    assert_eq!(on_disk, traces.len(), "stale traces in {}", dir.display());
    insta::assert_snapshot!("corpus-index", index);
}

#[test]
fn corpus_covers_every_message_and_action_kind() {
    let traces = &generated().0;
    let mut sent = std::collections::BTreeSet::new();
    let mut actions = std::collections::BTreeSet::new();
    let mut clients = std::collections::BTreeSet::new();
    for t in traces {
        for s in &t.steps {
            sent.extend(s.expect.sent.iter().map(|m| m.kind));
            clients.extend(s.expect.client.iter().map(|c| c.kind));
            let v = serde_json::to_value(&s.action).unwrap();
            actions.insert(v["kind"].as_str().unwrap().to_string());
        }
    }
    for k in [
        "subscribe",
        "unsubscribe",
        "publish",
        "join",
        "pack",
        "ack",
        "multicast",
        "publish_fwd",
        "publish_reply",
        "replicate",
        "replica_ack",
        "fetch_state",
        "fetch_reply",
        "leave",
        "beat",
        "beat_ack",
        "fetch_busy",
        "fenced",
        "not_root",
    ] {
        assert!(sent.contains(k), "no trace sends a {k}");
    }
    for k in [
        "deliver",
        "ua_subscribes",
        "detect_failure",
        "retransmit",
        "crash",
        "lose",
        "expire",
        "ua_unsubscribes",
        "replication_retry",
        "heartbeat",
        "parent_timeout",
        "restart",
        "alive",
        "lapse",
        "reask",
    ] {
        assert!(actions.contains(k), "no trace has a {k} step");
    }
    for k in ["subscribe_ok", "notify", "publish_ok", "publish_412"] {
        assert!(clients.contains(k), "no trace shows a {k}");
    }
    let steps = || traces.iter().flat_map(|t| t.steps.iter());
    let sends = |kind: &str| {
        steps().any(|s| {
            (s.expect.sent.iter()).any(|m| m.kind == kind && m.seq.is_some() && m.values.is_none())
        })
    };
    assert!(
        steps().any(|s| (s.expect.client.iter())
            .any(|c| c.kind == "notify" && c.seq.is_some_and(|q| q > 0) && c.values.is_none())),
        "no trace tells a subscriber that the last event state is gone"
    );
    assert!(
        steps().any(|s| (s.expect.client.iter()).any(|c| c.kind == "notify" && c.seq == Some(0))),
        "no trace accepts a subscriber before anything was published"
    );
    assert!(
        steps().any(|s| (s.expect.client.iter())
            .any(|c| c.kind == "notify" && c.values.as_ref().is_some_and(|v| v.len() > 1))),
        "no trace notifies the composition of two event states"
    );
    assert!(
        steps()
            .any(|s| (s.expect.client.iter())
                .any(|c| c.kind == "publish_ok" && c.expires == Some(0))),
        "no trace removes an event state"
    );
    assert!(
        sends("ack"),
        "no trace has an ACK carrying only the seq of a state that is gone"
    );
    assert!(sends("replicate"), "no trace replicates an expiry");
}

#[test]
fn traces_progress_names_each_stage_and_the_traces_so_far() {
    let (traces, log) = generated();
    let stage = |line: String| {
        assert!(
            log.lines().any(|l| l.ends_with(&format!("] {line}"))),
            "no progress line '{line}' in:\n{log}"
        );
    };
    let before = |prefix: String| {
        traces
            .iter()
            .position(|t| t.name.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no trace named {prefix}*"))
    };
    stage(format!(
        "traces: mutant-directed paths for {} seeded bugs (a BFS each)",
        Mutant::ALL.len()
    ));
    for (name, _, _) in configs() {
        if name == "small" || name == "multihop" {
            let n = before(format!("{name}-witness-"));
            stage(format!(
                "traces: witnesses on {name} (BFS), {n} traces so far"
            ));
        }
        let walks = if name == "lossy" {
            DEFAULT_WALKS / 2
        } else {
            DEFAULT_WALKS
        };
        // (A walk in which no user agent is told anything is left out: the first kept may
        // not be seed 0.)
        let n = before(format!("{name}-walk-"));
        stage(format!(
            "traces: {walks} random walks on {name}, {n} traces so far"
        ));
    }
}
