//! CIFAR-10 reader tests on the real binary files in shared/data
//! (`EMVQ_SHARED_DATA` overrides the location) and on corrupted copies made
//! in a temp dir.

use std::fs::File;
use std::path::PathBuf;

use emvq_data::cifar::{BIN_DIR, RECORD_BYTES};
use emvq_data::{load_cifar10, load_cifar10_tar_gz, Cifar10, CifarSplit, DataError};

fn shared_data() -> PathBuf {
    std::env::var_os("EMVQ_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data"))
        })
}

fn bin_dir() -> PathBuf {
    shared_data().join("cifar10").join(BIN_DIR)
}

#[test]
fn training_set_has_the_published_channel_means() {
    // Reading from the data set folder (which contains cifar-10-batches-bin).
    let train = load_cifar10(&shared_data().join("cifar10"), CifarSplit::Train).unwrap();
    assert_eq!(train.images.shape(), &[50_000, 3, 32, 32]);
    assert_eq!(train.labels.len(), 50_000);
    let means = train.channel_means();
    let expected = [125.307, 122.950, 113.865];
    for c in 0..3 {
        assert!(
            (means[c] - expected[c]).abs() < 1e-3,
            "channel {c}: {} vs {}",
            means[c],
            expected[c]
        );
    }
    // Balanced classes: 5000 of each.
    let mut counts = [0usize; 10];
    for &label in &train.labels {
        counts[label as usize] += 1;
    }
    assert_eq!(counts, [5000; 10]);
}

#[test]
fn test_split_matches_raw_records() {
    let test = load_cifar10(&bin_dir(), CifarSplit::Test).unwrap();
    assert_eq!(test.len(), 1000);
    let bytes = std::fs::read(bin_dir().join("test_batch.bin")).unwrap();
    // Record 7: label, then R, G, B planes row-major.
    let record = &bytes[7 * RECORD_BYTES..8 * RECORD_BYTES];
    assert_eq!(test.labels[7], record[0]);
    assert_eq!(test.images[[7, 0, 0, 0]], record[1]);
    assert_eq!(test.images[[7, 0, 2, 5]], record[1 + 2 * 32 + 5]);
    assert_eq!(test.images[[7, 1, 31, 31]], record[1 + 1024 + 1023]);
    assert_eq!(test.images[[7, 2, 10, 3]], record[1 + 2048 + 10 * 32 + 3]);
}

#[test]
fn reads_the_official_tarball_directly() {
    let dir = tempfile::tempdir().unwrap();
    let archive_path = dir.path().join("cifar-10-binary.tar.gz");
    {
        let gz = flate2::write::GzEncoder::new(
            File::create(&archive_path).unwrap(),
            flate2::Compression::fast(),
        );
        let mut builder = tar::Builder::new(gz);
        builder
            .append_path_with_name(
                bin_dir().join("batches.meta.txt"),
                format!("{BIN_DIR}/batches.meta.txt"),
            )
            .unwrap();
        builder
            .append_path_with_name(
                bin_dir().join("test_batch.bin"),
                format!("{BIN_DIR}/test_batch.bin"),
            )
            .unwrap();
        builder.into_inner().unwrap().finish().unwrap();
    }
    let from_tar = load_cifar10_tar_gz(&archive_path, CifarSplit::Test).unwrap();
    let from_dir = load_cifar10(&bin_dir(), CifarSplit::Test).unwrap();
    assert_eq!(from_tar, from_dir);
    // load_cifar10 accepts the archive path too.
    assert_eq!(
        load_cifar10(&archive_path, CifarSplit::Test).unwrap(),
        from_dir
    );

    let err = load_cifar10_tar_gz(&archive_path, CifarSplit::Train).unwrap_err();
    assert!(
        matches!(&err, DataError::CifarMissingMember { what, .. } if what.ends_with("data_batch_1.bin")),
        "{err}"
    );
}

#[test]
fn corrupted_files_give_errors_naming_file_and_record() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(bin_dir().join("test_batch.bin")).unwrap();

    // Truncated: 5 whole records and 100 bytes of the sixth.
    let truncated_path = dir.path().join("truncated.bin");
    std::fs::write(&truncated_path, &good[..5 * RECORD_BYTES + 100]).unwrap();
    let err = Cifar10::read_file(&truncated_path).unwrap_err();
    match &err {
        DataError::CifarTruncated {
            path,
            record,
            bytes,
            ..
        } => {
            assert_eq!(path, &truncated_path);
            assert_eq!((*record, *bytes), (5, 100));
        }
        other => panic!("wrong error {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("truncated.bin") && message.contains("record 5"),
        "{message}"
    );

    // Label 11 in record 3.
    let mut bad = good[..10 * RECORD_BYTES].to_vec();
    bad[3 * RECORD_BYTES] = 11;
    let label_path = dir.path().join("label.bin");
    std::fs::write(&label_path, &bad).unwrap();
    let err = Cifar10::read_file(&label_path).unwrap_err();
    match &err {
        DataError::CifarLabel {
            path,
            record,
            label,
        } => {
            assert_eq!(path, &label_path);
            assert_eq!((*record, *label), (3, 11));
        }
        other => panic!("wrong error {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("label.bin") && message.contains("record 3") && message.contains("11")
    );

    // A folder missing a training file names that file.
    std::fs::copy(
        bin_dir().join("test_batch.bin"),
        dir.path().join("test_batch.bin"),
    )
    .unwrap();
    let err = load_cifar10(dir.path(), CifarSplit::Train).unwrap_err();
    assert!(
        matches!(&err, DataError::MissingFile { path } if path.ends_with("data_batch_1.bin")),
        "{err}"
    );
}
