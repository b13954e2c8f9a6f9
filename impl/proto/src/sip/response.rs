//! Outgoing responses: built from the request's context (RFC 3261 §8.2.6), sent final (the
//! server transaction moves to Completed and keeps it for retransmissions, over UDP), provisional
//! (100 Trying while the overlay works), or stateless for requests that have no transaction.
//! Each leaves on the flow its request came on.

use super::message::{reason_phrase, Headers, Response};
use super::request::fill_received;
use super::transaction::{ServerState, TxKey, TIMER_F};
use super::{Env, Flow, ReqCtx, SipEndpoint};
use crate::event::PubHandle;

impl SipEndpoint {
    fn response(&mut self, ctx: &ReqCtx, code: u16, reason: &str, extra: Headers) -> Response {
        let mut h = Headers::default();
        for v in &ctx.vias {
            h.push("Via", v.clone());
        }
        h.push("From", ctx.from.clone());
        let to = if ctx.to_na.tag.is_some() || code == 100 {
            ctx.to.clone()
        } else {
            let tag = ctx.to_tag.clone().unwrap_or_else(|| self.random_hex());
            format!("{};tag={tag}", ctx.to)
        };
        h.push("To", to);
        h.push("Call-ID", ctx.call_id.clone());
        h.push("CSeq", ctx.cseq_raw.clone());
        for (n, v) in extra.iter() {
            h.push(n, v);
        }
        h.push("Server", "sascribe");
        Response {
            code,
            reason: reason.to_string(),
            headers: h,
            body: Default::default(),
        }
    }

    /// 400 with a reason phrase naming the problem.
    pub(super) fn bad_request(&mut self, env: &mut Env<'_>, key: TxKey, ctx: ReqCtx, reason: &str) {
        let reason = format!("Bad Request - {reason}");
        self.reply(env, key, ctx, 400, &reason, Headers::default(), None)
    }

    /// The Request-URI names a domain this deployment does not serve (RFC 3261 §21.4.5).
    pub(super) fn not_served(&mut self, env: &mut Env<'_>, key: TxKey, ctx: ReqCtx) {
        let reason = "Not Found - domain not served here";
        self.reply(env, key, ctx, 404, reason, Headers::default(), None)
    }

    /// RFC 3261 §8.2.2.3: this endpoint supports no extension, so a request that `Require`s
    /// one gets 420 with `Unsupported` naming it.
    pub(super) fn unsupported_extension(
        &mut self,
        env: &mut Env<'_>,
        key: TxKey,
        ctx: ReqCtx,
        ext: &str,
    ) {
        let mut h = Headers::default();
        h.push("Unsupported", ext);
        self.reply(env, key, ctx, 420, reason_phrase(420), h, None)
    }

    /// Sends a final response and moves the transaction to Completed.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn reply(
        &mut self,
        env: &mut Env<'_>,
        key: TxKey,
        ctx: ReqCtx,
        code: u16,
        reason: &str,
        extra: Headers,
        body: Option<(&str, bytes::Bytes)>,
    ) {
        let mut r = self.response(&ctx, code, reason, extra);
        if let Some((ct, b)) = body {
            r.headers.push("Content-Type", ct);
            r.body = b;
        }
        let bytes = r.to_bytes();
        let method = ctx.cseq.method.clone();
        self.count_response(env, &method, &ctx.to_na.uri, code, reason);
        self.send_response(env, &ctx, bytes.clone());
        // RFC 3261 §17.2.2: Timer J is 0 on reliable transports (no retransmissions to absorb).
        let j = if ctx.flow.is_reliable() {
            0
        } else {
            super::transaction::TIMER_J
        };
        let state = ServerState::Completed {
            response: bytes,
            until: env.now + j,
        };
        self.tx.put_server(env.timers, key, ctx.flow, state);
    }

    /// Refuses a validated request without keeping a transaction for it (admission control:
    /// a flood of refused requests must keep no state); counted like any response.
    pub(super) fn refuse(
        &mut self,
        env: &mut Env<'_>,
        ctx: &ReqCtx,
        code: u16,
        reason: &str,
        extra: Headers,
    ) {
        let bytes = self.response(ctx, code, reason, extra).to_bytes();
        let method = ctx.cseq.method.clone();
        self.count_response(env, &method, &ctx.to_na.uri, code, reason);
        self.send_response(env, ctx, bytes);
    }

    /// Answers a request that has no transaction (malformed, oversized), on its flow.
    pub(super) fn stateless(&mut self, flow: &Flow, hs: &Headers, code: u16, reason: &str) {
        let src = flow.remote();
        let mut h = Headers::default();
        // The headers of a request that could not be parsed are echoed only when they are
        // clean text: a value holding a line break or another control byte would let the
        // request write headers of its own into our answer (response splitting).
        let clean = |v: &&str| !v.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f);
        for (i, v) in hs.all("Via").filter(clean).enumerate() {
            h.push(
                "Via",
                if i == 0 {
                    fill_received(v, src)
                } else {
                    v.to_string()
                },
            );
        }
        for n in ["From", "To", "Call-ID", "CSeq"] {
            if let Some(v) = hs.get(n).filter(clean) {
                let v = if n == "To" && !v.contains("tag=") {
                    format!("{v};tag={}", self.random_hex())
                } else {
                    v.to_string()
                };
                h.push(n, v);
            }
        }
        if code == 513 || code == 400 {
            h.push("Server", "sascribe");
        }
        let method = hs
            .get("CSeq")
            .filter(clean)
            .and_then(|c| c.split_whitespace().nth(1))
            .unwrap_or("-")
            .to_string();
        *self.stats.responses.entry((method, code)).or_default() += 1;
        let r = Response {
            code,
            reason: reason.to_string(),
            headers: h,
            body: Default::default(),
        };
        self.transmit(flow, r.to_bytes());
    }

    /// Keeps the transaction Proceeding until the overlay answers; returns its id.
    pub(super) fn proceed(&mut self, env: &mut Env<'_>, key: TxKey, ctx: ReqCtx) -> u64 {
        let dst = ctx.flow;
        // The overlay answers within its request timeout: keep the transaction that long,
        // and at least until the client's Timer F fired long ago.
        let patience = (2 * TIMER_F).max(env.peer.config().request_timeout + TIMER_F);
        let state = ServerState::Proceeding {
            ctx: Box::new(ctx),
            started: env.now,
            trying_at: env.now.saturating_add(self.cfg.trying_delay),
            abandon: env.now.saturating_add(patience),
            trying: None,
        };
        self.tx.put_server(env.timers, key, dst, state)
    }

    /// Sends (and keeps, for retransmissions) 100 Trying on a Proceeding transaction.
    pub(super) fn send_trying(&mut self, env: &mut Env<'_>, id: u64) {
        let Some(tx) = self.tx.server(id) else {
            return;
        };
        let ServerState::Proceeding { ctx, .. } = &tx.state else {
            return;
        };
        let ctx = (**ctx).clone();
        let bytes = self
            .response(&ctx, 100, "Trying", Headers::default())
            .to_bytes();
        if let Some(tx) = self.tx.server_mut(id) {
            if let ServerState::Proceeding { trying, .. } = &mut tx.state {
                *trying = Some(bytes.clone());
                let dst = tx.dst;
                self.tx.rearm_server(env.timers, id);
                self.transmit(&dst, bytes);
            }
        }
    }

    /// Completes a Proceeding transaction with a final response. Returns whether it was
    /// still waiting.
    pub(super) fn complete(
        &mut self,
        env: &mut Env<'_>,
        id: u64,
        code: u16,
        reason: &str,
        extra: Headers,
        to_tag: Option<String>,
    ) -> bool {
        let Some(tx) = self.tx.server(id) else {
            return false;
        };
        let ServerState::Proceeding { ctx, started, .. } = &tx.state else {
            return false;
        };
        if code == 200 && ctx.cseq.method == "PUBLISH" {
            self.stats
                .publish_latency
                .observe(env.now.saturating_sub(*started));
        }
        let started = *started;
        let mut ctx = (**ctx).clone();
        let key = tx.key.clone();
        if to_tag.is_some() {
            ctx.to_tag = to_tag;
        }
        self.overlay_answered(started, env.now);
        self.reply(env, key, ctx, code, reason, extra, None);
        true
    }

    /// The root answered publication request `req`: its final response.
    pub(super) fn finish_pub(
        &mut self,
        env: &mut Env<'_>,
        req: PubHandle,
        code: u16,
        reason: &str,
        h: Headers,
    ) {
        if let Some(id) = self.pubs.remove(&req) {
            self.complete(env, id, code, reason, h, None);
        }
    }
}
