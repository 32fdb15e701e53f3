//! Benchmark of the discrete bottleneck (Roy et al. 2018, arXiv 1805.11063):
//! 4096 vectors × 512 dims against 4096 codes, VQ and Monte-Carlo soft EM
//! (m = 10), one training step (forward, backward, EMA update) and a VQ
//! evaluation forward, timed in emvq and in PyTorch
//! (`bench/bottleneck_torch.py`, spawned here with the same thread count) in
//! the same run, printed side by side with the ratio.
//!
//! `cargo run --release -p emvq-bottleneck --example bench_bottleneck --
//! [--device cpu|cuda|auto] [--reps N] [--warmup N]`. The two sides
//! alternate run by run (emvq, PyTorch, emvq, …), so a burst of load on a
//! shared machine hits both alike; the table gives each side's median and
//! minimum. The Python side needs `torch` importable: `<workspace>/.pytools`
//! is put on `PYTHONPATH` when it exists, and `EMVQ_PYTHON` names the
//! interpreter (default `python3`).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use emvq_bottleneck::{Bottleneck, BottleneckConfig, BottleneckKind};
use emvq_tensor::{seed::seed_all, DeviceSpec};
use tch::{nn::VarStore, Device, Kind, Tensor};

const N: i64 = 4096;
const D: i64 = 512;
const BITS: u32 = 12;
const SAMPLES: i64 = 10;
const CASES: [&str; 3] = [
    "vq train fwd+bwd+EMA",
    "em train fwd+bwd+EMA",
    "vq eval fwd",
];

struct Args {
    device: DeviceSpec,
    warmup: usize,
    reps: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        device: DeviceSpec::Cpu,
        warmup: 2,
        reps: 15,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--device" => args.device = value.parse().map_err(|e| format!("{e}"))?,
            "--warmup" => args.warmup = value.parse().map_err(|e| format!("--warmup: {e}"))?,
            "--reps" => args.reps = value.parse().map_err(|e| format!("--reps: {e}"))?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.reps == 0 {
        return Err("--reps must be at least 1".into());
    }
    Ok(args)
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// The emvq side: both bottlenecks and the data, one case run at a time.
struct Emvq {
    device: Device,
    x0: Tensor,
    g: Tensor,
    vq: Bottleneck,
    em: Bottleneck,
    _stores: Vec<VarStore>,
}

impl Emvq {
    fn new(device: Device) -> Self {
        seed_all(0);
        let x0 = Tensor::randn([N, D], (Kind::Float, device));
        let g = Tensor::randn([N, D], (Kind::Float, device));
        let mut stores = Vec::new();
        let mut make = |kind| {
            let vs = VarStore::new(device);
            let cfg = BottleneckConfig {
                kind,
                bits: BITS,
                samples: SAMPLES,
                ..Default::default()
            };
            let b = Bottleneck::new(&vs.root(), D, &cfg).expect("valid config");
            stores.push(vs);
            b
        };
        let vq = make(BottleneckKind::Vq);
        let em = make(BottleneckKind::Em);
        Self {
            device,
            x0,
            g,
            vq,
            em,
            _stores: stores,
        }
    }

    fn train_step(&self, b: &Bottleneck) {
        let x = self.x0.detach().set_requires_grad(true);
        let out = b.forward(&x, true).expect("forward");
        ((&out.quantized * &self.g).sum(Kind::Float) + &out.commitment_loss).backward();
    }

    /// Wall time of one run of `case` in ms.
    fn run(&self, case: &str) -> f64 {
        sync(self.device);
        let start = Instant::now();
        match case {
            "vq train fwd+bwd+EMA" => self.train_step(&self.vq),
            "em train fwd+bwd+EMA" => self.train_step(&self.em),
            "vq eval fwd" => {
                let _guard = tch::no_grad_guard();
                self.vq.forward(&self.x0, false).expect("forward");
            }
            other => unreachable!("unknown case {other}"),
        }
        sync(self.device);
        start.elapsed().as_secs_f64() * 1e3
    }
}

/// The PyTorch side: the script as a child answering one case per line.
struct Torch {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    header: String,
}

impl Torch {
    fn spawn(device: Device, threads: i32) -> Result<Self, String> {
        let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let script = crate_dir.join("bench/bottleneck_torch.py");
        let python = std::env::var("EMVQ_PYTHON").unwrap_or_else(|_| "python3".into());
        let device_arg = match device {
            Device::Cuda(i) => format!("cuda:{i}"),
            _ => "cpu".to_string(),
        };
        let mut cmd = Command::new(&python);
        cmd.arg(&script)
            .args(["--device", &device_arg])
            .args(["--n", &N.to_string(), "--d", &D.to_string()])
            .args([
                "--bits",
                &BITS.to_string(),
                "--samples",
                &SAMPLES.to_string(),
            ])
            .args(["--threads", &threads.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let pytools = crate_dir.join("../../.pytools");
        if std::env::var_os("PYTHONPATH").is_none() && pytools.is_dir() {
            cmd.env("PYTHONPATH", pytools);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {python}: {e}"))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut torch = Self {
            child,
            stdin,
            stdout,
            header: String::new(),
        };
        torch.header = torch.read_line().map_err(|e| format!("{script:?}: {e}"))?;
        Ok(torch)
    }

    fn read_line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) => Err("the PyTorch script exited (see its error above)".into()),
            Ok(_) => Ok(line.trim().to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn run(&mut self, case: &str) -> Result<f64, String> {
        writeln!(self.stdin, "{case}").map_err(|e| e.to_string())?;
        self.stdin.flush().map_err(|e| e.to_string())?;
        let line = self.read_line()?;
        line.parse()
            .map_err(|e| format!("bad answer {line:?}: {e}"))
    }
}

impl Drop for Torch {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("bench_bottleneck: {e}");
        std::process::exit(2);
    });
    let device = args.device.resolve().unwrap_or_else(|e| {
        eprintln!("bench_bottleneck: {e}");
        std::process::exit(2);
    });
    let threads = tch::get_num_threads();
    println!(
        "bottleneck benchmark: {N} vectors × {D} dims, {} codes, soft EM m = {SAMPLES}, \
         device {device:?}, {threads} LibTorch threads, {} runs per case after {} warm-up, \
         sides alternating",
        1 << BITS,
        args.reps,
        args.warmup
    );
    let ours = Emvq::new(device);
    let mut torch = Torch::spawn(device, threads);
    match &torch {
        Ok(t) => println!("PyTorch side: {}", t.header),
        Err(e) => println!("PyTorch side not run: {e}"),
    }
    println!(
        "{:<22} {:>11} {:>11} {:>11} {:>11} {:>9}",
        "case", "emvq med", "torch med", "emvq min", "torch min", "emvq/torch"
    );
    let mut failed = torch.is_err();
    for case in CASES {
        let mut mine = Vec::with_capacity(args.reps);
        let mut theirs = Vec::with_capacity(args.reps);
        for rep in 0..args.warmup + args.reps {
            let ms = ours.run(case);
            let torch_ms = match &mut torch {
                Ok(t) => match t.run(case) {
                    Ok(ms) => Some(ms),
                    Err(e) => {
                        println!("PyTorch side failed: {e}");
                        failed = true;
                        None
                    }
                },
                Err(_) => None,
            };
            if rep >= args.warmup {
                mine.push(ms);
                theirs.extend(torch_ms);
            }
        }
        let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let (my_min, my_med) = (min(&mine), median(&mut mine));
        if theirs.len() == mine.len() {
            let (their_min, their_med) = (min(&theirs), median(&mut theirs));
            println!(
                "{case:<22} {my_med:>11.1} {their_med:>11.1} {my_min:>11.1} {their_min:>11.1} {:>9.3}",
                my_med / their_med
            );
        } else {
            println!(
                "{case:<22} {my_med:>11.1} {:>11} {my_min:>11.1} {:>11} {:>9}",
                "-", "-", "-"
            );
        }
    }
    if failed {
        std::process::exit(1);
    }
}
