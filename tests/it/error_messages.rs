//! Snapshot of every error an operator can see: for each variant, the line `main.rs` prints
//! (`pgbak: ` and [`pgbak::error::one_line`], the error and its causes) and its `hint:`,
//! exactly (104 rows). A change to any message or hint shows up here as a one-row diff; a cause printed
//! twice (in the message and again as the source) would show up as a repeated phrase.
//!
//! The errors come through `pgbak::Error`, as commands return them, so the hint is the one
//! `main.rs` finds: each wrapping error delegates to its cause.

use nix::errno::Errno;
use nix::sys::signal::Signal;
use pgbak::Error;
use pgbak::archive::{ArchiveError, RejectedCopy, StorageFullCause};
use pgbak::commands::init::InitError;
use pgbak::commands::new_series::NewSeriesError;
use pgbak::commands::sync::SyncError;
use pgbak::config::ConfigError;
use pgbak::hint::OperatorHint;
use pgbak::home::environment::{EnvironmentError, UserIdentity};
use pgbak::home::journal_file::{JournalFileError, RebuildError};
use pgbak::home::strict_modes::{EntryKind, Insecurity, Reason};
use pgbak::home::tree_scan::ScanError;
use pgbak::journal::{IoAction, JournalError, RebuildReason};
use pgbak::os::lock::{LockError, LockRange};
use pgbak::report::ReportError;
use pgbak::restore::{ReplayError, RestoreError, RestoreWalError, WalDamage};
use pgbak::sync::SessionError;
use pgbak::sync::base_backup::BaseBackupError;
use pgbak::sync::script::ScriptStartError;
use pgbak::timestamp::DirectoryName;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// What the operator sees: the error line and the hint line, as `main.rs` prints them.
fn shown(error: &(dyn std::error::Error + 'static), hint: Option<String>) -> (String, String) {
    // No cause printed twice: an error whose message already contains its source's would
    // print it again when the chain is joined.
    for (outer, cause) in pgbak::error::causes(error).zip(pgbak::error::causes(error).skip(1)) {
        assert!(
            !outer.to_string().contains(&cause.to_string()),
            "{outer} repeats its cause {cause}"
        );
    }
    let hint = hint.map_or_else(String::new, |hint| format!("hint: {hint}"));
    (format!("pgbak: {}", pgbak::error::one_line(error)), hint)
}

fn command(error: impl Into<Error>) -> (String, String) {
    let error: Error = error.into();
    shown(&error, error.hint())
}

fn path(text: &str) -> PathBuf {
    PathBuf::from(text)
}

fn os(errno: Errno) -> io::Error {
    io::Error::from(errno)
}

fn postgres() -> UserIdentity {
    UserIdentity {
        uid: 106,
        name: Some("postgres".into()),
    }
}

fn root() -> UserIdentity {
    UserIdentity {
        uid: 0,
        name: Some("root".into()),
    }
}

fn journal(source: JournalError) -> JournalFileError {
    JournalFileError::Journal {
        path: path("/pgbak/pgbak.lock"),
        source,
    }
}

fn dir(text: &str) -> DirectoryName {
    DirectoryName::parse(text).unwrap()
}

fn rows() -> Vec<(String, String)> {
    let lock = path("/pgbak/pgbak.lock");
    let seg = "000000010000000000000003".to_string();
    vec![
        // $PGBAK itself (S-1.1, S-1.5).
        command(EnvironmentError::Unset),
        command(EnvironmentError::Empty),
        command(EnvironmentError::NotAbsolute {
            path: path("pgbak"),
        }),
        command(EnvironmentError::Missing {
            path: path("/pgbak"),
        }),
        command(EnvironmentError::NotADirectory {
            path: path("/pgbak"),
        }),
        command(EnvironmentError::Unreadable {
            path: path("/pgbak"),
            source: os(Errno::EACCES),
        }),
        command(EnvironmentError::OwnedByAnotherUser {
            path: path("/pgbak"),
            owner: postgres(),
            running: root(),
        }),
        command(EnvironmentError::OwnedByAnotherUser {
            path: path("/pgbak"),
            owner: UserIdentity {
                uid: 4242,
                name: None,
            },
            running: root(),
        }),
        command(EnvironmentError::ParentMissing {
            path: path("/srv/pgbak"),
            parent: path("/srv"),
        }),
        command(EnvironmentError::CannotCreate {
            path: path("/var/lib/pgbak"),
            running: postgres(),
            source: os(Errno::EACCES),
        }),
        command(EnvironmentError::Insecure(Box::new(Insecurity {
            path: path("/pgbak/scripts/backup"),
            kind: EntryKind::File,
            reason: Reason::Writable {
                mode: 0o777,
                owner: postgres(),
            },
        }))),
        // config.toml (S-7).
        command(ConfigError::Unreadable {
            path: path("/pgbak/config.toml"),
            source: os(Errno::EACCES),
        }),
        command(ConfigError::NotARegularFile {
            path: path("/pgbak/config.toml"),
            kind: "a FIFO",
        }),
        command(ConfigError::TooLarge {
            path: path("/pgbak/config.toml"),
            limit_bytes: 1 << 20,
        }),
        command(ConfigError::Syntax {
            path: path("/pgbak/config.toml"),
            line: Some(3),
            message: "expected `=`".into(),
        }),
        command(ConfigError::UnknownKey {
            path: path("/pgbak/config.toml"),
            key: "script.timout_seconds".into(),
            line: Some(2),
        }),
        command(ConfigError::InvalidValue {
            path: path("/pgbak/config.toml"),
            key: "wal.compression_level".into(),
            value: "99".into(),
            line: Some(4),
            reason: "out of range".into(),
        }),
        command(ConfigError::RetryDelaysReversed {
            path: path("/pgbak/config.toml"),
            section: "script",
            min_seconds: 600,
            max_seconds: 60,
        }),
        // Locks (S-2.6, S-6.6).
        command(LockError::Open {
            path: lock.clone(),
            source: os(Errno::ENOENT),
        }),
        command(LockError::Busy {
            path: lock.clone(),
            range: LockRange::Journal,
            waited: Duration::from_secs(30),
        }),
        command(LockError::Busy {
            path: lock.clone(),
            range: LockRange::Sync,
            waited: Duration::ZERO,
        }),
        command(LockError::AlreadyHeld {
            path: lock.clone(),
            range: LockRange::Sync,
        }),
        command(LockError::Interrupted {
            path: lock.clone(),
            range: LockRange::Sync,
        }),
        command(LockError::NotTheSame {
            path: lock.clone(),
            what: "lock file",
            change: "it is gone".into(),
        }),
        command(LockError::System {
            path: lock.clone(),
            range: LockRange::Journal,
            operation: "F_OFD_SETLK",
            errno: Errno::ENOLCK,
        }),
        // The journal in $PGBAK/pgbak.lock (S-3).
        command(JournalFileError::Lock(LockError::Busy {
            path: lock.clone(),
            range: LockRange::Journal,
            waited: Duration::from_secs(30),
        })),
        command(JournalFileError::Stat {
            path: lock.clone(),
            source: os(Errno::EIO),
        }),
        command(JournalFileError::Scan(ScanError {
            path: path("/pgbak/20260101T000000Z/pg_wal"),
            source: os(Errno::EACCES),
        })),
        command(JournalFileError::Duplicate {
            path: lock.clone(),
            source: os(Errno::EMFILE),
        }),
        command(journal(JournalError::Io {
            action: IoAction::Write {
                offset: 4096,
                bytes: 512,
            },
            source: os(Errno::ENOSPC),
        })),
        command(journal(JournalError::Io {
            action: IoAction::Sync,
            source: os(Errno::EIO),
        })),
        command(journal(JournalError::EventRejected {
            index: 1,
            detail: "WalArchived rejected: no such directory".into(),
        })),
        command(journal(JournalError::RepairEventRejected {
            detail: "JournalRepaired rejected".into(),
        })),
        command(journal(JournalError::RecordTooLarge {
            seq: 7,
            payload_bytes: 2_000_000,
            limit_bytes: 1_048_576,
        })),
        command(journal(JournalError::Encode {
            seq: 7,
            detail: "postcard".into(),
        })),
        command(journal(JournalError::NeedsRebuild {
            reason: RebuildReason::BadMagic,
        })),
        command(journal(JournalError::Unreadable {
            reason: RebuildReason::Damaged {
                offset: 8192,
                expected_seq: 12,
                detail: "checksum mismatch".into(),
            },
        })),
        command(journal(JournalError::InvalidOptions {
            detail: "compaction threshold 0".into(),
        })),
        command(JournalFileError::RebuildFailed {
            path: lock.clone(),
            reason: RebuildReason::BadMagic,
            source: RebuildError::Scan(ScanError {
                path: path("/pgbak"),
                source: os(Errno::EACCES),
            }),
        }),
        command(JournalFileError::RebuildFailed {
            path: lock.clone(),
            reason: RebuildReason::BlankHeader,
            source: RebuildError::KeepCopy {
                path: lock.clone(),
                source: os(Errno::ENOSPC),
            },
        }),
        command(JournalFileError::DamagedAgain { path: lock.clone() }),
        // pgbak wal (S-2).
        command(ArchiveError::RefusedName {
            path: path("pg_wal/notes.txt"),
        }),
        command(ArchiveError::Missing {
            path: path("pg_wal/000000010000000000000003"),
        }),
        command(ArchiveError::NotARegularFile {
            path: path("pg_wal/000000010000000000000003"),
            what: "a directory",
        }),
        command(ArchiveError::Unreadable {
            path: path("pg_wal/000000010000000000000003"),
            source: os(Errno::EACCES),
        }),
        command(ArchiveError::WrongSize {
            path: path("pg_wal/000000010000000000000003"),
            size_bytes: 100,
            expected: "a WAL segment is 16777216 bytes",
        }),
        command(ArchiveError::ChangedWhileRead {
            path: path("pg_wal/000000010000000000000003"),
            detail: "its size changed".into(),
        }),
        command(ArchiveError::Compression {
            name: seg.clone(),
            source: io::Error::other("zstd: bad parameter"),
        }),
        command(ArchiveError::StorageFull {
            name: seg.clone(),
            pgbak: path("/pgbak"),
            reason: "No space left on device",
            source: Box::new(StorageFullCause::Storage {
                action: "cannot write the compressed file".into(),
                source: os(Errno::ENOSPC),
            }),
        }),
        command(ArchiveError::StorageFull {
            name: seg.clone(),
            pgbak: path("/pgbak"),
            reason: "Disk quota exceeded",
            source: Box::new(StorageFullCause::Journal(journal(JournalError::Io {
                action: IoAction::Sync,
                source: os(Errno::EDQUOT),
            }))),
        }),
        command(ArchiveError::Storage {
            name: seg.clone(),
            action: "cannot link into /pgbak/20260101T000000Z/pg_wal".into(),
            source: os(Errno::EROFS),
        }),
        command(ArchiveError::Conflict {
            name: seg.clone(),
            archived: path("/pgbak/20260101T000000Z/pg_wal/000000010000000000000003.zst"),
            rejected: RejectedCopy::Kept(path(
                "/pgbak/conflicts/000000010000000000000003.20260102T000000Z.zst",
            )),
            detail: "differs in content".into(),
        }),
        command(ArchiveError::Conflict {
            name: seg.clone(),
            archived: path("/pgbak/20260101T000000Z/pg_wal/000000010000000000000003.zst"),
            rejected: RejectedCopy::NotKept {
                conflicts: path("/pgbak/conflicts"),
                used_bytes: 900,
                max_bytes: 1000,
            },
            detail: "differs in content".into(),
        }),
        command(ArchiveError::Journal {
            name: seg.clone(),
            source: Box::new(JournalFileError::Lock(LockError::Busy {
                path: lock.clone(),
                range: LockRange::Journal,
                waited: Duration::from_secs(30),
            })),
        }),
        command(ArchiveError::Journal {
            name: seg.clone(),
            source: Box::new(JournalFileError::DamagedAgain { path: lock.clone() }),
        }),
        command(ArchiveError::NoDirectoryOnDisk {
            name: seg.clone(),
            missing: vec![dir("20260101T000000Z")],
        }),
        command(ArchiveError::NoDirectoryOnDisk {
            name: seg.clone(),
            missing: vec![dir("20260101T000000Z"), dir("20260102T000000Z")],
        }),
        command(ArchiveError::OtherCluster {
            name: seg.clone(),
            found: 7_300_000_000_000_000_001,
            recorded: 7_300_000_000_000_000_002,
            pgbak: path("/pgbak"),
        }),
        command(ArchiveError::TargetsUnsettled {
            name: seg.clone(),
            attempts: 8,
            linked: vec![dir("20260101T000000Z")],
        }),
        // pgbak sync: the session (S-6) and the command's own outcomes.
        command(SessionError::Signals {
            source: os(Errno::EINVAL),
        }),
        command(SessionError::Lock(LockError::NotTheSame {
            path: lock.clone(),
            what: "lock file",
            change: "it was replaced".into(),
        })),
        command(SessionError::Journal(journal(JournalError::Io {
            action: IoAction::Sync,
            source: os(Errno::EIO),
        }))),
        command(SyncError::Interrupted {
            signal: Signal::SIGTERM,
        }),
        command(SyncError::InterruptedWhileWaiting {
            signal: Signal::SIGINT,
        }),
        command(SyncError::BaseBackupUnreachable {
            last: "pg_basebackup: error: connection refused".into(),
        }),
        // pgbak status.
        command(ReportError::Lock(LockError::System {
            path: lock.clone(),
            range: LockRange::Sync,
            operation: "F_OFD_GETLK",
            errno: Errno::EINVAL,
        })),
        command(ReportError::Journal(journal(JournalError::Io {
            action: IoAction::Read {
                offset: 0,
                bytes: 4096,
            },
            source: os(Errno::EIO),
        }))),
        command(ReportError::EncodeRecord {
            seq: 9,
            source: serde_json::from_str::<u8>("x").unwrap_err(),
        }),
        command(ReportError::Write {
            what: "journal listing",
            source: os(Errno::ENOSPC),
        }),
        // pgbak init (S-8.4), pgbak new-series (S-2.9), any command's report.
        command(InitError::CreateDirectory {
            path: path("/pgbak/scripts"),
            source: os(Errno::EACCES),
        }),
        command(InitError::WriteScript {
            path: path("/pgbak/scripts/backup"),
            source: os(Errno::ENOSPC),
        }),
        command(InitError::Stat {
            path: path("/pgbak"),
            source: os(Errno::EACCES),
        }),
        command(InitError::Chmod {
            path: path("/pgbak"),
            source: os(Errno::EPERM),
        }),
        command(InitError::Fsync {
            path: path("/pgbak"),
            source: os(Errno::EIO),
        }),
        command(NewSeriesError::BaseBackupRunning {
            directory: "20260101T000000Z".into(),
        }),
        command(Error::Output {
            what: "the status report",
            source: os(Errno::ENOSPC),
        }),
        // What keeps a base backup from starting: recorded as the attempt's failure and shown
        // by `pgbak status` (S-4.5).
        base(BaseBackupError::CreateDirectory {
            path: path("/pgbak/20260101T000000Z"),
            source: os(Errno::ENOSPC),
        }),
        base(BaseBackupError::BaseAlreadyPresent {
            directory: path("/pgbak/20260101T000000Z"),
        }),
        base(BaseBackupError::TmpfileUnsupported {
            directory: path("/pgbak/20260101T000000Z"),
            source: os(Errno::EOPNOTSUPP),
        }),
        base(BaseBackupError::CreateOutput {
            directory: path("/pgbak/20260101T000000Z"),
            source: os(Errno::EACCES),
        }),
        base(BaseBackupError::Encoder {
            directory: path("/pgbak/20260101T000000Z"),
            source: io::Error::other("zstd: bad parameter"),
        }),
        base(BaseBackupError::ProgramNotFound {
            program: "pg_basebackup".into(),
            source: os(Errno::ENOENT),
        }),
        base(BaseBackupError::ProgramNotFound {
            program: "/opt/pg/bin/pg_basebackup".into(),
            source: os(Errno::ENOENT),
        }),
        base(BaseBackupError::ProgramNotExecutable {
            program: "/opt/pg/bin/pg_basebackup".into(),
            source: os(Errno::EACCES),
        }),
        base(BaseBackupError::Spawn {
            program: "pg_basebackup".into(),
            source: os(Errno::E2BIG),
        }),
        base(BaseBackupError::Thread {
            directory: path("/pgbak/20260101T000000Z"),
            source: os(Errno::EAGAIN),
        }),
        // What keeps the backup script from starting: recorded as `ScriptFailed` (S-5.3).
        script(ScriptStartError::NotARegularFile {
            path: path("/pgbak/scripts/backup"),
        }),
        script(ScriptStartError::NotExecutable {
            path: path("/pgbak/scripts/backup"),
            errno: Errno::EACCES,
        }),
        script(ScriptStartError::DanglingSymlink {
            path: path("/pgbak/scripts/backup"),
        }),
        script(ScriptStartError::Missing {
            path: path("/pgbak/scripts/backup"),
        }),
        script(ScriptStartError::CannotExamine {
            path: path("/pgbak/scripts/backup"),
            error: os(Errno::EACCES),
        }),
        script(ScriptStartError::DirectoryMissing {
            directory: path("/pgbak/20260101T000000Z"),
        }),
        script(ScriptStartError::CannotStart {
            path: path("/pgbak/scripts/backup"),
            error: os(Errno::ENOEXEC),
        }),
        script(ScriptStartError::CannotStart {
            path: path("/pgbak/scripts/backup"),
            error: os(Errno::ETXTBSY),
        }),
        // pgbak restore and restore-wal (S-8.1, S-8.1.1).
        command(RestoreError::DestNotEmpty {
            dest: path("/srv/data"),
        }),
        command(RestoreError::DestParentMissing {
            dest: path("/srv/data"),
            parent: path("/srv"),
        }),
        command(RestoreError::UnsafeMember {
            base: path("/pgbak/20261202T140300Z/base.tzst"),
            member: "pg_tblspc/16384".into(),
            problem: "a symlink to /etc, outside the destination (pgbak restores no tablespaces)"
                .into(),
        }),
        command(RestoreError::BaseDamaged {
            base: path("/pgbak/20261202T140300Z/base.tzst"),
            source: io::Error::other("Data corruption detected"),
        }),
        command(RestoreError::DiskFull {
            dest: path("/srv/data"),
            written_bytes: 1_048_576,
            pending_wal_bytes: 33_554_432,
            source: os(Errno::ENOSPC),
        }),
        command(RestoreError::Cleanup {
            dest: path("/srv/data"),
            failure:
                "destination /srv/data: no space left on the device after writing 1048576 bytes"
                    .into(),
            source: os(Errno::EBUSY),
        }),
        command(RestoreWalError::Damaged {
            source_zst: path("/pgbak/20261202T140300Z/pg_wal/000000010000000000000003.zst"),
            name: pgbak::wal_name::WalFileName::parse(&seg).unwrap(),
            problem: WalDamage::WrongTimeline {
                expected: 1,
                found: 2,
            },
        }),
        command(RestoreWalError::Io {
            path: path("/srv/data/pg_wal/.RECOVERYXLOG.pgbak-42"),
            operation: "writing",
            source: os(Errno::ENOSPC),
        }),
        command(ReplayError::AsRoot),
        command(ReplayError::PostgresFailed {
            dest: path("/srv/data"),
            exit: "exited with status 1".into(),
            output: "FATAL:  could not locate required checkpoint record".into(),
        }),
    ]
}

/// A script that cannot start has no hint line: its message says what to do.
fn script(error: ScriptStartError) -> (String, String) {
    shown(&error, None)
}

fn base(error: BaseBackupError) -> (String, String) {
    shown(&error, error.hint())
}

#[test]
fn every_error_prints_one_line_and_its_hint() {
    let rows = rows();
    if std::env::var_os("PGBAK_PRINT_SNAPSHOT").is_some() {
        for (line, hint) in &rows {
            println!("    ({line:?}, {hint:?}),");
        }
    }
    let expected = EXPECTED;
    assert_eq!(rows.len(), expected.len(), "one expected row per error");
    for ((line, hint), (expected_line, expected_hint)) in rows.iter().zip(expected) {
        assert_eq!(
            (line.as_str(), hint.as_str()),
            (*expected_line, *expected_hint)
        );
        assert!(!line.contains('\n') && !hint.contains('\n'), "{line}");
    }
}

/// The snapshot: `(error line, hint line or "")`, in the order of [`rows`].
const EXPECTED: &[(&str, &str)] = &[
    (
        "pgbak: PGBAK is not set",
        "hint: set PGBAK where PostgreSQL runs: Environment=PGBAK=/var/lib/pgbak under [Service] in a systemd drop-in (see pgbak init), or export PGBAK=/var/lib/pgbak in a shell",
    ),
    (
        "pgbak: PGBAK is set but empty",
        "hint: set PGBAK where PostgreSQL runs: Environment=PGBAK=/var/lib/pgbak under [Service] in a systemd drop-in (see pgbak init), or export PGBAK=/var/lib/pgbak in a shell",
    ),
    (
        "pgbak: PGBAK=pgbak is not an absolute path",
        "hint: PostgreSQL runs archive_command in its data directory, so PGBAK must be absolute, e.g. PGBAK=/var/lib/pgbak",
    ),
    (
        "pgbak: PGBAK=/pgbak does not exist",
        "hint: create it with: PGBAK=/pgbak pgbak init (as the PostgreSQL OS user)",
    ),
    (
        "pgbak: PGBAK=/pgbak is not a directory",
        "hint: point PGBAK at a directory, or move /pgbak away and run pgbak init",
    ),
    (
        "pgbak: PGBAK=/pgbak cannot be read: Permission denied (os error 13)",
        "hint: check that the user running pgbak can search every directory leading to /pgbak",
    ),
    (
        "pgbak: PGBAK=/pgbak is owned by user postgres (uid 106), but pgbak runs as user root (uid 0)",
        "hint: run pgbak as postgres, e.g. runuser -u postgres -- pgbak ...",
    ),
    (
        "pgbak: PGBAK=/pgbak is owned by uid 4242, but pgbak runs as user root (uid 0)",
        "hint: run pgbak as uid 4242, the owner of /pgbak, or chown -R the directory to the PostgreSQL OS user",
    ),
    (
        "pgbak: PGBAK=/srv/pgbak: its parent directory /srv does not exist",
        "hint: create /srv first, or fix a typo in PGBAK (pgbak init creates only the last directory)",
    ),
    (
        "pgbak: PGBAK=/var/lib/pgbak cannot be created: Permission denied (os error 13)",
        "hint: create it as root for the PostgreSQL OS user, e.g. install -d -m 0700 -o postgres /var/lib/pgbak, then run pgbak init again as postgres",
    ),
    (
        "pgbak: /pgbak/scripts/backup: writable by group and others (mode 0777, owner user postgres (uid 106)); pgbak refuses to archive or sync until only the owner of PGBAK can change it",
        "hint: chmod go-w /pgbak/scripts/backup",
    ),
    (
        "pgbak: config /pgbak/config.toml: cannot be read: Permission denied (os error 13)",
        "hint: make /pgbak/config.toml readable by the user running pgbak, or remove it to use the defaults",
    ),
    (
        "pgbak: config /pgbak/config.toml: is a FIFO, not a regular file",
        "hint: make /pgbak/config.toml a regular file (a symlink to one is fine), or remove it to use the defaults",
    ),
    (
        "pgbak: config /pgbak/config.toml: is larger than 1048576 bytes (1 MiB), the most pgbak reads from it",
        "hint: a config.toml needs only a few lines (every key is in the README): replace it, or remove it to use the defaults",
    ),
    (
        "pgbak: config /pgbak/config.toml: TOML syntax error at line 3: expected `=`",
        "hint: fix the TOML syntax; every key is optional, so an empty or absent file means all defaults",
    ),
    (
        "pgbak: config /pgbak/config.toml: unknown key \"script.timout_seconds\" (line 2)",
        "hint: did you mean \"script.timeout_seconds\"? known keys in [script]: timeout_seconds, retry_delay_min_seconds, retry_delay_max_seconds",
    ),
    (
        "pgbak: config /pgbak/config.toml: wal.compression_level = 99 (line 4) is not allowed (out of range); allowed: an integer from 1 to 19",
        "hint: set wal.compression_level to an integer from 1 to 19, or remove it for the default 1",
    ),
    (
        "pgbak: config /pgbak/config.toml: script.retry_delay_min_seconds = 600 is greater than script.retry_delay_max_seconds = 60",
        "hint: raise script.retry_delay_max_seconds or lower script.retry_delay_min_seconds",
    ),
    (
        "pgbak: lock file /pgbak/pgbak.lock: cannot be opened: No such file or directory (os error 2)",
        "hint: check that /pgbak/pgbak.lock is a regular file owned by the user running pgbak",
    ),
    (
        "pgbak: lock file /pgbak/pgbak.lock: the journal lock (byte 0) is held by another pgbak process (waited 30.000 s)",
        "hint: another pgbak process holds it; it usually takes milliseconds. If this repeats, look for a stuck process with: fuser -v /pgbak/pgbak.lock",
    ),
    (
        "pgbak: lock file /pgbak/pgbak.lock: the sync lock (byte 1) is held by another pgbak process (waited 0.000 s)",
        "hint: a pgbak sync is running; wait for it with pgbak wait, or see it with: fuser -v /pgbak/pgbak.lock",
    ),
    (
        "pgbak: lock file /pgbak/pgbak.lock: the sync lock (byte 1) is already held through this descriptor (a bug in pgbak)",
        "hint: please report this bug; running the command again is safe",
    ),
    (
        "pgbak: lock file /pgbak/pgbak.lock: waiting for the sync lock (byte 1) was interrupted by a signal",
        "",
    ),
    (
        "pgbak: /pgbak/pgbak.lock is no longer the lock file this process opened (it is gone)",
        "hint: PGBAK or its pgbak.lock was moved, replaced, deleted or unmounted while pgbak ran (pgbak never does that itself); put it back where PGBAK points (remount it): PostgreSQL retries the archiving, and pgbak sync resumes the rest",
    ),
    (
        "pgbak: lock file /pgbak/pgbak.lock: F_OFD_SETLK on the journal lock (byte 0) failed: ENOLCK: No record locks available",
        "hint: the file system does not support locks (NFS without lockd?); put PGBAK on a local file system",
    ),
    (
        "pgbak: lock file /pgbak/pgbak.lock: the journal lock (byte 0) is held by another pgbak process (waited 30.000 s)",
        "hint: another pgbak process holds it; it usually takes milliseconds. If this repeats, look for a stuck process with: fuser -v /pgbak/pgbak.lock",
    ),
    (
        "pgbak: journal /pgbak/pgbak.lock: Input/output error (os error 5)",
        "",
    ),
    (
        "pgbak: cannot read /pgbak/20260101T000000Z/pg_wal: Permission denied (os error 13)",
        "",
    ),
    (
        "pgbak: journal /pgbak/pgbak.lock: cannot duplicate its descriptor: Too many open files (os error 24)",
        "",
    ),
    (
        "pgbak: journal /pgbak/pgbak.lock: writing 512 bytes at offset 4096 failed: No space left on device (os error 28)",
        "hint: check the file system that holds $PGBAK: is it full, read-only or failing (see dmesg)?",
    ),
    (
        "pgbak: journal /pgbak/pgbak.lock: fsync failed: Input/output error (os error 5)",
        "hint: check the file system that holds $PGBAK: is it full, read-only or failing (see dmesg)?",
    ),
    (
        "pgbak: journal /pgbak/pgbak.lock: event 1 of the batch was rejected by the state machine, nothing was written: WalArchived rejected: no such directory",
        "hint: this is a bug in pgbak: please report it with the output of `pgbak status --journal`",
    ),
    (
        "pgbak: journal /pgbak/pgbak.lock: the repair record was rejected by the state machine: JournalRepaired rejected",
        "hint: this is a bug in pgbak: please report it with the output of `pgbak status --journal`",
    ),
    (
        "pgbak: journal /pgbak/pgbak.lock: record 7 encodes to 2000000 bytes, more than the limit of 1048576 (one append is one record)",
        "hint: this is a bug in pgbak: please report it with the output of `pgbak status --journal`",
    ),
    (
        "pgbak: journal /pgbak/pgbak.lock: record 7 could not be encoded: postcard",
        "hint: this is a bug in pgbak: please report it with the output of `pgbak status --journal`",
    ),
    (
        "pgbak: journal /pgbak/pgbak.lock: the journal must be rebuilt: the file does not start with the journal magic \"PGBAKJNL\": it is not a pgbak journal or its header was overwritten",
        "hint: run the command again: it rebuilds the journal from the backup directories",
    ),
    (
        "pgbak: journal /pgbak/pgbak.lock: the journal cannot be read: record 12 at offset 8192 is damaged: checksum mismatch",
        "hint: any pgbak command that writes (e.g. `pgbak sync`) rebuilds the journal from the backup directories",
    ),
    (
        "pgbak: journal /pgbak/pgbak.lock: invalid journal options: compaction threshold 0",
        "hint: check the journal settings in $PGBAK/config.toml",
    ),
    (
        "pgbak: journal /pgbak/pgbak.lock: needs a rebuild because the file does not start with the journal magic \"PGBAKJNL\": it is not a pgbak journal or its header was overwritten, and the rebuild failed: cannot read /pgbak: Permission denied (os error 13)",
        "",
    ),
    (
        "pgbak: journal /pgbak/pgbak.lock: needs a rebuild because the journal header is blank: its creation or an earlier rebuild was interrupted by a crash, or the file was overwritten, and the rebuild failed: cannot keep a copy of the damaged journal /pgbak/pgbak.lock: No space left on device (os error 28)",
        "",
    ),
    (
        "pgbak: journal /pgbak/pgbak.lock: damaged again right after it was rebuilt",
        "",
    ),
    (
        "pgbak: wal pg_wal/notes.txt: not a file PostgreSQL archives (a WAL segment of 24 hex digits, SEGMENT.partial, TIMELINE.history or SEGMENT.OFFSET.backup)",
        "hint: set archive_command = 'pgbak wal %p': PostgreSQL replaces %p with the path of the WAL file to archive",
    ),
    (
        "pgbak: wal pg_wal/000000010000000000000003: no such file",
        "hint: PostgreSQL runs archive_command in its data directory with %p relative to it: check archive_command = 'pgbak wal %p'",
    ),
    (
        "pgbak: wal pg_wal/000000010000000000000003: is a directory, not a regular file",
        "hint: set archive_command = 'pgbak wal %p': PostgreSQL replaces %p with the path of the WAL file to archive",
    ),
    (
        "pgbak: wal pg_wal/000000010000000000000003: cannot be read: Permission denied (os error 13)",
        "hint: run pgbak as the PostgreSQL OS user (the one that runs archive_command), which can read pg_wal",
    ),
    (
        "pgbak: wal pg_wal/000000010000000000000003: is 100 bytes, but a WAL segment is 16777216 bytes",
        "hint: PostgreSQL archives only complete WAL files: check that archive_command is 'pgbak wal %p' and that nothing else writes to pg_wal",
    ),
    (
        "pgbak: wal pg_wal/000000010000000000000003: changed while it was read (its size changed)",
        "hint: PostgreSQL archives only finished WAL files: look for another program writing to pg_wal; PostgreSQL retries archive_command",
    ),
    (
        "pgbak: wal 000000010000000000000003: cannot set up zstd compression: zstd: bad parameter",
        "hint: check wal.compression_level and wal.compression_threads in $PGBAK/config.toml",
    ),
    (
        "pgbak: wal 000000010000000000000003: $PGBAK /pgbak is full (No space left on device), the file is not archived: cannot write the compressed file: No space left on device (os error 28)",
        "hint: free space on the file system that holds /pgbak (or raise the quota): PostgreSQL keeps the WAL in pg_wal and retries archive_command, so nothing is lost, but pg_wal grows until then",
    ),
    (
        "pgbak: wal 000000010000000000000003: $PGBAK /pgbak is full (Disk quota exceeded), the file is not archived: journal /pgbak/pgbak.lock: fsync failed: Disk quota exceeded (os error 122)",
        "hint: free space on the file system that holds /pgbak (or raise the quota): PostgreSQL keeps the WAL in pg_wal and retries archive_command, so nothing is lost, but pg_wal grows until then",
    ),
    (
        "pgbak: wal 000000010000000000000003: cannot link into /pgbak/20260101T000000Z/pg_wal: Read-only file system (os error 30)",
        "hint: check the file system that holds $PGBAK: is it read-only or failing (see dmesg)? PostgreSQL retries archive_command",
    ),
    (
        "pgbak: wal 000000010000000000000003: /pgbak/20260101T000000Z/pg_wal/000000010000000000000003.zst already exists and differs in content; it was left unchanged, and the rejected file was kept as /pgbak/conflicts/000000010000000000000003.20260102T000000Z.zst",
        "hint: pgbak never overwrites an archived file: find out why two versions exist (two servers archiving into one $PGBAK, or a restored server reusing a timeline) and compare them with zstd -d -c; PostgreSQL retries until the call succeeds",
    ),
    (
        "pgbak: wal 000000010000000000000003: /pgbak/20260101T000000Z/pg_wal/000000010000000000000003.zst already exists and differs in content; it was left unchanged, and the rejected file was not kept because /pgbak/conflicts reached its cap (wal.conflicts_max_bytes = 1000, 900 bytes kept)",
        "hint: pgbak never overwrites an archived file: find out why two versions exist (two servers archiving into one $PGBAK, or a restored server reusing a timeline) and compare them with zstd -d -c; PostgreSQL retries until the call succeeds; to keep copies again, remove old ones from $PGBAK/conflicts or raise wal.conflicts_max_bytes",
    ),
    (
        "pgbak: wal 000000010000000000000003: lock file /pgbak/pgbak.lock: the journal lock (byte 0) is held by another pgbak process (waited 30.000 s)",
        "hint: another pgbak process holds it; it usually takes milliseconds. If this repeats, look for a stuck process with: fuser -v /pgbak/pgbak.lock",
    ),
    (
        "pgbak: wal 000000010000000000000003: journal /pgbak/pgbak.lock: damaged again right after it was rebuilt",
        "",
    ),
    (
        "pgbak: wal 000000010000000000000003: the journal says 20260101T000000Z should receive WAL, but it is missing on disk",
        "hint: a backup directory was removed by hand: see pgbak status; pgbak sync --base starts a new one",
    ),
    (
        "pgbak: wal 000000010000000000000003: the journal says 20260101T000000Z, 20260102T000000Z should receive WAL, but they are missing on disk",
        "hint: a backup directory was removed by hand: see pgbak status; pgbak sync --base starts a new one",
    ),
    (
        "pgbak: wal 000000010000000000000003: segment of another cluster: its system identifier is 7300000000000000001, the backups in /pgbak are of cluster 7300000000000000002",
        "hint: two servers must not archive into one $PGBAK: point this server's PGBAK elsewhere; if it is this database's new cluster on purpose (pg_upgrade, a new initdb), run `pgbak new-series` once to start a new backup series",
    ),
    (
        "pgbak: wal 000000010000000000000003: the open backup directories changed on each of 8 attempts; the file is stored in 20260101T000000Z but not recorded",
        "hint: PostgreSQL retries archive_command; if this repeats, see pgbak status",
    ),
    (
        "pgbak: sync: installing the SIGTERM/SIGINT handlers: Invalid argument (os error 22)",
        "",
    ),
    (
        "pgbak: /pgbak/pgbak.lock is no longer the lock file this process opened (it was replaced)",
        "hint: PGBAK or its pgbak.lock was moved, replaced, deleted or unmounted while pgbak ran (pgbak never does that itself); put it back where PGBAK points (remount it): PostgreSQL retries the archiving, and pgbak sync resumes the rest",
    ),
    (
        "pgbak: journal /pgbak/pgbak.lock: fsync failed: Input/output error (os error 5)",
        "hint: check the file system that holds $PGBAK: is it full, read-only or failing (see dmesg)?",
    ),
    (
        "pgbak: sync: interrupted by SIGTERM; running work was stopped and recorded, and the next sync resumes it",
        "hint: run pgbak sync again to finish the work (or let the next pgbak wal start it); pgbak status shows what is left",
    ),
    (
        "pgbak: sync: interrupted by SIGINT while waiting for the running sync; nothing was done",
        "hint: run pgbak sync again to finish the work (or let the next pgbak wal start it); pgbak status shows what is left",
    ),
    (
        "pgbak: sync: everything else is done, but the base backup cannot reach the server (pg_basebackup: error: connection refused)",
        "hint: start PostgreSQL (or fix [pg_basebackup] host and port in $PGBAK/config.toml); the next pgbak wal or pgbak sync retries the base backup",
    ),
    (
        "pgbak: lock file /pgbak/pgbak.lock: F_OFD_GETLK on the sync lock (byte 1) failed: EINVAL: Invalid argument",
        "hint: OFD locks (F_OFD_SETLK) need Linux 3.15 or later and a local file system",
    ),
    (
        "pgbak: journal /pgbak/pgbak.lock: reading 4096 bytes at offset 0 failed: Input/output error (os error 5)",
        "hint: check the file system that holds $PGBAK: is it full, read-only or failing (see dmesg)?",
    ),
    (
        "pgbak: status: encoding record 9 as JSON: expected value at line 1 column 1",
        "",
    ),
    (
        "pgbak: status: writing the journal listing: No space left on device (os error 28)",
        "",
    ),
    (
        "pgbak: init /pgbak/scripts: cannot be created: Permission denied (os error 13)",
        "hint: run pgbak init as the PostgreSQL OS user, which must own /pgbak/scripts, on a file system that is writable and not full; running it again completes what is missing",
    ),
    (
        "pgbak: init /pgbak/scripts/backup: cannot be written: No space left on device (os error 28)",
        "hint: run pgbak init as the PostgreSQL OS user, which must own /pgbak/scripts/backup, on a file system that is writable and not full; running it again completes what is missing",
    ),
    (
        "pgbak: stat /pgbak: Permission denied (os error 13)",
        "hint: run pgbak init as the PostgreSQL OS user, which must own /pgbak, on a file system that is writable and not full; running it again completes what is missing",
    ),
    (
        "pgbak: chmod 0700 /pgbak: Operation not permitted (os error 1)",
        "hint: run pgbak init as the PostgreSQL OS user, which must own /pgbak, on a file system that is writable and not full; running it again completes what is missing",
    ),
    (
        "pgbak: init /pgbak: cannot be made durable (fsync): Input/output error (os error 5)",
        "hint: run pgbak init as the PostgreSQL OS user, which must own /pgbak, on a file system that is writable and not full; running it again completes what is missing",
    ),
    (
        "pgbak: new-series: a base backup is running into 20260101T000000Z",
        "hint: wait for it (pgbak wait), or stop the sync, then run pgbak new-series again",
    ),
    (
        "pgbak: writing the status report: No space left on device (os error 28)",
        "",
    ),
    (
        "pgbak: base backup directory /pgbak/20260101T000000Z: cannot be created: No space left on device (os error 28)",
        "hint: check that $PGBAK is writable by the user pgbak runs as and its file system is not full or read-only",
    ),
    (
        "pgbak: base backup directory /pgbak/20260101T000000Z: base.tzst already exists; pgbak never overwrites a finished base backup",
        "hint: /pgbak/20260101T000000Z holds a finished base backup the journal does not know; run pgbak status, and move the directory away if it is stale",
    ),
    (
        "pgbak: base backup directory /pgbak/20260101T000000Z: O_TMPFILE is not supported: Operation not supported (os error 95)",
        "hint: put PGBAK on ext4, xfs, btrfs or tmpfs with Linux 3.11 or later (pgbak needs O_TMPFILE never to leave a partial base.tzst behind)",
    ),
    (
        "pgbak: base backup directory /pgbak/20260101T000000Z: cannot create the output file: Permission denied (os error 13)",
        "",
    ),
    (
        "pgbak: zstd encoder for /pgbak/20260101T000000Z: cannot be set up: zstd: bad parameter",
        "hint: check base.compression_level and base.compression_threads in $PGBAK/config.toml",
    ),
    (
        "pgbak: pg_basebackup program \"pg_basebackup\" (pg_basebackup.path) not found in PATH: No such file or directory (os error 2)",
        "hint: set pg_basebackup.path in $PGBAK/config.toml to the full path of pg_basebackup (e.g. /usr/lib/postgresql/17/bin/pg_basebackup), or install the PostgreSQL client tools (postgresql-client)",
    ),
    (
        "pgbak: pg_basebackup program \"/opt/pg/bin/pg_basebackup\" (pg_basebackup.path) not found: No such file or directory (os error 2)",
        "hint: set pg_basebackup.path in $PGBAK/config.toml to the full path of pg_basebackup (e.g. /usr/lib/postgresql/17/bin/pg_basebackup), or install the PostgreSQL client tools (postgresql-client)",
    ),
    (
        "pgbak: pg_basebackup program \"/opt/pg/bin/pg_basebackup\" (pg_basebackup.path) is not executable: Permission denied (os error 13)",
        "hint: make /opt/pg/bin/pg_basebackup executable for the user pgbak runs as, or point pg_basebackup.path in $PGBAK/config.toml at the real pg_basebackup",
    ),
    (
        "pgbak: pg_basebackup program \"pg_basebackup\" (pg_basebackup.path) cannot be started: Argument list too long (os error 7)",
        "hint: check pg_basebackup.path in $PGBAK/config.toml; it must name the pg_basebackup program",
    ),
    (
        "pgbak: base backup of /pgbak/20260101T000000Z: cannot start a thread: Resource temporarily unavailable (os error 11)",
        "",
    ),
    (
        "pgbak: backup script /pgbak/scripts/backup is not a regular file: replace it with an executable script",
        "",
    ),
    (
        "pgbak: backup script /pgbak/scripts/backup is not executable (EACCES: Permission denied): chmod 700 /pgbak/scripts/backup",
        "",
    ),
    (
        "pgbak: backup script /pgbak/scripts/backup is a symbolic link to a missing file: fix the link",
        "",
    ),
    (
        "pgbak: backup script /pgbak/scripts/backup does not exist: create it (pgbak init writes a template), or make it a symlink to /bin/true for local-only backups",
        "",
    ),
    (
        "pgbak: backup script /pgbak/scripts/backup cannot be examined: Permission denied (os error 13)",
        "",
    ),
    (
        "pgbak: backup directory /pgbak/20260101T000000Z is missing, so the backup script cannot run in it",
        "",
    ),
    (
        "pgbak: backup script /pgbak/scripts/backup could not be started: Exec format error (os error 8) (does it start with a #! line such as #!/bin/sh?)",
        "",
    ),
    (
        "pgbak: backup script /pgbak/scripts/backup could not be started: Text file busy (os error 26)",
        "",
    ),
    (
        "pgbak: destination /srv/data: exists and is not an empty directory",
        "hint: give a path that does not exist yet, or an empty directory: pgbak restore never writes over files",
    ),
    (
        "pgbak: destination /srv/data: its parent directory /srv does not exist",
        "hint: create /srv first",
    ),
    (
        "pgbak: /pgbak/20261202T140300Z/base.tzst: member \"pg_tblspc/16384\": a symlink to /etc, outside the destination (pgbak restores no tablespaces)",
        "hint: pg_basebackup never writes such a member: this base.tzst was altered or is not a base backup; nothing was written outside the destination",
    ),
    (
        "pgbak: /pgbak/20261202T140300Z/base.tzst: damaged or incomplete (zstd or tar stream): Data corruption detected",
        "hint: restore from another backup directory (--from), or from another copy of /pgbak/20261202T140300Z/base.tzst",
    ),
    (
        "pgbak: destination /srv/data: no space left on the device after writing 1048576 bytes: No space left on device (os error 28)",
        "hint: free space on the destination's file system (at least 33554432 more bytes of WAL were still to come), or restore elsewhere",
    ),
    (
        "pgbak: destination /srv/data: the restore failed (destination /srv/data: no space left on the device after writing 1048576 bytes), and removing what it wrote failed: Device or resource busy (os error 16)",
        "hint: remove /srv/data by hand before restoring again: it is not a usable data directory",
    ),
    (
        "pgbak: /pgbak/20261202T140300Z/pg_wal/000000010000000000000003.zst: 000000010000000000000003 is damaged: its page header says timeline 2, its name says timeline 1",
        "hint: restore this file from another copy of the backup (--from), or end recovery before it",
    ),
    (
        "pgbak: writing /srv/data/pg_wal/.RECOVERYXLOG.pgbak-42: No space left on device (os error 28)",
        "hint: free space on the destination's file system",
    ),
    (
        "pgbak: --replay: refusing to run postgres as root (PostgreSQL refuses to run as root)",
        "hint: run pgbak restore as the owner of the data directory, e.g. runuser -u postgres -- pgbak restore ...",
    ),
    (
        "pgbak: --replay: postgres --single on /srv/data exited with status 1; its last output: FATAL:  could not locate required checkpoint record",
        "hint: the restored data directory /srv/data stays as it is; start PostgreSQL on it by hand to see what recovery says",
    ),
];
