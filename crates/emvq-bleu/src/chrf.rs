//! chrF (Popović 2015) and chrF++ (Popović 2017) as sacreBLEU 2.x computes
//! them: character n-grams over the text with whitespace removed (unless
//! `whitespace` is set), optional word n-grams after sacreBLEU's punctuation
//! splitting, the best-scoring reference per segment, and sacreBLEU's
//! effective-order averaging (or chrF++.py's epsilon smoothing).

use std::hash::Hash;

use rayon::prelude::*;
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::bleu::check_streams;
use crate::error::BleuError;
use crate::signature::Signature;
use crate::significance::{SegmentStats, StatsMetric};
use crate::text::{py_is_space, py_lower, py_split};

/// chrF options; `Default` gives sacreBLEU's chrF2 defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChrfConfig {
    /// Character n-gram order (default 6).
    pub char_order: usize,
    /// Word n-gram order (default 0; 2 gives chrF++).
    pub word_order: usize,
    /// Weight of recall against precision (default 2).
    pub beta: u32,
    /// Lowercase first (default off).
    pub lowercase: bool,
    /// Keep whitespace inside character n-grams (default off).
    pub whitespace: bool,
    /// chrF++.py-style epsilon smoothing instead of effective order (default off).
    pub eps_smoothing: bool,
}

impl Default for ChrfConfig {
    fn default() -> Self {
        ChrfConfig {
            char_order: 6,
            word_order: 0,
            beta: 2,
            lowercase: false,
            whitespace: false,
            eps_smoothing: false,
        }
    }
}

impl ChrfConfig {
    /// chrF++: the defaults with word order 2.
    pub fn plus_plus() -> Self {
        ChrfConfig {
            word_order: 2,
            ..ChrfConfig::default()
        }
    }

    fn order(&self) -> usize {
        self.char_order + self.word_order
    }

    /// The metric's name, e.g. `chrF2` or `chrF2++`.
    pub fn name(&self) -> String {
        format!("chrF{}{}", self.beta, "+".repeat(self.word_order))
    }

    fn preprocess(&self, sent: &str) -> String {
        if self.lowercase {
            py_lower(sent)
        } else {
            sent.to_string()
        }
    }
}

/// A chrF score.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChrfScore {
    /// The metric's name (`chrF2`, `chrF2++`, ...).
    pub name: String,
    /// chrF in [0, 100].
    pub score: f64,
    /// Character n-gram order.
    pub char_order: usize,
    /// Word n-gram order.
    pub word_order: usize,
    /// Beta.
    pub beta: u32,
}

impl ChrfScore {
    /// sacreBLEU's text line: `chrF2|<signature> = <score>`.
    pub fn format(&self, width: usize, signature: &Signature) -> String {
        format!("{}|{signature} = {:.width$}", self.name, self.score)
    }
}

/// sacreBLEU's chrF++ word splitting: a word longer than one character loses
/// a trailing ASCII punctuation mark, or else a leading one, as a separate token.
fn split_punctuation(sent: &str) -> Vec<&str> {
    let is_punct = |c: char| c.is_ascii_punctuation();
    let mut out = Vec::new();
    for w in py_split(sent) {
        let mut chars = w.char_indices();
        let first = chars.next();
        let last = w.char_indices().next_back();
        match (first, last) {
            (Some((_, f)), Some((li, l))) if li > 0 => {
                if is_punct(l) {
                    out.push(&w[..li]);
                    out.push(&w[li..]);
                } else if is_punct(f) {
                    let cut = f.len_utf8();
                    out.push(&w[..cut]);
                    out.push(&w[cut..]);
                } else {
                    out.push(w);
                }
            }
            _ => out.push(w),
        }
    }
    out
}

/// The units n-grams are made of, for one preprocessed segment: its
/// characters (whitespace removed unless kept) and, for chrF++, its words.
struct Units<'a> {
    chars: Vec<char>,
    /// The text the characters come from, with each character's byte offset
    /// (and the end), for orders too long to pack into an integer.
    text: &'a str,
    offsets: Vec<usize>,
    words: Vec<&'a str>,
}

/// Longest character n-gram packed into a `u128` key (21 bits a character).
const PACKED_MAX_ORDER: usize = 6;

impl<'a> Units<'a> {
    fn new(text: &'a str, compact: &'a str, cfg: &ChrfConfig) -> Self {
        let line = if cfg.whitespace { text } else { compact };
        let chars: Vec<char> = line.chars().collect();
        let offsets = if cfg.char_order > PACKED_MAX_ORDER {
            line.char_indices()
                .map(|(i, _)| i)
                .chain(std::iter::once(line.len()))
                .collect()
        } else {
            Vec::new()
        };
        let words = if cfg.word_order > 0 {
            split_punctuation(text)
        } else {
            Vec::new()
        };
        Units {
            chars,
            text: line,
            offsets,
            words,
        }
    }
}

/// Removes Python whitespace (`''.join(line.split())`).
fn compact(text: &str) -> String {
    text.chars().filter(|&c| !py_is_space(c)).collect()
}

/// Number of n-grams of order `n` in a sequence of `len` units.
fn ngram_count(len: usize, n: usize) -> u64 {
    (len + 1).saturating_sub(n) as u64
}

/// Adds to `matched[order]`, for each n-gram, min(hypothesis count,
/// reference count): the reference's n-grams are counted, then each
/// hypothesis n-gram uses up one copy if any is left.
fn count_matches<K: Hash + Eq>(
    reference: impl Iterator<Item = (usize, K)>,
    n_reference: usize,
    hypothesis: impl Iterator<Item = (usize, K)>,
    matched: &mut [u64],
) {
    let mut counts: FxHashMap<K, u32> = FxHashMap::default();
    counts.reserve(n_reference);
    for (_, key) in reference {
        *counts.entry(key).or_insert(0) += 1;
    }
    for (order, key) in hypothesis {
        if let Some(c) = counts.get_mut(&key) {
            if *c > 0 {
                *c -= 1;
                matched[order] += 1;
            }
        }
    }
}

/// Character n-grams of orders 1..=max as (order index, key): the
/// characters packed into an integer, distinct across orders because every
/// 21-bit slot holds the code point plus one.
fn packed_char_ngrams(chars: &[char], max: usize) -> impl Iterator<Item = (usize, u128)> + '_ {
    (1..=max.min(chars.len())).flat_map(move |n| {
        chars.windows(n).map(move |w| {
            let key = w.iter().fold(0u128, |k, &c| (k << 21) | (c as u128 + 1));
            (n - 1, key)
        })
    })
}

/// Character n-grams as (order index, text) for orders above [`PACKED_MAX_ORDER`].
fn text_char_ngrams<'a>(
    units: &'a Units,
    max: usize,
) -> impl Iterator<Item = (usize, &'a str)> + 'a {
    let n_chars = units.chars.len();
    (1..=max.min(n_chars)).flat_map(move |n| {
        (0..=(n_chars - n))
            .map(move |i| (n - 1, &units.text[units.offsets[i]..units.offsets[i + n]]))
    })
}

/// Word n-grams as (order index, words), after the character orders.
fn word_ngrams<'a>(
    words: &'a [&'a str],
    char_order: usize,
    max: usize,
) -> impl Iterator<Item = (usize, &'a [&'a str])> + 'a {
    (1..=max.min(words.len()))
        .flat_map(move |n| words.windows(n).map(move |w| (char_order + n - 1, w)))
}

/// `[hyp, ref, match]` per order of one hypothesis against one reference.
fn match_stats(hyp: &Units, reference: &Units, cfg: &ChrfConfig) -> Vec<u64> {
    let order = cfg.order();
    let mut matched = vec![0u64; order];
    let n_char_ngrams = (1..=cfg.char_order)
        .map(|n| ngram_count(reference.chars.len(), n) as usize)
        .sum();
    if cfg.char_order > PACKED_MAX_ORDER {
        count_matches(
            text_char_ngrams(reference, cfg.char_order),
            n_char_ngrams,
            text_char_ngrams(hyp, cfg.char_order),
            &mut matched,
        );
    } else {
        count_matches(
            packed_char_ngrams(&reference.chars, cfg.char_order),
            n_char_ngrams,
            packed_char_ngrams(&hyp.chars, cfg.char_order),
            &mut matched,
        );
    }
    if cfg.word_order > 0 {
        let n_word_ngrams = (1..=cfg.word_order)
            .map(|n| ngram_count(reference.words.len(), n) as usize)
            .sum();
        count_matches(
            word_ngrams(&reference.words, cfg.char_order, cfg.word_order),
            n_word_ngrams,
            word_ngrams(&hyp.words, cfg.char_order, cfg.word_order),
            &mut matched,
        );
    }
    let mut stats = Vec::with_capacity(3 * order);
    for (o, &m) in matched.iter().enumerate() {
        let (hyp_len, ref_len, n) = if o < cfg.char_order {
            (hyp.chars.len(), reference.chars.len(), o + 1)
        } else {
            (
                hyp.words.len(),
                reference.words.len(),
                o + 1 - cfg.char_order,
            )
        };
        let ref_tot = ngram_count(ref_len, n);
        // No hypothesis n-grams count where the reference has none of that order.
        stats.push(if ref_tot > 0 {
            ngram_count(hyp_len, n)
        } else {
            0
        });
        stats.push(ref_tot);
        stats.push(m);
    }
    stats
}

/// sacreBLEU's `CHRF._compute_f_score` over `[hyp, ref, match]` triples.
pub fn compute_f_score(stats: &[u64], beta: u32, eps_smoothing: bool) -> f64 {
    const EPS: f64 = 1e-16;
    let order = stats.len() / 3;
    let factor = (beta as f64).powi(2);
    let mut score = 0.0;
    let mut effective_order = 0usize;
    let mut avg_prec = 0.0;
    let mut avg_rec = 0.0;
    for i in 0..order {
        let (n_hyp, n_ref, n_match) = (stats[3 * i], stats[3 * i + 1], stats[3 * i + 2]);
        let prec = if n_hyp > 0 {
            n_match as f64 / n_hyp as f64
        } else {
            EPS
        };
        let rec = if n_ref > 0 {
            n_match as f64 / n_ref as f64
        } else {
            EPS
        };
        let denom = factor * prec + rec;
        score += if denom > 0.0 {
            (1.0 + factor) * prec * rec / denom
        } else {
            EPS
        };
        if n_hyp > 0 && n_ref > 0 {
            avg_prec += prec;
            avg_rec += rec;
            effective_order += 1;
        }
    }
    if eps_smoothing {
        return 100.0 * score / order as f64;
    }
    if effective_order == 0 {
        avg_prec = 0.0;
        avg_rec = 0.0;
    } else {
        avg_prec /= effective_order as f64;
        avg_rec /= effective_order as f64;
    }
    if avg_prec + avg_rec != 0.0 {
        let mut score = (1.0 + factor) * avg_prec * avg_rec;
        score /= (factor * avg_prec) + avg_rec;
        100.0 * score
    } else {
        0.0
    }
}

/// A chrF scorer with preprocessed references cached.
#[derive(Clone, Debug)]
pub struct Chrf {
    config: ChrfConfig,
    /// Per segment, its preprocessed references and their whitespace-free forms.
    refs: Vec<Vec<(String, String)>>,
    nrefs: usize,
}

impl Chrf {
    /// Caches the references: `refs[stream][segment]`.
    pub fn new<S: AsRef<str> + Sync>(
        config: ChrfConfig,
        refs: &[Vec<S>],
    ) -> Result<Self, BleuError> {
        if config.char_order + config.word_order == 0 {
            return Err(BleuError::InvalidConfig(
                "chrF needs a character or word order of at least 1".into(),
            ));
        }
        let n = check_streams(refs)?;
        let segs = (0..n)
            .into_par_iter()
            .map(|i| {
                refs.iter()
                    .map(|stream| {
                        let text = config.preprocess(stream[i].as_ref());
                        let compacted = compact(&text);
                        (text, compacted)
                    })
                    .collect()
            })
            .collect();
        Ok(Chrf {
            config,
            refs: segs,
            nrefs: refs.len(),
        })
    }

    /// The options in use.
    pub fn config(&self) -> &ChrfConfig {
        &self.config
    }

    /// Scores a corpus.
    pub fn corpus_score<S: AsRef<str> + Sync>(&self, hyps: &[S]) -> Result<ChrfScore, BleuError> {
        let stats = self.segment_stats(hyps)?;
        Ok(self.score_from_sums(&stats.sum()))
    }

    /// Scores each segment on its own.
    pub fn sentence_scores<S: AsRef<str> + Sync>(
        &self,
        hyps: &[S],
    ) -> Result<Vec<ChrfScore>, BleuError> {
        let stats = self.segment_stats(hyps)?;
        Ok(stats.rows().map(|r| self.score_from_sums(r)).collect())
    }

    /// The chrF score of aggregated `[hyp, ref, match]` statistics.
    pub fn score_from_sums(&self, sums: &[u64]) -> ChrfScore {
        ChrfScore {
            name: self.config.name(),
            score: compute_f_score(sums, self.config.beta, self.config.eps_smoothing),
            char_order: self.config.char_order,
            word_order: self.config.word_order,
            beta: self.config.beta,
        }
    }
}

impl StatsMetric for Chrf {
    fn name(&self) -> String {
        self.config.name()
    }

    fn segment_stats<S: AsRef<str> + Sync>(&self, hyps: &[S]) -> Result<SegmentStats, BleuError> {
        if hyps.len() != self.refs.len() {
            return Err(BleuError::SegmentMismatch {
                hyps: hyps.len(),
                stream: 0,
                refs: self.refs.len(),
            });
        }
        let cfg = &self.config;
        let order = cfg.order();
        let rows: Vec<Vec<u64>> = hyps
            .par_iter()
            .zip(self.refs.par_iter())
            .map(|(hyp, refs)| {
                let text = cfg.preprocess(hyp.as_ref());
                let compacted = compact(&text);
                let hyp_units = Units::new(&text, &compacted, cfg);
                let mut best: Option<(f64, Vec<u64>)> = None;
                for (ref_text, ref_compact) in refs {
                    let ref_units = Units::new(ref_text, ref_compact, cfg);
                    let stats = match_stats(&hyp_units, &ref_units, cfg);
                    let f = compute_f_score(&stats, cfg.beta, cfg.eps_smoothing);
                    if best.as_ref().map_or(true, |(bf, _)| f > *bf) {
                        best = Some((f, stats));
                    }
                }
                best.map_or_else(|| vec![0; 3 * order], |(_, s)| s)
            })
            .collect();
        Ok(SegmentStats::new(3 * order, rows.concat()))
    }

    fn score(&self, sums: &[u64]) -> f64 {
        compute_f_score(sums, self.config.beta, self.config.eps_smoothing)
    }

    fn signature(&self) -> Signature {
        let cfg = &self.config;
        let mut sig = Signature::new(self.nrefs);
        sig.set("case", if cfg.lowercase { "lc" } else { "mixed" });
        sig.set("eff", if cfg.eps_smoothing { "no" } else { "yes" });
        sig.set("nc", cfg.char_order);
        sig.set("nw", cfg.word_order);
        sig.set("space", if cfg.whitespace { "yes" } else { "no" });
        sig
    }
}

/// Corpus chrF of `hyps` against `refs[stream][segment]`.
pub fn corpus_chrf<S: AsRef<str> + Sync, R: AsRef<str> + Sync>(
    hyps: &[S],
    refs: &[Vec<R>],
    config: &ChrfConfig,
) -> Result<ChrfScore, BleuError> {
    Chrf::new(*config, refs)?.corpus_score(hyps)
}

/// Sentence chrF of one hypothesis against its references.
pub fn sentence_chrf<R: AsRef<str> + Sync>(
    hyp: &str,
    refs: &[R],
    config: &ChrfConfig,
) -> Result<ChrfScore, BleuError> {
    let streams: Vec<Vec<&str>> = refs.iter().map(|r| vec![r.as_ref()]).collect();
    Chrf::new(*config, &streams)?.corpus_score(&[hyp])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn punctuation_split() {
        assert_eq!(
            split_punctuation("(hi) \"x a, ! -- é."),
            ["(hi", ")", "\"", "x", "a", ",", "!", "-", "-", "é", "."]
        );
    }

    #[test]
    fn identical_is_100() {
        let refs = vec![vec!["Ein Hund läuft."]];
        let s = corpus_chrf(&["Ein Hund läuft."], &refs, &ChrfConfig::plus_plus()).unwrap();
        assert!((s.score - 100.0).abs() < 1e-9);
        assert_eq!(s.name, "chrF2++");
        let s = corpus_chrf(&[""], &refs, &ChrfConfig::default()).unwrap();
        assert_eq!(s.score, 0.0);
    }
}
