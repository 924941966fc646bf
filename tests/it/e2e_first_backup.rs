//! End-to-end against a real PostgreSQL 15: the seed's
//! first-backup flow — start, `pg_switch_wal()`, a base backup is taken, `current` points at
//! it, the backup script ran with the right cwd and both timestamps — then more writes, `wait`,
//! and a restore with exactly the seed's recipe from `current` and from the offsite copy the
//! script made, compared with the source (row count and a checksum).

use crate::harness::{self, Cluster};
use std::fs;

#[test]
fn first_backup_flow_then_restore_from_current_and_offsite_equals_the_source() {
    // `--checkpoint=fast`: pg_basebackup's default spread checkpoint takes minutes on an idle
    // server; the behaviour under test is the same.
    let config = "[pg_basebackup]\nextra_args = [\"--checkpoint=fast\"]\n";
    let mut cluster = Cluster::new("first", config, "");
    let offsite = cluster.root.join("offsite");
    let out = cluster.root.join("out");
    let script = format!(
        "echo \"$PWD $1 $2\" >> {}/runs\nmkdir -p {}/pg-$1 && cp -r ./. {}/pg-$1/\n",
        out.display(),
        offsite.display(),
        offsite.display()
    );
    let script_path = cluster.pgbak.join("scripts/backup");
    fs::write(&script_path, format!("#!/bin/sh\nset -e\n{script}")).unwrap();

    cluster.start();
    cluster.sql("create table t(i int primary key, filler text)");
    cluster.sql("insert into t select g, repeat('x', 100) from generate_series(1, 20000) g");
    cluster.switch_wal_and_wait_archived();
    // The seed: "To make your first backup, simply restart postgres and call pg_switch_wal()".
    let (code, stderr) = cluster.wait(120);
    assert_eq!(code, Some(0), "{stderr}");

    let status: serde_json::Value = cluster.status();
    let current = status["current"]
        .as_str()
        .expect("a current directory")
        .to_owned();
    assert_eq!(
        fs::read_link(cluster.pgbak.join("current"))
            .unwrap()
            .to_str(),
        Some(current.as_str())
    );
    assert!(cluster.pgbak.join(&current).join("base.tzst").is_file());
    assert_eq!(status["everything_shipped"], true, "{status}");

    // Writes after the base backup, then another segment switch.
    cluster.sql("insert into t select g, repeat('y', 50) from generate_series(20001, 30000) g");
    cluster.sql("create table after_base as select g as j from generate_series(1, 5000) g");
    cluster.switch_wal_and_wait_archived();
    let (code, stderr) = cluster.wait(120);
    assert_eq!(code, Some(0), "{stderr}");

    let checksum = "select (select count(*) from t) || ':' || (select sum(hashtext(i::text || filler)) from t) \
                    || ':' || (select count(*) || ',' || sum(j) from after_base)";
    let expected = cluster.sql(checksum);

    // The script ran in the directory, with the base timestamp and a current timestamp.
    let runs = fs::read_to_string(out.join("runs")).unwrap();
    let last: Vec<&str> = runs.lines().last().unwrap().split(' ').collect();
    assert_eq!(
        last[0],
        cluster.pgbak.join(&current).to_str().unwrap(),
        "{runs}"
    );
    assert_eq!(last[1], current, "{runs}");
    assert!(last[2] >= last[1] && last[2].len() == 16, "{runs}");
    cluster.stop();

    // Restore from `current`, and from the offsite copy alone.
    let socket = cluster.socket.clone();
    let restored = harness::restore_and_query(
        &cluster.pgbak.join(&current),
        &cluster.root.join("restore-local"),
        &socket,
        cluster.port,
        checksum,
    );
    assert_eq!(restored, expected, "restore from {current}");
    let restored = harness::restore_and_query(
        &offsite.join(format!("pg-{current}")),
        &cluster.root.join("restore-offsite"),
        &socket,
        cluster.port,
        checksum,
    );
    assert_eq!(restored, expected, "restore from the offsite copy");
}
