//! Serde configuration of the translation data pipeline, meant to be
//! embedded in other crates' TOML configs (e.g. under `[data]`).
//!
//! ```toml
//! [data]
//! data_dir = "../shared/data/multi30k"   # optional; searched for when absent
//! src_lang = "en"
//! tgt_lang = "de"
//! train = "train"
//! valid = "val"
//! tests = ["test_2016_flickr", "test_2017_flickr", "test_2017_mscoco"]
//! vocab_size = 8000
//! max_tokens = 4096
//! seed = 1
//!
//! [data.filters]
//! drop_empty = true
//! max_len = 250
//! max_len_ratio = 9.0
//! ```
//!
//! A split named `stem` is read from `{data_dir}/{stem}.{lang}.gz`, or from
//! `{data_dir}/{stem}.{lang}` when no `.gz` file exists.
//!
//! An optional `train_dir` replaces the training pairs with another corpus of
//! the same languages, e.g. the teacher's rewrite of the targets written by
//! `emvq distill` (sequence-level distillation):
//!
//! ```toml
//! [data]
//! train_dir = "runs/distill/multi30k"   # reads train.{src_lang} and train.{tgt_lang} there
//! ```
//!
//! The training pairs are then read from `{train_dir}/train.{lang}` (`.gz`
//! preferred, as for every split) instead of the `train` split of
//! `data_dir`; the BPE vocabulary is still trained on the original training
//! split (so it is the same with and without `train_dir`), the filters apply
//! to the new pairs as they would to the original ones, and the validation
//! and test splits still come from `data_dir`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// Where the translation data lives and how it is tokenised and batched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranslationDataConfig {
    /// Folder holding the split files. When absent, [`crate::sources::find_data`]
    /// looks for `dataset` in the project's `data/` and then `../shared/data`.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Data set name used to search for `data_dir` when it is absent.
    #[serde(default = "default_dataset")]
    pub dataset: String,
    /// Source language suffix of the files (`train.{src_lang}.gz`).
    #[serde(default = "default_src_lang")]
    pub src_lang: String,
    /// Target language suffix of the files.
    #[serde(default = "default_tgt_lang")]
    pub tgt_lang: String,
    /// File stem of the training split; the BPE vocabulary is trained on it.
    #[serde(default = "default_train")]
    pub train: String,
    /// Optional folder whose `train.{src_lang}` / `train.{tgt_lang}` replace
    /// the training pairs (e.g. a distilled corpus from `emvq distill`); the
    /// vocabulary, validation and test splits still come from `data_dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_dir: Option<PathBuf>,
    /// File stem of the validation split.
    #[serde(default = "default_valid")]
    pub valid: String,
    /// File stems of the test splits.
    #[serde(default = "default_tests")]
    pub tests: Vec<String>,
    /// Size of the joint BPE vocabulary, special tokens and the 256 byte
    /// symbols included.
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    /// Most padded tokens in one batch: `batch_len * max(src_len, tgt_len)`.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// Filters applied to the training split only (never to val/test).
    #[serde(default)]
    pub filters: FilterConfig,
    /// Seed of the batch shuffling; epoch `e` uses stream `e` of this seed.
    #[serde(default = "default_seed")]
    pub seed: u64,
}

/// Training-pair filters; counts of dropped pairs are logged with `tracing`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    /// Drop pairs where either side is empty after whitespace normalisation.
    pub drop_empty: bool,
    /// Drop pairs where either side has more subword tokens than this
    /// (EOS not counted).
    pub max_len: usize,
    /// Drop pairs whose longer side has more than `max_len_ratio` times the
    /// subword tokens of the shorter side.
    pub max_len_ratio: f64,
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig {
            drop_empty: true,
            max_len: 250,
            max_len_ratio: 9.0,
        }
    }
}

fn default_dataset() -> String {
    "multi30k".into()
}
fn default_src_lang() -> String {
    "en".into()
}
fn default_tgt_lang() -> String {
    "de".into()
}
fn default_train() -> String {
    "train".into()
}
fn default_valid() -> String {
    "val".into()
}
fn default_tests() -> Vec<String> {
    vec![
        "test_2016_flickr".into(),
        "test_2017_flickr".into(),
        "test_2017_mscoco".into(),
    ]
}
fn default_vocab_size() -> usize {
    8000
}
fn default_max_tokens() -> usize {
    4096
}
fn default_seed() -> u64 {
    1
}

impl Default for TranslationDataConfig {
    /// Multi30k En→De with an 8k joint BPE vocabulary.
    fn default() -> Self {
        TranslationDataConfig {
            data_dir: None,
            dataset: default_dataset(),
            src_lang: default_src_lang(),
            tgt_lang: default_tgt_lang(),
            train: default_train(),
            train_dir: None,
            valid: default_valid(),
            tests: default_tests(),
            vocab_size: default_vocab_size(),
            max_tokens: default_max_tokens(),
            filters: FilterConfig::default(),
            seed: default_seed(),
        }
    }
}

impl TranslationDataConfig {
    /// Multi30k task 1, En→De (the default).
    pub fn multi30k() -> Self {
        Self::default()
    }

    /// WMT14 En→De: `train.{en,de}` (which the user supplies), newstest2013
    /// for validation and newstest2014 for test, 32k joint BPE.
    pub fn wmt14() -> Self {
        TranslationDataConfig {
            dataset: "wmt14".into(),
            valid: "newstest2013".into(),
            tests: vec!["newstest2014".into()],
            vocab_size: 32000,
            ..Self::default()
        }
    }

    /// Checks the numeric settings.
    pub fn validate(&self) -> Result<()> {
        // 4 special tokens + 256 byte symbols are always in the vocabulary.
        if self.vocab_size < 261 {
            return Err(DataError::Config(format!(
                "vocab_size = {} is below 261 (4 special tokens + 256 bytes + 1 merge)",
                self.vocab_size
            )));
        }
        if self.max_tokens == 0 {
            return Err(DataError::Config("max_tokens must be positive".into()));
        }
        if self.filters.max_len == 0 {
            return Err(DataError::Config("filters.max_len must be positive".into()));
        }
        if self.filters.max_len + 1 > self.max_tokens {
            return Err(DataError::Config(format!(
                "filters.max_len + 1 (EOS) = {} exceeds max_tokens = {}: such pairs fit no batch",
                self.filters.max_len + 1,
                self.max_tokens
            )));
        }
        if self.filters.max_len_ratio.is_nan() || self.filters.max_len_ratio < 1.0 {
            return Err(DataError::Config(format!(
                "filters.max_len_ratio = {} must be at least 1",
                self.filters.max_len_ratio
            )));
        }
        Ok(())
    }

    /// Batching settings from this config: shuffled for training,
    /// length-ordered for evaluation.
    pub fn batch_config(&self, shuffle: bool) -> crate::batch::BatchConfig {
        crate::batch::BatchConfig {
            max_tokens: self.max_tokens,
            shuffle,
            seed: self.seed,
        }
    }

    /// The data folder: `data_dir` when given, otherwise found by
    /// [`crate::sources::find_data`] from `workspace_root`.
    pub fn resolve_data_dir(&self, workspace_root: &Path) -> Result<PathBuf> {
        match &self.data_dir {
            Some(dir) => Ok(dir.clone()),
            None => crate::sources::find_data(&self.dataset, workspace_root),
        }
    }

    /// Source and target files of split `stem` in `data_dir` (`.gz` preferred).
    pub fn split_files(&self, data_dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        (
            split_file(data_dir, stem, &self.src_lang),
            split_file(data_dir, stem, &self.tgt_lang),
        )
    }
}

impl TranslationDataConfig {
    /// Source and target files of the training pairs: those of `train_dir`
    /// (`train.{lang}`) when it is set, else the `train` split of `data_dir`.
    /// A `train_dir` lacking either file is an error naming the key and path.
    pub fn train_files(&self, data_dir: &Path) -> Result<(PathBuf, PathBuf)> {
        let Some(dir) = &self.train_dir else {
            return Ok(self.split_files(data_dir, &self.train));
        };
        let files = self.split_files(dir, "train");
        for path in [&files.0, &files.1] {
            if !path.is_file() {
                return Err(DataError::Config(format!(
                    "data.train_dir = {:?}: {} not found (the folder must hold train.{} and \
                     train.{}, as written by `emvq distill`)",
                    dir.display().to_string(),
                    path.display(),
                    self.src_lang,
                    self.tgt_lang
                )));
            }
        }
        Ok(files)
    }
}

/// `{dir}/{stem}.{lang}.gz` when it exists, else `{dir}/{stem}.{lang}`.
fn split_file(dir: &Path, stem: &str, lang: &str) -> PathBuf {
    let gz = dir.join(format!("{stem}.{lang}.gz"));
    if gz.exists() {
        gz
    } else {
        dir.join(format!("{stem}.{lang}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Outer {
        data: TranslationDataConfig,
    }

    #[test]
    fn toml_round_trip_and_defaults() {
        let config = TranslationDataConfig {
            data_dir: Some("/data/m30k".into()),
            max_tokens: 2048,
            ..TranslationDataConfig::default()
        };
        let text = toml::to_string(&config).unwrap();
        let back: TranslationDataConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, config);

        let outer: Outer =
            toml::from_str("[data]\nvocab_size = 4000\n[data.filters]\nmax_len = 100\n").unwrap();
        assert_eq!(outer.data.vocab_size, 4000);
        assert_eq!(outer.data.filters.max_len, 100);
        assert!(outer.data.filters.drop_empty);
        assert_eq!(outer.data.max_tokens, 4096);
        assert_eq!(outer.data.tests.len(), 3);
        outer.data.validate().unwrap();
        let batch = outer.data.batch_config(true);
        assert_eq!(
            (batch.max_tokens, batch.seed, batch.shuffle),
            (4096, 1, true)
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = toml::from_str::<TranslationDataConfig>("vocab = 8000\n").unwrap_err();
        assert!(err.to_string().contains("vocab"), "{err}");
        let err =
            toml::from_str::<TranslationDataConfig>("[filters]\nmax_length = 5\n").unwrap_err();
        assert!(err.to_string().contains("max_length"), "{err}");
    }

    #[test]
    fn validation_catches_bad_values() {
        let mut config = TranslationDataConfig::wmt14();
        config.validate().unwrap();
        config.max_tokens = 100;
        assert!(matches!(config.validate(), Err(DataError::Config(_))));
        let mut config = TranslationDataConfig::default();
        config.filters.max_len_ratio = 0.5;
        assert!(config.validate().is_err());
        config.filters.max_len_ratio = f64::NAN;
        assert!(config.validate().is_err());
        let config = TranslationDataConfig {
            vocab_size: 100,
            ..TranslationDataConfig::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn train_dir_replaces_the_training_files_and_names_the_key_when_missing() {
        let data = tempfile::tempdir().unwrap();
        let distilled = tempfile::tempdir().unwrap();
        let mut config = TranslationDataConfig::default();
        let (src, _) = config.train_files(data.path()).unwrap();
        assert_eq!(src, data.path().join("train.en"));

        config.train_dir = Some(distilled.path().to_path_buf());
        std::fs::write(distilled.path().join("train.en"), b"a\n").unwrap();
        let err = config.train_files(data.path()).unwrap_err().to_string();
        assert!(
            err.contains("data.train_dir") && err.contains("train.de"),
            "{err}"
        );
        std::fs::write(distilled.path().join("train.de"), b"b\n").unwrap();
        let (src, tgt) = config.train_files(data.path()).unwrap();
        assert_eq!(
            (src, tgt),
            (
                distilled.path().join("train.en"),
                distilled.path().join("train.de")
            )
        );

        // Absent from TOML unless set; parsed when given.
        let text = toml::to_string(&TranslationDataConfig::default()).unwrap();
        assert!(!text.contains("train_dir"), "{text}");
        let outer: Outer = toml::from_str("[data]\ntrain_dir = \"runs/distill/x\"\n").unwrap();
        assert_eq!(outer.data.train_dir, Some(PathBuf::from("runs/distill/x")));
    }

    #[test]
    fn split_files_prefer_gzip() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("train.en.gz"), b"").unwrap();
        let config = TranslationDataConfig::default();
        let (src, tgt) = config.split_files(dir.path(), "train");
        assert_eq!(src, dir.path().join("train.en.gz"));
        assert_eq!(tgt, dir.path().join("train.de"));
    }
}
