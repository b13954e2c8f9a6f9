//! sa-Scribe: Scribe trees made SIP-aware.
//!
//! * **Subscribe** ([`tree`]): a JOIN is routed towards `gid`; each peer on the way grafts the
//!   previous hop as a child (reverse-path forwarding), answers it with a pACK and adds the
//!   newest state it knows to the JOIN. The JOIN always continues up to the root — a peer
//!   already in the tree forwards it to its parent instead of answering from its own, possibly
//!   stale, state — and the root's ACK (with its committed state: the first NOTIFY) retraces
//!   the JOIN's reverse path to the origin; every peer on the way learns the state. A root
//!   without state accepts too (a JOIN creates the group; **unlike the paper**, whose root
//!   answers nACK): its ACK says seq 0, nothing published, or the seq at which the last state
//!   went, and later publications reach the subscriber.
//! * **Publish** ([`publish`]): routed to the root, which holds one event state per entity tag
//!   (RFC 3903 §4) and composes them into the document members get; it checks `SIP-If-Match`
//!   against the live states, decides the expiry, stamps the next seq, and ([`replication`]) replicates the record to its `k` nearest
//!   leaf-set peers; only when all acknowledged does it answer the publisher and multicast down
//!   the tree.
//! * **Repair** ([`group`], [`takeover`]): parents heartbeat children (children acknowledge with
//!   their seq so a parent re-sends missed state; the heartbeats of every group a parent shares
//!   with a child travel in one datagram per round); an orphan re-JOINs carrying its latest
//!   state; a new root first fetches the replicas' records and keeps the highest seq it hears.
//! * **Local requests** ([`local`]): the subscriptions and publications of this peer's SIP
//!   layer, with their retransmissions, timeouts and expiries.
//!
//! Members deliver a state to a local subscriber only when its seq is strictly greater than
//! the last one that subscriber got, and never before the subscriber's ACK.
//!
//! Every deadline is an entry in the host's [`Timers`]: the tree round (every group's
//! maintenance tick and, every `replica_refresh`, its record's re-replication), one per local
//! request, one per fetching root. The tree round is the one walk over all groups, once per
//! `heartbeat_interval` (a replica's idle copy costs it a comparison); nothing scans all
//! requests to find what is due.

mod group;
mod local;
mod publish;
mod record;
mod replication;
mod takeover;
mod tree;

pub(crate) use group::Group;
pub(crate) use record::Record;

use crate::config::Config;
use crate::event::{Event, GroupView};
use crate::id::GroupId;
use crate::io::Outbox;
use crate::pastry::Overlay;
use crate::rng::{Secrets, SplitMix64};
use crate::timer::{Timer, Timers};
use crate::wire::{Msg, NodeHandle, Routed, ScribeMsg};
use crate::Millis;
use local::{LocalSub, PendingPub};
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
    pub secrets: &'a mut Secrets,
    pub events: &'a mut VecDeque<Event>,
    pub timers: &'a mut Timers,
}

impl Ctx<'_> {
    pub fn me(&self) -> NodeHandle {
        self.out.me
    }
    /// The peer this one knows (itself included) that is closer to `gid` than `sender`, if
    /// any: then `sender` is not the group's root.
    fn closer_than(&self, gid: GroupId, sender: &NodeHandle) -> Option<NodeHandle> {
        let best = self
            .overlay
            .leaf
            .closest(gid.0, Some(sender.id))
            .unwrap_or(self.me());
        crate::id::closer(gid.0, best.id.0, sender.id.0).then_some(best)
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

/// sa-Scribe state of one peer.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scribe {
    pub groups: BTreeMap<GroupId, Group>,
    pub subs: BTreeMap<crate::event::SubHandle, LocalSub>,
    pubs: BTreeMap<u64, PendingPub>,
    scratch: Vec<NodeHandle>,
    round: group::Round,
    /// Until when fetches wait for peers declared dead to answer (a heal just began).
    heal_until: Millis,
}

fn secs(s: u32) -> Millis {
    u64::from(s) * 1000
}

impl Scribe {
    pub fn new() -> Self {
        Self::default()
    }

    /// The group `gid`, created (and the tree round armed) if this peer had none.
    pub(crate) fn group(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) -> &mut Group {
        group::entry(&mut self.groups, &mut self.round.armed, ctx, gid)
    }

    /// A direct sa-Scribe message from `from`.
    pub fn handle(&mut self, ctx: &mut Ctx<'_>, from: NodeHandle, msg: ScribeMsg) {
        match msg {
            ScribeMsg::Provisional { gid, join_id } => self.on_provisional(ctx, gid, join_id),
            ScribeMsg::JoinAck {
                gid,
                join_id,
                latest,
                path,
            } => self.on_join_ack(ctx, gid, join_id, latest, path),
            ScribeMsg::Notify { gid, latest } => self.on_notify(ctx, gid, latest),
            ScribeMsg::Heartbeats { beats } => self.on_heartbeats(ctx, from, &beats),
            ScribeMsg::HeartbeatAcks { acks, left } => {
                for a in acks {
                    self.on_heartbeat_ack(ctx, from, a.gid, a.seq);
                }
                for gid in left {
                    self.on_leave(ctx, from, gid);
                }
            }
            ScribeMsg::Leave { gid } => self.on_leave(ctx, from, gid),
            ScribeMsg::PublishReply { req, reply } => self.on_publish_reply(ctx, req, reply),
            ScribeMsg::Replicate {
                gid,
                rec,
                epoch,
                stamp,
            } => self.on_replicate(ctx, from, gid, rec, epoch, stamp),
            ScribeMsg::NotRoot { gid, .. } => self.on_not_root(ctx, gid),
            ScribeMsg::ReplicateAck { gid, rev, stamp } => {
                self.on_replicate_ack(ctx, from, gid, rev, stamp)
            }
            ScribeMsg::Fenced {
                gid,
                epoch,
                refused,
                rec,
            } => self.on_fenced(ctx, gid, (epoch, refused), rec),
            ScribeMsg::Replicates { stamp, items } => self.on_replicates(ctx, from, items, stamp),
            ScribeMsg::ReplicateAcks { stamp, acks } => {
                for (gid, rev) in acks {
                    self.on_replicate_ack(ctx, from, gid, rev, stamp);
                }
            }
            ScribeMsg::FetchState { gid, epoch } => self.on_fetch_state(ctx, from, gid, epoch),
            ScribeMsg::FetchReply {
                gid,
                epoch,
                rec,
                promised,
                granted,
                busy_for,
            } => {
                if busy_for > 0 {
                    self.on_fetch_busy(ctx, from, gid, epoch, busy_for);
                } else {
                    self.on_fetch_reply(ctx, from, gid, rec, (epoch, promised, granted));
                }
            }
        }
    }

    /// One of sa-Scribe's timers fired.
    pub fn handle_timer(&mut self, ctx: &mut Ctx<'_>, timer: Timer) {
        match timer {
            Timer::Tree => self.tree_round(ctx),
            Timer::Fetch(gid) => self.fetch_timer(ctx, gid),
            Timer::Subscription(h) => self.sub_timer(ctx, h),
            Timer::Publication(nonce) => self.pub_timer(ctx, nonce),
            _ => {}
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
            etags: g.record.as_ref().map(|r| r.etags()).unwrap_or_default(),
            local_subs: g.subs.len(),
            accepted_subs: g
                .subs
                .iter()
                .filter(|h| self.subs.get(h).is_some_and(|s| s.accepted))
                .count(),
            confirms: g.confirms,
        })
    }

    /// The deadlines this peer holds for `gid` (its tree round, replica refresh and re-JOIN,
    /// a fetching root's deadline and its busy peers', the lease it confirmed, its local
    /// subscriptions' and publications', its record's expiries), each with the interval that
    /// sets it: every one is set from the clock to at most that interval ahead, and the clock
    /// only moves on, so none lies further than its interval ahead of `now`. The first that
    /// does (a deadline computed wrong, which would fire late or never) is returned, named.
    #[cfg(feature = "harness")]
    pub fn deadline_beyond(&self, cfg: &Config, gid: GroupId, now: Millis) -> Option<String> {
        let g = self.groups.get(&gid)?;
        let lease = cfg.root_lease.saturating_add(1);
        let mut all: Vec<(&str, Millis, Millis)> = vec![
            // The peer's tree round runs while it holds any group (the group's own tick is
            // due at one of its rounds).
            (
                "tree round timer",
                self.round.armed.0,
                cfg.heartbeat_interval,
            ),
            ("tree round", g.next_tick, cfg.heartbeat_interval),
            ("replica refresh", g.next_refresh, cfg.replica_refresh),
        ];
        all.extend(g.rejoin_at.map(|at| ("re-JOIN", at, cfg.request_retry)));
        all.extend(g.confirms.map(|c| ("confirmed lease", c.1, cfg.root_lease)));
        if let Some(role) = g.root.as_ref().filter(|r| !r.active) {
            all.push(("fetch", role.fetch_deadline, cfg.fetch_timeout.max(lease)));
            all.extend(role.asks.iter().map(|a| ("busy peer", a.busy_until, lease)));
        }
        if let Some(r) = g.record.as_ref() {
            let max = secs(cfg.pub_max_expires);
            all.extend(r.states.iter().map(|s| ("event state", s.expires_at, max)));
        }
        self.local_deadlines(cfg, gid, &mut all);
        all.into_iter()
            .find(|&(_, at, interval)| at > now.saturating_add(interval))
            .map(|(what, at, interval)| {
                format!("its {what} deadline is {at} ms, beyond now ({now} ms) + {interval} ms")
            })
    }

    /// A fetching root's wait on the peers that answered it busy: its round's epoch, its fetch
    /// deadline, and each peer it still awaits that answered busy, with the time before which
    /// it is not asked again (for conformance checks; `None` unless this peer is fetching as
    /// `gid`'s root).
    #[cfg(feature = "harness")]
    pub fn busy_waits(&self, gid: GroupId) -> Option<crate::event::BusyWaits> {
        let role = self.groups.get(&gid)?.root.as_ref().filter(|r| !r.active)?;
        let busy = role
            .asks
            .iter()
            .filter(|a| a.busy_until > 0 && role.waiting.contains(&a.id));
        Some(crate::event::BusyWaits {
            epoch: role.epoch,
            deadline: role.fetch_deadline,
            busy: busy.map(|a| (a.id, a.busy_until)).collect(),
            awaited: role.waiting.to_vec(),
        })
    }

    /// Whether this peer's root role of `gid` answers requests at `now`: it is active, its
    /// lease holds and it reaches a replica quorum. The request path asks the same (an active
    /// root answers a JOIN at once only when this holds), so what an operator reads is what
    /// the root does. `replicas` is scratch space (the group's nominal replica set).
    pub fn serves(
        &self,
        overlay: &Overlay,
        cfg: &Config,
        gid: GroupId,
        now: Millis,
        replicas: &mut Vec<NodeHandle>,
    ) -> bool {
        let Some(role) = self.groups.get(&gid).and_then(|g| g.root.as_ref()) else {
            return false;
        };
        if !role.active {
            return false;
        }
        overlay.nearest_leaves(gid.0, cfg.replicas, replicas);
        let lease = role.lease_holds(replicas, now, cfg.root_lease)
            || cfg.mutant_on(crate::mutants::Mutant::NoLease);
        lease && replication::quorum(cfg, overlay, replicas.len())
    }

    pub fn record_view(&self, gid: GroupId) -> Option<crate::event::RecordView> {
        let g = self.groups.get(&gid)?;
        Some(Self::view_of(gid, g, g.record.as_ref()?))
    }

    /// The record a root last applied a change to (one waiting for its replicas' acks, else
    /// its committed record); at other peers, the replica copy.
    pub fn applied_record_view(&self, gid: GroupId) -> Option<crate::event::RecordView> {
        let g = self.groups.get(&gid)?;
        Some(Self::view_of(gid, g, g.best_record()?))
    }

    fn view_of(gid: GroupId, g: &Group, r: &Record) -> crate::event::RecordView {
        crate::event::RecordView {
            gid,
            is_root: g.root.is_some(),
            seq: r.seq,
            resource: r.resource.clone(),
            states: r
                .states
                .iter()
                .map(|s| crate::event::StateView {
                    etag: s.etag,
                    content_type: s.content_type.clone(),
                    bytes: s.body.len(),
                    expires_at: s.expires_at,
                    created: s.created,
                    changed: s.changed,
                    body: s.body.clone(),
                })
                .collect(),
            document_bytes: r.doc_len(),
        }
    }

    pub fn group_ids(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.groups.keys().copied()
    }
}
