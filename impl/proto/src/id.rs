//! Identifiers of the 128-bit circular id space shared by peers ([`NodeId`]) and
//! notification groups ([`GroupId`]).
//!
//! Pastry digits are `b = 4` bits wide, so an id has [`DIGITS`] = 32 hexadecimal digits, most
//! significant first. Distances are circular: `ring_distance(a, b) = min(a - b, b - a) mod 2^128`.
//! "Numerically closest" ties (two ids at exactly the same distance) are broken towards the
//! smaller id so that every peer agrees on a single root.

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};
use std::fmt;

/// Bits per Pastry digit (`b`).
pub const DIGIT_BITS: u32 = 4;
/// Number of digits in an id (`128 / b`).
pub const DIGITS: usize = 32;
/// Number of distinct digit values (`2^b`).
pub const RADIX: usize = 16;

/// Identifier of an overlay peer.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u128);

/// Identifier of a notification group (`gid`), a key in the same id space as [`NodeId`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupId(pub u128);

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "N{:032x}", self.0)
    }
}
impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}
impl fmt::Debug for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "G{:032x}", self.0)
    }
}
impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Digit `i` (0 = most significant) of a 128-bit key.
#[inline]
pub fn digit(key: u128, i: usize) -> usize {
    debug_assert!(i < DIGITS);
    ((key >> (128 - DIGIT_BITS as usize * (i + 1))) & 0xF) as usize
}

/// Number of leading digits `a` and `b` share (32 when equal).
#[inline]
pub fn shared_prefix_len(a: u128, b: u128) -> usize {
    ((a ^ b).leading_zeros() / DIGIT_BITS) as usize
}

/// Circular distance between two keys.
#[inline]
pub fn ring_distance(a: u128, b: u128) -> u128 {
    let d = a.wrapping_sub(b);
    d.min(b.wrapping_sub(a))
}

/// Whether `a` is strictly closer to `key` than `b`, ties broken towards the smaller id.
#[inline]
pub fn closer(key: u128, a: u128, b: u128) -> bool {
    (ring_distance(a, key), a) < (ring_distance(b, key), b)
}

/// The numerically closest id to `key` among `ids` (the group root rule), or `None` if empty.
pub fn closest_of(key: u128, ids: impl IntoIterator<Item = u128>) -> Option<u128> {
    ids.into_iter().min_by_key(|&i| (ring_distance(i, key), i))
}

impl NodeId {
    /// Digit `i` of this id.
    pub fn digit(self, i: usize) -> usize {
        digit(self.0, i)
    }
    /// Maps a 10-bit id of the paper's Fig. 3 overlay into the top bits (order and prefixes
    /// preserved).
    pub fn from_paper_10bit(id: u16) -> NodeId {
        NodeId(u128::from(id & 0x3FF) << 118)
    }
}

impl GroupId {
    /// Computes the group id of a subscription/publication target:
    /// `SHA-1(canonical(request_uri) "\n" lowercase(event) [";id=" id])`, truncated to its first
    /// 128 bits (big endian).
    ///
    /// Canonicalisation of the Request-URI (`scheme:[user[:password]@]host[:port][;params][?headers]`)
    /// into an address-of-record ([`canonical_uri`]): the scheme becomes `sip` (`sips:` and
    /// `pres:` name the same resource), the host is lowercased, the user part is kept as is
    /// (case-sensitive), the password, the port, URI parameters and headers are dropped.
    /// Surrounding `<`/`>` and whitespace are ignored. (The SIP front end also maps a served
    /// domain's aliases first: `SipConfig::resource`.) The event package is lowercased; the
    /// optional `id` event parameter is appended verbatim.
    pub fn from_event(request_uri: &str, event_package: &str, event_id: Option<&str>) -> GroupId {
        let mut h = Sha1::new();
        h.update(canonical_uri(request_uri).as_bytes());
        h.update(b"\n");
        h.update(event_package.trim().to_ascii_lowercase().as_bytes());
        if let Some(id) = event_id {
            h.update(b";id=");
            h.update(id.trim().as_bytes());
        }
        let out = h.finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&out[..16]);
        GroupId(u128::from_be_bytes(b))
    }
}

/// Canonical form of a SIP Request-URI used for group ids (see [`GroupId::from_event`]): the
/// address-of-record `sip:user@host`.
pub fn canonical_uri(uri: &str) -> String {
    let (user, hostport) = split_uri(uri);
    let host = strip_port(&hostport);
    let mut out = String::with_capacity(hostport.len() + 24);
    out.push_str("sip:");
    if let Some(u) = user {
        out.push_str(u);
        out.push('@');
    }
    out.push_str(host);
    out
}

/// The lowercased `host[:port]` of a SIP URI.
pub fn uri_hostport(uri: &str) -> String {
    split_uri(uri).1
}

/// The user name (without password or user parameters) and the lowercased `host[:port]`.
fn split_uri(uri: &str) -> (Option<&str>, String) {
    let uri = uri
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    let rest = match uri.split_once(':') {
        Some((scheme, r)) if !scheme.contains('@') => r,
        _ => uri,
    };
    // Strip headers, then URI parameters (parameters never contain '?').
    let rest = rest.split('?').next().unwrap_or("");
    let (user, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u.split(':').next().unwrap_or("")), h),
        None => (None, rest),
    };
    let hostport = hostport
        .split(';')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    // A user part may itself carry ';' user parameters (tel-style); keep only the user name.
    (user.map(|u| u.split(';').next().unwrap_or("")), hostport)
}

/// `host` of `host[:port]` (IPv6 brackets kept).
fn strip_port(hostport: &str) -> &str {
    if let Some(end) = hostport.find(']') {
        return &hostport[..=end];
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => hostport,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_and_prefix() {
        let a = 0x1234_5678_9abc_def0_0000_0000_0000_0000u128;
        assert_eq!(digit(a, 0), 1);
        assert_eq!(digit(a, 3), 4);
        assert_eq!(digit(a, 15), 0);
        assert_eq!(digit(u128::MAX, 31), 15);
        let b = 0x1235_0000_0000_0000_0000_0000_0000_0000u128;
        assert_eq!(shared_prefix_len(a, b), 3);
        assert_eq!(shared_prefix_len(a, a), 32);
        assert_eq!(shared_prefix_len(0, 1u128 << 127), 0);
    }

    #[test]
    fn circular_distance_wraps() {
        assert_eq!(ring_distance(1, u128::MAX), 2);
        assert_eq!(ring_distance(u128::MAX, 1), 2);
        assert_eq!(ring_distance(10, 4), 6);
        assert_eq!(ring_distance(0, 1u128 << 127), 1u128 << 127);
        // tie broken towards the smaller id
        assert!(closer(10, 8, 12));
        assert!(!closer(10, 12, 8));
        assert_eq!(closest_of(10, [12, 8, 100]), Some(8));
        assert_eq!(closest_of(0, [u128::MAX, 3]), Some(u128::MAX));
    }

    #[test]
    fn paper_ids_keep_order_and_prefix() {
        let a = NodeId::from_paper_10bit(500);
        let b = NodeId::from_paper_10bit(511);
        assert!(a < b);
        assert_eq!(a.0 >> 118, 500);
        assert!(shared_prefix_len(a.0, b.0) >= 1);
    }

    #[test]
    fn uri_canonicalisation() {
        assert_eq!(
            canonical_uri("<SIP:Alice@Example.COM:5060;transport=udp?subject=x>"),
            "sip:Alice@example.com"
        );
        assert_eq!(canonical_uri("sip:bob:secret@HOST"), "sip:bob@host");
        assert_eq!(canonical_uri("sips:example.org;lr"), "sip:example.org");
        assert_eq!(
            canonical_uri("pres:hal@127.0.0.1:29101"),
            "sip:hal@127.0.0.1"
        );
        assert_eq!(
            canonical_uri("sip:hal@[2001:DB8::1]:5060"),
            "sip:hal@[2001:db8::1]"
        );
        assert_eq!(
            uri_hostport("sip:hal@127.0.0.1:29101;lr"),
            "127.0.0.1:29101"
        );
    }

    #[test]
    fn gid_rules() {
        let g = GroupId::from_event("sip:alice@example.com", "presence", None);
        assert_eq!(
            g,
            GroupId::from_event("SIP:alice@EXAMPLE.com;transport=tcp", "Presence", None)
        );
        assert_ne!(
            g,
            GroupId::from_event("sip:Alice@example.com", "presence", None)
        );
        // The port of the host names no other presentity.
        assert_eq!(
            g,
            GroupId::from_event("sips:alice@example.com:5061", "presence", None)
        );
        assert_ne!(
            g,
            GroupId::from_event("sip:alice@example.com", "dialog", None)
        );
        assert_ne!(
            g,
            GroupId::from_event("sip:alice@example.com", "presence", Some("1"))
        );
        // Known answer: first 16 bytes of SHA-1("sip:alice@example.com\npresence").
        let mut h = Sha1::new();
        h.update(b"sip:alice@example.com\npresence");
        let d = h.finalize();
        assert_eq!(g.0.to_be_bytes(), d[..16]);
    }
}
