//! `kill -9` of `pgbak wal` at every fail point of the archive path, then PostgreSQL's retry
//! (S-2.3, S-2.4): never a partial file under a final name, never a lost record, and the retry
//! succeeds. Needs the `failpoints` feature (`cargo test --features failpoints`; `.ci/run` does).

#![cfg(feature = "failpoints")]

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use crate::util::{Scratch, pgbak_failing_at as pgbak};

fn scratch(label: &str) -> Scratch {
    Scratch::new(&format!("crash-wal-{label}"))
}

/// A WAL-like 16 MiB segment: mostly structured, partly varying, so it compresses like WAL.
fn segment(seed: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16 << 20);
    let mut state = seed | 1;
    while bytes.len() < 16 << 20 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
        bytes.extend_from_slice(&[0u8; 56]);
    }
    bytes
}

fn wal_records(pgbak_dir: &Path, name: &str) -> usize {
    let output = pgbak(pgbak_dir, None, &["status", "--journal"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.contains(" WalArchived ") && line.contains(name))
        .count()
}

/// Every stored `.zst` under `$PGBAK` is complete: `zstd -t` accepts it.
fn assert_no_partial_file(pgbak_dir: &Path) {
    for entry in fs::read_dir(pgbak_dir).unwrap() {
        let wal = entry.unwrap().path().join("pg_wal");
        let Ok(files) = fs::read_dir(&wal) else {
            continue;
        };
        for file in files {
            let path = file.unwrap().path();
            let test = Command::new("zstd")
                .arg("-q")
                .arg("-t")
                .arg(&path)
                .status()
                .unwrap();
            assert!(
                test.success(),
                "{} is not a complete zstd frame",
                path.display()
            );
        }
    }
}

#[test]
fn kill_9_at_every_wal_fail_point_then_the_retry_loses_nothing() {
    let points = [
        "wal-after-compress",
        "wal-after-link",
        "wal-before-journal",
        "wal-after-journal",
    ];
    for (index, point) in points.iter().enumerate() {
        let dir = scratch(point);
        let home = dir.0.join("pgbak");
        fs::create_dir(&home).unwrap();
        fs::write(home.join("config.toml"), "[sync]\nautostart = false\n").unwrap();
        // One file archived before, so the crash hits an existing directory and journal.
        let source = dir.0.join("pg_wal");
        fs::create_dir(&source).unwrap();
        let first = "000000010000000000000001";
        fs::write(source.join(first), segment(1)).unwrap();
        assert!(
            pgbak(&home, None, &["wal", source.join(first).to_str().unwrap()])
                .status
                .success()
        );

        let name = format!("0000000100000000000000{:02X}", index + 2);
        let input = segment(index as u64 + 2);
        fs::write(source.join(&name), &input).unwrap();
        let path = source.join(&name);
        let crashed = pgbak(&home, Some(point), &["wal", path.to_str().unwrap()]);
        assert_eq!(
            crashed.status.signal(),
            Some(9),
            "{point}: the fail point did not fire"
        );
        assert_no_partial_file(&home);
        let recorded_before_retry = wal_records(&home, &name);
        assert!(recorded_before_retry <= 1, "{point}");
        if *point == "wal-after-journal" {
            assert_eq!(
                recorded_before_retry, 1,
                "{point}: the record was durable before the kill"
            );
        } else {
            assert_eq!(
                recorded_before_retry, 0,
                "{point}: recorded before its ack point"
            );
        }

        // PostgreSQL saw no exit 0, so it retries the same file.
        let retry = pgbak(&home, None, &["wal", path.to_str().unwrap()]);
        assert!(
            retry.status.success(),
            "{point}: {}",
            String::from_utf8_lossy(&retry.stderr)
        );
        assert_no_partial_file(&home);
        assert!(
            wal_records(&home, &name) >= 1,
            "{point}: the retry's record is missing"
        );
        // The stored file is exactly the input.
        let stored = fs::read_dir(&home)
            .unwrap()
            .map(|e| e.unwrap().path().join("pg_wal").join(format!("{name}.zst")))
            .find(|p| p.exists())
            .expect("the file is stored");
        let decompressed = Command::new("zstd")
            .args(["-q", "-d", "-c"])
            .arg(&stored)
            .output()
            .unwrap();
        assert!(
            decompressed.stdout == input,
            "{point}: stored content differs from the input"
        );
        // Nothing but complete files and no conflict: the retry matched what the crash left.
        assert!(
            fs::read_dir(home.join("conflicts")).map_or(true, |mut d| d.next().is_none()),
            "{point}"
        );
    }
}
