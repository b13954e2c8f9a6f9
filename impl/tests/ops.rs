//! Operations (issue 11): honest health (503 until joined), the config as the one source of
//! expiry bounds, and — against the `sascribe` binary — metrics that move under SIP traffic,
//! `sascribe status`, JSON logs, several bootstrap addresses and hostnames, and the checks on
//! the command line.

use sascribe::{Call, Config, Host, Input, NodeId, Output, Seeds};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sascribe");
const WAIT: Duration = Duration::from_secs(20);

fn request(method: &str, uri: &str, call_id: &str, extra: &str, body: &str) -> String {
    format!(
        "{method} {uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-{call_id}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:watcher@example.com>;tag=t-{call_id}\r\n\
         To: <{uri}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:watcher@127.0.0.1:5999>\r\n\
         {extra}Content-Length: {len}\r\n\r\n{body}",
        len = body.len()
    )
}

/// Feeds one SIP datagram to `host` and returns the first SIP response it sends.
fn sip_answer(host: &mut Host, now: u64, msg: &str) -> String {
    let from: SocketAddr = "127.0.0.1:5999".parse().unwrap();
    host.handle_input(
        now,
        Input::Sip {
            from,
            payload: msg.as_bytes(),
        },
    )
    .unwrap();
    let mut first = None;
    loop {
        match host.poll_output() {
            Output::Transmit(t) if t.socket == sascribe::Socket::SipUdp => {
                let text = String::from_utf8_lossy(&t.payload).into_owned();
                if first.is_none()
                    && text.starts_with("SIP/2.0 ")
                    && !text.starts_with("SIP/2.0 100")
                {
                    first = Some(text);
                }
            }
            Output::Timeout(_) => break,
            _ => {}
        }
    }
    first.expect("a response")
}

fn gateway(config: Config) -> Host {
    let sip = sascribe::sip::SipConfig::new("127.0.0.1:5060".parse().unwrap());
    Host::new(
        NodeId(7),
        "127.0.0.1:7000".parse().unwrap(),
        config,
        0,
        Seeds::reproducible(7),
    )
    .with_sip(sip)
}

fn pidf() -> &'static str {
    "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" \
     entity=\"sip:alice@example.com\"><tuple id=\"t\"><status><basic>open</basic></status></tuple></presence>"
}

/// Until the overlay join completes, OPTIONS, PUBLISH and SUBSCRIBE get 503 with
/// Retry-After at once (not a 504 after the request timeout); afterwards OPTIONS gets 200.
#[test]
fn sip_answers_503_until_joined() {
    let mut host = gateway(Config::default());
    host.handle_input(
        0,
        Input::Call(Call::Bootstrap("127.0.0.1:1".parse().unwrap())),
    )
    .unwrap();
    while !matches!(host.poll_output(), Output::Timeout(_)) {}
    assert!(!host.is_ready());
    let uri = "sip:alice@example.com";
    for (i, (method, extra, body)) in [
        ("OPTIONS", "", ""),
        (
            "PUBLISH",
            "Event: presence\r\nExpires: 3600\r\nContent-Type: application/pidf+xml\r\n",
            pidf(),
        ),
        ("SUBSCRIBE", "Event: presence\r\nExpires: 600\r\n", ""),
    ]
    .into_iter()
    .enumerate()
    {
        let r = sip_answer(
            &mut host,
            1,
            &request(method, uri, &format!("c{i}"), extra, body),
        );
        assert!(r.starts_with("SIP/2.0 503 "), "{method}: {r}");
        assert!(r.contains("Retry-After: "), "{method}: {r}");
    }
    assert_eq!(host.stats().sip.unwrap().not_joined, 3);
    // A peer that starts a new overlay is joined at once.
    let mut alone = gateway(Config::default());
    let r = sip_answer(&mut alone, 1, &request("OPTIONS", uri, "o", "", ""));
    assert!(r.starts_with("SIP/2.0 200 "), "{r}");
}

/// The overlay configuration is the one source of the expiry bounds: `pub_min_expires = 2`
/// is not overridden by a front-end minimum of 60 s.
#[test]
fn expiry_bounds_come_from_the_config() {
    let config = Config {
        pub_min_expires: 2,
        sub_min_expires: 2,
        ..Config::default()
    };
    let mut host = gateway(config);
    let uri = "sip:alice@example.com";
    let publish = |expires: u32, id: &str| {
        request(
            "PUBLISH",
            uri,
            id,
            &format!(
                "Event: presence\r\nExpires: {expires}\r\nContent-Type: application/pidf+xml\r\n"
            ),
            pidf(),
        )
    };
    let r = sip_answer(&mut host, 1, &publish(1, "p1"));
    assert!(r.starts_with("SIP/2.0 423 "), "{r}");
    assert!(r.contains("Min-Expires: 2\r\n"), "{r}");
    let r = sip_answer(&mut host, 2, &publish(5, "p2"));
    assert!(r.starts_with("SIP/2.0 200 "), "{r}");
    assert!(r.contains("Expires: 5\r\n"), "{r}");
    let r = sip_answer(
        &mut host,
        3,
        &request(
            "SUBSCRIBE",
            uri,
            "s1",
            "Event: presence\r\nExpires: 1\r\n",
            "",
        ),
    );
    assert!(r.contains("Min-Expires: 2\r\n"), "{r}");
}

/// A running `sascribe` process whose stdout lines are collected.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl Proc {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("sascribe runs");
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        Proc {
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// Waits for a stdout line starting with `prefix`; returns it.
    fn wait_for(&mut self, prefix: &str) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.starts_with(prefix)) {
            return l.clone();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.starts_with(prefix) {
                        return l;
                    }
                }
                Err(e) => {
                    let _ = self.child.kill();
                    panic!("no `{prefix}` line ({e}); got {:?}", self.seen);
                }
            }
        }
    }

    /// SIGTERM, then the exit code and stderr.
    fn stop(mut self) -> (Option<i32>, String) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let code = self.child.wait().unwrap().code();
        (code, self.stderr.join().unwrap())
    }
}

fn scrape(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.0 200 OK"), "{out}");
    out
}

/// Sum of the samples of metric `name` whose labels contain every one of `labels`.
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn status(admin: &str, query: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new(BIN)
        .arg("status")
        .arg(admin)
        .args(query)
        .output()
        .unwrap();
    assert!(out.status.success(), "{query:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn answer_notify(sock: &UdpSocket, text: &str, from: SocketAddr) {
    let mut resp = String::from("SIP/2.0 200 OK\r\n");
    for line in text.lines().take_while(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
        if ["via", "from", "to", "call-id", "cseq"].contains(&name.as_str()) {
            resp.push_str(line);
            resp.push_str("\r\n");
        }
    }
    resp.push_str("Content-Length: 0\r\n\r\n");
    sock.send_to(resp.as_bytes(), from).unwrap();
}

/// Sends `msg` over UDP to `to` and waits for the final response (NOTIFYs are answered).
fn sip_exchange(sock: &UdpSocket, to: &str, msg: &str) -> String {
    sock.send_to(msg.as_bytes(), to).unwrap();
    let mut buf = vec![0u8; 65_535];
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "no final response to {msg}");
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.starts_with("NOTIFY ") {
            answer_notify(sock, &text, from);
            continue;
        }
        if text.starts_with("SIP/2.0 ") && !text.starts_with("SIP/2.0 1") {
            return text;
        }
    }
}

fn ua_request(
    sock: &UdpSocket,
    method: &str,
    uri: &str,
    call_id: &str,
    extra: &str,
    body: &str,
) -> String {
    let me = sock.local_addr().unwrap();
    request(method, uri, call_id, extra, body).replace("127.0.0.1:5999", &me.to_string())
}

/// `sascribe cluster --metrics --admin`: a scrape before and after a PUBLISH and a SUBSCRIBE
/// shows the counters move; `sascribe status` answers root, presentities, presentity and
/// overlay; `--log-format json` logs JSON lines.
#[test]
fn cluster_metrics_status_and_json_logs() {
    let mut p = Proc::start(
        &[
            "--log-format",
            "json",
            "cluster",
            "--peers",
            "3",
            "--base-port",
            "0",
            "--sip-base-port",
            "0",
            "--metrics",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ],
        &[("RUST_LOG", "info")],
    );
    p.wait_for("ready");
    let metrics_url = p.wait_for("metrics ");
    let metrics = metrics_url
        .trim_start_matches("metrics http://")
        .trim_end_matches("/metrics")
        .to_string();
    let admin = p.wait_for("admin ")["admin ".len()..].to_string();
    let sips: Vec<String> = p
        .seen
        .iter()
        .filter(|l| l.starts_with("peer "))
        .filter_map(|l| l.rsplit(' ').next().map(str::to_string))
        .collect();
    assert_eq!(sips.len(), 3);

    let before = scrape(&metrics);
    assert_eq!(metric(&before, "sascribe_joined", &[]), 3.0, "{before}");
    assert_eq!(
        metric(
            &before,
            "sascribe_sip_requests_total",
            &["method=\"PUBLISH\""]
        ),
        0.0
    );

    let uri = "sip:alice@example.com";
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let sub = ua_request(
        &sock,
        "SUBSCRIBE",
        uri,
        "sub-1",
        "Event: presence\r\nExpires: 600\r\n",
        "",
    );
    let r = sip_exchange(&sock, &sips[1], &sub);
    assert!(r.starts_with("SIP/2.0 200 "), "{r}");
    let publish = ua_request(
        &sock,
        "PUBLISH",
        uri,
        "pub-1",
        "Event: presence\r\nExpires: 600\r\nContent-Type: application/pidf+xml\r\n",
        pidf(),
    );
    let r = sip_exchange(&sock, &sips[0], &publish);
    assert!(r.starts_with("SIP/2.0 200 "), "{r}");
    let etag = r
        .lines()
        .find_map(|l| l.strip_prefix("SIP-ETag: "))
        .expect("SIP-ETag")
        .to_string();
    // A SIP TCP connection held open (its write queue is empty).
    let tcp = std::net::TcpStream::connect(&sips[2]).unwrap();
    // Let the NOTIFY with the state reach the subscriber.
    std::thread::sleep(Duration::from_millis(500));
    let mut buf = [0u8; 65_535];
    while let Ok((n, from)) = sock.recv_from(&mut buf) {
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.starts_with("NOTIFY ") {
            answer_notify(&sock, &text, from);
        }
    }

    let after = scrape(&metrics);
    let m = |name: &str, labels: &[&str]| metric(&after, name, labels);
    assert_eq!(
        m("sascribe_sip_requests_total", &["method=\"PUBLISH\""]),
        1.0,
        "{after}"
    );
    assert_eq!(
        m("sascribe_sip_requests_total", &["method=\"SUBSCRIBE\""]),
        1.0
    );
    assert_eq!(
        m(
            "sascribe_sip_responses_total",
            &["method=\"PUBLISH\"", "status=\"200\""]
        ),
        1.0
    );
    assert!(m("sascribe_sip_notifies_sent_total", &[]) >= 2.0, "{after}");
    assert_eq!(m("sascribe_sip_dialogs", &[]), 1.0);
    assert_eq!(m("sascribe_groups_rooted", &[]), 1.0);
    assert!(m("sascribe_groups_replicated", &[]) >= 1.0);
    assert!(m("sascribe_overlay_messages_total", &["kind=\"replicate\""]) >= 1.0);
    assert_eq!(m("sascribe_publish_latency_seconds_count", &[]), 1.0);
    assert!(m("sascribe_leaf_set_size", &[]) >= 6.0);
    assert_eq!(m("sascribe_sip_connections", &[]), 1.0, "{after}");
    assert_eq!(m("sascribe_sip_tcp_write_queued_bytes", &[]), 0.0);
    assert_eq!(m("sascribe_sip_tcp_dropped_slow_total", &[]), 0.0);
    assert_eq!(
        m("sascribe_sip_tcp_write_queue_limit_bytes", &[]),
        3.0 * (1u64 << 20) as f64
    );
    assert!(after.contains("sascribe_events_queued{"), "{after}");
    drop(tcp);
    // The cluster made its own key: every refusal kind is exported, none happened.
    for name in [
        "sascribe_overlay_bad_mac_total",
        "sascribe_overlay_replayed_total",
        "sascribe_overlay_stale_total",
        "sascribe_overlay_wrong_destination_total",
    ] {
        assert!(
            after.contains(&format!("{name}{{")),
            "{name} missing: {after}"
        );
        assert_eq!(m(name, &[]), 0.0, "{name}");
    }

    // Status: the root the front end would route to, the presentity and its watcher.
    let root = status(&admin, &["root", uri, "presence"]);
    assert_eq!(root.len(), 1);
    let root_id = root[0]["root"].as_str().expect("a root").to_string();
    assert_eq!(root[0]["group"]["seq"], 1);
    let list = status(&admin, &["presentities"]);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["peer"], root_id.as_str());
    assert_eq!(list[0]["resource"], uri);
    let one = status(&admin, &["presentity", uri]);
    let at_root = one
        .iter()
        .find(|v| v["role"] == "root")
        .expect("the root's record");
    assert_eq!(at_root["states"][0]["etag"], etag.as_str());
    assert_eq!(at_root["states"][0]["content_type"], "application/pidf+xml");
    assert!(one.iter().any(|v| v["role"] == "replica"));
    let watcher = one
        .iter()
        .find(|v| v.get("watcher").is_some())
        .expect("a watcher");
    assert_eq!(watcher["state"], "active");
    assert_eq!(watcher["last_seq"], 1);
    let overlay = status(&admin, &["overlay"]);
    assert_eq!(overlay.len(), 3);
    assert!(overlay.iter().all(|v| v["joined"] == true));
    assert!(overlay
        .iter()
        .all(|v| v["authenticated"] == true && v.get("warning").is_none()));
    let bad = Command::new(BIN)
        .args(["status", &admin, "frobnicate"])
        .output()
        .unwrap();
    assert!(!bad.status.success());

    let (code, stderr) = p.stop();
    assert_eq!(code, Some(0), "{stderr}");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    assert!(lines
        .iter()
        .any(|v| v["fields"]["message"] == "joined the overlay"));
    assert!(!stderr.contains("\u{1b}["), "ANSI codes in a log file");
}

/// `sascribe cluster` generates a key by default (`--key-out` writes it): a `sascribe peer`
/// with that key joins it. `--insecure-no-key` runs without one; a keyless peer on a
/// non-loopback address warns in its log and in `status … overlay`.
#[test]
fn cluster_key_by_default_and_keyless_warning() {
    let dir = std::env::temp_dir().join(format!("sascribe-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("key.toml");
    let mut cluster = Proc::start(
        &[
            "cluster",
            "--peers",
            "2",
            "--base-port",
            "0",
            "--sip-base-port",
            "0",
            "--key-out",
            key_file.to_str().unwrap(),
        ],
        &[],
    );
    cluster.wait_for("ready");
    let overlay = cluster
        .wait_for("peer 0 ")
        .split_whitespace()
        .skip_while(|w| *w != "overlay")
        .nth(1)
        .unwrap()
        .to_string();
    let text = std::fs::read_to_string(&key_file).unwrap();
    let hex = text
        .trim()
        .strip_prefix("cluster_key = \"")
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(hex.len(), 64, "{text}");
    assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "key file readable by others: {mode:o}");
    }
    let mut joiner = Proc::start(
        &[
            "peer",
            "--listen",
            "127.0.0.1:0",
            "--bootstrap",
            &overlay,
            "--config",
            key_file.to_str().unwrap(),
        ],
        &[],
    );
    joiner.wait_for("ready");
    let (code, err) = joiner.stop();
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("NO CLUSTER KEY"), "{err}");
    let (code, err) = cluster.stop();
    assert_eq!(code, Some(0), "{err}");

    // Without a key on an address other hosts reach: a WARN line, and the status says so.
    let mut keyless = Proc::start(
        &[
            "peer",
            "--listen",
            "127.0.0.1:0",
            "--advertise",
            "192.0.2.1:7000",
            "--admin",
            "127.0.0.1:0",
        ],
        &[("RUST_LOG", "info")],
    );
    keyless.wait_for("ready");
    let admin = keyless.wait_for("admin ")["admin ".len()..].to_string();
    let overlay = status(&admin, &["overlay"]);
    assert_eq!(overlay[0]["authenticated"], false);
    let warning = overlay[0]["warning"].as_str().expect("a warning");
    assert!(warning.contains("NO CLUSTER KEY"), "{warning}");
    let (code, err) = keyless.stop();
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("WARN") && l.contains("NO CLUSTER KEY")),
        "{err}"
    );
    // On loopback, no warning.
    let mut local = Proc::start(
        &["peer", "--listen", "127.0.0.1:0"],
        &[("RUST_LOG", "info")],
    );
    local.wait_for("ready");
    let (code, err) = local.stop();
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("NO CLUSTER KEY"), "{err}");
    // --insecure-no-key: a cluster without a key, said so in the log.
    let mut insecure = Proc::start(
        &[
            "cluster",
            "--peers",
            "1",
            "--base-port",
            "0",
            "--sip-base-port",
            "0",
            "--insecure-no-key",
        ],
        &[("RUST_LOG", "info")],
    );
    insecure.wait_for("ready");
    let (code, err) = insecure.stop();
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("--insecure-no-key"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Several `--bootstrap` addresses, a hostname among them: a dead one is skipped after a
/// while, logged readably (no `Some(…)`), and the peer joins through the next.
#[test]
fn bootstrap_tries_several_addresses_and_hostnames() {
    let mut first = Proc::start(&["peer", "--listen", "127.0.0.1:0"], &[]);
    let line = first.wait_for("peer ");
    let overlay = line
        .split_whitespace()
        .skip_while(|w| *w != "overlay")
        .nth(1)
        .unwrap()
        .to_string();
    first.wait_for("ready");
    let port = overlay.rsplit(':').next().unwrap();
    // A port nobody answers on.
    let dead = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    let live = format!("localhost:{port}");
    let mut second = Proc::start(
        &[
            "peer",
            "--listen",
            "127.0.0.1:0",
            "--bootstrap",
            &dead_addr,
            "--bootstrap",
            &live,
        ],
        &[("RUST_LOG", "info")],
    );
    second.wait_for("ready");
    let (code, err) = second.stop();
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains(&format!("no answer from bootstrap {dead_addr}")),
        "{err}"
    );
    assert!(
        err.contains(&format!("joining the overlay through {live}")),
        "{err}"
    );
    assert!(!err.contains("Some("), "{err}");
    assert!(
        !err.contains("\u{1b}["),
        "ANSI codes when stderr is not a terminal: {err}"
    );
    let (code, _) = first.stop();
    assert_eq!(code, Some(0));
    drop(dead);
}

/// Refusals on the command line: a bootstrap equal to --listen, a non-loopback admin address;
/// `--check-config` on the example file; `config --print-defaults` prints the example file.
#[test]
fn command_line_checks_and_config_tools() {
    let run = |args: &[&str]| Command::new(BIN).args(args).output().unwrap();
    let same = run(&[
        "peer",
        "--listen",
        "127.0.0.1:7999",
        "--bootstrap",
        "127.0.0.1:7999",
    ]);
    assert_eq!(same.status.code(), Some(2));
    let err = String::from_utf8_lossy(&same.stderr);
    assert!(err.contains("own address"), "{err}");
    let remote = run(&["peer", "--listen", "127.0.0.1:0", "--admin", "0.0.0.0:0"]);
    assert_eq!(remote.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&remote.stderr).contains("--admin-allow-remote"));
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../sascribe.example.toml");
    let ok = run(&["peer", "--config", example, "--check-config"]);
    assert!(ok.status.success(), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("OK"));
    let printed = run(&["config", "--print-defaults"]);
    assert!(printed.status.success());
    assert_eq!(
        String::from_utf8_lossy(&printed.stdout),
        std::fs::read_to_string(example).unwrap()
    );
    // A TOML error: once, with the file, the line and the key, and no usage line.
    let dir = std::env::temp_dir().join(format!("sascribe-ops-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "leaf_set_size = 16\npub_min_expire = 2\n").unwrap();
    let out = run(&["peer", "--config", bad.to_str().unwrap(), "--check-config"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("line 2") && err.contains("pub_min_expire"),
        "{err}"
    );
    assert_eq!(err.matches("pub_min_expire`").count(), 1, "{err}");
    assert!(!err.contains("Usage:"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
