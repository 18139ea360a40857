//! Tokenizers from a checkpoint, with no network: `tokenizer.json`, GPT-2 style `vocab.json` +
//! `merges.txt` (byte-level BPE), or a GGUF file's `tokenizer.ggml.*` metadata.
//!
//! Encoding is HF's tokenizer call on one prompt: a tokenizer.json's `padding` and
//! `truncation` sections are switched off at load (the runtime pads batches itself, with
//! masks; MiniLM's file pads every prompt to 128 tokens), special tokens are what the
//! post-processor adds, and a character the tokenizer cannot encode (an unknown-word token or
//! a dropped character) is an error that names it rather than a silent `[UNK]`.

use std::path::{Path, PathBuf};

use crate::checkpoint::Checkpoint;
use crate::gguf::GgufFile;

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
    /// The tokenizer of the checkpoint at `path` (an HF directory, a .gguf file or a directory
    /// holding one, see [`Checkpoint::locate`]): for GGUF, a tokenizer.json beside the file
    /// wins over the file's own metadata.
    pub fn for_checkpoint(path: &Path) -> Result<Self> {
        match Checkpoint::locate(path)? {
            Checkpoint::HfDir(dir) => Self::from_dir(&dir),
            Checkpoint::Gguf(file) => {
                let beside = file
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join("tokenizer.json");
                if beside.exists() {
                    return Self::from_file(&beside);
                }
                Self::from_gguf(&GgufFile::open(&file)?)
            }
        }
    }

    /// The tokenizer in a GGUF file's metadata.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        Ok(Self {
            inner: g.tokenizer()?,
            source: g.path().to_path_buf(),
        })
    }

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

    /// Reads an HF `tokenizer.json`, without its padding and truncation sections.
    pub fn from_file(path: &Path) -> Result<Self> {
        let mut inner =
            tokenizers::Tokenizer::from_file(path).map_err(|e| ModelError::BadFile {
                path: path.to_path_buf(),
                message: format!("not a tokenizer.json: {e}"),
            })?;
        // HF applies these only when a call asks to pad or truncate; a prompt is never padded.
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .expect("removing truncation cannot fail");
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

    fn raw(&self, text: &str, special: bool) -> Result<tokenizers::Encoding> {
        self.inner
            .encode(text, special)
            .map_err(|e| ModelError::Tokenizer(format!("cannot encode {text:?}: {e}")))
    }

    /// The unknown-word token's id, if the model has one.
    fn unk_id(&self) -> Option<u32> {
        use tokenizers::models::ModelWrapper;
        let unk = match self.inner.get_model() {
            ModelWrapper::BPE(m) => m.unk_token.clone(),
            ModelWrapper::WordPiece(m) => Some(m.unk_token.clone()),
            ModelWrapper::WordLevel(m) => Some(m.unk_token.clone()),
            ModelWrapper::Unigram(_) => None,
        };
        unk.and_then(|t| self.inner.token_to_id(&t))
    }

    /// Fails when part of `text` has no token: covered by the unknown-word token, or by no
    /// token at all (a character the vocabulary drops). Whitespace may go untokenised.
    fn check_covered(&self, text: &str, enc: &tokenizers::Encoding) -> Result<()> {
        let unk = self.unk_id();
        let mut covered = vec![false; text.len()];
        for (&id, &(s, e)) in enc.get_ids().iter().zip(enc.get_offsets()) {
            if Some(id) == unk && e > s {
                let what = text.get(s..e).unwrap_or("?");
                return Err(ModelError::Tokenizer(format!(
                    "cannot encode {text:?}: {what:?} (bytes {s}..{e}) is not in the vocabulary \
                     (the tokenizer would give its unknown token {:?})",
                    self.inner.id_to_token(id).unwrap_or_default()
                )));
            }
            for c in covered.iter_mut().take(e.min(text.len())).skip(s) {
                *c = true;
            }
        }
        if let Some((i, c)) = text
            .char_indices()
            .find(|(i, c)| !c.is_whitespace() && !covered[*i])
        {
            return Err(ModelError::Tokenizer(format!(
                "cannot encode {text:?}: the character {c:?} (U+{:04X}, byte {i}) gets no token",
                c as u32
            )));
        }
        Ok(())
    }

    /// Token ids of `text`; `special` adds what the tokenizer's post-processor adds (BOS for
    /// Llama 3, [CLS] and [SEP] for BERT). Fails on text the vocabulary cannot encode.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        let enc = self.raw(text, special)?;
        self.check_covered(text, &enc)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of `text` with the byte span of `text` each covers (special tokens added by
    /// the post-processor have an empty span). Fails on text the vocabulary cannot encode.
    pub fn encode_with_offsets(
        &self,
        text: &str,
        special: bool,
    ) -> Result<Vec<(u32, (usize, usize))>> {
        let enc = self.raw(text, special)?;
        self.check_covered(text, &enc)?;
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
        let ids = self.raw(text, false)?.get_ids().to_vec();
        if ids.len() != 1 || Some(ids[0]) == self.unk_id() || self.decode(&ids)?.trim() != text {
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
