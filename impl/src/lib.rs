//! # sa-Scribe: the peer and its drivers
//!
//! The protocol — Pastry, SIP-aware Scribe and the SIP front end — is the sans-IO core of crate
//! [`sascribe_proto`], re-exported here: one [`Host`] per peer, fed with
//! [`Host::handle_input`] and drained with [`Host::poll_output`]. This crate adds the drivers
//! around it, which differ only in how they deliver datagrams and pass time:
//!
//! * [`runtime`]: a tokio event loop over UDP sockets and the real clock (what `sascribe peer`
//!   and `sascribe cluster` run);
//! * [`sim`]: a deterministic simulator with virtual time, seeded latency, loss, duplication,
//!   partitions, crashes and restarts, and scripted SIP user agents;
//! * the `sascribe` binary (`src/main.rs`): the command line.
//!
//! The conformance harness, the third driver, is crate `sascribe-conformance`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use sascribe_proto::*;

pub mod fuzz;
pub mod runtime;
pub mod sim;
