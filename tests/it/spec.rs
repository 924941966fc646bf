//! The behaviour contract stays inside the repository: every rule id (`S-n`, `S-n.m`, …) cited
//! in the code, the tests, the fuzz targets, the state diagram or the README is defined in
//! `docs/spec.md`, and no file points at documents outside the repository or at tracker numbers.
//!
//! What counts as a definition (the format `docs/spec.md` follows): a line that starts with
//! `- ` followed by the id and a space (`- S-2.3 The acknowledgement …`), or a Markdown heading
//! line (`#`, outside code blocks) that contains the id (`## S-2 …`, for a group of rules). A cited id is `S-`
//! followed by numbers separated by dots, not preceded by a letter, digit or `_`.
//!
//! The forbidden references are assembled from pieces at run time, so this file, which is
//! scanned like every other, does not contain them and needs no exception.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

const SPEC_PATH: &str = "docs/spec.md";

/// Where rule ids are cited. Directories are walked recursively.
const CITING_PATHS: &[&str] = &[
    "src",
    "tests",
    "fuzz/fuzz_targets",
    "state-diagrams",
    "bench",
    "examples",
    "README.md",
];

/// Where no reference to outside documents may appear. Directories are walked recursively.
const CHECKED_FOR_OUTSIDE_REFERENCES: &[&str] = &[
    "src",
    "tests",
    "fuzz",
    "bench",
    "examples",
    "state-diagrams",
    ".ci",
    "docs",
    "Cargo.toml",
    "README.md",
];

/// Build output, fuzzing output and corpora: not written by people, possibly large.
const SKIPPED_DIRECTORY_NAMES: &[&str] = &["target", "corpus", "artifacts", "coverage"];

fn repository_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every text file under `paths` (relative to the repository root), with its relative path.
/// Files that are not UTF-8 (fuzz seeds, binary regressions) hold no prose and are skipped.
fn text_files(paths: &[&str]) -> Vec<(String, String)> {
    let root = repository_root();
    let mut found = Vec::new();
    let mut pending: Vec<PathBuf> = paths.iter().map(|p| root.join(p)).collect();
    while let Some(path) = pending.pop() {
        let Ok(metadata) = fs::symlink_metadata(&path) else {
            continue;
        };
        if metadata.is_dir() {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if SKIPPED_DIRECTORY_NAMES.contains(&name) {
                continue;
            }
            for entry in fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
        } else if metadata.is_file() {
            let bytes = fs::read(&path).unwrap();
            if let Ok(text) = String::from_utf8(bytes) {
                let relative = path.strip_prefix(&root).unwrap().display().to_string();
                found.push((relative, text));
            }
        }
    }
    found.sort();
    found
}

/// The rule ids in `text`, in order of appearance, with the byte offset of each.
fn rule_ids(text: &str) -> Vec<(usize, String)> {
    let bytes = text.as_bytes();
    let mut ids = Vec::new();
    let mut start = 0;
    while let Some(found) = text[start..].find("S-") {
        let at = start + found;
        start = at + 2;
        let preceded_by_word = at > 0 && {
            let before = bytes[at - 1];
            before.is_ascii_alphanumeric() || before == b'_'
        };
        if preceded_by_word {
            continue;
        }
        // Digits, then any number of `.` + digits; a `.` not followed by a digit ends the id
        // (the full stop of a sentence).
        let mut end = at + 2;
        let digits = |from: usize| {
            bytes[from..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count()
        };
        let first = digits(end);
        if first == 0 {
            continue;
        }
        end += first;
        while end < bytes.len() && bytes[end] == b'.' {
            let more = digits(end + 1);
            if more == 0 {
                break;
            }
            end += 1 + more;
        }
        ids.push((at, text[at..end].to_string()));
    }
    ids
}

fn line_number(text: &str, offset: usize) -> usize {
    text[..offset].matches('\n').count() + 1
}

/// The ids `docs/spec.md` defines, each with the line that defines it.
fn defined_ids() -> BTreeMap<String, Vec<usize>> {
    let spec = fs::read_to_string(repository_root().join(SPEC_PATH)).unwrap();
    let mut defined: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut in_code_block = false;
    for (index, line) in spec.lines().enumerate() {
        // A `#` inside a fenced code block (a shell script) is not a heading.
        if line.starts_with("```") {
            in_code_block = !in_code_block;
        } else if in_code_block {
            continue;
        } else if line.starts_with('#') {
            for (_, id) in rule_ids(line) {
                defined.entry(id).or_default().push(index + 1);
            }
        } else if let Some(rest) = line.strip_prefix("- ") {
            if let Some((at, id)) = rule_ids(rest).into_iter().next() {
                if at == 0 && rest[id.len()..].starts_with(' ') {
                    defined.entry(id).or_default().push(index + 1);
                }
            }
        }
    }
    defined
}

#[test]
fn every_cited_rule_id_is_defined_in_docs_spec() {
    let defined = defined_ids();
    let mut undefined = Vec::new();
    let mut cited = 0;
    for (path, text) in text_files(CITING_PATHS) {
        for (offset, id) in rule_ids(&text) {
            cited += 1;
            if !defined.contains_key(&id) {
                undefined.push(format!("{path}:{}: {id}", line_number(&text, offset)));
            }
        }
    }
    // The walk found the code at all (a wrong root would make this test pass vacuously).
    assert!(cited > 100, "only {cited} rule citations found");
    assert!(
        undefined.is_empty(),
        "rule ids cited but not defined in {SPEC_PATH} (add a `- S-n …` bullet):\n{}",
        undefined.join("\n")
    );
}

#[test]
fn every_rule_id_in_docs_spec_is_defined_once_and_under_its_group() {
    let defined = defined_ids();
    assert!(
        defined.len() > 50,
        "{SPEC_PATH} defines only {}",
        defined.len()
    );
    let repeated: Vec<String> = defined
        .iter()
        .filter(|(_, lines)| lines.len() > 1)
        .map(|(id, lines)| format!("{id} on lines {lines:?}"))
        .collect();
    assert!(repeated.is_empty(), "defined twice: {repeated:?}");
    // `S-4.7` belongs to the group `S-4`, `S-8.1.1` to `S-8.1`: the parent is defined too.
    let orphans: Vec<&String> = defined
        .keys()
        .filter(|id| {
            id.rsplit_once('.')
                .is_some_and(|(parent, _)| !defined.contains_key(parent))
        })
        .collect();
    assert!(
        orphans.is_empty(),
        "ids whose group is not defined: {orphans:?}"
    );
}

#[test]
fn rule_ids_are_recognized_as_the_definitions_expect() {
    let ids: Vec<String> = rule_ids("(S-2.3, S-8.1.1). See S-4. Not TLS-1.3 nor S- or S-x.")
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    assert_eq!(ids, ["S-2.3", "S-8.1.1", "S-4"]);
}

/// The references no file may contain, lowercase (matching is case-insensitive; `docs/spec.md`
/// itself is allowed). Assembled from pieces so that this file does not contain them.
fn outside_references() -> Vec<String> {
    vec![
        ["..", "/shared"].concat(),
        ["spec", ".md"].concat(),
        ["style", ".md"].concat(),
        ["developers", ".md"].concat(),
        ["seed", "-pgbak"].concat(),
    ]
}

/// Whether `line` (lowercase) names a tracker item: the word, blanks, then a digit.
fn names_tracker_item(line: &str) -> bool {
    let word = ["iss", "ue"].concat();
    line.match_indices(&word).any(|(at, _)| {
        let rest = line[at + word.len()..].trim_start_matches([' ', '\t', '#']);
        rest.len() < line.len() - at - word.len() && rest.starts_with(|c: char| c.is_ascii_digit())
    })
}

#[test]
fn no_file_points_outside_the_repository_or_at_tracker_items() {
    let patterns = outside_references();
    let mut found = Vec::new();
    let files = text_files(CHECKED_FOR_OUTSIDE_REFERENCES);
    assert!(files.len() > 20, "only {} files found", files.len());
    for (path, text) in files {
        for (index, line) in text.lines().enumerate() {
            // The contract's own file name contains one of the patterns; it is the one
            // reference that points inside.
            let lower = line.to_lowercase().replace(SPEC_PATH, "");
            let hit =
                patterns.iter().any(|p| lower.contains(p.as_str())) || names_tracker_item(&lower);
            if hit {
                found.push(format!("{path}:{}: {}", index + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "say it in the project's own terms, citing {SPEC_PATH} rules (S-n) where apt:\n{}",
        found.join("\n")
    );
}

#[test]
fn tracker_items_are_recognized() {
    let word = ["iss", "ue"].concat();
    assert!(names_tracker_item(&format!("see {word} 4, item 1")));
    assert!(names_tracker_item(&format!("({word} #12)")));
    assert!(!names_tracker_item(&format!("an {word} with it")));
    assert!(!names_tracker_item(&format!("{word}4")));
    assert!(!names_tracker_item(&format!("the {word}")));
}
