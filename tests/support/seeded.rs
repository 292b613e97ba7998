//! Seeded randomness for randomized tests: a small, fast generator (SplitMix64) and the
//! rule for choosing a seed. A run prints its seed; setting `BROWSERD_TEST_SEED` to it
//! replays the same inputs.

use std::time::{SystemTime, UNIX_EPOCH};

/// The variable that fixes the seed of every randomized test.
pub const SEED_ENV: &str = "BROWSERD_TEST_SEED";

/// The seed to use: `BROWSERD_TEST_SEED` if set (decimal or `0x` hex), else a fresh one.
/// Printed either way, so a failure's output says how to replay it.
pub fn seed(test: &str) -> u64 {
    let seed = match std::env::var(SEED_ENV) {
        Ok(text) => parse_seed(&text)
            .unwrap_or_else(|| panic!("{SEED_ENV}={text:?} is not a decimal or 0x-hex u64")),
        Err(_) => {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
                ^ u64::from(std::process::id()).rotate_left(32)
        }
    };
    eprintln!("{test}: seed {seed:#x} (replay with {SEED_ENV}={seed:#x})");
    seed
}

fn parse_seed(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// SplitMix64: not cryptographic, just fast and well spread, even in a debug build.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`; `n` must not be zero.
    pub fn below(&mut self, n: usize) -> usize {
        (self.u64() % n as u64) as usize
    }

    /// True with probability `percent` / 100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.u64() % 100 < percent
    }

    /// One of `items`, chosen uniformly.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    pub fn byte(&mut self) -> u8 {
        self.u64() as u8
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.byte()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_numbers() {
        let a: Vec<u64> = std::iter::repeat_with({
            let mut rng = Rng::new(7);
            move || rng.u64()
        })
        .take(4)
        .collect();
        let mut rng = Rng::new(7);
        assert_eq!(a, (0..4).map(|_| rng.u64()).collect::<Vec<_>>());
        assert_eq!(parse_seed("0x10"), Some(16));
        assert_eq!(parse_seed("10"), Some(10));
    }
}
