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
//!
//! Modules: [`id`] (ids, digits, ring distance, gid hashing), [`pastry`] (leaf set, routing
//! table, routing, join, keep-alive, repair), [`scribe`] (trees, publish, replication, root
//! takeover), [`wire`] (versioned, optionally authenticated binary encoding), [`peer`] (the
//! combined core), [`event`] (upcalls), [`sim`] (deterministic simulator).
//!
//! # Driving two peers by hand
//! ```
//! use sascribe::{Config, Event, GroupId, NodeId, Peer, PubHandle, SubHandle};
//! use std::net::SocketAddr;
//!
//! let a_addr: SocketAddr = "127.0.0.1:5001".parse().unwrap();
//! let b_addr: SocketAddr = "127.0.0.1:5002".parse().unwrap();
//! let mut now = 0;
//! let mut a = Peer::new(NodeId(1 << 120), a_addr, Config::default(), now, 1);
//! let mut b = Peer::new(NodeId(9 << 120), b_addr, Config::default(), now, 2);
//! b.bootstrap(now, a_addr);
//! let gid = GroupId::from_event("sip:alice@example.com", "presence", None);
//! let mut events = Vec::new();
//! // A toy driver: deliver every datagram instantly, advance time to the next deadline.
//! let mut step = |a: &mut Peer, b: &mut Peer, now: u64, events: &mut Vec<Event>| {
//!     loop {
//!         let mut moved = false;
//!         while let Some(t) = a.poll_transmit() { b.handle_datagram(now, a_addr, &t.payload); moved = true; }
//!         while let Some(t) = b.poll_transmit() { a.handle_datagram(now, b_addr, &t.payload); moved = true; }
//!         while let Some(e) = a.poll_event() { events.push(e); }
//!         while let Some(e) = b.poll_event() { events.push(e); }
//!         if !moved { break; }
//!     }
//! };
//! step(&mut a, &mut b, now, &mut events);
//! assert!(events.contains(&Event::Joined));
//! a.publish(now, gid, PubHandle(1), Some("open".into()), None, Some(600));
//! step(&mut a, &mut b, now, &mut events);
//! b.subscribe(now, gid, SubHandle(7), 600).unwrap();
//! step(&mut a, &mut b, now, &mut events);
//! assert!(events.iter().any(|e| matches!(e, Event::Published { req: PubHandle(1), seq: 1, .. })));
//! assert!(events.contains(&Event::Notify { handle: SubHandle(7), seq: 1, state: Some("open".into()) }));
//! // Timers: call handle_timeout at (or after) poll_timeout.
//! now = a.poll_timeout().unwrap().min(b.poll_timeout().unwrap());
//! a.handle_timeout(now);
//! b.handle_timeout(now);
//! step(&mut a, &mut b, now, &mut events);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod event;
pub mod id;
pub mod io;
pub mod mutants;
pub mod pastry;
pub mod peer;
pub mod rng;
pub mod runtime;
pub mod scribe;
pub mod sim;
pub mod sip;
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
pub use peer::{Peer, RequestTimer};
