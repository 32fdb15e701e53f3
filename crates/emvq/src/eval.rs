//! `emvq eval --run DIR --split test_2016_flickr [--beam 4] [--rescore S]`:
//! translates a split of the run's data set with a trained model and scores
//! it with the project's sacreBLEU-equal scorer (BLEU 13a cased and chrF2,
//! with their signatures); measures batch-1 latency (milliseconds per
//! sentence, mean and median, over the split's sentences); prints it all and
//! stores it in the run's `results.json` (written atomically).
//!
//! - A teacher run: beam and greedy decoding, both timed; stored under the
//!   split's name, the translations in `translations/<split>.beam<k>.txt`.
//! - A NAT run (latent or plain, see [`crate::nat_run`]): one-pass decoding,
//!   stored under the split's name, translations in
//!   `translations/<split>.nat.txt`; with `--rescore S` every sentence is
//!   translated alone, `S` candidates scored by the run's teacher, the best
//!   kept (for the plain NAT: noisy parallel decoding over the `S` best
//!   lengths), stored under `<split>.rescore<S>`; with `--oracle-latents`
//!   (a diagnostic) every reference is decoded from its own latents, stored
//!   under `<split>.oracle_latents`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use clap::Args;
use emvq_bleu::{Bleu, BleuConfig, Chrf, ChrfConfig, StatsMetric};
use emvq_data::{
    prepare::encode_corpus, read_parallel, EncodedCorpus, SubwordTokenizer, TranslationDataConfig,
};
use emvq_latent::Score;
use emvq_tensor::{fsutil::write_atomic, DeviceSpec};
use emvq_transformer::Seq2Seq;
use serde::Serialize;

use crate::nat_run::{load_nat_run, load_teacher_run, run_kind, LoadedNatRun, RunKind};
use crate::teacher::{load_teacher, LoadedTeacher};
use crate::translate::translate_ids;

/// The results file of a run.
pub const RESULTS_FILE: &str = "results.json";

/// `emvq eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A teacher or NAT run directory (runs/teacher/<name>, runs/nat/<name>).
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
    /// NAT runs: translate each sentence with `S` candidates (sampled
    /// latents, or the plain NAT's `S` best lengths) rescored by the run's
    /// teacher.
    #[arg(long)]
    pub rescore: Option<usize>,
    /// NAT runs: how the teacher ranks the `--rescore` candidates
    /// (`log_prob` | `per_token`; default: the run's `[decode] rescore_score`).
    #[arg(long, value_parser = parse_score)]
    pub rescore_score: Option<Score>,
    /// NAT runs: softmax temperature of the sampled latents (`--rescore`).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// NAT runs: the teacher that rescores (default: the run's `teacher`).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Latent NAT runs, a diagnostic: decode every reference from its own
    /// latents (the compressor and bottleneck applied to the reference)
    /// instead of the predicted ones: the BLEU a perfect latent predictor
    /// would give. Stored under `<split>.oracle_latents`.
    #[arg(long, conflicts_with = "rescore")]
    pub oracle_latents: bool,
    /// NAT runs: collapse neighbouring repeated tokens of each output, `true`
    /// or `false` (default: the run's `[decode] collapse_repeats`; the
    /// oracle-latent diagnostic decodes raw).
    #[arg(long, conflicts_with = "oracle_latents")]
    pub collapse_repeats: Option<bool>,
    /// Latent NAT runs: decoder passes after the first (iterative
    /// refinement; default: the run's `[decode] refine_steps`).
    #[arg(long, conflicts_with = "oracle_latents")]
    pub refine_steps: Option<usize>,
    /// Latent NAT runs: project onto the vocabulary in bfloat16, `true` or
    /// `false` (default: the run's `[decode] bf16_output`). Stored under
    /// `<split>[…].bf16`.
    #[arg(long, conflicts_with = "oracle_latents")]
    pub bf16_output: Option<bool>,
    #[arg(long)]
    pub device: Option<DeviceSpec>,
}

fn parse_score(text: &str) -> std::result::Result<Score, String> {
    match text {
        "log_prob" => Ok(Score::LogProb),
        "per_token" => Ok(Score::PerToken),
        other => Err(format!("unknown score {other:?} (log_prob, per_token)")),
    }
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
    pub fn from_ms(mut ms: Vec<f64>) -> Self {
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

pub fn bleu_of(hyps: &[String], refs: &[String]) -> Result<Scored> {
    let metric = Bleu::new(BleuConfig::default(), &[refs.to_vec()])?;
    let score = metric.corpus_score(hyps)?;
    let signature = StatsMetric::signature(&metric);
    Ok(Scored {
        score: score.score,
        line: score.format(2, &signature),
        signature: signature.to_string(),
    })
}

pub fn chrf_of(hyps: &[String], refs: &[String]) -> Result<Scored> {
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

/// Runs `emvq eval` on a teacher or NAT run.
pub fn run(args: &EvalArgs) -> Result<()> {
    match run_kind(&args.run)? {
        RunKind::Teacher => {
            ensure!(
                args.rescore.is_none()
                    && args.teacher.is_none()
                    && !args.oracle_latents
                    && args.collapse_repeats.is_none()
                    && args.refine_steps.is_none()
                    && args.bf16_output.is_none(),
                "--rescore, --teacher, --oracle-latents, --collapse-repeats, --refine-steps and \
                 --bf16-output apply to NAT runs"
            );
            run_teacher(args).map(|_| ())
        }
        RunKind::LatentNat | RunKind::PlainNat => run_nat(args).map(|_| ()),
    }
}

/// Stores `value` under `key` in the run's `results.json`; returns its path.
fn store_result(run: &Path, key: &str, value: serde_json::Value) -> Result<PathBuf> {
    let path = run.join(RESULTS_FILE);
    let mut all: BTreeMap<String, serde_json::Value> = if path.is_file() {
        serde_json::from_str(&std::fs::read_to_string(&path)?)
            .with_context(|| format!("{} is not a JSON object", path.display()))?
    } else {
        BTreeMap::new()
    };
    all.insert(key.to_string(), value);
    write_atomic(&path, serde_json::to_string_pretty(&all)?.as_bytes())?;
    Ok(path)
}

/// The source and reference sentences of a split of a run's data set,
/// the sources encoded (ending in EOS).
pub fn read_split(
    data: &TranslationDataConfig,
    tokenizer: &SubwordTokenizer,
    split: &str,
) -> Result<(Vec<Vec<u32>>, Vec<String>)> {
    let (encoded, refs) = read_split_encoded(data, tokenizer, split)?;
    Ok((encoded.source, refs))
}

/// Both sides of a split encoded (each ending in EOS), with the raw
/// reference sentences.
fn read_split_encoded(
    data: &TranslationDataConfig,
    tokenizer: &SubwordTokenizer,
    split: &str,
) -> Result<(EncodedCorpus, Vec<String>)> {
    let data_dir = data.resolve_data_dir(&std::env::current_dir()?)?;
    let (src_path, tgt_path) = data.split_files(&data_dir, split);
    let raw = read_parallel(&src_path, &tgt_path)
        .with_context(|| format!("split {split:?} of {}", data_dir.display()))?;
    let all: Vec<usize> = (0..raw.len()).collect();
    let encoded = encode_corpus(tokenizer, &raw, &all)?;
    Ok((encoded, raw.target))
}

/// Writes one line per hypothesis to `<run>/translations/<stem>.txt`
/// (atomically); returns the path.
fn write_translations(run: &Path, stem: &str, hyps: &[String]) -> Result<PathBuf> {
    let path = run.join("translations").join(format!("{stem}.txt"));
    std::fs::create_dir_all(path.parent().expect("has a parent"))?;
    let mut text = hyps.join("\n");
    text.push('\n');
    write_atomic(&path, text.as_bytes())?;
    Ok(path)
}

/// What `emvq eval` stores for one split of a NAT run (and one `--rescore`).
#[derive(Debug, Clone, Serialize)]
pub struct NatSplitResult {
    pub split: String,
    pub kind: RunKind,
    pub sentences: usize,
    /// Candidates rescored by the teacher per sentence (none: one pass).
    pub rescore: Option<usize>,
    /// How the teacher ranked the candidates (with `rescore`).
    pub rescore_score: Option<Score>,
    pub latent_beam: usize,
    /// Neighbouring repeated tokens collapsed (`[decode] collapse_repeats`).
    #[serde(default)]
    pub collapse_repeats: bool,
    /// Decoder passes after the first (`[decode] refine_steps`).
    #[serde(default)]
    pub refine_steps: usize,
    /// Output projection in bfloat16 (`[decode] bf16_output`).
    #[serde(default)]
    pub bf16_output: bool,
    pub bleu: Scored,
    pub chrf: Scored,
    /// Decoding of the whole split (batched one pass, or sentence by
    /// sentence with rescoring), sentences per second.
    pub sentences_per_s: f64,
    pub latency: Option<Latency>,
    pub teacher: Option<PathBuf>,
    pub weights: PathBuf,
    pub device: String,
    pub threads: i32,
    pub translations: PathBuf,
}

/// Batch-1 translation of every source; returns the outputs and the
/// milliseconds each took.
pub fn nat_batch1(
    nat: &LoadedNatRun,
    sources: &[Vec<u32>],
    rescorer: Option<(&Seq2Seq, usize)>,
) -> Result<(Vec<Vec<u32>>, Vec<f64>)> {
    let mut out = Vec::with_capacity(sources.len());
    let mut ms = Vec::with_capacity(sources.len());
    for s in sources {
        let start = Instant::now();
        out.push(nat.translate_one(s, rescorer)?);
        ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok((out, ms))
}

/// `emvq eval` on a NAT run; returns the stored result.
pub fn run_nat(args: &EvalArgs) -> Result<NatSplitResult> {
    ensure!(
        args.beam.is_none() && args.alpha.is_none(),
        "--beam and --alpha apply to teacher runs"
    );
    let mut nat = load_nat_run(&args.run, args.device)?;
    if args.oracle_latents {
        return run_oracle_latents(args, &nat);
    }
    nat.decode.temperature = args.temperature;
    if let Some(collapse) = args.collapse_repeats {
        nat.decode.collapse_repeats = collapse;
    }
    if let Some(steps) = args.refine_steps {
        nat.decode.refine_steps = steps;
    }
    if let Some(on) = args.bf16_output {
        nat.set_bf16_output(on)?;
    }
    ensure!(
        nat.kind == RunKind::LatentNat || nat.decode.refine_steps == 0,
        "--refine-steps / [decode] refine_steps apply to latent NAT runs; {} is a plain NAT",
        args.run.display()
    );
    if let Some(score) = args.rescore_score {
        nat.rescore_score = score;
    }
    let (sources, refs) = read_split(&nat.data, &nat.tokenizer, &args.split)?;
    let n_latency = args
        .latency_sentences
        .unwrap_or(sources.len())
        .min(sources.len());
    let teacher_dir = args.teacher.clone().unwrap_or_else(|| nat.teacher.clone());
    let (out, seconds, latency, teacher) = match args.rescore {
        None => {
            let batch = args.batch.unwrap_or(nat.batch_sentences);
            let start = Instant::now();
            let out = nat.translate_ids(&sources, batch)?;
            let seconds = start.elapsed().as_secs_f64();
            let latency = (n_latency > 0)
                .then(|| nat_batch1(&nat, &sources[..n_latency], None))
                .transpose()?
                .map(|(_, ms)| Latency::from_ms(ms));
            (out, seconds, latency, None)
        }
        Some(s) => {
            ensure!(s >= 1, "--rescore must be at least 1");
            let teacher = load_teacher_run(&teacher_dir, args.device)?;
            ensure!(
                teacher.tokenizer.vocab_size() == nat.tokenizer.vocab_size(),
                "teacher {} and NAT {} have different vocabularies",
                teacher_dir.display(),
                args.run.display()
            );
            let start = Instant::now();
            let (out, ms) = nat_batch1(&nat, &sources, Some((&teacher.model, s)))?;
            let seconds = start.elapsed().as_secs_f64();
            let latency = (n_latency > 0).then(|| Latency::from_ms(ms[..n_latency].to_vec()));
            (out, seconds, latency, Some(teacher_dir.clone()))
        }
    };
    let hyps = nat.tokenizer.decode_batch(&out)?;
    // Per-token rescoring is stored beside the paper's log-probability.
    let (score_suffix, score_words) = match nat.rescore_score {
        Score::LogProb => ("", ""),
        Score::PerToken => (".per_token", ", per token"),
    };
    // Refined and bf16-output decodes are stored beside the paper's single
    // float32 pass.
    let variant_suffix = match nat.decode.refine_steps {
        0 => String::new(),
        n => format!(".refine{n}"),
    } + if nat.bf16_output { ".bf16" } else { "" };
    let suffix = args
        .rescore
        .map_or("nat".to_string(), |s| format!("rescore{s}{score_suffix}"))
        + &variant_suffix;
    let translations = write_translations(&args.run, &format!("{}.{suffix}", args.split), &hyps)?;
    let result = NatSplitResult {
        split: args.split.clone(),
        kind: nat.kind,
        sentences: sources.len(),
        rescore: args.rescore,
        rescore_score: args.rescore.map(|_| nat.rescore_score),
        latent_beam: nat.decode.latent_beam,
        collapse_repeats: nat.decode.collapse_repeats,
        refine_steps: nat.decode.refine_steps,
        bf16_output: nat.bf16_output,
        bleu: bleu_of(&hyps, &refs)?,
        chrf: chrf_of(&hyps, &refs)?,
        sentences_per_s: sources.len() as f64 / seconds.max(1e-9),
        latency,
        teacher,
        weights: nat.weights.clone(),
        device: format!("{:?}", nat.device),
        threads: tch::get_num_threads(),
        translations,
    };
    let key = match args.rescore {
        None => args.split.clone(),
        Some(s) => format!("{}.rescore{s}{score_suffix}", args.split),
    } + &variant_suffix;
    let path = store_result(&args.run, &key, serde_json::to_value(&result)?)?;
    let passes = match result.refine_steps {
        0 => "one pass".to_string(),
        n => format!("{} passes", n + 1),
    };
    let mut how = args.rescore.map_or(passes.clone(), |s| {
        format!("best of {s} rescored by the teacher{score_words}")
    });
    if args.rescore.is_some() && result.refine_steps > 0 {
        how.push_str(&format!(", {passes} each"));
    }
    if result.collapse_repeats {
        how.push_str(", repeats collapsed");
    }
    if result.bf16_output {
        how.push_str(", bf16 output");
    }
    println!("{} ({how})", result.bleu.line);
    println!("{}", result.chrf.line);
    if let Some(l) = &result.latency {
        println!(
            "latency ({how}), batch 1: {:.2} ms mean, {:.2} ms median per sentence over {} sentences",
            l.mean_ms, l.median_ms, l.sentences
        );
    }
    println!("results → {} [{key}]", path.display());
    Ok(result)
}

/// `emvq eval --oracle-latents`: every reference decoded from its own
/// latents, sentence by sentence; stored without latency.
fn run_oracle_latents(args: &EvalArgs, nat: &LoadedNatRun) -> Result<NatSplitResult> {
    let (encoded, refs) = read_split_encoded(&nat.data, &nat.tokenizer, &args.split)?;
    let start = Instant::now();
    let out = (encoded.source.iter().zip(&encoded.target))
        .map(|(src, tgt)| nat.reconstruct_one(src, tgt))
        .collect::<Result<Vec<_>>>()?;
    let seconds = start.elapsed().as_secs_f64();
    let hyps = nat.tokenizer.decode_batch(&out)?;
    let key = format!("{}.oracle_latents", args.split);
    let translations = write_translations(&args.run, &key, &hyps)?;
    let result = NatSplitResult {
        split: args.split.clone(),
        kind: nat.kind,
        sentences: out.len(),
        rescore: None,
        rescore_score: None,
        latent_beam: nat.decode.latent_beam,
        collapse_repeats: false,
        refine_steps: 0,
        bf16_output: nat.bf16_output,
        bleu: bleu_of(&hyps, &refs)?,
        chrf: chrf_of(&hyps, &refs)?,
        sentences_per_s: out.len() as f64 / seconds.max(1e-9),
        latency: None,
        teacher: None,
        weights: nat.weights.clone(),
        device: format!("{:?}", nat.device),
        threads: tch::get_num_threads(),
        translations,
    };
    let path = store_result(&args.run, &key, serde_json::to_value(&result)?)?;
    println!("{} (the references' own latents)", result.bleu.line);
    println!("{}", result.chrf.line);
    println!("results → {} [{key}]", path.display());
    Ok(result)
}

/// `emvq eval` on a teacher run; returns the stored result.
pub fn run_teacher(args: &EvalArgs) -> Result<SplitResult> {
    let mut teacher = load_teacher(&args.run, args.device)?;
    if let Some(alpha) = args.alpha {
        teacher.config.decode.length_penalty = alpha;
    }
    let config = &teacher.config;
    let (sources, refs) = read_split(&config.data, &teacher.tokenizer, &args.split)?;
    let beam = args.beam.unwrap_or(config.decode.beam_size);
    ensure!(beam >= 1, "--beam must be at least 1");
    let batch = args.batch.unwrap_or(config.decode.batch_sentences);

    let start = Instant::now();
    let out = translate_ids(
        &teacher.model,
        &sources,
        &config.decode.search(beam),
        batch,
        teacher.device,
    )?;
    let beam_seconds = start.elapsed().as_secs_f64();
    let hyps = teacher.tokenizer.decode_batch(&out)?;
    let greedy_out = translate_ids(
        &teacher.model,
        &sources,
        &config.decode.search(1),
        batch,
        teacher.device,
    )?;
    let greedy_hyps = teacher.tokenizer.decode_batch(&greedy_out)?;

    let translations = write_translations(&args.run, &format!("{}.beam{beam}", args.split), &hyps)?;

    let n_latency = args
        .latency_sentences
        .unwrap_or(sources.len())
        .min(sources.len());
    let (latency_greedy, latency_beam) = if n_latency > 0 {
        (
            Some(latency(&teacher, &sources, 1, n_latency)?),
            Some(latency(&teacher, &sources, beam, n_latency)?),
        )
    } else {
        (None, None)
    };
    let result = SplitResult {
        split: args.split.clone(),
        sentences: sources.len(),
        beam,
        length_penalty: config.decode.length_penalty,
        bleu: bleu_of(&hyps, &refs)?,
        chrf: chrf_of(&hyps, &refs)?,
        bleu_greedy: bleu_of(&greedy_hyps, &refs)?,
        beam_sentences_per_s: sources.len() as f64 / beam_seconds.max(1e-9),
        latency_greedy,
        latency_beam,
        weights: teacher.weights.clone(),
        device: format!("{:?}", teacher.device),
        threads: tch::get_num_threads(),
        translations,
    };

    let path = store_result(&args.run, &args.split, serde_json::to_value(&result)?)?;

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
