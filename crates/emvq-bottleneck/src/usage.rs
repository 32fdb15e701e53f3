//! Codebook health over an epoch or an evaluation set: [`CodeUsage`]
//! accumulates code counts over many batches (hard codes or soft EM's
//! fractional assignments) and reports, per slice, the perplexity
//! exp(−Σ_j p_j ln p_j) of the average assignment p and the dead codes
//! (never used).

use tch::{Device, Kind, Tensor};

use crate::BottleneckError;

/// Code counts per slice, accumulated on the CPU in f64.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeUsage {
    slices: usize,
    codebook_size: usize,
    /// `[slices · K]`, slice-major.
    counts: Vec<f64>,
    /// Vectors seen per slice.
    vectors: f64,
}

impl CodeUsage {
    /// An empty accumulator for `slices` codebooks of `codebook_size` codes.
    pub fn new(slices: i64, codebook_size: i64) -> Self {
        let (slices, codebook_size) = (slices as usize, codebook_size as usize);
        Self {
            slices,
            codebook_size,
            counts: vec![0.0; slices * codebook_size],
            vectors: 0.0,
        }
    }

    /// Adds hard codes. `codes`: `[..., n_c]` int64.
    pub fn add_codes(&mut self, codes: &Tensor) -> Result<(), BottleneckError> {
        let (s, k) = (self.slices as i64, self.codebook_size as i64);
        if codes.size().last() != Some(&s) {
            return Err(BottleneckError::CodeShape {
                shape: codes.size(),
                slices: s,
            });
        }
        let flat = codes.f_reshape([-1, s])?.f_to_device(Device::Cpu)?; // [n, s]
        let n = flat.size2()?.0;
        if n == 0 {
            return Ok(());
        }
        let low = i64::try_from(flat.f_min()?)?;
        let high = i64::try_from(flat.f_max()?)?;
        if low < 0 || high >= k {
            let code = if low < 0 { low } else { high };
            return Err(BottleneckError::CodeOutOfRange {
                code,
                codebook_size: k,
            });
        }
        let offsets = Tensor::f_arange(s, (Kind::Int64, Device::Cpu))?.f_mul_scalar(k)?; // [s]
        let counts = flat
            .f_add(&offsets)?
            .f_flatten(0, -1)?
            .f_bincount(None::<Tensor>, s * k)?; // [s·k]
        let counts = Vec::<i64>::try_from(counts)?;
        for (acc, c) in self.counts.iter_mut().zip(counts) {
            *acc += c as f64;
        }
        self.vectors += n as f64;
        Ok(())
    }

    /// Adds soft assignments (rows summing to 1). `r`: `[..., n_c, K]`.
    pub fn add_soft(&mut self, r: &Tensor) -> Result<(), BottleneckError> {
        let (s, k) = (self.slices as i64, self.codebook_size as i64);
        let size = r.size();
        if size.len() < 2 || size[size.len() - 2..] != [s, k] {
            return Err(BottleneckError::Usage(format!(
                "soft assignments have shape {size:?}, expected [..., {s}, {k}]"
            )));
        }
        let flat = r.f_reshape([-1, s, k])?; // [n, s, k]
        let n = flat.size3()?.0;
        let sums = flat
            .f_sum_dim_intlist(0, false, Kind::Double)?
            .f_to_device(Device::Cpu)?
            .f_flatten(0, -1)?; // [s·k]
        for (acc, c) in self.counts.iter_mut().zip(Vec::<f64>::try_from(sums)?) {
            *acc += c;
        }
        self.vectors += n as f64;
        Ok(())
    }

    /// Adds another accumulator's counts (e.g. from another worker).
    pub fn merge(&mut self, other: &CodeUsage) -> Result<(), BottleneckError> {
        if (other.slices, other.codebook_size) != (self.slices, self.codebook_size) {
            return Err(BottleneckError::Usage(format!(
                "cannot merge usage of {}×{} codes into {}×{}",
                other.slices, other.codebook_size, self.slices, self.codebook_size
            )));
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.vectors += other.vectors;
        Ok(())
    }

    /// Clears the counts (start of an epoch).
    pub fn reset(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0.0);
        self.vectors = 0.0;
    }

    /// Vectors added so far (per slice).
    pub fn vectors(&self) -> f64 {
        self.vectors
    }

    /// The counts of slice `slice`, K values.
    pub fn counts(&self, slice: usize) -> &[f64] {
        let k = self.codebook_size;
        &self.counts[slice * k..(slice + 1) * k]
    }

    /// Perplexity exp(H(p)) of the average assignment p of each slice; 0
    /// before any vector was added. Between 1 (one code) and K (uniform).
    pub fn perplexity(&self) -> Vec<f64> {
        (0..self.slices)
            .map(|s| {
                let total: f64 = self.counts(s).iter().sum();
                if total <= 0.0 {
                    return 0.0;
                }
                let entropy: f64 = self
                    .counts(s)
                    .iter()
                    .filter(|&&c| c > 0.0)
                    .map(|&c| {
                        let p = c / total;
                        -p * p.ln()
                    })
                    .sum();
                entropy.exp()
            })
            .collect()
    }

    /// Codes never used, per slice.
    pub fn dead_codes(&self) -> Vec<Vec<usize>> {
        (0..self.slices)
            .map(|s| {
                self.counts(s)
                    .iter()
                    .enumerate()
                    .filter(|(_, &c)| c <= 0.0)
                    .map(|(j, _)| j)
                    .collect()
            })
            .collect()
    }

    /// Number of codes never used, per slice.
    pub fn dead_count(&self) -> Vec<usize> {
        self.dead_codes().iter().map(Vec::len).collect()
    }

    /// Dead codes as a mask, `[n_c, K]` bool on `device`.
    pub fn dead_mask(&self, device: Device) -> Result<Tensor, BottleneckError> {
        let dead: Vec<bool> = self.counts.iter().map(|&c| c <= 0.0).collect();
        let (s, k) = (self.slices as i64, self.codebook_size as i64);
        Ok(Tensor::from_slice(&dead)
            .f_view([s, k])?
            .f_to_device(device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perplexity_and_dead_codes_on_a_hand_example() {
        // Two slices, four codes. Over two batches, slice 0 uses codes
        // 0, 0, 1, 1 (p = ½, ½ → perplexity 2, dead {2, 3}); slice 1 uses
        // 0, 1, 2, 3 (uniform → perplexity 4, none dead).
        let mut usage = CodeUsage::new(2, 4);
        usage
            .add_codes(&Tensor::from_slice2(&[[0i64, 0], [0, 1]]))
            .unwrap();
        usage
            .add_codes(&Tensor::from_slice2(&[[1i64, 2], [1, 3]]).view([1, 2, 2]))
            .unwrap();
        assert_eq!(usage.vectors(), 4.0);
        assert_eq!(usage.counts(0), &[2.0, 2.0, 0.0, 0.0]);
        assert_eq!(usage.counts(1), &[1.0, 1.0, 1.0, 1.0]);
        let ppl = usage.perplexity();
        assert!(
            (ppl[0] - 2.0).abs() < 1e-12 && (ppl[1] - 4.0).abs() < 1e-12,
            "{ppl:?}"
        );
        assert_eq!(usage.dead_codes(), vec![vec![2, 3], vec![]]);
        assert_eq!(usage.dead_count(), vec![2, 0]);
        let mask = Vec::<bool>::try_from(usage.dead_mask(Device::Cpu).unwrap().view([-1])).unwrap();
        assert_eq!(
            mask,
            vec![false, false, true, true, false, false, false, false]
        );
    }

    #[test]
    fn skewed_usage_has_the_exact_perplexity() {
        // p = (¾, ¼): H = −(¾ ln ¾ + ¼ ln ¼) = 0.5623351446; exp(H) = 1.7547654.
        let mut usage = CodeUsage::new(1, 2);
        usage
            .add_codes(&Tensor::from_slice(&[0i64, 0, 0, 1]).view([4, 1]))
            .unwrap();
        assert!((usage.perplexity()[0] - 1.754_765_4).abs() < 1e-6);
        usage.reset();
        assert_eq!(usage.perplexity(), vec![0.0]);
    }

    #[test]
    fn soft_counts_and_merge_add_up() {
        let mut a = CodeUsage::new(1, 3);
        let r = Tensor::from_slice(&[0.5f32, 0.5, 0.0, 0.0, 0.25, 0.75]).view([2, 1, 3]);
        a.add_soft(&r).unwrap();
        assert_eq!(a.counts(0), &[0.5, 0.75, 0.75]);
        let mut b = CodeUsage::new(1, 3);
        b.add_codes(&Tensor::from_slice(&[2i64]).view([1, 1]))
            .unwrap();
        a.merge(&b).unwrap();
        assert_eq!(a.counts(0), &[0.5, 0.75, 1.75]);
        assert_eq!(a.vectors(), 3.0);
        assert!(a.merge(&CodeUsage::new(2, 3)).is_err());
    }

    #[test]
    fn bad_codes_are_errors() {
        let mut usage = CodeUsage::new(1, 4);
        assert!(matches!(
            usage.add_codes(&Tensor::from_slice(&[4i64]).view([1, 1])),
            Err(BottleneckError::CodeOutOfRange { code: 4, .. })
        ));
        assert!(usage
            .add_codes(&Tensor::from_slice(&[1i64, 2]).view([1, 2]))
            .is_err());
        assert_eq!(usage.vectors(), 0.0);
    }
}
