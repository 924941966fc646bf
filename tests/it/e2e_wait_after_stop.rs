//! End-to-end against a real PostgreSQL 15 (the seed's
//! `ExecStopPost=pgbak wait 120`): after the server stops, `pgbak wait` returns the timeout
//! status while the backup script keeps failing and is retried, and 0 once the script succeeds
//! and everything archived has been shipped (S-6.3).

use crate::harness::Cluster;
use std::fs;

#[test]
fn wait_after_the_server_stops_times_out_while_the_script_fails_then_returns_0() {
    let config = "[pg_basebackup]\nextra_args = [\"--checkpoint=fast\"]\n";
    let mut cluster = Cluster::new("wait", config, "");
    // Fails until the file `out/ok` exists.
    let ok = cluster.root.join("out/ok");
    fs::write(
        cluster.pgbak.join("scripts/backup"),
        format!(
            "#!/bin/sh\n[ -e {} ] || {{ echo 'offsite unreachable' >&2; exit 1; }}\n",
            ok.display()
        ),
    )
    .unwrap();

    cluster.start();
    cluster.sql("create table t as select g from generate_series(1, 10000) g");
    cluster.switch_wal_and_wait_archived();
    // Let the first base backup finish (stopping the server during it fails it, correctly);
    // `wait` cannot tell us, since the script keeps failing.
    let mut current = serde_json::Value::Null;
    for _ in 0..1200 {
        let status: serde_json::Value = cluster.status();
        current = status["current"].clone();
        if !current.is_null() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!current.is_null(), "no base backup finished within 120 s");
    cluster.sql("insert into t select g from generate_series(10001, 20000) g");
    cluster.switch_wal_and_wait_archived();
    cluster.stop();

    // The server is gone; the sync keeps retrying the failing script: timeout status (2).
    let (code, stderr) = cluster.wait(3);
    assert_eq!(code, Some(2), "{stderr}");
    let status: serde_json::Value = cluster.status();
    assert!(
        status["script"]["consecutive_failures"].as_u64().unwrap() >= 1,
        "{status}"
    );
    assert!(
        status["script"]["last_failure"]["output"]
            .as_str()
            .unwrap()
            .contains("offsite unreachable"),
        "{status}"
    );
    assert_eq!(status["everything_shipped"], false);

    // The offsite target comes back: the next retry (backoff ≤ 5 min; here seconds) succeeds.
    fs::write(&ok, "").unwrap();
    let (code, stderr) = cluster.wait(120);
    assert_eq!(code, Some(0), "{stderr}");
    let status: serde_json::Value = cluster.status();
    assert_eq!(status["everything_shipped"], true, "{status}");
    assert_eq!(status["script"]["consecutive_failures"], 0, "{status}");
}
