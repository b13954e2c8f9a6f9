//! Operational diagnostics the core hands its driver: what an operator wants a log line for
//! ([`LogEvent`], carried by [`crate::Event::Log`]) and a latency histogram kept as plain
//! counters ([`Histogram`]). The core reads no clock and writes no log: a driver turns these
//! into log lines and metrics (the tokio runtime logs each [`LogEvent`] at INFO with its
//! `Display` form).

use crate::id::{GroupId, NodeId};
use crate::Millis;
use std::fmt;

/// Something worth an INFO line in an operator's log.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum LogEvent {
    /// The failure detector declared a peer dead (no keep-alive answer in time).
    PeerFailed {
        /// The dead peer.
        id: NodeId,
    },
    /// This peer became the root of a group whose root (or this peer's parent) died: it
    /// fetches the replicas' records, then serves the group.
    Takeover {
        /// The group.
        gid: GroupId,
        /// The peer whose death made this peer the root.
        dead: NodeId,
    },
    /// A closer peer is now responsible for a group this peer was root of: it hands the
    /// group on and re-JOINs as a member.
    Demoted {
        /// The group.
        gid: GroupId,
    },
    /// A member (re-)JOINed a group's tree after losing its parent, or retried a JOIN that got
    /// no answer. Many at once are a re-JOIN storm (the runtime reports those).
    Rejoin {
        /// The group.
        gid: GroupId,
    },
    /// A SIP transaction ended in failure: a server transaction answered with a status that
    /// says the service failed (408, 480, 5xx), or a NOTIFY got no answer.
    SipFailure {
        /// The request's method.
        method: String,
        /// The resource (the request's To URI; a NOTIFY's subscriber).
        resource: String,
        /// The status sent (or, for a NOTIFY that timed out, 408).
        status: u16,
        /// The reason phrase.
        reason: String,
    },
}

/// The first 8 hex digits of a group id: enough to tell groups apart in a log.
pub fn gid_prefix(gid: GroupId) -> String {
    format!("{:08x}", (gid.0 >> 96) as u32)
}

impl fmt::Display for LogEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogEvent::PeerFailed { id } => write!(f, "peer {id} declared dead"),
            LogEvent::Takeover { gid, dead } => write!(
                f,
                "taking over group {} (root or parent {} died)",
                gid_prefix(*gid),
                short(*dead)
            ),
            LogEvent::Demoted { gid } => write!(
                f,
                "no longer root of group {}: a closer peer took it",
                gid_prefix(*gid)
            ),
            LogEvent::Rejoin { gid } => write!(f, "re-JOIN of group {}", gid_prefix(*gid)),
            LogEvent::SipFailure {
                method,
                resource,
                status,
                reason,
            } => write!(f, "SIP {method} {resource} failed: {status} {reason}"),
        }
    }
}

fn short(id: NodeId) -> String {
    format!("{:08x}", (id.0 >> 96) as u32)
}

/// Upper bounds (ms) of the [`Histogram`] buckets; a last bucket holds everything above.
pub const LATENCY_BUCKETS_MS: [Millis; 12] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000];

/// A latency histogram in milliseconds (cumulative on export, per bucket here).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Observations per bucket of [`LATENCY_BUCKETS_MS`], then one for everything larger.
    pub buckets: [u64; LATENCY_BUCKETS_MS.len() + 1],
    /// Number of observations.
    pub count: u64,
    /// Their sum (ms).
    pub sum_ms: u64,
}

impl Histogram {
    /// Records one observation of `ms` milliseconds.
    pub fn observe(&mut self, ms: Millis) {
        let i = LATENCY_BUCKETS_MS
            .iter()
            .position(|&b| ms <= b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.buckets[i] += 1;
        self.count += 1;
        self.sum_ms = self.sum_ms.saturating_add(ms);
    }

    /// Cumulative counts per upper bound (ms), as Prometheus wants them (without `+Inf`,
    /// which is [`Histogram::count`]).
    pub fn cumulative(&self) -> Vec<(Millis, u64)> {
        let mut acc = 0;
        LATENCY_BUCKETS_MS
            .iter()
            .zip(self.buckets.iter())
            .map(|(&b, &n)| {
                acc += n;
                (b, acc)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets() {
        let mut h = Histogram::default();
        for ms in [0, 1, 3, 7000] {
            h.observe(ms);
        }
        assert_eq!(h.count, 4);
        assert_eq!(h.sum_ms, 7004);
        let c = h.cumulative();
        assert_eq!(c[0], (1, 2));
        assert_eq!(c[2], (5, 3));
        assert_eq!(c.last(), Some(&(5000, 3)));
    }

    #[test]
    fn log_lines_are_readable() {
        let gid = GroupId(0xdead_beef_u128 << 96);
        assert_eq!(gid_prefix(gid), "deadbeef");
        let e = LogEvent::SipFailure {
            method: "PUBLISH".into(),
            resource: "sip:alice@example.com".into(),
            status: 504,
            reason: "Server Time-out".into(),
        };
        assert_eq!(
            e.to_string(),
            "SIP PUBLISH sip:alice@example.com failed: 504 Server Time-out"
        );
        assert!(LogEvent::Demoted { gid }.to_string().contains("deadbeef"));
    }
}
