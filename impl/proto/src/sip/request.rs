//! Incoming requests (RFC 3261 §8.2): validation of the mandatory headers, matching to a
//! server transaction (retransmissions absorbed, §17.2.3), and dispatch by method.

use super::headers::{self, CSeq, NameAddr, Via};
use super::message::{reason_phrase, Headers, Method, Request};
use super::transaction::{ServerState, TxKey};
use super::{Env, Flow, ReqCtx, SipEndpoint, ALLOW};
use crate::mutants::Mutant;
use std::net::SocketAddr;

impl SipEndpoint {
    pub(super) fn on_request(&mut self, env: &mut Env<'_>, flow: Flow, req: Request) {
        let ctx = match self.validate(flow, &req) {
            Ok(c) => c,
            Err(reason) => {
                self.stats.rx_malformed += 1;
                if req.method != Method::Ack {
                    self.stateless(&flow, &req.headers, 400, &format!("Bad Request - {reason}"));
                }
                return;
            }
        };
        if req.method == Method::Ack {
            return; // no INVITE transactions here
        }
        self.count_request(req.method.as_str());
        let key = TxKey::new(
            &ctx.via,
            req.method.as_str(),
            &ctx.call_id,
            &ctx.cseq,
            ctx.from_na.tag.as_deref().unwrap_or(""),
        );
        let absorb = !env
            .peer
            .config()
            .mutant_on(Mutant::NoRetransmissionAbsorption);
        if let Some(id) = self.tx.server_id(&key).filter(|_| absorb) {
            self.stats.retransmissions_absorbed += 1;
            let again = match self.tx.server(id).map(|t| &t.state) {
                Some(ServerState::Completed { response, .. }) => Some(response.clone()),
                Some(ServerState::Proceeding {
                    trying: Some(t), ..
                }) => Some(t.clone()),
                Some(ServerState::Proceeding { trying: None, .. }) => {
                    self.send_trying(env, id);
                    None
                }
                None => None,
            };
            if let Some(bytes) = again {
                self.transmit(&flow, bytes);
            }
            return;
        }
        if let Some(h) = self.unavailable(env, &req.method) {
            return self.reply(
                env,
                key,
                ctx,
                503,
                "Service Unavailable - joining the overlay",
                h,
                None,
            );
        }
        if self.refuse_if_overloaded(env, &req, &ctx)
            || self.refuse_if_body_too_large(env, &req, &ctx)
        {
            return;
        }
        if let Some(r) = self.admit(env.now, &req, &ctx) {
            return self.reply(env, key, ctx, r.code, &r.reason, r.headers, None);
        }
        match &req.method {
            Method::Publish => self.on_publish(env, key, ctx, &req),
            Method::Subscribe => self.on_subscribe(env, key, ctx, &req),
            Method::Options => {
                let mut h = Headers::default();
                h.push("Allow", ALLOW);
                h.push("Accept", "application/pidf+xml");
                h.push("Allow-Events", self.cfg.event_packages.join(", "));
                self.reply(env, key, ctx, 200, "OK", h, None);
            }
            Method::Cancel => {
                // Non-INVITE transactions are not affected by CANCEL (RFC 3261 §9.2).
                let target = ["PUBLISH", "SUBSCRIBE", "OPTIONS"]
                    .iter()
                    .any(|m| self.tx.server_id(&key.with_method(m)).is_some());
                let code = if target { 200 } else { 481 };
                let reason = reason_phrase(code);
                self.reply(env, key, ctx, code, reason, Headers::default(), None);
            }
            Method::Ack => {}
            Method::Notify | Method::Known(_) => {
                let mut h = Headers::default();
                h.push("Allow", ALLOW);
                self.reply(env, key, ctx, 405, reason_phrase(405), h, None);
            }
            Method::Extension(_) => {
                let mut h = Headers::default();
                h.push("Allow", ALLOW);
                self.reply(env, key, ctx, 501, reason_phrase(501), h, None);
            }
        }
    }

    /// RFC 3261 §8.1.1 / §8.2.2: the headers every request needs.
    fn validate(&mut self, flow: Flow, req: &Request) -> Result<ReqCtx, String> {
        let (h, src) = (&req.headers, flow.remote());
        let via_raw = h.get("Via").ok_or("missing Via")?;
        let via = Via::parse(via_raw).map_err(|e| e.to_string())?;
        let from = h.get("From").ok_or("missing From")?;
        let from_na = NameAddr::parse(from).map_err(|e| format!("From: {e}"))?;
        let to = h.get("To").ok_or("missing To")?;
        let to_na = NameAddr::parse(to).map_err(|e| format!("To: {e}"))?;
        let call_id = h.get("Call-ID").ok_or("missing Call-ID")?;
        if call_id.is_empty() || call_id.contains(char::is_whitespace) {
            return Err("bad Call-ID".into());
        }
        let cseq_raw = h.get("CSeq").ok_or("missing CSeq")?;
        let cseq = CSeq::parse(cseq_raw).map_err(|e| e.to_string())?;
        if cseq.method != req.method.as_str() {
            return Err("CSeq method mismatch".into());
        }
        for one in ["From", "To", "Call-ID", "CSeq"] {
            if h.count(one) > 1 {
                return Err(format!("duplicate {one}"));
            }
        }
        let mut vias: Vec<String> = h
            .all("Via")
            .flat_map(headers::split_outside_owned)
            .collect();
        if let Some(top) = vias.first_mut() {
            *top = fill_received(top, src);
        }
        Ok(ReqCtx {
            src,
            flow,
            vias,
            via,
            from: from.to_string(),
            from_na,
            to: to.to_string(),
            to_na,
            call_id: call_id.to_string(),
            cseq_raw: cseq_raw.to_string(),
            cseq,
            to_tag: None,
        })
    }
}

/// RFC 3261 §18.2.1 / RFC 3581: `received` when the sent-by host is not the source address,
/// `rport` filled when asked for.
pub(super) fn fill_received(via: &str, src: SocketAddr) -> String {
    let mut parts: Vec<String> = headers::split_outside(via, ';')
        .into_iter()
        .map(|s| s.trim().to_string())
        .collect();
    let host = Via::parse(via).ok().map(|v| {
        let sb = v.sent_by;
        if let Some(rest) = sb.strip_prefix('[') {
            rest.split(']').next().unwrap_or("").to_string()
        } else {
            sb.split(':').next().unwrap_or("").to_string()
        }
    });
    let mut has_received = false;
    let mut want_rport = false;
    for p in parts.iter_mut().skip(1) {
        let name = p
            .split('=')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if name == "received" {
            has_received = true;
        }
        if p.eq_ignore_ascii_case("rport") {
            *p = format!("rport={}", src.port());
            want_rport = true;
        }
    }
    if !has_received && (want_rport || host.as_deref() != Some(&src.ip().to_string())) {
        parts.push(format!("received={}", src.ip()));
    }
    parts.join(";")
}
