//! `emvq train-nat --config configs/multi30k/nat_plain.toml`: training of
//! the plain NAT baseline ([`emvq_latent::PlainNat`], Gu et al. 2018, arXiv
//! 1711.02281, as the "NAT" rows of Roy et al. 2018's table) into
//! `runs/nat/<name>/`, with the run layout of the latent NAT's trainer
//! (`crate::nat`): resolved `config.toml`, the teacher's `tokenizer.json`,
//! `metrics.jsonl` (token NLL, length CE, tokens/s; validation loss and
//! one-pass BLEU), `checkpoints/` with exact resume (model, Adam moments,
//! step, data position, elapsed time), and `model.safetensors`, the average
//! of the last `average_last` checkpoints. `train-nat` hands a config whose
//! `[model]` has no `compress_steps` here ([`super::config_kind`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use emvq_bleu::{Bleu, BleuConfig};
use emvq_data::{prepare_translation, Batcher, DataPosition, SubwordTokenizer};
use emvq_latent::{init_from_teacher, NatModel, PlainNat};
use emvq_tensor::{load_toml, seed::seed_all, Checkpoint, RunDir};
use emvq_transformer::keeper::{parse_meta, STEP_KEY};
use emvq_transformer::{
    average_checkpoints, load_training_checkpoint, step_seed, Adam, AdamConfig, CheckpointKeeper,
    LrSchedule,
};
use tch::nn::VarStore;

use super::{translate_batched, PlainRunConfig};
use crate::nat::{teacher_weights, TrainArgs};
use crate::teacher::{batch_tensors, set_threads, CONFIG_KEY, MODEL_FILE, POSITION_KEY, SECONDS_KEY};

impl PlainRunConfig {
    /// Checks what serde cannot (the model once its vocabulary is known).
    pub fn validate(&self) -> Result<()> {
        self.data.validate()?;
        let t = &self.train;
        ensure!(
            t.lr_scale > 0.0 && t.warmup_steps >= 1,
            "train.lr_scale > 0 and warmup_steps ≥ 1"
        );
        ensure!(
            t.max_steps.is_some() || t.max_minutes.is_some(),
            "set train.max_steps or train.max_minutes"
        );
        ensure!(
            t.log_every >= 1 && t.eval_every >= 1 && t.checkpoint_every >= 1,
            "train.log_every, eval_every and checkpoint_every must be at least 1"
        );
        ensure!(
            t.keep_last >= 1 && (1..=t.keep_last).contains(&t.average_last),
            "train.keep_last ≥ 1 and 1 ≤ average_last ≤ keep_last"
        );
        ensure!(
            self.decode.batch_sentences >= 1,
            "decode.batch_sentences must be at least 1"
        );
        ensure!(
            self.model.max_positions > self.data.filters.max_len as i64,
            "model.max_positions ({}) must exceed data.filters.max_len",
            self.model.max_positions
        );
        let mut model = self.model.clone();
        if model.vocab_size == 0 {
            model.vocab_size = 300; // checked for real once the tokenizer is known
        }
        model.validate()?;
        Ok(())
    }
}

fn load_config(args: &TrainArgs) -> Result<PlainRunConfig> {
    let mut config: PlainRunConfig = load_toml(&args.config)?;
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

/// Trains (or resumes) a plain NAT; returns the run directory.
pub fn train_plain(args: &TrainArgs) -> Result<PathBuf> {
    let mut config = load_config(args)?;
    let run = RunDir::create(&args.runs, "nat", &config.name)?;
    emvq_tensor::logging::init_logging(Some(&run.log_path()))?;
    if !CheckpointKeeper::new(&run.checkpoint_dir(), 1)?
        .steps()?
        .is_empty()
        && !args.resume
    {
        bail!(
            "run {} already has checkpoints: pass --resume to continue it, or --name for a new run",
            run.path().display()
        );
    }
    set_threads(config.threads);
    let teacher_tokenizer = SubwordTokenizer::load(&config.teacher).with_context(|| {
        format!(
            "teacher = {:?}: no tokenizer",
            config.teacher.display().to_string()
        )
    })?;
    if !run.path().join("tokenizer.json").is_file() {
        teacher_tokenizer.save(run.path())?;
    }
    let data_dir = config.data.resolve_data_dir(&std::env::current_dir()?)?;
    let prepared = prepare_translation(&config.data, &data_dir, Some(run.path()))?;
    ensure!(
        prepared.tokenizer.vocab_size() == teacher_tokenizer.vocab_size(),
        "the run's tokenizer is not the teacher's"
    );
    if config.model.vocab_size == 0 {
        config.model.vocab_size = prepared.tokenizer.vocab_size() as i64;
    }
    config.model.validate()?;
    if args.resume && run.config_path().is_file() {
        let saved: PlainRunConfig = run.load_config()?;
        ensure!(
            saved.model == config.model && saved.data == config.data && saved.seed == config.seed,
            "--resume: the model, data or seed of {} differ from the run's saved config",
            args.config.display()
        );
    }
    run.save_config(&config)?;
    let device = config.device.resolve()?;
    tracing::info!(
        "plain NAT {} on {device:?}, {} LibTorch threads",
        config.name,
        tch::get_num_threads()
    );

    tch::manual_seed(config.seed as i64);
    let vs = VarStore::new(device);
    let model = PlainNat::new(vs.root(), &config.model)?;
    let adam = AdamConfig {
        beta1: config.train.adam_beta1,
        beta2: config.train.adam_beta2,
        eps: config.train.adam_eps,
        weight_decay: 0.0,
    };
    let mut opt = Adam::new(&vs, &adam)?;
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
                "resumed from {} (step {})",
                path.display(),
                opt.step_count()
            );
            true
        }
        _ => false,
    };
    if config.init_from_teacher && !resumed {
        let weights = teacher_weights(&config.teacher)?;
        let copied = init_from_teacher(&vs, &Checkpoint::load(&weights)?)?;
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
    let valid_batcher = Batcher::new(
        prepared.valid.encoded.clone(),
        config.data.batch_config(false),
    )?;
    let valid_batches: Vec<_> = valid_batcher
        .epoch(0)
        .map(|b| batch_tensors(&b, device))
        .collect();
    let valid_refs: Vec<String> = prepared
        .valid
        .encoded
        .line_index
        .iter()
        .map(|&i| prepared.valid.raw.target[i].clone())
        .collect();
    let bleu = Bleu::new(BleuConfig::default(), &[valid_refs])?;
    let validate = |kind: &str, step: i64| -> Result<serde_json::Value> {
        let start = Instant::now();
        let _guard = tch::no_grad_guard();
        let (mut sums, mut tokens) = (BTreeMap::<&str, f64>::new(), 0.0);
        for (src, tgt) in &valid_batches {
            let loss = model.loss(src, tgt, step, false)?;
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
        if config.train.eval_bleu {
            let shape = (config.model.max_positions, config.model.pad_id, device);
            let decode = config.decode.nat();
            let sources = &prepared.valid.encoded.source;
            let out = translate_batched(
                &model,
                &decode,
                shape,
                sources,
                config.decode.batch_sentences,
            )?;
            let hyps = prepared.tokenizer.decode_batch(&out)?;
            record["bleu_greedy"] = serde_json::json!(bleu.corpus_score(&hyps)?.score);
        }
        record["seconds"] = serde_json::json!(start.elapsed().as_secs_f64());
        run.log_metrics(&record)?;
        tracing::info!("{kind} step {step}: {record}");
        Ok(record)
    };

    let schedule = LrSchedule {
        scale: config.train.lr_scale,
        warmup_steps: config.train.warmup_steps,
        d_model: config.model.d_model,
    };
    let config_text = toml::to_string(&config)?;
    let save = |keeper: &mut CheckpointKeeper,
                opt: &Adam,
                val: Option<f64>,
                position: DataPosition,
                seconds: f64| {
        let meta = BTreeMap::from([
            (POSITION_KEY.to_string(), serde_json::to_string(&position)?),
            (SECONDS_KEY.to_string(), format!("{seconds:e}")),
            (CONFIG_KEY.to_string(), config_text.clone()),
        ]);
        keeper.save(&vs, opt, val, &meta)?;
        anyhow::Ok(())
    };
    let budget = config.train.max_minutes.map(|m| m * 60.0);
    let max_steps = config.train.max_steps;
    let bar =
        emvq_tensor::logging::progress_bar(max_steps.unwrap_or(0) as u64, "train-nat (plain)");
    bar.set_position(opt.step_count() as u64);
    let start = Instant::now();
    let elapsed = || seconds_before + start.elapsed().as_secs_f64();
    let mut stream = train_batcher.stream(position);
    let mut window: BTreeMap<&'static str, (f64, f64)> = BTreeMap::new();
    let (mut window_tokens, mut window_start) = (0.0, Instant::now());
    let (mut last_eval, mut last_ckpt, mut last_val) = (-1i64, -1i64, None);
    loop {
        let step = opt.step_count();
        if max_steps.is_some_and(|m| step >= m) || budget.is_some_and(|b| elapsed() >= b) {
            break;
        }
        let (src, tgt) = batch_tensors(&stream.next().expect("endless").1, device);
        position = stream.position();
        let step = step + 1;
        seed_all(step_seed(config.seed, step));
        opt.zero_grad();
        let loss = model.loss(&src, &tgt, step, true)?;
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
        let tok_per_s = window_tokens / window_start.elapsed().as_secs_f64().max(1e-9);
        if max_steps.is_none() {
            let rate = step as f64 / elapsed().max(1e-9);
            bar.set_length(
                step as u64 + ((budget.unwrap_or(0.0) - elapsed()).max(0.0) * rate) as u64,
            );
        }
        bar.set_position(step as u64);
        bar.set_message(format!("loss {total:.3} | {tok_per_s:.0} tok/s"));
        if step % config.train.log_every == 0 {
            let mut record = serde_json::json!({
                "kind": "train", "step": step, "lr": lr, "grad_norm": grad_norm,
                "tokens_per_s": tok_per_s, "epoch": position.epoch, "seconds": elapsed(),
            });
            for (name, (sum, n)) in &window {
                record[*name] = serde_json::json!(sum / n.max(1.0));
            }
            run.log_metrics(&record)?;
            bar.suspend(|| tracing::info!("step {step}: {record}"));
            window.clear();
            (window_tokens, window_start) = (0.0, Instant::now());
        }
        if step % config.train.eval_every == 0 {
            last_val = bar.suspend(|| validate("valid", step))?["loss"].as_f64();
            last_eval = step;
        }
        if step % config.train.checkpoint_every == 0 {
            save(
                &mut keeper,
                &opt,
                if last_eval == step { last_val } else { None },
                position,
                elapsed(),
            )?;
            last_ckpt = step;
        }
    }
    bar.finish_and_clear();
    let step = opt.step_count();
    if step == 0 {
        bail!("no training step was taken (the budget was already spent)");
    }
    if last_eval != step {
        last_val = validate("valid", step)?["loss"].as_f64();
    }
    if last_ckpt != step && keeper.latest()? != Some(keeper.step_path(step)) {
        save(&mut keeper, &opt, last_val, position, elapsed())?;
    }
    let paths = keeper.last_n(config.train.average_last)?;
    let mut final_ckpt = average_checkpoints(&paths)?;
    final_ckpt
        .metadata
        .insert(STEP_KEY.into(), step.to_string());
    final_ckpt
        .metadata
        .insert(CONFIG_KEY.into(), config_text.clone());
    let model_path = run.path().join(MODEL_FILE);
    final_ckpt.save(&model_path)?;
    final_ckpt.restore_into(&vs, &model_path)?;
    validate("final", step)?;
    tracing::info!(
        "final model ({} checkpoints averaged) → {}",
        paths.len(),
        model_path.display()
    );
    Ok(run.path().to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_plain_config_parses_and_validates() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let config: PlainRunConfig =
            load_toml(&root.join("configs/multi30k/nat_plain.toml")).unwrap();
        config.validate().unwrap();
        assert!(
            config.data.train_dir.is_some(),
            "the paper's plain NAT is trained on distilled targets"
        );
        assert_eq!(
            super::super::config_kind(
                &std::fs::read_to_string(root.join("configs/multi30k/nat_plain.toml")).unwrap()
            )
            .unwrap(),
            super::super::RunKind::PlainNat
        );
    }
}
