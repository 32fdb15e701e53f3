//! Multi-head attention (Vaswani et al. 2017, "Attention Is All You Need"),
//! the building block of the teacher of Roy et al. 2018 (arXiv 1805.11063)
//! and of its latent predictor and NAT decoder.
//!
//! Parameters follow PyTorch's `nn.MultiheadAttention`: a fused
//! `in_proj_weight` `[3·d, d]` / `in_proj_bias` `[3·d]` (rows: query, key,
//! value) and `out_proj.{weight,bias}`. Self-attention projects Q, K and V in
//! one matmul; cross-attention projects the memory's K and V once
//! ([`MultiheadAttention::memory_kv`]) and reuses them at every decoding step.
//! The attention itself is LibTorch's `scaled_dot_product_attention` (fused
//! kernels on CPU and GPU); [`attention_reference`] is the explicit formula,
//! kept for tests and for the benchmark example.

use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use crate::error::{Result, TransformerError};
use emvq_tensor::mask::attention_bias;

/// Configuration of a [`MultiheadAttention`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttentionConfig {
    /// Model width `d`; must be a multiple of `heads`.
    pub d_model: i64,
    pub heads: i64,
    /// Dropout on the attention weights (training only).
    pub dropout: f64,
}

/// Which key positions each query may attend to.
#[derive(Debug)]
pub enum Mask {
    /// Every query sees every key.
    None,
    /// Query `i` sees keys `j <= i + (k_len − q_len)` (the last `q_len`
    /// positions of a sequence of `k_len`, as in cached decoding).
    Causal,
    /// An additive bias (0 or −1e9) broadcastable to
    /// `[batch, heads, q_len, k_len]`.
    Bias(Tensor),
}

impl Mask {
    /// Key padding: `pad` is `[batch, k_len]`, `true` at padding →
    /// a bias `[batch, 1, 1, k_len]`.
    pub fn padding(pad: &Tensor) -> Result<Self> {
        let size = pad.size();
        if size.len() != 2 {
            return Err(TransformerError::Input(format!(
                "padding mask must be [batch, len], got {size:?}"
            )));
        }
        let bias = attention_bias(pad, Kind::Float).f_view([size[0], 1, 1, size[1]])?;
        Ok(Self::Bias(bias))
    }

    /// Causal and key padding together (a decoder whose target has padding
    /// in the middle, e.g. left-padded prefixes): `pad` is `[batch, len]`.
    pub fn causal_with_padding(pad: &Tensor) -> Result<Self> {
        let len = pad.size()[1];
        let causal = attention_bias(
            &emvq_tensor::mask::causal_mask(len, pad.device()),
            Kind::Float,
        ); // [len, len]
        match Self::padding(pad)? {
            Self::Bias(p) => Ok(Self::Bias(p + causal.view([1, 1, len, len]))), // [batch, 1, len, len]
            _ => unreachable!("padding() returns a bias"),
        }
    }

    /// A copy sharing storage.
    pub fn shallow_clone(&self) -> Self {
        match self {
            Self::None => Self::None,
            Self::Causal => Self::Causal,
            Self::Bias(b) => Self::Bias(b.shallow_clone()),
        }
    }

    /// Rows of a per-sequence bias picked by `index` (beam reordering,
    /// beam expansion); `None` and `Causal` are unchanged.
    pub fn index_select(&self, index: &Tensor) -> Result<Self> {
        Ok(match self {
            Self::Bias(b) if b.size()[0] > 1 => Self::Bias(b.f_index_select(0, index)?),
            other => other.shallow_clone(),
        })
    }

    /// The bias and `is_causal` flag to hand to the attention kernel.
    fn resolve(
        &self,
        q_len: i64,
        k_len: i64,
        kind: Kind,
        device: Device,
    ) -> (Option<Tensor>, bool) {
        match self {
            Self::None => (None, false),
            Self::Causal if q_len == 1 => (None, false),
            Self::Causal if q_len == k_len => (None, true),
            Self::Causal => {
                let mask =
                    Tensor::ones([q_len, k_len], (Kind::Bool, device)).triu(k_len - q_len + 1);
                (Some(attention_bias(&mask, kind)), false)
            }
            Self::Bias(b) => (
                Some(if b.kind() == kind {
                    b.shallow_clone()
                } else {
                    b.to_kind(kind)
                }),
                false,
            ),
        }
    }
}

/// Keys and values of one attention, `[batch, heads, len, head_dim]` each.
#[derive(Debug)]
pub struct KvCache {
    pub key: Tensor,
    pub value: Tensor,
}

impl KvCache {
    /// Number of cached positions.
    pub fn len(&self) -> i64 {
        self.key.size()[2]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows picked by `index` along the batch dimension.
    pub fn index_select(&self, index: &Tensor) -> Result<Self> {
        Ok(Self {
            key: self.key.f_index_select(0, index)?,
            value: self.value.f_index_select(0, index)?,
        })
    }
}

/// Multi-head scaled dot-product attention with PyTorch's parameter layout.
#[derive(Debug)]
pub struct MultiheadAttention {
    in_proj_weight: Tensor, // [3d, d]
    in_proj_bias: Tensor,   // [3d]
    out_proj: nn::Linear,
    d_model: i64,
    heads: i64,
    head_dim: i64,
    dropout: f64,
}

impl MultiheadAttention {
    pub fn new(vs: nn::Path, cfg: &AttentionConfig) -> Result<Self> {
        let d = cfg.d_model;
        if cfg.heads <= 0 || d <= 0 || d % cfg.heads != 0 {
            return Err(TransformerError::Config(format!(
                "d_model ({d}) must be a positive multiple of heads ({})",
                cfg.heads
            )));
        }
        // PyTorch's init: Xavier-uniform in_proj, zero biases.
        let bound = (6.0 / (d + 3 * d) as f64).sqrt();
        let in_proj_weight = vs.f_uniform("in_proj_weight", &[3 * d, d], -bound, bound)?;
        let in_proj_bias = vs.f_zeros("in_proj_bias", &[3 * d])?;
        let out_cfg = nn::LinearConfig {
            bs_init: Some(nn::Init::Const(0.0)),
            ..Default::default()
        };
        let out_proj = nn::linear(&vs / "out_proj", d, d, out_cfg);
        Ok(Self {
            in_proj_weight,
            in_proj_bias,
            out_proj,
            d_model: d,
            heads: cfg.heads,
            head_dim: d / cfg.heads,
            dropout: cfg.dropout,
        })
    }

    /// `[batch, len, d]` → `[batch, heads, len, head_dim]`.
    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, l) = (x.size()[0], x.size()[1]);
        Ok(x.f_view([b, l, self.heads, self.head_dim])?
            .f_transpose(1, 2)?)
    }

    /// `[batch, heads, len, head_dim]` → `[batch, len, d]` → output projection.
    fn merge_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, l) = (x.size()[0], x.size()[2]);
        let merged = x.f_transpose(1, 2)?.f_reshape([b, l, self.d_model])?;
        Ok(merged.f_linear(&self.out_proj.ws, self.out_proj.bs.as_ref())?)
    }

    fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &Mask,
        train: bool,
    ) -> Result<Tensor> {
        let (bias, is_causal) = mask.resolve(q.size()[2], k.size()[2], q.kind(), q.device());
        let dropout = if train { self.dropout } else { 0.0 };
        let out = Tensor::f_scaled_dot_product_attention(
            q,
            k,
            v,
            bias.as_ref(),
            dropout,
            is_causal,
            None,
            false,
        )?;
        self.merge_heads(&out)
    }

    /// Fused Q, K, V projection: `[batch, len, d]` → three `[batch, heads, len, head_dim]`.
    fn qkv(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        check_width(x, self.d_model)?;
        let qkv = x.f_linear(&self.in_proj_weight, Some(&self.in_proj_bias))?; // [batch, len, 3d]
        let parts = qkv.f_chunk(3, -1)?;
        Ok((
            self.split_heads(&parts[0])?,
            self.split_heads(&parts[1])?,
            self.split_heads(&parts[2])?,
        ))
    }

    /// Self-attention over `x` `[batch, len, d]` → `[batch, len, d]`.
    pub fn forward_self(&self, x: &Tensor, mask: &Mask, train: bool) -> Result<Tensor> {
        let (q, k, v) = self.qkv(x)?;
        self.attend(&q, &k, &v, mask, train)
    }

    /// Incremental self-attention: the new positions `x` `[batch, t, d]`
    /// attend to the cached ones and to themselves (causally); their keys
    /// and values are appended to `cache`. Inference only (no dropout).
    pub fn forward_self_cached(&self, x: &Tensor, cache: &mut Option<KvCache>) -> Result<Tensor> {
        let (q, k, v) = self.qkv(x)?;
        let kv = match cache.take() {
            None => KvCache { key: k, value: v },
            Some(old) => KvCache {
                key: Tensor::f_cat(&[&old.key, &k], 2)?,
                value: Tensor::f_cat(&[&old.value, &v], 2)?,
            },
        };
        let out = self.attend(&q, &kv.key, &kv.value, &Mask::Causal, false);
        *cache = Some(kv);
        out
    }

    /// Keys and values of a memory `[batch, src_len, d]` (the encoder
    /// output), computed once per source for cross-attention.
    pub fn memory_kv(&self, memory: &Tensor) -> Result<KvCache> {
        check_width(memory, self.d_model)?;
        let d = self.d_model;
        let w = self.in_proj_weight.f_narrow(0, d, 2 * d)?; // [2d, d]
        let b = self.in_proj_bias.f_narrow(0, d, 2 * d)?; // [2d]
        let kv = memory.f_linear(&w, Some(&b))?.f_chunk(2, -1)?; // 2 × [batch, src_len, d]
        Ok(KvCache {
            key: self.split_heads(&kv[0])?,
            value: self.split_heads(&kv[1])?,
        })
    }

    /// Cross-attention of `x` `[batch, len, d]` to a memory's keys and values.
    pub fn forward_cross(
        &self,
        x: &Tensor,
        memory: &KvCache,
        mask: &Mask,
        train: bool,
    ) -> Result<Tensor> {
        check_width(x, self.d_model)?;
        let d = self.d_model;
        let w = self.in_proj_weight.f_narrow(0, 0, d)?;
        let b = self.in_proj_bias.f_narrow(0, 0, d)?;
        let q = self.split_heads(&x.f_linear(&w, Some(&b))?)?; // [batch, heads, len, head_dim]
        self.attend(&q, &memory.key, &memory.value, mask, train)
    }
}

fn check_width(x: &Tensor, d: i64) -> Result<()> {
    let size = x.size();
    if size.len() != 3 || size[2] != d {
        return Err(TransformerError::Input(format!(
            "expected [batch, len, {d}], got {size:?}"
        )));
    }
    Ok(())
}

/// The attention formula written out: softmax(q·kᵀ/√d_head + bias)·v,
/// `q` `[batch, heads, q_len, head_dim]`, `k`, `v` `[batch, heads, k_len, head_dim]`.
/// The reference [`MultiheadAttention`]'s fused kernel is tested against.
pub fn attention_reference(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Mask) -> Tensor {
    let (q_len, k_len) = (q.size()[2], k.size()[2]);
    let scale = 1.0 / (q.size()[3] as f64).sqrt();
    let mut logits = q.matmul(&k.transpose(-2, -1)) * scale; // [batch, heads, q_len, k_len]
    let bias = match mask {
        Mask::Causal => {
            let m = Tensor::ones([q_len, k_len], (Kind::Bool, q.device())).triu(k_len - q_len + 1);
            Some(attention_bias(&m, q.kind()))
        }
        other => other.resolve(q_len, k_len, q.kind(), q.device()).0,
    };
    if let Some(bias) = bias {
        logits += bias;
    }
    logits.softmax(-1, q.kind()).matmul(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use emvq_tensor::mask::padding_mask;

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    fn mha(seed: i64) -> (nn::VarStore, MultiheadAttention) {
        tch::manual_seed(seed);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = AttentionConfig {
            d_model: 16,
            heads: 4,
            dropout: 0.1,
        };
        let m = MultiheadAttention::new(vs.root() / "self_attn", &cfg).unwrap();
        // Non-zero biases so the tests exercise them.
        tch::no_grad(|| {
            for (_, mut v) in vs.variables() {
                if v.dim() == 1 {
                    v.copy_(&(Tensor::randn(v.size(), (Kind::Float, Device::Cpu)) * 0.1));
                }
            }
        });
        (vs, m)
    }

    #[test]
    fn names_match_pytorch() {
        let (vs, _) = mha(0);
        let mut names: Vec<_> = vs.variables().into_keys().collect();
        names.sort();
        assert_eq!(
            names,
            [
                "self_attn.in_proj_bias",
                "self_attn.in_proj_weight",
                "self_attn.out_proj.bias",
                "self_attn.out_proj.weight"
            ]
        );
    }

    #[test]
    fn fused_kernel_equals_the_formula_for_every_mask() {
        tch::manual_seed(3);
        let q = Tensor::randn([2, 4, 5, 8], (Kind::Float, Device::Cpu));
        let k = Tensor::randn([2, 4, 5, 8], (Kind::Float, Device::Cpu));
        let v = Tensor::randn([2, 4, 5, 8], (Kind::Float, Device::Cpu));
        let tokens = Tensor::from_slice2(&[[4i64, 5, 6, 0, 0], [4, 5, 6, 7, 8]]);
        let pad = padding_mask(&tokens, 0);
        let masks = [
            Mask::None,
            Mask::Causal,
            Mask::padding(&pad).unwrap(),
            Mask::causal_with_padding(&pad).unwrap(),
        ];
        for mask in &masks {
            let (bias, causal) = mask.resolve(5, 5, Kind::Float, Device::Cpu);
            let fused = Tensor::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                bias.as_ref(),
                0.0,
                causal,
                None,
                false,
            );
            assert!(
                max_diff(&fused, &attention_reference(&q, &k, &v, mask)) < 1e-5,
                "{mask:?}"
            );
        }
        // Causal with an offset: the last 2 queries of 5.
        let q2 = q.narrow(2, 3, 2);
        let (bias, causal) = Mask::Causal.resolve(2, 5, Kind::Float, Device::Cpu);
        let fused = Tensor::scaled_dot_product_attention(
            &q2,
            &k,
            &v,
            bias.as_ref(),
            0.0,
            causal,
            None,
            false,
        );
        let full = attention_reference(&q, &k, &v, &Mask::Causal).narrow(2, 3, 2);
        assert!(max_diff(&fused, &full) < 1e-5);
    }

    #[test]
    fn padded_keys_do_not_change_the_output() {
        let (_vs, m) = mha(1);
        let x = Tensor::randn([1, 6, 16], (Kind::Float, Device::Cpu));
        let pad = Tensor::from_slice2(&[[false, false, false, false, true, true]]);
        let out = m
            .forward_self(&x, &Mask::padding(&pad).unwrap(), false)
            .unwrap();
        let short = m
            .forward_self(&x.narrow(1, 0, 4), &Mask::None, false)
            .unwrap();
        assert!(max_diff(&out.narrow(1, 0, 4), &short) < 1e-5);
    }

    #[test]
    fn cached_self_attention_equals_causal_full_pass() {
        let (_vs, m) = mha(2);
        let x = Tensor::randn([3, 7, 16], (Kind::Float, Device::Cpu));
        let full = m.forward_self(&x, &Mask::Causal, false).unwrap();
        let mut cache = None;
        // One step of 3 positions, then single positions.
        let mut outs = vec![m
            .forward_self_cached(&x.narrow(1, 0, 3), &mut cache)
            .unwrap()];
        for t in 3..7 {
            outs.push(
                m.forward_self_cached(&x.narrow(1, t, 1), &mut cache)
                    .unwrap(),
            );
        }
        assert_eq!(cache.as_ref().unwrap().len(), 7);
        assert!(max_diff(&Tensor::cat(&outs, 1), &full) < 1e-5);
    }

    #[test]
    fn cross_attention_with_precomputed_memory_equals_separate_projections() {
        let (_vs, m) = mha(3);
        let x = Tensor::randn([2, 3, 16], (Kind::Float, Device::Cpu));
        let mem = Tensor::randn([2, 5, 16], (Kind::Float, Device::Cpu));
        let out = m
            .forward_cross(&x, &m.memory_kv(&mem).unwrap(), &Mask::None, false)
            .unwrap();
        // By hand, with explicit per-projection weights.
        let w = m.in_proj_weight.chunk(3, 0);
        let b = m.in_proj_bias.chunk(3, 0);
        let q = m.split_heads(&x.linear(&w[0], Some(&b[0]))).unwrap();
        let k = m.split_heads(&mem.linear(&w[1], Some(&b[1]))).unwrap();
        let v = m.split_heads(&mem.linear(&w[2], Some(&b[2]))).unwrap();
        let expected = m
            .merge_heads(&attention_reference(&q, &k, &v, &Mask::None))
            .unwrap();
        assert!(max_diff(&out, &expected) < 1e-5);
    }

    #[test]
    fn bad_shapes_and_configs_are_errors() {
        let (_vs, m) = mha(4);
        assert!(m
            .forward_self(
                &Tensor::zeros([2, 3, 15], (Kind::Float, Device::Cpu)),
                &Mask::None,
                false
            )
            .is_err());
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = AttentionConfig {
            d_model: 10,
            heads: 4,
            dropout: 0.0,
        };
        assert!(matches!(
            MultiheadAttention::new(vs.root(), &cfg),
            Err(TransformerError::Config(_))
        ));
    }

    #[test]
    fn dropout_acts_only_in_training() {
        let (_vs, m) = mha(5);
        let x = Tensor::randn([2, 6, 16], (Kind::Float, Device::Cpu));
        let eval_a = m.forward_self(&x, &Mask::None, false).unwrap();
        let eval_b = m.forward_self(&x, &Mask::None, false).unwrap();
        assert_eq!(max_diff(&eval_a, &eval_b), 0.0);
        let train = m.forward_self(&x, &Mask::None, true).unwrap();
        assert!(max_diff(&train, &eval_a) > 1e-4);
    }
}
