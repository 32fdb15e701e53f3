//! BLEU tokenizers reproducing sacreBLEU's `none`, `13a`, `intl`, `char` and
//! `zh` exactly. Each returns the tokenized line with tokens separated by one
//! space (sacreBLEU's `' '.join(line.split())`; `none` returns its input).

use std::fmt;
use std::str::FromStr;

use crate::error::BleuError;
use crate::text::{
    collapse_space, is_number, is_punctuation, is_symbol, py_normalize_space, py_strip,
};

/// A BLEU tokenizer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Tokenizer {
    /// No tokenization at all.
    None,
    /// mteval-v13a, sacreBLEU's default.
    #[default]
    Tok13a,
    /// mteval-v14 international tokenization (Unicode punctuation and symbols).
    Intl,
    /// Every character is a token.
    Char,
    /// Chinese characters split out, the rest as `13a` (without its unescaping).
    Zh,
}

impl Tokenizer {
    /// The name used on the command line and in signatures.
    pub fn name(self) -> &'static str {
        match self {
            Tokenizer::None => "none",
            Tokenizer::Tok13a => "13a",
            Tokenizer::Intl => "intl",
            Tokenizer::Char => "char",
            Tokenizer::Zh => "zh",
        }
    }

    /// Tokenizes one line.
    pub fn tokenize(self, line: &str) -> String {
        match self {
            Tokenizer::None => line.to_string(),
            Tokenizer::Tok13a => tokenize_13a(line),
            Tokenizer::Intl => tokenize_intl(line),
            Tokenizer::Char => tokenize_char(line),
            Tokenizer::Zh => tokenize_zh(line),
        }
    }
}

impl fmt::Display for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Tokenizer {
    type Err = BleuError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "none" => Tokenizer::None,
            "13a" => Tokenizer::Tok13a,
            "intl" => Tokenizer::Intl,
            "char" => Tokenizer::Char,
            "zh" => Tokenizer::Zh,
            other => return Err(BleuError::UnknownTokenizer(other.to_string())),
        })
    }
}

/// Applies a rewrite of adjacent character pairs the way Python's `re.sub`
/// applies a two-character pattern: scanning left to right, a pair that
/// matches is replaced by `emit(a, b)` and skipped as a whole (matches do not
/// overlap).
fn rewrite_pairs<T: Copy>(
    chars: &[T],
    matches: impl Fn(T, T) -> bool,
    emit: impl Fn(T, T) -> [T; 4],
) -> Vec<T> {
    let mut out = Vec::with_capacity(2 * chars.len());
    let mut i = 0;
    while i < chars.len() {
        if i + 1 < chars.len() && matches(chars[i], chars[i + 1]) {
            out.extend_from_slice(&emit(chars[i], chars[i + 1]));
            i += 2;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// Surrounds every character for which `pred` holds with `space`.
fn pad_chars<T: Copy>(chars: &[T], space: T, pred: impl Fn(T) -> bool) -> Vec<T> {
    let mut out = Vec::with_capacity(2 * chars.len());
    for &c in chars {
        if pred(c) {
            out.extend_from_slice(&[space, c, space]);
        } else {
            out.push(c);
        }
    }
    out
}

/// The characters of mteval's first rule: ASCII punctuation other than
/// `'`, `,`, `-` and `.`, plus the space itself.
const fn is_13a_separate_slow(c: u8) -> bool {
    matches!(c, b'{'..=b'~' | b'['..=b'`' | b' '..=b'&' | b'('..=b'+' | b':'..=b'@' | b'/')
}

/// [`is_13a_separate_slow`] as a lookup table.
static SEPARATE_13A: [bool; 256] = {
    let mut table = [false; 256];
    let mut c = 0;
    while c < 256 {
        table[c] = is_13a_separate_slow(c as u8);
        c += 1;
    }
    table
};

#[inline]
fn is_13a_separate(c: u8) -> bool {
    SEPARATE_13A[c as usize]
}

/// The language-dependent regular expressions shared by `13a` and `zh`.
///
/// Every character these rules name is ASCII and every other class is a
/// negation, so running them over UTF-8 bytes gives the same result as over
/// characters: a multi-byte character's bytes are all "other", a match never
/// starts inside one, and spaces are only inserted at character boundaries.
fn post_tokenize_13a(line: &str) -> String {
    post_tokenize_13a_bytes(pad_chars(line.as_bytes(), b' ', is_13a_separate))
}

/// [`post_tokenize_13a`] after its first rule (the padding) is applied.
fn post_tokenize_13a_bytes(bytes: Vec<u8>) -> String {
    let digit = |c: u8| c.is_ascii_digit();
    let dot_comma = |c: u8| c == b'.' || c == b',';
    // Period and comma unless preceded by a digit.
    let bytes = rewrite_at_markers(&bytes, dot_comma, Side::After, |x| !digit(x));
    // Period and comma unless followed by a digit.
    let bytes = rewrite_at_markers(&bytes, dot_comma, Side::Before, |y| !digit(y));
    // Dash preceded by a digit.
    let bytes = rewrite_at_markers(&bytes, |c| c == b'-', Side::After, digit);
    // Spaces were only inserted between characters: still UTF-8.
    match String::from_utf8(collapse_space(bytes)) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// Where the marker byte stands in a two-byte rule.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// `(x)(marker)` becomes `x marker ` (the marker comes after `x`).
    After,
    /// `(marker)(y)` becomes ` marker y` (the marker comes before `y`).
    Before,
}

/// [`rewrite_pairs`] for a rule whose pairs always contain a marker byte:
/// only marker positions are examined and the bytes between them are copied
/// in bulk. A pair is matched where the left-to-right scan would reach its
/// first byte, i.e. unless that byte was consumed by the previous match.
fn rewrite_at_markers(
    bytes: &[u8],
    is_marker: impl Fn(u8) -> bool,
    side: Side,
    other_ok: impl Fn(u8) -> bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 4 + 8);
    let (mut copied, mut consumed) = (0, 0);
    for j in (0..bytes.len()).filter(|&j| is_marker(bytes[j])) {
        let m = bytes[j];
        match side {
            Side::After if j > consumed && other_ok(bytes[j - 1]) => {
                out.extend_from_slice(&bytes[copied..j]);
                out.extend_from_slice(&[b' ', m, b' ']);
                copied = j + 1;
                consumed = j + 1;
            }
            Side::Before if j >= consumed && j + 1 < bytes.len() && other_ok(bytes[j + 1]) => {
                out.extend_from_slice(&bytes[copied..j]);
                out.extend_from_slice(&[b' ', m, b' ', bytes[j + 1]]);
                copied = j + 2;
                consumed = j + 2;
            }
            _ => {}
        }
    }
    out.extend_from_slice(&bytes[copied..]);
    out
}

fn tokenize_13a(line: &str) -> String {
    let mut owned = None;
    if line.contains("<skipped>") {
        owned = Some(line.replace("<skipped>", ""));
    }
    if owned.as_deref().unwrap_or(line).contains('\n') {
        let l = owned.as_deref().unwrap_or(line);
        owned = Some(l.replace("-\n", "").replace('\n', " "));
    }
    if owned.as_deref().unwrap_or(line).contains('&') {
        let l = owned.as_deref().unwrap_or(line);
        owned = Some(
            l.replace("&quot;", "\"")
                .replace("&amp;", "&")
                .replace("&lt;", "<")
                .replace("&gt;", ">"),
        );
    }
    let line = owned.as_deref().unwrap_or(line).as_bytes();
    // The rules run on " {line} "; the padding rule turns each of those two
    // spaces into three.
    let mut padded = Vec::with_capacity(2 * line.len() + 6);
    padded.extend_from_slice(b"   ");
    for &c in line {
        if is_13a_separate(c) {
            padded.extend_from_slice(&[b' ', c, b' ']);
        } else {
            padded.push(c);
        }
    }
    padded.extend_from_slice(b"   ");
    post_tokenize_13a_bytes(padded)
}

fn tokenize_intl(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    // Punctuation preceded by a non-number.
    let chars = rewrite_pairs(
        &chars,
        |a, b| !is_number(a) && is_punctuation(b),
        |a, b| [a, ' ', b, ' '],
    );
    // Punctuation followed by a non-number.
    let chars = rewrite_pairs(
        &chars,
        |a, b| is_punctuation(a) && !is_number(b),
        |a, b| [' ', a, ' ', b],
    );
    let chars = pad_chars(&chars, ' ', is_symbol);
    py_normalize_space(&chars.into_iter().collect::<String>())
}

fn tokenize_char(line: &str) -> String {
    let mut out = String::with_capacity(line.len() * 2);
    for (i, c) in line.chars().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// sacreBLEU's `zh` tokenizer's notion of a Chinese character. Its range table
/// writes three supplementary-plane bounds as `'\u20000'`-style literals, which
/// Python reads as two-character strings; compared as strings they turn the
/// first range into U+2001..=U+2A6D and the others into BMP ranges that are
/// covered anyway. These are the effective ranges.
fn is_zh_char(c: char) -> bool {
    matches!(
        c as u32,
        0x2001..=0x2A6D
            | 0x2E80..=0x2FDF
            | 0x2FF0..=0x303F
            | 0x3100..=0x312F
            | 0x31A0..=0x31EF
            | 0x3200..=0x4DB5
            | 0x4E00..=0x9FBB
            | 0xF900..=0xFA2D
            | 0xFA30..=0xFA6A
            | 0xFA70..=0xFAD9
            | 0xFE10..=0xFE1F
            | 0xFE30..=0xFE4F
            | 0xFF00..=0xFFEF
    )
}

fn tokenize_zh(line: &str) -> String {
    let mut spaced = String::with_capacity(line.len() * 2);
    for c in py_strip(line).chars() {
        if is_zh_char(c) {
            spaced.push(' ');
            spaced.push(c);
            spaced.push(' ');
        } else {
            spaced.push(c);
        }
    }
    post_tokenize_13a(&spaced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tok_13a() {
        let t = Tokenizer::Tok13a;
        assert_eq!(
            t.tokenize("Hello, world. It's 3.5-4 &quot;x&quot;!"),
            "Hello , world . It's 3.5 - 4 \" x \" !"
        );
        assert_eq!(t.tokenize("a.."), "a . .");
        assert_eq!(t.tokenize("<skipped>x"), "x");
    }

    #[test]
    fn marker_rewrite_equals_pairwise_rewrite() {
        let digit = |c: u8| c.is_ascii_digit();
        let dot_comma = |c: u8| c == b'.' || c == b',';
        let pieces: [&[u8]; 9] = [
            b".",
            b",",
            b"-",
            b"7",
            b"a",
            b" ",
            b"..",
            b"9-",
            "é".as_bytes(),
        ];
        let mut state = 12345u64;
        for _ in 0..3000 {
            let mut text = Vec::new();
            for _ in 0..(state % 12) {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                text.extend_from_slice(pieces[(state >> 33) as usize % pieces.len()]);
            }
            let sparse = rewrite_at_markers(&text, dot_comma, Side::After, |x| !digit(x));
            let dense = rewrite_pairs(
                &text,
                |a, b| !digit(a) && dot_comma(b),
                |a, b| [a, b' ', b, b' '],
            );
            assert_eq!(sparse, dense);
            let sparse = rewrite_at_markers(&text, dot_comma, Side::Before, |y| !digit(y));
            let dense = rewrite_pairs(
                &text,
                |a, b| dot_comma(a) && !digit(b),
                |a, b| [b' ', a, b' ', b],
            );
            assert_eq!(sparse, dense);
            let sparse = rewrite_at_markers(&text, |c| c == b'-', Side::After, digit);
            let dense = rewrite_pairs(
                &text,
                |a, b| digit(a) && b == b'-',
                |a, b| [a, b' ', b, b' '],
            );
            assert_eq!(sparse, dense);
        }
    }

    #[test]
    fn tok_intl() {
        let t = Tokenizer::Intl;
        assert_eq!(
            t.tokenize("Preis: 1.000,50€ „gut“."),
            "Preis : 1.000,50 € „ gut “ ."
        );
        assert_eq!(t.tokenize("im Jahr 2014."), "im Jahr 2014.");
    }

    #[test]
    fn tok_char_and_zh() {
        assert_eq!(Tokenizer::Char.tokenize("ab c"), "a b   c");
        assert_eq!(Tokenizer::Zh.tokenize(" 我爱你, ok. "), "我 爱 你 , ok .");
        assert_eq!(Tokenizer::Zh.tokenize("a—b"), "a — b");
    }
}
