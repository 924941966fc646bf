//! 8 concurrent `pgbak wal` calls on distinct segments while a sync runs (S-2.6, S-2.8): all
//! archived, exactly one sync started (every `wal` saw the sync lock held, or its background
//! sync found it held and recorded nothing), the journal consistent, and `wait` returns 0 once
//! the running sync has shipped everything.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::util::{Scratch, executable, pgbak_command as pgbak};

/// The scratch directory, removed on drop once a sync still running there has finished.
struct WaitThenRemove(Scratch);

impl Drop for WaitThenRemove {
    fn drop(&mut self) {
        let _ = pgbak(&self.0.join("pgbak")).args(["wait", "30"]).output();
    }
}

#[test]
fn eight_concurrent_wal_calls_while_a_sync_runs_start_no_second_sync() {
    let scratch = WaitThenRemove(Scratch::new("wal-sync"));
    let root = scratch.0.0.clone();
    fs::create_dir_all(root.join("data")).unwrap();
    fs::write(root.join("data/PG_VERSION"), "15\n").unwrap();
    let home = root.join("pgbak");
    fs::create_dir_all(home.join("scripts")).unwrap();
    let fake = root.join("fake_pg_basebackup.sh");
    executable(
        &fake,
        &format!("exec tar -C {} -cf - .\n", root.join("data").display()),
    );
    // A large WAL ratio: the stand-in base is tiny (S-4.2 would otherwise ask for more).
    fs::write(
        home.join("config.toml"),
        format!(
            "[base]\nmax_wal_ratio = 1000000.0\n[pg_basebackup]\npath = \"{}\"\n",
            fake.display()
        ),
    )
    .unwrap();
    // A slow script keeps the first sync running while the burst arrives.
    executable(&home.join("scripts/backup"), "sleep 3\n");

    let segments: Vec<PathBuf> = (1..=9u8)
        .map(|number| {
            let path = root.join(format!("0000000100000000000000{number:02X}"));
            let bytes: Vec<u8> = (0..16u32 << 20)
                .map(|i| ((i / 512) as u8).wrapping_add(number))
                .collect();
            fs::write(&path, bytes).unwrap();
            path
        })
        .collect();

    // The first file starts the background sync.
    let first = pgbak(&home).arg("wal").arg(&segments[0]).output().unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // The burst: 8 calls at once.
    let children: Vec<_> = segments[1..]
        .iter()
        .map(|segment| {
            pgbak(&home)
                .arg("wal")
                .arg(segment)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let waited = pgbak(&home).args(["wait", "120"]).output().unwrap();
    assert_eq!(
        waited.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&waited.stderr)
    );

    let journal = String::from_utf8(
        pgbak(&home)
            .args(["status", "--journal"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let count = |kind: &str| {
        journal
            .lines()
            .filter(|l| l.contains(&format!(" {kind} ")))
            .count()
    };
    assert_eq!(count("SyncStarted"), 1, "{journal}");
    assert_eq!(count("SyncAbandoned"), 0, "{journal}");
    assert_eq!(count("WalArchived"), 9, "{journal}");
    assert_eq!(count("DirectoryOpened"), 1, "{journal}");

    let status: serde_json::Value = serde_json::from_slice(
        &pgbak(&home)
            .args(["status", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(status["everything_shipped"], true, "{status}");
    let current = home.join(status["current"].as_str().unwrap());
    for segment in &segments {
        let stored = current.join("pg_wal").join(format!(
            "{}.zst",
            segment.file_name().unwrap().to_str().unwrap()
        ));
        let test = Command::new("zstd")
            .args(["-q", "-t"])
            .arg(&stored)
            .status()
            .unwrap();
        assert!(test.success(), "{} missing or damaged", stored.display());
    }
    drop(scratch);
}
