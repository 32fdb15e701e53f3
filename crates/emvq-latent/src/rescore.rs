//! Rescoring NAT candidates with the autoregressive teacher, as in the noisy
//! parallel decoding (NPD) of Gu et al. 2018 ("Non-Autoregressive Neural
//! Machine Translation", arXiv 1711.02281) that the NAT rows of Roy et al.
//! 2018 ("Theory and Experiments on Vector Quantized Autoencoders", arXiv
//! 1805.11063, Table 3) use, and the latent NAT's `--rescore S` (sampled
//! latent sequences): the teacher scores every candidate in one
//! teacher-forced batch, the best one wins.
//!
//! The score is the teacher's log-probability `log p(y, EOS | x)`, summed
//! over the candidate's tokens and the EOS appended to it ([`Score::LogProb`],
//! the paper's choice); [`Score::PerToken`] divides it by the number of
//! scored tokens (candidate length + 1), which removes the bias towards
//! short candidates.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::api::{NatDecode, NatModel};
use crate::error::{LatentError, Result};
use emvq_tensor::gather::gather_last;
use emvq_transformer::{shift_right, Seq2Seq};

/// How candidates are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Score {
    /// `log p(y, EOS | x)` (Gu et al.'s NPD).
    #[default]
    LogProb,
    /// `log p(y, EOS | x) / (|y| + 1)`.
    PerToken,
}

/// `log p(y, EOS | x)` of each candidate `y` (token ids without BOS/EOS)
/// for the single source `src` `[1, src_len]`, under `teacher`: one
/// teacher-forced pass over all candidates (the encoder runs once, its
/// memory is repeated per candidate).
pub fn teacher_scores(
    teacher: &Seq2Seq,
    src: &Tensor,
    candidates: &[Vec<i64>],
) -> Result<Vec<f64>> {
    if src.dim() != 2 || src.size()[0] != 1 {
        return Err(LatentError::Shape(format!(
            "teacher_scores takes one source [1, len], got {:?}",
            src.size()
        )));
    }
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let cfg = teacher.config();
    let width = candidates.iter().map(Vec::len).max().unwrap_or(0) + 1;
    let mut flat = Vec::with_capacity(candidates.len() * width);
    for c in candidates {
        flat.extend_from_slice(c);
        flat.push(cfg.eos_id);
        flat.extend(std::iter::repeat_n(cfg.pad_id, width - c.len() - 1));
    }
    let n = candidates.len() as i64;
    tch::no_grad(|| {
        let tgt = Tensor::from_slice(&flat)
            .f_view([n, width as i64])?
            .f_to_device(src.device())?; // [n, width]
        let enc = teacher.encode(src, false)?.repeat_interleave(n)?;
        let h = teacher.decode_hidden(&enc, &shift_right(&tgt, cfg.bos_id)?, false)?; // [n, width, d_model]
                                                                                      // Only real positions (tokens and EOS) go through the softmax.
        let index = tgt
            .f_ne(cfg.pad_id)?
            .f_flatten(0, -1)?
            .f_nonzero()?
            .f_squeeze_dim(1)?; // [m]
        let h = h.f_reshape([-1, cfg.d_model])?.f_index_select(0, &index)?; // [m, d_model]
        let logits = teacher.project(&h)?.f_to_kind(Kind::Float)?; // [m, vocab]
        let y = tgt.f_flatten(0, -1)?.f_index_select(0, &index)?; // [m]
        let lprobs = gather_last(&logits, &y)?
            .f_sub(&logits.f_logsumexp(&[-1i64][..], false)?)?
            .f_to_kind(Kind::Double)?; // [m]
        let rows = index.f_div_scalar_mode(width as i64, "floor")?; // [m]
        let sums =
            Tensor::f_zeros([n], (Kind::Double, src.device()))?.f_index_add(0, &rows, &lprobs)?; // [n]
        Ok(Vec::<f64>::try_from(sums)?)
    })
}

/// Index of the highest score (ties → the first; NaN never wins).
pub fn best_index(scores: &[f64]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, &s) in scores.iter().enumerate() {
        if !s.is_nan() && best.is_none_or(|b| s > scores[b]) {
            best = Some(i);
        }
    }
    best
}

/// The candidate of `model` for the single source `src` `[1, src_len]`
/// that `teacher` ranks best by `score`, among `n` (see
/// [`NatModel::candidates`]).
pub fn rescore_by(
    model: &dyn NatModel,
    teacher: &Seq2Seq,
    src: &Tensor,
    n: usize,
    settings: &NatDecode,
    score: Score,
) -> Result<Vec<i64>> {
    let candidates = model.candidates(src, n, settings)?;
    let mut scores = teacher_scores(teacher, src, &candidates)?;
    if score == Score::PerToken {
        for (s, c) in scores.iter_mut().zip(&candidates) {
            *s /= (c.len() + 1) as f64;
        }
    }
    let best = best_index(&scores).ok_or_else(|| {
        LatentError::Shape(format!(
            "no candidate to rescore (n = {n}, scores {scores:?})"
        ))
    })?;
    Ok(candidates.into_iter().nth(best).unwrap_or_default())
}

/// [`rescore_by`] with the teacher's log-probability ([`Score::LogProb`]).
pub fn rescore(
    model: &dyn NatModel,
    teacher: &Seq2Seq,
    src: &Tensor,
    n: usize,
    settings: &NatDecode,
) -> Result<Vec<i64>> {
    rescore_by(model, teacher, src, n, settings, Score::LogProb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_index_prefers_the_first_of_ties_and_skips_nan() {
        assert_eq!(best_index(&[-3.0, -1.0, -1.0, -2.0]), Some(1));
        assert_eq!(best_index(&[f64::NAN, -5.0]), Some(1));
        assert_eq!(best_index(&[]), None);
        assert_eq!(best_index(&[f64::NAN]), None);
    }
}
