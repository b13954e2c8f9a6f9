//! The `[auth]` table of the configuration file: SIP digest authentication and the watch
//! policy of the front end ([`sascribe_proto::sip::auth`]). Without it, anyone who reaches a
//! SIP port may publish and watch any presence.
//!
//! ```toml
//! [auth]
//! realm = "example.test"            # the digest realm: the users file's lines are of it
//! users_file = "users.txt"          # user:realm:password or user:realm:ALGORITHM:HA1 lines
//! algorithms = ["SHA-256", "MD5"]   # offered, most preferred first (the default)
//! challenge = "server"              # "server": 401 WWW-Authenticate; "proxy": 407
//! nonce_lifetime = 300              # seconds a nonce may be used
//! max_nonces = 65536                # nonces remembered against replay (oldest dropped first)
//! watch = "allow-list"              # "all" (default) | "same-domain" | "allow-list"
//! allow_list_file = "watch.txt"     # `watcher presentity` lines, for watch = "allow-list"
//! ```
//!
//! File names are relative to the directory of the configuration file. Errors in the files
//! name the file and the line.

use super::config_file::ConfigError;
use sascribe_proto::sip::auth::{
    Algorithm, AllowList, AuthConfig, Challenge, LineError, Users, WatchPolicy,
};
use serde::Deserialize;
use std::path::Path;

/// The `[auth]` table as read from TOML.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct AuthSection {
    pub realm: String,
    pub users_file: String,
    pub algorithms: Option<Vec<String>>,
    pub challenge: Option<String>,
    /// Seconds.
    pub nonce_lifetime: Option<u64>,
    pub max_nonces: Option<usize>,
    pub watch: Option<String>,
    pub allow_list_file: Option<String>,
}

fn invalid(m: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(m.into())
}

/// Reads `name` (relative to `base`) and parses it with `parse`, naming file and line on
/// error.
fn read<T>(
    base: &Path,
    name: &str,
    parse: impl FnOnce(&str) -> Result<T, LineError>,
) -> Result<T, ConfigError> {
    let path = base.join(name);
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    parse(&text).map_err(|e| ConfigError::File {
        path: shown,
        line: e.line,
        message: e.message,
    })
}

impl AuthSection {
    /// The front end's authentication settings, reading the files it names relative to
    /// `base`.
    pub fn load(&self, base: &Path) -> Result<AuthConfig, ConfigError> {
        let realm = self.realm.trim();
        if realm.is_empty() || realm.contains(['"', '\\']) || realm.contains(char::is_control) {
            return Err(invalid(
                "auth.realm must be non-empty, without quotes or backslashes",
            ));
        }
        let users = read(base, &self.users_file, |t| Users::parse(t, realm))?;
        if users.is_empty() {
            return Err(invalid(format!(
                "auth.users_file {} has no users: nobody could publish or watch",
                base.join(&self.users_file).display()
            )));
        }
        let mut cfg = AuthConfig::new(users);
        if let Some(list) = &self.algorithms {
            let mut algs = Vec::new();
            for a in list {
                let alg = Algorithm::parse(a).ok_or_else(|| {
                    invalid(format!(
                        "auth.algorithms: {a:?} is neither \"SHA-256\" nor \"MD5\""
                    ))
                })?;
                if algs.contains(&alg) {
                    return Err(invalid(format!("auth.algorithms names {a:?} twice")));
                }
                algs.push(alg);
            }
            if algs.is_empty() {
                return Err(invalid("auth.algorithms must name at least one algorithm"));
            }
            cfg.algorithms = algs;
        }
        cfg.challenge = match self.challenge.as_deref() {
            None | Some("server") => Challenge::Server,
            Some("proxy") => Challenge::Proxy,
            Some(o) => {
                return Err(invalid(format!(
                    "auth.challenge {o:?} is neither \"server\" (401) nor \"proxy\" (407)"
                )))
            }
        };
        if let Some(s) = self.nonce_lifetime {
            if s == 0 {
                return Err(invalid("auth.nonce_lifetime must be positive"));
            }
            cfg.nonce_lifetime = s.saturating_mul(1000);
        }
        if let Some(n) = self.max_nonces {
            if n == 0 {
                return Err(invalid("auth.max_nonces must be positive"));
            }
            cfg.max_nonces = n;
        }
        cfg.watch = match self.watch.as_deref().unwrap_or("all") {
            "all" => WatchPolicy::All,
            "same-domain" => WatchPolicy::SameDomain,
            "allow-list" => {
                let f = self.allow_list_file.as_ref().ok_or_else(|| {
                    invalid("auth.watch = \"allow-list\" needs auth.allow_list_file")
                })?;
                WatchPolicy::AllowList(read(base, f, AllowList::parse)?)
            }
            o => {
                return Err(invalid(format!(
                    "auth.watch {o:?} is not \"all\", \"same-domain\" or \"allow-list\""
                )))
            }
        };
        if self.allow_list_file.is_some() && !matches!(cfg.watch, WatchPolicy::AllowList(_)) {
            return Err(invalid(
                "auth.allow_list_file is only read with watch = \"allow-list\"",
            ));
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::ConfigFile;
    use std::path::PathBuf;

    /// A fresh directory with `files` in it.
    fn dir(name: &str, files: &[(&str, &str)]) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sascribe-auth-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        for (f, text) in files {
            std::fs::write(d.join(f), text).unwrap();
        }
        d
    }

    fn load(d: &Path, toml: &str) -> Result<Option<AuthConfig>, ConfigError> {
        ConfigFile::parse(toml)?.auth(d)
    }

    /// The example in the module docs, with its two files.
    #[test]
    fn documented_example_loads() {
        let doc = include_str!("config_auth.rs");
        let start = doc.find("//! ```toml\n").unwrap() + "//! ```toml\n".len();
        let end = start + doc[start..].find("//! ```\n").unwrap();
        let text: String = doc[start..end]
            .lines()
            .map(|l| l.trim_start_matches("//!").trim_start())
            .collect::<Vec<_>>()
            .join("\n");
        let d = dir(
            "doc",
            &[
                (
                    "users.txt",
                    "# who\nalice:example.test:pw\nbob:example.test:pw2\n",
                ),
                ("watch.txt", "bob@example.test alice@example.test\n"),
            ],
        );
        let a = load(&d, &text).unwrap().unwrap();
        assert_eq!(a.realm, "example.test");
        assert_eq!(a.users.len(), 2);
        assert_eq!(a.algorithms, [Algorithm::Sha256, Algorithm::Md5]);
        assert_eq!(a.challenge, Challenge::Server);
        assert_eq!(a.nonce_lifetime, 300_000);
        let (alice, bob) = (
            sascribe_proto::sip::auth::Aor::parse("alice@example.test").unwrap(),
            sascribe_proto::sip::auth::Aor::parse("bob@example.test").unwrap(),
        );
        assert!(a.watch.allows(&bob, &alice) && !a.watch.allows(&alice, &bob));
        assert!(load(&d, "").unwrap().is_none(), "no [auth]: off");
        let _ = std::fs::remove_dir_all(&d);
    }

    /// The configuration CI's SIPp authentication scenarios run against, and its pre-hashed
    /// user (the README's example).
    #[test]
    fn the_committed_test_configuration_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/auth/sascribe.toml");
        let file = ConfigFile::load(&path).unwrap();
        let a = file.auth(path.parent().unwrap()).unwrap().unwrap();
        assert_eq!(
            (a.users.len(), a.algorithms.as_slice()),
            (3, &[Algorithm::Md5][..])
        );
        for alg in [Algorithm::Md5, Algorithm::Sha256] {
            let h =
                sascribe_proto::sip::auth::digest::ha1(alg, "carol", "example.test", "carol-sings");
            assert_eq!(a.users.ha1("carol", alg), Some(h.as_str()));
        }
        assert!(matches!(a.watch, WatchPolicy::AllowList(_)));
    }

    #[test]
    fn bad_files_and_values_are_named() {
        let d = dir(
            "bad",
            &[
                ("users.txt", "alice:example.test:pw\n\nbob:example.test\n"),
                ("ok.txt", "alice:example.test:pw\n"),
                ("empty.txt", "# nobody\n"),
                ("watch.txt", "bob@example.test\n"),
            ],
        );
        let head = "[auth]\nrealm = \"example.test\"\n";
        let err = |extra: &str| load(&d, &format!("{head}{extra}")).unwrap_err().to_string();
        let e = err("users_file = \"users.txt\"");
        assert!(
            e.contains("users.txt:3: expected user:realm:password"),
            "{e}"
        );
        let e = err("users_file = \"missing.txt\"");
        assert!(e.contains("missing.txt"), "{e}");
        let e = err("users_file = \"empty.txt\"");
        assert!(e.contains("no users"), "{e}");
        let e =
            err("users_file = \"ok.txt\"\nwatch = \"allow-list\"\nallow_list_file = \"watch.txt\"");
        assert!(e.contains("watch.txt:1: expected two fields"), "{e}");
        for (extra, what) in [
            ("watch = \"allow-list\"", "needs auth.allow_list_file"),
            ("allow_list_file = \"watch.txt\"", "only read with"),
            ("watch = \"friends\"", "is not \"all\""),
            ("algorithms = [\"SHA-1\"]", "neither"),
            ("algorithms = []", "at least one"),
            ("algorithms = [\"MD5\", \"md5\"]", "twice"),
            ("challenge = \"registrar\"", "neither \"server\""),
            ("nonce_lifetime = 0", "positive"),
        ] {
            let e = err(&format!("users_file = \"ok.txt\"\n{extra}"));
            assert!(e.contains(what), "{extra}: {e}");
        }
        let e = load(&d, "[auth]\nrealm = \"a\\\"b\"\nusers_file = \"ok.txt\"").unwrap_err();
        assert!(e.to_string().contains("realm"), "{e}");
        assert!(ConfigFile::parse("[auth]\nrealm = \"x\"\nusers_file = \"u\"\nbogus = 1").is_err());
        let a = load(&d, &format!("{head}users_file = \"ok.txt\"\nchallenge = \"proxy\"\nalgorithms = [\"MD5\"]\nwatch = \"same-domain\"")).unwrap().unwrap();
        assert_eq!(
            (a.challenge, a.algorithms, a.watch),
            (
                Challenge::Proxy,
                vec![Algorithm::Md5],
                WatchPolicy::SameDomain
            )
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
