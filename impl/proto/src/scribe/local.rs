//! The local API of sa-Scribe: subscriptions and publications made by this peer's SIP layer
//! (or any caller), with their retransmissions, timeouts and subscription expiry. Each request
//! has its own timer entry.

use super::{secs, Ctx, Scribe};
use crate::event::{Event, PubHandle, PublishError, SubHandle, SubRejectReason, SubscribeError};
use crate::event::{PubMeta, TerminateReason};
use crate::id::GroupId;
use crate::mutants::Mutant;
use crate::timer::{Armed, Timer};
use crate::wire::{ETag, Latest, PubReqId, PublishReply, Routed, REJOIN_ID_BIT};
use crate::Millis;
use bytes::Bytes;

#[derive(Clone, Debug)]
pub(crate) struct LocalSub {
    pub gid: GroupId,
    pub accepted: bool,
    pub provisional: bool,
    pub join_id: u64,
    pub deadline: Millis,
    pub retry_at: Millis,
    pub expires_at: Millis,
    pub granted: u32,
    /// Got its first NOTIFY (which may say seq 0: nothing published yet).
    pub notified: bool,
    pub armed: Armed,
}

impl LocalSub {
    fn wakeup(&self) -> Millis {
        if self.accepted {
            self.expires_at
        } else {
            self.retry_at.min(self.deadline)
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct PendingPub {
    pub handle: PubHandle,
    gid: GroupId,
    body: Option<Bytes>,
    meta: PubMeta,
    if_match: Option<ETag>,
    expires: Option<u32>,
    deadline: Millis,
    retry_at: Millis,
    armed: Armed,
}

impl Scribe {
    /// The deadlines of this peer's local subscriptions and publications of `gid`, with the
    /// intervals that set them ([`Scribe::deadline_beyond`]).
    #[cfg(feature = "harness")]
    pub(super) fn local_deadlines(
        &self,
        cfg: &crate::config::Config,
        gid: GroupId,
        all: &mut Vec<(&'static str, Millis, Millis)>,
    ) {
        for s in self.subs.values().filter(|s| s.gid == gid) {
            all.push(("subscription's", s.deadline, cfg.request_timeout));
            all.push(("subscription's retry", s.retry_at, cfg.request_retry));
            all.push((
                "subscription's expiry",
                s.expires_at,
                secs(cfg.sub_max_expires),
            ));
        }
        for p in self.pubs.values().filter(|p| p.gid == gid) {
            all.push(("publication's", p.deadline, cfg.request_timeout));
            all.push(("publication's retry", p.retry_at, cfg.request_retry));
        }
    }

    pub fn subscribe(
        &mut self,
        ctx: &mut Ctx<'_>,
        gid: GroupId,
        handle: SubHandle,
        expires: u32,
    ) -> Result<u32, SubscribeError> {
        if self.subs.contains_key(&handle) {
            return Err(SubscribeError::DuplicateHandle);
        }
        if expires < ctx.cfg.sub_min_expires {
            return Err(SubscribeError::IntervalTooBrief {
                min: ctx.cfg.sub_min_expires,
            });
        }
        let granted = expires.min(ctx.cfg.sub_max_expires);
        let join_id = (ctx.rng.nonzero() & !REJOIN_ID_BIT).max(1);
        let now = ctx.now;
        let mut sub = LocalSub {
            gid,
            accepted: false,
            provisional: false,
            join_id,
            deadline: now + ctx.cfg.request_timeout,
            retry_at: now + ctx.cfg.request_retry,
            expires_at: now + secs(granted),
            granted,
            notified: false,
            armed: Armed::default(),
        };
        ctx.timers
            .arm(sub.wakeup(), Timer::Subscription(handle), &mut sub.armed);
        self.subs.insert(handle, sub);
        self.group(ctx, gid).subs.push(handle);
        Self::send_join(ctx, gid, join_id, None);
        Ok(granted)
    }

    pub(super) fn send_join(
        ctx: &mut Ctx<'_>,
        gid: GroupId,
        join_id: u64,
        carried: Option<Latest>,
    ) {
        let origin = ctx.me();
        ctx.route_to_self(
            gid,
            Routed::Join {
                gid,
                origin,
                join_id,
                graft: true,
                carried,
                path: Vec::new(),
            },
        );
    }

    pub fn refresh(
        &mut self,
        ctx: &mut Ctx<'_>,
        handle: SubHandle,
        expires: u32,
    ) -> Result<u32, SubscribeError> {
        if expires == 0 {
            self.unsubscribe(ctx, handle)?;
            return Ok(0);
        }
        if expires < ctx.cfg.sub_min_expires {
            return Err(SubscribeError::IntervalTooBrief {
                min: ctx.cfg.sub_min_expires,
            });
        }
        let sub = self
            .subs
            .get_mut(&handle)
            .ok_or(SubscribeError::UnknownHandle)?;
        let granted = expires.min(ctx.cfg.sub_max_expires);
        sub.granted = granted;
        sub.expires_at = ctx.now + secs(granted);
        ctx.timers
            .arm(sub.wakeup(), Timer::Subscription(handle), &mut sub.armed);
        Ok(granted)
    }

    pub fn unsubscribe(
        &mut self,
        ctx: &mut Ctx<'_>,
        handle: SubHandle,
    ) -> Result<(), SubscribeError> {
        if ctx.cfg.mutant_on(Mutant::UnsubscribeIgnored) {
            return self
                .subs
                .contains_key(&handle)
                .then_some(())
                .ok_or(SubscribeError::UnknownHandle);
        }
        let sub = self
            .subs
            .remove(&handle)
            .ok_or(SubscribeError::UnknownHandle)?;
        self.detach_sub(ctx, sub.gid, handle);
        Ok(())
    }

    pub(super) fn detach_sub(&mut self, ctx: &mut Ctx<'_>, gid: GroupId, handle: SubHandle) {
        if let Some(g) = self.groups.get_mut(&gid) {
            if !ctx.cfg.mutant_on(Mutant::UnsubscribeKeepsSub) {
                g.subs.retain(|h| *h != handle);
            }
        }
        self.prune(ctx, gid);
    }

    #[allow(clippy::too_many_arguments)]
    pub fn publish(
        &mut self,
        ctx: &mut Ctx<'_>,
        gid: GroupId,
        handle: PubHandle,
        body: Option<Bytes>,
        meta: PubMeta,
        if_match: Option<ETag>,
        expires: Option<u32>,
    ) {
        if body.as_ref().is_some_and(|b| b.len() > ctx.cfg.max_body) {
            ctx.events.push_back(Event::PublishFailed {
                req: handle,
                reason: PublishError::TooLarge,
            });
            return;
        }
        // A retransmission of a request already pending here is a new call only after its
        // transaction ended; it then gets a fresh nonce.
        let nonce = match meta.retry_key {
            Some(k) if k != 0 && !self.pubs.contains_key(&k) => k,
            _ => ctx.rng.nonzero(),
        };
        let mut p = PendingPub {
            handle,
            gid,
            body,
            meta,
            if_match,
            expires,
            deadline: ctx.now + ctx.cfg.request_timeout,
            retry_at: ctx.now + ctx.cfg.request_retry,
            armed: Armed::default(),
        };
        Self::send_publish(ctx, nonce, &p);
        ctx.timers.arm(
            p.retry_at.min(p.deadline),
            Timer::Publication(nonce),
            &mut p.armed,
        );
        self.pubs.insert(nonce, p);
    }

    fn send_publish(ctx: &mut Ctx<'_>, nonce: u64, p: &PendingPub) {
        let origin = ctx.me();
        let body = Routed::Publish {
            gid: p.gid,
            req: PubReqId {
                origin: origin.id,
                nonce,
            },
            origin,
            body: p.body.clone(),
            content_type: p.meta.content_type.clone(),
            resource: p.meta.resource.clone(),
            if_match: p.if_match,
            expires: p.expires,
        };
        ctx.route_to_self(p.gid, body);
    }

    /// The root's answer to one of our publications.
    pub(super) fn on_publish_reply(
        &mut self,
        ctx: &mut Ctx<'_>,
        req: PubReqId,
        reply: PublishReply,
    ) {
        if req.origin != ctx.me().id {
            return;
        }
        let Some(p) = self.pubs.remove(&req.nonce) else {
            return;
        };
        let req = p.handle;
        let ev = match reply {
            PublishReply::Ok(o) => Event::Published {
                req,
                etag: o.etag,
                expires: o.expires,
                seq: o.seq,
            },
            PublishReply::PreconditionFailed => Event::PublishFailed {
                req,
                reason: PublishError::PreconditionFailed,
            },
            PublishReply::IntervalTooBrief { min } => Event::PublishFailed {
                req,
                reason: PublishError::IntervalTooBrief { min },
            },
            PublishReply::BadRequest => Event::PublishFailed {
                req,
                reason: PublishError::BadRequest,
            },
            PublishReply::TooManyStates { max } => Event::PublishFailed {
                req,
                reason: PublishError::TooManyStates { max },
            },
            PublishReply::TooLarge => Event::PublishFailed {
                req,
                reason: PublishError::TooLarge,
            },
        };
        ctx.events.push_back(ev);
    }

    /// pACK for one of our JOINs.
    pub(super) fn on_provisional(&mut self, ctx: &mut Ctx<'_>, gid: GroupId, join_id: u64) {
        if let Some((h, s)) = self.pending_sub(gid, join_id) {
            if !s.provisional {
                s.provisional = true;
                ctx.events.push_back(Event::SubProvisional { handle: h });
            }
        }
    }

    /// The local subscription of `gid` waiting for the answer to JOIN `join_id`.
    pub(super) fn pending_sub(
        &mut self,
        gid: GroupId,
        join_id: u64,
    ) -> Option<(SubHandle, &mut LocalSub)> {
        if join_id == 0 {
            return None;
        }
        let g = self.groups.get(&gid)?;
        let h = *g.subs.iter().find(|h| {
            self.subs
                .get(h)
                .is_some_and(|s| !s.accepted && s.join_id == join_id)
        })?;
        self.subs.get_mut(&h).map(|s| (h, s))
    }

    /// Marks a pending subscription accepted (the root's ACK reached us).
    pub(super) fn accept_sub(
        &mut self,
        ctx: &mut Ctx<'_>,
        gid: GroupId,
        join_id: u64,
    ) -> Option<SubHandle> {
        let (h, s) = self.pending_sub(gid, join_id)?;
        s.accepted = true;
        ctx.events.push_back(Event::SubAccepted {
            handle: h,
            expires: s.granted,
        });
        ctx.timers
            .arm(s.wakeup(), Timer::Subscription(h), &mut s.armed);
        Some(h)
    }

    /// Gives local subscriber `h` the group's latest state if it has not had it.
    pub(super) fn deliver_to(&mut self, ctx: &mut Ctx<'_>, gid: GroupId, h: SubHandle) {
        let (Some(g), Some(s)) = (self.groups.get(&gid), self.subs.get_mut(&h)) else {
            return;
        };
        // Called as `h` is accepted (so a NOTIFY of a newer state reaches it from now on,
        // `notify_local`): only the first NOTIFY is owed here.
        if !s.notified {
            s.notified = true;
            ctx.events.push_back(Event::Notify {
                handle: h,
                seq: g.latest.seq,
                state: g.latest.body.clone(),
                content_type: g.latest.content_type.clone(),
            });
        }
    }

    /// Delivers the group's latest state to its accepted local subscribers: the caller has
    /// just taken it, newer than any they were given (or, with the `NoStaleFilter` mutant,
    /// not newer).
    pub(super) fn notify_local(&mut self, ctx: &mut Ctx<'_>, gid: GroupId) {
        let Some(g) = self.groups.get(&gid) else {
            return;
        };
        let early = ctx.cfg.mutant_on(Mutant::NotifyBeforeAck);
        for h in &g.subs {
            if let Some(s) = self.subs.get_mut(h) {
                if s.accepted || early {
                    s.notified = true;
                    ctx.events.push_back(Event::Notify {
                        handle: *h,
                        seq: g.latest.seq,
                        state: g.latest.body.clone(),
                        content_type: g.latest.content_type.clone(),
                    });
                }
            }
        }
    }

    // ----------------------------------------------------------------- timers

    /// The timer of local subscription `h` fired.
    pub(super) fn sub_timer(&mut self, ctx: &mut Ctx<'_>, h: SubHandle) {
        if let Some(s) = self.subs.get_mut(&h) {
            if s.armed.take_due(ctx.now) {
                self.sub_due(ctx, h);
            }
        }
    }

    /// Runs what is due for local subscription `h`: a JOIN retransmission, the request's
    /// timeout, or the subscription's expiry; then re-arms its timer.
    fn sub_due(&mut self, ctx: &mut Ctx<'_>, h: SubHandle) {
        let now = ctx.now;
        let Some(s) = self.subs.get_mut(&h) else {
            return;
        };
        let end = if s.accepted {
            (now >= s.expires_at).then_some(Event::SubTerminated {
                handle: h,
                reason: TerminateReason::Expired,
            })
        } else if now >= s.deadline {
            Some(Event::SubRejected {
                handle: h,
                reason: SubRejectReason::Timeout,
            })
        } else {
            if now >= s.retry_at {
                s.retry_at = now + ctx.cfg.request_retry;
                Self::send_join(ctx, s.gid, s.join_id, None);
            }
            None
        };
        match end {
            Some(ev) => {
                let gid = s.gid;
                self.subs.remove(&h);
                ctx.events.push_back(ev);
                self.detach_sub(ctx, gid, h);
            }
            None => ctx
                .timers
                .arm(s.wakeup(), Timer::Subscription(h), &mut s.armed),
        }
    }

    /// The timer of local publication request `nonce` fired.
    pub(super) fn pub_timer(&mut self, ctx: &mut Ctx<'_>, nonce: u64) {
        if let Some(p) = self.pubs.get_mut(&nonce) {
            if p.armed.take_due(ctx.now) {
                self.pub_due(ctx, nonce);
            }
        }
    }

    /// Runs what is due for publication request `nonce`: a retransmission or its timeout.
    fn pub_due(&mut self, ctx: &mut Ctx<'_>, nonce: u64) {
        let now = ctx.now;
        let Some(p) = self.pubs.get_mut(&nonce) else {
            return;
        };
        if now >= p.deadline {
            let handle = p.handle;
            self.pubs.remove(&nonce);
            ctx.events.push_back(Event::PublishFailed {
                req: handle,
                reason: PublishError::Timeout,
            });
            return;
        }
        if now >= p.retry_at {
            p.retry_at = now + ctx.cfg.request_retry;
            Self::send_publish(ctx, nonce, p);
        }
        ctx.timers.arm(
            p.retry_at.min(p.deadline),
            Timer::Publication(nonce),
            &mut p.armed,
        );
    }

    /// Makes the retransmission timer of local subscription `h` due now (with `give_up`, its
    /// deadline too, so that the request times out) and arms it at `now`; the driver then fires
    /// it through [`Scribe::handle_timer`], the path a due timer takes. Returns the timer, or
    /// `None` unless `h` names a pending subscription.
    #[cfg(feature = "harness")]
    pub fn due_sub_timer(
        &mut self,
        ctx: &mut Ctx<'_>,
        h: SubHandle,
        give_up: bool,
    ) -> Option<Timer> {
        let s = self.subs.get_mut(&h).filter(|s| !s.accepted)?;
        if give_up {
            s.deadline = ctx.now;
        }
        s.retry_at = ctx.now;
        let timer = Timer::Subscription(h);
        ctx.timers.arm(ctx.now, timer, &mut s.armed);
        Some(timer)
    }

    /// Makes the retransmission timer of local publication request `h` due now (see
    /// [`Scribe::due_sub_timer`]).
    #[cfg(feature = "harness")]
    pub fn due_pub_timer(
        &mut self,
        ctx: &mut Ctx<'_>,
        h: PubHandle,
        give_up: bool,
    ) -> Option<Timer> {
        let (&nonce, p) = self.pubs.iter_mut().find(|(_, p)| p.handle == h)?;
        if give_up {
            p.deadline = ctx.now;
        }
        p.retry_at = ctx.now;
        let timer = Timer::Publication(nonce);
        ctx.timers.arm(ctx.now, timer, &mut p.armed);
        Some(timer)
    }
}
