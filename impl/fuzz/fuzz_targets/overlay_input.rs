//! Overlay datagrams from several senders into one `Host`.
//! The logic and its layout are in `sascribe::fuzz::overlay_datagrams`; run:
//! `cd impl/fuzz && cargo +nightly fuzz run overlay_input corpus/overlay_input`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sascribe::fuzz::overlay_datagrams(data);
});
