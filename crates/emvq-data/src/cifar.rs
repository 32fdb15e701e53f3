//! CIFAR-10 in the official binary layout.
//!
//! Each record is 3073 bytes: one label byte (0..=9), then the 1024 red,
//! 1024 green and 1024 blue bytes of a 32×32 image, each plane row-major.
//! The training split is `data_batch_1.bin` … `data_batch_5.bin`, the test
//! split `test_batch.bin`, read either from the `cifar-10-batches-bin` folder
//! or straight from the official `cifar-10-binary.tar.gz`.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use ndarray::Array4;

use crate::error::{DataError, Result};

/// Bytes per record: label + 3 × 32 × 32.
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
/// Bytes per image: 3 × 32 × 32.
pub const IMAGE_BYTES: usize = 3 * 32 * 32;
/// Name of the folder inside the official tarball.
pub const BIN_DIR: &str = "cifar-10-batches-bin";
/// Class names, at index = label.
pub const CLASS_NAMES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Which CIFAR-10 split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CifarSplit {
    /// `data_batch_1.bin` … `data_batch_5.bin` (50,000 images).
    Train,
    /// `test_batch.bin` (10,000 images officially).
    Test,
}

impl CifarSplit {
    /// The split's file names, in reading order.
    pub fn file_names(self) -> Vec<&'static str> {
        match self {
            CifarSplit::Train => vec![
                "data_batch_1.bin",
                "data_batch_2.bin",
                "data_batch_3.bin",
                "data_batch_4.bin",
                "data_batch_5.bin",
            ],
            CifarSplit::Test => vec!["test_batch.bin"],
        }
    }
}

/// Images and labels of one split.
#[derive(Debug, Clone, PartialEq)]
pub struct Cifar10 {
    /// Pixels, channels R, G, B. // [n, 3, 32, 32]
    pub images: Array4<u8>,
    /// Labels 0..=9. // [n]
    pub labels: Vec<u8>,
}

impl Cifar10 {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Mean pixel value (0..255) of each channel R, G, B over all images.
    pub fn channel_means(&self) -> [f64; 3] {
        let mut sums = [0u64; 3];
        for image in self.images.outer_iter() {
            // image: [3, 32, 32]
            for (c, plane) in image.outer_iter().enumerate() {
                sums[c] += plane.iter().map(|&p| p as u64).sum::<u64>();
            }
        }
        let count = (self.len() * 32 * 32) as f64;
        sums.map(|s| s as f64 / count)
    }

    /// Parses the records of one file's bytes; `path` names it in errors.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        let n = bytes.len() / RECORD_BYTES;
        let rest = bytes.len() % RECORD_BYTES;
        if rest != 0 {
            return Err(DataError::CifarTruncated {
                path: path.to_path_buf(),
                record: n,
                bytes: rest,
                expected: RECORD_BYTES,
            });
        }
        let mut labels = Vec::with_capacity(n);
        let mut pixels = Vec::with_capacity(n * IMAGE_BYTES); // [n, 3, 32, 32] flattened
        for (record, chunk) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
            let label = chunk[0];
            if label > 9 {
                return Err(DataError::CifarLabel {
                    path: path.to_path_buf(),
                    record,
                    label,
                });
            }
            labels.push(label);
            pixels.extend_from_slice(&chunk[1..]);
        }
        let images = Array4::from_shape_vec((n, 3, 32, 32), pixels)
            .expect("record count times image size matches the shape");
        Ok(Cifar10 { images, labels })
    }

    /// Reads one `.bin` file.
    pub fn read_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        Self::from_bytes(path, &bytes)
    }

    /// Concatenates parts in order.
    pub fn concat(parts: Vec<Cifar10>) -> Self {
        let n: usize = parts.iter().map(Cifar10::len).sum();
        let mut labels = Vec::with_capacity(n);
        let mut pixels = Vec::with_capacity(n * IMAGE_BYTES);
        for part in parts {
            labels.extend_from_slice(&part.labels);
            pixels.extend(part.images.iter()); // standard layout: [n, 3, 32, 32] order
        }
        let images = Array4::from_shape_vec((n, 3, 32, 32), pixels)
            .expect("record count times image size matches the shape");
        Cifar10 { images, labels }
    }
}

/// Reads a split from a `cifar-10-batches-bin` folder, from a folder that
/// contains one, or from the official `.tar.gz`.
pub fn load_cifar10(location: &Path, split: CifarSplit) -> Result<Cifar10> {
    if location.is_file() {
        return load_cifar10_tar_gz(location, split);
    }
    let dir = if location.join(BIN_DIR).is_dir() {
        location.join(BIN_DIR)
    } else {
        location.to_path_buf()
    };
    let parts = split
        .file_names()
        .into_iter()
        .map(|name| Cifar10::read_file(&dir.join(name)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Cifar10::concat(parts))
}

/// Reads a split straight from `cifar-10-binary.tar.gz` (members
/// `cifar-10-batches-bin/<file>`), without unpacking it to disk.
pub fn load_cifar10_tar_gz(archive_path: &Path, split: CifarSplit) -> Result<Cifar10> {
    let names = split.file_names();
    let mut found: Vec<Option<Cifar10>> = vec![None; names.len()];
    let file = File::open(archive_path).map_err(|e| DataError::io(archive_path, e))?;
    let mut archive = tar::Archive::new(GzDecoder::new(file));
    let entries = archive
        .entries()
        .map_err(|e| DataError::io(archive_path, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| DataError::io(archive_path, e))?;
        let member: PathBuf = entry
            .path()
            .map_err(|e| DataError::io(archive_path, e))?
            .into_owned();
        let Some(slot) = member
            .file_name()
            .and_then(|f| f.to_str())
            .and_then(|f| names.iter().position(|n| *n == f))
        else {
            continue;
        };
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| DataError::io(archive_path, e))?;
        found[slot] = Some(Cifar10::from_bytes(&archive_path.join(&member), &bytes)?);
    }
    let mut parts = Vec::with_capacity(names.len());
    for (name, part) in names.iter().zip(found) {
        parts.push(part.ok_or_else(|| DataError::CifarMissingMember {
            path: archive_path.to_path_buf(),
            what: format!("{BIN_DIR}/{name}"),
        })?);
    }
    Ok(Cifar10::concat(parts))
}
