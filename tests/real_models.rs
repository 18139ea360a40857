//! Real pretrained checkpoints through the real CLI (fetched by `make test`: make fetch-minilm,
//! make fetch-smollm2): all-MiniLM-L6-v2's extracted activations equal HF transformers' hidden
//! states (tests/fixtures/real/minilm_hidden.safetensors, tools/make_real_references.py);
//! SmolLM2's GGUF file works in `model check` and `model run` (logits equal to HF loading the
//! same file) and through `extract` and `accuracy` with numbers and answers of several tokens;
//! prompts longer than the model's context fail with the prompt, its length and the limit.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

mod common;
use common::{helixlab, model_check, model_run, root, write_study};

fn fetched(rel: &str) -> PathBuf {
    let p = root().join(rel);
    assert!(
        p.exists(),
        "{} is missing: `make test` fetches it (make fetch-minilm, make fetch-smollm2)",
        p.display()
    );
    p
}

/// A reference file of tools/make_real_references.py.
fn reference(name: &str) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(
        fetched(&format!("tests/fixtures/real/{name}")),
        &Device::Cpu,
    )
    .unwrap()
}

/// Largest |got - want| over the largest |want|.
fn max_rel(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
        / scale
}

fn write_pipeline(dir: &Path, model: &Path, task: &str, extract: &str) -> PathBuf {
    write_study(dir, "study.toml", model, task, extract, "")
}

/// The extract stage's table (not only `model run`): hook_resid_pre and hook_resid_post of every
/// layer at the number's token equal HF's hidden states (BertModel, output_hidden_states) for 22
/// numbers of 0..=341, within 1e-4 of the largest |value| of each layer.
#[test]
fn minilm_extracted_activations_equal_hf_hidden_states() {
    let model = fetched("data/models/all-MiniLM-L6-v2");
    let tmp = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        tmp.path(),
        &model,
        "kind = \"numbers\"\ntemplate = \"{x}\"\na = [0, 341]\nspecial_tokens = true",
        "sites = [\"hook_resid_pre\", \"hook_resid_post\"]\nlayers = \"all\"\npositions = [\"x\"]\nbatch_size = 128",
    );
    let (ok, _, err) = helixlab(&["extract", "--pipeline", p.to_str().unwrap()]);
    assert!(ok, "extract failed:\n{err}");
    let r = reference("minilm_hidden.safetensors");
    let numbers = r["numbers"].to_vec1::<i64>().unwrap();
    let hidden = &r["hidden_states"]; // (layers + 1, numbers, d)
    let run = tmp.path().join("run");
    let mut worst = 0f32;
    for l in 0..6 {
        for (site, h) in [("hook_resid_pre", l), ("hook_resid_post", l + 1)] {
            let m = helixlab_store::read::activations(&run, site, l, "x").unwrap();
            assert_eq!((m.rows(), m.d), (342, 384));
            let want = hidden.get(h).unwrap();
            let scale = want
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            for (i, &n) in numbers.iter().enumerate() {
                let row = m.a.iter().position(|&a| a == n).unwrap();
                let want = want.get(i).unwrap().to_vec1::<f32>().unwrap();
                let d = m
                    .row(row)
                    .iter()
                    .zip(&want)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max)
                    / scale;
                assert!(
                    d <= 1e-4,
                    "{site} layer {l}, number {n}: {d:.2e} of the largest |value|"
                );
                worst = worst.max(d);
            }
        }
    }
    eprintln!("MiniLM extract vs HF hidden states: worst {worst:.2e} relative");
}

#[test]
fn minilm_runs_a_number_as_three_tokens_not_128() {
    let model = fetched("data/models/all-MiniLM-L6-v2");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run.safetensors");
    let (ok, stdout, err) = model_run(&model, "37", &["blocks.5.hook_resid_post"], &out, &[]);
    assert!(ok, "{err}");
    assert!(stdout.starts_with("3 tokens:"), "{stdout}");
    let t = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    assert_eq!(
        t["input_ids"].to_vec1::<u32>().unwrap(),
        vec![101, 4261, 102]
    );
    assert_eq!(t["blocks.5.hook_resid_post"].dims(), &[3, 384]);
}

#[test]
fn a_prompt_longer_than_the_context_names_prompt_length_and_limit() {
    let model = fetched("data/models/all-MiniLM-L6-v2");
    let long = "word ".repeat(600);
    let tmp = tempfile::tempdir().unwrap();
    let (ok, _, err) = model_run(&model, &long, &[], &tmp.path().join("x.safetensors"), &[]);
    assert!(!ok);
    assert!(
        err.contains("602 tokens") && err.contains("context of 512"),
        "{err}"
    );
    let p = write_pipeline(
        tmp.path(),
        &model,
        &format!(
            "kind = \"numbers\"\ntemplate = \"{long}{{x}}\"\na = [0, 9]\nspecial_tokens = true"
        ),
        "sites = [\"hook_resid_pre\"]\nlayers = [0]\npositions = [\"x\"]",
    );
    let (ok, _, err) = helixlab(&["extract", "--pipeline", p.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("603 tokens") && err.contains("context of 512") && err.contains("word word"),
        "{err}"
    );
}

#[test]
fn smollm2_gguf_model_check_names_the_file_and_its_quantization() {
    let dir = fetched("data/models/SmolLM2-135M-Instruct");
    let v = model_check(&dir);
    assert_eq!(v["format"], "gguf");
    assert_eq!(v["architecture"], "llama");
    assert_eq!(v["layers"], 30);
    assert_eq!(v["kv_heads"], 3);
    assert_eq!(v["stored_types"]["Q4_1"], 210);
    assert_eq!(v["stored_types"]["Q8_0"], 1);
    assert_eq!(v["context"], 8192);
    assert!(v["weight_files"][0]
        .as_str()
        .unwrap()
        .ends_with("SmolLM2-135M-Instruct.Q4_1.gguf"));
    assert!(v["tokenizer"].as_str().unwrap().ends_with(".gguf"));
    // Numbers are written digit by digit: 0..=9 are single tokens, 10 is not.
    assert_eq!(v["single_token_numbers"], "0..=9");
    let (ok, text, _) = helixlab(&["model", "check", dir.to_str().unwrap()]);
    assert!(ok);
    assert!(text.contains("Q4_1 x 210"), "{text}");
}

/// `model run` on the GGUF file gives HF's last-position logits for the paper's GPT-J prompt
/// (the reference's first sequence).
#[test]
fn smollm2_gguf_model_run_gives_hfs_logits() {
    let dir = fetched("data/models/SmolLM2-135M-Instruct");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run.safetensors");
    let (ok, stdout, err) = model_run(
        &dir.join("SmolLM2-135M-Instruct.Q4_1.gguf"),
        "Output ONLY a number.\n37+45=",
        &[],
        &out,
        &[],
    );
    assert!(ok, "{err}");
    assert!(stdout.starts_with("12 tokens:"), "{stdout}");
    let got = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    let r = reference("smollm2_reference.safetensors");
    let last: Vec<f32> = got["logits"].get(11).unwrap().to_vec1().unwrap();
    let want: Vec<f32> = r["last.logits"].get(0).unwrap().to_vec1().unwrap();
    let d = max_rel(&last, &want);
    assert!(
        d <= 1e-4,
        "logits differ from HF by {d:.2e} of the largest |logit|"
    );
}

/// SmolLM2 writes numbers digit by digit: bare numbers 0..=999 through `extract` at `x` (the
/// last digit, where the model has read the whole number) and `x_first` (the first digit, one
/// to three tokens before it, so each prompt has its own offset) equal HF's hidden states at
/// those tokens, for every sampled number and layer (tests/fixtures/real/smollm2_multitoken).
#[test]
fn smollm2_numbers_of_several_tokens_extract_at_their_first_and_last_digit() {
    let dir = fetched("data/models/SmolLM2-135M-Instruct");
    let r = reference("smollm2_multitoken.safetensors");
    let tmp = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        tmp.path(),
        &dir,
        "kind = \"numbers\"\ntemplate = \"{x}\"\na = [0, 999]",
        "sites = [\"hook_resid_pre\", \"hook_resid_post\"]\nlayers = [0, 14, 29]\n\
         positions = [\"x\", \"x_first\"]\nbatch_size = 250",
    );
    let (ok, _, err) = helixlab(&["extract", "--pipeline", p.to_str().unwrap()]);
    assert!(ok, "extract failed:\n{err}");
    let run = tmp.path().join("run");
    let numbers = r["numbers.x"].to_vec1::<i64>().unwrap();
    let mut worst = 0f32;
    for (position, name) in [("x", "last"), ("x_first", "first")] {
        for (site, layer, key) in [
            ("hook_resid_pre", 0, "hook_resid_pre0".to_string()),
            ("hook_resid_post", 0, "hook_resid_post0".into()),
            ("hook_resid_post", 14, "hook_resid_post14".into()),
            ("hook_resid_post", 29, "hook_resid_post29".into()),
        ] {
            let m = helixlab_store::read::activations(&run, site, layer, position).unwrap();
            assert_eq!((m.rows(), m.d), (1000, 576));
            let want = r[&format!("numbers.{name}.{key}")]
                .to_vec2::<f32>()
                .unwrap();
            for (x, w) in numbers.iter().zip(&want) {
                let d = max_rel(m.row(*x as usize), w);
                assert!(
                    d <= 1e-4,
                    "{site} layer {layer} at {position} of {x}: {d:.2e}"
                );
                worst = worst.max(d);
            }
        }
    }
    // The first digit's offset follows the number's length.
    use helixlab_store::activations::{partition_dir, partition_file};
    let file = partition_file(&partition_dir(&run, "hook_resid_post", 14));
    let f = helixlab_store::Frame::query(&file, |q| q).unwrap();
    let (a, pos, name) = (
        f.i64("a").unwrap(),
        f.i64("position").unwrap(),
        f.str("position_name").unwrap(),
    );
    assert_eq!(a.len(), 2000);
    for ((x, p), n) in a.iter().zip(&pos).zip(&name) {
        let want = if n == "x" {
            -1
        } else {
            -(x.to_string().len() as i64)
        };
        assert_eq!(*p, want, "{n} of {x}");
    }
    eprintln!("SmolLM2 multi-token extract vs HF: worst {worst:.2e} relative");
}

/// Answers of several tokens (SmolLM2 on the paper's GPT-J prompt, a in 5..=9 and b in 5..=12
/// or 99: answers of one to three digits, operands of one or two): `accuracy` scores a problem
/// correct exactly when HF's greedy decoding (`generate`) writes the answer and ends the
/// number, reads the same wrong numbers, and the whole answer's log-probability and the first
/// answer token's logit equal HF's.
#[test]
fn smollm2_multi_token_answers_are_scored_as_hf_greedy_decoding_writes_them() {
    let dir = fetched("data/models/SmolLM2-135M-Instruct");
    let r = reference("smollm2_multitoken.safetensors");
    let b_ref: Vec<i64> = (5..=12).chain([95, 99]).collect();
    let greedy_value = r["addition.greedy_value"].to_vec1::<i64>().unwrap();
    let greedy_correct = r["addition.greedy_correct"].to_vec1::<i64>().unwrap();
    let logprob = r["addition.answer_logprob"].to_vec1::<f64>().unwrap();
    let first_logit = r["addition.answer_logit"].to_vec1::<f32>().unwrap();
    let answer_tokens = r["addition.answer_tokens"].to_vec2::<i64>().unwrap();
    let (mut checked, mut right, mut worst_lp) = (0, 0, 0f64);
    for b in ["[5, 12]", "[99, 99]"] {
        let tmp = tempfile::tempdir().unwrap();
        let p = write_pipeline(
            tmp.path(),
            &dir,
            &format!(
                "kind = \"addition\"\ntemplate = \"Output ONLY a number.\\n{{a}}+{{b}}=\"\n\
                 a = [5, 9]\nb = {b}"
            ),
            "sites = [\"hook_resid_pre\"]\nlayers = [0]\npositions = [\"a\"]",
        );
        let (ok, _, err) = helixlab(&["accuracy", "--pipeline", p.to_str().unwrap()]);
        assert!(ok, "accuracy failed:\n{err}");
        let df = helixlab_store::read::problems(&tmp.path().join("run")).unwrap();
        let col = |name: &str| df.column(name).unwrap().as_materialized_series().clone();
        let (a, bb, correct, value) = (col("a"), col("b"), col("correct"), col("pred_value"));
        let (lp, logit, toks) = (
            col("answer_logprob"),
            col("answer_logit"),
            col("answer_tokens"),
        );
        for i in 0..df.height() {
            let (ai, bi) = (
                a.i64().unwrap().get(i).unwrap(),
                bb.i64().unwrap().get(i).unwrap(),
            );
            let k = 10 * (ai - 5) as usize + b_ref.iter().position(|&x| x == bi).unwrap();
            let what = format!("{ai}+{bi}");
            let got_tokens: Vec<i64> = toks
                .list()
                .unwrap()
                .get_as_series(i)
                .unwrap()
                .u32()
                .unwrap()
                .into_no_null_iter()
                .map(i64::from)
                .collect();
            let want_tokens: Vec<i64> = answer_tokens[k]
                .iter()
                .copied()
                .filter(|&t| t >= 0)
                .collect();
            assert_eq!(got_tokens, want_tokens, "{what}: answer tokens");
            let is_right = correct.bool().unwrap().get(i).unwrap();
            assert_eq!(is_right, greedy_correct[k] == 1, "{what}: correct");
            let want_value = (greedy_value[k] >= 0).then_some(greedy_value[k]);
            assert_eq!(
                value.i64().unwrap().get(i),
                want_value,
                "{what}: the number written"
            );
            let d = (lp.f32().unwrap().get(i).unwrap() as f64 - logprob[k]).abs();
            assert!(
                d <= 2e-3,
                "{what}: log P(answer) {d:.2e} from HF's {}",
                logprob[k]
            );
            worst_lp = worst_lp.max(d);
            let l = logit.f32().unwrap().get(i).unwrap();
            assert!(
                (l - first_logit[k]).abs() <= 1e-4 * first_logit[k].abs().max(1.0),
                "{what}: first answer logit {l} vs HF {}",
                first_logit[k]
            );
            checked += 1;
            right += usize::from(is_right);
        }
    }
    assert_eq!(checked, 45);
    assert!(
        right > 5 && right < 40,
        "a real mix of right and wrong: {right}"
    );
    eprintln!(
        "SmolLM2 multi-token accuracy vs HF greedy: {checked} problems, {right} right, \
         log P(answer) within {worst_lp:.1e}"
    );
}

/// SmolLM2 from its GGUF file through the stages it can run with one-token numbers: `extract`
/// on the digits 0..=9 (resid_pre of layer 0 and resid_post of all 30 layers at the digit equal
/// HF's, relative 1e-4 per layer), and `accuracy` on the paper's GPT-J prompt for a, b in 0..=4
/// (one-digit answers): problems.parquet's answer logits equal HF's and its greedy answers are
/// HF's wherever HF's top two logits are more than 0.01 apart.
#[test]
fn smollm2_gguf_through_extract_and_accuracy_equals_hf() {
    let dir = fetched("data/models/SmolLM2-135M-Instruct");
    let r = reference("smollm2_stages.safetensors");
    let tmp = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        tmp.path(),
        &dir,
        "kind = \"numbers\"\ntemplate = \"{x}\"\na = [0, 9]",
        "sites = [\"hook_resid_pre\", \"hook_resid_post\"]\nlayers = \"all\"\npositions = [\"x\"]",
    );
    let (ok, _, err) = helixlab(&["extract", "--pipeline", p.to_str().unwrap()]);
    assert!(ok, "extract failed:\n{err}");
    let run = tmp.path().join("run");
    let mut worst = 0f32;
    let pre0 = r["digits.hook_resid_pre0"].to_vec2::<f32>().unwrap();
    let m = helixlab_store::read::activations(&run, "hook_resid_pre", 0, "x").unwrap();
    assert_eq!((m.rows(), m.d), (10, 576));
    for (x, want) in pre0.iter().enumerate() {
        worst = worst.max(max_rel(m.row(x), want));
    }
    let post = &r["digits.hook_resid_post"]; // (10, layers, d)
    for l in 0..30 {
        let m = helixlab_store::read::activations(&run, "hook_resid_post", l, "x").unwrap();
        let want = post.narrow(1, l, 1).unwrap().squeeze(1).unwrap();
        let want = want.to_vec2::<f32>().unwrap();
        let flat: Vec<f32> = want.concat();
        let got: Vec<f32> = (0..10).flat_map(|x| m.row(x).to_vec()).collect();
        let d = max_rel(&got, &flat);
        assert!(
            d <= 1e-4,
            "hook_resid_post layer {l}: {d:.2e} of its largest |value|"
        );
        worst = worst.max(d);
    }
    assert!(worst <= 1e-4, "{worst}");
    eprintln!("SmolLM2 extract vs HF: worst {worst:.2e} relative");

    let tmp = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        tmp.path(),
        &dir,
        "kind = \"addition\"\ntemplate = \"Output ONLY a number.\\n{a}+{b}=\"\na = [0, 4]\nb = [0, 4]",
        "sites = [\"hook_resid_pre\"]\nlayers = [0]\npositions = [\"a\"]",
    );
    let (ok, _, err) = helixlab(&["accuracy", "--pipeline", p.to_str().unwrap()]);
    assert!(ok, "accuracy failed:\n{err}");
    let df = helixlab_store::read::problems(&tmp.path().join("run")).unwrap();
    let col = |name: &str| df.column(name).unwrap().as_materialized_series().clone();
    let (a, b) = (col("a"), col("b"));
    let (a, b) = (a.i64().unwrap(), b.i64().unwrap());
    let pred = col("pred_token");
    let pred = pred.u32().unwrap();
    let logit = col("answer_logit");
    let logit = logit.f32().unwrap();
    let want_pred = r["addition.pred_token"].to_vec1::<i64>().unwrap();
    let margin = r["addition.top_margin"].to_vec1::<f32>().unwrap();
    let want_logit = r["addition.answer_logit"].to_vec1::<f32>().unwrap();
    assert_eq!(df.height(), 25);
    let (mut same, mut worst) = (0, 0f32);
    for i in 0..25 {
        let k = (5 * a.get(i).unwrap() + b.get(i).unwrap()) as usize;
        let d = (logit.get(i).unwrap() - want_logit[k]).abs() / want_logit[k].abs().max(1.0);
        assert!(
            d <= 1e-4,
            "problem {k}: answer logit {} vs HF {}",
            logit.get(i).unwrap(),
            want_logit[k]
        );
        worst = worst.max(d);
        if margin[k] > 0.01 {
            assert_eq!(pred.get(i).unwrap() as i64, want_pred[k], "problem {k}");
            same += 1;
        }
    }
    assert!(same >= 20, "{same}");
    eprintln!(
        "SmolLM2 accuracy vs HF: {same} greedy answers equal, answer logits within {worst:.2e}"
    );
}
