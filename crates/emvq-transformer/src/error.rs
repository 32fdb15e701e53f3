//! The crate's error type.

use emvq_tensor::CheckpointError;
use tch::TchError;

/// Errors of the Transformer library.
#[derive(Debug, thiserror::Error)]
pub enum TransformerError {
    /// A LibTorch op failed, typically on a shape that came from data.
    #[error("tensor op failed: {0}")]
    Tch(#[from] TchError),
    /// A config value is out of range or inconsistent.
    #[error("invalid config: {0}")]
    Config(String),
    /// An input tensor has the wrong rank, size or kind.
    #[error("invalid input: {0}")]
    Input(String),
    /// Reading, writing or restoring a checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// The crate's result type.
pub type Result<T, E = TransformerError> = std::result::Result<T, E>;
