//! Label-smoothed cross-entropy over target tokens, padding ignored
//! (Szegedy et al. 2016; the teacher's training loss in Roy et al. 2018,
//! arXiv 1805.11063). With smoothing ε and vocabulary V the target
//! distribution is `(1 − ε)·onehot(y) + ε/V` (PyTorch's `label_smoothing`
//! convention), so the per-token loss is
//! `(1 − ε)·(−log p_y) + ε·mean_v(−log p_v)`.

use tch::{Kind, Tensor};

use crate::error::{Result, TransformerError};
use emvq_tensor::gather::gather_last;

/// Sums over the non-padding target tokens of a batch, so micro-batches can
/// be accumulated and divided by their total token count.
#[derive(Debug)]
pub struct LossOutput {
    /// Σ label-smoothed loss (scalar, f32).
    pub loss_sum: Tensor,
    /// Σ −log p(y) (scalar, f32), for perplexity.
    pub nll_sum: Tensor,
    /// Number of non-padding target tokens (scalar, f32).
    pub tokens: Tensor,
}

impl LossOutput {
    /// Mean smoothed loss per token.
    pub fn loss(&self) -> Tensor {
        &self.loss_sum / self.tokens.clamp_min(1.0)
    }

    /// Mean negative log-likelihood per token.
    pub fn nll(&self) -> Tensor {
        &self.nll_sum / self.tokens.clamp_min(1.0)
    }
}

/// `logits` `[batch, len, vocab]`, `target` `[batch, len]` int64; positions
/// where `target == pad_id` are ignored.
pub fn label_smoothed_cross_entropy(
    logits: &Tensor,
    target: &Tensor,
    smoothing: f64,
    pad_id: i64,
) -> Result<LossOutput> {
    if !(0.0..1.0).contains(&smoothing) {
        return Err(TransformerError::Config(format!(
            "label smoothing must be in [0, 1), got {smoothing}"
        )));
    }
    let (ls, ts) = (logits.size(), target.size());
    if ls.len() != ts.len() + 1 || ls[..ts.len()] != ts[..] {
        return Err(TransformerError::Input(format!(
            "logits {ls:?} do not match target {ts:?}"
        )));
    }
    let lprobs = logits.f_log_softmax(-1, Kind::Float)?; // [batch, len, vocab]
    let keep = target.f_ne(pad_id)?.f_to_kind(Kind::Float)?; // [batch, len]
    let nll = gather_last(&lprobs, target)?.f_neg()?; // [batch, len]
    let nll_sum = nll.f_mul(&keep)?.f_sum(Kind::Float)?;
    let loss_sum = if smoothing > 0.0 {
        let smooth = lprobs.f_mean_dim(-1, false, Kind::Float)?.f_neg()?; // [batch, len]
        let per_token = nll
            .f_mul_scalar(1.0 - smoothing)?
            .f_add(&smooth.f_mul_scalar(smoothing)?)?;
        per_token.f_mul(&keep)?.f_sum(Kind::Float)?
    } else {
        nll_sum.shallow_clone()
    };
    Ok(LossOutput {
        loss_sum,
        nll_sum,
        tokens: keep.f_sum(Kind::Float)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Reduction};

    #[test]
    fn matches_pytorch_cross_entropy_with_smoothing_and_ignore_index() {
        tch::manual_seed(0);
        let logits = Tensor::randn([2, 4, 7], (Kind::Float, Device::Cpu));
        let target = Tensor::from_slice2(&[[3i64, 4, 2, 0], [5, 2, 0, 0]]);
        for eps in [0.0, 0.1, 0.3] {
            let out = label_smoothed_cross_entropy(&logits, &target, eps, 0).unwrap();
            let expected = logits.view([8, 7]).cross_entropy_loss::<Tensor>(
                &target.view([8]),
                None,
                Reduction::Mean,
                0,
                eps,
            );
            assert!(
                (out.loss().double_value(&[]) - expected.double_value(&[])).abs() < 1e-5,
                "eps {eps}"
            );
            assert_eq!(out.tokens.double_value(&[]), 5.0);
        }
        let nll = label_smoothed_cross_entropy(&logits, &target, 0.2, 0)
            .unwrap()
            .nll();
        let expected = logits.view([8, 7]).cross_entropy_loss::<Tensor>(
            &target.view([8]),
            None,
            Reduction::Mean,
            0,
            0.0,
        );
        assert!((nll.double_value(&[]) - expected.double_value(&[])).abs() < 1e-5);
    }

    #[test]
    fn padding_gets_no_gradient() {
        let logits = Tensor::randn([1, 3, 5], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let target = Tensor::from_slice2(&[[3i64, 0, 0]]);
        label_smoothed_cross_entropy(&logits, &target, 0.1, 0)
            .unwrap()
            .loss()
            .backward();
        let grad = logits.grad();
        assert_eq!(
            grad.narrow(1, 1, 2)
                .abs()
                .sum(Kind::Float)
                .double_value(&[]),
            0.0
        );
        assert!(
            grad.narrow(1, 0, 1)
                .abs()
                .sum(Kind::Float)
                .double_value(&[])
                > 0.0
        );
    }

    #[test]
    fn shape_mismatch_and_bad_smoothing_are_errors() {
        let logits = Tensor::zeros([1, 3, 5], (Kind::Float, Device::Cpu));
        assert!(label_smoothed_cross_entropy(
            &logits,
            &Tensor::zeros([1, 4], (Kind::Int64, Device::Cpu)),
            0.1,
            0
        )
        .is_err());
        assert!(label_smoothed_cross_entropy(
            &logits,
            &Tensor::zeros([1, 3], (Kind::Int64, Device::Cpu)),
            1.0,
            0
        )
        .is_err());
    }
}
