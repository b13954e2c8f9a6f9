//! The credentials file: who may authenticate, and with what.
//!
//! One user per line, `#` starts a comment line, blank lines are ignored, and each line is
//! trimmed of surrounding white space:
//!
//! ```text
//! # user : realm : password       (any algorithm; the password may contain ':')
//! alice:example.test:wonderland
//! # user : realm : ALGORITHM : HA1 (pre-hashed: H(user:realm:password) in hex, as
//! #                                  `printf 'bob:example.test:secret' | sha256sum` prints)
//! bob:example.test:SHA-256:5c1b…(64 hex digits)
//! bob:example.test:MD5:0f3a…(32 hex digits)
//! ```
//!
//! A user given only pre-hashed HA1s authenticates only with those algorithms. A password
//! that itself reads `MD5:<32 hex digits>` or `SHA-256:<64 hex digits>` must be given
//! pre-hashed. The realm of every line must be the configured realm (the HA1 depends on it).
//! Passwords are hashed when the file is read and are not kept.

use super::digest::{ha1, Algorithm};
use std::collections::HashMap;

/// A problem on one line of a configuration file (1-based).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct LineError {
    /// Line number, from 1.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// The HA1s of one user, per algorithm.
#[derive(Clone, Default, PartialEq, Eq)]
struct Ha1s {
    md5: Option<String>,
    sha256: Option<String>,
}

impl Ha1s {
    fn slot(&mut self, alg: Algorithm) -> &mut Option<String> {
        match alg {
            Algorithm::Md5 => &mut self.md5,
            Algorithm::Sha256 => &mut self.sha256,
        }
    }
}

/// The users of one realm and their HA1s. `Debug` shows names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Users {
    realm: String,
    users: HashMap<String, Ha1s>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.users.keys().collect();
        names.sort();
        f.debug_struct("Users")
            .field("realm", &self.realm)
            .field("users", &names)
            .finish()
    }
}

const ALGORITHMS: [Algorithm; 2] = [Algorithm::Sha256, Algorithm::Md5];

fn valid_user(u: &str) -> bool {
    !u.is_empty()
        && !u
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"')
}

impl Users {
    /// No users (every request is refused) in `realm`.
    pub fn new(realm: &str) -> Users {
        Users {
            realm: realm.to_string(),
            users: HashMap::new(),
        }
    }

    /// Adds (or replaces) `user` with a password: usable with every algorithm.
    pub fn with_password(mut self, user: &str, password: &str) -> Users {
        let h = self.users.entry(user.to_string()).or_default();
        for alg in ALGORITHMS {
            *h.slot(alg) = Some(ha1(alg, user, &self.realm, password));
        }
        self
    }

    /// Parses the text of a credentials file (see the [module docs](self)) for `realm`.
    pub fn parse(text: &str, realm: &str) -> Result<Users, LineError> {
        let mut users = Users::new(realm);
        for (i, raw) in text.lines().enumerate() {
            let err = |message: String| LineError {
                line: i + 1,
                message,
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.splitn(3, ':');
            let (user, line_realm, secret) = match (parts.next(), parts.next(), parts.next()) {
                (Some(u), Some(r), Some(s)) => (u.trim(), r.trim(), s),
                _ => {
                    return Err(err(
                        "expected user:realm:password or user:realm:ALGORITHM:HA1".into(),
                    ))
                }
            };
            if !valid_user(user) {
                return Err(err(format!("bad user name {user:?}")));
            }
            if line_realm != realm {
                return Err(err(format!(
                    "realm {line_realm:?} is not the configured realm {realm:?}"
                )));
            }
            if secret.is_empty() {
                return Err(err(format!("empty password for {user}")));
            }
            let pre_hashed = secret.split_once(':').and_then(|(a, h)| {
                let alg = Algorithm::parse(a)?;
                let hex = h.len() == alg.hex_len() && h.bytes().all(|b| b.is_ascii_hexdigit());
                hex.then(|| (alg, h.to_ascii_lowercase()))
            });
            let h = users.users.entry(user.to_string()).or_default();
            match pre_hashed {
                Some((alg, hex)) => {
                    let slot = h.slot(alg);
                    if slot.is_some() {
                        return Err(err(format!("{user} has a second {} HA1", alg.name())));
                    }
                    *slot = Some(hex);
                }
                None => {
                    if h.md5.is_some() || h.sha256.is_some() {
                        return Err(err(format!("{user} is given twice")));
                    }
                    for alg in ALGORITHMS {
                        *h.slot(alg) = Some(ha1(alg, user, realm, secret));
                    }
                }
            }
        }
        Ok(users)
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The HA1 of `user` for `alg`, if the user exists and has one.
    pub fn ha1(&self, user: &str, alg: Algorithm) -> Option<&str> {
        let h = self.users.get(user)?;
        match alg {
            Algorithm::Md5 => h.md5.as_deref(),
            Algorithm::Sha256 => h.sha256.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_pre_hashed_lines() {
        let sha = ha1(Algorithm::Sha256, "bob", "example.test", "s3cret");
        let text = format!(
            "# users\n\n  alice:example.test:a:b:c  \r\nbob:example.test:sha-256:{}\n",
            sha.to_uppercase()
        );
        let u = Users::parse(&text, "example.test").unwrap();
        assert_eq!(u.len(), 2);
        assert_eq!(
            u.ha1("alice", Algorithm::Md5),
            Some(ha1(Algorithm::Md5, "alice", "example.test", "a:b:c").as_str()),
            "the password is everything after the second colon"
        );
        assert_eq!(u.ha1("bob", Algorithm::Sha256), Some(sha.as_str()));
        assert_eq!(u.ha1("bob", Algorithm::Md5), None, "only what was given");
        assert_eq!(u.ha1("carol", Algorithm::Md5), None);
        assert_eq!(
            format!("{u:?}"),
            "Users { realm: \"example.test\", users: [\"alice\", \"bob\"] }",
            "no secrets in Debug"
        );
        // A third field that is not a well-formed HA1 is a password.
        let u = Users::parse("carol:r:MD5:nothex", "r").unwrap();
        assert_eq!(
            u.ha1("carol", Algorithm::Md5),
            Some(ha1(Algorithm::Md5, "carol", "r", "MD5:nothex").as_str())
        );
    }

    #[test]
    fn errors_name_the_line() {
        let md5 = "0123456789abcdef0123456789abcdef";
        for (text, line, what) in [
            ("alice:example.test", 1, "expected user:realm:password"),
            ("# c\nalice", 2, "expected"),
            (
                "a:example.test:x\n\nb:other.test:x",
                3,
                "not the configured realm",
            ),
            ("a b:example.test:x", 1, "bad user name"),
            (":example.test:x", 1, "bad user name"),
            ("a:example.test:", 1, "empty password"),
            ("a:example.test:x\na:example.test:y", 2, "given twice"),
            (
                &format!("a:example.test:MD5:{md5}\na:example.test:md5:{md5}"),
                2,
                "second MD5 HA1",
            ),
            (
                &format!("a:example.test:MD5:{md5}\na:example.test:pw"),
                2,
                "given twice",
            ),
        ] {
            let e = Users::parse(text, "example.test").unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.message.contains(what), "{text:?}: {e}");
        }
    }
}
