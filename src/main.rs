//! The `pgbak` binary: parses arguments, runs one command, maps the outcome to an exit code.
//!
//! Owns: the command-line surface (clap derive) and the error report format: one line
//! `pgbak: <subject>: <problem>` and, where the operator can act, a second line `hint: …`.
//! Invariants: every outcome exits 0 or 1 (S-2.5: PostgreSQL treats exit codes above 125 from
//! `archive_command` as fatal for the archiver); a panic is caught, reported in one line and
//! exits 1 — the release profile unwinds, it never aborts.

use clap::{Parser, Subcommand};
use pgbak::commands;
use pgbak::effects::environment::PgbakHome;
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
    after_help = "Exit status: 0 on success, 1 on any error (a message names the problem)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
}

fn run(command: Command, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        Command::Status { json, journal } => {
            let home = PgbakHome::from_process_environment()?;
            let format = if json {
                commands::status::Format::Json
            } else if journal {
                commands::status::Format::Journal
            } else {
                commands::status::Format::Human
            };
            commands::status::run(&home, format, out)
        }
        Command::Init => commands::init::run_from_environment(out),
    }
}

fn report(error: &anyhow::Error) {
    // `{:#}` joins the context chain with ": ", subject first.
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "pgbak: {error:#}");
    if let Some(hint) = pgbak::hint::hint_for(error) {
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
        result.and_then(|()| out.flush().map_err(anyhow::Error::from))
    }));
    match outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(error)) => {
            report(&error);
            ExitCode::FAILURE
        }
        Err(_panic) => ExitCode::FAILURE, // already reported by the hook
    }
}
