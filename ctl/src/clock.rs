//! Time for the tables: reading the daemon's RFC 3339 timestamps (always UTC, written by
//! `humantime`) and writing ages and sizes the way `ps` and `docker ps` do.

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

/// An age in at most two units, coarse enough to scan in a column: `45s`, `12m`, `3h12m`,
/// `2d4h`. A negative age (clocks disagree) shows as `0s`.
pub fn format_age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// A byte count in binary units, `ps`-style: `900B`, `512K`, `1.5M`, `12M`, `2.0G`: one
/// decimal below 10 of a unit, rounded to the nearest (in integers: a listing formats
/// thousands of these).
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let bytes = u128::from(bytes);
    let mut unit = 0;
    let mut size = 1024u128;
    while bytes >= size * 1024 && unit + 1 < UNITS.len() {
        size *= 1024;
        unit += 1;
    }
    let tenths = (bytes * 10 + size / 2) / size;
    if tenths < 100 {
        format!("{}.{}{}", tenths / 10, tenths % 10, UNITS[unit])
    } else {
        format!("{}{}", (bytes + size / 2) / size, UNITS[unit])
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
        assert_eq!(format_age(-5), "0s");
        assert_eq!(format_age(45), "45s");
        assert_eq!(format_age(12 * 60 + 59), "12m");
        assert_eq!(format_age(3 * 3600 + 12 * 60), "3h12m");
        assert_eq!(format_age(2 * 86_400 + 4 * 3600 + 59), "2d4h");
    }

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(format_bytes(900), "900B");
        assert_eq!(format_bytes(512 * 1024), "512K");
        assert_eq!(format_bytes(1536 * 1024), "1.5M");
        assert_eq!(format_bytes(12 * 1024 * 1024), "12M");
        assert_eq!(format_bytes(2 << 30), "2.0G");
        assert_eq!(format_bytes(1023 * 1024), "1023K");
        assert_eq!(format_bytes(10 * 1024 - 1), "10K", "9.999K rounds to 10K");
        assert_eq!(format_bytes(1024 + 51), "1.0K");
        assert_eq!(format_bytes(1024 + 52), "1.1K");
        assert_eq!(format_bytes(u64::MAX), "16384P");
    }
}
