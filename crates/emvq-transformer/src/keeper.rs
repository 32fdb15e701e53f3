//! Checkpoint rotation for training runs (issue 6 of emvq, the teacher of
//! Roy et al. 2018, arXiv 1805.11063): every save writes
//! `step_<step>.safetensors` (model, Adam moments, step, caller metadata),
//! keeps only the last K of those, and copies a checkpoint whose validation
//! loss is the lowest so far to `best.safetensors`. Its listings give the
//! checkpoint to resume from and the last N to average.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::nn::VarStore;

use crate::error::{Result, TransformerError};
use crate::optim::Adam;
use crate::train::save_training_checkpoint;
use emvq_tensor::{fsutil::write_atomic, Checkpoint, CheckpointError};

/// Metadata key of the validation loss in a checkpoint.
pub const VAL_LOSS_KEY: &str = "val_loss";
/// Metadata key of the training step in a checkpoint.
pub const STEP_KEY: &str = "step";
const BEST: &str = "best.safetensors";

/// Where a save went.
#[derive(Debug, Clone, PartialEq)]
pub struct Saved {
    pub path: PathBuf,
    /// The save was also copied to `best.safetensors`.
    pub is_best: bool,
}

/// Keeps the last `keep_last` step checkpoints and the best one in `dir`.
#[derive(Debug)]
pub struct CheckpointKeeper {
    dir: PathBuf,
    keep_last: usize,
    best_loss: Option<f64>,
}

impl CheckpointKeeper {
    /// Opens `dir` (created if missing); a `best.safetensors` already there
    /// (a resumed run) sets the loss to beat.
    pub fn new(dir: &Path, keep_last: usize) -> Result<Self> {
        if keep_last == 0 {
            return Err(TransformerError::Config(
                "keep_last must be at least 1".into(),
            ));
        }
        std::fs::create_dir_all(dir).map_err(|source| CheckpointError::Write {
            path: dir.into(),
            source,
        })?;
        let best = dir.join(BEST);
        let best_loss = if best.is_file() {
            let ckpt = Checkpoint::load(&best)?;
            Some(parse_meta::<f64>(&ckpt, VAL_LOSS_KEY, &best)?)
        } else {
            None
        };
        Ok(Self {
            dir: dir.into(),
            keep_last,
            best_loss,
        })
    }

    /// `step_<step, 8 digits>.safetensors` in the directory.
    pub fn step_path(&self, step: i64) -> PathBuf {
        self.dir.join(format!("step_{step:08}.safetensors"))
    }

    pub fn best_path(&self) -> PathBuf {
        self.dir.join(BEST)
    }

    /// The lowest validation loss saved so far.
    pub fn best_loss(&self) -> Option<f64> {
        self.best_loss
    }

    /// Saves a training checkpoint for the optimiser's current step, with
    /// `metadata` plus `step` and (if given) `val_loss`; rotates old ones.
    pub fn save(
        &mut self,
        vs: &VarStore,
        opt: &Adam,
        val_loss: Option<f64>,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Saved> {
        let step = opt.step_count();
        let mut meta = metadata.clone();
        meta.insert(STEP_KEY.into(), step.to_string());
        if let Some(loss) = val_loss {
            meta.insert(VAL_LOSS_KEY.into(), format!("{loss:e}"));
        }
        let path = self.step_path(step);
        save_training_checkpoint(&path, vs, opt, &meta)?;
        let is_best = match (val_loss, self.best_loss) {
            (Some(loss), Some(best)) => loss < best,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if is_best {
            let bytes = std::fs::read(&path).map_err(|source| CheckpointError::Read {
                path: path.clone(),
                source,
            })?;
            let best = self.best_path();
            write_atomic(&best, &bytes)
                .map_err(|source| CheckpointError::Write { path: best, source })?;
            self.best_loss = val_loss;
        }
        let steps = self.steps()?;
        for old in steps
            .iter()
            .take(steps.len().saturating_sub(self.keep_last))
        {
            let old = self.step_path(*old);
            std::fs::remove_file(&old)
                .map_err(|source| CheckpointError::Write { path: old, source })?;
        }
        Ok(Saved { path, is_best })
    }

    /// Steps of the step checkpoints present, ascending.
    pub fn steps(&self) -> Result<Vec<i64>> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| CheckpointError::Read {
            path: self.dir.clone(),
            source,
        })?;
        let mut steps: Vec<i64> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("step_")?
                    .strip_suffix(".safetensors")?
                    .parse()
                    .ok()
            })
            .collect();
        steps.sort_unstable();
        Ok(steps)
    }

    /// The newest step checkpoint (to resume from).
    pub fn latest(&self) -> Result<Option<PathBuf>> {
        Ok(self.steps()?.last().map(|&s| self.step_path(s)))
    }

    /// The newest `n` step checkpoints, oldest first (to average).
    pub fn last_n(&self, n: usize) -> Result<Vec<PathBuf>> {
        let steps = self.steps()?;
        Ok(steps[steps.len().saturating_sub(n)..]
            .iter()
            .map(|&s| self.step_path(s))
            .collect())
    }
}

/// A metadata value parsed as `T`, or an error naming the file and key.
pub fn parse_meta<T: std::str::FromStr>(ckpt: &Checkpoint, key: &str, path: &Path) -> Result<T> {
    let raw = ckpt.meta(key, path)?;
    raw.parse().map_err(|_| {
        CheckpointError::Corrupt {
            path: path.into(),
            reason: format!("metadata {key:?} = {raw:?} does not parse"),
        }
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::AdamConfig;
    use tch::{Device, Kind, Tensor};

    fn step(vs: &VarStore, opt: &mut Adam) {
        let w = vs.variables()["w"].shallow_clone();
        opt.zero_grad();
        (&w * &w).sum(Kind::Float).backward();
        opt.step(0.1).unwrap();
    }

    #[test]
    fn keeps_last_k_and_the_best_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let vs = VarStore::new(Device::Cpu);
        let _w = vs.root().var_copy("w", &Tensor::from_slice(&[1.0f32, 2.0]));
        let mut opt = Adam::new(&vs, &AdamConfig::default()).unwrap();
        let mut keeper = CheckpointKeeper::new(dir.path(), 2).unwrap();
        let meta = BTreeMap::from([("seed".to_string(), "7".to_string())]);
        let losses = [3.0, 2.0, 2.5, 2.2, 1.5];
        let mut best_flags = vec![];
        for loss in losses {
            step(&vs, &mut opt);
            best_flags.push(keeper.save(&vs, &opt, Some(loss), &meta).unwrap().is_best);
        }
        assert_eq!(best_flags, [true, true, false, false, true]);
        assert_eq!(keeper.steps().unwrap(), [4, 5]);
        assert_eq!(keeper.latest().unwrap(), Some(keeper.step_path(5)));
        assert_eq!(
            keeper.last_n(3).unwrap(),
            [keeper.step_path(4), keeper.step_path(5)]
        );
        let best = Checkpoint::load(&keeper.best_path()).unwrap();
        assert_eq!(
            parse_meta::<i64>(&best, STEP_KEY, &keeper.best_path()).unwrap(),
            5
        );
        assert_eq!(best.metadata["seed"], "7");
        assert!(best.tensors.contains_key("optimizer.exp_avg.w"));

        // Reopened (a resumed run): the best loss comes from best.safetensors.
        let mut again = CheckpointKeeper::new(dir.path(), 2).unwrap();
        assert_eq!(again.best_loss(), Some(1.5));
        step(&vs, &mut opt);
        assert!(!again.save(&vs, &opt, Some(1.7), &meta).unwrap().is_best);
        assert!(!again.save(&vs, &opt, None, &meta).unwrap().is_best);
        assert_eq!(again.steps().unwrap(), [5, 6]);
    }

    #[test]
    fn zero_kept_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            CheckpointKeeper::new(dir.path(), 0),
            Err(TransformerError::Config(_))
        ));
    }
}
