//! `kill -9` of the sync at every one of its fail points — right after `SyncStarted`, between a
//! base backup's intent and `pg_basebackup`, between the script's intent and its start, after
//! the script exited but before its outcome is recorded, and just before `SyncStopped` — then a
//! new sync (S-3.2, S-4.5, S-6.1): it records `SyncAbandoned`, resumes, and ships everything;
//! no WAL archived since the first finished base backup is lost, and no directory is left
//! pending or failed. Needs `--features failpoints`.

#![cfg(feature = "failpoints")]

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{Scratch, executable, pgbak_failing_at as pgbak};

/// A `$PGBAK` with a stand-in `pg_basebackup` (a tar of a small tree), a backup script that
/// succeeds, no autostart, and one archived segment.
pub(crate) fn world(label: &str) -> (Scratch, PathBuf, PathBuf) {
    let scratch = Scratch::new(&format!("crash-sync-{label}"));
    let root = scratch.0.clone();
    fs::create_dir_all(root.join("data")).unwrap();
    fs::write(root.join("data/PG_VERSION"), "15\n").unwrap();
    let home = root.join("pgbak");
    fs::create_dir(&home).unwrap();
    fs::create_dir(home.join("scripts")).unwrap();
    let fake = root.join("fake_pg_basebackup.sh");
    executable(
        &fake,
        &format!("exec tar -C {} -cf - .\n", root.join("data").display()),
    );
    fs::write(
        home.join("config.toml"),
        format!(
            // The stand-in base is tiny; without a large ratio the WAL would make a second base
            // backup due at once (S-4.2), and the WAL would sit in the sealed directory.
            "[sync]\nautostart = false\n[base]\nmax_wal_ratio = 1000000.0\nretry_delay_min_seconds = 1\n\
             [pg_basebackup]\npath = \"{}\"\n",
            fake.display()
        ),
    )
    .unwrap();
    executable(&home.join("scripts/backup"), "exit 0\n");
    let segment = root.join("000000010000000000000001");
    let bytes: Vec<u8> = (0..16u32 << 20).map(|i| (i / 4096 % 251) as u8).collect();
    fs::write(&segment, &bytes).unwrap();
    let archived = pgbak(&home, None, &["wal", segment.to_str().unwrap()]);
    assert!(
        archived.status.success(),
        "{}",
        String::from_utf8_lossy(&archived.stderr)
    );
    (scratch, home, segment)
}

pub(crate) fn journal(home: &Path) -> String {
    String::from_utf8(pgbak(home, None, &["status", "--journal"]).stdout).unwrap()
}

pub(crate) fn archive(home: &Path, root: &Path, number: u32) -> PathBuf {
    let segment = root.join(format!("0000000100000000000000{number:02X}"));
    let bytes: Vec<u8> = (0..16u32 << 20)
        .map(|i| ((i / 4096 + number) % 251) as u8)
        .collect();
    fs::write(&segment, &bytes).unwrap();
    let archived = pgbak(home, None, &["wal", segment.to_str().unwrap()]);
    assert!(
        archived.status.success(),
        "{}",
        String::from_utf8_lossy(&archived.stderr)
    );
    segment
}

/// Every archived segment is stored, complete and exact, in some backup directory.
pub(crate) fn assert_stored(home: &Path, segment: &Path, point: &str) {
    let name = format!("{}.zst", segment.file_name().unwrap().to_str().unwrap());
    let stored: Vec<PathBuf> = fs::read_dir(home)
        .unwrap()
        .map(|e| e.unwrap().path().join("pg_wal").join(&name))
        .filter(|p| p.exists())
        .collect();
    assert!(!stored.is_empty(), "{point}: {name} was lost");
    for path in stored {
        let decompressed = Command::new("zstd")
            .args(["-q", "-d", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            decompressed.stdout == fs::read(segment).unwrap(),
            "{point}: {} changed",
            path.display()
        );
    }
}

#[test]
fn kill_9_of_the_sync_at_every_fail_point_then_the_next_sync_resumes() {
    let points = [
        "sync-after-started",
        "sync-after-base-intent",
        "sync-after-script-intent",
        "sync-after-script-exit",
        "sync-before-stopped",
    ];
    for point in points {
        // A finished base backup with one shipped segment, then a second segment.
        let (scratch, home, first) = world(point);
        let clean = pgbak(&home, None, &["sync"]);
        assert!(
            clean.status.success(),
            "{point}: {}",
            String::from_utf8_lossy(&clean.stderr)
        );
        let second = archive(&home, &scratch.0, 2);

        // `sync --base`: a base backup and a script run, killed at the fail point.
        let crashed = pgbak(&home, Some(point), &["sync", "--base"]);
        assert_eq!(
            crashed.status.signal(),
            Some(9),
            "{point}: the fail point did not fire: {}",
            String::from_utf8_lossy(&crashed.stderr)
        );
        let status: serde_json::Value =
            serde_json::from_slice(&pgbak(&home, None, &["status", "--json"]).stdout).unwrap();
        assert_eq!(status["sync"]["died"], true, "{point}: {status}");
        // PostgreSQL keeps archiving meanwhile.
        let third = archive(&home, &scratch.0, 3);

        let resumed = pgbak(&home, None, &["sync"]);
        assert!(
            resumed.status.success(),
            "{point}: {}",
            String::from_utf8_lossy(&resumed.stderr)
        );
        let records = journal(&home);
        assert!(records.contains(" SyncAbandoned "), "{point}: {records}");
        let wait = pgbak(&home, None, &["wait", "5"]);
        assert_eq!(
            wait.status.code(),
            Some(0),
            "{point}: {}",
            String::from_utf8_lossy(&wait.stderr)
        );

        let status: serde_json::Value =
            serde_json::from_slice(&pgbak(&home, None, &["status", "--json"]).stdout).unwrap();
        assert_eq!(status["everything_shipped"], true, "{point}: {status}");
        let directories = status["directories"].as_array().unwrap();
        assert!(
            directories
                .iter()
                .all(|d| d["state"] == "current" || d["state"] == "sealed"),
            "{point}: {status}"
        );
        let current = status["current"].as_str().unwrap();
        assert!(home.join(current).join("base.tzst").is_file(), "{point}");
        assert_eq!(
            fs::read_link(home.join("current")).unwrap(),
            PathBuf::from(current),
            "{point}"
        );
        for segment in [&first, &second, &third] {
            assert_stored(&home, segment, point);
        }
    }
}
