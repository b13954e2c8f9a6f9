//! SUBSCRIBE processing and NOTIFY generation (RFC 6665 §4.2), mapped onto
//! `Peer::subscribe` / `refresh` / `unsubscribe` and the core's upcalls.

use super::dialog::{Dialog, DialogId, Phase, Queued, Shown};
use super::headers::{delta_seconds, NameAddr};
use super::message::{reason_phrase, Headers, Request};
use super::transaction::TxKey;
use super::{Env, ReqCtx, SipEndpoint};
use crate::event::{SubHandle, SubRejectReason, SubscribeError};
use crate::mutants::Mutant;

impl SipEndpoint {
    pub(super) fn on_subscribe(
        &mut self,
        env: &mut Env<'_>,
        key: TxKey,
        ctx: ReqCtx,
        req: &Request,
    ) {
        if let Some(ext) = req.headers.get("Require") {
            return self.unsupported_extension(env, key, ctx, ext);
        }
        // RFC 6665 §8.2.1: exactly one Event header (a missing one is a malformed request).
        match req.headers.count("Event") {
            0 => return self.bad_request(env, key, ctx, "missing Event header"),
            1 => {}
            _ => return self.bad_request(env, key, ctx, "multiple Event headers"),
        }
        let event = match self.check_event(req.headers.get("Event")) {
            Ok(e) => e,
            Err(h) => return self.reply(env, key, ctx, 489, reason_phrase(489), h, None),
        };
        let expires = match req.headers.get("Expires") {
            None => self.cfg.default_expires,
            Some(v) => match delta_seconds(v) {
                Some(e) => e,
                None => return self.bad_request(env, key, ctx, "bad Expires"),
            },
        };
        let min = self.min_expires(env.peer.config().sub_min_expires);
        if expires != 0 && expires < min {
            let mut h = Headers::default();
            h.push("Min-Expires", min.to_string());
            return self.reply(env, key, ctx, 423, reason_phrase(423), h, None);
        }
        let expires = expires.min(self.cfg.max_expires);
        let contact = req.headers.get("Contact").map(NameAddr::parse);
        if let Some(local_tag) = ctx.to_na.tag.clone() {
            return self.refresh(env, key, ctx, req, local_tag, expires, contact);
        }
        // Initial SUBSCRIBE.
        if self.depart_by.is_some() {
            // This peer is leaving: the subscriber retries at once, and reaches another peer
            // (or this address again, once it serves again).
            let mut h = Headers::default();
            h.push("Retry-After", "1");
            return self.reply(
                env,
                key,
                ctx,
                503,
                "Service Unavailable - Peer Leaving",
                h,
                None,
            );
        }
        // RFC 6665 §8.3: the package's body type must be acceptable to the subscriber.
        if let Some(media) = super::package_media_type(&event.package) {
            let (kind, _) = media.split_once('/').unwrap_or((media, ""));
            let acceptable = req.headers.all("Accept").all(|a| {
                a.trim().is_empty()
                    || a.split(',').any(|t| {
                        let t = t
                            .split(';')
                            .next()
                            .unwrap_or("")
                            .trim()
                            .to_ascii_lowercase();
                        t == media || t == "*/*" || t == format!("{kind}/*")
                    })
            });
            if !acceptable {
                let mut h = Headers::default();
                h.push("Accept", media);
                return self.reply(env, key, ctx, 406, reason_phrase(406), h, None);
            }
        }
        let target = match contact {
            None => return self.bad_request(env, key, ctx, "missing Contact"),
            Some(Err(_)) => return self.bad_request(env, key, ctx, "bad Contact"),
            Some(Ok(c)) if super::message::valid_uri(&c.uri) => c.uri,
            Some(Ok(_)) => return self.bad_request(env, key, ctx, "bad Contact URI"),
        };
        let fetch = expires == 0;
        let Some(resource) = self.cfg.resource(&req.uri) else {
            return self.not_served(env, key, ctx);
        };
        let gid = self.group_of(&resource, &event);
        let src = ctx.src.ip();
        if let Some((code, reason, h)) = self.dialog_refusal(src, gid) {
            return self.refuse(env, &ctx, code, &reason, h);
        }
        let handle = SubHandle(self.new_handle());
        let asked = if fetch { min } else { expires };
        let granted = match env.peer.subscribe(env.now, env.timers, gid, handle, asked) {
            Ok(g) => g,
            Err(SubscribeError::IntervalTooBrief { min }) => {
                let mut h = Headers::default();
                h.push("Min-Expires", min.to_string());
                return self.reply(env, key, ctx, 423, reason_phrase(423), h, None);
            }
            Err(_) => {
                return self.reply(
                    env,
                    key,
                    ctx,
                    500,
                    reason_phrase(500),
                    Headers::default(),
                    None,
                )
            }
        };
        let local_tag = self.random_hex();
        let id = DialogId {
            call_id: ctx.call_id.clone(),
            local_tag: local_tag.clone(),
            remote_tag: ctx.from_na.tag.clone().unwrap_or_default(),
        };
        // The route set (RFC 3261 §12.1.1: the Record-Route URIs in order) and where NOTIFYs go.
        let route_set: Vec<String> = req
            .headers
            .all("Record-Route")
            .flat_map(super::headers::split_outside_owned)
            .collect();
        let dst = super::conn::notify_flow(&ctx, &target, &route_set);
        let d = Dialog {
            handle,
            id: id.clone(),
            gid,
            event,
            local: format!("{};tag={local_tag}", ctx.to),
            remote: ctx.from.clone(),
            target,
            route_set,
            dst,
            local_cseq: 0,
            remote_cseq: ctx.cseq.seq,
            phase: Phase::Establishing { tx: 0 },
            fetch,
            expires_at: env.now + u64::from(if fetch { 0 } else { granted }) * 1000,
            last: None,
            floor: 0,
            retarget: false,
            resource,
            queue: Default::default(),
            in_flight: None,
            src,
        };
        let mut ctx = ctx;
        ctx.to_tag = Some(local_tag);
        let tx = self.proceed(env, key, ctx);
        let mut d = d;
        d.phase = Phase::Establishing { tx };
        self.dialogs.insert(handle, d);
        self.dialog_ids.insert(id, handle);
        self.admission.dialog_added(src, gid);
    }

    #[allow(clippy::too_many_arguments)]
    fn refresh(
        &mut self,
        env: &mut Env<'_>,
        key: TxKey,
        ctx: ReqCtx,
        req: &Request,
        local_tag: String,
        expires: u32,
        contact: Option<Result<NameAddr, &'static str>>,
    ) {
        let id = DialogId {
            call_id: ctx.call_id.clone(),
            local_tag,
            remote_tag: ctx.from_na.tag.clone().unwrap_or_default(),
        };
        // A dialog being handed to another peer (this one is leaving): 503, and the retry
        // goes where the taker's NOTIFY points (RFC 3261 §21.5.4).
        let handing = |d: &&mut Dialog| matches!(d.phase, Phase::Handing { .. } | Phase::Adopting);
        if let Some(h) = self.dialog_ids.get(&id).copied() {
            if self.dialogs.get_mut(&h).as_ref().is_some_and(handing) {
                let mut hs = Headers::default();
                hs.push("Retry-After", "1");
                let reason = "Service Unavailable - Dialog Moving";
                return self.reply(env, key, ctx, 503, reason, hs, None);
            }
        }
        // An unknown dialog, or one no longer active: 481 (RFC 3261 §12.2.2).
        let found = self
            .dialog_ids
            .get(&id)
            .copied()
            .and_then(|h| self.dialogs.get_mut(&h).map(|d| (h, d)))
            .filter(|(_, d)| d.phase == Phase::Active);
        let Some((h, d)) = found else {
            return self.reply(
                env,
                key,
                ctx,
                481,
                reason_phrase(481),
                Headers::default(),
                None,
            );
        };
        if ctx.cseq.seq <= d.remote_cseq {
            // RFC 3261 §12.2.2: out-of-order in-dialog request.
            return self.reply(
                env,
                key,
                ctx,
                500,
                "Server Internal Error - CSeq out of order",
                Headers::default(),
                None,
            );
        }
        let ev = super::headers::EventHeader::parse(req.headers.get("Event").unwrap_or(""));
        if ev.as_ref().ok() != Some(&d.event) {
            let mut hs = Headers::default();
            hs.push("Allow-Events", d.event.package.clone());
            return self.reply(env, key, ctx, 489, reason_phrase(489), hs, None);
        }
        d.remote_cseq = ctx.cseq.seq;
        // A refresh is a target refresh request (RFC 6665 §4.1.2.1): a new Contact, and the
        // flow it came on, say where the next NOTIFYs go.
        if let Some(Ok(c)) =
            contact.filter(|c| c.as_ref().is_ok_and(|c| super::message::valid_uri(&c.uri)))
        {
            d.target = c.uri;
        }
        d.dst = super::conn::notify_flow(&ctx, &d.target, &d.route_set);
        let last = d.last.clone().unwrap_or_default();
        let mut hs = Headers::default();
        hs.push("Contact", super::conn::contact(self.cfg.local, &ctx.flow));
        if expires == 0 {
            // Unsubscribe: 200, then the final NOTIFY (RFC 6665 §4.2.1.4).
            hs.push("Expires", "0");
            self.reply(env, key, ctx, 200, "OK", hs, None);
            if env.peer.config().mutant_on(Mutant::UnsubscribeIgnored) {
                return;
            }
            let _ = env.peer.unsubscribe(env.now, env.timers, h);
            if let Some(d) = self.dialogs.get_mut(&h) {
                d.expires_at = env.now;
                d.enqueue(Queued {
                    state: last,
                    terminated: Some("timeout"),
                });
            }
            self.pump(env, h);
            return;
        }
        match env.peer.refresh(env.now, env.timers, h, expires) {
            Ok(granted) => {
                hs.push("Expires", granted.to_string());
                self.reply(env, key, ctx, 200, "OK", hs, None);
                if let Some(d) = self.dialogs.get_mut(&h) {
                    d.expires_at = env.now + u64::from(granted) * 1000;
                    d.enqueue(Queued {
                        state: last,
                        terminated: None,
                    });
                }
                self.pump(env, h);
            }
            Err(SubscribeError::IntervalTooBrief { min }) => {
                let mut hs = Headers::default();
                hs.push("Min-Expires", min.to_string());
                self.reply(env, key, ctx, 423, reason_phrase(423), hs, None);
            }
            Err(_) => {
                // The core no longer knows it (expired meanwhile).
                self.reply(
                    env,
                    key,
                    ctx,
                    481,
                    reason_phrase(481),
                    Headers::default(),
                    None,
                );
                if let Some(d) = self.remove_dialog(h) {
                    if let Some(id) = d.in_flight {
                        self.tx.remove_client(id);
                    }
                }
            }
        }
    }

    /// The root's ACK: 200 OK to the initial SUBSCRIBE (the NOTIFY follows with the state).
    pub(super) fn sub_accepted(&mut self, env: &mut Env<'_>, h: SubHandle, expires: u32) {
        let local = self.cfg.local;
        let Some(d) = self.dialogs.get_mut(&h) else {
            return;
        };
        if d.phase == Phase::Adopting {
            // Taken over: the dialog exists (no 200); its expiry stays the subscriber's, and
            // its next NOTIFY, whatever its state, tells the subscriber where it lives now.
            d.phase = Phase::Active;
            d.retarget = true;
            return;
        }
        let Phase::Establishing { tx } = d.phase.clone() else {
            return;
        };
        let granted = if d.fetch { 0 } else { expires };
        d.expires_at = env.now + u64::from(granted) * 1000;
        d.phase = Phase::Active;
        let tag = d.id.local_tag.clone();
        let mut hs = Headers::default();
        // RFC 3261 §12.1.1: a dialog-creating response copies the Record-Route values, in order.
        for r in &d.route_set {
            hs.push("Record-Route", r.clone());
        }
        hs.push("Contact", super::conn::contact(local, &d.dst));
        hs.push("Expires", granted.to_string());
        if !self.complete(env, tx, 200, "OK", hs, Some(tag)) {
            // The subscriber gave up waiting (its transaction is gone).
            self.end_dialog(env, h);
        }
    }

    /// No answer from the overlay in time: 504 (see the module docs).
    pub(super) fn sub_rejected(
        &mut self,
        env: &mut Env<'_>,
        h: SubHandle,
        reason: SubRejectReason,
    ) {
        if self
            .dialogs
            .get(&h)
            .is_some_and(|d| d.phase == Phase::Adopting)
        {
            // Taken over, but the overlay did not answer: end it as the peer that left would
            // have.
            return self.deactivate(env, h);
        }
        let Some(d) = self.remove_dialog(h) else {
            return;
        };
        if let Phase::Establishing { tx } = d.phase {
            let (code, reason) = match reason {
                SubRejectReason::Timeout => (504, reason_phrase(504)),
            };
            self.complete(env, tx, code, reason, Headers::default(), None);
        }
    }

    /// New state for a subscriber: one NOTIFY per change, in seq order (the first, right
    /// after the 200, may say seq 0: nothing published yet).
    pub(super) fn sub_notify(&mut self, env: &mut Env<'_>, h: SubHandle, state: Shown) {
        let seq = state.seq;
        let cfg = env.peer.config();
        let (early, stale_ok) = (
            cfg.mutant_on(Mutant::NotifyBeforeAck),
            cfg.mutant_on(Mutant::NoStaleFilter),
        );
        let silent_first = cfg.mutant_on(Mutant::NoImmediateNotify);
        let Some(d) = self.dialogs.get_mut(&h) else {
            return;
        };
        if let Phase::Handing { .. } = d.phase {
            // Frozen while offered: remember the state (for a final NOTIFY if not taken).
            if d.last.as_ref().is_none_or(|s| seq > s.seq) {
                d.last = Some(state);
            }
            return;
        }
        let established = d.phase == Phase::Active
            || (early && !matches!(d.phase, Phase::Terminating | Phase::Adopting));
        // Never older than what the subscriber was shown; the same state again only as the
        // NOTIFY that retargets a dialog taken over.
        let stale = d
            .shown_seq()
            .is_some_and(|s| seq < s || (seq == s && !d.retarget));
        if !established || (stale && !stale_ok) {
            return;
        }
        let first = d.last.is_none() && d.floor == 0;
        d.retarget = false;
        d.last = Some(state.clone());
        if first && silent_first {
            return;
        }
        let fetch = d.fetch;
        d.enqueue(Queued {
            state,
            terminated: fetch.then_some("timeout"),
        });
        if fetch {
            let _ = env.peer.unsubscribe(env.now, env.timers, h);
        }
        self.pump(env, h);
    }
}
