//! The one supervisor of pgbak's children (`pg_basebackup` and the backup script), after
//! watchexec's process-wrap: [`ChildGroup::spawn`] starts a command in its own process group
//! (`setpgid(0, 0)` before exec), drains its output on a thread ([`crate::os::child_output`])
//! and stops, kills and reaps it as a group (S-5.4); [`describe_exit`] says how it ended.
//!
//! Invariants:
//! - The group is signalled only while its leader is unreaped (detected with
//!   `waitid(…, WNOWAIT)`, and reaped under the same lock the signals take), so a recycled
//!   group id is never signalled.
//! - When the leader exits, whatever it left in its group is killed before it is reaped: a
//!   forgotten background process would otherwise hold the output pipe open and outlive pgbak.
//! - Stopping is SIGTERM to the group, then SIGKILL once [`STOP_GRACE`] has passed since the
//!   first SIGTERM, whoever is waiting ([`ChildGroup::stop`], [`ChildGroup::wait`],
//!   [`ChildGroup::try_exit`]).
//! - Every child starts with an empty signal mask (SIGTERM must reach it, whatever the
//!   spawning thread blocked) and inherits only its three standard descriptors
//!   ([`inherit_only_standard_descriptors`], S-3.5).
//! - Waiting for the drain thread is bounded by [`DRAIN_WAIT`]: a grandchild that escaped the
//!   group (`setsid`) holding the pipe cannot hang pgbak.
//! - Dropping a group that was not reaped kills and reaps it: no child outlives its owner
//!   unnoticed.

use crate::os::child_output::{LineSink, OutputRules, OutputTail, drain_lines, lock_tail};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;
use std::fs::File;
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a stopped child's process group gets between SIGTERM and SIGKILL: enough for
/// rsync, rclone or `pg_basebackup` to close connections and remove temporary files, short
/// enough that `systemctl stop` (90 s by default) is never the one that kills pgbak.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// How long to wait for the output drain thread once the child's group is gone. Its pipe is
/// closed by then unless a grandchild escaped the group holding it; the thread is then left to
/// finish on its own, and the tail says the output may be incomplete.
pub const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// How often a waiting caller looks whether the leader has exited (bounds how late SIGKILL
/// follows [`STOP_GRACE`]).
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Where the child's stdout goes; its stderr always goes to the drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StandardOutput {
    /// Onto the same pipe as stderr: one stream of lines (the backup script, S-5.1).
    Drained,
    /// A pipe of its own, returned by [`ChildGroup::spawn`] for the caller to read (the tar
    /// stream of `pg_basebackup`).
    ToCaller,
}

/// How to run one child (see the module header for what every child gets anyway).
pub struct GroupOptions {
    /// Who the child is in texts pgbak adds to its tail (`pg_basebackup`, `the backup script`).
    pub name: String,
    /// What the drain reads, in such texts (`stderr`, `output`).
    pub output_name: String,
    pub stdout: StandardOutput,
    /// Delivered to the leader when the thread that spawned it dies (`PR_SET_PDEATHSIG`): for
    /// a leader that must not run on unsupervised after a `kill -9` of pgbak.
    pub parent_death_signal: Option<Signal>,
    pub rules: OutputRules,
    /// Each output line, as it is read.
    pub sink: LineSink,
}

/// A child running in its own process group with its output drained on a thread (see the
/// module header). Every method takes `&self`, so one thread can wait while another stops it.
#[derive(Debug)]
pub struct ChildGroup {
    /// The group id: the leader's pid.
    group: Pid,
    name: String,
    output_name: String,
    leader: Mutex<Leader>,
    tail: Arc<Mutex<OutputTail>>,
    drain: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Leader {
    child: Child,
    /// Set once the leader has been reaped; from then on the group is never signalled.
    reaped: Option<io::Result<ExitStatus>>,
    /// When SIGTERM was first sent, for the escalation to SIGKILL.
    terminate_sent_at: Option<Instant>,
}

impl ChildGroup {
    /// Spawns `command` with stdin on `/dev/null`, stderr (and stdout if
    /// [`StandardOutput::Drained`]) on a pipe drained into `options.sink` and the tail, in a
    /// new process group. Returns the child's stdout when [`StandardOutput::ToCaller`].
    pub fn spawn(
        mut command: Command,
        options: GroupOptions,
    ) -> io::Result<(ChildGroup, Option<ChildStdout>)> {
        let (reader, writer) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)?;
        let stdout = match options.stdout {
            StandardOutput::Drained => Stdio::from(writer.try_clone()?),
            StandardOutput::ToCaller => Stdio::piped(),
        };
        command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::from(writer))
            // Its own process group, so stopping it reaches everything it started and a
            // Ctrl-C meant for a foreground `pgbak sync` is handled by pgbak, not the child.
            .process_group(0);
        let death_signal = options.parent_death_signal;
        let spawner = nix::unistd::getpid();
        // SAFETY: only async-signal-safe system calls run between fork and exec:
        // sigprocmask(2), close_range(2), prctl(2) and getppid(2); nothing allocates.
        unsafe {
            command.pre_exec(move || {
                nix::sys::signal::sigprocmask(
                    SigmaskHow::SIG_SETMASK,
                    Some(&SigSet::empty()),
                    None,
                )
                .map_err(io::Error::from)?;
                inherit_only_standard_descriptors()?;
                if let Some(signal) = death_signal {
                    nix::sys::prctl::set_pdeathsig(signal).map_err(io::Error::from)?;
                    // pgbak may have died before prctl took effect: then nobody signals us.
                    if nix::unistd::getppid() != spawner {
                        return Err(io::Error::other("pgbak died while starting its child"));
                    }
                }
                Ok(())
            });
        }
        let spawned = command.spawn();
        // The parent's copies of the pipe's write end live in `command`; closing them now means
        // the drain thread sees end-of-file as soon as the child's group is gone.
        drop(command);
        let mut child = spawned?;
        let stdout = child.stdout.take();
        // Linux pids are at most 2^22, so the `pid_t` conversion never wraps.
        let group = Pid::from_raw(child.id() as i32);
        let tail = Arc::new(Mutex::new(OutputTail::new(
            options.rules.tail_max_bytes,
            options.rules.tail_max_lines,
        )));
        let drain = {
            let tail = Arc::clone(&tail);
            let reader = File::from(reader);
            let what = format!("{}'s {}", options.name, options.output_name);
            let (rules, sink) = (options.rules, options.sink);
            std::thread::Builder::new()
                .name(format!("pgbak drain {}", options.name))
                .spawn(move || drain_lines(reader, rules, &what, sink, &tail))
        };
        let child_group = ChildGroup {
            group,
            name: options.name,
            output_name: options.output_name,
            leader: Mutex::new(Leader {
                child,
                reaped: None,
                terminate_sent_at: None,
            }),
            tail,
            drain: Mutex::new(None),
        };
        match drain {
            Ok(handle) => *lock(&child_group.drain) = Some(handle),
            Err(error) => {
                // Without a reader the child would block on a full pipe: stop it.
                child_group.kill_and_reap();
                return Err(error);
            }
        }
        Ok((child_group, stdout))
    }

    /// The leader's pid (= the group id).
    pub fn pid(&self) -> u32 {
        self.group.as_raw() as u32
    }

    /// The last lines of output so far.
    pub fn output_tail(&self) -> String {
        lock_tail(&self.tail).text()
    }

    /// Whether the leader has been reaped (the group is then never signalled again).
    pub fn is_reaped(&self) -> bool {
        lock(&self.leader).reaped.is_some()
    }

    /// SIGTERM to the whole group without waiting, starting the [`STOP_GRACE`] after which
    /// any waiting method sends SIGKILL; so several children can be asked to stop at once.
    pub fn terminate(&self) {
        let mut leader = lock(&self.leader);
        if leader.reaped.is_none() {
            // ESRCH: every member already exited (the leader is a zombie); nothing to do.
            let _ = killpg(self.group, Signal::SIGTERM);
            leader.terminate_sent_at.get_or_insert_with(Instant::now);
        }
    }

    /// SIGKILL to the whole group without waiting.
    pub fn kill(&self) {
        if lock(&self.leader).reaped.is_none() {
            let _ = killpg(self.group, Signal::SIGKILL);
        }
    }

    /// Non-blocking: `Some(status)` once the leader has exited; its group is then killed, the
    /// leader reaped and the output drained (bounded by [`DRAIN_WAIT`]). Sends SIGKILL when
    /// [`STOP_GRACE`] has passed since [`ChildGroup::terminate`]. Once `Some`, stays `Some`.
    pub fn try_exit(&self) -> io::Result<Option<ExitStatus>> {
        let mut leader = lock(&self.leader);
        if let Some(reaped) = &leader.reaped {
            return copy_result(reaped).map(Some);
        }
        if !self.leader_exited()? {
            if leader
                .terminate_sent_at
                .is_some_and(|sent| sent.elapsed() >= STOP_GRACE)
            {
                let _ = killpg(self.group, Signal::SIGKILL);
            }
            return Ok(None);
        }
        // Leftovers of the group. The unreaped leader keeps the group id reserved, so this
        // cannot hit an unrelated group.
        let _ = killpg(self.group, Signal::SIGKILL);
        let status = leader.child.wait();
        let result = copy_result(&status);
        leader.reaped = Some(status);
        drop(leader);
        self.finish_drain();
        result.map(Some)
    }

    /// Blocks until the leader has exited (see [`ChildGroup::try_exit`]); if it cannot be
    /// waited for, the group is killed and reaped and the error returned.
    pub fn wait(&self) -> io::Result<ExitStatus> {
        loop {
            match self.try_exit() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) => std::thread::sleep(POLL_INTERVAL),
                Err(error) => {
                    self.kill_and_reap();
                    return Err(error);
                }
            }
        }
    }

    /// Stops the group: SIGTERM, up to [`STOP_GRACE`] (counted from the first SIGTERM) for the
    /// leader to exit, SIGKILL to the group, reap. Returns how the leader ended (`None` if it
    /// could not be waited for).
    pub fn stop(&self) -> Option<ExitStatus> {
        self.terminate();
        loop {
            match self.try_exit() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if !self.grace_over() => std::thread::sleep(POLL_INTERVAL),
                Ok(None) | Err(_) => return self.kill_and_reap(),
            }
        }
    }

    /// SIGKILL to the group, then reap the leader (which SIGKILL ends promptly) and drain.
    pub fn kill_and_reap(&self) -> Option<ExitStatus> {
        let mut leader = lock(&self.leader);
        if leader.reaped.is_none() {
            let _ = killpg(self.group, Signal::SIGKILL);
            let status = leader.child.wait();
            leader.reaped = Some(status);
        }
        let status = leader
            .reaped
            .as_ref()
            .and_then(|r| r.as_ref().ok().copied());
        drop(leader);
        self.finish_drain();
        status
    }

    fn grace_over(&self) -> bool {
        lock(&self.leader)
            .terminate_sent_at
            .is_none_or(|sent| sent.elapsed() >= STOP_GRACE)
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

    fn finish_drain(&self) {
        let Some(handle) = lock(&self.drain).take() else {
            return;
        };
        let deadline = Instant::now() + DRAIN_WAIT;
        while !handle.is_finished() && Instant::now() < deadline {
            std::thread::sleep(POLL_INTERVAL);
        }
        if handle.is_finished() {
            let _ = handle.join();
        } else {
            // A process outside the group holds the pipe: the thread ends when it closes it,
            // and the tail already holds everything read so far.
            lock_tail(&self.tail).push(&format!(
                "pgbak: {} was still open after {} exited (a process outside its process \
                 group holds it); the output may be incomplete",
                self.output_name, self.name
            ));
        }
    }
}

impl Drop for ChildGroup {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic on another thread while holding the lock leaves plain data behind, still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn copy_result(result: &io::Result<ExitStatus>) -> io::Result<ExitStatus> {
    match result {
        Ok(status) => Ok(*status),
        Err(error) => Err(io::Error::new(error.kind(), error.to_string())),
    }
}

/// How a child ended, in words, after its name: `exited with status 3`, `was killed by signal
/// SIGKILL`.
pub fn describe_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    match status.signal() {
        Some(number) => match Signal::try_from(number) {
            Ok(signal) => format!("was killed by signal {signal}"),
            Err(_) => format!("was killed by signal {number}"),
        },
        None => format!("ended with wait status {}", status.into_raw()),
    }
}

/// In a forked child before exec: every descriptor above stderr is marked close-on-exec, so
/// the child inherits only stdin, stdout and stderr. pgbak's own descriptors are `O_CLOEXEC`
/// already, but a foreground `pgbak sync` may have been given others by its caller (a shell's
/// `exec 251<file`, a terminal multiplexer, a service manager's sockets), and a child holding
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::child_output::LongLines;
    use std::io::Read;

    const GENEROUS: Duration = Duration::from_secs(60);

    const RULES: OutputRules = OutputRules {
        line_max_bytes: 4096,
        long_lines: LongLines::Split,
        carriage_return_ends_line: false,
        skip_blank_lines: false,
        tail_max_bytes: 2048,
        tail_max_lines: 20,
    };

    fn options(stdout: StandardOutput, sink: LineSink) -> GroupOptions {
        GroupOptions {
            name: "the test child".into(),
            output_name: "output".into(),
            stdout,
            parent_death_signal: None,
            rules: RULES,
            sink,
        }
    }

    fn shell(script: &str) -> Command {
        let mut command = Command::new("/bin/sh");
        command.arg("-c").arg(script);
        command
    }

    /// A scratch file name for a pid, unique to this test process and `label`.
    fn pid_file(label: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("pgbak-group-{}-{label}", std::process::id()))
    }

    fn read_pid(path: &std::path::Path) -> i32 {
        let deadline = Instant::now() + GENEROUS;
        loop {
            if let Ok(text) = std::fs::read_to_string(path)
                && let Ok(pid) = text.trim().parse()
            {
                let _ = std::fs::remove_file(path);
                return pid;
            }
            assert!(Instant::now() < deadline, "the grandchild never started");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for `pid` (not our child, so init reaps it) to be gone or a zombie.
    fn assert_dies(pid: i32) {
        let deadline = Instant::now() + GENEROUS;
        loop {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => return,
                Ok(stat) if stat.split(' ').nth(2) == Some("Z") => return,
                Ok(_) => {
                    assert!(Instant::now() < deadline, "{pid} survived");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    /// Leader and grandchild both ignore SIGTERM; the grandchild writes its pid to `file`.
    fn stubborn_group(file: &std::path::Path) -> Command {
        shell(&format!(
            "trap '' TERM; sh -c 'echo $$ > {}; exec sleep 300' & echo ready; wait; wait",
            file.display()
        ))
    }

    #[test]
    fn stop_sigkills_a_group_that_ignores_sigterm_once_the_grace_is_over() {
        let file = pid_file("stop");
        let (group, _) = ChildGroup::spawn(
            stubborn_group(&file),
            options(StandardOutput::Drained, Box::new(|_| {})),
        )
        .unwrap();
        let grandchild = read_pid(&file);
        let started = Instant::now();
        let status = group.stop().expect("the leader was reaped");
        let took = started.elapsed();
        assert!(took >= STOP_GRACE, "SIGKILL came early, after {took:?}");
        assert!(took < STOP_GRACE + GENEROUS, "{took:?}");
        assert_eq!(describe_exit(status), "was killed by signal SIGKILL");
        assert_dies(grandchild);
        assert!(group.is_reaped());
        assert_eq!(group.output_tail(), "ready");
    }

    #[test]
    fn a_waiting_thread_escalates_to_sigkill_after_the_grace_of_terminate() {
        let file = pid_file("wait");
        let (group, _) = ChildGroup::spawn(
            stubborn_group(&file),
            options(StandardOutput::Drained, Box::new(|_| {})),
        )
        .unwrap();
        let group = Arc::new(group);
        let grandchild = read_pid(&file);
        let waiter = {
            let group = Arc::clone(&group);
            std::thread::spawn(move || group.wait())
        };
        let started = Instant::now();
        group.terminate();
        let status = waiter.join().unwrap().unwrap();
        assert!(started.elapsed() >= STOP_GRACE, "{:?}", started.elapsed());
        assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
        assert_dies(grandchild);
        assert_eq!(
            group.try_exit().unwrap(),
            Some(status),
            "the outcome is kept"
        );
    }

    #[test]
    fn leftovers_die_with_the_leader_and_stdout_can_go_to_the_caller() {
        let file = pid_file("leftover");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink_lines = Arc::clone(&lines);
        let (group, stdout) = ChildGroup::spawn(
            shell(&format!(
                "sh -c 'echo $$ > {}; exec sleep 300' & echo data; echo note >&2; exit 3",
                file.display()
            )),
            options(
                StandardOutput::ToCaller,
                Box::new(move |line| sink_lines.lock().unwrap().push(line.to_owned())),
            ),
        )
        .unwrap();
        let grandchild = read_pid(&file);
        let status = group.wait().unwrap();
        assert_eq!(describe_exit(status), "exited with status 3");
        assert_dies(grandchild);
        let mut data = String::new();
        stdout.unwrap().read_to_string(&mut data).unwrap();
        assert_eq!(data, "data\n", "stdout is the caller's alone");
        assert_eq!(group.output_tail(), "note");
        assert_eq!(*lines.lock().unwrap(), ["note"]);
    }

    #[test]
    fn exits_are_described_one_way() {
        assert_eq!(
            describe_exit(ExitStatus::from_raw(3 << 8)),
            "exited with status 3"
        );
        assert_eq!(
            describe_exit(ExitStatus::from_raw(0)),
            "exited with status 0"
        );
        assert_eq!(
            describe_exit(ExitStatus::from_raw(Signal::SIGKILL as i32)),
            "was killed by signal SIGKILL"
        );
        assert_eq!(
            describe_exit(ExitStatus::from_raw(100)),
            "was killed by signal 100"
        );
        // WIFSTOPPED: neither an exit code nor a fatal signal.
        assert_eq!(
            describe_exit(ExitStatus::from_raw(0x137f)),
            "ended with wait status 4991"
        );
    }
}
