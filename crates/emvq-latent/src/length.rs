//! Target lengths for one-pass decoding, as the NATs of Roy et al. 2018
//! ("Theory and Experiments on Vector Quantized Autoencoders", arXiv
//! 1805.11063) and Gu et al. 2018 ("Non-Autoregressive Neural Machine
//! Translation", arXiv 1711.02281) need them before decoding:
//!
//! - [`LengthRule::T2t`]: `2·|x|`, tensor2tensor's `transformer_nat` rule;
//! - [`LengthRule::Ratio`]: `⌈a·|x| + b⌉`;
//! - [`LengthRule::Predicted`]: a classifier over the offset `|y| − |x|` in
//!   `[−max_offset, max_offset]` from the mean of the encoder states over the
//!   real (non-padding) source positions (one `Linear d_model → 2·max_offset+1`,
//!   PyTorch name `length_predictor`), trained with cross-entropy together
//!   with the model (its gradient reaches the encoder).
//!
//! Lengths count tokens *including EOS*: `|x|` is the number of non-padding
//! source tokens (emvq-data and T2T end every source with EOS) and a target
//! length `T` means `T` decoder positions whose last one should be EOS.
//! Every length handed out is at least 1.
//!
//! Candidate lengths for noisy parallel decoding (NPD): for the fixed rules,
//! the rule's length `c` then its neighbours `c+1, c−1, c+2, c−2, …`
//! (values below 1 skipped); for the classifier, the lengths of the offsets by
//! decreasing probability (ties: the smaller offset first), skipping lengths
//! below 1, then — when more are asked for than the offsets cover — the
//! neighbours of the best length in the same `+1, −1, +2, …` order.

use serde::{Deserialize, Serialize};
use tch::{nn, nn::Module, Kind, Tensor};

use crate::error::{LatentError, Result};

/// How target lengths are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LengthRule {
    /// `2·|x|` (tensor2tensor's `transformer_nat`).
    T2t,
    /// `⌈ratio_a·|x| + ratio_b⌉`.
    Ratio,
    /// A classifier over `|y| − |x|` from the pooled encoder output.
    Predicted,
}

/// Configuration of the [`LengthPredictor`] (every key required in TOML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LengthConfig {
    pub rule: LengthRule,
    /// Slope `a` of [`LengthRule::Ratio`].
    pub ratio_a: f64,
    /// Intercept `b` of [`LengthRule::Ratio`].
    pub ratio_b: f64,
    /// Largest `|y| − |x|` the classifier distinguishes; larger offsets are
    /// clamped into range for the loss. Used by [`LengthRule::Predicted`].
    pub max_offset: i64,
}

impl Default for LengthConfig {
    /// The classifier with offsets in `[−20, 20]`; `ratio` 1·|x| + 0.
    fn default() -> Self {
        Self {
            rule: LengthRule::Predicted,
            ratio_a: 1.0,
            ratio_b: 0.0,
            max_offset: 20,
        }
    }
}

impl LengthConfig {
    /// Checks the parameters the rule uses.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(LatentError::Config(m));
        match self.rule {
            LengthRule::T2t => Ok(()),
            LengthRule::Ratio if !(self.ratio_a.is_finite() && self.ratio_a > 0.0) => bad(format!(
                "length.ratio_a must be positive and finite, got {}",
                self.ratio_a
            )),
            LengthRule::Ratio if !self.ratio_b.is_finite() => bad(format!(
                "length.ratio_b must be finite, got {}",
                self.ratio_b
            )),
            LengthRule::Ratio => Ok(()),
            LengthRule::Predicted if self.max_offset < 1 => bad(format!(
                "length.max_offset must be at least 1, got {}",
                self.max_offset
            )),
            LengthRule::Predicted => Ok(()),
        }
    }

    /// The length the fixed rules give a source of `src_len` tokens (at
    /// least 1); `None` for [`LengthRule::Predicted`].
    pub fn rule_length(&self, src_len: i64) -> Option<i64> {
        match self.rule {
            LengthRule::T2t => Some((2 * src_len).max(1)),
            LengthRule::Ratio => {
                Some(((self.ratio_a * src_len as f64 + self.ratio_b).ceil() as i64).max(1))
            }
            LengthRule::Predicted => None,
        }
    }
}

/// Appends `centre, centre+1, centre−1, centre+2, …` to `out`, skipping
/// values below 1 and those already there, until it holds `n` lengths.
fn push_neighbours(out: &mut Vec<i64>, centre: i64, n: usize) {
    let order = std::iter::once(centre).chain((1..).flat_map(|k| [centre + k, centre - k]));
    for len in order {
        if out.len() >= n {
            break;
        }
        if len >= 1 && !out.contains(&len) {
            out.push(len);
        }
    }
}

/// Chooses target lengths (see the module doc). Parameters (rule
/// `predicted` only): `weight` `[2·max_offset+1, d_model]` and `bias`, under
/// the path the caller passes (by convention `&vs / "length_predictor"`).
#[derive(Debug)]
pub struct LengthPredictor {
    cfg: LengthConfig,
    /// `Some` for [`LengthRule::Predicted`].
    linear: Option<nn::Linear>,
}

impl LengthPredictor {
    pub fn new(vs: nn::Path, d_model: i64, cfg: &LengthConfig) -> Result<Self> {
        cfg.validate()?;
        if d_model <= 0 {
            return Err(LatentError::Config(format!(
                "length predictor: d_model must be positive, got {d_model}"
            )));
        }
        let linear = match cfg.rule {
            LengthRule::Predicted => Some(nn::linear(
                vs,
                d_model,
                2 * cfg.max_offset + 1,
                Default::default(),
            )),
            _ => None,
        };
        Ok(Self {
            cfg: cfg.clone(),
            linear,
        })
    }

    pub fn config(&self) -> &LengthConfig {
        &self.cfg
    }

    /// Offset logits `[batch, 2·max_offset+1]` (index `o + max_offset` for
    /// offset `o`) from `memory` `[batch, src_len, d_model]` mean-pooled over
    /// the positions where `src_pad_mask` `[batch, src_len]` is `false`.
    fn logits(
        &self,
        linear: &nn::Linear,
        memory: &Tensor,
        src_pad_mask: &Tensor,
    ) -> Result<Tensor> {
        let (ms, ps) = (memory.size(), src_pad_mask.size());
        if ms.len() != 3 || ps.len() != 2 || ms[..2] != ps[..] {
            return Err(LatentError::Shape(format!(
                "length predictor: memory {ms:?} and padding mask {ps:?} must be [b, s, d] and [b, s]"
            )));
        }
        let keep = src_pad_mask
            .f_logical_not()?
            .f_to_kind(memory.kind())?
            .f_unsqueeze(-1)?; // [batch, src_len, 1]
        let sum = memory
            .f_mul(&keep)?
            .f_sum_dim_intlist(1, false, memory.kind())?; // [batch, d_model]
        let count = keep
            .f_sum_dim_intlist(1, false, memory.kind())?
            .f_clamp_min(1.0)?; // [batch, 1]
        Ok(linear.forward(&sum.f_div(&count)?)) // [batch, 2·max_offset+1]
    }

    /// Mean cross-entropy of the true offsets `tgt_lens − src_lens` (both
    /// `[batch]` int64, EOS included; offsets clamped into range) — a scalar;
    /// a zero scalar for the fixed rules.
    pub fn loss(
        &self,
        memory: &Tensor,
        src_pad_mask: &Tensor,
        src_lens: &Tensor,
        tgt_lens: &Tensor,
    ) -> Result<Tensor> {
        let Some(linear) = &self.linear else {
            return Ok(Tensor::f_zeros([], (Kind::Float, memory.device()))?);
        };
        let logits = self.logits(linear, memory, src_pad_mask)?; // [batch, classes]
        let m = self.cfg.max_offset;
        let target = tgt_lens
            .f_sub(src_lens)?
            .f_clamp(-m, m)?
            .f_add_scalar(m)?
            .f_to_kind(Kind::Int64)?; // [batch]
        Ok(logits.f_cross_entropy_loss::<&Tensor>(
            &target,
            None,
            tch::Reduction::Mean,
            -100,
            0.0,
        )?)
    }

    /// Per row, `top_n` distinct candidate target lengths (EOS included, each
    /// ≥ 1), best first, in the order of the module doc. `src_lens` `[batch]`
    /// int64 counts the non-padding source tokens. Runs without gradients.
    pub fn lengths(
        &self,
        memory: &Tensor,
        src_pad_mask: &Tensor,
        src_lens: &Tensor,
        top_n: usize,
    ) -> Result<Vec<Vec<i64>>> {
        if top_n == 0 {
            return Err(LatentError::Config(
                "length predictor: top_n must be at least 1".into(),
            ));
        }
        let src: Vec<i64> =
            Vec::<i64>::try_from(src_lens.f_to_kind(Kind::Int64)?.f_flatten(0, -1)?)?;
        let Some(linear) = &self.linear else {
            return Ok(src
                .iter()
                .map(|&s| {
                    let mut out = Vec::with_capacity(top_n);
                    push_neighbours(&mut out, self.cfg.rule_length(s).unwrap_or(1), top_n);
                    out
                })
                .collect());
        };
        let logits = tch::no_grad(|| self.logits(linear, memory, src_pad_mask))?; // [batch, classes]
        if logits.size()[0] != src.len() as i64 {
            return Err(LatentError::Shape(format!(
                "length predictor: {} source lengths for a batch of {}",
                src.len(),
                logits.size()[0]
            )));
        }
        let scores: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(logits.f_to_kind(Kind::Float)?)?;
        let m = self.cfg.max_offset;
        Ok(src
            .iter()
            .zip(scores)
            .map(|(&s, row)| {
                let mut order: Vec<usize> = (0..row.len()).collect();
                // Stable: equal scores keep the smaller offset first.
                order.sort_by(|&i, &j| row[j].total_cmp(&row[i]));
                let mut out: Vec<i64> = order
                    .into_iter()
                    .map(|i| s + i as i64 - m)
                    .filter(|&len| len >= 1)
                    .take(top_n)
                    .collect();
                let best = out.first().copied().unwrap_or(1);
                push_neighbours(&mut out, best, top_n);
                out
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::OptimizerConfig, Device};

    fn cfg(rule: LengthRule) -> LengthConfig {
        LengthConfig {
            rule,
            ratio_a: 1.5,
            ratio_b: 0.2,
            max_offset: 3,
        }
    }

    fn predictor(rule: LengthRule) -> (nn::VarStore, LengthPredictor) {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let p = LengthPredictor::new(&vs.root() / "length_predictor", 4, &cfg(rule)).unwrap();
        (vs, p)
    }

    fn inputs(src_lens: &[i64]) -> (Tensor, Tensor, Tensor) {
        let b = src_lens.len() as i64;
        let memory = Tensor::randn([b, 5, 4], (Kind::Float, Device::Cpu));
        let lens = Tensor::from_slice(src_lens);
        let pad = emvq_tensor::mask::length_mask(&lens, 5);
        (memory, pad, lens)
    }

    #[test]
    fn fixed_rules_give_the_rule_length_then_its_neighbours() {
        let (vs, t2t) = predictor(LengthRule::T2t);
        assert!(vs.variables().is_empty());
        let (memory, pad, lens) = inputs(&[1, 4]);
        assert_eq!(
            t2t.lengths(&memory, &pad, &lens, 1).unwrap(),
            vec![vec![2], vec![8]]
        );
        assert_eq!(
            t2t.lengths(&memory, &pad, &lens, 5).unwrap(),
            vec![vec![2, 3, 1, 4, 5], vec![8, 9, 7, 10, 6]]
        );
        let (_vs, ratio) = predictor(LengthRule::Ratio);
        // ⌈1.5·1 + 0.2⌉ = 2, ⌈1.5·4 + 0.2⌉ = 7
        assert_eq!(
            ratio.lengths(&memory, &pad, &lens, 3).unwrap(),
            vec![vec![2, 3, 1], vec![7, 8, 6]]
        );
        let zero = ratio
            .loss(&memory, &pad, &lens, &Tensor::from_slice(&[3i64, 3]))
            .unwrap();
        assert_eq!(zero.size(), Vec::<i64>::new());
        assert_eq!(zero.double_value(&[]), 0.0);
    }

    #[test]
    fn predicted_lengths_follow_the_classifier_and_stay_distinct_and_positive() {
        let (vs, p) = predictor(LengthRule::Predicted);
        let names = vs.variables();
        assert_eq!(names["length_predictor.weight"].size(), vec![7, 4]);
        assert!(names.contains_key("length_predictor.bias"));
        let (memory, pad, lens) = inputs(&[2, 5]);
        let logits = tch::no_grad(|| p.logits(p.linear.as_ref().unwrap(), &memory, &pad)).unwrap();
        let best = logits.argmax(-1, false);
        let got = p.lengths(&memory, &pad, &lens, 12).unwrap();
        for (row, (&s, got)) in [2i64, 5].iter().zip(&got).enumerate() {
            assert_eq!(got.len(), 12);
            let mut sorted = got.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 12, "{got:?}");
            assert!(got.iter().all(|&l| l >= 1));
            let b = best.int64_value(&[row as i64]);
            if s + b - 3 >= 1 {
                assert_eq!(got[0], s + b - 3);
            }
            // The in-range lengths come first, by decreasing logit.
            let in_range = got.iter().take_while(|&&l| (l - s).abs() <= 3).count();
            let scores: Vec<f64> = got[..in_range]
                .iter()
                .map(|&l| logits.double_value(&[row as i64, l - s + 3]))
                .collect();
            assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
        }
        // Source length 2: offsets −3, −2 give lengths < 1, so 5 in-range lengths.
        assert_eq!(got[0].iter().take_while(|&&l| l <= 5).count(), 5);
    }

    #[test]
    fn padding_does_not_change_the_pooled_prediction() {
        let (_vs, p) = predictor(LengthRule::Predicted);
        let (memory, pad, lens) = inputs(&[3]);
        let noisy = memory.copy();
        let _ = noisy.narrow(1, 3, 2).fill_(100.0);
        let a = p.lengths(&memory, &pad, &lens, 7).unwrap();
        let b = p.lengths(&noisy, &pad, &lens, 7).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn loss_learns_a_toy_length_mapping() {
        let (vs, p) = predictor(LengthRule::Predicted);
        // Two kinds of source state; kind 0 → offset +2, kind 1 → offset −1
        // (and an out-of-range +9 that is clamped to +3 for kind 2).
        let proto = Tensor::randn([3, 4], (Kind::Float, Device::Cpu));
        let kinds = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2]);
        let memory = proto.index_select(0, &kinds).unsqueeze(1).repeat([1, 5, 1]); // [6, 5, 4]
        let src_lens = Tensor::from_slice(&[4i64, 5, 3, 2, 4, 5]);
        let pad = emvq_tensor::mask::length_mask(&src_lens, 5);
        let tgt_lens = &src_lens + Tensor::from_slice(&[2i64, -1, 9, 2, -1, 9]);
        let mut opt = nn::Adam::default().build(&vs, 0.05).unwrap();
        let first = p
            .loss(&memory, &pad, &src_lens, &tgt_lens)
            .unwrap()
            .double_value(&[]);
        for _ in 0..200 {
            opt.backward_step(&p.loss(&memory, &pad, &src_lens, &tgt_lens).unwrap());
        }
        let last = p
            .loss(&memory, &pad, &src_lens, &tgt_lens)
            .unwrap()
            .double_value(&[]);
        assert!(last < 0.05 * first, "{first} → {last}");
        let best: Vec<i64> = p
            .lengths(&memory, &pad, &src_lens, 2)
            .unwrap()
            .iter()
            .map(|l| l[0])
            .collect();
        assert_eq!(best, vec![6, 4, 6, 4, 3, 8]);
    }

    #[test]
    fn config_is_strict_lowercase_and_validated() {
        let text = "rule = \"t2t\"\nratio_a = 1.0\nratio_b = 0.0\nmax_offset = 20\n";
        let c: LengthConfig = toml::from_str(text).unwrap();
        assert_eq!(c.rule, LengthRule::T2t);
        assert!(toml::from_str::<LengthConfig>(&format!("{text}extra = 1\n")).is_err());
        assert!(toml::from_str::<LengthConfig>(&text.replace("t2t", "T2T")).is_err());
        let bad = LengthConfig {
            max_offset: 0,
            ..LengthConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_offset"));
        let bad = LengthConfig {
            rule: LengthRule::Ratio,
            ratio_a: 0.0,
            ..LengthConfig::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("ratio_a"));
        assert_eq!(
            toml::to_string(&LengthConfig::default())
                .unwrap()
                .lines()
                .next(),
            Some("rule = \"predicted\"")
        );
    }
}
