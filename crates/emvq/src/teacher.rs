//! `emvq train-teacher --config FILE [--name N] [--resume] [--device D]`:
//! trains the autoregressive Transformer teacher of Roy et al. 2018 (arXiv
//! 1805.11063) into `runs/teacher/<name>/`.
//!
//! The run directory holds the resolved config (`config.toml`, the model's
//! vocabulary size filled in from the tokenizer), `tokenizer.json` (trained on
//! the first run, reused after), `metrics.jsonl` (training records every
//! `log_every` steps, validation loss and greedy BLEU every `eval_every`
//! steps), `log.txt`, `checkpoints/` (the last K step checkpoints and the best
//! by validation loss; each holds model, Adam moments, step, data position,
//! elapsed training time and config) and, at the end, `model.safetensors`:
//! the average of the last `average_last` checkpoints. `--resume` continues
//! from the newest checkpoint exactly (same batches, same dropout masks).
//! Training stops at `max_steps` or when `max_minutes` of wall-clock time
//! (validation included, resumed runs counting what they already spent) are
//! used up, whichever comes first.

pub mod bench;
pub(crate) mod run_steps;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use emvq_data::{
    prepare_translation, Batch, Batcher, DataPosition, SubwordTokenizer, TranslationDataConfig,
};
use emvq_tensor::{load_toml, DeviceSpec, RunDir};
use emvq_transformer::{
    evaluate, train_step_with, Adam, AdamConfig, CheckpointKeeper, LrSchedule, SearchConfig,
    Seq2Seq, StepConfig, TransformerConfig,
};
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device, Tensor};

use crate::translate::translate_ids;
use run_steps::{
    adam_and_schedule, advance_bar, check_resumed_config, check_train_limits, refuse_overwrite,
    resume_latest, RunArgs, RunWriter, ValidSet,
};

/// The final model of a run, written when training ends.
pub const MODEL_FILE: &str = "model.safetensors";
/// Checkpoint metadata keys written by this stage.
/// Metadata keys of a training checkpoint (shared by the teacher and NAT trainers).
pub(crate) const POSITION_KEY: &str = "data_position";
pub(crate) const SECONDS_KEY: &str = "train_seconds";
pub(crate) const CONFIG_KEY: &str = "config";

/// `configs/<dataset>/teacher*.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherConfig {
    /// Run name: the run directory is `runs/teacher/<name>/`.
    pub name: String,
    #[serde(default)]
    pub device: DeviceSpec,
    /// Seed of the initialisation and of every step's dropout.
    pub seed: u64,
    /// LibTorch intra-op threads; 0 keeps LibTorch's default.
    pub threads: usize,
    pub data: TranslationDataConfig,
    /// `vocab_size = 0` takes the tokenizer's size (the resolved config
    /// saved in the run directory holds the number).
    pub model: TransformerConfig,
    pub train: TrainSettings,
    pub decode: DecodeSettings,
}

/// `[train]`: optimisation, stopping, evaluation and checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSettings {
    /// The constant `c` of `lr = c · min(1, t/w) · max(t, w)^−½ · d^−½`.
    pub lr_scale: f64,
    pub warmup_steps: i64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_eps: f64,
    pub label_smoothing: f64,
    /// Global gradient-norm clip; 0 turns it off.
    pub clip_norm: f64,
    /// Micro-batches (of `data.max_tokens` each) per optimiser step.
    pub accumulation: usize,
    /// Stop after this many optimiser steps (absent: no step limit).
    #[serde(default)]
    pub max_steps: Option<i64>,
    /// Stop after this much wall-clock training time (absent: no limit).
    #[serde(default)]
    pub max_minutes: Option<f64>,
    /// A training record into `metrics.jsonl` and the log every N steps.
    pub log_every: i64,
    /// Validation loss (and greedy BLEU) every N steps, and at the end.
    pub eval_every: i64,
    /// Greedy BLEU on the validation set at each evaluation.
    pub eval_bleu: bool,
    /// A checkpoint every N steps, and at the end.
    pub checkpoint_every: i64,
    /// Step checkpoints kept (besides `best.safetensors`).
    pub keep_last: usize,
    /// The final model averages the last N checkpoints (1: the last one).
    pub average_last: usize,
    /// Forward passes under bfloat16 autocast (CUDA only).
    #[serde(default)]
    pub autocast_bf16: bool,
}

/// `[decode]`: search settings of `translate`, `eval` and validation BLEU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodeSettings {
    pub beam_size: i64,
    /// GNMT length-penalty α.
    pub length_penalty: f64,
    /// Maximum output length `⌊a·|x|⌋ + b`.
    pub max_len_a: f64,
    pub max_len_b: i64,
    /// Sentences per decoding batch.
    pub batch_sentences: usize,
}

impl DecodeSettings {
    pub fn search(&self, beam_size: i64) -> SearchConfig {
        SearchConfig {
            beam_size,
            length_penalty: self.length_penalty,
            max_len_a: self.max_len_a,
            max_len_b: self.max_len_b,
        }
    }
}

impl TeacherConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<()> {
        self.data.validate()?;
        let t = &self.train;
        let periods = [t.log_every, t.eval_every, t.checkpoint_every];
        check_train_limits(
            t.lr_scale,
            t.warmup_steps,
            t.max_steps,
            t.max_minutes,
            periods,
        )?;
        ensure!(t.accumulation >= 1, "train.accumulation must be at least 1");
        ensure!(
            t.keep_last >= 1 && t.average_last >= 1,
            "train.keep_last and average_last must be at least 1"
        );
        ensure!(
            t.average_last <= t.keep_last,
            "train.average_last ({}) cannot exceed keep_last ({})",
            t.average_last,
            t.keep_last
        );
        ensure!(
            (0.0..1.0).contains(&t.label_smoothing),
            "train.label_smoothing must be in [0, 1)"
        );
        ensure!(
            !(t.autocast_bf16 && self.device == DeviceSpec::Cpu),
            "train.autocast_bf16 needs a CUDA device, but device = \"cpu\""
        );
        let d = &self.decode;
        ensure!(
            d.beam_size >= 1 && d.batch_sentences >= 1,
            "decode.beam_size and batch_sentences must be at least 1"
        );
        let max_len = self.data.filters.max_len as i64 + 1;
        ensure!(
            self.model.max_positions >= max_len,
            "model.max_positions ({}) must hold data.filters.max_len + EOS ({max_len})",
            self.model.max_positions
        );
        Ok(())
    }

    /// Adam and the learning-rate schedule of `[train]`.
    fn adam_and_schedule(&self) -> (AdamConfig, LrSchedule) {
        let t = &self.train;
        let betas_eps = [t.adam_beta1, t.adam_beta2, t.adam_eps];
        adam_and_schedule(betas_eps, t.lr_scale, t.warmup_steps, self.model.d_model)
    }

    /// Fills `model.vocab_size = 0` from the tokenizer and checks it covers it.
    pub fn resolve_vocab(&mut self, tokenizer: &SubwordTokenizer) -> Result<()> {
        let size = tokenizer.vocab_size() as i64;
        if self.model.vocab_size == 0 {
            self.model.vocab_size = size;
        }
        ensure!(
            self.model.vocab_size >= size,
            "model.vocab_size = {} is smaller than the tokenizer's {size}",
            self.model.vocab_size
        );
        self.model.validate()?;
        Ok(())
    }
}

/// `emvq train-teacher`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    #[arg(long, default_value = "configs/multi30k/teacher.toml")]
    pub config: PathBuf,
    #[command(flatten)]
    pub run: RunArgs,
    /// Folder holding the run directories.
    #[arg(long, default_value = "runs")]
    pub runs: PathBuf,
}

/// Applies the LibTorch thread count of a config (0: LibTorch's default).
pub fn set_threads(threads: usize) {
    if threads > 0 {
        tch::set_num_threads(threads as i32);
        tch::set_num_interop_threads(threads as i32);
    }
}

/// Keeps freed memory in the process heap for reuse instead of handing it
/// back to the OS (glibc malloc: no `mmap` for large blocks, no trimming).
/// A training step allocates its large activations and gradients (the
/// `[tokens, vocab]` logits and their gradient, ~60 MB each here) afresh;
/// served by `mmap`, every one comes back as new pages the kernel must
/// fault in and clear — measured at a fifth or more of a CPU step. Call once,
/// before training.
pub fn reuse_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::raw::c_int;
        extern "C" {
            fn mallopt(param: c_int, value: c_int) -> c_int;
        }
        const M_TRIM_THRESHOLD: c_int = -1;
        const M_MMAP_MAX: c_int = -4;
        // SAFETY: mallopt only changes glibc malloc's tuning parameters.
        unsafe {
            mallopt(M_MMAP_MAX, 0);
            mallopt(M_TRIM_THRESHOLD, c_int::MAX);
        }
    }
}

/// `(src, tgt)` tensors `[batch, len]` of a data batch, on `device`.
pub fn batch_tensors(batch: &Batch, device: Device) -> (Tensor, Tensor) {
    let to_tensor = |a: &ndarray::Array2<i64>| {
        let (rows, cols) = a.dim();
        let flat: Vec<i64> = a.iter().copied().collect(); // row-major
        Tensor::from_slice(&flat)
            .view([rows as i64, cols as i64])
            .to_device(device) // [rows, cols]
    };
    (to_tensor(&batch.source), to_tensor(&batch.target))
}

/// One validation record.
#[derive(Debug, Clone, Serialize)]
struct ValidRecord {
    kind: &'static str,
    step: i64,
    loss: f64,
    nll: f64,
    ppl: f64,
    bleu_greedy: Option<f64>,
    seconds: f64,
}

/// Validation loss, perplexity and (with `eval_bleu`) greedy BLEU.
fn validate(
    valid: &ValidSet,
    step: i64,
    model: &Seq2Seq,
    tokenizer: &SubwordTokenizer,
    config: &TeacherConfig,
) -> Result<ValidRecord> {
    let start = Instant::now();
    let stats = evaluate(model, &valid.batches, config.train.label_smoothing)?;
    let bleu_greedy = if config.train.eval_bleu {
        let search = config.decode.search(1);
        let out = translate_ids(
            model,
            &valid.sources,
            &search,
            config.decode.batch_sentences,
            valid.device,
        )?;
        let hyps = tokenizer.decode_batch(&out)?;
        Some(valid.bleu.corpus_score(&hyps)?.score)
    } else {
        None
    };
    Ok(ValidRecord {
        kind: "valid",
        step,
        loss: stats.loss,
        nll: stats.nll,
        ppl: stats.nll.exp(),
        bleu_greedy,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Trains (or resumes) a teacher; returns the run directory.
pub fn train(args: &TrainArgs) -> Result<PathBuf> {
    let mut config: TeacherConfig = load_toml(&args.config)?;
    let t = &mut config.train;
    let limits = (&mut t.max_steps, &mut t.max_minutes);
    args.run.apply(&mut config.name, &mut config.device, limits);
    config
        .validate()
        .with_context(|| format!("config {}", args.config.display()))?;
    let run = RunDir::create(&args.runs, "teacher", &config.name)?;
    emvq_tensor::logging::init_logging(Some(&run.log_path()))?;
    refuse_overwrite(&run, args.run.resume)?;
    set_threads(config.threads);
    reuse_freed_memory();

    let cwd = std::env::current_dir()?;
    let data_dir = config.data.resolve_data_dir(&cwd)?;
    let prepared = prepare_translation(&config.data, &data_dir, Some(run.path()))?;
    config.resolve_vocab(&prepared.tokenizer)?;
    check_resumed_config(
        &run,
        args.run.resume,
        &args.config,
        |saved: &TeacherConfig| {
            saved.model == config.model && saved.data == config.data && saved.seed == config.seed
        },
    )?;
    run.save_config(&config)?;
    let device = config.device.resolve()?;
    ensure!(
        !config.train.autocast_bf16 || device.is_cuda(),
        "config {}: train.autocast_bf16 needs a CUDA device, but training would run on {device:?}",
        args.config.display()
    );
    tracing::info!(
        "teacher {} on {device:?}, {} LibTorch threads",
        config.name,
        tch::get_num_threads()
    );

    tch::manual_seed(config.seed as i64);
    let vs = VarStore::new(device);
    let model = Seq2Seq::new(vs.root(), &config.model)?;
    let (adam, schedule) = config.adam_and_schedule();
    let mut opt = Adam::new(&vs, &adam)?;
    let params = emvq_tensor::params::count_parameters(&vs);
    tracing::info!("{} trainable parameters", params.trainable);
    let mut keeper = CheckpointKeeper::new(&run.checkpoint_dir(), config.train.keep_last)?;
    let mut position = DataPosition::default();
    let mut seconds_before = 0.0;
    if args.run.resume {
        match resume_latest(&keeper, &vs, &mut opt)? {
            Some(resumed) => {
                position = resumed.position;
                seconds_before = resumed.seconds;
                tracing::info!(
                    "resumed from {} (step {}, epoch {} batch {}, {:.0} s trained)",
                    resumed.path.display(),
                    opt.step_count(),
                    position.epoch,
                    position.batch_index,
                    seconds_before
                );
            }
            None => tracing::warn!(
                "--resume: no checkpoint in {}, starting afresh",
                keeper_dir(&run).display()
            ),
        }
    }

    let train_batcher = Batcher::new(
        prepared.train.encoded.clone(),
        config.data.batch_config(true),
    )?;
    let validation = ValidSet::new(&prepared, &config.data, device)?;
    tracing::info!(
        "{} training pairs in {} batches of ≤ {} tokens per epoch, accumulation {}",
        prepared.train.encoded.len(),
        train_batcher.num_batches(),
        config.data.max_tokens,
        config.train.accumulation
    );

    let step_cfg = StepConfig {
        label_smoothing: config.train.label_smoothing,
        clip_norm: config.train.clip_norm,
        seed: config.seed,
    };
    let writer = RunWriter {
        vs: &vs,
        config_text: toml::to_string(&config)?,
    };
    let budget = config.train.max_minutes.map(|m| m * 60.0);
    let max_steps = config.train.max_steps;
    let bar = emvq_tensor::logging::progress_bar(max_steps.unwrap_or(0) as u64, "train");
    bar.set_position(opt.step_count() as u64);

    let start = Instant::now();
    let elapsed = |start: &Instant| seconds_before + start.elapsed().as_secs_f64();
    let mut stream = train_batcher.stream(position);
    let (mut window_tokens, mut window_start) = (0.0, Instant::now());
    let (mut last_eval, mut last_ckpt) = (-1i64, -1i64);
    let mut last_val: Option<f64> = None;
    let save = |keeper: &mut CheckpointKeeper,
                opt: &Adam,
                val_loss: Option<f64>,
                position: DataPosition,
                seconds: f64|
     -> Result<()> {
        let saved = writer.save(keeper, opt, val_loss, position, seconds)?;
        tracing::debug!(
            "saved {}{}",
            saved.path.display(),
            if saved.is_best { " (best)" } else { "" }
        );
        Ok(())
    };
    loop {
        let step = opt.step_count();
        if max_steps.is_some_and(|m| step >= m) || budget.is_some_and(|b| elapsed(&start) >= b) {
            break;
        }
        let micro: Vec<(Tensor, Tensor)> = (0..config.train.accumulation)
            .map(|_| batch_tensors(&stream.next().expect("endless").1, device))
            .collect();
        position = stream.position();
        let stats = train_step_with(
            &model,
            &mut opt,
            &schedule,
            &micro,
            &step_cfg,
            config.train.autocast_bf16,
        )?;
        let step = stats.step;
        window_tokens += stats.tokens;
        let seconds = elapsed(&start);
        let tok_per_s = window_tokens / window_start.elapsed().as_secs_f64().max(1e-9);
        let remaining = advance_bar(&bar, step, seconds, max_steps, budget);
        bar.set_message(format!(
            "loss {:.3} | {:.0} tok/s | ETA {}",
            stats.loss,
            tok_per_s,
            format_duration(remaining.max(0.0))
        ));
        if step % config.train.log_every == 0 {
            let record = serde_json::json!({
                "kind": "train", "step": step, "loss": stats.loss, "nll": stats.nll, "lr": stats.lr,
                "grad_norm": stats.grad_norm, "tokens": stats.tokens, "tokens_per_s": tok_per_s,
                "epoch": position.epoch, "seconds": seconds,
            });
            run.log_metrics(&record)?;
            bar.suspend(|| {
                tracing::info!(
                    "step {step} loss {:.4} lr {:.2e} |g| {:.2} {:.0} tok/s epoch {} {:.0} s",
                    stats.loss,
                    stats.lr,
                    stats.grad_norm,
                    tok_per_s,
                    position.epoch,
                    seconds
                )
            });
            window_tokens = 0.0;
            window_start = Instant::now();
        }
        if step % config.train.eval_every == 0 {
            let record =
                bar.suspend(|| validate(&validation, step, &model, &prepared.tokenizer, &config))?;
            log_valid(&run, &record)?;
            last_val = Some(record.loss);
            last_eval = step;
        }
        if step % config.train.checkpoint_every == 0 {
            let val = if last_eval == step { last_val } else { None };
            save(&mut keeper, &opt, val, position, elapsed(&start))?;
            last_ckpt = step;
        }
    }
    bar.finish_and_clear();
    let step = opt.step_count();
    if step == 0 {
        bail!("no training step was taken (the budget was already spent)");
    }
    if last_eval != step {
        let record = validate(&validation, step, &model, &prepared.tokenizer, &config)?;
        log_valid(&run, &record)?;
        last_val = Some(record.loss);
    }
    if last_ckpt != step && keeper.latest()? != Some(keeper.step_path(step)) {
        save(&mut keeper, &opt, last_val, position, elapsed(&start))?;
    }
    let seconds = elapsed(&start);
    tracing::info!(
        "trained {step} steps in {seconds:.0} s; best validation loss {:?}",
        keeper.best_loss()
    );

    // The final model: the average of the last N checkpoints.
    let model_path = run.path().join(MODEL_FILE);
    let averaged = writer.write_final(&keeper, config.train.average_last, step, &model_path)?;
    let mut record = validate(&validation, step, &model, &prepared.tokenizer, &config)?;
    record.kind = "final";
    log_valid(&run, &record)?;
    tracing::info!(
        "final model ({} checkpoints averaged) → {}",
        averaged,
        model_path.display()
    );
    Ok(run.path().to_path_buf())
}

fn keeper_dir(run: &RunDir) -> PathBuf {
    run.checkpoint_dir()
}

fn log_valid(run: &RunDir, record: &ValidRecord) -> Result<()> {
    run.log_metrics(record)?;
    tracing::info!(
        "{} step {}: loss {:.4}, ppl {:.2}{} ({:.1} s)",
        record.kind,
        record.step,
        record.loss,
        record.ppl,
        record
            .bleu_greedy
            .map_or(String::new(), |b| format!(", greedy BLEU {b:.2}")),
        record.seconds
    );
    Ok(())
}

/// `h:mm:ss`.
fn format_duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// A trained teacher ready to decode.
pub struct LoadedTeacher {
    pub config: TeacherConfig,
    pub tokenizer: SubwordTokenizer,
    pub model: Seq2Seq,
    /// The model's variables (e.g. to save or inspect them).
    #[allow(dead_code)]
    pub vs: VarStore,
    pub device: Device,
    /// The weights file that was loaded.
    pub weights: PathBuf,
}

/// Loads the run's resolved config, tokenizer and weights: `model.safetensors`
/// when training finished, else `checkpoints/best.safetensors`, else the
/// newest step checkpoint.
pub fn load_teacher(run_dir: &Path, device: Option<DeviceSpec>) -> Result<LoadedTeacher> {
    let run = RunDir::open(run_dir)?;
    let config: TeacherConfig = run.load_config()?;
    set_threads(config.threads);
    let tokenizer = SubwordTokenizer::load(run_dir)?;
    let device = device.unwrap_or(config.device).resolve()?;
    let vs = VarStore::new(device);
    let model = Seq2Seq::new(vs.root(), &config.model)?;
    let weights = crate::teacher::run_steps::restore_run_weights(&run, &vs)?;
    Ok(LoadedTeacher {
        config,
        tokenizer,
        model,
        vs,
        device,
        weights,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_configs_parse_and_validate() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for file in [
            "configs/multi30k/teacher.toml",
            "configs/wmt14/teacher_base.toml",
        ] {
            let config: TeacherConfig = load_toml(&root.join(file)).unwrap();
            config
                .validate()
                .unwrap_or_else(|e| panic!("{file}: {e:#}"));
        }
        let base: TeacherConfig = load_toml(&root.join("configs/wmt14/teacher_base.toml")).unwrap();
        let m = &base.model;
        assert_eq!(
            (
                m.encoder_layers,
                m.decoder_layers,
                m.d_model,
                m.d_ff,
                m.heads
            ),
            (6, 6, 512, 2048, 8)
        );
    }

    #[test]
    fn autocast_bf16_parses_and_is_refused_on_the_cpu() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let text = std::fs::read_to_string(root.join("configs/multi30k/teacher.toml")).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("autocast_bf16 = false"))
            .expect("the shipped config spells the option out");
        let absent: TeacherConfig = toml::from_str(&text.replace(line, "")).unwrap();
        assert!(!absent.train.autocast_bf16, "off by default");
        let on = text.replace(line, "autocast_bf16 = true");
        let mut config: TeacherConfig = toml::from_str(&on).unwrap();
        assert!(config.train.autocast_bf16);
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("autocast_bf16 needs a CUDA device"), "{err}");
        config.device = DeviceSpec::Cuda(0);
        config.validate().unwrap();
        let typo = text.replace(line, "autocast_bf = true");
        assert!(toml::from_str::<TeacherConfig>(&typo).is_err());
    }

    #[test]
    fn durations_format_as_hours_minutes_seconds() {
        assert_eq!(format_duration(3725.4), "1:02:05");
        assert_eq!(format_duration(59.6), "0:01:00");
    }
}
