//! Bits per dimension of CIFAR-10 images under a VQ-VAE (Roy et al. 2018,
//! arXiv 1805.11063; T2T's `imagetransformer_ae_cifar`):
//! bits/dim = (−ln p(x|z) − ln p(z)) / (3072 · ln 2), averaged over images.
//! With a uniform prior over the K^{n_c} codes of each of the L latent
//! positions, −ln p(z) = L · n_c · bits · ln 2 (the VQ-VAE training bound).

/// Dimensions of one CIFAR-10 image: 3 × 32 × 32 subpixels.
pub const SUBPIXELS: i64 = 3 * 32 * 32;

/// −ln p(z) in nats under the uniform prior over codes: `latents` positions,
/// `slices` codebooks each of 2^`bits` codes.
pub fn uniform_prior_nats(latents: i64, slices: i64, bits: u32) -> f64 {
    (latents * slices) as f64 * bits as f64 * std::f64::consts::LN_2
}

/// Bits per subpixel of one image from its −ln p(x|z) and −ln p(z), in nats.
pub fn bits_per_dim(nll_x_nats: f64, nll_z_nats: f64) -> f64 {
    (nll_x_nats + nll_z_nats) / (SUBPIXELS as f64 * std::f64::consts::LN_2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_everything_is_eight_bits_plus_the_code_bits() {
        let nll_x = SUBPIXELS as f64 * 256f64.ln();
        let bpd = bits_per_dim(nll_x, uniform_prior_nats(64, 2, 9));
        assert!(
            (bpd - (8.0 + 64.0 * 2.0 * 9.0 / 3072.0)).abs() < 1e-12,
            "{bpd}"
        );
    }
}
