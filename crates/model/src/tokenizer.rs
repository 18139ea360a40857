//! Tokenizers from a model directory, with no network: `tokenizer.json`, or GPT-2 style
//! `vocab.json` + `merges.txt` (byte-level BPE).

use std::path::{Path, PathBuf};

use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;

use crate::error::{ModelError, Result};

/// A tokenizer and the file(s) it came from.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Where it was read from.
    pub source: PathBuf,
}

impl Tokenizer {
    /// Reads `dir/tokenizer.json`, else `dir/vocab.json` + `dir/merges.txt`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let json = dir.join("tokenizer.json");
        if json.exists() {
            return Self::from_file(&json);
        }
        let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
        if vocab.exists() && merges.exists() {
            return Self::from_bpe_files(&vocab, &merges);
        }
        Err(ModelError::MissingFile {
            path: json,
            what: "the tokenizer: tokenizer.json, or vocab.json with merges.txt".into(),
        })
    }

    /// Reads an HF `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| ModelError::BadFile {
            path: path.to_path_buf(),
            message: format!("not a tokenizer.json: {e}"),
        })?;
        Ok(Self {
            inner,
            source: path.to_path_buf(),
        })
    }

    /// Builds GPT-2's byte-level BPE from `vocab.json` (or `encoder.json`) and `merges.txt`
    /// (or `vocab.bpe`), without a prefix space, as HF's GPT2Tokenizer does.
    pub fn from_bpe_files(vocab: &Path, merges: &Path) -> Result<Self> {
        let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
            .build()
            .map_err(|e| ModelError::BadFile {
                path: vocab.to_path_buf(),
                message: format!("cannot build BPE with {}: {e}", merges.display()),
            })?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
        inner.with_decoder(Some(ByteLevel::default()));
        Ok(Self {
            inner,
            source: vocab.to_path_buf(),
        })
    }

    /// Token ids of `text`; `special` adds what the tokenizer's post-processor adds (BOS for
    /// Llama 3).
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, special)
            .map_err(|e| ModelError::Tokenizer(format!("cannot encode {text:?}: {e}")))?
            .get_ids()
            .to_vec())
    }

    /// Token ids of `text` with the byte span of `text` each covers (special tokens added by
    /// the post-processor have an empty span).
    pub fn encode_with_offsets(
        &self,
        text: &str,
        special: bool,
    ) -> Result<Vec<(u32, (usize, usize))>> {
        let enc = self
            .inner
            .encode(text, special)
            .map_err(|e| ModelError::Tokenizer(format!("cannot encode {text:?}: {e}")))?;
        Ok(enc
            .get_ids()
            .iter()
            .copied()
            .zip(enc.get_offsets().iter().copied())
            .collect())
    }

    /// The text of `ids`.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| ModelError::Tokenizer(format!("cannot decode {ids:?}: {e}")))
    }

    /// The id of `text` if it encodes (without special tokens) to exactly one token that
    /// decodes back to `text` (an unknown-word token does not count).
    pub fn single_token(&self, text: &str) -> Result<Option<u32>> {
        let ids = self.encode(text, false)?;
        if ids.len() != 1 || self.decode(&ids)?.trim() != text {
            return Ok(None);
        }
        Ok(Some(ids[0]))
    }

    /// The string of one token id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a token string (exact vocabulary entry).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The largest `n` such that every number `0..=n`, written in decimal, is one token;
    /// `None` when even `0` is not.
    pub fn single_token_numbers(&self, limit: u32) -> Result<Option<u32>> {
        let mut last = None;
        for n in 0..=limit {
            if self.single_token(&n.to_string())?.is_none() {
                break;
            }
            last = Some(n);
        }
        Ok(last)
    }
}
