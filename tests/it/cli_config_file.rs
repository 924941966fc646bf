//! `$PGBAK/config.toml` that is not a small regular file, through the real binary (S-7.1): a
//! FIFO must not block a command forever, and `/dev/zero` or a huge file must not be read until
//! memory runs out. Each is one clear error line and a hint, promptly. `sync.log` as a FIFO must
//! not hang the sync either.
//!
//! Every run has a deadline, so a regression fails the test instead of hanging the suite, and
//! the runs that could eat memory have an address-space limit, so a regression fails instead of
//! taking the machine's memory.

use crate::util::{Pgbak, write_private};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

fn config(pgbak: &Pgbak) -> PathBuf {
    pgbak.join("config.toml")
}

#[test]
fn a_fifo_as_config_returns_promptly_with_an_error() {
    let pgbak = Pgbak::new("config-fifo");
    nix::unistd::mkfifo(
        &config(&pgbak),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let expected = format!(
        "pgbak: config {}: is a FIFO, not a regular file\n\
         hint: make {} a regular file (a symlink to one is fine), or remove it to use the \
         defaults\n",
        config(&pgbak).display(),
        config(&pgbak).display()
    );
    for args in [
        &["wal", "pg_wal/000000010000000000000001"][..],
        &["sync"],
        &["status"],
    ] {
        let run = pgbak.run(args);
        assert_eq!(run.status.code(), Some(1), "{args:?}: {}", run.stderr);
        assert_eq!(run.stderr, expected, "{args:?}");
    }
}

#[test]
fn dev_zero_as_config_is_an_error_without_eating_memory() {
    let pgbak = Pgbak::new("config-dev-zero");
    std::os::unix::fs::symlink("/dev/zero", config(&pgbak)).unwrap();
    // `status` reports what strict modes think of the link (S-1.5) rather than refusing, so it
    // is the command that reaches the read itself.
    let run = pgbak.run(&["status"]);
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr.starts_with(&format!(
            "pgbak: config {}: is a character device, not a regular file\n",
            config(&pgbak).display()
        )),
        "{}",
        run.stderr
    );
    // The commands that run code refuse the link before reading it: /dev/zero is writable by
    // everyone.
    let run = pgbak.run(&["sync"]);
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("its target /dev/zero is writable"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_huge_config_file_is_refused_without_reading_it() {
    let pgbak = Pgbak::new("config-huge");
    let file = fs::File::create(config(&pgbak)).unwrap();
    // Sparse: 4 GiB of zeros on paper, no disk space taken.
    file.set_len(4 << 30).unwrap();
    drop(file);
    fs::set_permissions(config(&pgbak), fs::Permissions::from_mode(0o600)).unwrap();
    for args in [&["sync"][..], &["status"]] {
        let run = pgbak.run(args);
        assert_eq!(run.status.code(), Some(1), "{args:?}: {}", run.stderr);
        assert_eq!(
            run.stderr,
            format!(
                "pgbak: config {}: is larger than 1048576 bytes (1 MiB), the most pgbak reads \
                 from it\n\
                 hint: a config.toml needs only a few lines (every key is in the README): \
                 replace it, or remove it to use the defaults\n",
                config(&pgbak).display()
            ),
            "{args:?}"
        );
    }
}

#[test]
fn a_config_file_just_under_the_limit_is_read() {
    let pgbak = Pgbak::new("config-limit");
    // Comments up to exactly 1 MiB: long, but within the limit, so it is parsed (all defaults).
    let line = format!("#{}\n", "x".repeat(1022));
    let text = line.repeat(1024);
    assert_eq!(text.len(), 1 << 20);
    write_private(&config(&pgbak), &text);
    let run = pgbak.run(&["status"]);
    assert!(run.status.success(), "{}", run.stderr);
}

#[test]
fn a_fifo_as_sync_log_does_not_hang_the_sync() {
    let pgbak = Pgbak::new("sync-log-fifo");
    pgbak.link_script_to_bin_true();
    pgbak.fake_pg_basebackup();
    nix::unistd::mkfifo(
        &pgbak.0.join("sync.log"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    // A whole sync (first base backup, then the script): it only has to get past its log.
    let run = pgbak.run(&["force-sync"]);
    assert!(run.status.success(), "{}", run.stderr);
    assert!(run.stderr.contains("sync.log"), "{}", run.stderr);
}
