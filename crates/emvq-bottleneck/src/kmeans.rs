//! k-means: Lloyd's algorithm with k-means++ seeding (Arthur & Vassilvitskii
//! 2007), used for data-dependent codebook initialisation (`init = "kmeans"`).
//! Two versions: on tensors (the GPU when the data is there, LibTorch's
//! generator) and on CPU `ndarray` with `rayon` (offline, seeded by a `u64`).
//! An empty cluster keeps its previous centre.

use ndarray::{Array1, Array2, ArrayView2, Axis};
use rand::{rngs::StdRng, Rng, SeedableRng};
use rayon::prelude::*;
use tch::{Kind, Tensor};

use emvq_tensor::logging::progress_bar;

use crate::vq::squared_distances;
use crate::BottleneckError;

/// k-means on tensors.
#[derive(Debug)]
pub struct KMeans {
    /// `[k, d]` fp32.
    pub centres: Tensor,
    /// Nearest centre of each vector. `[n]` int64.
    pub assignments: Tensor,
    /// Σ_i min_j ‖x_i − c_j‖².
    pub inertia: f64,
}

/// k-means++ seeding: the first centre uniformly, each next one with
/// probability proportional to the squared distance to the nearest centre
/// chosen so far. `x`: `[n, d]` → `[k, d]` fp32.
pub fn kmeans_plus_plus(x: &Tensor, k: i64) -> Result<Tensor, BottleneckError> {
    let _guard = tch::no_grad_guard();
    let x = x.f_to_kind(Kind::Float)?; // [n, d]
    let n = x.size2()?.0;
    if n < k || k < 1 {
        return Err(BottleneckError::NotEnoughData { n, k });
    }
    let x_sq = x.f_square()?.f_sum_dim_intlist(-1, false, Kind::Float)?; // [n]
    let first = Tensor::f_randint(n, [1], (Kind::Int64, x.device()))?; // [1]
    let mut chosen = vec![first.shallow_clone()];
    let mut min_dist = Tensor::f_full([n], f64::INFINITY, (Kind::Float, x.device()))?; // [n]
    let mut last = first;
    for _ in 1..k {
        let centre = x.f_index_select(0, &last)?.f_squeeze_dim(0)?; // [d]
        let dist = x_sq
            .f_add(&centre.f_dot(&centre)?)?
            .f_sub(&x.f_mv(&centre)?.f_mul_scalar(2.0)?)?
            .f_clamp_min(0.0)?; // [n]
        min_dist = min_dist.f_minimum(&dist)?;
        // A tiny floor keeps the weights valid when every point is a centre.
        last = min_dist.f_add_scalar(1e-30)?.f_multinomial(1, false)?; // [1]
        chosen.push(last.shallow_clone());
    }
    Ok(x.f_index_select(0, &Tensor::f_cat(&chosen, 0)?)?)
}

/// Lloyd's algorithm from k-means++ seeds, at most `iters` iterations
/// (stops early when no assignment changes). `x`: `[n, d]`, n ≥ k.
pub fn kmeans(x: &Tensor, k: i64, iters: i64) -> Result<KMeans, BottleneckError> {
    let _guard = tch::no_grad_guard();
    let x = x.f_to_kind(Kind::Float)?; // [n, d]
    let (_, d) = x.size2()?;
    let mut centres = kmeans_plus_plus(&x, k)?; // [k, d]
    let xb = x.f_unsqueeze(0)?; // [1, n, d]
    let assign = |centres: &Tensor| -> Result<(Tensor, Tensor), BottleneckError> {
        let dist = squared_distances(&xb, &centres.f_unsqueeze(0)?)?.f_squeeze_dim(0)?; // [n, k]
        let (min, idx) = dist.f_min_dim(-1, false)?;
        Ok((idx, min)) // [n], [n]
    };
    let (mut assignments, mut min) = assign(&centres)?;
    for _ in 0..iters {
        let counts = assignments
            .f_bincount(None::<Tensor>, k)?
            .f_to_kind(Kind::Float)?
            .f_unsqueeze(-1)?; // [k, 1]
        let mut sums = Tensor::f_zeros([k, d], (Kind::Float, x.device()))?;
        let _ = sums.f_index_add_(0, &assignments, &x)?; // [k, d]
        let means = sums.f_div(&counts.f_clamp_min(1.0)?)?;
        centres = means.f_where_self(&counts.f_gt(0.0)?, &centres)?; // [k, d]
        let (next, next_min) = assign(&centres)?;
        let unchanged = next.f_equal(&assignments)?;
        assignments = next;
        min = next_min;
        if unchanged {
            break;
        }
    }
    let inertia = min
        .f_clamp_min(0.0)?
        .f_sum(Kind::Double)?
        .f_double_value(&[])?;
    tracing::debug!(k, inertia, "k-means (tensor) done");
    Ok(KMeans {
        centres,
        assignments,
        inertia,
    })
}

/// k-means on CPU arrays.
#[derive(Debug, Clone)]
pub struct NdKMeans {
    /// `[k, d]`.
    pub centres: Array2<f32>,
    /// Nearest centre of each row.
    pub assignments: Vec<usize>,
    /// Σ_i min_j ‖x_i − c_j‖².
    pub inertia: f64,
}

/// Rows per parallel task of the assignment step.
const CHUNK: usize = 256;

/// Nearest centre and its squared distance for every row, through
/// ‖x‖² + ‖c‖² − 2 x·c with one matrix product per chunk of rows.
fn nearest(data: ArrayView2<f32>, centres: &Array2<f32>) -> Vec<(usize, f32)> {
    let c_sq: Array1<f32> = centres.rows().into_iter().map(|c| c.dot(&c)).collect();
    let chunks: Vec<_> = data.axis_chunks_iter(Axis(0), CHUNK).collect();
    chunks
        .into_par_iter()
        .flat_map_iter(|chunk| {
            let prod = chunk.dot(&centres.t()); // [rows, k]
            let rows: Vec<(usize, f32)> = chunk
                .rows()
                .into_iter()
                .zip(prod.rows())
                .map(|(x, p)| {
                    let x_sq = x.dot(&x);
                    let mut best = (0, f32::INFINITY);
                    for (j, (&pj, &cj)) in p.iter().zip(c_sq.iter()).enumerate() {
                        let dist = x_sq + cj - 2.0 * pj;
                        if dist < best.1 {
                            best = (j, dist);
                        }
                    }
                    (best.0, best.1.max(0.0))
                })
                .collect();
            rows
        })
        .collect()
}

/// k-means++ seeding on an array, reproducible from `seed`.
pub fn kmeans_plus_plus_ndarray(
    data: ArrayView2<f32>,
    k: usize,
    seed: u64,
) -> Result<Array2<f32>, BottleneckError> {
    let (n, d) = data.dim();
    if n < k || k == 0 {
        return Err(BottleneckError::NotEnoughData {
            n: n as i64,
            k: k as i64,
        });
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut centres = Array2::<f32>::zeros((k, d));
    let mut pick = rng.gen_range(0..n);
    let mut min_dist = vec![f64::INFINITY; n];
    for j in 0..k {
        centres.row_mut(j).assign(&data.row(pick));
        if j + 1 == k {
            break;
        }
        let centre = data.row(pick);
        min_dist.par_iter_mut().enumerate().for_each(|(i, m)| {
            let dist: f64 = data
                .row(i)
                .iter()
                .zip(centre.iter())
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum();
            *m = m.min(dist);
        });
        let total: f64 = min_dist.iter().sum();
        pick = if total > 0.0 {
            let mut target = rng.gen::<f64>() * total;
            let mut chosen = n - 1;
            for (i, &m) in min_dist.iter().enumerate() {
                if target < m {
                    chosen = i;
                    break;
                }
                target -= m;
            }
            chosen
        } else {
            rng.gen_range(0..n)
        };
    }
    Ok(centres)
}

/// Lloyd's algorithm on an array from k-means++ seeds, at most `iters`
/// iterations, assignments computed in parallel with `rayon`.
pub fn kmeans_ndarray(
    data: ArrayView2<f32>,
    k: usize,
    iters: usize,
    seed: u64,
) -> Result<NdKMeans, BottleneckError> {
    let d = data.ncols();
    let mut centres = kmeans_plus_plus_ndarray(data, k, seed)?;
    let mut nearest_rows = nearest(data, &centres);
    let bar = progress_bar(iters as u64, "k-means");
    for _ in 0..iters {
        bar.inc(1);
        let mut sums = Array2::<f64>::zeros((k, d));
        let mut counts = vec![0usize; k];
        for (x, &(j, _)) in data.rows().into_iter().zip(&nearest_rows) {
            counts[j] += 1;
            let mut row = sums.row_mut(j);
            row.iter_mut()
                .zip(x.iter())
                .for_each(|(s, &v)| *s += v as f64);
        }
        for (j, &count) in counts.iter().enumerate() {
            if count > 0 {
                let mean = sums.row(j).mapv(|s| (s / count as f64) as f32);
                centres.row_mut(j).assign(&mean);
            }
        }
        let next = nearest(data, &centres);
        let unchanged = next.iter().zip(&nearest_rows).all(|(a, b)| a.0 == b.0);
        nearest_rows = next;
        if unchanged {
            break;
        }
    }
    bar.finish_and_clear();
    let inertia: f64 = nearest_rows.iter().map(|&(_, m)| m as f64).sum();
    tracing::debug!(k, inertia, "k-means (ndarray) done");
    let assignments = nearest_rows.into_iter().map(|(j, _)| j).collect();
    Ok(NdKMeans {
        centres,
        assignments,
        inertia,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// Four well-separated blobs in 8-D (centres ±10 on different axes,
    /// noise std 0.1), 100 points each, generated from a fixed seed.
    fn blobs() -> (Array2<f32>, Array2<f32>) {
        let d = 8;
        let mut centres = Array2::<f32>::zeros((4, d));
        centres[[0, 0]] = 10.0;
        centres[[1, 0]] = -10.0;
        centres[[2, 1]] = 10.0;
        centres[[3, 2]] = -10.0;
        let mut rng = StdRng::seed_from_u64(11);
        let mut data = Array2::<f32>::zeros((400, d));
        for i in 0..400 {
            for j in 0..d {
                // Sum of 12 uniforms − 6 ≈ N(0, 1).
                let z: f32 = (0..12).map(|_| rng.gen::<f32>()).sum::<f32>() - 6.0;
                data[[i, j]] = centres[[i % 4, j]] + 0.1 * z;
            }
        }
        (data, centres)
    }

    /// Largest distance from a true centre to its nearest found centre.
    fn worst_match(found: &Array2<f32>, truth: &Array2<f32>) -> f32 {
        truth
            .rows()
            .into_iter()
            .map(|t| {
                found
                    .rows()
                    .into_iter()
                    .map(|f| (&f - &t).mapv(|v| v * v).sum().sqrt())
                    .fold(f32::INFINITY, f32::min)
            })
            .fold(0.0, f32::max)
    }

    #[test]
    fn ndarray_kmeans_recovers_blob_centres() {
        let (data, truth) = blobs();
        let result = kmeans_ndarray(data.view(), 4, 20, 5).unwrap();
        // The mean of 100 points with noise std 0.1 per axis is within
        // ~0.01·√8 of the centre; 0.1 leaves a wide margin.
        assert!(worst_match(&result.centres, &truth) < 0.1);
        let again = kmeans_ndarray(data.view(), 4, 20, 5).unwrap();
        assert_eq!(result.assignments, again.assignments);
        for i in 0..400 {
            assert_eq!(result.assignments[i], result.assignments[i % 4]);
        }
        // Inertia ≈ 400 points · 8 axes · 0.01 = 32.
        assert!(
            result.inertia > 20.0 && result.inertia < 45.0,
            "{}",
            result.inertia
        );
    }

    #[test]
    fn tensor_kmeans_recovers_blob_centres() {
        let (data, truth) = blobs();
        let x = Tensor::from_slice(data.as_slice().unwrap()).view([400, 8]);
        tch::manual_seed(2);
        let result = kmeans(&x, 4, 20).unwrap();
        let centres = Vec::<f32>::try_from(result.centres.view([-1])).unwrap();
        let found = Array2::from_shape_vec((4, 8), centres).unwrap();
        assert!(worst_match(&found, &truth) < 0.1);
        assert_eq!(result.assignments.size(), vec![400]);
        assert!(
            result.inertia > 20.0 && result.inertia < 45.0,
            "{}",
            result.inertia
        );
    }

    #[test]
    fn seeding_picks_distinct_data_points_and_too_few_points_is_an_error() {
        let x = Tensor::from_slice(&[0.0f32, 1.0, 5.0, 9.0]).view([4, 1]);
        tch::manual_seed(0);
        let seeds = kmeans_plus_plus(&x, 4).unwrap();
        let mut v = Vec::<f32>::try_from(seeds.view([-1])).unwrap();
        v.sort_by(f32::total_cmp);
        assert_eq!(v, vec![0.0, 1.0, 5.0, 9.0]);
        let small = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
        assert!(matches!(
            kmeans(&small, 3, 5),
            Err(BottleneckError::NotEnoughData { n: 2, k: 3 })
        ));
        let arr = Array2::<f32>::zeros((2, 3));
        assert!(kmeans_ndarray(arr.view(), 3, 5, 0).is_err());
    }
}
