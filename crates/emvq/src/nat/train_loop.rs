//! The training loop of `emvq train-nat`, shared by the latent-Transformer
//! NAT (`crate::nat`, [`emvq_latent::LatentNat`]) and the plain NAT baseline
//! (`crate::nat_run::train_plain`, [`emvq_latent::PlainNat`]).
//!
//! Both read a [`NatRunConfigOf`] (the same keys, each with its own
//! `[model]`), train into `runs/nat/<name>/` with one layout (resolved
//! `config.toml`, the teacher's `tokenizer.json`, `metrics.jsonl`, `log.txt`,
//! `checkpoints/` with exact resume: model, codebook statistics, Adam
//! moments, step, data position, elapsed time; at the end `model.safetensors`,
//! the average of the last `average_last` checkpoints) and step a model
//! behind [`NatModel`]. What differs is the [`NatKind`] of the config's
//! `[model]` (its checks, the model it builds) and the [`NatHook`] of the
//! built model (the latent NAT counts its codes for codebook perplexity and
//! dead codes in the training and validation records).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use emvq_data::{
    prepare_translation, Batcher, DataPosition, SubwordTokenizer, TranslationDataConfig,
};
use emvq_latent::{init_from_teacher, NatLoss, NatModel, PREDICTOR_FROM_TEACHER_DECODER};
use emvq_tensor::{load_toml, seed::seed_all, Checkpoint, RunDir};
use emvq_transformer::{step_seed, Adam, AdamConfig, CheckpointKeeper, LrSchedule};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tch::{nn, nn::VarStore, Tensor};

use super::{teacher_weights, NatDecodeSettings, NatRunConfigOf, TrainArgs};
use crate::nat_run::translate_batched;
use crate::teacher::run_steps::{
    adam_and_schedule, advance_bar, check_resumed_config, check_train_limits, refuse_overwrite,
    resume_latest, RunWriter, ValidSet,
};
use crate::teacher::{batch_tensors, set_threads, MODEL_FILE};

/// What a NAT's `[model]` table brings to the shared trainer.
pub trait NatKind: Clone + PartialEq + std::fmt::Debug + Serialize + DeserializeOwned {
    /// Label of the training progress bar.
    const BAR: &'static str;
    /// `vocab_size` (0: the tokenizer's size, filled in by the trainer).
    fn vocab_size_mut(&mut self) -> &mut i64;
    fn d_model(&self) -> i64;
    /// `(max_positions, pad_id)`: how sources are cut and padded.
    fn positions_and_pad(&self) -> (i64, i64);
    /// The model's own checks (vocabulary size known).
    fn validate_model(&self) -> Result<()>;
    /// Checks that padded sentences of `data` fit the model's positions.
    fn check_lengths(&self, data: &TranslationDataConfig) -> Result<()>;
    /// The log line that opens training of run `name`.
    fn describe(&self, name: &str) -> String;
    /// Builds the model under `root`.
    fn build(&self, root: nn::Path) -> Result<Box<dyn NatHook>>;
}

/// The [`NatKind`] methods that read the `[model]` fields both NAT configs
/// name alike (`vocab_size`, `d_model`, `max_positions`, `pad_id`) and call
/// the config's own `validate`.
macro_rules! nat_kind_common_fields {
    () => {
        fn vocab_size_mut(&mut self) -> &mut i64 {
            &mut self.vocab_size
        }

        fn d_model(&self) -> i64 {
            self.d_model
        }

        fn positions_and_pad(&self) -> (i64, i64) {
            (self.max_positions, self.pad_id)
        }

        fn validate_model(&self) -> anyhow::Result<()> {
            Ok(self.validate()?)
        }
    };
}
pub(crate) use nat_kind_common_fields;

/// A built NAT in the shared loop: the model, and what it counts besides
/// the loss.
pub trait NatHook {
    fn model(&self) -> &dyn NatModel;

    /// The loss of one batch (`train`: a training step, else validation); a
    /// hook may count statistics of the batch into the matching record.
    fn loss(&mut self, src: &Tensor, tgt: &Tensor, step: i64, train: bool) -> Result<NatLoss> {
        Ok(self.model().loss(src, tgt, step, train)?)
    }

    /// Adds what was counted since the last call to a `train` (else a
    /// validation) record, then counts afresh.
    fn finish_record(&mut self, _record: &mut serde_json::Value, _train: bool) -> Result<()> {
        Ok(())
    }
}

impl<M: NatKind> NatRunConfigOf<M> {
    /// Checks what serde cannot (the model with a stand-in vocabulary size
    /// until the tokenizer is known).
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
        ensure!(
            t.keep_last >= 1 && (1..=t.keep_last).contains(&t.average_last),
            "train.keep_last ≥ 1 and 1 ≤ average_last ≤ keep_last"
        );
        ensure!(
            self.init_from_teacher || !self.init_predictor_from_teacher,
            "init_predictor_from_teacher = true needs init_from_teacher = true"
        );
        ensure!(
            self.decode.latent_beam >= 1 && self.decode.batch_sentences >= 1,
            "decode.latent_beam and batch_sentences must be at least 1"
        );
        let mut model = self.model.clone();
        if *model.vocab_size_mut() == 0 {
            *model.vocab_size_mut() = 300; // checked for real once the tokenizer is known
        }
        model.validate_model()?;
        model.check_lengths(&self.data)
    }

    /// Adam and the learning-rate schedule of `[train]`.
    fn adam_and_schedule(&self) -> (AdamConfig, LrSchedule) {
        let t = &self.train;
        let betas_eps = [t.adam_beta1, t.adam_beta2, t.adam_eps];
        adam_and_schedule(betas_eps, t.lr_scale, t.warmup_steps, self.model.d_model())
    }

    /// Loads the config of `args`, applies the command-line overrides and
    /// validates.
    fn load(args: &TrainArgs) -> Result<Self> {
        let mut config: Self = load_toml(&args.config)?;
        let t = &mut config.train;
        let limits = (&mut t.max_steps, &mut t.max_minutes);
        args.run.apply(&mut config.name, &mut config.device, limits);
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
}

/// A NAT validation pass: token-weighted loss parts over the validation
/// batches (no dropout; for the latent NAT p = 1 and EM's exact posterior as
/// the latent target), what the hook counted, and one-pass BLEU.
fn validate(
    valid: &ValidSet,
    kind: &str,
    step: i64,
    hook: &mut dyn NatHook,
    tokenizer: &SubwordTokenizer,
    (decode, eval_bleu, shape): (&NatDecodeSettings, bool, (i64, i64)),
) -> Result<serde_json::Value> {
    let start = Instant::now();
    let _guard = tch::no_grad_guard();
    let (mut sums, mut tokens) = (BTreeMap::<&str, f64>::new(), 0.0);
    for (src, tgt) in &valid.batches {
        let loss = hook.loss(src, tgt, step, false)?;
        for (name, v) in loss
            .metrics
            .iter()
            .chain([&("loss", loss.total.double_value(&[]))])
        {
            *sums.entry(name).or_default() += v * loss.tokens;
        }
        tokens += loss.tokens;
    }
    let mut record = serde_json::json!({ "kind": kind, "step": step, "tokens": tokens });
    for (name, v) in sums {
        record[name] = serde_json::json!(v / tokens.max(1.0));
    }
    hook.finish_record(&mut record, false)?;
    if eval_bleu {
        let (max_positions, pad) = shape;
        let out = translate_batched(
            hook.model(),
            &decode.nat(),
            (max_positions, pad, valid.device),
            &valid.sources,
            decode.batch_sentences,
        )?;
        let hyps = tokenizer.decode_batch(&out)?;
        record["bleu_greedy"] = serde_json::json!(valid.bleu.corpus_score(&hyps)?.score);
    }
    record["seconds"] = serde_json::json!(start.elapsed().as_secs_f64());
    Ok(record)
}

/// `key value, …` of a metrics record (its numbers to 4 decimals), without
/// `kind` and `step`.
fn summary(record: &serde_json::Value) -> String {
    let Some(fields) = record.as_object() else {
        return record.to_string();
    };
    fields
        .iter()
        .filter(|(k, _)| *k != "kind" && *k != "step")
        .map(|(k, v)| match v.as_f64() {
            Some(x) if v.is_f64() => format!("{k} {x:.4}"),
            _ => format!("{k} {v}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn log_valid(run: &RunDir, record: &serde_json::Value) -> Result<()> {
    run.log_metrics(record)?;
    tracing::info!(
        "{} step {}: {}",
        record["kind"].as_str().unwrap_or("valid"),
        record["step"],
        summary(record)
    );
    Ok(())
}

/// Trains (or resumes) the NAT of `args.config`, whose `[model]` is an `M`;
/// returns the run directory.
pub fn train<M: NatKind>(args: &TrainArgs) -> Result<PathBuf> {
    let mut config = NatRunConfigOf::<M>::load(args)?;
    let run = RunDir::create(&args.runs, "nat", &config.name)?;
    emvq_tensor::logging::init_logging(Some(&run.log_path()))?;
    refuse_overwrite(&run, args.run.resume)?;
    set_threads(config.threads);
    crate::teacher::reuse_freed_memory();

    // The teacher's vocabulary: its tokenizer is copied into the run.
    let teacher_tokenizer = SubwordTokenizer::load(&config.teacher).with_context(|| {
        format!(
            "teacher = {:?}: no tokenizer",
            config.teacher.display().to_string()
        )
    })?;
    if !run.path().join("tokenizer.json").is_file() {
        teacher_tokenizer.save(run.path())?;
    }
    let cwd = std::env::current_dir()?;
    let data_dir = config.data.resolve_data_dir(&cwd)?;
    let prepared = prepare_translation(&config.data, &data_dir, Some(run.path()))?;
    let vocab = prepared.tokenizer.vocab_size();
    ensure!(
        vocab == teacher_tokenizer.vocab_size(),
        "the run's tokenizer ({vocab} symbols) is not the teacher's ({})",
        teacher_tokenizer.vocab_size()
    );
    let vocab_size = config.model.vocab_size_mut();
    if *vocab_size == 0 {
        *vocab_size = vocab as i64;
    }
    ensure!(
        *vocab_size >= vocab as i64,
        "model.vocab_size = {vocab_size} is smaller than the tokenizer's {vocab}"
    );
    config.model.validate_model()?;
    check_resumed_config(
        &run,
        args.run.resume,
        &args.config,
        |saved: &NatRunConfigOf<M>| {
            saved.model == config.model && saved.data == config.data && saved.seed == config.seed
        },
    )?;
    run.save_config(&config)?;
    let device = config.device.resolve()?;
    tracing::info!(
        "{} on {device:?}, {} LibTorch threads",
        config.model.describe(&config.name),
        tch::get_num_threads()
    );

    tch::manual_seed(config.seed as i64);
    let vs = VarStore::new(device);
    let mut hook = config.model.build(vs.root())?;
    let (adam, schedule) = config.adam_and_schedule();
    let mut opt = Adam::new(&vs, &adam)?;
    let params = emvq_tensor::params::count_parameters(&vs);
    tracing::info!("{} trainable parameters", params.trainable);
    let mut keeper = CheckpointKeeper::new(&run.checkpoint_dir(), config.train.keep_last)?;
    let mut position = DataPosition::default();
    let mut seconds_before = 0.0;
    let resumed = if args.run.resume {
        resume_latest(&keeper, &vs, &mut opt)?
    } else {
        None
    };
    if let Some(r) = &resumed {
        (position, seconds_before) = (r.position, r.seconds);
        tracing::info!(
            "resumed from {} (step {}, {:.0} s trained)",
            r.path.display(),
            opt.step_count(),
            seconds_before
        );
    }
    if config.init_from_teacher && resumed.is_none() {
        let weights = teacher_weights(&config.teacher)?;
        let renames: &[(&str, &str)] = if config.init_predictor_from_teacher {
            &PREDICTOR_FROM_TEACHER_DECODER
        } else {
            &[]
        };
        let copied = init_from_teacher(&vs, &Checkpoint::load(&weights)?, renames)?;
        ensure!(
            !config.init_predictor_from_teacher
                || copied.iter().any(|n| n.starts_with("latent_predictor.")),
            "init_predictor_from_teacher: no latent-predictor tensor matches the teacher's \
             decoder in {} (a plain NAT has no predictor; the layers' sizes must match)",
            weights.display()
        );
        tracing::info!(
            "initialised {} tensors from {}",
            copied.len(),
            weights.display()
        );
    }

    let train_batcher = Batcher::new(
        prepared.train.encoded.clone(),
        config.data.batch_config(true),
    )?;
    let validation = ValidSet::new(&prepared, &config.data, device)?;
    let scoring = (
        &config.decode,
        config.train.eval_bleu,
        config.model.positions_and_pad(),
    );
    // A validation pass into metrics.jsonl and the log; its loss.
    let valid_pass = |kind: &str, step: i64, hook: &mut dyn NatHook| -> Result<Option<f64>> {
        let record = validate(&validation, kind, step, hook, &prepared.tokenizer, scoring)?;
        log_valid(&run, &record)?;
        Ok(record["loss"].as_f64())
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

    let writer = RunWriter {
        vs: &vs,
        config_text: toml::to_string(&config)?,
    };
    let budget = config.train.max_minutes.map(|m| m * 60.0);
    let max_steps = config.train.max_steps;
    let bar = emvq_tensor::logging::progress_bar(max_steps.unwrap_or(0) as u64, M::BAR);
    bar.set_position(opt.step_count() as u64);
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
        let (src, tgt) = batch_tensors(&stream.next().expect("endless").1, device); // [batch, len] each
        position = stream.position();

        // One optimiser step; every random draw (dropout, gold mixing, EM
        // samples) comes from the (seed, step) generator: exact resume.
        let step = step + 1;
        seed_all(step_seed(config.seed, step));
        opt.zero_grad();
        let loss = hook.loss(&src, &tgt, step, true)?;
        loss.total.backward();
        let clip = if config.train.clip_norm > 0.0 {
            config.train.clip_norm
        } else {
            f64::INFINITY
        };
        let grad_norm = opt.clip_grad_norm(clip)?.double_value(&[]);
        let lr = schedule.lr(step);
        opt.step(lr)?;
        let total = loss.total.double_value(&[]);
        ensure!(total.is_finite(), "step {step}: the loss is {total}");
        for (name, v) in loss.metrics.iter().chain([&("loss", total)]) {
            let e = window.entry(name).or_default();
            e.0 += v * loss.tokens;
            e.1 += loss.tokens;
        }
        window_tokens += loss.tokens;

        let seconds = elapsed(&start);
        let tok_per_s = window_tokens / window_start.elapsed().as_secs_f64().max(1e-9);
        let remaining = advance_bar(&bar, step, seconds, max_steps, budget);
        bar.set_message(format!(
            "loss {total:.3} | {tok_per_s:.0} tok/s | ETA {:.0} s",
            remaining.max(0.0)
        ));
        if step % config.train.log_every == 0 {
            let mut record = serde_json::json!({
                "kind": "train", "step": step, "lr": lr, "grad_norm": grad_norm,
                "tokens_per_s": tok_per_s, "epoch": position.epoch, "seconds": seconds,
            });
            for (name, (sum, n)) in &window {
                record[*name] = serde_json::json!(sum / n.max(1.0));
            }
            hook.finish_record(&mut record, true)?;
            run.log_metrics(&record)?;
            bar.suspend(|| tracing::info!("step {step}: {}", summary(&record)));
            window.clear();
            window_tokens = 0.0;
            window_start = Instant::now();
        }
        if step % config.train.eval_every == 0 {
            last_val = bar.suspend(|| valid_pass("valid", step, hook.as_mut()))?;
            last_eval = step;
        }
        if step % config.train.checkpoint_every == 0 {
            let val = if last_eval == step { last_val } else { None };
            writer.save(&mut keeper, &opt, val, position, elapsed(&start))?;
            last_ckpt = step;
        }
    }
    bar.finish_and_clear();
    let step = opt.step_count();
    if step == 0 {
        bail!("no training step was taken (the budget was already spent)");
    }
    if last_eval != step {
        last_val = valid_pass("valid", step, hook.as_mut())?;
    }
    if last_ckpt != step && keeper.latest()? != Some(keeper.step_path(step)) {
        writer.save(&mut keeper, &opt, last_val, position, elapsed(&start))?;
    }
    tracing::info!(
        "trained {step} steps in {:.0} s; best validation loss {:?}",
        elapsed(&start),
        keeper.best_loss()
    );

    // The final model: the average of the last N checkpoints (codebooks
    // and their EMA statistics included).
    let model_path = run.path().join(MODEL_FILE);
    let averaged = writer.write_final(&keeper, config.train.average_last, step, &model_path)?;
    valid_pass("final", step, hook.as_mut())?;
    tracing::info!(
        "final model ({} checkpoints averaged) → {}",
        averaged,
        model_path.display()
    );
    Ok(run.path().to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_name_every_field_but_kind_and_step() {
        let record = serde_json::json!({
            "kind": "valid", "step": 4, "loss": 1.234567, "tokens": 10.0, "codes_used": [3, 4],
        });
        assert_eq!(
            summary(&record),
            "codes_used [3,4], loss 1.2346, tokens 10.0000"
        );
    }
}
