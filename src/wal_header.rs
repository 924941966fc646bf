//! The long page header at the start of every WAL segment, as far as pgbak needs it: which
//! cluster the segment belongs to (S-2.9).
//!
//! Owns: [`LongPageHeader`] and [`LongPageHeader::parse`]. Pure: bytes in, fields out.
//!
//! The layout is PostgreSQL's `XLogLongPageHeaderData` (`src/include/access/xlog_internal.h`),
//! unchanged from 9.x to 18, in the server's byte order (pgbak runs on the server's machine, so
//! that is ours: little-endian on every platform pgbak supports):
//!
//! | offset | size | field            |
//! |-------:|-----:|------------------|
//! |      0 |    2 | `xlp_magic` (changes with every major version; not checked here) |
//! |      2 |    2 | `xlp_info`, bit `XLP_LONG_HEADER` (0x0002) set on a segment's first page |
//! |      4 |    4 | `xlp_tli`        |
//! |      8 |    8 | `xlp_pageaddr`   |
//! |     16 |    4 | `xlp_rem_len`    |
//! |     20 |    4 | padding          |
//! |     24 |    8 | `xlp_sysid`      |
//! |     32 |    4 | `xlp_seg_size`   |
//! |     36 |    4 | `xlp_xlog_blcksz`|
//!
//! Invariant: `parse` returns a header only when the bytes are plausibly one (long-header bit,
//! a non-zero system identifier, a segment size equal to the file's, a block size PostgreSQL
//! can be built with). Anything else is "not recognized", never an error: `wal` then archives
//! the file without the cluster check, as it did before pgbak looked at headers.

/// `XLP_LONG_HEADER` in `xlp_info`.
const XLP_LONG_HEADER: u16 = 0x0002;
/// Bytes of the long header that pgbak reads.
pub const LONG_PAGE_HEADER_BYTES: usize = 40;
/// `--with-blocksize` accepts 1 to 32 kB, powers of two (`XLOG_BLCKSZ` as well).
const XLOG_BLOCK_SIZES: std::ops::RangeInclusive<u32> = 1024..=32768;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongPageHeader {
    pub timeline: u32,
    pub page_address: u64,
    pub system_identifier: u64,
    pub segment_size_bytes: u32,
}

impl LongPageHeader {
    /// The header at the start of `bytes` (a segment's first bytes), if it is one; `file_bytes`
    /// is the size of the whole file, which the header must agree with.
    pub fn parse(bytes: &[u8], file_bytes: u64) -> Option<LongPageHeader> {
        let header = bytes.get(..LONG_PAGE_HEADER_BYTES)?;
        let u16_at = |at: usize| u16::from_le_bytes([header[at], header[at + 1]]);
        let u32_at =
            |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("four bytes"));
        let u64_at =
            |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("eight bytes"));
        let info = u16_at(2);
        let system_identifier = u64_at(24);
        let segment_size_bytes = u32_at(32);
        let block_size = u32_at(36);
        let plausible = info & XLP_LONG_HEADER != 0
            && system_identifier != 0
            && u64::from(segment_size_bytes) == file_bytes
            && block_size.is_power_of_two()
            && XLOG_BLOCK_SIZES.contains(&block_size);
        plausible.then_some(LongPageHeader {
            timeline: u32_at(4),
            page_address: u64_at(8),
            system_identifier,
            segment_size_bytes,
        })
    }
}

impl LongPageHeader {
    /// Writes this header over the first [`LONG_PAGE_HEADER_BYTES`] of `segment`, as PostgreSQL
    /// 15 lays it out (magic `0xD110`, `XLP_LONG_HEADER`, 8 KiB pages): what tests use to make
    /// segments of a chosen cluster. Fields pgbak does not read (`xlp_rem_len`) are zero.
    pub fn write_to(&self, segment: &mut [u8]) {
        let header = &mut segment[..LONG_PAGE_HEADER_BYTES];
        header[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        header[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
        header[4..8].copy_from_slice(&self.timeline.to_le_bytes());
        header[8..16].copy_from_slice(&self.page_address.to_le_bytes());
        header[16..24].fill(0);
        header[24..32].copy_from_slice(&self.system_identifier.to_le_bytes());
        header[32..36].copy_from_slice(&self.segment_size_bytes.to_le_bytes());
        header[36..40].copy_from_slice(&8192u32.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first 40 bytes of a PostgreSQL 15 segment (timeline 1, second segment).
    fn header_bytes(system_identifier: u64, segment_size: u32) -> Vec<u8> {
        let mut bytes = vec![0; LONG_PAGE_HEADER_BYTES];
        LongPageHeader {
            timeline: 1,
            page_address: 0x0100_0000,
            system_identifier,
            segment_size_bytes: segment_size,
        }
        .write_to(&mut bytes);
        bytes
    }

    #[test]
    fn reads_a_long_page_header() {
        let header = LongPageHeader::parse(&header_bytes(7_301_234_567, 16 << 20), 16 << 20);
        assert_eq!(
            header,
            Some(LongPageHeader {
                timeline: 1,
                page_address: 0x0100_0000,
                system_identifier: 7_301_234_567,
                segment_size_bytes: 16 << 20,
            })
        );
    }

    #[test]
    fn anything_implausible_is_not_a_header() {
        let size = 16u32 << 20;
        assert_eq!(LongPageHeader::parse(&[0; 40], u64::from(size)), None);
        assert_eq!(
            LongPageHeader::parse(&header_bytes(1, size)[..39], 16 << 20),
            None
        );
        // The header says 16 MiB, the file is 64 MiB: a renamed or concatenated file.
        assert_eq!(
            LongPageHeader::parse(&header_bytes(1, size), 64 << 20),
            None
        );
        assert_eq!(
            LongPageHeader::parse(&header_bytes(0, size), u64::from(size)),
            None
        );
        let mut short_header = header_bytes(1, size);
        short_header[2] = 0; // XLP_LONG_HEADER cleared
        assert_eq!(LongPageHeader::parse(&short_header, u64::from(size)), None);
    }
}
