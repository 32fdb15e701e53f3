//! The command line: `emvq bleu` / `emvq-bleu`. Scores one or more systems
//! with BLEU and/or chrF, optionally per sentence, with a bootstrap CI, or
//! with sacreBLEU's paired significance tests, printing sacreBLEU's text
//! layout or JSON.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::{json, Value};

use crate::bleu::{Bleu, BleuConfig, BleuScore, Smoothing, TOKENIZED_WARNING};
use crate::chrf::{Chrf, ChrfConfig};
use crate::io::{check_line_counts, read_lines, read_refs, split_lines};
use crate::signature::Signature;
use crate::significance::{
    bootstrap_scores, estimate_ci, paired_ar, paired_bs, PairedResult, SegmentStats, StatsMetric,
    DEFAULT_AR_TRIALS, DEFAULT_BS_SAMPLES,
};

/// Arguments of `emvq bleu` (BLEU/chrF scoring equal to sacreBLEU 2.x).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "emvq-bleu",
    version,
    about = "BLEU and chrF exactly as sacreBLEU 2.x computes them, with paired significance tests"
)]
pub struct BleuArgs {
    /// Reference file (repeat for several references per segment; .gz is read compressed).
    #[arg(short = 'r', long = "ref", value_name = "REF", required = true)]
    pub refs: Vec<PathBuf>,
    /// System output file (repeat for several systems; the first is the baseline
    /// of paired tests). Reads standard input when absent.
    #[arg(short = 'i', long = "input", value_name = "HYP")]
    pub inputs: Vec<PathBuf>,
    /// Comma-separated metrics.
    #[arg(short = 'm', long, value_delimiter = ',', default_value = "bleu",
          value_parser = ["bleu", "chrf"])]
    pub metrics: Vec<String>,
    /// BLEU tokenizer.
    #[arg(long, default_value = "13a", value_parser = ["none", "13a", "intl", "char", "zh"])]
    pub tokenize: String,
    /// Lowercase before BLEU (case-insensitive BLEU).
    #[arg(long)]
    pub lowercase: bool,
    /// BLEU smoothing method.
    #[arg(long, default_value = "exp", value_parser = ["none", "floor", "add-k", "exp"])]
    pub smooth_method: String,
    /// Value for `floor` (default 0.1) and `add-k` (default 1) smoothing.
    #[arg(long)]
    pub smooth_value: Option<f64>,
    /// Do not warn about hypotheses that look tokenized.
    #[arg(long)]
    pub force: bool,
    /// chrF character n-gram order.
    #[arg(long, default_value_t = 6)]
    pub chrf_char_order: usize,
    /// chrF word n-gram order (2 gives chrF++).
    #[arg(long, default_value_t = 0)]
    pub chrf_word_order: usize,
    /// chrF beta.
    #[arg(long, default_value_t = 2)]
    pub chrf_beta: u32,
    /// Lowercase before chrF.
    #[arg(long)]
    pub chrf_lowercase: bool,
    /// Keep whitespace in chrF character n-grams.
    #[arg(long)]
    pub chrf_whitespace: bool,
    /// chrF++.py-style epsilon smoothing instead of effective order.
    #[arg(long)]
    pub chrf_eps_smoothing: bool,
    /// Score each sentence separately (one system, one metric; BLEU uses effective order).
    #[arg(long)]
    pub sentence_level: bool,
    /// Add a bootstrap 95% confidence interval to a single system's scores.
    #[arg(long)]
    pub confidence: bool,
    /// Bootstrap resamples for --confidence.
    #[arg(long, default_value_t = DEFAULT_BS_SAMPLES)]
    pub confidence_n: usize,
    /// Paired bootstrap resampling test of every system against the first.
    #[arg(long, conflicts_with = "paired_ar")]
    pub paired_bs: bool,
    /// Paired approximate randomisation test of every system against the first.
    #[arg(long)]
    pub paired_ar: bool,
    /// Resamples (bs, default 1000) or trials (ar, default 10000).
    #[arg(long)]
    pub paired_n: Option<usize>,
    /// Random seed of the tests, or `none` for a random one.
    #[arg(long, default_value = "12345")]
    pub seed: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Decimals of printed scores.
    #[arg(short = 'w', long, default_value_t = 1)]
    pub width: usize,
}

/// One of the metrics, for uniform handling.
enum Metric {
    Bleu(Bleu),
    Chrf(Chrf),
}

impl Metric {
    fn name(&self) -> String {
        match self {
            Metric::Bleu(m) => m.name(),
            Metric::Chrf(m) => m.name(),
        }
    }

    fn stats(&self, hyps: &[String]) -> Result<SegmentStats> {
        Ok(match self {
            Metric::Bleu(m) => m.segment_stats(hyps)?,
            Metric::Chrf(m) => m.segment_stats(hyps)?,
        })
    }

    fn signature(&self) -> Signature {
        match self {
            Metric::Bleu(m) => m.signature(),
            Metric::Chrf(m) => m.signature(),
        }
    }

    fn score(&self, sums: &[u64]) -> f64 {
        match self {
            Metric::Bleu(m) => m.score(sums),
            Metric::Chrf(m) => m.score(sums),
        }
    }

    fn bleu_score(&self, sums: &[u64]) -> Option<BleuScore> {
        match self {
            Metric::Bleu(m) => Some(m.score_from_sums(sums)),
            Metric::Chrf(_) => None,
        }
    }

    fn bootstrap(&self, stats: &[&SegmentStats], n: usize, seed: Option<u64>) -> Vec<Vec<f64>> {
        match self {
            Metric::Bleu(m) => bootstrap_scores(m, stats, n, seed),
            Metric::Chrf(m) => bootstrap_scores(m, stats, n, seed),
        }
    }

    fn paired(
        &self,
        ar: bool,
        base: &SegmentStats,
        systems: &[SegmentStats],
        n: usize,
        seed: Option<u64>,
    ) -> Result<Vec<PairedResult>> {
        Ok(match (self, ar) {
            (Metric::Bleu(m), false) => paired_bs(m, base, systems, n, seed)?,
            (Metric::Chrf(m), false) => paired_bs(m, base, systems, n, seed)?,
            (Metric::Bleu(m), true) => paired_ar(m, base, systems, n, None, seed)?,
            (Metric::Chrf(m), true) => paired_ar(m, base, systems, n, None, seed)?,
        })
    }
}

/// A score ready for printing.
struct Line {
    name: String,
    score: f64,
    signature: Signature,
    bleu: Option<BleuScore>,
    confidence: Option<(f64, f64)>,
}

impl Line {
    fn text(&self, width: usize) -> String {
        let mut s = format!("{}|{} = {:.width$}", self.name, self.signature, self.score);
        if let Some((mean, ci)) = self.confidence {
            s += &format!(" (μ = {mean:.width$} ± {ci:.width$})");
        }
        if let Some(b) = &self.bleu {
            s += &format!(" {}", b.verbose());
        }
        s
    }

    fn json(&self, width: usize) -> Value {
        let rounded = |x: f64| format!("{x:.width$}").parse::<f64>().unwrap_or(x);
        let mut obj = serde_json::Map::new();
        obj.insert("name".into(), json!(self.name));
        obj.insert("score".into(), json!(rounded(self.score)));
        obj.insert("signature".into(), json!(self.signature.to_string()));
        if let Some((mean, ci)) = self.confidence {
            obj.insert("confidence_mean".into(), json!(rounded(mean)));
            obj.insert("confidence_var".into(), json!(rounded(ci)));
            obj.insert(
                "confidence".into(),
                json!(format!("μ = {mean:.width$} ± {ci:.width$}")),
            );
        }
        if let Some(b) = &self.bleu {
            obj.insert("verbose_score".into(), json!(b.verbose()));
            obj.insert("counts".into(), json!(b.counts));
            obj.insert("totals".into(), json!(b.totals));
            obj.insert("precisions".into(), json!(b.precisions));
            obj.insert("bp".into(), json!(b.bp));
            obj.insert("ratio".into(), json!(b.ratio));
            obj.insert("hyp_len".into(), json!(b.sys_len));
            obj.insert("ref_len".into(), json!(b.ref_len));
        }
        for (k, v) in self.signature.pairs() {
            obj.insert(k, json!(v));
        }
        Value::Object(obj)
    }
}

fn parse_seed(s: &str) -> Result<Option<u64>> {
    if s.eq_ignore_ascii_case("none") {
        Ok(None)
    } else {
        let seed = s
            .parse()
            .with_context(|| format!("--seed must be an integer or 'none', got '{s}'"))?;
        Ok(Some(seed))
    }
}

fn read_stdin() -> Result<Vec<String>> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .context("cannot read standard input")?;
    Ok(split_lines(&bytes, Path::new("<stdin>"))?)
}

/// The requested metrics with their references cached, BLEU before chrF as
/// sacreBLEU sorts them.
fn build_metrics(args: &BleuArgs, refs: &[Vec<String>]) -> Result<Vec<Metric>> {
    let bleu = BleuConfig {
        tokenizer: args.tokenize.parse()?,
        lowercase: args.lowercase,
        smoothing: Smoothing::from_name(&args.smooth_method, args.smooth_value)?,
        // sacreBLEU turns effective order on for sentence-level BLEU.
        effective_order: args.sentence_level,
        ..BleuConfig::default()
    };
    let chrf = ChrfConfig {
        char_order: args.chrf_char_order,
        word_order: args.chrf_word_order,
        beta: args.chrf_beta,
        lowercase: args.chrf_lowercase,
        whitespace: args.chrf_whitespace,
        eps_smoothing: args.chrf_eps_smoothing,
    };
    let mut metrics = Vec::new();
    if args.metrics.iter().any(|m| m == "bleu") {
        metrics.push(Metric::Bleu(Bleu::new(bleu, refs)?));
    }
    if args.metrics.iter().any(|m| m == "chrf") {
        metrics.push(Metric::Chrf(Chrf::new(chrf, refs)?));
    }
    Ok(metrics)
}

fn print_aligned(lines: &[String]) {
    let width = lines
        .iter()
        .filter_map(|l| l.find('='))
        .map(|i| i.saturating_sub(1))
        .max()
        .unwrap_or(0);
    for line in lines {
        match line.find('=') {
            Some(i) => {
                let cut = i.saturating_sub(1);
                let (left, right) = line.split_at(cut);
                let pad = width.saturating_sub(left.chars().count());
                println!("{}{left}{right}", " ".repeat(pad));
            }
            None => println!("{line}"),
        }
    }
}

/// Runs the scorer as described by `args`, printing to standard output.
pub fn run(args: &BleuArgs) -> Result<()> {
    let seed = parse_seed(&args.seed)?;
    let paired = args.paired_bs || args.paired_ar;
    let refs = read_refs(&args.refs)?;

    let mut systems: Vec<(String, Vec<String>)> = Vec::new();
    if args.inputs.is_empty() {
        let hyps = read_stdin()?;
        check_line_counts(Path::new("<stdin>"), hyps.len(), &args.refs, &refs)?;
        systems.push(("<stdin>".to_string(), hyps));
    } else {
        for path in &args.inputs {
            let hyps = read_lines(path)?;
            check_line_counts(path, hyps.len(), &args.refs, &refs)?;
            systems.push((path.display().to_string(), hyps));
        }
    }

    let metrics = build_metrics(args, &refs)?;
    if args.sentence_level {
        if systems.len() > 1 || metrics.len() > 1 {
            bail!("--sentence-level takes one system and one metric");
        }
        if paired || args.confidence {
            bail!("statistical tests are unavailable with --sentence-level");
        }
    }
    if paired && systems.len() < 2 {
        bail!("paired tests need at least two systems: -i BASELINE -i SYSTEM [-i SYSTEM ...]");
    }
    if args.confidence && systems.len() > 1 {
        bail!("--confidence is for a single system; use --paired-bs for several");
    }

    let uses_bleu = metrics.iter().any(|m| matches!(m, Metric::Bleu(_)));
    if uses_bleu && !args.force {
        for (name, hyps) in &systems {
            if crate::bleu::looks_tokenized(hyps) {
                for w in TOKENIZED_WARNING {
                    eprintln!("emvq-bleu: {w} [{name}]");
                }
            }
        }
    }

    if args.sentence_level {
        return sentence_level(args, &metrics[0], &systems[0].1);
    }
    if paired {
        return paired_tests(args, &metrics, &systems, seed);
    }

    let mut json_systems = Vec::new();
    for (name, hyps) in &systems {
        let lines = score_system(args, &metrics, hyps, seed)?;
        if args.json {
            let values: Vec<Value> = lines.iter().map(|l| l.json(args.width)).collect();
            json_systems.push(json!({ "system": name, "scores": values }));
            if systems.len() == 1 {
                // sacreBLEU's single-system JSON: one object, or a list of them.
                let out = match <[Value; 1]>::try_from(values) {
                    Ok([one]) => one,
                    Err(values) => Value::Array(values),
                };
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
        } else {
            if systems.len() > 1 {
                println!("System: {name}");
            }
            let texts: Vec<String> = lines.iter().map(|l| l.text(args.width)).collect();
            print_aligned(&texts);
        }
    }
    if args.json && systems.len() > 1 {
        println!("{}", serde_json::to_string_pretty(&json_systems)?);
    }
    Ok(())
}

/// Corpus scores of one system with every metric (with a bootstrap CI when asked).
fn score_system(
    args: &BleuArgs,
    metrics: &[Metric],
    hyps: &[String],
    seed: Option<u64>,
) -> Result<Vec<Line>> {
    let mut lines = Vec::new();
    for metric in metrics {
        let stats = metric.stats(hyps)?;
        let sums = stats.sum();
        let mut signature = metric.signature();
        let mut confidence = None;
        if args.confidence {
            let n = args.confidence_n.max(1);
            let scores = metric.bootstrap(&[&stats], n, seed);
            let ci = estimate_ci(&scores[0]);
            confidence = Some((ci.mean, ci.ci));
            signature = signature.with_test("bs", n, seed);
        }
        lines.push(Line {
            name: metric.name(),
            score: metric.score(&sums),
            signature,
            bleu: metric.bleu_score(&sums),
            confidence,
        });
    }
    Ok(lines)
}

fn sentence_level(args: &BleuArgs, metric: &Metric, hyps: &[String]) -> Result<()> {
    let stats = metric.stats(hyps)?;
    let signature = metric.signature();
    for row in stats.rows() {
        let line = Line {
            name: metric.name(),
            score: metric.score(row),
            signature: signature.clone(),
            bleu: metric.bleu_score(row),
            confidence: None,
        };
        if args.json {
            println!("{}", serde_json::to_string(&line.json(args.width))?);
        } else {
            println!("{}", line.text(args.width));
        }
    }
    Ok(())
}

fn paired_tests(
    args: &BleuArgs,
    metrics: &[Metric],
    systems: &[(String, Vec<String>)],
    seed: Option<u64>,
) -> Result<()> {
    let ar = args.paired_ar;
    let default_n = if ar {
        DEFAULT_AR_TRIALS
    } else {
        DEFAULT_BS_SAMPLES
    };
    let n = args.paired_n.filter(|&n| n > 0).unwrap_or(default_n);
    let mut names: Vec<String> = systems.iter().map(|(n, _)| n.clone()).collect();
    names[0] = format!("Baseline: {}", names[0]);

    let mut columns = Vec::new();
    for metric in metrics {
        let base = metric.stats(&systems[0].1)?;
        let others = systems[1..]
            .iter()
            .map(|(_, h)| metric.stats(h))
            .collect::<Result<Vec<_>>>()?;
        let results = metric.paired(ar, &base, &others, n, seed)?;
        let sig = metric
            .signature()
            .with_test(if ar { "ar" } else { "bs" }, n, seed);
        columns.push((metric.name(), sig, results));
    }

    if args.json {
        let rows: Vec<Value> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mut obj = serde_json::Map::new();
                obj.insert("system".into(), json!(name));
                for (metric, _, results) in &columns {
                    obj.insert(metric.clone(), json!(results[i]));
                }
                Value::Object(obj)
            })
            .collect();
        let signatures: serde_json::Map<String, Value> = columns
            .iter()
            .map(|(m, s, _)| (m.clone(), json!(s.to_string())))
            .collect();
        let out = json!({ "test": if ar { "ar" } else { "bs" }, "n_samples": n,
                          "systems": rows, "signatures": signatures });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }

    let w = args.width;
    let mut table = vec![vec!["System".to_string()]];
    for (metric, _, _) in &columns {
        table[0].push(if ar {
            metric.clone()
        } else {
            format!("{metric} (μ ± 95% CI)")
        });
    }
    for (i, name) in names.iter().enumerate() {
        let mut row = vec![name.clone()];
        for (_, _, results) in &columns {
            let r = &results[i];
            let mut cell = format!("{:.w$}", r.score);
            if let (Some(mean), Some(ci)) = (r.mean, r.ci) {
                cell += &format!(" ({mean:.w$} ± {ci:.w$})");
            }
            if let Some(p) = r.p_value {
                cell += &format!(" (p = {p:.4}){}", if p <= 0.05 { "*" } else { "" });
            }
            row.push(cell);
        }
        table.push(row);
    }
    let n_cols = table[0].len();
    let widths: Vec<usize> = (0..n_cols)
        .map(|c| {
            table
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in &table {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, &wd)| format!("{cell:<wd$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
    println!();
    let (test, unit) = if ar {
        ("approximate randomization", "trials")
    } else {
        ("bootstrap resampling", "resampling trials")
    };
    println!("Paired {test} test with {n} {unit}; p-values < 0.05 are marked with \"*\".");
    println!();
    println!("-----------------");
    println!("Metric signatures");
    println!("-----------------");
    for (metric, sig, _) in &columns {
        println!(" - {metric:<10} {sig}");
    }
    Ok(())
}
