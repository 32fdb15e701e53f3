//! A tiny teacher overfits a 20-pair synthetic corpus (copy and reverse over
//! a 10-symbol alphabet, the task named by the first source token); greedy
//! and beam decoding then reproduce every target.

use emvq_transformer::{
    beam_search, greedy, train_step, Activation, Adam, AdamConfig, LrSchedule, SearchConfig,
    Seq2Seq, StepConfig, TransformerConfig,
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use tch::{nn::VarStore, Device, Tensor};

const PAD: i64 = 0;
const BOS: i64 = 1;
const EOS: i64 = 2;
const COPY: i64 = 4;
const REVERSE: i64 = 5;

/// 10 copy and 10 reverse pairs, symbols 6..16, lengths 3..=6.
fn corpus() -> Vec<(Vec<i64>, Vec<i64>)> {
    let mut rng = StdRng::seed_from_u64(2018);
    (0..20)
        .map(|i| {
            let n = rng.gen_range(3..=6);
            let symbols: Vec<i64> = (0..n).map(|_| rng.gen_range(6..16)).collect();
            let (task, mut target) = if i % 2 == 0 {
                (COPY, symbols.clone())
            } else {
                (REVERSE, symbols.iter().rev().copied().collect())
            };
            let mut source = vec![task];
            source.extend(&symbols);
            source.push(EOS);
            target.push(EOS);
            (source, target)
        })
        .collect()
}

fn pad(rows: impl Iterator<Item = Vec<i64>>) -> Tensor {
    let rows: Vec<Vec<i64>> = rows.collect();
    let width = rows.iter().map(Vec::len).max().unwrap();
    let padded: Vec<Vec<i64>> = rows
        .into_iter()
        .map(|mut r| {
            r.resize(width, PAD);
            r
        })
        .collect();
    Tensor::from_slice2(&padded)
}

#[test]
fn tiny_model_overfits_and_decoding_reproduces_the_targets() {
    let cfg = TransformerConfig {
        vocab_size: 16,
        d_model: 64,
        heads: 4,
        d_ff: 128,
        encoder_layers: 2,
        decoder_layers: 2,
        dropout: 0.0,
        attention_dropout: 0.0,
        relu_dropout: 0.0,
        prenorm: true,
        tie_embeddings: true,
        max_positions: 32,
        layer_norm_eps: 1e-6,
        activation: Activation::Relu,
        pad_id: PAD,
        bos_id: BOS,
        eos_id: EOS,
    };
    // One intra-op thread: the test machine's cores are shared, and LibTorch's
    // spinning worker threads slow a tiny model down by 10-50x under load.
    tch::set_num_threads(1);
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let model = Seq2Seq::new(vs.root(), &cfg).unwrap();
    let mut opt = Adam::new(&vs, &AdamConfig::default()).unwrap();
    let schedule = LrSchedule {
        scale: 0.3,
        warmup_steps: 20,
        d_model: 64,
    };
    let step_cfg = StepConfig {
        label_smoothing: 0.0,
        clip_norm: 1.0,
        seed: 7,
    };

    let pairs = corpus();
    let src = pad(pairs.iter().map(|p| p.0.clone()));
    let tgt = pad(pairs.iter().map(|p| p.1.clone()));
    let batch = [(src.shallow_clone(), tgt)];
    let mut last = f64::INFINITY;
    let mut first = None;
    let t0 = std::time::Instant::now();
    for _ in 0..600 {
        let stats = train_step(&model, &mut opt, &schedule, &batch, &step_cfg).unwrap();
        first.get_or_insert(stats.loss);
        last = stats.loss;
        if last < 0.002 {
            break;
        }
    }
    assert!(
        last < 0.01,
        "loss {first:?} → {last} after {} steps",
        opt.step_count()
    );

    eprintln!(
        "loss {first:?} → {last} after {} steps, {:?}",
        opt.step_count(),
        t0.elapsed()
    );
    let expected: Vec<Vec<i64>> = pairs
        .iter()
        .map(|p| p.1[..p.1.len() - 1].to_vec())
        .collect();
    let decoded: Vec<Vec<i64>> = greedy(&model, &src, 1.0, 2)
        .unwrap()
        .into_iter()
        .map(|h| h.tokens)
        .collect();
    assert_eq!(decoded, expected);
    let search = SearchConfig {
        beam_size: 4,
        length_penalty: 0.6,
        max_len_a: 1.0,
        max_len_b: 2,
    };
    let beams: Vec<Vec<i64>> = beam_search(&model, &src, &search)
        .unwrap()
        .into_iter()
        .map(|h| h[0].tokens.clone())
        .collect();
    assert_eq!(beams, expected);
}
