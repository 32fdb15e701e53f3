//! `emvq distill --teacher runs/teacher/NAME [--out DIR]`: sequence-level
//! distillation (Kim and Rush 2016), as used for the non-autoregressive
//! models of Roy et al. 2018 (arXiv 1805.11063): the teacher's beam search
//! rewrites every target of the training split its config names; the sources
//! stay as they are.
//!
//! The corpus is decoded in chunks of `--chunk-sentences` consecutive lines
//! (`OUT/chunks/chunk-NNNNN.json`, each written atomically); within a chunk
//! sentences are sorted by length into batches of `--batch-sentences`. An
//! interrupted run resumes where it stopped: finished chunks are read back,
//! not decoded again, so the result equals an uninterrupted run's. The
//! settings that decide the output (teacher, weights, corpus, search, batch
//! and chunk sizes, device, limit) are written to `OUT/settings.json` at the
//! start; resuming with other settings is an error naming what differs
//! (`--restart` discards the finished chunks).
//!
//! At the end `OUT/train.<src_lang>` (the original sources) and
//! `OUT/train.<tgt_lang>` (the teacher's detokenised translations), one
//! sentence a line in corpus order, are written atomically, with
//! `OUT/record.json`: the teacher, weights, settings, time, sentences/s and
//! the BLEU of the distilled targets against the original ones. A training
//! config reads the corpus with `[data] train_dir = "OUT"`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use emvq_bleu::{Bleu, BleuConfig, StatsMetric};
use emvq_data::{corpus::normalize_whitespace, read_parallel, EOS_ID};
use emvq_tensor::{fsutil::write_atomic, DeviceSpec};
use serde::{Deserialize, Serialize};

use crate::teacher::{load_teacher, LoadedTeacher};
use crate::translate::translate_ids;

/// The settings file of a distillation folder.
pub const SETTINGS_FILE: &str = "settings.json";
/// The record written when the corpus is complete.
pub const RECORD_FILE: &str = "record.json";
/// The folder of finished chunks.
pub const CHUNK_DIR: &str = "chunks";

/// `emvq distill`.
#[derive(Debug, Args)]
pub struct DistillArgs {
    /// A teacher run directory (runs/teacher/<name>).
    #[arg(long)]
    pub teacher: PathBuf,
    /// Output folder (default: runs/distill/<teacher run name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Beam size (default: the run's `decode.beam_size`); 1 is greedy.
    #[arg(long)]
    pub beam: Option<i64>,
    /// GNMT length-penalty α (default: the run's `decode.length_penalty`).
    #[arg(long)]
    pub length_penalty: Option<f64>,
    /// Sentences per decoding batch (default: the run's `decode.batch_sentences`).
    #[arg(long)]
    pub batch_sentences: Option<usize>,
    /// Consecutive corpus lines per chunk file (the unit of resumption).
    #[arg(long, default_value_t = 2048)]
    pub chunk_sentences: usize,
    /// LibTorch intra-op threads (default: the run's `threads`).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Device (default: the run's `device`).
    #[arg(long)]
    pub device: Option<DeviceSpec>,
    /// Distil only the first N lines of the training split.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Discard the finished chunks of an earlier run with other settings.
    #[arg(long)]
    pub restart: bool,
    /// Stop after writing K new chunks (to test resumption).
    #[arg(long, hide = true)]
    pub stop_after_chunks: Option<usize>,
}

/// The weights file a corpus was decoded with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightsId {
    pub path: PathBuf,
    pub bytes: u64,
    /// FNV-1a 64 of the file's bytes, hex.
    pub fnv1a64: String,
}

/// Everything that decides the distilled corpus; a resumed run must match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub teacher: PathBuf,
    pub weights: WeightsId,
    pub source_file: PathBuf,
    pub target_file: PathBuf,
    /// FNV-1a 64 of the distilled source lines (each followed by `\n`), hex.
    pub source_fnv1a64: String,
    pub sentences: usize,
    pub limit: Option<usize>,
    pub beam: i64,
    pub length_penalty: f64,
    pub max_len_a: f64,
    pub max_len_b: i64,
    pub max_positions: i64,
    pub batch_sentences: usize,
    pub chunk_sentences: usize,
    pub device: String,
}

/// One finished chunk: the distilled targets of lines `first_line..`.
#[derive(Debug, Serialize, Deserialize)]
struct Chunk {
    first_line: usize,
    lines: Vec<String>,
    /// Wall-clock seconds its decoding took.
    #[serde(default)]
    seconds: f64,
}

/// `OUT/record.json`.
#[derive(Debug, Serialize)]
pub struct Record {
    pub settings: Settings,
    /// How the longest output is bounded.
    pub max_len_rule: String,
    pub threads: i32,
    pub source_out: PathBuf,
    pub target_out: PathBuf,
    pub sentences: usize,
    pub chunks: usize,
    /// Chunks read back from an earlier, interrupted run.
    pub chunks_reused: usize,
    /// Sentences decoded by this invocation (the others were reused).
    pub sentences_decoded: usize,
    /// Wall-clock seconds spent decoding the whole corpus, summed over its
    /// chunks (whichever invocation decoded them).
    pub decode_seconds: f64,
    /// `sentences / decode_seconds`.
    pub sentences_per_s: f64,
    /// Wall-clock seconds of this invocation (loading and writing included).
    pub seconds: f64,
    /// BLEU (13a, cased) of the distilled targets against the original targets.
    pub bleu: f64,
    pub bleu_line: String,
}

/// FNV-1a, 64 bits: a cheap fingerprint of files and corpora.
fn fnv1a64(bytes: impl IntoIterator<Item = u8>, mut hash: u64) -> u64 {
    for b in bytes {
        hash ^= b as u64;
        hash = hash.wrapping_mul(0x100_0000_01b3);
    }
    hash
}
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn weights_id(path: &Path) -> Result<WeightsId> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(WeightsId {
        path: path.to_path_buf(),
        bytes: bytes.len() as u64,
        fnv1a64: format!("{:016x}", fnv1a64(bytes.iter().copied(), FNV_OFFSET)),
    })
}

/// The fields of two settings that differ, as `key: old → new`.
fn differences(old: &Settings, new: &Settings) -> Result<Vec<String>> {
    let (old, new) = (serde_json::to_value(old)?, serde_json::to_value(new)?);
    let (old, new) = (
        old.as_object().expect("struct"),
        new.as_object().expect("struct"),
    );
    Ok(new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, v)| {
            format!(
                "{k}: {} → {v}",
                old.get(k).unwrap_or(&serde_json::Value::Null)
            )
        })
        .collect())
}

fn chunk_path(out: &Path, index: usize) -> PathBuf {
    out.join(CHUNK_DIR).join(format!("chunk-{index:05}.json"))
}

/// Reads back finished chunk `index`, which must hold lines `first..first + len`.
fn read_chunk(path: &Path, first: usize, len: usize) -> Result<Chunk> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let chunk: Chunk = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a chunk file; delete it to decode it again",
            path.display()
        )
    })?;
    ensure!(
        chunk.first_line == first && chunk.lines.len() == len,
        "{} holds lines {}..{}, expected {first}..{}; delete it to decode it again",
        path.display(),
        chunk.first_line,
        chunk.first_line + chunk.lines.len(),
        first + len
    );
    Ok(chunk)
}

/// Decodes `sources` (token ids ending in EOS) in batches of sentences of
/// similar length; detokenised, whitespace-normalised lines out, in input order.
fn decode_chunk(
    teacher: &LoadedTeacher,
    sources: &[Vec<u32>],
    settings: &Settings,
    bar: &indicatif::ProgressBar,
) -> Result<Vec<String>> {
    let search = emvq_transformer::SearchConfig {
        beam_size: settings.beam,
        length_penalty: settings.length_penalty,
        max_len_a: settings.max_len_a,
        max_len_b: settings.max_len_b,
    };
    let mut order: Vec<usize> = (0..sources.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sources[i].len()));
    let mut out = vec![String::new(); sources.len()];
    for batch in order.chunks(settings.batch_sentences) {
        let rows: Vec<Vec<u32>> = batch.iter().map(|&i| sources[i].clone()).collect();
        let ids = translate_ids(&teacher.model, &rows, &search, rows.len(), teacher.device)?;
        let text = teacher.tokenizer.decode_batch(&ids)?;
        for (&i, line) in batch.iter().zip(text) {
            // One line per sentence whatever bytes the model produced.
            out[i] = normalize_whitespace(&line);
        }
        bar.inc(batch.len() as u64);
    }
    Ok(out)
}

/// Runs `emvq distill`; returns the record, or `None` when stopped early
/// by `--stop-after-chunks` or when `OUT` was already complete.
pub fn run(args: &DistillArgs) -> Result<Option<Record>> {
    let start = Instant::now();
    let _guard = tch::no_grad_guard();
    ensure!(
        args.chunk_sentences >= 1,
        "--chunk-sentences must be at least 1"
    );
    let teacher = load_teacher(&args.teacher, args.device)?;
    if let Some(threads) = args.threads {
        ensure!(threads >= 1, "--threads must be at least 1");
        // Intra-op only: the inter-op pool may be set once per process.
        tch::set_num_threads(threads as i32);
    }
    let config = &teacher.config;
    let decode = &config.decode;
    let beam = args.beam.unwrap_or(decode.beam_size);
    ensure!(beam >= 1, "--beam must be at least 1");
    let batch_sentences = args.batch_sentences.unwrap_or(decode.batch_sentences);
    ensure!(batch_sentences >= 1, "--batch-sentences must be at least 1");
    let teacher_dir = std::fs::canonicalize(&args.teacher)
        .with_context(|| format!("teacher run {}", args.teacher.display()))?;
    let out = match &args.out {
        Some(out) => out.clone(),
        None => {
            let name = teacher_dir
                .file_name()
                .context("the teacher run has no name")?;
            PathBuf::from("runs/distill").join(name)
        }
    };

    // The training split the teacher's config names.
    let data_dir = config.data.resolve_data_dir(&std::env::current_dir()?)?;
    let (src_path, tgt_path) = config.data.split_files(&data_dir, &config.data.train);
    let mut corpus = read_parallel(&src_path, &tgt_path).with_context(|| {
        format!(
            "training split {:?} of {}",
            config.data.train,
            data_dir.display()
        )
    })?;
    if let Some(limit) = args.limit {
        corpus.source.truncate(limit);
        corpus.target.truncate(limit);
    }
    let n = corpus.len();
    ensure!(
        n > 0,
        "the training split {} has no lines",
        src_path.display()
    );
    let mut sources = teacher.tokenizer.encode_batch(&corpus.source)?;
    for s in &mut sources {
        s.push(EOS_ID);
    }
    let source_hash = corpus.source.iter().fold(FNV_OFFSET, |h, line| {
        fnv1a64(line.bytes().chain([b'\n']), h)
    });

    let settings = Settings {
        teacher: teacher_dir.clone(),
        weights: weights_id(&std::fs::canonicalize(&teacher.weights)?)?,
        source_file: std::fs::canonicalize(&src_path)?,
        target_file: std::fs::canonicalize(&tgt_path)?,
        source_fnv1a64: format!("{source_hash:016x}"),
        sentences: n,
        limit: args.limit,
        beam,
        length_penalty: args.length_penalty.unwrap_or(decode.length_penalty),
        max_len_a: decode.max_len_a,
        max_len_b: decode.max_len_b,
        max_positions: config.model.max_positions,
        batch_sentences,
        chunk_sentences: args.chunk_sentences,
        device: format!("{:?}", teacher.device),
    };
    let settings_path = out.join(SETTINGS_FILE);
    let (src_lang, tgt_lang) = (&config.data.src_lang, &config.data.tgt_lang);
    let source_out = out.join(format!("train.{src_lang}"));
    let target_out = out.join(format!("train.{tgt_lang}"));
    let record_path = out.join(RECORD_FILE);
    if args.restart {
        let files = [&settings_path, &record_path, &source_out, &target_out];
        for path in files.into_iter().filter(|p| p.is_file()) {
            std::fs::remove_file(path)?;
        }
        if out.join(CHUNK_DIR).is_dir() {
            std::fs::remove_dir_all(out.join(CHUNK_DIR))?;
        }
    }
    if settings_path.is_file() {
        let old: Settings = serde_json::from_str(&std::fs::read_to_string(&settings_path)?)
            .with_context(|| {
                format!(
                    "{} is not a distillation settings file",
                    settings_path.display()
                )
            })?;
        let diff = differences(&old, &settings)?;
        if !diff.is_empty() {
            bail!(
                "{} holds a distillation with other settings ({}); pass --restart to discard its \
                 chunks, or choose another --out",
                out.display(),
                diff.join("; ")
            );
        }
    } else {
        write_atomic(
            &settings_path,
            serde_json::to_string_pretty(&settings)?.as_bytes(),
        )
        .with_context(|| format!("writing {}", settings_path.display()))?;
    }
    std::fs::create_dir_all(out.join(CHUNK_DIR))?;
    if [&source_out, &target_out, &record_path]
        .iter()
        .all(|p| p.is_file())
    {
        // Complete with these settings: keep the record of the run that made it.
        println!(
            "{} is already complete with these settings (see {}); --restart distils it again",
            out.display(),
            record_path.display()
        );
        return Ok(None);
    }

    let n_chunks = n.div_ceil(args.chunk_sentences);
    tracing::info!(
        "distilling {n} sentences of {} with {} (beam {beam}, α {}, batches of {batch_sentences}, \
         {n_chunks} chunks of {}) on {:?}, {} threads → {}",
        src_path.display(),
        teacher.weights.display(),
        settings.length_penalty,
        args.chunk_sentences,
        teacher.device,
        tch::get_num_threads(),
        out.display()
    );
    let bar = emvq_tensor::logging::progress_bar(n as u64, "distill");
    let mut targets: Vec<String> = Vec::with_capacity(n);
    let (mut reused, mut written, mut decoded) = (0usize, 0usize, 0usize);
    let mut decode_seconds = 0.0; // over every chunk, reused or not
    for index in 0..n_chunks {
        let first = index * args.chunk_sentences;
        let last = (first + args.chunk_sentences).min(n);
        let path = chunk_path(&out, index);
        if path.is_file() {
            let chunk = read_chunk(&path, first, last - first)?;
            decode_seconds += chunk.seconds;
            targets.extend(chunk.lines);
            reused += 1;
            bar.inc((last - first) as u64);
            bar.reset_eta();
            continue;
        }
        if args.stop_after_chunks.is_some_and(|k| written >= k) {
            bar.finish_and_clear();
            tracing::info!(
                "stopped after {written} new chunks (--stop-after-chunks); run again to resume"
            );
            return Ok(None);
        }
        let chunk_start = Instant::now();
        let lines = decode_chunk(&teacher, &sources[first..last], &settings, &bar)?;
        let seconds = chunk_start.elapsed().as_secs_f64();
        decode_seconds += seconds;
        decoded += last - first;
        let chunk = Chunk {
            first_line: first,
            lines,
            seconds,
        };
        write_atomic(&path, serde_json::to_string(&chunk)?.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        targets.extend(chunk.lines);
        written += 1;
    }
    bar.finish_and_clear();

    let joined = |lines: &[String]| {
        let mut text = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        text
    };
    write_atomic(&source_out, joined(&corpus.source).as_bytes())
        .with_context(|| format!("writing {}", source_out.display()))?;
    write_atomic(&target_out, joined(&targets).as_bytes())
        .with_context(|| format!("writing {}", target_out.display()))?;

    let metric = Bleu::new(BleuConfig::default(), &[corpus.target.clone()])?;
    let score = metric.corpus_score(&targets)?;
    let record = Record {
        max_len_rule: format!(
            "clamp(⌊{}·|x|⌋ + {}, 1, max_positions = {}) output tokens, |x| = source tokens with EOS \
             (sources cut to max_positions)",
            settings.max_len_a, settings.max_len_b, settings.max_positions
        ),
        settings,
        threads: tch::get_num_threads(),
        source_out,
        target_out,
        sentences: n,
        chunks: n_chunks,
        chunks_reused: reused,
        sentences_decoded: decoded,
        decode_seconds,
        sentences_per_s: n as f64 / decode_seconds.max(1e-9),
        seconds: start.elapsed().as_secs_f64(),
        bleu: score.score,
        bleu_line: score.format(2, &StatsMetric::signature(&metric)),
    };
    write_atomic(
        &record_path,
        serde_json::to_string_pretty(&record)?.as_bytes(),
    )
    .with_context(|| format!("writing {}", record_path.display()))?;
    println!(
        "distilled {n} sentences: {:.1} s of decoding, {:.1} sentences/s ({decoded} decoded now, \
         {reused} of {n_chunks} chunks reused; {:.1} s in all) → {}",
        decode_seconds,
        record.sentences_per_s,
        record.seconds,
        out.display()
    );
    println!("distilled vs original targets: {}", record.bleu_line);
    Ok(Some(record))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_reference_values() {
        assert_eq!(fnv1a64(*b"", FNV_OFFSET), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(*b"a", FNV_OFFSET), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(*b"foobar", FNV_OFFSET), 0x8594_4171_f739_67e8);
        // Hashing in pieces equals hashing the whole.
        assert_eq!(
            fnv1a64(*b"bar", fnv1a64(*b"foo", FNV_OFFSET)),
            0x8594_4171_f739_67e8
        );
    }
}
