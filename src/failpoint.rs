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
];

#[cfg(feature = "failpoints")]
pub fn fail_point(name: &str) {
    debug_assert!(FAIL_POINTS.contains(&name), "unknown fail point {name}");
    if std::env::var_os(FAILPOINT_VARIABLE).is_some_and(|wanted| wanted == name) {
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
        // SIGKILL cannot be caught; this is never reached.
        std::process::abort();
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn fail_point(_name: &str) {}
