//! What the integration tests share (they are modules of one test binary, `tests/it/main.rs`):
//! scratch directories under /tmp, running the built `pgbak`, reading what it printed, and the
//! common asserts.
//!
//! Owns: [`unique_temp_path`] and [`Scratch`] (a fresh directory, removed on drop); [`Pgbak`]
//! (a fresh private `$PGBAK` with `scripts/`, removed on drop) and [`Pgbak::run`], which kills
//! a run still going after [`DEADLINE`] and fails the test, and limits its address space to
//! [`ADDRESS_SPACE_LIMIT_BYTES`] so a run that reads without a cap fails instead of taking the
//! machine's memory (S-1.5, S-7.1); [`SPAWN_LOCK`].
//!
//! Invariant: every test of the binary runs in this one process, so a name derived from the pid
//! alone is shared by all of them. Every scratch path carries the pid (another run of the tests
//! on the machine) and a process-wide counter (another test, or another call in the same test).

use std::fs;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::RwLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The binary under test.
pub const PGBAK_BINARY: &str = env!("CARGO_BIN_EXE_pgbak");

/// Writing an executable while another test thread forks lets the child inherit the write
/// descriptor until it execs, and an exec of the new file meanwhile fails with ETXTBSY. Writers
/// of executables take this lock exclusively ([`write_script`]); tests that exec a file right
/// after writing it take it shared around the spawn.
pub static SPAWN_LOCK: RwLock<()> = RwLock::new(());

/// `/tmp/pgbak-LABEL-PID-N`: unique in this process (N counts up) and on the machine (PID).
pub fn unique_temp_path(label: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "pgbak-{label}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A fresh directory at [`unique_temp_path`], removed (with its contents) on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// With the mode the umask gives (`mkdir -p`).
    pub fn new(label: &str) -> Scratch {
        let path = unique_temp_path(label);
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }

    /// With mode 0700, like `$PGBAK`, whatever the umask.
    pub fn private(label: &str) -> Scratch {
        let scratch = Scratch::new(label);
        fs::set_permissions(&scratch.0, fs::Permissions::from_mode(0o700)).unwrap();
        scratch
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `pgbak` with `PGBAK` = `home` and no stdin.
pub fn pgbak_command(home: &Path) -> Command {
    let mut command = Command::new(PGBAK_BINARY);
    command.env("PGBAK", home).stdin(Stdio::null());
    command
}

/// Runs `pgbak ARGS` to the end, with `PGBAK` = `home` or unset.
pub fn pgbak(home: Option<&Path>, args: &[&str]) -> Output {
    let mut command = Command::new(PGBAK_BINARY);
    command.args(args).env_remove("PGBAK");
    if let Some(home) = home {
        command.env("PGBAK", home);
    }
    command.output().unwrap()
}

/// Runs `pgbak ARGS` to the end with `PGBAK` = `home` and no stdin; with `PGBAK_FAILPOINT` =
/// `fail_point` when given (it kills itself there: `--features failpoints`), else unset.
pub fn pgbak_failing_at(home: &Path, fail_point: Option<&str>, args: &[&str]) -> Output {
    let mut command = pgbak_command(home);
    command.args(args).env_remove("PGBAK_FAILPOINT");
    if let Some(point) = fail_point {
        command.env("PGBAK_FAILPOINT", point);
    }
    command.output().unwrap()
}

pub fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Exit 0, or the test fails showing stderr.
pub fn assert_success(output: &Output) {
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        stderr_of(output)
    );
}

/// For a test that changes something process-wide (it becomes a child subreaper, say), which
/// would leak into the other tests of this process: runs the test `name` (`module::function`,
/// as `--list` prints it) again, alone, in a test process of its own. Returns `true` in that
/// process, where the caller runs its body; `false` in this one, once it passed there.
pub fn in_own_process(name: &str) -> bool {
    const VARIABLE: &str = "PGBAK_TEST_IN_OWN_PROCESS";
    if std::env::var_os(VARIABLE).is_some_and(|value| value == name) {
        return true;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(VARIABLE, name)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = (stdout_of(&output), stderr_of(&output));
    assert!(
        output.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{name} in a process of its own: {}\n{stdout}{stderr}",
        output.status
    );
    false
}

/// Whether process `pid` has ended: it is gone, or a zombie waiting for a parent (or a PID 1
/// that may never reap orphans) to reap it.
pub fn has_ended(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // `pid (comm) state …`; comm may contain spaces and parentheses.
        Ok(stat) => stat
            .rsplit(") ")
            .next()
            .is_some_and(|rest| rest.starts_with('Z')),
    }
}

/// Writes `#!/bin/sh` and `body` to `path` with `mode`, under [`SPAWN_LOCK`].
pub fn write_script(path: &Path, body: &str, mode: u32) {
    let _exclusive = SPAWN_LOCK.write().unwrap();
    fs::write(path, format!("#!/bin/sh\n{body}")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A shell script at `path` (mode 0700) running `body`.
pub fn executable(path: &Path, body: &str) {
    write_script(path, body, 0o700);
}

/// Far more than any run here needs; a blocked run is caught after this.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The address space a run may use: ample for pgbak (threads' stacks included), far below what
/// reading `/dev/zero` without a cap would take.
pub const ADDRESS_SPACE_LIMIT_BYTES: u64 = 1 << 30;

/// A fresh `$PGBAK` (mode 0700) with `scripts/` (0700), removed on drop.
pub struct Pgbak(pub PathBuf);

/// What a run printed and how it ended.
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Pgbak {
    pub fn new(name: &str) -> Pgbak {
        let path = unique_temp_path(name);
        let _ = fs::remove_dir_all(&path);
        fs::DirBuilder::new().mode(0o700).create(&path).unwrap();
        fs::DirBuilder::new()
            .mode(0o700)
            .create(path.join("scripts"))
            .unwrap();
        Pgbak(path)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// `chmod MODE $PGBAK/NAME` (`""`: `$PGBAK` itself).
    pub fn chmod(&self, name: &str, mode: u32) {
        fs::set_permissions(self.0.join(name), fs::Permissions::from_mode(mode)).unwrap();
    }

    /// `scripts/backup -> /bin/true`, the seed's local-only script.
    pub fn link_script_to_bin_true(&self) {
        std::os::unix::fs::symlink("/bin/true", self.join("scripts/backup")).unwrap();
    }

    /// A `pg_basebackup` stand-in (in the parent of `$PGBAK`'s scratch, outside `$PGBAK`) that
    /// streams a tiny tar, and a `config.toml` (0600) pointing at it: a sync then finishes at
    /// once instead of retrying a failing base backup.
    pub fn fake_pg_basebackup(&self) {
        let data = self.join("fake-data");
        fs::DirBuilder::new().mode(0o700).create(&data).unwrap();
        fs::write(data.join("PG_VERSION"), "17\n").unwrap();
        let program = self.join("fake-pg_basebackup");
        executable(
            &program,
            &format!("exec tar -C {} -cf - .\n", data.display()),
        );
        write_private(
            &self.join("config.toml"),
            &format!("[pg_basebackup]\npath = \"{}\"\n", program.display()),
        );
    }

    /// Runs `pgbak ARGS` with `PGBAK` set, no stdin, the address-space limit and the deadline.
    pub fn run(&self, args: &[&str]) -> Run {
        let mut command = Command::new(PGBAK_BINARY);
        command
            .args(args)
            .env("PGBAK", &self.0)
            .env_remove("PGBAK_FAILPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: setrlimit(2) is async-signal-safe and allocates nothing.
        unsafe {
            command.pre_exec(|| {
                let limit = nix::libc::rlimit {
                    rlim_cur: ADDRESS_SPACE_LIMIT_BYTES,
                    rlim_max: ADDRESS_SPACE_LIMIT_BYTES,
                };
                if nix::libc::setrlimit(nix::libc::RLIMIT_AS, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let mut child = command.spawn().unwrap();
        // Drain both pipes on threads, so a chatty run never blocks on a full pipe.
        let drain = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = pipe.read_to_string(&mut text);
                text
            })
        };
        let stdout = drain(Box::new(child.stdout.take().unwrap()));
        let stderr = drain(Box::new(child.stderr.take().unwrap()));
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!("pgbak {args:?} still ran after {DEADLINE:?}: it blocked");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Run {
            status,
            stdout: stdout.join().unwrap(),
            stderr: stderr.join().unwrap(),
        }
    }
}

impl Drop for Pgbak {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Writes `text` to `path` with mode 0600, whatever the umask.
pub fn write_private(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}
