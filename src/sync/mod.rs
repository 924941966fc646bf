//! The sync path, `pgbak sync` (S-3 – S-6): the [`session`] loop carries out the machine's
//! actions, one module per action: the base backup ([`base_backup`], S-4), the backup script
//! ([`script`] and its [`script_guardian`], S-5), switching and removing directories
//! ([`directories`], S-4.5); beside them the sync's own [`log`] and [`lock`] (S-3.5).
//!
//! Invariant: nothing here decides *what* to do; the pure machine does, and every effect is
//! preceded by its intent in the journal.

pub mod base_backup;
pub mod directories;
mod error;
pub mod lock;
pub mod log;
pub mod script;
pub mod script_guardian;
pub mod session;

pub use error::SessionError;
