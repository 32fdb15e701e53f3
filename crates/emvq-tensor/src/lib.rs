//! Tensor utilities shared by every emvq crate that uses LibTorch.
//!
//! - [`runtime`]: loading LibTorch's CUDA backend at run time and describing
//!   the LibTorch in use (`emvq info`).
//! - [`device`]: `device = "auto" | "cpu" | "cuda" | "cuda:N"`, resolved
//!   without ever falling back silently.
//! - [`seed`]: seeding that makes CPU runs repeat bit for bit.
//! - [`mask`], [`position`], [`gather`]: padding/causal masks, sinusoidal
//!   position encodings, gather helpers.
//! - [`params`]: parameter counting.
//! - [`layout`]: column-major weight matrices for fast batch-1 inference.
//! - [`checkpoint`]: safetensors checkpoints written atomically.
//! - [`config`], [`run`], [`logging`]: TOML configs with strict keys, run
//!   directories (`runs/<stage>/<name>/`), tracing logs and progress bars.
//! - [`fsutil`]: atomic file writes (temp file, fsync, rename).

pub mod checkpoint;
pub mod config;
pub mod device;
pub mod fsutil;
pub mod gather;
pub mod layout;
pub mod logging;
pub mod mask;
pub mod params;
pub mod position;
pub mod run;
pub mod runtime;
pub mod seed;

pub use checkpoint::{Checkpoint, CheckpointError};
pub use config::{load_toml, ConfigError};
pub use device::{DeviceError, DeviceSpec};
pub use run::RunDir;
