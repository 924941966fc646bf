//! A supervised child's output: the drain thread that reads one pipe until end-of-file, cuts it
//! into lines by the caller's [`OutputRules`], hands each line to a [`LineSink`] (the sync log)
//! and keeps the last ones in an [`OutputTail`] (for the journal and `status`).
//!
//! Invariants: memory is bounded whatever the child writes: a line never grows past
//! [`OutputRules::line_max_bytes`], the tail past [`OutputRules::tail_max_bytes`] and
//! [`OutputRules::tail_max_lines`]; the tail's text always starts on a character boundary.
//! Nothing here knows what the lines mean: the sink decides (S-5.1, S-4.6).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Where each output line goes as it is read (the sync log); called on the drain thread, so it
/// must not block for long.
pub type LineSink = Box<dyn FnMut(&str) + Send>;

/// What ends a line cut at [`OutputRules::line_max_bytes`] under [`LongLines::Truncate`].
pub const TRUNCATION_MARK: &str = " […]";

/// How much of the pipe is read at a time.
const READ_CHUNK_BYTES: usize = 8192;

/// What happens to a line longer than [`OutputRules::line_max_bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongLines {
    /// Cut into pieces of that many bytes, each a line of its own (nothing is lost).
    Split,
    /// Kept up to that many bytes, then [`TRUNCATION_MARK`]; the rest of the line is dropped.
    Truncate,
}

/// How one child's output is cut into lines and how much of it is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputRules {
    /// A longer line is cut (a progress bar without newlines must not grow without bound).
    pub line_max_bytes: usize,
    pub long_lines: LongLines,
    /// `\r` ends a line (progress output on a terminal) instead of being trimmed off its end.
    pub carriage_return_ends_line: bool,
    /// Lines of only white space go neither to the sink nor to the tail.
    pub skip_blank_lines: bool,
    /// The tail's text (its lines joined with `\n`) is at most this many bytes…
    pub tail_max_bytes: usize,
    /// … and at most this many lines.
    pub tail_max_lines: usize,
}

/// The last lines of a child's output within [`OutputRules::tail_max_bytes`] and
/// [`OutputRules::tail_max_lines`].
#[derive(Debug)]
pub struct OutputTail {
    lines: VecDeque<String>,
    /// Bytes of `lines` joined with `\n`, i.e. of [`OutputTail::text`].
    bytes: usize,
    max_bytes: usize,
    max_lines: usize,
}

impl OutputTail {
    pub fn new(max_bytes: usize, max_lines: usize) -> OutputTail {
        assert!(max_lines >= 1, "a tail keeps at least one line");
        OutputTail {
            lines: VecDeque::new(),
            bytes: 0,
            max_bytes,
            max_lines,
        }
    }

    /// Appends a line (its end only, if it alone is too long) and drops the oldest lines
    /// until both bounds hold.
    pub fn push(&mut self, line: &str) {
        let line = last_bytes(line, self.max_bytes).to_owned();
        self.bytes += line.len() + usize::from(!self.lines.is_empty());
        self.lines.push_back(line);
        while self.bytes > self.max_bytes || self.lines.len() > self.max_lines {
            let Some(oldest) = self.lines.pop_front() else {
                break;
            };
            self.bytes -= oldest.len() + usize::from(!self.lines.is_empty());
        }
    }

    /// The kept lines, oldest first, joined with `\n`.
    pub fn text(&self) -> String {
        Vec::from(self.lines.clone()).join("\n")
    }
}

/// The last `max_bytes` of `text`, starting on a character boundary.
pub fn last_bytes(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut start = text.len() - max_bytes;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

pub(crate) fn lock_tail(tail: &Mutex<OutputTail>) -> MutexGuard<'_, OutputTail> {
    // A panic on another thread while holding the lock leaves plain data behind, still usable.
    tail.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The drain thread's body: reads `reader` until end-of-file, cutting it into lines by
/// `rules`, each to `sink` and then to `tail`. A read error ends the drain with a line in the
/// tail saying so (`pgbak: reading WHAT: ERROR`).
pub(crate) fn drain_lines(
    mut reader: File,
    rules: OutputRules,
    what: &str,
    mut sink: LineSink,
    tail: &Mutex<OutputTail>,
) {
    let mut line = LineBuilder::new(rules);
    let mut emit = |text: String| {
        sink(&text);
        lock_tail(tail).push(&text);
    };
    let mut buffer = [0u8; READ_CHUNK_BYTES];
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                line.finish().map(&mut emit);
                lock_tail(tail).push(&format!("pgbak: reading {what}: {error}"));
                return;
            }
        };
        for &byte in &buffer[..read] {
            line.push(byte).map(&mut emit);
        }
    }
    line.finish().map(&mut emit);
}

/// Bytes in, complete lines out, by [`OutputRules`].
struct LineBuilder {
    rules: OutputRules,
    partial: Vec<u8>,
    /// Bytes were dropped from `partial` ([`LongLines::Truncate`]).
    truncated: bool,
}

impl LineBuilder {
    fn new(rules: OutputRules) -> LineBuilder {
        assert!(rules.line_max_bytes >= 1, "a line holds at least one byte");
        LineBuilder {
            rules,
            partial: Vec::new(),
            truncated: false,
        }
    }

    /// Takes one byte; returns a line when it completes one.
    fn push(&mut self, byte: u8) -> Option<String> {
        let ends_line = byte == b'\n' || (byte == b'\r' && self.rules.carriage_return_ends_line);
        if ends_line {
            return self.take();
        }
        if self.partial.len() >= self.rules.line_max_bytes {
            // Only under `Truncate`: `Split` never lets the line reach the limit here.
            self.truncated = true;
            return None;
        }
        self.partial.push(byte);
        if self.rules.long_lines == LongLines::Split
            && self.partial.len() >= self.rules.line_max_bytes
        {
            return self.take();
        }
        None
    }

    /// The unterminated last line, if any, at end-of-file.
    fn finish(&mut self) -> Option<String> {
        if self.partial.is_empty() && !self.truncated {
            return None;
        }
        self.take()
    }

    fn take(&mut self) -> Option<String> {
        let mut text = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        if !self.rules.carriage_return_ends_line {
            let kept = text.trim_end_matches('\r').len();
            text.truncate(kept);
        }
        if std::mem::take(&mut self.truncated) {
            text.push_str(TRUNCATION_MARK);
        }
        if self.rules.skip_blank_lines && text.trim().is_empty() {
            return None;
        }
        Some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPLIT: OutputRules = OutputRules {
        line_max_bytes: 8,
        long_lines: LongLines::Split,
        carriage_return_ends_line: false,
        skip_blank_lines: false,
        tail_max_bytes: 64,
        tail_max_lines: usize::MAX,
    };

    fn lines(rules: OutputRules, input: &[u8]) -> Vec<String> {
        let mut builder = LineBuilder::new(rules);
        let mut out: Vec<String> = input.iter().filter_map(|&b| builder.push(b)).collect();
        out.extend(builder.finish());
        out
    }

    #[test]
    fn the_tail_keeps_the_last_bytes_on_a_character_boundary() {
        let mut tail = OutputTail::new(10, usize::MAX);
        tail.push("first");
        // 6 two-byte characters: 12 bytes, more than the whole tail.
        tail.push("éééééé");
        assert_eq!(tail.text(), "ééééé");
        assert_eq!(tail.text().len(), tail.bytes);
        let mut odd = OutputTail::new(8, usize::MAX);
        odd.push("ééééa");
        assert_eq!(odd.text(), "éééa", "never half a character");
        assert_eq!(last_bytes("aé", 1), "");
        assert_eq!(last_bytes("abc", 5), "abc");
    }

    #[test]
    fn the_tail_drops_the_oldest_lines_to_keep_both_bounds() {
        let mut tail = OutputTail::new(19, 3);
        for number in 0..10 {
            tail.push(&format!("line {number}"));
        }
        assert_eq!(
            tail.text(),
            "line 8\nline 9",
            "three lines would be 20 bytes"
        );
        let mut tail = OutputTail::new(1000, 3);
        for number in 0..10 {
            tail.push(&format!("line {number}"));
        }
        assert_eq!(tail.text(), "line 7\nline 8\nline 9");
        assert_eq!(tail.text().len(), tail.bytes);
    }

    #[test]
    fn split_rules_cut_long_lines_into_pieces_and_trim_a_carriage_return() {
        assert_eq!(
            lines(SPLIT, b"0123456789\r\n\nok\r\nlast"),
            ["01234567", "89", "", "ok", "last"]
        );
    }

    #[test]
    fn truncate_rules_mark_cut_lines_split_on_carriage_returns_and_skip_blanks() {
        let rules = OutputRules {
            long_lines: LongLines::Truncate,
            carriage_return_ends_line: true,
            skip_blank_lines: true,
            ..SPLIT
        };
        assert_eq!(
            lines(rules, b"10%\r20%\r\n  \n0123456789abc\nend"),
            ["10%", "20%", "01234567 […]", "end"]
        );
        assert_eq!(lines(rules, b"0123456789"), ["01234567 […]"]);
    }
}
