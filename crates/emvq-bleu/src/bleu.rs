//! BLEU (Papineni et al., 2002) as sacreBLEU 2.x computes it: n-gram
//! sufficient statistics per segment, closest reference length (ties go to the
//! shorter reference), corpus-level brevity penalty, and the `none`, `floor`,
//! `add-k` and `exp` smoothing methods with optional effective order.

use std::fmt;
use std::hash::Hash;
use std::str::FromStr;

use rayon::prelude::*;
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::error::BleuError;
use crate::signature::Signature;
use crate::significance::{SegmentStats, StatsMetric};
use crate::text::{py_lower, py_normalize_space, py_rstrip};
use crate::tokenizers::Tokenizer;

/// The default maximum n-gram order.
pub const MAX_NGRAM_ORDER: usize = 4;

/// A smoothing method with its value where it takes one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Smoothing {
    /// No smoothing.
    None,
    /// Zero matches count as `value` matches (Chen & Cherry method 1).
    Floor(f64),
    /// Adds `value` to matches and totals of orders above 1 (method 2).
    AddK(f64),
    /// mteval's exponential decay (method 3); sacreBLEU's default.
    Exp,
}

impl Smoothing {
    /// sacreBLEU's default value for `floor`.
    pub const FLOOR_DEFAULT: f64 = 0.1;
    /// sacreBLEU's default value for `add-k`.
    pub const ADD_K_DEFAULT: f64 = 1.0;

    /// Builds a method from its name and an optional value (defaults as in sacreBLEU).
    pub fn from_name(name: &str, value: Option<f64>) -> Result<Self, BleuError> {
        Ok(match name {
            "none" => Smoothing::None,
            "floor" => Smoothing::Floor(value.unwrap_or(Self::FLOOR_DEFAULT)),
            "add-k" => Smoothing::AddK(value.unwrap_or(Self::ADD_K_DEFAULT)),
            "exp" => Smoothing::Exp,
            other => return Err(BleuError::UnknownSmoothing(other.to_string())),
        })
    }

    /// The method's name.
    pub fn name(self) -> &'static str {
        match self {
            Smoothing::None => "none",
            Smoothing::Floor(_) => "floor",
            Smoothing::AddK(_) => "add-k",
            Smoothing::Exp => "exp",
        }
    }

    /// The signature form, e.g. `exp` or `floor[0.10]`.
    pub fn signature(self) -> String {
        match self {
            Smoothing::Floor(v) | Smoothing::AddK(v) => format!("{}[{v:.2}]", self.name()),
            _ => self.name().to_string(),
        }
    }
}

impl FromStr for Smoothing {
    type Err = BleuError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Smoothing::from_name(s, None)
    }
}

/// BLEU options; `Default` gives sacreBLEU's corpus defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BleuConfig {
    /// The tokenizer (default `13a`).
    pub tokenizer: Tokenizer,
    /// Lowercase hypotheses and references first (default off: `case:mixed`).
    pub lowercase: bool,
    /// The smoothing method (default `exp`).
    pub smoothing: Smoothing,
    /// The maximum n-gram order (default 4).
    pub max_ngram_order: usize,
    /// Leave out orders above the highest order with n-grams (default off).
    pub effective_order: bool,
}

impl Default for BleuConfig {
    fn default() -> Self {
        BleuConfig {
            tokenizer: Tokenizer::Tok13a,
            lowercase: false,
            smoothing: Smoothing::Exp,
            max_ngram_order: MAX_NGRAM_ORDER,
            effective_order: false,
        }
    }
}

impl BleuConfig {
    /// The defaults of sacreBLEU's `sentence_bleu` and `--sentence-level`:
    /// corpus defaults with effective order on.
    pub fn sentence() -> Self {
        BleuConfig {
            effective_order: true,
            ..BleuConfig::default()
        }
    }

    fn validate(&self) -> Result<(), BleuError> {
        if self.max_ngram_order == 0 {
            return Err(BleuError::InvalidConfig(
                "max n-gram order must be at least 1".into(),
            ));
        }
        match self.smoothing {
            Smoothing::Floor(v) | Smoothing::AddK(v) if !v.is_finite() || v < 0.0 => Err(
                BleuError::InvalidConfig(format!("smoothing value must be >= 0, got {v}")),
            ),
            _ => Ok(()),
        }
    }

    /// Lowercases (optionally), strips trailing whitespace and tokenizes one
    /// segment, returning its tokens joined by single spaces.
    pub fn preprocess(&self, sent: &str) -> String {
        let lowered;
        let sent = if self.lowercase {
            lowered = py_lower(sent);
            lowered.as_str()
        } else {
            sent
        };
        let tokenized = self.tokenizer.tokenize(py_rstrip(sent));
        match self.tokenizer {
            Tokenizer::None | Tokenizer::Char => py_normalize_space(&tokenized),
            _ => tokenized,
        }
    }

    /// The signature pairs of these options (without `nrefs` and `version`).
    fn sign(&self, sig: &mut Signature) {
        sig.set("case", if self.lowercase { "lc" } else { "mixed" });
        sig.set("eff", if self.effective_order { "yes" } else { "no" });
        sig.set("tok", self.tokenizer.name());
        sig.set("smooth", self.smoothing.signature());
    }
}

/// A BLEU score with its statistics, as sacreBLEU's `BLEUScore`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BleuScore {
    /// BLEU in [0, 100].
    pub score: f64,
    /// Matched n-grams per order (before any add-k smoothing).
    pub counts: Vec<u64>,
    /// Hypothesis n-grams per order (before any add-k smoothing).
    pub totals: Vec<u64>,
    /// The (smoothed) precisions per order, in percent.
    pub precisions: Vec<f64>,
    /// The brevity penalty.
    pub bp: f64,
    /// Total hypothesis length in tokens.
    pub sys_len: u64,
    /// Total (closest) reference length in tokens.
    pub ref_len: u64,
    /// `sys_len / ref_len` (0 when `ref_len` is 0).
    pub ratio: f64,
}

impl BleuScore {
    /// The part after the score, e.g.
    /// `55.0/30.1/18.2/11.5 (BP = 1.000 ratio = 1.012 hyp_len = 100 ref_len = 99)`.
    pub fn verbose(&self) -> String {
        let precs: Vec<String> = self.precisions.iter().map(|p| format!("{p:.1}")).collect();
        format!(
            "{} (BP = {:.3} ratio = {:.3} hyp_len = {} ref_len = {})",
            precs.join("/"),
            self.bp,
            self.ratio,
            self.sys_len,
            self.ref_len
        )
    }

    /// sacreBLEU's text line: `BLEU|<signature> = <score> <verbose>`.
    pub fn format(&self, width: usize, signature: &Signature) -> String {
        format!(
            "BLEU|{signature} = {:.width$} {}",
            self.score,
            self.verbose()
        )
    }
}

impl fmt::Display for BleuScore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BLEU = {:.2} {}", self.score, self.verbose())
    }
}

/// sacreBLEU's floored logarithm.
fn my_log(x: f64) -> f64 {
    if x == 0.0 {
        -9_999_999_999.0
    } else {
        x.ln()
    }
}

/// Computes BLEU from aggregated sufficient statistics exactly as sacreBLEU's
/// `BLEU.compute_bleu`. The maximum order is `correct.len()`.
pub fn compute_bleu(
    correct: &[u64],
    total: &[u64],
    sys_len: u64,
    ref_len: u64,
    smoothing: Smoothing,
    effective_order: bool,
) -> BleuScore {
    let max_order = correct.len().min(total.len());
    let mut bp = 1.0;
    if sys_len < ref_len {
        bp = if sys_len > 0 {
            (1.0 - ref_len as f64 / sys_len as f64).exp()
        } else {
            0.0
        };
    }
    let ratio = if ref_len > 0 {
        sys_len as f64 / ref_len as f64
    } else {
        0.0
    };
    let mut precisions = vec![0.0; max_order];
    let mut result = BleuScore {
        score: 0.0,
        counts: correct[..max_order].to_vec(),
        totals: total[..max_order].to_vec(),
        precisions: Vec::new(),
        bp,
        sys_len,
        ref_len,
        ratio,
    };
    if correct[..max_order].iter().all(|&c| c == 0) {
        result.precisions = precisions;
        return result;
    }

    let mut smooth_mteval = 1.0;
    let mut eff_order = max_order;
    for n in 1..=max_order {
        let mut c = correct[n - 1] as f64;
        let mut t = total[n - 1] as f64;
        if let Smoothing::AddK(k) = smoothing {
            if n > 1 {
                c += k;
                t += k;
            }
        }
        if t == 0.0 {
            break;
        }
        if effective_order {
            eff_order = n;
        }
        if c == 0.0 {
            match smoothing {
                Smoothing::Exp => {
                    smooth_mteval *= 2.0;
                    precisions[n - 1] = 100.0 / (smooth_mteval * t);
                }
                Smoothing::Floor(v) => precisions[n - 1] = 100.0 * v / t,
                _ => {}
            }
        } else {
            precisions[n - 1] = 100.0 * c / t;
        }
    }
    let log_sum = precisions[..eff_order]
        .iter()
        .fold(0.0, |acc, &p| acc + my_log(p));
    result.score = bp * (log_sum / eff_order as f64).exp();
    result.precisions = precisions;
    result
}

/// Longest n-gram whose token ids pack into a `u128` key (32 bits a token).
const PACKED_MAX_ORDER: usize = 4;

/// Packs up to four token ids into one integer; every 32-bit slot holds the
/// id plus one, so n-grams of different orders never share a key.
#[inline]
fn packed_key(gram: &[u32]) -> u128 {
    gram.iter()
        .fold(0u128, |k, &id| (k << 32) | (id as u128 + 1))
}

/// Reusable buffers for counting the n-grams of one segment after another.
/// Tokens are mapped to small integers per segment (hypothesis and references
/// share the mapping), so n-grams compare as integer keys.
struct NgramCounter<'a, K, F> {
    max_order: usize,
    key: F,
    token_ids: FxHashMap<&'a str, u32>,
    ref_counts: FxHashMap<K, u32>,
    one_ref: FxHashMap<K, u32>,
}

impl<'a, K: Hash + Eq, F: Fn(&[u32]) -> K> NgramCounter<'a, K, F> {
    fn new(max_order: usize, key: F) -> Self {
        NgramCounter {
            max_order,
            key,
            token_ids: FxHashMap::default(),
            ref_counts: FxHashMap::default(),
            one_ref: FxHashMap::default(),
        }
    }

    /// The ids of the tokens of a string whose tokens are separated by single spaces.
    fn ids(&mut self, s: &'a str) -> Vec<u32> {
        let mut ids = Vec::new();
        if s.is_empty() {
            return ids;
        }
        let mut start = 0;
        for (i, b) in s
            .bytes()
            .enumerate()
            .chain(std::iter::once((s.len(), b' ')))
        {
            if b == b' ' {
                let next = self.token_ids.len() as u32;
                ids.push(*self.token_ids.entry(&s[start..i]).or_insert(next));
                start = i + 1;
            }
        }
        ids
    }

    /// Appends `[sys_len, ref_len, correct.., total..]` of one preprocessed
    /// hypothesis against its preprocessed references to `out`.
    fn segment_stats(&mut self, hyp: &'a str, refs: &'a [String], out: &mut Vec<u64>) {
        let max_order = self.max_order;
        self.token_ids.clear();
        self.ref_counts.clear();
        let hyp_ids = self.ids(hyp);
        let mut ref_lens = Vec::with_capacity(refs.len());
        // Reference n-gram counts, the maximum over references.
        for (k, r) in refs.iter().enumerate() {
            let ids = self.ids(r);
            ref_lens.push(ids.len());
            let target = if k == 0 {
                &mut self.ref_counts
            } else {
                self.one_ref.clear();
                &mut self.one_ref
            };
            for n in 1..=max_order {
                for gram in ids.windows(n) {
                    *target.entry((self.key)(gram)).or_insert(0) += 1;
                }
            }
            if k > 0 {
                for (g, c) in self.one_ref.drain() {
                    let e = self.ref_counts.entry(g).or_insert(0);
                    *e = (*e).max(c);
                }
            }
        }
        // Each hypothesis n-gram matches while the reference has unused copies
        // left: this sums min(hypothesis count, reference count) per n-gram.
        let mut correct = vec![0u64; max_order];
        let mut total = vec![0u64; max_order];
        for n in 1..=max_order {
            for gram in hyp_ids.windows(n) {
                total[n - 1] += 1;
                if let Some(c) = self.ref_counts.get_mut(&(self.key)(gram)) {
                    if *c > 0 {
                        *c -= 1;
                        correct[n - 1] += 1;
                    }
                }
            }
        }
        out.push(hyp_ids.len() as u64);
        out.push(closest_ref_len(hyp_ids.len(), &ref_lens) as u64);
        out.extend(correct);
        out.extend(total);
    }
}

/// Statistics of all segments, in segment order; chunks of segments are
/// counted in parallel.
fn corpus_stats<K: Hash + Eq, F: Fn(&[u32]) -> K + Copy + Sync>(
    hyps: &[String],
    refs: &[Vec<String>],
    max_order: usize,
    key: F,
) -> Vec<u64> {
    const CHUNK: usize = 64;
    let chunks: Vec<Vec<u64>> = hyps
        .par_chunks(CHUNK)
        .zip(refs.par_chunks(CHUNK))
        .map(|(hyps, refs)| {
            let mut counter = NgramCounter::new(max_order, key);
            let mut out = Vec::with_capacity(hyps.len() * (2 + 2 * max_order));
            for (hyp, refs) in hyps.iter().zip(refs) {
                counter.segment_stats(hyp, refs, &mut out);
            }
            out
        })
        .collect();
    chunks.concat()
}

/// The reference length closest to the hypothesis length, the shorter on ties.
fn closest_ref_len(hyp_len: usize, ref_lens: &[usize]) -> usize {
    let mut best: Option<(usize, usize)> = None;
    for &len in ref_lens {
        let diff = hyp_len.abs_diff(len);
        best = match best {
            Some((d, l)) if d < diff || (d == diff && l <= len) => Some((d, l)),
            _ => Some((diff, len)),
        };
    }
    best.map_or(0, |(_, l)| l)
}

/// Checks that all reference streams have `n` segments.
pub(crate) fn check_streams<S: AsRef<str> + Sync>(refs: &[Vec<S>]) -> Result<usize, BleuError> {
    let n = refs.first().ok_or(BleuError::NoReferences)?.len();
    for (stream, r) in refs.iter().enumerate() {
        if r.len() != n {
            return Err(BleuError::SegmentMismatch {
                hyps: n,
                stream,
                refs: r.len(),
            });
        }
    }
    Ok(n)
}

/// A BLEU scorer with preprocessed references cached, for scoring one or
/// several systems against the same references.
#[derive(Clone, Debug)]
pub struct Bleu {
    config: BleuConfig,
    /// Per segment, its preprocessed references.
    refs: Vec<Vec<String>>,
    nrefs: usize,
}

impl Bleu {
    /// Caches the references: `refs[stream][segment]`, one stream per reference set.
    pub fn new<S: AsRef<str> + Sync>(
        config: BleuConfig,
        refs: &[Vec<S>],
    ) -> Result<Self, BleuError> {
        config.validate()?;
        let n = check_streams(refs)?;
        let segs = (0..n)
            .into_par_iter()
            .map(|i| {
                refs.iter()
                    .map(|stream| config.preprocess(stream[i].as_ref()))
                    .collect()
            })
            .collect();
        Ok(Bleu {
            config,
            refs: segs,
            nrefs: refs.len(),
        })
    }

    /// The options in use.
    pub fn config(&self) -> &BleuConfig {
        &self.config
    }

    /// Number of segments.
    pub fn len(&self) -> usize {
        self.refs.len()
    }

    /// Whether there are no segments.
    pub fn is_empty(&self) -> bool {
        self.refs.is_empty()
    }

    /// Scores a corpus.
    pub fn corpus_score<S: AsRef<str> + Sync>(&self, hyps: &[S]) -> Result<BleuScore, BleuError> {
        let stats = self.segment_stats(hyps)?;
        Ok(self.score_from_sums(&stats.sum()))
    }

    /// Scores each segment on its own (sentence BLEU with this configuration).
    pub fn sentence_scores<S: AsRef<str> + Sync>(
        &self,
        hyps: &[S],
    ) -> Result<Vec<BleuScore>, BleuError> {
        let stats = self.segment_stats(hyps)?;
        Ok(stats.rows().map(|r| self.score_from_sums(r)).collect())
    }

    /// The BLEU score of aggregated statistics `[sys_len, ref_len, correct.., total..]`.
    pub fn score_from_sums(&self, sums: &[u64]) -> BleuScore {
        let n = self.config.max_ngram_order;
        compute_bleu(
            &sums[2..2 + n],
            &sums[2 + n..2 + 2 * n],
            sums[0],
            sums[1],
            self.config.smoothing,
            self.config.effective_order,
        )
    }
}

impl StatsMetric for Bleu {
    fn name(&self) -> String {
        "BLEU".to_string()
    }

    fn segment_stats<S: AsRef<str> + Sync>(&self, hyps: &[S]) -> Result<SegmentStats, BleuError> {
        if hyps.len() != self.refs.len() {
            return Err(BleuError::SegmentMismatch {
                hyps: hyps.len(),
                stream: 0,
                refs: self.refs.len(),
            });
        }
        let n = self.config.max_ngram_order;
        let hyps: Vec<String> = hyps
            .par_iter()
            .map(|h| self.config.preprocess(h.as_ref()))
            .collect();
        let values = if n <= PACKED_MAX_ORDER {
            corpus_stats(&hyps, &self.refs, n, packed_key)
        } else {
            corpus_stats(&hyps, &self.refs, n, <[u32]>::to_vec)
        };
        Ok(SegmentStats::new(2 + 2 * n, values))
    }

    fn score(&self, sums: &[u64]) -> f64 {
        self.score_from_sums(sums).score
    }

    fn signature(&self) -> Signature {
        let mut sig = Signature::new(self.nrefs);
        self.config.sign(&mut sig);
        sig
    }
}

/// Corpus BLEU of `hyps` against `refs[stream][segment]`.
pub fn corpus_bleu<S: AsRef<str> + Sync, R: AsRef<str> + Sync>(
    hyps: &[S],
    refs: &[Vec<R>],
    config: &BleuConfig,
) -> Result<BleuScore, BleuError> {
    let n = check_streams(refs)?;
    if hyps.len() != n {
        return Err(BleuError::SegmentMismatch {
            hyps: hyps.len(),
            stream: 0,
            refs: n,
        });
    }
    Bleu::new(*config, refs)?.corpus_score(hyps)
}

/// Sentence BLEU of one hypothesis against its references. Use
/// [`BleuConfig::sentence`] for sacreBLEU's `sentence_bleu` defaults.
pub fn sentence_bleu<R: AsRef<str> + Sync>(
    hyp: &str,
    refs: &[R],
    config: &BleuConfig,
) -> Result<BleuScore, BleuError> {
    let streams: Vec<Vec<&str>> = refs.iter().map(|r| vec![r.as_ref()]).collect();
    Bleu::new(*config, &streams)?.corpus_score(&[hyp])
}

/// sacreBLEU's heuristic for forgotten detokenization: at least 100
/// hypotheses ending in `" ."`.
pub fn looks_tokenized<S: AsRef<str> + Sync>(hyps: &[S]) -> bool {
    hyps.iter().filter(|h| h.as_ref().ends_with(" .")).count() >= 100
}

/// The warning lines sacreBLEU logs when [`looks_tokenized`] holds.
pub const TOKENIZED_WARNING: [&str; 3] = [
    "That's 100 lines that end in a tokenized period ('.')",
    "It looks like you forgot to detokenize your test data, which may hurt your score.",
    "If you insist your data is detokenized, or don't care, you can suppress this message with the `force` parameter.",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_and_empty() {
        let refs = vec![vec!["a b c d e".to_string()]];
        let s = corpus_bleu(&["a b c d e"], &refs, &BleuConfig::default()).unwrap();
        assert!((s.score - 100.0).abs() < 1e-12);
        let s = corpus_bleu(&[""], &refs, &BleuConfig::default()).unwrap();
        assert_eq!(s.score, 0.0);
        assert_eq!(s.bp, 0.0);
    }

    #[test]
    fn closest_length_prefers_shorter_on_ties() {
        assert_eq!(closest_ref_len(5, &[7, 3]), 3);
        assert_eq!(closest_ref_len(5, &[3, 7]), 3);
        assert_eq!(closest_ref_len(5, &[6, 9]), 6);
    }

    #[test]
    fn python_style_rounding() {
        // Python formats with round-half-even on the exact binary value.
        assert_eq!(format!("{:.1}", 0.25), "0.2");
        assert_eq!(format!("{:.1}", 0.35), "0.3");
        assert_eq!(format!("{:.2}", 0.125), "0.12");
        assert_eq!(format!("{:.2}", 2.675), "2.67");
    }

    #[test]
    fn errors() {
        let refs: Vec<Vec<String>> = vec![];
        assert!(corpus_bleu(&["x"], &refs, &BleuConfig::default()).is_err());
        let refs = vec![vec!["a".to_string()], vec![]];
        assert!(corpus_bleu(&["x"], &refs, &BleuConfig::default()).is_err());
        let cfg = BleuConfig {
            max_ngram_order: 0,
            ..BleuConfig::default()
        };
        assert!(corpus_bleu(&["x"], &[vec!["x"]], &cfg).is_err());
    }
}
