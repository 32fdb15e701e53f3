//! End-to-end tests of sequence-level distillation through the `emvq`
//! binary, with a tiny teacher trained for two steps on made-up corpora: an
//! interrupted distillation resumes and writes byte for byte the corpus of an
//! uninterrupted one; resuming with other settings is an error until
//! `--restart`; a training config's `[data] train_dir` reads a distilled
//! corpus, and names the key when the folder lacks a file.

use std::path::Path;
use std::process::{Command, Output};

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

/// `n` made-up parallel sentences of 2–5 words, word by word.
fn corpus(n: usize, offset: usize) -> (Vec<String>, Vec<String>) {
    (0..n)
        .map(|i| {
            let k = i + offset;
            let picks: Vec<usize> = (0..2 + k % 4)
                .map(|j| (k * 5 + j * 3 + j * j) % WORDS.len())
                .collect();
            let en: Vec<&str> = picks.iter().map(|&p| WORDS[p].0).collect();
            let de: Vec<&str> = picks.iter().map(|&p| WORDS[p].1).collect();
            (en.join(" ") + ".", de.join(" ") + ".")
        })
        .unzip()
}

fn write_split(dir: &Path, stem: &str, (en, de): &(Vec<String>, Vec<String>)) {
    std::fs::write(dir.join(format!("{stem}.en")), en.join("\n") + "\n").unwrap();
    std::fs::write(dir.join(format!("{stem}.de")), de.join("\n") + "\n").unwrap();
}

/// A tiny teacher config over `data_dir`; `extra_data` adds `[data]` lines.
fn config(data_dir: &Path, extra_data: &str, max_steps: i64) -> String {
    format!(
        r#"name = "tiny"
device = "cpu"
seed = 5
threads = 1

[data]
data_dir = "{data}"
tests = ["test_2016_flickr"]
vocab_size = 300
max_tokens = 64
{extra_data}

[data.filters]
max_len = 40

[model]
vocab_size = 0
d_model = 32
d_ff = 64
heads = 2
encoder_layers = 1
decoder_layers = 1
dropout = 0.0
attention_dropout = 0.0
relu_dropout = 0.0
prenorm = true
tie_embeddings = true
max_positions = 64
layer_norm_eps = 1e-6
activation = "relu"
pad_id = 0
bos_id = 1
eos_id = 2

[train]
lr_scale = 2.0
warmup_steps = 2
adam_beta1 = 0.9
adam_beta2 = 0.98
adam_eps = 1e-9
label_smoothing = 0.1
clip_norm = 1.0
accumulation = 1
max_steps = {max_steps}
log_every = 1
eval_every = 100
eval_bleu = false
checkpoint_every = 100
keep_last = 1
average_last = 1

[decode]
beam_size = 2
length_penalty = 0.6
max_len_a = 1.0
max_len_b = 3
batch_sentences = 8
"#,
        data = data_dir.display()
    )
}

fn emvq(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_emvq"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "info")
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

/// Tiny data (46 training, 6 validation and 4 test pairs) and a teacher
/// trained on it for two steps, in `work/runs/teacher/tiny`.
fn tiny_teacher(work: &Path) {
    let data = work.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_split(&data, "train", &corpus(46, 0));
    write_split(&data, "val", &corpus(6, 100));
    write_split(&data, "test_2016_flickr", &corpus(4, 200));
    let cfg = work.join("tiny.toml");
    std::fs::write(&cfg, config(&data, "", 2)).unwrap();
    ok(emvq(
        work,
        &["train-teacher", "--config", cfg.to_str().unwrap()],
    ));
}

fn record(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("record.json")).unwrap()).unwrap()
}

fn chunk_files(out: &Path) -> usize {
    std::fs::read_dir(out.join("chunks"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count()
}

#[test]
fn an_interrupted_distillation_resumes_to_the_same_corpus() {
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    tiny_teacher(work);
    let distill = |out: &str, extra: &[&str]| {
        let mut args = vec![
            "distill",
            "--teacher",
            "runs/teacher/tiny",
            "--out",
            out,
            "--chunk-sentences",
            "10",
            "--batch-sentences",
            "4",
        ];
        args.extend_from_slice(extra);
        emvq(work, &args)
    };

    // Straight through: 46 lines in 5 chunks.
    let printed = ok(distill("straight", &[])).stdout;
    let printed = String::from_utf8(printed).unwrap();
    assert!(
        printed.contains("distilled 46 sentences") && printed.contains("BLEU|"),
        "{printed}"
    );
    let straight = work.join("straight");
    let r = record(&straight);
    assert_eq!(
        (r["sentences"].as_u64(), r["chunks"].as_u64()),
        (Some(46), Some(5))
    );
    assert_eq!(r["chunks_reused"], 0);
    assert_eq!(r["settings"]["beam"], 2);
    assert!((0.0..=100.0).contains(&r["bleu"].as_f64().unwrap()));
    assert_eq!(r["settings"]["weights"]["bytes"].as_u64().unwrap(), {
        std::fs::metadata(work.join("runs/teacher/tiny/model.safetensors"))
            .unwrap()
            .len()
    });
    // The sources are the training split's, byte for byte; one target a line.
    let source = std::fs::read(straight.join("train.en")).unwrap();
    assert_eq!(source, std::fs::read(work.join("data/train.en")).unwrap());
    let target = std::fs::read_to_string(straight.join("train.de")).unwrap();
    assert_eq!(target.lines().count(), 46);

    // Interrupted after two chunks: no corpus yet.
    ok(distill("split", &["--stop-after-chunks", "2"]));
    let split = work.join("split");
    assert_eq!(chunk_files(&split), 2);
    assert!(!split.join("train.de").exists() && !split.join("record.json").exists());

    // Resuming with other settings is an error naming them…
    let other = distill("split", &["--beam", "1"]);
    assert!(!other.status.success());
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(
        err.contains("beam: 2 → 1") && err.contains("--restart"),
        "{err}"
    );
    assert_eq!(
        chunk_files(&split),
        2,
        "a refused run leaves the chunks alone"
    );

    // … and with the same settings it finishes where it stopped.
    ok(distill("split", &[]));
    let r = record(&split);
    assert_eq!(
        (r["chunks_reused"].as_u64(), r["sentences_decoded"].as_u64()),
        (Some(2), Some(26))
    );
    for file in ["train.en", "train.de"] {
        assert_eq!(
            std::fs::read(split.join(file)).unwrap(),
            std::fs::read(straight.join(file)).unwrap(),
            "{file} differs from the uninterrupted run's"
        );
    }
    assert_eq!(r["bleu"], record(&straight)["bleu"]);
    // The rate counts the decoding time of every chunk, reused ones too.
    let summed = r["decode_seconds"].as_f64().unwrap();
    let rate = r["sentences_per_s"].as_f64().unwrap();
    assert!(summed > 0.0 && (rate * summed - 46.0).abs() < 1e-6, "{r}");

    // A complete folder is left as it is (its record too).
    let before = std::fs::read(split.join("record.json")).unwrap();
    let again = String::from_utf8(ok(distill("split", &[])).stdout).unwrap();
    assert!(again.contains("already complete"), "{again}");
    assert_eq!(std::fs::read(split.join("record.json")).unwrap(), before);

    // --restart discards the chunks of other settings; --limit cuts the corpus.
    ok(distill(
        "split",
        &["--beam", "1", "--limit", "12", "--restart"],
    ));
    let r = record(&split);
    assert_eq!(
        (r["chunks_reused"].as_u64(), r["sentences"].as_u64()),
        (Some(0), Some(12))
    );
    assert_eq!(chunk_files(&split), 2);
    assert_eq!(
        std::fs::read_to_string(split.join("train.de"))
            .unwrap()
            .lines()
            .count(),
        12
    );
}

#[test]
fn a_training_config_reads_a_distilled_corpus_from_train_dir() {
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let data = work.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_split(&data, "train", &corpus(46, 0));
    write_split(&data, "val", &corpus(6, 100));
    write_split(&data, "test_2016_flickr", &corpus(4, 200));
    // A "distilled" corpus of 17 pairs (the targets shortened).
    let distilled = work.join("distilled");
    std::fs::create_dir_all(&distilled).unwrap();
    let (en, de) = corpus(17, 0);
    let de: Vec<String> = de
        .iter()
        .map(|s| s.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect();
    write_split(&distilled, "train", &(en, de));

    let cfg = work.join("on_distilled.toml");
    let key = format!("train_dir = \"{}\"", distilled.display());
    std::fs::write(&cfg, config(&data, &key, 1)).unwrap();
    let out = ok(emvq(
        work,
        &["train-teacher", "--config", cfg.to_str().unwrap()],
    ));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("training pairs from data.train_dir"), "{log}");
    assert!(log.contains("17 training pairs"), "{log}");
    let saved = std::fs::read_to_string(work.join("runs/teacher/tiny/config.toml")).unwrap();
    assert!(saved.contains("train_dir"), "{saved}");

    // A folder without the target file: the error names the key and the file.
    std::fs::remove_file(distilled.join("train.de")).unwrap();
    std::fs::write(
        &cfg,
        config(&data, &key, 1).replace("name = \"tiny\"", "name = \"tiny2\""),
    )
    .unwrap();
    let out = emvq(work, &["train-teacher", "--config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("data.train_dir") && err.contains("train.de"),
        "{err}"
    );
}
