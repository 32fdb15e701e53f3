//! Non-autoregressive translation with discrete latents, after Roy, Vaswani,
//! Neelakantan, Parmar (2018), "Theory and Experiments on Vector Quantized
//! Autoencoders" (arXiv 1805.11063; tensor2tensor's `transformer_nat`), which
//! builds on Kaiser et al. (2018), "Fast Decoding in Sequence Models using
//! Discrete Latent Variables" (arXiv 1803.03382, the latent Transformer).
//!
//! - [`api`]: [`NatModel`], what every NAT model offers (loss, one-pass
//!   translation, candidates for rescoring).
//! - [`LatentError`] (in [`error`]): what can go wrong.
//! - [`length`]: target lengths (T2T's 2|x|, a ratio, or a classifier over
//!   |y| − |x|) and candidate lengths for noisy parallel decoding.
//! - [`plain`]: [`PlainNat`], the plain NAT baseline (Gu et al. 2018:
//!   uniform copy of the source, one pass at a predicted length).
//! - [`rescore`]: teacher scores of candidates and noisy parallel decoding.
//! - [`config`]: [`NatConfig`], the latent Transformer's configuration.
//! - [`compress`]: the compressor and decompressor (residual conv blocks,
//!   strided convs, doubling steps).
//! - [`predictor`]: the autoregressive latent predictor over the codes.
//! - [`latent`]: [`LatentNat`], the latent Transformer NAT, and
//!   [`init_from_teacher`].
//! - [`timing`]: thread CPU time for latency figures on busy machines.

pub mod api;
pub mod compress;
pub mod config;
pub mod error;
pub mod latent;
pub mod length;
pub mod plain;
pub mod predictor;
pub mod rescore;
pub mod timing;

pub use api::{NatDecode, NatLoss, NatModel};
pub use config::{NatConfig, ScheduleConfig};
pub use error::{LatentError, Result};
pub use latent::{init_from_teacher, DecodeStats, LatentNat, PREDICTOR_FROM_TEACHER_DECODER};
pub use length::{LengthConfig, LengthPredictor, LengthRule};
pub use plain::{PlainNat, PlainNatConfig};
pub use rescore::{rescore, rescore_by, teacher_scores, Score};
