//! Stacks of Transformer layers (Vaswani et al. 2017; T2T's
//! `transformer_encoder` / `transformer_decoder`, used by Roy et al. 2018,
//! arXiv 1805.11063): `layers.{i}` plus, with pre-norm, a final layer norm
//! `norm` (PyTorch's `nn.TransformerEncoder` names). The decoder stack
//! decodes incrementally on a [`DecoderCache`].

use serde::{Deserialize, Serialize};
use tch::{nn, nn::Module, Tensor};

use crate::attention::Mask;
use crate::error::{Result, TransformerError};
use crate::layers::{DecoderLayer, EncoderLayer, LayerCache, LayerConfig};

/// Configuration of an [`Encoder`] or [`Decoder`] stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackConfig {
    pub num_layers: i64,
    pub layer: LayerConfig,
}

fn final_norm(vs: &nn::Path, cfg: &StackConfig) -> Result<Option<nn::LayerNorm>> {
    if cfg.num_layers <= 0 {
        return Err(TransformerError::Config(format!(
            "num_layers must be positive, got {}",
            cfg.num_layers
        )));
    }
    Ok(cfg.layer.prenorm.then(|| cfg.layer.layer_norm(vs / "norm")))
}

/// A stack of [`EncoderLayer`]s.
#[derive(Debug)]
pub struct Encoder {
    layers: Vec<EncoderLayer>,
    norm: Option<nn::LayerNorm>,
}

impl Encoder {
    pub fn new(vs: nn::Path, cfg: &StackConfig) -> Result<Self> {
        let norm = final_norm(&vs, cfg)?;
        let layers = (0..cfg.num_layers)
            .map(|i| EncoderLayer::new(&vs / "layers" / i, &cfg.layer))
            .collect::<Result<_>>()?;
        Ok(Self { layers, norm })
    }

    /// `x` `[batch, len, d_model]` (embedded) → `[batch, len, d_model]`.
    pub fn forward(&self, x: &Tensor, mask: &Mask, train: bool) -> Result<Tensor> {
        let mut x = x.shallow_clone();
        for layer in &self.layers {
            x = layer.forward(&x, mask, train)?;
        }
        Ok(match &self.norm {
            Some(norm) => norm.forward(&x),
            None => x,
        })
    }
}

/// The incremental-decoding state of a [`Decoder`]: per-layer caches, the
/// memory mask and the number of positions decoded so far.
#[derive(Debug)]
pub struct DecoderCache {
    pub layers: Vec<LayerCache>,
    pub memory_mask: Mask,
    /// Positions already decoded (the next step's position index).
    pub position: i64,
}

impl DecoderCache {
    /// Reorders the hypotheses along the batch dimension (beam search).
    /// `index` `[batch']` int64. Only the self-attention caches change: it
    /// assumes each row is replaced by one of the same source, so the memory
    /// keys/values and mask stay valid (use [`DecoderCache::select`] otherwise).
    pub fn reorder_beams(&mut self, index: &Tensor) -> Result<()> {
        for layer in &mut self.layers {
            if let Some(kv) = &layer.self_kv {
                layer.self_kv = Some(kv.index_select(index)?);
            }
        }
        Ok(())
    }

    /// Keeps the rows `index` of everything (e.g. dropping finished sentences).
    pub fn select(&mut self, index: &Tensor) -> Result<()> {
        self.reorder_beams(index)?;
        for layer in &mut self.layers {
            layer.memory_kv = layer.memory_kv.index_select(index)?;
        }
        self.memory_mask = self.memory_mask.index_select(index)?;
        Ok(())
    }
}

/// A stack of [`DecoderLayer`]s.
#[derive(Debug)]
pub struct Decoder {
    layers: Vec<DecoderLayer>,
    norm: Option<nn::LayerNorm>,
}

impl Decoder {
    pub fn new(vs: nn::Path, cfg: &StackConfig) -> Result<Self> {
        let norm = final_norm(&vs, cfg)?;
        let layers = (0..cfg.num_layers)
            .map(|i| DecoderLayer::new(&vs / "layers" / i, &cfg.layer))
            .collect::<Result<_>>()?;
        Ok(Self { layers, norm })
    }

    fn finish(&self, x: Tensor) -> Tensor {
        match &self.norm {
            Some(norm) => norm.forward(&x),
            None => x,
        }
    }

    /// Full pass: `x` `[batch, len, d_model]` (embedded), `memory`
    /// `[batch, src_len, d_model]` → `[batch, len, d_model]`. `self_mask` is
    /// [`Mask::Causal`] for an autoregressive decoder, [`Mask::None`] or a
    /// padding bias for a non-autoregressive one.
    pub fn forward(
        &self,
        x: &Tensor,
        self_mask: &Mask,
        memory: &Tensor,
        memory_mask: &Mask,
        train: bool,
    ) -> Result<Tensor> {
        let mut x = x.shallow_clone();
        for layer in &self.layers {
            x = layer.forward(&x, self_mask, memory, memory_mask, train)?;
        }
        Ok(self.finish(x))
    }

    /// The decoding state for `memory` `[batch, src_len, d_model]`: each
    /// layer's memory keys/values are computed here, once.
    pub fn init_cache(&self, memory: &Tensor, memory_mask: Mask) -> Result<DecoderCache> {
        let layers = self
            .layers
            .iter()
            .map(|l| l.init_cache(memory))
            .collect::<Result<_>>()?;
        Ok(DecoderCache {
            layers,
            memory_mask,
            position: 0,
        })
    }

    /// Incremental pass over the next positions `x` `[batch, t, d_model]`
    /// (embedded at positions `cache.position ..`) → `[batch, t, d_model]`.
    pub fn step(&self, x: &Tensor, cache: &mut DecoderCache) -> Result<Tensor> {
        let mut x = x.shallow_clone();
        for (layer, layer_cache) in self.layers.iter().zip(cache.layers.iter_mut()) {
            x = layer.step(&x, layer_cache, &cache.memory_mask)?;
        }
        cache.position += x.size()[1];
        Ok(self.finish(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::tests::layer_config;
    use tch::{Device, Kind};

    #[test]
    fn names_and_final_norm() {
        for prenorm in [true, false] {
            let vs = nn::VarStore::new(Device::Cpu);
            let cfg = StackConfig {
                num_layers: 2,
                layer: layer_config(prenorm),
            };
            let _enc = Encoder::new(vs.root() / "encoder", &cfg).unwrap();
            let names = vs.variables();
            assert!(names.contains_key("encoder.layers.1.self_attn.in_proj_weight"));
            assert_eq!(names.contains_key("encoder.norm.weight"), prenorm);
        }
    }

    #[test]
    fn decoder_cache_steps_and_beam_reordering_match_full_passes() {
        tch::manual_seed(21);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = StackConfig {
            num_layers: 2,
            layer: layer_config(true),
        };
        let dec = Decoder::new(vs.root(), &cfg).unwrap();
        let x = Tensor::randn([2, 4, 16], (Kind::Float, Device::Cpu));
        let memory = Tensor::randn([2, 3, 16], (Kind::Float, Device::Cpu));
        let full = dec
            .forward(&x, &Mask::Causal, &memory, &Mask::None, false)
            .unwrap();
        let mut cache = dec.init_cache(&memory, Mask::None).unwrap();
        let a = dec.step(&x.narrow(1, 0, 2), &mut cache).unwrap();
        assert_eq!(cache.position, 2);
        // Swap the two rows of the history (both "beams" of one source here
        // share the memory only after swapping it too, so use select()).
        let swap = Tensor::from_slice(&[1i64, 0]);
        cache.select(&swap).unwrap();
        let b = dec
            .step(&x.narrow(1, 2, 2).index_select(0, &swap), &mut cache)
            .unwrap();
        let max = |t: Tensor| t.abs().max().double_value(&[]);
        assert!(max(&a - full.narrow(1, 0, 2)) < 1e-5);
        assert!(max(&b - full.narrow(1, 2, 2).index_select(0, &swap)) < 1e-5);
    }

    #[test]
    fn zero_layers_is_a_config_error() {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = StackConfig {
            num_layers: 0,
            layer: layer_config(true),
        };
        assert!(matches!(
            Encoder::new(vs.root(), &cfg),
            Err(TransformerError::Config(_))
        ));
    }
}
