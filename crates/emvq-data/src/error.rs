//! The crate's error type: every failure names the file (and line or record)
//! it concerns, so a user can find and fix the data.

use std::path::PathBuf;

/// Everything that can go wrong while reading, tokenising or batching data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file that should exist does not.
    #[error("file not found: {path}")]
    MissingFile { path: PathBuf },

    /// Any other I/O failure on a named file.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A line of a text file is not valid UTF-8 (line numbers start at 1).
    #[error("{path}: line {line} is not valid UTF-8")]
    InvalidUtf8 { path: PathBuf, line: usize },

    /// The two sides of a parallel corpus have different numbers of lines.
    #[error(
        "parallel corpus sides differ in length: {source_path} has {source_lines} lines \
         but {target_path} has {target_lines} lines"
    )]
    LineCountMismatch {
        source_path: PathBuf,
        source_lines: usize,
        target_path: PathBuf,
        target_lines: usize,
    },

    /// A CIFAR-10 file ends in the middle of a record.
    #[error(
        "CIFAR-10 file {path}: record {record} is truncated ({bytes} of {expected} bytes); \
         the file size must be a multiple of {expected}"
    )]
    CifarTruncated {
        path: PathBuf,
        record: usize,
        bytes: usize,
        expected: usize,
    },

    /// A CIFAR-10 record has a label outside 0..=9.
    #[error("CIFAR-10 file {path}: record {record} has label {label}, expected 0..=9")]
    CifarLabel {
        path: PathBuf,
        record: usize,
        label: u8,
    },

    /// A CIFAR-10 file or tar archive lacks a file the split needs.
    #[error("CIFAR-10: {what} not found in {path}")]
    CifarMissingMember { path: PathBuf, what: String },

    /// A data set could not be found in any of the places searched.
    #[error("{what} not found; looked in: {}", format_paths(searched))]
    DataNotFound {
        what: String,
        searched: Vec<PathBuf>,
    },

    /// The Hugging Face tokenizer failed (training, encoding, decoding, parsing).
    #[error("tokenizer error{}: {message}", context.as_ref().map(|p| format!(" ({})", p.display())).unwrap_or_default())]
    Tokenizer {
        context: Option<PathBuf>,
        message: String,
    },

    /// One sentence pair is longer than a whole batch may be.
    #[error(
        "pair {index} needs {tokens} tokens (max of source and target length), \
         more than max_tokens = {max_tokens}; filter long segments or raise max_tokens"
    )]
    PairTooLong {
        index: usize,
        tokens: usize,
        max_tokens: usize,
    },

    /// A configuration value is out of range.
    #[error("invalid data configuration: {0}")]
    Config(String),
}

fn format_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl DataError {
    /// Wraps an I/O error on `path`, turning "not found" into [`DataError::MissingFile`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::MissingFile { path }
        } else {
            DataError::Io { path, source }
        }
    }

    pub(crate) fn tokenizer(context: Option<PathBuf>, err: impl std::fmt::Display) -> Self {
        DataError::Tokenizer {
            context,
            message: err.to_string(),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
