//! NOTIFY requests (RFC 6665 §4.2.2) as client transactions: one in flight per dialog, the
//! next one sent when it completes (order over UDP); responses matched by `Via` branch; a
//! timeout, 481 or 408 ends the subscription. Over TCP a NOTIFY leaves on the subscriber's
//! connection, or on a new one to its Contact ([`super::conn`]).

use super::conn::contact_addr;
use super::dialog::{Phase, Queued};
use super::headers::{CSeq, Via};
use super::message::Response;
use super::transaction::ClientTx;
use super::{Env, SipEndpoint};
use crate::event::SubHandle;

impl SipEndpoint {
    /// A response arrived (only responses to our NOTIFYs are expected).
    pub(super) fn on_response(&mut self, env: &mut Env<'_>, r: Response) {
        let branch = r
            .headers
            .get("Via")
            .and_then(|v| Via::parse(v).ok())
            .and_then(|v| v.branch);
        let is_notify = r
            .headers
            .get("CSeq")
            .and_then(|c| CSeq::parse(c).ok())
            .is_some_and(|c| c.method == "NOTIFY");
        let id = branch
            .filter(|_| is_notify)
            .and_then(|b| self.tx.client_id(&b));
        let Some(id) = id else {
            self.stats.stray_responses += 1;
            return;
        };
        if r.code < 200 {
            self.tx.client_proceeding(env.timers, id, env.now);
            return;
        }
        let Some(t) = self.tx.remove_client(id) else {
            return;
        };
        let h = t.handle;
        if let Some(d) = self.dialogs.get_mut(&h) {
            if d.in_flight == Some(id) {
                d.in_flight = None;
            }
        }
        // RFC 6665 §4.2.2 / RFC 5057: these end the subscription.
        if matches!(r.code, 481 | 408) {
            self.end_dialog(env, h);
            return;
        }
        self.pump(env, h);
    }

    /// Forgets dialog `h` (its id, and its place in the admission counts).
    pub(super) fn remove_dialog(&mut self, h: SubHandle) -> Option<super::dialog::Dialog> {
        let d = self.dialogs.remove(&h)?;
        self.dialog_ids.remove(&d.id);
        self.admission.dialog_removed(d.src, d.gid);
        Some(d)
    }

    /// Removes a subscription after a failed NOTIFY (or once its final NOTIFY completed).
    pub(super) fn end_dialog(&mut self, env: &mut Env<'_>, h: SubHandle) {
        if let Some(d) = self.remove_dialog(h) {
            if let Some(id) = d.in_flight {
                self.tx.remove_client(id);
            }
            if d.phase != Phase::Terminating {
                // The core may already have dropped it (expiry); nothing to undo then.
                let _ = env.peer.unsubscribe(env.now, env.timers, h);
            }
        }
    }

    /// Ends dialog `h` because this peer leaves and no other peer carries it: a final NOTIFY
    /// `Subscription-State: terminated;reason=deactivated`, which RFC 6665 §4.2.2 defines for
    /// exactly this, "migration of subscriptions between nodes": the subscriber SHOULD
    /// subscribe again at once, and through another peer it gets the same state (the group
    /// lives on, its records at the replicas). A NOTIFY in flight is given up (the final one
    /// overtakes it, with a higher CSeq); an initial SUBSCRIBE still waiting for the overlay
    /// gets 503 with `Retry-After`. Sent once: a leaving peer waits for no answer.
    pub(super) fn deactivate(&mut self, env: &mut Env<'_>, h: SubHandle) {
        let Some(d) = self.dialogs.get_mut(&h) else {
            return;
        };
        match d.phase {
            Phase::Establishing { tx } => {
                self.remove_dialog(h);
                let mut hs = super::message::Headers::default();
                hs.push("Retry-After", "1");
                self.complete(env, tx, 503, "Service Unavailable - Peer Leaving", hs, None);
            }
            Phase::Active | Phase::Handing { .. } | Phase::Adopting => {
                let state = d.last.clone().unwrap_or_default();
                d.queue.clear();
                let in_flight = d.in_flight.take();
                d.enqueue(Queued {
                    state,
                    terminated: Some("deactivated"),
                });
                if let Some(id) = in_flight {
                    self.tx.remove_client(id);
                }
                self.stats.deactivated += 1;
                self.pump(env, h);
            }
            Phase::Terminating => {}
        }
    }

    /// Sends the next queued NOTIFY of dialog `h` if none is in flight; removes a terminated
    /// dialog whose queue is done.
    pub(super) fn pump(&mut self, env: &mut Env<'_>, h: SubHandle) {
        let local = self.cfg.local;
        let branch = format!("z9hG4bK{}", self.random_hex());
        let Some(d) = self.dialogs.get_mut(&h) else {
            return;
        };
        if d.in_flight.is_some() {
            return;
        }
        let Some(q) = d.queue.pop_front() else {
            if d.phase == Phase::Terminating {
                self.remove_dialog(h);
            }
            return;
        };
        let req = d.notify(env.now, &q, local, &branch);
        let bytes = req.to_bytes();
        let (dst, until) = (d.dst, d.expires_at);
        let contact = contact_addr(&d.target, dst.remote().ip());
        // Over TCP: the subscriber's connection while it is open, else a new one.
        let flow = self.transmit_or_open(env, dst, bytes.clone(), contact);
        self.hold(env, &flow, until);
        let tx = ClientTx::new(env.now, branch, h, flow, bytes);
        let id = self.tx.put_client(env.timers, tx);
        if let Some(d) = self.dialogs.get_mut(&h) {
            d.in_flight = Some(id);
            d.dst = flow;
        }
    }
}
