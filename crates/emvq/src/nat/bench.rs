//! `emvq bench-nat`: batch-1 inference latency of the latent-Transformer NAT
//! (Roy et al. 2018, arXiv 1805.11063) on real test sentences, by component
//! (encoder + length, latent steps, decompression + one decoder pass), for
//! design choices side by side, next to the teacher's greedy decoding on the
//! same sentences, machine and thread count.
//!
//! Without `--run`, models of the config's sizes are built with random
//! weights for every combination of `--rules` × `--compress-steps` ×
//! `--predictor-layers` (what costs time does not depend on the weights,
//! only on the lengths: the `oracle` rule decodes at the reference length, a
//! stand-in for a trained length classifier, whose own cost is one linear
//! layer). With `--run DIR` the trained NAT is timed with its own length rule
//! (and, when `--rules` names `oracle`, at the reference lengths) and its
//! BLEU on the split is printed too. Variants alternate sentence by
//! sentence. Times are the decoding thread's CPU time
//! ([`thread_cpu_seconds`], 1 LibTorch thread): on a shared machine wall-clock
//! time also counts the waits for other processes.

use std::path::PathBuf;
use std::rc::Rc;

use anyhow::{ensure, Context, Result};
use clap::Args;
use emvq_bleu::{Bleu, BleuConfig};
use emvq_data::prepare::encode_corpus;
use emvq_data::read_parallel;
use emvq_latent::timing::thread_cpu_seconds;
use emvq_latent::{DecodeStats, LatentNat, LengthRule, NatDecode};
use emvq_tensor::load_toml;
use emvq_transformer::greedy;
use serde::Serialize;
use tch::{nn::VarStore, Device};

use super::{load_nat_unthreaded, pad_rows, NatRunConfig};
use crate::teacher::load_teacher;

/// `emvq bench-nat`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// NAT config whose sizes (and teacher, data) are used.
    #[arg(long, default_value = "configs/multi30k/nat_em.toml")]
    pub config: PathBuf,
    /// Time this trained NAT run instead of random-weight variants.
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// Split of the config's data set.
    #[arg(long, default_value = "test_2016_flickr")]
    pub split: String,
    /// Sentences timed (the first N of the split; 0: all).
    #[arg(long, default_value_t = 300)]
    pub sentences: usize,
    /// Length rules of the variants: t2t, ratio, oracle (comma-separated).
    #[arg(long, default_value = "t2t,ratio,oracle", value_delimiter = ',')]
    pub rules: Vec<String>,
    /// Compression steps k of the variants.
    #[arg(long, default_value = "3,4", value_delimiter = ',')]
    pub compress_steps: Vec<i64>,
    /// Latent-predictor depths of the variants.
    #[arg(long, default_value = "1,3", value_delimiter = ',')]
    pub predictor_layers: Vec<i64>,
    /// Beam over latents (1: greedy).
    #[arg(long, default_value_t = 1)]
    pub latent_beam: usize,
    /// Decode the expected code vectors under the predictor's distribution
    /// ([`NatDecode::soft_latents`]).
    #[arg(long)]
    pub soft_latents: bool,
    /// LibTorch threads (1: every op runs on the timed thread).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Override the config's `teacher` run.
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Write the table as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Per-sentence means, milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
struct Row {
    name: String,
    total_ms: f64,
    median_ms: f64,
    encode_ms: f64,
    latent_ms: f64,
    decode_ms: f64,
    latent_steps: f64,
    target_len: f64,
    speedup_vs_greedy: f64,
    bleu: Option<f64>,
}

struct Variant {
    name: String,
    /// The model and the store that holds its weights (a trained run's
    /// two variants share one).
    model: Rc<(LatentNat, VarStore)>,
    oracle: bool,
    totals: Vec<f64>,
    stats: Vec<DecodeStats>,
    outputs: Vec<Vec<u32>>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (mut s, mut n) = (0.0f64, 0.0f64);
    for x in v {
        s += x;
        n += 1.0;
    }
    s / n.max(1.0)
}

/// Runs `emvq bench-nat`.
pub fn run(args: &BenchArgs) -> Result<()> {
    let mut config: NatRunConfig = match &args.run {
        Some(dir) => emvq_tensor::RunDir::open(dir)?.load_config()?,
        None => load_toml(&args.config)?,
    };
    if let Some(teacher) = &args.teacher {
        config.teacher = teacher.clone();
    }
    let teacher = load_teacher(&config.teacher, Some(emvq_tensor::DeviceSpec::Cpu))?;
    tch::set_num_threads(args.threads as i32); // the inter-op count is fixed once set
    let device = Device::Cpu;
    let data_dir = config.data.resolve_data_dir(&std::env::current_dir()?)?;
    let (src_path, tgt_path) = config.data.split_files(&data_dir, &args.split);
    let raw = read_parallel(&src_path, &tgt_path)
        .with_context(|| format!("split {:?} of {}", args.split, data_dir.display()))?;
    let all: Vec<usize> = (0..raw.len()).collect();
    let encoded = encode_corpus(&teacher.tokenizer, &raw, &all)?;
    let n = if args.sentences == 0 {
        raw.len()
    } else {
        args.sentences.min(raw.len())
    };
    ensure!(n > 0, "no sentences to time");

    let mut variants = Vec::new();
    match &args.run {
        Some(dir) => {
            // Its own length rule, and the reference lengths when `--rules`
            // names `oracle` (how much BLEU the length rule costs).
            let oracle_too = args.rules.iter().any(|r| r == "oracle");
            let nat = load_nat_unthreaded(dir, Some(emvq_tensor::DeviceSpec::Cpu))?;
            let own_rule = format!("{:?}", nat.config.model.length.rule);
            let model = Rc::new((nat.model, nat.vs));
            for oracle in [false, true] {
                if oracle && !oracle_too {
                    continue;
                }
                let rule = if oracle {
                    "reference"
                } else {
                    own_rule.as_str()
                };
                variants.push(Variant {
                    name: format!("{} ({rule} length)", dir.display()),
                    model: Rc::clone(&model),
                    oracle,
                    totals: Vec::new(),
                    stats: Vec::new(),
                    outputs: Vec::new(),
                });
            }
        }
        None => {
            for rule in &args.rules {
                for &k in &args.compress_steps {
                    for &p in &args.predictor_layers {
                        let mut m = config.model.clone();
                        m.vocab_size = teacher.tokenizer.vocab_size() as i64;
                        m.compress_steps = k;
                        m.predictor_layers = p;
                        let oracle = rule == "oracle";
                        m.length.rule = match rule.as_str() {
                            "t2t" => LengthRule::T2t,
                            "ratio" | "oracle" => LengthRule::Ratio,
                            other => anyhow::bail!(
                                "--rules: unknown rule {other:?} (t2t, ratio, oracle)"
                            ),
                        };
                        m.max_positions = m.round_up(m.max_positions.max(2 * 256));
                        tch::manual_seed(config.seed as i64);
                        let vs = VarStore::new(device);
                        let model = LatentNat::new(vs.root(), &m)?;
                        // Laid out as a loaded run's weights are.
                        emvq_tensor::layout::column_major_matrices(&vs);
                        variants.push(Variant {
                            name: format!("{rule} k={k} predictor={p}"),
                            model: Rc::new((model, vs)),
                            oracle,
                            totals: Vec::new(),
                            stats: Vec::new(),
                            outputs: Vec::new(),
                        });
                    }
                }
            }
        }
    }

    let settings = NatDecode {
        latent_beam: args.latent_beam,
        soft_latents: args.soft_latents,
        ..Default::default()
    };
    let search = teacher.config.decode.search(1);
    let mut greedy_ms = Vec::with_capacity(n);
    let _guard = tch::no_grad_guard();
    let bar = emvq_tensor::logging::progress_bar(n as u64, "bench-nat");
    for i in 0..n {
        let (s, t) = (&encoded.source[i], &encoded.target[i]);
        let start = thread_cpu_seconds();
        let src = pad_rows(&[s.as_slice()], teacher.model.config().pad_id, device);
        greedy(&teacher.model, &src, search.max_len_a, search.max_len_b)?;
        greedy_ms.push((thread_cpu_seconds() - start) * 1e3);
        for v in &mut variants {
            let start = thread_cpu_seconds();
            let model = &v.model.0;
            let src = pad_rows(&[s.as_slice()], model.config().pad_id, device);
            let lens = [t.len() as i64];
            let (out, stats) =
                model.translate_at_lengths(&src, v.oracle.then_some(&lens[..]), &settings)?;
            v.totals.push((thread_cpu_seconds() - start) * 1e3);
            v.stats.push(stats);
            v.outputs.push(out[0].iter().map(|&x| x as u32).collect());
        }
        bar.inc(1);
    }
    bar.finish_and_clear();

    let greedy_mean = mean(greedy_ms.iter().copied());
    let mut rows = vec![Row {
        name: "teacher greedy".into(),
        total_ms: greedy_mean,
        median_ms: median(&greedy_ms),
        speedup_vs_greedy: 1.0,
        ..Default::default()
    }];
    let refs: Vec<String> = (0..n).map(|i| raw.target[i].clone()).collect();
    let bleu = Bleu::new(BleuConfig::default(), &[refs])?;
    for v in &variants {
        let total = mean(v.totals.iter().copied());
        let hyps = teacher.tokenizer.decode_batch(&v.outputs)?;
        rows.push(Row {
            name: v.name.clone(),
            total_ms: total,
            median_ms: median(&v.totals),
            encode_ms: mean(v.stats.iter().map(|s| s.encode_seconds * 1e3)),
            latent_ms: mean(v.stats.iter().map(|s| s.latent_seconds * 1e3)),
            decode_ms: mean(v.stats.iter().map(|s| s.decode_seconds * 1e3)),
            latent_steps: mean(v.stats.iter().map(|s| s.latent_steps as f64)),
            target_len: mean(v.stats.iter().map(|s| s.lengths[0] as f64)),
            speedup_vs_greedy: greedy_mean / total,
            bleu: args
                .run
                .is_some()
                .then(|| bleu.corpus_score(&hyps).map(|b| b.score))
                .transpose()?,
        });
    }
    println!(
        "batch 1, {} threads, {n} sentences of {} (teacher {}), thread CPU time:\n",
        args.threads,
        args.split,
        config.teacher.display()
    );
    println!("| variant | mean ms | median ms | encoder ms | latents ms | decoder ms | latent steps | length | × greedy | BLEU |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in &rows {
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.2} | {} |",
            r.name,
            r.total_ms,
            r.median_ms,
            r.encode_ms,
            r.latent_ms,
            r.decode_ms,
            r.latent_steps,
            r.target_len,
            r.speedup_vs_greedy,
            r.bleu.map_or("-".into(), |b| format!("{b:.2}"))
        );
    }
    if let Some(path) = &args.json {
        emvq_tensor::fsutil::write_atomic(path, serde_json::to_string_pretty(&rows)?.as_bytes())?;
    }
    Ok(())
}
