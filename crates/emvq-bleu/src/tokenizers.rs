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
fn is_13a_separate(c: u8) -> bool {
    matches!(c, b'{'..=b'~' | b'['..=b'`' | b' '..=b'&' | b'('..=b'+' | b':'..=b'@' | b'/')
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
fn post_tokenize_13a_bytes(mut bytes: Vec<u8>) -> String {
    let digit = |c: u8| c.is_ascii_digit();
    if bytes.iter().any(|&b| b == b'.' || b == b',') {
        bytes = rewrite_pairs_dot_comma(&bytes);
    }
    // Dash preceded by a digit.
    if bytes.contains(&b'-') {
        bytes = rewrite_pairs(
            &bytes,
            |a, b| digit(a) && b == b'-',
            |a, b| [a, b' ', b, b' '],
        );
    }
    // Spaces were only inserted between characters: still UTF-8.
    match String::from_utf8(collapse_space(bytes)) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// mteval's period and comma rules (passes 2 and 3 of [`post_tokenize_13a`]).
fn rewrite_pairs_dot_comma(bytes: &[u8]) -> Vec<u8> {
    let digit = |c: u8| c.is_ascii_digit();
    let dot_comma = |c: u8| c == b'.' || c == b',';
    // Period and comma unless preceded by a digit.
    let bytes = rewrite_pairs(
        bytes,
        |a, b| !digit(a) && dot_comma(b),
        |a, b| [a, b' ', b, b' '],
    );
    // Period and comma unless followed by a digit.
    rewrite_pairs(
        &bytes,
        |a, b| dot_comma(a) && !digit(b),
        |a, b| [b' ', a, b' ', b],
    )
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
