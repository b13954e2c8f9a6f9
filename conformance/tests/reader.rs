//! The reader accepts the committed corpus and names what is wrong in a bad trace.

use sascribe_conformance::{chart, load, parse, trace_files};
use std::path::Path;

fn corpus() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../traces")
}

fn trace_schema() -> jsonschema::Validator {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("trace.schema.json");
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    jsonschema::validator_for(&s).unwrap()
}

/// `trace.schema.json` describes the traces as written: the corpus and the regressions.
#[test]
fn every_committed_trace_validates_against_the_schema() {
    let schema = trace_schema();
    let regressions = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let mut files = trace_files(&corpus()).unwrap();
    files.extend(trace_files(&regressions).unwrap());
    for f in files {
        let t: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let errors: Vec<String> = schema
            .iter_errors(&t)
            .take(3)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {}", f.display(), errors.join("; "));
    }
}

#[test]
fn every_committed_trace_reads_and_renders() {
    let files = trace_files(&corpus()).unwrap();
    assert!(files.len() >= 300);
    for f in files {
        let t = load(&f).unwrap_or_else(|e| panic!("{e}"));
        let text = chart::text(&t);
        assert!(text.lines().filter(|l| l.contains(". ")).count() >= t.steps.len());
        assert!(chart::mermaid(&t).starts_with("sequenceDiagram"));
    }
}

#[test]
fn bad_traces_get_errors_naming_the_problem() {
    let file = corpus().join("small-witness-failover-happened.json");
    let good = std::fs::read_to_string(&file).unwrap();
    let p = Path::new("t.json");

    let e = parse(p, &good.replacen("\"version\": 12", "\"version\": 9", 1)).unwrap_err();
    assert!(e.to_string().contains("version 9 is not supported"), "{e}");
    let e = parse(p, &good.replacen("\"version\": 12", "\"version\": 2", 1)).unwrap_err();
    assert!(e.to_string().contains("version 2 is not supported"), "{e}");
    // A version-3 trace (no `state`, and a field version 4 does not know) is refused by its
    // version, naming both, before its fields are read.
    let v3 = good
        .replacen("\"version\": 12", "\"version\": 3", 1)
        .replacen("\"expect\": {", "\"expect\": {\"nack\": [],", 1);
    let e = parse(p, &v3).unwrap_err().to_string();
    assert!(
        e.contains("version 3 is not supported") && e.contains("reads versions 10 to 12"),
        "{e}"
    );
    assert!(e.contains("sascribe-model traces"), "{e}");

    let e = parse(
        p,
        &good.replacen(
            "\"state\": {\n        \"D\"",
            "\"state\": {\n        \"Q\"",
            1,
        ),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("state names unknown peer 'Q'"),
        "{e}"
    );
    // Counted events (version 11) name a configured peer and a known kind, and a version-10
    // trace, read as it is, lists none.
    let taken = "\"peer\": \"C\",\n            \"kind\": \"takeover\"";
    assert!(
        good.contains(taken),
        "the failover witness counts C's takeover"
    );
    for (to, says) in [
        (
            "\"peer\": \"Q\",\n            \"kind\": \"takeover\"",
            "counting peer names unknown actor 'Q'",
        ),
        (
            "\"peer\": \"C\",\n            \"kind\": \"takeoff\"",
            "counted kind 'takeoff' is none of",
        ),
    ] {
        let e = parse(p, &good.replacen(taken, to, 1)).unwrap_err();
        assert!(e.to_string().contains(says), "{e}");
    }
    let v10 = good.replacen("\"version\": 12", "\"version\": 10", 1);
    let e = parse(p, &v10).unwrap_err();
    assert!(
        e.to_string()
            .contains("a version-10 trace lists no counted events"),
        "{e}"
    );
    let start = v10
        .find(",\n        \"counted\": [")
        .expect("a counted list");
    let end = start + v10[start..].find(']').expect("its end") + 1;
    let v10 = format!("{}{}", &v10[..start], &v10[end..]);
    parse(p, &v10).unwrap_or_else(|e| panic!("a version-10 trace is read: {e}"));

    // A peer that joins mid-run (version 12): not in an older trace, not every peer, and no
    // user agent attached to it. The failover witness's D hosts no user agent; A and C do.
    let joins = |t: &str, peer: &str| {
        let at = t
            .find(&format!("\"name\": \"{peer}\",\n        \"id\""))
            .unwrap_or_else(|| panic!("peer {peer} in the configuration"));
        format!("{}\"joins\": true, {}", &t[..at], &t[at..])
    };
    let d_joins = joins(&good, "D");
    parse(p, &d_joins).unwrap_or_else(|e| panic!("a peer that joins is read: {e}"));
    let e = parse(
        p,
        &d_joins.replacen("\"version\": 12", "\"version\": 11", 1),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("peer D: a version-11 trace has no peer that joins mid-run"),
        "{e}"
    );
    let e = parse(p, &joins(&good, "A")).unwrap_err();
    assert!(
        e.to_string()
            .contains("user agent S1 is attached to A, which joins mid-run"),
        "{e}"
    );
    let every = ["A", "C"].iter().fold(d_joins, |t, q| joins(&t, q));
    let e = parse(p, &every).unwrap_err();
    assert!(e.to_string().contains("every peer joins mid-run"), "{e}");

    let e = parse(
        p,
        &good.replacen("\"latest\": 1", "\"latest\": 1, \"lates\": 1", 1),
    )
    .unwrap_err();
    assert!(e.to_string().contains("lates"), "{e}");

    // Numbers a harness computes with (found by the trace_text fuzzer: 2^56 overflowed).
    for (from, to, says) in [
        (
            "\"id_bits\": 10",
            "\"id_bits\": 56",
            "id_bits must be between 1 and 16, got 56",
        ),
        (
            "\"id_bits\": 10",
            "\"id_bits\": 0",
            "id_bits must be between 1 and 16, got 0",
        ),
        (
            "\"digit_bits\": 2",
            "\"digit_bits\": 11",
            "digit_bits must be between 1 and id_bits",
        ),
        (
            "\"leaf_half\": 3",
            "\"leaf_half\": 0",
            "leaf_half must be between 1 and 16",
        ),
        (
            "\"id_bits\": 10",
            "\"id_bits\": 6",
            "peer A's id 64 does not fit config.id_bits (6)",
        ),
        (
            "\"network\": \"unordered\"",
            "\"network\": \"duplicating\"",
            "traces of a duplicating network cannot be replayed yet",
        ),
        (
            "\"network\": \"unordered\"",
            "\"network\": \"fifo\"",
            "config.network must be \"unordered\" or \"ordered\", got \"fifo\"",
        ),
    ] {
        assert!(good.contains(from), "{from}");
        let e = parse(p, &good.replacen(from, to, 1))
            .unwrap_err()
            .to_string();
        assert!(e.contains(says), "{to}: {e}");
    }

    // A fetch round's messages name their epoch (version 8), and only they do.
    let no_epoch = good.replacen(",\n            \"epoch\": 2", "", 1);
    assert_ne!(no_epoch, good);
    let e = parse(p, &no_epoch).unwrap_err().to_string();
    assert!(e.contains("fetch_state C → A carries no epoch"), "{e}");
    let stray = good.replacen(
        "\"kind\": \"join\",",
        "\"kind\": \"join\", \"epoch\": 1,",
        1,
    );
    assert_ne!(stray, good);
    let e = parse(p, &stray).unwrap_err().to_string();
    assert!(
        e.contains("carries an epoch (only fetch_state, fetch_reply, fetch_busy and fenced do, and replicate with config.leases)"),
        "{e}"
    );
    let schema = trace_schema();
    for bad in [&no_epoch, &stray] {
        let t: serde_json::Value = serde_json::from_str(bad).unwrap();
        assert!(!schema.is_valid(&t), "the schema takes a misplaced epoch");
    }

    // A pause (version 10) needs leases, and with leases a replicate names its epoch.
    let paused = std::fs::read_to_string(corpus().join("paused-walk-000.json")).unwrap();
    parse(p, &paused).unwrap();
    let leaseless = paused.replacen("\"leases\": true", "\"leases\": false", 1);
    assert_ne!(leaseless, paused);
    let e = parse(p, &leaseless).unwrap_err().to_string();
    assert!(
        e.contains("need config.leases") || e.contains("carries an epoch"),
        "{e}"
    );

    let e = parse(p, &good.replacen("\"n\": 2,", "\"n\": 5,", 1)).unwrap_err();
    assert!(e.to_string().contains("step 2 is numbered 5"), "{e}");

    let e = parse(p, &good.replacen("\"to\": \"D\"", "\"to\": \"Q\"", 1)).unwrap_err();
    assert!(e.to_string().contains("unknown actor 'Q'"), "{e}");

    let e = parse(
        p,
        &good.replacen("\"kind\": \"deliver\"", "\"kind\": \"teleport\"", 1),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("line") && e.to_string().contains("teleport"),
        "{e}"
    );

    let e = parse(p, &good[..good.len() / 2]).unwrap_err();
    assert!(e.to_string().starts_with("t.json: line"), "{e}");
}
