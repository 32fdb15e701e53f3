//! The compressor and decompressor of the latent Transformer (Kaiser et al.
//! 2018, arXiv 1803.03382; Roy et al. 2018, arXiv 1805.11063; T2T's
//! `transformer_nat.compress` / `decompress_step`), on `[batch, len, d]`
//! tensors:
//!
//! - residual conv block: `x + dropout(f(LayerNorm(x)))` with
//!   f = 3 × [ReLU, conv k=3 'same', LayerNorm];
//! - compressor: `residual_blocks` blocks, then k × [ReLU, conv k=2 stride 2,
//!   LayerNorm]: n → n/2^k (n a multiple of 2^k);
//! - decompressor: k × [residual block (optional), 1×1 conv to 2d,
//!   LayerNorm, reshape `[b, L, 2d]` → `[b, 2L, d]`]: L → 2^k·L.

use tch::{nn, nn::Module, Tensor};

use crate::error::{LatentError, Result};
use emvq_tensor::mask::length_mask;

fn layer_norm(vs: nn::Path, d: i64, eps: f64) -> nn::LayerNorm {
    nn::layer_norm(
        vs,
        vec![d],
        nn::LayerNormConfig {
            eps,
            ..Default::default()
        },
    )
}

/// Conv over the length of `x` `[b, len, d]` → `[b, len', d']`.
fn conv_len(conv: &nn::Conv1D, x: &Tensor) -> Result<Tensor> {
    let y = x.f_transpose(1, 2)?; // [b, d, len]
    Ok(conv.forward(&y).f_transpose(1, 2)?) // [b, len', d']
}

/// A 'same' convolution of kernel 3 (`conv1d` with padding 1) over the
/// length of `x` `[b, len, d]` → `[b, len, d_out]`, computed as one matmul
/// over each position's window of three: the same values as LibTorch's
/// conv1d, at about half its cost on the few positions of a batch-1 decode
/// (PyTorch 2.11, 1 thread, lengths 2–8: 57–91 µs against 145–179 µs).
fn conv3_same(conv: &nn::Conv1D, x: &Tensor) -> Result<Tensor> {
    let (b, len, d) = x.size3()?;
    let windows = x
        .f_constant_pad_nd([0, 0, 1, 1])? // [b, len + 2, d]
        .f_unfold(1, 3, 1)? // [b, len, d, 3]: (channel, tap) as in the weight
        .f_reshape([b, len, 3 * d])?; // [b, len, 3d]
    let d_out = conv.ws.size()[0];
    let weight = conv.ws.f_reshape([d_out, 3 * d])?; // [d_out, 3d]
    Ok(windows.f_linear(&weight, conv.bs.as_ref())?)
}

/// One residual conv block. Parameters: `norm`, `convs.{j}.conv`,
/// `convs.{j}.norm`.
#[derive(Debug)]
pub struct ResidualBlock {
    norm: nn::LayerNorm,
    convs: Vec<(nn::Conv1D, nn::LayerNorm)>,
    dropout: f64,
}

impl ResidualBlock {
    pub fn new(vs: nn::Path, d: i64, dropout: f64, eps: f64) -> Self {
        let cfg = nn::ConvConfig {
            padding: 1,
            ..Default::default()
        };
        let convs = (0..3)
            .map(|j| {
                let p = &vs / "convs" / j;
                (
                    nn::conv1d(&p / "conv", d, d, 3, cfg),
                    layer_norm(&p / "norm", d, eps),
                )
            })
            .collect();
        Self {
            norm: layer_norm(&vs / "norm", d, eps),
            convs,
            dropout,
        }
    }

    /// `[b, len, d]` → `[b, len, d]`. `keep` `[b, len, 1]` (1.0 on real
    /// positions, 0.0 past each row's end) zeroes the convs' inputs past the
    /// end, so a row's output does not depend on what follows it.
    pub fn forward(&self, x: &Tensor, keep: Option<&Tensor>, train: bool) -> Result<Tensor> {
        let mut y = self.norm.forward(x);
        for (conv, norm) in &self.convs {
            let mut h = y.f_relu()?;
            if let Some(k) = keep {
                h = h.f_mul(k)?;
            }
            y = norm.forward(&conv3_same(conv, &h)?);
        }
        Ok(x.f_add(&y.f_dropout(self.dropout, train)?)?)
    }
}

/// Target embeddings `[b, n, d]` → `[b, n/2^k, d]`. Parameters:
/// `blocks.{i}.…`, `strided.{i}.conv`, `strided.{i}.norm`.
#[derive(Debug)]
pub struct Compressor {
    blocks: Vec<ResidualBlock>,
    strided: Vec<(nn::Conv1D, nn::LayerNorm)>,
}

impl Compressor {
    pub fn new(vs: nn::Path, d: i64, steps: i64, blocks: i64, dropout: f64, eps: f64) -> Self {
        let cfg = nn::ConvConfig {
            stride: 2,
            ..Default::default()
        };
        Self {
            blocks: (0..blocks)
                .map(|i| ResidualBlock::new(&vs / "blocks" / i, d, dropout, eps))
                .collect(),
            strided: (0..steps)
                .map(|i| {
                    let p = &vs / "strided" / i;
                    (
                        nn::conv1d(&p / "conv", d, d, 2, cfg),
                        layer_norm(&p / "norm", d, eps),
                    )
                })
                .collect(),
        }
    }

    /// `x` `[b, n, d]` with n a multiple of 2^k → `[b, n/2^k, d]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let n = x.size()[1];
        let block = 1i64 << self.strided.len();
        if n % block != 0 {
            return Err(LatentError::Shape(format!(
                "compressor input length {n} is not a multiple of {block}"
            )));
        }
        let mut x = x.shallow_clone();
        for b in &self.blocks {
            x = b.forward(&x, None, train)?;
        }
        for (conv, norm) in &self.strided {
            x = norm.forward(&conv_len(conv, &x.f_relu()?)?); // [b, len/2, d]
        }
        Ok(x)
    }
}

/// Latents `[b, L, d]` → `[b, 2^k·L, d]`. Parameters: `steps.{i}.block.…`
/// (with a residual block per step), `steps.{i}.expand` (the 1×1 conv, a
/// linear map d → 2d), `steps.{i}.norm`.
#[derive(Debug)]
pub struct Decompressor {
    steps: Vec<(Option<ResidualBlock>, nn::Linear, nn::LayerNorm)>,
    d: i64,
}

impl Decompressor {
    /// `with_blocks`: a residual block before each step's expansion (T2T).
    pub fn new(
        vs: nn::Path,
        d: i64,
        steps: i64,
        with_blocks: bool,
        dropout: f64,
        eps: f64,
    ) -> Self {
        Self {
            steps: (0..steps)
                .map(|i| {
                    let p = &vs / "steps" / i;
                    (
                        with_blocks.then(|| ResidualBlock::new(&p / "block", d, dropout, eps)),
                        nn::linear(&p / "expand", d, 2 * d, Default::default()),
                        layer_norm(&p / "norm", 2 * d, eps),
                    )
                })
                .collect(),
            d,
        }
    }

    /// `[b, L, d]` → `[b, 2^k·L, d]`. With `lengths` `[b]` (int64, each
    /// row's real latents) the convolutions see zeros past each row's end,
    /// so a row decodes the same alone or in a batch.
    pub fn forward(&self, z: &Tensor, lengths: Option<&Tensor>, train: bool) -> Result<Tensor> {
        let mut x = z.shallow_clone();
        for (i, (block, expand, norm)) in self.steps.iter().enumerate() {
            let keep = match lengths.filter(|_| block.is_some()) {
                Some(l) => {
                    let len = x.size()[1];
                    let valid = l.f_mul_scalar(1i64 << i)?; // [b]
                    Some(
                        length_mask(&valid, len)
                            .f_logical_not()?
                            .f_to_kind(x.kind())?
                            .f_unsqueeze(-1)?, // [b, len, 1]
                    )
                }
                None => None,
            };
            let h = match block {
                Some(block) => block.forward(&x, keep.as_ref(), train)?,
                None => x,
            };
            let y = norm.forward(&expand.forward(&h)); // [b, L, 2d]
            let (b, l) = (y.size()[0], y.size()[1]);
            x = y.f_reshape([b, 2 * l, self.d])?; // [b, 2L, d]
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device, Kind};

    #[test]
    fn conv3_same_equals_conv1d_with_padding_one() {
        tch::manual_seed(3);
        let vs = VarStore::new(Device::Cpu);
        let cfg = nn::ConvConfig {
            padding: 1,
            ..Default::default()
        };
        let conv = nn::conv1d(vs.root() / "conv", 6, 5, 3, cfg);
        for len in [1, 2, 3, 8] {
            let x = Tensor::randn([2, len, 6], (Kind::Float, Device::Cpu)); // [b, len, d]
            let expected = conv_len(&conv, &x).unwrap(); // [b, len, 5]
            let got = conv3_same(&conv, &x).unwrap();
            assert_eq!(got.size(), [2, len, 5]);
            let diff = f64::try_from((got - expected).abs().max()).unwrap();
            assert!(diff < 1e-5, "len {len}: max difference {diff}");
        }
    }
}
