//! # sa-Scribe: SIP-aware Scribe over Pastry, as a sans-IO core
//!
//! This crate implements the peer of the sa-Scribe P2P SIP event-notification service: a Pastry
//! overlay (`b = 4`, leaf set `L`), and on top of it sa-Scribe, an application-level multicast
//! that also answers the *synchronous* half of SIP event notification (a new subscriber
//! immediately gets the latest state).
//!
//! The core is fully deterministic: it reads no clock, owns no socket and draws no OS
//! randomness. Drivers (the deterministic [`sim`]ulator, a tokio runtime, a conformance harness)
//! feed it datagrams and time and drain its outputs; see [`Peer`] for the contract.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod event;
pub mod id;
pub mod io;
pub mod pastry;
pub mod peer;
pub mod rng;
pub mod scribe;
pub mod sim;
pub mod wire;

pub use config::Config;
pub use id::{GroupId, NodeId};
pub use wire::{ETag, NodeHandle};

/// Milliseconds on the driver's clock (virtual in the simulator, monotonic in a runtime).
pub type Millis = u64;

pub use event::{
    Event, GroupView, PubHandle, PublishError, SubHandle, SubRejectReason, SubscribeError,
    TerminateReason,
};
pub use io::{Stats, Transmit};
pub use peer::Peer;
