//! Starting a process fully detached from its caller, for `pgbak wal`'s background sync
//! (S-2.6, S-2.8): its own session (`setsid`, so no controlling terminal and no signals sent
//! to the caller's process group), stdio on `/dev/null`, every descriptor above 2 closed at
//! exec, and not waited for.
//!
//! Invariant: the caller's pipes never stay open in the child, so PostgreSQL's archiver sees
//! `wal` finish at once. The child is not reaped here: `pgbak wal` exits right away, so init
//! adopts and reaps it; a long-lived caller would keep a zombie until it exits, and should
//! wait for it itself.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// Spawns `command` detached (see the module header) and returns without waiting for it.
pub fn spawn_detached(mut command: Command) -> io::Result<()> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed. It makes two system calls, setsid(2) and close_range(2), and
    // allocates nothing.
    unsafe {
        command.pre_exec(detach_in_child);
    }
    // Dropping the `Child` neither waits for nor kills it.
    command.spawn().map(drop)
}

/// In the forked child: a new session, and every inherited descriptor above stderr marked
/// close-on-exec. PostgreSQL's archiver may pass descriptors it did not mark `O_CLOEXEC`
/// (pipes among them); a sync holding one would keep the other end from seeing EOF.
/// Marking instead of closing keeps std's own exec-error pipe working.
fn detach_in_child() -> io::Result<()> {
    nix::unistd::setsid().map_err(io::Error::from)?;
    // SAFETY: close_range(2) with CLOSE_RANGE_CLOEXEC only sets a flag on descriptors; it
    // touches no memory. Kernels before 5.11 reject it (ENOSYS or EINVAL): then the
    // descriptors stay as the caller left them, which is what every older tool does.
    let _ = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_close_range,
            3 as nix::libc::c_uint,
            nix::libc::c_uint::MAX,
            nix::libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    Ok(())
}
