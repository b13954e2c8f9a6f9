//! An actor state that hashes itself once.
//!
//! The checker fingerprints every state it generates, and a state's fingerprint hashes every
//! actor's state, although a transition changes one actor at most: the others are the very
//! `Arc`s of the state it came from. [`Hashed`] keeps its value's hash once computed, so that
//! fingerprinting an unchanged actor costs one word. Any mutable access to the value forgets
//! the hash, so it is always the hash of the value as it is; equality compares the values
//! themselves.

use serde::{Serialize, Serializer};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};

/// A value with its hash, computed on first use and kept until the value is changed.
pub struct Hashed<T> {
    value: T,
    /// The kept hash, or [`UNKNOWN`]. Computing it twice from two threads is harmless (both
    /// store the same word), so a relaxed atomic serves, without a lock's first-use cost.
    hash: AtomicU64,
}

/// No hash kept. A value whose hash is this word keeps [`UNKNOWN_STANDIN`] instead.
const UNKNOWN: u64 = 0;
/// What a value hashing to [`UNKNOWN`] keeps.
const UNKNOWN_STANDIN: u64 = 1;

/// The hasher of the kept hashes: fixed keys, so that a run's fingerprints are reproducible,
/// as the checker's own (`ahash` with fixed seeds) are.
fn hasher() -> ahash::RandomState {
    ahash::RandomState::with_seeds(
        0x5a5c_2b1e_0f3d_4c71,
        0x9e37_79b9_7f4a_7c15,
        0x243f_6a88_85a3_08d3,
        0x1319_8a2e_0370_7344,
    )
}

impl<T: Hash> Hashed<T> {
    /// Wraps `value`; its hash is computed when first needed.
    pub fn new(value: T) -> Self {
        Hashed {
            value,
            hash: AtomicU64::new(UNKNOWN),
        }
    }

    /// The value's hash.
    fn get(&self) -> u64 {
        match self.hash.load(Ordering::Relaxed) {
            UNKNOWN => {
                let h = match hasher().hash_one(&self.value) {
                    UNKNOWN => UNKNOWN_STANDIN,
                    h => h,
                };
                self.hash.store(h, Ordering::Relaxed);
                h
            }
            h => h,
        }
    }
}

impl<T: Hash> From<T> for Hashed<T> {
    fn from(value: T) -> Self {
        Hashed::new(value)
    }
}

impl<T> Deref for Hashed<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> DerefMut for Hashed<T> {
    /// The value may change: its kept hash is forgotten.
    fn deref_mut(&mut self) -> &mut T {
        *self.hash.get_mut() = UNKNOWN;
        &mut self.value
    }
}

impl<T: Clone> Clone for Hashed<T> {
    /// An equal value has the same hash: a kept one is kept in the copy too.
    fn clone(&self) -> Self {
        Hashed {
            value: self.value.clone(),
            hash: AtomicU64::new(self.hash.load(Ordering::Relaxed)),
        }
    }
}

impl<T: Hash> Hash for Hashed<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.get());
    }
}

impl<T: PartialEq> PartialEq for Hashed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T: Eq> Eq for Hashed<T> {}

impl<T: fmt::Debug> fmt::Debug for Hashed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

impl<T: Serialize> Serialize for Hashed<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::Hashed;
    use std::hash::Hash;

    fn fingerprint<T: Hash>(v: &T) -> u64 {
        ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one(v)
    }

    #[test]
    fn a_change_through_the_wrapper_changes_the_hash() {
        let mut a = Hashed::new(vec![1u8, 2, 3]);
        let before = fingerprint(&a);
        a.push(4);
        assert_ne!(fingerprint(&a), before);
        assert_eq!(
            fingerprint(&a),
            fingerprint(&Hashed::new(vec![1u8, 2, 3, 4]))
        );
    }

    #[test]
    fn equal_values_hash_alike_however_they_were_reached() {
        let a = Hashed::new((1u8, Some(2u8)));
        let _ = fingerprint(&a);
        let mut b = a.clone();
        b.0 = 7;
        b.0 = 1;
        assert_eq!(a, b);
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(a, Hashed::new((1u8, None)));
    }
}
