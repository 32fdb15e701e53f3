//! Parallel corpus reading and filtering.
//!
//! A corpus is a source and a target file, plain text or gzip (detected by
//! the gzip magic bytes, whatever the name), one segment a line; line `i` of
//! one file translates line `i` of the other. Lines end in `\n` or `\r\n`;
//! both are removed. Text stays as written: whitespace normalisation happens
//! in the tokenizer (see [`crate::tokenizer`]) and in [`normalize_whitespace`].

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use crate::config::FilterConfig;
use crate::error::{DataError, Result};

/// Both sides of a parallel corpus as raw text lines.
#[derive(Debug, Clone, PartialEq)]
pub struct ParallelCorpus {
    pub source_path: PathBuf,
    pub target_path: PathBuf,
    /// Source segments, one per line of the source file.
    pub source: Vec<String>,
    /// Target segments; `target[i]` translates `source[i]`.
    pub target: Vec<String>,
}

impl ParallelCorpus {
    /// Number of sentence pairs.
    pub fn len(&self) -> usize {
        self.source.len()
    }

    /// True when the corpus has no pairs.
    pub fn is_empty(&self) -> bool {
        self.source.is_empty()
    }
}

/// Both sides of a corpus as token ids, each sequence ending in EOS.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EncodedCorpus {
    /// Source token ids per pair, last id [`crate::tokenizer::EOS_ID`].
    pub source: Vec<Vec<u32>>,
    /// Target token ids per pair, last id [`crate::tokenizer::EOS_ID`].
    pub target: Vec<Vec<u32>>,
    /// Line number (0-based) of each pair in the original files, so outputs
    /// can be matched to raw references after filtering.
    pub line_index: Vec<usize>,
}

impl EncodedCorpus {
    /// Number of sentence pairs.
    pub fn len(&self) -> usize {
        self.source.len()
    }

    /// True when the corpus has no pairs.
    pub fn is_empty(&self) -> bool {
        self.source.is_empty()
    }
}

/// How many pairs each filter dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilterStats {
    pub kept: usize,
    pub empty: usize,
    pub too_long: usize,
    pub bad_ratio: usize,
}

/// Opens `path` for reading, decompressing it when it starts with the gzip magic bytes.
pub fn open_text(path: &Path) -> Result<Box<dyn BufRead + Send>> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut reader = BufReader::new(file);
    let head = reader.fill_buf().map_err(|e| DataError::io(path, e))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        let decoder: Box<dyn Read + Send> = Box::new(MultiGzDecoder::new(reader));
        Ok(Box::new(BufReader::new(decoder)))
    } else {
        Ok(Box::new(reader))
    }
}

/// Reads every line of a plain or gzip text file, without line terminators.
/// A final line without `\n` counts as a line; an empty file has no lines.
pub fn read_lines(path: &Path) -> Result<Vec<String>> {
    let mut reader = open_text(path)?;
    let mut lines = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            break;
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        let line =
            String::from_utf8(std::mem::take(&mut buf)).map_err(|_| DataError::InvalidUtf8 {
                path: path.to_path_buf(),
                line: lines.len() + 1,
            })?;
        lines.push(line);
    }
    Ok(lines)
}

/// Reads a source and a target file and checks they have equally many lines.
pub fn read_parallel(source_path: &Path, target_path: &Path) -> Result<ParallelCorpus> {
    let (source, target) = rayon::join(|| read_lines(source_path), || read_lines(target_path));
    let (source, target) = (source?, target?);
    if source.len() != target.len() {
        return Err(DataError::LineCountMismatch {
            source_path: source_path.to_path_buf(),
            source_lines: source.len(),
            target_path: target_path.to_path_buf(),
            target_lines: target.len(),
        });
    }
    Ok(ParallelCorpus {
        source_path: source_path.to_path_buf(),
        target_path: target_path.to_path_buf(),
        source,
        target,
    })
}

/// Collapses every run of Unicode whitespace to one ASCII space and trims
/// both ends. The tokenizer applies the same normalisation, so
/// `decode(encode(x)) == normalize_whitespace(x)`.
pub fn normalize_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Drops pairs where either side is empty after whitespace normalisation
/// (when `filters.drop_empty`); returns the kept pairs' line numbers.
pub fn non_empty_lines(corpus: &ParallelCorpus, filters: &FilterConfig) -> Vec<usize> {
    (0..corpus.len())
        .filter(|&i| {
            !filters.drop_empty
                || !(corpus.source[i].trim().is_empty() || corpus.target[i].trim().is_empty())
        })
        .collect()
}

/// Applies the length and ratio filters to an encoded corpus (lengths in
/// subword tokens, EOS not counted), logs the counts and returns what was
/// kept. `empty` is the number of pairs already dropped as empty, carried
/// into the stats.
pub fn filter_lengths(
    corpus: EncodedCorpus,
    filters: &FilterConfig,
    empty: usize,
) -> (EncodedCorpus, FilterStats) {
    let mut stats = FilterStats {
        empty,
        ..FilterStats::default()
    };
    let mut kept = EncodedCorpus::default();
    let pairs = corpus
        .source
        .into_iter()
        .zip(corpus.target)
        .zip(corpus.line_index);
    for ((src, tgt), line) in pairs {
        // Lengths without the trailing EOS.
        let (s, t) = (src.len().saturating_sub(1), tgt.len().saturating_sub(1));
        if s > filters.max_len || t > filters.max_len {
            stats.too_long += 1;
            continue;
        }
        let (short, long) = (s.min(t).max(1) as f64, s.max(t) as f64);
        if long / short > filters.max_len_ratio {
            stats.bad_ratio += 1;
            continue;
        }
        kept.source.push(src);
        kept.target.push(tgt);
        kept.line_index.push(line);
    }
    stats.kept = kept.len();
    tracing::info!(
        kept = stats.kept,
        empty = stats.empty,
        too_long = stats.too_long,
        bad_ratio = stats.bad_ratio,
        max_len = filters.max_len,
        max_len_ratio = filters.max_len_ratio,
        "filtered training pairs"
    );
    (kept, stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_plain_and_gzip_with_crlf() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("a.txt");
        std::fs::write(&plain, "one\r\ntwo\n\nlast").unwrap();
        assert_eq!(read_lines(&plain).unwrap(), ["one", "two", "", "last"]);

        // Gzip is detected by content, not by name.
        let gz = dir.path().join("b.txt");
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz).unwrap(),
            flate2::Compression::default(),
        );
        enc.write_all("eins\nzwei\n".as_bytes()).unwrap();
        enc.finish().unwrap();
        assert_eq!(read_lines(&gz).unwrap(), ["eins", "zwei"]);
        let corpus = read_parallel(&plain, &plain).unwrap();
        assert_eq!(corpus.len(), 4);
    }

    #[test]
    fn invalid_utf8_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.de");
        std::fs::write(&path, b"gut\nauch gut\nschlecht \xff\xfe\n").unwrap();
        let err = read_lines(&path).unwrap_err();
        assert!(
            matches!(&err, DataError::InvalidUtf8 { line: 3, .. }),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains("bad.de") && message.contains("line 3"),
            "{message}"
        );
    }

    #[test]
    fn missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let present = dir.path().join("x.en");
        std::fs::write(&present, "a\n").unwrap();
        let missing = dir.path().join("nope.de");
        let err = read_parallel(&present, &missing).unwrap_err();
        assert!(matches!(&err, DataError::MissingFile { path } if path == &missing));
        assert!(err.to_string().contains("nope.de"));
    }

    #[test]
    fn filters_count_what_they_drop() {
        let corpus = ParallelCorpus {
            source_path: "s".into(),
            target_path: "t".into(),
            source: vec!["a".into(), "  ".into(), "c".into()],
            target: vec!["x".into(), "y".into(), "".into()],
        };
        let filters = FilterConfig {
            drop_empty: true,
            max_len: 4,
            max_len_ratio: 2.0,
        };
        assert_eq!(non_empty_lines(&corpus, &filters), [0]);
        let no_drop = FilterConfig {
            drop_empty: false,
            ..filters.clone()
        };
        assert_eq!(non_empty_lines(&corpus, &no_drop), [0, 1, 2]);

        let eos = crate::tokenizer::EOS_ID;
        let encoded = EncodedCorpus {
            source: vec![
                vec![5, 6, eos],
                vec![5; 6],
                vec![5, eos],
                vec![5, 6, 7, eos],
            ],
            target: vec![
                vec![7, 8, eos],
                vec![7, eos],
                vec![7, 8, 9, eos],
                vec![7, 8, eos],
            ],
            line_index: vec![0, 1, 2, 3],
        };
        // Pair 1: 5 tokens > max_len; pair 2: ratio 3 > 2; pairs 0 and 3 kept.
        let (kept, stats) = filter_lengths(encoded, &filters, 2);
        assert_eq!(kept.line_index, [0, 3]);
        assert_eq!(
            stats,
            FilterStats {
                kept: 2,
                empty: 2,
                too_long: 1,
                bad_ratio: 1
            }
        );
    }

    #[test]
    fn whitespace_normalisation() {
        assert_eq!(normalize_whitespace("\t a  b\u{3000}c \n"), "a b c");
        assert_eq!(normalize_whitespace(""), "");
    }
}
