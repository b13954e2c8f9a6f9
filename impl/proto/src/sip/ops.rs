//! What operators see of the SIP front end: counters by method and status, the
//! not-joined answer (503), SIP failure log events, and read-only views for an admin endpoint.

use super::dialog::Phase;
use super::headers::EventHeader;
use super::message::{reason_phrase, Headers, Method};
use super::{Env, SipEndpoint, SipStats};
use crate::diag::LogEvent;
use crate::event::SubHandle;
use crate::id::GroupId;
use crate::Millis;

/// Seconds a client is told to wait (`Retry-After`) while the peer joins the overlay.
pub const NOT_JOINED_RETRY_AFTER: u32 = 5;

/// One subscription dialog of a resource, as the admin endpoint shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatcherView {
    /// The subscriber (the SUBSCRIBE's From).
    pub watcher: String,
    /// Where its NOTIFYs go (its Contact URI).
    pub contact: String,
    /// The event package.
    pub event: String,
    /// `establishing`, `active` or `terminating`.
    pub state: &'static str,
    /// Seconds until the subscription expires.
    pub expires_in: u64,
    /// Seq of the last NOTIFY sent (0: none with state yet).
    pub last_seq: u64,
}

impl SipEndpoint {
    /// The counters, with those kept elsewhere in the endpoint filled in.
    pub fn metrics(&self) -> SipStats {
        let mut s = self.stats.clone();
        s.notifies_sent = self.tx.clients_started();
        s
    }

    /// The group a request for resource `uri` with `Event: event` goes to: exactly what the
    /// front end computes for a PUBLISH or SUBSCRIBE (`None` if `event` does not parse).
    pub fn group_of_resource(&self, uri: &str, event: &str) -> Option<GroupId> {
        let ev = EventHeader::parse(event).ok()?;
        Some(self.group_of(uri, &ev))
    }

    /// The subscription dialogs of group `gid` held at this front end.
    pub fn watchers(&self, gid: GroupId, now: Millis) -> Vec<WatcherView> {
        let mut v: Vec<WatcherView> = self
            .dialogs
            .values()
            .filter(|d| d.gid == gid)
            .map(|d| WatcherView {
                watcher: d.remote.clone(),
                contact: d.target.clone(),
                event: d.event.package.clone(),
                state: match d.phase {
                    Phase::Establishing { .. } => "establishing",
                    Phase::Active => "active",
                    Phase::Terminating => "terminating",
                    Phase::Handing { .. } => "handing-over",
                    Phase::Adopting => "adopting",
                },
                expires_in: d.expires_at.saturating_sub(now) / 1000,
                last_seq: d.last.as_ref().map_or(0, |l| l.seq),
            })
            .collect();
        v.sort_by(|a, b| a.watcher.cmp(&b.watcher));
        v
    }

    /// Until the peer has joined the overlay it can serve nothing: OPTIONS (what load
    /// balancers probe), PUBLISH and SUBSCRIBE get 503 with `Retry-After` at once.
    pub(super) fn unavailable(&mut self, env: &Env<'_>, method: &Method) -> Option<Headers> {
        if env.peer.is_ready() {
            return None;
        }
        if !matches!(
            method,
            Method::Options | Method::Publish | Method::Subscribe
        ) {
            return None;
        }
        self.stats.not_joined += 1;
        let mut h = Headers::default();
        h.push("Retry-After", NOT_JOINED_RETRY_AFTER.to_string());
        Some(h)
    }

    /// Counts a request by method.
    pub(super) fn count_request(&mut self, method: &str) {
        *self.stats.requests.entry(method.to_string()).or_default() += 1;
    }

    /// Counts a response sent, and emits a log event when its status says the service failed.
    pub(super) fn count_response(
        &mut self,
        env: &mut Env<'_>,
        method: &str,
        resource: &str,
        code: u16,
        reason: &str,
    ) {
        *self
            .stats
            .responses
            .entry((method.to_string(), code))
            .or_default() += 1;
        let failed = matches!(code, 408 | 480) || code >= 500;
        // 503 while joining is counted in `not_joined`; it is not a failure of a transaction.
        if failed && (code != 503 || env.peer.is_ready()) {
            env.peer.emit_log(LogEvent::SipFailure {
                method: method.to_string(),
                resource: resource.to_string(),
                status: code,
                reason: reason.to_string(),
            });
        }
    }

    /// A NOTIFY of subscription `handle` got no answer (Timer F).
    pub(super) fn log_notify_timeout(&mut self, env: &mut Env<'_>, handle: SubHandle) {
        let resource = self
            .dialogs
            .get(&handle)
            .map_or_else(String::new, |d| d.target.clone());
        env.peer.emit_log(LogEvent::SipFailure {
            method: "NOTIFY".into(),
            resource,
            status: 408,
            reason: reason_phrase(408).into(),
        });
    }
}
