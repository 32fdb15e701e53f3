//! `emvq eval --run DIR --split test_2016_flickr [--beam 4]`: translates a
//! split of the run's data set with a trained teacher and scores it with the
//! project's sacreBLEU-equal scorer (BLEU 13a cased and chrF2, with their
//! signatures), beam and greedy; measures batch-1 latency (greedy and beam,
//! milliseconds per sentence, mean and median, over the split's sentences);
//! prints it all and stores it under the split's name in the run's
//! `results.json` (written atomically), the translations in
//! `translations/<split>.beam<k>.txt`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use clap::Args;
use emvq_bleu::{Bleu, BleuConfig, Chrf, ChrfConfig, StatsMetric};
use emvq_data::{prepare::encode_corpus, read_parallel};
use emvq_tensor::{fsutil::write_atomic, DeviceSpec};
use serde::Serialize;

use crate::teacher::{load_teacher, LoadedTeacher};
use crate::translate::translate_ids;

/// The results file of a run.
pub const RESULTS_FILE: &str = "results.json";

/// `emvq eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A teacher run directory (runs/teacher/<name>).
    #[arg(long)]
    pub run: PathBuf,
    /// File stem of the split in the run's data folder.
    #[arg(long, default_value = "test_2016_flickr")]
    pub split: String,
    /// Beam size (default: the run's `decode.beam_size`).
    #[arg(long)]
    pub beam: Option<i64>,
    /// GNMT length-penalty α (default: the run's `decode.length_penalty`).
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Sentences per batch for the scored translations.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Sentences timed one at a time for latency (default: all; 0: skip).
    #[arg(long)]
    pub latency_sentences: Option<usize>,
    #[arg(long)]
    pub device: Option<DeviceSpec>,
}

/// A score with its sacreBLEU-style signature and text line.
#[derive(Debug, Clone, Serialize)]
pub struct Scored {
    pub score: f64,
    pub signature: String,
    pub line: String,
}

/// Batch-1 decoding time per sentence.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub sentences: usize,
    pub mean_ms: f64,
    pub median_ms: f64,
}

impl Latency {
    fn from_ms(mut ms: Vec<f64>) -> Self {
        ms.sort_by(f64::total_cmp);
        let n = ms.len();
        let median = if n == 0 {
            0.0
        } else if n % 2 == 1 {
            ms[n / 2]
        } else {
            (ms[n / 2 - 1] + ms[n / 2]) / 2.0
        };
        Latency {
            sentences: n,
            mean_ms: ms.iter().sum::<f64>() / n.max(1) as f64,
            median_ms: median,
        }
    }
}

/// What `emvq eval` stores for one split.
#[derive(Debug, Clone, Serialize)]
pub struct SplitResult {
    pub split: String,
    pub sentences: usize,
    pub beam: i64,
    pub length_penalty: f64,
    pub bleu: Scored,
    pub chrf: Scored,
    pub bleu_greedy: Scored,
    /// Batched decoding of the whole split (beam), sentences per second.
    pub beam_sentences_per_s: f64,
    pub latency_greedy: Option<Latency>,
    /// Batch-1 latency with the same beam size as the scored translations.
    pub latency_beam: Option<Latency>,
    pub weights: PathBuf,
    pub device: String,
    pub threads: i32,
    pub translations: PathBuf,
}

fn bleu_of(hyps: &[String], refs: &[String]) -> Result<Scored> {
    let metric = Bleu::new(BleuConfig::default(), &[refs.to_vec()])?;
    let score = metric.corpus_score(hyps)?;
    let signature = StatsMetric::signature(&metric);
    Ok(Scored {
        score: score.score,
        line: score.format(2, &signature),
        signature: signature.to_string(),
    })
}

fn chrf_of(hyps: &[String], refs: &[String]) -> Result<Scored> {
    let metric = Chrf::new(ChrfConfig::default(), &[refs.to_vec()])?;
    let score = metric.corpus_score(hyps)?;
    let signature = StatsMetric::signature(&metric);
    Ok(Scored {
        score: score.score,
        line: score.format(2, &signature),
        signature: signature.to_string(),
    })
}

/// Batch-1 decoding time of each of the first `n` sentences.
fn latency(teacher: &LoadedTeacher, sources: &[Vec<u32>], beam: i64, n: usize) -> Result<Latency> {
    let search = teacher.config.decode.search(beam);
    let mut ms = Vec::with_capacity(n);
    for s in sources.iter().take(n) {
        let start = Instant::now();
        translate_ids(
            &teacher.model,
            std::slice::from_ref(s),
            &search,
            1,
            teacher.device,
        )?;
        ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Latency::from_ms(ms))
}

/// Runs `emvq eval`; returns the stored result.
pub fn run(args: &EvalArgs) -> Result<SplitResult> {
    let mut teacher = load_teacher(&args.run, args.device)?;
    if let Some(alpha) = args.alpha {
        teacher.config.decode.length_penalty = alpha;
    }
    let config = &teacher.config;
    let data_dir = config.data.resolve_data_dir(&std::env::current_dir()?)?;
    let (src_path, tgt_path) = config.data.split_files(&data_dir, &args.split);
    let raw = read_parallel(&src_path, &tgt_path)
        .with_context(|| format!("split {:?} of {}", args.split, data_dir.display()))?;
    let all: Vec<usize> = (0..raw.len()).collect();
    let encoded = encode_corpus(&teacher.tokenizer, &raw, &all)?;
    let beam = args.beam.unwrap_or(config.decode.beam_size);
    ensure!(beam >= 1, "--beam must be at least 1");
    let batch = args.batch.unwrap_or(config.decode.batch_sentences);

    let start = Instant::now();
    let out = translate_ids(
        &teacher.model,
        &encoded.source,
        &config.decode.search(beam),
        batch,
        teacher.device,
    )?;
    let beam_seconds = start.elapsed().as_secs_f64();
    let hyps = teacher.tokenizer.decode_batch(&out)?;
    let greedy_out = translate_ids(
        &teacher.model,
        &encoded.source,
        &config.decode.search(1),
        batch,
        teacher.device,
    )?;
    let greedy_hyps = teacher.tokenizer.decode_batch(&greedy_out)?;

    let translations = args
        .run
        .join("translations")
        .join(format!("{}.beam{beam}.txt", args.split));
    std::fs::create_dir_all(translations.parent().expect("has a parent"))?;
    let mut text = hyps.join("\n");
    text.push('\n');
    write_atomic(&translations, text.as_bytes())?;

    let n_latency = args.latency_sentences.unwrap_or(raw.len()).min(raw.len());
    let (latency_greedy, latency_beam) = if n_latency > 0 {
        (
            Some(latency(&teacher, &encoded.source, 1, n_latency)?),
            Some(latency(&teacher, &encoded.source, beam, n_latency)?),
        )
    } else {
        (None, None)
    };
    let result = SplitResult {
        split: args.split.clone(),
        sentences: raw.len(),
        beam,
        length_penalty: config.decode.length_penalty,
        bleu: bleu_of(&hyps, &raw.target)?,
        chrf: chrf_of(&hyps, &raw.target)?,
        bleu_greedy: bleu_of(&greedy_hyps, &raw.target)?,
        beam_sentences_per_s: raw.len() as f64 / beam_seconds.max(1e-9),
        latency_greedy,
        latency_beam,
        weights: teacher.weights.clone(),
        device: format!("{:?}", teacher.device),
        threads: tch::get_num_threads(),
        translations,
    };

    let path = args.run.join(RESULTS_FILE);
    let mut all: BTreeMap<String, serde_json::Value> = if path.is_file() {
        serde_json::from_str(&std::fs::read_to_string(&path)?)
            .with_context(|| format!("{} is not a JSON object", path.display()))?
    } else {
        BTreeMap::new()
    };
    all.insert(args.split.clone(), serde_json::to_value(&result)?);
    write_atomic(&path, serde_json::to_string_pretty(&all)?.as_bytes())?;

    println!(
        "{} (beam {beam}, α {})",
        result.bleu.line, result.length_penalty
    );
    println!("{}", result.chrf.line);
    println!("{} (greedy)", result.bleu_greedy.line);
    for (name, lat) in [
        ("greedy", &result.latency_greedy),
        (&format!("beam {beam}")[..], &result.latency_beam),
    ] {
        if let Some(l) = lat {
            println!(
                "latency {name}, batch 1: {:.2} ms mean, {:.2} ms median per sentence over {} sentences",
                l.mean_ms, l.median_ms, l.sentences
            );
        }
    }
    println!("results → {}", path.display());
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_mean_and_median() {
        let l = Latency::from_ms(vec![4.0, 1.0, 3.0, 2.0]);
        assert_eq!((l.sentences, l.mean_ms, l.median_ms), (4, 2.5, 2.5));
        let l = Latency::from_ms(vec![9.0, 1.0, 2.0]);
        assert_eq!((l.mean_ms, l.median_ms), (4.0, 2.0));
    }
}
