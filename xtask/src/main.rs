//! `cargo xtask <task>`: the project's tasks, kept thin. It sets LibTorch up,
//! builds and calls the `emvq` binary, and chains stages into pipelines. It
//! never depends on tch, so it builds in seconds on a fresh machine.

mod bundle;
mod distill;
mod fetch_data;
mod orderings;
mod paper_images;
mod pipeline;
mod setup;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "emvq project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install LibTorch 2.11.0 into .libtorch/ (nothing to do when present).
    Setup {
        /// Install the full CUDA set (default where an NVIDIA driver is loaded).
        #[arg(long, conflicts_with = "cpu")]
        cuda: bool,
        /// Install only what the CPU libraries need.
        #[arg(long)]
        cpu: bool,
    },
    /// Set up if needed, then run every test of the workspace.
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// The main job on the bundled default data (~65 minutes on 2 CPU
    /// cores): data preparation → teacher → distillation → NAT with EM on
    /// the distilled targets → latency table and report
    /// (runs/pipeline/report.md). Finished stages are skipped, interrupted
    /// ones resumed.
    Pipeline,
    /// Train every model of the paper's translation table (plain NAT, LT +
    /// semhash, VQ and EM with and without distillation, EM n_c = 4), then
    /// the table; hours on a CPU (the estimate is printed first).
    PaperTable,
    /// The latency table (`emvq bench-latency`, release build); without
    /// arguments over configs/multi30k/latency.toml.
    BenchLatency {
        /// `emvq bench-latency` arguments (--list, --teacher, --nat,
        /// --rescore, --npd, --sentences, --report…).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmark: the paper's orderings (EM ≥ VQ, distilled ≥ not
    /// distilled) over seeds: nat_{em,vq}[_raw].toml trained `--steps` steps
    /// per seed into runs/nat/order_<variant>_<steps>_s<seed>/ (finished runs kept),
    /// scored one pass, table in runs/orderings/. Needs the pipeline's
    /// teacher and distillation; ~25 minutes per pair of runs at 500 steps.
    BenchOrderings {
        /// Some of em, vq, em_raw, vq_raw (default: all four).
        #[arg(long, value_delimiter = ',')]
        variants: Vec<String>,
        #[arg(long, default_value_t = 500)]
        steps: i64,
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        seeds: Vec<u64>,
        /// Runs trained at once; the cores are shared between them.
        #[arg(long, default_value_t = 2)]
        concurrent: usize,
        #[arg(long, default_value = "test_2016_flickr")]
        split: String,
    },
    /// Set up if needed, build, and run `emvq info`.
    Info,
    /// Download the public originals of a data set into data/ (needs a
    /// network), laid out as ../shared/data: multi30k, wmt14, cifar10 or all.
    FetchData {
        which: String,
        #[arg(long, default_value = "data")]
        dest: PathBuf,
    },
    /// Benchmark: BLEU/chrF of newstest2014 against a perturbed copy, emvq
    /// beside sacreBLEU (installed into .pytools).
    BenchBleu,
    /// Benchmark: Multi30k preparation (read, 8k BPE, encode every split).
    BenchData,
    /// Benchmark: VQ and soft EM (4096 × 512 against 4096 codes), forward
    /// and backward, emvq beside PyTorch (installed into .pytools).
    BenchBottleneck,
    /// Train the Transformer teacher (`emvq train-teacher`) into
    /// runs/teacher/<name>/.
    TrainTeacher {
        #[arg(long, default_value = "configs/multi30k/teacher.toml")]
        config: PathBuf,
        /// Extra arguments for `emvq train-teacher` (--name, --resume, --device…).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Train the latent-Transformer NAT (`emvq train-nat`) into
    /// runs/nat/<name>/.
    TrainNat {
        #[arg(long, default_value = "configs/multi30k/nat_em.toml")]
        config: PathBuf,
        /// Extra arguments for `emvq train-nat` (--name, --resume,
        /// --max-minutes, --train-dir, --teacher…).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Sequence-level distillation (`emvq distill`): the teacher's beam
    /// search rewrites the training targets into runs/distill/<name>/;
    /// resumes an interrupted run.
    Distill {
        #[arg(long)]
        teacher: PathBuf,
        /// Further `emvq distill` arguments (--out, --beam, --threads…).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmark: teacher training tokens/s, emvq beside an equivalent
    /// PyTorch script (installed into .pytools), same batches and threads.
    BenchTeacher {
        #[arg(long, default_value = "configs/multi30k/teacher.toml")]
        config: PathBuf,
        /// Extra arguments for `emvq bench-teacher` (--steps, --rounds, --threads…).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Benchmark: CIFAR-10 VQ-VAE training images/s (configs/cifar10/
    /// vqvae_em.toml), emvq beside an equivalent PyTorch script.
    BenchVqvae,
    /// Train a CIFAR-10 VQ-VAE and its latent prior (`emvq train-vqvae`)
    /// into runs/vqvae/<name>/, then evaluate it.
    TrainVqvae {
        #[arg(long, default_value = "configs/cifar10/vqvae_em.toml")]
        config: PathBuf,
        /// Extra arguments for `emvq train-vqvae` (--name, --max-minutes…).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Train VQ and EM VQ-VAEs with the same budget, then write the
    /// side-by-side table and pictures (runs/vqvae/paper_images.md).
    PaperImages {
        #[arg(long, default_value = "configs/cifar10/vqvae_vq.toml")]
        vq: PathBuf,
        #[arg(long, default_value = "configs/cifar10/vqvae_em.toml")]
        em: PathBuf,
        /// Start both runs at once, one LibTorch thread each (unless the
        /// extra arguments set --threads): the same load for both.
        #[arg(long)]
        concurrent: bool,
        /// Extra arguments for both `emvq train-vqvae` runs (e.g.
        /// --max-minutes 8 --prior-minutes 2).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Write dist/emvq-gpu/: release binary, configs and run.sh for a GPU
    /// machine with torch 2.11.0 installed.
    GpuBundle {
        #[arg(long, default_value = "dist/emvq-gpu")]
        out: PathBuf,
        /// Also copy what scripts/gpu_nat_table.sh needs: the teacher run
        /// (final model, config, tokenizer), the distilled corpus and the
        /// Multi30k data.
        #[arg(long)]
        nat_inputs: bool,
    },
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup { cuda, cpu } => setup::ensure(match (cuda, cpu) {
            (true, _) => Some(setup::Set::Full),
            (_, true) => Some(setup::Set::Cpu),
            _ => None,
        }),
        Task::Test { args } => {
            setup::ensure(None)?;
            run(cargo().args(["test", "--workspace"]).args(args))
        }
        Task::Pipeline => pipeline::pipeline(),
        Task::PaperTable => pipeline::paper_table(),
        Task::BenchLatency { args } => {
            setup::ensure(None)?;
            let mut cmd = emvq();
            cmd.arg("bench-latency");
            if args.is_empty() {
                cmd.args(["--list", "configs/multi30k/latency.toml"]);
            }
            run(cmd.args(args))
        }
        Task::BenchOrderings {
            variants,
            steps,
            seeds,
            concurrent,
            split,
        } => {
            setup::ensure(None)?;
            orderings::bench_orderings(&orderings::OrderingsArgs {
                variants,
                steps,
                seeds,
                concurrent,
                split,
            })
        }
        Task::Info => {
            setup::ensure(None)?;
            run(emvq().arg("info"))
        }
        Task::FetchData { which, dest } => {
            fetch_data::fetch_data(&which, &project_root().join(dest))
        }
        Task::BenchBleu => {
            setup::ensure_python_tool("sacrebleu", "sacrebleu==2.5.1")?;
            bench("emvq-bleu", "bench_bleu")
        }
        Task::BenchData => bench("emvq-data", "bench_prepare"),
        Task::BenchBottleneck => {
            setup::ensure(None)?;
            setup::ensure_python_tool("torch", &format!("torch=={}", setup::TORCH_VERSION))?;
            bench("emvq-bottleneck", "bench_bottleneck")
        }
        Task::TrainTeacher { config, args } => {
            setup::ensure(None)?;
            run(emvq()
                .arg("train-teacher")
                .arg("--config")
                .arg(config)
                .args(args))
        }
        Task::TrainNat { config, args } => {
            setup::ensure(None)?;
            run(emvq()
                .arg("train-nat")
                .arg("--config")
                .arg(config)
                .args(args))
        }
        Task::Distill { teacher, args } => distill::distill(&teacher, &args),
        Task::BenchTeacher { config, args } => {
            setup::ensure(None)?;
            setup::ensure_python_tool("torch", &format!("torch=={}", setup::TORCH_VERSION))?;
            let tools = setup::python_tools_dir();
            run(emvq()
                .arg("bench-teacher")
                .arg("--config")
                .arg(config)
                .args(args)
                .env("PYTHONPATH", &tools))
        }
        Task::BenchVqvae => {
            setup::ensure(None)?;
            setup::ensure_python_tool("torch", &format!("torch=={}", setup::TORCH_VERSION))?;
            bench("emvq-vision", "bench_vqvae")
        }
        Task::TrainVqvae { config, args } => {
            setup::ensure(None)?;
            run(emvq()
                .arg("train-vqvae")
                .arg("--config")
                .arg(config)
                .args(args))
        }
        Task::PaperImages {
            vq,
            em,
            concurrent,
            args,
        } => {
            setup::ensure(None)?;
            paper_images::paper_images(&vq, &em, concurrent, &args)
        }
        Task::GpuBundle { out, nat_inputs } => {
            setup::ensure(None)?;
            let out = project_root().join(out);
            bundle::gpu_bundle(&out)?;
            if nat_inputs {
                bundle::add_nat_inputs(&out)?;
            }
            Ok(())
        }
    }
}

/// Runs a crate's benchmark example in release mode.
fn bench(package: &str, example: &str) -> Result<()> {
    let tools = setup::python_tools_dir();
    run(cargo()
        .args([
            "run",
            "--release",
            "--package",
            package,
            "--example",
            example,
        ])
        .env("EMVQ_PYTOOLS", &tools)
        .env("PYTHONPATH", &tools))
}

/// The workspace root (xtask lives one folder below it).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

/// `cargo` run from the workspace root with LIBTORCH pointing at the local
/// install unless the user set their own.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(project_root());
    if std::env::var_os("LIBTORCH_USE_PYTORCH").is_none() && std::env::var_os("LIBTORCH").is_none()
    {
        cmd.env("LIBTORCH", setup::local_libtorch());
    }
    cmd
}

/// The release `emvq` binary, run through cargo so it is built first.
pub fn emvq() -> Command {
    let mut cmd = cargo();
    cmd.args(["run", "--quiet", "--release", "--package", "emvq", "--"]);
    cmd
}

/// Runs a command, failing with its command line when it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CI must run exactly the test command README.md gives a new user.
    #[test]
    fn ci_runs_the_readme_test_command() {
        let root = project_root();
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
        let test_command = readme
            .lines()
            .find(|l| l.contains("# every test"))
            .and_then(|l| l.split('#').next())
            .map(str::trim)
            .expect("README.md names its test command");
        assert!(
            ci.lines().any(|l| l.trim() == test_command),
            ".ci/run does not run `{test_command}`"
        );
    }
}
