//! Entry points shared by the fuzz targets (`impl/fuzz/`, run with cargo-fuzz) and the test
//! that replays their corpora on stable (`conformance/tests/fuzz_corpora.rs`): arbitrary bytes
//! into the trace reader and into the adapter's side of the adapter protocol. Each panics only
//! on a bug.

use crate::adapter::serve;
use crate::inprocess::InProcess;
use crate::runner::run_trace;
use serde_json::Value;
use std::path::Path;

/// A trace file's text: reading it never panics, and a trace the reader accepts runs against
/// the production peer (in-process) to a verdict without panicking, whatever it asks for.
pub fn trace_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(trace) = crate::parse(Path::new("fuzz.json"), text) else {
        return;
    };
    let mut sys = InProcess::new();
    let _ = run_trace(&trace, &mut sys, false);
}

/// Request lines into the production adapter: it answers every non-empty line with one JSON
/// reply that has a `body` object with a string `type`, never panics, and goes on after
/// anything malformed.
pub fn adapter_lines(data: &[u8]) {
    let mut out = Vec::new();
    serve(&mut InProcess::new(), data, &mut out).expect("writes to a Vec succeed");
    let text = String::from_utf8(out).expect("the adapter writes UTF-8");
    let asked = data
        .split(|&b| b == b'\n')
        .filter(|l| std::str::from_utf8(l).map_or(true, |l| !l.trim().is_empty()))
        .count();
    let replies: Vec<&str> = text.lines().collect();
    assert_eq!(replies.len(), asked, "one reply per request line");
    for r in replies {
        let v: Value = serde_json::from_str(r).expect("every reply is JSON");
        assert!(
            v["body"]["type"].is_string(),
            "a reply without a body type: {r}"
        );
    }
}
