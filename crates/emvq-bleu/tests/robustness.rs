//! No input makes the scorers panic: random strings over an alphabet of
//! ASCII, Unicode punctuation, whitespace, combining marks, CJK, emoji and
//! final-sigma contexts, through every tokenizer, smoothing and chrF variant.

use emvq_bleu::text::py_normalize_space;
use emvq_bleu::{
    corpus_bleu, corpus_chrf, sentence_bleu, BleuConfig, ChrfConfig, Smoothing, Tokenizer,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ALPHABET: &[&str] = &[
    "a",
    "B",
    "7",
    " ",
    "  ",
    ".",
    ",",
    "-",
    "'",
    "\"",
    "&quot;",
    "&amp;",
    "<skipped>",
    "\n",
    "\t",
    "\u{a0}",
    "\u{3000}",
    "\u{2028}",
    "\u{1c}",
    "\u{85}",
    "„",
    "“",
    "—",
    "€",
    "½",
    "٣",
    "Σ",
    "ΑΣ",
    "İ",
    "ǅ",
    "ẞ",
    "\u{301}",
    "\u{200b}",
    "中",
    "文",
    "。",
    "😀",
    "👍🏽",
    "\u{feff}",
    "\u{10ffff}",
    "\u{e000}",
    "x\u{308}",
];

fn random_line(rng: &mut StdRng) -> String {
    let n = rng.gen_range(0..25);
    (0..n)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())])
        .collect()
}

#[test]
fn random_text_never_panics() {
    let mut rng = StdRng::seed_from_u64(7);
    let hyps: Vec<String> = (0..200).map(|_| random_line(&mut rng)).collect();
    let refs: Vec<Vec<String>> = (0..2)
        .map(|_| (0..200).map(|_| random_line(&mut rng)).collect())
        .collect();
    let tokenizers = [
        Tokenizer::None,
        Tokenizer::Tok13a,
        Tokenizer::Intl,
        Tokenizer::Char,
        Tokenizer::Zh,
    ];
    let smoothings = [
        Smoothing::None,
        Smoothing::Floor(0.1),
        Smoothing::AddK(1.0),
        Smoothing::AddK(0.0),
        Smoothing::Exp,
    ];
    for tokenizer in tokenizers {
        for smoothing in smoothings {
            for lowercase in [false, true] {
                let cfg = BleuConfig {
                    tokenizer,
                    smoothing,
                    lowercase,
                    effective_order: lowercase,
                    ..BleuConfig::default()
                };
                let s = corpus_bleu(&hyps, &refs, &cfg).unwrap();
                assert!((0.0..=100.0).contains(&s.score), "{s:?}");
                for (i, h) in hyps.iter().enumerate().take(20) {
                    let one = [refs[0][i].as_str(), refs[1][i].as_str()];
                    let s = sentence_bleu(h, &one, &cfg).unwrap();
                    assert!(s.score.is_finite());
                }
            }
        }
    }
    for word_order in [0, 2] {
        for whitespace in [false, true] {
            for eps_smoothing in [false, true] {
                let cfg = ChrfConfig {
                    word_order,
                    whitespace,
                    eps_smoothing,
                    lowercase: whitespace,
                    char_order: if eps_smoothing { 8 } else { 6 },
                    ..ChrfConfig::default()
                };
                let s = corpus_chrf(&hyps, &refs, &cfg).unwrap();
                assert!((0.0..=100.0).contains(&s.score), "{s:?}");
            }
        }
    }
}

#[test]
fn tokenizer_output_is_space_normalised() {
    let mut rng = StdRng::seed_from_u64(11);
    for _ in 0..500 {
        let line = random_line(&mut rng);
        // These end with sacreBLEU's `' '.join(line.split())`.
        for tok in [Tokenizer::Tok13a, Tokenizer::Intl, Tokenizer::Zh] {
            let out = tok.tokenize(&line);
            assert_eq!(py_normalize_space(&out), out, "{tok}: {line:?}");
        }
        // `char` joins every character with a space, whitespace included.
        let chars: Vec<String> = line.chars().map(String::from).collect();
        assert_eq!(Tokenizer::Char.tokenize(&line), chars.join(" "));
    }
}
