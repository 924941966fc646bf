//! Base backups against fake `pg_basebackup` programs (shell scripts in a scratch directory):
//! the exact command line, the stored `base.tzst` (mode, `zstd -t`, byte-for-byte `tar -xf`),
//! every failure path leaving no `base.tzst` behind, the S-4.6 tablespace message, stopping a
//! whole process group, start errors, and the `current` link and failed-directory removal
//! (S-1.3, S-4.3 – S-4.6).

use pgbak::config::Config;
use pgbak::hint::OperatorHint;
use pgbak::home::environment::PgbakHome;
use pgbak::sync::base_backup::{BaseBackupError, BaseBackupRun};
use pgbak::sync::directories::{point_current_link_at, remove_failed_directory};
use pgbak::timestamp::DirectoryName;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::util::{SPAWN_LOCK, Scratch, in_own_process, write_script};

/// A safety net against a hung test, not a timing assertion.
const HANG_GUARD: Duration = Duration::from_secs(300);

/// 2026-11-24T15:43:07Z.
const DIRECTORY: DirectoryName = DirectoryName(1_795_534_987);
const OTHER_DIRECTORY: DirectoryName = DirectoryName(1_795_700_000);

/// A fresh directory under /tmp with `pgbak/` (0700, like `$PGBAK`) in it, removed on drop.
fn new_scratch(label: &str) -> Scratch {
    let scratch = Scratch::new(&format!("base-backup-{label}"));
    fs::create_dir_all(scratch.pgbak()).unwrap();
    fs::set_permissions(scratch.pgbak(), fs::Permissions::from_mode(0o700)).unwrap();
    scratch
}

/// What these tests need of their scratch directory.
trait BaseBackupScratch {
    fn pgbak(&self) -> PathBuf;
    fn home(&self) -> PgbakHome;
    fn directory(&self) -> PathBuf;
    fn fake(&self, name: &str, body: &str) -> PathBuf;
    fn config(&self, program: &Path) -> Config;
}

impl BaseBackupScratch for Scratch {
    fn pgbak(&self) -> PathBuf {
        self.0.join("pgbak")
    }

    fn home(&self) -> PgbakHome {
        PgbakHome {
            path: self.pgbak(),
            owner_uid: fs::metadata(self.pgbak()).unwrap().uid(),
        }
    }

    fn directory(&self) -> PathBuf {
        self.home().directory_path(DIRECTORY)
    }

    /// Writes an executable shell script; `@SCRATCH@` in the body becomes the scratch path.
    fn fake(&self, name: &str, body: &str) -> PathBuf {
        let path = self.0.join(name);
        let body = body.replace("@SCRATCH@", &self.0.display().to_string());
        write_script(&path, &body, 0o755);
        path
    }

    /// A config running `program` as pg_basebackup, with one compression worker per CPU.
    fn config(&self, program: &Path) -> Config {
        let mut config = Config::default();
        config.pg_basebackup.path = program.display().to_string();
        config
    }
}

fn start(scratch: &Scratch, config: &Config) -> BaseBackupRun {
    let _shared = SPAWN_LOCK.read().unwrap();
    BaseBackupRun::start(&scratch.home(), config, DIRECTORY).unwrap()
}

fn start_with_log(
    scratch: &Scratch,
    config: &Config,
    log: Box<dyn FnMut(&str) + Send>,
) -> BaseBackupRun {
    let _shared = SPAWN_LOCK.read().unwrap();
    BaseBackupRun::start_with_log(&scratch.home(), config, DIRECTORY, log).unwrap()
}

fn start_error(scratch: &Scratch, config: &Config) -> BaseBackupError {
    let _shared = SPAWN_LOCK.read().unwrap();
    BaseBackupRun::start(&scratch.home(), config, DIRECTORY).unwrap_err()
}

fn run(program: &str, args: &[&std::ffi::OsStr]) -> std::process::Output {
    let _shared = SPAWN_LOCK.read().unwrap();
    Command::new(program).args(args).output().unwrap()
}

/// Polls `try_finish` until it reports.
fn outcome(run: &mut BaseBackupRun) -> Result<u64, String> {
    let started = Instant::now();
    loop {
        if let Some(outcome) = run.try_finish() {
            return outcome;
        }
        assert!(
            started.elapsed() < HANG_GUARD,
            "the base backup never finished"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn entries(directory: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().mode() & 0o7777
}

/// Deterministic bytes that zstd cannot shrink much (xorshift64).
fn noise(length: usize, mut state: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(length + 8);
    while bytes.len() < length {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(length);
    bytes
}

/// A small data directory: nested directories, an empty file, a 3 MiB file.
fn make_source_tree(root: &Path) {
    fs::create_dir_all(root.join("base/1")).unwrap();
    fs::create_dir_all(root.join("global")).unwrap();
    fs::create_dir_all(root.join("pg_wal")).unwrap();
    fs::write(root.join("PG_VERSION"), b"17\n").unwrap();
    fs::write(root.join("global/pg_control"), noise(8192, 7)).unwrap();
    fs::write(root.join("base/1/16384"), noise(3 << 20, 42)).unwrap();
    fs::write(root.join("base/1/empty"), b"").unwrap();
}

/// Every path under `root` with its contents (`None` for a directory).
fn tree(root: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    fn walk(root: &Path, here: &Path, into: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
        for entry in fs::read_dir(here).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(root).unwrap().to_path_buf();
            if path.is_dir() {
                into.insert(relative, None);
                walk(root, &path, into);
            } else {
                into.insert(relative, Some(fs::read(&path).unwrap()));
            }
        }
    }
    let mut into = BTreeMap::new();
    walk(root, root, &mut into);
    into
}

/// `$PGBAK/DIRECTORY/base.tzst` is present, 0600, `zstd -t` clean, `size` bytes, and
/// `tar -C out -xf` reproduces `source` byte for byte.
fn assert_base_reproduces(scratch: &Scratch, source: &Path, size: u64) {
    let base = scratch.directory().join("base.tzst");
    assert_eq!(fs::metadata(&base).unwrap().len(), size);
    assert_eq!(mode(&base), 0o600, "S-1.3");
    assert_eq!(mode(&scratch.directory()), 0o700, "S-1.3");
    assert_eq!(entries(&scratch.directory()), ["base.tzst"]);

    let tested = run("zstd", &["-t".as_ref(), "-q".as_ref(), base.as_os_str()]);
    assert!(tested.status.success(), "zstd -t: {tested:?}");

    let out = scratch.0.join("restored");
    fs::create_dir(&out).unwrap();
    let extracted = run(
        "tar",
        &[
            "-C".as_ref(),
            out.as_os_str(),
            "-xf".as_ref(),
            base.as_os_str(),
        ],
    );
    assert!(extracted.status.success(), "tar -xf: {extracted:?}");
    assert!(tree(source) == tree(&out), "the restored tree differs");
}

#[test]
fn a_successful_run_passes_the_exact_command_line_and_stores_a_tarball_gnu_tar_extracts() {
    let scratch = new_scratch("success");
    let source = scratch.0.join("source");
    make_source_tree(&source);
    let program = scratch.fake(
        "pg_basebackup",
        "printf '%s\\n' \"$@\" > @SCRATCH@/arguments\n\
         echo 'pg_basebackup: checkpoint completed' >&2\n\
         exec tar -C @SCRATCH@/source -cf - .\n",
    );
    let mut config = scratch.config(&program);
    config.pg_basebackup.host = "db.example".into();
    config.pg_basebackup.port = 5433;
    config.pg_basebackup.user = "backup".into();
    config.pg_basebackup.extra_args = vec!["--checkpoint=fast".into(), "--label=pgbak test".into()];
    config.base.compression_level = 5;
    config.base.compression_threads = 2;
    let logged = Arc::new(Mutex::new(Vec::<String>::new()));
    let log_into = Arc::clone(&logged);
    let mut backup = start_with_log(
        &scratch,
        &config,
        Box::new(move |line| log_into.lock().unwrap().push(line.to_owned())),
    );

    let size = outcome(&mut backup).unwrap();

    let arguments = fs::read_to_string(scratch.0.join("arguments")).unwrap();
    let expected = [
        "-D",
        "-",
        "-F",
        "tar",
        "-X",
        "none",
        "-w",
        "-h",
        "db.example",
        "-p",
        "5433",
        "-U",
        "backup",
        "--checkpoint=fast",
        "--label=pgbak test",
    ];
    assert_eq!(arguments.lines().collect::<Vec<_>>(), expected);
    assert_base_reproduces(&scratch, &source, size);
    assert_eq!(backup.bytes_written(), size);
    assert_eq!(backup.try_finish(), Some(Ok(size)), "the outcome is kept");
    assert_eq!(
        *logged.lock().unwrap(),
        ["pg_basebackup: checkpoint completed"]
    );
    assert_eq!(backup.stop(), "pg_basebackup: checkpoint completed");
}

#[test]
fn without_connection_settings_only_the_fixed_options_are_passed() {
    let scratch = new_scratch("defaults");
    let source = scratch.0.join("source");
    make_source_tree(&source);
    let program = scratch.fake(
        "pg_basebackup",
        "printf '%s\\n' \"$@\" > @SCRATCH@/arguments\n\
         tar -C @SCRATCH@/source -cf - .\n",
    );
    let mut backup = start(&scratch, &scratch.config(&program));
    let size = outcome(&mut backup).unwrap();
    let arguments = fs::read_to_string(scratch.0.join("arguments")).unwrap();
    assert_eq!(
        arguments.lines().collect::<Vec<_>>(),
        ["-D", "-", "-F", "tar", "-X", "none", "-w"]
    );
    assert_base_reproduces(&scratch, &source, size);
}

#[test]
fn a_failed_connection_reports_its_stderr_and_leaves_no_file() {
    let scratch = new_scratch("failure");
    let program = scratch.fake(
        "pg_basebackup",
        "echo 'pg_basebackup: error: connection to server failed' >&2\nexit 1\n",
    );
    let mut backup = start(&scratch, &scratch.config(&program));
    let message = outcome(&mut backup).unwrap_err();
    assert!(message.contains("exited with status 1"), "{message}");
    assert!(
        message.contains("pg_basebackup: error: connection to server failed"),
        "{message}"
    );
    assert_eq!(entries(&scratch.directory()), Vec::<String>::new());
    assert_eq!(
        backup.stop(),
        "pg_basebackup: error: connection to server failed"
    );
}

#[test]
fn a_failure_after_partial_output_leaves_no_file_behind() {
    let scratch = new_scratch("partial");
    let program = scratch.fake(
        "pg_basebackup",
        "head -c 32000000 /dev/urandom\n\
         echo 'pg_basebackup: error: could not read COPY data' >&2\n\
         exit 1\n",
    );
    let mut backup = start(&scratch, &scratch.config(&program));
    let message = outcome(&mut backup).unwrap_err();
    assert!(message.contains("could not read COPY data"), "{message}");
    assert!(backup.bytes_written() > 0, "output was being written");
    assert_eq!(entries(&scratch.directory()), Vec::<String>::new());
}

#[test]
fn extra_tablespaces_get_a_line_naming_the_limitation() {
    let scratch = new_scratch("tablespace");
    let program = scratch.fake(
        "pg_basebackup",
        "echo 'pg_basebackup: error: can only write single tablespace to stdout, database has 2' >&2\n\
         exit 1\n",
    );
    let mut backup = start(&scratch, &scratch.config(&program));
    let message = outcome(&mut backup).unwrap_err();
    let first_line = message.lines().next().unwrap_or_default();
    assert!(
        first_line.contains("pgbak streams only the main tablespace")
            && first_line.contains("extra tablespaces are not supported (S-4.6)"),
        "{message}"
    );
    assert!(message.contains("exited with status 1"), "{message}");
    assert!(
        message.contains("can only write single tablespace to stdout, database has 2"),
        "the program's own line is kept: {message}"
    );
    assert_eq!(entries(&scratch.directory()), Vec::<String>::new());
}

#[test]
fn exit_zero_without_a_complete_tar_stream_is_a_failure() {
    for (label, body, expected) in [
        ("empty", "exit 0\n", "wrote nothing"),
        (
            "garbage",
            "printf 'not a tar archive'\n",
            "do not end like a tar archive",
        ),
    ] {
        let scratch = new_scratch(label);
        let program = scratch.fake("pg_basebackup", body);
        let mut backup = start(&scratch, &scratch.config(&program));
        let message = outcome(&mut backup).unwrap_err();
        assert!(message.contains(expected), "{label}: {message}");
        assert_eq!(entries(&scratch.directory()), Vec::<String>::new());
    }
}

#[test]
fn a_program_killed_by_a_signal_is_reported_as_such() {
    let scratch = new_scratch("signal");
    let program = scratch.fake("pg_basebackup", "kill -KILL $$\n");
    let mut backup = start(&scratch, &scratch.config(&program));
    let message = outcome(&mut backup).unwrap_err();
    assert!(message.contains("killed by signal SIGKILL"), "{message}");
    assert_eq!(entries(&scratch.directory()), Vec::<String>::new());
}

/// `kill(pid, 0)` fails with ESRCH once the process is gone and reaped. A grandchild orphaned
/// by the kill is reparented to this process (a child subreaper), so reap it here first.
fn assert_gone(pid: Pid) {
    match waitpid(pid, None) {
        Ok(WaitStatus::Signaled(_, signal, _)) => {
            assert!(
                [Signal::SIGTERM, Signal::SIGKILL].contains(&signal),
                "{signal}"
            );
        }
        Ok(other) => panic!("{pid} ended with {other:?}, not by a signal"),
        Err(Errno::ECHILD) => {} // Reaped already (by us, or by its shell).
        Err(errno) => panic!("waitpid {pid}: {errno}"),
    }
    assert_eq!(kill(pid, None), Err(Errno::ESRCH), "{pid} still exists");
}

fn read_pid(path: &Path) -> Pid {
    Pid::from_raw(fs::read_to_string(path).unwrap().trim().parse().unwrap())
}

/// Starts `body`, waits until it printed `ready` on stderr, stops it; returns the tail. Makes the
/// process a child subreaper (for [`assert_gone`]): only in a test process of its own
/// ([`in_own_process`]), so the other tests' orphans are not reparented to it.
fn stop_when_ready(scratch: &Scratch, body: &str) -> String {
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let program = scratch.fake("pg_basebackup", body);
    let (sender, receiver) = mpsc::channel::<String>();
    let sender = Mutex::new(sender);
    let mut backup = start_with_log(
        scratch,
        &scratch.config(&program),
        Box::new(move |line| {
            let _ = sender.lock().unwrap().send(line.to_owned());
        }),
    );
    loop {
        let line = receiver.recv_timeout(HANG_GUARD).unwrap();
        if line.contains("ready") {
            break;
        }
    }
    assert_eq!(backup.try_finish(), None, "still running");
    backup.stop()
}

#[test]
fn stop_kills_the_whole_process_group_and_returns_the_tail() {
    if !in_own_process("base_backup::stop_kills_the_whole_process_group_and_returns_the_tail") {
        return;
    }
    let scratch = new_scratch("stop");
    let tail = stop_when_ready(
        &scratch,
        "sleep 1000 &\n\
         echo $! > @SCRATCH@/sleeper.pid\n\
         echo $$ > @SCRATCH@/leader.pid\n\
         echo 'pg_basebackup: waiting for checkpoint; ready' >&2\n\
         wait\n",
    );
    assert_eq!(tail, "pg_basebackup: waiting for checkpoint; ready");
    assert_gone(read_pid(&scratch.0.join("leader.pid")));
    assert_gone(read_pid(&scratch.0.join("sleeper.pid")));
    assert_eq!(entries(&scratch.directory()), Vec::<String>::new());
}

#[test]
fn stop_escalates_to_sigkill_when_sigterm_is_ignored() {
    if !in_own_process("base_backup::stop_escalates_to_sigkill_when_sigterm_is_ignored") {
        return;
    }
    let scratch = new_scratch("stubborn");
    // `trap '' TERM` is inherited by the `sleep` children: nobody in the group dies of SIGTERM.
    let tail = stop_when_ready(
        &scratch,
        "trap '' TERM\n\
         sleep 1000 &\n\
         echo $! > @SCRATCH@/sleeper.pid\n\
         echo $$ > @SCRATCH@/leader.pid\n\
         echo 'pg_basebackup: ignoring SIGTERM; ready' >&2\n\
         while :; do sleep 1; done\n",
    );
    assert_eq!(tail, "pg_basebackup: ignoring SIGTERM; ready");
    assert_gone(read_pid(&scratch.0.join("leader.pid")));
    assert_gone(read_pid(&scratch.0.join("sleeper.pid")));
}

#[test]
fn a_missing_program_is_a_start_error_naming_it_and_the_config_key() {
    let scratch = new_scratch("missing");
    let absent = scratch.0.join("no-such-pg_basebackup");
    let error = start_error(&scratch, &scratch.config(&absent));
    assert!(
        matches!(error, BaseBackupError::ProgramNotFound { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(&absent.display().to_string()), "{message}");
    assert!(message.contains("pg_basebackup.path"), "{message}");
    let hint = error.hint().unwrap();
    assert!(
        hint.contains("pg_basebackup.path") && hint.contains("PostgreSQL client tools"),
        "{hint}"
    );

    let mut bare = Config::default();
    bare.pg_basebackup.path = "pgbak-test-no-such-program".into();
    let message = start_error(&scratch, &bare).to_string();
    assert!(
        message.contains("\"pgbak-test-no-such-program\"") && message.contains("in PATH"),
        "{message}"
    );
    assert_eq!(entries(&scratch.directory()), Vec::<String>::new());
}

#[test]
fn a_program_without_execute_permission_is_a_start_error() {
    let scratch = new_scratch("not-executable");
    let program = scratch.fake("pg_basebackup", "exit 0\n");
    fs::set_permissions(&program, fs::Permissions::from_mode(0o644)).unwrap();
    let error = start_error(&scratch, &scratch.config(&program));
    assert!(
        matches!(error, BaseBackupError::ProgramNotExecutable { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains(&program.display().to_string()));
}

#[test]
fn an_existing_base_tzst_is_never_overwritten() {
    let scratch = new_scratch("existing");
    fs::create_dir(scratch.directory()).unwrap();
    fs::write(scratch.directory().join("base.tzst"), b"finished earlier").unwrap();
    let program = scratch.fake("pg_basebackup", "exit 0\n");
    let error = start_error(&scratch, &scratch.config(&program));
    assert!(
        matches!(error, BaseBackupError::BaseAlreadyPresent { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("already exists"), "{error}");
    assert_eq!(
        fs::read(scratch.directory().join("base.tzst")).unwrap(),
        b"finished earlier"
    );
}

/// Unmounts on drop, so a failing assertion does not leave a mount behind.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_file_system_is_reported_and_leaves_no_file() {
    let scratch = new_scratch("enospc");
    let mounted = {
        let _shared = SPAWN_LOCK.read().unwrap();
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs"])
            .arg(scratch.pgbak())
            .status()
    };
    if !mounted.is_ok_and(|status| status.success()) {
        eprintln!("skipped: cannot mount a small tmpfs here (needs root outside a sandbox)");
        return;
    }
    let _mount = Mount(scratch.pgbak());
    let program = scratch.fake(
        "pg_basebackup",
        "head -c 8000000 /dev/urandom\nexec cat /dev/zero\n",
    );
    let mut backup = start(&scratch, &scratch.config(&program));
    let message = outcome(&mut backup).unwrap_err();
    assert!(message.contains("No space left on device"), "{message}");
    assert!(message.contains("base.tzst"), "{message}");
    assert_eq!(entries(&scratch.directory()), Vec::<String>::new());
}

#[test]
fn the_current_link_is_created_then_repointed_atomically_and_idempotently() {
    let scratch = new_scratch("current");
    let home = scratch.home();
    let current = home.current_link_path();
    fs::create_dir(home.directory_path(DIRECTORY)).unwrap();
    fs::create_dir(home.directory_path(OTHER_DIRECTORY)).unwrap();

    point_current_link_at(&home, DIRECTORY).unwrap();
    assert_eq!(
        fs::read_link(&current).unwrap(),
        Path::new("20261124T154307Z")
    );
    point_current_link_at(&home, OTHER_DIRECTORY).unwrap();
    let other = OTHER_DIRECTORY.to_string();
    assert_eq!(fs::read_link(&current).unwrap(), Path::new(&other));
    point_current_link_at(&home, OTHER_DIRECTORY).unwrap();
    assert_eq!(fs::read_link(&current).unwrap(), Path::new(&other));
    assert!(
        fs::symlink_metadata(&current).unwrap().is_symlink(),
        "relative symlink, S-1.3"
    );
    assert_eq!(
        entries(&home.path),
        ["20261124T154307Z", other.as_str(), "current"],
        "no temporary link left behind"
    );

    let missing = DirectoryName(1_800_000_000);
    let error = point_current_link_at(&home, missing).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
    assert_eq!(fs::read_link(&current).unwrap(), Path::new(&other));
}

#[test]
fn a_failed_directory_is_removed_idempotently_but_never_the_current_one() {
    let scratch = new_scratch("remove");
    let home = scratch.home();
    let failed = home.directory_path(DIRECTORY);
    fs::create_dir_all(failed.join("pg_wal")).unwrap();
    fs::write(failed.join("pg_wal/000000010000000000000001.zst"), b"wal").unwrap();

    remove_failed_directory(&home, DIRECTORY).unwrap();
    assert!(!failed.exists());
    remove_failed_directory(&home, DIRECTORY).unwrap();

    fs::create_dir(home.directory_path(OTHER_DIRECTORY)).unwrap();
    point_current_link_at(&home, OTHER_DIRECTORY).unwrap();
    let error = remove_failed_directory(&home, OTHER_DIRECTORY).unwrap_err();
    assert!(error.to_string().contains("current"), "{error}");
    assert!(home.directory_path(OTHER_DIRECTORY).is_dir());
}
