//! `pgbak verify` (S-8.2): is what is on disk (or offsite) still a restorable backup?
//!
//! The files read in the order the data flows:
//!
//! - [`zstd_frames`]: the zstd frame header bits no checksum covers;
//! - [`wal_files`]: each `pg_wal/*.zst` decoded whole and checked (size, page header, name);
//! - [`manifest`], [`base_archive`]: `base.tzst` streamed through the tar reader and compared
//!   with the `backup_manifest` inside it;
//! - [`chain`]: the WAL the manifest needs and the chain from the base backup's start to the
//!   newest segment of each timeline, and every segment's system identifier;
//! - [`run`]: one directory's files over `--jobs` threads, then the pure checks;
//! - [`report`]: the problems, for a human or as JSON.
//!
//! Invariants: read-only (every file is opened for reading only, nothing is created, not even
//! a temporary file: the tar is never extracted); a damaged file is a [`report::Problem`], never
//! an error that stops the run, so one run reports every problem; an error is only what makes
//! the whole check impossible (no such source).

pub mod base_archive;
pub mod chain;
pub mod manifest;
pub mod report;
pub mod run;
pub mod wal_files;
pub mod zstd_frames;

pub use report::{DirectoryReport, Problem, VerifyReport};
pub use run::verify_directory;
