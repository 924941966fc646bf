//! `pgbak sync`.
pub mod base_backup;
pub mod directories;
pub mod lock;
pub mod log;
pub mod script;
pub mod script_guardian;
pub mod session;
