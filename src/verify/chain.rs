//! The WAL of one backup directory as a whole (S-8.2): [`check_wal_chain`] and
//! [`check_system_identifiers`]. Pure: an index of names, the parsed history files and the
//! findings of the other checks in; problems out.
//!
//! What is checked:
//! - every segment the manifest's `WAL-Ranges` needs to make the base backup consistent is
//!   there (on its timeline, or on a later one that took that segment over);
//! - the chain recovery reads, from the base backup's start to the newest segment, along the
//!   newest timeline that descends from the base (`backup_copy::check_chain`, which follows the
//!   `.history` switches), has no hole; a newer timeline without its history file is reported,
//!   because recovery cannot follow it;
//! - on every timeline, the segments from its first (on the base's timeline: from the base
//!   backup's start) to its newest have no hole, whether or not recovery follows that timeline;
//! - every segment's system identifier is `pg_control`'s (WAL of another cluster).
//!
//! A directory holds its whole chain: WAL is archived into every pending and current
//! directory (S-4.1) from its base backup's start until it is sealed, so a directory (or its
//! offsite copy) is checked on its own, without the others. A missing file is named by the path
//! it should have.

use super::manifest::WalRange;
use super::report::Problem;
use crate::backup_copy::chain::CHAIN_SEGMENTS_MAX;
use crate::backup_copy::{
    BasePosition, ChainTarget, SegmentSize, TimelineChoice, TimelineHistory, WalIndex, check_chain,
};
use crate::home::names::WAL_DIRECTORY_NAME;
use crate::wal_name::{WalFileKind, WalFileName};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What the chain check needs.
pub struct ChainInput<'a> {
    pub directory: &'a Path,
    pub index: &'a WalIndex,
    pub histories: &'a BTreeMap<u32, TimelineHistory>,
    pub segment_size: SegmentSize,
    /// From the backup history file; `None` when there is none (reported here).
    pub base: Option<BasePosition>,
    /// From the manifest; empty when there is none (the base check reports that).
    pub wal_ranges: &'a [WalRange],
}

fn stored_path(directory: &Path, name: &WalFileName) -> PathBuf {
    directory
        .join(WAL_DIRECTORY_NAME)
        .join(name.compressed_name())
}

fn missing(directory: &Path, name: &WalFileName, why: String) -> Problem {
    Problem::new(
        "missing_segment",
        &stored_path(directory, name),
        None,
        format!("segment {name} ({why})"),
        "no such file",
    )
}

/// Checks the chain as the module header says; returns the problems and the number of segments
/// in the chain recovery reads.
pub fn check_wal_chain(input: &ChainInput<'_>) -> (Vec<Problem>, u64) {
    let mut problems = Vec::new();
    let size = input.segment_size;
    let present = |timeline: u32, segno: u64| {
        input
            .index
            .location(&size.segment_name(timeline, segno))
            .is_some()
    };
    for range in input.wal_ranges {
        let first = size.segment_of(range.start);
        let last = size.segment_of(crate::backup_copy::Lsn(range.end.0.saturating_sub(1)));
        for segno in first..=last.max(first).min(first + CHAIN_SEGMENTS_MAX) {
            // A later timeline's copy of the segment is the one recovery reads after a switch.
            let on_some_timeline = input
                .index
                .timelines()
                .range(range.timeline..)
                .any(|&timeline| present(timeline, segno));
            if !on_some_timeline {
                let name = size.segment_name(range.timeline, segno);
                problems.push(missing(
                    input.directory,
                    &name,
                    format!(
                        "backup_manifest's WAL-Ranges need {}..{} on timeline {} for consistency",
                        range.start, range.end, range.timeline
                    ),
                ));
            }
        }
    }
    let base = input.base.or_else(|| {
        let first = input.wal_ranges.first()?;
        Some(BasePosition {
            start: first.start,
            timeline: first.timeline,
            stop: input.wal_ranges.last().map(|r| r.end),
        })
    });
    if input.base.is_none() {
        problems.push(Problem::new(
            "no_backup_history",
            &input.directory.join(WAL_DIRECTORY_NAME),
            None,
            "the backup history file (*.backup) of the base backup, which restore reads",
            "none",
        ));
    }
    let mut chain_segments = 0;
    if let Some(base) = base {
        match check_chain(
            input.index,
            input.histories,
            size,
            &base,
            ChainTarget::Newest,
            TimelineChoice::Latest,
        ) {
            Ok(chain) => {
                chain_segments = chain.needed.len() as u64;
                let (first, last) = chain.range();
                for name in &chain.missing {
                    let why = format!("the chain runs from {first} to {last}");
                    problems.push(missing(input.directory, name, why));
                }
                for timeline in &chain.unfollowable {
                    let name = WalFileName::parse(&format!("{timeline:08X}.history"))
                        .expect("eight hex digits");
                    problems.push(Problem::new(
                        "missing_history",
                        &stored_path(input.directory, &name),
                        None,
                        format!("the history file of timeline {timeline}, which has WAL here"),
                        "no such file",
                    ));
                }
            }
            Err(error) => problems.push(Problem::new(
                "chain",
                &input.directory.join(WAL_DIRECTORY_NAME),
                None,
                "a WAL chain recovery can follow",
                crate::error::one_line(&error),
            )),
        }
    }
    // Holes on every timeline, followed or not.
    for timeline in input.index.timelines() {
        let segments: Vec<u64> = input
            .index
            .on_timeline(timeline, WalFileKind::Segment)
            .filter_map(|name| size.segment_number(name))
            .collect();
        let from = match base {
            Some(base) if base.timeline == timeline => size.segment_of(base.start),
            _ => segments.first().copied().unwrap_or(0),
        };
        let mut expected = from;
        for &segno in segments.iter().filter(|&&s| s >= from) {
            let hole_end = segno.min(expected + CHAIN_SEGMENTS_MAX);
            for gap in expected..hole_end {
                let name = size.segment_name(timeline, gap);
                let why = format!("timeline {timeline} goes on after it");
                problems.push(missing(input.directory, &name, why));
            }
            expected = segno + 1;
        }
    }
    (problems, chain_segments)
}

/// Every segment whose page header names an older timeline than its name, unless it is the
/// segment where its name's timeline began (the history file's last switch point): PostgreSQL
/// copies the old timeline's pages into that one segment at promotion, and into no other. So a
/// segment renamed to a newer timeline is caught.
pub fn check_switch_segments(
    histories: &BTreeMap<u32, TimelineHistory>,
    segment_size: SegmentSize,
    segments: &[(PathBuf, WalFileName, u32)],
) -> Vec<Problem> {
    segments
        .iter()
        .filter(|(_, name, header_timeline)| *header_timeline < name.timeline())
        .filter(|(_, name, _)| {
            let began_here = histories.get(&name.timeline()).is_some_and(|history| {
                Some(segment_size.segment_of(history.begin())) == segment_size.segment_number(name)
            });
            !began_here
        })
        .map(|(path, name, header_timeline)| {
            Problem::new(
                "wrong_timeline",
                path,
                Some("page header".to_owned()),
                format!(
                    "timeline {} (its name), or an older one only in the segment where timeline {} began",
                    name.timeline(),
                    name.timeline()
                ),
                format!("timeline {header_timeline} in a segment where no timeline switch happened"),
            )
        })
        .collect()
}

/// Every segment whose header names another cluster than `pg_control` does.
pub fn check_system_identifiers(
    expected: Option<u64>,
    segments: &[(PathBuf, u64)],
) -> Vec<Problem> {
    let Some(expected) = expected else {
        return Vec::new();
    };
    segments
        .iter()
        .filter(|(_, found)| *found != expected)
        .map(|(path, found)| {
            Problem::new(
                "system_identifier",
                path,
                Some("page header".to_owned()),
                format!("system identifier {expected} (global/pg_control of base.tzst)"),
                format!("{found} (WAL of another cluster)"),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup_copy::Lsn;

    fn run(names: &[&str], ranges: &[WalRange]) -> Vec<(String, String)> {
        let index = WalIndex::of_names(names);
        let histories = BTreeMap::new();
        let input = ChainInput {
            directory: Path::new("/b"),
            index: &index,
            histories: &histories,
            segment_size: SegmentSize::DEFAULT,
            base: Some(BasePosition {
                start: Lsn(0x0200_0028),
                timeline: 1,
                stop: Some(Lsn(0x0200_0100)),
            }),
            wal_ranges: ranges,
        };
        let (mut problems, _) = check_wal_chain(&input);
        problems.sort_by(|a, b| a.file.cmp(&b.file));
        problems.dedup_by(|a, b| a.file == b.file);
        problems
            .into_iter()
            .map(|p| (p.code.to_owned(), p.file.display().to_string()))
            .collect()
    }

    #[test]
    fn a_whole_chain_passes_and_a_hole_is_named_by_its_path() {
        let whole = [
            "000000010000000000000002",
            "000000010000000000000003",
            "000000010000000000000004",
        ];
        assert_eq!(run(&whole, &[]), vec![]);
        let holed = [whole[0], whole[2]];
        assert_eq!(
            run(&holed, &[]),
            vec![(
                "missing_segment".to_owned(),
                "/b/pg_wal/000000010000000000000003.zst".to_owned()
            )]
        );
    }

    #[test]
    fn the_manifests_wal_range_must_be_there() {
        let range = WalRange {
            timeline: 1,
            start: Lsn(0x0200_0028),
            end: Lsn(0x0300_0100),
        };
        let problems = run(&["000000010000000000000002"], &[range]);
        assert_eq!(
            problems,
            vec![(
                "missing_segment".to_owned(),
                "/b/pg_wal/000000010000000000000003.zst".to_owned()
            )]
        );
    }

    #[test]
    fn only_the_segment_where_a_timeline_began_may_carry_the_older_timelines_header() {
        let size = SegmentSize::new(16 << 20).unwrap();
        let mut histories = BTreeMap::new();
        histories.insert(
            2,
            TimelineHistory::parse(2, "1\t0/3000100\tno recovery target specified\n").unwrap(),
        );
        let segment = |name: &str| {
            (
                PathBuf::from(format!("/b/pg_wal/{name}.zst")),
                WalFileName::parse(name).unwrap(),
                1,
            )
        };
        let switch = segment("000000020000000000000003");
        assert!(check_switch_segments(&histories, size, &[switch]).is_empty());
        let renamed = segment("000000020000000000000005");
        let problems = check_switch_segments(&histories, size, &[renamed]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].code, "wrong_timeline");
        // Without the history file nothing says timeline 2 began anywhere.
        let unknown = segment("000000020000000000000003");
        assert_eq!(
            check_switch_segments(&BTreeMap::new(), size, &[unknown]).len(),
            1
        );
    }

    #[test]
    fn another_clusters_segment_is_named() {
        let segments = vec![
            (PathBuf::from("/b/pg_wal/a.zst"), 7),
            (PathBuf::from("/b/pg_wal/b.zst"), 8),
        ];
        let problems = check_system_identifiers(Some(7), &segments);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].file, PathBuf::from("/b/pg_wal/b.zst"));
        assert!(check_system_identifiers(None, &segments).is_empty());
    }
}
