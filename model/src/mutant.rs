//! Seeded protocol bugs. Each mutant breaks one mechanism; the test suite asserts that the checker
//! finds a counterexample to the property named beside it, which shows that property is not
//! vacuous.

use crate::setup::{Options, Preset, Setup};
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

macro_rules! mutants {
    ($($variant:ident = $name:literal => $property:literal, $doc:literal;)*) => {
        /// A seeded protocol bug (a mutant switch).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
        pub enum Mutant {
            $(#[doc = $doc] $variant,)*
        }

        impl Mutant {
            /// Every mutant.
            pub const ALL: &'static [Mutant] = &[$(Mutant::$variant,)*];

            /// Command-line name.
            pub fn name(self) -> &'static str {
                match self { $(Mutant::$variant => $name,)* }
            }

            /// The property whose counterexample shows the bug.
            pub fn property(self) -> &'static str {
                match self { $(Mutant::$variant => $property,)* }
            }

            /// What the bug is.
            pub fn description(self) -> &'static str {
                match self { $(Mutant::$variant => $doc,)* }
            }
        }
    };
}

mutants! {
    NoStaleFilter = "no-stale-filter" => "notify-seq-increasing",
        "A member passes every state it hears to its subscribers, even one older than their last NOTIFY.";
    NotifyBeforeAck = "notify-before-ack" => "notify-after-ack",
        "A member sends NOTIFYs to a subscriber whose SUBSCRIBE the root has not yet answered.";
    SeqNotBumped = "seq-not-bumped" => "single-committer",
        "The root stamps a new publication with the current seq instead of the next one.";
    AnswerFromIntermediate = "answer-from-intermediate" => "first-notify-fresh",
        "An on-tree peer answers a JOIN from its own, possibly stale, state instead of forwarding it to the root.";
    NoReplication = "no-replication" => "acked-durable",
        "The root replicates nothing to its k nearest peers (and acknowledges at once).";
    RootAcceptsLowerSeq = "root-accepts-lower-seq" => "no-rollback",
        "A root adopts the state carried by a re-JOIN even when its seq is lower than its own.";
    EtagIgnored = "etag-ignored" => "412-changes-nothing",
        "The root applies a conditional publish whatever its SIP-If-Match (never answers 412).";
    RejoinViaChild = "rejoin-via-child" => "tree-acyclic",
        "An orphaned peer re-JOINs through one of its own children.";
    EmptyRootSilent = "empty-root-silent" => "subscribe-answered",
        "A root without state silently drops a JOIN instead of accepting the subscriber.";
    NoRetry = "no-retry" => "publish-answered",
        "A first-contact peer never retransmits a request lost with a failed peer.";
    NoMulticast = "no-multicast" => "subscribers-converge",
        "The root commits publications without multicasting them down the tree.";
    UnsubscribeIgnored = "unsubscribe-ignored" => "no-notify-after-unsubscribe",
        "A first-contact peer keeps a subscription its user agent ended.";
    AckForgetsExpiry = "ack-forgets-expiry" => "subscribers-converge",
        "A root whose states all expired answers JOINs with a bare ACK (no seq), so a re-JOINing member never learns the expiry.";
    OneState = "one-state" => "modify-not-refused",
        "The root keeps one event state per presentity: a new publication replaces the others, so another publisher's modify gets 412.";
    RemoveAll = "remove-all" => "removal-keeps-others",
        "A removal (PUBLISH with Expires: 0) drops every event state of the presentity, not only the one its SIP-If-Match names.";
    NotifyBeforeCommit = "notify-before-commit" => "notified-was-published",
        "The root multicasts (and notifies) a publication as soon as it applies it, before every replica holds it.";
    AckBeforeReplicated = "ack-before-replicated" => "acked-durable",
        "The root commits and answers 200 at once, without waiting for its replicas to hold the state (it still replicates).";
    RefusalConsumesSeq = "refusal-consumes-seq" => "412-changes-nothing",
        "The root stamps the next seq before it checks SIP-If-Match, so a 412 moves its state on without a commit.";
    NoDedup = "no-dedup" => "publish-applied-once",
        "The root applies a retransmitted PUBLISH again instead of answering it from the stored result.";
    NoExpiryClamp = "no-expiry-clamp" => "expiry-in-bounds",
        "The root grants the expiry a PUBLISH asks for, above its maximum.";
    NoRejoin = "no-rejoin" => "tree-connected",
        "An orphaned member (its parent crashed) forgets its parent but does not re-JOIN.";
    AnswerOldEtag = "answer-old-etag" => "central-notifier",
        "The root answers a modify's 200 with the SIP-If-Match tag it named instead of the state's new ETag.";
    NoFetch = "no-fetch" => "no-rollback",
        "A peer that takes the root role over, or gets it back after a suspicion, serves with what it holds, without fetching its replicas' records.";
    NoLease = "no-lease" => "no-rollback",
        "A suspected root keeps serving: once healed it answers from its stale record without fetching again.";
    LeaseIgnored = "lease-ignored" => "no-rollback",
        "A peer grants a newer root's fetch while a lease it confirmed for another root may still run: after a partition heals, the older root answers a JOIN from a state the newer one has moved past.";
    LocalAnswer = "local-answer" => "moved-no-rollback",
        "A peer already on the group's tree accepts a new local subscriber at once with the state it holds (none: nothing published), without asking the root; a subscriber that moved there from a crashed peer can be shown an older state than it saw.";
    HandoverDropped = "handover-dropped" => "subscribers-converge",
        "A peer that leaves forgets the subscriptions it hands over without sending them: their subscribers hear of no later change.";
    HandoverSilent = "handover-silent" => "subscribers-converge",
        "A peer taking a subscription over sends its first NOTIFY only when the state moved on: a subscriber never learns where its dialog went (its refresh goes to the peer that left).";
    NoQuorum = "no-quorum" => "single-committer",
        "A root commits with whatever replicas it reaches: on the smaller side of a partition it acknowledges publications that the other side's root never sees.";
    HeartbeatWithoutSeq = "heartbeat-without-seq" => "subscribers-converge",
        "A parent ignores the seq of its child's heartbeat acknowledgement: a child that missed a multicast is never sent the state again.";
    NoParentTimeout = "no-parent-timeout" => "tree-connected",
        "A child never times out a parent that stopped beating it: when its LEAVE was overtaken by its own later JOIN through that parent, the parent dropped the branch it had just grafted, and the subscribers below are cut off for good.";
    LocalJoinNoQuorum = "local-join-no-quorum" => "first-notify-fresh",
        "A root answers a JOIN of its own local subscriber without a replica quorum: cut off by a partition, it shows the subscriber a state older than one the other side acknowledged.";
    LeaselessIdle = "leaseless-idle" => "subscribers-converge",
        "A root that serves without a lease (its promise rounds were refused by a replica that still saw the crashed root alive) starts no new round for the requests it holds: once that replica notices the crash nothing grants it a lease, and the requests wait for good.";
    NoAbsorb = "no-absorb" => "stamp-above-view",
        "A root whose record is behind what its member view heard (a late NOTIFY or ACK of a root that died with every replica) keeps its record: its next change is stamped below what members were told, and they drop it.";
    RestartAsRoot = "restart-as-root" => "no-rollback",
        "A peer that restarts, or joins, as the closest to the group takes the root role at once with an empty record (as the group's first root does), without fetching its replicas' records.";
}

impl fmt::Display for Mutant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mutant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Mutant::ALL
            .iter()
            .copied()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Mutant::ALL.iter().map(|m| m.name()).collect();
                format!("unknown mutant '{s}'; known: {}", names.join(", "))
            })
    }
}

/// A small configuration on which the checker catches a mutant (and the correct model satisfies
/// every property): preset, subscribers, publishes, crashes, expiries, subscribers that
/// unsubscribe, whether every subscriber sits on peer A (so that their JOINs share the
/// intermediate C in `multihop`), overlay messages the network may lose, false suspicions,
/// whether they are partitions, subscriptions that may move to another peer,
/// subscriptions a leaving peer may hand over, crashed peers that may restart, peers that
/// join mid-run, tree and replication messages the network may lose, the replication factor
/// (`None`: the preset's), and the commits before the first crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CatchConfig(
    pub Preset,
    pub usize,
    pub usize,
    pub usize,
    pub usize,
    pub usize,
    pub bool,
    pub usize,
    pub usize,
    pub bool,
    pub usize,
    pub usize,
    pub usize,
    pub usize,
    pub usize,
    pub Option<usize>,
    pub usize,
);

impl CatchConfig {
    /// The model setup, with `mutant` seeded (or the correct model).
    pub fn setup(self, mutant: Option<Mutant>) -> Setup {
        let CatchConfig(
            preset,
            subscribers,
            publishes,
            crashes,
            expiries,
            unsubscribes,
            on_a,
            losses,
            suspicions,
            partition,
            moves,
            handovers,
            restarts,
            joins,
            tree_losses,
            k,
            crashes_after,
        ) = self;
        Setup::new(&Options {
            preset,
            subscribers: Some(subscribers),
            publishes: Some(publishes),
            crashes: Some(crashes),
            expiries: Some(expiries),
            unsubscribes,
            colocated: on_a,
            losses,
            suspicions,
            partition,
            moves,
            handovers,
            restarts,
            joins,
            tree_losses,
            k,
            crashes_after,
            mutant,
            ..Default::default()
        })
        .expect("catching configurations are valid")
    }
}

impl Mutant {
    /// Where the checker is shown to catch this mutant (`model/tests/mutants.rs`).
    pub fn catching_config(self) -> CatchConfig {
        use Mutant::*;
        use Preset::*;
        match self {
            NoStaleFilter => CatchConfig(
                Small, 2, 1, 0, 0, 0, true, 0, 0, false, 0, 0, 0, 0, 0, None, 0,
            ),
            NotifyBeforeAck => CatchConfig(
                Small, 1, 2, 0, 0, 0, false, 0, 0, false, 0, 0, 0, 0, 0, None, 0,
            ),
            SeqNotBumped | NoMulticast => CatchConfig(
                Small, 1, 3, 0, 0, 0, false, 0, 0, false, 0, 0, 0, 0, 0, None, 0,
            ),
            AnswerFromIntermediate => CatchConfig(
                Multihop, 2, 3, 0, 0, 0, true, 0, 0, false, 0, 0, 0, 0, 0, None, 0,
            ),
            NoReplication | NoRetry => CatchConfig(
                Small, 0, 1, 1, 0, 0, false, 0, 0, false, 0, 0, 0, 0, 0, None, 0,
            ),
            RootAcceptsLowerSeq => CatchConfig(
                Small, 1, 2, 1, 0, 0, false, 0, 0, false, 0, 0, 0, 0, 0, None, 0,
            ),
            EtagIgnored => CatchConfig(
                Small, 0, 3, 0, 1, 0, false, 0, 0, false, 0, 0, 0, 0, 0, None, 0,
            ),
            RejoinViaChild => CatchConfig(
                Multihop, 1, 0, 1, 0, 0, true, 0, 0, false, 0, 0, 0, 0, 0, None, 0,
            ),
            EmptyRootSilent => CatchConfig(
                Small, 1, 0, 0, 0, 0, false, 0, 0, false, 0, 0, 0, 0, 0, None, 0,
            ),
            UnsubscribeIgnored => CatchConfig(
                Small, 1, 1, 0, 0, 1, false, 0, 0, false, 0, 0, 0, 0, 0, None, 0,
            ),
            AckForgetsExpiry => CatchConfig(
                Small, 1, 1, 1, 1, 0, false, 0, 0, false, 0, 0, 0, 0, 0, None, 0,
            ),
            OneState => CatchConfig(
                Small, 0, 3, 0, 0, 0, false, 0, 0, false, 0, 0, 0, 0, 0, None, 0,
            ),
            RemoveAll => CatchConfig(
                Small, 0, 4, 0, 0, 0, false, 0, 0, false, 0, 0, 0, 0, 0, None, 0,
            ),
            NotifyBeforeCommit => CatchConfig(
                Small, 1, 1, 0, 0, 0, false, 0, 0, false, 0, 0, 0, 0, 0, None, 0,
            ),
            AckBeforeReplicated => CatchConfig(
                Small, 0, 1, 1, 0, 0, false, 0, 0, false, 0, 0, 0, 0, 0, None, 0,
            ),
            RefusalConsumesSeq => CatchConfig(
                Small, 0, 3, 0, 1, 0, false, 0, 0, false, 0, 0, 0, 0, 0, None, 0,
            ),
            NoDedup => CatchConfig(
                Small, 0, 1, 0, 0, 0, false, 1, 0, false, 0, 0, 0, 0, 0, None, 0,
            ),
            NoExpiryClamp => CatchConfig(
                Small, 0, 1, 0, 0, 0, false, 0, 0, false, 0, 0, 0, 0, 0, None, 0,
            ),
            NoRejoin => CatchConfig(
                Multihop, 1, 0, 1, 0, 0, true, 0, 0, false, 0, 0, 0, 0, 0, None, 0,
            ),
            AnswerOldEtag => CatchConfig(
                Small, 0, 3, 0, 0, 0, false, 0, 0, false, 0, 0, 0, 0, 0, None, 0,
            ),
            // The root D is suspected before anything is published; C takes over when U1's
            // publish reaches it and commits it; D heals and, closest again, serves with its
            // empty record.
            NoFetch | NoLease => CatchConfig(
                Small, 0, 1, 0, 0, 0, false, 0, 1, false, 0, 0, 0, 0, 0, None, 0,
            ),
            // A, U2's first-contact peer, is cut off and, alone, takes the root role over; D
            // commits U1's publish with C; A commits U2's with nobody.
            NoQuorum => CatchConfig(
                Small, 0, 2, 0, 0, 0, false, 0, 1, true, 0, 0, 0, 0, 0, None, 0,
            ),
            // D is cut off; C takes over and commits U1's publish with A; once healed, D
            // fetches again and A grants it while C's lease runs; D commits U2's publish, and
            // C answers S1's JOIN from the older state.
            LeaseIgnored => CatchConfig(
                Small, 1, 2, 0, 0, 0, false, 0, 1, true, 0, 0, 0, 0, 0, None, 0,
            ),
            // A, S1's peer, is cut off and, alone, takes the root role over with nothing;
            // D commits U2's publish with C and U2 is answered; S1 subscribes at A, which
            // answers at once: nothing published (`model/nightly.sh` found the correct model
            // doing so, 2026-12-02).
            LocalJoinNoQuorum => CatchConfig(
                Small, 1, 2, 0, 0, 0, false, 0, 1, true, 0, 0, 0, 0, 0, None, 0,
            ),
            // S2 at C is notified of U1's publish; C crashes; S2 moves to A, on the tree for
            // S1 but still without that state, which answers it at once from what it holds.
            LocalAnswer => CatchConfig(
                Small, 2, 1, 1, 0, 0, false, 0, 0, false, 1, 0, 0, 0, 0, None, 0,
            ),
            // S1's peer hands its dialog over before U1 publishes; the taker never hears of it
            // (dropped), or tells S1 nothing until the state moves on (silent).
            // U1's publish is committed at D; D crashes and C takes over; D restarts with
            // nothing and, the closest peer again, serves at once with its empty record.
            // U1's publish is committed; its multicast to S1's peer is lost; the heartbeat
            // round never resends it.
            HeartbeatWithoutSeq => CatchConfig(
                Small, 1, 1, 0, 0, 0, false, 0, 0, false, 0, 0, 0, 0, 1, None, 0,
            ),
            RestartAsRoot => CatchConfig(
                Small, 0, 1, 1, 0, 0, false, 0, 0, false, 0, 0, 1, 0, 0, None, 0,
            ),
            // D crashes; C, which has detected it, takes over when U2 publishes; A, which has
            // not, refuses its promise rounds until C serves without a lease; A then detects
            // the crash and forwards U1's publish, which C holds with U2's for good.
            LeaselessIdle => CatchConfig(
                Small, 0, 2, 1, 0, 0, false, 0, 0, false, 0, 0, 1, 0, 0, None, 0,
            ),
            // S1 at A unsubscribes: A leaves C, and C, needing the group no more, leaves D; S2
            // at B subscribes through C, whose JOIN reaches D before C's LEAVE does.
            NoParentTimeout => CatchConfig(
                Fig3, 2, 0, 0, 0, 1, false, 0, 0, false, 0, 0, 0, 0, 1, None, 0,
            ),
            // One replica, two crashes once a publish is committed (beyond what k replicas
            // keep): the root and its replica die; the new root, which held nothing, hears the
            // committed state late (a NOTIFY, an ACK passing through it or answering its own
            // re-JOIN), and must stamp the next publish above it.
            NoAbsorb => CatchConfig(
                Small,
                1,
                2,
                2,
                0,
                0,
                false,
                0,
                0,
                false,
                0,
                0,
                0,
                0,
                0,
                Some(1),
                1,
            ),
            HandoverDropped | HandoverSilent => CatchConfig(
                Small, 1, 1, 0, 0, 0, false, 0, 0, false, 0, 1, 0, 0, 0, None, 0,
            ),
        }
    }
}
