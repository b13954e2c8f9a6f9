//! Model configurations: which peers, which user agents, which faults.

use crate::mutant::Mutant;
use crate::protocol::{IfMatch, PubOp};
use crate::topology::{distance, PeerIx, PeerSet, Topology, FIG3_IDS};
use serde::Serialize;
use stateright::actor::Id;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The group id the model's subscribers and publishers use: key 500 of Fig. 3, whose root is D.
pub const FIG3_GID: u16 = 500;

/// Event-state expiries a configuration allows unless `--expiries` says otherwise.
pub const DEFAULT_EXPIRIES: usize = 0;

/// How the network treats messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum NetworkKind {
    /// Messages race one another and are delivered at most once (default).
    Unordered,
    /// Per-link FIFO.
    Ordered,
    /// Messages race and may be delivered more than once.
    Duplicating,
}

impl FromStr for NetworkKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "unordered" => Ok(Self::Unordered),
            "ordered" => Ok(Self::Ordered),
            "duplicating" => Ok(Self::Duplicating),
            _ => Err(format!(
                "unknown network '{s}'; known: unordered, ordered, duplicating"
            )),
        }
    }
}

/// A named starting configuration; command-line options override its sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Preset {
    /// Three peers (A, C, D), every peer in every leaf set: one-hop routes.
    Small,
    /// Four peers (A, C, D, E) with one-peer leaf sets: A's JOIN goes A → C → D as in Fig. 5.
    Multihop,
    /// The eight peers of Fig. 3, Bob on A, Dylan on B, Alice on E (Fig. 1).
    Fig3,
    /// Five peers (A, C, D, P464, E) with one-peer leaf sets, two of which (D = 448 and the
    /// group's root P464 = 464) share their leading digits: every other preset's ids differ
    /// in their first digit, so production's learnt routing tables (base 16) never fill a row
    /// past the first, and a route never meets a peer that shares a longer prefix.
    Prefix,
}

impl FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "small" => Ok(Self::Small),
            "multihop" => Ok(Self::Multihop),
            "fig3" => Ok(Self::Fig3),
            "prefix" => Ok(Self::Prefix),
            _ => Err(format!(
                "unknown config '{s}'; known: small, multihop, fig3, prefix"
            )),
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Preset::Small => "small",
            Preset::Multihop => "multihop",
            Preset::Fig3 => "fig3",
            Preset::Prefix => "prefix",
        })
    }
}

/// Options a user sets; `None` keeps the preset's value.
#[derive(Clone, Debug, Serialize)]
pub struct Options {
    /// Starting configuration.
    pub preset: Preset,
    /// Number of peers (2–8).
    pub peers: Option<usize>,
    /// Number of subscribing user agents (0–4).
    pub subscribers: Option<usize>,
    /// Number of publishes, spread over two publishing user agents (0–6).
    pub publishes: Option<usize>,
    /// Peer crashes allowed.
    pub crashes: Option<usize>,
    /// Crashes happen only once this many publications were committed (0: from the start):
    /// the runs where a crash loses what members were told, rather than what nobody heard.
    pub crashes_after: usize,
    /// Replication factor k.
    pub k: Option<usize>,
    /// Network semantics.
    pub network: NetworkKind,
    /// Overlay request/response messages the network may lose.
    pub losses: usize,
    /// Publication expiries allowed (a root's publication lapses unrefreshed).
    pub expiries: Option<usize>,
    /// How many subscribers (the first ones) unsubscribe after subscribing.
    pub unsubscribes: usize,
    /// Every subscriber at the same peer, the first subscriber's (A): one peer carries
    /// several local subscriptions of the group, joins the tree once, and stays in it for as
    /// long as one of them does.
    pub colocated: bool,
    /// Subscriptions moved: a subscriber whose first-contact peer is gone subscribes again
    /// through another peer (production: the `terminated;reason=deactivated` NOTIFY of a peer
    /// that leaves, or a refresh that fails after a crash).
    pub moves: usize,
    /// Subscriptions handed over: a peer about to leave hands an active subscription to
    /// another peer, which carries on its dialog (production: the orderly shutdown's
    /// `DialogHandover`).
    pub handovers: usize,
    /// False suspicions allowed (a live peer suspected, later healed); with any, records carry
    /// a root epoch, replicas fence and a root serves only under a lease.
    pub suspicions: usize,
    /// A suspicion is a partition rather than a pause: the suspected peer runs on its own
    /// side (its failure detector declares every other peer dead, its user agents reach it),
    /// and a root there commits nothing without a replica quorum.
    pub partition: bool,
    /// Tree and replication messages the network may lose (multicast, REPLICATE and its
    /// acknowledgement, a fetch and its reply), repaired by tree heartbeats and the root's
    /// replication retry.
    pub tree_losses: usize,
    /// Crashed peers that may restart (crash-restart): a peer comes back with no state (the
    /// production peer keeps nothing on disk) and joins the overlay again.
    pub restarts: usize,
    /// With restarts: no promises, leases or fencing (production with a failure detector
    /// that never suspects a live peer, `root_lease` = never); see [`Setup::fencing`].
    pub perfect_detector: bool,
    /// Peers that join mid-run: the peers closest to the group id (the nominal root first)
    /// start outside the overlay and join it later.
    pub joins: usize,
    /// A seeded bug.
    pub mutant: Option<Mutant>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            preset: Preset::Small,
            peers: None,
            subscribers: None,
            publishes: None,
            crashes: None,
            crashes_after: 0,
            k: None,
            network: NetworkKind::Unordered,
            losses: 0,
            expiries: None,
            unsubscribes: 0,
            colocated: false,
            moves: 0,
            handovers: 0,
            suspicions: 0,
            partition: false,
            tree_losses: 0,
            restarts: 0,
            perfect_detector: false,
            joins: 0,
            mutant: None,
        }
    }
}

/// Everything the model's actors and properties share.
#[derive(Clone, Debug, Serialize)]
pub struct Setup {
    /// The overlay.
    pub topo: Topology,
    /// The group's key.
    pub gid: u16,
    /// Replication factor.
    pub k: usize,
    /// First-contact peer of each subscriber.
    pub subscribers: Vec<PeerIx>,
    /// First-contact peer and script of each publisher.
    pub publishers: Vec<(PeerIx, Arc<Vec<PubOp>>)>,
    /// Peer crashes allowed.
    pub max_crashes: usize,
    /// Commits before the first crash may happen.
    pub crashes_after: u8,
    /// Network semantics.
    pub network: NetworkKind,
    /// Overlay request/response messages the network may lose.
    pub losses: usize,
    /// Publication expiries allowed.
    pub expiries: usize,
    /// How many subscribers (the first ones) unsubscribe after subscribing.
    pub unsubscribes: usize,
    /// Subscriptions that may move to another peer once their first-contact peer crashed.
    pub moves: usize,
    /// Subscriptions a leaving peer may hand over to another peer.
    pub handovers: usize,
    /// False suspicions allowed (0: a perfect failure detector, and no epochs).
    pub suspicions: usize,
    /// Suspicions are partitions (the suspected peer runs alone) rather than pauses.
    pub partition: bool,
    /// Tree and replication messages the network may lose.
    pub tree_losses: usize,
    /// Crashed peers that may restart, empty (0: crash-stop).
    pub restarts: usize,
    /// Restarts run without promises, leases or fencing ([`Setup::fencing`]).
    pub perfect_detector: bool,
    /// Peers that start outside the overlay and join it mid-run.
    pub joiners: PeerSet,
    /// A seeded bug.
    pub mutant: Option<Mutant>,
}

impl Setup {
    /// Builds a configuration, checking every option.
    pub fn new(o: &Options) -> Result<Setup, String> {
        let (all_ids, leaf_half, default_peers): (Vec<u16>, usize, usize) = match o.preset {
            // Preference order: the root D first, then the peers that make routes longer.
            Preset::Small => (vec![448, 320, 64, 576, 192, 704, 832, 960], 1, 3),
            Preset::Multihop => (vec![448, 320, 64, 576, 192, 704, 832, 960], 1, 4),
            Preset::Fig3 => (FIG3_IDS.to_vec(), 1, 8),
            Preset::Prefix => (vec![448, 464, 320, 64, 576, 480], 1, 5),
        };
        let n = o.peers.unwrap_or(default_peers);
        if !(2..=8).contains(&n) {
            return Err(format!(
                "--peers must be between 2 and 8 (a root and at least one replica), got {n}"
            ));
        }
        let mut ids: Vec<u16> = all_ids[..n].to_vec();
        ids.sort_unstable();
        let leaf_half = if o.preset == Preset::Small {
            n // every peer knows every other: one-hop routes
        } else {
            leaf_half
        };
        let topo = Topology::new(ids.clone(), leaf_half)?;
        let gid = FIG3_GID;
        let ix = |id: u16| ids.iter().position(|&x| x == id).map(|i| i as PeerIx);
        let root = topo.closest_live(gid, 0).expect("at least one peer");
        // Attachment points: named ones for Fig. 3, otherwise the peers farthest from the root.
        let mut others: Vec<PeerIx> = (0..n as PeerIx).filter(|&p| p != root).collect();
        others.sort_unstable_by_key(|&p| std::cmp::Reverse(distance(topo.ids[p as usize], gid)));
        if others.is_empty() {
            others.push(root);
        }
        let (sub_at, pub_at): (Vec<PeerIx>, Vec<PeerIx>) = match o.preset {
            Preset::Fig3 if n == 8 => (
                vec![ix(64).unwrap(), ix(192).unwrap()],
                vec![ix(576).unwrap(), ix(320).unwrap()],
            ),
            Preset::Multihop if n >= 4 => (
                vec![ix(64).unwrap(), ix(576).unwrap()],
                vec![ix(576).unwrap(), ix(320).unwrap()],
            ),
            _ => {
                let pubs = vec![others[0], *others.get(1).unwrap_or(&root)];
                (others.clone(), pubs)
            }
        };
        let subs = o.subscribers.unwrap_or(1);
        if subs > 4 {
            return Err(format!("--subscribers must be at most 4, got {subs}"));
        }
        let publishes = o.publishes.unwrap_or(2);
        if publishes > 6 {
            return Err(format!("--publishes must be at most 6, got {publishes}"));
        }
        let crashes = o.crashes.unwrap_or(1);
        if crashes >= n {
            return Err(format!(
                "--crashes must leave a live peer: at most {}, got {crashes}",
                n - 1
            ));
        }
        if o.crashes_after > publishes {
            return Err(format!(
                "--crashes-after must be at most the number of publishes ({publishes}), got {}",
                o.crashes_after
            ));
        }
        let k = o.k.unwrap_or(2.min(n - 1));
        if k == 0 {
            // With no replica an acknowledged publication dies with its root: `no-rollback`
            // and `acked-durable` (which hold while at most k-1 peers crashed) would say
            // nothing.
            return Err(
                "--k must be at least 1 (k = 0 keeps no replica: an acknowledged \
                 publication dies with its root)"
                    .into(),
            );
        }
        if k >= n {
            return Err(format!(
                "--k must be below the number of peers ({n}), got {k}"
            ));
        }
        let expiries = o.expiries.unwrap_or(DEFAULT_EXPIRIES);
        if expiries > 3 {
            return Err(format!("--expiries must be at most 3, got {expiries}"));
        }
        if o.unsubscribes > subs {
            return Err(format!(
                "--unsubscribes must be at most the number of subscribers ({subs}), got {}",
                o.unsubscribes
            ));
        }
        if o.moves > 2 {
            return Err(format!("--moves must be at most 2, got {}", o.moves));
        }
        if o.moves > 0 && (subs == 0 || crashes == 0) {
            return Err(
                "--moves needs a subscriber and a crash (a subscription moves once its \
                 first-contact peer is gone)"
                    .into(),
            );
        }
        if o.handovers > 2 {
            return Err(format!(
                "--handovers must be at most 2, got {}",
                o.handovers
            ));
        }
        if o.handovers > 0 && subs <= o.unsubscribes {
            return Err(
                "--handovers needs a subscriber that does not unsubscribe (only those are \
                 handed over)"
                    .into(),
            );
        }
        if o.handovers > 0 && o.moves > 0 {
            return Err("--handovers and --moves do not combine yet".into());
        }
        if o.suspicions > 2 {
            return Err(format!(
                "--suspicions must be at most 2, got {}",
                o.suspicions
            ));
        }
        if o.partition && o.suspicions == 0 {
            return Err("--partition needs --suspicions 1 or more".into());
        }
        // With suspicions a root commits only with a majority of its nominal replica group
        // (itself and k replicas); the model never forgets a crashed peer (production forgets
        // its tombstone after a while), so crashes must leave that majority.
        let group = 1 + k.min(n - 1);
        let fencing = o.suspicions + o.restarts + o.joins > 0;
        if fencing && group >= 3 && crashes > group - (group / 2 + 1) {
            return Err(format!(
                "--crashes must leave a majority of the replica group ({group} peers) with \
                 --suspicions, --restarts or --joins: at most {}, got {crashes}",
                group - (group / 2 + 1)
            ));
        }
        if o.tree_losses > 2 {
            return Err(format!(
                "--tree-losses must be at most 2, got {}",
                o.tree_losses
            ));
        }
        if o.restarts > 2 {
            return Err(format!("--restarts must be at most 2, got {}", o.restarts));
        }
        if o.restarts > 0 && crashes == 0 {
            return Err("--restarts needs a crash (only a crashed peer restarts)".into());
        }
        if o.perfect_detector && (o.restarts == 0 || o.suspicions > 0 || o.joins > 0) {
            return Err(
                "--perfect-detector needs --restarts, and combines with neither --suspicions \
                 nor --joins"
                    .into(),
            );
        }
        if o.joins > 1 {
            return Err(format!("--joins must be at most 1, got {}", o.joins));
        }
        if o.joins > 0 && (o.suspicions > 0 || o.moves > 0 || o.handovers > 0) {
            return Err(
                "--joins does not combine with --suspicions, --moves or --handovers yet".into(),
            );
        }
        if o.restarts > 0 && (o.suspicions > 0 || o.moves > 0 || o.handovers > 0) {
            return Err(
                "--restarts does not combine with --suspicions, --moves or --handovers yet".into(),
            );
        }
        // The joining peers are those closest to the group id: the nominal root joins, so
        // the root that served before hands the group over to it.
        let mut by_distance: Vec<PeerIx> = (0..n as PeerIx).collect();
        by_distance.sort_unstable_by_key(|&p| distance(topo.ids[p as usize], gid));
        let joiners: PeerSet = by_distance[..o.joins]
            .iter()
            .fold(0, |m: PeerSet, &p| m | (1 << p));
        let subscribers: Vec<PeerIx> = (0..subs)
            .map(|i| sub_at[if o.colocated { 0 } else { i % sub_at.len() }])
            .collect();
        if subscribers
            .iter()
            .chain(pub_at.iter().take(publishes.min(2)))
            .any(|&p| joiners & (1 << p) != 0)
        {
            return Err("--joins: a joining peer would host a user agent".into());
        }
        if o.joins > 0 && k + o.joins >= n {
            return Err(format!(
                "--joins needs k below the number of peers present from the start ({}), got {k}",
                n - o.joins
            ));
        }
        // Publish i goes to publisher i % 2 (U1, U2), each with its own event state (RFC 3903
        // §4): U1's initial publish; U2's initial publish (a second state, composed with the
        // first); U1 modifies its own state (SIP-If-Match: its last ETag — U2's state in
        // between must not make it stale) for a shorter time than it first asked (the modify
        // sets the state's deadline anew); U2 removes its state (Expires: 0), which must keep
        // U1's; U1 publishes with an ETag from an earlier, long-expired publication (e0, never
        // current: a 412); U2 publishes anew.
        let mut scripts: Vec<Vec<PubOp>> = vec![Vec::new(), Vec::new()];
        for i in 0..publishes {
            let (if_match, expires) = match i {
                0 | 1 => (IfMatch::None, if i % 2 == 0 { 3 } else { 1 }),
                2 => (IfMatch::Mine, 1),
                3 => (IfMatch::Mine, 0),
                4 => (IfMatch::Fixed(0), 3),
                _ => (IfMatch::Mine, 1),
            };
            scripts[i % 2].push(PubOp {
                value: i as u8 + 1,
                if_match,
                expires,
            });
        }
        let publishers = scripts
            .into_iter()
            .enumerate()
            .filter(|(_, s)| !s.is_empty())
            .map(|(j, s)| (pub_at[j % pub_at.len()], Arc::new(s)))
            .collect();
        Ok(Setup {
            topo,
            gid,
            k,
            subscribers,
            publishers,
            max_crashes: crashes,
            crashes_after: o.crashes_after as u8,
            network: o.network,
            losses: o.losses,
            expiries,
            unsubscribes: o.unsubscribes,
            moves: o.moves,
            handovers: o.handovers,
            suspicions: o.suspicions,
            partition: o.partition,
            tree_losses: o.tree_losses,
            restarts: o.restarts,
            perfect_detector: o.perfect_detector,
            joiners,
            mutant: o.mutant,
        })
    }

    /// Retransmissions a first-contact peer makes before it gives up on a request: one per
    /// crash and per network loss, two per suspicion (a request is lost when the suspected
    /// peer is cut off, and again when the root that took over hands the group back), plus one.
    pub fn retry_limit(&self) -> usize {
        self.max_crashes + self.losses + 2 * self.suspicions + self.rejoins() + 1
    }

    /// The highest seq a run can stamp: one per publish and per expiry (a retransmission is
    /// never applied twice).
    pub fn max_seq(&self) -> u8 {
        let publishes: usize = self.publishers.iter().map(|(_, s)| s.len()).sum();
        // An activation may stamp a seq above what members saw (at most one per takeover).
        (publishes + self.expiries + 2 * (self.suspicions + self.rejoins())) as u8
    }

    /// Whether records carry a root epoch, fetches are promise rounds, replicas fence, roots
    /// serve under a lease and commit only with a replica quorum (the fix for false
    /// suspicions). Production switches all of it off under a failure detector that never
    /// suspects a live peer (`root_lease` = `u64::MAX`, the conformance harness's setting), as
    /// the model does without suspicions.
    ///
    /// Restarts and joins switch it on too: a peer that comes back makes two roots for a
    /// while (one that has heard from it, one that has not), which production with a finite
    /// lease orders by promises and fences. With `perfect_detector` (restarts only) it stays
    /// off, as in production under the harness's failure detector: epochs order the records
    /// and a replica that knows the restarted peer answers the older root `NotRoot`.
    pub fn fencing(&self) -> bool {
        self.suspicions > 0 || (self.rejoins() > 0 && !self.perfect_detector)
    }

    /// Whether records carry the epoch of the root that stamped them, and are ordered by
    /// (epoch, seq) as production orders them: whenever a root can be replaced (a crash, a
    /// suspicion, a restart, a join). A new root's epoch is above every one it knows, so a
    /// late REPLICATE of a failed root never overwrites its successor's record of the same
    /// seq. (Promises, leases and fencing come with [`Setup::fencing`] only.)
    pub fn epochs(&self) -> bool {
        self.fencing() || self.max_crashes > 0
    }

    /// Whether the tree's maintenance messages are modelled: the heartbeat round (a beat
    /// with the parent's seq, the child's acknowledgement with its own, the state resent to a
    /// child behind, pushed up to a parent behind) and LEAVE (a peer that no longer needs the
    /// group tells its parent, which prunes in turn). They come with `--tree-losses`, which
    /// they repair; without it the parent keeps a branch that left, as if its LEAVE were
    /// still on its way, and no heartbeat is needed. A partition with subscribers brings them
    /// too: the cut-off peer declares its children dead and drops them, and after the heal a
    /// child that never noticed still names it as parent; only the parent timeout (the
    /// heartbeat that stopped) makes it JOIN again, as in production, which always runs them.
    pub fn tree_maintenance(&self) -> bool {
        self.tree_losses > 0 || (self.partition && !self.subscribers.is_empty())
    }

    /// The group's first root: the closest peer to the group id of those in the overlay when
    /// the run starts (joiners are not).
    pub fn first_root(&self) -> Option<PeerIx> {
        self.topo.closest_live(self.gid, self.joiners)
    }

    /// The replica set of the group's first root `root` when the run starts.
    pub fn first_replicas(&self, root: PeerIx) -> PeerSet {
        let dead = self.joiners & !(1 << root);
        self.topo.replicas(root, self.gid, self.k, dead)
    }

    /// Restarts and joins the run may take.
    pub fn rejoins(&self) -> usize {
        self.restarts + self.joiners.count_ones() as usize
    }

    /// The size of a root's nominal replica group: itself and its k replicas (fewer in an
    /// overlay that small), whether it can reach them now or not (the model forgets no peer).
    pub fn replica_group(&self) -> usize {
        1 + self.k.min(self.peers() - 1)
    }

    /// Whether `replicas` reachable replicas make a majority of the nominal replica group
    /// (production `replication::quorum`): the smaller side of a partition commits nothing.
    /// Below three there is no majority to protect.
    pub fn quorum(&self, replicas: usize) -> bool {
        let n = self.replica_group();
        !self.fencing() || n < 3 || replicas >= n / 2
    }

    /// Number of peers (actors `0..peers()`).
    pub fn peers(&self) -> usize {
        self.topo.len()
    }

    /// Actor index of subscriber `i`.
    pub fn subscriber_id(&self, i: usize) -> usize {
        self.peers() + i
    }

    /// Actor index of publisher `j`.
    pub fn publisher_id(&self, j: usize) -> usize {
        self.peers() + self.subscribers.len() + j
    }

    /// Number of actors.
    pub fn actors(&self) -> usize {
        self.peers() + self.subscribers.len() + self.publishers.len()
    }

    /// The observer sink: an id no actor has, so messages to it are never delivered.
    pub fn sink(&self) -> Id {
        Id::from(self.actors())
    }

    /// Subscriber index of an actor, if it is one.
    pub fn subscriber_index(&self, id: usize) -> Option<usize> {
        (self.peers()..self.peers() + self.subscribers.len())
            .contains(&id)
            .then(|| id - self.peers())
    }

    /// Publisher index of an actor, if it is one.
    pub fn publisher_index(&self, id: usize) -> Option<usize> {
        let first = self.peers() + self.subscribers.len();
        (first..first + self.publishers.len())
            .contains(&id)
            .then(|| id - first)
    }

    /// A readable actor name: peers by their Fig. 3 letter, subscribers `S1…`, publishers `U1…`.
    pub fn actor_name(&self, id: usize) -> String {
        if id < self.peers() {
            self.topo.name(id as PeerIx)
        } else if let Some(i) = self.subscriber_index(id) {
            format!("S{}", i + 1)
        } else if let Some(j) = self.publisher_index(id) {
            format!("U{}", j + 1)
        } else {
            "observer".into()
        }
    }

    /// One-line summary of the configuration.
    pub fn summary(&self) -> String {
        let peers: Vec<String> = (0..self.peers())
            .map(|p| format!("{}={}", self.topo.name(p as PeerIx), self.topo.ids[p]))
            .collect();
        let subs: Vec<String> = self
            .subscribers
            .iter()
            .enumerate()
            .map(|(i, &p)| format!("S{}@{}", i + 1, self.topo.name(p)))
            .collect();
        let pubs: Vec<String> = self
            .publishers
            .iter()
            .enumerate()
            .map(|(j, (p, s))| format!("U{}@{}x{}", j + 1, self.topo.name(*p), s.len()))
            .collect();
        format!(
            "peers [{}] gid {} root {} k={} subscribers [{}] publishers [{}] crashes {} network {:?} losses {} expiries {} unsubscribes {}{}{}{}{}{}{}{}",
            peers.join(" "),
            self.gid,
            self.topo
                .name(self.topo.closest_live(self.gid, self.joiners).unwrap()),
            self.k,
            subs.join(" "),
            pubs.join(" "),
            if self.crashes_after > 0 {
                format!("{} (after {} commits)", self.max_crashes, self.crashes_after)
            } else {
                self.max_crashes.to_string()
            },
            self.network,
            self.losses,
            self.expiries,
            self.unsubscribes,
            if self.moves > 0 {
                format!(" moves {}", self.moves)
            } else {
                String::new()
            },
            if self.handovers > 0 {
                format!(" handovers {}", self.handovers)
            } else {
                String::new()
            },
            if self.suspicions > 0 {
                let kind = if self.partition { " (partitions)" } else { "" };
                format!(" suspicions {}{kind}", self.suspicions)
            } else {
                String::new()
            },
            if self.tree_losses > 0 {
                format!(" tree-losses {}", self.tree_losses)
            } else {
                String::new()
            },
            if self.restarts > 0 {
                let perfect = if self.perfect_detector {
                    " (perfect detector)"
                } else {
                    ""
                };
                format!(" restarts {}{perfect}", self.restarts)
            } else {
                String::new()
            },
            if self.joiners != 0 {
                let names: Vec<String> = (0..self.peers() as PeerIx)
                    .filter(|&p| self.joiners & (1 << p) != 0)
                    .map(|p| self.topo.name(p))
                    .collect();
                format!(" joining [{}]", names.join(" "))
            } else {
                String::new()
            },
            self.mutant.map(|m| format!(" mutant {m}")).unwrap_or_default()
        )
    }
}
