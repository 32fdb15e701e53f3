//! Non-autoregressive translation with discrete latents, after Roy, Vaswani,
//! Neelakantan, Parmar (2018), "Theory and Experiments on Vector Quantized
//! Autoencoders" (arXiv 1805.11063; tensor2tensor's `transformer_nat`), which
//! builds on Kaiser et al. (2018), "Fast Decoding in Sequence Models using
//! Discrete Latent Variables" (arXiv 1803.03382, the latent Transformer).
//!
//! - [`api`]: [`NatModel`], what every NAT model offers (loss, one-pass
//!   translation, candidates for rescoring).
//! - [`error`]: [`LatentError`].

pub mod api;
pub mod error;

pub use api::{NatDecode, NatLoss, NatModel};
pub use error::{LatentError, Result};
