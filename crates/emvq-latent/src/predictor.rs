//! The latent predictor of the latent Transformer (Kaiser et al. 2018,
//! arXiv 1803.03382; Roy et al. 2018, arXiv 1805.11063, T2T's
//! `transformer_nat`): a causal Transformer decoder over the embeddings of
//! the codes, shifted right, attending to the encoder output, with one
//! softmax over K codes per slice (n_c of them). Trained with cross-entropy
//! against the bottleneck's targets (soft for EM, one-hot codes otherwise);
//! at inference it runs step by step on a key/value cache.

use tch::{nn, nn::Module, Kind, Tensor};

use crate::error::{LatentError, Result};
use emvq_tensor::position::sinusoidal_positions;
use emvq_transformer::{Decoder, DecoderCache, Mask, StackConfig};

/// The autoregressive prior over latent codes. Parameters: `layers.{i}.…`,
/// `norm` (pre-norm), `output_projection` (`d → n_c·K`).
#[derive(Debug)]
pub struct LatentPredictor {
    decoder: Decoder,
    head: nn::Linear,
    positions: Tensor, // [max_latents, d], not a parameter
    slices: i64,
    codes: i64,
    dropout: f64,
}

impl LatentPredictor {
    /// `max_latents` bounds the latent sequence length; `slices` × `codes`
    /// output classes.
    pub fn new(
        vs: nn::Path,
        stack: &StackConfig,
        max_latents: i64,
        slices: i64,
        codes: i64,
    ) -> Result<Self> {
        let d = stack.layer.d_model;
        Ok(Self {
            decoder: Decoder::new(vs.clone(), stack)?,
            head: nn::linear(
                &vs / "output_projection",
                d,
                slices * codes,
                Default::default(),
            ),
            positions: sinusoidal_positions(max_latents, d, 0, vs.device()),
            slices,
            codes,
            dropout: stack.layer.dropout,
        })
    }

    /// Code embeddings at positions `start ..`: `[b, t, d]` plus positions.
    fn add_positions(&self, x: &Tensor, start: i64, train: bool) -> Result<Tensor> {
        let t = x.size()[1];
        let max = self.positions.size()[0];
        if start + t > max {
            return Err(LatentError::Shape(format!(
                "latent positions {start}..{} exceed the predictor's {max}",
                start + t
            )));
        }
        let pos = self.positions.f_narrow(0, start, t)?; // [t, d]
        Ok(x.f_add(&pos)?.f_dropout(self.dropout, train)?)
    }

    /// Hidden states → logits `[b, t, n_c, K]`.
    fn logits(&self, h: &Tensor) -> Result<Tensor> {
        let (b, t) = (h.size()[0], h.size()[1]);
        Ok(self
            .head
            .forward(h)
            .f_reshape([b, t, self.slices, self.codes])?)
    }

    /// Teacher-forced pass: `code_emb` `[b, L, d]` (the codes' vectors, the
    /// model's own targets) → logits `[b, L, n_c, K]` predicting code j from
    /// codes < j and the source.
    pub fn forward(
        &self,
        code_emb: &Tensor,
        memory: &Tensor,
        memory_mask: &Mask,
        train: bool,
    ) -> Result<Tensor> {
        let (b, l, d) = code_emb.size3()?;
        let start = Tensor::f_zeros([b, 1, d], (code_emb.kind(), code_emb.device()))?;
        let shifted = Tensor::f_cat(&[&start, &code_emb.f_narrow(1, 0, l - 1)?], 1)?; // [b, L, d]
        let x = self.add_positions(&shifted, 0, train)?;
        let h = self
            .decoder
            .forward(&x, &Mask::Causal, memory, memory_mask, train)?;
        self.logits(&h)
    }

    /// A decoding state for `memory` `[b, s, d]`.
    pub fn start(&self, memory: &Tensor, memory_mask: Mask) -> Result<DecoderCache> {
        Ok(self.decoder.init_cache(memory, memory_mask)?)
    }

    /// One cached step: `prev` `[b, 1, d]` is the previous code's vector
    /// (`None` at the first step: the zero start vector) → logits
    /// `[b, n_c, K]` of the next code.
    pub fn step(
        &self,
        prev: Option<&Tensor>,
        cache: &mut DecoderCache,
        batch: i64,
    ) -> Result<Tensor> {
        let d = self.positions.size()[1];
        let x = match prev {
            Some(p) => p.shallow_clone(),
            None => Tensor::f_zeros([batch, 1, d], (Kind::Float, self.positions.device()))?,
        };
        let x = self.add_positions(&x, cache.position, false)?; // [b, 1, d]
        let h = self.decoder.step(&x, cache)?;
        Ok(self.logits(&h)?.f_squeeze_dim(1)?) // [b, n_c, K]
    }
}
