//! `restore-wal`'s decision (S-8.1.1): is the file PostgreSQL asks for archived, is the archive
//! simply at its end, or is the file missing in the middle of its timeline?
//!
//! Owns: [`lookup`] (I/O: the pool on disk) and [`decide`] (pure: names and history files in).
//!
//! Why it matters: PostgreSQL takes a `restore_command` exit status from 1 to 125 as "not
//! archived", ends recovery there and promotes; a status above 125 aborts recovery. Answering
//! [`Lookup::EndOfArchive`] for a segment that is missing in the middle would end a restore
//! early and lose everything after it in silence; answering [`Lookup::MissingBeforeLater`] for
//! a segment PostgreSQL merely probes would abort a valid restore.
//!
//! What PostgreSQL asks for (`XLogFileReadAnyTLI`, `xlogrecovery.c`): history files of
//! timelines that may not exist (`findNewestTimeLine`, and the next timeline at promotion);
//! and each segment on the timelines of its target's history, newest first (older versions
//! also on timelines that begin after the segment). So an absent segment X of timeline T is:
//!
//! 1. the end of the archive if the history files say T holds nothing at X: a newer
//!    timeline's history says T ended at or before X's first byte (T's later segments, if
//!    any, are another branch's: the old primary after a failover), or T's own history says T
//!    began after X's last byte;
//! 2. missing in the middle if a later segment, partial segment or backup history file of T
//!    is in the pool, or a history file says T went on past X (the child forked later);
//! 3. the end of the archive otherwise.
//!
//! When several history files name T's end, the latest end counts (T ran at least that far).
//! A `.partial` is never returned for a segment name. Any error (a pool directory unreadable,
//! a history file damaged) is an error, never the end of the archive: not being able to look
//! is not proof that nothing is there.

use super::catalog::WalIndex;
use super::error::BackupCopyError;
use super::history::TimelineHistory;
use super::lsn::{Lsn, SegmentSize};
use crate::archive::describe_file_type;
use crate::home::names::WAL_DIRECTORY_NAME;
use crate::wal_name::{WalFileKind, WalFileName};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::PathBuf;

/// The answer to `restore-wal NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The stored `NAME.zst` to decompress.
    Found(PathBuf),
    /// Not archived, and nothing says it should be: exit 1.
    EndOfArchive,
    /// Not archived while `later` shows its timeline went on: recovery must abort.
    MissingBeforeLater { later: WalFileName },
}

/// Looks `name` up in `pool` (newest directory first, as [`WalIndex`] orders it).
pub fn lookup(pool: &[PathBuf], name: &str) -> Result<Lookup, BackupCopyError> {
    let requested = WalFileName::parse(name).ok_or_else(|| BackupCopyError::NotAWalName {
        name: name.to_owned(),
    })?;
    // The common case first, without listing the pool: one stat per directory.
    for directory in pool {
        let path = directory
            .join(WAL_DIRECTORY_NAME)
            .join(requested.compressed_name());
        match fs::symlink_metadata(&path) {
            Ok(metadata) if metadata.is_file() => return Ok(Lookup::Found(path)),
            Ok(metadata) => {
                return Err(BackupCopyError::NotRegularFile {
                    what: describe_file_type(metadata.file_type()),
                    path,
                });
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(BackupCopyError::Unreadable { path, source }),
        }
    }
    if requested.kind() != WalFileKind::Segment {
        return Ok(Lookup::EndOfArchive);
    }
    let index = WalIndex::build(pool)?;
    let histories = index.histories()?;
    Ok(decide(&requested, &index, &histories, || {
        index.segment_size().size
    }))
}

/// Where timeline `timeline` begins and (at the latest) ends, as far as the history files say.
fn span_of(
    timeline: u32,
    histories: &BTreeMap<u32, TimelineHistory>,
) -> (Option<Lsn>, Option<(Lsn, u32)>) {
    let begin = match histories.get(&timeline) {
        Some(own) => Some(own.begin()),
        None if timeline == 1 => Some(Lsn(0)),
        None => histories.values().find_map(|h| h.begin_of(timeline)),
    };
    let end = histories
        .values()
        .filter_map(|h| Some((h.end_of(timeline)?, h.timeline)))
        .max();
    (begin, end)
}

/// The decision for a segment absent from the pool (see the module header). `segment_size`
/// is asked only when a history file speaks of the segment's timeline.
pub fn decide(
    requested: &WalFileName,
    index: &WalIndex,
    histories: &BTreeMap<u32, TimelineHistory>,
    segment_size: impl FnOnce() -> SegmentSize,
) -> Lookup {
    let timeline = requested.timeline();
    if let Some(location) = index.location(requested) {
        return Lookup::Found(location.path.clone());
    }
    let (begin, end) = span_of(timeline, histories);
    let history_speaks = end.is_some() || begin.is_some_and(|b| b > Lsn(0));
    let position = if history_speaks {
        let size = segment_size();
        size.segment_number(requested)
            .map(|segno| (size.segment_start(segno), size.segment_end(segno)))
    } else {
        None
    };
    if let Some((first_byte, after_last_byte)) = position {
        if end.is_some_and(|(end, _)| end <= first_byte) {
            return Lookup::EndOfArchive;
        }
        if begin.is_some_and(|begin| after_last_byte <= begin) {
            return Lookup::EndOfArchive;
        }
    }
    // Names of one timeline sort in WAL order, whatever the segment size.
    let position_digits = |name: &WalFileName| name.as_str()[8..24].to_owned();
    let requested_digits = position_digits(requested);
    let later = index.names().find(|name| {
        name.timeline() == timeline
            && name.kind() != WalFileKind::History
            && position_digits(name) > requested_digits
    });
    if let Some(later) = later {
        return Lookup::MissingBeforeLater {
            later: later.clone(),
        };
    }
    if let (Some((_, after_last_byte)), Some((end, child))) = (position, end) {
        if end > after_last_byte {
            let history =
                WalFileName::parse(&format!("{child:08X}.history")).expect("eight hex digits");
            return Lookup::MissingBeforeLater { later: history };
        }
    }
    Lookup::EndOfArchive
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup_copy::catalog::fixture::{segment, stored};
    use crate::test_support::ScratchDirectory;

    use crate::backup_copy::history::{FAILOVER_FILES as FAILOVER, SWITCH_TO_2};

    fn histories(files: &[(u32, &str)]) -> BTreeMap<u32, TimelineHistory> {
        crate::backup_copy::history::histories_of(files)
    }

    /// The decision for `name` in a pool holding `files` minus `without`.
    fn decide_in(files: &[&str], without: &[&str], history: &[(u32, &str)], name: &str) -> Lookup {
        let kept: Vec<&str> = files
            .iter()
            .copied()
            .filter(|f| !without.contains(f))
            .collect();
        let index = WalIndex::of_names(&kept);
        decide(
            &WalFileName::parse(name).unwrap(),
            &index,
            &histories(history),
            || SegmentSize::DEFAULT,
        )
    }

    fn missing_before(later: &str) -> Lookup {
        Lookup::MissingBeforeLater {
            later: WalFileName::parse(later).unwrap(),
        }
    }

    #[test]
    fn after_a_failover_the_old_timeline_past_its_switch_is_the_end_of_the_archive() {
        let history = [(2, SWITCH_TO_2)];
        // PostgreSQL may ask timeline 1 for segment 5 (only the .partial is there) and 6.
        for name in ["000000010000000000000005", "000000010000000000000006"] {
            assert_eq!(
                decide_in(FAILOVER, &[], &history, name),
                Lookup::EndOfArchive,
                "{name}"
            );
        }
        // Even when the old primary went on archiving timeline 1 after the switch (split
        // brain): those segments are another branch, not what recovery along 2 needs.
        let mut split = FAILOVER.to_vec();
        split.push("000000010000000000000008");
        assert_eq!(
            decide_in(&split, &[], &history, "000000010000000000000006"),
            Lookup::EndOfArchive
        );
        // Timeline 2 before it began (versions that do not skip such timelines ask for it).
        assert_eq!(
            decide_in(FAILOVER, &[], &history, "000000020000000000000004"),
            Lookup::EndOfArchive
        );
        // The newest segment's successor, and timelines nobody created.
        assert_eq!(
            decide_in(FAILOVER, &[], &history, "000000020000000000000008"),
            Lookup::EndOfArchive
        );
        assert_eq!(
            decide_in(FAILOVER, &[], &history, "000000030000000000000008"),
            Lookup::EndOfArchive
        );
    }

    #[test]
    fn a_hole_inside_a_timeline_aborts_recovery() {
        let history = [(2, SWITCH_TO_2)];
        let six = "000000020000000000000006";
        assert_eq!(
            decide_in(FAILOVER, &[six], &history, six),
            missing_before("000000020000000000000007")
        );
        // The switch segment on the new timeline, with timeline 2 going on after it.
        let five = "000000020000000000000005";
        assert_eq!(
            decide_in(FAILOVER, &[five], &history, five),
            missing_before(six)
        );
        // On the old timeline before the switch: a later segment, or only the .partial.
        let three = "000000010000000000000003";
        assert_eq!(
            decide_in(FAILOVER, &[three], &history, three),
            missing_before("000000010000000000000004")
        );
        let four = "000000010000000000000004";
        assert_eq!(
            decide_in(FAILOVER, &[three, four], &history, three),
            missing_before("000000010000000000000005.partial")
        );
        // Nothing of timeline 1 after segment 2 at all, but the history file says timeline 1
        // ran into segment 5: segments 3 and 4 are holes, not the end.
        let gone = [three, four, "000000010000000000000005.partial"];
        assert_eq!(
            decide_in(FAILOVER, &gone, &history, three),
            missing_before("00000002.history")
        );
        assert_eq!(
            decide_in(FAILOVER, &gone, &history, four),
            missing_before("00000002.history")
        );
        // A later backup history file of the timeline shows it went on as well.
        let files = [
            "000000010000000000000001",
            "000000010000000000000009.00000028.backup",
        ];
        assert_eq!(
            decide_in(&files, &[], &[], "000000010000000000000002"),
            missing_before("000000010000000000000009.00000028.backup")
        );
    }

    #[test]
    fn the_latest_fork_from_a_timeline_is_its_end() {
        // Timeline 3 forked from timeline 1 later than timeline 2 did: timeline 1 ran to
        // segment 8, so its segment 6 is a hole for whoever follows timeline 3.
        let history = [(2, SWITCH_TO_2), (3, "1\t0/8000000\tlater fork\n")];
        let files = [
            "000000010000000000000005",
            "00000002.history",
            "00000003.history",
        ];
        assert_eq!(
            decide_in(&files, &[], &history, "000000010000000000000006"),
            missing_before("00000003.history")
        );
        assert_eq!(
            decide_in(&files, &[], &history, "000000010000000000000008"),
            Lookup::EndOfArchive
        );
    }

    #[test]
    fn a_single_timeline_ends_where_its_segments_end() {
        let files = ["000000010000000000000001", "000000010000000000000002"];
        assert_eq!(
            decide_in(&files, &[], &[], "000000010000000000000003"),
            Lookup::EndOfArchive
        );
        assert_eq!(
            decide_in(
                &files,
                &["000000010000000000000001"],
                &[],
                "000000010000000000000001"
            ),
            missing_before("000000010000000000000002")
        );
    }

    #[test]
    fn lookup_reads_the_pool_newest_first_and_never_returns_a_partial() {
        let scratch = ScratchDirectory::new("lookup-pool");
        let (older, newer) = (
            scratch.0.join("20261201T000000Z"),
            scratch.0.join("20261202T000000Z"),
        );
        let size = SegmentSize::new(1 << 20).unwrap();
        for name in ["000000010000000000000001", "000000010000000000000002"] {
            segment(&older, name, size);
        }
        segment(&newer, "000000010000000000000002", size);
        stored(&newer, "000000010000000000000003.partial", b"partial");
        stored(&newer, "00000002.history", b"1\t0/300100\tpromoted\n");
        segment(&newer, "000000020000000000000003", size);
        segment(&newer, "000000020000000000000005", size);
        let pool = [newer.clone(), older.clone()];

        let found = lookup(&pool, "000000010000000000000002").unwrap();
        assert_eq!(
            found,
            Lookup::Found(newer.join("pg_wal/000000010000000000000002.zst"))
        );
        assert_eq!(
            lookup(&pool, "000000010000000000000001").unwrap(),
            Lookup::Found(older.join("pg_wal/000000010000000000000001.zst"))
        );
        // 1 MiB segments: the switch at 0/300100 is in segment 3, so timeline 1's segment 3 is
        // its end (only the .partial), and timeline 2's segment 4 is a hole.
        assert_eq!(
            lookup(&pool, "000000010000000000000003").unwrap(),
            Lookup::EndOfArchive
        );
        assert_eq!(
            lookup(&pool, "000000020000000000000004").unwrap(),
            missing_before("000000020000000000000005")
        );
        assert_eq!(
            lookup(&pool, "000000020000000000000006").unwrap(),
            Lookup::EndOfArchive
        );
        assert_eq!(
            lookup(&pool, "00000003.history").unwrap(),
            Lookup::EndOfArchive
        );
        assert!(matches!(
            lookup(&pool, "RECOVERYXLOG"),
            Err(BackupCopyError::NotAWalName { .. })
        ));
    }

    #[test]
    fn lookup_refuses_what_is_not_a_regular_file_and_damaged_history() {
        let scratch = ScratchDirectory::new("lookup-bad");
        stored(&scratch.0, "000000010000000000000001", b"x");
        std::os::unix::fs::symlink(
            "/dev/zero",
            scratch.0.join("pg_wal/000000010000000000000002.zst"),
        )
        .unwrap();
        let pool = [scratch.0.clone()];
        let error = lookup(&pool, "000000010000000000000002").unwrap_err();
        assert!(
            matches!(
                error,
                BackupCopyError::NotRegularFile {
                    what: "a symbolic link",
                    ..
                }
            ),
            "{error}"
        );
        fs::write(scratch.0.join("pg_wal/00000002.history.zst"), b"not zstd").unwrap();
        let error = lookup(&pool, "000000010000000000000003").unwrap_err();
        assert!(matches!(error, BackupCopyError::Damaged { .. }), "{error}");
    }
}
