//! Authentication and authorisation of PUBLISH and SUBSCRIBE (RFC 3903 §13, RFC 6665 §5.2,
//! RFC 3261 §22, RFC 7616, RFC 8760).
//!
//! When [`SipConfig::auth`](super::SipConfig::auth) is set, every PUBLISH and SUBSCRIBE
//! (in-dialog ones too) passes `SipEndpoint::admit` before it is handled — before it reaches
//! the overlay. OPTIONS, CANCEL and the methods answered 405/501 are not challenged.
//!
//! 1. **Credentials.** The first `Authorization` or `Proxy-Authorization` value whose scheme
//!    is `Digest` and whose realm is ours is checked; without one the request gets **401**
//!    with one `WWW-Authenticate` challenge per configured algorithm, in order (SHA-256 then
//!    MD5 by default), all with the same fresh nonce and `qop="auth"` — or **407** with
//!    `Proxy-Authenticate` when the endpoint challenges like a proxy ([`Challenge::Proxy`]).
//! 2. **Syntax.** Credentials missing `username`, `nonce`, `uri`, `response`, `cnonce` or
//!    `nc`, or with a `uri` naming another resource than the Request-URI, get **400** (RFC
//!    7616 §3.4.6). An algorithm not offered, a `qop` other than `auth`, an unknown user, a
//!    nonce we did not issue or a wrong response digest (compared in constant time) get a new
//!    challenge.
//! 3. **Freshness and replay** (`nonce.rs`): a correct digest over an expired nonce gets a
//!    challenge with `stale=true`; a nonce count not above the last one used with that nonce
//!    is a replay and gets a new challenge.
//! 4. **Authorisation** ([`policy`]): a PUBLISH must be for the authenticated user's own
//!    address-of-record, a SUBSCRIBE must be allowed by the [`WatchPolicy`] to watch its
//!    resource (the Request-URI; for an in-dialog one, the dialog's); otherwise **403**.

pub mod client;
pub mod digest;
mod nonce;
pub mod policy;
pub mod users;

pub use client::ClientAuth;
pub use digest::Algorithm;
pub use policy::{AllowList, Aor, WatchPolicy};
pub use users::{LineError, Users};

use super::dialog::DialogId;
use super::headers::NameAddr;
use super::message::{reason_phrase, Headers, Method, Request};
use super::{ReqCtx, SipEndpoint};
use crate::rng::Secrets;
use crate::Millis;
use subtle::ConstantTimeEq;

pub(crate) use nonce::Nonces;

/// How the endpoint challenges (RFC 3261 §22.1, §22.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Challenge {
    /// As the user agent server the request is for: 401 with `WWW-Authenticate`.
    #[default]
    Server,
    /// As a proxy in front of it: 407 with `Proxy-Authenticate`.
    Proxy,
}

/// Authentication and authorisation settings (see the [module docs](self)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthConfig {
    /// The realm of the challenges (the users' HA1s are of this realm).
    pub realm: String,
    /// Who may authenticate.
    pub users: Users,
    /// Algorithms offered, most preferred first (default SHA-256, MD5).
    pub algorithms: Vec<Algorithm>,
    /// 401 or 407.
    pub challenge: Challenge,
    /// How long a nonce may be used (ms; default 5 min).
    pub nonce_lifetime: Millis,
    /// Bound on the nonces remembered for replay detection (default 65 536).
    pub max_nonces: usize,
    /// Who may watch whom.
    pub watch: WatchPolicy,
}

impl AuthConfig {
    /// Digest authentication for `users`, in their realm, with the defaults above.
    pub fn new(users: Users) -> AuthConfig {
        AuthConfig {
            realm: users.realm().to_string(),
            users,
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
            challenge: Challenge::Server,
            nonce_lifetime: 300_000,
            max_nonces: 65_536,
            watch: WatchPolicy::All,
        }
    }
}

/// The answer to a request that does not pass.
pub(super) struct Refusal {
    pub code: u16,
    pub reason: String,
    pub headers: Headers,
}

/// Why credentials did not authenticate.
enum Failure {
    /// None for our realm: challenge.
    Missing,
    /// Malformed: 400 with this reason.
    Malformed(&'static str),
    /// Present but wrong (user, algorithm, qop, nonce or digest): challenge.
    Wrong,
    /// A correct digest over an expired nonce: challenge with `stale=true`.
    Stale,
    /// A nonce count already used: challenge.
    Replay,
}

/// The nonce state of an endpoint with authentication on.
pub(crate) fn nonces(cfg: &AuthConfig, secrets: Secrets) -> Nonces {
    Nonces::new(secrets, cfg.nonce_lifetime, cfg.max_nonces)
}

impl SipEndpoint {
    /// Authenticates and authorises a request before it is handled: `None` lets it through,
    /// otherwise the response to send (see the [module docs](self)).
    pub(super) fn admit(&mut self, now: Millis, req: &Request, ctx: &ReqCtx) -> Option<Refusal> {
        if !matches!(req.method, Method::Publish | Method::Subscribe) {
            return None;
        }
        let (cfg, nonces) = (self.cfg.auth.as_ref()?, self.nonces.as_mut()?);
        let who = match authenticate(cfg, nonces, now, req) {
            Ok(who) => who,
            Err(Failure::Malformed(why)) => {
                self.stats.auth_failures += 1;
                return Some(Refusal {
                    code: 400,
                    reason: format!("Bad Request - {why}"),
                    headers: Headers::default(),
                });
            }
            Err(f) => {
                let stale = matches!(f, Failure::Stale);
                match f {
                    Failure::Wrong => self.stats.auth_failures += 1,
                    Failure::Stale => self.stats.auth_stale += 1,
                    Failure::Replay => self.stats.auth_replays += 1,
                    Failure::Missing | Failure::Malformed(_) => {}
                }
                self.stats.auth_challenges += 1;
                let nonce = nonces.issue(now);
                let (code, name) = match cfg.challenge {
                    Challenge::Server => (401, "WWW-Authenticate"),
                    Challenge::Proxy => (407, "Proxy-Authenticate"),
                };
                let mut headers = Headers::default();
                for &alg in &cfg.algorithms {
                    headers.push(name, digest::challenge(alg, &cfg.realm, &nonce, stale));
                }
                return Some(Refusal {
                    code,
                    reason: reason_phrase(code).to_string(),
                    headers,
                });
            }
        };
        let allowed = match (&req.method, &ctx.to_na.tag) {
            (Method::Publish, _) => self.aor(&req.uri).is_some_and(|t| t == who),
            // In a dialog the Request-URI is our Contact: the policy is checked again against
            // the dialog's resource (its To), so that another user who learnt the dialog's
            // identifiers cannot refresh it to a Contact of theirs. An unknown dialog passes
            // on to its 481.
            (_, Some(local_tag)) => {
                let id = DialogId {
                    call_id: ctx.call_id.clone(),
                    local_tag: local_tag.clone(),
                    remote_tag: ctx.from_na.tag.clone().unwrap_or_default(),
                };
                match self.dialog_ids.get(&id).and_then(|h| self.dialogs.get(h)) {
                    Some(d) => NameAddr::parse(&d.local)
                        .ok()
                        .and_then(|na| self.aor(&na.uri))
                        .is_some_and(|t| cfg.watch.allows(&who, &t)),
                    None => true,
                }
            }
            (_, None) => self
                .aor(&req.uri)
                .is_some_and(|t| cfg.watch.allows(&who, &t)),
        };
        if allowed {
            return None;
        }
        self.stats.forbidden += 1;
        let what = if req.method == Method::Publish {
            format!("{who} may not publish for {}", req.uri)
        } else {
            format!("{who} may not watch {}", req.uri)
        };
        Some(Refusal {
            code: 403,
            reason: format!("Forbidden - {what}"),
            headers: Headers::default(),
        })
    }

    /// The address-of-record a request is about, as the front end keys resources
    /// ([`super::SipConfig::resource`]: an alias host becomes its domain), so that the policy
    /// judges the presentity the request reaches. `None` for a domain not served.
    fn aor(&self, uri: &str) -> Option<Aor> {
        self.cfg.resource(uri).and_then(|r| Aor::parse(&r))
    }

    /// Nonces remembered for replay detection (0 without authentication).
    pub fn nonces_remembered(&self) -> usize {
        self.nonces.as_ref().map_or(0, Nonces::remembered)
    }
}

/// Step 1–3 of the [module docs](self): the authenticated identity, or why not.
fn authenticate(
    cfg: &AuthConfig,
    nonces: &mut Nonces,
    now: Millis,
    req: &Request,
) -> Result<Aor, Failure> {
    let creds = req
        .headers
        .all("Authorization")
        .chain(req.headers.all("Proxy-Authorization"))
        .filter_map(digest::Params::parse)
        .find(|p| p.get("realm") == Some(cfg.realm.as_str()))
        .ok_or(Failure::Missing)?;
    let field = |name: &'static str| match creds.count(name) {
        1 => creds.get(name).ok_or(Failure::Malformed(name)),
        0 => Err(Failure::Malformed(match name {
            "username" => "credentials without username",
            "nonce" => "credentials without nonce",
            "uri" => "credentials without uri",
            "response" => "credentials without response",
            "cnonce" => "credentials without cnonce",
            _ => "credentials without nc",
        })),
        _ => Err(Failure::Malformed("repeated digest parameter")),
    };
    let (user, nonce, uri, response) = (
        field("username")?,
        field("nonce")?,
        field("uri")?,
        field("response")?,
    );
    let alg = creds.get("algorithm").unwrap_or("MD5");
    let alg = Algorithm::parse(alg)
        .filter(|a| cfg.algorithms.contains(a))
        .ok_or(Failure::Wrong)?;
    if !creds
        .get("qop")
        .is_some_and(|q| q.eq_ignore_ascii_case("auth"))
    {
        return Err(Failure::Wrong);
    }
    let (cnonce, nc_raw) = (field("cnonce")?, field("nc")?);
    let nc = (nc_raw.len() == 8)
        .then(|| u32::from_str_radix(nc_raw, 16).ok())
        .flatten()
        .filter(|&n| n > 0)
        .ok_or(Failure::Malformed("bad nc"))?;
    let same_resource =
        uri == req.uri || Aor::parse(uri).is_some_and(|a| Some(a) == Aor::parse(&req.uri));
    if !same_resource {
        return Err(Failure::Malformed("digest uri is not the Request-URI"));
    }
    let id = nonces.verify(now, nonce).map_err(|_| Failure::Wrong)?;
    let who = Aor::of_user(user, &cfg.realm).ok_or(Failure::Wrong)?;
    // An unknown user costs the same hashing as a known one.
    let unknown = "0".repeat(alg.hex_len());
    let (known, ha1) = match cfg.users.ha1(user, alg) {
        Some(h) => (true, h),
        None => (false, unknown.as_str()),
    };
    let covered = digest::Covered {
        method: req.method.as_str(),
        uri,
        nonce,
        nc: nc_raw,
        cnonce,
    };
    let expected = digest::response(alg, ha1, covered);
    let given = response.to_ascii_lowercase();
    let equal: bool = expected.as_bytes().ct_eq(given.as_bytes()).into();
    if !(equal && known) {
        return Err(Failure::Wrong);
    }
    if !nonces.is_fresh(now, id) {
        return Err(Failure::Stale);
    }
    if !nonces.use_count(now, id, nc) {
        return Err(Failure::Replay);
    }
    Ok(who)
}
