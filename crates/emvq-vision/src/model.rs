//! The convolutional VQ-VAE of Roy et al. 2018 (arXiv 1805.11063) for
//! CIFAR-10, in the layout of van den Oord et al. 2017: an [`Encoder`] of
//! stride-2 convolutions and residual blocks from 32×32×3 to a grid of
//! latent vectors (8×8 with two steps), the shared discrete bottleneck (VQ or
//! soft EM, sliced into n_c codebooks), and a [`Decoder`] of residual blocks
//! and stride-2 transposed convolutions back to 32×32 with 256 logits per
//! subpixel: p(x|z) = Π softmax(logits)[x], an exact discrete likelihood of
//! the 8-bit pixels.

use emvq_bottleneck::vq::{fractional_counts, posterior, sample_codes, squared_distances};
use emvq_bottleneck::{Bottleneck, BottleneckOutput};
use tch::{nn, nn::Module, Kind, Tensor};

use crate::config::{DecoderConfig, EncoderConfig, VqVaeConfig, IMAGE_SIZE};
use crate::{Result, VisionError};

/// Values a subpixel can take.
pub const LEVELS: i64 = 256;

fn conv(vs: nn::Path, i: i64, o: i64, k: i64, stride: i64, padding: i64) -> nn::Conv2D {
    let cfg = nn::ConvConfig {
        stride,
        padding,
        ..Default::default()
    };
    nn::conv2d(vs, i, o, k, cfg)
}

/// `x + conv1×1(relu(conv3×3(relu(x))))`, channels preserved.
#[derive(Debug)]
pub struct ResBlock {
    conv1: nn::Conv2D,
    conv2: nn::Conv2D,
}

impl ResBlock {
    pub fn new(vs: nn::Path, channels: i64, inner: i64) -> Self {
        Self {
            conv1: conv(&vs / "conv1", channels, inner, 3, 1, 1),
            conv2: conv(&vs / "conv2", inner, channels, 1, 1, 0),
        }
    }

    /// `[batch, c, h, w]` → `[batch, c, h, w]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x + self.conv2.forward(&self.conv1.forward(&x.relu()).relu())
    }
}

fn check_images(images: &Tensor) -> Result<()> {
    let size = images.size();
    if size.len() != 4 || size[1..] != [3, IMAGE_SIZE, IMAGE_SIZE] {
        return Err(VisionError::Shape {
            what: "images",
            shape: size,
            expected: "[batch, 3, 32, 32]".into(),
        });
    }
    Ok(())
}

/// Images `[batch, 3, 32, 32]` (uint8 or already float in 0..255) → inputs
/// in [−1, 1].
fn to_unit_range(images: &Tensor) -> Result<Tensor> {
    Ok(images
        .f_to_kind(Kind::Float)?
        .f_div_scalar(127.5)?
        .f_sub_scalar(1.0)?)
}

/// 32×32×3 → (32/2^k)×(32/2^k)×d.
#[derive(Debug)]
pub struct Encoder {
    conv_in: nn::Conv2D,
    downs: Vec<nn::Conv2D>,
    blocks: Vec<ResBlock>,
    conv_out: nn::Conv2D,
}

impl Encoder {
    pub fn new(vs: nn::Path, cfg: &EncoderConfig) -> Self {
        let h = cfg.hidden;
        Self {
            conv_in: conv(&vs / "conv_in", 3, h, 3, 1, 1),
            downs: (0..cfg.downsamples)
                .map(|i| conv(&vs / "down" / i, h, h, 4, 2, 1))
                .collect(),
            blocks: (0..cfg.res_blocks)
                .map(|i| ResBlock::new(&vs / "block" / i, h, cfg.res_hidden))
                .collect(),
            conv_out: conv(&vs / "conv_out", h, cfg.latent_dim, 1, 1, 0),
        }
    }

    /// Images `[batch, 3, 32, 32]` (uint8) → latents `[batch, g, g, d]`.
    pub fn forward(&self, images: &Tensor) -> Result<Tensor> {
        check_images(images)?;
        let mut h = self.conv_in.forward(&to_unit_range(images)?); // [batch, h, 32, 32]
        for down in &self.downs {
            h = down.forward(&h.relu()); // halves the side
        }
        for block in &self.blocks {
            h = block.forward(&h); // [batch, h, g, g]
        }
        let z = self.conv_out.forward(&h.relu()); // [batch, d, g, g]
        Ok(z.f_permute([0, 2, 3, 1])?) // [batch, g, g, d]
    }
}

/// (32/2^k)×(32/2^k)×d → 256 logits for each of the 3×32×32 subpixels.
#[derive(Debug)]
pub struct Decoder {
    conv_in: nn::Conv2D,
    blocks: Vec<ResBlock>,
    ups: Vec<nn::ConvTranspose2D>,
    conv_out: nn::Conv2D,
    latent_dim: i64,
}

impl Decoder {
    pub fn new(vs: nn::Path, cfg: &DecoderConfig) -> Self {
        let h = cfg.hidden;
        let up_cfg = nn::ConvTransposeConfig {
            stride: 2,
            padding: 1,
            ..Default::default()
        };
        Self {
            conv_in: conv(&vs / "conv_in", cfg.latent_dim, h, 3, 1, 1),
            blocks: (0..cfg.res_blocks)
                .map(|i| ResBlock::new(&vs / "block" / i, h, cfg.res_hidden))
                .collect(),
            ups: (0..cfg.upsamples)
                .map(|i| nn::conv_transpose2d(&vs / "up" / i, h, h, 4, up_cfg))
                .collect(),
            conv_out: conv(&vs / "conv_out", h, 3 * LEVELS, 1, 1, 0),
            latent_dim: cfg.latent_dim,
        }
    }

    /// The output layer (tests set it to zero: a uniform decoder).
    pub fn output_layer(&self) -> &nn::Conv2D {
        &self.conv_out
    }

    /// Latents `[batch, g, g, d]` → logits `[batch, 3, 256, 32, 32]`.
    pub fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let size = z.size();
        if size.len() != 4 || size[3] != self.latent_dim {
            return Err(VisionError::Shape {
                what: "latents",
                shape: size,
                expected: format!("[batch, g, g, {}]", self.latent_dim),
            });
        }
        let mut h = self.conv_in.forward(&z.f_permute([0, 3, 1, 2])?); // [batch, h, g, g]
        for block in &self.blocks {
            h = block.forward(&h);
        }
        for up in &self.ups {
            h = up.forward(&h.relu()); // doubles the side
        }
        let logits = self.conv_out.forward(&h.relu()); // [batch, 3·256, 32, 32]
        let b = size[0];
        let side = logits.size()[2];
        if side != IMAGE_SIZE {
            return Err(VisionError::Shape {
                what: "decoder output",
                shape: logits.size(),
                expected: "a 32×32 grid (latent grid × 2^upsamples)".into(),
            });
        }
        Ok(logits.f_view([b, 3, LEVELS, IMAGE_SIZE, IMAGE_SIZE])?) // [batch, 3, 256, 32, 32]
    }
}

/// −ln p(x|z) per image, in nats: `logits` `[batch, 3, 256, 32, 32]`,
/// `images` `[batch, 3, 32, 32]` (uint8) → `[batch]` fp32.
pub fn pixel_nll(logits: &Tensor, images: &Tensor) -> Result<Tensor> {
    check_images(images)?;
    let targets = images.f_to_kind(Kind::Int64)?.f_unsqueeze(2)?; // [batch, 3, 1, 32, 32]
    let logp = logits
        .f_to_kind(Kind::Float)?
        .f_log_softmax(2, Kind::Float)? // [batch, 3, 256, 32, 32]
        .f_gather(2, &targets, false)?; // [batch, 3, 1, 32, 32]
    Ok(logp
        .f_flatten(1, -1)?
        .f_sum_dim_intlist(1, false, Kind::Float)?
        .f_neg()?) // [batch]
}

/// The most probable value of each subpixel: logits `[batch, 3, 256, 32, 32]`
/// → images `[batch, 3, 32, 32]` uint8.
pub fn mode_image(logits: &Tensor) -> Result<Tensor> {
    Ok(logits.f_argmax(2, false)?.f_to_kind(Kind::Uint8)?)
}

/// What [`VqVae::forward`] returns.
#[derive(Debug)]
pub struct VqVaeOutput {
    /// `[batch, 3, 256, 32, 32]`.
    pub logits: Tensor,
    /// −ln p(x|z) per image in nats, `[batch]`.
    pub nll: Tensor,
    /// Hard codes `[batch, g, g, n_c]` int64.
    pub codes: Tensor,
    /// The bottleneck's output (losses, soft targets).
    pub bottleneck: BottleneckOutput,
}

impl VqVaeOutput {
    /// Training loss: NLL in nats per subpixel (mean over the batch) plus
    /// the bottleneck's commitment (and codebook) loss.
    pub fn loss(&self) -> Result<Tensor> {
        let per_dim = self
            .nll
            .f_mean(Kind::Float)?
            .f_div_scalar(crate::bpd::SUBPIXELS as f64)?;
        Ok(per_dim.f_add(&self.bottleneck.loss())?)
    }
}

/// Sums of [`VqVae::posterior_health`] over a batch (add batches up, then
/// divide by `vectors`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PosteriorHealth {
    pub entropy_nats: f64,
    pub distinct_codes: f64,
    pub vectors: i64,
}

impl PosteriorHealth {
    pub fn add(&mut self, other: &PosteriorHealth) {
        self.entropy_nats += other.entropy_nats;
        self.distinct_codes += other.distinct_codes;
        self.vectors += other.vectors;
    }

    /// Mean posterior entropy per (vector, slice) in nats.
    pub fn mean_entropy(&self) -> f64 {
        self.entropy_nats / self.vectors.max(1) as f64
    }

    /// Mean number of distinct codes among the m draws.
    pub fn mean_distinct(&self) -> f64 {
        self.distinct_codes / self.vectors.max(1) as f64
    }
}

/// Encoder, bottleneck, decoder.
#[derive(Debug)]
pub struct VqVae {
    pub encoder: Encoder,
    pub bottleneck: Bottleneck,
    pub decoder: Decoder,
    cfg: VqVaeConfig,
}

impl VqVae {
    /// Registers `encoder.*`, `bottleneck.*` and `decoder.*` under `vs`.
    pub fn new(vs: nn::Path, cfg: &VqVaeConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            encoder: Encoder::new(&vs / "encoder", &cfg.encoder()),
            bottleneck: Bottleneck::new(&(&vs / "bottleneck"), cfg.latent_dim, &cfg.bottleneck)?,
            decoder: Decoder::new(&vs / "decoder", &cfg.decoder()),
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &VqVaeConfig {
        &self.cfg
    }

    /// Images `[batch, 3, 32, 32]` uint8 → logits, NLL, codes, bottleneck
    /// losses. In training the codebook's EMA moves and EM samples.
    pub fn forward(&self, images: &Tensor, train: bool) -> Result<VqVaeOutput> {
        let z = self.encoder.forward(images)?; // [batch, g, g, d]
        let bottleneck = self.bottleneck.forward(&z, train)?;
        let logits = self.decoder.forward(&bottleneck.quantized)?; // [batch, 3, 256, 32, 32]
        let nll = pixel_nll(&logits, images)?;
        Ok(VqVaeOutput {
            logits,
            nll,
            codes: bottleneck.codes.shallow_clone(),
            bottleneck,
        })
    }

    /// Hard codes of images: `[batch, 3, 32, 32]` → `[batch, g, g, n_c]`.
    pub fn encode_codes(&self, images: &Tensor) -> Result<Tensor> {
        let z = self.encoder.forward(images)?;
        Ok(self.bottleneck.forward(&z, false)?.codes)
    }

    /// Soft-EM health on images `[batch, 3, 32, 32]`: the summed entropy
    /// (nats) of the posterior softmax(−‖x − e‖²/T) over the batch's latent
    /// vectors and slices, the summed number of distinct codes among
    /// `samples` draws from it, and how many (vector, slice) pairs were
    /// summed. Near-zero entropy / one distinct code means the posterior is
    /// one-hot and soft EM behaves like hard EM (plain VQ).
    pub fn posterior_health(
        &self,
        images: &Tensor,
        temperature: f64,
        samples: i64,
    ) -> Result<PosteriorHealth> {
        let codebook = self
            .bottleneck
            .codebook()
            .ok_or_else(|| VisionError::Config("the bottleneck has no codebook".into()))?;
        let (s, k) = (
            self.cfg.bottleneck.slices,
            self.cfg.bottleneck.codebook_size(),
        );
        let z = self.encoder.forward(images)?; // [batch, g, g, d]
        let xs = z
            .f_reshape([-1, s, self.cfg.latent_dim / s])?
            .f_permute([1, 0, 2])?; // [s, n, c]
        let distances = squared_distances(&xs, &codebook.codebook)?; // [s, n, k]
        let probs = posterior(distances, temperature)?; // [s, n, k]
        let entropy = probs
            .f_mul(&probs.f_clamp_min(1e-30)?.f_log()?)?
            .f_sum(Kind::Double)?
            .double_value(&[])
            .abs();
        let drawn = sample_codes(&probs, samples)?; // [s, n, m]
        let distinct = fractional_counts(&drawn, k)?
            .f_gt(0.0)?
            .f_sum(Kind::Double)?
            .double_value(&[]);
        Ok(PosteriorHealth {
            entropy_nats: entropy,
            distinct_codes: distinct,
            vectors: probs.size()[0] * probs.size()[1],
        })
    }

    /// Codes `[batch, g, g, n_c]` → logits `[batch, 3, 256, 32, 32]`.
    pub fn decode_codes(&self, codes: &Tensor) -> Result<Tensor> {
        let z = self.bottleneck.embed_codes(codes)?; // [batch, g, g, d]
        self.decoder.forward(&z)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn small() -> VqVaeConfig {
        toml::from_str(
            "hidden = 8\nres_blocks = 1\nres_hidden = 4\nlatent_dim = 4\n[bottleneck]\nbits = 3\n",
        )
        .unwrap()
    }

    #[test]
    fn pixel_nll_is_the_sum_of_per_subpixel_cross_entropies() {
        tch::manual_seed(3);
        let logits = Tensor::randn([2, 3, 256, 32, 32], (Kind::Float, Device::Cpu));
        let images = Tensor::randint(256, [2, 3, 32, 32], (Kind::Uint8, Device::Cpu));
        let nll = pixel_nll(&logits, &images).unwrap();
        let ce = logits
            .permute([0, 2, 1, 3, 4])
            .cross_entropy_loss::<Tensor>(
                &images.to_kind(Kind::Int64),
                None,
                tch::Reduction::Sum,
                -100,
                0.0,
            );
        assert!((nll.sum(Kind::Float) - ce).abs().double_value(&[]) < 1e-1);
        let bad = Tensor::zeros([2, 3, 16, 16], (Kind::Uint8, Device::Cpu));
        assert!(pixel_nll(&logits, &bad).is_err());
    }

    #[test]
    fn posterior_health_spans_one_hot_to_uniform() {
        tch::manual_seed(5);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = VqVae::new(vs.root(), &small()).unwrap(); // K = 8, n_c = 1
        let images = Tensor::randint(256, [2, 3, 32, 32], (Kind::Uint8, Device::Cpu));
        // T → ∞: the uniform posterior, entropy ln K.
        let flat = model.posterior_health(&images, 1e12, 10).unwrap();
        assert_eq!(flat.vectors, 2 * 64);
        assert!((flat.mean_entropy() - 8f64.ln()).abs() < 1e-4, "{flat:?}");
        assert!(flat.mean_distinct() > 1.0 && flat.mean_distinct() <= 8.0);
        // T → 0: one-hot, every draw is the nearest code.
        let sharp = model.posterior_health(&images, 1e-12, 10).unwrap();
        assert!(sharp.mean_entropy() < 1e-4, "{sharp:?}");
        assert_eq!(sharp.mean_distinct(), 1.0);
        let mut sum = flat;
        sum.add(&sharp);
        assert_eq!(sum.vectors, 4 * 64);
    }

    #[test]
    fn wrong_image_shape_is_an_error() {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = VqVae::new(vs.root(), &small()).unwrap();
        let images = Tensor::zeros([1, 1, 32, 32], (Kind::Uint8, Device::Cpu));
        assert!(matches!(
            model.forward(&images, false),
            Err(VisionError::Shape { .. })
        ));
    }
}
