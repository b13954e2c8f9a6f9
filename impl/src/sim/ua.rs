//! SIP user agents in the simulator: each is a sans-IO [`UserAgent`] at its own address,
//! sending real SIP text over the simulated network (with its latency, loss, duplication and
//! partitions) to the SIP sockets of gateway peers, with its own retransmission timers.

use super::{sim_sip_addr, sim_ua_addr, Action, Sim};
use crate::ua::{UaEvent, UserAgent};
use crate::Millis;
use rand::Rng;
use std::net::SocketAddr;

pub(super) struct SimUa {
    pub agent: UserAgent,
    pub side: u8,
    timer_at: Option<Millis>,
}

/// What a user agent observed, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UaLog {
    /// Virtual time.
    pub at: Millis,
    /// User agent index.
    pub ua: usize,
    /// The observation.
    pub event: UaEvent,
}

impl Sim {
    /// Adds a SIP user agent (identity `aor`); returns its index.
    pub fn add_ua(&mut self, aor: &str) -> usize {
        let u = self.uas.len();
        let seed = self.rng.random();
        self.uas.push(SimUa {
            agent: UserAgent::new(sim_ua_addr(u), aor, seed),
            side: 0,
            timer_at: None,
        });
        u
    }

    /// The SIP address of gateway `i` (where user agents send requests).
    pub fn sip_addr(&self, i: usize) -> SocketAddr {
        sim_sip_addr(i)
    }

    /// User agent `u`.
    pub fn ua(&self, u: usize) -> &UserAgent {
        &self.uas[u].agent
    }

    /// Runs `f` on user agent `u` at the current time (a request it sends, a setting), then
    /// puts what it sends on the network.
    pub fn with_ua<R>(&mut self, u: usize, f: impl FnOnce(&mut UserAgent, Millis) -> R) -> R {
        let now = self.now;
        let r = f(&mut self.uas[u].agent, now);
        self.flush_ua(u);
        r
    }

    /// Puts user agent `u` on partition side `side`.
    pub fn set_ua_side(&mut self, u: usize, side: u8) {
        self.uas[u].side = side;
    }

    /// What user agents observed so far.
    pub fn ua_log(&self) -> &[UaLog] {
        &self.ua_log
    }

    /// Takes what user agents observed so far.
    pub fn drain_ua_log(&mut self) -> Vec<UaLog> {
        std::mem::take(&mut self.ua_log)
    }

    /// Collects transmits, observations and the timer of user agent `u`.
    pub(super) fn flush_ua(&mut self, u: usize) {
        let now = self.now;
        while let Some(e) = self.uas[u].agent.poll_event() {
            self.ua_log.push(UaLog {
                at: now,
                ua: u,
                event: e,
            });
        }
        let from = self.uas[u].agent.addr();
        let side = self.uas[u].side;
        while let Some(t) = self.uas[u].agent.poll_transmit() {
            self.send(now, side, from, t.dst, t.payload);
        }
        if let Some(t) = self.uas[u].agent.poll_timeout() {
            let t = t.max(now + 1);
            if self.uas[u].timer_at.is_none_or(|at| t < at) {
                self.uas[u].timer_at = Some(t);
                self.schedule(t, Action::UaTimer { ua: u as u32 });
            }
        }
    }

    /// User agent `u`'s timer entry for `at` fired.
    pub(super) fn ua_timer(&mut self, u: usize, at: Millis) {
        if self.uas[u].timer_at != Some(at) {
            return;
        }
        self.uas[u].timer_at = None;
        let now = self.now;
        self.uas[u].agent.handle_timeout(now);
        self.flush_ua(u);
    }
}
