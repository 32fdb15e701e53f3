//! Steps of a training run that the teacher's trainer (`crate::teacher`) and
//! the NAT trainers (`crate::nat::train_loop`) share: the common command-line
//! options ([`RunArgs`]), the common `[train]`
//! checks, Adam and the schedule, refusing to overwrite a
//! run without `--resume`, checking a resumed run's config, exact resume from
//! the newest checkpoint, the validation set, step checkpoints with their
//! metadata, the progress bar's time left, and the final model (the average
//! of the last checkpoints).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use emvq_bleu::{Bleu, BleuConfig};
use emvq_data::{Batcher, DataPosition, PreparedTranslation, TranslationDataConfig};
use emvq_tensor::{Checkpoint, DeviceSpec, RunDir};
use emvq_transformer::keeper::{parse_meta, Saved, STEP_KEY};
use emvq_transformer::{
    average_checkpoints, load_training_checkpoint, Adam, AdamConfig, CheckpointKeeper, LrSchedule,
};
use serde::de::DeserializeOwned;
use tch::{nn::VarStore, Device, Tensor};

use super::{batch_tensors, CONFIG_KEY, MODEL_FILE, POSITION_KEY, SECONDS_KEY};

/// The command-line options every trainer takes (flattened into its
/// `TrainArgs` after `--config`).
#[derive(Debug, clap::Args)]
pub struct RunArgs {
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
}

impl RunArgs {
    /// Applies `--name`, `--device`, `--max-steps` and `--max-minutes` to a
    /// config's `name`, `device` and `train.max_steps`, `train.max_minutes`.
    pub fn apply(
        &self,
        name: &mut String,
        device: &mut DeviceSpec,
        (max_steps, max_minutes): (&mut Option<i64>, &mut Option<f64>),
    ) {
        if let Some(n) = &self.name {
            name.clone_from(n);
        }
        if let Some(d) = self.device {
            *device = d;
        }
        if self.max_steps.is_some() {
            *max_steps = self.max_steps;
        }
        if self.max_minutes.is_some() {
            *max_minutes = self.max_minutes;
        }
    }
}

/// Checks of the `[train]` keys every trainer has: the learning-rate
/// schedule, the stopping rule (`max_steps`, `max_minutes`: at least one)
/// and the `log_every`, `eval_every`, `checkpoint_every` periods.
pub(crate) fn check_train_limits(
    lr_scale: f64,
    warmup_steps: i64,
    max_steps: Option<i64>,
    max_minutes: Option<f64>,
    [log_every, eval_every, checkpoint_every]: [i64; 3],
) -> Result<()> {
    ensure!(lr_scale > 0.0, "train.lr_scale must be positive");
    ensure!(warmup_steps >= 1, "train.warmup_steps must be at least 1");
    ensure!(
        max_steps.is_some() || max_minutes.is_some(),
        "set train.max_steps or train.max_minutes (or both)"
    );
    ensure!(
        max_steps.is_none_or(|s| s >= 1),
        "train.max_steps must be at least 1"
    );
    ensure!(
        max_minutes.is_none_or(|m| m > 0.0),
        "train.max_minutes must be positive"
    );
    ensure!(
        log_every >= 1 && eval_every >= 1 && checkpoint_every >= 1,
        "train.log_every, eval_every and checkpoint_every must be at least 1"
    );
    Ok(())
}

/// Adam without weight decay (`[train]` `adam_beta1`, `adam_beta2`,
/// `adam_eps`) and the paper's learning-rate schedule (`lr_scale`,
/// `warmup_steps`) for a model of width `d_model`.
pub(crate) fn adam_and_schedule(
    [beta1, beta2, eps]: [f64; 3],
    lr_scale: f64,
    warmup_steps: i64,
    d_model: i64,
) -> (AdamConfig, LrSchedule) {
    let adam = AdamConfig {
        beta1,
        beta2,
        eps,
        weight_decay: 0.0,
    };
    let schedule = LrSchedule {
        scale: lr_scale,
        warmup_steps,
        d_model,
    };
    (adam, schedule)
}

/// Refuses to train into `run` when it holds step checkpoints and
/// `--resume` was not given.
pub(crate) fn refuse_overwrite(run: &RunDir, resume: bool) -> Result<()> {
    let has_checkpoints = run.checkpoint_dir().is_dir()
        && !CheckpointKeeper::new(&run.checkpoint_dir(), 1)?
            .steps()?
            .is_empty();
    if has_checkpoints && !resume {
        bail!(
            "run {} already has checkpoints: pass --resume to continue it, or --name for a new run",
            run.path().display()
        );
    }
    Ok(())
}

/// With `resume`, refuses a config (read from `file`) that `same` finds to
/// differ from the run's saved one in model, data or seed.
pub(crate) fn check_resumed_config<C: DeserializeOwned>(
    run: &RunDir,
    resume: bool,
    file: &Path,
    same: impl FnOnce(&C) -> bool,
) -> Result<()> {
    if resume && run.config_path().is_file() {
        let saved: C = run.load_config()?;
        ensure!(
            same(&saved),
            "--resume: the model, data or seed of {} differ from the run's saved config {}",
            file.display(),
            run.config_path().display()
        );
    }
    Ok(())
}

/// Where a resumed run goes on from.
pub(crate) struct Resumed {
    /// The checkpoint loaded.
    pub path: PathBuf,
    pub position: DataPosition,
    /// Training time already spent.
    pub seconds: f64,
}

/// Loads the newest checkpoint of `keeper` into `vs` and `opt` (model,
/// Adam moments, step) with the data position and training time it saved;
/// `None` when there is none.
pub(crate) fn resume_latest(
    keeper: &CheckpointKeeper,
    vs: &VarStore,
    opt: &mut Adam,
) -> Result<Option<Resumed>> {
    let Some(path) = keeper.latest()? else {
        return Ok(None);
    };
    let ckpt = load_training_checkpoint(&path, vs, opt)?;
    let position = serde_json::from_str(ckpt.meta(POSITION_KEY, &path)?)
        .with_context(|| format!("{}: bad {POSITION_KEY}", path.display()))?;
    let seconds = parse_meta(&ckpt, SECONDS_KEY, &path)?;
    Ok(Some(Resumed {
        path,
        position,
        seconds,
    }))
}

/// The validation split as the trainers score it.
pub(crate) struct ValidSet {
    pub device: Device,
    /// `(src, tgt)` `[batch, len]` each, on `device`.
    pub batches: Vec<(Tensor, Tensor)>,
    /// Source ids (ending in EOS), for BLEU.
    pub sources: Vec<Vec<u32>>,
    /// BLEU against the raw targets of `sources`.
    pub bleu: Bleu,
}

impl ValidSet {
    pub fn new(
        prepared: &PreparedTranslation,
        data: &TranslationDataConfig,
        device: Device,
    ) -> Result<Self> {
        let valid = &prepared.valid;
        let batcher = Batcher::new(valid.encoded.clone(), data.batch_config(false))?;
        let references: Vec<String> = valid
            .encoded
            .line_index
            .iter()
            .map(|&i| valid.raw.target[i].clone())
            .collect();
        Ok(Self {
            device,
            batches: batcher
                .epoch(0)
                .map(|b| batch_tensors(&b, device))
                .collect(),
            sources: valid.encoded.source.clone(),
            bleu: Bleu::new(BleuConfig::default(), &[references])?,
        })
    }
}

/// Writes a run's checkpoints: its variables, with its resolved config's
/// text in the metadata.
pub(crate) struct RunWriter<'a> {
    pub vs: &'a VarStore,
    pub config_text: String,
}

impl RunWriter<'_> {
    /// A step checkpoint (model, Adam moments, step) with the data position
    /// and the training time so far; `val_loss` ranks it for `best`.
    pub fn save(
        &self,
        keeper: &mut CheckpointKeeper,
        opt: &Adam,
        val_loss: Option<f64>,
        position: DataPosition,
        seconds: f64,
    ) -> Result<Saved> {
        let meta = BTreeMap::from([
            (POSITION_KEY.to_string(), serde_json::to_string(&position)?),
            (SECONDS_KEY.to_string(), format!("{seconds:e}")),
            (CONFIG_KEY.to_string(), self.config_text.clone()),
        ]);
        Ok(keeper.save(self.vs, opt, val_loss, &meta)?)
    }

    /// The final model at `step`: the average of the last `n` checkpoints of
    /// `keeper` (with step and config) into `path`, then loaded into the
    /// variables; returns how many were averaged.
    pub fn write_final(
        &self,
        keeper: &CheckpointKeeper,
        n: usize,
        step: i64,
        path: &Path,
    ) -> Result<usize> {
        let paths = keeper.last_n(n)?;
        let mut final_ckpt = average_checkpoints(&paths)?;
        final_ckpt
            .metadata
            .insert(STEP_KEY.into(), step.to_string());
        final_ckpt
            .metadata
            .insert(CONFIG_KEY.into(), self.config_text.clone());
        final_ckpt.save(path)?;
        final_ckpt.restore_into(self.vs, path)?;
        Ok(paths.len())
    }
}

/// Moves `bar` to `step` after `seconds` of training and returns the
/// seconds left: at the step rate so far to `max_steps`, capped by the time
/// `budget`; without `max_steps` the bar's length follows the budget.
pub(crate) fn advance_bar(
    bar: &indicatif::ProgressBar,
    step: i64,
    seconds: f64,
    max_steps: Option<i64>,
    budget: Option<f64>,
) -> f64 {
    let rate = step as f64 / seconds.max(1e-9);
    let remaining = match (max_steps, budget) {
        (Some(m), b) => {
            let by_steps = (m - step) as f64 / rate.max(1e-9);
            b.map_or(by_steps, |b| by_steps.min(b - seconds))
        }
        (None, Some(b)) => b - seconds,
        (None, None) => unreachable!("validated: max_steps or max_minutes is set"),
    };
    if max_steps.is_none() {
        bar.set_length(step as u64 + (remaining.max(0.0) * rate) as u64);
    }
    bar.set_position(step as u64);
    remaining
}

/// Restores a finished or interrupted run's weights into `vs`: its final
/// `model.safetensors`, else the best checkpoint, else the newest; returns
/// the file read. The matrices are then stored column-major
/// ([`emvq_tensor::layout`]): the same values, faster batch-1 products.
pub(crate) fn restore_run_weights(run: &RunDir, vs: &VarStore) -> Result<PathBuf> {
    let keeper = CheckpointKeeper::new(&run.checkpoint_dir(), 1)?;
    let weights = [run.path().join(MODEL_FILE), keeper.best_path()]
        .into_iter()
        .find(|p| p.is_file())
        .or(keeper.latest()?)
        .with_context(|| format!("run {} has no model or checkpoint", run.path().display()))?;
    Checkpoint::load(&weights)?.restore_into(vs, &weights)?;
    emvq_tensor::layout::column_major_matrices(vs);
    Ok(weights)
}
