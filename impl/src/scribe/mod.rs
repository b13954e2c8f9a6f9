//! sa-Scribe: Scribe trees made SIP-aware.
//!
//! * **Subscribe**: a JOIN is routed towards `gid`; each peer on the way grafts the previous
//!   hop as a child (reverse-path forwarding), answers it with a pACK and adds the newest state
//!   it knows to the JOIN. The JOIN always continues up to the root — a peer already in the
//!   tree forwards it to its parent instead of answering from its own, possibly stale, state —
//!   and the root's ACK (with its committed state: the first NOTIFY) or nACK (no state)
//!   retraces the JOIN's reverse path to the origin; every peer on the way learns the state.
//! * **Publish** ([`root`]): routed to the root, which checks `SIP-If-Match`, decides the
//!   expiry, stamps the next seq, replicates the record to its `k` nearest leaf-set peers and,
//!   only when all acknowledged, answers the publisher and multicasts down the tree.
//! * **Repair**: parents heartbeat children (children acknowledge with their seq so a parent
//!   re-sends missed state); an orphan re-JOINs carrying its latest state; a new root first
//!   fetches the replicas' records and keeps the highest seq it hears.
//!
//! Members deliver a state to a local subscriber only when its seq is strictly greater than
//! the last one that subscriber got, and never before the subscriber's ACK.

pub mod root;

use crate::config::Config;
use crate::event::{Event, SubHandle, SubRejectReason, SubscribeError, TerminateReason};
use crate::event::{GroupView, PubHandle, PublishError};
use crate::id::{GroupId, NodeId};
use crate::io::Outbox;
use crate::mutants::Mutant;
use crate::pastry::{Hop, Overlay};
use crate::rng::SplitMix64;
use crate::wire::{ETag, Latest, Msg, NodeHandle, PubReqId, PublishReply, Routed};
use crate::Millis;
use bytes::Bytes;
use root::{Record, RootRole};
use std::collections::{BTreeMap, VecDeque};

/// Longest reverse path a JOIN may collect (hops up the tree or the overlay).
pub const MAX_PATH: usize = crate::peer::MAX_HOPS as usize;
/// A re-JOIN is forced when a heartbeat reports a tree deeper than this (breaks cycles).
pub const MAX_DEPTH: u8 = 48;

/// Everything a handler may touch besides the sa-Scribe state.
pub(crate) struct Ctx<'a> {
    pub now: Millis,
    pub cfg: &'a Config,
    pub out: &'a mut Outbox,
    pub overlay: &'a Overlay,
    pub rng: &'a mut SplitMix64,
    pub events: &'a mut VecDeque<Event>,
}

impl Ctx<'_> {
    pub fn me(&self) -> NodeHandle {
        self.out.me
    }
    fn route_to_self(&mut self, gid: GroupId, body: Routed) {
        let me = self.out.me;
        self.out.loopback.push_back((
            me,
            Msg::Routed {
                key: gid.0,
                hops: 0,
                body,
            },
        ));
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Child {
    pub handle: NodeHandle,
    pub last_ack: Millis,
}

/// Per-group state of a peer (member, root, or replica holder).
#[derive(Debug, Default)]
pub(crate) struct Group {
    pub latest: Latest,
    pub parent: Option<NodeHandle>,
    pub parent_heard: Millis,
    pub depth: u8,
    pub children: Vec<Child>,
    pub subs: Vec<SubHandle>,
    pub rejoin_at: Option<Millis>,
    pub root: Option<Box<RootRole>>,
    /// Root record (authoritative while the root role is active) or replica copy.
    pub record: Option<Record>,
}

impl Group {
    fn has_interest(&self) -> bool {
        !self.subs.is_empty() || !self.children.is_empty()
    }
    fn add_child(&mut self, h: NodeHandle, now: Millis) {
        match self.children.iter_mut().find(|c| c.handle.id == h.id) {
            Some(c) => {
                c.handle = h;
                c.last_ack = now;
            }
            None => self.children.push(Child {
                handle: h,
                last_ack: now,
            }),
        }
    }
}

#[derive(Debug)]
pub(crate) struct LocalSub {
    gid: GroupId,
    accepted: bool,
    provisional: bool,
    join_id: u64,
    deadline: Millis,
    retry_at: Millis,
    expires_at: Millis,
    granted: u32,
    last_seq: u64,
}

#[derive(Debug)]
pub(crate) struct PendingPub {
    handle: PubHandle,
    gid: GroupId,
    body: Option<Bytes>,
    if_match: Option<ETag>,
    expires: Option<u32>,
    deadline: Millis,
    retry_at: Millis,
}

/// sa-Scribe state of one peer.
#[derive(Debug)]
pub(crate) struct Scribe {
    pub groups: BTreeMap<GroupId, Group>,
    subs: BTreeMap<SubHandle, LocalSub>,
    pubs: BTreeMap<u64, PendingPub>,
    /// Groups whose root role is fetching replica state.
    activating: Vec<GroupId>,
    next_tick: Millis,
    next_refresh: Millis,
    /// Lower bound of the local requests' deadlines (retries, timeouts, expiries).
    next_op: Millis,
    scratch: Vec<NodeHandle>,
}

fn secs(s: u32) -> Millis {
    u64::from(s) * 1000
}

impl Scribe {
    pub fn new(cfg: &Config, now: Millis) -> Self {
        Scribe {
            groups: BTreeMap::new(),
            subs: BTreeMap::new(),
            pubs: BTreeMap::new(),
            activating: Vec::new(),
            next_tick: now + cfg.heartbeat_interval,
            next_refresh: now + cfg.replica_refresh,
            next_op: Millis::MAX,
            scratch: Vec::new(),
        }
    }

    // ----------------------------------------------------------------- local API

    pub fn subscribe(
        &mut self,
        ctx: &mut Ctx<'_>,
        gid: GroupId,
        handle: SubHandle,
        expires: u32,
    ) -> Result<u32, SubscribeError> {
        if self.subs.contains_key(&handle) {
            return Err(SubscribeError::DuplicateHandle);
        }
        if expires < ctx.cfg.sub_min_expires {
            return Err(SubscribeError::IntervalTooBrief {
                min: ctx.cfg.sub_min_expires,
            });
        }
        let granted = expires.min(ctx.cfg.sub_max_expires);
        let join_id = ctx.rng.nonzero();
        let now = ctx.now;
        self.subs.insert(
            handle,
            LocalSub {
                gid,
                accepted: false,
                provisional: false,
                join_id,
                deadline: now + ctx.cfg.request_timeout,
                retry_at: now + ctx.cfg.request_retry,
                expires_at: now + secs(granted),
                granted,
                last_seq: 0,
            },
        );
        self.next_op = self.next_op.min(now + ctx.cfg.request_retry);
        self.groups.entry(gid).or_default().subs.push(handle);
        Self::send_join(ctx, gid, join_id, None);
        Ok(granted)
    }

    fn send_join(ctx: &mut Ctx<'_>, gid: GroupId, join_id: u64, carried: Option<Latest>) {
        let origin = ctx.me();
        ctx.route_to_self(
            gid,
            Routed::Join {
                gid,
                origin,
                join_id,
                graft: true,
                carried,
                path: Vec::new(),
            },
        );
    }

    pub fn refresh(
        &mut self,
        ctx: &mut Ctx<'_>,
        handle: SubHandle,
        expires: u32,
    ) -> Result<u32, SubscribeError> {
        if expires == 0 {
            self.unsubscribe(ctx, handle)?;
            return Ok(0);
        }
        if expires < ctx.cfg.sub_min_expires {
            return Err(SubscribeError::IntervalTooBrief {
                min: ctx.cfg.sub_min_expires,
            });
        }
        let sub = self
            .subs
            .get_mut(&handle)
            .ok_or(SubscribeError::UnknownHandle)?;
        let granted = expires.min(ctx.cfg.sub_max_expires);
        sub.granted = granted;
        sub.expires_at = ctx.now + secs(granted);
        self.next_op = self.next_op.min(sub.expires_at);
        Ok(granted)
    }

    pub fn unsubscribe(
        &mut self,
        ctx: &mut Ctx<'_>,
        handle: SubHandle,
    ) -> Result<(), SubscribeError> {
        if ctx.cfg.mutant_on(Mutant::UnsubscribeIgnored) {
            return self
                .subs
                .contains_key(&handle)
                .then_some(())
                .ok_or(SubscribeError::UnknownHandle);
        }
        let sub = self
            .subs
            .remove(&handle)
            .ok_or(SubscribeError::UnknownHandle)?;
        self.detach_sub(ctx, sub.gid, handle);
        Ok(())
    }

    fn detach_sub(&mut self, ctx: &mut Ctx<'_>, gid: GroupId, handle: SubHandle) {
        if let Some(g) = self.groups.get_mut(&gid) {
            g.subs.retain(|h| *h != handle);
        }
        self.prune(ctx, gid);
    }

    #[allow(clippy::too_many_arguments)]
    pub fn publish(
        &mut self,
        ctx: &mut Ctx<'_>,
        gid: GroupId,
        handle: PubHandle,
        body: Option<Bytes>,
        if_match: Option<ETag>,
        expires: Option<u32>,
    ) {
        if body.as_ref().is_some_and(|b| b.len() > ctx.cfg.max_body) {
            ctx.events.push_back(Event::PublishFailed {
                req: handle,
                reason: PublishError::TooLarge,
            });
            return;
        }
        let nonce = ctx.rng.nonzero();
        let p = PendingPub {
            handle,
            gid,
            body,
            if_match,
            expires,
            deadline: ctx.now + ctx.cfg.request_timeout,
            retry_at: ctx.now + ctx.cfg.request_retry,
        };
        Self::send_publish(ctx, nonce, &p);
        self.next_op = self.next_op.min(p.retry_at);
        self.pubs.insert(nonce, p);
    }

    fn send_publish(ctx: &mut Ctx<'_>, nonce: u64, p: &PendingPub) {
        let origin = ctx.me();
        let body = Routed::Publish {
            gid: p.gid,
            req: PubReqId {
                origin: origin.id,
                nonce,
            },
            origin,
            body: p.body.clone(),
            if_match: p.if_match,
            expires: p.expires,
        };
        ctx.route_to_self(p.gid, body);
    }

    // ----------------------------------------------------------------- routed upcalls

    /// Forward upcall of a JOIN at a non-root peer (or at its origin). Grafts the previous
    /// hop as a child and answers it with a pACK, adds the newest state known here to the
    /// JOIN, and returns where it goes next: up the tree to our parent, or (not in the tree
    /// yet) to the overlay's next hop `route_next`, which becomes our parent. `None` drops it.
    pub fn forward_join(
        &mut self,
        ctx: &mut Ctx<'_>,
        prev: NodeHandle,
        join: &mut Routed,
        route_next: NodeHandle,
    ) -> Option<NodeHandle> {
        let Routed::Join {
            gid,
            join_id,
            graft,
            carried,
            path,
            ..
        } = join
        else {
            return Some(route_next);
        };
        if path.len() >= MAX_PATH {
            return None;
        }
        let me = ctx.me();
        let now = ctx.now;
        path.push(me);
        let g = self.groups.entry(*gid).or_default();
        if *graft && prev.id != me.id {
            g.add_child(prev, now);
            let msg = Msg::Provisional {
                gid: *gid,
                join_id: *join_id,
            };
            ctx.out.send(&prev, msg);
        }
        if ctx.cfg.mutant_on(Mutant::JoinDropsState) {
            *carried = None;
        } else if g.latest.seq > carried.as_ref().map_or(0, |c| c.seq) {
            *carried = Some(g.latest.clone());
        }
        if g.root.is_some() {
            // Root being handed over: pass the JOIN on without attaching ourselves.
            *graft = false;
            return Some(route_next);
        }
        *graft = true;
        if ctx.cfg.mutant_on(Mutant::AnswerFromIntermediate) && g.latest.seq > 0 && !path.is_empty()
        {
            // Seeded bug: answer from this peer's own, possibly stale, state.
            let mut back = path.clone();
            back.pop();
            if let Some(to) = back.last().copied() {
                let msg = Msg::JoinAck {
                    gid: *gid,
                    join_id: *join_id,
                    latest: g.latest.clone(),
                    path: back,
                };
                ctx.out.send(&to, msg);
                return None;
            }
        }
        match g.parent {
            // Up the tree (unless that would bounce straight back: a two-cycle).
            Some(p) if p.id != prev.id => Some(p),
            _ => {
                g.parent = Some(route_next);
                g.parent_heard = now;
                g.rejoin_at = None;
                Some(route_next)
            }
        }
    }

    /// A JOIN reached the root (this peer).
    pub fn deliver_join(&mut self, ctx: &mut Ctx<'_>, prev: NodeHandle, join: Routed) {
        let Routed::Join { gid, graft, .. } = &join else {
            return;
        };
        let gid = *gid;
        self.ensure_root(ctx, gid);
        let g = self
            .groups
            .get_mut(&gid)
            .expect("ensure_root creates the group");
        if *graft && prev.id != ctx.me().id {
            g.add_child(prev, ctx.now);
        }
        self.root_request(ctx, gid, join);
    }

    /// A PUBLISH reached the root (this peer).
    pub fn deliver_publish(&mut self, ctx: &mut Ctx<'_>, publish: Routed) {
        let Routed::Publish { gid, .. } = &publish else {
            return;
        };
        let gid = *gid;
        self.ensure_root(ctx, gid);
        self.root_request(ctx, gid, publish);
    }

    // ----------------------------------------------------------------- direct messages

    pub fn handle(&mut self, ctx: &mut Ctx<'_>, from: NodeHandle, msg: Msg) {
        match msg {
            Msg::Provisional { gid, join_id } => {
                if let Some((h, s)) = self.pending_sub(gid, join_id) {
                    if !s.provisional {
                        s.provisional = true;
                        ctx.events.push_back(Event::SubProvisional { handle: h });
                    }
                }
            }
            Msg::JoinAck {
                gid,
                join_id,
                latest,
                mut path,
            } => {
                // Retrace the reverse path; every peer on it learns the state.
                let Some(next) = self.retrace(ctx, gid, &mut path, &latest, true) else {
                    return;
                };
                if let Some(next) = next {
                    let msg = Msg::JoinAck {
                        gid,
                        join_id,
                        latest,
                        path,
                    };
                    ctx.out.send(&next, msg);
                    return;
                }
                let mut accepted = None;
                if let Some((h, s)) = self.pending_sub(gid, join_id) {
                    s.accepted = true;
                    ctx.events.push_back(Event::SubAccepted {
                        handle: h,
                        expires: s.granted,
                    });
                    accepted = Some(h);
                }
                if self.groups.contains_key(&gid) {
                    self.apply_latest(ctx, gid, latest);
                    if let Some(h) = accepted {
                        self.deliver_to(ctx, gid, h);
                    }
                }
            }
            Msg::JoinNack {
                gid,
                join_id,
                latest,
                mut path,
            } => {
                // An expiry's seq (no body) is learnt like an ACK's state: members below are
                // told that the publication is gone.
                let expired = latest.seq > 0 && latest.body.is_none();
                let Some(next) = self.retrace(ctx, gid, &mut path, &latest, expired) else {
                    return;
                };
                if let Some(next) = next {
                    let msg = Msg::JoinNack {
                        gid,
                        join_id,
                        latest,
                        path,
                    };
                    ctx.out.send(&next, msg);
                    return;
                }
                if expired && self.groups.contains_key(&gid) {
                    self.apply_latest(ctx, gid, latest);
                }
                if let Some((h, _)) = self.pending_sub(gid, join_id) {
                    self.subs.remove(&h);
                    ctx.events.push_back(Event::SubRejected {
                        handle: h,
                        reason: SubRejectReason::NoState,
                    });
                    self.detach_sub(ctx, gid, h);
                }
            }
            Msg::Notify { gid, latest } => self.on_notify(ctx, gid, latest),
            Msg::Heartbeat {
                gid,
                seq: parent_seq,
                depth,
            } => {
                let now = ctx.now;
                match self.groups.get_mut(&gid) {
                    Some(g) if g.parent.is_some_and(|p| p.id == from.id) => {
                        g.parent_heard = now;
                        g.depth = depth.saturating_add(1);
                        if g.depth > MAX_DEPTH {
                            // Probably a cycle: leave the parent and re-JOIN.
                            g.parent = None;
                            g.rejoin_at = Some(now);
                            ctx.out.send(&from, Msg::Leave { gid });
                        } else {
                            let seq = g.latest.seq;
                            ctx.out.send(&from, Msg::HeartbeatAck { gid, seq });
                            if parent_seq < seq {
                                // We know a newer state than our parent (e.g. after a partition
                                // or a root change): push it up so the root keeps the highest.
                                ctx.out.send(
                                    &from,
                                    Msg::Notify {
                                        gid,
                                        latest: g.latest.clone(),
                                    },
                                );
                            }
                        }
                    }
                    _ => ctx.out.send(&from, Msg::Leave { gid }),
                }
            }
            Msg::HeartbeatAck { gid, seq } => {
                if let Some(g) = self.groups.get_mut(&gid) {
                    if let Some(c) = g.children.iter_mut().find(|c| c.handle.id == from.id) {
                        c.last_ack = ctx.now;
                        if seq < g.latest.seq {
                            ctx.out.send(
                                &from,
                                Msg::Notify {
                                    gid,
                                    latest: g.latest.clone(),
                                },
                            );
                        }
                    }
                }
            }
            Msg::Leave { gid } => {
                if let Some(g) = self.groups.get_mut(&gid) {
                    g.children.retain(|c| c.handle.id != from.id);
                    if g.parent.is_some_and(|p| p.id == from.id) {
                        // Our parent left the tree (or the overlay): re-JOIN at the next tick.
                        g.parent = None;
                        g.rejoin_at = Some(ctx.now);
                    }
                    self.prune(ctx, gid);
                }
            }
            Msg::PublishReply { req, reply } => {
                if req.origin != ctx.me().id {
                    return;
                }
                if let Some(p) = self.pubs.remove(&req.nonce) {
                    let ev = match reply {
                        PublishReply::Ok(o) => Event::Published {
                            req: p.handle,
                            etag: o.etag,
                            expires: o.expires,
                            seq: o.seq,
                        },
                        PublishReply::PreconditionFailed => Event::PublishFailed {
                            req: p.handle,
                            reason: PublishError::PreconditionFailed,
                        },
                        PublishReply::IntervalTooBrief { min } => Event::PublishFailed {
                            req: p.handle,
                            reason: PublishError::IntervalTooBrief { min },
                        },
                        PublishReply::BadRequest => Event::PublishFailed {
                            req: p.handle,
                            reason: PublishError::BadRequest,
                        },
                    };
                    ctx.events.push_back(ev);
                }
            }
            Msg::Replicate { gid, rec } => self.on_replicate(ctx, from, gid, rec),
            Msg::NotRoot { gid, .. } => self.on_not_root(ctx, gid),
            Msg::ReplicateAck { gid, rev } => self.on_replicate_ack(ctx, from, gid, rev),
            Msg::FetchState { gid } => {
                // A closer peer is taking the group over: stop serving *before* answering, so
                // that everything we acknowledged is in the record it receives.
                let is_root = self.groups.get(&gid).is_some_and(|g| g.root.is_some());
                if is_root && ctx.overlay.route(gid.0, None) != Hop::Local {
                    self.demote(ctx, gid);
                }
                let rec = self
                    .groups
                    .get(&gid)
                    .and_then(|g| g.best_record())
                    .map(|r| r.to_wire(ctx.now));
                ctx.out.send(&from, Msg::FetchReply { gid, rec });
            }
            Msg::FetchReply { gid, rec } => self.on_fetch_reply(ctx, from, gid, rec),
            _ => {}
        }
    }

    /// A JOIN's answer retracing its reverse `path` reached this peer: pops this peer off it
    /// and, when a hop remains, learns `latest` (if `learn`) without multicasting it to that
    /// hop, which gets it in the answer itself. `None`: the path does not name this peer;
    /// `Some(None)`: this peer is the JOIN's origin; `Some(Some(next))`: forward to `next`.
    fn retrace(
        &mut self,
        ctx: &mut Ctx<'_>,
        gid: GroupId,
        path: &mut Vec<NodeHandle>,
        latest: &Latest,
        learn: bool,
    ) -> Option<Option<NodeHandle>> {
        if path.pop().is_none_or(|h| h.id != ctx.me().id) {
            return None;
        }
        let next = path.last().copied();
        if let Some(next) = next {
            if learn && self.apply_latest_except(ctx, gid, latest.clone(), Some(next.id)) {
                self.root_absorb_latest(ctx, gid);
            }
        }
        Some(next)
    }

    fn on_notify(&mut self, ctx: &mut Ctx<'_>, gid: GroupId, latest: Latest) {
        if self.apply_latest(ctx, gid, latest) {
            self.root_absorb_latest(ctx, gid);
        }
    }

    fn pending_sub(&mut self, gid: GroupId, join_id: u64) -> Option<(SubHandle, &mut LocalSub)> {
        if join_id == 0 {
            return None;
        }
        let g = self.groups.get(&gid)?;
        let h = *g.subs.iter().find(|h| {
            self.subs
                .get(h)
                .is_some_and(|s| !s.accepted && s.join_id == join_id)
        })?;
        self.subs.get_mut(&h).map(|s| (h, s))
    }

    /// Takes `latest` if newer: delivers it to accepted local subscribers and multicasts it to
    /// the children. Returns whether it was newer.
    pub(crate) fn apply_latest(&mut self, ctx: &mut Ctx<'_>, gid: GroupId, latest: Latest) -> bool {
        self.apply_latest_except(ctx, gid, latest, None)
    }

    /// [`Scribe::apply_latest`], not multicasting to child `skip` (which gets the state
    /// another way).
    pub(crate) fn apply_latest_except(
        &mut self,
        ctx: &mut Ctx<'_>,
        gid: GroupId,
        latest: Latest,
        skip: Option<NodeId>,
    ) -> bool {
        let Some(g) = self.groups.get_mut(&gid) else {
            return false;
        };
        let stale_ok = ctx.cfg.mutant_on(Mutant::NoStaleFilter) && latest.seq > 0;
        if latest.seq <= g.latest.seq && !stale_ok {
            return false;
        }
        let newer = latest.seq > g.latest.seq;
        if newer {
            g.latest = latest;
        }
        let early = ctx.cfg.mutant_on(Mutant::NotifyBeforeAck);
        for h in &g.subs {
            if let Some(s) = self.subs.get_mut(h) {
                if (s.accepted || early) && (s.last_seq < g.latest.seq || stale_ok) {
                    s.last_seq = g.latest.seq;
                    ctx.events.push_back(Event::Notify {
                        handle: *h,
                        seq: g.latest.seq,
                        state: g.latest.body.clone(),
                    });
                }
            }
        }
        let silenced = g.root.is_some() && ctx.cfg.mutant_on(Mutant::NoMulticast);
        if !g.children.is_empty() && newer && !silenced {
            let msg = Msg::Notify {
                gid,
                latest: g.latest.clone(),
            };
            let to = g.children.iter().filter(|c| Some(c.handle.id) != skip);
            ctx.out.send_many(to.map(|c| &c.handle), &msg);
        }
        newer
    }

    /// Sends a tree-repair re-JOIN for `gid` carrying the latest state known here.
    fn send_rejoin(ctx: &mut Ctx<'_>, gid: GroupId, g: &mut Group) {
        g.rejoin_at = Some(ctx.now + ctx.cfg.request_retry);
        let carried = (g.latest.seq > 0).then(|| g.latest.clone());
        Self::send_join(ctx, gid, 0, carried);
    }

    /// The overlay declared peer `id` dead (keep-alive timeout, or a driver's failure detector
    /// through [`crate::Peer::declare_dead`]). Per group: `id` stops being a child; an orphan
    /// re-JOINs at once carrying its latest state; a peer that is now the closest to a group
    /// it holds anything for takes the root role over (fetching the replicas' records before
    /// serving); a root re-replicates to its new replica set and commits what it holds.
    pub fn on_peer_dead(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: NodeId,
        replica_sets: &[(GroupId, Vec<NodeHandle>)],
    ) {
        let gids: Vec<GroupId> = self.groups.keys().copied().collect();
        for gid in gids {
            let local = ctx.overlay.route(gid.0, None) == Hop::Local;
            let Some(g) = self.groups.get_mut(&gid) else {
                continue;
            };
            g.children.retain(|c| c.handle.id != id);
            let orphan = g.parent.is_some_and(|p| p.id == id);
            if orphan {
                g.parent = None;
                g.rejoin_at = Some(ctx.now);
            }
            let holds = g.record.is_some() || g.has_interest() || g.latest.seq > 0;
            if g.root.is_none() && local && holds {
                self.ensure_root(ctx, gid);
            } else if g.root.is_some() {
                self.fetch_peer_dead(ctx, gid, id);
                if let Some((_, before)) = replica_sets.iter().find(|(g, _)| *g == gid) {
                    self.root_replicas_changed(ctx, gid, id, before);
                }
            } else if orphan && g.has_interest() {
                Self::send_rejoin(ctx, gid, g);
            }
        }
    }

    /// The retransmission timer of local subscription `h` fires now: the JOIN is sent again, or,
    /// with `give_up`, the request times out (as when its deadline passes). Returns whether
    /// `h` names a pending subscription.
    pub fn fire_sub_timer(&mut self, ctx: &mut Ctx<'_>, h: SubHandle, give_up: bool) -> bool {
        let Some(s) = self.subs.get_mut(&h).filter(|s| !s.accepted) else {
            return false;
        };
        if give_up {
            s.deadline = ctx.now;
        }
        s.retry_at = ctx.now;
        self.next_op = ctx.now;
        self.local_requests_due(ctx);
        true
    }

    /// The retransmission timer of local publication request `h` fires now (see
    /// [`Scribe::fire_sub_timer`]).
    pub fn fire_pub_timer(&mut self, ctx: &mut Ctx<'_>, h: PubHandle, give_up: bool) -> bool {
        let Some(p) = self.pubs.values_mut().find(|p| p.handle == h) else {
            return false;
        };
        if give_up {
            p.deadline = ctx.now;
        }
        p.retry_at = ctx.now;
        self.next_op = ctx.now;
        self.local_requests_due(ctx);
        true
    }

    /// Runs the publication expiry of the periodic tick now, for every group this peer is the
    /// active root of (a driver that owns the timers, such as the conformance harness).
    /// Returns whether a publication expired.
    pub fn fire_expiry(&mut self, ctx: &mut Ctx<'_>) -> bool {
        let mut any = false;
        for gid in self.active_roots() {
            any |= self.root_expire(ctx, gid);
        }
        any
    }

    /// Runs the replication retry of the periodic tick now (a driver that owns the timers):
    /// every active root resends its record to the replicas that have not acknowledged it,
    /// and commits what their acknowledgements allow. Returns whether this peer is a root.
    pub fn fire_replication_retry(&mut self, ctx: &mut Ctx<'_>) -> bool {
        let gids = self.active_roots();
        for &gid in &gids {
            self.retry_replication(ctx, gid);
        }
        !gids.is_empty()
    }

    /// The tree-repair timer of `gid` fires now: an orphan (or a peer whose re-JOIN got no
    /// answer) re-JOINs. Returns whether this peer needs the group.
    pub fn fire_rejoin_timer(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) -> bool {
        let Some(g) = self.groups.get_mut(&gid) else {
            return false;
        };
        if g.root.is_some() || !g.has_interest() {
            return false;
        }
        g.parent = None;
        Self::send_rejoin(ctx, gid, g);
        true
    }

    fn deliver_to(&mut self, ctx: &mut Ctx<'_>, gid: GroupId, h: SubHandle) {
        let (Some(g), Some(s)) = (self.groups.get(&gid), self.subs.get_mut(&h)) else {
            return;
        };
        if s.accepted && g.latest.seq > s.last_seq {
            s.last_seq = g.latest.seq;
            ctx.events.push_back(Event::Notify {
                handle: h,
                seq: g.latest.seq,
                state: g.latest.body.clone(),
            });
        }
    }

    /// Leaves the tree when nothing below or here needs the group any more.
    fn prune(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) {
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        if g.has_interest() || g.root.is_some() {
            return;
        }
        if let Some(p) = g.parent.take() {
            ctx.out.send(&p, Msg::Leave { gid });
        }
        g.rejoin_at = None;
    }

    // ----------------------------------------------------------------- time

    /// Earliest deadline. O(1) in the number of local requests: `next_op` is a lower bound
    /// kept by every request creation and recomputed when timeouts are handled.
    pub fn next_timeout(&self) -> Millis {
        let mut t = self.next_tick.min(self.next_refresh).min(self.next_op);
        for gid in &self.activating {
            if let Some(r) = self.groups.get(gid).and_then(|g| g.root.as_ref()) {
                t = t.min(r.fetch_deadline);
            }
        }
        t
    }

    pub fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) {
        self.local_requests_due(ctx);
        self.group_timers(ctx);
    }

    /// Local requests: retries, timeouts, subscription expiry.
    fn local_requests_due(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        let mut done: Vec<(SubHandle, Option<Event>)> = Vec::new();
        for (h, s) in self.subs.iter_mut() {
            if s.accepted {
                if now >= s.expires_at {
                    done.push((
                        *h,
                        Some(Event::SubTerminated {
                            handle: *h,
                            reason: TerminateReason::Expired,
                        }),
                    ));
                }
            } else if now >= s.deadline {
                done.push((
                    *h,
                    Some(Event::SubRejected {
                        handle: *h,
                        reason: SubRejectReason::Timeout,
                    }),
                ));
            } else if now >= s.retry_at {
                s.retry_at = now + ctx.cfg.request_retry;
                Self::send_join(ctx, s.gid, s.join_id, None);
            }
        }
        for (h, ev) in done {
            if let Some(s) = self.subs.remove(&h) {
                ctx.events.extend(ev);
                self.detach_sub(ctx, s.gid, h);
            }
        }
        let mut failed = Vec::new();
        for (nonce, p) in self.pubs.iter_mut() {
            if now >= p.deadline {
                failed.push(*nonce);
            } else if now >= p.retry_at {
                p.retry_at = now + ctx.cfg.request_retry;
                Self::send_publish(ctx, *nonce, p);
            }
        }
        for n in failed {
            if let Some(p) = self.pubs.remove(&n) {
                ctx.events.push_back(Event::PublishFailed {
                    req: p.handle,
                    reason: PublishError::Timeout,
                });
            }
        }
        self.next_op = self
            .subs
            .values()
            .map(|s| {
                if s.accepted {
                    s.expires_at
                } else {
                    s.retry_at.min(s.deadline)
                }
            })
            .chain(self.pubs.values().map(|p| p.retry_at.min(p.deadline)))
            .min()
            .unwrap_or(Millis::MAX);
    }

    /// Root activations, replica refresh and the periodic tick.
    fn group_timers(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        // Root activations whose fetch timed out.
        let due: Vec<GroupId> = self
            .activating
            .iter()
            .copied()
            .filter(|gid| {
                self.groups
                    .get(gid)
                    .and_then(|g| g.root.as_ref())
                    .is_none_or(|r| now >= r.fetch_deadline)
            })
            .collect();
        for gid in due {
            self.fetch_timeout(ctx, gid);
        }
        if now >= self.next_refresh {
            self.next_refresh = now + ctx.cfg.replica_refresh;
            self.refresh_replicas(ctx);
        }
        if now >= self.next_tick {
            self.next_tick = now + ctx.cfg.heartbeat_interval;
            self.tick(ctx);
        }
    }

    /// Heartbeats, failure handling, root duties. Runs every `heartbeat_interval`.
    fn tick(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        let gids: Vec<GroupId> = self.groups.keys().copied().collect();
        for gid in gids {
            // Root duties (may demote this peer).
            let is_root = self.groups.get(&gid).is_some_and(|g| g.root.is_some());
            if is_root {
                if ctx.overlay.route(gid.0, None) != Hop::Local {
                    self.demote(ctx, gid);
                } else {
                    self.root_tick(ctx, gid);
                }
            }
            let Some(g) = self.groups.get_mut(&gid) else {
                continue;
            };
            if let Some(p) = g.parent {
                if now.saturating_sub(g.parent_heard) > ctx.cfg.parent_timeout {
                    g.parent = None;
                    g.rejoin_at = Some(now);
                    ctx.out.send(&p, Msg::Leave { gid });
                }
            }
            if g.root.is_none()
                && g.parent.is_none()
                && g.has_interest()
                && g.rejoin_at.is_none_or(|t| now >= t)
            {
                Self::send_rejoin(ctx, gid, g);
            }
            let timeout = ctx.cfg.child_timeout;
            g.children
                .retain(|c| now.saturating_sub(c.last_ack) <= timeout);
            if !g.children.is_empty() {
                let depth = if g.root.is_some() { 0 } else { g.depth };
                let msg = Msg::Heartbeat {
                    gid,
                    seq: g.latest.seq,
                    depth,
                };
                ctx.out
                    .send_many(g.children.iter().map(|c| &c.handle), &msg);
            }
            self.prune(ctx, gid);
            let g = &self.groups[&gid];
            if !g.has_interest() && g.root.is_none() && g.parent.is_none() && g.record.is_none() {
                self.groups.remove(&gid);
            }
        }
    }

    /// Graceful departure: parents and children are told, replicas get the record once more.
    pub fn depart(&mut self, ctx: &mut Ctx<'_>) {
        self.refresh_replicas(ctx);
        for (gid, g) in &mut self.groups {
            let msg = Msg::Leave { gid: *gid };
            if let Some(p) = g.parent.take() {
                ctx.out.send(&p, msg.clone());
            }
            ctx.out
                .send_many(g.children.iter().map(|c| &c.handle), &msg);
            g.children.clear();
        }
    }

    // ----------------------------------------------------------------- projection

    pub fn view(&self, gid: GroupId) -> Option<GroupView> {
        let g = self.groups.get(&gid)?;
        Some(GroupView {
            gid,
            is_root: g.root.is_some(),
            root_active: g.root.as_ref().is_some_and(|r| r.active),
            parent: g.parent.map(|p| p.id),
            children: g.children.iter().map(|c| c.handle.id).collect(),
            latest_seq: g.latest.seq,
            record_seq: g.record.as_ref().map(|r| r.seq),
            etag: g.record.as_ref().and_then(|r| r.etag),
            local_subs: g.subs.len(),
        })
    }

    pub fn group_ids(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.groups.keys().copied()
    }
}
