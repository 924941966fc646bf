//! S-3.4: 1,000,000 `WalArchived` records written through the real code — `OpenedJournal::append`
//! on `$PGBAK/pgbak.lock`: the OFD journal lock, refresh, the machine's check, write, fdatasync,
//! compaction — stay under the documented bound, and loading the state stays fast.
//!
//! One append per record, as `pgbak wal` does. The file lives on tmpfs (`/dev/shm`) when there
//! is one, where fdatasync costs nothing, so the test measures pgbak's own work rather than the
//! disk. Ignored in debug builds (about ten times slower); `.ci/run` runs it in release with
//! `--include-ignored`. It prints its figures; it asserts no wall-clock time (a shared or busy
//! machine would make such an assertion fail at random).

use pgbak::home::environment::PgbakHome;
use pgbak::home::journal_file;
use pgbak::journal::{COMPACTION_THRESHOLD_BYTES, FRAME_HEADER_BYTES, file_bytes_bound};
use pgbak::machine::{Event, State};
use pgbak::timestamp::{DirectoryName, UnixMillis};
use pgbak::wal_name::WalFileName;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Instant;

const RECORDS: u64 = 1_000_000;

fn scratch() -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let path = base.join(format!("pgbak-scale-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path).unwrap();
    path
}

fn encoded_frame_bytes<T: serde::Serialize>(value: &T) -> u64 {
    // A record's payload wraps the value in one more enum tag; 8 bytes cover it generously.
    postcard::to_stdvec(value).unwrap().len() as u64 + FRAME_HEADER_BYTES + 8
}

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "slow in debug builds; .ci/run runs it in release"
)]
fn a_million_wal_records_stay_under_the_bound_and_load_fast() {
    let path = scratch();
    let home = PgbakHome {
        path: path.clone(),
        owner_uid: std::fs::metadata(&path).unwrap().uid(),
    };
    let start = UnixMillis(1_795_478_400_000);
    let mut opened = journal_file::open_journal(&home, start).unwrap();
    let directory = DirectoryName::from_millis(start);
    opened
        .append(
            &[Event::DirectoryOpened {
                directory,
                at: start,
            }],
            start,
        )
        .unwrap();

    let lock_path = home.lock_file_path();
    let mut largest_file_bytes = 0;
    let mut largest_append_frame = 0;
    let mut largest_checkpoint_frame = encoded_frame_bytes(opened.journal.state());
    let began = Instant::now();
    for number in 0..RECORDS {
        let at = start.plus_millis(number);
        // Segment names as PostgreSQL makes them: 256 segments per log file.
        let name = format!("00000001{:08X}{:08X}", number / 256, number % 256);
        let event = Event::WalArchived {
            file: WalFileName::parse(&name).unwrap(),
            compressed_bytes: 1_400_000,
            directories: vec![directory],
            already_present: false,
            at,
        };
        largest_append_frame = largest_append_frame.max(encoded_frame_bytes(&vec![event.clone()]));
        opened.append(&[event], at).unwrap();
        if number % 997 == 0 || number + 1 == RECORDS {
            largest_checkpoint_frame =
                largest_checkpoint_frame.max(encoded_frame_bytes(opened.journal.state()));
            let bound = file_bytes_bound(
                COMPACTION_THRESHOLD_BYTES,
                largest_append_frame,
                largest_checkpoint_frame,
            );
            let file_bytes = std::fs::metadata(&lock_path).unwrap().len();
            largest_file_bytes = largest_file_bytes.max(file_bytes);
            assert!(
                file_bytes <= bound,
                "after {number} records: {file_bytes} > bound {bound}"
            );
        }
    }
    let append_seconds = began.elapsed().as_secs_f64();
    drop(opened);

    // Loading: what every `pgbak` command does first.
    let began = Instant::now();
    let reopened = journal_file::open_journal(&home, start.plus_millis(RECORDS)).unwrap();
    let load_ms = began.elapsed().as_secs_f64() * 1000.0;
    let state: &State = reopened.journal.state();
    assert!(reopened.report.repair.is_none());
    assert_eq!(state.wal.archived_count, RECORDS);
    assert_eq!(state.directories[&directory].wal_files, RECORDS);
    // The state does not grow with the WAL count: a checkpoint stays small.
    assert!(
        largest_checkpoint_frame < 4096,
        "checkpoint frame {largest_checkpoint_frame} bytes"
    );
    assert!(
        largest_file_bytes < (1 << 20) + 64 * 1024,
        "largest file {largest_file_bytes} bytes"
    );
    eprintln!(
        "1,000,000 WalArchived appends (lock + refresh + check + write + fdatasync on {}): \
         {append_seconds:.1} s ({:.1} µs each); largest file {largest_file_bytes} bytes \
         (bound with the largest records seen: {}); checkpoint frame {largest_checkpoint_frame} \
         bytes; reopen replaying {} records: {load_ms:.1} ms",
        path.display(),
        append_seconds * 1e6 / RECORDS as f64,
        file_bytes_bound(
            COMPACTION_THRESHOLD_BYTES,
            largest_append_frame,
            largest_checkpoint_frame
        ),
        reopened.report.records_replayed,
    );
    drop(reopened);
    std::fs::remove_dir_all(&path).unwrap();
}
