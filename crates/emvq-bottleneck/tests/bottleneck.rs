//! End-to-end checks of `Bottleneck`: the straight-through gradient, soft
//! EM's Monte-Carlo counts against the exact posterior, n_c = 1 against a
//! plain VQ written out here, slicing against independent codebooks,
//! checkpoints, k-means initialisation, dead-code re-seeding, semhash, and
//! mixed-precision inputs.

use emvq_bottleneck::{
    Bottleneck, BottleneckConfig, BottleneckError, BottleneckKind, CodeUsage, CodebookInit,
};
use emvq_tensor::{seed::seed_all, Checkpoint};
use tch::{nn::VarStore, Device, Kind, Tensor};

fn cfg(kind: BottleneckKind, bits: u32, slices: i64) -> BottleneckConfig {
    BottleneckConfig {
        kind,
        bits,
        slices,
        ..Default::default()
    }
}

fn randn(shape: &[i64]) -> Tensor {
    Tensor::randn(shape, (Kind::Float, Device::Cpu))
}

fn bits_of(t: &Tensor) -> Vec<u32> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1))
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

#[test]
fn straight_through_gradient_at_the_input_equals_the_gradient_at_the_output() {
    for kind in [BottleneckKind::Vq, BottleneckKind::Em] {
        for input_kind in [Kind::Float, Kind::BFloat16] {
            seed_all(0);
            let vs = VarStore::new(Device::Cpu);
            let b = Bottleneck::new(&vs.root(), 8, &cfg(kind, 4, 2)).unwrap();
            let x = randn(&[3, 5, 8])
                .to_kind(input_kind)
                .set_requires_grad(true);
            let out = b.forward(&x, true).unwrap();
            assert_eq!(out.quantized.kind(), input_kind);
            let g = randn(&[3, 5, 8]).to_kind(input_kind);
            (&out.quantized * &g).sum(Kind::Float).backward();
            assert_eq!(bits_of(&x.grad()), bits_of(&g), "{kind:?} {input_kind:?}");
        }
    }
}

#[test]
fn commitment_loss_is_beta_times_the_squared_error_and_pulls_x_to_q() {
    seed_all(1);
    let vs = VarStore::new(Device::Cpu);
    let b = Bottleneck::new(&vs.root(), 6, &cfg(BottleneckKind::Vq, 3, 1)).unwrap();
    let x = randn(&[10, 6]).set_requires_grad(true);
    let out = b.forward(&x, false).unwrap();
    let q = b.embed_codes(&out.codes).unwrap();
    let expected = 0.25 * f64::try_from((&x - &q).square().mean(Kind::Float)).unwrap();
    let got = f64::try_from(&out.commitment_loss).unwrap();
    assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
    assert!(out.codebook_loss.is_none());
    out.commitment_loss.backward();
    // ∂/∂x β·mean((x − q)²) = 2β(x − q)/numel.
    let grad = (&x - &q) * (2.0 * 0.25 / 60.0);
    assert!(x.grad().allclose(&grad, 1e-6, 1e-7, false));
    // The straight-through output is q in the forward pass.
    assert!(out.quantized.allclose(&q, 1e-6, 1e-6, false));
}

/// The exact posterior softmax(−‖x − e_j‖²/T) in f64.
fn posterior(x: &Tensor, codebook: &Tensor, temperature: f64) -> Tensor {
    let x = x.to_kind(Kind::Double).unsqueeze(1); // [n, 1, d]
    let e = codebook.to_kind(Kind::Double).unsqueeze(0); // [1, k, d]
    let d = (x - e).square().sum_dim_intlist(-1, false, Kind::Double); // [n, k]
    (d * (-1.0 / temperature)).softmax(-1, Kind::Double)
}

#[test]
fn soft_em_fractional_counts_approach_the_exact_posterior() {
    // m = 200 000 samples per vector. Each r_ij is a mean of m Bernoulli(p_ij)
    // draws, standard error √(p(1−p)/m) ≤ 0.0011; we allow 5 standard errors
    // (two-sided tail 6e-7 per entry, 12 entries) plus 1e-6 for fp32 rounding.
    let m = 200_000;
    for temperature in [1.0, 3.0] {
        seed_all(7);
        let vs = VarStore::new(Device::Cpu);
        let config = BottleneckConfig {
            samples: m,
            temperature,
            decay: 0.9,
            ..cfg(BottleneckKind::Em, 2, 1)
        };
        let b = Bottleneck::new(&vs.root(), 2, &config).unwrap();
        let codebook = Tensor::from_slice2(&[[0.0f32, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]);
        tch::no_grad(|| {
            let cb = b.codebook().unwrap();
            cb.codebook.shallow_clone().copy_(&codebook.unsqueeze(0));
            cb.ema_sum.shallow_clone().copy_(&codebook.unsqueeze(0));
        });
        let x = Tensor::from_slice2(&[[0.4f32, 0.3], [0.9, 0.6], [0.2, 1.1]]);
        let exact = posterior(&x, &codebook, temperature); // [3, 4]
        let out = b.forward(&x, true).unwrap();
        let r = out.soft_targets.as_ref().unwrap().to_kind(Kind::Double); // [3, 1, 4]
        assert_eq!(r.size(), vec![3, 1, 4]);
        let r = r.squeeze_dim(1);
        let variance: Tensor = &exact * (1.0 - &exact) / m as f64;
        let tolerance = variance.sqrt() * 5.0 + 1e-6;
        let excess = ((&r - &exact).abs() - &tolerance).max();
        assert!(
            f64::try_from(excess).unwrap() <= 0.0,
            "r = {r}, exact = {exact}"
        );
        // Rows of r sum to 1; the EMA count after one step is (1 − λ)·Σ_i r_ij.
        let row_sums = r.sum_dim_intlist(-1, false, Kind::Double);
        assert!(row_sums.allclose(
            &Tensor::ones([3], (Kind::Double, Device::Cpu)),
            1e-6,
            1e-6,
            false
        ));
        let count = b
            .codebook()
            .unwrap()
            .ema_count
            .to_kind(Kind::Double)
            .squeeze_dim(0);
        let expected = r.sum_dim_intlist(0, false, Kind::Double) * 0.1;
        assert!(
            count.allclose(&expected, 1e-5, 1e-7, false),
            "{count} vs {expected}"
        );
        // Hard codes are the nearest codes.
        assert_eq!(
            Vec::<i64>::try_from(out.codes.view([-1])).unwrap(),
            vec![0, 3, 2]
        );
        // In evaluation the targets are the exact posterior.
        let cb_now = b.codebook().unwrap().codebook.squeeze_dim(0);
        let eval = b.forward(&x, false).unwrap();
        let eval_r = eval
            .soft_targets
            .unwrap()
            .to_kind(Kind::Double)
            .squeeze_dim(1);
        assert!(eval_r.allclose(&posterior(&x, &cb_now, temperature), 1e-5, 1e-6, false));
    }
}

#[test]
fn soft_em_decoder_input_is_the_mean_of_the_sampled_codes() {
    seed_all(3);
    let vs = VarStore::new(Device::Cpu);
    let config = BottleneckConfig {
        ema: false,
        samples: 4,
        ..cfg(BottleneckKind::Em, 3, 1)
    };
    let b = Bottleneck::new(&vs.root(), 4, &config).unwrap();
    let x = randn(&[6, 4]);
    let out = b.forward(&x, true).unwrap();
    let r = out.soft_targets.unwrap().squeeze_dim(1); // [6, 8]
                                                      // r has multiples of 1/4; the decoder input is Σ_j r_ij e_j.
    let scaled = &r * 4.0;
    assert!(scaled.allclose(&scaled.round(), 0.0, 1e-6, false));
    let codebook = b.codebook().unwrap().codebook.squeeze_dim(0).detach();
    assert!(out
        .quantized
        .allclose(&r.matmul(&codebook), 1e-5, 1e-5, false));
}

/// Plain VQ with EMA on one flat codebook, written out with 2-D ops.
fn plain_vq_step(
    x: &Tensor,
    codebook: &Tensor,
    count: &Tensor,
    sum: &Tensor,
    c: &BottleneckConfig,
) -> (Tensor, Tensor, Tensor, Tensor) {
    let k = codebook.size()[0];
    let dist = x.square().sum_dim_intlist(-1, true, Kind::Float)
        + codebook
            .square()
            .sum_dim_intlist(-1, true, Kind::Float)
            .transpose(0, 1)
        - x.matmul(&codebook.transpose(0, 1)) * 2.0;
    let codes = dist.argmin(-1, false); // [n]
    let q = codebook.index_select(0, &codes);
    let z = x + (&q - x).detach();
    let batch_count = codes.bincount(None::<Tensor>, k).to_kind(Kind::Float);
    let batch_sum =
        Tensor::zeros(codebook.size(), (Kind::Float, Device::Cpu)).index_add(0, &codes, x);
    let count = count.lerp(&batch_count, 1.0 - c.decay);
    let sum = sum.lerp(&batch_sum, 1.0 - c.decay);
    let n = count.sum(Kind::Float);
    let smoothed = (&count + c.epsilon) / (&n + k as f64 * c.epsilon) * &n;
    let new_codebook = &sum / smoothed.unsqueeze(-1);
    (codes, z, count, new_codebook)
}

#[test]
fn one_slice_equals_plain_vq_bit_for_bit() {
    seed_all(5);
    let vs = VarStore::new(Device::Cpu);
    let c = cfg(BottleneckKind::Vq, 5, 1);
    let b = Bottleneck::new(&vs.root(), 16, &c).unwrap();
    let cb = b.codebook().unwrap();
    let mut codebook = cb.codebook.squeeze_dim(0).copy();
    let mut count = Tensor::zeros([32], (Kind::Float, Device::Cpu));
    let mut sum = codebook.copy();
    for step in 0..3 {
        let x = randn(&[40, 16]) * 0.1;
        let out = b.forward(&x, true).unwrap();
        let (codes, z, new_count, new_codebook) = plain_vq_step(&x, &codebook, &count, &sum, &c);
        sum = sum.lerp(
            &Tensor::zeros([32, 16], (Kind::Float, Device::Cpu)).index_add(0, &codes, &x),
            1.0 - c.decay,
        );
        assert!(out.codes.squeeze_dim(-1).equal(&codes), "step {step}");
        assert_eq!(bits_of(&out.quantized), bits_of(&z), "step {step}");
        assert_eq!(
            bits_of(&cb.ema_count.squeeze_dim(0)),
            bits_of(&new_count),
            "step {step}"
        );
        assert_eq!(
            bits_of(&cb.ema_sum.squeeze_dim(0)),
            bits_of(&sum),
            "step {step}"
        );
        assert_eq!(
            bits_of(&cb.codebook.squeeze_dim(0)),
            bits_of(&new_codebook),
            "step {step}"
        );
        codebook = new_codebook;
        count = new_count;
    }
}

#[test]
fn slices_are_independent_codebooks_over_the_slices_of_the_vector() {
    seed_all(6);
    let d = 12;
    let vs = VarStore::new(Device::Cpu);
    let sliced = Bottleneck::new(&vs.root(), d, &cfg(BottleneckKind::Vq, 3, 3)).unwrap();
    let sliced_cb = sliced.codebook().unwrap();
    assert_eq!(sliced_cb.codebook.size(), vec![3, 8, 4]);
    let singles: Vec<(VarStore, Bottleneck)> = (0..3)
        .map(|s| {
            let vs = VarStore::new(Device::Cpu);
            let b = Bottleneck::new(&vs.root(), 4, &cfg(BottleneckKind::Vq, 3, 1)).unwrap();
            tch::no_grad(|| {
                let cb = b.codebook().unwrap();
                cb.codebook
                    .shallow_clone()
                    .copy_(&sliced_cb.codebook.narrow(0, s, 1));
                cb.ema_sum
                    .shallow_clone()
                    .copy_(&sliced_cb.ema_sum.narrow(0, s, 1));
            });
            (vs, b)
        })
        .collect();
    for _ in 0..2 {
        let x = randn(&[2, 7, d]);
        let out = sliced.forward(&x, true).unwrap();
        assert_eq!(out.codes.size(), vec![2, 7, 3]);
        for (s, (_, single)) in singles.iter().enumerate() {
            let part = x.narrow(-1, 4 * s as i64, 4);
            let one = single.forward(&part, true).unwrap();
            assert!(out.codes.narrow(-1, s as i64, 1).equal(&one.codes));
            assert_eq!(
                bits_of(&out.quantized.narrow(-1, 4 * s as i64, 4)),
                bits_of(&one.quantized)
            );
            let single_cb = &single.codebook().unwrap().codebook;
            assert!(sliced_cb
                .codebook
                .narrow(0, s as i64, 1)
                .allclose(single_cb, 1e-6, 1e-6, false));
        }
        // embed_codes puts each slice's code vector back in its place, and
        // embed_soft of one-hot codes agrees with it.
        let embedded = sliced.embed_codes(&out.codes).unwrap();
        assert_eq!(embedded.size(), vec![2, 7, d]);
        for (s, (_, single)) in singles.iter().enumerate() {
            let one = single
                .embed_codes(&out.codes.narrow(-1, s as i64, 1))
                .unwrap();
            assert!(embedded.narrow(-1, 4 * s as i64, 4).equal(&one));
        }
        let one_hot = out.codes.one_hot(8).to_kind(Kind::Float); // [2, 7, 3, 8]
        let soft = sliced.embed_soft(&one_hot).unwrap();
        assert!(soft.allclose(&embedded, 1e-6, 1e-6, false));
    }
}

#[test]
fn saved_and_reloaded_bottleneck_gives_the_same_codes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bottleneck.safetensors");
    let config = cfg(BottleneckKind::Em, 4, 2);
    seed_all(8);
    let vs = VarStore::new(Device::Cpu);
    let b = Bottleneck::new(&(vs.root() / "bottleneck"), 8, &config).unwrap();
    for _ in 0..5 {
        b.forward(&randn(&[32, 8]), true).unwrap();
    }
    let names: Vec<String> = vs.variables().into_keys().collect();
    for name in [
        "bottleneck.codebook",
        "bottleneck.ema_count",
        "bottleneck.ema_sum",
    ] {
        assert!(names.contains(&name.to_string()), "{names:?}");
    }
    Checkpoint::from_var_store(&vs).save(&path).unwrap();

    seed_all(9);
    let vs2 = VarStore::new(Device::Cpu);
    let b2 = Bottleneck::new(&(vs2.root() / "bottleneck"), 8, &config).unwrap();
    let x = randn(&[50, 8]);
    let before = b2.forward(&x, false).unwrap().codes;
    Checkpoint::load(&path)
        .unwrap()
        .restore_into(&vs2, &path)
        .unwrap();
    let expected = b.forward(&x, false).unwrap();
    let reloaded = b2.forward(&x, false).unwrap();
    assert!(reloaded.codes.equal(&expected.codes));
    assert!(
        !before.equal(&expected.codes),
        "the fresh model must differ before loading"
    );
    assert!(reloaded.quantized.equal(&expected.quantized));
    for (name, t) in vs.variables() {
        assert!(t.equal(&vs2.variables()[&name]), "{name}");
    }
}

#[test]
fn evaluation_does_not_touch_the_codebook_and_training_does() {
    seed_all(10);
    let vs = VarStore::new(Device::Cpu);
    let b = Bottleneck::new(&vs.root(), 8, &cfg(BottleneckKind::Vq, 4, 1)).unwrap();
    let cb = b.codebook().unwrap();
    let start = cb.codebook.copy();
    let x = randn(&[64, 8]);
    b.forward(&x, false).unwrap();
    assert!(
        cb.codebook.equal(&start) && f64::try_from(cb.ema_count.sum(Kind::Float)).unwrap() == 0.0
    );
    b.forward(&x, true).unwrap();
    assert!(!cb.codebook.equal(&start));
    // N sums to (1 − λ)·(vectors) after one step.
    let n = f64::try_from(cb.ema_count.sum(Kind::Float)).unwrap();
    assert!((n - 0.001 * 64.0).abs() < 1e-6, "{n}");
    assert!(!cb.codebook.requires_grad());
}

#[test]
fn gradient_trained_codebook_gets_the_codebook_loss_gradient_and_no_ema() {
    seed_all(11);
    let vs = VarStore::new(Device::Cpu);
    let config = BottleneckConfig {
        ema: false,
        ..cfg(BottleneckKind::Vq, 3, 1)
    };
    let b = Bottleneck::new(&vs.root(), 4, &config).unwrap();
    let cb = b.codebook().unwrap();
    let start = cb.codebook.detach().copy();
    let x = randn(&[20, 4]);
    let out = b.forward(&x, true).unwrap();
    assert!(
        cb.codebook.detach().equal(&start),
        "no EMA update when ema = false"
    );
    let q = b.embed_codes(&out.codes).unwrap().detach();
    let ql = out.codebook_loss.as_ref().unwrap();
    let expected = f64::try_from((&x - &q).square().mean(Kind::Float)).unwrap();
    assert!((f64::try_from(ql).unwrap() - expected).abs() < 1e-6);
    out.loss().backward();
    let grad = cb.codebook.grad();
    assert!(f64::try_from(grad.abs().sum(Kind::Float)).unwrap() > 0.0);
    // Only used codes get a gradient.
    let used = out.codes.view([-1]).bincount(None::<Tensor>, 8).gt(0);
    let grad_rows = grad
        .squeeze_dim(0)
        .abs()
        .sum_dim_intlist(-1, false, Kind::Float)
        .gt(0.0);
    assert!(used.equal(&grad_rows));
}

#[test]
fn kmeans_init_places_codes_on_the_blob_centres_once() {
    seed_all(12);
    // Eight blobs on the corners of a cube scaled by 5, std 0.05, 64 points each.
    let corners: Vec<f32> = (0..8)
        .flat_map(|i| (0..3).map(move |a| if i >> a & 1 == 1 { 5.0 } else { 0.0 }))
        .collect();
    let corners = Tensor::from_slice(&corners).view([8, 3]);
    let x = corners.repeat([64, 1]) + randn(&[512, 3]) * 0.05;
    let vs = VarStore::new(Device::Cpu);
    let config = BottleneckConfig {
        init: CodebookInit::Kmeans,
        ..cfg(BottleneckKind::Vq, 3, 1)
    };
    let b = Bottleneck::new(&vs.root(), 3, &config).unwrap();
    b.forward(&x, true).unwrap();
    let cb = b.codebook().unwrap();
    assert_eq!(
        f64::try_from(vs.variables()["kmeans_done"].sum(Kind::Float)).unwrap(),
        1.0
    );
    // After k-means and one EMA step every corner has a code within 0.05.
    let codebook = cb.codebook.squeeze_dim(0);
    let dist = (corners.unsqueeze(1) - codebook.unsqueeze(0))
        .square()
        .sum_dim_intlist(-1, false, Kind::Float);
    let worst = f64::try_from(dist.min_dim(-1, false).0.max().sqrt()).unwrap();
    assert!(worst < 0.05, "{worst}");
    let mut usage = CodeUsage::new(1, 8);
    usage
        .add_codes(&b.forward(&x, false).unwrap().codes)
        .unwrap();
    assert!((usage.perplexity()[0] - 8.0).abs() < 1e-9);
    // A second training batch runs EMA only: the codes stay near the centres.
    b.forward(&(&x + 0.01), true).unwrap();
    let dist = (corners.unsqueeze(1) - cb.codebook.squeeze_dim(0).unsqueeze(0))
        .square()
        .sum_dim_intlist(-1, false, Kind::Float);
    assert!(f64::try_from(dist.min_dim(-1, false).0.max().sqrt()).unwrap() < 0.05);
}

#[test]
fn dead_codes_are_reseeded_from_the_batch() {
    seed_all(13);
    let vs = VarStore::new(Device::Cpu);
    let config = BottleneckConfig {
        reseed_dead: true,
        ..cfg(BottleneckKind::Vq, 4, 1)
    };
    let b = Bottleneck::new(&vs.root(), 2, &config).unwrap();
    // Data far from the small initial codebook: one code wins everything.
    let x = randn(&[256, 2]) + 20.0;
    let out = b.forward(&x, true).unwrap();
    assert_eq!(out.reseeded, 15);
    let cb = b.codebook().unwrap();
    let count = Vec::<f32>::try_from(cb.ema_count.view([-1])).unwrap();
    let mean = 0.001f32 * 256.0 / 16.0;
    assert_eq!(
        count.iter().filter(|&&c| (c - mean).abs() < 1e-7).count(),
        15
    );
    // Re-seeded codes are batch vectors, so the codebook now covers the data.
    let mut usage = CodeUsage::new(1, 16);
    usage
        .add_codes(&b.forward(&x, false).unwrap().codes)
        .unwrap();
    assert!(usage.dead_count()[0] < 4, "{:?}", usage.counts(0));
}

#[test]
fn semhash_shapes_codes_and_determinism() {
    seed_all(14);
    let vs = VarStore::new(Device::Cpu);
    let config = BottleneckConfig {
        filter_size: Some(32),
        ..cfg(BottleneckKind::Semhash, 6, 1)
    };
    let b = Bottleneck::new(&vs.root(), 16, &config).unwrap();
    let mut names: Vec<String> = vs.variables().into_keys().collect();
    names.sort();
    let layers = ["vcc", "vch1a", "vch1b", "vch_final_linear"];
    let expected: Vec<String> = layers
        .iter()
        .flat_map(|l| [format!("{l}.bias"), format!("{l}.weight")])
        .collect();
    assert_eq!(names, expected);
    assert_eq!(vs.variables()["vch1a.weight"].size(), vec![32, 6]);
    let x = randn(&[4, 5, 16]) * 3.0;
    let a = b.forward(&x, false).unwrap();
    let again = b.forward(&x, false).unwrap();
    assert_eq!(a.quantized.size(), vec![4, 5, 16]);
    assert_eq!(a.codes.size(), vec![4, 5, 1]);
    assert!(a.quantized.equal(&again.quantized) && a.codes.equal(&again.codes));
    // The code is the integer of the hard bits σ′(vcc(x)) > 0.5, lower-endian.
    let logits =
        x.matmul(&vs.variables()["vcc.weight"].transpose(0, 1)) + &vs.variables()["vcc.bias"];
    let bits = (logits.sigmoid() * 1.2 - 0.1)
        .clamp(0.0, 1.0)
        .gt(0.5)
        .to_kind(Kind::Int64);
    let powers = Tensor::from_slice(&[1i64, 2, 4, 8, 16, 32]);
    let ints = (bits * powers).sum_dim_intlist(-1, true, Kind::Int64);
    assert!(a.codes.equal(&ints));
    let max = i64::try_from(a.codes.max()).unwrap();
    assert!((0..64).contains(&max));
    // In evaluation the output is the embedding of the hard bits.
    assert!(b
        .embed_codes(&a.codes)
        .unwrap()
        .allclose(&a.quantized, 1e-5, 1e-6, false));
    // Training adds noise and mixes: it differs, and gradients reach vcc.
    let xg = x.set_requires_grad(true);
    let t = b.forward(&xg, true).unwrap();
    assert!(!t.quantized.equal(&a.quantized));
    t.quantized.sum(Kind::Float).backward();
    assert!(f64::try_from(xg.grad().abs().sum(Kind::Float)).unwrap() > 0.0);
    assert!(f64::try_from(t.commitment_loss).unwrap() == 0.0);
    assert!(b
        .embed_codes(&Tensor::from_slice(&[64i64]).view([1, 1]))
        .is_err());
}

#[test]
fn half_precision_inputs_keep_fp32_statistics() {
    seed_all(15);
    let vs = VarStore::new(Device::Cpu);
    let b = Bottleneck::new(&vs.root(), 8, &cfg(BottleneckKind::Em, 3, 2)).unwrap();
    let x = randn(&[16, 8]);
    let out16 = b.forward(&x.to_kind(Kind::Half), true).unwrap();
    assert_eq!(out16.quantized.kind(), Kind::Half);
    assert_eq!(out16.soft_targets.unwrap().kind(), Kind::Float);
    assert_eq!(out16.commitment_loss.kind(), Kind::Float);
    for (name, t) in vs.variables() {
        assert_eq!(t.kind(), Kind::Float, "{name}");
    }
    let out = b.forward(&x.to_kind(Kind::BFloat16), false).unwrap();
    assert_eq!(out.codes.size(), vec![16, 2]);
}

#[test]
fn bad_shapes_and_codes_are_typed_errors() {
    let vs = VarStore::new(Device::Cpu);
    let b = Bottleneck::new(&vs.root(), 8, &cfg(BottleneckKind::Vq, 3, 2)).unwrap();
    assert!(matches!(
        b.forward(&randn(&[4, 7]), true),
        Err(BottleneckError::InputShape { expected: 8, .. })
    ));
    let codes = Tensor::from_slice(&[1i64, 8]).view([1, 2]);
    assert!(matches!(
        b.embed_codes(&codes),
        Err(BottleneckError::CodeOutOfRange { code: 8, .. })
    ));
    assert!(matches!(
        b.embed_codes(&Tensor::from_slice(&[1i64]).view([1, 1])),
        Err(BottleneckError::CodeShape { .. })
    ));
    let bad = BottleneckConfig {
        slices: 3,
        ..Default::default()
    };
    assert!(matches!(
        Bottleneck::new(&(vs.root() / "x"), 8, &bad),
        Err(BottleneckError::Config(_))
    ));
}

#[test]
fn config_files_load_with_strict_keys_through_emvq_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bottleneck.toml");
    std::fs::write(&path, "kind = \"em\"\nbits = 10\nn_c = 2\nsamples = 20\n").unwrap();
    let loaded: BottleneckConfig = emvq_tensor::load_toml(&path).unwrap();
    assert_eq!(
        (loaded.kind, loaded.bits, loaded.slices, loaded.samples),
        (BottleneckKind::Em, 10, 2, 20)
    );
    assert_eq!(loaded.beta, 0.25);
    std::fs::write(&path, "kind = \"em\"\ntemprature = 2.0\n").unwrap();
    let err = emvq_tensor::load_toml::<BottleneckConfig>(&path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("temprature") && err.contains("bottleneck.toml") && err.contains("line 2"),
        "{err}"
    );
}

#[test]
fn codes_dead_over_an_evaluation_set_are_reseeded_and_then_used() {
    seed_all(16);
    let vs = VarStore::new(Device::Cpu);
    let b = Bottleneck::new(&vs.root(), 4, &cfg(BottleneckKind::Vq, 4, 2)).unwrap();
    let batches: Vec<Tensor> = (0..3).map(|_| randn(&[64, 4]) * 3.0).collect();
    let usage_of = |b: &Bottleneck| {
        let mut usage = CodeUsage::new(2, 16);
        for x in &batches {
            usage
                .add_codes(&b.forward(x, false).unwrap().codes)
                .unwrap();
        }
        usage
    };
    let before = usage_of(&b);
    let dead = before.dead_mask(Device::Cpu).unwrap();
    let n_dead: usize = before.dead_count().iter().sum();
    assert!(n_dead > 0, "the small random codebook leaves codes unused");
    let reseeded = b.reseed_codes(&batches[0], &dead).unwrap();
    assert_eq!(reseeded as usize, n_dead);
    let after = usage_of(&b);
    let still_dead: usize = after.dead_count().iter().sum();
    assert!(still_dead < n_dead, "{still_dead} of {n_dead} still dead");
    assert!(after.perplexity()[0] > before.perplexity()[0]);
    let wrong = Tensor::zeros([2, 15], (Kind::Bool, Device::Cpu));
    assert!(b.reseed_codes(&batches[0], &wrong).is_err());
}

#[test]
fn semhash_training_mixes_hard_and_relaxed_bits_per_vector() {
    // Same weights (same seed), no noise: discrete_mix = 1 gives the hard
    // bits everywhere, 0 the relaxed ones; 0.5 must pick one of the two for
    // each vector, the hard one for about half of them.
    let make = |mix: f64| {
        seed_all(17);
        let vs = VarStore::new(Device::Cpu);
        let config = BottleneckConfig {
            noise_dev: 0.0,
            discrete_mix: mix,
            ..cfg(BottleneckKind::Semhash, 8, 1)
        };
        let b = Bottleneck::new(&vs.root(), 16, &config).unwrap();
        (vs, b)
    };
    // Other tests draw from the same generator meanwhile, so the seed alone
    // does not make the weights equal: copy them.
    let (vs_hard, hard) = make(1.0);
    let (mut vs_relaxed, relaxed) = make(0.0);
    let (mut vs_mixed, mixed) = make(0.5);
    vs_relaxed.copy(&vs_hard).unwrap();
    vs_mixed.copy(&vs_hard).unwrap();
    seed_all(18);
    let n = 2000;
    let x = randn(&[n, 16]) * 0.5;
    let h = hard.forward(&x, true).unwrap().quantized;
    assert!(h.equal(&hard.forward(&x, false).unwrap().quantized));
    let r = relaxed.forward(&x, true).unwrap().quantized;
    let m = mixed.forward(&x, true).unwrap().quantized;
    let rows_equal = |a: &Tensor, b: &Tensor| a.eq_tensor(b).all_dims(-1, false);
    let is_hard = rows_equal(&m, &h);
    let is_relaxed = rows_equal(&m, &r);
    assert!(bool::try_from(is_hard.logical_or(&is_relaxed).all()).unwrap());
    assert!(
        !bool::try_from(rows_equal(&h, &r).any()).unwrap(),
        "unsaturated inputs"
    );
    // Binomial(2000, ½): standard error 0.0112; 5 standard errors.
    let fraction = f64::try_from(is_hard.to_kind(Kind::Float).mean(Kind::Float)).unwrap();
    assert!(
        (fraction - 0.5).abs() < 5.0 * (0.25 / n as f64).sqrt(),
        "{fraction}"
    );
}
