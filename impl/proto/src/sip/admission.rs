//! # Admission control: overload and abuse limits of the SIP front end
//!
//! Every request that is not a retransmission (those are absorbed by their transaction, so an
//! accepted request is never refused) passes here before any work is done for it. The
//! decision is the core's, from what the core knows (its pending transactions, its dialogs)
//! and from one signal the driver passes in as an input ([`crate::Input::Backlog`]: how full
//! the driver's own input queues are). Nothing here reads a clock: the token buckets run on
//! the `now` of the input.
//!
//! ## Overload (RFC 3261 §21.5.4, the idea of RFC 7339)
//! Work is refused with `503 Service Unavailable` and `Retry-After` *before* queues grow:
//! * **new work** (a PUBLISH without `SIP-If-Match`, an initial SUBSCRIBE) while the server
//!   transactions waiting for the overlay reach 3/4 of [`AdmissionConfig::max_pending`],
//!   the driver's input backlog reaches [`AdmissionConfig::max_backlog`] percent, or the
//!   overlay's recent answers took [`AdmissionConfig::max_delay`] ms on average (a root or a
//!   replica on the requests' paths falls behind: its queues are growing, and the clients'
//!   retransmissions, from 500 ms, would add to them);
//! * **continuing work** (a conditional PUBLISH: a refresh, modify or removal of a state
//!   already acknowledged) only at `max_pending` itself (the memory bound);
//! * **in-dialog requests** of existing dialogs (refresh, un-SUBSCRIBE) are never refused
//!   for load or rate: they end or keep work already accepted, and cost no overlay round
//!   trip. Only the hard bound on transactions ([`super::SipConfig::max_transactions`])
//!   applies to them, and only once every transaction held is still being worked on (an
//!   answered one is evicted first).
//!
//! `Retry-After` is [`AdmissionConfig::retry_after`] seconds plus a random 0..=that many more,
//! so that refused clients do not come back in step. Refusals are sent without a server
//! transaction (a stateless 503, RFC 3261 §8.2.6): a flood of refused requests keeps no
//! state at all. A retransmission of a refused request is judged again.
//!
//! ## Abuse limits
//! | limit | response | counter ([`super::SipStats`]) |
//! |---|---|---|
//! | requests per second from one source IP ([`AdmissionConfig::source_rate`], a token bucket of [`AdmissionConfig::source_burst`]) | 503 + `Retry-After` (when the next token comes) | `rate_limited` |
//! | subscription dialogs from one source IP ([`AdmissionConfig::max_subs_per_source`]) | 403, the limit in the reason phrase (waiting does not help until one ends) | `source_sub_limited` |
//! | subscription dialogs to one presentity at this gateway ([`AdmissionConfig::max_subs_per_presentity`]) | 403, the limit in the reason phrase | `presentity_sub_limited` |
//! | subscription dialogs held by this peer ([`AdmissionConfig::max_dialogs`]) | 503 + `Retry-After` | `dialog_limited` |
//! | a PUBLISH or SUBSCRIBE body over [`crate::Config::max_body`] | 413 | `body_too_large` |
//! | a message over [`super::SipConfig::max_message`] (RFC 3261 §21.5.14) | 513 | `rx_oversized` |
//!
//! Per-source state is bounded: the token buckets live in an LRU map of at most
//! [`AdmissionConfig::max_sources`] addresses (a flood from spoofed sources evicts the least
//! recently seen; an evicted source starts again with a full bucket), and the dialog counts
//! per source and per presentity exist only while dialogs do (bounded by `max_dialogs`).

use super::message::{Headers, Method, Request};
use super::{Env, ReqCtx, SipEndpoint};
use crate::id::GroupId;
use crate::Millis;
use lru::LruCache;
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroUsize;

/// Limits of the SIP front end's admission control (see the [module docs](self)). A rate
/// or count of 0 turns that limit off (the configuration file insists on positive
/// `max_pending`, `max_sources` and `max_dialogs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Server transactions waiting for the overlay (pending PUBLISHes and initial
    /// SUBSCRIBEs). New work is refused at 3/4 of it, any PUBLISH or initial SUBSCRIBE at it;
    /// 0: no limit (the backlog and `max_transactions` still apply).
    pub max_pending: usize,
    /// The driver's input backlog (percent of its fullest input queue) at which new work is
    /// refused.
    pub max_backlog: u8,
    /// Overlay delay (ms) at which new work is refused: the mean time the overlay took to
    /// answer this front end's PUBLISHes and initial SUBSCRIBEs over the last
    /// [`DELAY_WINDOW`] to 2 × [`DELAY_WINDOW`] ms, once at least [`DELAY_SAMPLES`] were
    /// answered in it. It rises when any peer on the requests' paths (a root, its replicas)
    /// falls behind, before its queues overflow; 0: off.
    pub max_delay: u32,
    /// Base of `Retry-After` (seconds) for overload refusals; a random 0..=this is added.
    pub retry_after: u32,
    /// Requests per second one source IP may send (token bucket refill); 0: no limit.
    pub source_rate: u32,
    /// Token bucket size: requests one source may send at once (0: `source_rate`).
    pub source_burst: u32,
    /// Source addresses whose token bucket is kept (LRU beyond).
    pub max_sources: usize,
    /// Subscription dialogs one source IP may hold at this peer; 0: no limit.
    pub max_subs_per_source: usize,
    /// Subscription dialogs to one presentity (group) at this peer; 0: no limit.
    pub max_subs_per_presentity: usize,
    /// Subscription dialogs this peer holds; 0: no limit of its own (`max_transactions`
    /// still bounds the requests that create them).
    pub max_dialogs: usize,
}

impl Default for AdmissionConfig {
    /// 1,024 pending transactions, 50 % backlog, 200 ms overlay delay, `Retry-After` 2–4 s, no per-source rate
    /// (a proxy or a load balancer in front would look like one abusive source), 65,536
    /// sources remembered, 10,000 dialogs per source and per presentity, 100,000 dialogs.
    fn default() -> Self {
        AdmissionConfig {
            max_pending: 1_024,
            max_backlog: 50,
            max_delay: 200,
            retry_after: 2,
            source_rate: 0,
            source_burst: 0,
            max_sources: 65_536,
            max_subs_per_source: 10_000,
            max_subs_per_presentity: 10_000,
            max_dialogs: 100_000,
        }
    }
}

/// One source's token bucket, in thousandths of a token.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    milli: u64,
    at: Millis,
}

/// The admission state of an endpoint.
#[derive(Debug)]
pub(super) struct Admission {
    buckets: LruCache<IpAddr, Bucket>,
    by_source: HashMap<IpAddr, usize>,
    by_presentity: HashMap<GroupId, usize>,
    /// The driver's last backlog report (percent).
    backlog: u8,
    /// How long the overlay took to answer recent requests.
    delay: DelayWindow,
}

/// The length (ms) of each of the two windows the overlay delay is averaged over.
pub const DELAY_WINDOW: Millis = 250;
/// Answers the delay windows must hold before their mean counts.
pub const DELAY_SAMPLES: u32 = 8;

/// The overlay's answer delays over two consecutive windows of [`DELAY_WINDOW`] ms: the
/// current one and the one before. With no answers (nothing admitted, or nothing asked), the
/// windows empty as time passes, so a front end that refused everything admits again.
#[derive(Clone, Copy, Debug, Default)]
struct DelayWindow {
    /// Start of the current window.
    start: Millis,
    /// (answers, sum of their delays in ms): the current window, the one before.
    cur: (u32, u64),
    prev: (u32, u64),
}

impl DelayWindow {
    fn roll(&mut self, now: Millis) {
        if now >= self.start + 2 * DELAY_WINDOW {
            self.prev = (0, 0);
            self.cur = (0, 0);
            self.start = now - now % DELAY_WINDOW;
        } else if now >= self.start + DELAY_WINDOW {
            self.prev = self.cur;
            self.cur = (0, 0);
            self.start += DELAY_WINDOW;
        }
    }

    fn add(&mut self, now: Millis, delay: Millis) {
        self.roll(now);
        self.cur.0 = self.cur.0.saturating_add(1);
        self.cur.1 = self.cur.1.saturating_add(delay);
    }

    /// The mean delay (ms) at `now`, once there are enough answers.
    fn mean(&self, now: Millis) -> Option<u64> {
        let mut w = *self;
        w.roll(now);
        let n = w.cur.0 + w.prev.0;
        (n >= DELAY_SAMPLES).then(|| (w.cur.1 + w.prev.1) / u64::from(n))
    }
}

/// What kind of work a request is, for overload decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Work {
    /// An initial SUBSCRIBE or an unconditional PUBLISH.
    New,
    /// A conditional PUBLISH (its state was acknowledged before).
    Continuing,
    /// Anything else: OPTIONS, CANCEL, in-dialog requests, methods not served.
    Other,
}

impl Admission {
    pub(super) fn new(cfg: &AdmissionConfig) -> Admission {
        let cap = NonZeroUsize::new(cfg.max_sources.max(1)).unwrap_or(NonZeroUsize::MIN);
        Admission {
            buckets: LruCache::new(cap),
            by_source: HashMap::new(),
            by_presentity: HashMap::new(),
            backlog: 0,
            delay: DelayWindow::default(),
        }
    }

    /// Source addresses with a token bucket (at most `max_sources`).
    pub(super) fn sources(&self) -> usize {
        self.buckets.len()
    }

    /// Takes one token from `src`'s bucket at `now`; `Err(seconds until the next one)`.
    fn take_token(&mut self, cfg: &AdmissionConfig, src: IpAddr, now: Millis) -> Result<(), u32> {
        if cfg.source_rate == 0 {
            return Ok(());
        }
        let rate = u64::from(cfg.source_rate);
        let burst = match cfg.source_burst {
            0 => cfg.source_rate,
            b => b,
        };
        let cap = u64::from(burst) * 1000;
        let b = self.buckets.get_or_insert_mut(src, || Bucket {
            milli: cap,
            at: now,
        });
        // Tokens per second × ms = thousandths of a token.
        let refill = now.saturating_sub(b.at).saturating_mul(rate);
        b.milli = b.milli.saturating_add(refill).min(cap);
        b.at = b.at.max(now);
        if b.milli >= 1000 {
            b.milli -= 1000;
            return Ok(());
        }
        let wait_ms = (1000 - b.milli).div_ceil(rate);
        Err(u32::try_from(wait_ms.div_ceil(1000))
            .unwrap_or(u32::MAX)
            .max(1))
    }

    /// A dialog from `src` to `gid` was created.
    pub(super) fn dialog_added(&mut self, src: IpAddr, gid: GroupId) {
        *self.by_source.entry(src).or_default() += 1;
        *self.by_presentity.entry(gid).or_default() += 1;
    }

    /// A dialog from `src` to `gid` ended.
    pub(super) fn dialog_removed(&mut self, src: IpAddr, gid: GroupId) {
        fn dec<K: std::hash::Hash + Eq>(m: &mut HashMap<K, usize>, k: K) {
            if let Some(n) = m.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&k);
                }
            }
        }
        dec(&mut self.by_source, src);
        dec(&mut self.by_presentity, gid);
    }
}

/// A refusal: the status, the reason phrase and `Retry-After` (seconds), if any.
pub(super) struct Refused {
    code: u16,
    reason: String,
    retry_after: Option<u32>,
}

impl SipEndpoint {
    /// The driver's input backlog, in percent of its fullest input queue.
    pub(crate) fn set_backlog(&mut self, percent: u8) {
        self.admission.backlog = percent.min(100);
    }

    /// The last backlog the driver reported (percent).
    pub fn backlog(&self) -> u8 {
        self.admission.backlog
    }

    /// A request admitted at `started` waited for the overlay until its final answer `now`.
    pub(super) fn overlay_answered(&mut self, started: Millis, now: Millis) {
        self.admission.delay.add(now, now.saturating_sub(started));
    }

    /// The mean overlay answer delay (ms) of the last [`DELAY_WINDOW`] to 2 ×
    /// [`DELAY_WINDOW`] ms, when at least [`DELAY_SAMPLES`] requests were answered in it.
    pub fn overlay_delay(&self, now: Millis) -> Option<u64> {
        self.admission.delay.mean(now)
    }

    /// Source addresses with a rate-limit bucket (bounded by `max_sources`).
    pub fn rate_limited_sources(&self) -> usize {
        self.admission.sources()
    }

    /// Whether `req` is an in-dialog request of a dialog this endpoint holds.
    fn in_existing_dialog(&self, req: &Request, ctx: &ReqCtx) -> bool {
        let Some(local_tag) = &ctx.to_na.tag else {
            return false;
        };
        req.method == Method::Subscribe
            && self.dialog_ids.contains_key(&super::dialog::DialogId {
                call_id: ctx.call_id.clone(),
                local_tag: local_tag.clone(),
                remote_tag: ctx.from_na.tag.clone().unwrap_or_default(),
            })
    }

    /// `Retry-After` of an overload refusal: the base plus a random 0..=base.
    fn overload_retry(&mut self) -> u32 {
        let base = self.cfg.admission.retry_after.max(1);
        let jitter = self.rng.next_u64() % (u64::from(base) + 1);
        base + u32::try_from(jitter).unwrap_or(0)
    }

    /// The overload and rate decision for a new request (see the [module docs](self)):
    /// `None` admits it.
    fn refusal(&mut self, now: Millis, req: &Request, ctx: &ReqCtx) -> Option<Refused> {
        // A full table first gives up an answered transaction (it only absorbs
        // retransmissions); only one full of requests still being worked on refuses.
        if self.tx.servers() >= self.cfg.max_transactions && !self.tx.evict_completed() {
            self.stats.overload_refused += 1;
            return Some(Refused {
                code: 503,
                reason: "Service Unavailable - too many transactions".into(),
                retry_after: Some(self.overload_retry()),
            });
        }
        if self.in_existing_dialog(req, ctx) {
            return None;
        }
        let cfg = &self.cfg.admission;
        if let Err(secs) = self.admission.take_token(cfg, ctx.src.ip(), now) {
            self.stats.rate_limited += 1;
            return Some(Refused {
                code: 503,
                reason: "Service Unavailable - request rate of this source".into(),
                retry_after: Some(secs),
            });
        }
        let work = match req.method {
            Method::Subscribe if ctx.to_na.tag.is_none() => Work::New,
            Method::Publish if req.headers.get("SIP-If-Match").is_some() => Work::Continuing,
            Method::Publish => Work::New,
            _ => Work::Other,
        };
        let pending = self.tx.proceeding();
        let max = cfg.max_pending;
        let over = match work {
            Work::Other => false,
            Work::Continuing => max > 0 && pending >= max,
            Work::New => {
                let slow = cfg.max_delay > 0
                    && (self.admission.delay.mean(now))
                        .is_some_and(|d| d >= u64::from(cfg.max_delay));
                (max > 0 && pending >= max - max / 4)
                    || self.admission.backlog >= cfg.max_backlog.max(1)
                    || slow
            }
        };
        if over {
            self.stats.overload_refused += 1;
            return Some(Refused {
                code: 503,
                reason: "Service Unavailable - overloaded".into(),
                retry_after: Some(self.overload_retry()),
            });
        }
        None
    }

    /// Overload control and the per-source rate limit, for a request that is not a
    /// retransmission: `true` when it was refused (with a stateless 503).
    pub(super) fn refuse_if_overloaded(
        &mut self,
        env: &mut Env<'_>,
        req: &Request,
        ctx: &ReqCtx,
    ) -> bool {
        let Some(r) = self.refusal(env.now, req, ctx) else {
            return false;
        };
        let mut h = Headers::default();
        if let Some(s) = r.retry_after {
            h.push("Retry-After", s.to_string());
        }
        self.refuse(env, ctx, r.code, &r.reason, h);
        true
    }

    /// The limits on a new subscription dialog from `src` to `gid`: `None` admits it, else
    /// the status, reason phrase and headers of the refusal.
    pub(super) fn dialog_refusal(
        &mut self,
        src: IpAddr,
        gid: GroupId,
    ) -> Option<(u16, String, Headers)> {
        let cfg = &self.cfg.admission;
        let mut h = Headers::default();
        if cfg.max_dialogs > 0 && self.dialogs.len() >= cfg.max_dialogs {
            self.stats.dialog_limited += 1;
            h.push("Retry-After", self.overload_retry().to_string());
            return Some((503, "Service Unavailable - too many dialogs".into(), h));
        }
        let (per_src, per_res) = (cfg.max_subs_per_source, cfg.max_subs_per_presentity);
        if per_src > 0 && self.admission.by_source.get(&src).copied().unwrap_or(0) >= per_src {
            self.stats.source_sub_limited += 1;
            let reason = format!("Forbidden - more than {per_src} subscriptions from this source");
            return Some((403, reason, h));
        }
        if per_res > 0 && self.admission.by_presentity.get(&gid).copied().unwrap_or(0) >= per_res {
            self.stats.presentity_sub_limited += 1;
            let reason = format!("Forbidden - more than {per_res} subscriptions to this resource");
            return Some((403, reason, h));
        }
        None
    }

    /// A body over the overlay's `max_body`: `true` when it was refused (413).
    pub(super) fn refuse_if_body_too_large(
        &mut self,
        env: &mut Env<'_>,
        req: &Request,
        ctx: &ReqCtx,
    ) -> bool {
        if !matches!(req.method, Method::Publish | Method::Subscribe)
            || req.body.len() <= env.peer.config().max_body
        {
            return false;
        }
        self.stats.body_too_large += 1;
        let reason = format!(
            "Request Entity Too Large - body over {} bytes",
            env.peer.config().max_body
        );
        self.refuse(env, ctx, 413, &reason, Headers::default());
        true
    }
}
