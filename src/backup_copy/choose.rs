//! Which backup directory a restore with a recovery target starts from, when the operator did
//! not say (`restore --target-… ` without `--from`), and why (S-8.1).
//!
//! Owns: [`choose`] (pure: candidates in, [`Choice`] with a one-line reason out),
//! [`RecoveryTarget`], and the zoned time text pgbak accepts ([`parse_zoned_time`]) and prints
//! ([`format_utc`]).
//!
//! Rules: for a time or LSN target, the newest base backup that ended at or before the target
//! (replay can only stop after consistency, which is the backup's end); for a restore point name
//! or a transaction ID, whose position is unknown until replay, the oldest base backup whose WAL
//! chain is whole (it reaches every later point the archive holds); for `--target-immediate`,
//! the newest. A base whose stop time is unknown (no backup history file, or a zone
//! abbreviation pgbak does not guess, see `backup_history`) is never chosen for a time target.
//!
//! Time text: `YYYY-MM-DD HH:MM:SS[.fraction]` (or `T` between date and time) followed by a
//! zone that is explicit: `Z`, `UTC`, `GMT`, or an offset `+HH`, `+HHMM`, `+HH:MM` (and `-`).
//! Without a zone the text is refused: pgbak compares it with the backups' stop times, and the
//! server's `TimeZone` that PostgreSQL would apply is not known here.

use super::backup_history::BackupHistory;
use super::catalog::{WalIndex, base_backup_history};
use super::chain::{BasePosition, ChainTarget, TimelineChoice, check_chain};
use super::error::BackupCopyError;
use super::history::TimelineHistory;
use super::lsn::{Lsn, SegmentSize};
use super::source::Source;
use crate::timestamp::{DirectoryName, UnixMillis};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Why a time text is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeProblem {
    #[error("expected YYYY-MM-DD HH:MM:SS followed by a zone")]
    Syntax,
    #[error("no valid date and time of day (month, day, hour, minute or second out of range)")]
    OutOfRange,
    #[error("no time zone (add +00, Z or UTC, or the offset the time is in)")]
    NoZone,
    #[error("time zone {0:?} is an abbreviation pgbak does not resolve")]
    UnknownZone(String),
}

/// Digits of a fraction of a second that are read (nanoseconds); more is refused.
const FRACTION_DIGITS_MAX: usize = 9;
/// A numeric offset may be at most this many hours (PostgreSQL allows up to 15:59).
const OFFSET_HOURS_MAX: i64 = 15;

fn all_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// The offset east of UTC in seconds of a zone text, or why it is not one.
fn zone_offset_seconds(zone: &str) -> Result<i64, TimeProblem> {
    if ["Z", "UTC", "GMT"]
        .iter()
        .any(|z| zone.eq_ignore_ascii_case(z))
    {
        return Ok(0);
    }
    let (sign, digits) = match zone.as_bytes().first() {
        Some(b'+') => (1, &zone[1..]),
        Some(b'-') => (-1, &zone[1..]),
        _ if zone.bytes().all(|b| b.is_ascii_alphabetic()) => {
            return Err(TimeProblem::UnknownZone(zone.to_owned()));
        }
        _ => return Err(TimeProblem::Syntax),
    };
    let (hours, minutes) = match (digits.len(), digits.split_once(':')) {
        (_, Some((hours, minutes))) => (hours, minutes),
        (2, None) => (digits, "0"),
        (4, None) => (&digits[..2], &digits[2..]),
        _ => return Err(TimeProblem::Syntax),
    };
    if hours.len() != 2 || minutes.len() > 2 || !all_digits(hours) || !all_digits(minutes) {
        return Err(TimeProblem::Syntax);
    }
    let (hours, minutes): (i64, i64) = (
        hours.parse().map_err(|_| TimeProblem::Syntax)?,
        minutes.parse().map_err(|_| TimeProblem::Syntax)?,
    );
    if hours > OFFSET_HOURS_MAX || minutes > 59 {
        return Err(TimeProblem::OutOfRange);
    }
    Ok(sign * (hours * 3600 + minutes * 60))
}

/// Parses a time with an explicit zone (see the module header) into milliseconds since the
/// epoch; fractions of a millisecond are dropped.
pub fn parse_zoned_time(text: &str) -> Result<UnixMillis, TimeProblem> {
    let text = text.trim();
    if !text.is_ascii() || text.len() < 19 {
        return Err(TimeProblem::Syntax);
    }
    let (date, separator, clock, rest) = (&text[..10], &text[10..11], &text[11..19], &text[19..]);
    let date_fields: Vec<&str> = date.split('-').collect();
    let clock_fields: Vec<&str> = clock.split(':').collect();
    let shaped = |fields: &[&str], lengths: [usize; 3]| {
        fields.len() == 3
            && fields
                .iter()
                .zip(lengths)
                .all(|(f, n)| f.len() == n && all_digits(f))
    };
    if !(separator == " " || separator == "T")
        || !shaped(&date_fields, [4, 2, 2])
        || !shaped(&clock_fields, [2, 2, 2])
    {
        return Err(TimeProblem::Syntax);
    }
    let (mut millis, mut zone) = (0u64, rest);
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > FRACTION_DIGITS_MAX {
            return Err(TimeProblem::Syntax);
        }
        let padded = format!("{:0<3}", &fraction[..digits.min(3)]);
        millis = padded.parse().map_err(|_| TimeProblem::Syntax)?;
        zone = &fraction[digits..];
    }
    let zone = zone.trim_start();
    if zone.is_empty() {
        return Err(TimeProblem::NoZone);
    }
    let offset = zone_offset_seconds(zone)?;
    // The calendar rules live in one place: the directory-name parser checks the date.
    let compact = format!("{}T{}Z", date_fields.concat(), clock_fields.concat());
    let local = DirectoryName::parse(&compact).ok_or(TimeProblem::OutOfRange)?;
    let seconds = i64::try_from(local.0).map_err(|_| TimeProblem::OutOfRange)? - offset;
    let seconds = u64::try_from(seconds).map_err(|_| TimeProblem::OutOfRange)?;
    Ok(UnixMillis(seconds * 1000 + millis))
}

/// `2026-12-02 14:03:05 UTC` (with `.123` when there are milliseconds): how reasons and
/// reports print a time.
pub fn format_utc(at: UnixMillis) -> String {
    let rfc3339 = at.to_rfc3339(); // 2026-11-24T15:43:07.123Z
    let fraction = if at.0 % 1000 == 0 {
        ""
    } else {
        &rfc3339[19..23]
    };
    format!("{} {}{fraction} UTC", &rfc3339[..10], &rfc3339[11..19])
}

/// The resolution of a backup history file's `STOP TIME` (whole seconds).
const STOP_TIME_RESOLUTION_MS: u64 = 1000;

/// What the restore is asked to stop at (`--target-…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    Time(UnixMillis),
    Lsn(Lsn),
    Name(String),
    Xid(String),
    Immediate,
}

/// A backup directory with a base backup, as [`choose`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: DirectoryName,
    pub path: PathBuf,
    /// Its base backup's backup history file, if one was found.
    pub history: Option<BackupHistory>,
    /// Whether the WAL from its start to the newest segment is all there (see `chain`).
    pub chain_whole: bool,
}

/// The directory to restore from and why, in one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub name: DirectoryName,
    pub path: PathBuf,
    pub reason: String,
}

fn chosen(candidate: &Candidate, reason: String) -> Choice {
    Choice {
        name: candidate.name,
        path: candidate.path.clone(),
        reason: format!("{}: {reason}", candidate.name),
    }
}

/// Picks the directory for `target` among `candidates` (any order).
pub fn choose(
    candidates: &[Candidate],
    target: &RecoveryTarget,
) -> Result<Choice, BackupCopyError> {
    let mut newest_first: Vec<&Candidate> = candidates.iter().collect();
    newest_first.sort_by_key(|c| std::cmp::Reverse(c.name));
    let none_before = |target: String, stops: Vec<String>| BackupCopyError::NoBaseBeforeTarget {
        target,
        known_stops: stops.len(),
        oldest_stop: stops.last().cloned(),
    };
    match target {
        RecoveryTarget::Time(at) => {
            let stop = |c: &Candidate| c.history.as_ref().and_then(|h| h.stop_time.clone());
            let unknown = newest_first
                .iter()
                .filter(|c| stop(c).and_then(|t| t.exact()).is_none());
            let skipped = unknown.count();
            // `STOP TIME` is printed in whole seconds, cut off: the backup ended somewhere in
            // [stop, stop + 1 s). Only a base that surely ended at or before the target will
            // do; PostgreSQL refuses a target before the backup's end.
            let found = newest_first.iter().find(|c| {
                stop(c)
                    .and_then(|t| t.exact())
                    .is_some_and(|stop| stop.plus_millis(STOP_TIME_RESOLUTION_MS) <= *at)
            });
            let Some(candidate) = found else {
                let stops = newest_first
                    .iter()
                    .filter_map(|c| stop(c)?.exact())
                    .map(format_utc);
                return Err(none_before(format_utc(*at), stops.collect()));
            };
            let skipped = if skipped == 0 {
                String::new()
            } else {
                format!(" ({skipped} base backup(s) without a known stop time not considered)")
            };
            Ok(chosen(
                candidate,
                format!(
                    "the newest base backup that ended ({}) at or before the target ({}){skipped}",
                    stop(candidate).expect("found by its stop time"),
                    format_utc(*at)
                ),
            ))
        }
        RecoveryTarget::Lsn(lsn) => {
            let stop = |c: &Candidate| c.history.as_ref().and_then(|h| h.stop);
            let Some(candidate) = newest_first
                .iter()
                .find(|c| stop(c).is_some_and(|s| s <= *lsn))
            else {
                let stops = newest_first
                    .iter()
                    .filter_map(|c| stop(c))
                    .map(|s| s.to_string());
                return Err(none_before(lsn.to_string(), stops.collect()));
            };
            Ok(chosen(
                candidate,
                format!(
                    "the newest base backup that ended ({}) at or before the target ({lsn})",
                    stop(candidate).expect("found by its stop LSN")
                ),
            ))
        }
        RecoveryTarget::Name(_) | RecoveryTarget::Xid(_) => {
            let what = if matches!(target, RecoveryTarget::Name(_)) {
                "a restore point"
            } else {
                "a transaction ID"
            };
            let candidate = newest_first.iter().rev().find(|c| c.chain_whole).ok_or(
                BackupCopyError::NoWholeChain {
                    candidates: candidates.len(),
                },
            )?;
            Ok(chosen(
                candidate,
                format!(
                    "the oldest base backup whose WAL chain is whole ({what} has no known position before replay)"
                ),
            ))
        }
        RecoveryTarget::Immediate => {
            let candidate = newest_first
                .first()
                .ok_or(BackupCopyError::NoWholeChain { candidates: 0 })?;
            Ok(chosen(
                candidate,
                "the newest base backup (--target-immediate)".to_owned(),
            ))
        }
    }
}

/// The candidates of `source` for [`choose`]: every directory with a base backup and a
/// `TIMESTAMP` name, with its backup history file and whether its chain to the newest WAL on
/// `timeline` is whole (a base without a backup history file has no known start: not whole).
pub fn gather_candidates(
    source: &Source,
    index: &WalIndex,
    histories: &BTreeMap<u32, TimelineHistory>,
    segment_size: SegmentSize,
    timeline: TimelineChoice,
) -> Result<Vec<Candidate>, BackupCopyError> {
    let mut candidates = Vec::new();
    for directory in source.bases() {
        let Some(name) = directory.name else {
            continue;
        };
        let history = base_backup_history(&directory.path)?.map(|(_, history)| history);
        let chain_whole = match &history {
            Some(history) => check_chain(
                index,
                histories,
                segment_size,
                &BasePosition::from(history),
                ChainTarget::Newest,
                timeline,
            )
            .is_ok_and(|chain| chain.is_whole()),
            None => false,
        };
        candidates.push(Candidate {
            name,
            path: directory.path.clone(),
            history,
            chain_whole,
        });
    }
    Ok(candidates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup_copy::backup_history::BackupTime;

    fn at(text: &str) -> UnixMillis {
        parse_zoned_time(text).unwrap()
    }

    #[test]
    fn accepts_every_explicit_zone_form() {
        let utc = at("2026-12-02 14:03:00Z");
        assert_eq!(utc.to_rfc3339(), "2026-12-02T14:03:00.000Z");
        for text in [
            "2026-12-02 14:03:00+00",
            "2026-12-02 14:03:00 UTC",
            "2026-12-02T14:03:00 utc",
            "2026-12-02 14:03:00 GMT",
            "2026-12-02 15:03:00+01:00",
            "2026-12-02 15:03:00+0100",
            "2026-12-02 13:03:00-01",
            "2026-12-02 19:33:00+05:30",
            "  2026-12-02 14:03:00 +00  ",
        ] {
            assert_eq!(parse_zoned_time(text), Ok(utc), "{text}");
        }
        assert_eq!(at("2026-12-02 14:03:00.25+00").0, utc.0 + 250);
        assert_eq!(at("2026-12-02 14:03:00.123456789Z").0, utc.0 + 123);
        // The offset may carry a day across midnight.
        assert_eq!(
            at("2026-12-03 00:30:00+01").to_rfc3339(),
            "2026-12-02T23:30:00.000Z"
        );
    }

    #[test]
    fn refuses_a_time_without_an_explicit_zone() {
        assert_eq!(
            parse_zoned_time("2026-12-02 14:03:00"),
            Err(TimeProblem::NoZone)
        );
        assert_eq!(
            parse_zoned_time("2026-12-02 14:03:00.5"),
            Err(TimeProblem::NoZone)
        );
        assert_eq!(
            parse_zoned_time("2026-12-02 14:03:00 CET"),
            Err(TimeProblem::UnknownZone("CET".to_owned()))
        );
        for text in [
            "",
            "2026-12-02",
            "2026-12-02 14:03Z",
            "2026/12/02 14:03:00Z",
            "2026-12-02 14:03:00.Z",
            "2026-12-02 14:03:00.1234567890Z",
            "2026-12-02 14:03:00+1",
            "2026-12-02 14:03:00+01:0x",
            "2026-12-02 14:03:00 +01 extra",
            "2026-12-02 14:03:00 €",
        ] {
            assert_eq!(parse_zoned_time(text), Err(TimeProblem::Syntax), "{text:?}");
        }
        for text in [
            "2026-02-30 14:03:00Z",
            "2026-12-02 24:00:00Z",
            "2026-12-02 14:03:00+16",
        ] {
            assert_eq!(
                parse_zoned_time(text),
                Err(TimeProblem::OutOfRange),
                "{text:?}"
            );
        }
    }

    #[test]
    fn formats_times_for_reasons() {
        assert_eq!(
            format_utc(at("2026-12-02 14:03:05Z")),
            "2026-12-02 14:03:05 UTC"
        );
        assert_eq!(
            format_utc(at("2026-12-02 14:03:05.5Z")),
            "2026-12-02 14:03:05.500 UTC"
        );
    }

    fn candidate(name: &str, stop_time: Option<&str>, stop: u64, whole: bool) -> Candidate {
        let history = stop_time.map(|time| BackupHistory {
            start: Lsn(stop - 0x100),
            start_timeline: 1,
            stop: Some(Lsn(stop)),
            stop_timeline: Some(1),
            checkpoint: None,
            start_time: None,
            stop_time: Some(match parse_zoned_time(time) {
                Ok(at) => BackupTime::Exact(at),
                Err(_) => BackupTime::Unknown(time.to_owned()),
            }),
            label: None,
        });
        Candidate {
            name: DirectoryName::parse(name).unwrap(),
            path: PathBuf::from("/backups").join(name),
            history,
            chain_whole: whole,
        }
    }

    fn three() -> Vec<Candidate> {
        vec![
            candidate(
                "20261203T000000Z",
                Some("2026-12-03 00:00:09 UTC"),
                0x900_0000,
                true,
            ),
            candidate(
                "20261201T000000Z",
                Some("2026-12-01 00:00:05 UTC"),
                0x200_0000,
                false,
            ),
            candidate(
                "20261202T140300Z",
                Some("2026-12-02 14:03:05 UTC"),
                0x500_0000,
                true,
            ),
        ]
    }

    #[test]
    fn a_time_target_picks_the_newest_base_that_ended_before_it() {
        let choice = choose(&three(), &RecoveryTarget::Time(at("2026-12-02 14:10:00Z"))).unwrap();
        assert_eq!(
            choice.reason,
            "20261202T140300Z: the newest base backup that ended (2026-12-02 14:03:05 UTC) at or \
             before the target (2026-12-02 14:10:00 UTC)"
        );
        assert_eq!(choice.path, PathBuf::from("/backups/20261202T140300Z"));
        // STOP TIME is cut to whole seconds: a target within that second may lie before the
        // backup's real end, so the older base is taken; one second later qualifies.
        let same_second = RecoveryTarget::Time(at("2026-12-02 14:03:05.500Z"));
        assert_eq!(
            choose(&three(), &same_second).unwrap().name.to_string(),
            "20261201T000000Z"
        );
        let a_second_later = RecoveryTarget::Time(at("2026-12-02 14:03:06Z"));
        assert_eq!(
            choose(&three(), &a_second_later).unwrap().name.to_string(),
            "20261202T140300Z"
        );
        let early = RecoveryTarget::Time(at("2026-11-30 00:00:00Z"));
        let error = choose(&three(), &early).unwrap_err();
        assert!(
            error.to_string().contains("2026-11-30 00:00:00 UTC"),
            "{error}"
        );
    }

    #[test]
    fn a_base_with_an_unknown_stop_time_is_not_chosen_for_a_time_target() {
        let mut candidates = three();
        candidates.push(candidate(
            "20261202T150000Z",
            Some("2026-12-02 16:00:05 CET"),
            0x600_0000,
            true,
        ));
        candidates.push(candidate("20261202T160000Z", None, 0x700_0000, true));
        let choice = choose(
            &candidates,
            &RecoveryTarget::Time(at("2026-12-02 18:00:00Z")),
        )
        .unwrap();
        assert!(
            choice.reason.starts_with("20261202T140300Z: "),
            "{}",
            choice.reason
        );
        assert!(
            choice
                .reason
                .ends_with("(2 base backup(s) without a known stop time not considered)")
        );
        assert!(!choice.reason.contains('\n'));
    }

    #[test]
    fn an_lsn_target_compares_stop_lsns() {
        let choice = choose(&three(), &RecoveryTarget::Lsn(Lsn(0x800_0000))).unwrap();
        assert_eq!(choice.name.to_string(), "20261202T140300Z");
        assert!(
            choice
                .reason
                .contains("(0/5000000) at or before the target (0/8000000)")
        );
        assert!(choose(&three(), &RecoveryTarget::Lsn(Lsn(0x100_0000))).is_err());
    }

    #[test]
    fn names_and_xids_take_the_oldest_whole_chain_and_immediate_the_newest() {
        let name = choose(&three(), &RecoveryTarget::Name("before upgrade".into())).unwrap();
        assert_eq!(name.name.to_string(), "20261202T140300Z");
        let xid = choose(&three(), &RecoveryTarget::Xid("1234".into())).unwrap();
        assert!(xid.reason.contains("a transaction ID"), "{}", xid.reason);
        let newest = choose(&three(), &RecoveryTarget::Immediate).unwrap();
        assert_eq!(newest.name.to_string(), "20261203T000000Z");
        assert!(choose(&[], &RecoveryTarget::Immediate).is_err());
    }

    #[test]
    fn candidates_come_from_the_bases_and_their_backup_history_files() {
        use crate::backup_copy::catalog::fixture::stored;
        let scratch = crate::test_support::ScratchDirectory::new("choose-gather");
        let backup = |start: &str, segment: &str| {
            format!(
                "START WAL LOCATION: {start} (file {segment})\nSTOP WAL LOCATION: {start} (file {segment})\nSTART TIMELINE: 1\nSTOP TIME: 2026-12-02 14:03:05 UTC\n"
            )
        };
        let old = scratch.0.join("20261201T000000Z");
        let new = scratch.0.join("20261202T000000Z");
        stored(
            &old,
            "000000010000000000000002.00000028.backup",
            backup("0/2000028", "000000010000000000000002").as_bytes(),
        );
        stored(&old, "000000010000000000000002", b"two");
        stored(
            &new,
            "000000010000000000000004.00000028.backup",
            backup("0/4000028", "000000010000000000000004").as_bytes(),
        );
        stored(&new, "000000010000000000000004", b"four");
        for directory in [&old, &new] {
            std::fs::write(directory.join("base.tzst"), b"base").unwrap();
        }
        let source = Source::resolve(Some(&scratch.0), None).unwrap();
        let index = WalIndex::build(&source.pool()).unwrap();
        let candidates = gather_candidates(
            &source,
            &index,
            &BTreeMap::new(),
            SegmentSize::DEFAULT,
            TimelineChoice::Latest,
        )
        .unwrap();
        let whole: Vec<(String, bool)> = candidates
            .iter()
            .map(|c| (c.name.to_string(), c.chain_whole))
            .collect();
        // The older base misses segment 3 on its way to the newest segment.
        assert_eq!(
            whole,
            [
                ("20261202T000000Z".to_owned(), true),
                ("20261201T000000Z".to_owned(), false)
            ]
        );
        let choice = choose(&candidates, &RecoveryTarget::Name("x".into())).unwrap();
        assert_eq!(choice.name.to_string(), "20261202T000000Z");
    }
}
