//! End-to-end test of the CIFAR-10 VQ-VAE stage (Roy et al. 2018, arXiv
//! 1805.11063) through the `emvq` binary, on a tiny model and a few real
//! CIFAR-10 images: `train-vqvae` writes its run directory (models,
//! checkpoints, metrics, results.json, pictures); `eval-vqvae` recomputes the
//! same bits/dim and writes a comparison table; `sample` with one seed writes
//! the same PNG twice, another seed a different one; a misspelt key fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn emvq(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_emvq"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .output()
        .expect("emvq runs")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "emvq failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn config(data: &Path, kind: &str) -> String {
    format!(
        r#"name = "tiny_{kind}"
device = "cpu"
seed = 3
threads = 1
[data]
dir = "{}"
train_images = 64
valid_images = 16
test_images = 12
[model]
hidden = 8
res_blocks = 1
res_hidden = 4
latent_dim = 8
[model.bottleneck]
kind = "{kind}"
bits = 4
n_c = 2
init = "kmeans"
[train]
batch_size = 8
lr = 1e-3
warmup_steps = 2
adam_beta2 = 0.999
clip_norm = 1.0
max_steps = 4
log_every = 2
checkpoint_every = 3
[prior]
d_model = 16
heads = 2
d_ff = 32
layers = 1
dropout = 0.0
[prior_train]
batch_size = 8
lr = 1e-3
warmup_steps = 2
adam_beta2 = 0.98
clip_norm = 1.0
max_steps = 3
log_every = 1
checkpoint_every = 10
[sample]
n = 4
seed = 7
temperature = 1.0
"#,
        data.display()
    )
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn train_eval_sample_on_a_tiny_model() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let data = root.join("../shared/data/cifar10");
    let data = std::env::var_os("EMVQ_SHARED_DATA")
        .map(|d| PathBuf::from(d).join("cifar10"))
        .unwrap_or(data);
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    for kind in ["vq", "em"] {
        std::fs::write(cwd.join(format!("{kind}.toml")), config(&data, kind)).unwrap();
        ok(emvq(
            &["train-vqvae", "--config", &format!("{kind}.toml")],
            cwd,
        ));
    }
    let run = cwd.join("runs/vqvae/tiny_em");
    for f in [
        "config.toml",
        "vqvae.safetensors",
        "prior.safetensors",
        "checkpoints/vqvae-last.safetensors",
        "checkpoints/prior-last.safetensors",
        "reconstructions.png",
        "samples.png",
        "usage_slice0.png",
        "usage_slice1.png",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.matches("\"train_vqvae\"").count(), 2);
    assert_eq!(metrics.matches("\"train_prior\"").count(), 3);
    let results = json(&run.join("results.json"));
    assert_eq!(results["test_images"], 12);
    assert_eq!(results["kind"], "em");
    let learned = results["bits_per_dim_learned_prior"].as_f64().unwrap();
    let uniform = results["bits_per_dim_uniform_prior"].as_f64().unwrap();
    let recon = results["reconstruction_bits_per_dim"].as_f64().unwrap();
    let prior = results["prior_bits_per_dim"].as_f64().unwrap();
    assert!((learned - (recon + prior)).abs() < 1e-9);
    // The uniform bound adds exactly 64 · n_c · bits / 3072.
    assert!((uniform - (recon + 64.0 * 2.0 * 4.0 / 3072.0)).abs() < 1e-9);
    assert!(recon > 1.0 && recon < 9.0, "{recon}");
    assert_eq!(results["codebook_perplexity"].as_array().unwrap().len(), 2);

    // eval-vqvae recomputes the same figures; --table compares both runs.
    let out = ok(emvq(
        &[
            "eval-vqvae",
            "--run",
            "runs/vqvae/tiny_vq",
            "--run",
            "runs/vqvae/tiny_em",
            "--table",
            "table.md",
        ],
        cwd,
    ));
    assert!(out.contains("bits/dim"), "{out}");
    let again = json(&run.join("results.json"));
    let same = |k: &str| (again[k].as_f64().unwrap() - results[k].as_f64().unwrap()).abs() < 1e-6;
    assert!(same("bits_per_dim_learned_prior") && same("bits_per_dim_uniform_prior"));
    let table = std::fs::read_to_string(cwd.join("table.md")).unwrap();
    assert!(table.contains("tiny_vq") && table.contains("tiny_em"));
    assert!(cwd.join("table_samples.png").is_file());

    // The validation split: the 16 images held out from the end of the
    // training split, scored into results_valid.json (no pictures), with the
    // soft-EM posterior's health.
    let out = ok(emvq(
        &[
            "eval-vqvae",
            "--run",
            "runs/vqvae/tiny_em",
            "--split",
            "valid",
        ],
        cwd,
    ));
    assert!(out.contains("Valid"), "{out}");
    let valid = json(&run.join("results_valid.json"));
    assert_eq!(valid["test_images"], 16);
    assert_eq!(valid["split"], "valid");
    assert!(valid["pictures"].as_object().unwrap().is_empty());
    let entropy = valid["posterior_entropy_nats"].as_f64().unwrap();
    let distinct = valid["posterior_distinct_codes"].as_f64().unwrap();
    assert!((0.0..=16f64.ln() + 1e-6).contains(&entropy), "{entropy}");
    assert!((1.0..=10.0).contains(&distinct), "{distinct}");
    assert_eq!(results["split"], "test");

    // Sampling with a fixed seed repeats.
    let sample = |seed: &str, out: &str| {
        ok(emvq(
            &[
                "sample",
                "--run",
                "runs/vqvae/tiny_em",
                "--n",
                "8",
                "--seed",
                seed,
                "--out",
                out,
            ],
            cwd,
        ));
        std::fs::read(cwd.join(out)).unwrap()
    };
    let (a, b, c) = (
        sample("5", "a.png"),
        sample("5", "b.png"),
        sample("6", "c.png"),
    );
    assert_eq!(a, b);
    assert_ne!(a, c);

    // A misspelt key is an error naming it.
    std::fs::write(
        cwd.join("bad.toml"),
        config(&data, "vq").replace("hidden = 8", "hiden = 8"),
    )
    .unwrap();
    let out = emvq(&["train-vqvae", "--config", "bad.toml"], cwd);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("hiden"));

    // Holding out every training image is refused, naming the key.
    std::fs::write(
        cwd.join("greedy.toml"),
        config(&data, "vq")
            .replace("valid_images = 16", "valid_images = 50000")
            .replace("tiny_vq", "greedy"),
    )
    .unwrap();
    let out = emvq(&["train-vqvae", "--config", "greedy.toml"], cwd);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("valid_images"));
}
