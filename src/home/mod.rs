//! `$PGBAK`, the one directory pgbak works in: finding and checking it ([`environment`],
//! S-1.1, S-1.4), the strict modes of what it runs from there ([`strict_modes`], S-1.5), the
//! name of every entry in it ([`names`]), opening `pgbak.lock` as pgbak's journal
//! ([`journal_file`]), and the tree scan that rebuilds a lost journal ([`tree_scan`], S-3.3).
//!
//! Invariant: nothing here creates `$PGBAK` (only `pgbak init` does, S-1.1).

pub mod environment;
pub mod journal_file;
pub mod names;
pub mod strict_modes;
pub mod tree_scan;
