//! Batch-1 cost of the pieces of the latent-Transformer NAT's one-pass
//! decoding (Roy et al. 2018, arXiv 1805.11063) at the CPU config's sizes
//! (d 256, 4 heads, d_ff 1024, 3 layers, vocabulary 8000), on random
//! weights and inputs of a typical Multi30k length: encoder, one cached
//! latent-predictor step (1 and 3 layers), decompression (k = 3, 4), the
//! non-causal decoder pass, the tied output projection and argmax. The
//! end-to-end figures on real sentences come from `emvq bench-nat`; this
//! one says where the decoder-side time goes. 1 LibTorch thread.
//!
//! `cargo run --release -p emvq-latent --example bench_nat [-- LEN ROUNDS]`

use emvq_latent::compress::Decompressor;
use emvq_latent::timing::thread_cpu_seconds;
use emvq_transformer::{Activation, Decoder, Encoder, LayerConfig, Mask, StackConfig};
use tch::{nn, nn::Module, Device, Kind, Tensor};

const D: i64 = 256;
const VOCAB: i64 = 8000;

fn stack(layers: i64) -> StackConfig {
    StackConfig {
        num_layers: layers,
        layer: LayerConfig {
            d_model: D,
            heads: 4,
            d_ff: 1024,
            dropout: 0.0,
            attention_dropout: 0.0,
            relu_dropout: 0.0,
            prenorm: true,
            layer_norm_eps: 1e-6,
            activation: Activation::Relu,
        },
    }
}

/// A named piece of work to time.
type Case<'a> = (String, Box<dyn FnMut() + 'a>);

/// Runs every case once per round, in turn, after 5 untimed rounds; the
/// median milliseconds of thread CPU time of each (what a busy machine's
/// wall clock inflates).
fn time_all(rounds: usize, cases: &mut [Case<'_>]) -> Vec<f64> {
    let mut ms = vec![Vec::with_capacity(rounds); cases.len()];
    for round in 0..rounds + 5 {
        for (i, (_, f)) in cases.iter_mut().enumerate() {
            let t = thread_cpu_seconds();
            f();
            if round >= 5 {
                ms[i].push((thread_cpu_seconds() - t) * 1e3);
            }
        }
    }
    ms.into_iter()
        .map(|mut v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect()
}

fn main() {
    let args: Vec<i64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("integer"))
        .collect();
    let len = args.first().copied().unwrap_or(16); // target positions (a multiple of 16)
    let rounds = args.get(1).copied().unwrap_or(200) as usize;
    tch::set_num_threads(1);
    tch::manual_seed(0);
    let _guard = tch::no_grad_guard();
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let opts = (Kind::Float, Device::Cpu);
    let src_len = len - 2;
    let encoder = Encoder::new(&root / "encoder", &stack(3)).unwrap();
    let decoder = Decoder::new(&root / "decoder", &stack(3)).unwrap();
    let embed = root.randn("embed", &[VOCAB, D], 0.0, 0.06);
    let src = Tensor::randn([1, src_len, D], opts);
    let memory = encoder.forward(&src, &Mask::None, false).unwrap();
    let x = Tensor::randn([1, len, D], opts);

    let h = decoder
        .forward(&x, &Mask::None, &memory, &Mask::None, false)
        .unwrap();
    let one = h.narrow(1, 0, 1);
    let mut cases: Vec<Case<'_>> = Vec::new();
    cases.push((
        "encoder (3 layers)".into(),
        Box::new(|| drop(encoder.forward(&src, &Mask::None, false).unwrap())),
    ));
    for layers in [1, 3] {
        let pred = Decoder::new(&root / format!("pred{layers}"), &stack(layers)).unwrap();
        let head = nn::linear(&root / format!("head{layers}"), D, 256, Default::default());
        let step = Tensor::randn([1, 1, D], opts);
        let memory = &memory;
        cases.push((
            format!("latent predictor, {layers} layer(s), 2 steps"),
            Box::new(move || {
                let mut cache = pred.init_cache(memory, Mask::None).unwrap();
                for _ in 0..2 {
                    let h = pred.step(&step, &mut cache).unwrap();
                    drop(head.forward(&h).argmax(-1, false));
                }
            }),
        ));
    }
    for k in [3, 4] {
        let dec = Decompressor::new(&root / format!("decompress{k}"), D, k, true, 0.0, 1e-6);
        let z = Tensor::randn([1, len >> k, D], opts);
        cases.push((
            format!("decompress k={k}"),
            Box::new(move || drop(dec.forward(&z, None, false).unwrap())),
        ));
    }
    cases.push((
        "decoder pass (3 layers, non-causal)".into(),
        Box::new(|| {
            drop(
                decoder
                    .forward(&x, &Mask::None, &memory, &Mask::None, false)
                    .unwrap(),
            )
        }),
    ));
    cases.push((
        "output projection + argmax".into(),
        Box::new(|| drop(h.linear::<&Tensor>(&embed, None).argmax(-1, false))),
    ));
    cases.push((
        "(one position's projection)".into(),
        Box::new(|| drop(one.linear::<&Tensor>(&embed, None).argmax(-1, false))),
    ));
    let medians = time_all(rounds, &mut cases);
    println!("batch 1, 1 thread, {len} target positions, {src_len} source tokens, median thread CPU time of {rounds} interleaved rounds:");
    for ((name, _), ms) in cases.iter().zip(medians) {
        println!("  {name:<40} {ms:7.3} ms");
    }
}
