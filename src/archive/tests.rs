use super::error::journal_error;
use super::input::FileStamp;
use super::input::WalInput;
use super::input::size_problem;
use super::store::link_or_copy;
use super::*;
use crate::hint::OperatorHint;
use crate::home::journal_file;
use crate::home::journal_file::JournalFileError;
use crate::home::journal_file::inspect_journal;
use crate::journal::{IoAction, JournalError, RebuildReason};
use crate::machine::DirectoryPhase;
use crate::machine::Event;
use crate::os::durable::PRIVATE_FILE_MODE;
use crate::os::durable::UnnamedFile;
use crate::os::lock::LockFile;
use crate::test_support::ScratchDirectory;
use std::fs;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

const NOW: UnixMillis = UnixMillis(1_795_478_400_000);

fn home_in(scratch: &ScratchDirectory) -> PgbakHome {
    scratch.home()
}

fn segment_bytes(size: usize, seed: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(size);
    let mut counter = seed;
    while bytes.len() < size {
        counter = counter.wrapping_add(1);
        bytes.extend_from_slice(b"pgbak wal record ");
        bytes.extend_from_slice(&counter.to_le_bytes());
    }
    bytes.truncate(size);
    bytes
}

fn single_threaded() -> Config {
    let mut config = Config::default();
    config.wal.compression_threads = 0;
    config
}

#[test]
fn size_rules_follow_s_2_1() {
    let segment = WalFileKind::Segment;
    assert!(size_problem(segment, 16 << 20).is_none());
    assert!(size_problem(segment, 1 << 20).is_none());
    assert!(size_problem(segment, 1 << 30).is_none());
    assert!(size_problem(segment, 512 << 10).is_some());
    assert!(size_problem(segment, 2 << 30).is_some());
    assert!(size_problem(segment, 3 << 20).is_some());
    assert!(size_problem(segment, 0).is_some());
    assert!(size_problem(WalFileKind::Partial, 3 << 20).is_some());
    assert!(size_problem(WalFileKind::History, 41).is_none());
    assert!(size_problem(WalFileKind::History, 0).is_some());
    assert!(size_problem(WalFileKind::BackupHistory, (16 << 20) + 1).is_some());
}

#[test]
fn a_segment_is_stored_once_per_open_directory_and_decompresses_to_the_input() {
    let scratch = ScratchDirectory::new("wal-archive-basic");
    let home = home_in(&scratch);
    let source_directory = ScratchDirectory::new("wal-archive-basic-src");
    let source = source_directory.0.join("000000010000000000000001");
    let bytes = segment_bytes(1 << 20, 1);
    fs::write(&source, &bytes).unwrap();

    let outcome = archive_wal(&home, &single_threaded(), &source, NOW).unwrap();
    let directory = DirectoryName::from_millis(NOW);
    assert_eq!(outcome.opened_directory, Some(directory));
    assert_eq!(outcome.stored_in, vec![directory]);
    assert!(!outcome.already_present);
    let stored = home
        .directory_path(directory)
        .join("pg_wal/000000010000000000000001.zst");
    assert_eq!(
        fs::metadata(&stored).unwrap().len(),
        outcome.compressed_bytes
    );
    assert_eq!(
        zstd::decode_all(File::open(&stored).unwrap()).unwrap(),
        bytes
    );

    let lock_file = LockFile::open(&home.lock_file_path()).unwrap();
    let state = inspect_journal(&lock_file).unwrap().state.unwrap();
    assert_eq!(state.directories[&directory].wal_files, 1);
    assert_eq!(state.wal.archived_count, 1);

    // A retry (PostgreSQL after a crash) is accepted and recorded as already present.
    let again = archive_wal(&home, &single_threaded(), &source, NOW.plus_millis(5)).unwrap();
    assert!(again.already_present);
    assert_eq!(again.opened_directory, None);
    assert_eq!(again.compressed_bytes, outcome.compressed_bytes);
    let state = inspect_journal(&lock_file).unwrap().state.unwrap();
    assert_eq!(state.directories[&directory].wal_files, 1);
    assert_eq!(state.wal.archived_count, 2);
}

#[test]
fn the_frame_has_the_content_size_and_a_checksum() {
    let scratch = ScratchDirectory::new("wal-archive-frame");
    let home = home_in(&scratch);
    let source = scratch.0.join("00000002.history");
    let bytes = b"1\t0/3000000\tno recovery target specified\n".to_vec();
    fs::write(&source, &bytes).unwrap();
    for threads in [0, 2] {
        let mut config = Config::default();
        config.wal.compression_threads = threads;
        let input = read_input(&source).unwrap();
        let compressed = compress(&home, &config, &input).unwrap();
        let mut frame = Vec::new();
        let mut reader = compressed.file.file();
        reader.rewind().unwrap();
        reader.read_to_end(&mut frame).unwrap();
        assert_eq!(frame.len() as u64, compressed.bytes);
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&frame).ok(),
            Some(Some(bytes.len() as u64)),
            "threads {threads}"
        );
        // Frame header descriptor, bit 2: content checksum flag (RFC 8878, 3.1.1.1.1).
        assert_ne!(frame[4] & 0b100, 0, "threads {threads}");
        assert_eq!(zstd::decode_all(&frame[..]).unwrap(), bytes);
    }
}

#[test]
fn a_damaged_existing_copy_is_a_conflict() {
    let scratch = ScratchDirectory::new("wal-archive-damaged");
    let home = home_in(&scratch);
    let source = scratch.0.join("00000003.history");
    fs::write(&source, b"2\t0/4000000\tbefore 2026\n").unwrap();
    let first = archive_wal(&home, &single_threaded(), &source, NOW).unwrap();
    let stored = home
        .directory_path(first.stored_in[0])
        .join("pg_wal/00000003.history.zst");
    let mut damaged = fs::read(&stored).unwrap();
    let last = damaged.len() - 1;
    damaged[last] ^= 0xff; // the checksum
    fs::remove_file(&stored).unwrap();
    fs::write(&stored, &damaged).unwrap();

    let error = archive_wal(&home, &single_threaded(), &source, NOW.plus_millis(1000)).unwrap_err();
    assert!(matches!(error, ArchiveError::Conflict { .. }), "{error}");
    assert_eq!(fs::read(&stored).unwrap(), damaged);
    let kept = home.conflicts_path().join(format!(
        "00000003.history.{}.zst",
        NOW.plus_millis(1000).to_timestamp_string()
    ));
    assert!(kept.is_file(), "{error}");
}

#[test]
fn a_current_directory_removed_by_hand_is_lost_and_a_new_one_opens() {
    // S-4.8: the journal says a current directory exists, but an operator removed it.
    // Archiving must go on (PostgreSQL's pg_wal would fill otherwise): the directory is
    // recorded as lost, never recreated, and the file goes to a new directory.
    let scratch = ScratchDirectory::new("wal-archive-vanished");
    let home = home_in(&scratch);
    let source = scratch.0.join("000000010000000000000001");
    fs::write(&source, segment_bytes(1 << 20, 3)).unwrap();
    let first = archive_wal(&home, &single_threaded(), &source, NOW).unwrap();
    let directory = first.stored_in[0];
    finish_base_backup(&home, directory);
    fs::remove_dir_all(home.directory_path(directory)).unwrap();
    let next = scratch.0.join("000000010000000000000002");
    fs::write(&next, segment_bytes(1 << 20, 4)).unwrap();
    let outcome = archive_wal(&home, &single_threaded(), &next, NOW.plus_millis(1)).unwrap();
    assert!(!home.directory_path(directory).exists());
    let opened = outcome.opened_directory.expect("a new directory");
    assert!(opened > directory);
    assert_eq!(outcome.stored_in, vec![opened]);
    let state = journal_file::open_journal(&home, NOW)
        .unwrap()
        .journal
        .state()
        .clone();
    assert_eq!(state.lost_directories.len(), 1);
    assert_eq!(state.lost_directories[0].directory, directory);
    assert_eq!(state.directories[&opened].phase, DirectoryPhase::Pending);
}

/// A segment whose first page is a long page header of cluster `system_identifier`.
fn segment_of_cluster(size: usize, seed: u64, system_identifier: u64) -> Vec<u8> {
    let mut bytes = segment_bytes(size, seed);
    crate::wal_header::LongPageHeader {
        timeline: 1,
        page_address: 0,
        system_identifier,
        segment_size_bytes: size as u32,
    }
    .write_to(&mut bytes);
    bytes
}

#[test]
fn a_segment_of_another_cluster_is_refused_until_a_new_series_starts() {
    // S-2.9: a cloned VM or a copied config points a second server at this $PGBAK.
    let scratch = ScratchDirectory::new("wal-archive-cluster");
    let home = home_in(&scratch);
    let ours = 7_300_000_000_000_000_001;
    let theirs = 7_400_000_000_000_000_002;
    let first = scratch.0.join("000000010000000000000001");
    fs::write(&first, segment_of_cluster(1 << 20, 1, ours)).unwrap();
    let stored = archive_wal(&home, &single_threaded(), &first, NOW).unwrap();
    let directory = stored.stored_in[0];
    let state = || {
        journal_file::open_journal(&home, NOW)
            .unwrap()
            .journal
            .state()
            .clone()
    };
    assert_eq!(state().system_identifier, Some(ours));

    let foreign = scratch.0.join("000000010000000000000002");
    fs::write(&foreign, segment_of_cluster(1 << 20, 2, theirs)).unwrap();
    let error = archive_wal(&home, &single_threaded(), &foreign, NOW.plus_millis(1)).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains(&ours.to_string()) && message.contains(&theirs.to_string()),
        "{message}"
    );
    assert!(error.hint().unwrap().contains("pgbak new-series"));
    let name = "000000010000000000000002.zst";
    assert!(
        !home
            .directory_path(directory)
            .join("pg_wal")
            .join(name)
            .exists()
    );

    // Starting a new series on purpose: the same file is accepted, into a new directory.
    let mut opened = journal_file::open_journal(&home, NOW).unwrap();
    let at = NOW.plus_millis(2_000);
    opened
        .append(&[Event::NewSeriesStarted { at }], at)
        .unwrap();
    let outcome = archive_wal(&home, &single_threaded(), &foreign, at).unwrap();
    assert_ne!(outcome.stored_in, vec![directory]);
    assert_eq!(state().system_identifier, Some(theirs));
}

/// Makes the first directory current (as a finished base backup does), so the next
/// directory opened is a second, pending one.
fn finish_base_backup(home: &PgbakHome, directory: DirectoryName) {
    let mut opened = journal_file::open_journal(home, NOW).unwrap();
    opened
        .append(
            &[
                Event::SyncStarted {
                    pid: 1,
                    force_script: false,
                    force_base: false,
                    at: NOW,
                },
                Event::BaseBackupStarted { directory, at: NOW },
                Event::BaseBackupFinished {
                    directory,
                    base_bytes: 10,
                    at: NOW,
                },
            ],
            NOW,
        )
        .unwrap();
}

fn open_pending(home: &PgbakHome, directory: DirectoryName) {
    let mut opened = journal_file::open_journal(home, NOW).unwrap();
    opened
        .append(&[Event::DirectoryOpened { directory, at: NOW }], NOW)
        .unwrap();
}

#[test]
fn a_retry_found_in_current_and_linked_into_a_new_pending_directory_counts_once_in_each() {
    // PostgreSQL re-sends a segment already in the current directory just after a sync
    // opened a pending one: the current directory must not count it a second time (its
    // WAL total decides when the next base backup is due, S-4.2).
    let scratch = ScratchDirectory::new("wal-archive-count");
    let home = home_in(&scratch);
    let first = scratch.0.join("000000010000000000000001");
    fs::write(&first, segment_bytes(1 << 20, 1)).unwrap();
    let current = archive_wal(&home, &single_threaded(), &first, NOW)
        .unwrap()
        .stored_in[0];
    finish_base_backup(&home, current);
    let state = || {
        journal_file::open_journal(&home, NOW)
            .unwrap()
            .journal
            .state()
            .clone()
    };
    let before = state().directories[&current].clone();
    let pending = DirectoryName(current.0 + 60);
    open_pending(&home, pending);

    let outcome = archive_wal(&home, &single_threaded(), &first, NOW.plus_millis(1)).unwrap();
    assert_eq!(outcome.stored_in, vec![current, pending]);
    let after = state();
    assert_eq!(after.directories[&current].wal_files, before.wal_files);
    assert_eq!(after.directories[&current].wal_bytes, before.wal_bytes);
    assert_eq!(after.directories[&pending].wal_files, 1);
}

#[test]
fn a_pending_directory_recorded_but_not_created_yet_gets_a_hard_link_too() {
    let scratch = ScratchDirectory::new("wal-archive-pending");
    let home = home_in(&scratch);
    let first = scratch.0.join("000000010000000000000001");
    fs::write(&first, segment_bytes(1 << 20, 1)).unwrap();
    let current = archive_wal(&home, &single_threaded(), &first, NOW)
        .unwrap()
        .stored_in[0];
    finish_base_backup(&home, current);
    // The sync records DirectoryOpened before its mkdir (S-3.2): `wal` may come between.
    let pending = DirectoryName(current.0 + 60);
    open_pending(&home, pending);
    assert!(!home.directory_path(pending).exists());

    let second = scratch.0.join("000000010000000000000002");
    fs::write(&second, segment_bytes(1 << 20, 2)).unwrap();
    let outcome = archive_wal(&home, &single_threaded(), &second, NOW.plus_millis(1)).unwrap();
    assert_eq!(outcome.stored_in, vec![current, pending]);
    let inode = |directory: DirectoryName| {
        fs::metadata(
            home.directory_path(directory)
                .join("pg_wal/000000010000000000000002.zst"),
        )
        .unwrap()
        .ino()
    };
    assert_eq!(inode(current), inode(pending), "compressed once (S-2.7)");
    for path in [
        home.directory_path(pending),
        home.directory_path(pending).join("pg_wal"),
    ] {
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o700);
    }
}

#[test]
fn a_copy_present_in_one_target_only_is_completed_and_counted_as_new() {
    // A crash between the two links of an earlier call: the retry finds the file in the
    // current directory, adds it to the pending one, and records it as new, since the
    // journal record (which comes after every link) was never written.
    let scratch = ScratchDirectory::new("wal-archive-mixed");
    let home = home_in(&scratch);
    let first = scratch.0.join("000000010000000000000001");
    fs::write(&first, segment_bytes(1 << 20, 1)).unwrap();
    let current = archive_wal(&home, &single_threaded(), &first, NOW)
        .unwrap()
        .stored_in[0];
    finish_base_backup(&home, current);
    let third = scratch.0.join("000000010000000000000003");
    fs::write(&third, segment_bytes(1 << 20, 3)).unwrap();
    archive_wal(&home, &single_threaded(), &third, NOW).unwrap();
    let pending = DirectoryName(current.0 + 60);
    open_pending(&home, pending);

    let retry = archive_wal(&home, &single_threaded(), &third, NOW.plus_millis(1)).unwrap();
    assert_eq!(retry.stored_in, vec![current, pending]);
    assert!(!retry.already_present);
    let stored = home
        .directory_path(pending)
        .join("pg_wal/000000010000000000000003.zst");
    assert_eq!(
        zstd::decode_all(File::open(stored).unwrap()).unwrap(),
        segment_bytes(1 << 20, 3)
    );
}

#[test]
fn a_full_disk_anywhere_in_a_journal_error_is_reported_as_full() {
    let scratch = ScratchDirectory::new("wal-archive-full-journal");
    let home = home_in(&scratch);
    let input = WalInput {
        name: WalFileName::parse("000000010000000000000001").unwrap(),
        path: PathBuf::from("/dev/null"),
        file: File::open("/dev/null").unwrap(),
        size: 0,
        stamp: FileStamp::default(),
    };
    // Two levels down: the journal's write failed, in the journal of $PGBAK.
    let full = JournalFileError::Journal {
        path: PathBuf::from("/x/pgbak.lock"),
        source: JournalError::Io {
            action: IoAction::Sync,
            source: io::Error::from(io::ErrorKind::StorageFull),
        },
    };
    let error = journal_error(&home, &input, full);
    assert!(
        matches!(
            error,
            ArchiveError::StorageFull {
                reason: "No space left on device",
                ..
            }
        ),
        "{error}"
    );
    let quota = JournalFileError::Stat {
        path: PathBuf::from("/x/pgbak.lock"),
        source: io::Error::from(io::ErrorKind::QuotaExceeded),
    };
    let error = journal_error(&home, &input, quota);
    assert!(
        error.to_string().contains("(Disk quota exceeded)"),
        "{error}"
    );
    let other = JournalFileError::Journal {
        path: PathBuf::from("/x/pgbak.lock"),
        source: JournalError::Unreadable {
            reason: RebuildReason::BadMagic,
        },
    };
    let journal_hint = other.hint();
    let error = journal_error(&home, &input, other);
    assert!(matches!(error, ArchiveError::Journal { .. }), "{error}");
    assert!(journal_hint.is_some());
    assert_eq!(
        error.hint(),
        journal_hint,
        "the journal's own error knows what to do"
    );
}

#[test]
fn a_target_on_another_file_system_gets_a_durable_copy() {
    // An operator may symlink a directory elsewhere: linkat fails with EXDEV.
    let shm = Path::new("/dev/shm");
    let scratch = ScratchDirectory::new("wal-archive-exdev");
    if !shm.is_dir() || fs::metadata(shm).unwrap().dev() == fs::metadata(&scratch.0).unwrap().dev()
    {
        return; // No second file system here: nothing to check.
    }
    let elsewhere = ScratchDirectory::under(shm, "wal-archive-exdev");
    let mut file = UnnamedFile::create_in(&scratch.0, PRIVATE_FILE_MODE).unwrap();
    file.write_all(b"compressed bytes").unwrap();
    link_or_copy(&mut file, &elsewhere.0, "x.zst").unwrap();
    let copy = elsewhere.0.join("x.zst");
    assert_eq!(fs::read(&copy).unwrap(), b"compressed bytes");
    assert_eq!(fs::metadata(&copy).unwrap().mode() & 0o7777, 0o600);
    let error = link_or_copy(&mut file, &elsewhere.0, "x.zst").unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
}

#[test]
fn two_different_rejections_in_one_second_are_both_kept() {
    let scratch = ScratchDirectory::new("wal-archive-two-conflicts");
    let home = home_in(&scratch);
    let source = scratch.0.join("00000002.history");
    fs::write(&source, b"1\t0/3000000\toriginal\n").unwrap();
    archive_wal(&home, &single_threaded(), &source, NOW).unwrap();
    let mut kept = Vec::new();
    for content in ["1\t0/3000000\tfirst\n", "1\t0/3000000\tsecond\n"] {
        fs::write(&source, content).unwrap();
        for _retry in 0..2 {
            match archive_wal(&home, &single_threaded(), &source, NOW.plus_millis(1)) {
                Err(ArchiveError::Conflict {
                    rejected: RejectedCopy::Kept(path),
                    ..
                }) => kept.push(path),
                other => panic!("{other:?}"),
            }
        }
    }
    let timestamp = NOW.to_timestamp_string();
    let first = home
        .conflicts_path()
        .join(format!("00000002.history.{timestamp}.zst"));
    let second = home
        .conflicts_path()
        .join(format!("00000002.history.{timestamp}.2.zst"));
    // The same rejected bytes retried are kept once; different ones get their own name.
    assert_eq!(kept, vec![first.clone(), first, second.clone(), second]);
    assert_eq!(fs::read_dir(home.conflicts_path()).unwrap().count(), 2);
}

#[test]
fn a_conflict_retried_in_later_seconds_is_kept_once() {
    // PostgreSQL retries a failing archive_command forever (every second, then every
    // minute): the same rejected bytes must not gain a copy per retry (S-2.10).
    let scratch = ScratchDirectory::new("wal-archive-conflict-retries");
    let home = home_in(&scratch);
    let source = scratch.0.join("000000010000000000000001");
    fs::write(&source, segment_bytes(1 << 20, 1)).unwrap();
    archive_wal(&home, &single_threaded(), &source, NOW).unwrap();
    fs::write(&source, segment_bytes(1 << 20, 2)).unwrap();
    for retry in 1..=4 {
        let error = archive_wal(
            &home,
            &single_threaded(),
            &source,
            NOW.plus_millis(retry * 61_000),
        )
        .unwrap_err();
        assert!(matches!(error, ArchiveError::Conflict { .. }), "{error}");
    }
    let kept: Vec<_> = fs::read_dir(home.conflicts_path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
}

#[test]
fn a_pending_directory_failed_and_removed_after_the_target_choice_is_not_resurrected() {
    // The sync records a failed base backup and removes its pending directory between
    // this call's choice of targets (under the journal lock) and its links: the directory
    // must stay gone, or an orphan the journal does not know is left behind.
    let scratch = ScratchDirectory::new("wal-archive-resurrect");
    let home = home_in(&scratch);
    let first = scratch.0.join("000000010000000000000001");
    fs::write(&first, segment_bytes(1 << 20, 1)).unwrap();
    let current = archive_wal(&home, &single_threaded(), &first, NOW)
        .unwrap()
        .stored_in[0];
    finish_base_backup(&home, current);
    let pending = DirectoryName(current.0 + 60);
    open_pending(&home, pending);

    let mut fired = false;
    let mut sync_fails_the_base_backup = || {
        if std::mem::replace(&mut fired, true) {
            return;
        }
        let mut opened = journal_file::open_journal(&home, NOW).unwrap();
        let failed = [
            Event::BaseBackupStarted {
                directory: pending,
                at: NOW,
            },
            Event::BaseBackupFailed {
                directory: pending,
                output: "pg_basebackup: error: connection refused".into(),
                at: NOW,
            },
        ];
        opened.append(&failed, NOW).unwrap();
        crate::sync::directories::remove_failed_directory(&home, pending).unwrap();
        let removed = Event::DirectoryRemoved {
            directory: pending,
            at: NOW,
        };
        opened.append(&[removed], NOW).unwrap();
    };
    let second = scratch.0.join("000000010000000000000002");
    fs::write(&second, segment_bytes(1 << 20, 2)).unwrap();
    let outcome = archive_wal_hooked(
        &home,
        &single_threaded(),
        &second,
        NOW.plus_millis(1),
        Some(&mut sync_fails_the_base_backup),
    )
    .unwrap();
    assert!(fired);
    assert_eq!(outcome.stored_in, vec![current]);
    assert!(
        !home.directory_path(pending).exists(),
        "a removed pending directory came back"
    );
}

#[test]
fn a_segment_larger_than_a_window_is_several_frames_each_with_its_size_and_checksum() {
    let scratch = ScratchDirectory::new("wal-archive-windows");
    let home = home_in(&scratch);
    let source = scratch.0.join("000000010000000000000002");
    let bytes = segment_bytes(2 * COMPRESS_WINDOW_BYTES, 9);
    fs::write(&source, &bytes).unwrap();
    let outcome = archive_wal(&home, &single_threaded(), &source, NOW).unwrap();
    let stored = home
        .directory_path(outcome.stored_in[0])
        .join("pg_wal/000000010000000000000002.zst");
    let file = fs::read(&stored).unwrap();
    // The first frame holds exactly one window; the decoder concatenates both (S-2.2).
    assert_eq!(
        zstd::zstd_safe::get_frame_content_size(&file).ok(),
        Some(Some(COMPRESS_WINDOW_BYTES as u64))
    );
    let first_frame = zstd::zstd_safe::find_frame_compressed_size(&file).unwrap();
    assert!(first_frame < file.len());
    for frame in [&file[..first_frame], &file[first_frame..]] {
        assert_ne!(frame[4] & 0b100, 0, "checksum flag");
    }
    assert_eq!(zstd::decode_all(&file[..]).unwrap(), bytes);
    assert_eq!(
        stored_content_bytes(&stored).unwrap(),
        Some(bytes.len() as u64)
    );
    // A frame cut short is no size at all.
    let cut = scratch.0.join("cut.zst");
    fs::write(&cut, &file[..file.len() - 1]).unwrap();
    assert_eq!(stored_content_bytes(&cut).unwrap(), None);
    // And the retry compares all of it.
    let again = archive_wal(&home, &single_threaded(), &source, NOW.plus_millis(1)).unwrap();
    assert!(again.already_present);
}

#[test]
fn a_file_changed_while_it_was_read_is_refused() {
    let scratch = ScratchDirectory::new("wal-archive-changed");
    let home = home_in(&scratch);
    let source = scratch.0.join("000000010000000000000003");
    fs::write(&source, segment_bytes(1 << 20, 3)).unwrap();
    let input = read_input(&source).unwrap();
    // Another writer appends after the open (PostgreSQL never does; a stray program may).
    let mut writer = fs::OpenOptions::new().append(true).open(&source).unwrap();
    writer.write_all(b"more").unwrap();
    let error = compress(&home, &single_threaded(), &input).err().unwrap();
    assert!(
        matches!(error, ArchiveError::ChangedWhileRead { .. }),
        "{error}"
    );
}
