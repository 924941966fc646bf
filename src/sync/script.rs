//! Running `$PGBAK/scripts/backup` (S-5.1, S-5.3, S-5.4) as a process group
//! (`crate::os::process_group::ChildGroup`).
//!
//! Owns: [`ScriptProcess`] (one run of the backup script, polled without blocking by the
//! session) and the failure text that goes into the journal ([`failure_output`]).
//!
//! The script's contract (S-5.1): its working directory is the backup directory, argument 1 is
//! the directory's name (the base backup's `TIMESTAMP`), argument 2 the current timestamp (the
//! time of the newest file in it, also a `TIMESTAMP`); `PGBAK` is set in its environment and the
//! rest is inherited; stdin is `/dev/null`; stdout and stderr share one pipe whose lines go to
//! the sync log as `[script DIRECTORY] …`, and the last lines of a failed run (at most
//! [`FAILURE_OUTPUT_MAX_BYTES`]) go into the journal, where `status` shows them.
//!
//! Process groups: the run is supervised by [`crate::os::process_group::ChildGroup`] (its own
//! group, stopped with SIGTERM then SIGKILL after `STOP_GRACE`, leftovers killed when the
//! leader exits, drain waits bounded; S-5.4). Stdout and stderr share one pipe, cut into lines
//! of at most [`LINE_MAX_BYTES`] (a longer one is split, nothing is lost).
//!
//! The script starts with an empty signal mask and default signal dispositions (pgbak's own
//! handlers do not survive exec). Its group is led by pgbak's guardian
//! ([`crate::sync::script_guardian`]), started with `PR_SET_PDEATHSIG` = SIGTERM: if the
//! sync process is killed outright (`kill -9`), the guardian stops the whole group instead of
//! letting it run on, unsupervised, next to the run the next sync starts (S-5.2: one run at a
//! time; S-5.4).
//!
//! Invariants: starting never panics: a missing, non-executable or unrunnable script is an
//! `Err` with a message for the journal (S-5.3: a failure like any other, retried with
//! backoff). Every child inherits only its three standard descriptors (S-3.5, see
//! `inherit_only_standard_descriptors`).

use crate::home::environment::{PGBAK_VARIABLE, PgbakHome};
use crate::machine::FAILURE_OUTPUT_MAX_BYTES;
use crate::os::child_output::{LongLines, OutputRules, last_bytes};
use crate::os::process_group::{ChildGroup, GroupOptions, StandardOutput, describe_exit};
use crate::sync::log::SyncLog;
use crate::sync::script_guardian::GUARDIAN_SUBCOMMAND;
use crate::timestamp::DirectoryName;
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::AccessFlags;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A longer output line is cut into pieces of this many bytes, so one runaway line (a progress
/// bar without newlines) cannot grow memory or the log without bound.
pub const LINE_MAX_BYTES: usize = 4096;

/// How the script's output is cut into lines and kept (see the module header): every line,
/// blank ones too, goes to the sync log; the tail is what fits the journal.
const SCRIPT_OUTPUT: OutputRules = OutputRules {
    line_max_bytes: LINE_MAX_BYTES,
    long_lines: LongLines::Split,
    carriage_return_ends_line: false,
    skip_blank_lines: false,
    tail_max_bytes: FAILURE_OUTPUT_MAX_BYTES,
    tail_max_lines: usize::MAX,
};

/// A failure's output for the journal: the child's last lines, then `reason` as the last line
/// (the one `status` and the sync log show first), trimmed from the front to whole lines within
/// [`FAILURE_OUTPUT_MAX_BYTES`].
pub fn failure_output(tail: &str, reason: &str) -> String {
    let tail = tail.trim_end_matches('\n');
    let joined = if tail.is_empty() {
        reason.to_owned()
    } else {
        format!("{tail}\n{reason}")
    };
    if joined.len() <= FAILURE_OUTPUT_MAX_BYTES {
        return joined;
    }
    let cut = last_bytes(&joined, FAILURE_OUTPUT_MAX_BYTES);
    // Start at a whole line when one begins within the kept bytes and output remains besides
    // the reason; otherwise the end of the one long line is better than nothing.
    match cut.find('\n') {
        Some(newline) if cut.len() - (newline + 1) > reason.len() => cut[newline + 1..].to_owned(),
        _ => cut.to_owned(),
    }
}

/// How a script run ended, as the journal records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptOutcome {
    /// Exit status 0: `ScriptSucceeded`.
    Succeeded,
    /// Anything else: `ScriptFailed` with these last lines of output and why.
    Failed { output: String },
}

/// One run of the backup script.
#[derive(Debug)]
pub struct ScriptProcess {
    directory: DirectoryName,
    current_timestamp: DirectoryName,
    /// "backup script" or "prune script": what its messages call it.
    label: &'static str,
    group: ChildGroup,
    started: Instant,
}

/// Why the script cannot be run at all. Its one line (Display) is what `ScriptFailed`
/// records (S-5.3: a failure like any other, retried with backoff), so the few causes it names
/// are part of the message, not a `source` that a chain would print a second time.
#[derive(Debug, thiserror::Error)]
pub enum ScriptStartError {
    #[error(
        "backup script {} is not a regular file: replace it with an executable script",
        .path.display()
    )]
    NotARegularFile { path: PathBuf },
    #[error(
        "backup script {} is not executable ({errno}): chmod 700 {}",
        .path.display(),
        .path.display()
    )]
    NotExecutable { path: PathBuf, errno: Errno },
    #[error("backup script {} is a symbolic link to a missing file: fix the link", .path.display())]
    DanglingSymlink { path: PathBuf },
    #[error(
        "backup script {} does not exist: create it (pgbak init writes a template), or make it \
         a symlink to /bin/true for local-only backups",
        .path.display()
    )]
    Missing { path: PathBuf },
    #[error("backup script {} cannot be examined: {error}", .path.display())]
    CannotExamine { path: PathBuf, error: io::Error },
    #[error(
        "backup directory {} is missing, so the backup script cannot run in it",
        .directory.display()
    )]
    DirectoryMissing { directory: PathBuf },
    #[error(
        "backup script {} could not be started: {error}{}",
        .path.display(),
        if .error.raw_os_error() == Some(nix::libc::ENOEXEC) {
            " (does it start with a #! line such as #!/bin/sh?)"
        } else {
            ""
        }
    )]
    CannotStart { path: PathBuf, error: io::Error },
}

/// Why the script cannot be run at all, or `None` when it looks runnable.
pub fn script_problem(script: &Path) -> Option<ScriptStartError> {
    let path = script.to_owned();
    match std::fs::metadata(script) {
        Ok(metadata) if !metadata.is_file() => Some(ScriptStartError::NotARegularFile { path }),
        Ok(_) => match nix::unistd::access(script, AccessFlags::X_OK) {
            Ok(()) => None,
            Err(errno) => Some(ScriptStartError::NotExecutable { path, errno }),
        },
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            if std::fs::symlink_metadata(script).is_ok() {
                Some(ScriptStartError::DanglingSymlink { path })
            } else {
                Some(ScriptStartError::Missing { path })
            }
        }
        Err(error) => Some(ScriptStartError::CannotExamine { path, error }),
    }
}

/// What leads the script's process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupLeader {
    /// pgbak's own guardian ([`crate::sync::script_guardian`]), running the script as its
    /// child: when the sync dies, the whole group is stopped. What the sync uses.
    Guardian,
    /// The script itself: when the sync dies, only the script is told. For tests of this
    /// module, whose test binary has no guardian subcommand.
    Script,
}

impl ScriptProcess {
    /// Starts `$PGBAK/scripts/backup DIRECTORY CURRENT_TIMESTAMP` in `$PGBAK/DIRECTORY` (S-5.1).
    /// `Err` says why it could not start; its one line is what `ScriptFailed` records.
    pub fn start(
        home: &PgbakHome,
        directory: DirectoryName,
        current_timestamp: DirectoryName,
        log: &Arc<SyncLog>,
        leader: GroupLeader,
    ) -> Result<ScriptProcess, ScriptStartError> {
        let script = home.backup_script_path();
        if let Some(problem) = script_problem(&script) {
            return Err(problem);
        }
        let working_directory = home.directory_path(directory);
        if !working_directory.is_dir() {
            return Err(ScriptStartError::DirectoryMissing {
                directory: working_directory,
            });
        }
        let arguments = [directory.to_string(), current_timestamp.to_string()];
        let source = format!("[script {directory}]");
        let mut process = Self::spawn(
            home,
            &script,
            directory,
            "backup script",
            &arguments,
            &working_directory,
            source,
            log,
            leader,
        )?;
        process.current_timestamp = current_timestamp;
        Ok(process)
    }

    /// Starts `$PGBAK/scripts/prune DIRECTORY` in `$PGBAK` (S-8.3): the same contract as the
    /// backup script's otherwise (environment, output, process group). The caller checked
    /// that the script exists; a problem starting it is an `Err` like the backup script's.
    pub fn start_prune(
        home: &PgbakHome,
        directory: DirectoryName,
        log: &Arc<SyncLog>,
        leader: GroupLeader,
    ) -> Result<ScriptProcess, ScriptStartError> {
        let script = home.prune_script_path();
        if let Some(problem) = script_problem(&script) {
            return Err(problem);
        }
        let source = format!("[prune {directory}]");
        Self::spawn(
            home,
            &script,
            directory,
            "prune script",
            &[directory.to_string()],
            &home.path,
            source,
            log,
            leader,
        )
    }

    #[allow(clippy::too_many_arguments)] // one private constructor behind the two public ones
    fn spawn(
        home: &PgbakHome,
        script: &Path,
        directory: DirectoryName,
        label: &'static str,
        arguments: &[String],
        working_directory: &Path,
        source: String,
        log: &Arc<SyncLog>,
        leader: GroupLeader,
    ) -> Result<ScriptProcess, ScriptStartError> {
        let script = script.to_owned();
        let mut command = match leader {
            GroupLeader::Script => Command::new(&script),
            GroupLeader::Guardian => {
                // Resolved in the forked child: the very binary this sync runs, even if the
                // file was replaced by an upgrade since.
                let mut command = Command::new("/proc/self/exe");
                command.arg(GUARDIAN_SUBCOMMAND).arg(&script);
                command
            }
        };
        command
            .args(arguments)
            .current_dir(working_directory)
            .env(PGBAK_VARIABLE, &home.path);
        // If the sync process dies (kill -9), the group's leader gets SIGTERM instead of
        // running on unsupervised next to the run the next sync starts (S-5.2: one run at a
        // time). The guardian passes it to the whole group (S-5.4).
        let log = Arc::clone(log);
        let options = GroupOptions {
            name: format!("the {label}"),
            output_name: "output".into(),
            stdout: StandardOutput::Drained,
            parent_death_signal: Some(Signal::SIGTERM),
            rules: SCRIPT_OUTPUT,
            sink: Box::new(move |line| log.line(&source, line)),
        };
        let (group, _) =
            ChildGroup::spawn(command, options).map_err(|error| ScriptStartError::CannotStart {
                path: script.clone(),
                error,
            })?;
        Ok(ScriptProcess {
            directory,
            current_timestamp: directory,
            label,
            group,
            started: Instant::now(),
        })
    }

    /// The directory it ships (argument 1).
    pub fn directory(&self) -> DirectoryName {
        self.directory
    }

    /// Argument 2.
    pub fn current_timestamp(&self) -> DirectoryName {
        self.current_timestamp
    }

    pub fn pid(&self) -> u32 {
        self.group.pid()
    }

    /// How long it has been running.
    pub fn running_for(&self) -> Duration {
        self.started.elapsed()
    }

    /// Non-blocking: `Some` once the run ended (its group killed and reaped, output drained).
    pub fn try_finish(&mut self) -> Option<ScriptOutcome> {
        match self.group.try_exit() {
            Ok(None) => None,
            Ok(Some(status)) if status.success() => Some(ScriptOutcome::Succeeded),
            Ok(Some(status)) => Some(ScriptOutcome::Failed {
                output: failure_output(
                    &self.group.output_tail(),
                    &format!("{} {}", self.label, describe_exit(status)),
                ),
            }),
            Err(error) => {
                // Not expected (waitid on our own child); treat the run as failed, and make
                // sure it is gone so a retry never overlaps it.
                let tail = self.group.output_tail();
                self.group.kill_and_reap();
                Some(ScriptOutcome::Failed {
                    output: failure_output(
                        &tail,
                        &format!("cannot wait for the {}: {error}", self.label),
                    ),
                })
            }
        }
    }

    /// SIGTERM to its group, without waiting (see [`ChildGroup::terminate`]).
    pub fn terminate(&self) {
        self.group.terminate();
    }

    /// Stops the run (SIGTERM, `STOP_GRACE` from the first SIGTERM, SIGKILL, reap) and
    /// returns the output for `ScriptFailed`: its last lines, then `reason`.
    pub fn stop(self, reason: &str) -> String {
        self.group.stop();
        failure_output(&self.group.output_tail(), reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::child_output::OutputTail;
    use crate::test_support::ScratchDirectory;
    use std::os::unix::fs::PermissionsExt;

    const GENEROUS: Duration = Duration::from_secs(60);

    fn home(scratch: &ScratchDirectory) -> PgbakHome {
        std::fs::create_dir(scratch.0.join("scripts")).unwrap();
        scratch.home()
    }

    fn write_script(home: &PgbakHome, body: &str) {
        let path = home.backup_script_path();
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
    }

    fn wait_for(process: &mut ScriptProcess) -> ScriptOutcome {
        let deadline = Instant::now() + GENEROUS;
        loop {
            if let Some(outcome) = process.try_finish() {
                return outcome;
            }
            assert!(Instant::now() < deadline, "the script never finished");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    const DIRECTORY: DirectoryName = DirectoryName(1_795_478_400); // 20261124T000000Z
    const CURRENT: DirectoryName = DirectoryName(1_795_478_461); // 20261124T000101Z

    #[test]
    fn the_script_gets_its_directory_arguments_environment_and_null_stdin() {
        let scratch = ScratchDirectory::new("script-contract");
        let home = home(&scratch);
        std::fs::create_dir(home.directory_path(DIRECTORY)).unwrap();
        write_script(
            &home,
            "echo \"$PWD|$1|$2|$PGBAK|$#\" > seen\nreadlink /proc/$$/fd/0 >> seen\n\
             ls -l /proc/$$/fd > descriptors\necho done\n",
        );
        let log = Arc::new(SyncLog::open(&home, false));
        let mut run =
            ScriptProcess::start(&home, DIRECTORY, CURRENT, &log, GroupLeader::Script).unwrap();
        assert_eq!(wait_for(&mut run), ScriptOutcome::Succeeded);
        let seen = std::fs::read_to_string(home.directory_path(DIRECTORY).join("seen")).unwrap();
        let lines: Vec<&str> = seen.lines().collect();
        assert_eq!(
            lines[0],
            format!(
                "{}|20261124T000000Z|20261124T000101Z|{}|2",
                home.directory_path(DIRECTORY).display(),
                home.path.display()
            )
        );
        assert_eq!(lines[1], "/dev/null");
        // The shell's descriptors (`ls -l` shows `l-wx` for a write end, `lr-x` for a read
        // end): stderr is the output pipe's write end, and its read end (close-on-exec) is not
        // inherited. (Other inherited descriptors, such as cargo's jobserver pipe, are the test
        // harness's.)
        let descriptors =
            std::fs::read_to_string(home.directory_path(DIRECTORY).join("descriptors")).unwrap();
        let stderr_line = descriptors
            .lines()
            .find(|line| line.contains(" 2 -> pipe:"))
            .unwrap_or_else(|| panic!("stderr is not a pipe: {descriptors}"));
        let output_pipe = stderr_line.split(" -> ").nth(1).unwrap();
        assert!(
            !descriptors
                .lines()
                .any(|line| line.starts_with("lr") && line.ends_with(output_pipe)),
            "the output pipe's read end is inherited: {descriptors}"
        );
        let log_text = std::fs::read_to_string(crate::sync::log::sync_log_path(&home)).unwrap();
        assert!(
            log_text.contains(" [script 20261124T000000Z] done\n"),
            "{log_text}"
        );
    }

    #[test]
    fn the_script_starts_with_no_signal_blocked_even_if_the_sync_blocks_some() {
        let scratch = ScratchDirectory::new("script-sigmask");
        let home = home(&scratch);
        std::fs::create_dir(home.directory_path(DIRECTORY)).unwrap();
        // `exec`: grep reads its own status, the mask the script started with (reading the
        // shell's from a child would race with the shell's own masking around fork).
        write_script(&home, "exec grep SigBlk /proc/self/status > blocked\n");
        let log = Arc::new(SyncLog::open(&home, false));
        let mut blocked = nix::sys::signal::SigSet::empty();
        blocked.add(Signal::SIGTERM);
        let run = std::thread::spawn(move || {
            nix::sys::signal::pthread_sigmask(
                nix::sys::signal::SigmaskHow::SIG_BLOCK,
                Some(&blocked),
                None,
            )
            .unwrap();
            let mut run =
                ScriptProcess::start(&home, DIRECTORY, CURRENT, &log, GroupLeader::Script).unwrap();
            wait_for(&mut run)
        });
        assert_eq!(run.join().unwrap(), ScriptOutcome::Succeeded);
        let text =
            std::fs::read_to_string(scratch.0.join("20261124T000000Z").join("blocked")).unwrap();
        assert_eq!(text.trim(), "SigBlk:\t0000000000000000");
    }

    #[test]
    fn a_failed_run_keeps_its_last_lines_and_exit_status() {
        let scratch = ScratchDirectory::new("script-fail");
        let home = home(&scratch);
        std::fs::create_dir(home.directory_path(DIRECTORY)).unwrap();
        write_script(
            &home,
            "i=0\nwhile [ $i -lt 500 ]; do echo \"line $i\"; i=$((i+1)); done\n\
             echo 'rsync: connection refused' >&2\nexit 3\n",
        );
        let log = Arc::new(SyncLog::open(&home, false));
        let mut run =
            ScriptProcess::start(&home, DIRECTORY, CURRENT, &log, GroupLeader::Script).unwrap();
        let ScriptOutcome::Failed { output } = wait_for(&mut run) else {
            panic!("expected a failure");
        };
        assert!(output.len() <= FAILURE_OUTPUT_MAX_BYTES, "{}", output.len());
        assert!(
            output.ends_with(
                "line 499\nrsync: connection refused\nbackup script exited with status 3"
            ),
            "{output}"
        );
        assert!(output.starts_with("line "), "whole lines only: {output}");
        assert!(!output.contains("line 0\n"));
    }

    #[test]
    fn a_missing_or_non_executable_script_is_a_clear_error_not_a_panic() {
        let scratch = ScratchDirectory::new("script-missing");
        let home = home(&scratch);
        std::fs::create_dir(home.directory_path(DIRECTORY)).unwrap();
        let log = Arc::new(SyncLog::open(&home, false));
        let missing = ScriptProcess::start(&home, DIRECTORY, CURRENT, &log, GroupLeader::Script)
            .unwrap_err()
            .to_string();
        assert!(missing.contains("does not exist"), "{missing}");
        assert!(missing.contains("scripts/backup"), "{missing}");

        std::fs::write(home.backup_script_path(), "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(
            home.backup_script_path(),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let not_executable =
            ScriptProcess::start(&home, DIRECTORY, CURRENT, &log, GroupLeader::Script)
                .unwrap_err()
                .to_string();
        assert!(
            not_executable.contains("is not executable"),
            "{not_executable}"
        );

        std::fs::write(home.backup_script_path(), "echo no shebang\n").unwrap();
        std::fs::set_permissions(
            home.backup_script_path(),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        // Without a #! line execve fails with ENOEXEC, and execvp (which std uses) runs the
        // file with /bin/sh, as a shell would.
        let mut run =
            ScriptProcess::start(&home, DIRECTORY, CURRENT, &log, GroupLeader::Script).unwrap();
        assert_eq!(wait_for(&mut run), ScriptOutcome::Succeeded);

        std::fs::remove_file(home.backup_script_path()).unwrap();
        std::os::unix::fs::symlink("/nonexistent/pgbak-script", home.backup_script_path()).unwrap();
        let dangling = ScriptProcess::start(&home, DIRECTORY, CURRENT, &log, GroupLeader::Script)
            .unwrap_err()
            .to_string();
        assert!(
            dangling.contains("symbolic link to a missing file"),
            "{dangling}"
        );
    }

    #[test]
    fn stopping_kills_the_whole_process_group_and_leftovers_die_with_the_leader() {
        let scratch = ScratchDirectory::new("script-group");
        let home = home(&scratch);
        std::fs::create_dir(home.directory_path(DIRECTORY)).unwrap();
        // The script starts a grandchild that ignores SIGTERM, then waits: SIGTERM ends the
        // script, and the SIGKILL to the group that follows ends the grandchild.
        write_script(
            &home,
            "sh -c 'trap \"\" TERM; echo $$ > grandchild; exec sleep 300' &\nwait\n",
        );
        let log = Arc::new(SyncLog::open(&home, false));
        let run =
            ScriptProcess::start(&home, DIRECTORY, CURRENT, &log, GroupLeader::Script).unwrap();
        let pid_file = home.directory_path(DIRECTORY).join("grandchild");
        let deadline = Instant::now() + GENEROUS;
        while std::fs::read_to_string(&pid_file).map_or(true, |t| t.trim().is_empty()) {
            assert!(Instant::now() < deadline, "the grandchild never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        let grandchild: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let output = run.stop("interrupted by SIGTERM");
        assert!(output.ends_with("interrupted by SIGTERM"), "{output}");
        // The grandchild was not our child: once killed it is reaped by init, so poll for it
        // to disappear (a zombie shows state Z until then).
        let deadline = Instant::now() + GENEROUS;
        loop {
            let state = std::fs::read_to_string(format!("/proc/{grandchild}/stat"));
            match state {
                Err(_) => break,
                Ok(stat) if stat.split(' ').nth(2) == Some("Z") => break,
                Ok(_) => {
                    assert!(Instant::now() < deadline, "the grandchild survived");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    #[test]
    fn a_background_leftover_does_not_hold_up_a_finished_run() {
        let scratch = ScratchDirectory::new("script-leftover");
        let home = home(&scratch);
        std::fs::create_dir(home.directory_path(DIRECTORY)).unwrap();
        // The leftover keeps the output pipe open; the run must still end when the script does.
        write_script(&home, "sleep 300 &\necho shipped\nexit 0\n");
        let log = Arc::new(SyncLog::open(&home, false));
        let mut run =
            ScriptProcess::start(&home, DIRECTORY, CURRENT, &log, GroupLeader::Script).unwrap();
        assert_eq!(wait_for(&mut run), ScriptOutcome::Succeeded);
    }

    #[test]
    fn failure_output_keeps_the_reason_last_and_fits_the_journal() {
        assert_eq!(failure_output("", "timed out"), "timed out");
        assert_eq!(failure_output("a\nb\n", "timed out"), "a\nb\ntimed out");
        let long = "x".repeat(5000);
        let output = failure_output(&format!("{long}\nshort line"), "killed");
        assert_eq!(output, "short line\nkilled");
        let output = failure_output(&long, "killed");
        assert!(output.len() <= FAILURE_OUTPUT_MAX_BYTES);
        assert!(output.ends_with("\nkilled"));
    }

    #[test]
    fn the_output_tail_is_bounded_and_long_lines_are_cut() {
        let mut tail = OutputTail::new(SCRIPT_OUTPUT.tail_max_bytes, SCRIPT_OUTPUT.tail_max_lines);
        for number in 0..1000 {
            tail.push(&format!("line {number}"));
        }
        let text = tail.text();
        assert!(text.len() <= FAILURE_OUTPUT_MAX_BYTES);
        assert!(text.ends_with("line 999"));
        tail.push(&"é".repeat(3000));
        let text = tail.text();
        assert!(text.len() <= FAILURE_OUTPUT_MAX_BYTES);
        assert!(
            text.len() > FAILURE_OUTPUT_MAX_BYTES - 2,
            "filled up to a character"
        );
    }
}
