//! The discrete bottleneck of Roy, Vaswani, Neelakantan, Parmar 2018,
//! "Theory and Experiments on Vector Quantized Autoencoders" (arXiv
//! 1805.11063): one type for VQ-VAE (hard EM with EMA), Monte-Carlo soft EM
//! and semhash, with one constructor and one `forward`.
//!
//! For inputs x `[..., d]` the VQ kinds cut d into n_c slices of c = d/n_c,
//! quantise each against its own codebook (`[n_c, K, c]`) and return the
//! straight-through output z = x + sg(q − x), the commitment loss
//! β·mean((x − sg(q))²) and, when the codebook learns by gradient
//! (`ema = false`), the codebook loss mean((sg(x) − q)²).

use tch::{nn, Kind, Tensor};

use crate::config::{BottleneckConfig, BottleneckKind};
use crate::semhash::Semhash;
use crate::vq::VqCodebook;
use crate::BottleneckError;

/// What `forward` returns for inputs `[..., d]`.
#[derive(Debug)]
pub struct BottleneckOutput {
    /// The decoder input, `[..., d]`, in the input's dtype. VQ/EM: the
    /// nearest code (VQ) or the mean of the sampled codes (EM, training)
    /// through the straight-through estimator. Semhash: the projected bits.
    pub quantized: Tensor,
    /// Hard codes (nearest code per slice; semhash: the bits' integer).
    /// `[..., n_c]` int64.
    pub codes: Tensor,
    /// EM only: targets for the latent predictor's cross-entropy,
    /// `[..., n_c, K]` fp32: the sampled fractional counts r in training,
    /// the exact posterior softmax(−d/T) in evaluation.
    pub soft_targets: Option<Tensor>,
    /// β·mean((x − sg(q))²), fp32 scalar (zero for semhash).
    pub commitment_loss: Tensor,
    /// mean((sg(x) − q)²) when the codebook learns by gradient.
    pub codebook_loss: Option<Tensor>,
    /// Dead codes re-seeded in this step.
    pub reseeded: i64,
}

impl BottleneckOutput {
    /// The bottleneck's part of the training loss: commitment plus codebook
    /// loss when there is one.
    pub fn loss(&self) -> Tensor {
        match &self.codebook_loss {
            Some(q) => &self.commitment_loss + q,
            None => self.commitment_loss.shallow_clone(),
        }
    }
}

#[derive(Debug)]
enum Inner {
    Codebook(VqCodebook),
    Semhash(Semhash),
}

/// A discrete bottleneck of any kind.
#[derive(Debug)]
pub struct Bottleneck {
    cfg: BottleneckConfig,
    d: i64,
    inner: Inner,
}

impl Bottleneck {
    /// Registers the bottleneck's variables under `vs` for vectors of size `d`.
    pub fn new(vs: &nn::Path, d: i64, cfg: &BottleneckConfig) -> Result<Self, BottleneckError> {
        cfg.validate(d)?;
        let inner = match cfg.kind {
            BottleneckKind::Vq | BottleneckKind::Em => {
                Inner::Codebook(VqCodebook::new(vs, d, cfg)?)
            }
            BottleneckKind::Semhash => Inner::Semhash(Semhash::new(vs, d, cfg)?),
        };
        Ok(Self {
            cfg: cfg.clone(),
            d,
            inner,
        })
    }

    pub fn config(&self) -> &BottleneckConfig {
        &self.cfg
    }

    /// Hidden size d.
    pub fn dim(&self) -> i64 {
        self.d
    }

    /// n_c (1 for semhash).
    pub fn slices(&self) -> i64 {
        self.cfg.slices
    }

    /// Codes per slice, K = 2^bits.
    pub fn codebook_size(&self) -> i64 {
        self.cfg.codebook_size()
    }

    /// The codebook and its EMA statistics (VQ and EM kinds).
    pub fn codebook(&self) -> Option<&VqCodebook> {
        match &self.inner {
            Inner::Codebook(cb) => Some(cb),
            Inner::Semhash(_) => None,
        }
    }

    /// Sets the codebooks to k-means centres of `x` (`[..., d]`, at least K
    /// vectors), whatever `init` says; for offline initialisation.
    pub fn init_kmeans(&self, x: &Tensor) -> Result<(), BottleneckError> {
        match &self.inner {
            Inner::Codebook(cb) => cb.init_kmeans(&self.to_slices(&x.f_to_kind(Kind::Float)?)?),
            Inner::Semhash(_) => Err(BottleneckError::Config("semhash has no codebook".into())),
        }
    }

    /// Re-seeds the codes marked in `dead` (`[n_c, K]` bool, e.g.
    /// [`crate::CodeUsage::dead_mask`] after an epoch) from random vectors of
    /// `x` (`[..., d]`) and resets their EMA statistics; returns how many.
    pub fn reseed_codes(&self, x: &Tensor, dead: &Tensor) -> Result<i64, BottleneckError> {
        match &self.inner {
            Inner::Codebook(cb) => cb.reseed(&self.to_slices(x)?, dead),
            Inner::Semhash(_) => Err(BottleneckError::Config("semhash has no codebook".into())),
        }
    }

    /// `[..., d]` → `[s, n, c]` (a view when possible).
    fn to_slices(&self, x: &Tensor) -> Result<Tensor, BottleneckError> {
        let size = x.size();
        if size.last() != Some(&self.d) {
            return Err(BottleneckError::InputShape {
                shape: size,
                expected: self.d,
            });
        }
        let s = self.cfg.slices;
        Ok(x.f_reshape([-1, s, self.d / s])?.f_permute([1, 0, 2])?) // [s, n, c]
    }

    /// Quantises `x` `[..., d]` (fp32, bf16 or fp16). In training (`train`)
    /// the EMA codebook is updated in place, EM samples, semhash adds noise.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<BottleneckOutput, BottleneckError> {
        let size = x.size();
        if size.last() != Some(&self.d) {
            return Err(BottleneckError::InputShape {
                shape: size,
                expected: self.d,
            });
        }
        let lead = &size[..size.len() - 1];
        match &self.inner {
            Inner::Semhash(sh) => {
                let out = sh.forward(&x.f_to_kind(Kind::Float)?, train)?;
                let zero = Tensor::f_zeros([], (Kind::Float, x.device()))?;
                Ok(BottleneckOutput {
                    quantized: out.dense.f_to_kind(x.kind())?,
                    codes: out.codes,
                    soft_targets: None,
                    commitment_loss: zero,
                    codebook_loss: None,
                    reseeded: 0,
                })
            }
            Inner::Codebook(cb) => {
                let (s, k) = (self.cfg.slices, self.cfg.codebook_size());
                let xf = x.f_to_kind(Kind::Float)?; // [..., d], differentiable
                let xs = self.to_slices(&xf)?; // [s, n, c]
                let q = cb.quantize(&xs, train)?;
                let commitment = xs
                    .f_sub(&q.quantized.f_detach()?)?
                    .f_square()?
                    .f_mean(Kind::Float)?
                    .f_mul_scalar(self.cfg.beta)?;
                let codebook_loss = if self.cfg.ema {
                    None
                } else {
                    Some(
                        xs.f_detach()?
                            .f_sub(&q.quantized)?
                            .f_square()?
                            .f_mean(Kind::Float)?,
                    )
                };
                let q_out = q
                    .quantized
                    .f_detach()?
                    .f_permute([1, 0, 2])?
                    .f_reshape(&size)?; // [..., d]
                                        // Straight-through: forward q, backward the identity to x.
                let quantized = x.f_add(&q_out.f_to_kind(x.kind())?.f_sub(x)?.f_detach()?)?;
                let mut code_shape = lead.to_vec();
                code_shape.push(s);
                let codes = q
                    .codes
                    .f_transpose(0, 1)?
                    .f_reshape(code_shape.as_slice())?; // [..., s]
                let soft_targets = match q.soft_targets {
                    Some(r) => {
                        code_shape.push(k);
                        Some(r.f_permute([1, 0, 2])?.f_reshape(code_shape.as_slice())?)
                        // [..., s, k]
                    }
                    None => None,
                };
                Ok(BottleneckOutput {
                    quantized,
                    codes,
                    soft_targets,
                    commitment_loss: commitment,
                    codebook_loss,
                    reseeded: q.reseeded,
                })
            }
        }
    }

    /// Soft assignments `[..., n_c, K]` (e.g. soft EM's r) to vectors
    /// Σ_j r_ij e_j `[..., d]` fp32 (VQ and EM kinds).
    pub fn embed_soft(&self, r: &Tensor) -> Result<Tensor, BottleneckError> {
        let cb = match &self.inner {
            Inner::Codebook(cb) => cb,
            Inner::Semhash(_) => {
                return Err(BottleneckError::Config("semhash has no codebook".into()))
            }
        };
        let (s, k) = (self.cfg.slices, self.cfg.codebook_size());
        let size = r.size();
        if size.len() < 2 || size[size.len() - 2..] != [s, k] {
            return Err(BottleneckError::CodeShape {
                shape: size,
                slices: s,
            });
        }
        let flat = r
            .f_to_kind(Kind::Float)?
            .f_reshape([-1, s, k])?
            .f_permute([1, 0, 2])?; // [s, n, k]
        let vectors = flat.f_bmm(&cb.codebook)?; // [s, n, c]
        let mut out_shape = size[..size.len() - 2].to_vec();
        out_shape.push(self.d);
        Ok(vectors
            .f_permute([1, 0, 2])?
            .f_reshape(out_shape.as_slice())?) // [..., d]
    }

    /// Codes `[..., n_c]` back to vectors `[..., d]` fp32 (the latent
    /// predictor's outputs at inference).
    pub fn embed_codes(&self, codes: &Tensor) -> Result<Tensor, BottleneckError> {
        let size = codes.size();
        let s = self.cfg.slices;
        if size.last() != Some(&s) {
            return Err(BottleneckError::CodeShape {
                shape: size,
                slices: s,
            });
        }
        match &self.inner {
            Inner::Semhash(sh) => sh.embed(codes),
            Inner::Codebook(cb) => {
                let flat = codes.f_reshape([-1, s])?.f_transpose(0, 1)?; // [s, n]
                let vectors = cb.embed(&flat)?; // [s, n, c]
                let mut out_shape = size[..size.len() - 1].to_vec();
                out_shape.push(self.d);
                Ok(vectors
                    .f_permute([1, 0, 2])?
                    .f_reshape(out_shape.as_slice())?) // [..., d]
            }
        }
    }
}
