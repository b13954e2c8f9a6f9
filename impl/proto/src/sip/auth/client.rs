//! The client side of digest authentication, for the sans-IO user agent ([`crate::ua`]):
//! remember the last challenge, answer it (again and again, with increasing nonce counts, as
//! real clients do until the server challenges anew).

use super::digest::{self, Params};
use crate::sip::message::Headers;
use std::collections::HashMap;

/// A user's credentials and the challenge they currently answer.
#[derive(Clone, Debug)]
pub struct ClientAuth {
    user: String,
    password: String,
    /// `Authorization` or `Proxy-Authorization`, and the challenge chosen.
    challenge: Option<(&'static str, Params)>,
    /// Nonce counts used, per nonce.
    counts: HashMap<String, u32>,
}

impl ClientAuth {
    /// Credentials `user` / `password`.
    pub fn new(user: &str, password: &str) -> ClientAuth {
        ClientAuth {
            user: user.to_string(),
            password: password.to_string(),
            challenge: None,
            counts: HashMap::new(),
        }
    }

    /// Takes the first answerable challenge of a 401 (`WWW-Authenticate`) or 407
    /// (`Proxy-Authenticate`) response. Returns whether there was one, and whether it says
    /// `stale=true`.
    pub fn on_challenge(&mut self, code: u16, headers: &Headers) -> Option<bool> {
        let (from, to) = match code {
            401 => ("WWW-Authenticate", "Authorization"),
            407 => ("Proxy-Authenticate", "Proxy-Authorization"),
            _ => return None,
        };
        let ch = headers.all(from).filter_map(Params::parse).find(|p| {
            digest::answer(p, &self.user, &self.password, "X", "sip:x", 1, "x").is_some()
        })?;
        let stale = ch
            .get("stale")
            .is_some_and(|s| s.eq_ignore_ascii_case("true"));
        self.challenge = Some((to, ch));
        Some(stale)
    }

    /// The credentials header for request `method uri` under the current challenge, with
    /// the next nonce count and client nonce `cnonce`; `None` before any challenge.
    pub fn header(
        &mut self,
        method: &str,
        uri: &str,
        cnonce: &str,
    ) -> Option<(&'static str, String)> {
        let (name, ch) = self.challenge.as_ref()?;
        let nonce = ch.get("nonce")?.to_string();
        let nc = self.counts.entry(nonce).or_insert(0);
        *nc += 1;
        let value = digest::answer(ch, &self.user, &self.password, method, uri, *nc, cnonce)?;
        Some((name, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_first_answerable_challenge_and_counts() {
        let mut c = ClientAuth::new("alice", "pw");
        assert!(
            c.header("PUBLISH", "sip:alice@r", "c").is_none(),
            "nothing to answer yet"
        );
        let mut h = Headers::default();
        h.push(
            "WWW-Authenticate",
            "Digest realm=\"r\", nonce=\"n0\", algorithm=SHA-512-256, qop=\"auth\"",
        );
        h.push(
            "WWW-Authenticate",
            "Digest realm=\"r\", nonce=\"n1\", algorithm=MD5, qop=\"auth\", stale=TRUE",
        );
        assert_eq!(c.on_challenge(401, &h), Some(true));
        assert_eq!(
            c.on_challenge(407, &h),
            None,
            "a 407 carries Proxy-Authenticate"
        );
        let (name, v) = c.header("PUBLISH", "sip:alice@r", "c").unwrap();
        assert_eq!(name, "Authorization");
        let p = Params::parse(&v).unwrap();
        assert_eq!(
            (p.get("nonce"), p.get("nc"), p.get("algorithm")),
            (Some("n1"), Some("00000001"), Some("MD5"))
        );
        let (_, v) = c.header("PUBLISH", "sip:alice@r", "c").unwrap();
        assert_eq!(Params::parse(&v).unwrap().get("nc"), Some("00000002"));
    }
}
