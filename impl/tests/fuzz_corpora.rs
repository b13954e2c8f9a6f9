//! Replays the fuzz corpora of `impl/fuzz/corpus/` through the fuzz targets' entry points
//! ([`sascribe::fuzz`]) on stable, so CI needs no cargo-fuzz; and (ignored by default) writes
//! the seeds of the binary targets from real traffic:
//!
//!     cargo test -p sascribe --test fuzz_corpora -- --ignored    # rewrite the generated seeds
//!
//! Run: `cargo test -p sascribe --test fuzz_corpora`.

mod sip_net;

use sip_net::*;
use std::path::{Path, PathBuf};

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// Every file of a target's corpus through its entry point; returns how many there were. The
/// host must have answered something over the whole corpus (the seeds reach its logic).
fn replay(target: &str, run: fn(&[u8]) -> usize) -> usize {
    let dir = corpus(target);
    let (mut n, mut sent) = (0, 0);
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = e.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let r = std::panic::catch_unwind(|| run(&bytes));
        sent += r.unwrap_or_else(|_| panic!("{} fails its fuzz target", path.display()));
        n += 1;
    }
    assert!(sent > 0, "nothing in the {target} corpus got an answer");
    n
}

#[test]
fn sip_datagram_corpus() {
    assert!(replay("sip_input", sascribe::fuzz::sip_datagrams) >= 20);
}

#[test]
fn sip_stream_corpus() {
    assert!(replay("sip_stream", sascribe::fuzz::sip_stream) >= 10);
}

#[test]
fn overlay_corpus() {
    assert!(replay("overlay_input", sascribe::fuzz::overlay_datagrams) >= 10);
}

#[test]
fn config_file_corpus() {
    assert!(replay("config_file", sascribe::fuzz::config_file) >= 3);
}

/// One `[tag][len: u16 BE][bytes]` record of the binary targets' layout.
fn record(tag: u8, bytes: &[u8]) -> Vec<u8> {
    let mut r = vec![tag];
    r.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    r.extend_from_slice(bytes);
    r
}

fn write_seed(target: &str, name: &str, bytes: &[u8]) {
    let dir = corpus(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

/// Overlay seeds: the datagrams a 4-peer overlay exchanges for a publication, a subscription,
/// a modify, and the keep-alives of a few seconds, one seed per receiving peer (as sent).
#[test]
#[ignore = "writes seeds; run with --ignored to regenerate them"]
fn write_overlay_seeds() {
    // The overlay is held for seconds at a time (to capture its datagrams): peers declare each
    // other dead, and a root alone must still serve for the capture to go on, so the replica
    // quorum is off (as for a driver whose failure detector never suspects a live peer).
    let cfg = sascribe::Config {
        root_lease: u64::MAX,
        ..sascribe::Config::default()
    };
    let mut net = Net::with_config(4, cfg, &["presence"]);
    net.held = Some(Vec::new());
    publish_initial(&mut net, 0);
    net.release();
    net.held = Some(Vec::new());
    let _ = establish(&mut net, 1, 2);
    net.release();
    net.held = Some(Vec::new());
    publish_initial(&mut net, 3);
    net.advance(5_000);
    let held = net.held.take().unwrap_or_default();
    assert!(held.len() > 10, "too little traffic: {}", held.len());
    let mut per_dst: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
    for (i, dst, payload) in &held {
        per_dst
            .entry(dst.to_string())
            .or_default()
            .extend(record(*i as u8, payload));
        write_seed(
            "overlay_input",
            &format!("one-{:04}", per_dst.values().map(Vec::len).sum::<usize>()),
            &record(*i as u8, payload),
        );
    }
    for (k, (_, bytes)) in per_dst.iter().enumerate() {
        write_seed("overlay_input", &format!("all-to-peer-{k}"), bytes);
    }
}

/// SIP stream seeds: each request of the malformed and fuzz corpora on one connection, whole
/// and split in two; two requests back to back; a close in the middle of a request.
#[test]
#[ignore = "writes seeds; run with --ignored to regenerate them"]
fn write_sip_stream_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sip-corpus");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in &files {
        let name = f.file_stem().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(f).unwrap();
        let bytes = &bytes[..bytes.len().min(60_000)];
        let (a, b) = bytes.split_at(bytes.len() / 2);
        let mut split = record(0, a);
        split.extend(record(0, b));
        write_seed("sip_stream", &format!("{name}-whole"), &record(0, bytes));
        write_seed("sip_stream", &format!("{name}-split"), &split);
    }
    let p = publish(Pub::default());
    let s = subscribe(3, "z9hG4bKseed", 1, None, 600);
    let mut two = record(1, p.as_bytes());
    two.extend(record(1, s.as_bytes()));
    two.extend(record(2, s.as_bytes()));
    write_seed("sip_stream", "publish-subscribe-two-connections", &two);
    let mut closed = record(0, &p.as_bytes()[..p.len() / 3]);
    closed.extend([0, 0xFF, 0xFF]);
    closed.extend(record(0, p.as_bytes()));
    write_seed("sip_stream", "close-mid-request", &closed);
}
