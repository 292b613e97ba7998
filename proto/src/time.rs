//! Timestamps on the wire: RFC 3339 in UTC with milliseconds. Formatting can never fail or
//! panic, whatever instant it is given: RFC 3339 has four-digit years, so instants outside
//! 1970..=9999 are clamped to the nearest representable one.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The last instant RFC 3339 can write: 9999-12-31T23:59:59.999Z.
const LAST_SECOND: u64 = 253_402_300_799;

/// `at` as RFC 3339 (`2024-05-01T12:00:00.123Z`), clamped to 1970-01-01..9999-12-31.
pub fn format_rfc3339(at: SystemTime) -> String {
    Rfc3339(at).to_string()
}

/// An instant that displays and serializes as [`format_rfc3339`] writes it, without a
/// `String` of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfc3339(pub SystemTime);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = UNIX_EPOCH + Duration::from_millis(LAST_SECOND * 1000 + 999);
        let clamped = self.0.clamp(UNIX_EPOCH, last);
        fmt::Display::fmt(&humantime::format_rfc3339_millis(clamped), f)
    }
}

impl serde::Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_ordinary_instants() {
        let at = UNIX_EPOCH + Duration::from_millis(1_714_564_800_123);
        assert_eq!(format_rfc3339(at), "2024-05-01T12:00:00.123Z");
    }

    #[test]
    fn never_panics_past_the_year_9999_or_before_1970() {
        let far = UNIX_EPOCH + Duration::from_secs(u64::MAX / 4);
        assert_eq!(format_rfc3339(far), "9999-12-31T23:59:59.999Z");
        let early = UNIX_EPOCH - Duration::from_secs(3600);
        assert_eq!(format_rfc3339(early), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn serializes_as_the_formatted_string() {
        let at = UNIX_EPOCH + Duration::from_millis(1_714_564_800_123);
        assert_eq!(
            serde_json::to_string(&Rfc3339(at)).unwrap(),
            "\"2024-05-01T12:00:00.123Z\""
        );
    }
}
