//! The configuration file: parse, apply, and run a gateway with what validates.
//! The logic and its layout are in `sascribe::fuzz::config_file`; run:
//! `cd impl/fuzz && cargo +nightly fuzz run config_file corpus/config_file`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sascribe::fuzz::config_file(data);
});
