//! Request lines into the production adapter (the adapter protocol, adapter side).
//! The logic and its layout are in `sascribe_conformance::fuzz::adapter_lines`; run:
//! `cd impl/fuzz && cargo +nightly fuzz run adapter_lines corpus/adapter_lines`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sascribe_conformance::fuzz::adapter_lines(data);
});
