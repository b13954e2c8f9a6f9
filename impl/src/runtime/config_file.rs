//! The TOML configuration file of `sascribe peer` / `sascribe cluster`: every key is optional
//! and overrides the matching [`Config`] field; unknown keys are errors.
//!
//! ```toml
//! leaf_set_size = 16          # L
//! replicas = 3                # k (alias: k)
//! keepalive_interval = 1000   # all durations in milliseconds
//! parent_timeout = 3500
//! pub_min_expires = 60        # expiry bounds in seconds
//! pub_max_expires = 3600
//! cluster_key = "00112233445566778899aabbccddeeff"  # hex; HMAC-SHA-256 on every datagram ("": none)
//! event_packages = ["presence", "dialog"]     # SIP event packages served (default: presence, dialog, message-summary)
//! domains = ["example.com"]   # SIP domains served (default: every domain; others get 404)
//! aliases = { "10.0.0.5" = "example.com", "10.0.0.5:5060" = "example.com" }  # other names of a domain
//! max_body = 8192             # bytes of one PUBLISH body (413 beyond)
//! max_states = 16             # event states (entity tags) per presentity (403 beyond)
//! max_document = 8192         # bytes of a presentity's states, and of their composition (413)
//! max_pending = 1024          # SIP requests waiting on the overlay (503 + Retry-After beyond)
//! source_rate = 50            # requests per second from one source IP (0: no limit)
//! ```
//!
//! `sascribe.example.toml` at the repository root lists every key with its default.
//!
//! An `[auth]` table turns on SIP digest authentication and authorisation (see
//! [`AuthSection`], which documents its keys).

pub use super::config_auth::AuthSection;
use crate::sip::admission::AdmissionConfig;
use crate::sip::auth::AuthConfig;
use crate::Config;

/// Largest `max_document`: a presentity's states (and, in ACKs and NOTIFYs, their composition)
/// must fit in one overlay datagram (`wire::MAX_DATAGRAM_LEN`, 16 KiB) with room for the rest.
pub const MAX_DOCUMENT: usize = 12 * 1024;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Served SIP domains and their `(alias, domain)` pairs.
pub type Domains = (Vec<String>, Vec<(String, String)>);

/// `sascribe.example.toml`: every key, its default and one line of meaning (printed by
/// `sascribe config --print-defaults`; a test checks it against [`Config::default`]).
pub const EXAMPLE: &str = include_str!("../../../sascribe.example.toml");

/// Why a configuration file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (the message names the line, the column
    /// and the key).
    #[error("{path}: {message}")]
    Parse {
        /// File (`<text>` when parsed from a string).
        path: String,
        /// toml's message: line, column, the line itself and what is wrong.
        message: String,
    },
    /// A value is out of range or inconsistent with another.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// A file the configuration names (users, allow-list) has an error on a line.
    #[error("{path}:{line}: {message}")]
    File {
        /// File.
        path: String,
        /// Line (from 1).
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// Overrides of [`Config`] fields, as read from TOML. Field meanings are those of [`Config`].
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct ConfigFile {
    pub leaf_set_size: Option<usize>,
    #[serde(alias = "k")]
    pub replicas: Option<usize>,
    pub keepalive_interval: Option<u64>,
    pub leaf_fail_timeout: Option<u64>,
    pub table_fail_timeout: Option<u64>,
    pub table_ping_interval: Option<u64>,
    pub table_probe_interval: Option<u64>,
    pub leaf_exchange_interval: Option<u64>,
    pub tombstone_ttl: Option<u64>,
    pub dead_probe_interval: Option<u64>,
    pub bootstrap_retry: Option<u64>,
    pub heartbeat_interval: Option<u64>,
    pub parent_timeout: Option<u64>,
    pub child_timeout: Option<u64>,
    pub request_retry: Option<u64>,
    pub request_timeout: Option<u64>,
    pub fetch_timeout: Option<u64>,
    pub heal_window: Option<u64>,
    pub replica_refresh: Option<u64>,
    pub root_lease: Option<u64>,
    pub pub_min_expires: Option<u32>,
    pub pub_max_expires: Option<u32>,
    pub pub_default_expires: Option<u32>,
    pub sub_min_expires: Option<u32>,
    pub sub_max_expires: Option<u32>,
    pub sub_default_expires: Option<u32>,
    pub max_body: Option<usize>,
    pub max_states: Option<usize>,
    pub max_document: Option<usize>,
    /// Hex-encoded cluster key.
    pub cluster_key: Option<String>,
    /// SIP event packages the front end serves (default
    /// `["presence", "dialog", "message-summary"]`).
    pub event_packages: Option<Vec<String>>,
    /// SIP domains this deployment serves (default: every domain). A PUBLISH or SUBSCRIBE
    /// for another domain gets 404.
    pub domains: Option<Vec<String>>,
    /// Other names (`host` or `host:port`) of served domains: `alias = "domain"`. Two
    /// Request-URIs name one presentity when their `user@domain` agree after this mapping.
    pub aliases: Option<std::collections::BTreeMap<String, String>>,
    /// SIP digest authentication and the watch policy (`[auth]`; none: off).
    pub auth: Option<AuthSection>,
    /// Overload control: SIP requests waiting on the overlay (new work refused at 3/4).
    pub max_pending: Option<usize>,
    /// Overload control: the runtime's input backlog (percent) at which new work is refused.
    pub max_backlog: Option<u8>,
    /// Overload control: the overlay's mean answer delay (ms) at which new work is refused
    /// (0: off).
    pub max_delay: Option<u32>,
    /// Base `Retry-After` of overload refusals (seconds; a random 0..=this is added).
    pub retry_after: Option<u32>,
    /// Requests per second one source IP may send (0: no limit).
    pub source_rate: Option<u32>,
    /// Requests one source IP may send at once (token bucket size; 0: `source_rate`).
    pub source_burst: Option<u32>,
    /// Source addresses whose rate is tracked (least recently seen forgotten beyond).
    pub max_sources: Option<usize>,
    /// Subscription dialogs one source IP may hold at one peer (0: no limit; 403 beyond).
    pub max_subs_per_source: Option<usize>,
    /// Subscription dialogs to one presentity at one peer (0: no limit; 403 beyond).
    pub max_subs_per_presentity: Option<usize>,
    /// Subscription dialogs one peer holds (503 + Retry-After beyond).
    pub max_dialogs: Option<usize>,
    /// The runtime: each peer sends on threads of its own (default off; see
    /// [`super::HostLoop::with_send_threads`]).
    pub send_threads: Option<bool>,
}

impl ConfigFile {
    /// The SIP event packages asked for, lowercased (empty: the front end's default). Each must
    /// be an RFC 6665 event-package token.
    pub fn event_packages(&self) -> Result<Vec<String>, ConfigError> {
        let Some(list) = &self.event_packages else {
            return Ok(Vec::new());
        };
        if list.is_empty() {
            return Err(ConfigError::Invalid(
                "event_packages must name at least one package".into(),
            ));
        }
        list.iter()
            .map(|p| {
                let token = !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b));
                if token {
                    Ok(p.to_ascii_lowercase())
                } else {
                    Err(ConfigError::Invalid(format!(
                        "event package {p:?} is not an event-package token"
                    )))
                }
            })
            .collect()
    }

    /// The served domains and their aliases, lowercased; an alias must name a served domain
    /// (when domains are listed).
    pub fn domains(&self) -> Result<Domains, ConfigError> {
        let domains: Vec<String> = (self.domains.iter().flatten())
            .map(|d| d.trim().to_ascii_lowercase())
            .collect();
        if let Some(d) = domains
            .iter()
            .find(|d| d.is_empty() || d.contains([':', '@', ' ', '/']))
        {
            return Err(ConfigError::Invalid(format!(
                "domains: {d:?} is not a host name (no scheme, user or port)"
            )));
        }
        let mut aliases = Vec::new();
        for (alias, domain) in self.aliases.iter().flatten() {
            let (a, d) = (
                alias.trim().to_ascii_lowercase(),
                domain.trim().to_ascii_lowercase(),
            );
            if !domains.is_empty() && !domains.contains(&d) {
                return Err(ConfigError::Invalid(format!(
                    "aliases: {alias:?} maps to {domain:?}, which is not in domains"
                )));
            }
            aliases.push((a, d));
        }
        Ok((domains, aliases))
    }

    /// The SIP front end's overload control and abuse limits: the defaults, with the keys set
    /// here.
    pub fn admission(&self) -> Result<AdmissionConfig, ConfigError> {
        let mut a = AdmissionConfig::default();
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { a.$f = v; } )* };
        }
        set!(
            max_pending,
            max_backlog,
            max_delay,
            retry_after,
            source_rate,
            source_burst,
            max_sources,
            max_subs_per_source,
            max_subs_per_presentity,
            max_dialogs
        );
        let err = |m: &str| Err(ConfigError::Invalid(m.into()));
        if a.max_pending < 4 {
            return err("max_pending must be at least 4");
        }
        if !(1..=100).contains(&a.max_backlog) {
            return err("max_backlog must lie within [1, 100] (percent)");
        }
        if a.retry_after == 0 {
            return err("retry_after must be positive");
        }
        if a.max_sources == 0 || a.max_dialogs == 0 {
            return err("max_sources and max_dialogs must be positive");
        }
        if a.source_burst == 0 {
            a.source_burst = a.source_rate;
        }
        Ok(a)
    }

    /// The SIP front end's authentication settings (`None` without an `[auth]` table),
    /// reading the files named there relative to `base` (the configuration file's directory).
    pub fn auth(&self, base: &Path) -> Result<Option<AuthConfig>, ConfigError> {
        self.auth.as_ref().map(|a| a.load(base)).transpose()
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        Self::parse_named(text, "<text>")
    }

    fn parse_named(text: &str, path: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e: toml::de::Error| ConfigError::Parse {
            path: path.to_string(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse_named(&text, &path.display().to_string())
    }

    /// Applies the overrides to `base` and validates the result.
    pub fn apply(&self, base: Config) -> Result<Config, ConfigError> {
        let mut c = base;
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { c.$f = v; } )* };
        }
        set!(
            leaf_set_size,
            replicas,
            keepalive_interval,
            leaf_fail_timeout,
            table_fail_timeout,
            table_ping_interval,
            table_probe_interval,
            leaf_exchange_interval,
            tombstone_ttl,
            dead_probe_interval,
            bootstrap_retry,
            heartbeat_interval,
            parent_timeout,
            child_timeout,
            request_retry,
            request_timeout,
            fetch_timeout,
            heal_window,
            replica_refresh,
            root_lease,
            pub_min_expires,
            pub_max_expires,
            pub_default_expires,
            sub_min_expires,
            sub_max_expires,
            sub_default_expires,
            max_body,
            max_states,
            max_document
        );
        // An empty key means none (the example file's default).
        if let Some(k) = self.cluster_key.as_deref().filter(|k| !k.trim().is_empty()) {
            c.cluster_key = Some(parse_hex(k)?);
        }
        validate(&c)?;
        Ok(c)
    }
}

fn parse_hex(s: &str) -> Result<Vec<u8>, ConfigError> {
    let s = s.trim();
    let bad = || ConfigError::Invalid("cluster_key must be an even number of hex digits".into());
    if s.is_empty() || !s.len().is_multiple_of(2) || !s.is_ascii() {
        return Err(bad());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| bad()))
        .collect()
}

/// Checks that a configuration is usable.
pub fn validate(c: &Config) -> Result<(), ConfigError> {
    let err = |m: &str| Err(ConfigError::Invalid(m.into()));
    if c.leaf_set_size < 2 || !c.leaf_set_size.is_multiple_of(2) {
        return err("leaf_set_size must be even and at least 2");
    }
    if c.replicas > c.leaf_set_size {
        return err("replicas (k) must not exceed leaf_set_size");
    }
    let intervals = [
        ("keepalive_interval", c.keepalive_interval),
        ("leaf_fail_timeout", c.leaf_fail_timeout),
        ("table_fail_timeout", c.table_fail_timeout),
        ("table_ping_interval", c.table_ping_interval),
        ("table_probe_interval", c.table_probe_interval),
        ("leaf_exchange_interval", c.leaf_exchange_interval),
        ("dead_probe_interval", c.dead_probe_interval),
        ("bootstrap_retry", c.bootstrap_retry),
        ("heartbeat_interval", c.heartbeat_interval),
        ("parent_timeout", c.parent_timeout),
        ("child_timeout", c.child_timeout),
        ("request_retry", c.request_retry),
        ("request_timeout", c.request_timeout),
        ("replica_refresh", c.replica_refresh),
        ("root_lease", c.root_lease),
    ];
    if let Some((name, _)) = intervals.iter().find(|(_, v)| *v == 0) {
        return Err(ConfigError::Invalid(format!("{name} must be positive")));
    }
    if c.leaf_fail_timeout <= c.keepalive_interval {
        return err("leaf_fail_timeout must exceed keepalive_interval");
    }
    if c.root_lease >= c.leaf_fail_timeout {
        // A replica takes a silent root's group over after leaf_fail_timeout: a longer lease
        // would let a paused or cut-off root answer from a record the new root moved past.
        return err("root_lease must be below leaf_fail_timeout");
    }
    if c.parent_timeout <= c.heartbeat_interval || c.child_timeout <= c.heartbeat_interval {
        return err("parent_timeout and child_timeout must exceed heartbeat_interval");
    }
    if c.pub_min_expires > c.pub_max_expires || c.sub_min_expires > c.sub_max_expires {
        return err("minimum expiries must not exceed maximum expiries");
    }
    if !(c.pub_min_expires..=c.pub_max_expires).contains(&c.pub_default_expires) {
        return err("pub_default_expires must lie within [pub_min_expires, pub_max_expires]");
    }
    if !(c.sub_min_expires..=c.sub_max_expires).contains(&c.sub_default_expires) {
        return err("sub_default_expires must lie within [sub_min_expires, sub_max_expires]");
    }
    if c.max_body == 0 {
        return err("max_body must be positive");
    }
    if c.max_states == 0 {
        return err("max_states must be positive");
    }
    // A presentity's states and their composition travel in one overlay datagram.
    if c.max_document == 0 || c.max_document > MAX_DOCUMENT {
        return err(&format!("max_document must lie within [1, {MAX_DOCUMENT}]"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example in the module docs.
    #[test]
    fn documented_example_parses() {
        let doc = include_str!("config_file.rs");
        let start = doc.find("//! ```toml\n").unwrap() + "//! ```toml\n".len();
        let end = start + doc[start..].find("//! ```\n").unwrap();
        let text: String = doc[start..end]
            .lines()
            .map(|l| l.trim_start_matches("//!").trim_start())
            .collect::<Vec<_>>()
            .join("\n");
        let c = ConfigFile::parse(&text)
            .unwrap()
            .apply(Config::default())
            .unwrap();
        assert_eq!(c.replicas, 3);
        assert_eq!(c.cluster_key.map(|k| k.len()), Some(16));
    }

    /// `sascribe.example.toml` (what `sascribe config --print-defaults` prints) sets every
    /// key but `[auth]` to its default: it parses, applying it changes nothing, and no key of
    /// the file format is missing from it.
    #[test]
    fn example_file_lists_every_key_with_its_default() {
        let text = super::EXAMPLE;
        let f = ConfigFile::parse(text).unwrap();
        let c = f.apply(Config::default()).unwrap();
        assert_eq!(format!("{c:?}"), format!("{:?}", Config::default()));
        assert_eq!(f.admission().unwrap(), AdmissionConfig::default());
        let json = serde_json::to_value(&f).unwrap();
        for (k, v) in json.as_object().unwrap() {
            if k != "auth" {
                assert!(!v.is_null(), "sascribe.example.toml lacks {k}");
            }
        }
        // Every [auth] key is documented in it, commented out.
        for k in [
            "realm",
            "users_file",
            "algorithms",
            "challenge",
            "nonce_lifetime",
            "max_nonces",
            "watch",
            "allow_list_file",
        ] {
            assert!(
                text.contains(&format!("# {k} = ")),
                "[auth] {k} not documented"
            );
        }
    }

    #[test]
    fn admission_limits_are_read_and_checked() {
        let a = ConfigFile::parse("source_rate = 50\nmax_pending = 64\nmax_dialogs = 10\n")
            .unwrap()
            .admission()
            .unwrap();
        assert_eq!((a.source_rate, a.source_burst), (50, 50));
        assert_eq!((a.max_pending, a.max_dialogs), (64, 10));
        assert_eq!(
            ConfigFile::default().admission().unwrap(),
            AdmissionConfig::default()
        );
        for bad in [
            "max_backlog = 0",
            "max_backlog = 101",
            "retry_after = 0",
            "max_pending = 1",
            "max_sources = 0",
        ] {
            let r = ConfigFile::parse(bad).unwrap().admission();
            assert!(r.is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = ConfigFile::parse_named("leaf_set_size = 16\nno_such_key = 1\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("x.toml: "), "{e}");
        assert!(e.contains("line 2"), "{e}");
        assert!(e.contains("no_such_key"), "{e}");
    }

    #[test]
    fn event_packages_are_checked_and_lowercased() {
        let f = ConfigFile::parse("event_packages = [\"presence\", \"Dialog\"]\n").unwrap();
        assert_eq!(f.event_packages().unwrap(), vec!["presence", "dialog"]);
        assert!(ConfigFile::default().event_packages().unwrap().is_empty());
        for bad in ["event_packages = []", "event_packages = [\"pres ence\"]"] {
            let e = ConfigFile::parse(bad)
                .unwrap()
                .event_packages()
                .unwrap_err();
            assert!(e.to_string().contains("event"), "{e}");
        }
    }

    #[test]
    fn domains_and_aliases_are_checked_and_lowercased() {
        let f = ConfigFile::parse(
            "domains = [\"Example.com\"]\naliases = { \"10.0.0.5:5060\" = \"example.COM\" }\n",
        )
        .unwrap();
        let (d, a) = f.domains().unwrap();
        assert_eq!(d, ["example.com"]);
        assert_eq!(
            a,
            [("10.0.0.5:5060".to_string(), "example.com".to_string())]
        );
        assert_eq!(ConfigFile::default().domains().unwrap(), (vec![], vec![]));
        for bad in [
            "domains = [\"sip:example.com\"]",
            "domains = [\"example.com:5060\"]",
            "domains = [\"a.test\"]\naliases = { \"x\" = \"b.test\" }",
        ] {
            let e = ConfigFile::parse(bad).unwrap().domains().unwrap_err();
            assert!(e.to_string().contains("domain"), "{bad}: {e}");
        }
    }

    #[test]
    fn overrides_and_defaults() {
        let f = ConfigFile::parse(
            "k = 5\nleaf_set_size = 8\nkeepalive_interval = 250\ncluster_key = \"0aFF\"\n",
        )
        .unwrap();
        let c = f.apply(Config::default()).unwrap();
        assert_eq!(c.replicas, 5);
        assert_eq!(c.leaf_set_size, 8);
        assert_eq!(c.keepalive_interval, 250);
        assert_eq!(c.cluster_key.as_deref(), Some(&[0x0a, 0xff][..]));
        assert_eq!(c.parent_timeout, Config::default().parent_timeout);
        let empty = ConfigFile::parse("")
            .unwrap()
            .apply(Config::default())
            .unwrap();
        assert_eq!(empty.leaf_set_size, Config::default().leaf_set_size);
    }

    #[test]
    fn rejects_bad_files() {
        for bad in [
            "leaf_set_size = 7",
            "leaf_set_size = 4\nreplicas = 5",
            "no_such_key = 1",
            "keepalive_interval = -1",
            "heartbeat_interval = 0",
            "cluster_key = \"abc\"",
            "cluster_key = \"zz\"",
            "pub_min_expires = 100\npub_max_expires = 50",
            "leaf_set_size = ",
        ] {
            let r = ConfigFile::parse(bad).and_then(|f| f.apply(Config::default()));
            assert!(r.is_err(), "accepted {bad:?}");
        }
    }
}
