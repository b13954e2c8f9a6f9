//! Seeded protocol bugs. Each mutant breaks one mechanism; the test suite asserts that the checker
//! finds a counterexample to the property named beside it, which shows that property is not
//! vacuous.

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
    SeqNotBumped = "seq-not-bumped" => "notified-was-published",
        "The root stamps a new publication with the current seq instead of the next one.";
    AnswerFromIntermediate = "answer-from-intermediate" => "first-notify-fresh",
        "An on-tree peer answers a JOIN from its own, possibly stale, state instead of forwarding it to the root.";
    NoReplication = "no-replication" => "no-rollback",
        "The root replicates nothing to its k nearest peers (and acknowledges at once).";
    RootAcceptsLowerSeq = "root-accepts-lower-seq" => "no-rollback",
        "A root adopts the state carried by a re-JOIN even when its seq is lower than its own.";
    EtagIgnored = "etag-ignored" => "412-changes-nothing",
        "The root applies a conditional publish whatever its SIP-If-Match (never answers 412).";
    RejoinViaChild = "rejoin-via-child" => "tree-acyclic",
        "An orphaned peer re-JOINs through one of its own children.";
    NoNack = "no-nack" => "subscribe-answered",
        "A root without state silently drops a JOIN instead of answering nACK.";
    NoRetry = "no-retry" => "publish-answered",
        "A first-contact peer never retransmits a request lost with a failed peer.";
    NoMulticast = "no-multicast" => "subscribers-converge",
        "The root commits publications without multicasting them down the tree.";
    UnsubscribeIgnored = "unsubscribe-ignored" => "no-notify-after-unsubscribe",
        "A first-contact peer keeps a subscription its user agent ended.";
    NackForgetsExpiry = "nack-forgets-expiry" => "subscribers-converge",
        "A root whose publication expired answers JOINs with a bare nACK, so a re-JOINing member never learns the expiry.";
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
