//! Improved semantic hashing, Kaiser & Bengio 2018 ("Discrete Autoencoders
//! for Sequence Models", arXiv 1801.09797), the `semhash` bottleneck of
//! tensor2tensor's `discretization.discrete_bottleneck` and the "LT +
//! semhash" baseline of Roy et al. 2018 (arXiv 1805.11063).
//!
//! - logits l = dense_vcc(x) (`bits` values);
//! - training: y = σ′(l + n), n ~ truncated normal (std `noise_dev`, cut at
//!   two standard deviations as TF's `truncated_normal`); evaluation:
//!   y = σ′(l); σ′(v) = max(0, min(1, 1.2σ(v) − 0.1)) (saturating sigmoid);
//! - hard bits b = 1[y > 0.5], passed on as b + y − sg(y) (straight-through);
//! - training feeds the hard bits with probability `discrete_mix` (0.5) and
//!   the relaxed y otherwise; evaluation always the hard bits;
//! - back to the hidden size: h = dense_final(dense_a(c) + dense_b(1 − c))
//!   (T2T's `vch1a`, `vch1b`, `vch_final_linear`);
//! - the code is the integer the bits form, lower-endian: Σ_i b_i 2^i.

use tch::{nn, nn::Module, Kind, Tensor};

use crate::config::BottleneckConfig;
use crate::BottleneckError;

/// Φ(−2): the probability mass below −2 standard deviations.
const PHI_MINUS_TWO: f64 = 0.022_750_131_948_179_2;

/// Saturating sigmoid max(0, min(1, 1.2σ(x) − 0.1)).
pub fn saturating_sigmoid(x: &Tensor) -> Result<Tensor, BottleneckError> {
    Ok(x.f_sigmoid()?
        .f_mul_scalar(1.2)?
        .f_sub_scalar(0.1)?
        .f_clamp(0.0, 1.0)?)
}

/// Standard normal samples truncated to [−2, 2] (TF's `truncated_normal`),
/// by the inverse CDF of a uniform on [Φ(−2), Φ(2)], shaped and typed like
/// `like`. The inverse CDF runs in f64 and the result is clamped to ±2, so
/// no rounding can put a sample outside the interval (the f32 version drew
/// one just past 2 on CI's CPU; it did not happen on this machine).
pub fn truncated_normal(like: &Tensor) -> Result<Tensor, BottleneckError> {
    let u = Tensor::f_empty(like.size(), (Kind::Double, like.device()))?
        .f_uniform_(PHI_MINUS_TWO, 1.0 - PHI_MINUS_TWO)?; // U(Φ(−2), Φ(2))
    Ok(u.f_mul_scalar(2.0)?
        .f_sub_scalar(1.0)?
        .f_erfinv()?
        .f_mul_scalar(std::f64::consts::SQRT_2)?
        .f_clamp(-2.0, 2.0)?
        .f_to_kind(like.kind())?)
}

/// Bits `[..., bits]` (0/1) → lower-endian integers `[...]` int64.
pub fn bits_to_int(bits: &Tensor) -> Result<Tensor, BottleneckError> {
    let n = *bits.size().last().unwrap_or(&0);
    let powers = Tensor::f_arange(n, (Kind::Int64, bits.device()))?
        .f_exp2()?
        .f_to_kind(Kind::Int64)?; // [bits]
    Ok(bits
        .f_to_kind(Kind::Int64)?
        .f_mul(&powers)?
        .f_sum_dim_intlist(-1, false, Kind::Int64)?)
}

/// Integers `[...]` → lower-endian bits `[..., bits]` fp32.
pub fn int_to_bits(codes: &Tensor, bits: i64) -> Result<Tensor, BottleneckError> {
    let powers = Tensor::f_arange(bits, (Kind::Int64, codes.device()))?
        .f_exp2()?
        .f_to_kind(Kind::Int64)?; // [bits]
    Ok(codes
        .f_unsqueeze(-1)?
        .f_floor_divide(&powers)?
        .f_remainder(2)?
        .f_to_kind(Kind::Float)?)
}

/// The semhash bottleneck's layers, under `vcc`, `vch1a`, `vch1b`,
/// `vch_final_linear` as in tensor2tensor.
#[derive(Debug)]
pub struct Semhash {
    vcc: nn::Linear,
    vch1a: nn::Linear,
    vch1b: nn::Linear,
    vch_final_linear: nn::Linear,
    bits: i64,
    noise_dev: f64,
    discrete_mix: f64,
}

/// What the semhash bottleneck produces for `[..., d]` inputs.
#[derive(Debug)]
pub struct SemhashOutput {
    /// `[..., d]`.
    pub dense: Tensor,
    /// Codes, the integers of the hard bits. `[..., 1]` int64.
    pub codes: Tensor,
    /// Hard bits. `[..., bits]` fp32.
    pub bits: Tensor,
}

impl Semhash {
    /// The layers for hidden size `d`.
    pub fn new(vs: &nn::Path, d: i64, cfg: &BottleneckConfig) -> Result<Self, BottleneckError> {
        cfg.validate(d)?;
        let bits = cfg.bits as i64;
        let filter = cfg.filter_size.unwrap_or(d);
        let lin = |name: &str, i: i64, o: i64| nn::linear(vs / name, i, o, Default::default());
        Ok(Self {
            vcc: lin("vcc", d, bits),
            vch1a: lin("vch1a", bits, filter),
            vch1b: lin("vch1b", bits, filter),
            vch_final_linear: lin("vch_final_linear", filter, d),
            bits,
            noise_dev: cfg.noise_dev,
            discrete_mix: cfg.discrete_mix,
        })
    }

    /// Bits `c` (hard, relaxed or mixed) back to the hidden size.
    fn unbottleneck(&self, c: &Tensor) -> Result<Tensor, BottleneckError> {
        let one_minus = c.f_neg()?.f_add_scalar(1.0)?;
        let h = self
            .vch1a
            .forward(c)
            .f_add(&self.vch1b.forward(&one_minus))?;
        Ok(self.vch_final_linear.forward(&h))
    }

    /// `x`: `[..., d]` fp32.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<SemhashOutput, BottleneckError> {
        let logits = self.vcc.forward(x); // [..., bits]
        let y = if train && self.noise_dev > 0.0 {
            let noise = truncated_normal(&logits)?.f_mul_scalar(self.noise_dev)?;
            saturating_sigmoid(&logits.f_add(&noise)?)?
        } else {
            saturating_sigmoid(&logits)?
        }; // [..., bits]
        let hard = y.f_gt(0.5)?.f_to_kind(Kind::Float)?.f_detach()?; // [..., bits]
        let y_discrete = y.f_add(&hard.f_sub(&y)?.f_detach()?)?; // hard forward, ∂y backward
        let c = if train {
            let mut mask_shape = y.size();
            *mask_shape.last_mut().expect("bits dimension") = 1;
            let pick_hard = Tensor::f_rand(mask_shape.as_slice(), (Kind::Float, y.device()))?
                .f_lt(self.discrete_mix)?; // [..., 1]
            y_discrete.f_where_self(&pick_hard, &y)?
        } else {
            y_discrete
        };
        let dense = self.unbottleneck(&c)?; // [..., d]
        let codes = bits_to_int(&hard)?.f_unsqueeze(-1)?; // [..., 1]
        Ok(SemhashOutput {
            dense,
            codes,
            bits: hard,
        })
    }

    /// Codes `[..., 1]` → `[..., d]`.
    pub fn embed(&self, codes: &Tensor) -> Result<Tensor, BottleneckError> {
        let k = 1i64 << self.bits;
        if codes.numel() > 0 {
            let (low, high) = (
                i64::try_from(codes.f_min()?)?,
                i64::try_from(codes.f_max()?)?,
            );
            if low < 0 || high >= k {
                let code = if low < 0 { low } else { high };
                return Err(BottleneckError::CodeOutOfRange {
                    code,
                    codebook_size: k,
                });
            }
        }
        let bits = int_to_bits(&codes.f_squeeze_dim(-1)?, self.bits)?; // [..., bits]
        self.unbottleneck(&bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn saturating_sigmoid_clips_at_zero_and_one() {
        let x = Tensor::from_slice(&[-10.0f32, 0.0, 10.0]);
        let y = Vec::<f32>::try_from(saturating_sigmoid(&x).unwrap()).unwrap();
        assert_eq!(y[0], 0.0);
        assert!((y[1] - 0.5).abs() < 1e-7);
        assert_eq!(y[2], 1.0);
    }

    #[test]
    fn bits_and_integers_round_trip_lower_endian() {
        let bits = Tensor::from_slice2(&[[1.0f32, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]);
        let ints = bits_to_int(&bits).unwrap();
        assert_eq!(Vec::<i64>::try_from(&ints).unwrap(), vec![13, 0]);
        assert!(int_to_bits(&ints, 4).unwrap().equal(&bits));
    }

    #[test]
    fn truncated_normal_stays_within_two_std_with_unit_like_spread() {
        tch::manual_seed(4);
        let z = truncated_normal(&Tensor::zeros([200_000], (Kind::Float, Device::Cpu))).unwrap();
        assert_eq!(z.kind(), Kind::Float);
        assert!(f64::try_from(z.abs().max()).unwrap() <= 2.0);
        // Variance of N(0,1) cut at ±2 is 1 − 4φ(2)/(2Φ(2) − 1) = 0.7737413.
        let var = f64::try_from(z.var(true)).unwrap();
        assert!((var - 0.773_741_3).abs() < 0.01, "{var}");
    }
}
