//! `emvq-bleu`: corpus and sentence BLEU, chrF and chrF++ computed exactly as
//! sacreBLEU 2.x computes them, plus sacreBLEU's paired significance tests
//! (bootstrap resampling and approximate randomisation).
//!
//! The crate has no LibTorch dependency; its CLI lives in [`cli`] and is also
//! built as the small `emvq-bleu` binary.
//!
//! ```
//! use emvq_bleu::{corpus_bleu, BleuConfig};
//! let hyps = vec!["The cat sat on the mat.".to_string()];
//! let refs = vec![vec!["The cat sat on the mat.".to_string()]];
//! let score = corpus_bleu(&hyps, &refs, &BleuConfig::default()).unwrap();
//! assert!((score.score - 100.0).abs() < 1e-9);
//! ```

pub mod bleu;
pub mod chrf;
pub mod cli;
pub mod error;
pub mod io;
pub mod signature;
pub mod significance;
pub mod text;
pub mod tokenizers;
#[rustfmt::skip]
mod unicode_tables;

pub use bleu::{
    compute_bleu, corpus_bleu, looks_tokenized, sentence_bleu, Bleu, BleuConfig, BleuScore,
    Smoothing,
};
pub use chrf::{corpus_chrf, sentence_chrf, Chrf, ChrfConfig, ChrfScore};
pub use cli::{run, BleuArgs};
pub use error::BleuError;
pub use signature::Signature;
pub use significance::{
    paired_ar, paired_bs, ConfidenceInterval, PairedResult, SegmentStats, StatsMetric,
};
pub use tokenizers::Tokenizer;

/// The version string this scorer writes into signatures.
pub const SCORER_VERSION: &str = concat!("emvq-bleu-", env!("CARGO_PKG_VERSION"));
