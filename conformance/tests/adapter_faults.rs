//! Adapters that misbehave: the reference adapter behind `tests/misbehave.py`, which drops,
//! duplicates, reorders, delays or mangles one reply, or exits, in one of several traces run
//! through one `AdapterProcess`. The trace concerned fails at the right step with a message
//! naming the request, within a bounded time; the adapter is restarted and the next trace
//! passes. Every test runs under a watchdog, so none can hang.

use sascribe_conformance::adapter::{AdapterProcess, PROTOCOL_VERSION};
use sascribe_conformance::runner::{run_trace_with, RunOptions, TraceResult, Verdict};

/// The faults are injected by request number, counting the requests of the steps: the state
/// requests (one after each step) are left out of these runs (the reference adapter's state is
/// checked in `runner.rs` and `adapter_schema.rs`).
fn run_trace(t: &Trace, p: &mut AdapterProcess, verbose: bool) -> TraceResult {
    let opts = RunOptions {
        verbose,
        state: false,
    };
    run_trace_with(t, p, opts)
}
use sascribe_conformance::{load, StepAction, Trace};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Long enough for a loaded machine to start Python and the adapter (the `init` request).
const TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on how long a trace whose adapter misbehaves may take beyond the timeout.
const SLACK: f64 = 5.0;

/// Runs `f` on a thread and fails the test if it takes longer than `secs`.
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("did not finish within {secs} s"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the test thread panicked"),
    }
}

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn trace_file(name: &str) -> PathBuf {
    manifest().join("../traces").join(format!("{name}.json"))
}

fn trace(name: &str) -> Trace {
    load(&trace_file(name)).unwrap_or_else(|e| panic!("{e}"))
}

/// Three traces that pass against the reference adapter; the middle one misbehaves.
const TRACES: [&str; 3] = [
    "small-witness-412-happened",
    "small-witness-states-composed",
    "multihop-witness-failover-happened",
];

/// A scratch file unique to this test.
fn scratch(test: &str, what: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "sascribe-faults-{}-{test}-{what}",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&p);
    p
}

/// The command of the reference adapter behind the misbehaving wrapper: `fault` applies to
/// the second process started (the second trace) only.
fn wrapper(test: &str, fault: &str) -> String {
    format!(
        "env MISBEHAVE={fault} MISBEHAVE_COUNTER={} MISBEHAVE_ON=2 MISBEHAVE_PIDFILE={} \
         python3 {} {}",
        scratch(test, "counter").display(),
        scratch(test, "pid").display(),
        manifest().join("tests/misbehave.py").display(),
        env!("CARGO_BIN_EXE_sascribe-adapter"),
    )
}

/// The step that makes the harness send request `msg_id` (init is request 1), and the
/// request's type.
fn step_of_request(t: &Trace, msg_id: usize) -> (usize, &'static str) {
    let mut id = 1;
    for s in &t.steps {
        let ty = match &s.action {
            StepAction::UaSubscribes { .. } | StepAction::UaUnsubscribes { .. } => continue,
            StepAction::Deliver { msg } if msg.kind == "response" => continue,
            StepAction::Deliver { msg }
                if matches!(msg.kind.as_str(), "subscribe" | "unsubscribe" | "publish") =>
            {
                "client_request"
            }
            StepAction::Deliver { .. } => "deliver",
            StepAction::Lose { .. } => "lose",
            StepAction::DetectFailure { .. } => "detect_failure",
            StepAction::Retransmit { .. } => "fire_timer",
            StepAction::ReplicationRetry { .. } => "replication_retry",
            StepAction::Heartbeat { .. } => "heartbeat",
            StepAction::ParentTimeout { .. } => "parent_timeout",
            StepAction::Expire { .. } => "expire",
            StepAction::Crash { .. } => "crash",
            StepAction::Restart { .. } => "restart",
            StepAction::Alive { .. } => "alive",
            StepAction::Lapse { .. } => "lapse",
            StepAction::Reask { .. } => "reask",
            StepAction::Suspect { .. } => "suspect",
            StepAction::Heal { .. } => "heal",
        };
        id += 1;
        if id == msg_id {
            return (s.n, ty);
        }
    }
    panic!("{} sends fewer than {msg_id} requests", t.name)
}

/// What running the three traces through one adapter process gave.
struct Outcome {
    results: Vec<TraceResult>,
    /// Seconds the middle trace took.
    middle_secs: f64,
    /// Whether the middle trace left an adapter failure.
    middle_adapter_failure: bool,
}

fn run_three(test: &'static str, fault: &'static str, timeout: Duration) -> Outcome {
    within(30, move || {
        let mut p = AdapterProcess::spawn(&wrapper(test, fault))
            .unwrap()
            .with_timeout(timeout);
        let mut results = Vec::new();
        let (mut middle_secs, mut middle_adapter_failure) = (0.0, false);
        for (i, name) in TRACES.iter().enumerate() {
            let start = Instant::now();
            results.push(run_trace(&trace(name), &mut p, false));
            if i == 1 {
                middle_secs = start.elapsed().as_secs_f64();
                middle_adapter_failure = p.adapter_failure().is_some();
            }
        }
        Outcome {
            results,
            middle_secs,
            middle_adapter_failure,
        }
    })
}

/// The middle trace failed at `step` with a detail containing every one of `needles`; the
/// other two passed.
fn assert_middle_fails(o: &Outcome, step: usize, needles: &[&str]) {
    assert!(o.results[0].passed(), "{:?}", o.results[0].failure);
    let f = o.results[1]
        .failure
        .as_ref()
        .expect("the middle trace fails");
    assert_eq!(
        (f.step, f.verdict),
        (step, Verdict::CannotApply),
        "{}",
        f.detail
    );
    for n in needles {
        assert!(f.detail.contains(n), "no `{n}` in:\n{}", f.detail);
    }
    assert!(o.middle_adapter_failure);
    assert!(
        o.results[2].passed(),
        "the run goes on: {:?}",
        o.results[2].failure
    );
}

#[test]
fn a_dropped_reply_times_out_naming_the_request_and_the_adapter_is_killed() {
    let o = run_three("drop", "drop@3", TIMEOUT);
    let (step, ty) = step_of_request(&trace(TRACES[1]), 3);
    assert_middle_fails(
        &o,
        step,
        &[
            &format!("timeout: no reply to the {ty} request (msg_id 3) within 3 s"),
            "request: {",
        ],
    );
    assert!(o.middle_secs < 3.0 + SLACK, "took {} s", o.middle_secs);
}

#[test]
fn a_timed_out_adapter_process_is_gone_before_the_next_trace() {
    within(30, || {
        let test = "killed";
        let mut p = AdapterProcess::spawn(&wrapper(test, "drop@2"))
            .unwrap()
            .with_timeout(TIMEOUT);
        let t = trace(TRACES[0]);
        assert!(run_trace(&t, &mut p, false).passed());
        let r = run_trace(&t, &mut p, false);
        let want = format!(
            "no reply to the {} request (msg_id 2)",
            step_of_request(&t, 2).1
        );
        let detail = r.failure.unwrap().detail;
        assert!(detail.contains(&want), "{detail}");
        let pid = std::fs::read_to_string(scratch_path(test, "pid")).unwrap();
        // Killed and reaped: no such process (a zombie would still have a /proc entry).
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "pid {pid}");
    });
}

/// Like [`scratch`] without removing the file.
fn scratch_path(test: &str, what: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "sascribe-faults-{}-{test}-{what}",
        std::process::id()
    ))
}

#[test]
fn a_duplicated_reply_fails_the_next_request() {
    let o = run_three("dup", "dup@3", TIMEOUT);
    let t = trace(TRACES[1]);
    let (_, ty) = step_of_request(&t, 3);
    let (step, ty4) = step_of_request(&t, 4);
    assert_middle_fails(
        &o,
        step,
        &[
            &format!(
                "in_reply_to is 3: a second reply to the {ty} request (msg_id 3), already answered"
            ),
            &format!("waited for the reply to the {ty4} request (msg_id 4)"),
        ],
    );
}

#[test]
fn a_reordered_reply_is_a_missing_one_to_a_lockstep_harness() {
    // The wrapper holds reply 3 until after reply 4, but the harness sends request 4 only once
    // 3 is answered: it times out on request 3.
    let o = run_three("reorder", "reorder@3", TIMEOUT);
    let (step, ty) = step_of_request(&trace(TRACES[1]), 3);
    assert_middle_fails(
        &o,
        step,
        &[&format!("timeout: no reply to the {ty} request (msg_id 3)")],
    );
    assert!(o.middle_secs < 3.0 + SLACK, "took {} s", o.middle_secs);
}

#[test]
fn a_delay_within_the_timeout_passes_and_a_longer_one_fails() {
    let o = run_three("delay-short", "delay@3:0.5", Duration::from_secs(5));
    assert!(o.results.iter().all(TraceResult::passed));

    let o = run_three("delay-long", "delay@3:10", TIMEOUT);
    let (step, ty) = step_of_request(&trace(TRACES[1]), 3);
    assert_middle_fails(
        &o,
        step,
        &[&format!(
            "no reply to the {ty} request (msg_id 3) within 3 s"
        )],
    );
    assert!(o.middle_secs < 3.0 + SLACK, "took {} s", o.middle_secs);
}

#[test]
fn an_adapter_that_exits_mid_trace_is_reported_with_its_status_and_stderr() {
    let o = run_three("exit", "exit@4", Duration::from_secs(30));
    let (step, ty) = step_of_request(&trace(TRACES[1]), 4);
    assert_middle_fails(
        &o,
        step,
        &[
            "exited (exit status: 3)",
            &format!("while the harness waited for the reply to the {ty} request (msg_id 4)"),
            "last stderr lines:",
            "misbehave: exiting instead of answering request 4",
        ],
    );
    // Found by the end of its stdout, not by the (long) timeout.
    assert!(o.middle_secs < SLACK, "took {} s", o.middle_secs);
}

#[test]
fn mangled_replies_are_named() {
    let t = trace(TRACES[1]);
    let (step, ty) = step_of_request(&t, 3);
    let o = run_three("garbage", "garbage@3", TIMEOUT);
    assert_middle_fails(
        &o,
        step,
        &[
            "not JSON — did you mean to log to stderr?",
            "`this is not JSON`",
            &format!("the {ty} request (msg_id 3)"),
        ],
    );
    let o = run_three("wrongid", "wrongid@3", TIMEOUT);
    assert_middle_fails(
        &o,
        step,
        &["in_reply_to is 8: a reply to msg_id 8, which the harness never sent"],
    );
    let o = run_three("stale", "stale@3", TIMEOUT);
    let ty2 = step_of_request(&t, 2).1;
    assert_middle_fails(
        &o,
        step,
        &[&format!(
            "in_reply_to is 2: a second reply to the {ty2} request (msg_id 2)"
        )],
    );
}

#[test]
fn an_adapter_echoing_another_protocol_version_is_refused() {
    within(30, || {
        let mut p = AdapterProcess::spawn(&wrapper("version", "version@1"))
            .unwrap()
            .with_timeout(TIMEOUT);
        assert!(run_trace(&trace(TRACES[0]), &mut p, false).passed());
        assert!(p.version_refused().is_none());
        let f = run_trace(&trace(TRACES[1]), &mut p, false).failure.unwrap();
        assert_eq!(f.step, 0);
        let want = format!(
            "init_ok carries protocol version 99, this harness speaks adapter protocol version \
             {PROTOCOL_VERSION}"
        );
        assert!(f.detail.contains(&want), "{}", f.detail);
        // Refused for good: the next trace does not even start.
        assert!(p.version_refused().is_some());
        let f = run_trace(&trace(TRACES[2]), &mut p, false).failure.unwrap();
        assert!(f.detail.contains(&want), "{}", f.detail);
    });
}

/// The words after `family` on its line of the family table.
fn row(out: &str, family: &str) -> Vec<String> {
    out.lines()
        .find_map(|l| l.strip_prefix(family).filter(|r| r.starts_with(' ')))
        .unwrap_or_else(|| panic!("no row {family} in:\n{out}"))
        .split_whitespace()
        .map(String::from)
        .collect()
}

fn conformance(args: &[&str], env: &[(&str, String)]) -> (i32, String, f64) {
    let start = Instant::now();
    let mut c = Command::new(env!("CARGO_BIN_EXE_sascribe-conformance"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        start.elapsed().as_secs_f64(),
    )
}

#[test]
fn the_cli_reports_the_failure_goes_on_and_checks_expect_pass() {
    within(90, || {
        let files: Vec<String> = TRACES
            .iter()
            .map(|n| trace_file(n).display().to_string())
            .collect();
        let cmd = wrapper("cli", "drop@3");
        let mut args: Vec<&str> = vec!["run"];
        args.extend(files.iter().map(String::as_str));
        args.extend([
            "--adapter",
            &cmd,
            "--adapter-timeout",
            "2.5",
            "--messages-only",
        ]);
        let (code, out, secs) = conformance(&args, &[]);
        assert_eq!(code, 1, "{out}");
        let (step, ty) = step_of_request(&trace(TRACES[1]), 3);
        assert!(
            out.contains(&format!("FAIL {} step {step} [cannot_apply]", files[1])),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "no reply to the {ty} request (msg_id 3) within 2.5 s"
            )),
            "{out}"
        );
        assert_eq!(row(&out, "small-witness")[..3], ["1", "/", "2"], "{out}");
        assert_eq!(row(&out, "multihop-witness")[..3], ["1", "/", "1"], "{out}");
        assert!(
            out.contains("1 traces failed through the adapter itself"),
            "{out}"
        );
        assert!(out.ends_with("2 passed, 1 failed\n"), "{out}");
        assert!(secs < 2.5 + 4.0 * SLACK, "took {secs} s");

        // --expect-pass: the count must match and no trace may fail through the adapter.
        let adapter = env!("CARGO_BIN_EXE_sascribe-adapter");
        let mut args: Vec<&str> = vec!["run"];
        args.extend(files.iter().map(String::as_str));
        args.extend(["--adapter", adapter, "--messages-only", "--expect-pass"]);
        let (code, out, _) = conformance(&[&args[..], &["3"]].concat(), &[]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("as expected: 3 passed"), "{out}");
        let (code, out, _) = conformance(&[&args[..], &["2"]].concat(), &[]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("UNEXPECTED: --expect-pass 2"), "{out}");
        // Two pass with the wrapper too, but one failed through the adapter: not as expected.
        let mut args: Vec<&str> = vec!["run"];
        args.extend(files.iter().map(String::as_str));
        let cmd = wrapper("cli-expect", "drop@3");
        args.extend([
            "--adapter",
            &cmd,
            "--adapter-timeout",
            "2.5",
            "--messages-only",
        ]);
        args.extend(["--expect-pass", "2"]);
        let (code, out, _) = conformance(&args, &[]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("1 adapter failures"), "{out}");
    });
}
