//! Subscription dialogs (RFC 6665 §4.1.2, RFC 3261 §12) on the notifier side, and the
//! NOTIFY requests sent in them.

use super::headers::{EventHeader, SubscriptionState};
use super::message::{Headers, Method, Request};
use super::Flow;
use crate::event::SubHandle;
use crate::id::GroupId;
use crate::Millis;
use bytes::Bytes;
use std::collections::VecDeque;
use std::net::SocketAddr;

/// NOTIFYs queued behind the one in flight; beyond this the oldest non-final one is dropped
/// (a subscriber that stops answering must not grow the queue without bound).
pub const MAX_QUEUED: usize = 256;

/// Dialog identifier on the notifier side: Call-ID, our tag, the subscriber's tag.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct DialogId {
    /// Call-ID.
    pub call_id: String,
    /// Our tag (the subscriber's To tag).
    pub local_tag: String,
    /// The subscriber's From tag.
    pub remote_tag: String,
}

/// Where a subscription dialog stands.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Phase {
    /// Initial SUBSCRIBE waiting for the overlay (its server transaction is `tx`).
    Establishing {
        /// Server transaction of the initial SUBSCRIBE.
        tx: u64,
    },
    /// 200 sent; NOTIFYs flow.
    Active,
    /// Final NOTIFY queued or in flight; the dialog goes when it completes.
    Terminating,
    /// This peer is leaving and offered the dialog to another peer (offer `batch`): no
    /// NOTIFY is sent here meanwhile (the taker sends the state); it goes silently once taken,
    /// or ends with `terminated;reason=deactivated` if it is not.
    Handing {
        /// The offer.
        batch: u64,
    },
    /// Taken over from a peer that left: waiting for the root's answer to this peer's JOIN,
    /// after which it is active and its next NOTIFY (a target refresh) leaves from here.
    Adopting,
}

/// The header carrying the group's sequence number in every NOTIFY: the order the overlay's
/// root stamped. User agents ignore it (RFC 3261 §8.1.3.4: unknown headers are ignored);
/// test harnesses and history checkers read it.
pub const SEQ_HEADER: &str = "X-Sascribe-Seq";

/// A state as the core reported it to a subscriber.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Shown {
    /// The group seq (0: nothing was ever published).
    pub seq: u64,
    /// The composed event state (`None`: no live state).
    pub body: Option<Bytes>,
    /// Its content type.
    pub content_type: Option<String>,
}

/// One NOTIFY to send.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Queued {
    /// The state it carries.
    pub state: Shown,
    /// `Some(reason)` for the final NOTIFY (`Subscription-State: terminated;reason=…`).
    pub terminated: Option<&'static str>,
}

/// A subscription dialog.
#[derive(Debug)]
pub struct Dialog {
    /// Core handle.
    pub handle: SubHandle,
    /// Dialog id.
    pub id: DialogId,
    /// Group.
    pub gid: GroupId,
    /// Event package and id.
    pub event: EventHeader,
    /// Our URI header value (the SUBSCRIBE's To, with our tag).
    pub local: String,
    /// The subscriber's header value (the SUBSCRIBE's From).
    pub remote: String,
    /// Remote target (the subscriber's Contact URI).
    pub target: String,
    /// Route set (Record-Route values, in order).
    pub route_set: Vec<String>,
    /// The flow NOTIFYs are sent on (the one the last SUBSCRIBE came on, or the connection
    /// opened to the Contact when that one closed).
    pub dst: Flow,
    /// Our CSeq for NOTIFYs.
    pub local_cseq: u32,
    /// Highest CSeq seen from the subscriber.
    pub remote_cseq: u32,
    /// Phase.
    pub phase: Phase,
    /// A one-time fetch (initial `Expires: 0`, RFC 6665 §4.4.3).
    pub fetch: bool,
    /// When the subscription expires.
    pub expires_at: Millis,
    /// The last state this peer told the subscriber about.
    pub last: Option<Shown>,
    /// For a dialog taken over from a peer that left: the seq of the last state that peer
    /// showed (0 otherwise). No older state is shown here.
    pub floor: u64,
    /// The next NOTIFY tells the subscriber the dialog's new home (its Contact: RFC 6665 makes
    /// NOTIFY a target refresh request), so it is sent even if its state is not newer than
    /// the last one shown.
    pub retarget: bool,
    /// The presentity (the initial SUBSCRIBE's Request-URI): the `entity` of a `closed` PIDF.
    pub resource: String,
    /// NOTIFYs waiting for the one in flight.
    pub queue: VecDeque<Queued>,
    /// Client transaction of the NOTIFY in flight.
    pub in_flight: Option<u64>,
    /// The source address of the initial SUBSCRIBE (the abuse limits count dialogs by it).
    pub src: std::net::IpAddr,
}

impl Dialog {
    /// The seq of the newest state the subscriber was shown, here or by the peer that handed
    /// the dialog over (`None`: nothing yet).
    pub fn shown_seq(&self) -> Option<u64> {
        let here = self.last.as_ref().map(|s| s.seq);
        match (here, self.floor) {
            (None, 0) => None,
            (h, f) => Some(h.unwrap_or(0).max(f)),
        }
    }

    /// Queues a NOTIFY, bounding the queue.
    pub fn enqueue(&mut self, q: Queued) {
        if self.queue.len() >= MAX_QUEUED {
            if let Some(i) = self.queue.iter().position(|q| q.terminated.is_none()) {
                self.queue.remove(i);
            }
        }
        if q.terminated.is_some() {
            self.phase = Phase::Terminating;
        }
        self.queue.push_back(q);
    }

    /// The body of a NOTIFY carrying `s`, with its content type: the composed state as the
    /// core gave it; with no live state after publications (seq > 0: every state removed or
    /// expired), for `presence` the neutral `closed` PIDF of RFC 3856 §6.6.2, for other
    /// packages an empty body; before any publication (seq 0), no body.
    pub fn body(&self, s: &Shown) -> Option<(String, Bytes)> {
        match &s.body {
            Some(b) if !b.is_empty() => {
                let ct = s.content_type.clone().unwrap_or_else(|| {
                    super::package_media_type(&self.event.package)
                        .unwrap_or("application/octet-stream")
                        .to_string()
                });
                Some((ct, b.clone()))
            }
            _ if s.seq > 0 && self.event.package == "presence" => Some((
                crate::pidf::MEDIA_TYPE.to_string(),
                Bytes::from(crate::pidf::closed(&self.resource)),
            )),
            _ => None,
        }
    }

    /// Builds the next NOTIFY (RFC 6665 §4.2.2) with branch `branch`, for its flow's
    /// transport (`Via`, and `;transport=tcp` in our Contact over TCP).
    pub fn notify(&mut self, now: Millis, q: &Queued, local: SocketAddr, branch: &str) -> Request {
        self.local_cseq = self.local_cseq.saturating_add(1);
        let mut h = Headers::default();
        let transport = self.dst.via_transport();
        h.push(
            "Via",
            format!("SIP/2.0/{transport} {local};branch={branch};rport"),
        );
        h.push("Max-Forwards", "70");
        for r in &self.route_set {
            h.push("Route", r.clone());
        }
        h.push("From", self.local.clone());
        h.push("To", self.remote.clone());
        h.push("Call-ID", self.id.call_id.clone());
        h.push("CSeq", format!("{} NOTIFY", self.local_cseq));
        h.push("Contact", super::conn::contact(local, &self.dst));
        h.push("Event", self.event.to_string());
        let state = match q.terminated {
            Some(reason) => SubscriptionState::Terminated {
                reason: Some(reason.into()),
            },
            None => SubscriptionState::Active {
                expires: (self.expires_at.saturating_sub(now) / 1000) as u32,
            },
        };
        h.push("Subscription-State", state.to_string());
        // A dialog taken over that ends before this peer showed it anything: the state the
        // subscriber holds is unknown here, so its final NOTIFY carries none.
        let unknown = self.last.is_none() && self.floor > 0;
        if !unknown {
            h.push(SEQ_HEADER, q.state.seq.to_string());
        }
        let body = match self.body(&q.state).filter(|_| !unknown) {
            Some((ct, body)) => {
                h.push("Content-Type", ct);
                body
            }
            None => Bytes::new(),
        };
        Request {
            method: Method::Notify,
            uri: self.target.clone(),
            headers: h,
            body,
        }
    }
}
