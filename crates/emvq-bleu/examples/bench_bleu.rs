//! Benchmark: corpus BLEU and chrF of the 3003 newstest2014 segments against
//! a perturbed copy (the committed fixture `tests/fixtures/nt_hyp.txt.gz`),
//! timed here and in sacreBLEU's Python on the same machine and input.
//!
//! ```text
//! python3 -m pip install --target .pytools sacrebleu==2.5.1
//! cargo run --release -p emvq-bleu --example bench_bleu
//! ```
//!
//! Each figure is the best of several runs, as wall-clock time and as
//! process CPU time (all threads together; less disturbed by other load on
//! the machine). Environment: `EMVQ_SHARED_DATA` (shared data folder),
//! `EMVQ_PYTOOLS` (folder holding sacreBLEU, default `<workspace>/.pytools`),
//! `PYTHON` (interpreter, default `python3`), `BENCH_REPS` (runs of each
//! Python measurement, default 5; the Rust ones get four times as many).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use emvq_bleu::significance::{bootstrap_scores, DEFAULT_BS_SAMPLES, DEFAULT_SEED};
use emvq_bleu::{Bleu, BleuConfig, Chrf, ChrfConfig, StatsMetric};
use serde_json::Value;

const PY_SCRIPT: &str = r#"
import json, sys, time
from sacrebleu.metrics import BLEU, CHRF
import sacrebleu

def read(path):
    import gzip
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rt', encoding='utf-8', newline='\n') as fh:
        return [line.rstrip() for line in fh]

hyps, refs = read(sys.argv[1]), read(sys.argv[2])
reps = int(sys.argv[3])
out = {'version': sacrebleu.__version__}
for name, make in (('bleu', lambda: BLEU(force=True)), ('chrf', CHRF)):
    wall, cpu = [], []
    for _ in range(reps):
        metric = make()  # a fresh object: no tokenizer cache from earlier runs
        t, c = time.perf_counter(), time.process_time()
        score = metric.corpus_score(hyps, [refs])
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    out[name] = {'score': score.score, 'wall': min(wall), 'cpu': min(cpu)}
print(json.dumps(out))
"#;

/// The single run a user would make: start Python, import, read, score BLEU once.
const PY_WHOLE: &str = r#"
import sys
from sacrebleu.metrics import BLEU
def read(path):
    import gzip
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rt', encoding='utf-8', newline='\n') as fh:
        return [line.rstrip() for line in fh]
print(BLEU(force=True).corpus_score(read(sys.argv[1]), [read(sys.argv[2])]))
"#;

/// Best wall-clock and CPU seconds of a measurement.
#[derive(Clone, Copy)]
struct Timing {
    wall: f64,
    cpu: f64,
}

/// CPU time of this process, all threads together.
fn process_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return f64::NAN;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn best_of<T>(reps: usize, mut f: impl FnMut() -> Result<T>) -> Result<(Timing, T)> {
    let mut best = Timing {
        wall: f64::INFINITY,
        cpu: f64::INFINITY,
    };
    let mut last = None;
    for _ in 0..reps {
        let (t, c) = (Instant::now(), process_cpu_seconds());
        let v = f()?;
        best.wall = best.wall.min(t.elapsed().as_secs_f64());
        best.cpu = best.cpu.min(process_cpu_seconds() - c);
        last = Some(v);
    }
    match last {
        Some(v) => Ok((best, v)),
        None => bail!("BENCH_REPS must be at least 1"),
    }
}

fn shared_data() -> PathBuf {
    std::env::var_os("EMVQ_SHARED_DATA").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data")),
        PathBuf::from,
    )
}

fn timing(v: &Value) -> Timing {
    Timing {
        wall: v["wall"].as_f64().unwrap_or(f64::NAN),
        cpu: v["cpu"].as_f64().unwrap_or(f64::NAN),
    }
}

fn main() -> Result<()> {
    let reps: usize = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let rust_reps = 4 * reps;
    let ref_path = shared_data().join("wmt14/newstest2014.de");
    let hyp_path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/nt_hyp.txt.gz"
    ));
    let pytools = std::env::var_os("EMVQ_PYTOOLS").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.pytools")),
        PathBuf::from,
    );
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());

    // Rust, end to end: read both files and score BLEU.
    let (rust_whole, _) = best_of(rust_reps, || {
        let refs = emvq_bleu::io::read_lines(&ref_path)?;
        let hyps = emvq_bleu::io::read_lines(&hyp_path)?;
        Ok(emvq_bleu::corpus_bleu(
            &hyps,
            &[refs],
            &BleuConfig::default(),
        )?)
    })?;
    let streams = [emvq_bleu::io::read_lines(&ref_path)?];
    let hyps = emvq_bleu::io::read_lines(&hyp_path)?;
    let score_bleu = || Ok(Bleu::new(BleuConfig::default(), &streams)?.corpus_score(&hyps)?);
    let score_chrf = || Ok(Chrf::new(ChrfConfig::default(), &streams)?.corpus_score(&hyps)?);
    let (rust_bleu, bleu) = best_of(rust_reps, score_bleu)?;
    let (rust_chrf, chrf) = best_of(rust_reps, score_chrf)?;
    // The same on one thread, to show what the parallel counting adds.
    let single = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let (rust_bleu_1t, _) = single.install(|| best_of(rust_reps, score_bleu))?;
    let (rust_chrf_1t, _) = single.install(|| best_of(rust_reps, score_chrf))?;
    let metric = Bleu::new(BleuConfig::default(), &streams)?;
    let stats = metric.segment_stats(&hyps)?;
    let (rust_bs, _) = best_of(rust_reps, || {
        Ok(bootstrap_scores(
            &metric,
            &[&stats],
            DEFAULT_BS_SAMPLES,
            Some(DEFAULT_SEED),
        ))
    })?;

    // sacreBLEU, timing only the scoring inside Python.
    let out = Command::new(&python)
        .env("PYTHONPATH", &pytools)
        .arg("-c")
        .arg(PY_SCRIPT)
        .arg(&hyp_path)
        .arg(&ref_path)
        .arg(reps.to_string())
        .output()
        .with_context(|| format!("cannot run {python}"))?;
    if !out.status.success() {
        bail!(
            "sacreBLEU failed (install it: python3 -m pip install --target .pytools sacrebleu==2.5.1):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let py: Value = serde_json::from_slice(&out.stdout).context("sacreBLEU's output")?;
    let (py_bleu, py_chrf) = (timing(&py["bleu"]), timing(&py["chrf"]));

    // sacreBLEU as a whole process: start, import, read, score once.
    let mut py_whole = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        let status = Command::new(&python)
            .env("PYTHONPATH", &pytools)
            .arg("-c")
            .arg(PY_WHOLE)
            .arg(&hyp_path)
            .arg(&ref_path)
            .output()?
            .status;
        if !status.success() {
            bail!("sacreBLEU whole-process run failed");
        }
        py_whole = py_whole.min(t.elapsed().as_secs_f64());
    }

    println!(
        "newstest2014: {} segments; hypotheses {}",
        hyps.len(),
        hyp_path.display()
    );
    println!(
        "sacreBLEU {} (Python); best of {reps} runs (Python), {rust_reps} runs (Rust)",
        py["version"].as_str().unwrap_or("?")
    );
    for (name, ours, theirs) in [
        ("BLEU ", bleu.score, py["bleu"]["score"].as_f64()),
        ("chrF2", chrf.score, py["chrf"]["score"].as_f64()),
    ] {
        let theirs = theirs.unwrap_or(f64::NAN);
        println!(
            "{name} emvq-bleu {ours:.6} sacreBLEU {theirs:.6} (difference {:.1e})",
            (ours - theirs).abs()
        );
    }
    println!(
        "{:<30} {:>10} {:>10} {:>8}   {:>10} {:>10} {:>8}",
        "", "wall", "sacreBLEU", "speed-up", "CPU", "sacreBLEU", "speed-up"
    );
    let ms = |s: f64| format!("{:.1}ms", s * 1e3);
    let row = |what: &str, ours: Timing, theirs: Timing| {
        println!(
            "{what:<30} {:>10} {:>10} {:>7.1}x   {:>10} {:>10} {:>7.1}x",
            ms(ours.wall),
            ms(theirs.wall),
            theirs.wall / ours.wall,
            ms(ours.cpu),
            ms(theirs.cpu),
            theirs.cpu / ours.cpu
        )
    };
    let threads = rayon::current_num_threads();
    row(&format!("BLEU ({threads} threads)"), rust_bleu, py_bleu);
    row("BLEU (1 thread)", rust_bleu_1t, py_bleu);
    row(&format!("chrF ({threads} threads)"), rust_chrf, py_chrf);
    row("chrF (1 thread)", rust_chrf_1t, py_chrf);
    println!(
        "{:<30} {:>10} {:>10} {:>7.1}x   (Rust: read + score; Python: start, import, read, score)",
        "BLEU whole run",
        ms(rust_whole.wall),
        ms(py_whole),
        py_whole / rust_whole.wall
    );
    println!(
        "{:<30} {:>10}   (emvq-bleu only)",
        "BLEU 1000 bootstrap resamples",
        ms(rust_bs.wall)
    );
    Ok(())
}
