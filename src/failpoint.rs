//! Fail points for crash tests: `kill -9` of this very process at a named step.
//!
//! Owns: [`fail_point`]. With the cargo feature `failpoints` (never in a release build you ship:
//! `cargo build` leaves it off), a process whose `PGBAK_FAILPOINT` environment variable equals
//! the point's name sends itself SIGKILL there: exactly what `kill -9` (or a power cut, for the
//! process's own state) does at that instant, with no destructor, no flush, no journal record.
//! Without the feature the function is empty and inlined away.
//!
//! Invariant: fail points sit between an effect and the journal record that describes it (and
//! between an intent record and its effect), which is where a crash tests the resume logic.

/// The environment variable naming the fail point to die at.
pub const FAILPOINT_VARIABLE: &str = "PGBAK_FAILPOINT";

/// Optional: a path. When set, the point fires only in the one process that manages to create
/// this file (`O_CREAT|O_EXCL`): a real server's `archive_command`, or the sync it starts, dies
/// once there and PostgreSQL's retry (or the next `wal`) runs normally, with the same
/// environment. Without it, every process that reaches the point dies.
pub const FAILPOINT_ONCE_VARIABLE: &str = "PGBAK_FAILPOINT_ONCE";

/// Every fail point, so tests can iterate them and a typo in a test is caught.
pub const FAIL_POINTS: &[&str] = &[
    "wal-after-compress",
    "wal-after-link",
    "wal-before-journal",
    "wal-after-journal",
    "sync-after-started",
    "sync-after-script-intent",
    "sync-after-script-exit",
    "sync-after-base-intent",
    "sync-before-stopped",
    "prune-after-intent",
    "prune-after-move-aside",
    "prune-before-remove",
    "prune-after-remove",
    "prune-after-pruned",
];

#[cfg(feature = "failpoints")]
pub fn fail_point(name: &str) {
    debug_assert!(FAIL_POINTS.contains(&name), "unknown fail point {name}");
    if std::env::var_os(FAILPOINT_VARIABLE).is_some_and(|wanted| wanted == name) && first_to_fire()
    {
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
        // SIGKILL cannot be caught; this is never reached.
        std::process::abort();
    }
}

/// True unless [`FAILPOINT_ONCE_VARIABLE`] names a file that exists already (or cannot be made).
#[cfg(feature = "failpoints")]
fn first_to_fire() -> bool {
    match std::env::var_os(FAILPOINT_ONCE_VARIABLE) {
        None => true,
        Some(marker) => std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(marker)
            .is_ok(),
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn fail_point(_name: &str) {}
