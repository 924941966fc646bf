//! A `NAME.zst` that is already stored (S-2.4): compare it, frame by frame, with the file
//! this call compressed, and make an identical one durable.
//!
//! Invariants: a stored file is never overwritten; it is opened only after its type was
//! checked and non-blocking all the same, so a FIFO never hangs `wal`; it is compared in
//! `COMPARE_CHUNK_BYTES` pieces, never decompressed whole.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use super::COMPARE_CHUNK_BYTES;
use super::input::describe_file_type;
use crate::os::durable::{self};

/// Whether a stored `NAME.zst` holds exactly the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Comparison {
    Identical {
        compressed_bytes: u64,
    },
    /// How it differs, as the end of "… already exists and …".
    Different(String),
}

/// Opens a stored file (`NAME.zst`, a copy in `conflicts/`) for reading, or says what else it
/// is. The type is checked before the open, so a FIFO or a device is never opened, and the open
/// is non-blocking all the same, so a FIFO swapped in between cannot hang `wal`.
pub(super) fn open_stored(path: &Path) -> io::Result<Result<File, &'static str>> {
    let metadata = std::fs::metadata(path)?;
    if !metadata.is_file() {
        return Ok(Err(describe_file_type(metadata.file_type())));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)?;
    let opened = file.metadata()?;
    if !opened.is_file() {
        return Ok(Err(describe_file_type(opened.file_type())));
    }
    Ok(Ok(file))
}

/// Reads a file from a position of its own with `pread`, so the unnamed file's offset (which
/// `link_or_copy` rewinds) is never shared.
pub(super) struct PositionedReader<'a> {
    pub(super) file: &'a File,
    pub(super) offset: u64,
}

impl Read for PositionedReader<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.file.read_at(buffer, self.offset)?;
        self.offset += read as u64;
        Ok(read)
    }
}

/// Reads until `buffer` is full or the stream ends; the count read.
pub(super) fn fill(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// Whether two files hold the same bytes (compared as stored, not decompressed).
pub(super) fn same_bytes(left: &File, right: &File) -> io::Result<bool> {
    let mut left = PositionedReader {
        file: left,
        offset: 0,
    };
    let mut right = PositionedReader {
        file: right,
        offset: 0,
    };
    let mut left_buffer = vec![0u8; COMPARE_CHUNK_BYTES];
    let mut right_buffer = vec![0u8; COMPARE_CHUNK_BYTES];
    loop {
        let left_read = fill(&mut left, &mut left_buffer)?;
        let right_read = fill(&mut right, &mut right_buffer)?;
        if left_buffer[..left_read] != right_buffer[..right_read] {
            return Ok(false);
        }
        if left_read == 0 {
            return Ok(true);
        }
    }
}

/// Compares the stored file at `path` with `ours`, the compressed input this call wrote
/// (`source_bytes` long decompressed): the bytes compared are the bytes stored, from the one
/// read of the input. Byte-identical files are identical; otherwise both are decompressed, every
/// frame (S-2.2), piece by piece, never whole. Decoding errors of the stored file (a damaged
/// file, a bad checksum, not zstd at all) and a file that is not a regular file are a
/// difference; failing to open or read it is an `Err`.
pub(super) fn compare_stored(
    path: &Path,
    ours: &File,
    source_bytes: u64,
) -> io::Result<Comparison> {
    let existing = match open_stored(path)? {
        Ok(file) => file,
        Err(what) => {
            return Ok(Comparison::Different(format!(
                "is {what}, not a regular file"
            )));
        }
    };
    let compressed_bytes = existing.metadata()?.len();
    if compressed_bytes == ours.metadata()?.len() && same_bytes(&existing, ours)? {
        return Ok(Comparison::Identical { compressed_bytes });
    }
    let stored_reader = PositionedReader {
        file: &existing,
        offset: 0,
    };
    let mut theirs = match zstd::stream::read::Decoder::new(stored_reader) {
        Ok(decoder) => decoder,
        Err(error) => return Ok(Comparison::Different(format!("cannot be decoded: {error}"))),
    };
    let mut mine = zstd::stream::read::Decoder::new(PositionedReader {
        file: ours,
        offset: 0,
    })?;
    let mut their_buffer = vec![0u8; COMPARE_CHUNK_BYTES];
    let mut my_buffer = vec![0u8; COMPARE_CHUNK_BYTES];
    let mut offset = 0u64;
    loop {
        let mine_read = fill(&mut mine, &mut my_buffer)?;
        let theirs_read = match fill(&mut theirs, &mut their_buffer) {
            Ok(read) => read,
            Err(error) if error.raw_os_error().is_some() => return Err(error),
            Err(error) => {
                return Ok(Comparison::Different(format!(
                    "cannot be decompressed ({error}) after {offset} bytes"
                )));
            }
        };
        let common = mine_read.min(theirs_read);
        if my_buffer[..common] != their_buffer[..common] {
            return Ok(Comparison::Different("holds different content".to_string()));
        }
        if theirs_read > mine_read {
            return Ok(Comparison::Different(format!(
                "holds more than the {source_bytes} bytes of the new file"
            )));
        }
        if theirs_read < mine_read {
            return Ok(Comparison::Different(format!(
                "holds {} bytes, the new file {source_bytes}",
                offset + theirs_read as u64
            )));
        }
        if mine_read == 0 {
            return Ok(Comparison::Identical { compressed_bytes });
        }
        offset += common as u64;
    }
}

/// S-2.4: the existing copy may come from a call that crashed before its fsyncs.
pub(super) fn make_existing_durable(path: &Path) -> io::Result<()> {
    match open_stored(path)? {
        Ok(file) => file.sync_all()?,
        Err(what) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: is {what}, not a regular file", path.display()),
            ));
        }
    }
    let wal_directory = path.parent().unwrap_or(Path::new("."));
    durable::fsync_directory(wal_directory)?;
    if let Some(directory) = wal_directory.parent() {
        durable::fsync_directory(directory)?;
    }
    Ok(())
}
