//! Log lines for the core's events: INFO for what an operator must see (joined, a peer
//! declared dead, a takeover, a demotion, a re-JOIN storm, a failed SIP transaction), each in
//! its `Display` form with structured fields (`gid` prefix, `method`, `resource`, `status`);
//! DEBUG for the rest.

use crate::diag::{gid_prefix, LogEvent};
use crate::{Event, Millis};

/// This many re-JOINs within [`STORM_WINDOW`] ms make a re-JOIN storm (one INFO line per
/// window; single re-JOINs are DEBUG).
pub const STORM_THRESHOLD: u32 = 20;
/// The re-JOIN counting window (ms).
pub const STORM_WINDOW: Millis = 1_000;

/// Turns events into log lines; counts re-JOINs to report storms.
#[derive(Debug, Default)]
pub struct EventLog {
    window_start: Millis,
    rejoins: u32,
    reported: bool,
}

impl EventLog {
    /// Logs `ev`, seen at `now`.
    pub fn event(&mut self, ev: &Event, now: Millis) {
        match ev {
            Event::Joined => tracing::info!("joined the overlay"),
            Event::Log(l) => self.log(l, now),
            other => tracing::debug!(event = ?other, "event"),
        }
    }

    fn log(&mut self, l: &LogEvent, now: Millis) {
        match l {
            LogEvent::PeerFailed { id } => tracing::info!(dead = %id, "{l}"),
            LogEvent::Takeover { gid, dead } => {
                tracing::info!(gid = %gid_prefix(*gid), dead = %dead, "{l}")
            }
            LogEvent::Demoted { gid } => tracing::info!(gid = %gid_prefix(*gid), "{l}"),
            LogEvent::Rejoin { gid } => {
                tracing::debug!(gid = %gid_prefix(*gid), "{l}");
                if now >= self.window_start + STORM_WINDOW {
                    self.window_start = now;
                    self.rejoins = 0;
                    self.reported = false;
                }
                self.rejoins += 1;
                if self.rejoins >= STORM_THRESHOLD && !self.reported {
                    self.reported = true;
                    tracing::info!(
                        rejoins = self.rejoins,
                        window_ms = STORM_WINDOW,
                        "re-JOIN storm: {} re-JOINs within {} ms (roots or parents died, or \
                         the overlay is partitioned)",
                        self.rejoins,
                        STORM_WINDOW
                    );
                }
            }
            LogEvent::SipFailure {
                method,
                resource,
                status,
                ..
            } => tracing::info!(%method, %resource, status, "{l}"),
        }
    }
}
