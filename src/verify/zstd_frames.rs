//! The zstd frame headers of a stored file (S-8.2), checked as pgbak's encoder writes them:
//! the bits libzstd's decoder does not look at, or that no checksum covers.
//!
//! Owns: [`check_frame_headers`]. Why it exists: zstd's content checksum (XXH64 of the
//! decompressed bytes, RFC 8878 3.1.1) covers the content, and a damaged block fails to decode,
//! but the frame header itself has no checksum. Most header damage still fails decoding (a
//! wrong magic, a reserved bit, a dictionary ID, a content size that disagrees with the
//! content), but two kinds decode to the same bytes and pass libzstd without a word:
//! - the *unused* bit of the frame header descriptor (bit 4), which decoders must ignore;
//! - the window size's *mantissa* (the low three bits of `Window_Descriptor`), when the window
//!   it describes is still large enough for the data.
//!
//! libzstd never sets either (`ZSTD_writeFrameHeader` writes `(windowLog - 10) << 3`), so a set
//! bit there is damage and is reported. Also reported: a frame without the content checksum
//! flag (pgbak always asks for it: without it content damage could pass), and anything after
//! the last frame. One kind of header damage stays invisible by design: a flipped bit of the
//! window *exponent* that makes the window larger (or smaller but still large enough). The
//! decoded content is then identical, so the backup restores exactly as before. The same holds
//! inside compressed blocks, where no header check can help: an entropy table (Huffman
//! weights, FSE probabilities) may describe symbols the block never uses, and a flip there
//! changes no decoded byte. Such flips are harmless by construction (a restore reads the very
//! same bytes); catching them would need a stored hash of the compressed file. The corruption
//! test (`tests/it/e2e_verify.rs`) counts them apart after checking the content is identical.
//!
//! Invariant: read-only, bounded by [`BLOCK_HEADERS_MAX`] block headers per file.

use super::report::Problem;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The zstd frame magic number (RFC 8878, 3.1.1).
const ZSTD_FRAME_MAGIC: u32 = 0xFD2F_B528;
/// Block headers read before giving up: 1 TiB of content in 128 KiB blocks.
const BLOCK_HEADERS_MAX: u64 = 1 << 23;
/// Descriptor bits: reserved (must be 0, the decoder checks), unused (ignored), checksum flag.
const UNUSED_BIT: u8 = 0x10;
const CHECKSUM_FLAG: u8 = 0x04;
const SINGLE_SEGMENT_FLAG: u8 = 0x20;

/// Walks every frame of `file` (at `path`, `length` bytes), as the module header says. I/O
/// errors are returned; damage is a problem (the first one found; later headers are not
/// trustworthy after it).
pub fn check_frame_headers(file: &File, path: &Path, length: u64) -> io::Result<Option<Problem>> {
    let read = |offset: u64, buffer: &mut [u8]| -> io::Result<bool> {
        match file.read_exact_at(buffer, offset) {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(error) => Err(error),
        }
    };
    let damage = |offset: u64, expected: &str, found: String| {
        Some(Problem::new(
            "zstd_frame_header",
            path,
            Some(format!("offset {offset}")),
            expected,
            found,
        ))
    };
    let mut offset = 0u64;
    let mut blocks = 0u64;
    if length == 0 {
        return Ok(damage(0, "a zstd frame", "an empty file".into()));
    }
    while offset < length {
        let mut header = [0u8; 6];
        if !read(offset, &mut header)? {
            return Ok(damage(
                offset,
                "a zstd frame header",
                "the end of the file".into(),
            ));
        }
        let magic = u32::from_le_bytes(header[..4].try_into().expect("four bytes"));
        if magic != ZSTD_FRAME_MAGIC {
            return Ok(damage(
                offset,
                "the zstd frame magic FD2FB528",
                format!("{magic:08X}"),
            ));
        }
        let descriptor = header[4];
        if descriptor & UNUSED_BIT != 0 {
            return Ok(damage(
                offset + 4,
                "the descriptor's unused bit clear (libzstd never sets it)",
                format!("descriptor {descriptor:#04x}"),
            ));
        }
        if descriptor & CHECKSUM_FLAG == 0 {
            return Ok(damage(
                offset + 4,
                "the content checksum flag (pgbak always writes a checksum)",
                format!("descriptor {descriptor:#04x}"),
            ));
        }
        let single_segment = descriptor & SINGLE_SEGMENT_FLAG != 0;
        if !single_segment && header[5] & 0x07 != 0 {
            return Ok(damage(
                offset + 5,
                "a window size mantissa of 0 (libzstd writes only powers of two)",
                format!("window descriptor {:#04x}", header[5]),
            ));
        }
        offset += crate::archive::frame_header_bytes(descriptor);
        loop {
            blocks += 1;
            if blocks > BLOCK_HEADERS_MAX {
                return Ok(damage(offset, "fewer blocks", "more than the limit".into()));
            }
            let mut block = [0u8; 3];
            if !read(offset, &mut block)? {
                return Ok(damage(
                    offset,
                    "a block header",
                    "the end of the file".into(),
                ));
            }
            let block = u32::from(block[0]) | u32::from(block[1]) << 8 | u32::from(block[2]) << 16;
            let size = u64::from(block >> 3);
            offset += 3 + match (block >> 1) & 0b11 {
                0 | 2 => size,
                1 => 1,
                _ => {
                    return Ok(damage(
                        offset,
                        "a raw, RLE or compressed block",
                        "the reserved block type".into(),
                    ));
                }
            };
            if block & 1 != 0 {
                break;
            }
        }
        offset += 4; // the checksum (the flag is set, checked above)
    }
    if offset != length {
        return Ok(damage(
            length,
            format!("the last frame to end at offset {offset}").as_str(),
            format!("the file ends at {length}"),
        ));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::ScratchDirectory;

    fn compressed(content: &[u8]) -> Vec<u8> {
        let mut compressor = zstd::bulk::Compressor::new(3).unwrap();
        compressor
            .set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))
            .unwrap();
        compressor.compress(content).unwrap()
    }

    fn check(bytes: &[u8]) -> Option<Problem> {
        let scratch = ScratchDirectory::new("zstd-frames");
        let path = scratch.0.join("f.zst");
        std::fs::write(&path, bytes).unwrap();
        let file = File::open(&path).unwrap();
        check_frame_headers(&file, &path, bytes.len() as u64).unwrap()
    }

    #[test]
    fn what_libzstd_writes_passes_and_the_bits_it_ignores_are_caught() {
        let content: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut frames = compressed(&content);
        frames.extend(compressed(b"second frame"));
        assert_eq!(check(&frames), None);
        // The unused bit decodes to the same content: only this check sees it.
        let mut unused = frames.clone();
        unused[4] ^= UNUSED_BIT;
        assert_eq!(
            zstd::decode_all(&unused[..]).unwrap().len(),
            content.len() + 12
        );
        let problem = check(&unused).expect("the unused bit is damage");
        assert_eq!(problem.at.as_deref(), Some("offset 4"));
        // No checksum flag, garbage after the last frame, a cut last frame.
        let mut no_checksum = frames.clone();
        no_checksum[4] &= !CHECKSUM_FLAG;
        assert!(check(&no_checksum).is_some());
        let mut trailing = frames.clone();
        trailing.push(0);
        assert!(check(&trailing).is_some());
        assert!(check(&frames[..frames.len() - 1]).is_some());
        assert!(check(&[]).is_some());
    }

    #[test]
    fn a_window_mantissa_is_caught_on_a_streamed_frame() {
        // A streamed frame of unknown size has a Window_Descriptor (like base.tzst).
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        encoder.include_checksum(true).unwrap();
        std::io::Write::write_all(&mut encoder, &[7u8; 100_000]).unwrap();
        let mut frame = encoder.finish().unwrap();
        assert_eq!(frame[4] & SINGLE_SEGMENT_FLAG, 0, "a window descriptor");
        assert_eq!(check(&frame), None);
        frame[5] ^= 0x01;
        assert_eq!(check(&frame).unwrap().at.as_deref(), Some("offset 5"));
    }
}
