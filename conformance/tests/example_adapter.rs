//! The Python example adapter (`conformance/examples/toy_notifier.py`) behaves as its README
//! says: a central root that answers at once with ETags, no overlay; on the corpus it never
//! breaks the protocol and every trace fails at a SUBSCRIBE or PUBLISH delivered to a peer
//! (where the model routes it through the overlay).

use sascribe_conformance::adapter::AdapterProcess;
use sascribe_conformance::runner::{run_trace, Verdict};
use sascribe_conformance::sut::{ClientRequest, Input, Observed, System};
use sascribe_conformance::{load, trace_files, AbstractMsg, ClientOutcome, StepAction, Trace};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn toy() -> AdapterProcess {
    let cmd = format!(
        "python3 {}",
        manifest().join("examples/toy_notifier.py").display()
    );
    AdapterProcess::spawn(&cmd)
        .unwrap()
        .with_timeout(Duration::from_secs(10))
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

fn outcome(ua: &str, kind: &str) -> ClientOutcome {
    ClientOutcome {
        ua: ua.into(),
        kind: kind.into(),
        seq: None,
        values: None,
        etag: None,
        expires: None,
    }
}

fn notify(ua: &str, seq: u8, values: &[u8]) -> ClientOutcome {
    ClientOutcome {
        seq: Some(seq),
        values: (!values.is_empty()).then(|| values.to_vec()),
        ..outcome(ua, "notify")
    }
}

fn client(p: &mut AdapterProcess, ua: &str, request: ClientRequest) -> Vec<ClientOutcome> {
    let obs: Observed = p
        .handle(&Input::ClientRequest {
            ua: ua.into(),
            peer: "A".into(),
            request,
        })
        .unwrap();
    assert!(obs.sent.is_empty(), "the toy sends no overlay message");
    obs.client
}

fn publish(value: u8, if_match: Option<u8>, expires: u8) -> ClientRequest {
    ClientRequest::Publish {
        value,
        if_match,
        expires,
    }
}

#[test]
fn the_toy_root_answers_at_once_with_etags() {
    within(60, || {
        let t: Trace = load(&manifest().join("../traces/small-witness-412-happened.json")).unwrap();
        let max = t.config.max_expires;
        let mut p = toy();
        p.handle(&Input::Init { config: t.config }).unwrap();
        // Nothing published yet: accepted, told "no state" (seq 0).
        assert_eq!(
            client(&mut p, "S1", ClientRequest::Subscribe),
            [outcome("S1", "subscribe_ok"), notify("S1", 0, &[])]
        );
        let ok = client(&mut p, "U1", publish(1, None, max + 1));
        assert_eq!(
            ok,
            [
                ClientOutcome {
                    etag: Some(1),
                    expires: Some(max),
                    ..outcome("U1", "publish_ok")
                },
                notify("S1", 1, &[1])
            ]
        );
        // A second publisher's state is composed with the first.
        let ok = client(&mut p, "U2", publish(2, None, 1));
        assert_eq!(ok[1..], [notify("S1", 2, &[1, 2])]);
        // A tag that names no state: 412; one that does: the next seq, notified.
        assert_eq!(
            client(&mut p, "U1", publish(3, Some(7), 1)),
            [outcome("U1", "publish_412")]
        );
        let ok = client(&mut p, "U1", publish(3, Some(1), 1));
        assert_eq!(ok[1..], [notify("S1", 3, &[2, 3])]);
        // Expiry of one state keeps the other.
        let obs = p
            .handle(&Input::Expire {
                at: "D".into(),
                etag: 2,
            })
            .unwrap();
        assert_eq!(obs.client, [notify("S1", 4, &[3])]);
        // Removal of the last one: a state without values.
        let ok = client(&mut p, "U1", publish(3, Some(3), 0));
        assert_eq!(
            ok,
            [
                ClientOutcome {
                    expires: Some(0),
                    ..outcome("U1", "publish_ok")
                },
                notify("S1", 5, &[])
            ]
        );
        // The overlay is ignored: nothing is ever in flight, a crash changes nothing.
        let ghost = AbstractMsg {
            kind: "join".into(),
            from: "A".into(),
            to: "D".into(),
            gid: Some(500),
            seq: None,
            value: None,
            values: None,
            req: Some("A/S1#0".into()),
            if_match: None,
            epoch: None,
        };
        let e = p.handle(&Input::Deliver { msg: ghost }).unwrap_err();
        assert!(e.contains("adapter error 14"), "{e}");
        assert!(p.handle(&Input::Crash { peer: "D".into() }).is_ok());
        let e = p.handle(&Input::Restart { peer: "D".into() }).unwrap_err();
        assert!(e.contains("adapter error 10"), "{e}");
        assert!(p.adapter_failure().is_none());
    });
}

#[test]
fn the_toy_fails_every_sampled_trace_at_a_request_to_a_peer() {
    let failures = within(300, || {
        let mut p = toy();
        let files = trace_files(&manifest().join("../traces")).unwrap();
        let mut out = Vec::new();
        for f in files.iter().step_by(12) {
            let t = load(f).unwrap();
            // The steps before the first request reaches a peer.
            let mut before_request = t.steps.iter().map(|s| &s.action).take_while(|a| {
                !matches!(a, StepAction::Deliver { msg } if msg.kind == "subscribe" || msg.kind == "publish")
            });
            let request_first = before_request.all(|a| {
                matches!(
                    a,
                    StepAction::UaSubscribes { .. } | StepAction::Deliver { .. }
                )
            });
            if !request_first || t.config.peers.iter().any(|p| p.joins) {
                // A central notifier has no overlay for a peer to pause, crash or join in: it
                // answers `suspect`, `heal` or `restart` as unsupported, and sends nothing
                // where a peer's failure detector moves the overlay on (a new root's fetch),
                // which a trace with such a step before its first request reaches a peer (or
                // with a peer that joins) takes before any request.
                continue;
            }
            let r = run_trace(&t, &mut p, false);
            assert!(p.adapter_failure().is_none(), "{:?}", p.adapter_failure());
            let f = r.failure.expect("the toy fails");
            let kind = match &t.steps[f.step - 1].action {
                StepAction::Deliver { msg } => msg.kind.clone(),
                a => format!("{a:?}"),
            };
            out.push((t.name.clone(), kind, f));
        }
        out
    });
    assert!(failures.len() >= 30);
    for (name, kind, f) in failures {
        assert!(
            kind == "subscribe" || kind == "publish",
            "{name}: {}",
            f.summary()
        );
        assert!(
            matches!(
                f.verdict,
                Verdict::IncorrectOutcome | Verdict::UnexpectedAction
            ),
            "{name}: {}",
            f.summary()
        );
    }
}
