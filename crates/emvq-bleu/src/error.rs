//! Typed errors of the library.

use std::path::PathBuf;

/// Everything that can go wrong while reading inputs or scoring.
#[derive(Debug, thiserror::Error)]
pub enum BleuError {
    /// A file could not be opened or read.
    #[error("cannot read '{path}': {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A line of an input is not valid UTF-8.
    #[error("'{path}' line {line}: invalid UTF-8 ({detail})")]
    InvalidUtf8 {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What the decoder reported.
        detail: String,
    },
    /// Hypothesis and reference files differ in their number of lines.
    #[error(
        "line counts differ: hypothesis '{hyp_path}' has {hyp_lines} lines \
         but reference '{ref_path}' has {ref_lines} lines"
    )]
    FileLineMismatch {
        /// The hypothesis file.
        hyp_path: PathBuf,
        /// Its number of lines.
        hyp_lines: usize,
        /// The reference file.
        ref_path: PathBuf,
        /// Its number of lines.
        ref_lines: usize,
    },
    /// In-memory hypotheses and a reference stream differ in length.
    #[error("{hyps} hypotheses but reference stream {stream} has {refs} segments")]
    SegmentMismatch {
        /// Number of hypotheses.
        hyps: usize,
        /// Index of the reference stream.
        stream: usize,
        /// Number of segments in that stream.
        refs: usize,
    },
    /// No reference stream was given.
    #[error("no references given")]
    NoReferences,
    /// A tokenizer name that this scorer does not know.
    #[error("unknown tokenizer '{0}' (known: none, 13a, intl, char, zh)")]
    UnknownTokenizer(String),
    /// A smoothing method name that this scorer does not know.
    #[error("unknown smoothing method '{0}' (known: none, floor, add-k, exp)")]
    UnknownSmoothing(String),
    /// Parameters that cannot be used together or are out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
}
