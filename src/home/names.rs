//! Every name pgbak gives an entry in `$PGBAK`, in one place, so no two modules can disagree
//! about a file's name.
//!
//! The layout (S-1.2): `pgbak.lock` (the journal and the OFD locks), `config.toml`,
//! `scripts/backup`, `current` (a symlink to the directory being filled), `conflicts/`,
//! `sync.log` and `sync.log.1`, `base-backup.progress`, one `TIMESTAMP/` per backup
//! directory holding `base.tzst` and `pg_wal/`, and `.pruning-TIMESTAMP/` for a directory
//! retention is removing (S-8.3), with `scripts/prune`.

/// The lock file, which also holds the journal (S-3.1, S-3.5).
pub const LOCK_FILE_NAME: &str = "pgbak.lock";
/// The optional configuration file (S-7).
pub const CONFIG_FILE_NAME: &str = "config.toml";
/// The directory for the operator's scripts (seed layout).
pub const SCRIPTS_DIRECTORY_NAME: &str = "scripts";
/// The backup script inside [`SCRIPTS_DIRECTORY_NAME`] (S-5).
pub const BACKUP_SCRIPT_NAME: &str = "backup";
/// The relative symlink to the newest complete backup directory (S-1.3, S-4.3).
pub const CURRENT_LINK_NAME: &str = "current";
/// Where rejected bytes of a conflicting re-archive are kept for inspection (S-2.4).
pub const CONFLICTS_DIRECTORY_NAME: &str = "conflicts";
/// The base backup's file name inside a directory (seed: `$PGBAK/TIMESTAMP/base.tzst`).
pub const BASE_FILE_NAME: &str = "base.tzst";
/// The WAL subdirectory (seed: `$PGBAK/TIMESTAMP/pg_wal/NNN.zst`).
pub const WAL_DIRECTORY_NAME: &str = "pg_wal";
/// The sync log's name inside `$PGBAK`.
pub const SYNC_LOG_FILE_NAME: &str = "sync.log";
/// Where the previous sync log goes when the current one is full.
pub const SYNC_LOG_ROTATED_FILE_NAME: &str = "sync.log.1";
/// The optional prune script inside [`SCRIPTS_DIRECTORY_NAME`] (S-8.3): run with a pruned
/// directory's `TIMESTAMP` so the offsite copy can follow.
pub const PRUNE_SCRIPT_NAME: &str = "prune";
/// What a directory being pruned is renamed to, `.pruning-TIMESTAMP` (S-8.3): it starts with
/// a dot, so it never parses as a `TIMESTAMP` and no reader of the tree (the tree scan, the
/// journal rebuild, `restore`, `verify`) takes it for a backup; `scripts/backup` runs inside
/// one `TIMESTAMP/` directory and never sees it.
pub const PRUNING_PREFIX: &str = ".pruning-";
/// The file's name in `$PGBAK`.
pub const PROGRESS_FILE_NAME: &str = "base-backup.progress";
/// The name of the note `wal` leaves in `conflicts/` when the cap kept it from keeping a copy
/// (S-2.10): one line, the refused file and when. `status` reports it; the next copy kept
/// removes it, and so may the operator.
pub const CONFLICTS_NOT_KEPT_NOTE: &str = "not-kept";
