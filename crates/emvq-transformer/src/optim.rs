//! Adam (Kingma & Ba 2015) with moments this crate owns, so that they can be
//! written into a [`Checkpoint`] and restored (tch's built-in optimiser keeps
//! them inside LibTorch, out of reach); the warm-up + inverse-square-root
//! learning rate of Roy et al. 2018 (arXiv 1805.11063) / T2T,
//! `lr(t) = c · min(1, t/w) · max(t, w)^−½ · d^−½`; and gradient clipping by
//! global norm.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Kind, Tensor};

use crate::error::{Result, TransformerError};
use emvq_tensor::{Checkpoint, CheckpointError};

/// Adam's hyper-parameters. The paper's: β₁ 0.9, β₂ 0.997, ε 1e-9.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay (AdamW); 0 for plain Adam.
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.997,
            eps: 1e-9,
            weight_decay: 0.0,
        }
    }
}

/// `lr(t) = scale · min(1, t/warmup) · max(t, warmup)^−½ · d_model^−½`
/// (T2T's `constant*linear_warmup*rsqrt_decay*rsqrt_hidden_size`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrSchedule {
    /// The constant `c` (2.0 in the paper's NAT runs).
    pub scale: f64,
    pub warmup_steps: i64,
    pub d_model: i64,
}

impl LrSchedule {
    /// The learning rate of step `t` (counted from 1).
    pub fn lr(&self, step: i64) -> f64 {
        let (t, w) = (step.max(1) as f64, self.warmup_steps.max(1) as f64);
        self.scale * (t / w).min(1.0) * t.max(w).powf(-0.5) * (self.d_model as f64).powf(-0.5)
    }
}

const STEP_KEY: &str = "optimizer.step";

/// Adam over the trainable variables of a var store, in name order.
#[derive(Debug)]
pub struct Adam {
    cfg: AdamConfig,
    names: Vec<String>,
    params: Vec<Tensor>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    step: i64,
}

impl Adam {
    pub fn new(vs: &VarStore, cfg: &AdamConfig) -> Result<Self> {
        if !(0.0..1.0).contains(&cfg.beta1) || !(0.0..1.0).contains(&cfg.beta2) || cfg.eps <= 0.0 {
            return Err(TransformerError::Config(format!(
                "invalid Adam settings: {cfg:?}"
            )));
        }
        let mut vars: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let zeros = |t: &Tensor| t.f_zeros_like();
        let exp_avg = vars
            .iter()
            .map(|(_, t)| zeros(t))
            .collect::<Result<_, _>>()?;
        let exp_avg_sq = vars
            .iter()
            .map(|(_, t)| zeros(t))
            .collect::<Result<_, _>>()?;
        let (names, params) = vars.into_iter().unzip();
        Ok(Self {
            cfg: cfg.clone(),
            names,
            params,
            exp_avg,
            exp_avg_sq,
            step: 0,
        })
    }

    /// Number of updates applied so far.
    pub fn step_count(&self) -> i64 {
        self.step
    }

    /// Zeroes every parameter's gradient.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.zero_grad();
        }
    }

    /// Scales the gradients so that their global L2 norm is at most
    /// `max_norm`; returns the norm before clipping (a scalar tensor, left on
    /// the device so no synchronisation is forced). `max_norm` = ∞ only
    /// measures.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let grads: Vec<Tensor> = self
            .params
            .iter()
            .map(Tensor::grad)
            .filter(Tensor::defined)
            .collect();
        if grads.is_empty() {
            return Ok(Tensor::zeros([], (Kind::Float, tch::Device::Cpu)));
        }
        let norms = grads
            .iter()
            .map(|g| g.f_norm())
            .collect::<Result<Vec<_>, _>>()?;
        let total = Tensor::f_stack(&norms, 0)?.f_norm()?;
        if max_norm.is_infinite() {
            return Ok(total); // measuring only
        }
        let coef = (total.f_add_scalar(1e-6)?.f_reciprocal()? * max_norm).f_clamp_max(1.0)?;
        for mut g in grads {
            let _ = g.f_mul_(&coef)?;
        }
        Ok(total)
    }

    /// One Adam update with learning rate `lr` (bias-corrected moments):
    /// `p ← p − lr·m̂/(√v̂ + ε)` with `m̂ = m/(1 − β₁ᵗ)`, `v̂ = v/(1 − β₂ᵗ)`,
    /// computed as `p ← p − (lr·√(1 − β₂ᵗ)/(1 − β₁ᵗ))·m/(√v + ε·√(1 − β₂ᵗ))`
    /// (the same quantity with the corrections folded into two scalars, so
    /// fewer passes over each parameter).
    pub fn step(&mut self, lr: f64) -> Result<()> {
        let _guard = tch::no_grad_guard();
        self.step += 1;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let bc1 = 1.0 - b1.powi(self.step as i32);
        let bc2_sqrt = (1.0 - b2.powi(self.step as i32)).sqrt();
        let step_size = lr * bc2_sqrt / bc1;
        let eps = self.cfg.eps * bc2_sqrt;
        for ((p, m), v) in self
            .params
            .iter_mut()
            .zip(&mut self.exp_avg)
            .zip(&mut self.exp_avg_sq)
        {
            let g = p.grad();
            if !g.defined() {
                continue;
            }
            if self.cfg.weight_decay > 0.0 {
                let _ = p.f_mul_scalar_(1.0 - lr * self.cfg.weight_decay)?;
            }
            let _ = m.f_lerp_(&g, 1.0 - b1)?; // m ← β₁ m + (1 − β₁) g
            let _ = v.f_lerp_(&g.f_square()?, 1.0 - b2)?; // v ← β₂ v + (1 − β₂) g²
            let denom = v.f_sqrt()?.f_add_scalar_(eps)?.f_div_scalar_(-step_size)?;
            let _ = p.f_addcdiv_(m, &denom)?; // p ← p − step·m/(√v + ε′)
        }
        Ok(())
    }

    /// Writes the moments (`optimizer.exp_avg.<name>`,
    /// `optimizer.exp_avg_sq.<name>`, on the CPU) and the step count
    /// (metadata `optimizer.step`) into `ckpt`.
    pub fn save_into(&self, ckpt: &mut Checkpoint) {
        for ((name, m), v) in self.names.iter().zip(&self.exp_avg).zip(&self.exp_avg_sq) {
            ckpt.tensors
                .insert(format!("optimizer.exp_avg.{name}"), m.to(tch::Device::Cpu));
            ckpt.tensors.insert(
                format!("optimizer.exp_avg_sq.{name}"),
                v.to(tch::Device::Cpu),
            );
        }
        ckpt.metadata.insert(STEP_KEY.into(), self.step.to_string());
    }

    /// Restores what [`Adam::save_into`] wrote; `path` names the file in errors.
    pub fn load_from(&mut self, ckpt: &Checkpoint, path: &Path) -> Result<()> {
        let _guard = tch::no_grad_guard();
        let get = |key: String, like: &Tensor| -> Result<Tensor> {
            let t = ckpt
                .tensors
                .get(&key)
                .ok_or_else(|| CheckpointError::Missing {
                    path: path.into(),
                    name: key.clone(),
                })?;
            if t.size() != like.size() {
                return Err(CheckpointError::Shape {
                    path: path.into(),
                    name: key,
                    found: t.size(),
                    expected: like.size(),
                }
                .into());
            }
            Ok(t.shallow_clone())
        };
        for ((name, m), v) in self
            .names
            .iter()
            .zip(&mut self.exp_avg)
            .zip(&mut self.exp_avg_sq)
        {
            m.f_copy_(&get(format!("optimizer.exp_avg.{name}"), m)?)?;
            v.f_copy_(&get(format!("optimizer.exp_avg_sq.{name}"), v)?)?;
        }
        let step = ckpt.meta(STEP_KEY, path)?;
        self.step = step.parse().map_err(|_| CheckpointError::Corrupt {
            path: path.into(),
            reason: format!("{STEP_KEY} is not an integer: {step:?}"),
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device};

    #[test]
    fn schedule_warms_up_linearly_then_decays_as_inverse_sqrt() {
        let s = LrSchedule {
            scale: 2.0,
            warmup_steps: 4000,
            d_model: 512,
        };
        let peak = 2.0 / (4000f64.sqrt() * 512f64.sqrt());
        assert!((s.lr(4000) - peak).abs() < 1e-12);
        assert!((s.lr(2000) - peak / 2.0).abs() < 1e-12);
        assert!((s.lr(16000) - peak / 2.0).abs() < 1e-12);
        assert!(s.lr(1) > 0.0);
    }

    /// Reference Adam written with plain scalars.
    #[test]
    fn matches_scalar_adam_and_tchs_adam() {
        let vs = VarStore::new(Device::Cpu);
        let w = vs
            .root()
            .var_copy("w", &Tensor::from_slice(&[1.0f32, -2.0, 0.5]));
        let cfg = AdamConfig {
            beta1: 0.9,
            beta2: 0.997,
            eps: 1e-9,
            weight_decay: 0.0,
        };
        let mut opt = Adam::new(&vs, &cfg).unwrap();
        let (mut x, mut m, mut v) = ([1.0f64, -2.0, 0.5], [0.0f64; 3], [0.0f64; 3]);
        for t in 1..=5 {
            opt.zero_grad();
            (&w * &w).sum(Kind::Float).backward(); // grad 2w
            opt.step(0.1).unwrap();
            for i in 0..3 {
                let g = 2.0 * x[i];
                m[i] = 0.9 * m[i] + 0.1 * g;
                v[i] = 0.997 * v[i] + 0.003 * g * g;
                let mh = m[i] / (1.0 - 0.9f64.powi(t));
                let vh = v[i] / (1.0 - 0.997f64.powi(t));
                x[i] -= 0.1 * mh / (vh.sqrt() + 1e-9);
            }
        }
        let got = Vec::<f32>::try_from(&w).unwrap();
        for i in 0..3 {
            assert!((got[i] as f64 - x[i]).abs() < 1e-5, "{got:?} vs {x:?}");
        }
        assert_eq!(opt.step_count(), 5);

        // tch's own Adam, same settings.
        let vs2 = VarStore::new(Device::Cpu);
        let w2 = vs2
            .root()
            .var_copy("w", &Tensor::from_slice(&[1.0f32, -2.0, 0.5]));
        let mut tch_opt = nn::OptimizerConfig::build(
            nn::Adam {
                beta1: 0.9,
                beta2: 0.997,
                wd: 0.0,
                eps: 1e-9,
                amsgrad: false,
            },
            &vs2,
            0.1,
        )
        .unwrap();
        for _ in 0..5 {
            tch_opt.backward_step(&(&w2 * &w2).sum(Kind::Float));
        }
        assert!((&w - &w2).abs().max().double_value(&[]) < 1e-5);
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let vs = VarStore::new(Device::Cpu);
        let a = vs.root().var_copy("a", &Tensor::from_slice(&[3.0f32]));
        let b = vs.root().var_copy("b", &Tensor::from_slice(&[4.0f32]));
        let mut opt = Adam::new(&vs, &AdamConfig::default()).unwrap();
        ((&a * &a + &b * &b) * 0.5).sum(Kind::Float).backward(); // grads (3, 4), norm 5
        let norm = opt.clip_grad_norm(1.0).unwrap().double_value(&[]);
        assert!((norm - 5.0).abs() < 1e-5);
        assert!((a.grad().double_value(&[0]) - 0.6).abs() < 1e-5);
        assert!((b.grad().double_value(&[0]) - 0.8).abs() < 1e-5);
        // Under the limit: unchanged.
        let _ = opt.clip_grad_norm(10.0).unwrap();
        assert!((a.grad().double_value(&[0]) - 0.6).abs() < 1e-5);
    }

    #[test]
    fn state_round_trips_through_a_checkpoint_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opt.safetensors");
        let vs = VarStore::new(Device::Cpu);
        let w = (vs.root() / "layer").var_copy("w", &Tensor::from_slice(&[1.0f32, 2.0]));
        let mut opt = Adam::new(&vs, &AdamConfig::default()).unwrap();
        (&w * &w).sum(Kind::Float).backward();
        opt.step(0.01).unwrap();
        let mut ckpt = Checkpoint::default();
        opt.save_into(&mut ckpt);
        ckpt.save(&path).unwrap();

        let mut fresh = Adam::new(&vs, &AdamConfig::default()).unwrap();
        fresh
            .load_from(&Checkpoint::load(&path).unwrap(), &path)
            .unwrap();
        assert_eq!(fresh.step_count(), 1);
        assert!(
            fresh.exp_avg[0].equal(&opt.exp_avg[0])
                && fresh.exp_avg_sq[0].equal(&opt.exp_avg_sq[0])
        );
        let err = fresh.load_from(&Checkpoint::default(), &path).unwrap_err();
        assert!(
            err.to_string().contains("optimizer.exp_avg.layer.w"),
            "{err}"
        );
    }
}
