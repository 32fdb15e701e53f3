//! Times Multi30k preparation (read, 8k joint BPE training, encoding) with a
//! per-phase breakdown, then the batching of one training epoch.
//!
//! `cargo run --release -p emvq-data --example bench_prepare [-- DATA_DIR]`
//!
//! DATA_DIR defaults to the Multi30k folder found by `find_data` (the
//! project's `data/`, then `../shared/data`). The tokenizer is written to a
//! fresh temporary run directory, so BPE training is always timed.

use std::path::PathBuf;
use std::time::Instant;

use emvq_data::sources::{default_workspace_root, find_data};
use emvq_data::{prepare_multi30k, BatchConfig, Batcher};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let data_dir = match std::env::args_os().nth(1) {
        Some(dir) => PathBuf::from(dir),
        None => find_data("multi30k", &default_workspace_root())?,
    };
    let run_dir = tempfile::tempdir()?;
    println!("data: {}", data_dir.display());
    println!("threads: {}", rayon::current_num_threads());

    let start = Instant::now();
    let prepared = prepare_multi30k(&data_dir, Some(run_dir.path()))?;
    let total = start.elapsed();
    let t = prepared.timings;
    println!("read        {:>8.3} s", t.read.as_secs_f64());
    println!("bpe train   {:>8.3} s", t.bpe.as_secs_f64());
    println!("encode      {:>8.3} s", t.encode.as_secs_f64());
    println!("prepare     {:>8.3} s (wall)", total.as_secs_f64());

    let train = &prepared.train.encoded;
    let tokens: usize = train.source.iter().chain(&train.target).map(Vec::len).sum();
    println!(
        "vocab {}; train pairs {} ({:?}); train tokens (both sides, with EOS) {}",
        prepared.tokenizer.vocab_size(),
        train.len(),
        prepared.filter_stats,
        tokens
    );

    let start = Instant::now();
    let batcher = Batcher::new(
        train.clone(),
        BatchConfig {
            max_tokens: 4096,
            shuffle: true,
            seed: 1,
        },
    )?;
    let padded: usize = batcher.epoch(0).map(|b| b.padded_tokens()).sum();
    println!(
        "batching    {:>8.3} s ({} batches of max_tokens 4096, padded tokens {})",
        start.elapsed().as_secs_f64(),
        batcher.num_batches(),
        padded
    );
    Ok(())
}
