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
    /// Training images used (absent: all 50,000).
    #[serde(default)]
    pub train_images: Option<usize>,
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
    let flat = data.images.as_slice().expect("standard layout");
    Tensor::from_slice(&flat[..n * 3072]).view([n as i64, 3, 32, 32]) // [n, 3, 32, 32]
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
    let train_images = images_tensor(&train_set, config.data.train_images);
    drop(train_set);
    let n_train = train_images.size()[0];
    tracing::info!(
        "vqvae {} ({:?} bottleneck, {} bits × n_c {}) on {device:?}, {} threads, {n_train} training images",
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
    let settings = &config.train;
    let mut order = Order::new(n_train, config.seed);
    let mut stage = Stage::new("vqvae", settings);
    let ckpt_dir = run.checkpoint_dir();
    std::fs::create_dir_all(&ckpt_dir)?;
    let meta = |stage: &str| {
        BTreeMap::from([
            ("stage".to_string(), stage.to_string()),
            ("config".to_string(), config_text.clone()),
        ])
    };
    let mut step = 0;
    while !stage.done(step) {
        let images = train_images
            .index_select(0, &order.next(settings.batch_size))
            .to_device(device);
        tch::manual_seed(emvq_transformer::step_seed(config.seed, step + 1) as i64);
        let out = model.forward(&images, true)?;
        let loss = out.loss()?;
        opt.zero_grad();
        loss.backward();
        let grad_norm = clip(&mut opt, settings.clip_norm)?;
        step += 1;
        let lr = settings.lr(step);
        opt.step(lr)?;
        let loss_v = loss.double_value(&[]);
        if let Some(rate) = stage.tick(step, settings.batch_size as f64, loss_v) {
            let nll_bpd =
                out.nll.mean(Kind::Float).double_value(&[]) / (3072.0 * std::f64::consts::LN_2);
            let commitment = out.bottleneck.commitment_loss.double_value(&[]);
            let mut usage = CodeUsage::new(
                config.model.bottleneck.slices,
                config.model.bottleneck.codebook_size(),
            );
            usage.add_codes(&out.codes)?;
            let record = serde_json::json!({
                "kind": "train_vqvae", "step": step, "loss": loss_v, "nll_bits_per_dim": nll_bpd,
                "commitment": commitment, "lr": lr, "grad_norm": grad_norm, "images_per_s": rate,
                "batch_perplexity": usage.perplexity(), "epoch": order.epoch,
                "seconds": stage.start.elapsed().as_secs_f64(),
            });
            run.log_metrics(&record)?;
            stage.bar.suspend(|| {
                tracing::info!(
                    "vqvae step {step} loss {loss_v:.4} nll {nll_bpd:.3} bits/dim commit {commitment:.4} |g| {grad_norm:.2} {rate:.1} img/s"
                )
            });
        }
        if step % settings.checkpoint_every == 0 {
            save_training_checkpoint(
                &ckpt_dir.join("vqvae-last.safetensors"),
                &vs,
                &opt,
                &meta("vqvae"),
            )?;
        }
    }
    stage.bar.finish_and_clear();
    let ae_seconds = stage.start.elapsed().as_secs_f64();
    save_training_checkpoint(
        &ckpt_dir.join("vqvae-last.safetensors"),
        &vs,
        &opt,
        &meta("vqvae"),
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
    let mut order = Order::new(n_train, config.seed.wrapping_add(1));
    let mut stage = Stage::new("prior", psettings);
    let mut step = 0;
    while !stage.done(step) {
        let batch = codes
            .index_select(0, &order.next(psettings.batch_size))
            .to_device(device);
        tch::manual_seed(emvq_transformer::step_seed(config.seed.wrapping_add(1), step + 1) as i64);
        let loss = prior.loss(&batch)?;
        popt.zero_grad();
        loss.backward();
        let grad_norm = clip(&mut popt, psettings.clip_norm)?;
        step += 1;
        let lr = psettings.lr(step);
        popt.step(lr)?;
        let loss_v = loss.double_value(&[]);
        if let Some(rate) = stage.tick(step, psettings.batch_size as f64, loss_v) {
            let record = serde_json::json!({
                "kind": "train_prior", "step": step, "loss_nats_per_code": loss_v,
                "prior_bits_per_dim": loss_v * (config.model.latents() * config.model.bottleneck.slices) as f64
                    / (3072.0 * std::f64::consts::LN_2),
                "lr": lr, "grad_norm": grad_norm, "sequences_per_s": rate, "epoch": order.epoch,
                "seconds": stage.start.elapsed().as_secs_f64(),
            });
            run.log_metrics(&record)?;
            stage.bar.suspend(|| tracing::info!("prior step {step} loss {loss_v:.4} nats/code |g| {grad_norm:.2} {rate:.0} seq/s"));
        }
        if step % psettings.checkpoint_every == 0 {
            save_training_checkpoint(
                &ckpt_dir.join("prior-last.safetensors"),
                &pvs,
                &popt,
                &meta("prior"),
            )?;
        }
    }
    stage.bar.finish_and_clear();
    save_training_checkpoint(
        &ckpt_dir.join("prior-last.safetensors"),
        &pvs,
        &popt,
        &meta("prior"),
    )?;
    save_model(&run.path().join(PRIOR_FILE), &pvs, step, &config_text)?;
    tracing::info!(
        "prior: {step} steps in {:.0} s → {}",
        stage.start.elapsed().as_secs_f64(),
        run.path().join(PRIOR_FILE).display()
    );
    drop((model, prior, vs, pvs));

    evaluate_run(run.path(), Some(config.device))?;
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
    pub pictures: BTreeMap<String, String>,
    pub seconds: f64,
}

/// `emvq eval-vqvae --run DIR [--run DIR2 …] [--table FILE.md]`.
pub fn evaluate(args: &EvalArgs) -> Result<Vec<VqvaeResults>> {
    let mut all = Vec::new();
    for dir in &args.run {
        let cached = dir.join(RESULTS_FILE);
        if args.reuse && cached.is_file() {
            let text = std::fs::read_to_string(&cached)?;
            all.push(serde_json::from_str(&text).with_context(|| format!("{}", cached.display()))?);
        } else {
            all.push(evaluate_run(dir, args.device)?);
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

/// Bits/dim both ways, codebook health and pictures of one run, into its
/// `results.json`.
pub fn evaluate_run(dir: &Path, device: Option<DeviceSpec>) -> Result<VqvaeResults> {
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
    let test = load_cifar10(&config.data_dir()?, CifarSplit::Test)?;
    let images = images_tensor(&test, Some(config.data.test_images));
    let n = images.size()[0];
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
    let recon = recon.expect("at least one batch");
    let originals = images.narrow(0, 0, recon.size()[0]);
    let path = run.path().join("reconstructions.png");
    write_png(&path, &side_by_side(&originals, &recon, 8)?)?;
    pictures.insert("reconstructions".into(), path.display().to_string());
    for s in 0..slices as usize {
        let path = run.path().join(format!("usage_slice{s}.png"));
        write_png(&path, &usage_chart(usage.counts(s), 200))?;
        pictures.insert(format!("usage_slice{s}"), path.display().to_string());
    }
    let path = run.path().join("samples.png");
    write_samples(
        &loaded,
        config.sample.n,
        config.sample.seed,
        config.sample.temperature,
        &path,
    )?;
    pictures.insert("samples".into(), path.display().to_string());

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
        pictures,
        seconds: start.elapsed().as_secs_f64(),
    };
    write_atomic(
        &run.path().join(RESULTS_FILE),
        serde_json::to_string_pretty(&results)?.as_bytes(),
    )?;
    run.log_metrics(&serde_json::json!({ "kind": "eval", "results": &results }))?;
    println!(
        "{}: bits/dim {:.4} (learned prior), {:.4} (uniform prior); reconstruction {:.4} + prior {:.4}; \
         perplexity {:?} of {}, dead codes {:?} ({} test images)",
        results.run,
        results.bits_per_dim_learned_prior,
        results.bits_per_dim_uniform_prior,
        results.reconstruction_bits_per_dim,
        results.prior_bits_per_dim,
        results.codebook_perplexity.iter().map(|p| (p * 10.0).round() / 10.0).collect::<Vec<_>>(),
        results.codebook_size,
        results.dead_codes,
        results.test_images
    );
    Ok(results)
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
