//! `emvq translate --run DIR [--beam N] [--batch N] [-i FILE]`: raw text in
//! (one sentence a line, stdin by default), detokenised translations out, in
//! input order, with a trained teacher's tokenizer and weights. Sentences are
//! sorted by length and decoded in batches (greedy for beam 1, else beam
//! search with the run's length penalty and maximum length).
//!
//! On a NAT run (latent or plain, [`crate::nat_run`]) every sentence is
//! decoded in one pass (batched), or with `--rescore S` one at a time, the
//! teacher's best of `S` candidates kept.

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use emvq_data::EOS_ID;
use emvq_tensor::DeviceSpec;
use emvq_transformer::{beam_search, greedy, SearchConfig, Seq2Seq};
use tch::{Device, Tensor};

use crate::nat_run::{load_nat_run, load_teacher_run, run_kind, RunKind};
use crate::teacher::load_teacher;

/// `emvq translate`.
#[derive(Debug, Args)]
pub struct TranslateArgs {
    /// A teacher or NAT run directory (runs/teacher/<name>, runs/nat/<name>).
    #[arg(long)]
    pub run: PathBuf,
    /// Beam size (default: the run's `decode.beam_size`); 1 is greedy.
    #[arg(long)]
    pub beam: Option<i64>,
    /// GNMT length-penalty α (default: the run's `decode.length_penalty`).
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Sentences per batch (default: the run's `decode.batch_sentences`).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Input file (default: stdin).
    #[arg(short, long)]
    pub input: Option<PathBuf>,
    /// Output file (default: stdout).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// NAT runs: keep the best of `S` candidates (sampled latents, or the
    /// plain NAT's `S` best lengths) by the run's teacher.
    #[arg(long)]
    pub rescore: Option<usize>,
    /// NAT runs: softmax temperature of the sampled latents (`--rescore`).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    #[arg(long)]
    pub device: Option<DeviceSpec>,
}

/// Decodes token sequences (each ending in EOS; longer ones are cut to the
/// model's `max_positions`, EOS kept) in batches of `batch` sentences of
/// similar length on `device` (the model's); returns the output tokens (no BOS/EOS) in input order.
pub fn translate_ids(
    model: &Seq2Seq,
    sources: &[Vec<u32>],
    search: &SearchConfig,
    batch: usize,
    device: Device,
) -> Result<Vec<Vec<u32>>> {
    let _guard = tch::no_grad_guard();
    let cfg = model.config();
    let max_len = cfg.max_positions as usize;
    let mut order: Vec<usize> = (0..sources.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sources[i].len()));
    let mut out = vec![Vec::new(); sources.len()];
    for chunk in order.chunks(batch.max(1)) {
        let rows: Vec<Vec<i64>> = chunk
            .iter()
            .map(|&i| {
                let s = &sources[i];
                let mut row: Vec<i64> = s.iter().map(|&t| t as i64).collect();
                if row.len() > max_len {
                    row.truncate(max_len - 1);
                    row.push(EOS_ID as i64);
                }
                if row.is_empty() {
                    row.push(EOS_ID as i64);
                }
                row
            })
            .collect();
        let width = rows.iter().map(Vec::len).max().unwrap_or(1);
        let mut flat = Vec::with_capacity(rows.len() * width);
        for row in &rows {
            flat.extend_from_slice(row);
            flat.extend(std::iter::repeat_n(cfg.pad_id, width - row.len()));
        }
        let src = Tensor::from_slice(&flat)
            .view([rows.len() as i64, width as i64])
            .to_device(device); // [batch, src_len]
        let hyps: Vec<Vec<i64>> = if search.beam_size == 1 {
            greedy(model, &src, search.max_len_a, search.max_len_b)?
                .into_iter()
                .map(|h| h.tokens)
                .collect()
        } else {
            beam_search(model, &src, search)?
                .into_iter()
                .map(|mut n_best| n_best.swap_remove(0).tokens)
                .collect()
        };
        for (&i, tokens) in chunk.iter().zip(hyps) {
            out[i] = tokens.into_iter().map(|t| t as u32).collect();
        }
    }
    Ok(out)
}

fn read_input(args: &TranslateArgs) -> Result<Vec<String>> {
    match &args.input {
        Some(path) => Ok(emvq_data::read_lines(path)?),
        None => std::io::stdin()
            .lock()
            .lines()
            .collect::<std::io::Result<_>>()
            .context("reading stdin"),
    }
}

fn write_output(args: &TranslateArgs, text: &[String]) -> Result<()> {
    let sink: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut sink = BufWriter::new(sink);
    for line in text {
        writeln!(sink, "{line}")?;
    }
    sink.flush()?;
    Ok(())
}

/// `emvq translate` on a NAT run.
fn run_nat(args: &TranslateArgs) -> Result<()> {
    anyhow::ensure!(
        args.beam.is_none() && args.alpha.is_none(),
        "--beam and --alpha apply to teacher runs"
    );
    let mut nat = load_nat_run(&args.run, args.device)?;
    nat.decode.temperature = args.temperature;
    let lines = read_input(args)?;
    let mut sources = nat.tokenizer.encode_batch(&lines)?;
    for s in &mut sources {
        s.push(EOS_ID);
    }
    let start = std::time::Instant::now();
    let out = match args.rescore {
        None => nat.translate_ids(&sources, args.batch.unwrap_or(nat.batch_sentences))?,
        Some(s) => {
            anyhow::ensure!(s >= 1, "--rescore must be at least 1");
            let teacher = load_teacher_run(&nat.teacher, args.device)?;
            sources
                .iter()
                .map(|src| nat.translate_one(src, Some((&teacher.model, s))))
                .collect::<Result<_>>()?
        }
    };
    let text = nat.tokenizer.decode_batch(&out)?;
    tracing::info!(
        "translated {} sentences ({}) in {:.2} s with {}",
        lines.len(),
        args.rescore
            .map_or("one pass".into(), |s| format!("best of {s} by the teacher")),
        start.elapsed().as_secs_f64(),
        nat.weights.display()
    );
    write_output(args, &text)
}

/// Runs `emvq translate`.
pub fn run(args: &TranslateArgs) -> Result<()> {
    if run_kind(&args.run)? != RunKind::Teacher {
        return run_nat(args);
    }
    anyhow::ensure!(args.rescore.is_none(), "--rescore applies to NAT runs");
    let teacher = load_teacher(&args.run, args.device)?;
    let lines = read_input(args)?;
    let mut sources = teacher.tokenizer.encode_batch(&lines)?;
    for s in &mut sources {
        s.push(EOS_ID);
    }
    let beam = args.beam.unwrap_or(teacher.config.decode.beam_size);
    anyhow::ensure!(beam >= 1, "--beam must be at least 1");
    let batch = args.batch.unwrap_or(teacher.config.decode.batch_sentences);
    let mut search = teacher.config.decode.search(beam);
    if let Some(alpha) = args.alpha {
        search.length_penalty = alpha;
    }
    let start = std::time::Instant::now();
    let out = translate_ids(&teacher.model, &sources, &search, batch, teacher.device)?;
    let text = teacher.tokenizer.decode_batch(&out)?;
    tracing::info!(
        "translated {} sentences (beam {beam}, batch {batch}) in {:.2} s with {}",
        lines.len(),
        start.elapsed().as_secs_f64(),
        teacher.weights.display()
    );
    write_output(args, &text)
}
