//! What a root holds for its group: the record (seq, revision, state, entity tag, expiry and
//! the recent outcomes for deduplication), the change waiting for its replicas, and the root
//! role's own bookkeeping.
//!
//! Records are kept after the publication expires (seq tombstones), so a later root never
//! reuses a seq.

use super::{secs, Group};
use crate::id::NodeId;
use crate::timer::Armed;
use crate::wire::{
    ETag, Latest, NodeHandle, PubOutcome, PubReqId, PublishReply, Routed, WireRecord,
};
use crate::Millis;
use bytes::Bytes;
use std::collections::VecDeque;

/// Committed publications remembered for deduplication of retries.
pub const DEDUP_LEN: usize = 32;
/// How many times a new root asks silent replicas for their record before serving.
pub const FETCH_ATTEMPTS: u8 = 3;
/// Requests a root queues while it activates or commits; more are dropped (they are retried).
pub const MAX_QUEUE: usize = 1024;

/// A group record: held authoritatively by the root, as a copy by replicas.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Record {
    pub seq: u64,
    pub rev: u64,
    pub body: Option<Bytes>,
    pub etag: Option<ETag>,
    pub expires_at: Option<Millis>,
    pub dedup: VecDeque<(PubReqId, PubOutcome)>,
}

impl Record {
    pub fn key(&self) -> (u64, u64) {
        (self.seq, self.rev)
    }
    pub fn latest(&self) -> Latest {
        Latest {
            seq: self.seq,
            body: self.body.clone(),
        }
    }
    pub fn to_wire(&self, now: Millis) -> WireRecord {
        WireRecord {
            seq: self.seq,
            rev: self.rev,
            body: self.body.clone(),
            etag: self.etag,
            ttl: self.expires_at.map(|e| e.saturating_sub(now)),
            dedup: self.dedup.iter().copied().collect(),
        }
    }
    pub fn from_wire(w: WireRecord, now: Millis) -> Self {
        Record {
            seq: w.seq,
            rev: w.rev,
            body: w.body,
            etag: w.etag,
            expires_at: w.ttl.map(|t| now + t),
            dedup: w.dedup.into_iter().take(DEDUP_LEN).collect(),
        }
    }
    /// Takes a state carried up the tree (its ETag and expiry are unknown here).
    pub(super) fn adopt(&mut self, l: Latest, now: Millis, default_expires: u32) {
        self.seq = l.seq;
        self.expires_at = l.body.as_ref().map(|_| now + secs(default_expires));
        self.body = l.body;
        self.etag = None;
        self.rev += 1;
    }
}

/// A change waiting for all replicas' acknowledgements.
#[derive(Debug)]
pub(crate) struct Commit {
    pub rec: Record,
    pub reply: Option<(NodeHandle, PubReqId, PublishReply)>,
}

/// State of a peer acting as a group's root.
#[derive(Debug)]
pub(crate) struct RootRole {
    /// Serving (the fetch of the replicas' records is over).
    pub active: bool,
    pub fetch_deadline: Millis,
    pub fetch_attempts: u8,
    /// The fetch timer armed in the host's timers.
    pub fetch_armed: Armed,
    /// Replicas whose record the fetch still waits for.
    pub waiting: Vec<NodeId>,
    /// Requests held while activating or committing, served in order.
    pub queue: VecDeque<Routed>,
    pub pending: Option<Commit>,
    /// Highest revision each replica acknowledged.
    pub acked: Vec<(NodeId, u64)>,
}

impl Group {
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
