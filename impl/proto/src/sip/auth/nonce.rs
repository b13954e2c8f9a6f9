//! Server nonces: unguessable, self-dating, tamper-evident, and used with increasing nonce
//! counts only.
//!
//! A nonce is 64 hex digits: `issued (8 bytes, ms on the host's clock) ‖ random (8 bytes,
//! from the CSPRNG) ‖ HMAC-SHA-256(key, issued ‖ random) truncated to 16 bytes`. The key is
//! 32 bytes drawn from the endpoint's CSPRNG when it starts, so a restarted peer (and every
//! other peer) refuses the nonces of the old one: nothing about nonces is shared or stored.
//!
//! * **Issuing** stores nothing: any number of challenges cost no memory.
//! * **Freshness**: a nonce older than the lifetime is *stale* (the client is told
//!   `stale=true` and retries with a new one without asking its user again).
//! * **Replay**: the first use of a nonce records it with its nonce count `nc`; later uses
//!   need a larger `nc`. The table is bounded: when full, the entry issued first is dropped
//!   and the *floor* rises to its issue time, so that every nonce issued at or before the
//!   floor and no longer in the table counts as stale — a dropped entry can never be replayed
//!   from `nc=1` again. Entries older than the lifetime leave the table on their own.

use super::digest::{from_hex, to_hex};
use crate::rng::Secrets;
use crate::Millis;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::BTreeMap;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the MAC kept in a nonce.
const TAG: usize = 16;

/// What identifies a nonce in the replay table: its issue time and random part.
pub(crate) type NonceId = (Millis, u64);

/// Why a nonce was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NonceError {
    /// Not one this endpoint issued (wrong length, tampered, another peer's or an earlier
    /// run's, from the future).
    Invalid,
}

/// The nonces of one endpoint. See the [module docs](self).
pub(crate) struct Nonces {
    key: [u8; 32],
    rng: Secrets,
    lifetime: Millis,
    max: usize,
    used: BTreeMap<NonceId, u32>,
    floor: Option<Millis>,
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nonces")
            .field("lifetime", &self.lifetime)
            .field("used", &self.used.len())
            .field("floor", &self.floor)
            .finish_non_exhaustive()
    }
}

impl Nonces {
    /// Nonces valid for `lifetime` ms, at most `max` of them remembered (at least 1); the key
    /// and every random part come from `rng`.
    pub(crate) fn new(mut rng: Secrets, lifetime: Millis, max: usize) -> Nonces {
        let mut key = [0u8; 32];
        rng.fill(&mut key);
        Nonces {
            key,
            rng,
            lifetime,
            max: max.max(1),
            used: BTreeMap::new(),
            floor: None,
        }
    }

    fn mac(&self, issued: Millis, random: u64) -> HmacSha256 {
        let mut m = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(&issued.to_be_bytes());
        m.update(&random.to_be_bytes());
        m
    }

    /// A fresh nonce issued at `now`.
    pub(crate) fn issue(&mut self, now: Millis) -> String {
        let random = self.rng.next_u64();
        let tag = self.mac(now, random).finalize().into_bytes();
        let mut raw = Vec::with_capacity(16 + TAG);
        raw.extend_from_slice(&now.to_be_bytes());
        raw.extend_from_slice(&random.to_be_bytes());
        raw.extend_from_slice(&tag[..TAG]);
        to_hex(&raw)
    }

    /// Whether `nonce` is one of ours (its MAC is checked in constant time).
    pub(crate) fn verify(&self, now: Millis, nonce: &str) -> Result<NonceId, NonceError> {
        let raw = from_hex(nonce).ok_or(NonceError::Invalid)?;
        if raw.len() != 16 + TAG {
            return Err(NonceError::Invalid);
        }
        let issued = Millis::from_be_bytes(raw[..8].try_into().expect("8 bytes"));
        let random = u64::from_be_bytes(raw[8..16].try_into().expect("8 bytes"));
        self.mac(issued, random)
            .verify_truncated_left(&raw[16..])
            .map_err(|_| NonceError::Invalid)?;
        if issued > now {
            return Err(NonceError::Invalid);
        }
        Ok((issued, random))
    }

    /// Whether verified nonce `id` is still fresh at `now` (see the module docs).
    pub(crate) fn is_fresh(&self, now: Millis, id: NonceId) -> bool {
        let young = now.saturating_sub(id.0) <= self.lifetime;
        let remembered = self.used.contains_key(&id) || self.floor.is_none_or(|f| id.0 > f);
        young && remembered
    }

    /// Records a use of fresh nonce `id` with nonce count `nc`; `false` (and nothing changes)
    /// when `nc` is not above the last one used with it: a replay.
    pub(crate) fn use_count(&mut self, now: Millis, id: NonceId, nc: u32) -> bool {
        if let Some(last) = self.used.get_mut(&id) {
            if nc <= *last {
                return false;
            }
            *last = nc;
            return true;
        }
        // Expired entries go first (they are stale by age already), then the oldest if full.
        while let Some((&(issued, r), _)) = self.used.first_key_value() {
            if now.saturating_sub(issued) > self.lifetime {
                self.used.remove(&(issued, r));
            } else {
                break;
            }
        }
        while self.used.len() >= self.max {
            if let Some(((issued, _), _)) = self.used.pop_first() {
                self.floor = Some(self.floor.map_or(issued, |f| f.max(issued)));
            }
        }
        self.used.insert(id, nc);
        true
    }

    /// Nonces remembered for replay detection.
    pub(crate) fn remembered(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nonces(seed: u64, max: usize) -> Nonces {
        Nonces::new(
            Secrets::from_seed(Secrets::seed_from_u64(seed)),
            30_000,
            max,
        )
    }

    #[test]
    fn issued_nonces_verify_and_differ() {
        let mut n = nonces(1, 16);
        let a = n.issue(1_000);
        let b = n.issue(1_000);
        assert_ne!(a, b, "random part");
        assert_eq!(a.len(), 64);
        let id = n.verify(1_000, &a).unwrap();
        assert_eq!(id.0, 1_000);
        assert!(n.is_fresh(31_000, id));
        assert!(!n.is_fresh(31_001, id), "older than the lifetime");
    }

    #[test]
    fn tampered_foreign_and_future_nonces_are_invalid() {
        let mut n = nonces(1, 16);
        let a = n.issue(5_000);
        // Every single hex digit changed breaks it: time, random part and MAC.
        for i in 0..a.len() {
            let mut t: Vec<u8> = a.clone().into_bytes();
            t[i] = if t[i] == b'0' { b'1' } else { b'0' };
            let t = String::from_utf8(t).unwrap();
            assert_eq!(n.verify(9_000, &t), Err(NonceError::Invalid), "digit {i}");
        }
        // Moving the timestamp forward (to dodge expiry) without the key fails.
        let later = format!("{:016x}{}", 8_000u64, &a[16..]);
        assert_eq!(n.verify(9_000, &later), Err(NonceError::Invalid));
        // Another endpoint (or this peer after a restart: a new key) did not issue it.
        let other = nonces(2, 16);
        assert_eq!(other.verify(9_000, &a), Err(NonceError::Invalid));
        // Malformed.
        for bad in ["", "zz", &a[..62], &format!("{a}00")] {
            assert_eq!(n.verify(9_000, bad), Err(NonceError::Invalid));
        }
        // Issued "after" now: only a forgery could be.
        assert_eq!(n.verify(4_999, &a), Err(NonceError::Invalid));
    }

    #[test]
    fn nonce_counts_must_increase() {
        let mut n = nonces(1, 16);
        let s = n.issue(0);
        let id = n.verify(0, &s).unwrap();
        assert!(n.use_count(0, id, 1));
        assert!(!n.use_count(0, id, 1), "same nc again: replay");
        assert!(n.use_count(0, id, 3), "gaps are fine");
        assert!(!n.use_count(0, id, 2), "going back: replay");
        assert_eq!(n.remembered(), 1);
    }

    #[test]
    fn a_full_table_drops_the_oldest_and_its_elders_become_stale() {
        let mut n = nonces(1, 2);
        let ids: Vec<NonceId> = (0..4)
            .map(|t| {
                let s = n.issue(t * 10);
                n.verify(100, &s).unwrap()
            })
            .collect();
        // Nonce 1 is used first; nonce 0 (issued earlier) never.
        assert!(n.use_count(100, ids[1], 1));
        assert!(n.use_count(100, ids[2], 1));
        assert!(n.is_fresh(100, ids[0]));
        // A third entry pushes out nonce 1 (issued first of those remembered).
        assert!(n.use_count(100, ids[3], 1));
        assert_eq!(n.remembered(), 2);
        assert!(
            !n.is_fresh(100, ids[1]),
            "forgotten: it cannot be replayed from nc=1"
        );
        assert!(!n.is_fresh(100, ids[0]), "issued before the floor");
        assert!(n.is_fresh(100, ids[2]) && n.is_fresh(100, ids[3]));
        // Expired entries leave by themselves.
        let late = n.issue(60_000);
        let late = n.verify(60_000, &late).unwrap();
        assert!(n.use_count(60_000, late, 1));
        assert_eq!(n.remembered(), 1);
    }
}
