//! Replays traces against a [`System`] and judges each step, Mocket-style: the trace's path
//! drives the implementation one action at a time; after each action what the implementation
//! made observable is compared with the step's `expect`.
//!
//! The runner plays the user agents (they belong to the test environment, not to the system
//! under test): a subscriber sends SUBSCRIBE when the trace says so, a publisher runs its
//! script, sending its next PUBLISH when the response to the previous one is delivered to it.
//! What reaches a user agent is compared strictly (kind, seq, value, ETag and expiry through
//! the mapping); overlay messages of the modelled kinds are compared as a multiset per step.
//! Messages addressed to a crashed peer are never delivered and are left out on both sides.
//!
//! Then, when the system reports it ([`System::state`]), the projected state of every live peer
//! is compared with the trace's (a step lists the peers whose projection it changed; the
//! others keep theirs), field by field: the first difference fails the step
//! ([`Verdict::IncorrectState`], naming the peer and the field, expected and got). A system
//! that cannot report its state is compared on messages only.

use crate::chart::{msg_label, outcome_label};
use crate::sut::{ClientRequest, Input, Observed, System};
use crate::{AbstractMsg, ClientOutcome, PeerState, Step, StepAction, Trace};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::{self, Write};

/// How a step failed (named after Mocket's verdicts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Something the step expects did not happen.
    MissingAction,
    /// The implementation did something the step does not have.
    UnexpectedAction,
    /// Both: an outcome or message differs in its fields (or was replaced by another).
    IncorrectOutcome,
    /// The system under test could not apply the step's action (e.g. the message to deliver
    /// was never sent by the implementation), or an adapter failed.
    CannotApply,
    /// The messages were right but a peer's projected state after the step differs.
    IncorrectState,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::MissingAction => "missing_action",
            Verdict::UnexpectedAction => "unexpected_action",
            Verdict::IncorrectOutcome => "incorrect_outcome",
            Verdict::CannotApply => "cannot_apply",
            Verdict::IncorrectState => "incorrect_state",
        })
    }
}

/// The first failing step of a trace.
#[derive(Clone, Debug)]
pub struct Failure {
    /// Step number (from 1; 0 for the initialisation).
    pub step: usize,
    /// Verdict.
    pub verdict: Verdict,
    /// What the step did.
    pub action: String,
    /// Expected vs actual, line by line.
    pub detail: String,
}

impl Failure {
    /// One line: step, verdict and action.
    pub fn summary(&self) -> String {
        format!("step {} [{}]: {}", self.step, self.verdict, self.action)
    }
}

/// The result of one trace.
#[derive(Clone, Debug)]
pub struct TraceResult {
    /// The trace's name.
    pub name: String,
    /// Steps that passed.
    pub passed_steps: usize,
    /// The first failure, if any (the replay stops there).
    pub failure: Option<Failure>,
    /// Step-by-step transcript (filled when verbose).
    pub transcript: String,
}

impl TraceResult {
    /// Whether every step passed.
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }
}

/// A one-line description of a step's action.
pub fn action_label(a: &StepAction) -> String {
    match a {
        StepAction::Deliver { msg } => format!("deliver {}", msg_label(msg)),
        StepAction::Lose { msg } => format!("lose {}", msg_label(msg)),
        StepAction::UaSubscribes { ua } => format!("{ua} sends SUBSCRIBE"),
        StepAction::UaUnsubscribes { ua } => format!("{ua} sends SUBSCRIBE Expires: 0"),
        StepAction::DetectFailure { at, peer } => format!("{at} detects that {peer} crashed"),
        StepAction::Retransmit { at, req } => {
            format!("{at}'s retransmission timer for [{req}] fires")
        }
        StepAction::Expire { at, etag } => format!("{at}'s event state e{etag} expires"),
        StepAction::ReplicationRetry { at } => format!("{at}'s replication retry fires"),
        StepAction::Heartbeat { at } => format!("{at}'s tree heartbeat round runs"),
        StepAction::ParentTimeout { at } => format!("{at} times its tree parent out"),
        StepAction::Crash { peer } => format!("{peer} crashes"),
        StepAction::Restart { peer } => format!("{peer} restarts with no state"),
        StepAction::Alive { at, peer } => format!("{at} hears from {peer}, back again"),
        StepAction::Lapse { at } => format!("the lease {at} confirms lapses"),
        StepAction::Reask { at, peer } => format!("{at}'s fetch timer asks {peer} again"),
        StepAction::Suspect { peer } => format!("{peer} is paused (suspected)"),
        StepAction::Heal { peer } => format!("{peer} runs again"),
    }
}

/// The user agents, played by the runner.
pub(crate) struct Uas {
    gid: u16,
    /// First-contact peer per user agent.
    pub(crate) peer: HashMap<String, String>,
    subscribers: BTreeSet<String>,
    /// Publisher scripts and progress.
    script: HashMap<String, Vec<crate::ScriptStep>>,
    next: HashMap<String, usize>,
    etag: HashMap<String, u8>,
    /// Requests sent by user agents, not yet delivered.
    pub(crate) in_flight: Vec<AbstractMsg>,
    /// Responses to publishers not yet delivered.
    pub(crate) responses: Vec<ClientOutcome>,
}

impl Uas {
    pub(crate) fn new(t: &Trace) -> Self {
        let c = &t.config;
        let mut u = Uas {
            gid: c.gid,
            peer: c
                .subscribers
                .iter()
                .chain(&c.publishers)
                .map(|u| (u.name.clone(), u.peer.clone()))
                .collect(),
            subscribers: c.subscribers.iter().map(|s| s.name.clone()).collect(),
            script: c
                .publishers
                .iter()
                .map(|p| (p.name.clone(), p.script.clone()))
                .collect(),
            next: HashMap::new(),
            etag: HashMap::new(),
            in_flight: Vec::new(),
            responses: Vec::new(),
        };
        for p in &c.publishers {
            if let Some(m) = u.publish_msg(&p.name) {
                u.in_flight.push(m);
            }
        }
        u
    }

    /// The PUBLISH of publisher `ua`'s current script step, if any.
    fn publish_msg(&self, ua: &str) -> Option<AbstractMsg> {
        let i = self.next.get(ua).copied().unwrap_or(0);
        let s = self.script.get(ua)?.get(i)?;
        let if_match = match s.if_match.as_str() {
            "none" => None,
            // A removal without an event state of its own names e0 (none: a 412).
            "mine" => self.etag.get(ua).copied().or((s.expires == 0).then_some(0)),
            e => e.strip_prefix('e').and_then(|n| n.parse().ok()),
        };
        Some(AbstractMsg {
            kind: "publish".into(),
            from: ua.into(),
            to: self.peer[ua].clone(),
            gid: Some(self.gid),
            seq: None,
            value: Some(s.value),
            values: None,
            req: None,
            if_match,
            epoch: None,
        })
    }

    fn is_last(&self, ua: &str) -> bool {
        let i = self.next.get(ua).copied().unwrap_or(0);
        self.script.get(ua).is_some_and(|s| i + 1 >= s.len())
    }
}

fn sorted<T: Ord + Clone>(v: &[T]) -> Vec<T> {
    let mut v = v.to_vec();
    v.sort();
    v
}

/// `a − b` as multisets (both sorted).
fn minus<T: Ord + Clone>(a: &[T], b: &[T]) -> Vec<T> {
    let mut out = Vec::new();
    let mut b: Vec<T> = b.to_vec();
    for x in a {
        match b.iter().position(|y| y == x) {
            Some(i) => {
                b.remove(i);
            }
            None => out.push(x.clone()),
        }
    }
    out
}

fn list<T>(v: &[T], f: impl Fn(&T) -> String) -> String {
    if v.is_empty() {
        "(none)".into()
    } else {
        v.iter().map(f).collect::<Vec<_>>().join("; ")
    }
}

/// How a trace is replayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// Keep a step-by-step transcript.
    pub verbose: bool,
    /// Compare the projected state after every step (when the system reports it).
    pub state: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            verbose: false,
            state: true,
        }
    }
}

/// Replays `trace` against `sys` (which must be fresh), messages and state compared. Stops at
/// the first failing step.
pub fn run_trace(trace: &Trace, sys: &mut dyn System, verbose: bool) -> TraceResult {
    run_trace_with(
        trace,
        sys,
        RunOptions {
            verbose,
            ..RunOptions::default()
        },
    )
}

/// Replays `trace` against `sys` (which must be fresh) as `opts` say. Stops at the first
/// failing step.
pub fn run_trace_with(trace: &Trace, sys: &mut dyn System, opts: RunOptions) -> TraceResult {
    let verbose = opts.verbose;
    let mut res = TraceResult {
        name: trace.name.clone(),
        passed_steps: 0,
        failure: None,
        transcript: String::new(),
    };
    let init = Input::Init {
        config: trace.config.clone(),
    };
    sys.prepare(trace);
    if let Err(e) = sys.handle(&init) {
        res.failure = Some(Failure {
            step: 0,
            verdict: Verdict::CannotApply,
            action: "init".into(),
            detail: e,
        });
        return res;
    }
    let mut uas = Uas::new(trace);
    let mut crashed: BTreeSet<String> = BTreeSet::new();
    let mut fired: HashMap<String, u32> = HashMap::new();
    let mut expected: BTreeMap<String, PeerState> = BTreeMap::new();
    for step in &trace.steps {
        let action = action_label(&step.action);
        let r = apply(step, sys, &mut uas, &mut crashed, &mut fired);
        let obs = match r {
            Ok(o) => o,
            Err(e) => {
                res.failure = Some(Failure {
                    step: step.n,
                    verdict: Verdict::CannotApply,
                    action,
                    detail: e,
                });
                return res;
            }
        };
        let mut judged = judge(step, &obs, &crashed, trace.version >= crate::COUNTED_SINCE);
        expected.extend(step.state.clone());
        if judged.is_none() && opts.state {
            judged = match sys.state() {
                None => None,
                Some(Err(e)) => Some((Verdict::CannotApply, format!("state: {e}"))),
                Some(Ok(got)) => judge_state(trace, &expected, &got, &crashed),
            };
        }
        if verbose {
            let t = &mut res.transcript;
            let _ = writeln!(t, "step {:>3}. {action}", step.n);
            for m in sorted(&obs.sent) {
                let _ = writeln!(t, "        sent    {}", msg_label(&m));
            }
            for o in &obs.client {
                let _ = writeln!(t, "        client  {}", outcome_label(o));
            }
            for l in &obs.log {
                let _ = writeln!(t, "        log     {l}");
            }
            let _ = writeln!(
                t,
                "        {}",
                if judged.is_none() { "ok" } else { "FAILED" }
            );
        }
        if let Some((verdict, detail)) = judged {
            res.failure = Some(Failure {
                step: step.n,
                verdict,
                action,
                detail,
            });
            return res;
        }
        res.passed_steps += 1;
    }
    res
}

/// Applies one step: user-agent actions are played here, everything else goes to `sys`.
pub(crate) fn apply(
    step: &Step,
    sys: &mut dyn System,
    uas: &mut Uas,
    crashed: &mut BTreeSet<String>,
    fired: &mut HashMap<String, u32>,
) -> Result<Observed, String> {
    let mut extra_sent = Vec::new();
    let input = match &step.action {
        StepAction::UaSubscribes { ua } | StepAction::UaUnsubscribes { ua } => {
            if !uas.subscribers.contains(ua) {
                return Err(format!("{ua} is not a subscriber"));
            }
            let kind = if matches!(step.action, StepAction::UaSubscribes { .. }) {
                "subscribe"
            } else {
                "unsubscribe"
            };
            let m = AbstractMsg {
                kind: kind.into(),
                from: ua.clone(),
                to: uas.peer[ua].clone(),
                gid: Some(uas.gid),
                seq: None,
                value: None,
                values: None,
                req: None,
                if_match: None,
                epoch: None,
            };
            uas.in_flight.push(m.clone());
            // A user agent's own step: no peer takes a step, so none counts anything.
            return Ok(Observed {
                sent: vec![m],
                counted: Some(Vec::new()),
                ..Observed::default()
            });
        }
        StepAction::Deliver { msg }
            if matches!(msg.kind.as_str(), "subscribe" | "unsubscribe" | "publish") =>
        {
            let Some(i) = uas.in_flight.iter().position(|m| m == msg) else {
                return Err(format!(
                    "user agent {} has no such request in flight: {}",
                    msg.from,
                    msg_label(msg)
                ));
            };
            uas.in_flight.remove(i);
            let request = if msg.kind == "subscribe" {
                ClientRequest::Subscribe
            } else if msg.kind == "unsubscribe" {
                ClientRequest::Unsubscribe
            } else {
                let i = uas.next.get(&msg.from).copied().unwrap_or(0);
                let s = &uas.script[&msg.from][i];
                ClientRequest::Publish {
                    value: s.value,
                    if_match: msg.if_match,
                    expires: s.expires,
                }
            };
            Input::ClientRequest {
                ua: msg.from.clone(),
                peer: msg.to.clone(),
                request,
            }
        }
        StepAction::Deliver { msg } if msg.kind == "response" => {
            let Some(i) = uas.responses.iter().position(|o| o.ua == msg.to) else {
                return Err(format!(
                    "no response to {} is in flight (the implementation never answered it)",
                    msg.to
                ));
            };
            let o = uas.responses.remove(i);
            if o.kind == "publish_ok" {
                // A 200 to a removal (`Expires: 0`) ends the user agent's event state.
                match o.etag.filter(|_| o.expires != Some(0)) {
                    Some(e) => uas.etag.insert(o.ua.clone(), e),
                    None => uas.etag.remove(&o.ua),
                };
            }
            *uas.next.entry(o.ua.clone()).or_insert(0) += 1;
            if let Some(m) = uas.publish_msg(&o.ua) {
                uas.in_flight.push(m.clone());
                extra_sent.push(m);
            }
            return Ok(Observed {
                sent: extra_sent,
                counted: Some(Vec::new()),
                ..Observed::default()
            });
        }
        StepAction::Deliver { msg } => Input::Deliver { msg: msg.clone() },
        StepAction::Lose { msg } => Input::Lose { msg: msg.clone() },
        StepAction::DetectFailure { at, peer } => Input::DetectFailure {
            at: at.clone(),
            peer: peer.clone(),
        },
        StepAction::Retransmit { at, req } => {
            let n = fired.entry(req.clone()).or_insert(0);
            *n += 1;
            Input::FireTimer {
                at: at.clone(),
                req: req.clone(),
                attempt: *n,
            }
        }
        StepAction::Expire { at, etag } => Input::Expire {
            at: at.clone(),
            etag: *etag,
        },
        StepAction::ReplicationRetry { at } => Input::ReplicationRetry { at: at.clone() },
        StepAction::Heartbeat { at } => Input::Heartbeat { at: at.clone() },
        StepAction::ParentTimeout { at } => Input::ParentTimeout { at: at.clone() },
        StepAction::Crash { peer } => {
            crashed.insert(peer.clone());
            Input::Crash { peer: peer.clone() }
        }
        StepAction::Restart { peer } => {
            crashed.remove(peer);
            Input::Restart { peer: peer.clone() }
        }
        StepAction::Alive { at, peer } => Input::Alive {
            at: at.clone(),
            peer: peer.clone(),
        },
        StepAction::Lapse { at } => Input::Lapse { at: at.clone() },
        StepAction::Reask { at, peer } => Input::Reask {
            at: at.clone(),
            peer: peer.clone(),
        },
        StepAction::Suspect { peer } => Input::Suspect { peer: peer.clone() },
        StepAction::Heal { peer } => Input::Heal { peer: peer.clone() },
    };
    let obs = sys.handle(&input)?;
    for o in &obs.client {
        if o.kind.starts_with("publish_") && !uas.is_last(&o.ua) {
            uas.responses.push(o.clone());
        }
    }
    Ok(obs)
}

/// Compares what a step made observable with its `expect`.
pub(crate) fn judge(
    step: &Step,
    obs: &Observed,
    crashed: &BTreeSet<String>,
    counts: bool,
) -> Option<(Verdict, String)> {
    judge_messages(step, obs, crashed).or_else(|| judge_counted(step, obs, counts))
}

/// What the step made peers count, when the trace lists it (`counts`: version 11 on) and the
/// system reports it.
fn judge_counted(step: &Step, obs: &Observed, counts: bool) -> Option<(Verdict, String)> {
    let got = obs.counted.as_ref().filter(|_| counts)?;
    let (exp, act) = (sorted(&step.expect.counted), sorted(got));
    if exp == act {
        return None;
    }
    let label = |c: &crate::Counted| format!("{} at {}", c.kind, c.peer);
    Some((
        Verdict::IncorrectOutcome,
        format!(
            "expected counted: {}\nactual counted:   {}\n",
            list(&exp, label),
            list(&act, label)
        ),
    ))
}

/// The messages sent and what user agents were told.
fn judge_messages(
    step: &Step,
    obs: &Observed,
    crashed: &BTreeSet<String>,
) -> Option<(Verdict, String)> {
    let live = |m: &&AbstractMsg| !crashed.contains(&m.to);
    let exp_s: Vec<AbstractMsg> = sorted(
        &step
            .expect
            .sent
            .iter()
            .filter(live)
            .cloned()
            .collect::<Vec<_>>(),
    );
    let act_s: Vec<AbstractMsg> =
        sorted(&obs.sent.iter().filter(live).cloned().collect::<Vec<_>>());
    let exp_c = sorted(&step.expect.client);
    let act_c = sorted(&obs.client);
    let (miss_s, extra_s) = (minus(&exp_s, &act_s), minus(&act_s, &exp_s));
    let (miss_c, extra_c) = (minus(&exp_c, &act_c), minus(&act_c, &exp_c));
    if miss_s.is_empty() && extra_s.is_empty() && miss_c.is_empty() && extra_c.is_empty() {
        return None;
    }
    let missing = !miss_s.is_empty() || !miss_c.is_empty();
    let extra = !extra_s.is_empty() || !extra_c.is_empty();
    let verdict = match (missing, extra) {
        (true, true) => Verdict::IncorrectOutcome,
        (true, false) => Verdict::MissingAction,
        _ => Verdict::UnexpectedAction,
    };
    let mut d = String::new();
    let ml = |m: &AbstractMsg| msg_label(m);
    let ol = |o: &ClientOutcome| outcome_label(o);
    if !miss_c.is_empty() || !extra_c.is_empty() {
        let _ = writeln!(d, "expected client: {}", list(&exp_c, ol));
        let _ = writeln!(d, "actual client:   {}", list(&act_c, ol));
    }
    if !miss_s.is_empty() || !extra_s.is_empty() {
        let _ = writeln!(d, "expected sent:   {}", list(&exp_s, ml));
        let _ = writeln!(d, "actual sent:     {}", list(&act_s, ml));
    }
    if missing {
        let _ = writeln!(
            d,
            "missing:         {}",
            list(
                &miss_c
                    .iter()
                    .map(ol)
                    .chain(miss_s.iter().map(ml))
                    .collect::<Vec<_>>(),
                |s| s.clone()
            )
        );
    }
    if extra {
        let _ = writeln!(
            d,
            "unexpected:      {}",
            list(
                &extra_c
                    .iter()
                    .map(ol)
                    .chain(extra_s.iter().map(ml))
                    .collect::<Vec<_>>(),
                |s| s.clone()
            )
        );
    }
    Some((verdict, d))
}

/// Compares the projected state of every live peer with the trace's; the first field that
/// differs (peers in configuration order) is the failure.
fn judge_state(
    trace: &Trace,
    expected: &BTreeMap<String, PeerState>,
    got: &BTreeMap<String, PeerState>,
    crashed: &BTreeSet<String>,
) -> Option<(Verdict, String)> {
    judge_peers(&trace.config.peers, expected, got, crashed)
}

/// [`judge_state`] over the peers `peers`.
pub(crate) fn judge_peers(
    peers: &[crate::Peer],
    expected: &BTreeMap<String, PeerState>,
    got: &BTreeMap<String, PeerState>,
    crashed: &BTreeSet<String>,
) -> Option<(Verdict, String)> {
    let empty = PeerState::default();
    for p in peers {
        if crashed.contains(&p.name) {
            continue;
        }
        let e = expected.get(&p.name).unwrap_or(&empty);
        let g = got.get(&p.name).unwrap_or(&empty);
        if let Some((field, exp, act)) = e.diff(g).into_iter().next() {
            return Some((
                Verdict::IncorrectState,
                format!("peer {} field {field}: expected {exp}, got {act}\n", p.name),
            ));
        }
    }
    None
}

/// Formats a failure for the console.
pub fn describe(file: &str, f: &Failure) -> String {
    let mut s = format!(
        "FAIL {file} step {} [{}]: {}\n",
        f.step, f.verdict, f.action
    );
    for l in f.detail.lines() {
        let _ = writeln!(s, "    {l}");
    }
    s
}

/// The family of a trace: its name without the trailing number (`small-walk-031` →
/// `small-walk`); for an unnumbered name, the part up to its origin kind
/// (`multihop-witness-subscribed-before-publish` → `multihop-witness`, `small-mutant-path-x` →
/// `small-mutant-path`), else its first word (`mutant-one-state` → `mutant`).
pub fn family(trace: &Trace) -> String {
    let name = trace.name.as_str();
    if let Some((head, n)) = name.rsplit_once('-') {
        if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
            return head.to_string();
        }
    }
    let kind = trace.origin.kind.as_str();
    let words: Vec<&str> = name.split('-').collect();
    let kind_words = kind.split('-').count();
    for i in 0..words.len() {
        if i + kind_words <= words.len() && words[i..i + kind_words].join("-") == kind {
            return words[..i + kind_words].join("-");
        }
    }
    words[0].to_string()
}

/// One family's results.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FamilyRow {
    /// The family.
    pub family: String,
    /// Traces that passed.
    pub passed: usize,
    /// Traces listed as known divergences that still fail.
    pub skipped: usize,
    /// Traces.
    pub total: usize,
    /// Steps that passed (a trace stops at its first failing step).
    pub steps_passed: usize,
    /// Steps of all its traces.
    pub steps: usize,
}

/// Results grouped by trace family, in the order families first appear.
#[derive(Clone, Debug, Default)]
pub struct Families {
    rows: Vec<FamilyRow>,
}

impl Families {
    /// Counts one trace's result (`skipped`: a known divergence that still fails).
    pub fn add(&mut self, trace: &Trace, r: &TraceResult, skipped: bool) {
        let f = family(trace);
        let i = match self.rows.iter().position(|row| row.family == f) {
            Some(i) => i,
            None => {
                self.rows.push(FamilyRow {
                    family: f,
                    ..FamilyRow::default()
                });
                self.rows.len() - 1
            }
        };
        let row = &mut self.rows[i];
        row.total += 1;
        row.passed += usize::from(r.passed());
        row.skipped += usize::from(skipped);
        row.steps += trace.steps.len();
        row.steps_passed += r.passed_steps;
    }

    /// The rows.
    pub fn rows(&self) -> &[FamilyRow] {
        &self.rows
    }

    /// A table: family, traces passed / total (known divergences noted), steps passed / total.
    pub fn table(&self) -> String {
        let w = self
            .rows
            .iter()
            .map(|r| r.family.len())
            .chain([6])
            .max()
            .unwrap_or(6);
        let mut s = format!(
            "{:<w$}  {:>13}  {:>13}\n",
            "family", "traces passed", "steps passed"
        );
        let mut all = FamilyRow {
            family: "all".into(),
            ..FamilyRow::default()
        };
        for r in &self.rows {
            all.passed += r.passed;
            all.skipped += r.skipped;
            all.total += r.total;
            all.steps += r.steps;
            all.steps_passed += r.steps_passed;
        }
        for r in self.rows.iter().chain([&all]) {
            let known = if r.skipped > 0 {
                format!(
                    "  ({} known divergence{})",
                    r.skipped,
                    if r.skipped == 1 { "" } else { "s" }
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "{:<w$}  {:>13}  {:>13}{known}",
                r.family,
                format!("{} / {}", r.passed, r.total),
                format!("{} / {}", r.steps_passed, r.steps),
            );
        }
        s
    }
}
