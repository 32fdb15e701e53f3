//! The `emvq` command: one binary for every stage of the toolkit.
//!
//! `emvq info` describes the LibTorch runtime, `emvq bleu` scores
//! translations; later stages (training,
//! translation, evaluation) add their subcommands here, each a thin layer
//! over a library crate.

mod distill;
mod eval;
mod info;
mod latency;
mod nat;
mod nat_run;
mod prepare;
mod teacher;
mod translate;
mod vqvae;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use emvq_tensor::DeviceSpec;

#[derive(Parser)]
#[command(
    name = "emvq",
    version,
    about = "Discrete-latent sequence models: VQ-VAE with EM (Roy et al. 2018)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the tch and LibTorch versions, CUDA/cuDNN availability, CPU
    /// threads and the library path, then run a small tensor check.
    Info {
        /// Device for the tensor check: auto, cpu, cuda or cuda:N.
        #[arg(long, default_value = "auto")]
        device: DeviceSpec,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Score hypotheses against references with BLEU / chrF, equal to
    /// sacreBLEU 2.x, with paired significance tests.
    Bleu(emvq_bleu::BleuArgs),
    /// Read a parallel corpus, train the joint BPE vocabulary and encode
    /// every split into runs/data/<name>/.
    PrepareData {
        #[arg(long, default_value = "configs/multi30k/data.toml")]
        config: PathBuf,
        /// Folder holding the run directories.
        #[arg(long, default_value = "runs")]
        runs: PathBuf,
    },
    /// Train the autoregressive Transformer teacher into
    /// runs/teacher/<name>/ (checkpoints, metrics, final averaged model).
    TrainTeacher(teacher::TrainArgs),
    /// Train the latent-Transformer NAT into runs/nat/<name>/.
    TrainNat(nat::TrainArgs),
    /// Batch-1 latency of NAT variants (or a trained NAT run) by component,
    /// next to the teacher's greedy decoding.
    BenchNat(nat::bench::BenchArgs),
    /// The paper's translation table: every given run (teacher: beam and
    /// greedy; NATs: one pass, rescoring, NPD) timed at batch 1 on one test
    /// set, into runs/latency/<name>/table.md and table.json.
    BenchLatency(latency::BenchArgs),
    /// Translate raw text (stdin or a file, one sentence a line) with a
    /// trained teacher or NAT run; detokenised text out.
    Translate(translate::TranslateArgs),
    /// Score a teacher or NAT run on a split (BLEU, chrF, signatures) and measure
    /// batch-1 latency; results into the run's results.json.
    Eval(eval::EvalArgs),
    /// Sequence-level distillation: the teacher's beam search rewrites every
    /// training target into runs/distill/<name>/ (chunked, resumable).
    Distill(distill::DistillArgs),
    /// Training throughput of the teacher in emvq and in an equivalent
    /// PyTorch script, same batches and threads.
    BenchTeacher(teacher::bench::BenchArgs),
    /// Train the CIFAR-10 VQ-VAE (vq or em bottleneck), then its latent
    /// prior, into runs/vqvae/<name>/, and evaluate it.
    TrainVqvae(vqvae::TrainArgs),
    /// Bits/dim (uniform and learned prior), codebook perplexity and dead
    /// codes of a VQ-VAE run on the test images; pictures; results.json.
    EvalVqvae(vqvae::EvalArgs),
    /// Sample images from a VQ-VAE run's prior into a PNG grid.
    Sample(vqvae::SampleArgs),
}

fn main() -> Result<()> {
    emvq_tensor::runtime::load_cuda_backend();
    let cli = Cli::parse();
    match cli.command {
        Command::Info { device, json } => {
            emvq_tensor::logging::init_logging(None)?;
            info::run(device, json)
        }
        Command::Bleu(args) => emvq_bleu::run(&args),
        Command::PrepareData { config, runs } => prepare::run(&config, &runs).map(|_| ()),
        Command::TrainTeacher(args) => teacher::train(&args).map(|_| ()),
        Command::TrainNat(args) => nat::train(&args).map(|_| ()),
        Command::BenchNat(args) => {
            emvq_tensor::logging::init_logging(None)?;
            nat::bench::run(&args)
        }
        Command::BenchLatency(args) => {
            emvq_tensor::logging::init_logging(None)?;
            latency::run(&args).map(|_| ())
        }
        Command::Translate(args) => {
            emvq_tensor::logging::init_logging(None)?;
            translate::run(&args)
        }
        Command::Eval(args) => {
            emvq_tensor::logging::init_logging(None)?;
            eval::run(&args).map(|_| ())
        }
        Command::Distill(args) => {
            emvq_tensor::logging::init_logging(None)?;
            distill::run(&args).map(|_| ())
        }
        Command::TrainVqvae(args) => vqvae::train(&args).map(|_| ()),
        Command::EvalVqvae(args) => {
            emvq_tensor::logging::init_logging(None)?;
            vqvae::evaluate(&args).map(|_| ())
        }
        Command::Sample(args) => {
            emvq_tensor::logging::init_logging(None)?;
            vqvae::sample(&args)
        }
        Command::BenchTeacher(args) => {
            emvq_tensor::logging::init_logging(None)?;
            teacher::bench::run(&args)
        }
    }
}
