//! Production overlay messages → the trace's abstract messages (MAPPING.md, "Production
//! messages → abstract messages" and "Silent messages"), request naming (`origin/who#n`), and
//! the ETag ↔ seq table.

use super::cluster::Probe;
use super::{value_of, values_of, Cluster, EXPIRY_UNIT_SECS};
use crate::{AbstractMsg, EntryProj, PeerState, RecordProj, RootProj, StateProj, SubsProj};
use sascribe::pastry::Hop;
use sascribe::wire::{Latest, Msg, PublishReply, Routed, ScribeMsg, REJOIN_ID_BIT};
use sascribe::{ETag, GroupId, NodeId};
use std::collections::BTreeSet;

/// What the harness does with a captured datagram of a kind the model does not have.
#[derive(PartialEq, Eq)]
pub(super) enum Policy {
    /// A modelled kind: held until a `deliver` step names it.
    Modelled,
    /// Delivered at once, in FIFO order (overlay maintenance, root record fetch).
    Immediate,
    /// Never delivered (tree maintenance driven by timers the model abstracts).
    Held,
}

/// ETags no root mints: they stand for a publication that does not exist (yet).
const UNMINTED: u64 = 0xE7A6_0000_0000_0000;

impl Cluster {
    /// The ETag a `SIP-If-Match` naming seq `seq` carries.
    pub(super) fn etag_for(&self, seq: u8) -> ETag {
        self.seq_etag
            .get(&seq)
            .copied()
            .unwrap_or(ETag(UNMINTED | u64::from(seq)))
    }

    /// Records that the root minted `e` for `seq`; returns the seq the table holds for `e`
    /// (the first one seen: an ETag reused for another seq keeps mapping to the first).
    pub(super) fn learn_etag(&mut self, e: ETag, seq: u64) -> u8 {
        let seq = seq.min(255) as u8;
        let s = *self.etag_seq.entry(e).or_insert(seq);
        self.seq_etag.entry(s).or_insert(e);
        s
    }

    pub(super) fn seq_of_etag(&self, e: ETag) -> u8 {
        match self.etag_seq.get(&e) {
            Some(&s) => s,
            None if e.0 >> 16 == UNMINTED >> 16 => e.0 as u8,
            None => u8::MAX,
        }
    }

    /// The trace name of a JOIN from `origin` with production request id `join_id`. A local
    /// subscription's JOIN takes the name its SUBSCRIBE left unassigned. A tree-repair
    /// re-JOIN's (`REJOIN_ID_BIT`) takes the origin's next request number when first seen (a
    /// new request in the model: its parent died again, say); its retransmissions carry the
    /// same id, and so keep the name, as do the answers to it.
    fn name_join(&mut self, origin: NodeId, join_id: u64) -> String {
        let Some(o) = self.slot_of(origin) else {
            return "?".into();
        };
        if let Some(n) = self.join_names.get(&(origin.0, join_id)) {
            return n.clone();
        }
        if join_id & REJOIN_ID_BIT != 0 {
            let s = &mut self.slots[o];
            let n = s.counter;
            s.counter += 1;
            s.rejoin = Some(n);
            let name = format!("{0}/{0}#{n}", s.name);
            self.join_names.insert((origin.0, join_id), name.clone());
            return name;
        }
        match self.sub_unassigned[o].pop_front() {
            Some((u, name)) => {
                self.join_names.insert((origin.0, join_id), name.clone());
                self.join_ua.insert((origin.0, join_id), u);
                name
            }
            None => format!("{}/?{join_id:x}", self.slots[o].name),
        }
    }

    /// The trace name of a publication from `origin` with production nonce `nonce`.
    fn name_pub(&mut self, origin: NodeId, nonce: u64) -> String {
        if let Some(n) = self.nonce_names.get(&(origin.0, nonce)) {
            return n.clone();
        }
        let Some(o) = self.slot_of(origin) else {
            return "?".into();
        };
        match self.pub_unassigned[o].pop_front() {
            Some((_, name)) => {
                self.nonce_names.insert((origin.0, nonce), name.clone());
                name
            }
            None => format!("{}/?{nonce:x}", self.slots[o].name),
        }
    }

    /// Seq and values of a state (seq 0, nothing published yet, is the model's "no state").
    fn set_latest(a: &mut AbstractMsg, l: &Latest) {
        a.seq = (l.seq > 0).then_some(l.seq.min(255) as u8);
        a.values = l.body.as_deref().and_then(values_of);
    }

    /// Classifies a datagram `from` → `to` and gives its abstract form when it is modelled.
    pub(super) fn abstract_of(
        &mut self,
        from: usize,
        to: usize,
        msg: &Msg,
    ) -> (Policy, Option<AbstractMsg>) {
        let mut a = AbstractMsg {
            kind: String::new(),
            from: self.slots[from].name.clone(),
            to: self.slots[to].name.clone(),
            gid: Some(self.cfg.gid),
            seq: None,
            value: None,
            values: None,
            req: None,
            if_match: None,
            epoch: None,
        };
        let ours = |g: &GroupId| *g == self.gid;
        match msg {
            Msg::Routed {
                body:
                    Routed::Join {
                        gid,
                        origin,
                        join_id,
                        carried,
                        ..
                    },
                ..
            } if ours(gid) => {
                a.kind = "join".into();
                a.req = Some(self.name_join(origin.id, *join_id));
                if let Some(c) = carried.as_ref().filter(|c| c.seq > 0) {
                    Self::set_latest(&mut a, c);
                }
            }
            Msg::Routed {
                body:
                    Routed::Publish {
                        gid,
                        req,
                        body,
                        if_match,
                        ..
                    },
                ..
            } if ours(gid) => {
                a.kind = "publish_fwd".into();
                a.req = Some(self.name_pub(req.origin, req.nonce));
                a.value = body.as_deref().and_then(value_of);
                a.if_match = if_match.map(|e| self.seq_of_etag(e));
            }
            Msg::Scribe(m) => return self.abstract_scribe(from, to, m, a),
            _ => return (Policy::Immediate, None),
        }
        (Policy::Modelled, Some(a))
    }

    fn abstract_scribe(
        &mut self,
        from: usize,
        to: usize,
        msg: &ScribeMsg,
        mut a: AbstractMsg,
    ) -> (Policy, Option<AbstractMsg>) {
        let ours = |g: &GroupId| *g == self.gid;
        match msg {
            ScribeMsg::Provisional { gid, .. } if ours(gid) => {
                a.kind = "pack".into();
                a.gid = None;
            }
            ScribeMsg::JoinAck {
                gid,
                join_id,
                latest,
                path,
            } if ours(gid) => {
                a.kind = "ack".into();
                let origin = path.first().map_or(NodeId(0), |h| h.id);
                a.req = Some(self.name_join(origin, *join_id));
                Self::set_latest(&mut a, latest);
            }
            ScribeMsg::Notify { gid, latest } if ours(gid) => {
                a.kind = "multicast".into();
                Self::set_latest(&mut a, latest);
            }
            ScribeMsg::PublishReply { req, reply } => {
                a.kind = "publish_reply".into();
                a.req = Some(self.name_pub(req.origin, req.nonce));
                if let PublishReply::Ok(o) = reply {
                    a.seq = Some(o.seq.min(255) as u8);
                    // The ETag the root minted for this change (MAPPING.md, "ETags"): learnt
                    // here too, for a root without live replicas whose answer goes to a peer
                    // that crashed (no REPLICATE and no 200 carries it then).
                    if let Some(e) = o.etag {
                        self.learn_etag(e, o.seq);
                    }
                }
            }
            ScribeMsg::Replicate {
                gid, rec, epoch, ..
            } if ours(gid) => {
                self.rev_seq.insert((from, rec.rev), rec.seq);
                for s in rec.states.iter().filter(|s| s.created > 0) {
                    // The ETag the root minted for the change that last set this state
                    // (MAPPING.md, "ETags"); a state adopted from the tree (`created` 0)
                    // has a tag nobody was given, the model's anonymous tag 0.
                    self.learn_etag(s.etag, s.changed);
                }
                if rec.seq == 0 {
                    // An empty record (a root that has nothing yet): the model has no record.
                    return (Policy::Immediate, None);
                }
                a.kind = "replicate".into();
                a.seq = Some(rec.seq.min(255) as u8);
                a.values = rec.latest().body.as_deref().and_then(values_of);
                if self.cfg.leases {
                    a.epoch = Some((*epoch).min(255) as u8);
                }
            }
            ScribeMsg::ReplicateAck { gid, rev, .. } if ours(gid) => {
                let seq = self.rev_seq.get(&(to, *rev)).copied().unwrap_or(0);
                if seq == 0 {
                    return (Policy::Immediate, None);
                }
                a.kind = "replica_ack".into();
                a.seq = Some(seq.min(255) as u8);
            }
            ScribeMsg::FetchState { gid, epoch } if ours(gid) => {
                if from == self.first_root {
                    // The group's first root creates its role lazily, when the first request
                    // reaches it, and fetches from replicas that hold nothing yet; the model's
                    // first root holds the role from the start (MAPPING.md, "Silent messages").
                    return (Policy::Immediate, None);
                }
                a.kind = "fetch_state".into();
                a.epoch = Some((*epoch).min(255) as u8);
            }
            ScribeMsg::FetchReply {
                gid,
                epoch,
                busy_for,
                ..
            } if ours(gid) && *busy_for > 0 => {
                if to == self.first_root {
                    return (Policy::Immediate, None);
                }
                a.kind = "fetch_busy".into();
                a.epoch = Some((*epoch).min(255) as u8);
            }
            ScribeMsg::FetchReply {
                gid, rec, epoch, ..
            } if ours(gid) => {
                if let Some(rec) = rec {
                    for s in rec.states.iter().filter(|s| s.created > 0) {
                        self.learn_etag(s.etag, s.changed);
                    }
                }
                if to == self.first_root {
                    return (Policy::Immediate, None);
                }
                a.kind = "fetch_reply".into();
                a.epoch = Some((*epoch).min(255) as u8);
                if let Some(rec) = rec.as_ref().filter(|r| r.seq > 0) {
                    a.seq = Some(rec.seq.min(255) as u8);
                    a.values = rec.latest().body.as_deref().and_then(values_of);
                }
            }
            ScribeMsg::Fenced {
                gid, refused, rec, ..
            } if ours(gid) && self.cfg.leases => {
                if let Some(rec) = rec {
                    for s in rec.states.iter().filter(|s| s.created > 0) {
                        self.learn_etag(s.etag, s.changed);
                    }
                }
                a.kind = "fenced".into();
                a.epoch = Some((*refused).min(255) as u8);
                if let Some(rec) = rec.as_ref().filter(|r| r.seq > 0) {
                    a.seq = Some(rec.seq.min(255) as u8);
                    a.values = rec.latest().body.as_deref().and_then(values_of);
                }
            }
            ScribeMsg::NotRoot { gid, .. } if ours(gid) && self.cfg.leases => {
                a.kind = "not_root".into();
            }
            ScribeMsg::Leave { .. }
            | ScribeMsg::Heartbeats { .. }
            | ScribeMsg::HeartbeatAcks { .. }
                if !self.cfg.tree_maintenance =>
            {
                return (Policy::Held, None)
            }
            ScribeMsg::Leave { gid } if ours(gid) => {
                a.kind = "leave".into();
            }
            ScribeMsg::Heartbeats { beats } => {
                let Some(b) = beats.iter().find(|b| ours(&b.gid)) else {
                    return (Policy::Held, None);
                };
                a.kind = "beat".into();
                a.seq = (b.seq > 0).then_some(b.seq.min(255) as u8);
            }
            ScribeMsg::HeartbeatAcks { acks, left } => {
                if left.iter().any(ours) {
                    a.kind = "leave".into();
                } else if let Some(b) = acks.iter().find(|b| ours(&b.gid)) {
                    a.kind = "beat_ack".into();
                    a.seq = (b.seq > 0).then_some(b.seq.min(255) as u8);
                } else {
                    return (Policy::Held, None);
                }
            }
            _ => return (Policy::Immediate, None),
        }
        (Policy::Modelled, Some(a))
    }
}

/// What the harness reads from one production peer for its projection.
pub(super) struct RawState {
    pub view: Option<sascribe::GroupView>,
    pub committed: Option<sascribe::RecordView>,
    pub applied: Option<sascribe::RecordView>,
    /// The ids in its leaf set.
    pub leaves: Vec<NodeId>,
    /// Its learnt routing table: each entry's id, and whether it sits in the slot it fits.
    pub table: Vec<(NodeId, bool)>,
    /// How many slots of it the operator's gauge reports filled (`routing_table_size`).
    pub table_gauge: usize,
    /// The peer's clock when read (deadlines are its clock's).
    pub now: sascribe::Millis,
    /// A deadline of the group further ahead than the interval that sets it, named.
    pub deadline_beyond: Option<String>,
    /// Its maintenance, run on forks with its deadlines due.
    pub probe: Probe,
    /// As a fetching root: its round's epoch, fetch deadline, and each peer it awaits that
    /// answered busy, with the time before which it is not asked again.
    pub busy_waits: Option<sascribe::event::BusyWaits>,
    /// Its statistics.
    pub stats: sascribe::Stats,
    /// Where its own routing sends each key it was asked about (no peer excluded), over the
    /// routing table loaded into it.
    pub routes: Vec<(u128, Hop)>,
    /// The same over the table it learnt itself (on a copy of its overlay without the loaded
    /// table).
    pub learnt_routes: Vec<(u128, Hop)>,
}

/// Where `overlay` routes each of `keys`, no peer excluded.
fn routes_of(overlay: &sascribe::pastry::Overlay, keys: &[u128]) -> Vec<(u128, Hop)> {
    keys.iter().map(|&k| (k, overlay.route(k, None))).collect()
}

impl RawState {
    /// Reads the production views of group `gid` at `p`, and its routes for `keys`.
    pub(super) fn read(
        p: &sascribe::Peer,
        gid: GroupId,
        now: sascribe::Millis,
        k: usize,
        keys: &[u128],
    ) -> Self {
        RawState {
            now,
            view: p.group_view(gid),
            committed: p.record_view(gid),
            applied: p.applied_record_view(gid),
            leaves: p.overlay().leaf.iter().map(|e| e.handle.id).collect(),
            table: super::overlay::entries_of(p.overlay(), p.id()),
            table_gauge: p.overlay().rt.filled(),
            deadline_beyond: p.deadline_beyond(gid, now),
            probe: Probe::run(p, gid, now, k),
            busy_waits: p.busy_waits(gid),
            stats: p.stats().clone(),
            routes: routes_of(p.overlay(), keys),
            learnt_routes: if keys.is_empty() {
                Vec::new()
            } else {
                let mut learnt = p.overlay().clone();
                learnt.set_explicit_table(None);
                routes_of(&learnt, keys)
            },
        }
    }

    /// The live states' ETags of a root that may expire none of them now, the model's guard on
    /// expiry (`expirable`): a root still fetching its replicas' records, or one whose change
    /// waits on its replicas' acknowledgements (its applied record is ahead of its committed
    /// one; one expiry is one commit). `None` at any other peer.
    pub(super) fn expiry_disabled(&self) -> Option<Vec<ETag>> {
        let v = self.view.as_ref().filter(|v| v.is_root)?;
        let seq = |r: &Option<sascribe::RecordView>| r.as_ref().map(|r| r.seq);
        let pending = seq(&self.applied) != seq(&self.committed);
        (!v.root_active || pending).then(|| v.etags.clone())
    }

    /// What the operator's view of the group (the status page's) says against the record it
    /// summarises: the live states' ETags, in creation order, and the record's seq. `None`
    /// when they agree, else what differs.
    pub(super) fn view_disagrees(&self) -> Option<String> {
        let v = self.view.as_ref()?;
        let held: Vec<ETag> = self
            .committed
            .as_ref()
            .map(|r| r.states.iter().map(|s| s.etag).collect())
            .unwrap_or_default();
        let seq = self.committed.as_ref().map(|r| r.seq);
        if v.etags != held {
            return Some(format!(
                "its group view lists the ETags {:?}, its record holds {held:?}",
                v.etags
            ));
        }
        (v.record_seq != seq).then(|| {
            format!(
                "its group view gives the record's seq as {:?}, the record has {seq:?}",
                v.record_seq
            )
        })
    }
}

impl Cluster {
    /// The abstract etag of a production state: the seq the ETag table holds for it (learned
    /// from the root's REPLICATEs and 200s), 0 for one nobody was told (a state adopted from the
    /// tree, like the model's anonymous state).
    fn abstract_etag(&self, e: ETag) -> u8 {
        self.etag_seq.get(&e).copied().unwrap_or(0)
    }

    /// The abstract expiry of a state whose deadline is `at` on a clock that reads `now`: the
    /// time left, in expiry units, rounded up (a peer's clock moves hours at most in a trace,
    /// a unit is a week, so this is the expiry the root granted, as long as its deadline was
    /// set from it).
    fn expiry_units(at: sascribe::Millis, now: sascribe::Millis) -> u8 {
        let unit = sascribe::Millis::from(EXPIRY_UNIT_SECS) * 1_000;
        let left = at.saturating_sub(now);
        u8::try_from(left.div_ceil(unit)).unwrap_or(u8::MAX)
    }

    fn states_of(&self, r: &sascribe::RecordView, now: sascribe::Millis) -> Vec<StateProj> {
        let mut v: Vec<StateProj> = r
            .states
            .iter()
            .map(|s| StateProj {
                etag: self.abstract_etag(s.etag),
                values: values_of(&s.body).unwrap_or_default(),
                expires: Self::expiry_units(s.expires_at, now),
            })
            .collect();
        v.sort();
        v
    }

    pub(super) fn name_of(&self, id: NodeId) -> String {
        self.slot_of(id)
            .map_or_else(|| format!("{id:?}"), |q| self.slots[q].name.clone())
    }

    /// The abstract projection of what peer `raw` holds (MAPPING.md, "Projected state").
    pub(super) fn project_raw(&self, raw: &RawState) -> PeerState {
        let Some(v) = &raw.view else {
            return PeerState::default();
        };
        let seq = |s: u64| s.min(255) as u8;
        let root = raw
            .applied
            .as_ref()
            .filter(|r| v.is_root && r.seq > 0)
            .map(|r| RootProj {
                seq: seq(r.seq),
                states: self.states_of(r, raw.now),
                committed: raw
                    .committed
                    .as_ref()
                    .filter(|c| c.seq > 0)
                    .map(|c| EntryProj {
                        seq: seq(c.seq),
                        values: {
                            let all: BTreeSet<u8> = self
                                .states_of(c, raw.now)
                                .into_iter()
                                .flat_map(|s| s.values)
                                .collect();
                            (!all.is_empty()).then(|| all.into_iter().collect())
                        },
                    }),
            });
        let replica = raw
            .committed
            .as_ref()
            .filter(|r| !v.is_root && r.seq > 0)
            .map(|r| RecordProj {
                seq: seq(r.seq),
                states: self.states_of(r, raw.now),
            });
        let mut children: Vec<String> = v.children.iter().map(|c| self.name_of(*c)).collect();
        children.sort();
        PeerState {
            root,
            replica,
            latest: seq(v.latest_seq),
            parent: v.parent.map(|p| self.name_of(p)),
            children,
            subs: SubsProj {
                pending: (v.local_subs - v.accepted_subs).min(255) as u8,
                active: v.accepted_subs.min(255) as u8,
            },
        }
    }
}
