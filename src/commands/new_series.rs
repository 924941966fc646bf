//! `pgbak new-series`: start a new backup series on purpose, for a new cluster behind the same
//! `$PGBAK` (S-2.9).
//!
//! Owns: [`run`] and [`NewSeriesError`].
//!
//! `pgbak wal` refuses a segment whose system identifier differs from the one recorded from the
//! first segment (two servers archiving into one `$PGBAK` would make every restore fail). After
//! `pg_upgrade` or a new `initdb`, the new identifier is right, and the operator says so once
//! with this command. It records `NewSeriesStarted`: the recorded identifier is forgotten, the
//! current directory is sealed (its backups of the old cluster stay, restorable and shipped
//! as before) and an idle pending one fails. The next archived file opens a new directory,
//! whose base backup is then due, and names the new cluster.
//!
//! Invariant: nothing is deleted, and nothing changes if a base backup is running (the machine
//! refuses the fact then; the operator waits for it or stops the sync).

use crate::hint::OperatorHint;
use crate::home::environment::PgbakHome;
use crate::home::journal_file;
use crate::machine::Event;
use crate::os::clock::now;
use std::io::Write;

#[derive(Debug, thiserror::Error)]
pub enum NewSeriesError {
    #[error("new-series: a base backup is running into {directory}")]
    BaseBackupRunning { directory: String },
}

impl OperatorHint for NewSeriesError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            NewSeriesError::BaseBackupRunning { .. } => {
                "wait for it (pgbak wait), or stop the sync, then run pgbak new-series again"
                    .to_owned()
            }
        })
    }
}

/// Records `NewSeriesStarted` and says what it did.
pub fn run(home: &PgbakHome, out: &mut dyn Write) -> Result<(), crate::Error> {
    let at = now();
    let mut opened = journal_file::open_journal(home, at)?;
    let state = opened.journal.state();
    if let Some(running) = state.base_backup.running {
        return Err(NewSeriesError::BaseBackupRunning {
            directory: running.directory.to_string(),
        }
        .into());
    }
    let previous = state.system_identifier;
    let sealed = state.current_directory().map(|(name, _)| name);
    opened.append(&[Event::NewSeriesStarted { at }], at)?;
    print_report(previous, sealed, out).map_err(crate::Error::output("the new-series report"))
}

fn print_report(
    previous: Option<u64>,
    sealed: Option<crate::timestamp::DirectoryName>,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    match previous {
        Some(id) => writeln!(out, "pgbak: forgot cluster {id}")?,
        None => writeln!(out, "pgbak: no cluster was recorded yet")?,
    }
    if let Some(sealed) = sealed {
        writeln!(
            out,
            "pgbak: sealed {sealed}: its backups stay and are shipped as before"
        )?;
    }
    writeln!(
        out,
        "pgbak: the next WAL file archived opens a new directory, whose base backup is then due, \
         and records the new cluster"
    )?;
    Ok(())
}
