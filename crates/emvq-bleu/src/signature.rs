//! Reproducibility signatures in sacreBLEU's format, e.g.
//! `nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:emvq-bleu-0.1.0`.

use std::fmt;

use crate::SCORER_VERSION;

/// An ordered list of `key:value` pairs; `version` always comes last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    entries: Vec<(String, String)>,
}

impl Signature {
    /// Starts a signature with the number of references, as sacreBLEU does.
    pub fn new(nrefs: usize) -> Self {
        Signature {
            entries: vec![("nrefs".to_string(), nrefs.to_string())],
        }
    }

    /// Appends a pair, or replaces the value of an existing key in place.
    pub fn set(&mut self, key: &str, value: impl ToString) {
        let value = value.to_string();
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((key.to_string(), value)),
        }
    }

    /// Records a significance test the way sacreBLEU does: the number of
    /// samples (`bs` or `ar`) and the seed go right after `nrefs`.
    pub fn with_test(mut self, test: &str, n_samples: usize, seed: Option<u64>) -> Self {
        let seed = seed.map_or_else(|| "none".to_string(), |s| s.to_string());
        let head = vec![
            self.entries[0].clone(),
            (test.to_string(), n_samples.to_string()),
            ("seed".to_string(), seed),
        ];
        self.entries.splice(0..1, head);
        self
    }

    /// The `key:value` pairs, `version` included as the last one.
    pub fn pairs(&self) -> Vec<(String, String)> {
        let mut pairs = self.entries.clone();
        pairs.push(("version".to_string(), SCORER_VERSION.to_string()));
        pairs
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .pairs()
            .into_iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        f.write_str(&parts.join("|"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_test_entries() {
        let mut sig = Signature::new(2);
        sig.set("case", "mixed");
        sig.set("tok", "13a");
        assert_eq!(
            sig.to_string(),
            format!("nrefs:2|case:mixed|tok:13a|version:{SCORER_VERSION}")
        );
        let sig = sig.with_test("bs", 1000, Some(12345));
        assert!(sig
            .to_string()
            .starts_with("nrefs:2|bs:1000|seed:12345|case:mixed|"));
    }
}
