//! The latent-Transformer NAT (Roy et al. 2018, arXiv 1805.11063) on tiny
//! models: length bookkeeping of compression, overfitting through the
//! compressor/decompressor, the inference step counts, the predictor's cache,
//! teacher initialisation.

use std::collections::BTreeSet;

use emvq_bottleneck::{BottleneckConfig, BottleneckKind};
use emvq_latent::compress::{Compressor, Decompressor};
use emvq_latent::{
    init_from_teacher, LatentNat, LengthConfig, LengthRule, NatConfig, NatDecode, NatModel,
    ScheduleConfig, PREDICTOR_FROM_TEACHER_DECODER,
};
use emvq_tensor::Checkpoint;
use emvq_transformer::{Activation, Adam, AdamConfig, Seq2Seq};
use tch::{nn::VarStore, Device, Kind, Tensor};

const PAD: i64 = 0;
const EOS: i64 = 2;
const VOCAB: i64 = 24;

fn tiny(rule: LengthRule, k: i64) -> NatConfig {
    NatConfig {
        vocab_size: VOCAB,
        d_model: 32,
        heads: 4,
        d_ff: 64,
        encoder_layers: 1,
        decoder_layers: 2,
        predictor_layers: 1,
        dropout: 0.0,
        attention_dropout: 0.0,
        relu_dropout: 0.0,
        prenorm: true,
        tie_embeddings: true,
        max_positions: 64,
        layer_norm_eps: 1e-6,
        activation: Activation::Relu,
        pad_id: PAD,
        bos_id: 1,
        eos_id: EOS,
        compress_steps: k,
        residual_blocks: 1,
        decompress_blocks: 1,
        source_copy: false,
        bypass_bottleneck: false,
        ctc_upsample: 0,
        bottleneck: BottleneckConfig {
            kind: BottleneckKind::Vq,
            bits: 4,
            ..Default::default()
        },
        length: LengthConfig {
            rule,
            ratio_a: 1.0,
            ratio_b: 0.0,
            max_offset: 4,
        },
        schedule: ScheduleConfig {
            mix_gold: false,
            mix_linear_steps: 1,
            mix_exp_steps: 1,
            latent_loss_start: 0,
            latent_loss_weight: 1.0,
            label_smoothing: 0.0,
            glancing_ratio: 0.0,
            predicted_latents: 0.0,
        },
    }
}

/// Rows of ids (each gets EOS) → `[batch, max_len + 1]`, padded.
fn batch(rows: &[Vec<i64>]) -> Tensor {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0) + 1;
    let flat: Vec<i64> = rows
        .iter()
        .flat_map(|r| {
            let mut r = r.clone();
            r.push(EOS);
            r.resize(width, PAD);
            r
        })
        .collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, width as i64])
}

#[test]
fn compression_round_trip_restores_every_length_under_the_padding_rule() {
    tch::manual_seed(0);
    for k in [1, 2, 3] {
        for rule in [LengthRule::Ratio, LengthRule::T2t] {
            let cfg = tiny(rule, k);
            let vs = VarStore::new(Device::Cpu);
            let c = Compressor::new(vs.root() / "c", 32, k, 1, 0.0, 1e-6);
            let d = Decompressor::new(vs.root() / "d", 32, k, true, 0.0, 1e-6);
            let lean = Decompressor::new(vs.root() / "lean", 32, k, false, 0.0, 1e-6);
            for len in 1..=40i64 {
                let src_len = (len + 1) / 2;
                let n = cfg.train_length(len, src_len);
                assert_eq!(n % (1 << k), 0);
                assert!(n >= len);
                match rule {
                    LengthRule::T2t => {
                        assert!(n >= 2 * src_len && n < len.max(2 * src_len) + (1 << k))
                    }
                    _ => assert!(n < len + (1 << k)),
                }
                let x = Tensor::randn([2, n, 32], (Kind::Float, Device::Cpu));
                let z = c.forward(&x, false).unwrap();
                assert_eq!(z.size(), vec![2, n >> k, 32]);
                assert_eq!(
                    d.forward(&z, None, false).unwrap().size(),
                    vec![2, n, 32],
                    "k {k} len {len}"
                );
                assert_eq!(
                    lean.forward(&z, None, false).unwrap().size(),
                    vec![2, n, 32],
                    "k {k} len {len}"
                );
            }
            // With lengths, a short row decompresses as it would alone.
            let z = Tensor::randn([2, 5, 32], (Kind::Float, Device::Cpu));
            let lens = Tensor::from_slice(&[3i64, 5]);
            let both = d.forward(&z, Some(&lens), false).unwrap();
            let alone = d
                .forward(&z.narrow(0, 0, 1).narrow(1, 0, 3), None, false)
                .unwrap();
            let diff = (both.narrow(0, 0, 1).narrow(1, 0, 3 << k) - alone)
                .abs()
                .max()
                .double_value(&[]);
            assert!(diff < 1e-5, "k {k}: {diff}");
            // Lengths that are not a multiple of 2^k are rejected.
            if k > 0 {
                let odd = Tensor::randn([1, (1 << k) + 1, 32], (Kind::Float, Device::Cpu));
                assert!(c.forward(&odd, false).is_err());
            }
        }
    }
}

/// 20 (source, target) pairs: target = source reversed, shifted by 3.
fn pairs() -> (Tensor, Tensor, Vec<Vec<i64>>) {
    tch::manual_seed(7);
    let mut srcs = Vec::new();
    let mut tgts = Vec::new();
    for i in 0..20i64 {
        let len = 3 + i % 6;
        let s: Vec<i64> = (0..len)
            .map(|j| 3 + (i * 7 + j * 5 + j * j) % (VOCAB - 6))
            .collect();
        let t: Vec<i64> = s.iter().rev().map(|&x| x + 3).collect();
        srcs.push(s);
        tgts.push(t);
    }
    (batch(&srcs), batch(&tgts), tgts)
}

/// `tiny(Ratio, 1)` with a 2^6-code VQ bottleneck whose EMA moves fast
/// enough for a few hundred steps.
fn tiny_vq() -> NatConfig {
    let mut cfg = tiny(LengthRule::Ratio, 1);
    cfg.bottleneck.bits = 6;
    cfg.bottleneck.decay = 0.9;
    cfg
}

/// How many rows of `got` equal `want`.
fn exact(got: &[Vec<i64>], want: &[Vec<i64>]) -> usize {
    got.iter().zip(want).filter(|(a, b)| a == b).count()
}

/// A named metric of a loss, if it was reported.
fn metric(out: &emvq_latent::NatLoss, name: &str) -> Option<f64> {
    out.metrics
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
}

#[test]
fn tiny_nat_with_the_bottleneck_bypassed_overfits_twenty_pairs() {
    tch::manual_seed(1);
    let mut cfg = tiny(LengthRule::Ratio, 1);
    cfg.bypass_bottleneck = true;
    let vs = VarStore::new(Device::Cpu);
    let model = LatentNat::new(vs.root(), &cfg).unwrap();
    let mut opt = Adam::new(&vs, &AdamConfig::default()).unwrap();
    let (src, tgt, want) = pairs();
    let first = model.loss(&src, &tgt, 0, true).unwrap();
    let first_loss = first.total.double_value(&[]);
    assert!(first.tokens > 100.0);
    let mut last = f64::NAN;
    for step in 1..=300 {
        opt.zero_grad();
        let out = model.loss(&src, &tgt, step, true).unwrap();
        out.total.backward();
        opt.step(3e-3).unwrap();
        last = out.total.double_value(&[]);
        if step > 100 && last < 0.01 {
            break;
        }
    }
    assert!(last < 0.05 * first_loss, "loss {first_loss} → {last}");
    assert_eq!(model.reconstruct(&src, &tgt).unwrap(), want);
    // A bypassed model has no codes to predict.
    assert!(model.translate(&src, &NatDecode::default()).is_err());
}

#[test]
fn tiny_nat_with_a_vq_bottleneck_learns_to_translate_twenty_pairs() {
    tch::manual_seed(3);
    // Length = |x| (ratio 1, 0): source and target have equal lengths here.
    let cfg = tiny_vq();
    let vs = VarStore::new(Device::Cpu);
    let model = LatentNat::new(vs.root(), &cfg).unwrap();
    let mut opt = Adam::new(&vs, &AdamConfig::default()).unwrap();
    let (src, tgt, want) = pairs();
    let mut parts = Vec::new();
    for step in 1..=600 {
        opt.zero_grad();
        let out = model.loss(&src, &tgt, step, true).unwrap();
        out.total.backward();
        opt.step(3e-3).unwrap();
        parts = out.metrics.clone();
        if step % 50 == 0 && model.translate(&src, &NatDecode::default()).unwrap() == want {
            break;
        }
    }
    let got = model.translate(&src, &NatDecode::default()).unwrap();
    let correct = exact(&got, &want);
    assert!(
        correct >= 18,
        "{correct}/20 exact; last loss parts {parts:?}"
    );
    let names: BTreeSet<&str> = parts.iter().map(|(n, _)| *n).collect();
    for n in [
        "token_nll",
        "commitment",
        "latent_ce",
        "length_ce",
        "latent_mix",
    ] {
        assert!(names.contains(n), "{n} missing from {names:?}");
    }
    // Decoding the expected code vectors of a confident predictor agrees.
    let soft = model
        .translate(
            &src,
            &NatDecode {
                soft_latents: true,
                ..Default::default()
            },
        )
        .unwrap();
    let soft_correct = exact(&soft, &want);
    assert!(soft_correct >= 18, "soft latents {soft_correct}/20");
    // A beam over latents scores at least as well; it decodes the same here.
    let beam = model
        .translate(
            &src,
            &NatDecode {
                latent_beam: 3,
                ..Default::default()
            },
        )
        .unwrap();
    let beam_correct = exact(&beam, &want);
    assert!(beam_correct >= 18, "beam {beam_correct}/20");
    // The output projection in bfloat16 keeps the translations.
    let mut model = model;
    model.set_bf16_output(true).unwrap();
    let bf16 = model.translate(&src, &NatDecode::default()).unwrap();
    let bf16_correct = exact(&bf16, &want);
    assert!(bf16_correct >= 18, "bf16 output {bf16_correct}/20");
}

#[test]
fn bf16_output_projects_with_a_copy_of_the_weights_taken_when_set() {
    tch::manual_seed(4);
    let mut cfg = tiny_vq();
    cfg.tie_embeddings = false; // the output projection is its own matrix
    let vs = VarStore::new(Device::Cpu);
    let mut model = LatentNat::new(vs.root(), &cfg).unwrap();
    let (src, _, _) = pairs();
    let one_pass = |m: &LatentNat| m.translate(&src, &NatDecode::default()).unwrap();
    model.set_bf16_output(true).unwrap();
    let bf16_before = one_pass(&model);
    // Zeroed float32 output weights make every logit 0 (the argmax: id 0
    // everywhere), but the bf16 copy taken before still decodes as it did,
    tch::no_grad(|| {
        let mut zeroed = 0;
        for (name, mut var) in vs.variables() {
            if name == "output_projection.weight" {
                let _ = var.zero_();
                zeroed += 1;
            }
        }
        assert_eq!(zeroed, 1);
    });
    assert_eq!(one_pass(&model), bf16_before);
    // until it is switched off or taken again.
    model.set_bf16_output(false).unwrap();
    let float_zeroed = one_pass(&model);
    assert!(float_zeroed.iter().flatten().all(|&id| id == 0));
    assert_ne!(float_zeroed, bf16_before);
    model.set_bf16_output(true).unwrap();
    assert_eq!(one_pass(&model), float_zeroed);
}

#[test]
fn inference_makes_ceil_len_over_block_latent_steps_and_one_decoder_pass() {
    tch::manual_seed(2);
    for (k, rule) in [
        (2, LengthRule::Ratio),
        (3, LengthRule::Ratio),
        (2, LengthRule::T2t),
    ] {
        let cfg = tiny(rule, k);
        let vs = VarStore::new(Device::Cpu);
        let model = LatentNat::new(vs.root(), &cfg).unwrap();
        for src_len in 1..=12i64 {
            let row: Vec<i64> = (0..src_len - 1).map(|j| 3 + j % 10).collect();
            let src = batch(&[row]); // src_len tokens with EOS
            let len = if rule == LengthRule::T2t {
                2 * src_len
            } else {
                src_len
            };
            for (beam, refine) in [(1, 0), (2, 0), (1, 2)] {
                let settings = NatDecode {
                    latent_beam: beam,
                    refine_steps: refine,
                    ..Default::default()
                };
                let (out, stats) = model.translate_with_stats(&src, &settings).unwrap();
                assert_eq!(stats.lengths, vec![len]);
                assert_eq!(
                    stats.latent_steps,
                    (len + (1 << k) - 1) >> k,
                    "k {k} len {len}"
                );
                assert_eq!(stats.decoder_passes, 1 + refine as i64);
                assert!(out[0].len() as i64 <= cfg.round_up(len));
                assert!(!out[0].contains(&EOS));
            }
        }
        // A batch takes as many steps as its longest row, in one pass.
        let src = batch(&[vec![3; 2], vec![4; 9], vec![5; 5]]);
        let (out, stats) = model
            .translate_with_stats(&src, &NatDecode::default())
            .unwrap();
        let len = if rule == LengthRule::T2t { 20 } else { 10 };
        assert_eq!(stats.latent_steps, (len + (1 << k) - 1) >> k);
        assert_eq!(stats.decoder_passes, 1);
        assert_eq!(out.len(), 3);
        // Batched translation equals row-by-row translation.
        for (i, row) in [vec![3; 2], vec![4; 9], vec![5; 5]].iter().enumerate() {
            assert_eq!(
                model
                    .translate(&batch(std::slice::from_ref(row)), &NatDecode::default())
                    .unwrap()[0],
                out[i]
            );
        }
    }
}

#[test]
fn cached_latent_prediction_equals_the_full_forward() {
    tch::manual_seed(4);
    let mut cfg = tiny(LengthRule::Ratio, 2);
    cfg.predictor_layers = 2;
    cfg.bottleneck.slices = 2;
    let vs = VarStore::new(Device::Cpu);
    let model = LatentNat::new(vs.root(), &cfg).unwrap();
    let src = batch(&[vec![3, 4, 5, 6], vec![7, 8]]);
    let enc = model.encode(&src, false).unwrap();
    let codes = Tensor::randint(16, [2, 5, 2], (Kind::Int64, Device::Cpu));
    let emb = model.bottleneck().embed_codes(&codes).unwrap(); // [2, 5, 32]
    let p = model.predictor();
    let full = p
        .forward(&emb, &enc.memory, &enc.memory_mask().unwrap(), false)
        .unwrap(); // [2, 5, 2, 16]
    assert_eq!(full.size(), vec![2, 5, 2, 16]);
    let mut cache = p.start(&enc.memory, enc.memory_mask().unwrap()).unwrap();
    for j in 0..5 {
        let prev = (j > 0).then(|| emb.narrow(1, j - 1, 1));
        let step = p.step(prev.as_ref(), &mut cache, 2).unwrap(); // [2, 2, 16]
        let diff = (step - full.select(1, j)).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "step {j}: {diff}");
    }
    // The causal mask: changing later codes leaves earlier logits alone.
    let later = emb.copy();
    let _ = later.narrow(1, 3, 2).fill_(1.0);
    let again = p
        .forward(&later, &enc.memory, &enc.memory_mask().unwrap(), false)
        .unwrap();
    let diff = (again.narrow(1, 0, 4) - full.narrow(1, 0, 4))
        .abs()
        .max()
        .double_value(&[]);
    assert!(diff < 1e-5);
}

#[test]
fn candidates_are_seeded_samples_of_one_source() {
    tch::manual_seed(5);
    let cfg = tiny(LengthRule::Ratio, 2);
    let vs = VarStore::new(Device::Cpu);
    let model = LatentNat::new(vs.root(), &cfg).unwrap();
    let src = batch(&[vec![3, 4, 5, 6, 7, 8]]);
    let settings = NatDecode {
        latent_beam: 1,
        temperature: 2.0,
        seed: 11,
        soft_latents: false,
        collapse_repeats: false,
        refine_steps: 0,
    };
    let a = model.candidates(&src, 6, &settings).unwrap();
    let b = model.candidates(&src, 6, &settings).unwrap();
    assert_eq!(a.len(), 6);
    assert_eq!(a, b);
    assert!(a.iter().all(|c| c.len() <= 7));
    assert!(model
        .candidates(&batch(&[vec![3], vec![4]]), 2, &settings)
        .is_err());

    // Collapsing repeats changes nothing but the repeats, for candidates
    // and for translations. With every weight zero each position's logits
    // tie, so every output repeats one id (an untrained model's outputs
    // depend on the seed, and other tests share the generator).
    tch::no_grad(|| {
        for mut t in vs.trainable_variables() {
            let _ = t.zero_();
        }
    });
    let collapse = NatDecode {
        collapse_repeats: true,
        ..settings.clone()
    };
    let dedup = |mut rows: Vec<Vec<i64>>| {
        rows.iter_mut().for_each(Vec::dedup);
        rows
    };
    let raw_candidates = model.candidates(&src, 6, &settings).unwrap();
    let raw = model.translate(&src, &settings).unwrap();
    assert!(raw_candidates
        .iter()
        .chain(&raw)
        .all(|r| r.windows(2).any(|w| w[0] == w[1])));
    assert_eq!(
        model.candidates(&src, 6, &collapse).unwrap(),
        dedup(raw_candidates)
    );
    assert_eq!(model.translate(&src, &collapse).unwrap(), dedup(raw));
}

#[test]
fn teacher_initialisation_copies_exactly_the_matching_tensors() {
    tch::manual_seed(6);
    let cfg = tiny(LengthRule::Predicted, 2);
    let mut tcfg = cfg.transformer();
    tcfg.decoder_layers = 3; // layer 2 has no NAT counterpart
    tcfg.d_ff = 48; // feed-forwards differ in shape: not copied
    let teacher_vs = VarStore::new(Device::Cpu);
    let _teacher = Seq2Seq::new(teacher_vs.root(), &tcfg).unwrap();
    let teacher = Checkpoint::from_var_store(&teacher_vs);
    let vs = VarStore::new(Device::Cpu);
    let _nat = LatentNat::new(vs.root(), &cfg).unwrap();
    let before = Checkpoint::from_var_store(&vs);
    let copied = init_from_teacher(&vs, &teacher, &[]).unwrap();
    let nat_vars = vs.variables();
    let expected: Vec<String> = {
        let mut e: Vec<String> = nat_vars
            .iter()
            .filter(|(n, t)| {
                teacher
                    .tensors
                    .get(*n)
                    .is_some_and(|x| x.size() == t.size())
            })
            .map(|(n, _)| n.clone())
            .collect();
        e.sort();
        e
    };
    assert_eq!(copied, expected);
    assert!(copied.contains(&"embed_tokens.weight".to_string()));
    assert!(copied.contains(&"encoder.layers.0.self_attn.in_proj_weight".to_string()));
    assert!(copied.contains(&"decoder.layers.1.multihead_attn.in_proj_weight".to_string()));
    // Feed-forwards differ in width: only `linear2.bias` ([d_model]) matches.
    assert!(!copied
        .iter()
        .any(|n| n.contains("linear1") || n.ends_with("linear2.weight")));
    assert!(copied.contains(&"decoder.layers.0.linear2.bias".to_string()));
    for (name, t) in &nat_vars {
        let source = if copied.contains(name) {
            &teacher.tensors[name]
        } else {
            &before.tensors[name]
        };
        assert!(t.equal(source), "{name}");
    }
    assert!(nat_vars.keys().any(|n| n.starts_with("latent_predictor.")));
    assert!(nat_vars.keys().any(|n| n.starts_with("length_predictor.")));
    assert!(!copied
        .iter()
        .any(|n| n.starts_with("compress") || n.starts_with("latent_predictor")));
}

#[test]
fn the_latent_predictor_can_start_from_the_teachers_decoder() {
    tch::manual_seed(7);
    let mut cfg = tiny(LengthRule::Predicted, 2);
    cfg.predictor_layers = 2;
    let teacher_vs = VarStore::new(Device::Cpu);
    let _teacher = Seq2Seq::new(teacher_vs.root(), &cfg.transformer()).unwrap();
    let teacher = Checkpoint::from_var_store(&teacher_vs);
    let vs = VarStore::new(Device::Cpu);
    let _nat = LatentNat::new(vs.root(), &cfg).unwrap();
    let copied = init_from_teacher(&vs, &teacher, &PREDICTOR_FROM_TEACHER_DECODER).unwrap();
    let vars = vs.variables();
    let predictor: Vec<&String> = copied
        .iter()
        .filter(|n| n.starts_with("latent_predictor."))
        .collect();
    // Every layer tensor and the final norm, not the code head.
    let expected = vars
        .keys()
        .filter(|n| {
            n.starts_with("latent_predictor.layers.") || n.starts_with("latent_predictor.norm.")
        })
        .count();
    assert!(expected > 0);
    assert_eq!(predictor.len(), expected);
    for name in predictor {
        let source = name.replacen("latent_predictor.", "decoder.", 1);
        assert!(vars[name].equal(&teacher.tensors[&source]), "{name}");
    }
    assert!(!copied.iter().any(|n| n.contains("output_projection")));
    // The decoder itself is still filled under its own names.
    assert!(copied.contains(&"decoder.layers.1.self_attn.in_proj_weight".to_string()));
}

#[test]
fn source_copy_follows_each_rows_source_length_and_changes_the_output() {
    tch::manual_seed(4);
    let (src, _, _) = pairs();
    let mut cfg = tiny(LengthRule::Ratio, 2);
    cfg.source_copy = true;
    let vs = VarStore::new(Device::Cpu);
    let model = LatentNat::new(vs.root(), &cfg).unwrap();
    let batched = model.translate(&src, &NatDecode::default()).unwrap();
    // Each row alone (no source padding) decodes to the same tokens.
    for (i, want) in batched.iter().enumerate() {
        let row = src.narrow(0, i as i64, 1);
        let len = row.ne(PAD).sum(tch::Kind::Int64).int64_value(&[]);
        let alone = model
            .translate(&row.narrow(1, 0, len), &NatDecode::default())
            .unwrap();
        assert_eq!(&alone[0], want, "row {i}");
    }
    // The same weights without the copy decode differently.
    let mut plain_cfg = cfg.clone();
    plain_cfg.source_copy = false;
    let mut vs2 = VarStore::new(Device::Cpu);
    let without = LatentNat::new(vs2.root(), &plain_cfg).unwrap();
    vs2.copy(&vs).unwrap();
    assert_ne!(
        without.translate(&src, &NatDecode::default()).unwrap(),
        batched
    );
}

#[test]
fn the_loss_ignores_extra_padding_columns_of_the_targets() {
    tch::manual_seed(6);
    let (src, tgt, _) = pairs();
    let mut cfg = tiny(LengthRule::Predicted, 2);
    cfg.source_copy = true;
    let vs = VarStore::new(Device::Cpu);
    let model = LatentNat::new(vs.root(), &cfg).unwrap();
    // The decoder runs on the batch's own width, not on all 2^k·L
    // positions: two more pad columns (the same 12 positions, 3 latents)
    // leave every term of the loss as is.
    let (b, t) = tgt.size2().unwrap();
    assert_eq!(t, 9);
    let wider = Tensor::cat(
        &[&tgt, &Tensor::full([b, 2], PAD, (Kind::Int64, Device::Cpu))],
        1,
    );
    let loss = |t: &Tensor| model.loss(&src, t, 10, false).unwrap();
    let (narrow, wide) = (loss(&tgt), loss(&wider));
    assert_eq!(narrow.tokens, wide.tokens);
    for ((name, a), (_, b)) in narrow.metrics.iter().zip(&wide.metrics) {
        assert!((a - b).abs() < 1e-5, "{name}: {a} vs {b}");
    }
}

#[test]
fn a_ctc_decoder_glances_at_its_alignment_and_learns_twenty_pairs() {
    tch::manual_seed(6);
    let mut cfg = tiny(LengthRule::Ratio, 1);
    cfg.bypass_bottleneck = true;
    cfg.schedule.glancing_ratio = 0.5;
    cfg.ctc_upsample = 2;
    let vs = VarStore::new(Device::Cpu);
    let model = LatentNat::new(vs.root(), &cfg).unwrap();
    let (src, tgt, want) = pairs();
    let real = tgt.ne(PAD).sum(Kind::Float).double_value(&[]);

    // CTC counts every target token; the glance reveals labels of the best
    // alignment over twice as many positions, about half the wrong ones.
    let first = model.loss(&src, &tgt, 0, true).unwrap();
    assert_eq!(first.tokens, real);
    let share = metric(&first, "glanced").expect("a glanced share in training");
    assert!(
        share > 0.3 && share <= 0.5 + 0.5 * 20.0 / (2.0 * real),
        "{share}"
    );
    assert!(first.total.double_value(&[]).is_finite());

    let mut opt = Adam::new(&vs, &AdamConfig::default()).unwrap();
    for step in 1..=400 {
        opt.zero_grad();
        let out = model.loss(&src, &tgt, step, true).unwrap();
        out.total.backward();
        opt.step(3e-3).unwrap();
        if step % 50 == 0 && model.reconstruct(&src, &tgt).unwrap() == want {
            break;
        }
    }
    assert_eq!(model.reconstruct(&src, &tgt).unwrap(), want);

    // Refinement feeds tokens back by position: refused with CTC; a config
    // outside 2..=4, or with gold mixing, is refused at construction.
    let mut vq = tiny_vq();
    vq.ctc_upsample = 2;
    let nat = LatentNat::new(VarStore::new(Device::Cpu).root(), &vq).unwrap();
    let refine = NatDecode {
        refine_steps: 1,
        ..Default::default()
    };
    assert!(nat.translate(&src, &refine).is_err());
    assert_eq!(
        nat.translate(&src, &NatDecode::default()).unwrap().len(),
        20
    );
    for (r, mix_gold) in [(1, false), (5, false), (2, true)] {
        let mut bad = tiny_vq();
        bad.ctc_upsample = r;
        bad.schedule.mix_gold = mix_gold;
        assert!(
            bad.validate().is_err(),
            "ctc_upsample {r}, mix_gold {mix_gold}"
        );
    }
}

#[test]
fn glancing_feeds_gold_to_about_half_the_wrong_tokens_and_still_learns() {
    tch::manual_seed(5);
    let mut cfg = tiny(LengthRule::Ratio, 1);
    cfg.bypass_bottleneck = true;
    cfg.schedule.glancing_ratio = 0.5;
    let vs = VarStore::new(Device::Cpu);
    let model = LatentNat::new(vs.root(), &cfg).unwrap();
    let (src, tgt, want) = pairs();
    let real = tgt.ne(PAD).sum(Kind::Float).double_value(&[]);
    let glanced = |out: &emvq_latent::NatLoss| metric(out, "glanced");

    // Untrained, nearly every token is wrong: about half of them are
    // glanced (the ceiling adds at most half a token per row), and the loss
    // counts the others only.
    let first = model.loss(&src, &tgt, 0, true).unwrap();
    let share = glanced(&first).expect("a glanced share in training");
    assert!(share > 0.3 && share <= 0.5 + 0.5 * 20.0 / real, "{share}");
    assert!((first.tokens - (1.0 - share) * real).abs() < 0.5);
    // Evaluation never glances and counts every token.
    let eval = model.loss(&src, &tgt, 0, false).unwrap();
    assert!(glanced(&eval).is_none());
    assert_eq!(eval.tokens, real);

    let mut opt = Adam::new(&vs, &AdamConfig::default()).unwrap();
    let mut last_share = share;
    for step in 1..=400 {
        opt.zero_grad();
        let out = model.loss(&src, &tgt, step, true).unwrap();
        out.total.backward();
        opt.step(3e-3).unwrap();
        last_share = glanced(&out).unwrap();
        if step % 50 == 0 && model.reconstruct(&src, &tgt).unwrap() == want {
            break;
        }
    }
    // Fewer wrong tokens, fewer glances.
    assert!(last_share < 0.1, "glanced share {share} → {last_share}");
    assert_eq!(model.reconstruct(&src, &tgt).unwrap(), want);
}

#[test]
fn predicted_latents_replace_the_share_asked_once_the_latent_loss_is_on() {
    tch::manual_seed(6);
    let mut cfg = tiny_vq();
    cfg.schedule.latent_loss_start = 10;
    cfg.schedule.predicted_latents = 1.0;
    let vs = VarStore::new(Device::Cpu);
    let model = LatentNat::new(vs.root(), &cfg).unwrap();
    let (src, tgt, want) = pairs();
    let predicted = |out: &emvq_latent::NatLoss| metric(out, "predicted_latents");
    // Before the latent loss starts the predictor is untrained: no swap.
    assert!(predicted(&model.loss(&src, &tgt, 9, true).unwrap()).is_none());
    // Evaluation always decodes the target's own latents.
    assert!(predicted(&model.loss(&src, &tgt, 10, false).unwrap()).is_none());

    // Trained on its predictor's codes only, the decoder learns to read
    // them: greedy inference (which feeds exactly those) translates.
    let mut opt = Adam::new(&vs, &AdamConfig::default()).unwrap();
    for step in 10..=600 {
        opt.zero_grad();
        let out = model.loss(&src, &tgt, step, true).unwrap();
        assert_eq!(predicted(&out), Some(1.0));
        out.total.backward();
        opt.step(3e-3).unwrap();
        if step % 50 == 0 && model.translate(&src, &NatDecode::default()).unwrap() == want {
            break;
        }
    }
    let got = model.translate(&src, &NatDecode::default()).unwrap();
    let correct = exact(&got, &want);
    assert!(correct >= 18, "{correct}/20 exact");

    // A share of one half swaps about half of a large batch's rows.
    let mut half = cfg.clone();
    half.schedule.predicted_latents = 0.5;
    let vs = VarStore::new(Device::Cpu);
    let model = LatentNat::new(vs.root(), &half).unwrap();
    let many_src = src.repeat([20, 1]); // [400, len]
    let many_tgt = tgt.repeat([20, 1]);
    let share = predicted(&model.loss(&many_src, &many_tgt, 10, true).unwrap()).unwrap();
    assert!((share - 0.5).abs() < 0.1, "{share}");
}

#[test]
fn refinement_feeds_confident_tokens_back_and_keeps_a_glancing_models_translations() {
    tch::manual_seed(8);
    let mut cfg = tiny_vq();
    cfg.schedule.glancing_ratio = 0.5;
    let vs = VarStore::new(Device::Cpu);
    let model = LatentNat::new(vs.root(), &cfg).unwrap();
    let (src, tgt, want) = pairs();
    let refine = NatDecode {
        refine_steps: 2,
        ..Default::default()
    };
    // Untrained, the tokens fed back change what the decoder predicts.
    assert_ne!(
        model.translate(&src, &refine).unwrap(),
        model.translate(&src, &NatDecode::default()).unwrap()
    );

    // Trained with glances of gold tokens, the decoder reads tokens fed
    // back as such: refining its own right translations keeps them.
    let mut opt = Adam::new(&vs, &AdamConfig::default()).unwrap();
    for step in 1..=600 {
        opt.zero_grad();
        let out = model.loss(&src, &tgt, step, true).unwrap();
        out.total.backward();
        opt.step(3e-3).unwrap();
        if step % 10 == 0 && model.translate(&src, &NatDecode::default()).unwrap() == want {
            break;
        }
    }
    // Glances stop once the tiny model is right everywhere, so its token
    // pathway drifts from then on: training stops at the first perfect
    // check, and refinement may trade a few sentences (17-20 of 20 seen
    // across thread counts and CPU kernels; other tests move the shared
    // generator). Feeding back a constant token instead of the predictions
    // kept 11. The real-data gain is measured in the README.
    let one_pass = exact(
        &model.translate(&src, &NatDecode::default()).unwrap(),
        &want,
    );
    let refined = exact(&model.translate(&src, &refine).unwrap(), &want);
    assert!(one_pass >= 18, "one pass {one_pass}/20 exact");
    assert!(
        refined >= 15,
        "refined {refined}/20 exact (one pass {one_pass})"
    );
}
