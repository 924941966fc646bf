//! The integration tests: one test binary (one link, one process), with one module per area
//! and the helpers they share. A test's full name is `it::MODULE::NAME`, so
//! `cargo test --test it cli_wal::` runs one former file's tests.
//!
//! Owns nothing but the module list. Invariant: the tests of every module share this process,
//! so nothing process-wide (scratch names, ports, environment, signal dispositions) may be
//! assumed private to one test; `util` and `harness` make names and ports unique.

// A test crate has no outside callers: its modules share helpers through `pub`, which is
// the visibility the shared `util` and `harness` modules need, not a promise to anyone.
#![allow(unreachable_pub)]

mod harness;
mod util;

mod base_backup;
mod cli_config_file;
mod cli_prune;
mod cli_restore_wal;
mod cli_script_guardian;
mod cli_status;
mod cli_strict_modes;
mod cli_sync;
mod cli_wal;
mod cli_wal_with_sync;
mod crash_prune;
mod crash_sync;
mod crash_wal;
mod e2e_crash;
mod e2e_failover;
mod e2e_first_backup;
mod e2e_harness;
mod e2e_pg18;
mod e2e_restart_and_full_disk;
mod e2e_restore;
mod e2e_retention_under_load;
mod e2e_two_bases_under_load;
mod e2e_verify;
mod e2e_wait_after_stop;
mod error_messages;
// Its history is made in the machine's simulated world, built only with `simulation` (which
// `failpoints`, the test build's feature, turns on).
#[cfg(feature = "simulation")]
mod journal_compat;
mod journal_public_api;
mod journal_scale;
mod machine_clock_step;
mod readme;
mod spec;
mod wal_pgbak_replaced;
