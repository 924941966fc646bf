//! The `pgbak` binary: parses arguments, runs one command, maps the outcome to an exit code.
//!
//! Owns: the command-line surface (clap derive) and the error report format: one line
//! `pgbak: <subject>: <problem>` and, where the operator can act, a second line `hint: …`.
//! Invariants: every outcome exits 0 or 1 (S-2.5: PostgreSQL treats exit codes above 125 from
//! `archive_command` as fatal for the archiver); a panic is caught, reported in one line and
//! exits 1 — the release profile unwinds, it never aborts. The one exception is `restore-wal`,
//! the `restore_command` (S-8.1.1): there 1 means "end of the archive" and makes PostgreSQL
//! promote, so every failure of it — a usage error and a panic included — exits 200 instead.

use clap::{Parser, Subcommand};
use pgbak::commands;
use pgbak::hint::OperatorHint;
use pgbak::home::environment::PgbakHome;
use std::io::Write;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "pgbak",
    version,
    about = "PostgreSQL backups by WAL archiving",
    long_about = "PostgreSQL backups by WAL archiving.\n\n\
        Data is kept in the directory named by the PGBAK environment variable (an absolute \
        path, owned by the user pgbak runs as). See `pgbak init` to create one.",
    after_help = "Exit status: 0 on success, 1 on any error (a message names the problem); \
        `pgbak wait` also exits 2 on timeout and 3 when the sync finished with failures."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Archive one WAL file (the archive_command: `pgbak wal %p`), then start a background sync
    /// if none runs.
    ///
    /// Exits 0 only once the compressed file and its journal record are durable; 1 on any error
    /// (PostgreSQL keeps the WAL file and retries).
    Wal {
        /// The WAL file PostgreSQL asks to archive (%p).
        path: std::path::PathBuf,
    },
    /// Run the sync in the foreground if anything is pending or due, until all of it succeeded.
    ///
    /// Waits for a running sync first. Ctrl-C, SIGTERM or SIGHUP stop it cleanly (recorded in the
    /// journal) with exit status 1; the next sync resumes. Exit status 0 when all work succeeded.
    Sync {
        /// Take a base backup now (S-4.2), even if none is due.
        #[arg(long)]
        base: bool,
        /// Started by `pgbak wal`: exit quietly if another sync runs.
        #[arg(long, hide = true)]
        background: bool,
    },
    /// Like `sync`, and the backup script is invoked for the current directory even if nothing
    /// is new.
    ForceSync,
    /// Wait for a running sync to finish, at most TIMEOUT seconds (default: forever).
    ///
    /// Exit status: 0 when no sync runs and everything archived has been shipped; 2 on timeout;
    /// 3 when the sync finished with failures; 1 on an error.
    Wait {
        /// Seconds to wait at most.
        timeout: Option<u64>,
    },
    /// Show the backup directories, the sync, the base backup, the script and any problems.
    ///
    /// Reading the journal may repair it: a torn last record (a crash mid-append) is cut off,
    /// and a damaged journal is rebuilt from the directory tree. Both are reported.
    Status {
        /// Print the status as JSON (schema "pgbak.status", version 1; see the README).
        #[arg(long, conflicts_with = "journal")]
        json: bool,
        /// Print the journal's records, decoded, one per line, newest last.
        #[arg(long)]
        journal: bool,
    },
    /// Create $PGBAK with private modes and a backup script template, and print the
    /// postgresql.conf lines and a systemd drop-in to use it.
    Init,
    /// Start a new backup series for a new cluster (after pg_upgrade or a new initdb): forget
    /// the recorded system identifier and seal the current directory.
    NewSeries,
    /// Delete the oldest backup directories beyond the newest N base backups (S-8.3).
    ///
    /// Only sealed directories whose last state the backup script shipped are deleted, oldest
    /// first in the order their base backups finished; $PGBAK/scripts/prune TIMESTAMP, if
    /// present, is called for each. Runs as a foreground sync (it also does any other work
    /// due). Default N: retention.keep_bases in $PGBAK/config.toml.
    Prune {
        /// Keep this many base backups (overrides retention.keep_bases; at least 1).
        #[arg(long, value_name = "N")]
        keep: Option<u32>,
        /// Print what would be deleted and the space freed; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Prepare a data directory from a backup: the restore recipe in one command (S-8.1).
    ///
    /// Without a target: the base backup and every WAL file of the chain, as the manual recipe
    /// does. With a target or --standby: the base backup, recovery.signal or standby.signal, and
    /// restore_command = 'pgbak restore-wal %f %p --from SOURCE'. The WAL chain is checked whole
    /// before anything is written.
    Restore(RestoreArgs),
    /// The restore_command: write archived WAL file NAME to PATH (S-8.1.1).
    ///
    /// Exit status: 0 when written; 1 when NAME is not archived and nothing later on its
    /// timeline is (the end of the archive); 200 when it is damaged, missing while later
    /// segments exist, or on any other error, so that PostgreSQL aborts recovery instead of
    /// ending it early.
    RestoreWal {
        /// The file PostgreSQL asks for (%f).
        name: String,
        /// Where PostgreSQL wants it (%p), relative to the data directory.
        path: std::path::PathBuf,
        /// A backup directory, a copy of $PGBAK, or $PGBAK itself (the default).
        #[arg(long, value_name = "PATH")]
        from: Option<std::path::PathBuf>,
    },
    /// Check that a backup is whole and restorable (S-8.2): every file decoded and checked,
    /// base.tzst against its backup_manifest, the WAL chain, and each segment's cluster.
    ///
    /// Read-only. Checks $PGBAK/current, a TIMESTAMP directory of $PGBAK, a backup directory or
    /// a copy of $PGBAK (--from, PGBAK need not be set), or every directory with a base backup
    /// (--all). Exit status: 0 when everything is whole; 1 when a problem was found (each one
    /// is printed: file, member or offset, expected, found) or on an error.
    Verify {
        /// A TIMESTAMP directory of $PGBAK.
        #[arg(conflicts_with = "from")]
        timestamp: Option<std::ffi::OsString>,
        /// A backup directory, or a copy of $PGBAK.
        #[arg(long, value_name = "PATH")]
        from: Option<std::path::PathBuf>,
        /// Every directory with a base backup.
        #[arg(long, conflicts_with = "timestamp")]
        all: bool,
        /// Print the report as JSON (schema "pgbak.verify", version 1).
        #[arg(long)]
        json: bool,
        /// Threads reading files (default: the cores).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
        jobs: Option<u16>,
    },
    /// Internal: leads the backup script's process group for the sync (see
    /// src/sync/script_guardian.rs). Not for operators.
    #[command(name = "__script-guardian", hide = true)]
    ScriptGuardian {
        program: std::ffi::OsString,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("target").args(
    ["target_time", "target_lsn", "target_name", "target_xid", "target_immediate"]
)))]
struct RestoreArgs {
    /// The data directory to create; it must not exist or be empty.
    dest: std::path::PathBuf,
    /// The backup: a TIMESTAMP directory of $PGBAK, or a PATH (a backup directory, or a copy of
    /// $PGBAK). Default: $PGBAK/current, or with a target the directory pgbak picks.
    #[arg(long, value_name = "TIMESTAMP|PATH")]
    from: Option<std::ffi::OsString>,
    /// Recover to this time, with its zone: '2026-12-02 14:03:00+00'.
    #[arg(long, value_name = "TIME")]
    target_time: Option<String>,
    /// Recover to this WAL location: 0/5000100.
    #[arg(long, value_name = "LSN")]
    target_lsn: Option<String>,
    /// Recover to this restore point (pg_create_restore_point).
    #[arg(long, value_name = "NAME")]
    target_name: Option<String>,
    /// Recover to this transaction ID.
    #[arg(long, value_name = "XID")]
    target_xid: Option<String>,
    /// Recover only until the base backup is consistent.
    #[arg(long)]
    target_immediate: bool,
    /// What the server does at the target (PostgreSQL's default: pause).
    #[arg(long, value_name = "ACTION", value_parser = ["pause", "promote", "shutdown"], requires = "target")]
    target_action: Option<String>,
    /// The timeline to recover along: latest (default), current, or a number.
    #[arg(long, value_name = "TIMELINE")]
    target_timeline: Option<String>,
    /// Prepare a standby that keeps following the archive (standby.signal).
    #[arg(long, conflicts_with = "target")]
    standby: bool,
    /// With --standby: the primary_conninfo to stream from as well.
    #[arg(long, requires = "standby", value_name = "CONNINFO")]
    primary_conninfo: Option<String>,
    /// Run the replay too: postgres --single -F over the directory, then one sync.
    #[arg(long, conflicts_with_all = ["target", "standby"])]
    replay: bool,
    /// Where postgres and pg_controldata are, for --replay (default: from PG_VERSION).
    #[arg(long, requires = "replay", value_name = "DIR")]
    pg_bin: Option<std::path::PathBuf>,
    /// Threads decompressing WAL (default: the cores).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    jobs: Option<u16>,
    /// Skip the final sync (faster; sync yourself before relying on the directory).
    #[arg(long)]
    no_sync: bool,
    /// Restore even though WAL is missing: recovery stops at the first gap.
    #[arg(long)]
    allow_gap: bool,
    /// Print what was restored as JSON.
    #[arg(long)]
    json: bool,
}

impl RestoreArgs {
    fn into_request(self) -> commands::restore::RestoreRequest {
        use commands::restore::TargetArgument;
        let target = if self.target_immediate {
            Some(TargetArgument::Immediate)
        } else {
            (self.target_time.map(TargetArgument::Time))
                .or(self.target_lsn.map(TargetArgument::Lsn))
                .or(self.target_name.map(TargetArgument::Name))
                .or(self.target_xid.map(TargetArgument::Xid))
        };
        commands::restore::RestoreRequest {
            dest: self.dest,
            from: self.from,
            target,
            target_action: self.target_action,
            target_timeline: self.target_timeline,
            standby: self.standby,
            primary_conninfo: self.primary_conninfo,
            replay: self.replay,
            pg_bin: self.pg_bin,
            jobs: self.jobs,
            sync: !self.no_sync,
            allow_gap: self.allow_gap,
            json: self.json,
        }
    }
}

fn run(command: Command, out: &mut dyn Write) -> Result<ExitCode, pgbak::Error> {
    match command {
        Command::Wal { path } => {
            let home = PgbakHome::from_process_environment()?;
            commands::wal::run(&home, &path)?;
        }
        Command::Sync { base, background } => {
            let home = PgbakHome::from_process_environment()?;
            let request = commands::sync::SyncRequest {
                force_script: false,
                force_base: base,
                background,
            };
            commands::sync::run(&home, request)?;
        }
        Command::ForceSync => {
            let home = PgbakHome::from_process_environment()?;
            let request = commands::sync::SyncRequest {
                force_script: true,
                force_base: false,
                background: false,
            };
            commands::sync::run(&home, request)?;
        }
        Command::Wait { timeout } => {
            let home = PgbakHome::from_process_environment()?;
            let timeout = timeout.map(std::time::Duration::from_secs);
            return Ok(match commands::wait::run(&home, timeout)? {
                commands::wait::WaitOutcome::Done => ExitCode::SUCCESS,
                commands::wait::WaitOutcome::TimedOut => {
                    ExitCode::from(commands::wait::EXIT_TIMED_OUT)
                }
                commands::wait::WaitOutcome::FinishedWithFailures => {
                    ExitCode::from(commands::wait::EXIT_FINISHED_WITH_FAILURES)
                }
            });
        }
        Command::Status { json, journal } => {
            // Strict modes (S-1.5) are reported by status, not refused: it runs nothing.
            let home = PgbakHome::for_status_from_process_environment()?;
            let format = if json {
                commands::status::Format::Json
            } else if journal {
                commands::status::Format::Journal
            } else {
                commands::status::Format::Human
            };
            commands::status::run(&home, format, out)?;
        }
        Command::Init => commands::init::run_from_environment(out)?,
        Command::NewSeries => {
            let home = PgbakHome::from_process_environment()?;
            commands::new_series::run(&home, out)?;
        }
        Command::Prune { keep, dry_run } => {
            let home = PgbakHome::from_process_environment()?;
            let request = commands::prune::PruneRequest { keep, dry_run };
            commands::prune::run(&home, request, out)?;
        }
        Command::Restore(args) => {
            let pgbak_home = std::env::var_os("PGBAK").map(std::path::PathBuf::from);
            let request = args.into_request();
            let mut notes = std::io::stderr();
            commands::restore::run(&request, pgbak_home.as_deref(), out, &mut notes)?;
        }
        Command::RestoreWal { name, path, from } => {
            let pgbak_home = std::env::var_os("PGBAK").map(std::path::PathBuf::from);
            return Ok(
                match commands::restore_wal::run(
                    &name,
                    &path,
                    from.as_deref(),
                    pgbak_home.as_deref(),
                )? {
                    commands::restore_wal::RestoreWalOutcome::Written => ExitCode::SUCCESS,
                    commands::restore_wal::RestoreWalOutcome::EndOfArchive => {
                        ExitCode::from(commands::restore_wal::EXIT_END_OF_ARCHIVE)
                    }
                },
            );
        }
        Command::Verify {
            timestamp,
            from,
            all,
            json,
            jobs,
        } => {
            let pgbak_home = std::env::var_os("PGBAK").map(std::path::PathBuf::from);
            let request = commands::verify::VerifyRequest {
                timestamp,
                from,
                all,
                json,
                jobs,
            };
            return Ok(
                match commands::verify::run(&request, pgbak_home.as_deref(), out)? {
                    commands::verify::VerifyOutcome::Clean => ExitCode::SUCCESS,
                    commands::verify::VerifyOutcome::ProblemsFound => ExitCode::FAILURE,
                },
            );
        }
        Command::ScriptGuardian { program, args } => {
            pgbak::sync::script_guardian::run_guardian(&program, &args)
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn report(error: &pgbak::Error) {
    // One line, subject first, every cause after it; then the hint of whichever error in the
    // chain knows what the operator can do (each wrapping error asks its cause).
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "pgbak: {}", pgbak::error::one_line(error));
    if let Some(hint) = error.hint() {
        let _ = writeln!(stderr, "hint: {hint}");
    }
}

fn main() -> ExitCode {
    // One line per panic instead of the default multi-line report; the exit code is ours.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()));
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        eprintln!(
            "pgbak: internal error{}: {message}",
            location.unwrap_or_default()
        );
        eprintln!(
            "hint: this is a bug in pgbak; please report it with the output of `pgbak status`"
        );
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            // --help and --version are not errors; every usage error exits 1 (S-2.5), except
            // a restore_command written wrong, which must abort recovery, not end it (S-8.1.1).
            let restore_wal = std::env::args_os()
                .nth(1)
                .is_some_and(|a| a == "restore-wal");
            return if error.use_stderr() && restore_wal {
                ExitCode::from(commands::restore_wal::EXIT_ABORT_RECOVERY)
            } else if error.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // The restore_command (S-8.1.1): any failure, a panic included, must abort recovery rather
    // than read as "end of archive".
    let failure = if matches!(cli.command, Command::RestoreWal { .. }) {
        ExitCode::from(commands::restore_wal::EXIT_ABORT_RECOVERY)
    } else {
        ExitCode::FAILURE
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let result = run(cli.command, &mut out);
        result.and_then(|code| {
            out.flush()
                .map(|()| code)
                .map_err(pgbak::Error::output("the report"))
        })
    }));
    match outcome {
        Ok(Ok(code)) => code,
        // `pgbak status | head -1`: the reader has what it wanted; the command did its work.
        // Rust ignores SIGPIPE (the write returns EPIPE instead), so this is where it ends.
        Ok(Err(error)) if error.is_broken_pipe() => ExitCode::SUCCESS,
        Ok(Err(error)) => {
            report(&error);
            failure
        }
        Err(_panic) => failure, // already reported by the hook
    }
}
