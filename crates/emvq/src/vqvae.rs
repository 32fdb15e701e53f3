//! `emvq train-vqvae`, `emvq eval-vqvae` and `emvq sample`: the CIFAR-10
//! experiment of Roy et al. 2018 (arXiv 1805.11063), a VQ-VAE whose
//! bottleneck is plain VQ or soft EM, then an autoregressive Transformer prior
//! over its latent codes.
//!
//! `train-vqvae --config FILE` writes, in `runs/vqvae/<name>/`: the resolved
//! `config.toml`, `metrics.jsonl` (training records of both stages, then the
//! evaluation), `log.txt`, `checkpoints/` (model + Adam moments + step,
//! every `checkpoint_every` steps and at the end of each stage),
//! `vqvae.safetensors` and `prior.safetensors` (the final models), then runs
//! the evaluation: `results.json` (bits/dim with a uniform and with the
//! learned prior, codebook perplexity and dead codes on the test images),
//! `reconstructions.png` (rows of test images, each above its
//! reconstruction), `samples.png` (prior → decoder) and `usage_slice<s>.png`
//! (code counts, tallest first; dead codes in red). Each stage stops at its
//! `max_steps` or `max_minutes`, whichever comes first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use emvq_bottleneck::CodeUsage;
use emvq_data::{load_cifar10, CifarSplit};
use emvq_tensor::{fsutil::write_atomic, load_toml, Checkpoint, DeviceSpec, RunDir};
use emvq_transformer::{save_training_checkpoint, Adam, AdamConfig};
use emvq_vision::model::mode_image;
use emvq_vision::picture::{image_grid, side_by_side, usage_chart, write_png};
use emvq_vision::{bits_per_dim, uniform_prior_nats, LatentPrior, PriorConfig, VqVae, VqVaeConfig};
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device, Kind, Tensor};

use crate::teacher::set_threads;

/// The autoencoder of a finished run.
pub const VQVAE_FILE: &str = "vqvae.safetensors";
/// The latent prior of a finished run.
pub const PRIOR_FILE: &str = "prior.safetensors";
/// The evaluation of a run.
pub const RESULTS_FILE: &str = "results.json";

/// `configs/cifar10/vqvae_*.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VqvaeRunConfig {
    /// Run name: the run directory is `runs/vqvae/<name>/`.
    pub name: String,
    #[serde(default)]
    pub device: DeviceSpec,
    /// Seed of the initialisation, the batch order and EM's sampling.
    pub seed: u64,
    /// LibTorch intra-op threads; 0 keeps LibTorch's default.
    pub threads: usize,
    pub data: CifarData,
    pub model: VqVaeConfig,
    /// `[train]`: the autoencoder.
    pub train: StageSettings,
    pub prior: PriorConfig,
    /// `[prior_train]`: the prior, on the training images' codes.
    pub prior_train: StageSettings,
    pub sample: SampleSettings,
}

/// `[data]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CifarData {
    /// The CIFAR-10 folder (absent: `data/cifar10`, else `../shared/data/cifar10`).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Training images used (absent: all 50,000 but the validation ones).
    #[serde(default)]
    pub train_images: Option<usize>,
    /// Validation images held out from the END of the training split (never
    /// trained on; `eval-vqvae --split valid` scores them). Hyper-parameters
    /// are chosen on these, never on the test images.
    #[serde(default)]
    pub valid_images: usize,
    /// Test images evaluated (the first N of the test split).
    pub test_images: usize,
}

/// Optimisation and stopping of one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSettings {
    pub batch_size: i64,
    /// Peak learning rate (Adam), reached after `warmup_steps` linearly.
    pub lr: f64,
    pub warmup_steps: i64,
    pub adam_beta2: f64,
    /// Global gradient-norm clip; 0 turns it off.
    pub clip_norm: f64,
    #[serde(default)]
    pub max_steps: Option<i64>,
    /// Wall-clock budget of the stage in minutes.
    #[serde(default)]
    pub max_minutes: Option<f64>,
    pub log_every: i64,
    pub checkpoint_every: i64,
}

/// `[sample]`: the samples drawn at the end of training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleSettings {
    pub n: i64,
    pub seed: u64,
    pub temperature: f64,
}

impl StageSettings {
    fn validate(&self, stage: &str) -> Result<()> {
        ensure!(
            self.batch_size >= 1,
            "{stage}.batch_size must be at least 1"
        );
        ensure!(self.lr > 0.0, "{stage}.lr must be positive");
        ensure!(self.warmup_steps >= 0, "{stage}.warmup_steps must be ≥ 0");
        ensure!(
            (0.0..1.0).contains(&self.adam_beta2),
            "{stage}.adam_beta2 must be in [0, 1)"
        );
        ensure!(
            self.max_steps.is_some() || self.max_minutes.is_some(),
            "set {stage}.max_steps or {stage}.max_minutes (or both)"
        );
        ensure!(
            self.max_steps.is_none_or(|s| s >= 1),
            "{stage}.max_steps must be ≥ 1"
        );
        ensure!(
            self.max_minutes.is_none_or(|m| m > 0.0),
            "{stage}.max_minutes must be positive"
        );
        ensure!(
            self.log_every >= 1 && self.checkpoint_every >= 1,
            "{stage}.log_every and checkpoint_every must be at least 1"
        );
        Ok(())
    }

    fn lr(&self, step: i64) -> f64 {
        if self.warmup_steps == 0 {
            self.lr
        } else {
            self.lr * (step as f64 / self.warmup_steps as f64).min(1.0)
        }
    }

    fn adam(&self) -> AdamConfig {
        AdamConfig {
            beta1: 0.9,
            beta2: self.adam_beta2,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

impl VqvaeRunConfig {
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        self.prior.validate()?;
        self.train.validate("train")?;
        self.prior_train.validate("prior_train")?;
        ensure!(
            self.data.test_images >= 1,
            "data.test_images must be at least 1"
        );
        ensure!(
            self.data.train_images.is_none_or(|n| n >= 1),
            "data.train_images must be ≥ 1"
        );
        ensure!(
            self.sample.n >= 1 && self.sample.temperature > 0.0,
            "sample.n and temperature must be positive"
        );
        Ok(())
    }

    fn data_dir(&self) -> Result<PathBuf> {
        match &self.data.dir {
            Some(dir) => Ok(dir.clone()),
            None => Ok(emvq_data::find_data("cifar10", &std::env::current_dir()?)?),
        }
    }
}

/// `emvq train-vqvae`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    #[arg(long, default_value = "configs/cifar10/vqvae_em.toml")]
    pub config: PathBuf,
    /// Run name (default: the config's `name`).
    #[arg(long)]
    pub name: Option<String>,
    /// Device (overrides the config's `device`).
    #[arg(long)]
    pub device: Option<DeviceSpec>,
    /// Override `train.max_minutes` (the autoencoder's budget).
    #[arg(long)]
    pub max_minutes: Option<f64>,
    /// Override `prior_train.max_minutes`.
    #[arg(long)]
    pub prior_minutes: Option<f64>,
    /// Override `train.max_steps`.
    #[arg(long)]
    pub max_steps: Option<i64>,
    /// Override `prior_train.max_steps`.
    #[arg(long)]
    pub prior_steps: Option<i64>,
    /// Override `threads` (LibTorch intra- and inter-op threads).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Folder holding the run directories.
    #[arg(long, default_value = "runs")]
    pub runs: PathBuf,
    /// The evaluation after training: `test` (results.json and pictures) or
    /// `valid` (results_valid.json only: for hyper-parameter searches, which
    /// must not look at the test images).
    #[arg(long, value_enum, default_value = "test")]
    pub eval_split: EvalSplit,
}

/// `emvq eval-vqvae`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A run directory (runs/vqvae/<name>); repeat to compare runs.
    #[arg(long, required = true)]
    pub run: Vec<PathBuf>,
    #[arg(long)]
    pub device: Option<DeviceSpec>,
    /// Also write a Markdown table of the runs side by side (and their
    /// sample grids joined into `<table stem>_samples.png`).
    #[arg(long)]
    pub table: Option<PathBuf>,
    /// Take a run's existing results.json instead of evaluating it again.
    #[arg(long)]
    pub reuse: bool,
    /// `test` (the first `data.test_images` test images → results.json and
    /// the pictures) or `valid` (the `data.valid_images` held out from the
    /// training split → results_valid.json; for choosing hyper-parameters).
    #[arg(long, value_enum, default_value = "test")]
    pub split: EvalSplit,
}

/// `emvq sample`.
#[derive(Debug, Args)]
pub struct SampleArgs {
    /// The run directory (runs/vqvae/<name>).
    #[arg(long)]
    pub run: PathBuf,
    #[arg(long, default_value_t = 64)]
    pub n: i64,
    #[arg(long)]
    pub out: PathBuf,
    /// Seed (default: the config's `sample.seed`).
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub temperature: Option<f64>,
    #[arg(long)]
    pub device: Option<DeviceSpec>,
}

/// Images `[n, 3, 32, 32]` uint8 on the CPU.
fn images_tensor(data: &emvq_data::Cifar10, limit: Option<usize>) -> Tensor {
    let n = limit.map_or(data.len(), |l| l.min(data.len()));
    images_range(data, 0..n)
}

/// Images `range` of a split, `[len, 3, 32, 32]` uint8 on the CPU.
fn images_range(data: &emvq_data::Cifar10, range: std::ops::Range<usize>) -> Tensor {
    let flat = data.images.as_slice().expect("standard layout");
    let len = range.len() as i64;
    let pixels = &flat[range.start * 3072..range.end * 3072];
    Tensor::from_slice(pixels).view([len, 3, 32, 32]) // [len, 3, 32, 32]
}

/// The training and validation image ranges of a training split of
/// `total` images: validation is the last `valid` images, training the
/// first `train` (all the others when absent) — disjoint by construction.
pub fn train_valid_ranges(
    total: usize,
    train: Option<usize>,
    valid: usize,
) -> Result<(std::ops::Range<usize>, std::ops::Range<usize>)> {
    ensure!(
        valid < total,
        "data.valid_images = {valid} leaves no training image of {total}"
    );
    let rest = total - valid;
    let n = train.map_or(rest, |t| t.min(rest));
    Ok((0..n, rest..total))
}

/// Which images `eval-vqvae` scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvalSplit {
    /// The first `data.test_images` of the official test split (with pictures).
    Test,
    /// The `data.valid_images` held out from the training split.
    Valid,
}

/// A stage's loop state: budget, progress bar, throughput window.
struct Stage<'a> {
    settings: &'a StageSettings,
    start: Instant,
    bar: indicatif::ProgressBar,
    window: (f64, Instant),
}

impl<'a> Stage<'a> {
    fn new(name: &'static str, settings: &'a StageSettings) -> Self {
        let bar = emvq_tensor::logging::progress_bar(settings.max_steps.unwrap_or(0) as u64, name);
        Self {
            settings,
            start: Instant::now(),
            bar,
            window: (0.0, Instant::now()),
        }
    }

    fn done(&self, step: i64) -> bool {
        self.settings.max_steps.is_some_and(|m| step >= m)
            || self
                .settings
                .max_minutes
                .is_some_and(|m| self.start.elapsed().as_secs_f64() >= m * 60.0)
    }

    /// Records a step; returns images/s over the window when it is logged.
    fn tick(&mut self, step: i64, images: f64, loss: f64) -> Option<f64> {
        self.window.0 += images;
        let seconds = self.start.elapsed().as_secs_f64();
        if self.settings.max_steps.is_none() {
            let rate = step as f64 / seconds.max(1e-9);
            let left = self.settings.max_minutes.unwrap_or(0.0) * 60.0 - seconds;
            self.bar
                .set_length(step as u64 + (left.max(0.0) * rate) as u64);
        }
        self.bar.set_position(step as u64);
        self.bar.set_message(format!("loss {loss:.4}"));
        if step % self.settings.log_every == 0 {
            let rate = self.window.0 / self.window.1.elapsed().as_secs_f64().max(1e-9);
            self.window = (0.0, Instant::now());
            Some(rate)
        } else {
            None
        }
    }
}

fn clip(opt: &mut Adam, clip_norm: f64) -> Result<f64> {
    let limit = if clip_norm > 0.0 {
        clip_norm
    } else {
        f64::INFINITY
    };
    Ok(opt.clip_grad_norm(limit)?.double_value(&[]))
}

/// Random batch order, one permutation per epoch, from the run's seed.
struct Order {
    n: i64,
    perm: Tensor,
    at: i64,
    epoch: i64,
    seed: u64,
}

impl Order {
    fn new(n: i64, seed: u64) -> Self {
        let mut order = Self {
            n,
            perm: Tensor::new(),
            at: n,
            epoch: -1,
            seed,
        };
        order.reshuffle();
        order
    }

    fn reshuffle(&mut self) {
        self.epoch += 1;
        tch::manual_seed((self.seed as i64).wrapping_add(1_000_003 * self.epoch));
        self.perm = Tensor::randperm(self.n, (Kind::Int64, Device::Cpu));
        self.at = 0;
    }

    /// The next `b` indices (a short epoch tail is dropped).
    fn next(&mut self, b: i64) -> Tensor {
        if self.at + b > self.n {
            self.reshuffle();
        }
        let idx = self.perm.narrow(0, self.at, b.min(self.n));
        self.at += b;
        idx
    }
}

fn save_model(path: &Path, vs: &VarStore, step: i64, config_text: &str) -> Result<()> {
    let mut ckpt = Checkpoint::from_var_store(vs);
    ckpt.metadata.insert("step".into(), step.to_string());
    ckpt.metadata.insert("config".into(), config_text.into());
    Ok(ckpt.save(path)?)
}

/// The figures of a logged step that both stages record.
#[derive(Debug, Clone, Copy)]
struct StepInfo {
    step: i64,
    loss: f64,
    lr: f64,
    grad_norm: f64,
    /// Examples per second over the logging window.
    rate: f64,
    epoch: i64,
    seconds: f64,
}

/// One training stage (the autoencoder or the prior): its data (examples
/// along dim 0, drawn in a seeded random order), settings and checkpoint.
struct StageRun<'a> {
    name: &'static str,
    settings: &'a StageSettings,
    seed: u64,
    data: &'a Tensor,
    device: Device,
    checkpoint: PathBuf,
    meta: BTreeMap<String, String>,
}

impl StageRun<'_> {
    /// The loop both stages share: batch, per-step seed, `forward` → (loss,
    /// output), backward, clipping, Adam with warm-up, a metrics record from
    /// `record` every `log_every` steps, a checkpoint every
    /// `checkpoint_every` steps and at the end. Stops at `max_steps` or
    /// `max_minutes`; returns the steps done and the seconds taken.
    fn train<O>(
        &self,
        run: &RunDir,
        vs: &VarStore,
        opt: &mut Adam,
        mut forward: impl FnMut(&Tensor) -> Result<(Tensor, O)>,
        mut record: impl FnMut(&O, &StepInfo) -> Result<(serde_json::Value, String)>,
    ) -> Result<(i64, f64)> {
        let settings = self.settings;
        let mut order = Order::new(self.data.size()[0], self.seed);
        let mut stage = Stage::new(self.name, settings);
        let mut step = 0;
        while !stage.done(step) {
            let batch = self
                .data
                .index_select(0, &order.next(settings.batch_size))
                .to_device(self.device);
            tch::manual_seed(emvq_transformer::step_seed(self.seed, step + 1) as i64);
            let (loss, out) = forward(&batch)?;
            opt.zero_grad();
            loss.backward();
            let grad_norm = clip(opt, settings.clip_norm)?;
            step += 1;
            let lr = settings.lr(step);
            opt.step(lr)?;
            let loss_v = loss.double_value(&[]);
            if let Some(rate) = stage.tick(step, settings.batch_size as f64, loss_v) {
                let info = StepInfo {
                    step,
                    loss: loss_v,
                    lr,
                    grad_norm,
                    rate,
                    epoch: order.epoch,
                    seconds: stage.start.elapsed().as_secs_f64(),
                };
                let (metrics, line) = record(&out, &info)?;
                run.log_metrics(&metrics)?;
                stage.bar.suspend(|| tracing::info!("{line}"));
            }
            if step % settings.checkpoint_every == 0 {
                save_training_checkpoint(&self.checkpoint, vs, opt, &self.meta)?;
            }
        }
        stage.bar.finish_and_clear();
        save_training_checkpoint(&self.checkpoint, vs, opt, &self.meta)?;
        Ok((step, stage.start.elapsed().as_secs_f64()))
    }
}

/// Trains the autoencoder, then the prior, then evaluates; returns the run
/// directory.
pub fn train(args: &TrainArgs) -> Result<PathBuf> {
    let mut config: VqvaeRunConfig = load_toml(&args.config)?;
    if let Some(name) = &args.name {
        config.name = name.clone();
    }
    if let Some(device) = args.device {
        config.device = device;
    }
    if let Some(m) = args.max_minutes {
        config.train.max_minutes = Some(m);
    }
    if let Some(m) = args.prior_minutes {
        config.prior_train.max_minutes = Some(m);
    }
    if let Some(t) = args.threads {
        config.threads = t;
    }
    if let Some(s) = args.max_steps {
        config.train.max_steps = Some(s);
    }
    if let Some(s) = args.prior_steps {
        config.prior_train.max_steps = Some(s);
    }
    config
        .validate()
        .with_context(|| format!("config {}", args.config.display()))?;
    let run = RunDir::create(&args.runs, "vqvae", &config.name)?;
    emvq_tensor::logging::init_logging(Some(&run.log_path()))?;
    if run.path().join(VQVAE_FILE).exists() || run.checkpoint_dir().is_dir() {
        bail!(
            "run {} exists already: pass --name for a new run",
            run.path().display()
        );
    }
    run.save_config(&config)?;
    set_threads(config.threads);
    let device = config.device.resolve()?;
    let config_text = toml::to_string(&config)?;
    let data_dir = config.data_dir()?;
    let train_set = load_cifar10(&data_dir, CifarSplit::Train)?;
    let (train_range, valid_range) = train_valid_ranges(
        train_set.len(),
        config.data.train_images,
        config.data.valid_images,
    )?;
    let train_images = images_range(&train_set, train_range);
    drop(train_set);
    let n_train = train_images.size()[0];
    tracing::info!(
        "vqvae {} ({:?} bottleneck, {} bits × n_c {}) on {device:?}, {} threads, {n_train} training images, validation images {valid_range:?}",
        config.name,
        config.model.bottleneck.kind,
        config.model.bottleneck.bits,
        config.model.bottleneck.slices,
        tch::get_num_threads()
    );

    // Stage 1: the autoencoder.
    tch::manual_seed(config.seed as i64);
    let vs = VarStore::new(device);
    let model = VqVae::new(vs.root(), &config.model)?;
    let mut opt = Adam::new(&vs, &config.train.adam())?;
    tracing::info!(
        "autoencoder: {} trainable parameters",
        emvq_tensor::params::count_parameters(&vs).trainable
    );
    let ckpt_dir = run.checkpoint_dir();
    std::fs::create_dir_all(&ckpt_dir)?;
    let meta = |stage: &str| {
        BTreeMap::from([
            ("stage".to_string(), stage.to_string()),
            ("config".to_string(), config_text.clone()),
        ])
    };
    let ae_stage = StageRun {
        name: "vqvae",
        settings: &config.train,
        seed: config.seed,
        data: &train_images,
        device,
        checkpoint: ckpt_dir.join("vqvae-last.safetensors"),
        meta: meta("vqvae"),
    };
    let usage_shape = (
        config.model.bottleneck.slices,
        config.model.bottleneck.codebook_size(),
    );
    let (step, ae_seconds) = ae_stage.train(
        &run,
        &vs,
        &mut opt,
        |images| {
            let out = model.forward(images, true)?;
            Ok((out.loss()?, out))
        },
        |out, info| {
            let nll_bpd =
                out.nll.mean(Kind::Float).double_value(&[]) / (3072.0 * std::f64::consts::LN_2);
            let commitment = out.bottleneck.commitment_loss.double_value(&[]);
            let mut usage = CodeUsage::new(usage_shape.0, usage_shape.1);
            usage.add_codes(&out.codes)?;
            // Soft EM: distinct codes among the m draws per vector and slice.
            let distinct = out.bottleneck.soft_targets.as_ref().map(|r| {
                r.gt(0.0)
                    .sum_dim_intlist(-1, false, Kind::Float)
                    .mean(Kind::Float)
                    .double_value(&[])
            });
            let StepInfo { step, loss, lr, grad_norm, rate, epoch, seconds } = *info;
            let record = serde_json::json!({
                "kind": "train_vqvae", "step": step, "loss": loss, "nll_bits_per_dim": nll_bpd,
                "commitment": commitment, "lr": lr, "grad_norm": grad_norm, "images_per_s": rate,
                "batch_perplexity": usage.perplexity(), "distinct_sampled_codes": distinct,
                "reseeded": out.bottleneck.reseeded, "epoch": epoch, "seconds": seconds,
            });
            let line = format!(
                "vqvae step {step} loss {loss:.4} nll {nll_bpd:.3} bits/dim commit {commitment:.4} |g| {grad_norm:.2} {rate:.1} img/s"
            );
            Ok((record, line))
        },
    )?;
    save_model(&run.path().join(VQVAE_FILE), &vs, step, &config_text)?;
    tracing::info!(
        "autoencoder: {step} steps in {ae_seconds:.0} s → {}",
        run.path().join(VQVAE_FILE).display()
    );

    // The training set's codes.
    let t0 = Instant::now();
    let codes = tch::no_grad(|| -> Result<Tensor> {
        let mut parts = Vec::new();
        let mut start = 0;
        while start < n_train {
            let len = 256.min(n_train - start);
            let images = train_images.narrow(0, start, len).to_device(device);
            let c = model.encode_codes(&images)?; // [len, g, g, n_c]
            parts.push(c.flatten(1, 2).to_device(Device::Cpu)); // [len, L, n_c]
            start += len;
        }
        Ok(Tensor::cat(&parts, 0))
    })?;
    let mut usage = CodeUsage::new(
        config.model.bottleneck.slices,
        config.model.bottleneck.codebook_size(),
    );
    usage.add_codes(&codes)?;
    tracing::info!(
        "encoded {n_train} training images in {:.0} s; code perplexity {:?}, dead codes {:?}",
        t0.elapsed().as_secs_f64(),
        usage.perplexity(),
        usage.dead_count()
    );

    // Stage 2: the prior.
    let pvs = VarStore::new(device);
    let prior = LatentPrior::new(
        pvs.root(),
        &config.prior,
        config.model.latents(),
        config.model.bottleneck.slices,
        config.model.bottleneck.codebook_size(),
    )?;
    let psettings = &config.prior_train;
    let mut popt = Adam::new(&pvs, &psettings.adam())?;
    let prior_stage = StageRun {
        name: "prior",
        settings: psettings,
        seed: config.seed.wrapping_add(1),
        data: &codes,
        device,
        checkpoint: ckpt_dir.join("prior-last.safetensors"),
        meta: meta("prior"),
    };
    let codes_per_image = (config.model.latents() * config.model.bottleneck.slices) as f64;
    let (step, prior_seconds) = prior_stage.train(
        &run,
        &pvs,
        &mut popt,
        |batch| Ok((prior.loss(batch)?, ())),
        |_, info| {
            let StepInfo {
                step,
                loss,
                lr,
                grad_norm,
                rate,
                epoch,
                seconds,
            } = *info;
            let record = serde_json::json!({
                "kind": "train_prior", "step": step, "loss_nats_per_code": loss,
                "prior_bits_per_dim": loss * codes_per_image / (3072.0 * std::f64::consts::LN_2),
                "lr": lr, "grad_norm": grad_norm, "sequences_per_s": rate, "epoch": epoch,
                "seconds": seconds,
            });
            let line = format!(
                "prior step {step} loss {loss:.4} nats/code |g| {grad_norm:.2} {rate:.0} seq/s"
            );
            Ok((record, line))
        },
    )?;
    save_model(&run.path().join(PRIOR_FILE), &pvs, step, &config_text)?;
    tracing::info!(
        "prior: {step} steps in {prior_seconds:.0} s → {}",
        run.path().join(PRIOR_FILE).display()
    );
    drop((model, prior, vs, pvs));

    evaluate_split(run.path(), Some(config.device), args.eval_split)?;
    Ok(run.path().to_path_buf())
}

/// A finished run's models.
pub struct LoadedRun {
    pub run: RunDir,
    pub config: VqvaeRunConfig,
    pub device: Device,
    pub model: VqVae,
    pub prior: LatentPrior,
    _vs: (VarStore, VarStore),
}

/// Loads `vqvae.safetensors` and `prior.safetensors` of a run.
pub fn load_run(dir: &Path, device: Option<DeviceSpec>) -> Result<LoadedRun> {
    let run = RunDir::open(dir)?;
    let config: VqvaeRunConfig = run.load_config()?;
    if config.threads > 0 {
        // Intra-op only: train-vqvae has set the inter-op pool already.
        tch::set_num_threads(config.threads as i32);
    }
    let device = device.unwrap_or(config.device).resolve()?;
    let vs = VarStore::new(device);
    let model = VqVae::new(vs.root(), &config.model)?;
    let path = run.path().join(VQVAE_FILE);
    Checkpoint::load(&path)?.restore_into(&vs, &path)?;
    let pvs = VarStore::new(device);
    let prior = LatentPrior::new(
        pvs.root(),
        &config.prior,
        config.model.latents(),
        config.model.bottleneck.slices,
        config.model.bottleneck.codebook_size(),
    )?;
    let path = run.path().join(PRIOR_FILE);
    Checkpoint::load(&path)?.restore_into(&pvs, &path)?;
    Ok(LoadedRun {
        run,
        config,
        device,
        model,
        prior,
        _vs: (vs, pvs),
    })
}

/// What `eval-vqvae` measures on the test images.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VqvaeResults {
    pub run: String,
    pub kind: String,
    pub bits: u32,
    pub slices: i64,
    pub test_images: usize,
    /// (−ln p(x|z) + L·n_c·bits·ln 2) / (3072 ln 2), mean over images.
    pub bits_per_dim_uniform_prior: f64,
    /// (−ln p(x|z) − ln p(z)) / (3072 ln 2) with the learnt prior.
    pub bits_per_dim_learned_prior: f64,
    /// The two parts: −log₂ p(x|z) / 3072 and −log₂ p(z) / 3072.
    pub reconstruction_bits_per_dim: f64,
    pub prior_bits_per_dim: f64,
    /// Per slice, of the test images' hard codes.
    pub codebook_perplexity: Vec<f64>,
    pub dead_codes: Vec<usize>,
    pub codebook_size: i64,
    /// Which images were scored (`test_images` counts them either way).
    #[serde(default = "default_split")]
    pub split: EvalSplit,
    /// Mean entropy (nats) of the posterior softmax(−‖x − e‖²/T) per latent
    /// vector and slice, with the run's T (VQ: T = 1, what soft EM would
    /// see); 0 means one-hot, ln K uniform.
    #[serde(default)]
    pub posterior_entropy_nats: f64,
    /// Mean number of distinct codes among m draws from that posterior (the
    /// run's `samples`); 1 means soft EM degenerates to hard EM.
    #[serde(default)]
    pub posterior_distinct_codes: f64,
    pub pictures: BTreeMap<String, String>,
    pub seconds: f64,
}

/// `emvq eval-vqvae --run DIR [--run DIR2 …] [--table FILE.md]`.
pub fn evaluate(args: &EvalArgs) -> Result<Vec<VqvaeResults>> {
    let mut all = Vec::new();
    for dir in &args.run {
        let cached = dir.join(results_file(args.split));
        if args.reuse && cached.is_file() {
            let text = std::fs::read_to_string(&cached)?;
            all.push(serde_json::from_str(&text).with_context(|| format!("{}", cached.display()))?);
        } else {
            all.push(evaluate_split(dir, args.device, args.split)?);
        }
    }
    if let Some(table) = &args.table {
        write_table(table, &all)?;
    }
    Ok(all)
}

/// A Markdown table of several runs' results, their pictures, and their
/// sample grids joined left to right into `<stem>_samples.png`.
fn write_table(path: &Path, results: &[VqvaeResults]) -> Result<()> {
    let mut md = String::from(
        "| run | bottleneck | codes | bits/dim (learned prior) | bits/dim (uniform prior) | \
         reconstruction | prior | perplexity | dead codes | test images |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for r in results {
        md.push_str(&format!(
            "| {} | {} | 2^{} × n_c {} | {:.4} | {:.4} | {:.4} | {:.4} | {} | {} | {} |\n",
            r.run,
            r.kind,
            r.bits,
            r.slices,
            r.bits_per_dim_learned_prior,
            r.bits_per_dim_uniform_prior,
            r.reconstruction_bits_per_dim,
            r.prior_bits_per_dim,
            r.codebook_perplexity
                .iter()
                .map(|p| format!("{p:.1}"))
                .collect::<Vec<_>>()
                .join(", "),
            r.dead_codes
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            r.test_images
        ));
    }
    md.push_str(
        "\nBits/dim = (−ln p(x|z) − ln p(z)) / (3072 ln 2), averaged over the test images.\n",
    );
    let mut grids = Vec::new();
    for r in results {
        md.push_str(&format!("\n## {} ({})\n\n", r.run, r.kind));
        for (name, file) in &r.pictures {
            md.push_str(&format!("- {name}: `{file}`\n"));
        }
        if let Some(samples) = r.pictures.get("samples") {
            grids.push(emvq_vision::picture::read_png(Path::new(samples))?);
        }
    }
    if !grids.is_empty() {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("table");
        let joined = path.with_file_name(format!("{stem}_samples.png"));
        write_png(&joined, &emvq_vision::picture::hstack(&grids, 8))?;
        md.push_str(&format!(
            "\nSamples side by side (left to right: {}): `{}`\n",
            results
                .iter()
                .map(|r| r.kind.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            joined.display()
        ));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    write_atomic(path, md.as_bytes())?;
    println!("table → {}", path.display());
    Ok(())
}

fn default_split() -> EvalSplit {
    EvalSplit::Test
}

/// `results.json` (test) or `results_valid.json`.
pub fn results_file(split: EvalSplit) -> &'static str {
    match split {
        EvalSplit::Test => RESULTS_FILE,
        EvalSplit::Valid => "results_valid.json",
    }
}

/// Bits/dim both ways and codebook health of one run on `split`, into
/// [`results_file`]; the pictures only for the test split.
pub fn evaluate_split(
    dir: &Path,
    device: Option<DeviceSpec>,
    split: EvalSplit,
) -> Result<VqvaeResults> {
    let start = Instant::now();
    let loaded = load_run(dir, device)?;
    let LoadedRun {
        run,
        config,
        device,
        model,
        prior,
        ..
    } = &loaded;
    let images = match split {
        EvalSplit::Test => {
            let test = load_cifar10(&config.data_dir()?, CifarSplit::Test)?;
            images_tensor(&test, Some(config.data.test_images))
        }
        EvalSplit::Valid => {
            ensure!(
                config.data.valid_images > 0,
                "run {}: data.valid_images is 0, no validation images held out",
                dir.display()
            );
            let train = load_cifar10(&config.data_dir()?, CifarSplit::Train)?;
            let (_, valid) = train_valid_ranges(
                train.len(),
                config.data.train_images,
                config.data.valid_images,
            )?;
            images_range(&train, valid)
        }
    };
    let n = images.size()[0];
    let bcfg = &config.model.bottleneck;
    let (health_t, health_m) = match bcfg.kind {
        emvq_bottleneck::BottleneckKind::Em => (bcfg.temperature, bcfg.samples),
        _ => (1.0, bcfg.samples.max(1)),
    };
    let mut health = emvq_vision::PosteriorHealth::default();
    let (slices, bits) = (config.model.bottleneck.slices, config.model.bottleneck.bits);
    let mut usage = CodeUsage::new(slices, config.model.bottleneck.codebook_size());
    let (mut nll_x, mut nll_z) = (Vec::new(), Vec::new());
    let mut recon = None;
    tch::no_grad(|| -> Result<()> {
        let mut at = 0;
        while at < n {
            let len = 100.min(n - at);
            let batch = images.narrow(0, at, len).to_device(*device);
            let out = model.forward(&batch, false)?;
            let codes = out.codes.flatten(1, 2); // [len, L, n_c]
            usage.add_codes(&codes)?;
            nll_x.extend(Vec::<f64>::try_from(
                out.nll.to_kind(Kind::Double).to_device(Device::Cpu),
            )?);
            health.add(&model.posterior_health(&batch, health_t, health_m)?);
            let z = prior.nll(&codes, false)?;
            nll_z.extend(Vec::<f64>::try_from(
                z.to_kind(Kind::Double).to_device(Device::Cpu),
            )?);
            if recon.is_none() {
                recon = Some(
                    mode_image(&out.logits)?
                        .narrow(0, 0, 32.min(len))
                        .to_device(Device::Cpu),
                );
            }
            at += len;
        }
        Ok(())
    })?;
    let uniform = uniform_prior_nats(config.model.latents(), slices, bits);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let ln2_dims = 3072.0 * std::f64::consts::LN_2;
    let bpd_uniform = mean(
        &nll_x
            .iter()
            .map(|&x| bits_per_dim(x, uniform))
            .collect::<Vec<_>>(),
    );
    let bpd_learned = mean(
        &nll_x
            .iter()
            .zip(&nll_z)
            .map(|(&x, &z)| bits_per_dim(x, z))
            .collect::<Vec<_>>(),
    );

    let mut pictures = BTreeMap::new();
    if split == EvalSplit::Test {
        write_pictures(
            &loaded,
            &images,
            &recon.expect("at least one batch"),
            &usage,
            &mut pictures,
        )?;
    }
    let results = VqvaeResults {
        run: run.path().display().to_string(),
        kind: format!("{:?}", config.model.bottleneck.kind).to_lowercase(),
        bits,
        slices,
        test_images: nll_x.len(),
        bits_per_dim_uniform_prior: bpd_uniform,
        bits_per_dim_learned_prior: bpd_learned,
        reconstruction_bits_per_dim: mean(&nll_x) / ln2_dims,
        prior_bits_per_dim: mean(&nll_z) / ln2_dims,
        codebook_perplexity: usage.perplexity(),
        dead_codes: usage.dead_count(),
        codebook_size: config.model.bottleneck.codebook_size(),
        split,
        posterior_entropy_nats: health.mean_entropy(),
        posterior_distinct_codes: health.mean_distinct(),
        pictures,
        seconds: start.elapsed().as_secs_f64(),
    };
    write_atomic(
        &run.path().join(results_file(split)),
        serde_json::to_string_pretty(&results)?.as_bytes(),
    )?;
    run.log_metrics(&serde_json::json!({ "kind": "eval", "results": &results }))?;
    println!(
        "{} [{split:?}]: bits/dim {:.4} (learned prior), {:.4} (uniform prior); reconstruction {:.4} + prior {:.4}; \
         perplexity {:?} of {}, dead codes {:?}; posterior entropy {:.3} nats, {:.2} distinct codes of {health_m} draws (T = {health_t}) ({} images)",
        results.run,
        results.bits_per_dim_learned_prior,
        results.bits_per_dim_uniform_prior,
        results.reconstruction_bits_per_dim,
        results.prior_bits_per_dim,
        results.codebook_perplexity.iter().map(|p| (p * 10.0).round() / 10.0).collect::<Vec<_>>(),
        results.codebook_size,
        results.dead_codes,
        results.posterior_entropy_nats,
        results.posterior_distinct_codes,
        results.test_images
    );
    Ok(results)
}

/// The test split's pictures: reconstructions, code usage per slice, samples.
fn write_pictures(
    loaded: &LoadedRun,
    images: &Tensor,
    recon: &Tensor,
    usage: &CodeUsage,
    pictures: &mut BTreeMap<String, String>,
) -> Result<()> {
    let (run, config) = (&loaded.run, &loaded.config);
    let slices = config.model.bottleneck.slices;
    let originals = images.narrow(0, 0, recon.size()[0]);
    let path = run.path().join("reconstructions.png");
    write_png(&path, &side_by_side(&originals, recon, 8)?)?;
    pictures.insert("reconstructions".into(), path.display().to_string());
    for s in 0..slices as usize {
        let path = run.path().join(format!("usage_slice{s}.png"));
        write_png(&path, &usage_chart(usage.counts(s), 200))?;
        pictures.insert(format!("usage_slice{s}"), path.display().to_string());
    }
    let path = run.path().join("samples.png");
    write_samples(
        loaded,
        config.sample.n,
        config.sample.seed,
        config.sample.temperature,
        &path,
    )?;
    pictures.insert("samples".into(), path.display().to_string());

    Ok(())
}

/// Draws `n` code grids from the prior (seeded), decodes them and writes the
/// most probable pixels as a grid of 8 columns.
fn write_samples(
    loaded: &LoadedRun,
    n: i64,
    seed: u64,
    temperature: f64,
    out: &Path,
) -> Result<()> {
    let cfg = &loaded.config.model;
    let images = tch::no_grad(|| -> Result<Tensor> {
        let codes = loaded.prior.sample(n, seed, temperature, loaded.device)?; // [n, L, n_c]
        let grid = codes.view([n, cfg.grid(), cfg.grid(), cfg.bottleneck.slices]);
        let mut parts = Vec::new();
        let mut at = 0;
        while at < n {
            let len = 64.min(n - at);
            parts.push(mode_image(
                &loaded.model.decode_codes(&grid.narrow(0, at, len))?,
            )?);
            at += len;
        }
        Ok(Tensor::cat(&parts, 0))
    })?;
    write_png(out, &image_grid(&images, 8, 2)?)?;
    Ok(())
}

/// `emvq sample --run DIR --n 64 --out FILE.png`.
pub fn sample(args: &SampleArgs) -> Result<()> {
    let loaded = load_run(&args.run, args.device)?;
    ensure!(args.n >= 1, "--n must be at least 1");
    let seed = args.seed.unwrap_or(loaded.config.sample.seed);
    let temperature = args.temperature.unwrap_or(loaded.config.sample.temperature);
    write_samples(&loaded, args.n, seed, temperature, &args.out)?;
    println!(
        "{} samples (seed {seed}, temperature {temperature}) → {}",
        args.n,
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_images_are_the_end_of_the_training_split_and_disjoint() {
        let (train, valid) = train_valid_ranges(50_000, None, 2_000).unwrap();
        assert_eq!((train, valid.clone()), (0..48_000, 48_000..50_000));
        // A training limit takes the first images, never validation ones.
        let (train, again) = train_valid_ranges(50_000, Some(49_500), 2_000).unwrap();
        assert_eq!((train, again), (0..48_000, valid));
        let (train, valid) = train_valid_ranges(100, Some(10), 5).unwrap();
        assert!(train.end <= valid.start && valid.len() == 5 && train.len() == 10);
        let (train, valid) = train_valid_ranges(100, None, 0).unwrap();
        assert_eq!((train, valid.len()), (0..100, 0));
        let err = train_valid_ranges(100, None, 100).unwrap_err();
        assert!(err.to_string().contains("valid_images"), "{err}");
    }
}
