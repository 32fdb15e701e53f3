//! Micro-benchmarks of this crate's layers on the CPU (or `DEVICE=cuda`):
//! LibTorch's fused `scaled_dot_product_attention` against the explicit
//! formula, and the per-token cost of cached decoding for a Transformer of
//! the reference size (256 wide, 3+3 layers, 4 heads, 1024 filter),
//! and the throughput of a full training step of that model.
//!
//! `cargo run -p emvq-transformer --example bench_layers` (`THREADS=n` sets
//! LibTorch's intra-op threads, default 1).

use std::time::Instant;

use emvq_tensor::DeviceSpec;
use emvq_transformer::attention::{attention_reference, Mask};
use emvq_transformer::{
    train_step, Activation, Adam, AdamConfig, LrSchedule, Seq2Seq, StepConfig, TransformerConfig,
};
use tch::{nn::VarStore, Device, Kind, Tensor};

fn time_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let start = Instant::now();
    for _ in 0..reps {
        f();
    }
    start.elapsed().as_secs_f64() * 1e3 / reps as f64
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

fn attention(device: Device) {
    let (b, h, l, hd) = (32, 4, 32, 64);
    let opts = (Kind::Float, device);
    let q = Tensor::randn([b, h, l, hd], opts).set_requires_grad(true);
    let k = Tensor::randn([b, h, l, hd], opts).set_requires_grad(true);
    let v = Tensor::randn([b, h, l, hd], opts).set_requires_grad(true);
    let pad = Tensor::rand([b, l], opts).lt(0.2);
    for (name, mask) in [
        ("causal", Mask::Causal),
        ("padding", Mask::padding(&pad).unwrap()),
    ] {
        let bias = match &mask {
            Mask::Bias(b) => Some(b.shallow_clone()),
            _ => None,
        };
        let causal = matches!(mask, Mask::Causal);
        let fused = || {
            Tensor::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                bias.as_ref(),
                0.0,
                causal,
                None,
                false,
            )
        };
        let explicit = || attention_reference(&q, &k, &v, &mask);
        let fwd_fused = time_ms(50, || {
            let _ = tch::no_grad(fused);
            sync(device)
        });
        let fwd_ref = time_ms(50, || {
            let _ = tch::no_grad(explicit);
            sync(device)
        });
        let bwd_fused = time_ms(20, || {
            fused().sum(Kind::Float).backward();
            sync(device)
        });
        let bwd_ref = time_ms(20, || {
            explicit().sum(Kind::Float).backward();
            sync(device)
        });
        println!(
            "attention [{b}, {h}, {l}, {hd}] {name:8}: forward fused {fwd_fused:.3} ms, explicit {fwd_ref:.3} ms; \
             forward+backward fused {bwd_fused:.3} ms, explicit {bwd_ref:.3} ms"
        );
    }
}

fn reference_config() -> TransformerConfig {
    TransformerConfig {
        vocab_size: 16000,
        d_model: 256,
        heads: 4,
        d_ff: 1024,
        encoder_layers: 3,
        decoder_layers: 3,
        dropout: 0.1,
        attention_dropout: 0.1,
        relu_dropout: 0.1,
        prenorm: true,
        tie_embeddings: true,
        max_positions: 256,
        layer_norm_eps: 1e-6,
        activation: Activation::Relu,
        pad_id: 0,
        bos_id: 1,
        eos_id: 2,
    }
}

fn decoding(device: Device) {
    let cfg = reference_config();
    let vs = VarStore::new(device);
    let model = Seq2Seq::new(vs.root(), &cfg).unwrap();
    let params = emvq_tensor::params::count_parameters(&vs).trainable;
    let steps = 25;
    for batch in [1i64, 4] {
        let src = Tensor::randint_low(3, 16000, [1, 15], (Kind::Int64, device)).repeat([batch, 1]);
        let ms = time_ms(5, || {
            tch::no_grad(|| {
                let enc = model.encode(&src, false).unwrap();
                let mut cache = model.start_decoding(&enc).unwrap();
                let mut tok = Tensor::full([batch, 1], 1, (Kind::Int64, device));
                for _ in 0..steps {
                    let logits = model.decode_step(&tok, &mut cache).unwrap();
                    tok = logits.log_softmax(-1, Kind::Float).argmax(-1, false);
                    let _ = tok.int64_value(&[0, 0]); // the host looks at each step, as search does
                }
            });
            sync(device)
        });
        println!(
            "decoding, {params} parameters, batch {batch} (beam-4 shape when 4), source 15, {steps} steps: \
             {ms:.2} ms per sentence, {:.3} ms per step",
            ms / steps as f64
        );
    }
}

fn training(device: Device) {
    let cfg = TransformerConfig {
        vocab_size: 10000,
        ..reference_config()
    };
    let vs = VarStore::new(device);
    let model = Seq2Seq::new(vs.root(), &cfg).unwrap();
    let mut opt = Adam::new(&vs, &AdamConfig::default()).unwrap();
    let schedule = LrSchedule {
        scale: 2.0,
        warmup_steps: 4000,
        d_model: 256,
    };
    let step = StepConfig {
        label_smoothing: 0.1,
        clip_norm: 0.0,
        seed: 1,
    };
    let (sentences, len) = (64, 24); // ≈ 1500 target tokens, Multi30k-like lengths
    let src = Tensor::randint_low(3, 10000, [sentences, len], (Kind::Int64, device));
    let tgt = Tensor::randint_low(3, 10000, [sentences, len], (Kind::Int64, device));
    let batch = [(src, tgt)];
    let ms = time_ms(5, || {
        train_step(&model, &mut opt, &schedule, &batch, &step).unwrap();
        sync(device)
    });
    let tokens = (sentences * len) as f64;
    println!(
        "training step, vocab 10000, {sentences}×{len} source and target tokens: {ms:.1} ms, \
         {:.0} target tokens/s",
        tokens / ms * 1e3
    );
}

fn main() {
    let threads = std::env::var("THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    tch::set_num_threads(threads);
    let spec: DeviceSpec = std::env::var("DEVICE")
        .unwrap_or_else(|_| "cpu".into())
        .parse()
        .unwrap();
    let device = spec.resolve().unwrap();
    tch::manual_seed(0);
    println!("device {device:?}, {threads} intra-op thread(s)");
    attention(device);
    decoding(device);
    training(device);
}
