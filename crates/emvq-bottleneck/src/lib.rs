//! The discrete bottleneck of emvq, after Roy, Vaswani, Neelakantan, Parmar
//! (2018), "Theory and Experiments on Vector Quantized Autoencoders", arXiv
//! 1805.11063, and its tensor2tensor code (`layers/discretization.py`,
//! `models/research/transformer_nat.py`).
//!
//! - [`Bottleneck`]: one constructor for every kind (`vq`, `em`, `semhash`),
//!   configured by [`BottleneckConfig`]; `forward` returns a
//!   [`BottleneckOutput`] (straight-through quantised vectors, codes, soft
//!   targets, losses) and `embed_codes` maps codes back to vectors.
//! - [`vq`]: distances, nearest codes, Monte-Carlo soft-EM sampling, the EMA
//!   codebook update and dead-code re-seeding, for sliced codebooks
//!   `[n_c, K, d/n_c]`.
//! - [`kmeans`]: Lloyd's algorithm with k-means++ seeding, on tensors and on
//!   `ndarray` with `rayon`.
//! - [`usage`]: [`CodeUsage`], code counts over an epoch, perplexity, dead codes.
//! - [`semhash`]: improved semantic hashing (Kaiser & Bengio 2018).

pub mod bottleneck;
pub mod config;
pub mod kmeans;
pub mod semhash;
pub mod usage;
pub mod vq;

pub use bottleneck::{Bottleneck, BottleneckOutput};
pub use config::{BottleneckConfig, BottleneckKind, CodebookInit};
pub use kmeans::{kmeans, kmeans_ndarray, KMeans, NdKMeans};
pub use usage::CodeUsage;

use tch::TchError;

/// Errors of the bottleneck; shapes and codes come from data, so they are
/// errors, not panics.
#[derive(Debug, thiserror::Error)]
pub enum BottleneckError {
    #[error("bottleneck config: {0}")]
    Config(String),
    #[error("bottleneck input has shape {shape:?}, expected [..., {expected}]")]
    InputShape { shape: Vec<i64>, expected: i64 },
    #[error("codes have shape {shape:?}, expected [..., {slices}]")]
    CodeShape { shape: Vec<i64>, slices: i64 },
    #[error("code {code} is outside the codebook 0..{codebook_size}")]
    CodeOutOfRange { code: i64, codebook_size: i64 },
    #[error("k-means needs at least as many vectors as centres: {n} vectors, {k} centres")]
    NotEnoughData { n: i64, k: i64 },
    #[error("code usage: {0}")]
    Usage(String),
    #[error(transparent)]
    Torch(#[from] TchError),
}
