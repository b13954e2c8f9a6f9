//! The conformance trace reader, and a run against the production peer of what it accepts.
//! The logic and its layout are in `sascribe_conformance::fuzz::trace_text`; run:
//! `cd impl/fuzz && cargo +nightly fuzz run trace_text corpus/trace_text`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sascribe_conformance::fuzz::trace_text(data);
});
