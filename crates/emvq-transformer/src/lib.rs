//! Transformer encoder–decoder layers with incremental decoding, and the
//! autoregressive teacher of Roy et al. 2018 ("Theory and Experiments on
//! Vector Quantized Autoencoders", arXiv 1805.11063), after tensor2tensor's
//! `transformer`.
//!
//! - [`attention`]: multi-head attention (fused QKV, LibTorch's
//!   `scaled_dot_product_attention`), masks, key/value caches.
//! - [`layers`]: feed-forward, encoder and decoder layers (pre- or post-norm).
//! - [`stack`]: encoder and decoder stacks, the decoder's cache.
//! - [`embedding`]: scaled token embeddings, positions, tied projection.
//! - [`model`]: [`Seq2Seq`], the teacher, and its [`TransformerConfig`].
//! - [`loss`]: label-smoothed cross-entropy ignoring padding.
//! - [`optim`]: checkpointable Adam, the warm-up/rsqrt schedule, clipping.
//! - [`train`]: one training step, evaluation, exact-resume checkpoints,
//!   averaging.
//! - [`keeper`]: checkpoint rotation (last K + best by validation loss).
//! - [`search`]: batched greedy and beam search on the cache.
//!
//! Every layer is built as `X::new(vs: nn::Path, cfg: &XConfig)`, with a
//! serde config (`deny_unknown_fields`) and PyTorch's parameter names. A
//! training loop, in outline:
//!
//! ```text
//! let vs = VarStore::new(device);
//! let model = Seq2Seq::new(vs.root(), &cfg)?;
//! let mut opt = Adam::new(&vs, &AdamConfig::default())?;   // β 0.9/0.997, ε 1e-9
//! let mut keeper = CheckpointKeeper::new(&run.checkpoint_dir(), 5)?;
//! loop {
//!     let stats = train_step(&model, &mut opt, &schedule, &micro_batches, &step_cfg)?;
//!     if stats.step % 1000 == 0 {
//!         let val = evaluate(&model, &valid_batches, step_cfg.label_smoothing)?;
//!         keeper.save(&vs, &opt, Some(val.loss), &metadata)?;   // resume: load_training_checkpoint
//!     }
//! }
//! let hyps = beam_search(&model, &src, &SearchConfig { beam_size: 4, length_penalty: 0.6, .. })?;
//! ```
//!
//! Determinism: [`train_step`] reseeds LibTorch's generator from
//! `(seed, step)` every step (tch exposes no generator state to save), so a
//! resumed CPU run repeats a straight one bit for bit at a fixed thread
//! count. On a shared 2-core machine prefer `tch::set_num_threads(1)`:
//! LibTorch's spinning worker threads make small models 10–50× slower when
//! the cores are busy.
pub mod attention;
pub mod embedding;
pub mod error;
pub mod keeper;
pub mod layers;
pub mod loss;
pub mod model;
pub mod optim;
pub mod search;
pub mod stack;
pub mod train;

pub use attention::{AttentionConfig, KvCache, Mask, MultiheadAttention};
pub use embedding::{EmbeddingConfig, Embeddings};
pub use error::{Result, TransformerError};
pub use keeper::{CheckpointKeeper, Saved};
pub use layers::{
    Activation, DecoderLayer, EncoderLayer, FeedForward, FeedForwardConfig, LayerCache, LayerConfig,
};
pub use loss::{label_smoothed_cross_entropy, LossOutput};
pub use model::{shift_right, EncoderOutput, Seq2Seq, TransformerConfig};
pub use optim::{Adam, AdamConfig, LrSchedule};
pub use search::{beam_search, greedy, length_penalty, Hypothesis, SearchConfig};
pub use stack::{Decoder, DecoderCache, Encoder, StackConfig};
pub use train::{
    average_checkpoints, cuda_autocast_dtype, evaluate, load_training_checkpoint,
    save_training_checkpoint, step_seed, train_step, train_step_with, with_bf16_autocast,
    EvalStats, StepConfig, StepStats,
};
