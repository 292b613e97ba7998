//! Time for the tables: reading the daemon's RFC 3339 timestamps (always UTC, written by
//! `humantime`) and writing ages and sizes the way `ps` and `docker ps` do.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch of a UTC RFC 3339 timestamp such as
/// `2024-05-01T12:00:00.5Z`; `None` if it is not one.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let at = humantime::parse_rfc3339(text).ok()?;
    let secs = at.duration_since(UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

/// Now, in seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// An age in seconds, written in at most two units, coarse enough to scan in a column:
/// `45s`, `12m`, `3h12m`, `2d4h`. A negative age (clocks disagree) shows as `0s`.
pub struct Age(pub i64);

impl fmt::Display for Age {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.max(0);
        match s {
            0..=59 => write!(f, "{s}s"),
            60..=3599 => write!(f, "{}m", s / 60),
            3600..=86_399 => write!(f, "{}h{}m", s / 3600, s % 3600 / 60),
            _ => write!(f, "{}d{}h", s / 86_400, s % 86_400 / 3600),
        }
    }
}

/// A byte count, written in binary units, `ps`-style: `900B`, `512K`, `1.5M`, `12M`,
/// `2.0G`: one decimal below 10 of a unit, rounded to the nearest (in integers: a listing
/// formats thousands of these).
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
        if self.0 < 1024 {
            return write!(f, "{}B", self.0);
        }
        let bytes = u128::from(self.0);
        let mut unit = 0;
        let mut size = 1024u128;
        while bytes >= size * 1024 && unit + 1 < UNITS.len() {
            size *= 1024;
            unit += 1;
        }
        let tenths = (bytes * 10 + size / 2) / size;
        if tenths < 100 {
            write!(f, "{}.{}{}", tenths / 10, tenths % 10, UNITS[unit])
        } else {
            write!(f, "{}{}", (bytes + size / 2) / size, UNITS[unit])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utc_timestamps() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2000-03-01T00:00:00Z"), Some(951_868_800));
        assert_eq!(
            parse_rfc3339("2024-05-01T12:00:00.123456789Z"),
            Some(1_714_564_800)
        );
    }

    #[test]
    fn refuses_what_is_not_rfc3339() {
        for bad in [
            "",
            "yesterday",
            "2024-05-01",
            "2024-13-01T12:00:00Z",
            "2024-05-01T12:00:00+0200",
            "２０２4-05-01T12:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn ages_use_at_most_two_units() {
        assert_eq!(Age(-5).to_string(), "0s");
        assert_eq!(Age(45).to_string(), "45s");
        assert_eq!(Age(12 * 60 + 59).to_string(), "12m");
        assert_eq!(Age(3 * 3600 + 12 * 60).to_string(), "3h12m");
        assert_eq!(Age(2 * 86_400 + 4 * 3600 + 59).to_string(), "2d4h");
    }

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(Bytes(900).to_string(), "900B");
        assert_eq!(Bytes(512 * 1024).to_string(), "512K");
        assert_eq!(Bytes(1536 * 1024).to_string(), "1.5M");
        assert_eq!(Bytes(12 * 1024 * 1024).to_string(), "12M");
        assert_eq!(Bytes(2 << 30).to_string(), "2.0G");
        assert_eq!(Bytes(1023 * 1024).to_string(), "1023K");
        assert_eq!(
            Bytes(10 * 1024 - 1).to_string(),
            "10K",
            "9.999K rounds to 10K"
        );
        assert_eq!(Bytes(1024 + 51).to_string(), "1.0K");
        assert_eq!(Bytes(1024 + 52).to_string(), "1.1K");
        assert_eq!(Bytes(u64::MAX).to_string(), "16384P");
    }
}
