//! Benchmark: corpus BLEU and chrF of the 3003 newstest2014 segments against
//! a perturbed copy (the committed fixture `tests/fixtures/nt_hyp.txt.gz`),
//! timed here and in sacreBLEU's Python on the same machine and input.
//!
//! ```text
//! python3 -m pip install --target .pytools sacrebleu==2.5.1
//! cargo run --release -p emvq-bleu --example bench_bleu
//! ```
//!
//! Environment: `EMVQ_SHARED_DATA` (shared data folder), `EMVQ_PYTOOLS`
//! (folder holding sacreBLEU, default `<workspace>/.pytools`), `PYTHON`
//! (interpreter, default `python3`), `BENCH_REPS` (timed repetitions, default 5).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use emvq_bleu::significance::{bootstrap_scores, DEFAULT_BS_SAMPLES, DEFAULT_SEED};
use emvq_bleu::{Bleu, BleuConfig, Chrf, ChrfConfig, StatsMetric};

const PY_SCRIPT: &str = r#"
import json, sys, time
t_import = time.perf_counter()
from sacrebleu.metrics import BLEU, CHRF
import sacrebleu
t_import = time.perf_counter() - t_import

def read(path):
    import gzip
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rt', encoding='utf-8', newline='\n') as fh:
        return [line.rstrip() for line in fh]

hyps, refs = read(sys.argv[1]), read(sys.argv[2])
reps = int(sys.argv[3])
out = {'version': sacrebleu.__version__, 'import_s': t_import}
for name, make in (('bleu', BLEU), ('chrf', CHRF)):
    times = []
    for _ in range(reps):
        metric = make()  # a fresh object: no tokenizer cache from earlier repetitions
        t = time.perf_counter()
        score = metric.corpus_score(hyps, [refs])
        times.append(time.perf_counter() - t)
    out[name] = {'score': score.score, 'best_s': min(times), 'first_s': times[0]}
print(json.dumps(out))
"#;

/// The single run a user would make: import, read, score BLEU once.
const PY_WHOLE: &str = r#"
import sys
from sacrebleu.metrics import BLEU
def read(path):
    import gzip
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rt', encoding='utf-8', newline='\n') as fh:
        return [line.rstrip() for line in fh]
print(BLEU().corpus_score(read(sys.argv[1]), [read(sys.argv[2])]))
"#;

fn shared_data() -> PathBuf {
    std::env::var_os("EMVQ_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data"))
        })
}

fn best_of<T>(reps: usize, mut f: impl FnMut() -> Result<T>) -> Result<(f64, T)> {
    let mut best = f64::INFINITY;
    let mut last = None;
    for _ in 0..reps {
        let t = Instant::now();
        let v = f()?;
        best = best.min(t.elapsed().as_secs_f64());
        last = Some(v);
    }
    match last {
        Some(v) => Ok((best, v)),
        None => bail!("BENCH_REPS must be at least 1"),
    }
}

fn main() -> Result<()> {
    let reps: usize = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let ref_path = shared_data().join("wmt14/newstest2014.de");
    let hyp_path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/nt_hyp.txt.gz"
    ));
    let pytools = std::env::var_os("EMVQ_PYTOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.pytools")));
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());

    // Rust, end to end: read both files and score BLEU.
    let (rust_whole, _) = best_of(reps, || {
        let refs = emvq_bleu::io::read_lines(&ref_path)?;
        let hyps = emvq_bleu::io::read_lines(&hyp_path)?;
        Ok(emvq_bleu::corpus_bleu(
            &hyps,
            &[refs],
            &BleuConfig::default(),
        )?)
    })?;
    let refs = emvq_bleu::io::read_lines(&ref_path)?;
    let hyps = emvq_bleu::io::read_lines(&hyp_path)?;
    println!(
        "newstest2014: {} segments, hypotheses {}",
        hyps.len(),
        hyp_path.display()
    );
    let streams = [refs];
    let (rust_bleu, bleu) = best_of(reps, || {
        Ok(Bleu::new(BleuConfig::default(), &streams)?.corpus_score(&hyps)?)
    })?;
    let (rust_chrf, chrf) = best_of(reps, || {
        Ok(Chrf::new(ChrfConfig::default(), &streams)?.corpus_score(&hyps)?)
    })?;
    // The same on one thread, to show what the parallel counting adds.
    let single = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let (rust_bleu_1t, _) = single.install(|| {
        best_of(reps, || {
            Ok(Bleu::new(BleuConfig::default(), &streams)?.corpus_score(&hyps)?)
        })
    })?;
    let (rust_chrf_1t, _) = single.install(|| {
        best_of(reps, || {
            Ok(Chrf::new(ChrfConfig::default(), &streams)?.corpus_score(&hyps)?)
        })
    })?;
    let metric = Bleu::new(BleuConfig::default(), &streams)?;
    let stats = metric.segment_stats(&hyps)?;
    let (rust_bs, _) = best_of(reps, || {
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
    let py: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("sacreBLEU's output")?;
    let py_bleu = py["bleu"]["best_s"].as_f64().unwrap_or(f64::NAN);
    let py_chrf = py["chrf"]["best_s"].as_f64().unwrap_or(f64::NAN);
    let py_bleu_score = py["bleu"]["score"].as_f64().unwrap_or(f64::NAN);
    let py_chrf_score = py["chrf"]["score"].as_f64().unwrap_or(f64::NAN);

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
        "sacreBLEU {} (Python), best of {reps} runs each",
        py["version"].as_str().unwrap_or("?")
    );
    println!(
        "BLEU  emvq-bleu {:.4} vs sacreBLEU {:.4} (difference {:.1e})",
        bleu.score,
        py_bleu_score,
        (bleu.score - py_bleu_score).abs()
    );
    println!(
        "chrF2 emvq-bleu {:.4} vs sacreBLEU {:.4} (difference {:.1e})",
        chrf.score,
        py_chrf_score,
        (chrf.score - py_chrf_score).abs()
    );
    println!(
        "{:<34} {:>12} {:>12} {:>9}",
        "", "emvq-bleu", "sacreBLEU", "speed-up"
    );
    let row = |what: &str, ours: f64, theirs: f64| {
        println!(
            "{what:<34} {:>10.2}ms {:>10.2}ms {:>8.1}x",
            ours * 1e3,
            theirs * 1e3,
            theirs / ours
        )
    };
    let threads = rayon::current_num_threads();
    row(
        &format!("BLEU scoring ({threads} threads)"),
        rust_bleu,
        py_bleu,
    );
    row("BLEU scoring (1 thread)", rust_bleu_1t, py_bleu);
    row(
        &format!("chrF scoring ({threads} threads)"),
        rust_chrf,
        py_chrf,
    );
    row("chrF scoring (1 thread)", rust_chrf_1t, py_chrf);
    row("BLEU read+score vs whole process", rust_whole, py_whole);
    println!(
        "{:<34} {:>10.2}ms",
        "BLEU 1000 bootstrap resamples",
        rust_bs * 1e3
    );
    Ok(())
}
