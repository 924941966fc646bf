//! `pgbak verify [TIMESTAMP | --from PATH | --all] [--json] [--jobs N]` (S-8.2): which
//! directories to check ([`crate::backup_copy::Source`], as `restore` resolves them), the
//! checks ([`crate::verify`]), and the report on stdout.
//!
//! Invariants: read-only, with or without `PGBAK` (an offsite copy is checked with `--from`);
//! no journal is read, so a running sync is never disturbed. The outcome says whether any
//! problem was found; `main.rs` maps it to exit status 1. A source that cannot be checked at all
//! (none given, no such directory) is an error, also status 1.

use crate::Error;
use crate::backup_copy::{BackupCopyError, Source};
use crate::verify::run::{JOBS_MAX, Progress};
use crate::verify::{VerifyReport, verify_directory};
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Everything `pgbak verify` was asked.
#[derive(Debug, Clone, Default)]
pub struct VerifyRequest {
    /// A `TIMESTAMP` directory of `$PGBAK`.
    pub timestamp: Option<OsString>,
    /// `--from PATH`: a backup directory or a copy of `$PGBAK`.
    pub from: Option<PathBuf>,
    /// Every directory with a base backup, not only the current one.
    pub all: bool,
    pub json: bool,
    /// Threads reading files (default: the cores).
    pub jobs: Option<u16>,
}

/// Whether the backup is whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyOutcome {
    Clean,
    ProblemsFound,
}

/// Runs `pgbak verify`; `pgbak_home` is `$PGBAK` if set.
pub fn run(
    request: &VerifyRequest,
    pgbak_home: Option<&Path>,
    out: &mut dyn Write,
) -> Result<VerifyOutcome, Error> {
    let started = Instant::now();
    let source = match (&request.from, &request.timestamp) {
        // A PATH is a path even when PGBAK is set and the path looks like a timestamp.
        (Some(path), _) => Source::resolve(Some(path), None)?,
        (None, Some(timestamp)) => {
            let home = pgbak_home.ok_or(BackupCopyError::NoSource)?;
            Source::resolve(Some(Path::new(timestamp)), Some(home))?
        }
        (None, None) => Source::resolve(None, pgbak_home)?,
    };
    let directories: Vec<PathBuf> = if request.all {
        let mut all: Vec<PathBuf> = source.bases().map(|d| d.path.clone()).collect();
        all.reverse(); // oldest first, as a listing of the home reads
        if all.is_empty() {
            return Err(BackupCopyError::NoBaseInHome {
                path: source.origin.clone(),
            }
            .into());
        }
        all
    } else {
        vec![source.base()?.to_owned()]
    };
    let jobs = request.jobs.map_or_else(
        || std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        usize::from,
    );
    let progress = Progress::new(!request.json);
    let reports = std::thread::scope(|scope| {
        scope.spawn(|| progress.draw_until_finished());
        let reports: Vec<_> = directories
            .iter()
            .map(|directory| verify_directory(directory, jobs.min(JOBS_MAX), &progress))
            .collect();
        progress.finish();
        reports
    });
    let report = VerifyReport::new(reports, started.elapsed().as_secs_f64());
    if request.json {
        report.write_json(out)
    } else {
        report.write_human(out)
    }
    .map_err(Error::output("the verify report"))?;
    Ok(if report.ok {
        VerifyOutcome::Clean
    } else {
        VerifyOutcome::ProblemsFound
    })
}
