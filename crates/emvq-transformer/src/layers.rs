//! Transformer layers (Vaswani et al. 2017) as tensor2tensor builds them for
//! Roy et al. 2018 (arXiv 1805.11063): a position-wise feed-forward block,
//! an encoder layer (self-attention + feed-forward) and a decoder layer
//! (self-attention + cross-attention + feed-forward), each sub-block wrapped
//! in a residual connection with dropout and layer normalisation — before the
//! sub-block (pre-norm, T2T's default and ours) or after the residual add
//! (post-norm, the original paper's).
//!
//! Parameter names follow PyTorch's `nn.TransformerEncoderLayer` /
//! `nn.TransformerDecoderLayer`: `self_attn`, `multihead_attn`, `linear1`,
//! `linear2`, `norm1`, `norm2` (, `norm3`).

use serde::{Deserialize, Serialize};
use tch::{nn, nn::Module, Tensor};

use crate::attention::{AttentionConfig, KvCache, Mask, MultiheadAttention};
use crate::error::{Result, TransformerError};

/// The non-linearity of the feed-forward block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    #[default]
    Relu,
    Gelu,
}

/// Configuration of a [`FeedForward`] block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedForwardConfig {
    pub d_model: i64,
    /// Inner width (T2T's `filter_size`).
    pub d_ff: i64,
    /// Dropout after the activation (T2T's `relu_dropout`).
    pub dropout: f64,
    pub activation: Activation,
}

/// `linear2(dropout(act(linear1(x))))`, position-wise.
#[derive(Debug)]
pub struct FeedForward {
    linear1: nn::Linear,
    linear2: nn::Linear,
    dropout: f64,
    activation: Activation,
}

impl FeedForward {
    /// Creates `linear1` and `linear2` under `vs` (the enclosing layer's path,
    /// as in PyTorch's layers).
    pub fn new(vs: nn::Path, cfg: &FeedForwardConfig) -> Result<Self> {
        if cfg.d_model <= 0 || cfg.d_ff <= 0 {
            return Err(TransformerError::Config(format!(
                "feed-forward sizes must be positive (d_model {}, d_ff {})",
                cfg.d_model, cfg.d_ff
            )));
        }
        Ok(Self {
            linear1: nn::linear(&vs / "linear1", cfg.d_model, cfg.d_ff, Default::default()),
            linear2: nn::linear(&vs / "linear2", cfg.d_ff, cfg.d_model, Default::default()),
            dropout: cfg.dropout,
            activation: cfg.activation,
        })
    }

    /// `[batch, len, d_model]` → `[batch, len, d_model]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = x.f_linear(&self.linear1.ws, self.linear1.bs.as_ref())?; // [batch, len, d_ff]
        let h = match self.activation {
            Activation::Relu => h.f_relu()?,
            Activation::Gelu => h.f_gelu("none")?,
        };
        let h = h.f_dropout(self.dropout, train)?;
        Ok(h.f_linear(&self.linear2.ws, self.linear2.bs.as_ref())?)
    }
}

/// Configuration shared by [`EncoderLayer`] and [`DecoderLayer`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerConfig {
    pub d_model: i64,
    pub heads: i64,
    /// Feed-forward inner width.
    pub d_ff: i64,
    /// Dropout on each sub-block's output before the residual add (T2T's
    /// `layer_prepostprocess_dropout`).
    pub dropout: f64,
    /// Dropout on attention weights.
    pub attention_dropout: f64,
    /// Dropout after the feed-forward activation.
    pub relu_dropout: f64,
    /// Layer norm before each sub-block (true) or after the residual add.
    pub prenorm: bool,
    pub layer_norm_eps: f64,
    pub activation: Activation,
}

impl LayerConfig {
    fn attention(&self) -> AttentionConfig {
        AttentionConfig {
            d_model: self.d_model,
            heads: self.heads,
            dropout: self.attention_dropout,
        }
    }

    fn feed_forward(&self) -> FeedForwardConfig {
        FeedForwardConfig {
            d_model: self.d_model,
            d_ff: self.d_ff,
            dropout: self.relu_dropout,
            activation: self.activation,
        }
    }

    pub(crate) fn layer_norm(&self, vs: nn::Path) -> nn::LayerNorm {
        let cfg = nn::LayerNormConfig {
            eps: self.layer_norm_eps,
            ..Default::default()
        };
        nn::layer_norm(vs, vec![self.d_model], cfg)
    }
}

/// One residual sub-block: `x + dropout(f(norm(x)))` (pre-norm) or
/// `norm(x + dropout(f(x)))` (post-norm).
fn residual(
    x: &Tensor,
    norm: &nn::LayerNorm,
    prenorm: bool,
    dropout: f64,
    train: bool,
    f: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    if prenorm {
        let y = f(&norm.forward(x))?.f_dropout(dropout, train)?;
        Ok(x.f_add(&y)?)
    } else {
        let y = f(x)?.f_dropout(dropout, train)?;
        Ok(norm.forward(&x.f_add(&y)?))
    }
}

/// Self-attention and feed-forward. With [`Mask::Causal`] it is also a
/// decoder layer without source attention.
#[derive(Debug)]
pub struct EncoderLayer {
    self_attn: MultiheadAttention,
    ffn: FeedForward,
    norm1: nn::LayerNorm,
    norm2: nn::LayerNorm,
    dropout: f64,
    prenorm: bool,
}

impl EncoderLayer {
    pub fn new(vs: nn::Path, cfg: &LayerConfig) -> Result<Self> {
        Ok(Self {
            self_attn: MultiheadAttention::new(&vs / "self_attn", &cfg.attention())?,
            ffn: FeedForward::new(vs.clone(), &cfg.feed_forward())?,
            norm1: cfg.layer_norm(&vs / "norm1"),
            norm2: cfg.layer_norm(&vs / "norm2"),
            dropout: cfg.dropout,
            prenorm: cfg.prenorm,
        })
    }

    /// `[batch, len, d_model]` → `[batch, len, d_model]`.
    pub fn forward(&self, x: &Tensor, mask: &Mask, train: bool) -> Result<Tensor> {
        let (p, d) = (self.prenorm, self.dropout);
        let x = residual(x, &self.norm1, p, d, train, |h| {
            self.self_attn.forward_self(h, mask, train)
        })?;
        residual(&x, &self.norm2, p, d, train, |h| self.ffn.forward(h, train))
    }
}

/// The incremental-decoding state of one [`DecoderLayer`]: the growing
/// self-attention keys/values and the memory's keys/values (fixed per source).
#[derive(Debug)]
pub struct LayerCache {
    pub self_kv: Option<KvCache>,
    pub memory_kv: KvCache,
}

/// Self-attention (causal or not, as the mask says), cross-attention to a
/// memory, feed-forward.
#[derive(Debug)]
pub struct DecoderLayer {
    self_attn: MultiheadAttention,
    multihead_attn: MultiheadAttention,
    ffn: FeedForward,
    norm1: nn::LayerNorm,
    norm2: nn::LayerNorm,
    norm3: nn::LayerNorm,
    dropout: f64,
    prenorm: bool,
}

impl DecoderLayer {
    pub fn new(vs: nn::Path, cfg: &LayerConfig) -> Result<Self> {
        Ok(Self {
            self_attn: MultiheadAttention::new(&vs / "self_attn", &cfg.attention())?,
            multihead_attn: MultiheadAttention::new(&vs / "multihead_attn", &cfg.attention())?,
            ffn: FeedForward::new(vs.clone(), &cfg.feed_forward())?,
            norm1: cfg.layer_norm(&vs / "norm1"),
            norm2: cfg.layer_norm(&vs / "norm2"),
            norm3: cfg.layer_norm(&vs / "norm3"),
            dropout: cfg.dropout,
            prenorm: cfg.prenorm,
        })
    }

    /// Full pass: `x` `[batch, len, d_model]`, `memory` `[batch, src_len, d_model]`
    /// → `[batch, len, d_model]`.
    pub fn forward(
        &self,
        x: &Tensor,
        self_mask: &Mask,
        memory: &Tensor,
        memory_mask: &Mask,
        train: bool,
    ) -> Result<Tensor> {
        let kv = self.multihead_attn.memory_kv(memory)?;
        let (p, d) = (self.prenorm, self.dropout);
        let x = residual(x, &self.norm1, p, d, train, |h| {
            self.self_attn.forward_self(h, self_mask, train)
        })?;
        let x = residual(&x, &self.norm2, p, d, train, |h| {
            self.multihead_attn
                .forward_cross(h, &kv, memory_mask, train)
        })?;
        residual(&x, &self.norm3, p, d, train, |h| self.ffn.forward(h, train))
    }

    /// The decoding state for a memory `[batch, src_len, d_model]`.
    pub fn init_cache(&self, memory: &Tensor) -> Result<LayerCache> {
        Ok(LayerCache {
            self_kv: None,
            memory_kv: self.multihead_attn.memory_kv(memory)?,
        })
    }

    /// Incremental pass over new positions `x` `[batch, t, d_model]` (causal
    /// self-attention over everything decoded so far). Inference only.
    pub fn step(&self, x: &Tensor, cache: &mut LayerCache, memory_mask: &Mask) -> Result<Tensor> {
        let p = self.prenorm;
        let x = residual(x, &self.norm1, p, 0.0, false, |h| {
            self.self_attn.forward_self_cached(h, &mut cache.self_kv)
        })?;
        let x = residual(&x, &self.norm2, p, 0.0, false, |h| {
            self.multihead_attn
                .forward_cross(h, &cache.memory_kv, memory_mask, false)
        })?;
        residual(&x, &self.norm3, p, 0.0, false, |h| {
            self.ffn.forward(h, false)
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tch::{Device, Kind};

    pub(crate) fn layer_config(prenorm: bool) -> LayerConfig {
        LayerConfig {
            d_model: 16,
            heads: 4,
            d_ff: 32,
            dropout: 0.1,
            attention_dropout: 0.1,
            relu_dropout: 0.1,
            prenorm,
            layer_norm_eps: 1e-6,
            activation: Activation::Relu,
        }
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn parameter_names_match_pytorch() {
        let vs = nn::VarStore::new(Device::Cpu);
        let _e = EncoderLayer::new(vs.root() / "enc", &layer_config(true)).unwrap();
        let _d = DecoderLayer::new(vs.root() / "dec", &layer_config(true)).unwrap();
        let names: std::collections::BTreeSet<_> = vs.variables().into_keys().collect();
        for n in [
            "enc.self_attn.in_proj_weight",
            "enc.linear1.weight",
            "enc.linear2.bias",
            "enc.norm1.weight",
            "enc.norm2.bias",
            "dec.self_attn.out_proj.weight",
            "dec.multihead_attn.in_proj_bias",
            "dec.norm3.weight",
        ] {
            assert!(names.contains(n), "{n} missing from {names:?}");
        }
        assert_eq!(names.len(), 12 + 18);
    }

    #[test]
    fn feed_forward_is_the_formula() {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = FeedForwardConfig {
            d_model: 4,
            d_ff: 8,
            dropout: 0.5,
            activation: Activation::Relu,
        };
        let ffn = FeedForward::new(vs.root(), &cfg).unwrap();
        let x = Tensor::randn([2, 3, 4], (Kind::Float, Device::Cpu));
        let expected = ffn.linear2.forward(&ffn.linear1.forward(&x).relu());
        assert!(max_diff(&ffn.forward(&x, false).unwrap(), &expected) < 1e-6);
    }

    #[test]
    fn decoder_step_equals_full_pass_for_both_norm_placements() {
        for prenorm in [true, false] {
            tch::manual_seed(11);
            let vs = nn::VarStore::new(Device::Cpu);
            let layer = DecoderLayer::new(vs.root(), &layer_config(prenorm)).unwrap();
            let x = Tensor::randn([2, 5, 16], (Kind::Float, Device::Cpu));
            let memory = Tensor::randn([2, 4, 16], (Kind::Float, Device::Cpu));
            let pad =
                Tensor::from_slice2(&[[false, false, true, true], [false, false, false, false]]);
            let mmask = Mask::padding(&pad).unwrap();
            let full = layer
                .forward(&x, &Mask::Causal, &memory, &mmask, false)
                .unwrap();
            let mut cache = layer.init_cache(&memory).unwrap();
            let steps: Vec<Tensor> = (0..5)
                .map(|t| layer.step(&x.narrow(1, t, 1), &mut cache, &mmask).unwrap())
                .collect();
            assert!(
                max_diff(&Tensor::cat(&steps, 1), &full) < 1e-5,
                "prenorm {prenorm}"
            );
        }
    }

    #[test]
    fn post_norm_output_is_normalised_pre_norm_is_not() {
        tch::manual_seed(12);
        let x = Tensor::randn([2, 5, 16], (Kind::Float, Device::Cpu)) * 3.0 + 1.0;
        for prenorm in [true, false] {
            let vs = nn::VarStore::new(Device::Cpu);
            let layer = EncoderLayer::new(vs.root(), &layer_config(prenorm)).unwrap();
            let y = layer.forward(&x, &Mask::None, false).unwrap();
            let mean = y
                .mean_dim(-1, false, Kind::Float)
                .abs()
                .max()
                .double_value(&[]);
            assert_eq!(
                mean < 1e-4,
                !prenorm,
                "prenorm {prenorm}: max |mean| {mean}"
            );
        }
    }
}
