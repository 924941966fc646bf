//! One archived WAL file, decompressed and verified: [`decompress_verified`] (into any
//! writer, for the WAL pool) and [`restore_one`] (into a path, durably: the `restore_command`'s
//! write, S-8.1.1).
//!
//! Invariants:
//! - The zstd stream is read whole, every frame (libzstd checks each frame's checksum), and
//!   nothing after it; a decode error is damage ([`RestoreWalError::Damaged`]), a failed read of
//!   the file is not (it may pass: [`RestoreWalError::Io`]).
//! - A segment (or `.partial`) is exactly the segment size, and its long page header agrees
//!   with its name: the timeline (or an older one: the switch segment of a new timeline starts
//!   with the old timeline's pages), and the page address = the first byte of the segment the
//!   name gives. Nothing more is read than the size allows (a huge stream is stopped, not
//!   decompressed whole). A timeline history or backup history file is taken whole, up to
//!   [`HISTORY_FILE_SIZE_MAX_BYTES`].
//! - [`restore_one`] writes under a temporary name next to the destination, fsyncs it, renames
//!   it and fsyncs the directory: PostgreSQL sees the file complete or not at all. On any
//!   failure the temporary file is removed.

use crate::archive::{
    HISTORY_FILE_SIZE_MAX_BYTES, WAL_SEGMENT_SIZE_MAX_BYTES, WAL_SEGMENT_SIZE_MIN_BYTES,
};
use crate::restore::error::{RestoreWalError, WalDamage};
use crate::wal_header::{LONG_PAGE_HEADER_BYTES, LongPageHeader};
use crate::wal_name::{WalFileKind, WalFileName};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Bytes decompressed and written at a time.
pub(crate) const CHUNK_BYTES: usize = 1 << 20;
/// Bytes of the compressed file read at a time.
const READ_BUFFER_BYTES: usize = 256 * 1024;
/// Offset of `xlp_seg_size` in the long page header (see `crate::wal_header`).
const SEGMENT_SIZE_OFFSET: usize = 32;

/// Decompresses `source_zst` (the archived copy of `name`) into `out`, checking it as the
/// module header says; `out_path` names `out` in messages. `segment_size`: the cluster's WAL
/// segment size, or `None` to take it from the segment's own long page header (then it must
/// be a size PostgreSQL allows). Returns the bytes written.
pub fn decompress_verified(
    source_zst: &Path,
    name: &WalFileName,
    segment_size: Option<u64>,
    out: &mut impl Write,
    out_path: &Path,
) -> Result<u64, RestoreWalError> {
    let damaged = |problem| RestoreWalError::Damaged {
        source_zst: source_zst.to_owned(),
        name: name.clone(),
        problem,
    };
    let file = File::open(source_zst).map_err(RestoreWalError::io("opening", source_zst))?;
    let mut source_failed = None;
    let mut decoder = zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(
        READ_BUFFER_BYTES,
        TaggedSource {
            file,
            failed: &mut source_failed,
        },
    ))
    .map_err(RestoreWalError::io("starting to decompress", source_zst))?;
    let mut read_chunk = |buffer: &mut [u8]| -> Result<usize, RestoreWalError> {
        loop {
            match decoder.read(buffer) {
                Ok(read) => return Ok(read),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    // The tag is set only when the file itself failed to read.
                    let file_failed = decoder.get_ref().get_ref().failed.is_some();
                    return Err(if file_failed {
                        RestoreWalError::Io {
                            path: source_zst.to_owned(),
                            operation: "reading",
                            source: error,
                        }
                    } else {
                        damaged(WalDamage::Decode(error.to_string()))
                    });
                }
            }
        }
    };
    let is_segment = matches!(name.kind(), WalFileKind::Segment | WalFileKind::Partial);
    let mut buffer = vec![0u8; CHUNK_BYTES];
    // The first chunk: at least the long page header, unless the stream is shorter.
    let mut filled = 0;
    while filled < LONG_PAGE_HEADER_BYTES {
        let read = read_chunk(&mut buffer[filled..])?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    let limit = if is_segment {
        let size = match segment_size {
            Some(size) => size,
            None => segment_size_from_header(&buffer[..filled]).ok_or_else(|| {
                damaged(WalDamage::NoLongPageHeader {
                    detail: " (no segment size PostgreSQL allows in it)".into(),
                })
            })?,
        };
        check_header(name, &buffer[..filled], size).map_err(damaged)?;
        size
    } else {
        HISTORY_FILE_SIZE_MAX_BYTES
    };
    let mut total = 0u64;
    let mut chunk = filled;
    loop {
        if chunk == 0 {
            chunk = read_chunk(&mut buffer)?;
            if chunk == 0 {
                break;
            }
        }
        total += chunk as u64;
        if total > limit {
            return Err(damaged(if is_segment {
                WalDamage::WrongSize {
                    expected: limit,
                    found: total,
                }
            } else {
                WalDamage::TooLarge {
                    limit,
                    expected: "a history file of a few hundred bytes",
                }
            }));
        }
        out.write_all(&buffer[..chunk])
            .map_err(RestoreWalError::io("writing", out_path))?;
        chunk = 0;
    }
    if is_segment && total != limit {
        return Err(damaged(WalDamage::WrongSize {
            expected: limit,
            found: total,
        }));
    }
    Ok(total)
}

/// The archived file, remembering whether reading it failed (see [`decompress_verified`]).
struct TaggedSource<'a> {
    file: File,
    failed: &'a mut Option<io::ErrorKind>,
}

impl Read for TaggedSource<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        self.file
            .read(buffer)
            .inspect_err(|error| *self.failed = Some(error.kind()))
    }
}

/// `xlp_seg_size` of a segment's first bytes, if it is a size PostgreSQL allows.
fn segment_size_from_header(first: &[u8]) -> Option<u64> {
    let bytes = first.get(SEGMENT_SIZE_OFFSET..SEGMENT_SIZE_OFFSET + 4)?;
    let size = u64::from(u32::from_le_bytes(bytes.try_into().ok()?));
    (size.is_power_of_two()
        && (WAL_SEGMENT_SIZE_MIN_BYTES..=WAL_SEGMENT_SIZE_MAX_BYTES).contains(&size))
    .then_some(size)
}

/// The long page header at the start of a segment agrees with its name.
fn check_header(name: &WalFileName, first: &[u8], segment_size: u64) -> Result<(), WalDamage> {
    let header =
        LongPageHeader::parse(first, segment_size).ok_or_else(|| WalDamage::NoLongPageHeader {
            detail: format!(" for a segment of {segment_size} bytes"),
        })?;
    let (timeline, segment_number) = name
        .segment_position(segment_size)
        .expect("segments and partial segments have a position");
    // The first segment of a new timeline begins with a copy of the old timeline's pages up to
    // the switch point (PostgreSQL copies them at promotion), so its first page header may name
    // an older timeline; never a newer one.
    if header.timeline > timeline || header.timeline == 0 {
        return Err(WalDamage::WrongTimeline {
            expected: timeline,
            found: header.timeline,
        });
    }
    let expected = segment_number * segment_size;
    if header.page_address != expected {
        return Err(WalDamage::WrongPageAddress {
            expected: lsn_text(expected),
            found: lsn_text(header.page_address),
        });
    }
    Ok(())
}

/// An LSN as PostgreSQL prints it (`%X/%X`).
fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// The `restore_command`'s write: `source_zst` decompressed, verified, and put at `dest_path`
/// complete and durable (see the module header). Returns the bytes written.
pub fn restore_one(
    source_zst: &Path,
    name: &WalFileName,
    dest_path: &Path,
    segment_size: Option<u64>,
) -> Result<u64, RestoreWalError> {
    let directory = match dest_path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let file_name = dest_path
        .file_name()
        .ok_or_else(|| RestoreWalError::Io {
            path: dest_path.to_owned(),
            operation: "writing",
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a file path"),
        })?
        .to_string_lossy()
        .into_owned();
    let temporary = directory.join(format!(".{file_name}.pgbak-{}", std::process::id()));
    let written = write_temporary(source_zst, name, segment_size, &temporary)
        .and_then(|written| {
            fs::rename(&temporary, dest_path)
                .map_err(RestoreWalError::io("renaming into place", dest_path))?;
            Ok(written)
        })
        .inspect_err(|_| {
            let _ = fs::remove_file(&temporary);
        })?;
    crate::os::durable::fsync_directory(&directory)
        .map_err(RestoreWalError::io("syncing the directory", &directory))?;
    Ok(written)
}

fn write_temporary(
    source_zst: &Path,
    name: &WalFileName,
    segment_size: Option<u64>,
    temporary: &Path,
) -> Result<u64, RestoreWalError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_CLOEXEC)
        .open(temporary)
        .map_err(RestoreWalError::io("creating", temporary))?;
    let written = decompress_verified(source_zst, name, segment_size, &mut file, temporary)?;
    file.sync_all()
        .map_err(RestoreWalError::io("syncing", temporary))?;
    Ok(written)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::test_support::ScratchDirectory;

    pub(crate) const SEGMENT_SIZE: u64 = 1 << 20;

    /// A segment of `SEGMENT_SIZE` bytes whose header agrees with `name` (or says `timeline`
    /// and `page_address` where given).
    pub(crate) fn segment_bytes(name: &str, lie: Option<(u32, u64)>) -> Vec<u8> {
        let (timeline, number) = WalFileName::parse(name)
            .unwrap()
            .segment_position(SEGMENT_SIZE)
            .unwrap();
        let (timeline, page_address) = lie.unwrap_or((timeline, number * SEGMENT_SIZE));
        let mut bytes = vec![0x5A; SEGMENT_SIZE as usize];
        LongPageHeader {
            timeline,
            page_address,
            system_identifier: 7_301_234_567,
            segment_size_bytes: SEGMENT_SIZE as u32,
        }
        .write_to(&mut bytes);
        bytes
    }

    /// `bytes` compressed into `directory/NAME.zst`, in frames of 256 KiB like `pgbak wal`.
    pub(crate) fn archived(directory: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let mut compressed = Vec::new();
        for frame in bytes.chunks(256 * 1024) {
            compressed.extend(zstd::encode_all(frame, 1).unwrap());
        }
        if bytes.is_empty() {
            compressed = zstd::encode_all(&[][..], 1).unwrap();
        }
        let path = directory.join(format!("{name}.zst"));
        fs::write(&path, compressed).unwrap();
        path
    }

    fn decompress(
        source: &Path,
        name: &str,
        segment_size: Option<u64>,
    ) -> Result<Vec<u8>, RestoreWalError> {
        let mut out = Vec::new();
        decompress_verified(
            source,
            &WalFileName::parse(name).unwrap(),
            segment_size,
            &mut out,
            Path::new("out"),
        )?;
        Ok(out)
    }

    fn damage(result: Result<Vec<u8>, RestoreWalError>) -> WalDamage {
        match result {
            Err(RestoreWalError::Damaged { problem, .. }) => problem,
            other => panic!("expected damage, got {:?}", other.map(|bytes| bytes.len())),
        }
    }

    const NAME: &str = "000000010000000000000003";

    #[test]
    fn a_good_segment_decompresses_whole_with_or_without_a_known_size() {
        let scratch = ScratchDirectory::new("wal-file-good");
        let bytes = segment_bytes(NAME, None);
        let source = archived(&scratch.0, NAME, &bytes);
        assert_eq!(
            decompress(&source, NAME, Some(SEGMENT_SIZE)).unwrap(),
            bytes
        );
        assert_eq!(decompress(&source, NAME, None).unwrap(), bytes);
    }

    #[test]
    fn a_segment_of_the_wrong_size_is_damaged() {
        let scratch = ScratchDirectory::new("wal-file-size");
        let mut bytes = segment_bytes(NAME, None);
        bytes.truncate(bytes.len() - 8192);
        let source = archived(&scratch.0, NAME, &bytes);
        let problem = damage(decompress(&source, NAME, Some(SEGMENT_SIZE)));
        assert_eq!(
            problem,
            WalDamage::WrongSize {
                expected: SEGMENT_SIZE,
                found: SEGMENT_SIZE - 8192
            }
        );
        let mut long = segment_bytes(NAME, None);
        long.extend_from_slice(&[0; 100]);
        let source = archived(&scratch.0, NAME, &long);
        assert!(matches!(
            damage(decompress(&source, NAME, Some(SEGMENT_SIZE))),
            WalDamage::WrongSize { found, .. } if found > SEGMENT_SIZE
        ));
    }

    #[test]
    fn the_switch_segment_of_a_new_timeline_may_begin_with_the_old_timelines_header() {
        // After a promotion in the middle of segment 3, `00000002…03` starts with the pages of
        // timeline 1 that PostgreSQL copied over: its first header says timeline 1.
        let scratch = ScratchDirectory::new("wal-file-switch");
        let switch = "000000020000000000000003";
        let source = archived(
            &scratch.0,
            switch,
            &segment_bytes(switch, Some((1, 3 * SEGMENT_SIZE))),
        );
        assert_eq!(
            decompress(&source, switch, Some(SEGMENT_SIZE))
                .unwrap()
                .len() as u64,
            SEGMENT_SIZE
        );
    }

    #[test]
    fn a_header_disagreeing_with_the_name_is_damaged() {
        let scratch = ScratchDirectory::new("wal-file-header");
        let source = archived(
            &scratch.0,
            NAME,
            &segment_bytes(NAME, Some((2, 3 * SEGMENT_SIZE))),
        );
        assert_eq!(
            damage(decompress(&source, NAME, Some(SEGMENT_SIZE))),
            WalDamage::WrongTimeline {
                expected: 1,
                found: 2
            }
        );
        let source = archived(
            &scratch.0,
            NAME,
            &segment_bytes(NAME, Some((1, 4 * SEGMENT_SIZE))),
        );
        let problem = damage(decompress(&source, NAME, Some(SEGMENT_SIZE)));
        assert_eq!(
            problem,
            WalDamage::WrongPageAddress {
                expected: "0/300000".into(),
                found: "0/400000".into()
            }
        );
        assert_eq!(
            problem.to_string(),
            "its page header says page address 0/400000, expected 0/300000 (the start of the segment its name gives)"
        );
        let source = archived(&scratch.0, NAME, &vec![0; SEGMENT_SIZE as usize]);
        assert!(matches!(
            damage(decompress(&source, NAME, Some(SEGMENT_SIZE))),
            WalDamage::NoLongPageHeader { .. }
        ));
        assert!(matches!(
            damage(decompress(&source, NAME, None)),
            WalDamage::NoLongPageHeader { .. }
        ));
    }

    #[test]
    fn a_damaged_or_truncated_stream_is_damaged_not_io() {
        let scratch = ScratchDirectory::new("wal-file-stream");
        let source = archived(&scratch.0, NAME, &segment_bytes(NAME, None));
        let compressed = fs::read(&source).unwrap();
        fs::write(&source, &compressed[..compressed.len() / 2]).unwrap();
        assert!(matches!(
            damage(decompress(&source, NAME, Some(SEGMENT_SIZE))),
            WalDamage::Decode(_) | WalDamage::WrongSize { .. }
        ));
        let mut flipped = compressed.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0xFF;
        fs::write(&source, &flipped).unwrap();
        assert!(
            decompress(&source, NAME, Some(SEGMENT_SIZE))
                .unwrap_err()
                .is_damaged()
        );
        fs::write(&source, b"not zstd at all").unwrap();
        assert!(matches!(
            damage(decompress(&source, NAME, Some(SEGMENT_SIZE))),
            WalDamage::Decode(_)
        ));
        // A missing file is an I/O error, not damage.
        let missing = decompress(&scratch.0.join("missing.zst"), NAME, Some(SEGMENT_SIZE));
        assert!(!missing.unwrap_err().is_damaged());
    }

    #[test]
    fn history_files_are_taken_whole_up_to_the_limit() {
        let scratch = ScratchDirectory::new("wal-file-history");
        let text = b"1\t0/3000000\tno recovery target specified\n";
        let source = archived(&scratch.0, "00000002.history", text);
        assert_eq!(decompress(&source, "00000002.history", None).unwrap(), text);
        let name = "000000010000000000000003.00000028.backup";
        let source = archived(&scratch.0, name, b"START WAL LOCATION: 0/3000028\n");
        assert!(decompress(&source, name, Some(SEGMENT_SIZE)).is_ok());
        let huge = vec![b'x'; HISTORY_FILE_SIZE_MAX_BYTES as usize + 1];
        let source = archived(&scratch.0, "00000003.history", &huge);
        assert!(matches!(
            damage(decompress(&source, "00000003.history", None)),
            WalDamage::TooLarge { .. }
        ));
    }

    #[test]
    fn restore_one_puts_the_file_in_place_whole_or_not_at_all() {
        let scratch = ScratchDirectory::new("wal-file-restore-one");
        let bytes = segment_bytes(NAME, None);
        let source = archived(&scratch.0, NAME, &bytes);
        let pg_wal = scratch.0.join("pg_wal");
        fs::create_dir(&pg_wal).unwrap();
        let dest = pg_wal.join("RECOVERYXLOG");
        // PostgreSQL asks for RECOVERYXLOG again and again: an old one is replaced.
        fs::write(&dest, b"old").unwrap();
        let name = WalFileName::parse(NAME).unwrap();
        assert_eq!(
            restore_one(&source, &name, &dest, Some(SEGMENT_SIZE)).unwrap(),
            SEGMENT_SIZE
        );
        assert_eq!(fs::read(&dest).unwrap(), bytes);
        fs::remove_file(&dest).unwrap();
        let damaged = archived(&scratch.0, NAME, &bytes[..1000]);
        let error = restore_one(&damaged, &name, &dest, Some(SEGMENT_SIZE)).unwrap_err();
        assert!(error.is_damaged(), "{error:?}");
        assert_eq!(
            fs::read_dir(&pg_wal).unwrap().count(),
            0,
            "nothing left behind, not even the temporary file"
        );
    }
}
