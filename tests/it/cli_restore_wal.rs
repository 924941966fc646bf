//! `pgbak restore-wal NAME PATH --from SOURCE` through the real binary (S-8.1.1): the exit
//! status PostgreSQL acts on. 0 written; 1 only at the proven end of the archive; 200 (abort
//! recovery) for a damaged file, a hole before a later segment, a misuse of the command and any
//! other error — never 1, which PostgreSQL takes for "end of archive" and promotes.

use crate::util::{Scratch, pgbak, stderr_of};
use pgbak::wal_header::LongPageHeader;
use std::fs;
use std::path::Path;

const SEGMENT_BYTES: usize = 1 << 20;
const SYSTEM_IDENTIFIER: u64 = 7_000_000_000_000_000_001;

/// A 1 MiB segment of timeline 1 with a header that agrees with `name`.
fn segment(number: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; SEGMENT_BYTES];
    LongPageHeader {
        timeline: 1,
        page_address: number * SEGMENT_BYTES as u64,
        system_identifier: SYSTEM_IDENTIFIER,
        segment_size_bytes: SEGMENT_BYTES as u32,
    }
    .write_to(&mut bytes);
    bytes[4096..4100].copy_from_slice(&(number as u32).to_le_bytes());
    bytes
}

fn name(number: u64) -> String {
    format!("00000001000000000000{number:04X}")
}

/// A backup directory with segments `numbers` in its `pg_wal/`.
fn backup_with(scratch: &Scratch, numbers: &[u64]) -> std::path::PathBuf {
    let directory = scratch.join("20261202T100000Z");
    fs::create_dir_all(directory.join("pg_wal")).unwrap();
    for &number in numbers {
        let compressed = zstd::bulk::compress(&segment(number), 1).unwrap();
        fs::write(
            directory
                .join("pg_wal")
                .join(format!("{}.zst", name(number))),
            compressed,
        )
        .unwrap();
    }
    directory
}

fn restore_wal(from: &Path, name: &str, to: &Path) -> std::process::Output {
    pgbak(
        None,
        &[
            "restore-wal",
            name,
            to.to_str().unwrap(),
            "--from",
            from.to_str().unwrap(),
        ],
    )
}

#[test]
fn an_archived_segment_is_written_whole_and_exits_0() {
    let scratch = Scratch::new("restore-wal-found");
    let backup = backup_with(&scratch, &[1, 2, 3]);
    let to = scratch.join("RECOVERYXLOG");
    let output = restore_wal(&backup, &name(2), &to);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert_eq!(fs::read(&to).unwrap(), segment(2));
}

#[test]
fn the_segment_after_the_last_is_the_end_of_the_archive_and_exits_1() {
    let scratch = Scratch::new("restore-wal-end");
    let backup = backup_with(&scratch, &[1, 2, 3]);
    let to = scratch.join("RECOVERYXLOG");
    let output = restore_wal(&backup, &name(4), &to);
    assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
    assert!(!to.exists());
    // PostgreSQL probes for history files of timelines that do not exist.
    let output = restore_wal(&backup, "00000002.history", &to);
    assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
}

#[test]
fn a_hole_before_a_later_segment_aborts_recovery_with_200() {
    let scratch = Scratch::new("restore-wal-hole");
    let backup = backup_with(&scratch, &[1, 3]);
    let to = scratch.join("RECOVERYXLOG");
    let output = restore_wal(&backup, &name(2), &to);
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(200), "{stderr}");
    assert!(
        stderr.starts_with(&format!("pgbak: {}", name(2))),
        "{stderr}"
    );
    assert!(stderr.contains(&name(3)), "{stderr}");
    assert!(stderr.contains("hint: "), "{stderr}");
    assert!(!to.exists());
}

#[test]
fn a_damaged_segment_aborts_recovery_with_200_and_leaves_nothing_at_path() {
    let scratch = Scratch::new("restore-wal-damaged");
    let backup = backup_with(&scratch, &[1, 2, 3]);
    let stored = backup.join("pg_wal").join(format!("{}.zst", name(2)));
    let mut bytes = fs::read(&stored).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(&stored, bytes).unwrap();
    let to = scratch.join("RECOVERYXLOG");
    let output = restore_wal(&backup, &name(2), &to);
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(200), "{stderr}");
    assert!(stderr.contains("damaged"), "{stderr}");
    assert!(!to.exists());
    let leftovers: Vec<_> = fs::read_dir(&scratch.0)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .filter(|name| name.to_string_lossy().contains("pgbak-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_segment_renamed_to_another_name_is_damaged_not_served() {
    let scratch = Scratch::new("restore-wal-renamed");
    let backup = backup_with(&scratch, &[1, 2, 3]);
    let pg_wal = backup.join("pg_wal");
    fs::rename(
        pg_wal.join(format!("{}.zst", name(3))),
        pg_wal.join(format!("{}.zst", name(4))),
    )
    .unwrap();
    let to = scratch.join("RECOVERYXLOG");
    let output = restore_wal(&backup, &name(4), &to);
    assert_eq!(output.status.code(), Some(200), "{}", stderr_of(&output));
    assert!(!to.exists());
}

#[test]
fn a_restore_command_written_wrong_aborts_recovery_instead_of_ending_it() {
    // `restore_command = 'pgbak restore-wal %f'`: PATH missing. Exit 1 would end recovery.
    let output = pgbak(None, &["restore-wal", "000000010000000000000001"]);
    assert_eq!(output.status.code(), Some(200), "{}", stderr_of(&output));
    // A source that does not exist is not the end of the archive either.
    let scratch = Scratch::new("restore-wal-nosource");
    let output = restore_wal(
        &scratch.join("missing"),
        "000000010000000000000001",
        &scratch.join("x"),
    );
    assert_eq!(output.status.code(), Some(200), "{}", stderr_of(&output));
    // No source at all (PGBAK unset, no --from).
    let output = pgbak(None, &["restore-wal", "000000010000000000000001", "x"]);
    assert_eq!(output.status.code(), Some(200), "{}", stderr_of(&output));
}
