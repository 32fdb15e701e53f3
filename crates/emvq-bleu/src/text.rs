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
    let collapsed = collapse_space(s.as_bytes().to_vec());
    // Only whole characters are removed and ASCII spaces inserted: still UTF-8.
    String::from_utf8(collapsed)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Whether the UTF-8 character starting at `bytes[i]` is Python whitespace,
/// and its length in bytes.
fn space_at(bytes: &[u8], i: usize) -> (bool, usize) {
    let b = bytes[i];
    match b {
        0..=0x7F => (matches!(b, b'\t'..=b'\r' | 0x1c..=b' '), 1),
        // U+0085 and U+00A0.
        0xC2 => (matches!(bytes.get(i + 1), Some(0x85 | 0xA0)), 2),
        0xC0..=0xDF => (false, 2),
        // U+1680, U+2000..U+205F and U+3000 start with these.
        0xE1..=0xE3 => {
            let cp = bytes.get(i..i + 3).map_or(0, |t| {
                ((t[0] as u32 & 0x0F) << 12) | ((t[1] as u32 & 0x3F) << 6) | (t[2] as u32 & 0x3F)
            });
            (char::from_u32(cp).is_some_and(py_is_space), 3)
        }
        0xE0..=0xEF => (false, 3),
        0xF0.. => (false, 4),
        // Continuation bytes cannot start a character of valid UTF-8.
        0x80..=0xBF => (false, 1),
    }
}

/// `' '.join(text.split())` over UTF-8 bytes, in place: runs of Python
/// whitespace become one ASCII space, leading and trailing ones vanish.
pub(crate) fn collapse_space(mut bytes: Vec<u8>) -> Vec<u8> {
    let (mut read, mut write) = (0, 0);
    let mut pending_space = false;
    while read < bytes.len() {
        let b = bytes[read];
        if b > b' ' && b < 0x80 {
            // The common case: a printable ASCII byte.
            if pending_space {
                bytes[write] = b' ';
                write += 1;
                pending_space = false;
            }
            bytes[write] = b;
            write += 1;
            read += 1;
            continue;
        }
        let (space, width) = space_at(&bytes, read);
        let width = width.min(bytes.len() - read);
        if space {
            pending_space = write > 0;
        } else {
            // Each separator written stands for at least one byte skipped, so
            // `write` never overtakes `read`.
            if pending_space {
                bytes[write] = b' ';
                write += 1;
                pending_space = false;
            }
            bytes.copy_within(read..read + width, write);
            write += width;
        }
        read += width;
    }
    bytes.truncate(write);
    bytes
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
        for &cp in PY_WHITESPACE {
            let c = char::from_u32(cp).unwrap();
            assert_eq!(
                py_normalize_space(&format!("{c}a{c}{c}b{c}")),
                "a b",
                "U+{cp:04X}"
            );
        }
        for cp in [
            0x86, 0xA1, 0x1681, 0x200B, 0x2060, 0x3001, 0x1F600, 0x2FFF, 0xE000,
        ] {
            let c = char::from_u32(cp).unwrap();
            assert_eq!(
                py_normalize_space(&format!("a{c}b")),
                format!("a{c}b"),
                "U+{cp:04X}"
            );
        }
        assert_eq!(py_rstrip("x \u{3000}\r"), "x");
        assert_eq!(py_strip("\u{2028} y "), "y");
    }

    #[test]
    fn lower_matches_python() {
        assert_eq!(py_lower("İSTANBUL"), "i\u{307}stanbul");
        assert_eq!(py_lower("ΟΔΟΣ ΣΑ"), "οδος σα");
        assert_eq!(py_lower("Σ"), "σ");
        assert_eq!(py_lower("ΟΔΥΣΣΕΑΣ"), "οδυσσεας");
        // U+0130 is cased although it lowercases to two characters.
        assert_eq!(py_lower("ΑΣİ"), "ασi\u{307}");
        assert_eq!(py_lower("İΣ"), "i\u{307}ς");
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
