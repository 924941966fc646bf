//! pgbak: PostgreSQL backups by WAL archiving.
//!
//! Rooms whose folders follow the data:
//!
//! - [`machine`]: the pure state machine. Facts in ([`machine::Event`]), commands out
//!   ([`machine::Action`]); `apply` and `next_actions` carry all the logic. No I/O, no clock.
//! - [`journal`]: the persisted, checksummed record of every fact, inside `$PGBAK/pgbak.lock`;
//!   framing, recovery (torn tail, damage → rebuild) and crash-safe compaction.
//! - [`archive`]: `pgbak wal`, the archive path: input → compress → store (link, record),
//!   with the copies already stored and `conflicts/` beside it.
//! - [`sync`]: `pgbak sync`, the session loop and one module per action (base backup, backup
//!   script, directories), with the sync's log and lock.
//! - [`report`]: `pgbak status`: collect (I/O), analyse (pure), render.
//! - [`restore`]: writing a data directory from a backup (S-8.1): DEST, safe extraction of
//!   `base.tzst`, WAL decompressed and verified in parallel, recovery settings, the final
//!   sync, `--replay`; and the `restore_command`'s write of one WAL file (S-8.1.1).
//! - [`config`]: `config.toml`: parse, validate, the documented key table.
//! - [`home`]: `$PGBAK` itself: finding and checking it, strict modes, the name of every entry
//!   in it, opening its journal, the tree scan.
//! - [`backup_copy`]: reading a backup copy without the journal (`$PGBAK`, one directory, an
//!   offsite copy): the WAL pool, the chain check across timelines, which directory to restore
//!   from, and `restore-wal`'s answer for one file.
//! - [`verify`]: `pgbak verify` (S-8.2): every file of a backup decoded and checked, `base.tzst`
//!   against its `backup_manifest`, the WAL chain and each segment's cluster; problems named.
//! - [`os`]: operating-system primitives: durable files, OFD locks, the clock, signals,
//!   bounded reads, process groups, detaching.
//!
//! [`commands`] turns each CLI subcommand into calls on those rooms; `main.rs` only parses
//! arguments, runs a command and maps its error to an exit code.

pub mod archive;
pub mod backup_copy;
pub mod commands;
pub mod config;
pub mod error;
pub mod failpoint;
pub mod hint;
pub mod home;
pub mod journal;
pub mod machine;
pub mod os;
pub mod report;
pub mod restore;
pub mod sync;
pub mod timestamp;
pub mod verify;
pub mod wal_header;
pub mod wal_name;

pub use error::Error;

#[cfg(test)]
mod test_support;
