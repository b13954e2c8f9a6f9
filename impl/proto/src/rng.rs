//! The core's randomness, both supplied by its driver: the core never reads OS randomness.
//!
//! * [`SplitMix64`], a fast reproducible PRNG for choices that need not be secret (which leaf
//!   to exchange with, request nonces that only deduplicate retries, SIP tags and branches).
//! * [`Secrets`], a ChaCha20 CSPRNG for values that must not be guessed: entity tags (a
//!   `SIP-If-Match` naming one authorises a change), digest nonces. A production driver seeds
//!   it from the OS; the simulator and the conformance harness seed it from their own seed so
//!   that a run replays exactly.

/// SplitMix64: tiny, fast, good enough for ETags, nonces and random choices.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0);
        (self.next_u64() % n as u64) as usize
    }
    /// A non-zero value (used for ETags and nonces, where 0 is reserved).
    pub fn nonzero(&mut self) -> u64 {
        loop {
            let v = self.next_u64();
            if v != 0 {
                return v;
            }
        }
    }
}

/// Unpredictable values from a ChaCha20 CSPRNG seeded by the driver.
pub struct Secrets(rand_chacha::ChaCha20Rng);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(..)")
    }
}

impl Secrets {
    /// A generator seeded with 32 bytes (from the OS in production).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        use rand_core::SeedableRng;
        Secrets(rand_chacha::ChaCha20Rng::from_seed(seed))
    }

    /// An independent generator from the same seed: ChaCha20 stream `stream` (the
    /// [`Secrets::from_seed`] one is stream 0). How one driver seed serves several layers
    /// without any layer's draws shifting another's.
    pub fn from_seed_stream(seed: [u8; 32], stream: u64) -> Self {
        use rand_core::SeedableRng;
        let mut g = rand_chacha::ChaCha20Rng::from_seed(seed);
        g.set_stream(stream);
        Secrets(g)
    }

    /// A seed derived from a 64-bit number, for reproducible drivers (simulator, harness,
    /// tests). Never use it where the values must be secret.
    pub fn seed_from_u64(seed: u64) -> [u8; 32] {
        let mut g = SplitMix64::new(seed ^ 0x5ec2_e7a5_5ec2_e7a5);
        let mut out = [0u8; 32];
        for chunk in out.chunks_mut(8) {
            chunk.copy_from_slice(&g.next_u64().to_le_bytes());
        }
        out
    }

    /// 64 unpredictable bits.
    pub fn next_u64(&mut self) -> u64 {
        use rand_core::RngCore;
        self.0.next_u64()
    }

    /// A fresh entity tag (never 0).
    pub fn etag(&mut self) -> crate::wire::ETag {
        loop {
            let v = self.next_u64();
            if v != 0 {
                return crate::wire::ETag(v);
            }
        }
    }

    /// Fills `buf` with unpredictable bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        use rand_core::RngCore;
        self.0.fill_bytes(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn deterministic() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        for _ in 0..10 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(SplitMix64::new(1).next_u64(), SplitMix64::new(2).next_u64());
    }

    #[test]
    fn streams_are_independent() {
        let seed = Secrets::seed_from_u64(3);
        let mut s0 = Secrets::from_seed(seed);
        let mut s0b = Secrets::from_seed_stream(seed, 0);
        let mut s1 = Secrets::from_seed_stream(seed, 1);
        let (a, b, c) = (s0.next_u64(), s0b.next_u64(), s1.next_u64());
        assert_eq!(a, b, "stream 0 is the plain generator");
        assert_ne!(a, c);
    }
}
