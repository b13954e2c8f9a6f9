//! Authorisation: whose presence an authenticated user may publish and watch.
//!
//! Everything compares addresses-of-record through [`Aor::parse`], the one place that decides
//! when two URIs name the same user (served domains and aliases belong there):
//!
//! * the scheme (`sip:`, `sips:`, `pres:` or none), URI parameters, headers, a password and
//!   the port are dropped;
//! * the user part is compared exactly (case-sensitive, escapes not undone);
//! * the host is compared case-insensitively (lowercased).
//!
//! The authenticated identity of a request is `username@realm`, or the username itself when
//! it already is `user@host`. A publisher may publish only the presentity that identity
//! names; who may watch whom is a [`WatchPolicy`]. Anyone may watch themselves.

use super::users::LineError;
use std::fmt;

/// An address-of-record in canonical form. See the [module docs](self).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Aor {
    /// The user part (may be empty: `sip:example.test`).
    pub user: String,
    /// The host, lowercased, without port.
    pub host: String,
}

/// A host in canonical form: lowercased, port dropped, IPv6 brackets kept.
pub fn canonical_host(s: &str) -> Option<String> {
    let s = s.trim();
    let host = if s.starts_with('[') {
        &s[..=s.find(']')?]
    } else {
        s.split(':').next().unwrap_or("")
    };
    let ok = !host.is_empty() && !host.contains(|c: char| c.is_whitespace() || "<>\"@".contains(c));
    ok.then(|| host.to_ascii_lowercase())
}

impl Aor {
    /// The canonical address-of-record of `uri` (`sip:alice@Example.test:5060;transport=udp`,
    /// `alice@example.test`, …); `None` for other schemes or no host.
    pub fn parse(uri: &str) -> Option<Aor> {
        let s = uri.trim();
        let s = s
            .strip_prefix('<')
            .and_then(|s| s.strip_suffix('>'))
            .unwrap_or(s);
        let rest = match s.split_once(':') {
            Some((scheme, rest))
                if ["sip", "sips", "pres"]
                    .iter()
                    .any(|k| scheme.eq_ignore_ascii_case(k)) =>
            {
                rest
            }
            // `user@host:port` has its colon after the `@`.
            Some((scheme, _)) if !scheme.contains('@') => return None,
            _ => s,
        };
        let rest = rest.split([';', '?']).next().unwrap_or("");
        let (user, host) = match rest.rsplit_once('@') {
            Some((u, h)) => (u.split(':').next().unwrap_or(""), h),
            None => ("", rest),
        };
        Some(Aor {
            user: user.to_string(),
            host: canonical_host(host)?,
        })
    }

    /// The identity a user authenticated as: `username@realm`, or `username` when it is an
    /// address-of-record itself.
    pub fn of_user(username: &str, realm: &str) -> Option<Aor> {
        if username.contains('@') {
            return Aor::parse(username);
        }
        Some(Aor {
            user: username.to_string(),
            host: canonical_host(realm)?,
        })
    }
}

impl fmt::Display for Aor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.user, self.host)
    }
}

/// One side of an allow-list pair.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    /// `*`: anyone.
    Any,
    /// `*@host`: anyone of that domain.
    Domain(String),
    /// One address-of-record.
    Exact(Aor),
}

impl Pattern {
    fn parse(s: &str) -> Option<Pattern> {
        if s == "*" {
            return Some(Pattern::Any);
        }
        if let Some(host) = s.strip_prefix("*@") {
            return canonical_host(host).map(Pattern::Domain);
        }
        let aor = Aor::parse(s)?;
        (!aor.user.is_empty() && !aor.user.contains('*')).then_some(Pattern::Exact(aor))
    }

    fn matches(&self, a: &Aor) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Domain(h) => *h == a.host,
            Pattern::Exact(e) => e == a,
        }
    }
}

/// Who may watch whom: a file of `watcher presentity` pairs, one per line, `#` comment
/// lines. Either side may be `*` (anyone) or `*@host` (anyone of that domain):
///
/// ```text
/// # watcher          presentity
/// bob@example.test   alice@example.test
/// *@example.test     carol@example.test
/// dave@example.test  *
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList(Vec<(Pattern, Pattern)>);

impl AllowList {
    /// Parses the text of an allow-list file.
    pub fn parse(text: &str) -> Result<AllowList, LineError> {
        let mut pairs = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |message: String| LineError {
                line: i + 1,
                message,
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [w, p] = fields[..] else {
                return Err(err("expected two fields: watcher presentity".into()));
            };
            let pat = |s: &str| {
                Pattern::parse(s).ok_or_else(|| {
                    err(format!(
                        "{s:?} is not user@host, *@host or * (user part required, no other wildcards)"
                    ))
                })
            };
            pairs.push((pat(w)?, pat(p)?));
        }
        Ok(AllowList(pairs))
    }

    /// Whether some pair lets `watcher` watch `presentity`.
    pub fn allows(&self, watcher: &Aor, presentity: &Aor) -> bool {
        self.0
            .iter()
            .any(|(w, p)| w.matches(watcher) && p.matches(presentity))
    }
}

/// Who may subscribe to whose presence (anyone may subscribe to their own).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum WatchPolicy {
    /// Every authenticated user may watch everyone.
    #[default]
    All,
    /// Watchers only of their own domain's presentities.
    SameDomain,
    /// Only the pairs of an allow-list.
    AllowList(AllowList),
}

impl WatchPolicy {
    /// Whether `watcher` may watch `presentity`.
    pub fn allows(&self, watcher: &Aor, presentity: &Aor) -> bool {
        watcher == presentity
            || match self {
                WatchPolicy::All => true,
                WatchPolicy::SameDomain => watcher.host == presentity.host,
                WatchPolicy::AllowList(l) => l.allows(watcher, presentity),
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aor(s: &str) -> Aor {
        Aor::parse(s).unwrap_or_else(|| panic!("{s}"))
    }

    #[test]
    fn canonical_form() {
        let a = aor("sip:alice@example.test");
        for same in [
            "sip:alice@Example.TEST",
            "SIP:alice@example.test:5060;transport=udp",
            "sips:alice@example.test?subject=x",
            "<sip:alice:pw@example.test>",
            "pres:alice@example.test",
            "alice@example.test",
            "alice@example.test:5070",
        ] {
            assert_eq!(aor(same), a, "{same}");
        }
        assert_ne!(
            aor("sip:Alice@example.test"),
            a,
            "the user part is case-sensitive"
        );
        assert_ne!(aor("sip:alice@example.org"), a);
        assert_eq!(aor("sip:10.0.0.1:5060").user, "");
        assert_eq!(aor("sip:bob@[2001:DB8::1]:5060").host, "[2001:db8::1]");
        assert_eq!(Aor::parse("tel:+15551234"), None);
        assert_eq!(Aor::parse("sip:alice@"), None);
        assert_eq!(Aor::of_user("alice", "Example.test"), Some(a.clone()));
        assert_eq!(Aor::of_user("alice@example.test", "other"), Some(a.clone()));
        assert_eq!(a.to_string(), "alice@example.test");
    }

    #[test]
    fn watch_policies() {
        let (alice, bob) = (aor("alice@example.test"), aor("bob@example.test"));
        let eve = aor("eve@evil.test");
        assert!(WatchPolicy::All.allows(&eve, &alice));
        assert!(WatchPolicy::SameDomain.allows(&bob, &alice));
        assert!(!WatchPolicy::SameDomain.allows(&eve, &alice));
        let list = AllowList::parse(
            "# who  whom\nbob@example.test alice@example.test\n\
             *@evil.test   *@evil.test\n   carol@example.test *  \n",
        )
        .unwrap();
        let p = WatchPolicy::AllowList(list);
        assert!(p.allows(&bob, &alice));
        assert!(!p.allows(&alice, &bob), "pairs are directed");
        assert!(!p.allows(&eve, &alice));
        assert!(p.allows(&eve, &aor("mallory@evil.test")));
        assert!(p.allows(&aor("carol@example.test"), &eve));
        assert!(p.allows(&eve, &eve), "oneself, always");
        assert!(!WatchPolicy::AllowList(AllowList::default()).allows(&bob, &alice));
    }

    #[test]
    fn allow_list_errors_name_the_line() {
        for (text, line) in [
            ("bob@example.test", 1),
            ("# x\nbob@example.test alice@example.test extra", 2),
            ("a@b c@d\nb*@example.test alice@example.test", 2),
            ("a@b tel:+1234", 1),
            ("example.test alice@example.test", 1),
            ("*@ alice@example.test", 1),
        ] {
            let e = AllowList::parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
        }
    }
}
