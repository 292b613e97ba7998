//! A small seeded random generator for randomized tests (splitmix64): the same seed gives the
//! same sequence on every machine, so a failure found once can be replayed from its seed.
//! No crate is needed for this, and none of it is cryptographic.

use std::time::{SystemTime, UNIX_EPOCH};

/// splitmix64: a 64-bit state advanced by a constant and scrambled on output.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// An independent generator for one part of a run (a round, a client), so that each
    /// part's sequence depends only on the seed and its own coordinates, not on how many
    /// numbers other parts drew.
    pub fn derive(seed: u64, coordinates: &[u64]) -> Rng {
        let mut rng = Rng::new(seed);
        for &c in coordinates {
            rng.state ^= Rng::new(c ^ 0xa076_1d64_78bd_642f).next_u64();
            rng.next_u64();
        }
        rng
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0). The modulo bias is irrelevant at test sizes.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0) has no value to return");
        self.next_u64() % n
    }

    /// A number in `range` (inclusive).
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    /// A uniformly chosen element, or `None` for an empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            return None;
        }
        items.get(self.below(items.len() as u64) as usize)
    }

    /// An index in `0..n` (`n` > 0).
    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// One of `items` (not empty), chosen uniformly.
    pub fn choose<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.index(items.len())]
    }

    /// True with probability `percent` / 100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.byte()).collect()
    }

    /// An index into `weights`, each chosen in proportion to its weight.
    pub fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let mut roll = self.below(total);
        for (i, &w) in weights.iter().enumerate() {
            if roll < u64::from(w) {
                return i;
            }
            roll -= u64::from(w);
        }
        unreachable!("the roll is below the total weight")
    }
}

/// The variable that fixes the seed of the randomized tests that have no knob of their own.
pub const SEED_ENV: &str = "BROWSERD_TEST_SEED";

/// The seed of randomized test `test`: `BROWSERD_TEST_SEED` if set, else a fresh one;
/// printed either way, so a failure's output says how to replay it.
pub fn seed(test: &str) -> u64 {
    let seed = seed_from_env(SEED_ENV);
    eprintln!("{test}: seed {seed:#x} (replay with {SEED_ENV}={seed:#x})");
    seed
}

/// The seed named by environment variable `var` (decimal, or hex with `0x`), else one taken
/// from the clock. Panics on a value that is not a number, rather than silently running
/// another seed than the one asked for.
pub fn seed_from_env(var: &str) -> u64 {
    match std::env::var(var) {
        Ok(text) => parse_u64(&text)
            .unwrap_or_else(|| panic!("{var}={text:?} is not a number (decimal or 0x-hex)")),
        Err(_) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("the clock is after 1970");
            // Scrambled, so seeds taken a moment apart do not look alike.
            Rng::new(now.as_nanos() as u64 ^ u64::from(std::process::id())).next_u64()
        }
    }
}

/// A size knob from environment variable `var`, else `default`.
pub fn size_from_env(var: &str, default: usize) -> usize {
    match std::env::var(var) {
        Ok(text) => parse_u64(&text)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| panic!("{var}={text:?} is not a positive number")),
        Err(_) => default,
    }
}

fn parse_u64(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_sequence() {
        let a: Vec<u64> = (0..8)
            .scan(Rng::new(42), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..8)
            .scan(Rng::new(42), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(
            Rng::derive(42, &[1]).next_u64(),
            Rng::derive(42, &[2]).next_u64()
        );
    }

    #[test]
    fn weighted_choice_never_picks_a_zero_weight() {
        let mut rng = Rng::new(7);
        for _ in 0..1000 {
            assert_ne!(rng.weighted(&[3, 0, 5]), 1);
        }
    }

    #[test]
    fn seeds_parse_as_decimal_or_hex() {
        assert_eq!(parse_u64("123"), Some(123));
        assert_eq!(parse_u64("0xff"), Some(255));
        assert_eq!(parse_u64("x"), None);
    }
}
