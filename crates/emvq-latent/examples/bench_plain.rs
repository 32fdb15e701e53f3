//! Batch-1 latency of the plain NAT baseline of Roy et al. 2018 ("Theory
//! and Experiments on Vector Quantized Autoencoders", arXiv 1805.11063,
//! Table 3: NAT, NAT + NPD 10, NAT + NPD 100) against the autoregressive
//! teacher's greedy and beam-4 search, on real Multi30k test sentences.
//!
//! The teacher is a trained run (`TEACHER_RUN`, default
//! `runs/teacher/multi30k_20min_v2`: its `config.toml` `[model]`,
//! `tokenizer.json`, `model.safetensors`); the plain NAT has the teacher's
//! sizes and random weights (timing only — outputs are meaningless), its
//! length rule from `RULE` (`predicted`, default, or `t2t`). For every
//! sentence, one after another: NPD 1 (= `translate`), NPD 10 and NPD 100
//! (`candidates` then `teacher_scores`, i.e. `rescore`), greedy, beam 4
//! (length penalty 0.6, max length 1.2·|x| + 10, as the run's config).
//!
//! `cargo run --release -p emvq-latent --example bench_plain` with
//! `THREADS` (LibTorch intra-op threads, default 1), `N` (sentences,
//! default 100), `WARMUP` (untimed sentences first, default 5), `DATA`
//! (default `/work/shared/data/multi30k`), `TEST` (default
//! `test_2016_flickr`), `SRC` (default `en`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use emvq_data::{read_lines, SubwordTokenizer, EOS_ID};
use emvq_latent::{
    teacher_scores, LengthConfig, LengthRule, NatDecode, NatModel, PlainNat, PlainNatConfig,
};
use emvq_tensor::Checkpoint;
use emvq_transformer::{beam_search, greedy, SearchConfig, Seq2Seq, TransformerConfig};
use serde::Deserialize;
use tch::{nn::VarStore, Device, Tensor};

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

/// The part of a teacher run's `config.toml` this benchmark needs.
#[derive(Deserialize)]
struct RunConfig {
    model: TransformerConfig,
}

/// Per-method latencies (ms) and output lengths.
#[derive(Default)]
struct Timings {
    ms: Vec<f64>,
    out_tokens: usize,
}

impl Timings {
    fn add(&mut self, start: Instant, out: &[i64]) {
        self.ms.push(start.elapsed().as_secs_f64() * 1e3);
        self.out_tokens += out.len();
    }

    fn report(&self, name: &str, baseline: f64) {
        let mut sorted = self.ms.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len() as f64;
        let mean = sorted.iter().sum::<f64>() / n;
        println!(
            "{name:28} mean {mean:8.2} ms  median {:8.2} ms  p90 {:8.2} ms  {:5.2}x vs beam 4  mean output {:.1} tokens",
            sorted[sorted.len() / 2],
            sorted[(sorted.len() * 9 / 10).min(sorted.len() - 1)],
            baseline / mean,
            self.out_tokens as f64 / n
        );
    }

    fn mean(&self) -> f64 {
        self.ms.iter().sum::<f64>() / self.ms.len() as f64
    }
}

fn main() -> Result<()> {
    let threads: i32 = env_or("THREADS", "1").parse()?;
    let n: usize = env_or("N", "100").parse()?;
    let warmup: usize = env_or("WARMUP", "5").parse()?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let run = root.join(env_or("TEACHER_RUN", "runs/teacher/multi30k_20min_v2"));
    let data = PathBuf::from(env_or("DATA", "/work/shared/data/multi30k"));
    let test = data.join(format!(
        "{}.{}.gz",
        env_or("TEST", "test_2016_flickr"),
        env_or("SRC", "en")
    ));
    let rule = match env_or("RULE", "predicted").as_str() {
        "predicted" => LengthRule::Predicted,
        "t2t" => LengthRule::T2t,
        other => anyhow::bail!("RULE must be predicted or t2t, got {other}"),
    };
    tch::set_num_threads(threads);
    tch::manual_seed(0);

    let config_path = run.join("config.toml");
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let cfg: RunConfig = toml::from_str(&text)
        .with_context(|| format!("parsing [model] of {}", config_path.display()))?;
    let tokenizer = SubwordTokenizer::load(&run)?;
    let teacher_vs = VarStore::new(Device::Cpu);
    let teacher = Seq2Seq::new(teacher_vs.root(), &cfg.model)?;
    let weights = run.join("model.safetensors");
    Checkpoint::load(&weights)?.restore_into(&teacher_vs, &weights)?;

    let nat_cfg = PlainNatConfig {
        length: LengthConfig {
            rule,
            ..LengthConfig::default()
        },
        ..PlainNatConfig::from_teacher(&cfg.model)
    };
    let nat_vs = VarStore::new(Device::Cpu);
    let nat = PlainNat::new(nat_vs.root(), &nat_cfg)?;

    let lines = read_lines(&test)?;
    anyhow::ensure!(
        lines.len() >= n + warmup,
        "{} has only {} lines",
        test.display(),
        lines.len()
    );
    let sources: Vec<Tensor> = lines[..n + warmup]
        .iter()
        .map(|line| -> Result<Tensor> {
            let mut ids: Vec<i64> = tokenizer.encode(line)?.into_iter().map(i64::from).collect();
            ids.push(i64::from(EOS_ID));
            Ok(Tensor::from_slice(&ids).view([1, -1]))
        })
        .collect::<Result<_>>()?;
    let src_tokens: usize = sources[warmup..].iter().map(|s| s.size()[1] as usize).sum();
    println!(
        "plain NAT vs teacher, batch 1, {} threads, {n} sentences of {} (mean {:.1} source tokens incl. EOS), {warmup} warm-up; \
         d_model {}, {}+{} layers, vocab {}, length rule {rule:?}, teacher {}",
        threads,
        test.display(),
        src_tokens as f64 / n as f64,
        cfg.model.d_model,
        cfg.model.encoder_layers,
        cfg.model.decoder_layers,
        cfg.model.vocab_size,
        weights.display()
    );

    let settings = NatDecode::default();
    let beam = SearchConfig {
        beam_size: 4,
        length_penalty: 0.6,
        max_len_a: 1.2,
        max_len_b: 10,
    };
    let names = [
        "NAT (NPD 1)",
        "NAT + NPD 10 + rescoring",
        "NAT + NPD 100 + rescoring",
        "teacher greedy",
        "teacher beam 4",
    ];
    let mut t: Vec<Timings> = names.iter().map(|_| Timings::default()).collect();
    // NPD split: candidate decoding vs teacher scoring, for 10 and 100.
    let mut split = [[0.0f64; 2]; 2];
    for (i, src) in sources.iter().enumerate() {
        let timed = i >= warmup;
        let start = Instant::now();
        let out = nat.translate(src, &settings)?.remove(0);
        if timed {
            t[0].add(start, &out);
        }
        for (k, npd) in [10usize, 100].into_iter().enumerate() {
            let start = Instant::now();
            let cands = nat.candidates(src, npd, &settings)?;
            let mid = Instant::now();
            let scores = teacher_scores(&teacher, src, &cands)?;
            let best = emvq_latent::rescore::best_index(&scores).context("no candidate")?;
            if timed {
                t[1 + k].add(start, &cands[best]);
                split[k][0] += (mid - start).as_secs_f64() * 1e3;
                split[k][1] += mid.elapsed().as_secs_f64() * 1e3;
            }
        }
        let start = Instant::now();
        let out = greedy(&teacher, src, beam.max_len_a, beam.max_len_b)?
            .remove(0)
            .tokens;
        if timed {
            t[3].add(start, &out);
        }
        let start = Instant::now();
        let out = beam_search(&teacher, src, &beam)?
            .remove(0)
            .remove(0)
            .tokens;
        if timed {
            t[4].add(start, &out);
        }
    }
    let baseline = t[4].mean();
    for (name, timings) in names.iter().zip(&t) {
        timings.report(name, baseline);
    }
    for (k, npd) in [10, 100].into_iter().enumerate() {
        println!(
            "NPD {npd:3}: candidates {:.2} ms + teacher scoring {:.2} ms per sentence",
            split[k][0] / n as f64,
            split[k][1] / n as f64
        );
    }
    Ok(())
}
