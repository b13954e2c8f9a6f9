//! The history checker (Jepsen-style): reads what the SIP clients saw and checks, per
//! presentity and watcher, the five rules of [`Rule`]. It reports every violation, the first
//! (earliest) one with an excerpt of the history around it.

use crate::history::Event;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// What a history must satisfy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// A watcher's NOTIFY versions never go backwards (within a dialog by CSeq, and across
    /// the watcher's successive dialogs); a document with a version is never followed by one
    /// without.
    Monotonic,
    /// Every notified state was published (its version was sent in a PUBLISH of the same
    /// presentity before the NOTIFY arrived).
    Published,
    /// No publication acknowledged with 200 is lost: a PUBLISH with the SIP-If-Match of an
    /// acknowledged ETag gets no 412 (unless an earlier request with that ETag had an unknown
    /// outcome), and a fresh SUBSCRIBE after the heal (the final read) shows at least the
    /// latest acknowledged version in its first NOTIFY.
    AckedNotLost,
    /// After the faults heal and the publishers stop (quiesce), every live watcher shows at
    /// least the latest acknowledged version within the bound.
    Converges,
    /// No subscription is silently dropped: an accepted subscription gets a NOTIFY, it ends
    /// only with a terminated NOTIFY or an error response, and a refresh or unsubscribe through
    /// a gateway that was not killed, stopped or restarted never hears 481 for a dialog that was
    /// not terminated; an accepted unsubscribe is followed by a terminated NOTIFY.
    NoSilentDrop,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::Monotonic => "monotonic",
            Rule::Published => "published",
            Rule::AckedNotLost => "acked-not-lost",
            Rule::Converges => "converges",
            Rule::NoSilentDrop => "no-silent-drop",
        })
    }
}

/// One violation: which rule, when, about which presentity, what happened, and the history
/// lines around it.
#[derive(Clone, Debug)]
pub struct Violation {
    pub rule: Rule,
    pub t: u64,
    pub pres: String,
    pub message: String,
    pub excerpt: Vec<String>,
}

/// The checker's verdict over a history.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Violations, earliest first.
    pub violations: Vec<Violation>,
    pub publishes: usize,
    pub acked: usize,
    pub notifies: usize,
    pub dialogs: usize,
}

impl Report {
    /// No violation.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// How many violations of each rule.
    pub fn counts(&self) -> BTreeMap<Rule, usize> {
        let mut m = BTreeMap::new();
        for v in &self.violations {
            *m.entry(v.rule).or_default() += 1;
        }
        m
    }

    /// A one-line summary, then the first violation with its excerpt.
    pub fn render(&self, t0: u64) -> String {
        let mut s = format!(
            "{} PUBLISHes ({} acknowledged), {} NOTIFYs, {} dialogs: ",
            self.publishes, self.acked, self.notifies, self.dialogs
        );
        if self.passed() {
            s.push_str("no violation");
            return s;
        }
        let counts: Vec<String> = self
            .counts()
            .iter()
            .map(|(r, n)| format!("{r} x{n}"))
            .collect();
        s.push_str(&format!("violations: {}", counts.join(", ")));
        let v = &self.violations[0];
        s.push_str(&format!(
            "\n  first: [{}] at +{:.3}s {}: {}\n  history excerpt (+seconds since start):",
            v.rule,
            secs(v.t, t0),
            v.pres,
            v.message
        ));
        for line in &v.excerpt {
            s.push_str("\n    ");
            s.push_str(line);
        }
        s
    }
}

fn secs(t: u64, t0: u64) -> f64 {
    t.saturating_sub(t0) as f64 / 1e6
}

/// The checker's settings.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Microseconds after max(quiesce, the dialog's start) by which a live watcher must show
    /// the latest acknowledged version.
    pub converge_us: u64,
}

struct Dialog {
    pres: String,
    watcher: String,
    peer: String,
    start: u64,
    accepted: bool,
    /// (t, cseq, terminated, version) in arrival order.
    notifies: Vec<(u64, u32, bool, Option<u64>)>,
}

/// Checks a history (events in time order, as [`crate::history::read`] returns them).
pub fn check(events: &[Event], bounds: Bounds) -> Report {
    let mut report = Report::default();
    let mut out: Vec<(Rule, u64, String, String)> = Vec::new();
    let t0 = events.first().map(Event::t).unwrap_or(0);

    // Index the history.
    let mut publishes: HashMap<u64, (&str, u64, Option<&str>, u64)> = HashMap::new();
    let mut sent: HashMap<&str, HashMap<u64, u64>> = HashMap::new(); // pres -> version -> first sent
    let mut dialogs: HashMap<&str, Dialog> = HashMap::new();
    let mut dialog_order: Vec<&str> = Vec::new();
    let mut sub_ops: HashMap<u64, (&str, u32, bool)> = HashMap::new(); // op -> dialog, expires, initial
    let mut faults: Vec<(u64, &str)> = Vec::new();
    let mut quiesce = None;
    let end = events.last().map(Event::t).unwrap_or(0);
    for e in events {
        match e {
            Event::Publish {
                t,
                op,
                pres,
                version,
                if_match,
                ..
            } => {
                report.publishes += 1;
                publishes.insert(*op, (pres, *version, if_match.as_deref(), *t));
                sent.entry(pres).or_default().entry(*version).or_insert(*t);
            }
            Event::Subscribe {
                t,
                op,
                pres,
                watcher,
                dialog,
                peer,
                expires,
                initial,
            } => {
                sub_ops.insert(*op, (dialog, *expires, *initial));
                if *initial && !dialogs.contains_key(dialog.as_str()) {
                    dialog_order.push(dialog);
                    dialogs.insert(
                        dialog,
                        Dialog {
                            pres: pres.clone(),
                            watcher: watcher.clone(),
                            peer: peer.clone(),
                            start: *t,
                            accepted: false,
                            notifies: Vec::new(),
                        },
                    );
                }
            }
            Event::SubscribeResult { op, status, .. } => {
                if let (Some((d, _, true)), Some(s)) = (sub_ops.get(op), status) {
                    if (200..300).contains(s) {
                        if let Some(d) = dialogs.get_mut(d) {
                            d.accepted = true;
                        }
                    }
                }
            }
            Event::Notify {
                t,
                dialog,
                cseq,
                terminated,
                ..
            } => {
                report.notifies += 1;
                if let Some(d) = dialogs.get_mut(dialog.as_str()) {
                    // The version as the body names it; checked against the dialog's presentity below.
                    d.notifies.push((*t, *cseq, *terminated, None));
                }
            }
            Event::Fault {
                t, peer: Some(p), ..
            } => faults.push((*t, p)),
            Event::Quiesce { t } => quiesce = Some(*t),
            _ => {}
        }
    }
    report.dialogs = dialogs.len();

    // Versions of NOTIFYs, and rule Published.
    let mut notify_idx: HashMap<&str, usize> = HashMap::new();
    for e in events {
        if let Event::Notify {
            t, dialog, version, ..
        } = e
        {
            let Some(d) = dialogs.get_mut(dialog.as_str()) else {
                continue;
            };
            let i = notify_idx.entry(dialog).or_insert(0);
            if let Some(v) = version {
                d.notifies[*i].3 = Some(*v);
                let published = sent
                    .get(d.pres.as_str())
                    .and_then(|m| m.get(v))
                    .is_some_and(|at| at <= t);
                if !published {
                    out.push((
                        Rule::Published,
                        *t,
                        d.pres.clone(),
                        format!(
                            "watcher {} (dialog {dialog}) was notified version {v}, which was never published (before then)",
                            d.watcher
                        ),
                    ));
                }
            }
            *i += 1;
        }
    }

    // Rule AckedNotLost, part 1: a 412 for the ETag of an acknowledged version.
    let mut acked: HashMap<&str, (u64, u64)> = HashMap::new(); // etag -> version, t
    let mut max_ack: HashMap<&str, u64> = HashMap::new();
    let mut uncertain: HashSet<&str> = HashSet::new(); // etags a request with unknown outcome named
    for e in events {
        if let Event::PublishResult {
            t,
            op,
            status,
            etag,
            ..
        } = e
        {
            let Some(&(pres, version, if_match, _)) = publishes.get(op) else {
                continue;
            };
            match status {
                Some(200) => {
                    report.acked += 1;
                    let m = max_ack.entry(pres).or_insert(version);
                    *m = (*m).max(version);
                    if let Some(tag) = etag {
                        acked.insert(tag, (version, *t));
                    }
                }
                Some(412) => {
                    if let Some(tag) = if_match {
                        if let Some(&(v, at)) = acked.get(tag) {
                            if !uncertain.contains(tag) {
                                out.push((
                                    Rule::AckedNotLost,
                                    *t,
                                    pres.to_string(),
                                    format!(
                                        "PUBLISH v{version} with the SIP-If-Match of v{v} (acknowledged at +{:.3}s) got 412: v{v} was lost",
                                        secs(at, t0)
                                    ),
                                ));
                            }
                        }
                    }
                }
                Some(s) if (200..300).contains(s) || (400..500).contains(s) && *s != 408 => {}
                _ => {
                    // No answer, 408 or 5xx: the request may or may not have taken effect.
                    if let Some(tag) = if_match {
                        uncertain.insert(tag);
                    }
                }
            }
        }
    }

    // Rules Monotonic, Converges, AckedNotLost part 2 (the final read), NoSilentDrop.
    let mut by_watcher: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for d in &dialog_order {
        let dl = &dialogs[d];
        by_watcher
            .entry((dl.pres.as_str(), dl.watcher.as_str()))
            .or_default()
            .push(d);
    }
    for ((pres, watcher), ds) in &by_watcher {
        for (k, d) in ds.iter().enumerate() {
            let dl = &dialogs[d];
            // What the watcher saw in its earlier dialogs before this one started (an
            // abandoned dialog may go on receiving NOTIFYs; those do not count here).
            let mut high: Option<(u64, u64)> = ds[..k]
                .iter()
                .flat_map(|e| dialogs[e].notifies.iter())
                .filter(|n| n.0 < dl.start)
                .filter_map(|n| Some((n.3?, n.0)))
                .max();
            let mut seen_cseq = HashSet::new();
            let mut ordered: Vec<_> = dl
                .notifies
                .iter()
                .filter(|n| seen_cseq.insert(n.1))
                .collect();
            ordered.sort_by_key(|n| n.1);
            for &&(t, cseq, terminated, version) in &ordered {
                match (version, high) {
                    (Some(v), Some((h, at))) if v < h => out.push((
                        Rule::Monotonic,
                        t,
                        pres.to_string(),
                        format!(
                            "watcher {watcher} (dialog {d}, NOTIFY CSeq {cseq}) was notified v{v} after v{h} (seen at +{:.3}s)",
                            secs(at, t0)
                        ),
                    )),
                    (None, Some((h, _))) if !terminated => out.push((
                        Rule::Monotonic,
                        t,
                        pres.to_string(),
                        format!(
                            "watcher {watcher} (dialog {d}, NOTIFY CSeq {cseq}) was notified a document without a version after v{h}"
                        ),
                    )),
                    (Some(v), _) if high.is_none_or(|(h, _)| v > h) => high = Some((v, t)),
                    _ => {}
                }
            }
        }
        let Some(&want) = max_ack.get(pres) else {
            continue;
        };
        let Some(q) = quiesce else { continue };
        let last = ds
            .last()
            .map(|d| &dialogs[d])
            .expect("a watcher has a dialog");
        if !last.accepted {
            continue;
        }
        let deadline = q.max(last.start) + bounds.converge_us;
        let best = if *watcher == "final" {
            // A read: the state its first NOTIFY carries.
            last.notifies.iter().min_by_key(|n| n.1).and_then(|n| n.3)
        } else {
            last.notifies
                .iter()
                .filter(|n| n.0 <= deadline)
                .filter_map(|n| n.3)
                .max()
        };
        if best.is_none_or(|b| b < want) {
            let (rule, what) = if *watcher == "final" {
                (
                    Rule::AckedNotLost,
                    "the final read (a fresh SUBSCRIBE after the heal)",
                )
            } else {
                (Rule::Converges, "live watcher")
            };
            out.push((
                rule,
                deadline.min(end),
                pres.to_string(),
                format!(
                    "{what} {watcher} (dialog {}) shows {} by +{:.3}s; the latest acknowledged version is v{want}",
                    ds.last().expect("a dialog"),
                    best.map_or("no version".into(), |b| format!("v{b}")),
                    secs(deadline, t0)
                ),
            ));
        }
    }

    // Rule NoSilentDrop.
    for e in events {
        let Event::SubscribeResult {
            t,
            op,
            dialog,
            status,
        } = e
        else {
            continue;
        };
        let Some(&(_, expires, initial)) = sub_ops.get(op) else {
            continue;
        };
        let Some(dl) = dialogs.get(dialog.as_str()) else {
            continue;
        };
        let faulted = faults
            .iter()
            .any(|(ft, p)| *p == dl.peer && *ft >= dl.start && ft <= t);
        let terminated_before = dl.notifies.iter().any(|n| n.2 && n.0 <= *t);
        if !initial && *status == Some(481) && !faulted && !terminated_before {
            out.push((
                Rule::NoSilentDrop,
                *t,
                dl.pres.clone(),
                format!(
                    "watcher {} (dialog {dialog} via {}) {} got 481: the subscription was dropped without a terminated NOTIFY",
                    dl.watcher,
                    dl.peer,
                    if expires == 0 { "unsubscribing" } else { "refreshing" }
                ),
            ));
        }
        if !initial
            && expires == 0
            && *status == Some(200)
            && !faulted
            && !dl.notifies.iter().any(|n| n.2)
        {
            out.push((
                Rule::NoSilentDrop,
                *t,
                dl.pres.clone(),
                format!(
                    "watcher {} (dialog {dialog}) unsubscribed (200) but no terminated NOTIFY came",
                    dl.watcher
                ),
            ));
        }
    }
    for d in &dialog_order {
        let dl = &dialogs[d];
        let faulted = faults
            .iter()
            .any(|(ft, p)| *p == dl.peer && *ft >= dl.start);
        if dl.accepted && dl.notifies.is_empty() && !faulted {
            out.push((
                Rule::NoSilentDrop,
                dl.start,
                dl.pres.clone(),
                format!(
                    "watcher {} (dialog {d} via {}) was accepted but never notified",
                    dl.watcher, dl.peer
                ),
            ));
        }
    }

    out.sort_by_key(|v| v.1);
    let dialog_pres: HashMap<&str, &str> =
        dialogs.iter().map(|(k, d)| (*k, d.pres.as_str())).collect();
    report.violations = out
        .into_iter()
        .map(|(rule, t, pres, message)| {
            let excerpt = excerpt(events, &pres, &dialog_pres, t, t0);
            Violation {
                rule,
                t,
                pres,
                message,
                excerpt,
            }
        })
        .collect();
    report
}

/// The history lines about `pres` (and every fault) in the 4 s before `t` and 1 s after,
/// at most 30, as `+seconds event`.
fn excerpt(
    events: &[Event],
    pres: &str,
    dialog_pres: &HashMap<&str, &str>,
    t: u64,
    t0: u64,
) -> Vec<String> {
    let about = |e: &Event| match e {
        Event::Publish { pres: p, .. }
        | Event::PublishResult { pres: p, .. }
        | Event::Subscribe { pres: p, .. } => p == pres,
        Event::SubscribeResult { dialog, .. } | Event::Notify { dialog, .. } => {
            dialog_pres.get(dialog.as_str()) == Some(&pres)
        }
        _ => true,
    };
    let lines: Vec<String> = events
        .iter()
        .filter(|e| e.t() + 4_000_000 >= t && e.t() <= t + 1_000_000 && about(e))
        .map(|e| {
            let mut j = serde_json::to_value(e).expect("events serialise");
            if let Some(o) = j.as_object_mut() {
                o.remove("t");
            }
            format!("+{:.3} {}", secs(e.t(), t0), j)
        })
        .collect();
    let skip = lines.len().saturating_sub(30);
    lines[skip..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Bounds = Bounds {
        converge_us: 5_000_000,
    };

    /// A small hand-written history: p1 published v1 (200, ETag e1) then v2 with If-Match e1
    /// (200, e2); watcher w1 through peer A sees v1 then v2; publishers stop at 10 s; the final
    /// read sees v2; both unsubscribe and get terminated NOTIFYs.
    fn good() -> Vec<Event> {
        let s = |t: u64| t * 100_000; // tenths of a second
        vec![
            sub(s(1), 1, "w1", "d1", "A", 600, true),
            sub_res(s(2), 1, "d1", Some(200)),
            notify(s(2), "d1", 1, false, None),
            publish(s(3), 2, 1, None),
            pub_res(s(4), 2, 1, Some(200), Some("e1")),
            notify(s(4), "d1", 2, false, Some(1)),
            publish(s(5), 3, 2, Some("e1")),
            pub_res(s(6), 3, 2, Some(200), Some("e2")),
            notify(s(6), "d1", 3, false, Some(2)),
            Event::Quiesce { t: s(100) },
            sub(s(101), 4, "final", "d9", "B", 600, true),
            sub_res(s(102), 4, "d9", Some(200)),
            notify(s(102), "d9", 1, false, Some(2)),
            sub(s(110), 5, "w1", "d1", "A", 0, false),
            sub_res(s(111), 5, "d1", Some(200)),
            notify(s(111), "d1", 4, true, Some(2)),
            sub(s(112), 6, "final", "d9", "B", 0, false),
            sub_res(s(113), 6, "d9", Some(200)),
            notify(s(113), "d9", 2, true, Some(2)),
        ]
    }

    fn publish(t: u64, op: u64, version: u64, if_match: Option<&str>) -> Event {
        Event::Publish {
            t,
            op,
            pres: "p1".into(),
            peer: "A".into(),
            version,
            if_match: if_match.map(Into::into),
        }
    }
    fn pub_res(t: u64, op: u64, version: u64, status: Option<u16>, etag: Option<&str>) -> Event {
        Event::PublishResult {
            t,
            op,
            pres: "p1".into(),
            version,
            status,
            etag: etag.map(Into::into),
        }
    }
    fn sub(t: u64, op: u64, w: &str, d: &str, peer: &str, expires: u32, initial: bool) -> Event {
        Event::Subscribe {
            t,
            op,
            pres: "p1".into(),
            watcher: w.into(),
            dialog: d.into(),
            peer: peer.into(),
            expires,
            initial,
        }
    }
    fn sub_res(t: u64, op: u64, d: &str, status: Option<u16>) -> Event {
        Event::SubscribeResult {
            t,
            op,
            dialog: d.into(),
            status,
        }
    }
    fn notify(t: u64, d: &str, cseq: u32, terminated: bool, version: Option<u64>) -> Event {
        Event::Notify {
            t,
            dialog: d.into(),
            cseq,
            terminated,
            version,
            seq: None,
            contact: None,
        }
    }
    fn sorted(mut h: Vec<Event>) -> Vec<Event> {
        h.sort_by_key(Event::t);
        h
    }
    fn rules(h: Vec<Event>) -> Vec<Rule> {
        let r = check(&sorted(h), B);
        let mut v: Vec<Rule> = r.violations.iter().map(|v| v.rule).collect();
        v.dedup();
        v
    }

    #[test]
    fn a_good_history_passes() {
        let r = check(&good(), B);
        assert!(r.passed(), "{}", r.render(0));
        assert_eq!((r.publishes, r.acked, r.dialogs), (2, 2, 2));
    }

    #[test]
    fn a_version_going_back_fails_monotonic() {
        let mut h = good();
        h.push(notify(700_000, "d1", 5, false, Some(1)));
        assert_eq!(rules(h.clone()), [Rule::Monotonic]);
        let r = check(&sorted(h), B);
        let text = r.render(0);
        assert!(text.contains("notified v1 after v2"), "{text}");
        assert!(text.contains("\"kind\":\"notify\""), "the excerpt: {text}");
        // NOTIFYs are ordered by CSeq, not arrival: a late retransmission is not a regression.
        let mut h = good();
        h.push(notify(700_000, "d1", 2, false, Some(1)));
        assert!(rules(h).is_empty());
        // A document without a version after a versioned one is a regression too.
        let mut h = good();
        h.push(notify(700_000, "d1", 5, false, None));
        assert_eq!(rules(h), [Rule::Monotonic]);
    }

    #[test]
    fn a_new_dialog_must_not_show_less_than_the_watcher_saw_before_it() {
        // w1 starts a second dialog d3 at 0.65 s; its first NOTIFY shows v1 although w1 saw v2.
        let mut h = good();
        h.push(sub(650_000, 20, "w1", "d3", "B", 600, true));
        h.push(sub_res(660_000, 20, "d3", Some(200)));
        h.push(notify(660_000, "d3", 1, false, Some(1)));
        h.push(notify(670_000, "d3", 2, false, Some(2)));
        assert!(rules(h.clone()).contains(&Rule::Monotonic));
        // The abandoned dialog d1 going on with later versions after d3 started is fine.
        let mut h = good();
        h.push(sub(550_000, 20, "w1", "d3", "B", 600, true));
        h.push(sub_res(560_000, 20, "d3", Some(200)));
        h.push(notify(560_000, "d3", 1, false, Some(1)));
        h.push(notify(680_000, "d3", 2, false, Some(2)));
        h.push(sub(11_000_000, 21, "w1", "d3", "B", 0, false));
        h.push(sub_res(11_100_000, 21, "d3", Some(200)));
        h.push(notify(11_100_000, "d3", 3, true, None));
        assert!(rules(h).is_empty());
    }

    #[test]
    fn an_unpublished_or_foreign_version_fails_published() {
        let mut h = good();
        h.push(notify(700_000, "d1", 5, false, Some(7)));
        assert_eq!(rules(h), [Rule::Published]);
        // Notified before it was sent.
        let mut h = good();
        h.retain(|e| !matches!(e, Event::Publish { op: 3, .. }));
        h.push(publish(650_000, 3, 2, Some("e1")));
        assert_eq!(rules(h), [Rule::Published]);
    }

    #[test]
    fn a_412_on_an_acknowledged_etag_fails_acked_not_lost() {
        let mut h = good();
        h.push(publish(700_000, 7, 3, Some("e2")));
        h.push(pub_res(800_000, 7, 3, Some(412), None));
        assert_eq!(rules(h), [Rule::AckedNotLost]);
        // Not when an earlier request with that ETag had an unknown outcome (it may have won).
        let mut h = good();
        h.push(publish(700_000, 7, 3, Some("e2")));
        h.push(pub_res(750_000, 7, 3, None, None));
        h.push(publish(760_000, 8, 4, Some("e2")));
        h.push(pub_res(800_000, 8, 4, Some(412), None));
        assert!(rules(h).is_empty());
    }

    #[test]
    fn a_final_read_older_than_the_last_ack_fails_acked_not_lost() {
        let h: Vec<Event> = good()
            .into_iter()
            .map(|e| match e {
                Event::Notify {
                    t,
                    ref dialog,
                    cseq,
                    ..
                } if dialog == "d9" && cseq == 1 => notify(t, "d9", 1, false, Some(1)),
                e => e,
            })
            .collect();
        assert_eq!(rules(h), [Rule::AckedNotLost]);
    }

    #[test]
    fn a_watcher_stuck_after_quiesce_fails_converges() {
        // w1 never sees v2: its NOTIFY is missing, the terminated one carries no document.
        let mut h: Vec<Event> = good()
            .into_iter()
            .filter(|e| !matches!(e, Event::Notify { dialog, cseq: 3, .. } if dialog == "d1"))
            .map(|e| match e {
                Event::Notify {
                    t,
                    ref dialog,
                    cseq: 4,
                    ..
                } if dialog == "d1" => notify(t, "d1", 4, true, None),
                e => e,
            })
            .collect();
        assert_eq!(rules(h.clone()), [Rule::Converges]);
        // Seen 0.4 s after quiesce: within the bound.
        h.push(notify(10_400_000, "d1", 3, false, Some(2)));
        assert!(rules(h.clone()).is_empty());
        // Seen 6 s after quiesce: too late.
        h.pop();
        h.push(notify(16_000_000, "d1", 3, false, Some(2)));
        assert_eq!(rules(h), [Rule::Converges]);
    }

    #[test]
    fn a_silent_drop_fails_no_silent_drop() {
        // A refresh through a healthy gateway gets 481 without a terminated NOTIFY.
        let mut h = good();
        h.push(sub(700_000, 9, "w1", "d1", "A", 600, false));
        h.push(sub_res(710_000, 9, "d1", Some(481)));
        assert_eq!(rules(h.clone()), [Rule::NoSilentDrop]);
        // Not when the gateway was killed meanwhile.
        h.push(Event::Fault {
            t: 650_000,
            what: "kill A".into(),
            peer: Some("A".into()),
        });
        assert!(rules(h).is_empty());
        // An accepted unsubscribe without a terminated NOTIFY.
        let mut h = good();
        h.retain(|e| !matches!(e, Event::Notify { dialog, cseq: 4, .. } if dialog == "d1"));
        assert_eq!(rules(h), [Rule::NoSilentDrop]);
        // An accepted subscription never notified.
        let mut h = good();
        h.push(sub(500_000, 10, "w2", "d2", "A", 600, true));
        h.push(sub_res(510_000, 10, "d2", Some(200)));
        h.push(sub(600_000, 11, "w2", "d2", "A", 0, false));
        h.push(sub_res(610_000, 11, "d2", Some(481)));
        let r = rules(h);
        assert!(r.contains(&Rule::NoSilentDrop), "{r:?}");
    }
}
