//! Token embeddings as tensor2tensor's Transformer uses them (the code of
//! Roy et al. 2018, arXiv 1805.11063): weights drawn from N(0, d^-½),
//! looked up and multiplied by √d, plus sinusoidal position encodings
//! ([`emvq_tensor::position::sinusoidal_positions`]), then dropout. The same
//! matrix can serve as the output projection (tied softmax weights):
//! `logits = h · Eᵀ`.

use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

use crate::error::{Result, TransformerError};
use emvq_tensor::{gather::gather_rows, position::sinusoidal_positions};

/// Configuration of [`Embeddings`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingConfig {
    pub vocab_size: i64,
    pub d_model: i64,
    /// Longest sequence that can be embedded (size of the position table).
    pub max_positions: i64,
    /// Dropout on the sum of embeddings and positions.
    pub dropout: f64,
}

/// Scaled token embeddings plus sinusoidal positions. Parameter: `weight`
/// `[vocab_size, d_model]` (PyTorch's `nn.Embedding` name).
#[derive(Debug)]
pub struct Embeddings {
    weight: Tensor,    // [vocab, d_model]
    positions: Tensor, // [max_positions, d_model], not a parameter
    scale: f64,
    dropout: f64,
    vocab_size: i64,
}

impl Embeddings {
    pub fn new(vs: nn::Path, cfg: &EmbeddingConfig) -> Result<Self> {
        if cfg.vocab_size <= 0 || cfg.d_model <= 0 || cfg.max_positions <= 0 {
            return Err(TransformerError::Config(format!(
                "embedding sizes must be positive: {cfg:?}"
            )));
        }
        let scale = (cfg.d_model as f64).sqrt();
        let weight = vs.f_randn("weight", &[cfg.vocab_size, cfg.d_model], 0.0, 1.0 / scale)?;
        let positions = sinusoidal_positions(cfg.max_positions, cfg.d_model, 0, vs.device());
        Ok(Self {
            weight,
            positions,
            scale,
            dropout: cfg.dropout,
            vocab_size: cfg.vocab_size,
        })
    }

    /// The embedding matrix `[vocab_size, d_model]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// `tokens` `[batch, len]` (int64) at positions `start .. start + len`
    /// → `[batch, len, d_model]`.
    pub fn forward(&self, tokens: &Tensor, start: i64, train: bool) -> Result<Tensor> {
        let len = tokens.size().last().copied().unwrap_or(0);
        let max = self.positions.size()[0];
        if start + len > max {
            return Err(TransformerError::Input(format!(
                "positions {start}..{} exceed max_positions {max}",
                start + len
            )));
        }
        if tokens.kind() != Kind::Int64 {
            return Err(TransformerError::Input(format!(
                "token ids must be int64, got {:?}",
                tokens.kind()
            )));
        }
        let x = gather_rows(&self.weight, tokens)?.f_mul_scalar(self.scale)?; // [batch, len, d_model]
        let positions = self
            .positions
            .f_narrow(0, start, len)?
            .f_to_device(x.device())?; // [len, d_model]
        let x = x.f_add(&positions.f_to_kind(x.kind())?)?;
        Ok(x.f_dropout(self.dropout, train)?)
    }

    /// Tied output projection: `h` `[..., d_model]` → logits `[..., vocab_size]`.
    pub fn project(&self, h: &Tensor) -> Result<Tensor> {
        // `linear` multiplies by the transpose without copying the matrix.
        Ok(h.f_linear::<&Tensor>(&self.weight, None)?)
    }

    pub fn vocab_size(&self) -> i64 {
        self.vocab_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn embeddings() -> (nn::VarStore, Embeddings) {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = EmbeddingConfig {
            vocab_size: 10,
            d_model: 8,
            max_positions: 6,
            dropout: 0.0,
        };
        let e = Embeddings::new(vs.root() / "embed_tokens", &cfg).unwrap();
        (vs, e)
    }

    #[test]
    fn scaled_lookup_plus_positions() {
        let (vs, e) = embeddings();
        assert!(vs.variables().contains_key("embed_tokens.weight"));
        let tokens = Tensor::from_slice2(&[[3i64, 4], [5, 3]]);
        let out = e.forward(&tokens, 2, false).unwrap();
        let pos = sinusoidal_positions(2, 8, 2, Device::Cpu);
        let expected = e.weight.get(3) * 8f64.sqrt() + pos.get(0);
        assert!(
            (out.get(0).get(0) - &expected)
                .abs()
                .max()
                .double_value(&[])
                < 1e-6
        );
        assert!(
            (out.get(1).get(1) - (e.weight.get(3) * 8f64.sqrt() + pos.get(1)))
                .abs()
                .max()
                .double_value(&[])
                < 1e-6
        );
    }

    #[test]
    fn errors_on_too_long_or_out_of_vocabulary_input() {
        let (_vs, e) = embeddings();
        assert!(e
            .forward(&Tensor::zeros([1, 5], (Kind::Int64, Device::Cpu)), 2, false)
            .is_err());
        assert!(e
            .forward(&Tensor::from_slice2(&[[10i64]]), 0, false)
            .is_err());
        assert!(e
            .forward(&Tensor::zeros([1, 2], (Kind::Float, Device::Cpu)), 0, false)
            .is_err());
    }

    #[test]
    fn tied_projection_scores_each_vocabulary_row() {
        let (_vs, e) = embeddings();
        let h = e.weight.get(7).view([1, 1, 8]);
        let logits = e.project(&h).unwrap();
        assert_eq!(logits.size(), vec![1, 1, 10]);
        assert!(
            (logits.double_value(&[0, 0, 7])
                - e.weight.get(7).dot(&e.weight.get(7)).double_value(&[]))
            .abs()
                < 1e-5
        );
    }
}
