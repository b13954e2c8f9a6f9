//! What a root holds for its group: the record (seq, revision, the presentity's event states —
//! one per entity tag, RFC 3903 §4 — their composed document, and the recent outcomes for
//! deduplication), the change waiting for its replicas, and the root role's own bookkeeping.
//!
//! Records are kept after their last state expires or is removed (seq tombstones), so a later
//! root never reuses a seq. A record with seq 0 (a group created by a JOIN, nothing published
//! yet) is no tombstone: it goes with its group once nobody is subscribed (see `root_tick`).

use super::{secs, Group};
use crate::id::NodeId;
use crate::pidf;
use crate::timer::Armed;
use crate::wire::{
    ETag, Latest, NodeHandle, PubOutcome, PubReqId, PublishReply, Routed, WireRecord, WireState,
};
use crate::Millis;
use bytes::Bytes;
use std::collections::VecDeque;

/// Committed publications remembered for deduplication of retries.
pub const DEDUP_LEN: usize = 32;
/// Requests a root queues while it activates or commits; more are dropped (they are retried).
pub const MAX_QUEUE: usize = 1024;

/// One event state of the presentity (RFC 3903 §4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct State {
    pub etag: ETag,
    pub body: Bytes,
    pub content_type: Option<String>,
    pub expires_at: Millis,
    /// Seq of the change that created it (0: a state adopted from the tree, whose history is
    /// not known here; see [`Record::adopt`]).
    pub created: u64,
    /// Seq of the change that last set it.
    pub changed: u64,
}

/// A group record: held authoritatively by the root, as a copy by replicas.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Record {
    /// Root epoch of the root that last changed it (see [`super::takeover`]).
    pub epoch: u64,
    pub seq: u64,
    pub rev: u64,
    /// Live event states, in creation order.
    pub states: Vec<State>,
    /// The presentity's URI, once a publisher named it (the `entity` of a composed PIDF).
    pub resource: Option<String>,
    pub dedup: VecDeque<(PubReqId, PubOutcome)>,
    /// The composition of `states` ([`Record::recompose`] after every change): its content
    /// type and body.
    doc: Option<(Option<String>, Bytes)>,
}

impl Record {
    /// Records are ordered by root epoch first: a root that took over (or confirmed its role)
    /// later supersedes whatever an older root still holds, whatever its seq.
    pub fn key(&self) -> (u64, u64, u64) {
        (self.epoch, self.seq, self.rev)
    }
    /// Whether no event state is live.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }
    /// What members are told: the seq and the composed document.
    pub fn latest(&self) -> Latest {
        Latest {
            seq: self.seq,
            body: self.doc.as_ref().map(|d| d.1.clone()),
            content_type: self.doc.as_ref().and_then(|d| d.0.clone()),
        }
    }
    /// The composed document's size (0 without state).
    pub fn doc_len(&self) -> usize {
        self.doc.as_ref().map_or(0, |d| d.1.len())
    }
    /// The states' bodies added up.
    pub fn states_len(&self) -> usize {
        self.states.iter().map(|s| s.body.len()).sum()
    }
    /// Entity tags of the live states, in creation order.
    pub fn etags(&self) -> Vec<ETag> {
        self.states.iter().map(|s| s.etag).collect()
    }

    /// Recomposes the document members are told from the live states: for
    /// `application/pidf+xml` (when the most recently changed state is PIDF), the PIDF
    /// composition of every PIDF state ([`pidf::compose`]); for any other content type, the
    /// most recently changed state as it is.
    pub fn recompose(&mut self) {
        self.doc = compose(&self.states, self.resource.as_deref());
    }

    pub fn to_wire(&self, now: Millis) -> WireRecord {
        WireRecord {
            epoch: self.epoch,
            seq: self.seq,
            rev: self.rev,
            states: self
                .states
                .iter()
                .map(|s| WireState {
                    etag: s.etag,
                    body: s.body.clone(),
                    content_type: s.content_type.clone(),
                    ttl: s.expires_at.saturating_sub(now),
                    created: s.created,
                    changed: s.changed,
                })
                .collect(),
            resource: self.resource.clone(),
            dedup: self.dedup.iter().copied().collect(),
        }
    }
    pub fn from_wire(w: WireRecord, now: Millis) -> Self {
        Self::from_wire_reusing(w, now, None)
    }

    /// [`Record::from_wire`], reusing the composition of `held` when it has the same states
    /// (expiries aside) and resource: composing parses and writes PIDF, and the periodic
    /// refresh of a record a replica holds already then costs a comparison.
    pub fn from_wire_reusing(w: WireRecord, now: Millis, held: Option<&Record>) -> Self {
        let mut r = Record {
            epoch: w.epoch,
            seq: w.seq,
            rev: w.rev,
            states: w
                .states
                .into_iter()
                .map(|s| State {
                    etag: s.etag,
                    body: s.body,
                    content_type: s.content_type,
                    expires_at: now + s.ttl,
                    created: s.created,
                    changed: s.changed,
                })
                .collect(),
            resource: w.resource,
            dedup: w.dedup.into_iter().take(DEDUP_LEN).collect(),
            doc: None,
        };
        let same = |h: &&Record| {
            h.resource == r.resource
                && h.states.len() == r.states.len()
                && h.states.iter().zip(&r.states).all(|(a, b)| {
                    (a.etag, a.created, a.changed) == (b.etag, b.created, b.changed)
                        && a.content_type == b.content_type
                        && a.body == b.body
                })
        };
        match held.filter(same) {
            Some(h) => r.doc = h.doc.clone(),
            None => r.recompose(),
        }
        r
    }
    /// Takes a state carried up the tree with a higher seq (re-JOIN reconciliation, a newer
    /// state heard from below): its states' entity tags and expiries are unknown here, so the
    /// record becomes ONE anonymous state holding the composed document, under a fresh entity
    /// tag nobody holds, for the default expiry (model: `RootState::adopt`).
    pub(super) fn adopt(&mut self, l: Latest, now: Millis, default_expires: u32, etag: ETag) {
        self.seq = l.seq;
        self.states.clear();
        if let Some(body) = l.body {
            self.states.push(State {
                etag,
                body,
                content_type: l.content_type,
                expires_at: now + secs(default_expires),
                // No change of this root created it: nobody was given its tag.
                created: 0,
                changed: l.seq,
            });
        }
        self.rev += 1;
        self.recompose();
    }
}

impl WireRecord {
    /// What a root holding this record tells members (its seq and the composed document of its
    /// states), as a replica that takes over would: for harnesses that abstract a replicated
    /// record to the state it stands for.
    pub fn latest(&self) -> Latest {
        Record::from_wire(self.clone(), 0).latest()
    }
}

/// The composed document of `states` (see [`Record::recompose`]).
fn compose(states: &[State], resource: Option<&str>) -> Option<(Option<String>, Bytes)> {
    let latest = states
        .iter()
        .enumerate()
        .max_by_key(|(i, s)| (s.changed, *i))
        .map(|(i, _)| i)?;
    let top = &states[latest];
    let plain = Some((top.content_type.clone(), top.body.clone()));
    if !top.content_type.as_deref().is_some_and(pidf::is_pidf) {
        return plain;
    }
    let parts: Vec<pidf::Part<'_>> = states
        .iter()
        .enumerate()
        .filter(|(_, s)| s.content_type.as_deref().is_some_and(pidf::is_pidf))
        .map(|(i, s)| pidf::Part {
            body: &s.body,
            latest: i == latest,
        })
        .collect();
    match pidf::compose(&parts, resource) {
        Ok(doc) => Some((top.content_type.clone(), Bytes::from(doc))),
        // Bodies are validated when published; one adopted or replicated from a peer that
        // did not may not parse: its state is then shown as it is.
        Err(_) => plain,
    }
}

/// A change waiting for all replicas' acknowledgements.
#[derive(Clone, Debug)]
pub(crate) struct Commit {
    pub rec: Record,
    pub reply: Option<(NodeHandle, PubReqId, PublishReply)>,
    /// The request that made it, served again if a replica fences the commit.
    pub req: Option<Routed>,
}

/// A fetching root's asks to one peer it awaits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ask {
    pub id: NodeId,
    /// Asks in a row without an answer: past `fetch_attempts` (`Config`) the round gives up on it.
    pub unanswered: u8,
    /// It answered busy (it confirms another root's lease) until then: a retry asks it again
    /// only after (it would answer busy again), and afresh.
    pub busy_until: Millis,
}

/// State of a peer acting as a group's root.
#[derive(Clone, Debug, Default)]
pub(crate) struct RootRole {
    /// Serving (the fetch of the replicas' records is over).
    pub active: bool,
    /// The epoch this root serves with: above every epoch it heard of when it fetched.
    pub epoch: u64,
    pub fetch_deadline: Millis,
    /// Fetch rounds started over with a higher epoch because a peer had promised another root
    /// an epoch at least as high.
    pub rounds: u8,
    /// The fetch timer armed in the host's timers.
    pub fetch_armed: Armed,
    /// Peers asked in this fetch round, and when.
    pub asked: Vec<(NodeId, Millis)>,
    /// Replicas whose record the fetch still waits for.
    pub waiting: Vec<NodeId>,
    /// How the asks of this round to each awaited peer went.
    pub asks: Vec<Ask>,
    /// A peer refused this round's epoch (it had promised another root as much or more).
    pub rival: bool,
    /// The highest epoch and seq heard of while fetching (records, promises, fences).
    pub seen_epoch: u64,
    pub seen_seq: u64,
    /// When each peer last confirmed this root (granted its fetch, acknowledged a
    /// REPLICATE): the lease runs `root_lease` from the oldest confirmation among the
    /// current replicas.
    pub grants: Vec<(NodeId, Millis)>,
    /// Requests held while activating or committing, served in order.
    pub queue: VecDeque<Routed>,
    /// Boxed: a root holds one only while it commits, and it would make every root role
    /// (one per presentity at its root) a few hundred bytes larger.
    pub pending: Option<Box<Commit>>,
    /// Highest revision each replica acknowledged.
    pub acked: Vec<(NodeId, u64)>,
}

impl RootRole {
    /// Notes that `peer` confirmed this root at `at` (root's clock).
    pub fn grant(&mut self, peer: NodeId, at: Millis) {
        match self.grants.iter_mut().find(|g| g.0 == peer) {
            Some(g) => g.1 = g.1.max(at),
            None => self.grants.push((peer, at)),
        }
    }
    /// Whether every one of `replicas` confirmed this root within `lease` of `now`.
    pub fn lease_holds(&self, replicas: &[NodeHandle], now: Millis, lease: Millis) -> bool {
        lease == Millis::MAX
            || replicas.iter().all(|h| {
                self.grants
                    .iter()
                    .any(|g| g.0 == h.id && g.1.saturating_add(lease) > now)
            })
    }
}

impl Group {
    /// The highest root epoch this peer knows for the group: of its records, and of what it
    /// promised a fetching root.
    pub(crate) fn known_epoch(&self) -> u64 {
        let rec = self.best_record().map_or(0, |r| r.epoch);
        let role = self.root.as_ref().map_or(0, |r| r.seen_epoch.max(r.epoch));
        rec.max(self.promised.0).max(role)
    }

    /// The highest record held here (a pending commit counts).
    pub(crate) fn best_record(&self) -> Option<&Record> {
        let pending = self
            .root
            .as_ref()
            .and_then(|r| r.pending.as_ref())
            .map(|c| &c.rec);
        match (pending, self.record.as_ref()) {
            (Some(p), Some(r)) if r.key() > p.key() => Some(r),
            (Some(p), _) => Some(p),
            (None, r) => r,
        }
    }

    /// Seq of the committed record (0 if none).
    pub(super) fn record_seq(&self) -> u64 {
        self.record.as_ref().map_or(0, |r| r.seq)
    }
}

/// The request's id when it is a publication.
pub(super) fn pub_req(r: &Routed) -> Option<PubReqId> {
    match r {
        Routed::Publish { req, .. } => Some(*req),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pidf(note: &str) -> Bytes {
        Bytes::from(format!(
            "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" \
             entity=\"sip:a@example.com\"><tuple id=\"t\"><status><basic>open</basic></status>\
             <note>{note}</note></tuple></presence>"
        ))
    }

    fn wire(notes: &[&str]) -> WireRecord {
        WireRecord {
            epoch: 1,
            seq: notes.len() as u64,
            rev: notes.len() as u64,
            states: notes
                .iter()
                .enumerate()
                .map(|(i, n)| WireState {
                    etag: ETag(i as u64 + 1),
                    body: pidf(n),
                    content_type: Some("application/pidf+xml".into()),
                    ttl: 60_000,
                    created: i as u64 + 1,
                    changed: i as u64 + 1,
                })
                .collect(),
            resource: Some("sip:a@example.com".into()),
            dedup: Vec::new(),
        }
    }

    /// A replica decoding a record it holds already gets what decoding it afresh gives, with
    /// the expiries of the new copy; a record whose states differ is composed anew.
    #[test]
    fn reusing_a_held_composition_gives_what_composing_gives() {
        let held = Record::from_wire(wire(&["one", "two"]), 0);
        let again = Record::from_wire_reusing(wire(&["one", "two"]), 5_000, Some(&held));
        assert_eq!(again, Record::from_wire(wire(&["one", "two"]), 5_000));
        assert_eq!(again.states[0].expires_at, 65_000);
        for other in [
            &["one", "three"][..],
            &["one"][..],
            &["one", "two", "three"][..],
        ] {
            let fresh = Record::from_wire(wire(other), 0);
            let reused = Record::from_wire_reusing(wire(other), 0, Some(&held));
            assert_eq!(reused, fresh, "{other:?}");
            assert_ne!(reused.latest().body, held.latest().body, "{other:?}");
        }
        let mut renamed = wire(&["one", "two"]);
        renamed.resource = Some("sip:b@example.com".into());
        let reused = Record::from_wire_reusing(renamed.clone(), 0, Some(&held));
        assert_eq!(reused, Record::from_wire(renamed, 0));
    }
}
