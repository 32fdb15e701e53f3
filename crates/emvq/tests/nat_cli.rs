//! End-to-end tests of the NAT evaluation commands through the `emvq`
//! binary, on a tiny made-up corpus in a temporary folder: a tiny teacher,
//! a tiny latent NAT (soft EM) and a tiny plain NAT are trained for a few
//! steps; `eval` and `translate` work on the NAT runs (one pass and
//! `--rescore S`) as on teacher runs; `bench-latency` writes the table with
//! the expected rows, "not trained" ones included, and the report.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const WORDS: [(&str, &str); 8] = [
    ("the", "der"),
    ("a", "ein"),
    ("man", "Mann"),
    ("dog", "Hund"),
    ("runs", "läuft"),
    ("sleeps", "schläft"),
    ("here", "hier"),
    ("now", "jetzt"),
];

/// `n` made-up parallel sentences of 3–6 words.
fn corpus(n: usize, offset: usize) -> (Vec<String>, Vec<String>) {
    let (mut en, mut de) = (vec![], vec![]);
    for i in 0..n {
        let k = i + offset;
        let picks: Vec<usize> = (0..3 + k % 4)
            .map(|j| (k * 7 + j * 5 + j * j) % WORDS.len())
            .collect();
        en.push(
            picks
                .iter()
                .map(|&p| WORDS[p].0)
                .collect::<Vec<_>>()
                .join(" ")
                + ".",
        );
        de.push(
            picks
                .iter()
                .map(|&p| WORDS[p].1)
                .collect::<Vec<_>>()
                .join(" ")
                + ".",
        );
    }
    (en, de)
}

fn write_split(dir: &Path, stem: &str, (en, de): &(Vec<String>, Vec<String>)) {
    std::fs::write(dir.join(format!("{stem}.en")), en.join("\n") + "\n").unwrap();
    std::fs::write(dir.join(format!("{stem}.de")), de.join("\n") + "\n").unwrap();
}

fn data_table(data: &Path) -> String {
    format!(
        "[data]\ndata_dir = \"{}\"\ntrain = \"train\"\nvalid = \"val\"\ntests = [\"test_2016_flickr\"]\n\
         vocab_size = 300\nmax_tokens = 64\nseed = 1\n\n[data.filters]\nmax_len = 40\n",
        data.display()
    )
}

const SIZES: &str = "vocab_size = 0\nd_model = 32\nheads = 2\nd_ff = 64\nencoder_layers = 1\ndecoder_layers = 1\n\
dropout = 0.0\nattention_dropout = 0.0\nrelu_dropout = 0.0\nprenorm = true\ntie_embeddings = true\n\
max_positions = 64\nlayer_norm_eps = 1e-6\nactivation = \"relu\"\npad_id = 0\nbos_id = 1\neos_id = 2\n";

fn teacher_config(data: &Path) -> String {
    format!(
        "name = \"tiny\"\ndevice = \"cpu\"\nseed = 3\nthreads = 1\n\n{}\n[model]\n{SIZES}\n[train]\n\
         lr_scale = 2.0\nwarmup_steps = 4\nmax_steps = 4\nadam_beta1 = 0.9\nadam_beta2 = 0.98\nadam_eps = 1e-9\n\
         label_smoothing = 0.1\nclip_norm = 1.0\naccumulation = 1\nlog_every = 1\neval_every = 4\neval_bleu = false\n\
         checkpoint_every = 2\nkeep_last = 2\naverage_last = 2\n\n[decode]\nbeam_size = 2\nlength_penalty = 0.6\n\
         max_len_a = 1.5\nmax_len_b = 5\nbatch_sentences = 8\n",
        data_table(data)
    )
}

const NAT_TRAIN: &str = "[train]\nlr_scale = 2.0\nwarmup_steps = 4\nmax_steps = 4\nadam_beta1 = 0.9\nadam_beta2 = 0.98\n\
adam_eps = 1e-9\nclip_norm = 1.0\nlog_every = 1\neval_every = 2\neval_bleu = true\ncheckpoint_every = 2\n\
keep_last = 2\naverage_last = 2\n\n[decode]\nlatent_beam = 1\nbatch_sentences = 8\n";

const LENGTH: &str =
    "[model.length]\nrule = \"predicted\"\nratio_a = 1.0\nratio_b = 0.0\nmax_offset = 8\n";

fn latent_config(data: &Path) -> String {
    format!(
        "name = \"em\"\ndevice = \"cpu\"\nseed = 1\nthreads = 1\nteacher = \"runs/teacher/tiny\"\ninit_from_teacher = true\n\n\
         {}\n[model]\n{SIZES}predictor_layers = 1\ncompress_steps = 1\nresidual_blocks = 1\n\n\
         [model.bottleneck]\nkind = \"em\"\nbits = 4\nslices = 1\nsamples = 4\nreseed_dead = true\n\n{LENGTH}\n\
         [model.schedule]\nmix_gold = true\nmix_linear_steps = 4\nmix_exp_steps = 2\nlatent_loss_start = 1\n\
         latent_loss_weight = 1.0\nlabel_smoothing = 0.0\n\n{NAT_TRAIN}",
        data_table(data)
    )
}

fn plain_config(data: &Path) -> String {
    format!(
        "name = \"plain\"\ndevice = \"cpu\"\nseed = 1\nthreads = 1\nteacher = \"runs/teacher/tiny\"\ninit_from_teacher = true\n\n\
         {}\n[model]\n{SIZES}label_smoothing = 0.0\nlength_loss_weight = 0.1\n\n{LENGTH}\n{NAT_TRAIN}",
        data_table(data).replace(
            "\n\n[data.filters]",
            &format!("\ntrain_dir = \"{}\"\n\n[data.filters]", data.join("distilled").display())
        ),
    )
}

fn emvq(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_emvq"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "emvq failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A data folder (train, val, test and a "distilled" train split for the
/// plain NAT's `[data] train_dir`) and a work folder with `teacher.toml`,
/// `em.toml`, `plain.toml` and the tiny teacher trained into
/// `runs/teacher/tiny`.
fn teacher_and_configs() -> (tempfile::TempDir, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    write_split(data.path(), "train", &corpus(48, 0));
    write_split(data.path(), "val", &corpus(8, 100));
    write_split(data.path(), "test_2016_flickr", &corpus(6, 200));
    std::fs::create_dir(data.path().join("distilled")).unwrap();
    write_split(&data.path().join("distilled"), "train", &corpus(48, 0));
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    for (file, text) in [
        ("teacher.toml", teacher_config(data.path())),
        ("em.toml", latent_config(data.path())),
        ("plain.toml", plain_config(data.path())),
    ] {
        std::fs::write(w.join(file), text).unwrap();
    }
    let teacher = [
        "train-teacher",
        "--config",
        "teacher.toml",
        "--runs",
        "runs",
    ];
    ok(emvq(w, &teacher));
    (data, work)
}

#[test]
fn nat_runs_eval_translate_and_bench_latency() {
    let (_data, work) = teacher_and_configs();
    let w = work.path();
    ok(emvq(
        w,
        &["train-nat", "--config", "em.toml", "--runs", "runs"],
    ));
    ok(emvq(
        w,
        &["train-nat", "--config", "plain.toml", "--runs", "runs"],
    ));
    for run in ["runs/nat/em", "runs/nat/plain"] {
        for file in [
            "config.toml",
            "tokenizer.json",
            "metrics.jsonl",
            "model.safetensors",
        ] {
            assert!(w.join(run).join(file).is_file(), "{run}/{file} missing");
        }
    }
    let metrics = std::fs::read_to_string(w.join("runs/nat/plain/metrics.jsonl")).unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("\"kind\":\"final\"") && l.contains("bleu_greedy")),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l.contains("\"length_ce\"")),
        "{metrics}"
    );

    // eval: one pass, then rescoring, into the run's results.json.
    for (run, kind) in [
        ("runs/nat/em", "latent_nat"),
        ("runs/nat/plain", "plain_nat"),
    ] {
        let out = ok(emvq(w, &["eval", "--run", run, "--latency-sentences", "3"]));
        let printed = String::from_utf8(out.stdout).unwrap();
        assert!(
            printed.contains("BLEU|nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp"),
            "{printed}"
        );
        ok(emvq(w, &["eval", "--run", run, "--rescore", "3"]));
        let results = json(&w.join(run).join("results.json"));
        let one = &results["test_2016_flickr"];
        assert_eq!(one["kind"], kind);
        assert_eq!(one["sentences"], 6);
        assert_eq!(one["rescore"], serde_json::Value::Null);
        assert_eq!(one["latency"]["sentences"], 3);
        let hyps = w.join(one["translations"].as_str().unwrap());
        assert_eq!(std::fs::read_to_string(hyps).unwrap().lines().count(), 6);
        let best = &results["test_2016_flickr.rescore3"];
        assert_eq!(best["rescore"], 3);
        assert_eq!(best["latency"]["sentences"], 6);
        assert!(best["teacher"]
            .as_str()
            .unwrap()
            .ends_with("runs/teacher/tiny"));
        assert!(best["bleu"]["score"].as_f64().unwrap() >= 0.0);
        assert_eq!(best["rescore_score"], "log_prob");
        // Per-token ranking is stored beside it, not over it.
        let rescore_by = |score: &str| {
            emvq(
                w,
                &[
                    "eval",
                    "--run",
                    run,
                    "--rescore",
                    "3",
                    "--rescore-score",
                    score,
                ],
            )
        };
        ok(rescore_by("per_token"));
        let results = json(&w.join(run).join("results.json"));
        assert_eq!(
            results["test_2016_flickr.rescore3"]["rescore_score"],
            "log_prob"
        );
        let per_token = &results["test_2016_flickr.rescore3.per_token"];
        assert_eq!(per_token["rescore_score"], "per_token");
        assert!(per_token["translations"]
            .as_str()
            .unwrap()
            .ends_with("test_2016_flickr.rescore3.per_token.txt"));
        assert!(!rescore_by("best").status.success());
        // Options of the other kind of run are refused.
        assert!(!emvq(w, &["eval", "--run", run, "--beam", "2"])
            .status
            .success());
    }
    for nat_only in [
        &["--rescore", "2"][..],
        &["--collapse-repeats", "true"][..],
        &["--refine-steps", "1"][..],
        &["--bf16-output", "true"][..],
    ] {
        let mut args = vec!["eval", "--run", "runs/teacher/tiny"];
        args.extend_from_slice(nat_only);
        assert!(!emvq(w, &args).status.success(), "{args:?}");
    }

    // eval --oracle-latents: the references decoded from their own latents,
    // stored beside the one pass; refused where there are no latents.
    ok(emvq(
        w,
        &["eval", "--run", "runs/nat/em", "--oracle-latents"],
    ));
    let results = json(&w.join("runs/nat/em/results.json"));
    let oracle = &results["test_2016_flickr.oracle_latents"];
    assert_eq!(oracle["sentences"], 6);
    assert_eq!(oracle["latency"], serde_json::Value::Null);
    let hyps = w.join(oracle["translations"].as_str().unwrap());
    assert_eq!(std::fs::read_to_string(hyps).unwrap().lines().count(), 6);
    assert!(oracle["bleu"]["score"].as_f64().unwrap() >= 0.0);
    for (run, extra) in [
        ("runs/nat/plain", &[][..]),
        ("runs/teacher/tiny", &[][..]),
        ("runs/nat/em", &["--rescore", "2"][..]),
        ("runs/nat/em", &["--collapse-repeats", "true"][..]),
        ("runs/nat/em", &["--refine-steps", "1"][..]),
    ] {
        let mut args = vec!["eval", "--run", run, "--oracle-latents"];
        args.extend_from_slice(extra);
        assert!(!emvq(w, &args).status.success(), "{args:?}");
    }

    // eval --collapse-repeats overrides the run's [decode] setting: the
    // stored translations are the raw ones with neighbouring repeats
    // collapsed, and the result says so.
    let one_pass = |collapse: &str| {
        let out = ok(emvq(
            w,
            &[
                "eval",
                "--run",
                "runs/nat/em",
                "--collapse-repeats",
                collapse,
            ],
        ));
        let printed = String::from_utf8(out.stdout).unwrap();
        assert_eq!(printed.contains("repeats collapsed"), collapse == "true");
        let one = json(&w.join("runs/nat/em/results.json"))["test_2016_flickr"].clone();
        assert_eq!(one["collapse_repeats"], collapse == "true");
        std::fs::read_to_string(w.join(one["translations"].as_str().unwrap())).unwrap()
    };
    let raw = one_pass("false");
    let collapsed = one_pass("true");
    assert_eq!(raw.lines().count(), collapsed.lines().count());
    for (r, c) in raw.lines().zip(collapsed.lines()) {
        // Collapsing only drops subword tokens: no line grows.
        assert!(c.len() <= r.len(), "{r:?} → {c:?}");
    }

    // eval --refine-steps: two more decoder passes, stored beside the one
    // pass (not over it); refused for the plain NAT, which has no latents
    // to refine from.
    let before = json(&w.join("runs/nat/em/results.json"))["test_2016_flickr"].clone();
    let out = ok(emvq(
        w,
        &["eval", "--run", "runs/nat/em", "--refine-steps", "2"],
    ));
    assert!(String::from_utf8(out.stdout).unwrap().contains("3 passes"));
    let results = json(&w.join("runs/nat/em/results.json"));
    assert_eq!(results["test_2016_flickr"], before);
    let refined = &results["test_2016_flickr.refine2"];
    assert_eq!(refined["refine_steps"], 2);
    assert_eq!(refined["sentences"], 6);
    assert!(refined["translations"]
        .as_str()
        .unwrap()
        .ends_with("test_2016_flickr.nat.refine2.txt"));
    assert!(!emvq(
        w,
        &["eval", "--run", "runs/nat/plain", "--refine-steps", "1"]
    )
    .status
    .success());

    // eval --bf16-output: the output projection in bfloat16, stored beside
    // the float32 pass; refused for the plain NAT.
    let out = ok(emvq(
        w,
        &["eval", "--run", "runs/nat/em", "--bf16-output", "true"],
    ));
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .contains("bf16 output"));
    let results = json(&w.join("runs/nat/em/results.json"));
    assert_eq!(results["test_2016_flickr"], before);
    assert_eq!(results["test_2016_flickr"]["bf16_output"], false);
    let bf16 = &results["test_2016_flickr.bf16"];
    assert_eq!(bf16["bf16_output"], true);
    assert_eq!(bf16["sentences"], 6);
    assert!(bf16["translations"]
        .as_str()
        .unwrap()
        .ends_with("test_2016_flickr.nat.bf16.txt"));
    assert!(!emvq(
        w,
        &["eval", "--run", "runs/nat/plain", "--bf16-output", "true"]
    )
    .status
    .success());

    // translate: stdin → one line per input line, one pass and rescored.
    for extra in [&[][..], &["--rescore", "2"][..]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_emvq"))
            .args(["translate", "--run", "runs/nat/em"])
            .args(extra)
            .current_dir(w)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"the man runs.\na dog sleeps here now.\n")
            .unwrap();
        let out = ok(child.wait_with_output().unwrap());
        assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 2);
    }

    // bench-latency: every row, the missing run as "not trained", a report.
    ok(emvq(
        w,
        &[
            "bench-latency",
            "--teacher",
            "runs/teacher/tiny",
            "--nat",
            "runs/nat/em",
            "--nat",
            "runs/nat/plain",
            "--nat",
            "runs/nat/never",
            "--nat-bf16",
            "runs/nat/em",
            "--rescore",
            "2",
            "--npd",
            "2,3",
            "--sentences",
            "4",
            "--name",
            "t",
            "--beam",
            "2",
            "--report",
            "report",
        ],
    ));
    let table = json(&w.join("runs/latency/t/table.json"));
    assert_eq!(table["sentences"], 4);
    let rows: Vec<(String, bool)> = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["decoding"].as_str().unwrap().to_string(),
                r["trained"].as_bool().unwrap(),
            )
        })
        .collect();
    let expected = [
        ("beam 2", true),
        ("greedy", true),
        ("one pass", true),
        ("rescore 2", true),
        ("one pass", true),
        ("NPD 2", true),
        ("NPD 3", true),
        ("one pass", false),
        ("one pass, bf16 output", true),
        ("rescore 2, bf16 output", true),
    ];
    assert_eq!(rows, expected.map(|(d, t)| (d.to_string(), t)));
    let em_row = &table["rows"][2];
    assert_eq!(em_row["model"], "VQ-VAE with EM");
    assert_eq!(em_row["bottleneck"], "EM 2^4");
    assert_eq!(em_row["distilled"], false);
    assert!(em_row["code_perplexity"].as_f64().unwrap() >= 1.0);
    assert!(em_row["speedup_vs_greedy"].as_f64().unwrap() > 0.0);
    assert_eq!(table["rows"][4]["model"], "NAT + distillation");
    assert_eq!(table["rows"][0]["speedup_vs_beam"], 1.0);
    let md = std::fs::read_to_string(w.join("runs/latency/t/table.md")).unwrap();
    assert!(
        md.contains("| runs/nat/never | one pass | — | — | — | not trained |"),
        "{md}"
    );
    let report = std::fs::read_to_string(w.join("report/report.md")).unwrap();
    assert!(report.contains("| model | decoding |"), "{report}");
    for png in [
        "teacher_tiny_loss.png",
        "nat_em_loss.png",
        "nat_em_code_ppl.png",
        "nat_em_code_usage.png",
        "nat_plain_loss.png",
    ] {
        assert!(
            w.join("report").join(png).is_file(),
            "{png} missing:\n{report}"
        );
    }
}

/// The records of one `kind` in a run's metrics.jsonl.
fn records(run: &Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["kind"] == kind)
        .collect()
}

/// A safetensors file's tensor table and data, without its metadata (which
/// holds the training time).
fn tensors(path: &Path) -> (serde_json::Value, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header.as_object_mut().unwrap().remove("__metadata__");
    (header, bytes[8 + n..].to_vec())
}

fn has(record: &serde_json::Value, key: &str) -> bool {
    record.get(key).is_some()
}

#[test]
fn both_nat_trainers_resume_exactly_and_keep_their_records() {
    let (_data, work) = teacher_and_configs();
    let w = work.path();
    for (file, name) in [("em.toml", "em"), ("plain.toml", "plain")] {
        // Straight: 4 steps; interrupted: 2 steps, then --resume to 4.
        ok(emvq(
            w,
            &["train-nat", "--config", file, "--runs", "straight"],
        ));
        let split_args = ["train-nat", "--config", file, "--runs", "split"];
        ok(emvq(w, &[&split_args[..], &["--max-steps", "2"]].concat()));
        let again = emvq(w, &split_args);
        assert!(
            !again.status.success(),
            "{name}: an existing run is not overwritten"
        );
        assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));
        ok(emvq(w, &[&split_args[..], &["--resume"]].concat()));

        let straight = w.join("straight/nat").join(name);
        let split = w.join("split/nat").join(name);
        let losses = |run: &Path| -> Vec<(i64, u64)> {
            records(run, "train")
                .iter()
                .map(|r| {
                    (
                        r["step"].as_i64().unwrap(),
                        r["loss"].as_f64().unwrap().to_bits(),
                    )
                })
                .collect()
        };
        let expected = losses(&straight);
        assert_eq!(
            expected.iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![1, 2, 3, 4],
            "{name}"
        );
        assert_eq!(
            losses(&split),
            expected,
            "{name}: resumed training repeats the losses"
        );
        let last_valid = |run: &Path| {
            records(run, "valid").last().unwrap()["loss"]
                .as_f64()
                .unwrap()
                .to_bits()
        };
        assert_eq!(last_valid(&split), last_valid(&straight), "{name}");
        for file in [
            "config.toml",
            "tokenizer.json",
            "log.txt",
            "model.safetensors",
        ] {
            assert!(split.join(file).is_file(), "{name}: {file} missing");
        }
        assert_eq!(
            tensors(&split.join("model.safetensors")),
            tensors(&straight.join("model.safetensors")),
            "{name}: the final (averaged) model"
        );

        // What each kind writes: the latent NAT its codebook statistics.
        let latent = name == "em";
        let train = &records(&straight, "train")[0];
        for key in [
            "lr",
            "grad_norm",
            "tokens_per_s",
            "epoch",
            "seconds",
            "loss",
            "token_nll",
        ] {
            assert!(
                has(train, key),
                "{name}: train record without {key}: {train}"
            );
        }
        assert_eq!(has(train, "code_perplexity"), latent, "{train}");
        assert_eq!(has(train, "dead_codes"), latent, "{train}");
        assert!(has(train, "length_ce"), "{train}");
        let fin = &records(&straight, "final")[0];
        for key in ["loss", "tokens", "bleu_greedy", "seconds", "token_nll"] {
            assert!(has(fin, key), "{name}: final record without {key}: {fin}");
        }
        assert_eq!(fin["step"], 4);
        for key in ["ppl", "code_perplexity", "codes_used"] {
            assert_eq!(has(fin, key), latent, "{name}: {key} in {fin}");
        }
    }
}
