//! Replays the conformance fuzz corpora (`impl/fuzz/corpus/trace_text`,
//! `impl/fuzz/corpus/adapter_lines`) through the fuzz targets' entry points
//! ([`sascribe_conformance::fuzz`]) on stable, so CI needs no cargo-fuzz.
//!
//! Run: `cargo test -p sascribe-conformance --test fuzz_corpora`.

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../impl/fuzz/corpus")
        .join(target)
}

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = corpus(target);
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = e.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let r = std::panic::catch_unwind(|| run(&bytes));
        assert!(r.is_ok(), "{} fails its fuzz target", path.display());
        n += 1;
    }
    n
}

#[test]
fn trace_reader_corpus() {
    assert!(replay("trace_text", sascribe_conformance::fuzz::trace_text) >= 5);
}

#[test]
fn adapter_protocol_corpus() {
    assert!(replay("adapter_lines", sascribe_conformance::fuzz::adapter_lines) >= 3);
}

/// Lines that are not UTF-8, not JSON, or JSON of the wrong shape each get an error reply,
/// and the adapter goes on to answer the next request.
#[test]
fn the_adapter_answers_every_malformed_line() {
    let input: &[u8] = b"\xff\xfe not utf-8\n\
        {\"body\": 7}\n\
        not json\n\
        {\"src\":\"h\",\"dest\":\"s\",\"body\":{\"type\":\"frobnicate\",\"msg_id\":1}}\n\
        \n\
        {\"src\":\"h\",\"dest\":\"s\",\"body\":{\"type\":\"init\",\"msg_id\":2}}\n";
    sascribe_conformance::fuzz::adapter_lines(input);
}
