//! GGUF files written here with candle's writer: a tiny Llama whose tensors use every type
//! candle quantizes (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, F16, BF16, F32), with q/k rows
//! permuted as llama.cpp's converter does, and a byte-level BPE tokenizer in the metadata. The
//! runtime must give back each weight in HF's order within that type's quantization error, run
//! the model, build the tokenizer (BOS added where the file says so), and refuse what it does
//! not support with errors that name the key or tensor. (The real-weight check against HF
//! transformers is tests/real_smollm2.rs.)

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use helixlab_model::gguf::GgufFile;
use helixlab_model::weights::Weights;
use helixlab_model::{ForwardRequest, LoadOptions, Logits, Model, Tokenizer};

mod common;

const D: usize = 256;
const HEADS: usize = 4;
const KV: usize = 2;
const D_HEAD: usize = D / HEADS;
const VOCAB: usize = 258;

/// Deterministic values of order one (a 64-bit LCG).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// llama.cpp's `permute`: HF row `h*d + j*d/2 + i` goes to GGUF row `h*d + 2i + j`.
fn llama_cpp_permute(w: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let d = rows / heads;
    let mut out = vec![0f32; w.len()];
    for h in 0..heads {
        for j in 0..2 {
            for i in 0..d / 2 {
                let (src, dst) = (h * d + j * d / 2 + i, h * d + 2 * i + j);
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

struct Case {
    gguf: &'static str,
    hf: &'static str,
    rows: usize,
    cols: usize,
    dtype: GgmlDType,
    permute: Option<usize>,
    /// Largest RMS error relative to the weights' RMS that the type's quantization allows.
    tol: f32,
}

// Long: a table of test cases, one block per GGUF type and layout.
fn cases() -> Vec<Case> {
    use GgmlDType::*;
    let c = |gguf, hf, rows, cols, dtype, permute, tol| Case {
        gguf,
        hf,
        rows,
        cols,
        dtype,
        permute,
        tol,
    };
    let kvd = KV * D_HEAD;
    vec![
        c(
            "token_embd.weight",
            "model.embed_tokens.weight",
            VOCAB,
            D,
            Q8_0,
            None,
            0.01,
        ),
        c("output.weight", "lm_head.weight", VOCAB, D, Q6K, None, 0.05),
        c(
            "blk.0.attn_q.weight",
            "model.layers.0.self_attn.q_proj.weight",
            D,
            D,
            Q4_0,
            Some(HEADS),
            0.15,
        ),
        c(
            "blk.0.attn_k.weight",
            "model.layers.0.self_attn.k_proj.weight",
            kvd,
            D,
            Q4_1,
            Some(KV),
            0.15,
        ),
        c(
            "blk.0.attn_v.weight",
            "model.layers.0.self_attn.v_proj.weight",
            kvd,
            D,
            Q5_0,
            None,
            0.08,
        ),
        c(
            "blk.0.attn_output.weight",
            "model.layers.0.self_attn.o_proj.weight",
            D,
            D,
            Q5_1,
            None,
            0.08,
        ),
        c(
            "blk.0.ffn_gate.weight",
            "model.layers.0.mlp.gate_proj.weight",
            D,
            D,
            Q2K,
            None,
            0.6,
        ),
        c(
            "blk.0.ffn_up.weight",
            "model.layers.0.mlp.up_proj.weight",
            D,
            D,
            Q3K,
            None,
            0.3,
        ),
        c(
            "blk.0.ffn_down.weight",
            "model.layers.0.mlp.down_proj.weight",
            D,
            D,
            Q4K,
            None,
            0.15,
        ),
        c(
            "blk.1.attn_q.weight",
            "model.layers.1.self_attn.q_proj.weight",
            D,
            D,
            Q5K,
            Some(HEADS),
            0.08,
        ),
        c(
            "blk.1.attn_k.weight",
            "model.layers.1.self_attn.k_proj.weight",
            kvd,
            D,
            Q6K,
            Some(KV),
            0.05,
        ),
        c(
            "blk.1.attn_v.weight",
            "model.layers.1.self_attn.v_proj.weight",
            kvd,
            D,
            F16,
            None,
            1e-3,
        ),
        c(
            "blk.1.attn_output.weight",
            "model.layers.1.self_attn.o_proj.weight",
            D,
            D,
            BF16,
            None,
            1e-2,
        ),
        c(
            "blk.1.ffn_gate.weight",
            "model.layers.1.mlp.gate_proj.weight",
            D,
            D,
            F32,
            None,
            0.0,
        ),
        c(
            "blk.1.ffn_up.weight",
            "model.layers.1.mlp.up_proj.weight",
            D,
            D,
            Q8_0,
            None,
            0.01,
        ),
        c(
            "blk.1.ffn_down.weight",
            "model.layers.1.mlp.down_proj.weight",
            D,
            D,
            Q4_1,
            None,
            0.15,
        ),
    ]
}

fn byte_alphabet() -> Vec<String> {
    // GPT-2's table: printable bytes stand for themselves, the rest for 256 + n in order.
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut extra = 0;
    (0..256u32)
        .map(|b| {
            let c = if printable(b) {
                b
            } else {
                extra += 1;
                255 + extra
            };
            char::from_u32(c).unwrap().to_string()
        })
        .collect()
}

fn strings(v: &[&str]) -> Value {
    Value::Array(v.iter().map(|s| Value::String(s.to_string())).collect())
}

/// Writes the tiny Llama to `path`; `edit` may change metadata and tensors first.
fn write(path: &Path, edit: impl FnOnce(&mut Vec<(String, Value)>, &mut Vec<(String, QTensor)>)) {
    let mut tokens = byte_alphabet();
    tokens.push("ab".into());
    tokens.push("<|bos|>".into());
    let token_refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let mut types = vec![Value::I32(1); VOCAB];
    types[VOCAB - 1] = Value::I32(3);
    let mut meta: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String("llama".into())),
        ("llama.block_count".into(), Value::U32(2)),
        ("llama.context_length".into(), Value::U32(64)),
        ("llama.embedding_length".into(), Value::U32(D as u32)),
        ("llama.feed_forward_length".into(), Value::U32(D as u32)),
        (
            "llama.attention.head_count".into(),
            Value::U32(HEADS as u32),
        ),
        (
            "llama.attention.head_count_kv".into(),
            Value::U32(KV as u32),
        ),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(1e-5),
        ),
        ("llama.rope.freq_base".into(), Value::F32(10000.0)),
        (
            "llama.rope.dimension_count".into(),
            Value::U32(D_HEAD as u32),
        ),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("default".into())),
        ("tokenizer.ggml.tokens".into(), strings(&token_refs)),
        ("tokenizer.ggml.merges".into(), strings(&["a b"])),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        (
            "tokenizer.ggml.bos_token_id".into(),
            Value::U32(VOCAB as u32 - 1),
        ),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(true)),
    ];
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for (i, c) in cases().iter().enumerate() {
        let mut w = values(c.rows * c.cols, i as u64 + 1);
        if let Some(h) = c.permute {
            w = llama_cpp_permute(&w, c.rows, c.cols, h);
        }
        let t = Tensor::from_vec(w, (c.rows, c.cols), &Device::Cpu).unwrap();
        tensors.push((c.gguf.into(), QTensor::quantize(&t, c.dtype).unwrap()));
    }
    for name in [
        "output_norm.weight",
        "blk.0.attn_norm.weight",
        "blk.0.ffn_norm.weight",
        "blk.1.attn_norm.weight",
        "blk.1.ffn_norm.weight",
    ] {
        let t = Tensor::ones(D, DType::F32, &Device::Cpu).unwrap();
        tensors.push((name.into(), QTensor::quantize(&t, GgmlDType::F32).unwrap()));
    }
    edit(&mut meta, &mut tensors);
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &meta_refs, &tensor_refs).unwrap();
}

fn tiny(dir: &Path) -> PathBuf {
    let p = dir.join("tiny.gguf");
    write(&p, |_, _| {});
    p
}

fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt()
}

#[test]
fn every_quant_type_dequantizes_to_hf_order_within_its_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tiny(tmp.path());
    let g = GgufFile::open(&path).unwrap();
    let cfg = g.config().unwrap();
    assert_eq!(
        (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads),
        (2, D, HEADS, KV)
    );
    assert!(!cfg.tie_word_embeddings, "output.weight is present");
    let types = g.tensor_types();
    assert_eq!(types.len(), 13, "{types:?}");
    let w = Weights::open_gguf(g, &cfg, DType::F32, &Device::Cpu);
    for (i, c) in cases().iter().enumerate() {
        let want = values(c.rows * c.cols, i as u64 + 1);
        let got: Vec<f32> = w
            .get(c.hf, &[c.rows, c.cols])
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let err: Vec<f32> = got.iter().zip(&want).map(|(a, b)| a - b).collect();
        let rel = rms(&err) / rms(&want);
        assert!(
            rel <= c.tol.max(1e-7),
            "{} ({:?}): relative RMS error {rel:.3e} > {}",
            c.hf,
            c.dtype,
            c.tol
        );
    }
}

#[test]
fn a_tiny_gguf_llama_runs_and_its_tokenizer_adds_bos() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tiny(tmp.path());
    let model = Model::load(tmp.path(), &LoadOptions::default()).unwrap();
    assert_eq!(model.stored_types()["Q4_1"], 2);
    let tok = Tokenizer::for_checkpoint(&path).unwrap();
    let ids = tok.encode("ab!", true).unwrap();
    assert_eq!(ids, vec![VOCAB as u32 - 1, 256, b'!' as u32]);
    let out = model
        .forward(
            &model.batch(&[ids]).unwrap(),
            &ForwardRequest::new().logits(Logits::Last),
        )
        .unwrap();
    let l: Vec<f32> = out
        .logits
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(l.len(), VOCAB);
    assert!(l.iter().all(|x| x.is_finite()) && l.iter().any(|x| *x != 0.0));
    // A tokenizer.json beside the file wins over the metadata.
    std::fs::copy(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/parity/gpt2_tied/tokenizer.json"),
        tmp.path().join("tokenizer.json"),
    )
    .unwrap();
    let beside = Tokenizer::for_checkpoint(&path).unwrap();
    assert!(beside.source.ends_with("tokenizer.json"));
}

fn load_err(path: &Path) -> String {
    match Model::load(path, &LoadOptions::default()) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unsupported_gguf_files_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("gpt2.gguf");
    write(&p, |m, _| m[0].1 = Value::String("gpt2".into()));
    let e = load_err(&p);
    assert!(
        e.contains("gpt2.gguf") && e.contains("`gpt2` is not supported (llama)"),
        "{e}"
    );

    let p = tmp.path().join("scaled.gguf");
    write(&p, |_, t| {
        let f = Tensor::ones(D_HEAD / 2, DType::F32, &Device::Cpu).unwrap();
        t.push((
            "rope_freqs.weight".into(),
            QTensor::quantize(&f, GgmlDType::F32).unwrap(),
        ));
    });
    assert!(load_err(&p).contains("rope_freqs.weight"));

    let p = tmp.path().join("nolayers.gguf");
    write(&p, |m, _| m.retain(|(k, _)| k != "llama.block_count"));
    assert!(load_err(&p).contains("`llama.block_count` is missing"));

    let p = tmp.path().join("notok.gguf");
    write(&p, |m, _| m.retain(|(k, _)| !k.starts_with("tokenizer.")));
    let e = match Tokenizer::for_checkpoint(&p) {
        Ok(_) => panic!("a tokenizer without metadata"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("tokenizer.ggml.model"), "{e}");

    let p = tmp.path().join("spm.gguf");
    write(&p, |m, _| {
        for (k, v) in m.iter_mut() {
            if k == "tokenizer.ggml.model" {
                *v = Value::String("llama".into());
            }
        }
    });
    let e = match Tokenizer::for_checkpoint(&p) {
        Ok(_) => panic!("sentencepiece accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("`llama` is not supported") && e.contains("tokenizer.json"),
        "{e}"
    );

    let p = tmp.path().join("short.gguf");
    std::fs::write(&p, b"GGUF").unwrap();
    assert!(load_err(&p).contains("not a GGUF file"));
}

/// Damaged GGUF files (metadata, tensor directory, data): opening, checking and loading answer
/// with an error or a model, never a panic or a hang.
#[test]
fn damaged_gguf_files_give_errors_not_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(tiny(tmp.path())).unwrap();
    for (i, damaged) in common::mutations(&bytes, 8192, 300, 11)
        .into_iter()
        .enumerate()
    {
        let path = tmp.path().join(format!("m{i}.gguf"));
        std::fs::write(&path, damaged).unwrap();
        common::answers_in_time(
            &format!("mutation {i}"),
            std::time::Duration::from_secs(10),
            move || {
                let _ = GgufFile::open(&path);
                let _ = helixlab_model::CheckpointInfo::read(&path);
                let _ = Model::load(&path, &LoadOptions::default());
                let _ = std::fs::remove_file(&path);
            },
        );
    }
}
