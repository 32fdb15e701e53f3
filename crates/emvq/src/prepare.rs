//! `emvq prepare-data --config FILE`: the pipeline's first stage. Reads the
//! parallel corpus, trains the joint BPE vocabulary and encodes every split,
//! in the run directory `runs/data/<name>/`: the resolved config,
//! `tokenizer.json` (reused by every later stage), `stats.json` and the log.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use emvq_data::{prepare_translation, TranslationDataConfig};
use emvq_tensor::{fsutil::write_atomic, load_toml, RunDir};
use serde::{Deserialize, Serialize};

/// `configs/<dataset>/data.toml`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareConfig {
    /// Run name: the run directory is `runs/data/<name>/`.
    pub name: String,
    pub data: TranslationDataConfig,
}

#[derive(Debug, Serialize)]
struct SplitStats {
    name: String,
    pairs: usize,
    source_tokens: usize,
    target_tokens: usize,
}

pub fn run(config_path: &Path, runs_root: &Path) -> Result<PathBuf> {
    let config: PrepareConfig = load_toml(config_path)?;
    config
        .data
        .validate()
        .with_context(|| format!("config {}", config_path.display()))?;
    let run = RunDir::create(runs_root, "data", &config.name)?;
    emvq_tensor::logging::init_logging(Some(&run.log_path()))?;
    run.save_config(&config)?;

    let cwd = std::env::current_dir()?;
    let data_dir = config.data.resolve_data_dir(&cwd)?;
    tracing::info!("preparing {} from {}", config.name, data_dir.display());
    let prepared = prepare_translation(&config.data, &data_dir, Some(run.path()))?;

    let splits: Vec<SplitStats> = std::iter::once(&prepared.train)
        .chain(std::iter::once(&prepared.valid))
        .chain(&prepared.tests)
        .map(|split| SplitStats {
            name: split.name.clone(),
            pairs: split.encoded.source.len(),
            source_tokens: split.encoded.source.iter().map(Vec::len).sum(),
            target_tokens: split.encoded.target.iter().map(Vec::len).sum(),
        })
        .collect();
    for s in &splits {
        tracing::info!(
            "{:<18} {:>6} pairs, {:>7} source and {:>7} target tokens (EOS included)",
            s.name,
            s.pairs,
            s.source_tokens,
            s.target_tokens
        );
    }
    let t = &prepared.timings;
    let stats = serde_json::json!({
        "data_dir": data_dir,
        "vocab_size": prepared.tokenizer.vocab_size(),
        "trained_tokenizer": prepared.trained_tokenizer,
        "filter": {
            "kept": prepared.filter_stats.kept,
            "empty": prepared.filter_stats.empty,
            "too_long": prepared.filter_stats.too_long,
            "bad_ratio": prepared.filter_stats.bad_ratio,
        },
        "splits": splits,
        "seconds": { "read": t.read.as_secs_f64(), "bpe": t.bpe.as_secs_f64(), "encode": t.encode.as_secs_f64() },
    });
    write_atomic(
        &run.path().join("stats.json"),
        serde_json::to_string_pretty(&stats)?.as_bytes(),
    )?;
    tracing::info!(
        "vocabulary of {} in {}; prepared in {:.1} s",
        prepared.tokenizer.vocab_size(),
        run.path()
            .join(emvq_data::tokenizer::TOKENIZER_FILE)
            .display(),
        t.read.as_secs_f64() + t.bpe.as_secs_f64() + t.encode.as_secs_f64()
    );
    Ok(run.path().to_path_buf())
}
