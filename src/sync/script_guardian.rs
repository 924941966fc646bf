//! The backup script's process-group leader: a few lines of pgbak between the sync and the
//! script, so the whole group dies with the sync (S-5.4, S-5.2).
//!
//! Owns: [`GUARDIAN_SUBCOMMAND`] (the hidden `pgbak __script-guardian PROGRAM ARGS…`) and
//! [`run_guardian`].
//!
//! Why: the sync starts the group's leader with `PR_SET_PDEATHSIG` = SIGTERM, so when the sync
//! is killed outright (`kill -9`, the OOM killer) the leader is told. But only the leader: a
//! script that runs `rclone copy …` without `exec` would die while rclone went on uploading,
//! orphaned, next to the run the next sync starts. With this guardian as the leader, that
//! SIGTERM reaches every process in the group, and after [`STOP_GRACE`] a SIGKILL does.
//!
//! Invariants kept:
//! - Transparent: the script gets the guardian's cwd, environment and descriptors (the sync's
//!   output pipe, stdin `/dev/null`), an empty signal mask and default dispositions; the
//!   guardian exits with the script's exit status, or dies of the script's fatal signal, so
//!   the sync reports the script's own outcome.
//! - Single-threaded; every signal it handles is blocked and taken with `sigtimedwait`, so
//!   there is no handler and nothing runs asynchronously.
//! - Once told to stop, it never outlives [`STOP_GRACE`] plus one poll: the SIGKILL it sends to
//!   its group includes itself.

use crate::os::process_group::STOP_GRACE;
use crate::sync::script::ScriptStartError;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, killpg, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getpgrp};
use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

/// The hidden subcommand the sync runs the script through (`/proc/self/exe` is pgbak).
pub const GUARDIAN_SUBCOMMAND: &str = "__script-guardian";

/// Exit status when the script cannot be started at all, as shells use for "cannot execute".
pub const CANNOT_EXECUTE: i32 = 126;

/// How often to look at the child while waiting for a signal (bounds the escalation delay).
const POLL: Duration = Duration::from_millis(100);

/// Runs `program ARGS` as a child in this process group and mirrors its end; never returns.
pub fn run_guardian(program: &OsStr, args: &[OsString]) -> ! {
    let mut watched = SigSet::empty();
    for signal in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGCHLD,
    ] {
        watched.add(signal);
    }
    // Blocked before the child exists, so no SIGTERM or SIGCHLD can slip by unseen.
    if let Err(error) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&watched), None) {
        eprintln!("pgbak: the backup script's guardian cannot block signals: {error}");
        std::process::exit(CANNOT_EXECUTE);
    }
    let mut command = Command::new(program);
    command.args(args);
    // SAFETY: only sigprocmask(2), async-signal-safe, runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                .map_err(std::io::Error::from)
        });
    }
    let child = match command.spawn() {
        Ok(child) => Pid::from_raw(child.id() as i32),
        Err(error) => {
            let path = std::path::PathBuf::from(program);
            eprintln!("pgbak: {}", ScriptStartError::CannotStart { path, error });
            std::process::exit(CANNOT_EXECUTE);
        }
    };

    let mut stop_requested_at: Option<Instant> = None;
    loop {
        if let Some(signal) = wait_for_signal(&watched, POLL)
            && signal != Signal::SIGCHLD
            && stop_requested_at.is_none()
        {
            // The sync died (PDEATHSIG) or stops the run: the whole group is told, the
            // guardian included (blocked here, so it stays to supervise).
            let _ = killpg(getpgrp(), Signal::SIGTERM);
            stop_requested_at = Some(Instant::now());
        }
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => die_of(signal),
            Ok(_) => {}
            Err(error) => {
                eprintln!("pgbak: the backup script's guardian lost its child: {error}");
                std::process::exit(CANNOT_EXECUTE);
            }
        }
        if stop_requested_at.is_some_and(|at| at.elapsed() >= STOP_GRACE) {
            // Kills the guardian too: nothing of the group survives.
            let _ = killpg(getpgrp(), Signal::SIGKILL);
        }
    }
}

/// One of the blocked signals, or `None` after `timeout`.
fn wait_for_signal(set: &SigSet, timeout: Duration) -> Option<Signal> {
    let timeout = nix::libc::timespec {
        tv_sec: timeout.as_secs() as nix::libc::time_t,
        tv_nsec: timeout.subsec_nanos() as nix::libc::c_long,
    };
    // SAFETY: `set` is a valid sigset_t, the info pointer may be null, `timeout` is valid.
    let number = unsafe { nix::libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &timeout) };
    Signal::try_from(number).ok()
}

/// Ends this process the way the script ended: killed by `signal`.
fn die_of(signal: Signal) -> ! {
    // SAFETY: restoring the default disposition of a signal has no preconditions.
    unsafe {
        let _ = nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigDfl);
    }
    let mut only = SigSet::empty();
    only.add(signal);
    let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&only), None);
    let _ = nix::sys::signal::raise(signal);
    // A signal whose default is not to terminate (SIGCHLD, SIGSTOP cannot get here): the shell
    // convention.
    std::process::exit(128 + signal as i32)
}
