//! The command-line flags that describe a model configuration, shared by the model's binary
//! and the conformance suite's `validate-run`.

use crate::setup::NetworkKind;
use crate::{Mutant, Options, Preset, Setup};
use clap::Args;

fn parse<T: std::str::FromStr<Err = String>>(s: &str) -> Result<T, String> {
    s.parse()
}

/// The model configuration flags of `sascribe-model check` and `explore` (and of
/// `sascribe-conformance validate-run`): a preset and the sizes and budgets that override it.
/// (The model's seeded bug, `--mutant`, is the checker's own flag.)
#[derive(Args, Clone, Debug)]
pub struct ConfigArgs {
    /// Starting configuration: small, multihop or fig3.
    #[arg(long, default_value = "small", value_parser = parse::<Preset>)]
    pub config: Preset,
    /// Number of peers (2-8).
    #[arg(long)]
    pub peers: Option<usize>,
    /// Number of subscribing user agents (0-4).
    #[arg(long)]
    pub subscribers: Option<usize>,
    /// Number of publishes, spread over two publishing user agents, U1 and U2 (0-6): U1's
    /// initial, U2's initial, U1's modify, U2's removal, U1's stale conditional (412), U2's
    /// refresh.
    #[arg(long)]
    pub publishes: Option<usize>,
    /// Peer crashes allowed (default 1).
    #[arg(long)]
    pub crashes: Option<usize>,
    /// Replication factor k (at least 1, below the number of peers; default 2).
    #[arg(long)]
    pub k: Option<usize>,
    /// Network: unordered, ordered or duplicating.
    #[arg(long, default_value = "unordered", value_parser = parse::<NetworkKind>)]
    pub network: NetworkKind,
    /// Overlay request/response messages the network may lose.
    #[arg(long, default_value_t = 0)]
    pub losses: usize,
    /// Event-state expiries allowed (default 0).
    #[arg(long)]
    pub expiries: Option<usize>,
    /// How many subscribers (the first ones) unsubscribe after subscribing.
    #[arg(long, default_value_t = 0)]
    pub unsubscribes: usize,
    /// Every subscriber at the same peer (the first subscriber's): several local subscriptions
    /// of the group at one peer.
    #[arg(long)]
    pub colocated: bool,
    /// Subscriptions that may move: a subscriber whose first-contact peer crashed subscribes
    /// again through another live peer (production: the `deactivated` NOTIFY of a leaving
    /// peer, or a failed refresh). Needs a crash.
    #[arg(long, default_value_t = 0)]
    pub moves: usize,
    /// Subscriptions handed over: a peer about to leave hands an active subscription of a
    /// subscriber that stays to another live peer, which carries its dialog on (production:
    /// the orderly shutdown's dialog handover).
    #[arg(long, default_value_t = 0)]
    pub handovers: usize,
    /// False suspicions allowed: a live peer is suspected by the others (a pause or a
    /// partition), later heals; records then carry a root epoch, replicas fence, roots serve
    /// under a lease (default 0: a perfect failure detector).
    #[arg(long, default_value_t = 0)]
    pub suspicions: usize,
    /// Each suspicion is a partition rather than a pause: the suspected peer keeps running
    /// alone (it declares every other peer dead; its user agents reach it); roots commit only
    /// with a replica quorum.
    #[arg(long)]
    pub partition: bool,
    /// Tree and replication messages the network may lose (0-2): multicast, REPLICATE and
    /// its acknowledgement, a fetch and its reply; tree heartbeats and the root's
    /// replication retry repair them.
    #[arg(long, default_value_t = 0)]
    pub tree_losses: usize,
    /// Crashed peers that may restart: a peer comes back with no state, once every live
    /// peer has declared it dead, and joins the overlay again (default 0: crash-stop).
    #[arg(long, default_value_t = 0)]
    pub restarts: usize,
    /// With --restarts: the failure detector never suspects a live peer, and peers run
    /// without promises, leases and fencing, as production does with `root_lease` = never
    /// (the conformance harness's setting): a restarted peer is ordered by epochs and
    /// `NotRoot` alone.
    #[arg(long)]
    pub perfect_detector: bool,
    /// Crashes happen only once this many publications were committed (default 0: from the
    /// start): runs where a crash takes what members were already told.
    #[arg(long, default_value_t = 0)]
    pub crashes_after: usize,
    /// Peers that join mid-run (0-1): the peer closest to the group id (the nominal root)
    /// starts outside the overlay, a farther peer serves as root, and hands the group over
    /// when it joins.
    #[arg(long, default_value_t = 0)]
    pub joins: usize,
}

impl ConfigArgs {
    /// The options these flags give.
    pub fn options(&self) -> Options {
        Options {
            preset: self.config,
            peers: self.peers,
            subscribers: self.subscribers,
            publishes: self.publishes,
            crashes: self.crashes,
            crashes_after: self.crashes_after,
            k: self.k,
            network: self.network,
            losses: self.losses,
            expiries: self.expiries,
            unsubscribes: self.unsubscribes,
            colocated: self.colocated,
            moves: self.moves,
            handovers: self.handovers,
            suspicions: self.suspicions,
            partition: self.partition,
            tree_losses: self.tree_losses,
            restarts: self.restarts,
            perfect_detector: self.perfect_detector,
            joins: self.joins,
            mutant: None,
        }
    }

    /// The configuration these flags give with the seeded bug `mutant`, every option checked.
    pub fn setup(&self, mutant: Option<Mutant>) -> Result<Setup, String> {
        Setup::new(&Options {
            mutant,
            ..self.options()
        })
    }
}

/// The checker's `--mutant` flag.
pub fn parse_mutant(s: &str) -> Result<Mutant, String> {
    parse(s)
}
