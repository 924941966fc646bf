//! The running `pg_basebackup`: spawned in its own process group by the one supervisor
//! ([`crate::os::process_group::ChildGroup`], which keeps its stderr in a bounded tail), its
//! stdout copied through the zstd encoder into the unnamed output file by the base backup
//! thread (see the `base_backup` module header for the why).
//!
//! Invariants: the output file is linked as `base.tzst` only after the program exited 0 and
//! the frame is finished and fsynced; every wait and buffer is bounded by a named constant.

use super::BaseBackupError;
use super::FIXED_ARGUMENTS;
use super::OUTPUT_LINE_BYTES_MAX;
use super::OUTPUT_TAIL_BYTES_MAX;
use super::OUTPUT_TAIL_LINES_MAX;
use super::READ_CHUNK_BYTES;
use super::TABLESPACE_LIMITATION;
use super::TABLESPACE_REFUSAL;
use super::TAR_BLOCK_BYTES;
use super::TAR_END_OF_ARCHIVE_BYTES;
use crate::config::{COMPRESSION_THREADS_MAX, Config};
use crate::home::names::BASE_FILE_NAME;
use crate::os::child_output::{LineSink, LongLines, OutputRules};
use crate::os::durable::UnnamedFile;
use crate::os::process_group::{
    ChildGroup, GroupOptions, POLL_INTERVAL, StandardOutput, describe_exit,
};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::{ChildStdout, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How `pg_basebackup`'s stderr is cut into lines and kept: `-P` ends progress lines with `\r`
/// on a terminal, blank lines say nothing, and a long line is cut with a mark.
pub(super) const STDERR_OUTPUT: OutputRules = OutputRules {
    line_max_bytes: OUTPUT_LINE_BYTES_MAX,
    long_lines: LongLines::Truncate,
    carriage_return_ends_line: true,
    skip_blank_lines: true,
    tail_max_bytes: OUTPUT_TAIL_BYTES_MAX,
    tail_max_lines: OUTPUT_TAIL_LINES_MAX,
};

/// State shared by the run's handle, its thread and the stderr sink.
pub(super) struct Shared {
    pub(super) directory: PathBuf,
    pub(super) program: String,
    pub(super) stop_requested: AtomicBool,
    /// Uncompressed tar bytes read from `pg_basebackup` (progress even while the
    /// multithreaded encoder still holds its first job).
    pub(super) bytes_read: AtomicU64,
    pub(super) bytes_written: AtomicU64,
    /// The S-4.6 refusal was seen anywhere in stderr, even if the line has since left the tail.
    pub(super) tablespace_refusal: AtomicBool,
}

impl Shared {
    /// The output tail (the last lines of stderr), with the S-4.6 line above it when it applies.
    pub(super) fn tail_text(&self, group: &ChildGroup) -> String {
        let tail = group.output_tail();
        if !self.tablespace_refusal.load(Ordering::SeqCst) {
            return tail;
        }
        if tail.is_empty() {
            return TABLESPACE_LIMITATION.to_owned();
        }
        format!("{TABLESPACE_LIMITATION}\n{tail}")
    }

    /// A failure message: the S-4.6 line first when it applies (it is the real reason), then
    /// what happened, then the program's own last lines.
    pub(super) fn failure_message(&self, group: &ChildGroup, what_happened: &str) -> String {
        failure_message(
            self.tablespace_refusal.load(Ordering::SeqCst),
            what_happened,
            &group.output_tail(),
        )
    }
}

fn failure_message(tablespace_refusal: bool, what_happened: &str, tail: &str) -> String {
    let mut message = String::new();
    if tablespace_refusal {
        message.push_str(TABLESPACE_LIMITATION);
        message.push('\n');
    }
    message.push_str(what_happened);
    if !tail.is_empty() {
        message.push_str("; its last output:\n");
        message.push_str(tail);
    }
    message
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

/// How the supervisor runs the program: stdout for the caller, stderr into the tail and `log`,
/// each line also checked for the S-4.6 refusal. No parent-death signal: if pgbak dies, the
/// program's stdout has no reader and it ends with SIGPIPE.
fn group_options(shared: &Arc<Shared>, mut log: LineSink) -> GroupOptions {
    let shared = Arc::clone(shared);
    GroupOptions {
        name: "pg_basebackup".into(),
        output_name: "stderr".into(),
        stdout: StandardOutput::ToCaller,
        parent_death_signal: None,
        rules: STDERR_OUTPUT,
        sink: Box::new(move |line| {
            if line.contains(TABLESPACE_REFUSAL) {
                shared.tablespace_refusal.store(true, Ordering::SeqCst);
            }
            log(line);
        }),
    }
}

/// Starts the program under the supervisor (see [`group_options`]).
pub(super) fn spawn_program(
    config: &Config,
    shared: &Arc<Shared>,
    log: LineSink,
) -> Result<(ChildGroup, ChildStdout), BaseBackupError> {
    let program = &config.pg_basebackup.path;
    let mut command = Command::new(program);
    command.args(program_arguments(config));
    let spawned = ChildGroup::spawn(command, group_options(shared, log)).map_err(|source| {
        match source.kind() {
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
        }
    })?;
    match spawned {
        (group, Some(stdout)) => Ok((group, stdout)),
        // `StandardOutput::ToCaller` always pipes stdout; dropping the group kills it.
        (_, None) => Err(BaseBackupError::Spawn {
            program: program.clone(),
            source: io::Error::other("the child's stdout pipe is missing"),
        }),
    }
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
    group: &ChildGroup,
    mut stdout: ChildStdout,
    mut encoder: BaseEncoder,
    shared: &Shared,
) -> Result<u64, String> {
    let mut summary = StreamSummary::default();
    let copied = copy_stdout(&mut stdout, &mut encoder, &mut summary, &shared.bytes_read);
    drop(stdout);
    if copied.is_err() {
        // Nobody reads stdout any more; the program would block or die of SIGPIPE. Stop it.
        group.terminate();
    }
    // Also waits (bounded) for the rest of stderr.
    let status = group.wait();
    let failure = |what_happened: String| shared.failure_message(group, &what_happened);
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
    if !status.success() {
        return Err(failure(format!(
            "pg_basebackup ({program}) {}",
            describe_exit(status)
        )));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::child_output::OutputTail;

    #[test]
    fn the_tail_keeps_the_last_lines_within_both_bounds() {
        let mut tail = OutputTail::new(STDERR_OUTPUT.tail_max_bytes, STDERR_OUTPUT.tail_max_lines);
        for number in 0..100 {
            tail.push(&format!("line {number}"));
        }
        assert_eq!(tail.text().lines().count(), OUTPUT_TAIL_LINES_MAX);
        assert_eq!(tail.text().lines().last(), Some("line 99"));
        let mut tail = OutputTail::new(STDERR_OUTPUT.tail_max_bytes, STDERR_OUTPUT.tail_max_lines);
        for _ in 0..10 {
            tail.push(&"x".repeat(500));
        }
        assert!(
            tail.text().len() <= OUTPUT_TAIL_BYTES_MAX,
            "{}",
            tail.text().len()
        );
        assert!(!tail.text().is_empty());
    }

    #[test]
    fn the_tablespace_refusal_is_remembered_after_it_leaves_the_tail() {
        let shared = Shared {
            directory: PathBuf::new(),
            program: "pg_basebackup".into(),
            stop_requested: AtomicBool::new(false),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            tablespace_refusal: AtomicBool::new(false),
        };
        let shared = Arc::new(shared);
        // The child prints the refusal, then more lines than the tail keeps.
        let script = "echo 'pg_basebackup: error: can only write single tablespace to stdout, \
                      database has 2' >&2; i=0; while [ $i -lt 50 ]; do echo later $i >&2; \
                      i=$((i+1)); done; exit 1";
        let mut command = Command::new("/bin/sh");
        command.arg("-c").arg(script);
        let (group, _) =
            ChildGroup::spawn(command, group_options(&shared, Box::new(|_| {}))).unwrap();
        let status = group.wait().unwrap();
        assert!(
            !group.output_tail().contains(TABLESPACE_REFUSAL),
            "it left the tail"
        );
        assert!(shared.tail_text(&group).starts_with(TABLESPACE_LIMITATION));
        let message =
            shared.failure_message(&group, &format!("pg_basebackup {}", describe_exit(status)));
        let mut lines = message.lines();
        assert_eq!(lines.next(), Some(TABLESPACE_LIMITATION));
        assert_eq!(
            lines.next(),
            Some("pg_basebackup exited with status 1; its last output:")
        );
        assert_eq!(lines.next(), Some("later 30"));
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
