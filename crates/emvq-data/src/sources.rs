//! Where the data comes from and where it is found on disk.
//!
//! The on-disk layout (under a data root such as the project's `data/` or
//! `../shared/data`) is that of the public originals:
//!
//! ```text
//! multi30k/{train,val,test_2016_flickr,test_2017_flickr,test_2017_mscoco}.{en,de}.gz
//! wmt14/newstest2013.{en,de}   wmt14/newstest2014.{en,de}   (plain text)
//! cifar10/cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin, batches.meta.txt
//! ```
//!
//! `cargo xtask fetch-data multi30k|wmt14|cifar10` (xtask/src/fetch_data.rs)
//! downloads the originals listed in [`SOURCES`] into this layout; xtask does
//! not depend on this crate, so it repeats the URLs.

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

/// A public data set: where it is published and the files it lays out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataSource {
    /// Folder name under a data root, and the name `find_data` takes.
    pub name: &'static str,
    /// What it is.
    pub description: &'static str,
    /// Download URLs of the originals.
    pub urls: &'static [&'static str],
    /// How the originals become the layout.
    pub preparation: &'static str,
    /// Files, relative to the data set folder, that a complete copy has.
    pub files: &'static [&'static str],
    /// Whom to cite.
    pub citation: &'static str,
}

/// Base URL of the raw Multi30k task 1 files in the multi30k dataset repository.
pub const MULTI30K_RAW_URL: &str =
    "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw";

/// Multi30k task 1 En–De, raw (cased, untokenised), gzip.
pub const MULTI30K: DataSource = DataSource {
    name: "multi30k",
    description: "Multi30k task 1 English-German image descriptions: train 29000, \
                  val 1014, test_2016_flickr 1000, test_2017_flickr 1000, \
                  test_2017_mscoco 461 lines",
    urls: &[
        "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/train.en.gz",
        "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/train.de.gz",
        "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/val.en.gz",
        "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/val.de.gz",
        "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/test_2016_flickr.en.gz",
        "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/test_2016_flickr.de.gz",
        "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/test_2017_flickr.en.gz",
        "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/test_2017_flickr.de.gz",
        "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/test_2017_mscoco.en.gz",
        "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/test_2017_mscoco.de.gz",
    ],
    preparation: "saved as downloaded (gzip, one sentence a line)",
    files: &[
        "train.en.gz",
        "train.de.gz",
        "val.en.gz",
        "val.de.gz",
        "test_2016_flickr.en.gz",
        "test_2016_flickr.de.gz",
        "test_2017_flickr.en.gz",
        "test_2017_flickr.de.gz",
        "test_2017_mscoco.en.gz",
        "test_2017_mscoco.de.gz",
    ],
    citation: "Elliott et al. 2016, Multi30K: Multilingual English-German Image Descriptions",
};

/// WMT14 En–De news test sets as plain text.
pub const WMT14: DataSource = DataSource {
    name: "wmt14",
    description: "WMT14 English-German newstest2013 (3000 lines, dev) and \
                  newstest2014 (3003 lines, the full test set)",
    urls: &[
        "https://www.statmt.org/wmt14/dev.tgz",
        "https://www.statmt.org/wmt14/test-full.tgz",
    ],
    preparation: "newstest2013.{en,de} from dev.tgz (dev/newstest2013.{en,de}); \
                  newstest2014.en from test-full/newstest2014-deen-src.en.sgm and \
                  newstest2014.de from test-full/newstest2014-deen-ref.de.sgm, \
                  keeping the <seg> contents; every line trimmed with ASCII \
                  whitespace runs collapsed to one space (Unicode spaces kept)",
    files: &[
        "newstest2013.en",
        "newstest2013.de",
        "newstest2014.en",
        "newstest2014.de",
    ],
    citation: "Bojar et al. 2014, Findings of the 2014 Workshop on Statistical Machine Translation",
};

/// CIFAR-10, binary version.
pub const CIFAR10: DataSource = DataSource {
    name: "cifar10",
    description: "CIFAR-10 32x32 colour images in 10 classes: 50000 train, 10000 test",
    urls: &["https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"],
    preparation: "the tarball unpacked in place: cifar10/cifar-10-batches-bin/",
    files: &[
        "cifar-10-batches-bin/data_batch_1.bin",
        "cifar-10-batches-bin/data_batch_2.bin",
        "cifar-10-batches-bin/data_batch_3.bin",
        "cifar-10-batches-bin/data_batch_4.bin",
        "cifar-10-batches-bin/data_batch_5.bin",
        "cifar-10-batches-bin/test_batch.bin",
    ],
    citation: "Krizhevsky 2009, Learning Multiple Layers of Features from Tiny Images",
};

/// Every known data set.
pub const SOURCES: [DataSource; 3] = [MULTI30K, WMT14, CIFAR10];

/// The known data set called `name`, if any.
pub fn source(name: &str) -> Option<&'static DataSource> {
    SOURCES.iter().find(|s| s.name == name)
}

/// The workspace root this crate was built in (`crates/emvq-data/../..`).
/// Binaries run elsewhere should pass their own root to [`find_data`].
pub fn default_workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Data roots searched, in order: `{root}/data`, then `{root}/../shared/data`.
pub fn data_roots(workspace_root: &Path) -> Vec<PathBuf> {
    vec![
        workspace_root.join("data"),
        workspace_root.join("..").join("shared").join("data"),
    ]
}

/// Finds the folder of data set `name`: the first `{data_root}/{name}` (see
/// [`data_roots`]) that holds every file of the known layout (or, for a name
/// not in [`SOURCES`], that exists). The error lists every place looked at.
pub fn find_data(name: &str, workspace_root: &Path) -> Result<PathBuf> {
    let required: &[&str] = source(name).map(|s| s.files).unwrap_or(&[]);
    let mut searched = Vec::new();
    for root in data_roots(workspace_root) {
        let dir = root.join(name);
        if dir.is_dir() && required.iter().all(|f| dir.join(f).is_file()) {
            return Ok(dir);
        }
        searched.push(dir);
    }
    let what = if required.is_empty() {
        format!("data set {name:?}")
    } else {
        format!(
            "data set {name:?} (with {}; `cargo xtask fetch-data {name}` downloads it)",
            required.join(", ")
        )
    };
    Err(DataError::DataNotFound { what, searched })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_data_in_project_then_shared() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("main");
        std::fs::create_dir_all(root.join("data")).unwrap();
        let shared = tmp.path().join("shared/data/wmt14");
        std::fs::create_dir_all(&shared).unwrap();
        for f in WMT14.files {
            std::fs::write(shared.join(f), "x\n").unwrap();
        }
        // An incomplete copy in the project's data/ is skipped.
        std::fs::create_dir_all(root.join("data/wmt14")).unwrap();
        let found = find_data("wmt14", &root).unwrap();
        assert_eq!(found, root.join("../shared/data/wmt14"));
        // A complete one in data/ wins.
        for f in WMT14.files {
            std::fs::write(root.join("data/wmt14").join(f), "x\n").unwrap();
        }
        assert_eq!(find_data("wmt14", &root).unwrap(), root.join("data/wmt14"));
    }

    #[test]
    fn not_found_lists_every_place_looked() {
        let tmp = tempfile::tempdir().unwrap();
        let err = find_data("multi30k", tmp.path()).unwrap_err();
        let DataError::DataNotFound { searched, .. } = &err else {
            panic!("wrong error {err:?}");
        };
        assert_eq!(
            searched,
            &[
                tmp.path().join("data/multi30k"),
                tmp.path().join("../shared/data/multi30k")
            ]
        );
        let message = err.to_string();
        for place in searched {
            assert!(message.contains(&place.display().to_string()), "{message}");
        }
        assert!(message.contains("fetch-data multi30k"), "{message}");
    }

    #[test]
    fn the_shared_data_matches_the_layout() {
        let shared = std::env::var_os("EMVQ_SHARED_DATA")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| default_workspace_root().join("../shared/data"));
        for source in SOURCES {
            let dir = shared.join(source.name);
            for file in source.files {
                assert!(dir.join(file).is_file(), "{}", dir.join(file).display());
            }
        }
        assert_eq!(source("cifar10"), Some(&CIFAR10));
        assert_eq!(source("imagenet"), None);
    }
}
