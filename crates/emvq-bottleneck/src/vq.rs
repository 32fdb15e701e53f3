//! Vector quantisation with sliced codebooks, after Roy et al. 2018 (arXiv
//! 1805.11063) and tensor2tensor's `discretization.py`: squared distances
//! ‖x‖² + ‖e‖² − 2x·e, nearest codes (hard EM's E-step), Monte-Carlo soft EM
//! (m samples from softmax(−d/T)), the EMA M-step with Laplace-smoothed
//! counts, and dead-code re-seeding.
//!
//! Layout: n_c slices ("s"), K codes ("k"), slice width c = d / n_c. Vectors
//! are handled as `[s, n, c]`, the codebook is `[s, k, c]`. Distances and
//! EMA statistics are fp32 whatever the input type.

use std::sync::atomic::{AtomicBool, Ordering};

use emvq_tensor::gather::gather_rows;
use tch::{nn, Kind, Tensor};

use crate::config::{BottleneckConfig, BottleneckKind, CodebookInit};
use crate::kmeans::kmeans;
use crate::BottleneckError;

/// Squared distances d_ij = ‖x_i‖² + ‖e_j‖² − 2 x_i·e_j per slice, with one
/// batched GEMM and no `[n, k, c]` intermediate.
/// `x`: `[s, n, c]`, `codebook`: `[s, k, c]` (fp32) → `[s, n, k]`.
pub fn squared_distances(x: &Tensor, codebook: &Tensor) -> Result<Tensor, BottleneckError> {
    let x_sq = x.f_square()?.f_sum_dim_intlist(-1, true, Kind::Float)?; // [s, n, 1]
    let e_sq = codebook
        .f_square()?
        .f_sum_dim_intlist(-1, true, Kind::Float)?
        .f_transpose(1, 2)?; // [s, 1, k]
    let norms = x_sq.f_add(&e_sq)?; // [s, n, k]
    Ok(norms.f_baddbmm(x, &codebook.f_transpose(1, 2)?, 1.0, -2.0)?) // [s, n, k]
}

/// Rows of the sliced codebook picked per slice.
/// `codebook`: `[s, k, c]`, `codes`: `[s, ...]` int64 → `[s, ..., c]`.
pub fn lookup(codebook: &Tensor, codes: &Tensor) -> Result<Tensor, BottleneckError> {
    let (s, k, c) = codebook.size3()?;
    let offsets = Tensor::f_arange(s, (Kind::Int64, codes.device()))?.f_mul_scalar(k)?; // [s]
    let mut offset_shape = vec![s];
    offset_shape.resize(codes.dim(), 1);
    let flat_codes = codes.f_add(&offsets.f_view(offset_shape.as_slice())?)?; // [s, ...]
    Ok(gather_rows(&codebook.f_reshape([s * k, c])?, &flat_codes)?)
}

/// The posterior softmax(−d/T) over codes, computed in place in
/// `distances` (which it consumes) to spare one `[s, n, k]` buffer.
/// `distances`: `[s, n, k]` → `[s, n, k]`.
pub fn posterior(mut distances: Tensor, temperature: f64) -> Result<Tensor, BottleneckError> {
    let _ = distances.f_mul_scalar_(-1.0 / temperature)?;
    Ok(distances.f_softmax(-1, Kind::Float)?)
}

/// The mean of the codebook rows picked per slice, without the
/// `[s, n, m, c]` intermediate of a lookup followed by a mean (one
/// `embedding_bag` in mean mode; differentiable in the codebook).
/// `codebook`: `[s, k, c]`, `codes`: `[s, n, m]` int64 → `[s, n, c]`.
pub fn lookup_mean(codebook: &Tensor, codes: &Tensor) -> Result<Tensor, BottleneckError> {
    let (s, k, c) = codebook.size3()?;
    let (_, n, m) = codes.size3()?;
    let device = codes.device();
    let offsets = Tensor::f_arange(s, (Kind::Int64, device))?
        .f_mul_scalar(k)?
        .f_view([s, 1, 1])?;
    let flat = codes.f_add(&offsets)?.f_flatten(0, -1)?; // [s·n·m]
    let bags = Tensor::f_arange_start_step(0, s * n * m, m, (Kind::Int64, device))?; // [s·n]
    let table = codebook.f_reshape([s * k, c])?;
    let mean_mode = 1;
    let (mean, _, _, _) = Tensor::f_embedding_bag(
        &table,
        &flat,
        &bags,
        false,
        mean_mode,
        false,
        None::<Tensor>,
        false,
    )?; // [s·n, c]
    Ok(mean.f_view([s, n, c])?)
}

/// Monte-Carlo soft EM's E-step: `samples` codes per vector drawn (with
/// replacement, `multinomial`) from the posterior `probs` = softmax(−d/T).
/// `probs`: `[s, n, k]` → `[s, n, m]` int64.
pub fn sample_codes(probs: &Tensor, samples: i64) -> Result<Tensor, BottleneckError> {
    let (s, n, k) = probs.size3()?;
    let drawn = probs.f_reshape([s * n, k])?.f_multinomial(samples, true)?; // [s·n, m]
    Ok(drawn.f_reshape([s, n, samples])?)
}

/// Fractional assignments r_ij = (1/m) Σ_l 1[c_i^(l) = j].
/// `drawn`: `[s, n, m]` → `[s, n, k]`.
pub fn fractional_counts(drawn: &Tensor, k: i64) -> Result<Tensor, BottleneckError> {
    let (s, n, m) = drawn.size3()?;
    let ones = Tensor::f_ones([s, n, m], (Kind::Float, drawn.device()))?;
    let mut counts = Tensor::f_zeros([s, n, k], (Kind::Float, drawn.device()))?; // [s, n, k]
    let _ = counts.f_scatter_add_(2, drawn, &ones)?;
    let _ = counts.f_div_scalar_(m as f64)?;
    Ok(counts)
}

/// One batch's sufficient statistics for the M-step: Σ_i r_ij and
/// Σ_i r_ij x_i, with r the hard or sampled assignments.
/// `x`: `[s, n, c]` fp32, `assigned`: `[s, n, m]` int64 codes (m = 1 for hard
/// assignments) → counts `[s, k]`, sums `[s, k, c]`. Each of the m samples
/// counts 1/m.
pub fn batch_statistics(
    x: &Tensor,
    assigned: &Tensor,
    k: i64,
) -> Result<(Tensor, Tensor), BottleneckError> {
    let (s, n, c) = x.size3()?;
    let m = assigned.size3()?.2;
    let device = x.device();
    let offsets = Tensor::f_arange(s, (Kind::Int64, device))?
        .f_mul_scalar(k)?
        .f_view([s, 1, 1])?;
    let flat = assigned.f_add(&offsets)?; // [s, n, m] indices into s·k
    let counts = flat
        .f_flatten(0, -1)?
        .f_bincount(None::<Tensor>, s * k)?
        .f_to_kind(Kind::Float)?
        .f_div_scalar(m as f64)?
        .f_view([s, k])?;
    let x_flat = x.f_reshape([s * n, c])?; // [s·n, c]
    let mut sums = Tensor::f_zeros([s * k, c], (Kind::Float, device))?;
    for l in 0..m {
        let idx = flat.f_select(2, l)?.f_flatten(0, -1)?; // [s·n]
        let _ = sums.f_index_add_(0, &idx, &x_flat)?;
    }
    let sums = if m > 1 {
        sums.f_div_scalar(m as f64)?
    } else {
        sums
    };
    Ok((counts, sums.f_view([s, k, c])?))
}

/// The EMA M-step, in place:
/// N ← λN + (1−λ)·counts, M ← λM + (1−λ)·sums, n = Σ_j N_j,
/// Ñ_j = (N_j + ε) / (n + Kε) · n, e_j ← M_j / Ñ_j. N stays unsmoothed.
/// `ema_count`: `[s, k]`, `ema_sum`/`codebook`: `[s, k, c]`.
pub fn ema_update(
    codebook: &mut Tensor,
    ema_count: &mut Tensor,
    ema_sum: &mut Tensor,
    counts: &Tensor,
    sums: &Tensor,
    decay: f64,
    epsilon: f64,
) -> Result<(), BottleneckError> {
    let _guard = tch::no_grad_guard();
    let k = ema_count.size2()?.1;
    let _ = ema_count.f_lerp_(counts, 1.0 - decay)?; // N − (1−λ)(N − counts)
    let _ = ema_sum.f_lerp_(sums, 1.0 - decay)?;
    let n = ema_count.f_sum_dim_intlist(-1, true, Kind::Float)?; // [s, 1]
    let smoothed = ema_count
        .f_add_scalar(epsilon)?
        .f_div(&n.f_add_scalar(k as f64 * epsilon)?)?
        .f_mul(&n)?; // [s, k]
    codebook.f_copy_(&ema_sum.f_div(&smoothed.f_unsqueeze(-1)?)?)?;
    Ok(())
}

/// Dead codes by their EMA count: N_j below `threshold` times the mean count
/// n/K of their slice. `ema_count`: `[s, k]` → `[s, k]` bool.
pub fn dead_by_count(ema_count: &Tensor, threshold: f64) -> Result<Tensor, BottleneckError> {
    let k = ema_count.size2()?.1;
    let mean_count = ema_count
        .f_sum_dim_intlist(-1, true, Kind::Float)?
        .f_div_scalar(k as f64)?; // [s, 1]
    Ok(ema_count.f_lt_tensor(&mean_count.f_mul_scalar(threshold)?)?)
}

/// Re-seeds the codes marked in `dead` from random vectors of the batch and
/// resets their EMA statistics to N_j = n/K (the slice's mean count),
/// M_j = x·n/K, so a re-seeded code starts as an average one. Returns how
/// many codes were re-seeded.
/// `x`: `[s, n, c]` fp32, `codebook`/`ema_sum`: `[s, k, c]`, `ema_count`:
/// `[s, k]`, `dead`: `[s, k]` bool.
pub fn reseed_codes(
    x: &Tensor,
    codebook: &mut Tensor,
    ema_count: &mut Tensor,
    ema_sum: &mut Tensor,
    dead: &Tensor,
) -> Result<i64, BottleneckError> {
    let _guard = tch::no_grad_guard();
    let (s, n, c) = x.size3()?;
    let k = ema_count.size2()?.1;
    if dead.size() != [s, k] {
        return Err(BottleneckError::CodeShape {
            shape: dead.size(),
            slices: s,
        });
    }
    let dead = dead.f_to_device(x.device())?.f_to_kind(Kind::Bool)?; // [s, k]
    let reseeded = i64::try_from(dead.f_sum(Kind::Int64)?)?;
    if reseeded == 0 || n == 0 {
        return Ok(0);
    }
    let mean_count = ema_count
        .f_sum_dim_intlist(-1, true, Kind::Float)?
        .f_div_scalar(k as f64)?
        .f_expand([s, k], false)?; // [s, k]
    let picks =
        Tensor::f_randint(n, [s, k, 1], (Kind::Int64, x.device()))?.f_expand([s, k, c], false)?;
    let candidates = x.f_gather(1, &picks, false)?; // [s, k, c]
    let dead3 = dead.f_unsqueeze(-1)?; // [s, k, 1]
    codebook.f_copy_(&candidates.f_where_self(&dead3, codebook)?)?;
    ema_sum.f_copy_(
        &candidates
            .f_mul(&mean_count.f_unsqueeze(-1)?)?
            .f_where_self(&dead3, ema_sum)?,
    )?;
    ema_count.f_copy_(&mean_count.f_where_self(&dead, ema_count)?)?;
    Ok(reseeded)
}

/// Re-seeds the codes that are dead by their EMA count (see
/// [`dead_by_count`] and [`reseed_codes`]).
pub fn reseed_dead_codes(
    x: &Tensor,
    codebook: &mut Tensor,
    ema_count: &mut Tensor,
    ema_sum: &mut Tensor,
    threshold: f64,
) -> Result<i64, BottleneckError> {
    let dead = {
        let _guard = tch::no_grad_guard();
        dead_by_count(ema_count, threshold)?
    };
    reseed_codes(x, codebook, ema_count, ema_sum, &dead)
}

/// The result of quantising a batch laid out as `[s, n, c]`.
#[derive(Debug)]
pub struct Quantized {
    /// The decoder input before the straight-through estimator: the nearest
    /// code, or the mean of the sampled codes (soft EM). `[s, n, c]` fp32,
    /// differentiable with respect to a trainable codebook.
    pub quantized: Tensor,
    /// Nearest codes. `[s, n]` int64.
    pub codes: Tensor,
    /// Soft EM: sampled r (training) or the exact posterior softmax(−d/T)
    /// (evaluation). `[s, n, k]`.
    pub soft_targets: Option<Tensor>,
    /// Codes re-seeded in this step.
    pub reseeded: i64,
}

/// The sliced codebook with its EMA statistics, registered in a var store as
/// `codebook` `[n_c, K, d/n_c]`, `ema_count` `[n_c, K]`, `ema_sum`
/// `[n_c, K, d/n_c]` (and `kmeans_done` `[1]` with `init = "kmeans"`).
#[derive(Debug)]
pub struct VqCodebook {
    pub codebook: Tensor,
    pub ema_count: Tensor,
    pub ema_sum: Tensor,
    kmeans_done: Option<Tensor>,
    /// Set once `kmeans_done` was seen at 1, to skip the device read.
    kmeans_seen: AtomicBool,
    cfg: BottleneckConfig,
}

impl VqCodebook {
    /// Creates the variables under `vs` for vectors of size `d`.
    pub fn new(vs: &nn::Path, d: i64, cfg: &BottleneckConfig) -> Result<Self, BottleneckError> {
        cfg.validate(d)?;
        let (s, k) = (cfg.slices, cfg.codebook_size());
        let c = d / s;
        let bound = (3.0 / k as f64).sqrt();
        let init = tch::nn::Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let codebook = if cfg.ema {
            let mut t = vs.f_zeros_no_train("codebook", &[s, k, c])?;
            let start = Tensor::f_empty([s, k, c], (Kind::Float, vs.device()))?
                .f_uniform_(-bound, bound)?;
            tch::no_grad(|| t.f_copy_(&start))?;
            t
        } else {
            vs.f_var("codebook", &[s, k, c], init)?
        };
        let ema_count = vs.f_zeros_no_train("ema_count", &[s, k])?;
        let mut ema_sum = vs.f_zeros_no_train("ema_sum", &[s, k, c])?;
        tch::no_grad(|| ema_sum.f_copy_(&codebook))?;
        let kmeans_done = match cfg.init {
            CodebookInit::Kmeans => Some(vs.f_zeros_no_train("kmeans_done", &[1])?),
            CodebookInit::Random => None,
        };
        Ok(Self {
            codebook,
            ema_count,
            ema_sum,
            kmeans_done,
            kmeans_seen: AtomicBool::new(false),
            cfg: cfg.clone(),
        })
    }

    /// Codes per slice, K.
    pub fn codebook_size(&self) -> i64 {
        self.cfg.codebook_size()
    }

    /// Sets every slice's codebook to k-means centres of `x` (`[s, n, c]`,
    /// n ≥ K; one training batch) and its EMA statistics to match: N_j = the
    /// cluster's size (at least 1), M_j = N_j·centre_j, so the next EMA step
    /// keeps the codes at the centres (with N = 0, M = e as for a random
    /// codebook, the first step would scale the centres by ≈ λ/((1−λ)N_j)).
    pub fn init_kmeans(&self, x: &Tensor) -> Result<(), BottleneckError> {
        let _guard = tch::no_grad_guard();
        let s = x.size3()?.0;
        let k = self.codebook_size();
        let mut centres = Vec::with_capacity(s as usize);
        let mut sizes = Vec::with_capacity(s as usize);
        for slice in 0..s {
            let result = kmeans(&x.f_get(slice)?, k, self.cfg.kmeans_iters)?;
            centres.push(result.centres); // [k, c]
            sizes.push(
                result
                    .assignments
                    .f_bincount(None::<Tensor>, k)?
                    .f_to_kind(Kind::Float)?
                    .f_clamp_min(1.0)?,
            ); // [k]
        }
        let centres = Tensor::f_stack(&centres, 0)?; // [s, k, c]
        let sizes = Tensor::f_stack(&sizes, 0)?; // [s, k]
        self.codebook.shallow_clone().f_copy_(&centres)?;
        self.ema_sum
            .shallow_clone()
            .f_copy_(&centres.f_mul(&sizes.f_unsqueeze(-1)?)?)?;
        self.ema_count.shallow_clone().f_copy_(&sizes)?;
        if let Some(done) = &self.kmeans_done {
            let _ = done.shallow_clone().f_fill_(1.0)?;
        }
        Ok(())
    }

    /// Quantises `x` (`[s, n, c]`, any float type, differentiable). In
    /// training, runs the k-means initialisation on the first batch when
    /// configured, then the EMA update and dead-code re-seeding.
    pub fn quantize(&self, x: &Tensor, train: bool) -> Result<Quantized, BottleneckError> {
        let xf = x.f_detach()?.f_to_kind(Kind::Float)?; // [s, n, c]
        if train {
            if let Some(done) = &self.kmeans_done {
                if !self.kmeans_seen.load(Ordering::Relaxed) {
                    if f64::try_from(done.f_get(0)?)? == 0.0 {
                        self.init_kmeans(&xf)?;
                    }
                    self.kmeans_seen.store(true, Ordering::Relaxed);
                }
            }
        }
        let k = self.codebook_size();
        let soft_em = self.cfg.kind == BottleneckKind::Em;
        let (codes, drawn, soft_targets) = {
            let _guard = tch::no_grad_guard();
            let distances = squared_distances(&xf, &self.codebook)?; // [s, n, k]
            let codes = distances.f_argmin(-1, false)?; // [s, n]
            if !soft_em {
                (codes, None, None)
            } else if train {
                let probs = posterior(distances, self.cfg.temperature)?; // [s, n, k]
                let drawn = sample_codes(&probs, self.cfg.samples)?; // [s, n, m]
                let r = fractional_counts(&drawn, k)?; // [s, n, k]
                (codes, Some(drawn), Some(r))
            } else {
                (
                    codes,
                    None,
                    Some(posterior(distances, self.cfg.temperature)?),
                )
            }
        };
        // The decoder input; tracks the codebook's gradient when it is trained.
        let quantized = match &drawn {
            Some(drawn) => lookup_mean(&self.codebook, drawn)?, // [s, n, c]
            None => lookup(&self.codebook, &codes)?,            // [s, n, c]
        };
        let mut reseeded = 0;
        if train && self.cfg.ema {
            let assigned = match &drawn {
                Some(drawn) => drawn.shallow_clone(),
                None => codes.f_unsqueeze(-1)?,
            }; // [s, n, m]
            let (counts, sums) = batch_statistics(&xf, &assigned, k)?;
            let (mut codebook, mut count, mut sum) = (
                self.codebook.shallow_clone(),
                self.ema_count.shallow_clone(),
                self.ema_sum.shallow_clone(),
            );
            ema_update(
                &mut codebook,
                &mut count,
                &mut sum,
                &counts,
                &sums,
                self.cfg.decay,
                self.cfg.epsilon,
            )?;
            if self.cfg.reseed_dead {
                reseeded = reseed_dead_codes(
                    &xf,
                    &mut codebook,
                    &mut count,
                    &mut sum,
                    self.cfg.dead_threshold,
                )?;
            }
        }
        Ok(Quantized {
            quantized,
            codes,
            soft_targets,
            reseeded,
        })
    }

    /// Re-seeds the codes marked in `dead` (`[s, k]` bool, e.g. from
    /// [`crate::CodeUsage::dead_mask`] over an epoch) from vectors of `x`
    /// (`[s, n, c]`) and resets their EMA statistics.
    pub fn reseed(&self, x: &Tensor, dead: &Tensor) -> Result<i64, BottleneckError> {
        let xf = x.f_detach()?.f_to_kind(Kind::Float)?;
        let (mut codebook, mut count, mut sum) = (
            self.codebook.shallow_clone(),
            self.ema_count.shallow_clone(),
            self.ema_sum.shallow_clone(),
        );
        reseed_codes(&xf, &mut codebook, &mut count, &mut sum, dead)
    }

    /// Codes back to vectors. `codes`: `[s, n]` → `[s, n, c]`.
    pub fn embed(&self, codes: &Tensor) -> Result<Tensor, BottleneckError> {
        let k = self.codebook_size();
        if codes.numel() > 0 {
            let low = i64::try_from(codes.f_min()?)?;
            let high = i64::try_from(codes.f_max()?)?;
            if low < 0 || high >= k {
                let code = if low < 0 { low } else { high };
                return Err(BottleneckError::CodeOutOfRange {
                    code,
                    codebook_size: k,
                });
            }
        }
        lookup(&self.codebook, codes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn t2(rows: &[[f32; 2]]) -> Tensor {
        Tensor::from_slice2(rows)
    }

    #[test]
    fn distances_equal_the_direct_formula() {
        tch::manual_seed(0);
        let x = Tensor::randn([2, 5, 3], (Kind::Float, Device::Cpu));
        let e = Tensor::randn([2, 4, 3], (Kind::Float, Device::Cpu));
        let direct =
            (x.unsqueeze(2) - e.unsqueeze(1))
                .square()
                .sum_dim_intlist(-1, false, Kind::Float);
        let d = squared_distances(&x, &e).unwrap();
        assert_eq!(d.size(), vec![2, 5, 4]);
        assert!(d.allclose(&direct, 1e-5, 1e-5, false));
    }

    #[test]
    fn ema_step_matches_the_hand_worked_example() {
        // Three codes in 2-D, four vectors; λ = 0.5, ε = 0.1.
        let mut codebook = t2(&[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]).view([1, 3, 2]);
        let mut ema_sum = codebook.copy();
        let mut ema_count = Tensor::zeros([1, 3], (Kind::Float, Device::Cpu));
        let x = t2(&[[0.1, 0.0], [0.9, 0.1], [1.1, -0.1], [0.0, 2.0]]).view([1, 4, 2]);
        let codes = squared_distances(&x, &codebook).unwrap().argmin(-1, false);
        assert_eq!(
            Vec::<i64>::try_from(codes.view([-1])).unwrap(),
            vec![0, 1, 1, 2]
        );
        let (counts, sums) = batch_statistics(&x, &codes.unsqueeze(-1), 3).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(counts.view([-1])).unwrap(),
            vec![1.0, 2.0, 1.0]
        );
        let sums_v = Vec::<f32>::try_from(sums.view([-1])).unwrap();
        let expected_sums = [0.1, 0.0, 2.0, 0.0, 0.0, 2.0];
        for (a, b) in sums_v.iter().zip(expected_sums) {
            assert!((a - b).abs() < 1e-6, "{sums_v:?}");
        }
        ema_update(
            &mut codebook,
            &mut ema_count,
            &mut ema_sum,
            &counts,
            &sums,
            0.5,
            0.1,
        )
        .unwrap();
        // N = 0.5·[1, 2, 1]; M = 0.5·e + 0.5·sums; n = 2;
        // Ñ = (N + 0.1) / (2 + 0.3) · 2 = [12/23, 22/23, 12/23].
        let n = Vec::<f32>::try_from(ema_count.view([-1])).unwrap();
        assert_eq!(n, vec![0.5, 1.0, 0.5]);
        let m = Vec::<f32>::try_from(ema_sum.view([-1])).unwrap();
        let expected_m = [0.05, 0.0, 1.5, 0.0, 0.0, 1.5];
        let e = Vec::<f32>::try_from(codebook.view([-1])).unwrap();
        let expected_e = [
            0.05 * 23.0 / 12.0,
            0.0,
            1.5 * 23.0 / 22.0,
            0.0,
            0.0,
            1.5 * 23.0 / 12.0,
        ];
        for i in 0..6 {
            assert!((m[i] - expected_m[i]).abs() < 1e-6, "M {m:?}");
            assert!((e[i] - expected_e[i] as f32).abs() < 1e-5, "e {e:?}");
        }
        // e ≈ [[0.0958333, 0], [1.5681818, 0], [0, 2.875]]
        assert!((e[2] - 1.568_181_8).abs() < 1e-5 && (e[5] - 2.875).abs() < 1e-5);
    }

    #[test]
    fn soft_statistics_weight_each_sample_by_one_over_m() {
        let x = t2(&[[1.0, 0.0], [0.0, 2.0]]).view([1, 2, 2]);
        // vector 0 drew codes 0, 0, 2, 1; vector 1 drew 2, 2, 2, 2.
        let drawn = Tensor::from_slice(&[0i64, 0, 2, 1, 2, 2, 2, 2]).view([1, 2, 4]);
        let r = fractional_counts(&drawn, 3).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(r.view([-1])).unwrap(),
            vec![0.5, 0.25, 0.25, 0.0, 0.0, 1.0]
        );
        let (counts, sums) = batch_statistics(&x, &drawn, 3).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(counts.view([-1])).unwrap(),
            vec![0.5, 0.25, 1.25]
        );
        // Σ_i r_ij x_i = r^T x.
        let expected = r.squeeze_dim(0).transpose(0, 1).matmul(&x.squeeze_dim(0));
        assert!(sums.squeeze_dim(0).allclose(&expected, 1e-6, 1e-6, false));
    }

    #[test]
    fn reseeding_replaces_only_dead_codes_and_resets_their_statistics() {
        tch::manual_seed(1);
        let x = Tensor::randn([1, 6, 2], (Kind::Float, Device::Cpu));
        let mut codebook = Tensor::ones([1, 3, 2], (Kind::Float, Device::Cpu)) * 9.0;
        let mut ema_sum = codebook.copy();
        let mut ema_count = Tensor::from_slice(&[4.0f32, 2.0, 0.001]).view([1, 3]);
        // mean count 6.001/3 ≈ 2.0; threshold 0.1 → only code 2 is dead.
        let n = reseed_dead_codes(&x, &mut codebook, &mut ema_count, &mut ema_sum, 0.1).unwrap();
        assert_eq!(n, 1);
        let mean = 6.001f32 / 3.0;
        let counts = Vec::<f32>::try_from(ema_count.view([-1])).unwrap();
        assert_eq!(&counts[..2], &[4.0, 2.0]);
        assert!((counts[2] - mean).abs() < 1e-6);
        let new_code = codebook.get(0).get(2);
        let is_row = (0..6).any(|i| x.get(0).get(i).equal(&new_code));
        assert!(is_row, "re-seeded code must be a batch vector");
        assert!(codebook
            .get(0)
            .get(0)
            .equal(&Tensor::from_slice(&[9.0f32, 9.0])));
        assert!(ema_sum
            .get(0)
            .get(2)
            .allclose(&(&new_code * mean as f64), 1e-6, 1e-6, false));
    }

    #[test]
    fn lookup_mean_equals_the_mean_of_the_looked_up_rows() {
        tch::manual_seed(2);
        let codebook = Tensor::randn([2, 5, 3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let codes = Tensor::randint(5, [2, 4, 6], (Kind::Int64, Device::Cpu));
        let fused = lookup_mean(&codebook, &codes).unwrap();
        let direct = lookup(&codebook, &codes)
            .unwrap()
            .mean_dim(2, false, Kind::Float);
        assert_eq!(fused.size(), vec![2, 4, 3]);
        assert!(fused.allclose(&direct, 1e-6, 1e-6, false));
        // The codebook's gradient: each pick of row j adds 1/m to its weight.
        fused.sum(Kind::Float).backward();
        let flat = (&codes + Tensor::from_slice(&[0i64, 5]).view([2, 1, 1])).view([-1]);
        let per_row = flat.bincount(None::<Tensor>, 10).to_kind(Kind::Float) / 6.0;
        let grad = codebook.grad().view([10, 3]);
        assert!(grad.allclose(
            &per_row.unsqueeze(-1).expand([10, 3], false),
            1e-6,
            1e-6,
            false
        ));
    }

    #[test]
    fn sampling_draws_from_the_posterior() {
        // One code is far more probable: softmax(−[0, 50, 50]) puts ~1 on code 0.
        let d = Tensor::from_slice(&[0.0f32, 50.0, 50.0]).view([1, 1, 3]);
        tch::manual_seed(3);
        let drawn = sample_codes(&posterior(d, 1.0).unwrap(), 100).unwrap();
        assert_eq!(drawn.size(), vec![1, 1, 100]);
        assert_eq!(i64::try_from(drawn.max()).unwrap(), 0);
    }
}
