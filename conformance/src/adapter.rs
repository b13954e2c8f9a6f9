//! The JSON-lines adapter protocol (`conformance/ADAPTER.md`): the harness talks to an
//! implementation under test through its stdin/stdout, one JSON object per line, Maelstrom
//! style (`{"src","dest","body"}`, `msg_id` / `in_reply_to`, `<type>_ok` replies, `error`
//! bodies with a code). Logs go to stderr.
//!
//! [`AdapterProcess`] is the harness side (a [`System`] backed by a child process); [`serve`]
//! is the implementation side, used by the `sascribe-adapter` binary over any [`System`].

use crate::sut::{Input, Observed, System};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};

/// Error code: the request type is not supported.
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

/// Encodes `input` as a request line with id `msg_id`.
pub fn request_line(msg_id: u64, input: &Input) -> String {
    let mut body = serde_json::to_value(input).expect("inputs serialise");
    body["msg_id"] = json!(msg_id);
    json!({"src": HARNESS, "dest": SUT, "body": body}).to_string()
}

/// The type of the reply to a request of type `t`.
fn ok_type(input: &Input) -> String {
    let t = serde_json::to_value(input).expect("inputs serialise");
    format!("{}_ok", t["type"].as_str().unwrap_or("unknown"))
}

/// Runs the implementation side of the protocol: reads requests from `input`, hands them to
/// `sys`, writes replies to `output`. Returns at end of input.
pub fn serve(
    sys: &mut dyn System,
    input: impl BufRead,
    mut output: impl Write,
) -> std::io::Result<()> {
    for line in input.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let reply = answer(sys, &line);
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
    if let Some(o) = body.as_object_mut() {
        o.remove("msg_id");
    }
    let known = [
        "init",
        "client_request",
        "deliver",
        "lose",
        "detect_failure",
        "fire_timer",
        "replication_retry",
        "expire",
        "crash",
        "restart",
    ];
    let t = body
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !known.contains(&t.as_str()) {
        return error_body(id, NOT_SUPPORTED, format!("unknown request type '{t}'"));
    }
    let input: Input = match serde_json::from_value(body) {
        Ok(i) => i,
        Err(e) => return error_body(id, MALFORMED_REQUEST, format!("bad '{t}' request: {e}")),
    };
    match sys.handle(&input) {
        Ok(obs) => {
            let mut b = serde_json::to_value(&obs).expect("observations serialise");
            b["type"] = json!(ok_type(&input));
            b["in_reply_to"] = json!(id);
            json!({"src": SUT, "dest": HARNESS, "body": b})
        }
        Err(e) => error_body(id, CANNOT_APPLY, e),
    }
}

/// An implementation under test running as a child process that speaks the protocol.
pub struct AdapterProcess {
    command: String,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    next_id: u64,
}

impl std::fmt::Debug for AdapterProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdapterProcess")
            .field("command", &self.command)
            .finish()
    }
}

/// Lines of stderr kept for error reports.
const STDERR_TAIL: usize = 32;

impl AdapterProcess {
    /// Starts `command` (split on whitespace: program then arguments).
    pub fn spawn(command: &str) -> Result<Self, String> {
        let mut parts = command.split_whitespace();
        let prog = parts.next().ok_or("empty adapter command")?;
        let mut child = Command::new(prog)
            .args(parts)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start adapter '{command}': {e}"))?;
        let stdin = child.stdin.take().ok_or("no adapter stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no adapter stdout")?);
        let err = child.stderr.take().ok_or("no adapter stderr")?;
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut q = sink.lock().unwrap_or_else(|p| p.into_inner());
                if q.len() == STDERR_TAIL {
                    q.pop_front();
                }
                q.push_back(line);
            }
        });
        Ok(AdapterProcess {
            command: command.into(),
            child,
            stdin,
            stdout,
            stderr,
            next_id: 1,
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

    fn dead(&mut self, what: &str) -> String {
        let status = match self.child.try_wait() {
            Ok(Some(s)) => format!("exited with {s}"),
            _ => "closed its stdout".into(),
        };
        // Give the stderr reader a moment to collect the last lines.
        std::thread::sleep(std::time::Duration::from_millis(50));
        format!(
            "adapter '{}' {status} {what}{}",
            self.command,
            self.stderr_tail()
        )
    }
}

impl Drop for AdapterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl System for AdapterProcess {
    fn handle(&mut self, input: &Input) -> Result<Observed, String> {
        let id = self.next_id;
        self.next_id += 1;
        let req = request_line(id, input);
        // A process that already died may still have left a line to read: read before judging.
        let wrote = writeln!(self.stdin, "{req}").and_then(|_| self.stdin.flush());
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) | Err(_) if wrote.is_err() => return Err(self.dead("before reading the request")),
            Ok(0) | Err(_) => return Err(self.dead("without answering")),
            Ok(_) => {}
        }
        let line = line.trim_end();
        let bad = |why: String| format!("malformed adapter output ({why}): line `{line}`");
        let v: Value = serde_json::from_str(line)
            .map_err(|e| bad(format!("not JSON — did you mean to log to stderr? {e}")))?;
        let body = v
            .get("body")
            .filter(|b| b.is_object())
            .ok_or_else(|| bad("no body object".into()))?;
        if body.get("in_reply_to").and_then(Value::as_u64) != Some(id) {
            return Err(bad(format!("in_reply_to is not {id}")));
        }
        let t = body.get("type").and_then(Value::as_str).unwrap_or("");
        if t == "error" {
            let code = body.get("code").and_then(Value::as_u64).unwrap_or(0);
            let text = body.get("text").and_then(Value::as_str).unwrap_or("");
            return Err(format!("adapter error {code}: {text}"));
        }
        let want = ok_type(input);
        if t != want {
            return Err(bad(format!("type is '{t}', expected '{want}'")));
        }
        let mut b = body.clone();
        if let Some(o) = b.as_object_mut() {
            o.remove("type");
            o.remove("in_reply_to");
        }
        serde_json::from_value(b).map_err(|e| bad(e.to_string()))
    }
}
