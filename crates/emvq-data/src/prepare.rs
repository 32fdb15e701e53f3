//! One call from files to encoded corpora: read every split, train (or
//! reload) the joint BPE on the training split, encode everything.
//!
//! Only the training split is filtered (empty lines, over-long pairs, extreme
//! length ratios); validation and test splits keep every line so that scores
//! are computed against the complete raw references.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::TranslationDataConfig;
use crate::corpus::{
    filter_lengths, non_empty_lines, read_parallel, EncodedCorpus, FilterStats, ParallelCorpus,
};
use crate::error::Result;
use crate::tokenizer::{SubwordTokenizer, EOS_ID, TOKENIZER_FILE};

/// One split: its raw lines and their encoding.
#[derive(Debug, Clone)]
pub struct PreparedSplit {
    /// File stem, e.g. `test_2016_flickr`.
    pub name: String,
    /// Raw text of both sides (references for scoring).
    pub raw: ParallelCorpus,
    /// Token ids of both sides, each ending in EOS; `line_index` points into `raw`.
    pub encoded: EncodedCorpus,
}

/// Wall-clock time of each phase of [`prepare_translation`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PrepareTimings {
    /// Reading and decompressing every split.
    pub read: Duration,
    /// Training and saving the BPE (or loading a saved one).
    pub bpe: Duration,
    /// Encoding every split and filtering the training split.
    pub encode: Duration,
}

impl PrepareTimings {
    /// Sum of the phases.
    pub fn total(&self) -> Duration {
        self.read + self.bpe + self.encode
    }
}

/// Everything the translation models train and evaluate on.
#[derive(Debug, Clone)]
pub struct PreparedTranslation {
    pub tokenizer: SubwordTokenizer,
    /// Where the tokenizer was saved or loaded from, when a run dir was given.
    pub tokenizer_path: Option<PathBuf>,
    /// True when the tokenizer was trained now, false when reloaded.
    pub trained_tokenizer: bool,
    /// Training split after filtering.
    pub train: PreparedSplit,
    pub filter_stats: FilterStats,
    pub valid: PreparedSplit,
    /// Test splits in the order of `config.tests`.
    pub tests: Vec<PreparedSplit>,
    pub timings: PrepareTimings,
}

/// Reads the splits named in `config` from `data_dir`, trains the joint BPE
/// on the training split (or reloads `run_dir/tokenizer.json` when it
/// exists), saves it to `run_dir` when given, and encodes every split. With
/// `config.train_dir` set, the training pairs are read from there instead
/// (the BPE still learns from the original training split).
pub fn prepare_translation(
    config: &TranslationDataConfig,
    data_dir: &Path,
    run_dir: Option<&Path>,
) -> Result<PreparedTranslation> {
    config.validate()?;
    let mut timings = PrepareTimings::default();

    let start = Instant::now();
    let mut stems = vec![config.train.clone(), config.valid.clone()];
    stems.extend(config.tests.iter().cloned());
    let mut raws = stems
        .iter()
        .map(|stem| {
            let (src, tgt) = config.split_files(data_dir, stem);
            read_parallel(&src, &tgt)
        })
        .collect::<Result<Vec<_>>>()?;
    // `train_dir` replaces the training pairs; the BPE still learns from the
    // original training split (`raws[0]`).
    let replaced_train = match &config.train_dir {
        Some(_) => {
            let (src, tgt) = config.train_files(data_dir)?;
            let raw = read_parallel(&src, &tgt)?;
            tracing::info!(pairs = raw.len(), source = %src.display(), "training pairs from data.train_dir");
            Some(raw)
        }
        None => None,
    };
    timings.read = start.elapsed();
    for (stem, raw) in stems.iter().zip(&raws) {
        tracing::info!(split = %stem, pairs = raw.len(), "read parallel corpus");
    }

    let start = Instant::now();
    let bpe_raw = &raws[0];
    let saved = run_dir.map(|d| d.join(TOKENIZER_FILE));
    let (tokenizer, trained) = match &saved {
        Some(path) if path.is_file() => (SubwordTokenizer::from_file(path)?, false),
        _ => {
            let tokenizer =
                SubwordTokenizer::train_joint(&bpe_raw.source, &bpe_raw.target, config.vocab_size)?;
            if let Some(dir) = run_dir {
                tokenizer.save(dir)?;
            }
            (tokenizer, true)
        }
    };
    timings.bpe = start.elapsed();
    tracing::info!(
        vocab_size = tokenizer.vocab_size(),
        trained,
        "joint BPE tokenizer ready"
    );

    let start = Instant::now();
    if let Some(raw) = replaced_train {
        raws[0] = raw;
    }
    let train_raw = &raws[0];
    let train_lines = non_empty_lines(train_raw, &config.filters);
    let empty = train_raw.len() - train_lines.len();
    let train_encoded = encode_corpus(&tokenizer, train_raw, &train_lines)?;
    let (train_encoded, filter_stats) = filter_lengths(train_encoded, &config.filters, empty);
    let mut encoded_rest = Vec::with_capacity(raws.len() - 1);
    for raw in &raws[1..] {
        let all: Vec<usize> = (0..raw.len()).collect();
        encoded_rest.push(encode_corpus(&tokenizer, raw, &all)?);
    }
    timings.encode = start.elapsed();

    let mut splits = stems
        .into_iter()
        .skip(1)
        .zip(raws.drain(1..))
        .zip(encoded_rest)
        .map(|((name, raw), encoded)| PreparedSplit { name, raw, encoded });
    let valid = splits.next().expect("the validation split was read");
    let tests: Vec<PreparedSplit> = splits.collect();
    let train = PreparedSplit {
        name: config.train.clone(),
        raw: raws.pop().expect("the training split was read"),
        encoded: train_encoded,
    };
    Ok(PreparedTranslation {
        tokenizer,
        tokenizer_path: saved,
        trained_tokenizer: trained,
        train,
        filter_stats,
        valid,
        tests,
        timings,
    })
}

/// [`prepare_translation`] with the Multi30k defaults (8k joint BPE; splits
/// train, val, test_2016_flickr, test_2017_flickr, test_2017_mscoco).
pub fn prepare_multi30k(data_dir: &Path, run_dir: Option<&Path>) -> Result<PreparedTranslation> {
    prepare_translation(&TranslationDataConfig::multi30k(), data_dir, run_dir)
}

/// Encodes the given lines of both sides, appending EOS to every sequence.
pub fn encode_corpus(
    tokenizer: &SubwordTokenizer,
    corpus: &ParallelCorpus,
    lines: &[usize],
) -> Result<EncodedCorpus> {
    let source: Vec<&str> = lines.iter().map(|&i| corpus.source[i].as_str()).collect();
    let target: Vec<&str> = lines.iter().map(|&i| corpus.target[i].as_str()).collect();
    let with_eos = |mut seqs: Vec<Vec<u32>>| {
        for seq in &mut seqs {
            seq.push(EOS_ID);
        }
        seqs
    };
    Ok(EncodedCorpus {
        source: with_eos(tokenizer.encode_batch(&source)?),
        target: with_eos(tokenizer.encode_batch(&target)?),
        line_index: lines.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, stem: &str, en: &[&str], de: &[&str]) {
        std::fs::write(dir.join(format!("{stem}.en")), en.join("\n") + "\n").unwrap();
        std::fs::write(dir.join(format!("{stem}.de")), de.join("\n") + "\n").unwrap();
    }

    /// `train_dir` swaps the training pairs only: the vocabulary (learnt from
    /// the original training split) and the validation split are unchanged.
    #[test]
    fn train_dir_replaces_only_the_training_pairs() {
        let data = tempfile::tempdir().unwrap();
        let distilled = tempfile::tempdir().unwrap();
        let en = ["a man runs", "a dog sleeps", "the man sleeps"];
        write(
            data.path(),
            "train",
            &en,
            &["ein Mann läuft", "ein Hund schläft", "der Mann schläft"],
        );
        write(data.path(), "val", &["a dog runs"], &["ein Hund läuft"]);
        write(
            distilled.path(),
            "train",
            &en,
            &["Mann läuft", "Hund schläft", "der Mann"],
        );
        let plain = TranslationDataConfig {
            data_dir: Some(data.path().to_path_buf()),
            tests: vec![],
            vocab_size: 300,
            max_tokens: 64,
            filters: crate::FilterConfig {
                max_len: 20,
                ..Default::default()
            },
            ..TranslationDataConfig::default()
        };
        let with_dir = TranslationDataConfig {
            train_dir: Some(distilled.path().to_path_buf()),
            ..plain.clone()
        };
        let a = prepare_translation(&plain, data.path(), None).unwrap();
        let b = prepare_translation(&with_dir, data.path(), None).unwrap();
        assert_eq!(
            b.train.raw.target,
            ["Mann läuft", "Hund schläft", "der Mann"]
        );
        assert_eq!(b.train.raw.source, a.train.raw.source);
        assert_eq!(
            a.tokenizer.encode_batch(&["ein Hund läuft"]).unwrap(),
            b.tokenizer.encode_batch(&["ein Hund läuft"]).unwrap()
        );
        assert_eq!(a.tokenizer.vocab_size(), b.tokenizer.vocab_size());
        assert_eq!(b.valid.encoded, a.valid.encoded);
        assert_eq!(b.train.encoded.source, a.train.encoded.source);
        assert_ne!(b.train.encoded.target, a.train.encoded.target);

        std::fs::remove_file(distilled.path().join("train.de")).unwrap();
        let err = prepare_translation(&with_dir, data.path(), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("data.train_dir") && err.contains("train.de"),
            "{err}"
        );
    }
}
