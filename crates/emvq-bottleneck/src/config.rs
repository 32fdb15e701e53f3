//! `BottleneckConfig`: the one configuration of the discrete bottleneck,
//! shared by every model and config file (`[bottleneck]` tables), with the
//! defaults of Roy et al. 2018 (arXiv 1805.11063) and tensor2tensor.

use serde::{Deserialize, Serialize};

use crate::BottleneckError;

/// Which discrete bottleneck to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BottleneckKind {
    /// VQ-VAE: nearest code (hard EM when `ema = true`).
    #[default]
    Vq,
    /// Soft EM by Monte-Carlo sampling of `samples` codes per vector.
    Em,
    /// Improved semantic hashing (Kaiser & Bengio 2018).
    Semhash,
}

/// How the codebook starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodebookInit {
    /// Uniform in ±√(3/K) (TF's `uniform_unit_scaling_initializer`, as in T2T).
    #[default]
    Random,
    /// k-means (k-means++ seeding + Lloyd) on the first training batch.
    Kmeans,
}

/// The discrete bottleneck's configuration. Unknown keys are errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BottleneckConfig {
    /// `"vq"`, `"em"` or `"semhash"`.
    #[serde(default)]
    pub kind: BottleneckKind,
    /// Codes per codebook K = 2^bits (semhash: the number of bits).
    #[serde(default = "default_bits")]
    pub bits: u32,
    /// n_c: the hidden vector is cut into this many slices, each with its own
    /// codebook of K codes (T2T's DVQ `num_blocks`). 1 is plain VQ.
    #[serde(default = "default_slices", alias = "n_c")]
    pub slices: i64,
    /// Commitment-loss weight β.
    #[serde(default = "default_beta")]
    pub beta: f64,
    /// EMA decay λ.
    #[serde(default = "default_decay")]
    pub decay: f64,
    /// Laplace smoothing ε of the EMA counts.
    #[serde(default = "default_epsilon")]
    pub epsilon: f64,
    /// Soft EM: samples m per vector.
    #[serde(default = "default_samples")]
    pub samples: i64,
    /// Soft EM: temperature T of softmax(−‖x − e‖² / T).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Codebook learnt by EMA (true) or by gradient through the codebook loss.
    #[serde(default = "default_true")]
    pub ema: bool,
    /// `"random"` or `"kmeans"` (data-dependent, on the first training batch).
    #[serde(default)]
    pub init: CodebookInit,
    /// Lloyd iterations of the k-means initialisation.
    #[serde(default = "default_kmeans_iters")]
    pub kmeans_iters: i64,
    /// Re-seed dead codes from batch vectors in training (EMA only).
    #[serde(default)]
    pub reseed_dead: bool,
    /// A code is dead when its EMA count is below this fraction of the mean
    /// count n/K.
    #[serde(default = "default_dead_threshold")]
    pub dead_threshold: f64,
    /// Semhash: standard deviation of the (truncated) Gaussian noise added to
    /// the logits in training. T2T's `transformer_ae` hparams use 0.5 (the
    /// function default is 1.0).
    #[serde(default = "default_noise_dev")]
    pub noise_dev: f64,
    /// Semhash: probability that a vector gets the hard bits rather than the
    /// relaxed ones in training (T2T's `d_mix`).
    #[serde(default = "default_discrete_mix")]
    pub discrete_mix: f64,
    /// Semhash: width of the layer projecting bits back (default: the hidden
    /// size; T2T uses `compress_filter_size`).
    #[serde(default)]
    pub filter_size: Option<i64>,
}

fn default_bits() -> u32 {
    12
}
fn default_slices() -> i64 {
    1
}
fn default_beta() -> f64 {
    0.25
}
fn default_decay() -> f64 {
    0.999
}
fn default_epsilon() -> f64 {
    1e-5
}
fn default_samples() -> i64 {
    10
}
fn default_temperature() -> f64 {
    1.0
}
fn default_true() -> bool {
    true
}
fn default_kmeans_iters() -> i64 {
    10
}
fn default_dead_threshold() -> f64 {
    0.01
}
fn default_noise_dev() -> f64 {
    0.5
}
fn default_discrete_mix() -> f64 {
    0.5
}

impl Default for BottleneckConfig {
    fn default() -> Self {
        Self {
            kind: BottleneckKind::default(),
            bits: default_bits(),
            slices: default_slices(),
            beta: default_beta(),
            decay: default_decay(),
            epsilon: default_epsilon(),
            samples: default_samples(),
            temperature: default_temperature(),
            ema: true,
            init: CodebookInit::default(),
            kmeans_iters: default_kmeans_iters(),
            reseed_dead: false,
            dead_threshold: default_dead_threshold(),
            noise_dev: default_noise_dev(),
            discrete_mix: default_discrete_mix(),
            filter_size: None,
        }
    }
}

impl BottleneckConfig {
    /// Codes per codebook, K = 2^bits.
    pub fn codebook_size(&self) -> i64 {
        1i64 << self.bits
    }

    /// Checks the values against the hidden size `d`.
    pub fn validate(&self, d: i64) -> Result<(), BottleneckError> {
        let bad = |message: String| Err(BottleneckError::Config(message));
        if self.bits == 0 || self.bits > 24 {
            return bad(format!("bits = {} must be in 1..=24", self.bits));
        }
        if d <= 0 {
            return bad(format!("hidden size {d} must be positive"));
        }
        if self.slices < 1 || d % self.slices != 0 {
            return bad(format!(
                "slices (n_c) = {} must be ≥ 1 and divide the hidden size {d}",
                self.slices
            ));
        }
        if self.kind == BottleneckKind::Semhash && self.slices != 1 {
            return bad("semhash has no slices: set slices = 1".into());
        }
        if self.beta.is_nan() || self.beta < 0.0 {
            return bad(format!("beta = {} must be ≥ 0", self.beta));
        }
        if !(0.0..1.0).contains(&self.decay) {
            return bad(format!("decay = {} must be in [0, 1)", self.decay));
        }
        if self.epsilon.is_nan() || self.epsilon <= 0.0 {
            return bad(format!("epsilon = {} must be > 0", self.epsilon));
        }
        if self.samples < 1 {
            return bad(format!("samples = {} must be ≥ 1", self.samples));
        }
        if self.temperature.is_nan() || self.temperature <= 0.0 {
            return bad(format!("temperature = {} must be > 0", self.temperature));
        }
        if self.kmeans_iters < 0 {
            return bad(format!("kmeans_iters = {} must be ≥ 0", self.kmeans_iters));
        }
        if self.reseed_dead && !self.ema {
            return bad("reseed_dead needs the EMA codebook (ema = true)".into());
        }
        if self.dead_threshold.is_nan() || self.dead_threshold < 0.0 {
            return bad(format!(
                "dead_threshold = {} must be ≥ 0",
                self.dead_threshold
            ));
        }
        if self.noise_dev.is_nan() || self.noise_dev < 0.0 {
            return bad(format!("noise_dev = {} must be ≥ 0", self.noise_dev));
        }
        if !(0.0..=1.0).contains(&self.discrete_mix) {
            return bad(format!(
                "discrete_mix = {} must be in [0, 1]",
                self.discrete_mix
            ));
        }
        if let Some(f) = self.filter_size {
            if f <= 0 {
                return bad(format!("filter_size = {f} must be positive"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_table_gives_the_paper_defaults() {
        let cfg: BottleneckConfig = toml::from_str("").unwrap();
        assert_eq!(cfg, BottleneckConfig::default());
        assert_eq!(cfg.kind, BottleneckKind::Vq);
        assert_eq!(cfg.codebook_size(), 4096);
        assert_eq!((cfg.beta, cfg.decay, cfg.epsilon), (0.25, 0.999, 1e-5));
        assert_eq!((cfg.samples, cfg.temperature, cfg.ema), (10, 1.0, true));
        assert_eq!(cfg.slices, 1);
    }

    #[test]
    fn parses_every_kind_and_n_c_alias_and_rejects_unknown_keys() {
        let cfg: BottleneckConfig =
            toml::from_str("kind = \"em\"\nn_c = 4\ninit = \"kmeans\"").unwrap();
        assert_eq!(cfg.kind, BottleneckKind::Em);
        assert_eq!(cfg.slices, 4);
        assert_eq!(cfg.init, CodebookInit::Kmeans);
        let cfg: BottleneckConfig = toml::from_str("kind = \"semhash\"").unwrap();
        assert_eq!(cfg.kind, BottleneckKind::Semhash);
        let err = toml::from_str::<BottleneckConfig>("bets = 0.3").unwrap_err();
        assert!(err.to_string().contains("bets"), "{err}");
        assert!(toml::from_str::<BottleneckConfig>("kind = \"dvq\"").is_err());
    }

    #[test]
    fn validate_rejects_bad_values() {
        let ok = BottleneckConfig::default();
        assert!(ok.validate(512).is_ok());
        let with = |f: fn(&mut BottleneckConfig)| {
            let mut c = ok.clone();
            f(&mut c);
            c.validate(512)
        };
        assert!(with(|c| c.slices = 3).is_err());
        assert!(with(|c| c.decay = 1.0).is_err());
        assert!(with(|c| c.samples = 0).is_err());
        assert!(with(|c| c.temperature = 0.0).is_err());
        assert!(with(|c| {
            c.kind = BottleneckKind::Semhash;
            c.slices = 2
        })
        .is_err());
        assert!(with(|c| {
            c.ema = false;
            c.reseed_dead = true
        })
        .is_err());
    }
}
