//! `cargo xtask paper-images`: the CIFAR-10 comparison of Roy et al. 2018
//! (arXiv 1805.11063) — a VQ and an EM VQ-VAE trained with the same budget,
//! then `emvq eval-vqvae --table runs/vqvae/paper_images.md` (bits/dim with
//! a uniform and a learned prior, perplexity, dead codes, pictures, and the
//! two sample grids joined side by side).
//!
//! By default the runs go one after the other with the configs' threads.
//! With `--concurrent` they start together, one LibTorch thread each (unless
//! the extra arguments set `--threads`), so both see the same machine load
//! during the same wall-clock budget.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::{cargo, emvq, project_root, run};

/// Trains `paper_vq` and `paper_em` and writes the table.
pub fn paper_images(vq: &Path, em: &Path, concurrent: bool, args: &[String]) -> Result<()> {
    let runs = [(vq, "paper_vq"), (em, "paper_em")];
    if concurrent {
        run(cargo().args(["build", "--release", "--package", "emvq"]))?;
        let binary = project_root().join("target/release/emvq");
        let mut children = Vec::new();
        for (config, name) in runs {
            let mut cmd = std::process::Command::new(&binary);
            cmd.current_dir(project_root())
                .arg("train-vqvae")
                .arg("--config")
                .arg(config)
                .args(["--name", name]);
            if !args
                .iter()
                .any(|a| a == "--threads" || a.starts_with("--threads="))
            {
                cmd.args(["--threads", "1"]);
            }
            cmd.args(args);
            let child = cmd
                .spawn()
                .with_context(|| format!("cannot start {cmd:?}"))?;
            children.push((name, child));
        }
        for (name, mut child) in children {
            let status = child.wait()?;
            if !status.success() {
                bail!("train-vqvae of {name} failed with {status}");
            }
        }
    } else {
        for (config, name) in runs {
            run(emvq()
                .arg("train-vqvae")
                .arg("--config")
                .arg(config)
                .args(["--name", name])
                .args(args))?;
        }
    }
    run(emvq()
        .args([
            "eval-vqvae",
            "--reuse",
            "--table",
            "runs/vqvae/paper_images.md",
        ])
        .args(
            runs.iter()
                .flat_map(|(_, name)| ["--run".to_string(), format!("runs/vqvae/{name}")]),
        ))
}
