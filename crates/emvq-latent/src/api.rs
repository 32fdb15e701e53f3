//! What every NAT model of this crate offers the training loop, the decoders
//! and the rescorer: a loss on (source, target) batches, batched one-pass
//! translation, and candidate translations to rescore with the teacher.

use tch::Tensor;

use crate::error::Result;

/// The loss of one batch.
#[derive(Debug)]
pub struct NatLoss {
    /// Scalar to back-propagate (a mean over target tokens plus the weighted
    /// auxiliary terms).
    pub total: Tensor,
    /// Non-padding target tokens in the batch (the weight of this batch when
    /// averaging over several).
    pub tokens: f64,
    /// Named scalar parts for logs (`token_nll`, `commitment`, `latent_ce`,
    /// `length_ce`, …), each a per-token or per-latent mean.
    pub metrics: Vec<(&'static str, f64)>,
}

/// Decoding settings shared by every NAT model.
#[derive(Debug, Clone, PartialEq)]
pub struct NatDecode {
    /// Beam size over latent codes (1: greedy), where the model has latents.
    pub latent_beam: usize,
    /// Softmax temperature when candidates are sampled (rescoring).
    pub temperature: f64,
    /// Seed of candidate sampling, so rescoring repeats.
    pub seed: u64,
    /// Greedy latents only: feed the decoder the expected code vectors under
    /// the latent predictor's distribution (Σ_j p_j e_j per slice) instead of
    /// the argmax codes' vectors — closer to what a soft-EM decoder sees in
    /// training (the mean of sampled codes). The predictor's own inputs stay
    /// the argmax codes.
    pub soft_latents: bool,
    /// Collapse each run of one token repeated at neighbouring positions
    /// into a single token ("a a b" → "a b"; Lee et al. 2018, arXiv
    /// 1802.06901): neighbouring positions of a one-pass decoder often pick
    /// the same word. `false`: the decoder's argmax as it is.
    pub collapse_repeats: bool,
    /// Latent NAT only: decoder passes after the first (iterative
    /// refinement, beyond the paper; mask-predict's schedule, Ghazvininejad
    /// et al. 2019, arXiv 1904.09324). Of T = 1 + this passes, pass t feeds
    /// the t/T most confident tokens so far back as gold decoder inputs —
    /// what glancing training shows the decoder — and predicts the rest
    /// again. 0: the paper's single pass.
    pub refine_steps: usize,
}

impl Default for NatDecode {
    fn default() -> Self {
        Self {
            latent_beam: 1,
            temperature: 1.0,
            seed: 0,
            soft_latents: false,
            collapse_repeats: false,
            refine_steps: 0,
        }
    }
}

impl NatDecode {
    /// Decoded rows as these settings want them (repeats collapsed or not).
    pub fn finish(&self, mut rows: Vec<Vec<i64>>) -> Vec<Vec<i64>> {
        if self.collapse_repeats {
            rows.iter_mut().for_each(Vec::dedup);
        }
        rows
    }
}

/// A non-autoregressive translation model.
pub trait NatModel {
    /// Loss of a batch: `src` `[batch, src_len]`, `tgt` `[batch, tgt_len]`
    /// (int64, each row ending in EOS then padding). `step` drives the
    /// training schedules (curricula, delayed losses); `train` turns dropout
    /// and codebook updates on.
    fn loss(&self, src: &Tensor, tgt: &Tensor, step: i64, train: bool) -> Result<NatLoss>;

    /// One translation per source row, token ids without BOS/EOS/padding.
    fn translate(&self, src: &Tensor, settings: &NatDecode) -> Result<Vec<Vec<i64>>>;

    /// `n` candidate translations of a single source `[1, src_len]` (sampled
    /// latent sequences, or several target lengths), decoded in one batch,
    /// for rescoring by the teacher.
    fn candidates(&self, src: &Tensor, n: usize, settings: &NatDecode) -> Result<Vec<Vec<i64>>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_collapses_neighbouring_repeats_only_when_asked() {
        let rows = vec![vec![5, 5, 6, 5, 7, 7, 7], vec![], vec![4]];
        assert_eq!(NatDecode::default().finish(rows.clone()), rows);
        let collapse = NatDecode {
            collapse_repeats: true,
            ..Default::default()
        };
        assert_eq!(
            collapse.finish(rows),
            vec![vec![5, 6, 5, 7], vec![], vec![4]]
        );
    }
}
