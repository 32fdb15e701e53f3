//! The joint subword vocabulary: a byte-level BPE trained with the Hugging
//! Face `tokenizers` crate on both sides of the training corpus.
//!
//! Pipeline (all stored in `tokenizer.json`, so any later stage or Python's
//! `tokenizers` reproduces it):
//! - normaliser: strip both ends, then every run of whitespace (`\s+`,
//!   Unicode) becomes one ASCII space. This is the only change text goes
//!   through: `decode(encode(x)) == normalize_whitespace(x)`
//!   ([`crate::corpus::normalize_whitespace`]).
//! - pre-tokeniser: GPT-2 byte-level (no prefix space): every UTF-8 byte maps
//!   to one of 256 symbols, all in the vocabulary, so no input is unknown and
//!   every character, rare or not, round-trips.
//! - model: BPE; decoder: byte-level, which turns the symbols back into text.
//!
//! Special tokens have fixed ids: `<pad>` = 0, `<s>` (BOS) = 1, `</s>` (EOS)
//! = 2, `<unk>` = 3 (never produced by the byte-level model, kept for
//! compatibility). Encoding adds no special tokens, and special-token
//! strings inside input text (a literal `</s>`) are encoded as plain text;
//! decoding stops at the first EOS and drops pad/BOS.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::{replace::ReplacePattern, Replace, Sequence, Strip};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, NormalizerWrapper, Tokenizer};

use crate::error::{DataError, Result};

/// Padding id; padded batch positions hold it.
pub const PAD_ID: u32 = 0;
/// Beginning-of-sentence id.
pub const BOS_ID: u32 = 1;
/// End-of-sentence id; every encoded corpus sequence ends with it.
pub const EOS_ID: u32 = 2;
/// Unknown-token id (unused by byte-level BPE).
pub const UNK_ID: u32 = 3;
/// Special token strings, at index = id.
pub const SPECIAL_TOKENS: [&str; 4] = ["<pad>", "<s>", "</s>", "<unk>"];
/// File name of the saved tokenizer inside a run directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// A trained joint BPE tokenizer with the fixed special ids above.
#[derive(Clone)]
pub struct SubwordTokenizer {
    inner: Tokenizer,
}

impl std::fmt::Debug for SubwordTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubwordTokenizer")
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

impl SubwordTokenizer {
    /// Trains a byte-level BPE of `vocab_size` entries (special tokens and
    /// the 256 byte symbols included) on `texts`.
    pub fn train<S>(texts: &[S], vocab_size: usize) -> Result<Self>
    where
        S: AsRef<str> + Sync,
    {
        let mut inner = Tokenizer::new(BPE::default());
        inner.with_normalizer(Some(whitespace_normalizer()?));
        inner.with_pre_tokenizer(Some(
            ByteLevel::default().add_prefix_space(false).use_regex(true),
        ));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        let special = SPECIAL_TOKENS
            .iter()
            .map(|t| AddedToken::from(t.to_string(), true))
            .collect();
        let trainer = BpeTrainer::builder()
            .vocab_size(vocab_size)
            .min_frequency(0)
            .show_progress(false)
            .special_tokens(special)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect::<HashSet<_>>())
            .build();
        let mut trainer = TrainerWrapper::BpeTrainer(trainer);
        inner
            .train(&mut trainer, texts.iter().map(|t| t.as_ref()))
            .map_err(|e| DataError::tokenizer(None, e))?;
        Self::wrap(inner, None)
    }

    /// Trains on the concatenation of two text collections (a joint
    /// vocabulary over source and target).
    pub fn train_joint(source: &[String], target: &[String], vocab_size: usize) -> Result<Self> {
        let texts: Vec<&str> = source
            .iter()
            .chain(target.iter())
            .map(String::as_str)
            .collect();
        Self::train(&texts, vocab_size)
    }

    /// Saves as `run_dir/tokenizer.json` (creating `run_dir`), atomically:
    /// written to a temporary file in the same folder, then renamed.
    pub fn save(&self, run_dir: &Path) -> Result<PathBuf> {
        fs::create_dir_all(run_dir).map_err(|e| DataError::io(run_dir, e))?;
        let path = run_dir.join(TOKENIZER_FILE);
        let json = self
            .inner
            .to_string(true)
            .map_err(|e| DataError::tokenizer(Some(path.clone()), e))?;
        let tmp = run_dir.join(format!("{TOKENIZER_FILE}.tmp-{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(json.as_bytes())?;
            file.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(DataError::io(&tmp, e));
        }
        fs::rename(&tmp, &path).map_err(|e| DataError::io(&path, e))?;
        Ok(path)
    }

    /// Loads `run_dir/tokenizer.json` written by [`SubwordTokenizer::save`].
    pub fn load(run_dir: &Path) -> Result<Self> {
        Self::from_file(&run_dir.join(TOKENIZER_FILE))
    }

    /// Loads a tokenizer JSON file, checking the special token ids.
    pub fn from_file(path: &Path) -> Result<Self> {
        let json = fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        let inner: Tokenizer = json
            .parse()
            .map_err(|e: tokenizers::Error| DataError::tokenizer(Some(path.into()), e))?;
        Self::wrap(inner, Some(path))
    }

    /// Number of entries in the vocabulary, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Subword ids of `text`, without any special token.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| DataError::tokenizer(None, e))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Encodes many texts in parallel (rayon); no special tokens added.
    pub fn encode_batch<S>(&self, texts: &[S]) -> Result<Vec<Vec<u32>>>
    where
        S: AsRef<str> + Sync,
    {
        let inputs: Vec<&str> = texts.iter().map(|t| t.as_ref()).collect();
        let encodings = self
            .inner
            .encode_batch_fast(inputs, false)
            .map_err(|e| DataError::tokenizer(None, e))?;
        Ok(encodings.iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Detokenised text of `ids`: stops at the first EOS, drops pad/BOS/unk.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let end = ids.iter().position(|&id| id == EOS_ID).unwrap_or(ids.len());
        self.inner
            .decode(&ids[..end], true)
            .map_err(|e| DataError::tokenizer(None, e))
    }

    /// [`SubwordTokenizer::decode`] for many sequences.
    pub fn decode_batch(&self, seqs: &[Vec<u32>]) -> Result<Vec<String>> {
        seqs.iter().map(|ids| self.decode(ids)).collect()
    }

    /// Subword strings of `ids` (byte-level symbols), for debugging.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The underlying Hugging Face tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Checks the special ids and makes special-token strings in input text
    /// ordinary text (a literal `</s>` in a sentence is not EOS). That flag
    /// is not stored in `tokenizer.json`, so it is set on every load.
    fn wrap(mut inner: Tokenizer, path: Option<&Path>) -> Result<Self> {
        inner.set_encode_special_tokens(true);
        let tokenizer = SubwordTokenizer { inner };
        tokenizer.check_special_ids(path)?;
        Ok(tokenizer)
    }

    fn check_special_ids(&self, path: Option<&Path>) -> Result<()> {
        for (id, token) in SPECIAL_TOKENS.iter().enumerate() {
            if self.inner.token_to_id(token) != Some(id as u32) {
                return Err(DataError::tokenizer(
                    path.map(Path::to_path_buf),
                    format!(
                        "special token {token} must have id {id}, found {:?}",
                        self.inner.token_to_id(token)
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Strip both ends, then collapse whitespace runs to one space.
fn whitespace_normalizer() -> Result<NormalizerWrapper> {
    let collapse = Replace::new(ReplacePattern::Regex(r"\s+".into()), " ")
        .map_err(|e| DataError::tokenizer(None, e))?;
    Ok(NormalizerWrapper::Sequence(Sequence::new(vec![
        NormalizerWrapper::StripNormalizer(Strip::new(true, true)),
        NormalizerWrapper::Replace(collapse),
    ])))
}
