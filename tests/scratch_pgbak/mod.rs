//! A scratch `$PGBAK` and a way to run the real binary on it that cannot hang the test run:
//! shared by the tests of files in `$PGBAK` that are not what pgbak expects (S-1.5, S-7.1).
//!
//! Owns: [`Pgbak`] (a fresh private `$PGBAK` with `scripts/`, removed on drop) and
//! [`Pgbak::run`], which kills a run still going after [`DEADLINE`] and fails the test, and
//! limits its address space to [`ADDRESS_SPACE_LIMIT_BYTES`] so a run that reads without a cap
//! fails instead of taking the machine's memory.

#![allow(dead_code)] // Each test binary uses its own part.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

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
        let path = std::env::temp_dir().join(format!("pgbak-{name}-{}", std::process::id()));
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
        fs::write(
            &program,
            format!("#!/bin/sh\nexec tar -C {} -cf - .\n", data.display()),
        )
        .unwrap();
        fs::set_permissions(&program, fs::Permissions::from_mode(0o700)).unwrap();
        write_private(
            &self.join("config.toml"),
            &format!("[pg_basebackup]\npath = \"{}\"\n", program.display()),
        );
    }

    /// Runs `pgbak ARGS` with `PGBAK` set, no stdin, the address-space limit and the deadline.
    pub fn run(&self, args: &[&str]) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pgbak"));
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
