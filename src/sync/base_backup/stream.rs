//! The running `pg_basebackup`: spawned in its own process group, its stdout copied through
//! the zstd encoder into the unnamed output file by the supervisor thread, its stderr kept in a
//! bounded tail by the drain thread (see the `base_backup` module header for the why).
//!
//! Invariants: the group is signalled only while its leader is unreaped; the output file is
//! linked as `base.tzst` only after the program exited 0 and the frame is finished and
//! fsynced; every wait and buffer is bounded by a named constant.

use super::BaseBackupError;
use super::FIXED_ARGUMENTS;
use super::OUTPUT_LINE_BYTES_MAX;
use super::OUTPUT_TAIL_BYTES_MAX;
use super::OUTPUT_TAIL_LINES_MAX;
use super::POLL_INTERVAL;
use super::READ_CHUNK_BYTES;
use super::STDERR_DRAIN_WAIT;
use super::TABLESPACE_LIMITATION;
use super::TABLESPACE_REFUSAL;
use super::TAR_BLOCK_BYTES;
use super::TAR_END_OF_ARCHIVE_BYTES;
use super::TERMINATE_GRACE;
use crate::config::{COMPRESSION_THREADS_MAX, Config};
use crate::home::names::BASE_FILE_NAME;
use crate::os::durable::UnnamedFile;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// State shared by the run's handle and its two threads.
pub(super) struct Shared {
    pub(super) directory: PathBuf,
    pub(super) program: String,
    pub(super) group: Mutex<GroupState>,
    pub(super) stop_requested: AtomicBool,
    /// Uncompressed tar bytes read from `pg_basebackup` (progress even while the
    /// multithreaded encoder still holds its first job).
    pub(super) bytes_read: AtomicU64,
    pub(super) bytes_written: AtomicU64,
    pub(super) tail: Mutex<OutputTail>,
}

/// The process group, as far as signalling it is safe.
#[derive(Default)]
pub(super) struct GroupState {
    /// The leader's pid (= the group id) while it is unreaped; `None` once reaped.
    pub(super) leader: Option<Pid>,
    /// When SIGTERM was first sent, for the escalation to SIGKILL.
    pub(super) terminate_sent_at: Option<Instant>,
}

impl Shared {
    /// Signals the whole group if its leader is unreaped. Holding the lock while signalling,
    /// and the supervisor holding it while reaping, is what keeps a recycled id safe.
    pub(super) fn signal_group(&self, signal: Signal) {
        let mut group = lock(&self.group);
        if let Some(leader) = group.leader {
            // ESRCH: every member already exited (the leader is a zombie); nothing to do.
            let _ = killpg(leader, signal);
            if signal == Signal::SIGTERM && group.terminate_sent_at.is_none() {
                group.terminate_sent_at = Some(Instant::now());
            }
        }
    }

    pub(super) fn tail_text(&self) -> String {
        lock(&self.tail).text()
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic on another thread while holding the lock leaves plain data behind, still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The last lines of stderr, bounded in lines and bytes.
#[derive(Default)]
pub(super) struct OutputTail {
    pub(super) lines: VecDeque<String>,
    pub(super) bytes: usize,
    /// Seen anywhere in the output, even if the line has since left the tail.
    pub(super) tablespace_refusal: bool,
}

impl OutputTail {
    pub(super) fn push(&mut self, line: String) {
        if line.contains(TABLESPACE_REFUSAL) {
            self.tablespace_refusal = true;
        }
        self.bytes += line.len() + 1;
        self.lines.push_back(line);
        while self.lines.len() > OUTPUT_TAIL_LINES_MAX
            || (self.bytes > OUTPUT_TAIL_BYTES_MAX && self.lines.len() > 1)
        {
            if let Some(dropped) = self.lines.pop_front() {
                self.bytes -= dropped.len() + 1;
            }
        }
    }

    /// The kept lines, oldest first, with the S-4.6 line above them when it applies.
    pub(super) fn text(&self) -> String {
        let mut lines: Vec<&str> = Vec::with_capacity(self.lines.len() + 1);
        if self.tablespace_refusal {
            lines.push(TABLESPACE_LIMITATION);
        }
        lines.extend(self.lines.iter().map(String::as_str));
        lines.join("\n")
    }

    /// A failure message: the S-4.6 line first when it applies (it is the real reason), then
    /// what happened, then the program's own last lines.
    pub(super) fn failure_message(&self, what_happened: &str) -> String {
        let mut message = String::new();
        if self.tablespace_refusal {
            message.push_str(TABLESPACE_LIMITATION);
            message.push('\n');
        }
        message.push_str(what_happened);
        if !self.lines.is_empty() {
            message.push_str("; its last output:");
            for line in &self.lines {
                message.push('\n');
                message.push_str(line);
            }
        }
        message
    }
}

/// Counts the compressed bytes on their way into the unnamed file (for `status`).
pub(super) struct CountingWriter {
    pub(super) file: UnnamedFile,
    pub(super) shared: Arc<Shared>,
}

impl Write for CountingWriter {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        let written = self.file.write(buffer)?;
        self.shared
            .bytes_written
            .fetch_add(written as u64, Ordering::Relaxed);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

pub(super) type BaseEncoder = zstd::stream::write::Encoder<'static, CountingWriter>;

pub(super) fn build_encoder(writer: CountingWriter, config: &Config) -> io::Result<BaseEncoder> {
    let mut encoder = zstd::stream::write::Encoder::new(writer, config.base.compression_level)?;
    // The frame checksum makes `zstd -t base.tzst` a real check of the stored bytes.
    encoder.include_checksum(true)?;
    encoder.multithread(compression_workers(config.base.compression_threads))?;
    Ok(encoder)
}

/// `base.compression_threads`, with 0 meaning one worker per CPU (capped like the key).
pub(super) fn compression_workers(configured: u32) -> u32 {
    if configured != 0 {
        return configured;
    }
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    u32::try_from(cpus)
        .unwrap_or(COMPRESSION_THREADS_MAX)
        .min(COMPRESSION_THREADS_MAX)
}

/// The full argument list after the program (see the module header).
pub(super) fn program_arguments(config: &Config) -> Vec<String> {
    let settings = &config.pg_basebackup;
    let mut arguments: Vec<String> = FIXED_ARGUMENTS.iter().map(|&a| a.to_owned()).collect();
    if !settings.host.is_empty() {
        arguments.extend(["-h".to_owned(), settings.host.clone()]);
    }
    if settings.port != 0 {
        arguments.extend(["-p".to_owned(), settings.port.to_string()]);
    }
    if !settings.user.is_empty() {
        arguments.extend(["-U".to_owned(), settings.user.clone()]);
    }
    arguments.extend(settings.extra_args.iter().cloned());
    arguments
}

pub(super) fn spawn_program(config: &Config) -> Result<Child, BaseBackupError> {
    let program = &config.pg_basebackup.path;
    let mut command = Command::new(program);
    command
        .args(program_arguments(config))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so stopping it reaches everything it started and a Ctrl-C
        // meant for a foreground `pgbak sync` is handled by pgbak, not by the child.
        .process_group(0);
    // Only stdin, stdout and stderr, whatever pgbak's caller passed in.
    // SAFETY: the closure makes one system call, close_range(2), and allocates nothing.
    unsafe {
        command.pre_exec(crate::os::process_group::inherit_only_standard_descriptors);
    }
    command.spawn().map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => BaseBackupError::ProgramNotFound {
            program: program.clone(),
            source,
        },
        io::ErrorKind::PermissionDenied => BaseBackupError::ProgramNotExecutable {
            program: program.clone(),
            source,
        },
        _ => BaseBackupError::Spawn {
            program: program.clone(),
            source,
        },
    })
}

/// The child's pid, which is also its process group id (`process_group(0)`). Linux pids are
/// at most 2^22, so the `pid_t` conversion never wraps.
pub(super) fn leader_pid(child: &Child) -> Pid {
    Pid::from_raw(child.id() as i32)
}

/// Kills and reaps a child whose threads could not be set up.
pub(super) fn abandon_child(leader: Pid, mut child: Child) {
    let _ = killpg(leader, Signal::SIGKILL);
    let _ = child.wait();
}

/// Waits up to `limit` for the thread to finish; true if it did.
pub(super) fn wait_for_thread<T>(handle: &JoinHandle<T>, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while !handle.is_finished() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    true
}

pub(super) fn join_supervisor(handle: JoinHandle<Result<u64, String>>) -> Result<u64, String> {
    handle.join().unwrap_or_else(|panic| {
        let detail = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(format!(
            "the base backup thread panicked: {detail}; no base.tzst was linked"
        ))
    })
}

/// Reads stderr line by line into the tail until every writer has closed it.
pub(super) fn drain_stderr(
    mut stderr: ChildStderr,
    shared: &Shared,
    mut log: Box<dyn FnMut(&str) + Send>,
) {
    let mut buffer = [0u8; 4096];
    let mut line: Vec<u8> = Vec::new();
    let mut truncated = false;
    let mut emit = |line: &mut Vec<u8>, truncated: &mut bool| {
        let mut text = String::from_utf8_lossy(line).into_owned();
        if *truncated {
            text.push_str(" […]");
        }
        line.clear();
        *truncated = false;
        if text.trim().is_empty() {
            return;
        }
        log(&text);
        lock(&shared.tail).push(text);
    };
    loop {
        let count = match stderr.read(&mut buffer) {
            Ok(0) => break,
            Ok(count) => count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                emit(&mut line, &mut truncated);
                lock(&shared.tail).push(format!("pgbak: reading pg_basebackup's stderr: {error}"));
                return;
            }
        };
        for &byte in &buffer[..count] {
            match byte {
                // pg_basebackup -P ends progress lines with \r on a terminal, \n otherwise.
                b'\n' | b'\r' => emit(&mut line, &mut truncated),
                _ if line.len() >= OUTPUT_LINE_BYTES_MAX => truncated = true,
                _ => line.push(byte),
            }
        }
    }
    emit(&mut line, &mut truncated);
}

/// Why copying stdout into the encoder stopped early.
pub(super) enum CopyFailure {
    Read(io::Error),
    Write(io::Error),
}

/// What the program wrote on stdout, as far as the checks at the end need it.
#[derive(Default)]
pub(super) struct StreamSummary {
    pub(super) bytes: u64,
    /// The last [`TAR_END_OF_ARCHIVE_BYTES`] bytes (fewer if the stream was shorter).
    pub(super) last_bytes: Vec<u8>,
}

impl StreamSummary {
    pub(super) fn record(&mut self, chunk: &[u8]) {
        self.bytes += chunk.len() as u64;
        let keep_from_chunk = chunk.len().min(TAR_END_OF_ARCHIVE_BYTES);
        self.last_bytes
            .extend_from_slice(&chunk[chunk.len() - keep_from_chunk..]);
        let excess = self
            .last_bytes
            .len()
            .saturating_sub(TAR_END_OF_ARCHIVE_BYTES);
        self.last_bytes.drain(..excess);
    }

    /// Why this does not look like a complete tar archive, if it does not.
    pub(super) fn tar_problem(&self) -> Option<String> {
        if self.bytes == 0 {
            return Some("it wrote nothing on stdout".into());
        }
        if self.bytes % TAR_BLOCK_BYTES != 0
            || self.last_bytes.len() < TAR_END_OF_ARCHIVE_BYTES
            || self.last_bytes.iter().any(|&byte| byte != 0)
        {
            return Some(format!(
                "its {} bytes on stdout do not end like a tar archive (two zero blocks); \
                 check pg_basebackup.extra_args for options that change the output, such as \
                 -Z/--compress",
                self.bytes
            ));
        }
        None
    }
}

pub(super) fn copy_stdout(
    stdout: &mut ChildStdout,
    encoder: &mut BaseEncoder,
    summary: &mut StreamSummary,
    bytes_read: &AtomicU64,
) -> Result<(), CopyFailure> {
    let mut buffer = vec![0u8; READ_CHUNK_BYTES];
    loop {
        let count = match stdout.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(count) => count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(CopyFailure::Read(error)),
        };
        summary.record(&buffer[..count]);
        bytes_read.fetch_add(count as u64, Ordering::Relaxed);
        encoder
            .write_all(&buffer[..count])
            .map_err(CopyFailure::Write)?;
    }
}

/// The supervisor thread: stdout → zstd → unnamed file, then the exit status, the group, the
/// stderr thread, and the link (see the module header).
pub(super) fn supervise(
    mut child: Child,
    mut stdout: ChildStdout,
    mut encoder: BaseEncoder,
    stderr_drain: JoinHandle<()>,
    shared: &Shared,
) -> Result<u64, String> {
    let mut summary = StreamSummary::default();
    let copied = copy_stdout(&mut stdout, &mut encoder, &mut summary, &shared.bytes_read);
    drop(stdout);
    if copied.is_err() {
        // Nobody reads stdout any more; the program would block or die of SIGPIPE. Stop it.
        shared.signal_group(Signal::SIGTERM);
    }
    let status = wait_for_group(&mut child, shared);
    if !wait_for_thread(&stderr_drain, STDERR_DRAIN_WAIT) {
        lock(&shared.tail).push(
            "pgbak: stderr was still open after pg_basebackup exited (a process outside its \
             process group holds it); the output may be incomplete"
                .into(),
        );
    }
    let failure = |what_happened: String| lock(&shared.tail).failure_message(&what_happened);
    let program = &shared.program;
    let target = shared.directory.join(BASE_FILE_NAME);

    if let Err(copy_failure) = copied {
        return Err(failure(match copy_failure {
            CopyFailure::Write(error) => format!(
                "writing {} failed: {error}; pg_basebackup ({program}) was stopped",
                target.display()
            ),
            CopyFailure::Read(error) => format!(
                "reading the output of pg_basebackup ({program}) failed: {error}; it was stopped"
            ),
        }));
    }
    if shared.stop_requested.load(Ordering::SeqCst) {
        return Err(failure(format!(
            "pg_basebackup ({program}) was stopped by pgbak"
        )));
    }
    let status = status.map_err(|error| {
        failure(format!(
            "the exit status of pg_basebackup ({program}) is unknown: {error}"
        ))
    })?;
    if let Some(problem) = exit_problem(status) {
        return Err(failure(format!("pg_basebackup ({program}) {problem}")));
    }
    if let Some(problem) = summary.tar_problem() {
        return Err(failure(format!(
            "pg_basebackup ({program}) exited 0 but {problem}"
        )));
    }
    let writer = encoder.finish().map_err(|error| {
        failure(format!(
            "finishing the zstd frame of {} failed: {error}",
            target.display()
        ))
    })?;
    // A stop that arrives while linking waits for the link (see `BaseBackupRun::shutdown`);
    // this check only avoids starting a link nobody wants.
    if shared.stop_requested.load(Ordering::SeqCst) {
        return Err(failure(format!(
            "pg_basebackup ({program}) was stopped by pgbak"
        )));
    }
    writer
        .file
        .persist_as(BASE_FILE_NAME)
        .map_err(|error| match error.kind() {
            io::ErrorKind::AlreadyExists => failure(format!(
                "{} appeared while the base backup ran; it was not overwritten, and this \
                 backup was discarded",
                target.display()
            )),
            _ => failure(format!(
                "storing {} durably failed: {error}",
                target.display()
            )),
        })?;
    Ok(shared.bytes_written.load(Ordering::Relaxed))
}

/// Waits until the leader has exited (escalating SIGTERM to SIGKILL after [`TERMINATE_GRACE`]),
/// kills whatever is left of its group, and reaps the leader.
pub(super) fn wait_for_group(child: &mut Child, shared: &Shared) -> io::Result<ExitStatus> {
    let leader = leader_pid(child);
    loop {
        // WNOWAIT leaves the leader a zombie, which keeps the group id reserved until the
        // reap below, done under the same lock `signal_group` takes.
        match waitid(
            Id::Pid(leader),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        ) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(_) | Err(Errno::ECHILD) => break,
            Err(Errno::EINTR) => continue,
            Err(errno) => {
                shared.signal_group(Signal::SIGKILL);
                return Err(io::Error::from(errno));
            }
        }
        let terminate_sent_at = lock(&shared.group).terminate_sent_at;
        if terminate_sent_at.is_some_and(|sent| sent.elapsed() >= TERMINATE_GRACE) {
            shared.signal_group(Signal::SIGKILL);
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    let mut group = lock(&shared.group);
    // Whatever the leader left running in its group ends with it.
    let _ = killpg(leader, Signal::SIGKILL);
    group.leader = None;
    child.wait()
}

/// Why an exit status is a failure, or `None` for exit 0.
pub(super) fn exit_problem(status: ExitStatus) -> Option<String> {
    if let Some(code) = status.code() {
        return (code != 0).then(|| format!("exited with status {code}"));
    }
    if let Some(number) = status.signal() {
        let name = Signal::try_from(number).map_or_else(|_| format!("{number}"), |s| s.to_string());
        return Some(format!("was killed by signal {name}"));
    }
    Some(format!("ended with {status}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_lines_within_both_bounds() {
        let mut tail = OutputTail::default();
        for number in 0..100 {
            tail.push(format!("line {number}"));
        }
        assert_eq!(tail.lines.len(), OUTPUT_TAIL_LINES_MAX);
        assert_eq!(tail.lines.back().map(String::as_str), Some("line 99"));
        let mut tail = OutputTail::default();
        for _ in 0..10 {
            tail.push("x".repeat(500));
        }
        assert!(
            tail.text().len() <= OUTPUT_TAIL_BYTES_MAX,
            "{}",
            tail.text().len()
        );
        assert!(!tail.lines.is_empty());
    }

    #[test]
    fn the_tablespace_refusal_is_remembered_after_it_leaves_the_tail() {
        let mut tail = OutputTail::default();
        tail.push(
            "pg_basebackup: error: can only write single tablespace to stdout, database has 2"
                .into(),
        );
        for number in 0..50 {
            tail.push(format!("later {number}"));
        }
        assert!(tail.text().starts_with(TABLESPACE_LIMITATION));
        let message = tail.failure_message("pg_basebackup exited with status 1");
        let mut lines = message.lines();
        assert_eq!(lines.next(), Some(TABLESPACE_LIMITATION));
        assert_eq!(
            lines.next(),
            Some("pg_basebackup exited with status 1; its last output:")
        );
    }

    #[test]
    fn the_tar_check_wants_whole_blocks_ending_in_two_zero_blocks() {
        let mut good = StreamSummary::default();
        good.record(&[1u8; 512]);
        good.record(&[0u8; 700]);
        good.record(&[0u8; 324]);
        assert_eq!(good.tar_problem(), None);

        let empty = StreamSummary::default();
        assert!(empty.tar_problem().is_some_and(|p| p.contains("nothing")));

        let mut compressed = StreamSummary::default();
        // A gzip stream ends with its CRC and length, not with zero blocks.
        compressed.record(&[0x1f, 0x8b, 8, 0]);
        compressed.record(&[0u8; 2040]);
        compressed.record(&[0x5a, 0x17, 0x02, 0x00]);
        assert!(compressed.tar_problem().is_some());

        let mut cut = StreamSummary::default();
        cut.record(&[0u8; 1024]);
        cut.record(&[1u8; 1024]);
        assert!(cut.tar_problem().is_some());
    }

    #[test]
    fn connection_settings_follow_the_fixed_options_and_precede_extra_arguments() {
        let mut config = Config::default();
        assert_eq!(program_arguments(&config), FIXED_ARGUMENTS);
        config.pg_basebackup.host = "db".into();
        config.pg_basebackup.port = 5433;
        config.pg_basebackup.user = "backup".into();
        config.pg_basebackup.extra_args = vec!["--checkpoint=fast".into()];
        let mut expected: Vec<&str> = FIXED_ARGUMENTS.to_vec();
        expected.extend([
            "-h",
            "db",
            "-p",
            "5433",
            "-U",
            "backup",
            "--checkpoint=fast",
        ]);
        assert_eq!(program_arguments(&config), expected);
    }

    #[test]
    fn zero_threads_means_one_worker_per_cpu_within_the_limit() {
        assert_eq!(compression_workers(3), 3);
        let automatic = compression_workers(0);
        assert!((1..=COMPRESSION_THREADS_MAX).contains(&automatic));
    }
}
