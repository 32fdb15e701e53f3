//! The `emvq` command: one binary for every stage of the toolkit.
//!
//! `emvq info` describes the LibTorch runtime, `emvq bleu` scores
//! translations; later stages (training,
//! translation, evaluation) add their subcommands here, each a thin layer
//! over a library crate.

mod info;
mod prepare;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use emvq_tensor::DeviceSpec;

#[derive(Parser)]
#[command(name = "emvq", version, about = "Discrete-latent sequence models: VQ-VAE with EM (Roy et al. 2018)")]
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
    }
}
