//! A small, fast, reproducible generator for the bootstrap: xoshiro256** (Blackman &
//! Vigna) seeded through splitmix64. Each bootstrap draw gets its own stream derived from
//! (seed, draw index), so results do not depend on how draws are spread over threads.

/// splitmix64 step: also a good mixer of (seed, index) pairs.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Rng { s }
    }

    /// The generator of one numbered stream (e.g. one bootstrap draw) of a seed.
    pub fn stream(seed: u64, index: u64) -> Self {
        let mut sm = seed ^ 0x5DEE_CE66_D1CE_4E5B;
        let a = splitmix64(&mut sm);
        let mut sm = a ^ index.wrapping_mul(0xD134_2543_DE82_EF95);
        Rng::new(splitmix64(&mut sm))
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in 0..n (n > 0) by Lemire's multiply-shift; the bias (< n / 2^64) is
    /// far below anything a bootstrap can see.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4).map(|_| Rng::stream(42, 7).next_u64()).collect();
        assert!(a.iter().all(|v| *v == a[0]));
        assert_ne!(Rng::stream(42, 7).next_u64(), Rng::stream(42, 8).next_u64());
        assert_ne!(Rng::stream(42, 7).next_u64(), Rng::stream(43, 7).next_u64());
    }

    #[test]
    fn below_is_uniform_enough() {
        let mut rng = Rng::new(1);
        let mut counts = [0usize; 7];
        let n = 70_000;
        for _ in 0..n {
            counts[rng.below(7)] += 1;
        }
        // Each count ~ Binomial(70000, 1/7): sd about 93; 6 sd is a real failure.
        for c in counts {
            assert!((c as f64 - 10_000.0).abs() < 560.0, "{counts:?}");
        }
    }
}
