//! The `emvq-bleu` command line: sacreBLEU's text layout, paired tests,
//! sentence level, and the errors and warnings for bad input.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use clap::Parser;
use common::{expected, resolve, with_our_version};
use emvq_bleu::BleuArgs;
use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_emvq-bleu"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run emvq-bleu")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("UTF-8 stdout")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("UTF-8 path").to_string()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write");
    p
}

/// sacreBLEU's short options as this CLI spells them.
fn translate(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut metrics = Vec::new();
    let mut in_metrics = false;
    for a in args {
        let a = a.as_str();
        if in_metrics && !a.starts_with('-') {
            metrics.push(a.to_string());
            continue;
        }
        in_metrics = false;
        match a {
            "-m" => in_metrics = true,
            "-s" => out.push("--smooth-method".to_string()),
            "-lc" => out.push("--lowercase".to_string()),
            "-tok" => out.push("--tokenize".to_string()),
            other => out.push(other.to_string()),
        }
    }
    if !metrics.is_empty() {
        out.push("-m".to_string());
        out.push(metrics.join(","));
    }
    out
}

#[test]
fn text_output_matches_sacrebleu_cli() {
    let exp = expected();
    let version = exp["sacrebleu_version"].as_str().unwrap().to_string();
    for case in exp["cli"].as_array().expect("cli cases") {
        let mut args: Vec<String> = Vec::new();
        for r in case["refs"].as_array().unwrap() {
            args.push("-r".into());
            args.push(path_str(&resolve(r.as_str().unwrap())));
        }
        for h in case["hyps"].as_array().unwrap() {
            args.push("-i".into());
            args.push(path_str(&resolve(h.as_str().unwrap())));
        }
        let extra: Vec<String> = case["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        args.extend(translate(&extra));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&args);
        assert!(out.status.success(), "{}: {}", case["id"], stderr(&out));
        assert_eq!(
            stdout(&out),
            with_our_version(case["stdout"].as_str().unwrap(), &version),
            "{}",
            case["id"]
        );
    }
}

#[test]
fn args_parse_as_documented() {
    let args = BleuArgs::try_parse_from([
        "emvq-bleu",
        "-r",
        "a",
        "-r",
        "b",
        "-i",
        "x",
        "-i",
        "y",
        "--metrics",
        "bleu,chrf",
        "--paired-bs",
        "--paired-n",
        "50",
        "--seed",
        "7",
        "--json",
    ])
    .unwrap();
    assert_eq!(args.refs.len(), 2);
    assert_eq!(args.inputs.len(), 2);
    assert_eq!(args.metrics, ["bleu", "chrf"]);
    assert!(args.paired_bs && args.json);
    assert_eq!(args.paired_n, Some(50));
    assert!(
        BleuArgs::try_parse_from(["emvq-bleu", "-r", "a", "--paired-bs", "--paired-ar"]).is_err()
    );
    assert!(BleuArgs::try_parse_from(["emvq-bleu", "-r", "a", "--tokenize", "moses"]).is_err());
    assert!(BleuArgs::try_parse_from(["emvq-bleu", "-i", "x"]).is_err());
}

#[test]
fn paired_tests_from_the_command_line() {
    let refs = path_str(&resolve("shared:multi30k/test_2016_flickr.de.gz"));
    let systems: Vec<String> = ["m30k_base.txt.gz", "m30k_sys1.txt.gz", "m30k_sys2.txt.gz"]
        .iter()
        .map(|s| path_str(&resolve(s)))
        .collect();
    let exp = expected();
    let bs = exp["paired"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "m30k-bs")
        .expect("bs case");
    let out = run(&[
        "-r",
        &refs,
        "-i",
        &systems[0],
        "-i",
        &systems[1],
        "-i",
        &systems[2],
        "-m",
        "bleu,chrf",
        "--paired-bs",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(json["test"], "bs");
    assert_eq!(json["n_samples"], 1000);
    let rows = json["systems"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows[0]["system"]
        .as_str()
        .unwrap()
        .starts_with("Baseline: "));
    for metric in ["BLEU", "chrF2"] {
        assert!(rows[0][metric]["p_value"].is_null());
        for (i, row) in rows.iter().enumerate().skip(1) {
            let p = row[metric]["p_value"].as_f64().unwrap();
            let q = bs["results"][metric][i]["p_value"].as_f64().unwrap();
            assert_eq!(p < 0.05, q < 0.05, "{metric} system {i}: {p} vs {q}");
            let ci = row[metric]["ci"].as_f64().unwrap();
            let tci = bs["results"][metric][i]["ci"].as_f64().unwrap();
            assert!(
                (ci - tci).abs() <= 0.2,
                "{metric} system {i}: CI {ci} vs {tci}"
            );
        }
    }
    let sig = json["signatures"]["BLEU"].as_str().unwrap();
    assert!(
        sig.starts_with("nrefs:1|bs:1000|seed:12345|case:mixed|"),
        "{sig}"
    );

    let out = run(&[
        "-r",
        &refs,
        "-i",
        &systems[0],
        "-i",
        &systems[1],
        "--paired-ar",
        "--paired-n",
        "2000",
        "--seed",
        "3",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("Paired approximate randomization test with 2000 trials"),
        "{text}"
    );
    assert!(text.contains("(p = 0.0005)*"), "{text}");
    assert!(text.contains("nrefs:1|ar:2000|seed:3|"), "{text}");

    let out = run(&["-r", &refs, "-i", &systems[0], "--paired-bs"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("at least two systems"));
}

#[test]
fn sentence_level_confidence_and_json() {
    let exp = expected();
    let case = exp["sentence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "m30k-sent-default")
        .expect("sentence case");
    let refs = path_str(&resolve("shared:multi30k/test_2016_flickr.de.gz"));
    let hyp = path_str(&resolve("m30k_base.txt.gz"));
    let out = run(&["-r", &refs, "-i", &hyp, "--sentence-level", "-w", "4"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1000);
    let first = case["scores"][0].as_f64().unwrap();
    assert!(
        lines[0].contains(&format!(
            "|eff:yes|tok:13a|smooth:exp|version:{} = {first:.4} ",
            emvq_bleu::SCORER_VERSION
        )),
        "{}",
        lines[0]
    );

    let out = run(&[
        "-r",
        &refs,
        "-i",
        &hyp,
        "--confidence",
        "--confidence-n",
        "200",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("BLEU|nrefs:1|bs:200|seed:12345|"),
        "{text}"
    );
    assert!(text.contains(" (μ = "), "{text}");

    let out = run(&[
        "-r",
        &refs,
        "-i",
        &hyp,
        "--json",
        "-m",
        "bleu,chrf",
        "--chrf-word-order",
        "2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    let arr = json.as_array().expect("two metrics give a list");
    assert_eq!(arr[0]["name"], "BLEU");
    assert_eq!(arr[0]["tok"], "13a");
    assert_eq!(arr[0]["counts"].as_array().unwrap().len(), 4);
    assert_eq!(arr[1]["name"], "chrF2++");
    assert_eq!(arr[1]["nw"], "2");
    assert_eq!(arr[1]["version"], emvq_bleu::SCORER_VERSION);

    let out = run(&["-r", &refs, "-i", &hyp, "-i", &refs, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: Value = serde_json::from_str(&stdout(&out)).expect("one JSON document");
    let systems = json.as_array().expect("a list of systems");
    assert_eq!(systems.len(), 2);
    assert_eq!(systems[1]["system"], refs.as_str());
    assert_eq!(systems[1]["scores"][0]["score"], 100.0);
}

#[test]
fn reads_standard_input() {
    let dir = tempfile::tempdir().unwrap();
    let r = write(
        dir.path(),
        "ref.txt",
        "Ein Hund läuft.\nZwei Katzen.\n".as_bytes(),
    );
    let mut child = bin()
        .args(["-r", &path_str(&r)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all("Ein Hund läuft.\nZwei Katzen.\n".as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(" = 100.0 100.0/100.0/100.0/100.0 (BP = 1.000"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn bad_input_gives_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let r = write(d, "ref.txt", b"a b c\nd e f\ng h i\n");
    let short = write(d, "short.txt", b"a b c\nd e f\n");
    let out = run(&["-r", &path_str(&r), "-i", &path_str(&short)]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("short.txt") && err.contains("ref.txt"),
        "{err}"
    );
    assert!(err.contains("2 lines") && err.contains("3 lines"), "{err}");

    let bad = write(d, "bad.txt", b"a b c\nd \xff e\ng h i\n");
    let out = run(&["-r", &path_str(&r), "-i", &path_str(&bad)]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("bad.txt") && err.contains("line 2") && err.contains("UTF-8"),
        "{err}"
    );

    let missing = d.join("missing.txt");
    let out = run(&["-r", &path_str(&r), "-i", &path_str(&missing)]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("missing.txt"), "{}", stderr(&out));
    let out = run(&["-r", &path_str(&missing), "-i", &path_str(&r)]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("missing.txt"), "{}", stderr(&out));

    let out = run(&["-r", &path_str(&r), "-i", &path_str(&r), "--seed", "x"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--seed"), "{}", stderr(&out));
}

#[test]
fn empty_lines_and_files_do_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let r = write(d, "ref.txt", b"a b c\n\nd\n");
    let h = write(d, "hyp.txt", b"\n\n\n");
    let out = run(&["-r", &path_str(&r), "-i", &path_str(&h), "-m", "bleu,chrf"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(" = 0.0 0.0/0.0/0.0/0.0 (BP = 0.000 ratio = 0.000 hyp_len = 0 ref_len = 4)"),
        "{text}"
    );
    assert!(text.contains("chrF2|"), "{text}");

    let empty = write(d, "empty.txt", b"");
    let out = run(&[
        "-r",
        &path_str(&empty),
        "-i",
        &path_str(&empty),
        "-m",
        "bleu,chrf",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&[
        "-r",
        &path_str(&empty),
        "-i",
        &path_str(&empty),
        "-i",
        &path_str(&empty),
        "--paired-bs",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("at least one segment"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn warns_about_tokenized_input_like_sacrebleu() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lines: String = (0..100).map(|i| format!("Satz Nummer {i} .\n")).collect();
    let r = write(d, "ref.txt", lines.as_bytes());
    let out = run(&["-r", &path_str(&r), "-i", &path_str(&r)]);
    assert!(out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("That's 100 lines that end in a tokenized period ('.')"),
        "{err}"
    );
    assert!(
        err.contains("It looks like you forgot to detokenize your test data"),
        "{err}"
    );
    let out = run(&["-r", &path_str(&r), "-i", &path_str(&r), "--force"]);
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    // chrF alone never warns, as in sacreBLEU.
    let out = run(&["-r", &path_str(&r), "-i", &path_str(&r), "-m", "chrf"]);
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    // 99 such lines are not enough.
    let fewer: String = (0..99).map(|i| format!("Satz {i} .\n")).collect::<String>() + "Ende.\n";
    let f = write(d, "fewer.txt", fewer.as_bytes());
    let out = run(&["-r", &path_str(&f), "-i", &path_str(&f)]);
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    assert!(emvq_bleu::looks_tokenized(
        &lines.lines().collect::<Vec<_>>()
    ));
}
