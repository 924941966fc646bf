//! `kill -9` of `pgbak prune` at every retention fail point (S-8.3): after the intent, after
//! the rename aside, before and after the removal, and after the outcome before the prune
//! script. The next `pgbak prune` (a sync) resumes from the recorded step: the directory ends
//! up removed, no `.pruning-*` is left, `scripts/prune` has run for it, the kept directory is
//! whole and no WAL is lost. Needs `--features failpoints`.

#![cfg(feature = "failpoints")]

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use crate::crash_sync::{archive, assert_stored, journal, world};
use crate::util::{executable, pgbak_failing_at as pgbak};

/// Every retention fail point. `e2e_crash` checks that these and its own list together are all
/// of them: pruning never talks to the server, so these are visited here, through real
/// processes and a real `$PGBAK`, not through a PostgreSQL server's `archive_command`.
pub const PRUNE_POINTS: [&str; 5] = [
    "prune-after-intent",
    "prune-after-move-aside",
    "prune-before-remove",
    "prune-after-remove",
    "prune-after-pruned",
];

fn status(home: &Path) -> serde_json::Value {
    serde_json::from_slice(&pgbak(home, None, &["status", "--json"]).stdout).unwrap()
}

/// Names of the entries of `$PGBAK` that start with `.pruning-`.
fn moved_aside(home: &Path) -> Vec<String> {
    fs::read_dir(home)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".pruning-"))
        .collect()
}

#[test]
fn kill_9_at_every_prune_fail_point_then_the_next_prune_finishes_it() {
    for point in PRUNE_POINTS {
        let (scratch, home, first) = world(point);
        let prune_log = scratch.0.join("pruned.log");
        executable(
            &home.join("scripts/prune"),
            &format!(
                "[ \"$(pwd)\" = \"$PGBAK\" ] || exit 3\necho \"$1\" >> {}\n",
                prune_log.display()
            ),
        );
        let clean = pgbak(&home, None, &["sync"]);
        assert!(
            clean.status.success(),
            "{point}: {}",
            String::from_utf8_lossy(&clean.stderr)
        );
        let old = status(&home)["current"].as_str().unwrap().to_owned();
        let second = archive(&home, &scratch.0, 2);
        let based = pgbak(&home, None, &["sync", "--base"]);
        assert!(
            based.status.success(),
            "{point}: {}",
            String::from_utf8_lossy(&based.stderr)
        );
        let kept = status(&home)["current"].as_str().unwrap().to_owned();
        assert_ne!(old, kept, "{point}");

        let crashed = pgbak(&home, Some(point), &["prune", "--keep", "1"]);
        assert_eq!(
            crashed.status.signal(),
            Some(9),
            "{point}: the fail point did not fire: {}",
            String::from_utf8_lossy(&crashed.stderr)
        );
        // Whatever step it died at, the directory is never half visible as a backup: it is
        // either whole at its name (before the rename) or not there at all.
        if home.join(&old).exists() {
            assert!(home.join(&old).join("base.tzst").is_file(), "{point}");
        }
        let third = archive(&home, &scratch.0, 3);

        let resumed = pgbak(&home, None, &["prune", "--keep", "1"]);
        assert!(
            resumed.status.success(),
            "{point}: {}",
            String::from_utf8_lossy(&resumed.stderr)
        );
        assert!(!home.join(&old).exists(), "{point}: {old} is still there");
        assert!(
            moved_aside(&home).is_empty(),
            "{point}: {:?}",
            moved_aside(&home)
        );
        let records = journal(&home);
        assert!(records.contains(" SyncAbandoned "), "{point}: {records}");
        assert_eq!(
            records.matches(" DirectoryPruned ").count(),
            1,
            "{point}: {records}"
        );
        assert!(
            records.contains(" PruneScriptSucceeded "),
            "{point}: {records}"
        );
        let logged = fs::read_to_string(&prune_log).unwrap();
        assert!(logged.lines().all(|line| line == old), "{point}: {logged}");
        assert!(!logged.is_empty(), "{point}");

        let after = status(&home);
        assert_eq!(after["everything_shipped"], true, "{point}: {after}");
        let names: Vec<&str> = after["directories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, [kept.as_str()], "{point}");
        assert!(home.join(&kept).join("base.tzst").is_file(), "{point}");
        assert_eq!(after["retention"]["pruned_count"], 1, "{point}: {after}");
        // The first two segments went with the pruned directory: they predate the kept base
        // backup, which needs none of them. What came after it is in the kept directory.
        let _ = (first, second);
        assert_stored(&home, &third, point);
    }
}
