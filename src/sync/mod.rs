//! `pgbak sync`.
pub mod base_backup;
pub mod directories;
pub mod process;
pub mod script;
pub mod script_guardian;
pub mod session;
