//! # sa-Scribe's sans-IO core: SIP-aware Scribe over Pastry, and the SIP front end
//!
//! This crate is the whole protocol of an sa-Scribe peer (Panagiotou & Devlic, *A P2PSIP event
//! notification architecture*): a Pastry overlay (`b = 4`, leaf set `L`); on top of it
//! sa-Scribe, an application-level multicast that also answers the *synchronous* half of SIP
//! event notification (a new subscriber immediately gets the latest state); and on gateway
//! peers a SIP front end that makes the overlay look like one central RFC 3903/6665 presence
//! server to ordinary user agents.
//!
//! It is fully deterministic: it reads no clock, owns no socket and draws no OS randomness, and
//! it has no async runtime dependency. Everything is driven through one object per peer, the
//! [`Host`]: inputs in with [`Host::handle_input`], outputs out with [`Host::poll_output`]. The
//! drivers — a tokio runtime and a deterministic simulator (crate `sascribe`), the conformance
//! harness (crate `sascribe-conformance`) — differ only in how they deliver datagrams and pass
//! time. The [`host`] module documents the one drain order.
//!
//! Layers, lowest first: [`id`] (ids, digits, ring distance, gid hashing), [`wire`] (versioned,
//! optionally authenticated encoding), [`pastry`] (leaf set, routing table, routing, join,
//! keep-alive, repair), sa-Scribe (trees, publish, replication, root takeover; private, reached
//! through [`Peer`]), [`peer`] (the overlay layer), [`sip`] (transactions, dialogs, RFC 3903 /
//! 6665 mapping), [`host`]. Beside them: [`timer`] (the one timer queue), [`event`] (upcalls),
//! [`config`], [`rng`].
//!
//! # Driving two peers by hand
//! ```
//! use sascribe_proto::{Call, Config, Event, GroupId, Host, Input, Output, NodeId, PubHandle, Seeds, SubHandle};
//! use std::net::SocketAddr;
//!
//! let a_addr: SocketAddr = "127.0.0.1:5001".parse().unwrap();
//! let b_addr: SocketAddr = "127.0.0.1:5002".parse().unwrap();
//! let mut hosts = [
//!     Host::new(NodeId(1 << 120), a_addr, Config::default(), 0, Seeds::reproducible(1)),
//!     Host::new(NodeId(9 << 120), b_addr, Config::default(), 0, Seeds::reproducible(2)),
//! ];
//! let mut events = Vec::new();
//! // A toy driver: deliver every datagram at once; return the earliest deadline.
//! let drain = |hosts: &mut [Host; 2], now: u64, events: &mut Vec<Event>| -> u64 {
//!     let mut next = u64::MAX;
//!     let mut busy = true;
//!     while busy {
//!         busy = false;
//!         for i in 0..2 {
//!             loop {
//!                 match hosts[i].poll_output() {
//!                     Output::Transmit(t) => {
//!                         busy = true;
//!                         let from = hosts[i].handle().addr;
//!                         let input = Input::Overlay { from, payload: &t.payload };
//!                         hosts[1 - i].handle_input(now, input).unwrap();
//!                     }
//!                     Output::Event(e) => events.push(e),
//!                     Output::Close(_) => {} // no SIP front end here: no stream to close
//!                     Output::Timeout(at) => { next = next.min(at); break; }
//!                 }
//!             }
//!         }
//!     }
//!     next
//! };
//! hosts[1].handle_input(0, Input::Call(Call::Bootstrap(a_addr))).unwrap();
//! drain(&mut hosts, 0, &mut events);
//! assert!(events.contains(&Event::Joined));
//! let gid = GroupId::from_event("sip:alice@example.com", "presence", None);
//! let publish = Call::Publish { gid, req: PubHandle(1), body: Some("open".into()), if_match: None, expires: Some(600) };
//! hosts[0].handle_input(0, Input::Call(publish)).unwrap();
//! drain(&mut hosts, 0, &mut events);
//! let subscribe = Call::Subscribe { gid, handle: SubHandle(7), expires: 600 };
//! hosts[1].handle_input(0, Input::Call(subscribe)).unwrap();
//! let next = drain(&mut hosts, 0, &mut events);
//! assert!(events.iter().any(|e| matches!(e, Event::Published { req: PubHandle(1), seq: 1, .. })));
//! assert!(events.contains(&Event::Notify { handle: SubHandle(7), seq: 1, state: Some("open".into()), content_type: None }));
//! // Timers: feed Input::Timeout when the deadline comes.
//! for h in &mut hosts {
//!     h.handle_input(next, Input::Timeout).unwrap();
//! }
//! drain(&mut hosts, next, &mut events);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod diag;
pub mod event;
pub mod host;
pub mod id;
pub mod io;
pub mod mutants;
pub mod pastry;
pub mod peer;
pub mod pidf;
pub mod rng;
mod scribe;
pub mod sip;
pub mod timer;
pub mod ua;
pub mod wire;

pub use config::Config;
pub use diag::{Histogram, LogEvent};
pub use id::{GroupId, NodeId};
pub use wire::{ETag, NodeHandle};

/// Milliseconds on the driver's clock (virtual in the simulator, monotonic in a runtime).
pub type Millis = u64;

pub use event::{
    Event, GroupView, PubHandle, PubMeta, PublishError, RecordView, StateView, SubHandle,
    SubRejectReason, SubscribeError, TerminateReason,
};
pub use host::{Call, CallError, Host, HostStats, Input, Output, Seeds};
pub use io::{ConnId, KindCounts, Socket, Stats, Transmit};
pub use peer::{Peer, RequestTimer};
pub use timer::{Timer, Timers};
