//! Helpers shared by the integration tests: locating the shared data and the
//! fixtures, and reading sacreBLEU's expected values.

#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::Value;

/// The shared data folder (`EMVQ_SHARED_DATA` overrides the default beside the checkout).
pub fn shared_data() -> PathBuf {
    match std::env::var_os("EMVQ_SHARED_DATA") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data")),
    }
}

/// The crate's fixture folder.
pub fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

/// Resolves a fixture name as `make_expected.py` writes it: `shared:` names
/// live in the shared data folder, the others among the fixtures.
pub fn resolve(name: &str) -> PathBuf {
    match name.strip_prefix("shared:") {
        Some(rest) => shared_data().join(rest),
        None => fixtures().join(name),
    }
}

/// Reads a fixture or shared file as sacreBLEU's CLI would.
pub fn lines(name: &str) -> Vec<String> {
    let path = resolve(name);
    emvq_bleu::io::read_lines(&path)
        .unwrap_or_else(|e| panic!("{e} (set EMVQ_SHARED_DATA if the shared data lives elsewhere)"))
}

/// Reads the reference streams of a case.
pub fn refs(case: &Value) -> Vec<Vec<String>> {
    case["refs"]
        .as_array()
        .expect("refs")
        .iter()
        .map(|r| lines(r.as_str().expect("ref name")))
        .collect()
}

/// The expected values produced by sacreBLEU.
pub fn expected() -> Value {
    let path = fixtures().join("expected.json");
    let text = std::fs::read_to_string(&path).expect("expected.json");
    serde_json::from_str(&text).expect("valid expected.json")
}

/// sacreBLEU's signature/text with its version replaced by this scorer's.
pub fn with_our_version(s: &str, sacrebleu_version: &str) -> String {
    s.replace(
        &format!("version:{sacrebleu_version}"),
        &format!("version:{}", emvq_bleu::SCORER_VERSION),
    )
}

/// Asserts two floats agree to 1e-6.
pub fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() <= 1e-6, "{what}: got {a}, sacreBLEU {b}");
}
