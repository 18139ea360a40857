//! The toy vocabulary: one token per number 0..=199, the operators, and `NUL`, with a WordLevel
//! `tokenizer.json` whose pre-tokenizer splits "37+45=" into `37`, `+`, `45`, `=`.

use serde_json::json;

/// Numbers with a token of their own: 0..=199 (every sum of two numbers 0..=99 fits).
pub const N_NUMBERS: u32 = 200;

/// A token of the toy vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Token {
    /// A number 0..=199.
    Num(u32),
    /// `+`.
    Plus,
    /// `=`.
    Eq,
    /// `NUL`, the empty operand of unary tasks.
    Nul,
    /// `%`: x mod 10.
    Mod10,
    /// `/`: x // 10.
    Div10,
    /// `S`: x + 1.
    Succ,
    /// `P`: x - 1.
    Pred,
    /// `<`: 1 if x < y else 0.
    Less,
    /// `<unk>`.
    Unk,
}

const SYMBOLS: [(Token, &str); 9] = [
    (Token::Plus, "+"),
    (Token::Eq, "="),
    (Token::Nul, "NUL"),
    (Token::Mod10, "%"),
    (Token::Div10, "/"),
    (Token::Succ, "S"),
    (Token::Pred, "P"),
    (Token::Less, "<"),
    (Token::Unk, "<unk>"),
];

/// Vocabulary size.
pub const VOCAB_SIZE: usize = N_NUMBERS as usize + SYMBOLS.len();

impl Token {
    /// The token id: numbers are their own id; symbols follow.
    pub fn id(self) -> u32 {
        match self {
            Token::Num(n) => {
                assert!(n < N_NUMBERS, "{n} has no token");
                n
            }
            sym => {
                N_NUMBERS
                    + SYMBOLS
                        .iter()
                        .position(|(t, _)| *t == sym)
                        .expect("every symbol is listed") as u32
            }
        }
    }

    /// The text of the token.
    pub fn text(self) -> String {
        match self {
            Token::Num(n) => n.to_string(),
            sym => SYMBOLS
                .iter()
                .find(|(t, _)| *t == sym)
                .map(|(_, s)| s.to_string())
                .expect("every symbol is listed"),
        }
    }
}

/// The HF tokenizer.json (WordLevel) for this vocabulary.
pub fn tokenizer_json() -> serde_json::Value {
    let mut vocab = serde_json::Map::new();
    for n in 0..N_NUMBERS {
        vocab.insert(n.to_string(), json!(n));
    }
    for (t, s) in SYMBOLS {
        vocab.insert(s.to_string(), json!(t.id()));
    }
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": {
            "type": "Split",
            "pattern": {"Regex": "\\d+|NUL|<unk>|\\S"},
            "behavior": "Isolated",
            "invert": false
        },
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_dense_and_distinct() {
        let mut ids: Vec<u32> = (0..N_NUMBERS).map(|n| Token::Num(n).id()).collect();
        ids.extend(SYMBOLS.iter().map(|(t, _)| t.id()));
        ids.sort();
        assert_eq!(ids, (0..VOCAB_SIZE as u32).collect::<Vec<_>>());
        assert_eq!(Token::Plus.id(), 200);
        assert_eq!(Token::Eq.text(), "=");
    }
}
