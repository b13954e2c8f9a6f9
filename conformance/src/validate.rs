//! The implementation → model direction: production runs checked against the model, as etcd
//! and CCF validate their Raft logs against the TLA+ specification.
//!
//! A **run** ([`run`]) drives a [`System`] (the production core in-process, through the sans-IO
//! host or the tokio runtime's event loop, or any implementation behind the adapter) on a
//! configuration the model can represent, with a seeded scheduler playing the environment:
//!
//! - the **network** delivers, in a random order, the overlay messages the implementation
//!   reported as sent and the requests and responses of the user agents; it loses messages
//!   within the model's loss budget;
//! - **faults** (crashes, losses) come within the model's budgets; the failure detector
//!   reports crashes;
//! - **timers** (retransmission, replication retry, expiry) fire when the model's timing
//!   assumptions let them (a retransmission timer only once its request or reply is lost,
//!   see `sascribe_model::model`): the scheduler asks the model which timers are due, since
//!   the harness owns the implementation's clock; whether and what the implementation
//!   retransmits is then the implementation's.
//!
//! Each step the implementation takes is **logged** in the trace format (its action, what it
//! sent and told user agents, its peers' projected state), and **validated** against the model
//! ([`Validator`]): the step must be a transition the model enables, in a model state
//! consistent with every earlier step, that sends exactly the same messages and outcomes and
//! leaves every live peer with the same projected state; every `always` property must hold
//! in the state it reaches, and a run that ends with nothing left to do must have met every
//! `eventually` property. Where the abstraction leaves the model state ambiguous the validator
//! keeps every consistent state (a frontier), as trace validation against TLA+ does.
//!
//! A failing run is kept as a **regression trace**: the run's path up to the failing step with
//! the model's expectations ([`Failure::regression`]), an ordinary conformance trace that
//! `sascribe-conformance run` replays and that fails where the run failed.

use crate::runner::{self, Uas};
use crate::sut::{Input, Observed, System};
use crate::{AbstractMsg, Config, Expect, Origin, PeerState, Step, StepAction, Trace};
use sascribe_model::coverage::{self, Label};
use sascribe_model::model::{Action, SplitMix, State};
use sascribe_model::setup::NetworkKind;
use sascribe_model::{Options, SaScribe, Setup};
use serde::de::DeserializeOwned;
use stateright::actor::ActorModelAction;
use stateright::{Expectation, Model};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// Most model states kept as explanations of one run.
const MAX_FRONTIER: usize = 256;

/// Converts a model export type into the reader's type of the same JSON shape.
fn reread<T: serde::Serialize, U: DeserializeOwned>(v: &T) -> U {
    serde_json::from_value(serde_json::to_value(v).expect("model exports serialise"))
        .expect("the reader reads what the model exports")
}

/// Why a production step is not a model step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// No state the model can be in enables the step's action.
    NoTransition {
        /// The actions the model enables instead (one line each, deduplicated).
        enabled: Vec<String>,
    },
    /// The model takes the action but sends or tells user agents something else.
    Outcome {
        /// Mocket-style verdict (`missing_action`, `unexpected_action`, `incorrect_outcome`).
        verdict: runner::Verdict,
        /// Expected (model) against actual (implementation), line by line.
        detail: String,
    },
    /// Same messages, but a peer's projected state differs.
    State {
        /// The first peer and field that differ.
        detail: String,
    },
    /// The model, following the implementation, reaches a state that violates a property.
    Property {
        /// The property.
        name: String,
    },
    /// The run ended with nothing left to do and an `eventually` property never held.
    Eventually {
        /// The property.
        name: String,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::NoTransition { enabled } => {
                writeln!(
                    f,
                    "no model transition takes this action; the model enables:"
                )?;
                for e in enabled {
                    writeln!(f, "  {e}")?;
                }
                Ok(())
            }
            Mismatch::Outcome { verdict, detail } => write!(f, "[{verdict}]\n{detail}"),
            Mismatch::State { detail } => write!(f, "[incorrect_state]\n{detail}"),
            Mismatch::Property { name } => {
                writeln!(f, "the model, following the run, violates always `{name}`")
            }
            Mismatch::Eventually { name } => writeln!(
                f,
                "the run ended with nothing left to do and eventually `{name}` never held"
            ),
        }
    }
}

/// One model state consistent with the run so far.
#[derive(Clone)]
struct Candidate {
    state: State,
    /// The model actions that led here.
    path: Vec<Action>,
    /// Bit i: the i-th `eventually` property held somewhere on the path.
    met: u64,
}

/// Checks a run step by step against the model (see the module docs).
pub struct Validator {
    model: SaScribe,
    frontier: Vec<Candidate>,
    config: Config,
    /// Indices into `model.properties()` of the `always` and the `eventually` properties.
    always: Vec<usize>,
    eventually: Vec<usize>,
    steps: usize,
    /// The transition labels the validated steps took.
    labels: BTreeSet<Label>,
}

impl fmt::Debug for Validator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Validator")
            .field("steps", &self.steps)
            .field("frontier", &self.frontier.len())
            .finish()
    }
}

impl Validator {
    /// A validator for the model configuration `options`: the run must be on
    /// [`Validator::config`]. Refuses the options whose actions have no trace form yet
    /// (partitions, moves, handovers) and seeded model bugs (the model is the judge
    /// here).
    pub fn new(options: &Options) -> Result<Validator, String> {
        let partitions = if options.partition {
            options.suspicions
        } else {
            0
        };
        let untraced = [
            ("--suspicions with --partition", partitions),
            ("--moves", options.moves),
            ("--handovers", options.handovers),
        ];
        if let Some((flag, _)) = untraced.iter().find(|(_, n)| *n > 0) {
            return Err(format!(
                "{flag}: these actions have no trace form yet, so runs with them cannot be logged"
            ));
        }
        if options.mutant.is_some() {
            return Err("the model is the judge: it takes no seeded bug".into());
        }
        if options.network == NetworkKind::Duplicating {
            return Err(
                "--network duplicating: the scheduler delivers each message at most \
                 once, so runs on a duplicating network cannot be logged yet"
                    .into(),
            );
        }
        let model = SaScribe::new(Setup::new(options)?);
        let config: Config = reread(&model.trace_config());
        let mut always = Vec::new();
        let mut eventually = Vec::new();
        for (i, p) in model.properties().iter().enumerate() {
            match p.expectation {
                Expectation::Always => always.push(i),
                Expectation::Eventually => eventually.push(i),
                Expectation::Sometimes => {}
            }
        }
        let mut v = Validator {
            frontier: Vec::new(),
            model,
            config,
            always,
            eventually,
            steps: 0,
            labels: BTreeSet::new(),
        };
        let init = v.model.init_states();
        v.frontier = init
            .into_iter()
            .map(|state| {
                let met = v.met(&state, 0);
                Candidate {
                    state,
                    path: Vec::new(),
                    met,
                }
            })
            .collect();
        Ok(v)
    }

    /// The configuration runs must be on (the model's, as a trace writes it).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Steps validated so far.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The model's transition labels (`sascribe_model::coverage`) the validated steps took.
    pub fn labels(&self) -> &BTreeSet<Label> {
        &self.labels
    }

    fn met(&self, state: &State, mut met: u64) -> u64 {
        let props = self.model.properties();
        for (bit, &i) in self.eventually.iter().enumerate() {
            if (props[i].condition)(&self.model, state) {
                met |= 1 << bit;
            }
        }
        met
    }

    fn enabled(&self, state: &State) -> Vec<Action> {
        let mut actions = Vec::new();
        self.model.actions(state, &mut actions);
        actions
    }

    /// The actions of the environment other than deliveries that the model enables in some
    /// state consistent with the run: user agents subscribing and unsubscribing, timers that
    /// are due, faults within their budgets, failure detection. Sorted, without repeats.
    pub fn environment(&self) -> Vec<StepAction> {
        let mut out = self.enabled_steps(false);
        out.sort_by_cached_key(runner::action_label);
        out
    }

    /// The deliveries the model enables in some state consistent with the run (on an ordered
    /// network, the oldest message of each link).
    pub fn deliverable(&self) -> Vec<StepAction> {
        self.enabled_steps(true)
    }

    /// The step actions the model enables in some state of the frontier, without repeats:
    /// its deliveries, or (`deliveries` false) everything else.
    fn enabled_steps(&self, deliveries: bool) -> Vec<StepAction> {
        let mut out: Vec<StepAction> = Vec::new();
        for c in &self.frontier {
            for a in self.enabled(&c.state) {
                if matches!(a, ActorModelAction::Deliver { .. }) != deliveries {
                    continue;
                }
                if let Some(s) = self.model.step_action(&a) {
                    let s: StepAction = reread(&s);
                    if !out.contains(&s) {
                        out.push(s);
                    }
                }
            }
        }
        out
    }

    /// Validates one step of the run: its action, what the implementation made observable
    /// (`obs`), and the projected state of its peers after it (`got`; `None`: an
    /// implementation that cannot report it is validated on messages only). `crashed`: the
    /// peers crashed so far, this step's crash included.
    pub fn step(
        &mut self,
        step: &Step,
        obs: &Observed,
        got: Option<&BTreeMap<String, PeerState>>,
        crashed: &BTreeSet<String>,
    ) -> Result<(), Mismatch> {
        let props = self.model.properties();
        let mut next: Vec<Candidate> = Vec::new();
        let mut first_miss: Option<Mismatch> = None;
        let mut enabled: Vec<String> = Vec::new();
        let mut taken = Vec::new();
        for c in &self.frontier {
            for a in self.enabled(&c.state) {
                let Some(sa) = self.model.step_action(&a) else {
                    continue;
                };
                let sa: StepAction = reread(&sa);
                if sa != step.action {
                    let l = runner::action_label(&sa);
                    if !enabled.contains(&l) {
                        enabled.push(l);
                    }
                    continue;
                }
                let expected: Step = reread(&self.model.trace_step(step.n, &c.state, &a));
                if let Some((verdict, detail)) = runner::judge(&expected, obs, crashed, true) {
                    first_miss.get_or_insert(Mismatch::Outcome { verdict, detail });
                    continue;
                }
                let Some(state) = self.model.next_state(&c.state, a.clone()) else {
                    continue;
                };
                if let Some(got) = got {
                    let want: BTreeMap<String, PeerState> = reread(&self.model.project(&state));
                    if let Some((_, detail)) =
                        runner::judge_peers(&self.config.peers, &want, got, crashed)
                    {
                        first_miss.get_or_insert(Mismatch::State { detail });
                        continue;
                    }
                }
                if let Some(&i) = self
                    .always
                    .iter()
                    .find(|&&i| !(props[i].condition)(&self.model, &state))
                {
                    return Err(Mismatch::Property {
                        name: props[i].name.to_string(),
                    });
                }
                taken.push(coverage::label(&self.model, &c.state, &a));
                if next.len() < MAX_FRONTIER && !next.iter().any(|n| n.state == state) {
                    let met = self.met(&state, c.met);
                    let mut path = c.path.clone();
                    path.push(a);
                    next.push(Candidate { state, path, met });
                }
            }
        }
        if next.is_empty() {
            enabled.sort();
            return Err(first_miss.unwrap_or(Mismatch::NoTransition { enabled }));
        }
        self.frontier = next;
        self.labels.extend(taken);
        self.steps += 1;
        Ok(())
    }

    /// Validates the end of a run that has nothing left to do: every `eventually` property
    /// held on the way, in some model state consistent with the run.
    pub fn finish(&self) -> Result<(), Mismatch> {
        let all = (1u64 << self.eventually.len()) - 1;
        if self.frontier.iter().any(|c| c.met & all == all) {
            return Ok(());
        }
        let props = self.model.properties();
        let best = self.frontier.iter().map(|c| c.met).max().unwrap_or(0);
        let bit = (0..self.eventually.len())
            .find(|b| best & (1 << b) == 0)
            .unwrap_or(0);
        Err(Mismatch::Eventually {
            name: props[self.eventually[bit]].name.to_string(),
        })
    }

    /// The model's trace of the run so far, extended by the model action with the trace
    /// form `action` (if given) when some consistent state enables one: a conformance trace
    /// with the model's expectations, which an implementation that failed at that step fails
    /// again.
    pub fn regression(&self, name: String, seed: u64, action: Option<&StepAction>) -> Trace {
        let mut path = self.frontier[0].path.clone();
        let Some(action) = action else {
            return reread(&self.model.trace(name, regression_origin(seed), &path));
        };
        'search: for c in &self.frontier {
            for a in self.enabled(&c.state) {
                let Some(sa) = self.model.step_action(&a) else {
                    continue;
                };
                if reread::<_, StepAction>(&sa) == *action {
                    path = c.path.clone();
                    path.push(a);
                    break 'search;
                }
            }
        }
        reread(&self.model.trace(name, regression_origin(seed), &path))
    }
}

/// The provenance of a regression trace from the run with `seed`.
fn regression_origin(seed: u64) -> sascribe_model::trace::Origin {
    sascribe_model::trace::Origin {
        kind: "regression",
        property: None,
        transition: None,
        seed: Some(seed),
        mutant: None,
    }
}

/// How a run is scheduled.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// Most steps of a run (a run also ends when nothing is left to do).
    pub max_steps: usize,
    /// Percentage of steps that are faults (a loss or a crash) when one is possible.
    pub fault_percent: u64,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            max_steps: 400,
            fault_percent: 5,
        }
    }
}

/// A run that failed validation.
#[derive(Debug)]
pub struct Failure {
    /// The failing step (from 1; 0: the system could not be initialised).
    pub step: usize,
    /// Its action.
    pub action: String,
    /// Why.
    pub reason: String,
    /// The run's path with the model's expectations (see [`Validator::regression`]); `None`
    /// when the run failed before its first step.
    pub regression: Option<Box<Trace>>,
}

/// The outcome of one run.
#[derive(Debug)]
pub struct RunResult {
    /// The run's seed.
    pub seed: u64,
    /// The implementation's steps, logged in the trace format (`origin.kind`:
    /// `production-run`): what it sent and told user agents, its peers' projected states.
    pub log: Trace,
    /// Whether the run ended with nothing left to do (else at `max_steps`).
    pub quiescent: bool,
    /// The model's transition labels its validated steps took.
    pub labels: BTreeSet<Label>,
    /// The failure, if any (the run stops there).
    pub failure: Option<Failure>,
}

/// One seeded run of `sys` (fresh or reusable: it is initialised here) on `options`, validated
/// step by step (see the module docs).
pub fn run(
    sys: &mut dyn System,
    options: &Options,
    seed: u64,
    schedule: Schedule,
) -> Result<RunResult, String> {
    let mut v = Validator::new(options)?;
    let mut log = Trace {
        format: crate::FORMAT.into(),
        version: crate::VERSION,
        name: format!("run-{seed}"),
        origin: Origin {
            kind: "production-run".into(),
            property: None,
            transition: None,
            seed: Some(seed),
            mutant: None,
        },
        config: v.config().clone(),
        steps: Vec::new(),
    };
    let mut counts_reported = true;
    let mut result = RunResult {
        seed,
        log: log.clone(),
        quiescent: false,
        labels: BTreeSet::new(),
        failure: None,
    };
    if let Err(e) = sys.handle(&Input::Init {
        config: log.config.clone(),
    }) {
        result.failure = Some(Failure {
            step: 0,
            action: "init".into(),
            reason: e,
            regression: None,
        });
        return Ok(result);
    }
    let mut rng = SplitMix::new(seed);
    let mut uas = Uas::new(&log);
    let mut crashed = BTreeSet::new();
    // Peers paused (`suspect`, until `heal`): overlay messages to or from them are lost, and
    // what their user agents send them waits.
    let mut paused: BTreeSet<String> = BTreeSet::new();
    let mut fired = HashMap::new();
    // Overlay messages the implementation sent that are neither delivered nor lost.
    let mut in_flight: Vec<AbstractMsg> = Vec::new();
    let mut shown: BTreeMap<String, PeerState> = BTreeMap::new();
    // On an ordered network only the oldest message in flight on each link may arrive: the
    // model knows which that is (a step's messages are compared as a set, so their order is
    // the model's, not the implementation's).
    let fifo = options.network == NetworkKind::Ordered;
    for n in 1..=schedule.max_steps {
        let mut ordinary: Vec<StepAction> = Vec::new();
        let mut faults: Vec<StepAction> = Vec::new();
        let heads = if fifo { v.deliverable() } else { Vec::new() };
        for m in in_flight.iter().chain(&uas.in_flight) {
            let a = StepAction::Deliver { msg: m.clone() };
            let down = crashed.contains(&m.to) || paused.contains(&m.to);
            let behind = fifo && !heads.contains(&a);
            if !down && !behind && !ordinary.contains(&a) {
                ordinary.push(a);
            }
        }
        for o in &uas.responses {
            ordinary.push(StepAction::Deliver {
                msg: response(&uas.peer[&o.ua], &o.ua),
            });
        }
        for a in v.environment() {
            match a {
                StepAction::Lose { .. } | StepAction::Crash { .. } => faults.push(a),
                _ => ordinary.push(a),
            }
        }
        let fault = !faults.is_empty()
            && (ordinary.is_empty() || rng.below(100) < schedule.fault_percent as usize);
        let pool = if fault { &faults } else { &ordinary };
        if pool.is_empty() {
            result.quiescent = true;
            if let Err(m) = v.finish() {
                result.failure = Some(Failure {
                    step: n,
                    action: "end of the run".into(),
                    reason: m.to_string(),
                    regression: Some(Box::new(v.regression(
                        format!("regression-{seed}"),
                        seed,
                        None,
                    ))),
                });
            }
            break;
        }
        let action = pool[rng.below(pool.len())].clone();
        let mut step = Step {
            n,
            action,
            expect: Expect::default(),
            state: BTreeMap::new(),
        };
        let label = runner::action_label(&step.action);
        let fail = |reason: String, v: &Validator, step: &Step| Failure {
            step: n,
            action: label.clone(),
            reason,
            regression: Some(Box::new(v.regression(
                format!("regression-{seed}"),
                seed,
                Some(&step.action),
            ))),
        };
        let obs = match runner::apply(&step, sys, &mut uas, &mut crashed, &mut fired) {
            Ok(o) => o,
            Err(e) => {
                result.failure = Some(fail(format!("[cannot_apply] {e}"), &v, &step));
                break;
            }
        };
        if let StepAction::Deliver { msg } | StepAction::Lose { msg } = &step.action {
            if let Some(i) = in_flight.iter().position(|m| m == msg) {
                in_flight.remove(i);
            }
        }
        match &step.action {
            // What the earlier incarnation sent or was sent is gone with it; so is what a
            // paused peer had in flight.
            StepAction::Restart { peer } | StepAction::Suspect { peer } => {
                in_flight.retain(|m| m.from != *peer && m.to != *peer);
                if matches!(step.action, StepAction::Suspect { .. }) {
                    paused.insert(peer.clone());
                }
            }
            StepAction::Heal { peer } => {
                paused.remove(peer);
            }
            _ => {}
        }
        let user_agent = |m: &AbstractMsg| uas.peer.contains_key(&m.from);
        let across_pause = |m: &AbstractMsg| paused.contains(&m.from) || paused.contains(&m.to);
        in_flight.extend(
            obs.sent
                .iter()
                .filter(|m| !user_agent(m) && !across_pause(m))
                .cloned(),
        );
        let got = match sys.state().transpose() {
            Ok(g) => g,
            Err(e) => {
                result.failure = Some(fail(format!("[cannot_apply] state: {e}"), &v, &step));
                break;
            }
        };
        counts_reported &= obs.counted.is_some();
        step.expect = Expect {
            client: obs.client.clone(),
            sent: obs.sent.clone(),
            counted: obs.counted.clone().unwrap_or_default(),
        };
        if let Some(got) = &got {
            for (peer, p) in got {
                if shown.get(peer) != Some(p) {
                    step.state.insert(peer.clone(), p.clone());
                    shown.insert(peer.clone(), p.clone());
                }
            }
        }
        let checked = v.step(&step, &obs, got.as_ref(), &crashed);
        log.steps.push(step);
        if let Err(m) = checked {
            let step = log.steps.last().expect("just pushed");
            result.failure = Some(fail(m.to_string(), &v, step));
            break;
        }
    }
    // A system that did not report what its peers counted at some step (an adapter may leave
    // it out) gets a log of the version that lists no counted events, so that checking the
    // log later does not compare counts it never reported.
    if !counts_reported {
        log.version = crate::OLDEST_VERSION;
        for s in &mut log.steps {
            s.expect.counted.clear();
        }
    }
    result.log = log;
    result.labels = v.labels;
    Ok(result)
}

/// The abstract delivery of the response to publisher `ua` from its first-contact `peer`.
fn response(peer: &str, ua: &str) -> AbstractMsg {
    AbstractMsg {
        kind: "response".into(),
        from: peer.into(),
        to: ua.into(),
        gid: None,
        seq: None,
        value: None,
        values: None,
        req: None,
        if_match: None,
        epoch: None,
    }
}

/// Validates a logged run offline: a trace whose expectations are what an implementation did
/// (a `validate-run --log` file, or any implementation's log in the trace format) against
/// the model configuration `options`, step by step as [`run`] does. Returns the number of
/// steps. A log says nothing about what was left to do at its end, so the `eventually`
/// properties are not checked here.
pub fn validate_log(log: &Trace, options: &Options) -> Result<usize, Failure> {
    let fail = |step: usize, action: String, reason: String| Failure {
        step,
        action,
        reason,
        regression: None,
    };
    let mut v = Validator::new(options).map_err(|e| fail(0, "init".into(), e))?;
    let want = serde_json::to_value(v.config()).expect("configurations serialise");
    let got = serde_json::to_value(&log.config).expect("configurations serialise");
    if want != got {
        let field = match (&want, &got) {
            (serde_json::Value::Object(w), serde_json::Value::Object(g)) => w
                .iter()
                .find(|(k, x)| g.get(*k) != Some(*x))
                .map_or("?".to_string(), |(k, _)| k.clone()),
            _ => "?".into(),
        };
        return Err(fail(
            0,
            "init".into(),
            format!("the log's configuration is not the model's for these options (field `{field}` differs)"),
        ));
    }
    let mut crashed = BTreeSet::new();
    let mut state: BTreeMap<String, PeerState> = BTreeMap::new();
    for step in &log.steps {
        match &step.action {
            StepAction::Crash { peer } => {
                crashed.insert(peer.clone());
            }
            StepAction::Restart { peer } => {
                crashed.remove(peer);
            }
            _ => {}
        }
        state.extend(step.state.clone());
        let obs = Observed {
            sent: step.expect.sent.clone(),
            client: step.expect.client.clone(),
            // A log before version 11 lists no counted events: they are not compared.
            counted: (log.version >= crate::COUNTED_SINCE).then(|| step.expect.counted.clone()),
            log: Vec::new(),
        };
        if let Err(m) = v.step(step, &obs, Some(&state), &crashed) {
            let mut f = fail(step.n, runner::action_label(&step.action), m.to_string());
            f.regression = Some(Box::new(v.regression(
                format!("regression-{}", log.name),
                0,
                Some(&step.action),
            )));
            return Err(f);
        }
    }
    Ok(v.steps())
}
