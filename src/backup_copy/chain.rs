//! The chain check (S-8.1): exactly which WAL segments recovery will read, from the base
//! backup's start to the target, across timeline switches, and which of them are missing.
//!
//! Owns: [`check_chain`] (pure: an index of names, the parsed history files and the segment
//! size in; a [`Chain`] out), [`BasePosition`], [`ChainTarget`], [`TimelineChoice`].
//!
//! How PostgreSQL walks the archive (`XLogFileReadAnyTLI` in
//! `src/backend/access/transam/xlogrecovery.c`): for each segment number it asks the
//! timelines of the target timeline's history, newest first, skipping a timeline whose first
//! segment (the one holding its switchpoint) comes after the segment asked for. So a segment
//! comes from the newest timeline on the path that had begun by that segment: the segment that
//! holds a switchpoint is read from the NEW timeline, the segments before it from the parent.
//! A `.partial` is never read as a segment (PostgreSQL asks only for full names).
//!
//! Target timeline (`recovery_target_timeline`): `current` is the base backup's timeline; a
//! number N must have its history file in the archive and lead back to the base's timeline;
//! `latest` is resolved here to the highest timeline whose history file leads back — "leads
//! back" meaning the base's timeline is in its ancestry and forked off at or after the base
//! backup's end (PostgreSQL refuses a timeline that forked before it: "requested timeline is
//! not a child of this server's history"). A newer timeline without a history file cannot be
//! followed and is reported ([`Chain::unfollowable`]). PostgreSQL's own `latest` takes the
//! highest N with history files for every number up to N and does not check the ancestry, so
//! the caller should write the number resolved here into `recovery_target_timeline`.
//!
//! Last segment: for an LSN target, the segment holding it (and at least the backup's end);
//! for "newest", the newest segment in the pool on the path (segments of a timeline outside
//! its stretch of the path do not count). Invariant: `needed` holds every segment number from
//! the first to the last exactly once, in replay order; `missing` is its subsequence without a
//! location; no list is longer than [`CHAIN_SEGMENTS_MAX`].

use super::backup_history::BackupHistory;
use super::catalog::WalIndex;
use super::error::BackupCopyError;
use super::history::{TimelineHistory, TimelineSpan};
use super::lsn::{Lsn, SegmentSize};
use crate::wal_name::{WalFileKind, WalFileName};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// The most segments a chain lists: 16 TiB of WAL at 16 MiB. A target further away than
/// that is a typo, and listing it would exhaust memory.
pub const CHAIN_SEGMENTS_MAX: u64 = 1 << 20;

/// Where the base backup's WAL starts and (if known) where recovery becomes consistent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BasePosition {
    pub start: Lsn,
    pub timeline: u32,
    pub stop: Option<Lsn>,
}

impl From<&BackupHistory> for BasePosition {
    fn from(history: &BackupHistory) -> Self {
        BasePosition {
            start: history.start,
            timeline: history.start_timeline,
            stop: history.stop,
        }
    }
}

/// How far recovery must go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainTarget {
    Lsn(Lsn),
    /// Everything the archive holds on the path (no target, `--target-time`, a name, an xid).
    Newest,
}

/// `--target-timeline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimelineChoice {
    Latest,
    Current,
    Number(u32),
}

/// One file recovery needs, and where it is (`None`: missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSegment {
    pub name: WalFileName,
    pub location: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub segment_size: SegmentSize,
    /// The timeline recovery follows to the end (write it as `recovery_target_timeline`).
    pub target_timeline: u32,
    /// The path from the base's timeline to the target timeline.
    pub spans: Vec<TimelineSpan>,
    /// Every segment recovery reads, in replay order.
    pub needed: Vec<ChainSegment>,
    /// The needed segments that are not in the pool, in replay order.
    pub missing: Vec<WalFileName>,
    /// The history files in the pool of the timelines on the path (PostgreSQL reads the target
    /// timeline's to follow the switches; without a `restore_command` they must be in `pg_wal/`).
    pub history_files: Vec<(WalFileName, PathBuf)>,
    /// Timelines above the base's with WAL in the pool but no history file: not followable.
    pub unfollowable: Vec<u32>,
    /// Timelines whose history does not lead back to this base (other branches), not followed.
    pub other_branches: Vec<u32>,
}

impl Chain {
    pub fn is_whole(&self) -> bool {
        self.missing.is_empty()
    }

    /// The first and the last segment recovery reads.
    pub fn range(&self) -> (&WalFileName, &WalFileName) {
        let first = &self
            .needed
            .first()
            .expect("a chain holds its start segment")
            .name;
        let last = &self
            .needed
            .last()
            .expect("a chain holds its start segment")
            .name;
        (first, last)
    }
}

/// Why `history` does not lead back to the base, or its path from the base's timeline.
fn path_back(history: &TimelineHistory, base: &BasePosition) -> Result<Vec<TimelineSpan>, String> {
    let Some(spans) = history.spans_from(base.timeline) else {
        return Err(format!(
            "its history does not contain the base backup's timeline {}",
            base.timeline
        ));
    };
    let fork = spans[0].end.expect("an ancestor's span ends");
    let (what, position) = match base.stop {
        Some(stop) if fork < stop => ("end", stop),
        _ if fork <= base.start => ("start", base.start),
        _ => return Ok(spans),
    };
    Err(format!(
        "it forked from timeline {} at {fork}, before the base backup's {what} {position}",
        base.timeline
    ))
}

fn history_name(timeline: u32) -> WalFileName {
    WalFileName::parse(&format!("{timeline:08X}.history")).expect("eight hex digits")
}

/// Computes the chain for `base` up to `target` on the timeline `timeline` chooses.
pub fn check_chain(
    index: &WalIndex,
    histories: &BTreeMap<u32, TimelineHistory>,
    segment_size: SegmentSize,
    base: &BasePosition,
    target: ChainTarget,
    timeline: TimelineChoice,
) -> Result<Chain, BackupCopyError> {
    let own_span = || match histories.get(&base.timeline) {
        Some(history) => history
            .spans_from(base.timeline)
            .expect("a history holds itself"),
        None => vec![TimelineSpan {
            timeline: base.timeline,
            begin: Lsn(0),
            end: None,
        }],
    };
    let mut unfollowable = Vec::new();
    let mut other_branches = Vec::new();
    let (target_timeline, spans) = match timeline {
        TimelineChoice::Current => (base.timeline, own_span()),
        TimelineChoice::Number(number) if number == base.timeline => (number, own_span()),
        TimelineChoice::Number(number) if number < base.timeline => {
            return Err(BackupCopyError::TimelineNotFollowable {
                timeline: number,
                reason: format!("below the base backup's timeline {}", base.timeline),
            });
        }
        TimelineChoice::Number(number) => {
            let history =
                histories
                    .get(&number)
                    .ok_or_else(|| BackupCopyError::TimelineNotFollowable {
                        timeline: number,
                        reason: format!("no history file {} in the archive", history_name(number)),
                    })?;
            let spans = path_back(history, base).map_err(|reason| {
                BackupCopyError::TimelineNotFollowable {
                    timeline: number,
                    reason,
                }
            })?;
            (number, spans)
        }
        TimelineChoice::Latest => {
            let mut timelines: BTreeSet<u32> = index.timelines();
            timelines.extend(histories.keys());
            let mut chosen = None;
            for &candidate in timelines.iter().rev().filter(|&&t| t > base.timeline) {
                match histories.get(&candidate) {
                    None => unfollowable.push(candidate),
                    Some(history) => match path_back(history, base) {
                        Ok(spans) => {
                            chosen = Some((candidate, spans));
                            break;
                        }
                        Err(_) => other_branches.push(candidate),
                    },
                }
            }
            chosen.unwrap_or_else(|| (base.timeline, own_span()))
        }
    };

    let first = segment_size.segment_of(base.start);
    // The first segment of each span: the one holding its switchpoint (the first span starts
    // where the base does, whatever its history says).
    let begins: Vec<u64> = spans
        .iter()
        .enumerate()
        .map(|(i, span)| {
            if i == 0 {
                first
            } else {
                segment_size.segment_of(span.begin).max(first)
            }
        })
        .collect();
    // The newest span that had begun by `segno`, as PostgreSQL asks newest first.
    let timeline_of = |segno: u64| -> u32 {
        let position = begins
            .iter()
            .rposition(|&begin| begin <= segno)
            .unwrap_or(0);
        spans[position].timeline
    };

    let consistent = base
        .stop
        .map_or(first, |stop| segment_size.segment_of(stop));
    let last = match target {
        ChainTarget::Lsn(lsn) => {
            let limit = base.stop.unwrap_or(base.start);
            if lsn < limit {
                return Err(BackupCopyError::TargetBeforeConsistency {
                    target: lsn,
                    stop: limit,
                });
            }
            segment_size.segment_of(lsn)
        }
        ChainTarget::Newest => {
            let newest_on_path = spans.iter().enumerate().filter_map(|(i, span)| {
                let from = begins[i];
                let until = begins.get(i + 1).copied().unwrap_or(u64::MAX);
                index
                    .on_timeline(span.timeline, WalFileKind::Segment)
                    .filter_map(|name| segment_size.segment_number(name))
                    .filter(|&segno| segno >= from && segno < until)
                    .max()
            });
            newest_on_path.max().unwrap_or(first)
        }
    }
    .max(consistent);

    let count = last - first + 1;
    if count > CHAIN_SEGMENTS_MAX {
        return Err(BackupCopyError::ChainTooLong {
            first: segment_size
                .segment_name(timeline_of(first), first)
                .to_string(),
            last: segment_size
                .segment_name(timeline_of(last), last)
                .to_string(),
            count,
        });
    }
    let needed: Vec<ChainSegment> = (first..=last)
        .map(|segno| {
            let name = segment_size.segment_name(timeline_of(segno), segno);
            let location = index.location(&name).map(|l| l.path.clone());
            ChainSegment { name, location }
        })
        .collect();
    let missing = needed
        .iter()
        .filter(|segment| segment.location.is_none())
        .map(|segment| segment.name.clone())
        .collect();
    let history_files = spans
        .iter()
        .map(|span| history_name(span.timeline))
        .filter_map(|name| Some((name.clone(), index.location(&name)?.path.clone())))
        .collect();
    Ok(Chain {
        segment_size,
        target_timeline,
        spans,
        needed,
        missing,
        history_files,
        unfollowable,
        other_branches,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB_16: SegmentSize = SegmentSize::DEFAULT;

    use crate::backup_copy::history::{FAILOVER_FILES as FAILOVER, SWITCH_TO_2};

    fn histories(files: &[(u32, &str)]) -> BTreeMap<u32, TimelineHistory> {
        crate::backup_copy::history::histories_of(files)
    }

    fn failover_histories() -> BTreeMap<u32, TimelineHistory> {
        histories(&[(2, SWITCH_TO_2)])
    }

    const BASE: BasePosition = BasePosition {
        start: Lsn(0x200_0028),
        timeline: 1,
        stop: Some(Lsn(0x200_0100)),
    };

    fn names(segments: &[ChainSegment]) -> Vec<&str> {
        segments.iter().map(|s| s.name.as_str()).collect()
    }

    fn chain(
        files: &[&str],
        history: &BTreeMap<u32, TimelineHistory>,
        target: ChainTarget,
        timeline: TimelineChoice,
    ) -> Chain {
        check_chain(
            &WalIndex::of_names(files),
            history,
            MIB_16,
            &BASE,
            target,
            timeline,
        )
        .unwrap()
    }

    #[test]
    fn a_single_timeline_chain_lists_its_gap_by_name() {
        let files = [
            "000000010000000000000002",
            "000000010000000000000003",
            "000000010000000000000005",
        ];
        let chain = chain(
            &files,
            &BTreeMap::new(),
            ChainTarget::Newest,
            TimelineChoice::Latest,
        );
        assert_eq!(chain.target_timeline, 1);
        assert_eq!(names(&chain.needed).len(), 4);
        assert_eq!(
            chain.missing,
            vec![WalFileName::parse("000000010000000000000004").unwrap()]
        );
        assert!(!chain.is_whole());
        assert_eq!(
            chain.needed[0].location,
            Some(PathBuf::from("/pool/000000010000000000000002.zst"))
        );
    }

    #[test]
    fn latest_follows_a_failover_and_reads_the_switch_segment_from_the_new_timeline() {
        let chain = chain(
            FAILOVER,
            &failover_histories(),
            ChainTarget::Newest,
            TimelineChoice::Latest,
        );
        assert_eq!(chain.target_timeline, 2);
        assert_eq!(
            names(&chain.needed),
            [
                "000000010000000000000002",
                "000000010000000000000003",
                "000000010000000000000004",
                "000000020000000000000005",
                "000000020000000000000006",
                "000000020000000000000007",
            ]
        );
        assert!(chain.is_whole());
        assert_eq!(chain.history_files.len(), 1);
        assert_eq!(chain.history_files[0].0.as_str(), "00000002.history");
        assert_eq!(chain.range().1.as_str(), "000000020000000000000007");
    }

    #[test]
    fn current_stays_on_the_base_timeline_and_a_partial_never_counts() {
        let chain = chain(
            FAILOVER,
            &failover_histories(),
            ChainTarget::Newest,
            TimelineChoice::Current,
        );
        assert_eq!(chain.target_timeline, 1);
        assert_eq!(chain.range().1.as_str(), "000000010000000000000004");
        // Timeline 2 explicitly, and an LSN target inside it.
        let chain = chain_at(ChainTarget::Lsn(Lsn(0x600_0010)), TimelineChoice::Number(2));
        assert_eq!(chain.range().1.as_str(), "000000020000000000000006");
    }

    fn chain_at(target: ChainTarget, timeline: TimelineChoice) -> Chain {
        chain(FAILOVER, &failover_histories(), target, timeline)
    }

    #[test]
    fn a_missing_switch_segment_is_missing_even_though_the_old_timeline_has_a_partial() {
        let files: Vec<&str> = FAILOVER
            .iter()
            .copied()
            .filter(|n| *n != "000000020000000000000005")
            .collect();
        let chain = chain(
            &files,
            &failover_histories(),
            ChainTarget::Newest,
            TimelineChoice::Latest,
        );
        assert_eq!(
            chain.missing,
            vec![WalFileName::parse("000000020000000000000005").unwrap()]
        );
    }

    #[test]
    fn a_switch_at_a_segment_boundary_starts_the_new_timeline_there() {
        let history = histories(&[(2, "1\t0/5000000\tat a boundary\n")]);
        let files = [
            "000000010000000000000002",
            "000000010000000000000003",
            "000000010000000000000004",
            "000000020000000000000005",
        ];
        let chain = chain(
            &files,
            &history,
            ChainTarget::Newest,
            TimelineChoice::Latest,
        );
        assert!(chain.is_whole(), "{:?}", chain.missing);
        assert_eq!(chain.range().1.as_str(), "000000020000000000000005");
    }

    #[test]
    fn two_switches_in_one_segment_read_it_from_the_newest() {
        let history = histories(&[
            (2, "1\t0/5000100\tfirst\n"),
            (3, "1\t0/5000100\tfirst\n2\t0/5000200\tsecond\n"),
        ]);
        let files = [
            "000000010000000000000002",
            "00000002.history",
            "00000003.history",
            "000000030000000000000005",
        ];
        let chain = chain(
            &files,
            &history,
            ChainTarget::Newest,
            TimelineChoice::Latest,
        );
        assert_eq!(chain.target_timeline, 3);
        assert_eq!(names(&chain.needed)[3], "000000030000000000000005");
        assert_eq!(chain.spans.len(), 3);
        assert_eq!(
            chain
                .history_files
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>(),
            ["00000002.history", "00000003.history"]
        );
    }

    #[test]
    fn a_timeline_without_history_or_from_another_branch_is_not_followed() {
        let mut files = FAILOVER.to_vec();
        files.extend([
            "000000040000000000000009",
            "00000003.history",
            "000000030000000000000001",
        ]);
        // Timeline 3 forked from timeline 1 at 0/1000000, before this base started.
        let mut history = failover_histories();
        history.extend(histories(&[(3, "1\t0/1000000\told branch\n")]));
        let chain = chain(
            &files,
            &history,
            ChainTarget::Newest,
            TimelineChoice::Latest,
        );
        assert_eq!(chain.target_timeline, 2);
        assert_eq!(chain.unfollowable, [4]);
        assert_eq!(chain.other_branches, [3]);
        for (number, reason) in [
            (
                3,
                "timeline 3: it forked from timeline 1 at 0/1000000, before the base backup's end 0/2000100",
            ),
            (
                4,
                "timeline 4: no history file 00000004.history in the archive",
            ),
        ] {
            let error = check_chain(
                &WalIndex::of_names(&files),
                &history,
                MIB_16,
                &BASE,
                ChainTarget::Newest,
                TimelineChoice::Number(number),
            )
            .unwrap_err();
            assert_eq!(error.to_string(), reason);
        }
    }

    #[test]
    fn an_lsn_target_must_be_after_the_backup_end_and_within_reach() {
        let error = check_chain(
            &WalIndex::of_names(FAILOVER),
            &failover_histories(),
            MIB_16,
            &BASE,
            ChainTarget::Lsn(Lsn(0x200_0000)),
            TimelineChoice::Latest,
        )
        .unwrap_err();
        assert!(
            matches!(error, BackupCopyError::TargetBeforeConsistency { .. }),
            "{error}"
        );
        let error = check_chain(
            &WalIndex::of_names(FAILOVER),
            &failover_histories(),
            MIB_16,
            &BASE,
            ChainTarget::Lsn(Lsn(u64::MAX)),
            TimelineChoice::Latest,
        )
        .unwrap_err();
        assert!(
            matches!(error, BackupCopyError::ChainTooLong { .. }),
            "{error}"
        );
        // Past the archive's end: the segments up to the target are missing, by name.
        let chain = chain_at(ChainTarget::Lsn(Lsn(0x900_0000)), TimelineChoice::Latest);
        assert_eq!(chain.missing.len(), 2);
        assert_eq!(chain.missing[1].as_str(), "000000020000000000000009");
    }

    #[test]
    fn other_segment_sizes_name_segments_per_log_file() {
        let size = SegmentSize::new(1 << 30).unwrap();
        let base = BasePosition {
            start: Lsn(0xC000_0028),
            timeline: 1,
            stop: None,
        };
        let files = [
            "000000010000000000000003",
            "000000010000000100000000",
            "000000010000000100000001",
        ];
        let chain = check_chain(
            &WalIndex::of_names(&files),
            &BTreeMap::new(),
            size,
            &base,
            ChainTarget::Newest,
            TimelineChoice::Latest,
        )
        .unwrap();
        assert_eq!(names(&chain.needed), files);
    }
}
