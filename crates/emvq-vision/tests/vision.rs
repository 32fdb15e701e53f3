//! Integration tests of the CIFAR-10 VQ-VAE (Roy et al. 2018, arXiv
//! 1805.11063): shapes for 32×32 inputs, exact bits/dim of a uniform decoder
//! with a uniform prior, seeded sampling, PNG round trips, and a few
//! training steps on real CIFAR-10 images lowering the loss.

use std::path::Path;

use emvq_bottleneck::BottleneckKind;
use emvq_transformer::{Adam, AdamConfig};
use emvq_vision::picture::{image_grid, read_png, write_png};
use emvq_vision::{
    bits_per_dim, uniform_prior_nats, LatentPrior, PriorConfig, VqVae, VqVaeConfig, SUBPIXELS,
};
use tch::{nn, Device, Kind, Tensor};

fn config(kind: &str, slices: i64, bits: u32) -> VqVaeConfig {
    toml::from_str(&format!(
        "hidden = 16\nres_blocks = 1\nres_hidden = 8\nlatent_dim = 8\n\
         [bottleneck]\nkind = \"{kind}\"\nbits = {bits}\nn_c = {slices}\n"
    ))
    .unwrap()
}

fn random_images(n: i64, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    Tensor::randint(256, [n, 3, 32, 32], (Kind::Uint8, Device::Cpu)) // [n, 3, 32, 32]
}

#[test]
fn encoder_and_decoder_shapes_for_32x32_input() {
    tch::set_num_threads(1);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = VqVae::new(vs.root(), &config("vq", 2, 4)).unwrap();
    let images = random_images(3, 1);
    let z = model.encoder.forward(&images).unwrap();
    assert_eq!(z.size(), [3, 8, 8, 8]); // [batch, 8, 8, d]
    let out = model.forward(&images, false).unwrap();
    assert_eq!(out.logits.size(), [3, 3, 256, 32, 32]);
    assert_eq!(out.codes.size(), [3, 8, 8, 2]);
    assert_eq!(out.nll.size(), [3]);
    let logits = model.decode_codes(&out.codes).unwrap();
    assert_eq!(logits.size(), [3, 3, 256, 32, 32]);
    // Decoding the codes is what the forward pass decoded (eval: hard codes).
    assert!((logits - &out.logits).abs().max().double_value(&[]) < 1e-4);
}

#[test]
fn uniform_decoder_and_uniform_prior_give_exactly_8_plus_code_bits() {
    tch::set_num_threads(1);
    for (kind, slices, bits) in [("vq", 1, 6), ("em", 2, 5)] {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = config(kind, slices, bits);
        let model = VqVae::new(vs.root(), &cfg).unwrap();
        let out_layer = model.decoder.output_layer();
        tch::no_grad(|| {
            let _ = out_layer.ws.shallow_clone().zero_();
            let _ = out_layer.bs.as_ref().unwrap().shallow_clone().zero_();
        });
        let images = random_images(4, 2);
        let out = tch::no_grad(|| model.forward(&images, false)).unwrap();
        let prior = uniform_prior_nats(cfg.latents(), slices, bits);
        let expected = 8.0 + (64 * slices * bits as i64) as f64 / 3072.0;
        for nll in Vec::<f64>::try_from(out.nll.to_kind(Kind::Double)).unwrap() {
            let bpd = bits_per_dim(nll, prior);
            assert!((bpd - expected).abs() < 1e-5, "{kind}: {bpd} vs {expected}");
        }
        assert!(
            (SUBPIXELS as f64 * 256f64.ln() - 3072.0 * 8.0 * std::f64::consts::LN_2).abs() < 1e-6
        );
    }
}

#[test]
fn sampling_with_a_fixed_seed_repeats() {
    tch::set_num_threads(1);
    tch::manual_seed(9);
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = PriorConfig {
        d_model: 16,
        heads: 2,
        d_ff: 32,
        layers: 1,
        dropout: 0.1,
    };
    let prior = LatentPrior::new(vs.root(), &cfg, 64, 2, 16).unwrap();
    let a = prior.sample(4, 123, 1.0, Device::Cpu).unwrap();
    let b = prior.sample(4, 123, 1.0, Device::Cpu).unwrap();
    let c = prior.sample(4, 124, 1.0, Device::Cpu).unwrap();
    assert_eq!(a.size(), [4, 64, 2]);
    assert!(a.equal(&b));
    assert!(!a.equal(&c));
    let (lo, hi) = (a.min().int64_value(&[]), a.max().int64_value(&[]));
    assert!(lo >= 0 && hi < 16);
}

#[test]
fn written_png_reads_back_with_the_same_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/grid.png");
    let images = random_images(5, 3);
    let grid = image_grid(&images, 3, 2).unwrap();
    write_png(&path, &grid).unwrap();
    let back = read_png(&path).unwrap();
    assert_eq!(back, grid);
    // And the image pixels themselves: image 4 sits at column 1, row 1.
    let px = |img: i64, c: i64, y: i64, x: i64| images.int64_value(&[img, c, y, x]) as u8;
    let (gx, gy) = (2 + 34, 2 + 34);
    let i = 3 * ((gy + 5) * back.width + gx + 7);
    assert_eq!(
        &back.pixels[i..i + 3],
        &[px(4, 0, 5, 7), px(4, 1, 5, 7), px(4, 2, 5, 7)]
    );
    assert!(read_png(Path::new("/nonexistent/x.png")).is_err());
}

#[test]
fn a_few_training_steps_reduce_the_loss_on_cifar10() {
    tch::set_num_threads(1);
    let root = emvq_data::sources::default_workspace_root();
    let dir = emvq_data::sources::find_data("cifar10", &root).unwrap();
    let test = emvq_data::load_cifar10(&dir, emvq_data::CifarSplit::Test).unwrap();
    let flat: Vec<u8> = test.images.iter().take(16 * 3072).copied().collect();
    let images = Tensor::from_slice(&flat).view([16, 3, 32, 32]); // [16, 3, 32, 32]
    for kind in ["vq", "em"] {
        tch::manual_seed(4);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = config(kind, 1, 4);
        assert_eq!(
            cfg.bottleneck.kind,
            if kind == "vq" {
                BottleneckKind::Vq
            } else {
                BottleneckKind::Em
            }
        );
        let model = VqVae::new(vs.root(), &cfg).unwrap();
        let mut opt = Adam::new(
            &vs,
            &AdamConfig {
                beta2: 0.999,
                eps: 1e-8,
                ..Default::default()
            },
        )
        .unwrap();
        let eval = |m: &VqVae| {
            tch::no_grad(|| {
                m.forward(&images, false)
                    .unwrap()
                    .loss()
                    .unwrap()
                    .double_value(&[])
            })
        };
        let before = eval(&model);
        for _ in 0..8 {
            opt.zero_grad();
            let loss = model.forward(&images, true).unwrap().loss().unwrap();
            loss.backward();
            opt.step(3e-3).unwrap();
        }
        let after = eval(&model);
        assert!(after < before - 0.05, "{kind}: loss {before} → {after}");
    }
}
