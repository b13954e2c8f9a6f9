//! HTTP Digest as SIP uses it (RFC 3261 §22.4, RFC 7616, RFC 8760), both sides: the hashes,
//! the `Digest` challenge and credentials syntax, and a client's answer to a challenge.
//!
//! Only `qop=auth` is computed (RFC 7616 §3.4.1):
//!
//! ```text
//! HA1      = H(username ":" realm ":" password)
//! HA2      = H(method ":" digest-uri)
//! response = H(HA1 ":" nonce ":" nc ":" cnonce ":" "auth" ":" HA2)
//! ```
//!
//! with `H` the lowercase hex of MD5 or SHA-256. The `-sess` variants, `auth-int`, `userhash`
//! and `username*` are not offered, and credentials using them do not verify.

use crate::sip::headers::split_outside;
use md5::Md5;
use sha2::{Digest as _, Sha256};
use std::fmt::Write as _;

/// A digest algorithm (RFC 7616 §3.2, RFC 8760 §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `MD5`, what RFC 3261 clients know.
    Md5,
    /// `SHA-256` (RFC 8760), preferred.
    Sha256,
}

impl Algorithm {
    /// The algorithm's token in `algorithm=`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// The algorithm named `s` (case-insensitive), if it is one of ours.
    pub fn parse(s: &str) -> Option<Algorithm> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("MD5") {
            Some(Algorithm::Md5)
        } else if s.eq_ignore_ascii_case("SHA-256") {
            Some(Algorithm::Sha256)
        } else {
            None
        }
    }

    /// Length of a hash in hex digits.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Md5 => 32,
            Algorithm::Sha256 => 64,
        }
    }

    /// `H(parts[0] ":" parts[1] ":" …)`, in lowercase hex.
    pub fn hash(self, parts: &[&str]) -> String {
        fn run<D: sha2::Digest>(mut d: D, parts: &[&str]) -> String {
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    d.update(b":");
                }
                d.update(p.as_bytes());
            }
            to_hex(&d.finalize())
        }
        match self {
            Algorithm::Md5 => run(Md5::new(), parts),
            Algorithm::Sha256 => run(Sha256::new(), parts),
        }
    }
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The bytes of an even-length hex string (either case).
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// `HA1 = H(username:realm:password)`.
pub fn ha1(alg: Algorithm, user: &str, realm: &str, password: &str) -> String {
    alg.hash(&[user, realm, password])
}

/// What a `qop=auth` response digest covers besides HA1.
#[derive(Clone, Copy, Debug)]
pub struct Covered<'a> {
    /// The request method.
    pub method: &'a str,
    /// The `uri` directive.
    pub uri: &'a str,
    /// The server's nonce.
    pub nonce: &'a str,
    /// The nonce count, as sent (8 hex digits).
    pub nc: &'a str,
    /// The client's nonce.
    pub cnonce: &'a str,
}

/// The `response` of `qop=auth` credentials (RFC 7616 §3.4.1).
pub fn response(alg: Algorithm, ha1: &str, c: Covered<'_>) -> String {
    let ha2 = alg.hash(&[c.method, c.uri]);
    alg.hash(&[ha1, c.nonce, c.nc, c.cnonce, "auth", &ha2])
}

/// The auth-params of one `Digest` challenge or credentials header value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Parses `Digest name=value, name="quoted value", …`; `None` if the scheme is not
    /// `Digest` or a parameter is malformed. Names are lowercased; values unquoted.
    pub fn parse(value: &str) -> Option<Params> {
        let v = value.trim_start();
        let (scheme, rest) = v.split_once(|c: char| c.is_ascii_whitespace())?;
        if !scheme.eq_ignore_ascii_case("Digest") {
            return None;
        }
        let mut out = Vec::new();
        for p in split_outside(rest, ',') {
            let p = p.trim();
            if p.is_empty() {
                continue;
            }
            let (n, v) = p.split_once('=')?;
            let n = n.trim().to_ascii_lowercase();
            if n.is_empty() || n.contains(|c: char| c.is_ascii_whitespace() || c == '"') {
                return None;
            }
            out.push((n, unquote(v.trim())?));
        }
        Some(Params(out))
    }

    /// The value of parameter `name` (lowercase), the first if repeated.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// How many times parameter `name` occurs.
    pub fn count(&self, name: &str) -> usize {
        self.0.iter().filter(|(n, _)| n == name).count()
    }
}

/// A quoted-string's content (backslash escapes undone), or a token as it is.
fn unquote(v: &str) -> Option<String> {
    let Some(inner) = v.strip_prefix('"') else {
        return (!v.is_empty() && !v.contains(['"', ' ', '\t'])).then(|| v.to_string());
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return chars.as_str().trim().is_empty().then_some(out),
            c => out.push(c),
        }
    }
    None // unterminated
}

/// `s` as a quoted-string.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A challenge's header value: `Digest realm="…", nonce="…", qop="auth", algorithm=…`, with
/// `stale=true` when the client's nonce had only expired.
pub fn challenge(alg: Algorithm, realm: &str, nonce: &str, stale: bool) -> String {
    let mut s = format!(
        "Digest realm={}, nonce={}, qop=\"auth\", algorithm={}",
        quote(realm),
        quote(nonce),
        alg.name()
    );
    if stale {
        s.push_str(", stale=true");
    }
    s
}

/// A client's answer to challenge `ch`: the `Authorization` (or `Proxy-Authorization`)
/// value for request `method uri` with nonce count `nc` and client nonce `cnonce`. `None`
/// if the challenge is not one this module can answer (an unknown algorithm, no `qop=auth`,
/// no realm or nonce).
pub fn answer(
    ch: &Params,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
    cnonce: &str,
) -> Option<String> {
    let alg = Algorithm::parse(ch.get("algorithm").unwrap_or("MD5"))?;
    let qop_auth = ch
        .get("qop")
        .is_some_and(|q| q.split(',').any(|q| q.trim().eq_ignore_ascii_case("auth")));
    if !qop_auth {
        return None;
    }
    let (realm, nonce) = (ch.get("realm")?, ch.get("nonce")?);
    let nc = format!("{nc:08x}");
    let ha1 = ha1(alg, user, realm, password);
    let covered = Covered {
        method,
        uri,
        nonce,
        nc: &nc,
        cnonce,
    };
    let resp = response(alg, &ha1, covered);
    let mut s = format!(
        "Digest username={}, realm={}, nonce={}, uri={}, response=\"{resp}\", algorithm={}, \
         cnonce={}, qop=auth, nc={nc}",
        quote(user),
        quote(realm),
        quote(nonce),
        quote(uri),
        alg.name(),
        quote(cnonce),
    );
    if let Some(o) = ch.get("opaque") {
        s.push_str(&format!(", opaque={}", quote(o)));
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7616 §3.9.1: the published MD5 and SHA-256 examples (user "Mufasa", password
    /// "Circle of Life", GET /dir/index.html).
    #[test]
    fn rfc7616_examples() {
        let realm = "http-auth@example.org";
        let covered = Covered {
            method: "GET",
            uri: "/dir/index.html",
            nonce: "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            nc: "00000001",
            cnonce: "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        };
        let md5 = ha1(Algorithm::Md5, "Mufasa", realm, "Circle of Life");
        assert_eq!(
            response(Algorithm::Md5, &md5, covered),
            "8ca523f5e9506fed4657c9700eebdbec"
        );
        let sha = ha1(Algorithm::Sha256, "Mufasa", realm, "Circle of Life");
        assert_eq!(
            response(Algorithm::Sha256, &sha, covered),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    /// The RFC's SHA-256 example, through the client side and the parser.
    #[test]
    fn answer_round_trips_through_the_parser() {
        let ch = Params::parse(
            "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", \
             algorithm=SHA-256, nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", \
             opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"",
        )
        .unwrap();
        let a = answer(
            &ch,
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            1,
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        )
        .unwrap();
        let p = Params::parse(&a).unwrap();
        assert_eq!(
            p.get("response"),
            Some("753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1")
        );
        assert_eq!(p.get("nc"), Some("00000001"));
        assert_eq!(p.get("qop"), Some("auth"));
        assert_eq!(
            p.get("opaque"),
            Some("FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS")
        );
        // No qop=auth offered, or an unknown algorithm: nothing this side can answer.
        let legacy = Params::parse("Digest realm=\"r\", nonce=\"n\"").unwrap();
        assert!(answer(&legacy, "u", "p", "PUBLISH", "sip:u@r", 1, "c").is_none());
        let sess = Params::parse("Digest realm=r, nonce=n, qop=auth, algorithm=MD5-sess").unwrap();
        assert!(answer(&sess, "u", "p", "PUBLISH", "sip:u@r", 1, "c").is_none());
    }

    #[test]
    fn params_syntax() {
        let p = Params::parse(
            "digest  Username=\"a\\\"b\",realm=\"x, y\" , nc=00000002,uri=\"sip:a@b;x=1\"",
        )
        .unwrap();
        assert_eq!(p.get("username"), Some("a\"b"));
        assert_eq!(p.get("realm"), Some("x, y"));
        assert_eq!(p.get("nc"), Some("00000002"));
        assert_eq!(p.get("uri"), Some("sip:a@b;x=1"));
        assert_eq!(
            quote("a\"b\\"),
            "\"a\\\"b\\\\\"",
            "quoting escapes both specials"
        );
        for bad in [
            "Basic YWxhZGRpbjpvcGVuc2VzYW1l",
            "Digest realm=\"unterminated",
            "Digest realm",
            "Digest realm=\"a\"b",
            "Digest =x",
            "Digest",
        ] {
            assert!(Params::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(from_hex("00fF"), Some(vec![0, 255]));
        assert_eq!(from_hex("0"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(to_hex(&[0, 255]), "00ff");
        let c = challenge(Algorithm::Sha256, "example.test", "n1", true);
        let p = Params::parse(&c).unwrap();
        assert_eq!(
            (p.get("algorithm"), p.get("stale"), p.get("qop")),
            (Some("SHA-256"), Some("true"), Some("auth"))
        );
    }
}
