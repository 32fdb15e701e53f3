//! Paired significance tests as sacreBLEU's `--paired-bs` and `--paired-ar`
//! run them, on cached per-segment sufficient statistics:
//!
//! * bootstrap resampling (default 1000 resamples): the same resampled
//!   segment indices for the baseline and every system; a system's 95% CI is
//!   half the distance between the `n/40`-th and `(n - n/40 - 1)`-th sorted
//!   resampled scores and its mean the resamples' mean; the p-value is
//!   `(#{|d_i| - mean|d| > |Δ|} + 1) / (n + 1)` over resampled differences `d_i`;
//! * approximate randomisation (default 10000 trials): each trial swaps each
//!   segment's statistics between baseline and system with probability ½;
//!   p = `(#{|a_i - b_i| > |Δ|} + 1) / (n + 1)`.
//!
//! The random numbers come from a seeded ChaCha generator, not numpy's PCG64,
//! so individual p-values and CIs differ from sacreBLEU's by sampling noise.

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde::Serialize;

use crate::error::BleuError;
use crate::signature::Signature;

/// sacreBLEU's default number of bootstrap resamples.
pub const DEFAULT_BS_SAMPLES: usize = 1000;
/// sacreBLEU's default number of approximate randomisation trials.
pub const DEFAULT_AR_TRIALS: usize = 10000;
/// sacreBLEU's default seed.
pub const DEFAULT_SEED: u64 = 12345;

/// Per-segment sufficient statistics: one row of `width` counts per segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentStats {
    width: usize,
    values: Vec<u64>,
}

impl SegmentStats {
    /// Wraps row-major statistics.
    pub fn new(width: usize, values: Vec<u64>) -> Self {
        debug_assert!(width > 0 && values.len() % width == 0);
        SegmentStats { width, values }
    }

    /// Number of statistics per segment.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Number of segments.
    pub fn len(&self) -> usize {
        self.values.len() / self.width
    }

    /// Whether there are no segments.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// One segment's row.
    pub fn row(&self, i: usize) -> &[u64] {
        &self.values[i * self.width..(i + 1) * self.width]
    }

    /// All rows.
    pub fn rows(&self) -> impl Iterator<Item = &[u64]> {
        self.values.chunks_exact(self.width)
    }

    /// Column sums: the corpus-level statistics.
    pub fn sum(&self) -> Vec<u64> {
        let mut sums = vec![0u64; self.width];
        for row in self.rows() {
            add_row(&mut sums, row);
        }
        sums
    }
}

fn add_row(acc: &mut [u64], row: &[u64]) {
    for (a, &v) in acc.iter_mut().zip(row) {
        *a += v;
    }
}

/// A metric whose corpus score is a function of summed segment statistics.
pub trait StatsMetric {
    /// The score's name, e.g. `BLEU` or `chrF2++`.
    fn name(&self) -> String;
    /// Per-segment statistics of a system's hypotheses.
    fn segment_stats<S: AsRef<str> + Sync>(&self, hyps: &[S]) -> Result<SegmentStats, BleuError>;
    /// The score of summed statistics.
    fn score(&self, sums: &[u64]) -> f64;
    /// The metric's signature.
    fn signature(&self) -> Signature;
}

/// Mean and 95% confidence half-width of resampled scores.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ConfidenceInterval {
    /// Mean of the resampled scores.
    pub mean: f64,
    /// Half the width of the central 95% of the resampled scores.
    pub ci: f64,
}

/// sacreBLEU's `estimate_ci`.
pub fn estimate_ci(scores: &[f64]) -> ConfidenceInterval {
    let mut sorted = scores.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        return ConfidenceInterval {
            mean: f64::NAN,
            ci: f64::NAN,
        };
    }
    let lower = n / 40;
    let upper = n - lower - 1;
    ConfidenceInterval {
        mean: sorted.iter().sum::<f64>() / n as f64,
        ci: 0.5 * (sorted[upper] - sorted[lower]),
    }
}

/// One system's result in a paired test (the baseline has no p-value).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PairedResult {
    /// The actual corpus score.
    pub score: f64,
    /// p-value against the baseline.
    pub p_value: Option<f64>,
    /// Bootstrap mean.
    pub mean: Option<f64>,
    /// Bootstrap 95% CI half-width.
    pub ci: Option<f64>,
}

fn make_rng(seed: Option<u64>) -> StdRng {
    match seed {
        Some(s) => StdRng::seed_from_u64(s),
        None => StdRng::from_entropy(),
    }
}

fn check_inputs(
    baseline: &SegmentStats,
    systems: &[SegmentStats],
    n: usize,
) -> Result<(), BleuError> {
    if n == 0 {
        return Err(BleuError::InvalidConfig(
            "the number of samples must be at least 1".into(),
        ));
    }
    if baseline.is_empty() {
        return Err(BleuError::InvalidConfig(
            "significance tests need at least one segment".into(),
        ));
    }
    for s in systems {
        if s.len() != baseline.len() || s.width() != baseline.width() {
            return Err(BleuError::InvalidConfig(
                "all systems must have statistics of the same shape as the baseline".into(),
            ));
        }
    }
    Ok(())
}

/// Resampled corpus scores of several systems, all over the same `n_samples`
/// bootstrap resamples drawn from `seed`.
pub fn bootstrap_scores<M: StatsMetric>(
    metric: &M,
    systems: &[&SegmentStats],
    n_samples: usize,
    seed: Option<u64>,
) -> Vec<Vec<f64>> {
    let mut rng = make_rng(seed);
    let n_seg = systems.first().map_or(0, |s| s.len());
    let width = systems.first().map_or(0, |s| s.width());
    let mut scores = vec![Vec::with_capacity(n_samples); systems.len()];
    if n_seg == 0 {
        return scores;
    }
    let mut idx = vec![0usize; n_seg];
    let mut sums = vec![0u64; width];
    for _ in 0..n_samples {
        for i in idx.iter_mut() {
            *i = rng.gen_range(0..n_seg);
        }
        for (stats, out) in systems.iter().zip(scores.iter_mut()) {
            sums.iter_mut().for_each(|s| *s = 0);
            for &i in &idx {
                add_row(&mut sums, stats.row(i));
            }
            out.push(metric.score(&sums));
        }
    }
    scores
}

/// sacreBLEU's p-value: `(#{s > observed} + 1) / (n + 1)`.
fn p_value(samples: &[f64], observed: f64) -> f64 {
    let c = samples.iter().filter(|&&s| s > observed).count();
    (c + 1) as f64 / (samples.len() + 1) as f64
}

/// Paired bootstrap resampling of `systems` against `baseline`. Returns the
/// baseline's result first, then one per system.
pub fn paired_bs<M: StatsMetric>(
    metric: &M,
    baseline: &SegmentStats,
    systems: &[SegmentStats],
    n_samples: usize,
    seed: Option<u64>,
) -> Result<Vec<PairedResult>, BleuError> {
    check_inputs(baseline, systems, n_samples)?;
    let mut all: Vec<&SegmentStats> = vec![baseline];
    all.extend(systems.iter());
    let resampled = bootstrap_scores(metric, &all, n_samples, seed);
    let bl_score = metric.score(&baseline.sum());
    let bl_ci = estimate_ci(&resampled[0]);
    let mut results = vec![PairedResult {
        score: bl_score,
        p_value: None,
        mean: Some(bl_ci.mean),
        ci: Some(bl_ci.ci),
    }];
    for (stats, sys_scores) in systems.iter().zip(&resampled[1..]) {
        let score = metric.score(&stats.sum());
        let diff = (bl_score - score).abs();
        let diffs: Vec<f64> = sys_scores
            .iter()
            .zip(&resampled[0])
            .map(|(s, b)| (s - b).abs())
            .collect();
        let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
        let centred: Vec<f64> = diffs.iter().map(|d| d - mean).collect();
        let ci = estimate_ci(sys_scores);
        results.push(PairedResult {
            score,
            p_value: Some(p_value(&centred, diff)),
            mean: Some(ci.mean),
            ci: Some(ci.ci),
        });
    }
    Ok(results)
}

/// Paired approximate randomisation of `systems` against `baseline`.
/// With `confidence_n` set, bootstrap CIs (that many resamples) are added as
/// sacreBLEU's API does with `n_ar_confidence`; its CLI leaves them out.
pub fn paired_ar<M: StatsMetric>(
    metric: &M,
    baseline: &SegmentStats,
    systems: &[SegmentStats],
    n_trials: usize,
    confidence_n: Option<usize>,
    seed: Option<u64>,
) -> Result<Vec<PairedResult>, BleuError> {
    check_inputs(baseline, systems, n_trials)?;
    let n_seg = baseline.len();
    let width = baseline.width();
    let bl_sum = baseline.sum();
    let bl_score = metric.score(&bl_sum);
    let mut results = vec![PairedResult {
        score: bl_score,
        p_value: None,
        mean: None,
        ci: None,
    }];
    for stats in systems {
        let sys_sum = stats.sum();
        let score = metric.score(&sys_sum);
        let diff = (bl_score - score).abs();
        // Every system sees the same trials, as in sacreBLEU (one RNG per system, same seed).
        let mut rng = make_rng(seed);
        let mut shuf_a = vec![0u64; width];
        let mut shuf_b = vec![0u64; width];
        let mut deltas = Vec::with_capacity(n_trials);
        let mut bits = 0u64;
        for _ in 0..n_trials {
            shuf_a.copy_from_slice(&sys_sum);
            for i in 0..n_seg {
                if i % 64 == 0 {
                    bits = rng.next_u64();
                }
                if (bits >> (i % 64)) & 1 == 1 {
                    // Swap: pseudo-system A takes the baseline's segment.
                    for ((a, &b), &s) in shuf_a.iter_mut().zip(baseline.row(i)).zip(stats.row(i)) {
                        *a = *a + b - s;
                    }
                }
            }
            for ((b, &a), (&x, &y)) in shuf_b
                .iter_mut()
                .zip(&shuf_a)
                .zip(bl_sum.iter().zip(&sys_sum))
            {
                *b = x + y - a;
            }
            deltas.push((metric.score(&shuf_a) - metric.score(&shuf_b)).abs());
        }
        results.push(PairedResult {
            score,
            p_value: Some(p_value(&deltas, diff)),
            mean: None,
            ci: None,
        });
    }
    if let Some(n_bs) = confidence_n {
        if n_bs > 0 {
            let mut all: Vec<&SegmentStats> = vec![baseline];
            all.extend(systems.iter());
            let resampled = bootstrap_scores(metric, &all, n_bs, seed);
            for (res, scores) in results.iter_mut().zip(&resampled) {
                let ci = estimate_ci(scores);
                res.mean = Some(ci.mean);
                res.ci = Some(ci.ci);
            }
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Mean;

    impl StatsMetric for Mean {
        fn name(&self) -> String {
            "mean".into()
        }
        fn segment_stats<S: AsRef<str> + Sync>(
            &self,
            hyps: &[S],
        ) -> Result<SegmentStats, BleuError> {
            let v = hyps.iter().map(|h| h.as_ref().len() as u64).collect();
            Ok(SegmentStats::new(1, v))
        }
        fn score(&self, sums: &[u64]) -> f64 {
            sums[0] as f64
        }
        fn signature(&self) -> Signature {
            Signature::new(1)
        }
    }

    #[test]
    fn ci_indices_follow_sacrebleu() {
        let scores: Vec<f64> = (0..1000).map(|i| i as f64).collect();
        let ci = estimate_ci(&scores);
        assert_eq!(ci.ci, 0.5 * (974.0 - 25.0));
        assert_eq!(ci.mean, 499.5);
    }

    #[test]
    fn p_values_and_errors() {
        let base = SegmentStats::new(1, vec![1; 50]);
        let same = base.clone();
        let far = SegmentStats::new(1, vec![9; 50]);
        let res = paired_ar(
            &Mean,
            &base,
            &[same.clone(), far.clone()],
            200,
            None,
            Some(1),
        )
        .unwrap();
        // Identical systems: no trial exceeds a zero difference, as in sacreBLEU.
        assert_eq!(res[1].p_value, Some(1.0 / 201.0));
        assert_eq!(res[2].p_value, Some(1.0 / 201.0));
        let res = paired_bs(&Mean, &base, &[far], 100, Some(1)).unwrap();
        assert!(res[1].p_value.unwrap() < 0.05);
        assert_eq!(res[0].ci, Some(0.0));
        assert!(paired_bs(&Mean, &base, &[same], 0, Some(1)).is_err());
        let empty = SegmentStats::new(1, vec![]);
        assert!(paired_ar(&Mean, &empty, &[], 10, None, None).is_err());
    }
}
