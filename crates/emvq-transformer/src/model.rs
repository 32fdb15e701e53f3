//! The autoregressive Transformer encoder–decoder, the teacher of Roy et al.
//! 2018 ("Theory and Experiments on Vector Quantized Autoencoders", arXiv
//! 1805.11063; T2T's `transformer`): a joint source/target vocabulary,
//! optionally one tied matrix for source embeddings, target embeddings and the
//! softmax (T2T's `shared_embedding_and_softmax_weights`), sinusoidal
//! positions, pre-norm layers by default.
//!
//! Training uses teacher forcing ([`Seq2Seq::forward`] on [`shift_right`]ed
//! targets); inference runs [`Seq2Seq::encode`] once, then
//! [`Seq2Seq::decode_step`] on a [`DecoderCache`].

use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

use crate::attention::Mask;
use crate::embedding::{EmbeddingConfig, Embeddings};
use crate::error::{Result, TransformerError};
use crate::layers::{Activation, LayerConfig};
use crate::loss::{label_smoothed_cross_entropy, LossOutput};
use crate::stack::{Decoder, DecoderCache, Encoder, StackConfig};
use emvq_tensor::mask::padding_mask;

/// Configuration of a [`Seq2Seq`] model (every key required in TOML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformerConfig {
    /// Size of the joint source/target vocabulary.
    pub vocab_size: i64,
    pub d_model: i64,
    pub heads: i64,
    /// Feed-forward inner width (T2T's `filter_size`).
    pub d_ff: i64,
    pub encoder_layers: i64,
    pub decoder_layers: i64,
    /// Residual and embedding dropout (T2T's `layer_prepostprocess_dropout`).
    pub dropout: f64,
    pub attention_dropout: f64,
    pub relu_dropout: f64,
    /// Pre-norm (T2T's default) or post-norm layers.
    pub prenorm: bool,
    /// One matrix for source and target embeddings and the output projection.
    pub tie_embeddings: bool,
    /// Longest source or target sequence (position table size).
    pub max_positions: i64,
    pub layer_norm_eps: f64,
    pub activation: Activation,
    pub pad_id: i64,
    pub bos_id: i64,
    pub eos_id: i64,
}

impl TransformerConfig {
    /// Checks sizes and token ids.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TransformerError::Config(m));
        if self.d_model <= 0 || self.heads <= 0 || self.d_model % self.heads != 0 {
            return bad(format!(
                "d_model ({}) must be a positive multiple of heads ({})",
                self.d_model, self.heads
            ));
        }
        if self.d_ff <= 0
            || self.encoder_layers <= 0
            || self.decoder_layers <= 0
            || self.max_positions <= 0
        {
            return bad(format!(
                "d_ff, layer counts and max_positions must be positive: {self:?}"
            ));
        }
        for (name, p) in [
            ("dropout", self.dropout),
            ("attention_dropout", self.attention_dropout),
            ("relu_dropout", self.relu_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return bad(format!("{name} must be in [0, 1), got {p}"));
            }
        }
        for (name, id) in [
            ("pad_id", self.pad_id),
            ("bos_id", self.bos_id),
            ("eos_id", self.eos_id),
        ] {
            if id < 0 || id >= self.vocab_size {
                return bad(format!(
                    "{name} {id} is outside the vocabulary of {}",
                    self.vocab_size
                ));
            }
        }
        Ok(())
    }

    /// The per-layer config.
    pub fn layer(&self) -> LayerConfig {
        LayerConfig {
            d_model: self.d_model,
            heads: self.heads,
            d_ff: self.d_ff,
            dropout: self.dropout,
            attention_dropout: self.attention_dropout,
            relu_dropout: self.relu_dropout,
            prenorm: self.prenorm,
            layer_norm_eps: self.layer_norm_eps,
            activation: self.activation,
        }
    }

    pub fn encoder(&self) -> StackConfig {
        StackConfig {
            num_layers: self.encoder_layers,
            layer: self.layer(),
        }
    }

    pub fn decoder(&self) -> StackConfig {
        StackConfig {
            num_layers: self.decoder_layers,
            layer: self.layer(),
        }
    }

    pub fn embedding(&self) -> EmbeddingConfig {
        EmbeddingConfig {
            vocab_size: self.vocab_size,
            d_model: self.d_model,
            max_positions: self.max_positions,
            dropout: self.dropout,
        }
    }
}

/// What the encoder hands to the decoder.
#[derive(Debug)]
pub struct EncoderOutput {
    /// `[batch, src_len, d_model]`
    pub memory: Tensor,
    /// `[batch, src_len]`, `true` at source padding.
    pub src_pad: Tensor,
}

impl EncoderOutput {
    /// The cross-attention mask for this source.
    pub fn memory_mask(&self) -> Result<Mask> {
        Mask::padding(&self.src_pad)
    }

    /// Each sentence repeated `n` times in a row (`[batch·n, …]`), for beams.
    pub fn repeat_interleave(&self, n: i64) -> Result<Self> {
        Ok(Self {
            memory: self.memory.f_repeat_interleave_self_int(n, 0, None)?,
            src_pad: self.src_pad.f_repeat_interleave_self_int(n, 0, None)?,
        })
    }
}

/// Decoder input for teacher forcing: `[bos, y_0, …, y_{T−2}]` from the
/// target `y` `[batch, T]` (ending in EOS, then padding).
pub fn shift_right(target: &Tensor, bos_id: i64) -> Result<Tensor> {
    let size = target.size();
    if size.len() != 2 || size[1] == 0 {
        return Err(TransformerError::Input(format!(
            "target must be [batch, len > 0], got {size:?}"
        )));
    }
    let bos = Tensor::f_full([size[0], 1], bos_id, (Kind::Int64, target.device()))?;
    Ok(Tensor::f_cat(
        &[&bos, &target.f_narrow(1, 0, size[1] - 1)?],
        1,
    )?)
}

/// The Transformer encoder–decoder.
///
/// Parameters: `embed_tokens.weight` when tied, else
/// `encoder.embed_tokens.weight`, `decoder.embed_tokens.weight` and
/// `output_projection.weight`; `encoder.layers.{i}.…`, `decoder.layers.{i}.…`,
/// `encoder.norm`, `decoder.norm` (pre-norm).
#[derive(Debug)]
pub struct Seq2Seq {
    cfg: TransformerConfig,
    src_embed: Embeddings,
    /// `None` when tied to `src_embed`.
    tgt_embed: Option<Embeddings>,
    /// `[vocab, d_model]`; `None` when tied.
    output_projection: Option<Tensor>,
    encoder: Encoder,
    decoder: Decoder,
}

impl Seq2Seq {
    pub fn new(vs: nn::Path, cfg: &TransformerConfig) -> Result<Self> {
        cfg.validate()?;
        let emb = cfg.embedding();
        let (src_embed, tgt_embed, output_projection) = if cfg.tie_embeddings {
            (Embeddings::new(&vs / "embed_tokens", &emb)?, None, None)
        } else {
            let bound = 1.0 / (cfg.d_model as f64).sqrt();
            (
                Embeddings::new(&vs / "encoder" / "embed_tokens", &emb)?,
                Some(Embeddings::new(&vs / "decoder" / "embed_tokens", &emb)?),
                Some((&vs / "output_projection").f_uniform(
                    "weight",
                    &[cfg.vocab_size, cfg.d_model],
                    -bound,
                    bound,
                )?),
            )
        };
        Ok(Self {
            cfg: cfg.clone(),
            src_embed,
            tgt_embed,
            output_projection,
            encoder: Encoder::new(&vs / "encoder", &cfg.encoder())?,
            decoder: Decoder::new(&vs / "decoder", &cfg.decoder())?,
        })
    }

    pub fn config(&self) -> &TransformerConfig {
        &self.cfg
    }

    fn tgt_embed(&self) -> &Embeddings {
        self.tgt_embed.as_ref().unwrap_or(&self.src_embed)
    }

    /// Decoder states `[…, d_model]` → logits `[…, vocab_size]`.
    pub fn project(&self, h: &Tensor) -> Result<Tensor> {
        match &self.output_projection {
            Some(w) => Ok(h.f_linear::<&Tensor>(w, None)?),
            None => self.src_embed.project(h),
        }
    }

    /// Source tokens `[batch, src_len]` (padded with `pad_id`) → memory.
    pub fn encode(&self, src: &Tensor, train: bool) -> Result<EncoderOutput> {
        let src_pad = padding_mask(src, self.cfg.pad_id); // [batch, src_len]
        let x = self.src_embed.forward(src, 0, train)?; // [batch, src_len, d_model]
        let memory = self.encoder.forward(&x, &Mask::padding(&src_pad)?, train)?;
        Ok(EncoderOutput { memory, src_pad })
    }

    /// Teacher-forced decoder states: `tgt_in` `[batch, tgt_len]` →
    /// `[batch, tgt_len, d_model]` (before the output projection). Target
    /// padding needs no mask: it sits at the end, after every real position,
    /// so the causal mask hides it.
    pub fn decode_hidden(
        &self,
        enc: &EncoderOutput,
        tgt_in: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let y = self.tgt_embed().forward(tgt_in, 0, train)?; // [batch, tgt_len, d_model]
        self.decoder
            .forward(&y, &Mask::Causal, &enc.memory, &enc.memory_mask()?, train)
    }

    /// Teacher-forced decoder: `tgt_in` `[batch, tgt_len]` → logits
    /// `[batch, tgt_len, vocab_size]`.
    pub fn decode(&self, enc: &EncoderOutput, tgt_in: &Tensor, train: bool) -> Result<Tensor> {
        self.project(&self.decode_hidden(enc, tgt_in, train)?)
    }

    /// The training loss of a batch: `src` `[batch, src_len]`, `tgt`
    /// `[batch, tgt_len]` (ending in EOS, then padding; the decoder input is
    /// [`shift_right`]ed from it). Only non-padding positions go through the
    /// output projection and the softmax — the largest matmul of a small
    /// model — so padding costs nothing there.
    pub fn loss(
        &self,
        src: &Tensor,
        tgt: &Tensor,
        label_smoothing: f64,
        train: bool,
    ) -> Result<LossOutput> {
        let enc = self.encode(src, train)?;
        let h = self.decode_hidden(&enc, &shift_right(tgt, self.cfg.bos_id)?, train)?; // [batch, tgt_len, d_model]
        let keep = tgt
            .f_ne(self.cfg.pad_id)?
            .f_flatten(0, -1)?
            .f_nonzero()?
            .f_squeeze_dim(1)?; // [n]
        let h = h
            .f_reshape([-1, self.cfg.d_model])?
            .f_index_select(0, &keep)?; // [n, d_model]
        let target = tgt.f_flatten(0, -1)?.f_index_select(0, &keep)?; // [n]
        label_smoothed_cross_entropy(
            &self.project(&h)?,
            &target,
            label_smoothing,
            self.cfg.pad_id,
        )
    }

    /// Training forward pass: `src` `[batch, src_len]`, `tgt_in`
    /// `[batch, tgt_len]` → logits `[batch, tgt_len, vocab_size]`.
    pub fn forward(&self, src: &Tensor, tgt_in: &Tensor, train: bool) -> Result<Tensor> {
        let enc = self.encode(src, train)?;
        self.decode(&enc, tgt_in, train)
    }

    /// A fresh decoding state for `enc` (memory keys/values computed here).
    pub fn start_decoding(&self, enc: &EncoderOutput) -> Result<DecoderCache> {
        self.decoder.init_cache(&enc.memory, enc.memory_mask()?)
    }

    /// Feeds the next tokens `[batch, t]` (usually `t = 1`) at positions
    /// `cache.position ..` → logits `[batch, t, vocab_size]`. Inference only.
    pub fn decode_step(&self, tokens: &Tensor, cache: &mut DecoderCache) -> Result<Tensor> {
        let y = self.tgt_embed().forward(tokens, cache.position, false)?; // [batch, t, d_model]
        let h = self.decoder.step(&y, cache)?;
        self.project(&h)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tch::Device;

    pub(crate) fn tiny_config(vocab_size: i64) -> TransformerConfig {
        TransformerConfig {
            vocab_size,
            d_model: 32,
            heads: 4,
            d_ff: 64,
            encoder_layers: 2,
            decoder_layers: 2,
            dropout: 0.1,
            attention_dropout: 0.1,
            relu_dropout: 0.1,
            prenorm: true,
            tie_embeddings: true,
            max_positions: 64,
            layer_norm_eps: 1e-6,
            activation: Activation::Relu,
            pad_id: 0,
            bos_id: 1,
            eos_id: 2,
        }
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn cached_incremental_decoding_equals_full_forward() {
        for (prenorm, tie) in [(true, true), (false, false), (true, false)] {
            tch::manual_seed(5);
            let vs = nn::VarStore::new(Device::Cpu);
            let cfg = TransformerConfig {
                prenorm,
                tie_embeddings: tie,
                ..tiny_config(20)
            };
            let model = Seq2Seq::new(vs.root(), &cfg).unwrap();
            let src = Tensor::from_slice2(&[[5i64, 6, 7, 8, 2], [9, 10, 2, 0, 0]]);
            let tgt_in = Tensor::from_slice2(&[[1i64, 11, 12, 13, 14, 15], [1, 16, 17, 18, 19, 3]]);
            let full = tch::no_grad(|| model.forward(&src, &tgt_in, false)).unwrap(); // [2, 6, 20]
            let steps = tch::no_grad(|| {
                let enc = model.encode(&src, false)?;
                let mut cache = model.start_decoding(&enc)?;
                (0..6)
                    .map(|t| model.decode_step(&tgt_in.narrow(1, t, 1), &mut cache))
                    .collect::<Result<Vec<_>>>()
            })
            .unwrap();
            let diff = max_diff(&Tensor::cat(&steps, 1), &full);
            assert!(diff < 1e-5, "prenorm {prenorm} tie {tie}: {diff}");
        }
    }

    #[test]
    fn source_padding_does_not_change_the_translation_logits() {
        tch::manual_seed(6);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Seq2Seq::new(vs.root(), &tiny_config(20)).unwrap();
        let tgt_in = Tensor::from_slice2(&[[1i64, 11, 12]]);
        let short = model
            .forward(&Tensor::from_slice2(&[[5i64, 6, 2]]), &tgt_in, false)
            .unwrap();
        let padded = model
            .forward(
                &Tensor::from_slice2(&[[5i64, 6, 2, 0, 0, 0]]),
                &tgt_in,
                false,
            )
            .unwrap();
        assert!(max_diff(&short, &padded) < 1e-5);
    }

    #[test]
    fn tied_and_untied_parameter_names() {
        let vs = nn::VarStore::new(Device::Cpu);
        let _m = Seq2Seq::new(vs.root(), &tiny_config(20)).unwrap();
        let names = vs.variables();
        assert!(names.contains_key("embed_tokens.weight"));
        assert!(!names.contains_key("output_projection.weight"));
        assert!(names.contains_key("decoder.layers.1.multihead_attn.in_proj_weight"));
        assert!(names.contains_key("decoder.norm.weight"));

        let vs = nn::VarStore::new(Device::Cpu);
        let _m = Seq2Seq::new(
            vs.root(),
            &TransformerConfig {
                tie_embeddings: false,
                ..tiny_config(20)
            },
        )
        .unwrap();
        let names = vs.variables();
        for n in [
            "encoder.embed_tokens.weight",
            "decoder.embed_tokens.weight",
            "output_projection.weight",
        ] {
            assert!(names.contains_key(n), "{n}");
        }
        assert!(!names.contains_key("embed_tokens.weight"));
    }

    #[test]
    fn packed_loss_equals_the_loss_of_full_logits() {
        tch::manual_seed(8);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Seq2Seq::new(vs.root(), &tiny_config(20)).unwrap();
        let src = Tensor::from_slice2(&[[5i64, 6, 7, 2], [9, 2, 0, 0]]);
        let tgt = Tensor::from_slice2(&[[11i64, 12, 2, 0, 0], [13, 14, 15, 16, 2]]);
        let packed = model.loss(&src, &tgt, 0.1, false).unwrap();
        let logits = model
            .forward(&src, &shift_right(&tgt, 1).unwrap(), false)
            .unwrap();
        let full = label_smoothed_cross_entropy(&logits, &tgt, 0.1, 0).unwrap();
        assert_eq!(packed.tokens.double_value(&[]), 8.0);
        assert!((packed.loss_sum - full.loss_sum).abs().double_value(&[]) < 1e-4);
        assert!((packed.nll_sum - full.nll_sum).abs().double_value(&[]) < 1e-4);
    }

    #[test]
    fn shift_right_prepends_bos() {
        let y = Tensor::from_slice2(&[[7i64, 8, 2, 0], [9, 2, 0, 0]]);
        let x = shift_right(&y, 1).unwrap();
        assert_eq!(
            Vec::<Vec<i64>>::try_from(x).unwrap(),
            vec![vec![1, 7, 8, 2], vec![1, 9, 2, 0]]
        );
    }

    #[test]
    fn config_from_toml_is_strict_and_validated() {
        let text = toml::to_string(&tiny_config(20)).unwrap();
        let back: TransformerConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, tiny_config(20));
        assert!(toml::from_str::<TransformerConfig>(&format!("{text}\nd_modle = 3\n")).is_err());
        let bad = TransformerConfig {
            heads: 5,
            ..tiny_config(20)
        };
        assert!(matches!(bad.validate(), Err(TransformerError::Config(_))));
        let bad = TransformerConfig {
            eos_id: 20,
            ..tiny_config(20)
        };
        assert!(bad.validate().unwrap_err().to_string().contains("eos_id"));
    }
}
