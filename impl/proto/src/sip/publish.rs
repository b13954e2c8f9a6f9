//! PUBLISH processing (RFC 3903 §6, the event state compositor), mapped onto
//! `Peer::publish`. The root holds the entity tag and expiry; this module only checks what can
//! be checked locally and maps the root's answer to a response.

use super::headers::{delta_seconds, entity_tag, media_type_is, EntityTag, EventHeader};
use super::message::{reason_phrase, Headers, Request};
use super::transaction::TxKey;
use super::{Env, ReqCtx, SipEndpoint};
use crate::event::{PubHandle, PubMeta, PublishError};
use crate::mutants::Mutant;

/// The response code, reason phrase and headers of a failed publication.
pub(super) fn failure(reason: PublishError, cfg: &crate::Config) -> (u16, String, Headers) {
    let mut h = Headers::default();
    if let PublishError::TooManyStates { max } = reason {
        // RFC 3903 has no code for a compositor's limit on event states: 403 (RFC 3261
        // §21.4.4, "understood the request but is refusing to fulfill it"; retrying does not
        // help until a state goes), with the limit in the reason phrase.
        let phrase = format!("Forbidden - more than {max} event states for this presentity");
        return (403, phrase, h);
    }
    let code = match reason {
        PublishError::PreconditionFailed if cfg.mutant_on(Mutant::WrongPreconditionCode) => 400,
        PublishError::PreconditionFailed => 412,
        PublishError::IntervalTooBrief { min } => {
            h.push("Min-Expires", min.to_string());
            423
        }
        PublishError::BadRequest => 400,
        PublishError::TooLarge => 413,
        PublishError::Timeout => 504,
        PublishError::TooManyStates { .. } => 403,
    };
    (code, reason_phrase(code).to_string(), h)
}

impl SipEndpoint {
    /// Checks an event package: `Ok` if served, else the 489 headers.
    pub(super) fn check_event(&self, value: Option<&str>) -> Result<EventHeader, Headers> {
        let ev = value.and_then(|v| EventHeader::parse(v).ok());
        match ev {
            Some(e) if self.cfg.event_packages.contains(&e.package) => Ok(e),
            _ => {
                let mut h = Headers::default();
                h.push("Allow-Events", self.cfg.event_packages.join(", "));
                Err(h)
            }
        }
    }

    /// Minimum expiry: the front end's and the overlay's, whichever is larger.
    pub(super) fn min_expires(&self, overlay_min: u32) -> u32 {
        self.cfg.min_expires.max(overlay_min)
    }

    pub(super) fn on_publish(&mut self, env: &mut Env<'_>, key: TxKey, ctx: ReqCtx, req: &Request) {
        if let Some(ext) = req.headers.get("Require") {
            return self.unsupported_extension(env, key, ctx, ext);
        }
        // Step 2: Event.
        if req.headers.count("Event") > 1 {
            return self.bad_request(env, key, ctx, "multiple Event headers");
        }
        let event = match self.check_event(req.headers.get("Event")) {
            Ok(e) => e,
            Err(h) => return self.reply(env, key, ctx, 489, reason_phrase(489), h, None),
        };
        // Step 3: SIP-If-Match.
        let if_match = match req.headers.count("SIP-If-Match") {
            0 => None,
            1 => match entity_tag(req.headers.get("SIP-If-Match").unwrap_or("")) {
                EntityTag::Ours(e) => Some(e),
                EntityTag::Foreign => {
                    return self.reply(
                        env,
                        key,
                        ctx,
                        412,
                        reason_phrase(412),
                        Headers::default(),
                        None,
                    )
                }
                EntityTag::Invalid => return self.bad_request(env, key, ctx, "bad SIP-If-Match"),
            },
            _ => return self.bad_request(env, key, ctx, "multiple SIP-If-Match headers"),
        };
        // Step 4: Expires.
        let expires = match req.headers.get("Expires") {
            None => None,
            Some(v) => match delta_seconds(v) {
                Some(e) => Some(e),
                None => return self.bad_request(env, key, ctx, "bad Expires"),
            },
        };
        let min = self.min_expires(env.peer.config().pub_min_expires);
        if let Some(e) = expires.filter(|&e| e != 0 && e < min) {
            let _ = e;
            let mut h = Headers::default();
            h.push("Min-Expires", min.to_string());
            return self.reply(env, key, ctx, 423, reason_phrase(423), h, None);
        }
        let expires = expires.map(|e| e.min(self.cfg.max_expires));
        // Step 5: body (ignored for a removal).
        let mut content_type = None;
        let body = if req.body.is_empty() || expires == Some(0) {
            None
        } else {
            let ct = req.headers.get("Content-Type");
            let Some(ct) = ct else {
                return self.bad_request(env, key, ctx, "body without Content-Type");
            };
            if event.package == "presence" && !media_type_is(ct, "application/pidf+xml") {
                let mut h = Headers::default();
                h.push("Accept", "application/pidf+xml");
                return self.reply(env, key, ctx, 415, reason_phrase(415), h, None);
            }
            if crate::pidf::is_pidf(ct) {
                // A body that does not parse would poison the composition of every NOTIFY.
                if let Err(e) = crate::pidf::validate(&req.body) {
                    return self.bad_request(env, key, ctx, &e.to_string());
                }
            }
            content_type = Some(ct.to_string());
            Some(req.body.clone())
        };
        if body.is_none() && if_match.is_none() {
            let why = if expires == Some(0) {
                "removal without SIP-If-Match"
            } else {
                "neither body nor SIP-If-Match"
            };
            return self.bad_request(env, key, ctx, why);
        }
        let Some(resource) = self.cfg.resource(&req.uri) else {
            return self.not_served(env, key, ctx);
        };
        let gid = self.group_of(&resource, &event);
        let handle = PubHandle(self.new_handle());
        let retry_key = Some(key.digest(ctx.src));
        let tx = self.proceed(env, key, ctx);
        self.pubs.insert(handle, tx);
        let meta = PubMeta {
            content_type,
            resource: Some(resource),
            retry_key,
        };
        env.peer.publish(
            env.now, env.timers, gid, handle, body, meta, if_match, expires,
        );
    }
}
