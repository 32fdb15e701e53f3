//! `cargo xtask fetch-data multi30k|wmt14|cifar10|all`: downloads the public
//! originals with the system `curl` (and unpacks archives with the system
//! `tar`) into a data root, in the layout of `../shared/data` that
//! `emvq_data::sources` documents and searches:
//!
//! ```text
//! {dest}/multi30k/{train,val,test_2016_flickr,test_2017_flickr,test_2017_mscoco}.{en,de}.gz
//! {dest}/wmt14/newstest2013.{en,de}  {dest}/wmt14/newstest2014.{en,de}
//! {dest}/cifar10/cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin, batches.meta.txt
//! ```
//!
//! Files already present are kept. Every download goes to a `.partial` file
//! that is renamed when complete. The URLs repeat those of
//! `emvq_data::sources` (xtask does not depend on emvq-data).

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

const MULTI30K_RAW_URL: &str =
    "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw";
const MULTI30K_SPLITS: [&str; 5] = [
    "train",
    "val",
    "test_2016_flickr",
    "test_2017_flickr",
    "test_2017_mscoco",
];
const WMT14_DEV_URL: &str = "https://www.statmt.org/wmt14/dev.tgz";
const WMT14_TEST_URL: &str = "https://www.statmt.org/wmt14/test-full.tgz";
const CIFAR10_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
const CIFAR10_DIR: &str = "cifar-10-batches-bin";
const CIFAR10_FILES: [&str; 6] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
    "test_batch.bin",
];

/// Downloads data set `which` (`multi30k`, `wmt14`, `cifar10` or `all`) into
/// the data root `dest` (e.g. the project's `data/`).
pub fn fetch_data(which: &str, dest: &Path) -> Result<()> {
    match which {
        "multi30k" => fetch_multi30k(&dest.join("multi30k")),
        "wmt14" => fetch_wmt14(&dest.join("wmt14")),
        "cifar10" => fetch_cifar10(&dest.join("cifar10")),
        "all" => {
            fetch_data("multi30k", dest)?;
            fetch_data("wmt14", dest)?;
            fetch_data("cifar10", dest)
        }
        other => bail!("unknown data set {other:?}; expected multi30k, wmt14, cifar10 or all"),
    }
}

/// The ten raw gzip files, saved as they are.
fn fetch_multi30k(dir: &Path) -> Result<()> {
    for split in MULTI30K_SPLITS {
        for lang in ["en", "de"] {
            let name = format!("{split}.{lang}.gz");
            let path = dir.join(&name);
            download(&format!("{MULTI30K_RAW_URL}/{name}"), &path)?;
            let head = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            ensure!(
                head.starts_with(&[0x1f, 0x8b]),
                "{} is not gzip; delete it and retry",
                path.display()
            );
        }
    }
    Ok(())
}

/// newstest2013 from dev.tgz (plain text), newstest2014 from the SGM files
/// of test-full.tgz; every line trimmed and its ASCII whitespace runs
/// collapsed (the SGM English side has a few double spaces).
fn fetch_wmt14(dir: &Path) -> Result<()> {
    let outputs = [
        ("newstest2013.en", 3000),
        ("newstest2013.de", 3000),
        ("newstest2014.en", 3003),
        ("newstest2014.de", 3003),
    ];
    if outputs.iter().all(|(name, _)| dir.join(name).is_file()) {
        println!("wmt14: already in {}", dir.display());
        return Ok(());
    }
    let work = dir.join(".download");
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let dev = work.join("dev.tgz");
    let test = work.join("test-full.tgz");
    download(WMT14_DEV_URL, &dev)?;
    download(WMT14_TEST_URL, &test)?;
    untar(&dev, &work, &["dev/newstest2013.en", "dev/newstest2013.de"])?;
    untar(
        &test,
        &work,
        &[
            "test-full/newstest2014-deen-src.en.sgm",
            "test-full/newstest2014-deen-ref.de.sgm",
        ],
    )?;
    let sources = [
        ("dev/newstest2013.en", false),
        ("dev/newstest2013.de", false),
        ("test-full/newstest2014-deen-src.en.sgm", true),
        ("test-full/newstest2014-deen-ref.de.sgm", true),
    ];
    for ((name, lines), (source, sgm)) in outputs.iter().zip(sources) {
        let text = fs::read_to_string(work.join(source))
            .with_context(|| format!("reading {source} from the WMT14 archive"))?;
        let segments: Vec<String> = if sgm {
            text.lines().filter_map(sgm_segment).map(clean).collect()
        } else {
            text.lines().map(clean).collect()
        };
        ensure!(
            segments.len() == *lines,
            "{source}: {} segments, expected {lines}",
            segments.len()
        );
        let mut out = segments.join("\n");
        out.push('\n');
        write_atomic(&dir.join(name), out.as_bytes())?;
    }
    fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    println!("wmt14: wrote {}", dir.display());
    Ok(())
}

/// The text of a `<seg id="N">text</seg>` line, or None for other lines.
fn sgm_segment(line: &str) -> Option<&str> {
    let start = line.find("<seg")?;
    let open_end = start + line[start..].find('>')? + 1;
    let close = line.rfind("</seg>")?;
    Some(&line[open_end..close])
}

/// Trims ASCII whitespace and collapses its runs to one space. Other
/// Unicode spaces (no-break, thin) are part of the text and stay.
fn clean(line: &str) -> String {
    line.split_ascii_whitespace().collect::<Vec<_>>().join(" ")
}

/// The binary tarball, unpacked (data and meta files only) and then removed.
fn fetch_cifar10(dir: &Path) -> Result<()> {
    let bin = dir.join(CIFAR10_DIR);
    if CIFAR10_FILES.iter().all(|f| bin.join(f).is_file()) {
        println!("cifar10: already in {}", bin.display());
        return Ok(());
    }
    let archive = dir.join("cifar-10-binary.tar.gz");
    download(CIFAR10_URL, &archive)?;
    let mut members: Vec<String> = CIFAR10_FILES
        .iter()
        .map(|f| format!("{CIFAR10_DIR}/{f}"))
        .collect();
    members.push(format!("{CIFAR10_DIR}/batches.meta.txt"));
    let members: Vec<&str> = members.iter().map(String::as_str).collect();
    untar(&archive, dir, &members)?;
    for f in CIFAR10_FILES {
        let path = bin.join(f);
        let size = fs::metadata(&path)
            .with_context(|| format!("{} missing after unpacking", path.display()))?
            .len();
        // 10,000 records of 3073 bytes each.
        ensure!(
            size == 30_730_000,
            "{}: {size} bytes, expected 30730000",
            path.display()
        );
    }
    fs::remove_file(&archive).with_context(|| format!("removing {}", archive.display()))?;
    println!("cifar10: wrote {}", bin.display());
    Ok(())
}

/// Downloads `url` to `path` unless it exists: curl to `path.partial`, then rename.
fn download(url: &str, path: &Path) -> Result<()> {
    if path.is_file() {
        println!("have {}", path.display());
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let partial = path.with_file_name(format!(
        "{}.partial",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    println!("downloading {url}");
    let status = Command::new("curl")
        .args(["--fail", "--location", "--silent", "--show-error"])
        .args(["--retry", "3", "--output"])
        .arg(&partial)
        .arg(url)
        .status()
        .context("running curl (is it installed?)")?;
    ensure!(status.success(), "curl failed for {url} ({status})");
    fs::rename(&partial, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// Extracts `members` of a gzip tarball into `dir` with the system `tar`.
fn untar(archive: &Path, dir: &Path, members: &[&str]) -> Result<()> {
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(archive)
        .arg("-C")
        .arg(dir)
        .args(members)
        .status()
        .context("running tar (is it installed?)")?;
    ensure!(
        status.success(),
        "tar failed to extract {members:?} from {} ({status})",
        archive.display()
    );
    Ok(())
}

/// Writes `bytes` to `path.partial`, then renames it to `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let partial = path.with_extension(format!(
        "{}.partial",
        path.extension().unwrap_or_default().to_string_lossy()
    ));
    fs::write(&partial, bytes).with_context(|| format!("writing {}", partial.display()))?;
    fs::rename(&partial, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sgm_segments_and_cleaning() {
        assert_eq!(
            sgm_segment(r#"<seg id="12">A  text with <b> inside</seg>"#),
            Some("A  text with <b> inside")
        );
        assert_eq!(sgm_segment(r#"<doc sysid="ref" docid="x">"#), None);
        assert_eq!(sgm_segment("<p>"), None);
        assert_eq!(clean("  A  text\twith  spaces "), "A text with spaces");
        assert_eq!(
            clean("Tel\u{a0}Aviv  21 \u{2009}C"),
            "Tel\u{a0}Aviv 21 \u{2009}C"
        );
    }

    #[test]
    fn unknown_data_set_is_an_error() {
        let dir = std::env::temp_dir();
        let err = fetch_data("imagenet", &dir).unwrap_err();
        assert!(err.to_string().contains("imagenet"));
    }
}
