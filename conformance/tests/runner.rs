//! The runner against the production core: witnesses pass, a tampered expectation is caught
//! with the right verdict and step, the adapter binary agrees with the in-process system, and
//! broken adapters get errors naming the step and the line.

use sascribe_conformance::adapter::{request_line, serve, AdapterProcess};
use sascribe_conformance::inprocess::{InProcess, Mode};
use sascribe_conformance::runner::{run_trace, run_trace_with, RunOptions, Verdict};
use sascribe_conformance::sut::Input;
use sascribe_conformance::{load, parse, trace_files, Trace};
use std::path::{Path, PathBuf};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../traces")
}

fn trace(name: &str) -> Trace {
    load(&corpus_dir().join(format!("{name}.json"))).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn witnesses_of_the_core_paths_pass_in_process() {
    for name in [
        "small-witness-412-happened",
        "small-witness-states-composed",
        "small-witness-expiry-notified",
        "multihop-witness-subscribed-before-publish",
        "multihop-witness-states-composed",
        "multihop-witness-failover-happened",
        "multihop-witness-rejoin-carried-state",
    ] {
        let r = run_trace(&trace(name), &mut InProcess::new(), true);
        assert!(r.passed(), "{name}: {:?}\n{}", r.failure, r.transcript);
    }
}

#[test]
fn a_wrong_expectation_fails_at_its_step_with_a_verdict() {
    // The first walk that notifies a subscriber a published state: change that value.
    let is_notify =
        |c: &sascribe_conformance::ClientOutcome| c.kind == "notify" && c.values.is_some();
    let good = trace_files(&corpus_dir())
        .unwrap()
        .iter()
        .map(|f| parse(f, &std::fs::read_to_string(f).unwrap()).unwrap())
        .find(|t| {
            t.name.contains("walk")
                && t.steps
                    .iter()
                    .any(|s| s.expect.client.iter().any(is_notify))
        })
        .expect("some walk notifies a subscriber");
    let (step, _) = good
        .steps
        .iter()
        .enumerate()
        .find(|(_, s)| s.expect.client.iter().any(is_notify))
        .expect("the trace notifies a subscriber");
    let mut bad = good.clone();
    for c in &mut bad.steps[step].expect.client {
        if is_notify(c) {
            c.values = Some(vec![40]);
        }
    }
    let r = run_trace(&bad, &mut InProcess::new(), false);
    let f = r.failure.expect("a wrong NOTIFY value is caught");
    assert_eq!(f.step, step + 1);
    assert_eq!(f.verdict, Verdict::IncorrectOutcome);
    assert!(f.detail.contains("NOTIFY"), "{}", f.detail);

    // An expected message the implementation never sends: missing_action.
    let mut bad = good.clone();
    let s = bad
        .steps
        .iter_mut()
        .find(|s| !s.expect.sent.is_empty())
        .expect("some step sends");
    let mut extra = s.expect.sent[0].clone();
    extra.kind = "multicast".into();
    extra.seq = Some(9);
    extra.value = Some(9);
    extra.req = None;
    let n = s.n;
    s.expect.sent.push(extra);
    let f = run_trace(&bad, &mut InProcess::new(), false)
        .failure
        .unwrap();
    assert_eq!((f.step, f.verdict), (n, Verdict::MissingAction));
}

#[test]
fn the_adapter_binary_agrees_with_the_in_process_core() {
    let adapter = env!("CARGO_BIN_EXE_sascribe-adapter");
    let files = trace_files(&corpus_dir()).unwrap();
    assert!(files.len() >= 200);
    let mut passed = 0;
    for f in files.iter().step_by(4) {
        let t = load(f).unwrap();
        let a = run_trace(&t, &mut InProcess::new(), false);
        let mut p = AdapterProcess::spawn(adapter).unwrap();
        let b = run_trace(&t, &mut p, false);
        assert_eq!(a.passed(), b.passed(), "{}", t.name);
        assert_eq!(
            a.failure.as_ref().map(|f| (f.step, f.verdict)),
            b.failure.as_ref().map(|f| (f.step, f.verdict)),
            "{}",
            t.name
        );
        passed += usize::from(a.passed());
    }
    assert!(passed > 0);
}

#[test]
fn a_broken_adapter_is_reported_with_the_step_and_the_line() {
    let t = trace("small-witness-subscribed-before-publish");
    // `cat` echoes the request: valid JSON, but not a reply to it.
    let mut p = AdapterProcess::spawn("cat").unwrap();
    let f = run_trace(&t, &mut p, false).failure.unwrap();
    assert_eq!((f.step, f.verdict), (0, Verdict::CannotApply));
    assert!(
        f.detail.contains("malformed adapter output"),
        "{}",
        f.detail
    );
    assert!(f.detail.contains("\"type\":\"init\""), "{}", f.detail);
    // `echo` prints a non-JSON line and exits.
    let mut p = AdapterProcess::spawn("echo hello").unwrap();
    let f = run_trace(&t, &mut p, false).failure.unwrap();
    assert!(
        f.detail.contains("not JSON") && f.detail.contains("`hello`"),
        "{}",
        f.detail
    );
    // A program that does not exist.
    assert!(AdapterProcess::spawn("/nonexistent/adapter").is_err());
}

#[test]
fn the_adapter_side_answers_errors_with_codes() {
    let mut sys = InProcess::new();
    let input = [
        "not json".to_string(),
        r#"{"src":"harness","dest":"sut","body":{"type":"teleport","msg_id":1}}"#.into(),
        request_line(2, &Input::Crash { peer: "A".into() }),
    ]
    .join("\n");
    let mut out = Vec::new();
    serve(&mut sys, input.as_bytes(), &mut out).unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["body"]["code"], 12);
    assert_eq!(lines[1]["body"]["code"], 10);
    assert_eq!(lines[1]["body"]["in_reply_to"], 1);
    // Crash before init: cannot apply.
    assert_eq!(lines[2]["body"]["code"], 14);
    assert!(lines[2]["body"]["text"].as_str().unwrap().contains("init"));
}

#[test]
fn the_runtime_event_loop_gives_the_same_verdicts_as_the_core() {
    // Same peers, driven through `sascribe::runtime::HostLoop` with the harness's socket and clock.
    let files = trace_files(&corpus_dir()).unwrap();
    let mut passed = 0;
    for f in files.iter().skip(1).step_by(5) {
        let t = load(f).unwrap();
        let a = run_trace(&t, &mut InProcess::new(), false);
        let b = run_trace(&t, &mut InProcess::new().with_mode(Mode::Runtime), false);
        assert_eq!(
            a.failure
                .as_ref()
                .map(|f| (f.step, f.verdict, f.detail.clone())),
            b.failure
                .as_ref()
                .map(|f| (f.step, f.verdict, f.detail.clone())),
            "{}",
            t.name
        );
        passed += usize::from(b.passed());
    }
    assert!(passed > 0);
}

#[test]
fn a_wrong_projected_state_fails_at_its_step_naming_peer_and_field() {
    let good = trace("multihop-witness-failover-happened");
    // The first step that changes some peer's latest seq: expect one more.
    let (i, peer) = good
        .steps
        .iter()
        .enumerate()
        .find_map(|(i, s)| {
            s.state
                .iter()
                .find(|(_, p)| p.latest > 0)
                .map(|(n, _)| (i, n.clone()))
        })
        .expect("some step sets a latest seq");
    let mut bad = good.clone();
    let p = bad.steps[i].state.get_mut(&peer).unwrap();
    p.latest += 1;
    let want = p.latest;
    let r = run_trace(&bad, &mut InProcess::new(), false);
    let f = r.failure.expect("a wrong latest seq is caught");
    assert_eq!(f.step, i + 1);
    assert_eq!(f.verdict, Verdict::IncorrectState);
    assert!(
        f.detail.contains(&format!(
            "peer {peer} field latest: expected {want}, got {}",
            want - 1
        )),
        "{}",
        f.detail
    );
    // Compared on messages only, the same trace passes.
    let opts = RunOptions {
        verbose: false,
        state: false,
    };
    assert!(run_trace_with(&bad, &mut InProcess::new(), opts).passed());

    // A tree edge the implementation does not have, through the adapter: the same verdict.
    let mut bad = good.clone();
    let (i, name) = good
        .steps
        .iter()
        .enumerate()
        .find_map(|(i, s)| s.state.keys().next().map(|n| (i, n.clone())))
        .expect("some step has a state");
    bad.steps[i].state.get_mut(&name).unwrap().children = vec!["ZZ".into()];
    let mut a = AdapterProcess::spawn(env!("CARGO_BIN_EXE_sascribe-adapter")).unwrap();
    let f = run_trace(&bad, &mut a, false).failure.expect("caught");
    assert_eq!((f.step, f.verdict), (i + 1, Verdict::IncorrectState));
    assert!(f.detail.contains("field children"), "{}", f.detail);
    assert!(!a.reports_no_state());
}

#[test]
fn an_adapter_that_does_not_report_state_is_compared_on_messages_only() {
    // The Python example answers `state` with error 10: a wrong state goes unnoticed, and the
    // harness stops asking.
    let cmd = format!(
        "python3 {}",
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/toy_notifier.py")
            .display()
    );
    let mut a = AdapterProcess::spawn(&cmd).unwrap();
    // The first walk whose first step the toy gets right is asked for its state, once.
    for f in trace_files(&corpus_dir()).unwrap() {
        let t = load(&f).unwrap();
        let r = run_trace(&t, &mut a, false);
        // The toy fails on its messages; whatever state it was asked for was not judged.
        assert!(r
            .failure
            .is_some_and(|f| f.verdict != Verdict::IncorrectState));
        if r.passed_steps > 0 {
            break;
        }
    }
    assert!(a.reports_no_state());
}

#[test]
fn an_overlay_that_forms_otherwise_than_configured_fails_init() {
    // The peers form the overlay with production's join; a leaf set larger than the
    // configuration's (two per side on a four-peer ring, where it says one) must be refused at
    // `init`, naming the peer and both leaf sets.
    let t = trace("multihop-witness-states-composed");
    let mut sys = InProcess::with_config_hook(Box::new(|c| c.leaf_set_size = 4));
    let r = run_trace(&t, &mut sys, true);
    let failure = format!("{:?}", r.failure.expect("init must fail"));
    assert!(
        failure.contains("leaf set after the overlay join is"),
        "{failure}"
    );
    // The same trace with the configured leaf sets passes.
    assert!(run_trace(&t, &mut InProcess::new(), true).passed());
}
