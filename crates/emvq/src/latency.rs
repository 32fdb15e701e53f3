//! `emvq bench-latency`: the translation table of Roy et al. 2018 ("Theory
//! and Experiments on Vector Quantized Autoencoders", arXiv 1805.11063,
//! Table 3) on our runs. Every trained model given runs on the same test
//! sentences at batch size 1 on this machine with the same LibTorch thread
//! count: the teacher with beam search and greedily, every NAT run in one
//! pass, latent NATs also with `S` sampled latent sequences rescored by the
//! teacher (`rescore`), plain NATs with noisy parallel decoding over their
//! `S` best lengths (`npd`). Models alternate sentence by sentence, so load
//! from other processes hits them alike. BLEU is that of the very outputs
//! timed.
//!
//! The table (`runs/latency/<name>/table.md` and `table.json`) has per row:
//! model, decoding, distilled?, bottleneck, n_c, BLEU, mean and median ms,
//! speed-up (mean latency) against beam and against greedy, and the codebook
//! perplexity the run logged last. A run that is missing or unfinished (no
//! `model.safetensors`) is a "not trained" row with no figures.
//!
//! The runs come from a TOML list (`--list configs/multi30k/latency.toml`,
//! [`LatencyList`]) or from flags (`--teacher`, `--nat`, repeated); flags
//! override the list's values. `--report DIR` also writes the pipeline's
//! report ([`report`]).

pub mod plot;
pub mod report;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use emvq_tensor::{fsutil::write_atomic, load_toml, DeviceSpec};
use serde::{Deserialize, Serialize};

use crate::eval::{bleu_of, nat_batch1, read_split};
use crate::nat_run::{
    bottleneck_label, load_nat_run, load_teacher_run, run_kind, set_threads_once, LoadedNatRun,
    RunKind,
};
use crate::teacher::{LoadedTeacher, MODEL_FILE};
use crate::translate::translate_ids;

/// `emvq bench-latency`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The runs to compare, as a TOML list (configs/multi30k/latency.toml).
    #[arg(long)]
    pub list: Option<PathBuf>,
    /// Table name: written to <runs>/latency/<name>/ (default: the list's
    /// `name`, else "table").
    #[arg(long)]
    pub name: Option<String>,
    /// The teacher run (AR beam and greedy rows; rescorer of the NATs).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// A NAT run (repeat the flag for several), added to the list's.
    #[arg(long = "nat")]
    pub nats: Vec<PathBuf>,
    /// A latent NAT run timed with its output projection in bfloat16
    /// (repeatable; a run may also be given with `--nat`: two rows).
    #[arg(long = "nat-bf16")]
    pub nats_bf16: Vec<PathBuf>,
    /// Candidates S of the latent NATs' rescoring rows (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub rescore: Option<Vec<usize>>,
    /// Lengths S of the plain NATs' noisy-parallel-decoding rows.
    #[arg(long, value_delimiter = ',')]
    pub npd: Option<Vec<usize>>,
    /// Split of the teacher's data set.
    #[arg(long)]
    pub split: Option<String>,
    /// Beam size of the AR beam row.
    #[arg(long)]
    pub beam: Option<i64>,
    /// The first N sentences of the split (0: all).
    #[arg(long)]
    pub sentences: Option<usize>,
    /// LibTorch threads (intra- and inter-op).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Folder holding the run directories.
    #[arg(long, default_value = "runs")]
    pub runs: PathBuf,
    /// Also write the report (table, loss curves, codebook usage as PNG)
    /// into this folder.
    #[arg(long)]
    pub report: Option<PathBuf>,
    #[arg(long)]
    pub device: Option<DeviceSpec>,
}

/// `configs/<dataset>/latency.toml`: the runs of one table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyList {
    /// The table goes to `runs/latency/<name>/`.
    pub name: String,
    #[serde(default = "default_split")]
    pub split: String,
    /// The teacher run (AR rows; rescorer).
    pub teacher: PathBuf,
    #[serde(default = "default_beam")]
    pub beam: i64,
    /// The first N sentences of the split (0: all).
    #[serde(default)]
    pub sentences: usize,
    /// Rescoring rows of every latent NAT: S sampled latent sequences.
    #[serde(default)]
    pub rescore: Vec<usize>,
    /// NPD rows of every plain NAT: S best lengths.
    #[serde(default)]
    pub npd: Vec<usize>,
    /// The NAT runs, in table order.
    #[serde(default, rename = "nat")]
    pub nats: Vec<NatEntry>,
}

/// One NAT run of a [`LatencyList`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatEntry {
    /// Row name (default: from the run's config, e.g. "VQ-VAE with EM +
    /// distillation").
    #[serde(default)]
    pub label: Option<String>,
    pub run: PathBuf,
    /// Latent NAT runs: output projection in bfloat16 or not (default: the
    /// run's `[decode] bf16_output`).
    #[serde(default)]
    pub bf16_output: Option<bool>,
}

fn default_split() -> String {
    "test_2016_flickr".into()
}

fn default_beam() -> i64 {
    4
}

impl LatencyList {
    /// The list of `args.list` (or an empty one) with the flags applied.
    pub fn from_args(args: &BenchArgs) -> Result<Self> {
        let mut list = match &args.list {
            Some(path) => load_toml(path)?,
            None => LatencyList {
                name: "table".into(),
                split: default_split(),
                teacher: args.teacher.clone().context("give --list or --teacher")?,
                beam: default_beam(),
                sentences: 0,
                rescore: Vec::new(),
                npd: Vec::new(),
                nats: Vec::new(),
            },
        };
        if let Some(t) = &args.teacher {
            list.teacher = t.clone();
        }
        if let Some(n) = &args.name {
            list.name = n.clone();
        }
        if let Some(s) = &args.split {
            list.split = s.clone();
        }
        if let Some(b) = args.beam {
            list.beam = b;
        }
        if let Some(n) = args.sentences {
            list.sentences = n;
        }
        if let Some(r) = &args.rescore {
            list.rescore = r.clone();
        }
        if let Some(n) = &args.npd {
            list.npd = n.clone();
        }
        list.nats.extend(args.nats.iter().map(|run| NatEntry {
            label: None,
            run: run.clone(),
            bf16_output: None,
        }));
        list.nats.extend(args.nats_bf16.iter().map(|run| NatEntry {
            label: None,
            run: run.clone(),
            bf16_output: Some(true),
        }));
        ensure!(list.beam >= 1, "beam must be at least 1");
        ensure!(
            list.rescore.iter().chain(&list.npd).all(|&s| s >= 1),
            "rescore and npd values must be at least 1"
        );
        Ok(list)
    }
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub model: String,
    pub run: PathBuf,
    /// False: the run is missing or unfinished, every figure is empty.
    pub trained: bool,
    /// `beam 4`, `greedy`, `one pass`, `rescore S`, `NPD S`.
    pub decoding: String,
    pub distilled: Option<bool>,
    pub bottleneck: String,
    pub n_c: Option<i64>,
    pub bleu: Option<f64>,
    pub mean_ms: Option<f64>,
    pub median_ms: Option<f64>,
    pub speedup_vs_beam: Option<f64>,
    pub speedup_vs_greedy: Option<f64>,
    /// The last codebook perplexity in the run's metrics (mean over slices).
    pub code_perplexity: Option<f64>,
}

/// `table.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Table {
    pub name: String,
    pub split: String,
    pub sentences: usize,
    pub threads: i32,
    pub device: String,
    pub teacher: PathBuf,
    pub rows: Vec<Row>,
}

impl Table {
    /// The table as markdown.
    pub fn markdown(&self) -> String {
        let mut md = format!(
            "Multi30k {} ({} sentences), batch 1, {} LibTorch thread(s), {}; BLEU of the timed outputs; speed-ups are ratios of mean latency.\n\n",
            self.split, self.sentences, self.threads, self.device
        );
        md.push_str("| model | decoding | distilled | bottleneck | n_c | BLEU | mean ms | median ms | speed-up vs beam | speed-up vs greedy | code perplexity |\n");
        md.push_str("| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        let num = |v: Option<f64>, digits: usize| {
            v.map_or("—".to_string(), |v| format!("{v:.digits$}"))
        };
        let times = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.2}×"));
        for r in &self.rows {
            if !r.trained {
                md.push_str(&format!(
                    "| {} | {} | {} | {} | {} | not trained | | | | | |\n",
                    r.model,
                    r.decoding,
                    r.distilled.map_or("—", |d| if d { "yes" } else { "no" }),
                    r.bottleneck,
                    r.n_c.map_or("—".into(), |n| n.to_string()),
                ));
                continue;
            }
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                r.model,
                r.decoding,
                r.distilled.map_or("—", |d| if d { "yes" } else { "no" }),
                r.bottleneck,
                r.n_c.map_or("—".into(), |n| n.to_string()),
                num(r.bleu, 2),
                num(r.mean_ms, 2),
                num(r.median_ms, 2),
                times(r.speedup_vs_beam),
                times(r.speedup_vs_greedy),
                num(r.code_perplexity, 1),
            ));
        }
        md
    }
}

/// A run with its weights: `model.safetensors` (written when training ends).
pub fn is_trained(run: &Path) -> bool {
    run.join("config.toml").is_file() && run.join(MODEL_FILE).is_file()
}

/// The last codebook perplexity in a run's `metrics.jsonl` (a number, or the
/// mean of a per-slice list); `None` when it never logged one.
pub fn last_code_perplexity(run: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).ok()?;
    text.lines().rev().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        match &v["code_perplexity"] {
            serde_json::Value::Number(n) => n.as_f64(),
            serde_json::Value::Array(a) if !a.is_empty() => {
                let xs: Vec<f64> = a.iter().filter_map(serde_json::Value::as_f64).collect();
                (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
            }
            _ => None,
        }
    })
}

/// The paper's name of a NAT run: "NAT", "LT + semhash", "VQ-VAE", "VQ-VAE
/// with EM", then "+ distillation" and ", n_c = N".
pub fn default_label(nat: &LoadedNatRun) -> String {
    use emvq_bottleneck::BottleneckKind::*;
    let mut label = match nat.bottleneck {
        None if nat.kind == RunKind::PlainNat => "NAT".to_string(),
        None => "LT (bottleneck bypassed)".to_string(),
        Some((Semhash, ..)) => "LT + semhash".to_string(),
        Some((Vq, ..)) => "VQ-VAE".to_string(),
        Some((Em, ..)) => "VQ-VAE with EM".to_string(),
    };
    if nat.distilled() {
        label.push_str(" + distillation");
    }
    if let Some((_, _, slices)) = nat.bottleneck.filter(|b| b.2 > 1) {
        label.push_str(&format!(", n_c = {slices}"));
    }
    label
}

/// What a "not trained" row can say about a run from its config alone.
fn untrained_rows(entry: &NatEntry, list: &LatencyList) -> Vec<Row> {
    let text = std::fs::read_to_string(entry.run.join("config.toml")).ok();
    let table: Option<toml::Table> = text.as_deref().and_then(|t| toml::from_str(t).ok());
    let model = entry
        .label
        .clone()
        .unwrap_or_else(|| entry.run.display().to_string());
    let distilled = table
        .as_ref()
        .map(|t| t.get("data").and_then(|d| d.get("train_dir")).is_some());
    let kind = text
        .as_deref()
        .and_then(|t| crate::nat_run::config_kind(t).ok());
    let rows_of = |decodings: Vec<String>| {
        decodings
            .into_iter()
            .map(|decoding| Row {
                model: model.clone(),
                run: entry.run.clone(),
                trained: false,
                decoding,
                distilled,
                bottleneck: "—".into(),
                n_c: None,
                bleu: None,
                mean_ms: None,
                median_ms: None,
                speedup_vs_beam: None,
                speedup_vs_greedy: None,
                code_perplexity: None,
            })
            .collect()
    };
    let extra = match kind {
        Some(RunKind::PlainNat) => list.npd.iter().map(|s| format!("NPD {s}")).collect(),
        Some(RunKind::LatentNat) => list
            .rescore
            .iter()
            .map(|s| format!("rescore {s}"))
            .collect(),
        _ => Vec::new(),
    };
    rows_of(
        std::iter::once("one pass".to_string())
            .chain(extra)
            .collect(),
    )
}

/// One timed decoder of the table.
enum Decoder<'a> {
    Teacher(&'a LoadedTeacher, i64),
    /// The NAT of `nats[i]`, one pass or rescoring S candidates.
    Nat(usize, &'a LoadedNatRun, Option<usize>),
}

/// Runs `emvq bench-latency`; returns the table.
pub fn run(args: &BenchArgs) -> Result<Table> {
    let list = LatencyList::from_args(args)?;
    let threads = args.threads.max(1) as i32;
    set_threads_once(threads as usize);
    let _guard = tch::no_grad_guard();

    // What is trained gets loaded; the rest becomes "not trained" rows.
    let teacher = if is_trained(&list.teacher) {
        ensure!(
            run_kind(&list.teacher)? == RunKind::Teacher,
            "{} is not a teacher run",
            list.teacher.display()
        );
        Some(load_teacher_run(&list.teacher, args.device)?)
    } else {
        tracing::warn!(
            "teacher {} is not trained: AR rows and rescoring are left out",
            list.teacher.display()
        );
        None
    };
    let mut nats: Vec<(NatEntry, Option<LoadedNatRun>)> = Vec::new();
    for entry in &list.nats {
        let loaded = if is_trained(&entry.run) {
            let mut nat = load_nat_run(&entry.run, args.device)?;
            if let Some(on) = entry.bf16_output {
                nat.set_bf16_output(on)?;
            }
            Some(nat)
        } else {
            tracing::warn!("{} is not trained (no {MODEL_FILE})", entry.run.display());
            None
        };
        nats.push((entry.clone(), loaded));
    }
    tch::set_num_threads(threads); // the loaders set each run's own count

    // The split, from the teacher's data config (else the first NAT's).
    let (data, tokenizer) = match (&teacher, nats.iter().find_map(|(_, n)| n.as_ref())) {
        (Some(t), _) => (&t.config.data, &t.tokenizer),
        (None, Some(n)) => (&n.data, &n.tokenizer),
        (None, None) => bail!("nothing to time: neither the teacher nor any NAT run is trained"),
    };
    let (sources, refs) = read_split(data, tokenizer, &list.split)?;
    let n = if list.sentences == 0 {
        sources.len()
    } else {
        list.sentences.min(sources.len())
    };
    let refs = &refs[..n];
    // Every model reads the split with its own tokenizer (NATs share the
    // teacher's, but nothing is assumed).
    let mut decoders: Vec<(Decoder, Vec<Vec<u32>>)> = Vec::new();
    if let Some(t) = &teacher {
        decoders.push((Decoder::Teacher(t, list.beam), sources[..n].to_vec()));
        decoders.push((Decoder::Teacher(t, 1), sources[..n].to_vec()));
    }
    for (i, (_, nat)) in nats.iter().enumerate() {
        let Some(nat) = nat else { continue };
        let (own, _) = read_split(&nat.data, &nat.tokenizer, &list.split)?;
        ensure!(
            own.len() >= n,
            "{}: split {} is shorter",
            nat.name,
            list.split
        );
        let own = own[..n].to_vec();
        decoders.push((Decoder::Nat(i, nat, None), own.clone()));
        if teacher.is_some() {
            let extra = if nat.kind == RunKind::PlainNat {
                &list.npd
            } else {
                &list.rescore
            };
            for &s in extra {
                decoders.push((Decoder::Nat(i, nat, Some(s)), own.clone()));
            }
        }
    }

    // Sentence by sentence, every decoder in turn.
    let bar = emvq_tensor::logging::progress_bar(n as u64, "bench-latency");
    let mut outs: Vec<Vec<Vec<u32>>> = vec![Vec::with_capacity(n); decoders.len()];
    let mut ms: Vec<Vec<f64>> = vec![Vec::with_capacity(n); decoders.len()];
    for i in 0..n {
        for (d, (decoder, srcs)) in decoders.iter().enumerate() {
            let start = Instant::now();
            let out = match decoder {
                Decoder::Teacher(t, beam) => {
                    let search = t.config.decode.search(*beam);
                    translate_ids(
                        &t.model,
                        std::slice::from_ref(&srcs[i]),
                        &search,
                        1,
                        t.device,
                    )?
                    .swap_remove(0)
                }
                Decoder::Nat(_, nat, s) => {
                    let rescorer = s.map(|s| {
                        (
                            &teacher.as_ref().expect("rescoring needs the teacher").model,
                            s,
                        )
                    });
                    nat_batch1(nat, std::slice::from_ref(&srcs[i]), rescorer)?
                        .0
                        .swap_remove(0)
                }
            };
            ms[d].push(start.elapsed().as_secs_f64() * 1e3);
            outs[d].push(out);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();

    // Each timed row with the list entry it belongs to (None: the teacher's);
    // a run may be listed twice (float32 and bf16 output).
    let mut rows: Vec<(Option<usize>, Row)> = Vec::new();
    for (d, (decoder, _)) in decoders.iter().enumerate() {
        let latency = crate::eval::Latency::from_ms(ms[d].clone());
        let (model, run, decoding, distilled, bottleneck, n_c, ppl, hyps) = match decoder {
            Decoder::Teacher(t, beam) => (
                "Autoregressive".to_string(),
                list.teacher.clone(),
                if *beam == 1 {
                    "greedy".to_string()
                } else {
                    format!("beam {beam}")
                },
                Some(t.config.data.train_dir.is_some()),
                "—".to_string(),
                None,
                None,
                t.tokenizer.decode_batch(&outs[d])?,
            ),
            Decoder::Nat(i, nat, s) => {
                let entry = &nats[*i].0;
                (
                    entry.label.clone().unwrap_or_else(|| default_label(nat)),
                    entry.run.clone(),
                    match s {
                        None => "one pass".to_string(),
                        Some(s) if nat.kind == RunKind::PlainNat => format!("NPD {s}"),
                        Some(s) => format!("rescore {s}"),
                    } + if nat.bf16_output { ", bf16 output" } else { "" },
                    Some(nat.distilled()),
                    bottleneck_label(nat.bottleneck),
                    nat.bottleneck.map(|b| b.2),
                    last_code_perplexity(&entry.run),
                    nat.tokenizer.decode_batch(&outs[d])?,
                )
            }
        };
        let entry = match decoder {
            Decoder::Teacher(..) => None,
            Decoder::Nat(i, ..) => Some(*i),
        };
        rows.push((
            entry,
            Row {
                model,
                run,
                trained: true,
                decoding,
                distilled,
                bottleneck,
                n_c,
                bleu: Some(bleu_of(&hyps, refs)?.score),
                mean_ms: Some(latency.mean_ms),
                median_ms: Some(latency.median_ms),
                speedup_vs_beam: None,
                speedup_vs_greedy: None,
                code_perplexity: ppl,
            },
        ));
    }
    // The teacher's rows first, then each listed NAT's (not-trained rows
    // where the list puts them).
    let mut ordered: Vec<Row> = if teacher.is_none() {
        vec![
            ar_untrained(&list, &format!("beam {}", list.beam)),
            ar_untrained(&list, "greedy"),
        ]
    } else {
        rows.iter()
            .filter(|(e, _)| e.is_none())
            .map(|(_, r)| r.clone())
            .collect()
    };
    for (i, (entry, loaded)) in nats.iter().enumerate() {
        match loaded {
            Some(_) => ordered.extend(
                rows.iter()
                    .filter(|(e, _)| *e == Some(i))
                    .map(|(_, r)| r.clone()),
            ),
            None => ordered.extend(untrained_rows(entry, &list)),
        }
    }
    name_runs_apart(&mut ordered);
    speedups(&mut ordered);

    let table = Table {
        name: list.name.clone(),
        split: list.split.clone(),
        sentences: n,
        threads,
        device: teacher
            .as_ref()
            .map(|t| format!("{:?}", t.device))
            .or_else(|| {
                nats.iter()
                    .find_map(|(_, l)| l.as_ref().map(|l| format!("{:?}", l.device)))
            })
            .unwrap_or_default(),
        teacher: list.teacher.clone(),
        rows: ordered,
    };
    let dir = args.runs.join("latency").join(&list.name);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_atomic(
        &dir.join("table.json"),
        serde_json::to_string_pretty(&table)?.as_bytes(),
    )?;
    let md = table.markdown();
    write_atomic(&dir.join("table.md"), md.as_bytes())?;
    println!("{md}");
    println!("table → {}", dir.join("table.md").display());
    if let Some(report_dir) = &args.report {
        report::write(report_dir, &table, &list)?;
    }
    Ok(table)
}

fn ar_untrained(list: &LatencyList, decoding: &str) -> Row {
    Row {
        model: "Autoregressive".into(),
        run: list.teacher.clone(),
        trained: false,
        decoding: decoding.into(),
        distilled: None,
        bottleneck: "—".into(),
        n_c: None,
        bleu: None,
        mean_ms: None,
        median_ms: None,
        speedup_vs_beam: None,
        speedup_vs_greedy: None,
        code_perplexity: None,
    }
}

/// Rows of different runs that got the same name (two EM + distillation
/// runs, say) get their run's folder name appended, so the table tells
/// them apart.
fn name_runs_apart(rows: &mut [Row]) {
    let shared: Vec<String> = rows
        .iter()
        .filter(|r| {
            rows.iter()
                .any(|o| o.model == r.model && o.run != r.run && o.model != "Autoregressive")
        })
        .map(|r| r.model.clone())
        .collect();
    for r in rows.iter_mut().filter(|r| shared.contains(&r.model)) {
        let run = r
            .run
            .file_name()
            .unwrap_or(r.run.as_os_str())
            .to_string_lossy();
        r.model = format!("{} ({run})", r.model);
    }
}

/// Speed-ups of every timed row: the AR beam (greedy) row's mean latency
/// over the row's.
fn speedups(rows: &mut [Row]) {
    let mean_of = |rows: &[Row], greedy: bool| {
        rows.iter()
            .find(|r| {
                r.model == "Autoregressive" && r.trained && (r.decoding == "greedy") == greedy
            })
            .and_then(|r| r.mean_ms)
    };
    let (beam, greedy) = (mean_of(rows, false), mean_of(rows, true));
    for r in rows.iter_mut() {
        if let Some(m) = r.mean_ms.filter(|&m| m > 0.0) {
            r.speedup_vs_beam = beam.map(|b| b / m);
            r.speedup_vs_greedy = greedy.map(|g| g / m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(model: &str, decoding: &str, mean: Option<f64>) -> Row {
        Row {
            model: model.into(),
            run: "r".into(),
            trained: mean.is_some(),
            decoding: decoding.into(),
            distilled: None,
            bottleneck: "—".into(),
            n_c: None,
            bleu: mean.map(|_| 30.0),
            mean_ms: mean,
            median_ms: mean,
            speedup_vs_beam: None,
            speedup_vs_greedy: None,
            code_perplexity: None,
        }
    }

    #[test]
    fn speedups_against_beam_and_greedy() {
        let mut rows = vec![
            row("Autoregressive", "beam 4", Some(40.0)),
            row("Autoregressive", "greedy", Some(20.0)),
            row("VQ-VAE with EM", "one pass", Some(5.0)),
            row("NAT", "one pass", None),
        ];
        speedups(&mut rows);
        assert_eq!(rows[0].speedup_vs_beam, Some(1.0));
        assert_eq!(rows[1].speedup_vs_beam, Some(2.0));
        assert_eq!(
            (rows[2].speedup_vs_beam, rows[2].speedup_vs_greedy),
            (Some(8.0), Some(4.0))
        );
        assert_eq!(rows[3].speedup_vs_beam, None);
        let table = Table {
            name: "t".into(),
            split: "s".into(),
            sentences: 3,
            threads: 1,
            device: "Cpu".into(),
            teacher: "t".into(),
            rows,
        };
        let md = table.markdown();
        assert!(md.contains("| VQ-VAE with EM | one pass | — | — | — | 30.00 | 5.00 | 5.00 | 8.00× | 4.00× | — |"), "{md}");
        assert!(
            md.contains("| NAT | one pass | — | — | — | not trained |"),
            "{md}"
        );
    }

    #[test]
    fn rows_of_two_runs_with_one_name_are_told_apart() {
        let mut rows = vec![
            row("Autoregressive", "greedy", Some(20.0)),
            row("VQ-VAE with EM", "one pass", Some(5.0)),
            row("VQ-VAE with EM", "rescore 10", Some(9.0)),
            row("VQ-VAE with EM", "one pass", Some(6.0)),
            row("NAT", "one pass", Some(4.0)),
        ];
        rows[1].run = "runs/nat/a".into();
        rows[2].run = "runs/nat/a".into();
        rows[3].run = "runs/nat/b".into();
        name_runs_apart(&mut rows);
        let names: Vec<&str> = rows.iter().map(|r| r.model.as_str()).collect();
        assert_eq!(
            names,
            [
                "Autoregressive",
                "VQ-VAE with EM (a)",
                "VQ-VAE with EM (a)",
                "VQ-VAE with EM (b)",
                "NAT"
            ]
        );
    }

    #[test]
    fn code_perplexity_from_metrics() {
        let dir = std::env::temp_dir().join(format!("emvq_latency_ppl_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(last_code_perplexity(&dir), None);
        std::fs::write(
            dir.join("metrics.jsonl"),
            "{\"step\":1,\"code_perplexity\":[10.0,20.0]}\n{\"step\":2,\"code_perplexity\":[30.0, 50.0]}\n{\"kind\":\"valid\"}\n",
        )
        .unwrap();
        assert_eq!(last_code_perplexity(&dir), Some(40.0));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn shipped_latency_list_parses() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let list: LatencyList = load_toml(&root.join("configs/multi30k/latency.toml")).unwrap();
        assert_eq!(list.split, "test_2016_flickr");
        assert!(list.nats.iter().any(|e| e.run.ends_with("multi30k_em")));
        let paper: LatencyList =
            load_toml(&root.join("configs/multi30k/latency_paper.toml")).unwrap();
        assert_eq!(paper.nats.len(), 7, "every NAT model of the paper's table");
    }
}
