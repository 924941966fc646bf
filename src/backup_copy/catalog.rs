//! [`WalIndex`]: every archived WAL file of a source's pool, and where it is.
//!
//! Owns: the listing of `pg_wal/*.zst` in the pool, the small-file reads (timeline history and
//! backup history files, decompressed whole: they are a few hundred bytes), and the segment
//! size, read from the long page header of an archived segment ([`WalIndex::segment_size`]).
//!
//! Invariants: read-only. A name maps to its first location in pool order (newest directory
//! first), so the chain check and `restore-wal` pick the same file. Only regular files count:
//! an entry named like a WAL file that is a link, a directory or a device is never followed, it
//! is listed in [`WalIndex::irregular`]. Two copies of one name with different compressed sizes
//! (a name reused by a new series, S-2.9, or a damaged copy) are listed in
//! [`WalIndex::conflicting`]; the index keeps the first. Every decompression is bounded.

use super::backup_history::BackupHistory;
use super::error::BackupCopyError;
use super::history::TimelineHistory;
use super::lsn::SegmentSize;
use crate::archive::{describe_file_type, stored_content_bytes};
use crate::home::names::WAL_DIRECTORY_NAME;
use crate::wal_header::{LONG_PAGE_HEADER_BYTES, LongPageHeader};
use crate::wal_name::{WalFileKind, WalFileName};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A history or backup history file larger than this is not one (PostgreSQL writes one line
/// per timeline switch, or about ten lines).
pub const SMALL_FILE_BYTES_MAX: u64 = 1 << 20;
/// Segments [`WalIndex::segment_size`] tries before it falls back to the default.
const SEGMENT_SIZE_PROBES_MAX: usize = 4;

/// Where one archived file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalLocation {
    /// The `.zst` file.
    pub path: PathBuf,
    pub compressed_bytes: u64,
}

/// An entry of `pg_wal/` named like a WAL file that is not a regular file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrregularEntry {
    pub path: PathBuf,
    pub what: &'static str,
}

/// Two copies of one name that differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictingCopies {
    pub name: WalFileName,
    pub kept: PathBuf,
    pub other: PathBuf,
}

/// The segment size and what it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSizeFinding {
    pub size: SegmentSize,
    /// The segment whose header said so; `None` when no header could be read (the default).
    pub from: Option<WalFileName>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalIndex {
    files: BTreeMap<WalFileName, WalLocation>,
    pub irregular: Vec<IrregularEntry>,
    pub conflicting: Vec<ConflictingCopies>,
}

impl WalIndex {
    /// Lists `pg_wal/*.zst` of every directory of `pool` (newest first). A directory without
    /// `pg_wal/` holds no WAL; any other error reading the pool is an error (a restore must not
    /// decide on half a listing).
    pub fn build(pool: &[PathBuf]) -> Result<WalIndex, BackupCopyError> {
        let mut index = WalIndex::default();
        for directory in pool {
            let wal_directory = directory.join(WAL_DIRECTORY_NAME);
            let unreadable = |path: &Path| {
                let path = path.to_owned();
                move |source| BackupCopyError::Unreadable { path, source }
            };
            let entries = match fs::read_dir(&wal_directory) {
                Ok(entries) => entries,
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => return Err(unreadable(&wal_directory)(error)),
            };
            for entry in entries {
                let entry = entry.map_err(unreadable(&wal_directory))?;
                let file_name = entry.file_name();
                let Some(name) = file_name
                    .to_str()
                    .and_then(|n| n.strip_suffix(".zst"))
                    .and_then(WalFileName::parse)
                else {
                    continue;
                };
                let path = entry.path();
                // DirEntry::metadata does not follow a symbolic link.
                let metadata = entry.metadata().map_err(unreadable(&path))?;
                if !metadata.is_file() {
                    let what = describe_file_type(metadata.file_type());
                    index.irregular.push(IrregularEntry { path, what });
                    continue;
                }
                index.add(name, path, metadata.len());
            }
        }
        index.irregular.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(index)
    }

    fn add(&mut self, name: WalFileName, path: PathBuf, compressed_bytes: u64) {
        match self.files.get(&name) {
            Some(kept) if kept.compressed_bytes != compressed_bytes => {
                self.conflicting.push(ConflictingCopies {
                    name,
                    kept: kept.path.clone(),
                    other: path,
                });
            }
            Some(_) => {}
            None => {
                self.files.insert(
                    name,
                    WalLocation {
                        path,
                        compressed_bytes,
                    },
                );
            }
        }
    }

    /// An index of the given names, each at `/pool/NAME.zst` (for the pure deciders' tests).
    #[cfg(test)]
    pub(crate) fn of_names(names: &[&str]) -> WalIndex {
        let mut index = WalIndex::default();
        for name in names {
            let name = WalFileName::parse(name).expect("test names are WAL file names");
            let path = PathBuf::from("/pool").join(name.compressed_name());
            index.add(name, path, 1);
        }
        index
    }

    pub fn location(&self, name: &WalFileName) -> Option<&WalLocation> {
        self.files.get(name)
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Every name, in name order.
    pub fn names(&self) -> impl Iterator<Item = &WalFileName> {
        self.files.keys()
    }

    /// The names of one kind on one timeline, in name order (which is WAL order).
    pub fn on_timeline(
        &self,
        timeline: u32,
        kind: WalFileKind,
    ) -> impl Iterator<Item = &WalFileName> {
        self.names()
            .filter(move |name| name.kind() == kind && name.timeline() == timeline)
    }

    /// Every timeline that a segment, partial segment or history file names.
    pub fn timelines(&self) -> std::collections::BTreeSet<u32> {
        self.names()
            .filter(|n| n.kind() != WalFileKind::BackupHistory)
            .map(WalFileName::timeline)
            .collect()
    }

    /// Every timeline history file in the pool, parsed, by timeline.
    pub fn histories(&self) -> Result<BTreeMap<u32, TimelineHistory>, BackupCopyError> {
        let mut histories = BTreeMap::new();
        for name in self.names().filter(|n| n.kind() == WalFileKind::History) {
            let path = &self.files[name].path;
            let text = read_small_text(path)?;
            let history = TimelineHistory::parse(name.timeline(), &text).map_err(|source| {
                BackupCopyError::BadHistory {
                    path: path.clone(),
                    source,
                }
            })?;
            histories.insert(name.timeline(), history);
        }
        Ok(histories)
    }

    /// The segment size: from the long page header of the first archived segment (or partial
    /// segment) whose header is plausible, else PostgreSQL's default of 16 MiB. Only the first
    /// bytes of a segment are decompressed.
    pub fn segment_size(&self) -> SegmentSizeFinding {
        let probes = self
            .names()
            .filter(|n| matches!(n.kind(), WalFileKind::Segment | WalFileKind::Partial))
            .take(SEGMENT_SIZE_PROBES_MAX);
        for name in probes {
            let Ok(Some(header)) = read_long_page_header(&self.files[name].path) else {
                continue;
            };
            if let Some(size) = SegmentSize::new(u64::from(header.segment_size_bytes)) {
                return SegmentSizeFinding {
                    size,
                    from: Some(name.clone()),
                };
            }
        }
        SegmentSizeFinding {
            size: SegmentSize::DEFAULT,
            from: None,
        }
    }
}

/// Opens a stored file for reading without following a link and without blocking on a FIFO.
pub(crate) fn open_regular(path: &Path) -> Result<File, BackupCopyError> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| match fs::symlink_metadata(path) {
            Ok(metadata) if !metadata.is_file() => BackupCopyError::NotRegularFile {
                path: path.to_owned(),
                what: describe_file_type(metadata.file_type()),
            },
            _ => BackupCopyError::Unreadable {
                path: path.to_owned(),
                source,
            },
        })?;
    let metadata = file
        .metadata()
        .map_err(|source| BackupCopyError::Unreadable {
            path: path.to_owned(),
            source,
        })?;
    if !metadata.is_file() {
        return Err(BackupCopyError::NotRegularFile {
            path: path.to_owned(),
            what: describe_file_type(metadata.file_type()),
        });
    }
    Ok(file)
}

/// Decompresses a small stored file whole (a history or backup history file), refusing more
/// than [`SMALL_FILE_BYTES_MAX`] bytes or text that is not UTF-8.
pub fn read_small_text(path: &Path) -> Result<String, BackupCopyError> {
    let damaged = |source| BackupCopyError::Damaged {
        path: path.to_owned(),
        source,
    };
    let file = open_regular(path)?;
    let decoder = zstd::stream::read::Decoder::new(file).map_err(damaged)?;
    let mut bytes = Vec::new();
    decoder
        .take(SMALL_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(damaged)?;
    if bytes.len() as u64 > SMALL_FILE_BYTES_MAX {
        return Err(BackupCopyError::TooLarge {
            path: path.to_owned(),
            limit_bytes: SMALL_FILE_BYTES_MAX,
        });
    }
    String::from_utf8(bytes)
        .map_err(|_| damaged(io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text")))
}

/// The long page header at the start of a stored segment, decompressing only its first bytes;
/// `Ok(None)` when the header is not plausible or the frames do not record their sizes.
pub fn read_long_page_header(path: &Path) -> Result<Option<LongPageHeader>, BackupCopyError> {
    let unreadable = |source| BackupCopyError::Unreadable {
        path: path.to_owned(),
        source,
    };
    let file = open_regular(path)?;
    // The header must agree with the file's decompressed size, which the frame headers record.
    let Some(content_bytes) = stored_content_bytes(path).map_err(unreadable)? else {
        return Ok(None);
    };
    let decoder = zstd::stream::read::Decoder::new(file).map_err(unreadable)?;
    let mut header = Vec::with_capacity(LONG_PAGE_HEADER_BYTES);
    decoder
        .take(LONG_PAGE_HEADER_BYTES as u64)
        .read_to_end(&mut header)
        .map_err(|source| BackupCopyError::Damaged {
            path: path.to_owned(),
            source,
        })?;
    Ok(LongPageHeader::parse(&header, content_bytes))
}

/// The backup history file of the base backup in `directory`: the one with the lowest start
/// LSN among those in the directory's own `pg_wal/`. Why the lowest: a directory receives WAL
/// from the moment its base backup starts (it is pending then, S-4.1), so the first base backup
/// to end while it is open is its own; later ones are the next directories' bases.
pub fn base_backup_history(
    directory: &Path,
) -> Result<Option<(WalFileName, BackupHistory)>, BackupCopyError> {
    let index = WalIndex::build(&[directory.to_owned()])?;
    let mut found: Option<(WalFileName, BackupHistory)> = None;
    for name in index
        .names()
        .filter(|n| n.kind() == WalFileKind::BackupHistory)
    {
        let path = &index.files[name].path;
        let history = BackupHistory::parse(&read_small_text(path)?).map_err(|source| {
            BackupCopyError::BadBackupHistory {
                path: path.clone(),
                source,
            }
        })?;
        if found
            .as_ref()
            .is_none_or(|(_, kept)| history.start < kept.start)
        {
            found = Some((name.clone(), history));
        }
    }
    Ok(found)
}

#[cfg(test)]
pub(crate) mod fixture {
    //! Builds backup directories with real zstd files, for the tests of this room.
    use super::*;
    use crate::backup_copy::lsn::SegmentSize;

    /// Writes `pg_wal/NAME.zst` holding `content` into `directory`.
    pub(crate) fn stored(directory: &Path, name: &str, content: &[u8]) -> PathBuf {
        let wal = directory.join(WAL_DIRECTORY_NAME);
        fs::create_dir_all(&wal).unwrap();
        let path = wal.join(format!("{name}.zst"));
        fs::write(&path, zstd::bulk::compress(content, 1).unwrap()).unwrap();
        path
    }

    /// A segment of `size` whose long page header agrees with its name.
    pub(crate) fn segment(directory: &Path, name: &str, size: SegmentSize) -> PathBuf {
        let parsed = WalFileName::parse(name).unwrap();
        let segno = size.segment_number(&parsed).unwrap();
        let mut bytes = vec![0u8; usize::try_from(size.bytes()).unwrap()];
        LongPageHeader {
            timeline: parsed.timeline(),
            page_address: size.segment_start(segno).0,
            system_identifier: 7_301_234_567,
            segment_size_bytes: u32::try_from(size.bytes()).unwrap(),
        }
        .write_to(&mut bytes);
        stored(directory, name, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{segment, stored};
    use super::*;
    use crate::test_support::ScratchDirectory;

    #[test]
    fn indexes_the_pool_newest_first_and_reports_what_it_skips() {
        let scratch = ScratchDirectory::new("catalog-index");
        let (older, newer) = (
            scratch.0.join("20261201T000000Z"),
            scratch.0.join("20261202T000000Z"),
        );
        stored(&older, "000000010000000000000002", b"old copy");
        stored(&older, "000000010000000000000003", b"three");
        stored(&newer, "000000010000000000000003", b"three");
        stored(
            &newer,
            "000000010000000000000002",
            b"a different, longer content",
        );
        stored(
            &newer,
            "00000002.history",
            b"1\t0/3000100\tno recovery target specified\n",
        );
        fs::write(newer.join("pg_wal/notes.zst"), b"x").unwrap();
        fs::write(newer.join("pg_wal/000000010000000000000004"), b"x").unwrap();
        std::os::unix::fs::symlink(
            "/etc/passwd",
            newer.join("pg_wal/000000010000000000000005.zst"),
        )
        .unwrap();
        fs::create_dir(newer.join("pg_wal/000000010000000000000006.zst")).unwrap();
        let pending = scratch.0.join("20261203T000000Z");
        fs::create_dir(&pending).unwrap();

        let index = WalIndex::build(&[pending, newer.clone(), older.clone()]).unwrap();
        assert_eq!(index.len(), 3);
        let two = WalFileName::parse("000000010000000000000002").unwrap();
        assert!(index.location(&two).unwrap().path.starts_with(&newer));
        assert_eq!(index.conflicting.len(), 1);
        assert_eq!(
            index.conflicting[0].other,
            older.join("pg_wal/000000010000000000000002.zst")
        );
        let irregular: Vec<_> = index.irregular.iter().map(|e| e.what).collect();
        assert_eq!(irregular, ["a symbolic link", "a directory"]);
        assert_eq!(index.timelines().into_iter().collect::<Vec<_>>(), [1, 2]);
        let histories = index.histories().unwrap();
        assert_eq!(histories[&2].begin().0, 0x300_0100);
    }

    #[test]
    fn the_segment_size_comes_from_an_archived_header() {
        let scratch = ScratchDirectory::new("catalog-size");
        let size = SegmentSize::new(1 << 20).unwrap();
        segment(&scratch.0, "000000010000000000000010", size);
        let index = WalIndex::build(std::slice::from_ref(&scratch.0)).unwrap();
        let finding = index.segment_size();
        assert_eq!(finding.size, size);
        assert_eq!(finding.from.unwrap().as_str(), "000000010000000000000010");
        // Without a readable header: PostgreSQL's default.
        let other = ScratchDirectory::new("catalog-size-default");
        stored(&other.0, "000000010000000000000010", b"not a segment");
        let index = WalIndex::build(std::slice::from_ref(&other.0)).unwrap();
        assert_eq!(
            index.segment_size(),
            SegmentSizeFinding {
                size: SegmentSize::DEFAULT,
                from: None
            }
        );
    }

    #[test]
    fn small_reads_are_bounded_and_refuse_damage() {
        let scratch = ScratchDirectory::new("catalog-small");
        let big = stored(
            &scratch.0,
            "00000002.history",
            &vec![b'#'; (SMALL_FILE_BYTES_MAX + 1) as usize],
        );
        assert!(matches!(
            read_small_text(&big),
            Err(BackupCopyError::TooLarge { .. })
        ));
        let cut = scratch.0.join("pg_wal/00000003.history.zst");
        fs::write(&cut, &fs::read(&big).unwrap()[..20]).unwrap();
        assert!(matches!(
            read_small_text(&cut),
            Err(BackupCopyError::Damaged { .. })
        ));
        let link = scratch.0.join("pg_wal/00000004.history.zst");
        std::os::unix::fs::symlink(&big, &link).unwrap();
        assert!(matches!(
            read_small_text(&link),
            Err(BackupCopyError::NotRegularFile { .. })
        ));
    }

    #[test]
    fn the_base_backup_history_is_the_directorys_first() {
        let scratch = ScratchDirectory::new("catalog-backup");
        let own =
            "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTART TIMELINE: 1\n";
        let next =
            "START WAL LOCATION: 0/9000028 (file 000000010000000000000009)\nSTART TIMELINE: 1\n";
        stored(
            &scratch.0,
            "000000010000000000000009.00000028.backup",
            next.as_bytes(),
        );
        stored(
            &scratch.0,
            "000000010000000000000002.00000028.backup",
            own.as_bytes(),
        );
        let (name, history) = base_backup_history(&scratch.0).unwrap().unwrap();
        assert_eq!(name.as_str(), "000000010000000000000002.00000028.backup");
        assert_eq!(history.start.0, 0x200_0028);
        let empty = ScratchDirectory::new("catalog-backup-none");
        assert_eq!(base_backup_history(&empty.0).unwrap(), None);
    }
}
