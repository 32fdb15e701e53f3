//! `cargo xtask bench-orderings`: the orderings of the paper's translation
//! table (Roy et al. 2018, arXiv 1805.11063, Table 3) — EM ≥ VQ, distilled ≥
//! not distilled — measured over several seeds at one step budget.
//!
//! One run per (variant, seed): `configs/multi30k/nat_{em,vq}[_raw].toml`
//! with `name`, every `seed` line and `threads` rewritten, written to
//! `runs/orderings/configs/` and trained with `emvq train-nat --max-steps N`
//! into `runs/nat/order_<variant>_<N>_s<seed>/`, `concurrent` runs at a time
//! (the machine's cores shared between them). A finished run (its
//! `model.safetensors` exists) is not trained again. Every run is then
//! scored one pass on a test split (`emvq eval`), and the table — per run
//! and per variant (mean over seeds): test BLEU, validation BLEU and
//! codebook perplexity of the final averaged model — goes to
//! `runs/orderings/table.md` and `table.json`, each ordering judged on the
//! seed means beside the spread between seeds. `--variants` picks some of
//! the four; an ordering between variants not measured is left out.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::fetch_data::write_atomic;
use crate::{cargo, emvq, project_root, run};

/// The four models whose orderings the paper's table reports.
pub const VARIANTS: [(&str, &str); 4] = [
    ("em", "configs/multi30k/nat_em.toml"),
    ("vq", "configs/multi30k/nat_vq.toml"),
    ("em_raw", "configs/multi30k/nat_em_raw.toml"),
    ("vq_raw", "configs/multi30k/nat_vq_raw.toml"),
];

/// What `cargo xtask bench-orderings` was asked for.
pub struct OrderingsArgs {
    /// Names from [`VARIANTS`]; empty: all four.
    pub variants: Vec<String>,
    pub steps: i64,
    pub seeds: Vec<u64>,
    pub concurrent: usize,
    pub split: String,
}

/// The run directory name of one (variant, step budget, seed): runs of
/// different budgets never stand in for each other.
pub fn run_name(variant: &str, steps: i64, seed: u64) -> String {
    format!("order_{variant}_{steps}_s{seed}")
}

/// The (variant, template config) pairs asked for, in [`VARIANTS`] order;
/// an unknown name is an error that lists the known ones.
pub fn selected_variants(names: &[String]) -> Result<Vec<(&'static str, &'static str)>> {
    for name in names {
        if !VARIANTS.iter().any(|(v, _)| v == name) {
            let known: Vec<&str> = VARIANTS.iter().map(|(v, _)| *v).collect();
            bail!(
                "--variants: unknown variant `{name}` (known: {})",
                known.join(", ")
            );
        }
    }
    Ok(VARIANTS
        .iter()
        .filter(|(v, _)| names.is_empty() || names.iter().any(|n| n == v))
        .copied()
        .collect())
}

/// A config with its top-level `name`, every `seed` line (the run's and the
/// data order's) and `threads` replaced; comments and everything else kept.
pub fn derive_config(text: &str, name: &str, seed: u64, threads: usize) -> Result<String> {
    let (mut named, mut seeded, mut threaded) = (false, false, false);
    let mut out = String::with_capacity(text.len() + 64);
    let mut top_level = true;
    for line in text.lines() {
        let code = line.split('#').next().unwrap_or("").trim();
        if code.starts_with('[') {
            top_level = false;
        }
        let key = code.split_once('=').map(|(k, _)| k.trim());
        let replaced = match key {
            Some("name") if top_level => {
                named = true;
                format!("name = \"{name}\"")
            }
            Some("threads") if top_level => {
                threaded = true;
                format!("threads = {threads}")
            }
            Some("seed") => {
                seeded = true;
                format!("seed = {seed}")
            }
            _ => line.to_string(),
        };
        out.push_str(&replaced);
        out.push('\n');
    }
    if !(named && seeded && threaded) {
        bail!("the config has no top-level `name`, `threads` or no `seed` line to replace");
    }
    Ok(out)
}

/// The mean and the spread (max − min) of some values.
pub fn mean_and_spread(values: &[f64]) -> (f64, f64) {
    let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
    let max = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let min = values.iter().cloned().fold(f64::INFINITY, f64::min);
    (mean, if values.is_empty() { 0.0 } else { max - min })
}

/// One ordering of the paper's table, judged on the means over seeds.
pub struct Ordering {
    pub claim: &'static str,
    pub better: &'static str,
    pub worse: &'static str,
}

pub const ORDERINGS: [Ordering; 4] = [
    Ordering {
        claim: "EM ≥ VQ, distilled",
        better: "em",
        worse: "vq",
    },
    Ordering {
        claim: "EM ≥ VQ, not distilled",
        better: "em_raw",
        worse: "vq_raw",
    },
    Ordering {
        claim: "distilled ≥ not distilled, EM",
        better: "em",
        worse: "em_raw",
    },
    Ordering {
        claim: "distilled ≥ not distilled, VQ",
        better: "vq",
        worse: "vq_raw",
    },
];

/// The last `"kind": "final"` record of a run's metrics.jsonl (the averaged
/// model on the validation set).
fn final_record(run_dir: &Path) -> Result<Value> {
    let path = run_dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut last = None;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
        if record["kind"] == "final" {
            last = Some(record);
        }
    }
    last.with_context(|| format!("{} has no final record", path.display()))
}

/// The test BLEU `emvq eval` stored in a run's results.json.
fn test_bleu(run_dir: &Path, split: &str) -> Result<f64> {
    let path = run_dir.join("results.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let results: Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    results[split]["bleu"]["score"]
        .as_f64()
        .with_context(|| format!("{} has no {split}.bleu.score", path.display()))
}

fn first(values: &Value) -> Option<f64> {
    values
        .as_array()
        .and_then(|a| a.first())
        .and_then(Value::as_f64)
}

/// Trains what is missing, scores every run, writes the table.
pub fn bench_orderings(args: &OrderingsArgs) -> Result<()> {
    if args.seeds.is_empty() || args.concurrent == 0 || args.steps <= 0 {
        bail!("bench-orderings needs at least one seed, --concurrent ≥ 1 and --steps ≥ 1");
    }
    let variants = selected_variants(&args.variants)?;
    let root = project_root();
    for needed in [
        "runs/teacher/multi30k/model.safetensors",
        "runs/distill/multi30k/train.de",
    ] {
        if !root.join(needed).is_file() {
            bail!(
                "{needed} is missing: run `cargo xtask pipeline` first (teacher and distillation)"
            );
        }
    }
    let out = root.join("runs/orderings");
    std::fs::create_dir_all(out.join("configs"))?;
    std::fs::create_dir_all(out.join("logs"))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    let mut pending: Vec<(String, &str, u64)> = Vec::new(); // (run name, template, seed)
    for &seed in &args.seeds {
        for &(variant, template) in &variants {
            let name = run_name(variant, args.steps, seed);
            if root
                .join("runs/nat")
                .join(&name)
                .join("model.safetensors")
                .is_file()
            {
                eprintln!("bench-orderings: {name} is trained, kept");
            } else {
                pending.push((name, template, seed));
            }
        }
    }
    let minutes_per_run = args.steps as f64 * 3.1 / 60.0; // 3.06 s a step measured with 1 thread beside another run
    let rounds = pending.len().div_ceil(args.concurrent);
    eprintln!(
        "bench-orderings: {} runs to train, {} at a time: about {:.0} minutes on a 2-core CPU",
        pending.len(),
        args.concurrent,
        rounds as f64 * minutes_per_run
    );
    if !pending.is_empty() {
        run(cargo().args(["build", "--release", "--package", "emvq"]))?;
    }
    let binary = root.join("target/release/emvq");
    for round in pending.chunks(args.concurrent) {
        let threads = (cores / round.len()).max(1);
        let mut children: Vec<(String, Child)> = Vec::new();
        for (name, template, seed) in round {
            let template_path = root.join(template);
            let text = std::fs::read_to_string(&template_path)
                .with_context(|| format!("cannot read {}", template_path.display()))?;
            let config = derive_config(&text, name, *seed, threads)
                .with_context(|| format!("config {}", template_path.display()))?;
            let config_path = out.join("configs").join(format!("{name}.toml"));
            write_atomic(&config_path, config.as_bytes())?;
            let log_path = out.join("logs").join(format!("{name}.log"));
            let log = std::fs::File::create(&log_path)
                .with_context(|| format!("cannot create {}", log_path.display()))?;
            let mut cmd = Command::new(&binary);
            cmd.current_dir(&root)
                .arg("train-nat")
                .arg("--config")
                .arg(&config_path)
                .args([
                    "--max-steps",
                    &args.steps.to_string(),
                    "--max-minutes",
                    "10000",
                ])
                .stdout(Stdio::from(log.try_clone()?))
                .stderr(Stdio::from(log));
            let run_dir = root.join("runs/nat").join(name);
            if run_dir.join("checkpoints").is_dir() {
                cmd.arg("--resume");
            }
            eprintln!(
                "bench-orderings: training {name} ({threads} threads; log {})",
                log_path.display()
            );
            let child = cmd
                .spawn()
                .with_context(|| format!("cannot start {cmd:?}"))?;
            children.push((name.clone(), child));
        }
        for (name, mut child) in children {
            let status = child.wait()?;
            if !status.success() {
                bail!(
                    "train-nat of {name} failed with {status}; see runs/orderings/logs/{name}.log"
                );
            }
        }
    }

    let mut rows = Vec::new();
    for &(variant, _) in &variants {
        for &seed in &args.seeds {
            let name = run_name(variant, args.steps, seed);
            let run_dir = root.join("runs/nat").join(&name);
            let bleu = match test_bleu(&run_dir, &args.split) {
                Ok(bleu) => bleu,
                Err(_) => {
                    run(emvq().arg("eval").arg("--run").arg(&run_dir).args([
                        "--split",
                        &args.split,
                        "--latency-sentences",
                        "0",
                    ]))?;
                    test_bleu(&run_dir, &args.split)?
                }
            };
            let record = final_record(&run_dir)?;
            rows.push(json!({
                "variant": variant,
                "seed": seed,
                "run": format!("runs/nat/{name}"),
                "steps": record["step"],
                "test_bleu": bleu,
                "valid_bleu": record["bleu_greedy"],
                "code_perplexity": first(&record["code_perplexity"]),
                "codes_used": record["codes_used"].as_array().and_then(|a| a.first()).cloned(),
            }));
        }
    }
    let table = orderings_table(&rows, &args.split);
    write_atomic(
        &out.join("table.json"),
        serde_json::to_string_pretty(&table)?.as_bytes(),
    )?;
    let markdown = markdown(&table, args);
    write_atomic(&out.join("table.md"), markdown.as_bytes())?;
    println!("{markdown}");
    Ok(())
}

/// The sample standard deviation of some values (0 for fewer than two).
pub fn std_dev(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let ss: f64 = values.iter().map(|v| (v - mean).powi(2)).sum();
    (ss / (values.len() - 1) as f64).sqrt()
}

/// Per-variant means and spreads and the judged orderings, from the rows.
/// Only the variants that have rows appear; an ordering appears when both
/// of its variants do.
pub fn orderings_table(rows: &[Value], split: &str) -> Value {
    let values = |variant: &str, key: &str| -> Vec<f64> {
        rows.iter()
            .filter(|r| r["variant"] == variant)
            .filter_map(|r| r[key].as_f64())
            .collect()
    };
    let mut variants = serde_json::Map::new();
    for (variant, config) in VARIANTS {
        if !rows.iter().any(|r| r["variant"] == variant) {
            continue;
        }
        let mut entry = json!({"config": config});
        for key in ["test_bleu", "valid_bleu", "code_perplexity"] {
            let vals = values(variant, key);
            let (mean, spread) = mean_and_spread(&vals);
            entry[key] =
                json!({"mean": mean, "spread": spread, "std": std_dev(&vals), "n": vals.len()});
        }
        variants.insert(variant.to_string(), entry);
    }
    let orderings: Vec<Value> = ORDERINGS
        .iter()
        .filter(|o| variants.contains_key(o.better) && variants.contains_key(o.worse))
        .map(|o| {
            let stat = |variant: &str, key: &str| {
                variants[variant]["test_bleu"][key]
                    .as_f64()
                    .unwrap_or(f64::NAN)
            };
            let (better, worse) = (stat(o.better, "mean"), stat(o.worse, "mean"));
            let spread = stat(o.better, "spread").max(stat(o.worse, "spread"));
            // The standard error of the difference of two independent means.
            let std_error = [o.better, o.worse]
                .iter()
                .map(|v| stat(v, "std").powi(2) / stat(v, "n").max(1.0))
                .sum::<f64>()
                .sqrt();
            json!({
                "claim": o.claim,
                "better": o.better,
                "worse": o.worse,
                "difference": better - worse,
                "largest_seed_spread": spread,
                "std_error": std_error,
                "holds": better >= worse,
                "beyond_seed_spread": (better - worse).abs() > spread,
            })
        })
        .collect();
    json!({"split": split, "runs": rows, "variants": variants, "orderings": orderings})
}

fn markdown(table: &Value, args: &OrderingsArgs) -> String {
    let seeds: Vec<String> = args.seeds.iter().map(|s| s.to_string()).collect();
    let mut md = format!(
        "# The paper's orderings: {} steps, seeds {}, BLEU one pass on {}\n\n\
         `cargo xtask bench-orderings --steps {} --seeds {}{}`\n\n\
         | run | steps | test BLEU | valid BLEU | codebook perplexity | codes used |\n\
         | --- | --- | --- | --- | --- | --- |\n",
        args.steps,
        seeds.join(", "),
        args.split,
        args.steps,
        seeds.join(","),
        if args.variants.is_empty() {
            String::new()
        } else {
            format!(" --variants {}", args.variants.join(","))
        },
    );
    let num = |v: &Value| v.as_f64().map_or("–".to_string(), |x| format!("{x:.2}"));
    for r in table["runs"].as_array().into_iter().flatten() {
        md += &format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r["run"].as_str().unwrap_or(""),
            r["steps"],
            num(&r["test_bleu"]),
            num(&r["valid_bleu"]),
            num(&r["code_perplexity"]),
            r["codes_used"],
        );
    }
    md += "\n| variant | test BLEU mean (spread, std) | valid BLEU mean (spread) | perplexity mean |\n\
           | --- | --- | --- | --- |\n";
    for (variant, v) in table["variants"].as_object().into_iter().flatten() {
        md += &format!(
            "| {variant} | {} ({}, {}) | {} ({}) | {} |\n",
            num(&v["test_bleu"]["mean"]),
            num(&v["test_bleu"]["spread"]),
            num(&v["test_bleu"]["std"]),
            num(&v["valid_bleu"]["mean"]),
            num(&v["valid_bleu"]["spread"]),
            num(&v["code_perplexity"]["mean"]),
        );
    }
    md += "\n| ordering | difference of means (test BLEU) | its standard error | largest seed spread | holds | beyond the seed spread |\n\
           | --- | --- | --- | --- | --- | --- |\n";
    for o in table["orderings"].as_array().into_iter().flatten() {
        md += &format!(
            "| {} | {:+.2} | {} | {} | {} | {} |\n",
            o["claim"].as_str().unwrap_or(""),
            o["difference"].as_f64().unwrap_or(f64::NAN),
            num(&o["std_error"]),
            num(&o["largest_seed_spread"]),
            if o["holds"] == true { "yes" } else { "no" },
            if o["beyond_seed_spread"] == true {
                "yes"
            } else {
                "no"
            },
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table row of one run with the same test and validation BLEU.
    fn row(variant: &str, seed: u64, bleu: f64) -> Value {
        json!({"variant": variant, "seed": seed, "test_bleu": bleu,
               "valid_bleu": bleu, "code_perplexity": 10.0})
    }

    #[test]
    fn derived_configs_change_only_name_seeds_and_threads() {
        let template = "name = \"multi30k_em\"  # a comment\nseed = 1\nthreads = 0\n\n\
                        [data]\nseed = 1\nname_like = 3\n[model]\nd_model = 256\n";
        let derived = derive_config(template, "order_em_s2", 2, 1).unwrap();
        assert_eq!(
            derived,
            "name = \"order_em_s2\"\nseed = 2\nthreads = 1\n\n\
             [data]\nseed = 2\nname_like = 3\n[model]\nd_model = 256\n"
        );
        assert!(derive_config("[data]\nseed = 1\n", "x", 1, 1).is_err());
    }

    #[test]
    fn every_shipped_variant_config_can_be_derived() {
        for (variant, config) in VARIANTS {
            let text = std::fs::read_to_string(project_root().join(config)).unwrap();
            let derived = derive_config(&text, &run_name(variant, 500, 7), 7, 1).unwrap();
            assert_eq!(
                crate::pipeline::config_name(&derived).as_deref(),
                Some(format!("order_{variant}_500_s7").as_str())
            );
            assert_eq!(derived.matches("seed = 7").count(), 2, "{config}");
        }
    }

    #[test]
    fn orderings_are_judged_on_seed_means_against_the_spread() {
        let rows = vec![
            row("em", 1, 30.0),
            row("em", 2, 32.0), // mean 31, spread 2
            row("vq", 1, 30.5),
            row("vq", 2, 30.5), // mean 30.5: EM ahead by 0.5, within the spread 2
            row("em_raw", 1, 20.0),
            row("em_raw", 2, 21.0),
            row("vq_raw", 1, 22.0),
            row("vq_raw", 2, 22.0),
        ];
        let table = orderings_table(&rows, "test");
        let o = &table["orderings"];
        assert_eq!(o[0]["holds"], true);
        assert_eq!(o[0]["beyond_seed_spread"], false);
        assert!((o[0]["difference"].as_f64().unwrap() - 0.5).abs() < 1e-9);
        assert_eq!(o[1]["holds"], false); // 20.5 < 22
        assert_eq!(o[1]["beyond_seed_spread"], true);
        assert_eq!(o[2]["holds"], true);
        assert_eq!(o[2]["beyond_seed_spread"], true);
        assert!(
            (table["variants"]["em"]["test_bleu"]["spread"]
                .as_f64()
                .unwrap()
                - 2.0)
                .abs()
                < 1e-9
        );
    }

    #[test]
    fn variants_are_picked_by_name_in_table_order() {
        let picked = selected_variants(&["vq".into(), "em".into()]).unwrap();
        let names: Vec<&str> = picked.iter().map(|(v, _)| *v).collect();
        assert_eq!(names, ["em", "vq"]);
        assert_eq!(selected_variants(&[]).unwrap().len(), VARIANTS.len());
        let err = selected_variants(&["em".into(), "vqq".into()]).unwrap_err();
        assert!(err.to_string().contains("`vqq`"), "{err}");
        assert_ne!(run_name("em", 500, 1), run_name("em", 1000, 1));
    }

    #[test]
    fn only_measured_variants_are_judged_with_a_standard_error() {
        // EM 30, 32 (std √2), VQ 31, 31 (std 0): difference 0, standard error 1.
        let rows = vec![
            row("em", 1, 30.0),
            row("em", 2, 32.0),
            row("vq", 1, 31.0),
            row("vq", 2, 31.0),
        ];
        let table = orderings_table(&rows, "test");
        let orderings = table["orderings"].as_array().unwrap();
        assert_eq!(orderings.len(), 1);
        assert_eq!(orderings[0]["claim"], "EM ≥ VQ, distilled");
        assert!((orderings[0]["std_error"].as_f64().unwrap() - 1.0).abs() < 1e-9);
        assert!(table["variants"].get("em_raw").is_none());
        assert!((std_dev(&[30.0, 32.0]) - 2f64.sqrt()).abs() < 1e-12);
        assert_eq!(std_dev(&[5.0]), 0.0);
    }
}
