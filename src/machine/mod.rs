//! The pure state machine: every decision pgbak makes, with no I/O.
//!
//! Owns: the state ([`State`]), the facts that change it ([`Event`], past tense), the commands
//! it issues ([`Action`], imperative), and the two functions that carry all the logic:
//!
//! - [`apply`]`(state, event)` folds one recorded fact into the state. It is used live (after a
//!   fact is journaled) and for replay after a crash, so replay yields exactly the state before
//!   the crash (S-3.2). Facts that make no sense in the current state are rejected, never
//!   half-applied; which (state, fact) pairs are accepted is the table in [`transition`], which
//!   `state-diagrams/machine.md` draws and a test compares.
//! - [`next_actions`]`(state, now, policy)` decides what the sync should start now and when to
//!   look again. Crash recovery is replay followed by `next_actions`: the same path as normal
//!   operation.
//!
//! Invariants kept here (checked after every step by the model-based tests that drive the real
//! sync session through a simulated world, `sync::session::simulated`):
//! a directory is `Current` only after its base backup finished; at most one `Current`; at most
//! one base backup and one script run at a time; the script never runs for a `Pending` or
//! `Failed` directory; every WAL file archived while a base backup is pending goes to both the
//! pending and the current directory.
//!
//! Nothing in this module touches the file system, processes, the clock or randomness, and it
//! iterates only ordered maps; `tests::machine_is_pure` enforces that on the source text.

mod action;
mod decide;
mod event;
mod policy;
mod rebuild;
// Test and fuzz support only: the real driver is `sync::session`, whose tests drive the real
// loop through this world; nothing in a normal build may depend on it.
#[cfg(any(test, feature = "simulation"))]
pub mod simulation;
mod state;
pub mod table;
pub mod transition;

#[cfg(test)]
mod retention_tests;
#[cfg(test)]
mod tests;

pub use action::{Action, Plan, StopScriptReason};
pub use decide::{
    ArchiveTargets, BaseBackupDue, archive_targets, base_backup_due, next_actions,
    prune_candidates, retry_due_at,
};
pub use event::{Event, EventKind, SyncStopReason};
pub use policy::{Backoff, Policy};
pub use rebuild::{ScannedDirectory, TreeScan};
pub use state::{
    BaseBackup, BaseInfo, Directory, DirectoryPhase, Failure, JournalHealth, Retention,
    RunningBaseBackup, Script, ScriptRun, Shipped, State, SyncEnd, SyncSession, WalTotals,
};
pub use transition::{TransitionError, apply};

/// At most this many bytes of a failed run's output are kept in the journal (S-5.1, S-4.5):
/// enough for the last lines of an error, small enough to keep checkpoints small.
pub const FAILURE_OUTPUT_MAX_BYTES: usize = 2048;
