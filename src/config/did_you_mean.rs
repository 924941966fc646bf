//! The hint for an unknown key: the closest known key by edit distance, in its section or
//! another (a typo such as `max_agee` must name `max_age_hours`, S-7).

use super::keys::KEYS;
use super::keys::SECTIONS;

/// `did you mean …?` plus the keys that would be accepted there.
pub(super) fn unknown_key_hint(key: &str) -> String {
    let suggestion = closest_key(key).map(|known| format!("did you mean \"{known}\"? "));
    let known = match key.split_once('.') {
        Some((section, _)) if SECTIONS.contains(&section) => {
            format!(
                "known keys in [{section}]: {}",
                section_key_names(section).join(", ")
            )
        }
        _ => {
            let names: Vec<&str> = KEYS.iter().map(|doc| doc.key).collect();
            format!("known keys: {}", names.join(", "))
        }
    };
    format!("{}{known}", suggestion.unwrap_or_default())
}

/// The key names of one section, without the section: `compression_level`, ….
pub(super) fn section_key_names(section: &str) -> Vec<&'static str> {
    KEYS.iter()
        .filter_map(|doc| doc.key.strip_prefix(section)?.strip_prefix('.'))
        .collect()
}

/// What a misspelt key probably meant, if anything is near enough to be a typo: a key of the
/// same section, a section (`[wall]`), or, for a bare name that is some key's last part
/// (`autostart` outside `[sync]`), that key.
pub(super) fn closest_key(unknown: &str) -> Option<String> {
    match unknown.split_once('.') {
        Some((section, name)) if SECTIONS.contains(&section) => {
            nearest(name, section_key_names(section)).map(|name| format!("{section}.{name}"))
        }
        Some(_) => nearest(unknown, KEYS.iter().map(|doc| doc.key)).map(str::to_string),
        None => KEYS
            .iter()
            .find(|doc| doc.key.rsplit('.').next() == Some(unknown))
            .map(|doc| doc.key.to_string())
            .or_else(|| nearest(unknown, SECTIONS.iter().copied()).map(str::to_string)),
    }
}

/// The candidate nearest to `written`, if it is a plausible typo of it: a small edit distance,
/// or `written` is the candidate cut short or with a stray last letter (`max_agee`).
pub(super) fn nearest<'a>(
    written: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let length = written.chars().count();
    candidates
        .into_iter()
        .map(|candidate| (edit_distance(written, candidate), candidate))
        .filter(|(distance, candidate)| {
            let common_prefix = written
                .chars()
                .zip(candidate.chars())
                .take_while(|(a, b)| a == b)
                .count();
            *distance <= (length / 3).max(2) || (common_prefix >= 4 && common_prefix + 1 >= length)
        })
        .min()
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance over chars (keys are short; quadratic is fine).
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, a_char) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, b_char) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(a_char != *b_char);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}
