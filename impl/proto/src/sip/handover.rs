//! Orderly shutdown without ending subscriptions: a leaving gateway hands its dialogs to live
//! leaf-set peers, which carry them on ([`crate::wire::HandoverMsg`]).
//!
//! * **Leaving** (`SipEndpoint::depart`, on [`crate::Call::Leave`]): every active dialog is
//!   offered to one of the [`HANDOVER_FANOUT`] leaf-set peers nearest this one, round robin, in
//!   offers that fit a datagram. An offered dialog is frozen ([`Phase::Handing`]): no NOTIFY
//!   leaves here, the states that arrive are only remembered, an in-dialog SUBSCRIBE gets 503
//!   with `Retry-After`. A taken dialog is forgotten silently. An offer not answered is sent
//!   again every [`HANDOVER_RETRY`], [`HANDOVER_TRIES`] times in all; what is still not taken
//!   after that (offers or answers lost every time, the taker refused it: not a gateway, over
//!   its limits, leaving too) ends the old way, with `terminated;reason=deactivated` (RFC 6665
//!   §4.2.2), and the subscriber subscribes again. An initial SUBSCRIBE still waiting for the
//!   overlay gets 503. The host leaves the overlay once no offer is pending and the final
//!   NOTIFYs are answered (retransmitted meanwhile), or [`DEPART_MAX`] after the leave began.
//! * **Taking** (`SipEndpoint::on_handover`): each offered dialog is checked (a served
//!   package, a target URI that parses, the group id its resource hashes to, the abuse
//!   limits) and adopted: this peer subscribes to the group for it ([`Phase::Adopting`]) and
//!   answers which it took. When the root accepts, the dialog is active, and its next
//!   NOTIFY leaves from here with this peer's `Contact`, even when the state did not move on:
//!   NOTIFY is a target refresh request, so the subscriber's refreshes come here from then on.
//!   It is never older than what the peer that left showed ([`Dialog::floor`]); its CSeq
//!   continues the dialog's.

use super::dialog::{Dialog, DialogId, Phase};
use super::headers::EventHeader;
use super::{Env, Flow, SipEndpoint};
use crate::event::SubHandle;
use crate::io::ConnId;
use crate::timer::Timer;
use crate::wire::{HandoverMsg, NodeHandle, WireDialog, MAX_DATAGRAM_LEN, MAX_DIALOGS_PER_OFFER};
use crate::Millis;

/// Leaf-set peers a leaving gateway spreads its dialogs over.
pub const HANDOVER_FANOUT: usize = 4;

/// How long an offer waits for its answer before it is sent again, or given up.
pub const HANDOVER_RETRY: Millis = 250;

/// Times an offer is sent before its dialogs end with `deactivated` (a loss rate of 5 % on
/// each way leaves about one offer in 10^4 unanswered).
pub const HANDOVER_TRIES: u32 = 4;

/// Bound on a departure: offers given up, final NOTIFYs answered or not, the host leaves.
pub const DEPART_MAX: Millis = 3_000;

/// Room kept in a datagram for the envelope, the stamp and the tag around an offer.
const OFFER_BUDGET: usize = MAX_DATAGRAM_LEN - 1024;

/// A connection id no connection ever has: the flow of a TCP dialog taken over, whose
/// connection (to the peer that left) is gone. Its first NOTIFY opens one to the Contact.
const NO_CONN: ConnId = ConnId(u64::MAX);

/// An offer waiting for its answer.
#[derive(Debug)]
pub(super) struct Offer {
    /// To whom.
    target: NodeHandle,
    /// The dialogs offered, in the offer's order.
    handles: Vec<SubHandle>,
    /// What was sent (for the resends).
    dialogs: Vec<WireDialog>,
    /// Times it was sent.
    tries: u32,
}

impl SipEndpoint {
    /// The peer leaves the overlay: hands its active dialogs over (see the [module
    /// docs](self)). Returns whether offers wait for their answers (the host leaves the
    /// overlay once they are done: [`SipEndpoint::handing_over`]).
    pub(crate) fn depart(&mut self, env: &mut Env<'_>) -> bool {
        let deadline = env.now + DEPART_MAX;
        self.depart_by = Some(deadline);
        // Wakes the host at the deadline, whatever is still pending then.
        env.timers.push(deadline, Timer::SipHandover(u64::MAX));
        let targets = env.peer.leaf_neighbours(HANDOVER_FANOUT);
        let mut handles: Vec<SubHandle> = self.dialogs.keys().copied().collect();
        handles.sort_unstable();
        let mut per_target: Vec<Vec<(SubHandle, WireDialog)>> = vec![Vec::new(); targets.len()];
        let mut next = 0;
        for h in handles {
            let Some(d) = self.dialogs.get(&h) else {
                continue;
            };
            let offered = (d.phase == Phase::Active && !d.fetch && !targets.is_empty())
                .then(|| wire_dialog(d, env.now))
                .flatten();
            match offered {
                Some(w) => {
                    per_target[next % targets.len()].push((h, w));
                    next += 1;
                }
                None => self.deactivate(env, h),
            }
        }
        for (target, list) in targets.into_iter().zip(per_target) {
            let mut offer: Vec<(SubHandle, WireDialog)> = Vec::new();
            let mut size = 0;
            for (h, w) in list {
                let n = w.size_hint();
                if !offer.is_empty()
                    && (size + n > OFFER_BUDGET || offer.len() >= MAX_DIALOGS_PER_OFFER)
                {
                    self.offer(env, target, std::mem::take(&mut offer));
                    size = 0;
                }
                size += n;
                offer.push((h, w));
            }
            if !offer.is_empty() {
                self.offer(env, target, offer);
            }
        }
        self.handing_over(env.now)
    }

    /// Whether the departure goes on at `now`: offers wait for their answers, or final
    /// NOTIFYs for theirs, and [`DEPART_MAX`] has not passed.
    pub(crate) fn handing_over(&self, now: Millis) -> bool {
        let Some(by) = self.depart_by else {
            return false;
        };
        now < by
            && (!self.offers.is_empty()
                || self
                    .dialogs
                    .values()
                    .any(|d| d.phase == Phase::Terminating && d.in_flight.is_some()))
    }

    /// Sends one offer and freezes its dialogs.
    fn offer(&mut self, env: &mut Env<'_>, target: NodeHandle, list: Vec<(SubHandle, WireDialog)>) {
        let batch = self.next_batch;
        self.next_batch += 1;
        let (handles, dialogs): (Vec<_>, Vec<_>) = list.into_iter().unzip();
        for h in &handles {
            if let Some(d) = self.dialogs.get_mut(h) {
                d.phase = Phase::Handing { batch };
                d.queue.clear();
            }
        }
        self.stats.handover_offered += handles.len() as u64;
        env.peer.send_handover(
            &target,
            HandoverMsg::Offer {
                batch,
                dialogs: dialogs.clone(),
            },
        );
        env.timers
            .push(env.now + HANDOVER_RETRY, Timer::SipHandover(batch));
        self.offers.insert(
            batch,
            Offer {
                target,
                handles,
                dialogs,
                tries: 1,
            },
        );
    }

    /// An offer's timer: send it again, or, after [`HANDOVER_TRIES`], end what it holds.
    pub(super) fn handover_timer(&mut self, env: &mut Env<'_>, batch: u64) {
        let Some(o) = self.offers.get_mut(&batch) else {
            return;
        };
        if o.tries < HANDOVER_TRIES {
            o.tries += 1;
            let (target, dialogs) = (o.target, o.dialogs.clone());
            env.peer
                .send_handover(&target, HandoverMsg::Offer { batch, dialogs });
            env.timers
                .push(env.now + HANDOVER_RETRY, Timer::SipHandover(batch));
            return;
        }
        let Some(o) = self.offers.remove(&batch) else {
            return;
        };
        self.settle_offer(env, batch, &o.handles, &[]);
    }

    /// A dialog handover message from `from` (the host drains them from the peer).
    pub(crate) fn on_handover(&mut self, env: &mut Env<'_>, from: NodeHandle, msg: HandoverMsg) {
        match msg {
            HandoverMsg::Offer { batch, dialogs } => {
                let mut taken = Vec::new();
                if self.depart_by.is_none() {
                    for (i, w) in dialogs.iter().enumerate().take(MAX_DIALOGS_PER_OFFER) {
                        if self.adopt(env, w) {
                            taken.push(i as u16);
                        } else {
                            self.stats.handover_refused += 1;
                        }
                    }
                }
                env.peer
                    .send_handover(&from, HandoverMsg::Taken { batch, taken });
            }
            HandoverMsg::Taken { batch, taken } => {
                if self
                    .offers
                    .get(&batch)
                    .is_none_or(|o| o.target.id != from.id)
                {
                    return;
                }
                if let Some(o) = self.offers.remove(&batch) {
                    self.settle_offer(env, batch, &o.handles, &taken);
                }
            }
        }
    }

    /// The dialogs of offer `batch` whose index is in `taken` go silently; the others end
    /// with `terminated;reason=deactivated`.
    fn settle_offer(
        &mut self,
        env: &mut Env<'_>,
        batch: u64,
        handles: &[SubHandle],
        taken: &[u16],
    ) {
        for (i, &h) in handles.iter().enumerate() {
            let still = self
                .dialogs
                .get(&h)
                .is_some_and(|d| d.phase == Phase::Handing { batch });
            if !still {
                continue;
            }
            if taken.contains(&(i as u16)) {
                if let Some(d) = self.remove_dialog(h) {
                    if let Some(id) = d.in_flight {
                        self.tx.remove_client(id);
                    }
                }
                self.stats.handed_over += 1;
            } else {
                self.deactivate(env, h);
            }
        }
    }

    /// Takes dialog `w` over; false when it is refused (or invalid).
    fn adopt(&mut self, env: &mut Env<'_>, w: &WireDialog) -> bool {
        let id = DialogId {
            call_id: w.call_id.clone(),
            local_tag: w.local_tag.clone(),
            remote_tag: w.remote_tag.clone(),
        };
        if self.dialog_ids.contains_key(&id) {
            // Offered again (our answer was lost): taken already.
            return true;
        }
        let event = EventHeader {
            package: w.package.clone(),
            id: w.event_id.clone(),
        };
        let valid = !w.call_id.is_empty()
            && !w.local_tag.is_empty()
            && w.expires_in > 0
            && self.cfg.event_packages.contains(&w.package)
            && super::message::valid_uri(&w.target)
            && self.cfg.resource(&w.resource).as_deref() == Some(w.resource.as_str())
            && self.group_of(&w.resource, &event) == w.gid;
        if !valid {
            return false;
        }
        let src = w.remote_addr.ip();
        if self.dialog_refusal(src, w.gid).is_some() {
            return false;
        }
        let handle = SubHandle(self.new_handle());
        let min = env.peer.config().sub_min_expires;
        let secs = (w.expires_in.div_ceil(1000)).min(u64::from(u32::MAX)) as u32;
        let asked = secs.max(min);
        if env
            .peer
            .subscribe(env.now, env.timers, w.gid, handle, asked)
            .is_err()
        {
            return false;
        }
        let dst = if w.tcp {
            Flow::Tcp {
                conn: NO_CONN,
                remote: w.remote_addr,
            }
        } else {
            Flow::Udp(w.remote_addr)
        };
        let d = Dialog {
            handle,
            id: id.clone(),
            gid: w.gid,
            event,
            local: w.local.clone(),
            remote: w.remote.clone(),
            target: w.target.clone(),
            route_set: w.route_set.clone(),
            dst,
            local_cseq: w.local_cseq,
            remote_cseq: w.remote_cseq,
            phase: Phase::Adopting,
            fetch: false,
            expires_at: env.now + w.expires_in,
            last: None,
            floor: w.last_seq.unwrap_or(0),
            retarget: false,
            resource: w.resource.clone(),
            queue: Default::default(),
            in_flight: None,
            src,
        };
        self.dialogs.insert(handle, d);
        self.dialog_ids.insert(id, handle);
        self.admission.dialog_added(src, w.gid);
        self.stats.taken_over += 1;
        true
    }
}

/// Dialog `d` as it is handed over at `now` (`None`: it expires now).
fn wire_dialog(d: &Dialog, now: Millis) -> Option<WireDialog> {
    let expires_in = d.expires_at.checked_sub(now).filter(|&e| e > 0)?;
    Some(WireDialog {
        call_id: d.id.call_id.clone(),
        local_tag: d.id.local_tag.clone(),
        remote_tag: d.id.remote_tag.clone(),
        local: d.local.clone(),
        remote: d.remote.clone(),
        target: d.target.clone(),
        route_set: d.route_set.clone(),
        package: d.event.package.clone(),
        event_id: d.event.id.clone(),
        resource: d.resource.clone(),
        gid: d.gid,
        tcp: d.dst.is_reliable(),
        remote_addr: d.dst.remote(),
        local_cseq: d.local_cseq,
        remote_cseq: d.remote_cseq,
        expires_in,
        last_seq: d.shown_seq(),
    })
}
