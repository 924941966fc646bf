//! Timeline history files (`00000002.history`): which timeline a timeline forked from, and where.
//!
//! Owns: [`TimelineHistory`] and [`TimelineHistory::parse`]. Pure: text in, entries out.
//!
//! Format (PostgreSQL's `writeTimeLineHistory` writes it, `readTimeLineHistory` reads it, in
//! `src/backend/access/transam/timeline.c`): one line per ancestor, oldest first,
//! `parentTLI<TAB>switchpoint<TAB>reason`, the switchpoint printed `%X/%X`; blank lines and lines
//! starting with `#` (after leading white space) are comments. The file of timeline N lists the
//! whole ancestry of N: its parent's line last. Timeline IDs increase from line to line and are
//! all below N. The reason is free text (it is kept, never interpreted).
//!
//! Invariant: a parsed history obeys those rules; anything else is an error naming the line,
//! because a history file pgbak misreads would make it follow the wrong WAL.

use super::lsn::Lsn;

/// One ancestor: timeline `timeline` ran until `switchpoint`, where its child took over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub timeline: u32,
    pub switchpoint: Lsn,
    pub reason: String,
}

/// The parsed history file of `timeline`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineHistory {
    pub timeline: u32,
    /// Oldest ancestor first; the last entry is the parent.
    pub entries: Vec<HistoryEntry>,
}

/// A line of a history file that is not what PostgreSQL writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct HistoryProblem {
    pub line: usize,
    pub problem: String,
}

impl TimelineHistory {
    /// Parses the text of `timeline`'s history file.
    pub fn parse(timeline: u32, text: &str) -> Result<TimelineHistory, HistoryProblem> {
        let mut entries: Vec<HistoryEntry> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let problem = |problem: String| HistoryProblem {
                line: index + 1,
                problem,
            };
            let line = raw.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // PostgreSQL reads `%u\t%X/%X` with sscanf, where a tab matches any white space.
            let mut fields = line.splitn(3, |c: char| c.is_ascii_whitespace());
            let parent = fields.next().unwrap_or_default();
            let parent: u32 = parent.parse().map_err(|_| {
                problem(format!("expected a numeric timeline ID, found {parent:?}"))
            })?;
            let switchpoint = fields.next().unwrap_or_default().trim_start();
            let switchpoint = Lsn::parse(switchpoint).ok_or_else(|| {
                problem(format!(
                    "expected a switchpoint X/Y after the timeline ID, found {switchpoint:?}"
                ))
            })?;
            if entries.last().is_some_and(|last| last.timeline >= parent) {
                return Err(problem(
                    "timeline IDs must increase from line to line".to_owned(),
                ));
            }
            if entries
                .last()
                .is_some_and(|last| last.switchpoint > switchpoint)
            {
                return Err(problem(
                    "switchpoints must not decrease from line to line".to_owned(),
                ));
            }
            if parent >= timeline {
                return Err(problem(format!(
                    "timeline {parent} is not below the file's own timeline {timeline}"
                )));
            }
            entries.push(HistoryEntry {
                timeline: parent,
                switchpoint,
                reason: fields.next().unwrap_or_default().trim().to_owned(),
            });
        }
        Ok(TimelineHistory { timeline, entries })
    }

    /// Where this timeline begins: its parent's switchpoint (timeline 1, or a history without
    /// entries, begins at 0).
    pub fn begin(&self) -> Lsn {
        self.entries
            .last()
            .map_or(Lsn(0), |entry| entry.switchpoint)
    }

    /// The ancestry from `ancestor` on, as (timeline, begin, end) spans in order, this timeline
    /// last with no end. `None` when `ancestor` is neither this timeline nor in its history.
    pub fn spans_from(&self, ancestor: u32) -> Option<Vec<TimelineSpan>> {
        if ancestor == self.timeline {
            return Some(vec![TimelineSpan {
                timeline: self.timeline,
                begin: self.begin(),
                end: None,
            }]);
        }
        let first = self.entries.iter().position(|e| e.timeline == ancestor)?;
        let mut spans = Vec::new();
        for (index, entry) in self.entries.iter().enumerate().skip(first) {
            let begin = index
                .checked_sub(1)
                .map_or(Lsn(0), |before| self.entries[before].switchpoint);
            spans.push(TimelineSpan {
                timeline: entry.timeline,
                begin,
                end: Some(entry.switchpoint),
            });
        }
        spans.push(TimelineSpan {
            timeline: self.timeline,
            begin: self.begin(),
            end: None,
        });
        Some(spans)
    }

    /// Where `ancestor` ended in this history (its child's switchpoint), if it is an ancestor.
    pub fn end_of(&self, ancestor: u32) -> Option<Lsn> {
        self.entries
            .iter()
            .find(|entry| entry.timeline == ancestor)
            .map(|entry| entry.switchpoint)
    }

    /// Where `ancestor` began according to this history, if this history says so: its own
    /// begin for this timeline, the previous entry's switchpoint for an ancestor.
    pub fn begin_of(&self, ancestor: u32) -> Option<Lsn> {
        if ancestor == self.timeline {
            return Some(self.begin());
        }
        let index = self.entries.iter().position(|e| e.timeline == ancestor)?;
        Some(
            index
                .checked_sub(1)
                .map_or(Lsn(0), |before| self.entries[before].switchpoint),
        )
    }
}

/// A stretch of WAL on one timeline: from `begin` to `end` (exclusive; `None`: still going).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelineSpan {
    pub timeline: u32,
    pub begin: Lsn,
    pub end: Option<Lsn>,
}

/// A failover, as the archive holds it: timeline 1 up to segment 4 and its last segment as
/// `.partial`, the history file of timeline 2 ([`SWITCH_TO_2`]: switch at 0/5000100, inside
/// segment 5), timeline 2 from segment 5 to 7. For the tests of this room.
#[cfg(test)]
pub(crate) const FAILOVER_FILES: &[&str] = &[
    "000000010000000000000001",
    "000000010000000000000002",
    "000000010000000000000003",
    "000000010000000000000004",
    "000000010000000000000005.partial",
    "00000002.history",
    "000000020000000000000005",
    "000000020000000000000006",
    "000000020000000000000007",
];
#[cfg(test)]
pub(crate) const SWITCH_TO_2: &str = "1\t0/5000100\tno recovery target specified\n";

/// The parsed history files of `(timeline, text)` pairs, for the tests of this room.
#[cfg(test)]
pub(crate) fn histories_of(
    files: &[(u32, &str)],
) -> std::collections::BTreeMap<u32, TimelineHistory> {
    files
        .iter()
        .map(|(timeline, text)| (*timeline, TimelineHistory::parse(*timeline, text).unwrap()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What PostgreSQL 15 writes after two promotions.
    const THIRD: &str = "1\t0/5000100\tno recovery target specified\n\n\
                         2\t0/9000060\tat restore point \"before upgrade\"\n";

    #[test]
    fn reads_what_postgresql_writes() {
        let history = TimelineHistory::parse(3, THIRD).unwrap();
        assert_eq!(history.entries.len(), 2);
        assert_eq!(history.entries[0].timeline, 1);
        assert_eq!(history.entries[0].switchpoint, Lsn(0x500_0100));
        assert_eq!(
            history.entries[1].reason,
            "at restore point \"before upgrade\""
        );
        assert_eq!(history.begin(), Lsn(0x900_0060));
        assert_eq!(history.end_of(1), Some(Lsn(0x500_0100)));
        assert_eq!(history.begin_of(2), Some(Lsn(0x500_0100)));
        assert_eq!(history.begin_of(1), Some(Lsn(0)));
        assert_eq!(history.begin_of(4), None);
    }

    #[test]
    fn comments_and_blank_lines_are_skipped() {
        let text = "# made by hand\n   \n  # indented comment\n1 0/3000000 reason with  spaces\n";
        let history = TimelineHistory::parse(2, text).unwrap();
        assert_eq!(history.entries.len(), 1);
        assert_eq!(history.entries[0].reason, "reason with  spaces");
        assert_eq!(TimelineHistory::parse(2, "").unwrap().begin(), Lsn(0));
    }

    #[test]
    fn spans_follow_the_ancestry_from_the_base_timeline() {
        let history = TimelineHistory::parse(3, THIRD).unwrap();
        let spans = history.spans_from(2).unwrap();
        assert_eq!(
            spans,
            vec![
                TimelineSpan {
                    timeline: 2,
                    begin: Lsn(0x500_0100),
                    end: Some(Lsn(0x900_0060))
                },
                TimelineSpan {
                    timeline: 3,
                    begin: Lsn(0x900_0060),
                    end: None
                },
            ]
        );
        assert_eq!(history.spans_from(1).unwrap().len(), 3);
        assert_eq!(history.spans_from(3).unwrap().len(), 1);
        assert_eq!(history.spans_from(4), None);
    }

    #[test]
    fn refuses_what_postgresql_would_not_write() {
        for (text, line) in [
            ("x\t0/1\treason\n", 1),
            ("1\n", 1),
            ("1\t0/zz\n", 1),
            ("1\t0/5000000\tr\n1\t0/6000000\tr\n", 2),
            ("2\t0/5000000\tr\n1\t0/6000000\tr\n", 2),
            ("1\t0/6000000\tr\n2\t0/5000000\tr\n", 2),
            ("# ok\n3\t0/5000000\tr\n", 2),
        ] {
            let error = TimelineHistory::parse(3, text).unwrap_err();
            assert_eq!(error.line, line, "{text:?}: {error}");
        }
    }
}
