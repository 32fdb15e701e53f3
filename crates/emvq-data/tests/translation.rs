//! Translation pipeline tests on the real Multi30k files in shared/data
//! (`EMVQ_SHARED_DATA` overrides the location). One BPE is trained for the
//! whole file and shared through a `OnceLock`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use emvq_data::corpus::normalize_whitespace;
use emvq_data::{
    prepare_multi30k, read_parallel, BatchConfig, Batcher, DataError, DataPosition,
    PreparedTranslation, SubwordTokenizer, TranslationDataConfig, BOS_ID, EOS_ID, PAD_ID, UNK_ID,
};

fn shared_data() -> PathBuf {
    std::env::var_os("EMVQ_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data"))
        })
}

fn multi30k_dir() -> PathBuf {
    shared_data().join("multi30k")
}

struct Prepared {
    run_dir: tempfile::TempDir,
    data: PreparedTranslation,
}

/// Multi30k prepared once (8k joint BPE trained on train, saved to a temp run dir).
fn prepared() -> &'static Prepared {
    static PREPARED: OnceLock<Prepared> = OnceLock::new();
    PREPARED.get_or_init(|| {
        let run_dir = tempfile::tempdir().expect("temp run dir");
        let data =
            prepare_multi30k(&multi30k_dir(), Some(run_dir.path())).expect("prepare Multi30k");
        Prepared { run_dir, data }
    })
}

#[test]
fn multi30k_split_line_counts() {
    let dir = multi30k_dir();
    let expected = [
        ("train", 29000),
        ("val", 1014),
        ("test_2016_flickr", 1000),
        ("test_2017_flickr", 1000),
        ("test_2017_mscoco", 461),
    ];
    for (stem, lines) in expected {
        let corpus = read_parallel(
            &dir.join(format!("{stem}.en.gz")),
            &dir.join(format!("{stem}.de.gz")),
        )
        .unwrap();
        assert_eq!(corpus.len(), lines, "{stem}");
        assert_eq!(corpus.target.len(), lines, "{stem}");
    }
}

#[test]
fn prepare_encodes_every_split() {
    let p = &prepared().data;
    assert!(p.trained_tokenizer);
    assert_eq!(p.tokenizer.vocab_size(), 8000);
    assert_eq!(p.valid.name, "val");
    assert_eq!(p.valid.encoded.len(), 1014);
    let tests: Vec<(&str, usize)> = p
        .tests
        .iter()
        .map(|t| (t.name.as_str(), t.encoded.len()))
        .collect();
    assert_eq!(
        tests,
        [
            ("test_2016_flickr", 1000),
            ("test_2017_flickr", 1000),
            ("test_2017_mscoco", 461)
        ]
    );
    let stats = p.filter_stats;
    assert_eq!(
        stats.kept + stats.empty + stats.too_long + stats.bad_ratio,
        29000
    );
    assert_eq!(p.train.encoded.len(), stats.kept);
    // The default filters are loose: Multi30k loses almost nothing.
    assert!(stats.kept > 28900, "{stats:?}");
    for split in [&p.train, &p.valid] {
        for seq in split.encoded.source.iter().chain(&split.encoded.target) {
            assert_eq!(seq.last(), Some(&EOS_ID));
            assert!(seq[..seq.len() - 1]
                .iter()
                .all(|&id| id > UNK_ID && (id as usize) < 8000));
        }
    }
}

#[test]
fn bpe_round_trips_every_training_line() {
    let p = &prepared().data;
    let raw = &p.train.raw;
    for (side, lines) in [("en", &raw.source), ("de", &raw.target)] {
        let encoded = p.tokenizer.encode_batch(lines).unwrap();
        for (i, (line, ids)) in lines.iter().zip(&encoded).enumerate() {
            let decoded = p.tokenizer.decode(ids).unwrap();
            assert_eq!(decoded, normalize_whitespace(line), "{side} line {}", i + 1);
        }
    }
    // The prepared (EOS-terminated) sequences decode to the same text.
    let enc = &p.train.encoded;
    for k in (0..enc.len()).step_by(97) {
        let line = enc.line_index[k];
        assert_eq!(
            p.tokenizer.decode(&enc.target[k]).unwrap(),
            normalize_whitespace(&raw.target[line])
        );
    }
}

#[test]
fn unseen_characters_and_whitespace_round_trip() {
    let tok = &prepared().data.tokenizer;
    let text = "Ein 猫 sitzt auf dem Dach 🐈‍⬛ — naïve façade, Ωμέγα ∑ ½ \u{1F600}!";
    let ids = tok.encode(text).unwrap();
    assert!(!ids.contains(&UNK_ID));
    assert_eq!(tok.decode(&ids).unwrap(), text);

    let messy = "  A  man\tin a\u{00A0}blue   shirt .  ";
    let ids = tok.encode(messy).unwrap();
    assert_eq!(tok.decode(&ids).unwrap(), "A man in a blue shirt .");
    assert_eq!(normalize_whitespace(messy), "A man in a blue shirt .");

    // Special-token strings in text are plain text, also after reloading.
    let literal = "a <s> b </s> c <pad><unk>";
    let reloaded = SubwordTokenizer::load(prepared().run_dir.path()).unwrap();
    for t in [tok, &reloaded] {
        let ids = t.encode(literal).unwrap();
        assert!(ids.iter().all(|&id| id > UNK_ID), "{ids:?}");
        assert_eq!(t.decode(&ids).unwrap(), literal);
    }

    // Decoding stops at EOS and drops pad/BOS.
    let mut with_specials = vec![BOS_ID];
    with_specials.extend(tok.encode("Two dogs.").unwrap());
    with_specials.extend([EOS_ID, 500, 600, PAD_ID, PAD_ID]);
    assert_eq!(tok.decode(&with_specials).unwrap(), "Two dogs.");
}

#[test]
fn tokenizer_reloads_from_run_dir() {
    let prepared = prepared();
    let path = prepared.run_dir.path().join("tokenizer.json");
    assert_eq!(
        prepared.data.tokenizer_path.as_deref(),
        Some(path.as_path())
    );
    let reloaded = SubwordTokenizer::load(prepared.run_dir.path()).unwrap();
    assert_eq!(reloaded.vocab_size(), 8000);
    for (id, token) in ["<pad>", "<s>", "</s>", "<unk>"].iter().enumerate() {
        assert_eq!(reloaded.inner().token_to_id(token), Some(id as u32));
    }
    let raw = &prepared.data.valid.raw;
    for k in 0..raw.len() {
        let mut expected = reloaded.encode(&raw.source[k]).unwrap();
        expected.push(EOS_ID);
        assert_eq!(prepared.data.valid.encoded.source[k], expected);
    }
    // No temporary file is left beside it.
    let names: Vec<String> = std::fs::read_dir(prepared.run_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["tokenizer.json"]);

    // A second prepare with the same run dir reuses the saved tokenizer.
    let config = TranslationDataConfig {
        tests: vec![],
        ..TranslationDataConfig::multi30k()
    };
    let again =
        emvq_data::prepare_translation(&config, &multi30k_dir(), Some(prepared.run_dir.path()))
            .unwrap();
    assert!(!again.trained_tokenizer);
    assert_eq!(again.valid.encoded, prepared.data.valid.encoded);
}

fn train_batcher(max_tokens: usize, seed: u64) -> Batcher {
    let corpus = prepared().data.train.encoded.clone();
    Batcher::new(
        corpus,
        BatchConfig {
            max_tokens,
            shuffle: true,
            seed,
        },
    )
    .unwrap()
}

#[test]
fn batches_never_exceed_max_tokens_and_cover_the_epoch() {
    for max_tokens in [256, 1000, 4096] {
        let batcher = train_batcher(max_tokens, 7);
        let n = batcher.corpus().len();
        let mut seen = vec![0u32; n];
        let mut batches = 0;
        for batch in batcher.epoch(0) {
            batches += 1;
            assert!(batch.padded_tokens() <= max_tokens);
            assert!(batch.source.len() <= max_tokens && batch.target.len() <= max_tokens);
            for (row, &i) in batch.indices.iter().enumerate() {
                seen[i] += 1;
                let src = &batcher.corpus().source[i];
                assert_eq!(batch.source_lens[row], src.len());
                let padded: Vec<i64> = batch.source.row(row).to_vec();
                assert_eq!(
                    &padded[..src.len()],
                    &src.iter().map(|&t| t as i64).collect::<Vec<_>>()[..]
                );
                assert!(padded[src.len()..].iter().all(|&t| t == PAD_ID as i64));
            }
        }
        assert_eq!(batches, batcher.num_batches());
        assert!(seen.iter().all(|&c| c == 1), "every pair once per epoch");
    }
}

fn order(batcher: &Batcher, epoch: u64) -> Vec<Vec<usize>> {
    batcher.plan_epoch(epoch)
}

#[test]
fn batch_order_depends_on_seed_and_epoch_only() {
    let a = train_batcher(2048, 11);
    let b = train_batcher(2048, 11);
    let c = train_batcher(2048, 12);
    assert_eq!(order(&a, 0), order(&b, 0));
    assert_eq!(order(&a, 3), order(&b, 3));
    assert_ne!(order(&a, 0), order(&c, 0));
    assert_ne!(order(&a, 0), order(&a, 1));
    let first: Vec<Vec<usize>> = a.epoch(0).map(|batch| batch.indices).collect();
    assert_eq!(first, order(&a, 0));
}

#[test]
fn resuming_mid_epoch_gives_the_uninterrupted_batches() {
    let batcher = train_batcher(2048, 5);
    let per_epoch = batcher.num_batches();
    let total = per_epoch + per_epoch / 2 + 3;
    let uninterrupted: Vec<_> = batcher
        .stream(DataPosition::default())
        .take(total)
        .collect();
    assert_eq!(
        uninterrupted[per_epoch].0,
        DataPosition {
            epoch: 1,
            batch_index: 0
        }
    );

    // Stop after `stop` batches, save the position as JSON, restart from it.
    for stop in [1, per_epoch / 3, per_epoch, per_epoch + 7] {
        let mut stream = batcher.stream(DataPosition::default());
        let before: Vec<_> = stream.by_ref().take(stop).collect();
        let saved = serde_json::to_string(&stream.position()).unwrap();

        let restarted = train_batcher(2048, 5);
        let position: DataPosition = serde_json::from_str(&saved).unwrap();
        let after: Vec<_> = restarted.stream(position).take(total - stop).collect();
        let resumed: Vec<_> = before.into_iter().chain(after).collect();
        assert_eq!(resumed, uninterrupted, "stopped after {stop} batches");
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn unequal_corpus_sides_give_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (src, tgt) = (dir.path().join("a.en"), dir.path().join("a.de"));
    write(&src, "one\ntwo\nthree\n");
    write(&tgt, "eins\nzwei\n");
    let err = read_parallel(&src, &tgt).unwrap_err();
    match &err {
        DataError::LineCountMismatch {
            source_lines,
            target_lines,
            ..
        } => assert_eq!((*source_lines, *target_lines), (3, 2)),
        other => panic!("wrong error {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("a.en") && message.contains("a.de"),
        "{message}"
    );
    assert!(
        message.contains("3 lines") && message.contains("2 lines"),
        "{message}"
    );
}
