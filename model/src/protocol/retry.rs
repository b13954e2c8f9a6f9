//! Retransmission: a first-contact peer (or a re-JOINing member) resends a request whose
//! message was lost, and gives up after a bounded number of tries (408 to the UA).
//!
//! A [`Timer::Retry`] is enabled only once its request is actually lost, and only after every
//! live peer has detected every crash (timeouts are longer than round trips and detection).

use super::{Ctx, O};
use super::{PeerState, PubResult, ReqId, Timer, UaEvent};
use crate::mutant::Mutant;
use stateright::actor::model_timeout;

impl Ctx<'_> {
    /// A retransmission timeout: resend the request, or give up after the retry budget (a
    /// request can be lost at most once per crash and per network loss, so the correct protocol
    /// never exhausts it; the bound keeps every behaviour finite).
    pub(super) fn on_retry(&self, st: &mut PeerState, req: ReqId, o: &mut O) {
        if self.mutant(Mutant::NoRetry) {
            return;
        }
        let tries = match st.tries.iter_mut().find(|t| t.0 == req) {
            Some(t) => {
                t.1 += 1;
                t.1
            }
            None => {
                st.tries.push((req, 1));
                st.tries.sort_unstable();
                1
            }
        };
        let give_up = tries as usize > self.s.retry_limit();
        if give_up {
            st.tries.retain(|t| t.0 != req);
        } else {
            o.set_timer(Timer::Retry(req), model_timeout());
        }
        if req.who == self.me {
            if st.rejoin == Some(req) {
                if give_up {
                    st.rejoin = None;
                } else {
                    self.send_join(st, req, o);
                }
            }
        } else if let Some(p) = st.pubs.iter().find(|p| p.req == req).copied() {
            if give_up {
                self.pub_answered(st, req, PubResult::Timeout, o);
            } else {
                self.forward_publish(st, p, o);
            }
        } else if let Some(i) = st
            .subs
            .iter()
            .position(|s| s.client == req.who && s.phase.pending() == Some(req.n))
        {
            if give_up {
                st.subs.remove(i);
                self.to_ua(o, req.who, UaEvent::TimedOut);
            } else {
                self.send_join(st, req, o);
            }
        }
    }
}
