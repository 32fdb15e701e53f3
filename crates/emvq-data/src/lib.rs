//! Data pipelines of emvq, without LibTorch: files in, plain integer
//! buffers out.
//!
//! - [`corpus`]: parallel corpus reading (plain or gzip) with validation and filters;
//! - [`tokenizer`]: the joint byte-level BPE vocabulary (`tokenizer.json`),
//!   special ids pad=0, bos=1, eos=2, unk=3;
//! - [`batch`]: token-count batching, deterministic shuffling, [`DataPosition`] resumption;
//! - [`cifar`]: CIFAR-10 binary reader (`[N, 3, 32, 32]` u8 images);
//! - [`sources`]: where the public data sets come from and where they are found;
//! - [`prepare`]: files to encoded corpora in one call;
//! - [`config`]: the serde config other crates embed.

pub mod batch;
pub mod cifar;
pub mod config;
pub mod corpus;
pub mod error;
pub mod prepare;
pub mod sources;
pub mod tokenizer;

pub use batch::{Batch, BatchConfig, BatchStream, Batcher, DataPosition};
pub use cifar::{load_cifar10, load_cifar10_tar_gz, Cifar10, CifarSplit};
pub use config::{FilterConfig, TranslationDataConfig};
pub use corpus::{read_lines, read_parallel, EncodedCorpus, FilterStats, ParallelCorpus};
pub use error::{DataError, Result};
pub use prepare::{
    prepare_multi30k, prepare_translation, PrepareTimings, PreparedSplit, PreparedTranslation,
};
pub use sources::{find_data, DataSource};
pub use tokenizer::{SubwordTokenizer, BOS_ID, EOS_ID, PAD_ID, UNK_ID};
