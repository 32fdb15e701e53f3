//! Exact resumption: 2N training steps straight give the same losses, bit
//! for bit on the CPU, as N steps, a checkpoint (model, Adam moments, step),
//! a fresh model and optimiser restored from it, and N more steps — dropout
//! included. Also: averaging two identical checkpoints gives the same model,
//! and accumulating two micro-batches equals one step on their union.

use emvq_tensor::Checkpoint;
use emvq_transformer::{
    average_checkpoints, load_training_checkpoint, save_training_checkpoint, train_step,
    Activation, Adam, AdamConfig, LrSchedule, Seq2Seq, StepConfig, TransformerConfig,
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::Mutex;
use tch::{nn::VarStore, Device, Tensor};

fn config() -> TransformerConfig {
    TransformerConfig {
        vocab_size: 16,
        d_model: 32,
        heads: 4,
        d_ff: 64,
        encoder_layers: 2,
        decoder_layers: 2,
        dropout: 0.2,
        attention_dropout: 0.1,
        relu_dropout: 0.1,
        prenorm: true,
        tie_embeddings: true,
        max_positions: 32,
        layer_norm_eps: 1e-6,
        activation: Activation::Relu,
        pad_id: 0,
        bos_id: 1,
        eos_id: 2,
    }
}

/// Batches of random sequences (ids 3..16, EOS, padding) for `step`.
fn batch(step: i64) -> Vec<(Tensor, Tensor)> {
    let mut rng = StdRng::seed_from_u64(step as u64);
    let make = |rng: &mut StdRng| {
        let rows: Vec<Vec<i64>> = (0..4)
            .map(|_| {
                let n = rng.gen_range(2..7);
                let mut row: Vec<i64> = (0..n).map(|_| rng.gen_range(3..16)).collect();
                row.push(2);
                row.resize(8, 0);
                row
            })
            .collect();
        Tensor::from_slice2(&rows)
    };
    // Two micro-batches: exercises gradient accumulation too.
    (0..2).map(|_| (make(&mut rng), make(&mut rng))).collect()
}

struct Run {
    vs: VarStore,
    model: Seq2Seq,
    opt: Adam,
}

fn fresh(init_seed: i64) -> Run {
    // One intra-op thread: fast on shared cores, and a fixed thread count
    // keeps LibTorch's reductions in one order.
    tch::set_num_threads(1);
    tch::manual_seed(init_seed);
    let vs = VarStore::new(Device::Cpu);
    let model = Seq2Seq::new(vs.root(), &config()).unwrap();
    let opt = Adam::new(&vs, &AdamConfig::default()).unwrap();
    Run { vs, model, opt }
}

/// LibTorch's generator is global: tests that seed it run one at a time.
static RNG: Mutex<()> = Mutex::new(());

const SCHEDULE: LrSchedule = LrSchedule {
    scale: 2.0,
    warmup_steps: 4,
    d_model: 32,
};
const STEP: StepConfig = StepConfig {
    label_smoothing: 0.1,
    clip_norm: 1.0,
    seed: 1234,
};

fn train(run: &mut Run, steps: std::ops::Range<i64>) -> Vec<u64> {
    steps
        .map(|s| {
            let stats = train_step(&run.model, &mut run.opt, &SCHEDULE, &batch(s), &STEP).unwrap();
            assert_eq!(stats.step, s + 1);
            stats.loss.to_bits()
        })
        .collect()
}

#[test]
fn resume_from_checkpoint_repeats_losses_bit_for_bit() {
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    const N: i64 = 3;
    let mut straight = fresh(1);
    let expected = train(&mut straight, 0..2 * N);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("step3.safetensors");
    let mut first = fresh(1);
    let mut losses = train(&mut first, 0..N);
    let meta = BTreeMap::from([("data_position".to_string(), N.to_string())]);
    save_training_checkpoint(&path, &first.vs, &first.opt, &meta).unwrap();
    drop(first);

    let mut resumed = fresh(99); // different init: everything must come from the file
    let ckpt = load_training_checkpoint(&path, &resumed.vs, &mut resumed.opt).unwrap();
    assert_eq!(ckpt.metadata["data_position"], "3");
    assert_eq!(resumed.opt.step_count(), N);
    losses.extend(train(&mut resumed, N..2 * N));
    assert_eq!(losses, expected);
    // And the final weights agree bit for bit.
    let (a, b) = (straight.vs.variables(), resumed.vs.variables());
    for (name, t) in &a {
        assert!(t.equal(&b[name]), "{name}");
    }
    // Losses change over the run (the test is not vacuous).
    assert_ne!(expected[0], expected[2 * N as usize - 1]);
}

#[test]
fn averaging_two_identical_checkpoints_gives_the_same_model() {
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut run = fresh(3);
    train(&mut run, 0..1);
    let (p1, p2) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    save_training_checkpoint(&p1, &run.vs, &run.opt, &BTreeMap::new()).unwrap();
    save_training_checkpoint(&p2, &run.vs, &run.opt, &BTreeMap::new()).unwrap();
    let avg = average_checkpoints(&[p1.clone(), p2]).unwrap();
    assert!(avg.tensors.keys().all(|k| !k.starts_with("optimizer.")));
    let out = dir.path().join("avg.safetensors");
    avg.save(&out).unwrap();

    let other = fresh(4);
    Checkpoint::load(&out)
        .unwrap()
        .restore_into(&other.vs, &out)
        .unwrap();
    let (a, b) = (run.vs.variables(), other.vs.variables());
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert!(t.equal(&b[name]), "{name}");
    }
    // A different checkpoint does move the average.
    train(&mut run, 1..2);
    let p3 = dir.path().join("c.safetensors");
    save_training_checkpoint(&p3, &run.vs, &run.opt, &BTreeMap::new()).unwrap();
    let mixed = average_checkpoints(&[p1, p3]).unwrap();
    let w = "embed_tokens.weight";
    assert!(!mixed.tensors[w].equal(&avg.tensors[w]));
}

/// Two micro-batches of different padded widths give the same loss and
/// gradients as one batch holding both (dropout off): accumulation normalises by
/// the total token count, and padding changes nothing.
#[test]
fn accumulated_micro_batches_equal_one_joined_batch() {
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let no_dropout = TransformerConfig {
        dropout: 0.0,
        attention_dropout: 0.0,
        relu_dropout: 0.0,
        ..config()
    };
    let run = |batches: &[(Tensor, Tensor)]| {
        tch::set_num_threads(1);
        tch::manual_seed(5);
        let vs = VarStore::new(Device::Cpu);
        let model = Seq2Seq::new(vs.root(), &no_dropout).unwrap();
        let mut opt = Adam::new(&vs, &AdamConfig::default()).unwrap();
        let stats = train_step(&model, &mut opt, &SCHEDULE, batches, &STEP).unwrap();
        (stats, vs)
    };
    let micro = batch(0);
    let widen = |t: &Tensor, w: i64| t.constant_pad_nd([0, w - t.size()[1]]);
    let joined = (
        Tensor::cat(&[widen(&micro[0].0, 10), widen(&micro[1].0, 10)], 0),
        Tensor::cat(&[widen(&micro[0].1, 11), widen(&micro[1].1, 11)], 0),
    );
    let (a, vs_a) = run(&micro);
    let (b, vs_b) = run(&[joined]);
    assert_eq!(a.tokens, b.tokens);
    assert!((a.loss - b.loss).abs() < 1e-5, "{} vs {}", a.loss, b.loss);
    assert!(
        (a.grad_norm - b.grad_norm).abs() < 1e-4,
        "{} vs {}",
        a.grad_norm,
        b.grad_norm
    );
    // Compare the (clipped) gradients the step used; the updated weights
    // themselves are not comparable: Adam's first step is lr·sign(g), which
    // turns rounding noise in gradients that are zero in exact arithmetic
    // (e.g. of key biases) into full-size steps.
    let (va, vb) = (vs_a.variables(), vs_b.variables());
    for (name, t) in &va {
        let diff = (t.grad() - vb[name].grad()).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "{name}: {diff}");
    }
}
