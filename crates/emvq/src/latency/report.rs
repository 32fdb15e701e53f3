//! The pipeline's final report (`emvq bench-latency --report DIR`, run by
//! `cargo xtask pipeline` into `runs/pipeline/`): `report.md` with the
//! latency table, the distillation record, and per run the loss curves
//! (`<run>_loss.png`: training loss in blue, validation loss in orange,
//! against the step) and, for latent NATs, the codebook perplexity over
//! training (`<run>_code_ppl.png`) and the code usage on the test split's
//! gold targets (`<run>_code_usage.png`, one bar per code, tallest first,
//! unused codes as red ticks).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use emvq_bottleneck::CodeUsage;
use emvq_data::prepare::encode_corpus;
use emvq_data::read_parallel;
use emvq_tensor::fsutil::write_atomic;
use emvq_vision::picture::{hstack, usage_chart, write_png};

use super::plot::{line_plot, Series, PALETTE};
use super::{LatencyList, Table};
use crate::nat::pad_rows;
use crate::nat_run::{load_nat_run, NatNet};

/// `(step, value)` of `key` in the records of `kind` ("train", "valid") of
/// a run's `metrics.jsonl` (a list value gives its mean).
pub fn metric_series(run: &Path, kind: &str, key: &str) -> Vec<(f64, f64)> {
    let Ok(text) = std::fs::read_to_string(run.join("metrics.jsonl")) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| v["kind"].as_str() == Some(kind))
        .filter_map(|v| {
            let step = v["step"].as_f64()?;
            let value = match &v[key] {
                serde_json::Value::Array(a) => {
                    let xs: Vec<f64> = a.iter().filter_map(serde_json::Value::as_f64).collect();
                    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)?
                }
                other => other.as_f64()?,
            };
            Some((step, value))
        })
        .collect()
}

fn stem(run: &Path) -> String {
    let parent = run
        .parent()
        .and_then(|p| p.file_name())
        .map(|s| s.to_string_lossy().to_string());
    let name = run
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    parent.map_or(name.clone(), |p| format!("{p}_{name}"))
}

/// Plots `series` into `dir/file`; returns the markdown that shows it.
fn plot(dir: &Path, file: &str, title: &str, series: Vec<Series>) -> Result<String> {
    let Some((picture, r)) = line_plot(&series, 640, 320) else {
        return Ok(format!("{title}: nothing logged.\n\n"));
    };
    write_png(&dir.join(file), &picture)?;
    let legend: Vec<String> = series
        .iter()
        .map(|s| {
            format!(
                "{} rgb({}, {}, {})",
                s.name, s.colour[0], s.colour[1], s.colour[2]
            )
        })
        .collect();
    Ok(format!(
        "{title} — x: step {:.0}…{:.0}, y: {:.3}…{:.3}; {}.\n\n![{title}]({file})\n\n",
        r.x.0,
        r.x.1,
        r.y.0,
        r.y.1,
        legend.join(", ")
    ))
}

/// Code counts of a latent NAT run on the split's gold targets.
fn code_usage(run: &Path, split: &str) -> Result<Option<CodeUsage>> {
    let nat = load_nat_run(run, None)?;
    let NatNet::Latent(model) = &nat.net else {
        return Ok(None);
    };
    if nat.bottleneck.is_none() {
        return Ok(None);
    }
    let data_dir = nat.data.resolve_data_dir(&std::env::current_dir()?)?;
    let (s, t) = nat.data.split_files(&data_dir, split);
    let raw = read_parallel(&s, &t)
        .with_context(|| format!("split {split:?} of {}", data_dir.display()))?;
    let all: Vec<usize> = (0..raw.len()).collect();
    let enc = encode_corpus(&nat.tokenizer, &raw, &all)?;
    let bn = model.bottleneck();
    let mut usage = CodeUsage::new(bn.slices(), bn.codebook_size());
    let _guard = tch::no_grad_guard();
    let limit = (model.config().max_positions / 2) as usize;
    let pairs: Vec<usize> = (0..enc.len())
        .filter(|&i| enc.target[i].len() <= limit && enc.source[i].len() <= limit)
        .collect();
    for chunk in pairs.chunks(32) {
        let src: Vec<&[u32]> = chunk.iter().map(|&i| enc.source[i].as_slice()).collect();
        let tgt: Vec<&[u32]> = chunk.iter().map(|&i| enc.target[i].as_slice()).collect();
        let pad = model.config().pad_id;
        let (src, tgt) = (
            pad_rows(&src, pad, nat.device),
            pad_rows(&tgt, pad, nat.device),
        ); // [b, len]
        if let (_, Some(codes)) = model.loss_with_codes(&src, &tgt, i64::MAX / 4, false)? {
            usage.add_codes(&codes.codes)?;
        }
    }
    Ok(Some(usage))
}

/// Writes `dir/report.md` and its pictures.
pub fn write(dir: &Path, table: &Table, list: &LatencyList) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut md = String::from("# emvq pipeline report\n\n");
    writeln!(
        md,
        "## Translation table ({})\n\n{}",
        table.name,
        table.markdown()
    )?;

    // The distillations the NAT runs were trained on.
    let mut corpora: Vec<std::path::PathBuf> = Vec::new();
    for entry in &list.nats {
        let text = std::fs::read_to_string(entry.run.join("config.toml")).unwrap_or_default();
        let cfg: Option<toml::Table> = toml::from_str(&text).ok();
        let dir = cfg.as_ref().and_then(|c| {
            c.get("data")?
                .get("train_dir")?
                .as_str()
                .map(std::path::PathBuf::from)
        });
        if let Some(d) = dir.filter(|d| !corpora.contains(d)) {
            corpora.push(d);
        }
    }
    if !corpora.is_empty() {
        md.push_str("## Distillation\n\n");
        for d in &corpora {
            match std::fs::read_to_string(d.join("record.json")) {
                Ok(text) => writeln!(
                    md,
                    "`{}/record.json`:\n\n```json\n{}\n```\n",
                    d.display(),
                    text.trim()
                )?,
                Err(_) => writeln!(
                    md,
                    "`{}`: no record.json (not distilled yet).\n",
                    d.display()
                )?,
            }
        }
    }

    md.push_str("## Training curves\n\n");
    let runs = std::iter::once(&list.teacher).chain(list.nats.iter().map(|e| &e.run));
    for run in runs {
        if !super::is_trained(run) {
            writeln!(md, "`{}`: not trained.\n", run.display())?;
            continue;
        }
        let name = stem(run);
        writeln!(md, "### `{}`\n", run.display())?;
        let train = metric_series(run, "train", "loss");
        let valid = metric_series(run, "valid", "loss");
        md.push_str(&plot(
            dir,
            &format!("{name}_loss.png"),
            "loss",
            vec![
                Series {
                    name: "training loss".into(),
                    colour: PALETTE[0],
                    points: train,
                },
                Series {
                    name: "validation loss".into(),
                    colour: PALETTE[1],
                    points: valid,
                },
            ],
        )?);
        let ppl = metric_series(run, "train", "code_perplexity");
        if !ppl.is_empty() {
            md.push_str(&plot(
                dir,
                &format!("{name}_code_ppl.png"),
                "codebook perplexity (training batches, mean over slices)",
                vec![Series {
                    name: "code perplexity".into(),
                    colour: PALETTE[2],
                    points: ppl,
                }],
            )?);
        }
        if run == &list.teacher {
            continue;
        }
        if let Some(usage) = code_usage(run, &table.split)? {
            let charts: Vec<_> = (0..usage.perplexity().len())
                .map(|s| usage_chart(usage.counts(s), 200))
                .collect();
            let file = format!("{name}_code_usage.png");
            write_png(&dir.join(&file), &hstack(&charts, 12))?;
            let ppl: Vec<String> = usage
                .perplexity()
                .iter()
                .map(|p| format!("{p:.1}"))
                .collect();
            let dead: Vec<String> = usage.dead_count().iter().map(|d| d.to_string()).collect();
            writeln!(
                md,
                "code usage on the gold targets of {} ({:.0} latent vectors): perplexity {} (per slice), unused codes {}.\n\n![code usage]({file})\n",
                table.split,
                usage.vectors(),
                ppl.join(", "),
                dead.join(", ")
            )?;
        }
    }
    let path = dir.join("report.md");
    write_atomic(&path, md.as_bytes())?;
    println!("report → {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_from_metrics_lines() {
        let dir = std::env::temp_dir().join(format!("emvq_report_series_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("metrics.jsonl"),
            "{\"kind\":\"train\",\"step\":50,\"loss\":3.0,\"code_perplexity\":[4.0,6.0]}\n\
             {\"kind\":\"valid\",\"step\":50,\"loss\":3.5}\n\
             {\"kind\":\"train\",\"step\":100,\"loss\":2.0}\n",
        )
        .unwrap();
        assert_eq!(
            metric_series(&dir, "train", "loss"),
            vec![(50.0, 3.0), (100.0, 2.0)]
        );
        assert_eq!(metric_series(&dir, "valid", "loss"), vec![(50.0, 3.5)]);
        assert_eq!(
            metric_series(&dir, "train", "code_perplexity"),
            vec![(50.0, 5.0)]
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(stem(Path::new("runs/nat/em")), "nat_em");
    }
}
