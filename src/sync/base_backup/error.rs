//! What can go wrong before `pg_basebackup` runs ([`BaseBackupError`]) and its `hint:` lines.

use crate::hint::OperatorHint;
use crate::home::names::BASE_FILE_NAME;
use std::io;
use std::path::PathBuf;

/// What prevents a base backup from starting. Each variant names the path or program.
#[derive(Debug, thiserror::Error)]
pub enum BaseBackupError {
    #[error("base backup directory {}: cannot be created", .path.display())]
    CreateDirectory { path: PathBuf, source: io::Error },

    #[error(
        "base backup directory {}: {BASE_FILE_NAME} already exists; pgbak never overwrites a \
         finished base backup",
        .directory.display()
    )]
    BaseAlreadyPresent { directory: PathBuf },

    #[error("base backup directory {}: O_TMPFILE is not supported", .directory.display())]
    TmpfileUnsupported {
        directory: PathBuf,
        source: io::Error,
    },

    #[error("base backup directory {}: cannot create the output file", .directory.display())]
    CreateOutput {
        directory: PathBuf,
        source: io::Error,
    },

    #[error("zstd encoder for {}: cannot be set up", .directory.display())]
    Encoder {
        directory: PathBuf,
        source: io::Error,
    },

    #[error(
        "pg_basebackup program {program:?} (pg_basebackup.path) not found{}",
        where_searched(program)
    )]
    ProgramNotFound { program: String, source: io::Error },

    #[error("pg_basebackup program {program:?} (pg_basebackup.path) is not executable")]
    ProgramNotExecutable { program: String, source: io::Error },

    #[error("pg_basebackup program {program:?} (pg_basebackup.path) cannot be started")]
    Spawn { program: String, source: io::Error },

    #[error("base backup of {}: cannot start a thread", .directory.display())]
    Thread {
        directory: PathBuf,
        source: io::Error,
    },
}

pub(super) fn where_searched(program: &str) -> &'static str {
    if program.contains('/') {
        ""
    } else {
        " in PATH"
    }
}

impl OperatorHint for BaseBackupError {
    fn hint(&self) -> Option<String> {
        match self {
            BaseBackupError::CreateDirectory { .. } => Some(
                "check that $PGBAK is writable by the user pgbak runs as and its file system is \
                 not full or read-only"
                    .into(),
            ),
            BaseBackupError::BaseAlreadyPresent { directory } => Some(format!(
                "{} holds a finished base backup the journal does not know; run pgbak status, \
                 and move the directory away if it is stale",
                directory.display()
            )),
            BaseBackupError::TmpfileUnsupported { .. } => Some(
                "put PGBAK on ext4, xfs, btrfs or tmpfs with Linux 3.11 or later (pgbak needs \
                 O_TMPFILE never to leave a partial base.tzst behind)"
                    .into(),
            ),
            BaseBackupError::CreateOutput { .. } | BaseBackupError::Thread { .. } => None,
            BaseBackupError::Encoder { .. } => Some(
                "check base.compression_level and base.compression_threads in \
                 $PGBAK/config.toml"
                    .into(),
            ),
            BaseBackupError::ProgramNotFound { .. } => Some(
                "set pg_basebackup.path in $PGBAK/config.toml to the full path of \
                 pg_basebackup (e.g. /usr/lib/postgresql/17/bin/pg_basebackup), or install the \
                 PostgreSQL client tools (postgresql-client)"
                    .into(),
            ),
            BaseBackupError::ProgramNotExecutable { program, .. } => Some(format!(
                "make {program} executable for the user pgbak runs as, or point \
                 pg_basebackup.path in $PGBAK/config.toml at the real pg_basebackup"
            )),
            BaseBackupError::Spawn { .. } => Some(
                "check pg_basebackup.path in $PGBAK/config.toml; it must name the \
                 pg_basebackup program"
                    .into(),
            ),
        }
    }
}
