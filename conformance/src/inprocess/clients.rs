//! The trace's user agents as SIP user agents (MAPPING.md, "Client requests" and
//! "Client-visible outcomes"): each is a sans-IO [`UserAgent`] that sends real SIP requests to
//! the SIP socket of its first-contact peer; what it receives back — final responses and
//! NOTIFYs — becomes the trace's client outcomes. Every PUBLISH and un-SUBSCRIBE, and half of
//! the SUBSCRIBEs, are sent twice, as a UDP retransmission would be: the peer's server
//! transaction must absorb the copy.

use super::{body_of, values_of, Cluster, EXPIRY_UNIT_SECS, PIDF, RESOURCE, SUB_EXPIRES};
use crate::sut::ClientRequest;
use crate::ClientOutcome;
use sascribe::sip::message::Method;
use sascribe::ua::{UaEvent, UserAgent};
use sascribe::ETag;
use std::net::SocketAddr;

/// One of the trace's user agents.
pub(super) struct TraceUa {
    pub name: String,
    /// Its first-contact peer.
    pub peer: usize,
    pub agent: UserAgent,
    /// Publishes sent so far (the model's request counter of a publisher).
    pub sent: u8,
    /// The current subscription and its initial SUBSCRIBE.
    pub sub: Option<(u64, u64)>,
    /// The user agent asked to end its subscription: an un-SUBSCRIBE is sent as soon as the
    /// dialog exists (a SIP user agent cannot end a subscription before its 200).
    pub leaving: bool,
    /// The un-SUBSCRIBE was answered: any NOTIFY other than the final one is news.
    pub left: bool,
    /// Pending PUBLISH requests (the user agent's request id) and their trace names.
    pub publishes: Vec<(u64, String)>,
    /// While its initial SUBSCRIBE awaits its final response: whether a provisional one
    /// (100 Trying) came.
    pub trying: Option<bool>,
    /// The current subscription was refreshed (once, at its first NOTIFY).
    pub refreshed: bool,
    /// The refresh awaiting its answer.
    pub refresh: Option<u64>,
    /// The NOTIFY that follows a refresh, repeating the last state, has not come yet.
    pub repeat_due: bool,
    /// The seq and values of the last NOTIFY it was sent.
    pub last_notify: Option<(Option<u8>, Option<Vec<u8>>)>,
}

/// Address of the trace's user agent `u`.
pub(super) fn ua_addr(u: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 2, 1 + (u % 250) as u8], 5070))
}

impl Cluster {
    /// User agent `u` hands `request` to its first-contact peer `p` (named `peer`).
    pub(super) fn client_request(
        &mut self,
        u: usize,
        p: usize,
        request: &ClientRequest,
    ) -> Result<(), String> {
        let now = self.now;
        let server = self.slots[p].sip;
        let peer = self.slots[p].name.clone();
        let ua = self.uas[u].name.clone();
        match request {
            ClientRequest::Subscribe => {
                let n = self.slots[p].counter;
                self.slots[p].counter += 1;
                let name = format!("{peer}/{ua}#{n}");
                self.log(format!("{ua} → {peer}: SUBSCRIBE as {name}"));
                self.sub_unassigned[p].push_back((u, name));
                let c = &mut self.uas[u];
                let (sub, req) =
                    c.agent
                        .subscribe(now, server, RESOURCE, "presence", sub_ask(u, false));
                // Half of the SUBSCRIBEs (by the parity of the user agent's place and the
                // request's number) are sent twice, as a UDP retransmission would be: the copy
                // is absorbed, with 100 Trying. The others are sent once, so that their 100
                // Trying can come only from the pACK (MAPPING.md, "Client-visible outcomes").
                if (u + n as usize) % 2 == 1 {
                    c.agent.retransmit(req);
                }
                c.sub = Some((sub, req));
                c.trying = Some(false);
                c.refreshed = false;
                c.leaving = false;
                c.left = false;
            }
            ClientRequest::Unsubscribe => {
                let c = &mut self.uas[u];
                c.leaving = true;
                match c.sub {
                    Some((sub, _)) if c.agent.subscription(sub).is_some_and(|s| s.active) => {
                        if let Some(req) = c.agent.resubscribe(now, sub, 0) {
                            c.agent.retransmit(req);
                        }
                        self.log(format!("{ua} → {peer}: SUBSCRIBE Expires: 0"));
                    }
                    Some((sub, _)) if c.agent.subscription(sub).is_some_and(|s| !s.terminated) => {
                        self.log(format!("{ua}: un-SUBSCRIBE deferred until the 200"));
                    }
                    // A subscription that already ended (rejected, timed out): nothing to end.
                    _ => self.log(format!("{ua}: no subscription to end")),
                }
            }
            ClientRequest::Publish {
                value,
                if_match,
                expires,
            } => {
                let n = self.uas[u].sent;
                self.uas[u].sent += 1;
                let name = format!("{peer}/{ua}#{n}");
                let etag = if_match.map(|s| self.etag_for(s).to_string());
                let secs = EXPIRY_UNIT_SECS * u32::from(*expires);
                self.log(format!(
                    "{ua} → {peer}: PUBLISH v{value} SIP-If-Match {etag:?} Expires {secs} as {name}"
                ));
                // A removal (`Expires: 0`) carries no body (RFC 3903 §4.4).
                let body = (*expires != 0).then(|| (PIDF, body_of(*value)));
                let c = &mut self.uas[u];
                let req = c.agent.publish(
                    now,
                    server,
                    RESOURCE,
                    "presence",
                    body,
                    etag.as_deref(),
                    Some(secs),
                );
                c.agent.retransmit(req);
                c.publishes.push((req, name.clone()));
                self.pub_unassigned[p].push_back((u64::from(n) << 8 | u as u64, name));
            }
        }
        Ok(())
    }

    /// The Call-ID of user agent `u`'s request named `name` still waiting at its peer: the
    /// PUBLISH of that name, or else its subscription's SUBSCRIBE.
    pub(super) fn pending_call_id(&self, u: usize, name: &str) -> Option<String> {
        let c = &self.uas[u];
        if let Some((req, _)) = c.publishes.iter().find(|(_, n)| n == name) {
            return c.agent.call_id(*req).map(str::to_string);
        }
        let (sub, _) = c.sub?;
        c.agent.subscription(sub).map(|s| s.call_id.clone())
    }

    /// Turns what user agent `u` observed into client outcomes.
    pub(super) fn observe_ua(&mut self, u: usize) {
        while let Some(e) = self.uas[u].agent.poll_event() {
            let name = self.uas[u].name.clone();
            let outcome = |kind: &str| ClientOutcome {
                ua: name.clone(),
                kind: kind.into(),
                seq: None,
                values: None,
                etag: None,
                expires: None,
            };
            match e {
                UaEvent::Response {
                    req,
                    method: Method::Subscribe,
                    code,
                    expires,
                    ..
                } => {
                    if self.uas[u].refresh == Some(req) {
                        self.uas[u].refresh = None;
                        self.log(format!("{name}: refresh answered {code}"));
                        if code != 200 {
                            self.ua_faults
                                .push(format!("{name}: its refresh was answered {code}"));
                        } else if expires != Some(sub_ask(u, true)) {
                            // It asked for the peers' minimum or maximum: granted whole.
                            let asked = sub_ask(u, true);
                            self.ua_faults.push(format!(
                                "{name}: its refresh for {asked} s was granted {expires:?} s \
                                 (the bounds are {} to {SUB_EXPIRES} s)",
                                SUB_EXPIRES / 2
                            ));
                        }
                        continue;
                    }
                    let initial = self.uas[u].sub.is_some_and(|(_, r)| r == req);
                    if !initial {
                        // The un-SUBSCRIBE's answer.
                        self.uas[u].left = true;
                        self.log(format!("{name}: un-SUBSCRIBE answered {code}"));
                        continue;
                    }
                    self.forget_sub(u);
                    let c = &mut self.uas[u];
                    c.trying = None;
                    if c.leaving {
                        if let Some((sub, _)) = c.sub.filter(|_| code == 200) {
                            if let Some(req) = c.agent.resubscribe(self.now, sub, 0) {
                                c.agent.retransmit(req);
                            }
                        }
                        self.log(format!("{name}: SUBSCRIBE answered {code} after leaving"));
                        continue;
                    }
                    let kind = match code {
                        200 => "subscribe_ok",
                        504 => "subscribe_timeout",
                        _ => {
                            let k = format!("subscribe_{code}");
                            self.obs.client.push(outcome(&k));
                            continue;
                        }
                    };
                    self.obs.client.push(outcome(kind));
                }
                UaEvent::Notify {
                    terminated,
                    seq,
                    body,
                    ..
                } => {
                    let c = &self.uas[u];
                    if c.leaving && (terminated || !c.left) {
                        // The subscription is being ended: its last NOTIFYs are not news.
                        self.log(format!(
                            "{name}: NOTIFY while leaving (terminated {terminated})"
                        ));
                        continue;
                    }
                    if terminated {
                        self.obs.client.push(outcome("subscribe_terminated"));
                        continue;
                    }
                    // A document of states must name the presentity, whatever entity its
                    // publishers wrote (`body_of`): one that does not is not for it.
                    let named = sascribe::pidf::summary(&body).ok().and_then(|s| s.entity);
                    let kind = if values_of(&body).is_some() && named.as_deref() != Some(RESOURCE) {
                        "notify_not_for_presentity"
                    } else {
                        "notify"
                    };
                    let mut o = outcome(kind);
                    o.seq = seq.map(|s| s.min(255) as u8);
                    o.values = values_of(&body);
                    let c = &mut self.uas[u];
                    let shown = (o.seq, o.values.clone());
                    if c.repeat_due && c.last_notify.as_ref() == Some(&shown) {
                        // A refresh's NOTIFY, the last state again: not news.
                        c.repeat_due = false;
                        self.log(format!("{name}: NOTIFY after the refresh, seq {:?}", o.seq));
                        continue;
                    }
                    c.last_notify = Some(shown);
                    self.obs.client.push(o);
                    self.refresh_once(u);
                }
                UaEvent::Response {
                    req,
                    method: Method::Publish,
                    code,
                    etag,
                    expires,
                    seq,
                    ..
                } => {
                    self.uas[u].publishes.retain(|(r, _)| *r != req);
                    self.forget_pub(u);
                    let kind = match code {
                        200 => "publish_ok",
                        412 => "publish_412",
                        504 => "publish_timeout",
                        423 => "publish_423",
                        400 => "publish_400",
                        413 => "publish_413",
                        _ => {
                            let k = format!("publish_{code}");
                            self.obs.client.push(outcome(&k));
                            continue;
                        }
                    };
                    let mut o = outcome(kind);
                    if code == 200 {
                        let e = etag.and_then(|e| e.parse::<ETag>().ok());
                        if let (Some(e), Some(s)) = (e, seq) {
                            let s = self.learn_etag(e, s);
                            // The ETag a user agent was given is the one `eN` names from now
                            // on: a root that failed before committing may have minted another
                            // for the same seq (MAPPING.md, "ETags").
                            self.seq_etag.insert(s, e);
                            o.etag = Some(s);
                        }
                        o.expires = expires.map(|x| (x / EXPIRY_UNIT_SECS).min(255) as u8);
                    }
                    self.obs.client.push(o);
                }
                UaEvent::Provisional {
                    req,
                    method: Method::Subscribe,
                    code,
                } if self.uas[u].sub.is_some_and(|(_, r)| r == req) => {
                    let c = &mut self.uas[u];
                    c.trying = c.trying.map(|_| true);
                    self.log(format!("{name}: SUBSCRIBE answered {code}"));
                }
                other => self.log(format!("{name}: {other:?}")),
            }
        }
    }

    /// At the first NOTIFY of its subscription, user agent `u` refreshes it (an in-dialog
    /// SUBSCRIBE with the same expiry, as every SIP client does before it runs out): the
    /// peer must answer 200 and NOTIFY the last state again, and nothing else changes
    /// (MAPPING.md, "Client-visible outcomes").
    fn refresh_once(&mut self, u: usize) {
        let now = self.now;
        let c = &mut self.uas[u];
        let Some((sub, _)) = c.sub.filter(|_| !c.refreshed && !c.leaving) else {
            return;
        };
        if !c.agent.subscription(sub).is_some_and(|s| s.active) {
            return;
        }
        c.refreshed = true;
        if let Some(req) = c.agent.resubscribe(now, sub, sub_ask(u, true)) {
            c.refresh = Some(req);
            c.repeat_due = true;
            let name = c.name.clone();
            self.log(format!("{name} refreshes its subscription"));
        }
    }

    /// Subscription names of user agent `u` not yet bound to a JOIN are dropped once its
    /// subscription got its answer.
    fn forget_sub(&mut self, u: usize) {
        for q in &mut self.sub_unassigned {
            q.retain(|(x, _)| *x != u);
        }
    }

    fn forget_pub(&mut self, u: usize) {
        let pending: Vec<String> = self.uas[u]
            .publishes
            .iter()
            .map(|(_, n)| n.clone())
            .collect();
        for q in &mut self.pub_unassigned {
            q.retain(|(x, n)| (*x & 0xff) as usize != u || pending.contains(n));
        }
    }
}

/// The expiry (seconds) user agent `u` asks for in its SUBSCRIBE, or with `refresh` in its
/// refresh: each asks for exactly one bound of the peers' range and refreshes for the other
/// (even places subscribe for the minimum, odd ones for the maximum), so that a bound that
/// refuses its own value, or a comparison turned the wrong way, refuses a subscription or a
/// refresh the model accepts.
fn sub_ask(u: usize, refresh: bool) -> u32 {
    if u.is_multiple_of(2) != refresh {
        SUB_EXPIRES / 2
    } else {
        SUB_EXPIRES
    }
}
