//! `pgbak restore DEST …` (S-8.1): decides what to restore with [`crate::backup_copy`] (the
//! source, the base, the WAL chain, the mode) and has [`crate::restore`] write it.
//!
//! Invariants: nothing is written before the source is resolved, the base chosen and the WAL
//! chain checked whole (S-8.1.6); a gap is refused with every missing segment named unless
//! `--allow-gap`; the mode follows S-8.1.7 — the seed's crash recovery from `pg_wal` when the
//! chain stays on the base backup's timeline and no target was asked for, archive recovery
//! through `pgbak restore-wal` otherwise. The choices made are printed on stderr, one line each.

use crate::Error;
use crate::backup_copy::{
    self, BackupCopyError, BasePosition, Chain, ChainTarget, Lsn, Source, TimelineChoice, WalIndex,
};
use crate::hint::OperatorHint;
use crate::restore::{
    self, Materialize, MaterializeReport, RecoverySettings, ReplayReport, TargetAction,
    TargetTimeline,
};
use crate::wal_name::WalFileName;
use serde::Serialize;
use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `--target-…`, as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetArgument {
    Time(String),
    Lsn(String),
    Name(String),
    Xid(String),
    Immediate,
}

/// Everything `pgbak restore` was asked.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub dest: PathBuf,
    pub from: Option<OsString>,
    pub target: Option<TargetArgument>,
    pub target_action: Option<String>,
    pub target_timeline: Option<String>,
    pub standby: bool,
    pub primary_conninfo: Option<String>,
    pub replay: bool,
    pub pg_bin: Option<PathBuf>,
    pub jobs: Option<u16>,
    pub sync: bool,
    pub allow_gap: bool,
    pub json: bool,
}

/// Why `pgbak restore` refused before writing anything (the rooms' own errors pass through).
#[derive(Debug, thiserror::Error)]
pub enum RestoreCommandError {
    #[error(
        "{}: the WAL chain from {first} to {last} misses {} segment(s): {}",
        .base.display(), .missing.len(), list_names(.missing)
    )]
    Gap {
        base: PathBuf,
        first: WalFileName,
        last: WalFileName,
        missing: Vec<WalFileName>,
    },
    #[error(
        "--target-lsn {0:?}: not a WAL location (expected X/Y in hex, as pg_current_wal_lsn() prints)"
    )]
    BadLsn(String),
    #[error("--target-timeline {0:?}: expected latest, current or a timeline number")]
    BadTimeline(String),
    #[error(
        "{}: no backup history file (*.backup) in its pg_wal: where its base backup starts is unknown",
        .0.display()
    )]
    NoBackupHistory(PathBuf),
    #[error("--replay runs postgres, which refuses to run as root")]
    ReplayAsRoot,
}

fn list_names(names: &[WalFileName]) -> String {
    const SHOWN: usize = 20;
    let mut text = names
        .iter()
        .take(SHOWN)
        .map(WalFileName::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

impl OperatorHint for RestoreCommandError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            RestoreCommandError::Gap { .. } => {
                "fetch the missing files from the offsite copy into \
                the source's pg_wal/ (as NAME.zst), or restore an older point with --target-lsn \
                or --target-time; --allow-gap restores anyway and recovery stops at the first gap"
                    .to_owned()
            }
            RestoreCommandError::BadLsn(_) => "for example --target-lsn 0/5000100".to_owned(),
            RestoreCommandError::BadTimeline(_) => {
                "for example --target-timeline latest, or --target-timeline 2".to_owned()
            }
            RestoreCommandError::NoBackupHistory(_) => "restore with the manual recipe in the \
                README (tar -xf base.tzst, zstd -d the WAL into pg_wal), which needs no history \
                file"
                .to_owned(),
            RestoreCommandError::ReplayAsRoot => "run pgbak restore as the PostgreSQL OS user, \
                e.g. runuser -u postgres -- pgbak restore … --replay"
                .to_owned(),
        })
    }
}

/// How the restored server will recover (S-8.1.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The seed's: every WAL file of the chain in `pg_wal`, no signal file.
    CrashRecovery,
    /// `recovery.signal` and `restore_command`: a target, or a chain across timelines.
    ArchiveRecovery,
    /// `standby.signal` and `restore_command`.
    Standby,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct RestoreSummary<'a> {
    dest: &'a Path,
    source: &'a Path,
    base: &'a Path,
    chosen_because: Option<&'a str>,
    mode: Mode,
    target: Option<String>,
    target_timeline: u32,
    wal: WalSummary,
    signal_file: Option<&'static str>,
    restore_command: Option<String>,
    timings_ms: Timings,
    bytes: Bytes,
    replay: Option<&'a ReplayReport>,
}

#[derive(Debug, Serialize)]
struct WalSummary {
    first: String,
    last: String,
    segments: usize,
    decompressed: u64,
    missing: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Timings {
    /// Base extraction and WAL decompression, which run at once.
    prepare: u64,
    sync: u64,
    replay: u64,
    total: u64,
}

#[derive(Debug, Serialize)]
struct Bytes {
    base: u64,
    wal: u64,
}

fn parse_timeline(text: &str) -> Result<TimelineChoice, RestoreCommandError> {
    match text {
        "latest" => Ok(TimelineChoice::Latest),
        "current" => Ok(TimelineChoice::Current),
        number => {
            let parsed = match number.strip_prefix("0x") {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => number.parse().ok(),
            };
            parsed
                .filter(|&timeline| timeline > 0)
                .map(TimelineChoice::Number)
                .ok_or_else(|| RestoreCommandError::BadTimeline(text.to_owned()))
        }
    }
}

fn parse_action(text: &str) -> TargetAction {
    match text {
        "promote" => TargetAction::Promote,
        "shutdown" => TargetAction::Shutdown,
        _ => TargetAction::Pause,
    }
}

/// The target for `backup_copy::choose`, checked (a time with its zone, an LSN).
fn parse_target(target: &TargetArgument) -> Result<backup_copy::RecoveryTarget, crate::Error> {
    Ok(match target {
        TargetArgument::Time(text) => {
            backup_copy::RecoveryTarget::Time(backup_copy::parse_zoned_time(text).map_err(
                |problem| BackupCopyError::BadTargetTime {
                    text: text.clone(),
                    source: problem,
                },
            )?)
        }
        TargetArgument::Lsn(text) => backup_copy::RecoveryTarget::Lsn(
            Lsn::parse(text).ok_or_else(|| RestoreCommandError::BadLsn(text.clone()))?,
        ),
        TargetArgument::Name(name) => backup_copy::RecoveryTarget::Name(name.clone()),
        TargetArgument::Xid(xid) => backup_copy::RecoveryTarget::Xid(xid.clone()),
        TargetArgument::Immediate => backup_copy::RecoveryTarget::Immediate,
    })
}

fn settings_target(target: &TargetArgument) -> restore::RecoveryTarget {
    match target {
        TargetArgument::Time(text) => restore::RecoveryTarget::Time(text.clone()),
        TargetArgument::Lsn(text) => restore::RecoveryTarget::Lsn(text.clone()),
        TargetArgument::Name(name) => restore::RecoveryTarget::Name(name.clone()),
        TargetArgument::Xid(xid) => restore::RecoveryTarget::Xid(xid.clone()),
        TargetArgument::Immediate => restore::RecoveryTarget::Immediate,
    }
}

fn describe_target(target: &TargetArgument) -> String {
    match target {
        TargetArgument::Time(text) => format!("time {text}"),
        TargetArgument::Lsn(text) => format!("lsn {text}"),
        TargetArgument::Name(name) => format!("restore point {name}"),
        TargetArgument::Xid(xid) => format!("xid {xid}"),
        TargetArgument::Immediate => "immediate".to_owned(),
    }
}

fn millis(seconds: f64) -> u64 {
    (seconds * 1000.0).round() as u64
}

/// Runs `pgbak restore`; `pgbak_home` is `$PGBAK` if set. Notes go to `notes` (stderr).
pub fn run(
    request: &RestoreRequest,
    pgbak_home: Option<&Path>,
    out: &mut dyn Write,
    notes: &mut dyn Write,
) -> Result<(), Error> {
    let started = Instant::now();
    if request.replay && nix::unistd::geteuid().is_root() {
        return Err(RestoreCommandError::ReplayAsRoot.into());
    }
    let target = request.target.as_ref();
    let parsed_target = target.map(parse_target).transpose()?;
    let timeline_choice = request
        .target_timeline
        .as_deref()
        .map(parse_timeline)
        .transpose()?;
    let from = request.from.as_ref().map(PathBuf::from);
    let mut source = Source::resolve(from.as_deref(), pgbak_home)?;
    let index = WalIndex::build(&source.pool())?;
    let histories = index.histories()?;
    let segment_size = index.segment_size().size;

    // The base: the one asked for, or with a target and no --from, pgbak's choice (S-8.1.3).
    let mut chosen_because = None;
    if let (Some(parsed), None) = (&parsed_target, &request.from) {
        let candidates = backup_copy::gather_candidates(
            &source,
            &index,
            &histories,
            segment_size,
            timeline_choice.unwrap_or(TimelineChoice::Latest),
        )?;
        let choice = backup_copy::choose(&candidates, parsed)?;
        writeln!(
            notes,
            "pgbak: restoring from {}: {}",
            choice.path.display(),
            choice.reason
        )
        .map_err(Error::output("the restore's notes"))?;
        source = source.with_base(&choice.path)?;
        chosen_because = Some(choice.reason);
    }
    let base = source.base()?.to_owned();
    let Some((_, backup_history)) = backup_copy::base_backup_history(&base)? else {
        return Err(RestoreCommandError::NoBackupHistory(base).into());
    };
    let position = BasePosition::from(&backup_history);
    // How far the WAL must be whole: to an LSN target; to the base backup's end for
    // --target-immediate; otherwise (a time, a name, an xid: positions only replay finds, or no
    // target) to the newest archived segment.
    let chain_target = match (&parsed_target, position.stop) {
        (Some(backup_copy::RecoveryTarget::Lsn(lsn)), _) => ChainTarget::Lsn(*lsn),
        (Some(backup_copy::RecoveryTarget::Immediate), Some(stop)) => ChainTarget::Lsn(stop),
        _ => ChainTarget::Newest,
    };
    let chain = backup_copy::check_chain(
        &index,
        &histories,
        segment_size,
        &position,
        chain_target,
        timeline_choice.unwrap_or(TimelineChoice::Latest),
    )?;
    report_unfollowed(&chain, notes)?;
    if !chain.is_whole() {
        let (first, last) = chain.range();
        let gap = RestoreCommandError::Gap {
            base: base.clone(),
            first: first.clone(),
            last: last.clone(),
            missing: chain.missing.clone(),
        };
        if !request.allow_gap {
            return Err(gap.into());
        }
        let reached = chain
            .needed
            .iter()
            .take_while(|segment| segment.location.is_some())
            .last()
            .map_or_else(|| "no segment".to_owned(), |s| s.name.to_string());
        writeln!(
            notes,
            "pgbak: --allow-gap: {gap}; recovery will stop at the end of {reached}, and \
             everything after it is lost"
        )
        .map_err(Error::output("the restore's notes"))?;
    }

    // The mode (S-8.1.7): crash recovery from pg_wal only when no target was asked for and the
    // chain stays on the base's timeline, which crash recovery cannot leave.
    let mode = if request.standby {
        Mode::Standby
    } else if target.is_some() || chain.spans.len() > 1 {
        Mode::ArchiveRecovery
    } else {
        Mode::CrashRecovery
    };
    if mode == Mode::ArchiveRecovery && target.is_none() {
        writeln!(
            notes,
            "pgbak: the WAL crosses from timeline {} to timeline {}, which recovery from pg_wal \
             alone cannot follow: preparing archive recovery (recovery.signal, restore_command) \
             to the end of timeline {}",
            position.timeline, chain.target_timeline, chain.target_timeline
        )
        .map_err(Error::output("the restore's notes"))?;
    }
    let recovery = match mode {
        Mode::CrashRecovery => None,
        Mode::ArchiveRecovery | Mode::Standby => Some(RecoverySettings {
            pgbak: restore::pgbak_executable().map_err(|source| restore::RestoreError::Io {
                operation: "finding the path of",
                path: PathBuf::from("/proc/self/exe"),
                source,
            })?,
            source: source.origin.clone(),
            target: target.map(settings_target),
            target_action: request.target_action.as_deref().map(parse_action),
            // The number the chain was checked along, not `latest`: PostgreSQL's `latest`
            // may pick a timeline that does not descend from this base.
            target_timeline: Some(TargetTimeline::Number(chain.target_timeline)),
            standby: request.standby,
            primary_conninfo: request.primary_conninfo.clone(),
        }),
    };
    let wal: Vec<(WalFileName, PathBuf)> = match mode {
        Mode::CrashRecovery => chain
            .needed
            .iter()
            .map_while(|segment| Some((segment.name.clone(), segment.location.clone()?)))
            .chain(chain.history_files.iter().cloned())
            .collect(),
        Mode::ArchiveRecovery | Mode::Standby => Vec::new(),
    };
    let restore_command = recovery.as_ref().map(RecoverySettings::restore_command);
    let report: MaterializeReport = restore::materialize(Materialize {
        dest: &request.dest,
        base_tzst: &base.join(crate::home::names::BASE_FILE_NAME),
        wal,
        segment_size: segment_size.bytes(),
        recovery,
        jobs: request.jobs.map_or(0, usize::from),
        // With --replay the one sync comes after the replay (the seed's order).
        sync: request.sync && !request.replay,
        progress: !request.json && std::io::stderr().is_terminal(),
    })?;
    let replay = if request.replay {
        Some(restore::replay(
            &request.dest,
            request.pg_bin.as_deref(),
            request.sync,
        )?)
    } else {
        None
    };
    let (first, last) = chain.range();
    let summary = RestoreSummary {
        dest: &request.dest,
        source: &source.origin,
        base: &base,
        chosen_because: chosen_because.as_deref(),
        mode,
        target: target.map(describe_target),
        target_timeline: chain.target_timeline,
        wal: WalSummary {
            first: first.to_string(),
            last: last.to_string(),
            segments: chain.needed.len(),
            decompressed: report.wal.files,
            missing: chain.missing.iter().map(ToString::to_string).collect(),
        },
        signal_file: report.signal_file,
        restore_command,
        timings_ms: Timings {
            prepare: millis(report.total_seconds - report.sync_seconds),
            sync: millis(report.sync_seconds)
                + replay.as_ref().map_or(0, |r| millis(r.sync_seconds)),
            replay: replay.as_ref().map_or(0, |r| millis(r.replay_seconds)),
            total: millis(started.elapsed().as_secs_f64()),
        },
        bytes: Bytes {
            base: report.base.bytes,
            wal: report.wal.bytes,
        },
        replay: replay.as_ref(),
    };
    if request.json {
        serde_json::to_writer_pretty(&mut *out, &summary)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
            .map_err(Error::output("the JSON summary"))?;
    } else {
        render_summary(&summary, out).map_err(Error::output("the restore's summary"))?;
    }
    Ok(())
}

fn report_unfollowed(chain: &Chain, notes: &mut dyn Write) -> Result<(), Error> {
    for timeline in &chain.unfollowable {
        writeln!(
            notes,
            "pgbak: timeline {timeline} has WAL in the source but no history file: not followed"
        )
        .map_err(Error::output("the restore's notes"))?;
    }
    for timeline in &chain.other_branches {
        writeln!(
            notes,
            "pgbak: timeline {timeline} does not descend from this base backup: not followed"
        )
        .map_err(Error::output("the restore's notes"))?;
    }
    Ok(())
}

fn render_summary(summary: &RestoreSummary<'_>, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "restored {} into {} ({} MB of base backup) in {:.1} s",
        summary.base.display(),
        summary.dest.display(),
        summary.bytes.base / 1_000_000,
        summary.timings_ms.total as f64 / 1000.0
    )?;
    writeln!(
        out,
        "WAL: {} segment(s) from {} to {} on timeline {}",
        summary.wal.segments, summary.wal.first, summary.wal.last, summary.target_timeline
    )?;
    match summary.mode {
        Mode::CrashRecovery => writeln!(
            out,
            "{} WAL file(s) decompressed into pg_wal; no signal file (the manual recipe's result)",
            summary.wal.decompressed
        )?,
        Mode::ArchiveRecovery | Mode::Standby => {
            writeln!(
                out,
                "{} written; postgresql.auto.conf: restore_command = {}",
                summary.signal_file.unwrap_or("no signal file"),
                summary.restore_command.as_deref().unwrap_or("")
            )?;
            if let Some(target) = &summary.target {
                writeln!(out, "recovery target: {target}")?;
            }
        }
    }
    match summary.replay {
        Some(replay) => writeln!(
            out,
            "replayed: {} (cluster state: {})",
            replay.redo_done_lsn.as_deref().map_or_else(
                || format!("checkpoint {}", replay.control.checkpoint_lsn),
                |lsn| format!("redo done at {lsn}")
            ),
            replay.control.state
        )?,
        None => writeln!(
            out,
            "next: start PostgreSQL on {} as its owner",
            summary.dest.display()
        )?,
    }
    Ok(())
}
