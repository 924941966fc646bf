//! WAL positions and segment arithmetic: [`Lsn`] (PostgreSQL's `XLogRecPtr`), [`SegmentSize`],
//! and the name of the segment that holds a position.
//!
//! Owns: the text form `X/Y` (PostgreSQL prints an LSN with `%X/%X`: the high and the low 32 bits
//! in upper-case hexadecimal, no padding) and the mapping segment number ↔ name ↔ LSN that
//! PostgreSQL's `XLByteToSeg`, `XLogFileName` and `XLogSegNoOffsetToRecPtr` define
//! (`src/include/access/xlog_internal.h`).
//!
//! Invariants: pure; a [`SegmentSize`] is always a power of two from 1 MiB to 1 GiB (what
//! `initdb --wal-segsize` accepts), so the divisions here never divide by zero and a log file
//! (4 GiB) always holds a whole number of segments.

use crate::wal_name::{WalFileKind, WalFileName};
use std::fmt;

/// A position in the WAL stream (`XLogRecPtr`): bytes since the start of the cluster's WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses `X/Y` as `pg_lsn` input does: one to eight hexadecimal digits on each side of the
    /// slash, either case, nothing else.
    pub fn parse(text: &str) -> Option<Lsn> {
        let (high, low) = text.split_once('/')?;
        let half = |digits: &str| -> Option<u64> {
            let valid =
                (1..=8).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_hexdigit());
            valid
                .then(|| u64::from_str_radix(digits, 16).ok())
                .flatten()
        };
        Some(Lsn(half(high)? << 32 | half(low)?))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// The size of every WAL segment of a cluster (`initdb --wal-segsize`, 16 MiB by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentSize(u64);

/// A log file (the middle eight digits of a segment name) spans 4 GiB of WAL.
const LOG_FILE_BYTES: u64 = 0x1_0000_0000;

impl SegmentSize {
    pub const MIN_BYTES: u64 = 1 << 20;
    pub const MAX_BYTES: u64 = 1 << 30;
    /// PostgreSQL's default, and what pgbak assumes when no archived segment says otherwise.
    pub const DEFAULT: SegmentSize = SegmentSize(16 << 20);

    /// A segment size PostgreSQL can be initialized with, or `None`.
    pub fn new(bytes: u64) -> Option<SegmentSize> {
        (bytes.is_power_of_two() && (Self::MIN_BYTES..=Self::MAX_BYTES).contains(&bytes))
            .then_some(SegmentSize(bytes))
    }

    pub fn bytes(self) -> u64 {
        self.0
    }

    /// `XLogSegmentsPerXLogId`: segments in one log file.
    pub fn segments_per_log(self) -> u64 {
        LOG_FILE_BYTES / self.0
    }

    /// `XLByteToSeg`: the number of the segment that holds `lsn`.
    pub fn segment_of(self, lsn: Lsn) -> u64 {
        lsn.0 / self.0
    }

    /// The first position of segment `segno`.
    pub fn segment_start(self, segno: u64) -> Lsn {
        Lsn(segno.saturating_mul(self.0))
    }

    /// The first position after segment `segno` (the start of the next one).
    pub fn segment_end(self, segno: u64) -> Lsn {
        Lsn(segno.saturating_add(1).saturating_mul(self.0))
    }

    /// `XLogFileName`: the segment's name on `timeline`. `segno` must be below
    /// [`SegmentSize::segment_count`] (the log number must fit eight digits).
    pub fn segment_name(self, timeline: u32, segno: u64) -> WalFileName {
        let per_log = self.segments_per_log();
        let name = format!(
            "{timeline:08X}{:08X}{:08X}",
            segno / per_log,
            segno % per_log
        );
        WalFileName::parse(&name).expect("eight hex digits per field make a segment name")
    }

    /// How many segments a WAL stream of 2^64 bytes has: every valid `segno` is below this.
    pub fn segment_count(self) -> u64 {
        u64::MAX / self.0 + 1
    }

    /// The segment number of a segment, partial segment or backup history file's name, as
    /// [`WalFileName::segment_position`] computes it; `None` for a history file, or when the
    /// segment digits are out of range for this size (`0000000100000000000000FF` is not a
    /// 1 GiB segment).
    pub fn segment_number(self, name: &WalFileName) -> Option<u64> {
        if name.kind() == WalFileKind::History {
            return None;
        }
        let in_log = u64::from_str_radix(&name.as_str()[16..24], 16).ok()?;
        if in_log >= self.segments_per_log() {
            return None;
        }
        name.segment_position(self.0).map(|(_, segno)| segno)
    }
}

impl fmt::Display for SegmentSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} MiB", self.0 >> 20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prints_and_parses_like_postgresql() {
        assert_eq!(Lsn(0x0000_0000_0200_0028).to_string(), "0/2000028");
        assert_eq!(Lsn(0x0000_0001_0000_0000).to_string(), "1/0");
        assert_eq!(Lsn::parse("0/2000028"), Some(Lsn(0x200_0028)));
        assert_eq!(Lsn::parse("16/b374d848"), Some(Lsn(0x16_B374_D848)));
        for bad in [
            "",
            "0",
            "/1",
            "1/",
            "0/123456789",
            "-1/0",
            "0/2000028 ",
            "g/0",
            "0//1",
        ] {
            assert_eq!(Lsn::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn names_segments_as_xlog_file_name_does() {
        let size = SegmentSize::DEFAULT;
        assert_eq!(size.segment_of(Lsn(0x200_0028)), 2);
        assert_eq!(size.segment_name(1, 2).as_str(), "000000010000000000000002");
        // Segment 0x100 of 16 MiB is the first of log file 1.
        assert_eq!(
            size.segment_name(2, 0x100).as_str(),
            "000000020000000100000000"
        );
        let gib = SegmentSize::new(1 << 30).unwrap();
        assert_eq!(gib.segment_name(1, 5).as_str(), "000000010000000100000001");
        let name = WalFileName::parse("0000000100000000000000FF").unwrap();
        assert_eq!(gib.segment_number(&name), None);
        assert_eq!(size.segment_number(&name), Some(0xFF));
    }

    #[test]
    fn only_sizes_initdb_accepts() {
        assert_eq!(SegmentSize::new(16 << 20), Some(SegmentSize::DEFAULT));
        for bad in [0, 1, 512 << 10, 3 << 20, 2 << 30] {
            assert_eq!(SegmentSize::new(bad), None, "{bad}");
        }
    }

    fn any_segment_size() -> impl Strategy<Value = SegmentSize> {
        (20u32..=30).prop_map(|shift| SegmentSize::new(1 << shift).unwrap())
    }

    proptest! {
        #[test]
        fn lsn_text_round_trips(value in any::<u64>()) {
            prop_assert_eq!(Lsn::parse(&Lsn(value).to_string()), Some(Lsn(value)));
        }

        #[test]
        fn segment_names_round_trip(
            size in any_segment_size(),
            timeline in 1u32..,
            fraction in 0.0f64..1.0,
        ) {
            let segno = ((size.segment_count() - 1) as f64 * fraction) as u64;
            let name = size.segment_name(timeline, segno);
            prop_assert_eq!(name.timeline(), timeline);
            prop_assert_eq!(size.segment_number(&name), Some(segno));
            prop_assert_eq!(WalFileName::parse(name.as_str()), Some(name));
        }

        #[test]
        fn an_lsn_lies_in_its_segment(size in any_segment_size(), value in any::<u64>()) {
            let segno = size.segment_of(Lsn(value));
            prop_assert!(size.segment_start(segno) <= Lsn(value));
            prop_assert!(segno == size.segment_count() - 1 || Lsn(value) < size.segment_end(segno));
            let name = size.segment_name(1, segno);
            prop_assert_eq!(size.segment_number(&name), Some(segno));
            prop_assert_eq!(size.segment_of(size.segment_start(segno)), segno);
        }

        #[test]
        fn name_order_is_segment_order(size in any_segment_size(), a in any::<u32>(), b in any::<u32>()) {
            let (na, nb) = (size.segment_name(1, u64::from(a)), size.segment_name(1, u64::from(b)));
            prop_assert_eq!(a.cmp(&b), na.cmp(&nb));
        }
    }
}
