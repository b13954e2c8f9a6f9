//! The JSON-lines adapter protocol (`conformance/ADAPTER.md`, JSON Schema
//! `conformance/adapter.schema.json`): the harness talks to an implementation under test
//! through its stdin/stdout, one JSON object per line, Maelstrom style (`{"src","dest","body"}`,
//! `msg_id` / `in_reply_to`, `<type>_ok` replies, `error` bodies with a code). Logs go to
//! stderr.
//!
//! [`AdapterProcess`] is the harness side (a [`System`] backed by a child process, every
//! request bounded by a timeout); [`serve`] is the implementation side, used by the
//! `sascribe-adapter` binary over any [`System`].

use crate::sut::{Input, Observed, System};
use crate::PeerState;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The version of the adapter protocol this harness and [`serve`] speak: `init` carries it as
/// `protocol_version` and `init_ok` must echo it.
pub const PROTOCOL_VERSION: u64 = 10;

/// How long the harness waits for the reply to one request unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Error code: the request type (or protocol version) is not supported.
pub const NOT_SUPPORTED: u32 = 10;
/// Error code: the request is malformed.
pub const MALFORMED_REQUEST: u32 = 12;
/// Error code: the request is well-formed but cannot be applied in the current state (e.g.
/// the message to deliver is not in flight).
pub const CANNOT_APPLY: u32 = 14;

/// Node name of the harness in envelopes.
pub const HARNESS: &str = "harness";
/// Node name of the implementation in envelopes.
pub const SUT: &str = "sut";

/// The request types, in the order ADAPTER.md lists them.
pub const REQUEST_TYPES: [&str; 18] = [
    "init",
    "client_request",
    "deliver",
    "lose",
    "detect_failure",
    "fire_timer",
    "replication_retry",
    "heartbeat",
    "parent_timeout",
    "expire",
    "crash",
    "restart",
    "alive",
    "lapse",
    "reask",
    "suspect",
    "heal",
    "state",
];

/// Encodes `input` as a request line with id `msg_id` (an `init` also carries
/// [`PROTOCOL_VERSION`]).
pub fn request_line(msg_id: u64, input: &Input) -> String {
    let mut body = serde_json::to_value(input).expect("inputs serialise");
    body["msg_id"] = json!(msg_id);
    if matches!(input, Input::Init { .. }) {
        body["protocol_version"] = json!(PROTOCOL_VERSION);
    }
    json!({"src": HARNESS, "dest": SUT, "body": body}).to_string()
}

/// The `state` request line with id `msg_id` (protocol version 3; optional for an adapter).
pub fn state_request_line(msg_id: u64) -> String {
    json!({"src": HARNESS, "dest": SUT, "body": {"type": "state", "msg_id": msg_id}}).to_string()
}

/// The request type of `input` (`init`, `deliver`, …).
pub fn request_type(input: &Input) -> String {
    let t = serde_json::to_value(input).expect("inputs serialise");
    t["type"].as_str().unwrap_or("unknown").to_string()
}

/// The name of an error code, for messages.
fn code_name(code: u64) -> &'static str {
    match code {
        10 => "not supported",
        12 => "malformed request",
        14 => "cannot apply",
        _ => "unknown code",
    }
}

/// Runs the implementation side of the protocol: reads requests from `input`, hands them to
/// `sys`, writes replies to `output`. Returns at end of input.
pub fn serve(
    sys: &mut dyn System,
    input: impl BufRead,
    mut output: impl Write,
) -> std::io::Result<()> {
    for line in input.split(b'\n') {
        let line = line?;
        let reply = match std::str::from_utf8(&line) {
            Ok(l) if l.trim().is_empty() => continue,
            Ok(l) => answer(sys, l.strip_suffix('\r').unwrap_or(l)),
            Err(e) => error_body(None, MALFORMED_REQUEST, format!("not UTF-8: {e}")),
        };
        writeln!(output, "{reply}")?;
        output.flush()?;
    }
    Ok(())
}

fn error_body(in_reply_to: Option<u64>, code: u32, text: String) -> Value {
    json!({"src": SUT, "dest": HARNESS,
           "body": {"type": "error", "in_reply_to": in_reply_to, "code": code, "text": text}})
}

fn answer(sys: &mut dyn System, line: &str) -> Value {
    let v: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return error_body(None, MALFORMED_REQUEST, format!("not JSON: {e}")),
    };
    let Some(mut body) = v.get("body").cloned().filter(Value::is_object) else {
        return error_body(None, MALFORMED_REQUEST, "no body object".into());
    };
    let id = body.get("msg_id").and_then(Value::as_u64);
    let t = body
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !REQUEST_TYPES.contains(&t.as_str()) {
        return error_body(id, NOT_SUPPORTED, format!("unknown request type '{t}'"));
    }
    let Some(o) = body.as_object_mut() else {
        unreachable!("filtered on is_object above")
    };
    o.remove("msg_id");
    if t == "state" {
        if let Some(k) = o.keys().find(|k| *k != "type") {
            return error_body(
                id,
                MALFORMED_REQUEST,
                format!("bad 'state' request: field '{k}'"),
            );
        }
        return match sys.state() {
            None => error_body(
                id,
                NOT_SUPPORTED,
                "this implementation does not report its state".into(),
            ),
            Some(Err(e)) => error_body(id, CANNOT_APPLY, e),
            Some(Ok(mut peers)) => {
                // An empty projection may be left out.
                peers.retain(|_, p| *p != PeerState::default());
                json!({"src": SUT, "dest": HARNESS,
                       "body": {"type": "state_ok", "in_reply_to": id, "peers": peers}})
            }
        };
    }
    if t == "init" {
        match o.remove("protocol_version") {
            None => {
                return error_body(
                    id,
                    MALFORMED_REQUEST,
                    format!("init carries no protocol_version (this adapter speaks version {PROTOCOL_VERSION})"),
                )
            }
            Some(v) if v != json!(PROTOCOL_VERSION) => {
                return error_body(
                    id,
                    NOT_SUPPORTED,
                    format!("protocol version {v} is not supported (this adapter speaks version {PROTOCOL_VERSION})"),
                )
            }
            Some(_) => {}
        }
    }
    let input: Input = match serde_json::from_value(body) {
        Ok(i) => i,
        Err(e) => return error_body(id, MALFORMED_REQUEST, format!("bad '{t}' request: {e}")),
    };
    match sys.handle(&input) {
        Ok(obs) => {
            let mut b = serde_json::to_value(&obs).expect("observations serialise");
            b["type"] = json!(format!("{t}_ok"));
            b["in_reply_to"] = json!(id);
            if t == "init" {
                b["protocol_version"] = json!(PROTOCOL_VERSION);
            }
            json!({"src": SUT, "dest": HARNESS, "body": b})
        }
        Err(e) => error_body(id, CANNOT_APPLY, e),
    }
}

/// A protocol line as [`AdapterProcess::recording`] keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireLine {
    /// A request the harness wrote to the adapter's stdin.
    Request(String),
    /// A line the adapter wrote on its stdout.
    Reply(String),
}

/// Lines of stderr kept for error reports.
const STDERR_TAIL: usize = 32;
/// How long the harness waits for a process whose stdout closed to exit, and then for the
/// last lines of its stderr.
const EXIT_GRACE: Duration = Duration::from_secs(1);

/// How long an adapter whose stdin the harness closed at the end of a trace may take to exit
/// before it is killed.
const CLOSE_GRACE: Duration = Duration::from_millis(200);

/// What the stdout reader thread passes on.
enum Out {
    Line(String),
    Eof,
}

/// One started adapter process: a writer thread feeds its stdin, reader threads drain its
/// stdout (into a channel the harness waits on with a timeout) and its stderr (into a tail).
/// Dropping it kills the process.
struct Running {
    child: Child,
    requests: Sender<String>,
    lines: Receiver<Out>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    stderr_done: Receiver<()>,
}

/// Reads `r` line by line (lossily decoded, line ends stripped) until end of file or error.
fn for_each_line(r: impl Read, mut f: impl FnMut(String) -> bool) {
    let mut r = BufReader::new(r);
    loop {
        let mut buf = Vec::new();
        match r.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let s = String::from_utf8_lossy(&buf);
                if !f(s.trim_end_matches(['\n', '\r']).to_string()) {
                    return;
                }
            }
        }
    }
}

impl Running {
    fn start(command: &str) -> Result<Self, String> {
        let mut parts = command.split_whitespace();
        let prog = parts.next().ok_or("empty adapter command")?;
        let mut child = Command::new(prog)
            .args(parts)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start adapter '{command}': {e}"))?;
        let mut stdin = child.stdin.take().ok_or("no adapter stdin")?;
        let stdout = child.stdout.take().ok_or("no adapter stdout")?;
        let err = child.stderr.take().ok_or("no adapter stderr")?;

        let (requests, to_write) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            // Ends when the harness drops the sender or the adapter closes its stdin.
            for line in to_write {
                if writeln!(stdin, "{line}")
                    .and_then(|_| stdin.flush())
                    .is_err()
                {
                    return;
                }
            }
        });
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for_each_line(stdout, |l| tx.send(Out::Line(l)).is_ok());
            let _ = tx.send(Out::Eof);
        });
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let sink = Arc::clone(&stderr);
        let (done, stderr_done) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            for_each_line(err, |line| {
                let mut q = sink.lock().unwrap_or_else(|p| p.into_inner());
                if q.len() == STDERR_TAIL {
                    q.pop_front();
                }
                q.push_back(line);
                true
            });
            drop(done);
        });
        Ok(Running {
            child,
            requests,
            lines,
            stderr,
            stderr_done,
        })
    }

    fn stderr_tail(&self) -> String {
        let q = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        if q.is_empty() {
            String::new()
        } else {
            format!(
                "\n    last stderr lines:\n      {}",
                q.iter().cloned().collect::<Vec<_>>().join("\n      ")
            )
        }
    }

    /// The adapter's stdout closed: how it ended, and the last lines of its stderr. Waits a
    /// bounded time for the exit status and the end of stderr.
    fn ended(&mut self) -> (String, String) {
        let until = Instant::now() + EXIT_GRACE;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break format!("exited ({s})"),
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(10)),
                _ => break "closed its stdout".to_string(),
            }
        };
        let _ = self
            .stderr_done
            .recv_timeout(until.saturating_duration_since(Instant::now()));
        (status, self.stderr_tail())
    }
}

impl Running {
    /// Ends an adapter that did nothing wrong: closes its stdin and gives it [`CLOSE_GRACE`] to
    /// exit on its own before it is killed (when dropped).
    fn close(&mut self) {
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.requests, closed));
        let until = Instant::now() + CLOSE_GRACE;
        while Instant::now() < until {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Why an exchange failed.
enum Fail {
    /// The adapter answered with an `error` body: it is alive and spoke the protocol.
    Error(String),
    /// The adapter broke the protocol (no reply in time, a malformed or unexpected line, it
    /// exited): it is stopped.
    Protocol(String),
}

/// An implementation under test running as a child process that speaks the protocol.
///
/// Every request waits at most the timeout ([`DEFAULT_TIMEOUT`], [`AdapterProcess::with_timeout`])
/// for its reply. A missing, late, duplicated or malformed reply, or the process exiting, fails
/// the request with a message naming it; the process is then killed. Each `init` after the
/// first (the next trace) runs in a fresh process, so a failure never carries over: the
/// previous one has its stdin closed and is killed unless it exits within 200 ms.
pub struct AdapterProcess {
    command: String,
    timeout: Duration,
    running: Option<Running>,
    /// Types of the requests sent to the running process (`msg_id` − 1 indexes it).
    sent: Vec<String>,
    /// Whether the running process was sent an `init`.
    initialised: bool,
    adapter_failure: Option<String>,
    refused: Option<String>,
    record: Option<Vec<WireLine>>,
    /// The adapter answered `state` with error 10: it is compared on messages only.
    stateless: bool,
}

impl std::fmt::Debug for AdapterProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdapterProcess")
            .field("command", &self.command)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl AdapterProcess {
    /// Starts `command` (split on whitespace: program then arguments).
    pub fn spawn(command: &str) -> Result<Self, String> {
        Ok(AdapterProcess {
            command: command.into(),
            timeout: DEFAULT_TIMEOUT,
            running: Some(Running::start(command)?),
            sent: Vec::new(),
            initialised: false,
            adapter_failure: None,
            refused: None,
            record: None,
            stateless: false,
        })
    }

    /// Waits at most `timeout` for each reply.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Keeps every request and stdout line (see [`AdapterProcess::take_recorded`]).
    pub fn recording(mut self) -> Self {
        self.record = Some(Vec::new());
        self
    }

    /// The lines exchanged since the last call (empty unless [`AdapterProcess::recording`]).
    pub fn take_recorded(&mut self) -> Vec<WireLine> {
        self.record.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Why the adapter was stopped during the current trace (no reply in time, a malformed
    /// or unexpected line, an exit, a refused protocol version), if it was. An `error` reply
    /// is not an adapter failure: it is the implementation's answer. Cleared at `init`.
    pub fn adapter_failure(&self) -> Option<&str> {
        self.adapter_failure.as_deref()
    }

    /// Set once the adapter echoed a protocol version other than [`PROTOCOL_VERSION`] (or
    /// none): every later request is refused with this message.
    pub fn version_refused(&self) -> Option<&str> {
        self.refused.as_deref()
    }

    fn restart(&mut self) -> Result<(), String> {
        if let Some(mut r) = self.running.take() {
            r.close();
        }
        self.sent.clear();
        self.initialised = false;
        self.running = Some(Running::start(&self.command)?);
        Ok(())
    }

    fn secs(&self) -> String {
        format!("{} s", self.timeout.as_secs_f64())
    }

    /// Whether the adapter answered `state` with error 10 (not supported): it is then compared
    /// on messages only.
    pub fn reports_no_state(&self) -> bool {
        self.stateless
    }

    /// Sends `input` and waits for its reply.
    fn exchange(&mut self, input: &Input) -> Result<Observed, Fail> {
        let id = self.sent.len() as u64 + 1;
        let ty = request_type(input);
        let line = request_line(id, input);
        let init = matches!(input, Input::Init { .. });
        let body = self.exchange_line(id, ty, line, init)?;
        serde_json::from_value(body.clone()).map_err(|e| {
            Fail::Protocol(format!(
                "malformed adapter output (bad '{}_ok' body: {e}) while the harness waited for \
                 the reply to the {} request (msg_id {id}): `{}`",
                request_type(input),
                request_type(input),
                clip(&body.to_string())
            ))
        })
    }

    /// Sends a `state` request and waits for its reply.
    fn exchange_state(&mut self) -> Result<BTreeMap<String, PeerState>, Fail> {
        let id = self.sent.len() as u64 + 1;
        let line = state_request_line(id);
        let mut body = self.exchange_line(id, "state".into(), line, false)?;
        let peers = body
            .as_object_mut()
            .and_then(|o| {
                let p = o.remove("peers");
                o.is_empty().then_some(p)
            })
            .flatten()
            .unwrap_or(Value::Null);
        serde_json::from_value(peers).map_err(|e| {
            Fail::Protocol(format!(
                "malformed adapter output (bad 'state_ok' body: {e}: it has `peers`, an object \
                 of peer projections, and nothing else) to the state request (msg_id {id}): `{}`",
                clip(&body.to_string())
            ))
        })
    }

    /// Sends request line `line` (id `id`, type `ty`) and waits for its reply; returns the
    /// reply's body without `type` and `in_reply_to` (and `protocol_version` for an `init`).
    fn exchange_line(
        &mut self,
        id: u64,
        ty: String,
        line: String,
        init: bool,
    ) -> Result<Value, Fail> {
        self.sent.push(ty.clone());
        if let Some(r) = &mut self.record {
            r.push(WireLine::Request(line.clone()));
        }
        let secs = self.secs();
        let run = self
            .running
            .as_mut()
            .expect("exchange needs a running adapter");
        // A closed stdin means the process is going away: its stdout tells how, below.
        let _ = run.requests.send(line.clone());
        let waiting = format!("the {ty} request (msg_id {id})");
        let deadline = Instant::now() + self.timeout;
        let reply = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match run.lines.recv_timeout(left) {
                Ok(Out::Line(l)) if l.trim().is_empty() => continue,
                Ok(Out::Line(l)) => break l,
                Ok(Out::Eof) | Err(RecvTimeoutError::Disconnected) => {
                    let (status, tail) = run.ended();
                    return Err(Fail::Protocol(format!(
                        "adapter '{}' {status} while the harness waited for the reply to \
                         {waiting}{tail}",
                        self.command,
                    )));
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(Fail::Protocol(format!(
                        "timeout: no reply to {waiting} within {secs}; the adapter was \
                         stopped (the next trace restarts it)\n    request: {}{}",
                        clip(&line),
                        run.stderr_tail()
                    )))
                }
            }
        };
        if let Some(r) = &mut self.record {
            r.push(WireLine::Reply(reply.clone()));
        }
        let tail = run.stderr_tail();
        self.judge_reply(init, id, &ty, &reply)
            .map_err(|f| match f {
                Fail::Protocol(e) => Fail::Protocol(format!("{e}{tail}")),
                f => f,
            })
    }

    /// Checks one reply line to request `id` of type `ty`.
    fn judge_reply(&mut self, init: bool, id: u64, ty: &str, line: &str) -> Result<Value, Fail> {
        let bad = |why: String| {
            Fail::Protocol(format!(
                "malformed adapter output ({why}) while the harness waited for the reply to \
                 the {ty} request (msg_id {id}): line `{}`",
                clip(line)
            ))
        };
        let v: Value = serde_json::from_str(line)
            .map_err(|e| bad(format!("not JSON — did you mean to log to stderr? {e}")))?;
        let body = v
            .get("body")
            .filter(|b| b.is_object())
            .ok_or_else(|| bad("no body object".into()))?;
        let Some(k) = body.get("in_reply_to").and_then(Value::as_u64) else {
            return Err(bad("no in_reply_to".into()));
        };
        if k != id {
            let what = match self.sent.get((k as usize).wrapping_sub(1)) {
                Some(t) if k < id => {
                    format!("a second reply to the {t} request (msg_id {k}), already answered")
                }
                _ => format!("a reply to msg_id {k}, which the harness never sent"),
            };
            return Err(bad(format!("in_reply_to is {k}: {what}")));
        }
        let t = body.get("type").and_then(Value::as_str).unwrap_or("");
        if t == "error" {
            let (Some(code), Some(text)) = (
                body.get("code").and_then(Value::as_u64),
                body.get("text").and_then(Value::as_str),
            ) else {
                return Err(bad("an error needs an integer code and a text".into()));
            };
            return Err(Fail::Error(format!(
                "adapter error {code} ({}) to the {ty} request (msg_id {id}): {text}",
                code_name(code)
            )));
        }
        let want = format!("{ty}_ok");
        if t != want {
            return Err(bad(format!("type is '{t}', expected '{want}'")));
        }
        let mut b = body.clone();
        let o = b.as_object_mut().expect("body is an object");
        o.remove("type");
        o.remove("in_reply_to");
        if init {
            let v = o.remove("protocol_version");
            if v != Some(json!(PROTOCOL_VERSION)) {
                let said = v.map_or("no protocol_version".to_string(), |v| {
                    format!("protocol version {v}")
                });
                let e = format!(
                    "adapter '{}' refused: its init_ok carries {said}, this harness speaks \
                     adapter protocol version {PROTOCOL_VERSION} (ADAPTER.md, \"Protocol version\")",
                    self.command
                );
                self.refused = Some(e.clone());
                return Err(Fail::Protocol(e));
            }
        }
        Ok(b)
    }
}

impl Drop for AdapterProcess {
    fn drop(&mut self) {
        if let Some(r) = &mut self.running {
            r.close();
        }
    }
}

/// `line`, cut to a length that fits an error message (its start and its end).
fn clip(line: &str) -> String {
    const HEAD: usize = 200;
    const TAIL: usize = 100;
    let n = line.chars().count();
    if n <= HEAD + TAIL {
        return line.to_string();
    }
    let head: String = line.chars().take(HEAD).collect();
    let tail: String = line.chars().skip(n - TAIL).collect();
    format!("{head} … ({} characters) … {tail}", n - HEAD - TAIL)
}

impl System for AdapterProcess {
    fn state(&mut self) -> Option<Result<BTreeMap<String, PeerState>, String>> {
        if self.stateless || self.running.is_none() || self.refused.is_some() {
            return None;
        }
        match self.exchange_state() {
            Ok(p) => Some(Ok(p)),
            Err(Fail::Error(e)) if e.starts_with(&format!("adapter error {NOT_SUPPORTED} ")) => {
                self.stateless = true;
                None
            }
            Err(Fail::Error(e)) => Some(Err(e)),
            Err(Fail::Protocol(e)) => {
                self.running = None;
                self.adapter_failure = Some(e.clone());
                Some(Err(e))
            }
        }
    }

    fn handle(&mut self, input: &Input) -> Result<Observed, String> {
        if let Some(r) = &self.refused {
            return Err(r.clone());
        }
        if matches!(input, Input::Init { .. }) {
            self.adapter_failure = None;
            if self.running.is_none() || self.initialised {
                if let Err(e) = self.restart() {
                    self.adapter_failure = Some(e.clone());
                    return Err(e);
                }
            }
            self.initialised = true;
        } else if self.running.is_none() {
            return Err(format!(
                "the adapter was stopped after an earlier failure ({}); the next init restarts it",
                self.adapter_failure.as_deref().unwrap_or("see above")
            ));
        }
        match self.exchange(input) {
            Ok(obs) => Ok(obs),
            Err(Fail::Error(e)) => Err(e),
            Err(Fail::Protocol(e)) => {
                self.running = None;
                self.adapter_failure = Some(e.clone());
                Err(e)
            }
        }
    }
}
