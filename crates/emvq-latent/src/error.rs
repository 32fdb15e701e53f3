//! The error type of the NAT models.

use thiserror::Error;

/// What can go wrong building, training or running a NAT model.
#[derive(Debug, Error)]
pub enum LatentError {
    /// A configuration value is out of range or inconsistent.
    #[error("invalid NAT configuration: {0}")]
    Config(String),
    /// A tensor has the wrong shape or kind for the operation.
    #[error("shape error: {0}")]
    Shape(String),
    /// A LibTorch operation failed.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// A Transformer layer failed.
    #[error(transparent)]
    Transformer(#[from] emvq_transformer::TransformerError),
    /// The discrete bottleneck failed.
    #[error(transparent)]
    Bottleneck(#[from] emvq_bottleneck::BottleneckError),
}

/// Results of this crate.
pub type Result<T, E = LatentError> = std::result::Result<T, E>;
