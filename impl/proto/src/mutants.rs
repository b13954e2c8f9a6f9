//! Seeded bugs for the conformance suite's non-vacuity check (`conformance/tests/mutants.rs`).
//!
//! The suite drives peers through their SIP front end, so it judges what user agents see. A
//! guarantee the SIP layer enforces again over the overlay layer's (NOTIFY only after the 200,
//! never a stale state, nothing after an un-SUBSCRIBE) is seeded in both layers at once: a
//! bug in one layer alone is masked by the other and is not a bug a user agent can see.
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
    /// A member sends NOTIFYs to local subscriptions that are not accepted yet, and the SIP
    /// front end sends them before its 200.
    NotifyBeforeAck,
    /// JOINs do not carry the latest state known below (re-JOIN reconciliation is lost).
    JoinDropsState,
    /// The root ignores `SIP-If-Match`.
    IgnoreIfMatch,
    /// The root does not bump the seq of a new publication.
    SeqNotBumped,
    /// A member, and the SIP front end, pass on states that are not newer than the
    /// subscriber's last one.
    NoStaleFilter,
    /// A root without state (nothing published, or every state gone) silently drops a JOIN
    /// instead of accepting the subscriber.
    EmptyRootSilent,
    /// An on-tree peer answers a JOIN from its own state instead of forwarding it to the root.
    AnswerFromIntermediate,
    /// The root does not multicast a committed publication to its children.
    NoMulticast,
    /// The root grants the requested expiry without clamping it to the maximum.
    NoExpiryClamp,
    /// The root never expires a publication.
    NoExpiry,
    /// An un-SUBSCRIBE is answered 200 but the subscription keeps receiving NOTIFYs (neither
    /// the SIP front end nor the overlay layer ends it).
    UnsubscribeIgnored,
    /// A root whose states all expired (or were removed) answers JOINs with a bare ACK (seq 0
    /// instead of its seq), so re-JOINing members never learn the expiry.
    AckForgetsExpiry,
    /// The root keeps one event state per presentity: a new publication replaces the others,
    /// so another publisher's modify gets 412.
    OneState,
    /// A removal (PUBLISH with `Expires: 0`) drops every event state of the presentity, not
    /// only the one its `SIP-If-Match` names.
    RemoveAll,
    /// SIP: a stale `SIP-If-Match` is answered 400 instead of 412 Conditional Request Failed.
    WrongPreconditionCode,
    /// SIP: a retransmitted request is handled as a new one instead of being absorbed by its
    /// server transaction (a PUBLISH is applied twice).
    NoRetransmissionAbsorption,
    /// SIP: the 200 to an initial SUBSCRIBE is not followed by a NOTIFY with the current state
    /// (RFC 6665 §4.2.1 requires one at once).
    NoImmediateNotify,
    /// State only (the messages stay right): a peer that learns a child crashed keeps it as a
    /// child (what it sends the dead peer is never delivered).
    DeadChildKept,
    /// State only: a peer left with no subscription and no child sends its LEAVE but keeps its
    /// parent.
    PruneKeepsParent,
    /// Mostly state: a peer on a JOIN's reverse path forwards the root's ACK without learning
    /// the state it carries (its later JOINs then carry an older state).
    ReversePathForgets,
    /// State only: a replica acknowledges every REPLICATE but keeps the first record it got.
    ReplicaKeepsFirst,
    /// State only: ending a local subscription removes it from the SIP-facing table but not
    /// from its group, so the peer keeps counting it and stays in the tree.
    UnsubscribeKeepsSub,
    /// Tree maintenance: a parent ignores the seq a child's heartbeat acknowledgement carries,
    /// so a child that missed a multicast is never sent the state again.
    BeatAckIgnored,
    /// Tree maintenance: a LEAVE (or a heartbeat answer naming the group as left) changes
    /// nothing: the parent keeps the branch and never leaves the tree itself.
    LeaveIgnored,
    /// Fault tolerance: a root answers from its record whether or not its lease holds (a
    /// paused or cut-off root answers from a stale record when it comes back).
    NoLease,
    /// Fault tolerance: a root commits with whatever replicas it can reach, however few (the
    /// smaller side of a partition acknowledges too, and loses it when the sides meet).
    NoQuorum,
    /// Fault tolerance: a replica grants a newer root's fetch, and acknowledges its
    /// REPLICATEs, while a lease it confirmed for another root may still run (two roots then
    /// serve at once after a heal: the older answers from a state the newer moved past).
    LeaseIgnored,
}

impl Mutant {
    /// Every seeded bug.
    pub const ALL: [Mutant; 27] = [
        Mutant::RootAcceptsLowerSeq,
        Mutant::SkipReplication,
        Mutant::ReuseEtag,
        Mutant::NotifyBeforeAck,
        Mutant::JoinDropsState,
        Mutant::IgnoreIfMatch,
        Mutant::SeqNotBumped,
        Mutant::NoStaleFilter,
        Mutant::EmptyRootSilent,
        Mutant::AnswerFromIntermediate,
        Mutant::NoMulticast,
        Mutant::NoExpiryClamp,
        Mutant::NoExpiry,
        Mutant::UnsubscribeIgnored,
        Mutant::AckForgetsExpiry,
        Mutant::OneState,
        Mutant::RemoveAll,
        Mutant::WrongPreconditionCode,
        Mutant::NoRetransmissionAbsorption,
        Mutant::NoImmediateNotify,
        Mutant::DeadChildKept,
        Mutant::PruneKeepsParent,
        Mutant::ReversePathForgets,
        Mutant::ReplicaKeepsFirst,
        Mutant::UnsubscribeKeepsSub,
        Mutant::BeatAckIgnored,
        Mutant::LeaveIgnored,
    ];

    /// Seeded bugs in the fault-tolerance mechanisms that the model's traces cannot reach yet
    /// (false suspicion): `impl/tests/false_suspicion.rs` kills them.
    pub const FAULTS: [Mutant; 3] = [Mutant::NoLease, Mutant::NoQuorum, Mutant::LeaseIgnored];

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
        Mutant::ALL
            .into_iter()
            .chain(Mutant::FAULTS)
            .find(|m| m.name() == name)
    }
}
