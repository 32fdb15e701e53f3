//! Teacher rescoring (noisy parallel decoding, Gu et al. 2018, as used by
//! Roy et al. 2018, arXiv 1805.11063): batched teacher scores equal
//! independent per-candidate forwards; the best-scoring candidate wins.

use emvq_latent::rescore::best_index;
use emvq_latent::{
    rescore, rescore_by, teacher_scores, LengthConfig, LengthRule, NatDecode, NatLoss, NatModel,
    PlainNat, PlainNatConfig, Result, Score,
};
use emvq_transformer::{shift_right, Activation, Seq2Seq, TransformerConfig};
use tch::{nn, Device, Kind, Tensor};

fn teacher_config() -> TransformerConfig {
    TransformerConfig {
        vocab_size: 20,
        d_model: 32,
        heads: 4,
        d_ff: 64,
        encoder_layers: 2,
        decoder_layers: 2,
        dropout: 0.1,
        attention_dropout: 0.1,
        relu_dropout: 0.1,
        prenorm: true,
        tie_embeddings: true,
        max_positions: 64,
        layer_norm_eps: 1e-6,
        activation: Activation::Relu,
        pad_id: 0,
        bos_id: 1,
        eos_id: 2,
    }
}

fn teacher() -> (nn::VarStore, Seq2Seq) {
    tch::manual_seed(11);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Seq2Seq::new(vs.root(), &teacher_config()).unwrap();
    (vs, model)
}

/// `log p(y, EOS | x)` from a full forward of one candidate alone.
fn reference_score(teacher: &Seq2Seq, src: &Tensor, cand: &[i64]) -> f64 {
    let mut y = cand.to_vec();
    y.push(2);
    let tgt = Tensor::from_slice(&y).view([1, -1]);
    let logits = teacher
        .forward(src, &shift_right(&tgt, 1).unwrap(), false)
        .unwrap(); // [1, len, vocab]
    let lprobs = logits.log_softmax(-1, Kind::Double);
    y.iter()
        .enumerate()
        .map(|(i, &t)| lprobs.double_value(&[0, i as i64, t]))
        .sum()
}

fn candidates() -> Vec<Vec<i64>> {
    vec![
        vec![5, 6, 7],
        vec![],
        vec![8],
        vec![9, 10, 11, 12, 13, 14],
        vec![5, 6, 7],
    ]
}

#[test]
fn batched_scores_equal_independent_forwards() {
    let (_vs, teacher) = teacher();
    let src = Tensor::from_slice2(&[[4i64, 9, 12, 3, 2]]);
    let cands = candidates();
    let scores = teacher_scores(&teacher, &src, &cands).unwrap();
    assert_eq!(scores.len(), cands.len());
    for (c, s) in cands.iter().zip(&scores) {
        let r = reference_score(&teacher, &src, c);
        assert!((s - r).abs() < 1e-5, "{c:?}: {s} vs {r}");
        assert!(*s < 0.0);
    }
    assert_eq!(scores[0], scores[4]);
    assert!(teacher_scores(&teacher, &src, &[]).unwrap().is_empty());
    assert!(teacher_scores(&teacher, &Tensor::from_slice2(&[[4i64, 2], [5, 2]]), &cands).is_err());
}

/// A NAT stand-in with fixed candidates.
struct Fixed(Vec<Vec<i64>>);

impl NatModel for Fixed {
    fn loss(&self, _: &Tensor, _: &Tensor, _: i64, _: bool) -> Result<NatLoss> {
        unreachable!("rescoring never trains")
    }
    fn translate(&self, _: &Tensor, _: &NatDecode) -> Result<Vec<Vec<i64>>> {
        Ok(vec![self.0[0].clone()])
    }
    fn candidates(&self, _: &Tensor, n: usize, _: &NatDecode) -> Result<Vec<Vec<i64>>> {
        Ok(self.0.iter().take(n).cloned().collect())
    }
}

#[test]
fn rescoring_picks_the_candidate_the_teacher_scores_highest() {
    let (_vs, teacher) = teacher();
    let src = Tensor::from_slice2(&[[4i64, 9, 12, 3, 2]]);
    let cands = candidates();
    let scores = teacher_scores(&teacher, &src, &cands).unwrap();
    let model = Fixed(cands.clone());
    let settings = NatDecode::default();
    let best = rescore(&model, &teacher, &src, cands.len(), &settings).unwrap();
    assert_eq!(best, cands[best_index(&scores).unwrap()]);
    // Independently: no candidate scores higher than the one picked.
    let picked = reference_score(&teacher, &src, &best);
    for c in &cands {
        assert!(
            reference_score(&teacher, &src, c) <= picked + 1e-9,
            "{c:?} beats {best:?}"
        );
    }
    assert_ne!(
        best, cands[0],
        "choose a seed where the first candidate is not the best"
    );

    let per_token: Vec<f64> = scores
        .iter()
        .zip(&cands)
        .map(|(s, c)| s / (c.len() + 1) as f64)
        .collect();
    let best = rescore_by(
        &model,
        &teacher,
        &src,
        cands.len(),
        &settings,
        Score::PerToken,
    )
    .unwrap();
    assert_eq!(best, cands[best_index(&per_token).unwrap()]);
    // n = 1: nothing to choose.
    assert_eq!(
        rescore(&model, &teacher, &src, 1, &settings).unwrap(),
        cands[0]
    );
}

#[test]
fn rescoring_a_plain_nat_returns_one_of_its_candidates() {
    let (_vs, teacher) = teacher();
    tch::manual_seed(12);
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = PlainNatConfig {
        length: LengthConfig {
            rule: LengthRule::Ratio,
            ratio_a: 1.0,
            ratio_b: 1.0,
            max_offset: 4,
        },
        ..PlainNatConfig::from_teacher(&teacher_config())
    };
    let nat = PlainNat::new(vs.root(), &cfg).unwrap();
    let src = Tensor::from_slice2(&[[4i64, 9, 12, 3, 2]]);
    let settings = NatDecode::default();
    let cands = nat.candidates(&src, 7, &settings).unwrap();
    let best = rescore(&nat, &teacher, &src, 7, &settings).unwrap();
    let scores = teacher_scores(&teacher, &src, &cands).unwrap();
    assert_eq!(best, cands[best_index(&scores).unwrap()]);
}
