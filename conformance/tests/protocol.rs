//! The implementation side of the protocol version handshake ([`serve`]), the grouping of
//! traces into the families `run --adapter` reports, and what the in-process harness refuses
//! of a `restart`.

use sascribe_conformance::adapter::{request_line, serve, PROTOCOL_VERSION};
use sascribe_conformance::inprocess::InProcess;
use sascribe_conformance::runner::{family, run_trace, Families};
use sascribe_conformance::sut::Input;
use sascribe_conformance::{load, trace_files, Step, StepAction, Trace};
use serde_json::{json, Value};
use std::path::PathBuf;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../traces")
}

fn replies(requests: &[String]) -> Vec<Value> {
    let mut out = Vec::new();
    serve(
        &mut InProcess::new(),
        requests.join("\n").as_bytes(),
        &mut out,
    )
    .unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn serve_checks_and_echoes_the_protocol_version() {
    let t = load(&corpus().join("small-witness-subscribed-before-publish.json")).unwrap();
    let init = request_line(
        1,
        &Input::Init {
            config: t.config.clone(),
        },
    );
    let v: Value = serde_json::from_str(&init).unwrap();
    assert_eq!(v["body"]["protocol_version"], json!(PROTOCOL_VERSION));
    let with = |version: Option<Value>, id: u64| {
        let mut v = v.clone();
        v["body"]["msg_id"] = json!(id);
        match version {
            Some(x) => v["body"]["protocol_version"] = x,
            None => {
                v["body"]
                    .as_object_mut()
                    .unwrap()
                    .remove("protocol_version");
            }
        }
        v.to_string()
    };
    let r = replies(&[
        with(None, 1),
        with(Some(json!(PROTOCOL_VERSION + 1)), 2),
        with(Some(json!(PROTOCOL_VERSION)), 3),
        request_line(4, &Input::Crash { peer: "A".into() }),
    ]);
    assert_eq!(r.len(), 4);
    assert_eq!(
        (&r[0]["body"]["code"], &r[0]["body"]["in_reply_to"]),
        (&json!(12), &json!(1))
    );
    assert!(r[0]["body"]["text"]
        .as_str()
        .unwrap()
        .contains("no protocol_version"));
    assert_eq!(r[1]["body"]["code"], 10);
    assert!(r[1]["body"]["text"].as_str().unwrap().contains(&format!(
        "protocol version {} is not supported",
        PROTOCOL_VERSION + 1
    )));
    assert_eq!(r[2]["body"]["type"], "init_ok");
    assert_eq!(r[2]["body"]["protocol_version"], json!(PROTOCOL_VERSION));
    // Only init_ok carries it.
    assert_eq!(r[3]["body"]["type"], "crash_ok");
    assert!(r[3]["body"].get("protocol_version").is_none());
    // Nor any other request.
    assert!(!request_line(5, &Input::Crash { peer: "A".into() }).contains("protocol_version"));
}

#[test]
fn traces_group_into_families_by_name() {
    // A family is the file name up to its origin kind ("walk", "witness", "mutant", "cover"), whatever the
    // corpus's size: the counts change with every regeneration, the rule does not.
    let mut families = std::collections::BTreeSet::new();
    let mut mutant_file = None;
    for f in trace_files(&corpus()).unwrap() {
        let t = load(&f).unwrap();
        let stem = f.file_stem().unwrap().to_str().unwrap().to_string();
        let words: Vec<&str> = stem.split('-').collect();
        let cut = words
            .iter()
            .position(|w| ["walk", "witness", "mutant", "cover"].contains(w))
            .unwrap_or_else(|| panic!("{stem}: no origin kind in the name"));
        assert_eq!(family(&t), words[..=cut].join("-"), "{stem}");
        families.insert(family(&t));
        if stem.starts_with("mutant-") {
            mutant_file = Some(f);
        }
    }
    let got: Vec<&str> = families.iter().map(String::as_str).collect();
    assert_eq!(
        got,
        [
            "carried-cover",
            "carried-walk",
            "colocated-cover",
            "colocated-walk",
            "crash2-cover",
            "crash2-walk",
            "fenced-cover",
            "fenced-walk",
            "fig3-cover",
            "fig3-treeloss-cover",
            "fig3-treeloss-walk",
            "fig3-walk",
            "join-cover",
            "join-prefix-cover",
            "join-prefix-walk",
            "join-walk",
            "lossy-cover",
            "lossy-walk",
            "multihop-cover",
            "multihop-walk",
            "multihop-witness",
            "mutant",
            "paused-cover",
            "paused-crash-cover",
            "paused-crash-walk",
            "paused-multihop-cover",
            "paused-multihop-walk",
            "paused-prefix-cover",
            "paused-prefix-walk",
            "paused-walk",
            "prefix-cover",
            "prefix-walk",
            "quorum-walk",
            "restart-cover",
            "restart-walk",
            "small-cover",
            "small-walk",
            "small-witness",
            "treeloss-cover",
            "treeloss-walk",
        ]
    );
    // A name that carries its origin kind keeps the part up to it.
    let mut t = load(&mutant_file.expect("the corpus holds mutant traces")).unwrap();
    t.name = "small-mutant-path-no-nack".into();
    assert_eq!(family(&t), "small-mutant-path");
}

#[test]
fn the_family_table_counts_traces_steps_and_known_divergences() {
    let mut fams = Families::default();
    for name in [
        "small-walk-030",
        "small-walk-031",
        "small-witness-states-composed",
    ] {
        let mut t = load(&corpus().join(format!("{name}.json"))).unwrap();
        if name == "small-walk-031" {
            // A trace that diverges at its last step: it expects a message nobody sends.
            let mut bogus = t.steps[0].expect.sent[0].clone();
            bogus.seq = Some(99);
            t.steps.last_mut().unwrap().expect.sent.push(bogus);
        }
        let r = run_trace(&t, &mut InProcess::new(), false);
        fams.add(&t, &r, !r.passed());
    }
    let rows = fams.rows();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (
            rows[0].family.as_str(),
            rows[0].passed,
            rows[0].skipped,
            rows[0].total
        ),
        ("small-walk", 1, 1, 2)
    );
    assert!(rows[0].steps_passed < rows[0].steps);
    assert_eq!((rows[1].passed, rows[1].total), (1, 1));
    assert_eq!(rows[1].steps_passed, rows[1].steps);
    let table = fams.table();
    let all = table.lines().last().unwrap();
    assert!(all.starts_with("all") && all.contains("2 / 3"), "{table}");
    assert!(all.ends_with("(1 known divergence)"), "{table}");
}

#[test]
fn a_restart_is_refused_unless_the_peer_crashed_and_every_live_peer_declared_it_dead() {
    // The first restart trace: its crashed peer restarts once every live peer detected it.
    let t = trace_files(&corpus())
        .unwrap()
        .into_iter()
        .filter(|f| f.to_string_lossy().contains("restart-walk"))
        .map(|f| load(&f).unwrap())
        .find(|t| {
            t.steps
                .iter()
                .any(|s| matches!(s.action, StepAction::Restart { .. }))
        })
        .expect("the corpus has a restart");
    assert!(run_trace(&t, &mut InProcess::new(), false).passed());
    let at = t
        .steps
        .iter()
        .position(|s| matches!(s.action, StepAction::Restart { .. }))
        .unwrap();
    let StepAction::Restart { peer } = t.steps[at].action.clone() else {
        unreachable!()
    };
    let refused = |mut t: Trace, i: usize, why: &str| {
        t.steps.truncate(i + 1);
        let r = run_trace(&t, &mut InProcess::new(), false);
        let f = r.failure.expect("the restart is refused");
        assert_eq!(f.step, i + 1, "{f:?}");
        assert!(f.detail.contains(why), "{}", f.detail);
    };
    // Before its crash: moved to the front.
    let mut early = t.clone();
    let step = early.steps.remove(at);
    early.steps.insert(0, step);
    for (n, s) in early.steps.iter_mut().enumerate() {
        s.n = n + 1;
    }
    refused(early, 0, "has not crashed");
    // Right after its crash, before the others detect it.
    let crash = t
        .steps
        .iter()
        .position(|s| matches!(&s.action, StepAction::Crash { peer: p } if *p == peer))
        .unwrap();
    let mut soon = t.clone();
    soon.steps.truncate(crash + 1);
    soon.steps.push(Step {
        n: crash + 2,
        action: StepAction::Restart { peer },
        expect: Default::default(),
        state: Default::default(),
    });
    refused(soon, crash + 1, "has not declared");
}
