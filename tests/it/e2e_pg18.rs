//! End-to-end smoke test against a real PostgreSQL 18 (the build `.ci/prerequisites` unpacks):
//! its `archive_command` `pgbak wal %p` archives (S-2.2; WAL page magic and layout of 18), the
//! first base backup is taken with 18's `pg_basebackup` (the harness points
//! `[pg_basebackup] path` at it), a second one is forced with `pgbak sync --base` (S-4.2), and
//! the seed's manual recipe (extract `base.tzst`, decompress `pg_wal/*.zst`, replay) restores
//! the current directory on 18 to exactly the source. Fails, not skips, when 18 is missing.

use crate::harness::{self, Cluster, PgVersion};
use std::fs;

#[test]
fn postgresql_18_archives_takes_base_backups_and_restores_with_the_seed_recipe() {
    let config = "[pg_basebackup]\nextra_args = [\"--checkpoint=fast\"]\n";
    let mut cluster = Cluster::new_on(PgVersion::V18, "pg18-smoke", config, "");
    let written = fs::read_to_string(cluster.pgbak.join("config.toml")).unwrap();
    assert!(
        written.contains(&PgVersion::V18.tool("pg_basebackup")),
        "{written}"
    );
    cluster.start();
    assert_eq!(cluster.sql("show server_version_num").get(..2), Some("18"));
    cluster.sql("create table t(i int primary key, filler text)");
    cluster.sql("insert into t select g, repeat('x', 100) from generate_series(1, 5000) g");
    cluster.switch_wal_and_wait_archived();
    let (code, stderr) = cluster.wait(120);
    assert_eq!(code, Some(0), "{stderr}");
    let first = cluster.status()["current"].as_str().unwrap().to_owned();
    assert!(cluster.pgbak.join(&first).join("base.tzst").is_file());

    cluster.sql("insert into t select g, 'y' from generate_series(5001, 6000) g");
    let output = cluster.pgbak(&["sync", "--base"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    cluster.sql("create table after_base as select g as j from generate_series(1, 500) g");
    cluster.switch_wal_and_wait_archived();
    let (code, stderr) = cluster.wait(120);
    assert_eq!(code, Some(0), "{stderr}");
    let status = cluster.status();
    let current = status["current"].as_str().unwrap().to_owned();
    assert_ne!(current, first, "{status}");
    assert_eq!(status["everything_shipped"], true, "{status}");

    let checksum = "select (select count(*) || ',' || sum(hashtext(i::text || filler)) from t) \
                    || ':' || (select count(*) || ',' || sum(j) from after_base)";
    let expected = cluster.sql(checksum);
    cluster.stop();
    let restored = harness::restore_and_query_on(
        PgVersion::V18,
        &cluster.pgbak.join(&current),
        &cluster.root.join("restored"),
        &cluster.socket,
        cluster.port,
        checksum,
    );
    assert_eq!(restored, expected);
    assert_eq!(
        fs::read_to_string(cluster.root.join("restored/PG_VERSION"))
            .unwrap()
            .trim(),
        "18"
    );
}
