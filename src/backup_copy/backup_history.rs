//! Backup history files (`000000010000000000000002.00000028.backup`): where a base backup's WAL
//! starts and stops, and when.
//!
//! Owns: [`BackupHistory`], [`BackupHistory::parse`] and [`BackupTime`]. Pure: text in, fields
//! out.
//!
//! Format (PostgreSQL's `do_pg_backup_stop` writes it into the archive once the backup ends):
//! `KEY: value` lines, among them
//!
//! ```text
//! START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
//! STOP WAL LOCATION: 0/2000100 (file 000000010000000000000002)
//! CHECKPOINT LOCATION: 0/2000060
//! START TIME: 2026-12-02 14:03:00 UTC
//! LABEL: pg_basebackup base backup
//! START TIMELINE: 1
//! STOP TIME: 2026-12-02 14:03:05 UTC
//! STOP TIMELINE: 1
//! ```
//!
//! Times are printed in the server's `log_timezone` with its abbreviation (`%Z`). Invariant:
//! a time is [`BackupTime::Exact`] only when its zone is UTC, GMT or a numeric offset; any other
//! abbreviation (`CET`, `EST`, `IST`, …) is ambiguous without the zone database the server used,
//! so it is [`BackupTime::Unknown`] and never guessed. Unknown keys are ignored (new PostgreSQL
//! versions add some); only `START WAL LOCATION` is required.

use super::choose::{TimeProblem, format_utc, parse_zoned_time};
use super::lsn::Lsn;
use crate::timestamp::UnixMillis;
use crate::wal_name::WalFileName;
use std::fmt;

/// A time from a backup history file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupTime {
    Exact(UnixMillis),
    /// The text as written, when its zone cannot be placed without guessing.
    Unknown(String),
}

impl BackupTime {
    pub fn exact(&self) -> Option<UnixMillis> {
        match self {
            BackupTime::Exact(at) => Some(*at),
            BackupTime::Unknown(_) => None,
        }
    }
}

impl fmt::Display for BackupTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackupTime::Exact(at) => f.write_str(&format_utc(*at)),
            BackupTime::Unknown(text) => f.write_str(text),
        }
    }
}

/// The fields of one backup history file that a restore needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupHistory {
    pub start: Lsn,
    pub start_timeline: u32,
    pub stop: Option<Lsn>,
    pub stop_timeline: Option<u32>,
    pub checkpoint: Option<Lsn>,
    pub start_time: Option<BackupTime>,
    pub stop_time: Option<BackupTime>,
    pub label: Option<String>,
}

/// What is wrong with a backup history file: the line and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{problem}")]
pub struct BackupHistoryProblem {
    pub problem: String,
}

fn problem(text: String) -> BackupHistoryProblem {
    BackupHistoryProblem { problem: text }
}

/// `0/2000028 (file 000000010000000000000002)`: the LSN, and the timeline of the named file.
fn location(key: &str, value: &str) -> Result<(Lsn, Option<u32>), BackupHistoryProblem> {
    let (lsn_text, rest) = value.split_once(' ').unwrap_or((value, ""));
    let lsn = Lsn::parse(lsn_text)
        .ok_or_else(|| problem(format!("{key}: {lsn_text:?} is not an LSN (X/Y)")))?;
    let timeline = rest
        .trim()
        .strip_prefix("(file ")
        .and_then(|name| name.strip_suffix(')'))
        .and_then(WalFileName::parse)
        .map(|name| name.timeline());
    Ok((lsn, timeline))
}

fn time(value: &str) -> Result<BackupTime, BackupHistoryProblem> {
    match parse_zoned_time(value) {
        Ok(at) => Ok(BackupTime::Exact(at)),
        Err(TimeProblem::UnknownZone(_)) => Ok(BackupTime::Unknown(value.to_owned())),
        Err(other) => Err(problem(format!("{value:?}: {other}"))),
    }
}

fn timeline(key: &str, value: &str) -> Result<u32, BackupHistoryProblem> {
    value
        .parse()
        .map_err(|_| problem(format!("{key}: {value:?} is not a timeline ID")))
}

impl BackupHistory {
    pub fn parse(text: &str) -> Result<BackupHistory, BackupHistoryProblem> {
        let mut start = None;
        let mut history = BackupHistory {
            start: Lsn(0),
            start_timeline: 0,
            stop: None,
            stop_timeline: None,
            checkpoint: None,
            start_time: None,
            stop_time: None,
            label: None,
        };
        let mut start_timeline = None;
        for line in text.lines() {
            let Some((key, value)) = line.split_once(": ") else {
                continue;
            };
            let value = value.trim();
            match key {
                "START WAL LOCATION" => start = Some(location(key, value)?),
                "STOP WAL LOCATION" => history.stop = Some(location(key, value)?.0),
                "CHECKPOINT LOCATION" => history.checkpoint = Some(location(key, value)?.0),
                "START TIME" => history.start_time = Some(time(value)?),
                "STOP TIME" => history.stop_time = Some(time(value)?),
                "LABEL" => history.label = Some(value.to_owned()),
                "START TIMELINE" => start_timeline = Some(timeline(key, value)?),
                "STOP TIMELINE" => history.stop_timeline = Some(timeline(key, value)?),
                _ => {}
            }
        }
        let (lsn, file_timeline) =
            start.ok_or_else(|| problem("no START WAL LOCATION line".to_owned()))?;
        history.start = lsn;
        // PostgreSQL before 11 wrote no START TIMELINE; the start file's name carries it.
        history.start_timeline = start_timeline
            .or(file_timeline)
            .ok_or_else(|| problem("no START TIMELINE line and no start file name".to_owned()))?;
        Ok(history)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PostgreSQL 15 backup history file, as `pg_basebackup -X none` leaves it in the archive.
    const PG15: &str = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
        STOP WAL LOCATION: 0/2000100 (file 000000010000000000000002)\n\
        CHECKPOINT LOCATION: 0/2000060\n\
        BACKUP METHOD: streamed\n\
        BACKUP FROM: primary\n\
        START TIME: 2026-12-02 14:03:00 UTC\n\
        LABEL: pg_basebackup base backup\n\
        START TIMELINE: 1\n\
        STOP TIME: 2026-12-02 14:03:05 UTC\n\
        STOP TIMELINE: 1\n";

    #[test]
    fn reads_a_postgresql_15_backup_history_file() {
        let history = BackupHistory::parse(PG15).unwrap();
        assert_eq!(history.start, Lsn(0x200_0028));
        assert_eq!(history.stop, Some(Lsn(0x200_0100)));
        assert_eq!(history.checkpoint, Some(Lsn(0x200_0060)));
        assert_eq!(history.start_timeline, 1);
        assert_eq!(history.stop_timeline, Some(1));
        assert_eq!(history.label.as_deref(), Some("pg_basebackup base backup"));
        let stop = history.stop_time.unwrap();
        assert_eq!(stop.exact(), parse_zoned_time("2026-12-02T14:03:05Z").ok());
        assert_eq!(stop.to_string(), "2026-12-02 14:03:05 UTC");
    }

    #[test]
    fn a_zone_abbreviation_other_than_utc_is_never_guessed() {
        let text = PG15.replace("14:03:05 UTC", "15:03:05 CET");
        let history = BackupHistory::parse(&text).unwrap();
        assert_eq!(
            history.stop_time,
            Some(BackupTime::Unknown("2026-12-02 15:03:05 CET".to_owned()))
        );
        // A zone without an abbreviation is printed as an offset, which is exact.
        let text = PG15.replace("14:03:05 UTC", "17:03:05 +03");
        let history = BackupHistory::parse(&text).unwrap();
        assert_eq!(
            history.stop_time.unwrap().exact(),
            parse_zoned_time("2026-12-02 14:03:05Z").ok()
        );
    }

    #[test]
    fn the_start_timeline_falls_back_to_the_start_file_name() {
        let text = "START WAL LOCATION: 0/5000028 (file 000000030000000000000005)\n";
        let history = BackupHistory::parse(text).unwrap();
        assert_eq!(history.start_timeline, 3);
        assert_eq!(history.stop, None);
    }

    #[test]
    fn refuses_a_file_without_a_start_or_with_a_bad_field() {
        assert!(BackupHistory::parse("LABEL: x\n").is_err());
        assert!(BackupHistory::parse(&PG15.replace("0/2000028", "zz")).is_err());
        assert!(
            BackupHistory::parse(&PG15.replace("START TIMELINE: 1", "START TIMELINE: one"))
                .is_err()
        );
        assert!(BackupHistory::parse(&PG15.replace("2026-12-02 14:03:00", "yesterday")).is_err());
    }
}
