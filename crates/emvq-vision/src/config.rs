//! Configs of the CIFAR-10 VQ-VAE (Roy et al. 2018, arXiv 1805.11063) and
//! its latent prior. Every struct denies unknown keys; `validate` checks what
//! serde cannot. The bottleneck is the shared [`BottleneckConfig`]
//! (`kind = "vq" | "em"`, `bits`, `n_c`…), as in the translation models.

use emvq_bottleneck::{BottleneckConfig, BottleneckKind};
use emvq_transformer::{Activation, LayerConfig, StackConfig};
use serde::{Deserialize, Serialize};

use crate::{Result, VisionError};

/// The image is 32×32; each downsampling step halves it.
pub const IMAGE_SIZE: i64 = 32;

/// `[model]` of a VQ-VAE config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VqVaeConfig {
    /// Channels of the convolutional trunk (T2T's CIFAR setting: 512).
    pub hidden: i64,
    /// Residual blocks in the encoder and in the decoder.
    pub res_blocks: i64,
    /// Inner channels of a residual block.
    pub res_hidden: i64,
    /// Stride-2 steps: 32 → 32/2^k (2 gives the 8×8 latent grid).
    #[serde(default = "default_downsamples")]
    pub downsamples: i64,
    /// Size d of a latent vector (what the bottleneck quantises).
    pub latent_dim: i64,
    /// The discrete bottleneck (`vq` or `em`).
    pub bottleneck: BottleneckConfig,
}

fn default_downsamples() -> i64 {
    2
}

/// The encoder's part of [`VqVaeConfig`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderConfig {
    pub hidden: i64,
    pub res_blocks: i64,
    pub res_hidden: i64,
    pub downsamples: i64,
    pub latent_dim: i64,
}

/// The decoder's part of [`VqVaeConfig`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecoderConfig {
    pub hidden: i64,
    pub res_blocks: i64,
    pub res_hidden: i64,
    pub upsamples: i64,
    pub latent_dim: i64,
}

impl VqVaeConfig {
    /// Checks sizes and the bottleneck (only `vq` and `em` have codes).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(VisionError::Config(m));
        if self.hidden <= 0 || self.res_hidden <= 0 || self.latent_dim <= 0 {
            return bad(format!(
                "hidden ({}), res_hidden ({}) and latent_dim ({}) must be positive",
                self.hidden, self.res_hidden, self.latent_dim
            ));
        }
        if self.res_blocks < 0 {
            return bad(format!("res_blocks = {} must be ≥ 0", self.res_blocks));
        }
        if !(1..=4).contains(&self.downsamples) {
            return bad(format!(
                "downsamples = {} must be in 1..=4",
                self.downsamples
            ));
        }
        if self.bottleneck.kind == BottleneckKind::Semhash {
            return bad("the VQ-VAE needs a codebook: bottleneck.kind must be vq or em".into());
        }
        self.bottleneck.validate(self.latent_dim)?;
        Ok(())
    }

    /// Side of the latent grid, 32 / 2^downsamples.
    pub fn grid(&self) -> i64 {
        IMAGE_SIZE >> self.downsamples
    }

    /// Latent positions L = grid².
    pub fn latents(&self) -> i64 {
        self.grid() * self.grid()
    }

    pub fn encoder(&self) -> EncoderConfig {
        EncoderConfig {
            hidden: self.hidden,
            res_blocks: self.res_blocks,
            res_hidden: self.res_hidden,
            downsamples: self.downsamples,
            latent_dim: self.latent_dim,
        }
    }

    pub fn decoder(&self) -> DecoderConfig {
        DecoderConfig {
            hidden: self.hidden,
            res_blocks: self.res_blocks,
            res_hidden: self.res_hidden,
            upsamples: self.downsamples,
            latent_dim: self.latent_dim,
        }
    }
}

/// `[prior]`: the autoregressive Transformer over latent codes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorConfig {
    pub d_model: i64,
    pub heads: i64,
    pub d_ff: i64,
    pub layers: i64,
    /// Residual, attention and feed-forward dropout.
    pub dropout: f64,
}

impl PriorConfig {
    pub fn validate(&self) -> Result<()> {
        if self.d_model <= 0 || self.heads <= 0 || self.d_model % self.heads != 0 {
            return Err(VisionError::Config(format!(
                "prior d_model ({}) must be a positive multiple of heads ({})",
                self.d_model, self.heads
            )));
        }
        if self.d_ff <= 0 || self.layers <= 0 {
            return Err(VisionError::Config(format!(
                "prior d_ff ({}) and layers ({}) must be positive",
                self.d_ff, self.layers
            )));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(VisionError::Config(format!(
                "prior dropout = {} must be in [0, 1)",
                self.dropout
            )));
        }
        Ok(())
    }

    /// The layer stack: pre-norm self-attention layers (used with a causal
    /// mask).
    pub fn stack(&self) -> StackConfig {
        StackConfig {
            num_layers: self.layers,
            layer: LayerConfig {
                d_model: self.d_model,
                heads: self.heads,
                d_ff: self.d_ff,
                dropout: self.dropout,
                attention_dropout: self.dropout,
                relu_dropout: self.dropout,
                prenorm: true,
                layer_norm_eps: 1e-6,
                activation: Activation::Relu,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODEL: &str = r#"
hidden = 32
res_blocks = 1
res_hidden = 16
latent_dim = 16
[bottleneck]
kind = "em"
bits = 6
n_c = 2
"#;

    #[test]
    fn parses_validates_and_rejects_unknown_keys() {
        let cfg: VqVaeConfig = toml::from_str(MODEL).unwrap();
        cfg.validate().unwrap();
        assert_eq!((cfg.grid(), cfg.latents()), (8, 64));
        assert_eq!(cfg.bottleneck.slices, 2);
        let err = toml::from_str::<VqVaeConfig>(&format!("hiden = 3\n{MODEL}")).unwrap_err();
        assert!(err.to_string().contains("hiden"), "{err}");
        let mut semhash = cfg.clone();
        semhash.bottleneck.kind = BottleneckKind::Semhash;
        semhash.bottleneck.slices = 1;
        assert!(semhash.validate().is_err());
        let mut odd = cfg;
        odd.latent_dim = 15; // n_c = 2 does not divide it
        assert!(odd.validate().is_err());
    }
}
