//! One archived WAL file checked whole (S-8.2): [`check_wal_file`].
//!
//! Owns: the per-file checks of `pg_wal/*.zst`. The decoding is `restore`'s
//! [`decompress_verified`] (every frame decoded and its checksum checked, nothing after the
//! stream, the exact segment size, a long page header whose timeline and page address agree
//! with the name), into a sink that keeps only the first bytes; on top of it:
//! - the zstd frame headers, which no checksum covers ([`super::zstd_frames`]);
//! - a segment's system identifier, returned for the caller to compare with `pg_control`'s;
//! - a timeline history file parses, a backup history file parses and its name agrees with its
//!   `START WAL LOCATION` (timeline, segment and offset).
//!
//! Invariant: read-only; a file never costs more memory than its first bytes (a history file is
//! bounded by `HISTORY_FILE_SIZE_MAX_BYTES`, which `decompress_verified` enforces).

use super::report::Problem;
use super::zstd_frames::check_frame_headers;
use crate::backup_copy::catalog::open_regular;
use crate::backup_copy::{BackupHistory, SegmentSize, TimelineHistory};
use crate::restore::{RestoreWalError, WalDamage, decompress_verified};
use crate::wal_header::{LONG_PAGE_HEADER_BYTES, LongPageHeader};
use crate::wal_name::{WalFileKind, WalFileName};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What one file turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalFileCheck {
    pub name: WalFileName,
    pub path: PathBuf,
    pub compressed_bytes: u64,
    pub uncompressed_bytes: u64,
    /// A segment's `xlp_sysid`, when its header could be read.
    pub system_identifier: Option<u64>,
    /// A segment's `xlp_tli`, when its header could be read: older than its name's timeline
    /// only for the segment where that timeline began (checked with the history files).
    pub header_timeline: Option<u32>,
    pub problems: Vec<Problem>,
}

/// Keeps the first `keep` bytes written and counts the rest; adds to `progress` as it goes.
struct Head<'a> {
    keep: usize,
    bytes: Vec<u8>,
    total: u64,
    progress: &'a AtomicU64,
}

impl Write for Head<'_> {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        let room = self.keep.saturating_sub(self.bytes.len()).min(buffer.len());
        self.bytes.extend_from_slice(&buffer[..room]);
        self.total += buffer.len() as u64;
        self.progress
            .fetch_add(buffer.len() as u64, Ordering::Relaxed);
        Ok(buffer.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Checks the stored file `path` holding `name`, for a cluster of `segment_size`.
/// `progress` counts decompressed bytes.
pub fn check_wal_file(
    path: &Path,
    name: &WalFileName,
    segment_size: SegmentSize,
    progress: &AtomicU64,
) -> WalFileCheck {
    let mut check = WalFileCheck {
        name: name.clone(),
        path: path.to_owned(),
        compressed_bytes: 0,
        uncompressed_bytes: 0,
        system_identifier: None,
        header_timeline: None,
        problems: Vec::new(),
    };
    let unreadable = |error: &dyn std::fmt::Display| {
        Problem::new(
            "unreadable",
            path,
            None,
            "a readable regular file",
            error.to_string(),
        )
    };
    let headers = open_regular(path).and_then(|file| {
        let length = file
            .metadata()
            .map_err(|source| crate::backup_copy::BackupCopyError::Unreadable {
                path: path.to_owned(),
                source,
            })?
            .len();
        Ok((file, length))
    });
    let (file, length) = match headers {
        Ok(opened) => opened,
        Err(error) => {
            check
                .problems
                .push(unreadable(&crate::error::one_line(&error)));
            return check;
        }
    };
    check.compressed_bytes = length;
    match check_frame_headers(&file, path, length) {
        Ok(Some(problem)) => check.problems.push(problem),
        Ok(None) => {}
        Err(error) => check.problems.push(unreadable(&error)),
    }
    let is_segment = matches!(name.kind(), WalFileKind::Segment | WalFileKind::Partial);
    let mut head = Head {
        keep: if is_segment {
            LONG_PAGE_HEADER_BYTES
        } else {
            usize::MAX
        },
        bytes: Vec::new(),
        total: 0,
        progress,
    };
    let size = is_segment.then_some(segment_size.bytes());
    let outcome = decompress_verified(path, name, size, &mut head, Path::new("(memory)"));
    check.uncompressed_bytes = head.total;
    if let Err(error) = outcome {
        check.problems.push(damage_problem(path, &error));
        return check;
    }
    match name.kind() {
        WalFileKind::Segment | WalFileKind::Partial => {
            let header = LongPageHeader::parse(&head.bytes, segment_size.bytes());
            check.system_identifier = header.map(|header| header.system_identifier);
            check.header_timeline = header.map(|header| header.timeline);
        }
        WalFileKind::History => {
            let text = String::from_utf8_lossy(&head.bytes);
            if let Err(problem) = TimelineHistory::parse(name.timeline(), &text) {
                check.problems.push(Problem::new(
                    "bad_history",
                    path,
                    Some(format!("line {}", problem.line)),
                    "a timeline history file as PostgreSQL writes it",
                    problem.problem,
                ));
            }
        }
        WalFileKind::BackupHistory => {
            let text = String::from_utf8_lossy(&head.bytes);
            match BackupHistory::parse(&text) {
                Err(problem) => check.problems.push(Problem::new(
                    "bad_backup_history",
                    path,
                    None,
                    "a backup history file as PostgreSQL writes it",
                    problem.to_string(),
                )),
                Ok(history) => {
                    let expected = backup_history_name(&history, segment_size);
                    if expected != name.as_str() {
                        check.problems.push(Problem::new(
                            "wrong_name",
                            path,
                            None,
                            format!("the name {expected} (its START WAL LOCATION)"),
                            name.as_str(),
                        ));
                    }
                }
            }
        }
    }
    check
}

/// The name PostgreSQL gives the backup history file of a backup that started at `history`'s
/// start (`BackupHistoryFileName`: segment name, then the offset in the segment).
fn backup_history_name(history: &BackupHistory, segment_size: SegmentSize) -> String {
    let segment = segment_size.segment_of(history.start);
    format!(
        "{}.{:08X}.backup",
        segment_size.segment_name(history.start_timeline, segment),
        history.start.0 % segment_size.bytes()
    )
}

/// A failed decompression as a problem.
fn damage_problem(path: &Path, error: &RestoreWalError) -> Problem {
    let RestoreWalError::Damaged { problem, .. } = error else {
        return Problem::new(
            "unreadable",
            path,
            None,
            "a readable file",
            crate::error::one_line(error),
        );
    };
    let (code, expected, found) = match problem {
        WalDamage::Decode(message) => (
            "zstd_damaged",
            "a whole zstd stream whose checksums hold".to_owned(),
            message.clone(),
        ),
        WalDamage::WrongSize { expected, found } => (
            "wrong_size",
            format!("{expected} bytes (the segment size)"),
            format!("{found} bytes"),
        ),
        WalDamage::TooLarge { limit, expected } => (
            "wrong_size",
            (*expected).to_owned(),
            format!("more than {limit} bytes"),
        ),
        WalDamage::NoLongPageHeader { detail } => (
            "no_page_header",
            format!("a WAL long page header{detail}"),
            "none".to_owned(),
        ),
        WalDamage::WrongTimeline { expected, found } => (
            "wrong_timeline",
            format!("timeline {expected} (its name)"),
            format!("timeline {found} in its page header"),
        ),
        WalDamage::WrongPageAddress { expected, found } => (
            "wrong_page_address",
            format!("page address {expected} (its name)"),
            format!("page address {found} in its page header"),
        ),
    };
    Problem::new(code, path, None, expected, found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup_copy::Lsn;
    use crate::test_support::ScratchDirectory;

    const SIZE: u64 = 1 << 20;

    fn store(directory: &Path, name: &str, content: &[u8]) -> PathBuf {
        let path = directory.join(format!("{name}.zst"));
        let mut compressor = zstd::bulk::Compressor::new(1).unwrap();
        compressor
            .set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))
            .unwrap();
        std::fs::write(&path, compressor.compress(content).unwrap()).unwrap();
        path
    }

    fn segment(timeline: u32, segno: u64, system_identifier: u64) -> Vec<u8> {
        let mut bytes = vec![0u8; SIZE as usize];
        LongPageHeader {
            timeline,
            page_address: segno * SIZE,
            system_identifier,
            segment_size_bytes: SIZE as u32,
        }
        .write_to(&mut bytes);
        bytes
    }

    fn run(path: &Path, name: &str) -> WalFileCheck {
        let size = SegmentSize::new(SIZE).unwrap();
        check_wal_file(
            path,
            &WalFileName::parse(name).unwrap(),
            size,
            &AtomicU64::new(0),
        )
    }

    #[test]
    fn a_good_segment_gives_its_system_identifier_and_a_renamed_one_is_caught() {
        let scratch = ScratchDirectory::new("verify-wal-file");
        let name = "000000010000000000000003";
        let path = store(&scratch.0, name, &segment(1, 3, 42));
        let check = run(&path, name);
        assert_eq!(check.problems, vec![]);
        assert_eq!(check.system_identifier, Some(42));
        assert_eq!(check.uncompressed_bytes, SIZE);
        let renamed = run(&path, "000000010000000000000004");
        assert_eq!(renamed.problems[0].code, "wrong_page_address");
        // Renamed to a newer timeline: an older header timeline is what a switch segment
        // has, so this file alone cannot tell; `chain::check_switch_segments` does, with the
        // history files. Renamed to an older timeline it is wrong at once.
        let newer_timeline = run(&path, "000000020000000000000003");
        assert_eq!(newer_timeline.header_timeline, Some(1));
        let path_2 = store(&scratch.0, "000000020000000000000003", &segment(2, 3, 42));
        let older_timeline = run(&path_2, "000000010000000000000003");
        assert_eq!(older_timeline.problems[0].code, "wrong_timeline");
    }

    #[test]
    fn a_backup_history_file_must_carry_its_own_name() {
        let scratch = ScratchDirectory::new("verify-backup-history");
        let text = "START WAL LOCATION: 0/300028 (file 000000010000000000000003)\n\
                    STOP WAL LOCATION: 0/300100 (file 000000010000000000000003)\n\
                    CHECKPOINT LOCATION: 0/300060\nBACKUP METHOD: streamed\n\
                    BACKUP FROM: primary\nSTART TIME: 2026-12-01 00:00:00 UTC\n\
                    LABEL: pg_basebackup base backup\nSTART TIMELINE: 1\n\
                    STOP TIME: 2026-12-01 00:00:01 UTC\nSTOP TIMELINE: 1\n";
        let good = "000000010000000000000003.00000028.backup";
        let path = store(&scratch.0, good, text.as_bytes());
        let history = BackupHistory::parse(text).unwrap();
        assert_eq!(history.start, Lsn(0x30_0028)); // 1 MiB segments: segment 3
        assert_eq!(run(&path, good).problems, vec![]);
        let bad = run(&path, "000000010000000000000003.00000030.backup");
        assert_eq!(bad.problems[0].code, "wrong_name");
    }
}
