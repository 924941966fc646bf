//! The names `pgbak wal` accepts (S-2.1), classified.
//!
//! Owns: [`WalFileName`], a validated file name, and [`WalFileKind`].
//!
//! Invariants: a `WalFileName` is always one of the four forms PostgreSQL's archiver hands to
//! `archive_command` (see `src/include/access/xlog_internal.h`: `IsXLogFileName`,
//! `IsPartialXLogFileName`, `IsTLHistoryFileName`, `IsBackupHistoryFileName`), with upper-case
//! hex digits exactly as PostgreSQL writes them. So it never contains `/`, never starts with `.`,
//! and is safe to join onto a directory path.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Hex digits in a segment name: timeline (8), log (8), segment (8).
pub const SEGMENT_NAME_LENGTH: usize = 24;
/// Hex digits in a timeline history file name.
pub const TIMELINE_NAME_LENGTH: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum WalFileKind {
    /// `000000010000000000000003`: a complete WAL segment.
    Segment,
    /// `000000010000000000000003.partial`: the last, incomplete segment of an old timeline.
    Partial,
    /// `00000002.history`: a timeline history file.
    History,
    /// `000000010000000000000003.00000028.backup`: a backup history file.
    BackupHistory,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WalFileName {
    name: String,
    kind: WalFileKind,
}

fn is_upper_hex(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

impl WalFileName {
    /// Classifies `name`, or `None` if it is not a name PostgreSQL archives.
    pub fn parse(name: &str) -> Option<WalFileName> {
        let hex_of_length = |text: &str, length: usize| text.len() == length && is_upper_hex(text);
        let kind = if hex_of_length(name, SEGMENT_NAME_LENGTH) {
            WalFileKind::Segment
        } else if let Some(segment) = name.strip_suffix(".partial") {
            hex_of_length(segment, SEGMENT_NAME_LENGTH).then_some(WalFileKind::Partial)?
        } else if let Some(timeline) = name.strip_suffix(".history") {
            hex_of_length(timeline, TIMELINE_NAME_LENGTH).then_some(WalFileKind::History)?
        } else if let Some(rest) = name.strip_suffix(".backup") {
            let (segment, offset) = rest.split_once('.')?;
            (hex_of_length(segment, SEGMENT_NAME_LENGTH)
                && hex_of_length(offset, TIMELINE_NAME_LENGTH))
            .then_some(WalFileKind::BackupHistory)?
        } else {
            return None;
        };
        Some(WalFileName {
            name: name.to_owned(),
            kind,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> WalFileKind {
        self.kind
    }

    /// The timeline this file belongs to: the first eight hex digits of every form PostgreSQL
    /// archives (a history file `00000002.history` names the timeline it starts; a `.partial`
    /// or `.backup` file, the timeline of its segment). Timeline 0 does not exist in
    /// PostgreSQL, but the name still parses, so this never fails.
    pub fn timeline(&self) -> u32 {
        u32::from_str_radix(&self.name[0..8], 16).unwrap_or(0)
    }

    /// The segment this file belongs to, for segments, partial segments and backup history
    /// files: (timeline, segment number counted across log files). `None` for history files.
    pub fn segment_position(&self, segment_size_bytes: u64) -> Option<(u32, u64)> {
        if self.kind == WalFileKind::History {
            return None;
        }
        let hex = |range: std::ops::Range<usize>| u64::from_str_radix(&self.name[range], 16).ok();
        let timeline = u32::try_from(hex(0..8)?).ok()?;
        let log = hex(8..16)?;
        let segment = hex(16..24)?;
        // A log file spans 4 GiB (PostgreSQL's XLogSegmentsPerXLogId).
        let segments_per_log = 0x1_0000_0000 / segment_size_bytes.max(1);
        Some((timeline, log * segments_per_log + segment))
    }

    /// The stored file's name: `X.zst` (S-2.2).
    pub fn compressed_name(&self) -> String {
        format!("{}.zst", self.name)
    }
}

impl fmt::Display for WalFileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl TryFrom<String> for WalFileName {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        WalFileName::parse(&name).ok_or_else(|| format!("not a WAL file name: {name:?}"))
    }
}

impl From<WalFileName> for String {
    fn from(name: WalFileName) -> String {
        name.name
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for WalFileName {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let kind: WalFileKind = u.arbitrary()?;
        let timeline: u8 = u.arbitrary()?;
        let segment: u16 = u.arbitrary()?;
        let base = format!("{:08X}{:08X}{:08X}", u32::from(timeline) + 1, 0, segment);
        let name = match kind {
            WalFileKind::Segment => base,
            WalFileKind::Partial => format!("{base}.partial"),
            WalFileKind::History => format!("{:08X}.history", u32::from(timeline) + 1),
            WalFileKind::BackupHistory => format!("{base}.00000028.backup"),
        };
        Ok(WalFileName::parse(&name).expect("generated names are valid"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_form_names_its_timeline() {
        for (name, timeline) in [
            ("000000010000000000000003", 1),
            ("0000000A00000001000000FE.partial", 10),
            ("00000002.history", 2),
            ("000000030000000000000003.00000028.backup", 3),
        ] {
            assert_eq!(
                WalFileName::parse(name).unwrap().timeline(),
                timeline,
                "{name}"
            );
        }
    }

    #[test]
    fn accepts_the_four_forms_of_s_2_1() {
        let cases = [
            ("000000010000000000000003", WalFileKind::Segment),
            ("0000000A00000001000000FE.partial", WalFileKind::Partial),
            ("00000002.history", WalFileKind::History),
            (
                "000000010000000000000003.00000028.backup",
                WalFileKind::BackupHistory,
            ),
        ];
        for (name, kind) in cases {
            assert_eq!(
                WalFileName::parse(name).map(|n| n.kind()),
                Some(kind),
                "{name}"
            );
        }
    }

    #[test]
    fn refuses_everything_else() {
        for name in [
            "",
            "00000001000000000000003",
            "0000000100000000000000033",
            "00000001000000000000000g",
            "00000001000000000000000a",
            "000000010000000000000003.zst",
            "000000010000000000000003.partial.zst",
            "0000002.history",
            "000000010000000000000003.0000028.backup",
            "../00000002.history",
            "000000010000000000000003/",
            ".history",
            "RECOVERYHISTORY",
        ] {
            assert!(WalFileName::parse(name).is_none(), "{name:?}");
        }
    }

    #[test]
    fn segment_positions_count_across_log_files() {
        let name = WalFileName::parse("000000020000000100000003").unwrap();
        assert_eq!(name.segment_position(16 << 20), Some((2, 256 + 3)));
        assert_eq!(
            WalFileName::parse("00000002.history")
                .unwrap()
                .segment_position(16 << 20),
            None
        );
    }

    proptest! {
        #[test]
        fn every_segment_name_round_trips(timeline in 1u32.., log in 0u32.., segment in 0u32..256) {
            let text = format!("{timeline:08X}{log:08X}{segment:08X}");
            let name = WalFileName::parse(&text).unwrap();
            prop_assert_eq!(name.as_str(), text.as_str());
            let encoded = postcard::to_stdvec(&name).unwrap();
            prop_assert_eq!(postcard::from_bytes::<WalFileName>(&encoded).unwrap(), name);
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,48}") {
            if let Some(name) = WalFileName::parse(&text) {
                prop_assert!(!name.as_str().contains('/'));
            }
        }
    }
}
