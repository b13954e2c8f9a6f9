//! Pastry's own messages: keep-alives, leaf-set and routing-table exchange, the overlay join.

use super::NodeHandle;
use serde::{Deserialize, Serialize};

/// A Pastry message sent straight to one peer.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum PastryMsg {
    /// Keep-alive probe.
    Ping,
    /// Keep-alive answer.
    Pong,
    /// Ask for the receiver's leaf set.
    LeafSetRequest,
    /// Leaf set (the sender itself is implied).
    LeafSetReply {
        /// Members.
        leaves: Vec<NodeHandle>,
    },
    /// Ask for one routing-table row (repair).
    RowRequest {
        /// Row index.
        row: u8,
    },
    /// Routing-table row entries.
    RowReply {
        /// Entries.
        entries: Vec<NodeHandle>,
    },
    /// State sent to a joining peer by every peer its join passes.
    JoinState {
        /// Routing-table entries (and, from the last hop, its leaf set).
        entries: Vec<NodeHandle>,
        /// Sent by the last hop (numerically closest peer): the join is complete.
        last: bool,
    },
    /// A newly joined peer announces itself.
    Announce,
    /// The sender leaves the overlay gracefully: forget it now.
    Departing,
    /// Peers the sender declared dead and still probes, sent by a join's last hop with its
    /// `JoinState`: a peer cut off by a partition knows little else, and a peer that joined
    /// through it would otherwise stay cut off once the partition heals and it dies. The
    /// joiner probes them as its own; it takes them only while joining or from that last hop.
    /// (A variant after the others: no earlier message's encoding changed, and a peer that
    /// predates it drops it as malformed.)
    Suspects {
        /// The peers (at most [`MAX_SUSPECTS`]).
        peers: Vec<NodeHandle>,
    },
}

/// Most peers one [`PastryMsg::Suspects`] names (a receiver ignores the rest).
pub const MAX_SUSPECTS: usize = 32;
