//! The latent prior of Roy et al. 2018 (arXiv 1805.11063) for images: an
//! autoregressive Transformer over the L = g² latent codes of a VQ-VAE in
//! raster order, p(z) = Π_t Π_s p(z_{t,s} | z_{<t}). With n_c slices each
//! position has one softmax per slice (the slices of one position are
//! predicted independently given the past); the input at a position is the
//! sum of its slices' embeddings, shifted right behind a learnt start
//! vector, scaled by √d, plus sinusoidal positions. The layers are
//! `emvq_transformer`'s self-attention layers under a causal mask.

use emvq_tensor::position::sinusoidal_positions;
use emvq_transformer::{Encoder, Mask};
use tch::{nn, nn::Module, Device, Kind, Tensor};

use crate::config::PriorConfig;
use crate::{Result, VisionError};

/// Causal Transformer over `[batch, L, n_c]` codes.
#[derive(Debug)]
pub struct LatentPrior {
    /// `[n_c · K, d]`: slice s, code j at row s·K + j.
    embed: Tensor,
    /// `[d]`, the input of position 0.
    start: Tensor,
    positions: Tensor, // [L, d], not a parameter
    layers: Encoder,
    out: nn::Linear,
    latents: i64,
    slices: i64,
    codebook_size: i64,
    d_model: i64,
    dropout: f64,
}

impl LatentPrior {
    /// A prior over `latents` positions of `slices` codes in 0..`codebook_size`.
    pub fn new(
        vs: nn::Path,
        cfg: &PriorConfig,
        latents: i64,
        slices: i64,
        codebook_size: i64,
    ) -> Result<Self> {
        cfg.validate()?;
        if latents <= 0 || slices <= 0 || codebook_size <= 1 {
            return Err(VisionError::Config(format!(
                "prior over {latents} positions × {slices} slices × {codebook_size} codes"
            )));
        }
        let d = cfg.d_model;
        let std = (d as f64).powf(-0.5);
        Ok(Self {
            embed: vs.f_randn("embed", &[slices * codebook_size, d], 0.0, std)?,
            start: vs.f_randn("start", &[d], 0.0, std)?,
            positions: sinusoidal_positions(latents, d, 0, vs.device()),
            layers: Encoder::new(&vs / "layers", &cfg.stack())?,
            out: nn::linear(&vs / "out", d, slices * codebook_size, Default::default()),
            latents,
            slices,
            codebook_size,
            d_model: d,
            dropout: cfg.dropout,
        })
    }

    pub fn latents(&self) -> i64 {
        self.latents
    }

    fn check(&self, codes: &Tensor) -> Result<()> {
        let size = codes.size();
        if size.len() != 3 || size[1] > self.latents || size[2] != self.slices {
            return Err(VisionError::Shape {
                what: "prior codes",
                shape: size,
                expected: format!("[batch, ≤{}, {}]", self.latents, self.slices),
            });
        }
        Ok(())
    }

    /// Teacher-forced logits: codes `[batch, len, n_c]` (len ≤ L) → logits
    /// `[batch, len, n_c, K]`, position t conditioned on codes < t.
    pub fn logits(&self, codes: &Tensor, train: bool) -> Result<Tensor> {
        self.check(codes)?;
        let (b, len) = (codes.size()[0], codes.size()[1]);
        let (s, k, d) = (self.slices, self.codebook_size, self.d_model);
        let offsets = Tensor::f_arange(s, (Kind::Int64, codes.device()))?.f_mul_scalar(k)?; // [n_c]
        let ids = codes.f_add(&offsets)?; // [batch, len, n_c]
        let x = self
            .embed
            .f_index_select(0, &ids.f_flatten(0, -1)?)?
            .f_view([b, len, s, d])?
            .f_sum_dim_intlist(2, false, Kind::Float)?; // [batch, len, d]
        let start = self.start.f_view([1, 1, d])?.f_expand([b, 1, d], false)?; // [batch, 1, d]
        let x = Tensor::f_cat(&[start, x.f_narrow(1, 0, len - 1)?], 1)?; // shifted right
        let x = x
            .f_mul_scalar((d as f64).sqrt())?
            .f_add(&self.positions.f_narrow(0, 0, len)?)?
            .f_dropout(self.dropout, train)?; // [batch, len, d]
        let h = self.layers.forward(&x, &Mask::Causal, train)?; // [batch, len, d]
        Ok(self.out.forward(&h).f_view([b, len, s, k])?) // [batch, len, n_c, K]
    }

    /// −ln p(z) per sequence in nats: codes `[batch, L, n_c]` → `[batch]`.
    pub fn nll(&self, codes: &Tensor, train: bool) -> Result<Tensor> {
        let logp = self
            .logits(codes, train)?
            .f_log_softmax(-1, Kind::Float)?
            .f_gather(-1, &codes.f_unsqueeze(-1)?, false)?; // [batch, L, n_c, 1]
        Ok(logp
            .f_flatten(1, -1)?
            .f_sum_dim_intlist(1, false, Kind::Float)?
            .f_neg()?) // [batch]
    }

    /// Training loss: mean −ln p per code symbol (nats).
    pub fn loss(&self, codes: &Tensor) -> Result<Tensor> {
        let per_seq = self.nll(codes, true)?;
        Ok(per_seq
            .f_mean(Kind::Float)?
            .f_div_scalar((codes.size()[1] * self.slices) as f64)?)
    }

    /// Draws `n` code grids `[n, L, n_c]` by ancestral sampling at
    /// temperature `temperature`; LibTorch's generator is seeded with `seed`
    /// first, so the same seed gives the same codes on the same device.
    pub fn sample(&self, n: i64, seed: u64, temperature: f64, device: Device) -> Result<Tensor> {
        if n <= 0 || temperature.is_nan() || temperature <= 0.0 {
            return Err(VisionError::Config(format!(
                "sample n = {n} and temperature = {temperature} must be positive"
            )));
        }
        let _guard = tch::no_grad_guard();
        tch::manual_seed(seed as i64);
        let (s, k) = (self.slices, self.codebook_size);
        let codes = Tensor::f_zeros([n, self.latents, s], (Kind::Int64, device))?;
        for t in 0..self.latents {
            // The causal mask makes position t ignore the placeholders ≥ t.
            let logits = self
                .logits(&codes.f_narrow(1, 0, t + 1)?, false)?
                .f_select(1, t)?; // [n, n_c, K]
            let probs = logits
                .f_div_scalar(temperature)?
                .f_softmax(-1, Kind::Float)?
                .f_view([n * s, k])?;
            let drawn = probs.f_multinomial(1, true)?.f_view([n, s])?; // [n, n_c]
            codes.f_select(1, t)?.f_copy_(&drawn)?;
        }
        Ok(codes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prior(vs: &nn::VarStore) -> LatentPrior {
        let cfg = PriorConfig {
            d_model: 16,
            heads: 2,
            d_ff: 32,
            layers: 2,
            dropout: 0.0,
        };
        LatentPrior::new(vs.root(), &cfg, 6, 2, 5).unwrap()
    }

    #[test]
    fn position_t_does_not_see_codes_at_or_after_t() {
        tch::set_num_threads(1);
        tch::manual_seed(5);
        let vs = nn::VarStore::new(Device::Cpu);
        let p = prior(&vs);
        let a = Tensor::randint(5, [1, 6, 2], (Kind::Int64, Device::Cpu));
        let b = a.copy();
        b.narrow(1, 3, 3)
            .copy_(&(a.narrow(1, 3, 3) + 1).remainder(5)); // every later code differs
        let la = p.logits(&a, false).unwrap();
        let lb = p.logits(&b, false).unwrap();
        let diff = |t: i64| {
            (la.select(1, t) - lb.select(1, t))
                .abs()
                .max()
                .double_value(&[])
        };
        assert!(diff(0) < 1e-6 && diff(3) < 1e-6); // position 3 sees codes 0..3 only
        assert!(diff(4) > 1e-4);
        assert_eq!(p.nll(&a, false).unwrap().size(), [1]);
    }
}
