//! Transformer encoder–decoder layers with incremental decoding, and the
//! autoregressive teacher of Roy et al. 2018 ("Theory and Experiments on
//! Vector Quantized Autoencoders", arXiv 1805.11063), after tensor2tensor's
//! `transformer`.
//!
//! - [`attention`]: multi-head attention (fused QKV, LibTorch's
//!   `scaled_dot_product_attention`), masks, key/value caches.
pub mod attention;
pub mod error;

pub use attention::{AttentionConfig, KvCache, Mask, MultiheadAttention};
pub use error::{Result, TransformerError};
