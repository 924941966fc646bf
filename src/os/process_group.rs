//! Children in their own process group, after watchexec's process-wrap: [`ChildGroup`] spawns
//! a command with `setpgid(0, 0)` before exec, drains its stdout and stderr (one pipe) on a
//! thread into the sync log and a bounded tail, and stops, kills and reaps it as a group
//! (S-5.4).
//!
//! Invariants: the group is signalled only while its leader is unreaped (detected with
//! `waitid(…, WNOWAIT)`), so a recycled group id is never signalled; when the leader exits,
//! whatever it left in its group is killed before it is reaped; every child inherits only its
//! three standard descriptors ([`inherit_only_standard_descriptors`], S-3.5); waiting for the
//! drain thread is bounded by [`DRAIN_WAIT`], and stopping by [`STOP_GRACE`] then SIGKILL.
//! `base_backup::stream` still supervises `pg_basebackup` with its own copy of these rules;
//! unifying the two is a later step.

use crate::machine::FAILURE_OUTPUT_MAX_BYTES;
use crate::sync::log::SyncLog;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a stopped child's process group gets between SIGTERM and SIGKILL: enough for rsync
/// or rclone to close connections and remove temporary files, short enough that `systemctl
/// stop` (90 s by default) is never the one that kills pgbak.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// How long to wait for the output drain thread once the child's group is gone. Its pipe is
/// closed by then unless a grandchild escaped the group (`setsid`) holding it; the thread is
/// then left to finish on its own.
pub const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// A longer output line is cut into pieces of this many bytes, so one runaway line (a progress
/// bar without newlines) cannot grow memory or the log without bound.
pub const LINE_MAX_BYTES: usize = 4096;

/// How often [`ChildGroup::stop`] looks whether the group leader has exited.
const STOP_POLL: Duration = Duration::from_millis(20);

/// The last lines of a child's output, at most [`FAILURE_OUTPUT_MAX_BYTES`] in all (joined with
/// newlines), for the journal.
#[derive(Debug, Default)]
pub(crate) struct OutputTail {
    lines: VecDeque<String>,
    /// Bytes of `lines` joined with `\n`.
    pub(crate) bytes: usize,
}

impl OutputTail {
    pub(crate) fn push(&mut self, line: String) {
        let line = last_bytes(&line, FAILURE_OUTPUT_MAX_BYTES).to_owned();
        self.bytes += line.len() + usize::from(!self.lines.is_empty());
        self.lines.push_back(line);
        while self.bytes > FAILURE_OUTPUT_MAX_BYTES {
            let Some(oldest) = self.lines.pop_front() else {
                break;
            };
            self.bytes -= oldest.len() + usize::from(!self.lines.is_empty());
        }
    }

    pub(crate) fn text(&self) -> String {
        Vec::from(self.lines.clone()).join("\n")
    }
}

/// The last `max_bytes` of `text`, starting on a character boundary.
pub(crate) fn last_bytes(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut start = text.len() - max_bytes;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// How a child ended, in words: `exited with status 3`, `killed by SIGKILL`.
pub fn describe_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    match status.signal() {
        Some(number) => match Signal::try_from(number) {
            Ok(signal) => format!("killed by {signal}"),
            Err(_) => format!("killed by signal {number}"),
        },
        None => format!("ended with wait status {}", status.into_raw()),
    }
}

/// A child running in its own process group with its output drained on a thread (see the
/// module header). Dropping it without [`ChildGroup::stop`] or a completed
/// [`ChildGroup::try_exit`] kills the group, so no child outlives its owner unnoticed.
#[derive(Debug)]
pub struct ChildGroup {
    child: Child,
    /// The group id: the leader's pid.
    group: Pid,
    tail: Arc<Mutex<OutputTail>>,
    drain: Option<JoinHandle<()>>,
    /// Set once the leader has been reaped.
    finished: bool,
}

impl ChildGroup {
    /// Spawns `command` with stdin on `/dev/null`, stdout and stderr on one pipe drained into
    /// `log` (each line tagged `log_source`) and the output tail, in a new process group.
    pub fn spawn(
        mut command: Command,
        log: Arc<SyncLog>,
        log_source: String,
    ) -> io::Result<ChildGroup> {
        let (reader, writer) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(writer.try_clone()?))
            .stderr(Stdio::from(writer))
            .process_group(0);
        // SAFETY: the closure makes one system call, close_range(2), and allocates nothing.
        unsafe {
            command.pre_exec(inherit_only_standard_descriptors);
        }
        let spawned = command.spawn();
        // The parent's copies of the pipe's write end live in `command`; closing them now means
        // the drain thread sees end-of-file as soon as the child's group is gone.
        drop(command);
        let child = spawned?;
        let group = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        let tail = Arc::new(Mutex::new(OutputTail::default()));
        let drain = {
            let tail = Arc::clone(&tail);
            let reader = File::from(reader);
            std::thread::Builder::new()
                .name(format!("drain {log_source}"))
                .spawn(move || drain_lines(reader, &log, &log_source, &tail))
        };
        let mut group_child = ChildGroup {
            child,
            group,
            tail,
            drain: None,
            finished: false,
        };
        match drain {
            Ok(handle) => group_child.drain = Some(handle),
            Err(error) => {
                // Without a reader the child would block on a full pipe: stop it.
                group_child.kill_and_reap();
                return Err(error);
            }
        }
        Ok(group_child)
    }

    /// The leader's pid (= the group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of output so far.
    pub fn output_tail(&self) -> String {
        lock_tail(&self.tail).text()
    }

    /// Non-blocking: `Some(status)` once the leader has exited; its group is then killed, the
    /// leader reaped and the output drained (bounded by [`DRAIN_WAIT`]).
    pub fn try_exit(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.finished {
            return Err(io::Error::other("the child was already reaped"));
        }
        if !self.leader_exited()? {
            return Ok(None);
        }
        // Leftovers of the group (see the module header). The unreaped leader keeps the group
        // id reserved, so this cannot hit an unrelated group.
        let _ = killpg(self.group, Signal::SIGKILL);
        let status = self.child.wait()?;
        self.finished = true;
        self.finish_drain();
        Ok(Some(status))
    }

    /// Sends SIGTERM to the whole group without waiting: the first half of [`Self::stop`], so
    /// several children can be asked to stop at once.
    pub fn terminate(&self) {
        if !self.finished {
            let _ = killpg(self.group, Signal::SIGTERM);
        }
    }

    /// Stops the group: SIGTERM, up to `grace` for the leader to exit, SIGKILL to the group,
    /// reap. Returns how the leader ended (`None` if it could not be waited for) and the last
    /// lines of output.
    pub fn stop(mut self, grace: Duration) -> (Option<ExitStatus>, String) {
        if self.finished {
            return (None, self.output_tail());
        }
        self.terminate();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            match self.leader_exited() {
                Ok(true) | Err(_) => break,
                Ok(false) => std::thread::sleep(STOP_POLL),
            }
        }
        let status = self.kill_and_reap();
        (status, self.output_tail())
    }

    /// SIGKILL to the group, then reap the leader (which SIGKILL ends promptly) and drain.
    pub(crate) fn kill_and_reap(&mut self) -> Option<ExitStatus> {
        if self.finished {
            return None;
        }
        let _ = killpg(self.group, Signal::SIGKILL);
        let status = self.child.wait().ok();
        self.finished = true;
        self.finish_drain();
        status
    }

    /// Whether the leader has exited, without reaping it (`WNOWAIT`).
    fn leader_exited(&self) -> io::Result<bool> {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(self.group), flags) {
            Ok(WaitStatus::StillAlive) => Ok(false),
            Ok(_) => Ok(true),
            Err(Errno::EINTR) => Ok(false),
            Err(errno) => Err(io::Error::from(errno)),
        }
    }

    fn finish_drain(&mut self) {
        let Some(handle) = self.drain.take() else {
            return;
        };
        let deadline = Instant::now() + DRAIN_WAIT;
        while !handle.is_finished() && Instant::now() < deadline {
            std::thread::sleep(STOP_POLL);
        }
        if handle.is_finished() {
            let _ = handle.join();
        }
        // Otherwise a grandchild outside the group holds the pipe: the thread ends when it
        // closes it, and the tail already holds everything read so far.
    }
}

impl Drop for ChildGroup {
    fn drop(&mut self) {
        if !self.finished {
            self.kill_and_reap();
        }
    }
}

fn lock_tail(tail: &Mutex<OutputTail>) -> std::sync::MutexGuard<'_, OutputTail> {
    match tail.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The drain thread: reads the pipe until end-of-file, cutting it into lines (at most
/// [`LINE_MAX_BYTES`] each) for the log and the tail.
fn drain_lines(mut reader: File, log: &SyncLog, source: &str, tail: &Mutex<OutputTail>) {
    let emit = |bytes: &[u8]| {
        let line = String::from_utf8_lossy(bytes);
        let line = line.trim_end_matches('\r');
        log.line(source, line);
        lock_tail(tail).push(line.to_owned());
    };
    let mut buffer = [0u8; 8192];
    let mut partial: Vec<u8> = Vec::new();
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        for &byte in &buffer[..read] {
            if byte == b'\n' {
                emit(&partial);
                partial.clear();
            } else {
                partial.push(byte);
                if partial.len() >= LINE_MAX_BYTES {
                    emit(&partial);
                    partial.clear();
                }
            }
        }
    }
    if !partial.is_empty() {
        emit(&partial);
    }
}

/// In a forked child before exec: every descriptor above stderr is marked close-on-exec, so
/// the child inherits only stdin, stdout and stderr. pgbak's own descriptors are `O_CLOEXEC`
/// already, but a foreground `pgbak sync` may have been given others by its caller (a shell's
/// `exec 251<file`, a terminal multiplexer, a service manager's sockets), and a script holding
/// one keeps a pipe open or a file busy long after pgbak is gone. Marking instead of closing
/// keeps std's own exec-error pipe working. Kernels before 5.11 reject the flag: then the
/// descriptors stay as the caller left them, as with every older tool.
pub fn inherit_only_standard_descriptors() -> io::Result<()> {
    // SAFETY: close_range(2) with CLOSE_RANGE_CLOEXEC only sets a flag on descriptors; it
    // touches no memory.
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
