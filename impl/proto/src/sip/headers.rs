//! Parsers for the header values the event server acts on.
//!
//! rsip 0.4 leaves `Event` and `Expires` untyped and hands `SIP-ETag`, `SIP-If-Match` and
//! `Subscription-State` over as opaque strings; the typed headers it does have (`Via`, `CSeq`,
//! `From`/`To`) are parsed lazily and not robustly enough for hostile input. Every value the
//! front end interprets is therefore parsed here, by small total functions (they return `None`
//! or an error string, never panic), each tested below.
//!
//! Grammar references are RFC 3261 §25.1 (`Via`, `CSeq`, `name-addr`, `generic-param`),
//! RFC 6665 §8.4 (`Event`, `Subscription-State`) and RFC 3903 §11 (`SIP-ETag`, `SIP-If-Match`).

use crate::wire::ETag;
use std::fmt;

/// The long form of a header name given in its compact form (RFC 3261 §7.3.3, RFC 6665 §8.4
/// for `o`/`u`), or the name itself.
pub fn long_name(name: &str) -> &str {
    match name {
        "v" | "V" => "Via",
        "f" | "F" => "From",
        "t" | "T" => "To",
        "i" | "I" => "Call-ID",
        "m" | "M" => "Contact",
        "l" | "L" => "Content-Length",
        "c" | "C" => "Content-Type",
        "e" | "E" => "Content-Encoding",
        "k" | "K" => "Supported",
        "s" | "S" => "Subject",
        "o" | "O" => "Event",
        "u" | "U" => "Allow-Events",
        other => other,
    }
}

/// Splits `s` at `sep`, ignoring separators inside double quotes and angle brackets.
pub fn split_outside(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quoted, mut angle, mut escaped) = (false, false, false);
    let mut start = 0;
    for (i, ch) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match ch {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            c if c == sep && !quoted && !angle => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// The comma-separated values of one header field, trimmed and owned (multi-value `Via`).
pub fn split_outside_owned(s: &str) -> Vec<String> {
    split_outside(s, ',')
        .into_iter()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// `;name[=value]` parameters (names lowercased, values trimmed and unquoted).
pub fn params(s: &str) -> Vec<(String, Option<String>)> {
    split_outside(s, ';')
        .into_iter()
        .filter_map(|p| {
            let p = p.trim();
            if p.is_empty() {
                return None;
            }
            Some(match p.split_once('=') {
                Some((n, v)) => (
                    n.trim().to_ascii_lowercase(),
                    Some(v.trim().trim_matches('"').to_string()),
                ),
                None => (p.to_ascii_lowercase(), None),
            })
        })
        .collect()
}

fn param<'a>(ps: &'a [(String, Option<String>)], name: &str) -> Option<&'a str> {
    ps.iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.as_deref())
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

/// The topmost `Via` value (RFC 3261 §20.42).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Via {
    /// `UDP`, `TCP`, … (uppercased).
    pub transport: String,
    /// `host[:port]` as sent.
    pub sent_by: String,
    /// The `branch` parameter.
    pub branch: Option<String>,
}

impl Via {
    /// Parses the first value of a `Via` header field (`SIP/2.0/UDP host:port;branch=…`).
    pub fn parse(value: &str) -> Result<Via, &'static str> {
        let first = split_outside(value, ',')
            .into_iter()
            .next()
            .unwrap_or("")
            .trim();
        let mut parts = split_outside(first, ';').into_iter();
        let proto = parts.next().unwrap_or("").trim();
        let (proto, sent_by) = proto
            .split_once(|c: char| c.is_ascii_whitespace())
            .ok_or("bad Via")?;
        let mut p = proto.split('/').map(str::trim);
        let (name, version, transport) = (p.next(), p.next(), p.next());
        if !name.is_some_and(|n| n.eq_ignore_ascii_case("SIP"))
            || version != Some("2.0")
            || !transport.is_some_and(is_token)
            || p.next().is_some()
        {
            return Err("bad Via protocol");
        }
        let sent_by = sent_by.trim();
        if sent_by.is_empty() || sent_by.contains(char::is_whitespace) {
            return Err("bad Via sent-by");
        }
        let rest: Vec<&str> = parts.collect();
        let ps = params(&rest.join(";"));
        Ok(Via {
            transport: transport.unwrap_or("").to_ascii_uppercase(),
            sent_by: sent_by.to_string(),
            branch: param(&ps, "branch").map(str::to_string),
        })
    }

    /// Whether the branch carries the RFC 3261 magic cookie (so it identifies the transaction).
    pub fn rfc3261_branch(&self) -> Option<&str> {
        self.branch
            .as_deref()
            .filter(|b| b.starts_with("z9hG4bK") && b.len() > 7)
    }
}

/// A `From`/`To`/`Contact` value: `[display] <uri>;params` or `uri;params` (RFC 3261 §20.10).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NameAddr {
    /// The URI, without angle brackets.
    pub uri: String,
    /// The `tag` parameter.
    pub tag: Option<String>,
}

impl NameAddr {
    /// Parses a `name-addr` or `addr-spec` with header parameters.
    pub fn parse(value: &str) -> Result<NameAddr, &'static str> {
        let v = value.trim();
        let (uri, rest) = match open_angle(v) {
            Some(open) => {
                let close = v[open..].find('>').ok_or("unterminated <URI>")? + open;
                (&v[open + 1..close], &v[close + 1..])
            }
            _ => {
                // addr-spec: parameters after the URI belong to the header.
                match v.find(';') {
                    Some(i) => (&v[..i], &v[i..]),
                    None => (v, ""),
                }
            }
        };
        let uri = uri.trim();
        if uri.is_empty() || !uri.contains(':') || uri.contains(char::is_whitespace) {
            return Err("bad URI");
        }
        let ps = params(rest);
        Ok(NameAddr {
            uri: uri.to_string(),
            tag: param(&ps, "tag").map(str::to_string),
        })
    }
}

/// Byte index of the first `<` outside a quoted display name.
fn open_angle(v: &str) -> Option<usize> {
    let (mut quoted, mut escaped) = (false, false);
    for (i, ch) in v.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match ch {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// A `CSeq` value (RFC 3261 §20.16).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CSeq {
    /// Sequence number (< 2^31).
    pub seq: u32,
    /// Method name.
    pub method: String,
}

impl CSeq {
    /// Parses `number METHOD`.
    pub fn parse(value: &str) -> Result<CSeq, &'static str> {
        let mut it = value.split_ascii_whitespace();
        let (n, m) = (it.next(), it.next());
        if it.next().is_some() {
            return Err("bad CSeq");
        }
        let n = n.ok_or("bad CSeq")?;
        if n.is_empty() || n.len() > 10 || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err("bad CSeq number");
        }
        let seq: u64 = n.parse().map_err(|_| "bad CSeq number")?;
        if seq >= 1 << 31 {
            return Err("bad CSeq number");
        }
        let m = m.filter(|m| is_token(m)).ok_or("bad CSeq method")?;
        Ok(CSeq {
            seq: seq as u32,
            method: m.to_string(),
        })
    }
}

/// An `Event` value: package and optional `id` parameter (RFC 6665 §8.2.1).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct EventHeader {
    /// Event package, lowercased (`presence`).
    pub package: String,
    /// The `id` parameter.
    pub id: Option<String>,
}

impl EventHeader {
    /// Parses `package[.template];params`.
    pub fn parse(value: &str) -> Result<EventHeader, &'static str> {
        let mut parts = split_outside(value, ';').into_iter();
        let package = parts.next().unwrap_or("").trim();
        if !is_token(package) {
            return Err("bad Event");
        }
        let rest: Vec<&str> = parts.collect();
        let ps = params(&rest.join(";"));
        Ok(EventHeader {
            package: package.to_ascii_lowercase(),
            id: param(&ps, "id").map(str::to_string),
        })
    }
}

impl fmt::Display for EventHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.package)?;
        if let Some(id) = &self.id {
            write!(f, ";id={id}")?;
        }
        Ok(())
    }
}

/// A delta-seconds value (`Expires`, `Min-Expires`); values above `u32::MAX` saturate.
pub fn delta_seconds(value: &str) -> Option<u32> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        v.parse::<u64>()
            .map_or(u32::MAX, |n| n.min(u32::MAX as u64) as u32),
    )
}

/// A `SIP-If-Match` / `SIP-ETag` value as issued by this service (16 hex digits). Other
/// tokens are valid syntax but can never match an entity tag we issued.
pub fn entity_tag(value: &str) -> EntityTag {
    let v = value.trim();
    if !is_token(v) {
        return EntityTag::Invalid;
    }
    match (v.len(), v.parse::<ETag>()) {
        (16, Ok(e)) => EntityTag::Ours(e),
        _ => EntityTag::Foreign,
    }
}

/// Result of [`entity_tag`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EntityTag {
    /// A tag in this service's format.
    Ours(ETag),
    /// Well-formed, but not one this service could have issued (answered with 412).
    Foreign,
    /// Not a token (400).
    Invalid,
}

/// `Subscription-State` (RFC 6665 §8.2.3), as sent in NOTIFYs and read back in tests.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum SubscriptionState {
    /// `active;expires=N`.
    Active {
        /// Remaining seconds.
        expires: u32,
    },
    /// `pending;expires=N`.
    Pending {
        /// Remaining seconds.
        expires: u32,
    },
    /// `terminated;reason=R`.
    Terminated {
        /// Reason (`timeout`, `noresource`, `deactivated`, …).
        reason: Option<String>,
    },
}

impl SubscriptionState {
    /// Parses a `Subscription-State` value.
    pub fn parse(value: &str) -> Result<SubscriptionState, &'static str> {
        let mut parts = split_outside(value, ';').into_iter();
        let state = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let rest: Vec<&str> = parts.collect();
        let ps = params(&rest.join(";"));
        let expires = param(&ps, "expires").and_then(delta_seconds);
        match state.as_str() {
            "active" => Ok(SubscriptionState::Active {
                expires: expires.ok_or("missing expires")?,
            }),
            "pending" => Ok(SubscriptionState::Pending {
                expires: expires.ok_or("missing expires")?,
            }),
            "terminated" => Ok(SubscriptionState::Terminated {
                reason: param(&ps, "reason").map(str::to_string),
            }),
            _ => Err("bad Subscription-State"),
        }
    }
}

impl fmt::Display for SubscriptionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubscriptionState::Active { expires } => write!(f, "active;expires={expires}"),
            SubscriptionState::Pending { expires } => write!(f, "pending;expires={expires}"),
            SubscriptionState::Terminated { reason: Some(r) } => {
                write!(f, "terminated;reason={r}")
            }
            SubscriptionState::Terminated { reason: None } => f.write_str("terminated"),
        }
    }
}

/// Whether a media type (`type/subtype;params`) equals `want`, ignoring case and parameters.
pub fn media_type_is(value: &str, want: &str) -> bool {
    value
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(want))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via() {
        let v =
            Via::parse("SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bK776, SIP/2.0/TCP x").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.sent_by, "10.0.0.1:5060");
        assert_eq!(v.rfc3261_branch(), Some("z9hG4bK776"));
        assert!(Via::parse("SIP / 2.0 / udp host;branch=abc").is_err());
        assert!(Via::parse("SIP/2.0/UDP host;branch=1234")
            .unwrap()
            .rfc3261_branch()
            .is_none());
        assert!(Via::parse("SIP/3.0/UDP host").is_err());
        assert!(Via::parse("").is_err());
        assert!(Via::parse("garbage").is_err());
    }

    #[test]
    fn name_addr() {
        let n = NameAddr::parse("\"Bob <b>\" <sip:bob@x.test;transport=udp>;tag=a;x=y").unwrap();
        assert_eq!(n.uri, "sip:bob@x.test;transport=udp");
        assert_eq!(n.tag.as_deref(), Some("a"));
        let n = NameAddr::parse("sip:alice@example.test;tag=77").unwrap();
        assert_eq!(n.uri, "sip:alice@example.test");
        assert_eq!(n.tag.as_deref(), Some("77"));
        assert!(NameAddr::parse("<sip:x").is_err());
        assert!(NameAddr::parse("nobody").is_err());
        assert!(NameAddr::parse("").is_err());
    }

    #[test]
    fn cseq() {
        assert_eq!(
            CSeq::parse("  12 SUBSCRIBE ").unwrap(),
            CSeq {
                seq: 12,
                method: "SUBSCRIBE".into()
            }
        );
        assert!(CSeq::parse("x PUBLISH").is_err());
        assert!(CSeq::parse("1").is_err());
        assert!(CSeq::parse("-1 PUBLISH").is_err());
        assert!(CSeq::parse("2147483648 PUBLISH").is_err());
        assert!(CSeq::parse("99999999999999999999 PUBLISH").is_err());
        assert!(CSeq::parse("1 PUBLISH extra").is_err());
    }

    #[test]
    fn event_expires_etag() {
        let e = EventHeader::parse("Presence ; id=\"7\"").unwrap();
        assert_eq!(e.package, "presence");
        assert_eq!(e.id.as_deref(), Some("7"));
        assert_eq!(e.to_string(), "presence;id=7");
        assert!(EventHeader::parse("").is_err());
        assert!(EventHeader::parse("a b").is_err());
        assert_eq!(delta_seconds(" 3600 "), Some(3600));
        assert_eq!(delta_seconds("99999999999"), Some(u32::MAX));
        assert_eq!(delta_seconds("-1"), None);
        assert_eq!(delta_seconds(""), None);
        assert_eq!(
            entity_tag("00000000deadbeef"),
            EntityTag::Ours(ETag(0xdead_beef))
        );
        assert_eq!(entity_tag("dx1f"), EntityTag::Foreign);
        assert_eq!(entity_tag("a b"), EntityTag::Invalid);
    }

    #[test]
    fn subscription_state_round_trip() {
        for s in [
            SubscriptionState::Active { expires: 5 },
            SubscriptionState::Pending { expires: 0 },
            SubscriptionState::Terminated {
                reason: Some("timeout".into()),
            },
            SubscriptionState::Terminated { reason: None },
        ] {
            assert_eq!(SubscriptionState::parse(&s.to_string()).unwrap(), s);
        }
        assert_eq!(
            SubscriptionState::parse("Active ; expires=30;x").unwrap(),
            SubscriptionState::Active { expires: 30 }
        );
        assert!(SubscriptionState::parse("active").is_err());
        assert!(SubscriptionState::parse("weird").is_err());
    }

    #[test]
    fn split_and_compact() {
        assert_eq!(split_outside("a;\"b;c\";<d;e>;f", ';').len(), 4);
        assert_eq!(long_name("o"), "Event");
        assert_eq!(long_name("v"), "Via");
        assert_eq!(long_name("X-Foo"), "X-Foo");
        assert!(media_type_is(
            "Application/PIDF+XML; charset=utf-8",
            "application/pidf+xml"
        ));
    }
}
