//! The `pgbak` binary: parses arguments, runs one command, maps the outcome to an exit code.
//!
//! Owns: the command-line surface (clap derive) and the error report format: one line
//! `pgbak: <subject>: <problem>` and, where the operator can act, a second line `hint: …`.
//! Invariants: every outcome exits 0 or 1 (S-2.5: PostgreSQL treats exit codes above 125 from
//! `archive_command` as fatal for the archiver); a panic is caught, reported in one line and
//! exits 1 — the release profile unwinds, it never aborts.

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
    /// Internal: leads the backup script's process group for the sync (see
    /// src/sync/script_guardian.rs). Not for operators.
    #[command(name = "__script-guardian", hide = true)]
    ScriptGuardian {
        program: std::ffi::OsString,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
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
            // --help and --version are not errors; every usage error exits 1 (S-2.5).
            return if error.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
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
            ExitCode::FAILURE
        }
        Err(_panic) => ExitCode::FAILURE, // already reported by the hook
    }
}
