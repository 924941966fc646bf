//! Steps 2 and 3 of the archive path (S-2.2): read the input once and compress it into an
//! unnamed `O_TMPFILE` in `$PGBAK`, one zstd frame per window of `COMPRESS_WINDOW_BYTES`.
//!
//! Invariants: the journal lock is never held here (S-2.6); memory stays one window of input
//! plus one frame of output whatever the segment size; the frames are of one version of the
//! file (its stamp is compared before and after the read).

use std::io::{self, Write};
use zstd::zstd_safe::CParameter;

use super::ArchiveError;
use super::COMPRESS_WINDOW_BYTES;
use super::error::storage_error;
use super::input::WalInput;
use super::input::map_window;
use crate::config::Config;
use crate::home::environment::PgbakHome;
use crate::os::durable::{PRIVATE_FILE_MODE, UnnamedFile};

/// The input, compressed, in an unnamed file in `$PGBAK`, fsynced on the first link.
pub(super) struct Compressed {
    pub(super) file: UnnamedFile,
    pub(super) bytes: u64,
}

/// Step 3: the input, a window of [`COMPRESS_WINDOW_BYTES`] at a time, each window one zstd
/// frame with its content size and checksum (S-2.2), into an unnamed file.
pub(super) fn compress(
    home: &PgbakHome,
    config: &Config,
    input: &WalInput,
) -> Result<Compressed, ArchiveError> {
    let mut file = UnnamedFile::create_in(&home.path, PRIVATE_FILE_MODE).map_err(|source| {
        storage_error(home, input, "cannot create the compressed file", source)
    })?;
    let setup = |source: io::Error| ArchiveError::Compression {
        name: input.name(),
        source,
    };
    let write_error = |source: io::Error| {
        storage_error(
            home,
            input,
            format!(
                "cannot write the compressed file in {}",
                home.path.display()
            ),
            source,
        )
    };
    // One blocking ZSTD_compress2 per window, not the streaming encoder: in multithreaded mode
    // a streaming `compressStream2(e_continue)` returns at once when every worker is busy, so a
    // write loop spins on the main thread and takes a core from the workers (measured: 69 ms
    // instead of 43 ms per 16 MiB segment on 2 cores); compress2 waits for its jobs on a
    // condition variable. A 16 MiB segment is one window, so one frame, as before windows.
    let mut compressor =
        zstd::bulk::Compressor::new(config.wal.compression_level).map_err(setup)?;
    for parameter in [
        CParameter::ChecksumFlag(true),
        CParameter::ContentSizeFlag(true),
        CParameter::NbWorkers(config.wal.compression_threads),
    ] {
        compressor.set_parameter(parameter).map_err(setup)?;
    }
    // compressBound of one window: never too small, and only the pages actually written become
    // resident. Reused for every window, so it is the only output buffer.
    let mut frame = Vec::new();
    let mut offset = 0u64;
    loop {
        let length = usize::try_from((input.size - offset).min(COMPRESS_WINDOW_BYTES as u64))
            .unwrap_or(COMPRESS_WINDOW_BYTES);
        let window =
            map_window(&input.file, offset, length).map_err(|source| ArchiveError::Unreadable {
                path: input.path.clone(),
                source,
            })?;
        frame.clear();
        frame.reserve(zstd::zstd_safe::compress_bound(length));
        compressor
            .compress_to_buffer(&window[..], &mut frame)
            .map_err(setup)?;
        // Unmapped before the next window is mapped: at most one window is resident.
        drop(window);
        file.write_all(&frame).map_err(write_error)?;
        offset += length as u64;
        if offset >= input.size {
            break;
        }
    }
    input.check_unchanged()?;
    file.flush()
        .map_err(|source| storage_error(home, input, "cannot write the compressed file", source))?;
    let bytes = file
        .file()
        .metadata()
        .map_err(|source| storage_error(home, input, "cannot stat the compressed file", source))?
        .len();
    Ok(Compressed { file, bytes })
}
