//! `--replay`: the restored data directory brought to a consistent, shut-down state by
//! PostgreSQL itself, before pgbak returns (S-8.1).
//!
//! Owns: [`replay`], [`ReplayReport`], the choice of binaries ([`find_program`]) and the
//! reading of `pg_controldata` ([`ControlData::parse`]).
//!
//! How: `postgres --single -F -D DEST template1 < /dev/null`. Single-user mode runs the startup
//! process's recovery (from `backup_label`, with the WAL pgbak put in `pg_wal`), writes the
//! end-of-recovery checkpoint, then reads end-of-file on stdin and shuts down cleanly. `-F`
//! turns fsync off for speed; one `syncfs` of DEST afterwards (`finish.rs`) makes it all
//! durable at once. `template1` is named because single-user mode connects to a database and
//! defaults to one named like the OS user, which need not exist; `template1` always does.
//!
//! Invariants:
//! - Never as root: PostgreSQL refuses to run as root, and pgbak says so before starting it,
//!   with the way out (run as the data directory's owner). Not as anyone but DEST's owner
//!   either: PostgreSQL would refuse the directory's ownership.
//! - The binaries: `--pg-bin DIR` if given; else `/usr/lib/postgresql/<major>/bin` (Debian's
//!   layout) if it exists for the major version in `DEST/PG_VERSION`; else `postgres` and
//!   `pg_controldata` from `PATH`.
//! - `pg_controldata` runs with `LC_ALL=C`: its labels are translated otherwise.
//! - Where replay ended: "Latest checkpoint location" of `pg_controldata`. After a clean
//!   single-user run the latest checkpoint is the shutdown checkpoint written when postgres
//!   exited; only the end-of-recovery checkpoint (and, when the last replayed segment ended in
//!   a switch record, the rest of that segment) lies between it and the last replayed record,
//!   so it is the first position after the replayed WAL, and no field of `pg_control` is
//!   closer. "Minimum recovery ending location" is not it: PostgreSQL resets it to 0/0 once
//!   recovery has finished (it only means something while a standby or an interrupted archive
//!   recovery is still replaying). The exact start of the last replayed record is in
//!   postgres's own log line `redo done at X/Y`, read too when present (it is translated
//!   when `lc_messages` is not English, so it is optional). The cluster state must read
//!   "shut down", else the run did not end as it should and that is an error.

use crate::os::child_output::{LongLines, OutputRules};
use crate::os::process_group::{ChildGroup, GroupOptions, StandardOutput, describe_exit};
use crate::restore::error::ReplayError;
use crate::restore::finish::{SyncMethod, sync_tree};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Debian's and Ubuntu's place for PostgreSQL's binaries, per major version.
pub const DEBIAN_BIN_PATTERN: (&str, &str) = ("/usr/lib/postgresql/", "/bin");

/// How much of a child's output pgbak keeps for its messages.
const OUTPUT: OutputRules = OutputRules {
    line_max_bytes: 4096,
    long_lines: LongLines::Truncate,
    carriage_return_ends_line: false,
    skip_blank_lines: true,
    tail_max_bytes: 2048,
    tail_max_lines: 8,
};

/// What `--replay` did and where it ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ReplayReport {
    /// The `postgres` executable run.
    pub postgres: PathBuf,
    pub replay_seconds: f64,
    /// How DEST was made durable afterwards; `None` with `--no-sync`.
    pub sync: Option<SyncMethod>,
    /// The sync after the replay (0 with `--no-sync`).
    pub sync_seconds: f64,
    pub control: ControlData,
    /// From postgres's log line `redo done at X/Y`: the start of the last record replayed.
    pub redo_done_lsn: Option<String>,
}

/// The fields of `pg_controldata` that say where replay ended (see the module header).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ControlData {
    /// "Database cluster state", e.g. `shut down`.
    pub state: String,
    /// "Latest checkpoint location": where replay ended.
    pub checkpoint_lsn: String,
    /// "Latest checkpoint's REDO location".
    pub redo_lsn: String,
    /// "Latest checkpoint's TimeLineID".
    pub timeline: Option<u32>,
}

impl ControlData {
    /// The fields from `pg_controldata`'s output (`Label:   value` lines).
    pub fn parse(text: &str) -> ControlData {
        let mut control = ControlData::default();
        for line in text.lines() {
            let Some((label, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim().to_owned();
            match label.trim() {
                "Database cluster state" => control.state = value,
                "Latest checkpoint location" => control.checkpoint_lsn = value,
                "Latest checkpoint's REDO location" => control.redo_lsn = value,
                "Latest checkpoint's TimeLineID" => control.timeline = value.parse().ok(),
                _ => {}
            }
        }
        control
    }
}

/// Runs recovery on `dest` in single-user mode, syncs it (unless `sync` is false) and reads
/// where replay ended.
pub fn replay(dest: &Path, pg_bin: Option<&Path>, sync: bool) -> Result<ReplayReport, ReplayError> {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return Err(ReplayError::AsRoot);
    }
    let owner = std::fs::metadata(dest)
        .map_err(|source| ReplayError::Io {
            path: dest.to_owned(),
            operation: "looking at",
            source,
        })?
        .uid();
    if owner != uid.as_raw() {
        return Err(ReplayError::NotOwner {
            dest: dest.to_owned(),
            owner,
            uid: uid.as_raw(),
        });
    }
    let postgres = find_program(dest, pg_bin, "postgres");
    let started = Instant::now();
    let mut command = Command::new(&postgres);
    command
        .args(["--single", "-F", "-D"])
        .arg(dest)
        .arg("template1");
    let (status, output) = run(command, &postgres, "postgres")?;
    if !status.success() {
        return Err(ReplayError::PostgresFailed {
            dest: dest.to_owned(),
            exit: describe_exit(status),
            output: output.join(" / "),
        });
    }
    let replay_seconds = started.elapsed().as_secs_f64();
    let redo_done_lsn = output.iter().find_map(|line| redo_done_at(line));
    let sync_started = Instant::now();
    let sync = if sync {
        Some(sync_tree(dest).map_err(|source| ReplayError::Io {
            path: dest.to_owned(),
            operation: "syncing",
            source,
        })?)
    } else {
        None
    };
    let sync_seconds = sync_started.elapsed().as_secs_f64();
    let controldata = find_program(dest, pg_bin, "pg_controldata");
    let mut command = Command::new(&controldata);
    command.arg(dest).env("LC_ALL", "C").env("LANG", "C");
    let (status, lines) = run(command, &controldata, "pg_controldata")?;
    let control_problem = |problem: String| ReplayError::ControlData {
        dest: dest.to_owned(),
        problem,
    };
    if !status.success() {
        return Err(control_problem(format!(
            "{}: {}",
            describe_exit(status),
            lines.join(" / ")
        )));
    }
    let control = ControlData::parse(&lines.join("\n"));
    if control.state != "shut down" {
        return Err(control_problem(format!(
            "the cluster state is {:?} after postgres exited, expected \"shut down\"",
            control.state
        )));
    }
    if control.checkpoint_lsn.is_empty() {
        return Err(control_problem(
            "no \"Latest checkpoint location\" line".into(),
        ));
    }
    Ok(ReplayReport {
        postgres,
        replay_seconds,
        sync,
        sync_seconds,
        control,
        redo_done_lsn,
    })
}

/// `X/Y` from postgres's `LOG:  redo done at X/Y system usage: …`.
fn redo_done_at(line: &str) -> Option<String> {
    let (_, rest) = line.split_once("redo done at ")?;
    let lsn = rest.split_whitespace().next()?;
    lsn.contains('/').then(|| lsn.to_owned())
}

/// Where `program` (`postgres`, `pg_controldata`) is taken from (see the module header).
pub fn find_program(dest: &Path, pg_bin: Option<&Path>, program: &str) -> PathBuf {
    if let Some(directory) = pg_bin {
        return directory.join(program);
    }
    let major = std::fs::read_to_string(dest.join("PG_VERSION"))
        .ok()
        .map(|text| text.trim().to_owned())
        .filter(|major| !major.is_empty() && major.chars().all(|c| c.is_ascii_digit()));
    if let Some(major) = major {
        let (prefix, suffix) = DEBIAN_BIN_PATTERN;
        let directory = PathBuf::from(format!("{prefix}{major}{suffix}"));
        if directory.is_dir() {
            return directory.join(program);
        }
    }
    PathBuf::from(program)
}

/// Runs `command` under the process-group supervisor; its exit and all its output lines
/// (stdout and stderr together, the last ones kept for messages).
fn run(
    command: Command,
    program: &Path,
    name: &str,
) -> Result<(std::process::ExitStatus, Vec<String>), ReplayError> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink_lines = Arc::clone(&lines);
    let options = GroupOptions {
        name: name.into(),
        output_name: "output".into(),
        stdout: StandardOutput::Drained,
        parent_death_signal: Some(nix::sys::signal::Signal::SIGTERM),
        rules: OUTPUT,
        sink: Box::new(move |line| {
            let mut lines = sink_lines
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            // pg_controldata prints about 60 lines; postgres in single-user mode a few.
            if lines.len() < 1000 {
                lines.push(line.to_owned());
            }
        }),
    };
    let start_error = |source| ReplayError::Start {
        program: program.to_owned(),
        source,
    };
    let (group, _) = ChildGroup::spawn(command, options).map_err(start_error)?;
    let status = group.wait().map_err(|source| ReplayError::Io {
        path: program.to_owned(),
        operation: "waiting for",
        source,
    })?;
    let tail = group.output_tail();
    drop(group);
    let mut collected =
        std::mem::take(&mut *lines.lock().unwrap_or_else(|poison| poison.into_inner()));
    if !status.success() {
        // For a failure only the tail matters, within the limits of OUTPUT.
        collected = tail.lines().map(str::to_owned).collect();
    }
    Ok((status, collected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controldata_names_where_replay_ended() {
        let text = "pg_control version number:            1300\n\
                    Database cluster state:               shut down\n\
                    Latest checkpoint location:           0/3000148\n\
                    Latest checkpoint's REDO location:    0/3000148\n\
                    Latest checkpoint's REDO WAL file:    000000010000000000000003\n\
                    Latest checkpoint's TimeLineID:       1\n\
                    Minimum recovery ending location:     0/0\n";
        assert_eq!(
            ControlData::parse(text),
            ControlData {
                state: "shut down".into(),
                checkpoint_lsn: "0/3000148".into(),
                redo_lsn: "0/3000148".into(),
                timeline: Some(1),
            }
        );
    }

    #[test]
    fn the_log_line_gives_the_last_replayed_record() {
        let line = "2026-12-02 14:30:29.132 UTC [16370] LOG:  redo done at 0/2000100 system usage: CPU: user: 0.00 s";
        assert_eq!(redo_done_at(line), Some("0/2000100".into()));
        assert_eq!(redo_done_at("LOG:  redo starts at 0/2000028"), None);
    }

    #[test]
    fn as_root_it_is_refused_before_anything_runs() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: not running as root");
            return;
        }
        let error = replay(Path::new("/nonexistent"), None, false).unwrap_err();
        assert!(matches!(error, ReplayError::AsRoot));
        use crate::hint::OperatorHint;
        assert!(
            error
                .hint()
                .unwrap()
                .contains("runuser -u postgres -- pgbak restore")
        );
    }

    #[test]
    fn binaries_come_from_pg_bin_then_debian_then_path() {
        let scratch = crate::test_support::ScratchDirectory::new("replay-bin");
        assert_eq!(
            find_program(&scratch.0, Some(Path::new("/opt/pg/bin")), "postgres"),
            Path::new("/opt/pg/bin/postgres")
        );
        assert_eq!(
            find_program(&scratch.0, None, "postgres"),
            Path::new("postgres")
        );
        std::fs::write(scratch.0.join("PG_VERSION"), "15\n").unwrap();
        let expected = if Path::new("/usr/lib/postgresql/15/bin").is_dir() {
            PathBuf::from("/usr/lib/postgresql/15/bin/pg_controldata")
        } else {
            PathBuf::from("pg_controldata")
        };
        assert_eq!(find_program(&scratch.0, None, "pg_controldata"), expected);
        std::fs::write(scratch.0.join("PG_VERSION"), "../../x\n").unwrap();
        assert_eq!(
            find_program(&scratch.0, None, "postgres"),
            Path::new("postgres")
        );
    }
}
