//! The image side of Roy, Vaswani, Neelakantan, Parmar (2018), "Theory and
//! Experiments on Vector Quantized Autoencoders" (arXiv 1805.11063): a
//! CIFAR-10 VQ-VAE whose discrete bottleneck is trained either as plain
//! VQ-VAE (nearest code, EMA codebook) or by Monte-Carlo soft EM, with an
//! autoregressive Transformer prior over its latent codes, scored in bits
//! per dimension.
//!
//! - [`config`]: serde configs (`deny_unknown_fields`) of every module.
//! - [`model`]: the convolutional [`Encoder`] (32×32×3 → 8×8×d), the shared
//!   [`emvq_bottleneck::Bottleneck`], the [`Decoder`] (8×8×d → a 256-way
//!   softmax per subpixel) and [`VqVae`], which joins them.
//! - [`prior`]: [`LatentPrior`], a causal Transformer over the raster-ordered
//!   latent codes (one softmax per slice when n_c > 1), built from
//!   `emvq_transformer`'s encoder layers with a causal mask.
//! - [`bpd`]: bits/dim with a uniform or a learned prior over codes.
//! - [`picture`]: PNG grids of images, reconstructions and samples, and a
//!   codebook-usage bar chart.
//!
//! **Pixel likelihood.** The decoder outputs, for every one of the 3072
//! subpixels, 256 logits; p(x|z) is the product of the 3072 softmax
//! probabilities of the observed 8-bit values. This is an exact discrete
//! likelihood (no dequantisation, no discretised-logistic approximation), so
//! −log₂ p(x|z) + −log₂ p(z) is a true code length and the bits/dim are
//! comparable with other exact discrete models. The subpixels are
//! independent given z (no PixelCNN-style decoder).

pub mod bpd;
pub mod config;
pub mod model;
pub mod picture;
pub mod prior;

pub use bpd::{bits_per_dim, uniform_prior_nats, SUBPIXELS};
pub use config::{DecoderConfig, EncoderConfig, PriorConfig, VqVaeConfig};
pub use model::{pixel_nll, Decoder, Encoder, PosteriorHealth, ResBlock, VqVae, VqVaeOutput};
pub use prior::LatentPrior;

use emvq_bottleneck::BottleneckError;
use emvq_transformer::TransformerError;
use tch::TchError;

/// Errors of the vision models; shapes and configs come from users and
/// files, so they are errors, not panics.
#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    #[error("vision config: {0}")]
    Config(String),
    #[error("{what} has shape {shape:?}, expected {expected}")]
    Shape {
        what: &'static str,
        shape: Vec<i64>,
        expected: String,
    },
    #[error("PNG {path}: {message}")]
    Png { path: String, message: String },
    #[error(transparent)]
    Bottleneck(#[from] BottleneckError),
    #[error(transparent)]
    Transformer(#[from] TransformerError),
    #[error(transparent)]
    Torch(#[from] TchError),
}

/// Results of this crate.
pub type Result<T, E = VisionError> = std::result::Result<T, E>;
