//! `cargo xtask setup`: LibTorch 2.11.0 from the PyPI wheel `torch==2.11.0`,
//! installed into the git-ignored `.libtorch/python/` of the project.
//!
//! - CPU set (default without an NVIDIA driver): `torch` plus the two CUDA
//!   runtime wheels `libtorch_cpu.so` needs (`--no-deps`, about 1.3 GB).
//! - Full set (`--cuda`, or a detected NVIDIA driver): `torch` with all its
//!   dependencies (about 4.6 GB); it also makes `import torch` work for the
//!   PyTorch side of the benchmarks.
//!
//! A user's own LibTorch (`LIBTORCH=/path`) or Python torch
//! (`LIBTORCH_USE_PYTORCH=1`) is used as it is. When everything is in place,
//! set-up checks two files and returns.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{project_root, run};

pub const TORCH_VERSION: &str = "2.11.0";
const CPU_SET: &[&str] = &[
    "torch==2.11.0",
    "nvidia-cuda-runtime==13.0.96",
    "nvidia-cuda-cupti==13.0.85",
];

/// Which packages to install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Set {
    Cpu,
    Full,
}

impl Set {
    fn name(self) -> &'static str {
        match self {
            Set::Cpu => "cpu",
            Set::Full => "full",
        }
    }
}

/// The project-local install folder (pip `--target`).
pub fn local_python_dir() -> PathBuf {
    project_root().join(".libtorch/python")
}

/// The LibTorch folder builds use (`LIBTORCH`).
pub fn local_libtorch() -> PathBuf {
    local_python_dir().join("torch")
}

fn marker(dir: &Path) -> PathBuf {
    dir.join(".emvq-setup")
}

/// True where an NVIDIA driver is loaded.
pub fn nvidia_driver_present() -> bool {
    Path::new("/proc/driver/nvidia/version").exists()
}

/// Does the user point at a LibTorch of their own?
fn user_libtorch() -> Option<String> {
    if std::env::var_os("LIBTORCH_USE_PYTORCH").is_some() {
        return Some("the Python torch (LIBTORCH_USE_PYTORCH)".into());
    }
    // `.cargo/config.toml` sets LIBTORCH to the local folder for every cargo
    // command, xtask included; only another value is the user's own.
    let value = std::env::var_os("LIBTORCH")?;
    let theirs = PathBuf::from(&value);
    let same = fs::canonicalize(&theirs).ok() == fs::canonicalize(local_libtorch()).ok()
        || theirs == local_libtorch();
    (!same).then(|| format!("LIBTORCH={}", theirs.display()))
}

/// Makes sure a LibTorch 2.11.0 is in place; `want` forces a set, `None`
/// picks the full set where an NVIDIA driver is present.
pub fn ensure(want: Option<Set>) -> Result<()> {
    if let Some(theirs) = user_libtorch() {
        eprintln!("setup: using {theirs}");
        return Ok(());
    }
    let want = want.unwrap_or(if nvidia_driver_present() {
        Set::Full
    } else {
        Set::Cpu
    });
    let dir = local_python_dir();
    let installed = fs::read_to_string(marker(&dir)).unwrap_or_default();
    let have = match installed.trim() {
        "full" => Some(Set::Full),
        "cpu" => Some(Set::Cpu),
        _ => None,
    };
    let lib_present = local_libtorch().join("lib/libtorch_cpu.so").is_file();
    if lib_present && (have == Some(want) || have == Some(Set::Full)) {
        return Ok(());
    }
    install(want, &dir)
}

fn install(set: Set, dir: &Path) -> Result<()> {
    let partial = dir.with_extension("partial");
    if partial.exists() {
        fs::remove_dir_all(&partial).with_context(|| format!("removing {}", partial.display()))?;
    }
    eprintln!(
        "setup: installing LibTorch {TORCH_VERSION} ({} set) into {} ...",
        set.name(),
        dir.display()
    );
    let mut pip = pip_install();
    pip.arg("--target").arg(&partial);
    match set {
        Set::Cpu => pip.arg("--no-deps").args(CPU_SET),
        Set::Full => pip.arg(format!("torch=={TORCH_VERSION}")),
    };
    run(&mut pip).context(
        "pip could not install torch; set-up needs Python 3 with pip and access to PyPI",
    )?;
    if !partial.join("torch/lib/libtorch_cpu.so").is_file() {
        bail!(
            "pip finished but {} has no torch/lib/libtorch_cpu.so",
            partial.display()
        );
    }
    fs::write(marker(&partial), set.name())?;
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing the old {}", dir.display()))?;
    }
    fs::rename(&partial, dir)
        .with_context(|| format!("moving {} into place", partial.display()))?;
    eprintln!("setup: LibTorch ready at {}", local_libtorch().display());
    Ok(())
}

/// `python -m pip install`, quiet, without version or script warnings.
fn pip_install() -> Command {
    let mut pip = Command::new(python());
    pip.args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-warn-script-location",
        "--quiet",
    ]);
    pip
}

/// The Python interpreter: `PYTHON` or `python3`.
pub fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// The git-ignored folder for the Python side of the benchmarks
/// (sacreBLEU, a full `import`-able torch), put on `PYTHONPATH`.
pub fn python_tools_dir() -> PathBuf {
    project_root().join(".pytools")
}

/// Makes sure `module` imports from `.pytools`, installing `requirement`
/// with pip when it does not (e.g. `sacrebleu` / `sacrebleu==2.5.1`).
pub fn ensure_python_tool(module: &str, requirement: &str) -> Result<()> {
    let dir = python_tools_dir();
    let probe = Command::new(python())
        .env("PYTHONPATH", &dir)
        .args(["-c", &format!("import {module}")])
        .output()
        .context("cannot run python3")?;
    if probe.status.success() {
        return Ok(());
    }
    eprintln!(
        "setup: installing {requirement} into {} for the benchmarks ...",
        dir.display()
    );
    let mut pip = pip_install();
    pip.arg("--target").arg(&dir).arg(requirement);
    run(&mut pip)
}
