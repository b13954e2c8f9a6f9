//! `conformance/adapter.schema.json` describes the protocol as spoken: every request the
//! harness sends and every reply the reference adapter (and the Python example) gives during
//! traces that use every request type validate against it, and lines that break the protocol
//! do not.

use jsonschema::Validator;
use sascribe_conformance::adapter::{AdapterProcess, WireLine, REQUEST_TYPES};
use sascribe_conformance::runner::run_trace;
use sascribe_conformance::sut::{Input, System};
use sascribe_conformance::{load, trace_files, AbstractMsg, StepAction, Trace};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn schema() -> Value {
    let text = std::fs::read_to_string(manifest().join("adapter.schema.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A validator for the schema's definition `def`.
fn validator(def: &str) -> Validator {
    let mut s = schema();
    s["oneOf"] = json!([{ "$ref": format!("#/$defs/{def}") }]);
    jsonschema::validator_for(&s).unwrap()
}

fn errors(v: &Validator, line: &Value) -> String {
    v.iter_errors(line)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Runs `f` on a thread and fails the test if it takes longer than `secs`.
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|e| panic!("did not finish within {secs} s: {e}"))
}

/// Traces that, together, make the harness send every request type: for each step kind, the
/// first corpus trace that has it.
fn covering_traces() -> Vec<Trace> {
    let mut want: Vec<fn(&StepAction) -> bool> = vec![
        |a| matches!(a, StepAction::Lose { .. }),
        |a| matches!(a, StepAction::DetectFailure { .. }),
        |a| matches!(a, StepAction::Retransmit { .. }),
        |a| matches!(a, StepAction::ReplicationRetry { .. }),
        |a| matches!(a, StepAction::Expire { .. }),
        |a| matches!(a, StepAction::Crash { .. }),
        |a| matches!(a, StepAction::UaUnsubscribes { .. }),
        |a| matches!(a, StepAction::Heartbeat { .. }),
        |a| matches!(a, StepAction::ParentTimeout { .. }),
        |a| matches!(a, StepAction::Restart { .. }),
        |a| matches!(a, StepAction::Alive { .. }),
        |a| matches!(a, StepAction::Lapse { .. }),
        |a| matches!(a, StepAction::Reask { .. }),
        |a| matches!(a, StepAction::Suspect { .. }),
        |a| matches!(a, StepAction::Heal { .. }),
    ];
    let mut out: Vec<Trace> = Vec::new();
    for f in trace_files(&manifest().join("../traces")).unwrap() {
        let t = load(&f).unwrap();
        let before = want.len();
        want.retain(|w| !t.steps.iter().any(|s| w(&s.action)));
        if want.len() < before {
            out.push(t);
        }
    }
    assert!(want.is_empty(), "the corpus lacks some step kinds");
    out
}

/// Every line exchanged with `adapter` over `traces`, plus one request that gets an error.
fn exchanged(adapter: &str, traces: &[Trace]) -> Vec<WireLine> {
    let mut p = AdapterProcess::spawn(adapter)
        .unwrap()
        .with_timeout(Duration::from_secs(10))
        .recording();
    let mut lines = Vec::new();
    for t in traces {
        run_trace(t, &mut p, false);
        lines.extend(p.take_recorded());
    }
    // A message that was never sent: an `error` reply.
    let t = &traces[0];
    p.handle(&Input::Init {
        config: t.config.clone(),
    })
    .unwrap();
    let ghost = AbstractMsg {
        kind: "multicast".into(),
        from: t.config.peers[0].name.clone(),
        to: t.config.peers[0].name.clone(),
        gid: Some(t.config.gid),
        seq: Some(9),
        value: None,
        values: Some(vec![9]),
        req: None,
        if_match: None,
        epoch: None,
    };
    let e = p.handle(&Input::Deliver { msg: ghost }).unwrap_err();
    assert!(e.contains("adapter error 14 (cannot apply)"), "{e}");
    lines.extend(p.take_recorded());
    lines
}

/// Checks every line against the schema; returns the request types seen.
fn check_all(lines: &[WireLine]) -> BTreeSet<String> {
    let (req, rep) = (validator("request"), validator("reply"));
    let whole = jsonschema::validator_for(&schema()).unwrap();
    let mut types = BTreeSet::new();
    let mut replies = 0;
    for l in lines {
        let (v, text) = match l {
            WireLine::Request(t) => (&req, t),
            WireLine::Reply(t) => {
                replies += 1;
                (&rep, t)
            }
        };
        let line: Value = serde_json::from_str(text).unwrap();
        assert!(v.is_valid(&line), "{}\n{text}", errors(v, &line));
        assert!(whole.is_valid(&line), "{}\n{text}", errors(&whole, &line));
        if let WireLine::Request(_) = l {
            types.insert(line["body"]["type"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(replies * 2, lines.len(), "one reply per request");
    types
}

#[test]
fn the_reference_adapter_and_the_harness_speak_the_schema() {
    let lines = within(120, || {
        exchanged(env!("CARGO_BIN_EXE_sascribe-adapter"), &covering_traces())
    });
    assert!(lines.len() > 100);
    let types = check_all(&lines);
    let all: BTreeSet<String> = REQUEST_TYPES.iter().map(|t| t.to_string()).collect();
    assert_eq!(types, all);
    assert!(lines
        .iter()
        .any(|l| matches!(l, WireLine::Reply(r) if r.contains("\"type\":\"error\""))));
}

#[test]
fn the_python_example_speaks_the_schema() {
    let cmd = format!(
        "python3 {}",
        manifest().join("examples/toy_notifier.py").display()
    );
    let lines = within(120, move || exchanged(&cmd, &covering_traces()));
    check_all(&lines);
}

#[test]
fn the_schema_rejects_lines_that_break_the_protocol() {
    let (req, rep) = (validator("request"), validator("reply"));
    let ok = json!({"src":"sut","dest":"harness","body":{"type":"crash_ok","in_reply_to":3,
                    "sent":[],"client":[],"log":[]}});
    assert!(rep.is_valid(&ok));
    let bad_replies = [
        // no in_reply_to
        json!({"src":"sut","dest":"harness","body":{"type":"crash_ok","sent":[]}}),
        // init_ok without the protocol version, or with another one
        json!({"src":"sut","dest":"harness","body":{"type":"init_ok","in_reply_to":1}}),
        json!({"src":"sut","dest":"harness","body":{"type":"init_ok","in_reply_to":1,
               "protocol_version":1}}),
        // the version only in init_ok
        json!({"src":"sut","dest":"harness","body":{"type":"crash_ok","in_reply_to":3,
               "protocol_version":2}}),
        // a user agent's message reported as sent
        json!({"src":"sut","dest":"harness","body":{"type":"crash_ok","in_reply_to":3,
               "sent":[{"kind":"subscribe","from":"S1","to":"A"}]}}),
        // an error without a code
        json!({"src":"sut","dest":"harness","body":{"type":"error","in_reply_to":3,"text":"x"}}),
        // an unknown field
        json!({"src":"sut","dest":"harness","body":{"type":"crash_ok","in_reply_to":3,"x":1}}),
    ];
    for b in &bad_replies {
        assert!(!rep.is_valid(b), "{b}");
    }
    let bad_requests = [
        json!({"src":"harness","dest":"sut","body":{"type":"teleport","msg_id":1}}),
        json!({"src":"harness","dest":"sut","body":{"type":"crash","peer":"A"}}),
        json!({"src":"harness","dest":"sut","body":{"type":"fire_timer","msg_id":2,"at":"A",
               "req":"A-S1-0","attempt":1}}),
    ];
    for b in &bad_requests {
        assert!(!req.is_valid(b), "{b}");
    }
}
