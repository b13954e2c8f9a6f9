//! SIP over TCP: chunks of several connections into one gateway `Host`.
//! The logic and its layout are in `sascribe::fuzz::sip_stream`; run:
//! `cd impl/fuzz && cargo +nightly fuzz run sip_stream corpus/sip_stream`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sascribe::fuzz::sip_stream(data);
});
