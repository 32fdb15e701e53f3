//! Benchmark of VQ-VAE training throughput (Roy et al. 2018, arXiv
//! 1805.11063): training steps of the CIFAR-10 VQ-VAE of a config (forward,
//! exact 256-way pixel NLL, bottleneck with EMA, backward, clipping, Adam)
//! on real CIFAR-10 batches, in emvq and in the equivalent PyTorch script
//! `bench/vqvae_torch.py`, in the same run, alternating round by round so a
//! burst of load on a shared machine hits both alike; prints images/s
//! (median and best round) and the ratio.
//!
//! `cargo run --release -p emvq-vision --example bench_vqvae -- [--config
//! configs/cifar10/vqvae_em.toml] [--threads 1] [--steps 10] [--rounds 5]
//! [--device cpu]`. Both sides start from random codebooks (the config's
//! k-means initialisation and dead-code re-seeding are switched off for the
//! benchmark: the PyTorch bottleneck has neither). The Python side
//! needs `torch` importable: `<workspace>/.pytools` is put on `PYTHONPATH`
//! when it exists; `EMVQ_PYTHON` names the interpreter (default `python3`).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use emvq_bottleneck::CodebookInit;
use emvq_tensor::DeviceSpec;
use emvq_transformer::{Adam, AdamConfig};
use emvq_vision::{VqVae, VqVaeConfig};
use tch::{nn::VarStore, Device, Tensor};

struct Args {
    config: PathBuf,
    threads: i32,
    steps: usize,
    rounds: usize,
    device: DeviceSpec,
}

fn parse_args() -> Result<Args, String> {
    let root = emvq_data::sources::default_workspace_root();
    let mut args = Args {
        config: root.join("configs/cifar10/vqvae_em.toml"),
        threads: 1,
        steps: 10,
        rounds: 5,
        device: DeviceSpec::Cpu,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag}: {e}");
        match flag.as_str() {
            "--config" => args.config = value.into(),
            "--threads" => args.threads = value.parse().map_err(|e| bad(&e))?,
            "--steps" => args.steps = value.parse().map_err(|e| bad(&e))?,
            "--rounds" => args.rounds = value.parse().map_err(|e| bad(&e))?,
            "--device" => args.device = value.parse().map_err(|e| bad(&e))?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.steps == 0 || args.rounds == 0 {
        return Err("--steps and --rounds must be at least 1".into());
    }
    Ok(args)
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    emvq_tensor::runtime::load_cuda_backend();
    let device = args.device.resolve()?;
    if args.threads > 0 {
        tch::set_num_threads(args.threads);
        tch::set_num_interop_threads(args.threads);
    }
    let text = std::fs::read_to_string(&args.config)?;
    let table: toml::Table = toml::from_str(&text)?;
    let mut model_cfg: VqVaeConfig = table["model"].clone().try_into()?;
    model_cfg.bottleneck.init = CodebookInit::Random;
    // The PyTorch bottleneck has no dead-code re-seeding: the same work on
    // both sides.
    model_cfg.bottleneck.reseed_dead = false;
    let train = table["train"].as_table().ok_or("config has no [train]")?;
    let batch = train["batch_size"].as_integer().ok_or("train.batch_size")?;
    let lr = train["lr"].as_float().ok_or("train.lr")?;
    let beta2 = train["adam_beta2"].as_float().ok_or("train.adam_beta2")?;
    let clip = train["clip_norm"].as_float().ok_or("train.clip_norm")?;

    let root = emvq_data::sources::default_workspace_root();
    let data = emvq_data::sources::find_data("cifar10", &root)?;
    let bin = data.join(emvq_data::cifar::BIN_DIR);
    let part = emvq_data::cifar::Cifar10::read_file(&bin.join("data_batch_1.bin"))?;
    let batches = 8i64;
    let flat = part.images.as_slice().ok_or("layout")?;
    let images = Tensor::from_slice(&flat[..(batch * batches * 3072) as usize])
        .view([batch * batches, 3, 32, 32])
        .to_device(device); // [batch · 8, 3, 32, 32]

    tch::manual_seed(0);
    let vs = VarStore::new(device);
    let model = VqVae::new(vs.root(), &model_cfg)?;
    let mut opt = Adam::new(
        &vs,
        &AdamConfig {
            beta1: 0.9,
            beta2,
            eps: 1e-8,
            weight_decay: 0.0,
        },
    )?;
    let mut step = 0i64;
    let mut run_steps = |n: usize| -> Result<f64, Box<dyn std::error::Error>> {
        sync(device);
        let start = Instant::now();
        let mut last = None;
        for _ in 0..n {
            let b = images.narrow(0, (step % batches) * batch, batch);
            step += 1;
            let loss = model.forward(&b, true)?.loss()?;
            opt.zero_grad();
            loss.backward();
            if clip > 0.0 {
                let _ = opt.clip_grad_norm(clip)?;
            }
            opt.step(lr)?;
            last = Some(loss);
        }
        let _ = last.map(|l| l.double_value(&[]));
        sync(device);
        Ok(start.elapsed().as_secs_f64())
    };

    let python = std::env::var("EMVQ_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut cmd = Command::new(python);
    cmd.arg(root.join("crates/emvq-vision/bench/vqvae_torch.py"))
        .args(["--config", &args.config.display().to_string()])
        .args(["--data", &bin.display().to_string()])
        .args([
            "--batch",
            &batch.to_string(),
            "--batches",
            &batches.to_string(),
        ])
        .args(["--threads", &args.threads.to_string()])
        .args([
            "--device",
            &match device {
                Device::Cuda(i) => format!("cuda:{i}"),
                _ => "cpu".to_string(),
            },
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let tools = root.join(".pytools");
    if tools.is_dir() {
        cmd.env("PYTHONPATH", tools);
    }
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().ok_or("python stdin")?;
    let mut stdout = BufReader::new(child.stdout.take().ok_or("python stdout")?);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    println!("PyTorch side: {}", line.trim());
    let mut python_steps = |n: usize| -> Result<f64, Box<dyn std::error::Error>> {
        writeln!(stdin, "{n}")?;
        stdin.flush()?;
        let mut l = String::new();
        stdout.read_line(&mut l)?;
        Ok(l.trim()
            .parse::<f64>()
            .map_err(|e| format!("python said {l:?}: {e}"))?
            / 1000.0)
    };

    // Warm-up: 2 steps each.
    run_steps(2)?;
    python_steps(2)?;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let images_per_round = (args.steps as i64 * batch) as f64;
    for round in 0..args.rounds {
        let a = images_per_round / run_steps(args.steps)?;
        let b = images_per_round / python_steps(args.steps)?;
        println!("round {round}: emvq {a:.1} img/s, PyTorch {b:.1} img/s");
        ours.push(a);
        theirs.push(b);
    }
    let _ = writeln!(stdin, "quit");
    let _ = child.wait();
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    println!(
        "\nVQ-VAE training, {} ({:?} bottleneck, hidden {}, batch {batch}), {} threads, {device:?}, \
         {} rounds of {} steps:",
        args.config.display(),
        model_cfg.bottleneck.kind,
        model_cfg.hidden,
        args.threads,
        args.rounds,
        args.steps
    );
    println!("| side | median img/s | best img/s |\n| --- | --- | --- |");
    println!("| emvq | {:.1} | {:.1} |", median(&ours), best(&ours));
    println!(
        "| PyTorch | {:.1} | {:.1} |",
        median(&theirs),
        best(&theirs)
    );
    println!(
        "emvq / PyTorch (median): {:.3}",
        median(&ours) / median(&theirs)
    );
    Ok(())
}
