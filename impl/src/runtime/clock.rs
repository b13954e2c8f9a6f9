//! The runtime's notion of time.

use crate::Millis;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// A millisecond clock for the event loop. A harness can substitute virtual time.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the clock's origin. Should not go backwards (the loop guards anyway).
    fn now(&self) -> Millis;
    /// Completes once [`Clock::now`] reaches `at` (at once if it already has).
    fn sleep_until(&self, at: Millis) -> impl Future<Output = ()> + Send;
    /// Wall-clock time, milliseconds since the Unix epoch: what authenticated overlay
    /// datagrams carry (peers' clocks must agree within [`crate::wire::MAX_CLOCK_SKEW`]). The
    /// system clock by default.
    fn unix_millis(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// [`tokio::time`]: a monotonic clock counted from its creation. It follows tokio's paused
/// time in tests (`start_paused`).
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    origin: Instant,
}

impl TokioClock {
    /// A clock whose zero is now.
    pub fn new() -> Self {
        TokioClock {
            origin: Instant::now(),
        }
    }
    /// A clock whose zero is `origin` (several nodes can share one origin).
    pub fn with_origin(origin: Instant) -> Self {
        TokioClock { origin }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Millis {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn sleep_until(&self, at: Millis) -> impl Future<Output = ()> + Send {
        let deadline = self
            .origin
            .checked_add(Duration::from_millis(at))
            // Far beyond any real deadline: sleep (effectively) forever.
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
        tokio::time::sleep_until(deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_milliseconds_from_its_origin() {
        let c = TokioClock::new();
        assert!(c.now() < 1_000);
        let t0 = c.now();
        c.sleep_until(t0 + 30).await;
        assert!(c.now() >= t0 + 30);
        // A deadline in the past completes at once.
        let before = std::time::Instant::now();
        c.sleep_until(0).await;
        assert!(before.elapsed() < Duration::from_secs(1));
        // An absurd deadline does not overflow; it just never comes.
        let far = tokio::time::timeout(Duration::from_millis(20), c.sleep_until(u64::MAX)).await;
        assert!(far.is_err());
        // Clocks sharing an origin agree.
        let d = TokioClock::with_origin(c.origin);
        assert!(d.now().abs_diff(c.now()) <= 1);
    }
}
