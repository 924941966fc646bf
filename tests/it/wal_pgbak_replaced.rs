//! `pgbak wal` whose `$PGBAK/pgbak.lock` is replaced while it archives (S-6.6, S-2.3): the
//! journal record is the acknowledgement, so `wal` checks right before it that the lock file it
//! holds is still the one `$PGBAK` names, and fails (exit 1, one clear line) when it is not,
//! instead of acknowledging into a file nobody reads any more. PostgreSQL keeps the segment and
//! retries, and the retry records it in the file that is there now.
//!
//! The window between opening the journal and the record is widened with strace's fault
//! injection (every `fsync` returns 0.3 s late), not with sleeps in pgbak.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::Scratch;

/// Only so a bug cannot hang the test run.
const GENEROUS: Duration = Duration::from_secs(60);

fn scratch(label: &str) -> Scratch {
    let scratch = Scratch::new(&format!("wal-replaced-{label}"));
    let path = &scratch.0;
    fs::create_dir_all(path.join("pgbak")).unwrap();
    fs::create_dir_all(path.join("source")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path.join("pgbak"), fs::Permissions::from_mode(0o700)).unwrap();
    // No background sync: this test is about `wal` alone.
    fs::write(
        path.join("pgbak/config.toml"),
        "[sync]\nautostart = false\n",
    )
    .unwrap();
    scratch
}

/// 16 MiB of WAL-like bytes (a power-of-two size, S-2.1).
fn segment() -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16 << 20);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    while bytes.len() < 16 << 20 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
        bytes.extend_from_slice(&[0u8; 56]);
    }
    bytes
}

fn backup_directory(pgbak: &Path) -> Option<PathBuf> {
    fs::read_dir(pgbak)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| {
            path.is_dir()
                && path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('2'))
        })
}

#[test]
fn wal_fails_instead_of_acknowledging_into_a_replaced_pgbak_lock() {
    let scratch = scratch("lock");
    let pgbak = scratch.0.join("pgbak");
    let source = scratch.0.join("source/000000010000000000000001");
    fs::write(&source, segment()).unwrap();

    let wal = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=fsync"])
        .args(["-e", "inject=fsync:delay_exit=300000"])
        .arg(env!("CARGO_BIN_EXE_pgbak"))
        .arg("wal")
        .arg(&source)
        .env("PGBAK", &pgbak)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The backup directory appears after the journal was opened and well before the record
    // (several delayed fsyncs later): replace the lock file by a copy renamed over it.
    let deadline = Instant::now() + GENEROUS;
    while backup_directory(&pgbak).is_none() {
        assert!(Instant::now() < deadline, "wal never created its directory");
        std::thread::sleep(Duration::from_millis(5));
    }
    let lock = pgbak.join("pgbak.lock");
    let copy = pgbak.join("pgbak.lock.copy");
    fs::copy(&lock, &copy).unwrap();
    fs::rename(&copy, &lock).unwrap();

    let output = wal.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("pgbak: wal 000000010000000000000001: ")
            && stderr.contains(&format!(
                "{}/pgbak.lock is no longer the lock file this process opened",
                pgbak.display()
            )),
        "{stderr}"
    );
    assert!(stderr.contains("\nhint: "), "{stderr}");

    // PostgreSQL's retry records it in the journal that is there now.
    let retry = Command::new(env!("CARGO_BIN_EXE_pgbak"))
        .arg("wal")
        .arg(&source)
        .env("PGBAK", &pgbak)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        retry.status.success(),
        "{}",
        String::from_utf8_lossy(&retry.stderr)
    );
    let journal = Command::new(env!("CARGO_BIN_EXE_pgbak"))
        .args(["status", "--journal"])
        .env("PGBAK", &pgbak)
        .output()
        .unwrap();
    let journal = String::from_utf8_lossy(&journal.stdout);
    let records: Vec<&str> = journal
        .lines()
        .filter(|line| line.contains(" WalArchived "))
        .collect();
    assert_eq!(records.len(), 1, "{journal}");
}
