//! Dialog handover: a gateway peer that leaves in an orderly way hands its subscription
//! dialogs to live leaf-set peers, which carry them on (RFC 6665 §4.1.2 dialog state, notifier
//! side), instead of ending them with `terminated;reason=deactivated`.
//!
//! The leaving peer sends [`HandoverMsg::Offer`] (a batch of [`WireDialog`]s, each under
//! [`MAX_DIALOGS_PER_OFFER`]) straight to the taking peer, which answers
//! [`HandoverMsg::Taken`] with the indices of the dialogs it now carries. Offers are
//! idempotent (a dialog the taker already carries is reported taken again), so a lost answer
//! is recovered by resending the offer. A dialog that was not taken in time ends the old way.

use crate::id::GroupId;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Dialogs in one offer (a bound for the receiver; the sender also keeps each offer's
/// encoding under the datagram limit).
pub const MAX_DIALOGS_PER_OFFER: usize = 64;

/// One subscription dialog as the notifier holds it: what a peer needs to send the next
/// NOTIFY in it and to take the subscriber's next in-dialog SUBSCRIBE.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct WireDialog {
    /// Call-ID.
    pub call_id: String,
    /// The notifier's tag (the subscriber's To tag).
    pub local_tag: String,
    /// The subscriber's From tag.
    pub remote_tag: String,
    /// The notifier's header value (the SUBSCRIBE's To, with the local tag): NOTIFY's From.
    pub local: String,
    /// The subscriber's header value (the SUBSCRIBE's From): NOTIFY's To.
    pub remote: String,
    /// Remote target (the subscriber's Contact URI): NOTIFY's Request-URI.
    pub target: String,
    /// Route set (Record-Route values, in order).
    pub route_set: Vec<String>,
    /// Event package (lowercase).
    pub package: String,
    /// The Event header's `id` parameter.
    pub event_id: Option<String>,
    /// The presentity (the initial SUBSCRIBE's Request-URI, canonical).
    pub resource: String,
    /// The group.
    pub gid: GroupId,
    /// The subscriber used TCP (the taker opens a connection to its Contact).
    pub tcp: bool,
    /// Where NOTIFYs went (the subscriber's address as the leaving peer saw it).
    pub remote_addr: SocketAddr,
    /// The last CSeq of a NOTIFY sent in the dialog.
    pub local_cseq: u32,
    /// The highest CSeq of the subscriber's requests.
    pub remote_cseq: u32,
    /// Milliseconds until the subscription expires.
    pub expires_in: u64,
    /// The seq of the last state the subscriber was shown (`None`: none yet).
    pub last_seq: Option<u64>,
}

impl WireDialog {
    /// Rough size of the encoding, for packing offers under the datagram limit.
    pub fn size_hint(&self) -> usize {
        let strings = [
            &self.call_id,
            &self.local_tag,
            &self.remote_tag,
            &self.local,
            &self.remote,
            &self.target,
            &self.package,
            &self.resource,
        ];
        128 + strings.iter().map(|s| s.len() + 2).sum::<usize>()
            + self.route_set.iter().map(|r| r.len() + 2).sum::<usize>()
            + self.event_id.as_ref().map_or(0, |e| e.len() + 2)
    }
}

/// Dialog handover messages (sent straight to one peer).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum HandoverMsg {
    /// A leaving peer offers these dialogs.
    Offer {
        /// The offer's number at the sender (echoed in the answer).
        batch: u64,
        /// The dialogs.
        dialogs: Vec<WireDialog>,
    },
    /// The dialogs of offer `batch` the taker now carries (indices into it).
    Taken {
        /// The offer answered.
        batch: u64,
        /// Indices of the dialogs taken.
        taken: Vec<u16>,
    },
}
