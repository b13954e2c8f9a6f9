//! The `check` command as a user meets it: a `--timeout` is honoured whatever the thread count,
//! a stopped run never claims to be exhaustive, verdicts read as what they are, the last line
//! says whether the search was exhaustive, and progress lines appear on stderr.

use sascribe_model::model::PROPERTIES;
use sascribe_model::Mutant;
use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Far beyond what a `--timeout 1` run needs, however loaded the machine; without the timeout
/// these searches take minutes in a release build (much longer in a debug one).
const BOUND: Duration = Duration::from_secs(90);

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs the model checker binary; fails the test if it is still running after [`BOUND`].
fn run(args: &[&str]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sascribe-model"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sascribe-model");
    let read = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            r.read_to_string(&mut s).expect("read output");
            s
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for sascribe-model") {
            break status;
        }
        if start.elapsed() > BOUND {
            child.kill().expect("kill sascribe-model");
            child.wait().expect("reap sascribe-model");
            panic!(
                "`sascribe-model {}` still running after {BOUND:?}",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Run {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

fn last_line(s: &str) -> &str {
    s.lines().last().unwrap_or_default()
}

/// The verdict printed for each property, in order (the column between name and meaning).
fn verdicts(stdout: &str) -> Vec<(&'static str, &'static str, String)> {
    PROPERTIES
        .iter()
        .map(|&(name, kind, _)| {
            let line = stdout
                .lines()
                .find(|l| l.split_whitespace().nth(1) == Some(name))
                .unwrap_or_else(|| panic!("no verdict for {name}:\n{stdout}"));
            let rest = line[line.find(name).unwrap() + name.len()..].trim_start();
            let verdict = rest.split("  ").next().unwrap().to_string();
            (name, kind, verdict)
        })
        .collect()
}

fn counts() -> (usize, usize) {
    let sometimes = PROPERTIES.iter().filter(|p| p.1 == "sometimes").count();
    (PROPERTIES.len() - sometimes, sometimes)
}

/// The default configuration takes minutes to search exhaustively; with `--timeout 1` each
/// strategy and thread count stops after about a second and says so.
#[test]
fn timeout_is_honoured_with_any_thread_count() {
    for (strategy, threads) in [("bfs", "1"), ("dfs", "1"), ("bfs", "2")] {
        let r = run(&[
            "check",
            "--timeout",
            "1",
            "--strategy",
            strategy,
            "--threads",
            threads,
            "--progress",
            "0",
        ]);
        let what = format!("{strategy} on {threads} thread(s):\n{}", r.stdout);
        assert!(r.status.success(), "{what}");
        assert!(
            r.stdout.lines().any(|l| l
                == "search:           NOT exhaustive: stopped by timeout after 1 s \
                    (no verdict is a proof)"),
            "{what}"
        );
        assert!(
            last_line(&r.stdout).starts_with(
                "result: NOT exhaustive (stopped by timeout after 1 s): no violation found so \
                 far, nothing is proven;"
            ),
            "{what}"
        );
        for (name, kind, verdict) in verdicts(&r.stdout) {
            let ok = if kind == "sometimes" {
                [
                    "witnessed",
                    "not witnessed (sometimes)",
                    "not applicable here",
                ]
                .contains(&verdict.as_str())
            } else {
                verdict == "not violated so far"
            };
            assert!(ok, "{name}: {verdict}\n{what}");
        }
        assert!(!r.stdout.contains("search:           exhaustive"), "{what}");
    }
}

#[test]
fn an_exhaustive_run_says_so_and_names_its_verdicts_plainly() {
    let r = run(&[
        "check",
        "--subscribers",
        "1",
        "--publishes",
        "0",
        "--crashes",
        "0",
        "--expiries",
        "0",
        "--progress",
        "0",
    ]);
    assert!(r.status.success(), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("search:           exhaustive (every reachable state explored)"),
        "{}",
        r.stdout
    );
    let (checked, sometimes) = counts();
    let mut inapplicable = 0;
    for (name, kind, verdict) in verdicts(&r.stdout) {
        let expected = match (kind, name) {
            // No expiry can be notified without expiries, and this configuration leaves
            // handovers, suspicions, multicast losses and (re)joins at their default, off:
            // the checker is not asked about these.
            (
                _,
                "expiry-notified"
                | "subscription-handed-over"
                | "suspected-root-refetched"
                | "tree-repaired"
                | "root-handed-to-closer",
            ) => "not applicable here",
            // Without publications and crashes nothing of interest happens.
            ("sometimes", _) => "not witnessed (sometimes)",
            _ => "holds",
        };
        assert_eq!(verdict, expected, "{name}\n{}", r.stdout);
        inapplicable += usize::from(verdict == "not applicable here");
    }
    assert_eq!(inapplicable, 5, "{}", r.stdout);
    assert!(!r.stdout.contains("NOT REACHABLE"));
    assert_eq!(
        last_line(&r.stdout),
        format!(
            "result: exhaustive: all {checked} safety and liveness properties hold; 0 of {} \
             sometimes-properties witnessed ({inapplicable} more not applicable to this \
             configuration)",
            sometimes - inapplicable
        )
    );
}

#[test]
fn a_violation_is_reported_last_and_exits_1() {
    let m = Mutant::EmptyRootSilent;
    let r = run(&[
        "check",
        "--mutant",
        m.name(),
        "--subscribers",
        "1",
        "--publishes",
        "0",
        "--crashes",
        "0",
        "--expiries",
        "0",
        "--progress",
        "0",
    ]);
    assert_eq!(r.status.code(), Some(1), "{}", r.stdout);
    let violated: Vec<_> = verdicts(&r.stdout)
        .into_iter()
        .filter(|(_, _, verdict)| verdict == "VIOLATED")
        .map(|(name, _, _)| name)
        .collect();
    assert!(violated.contains(&m.property()), "{}", r.stdout);
    let last = last_line(&r.stdout);
    assert!(last.starts_with("result: exhaustive: "), "{last}");
    assert!(last.contains(" VIOLATED ("), "{last}");
    assert!(last.contains(m.property()), "{last}");
}

/// A mutant that breaks a property read off the history's flags, or one that reads the
/// state, is first caught by the properties checked as one; `check` then runs again with each
/// apart and names it.
#[test]
fn a_fused_property_violation_is_named_after_a_second_run() {
    use sascribe_model::model::{FLAGS_CLEAN, FLAG_PROPERTIES, STATE_CLEAN, STATE_PROPERTIES};
    let m = Mutant::EtagIgnored;
    assert!(FLAG_PROPERTIES.iter().any(|(n, _)| *n == m.property()));
    let flag = ["--publishes", "3", "--crashes", "0", "--expiries", "1"];
    let n = Mutant::NoMulticast;
    assert!(STATE_PROPERTIES.contains(&n.property()));
    let state = ["--publishes", "1", "--crashes", "0", "--expiries", "0"];
    for (m, options) in [(m, &flag[..]), (n, &state[..])] {
        let mut args = vec!["check", "--mutant", m.name(), "--progress", "0"];
        args.extend_from_slice(options);
        let r = run(&args);
        assert_eq!(r.status.code(), Some(1), "{}", r.stdout);
        assert!(
            r.stdout
                .contains("a safety property checked with others as one failed (")
                && r.stdout.contains("checking again with each apart"),
            "{m}: {}",
            r.stdout
        );
        let violated: Vec<_> = verdicts(&r.stdout)
            .into_iter()
            .filter(|(_, _, verdict)| verdict == "VIOLATED")
            .map(|(name, _, _)| name)
            .collect();
        assert_eq!(violated, [m.property()], "{}", r.stdout);
        for fused in [FLAGS_CLEAN, STATE_CLEAN] {
            assert!(!r.stdout.contains(fused), "{}", r.stdout);
        }
    }
}

#[test]
fn a_depth_bounded_run_is_not_exhaustive() {
    let r = run(&[
        "check",
        "--subscribers",
        "1",
        "--publishes",
        "1",
        "--depth",
        "3",
        "--progress",
        "0",
    ]);
    assert!(r.status.success(), "{}", r.stdout);
    assert!(
        last_line(&r.stdout).starts_with(
            "result: NOT exhaustive (depth-bounded at 3): no violation found so far, nothing is \
             proven;"
        ),
        "{}",
        r.stdout
    );
    for (name, kind, verdict) in verdicts(&r.stdout) {
        if kind != "sometimes" {
            assert_eq!(verdict, "not violated so far", "{name}\n{}", r.stdout);
        }
    }
}

#[test]
fn progress_lines_go_to_stderr_while_the_checker_runs() {
    let r = run(&[
        "check",
        "--timeout",
        "3",
        "--threads",
        "1",
        "--progress",
        "1",
    ]);
    assert!(r.status.success(), "{}", r.stdout);
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("] check: ") && l.contains(" states generated, "))
        .unwrap_or_else(|| panic!("no progress line on stderr:\n{}", r.stderr));
    for part in [" unique, max depth ", " states/s"] {
        assert!(line.contains(part), "{line}");
    }
    if cfg!(target_os = "linux") {
        assert!(line.contains(", RSS ") && line.ends_with(" MiB"), "{line}");
    }
    assert!(!r.stdout.contains("states/s, "), "progress on stdout");
    let quiet = run(&[
        "check",
        "--timeout",
        "2",
        "--threads",
        "1",
        "--progress",
        "0",
    ]);
    assert_eq!(quiet.stderr, "", "--progress 0 is quiet");
}

#[test]
fn k_zero_and_a_lone_peer_are_refused() {
    // With k = 0 no replica holds anything: `no-rollback` and `acked-durable` (which hold while
    // at most k-1 peers crashed) would be vacuous, so such a configuration is refused.
    for (args, says) in [
        (&["check", "--k", "0"][..], "--k must be at least 1"),
        (
            &["check", "--peers", "1"][..],
            "--peers must be between 2 and 8",
        ),
    ] {
        let r = run(args);
        assert_eq!(r.status.code(), Some(2), "{args:?}: {}", r.stdout);
        assert!(r.stderr.contains(says), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{args:?} checked anyway: {}", r.stdout);
    }
}

/// The unique-state count `check` printed.
fn unique_states(stdout: &str) -> usize {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("unique states:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no unique state count:\n{stdout}"))
}

/// `check` elides pACKs unless `--deliver-packs`, says which on its `config:` line, and both
/// reach the same verdicts; on `multihop`, where the subscriber's JOIN crosses an intermediate
/// that answers it with a pACK, elision explores fewer states.
#[test]
fn packs_are_elided_unless_asked_for_with_the_same_verdicts() {
    let args = [
        "check",
        "--config",
        "multihop",
        "--subscribers",
        "1",
        "--publishes",
        "1",
        "--crashes",
        "0",
        "--expiries",
        "0",
        "--progress",
        "0",
    ];
    let elided = run(&args);
    let delivered = run(&[&args[..], &["--deliver-packs"]].concat());
    for r in [&elided, &delivered] {
        assert!(r.status.success(), "{}", r.stdout);
    }
    let config = |r: &Run| {
        r.stdout
            .lines()
            .find(|l| l.starts_with("config: "))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        config(&elided).ends_with(" (pACKs elided)"),
        "{}",
        elided.stdout
    );
    assert!(!config(&delivered).contains("pACK"), "{}", delivered.stdout);
    assert_eq!(verdicts(&elided.stdout), verdicts(&delivered.stdout));
    assert_eq!(last_line(&elided.stdout), last_line(&delivered.stdout));
    assert!(
        unique_states(&elided.stdout) < unique_states(&delivered.stdout),
        "{}\n{}",
        elided.stdout,
        delivered.stdout
    );
}
