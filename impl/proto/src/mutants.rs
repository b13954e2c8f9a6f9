//! Seeded bugs for the conformance suite's non-vacuity check (`conformance/tests/mutants.rs`).
//!
//! Each variant names one deliberate deviation from the protocol. A bug is active only when the
//! crate is built with the `mutants` feature **and** `Config::mutant` (a field only that
//! feature adds) selects it; in a default build [`crate::Config::mutant_on`] is constant
//! `false` and the checks compile away.

/// A seeded bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mutant {
    /// The root adopts a state carried by a JOIN even when its seq is lower than its own.
    RootAcceptsLowerSeq,
    /// The root does not replicate: it commits without any replica holding the record.
    SkipReplication,
    /// The root reuses the current entity tag instead of minting a new one.
    ReuseEtag,
    /// A member sends NOTIFYs to local subscriptions that are not accepted yet.
    NotifyBeforeAck,
    /// JOINs do not carry the latest state known below (re-JOIN reconciliation is lost).
    JoinDropsState,
    /// The root ignores `SIP-If-Match`.
    IgnoreIfMatch,
    /// The root does not bump the seq of a new publication.
    SeqNotBumped,
    /// A member passes on states that are not newer than its subscriber's last one.
    NoStaleFilter,
    /// The root answers a JOIN for a group without state with nothing (no nACK).
    NoNack,
    /// An on-tree peer answers a JOIN from its own state instead of forwarding it to the root.
    AnswerFromIntermediate,
    /// The root does not multicast a committed publication to its children.
    NoMulticast,
    /// The root grants the requested expiry without clamping it to the maximum.
    NoExpiryClamp,
    /// The root never expires a publication.
    NoExpiry,
    /// An unsubscribe is acknowledged but the subscription keeps receiving NOTIFYs.
    UnsubscribeIgnored,
    /// A root whose publication expired answers JOINs with a bare nACK (no seq), so re-JOINing
    /// members never learn the expiry.
    NackForgetsExpiry,
}

impl Mutant {
    /// Every seeded bug.
    pub const ALL: [Mutant; 15] = [
        Mutant::RootAcceptsLowerSeq,
        Mutant::SkipReplication,
        Mutant::ReuseEtag,
        Mutant::NotifyBeforeAck,
        Mutant::JoinDropsState,
        Mutant::IgnoreIfMatch,
        Mutant::SeqNotBumped,
        Mutant::NoStaleFilter,
        Mutant::NoNack,
        Mutant::AnswerFromIntermediate,
        Mutant::NoMulticast,
        Mutant::NoExpiryClamp,
        Mutant::NoExpiry,
        Mutant::UnsubscribeIgnored,
        Mutant::NackForgetsExpiry,
    ];

    /// Kebab-case name (`root-accepts-lower-seq`).
    pub fn name(self) -> String {
        let s = format!("{self:?}");
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if c.is_ascii_uppercase() {
                if i > 0 {
                    out.push('-');
                }
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    }

    /// The bug named `name` (as [`Mutant::name`] spells it).
    pub fn from_name(name: &str) -> Option<Mutant> {
        Mutant::ALL.into_iter().find(|m| m.name() == name)
    }
}
