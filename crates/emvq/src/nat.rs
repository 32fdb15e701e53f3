//! `emvq train-nat --config FILE [--name N] [--resume] [--max-steps N]
//! [--max-minutes M] [--train-dir DIR] [--teacher DIR]`: trains the
//! latent-Transformer NAT of Roy et al. 2018 (arXiv 1805.11063,
//! [`emvq_latent::LatentNat`]) into `runs/nat/<name>/`.
//!
//! The NAT uses its teacher's vocabulary: `teacher = "runs/teacher/NAME"`
//! names the run whose `tokenizer.json` is copied into the run directory
//! (and whose weights initialise the embeddings, encoder and decoder layers
//! by name with `init_from_teacher = true`). `[data]` is the teacher's data
//! table, usually with `train_dir` pointing at the distilled corpus.
//!
//! The run directory holds, like a teacher run's: the resolved `config.toml`,
//! `tokenizer.json`, `metrics.jsonl` (loss parts, codebook perplexity and dead
//! codes, tokens/s every `log_every` steps; validation loss and one-pass
//! greedy BLEU every `eval_every` steps), `log.txt`, `checkpoints/` (exact
//! resume: model, codebook statistics, Adam moments, step, data position,
//! elapsed time) and at the end `model.safetensors`, the average of the last
//! `average_last` checkpoints.

pub mod bench;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use emvq_bleu::{Bleu, BleuConfig};
use emvq_bottleneck::CodeUsage;
use emvq_data::{prepare_translation, Batcher, DataPosition, SubwordTokenizer, TranslationDataConfig, EOS_ID};
use emvq_latent::{init_from_teacher, LatentNat, NatConfig, NatDecode};
use emvq_tensor::{load_toml, seed::seed_all, Checkpoint, DeviceSpec, RunDir};
use emvq_transformer::keeper::{parse_meta, STEP_KEY};
use emvq_transformer::{
    average_checkpoints, load_training_checkpoint, step_seed, Adam, AdamConfig, CheckpointKeeper,
    LrSchedule,
};
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device, Tensor};

use crate::teacher::{batch_tensors, set_threads, CONFIG_KEY, MODEL_FILE, POSITION_KEY, SECONDS_KEY};

/// `configs/<dataset>/nat_*.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatRunConfig {
    /// Run name: the run directory is `runs/nat/<name>/`.
    pub name: String,
    #[serde(default)]
    pub device: DeviceSpec,
    /// Seed of the initialisation and of every step's random draws.
    pub seed: u64,
    /// LibTorch intra-op threads; 0 keeps LibTorch's default.
    pub threads: usize,
    /// The teacher run whose tokenizer (and optionally weights) the NAT uses.
    pub teacher: PathBuf,
    /// Copy the teacher's tensors whose names and shapes match (embeddings,
    /// encoder, decoder layers) before training.
    #[serde(default)]
    pub init_from_teacher: bool,
    pub data: TranslationDataConfig,
    /// `vocab_size = 0` takes the tokenizer's size.
    pub model: NatConfig,
    pub train: NatTrainSettings,
    pub decode: NatDecodeSettings,
}

/// `[train]`: optimisation, stopping, evaluation and checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatTrainSettings {
    /// The constant `c` of `lr = c · min(1, t/w) · max(t, w)^−½ · d^−½`.
    pub lr_scale: f64,
    pub warmup_steps: i64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_eps: f64,
    /// Global gradient-norm clip; 0 turns it off.
    pub clip_norm: f64,
    #[serde(default)]
    pub max_steps: Option<i64>,
    #[serde(default)]
    pub max_minutes: Option<f64>,
    pub log_every: i64,
    pub eval_every: i64,
    /// One-pass greedy BLEU on the validation set at each evaluation.
    pub eval_bleu: bool,
    pub checkpoint_every: i64,
    pub keep_last: usize,
    pub average_last: usize,
}

/// `[decode]`: inference settings of validation BLEU, `translate`, `eval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatDecodeSettings {
    /// Beam over latent codes (1: greedy).
    pub latent_beam: usize,
    /// Sentences per decoding batch.
    pub batch_sentences: usize,
}

impl NatDecodeSettings {
    pub fn nat(&self) -> NatDecode {
        NatDecode { latent_beam: self.latent_beam, ..Default::default() }
    }
}

impl NatRunConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<()> {
        self.data.validate()?;
        let t = &self.train;
        ensure!(t.lr_scale > 0.0, "train.lr_scale must be positive");
        ensure!(t.warmup_steps >= 1, "train.warmup_steps must be at least 1");
        ensure!(
            t.max_steps.is_some() || t.max_minutes.is_some(),
            "set train.max_steps or train.max_minutes (or both)"
        );
        ensure!(t.max_steps.is_none_or(|s| s >= 1), "train.max_steps must be at least 1");
        ensure!(t.max_minutes.is_none_or(|m| m > 0.0), "train.max_minutes must be positive");
        ensure!(
            t.log_every >= 1 && t.eval_every >= 1 && t.checkpoint_every >= 1,
            "train.log_every, eval_every and checkpoint_every must be at least 1"
        );
        ensure!(
            t.keep_last >= 1 && (1..=t.keep_last).contains(&t.average_last),
            "train.keep_last ≥ 1 and 1 ≤ average_last ≤ keep_last"
        );
        ensure!(
            self.decode.latent_beam >= 1 && self.decode.batch_sentences >= 1,
            "decode.latent_beam and batch_sentences must be at least 1"
        );
        let mut model = self.model.clone();
        if model.vocab_size == 0 {
            model.vocab_size = 300; // checked for real once the tokenizer is known
        }
        model.validate()?;
        let longest = self.data.filters.max_len as i64 + 1;
        let needed = match model.length.rule {
            emvq_latent::LengthRule::T2t => model.round_up(2 * longest),
            _ => model.round_up(longest),
        };
        ensure!(
            model.max_positions >= needed,
            "model.max_positions ({}) must hold the padded targets of data.filters.max_len + EOS ({needed})",
            model.max_positions
        );
        Ok(())
    }

    fn adam(&self) -> AdamConfig {
        AdamConfig {
            beta1: self.train.adam_beta1,
            beta2: self.train.adam_beta2,
            eps: self.train.adam_eps,
            weight_decay: 0.0,
        }
    }

    fn schedule(&self) -> LrSchedule {
        LrSchedule {
            scale: self.train.lr_scale,
            warmup_steps: self.train.warmup_steps,
            d_model: self.model.d_model,
        }
    }
}

/// `emvq train-nat`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    #[arg(long, default_value = "configs/multi30k/nat_em.toml")]
    pub config: PathBuf,
    /// Run name (default: the config's `name`).
    #[arg(long)]
    pub name: Option<String>,
    /// Continue from the newest checkpoint of the run.
    #[arg(long)]
    pub resume: bool,
    /// Device (overrides the config's `device`).
    #[arg(long)]
    pub device: Option<DeviceSpec>,
    /// Override `train.max_steps`.
    #[arg(long)]
    pub max_steps: Option<i64>,
    /// Override `train.max_minutes`.
    #[arg(long)]
    pub max_minutes: Option<f64>,
    /// Override `data.train_dir` (e.g. another distilled corpus).
    #[arg(long)]
    pub train_dir: Option<PathBuf>,
    /// Override `teacher` (the run whose tokenizer the NAT uses).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Folder holding the run directories.
    #[arg(long, default_value = "runs")]
    pub runs: PathBuf,
}

/// Token rows (each ending in EOS) → `[batch, max_len]` padded with `pad`.
pub fn pad_rows(rows: &[&[u32]], pad: i64, device: Device) -> Tensor {
    let width = rows.iter().map(|r| r.len()).max().unwrap_or(1).max(1);
    let mut flat = Vec::with_capacity(rows.len() * width);
    for row in rows {
        flat.extend(row.iter().map(|&t| t as i64));
        flat.extend(std::iter::repeat_n(pad, width - row.len()));
    }
    Tensor::from_slice(&flat)
        .view([rows.len() as i64, width as i64])
        .to_device(device) // [batch, width]
}

/// One-pass translations of `sources` (token ids ending in EOS; longer ones
/// cut to the model's `max_positions`), in batches of `batch` sentences of
/// similar length; output ids without EOS, in input order.
pub fn nat_translate_ids(
    model: &LatentNat,
    sources: &[Vec<u32>],
    settings: &NatDecode,
    batch: usize,
    device: Device,
) -> Result<Vec<Vec<u32>>> {
    let cfg = model.config();
    let max_len = cfg.max_positions as usize;
    let mut order: Vec<usize> = (0..sources.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sources[i].len()));
    let mut out = vec![Vec::new(); sources.len()];
    for chunk in order.chunks(batch.max(1)) {
        let rows: Vec<Vec<u32>> = chunk
            .iter()
            .map(|&i| {
                let mut row = sources[i].clone();
                if row.len() > max_len {
                    row.truncate(max_len - 1);
                    row.push(EOS_ID);
                }
                if row.is_empty() {
                    row.push(EOS_ID);
                }
                row
            })
            .collect();
        let refs: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
        let src = pad_rows(&refs, cfg.pad_id, device);
        for (&i, tokens) in chunk.iter().zip(emvq_latent::NatModel::translate(model, &src, settings)?) {
            out[i] = tokens.into_iter().map(|t| t as u32).collect();
        }
    }
    Ok(out)
}

/// Validation data and what scoring it needs.
struct Validation {
    device: Device,
    batches: Vec<(Tensor, Tensor)>,
    sources: Vec<Vec<u32>>,
    bleu: Bleu,
}

impl Validation {
    /// Token-weighted loss parts over the validation batches (no dropout,
    /// p = 1, EM's exact posterior as the latent target), codebook usage,
    /// and one-pass greedy BLEU.
    fn run(
        &self,
        kind: &str,
        step: i64,
        model: &LatentNat,
        tokenizer: &SubwordTokenizer,
        config: &NatRunConfig,
    ) -> Result<serde_json::Value> {
        let start = Instant::now();
        let _guard = tch::no_grad_guard();
        let mut sums: BTreeMap<&'static str, f64> = BTreeMap::new();
        let (mut tokens, mut total) = (0.0, 0.0);
        let bn = model.bottleneck();
        let mut usage = CodeUsage::new(bn.slices(), bn.codebook_size());
        for (src, tgt) in &self.batches {
            let (loss, codes) = model.loss_with_codes(src, tgt, step, false)?;
            for (name, v) in &loss.metrics {
                *sums.entry(name).or_default() += v * loss.tokens;
            }
            total += loss.total.double_value(&[]) * loss.tokens;
            tokens += loss.tokens;
            if let Some(c) = codes {
                usage.add_codes(&c.codes)?;
            }
        }
        let norm = tokens.max(1.0);
        let mut record = serde_json::json!({
            "kind": kind, "step": step, "loss": total / norm, "tokens": tokens,
        });
        for (name, v) in sums {
            record[name] = serde_json::json!(v / norm);
        }
        record["ppl"] = serde_json::json!((record["token_nll"].as_f64().unwrap_or(0.0)).exp());
        if usage.vectors() > 0.0 {
            record["code_perplexity"] = serde_json::json!(usage.perplexity());
            record["codes_used"] = serde_json::json!(usage
                .dead_count()
                .iter()
                .map(|&d| bn.codebook_size() as usize - d)
                .collect::<Vec<_>>());
        }
        if config.train.eval_bleu {
            let out = nat_translate_ids(
                model,
                &self.sources,
                &config.decode.nat(),
                config.decode.batch_sentences,
                self.device,
            )?;
            let hyps = tokenizer.decode_batch(&out)?;
            record["bleu_greedy"] = serde_json::json!(self.bleu.corpus_score(&hyps)?.score);
        }
        record["seconds"] = serde_json::json!(start.elapsed().as_secs_f64());
        Ok(record)
    }
}

fn log_valid(run: &RunDir, record: &serde_json::Value) -> Result<()> {
    run.log_metrics(record)?;
    let f = |k: &str| record[k].as_f64().map_or("-".to_string(), |v| format!("{v:.4}"));
    tracing::info!(
        "{} step {}: loss {}, token nll {}, latent CE {}, greedy BLEU {}, code perplexity {}, codes used {} ({} s)",
        record["kind"].as_str().unwrap_or("valid"),
        record["step"],
        f("loss"),
        f("token_nll"),
        f("latent_ce"),
        f("bleu_greedy"),
        record["code_perplexity"],
        record["codes_used"],
        f("seconds"),
    );
    Ok(())
}

/// Loads the config, applies the command-line overrides and validates.
fn load_config(args: &TrainArgs) -> Result<NatRunConfig> {
    let mut config: NatRunConfig = load_toml(&args.config)?;
    if let Some(name) = &args.name {
        config.name = name.clone();
    }
    if let Some(device) = args.device {
        config.device = device;
    }
    if let Some(steps) = args.max_steps {
        config.train.max_steps = Some(steps);
    }
    if let Some(minutes) = args.max_minutes {
        config.train.max_minutes = Some(minutes);
    }
    if let Some(dir) = &args.train_dir {
        config.data.train_dir = Some(dir.clone());
    }
    if let Some(teacher) = &args.teacher {
        config.teacher = teacher.clone();
    }
    config
        .validate()
        .with_context(|| format!("config {}", args.config.display()))?;
    Ok(config)
}

/// Trains (or resumes) a NAT; returns the run directory.
pub fn train(args: &TrainArgs) -> Result<PathBuf> {
    // A plain-NAT config (no latents) has its own trainer.
    if crate::nat_run::config_file_kind(&args.config)? == crate::nat_run::RunKind::PlainNat {
        return crate::nat_run::train_plain(args);
    }
    let mut config = load_config(args)?;
    let run = RunDir::create(&args.runs, "nat", &config.name)?;
    emvq_tensor::logging::init_logging(Some(&run.log_path()))?;
    let keeper_probe = CheckpointKeeper::new(&run.checkpoint_dir(), 1)?;
    if !keeper_probe.steps()?.is_empty() && !args.resume {
        bail!(
            "run {} already has checkpoints: pass --resume to continue it, or --name for a new run",
            run.path().display()
        );
    }
    set_threads(config.threads);
    crate::teacher::reuse_freed_memory();

    // The teacher's vocabulary: its tokenizer is copied into the run.
    let teacher_tokenizer = SubwordTokenizer::load(&config.teacher)
        .with_context(|| format!("teacher = {:?}: no tokenizer", config.teacher.display().to_string()))?;
    if !run.path().join("tokenizer.json").is_file() {
        teacher_tokenizer.save(run.path())?;
    }
    let cwd = std::env::current_dir()?;
    let data_dir = config.data.resolve_data_dir(&cwd)?;
    let prepared = prepare_translation(&config.data, &data_dir, Some(run.path()))?;
    ensure!(
        prepared.tokenizer.vocab_size() == teacher_tokenizer.vocab_size(),
        "the run's tokenizer ({} symbols) is not the teacher's ({})",
        prepared.tokenizer.vocab_size(),
        teacher_tokenizer.vocab_size()
    );
    if config.model.vocab_size == 0 {
        config.model.vocab_size = prepared.tokenizer.vocab_size() as i64;
    }
    ensure!(
        config.model.vocab_size >= prepared.tokenizer.vocab_size() as i64,
        "model.vocab_size = {} is smaller than the tokenizer's {}",
        config.model.vocab_size,
        prepared.tokenizer.vocab_size()
    );
    config.model.validate()?;
    if args.resume && run.config_path().is_file() {
        let saved: NatRunConfig = run.load_config()?;
        ensure!(
            saved.model == config.model && saved.data == config.data && saved.seed == config.seed,
            "--resume: the model, data or seed of {} differ from the run's saved config {}",
            args.config.display(),
            run.config_path().display()
        );
    }
    run.save_config(&config)?;
    let device = config.device.resolve()?;
    tracing::info!(
        "NAT {} ({:?} bottleneck, {} bits × {} slices, k = {}, length {:?}) on {device:?}, {} LibTorch threads",
        config.name,
        config.model.bottleneck.kind,
        config.model.bottleneck.bits,
        config.model.bottleneck.slices,
        config.model.compress_steps,
        config.model.length.rule,
        tch::get_num_threads()
    );

    tch::manual_seed(config.seed as i64);
    let vs = VarStore::new(device);
    let model = LatentNat::new(vs.root(), &config.model)?;
    let mut opt = Adam::new(&vs, &config.adam())?;
    let params = emvq_tensor::params::count_parameters(&vs);
    tracing::info!("{} trainable parameters", params.trainable);
    let mut keeper = CheckpointKeeper::new(&run.checkpoint_dir(), config.train.keep_last)?;
    let mut position = DataPosition::default();
    let mut seconds_before = 0.0;
    let resumed = match (args.resume, keeper.latest()?) {
        (true, Some(path)) => {
            let ckpt = load_training_checkpoint(&path, &vs, &mut opt)?;
            position = serde_json::from_str(ckpt.meta(POSITION_KEY, &path)?)
                .with_context(|| format!("{}: bad {POSITION_KEY}", path.display()))?;
            seconds_before = parse_meta(&ckpt, SECONDS_KEY, &path)?;
            tracing::info!(
                "resumed from {} (step {}, {:.0} s trained)",
                path.display(),
                opt.step_count(),
                seconds_before
            );
            true
        }
        _ => false,
    };
    if config.init_from_teacher && !resumed {
        let weights = teacher_weights(&config.teacher)?;
        let copied = init_from_teacher(&vs, &Checkpoint::load(&weights)?)?;
        tracing::info!("initialised {} tensors from {}", copied.len(), weights.display());
    }

    let train_batcher = Batcher::new(prepared.train.encoded.clone(), config.data.batch_config(true))?;
    let valid_batcher = Batcher::new(prepared.valid.encoded.clone(), config.data.batch_config(false))?;
    let validation = Validation {
        device,
        batches: valid_batcher.epoch(0).map(|b| batch_tensors(&b, device)).collect(),
        sources: prepared.valid.encoded.source.clone(),
        bleu: Bleu::new(
            BleuConfig::default(),
            &[prepared
                .valid
                .encoded
                .line_index
                .iter()
                .map(|&i| prepared.valid.raw.target[i].clone())
                .collect::<Vec<_>>()],
        )?,
    };
    tracing::info!(
        "{} training pairs{} in {} batches of ≤ {} tokens per epoch",
        prepared.train.encoded.len(),
        config
            .data
            .train_dir
            .as_ref()
            .map_or(String::new(), |d| format!(" from {}", d.display())),
        train_batcher.num_batches(),
        config.data.max_tokens
    );

    let schedule = config.schedule();
    let config_text = toml::to_string(&config)?;
    let budget = config.train.max_minutes.map(|m| m * 60.0);
    let max_steps = config.train.max_steps;
    let bar = emvq_tensor::logging::progress_bar(max_steps.unwrap_or(0) as u64, "train-nat");
    bar.set_position(opt.step_count() as u64);
    let bn = model.bottleneck();
    let mut usage = CodeUsage::new(bn.slices(), bn.codebook_size());
    let save = |keeper: &mut CheckpointKeeper,
                opt: &Adam,
                val_loss: Option<f64>,
                position: DataPosition,
                seconds: f64|
     -> Result<()> {
        let meta = BTreeMap::from([
            (POSITION_KEY.to_string(), serde_json::to_string(&position)?),
            (SECONDS_KEY.to_string(), format!("{seconds:e}")),
            (CONFIG_KEY.to_string(), config_text.clone()),
        ]);
        keeper.save(&vs, opt, val_loss, &meta)?;
        Ok(())
    };

    let start = Instant::now();
    let elapsed = |start: &Instant| seconds_before + start.elapsed().as_secs_f64();
    let mut stream = train_batcher.stream(position);
    let (mut window_tokens, mut window_start) = (0.0, Instant::now());
    let mut window: BTreeMap<&'static str, (f64, f64)> = BTreeMap::new();
    let (mut last_eval, mut last_ckpt) = (-1i64, -1i64);
    let mut last_val: Option<f64> = None;
    loop {
        let step = opt.step_count();
        if max_steps.is_some_and(|m| step >= m) || budget.is_some_and(|b| elapsed(&start) >= b) {
            break;
        }
        let (src, tgt) = batch_tensors(&stream.next().expect("endless").1, device);
        position = stream.position();

        // One optimiser step; every random draw (dropout, gold mixing, EM
        // samples) comes from the (seed, step) generator: exact resume.
        let step = step + 1;
        seed_all(step_seed(config.seed, step));
        opt.zero_grad();
        let (loss, codes) = model.loss_with_codes(&src, &tgt, step, true)?;
        loss.total.backward();
        let clip = if config.train.clip_norm > 0.0 { config.train.clip_norm } else { f64::INFINITY };
        let grad_norm = opt.clip_grad_norm(clip)?.double_value(&[]);
        let lr = schedule.lr(step);
        opt.step(lr)?;
        let total = loss.total.double_value(&[]);
        ensure!(total.is_finite(), "step {step}: the loss is {total}");
        if let Some(c) = &codes {
            usage.add_codes(&c.codes)?;
        }
        for (name, v) in loss.metrics.iter().chain([&("loss", total)]) {
            let e = window.entry(name).or_default();
            e.0 += v * loss.tokens;
            e.1 += loss.tokens;
        }
        window_tokens += loss.tokens;

        let seconds = elapsed(&start);
        let tok_per_s = window_tokens / window_start.elapsed().as_secs_f64().max(1e-9);
        let remaining = match (max_steps, budget) {
            (Some(m), b) => {
                let rate = step as f64 / seconds.max(1e-9);
                let by_steps = (m - step) as f64 / rate.max(1e-9);
                b.map_or(by_steps, |b| by_steps.min(b - seconds))
            }
            (None, Some(b)) => b - seconds,
            (None, None) => unreachable!("validated"),
        };
        if max_steps.is_none() {
            let rate = step as f64 / seconds.max(1e-9);
            bar.set_length(step as u64 + (remaining.max(0.0) * rate) as u64);
        }
        bar.set_position(step as u64);
        bar.set_message(format!("loss {total:.3} | {tok_per_s:.0} tok/s | ETA {:.0} s", remaining.max(0.0)));
        if step % config.train.log_every == 0 {
            let mut record = serde_json::json!({
                "kind": "train", "step": step, "lr": lr, "grad_norm": grad_norm,
                "tokens_per_s": tok_per_s, "epoch": position.epoch, "seconds": seconds,
            });
            for (name, (sum, n)) in &window {
                record[*name] = serde_json::json!(sum / n.max(1.0));
            }
            if usage.vectors() > 0.0 {
                record["code_perplexity"] = serde_json::json!(usage.perplexity());
                record["dead_codes"] = serde_json::json!(usage.dead_count());
            }
            run.log_metrics(&record)?;
            bar.suspend(|| {
                tracing::info!(
                    "step {step} loss {:.4} token nll {:.4} latent CE {} code ppl {} |g| {grad_norm:.2} {tok_per_s:.0} tok/s {seconds:.0} s",
                    record["loss"].as_f64().unwrap_or(f64::NAN),
                    record["token_nll"].as_f64().unwrap_or(f64::NAN),
                    record["latent_ce"].as_f64().map_or("-".into(), |v| format!("{v:.3}")),
                    record["code_perplexity"],
                )
            });
            window.clear();
            usage.reset();
            window_tokens = 0.0;
            window_start = Instant::now();
        }
        if step % config.train.eval_every == 0 {
            let record = bar.suspend(|| validation.run("valid", step, &model, &prepared.tokenizer, &config))?;
            log_valid(&run, &record)?;
            last_val = record["loss"].as_f64();
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
        let record = validation.run("valid", step, &model, &prepared.tokenizer, &config)?;
        log_valid(&run, &record)?;
        last_val = record["loss"].as_f64();
    }
    if last_ckpt != step && keeper.latest()? != Some(keeper.step_path(step)) {
        save(&mut keeper, &opt, last_val, position, elapsed(&start))?;
    }
    tracing::info!(
        "trained {step} steps in {:.0} s; best validation loss {:?}",
        elapsed(&start),
        keeper.best_loss()
    );

    // The final model: the average of the last N checkpoints (codebooks
    // and their EMA statistics included).
    let paths = keeper.last_n(config.train.average_last)?;
    let mut final_ckpt = average_checkpoints(&paths)?;
    final_ckpt.metadata.insert(STEP_KEY.into(), step.to_string());
    final_ckpt.metadata.insert(CONFIG_KEY.into(), config_text.clone());
    let model_path = run.path().join(MODEL_FILE);
    final_ckpt.save(&model_path)?;
    final_ckpt.restore_into(&vs, &model_path)?;
    let record = validation.run("final", step, &model, &prepared.tokenizer, &config)?;
    log_valid(&run, &record)?;
    tracing::info!("final model ({} checkpoints averaged) → {}", paths.len(), model_path.display());
    Ok(run.path().to_path_buf())
}

/// The teacher's final weights (`model.safetensors`), else its best
/// checkpoint.
pub(crate) fn teacher_weights(teacher: &Path) -> Result<PathBuf> {
    let keeper = CheckpointKeeper::new(&teacher.join("checkpoints"), 1)?;
    [teacher.join(MODEL_FILE), keeper.best_path()]
        .into_iter()
        .find(|p| p.is_file())
        .with_context(|| format!("teacher run {} has no model.safetensors or best checkpoint", teacher.display()))
}

/// A trained NAT ready to decode.
#[allow(dead_code)]
pub struct LoadedNat {
    pub config: NatRunConfig,
    pub tokenizer: SubwordTokenizer,
    pub model: LatentNat,
    #[allow(dead_code)]
    pub vs: VarStore,
    pub device: Device,
    pub weights: PathBuf,
}

/// Loads a NAT run: `model.safetensors` when training finished, else
/// `checkpoints/best.safetensors`, else the newest step checkpoint.
#[allow(dead_code)] // for the commands that decode NAT runs (translate, eval)
pub fn load_nat(run_dir: &Path, device: Option<DeviceSpec>) -> Result<LoadedNat> {
    let run = RunDir::open(run_dir)?;
    let config: NatRunConfig = run.load_config()?;
    set_threads(config.threads);
    load_nat_unthreaded(run_dir, device)
}

/// [`load_nat`] without setting LibTorch's thread counts (which can be set
/// only once per process, e.g. when a teacher was loaded first).
pub fn load_nat_unthreaded(run_dir: &Path, device: Option<DeviceSpec>) -> Result<LoadedNat> {
    let run = RunDir::open(run_dir)?;
    let config: NatRunConfig = run.load_config()?;
    let tokenizer = SubwordTokenizer::load(run_dir)?;
    let device = device.unwrap_or(config.device).resolve()?;
    let vs = VarStore::new(device);
    let model = LatentNat::new(vs.root(), &config.model)?;
    let keeper = CheckpointKeeper::new(&run.checkpoint_dir(), 1)?;
    let weights = [run_dir.join(MODEL_FILE), keeper.best_path()]
        .into_iter()
        .find(|p| p.is_file())
        .or(keeper.latest()?)
        .with_context(|| format!("run {} has no model or checkpoint", run_dir.display()))?;
    Checkpoint::load(&weights)?.restore_into(&vs, &weights)?;
    Ok(LoadedNat { config, tokenizer, model, vs, device, weights })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_nat_configs_parse_and_validate() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for file in ["nat_em", "nat_vq", "nat_em_nc4", "nat_em_paper"] {
            let path = root.join(format!("configs/multi30k/{file}.toml"));
            let config: NatRunConfig = load_toml(&path).unwrap();
            config.validate().unwrap_or_else(|e| panic!("{file}: {e:#}"));
        }
        let paper: NatRunConfig = load_toml(&root.join("configs/multi30k/nat_em_paper.toml")).unwrap();
        assert_eq!(paper.model.length.rule, emvq_latent::LengthRule::T2t);
        assert_eq!(paper.model.predictor_layers, paper.model.decoder_layers);
        assert_eq!(paper.model.bottleneck.bits, 12);
    }
}
