//! `sascribe-adapter`: the production sa-Scribe core behind the JSON-lines adapter protocol,
//! version [`PROTOCOL_VERSION`] (`conformance/ADAPTER.md`). Reads requests on stdin, writes
//! replies on stdout, exits at the end of stdin. With `--runtime` each peer runs inside the
//! tokio runtime's event loop (harness socket and clock).

use sascribe_conformance::adapter::{serve, PROTOCOL_VERSION};
use sascribe_conformance::inprocess::{InProcess, Mode};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = match args.as_slice() {
        [] => Mode::Core,
        [a] if a == "--runtime" => Mode::Runtime,
        _ => {
            eprintln!(
                "usage: sascribe-adapter [--runtime]  (speaks the adapter protocol, version \
                 {PROTOCOL_VERSION}, on stdin/stdout;\n\
                 --runtime drives each peer through the tokio runtime's event loop)"
            );
            return ExitCode::from(2);
        }
    };
    let mut sys = InProcess::new().with_mode(mode);
    let stdin = std::io::stdin().lock();
    let stdout = std::io::stdout().lock();
    match serve(&mut sys, stdin, stdout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sascribe-adapter: {e}");
            ExitCode::from(1)
        }
    }
}
