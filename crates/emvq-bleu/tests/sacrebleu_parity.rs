//! Parity with sacreBLEU 2.x: every expected value here was produced by
//! sacreBLEU itself (`tests/gen/make_expected.py`) on newstest2014, Multi30k
//! and generated edge-case text.

mod common;

use common::{close, expected, lines, refs, with_our_version};
use emvq_bleu::{Bleu, BleuConfig, Chrf, ChrfConfig, Smoothing, StatsMetric, Tokenizer};
use serde_json::Value;

fn sacrebleu_version(exp: &Value) -> String {
    exp["sacrebleu_version"]
        .as_str()
        .expect("version")
        .to_string()
}

fn bleu_config(cfg: &Value) -> BleuConfig {
    let get_str = |k: &str, d: &str| cfg.get(k).and_then(Value::as_str).unwrap_or(d).to_string();
    let get_bool = |k: &str| cfg.get(k).and_then(Value::as_bool).unwrap_or(false);
    let tokenizer: Tokenizer = get_str("tokenize", "13a").parse().expect("tokenizer");
    let value = cfg.get("smooth_value").and_then(Value::as_f64);
    BleuConfig {
        tokenizer,
        lowercase: get_bool("lowercase"),
        smoothing: Smoothing::from_name(&get_str("smooth_method", "exp"), value)
            .expect("smoothing"),
        effective_order: get_bool("effective_order"),
        ..BleuConfig::default()
    }
}

fn chrf_config(cfg: &Value) -> ChrfConfig {
    let get_usize =
        |k: &str, d: usize| cfg.get(k).and_then(Value::as_u64).map_or(d, |v| v as usize);
    let get_bool = |k: &str| cfg.get(k).and_then(Value::as_bool).unwrap_or(false);
    ChrfConfig {
        char_order: get_usize("char_order", 6),
        word_order: get_usize("word_order", 0),
        beta: get_usize("beta", 2) as u32,
        lowercase: get_bool("lowercase"),
        whitespace: get_bool("whitespace"),
        eps_smoothing: get_bool("eps_smoothing"),
    }
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("integer"))
        .collect()
}

#[test]
fn corpus_bleu_matches_sacrebleu() {
    let exp = expected();
    let version = sacrebleu_version(&exp);
    let cases = exp["bleu"].as_array().expect("bleu cases");
    assert!(cases.len() >= 100, "expected many BLEU cases");
    for case in cases {
        let id = case["id"].as_str().unwrap_or("?");
        let e = &case["expected"];
        let metric = Bleu::new(bleu_config(&case["config"]), &refs(case)).expect("refs");
        let hyps = lines(case["hyp"].as_str().expect("hyp"));
        let stats = metric.segment_stats(&hyps).expect("stats");
        let score = metric.score_from_sums(&stats.sum());
        close(
            score.score,
            e["score"].as_f64().unwrap(),
            &format!("{id} score"),
        );
        assert_eq!(score.counts, u64s(&e["counts"]), "{id} counts");
        assert_eq!(score.totals, u64s(&e["totals"]), "{id} totals");
        assert_eq!(
            score.sys_len,
            e["sys_len"].as_u64().unwrap(),
            "{id} sys_len"
        );
        assert_eq!(
            score.ref_len,
            e["ref_len"].as_u64().unwrap(),
            "{id} ref_len"
        );
        close(score.bp, e["bp"].as_f64().unwrap(), &format!("{id} bp"));
        for (n, (p, q)) in score
            .precisions
            .iter()
            .zip(e["precisions"].as_array().unwrap())
            .enumerate()
        {
            close(
                *p,
                q.as_f64().unwrap(),
                &format!("{id} precision {}", n + 1),
            );
        }
        let sig = metric.signature();
        assert_eq!(
            sig.to_string(),
            with_our_version(e["signature"].as_str().unwrap(), &version),
            "{id} signature"
        );
        assert_eq!(
            score.format(2, &sig),
            with_our_version(e["text"].as_str().unwrap(), &version),
            "{id} text line"
        );
    }
}

#[test]
fn corpus_chrf_matches_sacrebleu() {
    let exp = expected();
    let version = sacrebleu_version(&exp);
    let cases = exp["chrf"].as_array().expect("chrf cases");
    assert!(cases.len() >= 40, "expected many chrF cases");
    for case in cases {
        let id = case["id"].as_str().unwrap_or("?");
        let e = &case["expected"];
        let metric = Chrf::new(chrf_config(&case["config"]), &refs(case)).expect("refs");
        let hyps = lines(case["hyp"].as_str().expect("hyp"));
        let sums = metric.segment_stats(&hyps).expect("stats").sum();
        assert_eq!(sums, u64s(&e["stats"]), "{id} statistics");
        let score = metric.score_from_sums(&sums);
        close(
            score.score,
            e["score"].as_f64().unwrap(),
            &format!("{id} score"),
        );
        assert_eq!(score.name, e["name"].as_str().unwrap(), "{id} name");
        assert_eq!(
            metric.signature().to_string(),
            with_our_version(e["signature"].as_str().unwrap(), &version),
            "{id} signature"
        );
    }
}

#[test]
fn sentence_scores_match_sacrebleu() {
    let exp = expected();
    let version = sacrebleu_version(&exp);
    for case in exp["sentence"].as_array().expect("sentence cases") {
        let id = case["id"].as_str().unwrap_or("?");
        let limit = case["limit"].as_u64().unwrap() as usize;
        let mut hyps = lines(case["hyp"].as_str().unwrap());
        hyps.truncate(limit);
        let ref_streams: Vec<Vec<String>> = refs(case)
            .into_iter()
            .map(|mut s| {
                s.truncate(limit);
                s
            })
            .collect();
        let expected_scores = case["scores"].as_array().unwrap();
        assert_eq!(hyps.len(), expected_scores.len(), "{id} lines");
        let (scores, sig): (Vec<f64>, String) = if case["metric"] == "bleu" {
            let cfg = bleu_config(&case["config"]);
            // The one-sentence API must agree with the cached per-segment path.
            let one: Vec<&str> = ref_streams.iter().map(|s| s[0].as_str()).collect();
            let first = emvq_bleu::sentence_bleu(&hyps[0], &one, &cfg).unwrap();
            let m = Bleu::new(cfg, &ref_streams).unwrap();
            let scores: Vec<f64> = m
                .sentence_scores(&hyps)
                .unwrap()
                .iter()
                .map(|s| s.score)
                .collect();
            close(first.score, scores[0], &format!("{id} sentence_bleu"));
            (scores, m.signature().to_string())
        } else {
            let cfg = chrf_config(&case["config"]);
            let one: Vec<&str> = ref_streams.iter().map(|s| s[0].as_str()).collect();
            let first = emvq_bleu::sentence_chrf(&hyps[0], &one, &cfg).unwrap();
            let m = Chrf::new(cfg, &ref_streams).unwrap();
            let scores: Vec<f64> = m
                .sentence_scores(&hyps)
                .unwrap()
                .iter()
                .map(|s| s.score)
                .collect();
            close(first.score, scores[0], &format!("{id} sentence_chrf"));
            (scores, m.signature().to_string())
        };
        for (i, (got, want)) in scores.iter().zip(expected_scores).enumerate() {
            close(
                *got,
                want.as_f64().unwrap(),
                &format!("{id} line {}", i + 1),
            );
        }
        assert_eq!(
            sig,
            with_our_version(case["signature"].as_str().unwrap(), &version),
            "{id} signature"
        );
    }
}

#[test]
fn sentence_bleu_defaults_use_effective_order() {
    let cfg = BleuConfig::sentence();
    assert!(cfg.effective_order);
    assert_eq!(cfg.smoothing, Smoothing::Exp);
    assert_eq!(cfg.tokenizer, Tokenizer::Tok13a);
    assert!(!BleuConfig::default().effective_order);
}

fn paired_results<M: StatsMetric>(
    metric: &M,
    test: &str,
    systems: &[Vec<String>],
    n: usize,
) -> Vec<emvq_bleu::PairedResult> {
    let stats: Vec<_> = systems
        .iter()
        .map(|h| metric.segment_stats(h).expect("stats"))
        .collect();
    let seed = Some(emvq_bleu::significance::DEFAULT_SEED);
    let start = std::time::Instant::now();
    let res = if test == "bs" {
        emvq_bleu::paired_bs(metric, &stats[0], &stats[1..], n, seed).unwrap()
    } else {
        emvq_bleu::paired_ar(metric, &stats[0], &stats[1..], n, None, seed).unwrap()
    };
    if test == "bs" && !cfg!(debug_assertions) {
        assert!(
            start.elapsed().as_secs_f64() < 1.0,
            "bootstrap took {:?}",
            start.elapsed()
        );
    }
    res
}

#[test]
fn paired_tests_agree_with_sacrebleu() {
    let exp = expected();
    let version = sacrebleu_version(&exp);
    for case in exp["paired"].as_array().expect("paired cases") {
        let id = case["id"].as_str().unwrap();
        let test = case["test"].as_str().unwrap();
        let n = case["n_samples"].as_u64().unwrap() as usize;
        let ref_streams = refs(case);
        let systems: Vec<Vec<String>> = case["systems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| lines(s.as_str().unwrap()))
            .collect();
        let bleu = Bleu::new(BleuConfig::default(), &ref_streams).unwrap();
        let chrf = Chrf::new(ChrfConfig::default(), &ref_streams).unwrap();
        for (name, ours, sig) in [
            (
                "BLEU",
                paired_results(&bleu, test, &systems, n),
                bleu.signature(),
            ),
            (
                "chrF2",
                paired_results(&chrf, test, &systems, n),
                chrf.signature(),
            ),
        ] {
            let theirs = case["results"][name].as_array().expect("metric results");
            assert_eq!(ours.len(), theirs.len());
            for (i, (o, t)) in ours.iter().zip(theirs).enumerate() {
                let what = format!("{id} {name} system {i}");
                close(
                    o.score,
                    t["score"].as_f64().unwrap(),
                    &format!("{what} score"),
                );
                match (o.p_value, t["p_value"].as_f64()) {
                    (None, None) => {}
                    (Some(p), Some(q)) => {
                        assert_eq!(p < 0.05, q < 0.05, "{what}: p = {p}, sacreBLEU p = {q}")
                    }
                    other => panic!("{what}: p-values {other:?}"),
                }
                match (o.ci, t["ci"].as_f64()) {
                    (None, None) => {}
                    (Some(ci), Some(tci)) => {
                        assert!((ci - tci).abs() <= 0.2, "{what}: CI {ci} vs {tci}");
                        let (m, tm) = (o.mean.unwrap(), t["mean"].as_f64().unwrap());
                        assert!((m - tm).abs() <= 0.2, "{what}: mean {m} vs {tm}");
                    }
                    other => panic!("{what}: CIs {other:?}"),
                }
            }
            let sig = sig.with_test(test, n, Some(emvq_bleu::significance::DEFAULT_SEED));
            assert_eq!(
                sig.to_string(),
                with_our_version(case["signatures"][name].as_str().unwrap(), &version),
                "{id} {name} signature"
            );
        }
    }
}
