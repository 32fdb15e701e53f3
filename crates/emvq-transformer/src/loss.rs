//! Label-smoothed cross-entropy over target tokens, padding ignored
//! (Szegedy et al. 2016; the teacher's training loss in Roy et al. 2018,
//! arXiv 1805.11063). With smoothing ε and vocabulary V the target
//! distribution is `q = (1 − ε)·onehot(y) + ε/V` (PyTorch's
//! `label_smoothing` convention), so the per-token loss is
//! `(1 − ε)·(−log p_y) + ε·mean_v(−log p_v) = lse(z) − (1 − ε)·z_y − ε·mean_v z_v`
//! for logits `z`, and its gradient is `softmax(z) − q`.
//!
//! The `[tokens, vocab]` logits are the largest tensor of a small model's
//! step, so when they need a gradient the loss is computed in a form that
//! touches them as few times as possible: the value from `lse` (via the
//! softmax), `z_y` and the row means, and the gradient `softmax(z) − q`
//! formed directly in the forward pass and attached through
//! `⟨z, g⟩ − ⟨z, g⟩.detach()` (value 0, gradient `g`). This is the same loss
//! and gradient as `log_softmax` + gather + mean, with one exponential per
//! logit instead of two and no scatter of the gradient into a zero tensor.

use tch::{Kind, Tensor};

use crate::error::{Result, TransformerError};

/// Sums over the non-padding target tokens of a batch, so micro-batches can
/// be accumulated and divided by their total token count.
#[derive(Debug)]
pub struct LossOutput {
    /// Σ label-smoothed loss (scalar, f32); carries the gradient.
    pub loss_sum: Tensor,
    /// Σ −log p(y) (scalar, f32), for perplexity; a value (no gradient).
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

/// `logits` `[batch, len, vocab]` (or `[n, vocab]`), `target` `[batch, len]`
/// (or `[n]`) int64; positions where `target == pad_id` are ignored.
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
    let vocab = ls[ts.len()];
    let z = logits.f_reshape([-1, vocab])?; // [n, vocab]
    let y = target.f_reshape([-1, 1])?; // [n, 1]
    let keep = y.f_ne(pad_id)?.f_to_kind(Kind::Float)?; // [n, 1]
    let tokens = keep.f_sum(Kind::Float)?;
    let need_grad = z.requires_grad();
    let (loss_sum, nll_sum, grad) = tch::no_grad(|| -> Result<_> {
        let z32 = z.f_to_kind(Kind::Float)?; // [n, vocab] (a no-op for f32)
        let z_y = z32.f_gather(1, &y, false)?; // [n, 1]
        let z_mean = z32.f_mean_dim(-1, true, Kind::Float)?; // [n, 1]
        let (lse, grad) = if need_grad {
            // lse = max + log Σ exp(z − max) = max − log softmax(z)_argmax.
            let (z_max, argmax) = z32.f_max_dim(-1, true)?; // [n, 1] each
            let mut p = z32.f_softmax(-1, Kind::Float)?; // [n, vocab]
            let lse = z_max.f_sub(&p.f_gather(1, &argmax, false)?.f_log()?)?; // [n, 1]
                                                                              // p − q, zero on padding rows.
            let n = y.size()[0];
            let hit = Tensor::f_full([n, 1], smoothing - 1.0, (Kind::Float, z.device()))?;
            let _ = p.f_scatter_add_(1, &y, &hit)?;
            if smoothing > 0.0 {
                let _ = p.f_sub_scalar_(smoothing / vocab as f64)?;
            }
            if tokens.double_value(&[]) < n as f64 {
                let _ = p.f_mul_(&keep)?;
            }
            (lse, Some(p))
        } else {
            (z32.f_logsumexp([-1], true)?, None)
        };
        let nll = lse.f_sub(&z_y)?; // [n, 1]
        let per_token = nll
            .f_mul_scalar(1.0 - smoothing)?
            .f_add(&lse.f_sub(&z_mean)?.f_mul_scalar(smoothing)?)?; // [n, 1]
        Ok((
            per_token.f_mul(&keep)?.f_sum(Kind::Float)?,
            nll.f_mul(&keep)?.f_sum(Kind::Float)?,
            grad,
        ))
    })?;
    let loss_sum = match grad {
        Some(g) => {
            // ⟨z, g⟩ − ⟨z, g⟩.detach(): value 0, gradient g.
            let inner = z
                .f_flatten(0, -1)?
                .f_dot(&g.f_to_kind(z.kind())?.f_flatten(0, -1)?)?
                .f_to_kind(Kind::Float)?;
            inner.f_sub(&inner.f_detach()?)?.f_add(&loss_sum)?
        }
        None => loss_sum,
    };
    Ok(LossOutput {
        loss_sum,
        nll_sum,
        tokens,
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

    /// The textbook form: log_softmax, gather, mean, masked sum.
    fn reference(logits: &Tensor, target: &Tensor, eps: f64, pad: i64) -> Tensor {
        let lprobs = logits.log_softmax(-1, Kind::Float);
        let nll = -lprobs
            .gather(-1, &target.unsqueeze(-1), false)
            .squeeze_dim(-1);
        let smooth = -lprobs.mean_dim(-1, false, Kind::Float);
        let keep = target.ne(pad).to_kind(Kind::Float);
        ((nll * (1.0 - eps) + smooth * eps) * keep).sum(Kind::Float)
    }

    #[test]
    fn gradient_equals_the_log_softmax_form() {
        tch::manual_seed(1);
        let target = Tensor::from_slice2(&[[3i64, 4, 2, 0], [5, 2, 0, 0]]);
        for eps in [0.0, 0.1] {
            let a = (Tensor::randn([2, 4, 7], (Kind::Float, Device::Cpu)) * 4.0)
                .set_requires_grad(true);
            let b = a.detach().copy().set_requires_grad(true);
            let ours = label_smoothed_cross_entropy(&a, &target, eps, 0).unwrap();
            let theirs = reference(&b, &target, eps, 0);
            assert!((&ours.loss_sum - &theirs).abs().double_value(&[]) < 1e-4);
            (ours.loss_sum * 0.5).backward();
            (theirs * 0.5).backward();
            let diff = (a.grad() - b.grad()).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "eps {eps}: gradients differ by {diff}");
            assert!(a.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
        }
        // Without a gradient the same value comes from logsumexp.
        let z = Tensor::randn([2, 4, 7], (Kind::Float, Device::Cpu)) * 4.0;
        let plain = label_smoothed_cross_entropy(&z, &target, 0.1, 0).unwrap();
        let tracked =
            label_smoothed_cross_entropy(&z.copy().set_requires_grad(true), &target, 0.1, 0)
                .unwrap();
        assert!((plain.loss_sum - tracked.loss_sum).abs().double_value(&[]) < 1e-4);
        assert!((plain.nll_sum - tracked.nll_sum).abs().double_value(&[]) < 1e-4);
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
