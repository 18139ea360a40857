//! The tokenizer a GGUF file describes, rebuilt the way HF transformers' GGUF loader rebuilds
//! it (`integrations/gguf/gguf_tokenizer_mapping.py`, transformers 5.23), so that ids equal
//! `AutoTokenizer.from_pretrained(dir, gguf_file=...)`: byte-level BPE over the file's tokens and
//! merges, GPT-2's pre-tokenizer unless `tokenizer.ggml.pre` names a split llama.cpp knows,
//! control tokens (type 3) as special tokens and user-defined ones (type 4) as added tokens,
//! and BOS/EOS added only where the file's `add_bos_token`/`add_eos_token` say so.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::{bad, GgufFile};
use crate::error::Result;

/// GPT-2's byte-to-character table: printable bytes stand for themselves, the rest for
/// 256 + n in order.
fn bytes_to_unicode() -> [char; 256] {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut table = ['\0'; 256];
    let mut extra = 0;
    for b in 0..256u32 {
        let c = if printable.contains(&b) {
            b
        } else {
            extra += 1;
            255 + extra
        };
        table[b as usize] = char::from_u32(c).expect("a valid code point");
    }
    table
}

const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The split regex HF uses for a `tokenizer.ggml.pre` value, if any (else GPT-2's).
fn split_for(pre: &str) -> Option<&'static str> {
    match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" | "dbrx" | "smaug-bpe" => Some(LLAMA3_SPLIT),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => Some(QWEN2_SPLIT),
        _ => None,
    }
}

// Long (about 150 lines) because it maps llama.cpp's tokenizer metadata field by field onto one
// HF tokenizer.json, following llama.cpp's own reader in order.
pub(super) fn from_gguf(g: &GgufFile) -> Result<Tokenizer> {
    let path = g.path();
    let kind = g.str_of("tokenizer.ggml.model")?.ok_or_else(|| {
        bad(
            path,
            "metadata key `tokenizer.ggml.model` is missing: no tokenizer",
        )
    })?;
    if kind != "gpt2" {
        return Err(bad(
            path,
            format!(
                "tokenizer.ggml.model = `{kind}` is not supported (gpt2, byte-level BPE); put \
                 the model's tokenizer.json beside the file"
            ),
        ));
    }
    let pre = g.str_of("tokenizer.ggml.pre")?.unwrap_or("default");
    if let Some(other) = [
        "qwen35",
        "gpt-4o",
        "llama4",
        "kanana2",
        "talkie",
        "minimax-m2",
        "tekken",
    ]
    .iter()
    .find(|p| **p == pre)
    {
        return Err(bad(
            path,
            format!(
                "tokenizer.ggml.pre = `{other}` is not supported; put the model's \
                 tokenizer.json beside the file"
            ),
        ));
    }
    let tokens = g.strings_of("tokenizer.ggml.tokens")?;
    let spelling = bytes_to_unicode();
    let alphabet: std::collections::HashSet<char> = spelling.iter().copied().collect();
    // Tokens spelled outside the byte alphabet (some converters store raw text) are spelled
    // byte by byte, as HF does.
    let spelled: Vec<String> = tokens
        .iter()
        .map(|t| {
            if t.chars().all(|c| alphabet.contains(&c)) {
                t.clone()
            } else {
                t.bytes().map(|b| spelling[b as usize]).collect()
            }
        })
        .collect();
    let vocab: Vocab = spelled
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let merges = g
        .strings_of("tokenizer.ggml.merges")?
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| {
                    bad(
                        path,
                        format!("tokenizer.ggml.merges[{i}] = {m:?} is not `a b`"),
                    )
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .continuing_subword_prefix(String::new())
        .end_of_word_suffix(String::new())
        .build()
        .map_err(|e| bad(path, format!("cannot build BPE from tokenizer.ggml.*: {e}")))?;
    let mut tok = Tokenizer::new(bpe);
    match split_for(pre) {
        Some(regex) => {
            let split = Split::new(
                SplitPattern::Regex(regex.to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| bad(path, format!("pre-tokenizer regex: {e}")))?;
            tok.with_pre_tokenizer(Some(Sequence::new(vec![
                split.into(),
                ByteLevel::new(false, true, false).into(),
            ])));
        }
        None => {
            tok.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
        }
    }
    tok.with_decoder(Some(ByteLevelDecoder::default()));

    if let Some(types) = g.ints_of("tokenizer.ggml.token_type")? {
        // A control token spelled outside the byte alphabet is a converter's mislabel: HF skips
        // it so the vocabulary keeps the model's size.
        let control: Vec<AddedToken> = spelled
            .iter()
            .zip(&types)
            .filter(|(t, ty)| **ty == 3 && t.chars().all(|c| alphabet.contains(&c)))
            .map(|(t, _)| AddedToken::from(t.clone(), true).normalized(false))
            .collect();
        tok.add_special_tokens(control)
            .map_err(|e| bad(path, format!("control tokens: {e}")))?;
        let user: Vec<AddedToken> = spelled
            .iter()
            .zip(&types)
            .filter(|(_, ty)| **ty == 4)
            .map(|(t, _)| AddedToken::from(t.clone(), false).normalized(false))
            .collect();
        tok.add_tokens(user)
            .map_err(|e| bad(path, format!("user-defined tokens: {e}")))?;
    }

    let add_bos = g.bool_of("tokenizer.ggml.add_bos_token")?.unwrap_or(false);
    let add_eos = g.bool_of("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
    if add_bos || add_eos {
        let special = |key: &str| -> Result<(String, u32)> {
            let id = g
                .u64_of(key)?
                .ok_or_else(|| bad(path, format!("metadata key `{key}` is missing")))?
                as u32;
            let t = spelled
                .get(id as usize)
                .ok_or_else(|| bad(path, format!("`{key}` = {id} is outside the vocabulary")))?;
            Ok((t.clone(), id))
        };
        let mut single = Vec::new();
        let mut specials = Vec::new();
        if add_bos {
            let (t, id) = special("tokenizer.ggml.bos_token_id")?;
            single.push(t.clone());
            specials.push((t, id));
        }
        single.push("$A".to_string());
        if add_eos {
            let (t, id) = special("tokenizer.ggml.eos_token_id")?;
            single.push(t.clone());
            specials.push((t, id));
        }
        let template = TemplateProcessing::builder()
            .try_single(single)
            .map_err(|e| bad(path, format!("BOS/EOS template: {e}")))?
            .special_tokens(specials)
            .build()
            .map_err(|e| bad(path, format!("BOS/EOS template: {e}")))?;
        tok.with_post_processor(Some(template));
    }
    Ok(tok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_gpt2s() {
        let t = bytes_to_unicode();
        assert_eq!(t[b'A' as usize], 'A');
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[0xAD], 'Ń');
        let distinct: std::collections::HashSet<char> = t.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
    }
}
