//! Human durations (`500ms`, `5s`, `2m`) for flags and config, and the millisecond integers
//! the wire uses.

use std::time::Duration;

/// Parses a duration with a unit, such as `500ms`, `5s`, `2m` or `1h 30m`.
///
/// A bare number is rejected rather than guessed at: `5` could mean seconds or milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "duration `{text}` has no unit; write e.g. `{text}ms` or `{text}s`"
        ));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("invalid duration `{text}` ({e}); write e.g. `500ms`, `5s` or `2m`"))
}

/// The longest duration any request field may carry (`ttl_ms`, `grace_ms`, a lease's
/// `ttl_ms`, ...): 100 years. Every deadline the daemon computes from a request stays a
/// representable date, far before the year 9999 that RFC 3339 timestamps end at.
pub const MAX_DURATION_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// Checks a request's millisecond field against [`MAX_DURATION_MS`]; the error names the
/// field and the bound.
pub fn check_millis(field: &str, ms: u64) -> Result<(), String> {
    if ms > MAX_DURATION_MS {
        return Err(format!(
            "`{field}` is {ms} ms; at most {MAX_DURATION_MS} ms (100 years) is allowed"
        ));
    }
    Ok(())
}

/// A duration as whole milliseconds, saturating at `u64::MAX`.
pub fn as_millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Formats milliseconds compactly for people (`1.5s`, `250ms`, `2m`).
pub fn format_millis(ms: u64) -> String {
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_units() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(
            parse_duration(" 1h 30m ").unwrap(),
            Duration::from_secs(5400)
        );
    }

    #[test]
    fn rejects_bare_numbers_and_garbage_with_a_hint() {
        assert!(parse_duration("5").unwrap_err().contains("no unit"));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("fast").unwrap_err().contains("e.g."));
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn request_durations_are_bounded() {
        assert!(check_millis("ttl_ms", MAX_DURATION_MS).is_ok());
        let err = check_millis("ttl_ms", MAX_DURATION_MS + 1).unwrap_err();
        assert!(err.contains("ttl_ms") && err.contains("100 years"), "{err}");
        assert!(check_millis("grace_ms", u64::MAX).is_err());
    }

    #[test]
    fn formats_milliseconds_for_people() {
        assert_eq!(format_millis(1500), "1s 500ms");
        assert_eq!(format_millis(250), "250ms");
    }
}
