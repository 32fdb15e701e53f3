//! Reading segment files the way sacreBLEU's command line does: UTF-8 text
//! (gzip-compressed when the name ends in `.gz`), lines split at `\n` only,
//! each line with trailing whitespace removed (Python's `rstrip()`).

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use crate::error::BleuError;
use crate::text::py_rstrip;

/// Splits raw bytes into lines (at `\n`; a final newline ends the last line
/// rather than starting an empty one), checking UTF-8 and right-stripping.
/// `path` only names the source in errors.
pub fn split_lines(bytes: &[u8], path: &Path) -> Result<Vec<String>, BleuError> {
    let mut lines = Vec::new();
    if bytes.is_empty() {
        return Ok(lines);
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
        let line = std::str::from_utf8(raw).map_err(|e| BleuError::InvalidUtf8 {
            path: path.to_path_buf(),
            line: i + 1,
            detail: format!("invalid byte at column {}", e.valid_up_to() + 1),
        })?;
        lines.push(py_rstrip(line).to_string());
    }
    Ok(lines)
}

/// Reads all bytes of a file, decompressing `.gz` files.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>, BleuError> {
    let io_err = |source| BleuError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let mut bytes = Vec::new();
    if path.extension().is_some_and(|e| e == "gz") {
        MultiGzDecoder::new(file)
            .read_to_end(&mut bytes)
            .map_err(io_err)?;
    } else {
        std::io::BufReader::new(file)
            .read_to_end(&mut bytes)
            .map_err(io_err)?;
    }
    Ok(bytes)
}

/// Reads a file of segments, one per line.
pub fn read_lines(path: impl AsRef<Path>) -> Result<Vec<String>, BleuError> {
    let path = path.as_ref();
    split_lines(&read_bytes(path)?, path)
}

/// Reads a hypothesis file and its reference files, checking that all have
/// the same number of lines. Returns `(hyps, refs[stream][segment])`.
pub fn read_corpus(
    hyp_path: &Path,
    ref_paths: &[PathBuf],
) -> Result<(Vec<String>, Vec<Vec<String>>), BleuError> {
    let hyps = read_lines(hyp_path)?;
    let refs = read_refs(ref_paths)?;
    check_line_counts(hyp_path, hyps.len(), ref_paths, &refs)?;
    Ok((hyps, refs))
}

/// Reads reference files, one stream per file.
pub fn read_refs(ref_paths: &[PathBuf]) -> Result<Vec<Vec<String>>, BleuError> {
    if ref_paths.is_empty() {
        return Err(BleuError::NoReferences);
    }
    ref_paths.iter().map(read_lines).collect()
}

/// Checks that a hypothesis stream and every reference stream have the same length.
pub fn check_line_counts(
    hyp_path: &Path,
    hyp_lines: usize,
    ref_paths: &[PathBuf],
    refs: &[Vec<String>],
) -> Result<(), BleuError> {
    for (path, r) in ref_paths.iter().zip(refs) {
        if r.len() != hyp_lines {
            return Err(BleuError::FileLineMismatch {
                hyp_path: hyp_path.to_path_buf(),
                hyp_lines,
                ref_path: path.clone(),
                ref_lines: r.len(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_like_python() {
        let p = Path::new("x");
        assert_eq!(split_lines(b"", p).unwrap(), Vec::<String>::new());
        assert_eq!(split_lines(b"a\n", p).unwrap(), ["a"]);
        assert_eq!(split_lines(b"a\n\n", p).unwrap(), ["a", ""]);
        assert_eq!(
            split_lines(b"a \r\nb\x0c\tc", p).unwrap(),
            ["a", "b\x0c\tc"]
        );
        assert_eq!(split_lines(b"\n", p).unwrap(), [""]);
        let err = split_lines(b"ok\nbad\xff\n", p).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("'x'"), "{err}");
    }
}
