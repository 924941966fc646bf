//! Reads the directory tree under `$PGBAK` into a [`TreeScan`], the input of the journal
//! rebuild (S-3.3) and of the problems `status` reports (gaps in the WAL sequence, S-6.4).
//!
//! Owns: what counts as one of our directories on disk. Invariants: read-only; entries whose
//! names are not ours (`TIMESTAMP/`, `pg_wal/*.zst`, `base.tzst`) are ignored, never touched;
//! `base.tzst` counts only as a regular file, which pgbak links into place only once complete
//! and durable (S-4.3), so its presence proves the base backup finished.

use super::names::BASE_FILE_NAME;
use super::names::CURRENT_LINK_NAME;
use super::names::WAL_DIRECTORY_NAME;
use crate::machine::{ScannedDirectory, TreeScan};
use crate::timestamp::{DirectoryName, UnixMillis};
use crate::wal_name::{WalFileKind, WalFileName};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

#[derive(Debug, thiserror::Error)]
#[error("cannot read {}", .path.display())]
pub struct ScanError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn scan_error(path: &Path) -> impl FnOnce(io::Error) -> ScanError + '_ {
    move |source| ScanError {
        path: path.to_owned(),
        source,
    }
}

fn modified_at(metadata: &fs::Metadata) -> Option<UnixMillis> {
    let since_epoch = metadata.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    Some(UnixMillis(
        u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX),
    ))
}

/// The names of the WAL files stored in one directory's `pg_wal/`, sorted, with their sizes.
pub fn stored_wal_files(
    directory: &Path,
) -> Result<Vec<(WalFileName, u64, UnixMillis)>, ScanError> {
    let wal_directory = directory.join(WAL_DIRECTORY_NAME);
    let entries = match fs::read_dir(&wal_directory) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(scan_error(&wal_directory)(error)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(scan_error(&wal_directory))?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".zst")) else {
            continue;
        };
        let Some(wal_name) = WalFileName::parse(name) else {
            continue;
        };
        let metadata = entry.metadata().map_err(scan_error(&entry.path()))?;
        if !metadata.is_file() {
            continue;
        }
        let at = modified_at(&metadata).unwrap_or_default();
        files.push((wal_name, metadata.len(), at));
    }
    files.sort();
    Ok(files)
}

/// The `TIMESTAMP/` directories in `pgbak` (or in a copy of it), oldest first: entries whose
/// name parses as a [`DirectoryName`] and that are directories themselves, not links. One that
/// vanishes during the listing (a failed one being removed) is skipped, not an error.
pub fn timestamp_directories(pgbak: &Path) -> Result<Vec<(DirectoryName, PathBuf)>, ScanError> {
    let mut directories = Vec::new();
    for entry in fs::read_dir(pgbak).map_err(scan_error(pgbak))? {
        let entry = entry.map_err(scan_error(pgbak))?;
        let Some(name) = entry.file_name().to_str().and_then(DirectoryName::parse) else {
            continue;
        };
        let path = entry.path();
        match fs::symlink_metadata(&path) {
            Ok(metadata) if metadata.is_dir() => directories.push((name, path)),
            Ok(_) => continue,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(scan_error(&path)(error)),
        }
    }
    directories.sort();
    Ok(directories)
}

/// Scans `$PGBAK`. A directory that vanishes during the scan (a failed one being removed) is
/// skipped, not an error.
pub fn scan(pgbak: &Path) -> Result<TreeScan, ScanError> {
    let mut directories = Vec::new();
    let mut distinct_names = std::collections::BTreeSet::new();
    for (name, path) in timestamp_directories(pgbak)? {
        let base = match fs::symlink_metadata(path.join(BASE_FILE_NAME)) {
            Ok(metadata) if metadata.is_file() => Some((
                metadata.len(),
                modified_at(&metadata).unwrap_or(name.as_millis()),
            )),
            Ok(_) => None,
            Err(error) if error.kind() == io::ErrorKind::NotFound => None,
            Err(error) => return Err(scan_error(&path.join(BASE_FILE_NAME))(error)),
        };
        let files = stored_wal_files(&path)?;
        distinct_names.extend(files.iter().map(|(n, _, _)| n.clone()));
        let segments = || {
            files
                .iter()
                .filter(|(n, _, _)| matches!(n.kind(), WalFileKind::Segment | WalFileKind::Partial))
        };
        let newest_file_at = files
            .iter()
            .map(|(_, _, at)| *at)
            .chain(base.map(|(_, at)| at))
            .max()
            .unwrap_or(name.as_millis());
        // The same rule as the machine's (S-4.7): segments and history files say which
        // timelines a directory's WAL is on.
        let timelines = files
            .iter()
            .filter(|(n, _, _)| matches!(n.kind(), WalFileKind::Segment | WalFileKind::History))
            .map(|(n, _, _)| n.timeline())
            .fold(None, |span: Option<(u32, u32)>, timeline| {
                Some(span.map_or((timeline, timeline), |(lowest, highest)| {
                    (lowest.min(timeline), highest.max(timeline))
                }))
            });
        directories.push(ScannedDirectory {
            name,
            base,
            timelines,
            wal_files: files.len() as u64,
            wal_bytes: files.iter().map(|(_, bytes, _)| bytes).sum(),
            first_wal: segments().next().map(|(n, _, _)| n.clone()),
            last_wal: segments().next_back().map(|(n, _, _)| n.clone()),
            newest_file_at,
        });
    }
    directories.sort_by_key(|d| d.name);
    let current_link = current_link_target(pgbak);
    Ok(TreeScan {
        directories,
        current_link,
        distinct_wal_files: distinct_names.len() as u64,
    })
}

/// The directory `$PGBAK/current` names, if it is a symlink to a directory name (whatever it
/// points at otherwise, or a missing link, is `None`).
pub fn current_link_target(pgbak: &Path) -> Option<DirectoryName> {
    fs::read_link(pgbak.join(CURRENT_LINK_NAME))
        .ok()
        .and_then(|target| target.to_str().and_then(DirectoryName::parse))
}

/// The bytes removing `names` (`TIMESTAMP/` directories of `pgbak`) would free (S-8.3): the
/// blocks of every file under them whose every hard link is under them too. A WAL file linked
/// into a directory that stays (S-2.7 links a file into every open directory) frees nothing.
/// A directory that is missing counts as nothing.
pub fn bytes_freed_by_removing(pgbak: &Path, names: &[DirectoryName]) -> Result<u64, ScanError> {
    use std::collections::BTreeMap;
    use std::os::unix::fs::MetadataExt;
    // (device, inode) -> (links seen under `names`, links in all, bytes on disk)
    let mut files: BTreeMap<(u64, u64), (u64, u64, u64)> = BTreeMap::new();
    let mut pending: Vec<PathBuf> = names
        .iter()
        .map(|name| pgbak.join(name.to_string()))
        .collect();
    while let Some(path) = pending.pop() {
        let metadata = match fs::symlink_metadata(&path) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(scan_error(&path)(error)),
        };
        if metadata.is_dir() {
            for entry in fs::read_dir(&path).map_err(scan_error(&path))? {
                pending.push(entry.map_err(scan_error(&path))?.path());
            }
            continue;
        }
        let entry = files.entry((metadata.dev(), metadata.ino())).or_insert((
            0,
            metadata.nlink(),
            metadata.blocks().saturating_mul(512),
        ));
        entry.0 += 1;
    }
    Ok(files
        .values()
        .filter(|(seen, links, _)| seen >= links)
        .map(|(_, _, bytes)| bytes)
        .sum())
}

/// Gaps in the sequence of complete segments of one timeline: `(after, before)` pairs of
/// consecutive stored segments with missing ones between them (S-6.4). Partial segments and
/// history files do not count; a timeline switch is not a gap.
pub fn segment_gaps(
    files: &[(WalFileName, u64, UnixMillis)],
    segment_size_bytes: u64,
) -> Vec<(WalFileName, WalFileName)> {
    let segments: Vec<(&WalFileName, (u32, u64))> = files
        .iter()
        .filter(|(n, _, _)| n.kind() == WalFileKind::Segment)
        .filter_map(|(n, _, _)| Some((n, n.segment_position(segment_size_bytes)?)))
        .collect();
    segments
        .windows(2)
        .filter(|pair| pair[0].1.0 == pair[1].1.0 && pair[1].1.1 > pair[0].1.1 + 1)
        .map(|pair| (pair[0].0.clone(), pair[1].0.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{DirectoryPhase, State};

    fn scratch(name: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("pgbak-scan-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        path
    }

    #[test]
    fn scan_finds_our_directories_and_ignores_everything_else() {
        let root = scratch("tree");
        let complete = root.join("20261124T154307Z");
        fs::create_dir_all(complete.join("pg_wal")).unwrap();
        fs::write(complete.join("base.tzst"), b"base").unwrap();
        for name in [
            "000000010000000000000003",
            "000000010000000000000004",
            "00000002.history",
        ] {
            fs::write(complete.join("pg_wal").join(format!("{name}.zst")), b"zz").unwrap();
        }
        fs::write(complete.join("pg_wal").join("junk.zst"), b"x").unwrap();
        let pending = root.join("20261125T000000Z");
        fs::create_dir_all(pending.join("pg_wal")).unwrap();
        fs::create_dir_all(root.join("scripts")).unwrap();
        fs::create_dir_all(root.join("2026-11-24")).unwrap();
        std::os::unix::fs::symlink("20261124T154307Z", root.join("current")).unwrap();

        let scan = scan(&root).unwrap();
        assert_eq!(scan.directories.len(), 2);
        let first = &scan.directories[0];
        assert_eq!(first.base.map(|(bytes, _)| bytes), Some(4));
        assert_eq!(first.wal_files, 3);
        assert_eq!(first.wal_bytes, 6);
        assert_eq!(
            first.last_wal.as_ref().unwrap().as_str(),
            "000000010000000000000004"
        );
        assert_eq!(scan.current_link, DirectoryName::parse("20261124T154307Z"));
        // The history file of timeline 2 beside segments of timeline 1 (S-4.7).
        assert_eq!(first.timelines, Some((1, 2)));
        assert_eq!(scan.directories[1].timelines, None);

        let state = State::rebuilt_from(&scan);
        assert_eq!(
            state.directories[&first.name].phase,
            DirectoryPhase::Current
        );
        assert_eq!(
            state.directories[&scan.directories[1].name].phase,
            DirectoryPhase::Failed
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn removing_a_directory_frees_only_what_is_linked_nowhere_else() {
        let root = scratch("freed");
        let old = root.join("20261124T154307Z");
        let new = root.join("20261125T000000Z");
        fs::create_dir_all(old.join("pg_wal")).unwrap();
        fs::create_dir_all(new.join("pg_wal")).unwrap();
        fs::write(old.join("base.tzst"), vec![1u8; 64 << 10]).unwrap();
        let shared = old.join("pg_wal").join("000000010000000000000003.zst");
        fs::write(&shared, vec![2u8; 64 << 10]).unwrap();
        fs::hard_link(
            &shared,
            new.join("pg_wal").join("000000010000000000000003.zst"),
        )
        .unwrap();
        let old_name = DirectoryName::parse("20261124T154307Z").unwrap();
        let new_name = DirectoryName::parse("20261125T000000Z").unwrap();
        let only_old = bytes_freed_by_removing(&root, &[old_name]).unwrap();
        assert!((64 << 10..128 << 10).contains(&only_old), "{only_old}");
        let both = bytes_freed_by_removing(&root, &[old_name, new_name]).unwrap();
        assert!(both >= 128 << 10, "{both}");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn gaps_are_found_within_a_timeline_only() {
        let file = |n: &str| (WalFileName::parse(n).unwrap(), 1, UnixMillis(0));
        let files = [
            file("000000010000000000000001"),
            file("000000010000000000000002"),
            file("000000010000000000000005"),
            file("000000020000000000000006"),
            file("00000002.history"),
        ];
        let gaps = segment_gaps(&files, 16 << 20);
        assert_eq!(gaps.len(), 1);
        assert_eq!(gaps[0].0.as_str(), "000000010000000000000002");
        assert_eq!(gaps[0].1.as_str(), "000000010000000000000005");
    }
}
