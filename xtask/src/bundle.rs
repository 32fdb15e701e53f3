//! `cargo xtask gpu-bundle`: a folder with the release `emvq` binary, the
//! configs, the scripts and `run.sh`, which points the binary at an existing
//! torch 2.11.0 (+cu130) installation, so the same binary runs on a GPU
//! machine where nothing can be installed. `--nat-inputs` adds what
//! `scripts/gpu_nat_table.sh` trains from (teacher, distilled corpus, data).

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context, Result};

use crate::{cargo, project_root, run};

const LIMIT_BYTES: u64 = 60 * 1024 * 1024;

const RUN_SH: &str = r#"#!/usr/bin/env bash
# Runs the bundled emvq on an existing torch 2.11.0 installation: the torch/
# folder named by EMVQ_TORCH, else the one `import torch` finds with
# EMVQ_PYTHON, /opt/torch/.venv/bin/python or python3.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
torch_dir=${EMVQ_TORCH:-}
if [ -z "$torch_dir" ]; then
  for py in ${EMVQ_PYTHON:-} /opt/torch/.venv/bin/python python3; do
    command -v "$py" >/dev/null 2>&1 || continue
    if torch_dir=$("$py" -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null); then break; fi
    torch_dir=""
  done
fi
if [ ! -f "$torch_dir/lib/libtorch_cpu.so" ]; then
  echo "run.sh: no torch installation found; set EMVQ_TORCH to its torch/ folder" >&2
  exit 1
fi
version=$(sed -n "s/^__version__ = '\(.*\)'/\1/p" "$torch_dir/version.py" 2>/dev/null || true)
case "$version" in 2.11.0*) ;; *) echo "run.sh: warning: torch $version at $torch_dir, emvq needs 2.11.0" >&2 ;; esac
export LD_LIBRARY_PATH="$torch_dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cd "$here"
exec "$here/bin/emvq" "$@"
"#;

pub fn gpu_bundle(out: &Path) -> Result<()> {
    run(cargo().args(["build", "--release", "--package", "emvq"]))?;
    if out.exists() {
        fs::remove_dir_all(out).with_context(|| format!("removing {}", out.display()))?;
    }
    fs::create_dir_all(out.join("bin"))?;
    let binary = out.join("bin/emvq");
    fs::copy(project_root().join("target/release/emvq"), &binary)?;
    run(Command::new("strip").arg(&binary)).context("strip")?;
    copy_dir(&project_root().join("configs"), &out.join("configs"))?;
    copy_dir(&project_root().join("scripts"), &out.join("scripts"))?;
    let script = out.join("run.sh");
    fs::write(&script, RUN_SH)?;
    run(Command::new("chmod").arg("+x").arg(&script))?;
    let size = dir_size(out)?;
    eprintln!(
        "gpu-bundle: {} ({:.1} MiB); on the GPU machine: {}/run.sh info --device cuda",
        out.display(),
        size as f64 / 1048576.0,
        out.display()
    );
    ensure!(
        size < LIMIT_BYTES,
        "the bundle is {size} bytes, over the 60 MiB limit"
    );
    Ok(())
}

/// Copies the CPU pipeline's outputs the GPU NATs start from, and the
/// Multi30k data, into the bundle (paths as the configs name them).
pub fn add_nat_inputs(out: &Path) -> Result<()> {
    let root = project_root();
    let teacher = root.join("runs/teacher/multi30k");
    let distill = root.join("runs/distill/multi30k");
    let data = emvq_data_dir(&root)?;
    let copies: [(&Path, &[&str], &str); 3] = [
        (
            &teacher,
            &["config.toml", "model.safetensors", "tokenizer.json"],
            "runs/teacher/multi30k",
        ),
        (
            &distill,
            &["train.en", "train.de", "record.json", "settings.json"],
            "runs/distill/multi30k",
        ),
        (&data, &[], "data/multi30k"),
    ];
    for (from, files, to) in copies {
        let target = out.join(to);
        fs::create_dir_all(&target)?;
        if files.is_empty() {
            copy_dir(from, &target)?;
        }
        for file in files {
            let source = from.join(file);
            ensure!(
                source.is_file(),
                "{} is missing: run `cargo xtask pipeline` first",
                source.display()
            );
            fs::copy(&source, target.join(file))
                .with_context(|| format!("copying {}", source.display()))?;
        }
    }
    let size = dir_size(out)?;
    eprintln!(
        "gpu-bundle: with the NAT inputs {:.1} MiB",
        size as f64 / 1048576.0
    );
    ensure!(
        size < LIMIT_BYTES,
        "the bundle is {size} bytes, over the 60 MiB limit"
    );
    Ok(())
}

/// The Multi30k folder: the project's `data/multi30k`, else `../shared/data/multi30k`.
fn emvq_data_dir(root: &Path) -> Result<std::path::PathBuf> {
    [
        root.join("data/multi30k"),
        root.join("../shared/data/multi30k"),
    ]
    .into_iter()
    .find(|d| d.join("train.en.gz").is_file())
    .context("no Multi30k data in data/multi30k or ../shared/data/multi30k")
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        total += if entry.file_type()?.is_dir() {
            dir_size(&entry.path())?
        } else {
            entry.metadata()?.len()
        };
    }
    Ok(total)
}
