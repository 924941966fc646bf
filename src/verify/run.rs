//! One backup directory verified (S-8.2): [`verify_directory`] reads every file over `--jobs`
//! threads, then runs the pure checks over what they found; [`Progress`] draws the line.
//!
//! Invariants: the files are read in parallel, largest first (`base.tzst` starts at once, the
//! segments fill the other threads), each by exactly one thread; the result does not depend on
//! the order they finish in (the report sorts the problems). Nothing is written.

use super::base_archive::{BaseCheck, check_base};
use super::chain::{ChainInput, check_switch_segments, check_system_identifiers, check_wal_chain};
use super::report::{DirectoryReport, Problem};
use super::wal_files::{WalFileCheck, check_wal_file};
use crate::backup_copy::catalog::read_small_text;
use crate::backup_copy::{BasePosition, TimelineHistory, WalIndex, base_backup_history};
use crate::home::names::{BASE_FILE_NAME, WAL_DIRECTORY_NAME};
use crate::wal_name::{WalFileKind, WalFileName};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How often the progress line is redrawn.
const REDRAW_INTERVAL: Duration = Duration::from_millis(250);
/// The most threads `--jobs` may ask for.
pub const JOBS_MAX: usize = 256;

/// The progress line: drawn on stderr only when it is a terminal and it was wanted.
pub struct Progress {
    enabled: bool,
    started: Instant,
    /// Decompressed bytes checked so far.
    pub bytes: AtomicU64,
    pub files_done: AtomicU64,
    pub files_total: AtomicU64,
    finished: AtomicBool,
}

impl Progress {
    pub fn new(wanted: bool) -> Progress {
        Progress {
            enabled: wanted && std::io::stderr().is_terminal(),
            started: Instant::now(),
            bytes: AtomicU64::new(0),
            files_done: AtomicU64::new(0),
            files_total: AtomicU64::new(0),
            finished: AtomicBool::new(false),
        }
    }

    /// Redraws until [`Progress::finish`]; run on a thread of its own.
    pub fn draw_until_finished(&self) {
        if !self.enabled {
            return;
        }
        while !self.finished.load(Ordering::Relaxed) {
            let _ = write!(std::io::stderr(), "\r\x1b[2K{}", self.line());
            std::thread::sleep(REDRAW_INTERVAL);
        }
        let _ = write!(std::io::stderr(), "\r\x1b[2K");
    }

    pub fn finish(&self) {
        self.finished.store(true, Ordering::Relaxed);
    }

    fn line(&self) -> String {
        let bytes = self.bytes.load(Ordering::Relaxed);
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        format!(
            "pgbak verify: {}/{} files, {:.1} MB checked, {:.0} MB/s",
            self.files_done.load(Ordering::Relaxed),
            self.files_total.load(Ordering::Relaxed),
            bytes as f64 / 1e6,
            bytes as f64 / seconds / 1e6
        )
    }
}

/// One file to read.
enum Job {
    Base(PathBuf),
    Wal(WalFileName, PathBuf),
}

enum Outcome {
    Base(Box<BaseCheck>),
    Wal(WalFileCheck),
}

/// Every entry of `pg_wal/` that is not an archived WAL file pgbak writes.
fn unexpected_entries(directory: &Path) -> Vec<Problem> {
    let wal_directory = directory.join(WAL_DIRECTORY_NAME);
    let Ok(entries) = std::fs::read_dir(&wal_directory) else {
        return vec![Problem::new(
            "unreadable",
            &wal_directory,
            None,
            "a readable pg_wal directory",
            "none",
        )];
    };
    let mut problems = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let known = file_name
            .to_str()
            .and_then(|n| n.strip_suffix(".zst"))
            .and_then(WalFileName::parse)
            .is_some();
        if !known {
            problems.push(Problem::new(
                "unexpected_entry",
                &entry.path(),
                None,
                "only archived WAL files (NAME.zst)",
                "another name",
            ));
        }
    }
    problems
}

/// The history files that parse (a damaged one is reported by its own file check).
fn readable_histories(index: &WalIndex) -> BTreeMap<u32, TimelineHistory> {
    index
        .names()
        .filter(|n| n.kind() == WalFileKind::History)
        .filter_map(|name| {
            let path = &index.location(name)?.path;
            let text = read_small_text(path).ok()?;
            let history = TimelineHistory::parse(name.timeline(), &text).ok()?;
            Some((name.timeline(), history))
        })
        .collect()
}

/// Verifies one backup directory (with `base.tzst` or not) over `jobs` threads.
pub fn verify_directory(directory: &Path, jobs: usize, progress: &Progress) -> DirectoryReport {
    let mut report = DirectoryReport {
        directory: directory.to_owned(),
        ..DirectoryReport::default()
    };
    let index = match WalIndex::build(&[directory.to_owned()]) {
        Ok(index) => index,
        Err(error) => {
            report.problems.push(Problem::new(
                "unreadable",
                &directory.join(WAL_DIRECTORY_NAME),
                None,
                "a readable pg_wal directory",
                crate::error::one_line(&error),
            ));
            return report;
        }
    };
    if directory.join(WAL_DIRECTORY_NAME).is_dir() {
        report.problems.extend(unexpected_entries(directory));
    }
    for irregular in &index.irregular {
        report.problems.push(Problem::new(
            "not_a_regular_file",
            &irregular.path,
            None,
            "a regular file",
            irregular.what,
        ));
    }
    let segment_size = index.segment_size().size;
    let base_path = directory.join(BASE_FILE_NAME);
    let mut jobs_list = Vec::new();
    if base_path.exists() || std::fs::symlink_metadata(&base_path).is_ok() {
        jobs_list.push(Job::Base(base_path.clone()));
    }
    let mut wal: Vec<(u64, WalFileName, PathBuf)> = index
        .names()
        .filter_map(|name| {
            let location = index.location(name)?;
            Some((
                location.compressed_bytes,
                name.clone(),
                location.path.clone(),
            ))
        })
        .collect();
    wal.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    jobs_list.extend(wal.into_iter().map(|(_, name, path)| Job::Wal(name, path)));
    progress
        .files_total
        .fetch_add(jobs_list.len() as u64, Ordering::Relaxed);

    let next = AtomicUsize::new(0);
    let outcomes = Mutex::new(Vec::with_capacity(jobs_list.len()));
    let threads = jobs.clamp(1, JOBS_MAX).min(jobs_list.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while let Some(job) = jobs_list.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let outcome = match job {
                        Job::Base(path) => {
                            Outcome::Base(Box::new(check_base(path, &progress.bytes)))
                        }
                        Job::Wal(name, path) => {
                            Outcome::Wal(check_wal_file(path, name, segment_size, &progress.bytes))
                        }
                    };
                    progress.files_done.fetch_add(1, Ordering::Relaxed);
                    outcomes
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(outcome);
                }
            });
        }
    });
    let outcomes = outcomes
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);

    let mut base = None;
    let mut system_identifiers = Vec::new();
    let mut header_timelines = Vec::new();
    for outcome in outcomes {
        report.files += 1;
        match outcome {
            Outcome::Base(check) => {
                report.compressed_bytes += check.compressed_bytes;
                report.uncompressed_bytes += check.uncompressed_bytes;
                report.members += check.members;
                report.problems.extend(check.problems.iter().cloned());
                base = Some(check);
            }
            Outcome::Wal(check) => {
                report.compressed_bytes += check.compressed_bytes;
                report.uncompressed_bytes += check.uncompressed_bytes;
                report.problems.extend(check.problems);
                if let Some(timeline) = check.header_timeline {
                    header_timelines.push((check.path.clone(), check.name.clone(), timeline));
                }
                if let Some(found) = check.system_identifier {
                    system_identifiers.push((check.path, found));
                }
            }
        }
    }
    let Some(base) = base else {
        // A directory without a base backup (pending, failed): its files are checked, the
        // chain has no start to be checked from.
        return report;
    };
    report.problems.extend(check_system_identifiers(
        base.system_identifier,
        &system_identifiers,
    ));
    let histories = readable_histories(&index);
    report.problems.extend(check_switch_segments(
        &histories,
        segment_size,
        &header_timelines,
    ));
    let position = base_backup_history(directory)
        .ok()
        .flatten()
        .map(|(_, history)| BasePosition::from(&history));
    let wal_ranges = base
        .manifest
        .as_ref()
        .map(|m| m.wal_ranges.clone())
        .unwrap_or_default();
    let (problems, chain_segments) = check_wal_chain(&ChainInput {
        directory,
        index: &index,
        histories: &histories,
        segment_size,
        base: position,
        wal_ranges: &wal_ranges,
    });
    report.problems.extend(problems);
    report.chain_segments = chain_segments;
    report
}
