//! Python string semantics that sacreBLEU's results depend on: which code
//! points `str.split()` / `str.strip()` treat as whitespace and what
//! `str.lower()` produces (including the Final_Sigma rule).
//!
//! The tables come from the reference Python (see `tools/gen_unicode_tables.py`),
//! so results do not depend on the Unicode version of the Rust standard library.

use crate::unicode_tables::{
    PY_CASED, PY_CASE_IGNORABLE, PY_LOWER, PY_LOWER_MULTI, PY_WHITESPACE, REGEX_N, REGEX_P, REGEX_S,
};

fn in_ranges(table: &[(u32, u32)], c: char) -> bool {
    let c = c as u32;
    table
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Python's `str.isspace()` for one code point.
pub fn py_is_space(c: char) -> bool {
    if c.is_ascii() {
        matches!(c, '\t'..='\r' | '\x1c'..=' ')
    } else {
        PY_WHITESPACE.binary_search(&(c as u32)).is_ok()
    }
}

/// Python's `str.split()` without arguments: runs of whitespace separate
/// tokens, and no empty token is produced.
pub fn py_split(s: &str) -> impl Iterator<Item = &str> {
    s.split(py_is_space).filter(|t| !t.is_empty())
}

/// `' '.join(s.split())` in Python.
pub fn py_normalize_space(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut token_start: Option<usize> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let (is_space, width) = if b < 0x80 {
            (matches!(b, b'\t'..=b'\r' | 0x1c..=b' '), 1)
        } else {
            // A lead byte; only U+0085, U+00A0, U+1680, U+2000..U+205F and
            // U+3000 are non-ASCII whitespace, led by 0xC2, 0xE1, 0xE2, 0xE3.
            let width = match b {
                0xF0.. => 4,
                0xE0.. => 3,
                _ => 2,
            };
            let space = matches!(b, 0xC2 | 0xE1 | 0xE2 | 0xE3)
                && s[i..].chars().next().is_some_and(py_is_space);
            (space, width)
        };
        match (is_space, token_start) {
            (true, Some(start)) => {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(&s[start..i]);
                token_start = None;
            }
            (false, None) => token_start = Some(i),
            _ => {}
        }
        i += width;
    }
    if let Some(start) = token_start {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&s[start..]);
    }
    out
}

/// Python's `str.rstrip()`.
pub fn py_rstrip(s: &str) -> &str {
    s.trim_end_matches(py_is_space)
}

/// Python's `str.strip()`.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(py_is_space)
}

/// `\p{N}` as the `regex` module sees it.
pub fn is_number(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_digit()
    } else {
        in_ranges(REGEX_N, c)
    }
}

/// The ASCII symbols (general category S); the other ASCII punctuation
/// characters are in category P.
fn is_ascii_symbol(c: char) -> bool {
    matches!(c, '$' | '+' | '<' | '=' | '>' | '^' | '`' | '|' | '~')
}

/// `\p{P}` as the `regex` module sees it.
pub fn is_punctuation(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_punctuation() && !is_ascii_symbol(c)
    } else {
        in_ranges(REGEX_P, c)
    }
}

/// `\p{S}` as the `regex` module sees it.
pub fn is_symbol(c: char) -> bool {
    if c.is_ascii() {
        is_ascii_symbol(c)
    } else {
        in_ranges(REGEX_S, c)
    }
}

fn is_case_ignorable(c: char) -> bool {
    in_ranges(PY_CASE_IGNORABLE, c)
}

fn is_cased(c: char) -> bool {
    in_ranges(PY_CASED, c)
}

/// Pushes Python's lowercase form of `c` (context-free part) onto `out`.
fn push_lower(c: char, out: &mut String) {
    if c.is_ascii() {
        out.push(c.to_ascii_lowercase());
        return;
    }
    let cp = c as u32;
    if let Ok(i) = PY_LOWER.binary_search_by_key(&cp, |&(from, _)| from) {
        // The table holds valid scalar values only.
        out.push(char::from_u32(PY_LOWER[i].1).unwrap_or(c));
    } else if let Some(&(_, s)) = PY_LOWER_MULTI.iter().find(|&&(from, _)| from == cp) {
        out.push_str(s);
    } else {
        out.push(c);
    }
}

/// Whether the capital sigma at `chars[i]` is word-final, following the
/// Final_Sigma condition as Python implements it.
fn is_final_sigma(chars: &[char], i: usize) -> bool {
    let before = chars[..i].iter().rev().find(|&&c| !is_case_ignorable(c));
    if !before.is_some_and(|&c| is_cased(c)) {
        return false;
    }
    match chars[i + 1..].iter().find(|&&c| !is_case_ignorable(c)) {
        None => true,
        Some(&c) => !is_cased(c),
    }
}

/// Python's `str.lower()`.
pub fn py_lower(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    if s.is_ascii() {
        out.push_str(&s.to_ascii_lowercase());
        return out;
    }
    if !s.contains('\u{3a3}') {
        for c in s.chars() {
            push_lower(c, &mut out);
        }
        return out;
    }
    let chars: Vec<char> = s.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c == '\u{3a3}' {
            out.push(if is_final_sigma(&chars, i) {
                '\u{3c2}'
            } else {
                '\u{3c3}'
            });
        } else {
            push_lower(c, &mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_matches_python() {
        for c in [
            '\u{1c}', '\u{1f}', '\u{85}', '\u{a0}', '\u{3000}', '\u{2009}',
        ] {
            assert!(py_is_space(c), "{c:?}");
        }
        for c in ['\u{200b}', '\u{feff}', 'a', '\u{180e}'] {
            assert!(!py_is_space(c), "{c:?}");
        }
        let toks: Vec<&str> = py_split(" a\u{1c}b\u{a0} c\t").collect();
        assert_eq!(toks, ["a", "b", "c"]);
        let messy = " a\u{1c}b\u{a0} c\t\u{3000}d\u{2028}é\u{200b}f\u{85}€ ";
        assert_eq!(
            py_normalize_space(messy),
            py_split(messy).collect::<Vec<_>>().join(" ")
        );
        assert_eq!(py_normalize_space(messy), "a b c d é\u{200b}f €");
        assert_eq!(py_normalize_space(" \t "), "");
        assert_eq!(py_rstrip("x \u{3000}\r"), "x");
        assert_eq!(py_strip("\u{2028} y "), "y");
    }

    #[test]
    fn lower_matches_python() {
        assert_eq!(py_lower("İSTANBUL"), "i\u{307}stanbul");
        assert_eq!(py_lower("ΟΔΟΣ ΣΑ"), "οδος σα");
        assert_eq!(py_lower("Σ"), "σ");
        assert_eq!(py_lower("ΟΔΥΣΣΕΑΣ"), "οδυσσεας");
        assert!(py_lower("ΟΔΥΣΣΕΑΣ").ends_with('\u{3c2}'));
        assert_eq!(py_lower("AΣ'"), "aς'");
        assert_eq!(py_lower("AΣ'B"), "aσ'b");
        assert_eq!(py_lower("ÄÖÜ ẞ"), "äöü ß");
    }

    #[test]
    fn ascii_fast_paths_agree_with_tables() {
        for b in 0u8..128 {
            let c = b as char;
            assert_eq!(is_punctuation(c), in_ranges(REGEX_P, c), "{c:?}");
            assert_eq!(is_symbol(c), in_ranges(REGEX_S, c), "{c:?}");
            assert_eq!(is_number(c), in_ranges(REGEX_N, c), "{c:?}");
            assert_eq!(py_is_space(c), PY_WHITESPACE.contains(&(b as u32)), "{c:?}");
            let mut lower = String::new();
            push_lower(c, &mut lower);
            let table = PY_LOWER
                .iter()
                .find(|&&(from, _)| from == b as u32)
                .map_or(c, |&(_, to)| char::from_u32(to).unwrap());
            assert_eq!(lower, table.to_string(), "{c:?}");
        }
    }

    #[test]
    fn unicode_classes() {
        assert!(is_punctuation('„') && is_punctuation('—') && is_punctuation('.'));
        assert!(is_symbol('€') && is_symbol('+') && is_symbol('😀'));
        assert!(is_number('٣') && is_number('½') && !is_number('a'));
    }
}
