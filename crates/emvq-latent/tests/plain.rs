//! The plain NAT baseline (Gu et al. 2018 as in Roy et al. 2018, arXiv
//! 1805.11063): parameter names shared with the teacher, padding invariance,
//! overfitting a toy corpus with predicted lengths, noisy parallel decoding.

use emvq_latent::{LengthConfig, LengthRule, NatDecode, NatModel, PlainNat, PlainNatConfig};
use emvq_transformer::{Activation, Seq2Seq, TransformerConfig};
use tch::{nn, nn::OptimizerConfig, Device, Tensor};

const PAD: i64 = 0;
const EOS: i64 = 2;

fn teacher_config(tie_embeddings: bool) -> TransformerConfig {
    TransformerConfig {
        vocab_size: 24,
        d_model: 32,
        heads: 4,
        d_ff: 64,
        encoder_layers: 2,
        decoder_layers: 2,
        dropout: 0.0,
        attention_dropout: 0.0,
        relu_dropout: 0.0,
        prenorm: true,
        tie_embeddings,
        max_positions: 32,
        layer_norm_eps: 1e-6,
        activation: Activation::Relu,
        pad_id: PAD,
        bos_id: 1,
        eos_id: EOS,
    }
}

fn nat_config() -> PlainNatConfig {
    PlainNatConfig {
        length: LengthConfig {
            rule: LengthRule::Predicted,
            ratio_a: 1.0,
            ratio_b: 0.0,
            max_offset: 4,
        },
        length_loss_weight: 1.0,
        ..PlainNatConfig::from_teacher(&teacher_config(true))
    }
}

/// Rows of token ids, each ending in EOS, right-padded → `[rows, width]`.
fn padded(rows: &[Vec<i64>]) -> Tensor {
    let width = rows.iter().map(Vec::len).max().unwrap();
    let flat: Vec<i64> = rows
        .iter()
        .flat_map(|r| {
            r.iter()
                .copied()
                .chain(std::iter::repeat_n(PAD, width - r.len()))
        })
        .collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, width as i64])
}

/// 20 toy pairs from a fixed LCG: sources of 3–7 content tokens in 4..14;
/// the target maps each token `t` to `t + 9` and drops the last content
/// token when the first one is even, else repeats it — so the length offset
/// (−1 or +1) depends on the source content.
fn toy_corpus() -> Vec<(Vec<i64>, Vec<i64>)> {
    let mut state = 12345u64;
    let mut next = |m: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % m
    };
    (0..20)
        .map(|_| {
            let n = 3 + next(5) as usize;
            let src: Vec<i64> = (0..n).map(|_| 4 + next(10) as i64).collect();
            let mut tgt: Vec<i64> = src.iter().map(|t| t + 9).collect();
            if src[0] % 2 == 0 {
                tgt.pop();
            } else {
                tgt.push(*tgt.last().unwrap());
            }
            let eos = |mut v: Vec<i64>| {
                v.push(EOS);
                v
            };
            (eos(src), eos(tgt))
        })
        .collect()
}

#[test]
fn parameter_names_and_shapes_match_the_teacher() {
    for tie in [true, false] {
        let cfg = PlainNatConfig {
            tie_embeddings: tie,
            ..nat_config()
        };
        let nat_vs = nn::VarStore::new(Device::Cpu);
        let _nat = PlainNat::new(nat_vs.root(), &cfg).unwrap();
        let teacher_vs = nn::VarStore::new(Device::Cpu);
        let _teacher = Seq2Seq::new(teacher_vs.root(), &teacher_config(tie)).unwrap();
        let teacher = teacher_vs.variables();
        let mut shared = 0;
        for (name, t) in nat_vs.variables() {
            if name.starts_with("length_predictor.") {
                continue;
            }
            let Some(u) = teacher.get(&name) else {
                panic!("tie {tie}: {name} is not a teacher parameter");
            };
            assert_eq!(t.size(), u.size(), "{name}");
            shared += 1;
        }
        // Every teacher tensor has a NAT counterpart except the target
        // embedding table (untied), which the uniform copy never uses.
        let missing: Vec<_> = teacher
            .keys()
            .filter(|k| !nat_vs.variables().contains_key(*k))
            .cloned()
            .collect();
        let expected: Vec<String> = if tie {
            vec![]
        } else {
            vec!["decoder.embed_tokens.weight".into()]
        };
        assert_eq!(missing, expected, "tie {tie}");
        assert!(shared > 20);
        assert!(nat_vs.variables().contains_key("length_predictor.weight"));
    }
}

#[test]
fn config_round_trips_and_is_validated() {
    let cfg = nat_config();
    let text = toml::to_string(&cfg).unwrap();
    assert_eq!(toml::from_str::<PlainNatConfig>(&text).unwrap(), cfg);
    assert!(toml::from_str::<PlainNatConfig>(&format!("{text}\nlabel_smothing = 0.1\n")).is_err());
    let bad = PlainNatConfig {
        label_smoothing: 1.0,
        ..nat_config()
    };
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("label_smoothing"));
    let bad = PlainNatConfig {
        length_loss_weight: -1.0,
        ..nat_config()
    };
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("length_loss_weight"));
    let bad = PlainNatConfig {
        heads: 5,
        ..nat_config()
    };
    assert!(bad.validate().is_err());
    assert_eq!(
        PlainNatConfig::from_teacher(&teacher_config(true))
            .length
            .rule,
        LengthRule::Predicted
    );
}

#[test]
fn source_padding_does_not_change_translations() {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = PlainNatConfig {
        length: LengthConfig {
            rule: LengthRule::T2t,
            ..LengthConfig::default()
        },
        ..nat_config()
    };
    let nat = PlainNat::new(vs.root(), &cfg).unwrap();
    let short = Tensor::from_slice2(&[[5i64, 6, 7, 2]]);
    let long = Tensor::from_slice2(&[[5i64, 6, 7, 2, 0, 0, 0], [8, 9, 10, 11, 12, 13, 2]]);
    let settings = NatDecode::default();
    let a = nat.translate(&short, &settings).unwrap();
    let b = nat.translate(&long, &settings).unwrap();
    assert_eq!(a[0], b[0]);
    assert_eq!(b.len(), 2);
    // t2t: 2·|x| positions, so at most 8 and 14 tokens.
    assert!(b[0].len() <= 8 && b[1].len() <= 14);
}

#[test]
fn overfits_a_toy_corpus_and_decodes_it_with_predicted_lengths() {
    tch::set_num_threads(1); // small ops: spinning worker threads only slow them down
    tch::manual_seed(7);
    let vs = nn::VarStore::new(Device::Cpu);
    let nat = PlainNat::new(vs.root(), &nat_config()).unwrap();
    let corpus = toy_corpus();
    let src = padded(&corpus.iter().map(|p| p.0.clone()).collect::<Vec<_>>());
    let tgt = padded(&corpus.iter().map(|p| p.1.clone()).collect::<Vec<_>>());
    let mut opt = nn::Adam::default().build(&vs, 3e-3).unwrap();
    let first = nat.loss(&src, &tgt, 0, true).unwrap();
    assert_eq!(
        first.tokens,
        corpus.iter().map(|p| p.1.len()).sum::<usize>() as f64
    );
    let first = first.total.double_value(&[]);
    for step in 0..150 {
        let loss = nat.loss(&src, &tgt, step, true).unwrap();
        opt.backward_step(&loss.total);
    }
    let last = nat.loss(&src, &tgt, 150, false).unwrap();
    let metric = |name| last.metrics.iter().find(|m| m.0 == name).unwrap().1;
    assert!(
        last.total.double_value(&[]) < 0.05 * first,
        "{first} → {:?}",
        last.metrics
    );
    assert!(metric("length_ce") < 0.2, "{:?}", last.metrics);

    let settings = NatDecode::default();
    let hyps = nat.translate(&src, &settings).unwrap();
    let exact = hyps
        .iter()
        .zip(&corpus)
        .filter(|(h, (_, t))| h[..] == t[..t.len() - 1])
        .count();
    assert!(exact >= 16, "{exact}/20 exact: {hyps:?}");

    // Noisy parallel decoding: n = 1 is the translation; n lengths give n
    // candidates, the first at the best length.
    for (i, (s, _)) in corpus.iter().enumerate().take(5) {
        let one = Tensor::from_slice(s).view([1, -1]);
        let single = nat.candidates(&one, 1, &settings).unwrap();
        assert_eq!(single, vec![hyps[i].clone()]);
        let many = nat.candidates(&one, 6, &settings).unwrap();
        assert_eq!(many.len(), 6);
        assert_eq!(many[0], hyps[i]);
        // Each candidate equals decoding alone at its length: padding the
        // shorter rows of the batch changes nothing.
        let lengths = nat.predict_lengths(&one, 6).unwrap();
        for (c, &len) in many.iter().zip(&lengths[0]) {
            assert!(c.len() <= len as usize);
            assert_eq!(
                nat.decode_lengths(&one, &[vec![len]]).unwrap(),
                vec![c.clone()]
            );
        }
    }
    assert!(nat.candidates(&src, 2, &settings).is_err());

    // Decoding at the gold lengths (batched, several lengths per row).
    let gold: Vec<Vec<i64>> = corpus
        .iter()
        .map(|(_, t)| vec![t.len() as i64, 3])
        .collect();
    let at_gold = nat.decode_lengths(&src, &gold).unwrap();
    assert_eq!(at_gold.len(), 40);
    let exact = (0..20)
        .filter(|&i| at_gold[2 * i][..] == corpus[i].1[..corpus[i].1.len() - 1])
        .count();
    assert!(exact >= 18, "{exact}/20 exact at the gold length");
    assert!(at_gold.iter().skip(1).step_by(2).all(|h| h.len() <= 3));
    assert!(nat.decode_lengths(&src, &gold[..3]).is_err());
}
