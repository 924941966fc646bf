//! Reading backups with the seed's layout, without the journal (S-8.1, S-8.1.1): `$PGBAK`, one
//! `TIMESTAMP/` directory, or an offsite copy, with `PGBAK` unset.
//!
//! The files read in the order the data flows:
//!
//! - [`source`]: what `--from` names: the base backup directory and the WAL pool;
//! - [`catalog`]: the [`WalIndex`] of every `pg_wal/*.zst` in the pool, the history and backup
//!   history files read from it, the segment size from an archived header;
//! - [`history`], [`backup_history`], [`lsn`]: the formats (pure);
//! - [`chain`]: which segments recovery reads and which are missing;
//! - [`choose`]: which directory a restore with a target starts from, and why;
//! - [`lookup`]: `restore-wal`'s answer for one name (found, end of archive, or a hole).
//!
//! Invariants: nothing here writes; only regular files are read, through bounded reads; every
//! decision is a pure function of the names in the pool and the parsed history files, so the
//! chain check and `restore-wal` agree. Decompressing segments is `crate::restore`'s job; this
//! room reads only the first bytes of one segment (its long page header).

pub mod backup_history;
pub mod catalog;
pub mod chain;
pub mod choose;
pub mod error;
pub mod history;
pub mod lookup;
pub mod lsn;
pub mod source;

pub use backup_history::{BackupHistory, BackupTime};
pub use catalog::{SegmentSizeFinding, WalIndex, WalLocation, base_backup_history};
pub use chain::{BasePosition, Chain, ChainSegment, ChainTarget, TimelineChoice, check_chain};
pub use choose::{
    Candidate, Choice, RecoveryTarget, choose, format_utc, gather_candidates, parse_zoned_time,
};
pub use error::BackupCopyError;
pub use history::TimelineHistory;
pub use lookup::{Lookup, lookup};
pub use lsn::{Lsn, SegmentSize};
pub use source::{BackupDirectory, Source, SourceKind};
