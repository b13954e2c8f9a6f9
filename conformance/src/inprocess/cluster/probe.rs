//! Maintenance probes (MAPPING.md, "Projected state", maintenance probes): production's
//! periodic maintenance, run on a fork of each live peer with its deadlines made due, judged
//! against the state the step reached. The harness's clocks never reach the intervals of
//! that maintenance (they are [`super::super::NEVER`] here), and the model has no time, so
//! without a probe a tree round, a replica refresh, a parent's timeout or the overlay's own
//! repair could do anything, or nothing, unseen. The forks are dropped: the peer itself is
//! untouched.

use super::Cluster;
use sascribe::event::BusyWaits;
use sascribe::wire::{Msg, PastryMsg, Routed, ScribeMsg};
use sascribe::{GroupId, Millis, NodeHandle, Peer, RequestTimer, Timer, Timers, Transmit};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// An accepted local subscription's timer, probed (see [`Probe::sub_expiries`]).
struct SubExpiry {
    at: Millis,
    armed: Millis,
    early: Option<(Millis, Option<Millis>)>,
    after: Option<sascribe::GroupView>,
}

/// What the forks of one peer did when the harness made their maintenance due.
pub(in crate::inprocess) struct Probe {
    /// The tree round of the group, with its tick, its replica refresh and any re-JOIN due:
    /// the datagrams it sent.
    round: Vec<Transmit>,
    /// A deadline the round left further ahead than the interval that sets it, named.
    round_deadline: Option<String>,
    /// The group as the fork holds it after its round.
    round_view: Option<sascribe::GroupView>,
    /// The clock the forks ran at.
    now: Millis,
    /// The group's nominal replica set at this peer (its `replicas` nearest leaves).
    replicas: Vec<NodeHandle>,
    /// Whether this peer routes the group's key to itself (a re-JOIN would not leave it).
    routes_to_itself: bool,
    /// The group's parent timed out, made due: the datagrams that sent (`None`: no parent).
    parent_timeout: Option<Vec<Transmit>>,
    /// The tree round at its parent's timeout to the millisecond (last heard at `h`, the
    /// round at `h + parent_timeout`, not yet past): the group as the fork holds it after,
    /// and the datagrams it sent (`None`: no parent, or the time is behind the clock).
    parent_boundary: Option<(Option<sascribe::GroupView>, Vec<Transmit>)>,
    /// Each accepted local subscription: its expiry, the deadline its timer is armed at, that
    /// timer fired (on a fork) before the expiry (`None`: armed at the expiry): when, and
    /// where it was armed after; and the group as a fork holds it after the timer fired at
    /// the expiry.
    sub_expiries: Vec<SubExpiry>,
    /// The group's re-JOIN timer fired: whether the fork said it needs the group, and the
    /// datagrams it sent.
    rejoin: (bool, Vec<Transmit>),
    /// A fetching root that some peer answered busy: its fetch round before, and its fetch
    /// timer fired at the round's deadline (its clock run on to it): the round after, and the
    /// datagrams it sent.
    fetch_due: Option<(BusyWaits, Option<BusyWaits>, Vec<Transmit>)>,
    /// Whether the peer completed its overlay join.
    ready: bool,
    /// The overlay's probes of peers declared dead and its leaf-set exchange, due: the
    /// datagrams they sent.
    rest: Vec<Transmit>,
}

impl Probe {
    /// The datagrams the probed tree round sent.
    pub(super) fn round(&self) -> &[Transmit] {
        &self.round
    }

    /// Runs the forks of `p` at `now`.
    pub(in crate::inprocess) fn run(p: &Peer, gid: GroupId, now: Millis, replicas: usize) -> Self {
        let drain =
            |mut f: Peer| -> Vec<Transmit> { std::iter::from_fn(|| f.poll_transmit()).collect() };
        let mut round = p.fork();
        round.fire_round_due(now, &mut Timers::new(), gid);
        let round_deadline = round.deadline_beyond(gid, now);
        let round_view = round.group_view(gid);
        // Its parent timing out: production's own tick, on a fork whose clock has run on past
        // the parent timeout since the parent was last heard (whatever else falls due by then
        // runs too; what is judged is the LEAVE and the re-JOIN).
        let parent_timeout = p
            .group_view(gid)
            .is_some_and(|v| v.parent.is_some())
            .then(|| {
                let mut orphan = p.fork();
                let later = now + p.config().parent_timeout + 1;
                orphan.fire_round_due(later, &mut Timers::new(), gid);
                drain(orphan)
            });
        let parent_boundary = p
            .parent_heard(gid)
            .map(|heard| heard.saturating_add(p.config().parent_timeout))
            .filter(|&at| at >= now)
            .map(|at| {
                let mut f = p.fork();
                f.fire_round_due(at, &mut Timers::new(), gid);
                (f.group_view(gid), drain(f))
            });
        let sub_expiries = p
            .sub_expiries(gid)
            .into_iter()
            .map(|(h, at, armed)| {
                let early = (armed < at).then(|| {
                    let mut f = p.fork();
                    let t = armed.max(now);
                    f.handle_timer(t, &mut Timers::new(), Timer::Subscription(h));
                    let rearmed = f.sub_expiries(gid).into_iter().find(|s| s.0 == h);
                    (t, rearmed.map(|s| s.2))
                });
                let mut f = p.fork();
                f.handle_timer(at.max(now), &mut Timers::new(), Timer::Subscription(h));
                SubExpiry {
                    at,
                    armed,
                    early,
                    after: f.group_view(gid),
                }
            })
            .collect();
        // Its re-JOIN timer firing (production keeps one per group, and it may outlive the
        // orphanhood that armed it: the peer took the root role over, or lost its interest).
        let mut rejoin = p.fork();
        let rejoin_timer = RequestTimer::Rejoin(gid);
        let needs = rejoin.fire_request_timer(now, &mut Timers::new(), rejoin_timer, false);
        let fetch_due = p.busy_waits(gid).filter(|w| !w.busy.is_empty()).map(|w| {
            let mut fetch = p.fork();
            let at = w.deadline.max(now);
            fetch.handle_timer(at, &mut Timers::new(), Timer::Fetch(gid));
            (w, fetch.busy_waits(gid), drain(fetch))
        });
        let mut rest = p.fork();
        rest.fire_overlay_rest_due(now);
        let mut set = Vec::new();
        p.overlay().nearest_leaves(gid.0, replicas, &mut set);
        Probe {
            round: drain(round),
            round_deadline,
            round_view,
            now,
            parent_timeout,
            parent_boundary,
            sub_expiries,
            replicas: set,
            routes_to_itself: matches!(
                p.overlay().route(gid.0, None),
                sascribe::pastry::Hop::Local
            ),
            rejoin: (needs, drain(rejoin)),
            fetch_due,
            ready: p.is_ready(),
            rest: drain(rest),
        }
    }
}

impl Cluster {
    /// Judges peer `a`'s probe (see the module docs). Its tree round, every deadline due:
    /// - sets no deadline further ahead than the interval that sets it;
    /// - at an active root with a record, refreshes every replica of its nominal set with it
    ///   (the seq it last applied, committed or not).
    ///
    /// Its parent timing out (a member with a parent): if it needs the group, it re-JOINs,
    /// and it sends the parent a LEAVE unless that re-JOIN goes through the parent again.
    ///
    /// Its re-JOIN timer firing: it re-JOINs exactly when it needs the group (local
    /// subscriptions or children) and is not its root, and says so.
    ///
    /// Its fetch timer at its round's deadline (a fetching root some peer answered busy): it
    /// asks again, or gives up on, each peer whose busy time has come, and asks no other
    /// busy peer.
    ///
    /// Its overlay maintenance, due: pings each peer it declared dead that it knows (a peer
    /// that joins mid-run and that it never heard of has no address), and no other; and,
    /// once joined with a leaf set, asks one of its leaves for its leaf set.
    pub(super) fn check_probe(
        &self,
        a: usize,
        probe: &Probe,
        round: &[(usize, Msg)],
        view: Option<&sascribe::GroupView>,
        applied: Option<u64>,
    ) -> Result<(), String> {
        let name = &self.slots[a].name;
        let fail = |what: String| Err(format!("{name}, its maintenance made due: {what}"));
        if let Some(why) = &probe.round_deadline {
            return fail(format!("after its tree round, {why}"));
        }
        let changed =
            view.and_then(|v| round_changed_tree(v, probe.round_view.as_ref(), self.cfg.leases));
        if let Some(why) = changed {
            return fail(format!("its tree round {why}"));
        }
        if let Some(why) = view.and_then(|v| round_dropped_seq(v, probe.round_view.as_ref())) {
            return fail(format!("its tree round {why}"));
        }
        if let Some(why) = view.and_then(|v| round_kept_idle(v, probe)) {
            return fail(format!("its tree round {why}"));
        }
        let gid = self.gid;
        if let (Some(v), Some(seq)) = (view, applied) {
            if v.is_root && v.root_active && seq > 0 {
                for h in probe
                    .replicas
                    .iter()
                    .filter(|h| h.id != self.slots[a].handle.id)
                {
                    let refreshed = round.iter().any(|(to, m)| {
                        self.slots[*to].handle.id == h.id && replicates(m, gid, seq)
                    });
                    if !refreshed {
                        return fail(format!(
                            "its replica refresh did not send {} its record (seq {seq})",
                            self.name_of(h.id)
                        ));
                    }
                }
            }
        }
        if let (Some(v), Some(timed_out)) = (view, &probe.parent_timeout) {
            let sent = self.decode_probe(timed_out)?;
            let me = self.slots[a].handle.id;
            let needs = !v.is_root && (v.local_subs > 0 || !v.children.is_empty());
            let parent = v.parent.map_or_else(String::new, |p| self.name_of(p));
            let left = sent.iter().any(|(to, m)| {
                Some(self.slots[*to].handle.id) == v.parent
                    && matches!(m, Msg::Scribe(ScribeMsg::Leave { gid: g }) if *g == gid)
            });
            let rejoined = sent.iter().find_map(|(to, m)| {
                matches!(m, Msg::Routed { body: Routed::Join { gid: g, origin, .. }, .. }
                    if *g == gid && origin.id == me)
                .then_some(self.slots[*to].handle.id)
            });
            let through = rejoined.is_some() && rejoined == v.parent;
            if needs && rejoined.is_none() && !probe.routes_to_itself {
                return fail(format!(
                    "its parent {parent} timed out, and it sent no re-JOIN"
                ));
            }
            let keep_quiet = needs && through;
            if left && keep_quiet {
                return fail(format!(
                    "its parent {parent} timed out, and it sent {parent} a LEAVE, though its \
                     re-JOIN goes through {parent} (the LEAVE may cut off the branch the JOIN \
                     grafts)"
                ));
            }
            if !left && !keep_quiet {
                return fail(format!(
                    "its parent {parent} timed out, and it sent {parent} no LEAVE, though {}",
                    if needs {
                        "its re-JOIN goes elsewhere"
                    } else {
                        "it no longer needs the group"
                    }
                ));
            }
        }
        self.check_boundaries(a, probe, view)?;
        self.check_rejoin_probe(a, probe, view)?;
        self.check_fetch_due(a, probe)?;
        let rest = self.decode_probe(&probe.rest)?;
        let pinged: BTreeSet<usize> = rest
            .iter()
            .filter(|(_, m)| matches!(m, Msg::Pastry(PastryMsg::Ping)))
            .map(|&(to, _)| to)
            .collect();
        let s = &self.slots[a];
        let dead: BTreeSet<usize> = s
            .known_dead
            .iter()
            .copied()
            .filter(|&q| !self.cfg.peers[q].joins || s.met.contains(&q))
            .filter(|q| !s.unaddressed.contains(q))
            .collect();
        if pinged != dead {
            return fail(format!(
                "it pinged {:?}, not the peers it declared dead, {:?}",
                self.names(&pinged),
                self.names(&dead)
            ));
        }
        let asked: Vec<usize> = rest
            .iter()
            .filter(|(_, m)| matches!(m, Msg::Pastry(PastryMsg::LeafSetRequest)))
            .map(|&(to, _)| to)
            .collect();
        let leaves = self.model_leaf_set(a);
        if probe.ready && !leaves.is_empty() {
            let ok = matches!(asked.as_slice(), [q] if leaves.iter().any(|h| h.id == self.slots[*q].handle.id));
            if !ok {
                return fail(format!(
                    "its leaf-set exchange asked {:?}, not one of its leaves",
                    self.names(&asked.into_iter().collect())
                ));
            }
        }
        Ok(())
    }

    /// Peer `a`'s replica refresh, answered: each REPLICATE (or batch naming the group) its
    /// probed tree round sent a live replica is delivered to a fork of that replica, which
    /// must answer `a` for the group: acknowledge the record (`ReplicateAck`, or
    /// `ReplicateAcks` naming the group), refuse it (`Fenced`), or name a closer peer
    /// (`NotRoot`). Not judged: a replica that acts as a root itself, or that confirms another
    /// root's lease (it confirms nothing meanwhile; the sender's retry asks again). Without
    /// this, a replica that stored a refreshed record and never answered would pass: the
    /// harness runs tree rounds on forks only, so no step delivers a refresh.
    pub(super) fn check_refresh_answered(
        &mut self,
        a: usize,
        probe: &Probe,
        round: &[(usize, Msg)],
    ) -> Result<(), String> {
        let gid = self.gid;
        let root = self.slots[a].handle.id;
        for (t, &(q, ref m)) in probe.round.iter().zip(round) {
            let seq = match m {
                Msg::Scribe(ScribeMsg::Replicate { gid: g, rec, .. }) if *g == gid => rec.seq,
                Msg::Scribe(ScribeMsg::Replicates { items, .. }) => {
                    match items.iter().find(|i| i.gid == gid) {
                        Some(i) => i.rec.seq,
                        None => continue,
                    }
                }
                _ => continue,
            };
            if q == a || self.slots[q].crashed || self.slots[q].paused {
                continue;
            }
            let answer = Arc::new(Mutex::new(None));
            let into = Arc::clone(&answer);
            let payload = t.payload.clone();
            self.slots[q].call(
                self.now,
                Box::new(move |host, now| {
                    let mut fork = host.peer().fork();
                    let view = fork.group_view(gid);
                    let busy = view.as_ref().is_some_and(|v| {
                        v.is_root
                            || v.confirms
                                .is_some_and(|(r, until)| r != root && until > now)
                    });
                    fork.handle_datagram(now, &mut Timers::new(), &payload);
                    let sent: Vec<Transmit> = std::iter::from_fn(|| fork.poll_transmit()).collect();
                    *into.lock().unwrap_or_else(|p| p.into_inner()) = Some((busy, sent));
                    Ok(String::new())
                }),
            )?;
            let (busy, sent) = answer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .ok_or("the replica did not report its answer")?;
            if busy {
                continue;
            }
            let answered = self.decode_probe(&sent)?.into_iter().any(|(to, m)| {
                to == a
                    && match m {
                        Msg::Scribe(
                            ScribeMsg::ReplicateAck { gid: g, .. }
                            | ScribeMsg::Fenced { gid: g, .. }
                            | ScribeMsg::NotRoot { gid: g, .. },
                        ) => g == gid,
                        Msg::Scribe(ScribeMsg::ReplicateAcks { acks, .. }) => {
                            acks.iter().any(|(g, _)| *g == gid)
                        }
                        _ => false,
                    }
            });
            if !answered {
                return Err(format!(
                    "{}, its maintenance made due: {} got its replica refresh (seq {seq}) and \
                     answered neither an acknowledgement, a fence nor a NotRoot",
                    self.slots[a].name, self.slots[q].name
                ));
            }
        }
        Ok(())
    }

    /// Peer `a`'s timeouts at their deadlines to the millisecond, on forks (the harness's
    /// clocks reach neither, and the parent-timeout probe runs past the deadline):
    /// - a member with local subscriptions and a parent, its tree round at the instant its
    ///   parent's silence reaches `parent_timeout` (not beyond it): the parent has not timed
    ///   out, so it stays the parent and gets no LEAVE;
    /// - each accepted local subscription: its timer is armed by the expiry it was granted;
    ///   fired earlier (a deadline armed before the grant) it keeps the subscription and is
    ///   armed again later, by the expiry (not at or before the time it fired, which a
    ///   runtime would fire again and again); fired at the expiry it ends the subscription
    ///   (the group holds one local subscription fewer).
    fn check_boundaries(
        &self,
        a: usize,
        probe: &Probe,
        view: Option<&sascribe::GroupView>,
    ) -> Result<(), String> {
        let Some(v) = view else { return Ok(()) };
        let name = &self.slots[a].name;
        if let (Some((after, sent)), Some(parent)) = (&probe.parent_boundary, v.parent) {
            let left = self.decode_probe(sent)?.iter().any(|(to, m)| {
                self.slots[*to].handle.id == parent
                    && matches!(m, Msg::Scribe(ScribeMsg::Leave { gid }) if *gid == self.gid)
            });
            let kept = after.as_ref().is_some_and(|w| w.parent == Some(parent));
            if v.local_subs > 0 && (left || !kept) {
                return Err(format!(
                    "{name}, its tree round made due when its parent {} had been silent for \
                     exactly the parent timeout: it {} (the parent times out only beyond it)",
                    self.name_of(parent),
                    if left {
                        "sent it a LEAVE"
                    } else {
                        "let it go as its parent"
                    },
                ));
            }
        }
        for SubExpiry {
            at,
            armed,
            early,
            after,
        } in &probe.sub_expiries
        {
            let sub = format!("{name}, a local subscription granted until {at} ms");
            if armed > at {
                return Err(format!(
                    "{sub} has its timer armed at {armed} ms, beyond its expiry"
                ));
            }
            match early {
                Some((t, Some(next))) if next > t && next <= at => {}
                Some((t, next)) => {
                    return Err(format!(
                        "{sub}: its timer, fired at {t} ms, {} (it must wake the subscription \
                         later, by its expiry)",
                        next.map_or("ended it".into(), |n| format!("was armed again at {n} ms"))
                    ))
                }
                None => {}
            }
            let left = after.as_ref().map_or(0, |w| w.local_subs);
            if left + 1 != v.local_subs {
                return Err(format!(
                    "{name}, a local subscription's timer made due at the expiry it was \
                     granted ({at} ms): the group holds {left} local subscriptions after, {} \
                     before (the subscription ends at its expiry)",
                    v.local_subs
                ));
            }
        }
        Ok(())
    }

    /// Peer `a`'s re-JOIN timer, fired on a fork: a root never re-JOINs its own tree, and a
    /// peer that needs the group for nothing (no local subscription, no child) does not graft
    /// itself back onto it; any other peer re-JOINs. The fork must say which
    /// (`Peer::fire_request_timer`'s answer), and a peer that does not need the group must
    /// send no JOIN of its own. (Under the harness the timer fires only while the model's
    /// re-JOIN is pending, so without this probe its guard is never judged.)
    fn check_rejoin_probe(
        &self,
        a: usize,
        probe: &Probe,
        view: Option<&sascribe::GroupView>,
    ) -> Result<(), String> {
        let (said, sent) = &probe.rejoin;
        let me = self.slots[a].handle.id;
        let gid = self.gid;
        let needs =
            view.is_some_and(|v| !v.is_root && (v.local_subs > 0 || !v.children.is_empty()));
        let joined = self.decode_probe(sent)?.iter().any(|(_, m)| {
            matches!(m, Msg::Routed { body: Routed::Join { gid: g, origin, .. }, .. }
                if *g == gid && origin.id == me)
        });
        let what = match view {
            Some(v) if v.is_root => "it is the group's root",
            Some(_) if needs => "it needs the group",
            Some(_) => "it has no local subscription and no child",
            None => "it does not hold the group",
        };
        if *said != needs || (joined && !needs) {
            return Err(format!(
                "{}, its re-JOIN timer made due: it said it {} the group and sent {} JOIN, \
                 though {what}",
                self.slots[a].name,
                if *said { "needs" } else { "does not need" },
                if joined { "a" } else { "no" },
            ));
        }
        Ok(())
    }

    /// Peer `a`'s replica refresh, fenced (traces with leases): the first REPLICATE (or batch
    /// naming the group) its probed tree round sent a live replica `q`, of epoch `e`, is
    /// answered on a fork of `a` by `q`'s `Fenced` naming epoch `e + 1` (what a replica that
    /// promised a newer root answers). The root must count the fence in its statistics and
    /// stop serving: fetch again before it answers from its record (a root of `e + 1` may
    /// have committed past it), or hand the group over. Not judged when `a` is no active root.
    /// Without this, no trace delivers a fence of the current epoch (its rival roots reconfirm
    /// before their replicas refuse them), and a root that ignored one would pass.
    pub(super) fn check_fence_obeyed(
        &mut self,
        a: usize,
        round: &[(usize, Msg)],
    ) -> Result<(), String> {
        if !self.cfg.leases {
            return Ok(());
        }
        let gid = self.gid;
        let refresh = round.iter().find_map(|&(q, ref m)| {
            let epoch = match m {
                Msg::Scribe(ScribeMsg::Replicate { gid: g, epoch, .. }) if *g == gid => *epoch,
                Msg::Scribe(ScribeMsg::Replicates { items, .. }) => {
                    items.iter().find(|i| i.gid == gid)?.epoch
                }
                _ => return None,
            };
            let live = q != a && !self.slots[q].crashed && !self.slots[q].paused;
            live.then_some((q, epoch))
        });
        let Some((q, epoch)) = refresh else {
            return Ok(());
        };
        let msg = Msg::Scribe(ScribeMsg::Fenced {
            gid,
            epoch: epoch + 1,
            refused: epoch,
            rec: None,
        });
        let datagram = self
            .datagram_as(q, a, &msg)
            .map_err(|e| format!("fence probe: {e}"))?;
        let outcome = Arc::new(Mutex::new(None));
        let into = Arc::clone(&outcome);
        self.slots[a].call(
            self.now,
            Box::new(move |host, now| {
                let mut fork = host.peer().fork();
                let active = |p: &Peer| {
                    p.group_view(gid)
                        .is_some_and(|v| v.is_root && v.root_active)
                };
                let before = (active(&fork), fork.stats().fenced);
                fork.handle_datagram(now, &mut Timers::new(), &datagram);
                let after = (active(&fork), fork.stats().fenced);
                *into.lock().unwrap_or_else(|p| p.into_inner()) = Some((before, after));
                Ok(String::new())
            }),
        )?;
        let ((was_active, was), (active, fenced)) = outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or("the root did not report its fenced fork")?;
        if !was_active {
            return Ok(());
        }
        let (name, by) = (&self.slots[a].name, &self.slots[q].name);
        if active {
            return Err(format!(
                "{name}, its replica refresh (epoch {epoch}) fenced by {by} (epoch {}): it still \
                 serves as the group's active root",
                epoch + 1
            ));
        }
        if fenced != was + 1 {
            return Err(format!(
                "{name}, its replica refresh fenced by {by}: its statistics count {fenced} \
                 fences, {was} before"
            ));
        }
        Ok(())
    }

    /// Peer `a`'s fetch timer at its round's deadline, as a fetching root that some peer
    /// answered busy: each peer whose busy time has come by then (the time it named, before
    /// which it is not asked again) is asked again (`FetchState`) or given up on (no longer
    /// awaited); a peer whose busy time lies beyond the deadline (the timer is due for peers
    /// that stayed silent) is not asked. A root that kept passing such a peer over would wait
    /// for it for ever: the harness's own `reask` fires the timer as if every busy time had
    /// passed, so without this probe the boundary is never judged.
    fn check_fetch_due(&self, a: usize, probe: &Probe) -> Result<(), String> {
        let Some((before, after, sent)) = &probe.fetch_due else {
            return Ok(());
        };
        let sent = self.decode_probe(sent)?;
        let at = before.deadline.max(probe.now);
        for &(id, until) in &before.busy {
            let asked = sent.iter().any(|(to, m)| {
                self.slots[*to].handle.id == id
                    && matches!(m, Msg::Scribe(ScribeMsg::FetchState { gid, .. }) if *gid == self.gid)
            });
            if until > at {
                if asked {
                    return Err(format!(
                        "{}, its fetch timer made due at its deadline ({at} ms): it asked {} \
                         again before the busy time it named ({until} ms)",
                        self.slots[a].name,
                        self.name_of(id)
                    ));
                }
                continue;
            }
            let awaited = after.as_ref().is_some_and(|w| w.awaited.contains(&id));
            if awaited && !asked {
                return Err(format!(
                    "{}, its fetch timer made due at its deadline ({at} ms): it still awaits {}, \
                     whose busy time ({until} ms) has come, and did not ask it again",
                    self.slots[a].name,
                    self.name_of(id)
                ));
            }
        }
        Ok(())
    }

    /// The datagrams a fork sent, decoded, each with the slot it was sent to.
    pub(super) fn decode_probe(&self, sent: &[Transmit]) -> Result<Vec<(usize, Msg)>, String> {
        sent.iter()
            .map(|t| {
                let to = self.slot_at(t.dst).ok_or_else(|| {
                    format!("a probe sent a datagram to {}, no peer's address", t.dst)
                })?;
                let env = self
                    .codec
                    .decode(&t.payload)
                    .map_err(|e| format!("a probe sent an undecodable datagram: {e}"))?;
                Ok((to, env.msg))
            })
            .collect()
    }

    fn names(&self, slots: &BTreeSet<usize>) -> Vec<String> {
        slots.iter().map(|&q| self.slots[q].name.clone()).collect()
    }
}

/// Whether `m` carries group `gid`'s record at seq `seq` to a replica (alone, or among a
/// round's records).
fn replicates(m: &Msg, gid: GroupId, seq: u64) -> bool {
    match m {
        Msg::Scribe(ScribeMsg::Replicate { gid: g, rec, .. }) => *g == gid && rec.seq == seq,
        Msg::Scribe(ScribeMsg::Replicates { items, .. }) => {
            items.iter().any(|i| i.gid == gid && i.rec.seq == seq)
        }
        _ => false,
    }
}

/// Whether a tree round misjudged a group the peer needs for nothing but, perhaps, a lease
/// it confirms (`before`: no local subscription, child, root role or record): the round lets
/// such a group go (an empty group is not kept for ever), unless the peer still confirms a
/// root's lease, a promise the group holds until it runs out.
fn round_kept_idle(before: &sascribe::GroupView, probe: &Probe) -> Option<String> {
    let idle = !before.is_root
        && before.local_subs == 0
        && before.children.is_empty()
        && before.record_seq.is_none();
    if !idle {
        return None;
    }
    match (before.confirms.map(|c| c.1), &probe.round_view) {
        (Some(until), None) if until > probe.now => Some(format!(
            "dropped the group, and with it the lease it confirms until {until} ms (it could \
             then promise another root)"
        )),
        (until, Some(_)) if until.is_none_or(|t| t <= probe.now) => Some(
            "kept the group, which it needs for nothing (no local subscription, child, root \
             role, record or lease it confirms)"
                .into(),
        ),
        _ => None,
    }
}

/// Whether a tree round let a record with publications go, or rolled its seq back. A record
/// whose states all ended stays as a seq tombstone (a root that retires keeps it), so that no
/// later root of the group reuses a seq its subscribers saw.
fn round_dropped_seq(
    before: &sascribe::GroupView,
    after: Option<&sascribe::GroupView>,
) -> Option<String> {
    let seq = before.record_seq.filter(|&s| s > 0)?;
    let kept = after.and_then(|a| a.record_seq);
    (kept < Some(seq)).then(|| match kept {
        Some(k) => format!("rolled its record's seq back from {seq} to {k}"),
        None => format!("dropped its record of seq {seq} (its seq tombstone)"),
    })
}

/// What a tree round changed of the group's tree at a peer that needs the group (`before`,
/// `after` the fork's round), if anything. A peer needs the group while it has local
/// subscriptions or children, or holds event states (as root or replica); one that needs
/// nothing may let the group go (an idle root with no state retires). The harness's clocks
/// never reach a parent's, a child's or an event state's timeout, so the round keeps the
/// group, its role, its parent (while it has local subscriptions or children; an orphan may
/// gain one, its re-JOIN's first hop), its children, its local subscriptions and its record
/// as they were; the record's seq may only grow (a root takes in a newer state pushed up the
/// tree). A root whose route went elsewhere would demote, but every trace demotes it as it
/// learns of the closer peer, before its round. Without leases, an active root also stays
/// active: it would serve again only after a fetch, which a root that kept its role has no
/// cause for (with leases, a root whose replicas' confirmations lapsed fetches again).
fn round_changed_tree(
    before: &sascribe::GroupView,
    after: Option<&sascribe::GroupView>,
    leases: bool,
) -> Option<String> {
    let held = !before.etags.is_empty();
    if !held && before.local_subs == 0 && before.children.is_empty() {
        return None;
    }
    let Some(a) = after else {
        return Some("dropped the group, which it needs".into());
    };
    let mut changed = Vec::new();
    if a.is_root != before.is_root {
        changed.push("its root role");
    } else if !leases && before.root_active && !a.root_active {
        changed.push("its root role (active no longer: it fetches the state again)");
    }
    // A member with interest keeps its parent; an orphan may get one (its re-JOIN, due in
    // the round, takes its first hop as parent). One that holds a replica's record only
    // leaves the tree (a demoted root, say).
    let interest = before.local_subs > 0 || !before.children.is_empty();
    if interest && before.parent.is_some() && a.parent != before.parent {
        changed.push("its parent");
    }
    if a.children != before.children {
        changed.push("its children");
    }
    if a.local_subs != before.local_subs {
        changed.push("its local subscriptions");
    }
    if held && (a.record_seq < before.record_seq || a.etags.is_empty()) {
        changed.push("the record it holds (dropped or rolled back)");
    }
    (!changed.is_empty()).then(|| format!("changed {}", changed.join(" and ")))
}
