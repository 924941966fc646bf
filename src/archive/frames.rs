//! The decompressed size of a stored `.zst`, found by walking its zstd frame and block headers
//! (RFC 8878) without decompressing: what `status` reports for archived bytes.
//!
//! Invariant: bounded by `BLOCK_HEADERS_MAX` headers, so a hostile file cannot make it loop.

use std::io::{self};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::existing::open_stored;

/// The zstd frame magic number (RFC 8878, 3.1.1), and the skippable frames' (3.1.2).
pub(super) const ZSTD_FRAME_MAGIC: u32 = 0xFD2F_B528;
pub(super) const SKIPPABLE_FRAME_MAGIC: u32 = 0x184D_2A50;
pub(super) const SKIPPABLE_FRAME_MAGIC_MASK: u32 = 0xFFFF_FFF0;
/// Block headers [`stored_content_bytes`] reads before it gives up: a 1 GiB segment at level 1
/// has about 8,200 blocks of at most 128 KiB each, and a hostile file must not make it loop.
pub(super) const BLOCK_HEADERS_MAX: usize = 1 << 20;

/// The size of a zstd frame header (RFC 8878, 3.1.1.1) from its Frame_Header_Descriptor byte:
/// magic (4), descriptor (1), window descriptor (1, absent for a single segment), dictionary ID
/// (0, 1, 2 or 4) and frame content size (0/1, 2, 4 or 8).
pub(crate) fn frame_header_bytes(descriptor: u8) -> u64 {
    let single_segment = descriptor & 0x20 != 0;
    let dictionary_id_bytes = [0u64, 1, 2, 4][usize::from(descriptor & 0b11)];
    let content_size_bytes = match descriptor >> 6 {
        0 => u64::from(single_segment),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    5 + u64::from(!single_segment) + dictionary_id_bytes + content_size_bytes
}

/// The decompressed size of a stored `.zst`: the sum of the content sizes of all its frames
/// (S-2.2: one or more, one after the other), found by walking the frame and block headers
/// (RFC 8878, 3.1.1) without decompressing anything. `None` when it is not a regular file, a
/// frame does not record its content size, or the structure is damaged or truncated.
pub fn stored_content_bytes(path: &Path) -> io::Result<Option<u64>> {
    let Ok(file) = open_stored(path)? else {
        return Ok(None);
    };
    let length = file.metadata()?.len();
    let read_exact = |offset: u64, buffer: &mut [u8]| -> io::Result<bool> {
        match file.read_exact_at(buffer, offset) {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(error) => Err(error),
        }
    };
    let mut offset = 0u64;
    let mut total = 0u64;
    let mut block_headers = 0usize;
    while offset < length {
        let mut magic = [0u8; 4];
        if !read_exact(offset, &mut magic)? {
            return Ok(None);
        }
        let magic = u32::from_le_bytes(magic);
        if magic & SKIPPABLE_FRAME_MAGIC_MASK == SKIPPABLE_FRAME_MAGIC {
            let mut size = [0u8; 4];
            if !read_exact(offset + 4, &mut size)? {
                return Ok(None);
            }
            offset += 8 + u64::from(u32::from_le_bytes(size));
            continue;
        }
        if magic != ZSTD_FRAME_MAGIC {
            return Ok(None);
        }
        // A frame header is at most 18 bytes; a shorter file is fine if the frame is short.
        let mut header = [0u8; 18];
        let available = usize::try_from((length - offset).min(18)).unwrap_or(18);
        if !read_exact(offset, &mut header[..available])? {
            return Ok(None);
        }
        let Ok(Some(content_bytes)) = zstd::zstd_safe::get_frame_content_size(&header[..available])
        else {
            return Ok(None);
        };
        let descriptor = header[4];
        let has_checksum = descriptor & 0x04 != 0;
        offset += frame_header_bytes(descriptor);
        loop {
            block_headers += 1;
            if block_headers > BLOCK_HEADERS_MAX {
                return Ok(None);
            }
            let mut block = [0u8; 3];
            if !read_exact(offset, &mut block)? {
                return Ok(None);
            }
            let block = u32::from(block[0]) | u32::from(block[1]) << 8 | u32::from(block[2]) << 16;
            let size = u64::from(block >> 3);
            offset += 3 + match (block >> 1) & 0b11 {
                0 | 2 => size, // raw, compressed
                1 => 1,        // RLE: one byte repeated
                _ => return Ok(None),
            };
            if block & 1 != 0 {
                break;
            }
        }
        if has_checksum {
            offset += 4;
        }
        let Some(sum) = total.checked_add(content_bytes) else {
            return Ok(None);
        };
        total = sum;
    }
    // Past the end: the last frame is cut short.
    Ok((offset == length && length > 0).then_some(total))
}
