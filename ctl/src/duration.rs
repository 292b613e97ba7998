//! Durations on the command line (`--ttl`, `--grace`, a `--request` body's `grace_ms`): a
//! number with a unit, turned into the milliseconds the wire uses, and bounded, so that a
//! typo such as `10000y` is a usage error here instead of a deadline nobody can represent.

use browserd_proto::duration::{as_millis, format_millis, parse_duration};

/// The longest duration browserctl sends: 100 years (of 365.25 days, as `100y` means). It
/// mirrors the protocol's bound on every `*_ms` field: any deadline within it fits in `i64`
/// nanoseconds and, from any date before year 9899, still formats as an RFC 3339 date.
pub const MAX_DURATION_MS: u64 = 36_525 * 24 * 60 * 60 * 1000;

/// A duration flag (`500ms`, `5s`, `2m`) as milliseconds, at most [`MAX_DURATION_MS`].
pub fn parse_millis(text: &str) -> Result<u64, String> {
    let ms = parse_duration(text).map(as_millis)?;
    check_bound(ms).map_err(|bound| format!("duration `{}` is {bound}", text.trim()))
}

/// Like [`parse_millis`], for lifetimes, where zero would mean "already expired".
pub fn parse_positive_millis(text: &str) -> Result<u64, String> {
    match parse_millis(text)? {
        0 => Err("must be longer than zero".to_owned()),
        ms => Ok(ms),
    }
}

/// Checks a millisecond count that arrived as a number (a `--request` body's `grace_ms`).
pub fn check_millis(field: &str, ms: u64) -> Result<u64, String> {
    check_bound(ms).map_err(|bound| format!("`{field}` {ms} is {bound}"))
}

fn check_bound(ms: u64) -> Result<u64, String> {
    if ms > MAX_DURATION_MS {
        return Err(format!(
            "longer than the longest allowed, {}",
            format_millis(MAX_DURATION_MS)
        ));
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_bound_is_one_hundred_years() {
        assert_eq!(parse_millis("100y"), Ok(MAX_DURATION_MS));
        assert_eq!(format_millis(MAX_DURATION_MS), "100years");
        let error = parse_millis("10000y").unwrap_err();
        assert!(
            error.contains("10000y") && error.contains("100years"),
            "{error}"
        );
        assert!(parse_millis("101y").is_err());
        assert!(parse_millis("99999999999999999999999h").is_err());
        assert!(check_millis("grace_ms", u64::MAX).is_err());
        assert_eq!(check_millis("grace_ms", 250), Ok(250));
    }

    #[test]
    fn zero_is_refused_only_for_lifetimes() {
        assert_eq!(parse_millis("0s"), Ok(0));
        assert!(parse_positive_millis("0s").is_err());
        assert_eq!(parse_positive_millis("1ms"), Ok(1));
    }

    /// What a duration flag must do with any text: a value within bounds or an error with
    /// a message, never a panic.
    fn check_any(text: &str) {
        match parse_millis(text) {
            Ok(ms) => {
                assert!(ms <= MAX_DURATION_MS, "{text:?} gave {ms}");
                assert_eq!(parse_positive_millis(text).is_ok(), ms > 0, "{text:?}");
            }
            Err(message) => {
                assert!(!message.is_empty(), "{text:?}");
                assert!(parse_positive_millis(text).is_err(), "{text:?}");
            }
        }
    }

    /// Units humantime knows, and some it does not.
    const UNITS: &[&str] = &[
        "ns", "us", "µs", "ms", "s", "sec", "m", "min", "h", "hr", "d", "days", "w", "M", "months",
        "y", "years", "", "x", "ſ", "秒",
    ];

    /// A number of up to 30 digits, possibly signed or fractional.
    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            (0u64..1000).prop_map(|n| n.to_string()),
            "[0-9]{1,30}",
            "[-+]?[0-9]{0,12}\\.?[0-9]{0,6}(e[0-9]{1,3})?",
        ]
    }

    /// Sequences of `<number><space?><unit>`, the shape humantime parses.
    fn plausible() -> impl Strategy<Value = String> {
        prop::collection::vec((number(), prop::sample::select(UNITS), "[ \t]{0,2}"), 1..4).prop_map(
            |parts| {
                parts
                    .into_iter()
                    .map(|(n, unit, space)| format!("{n}{space}{unit}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn any_text_is_a_bounded_duration_or_an_error(text in any::<String>()) {
            check_any(&text);
        }

        #[test]
        fn plausible_durations_are_bounded_or_refused(text in plausible()) {
            check_any(&text);
        }

        #[test]
        fn whole_units_convert_exactly_within_the_bound(n in 0u64..1_000_000, unit in 0usize..4) {
            let (suffix, ms) = [("ms", 1u64), ("s", 1000), ("h", 3_600_000), ("y", 31_557_600_000)][unit];
            let expected = n.checked_mul(ms).filter(|&v| v <= MAX_DURATION_MS);
            prop_assert_eq!(parse_millis(&format!("{n}{suffix}")).ok(), expected);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 40,
            max_shrink_iters: 0,
            ..ProptestConfig::default()
        })]

        /// 40 000 more, from a fast generator seeded by proptest: numbers of every size
        /// glued to units, signs, spaces and stray characters.
        #[test]
        fn many_generated_durations_are_bounded_or_refused(seed in any::<[u8; 16]>()) {
            use proptest::prelude::RngExt;
            let mut rng = proptest::test_runner::TestRng::from_seed(
                proptest::test_runner::RngAlgorithm::XorShift,
                &seed,
            );
            const NOISE: &[&str] = &[" ", "", "-", "+", ".", "e", "\u{0}", "\t", "1", "ms5"];
            for _ in 0..1000 {
                let mut text = String::new();
                for _ in 0..rng.random_range(1..4) {
                    let digits = rng.random_range(0..=24u32);
                    let n: u128 = rng.random::<u128>() % 10u128.pow(digits.min(38));
                    text.push_str(NOISE[rng.random_range(0..NOISE.len())]);
                    text.push_str(&n.to_string());
                    text.push_str(UNITS[rng.random_range(0..UNITS.len())]);
                }
                check_any(&text);
            }
        }
    }
}
