//! Taking a base backup: `pg_basebackup` streamed through the zstd library into
//! `$PGBAK/TIMESTAMP/base.tzst` (S-4.3, S-4.4, S-4.6), plus the two directory operations
//! around it: switching `$PGBAK/current` atomically and removing a failed pending directory
//! (S-4.5).
//!
//! Owns: [`BaseBackupRun`] (one running `pg_basebackup`, its threads and its output file),
//! [`BaseBackupError`] (what can go wrong before the program runs), [`point_current_link_at`]
//! and [`remove_failed_directory`].
//!
//! # The command
//!
//! `pg_basebackup -D - -F tar -X none -w [-h HOST] [-p PORT] [-U USER] EXTRA_ARGS…`
//!
//! - `-D - -F tar` writes the main data directory as one tar stream (`base.tar`) to stdout;
//!   `-X none` adds no `pg_wal.tar`: the WAL the backup needs arrives through archiving into
//!   the pending directory, and `-X fetch` fails on busy servers with "segment already
//!   removed" (S-4.3). So `base.tzst` is exactly zstd(base.tar), and `tar -C data -xf
//!   base.tzst` (GNU tar, which detects zstd by its magic number) restores it.
//! - `-w` (`--no-password`): pgbak runs in the background with nobody to answer a prompt. In
//!   its own process group, a prompt on the terminal of a foreground `pgbak sync` would stop
//!   the program with SIGTTIN and hang the sync forever; with `-w` a missing password is an
//!   immediate failure carrying libpq's own message. Use `~/.pgpass` or `PGPASSWORD`.
//! - Host, port and user come from the config file when set, else from the libpq environment
//!   (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSFILE` …) inherited from PostgreSQL (S-4.4).
//!
//! # Extra tablespaces (S-4.6)
//!
//! pgbak streams only the main tablespace. A cluster with tablespaces besides `pg_default`
//! and `pg_global` makes `pg_basebackup -D - -F tar` refuse with "can only write single
//! tablespace to stdout, database has N"; that refusal is detected in the output and reported
//! with a line naming the limitation (see [`TABLESPACE_LIMITATION`]), so the operator does not
//! have to decode it. Supporting them would need one tarball per tablespace and a documented
//! restore layout; that is not built.
//!
//! # Threads and processes
//!
//! The program runs in its own process group (S-5.4 applies the same rule to the backup
//! script), stdin `/dev/null`. Two threads serve it:
//! - the *supervisor* reads stdout into the zstd encoder (multithreaded: its workers are more
//!   threads), which writes into an `O_TMPFILE` in the directory; once stdout ends it waits for
//!   the program to exit, kills whatever is left of its process group, reaps it, and only if the
//!   exit status is 0 finishes the zstd frame, fsyncs, links the file as `base.tzst` and
//!   fsyncs the directory;
//! - the *stderr drain* keeps the last lines of stderr in a bounded tail (and passes each line
//!   to an optional log callback), so the program never blocks on a full stderr pipe.
//!
//! Invariants kept:
//! - `base.tzst` appears complete and durable, or not at all: a failure at any point, a crash
//!   of pgbak included, leaves at most the directory (the unnamed file vanishes). An existing
//!   `base.tzst` is never replaced.
//! - Signals go to the process group only while its leader is unreaped (a zombie leader keeps
//!   the group id reserved), so a recycled id is never signalled.
//! - Everything is bounded: the output tail ([`OUTPUT_TAIL_BYTES_MAX`],
//!   [`OUTPUT_TAIL_LINES_MAX`]), the grace between SIGTERM and SIGKILL
//!   ([`TERMINATE_GRACE`]), and how long [`BaseBackupRun::stop`] waits for a thread that cannot
//!   finish (a process that escaped the group holding a pipe open).

pub mod progress;

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;

use crate::config::{COMPRESSION_THREADS_MAX, Config};
use crate::hint::OperatorHint;
use crate::home::environment::{CURRENT_LINK_NAME, PgbakHome};
use crate::home::tree_scan::BASE_FILE_NAME;
use crate::os::durable::{
    PRIVATE_FILE_MODE, UnnamedFile, create_private_directory, fsync_directory,
};
use crate::timestamp::DirectoryName;

/// The options pgbak always passes (S-4.3), then `-w` (see the module header).
const FIXED_ARGUMENTS: &[&str] = &["-D", "-", "-F", "tar", "-X", "none", "-w"];

/// What `pg_basebackup` prints when the cluster has more than one tablespace and the tar goes
/// to stdout (`src/bin/pg_basebackup/pg_basebackup.c`, every version since 9.1).
const TABLESPACE_REFUSAL: &str = "can only write single tablespace to stdout";

/// The line pgbak puts above the program's own output when it refused because of extra
/// tablespaces (S-4.6).
pub const TABLESPACE_LIMITATION: &str = "the database has tablespaces besides pg_default and \
    pg_global: pgbak streams only the main tablespace (pg_basebackup -D - -F tar), extra \
    tablespaces are not supported (S-4.6); move their tables and indexes to pg_default \
    (ALTER TABLE … SET TABLESPACE pg_default) and drop the extra tablespaces, or back this \
    cluster up another way";

/// The output tail kept for the journal and `status`: the last lines, at most this many bytes…
pub const OUTPUT_TAIL_BYTES_MAX: usize = 2048;
/// … and at most this many lines.
pub const OUTPUT_TAIL_LINES_MAX: usize = 20;
/// A longer stderr line is cut (a progress bar without newlines must not grow without bound).
const OUTPUT_LINE_BYTES_MAX: usize = 512;

/// How much of stdout is read at a time; the zstd workers consume jobs of several MiB.
const READ_CHUNK_BYTES: usize = 1 << 20;

/// Between SIGTERM to the process group and SIGKILL.
pub const TERMINATE_GRACE: Duration = Duration::from_secs(5);
/// How long [`BaseBackupRun::stop`] waits, after SIGKILL, for a supervisor still reading a pipe
/// (held open by a process that left the group) before it gives up on the thread.
pub const STOP_AFTER_KILL_WAIT: Duration = Duration::from_secs(5);
/// How long the supervisor waits for stderr to end once the group is gone.
const STDERR_DRAIN_WAIT: Duration = Duration::from_secs(5);
/// Polling interval while waiting for a process or thread to end.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A tar archive ends with two 512-byte blocks of zeros; `pg_basebackup` writes them in every
/// version (the client appends them when the server does not).
const TAR_BLOCK_BYTES: u64 = 512;
const TAR_END_OF_ARCHIVE_BYTES: usize = 1024;

/// What prevents a base backup from starting. Each variant names the path or program.
#[derive(Debug, thiserror::Error)]
pub enum BaseBackupError {
    #[error("base backup directory {}: cannot be created", .path.display())]
    CreateDirectory { path: PathBuf, source: io::Error },

    #[error(
        "base backup directory {}: {BASE_FILE_NAME} already exists; pgbak never overwrites a \
         finished base backup",
        .directory.display()
    )]
    BaseAlreadyPresent { directory: PathBuf },

    #[error("base backup directory {}: O_TMPFILE is not supported", .directory.display())]
    TmpfileUnsupported {
        directory: PathBuf,
        source: io::Error,
    },

    #[error("base backup directory {}: cannot create the output file", .directory.display())]
    CreateOutput {
        directory: PathBuf,
        source: io::Error,
    },

    #[error("zstd encoder for {}: cannot be set up", .directory.display())]
    Encoder {
        directory: PathBuf,
        source: io::Error,
    },

    #[error(
        "pg_basebackup program {program:?} (pg_basebackup.path) not found{}",
        where_searched(program)
    )]
    ProgramNotFound { program: String, source: io::Error },

    #[error("pg_basebackup program {program:?} (pg_basebackup.path) is not executable")]
    ProgramNotExecutable { program: String, source: io::Error },

    #[error("pg_basebackup program {program:?} (pg_basebackup.path) cannot be started")]
    Spawn { program: String, source: io::Error },

    #[error("base backup of {}: cannot start a thread", .directory.display())]
    Thread {
        directory: PathBuf,
        source: io::Error,
    },
}

fn where_searched(program: &str) -> &'static str {
    if program.contains('/') {
        ""
    } else {
        " in PATH"
    }
}

impl OperatorHint for BaseBackupError {
    fn hint(&self) -> Option<String> {
        match self {
            BaseBackupError::CreateDirectory { .. } => Some(
                "check that $PGBAK is writable by the user pgbak runs as and its file system is \
                 not full or read-only"
                    .into(),
            ),
            BaseBackupError::BaseAlreadyPresent { directory } => Some(format!(
                "{} holds a finished base backup the journal does not know; run pgbak status, \
                 and move the directory away if it is stale",
                directory.display()
            )),
            BaseBackupError::TmpfileUnsupported { .. } => Some(
                "put PGBAK on ext4, xfs, btrfs or tmpfs with Linux 3.11 or later (pgbak needs \
                 O_TMPFILE never to leave a partial base.tzst behind)"
                    .into(),
            ),
            BaseBackupError::CreateOutput { .. } | BaseBackupError::Thread { .. } => None,
            BaseBackupError::Encoder { .. } => Some(
                "check base.compression_level and base.compression_threads in \
                 $PGBAK/config.toml"
                    .into(),
            ),
            BaseBackupError::ProgramNotFound { .. } => Some(
                "set pg_basebackup.path in $PGBAK/config.toml to the full path of \
                 pg_basebackup (e.g. /usr/lib/postgresql/17/bin/pg_basebackup), or install the \
                 PostgreSQL client tools (postgresql-client)"
                    .into(),
            ),
            BaseBackupError::ProgramNotExecutable { program, .. } => Some(format!(
                "make {program} executable for the user pgbak runs as, or point \
                 pg_basebackup.path in $PGBAK/config.toml at the real pg_basebackup"
            )),
            BaseBackupError::Spawn { .. } => Some(
                "check pg_basebackup.path in $PGBAK/config.toml; it must name the \
                 pg_basebackup program"
                    .into(),
            ),
        }
    }
}

/// One running `pg_basebackup` into `$PGBAK/DIRECTORY/base.tzst` (see the module header).
///
/// Dropping it without [`BaseBackupRun::stop`] stops it the same way (and blocks as long).
pub struct BaseBackupRun {
    shared: Arc<Shared>,
    supervisor: Option<JoinHandle<Result<u64, String>>>,
    outcome: Option<Result<u64, String>>,
}

impl std::fmt::Debug for BaseBackupRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BaseBackupRun")
            .field("directory", &self.shared.directory)
            .field("bytes_written", &self.bytes_written())
            .field("outcome", &self.outcome)
            .finish()
    }
}

impl BaseBackupRun {
    /// Creates `$PGBAK/DIRECTORY` (0700) if needed and starts `pg_basebackup` into it (see the
    /// module header for the command line and the threads).
    pub fn start(
        home: &PgbakHome,
        config: &Config,
        directory: DirectoryName,
    ) -> Result<BaseBackupRun, BaseBackupError> {
        Self::start_with_log(home, config, directory, Box::new(|_| {}))
    }

    /// [`BaseBackupRun::start`], also handing each stderr line of `pg_basebackup` to `log`
    /// (called on the stderr thread, so it must not block for long).
    pub fn start_with_log(
        home: &PgbakHome,
        config: &Config,
        directory: DirectoryName,
        log: Box<dyn FnMut(&str) + Send>,
    ) -> Result<BaseBackupRun, BaseBackupError> {
        let directory_path = home.directory_path(directory);
        create_private_directory(&directory_path).map_err(|source| {
            BaseBackupError::CreateDirectory {
                path: directory_path.clone(),
                source,
            }
        })?;
        if std::fs::symlink_metadata(directory_path.join(BASE_FILE_NAME)).is_ok() {
            return Err(BaseBackupError::BaseAlreadyPresent {
                directory: directory_path,
            });
        }
        let output =
            UnnamedFile::create_in(&directory_path, PRIVATE_FILE_MODE).map_err(|source| {
                match source.kind() {
                    io::ErrorKind::Unsupported => BaseBackupError::TmpfileUnsupported {
                        directory: directory_path.clone(),
                        source,
                    },
                    _ => BaseBackupError::CreateOutput {
                        directory: directory_path.clone(),
                        source,
                    },
                }
            })?;

        let shared = Arc::new(Shared {
            directory: directory_path.clone(),
            program: config.pg_basebackup.path.clone(),
            group: Mutex::new(GroupState::default()),
            stop_requested: AtomicBool::new(false),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            tail: Mutex::new(OutputTail::default()),
        });
        let encoder = build_encoder(
            CountingWriter {
                file: output,
                shared: Arc::clone(&shared),
            },
            config,
        )
        .map_err(|source| BaseBackupError::Encoder {
            directory: directory_path.clone(),
            source,
        })?;

        let mut child = spawn_program(config)?;
        let leader = leader_pid(&child);
        lock(&shared.group).leader = Some(leader);
        // Both pipes were requested in `spawn_program`, so both are present.
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            abandon_child(leader, child);
            return Err(BaseBackupError::Spawn {
                program: config.pg_basebackup.path.clone(),
                source: io::Error::other("the child's output pipes are missing"),
            });
        };

        let drain_shared = Arc::clone(&shared);
        let stderr_drain = std::thread::Builder::new()
            .name("pgbak-basebackup-stderr".into())
            .spawn(move || drain_stderr(stderr, &drain_shared, log));
        let stderr_drain = match stderr_drain {
            Ok(handle) => handle,
            Err(source) => {
                abandon_child(leader, child);
                return Err(BaseBackupError::Thread {
                    directory: directory_path,
                    source,
                });
            }
        };

        let supervisor_shared = Arc::clone(&shared);
        let supervisor = std::thread::Builder::new()
            .name("pgbak-basebackup".into())
            .spawn(move || supervise(child, stdout, encoder, stderr_drain, &supervisor_shared));
        let supervisor = match supervisor {
            Ok(handle) => handle,
            Err(source) => {
                // The closure, and with it the `Child`, is gone: kill and reap by pid.
                let _ = killpg(leader, Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(leader, None);
                return Err(BaseBackupError::Thread {
                    directory: directory_path,
                    source,
                });
            }
        };

        Ok(BaseBackupRun {
            shared,
            supervisor: Some(supervisor),
            outcome: None,
        })
    }

    /// Non-blocking. `None` while running; `Some(Ok(bytes))` once `pg_basebackup` exited 0 and
    /// `base.tzst` (that many bytes) is finished, fsynced and linked, with the directory
    /// fsynced; `Some(Err(message))` on any failure: the message's first line says what failed
    /// (exit status, signal, I/O error such as ENOSPC; preceded by the S-4.6 line when extra
    /// tablespaces were the reason), the lines after it are the last lines of
    /// `pg_basebackup`'s stderr. After a failure no `base.tzst` exists. Once `Some`, every
    /// later call returns the same value.
    pub fn try_finish(&mut self) -> Option<Result<u64, String>> {
        if self.outcome.is_none() {
            let handle = self.supervisor.take_if(|handle| handle.is_finished())?;
            self.outcome = Some(join_supervisor(handle));
        }
        self.outcome.clone()
    }

    /// Stops the run: SIGTERM to the process group, SIGKILL [`TERMINATE_GRACE`] later if
    /// anything is left, then waits for the threads; returns the output tail (the last lines
    /// of stderr, with the S-4.6 line first when it applies).
    ///
    /// How long it blocks: usually until the program has died of SIGTERM (milliseconds);
    /// [`TERMINATE_GRACE`] more when it ignores SIGTERM; if a process that left the group keeps
    /// stdout open, it gives up on the supervisor thread after [`STOP_AFTER_KILL_WAIT`] more (that
    /// thread then never links `base.tzst`), so about 10 s in all. One exception: if the program
    /// had already exited 0 and `base.tzst` is being fsynced and linked, it waits for that to end
    /// (never returning while a link could still happen), and `base.tzst` then exists; the
    /// caller removes the directory with [`remove_failed_directory`] if it does not want it.
    pub fn stop(mut self) -> String {
        self.shutdown();
        self.shared.tail_text()
    }

    /// Bytes of `pg_basebackup`'s (uncompressed) tar stream read so far.
    pub fn bytes_read(&self) -> u64 {
        self.shared.bytes_read.load(Ordering::Relaxed)
    }

    /// Bytes of compressed output written so far; at the end, the size of `base.tzst`.
    pub fn bytes_written(&self) -> u64 {
        self.shared.bytes_written.load(Ordering::Relaxed)
    }

    /// The directory being written, `$PGBAK/TIMESTAMP`.
    pub fn directory_path(&self) -> &Path {
        &self.shared.directory
    }

    fn shutdown(&mut self) {
        let Some(handle) = self.supervisor.take() else {
            return;
        };
        self.shared.stop_requested.store(true, Ordering::SeqCst);
        self.shared.signal_group(Signal::SIGTERM);
        if wait_for_thread(&handle, TERMINATE_GRACE) {
            self.outcome = Some(join_supervisor(handle));
            return;
        }
        self.shared.signal_group(Signal::SIGKILL);
        // Once the leader is reaped the supervisor is past reading stdout; what is left (the
        // bounded stderr wait, a link already under way) ends, so wait for it: returning
        // while it could still link base.tzst would race with the caller's cleanup.
        let deadline = Instant::now() + STOP_AFTER_KILL_WAIT;
        while !handle.is_finished() {
            if lock(&self.shared.group).leader.is_some() && Instant::now() >= deadline {
                // Still reading a pipe held open by a process outside the group. The
                // supervisor sees `stop_requested` whenever that read ends and links nothing.
                return;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        self.outcome = Some(join_supervisor(handle));
    }
}

impl Drop for BaseBackupRun {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Removes `$PGBAK/DIRECTORY` with everything in it (a failed pending directory, S-4.5), then
/// fsyncs `$PGBAK`. Already missing is success. Refuses (an `InvalidInput` error) when
/// `$PGBAK/current` points at it: the current directory is never a failed one.
pub fn remove_failed_directory(home: &PgbakHome, directory: DirectoryName) -> io::Result<()> {
    let path = home.directory_path(directory);
    let name = directory.to_string();
    let current = home.current_link_path();
    match std::fs::read_link(&current) {
        Ok(target) if target.file_name() == Some(OsStr::new(&name)) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: not removed: {} points at it, so it is not a failed directory",
                    path.display(),
                    current.display()
                ),
            ));
        }
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(io::Error::new(
                error.kind(),
                format!("{}: readlink: {error}", current.display()),
            ));
        }
    }
    match std::fs::remove_dir_all(&path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(io::Error::new(
                error.kind(),
                format!("{}: remove: {error}", path.display()),
            ));
        }
    }
    // Also when it was already missing: a previous call may have crashed before this fsync.
    fsync_directory(&home.path)
}

/// Points `$PGBAK/current` at `DIRECTORY` atomically (S-4.3, S-1.3: a relative symlink
/// `current -> 20261124T154307Z`): a symlink `current.tmp-PID` renamed over `current`, then
/// `$PGBAK` fsynced. Idempotent. The directory must exist (`NotFound` otherwise, and `current`
/// is left as it was).
pub fn point_current_link_at(home: &PgbakHome, directory: DirectoryName) -> io::Result<()> {
    let name = directory.to_string();
    let path = home.directory_path(directory);
    let current = home.current_link_path();
    match std::fs::metadata(&path) {
        Ok(metadata) if metadata.is_dir() => {}
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a directory; current not changed", path.display()),
            ));
        }
        Err(error) => {
            return Err(io::Error::new(
                error.kind(),
                format!("{}: {error}; current not changed", path.display()),
            ));
        }
    }
    if std::fs::read_link(&current).is_ok_and(|target| target == Path::new(&name)) {
        // Already there; the fsync covers a previous call that crashed before its own.
        return fsync_directory(&home.path);
    }
    let temporary = home
        .path
        .join(format!("{CURRENT_LINK_NAME}.tmp-{}", std::process::id()));
    // A leftover from a crashed run that had the same pid.
    match std::fs::remove_file(&temporary) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(io::Error::new(
                error.kind(),
                format!("{}: remove: {error}", temporary.display()),
            ));
        }
    }
    std::os::unix::fs::symlink(&name, &temporary).map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("{}: symlink: {error}", temporary.display()),
        )
    })?;
    if let Err(error) = std::fs::rename(&temporary, &current) {
        let _ = std::fs::remove_file(&temporary);
        return Err(io::Error::new(
            error.kind(),
            format!(
                "{}: rename to {}: {error}",
                temporary.display(),
                current.display()
            ),
        ));
    }
    fsync_directory(&home.path)
}

/// State shared by the run's handle and its two threads.
struct Shared {
    directory: PathBuf,
    program: String,
    group: Mutex<GroupState>,
    stop_requested: AtomicBool,
    /// Uncompressed tar bytes read from `pg_basebackup` (progress even while the
    /// multithreaded encoder still holds its first job).
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    tail: Mutex<OutputTail>,
}

/// The process group, as far as signalling it is safe.
#[derive(Default)]
struct GroupState {
    /// The leader's pid (= the group id) while it is unreaped; `None` once reaped.
    leader: Option<Pid>,
    /// When SIGTERM was first sent, for the escalation to SIGKILL.
    terminate_sent_at: Option<Instant>,
}

impl Shared {
    /// Signals the whole group if its leader is unreaped. Holding the lock while signalling,
    /// and the supervisor holding it while reaping, is what keeps a recycled id safe.
    fn signal_group(&self, signal: Signal) {
        let mut group = lock(&self.group);
        if let Some(leader) = group.leader {
            // ESRCH: every member already exited (the leader is a zombie); nothing to do.
            let _ = killpg(leader, signal);
            if signal == Signal::SIGTERM && group.terminate_sent_at.is_none() {
                group.terminate_sent_at = Some(Instant::now());
            }
        }
    }

    fn tail_text(&self) -> String {
        lock(&self.tail).text()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic on another thread while holding the lock leaves plain data behind, still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The last lines of stderr, bounded in lines and bytes.
#[derive(Default)]
struct OutputTail {
    lines: VecDeque<String>,
    bytes: usize,
    /// Seen anywhere in the output, even if the line has since left the tail.
    tablespace_refusal: bool,
}

impl OutputTail {
    fn push(&mut self, line: String) {
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
    fn text(&self) -> String {
        let mut lines: Vec<&str> = Vec::with_capacity(self.lines.len() + 1);
        if self.tablespace_refusal {
            lines.push(TABLESPACE_LIMITATION);
        }
        lines.extend(self.lines.iter().map(String::as_str));
        lines.join("\n")
    }

    /// A failure message: the S-4.6 line first when it applies (it is the real reason), then
    /// what happened, then the program's own last lines.
    fn failure_message(&self, what_happened: &str) -> String {
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
struct CountingWriter {
    file: UnnamedFile,
    shared: Arc<Shared>,
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

type BaseEncoder = zstd::stream::write::Encoder<'static, CountingWriter>;

fn build_encoder(writer: CountingWriter, config: &Config) -> io::Result<BaseEncoder> {
    let mut encoder = zstd::stream::write::Encoder::new(writer, config.base.compression_level)?;
    // The frame checksum makes `zstd -t base.tzst` a real check of the stored bytes.
    encoder.include_checksum(true)?;
    encoder.multithread(compression_workers(config.base.compression_threads))?;
    Ok(encoder)
}

/// `base.compression_threads`, with 0 meaning one worker per CPU (capped like the key).
fn compression_workers(configured: u32) -> u32 {
    if configured != 0 {
        return configured;
    }
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    u32::try_from(cpus)
        .unwrap_or(COMPRESSION_THREADS_MAX)
        .min(COMPRESSION_THREADS_MAX)
}

/// The full argument list after the program (see the module header).
fn program_arguments(config: &Config) -> Vec<String> {
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

fn spawn_program(config: &Config) -> Result<Child, BaseBackupError> {
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
        command.pre_exec(crate::sync::script::inherit_only_standard_descriptors);
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
fn leader_pid(child: &Child) -> Pid {
    Pid::from_raw(child.id() as i32)
}

/// Kills and reaps a child whose threads could not be set up.
fn abandon_child(leader: Pid, mut child: Child) {
    let _ = killpg(leader, Signal::SIGKILL);
    let _ = child.wait();
}

/// Waits up to `limit` for the thread to finish; true if it did.
fn wait_for_thread<T>(handle: &JoinHandle<T>, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while !handle.is_finished() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    true
}

fn join_supervisor(handle: JoinHandle<Result<u64, String>>) -> Result<u64, String> {
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
fn drain_stderr(mut stderr: ChildStderr, shared: &Shared, mut log: Box<dyn FnMut(&str) + Send>) {
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
enum CopyFailure {
    Read(io::Error),
    Write(io::Error),
}

/// What the program wrote on stdout, as far as the checks at the end need it.
#[derive(Default)]
struct StreamSummary {
    bytes: u64,
    /// The last [`TAR_END_OF_ARCHIVE_BYTES`] bytes (fewer if the stream was shorter).
    last_bytes: Vec<u8>,
}

impl StreamSummary {
    fn record(&mut self, chunk: &[u8]) {
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
    fn tar_problem(&self) -> Option<String> {
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

fn copy_stdout(
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
fn supervise(
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
fn wait_for_group(child: &mut Child, shared: &Shared) -> io::Result<ExitStatus> {
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
fn exit_problem(status: ExitStatus) -> Option<String> {
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
