//! pgbak: PostgreSQL backups by WAL archiving.
//!
//! Three layers, visible in the file tree:
//!
//! - [`machine`]: the pure state machine. Facts in ([`machine::Event`]), commands out
//!   ([`machine::Action`]); `apply` and `next_actions` carry all the logic. No I/O, no clock.
//! - [`journal`]: the persisted, checksummed record of every fact, inside `$PGBAK/pgbak.lock`;
//!   framing, recovery (torn tail, damage → rebuild) and crash-safe compaction.
//! - [`effects`]: everything that touches the world: the environment checks, config file, OFD
//!   locks, the directory tree, processes.
//!
//! [`commands`] turns each CLI subcommand into calls on those layers; `main.rs` only parses
//! arguments, runs a command and maps its error to an exit code.

pub mod archive;
pub mod commands;
pub mod config;
pub mod failpoint;
pub mod hint;
pub mod home;
pub mod journal;
pub mod machine;
pub mod os;
pub mod report;
pub mod sync;
pub mod timestamp;
pub mod wal_header;
pub mod wal_name;

#[cfg(test)]
mod test_support;
