//! The effects layer: everything that touches the world on the machine's behalf.
//!
//! Owns: the environment checks (S-1.1, S-1.4) and strict modes (S-1.5), the config file (S-7)
//! and the capped, non-blocking reads of operator-replaceable files (S-7.1), the OFD locks (S-3.5),
//! durable file writes (S-2.3), and the directory-tree scan used to rebuild a lost journal
//! (S-3.3). Nothing here decides *what* to do; the pure machine does.

pub mod base_backup;
pub mod base_progress;
pub mod config;
pub mod driver;
pub mod durable;
pub mod environment;
pub mod journal_file;
pub mod lock;
pub mod regular_file;
pub mod script;
pub mod script_guardian;
pub mod strict_modes;
pub mod sync_process;
pub mod tree_scan;
pub mod wal_archive;
