//! SIP datagrams (NUL-separated) into one gateway `Host`, timers between them.
//! The logic and its layout are in `sascribe::fuzz::sip_datagrams`; run:
//! `cd impl/fuzz && cargo +nightly fuzz run sip_input corpus/sip_input`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sascribe::fuzz::sip_datagrams(data);
});
