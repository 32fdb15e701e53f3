//! One training step of the teacher (teacher forcing, label-smoothed loss,
//! clipping, Adam with the warm-up/rsqrt schedule of Roy et al. 2018,
//! arXiv 1805.11063), training checkpoints that resume exactly, and
//! checkpoint averaging.
//!
//! Exact resumption needs the random state of dropout. tch 0.24 exposes no
//! get/set of LibTorch's CPU generator state, so instead the generator is
//! reseeded at the start of every step from `(seed, step)` ([`step_seed`]):
//! step `t`'s dropout masks depend only on the seed and `t`, never on what
//! ran before, and a resumed run draws the same masks as a straight one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Kind, Tensor};

use crate::error::{Result, TransformerError};
use crate::model::Seq2Seq;
use crate::optim::{Adam, LrSchedule};
use emvq_tensor::{seed::seed_all, Checkpoint, CheckpointError};

/// The generator seed of step `step` (SplitMix64 of the run seed and step).
pub fn step_seed(seed: u64, step: i64) -> u64 {
    let mut z = seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) >> 1 // LibTorch seeds are taken as i64
}

/// Settings of [`train_step`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    pub label_smoothing: f64,
    /// Clip gradients to this global L2 norm; 0 turns clipping off.
    pub clip_norm: f64,
    /// Run seed; every step reseeds from `(seed, step)`.
    pub seed: u64,
}

/// What one step measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// The step just taken (1-based).
    pub step: i64,
    pub lr: f64,
    /// Mean label-smoothed loss per target token.
    pub loss: f64,
    /// Mean negative log-likelihood per target token.
    pub nll: f64,
    /// Non-padding target tokens.
    pub tokens: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
}

/// LibTorch's autocast dtype setting for a device type (`at::autocast::
/// {get,set}_autocast_dtype`, exported by libtorch_cpu but not bound by tch,
/// whose `tch::autocast` uses the CUDA default, float16). `DeviceType` and
/// `ScalarType` are `int8_t` enums.
mod ffi {
    extern "C" {
        #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
        pub fn get_autocast_dtype(device_type: i8) -> i8;
        #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
        pub fn set_autocast_dtype(device_type: i8, dtype: i8);
    }
    /// `c10::DeviceType::CUDA`.
    pub const CUDA: i8 = 1;
    /// `c10::ScalarType::BFloat16`.
    pub const BFLOAT16: i8 = 15;
}

/// The dtype CUDA autocast casts to on this thread (float16 unless set).
pub fn cuda_autocast_dtype() -> Kind {
    // SAFETY: reads a thread-local LibTorch setting; BFloat16 (15) and
    // Half (5) are the only values autocast accepts for CUDA.
    if unsafe { ffi::get_autocast_dtype(ffi::CUDA) } == ffi::BFLOAT16 {
        Kind::BFloat16
    } else {
        Kind::Half
    }
}

/// Runs `f` under CUDA autocast to bfloat16 (matmuls and other
/// autocast-listed ops in bf16, reductions in f32), then restores the
/// previous autocast dtype. Ops on CPU tensors are unaffected, so check the
/// device first (the teacher refuses `autocast_bf16` on the CPU).
pub fn with_bf16_autocast<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: reads, then sets, a thread-local LibTorch setting; the value
    // written back is one LibTorch held.
    let previous = unsafe { ffi::get_autocast_dtype(ffi::CUDA) };
    unsafe { ffi::set_autocast_dtype(ffi::CUDA, ffi::BFLOAT16) };
    let out = tch::autocast(true, f);
    unsafe { ffi::set_autocast_dtype(ffi::CUDA, previous) };
    out
}

/// One optimiser step over one or more micro-batches `(src, tgt)` (each
/// `[batch, len]` int64, `tgt` ending in EOS then padding); gradients are
/// accumulated and normalised by the total number of target tokens.
pub fn train_step(
    model: &Seq2Seq,
    opt: &mut Adam,
    schedule: &LrSchedule,
    batches: &[(Tensor, Tensor)],
    cfg: &StepConfig,
) -> Result<StepStats> {
    train_step_with(model, opt, schedule, batches, cfg, false)
}

/// [`train_step`], with the forward passes under bf16 CUDA autocast
/// ([`with_bf16_autocast`]) when `bf16_autocast` is set; backward passes,
/// gradients, clipping and Adam stay in f32.
pub fn train_step_with(
    model: &Seq2Seq,
    opt: &mut Adam,
    schedule: &LrSchedule,
    batches: &[(Tensor, Tensor)],
    cfg: &StepConfig,
    bf16_autocast: bool,
) -> Result<StepStats> {
    if batches.is_empty() {
        return Err(TransformerError::Input(
            "train_step needs at least one batch".into(),
        ));
    }
    let step = opt.step_count() + 1;
    seed_all(step_seed(cfg.seed, step));
    let pad = model.config().pad_id;
    let total_tokens: f64 = batches
        .iter()
        .map(|(_, tgt)| tgt.ne(pad).sum(Kind::Float).double_value(&[]))
        .sum();
    let norm = total_tokens.max(1.0);
    opt.zero_grad();
    let (mut loss_sum, mut nll_sum) = (0.0, 0.0);
    for (src, tgt) in batches {
        let forward = || model.loss(src, tgt, cfg.label_smoothing, true);
        let out = if bf16_autocast {
            with_bf16_autocast(forward)?
        } else {
            forward()?
        };
        out.loss_sum.f_div_scalar(norm)?.backward();
        loss_sum += out.loss_sum.double_value(&[]);
        nll_sum += out.nll_sum.double_value(&[]);
    }
    let grad_norm = if cfg.clip_norm > 0.0 {
        opt.clip_grad_norm(cfg.clip_norm)?.double_value(&[])
    } else {
        opt.clip_grad_norm(f64::INFINITY)?.double_value(&[])
    };
    let lr = schedule.lr(step);
    opt.step(lr)?;
    Ok(StepStats {
        step,
        lr,
        loss: loss_sum / norm,
        nll: nll_sum / norm,
        tokens: total_tokens,
        grad_norm,
    })
}

/// Loss on held-out data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalStats {
    /// Mean label-smoothed loss per target token.
    pub loss: f64,
    /// Mean negative log-likelihood per target token.
    pub nll: f64,
    pub tokens: f64,
}

/// Teacher-forced loss over `(src, tgt)` batches, without dropout or gradients.
pub fn evaluate<'a>(
    model: &Seq2Seq,
    batches: impl IntoIterator<Item = &'a (Tensor, Tensor)>,
    label_smoothing: f64,
) -> Result<EvalStats> {
    let _guard = tch::no_grad_guard();
    let (mut loss, mut nll, mut tokens) = (0.0, 0.0, 0.0);
    for (src, tgt) in batches {
        let out = model.loss(src, tgt, label_smoothing, false)?;
        loss += out.loss_sum.double_value(&[]);
        nll += out.nll_sum.double_value(&[]);
        tokens += out.tokens.double_value(&[]);
    }
    let norm = tokens.max(1.0);
    Ok(EvalStats {
        loss: loss / norm,
        nll: nll / norm,
        tokens,
    })
}

/// Writes model variables, Adam moments and step, and `metadata` (config,
/// data position…) to `path`, atomically.
pub fn save_training_checkpoint(
    path: &Path,
    vs: &VarStore,
    opt: &Adam,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut ckpt = Checkpoint::from_var_store(vs);
    opt.save_into(&mut ckpt);
    ckpt.metadata
        .extend(metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(ckpt.save(path)?)
}

/// Restores what [`save_training_checkpoint`] wrote into `vs` and `opt`;
/// returns the checkpoint (for its metadata).
pub fn load_training_checkpoint(path: &Path, vs: &VarStore, opt: &mut Adam) -> Result<Checkpoint> {
    let ckpt = Checkpoint::load(path)?;
    ckpt.restore_into(vs, path)?;
    opt.load_from(&ckpt, path)?;
    Ok(ckpt)
}

/// The element-wise mean of the model tensors of several checkpoints
/// (optimizer state, `optimizer.*`, is dropped); floating-point tensors are
/// averaged in f64, others must be equal. Metadata comes from the last file.
pub fn average_checkpoints(paths: &[PathBuf]) -> Result<Checkpoint> {
    let (last, rest) = paths
        .split_last()
        .ok_or_else(|| TransformerError::Input("no checkpoints to average".into()))?;
    let mut sums: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut kinds: BTreeMap<String, Kind> = BTreeMap::new();
    let mut metadata = BTreeMap::new();
    for (i, path) in rest.iter().chain(std::iter::once(last)).enumerate() {
        let ckpt = Checkpoint::load(path)?;
        let model: BTreeMap<_, _> = ckpt
            .tensors
            .into_iter()
            .filter(|(k, _)| !k.starts_with("optimizer."))
            .collect();
        if i > 0 && (model.len() != sums.len() || model.keys().any(|k| !sums.contains_key(k))) {
            return Err(CheckpointError::Corrupt {
                path: path.clone(),
                reason: format!("its tensors differ from those of {}", paths[0].display()),
            }
            .into());
        }
        for (name, t) in model {
            let float = t.is_floating_point();
            match sums.get_mut(&name) {
                None => {
                    kinds.insert(name.clone(), t.kind());
                    sums.insert(name, if float { t.to_kind(Kind::Double) } else { t });
                }
                Some(sum) if sum.size() != t.size() => {
                    return Err(CheckpointError::Shape {
                        path: path.clone(),
                        name,
                        found: t.size(),
                        expected: sum.size(),
                    }
                    .into())
                }
                Some(sum) if float => *sum += t.to_kind(Kind::Double),
                Some(sum) if !sum.equal(&t) => {
                    return Err(CheckpointError::Corrupt {
                        path: path.clone(),
                        reason: format!("non-float tensor {name:?} differs between checkpoints"),
                    }
                    .into())
                }
                Some(_) => {}
            }
        }
        metadata = ckpt.metadata;
    }
    let n = paths.len() as f64;
    let tensors = sums
        .into_iter()
        .map(|(name, t)| {
            let kind = kinds[&name];
            let t = if matches!(
                kind,
                Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16
            ) {
                (t / n).to_kind(kind)
            } else {
                t
            };
            (name, t)
        })
        .collect();
    metadata.insert("averaged_checkpoints".into(), paths.len().to_string());
    Ok(Checkpoint { tensors, metadata })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_seeds_differ_by_step_and_run() {
        let a: Vec<u64> = (1..100).map(|s| step_seed(7, s)).collect();
        let mut dedup = a.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), a.len());
        assert_ne!(step_seed(7, 1), step_seed(8, 1));
        assert!(a.iter().all(|&s| s <= i64::MAX as u64));
    }

    #[test]
    fn bf16_autocast_sets_the_cuda_dtype_only_inside() {
        // The dtype setting is LibTorch state, readable without a GPU.
        assert_eq!(cuda_autocast_dtype(), Kind::Half);
        let inside = with_bf16_autocast(cuda_autocast_dtype);
        assert_eq!(inside, Kind::BFloat16);
        assert_eq!(cuda_autocast_dtype(), Kind::Half);
    }

    #[test]
    fn evaluation_is_the_mean_over_all_batches_and_deterministic() {
        use crate::model::tests::tiny_config;
        tch::manual_seed(0);
        let vs = VarStore::new(tch::Device::Cpu);
        let model = Seq2Seq::new(vs.root(), &tiny_config(12)).unwrap();
        let b1 = (
            Tensor::from_slice2(&[[5i64, 6, 2]]),
            Tensor::from_slice2(&[[7i64, 8, 9, 2]]),
        );
        let b2 = (
            Tensor::from_slice2(&[[4i64, 2, 0]]),
            Tensor::from_slice2(&[[10i64, 2, 0, 0]]),
        );
        let one = evaluate(&model, [&b1], 0.1).unwrap();
        let two = evaluate(&model, [&b2], 0.1).unwrap();
        let both = evaluate(&model, [&b1, &b2], 0.1).unwrap();
        assert_eq!((one.tokens, two.tokens, both.tokens), (4.0, 2.0, 6.0));
        assert!((both.loss - (4.0 * one.loss + 2.0 * two.loss) / 6.0).abs() < 1e-6);
        assert!(both.nll < both.loss + 1.0 && both.nll > 0.0);
        assert_eq!(evaluate(&model, [&b1, &b2], 0.1).unwrap(), both);
    }
}
