//! `$PGBAK`.
pub mod environment;
pub mod journal_file;
pub mod names;
pub mod strict_modes;
pub mod tree_scan;
