//! `emvq bench-teacher` (`cargo xtask bench-teacher`): training throughput of
//! the teacher in emvq against an equivalent PyTorch script
//! (`crates/emvq/bench/teacher_torch.py`) on the same machine in the same
//! run: the same model config, the same batches (the first batches of the
//! config's training stream, dumped to a temporary JSON file the script
//! reads), the same thread count (the config's, 1 by default). Each side runs
//! `warmup` untimed steps, then `steps` timed ones, from a fresh model; the
//! sides alternate for `rounds` rounds (emvq, PyTorch, emvq, PyTorch, …) so
//! that load from other processes hits both alike. Every round is printed;
//! the result is each side's median round and their ratio (with the median
//! of the per-round ratios next to it). Tokens are non-padding target tokens.
//! emvq runs with its training settings, freed memory kept for reuse
//! ([`super::reuse_freed_memory`]); the script is plain PyTorch.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use clap::Args;
use emvq_data::prepare_translation;
use emvq_tensor::load_toml;
use emvq_transformer::{train_step, Adam, Seq2Seq, StepConfig};
use serde::Serialize;
use tch::{nn::VarStore, Device, Tensor};

use super::{batch_tensors, reuse_freed_memory, set_threads, TeacherConfig};

/// `emvq bench-teacher`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[arg(long, default_value = "configs/multi30k/teacher.toml")]
    pub config: PathBuf,
    /// Timed training steps per round.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Untimed steps before each round's timing.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Rounds per side, alternating; the median round counts.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Thread count for both sides (default: the config's `threads`).
    #[arg(long)]
    pub threads: Option<usize>,
    /// The PyTorch script.
    #[arg(long, default_value = "crates/emvq/bench/teacher_torch.py")]
    pub script: PathBuf,
    /// Python interpreter with torch importable (default: `$EMVQ_PYTHON`,
    /// else `python3`).
    #[arg(long)]
    pub python: Option<String>,
}

#[derive(Serialize)]
struct DumpBatch {
    source: Vec<Vec<i64>>,
    target: Vec<Vec<i64>>,
}

/// One side's timing of one round.
#[derive(Debug, Clone, Copy)]
struct Round {
    tokens_per_s: f64,
    first_loss: f64,
}

fn emvq_round(
    config: &TeacherConfig,
    batches: &[(Tensor, Tensor)],
    warmup: usize,
) -> Result<Round> {
    tch::manual_seed(config.seed as i64);
    let vs = VarStore::new(Device::Cpu);
    let model = Seq2Seq::new(vs.root(), &config.model)?;
    let (adam, schedule) = config.adam_and_schedule();
    let mut opt = Adam::new(&vs, &adam)?;
    let step_cfg = StepConfig {
        label_smoothing: config.train.label_smoothing,
        clip_norm: config.train.clip_norm,
        seed: config.seed,
    };
    let (mut tokens, mut first_loss, mut start) = (0.0, f64::NAN, Instant::now());
    for (i, batch) in batches.iter().enumerate() {
        if i == warmup {
            start = Instant::now();
        }
        let stats = train_step(
            &model,
            &mut opt,
            &schedule,
            std::slice::from_ref(batch),
            &step_cfg,
        )?;
        if i == 0 {
            first_loss = stats.loss;
        }
        if i >= warmup {
            tokens += stats.tokens;
        }
    }
    Ok(Round {
        tokens_per_s: tokens / start.elapsed().as_secs_f64(),
        first_loss,
    })
}

fn torch_round(args: &BenchArgs, dump: &std::path::Path) -> Result<Round> {
    let python = args
        .python
        .clone()
        .or_else(|| std::env::var("EMVQ_PYTHON").ok())
        .unwrap_or_else(|| "python3".into());
    let out = Command::new(&python)
        .arg(&args.script)
        .arg(dump)
        .output()
        .with_context(|| format!("cannot run {python} {}", args.script.display()))?;
    ensure!(
        out.status.success(),
        "{} failed: {}",
        args.script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout)?;
    let v: serde_json::Value = serde_json::from_str(line.trim().lines().last().unwrap_or(""))
        .with_context(|| format!("unexpected output of the PyTorch script: {line}"))?;
    Ok(Round {
        tokens_per_s: v["tokens_per_s"].as_f64().context("no tokens_per_s")?,
        first_loss: v["losses"][0].as_f64().context("no losses")?,
    })
}

/// Runs the benchmark and prints the comparison.
pub fn run(args: &BenchArgs) -> Result<()> {
    let mut config: TeacherConfig = load_toml(&args.config)?;
    config.validate()?;
    let threads = args.threads.unwrap_or(config.threads).max(1);
    set_threads(threads);
    reuse_freed_memory();
    let cache = std::env::temp_dir().join("emvq-bench-teacher");
    std::fs::create_dir_all(&cache)?;
    let data_dir = config.data.resolve_data_dir(&std::env::current_dir()?)?;
    let prepared = prepare_translation(&config.data, &data_dir, Some(&cache))?;
    config.resolve_vocab(&prepared.tokenizer)?;

    let batcher = emvq_data::Batcher::new(
        prepared.train.encoded.clone(),
        config.data.batch_config(true),
    )?;
    let n = args.warmup + args.steps;
    let batches: Vec<emvq_data::Batch> = batcher
        .stream(Default::default())
        .take(n)
        .map(|(_, b)| b)
        .collect();
    let rows =
        |a: &ndarray::Array2<i64>| a.rows().into_iter().map(|r| r.to_vec()).collect::<Vec<_>>();
    let t = &config.train;
    let spec = serde_json::json!({
        "model": config.model,
        "train": {
            "lr_scale": t.lr_scale, "warmup_steps": t.warmup_steps, "beta1": t.adam_beta1,
            "beta2": t.adam_beta2, "eps": t.adam_eps, "label_smoothing": t.label_smoothing,
            "clip_norm": t.clip_norm,
        },
        "threads": threads,
        "seed": config.seed,
        "warmup": args.warmup,
        "steps": args.steps,
        "batches": batches.iter().map(|b| DumpBatch { source: rows(&b.source), target: rows(&b.target) }).collect::<Vec<_>>(),
    });
    let dump = cache.join(format!("batches-{}.json", std::process::id()));
    std::fs::write(&dump, serde_json::to_vec(&spec)?)?;
    let tensors: Vec<(Tensor, Tensor)> = batches
        .iter()
        .map(|b| batch_tensors(b, Device::Cpu))
        .collect();
    let target_tokens: usize = batches[args.warmup..]
        .iter()
        .map(|b| b.target_lens.iter().sum::<usize>())
        .sum();
    println!(
        "teacher training benchmark: d_model {}, {}+{} layers, d_ff {}, heads {}, vocab {}; {} timed steps \
         ({} target tokens, batches of ≤ {} padded tokens) after {} warm-up steps; {threads} thread(s); {} rounds",
        config.model.d_model,
        config.model.encoder_layers,
        config.model.decoder_layers,
        config.model.d_ff,
        config.model.heads,
        config.model.vocab_size,
        args.steps,
        target_tokens,
        config.data.max_tokens,
        args.warmup,
        args.rounds
    );

    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let result = (|| -> Result<()> {
        for round in 0..args.rounds.max(1) {
            let a = emvq_round(&config, &tensors, args.warmup)?;
            println!(
                "round {round}: emvq    {:>8.0} tokens/s (first loss {:.3})",
                a.tokens_per_s, a.first_loss
            );
            ours.push(a);
            let b = torch_round(args, &dump)?;
            println!(
                "round {round}: PyTorch {:>8.0} tokens/s (first loss {:.3})",
                b.tokens_per_s, b.first_loss
            );
            theirs.push(b);
        }
        Ok(())
    })();
    std::fs::remove_file(&dump).ok();
    result?;
    let speeds = |v: &[Round]| v.iter().map(|r| r.tokens_per_s).collect::<Vec<_>>();
    let (a, b) = (median(&speeds(&ours)), median(&speeds(&theirs)));
    let ratios: Vec<f64> = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| a.tokens_per_s / b.tokens_per_s)
        .collect();
    let list = |v: &[f64], digits: usize| {
        v.iter()
            .map(|x| format!("{x:.digits$}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("emvq    tokens/s by round: {}", list(&speeds(&ours), 0));
    println!("PyTorch tokens/s by round: {}", list(&speeds(&theirs), 0));
    println!("emvq/PyTorch by round:     {}", list(&ratios, 2));
    println!(
        "median of {} rounds: emvq {a:.0} tokens/s, PyTorch {b:.0} tokens/s, ratio emvq/PyTorch {:.2}× \
         (median per-round ratio {:.2}×)",
        ours.len(),
        a / b,
        median(&ratios)
    );
    Ok(())
}

/// The median (mean of the middle two for an even count).
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(super::median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(super::median(&[]).is_nan());
    }
}
