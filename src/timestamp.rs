//! Points in time as the machine sees them, and the `TIMESTAMP` text form of S-1.2.
//!
//! Owns: [`UnixMillis`] (milliseconds since the Unix epoch, UTC) and [`DirectoryName`] (a backup
//! directory's name, whole seconds, printed as `20261124T154307Z`).
//!
//! Invariants: both are plain integers, so they are totally ordered, cheap to copy and encode
//! identically on every machine. Formatting and parsing are exact inverses for every value in the
//! supported range (years 1970 ..= 9999); nothing here reads the clock — callers pass `now`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Milliseconds since 1970-01-01T00:00:00Z. The machine's only notion of time.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    pub const fn from_seconds(seconds: u64) -> Self {
        UnixMillis(seconds.saturating_mul(1000))
    }

    pub const fn seconds(self) -> u64 {
        self.0 / 1000
    }

    /// `self + delta`, saturating: a far-future retry time is still a valid time.
    pub const fn plus_millis(self, delta_ms: u64) -> Self {
        UnixMillis(self.0.saturating_add(delta_ms))
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later (clocks may step back).
    pub const fn millis_since(self, earlier: UnixMillis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// The `TIMESTAMP` form of this instant, truncated to whole seconds.
    pub fn to_timestamp_string(self) -> String {
        DirectoryName::from_millis(self).to_string()
    }

    /// RFC 3339 with milliseconds, for humans and `status --json`: `2026-11-24T15:43:07.123Z`.
    pub fn to_rfc3339(self) -> String {
        let (year, month, day, hour, minute, second) = civil_from_seconds(self.seconds());
        format!(
            "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{:03}Z",
            self.0 % 1000
        )
    }
}

/// A backup directory's name: whole seconds since the epoch, printed as `20261124T154307Z`
/// (S-1.2: UTC, ISO-8601 basic, sortable, no colons). Ordering by value is ordering by name.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct DirectoryName(pub u64);

/// Length of `YYYYMMDDTHHMMSSZ`.
pub const TIMESTAMP_TEXT_LENGTH: usize = 16;

/// The last second we can print in four-digit years: 9999-12-31T23:59:59Z.
pub const LAST_SUPPORTED_SECOND: u64 = 253_402_300_799;

impl DirectoryName {
    pub const fn from_millis(at: UnixMillis) -> Self {
        DirectoryName(at.seconds())
    }

    pub const fn as_millis(self) -> UnixMillis {
        UnixMillis::from_seconds(self.0)
    }

    /// Parses exactly `YYYYMMDDTHHMMSSZ`; anything else (other lengths, lower case, invalid
    /// dates such as February 30th) is `None`, so stray directories are never mistaken for ours.
    pub fn parse(text: &str) -> Option<DirectoryName> {
        let bytes = text.as_bytes();
        if bytes.len() != TIMESTAMP_TEXT_LENGTH || bytes[8] != b'T' || bytes[15] != b'Z' {
            return None;
        }
        let digits = |range: std::ops::Range<usize>| -> Option<u64> {
            let mut value = 0u64;
            for &b in &bytes[range] {
                if !b.is_ascii_digit() {
                    return None;
                }
                value = value * 10 + u64::from(b - b'0');
            }
            Some(value)
        };
        let year = digits(0..4)?;
        let month = digits(4..6)?;
        let day = digits(6..8)?;
        let hour = digits(9..11)?;
        let minute = digits(11..13)?;
        let second = digits(13..15)?;
        if year < 1970
            || !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return None;
        }
        let days = days_from_civil(year, month, day);
        Some(DirectoryName(
            days * 86_400 + hour * 3600 + minute * 60 + second,
        ))
    }
}

impl fmt::Display for DirectoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day, hour, minute, second) = civil_from_seconds(self.0);
        write!(
            f,
            "{year:04}{month:02}{day:02}T{hour:02}{minute:02}{second:02}Z"
        )
    }
}

fn is_leap_year(year: u64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`,
/// restricted to dates from 1970 on, so all arithmetic stays unsigned).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year - era * 400;
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// (year, month, day, hour, minute, second) of a second count since the epoch. Seconds past
/// year 9999 are clamped to its last second so the text form always has four year digits.
fn civil_from_seconds(seconds: u64) -> (u64, u64, u64, u64, u64, u64) {
    let seconds = seconds.min(LAST_SUPPORTED_SECOND);
    let days = seconds / 86_400;
    let second_of_day = seconds % 86_400;
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (
        year,
        month,
        day,
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_instants_print_in_s_1_2_form() {
        assert_eq!(DirectoryName(0).to_string(), "19700101T000000Z");
        // 2026-11-24T15:43:07Z, the example of S-1.2 in docs/spec.md.
        assert_eq!(DirectoryName(1_795_534_987).to_string(), "20261124T154307Z");
        assert_eq!(DirectoryName(951_782_400).to_string(), "20000229T000000Z");
        assert_eq!(
            UnixMillis(1_795_534_987_123).to_rfc3339(),
            "2026-11-24T15:43:07.123Z"
        );
    }

    #[test]
    fn parse_refuses_near_misses() {
        for text in [
            "",
            "20261124T154307",
            "20261124t154307Z",
            "20261124T154307Z ",
            "2026-11-24T15:43:07Z",
            "20260230T000000Z",
            "20261124T246000Z",
            "19691231T235959Z",
            "2026112aT154307Z",
        ] {
            assert_eq!(DirectoryName::parse(text), None, "{text:?}");
        }
    }

    proptest! {
        #[test]
        fn directory_names_round_trip_through_text(seconds in 0..=LAST_SUPPORTED_SECOND) {
            let name = DirectoryName(seconds);
            let text = name.to_string();
            prop_assert_eq!(text.len(), TIMESTAMP_TEXT_LENGTH);
            prop_assert_eq!(DirectoryName::parse(&text), Some(name));
        }

        #[test]
        fn text_order_is_time_order(a in 0..=LAST_SUPPORTED_SECOND, b in 0..=LAST_SUPPORTED_SECOND) {
            let (ta, tb) = (DirectoryName(a).to_string(), DirectoryName(b).to_string());
            prop_assert_eq!(a.cmp(&b), ta.cmp(&tb));
        }
    }
}
