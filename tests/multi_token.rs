//! Numbers of several tokens end to end, on the GPT-2 parity checkpoint (random weights, 32
//! positions, a word-level vocabulary with "0".."119") given a tokenizer that writes every digit
//! as its own token ("37+45=" becomes `3 7 + 4 5 =`): operands of one or two tokens, so the
//! named positions move from prompt to prompt. Checked against `helixlab model run` (the plain
//! forward of one prompt) and against patching one pair per forward. (The shipped toy adder
//! has 4 learned positions, too few for a digit-split prompt.)

use std::path::{Path, PathBuf};

mod common;
use common::{helixlab_with, root, run_ok, write_study};

/// The GPT-2 parity checkpoint with a digit-by-digit tokenizer, in `dir`.
fn digit_toy(dir: &Path) -> PathBuf {
    let src = root().join("crates/model/tests/fixtures/parity/gpt2_tied");
    let out = dir.join("toy-digits");
    std::fs::create_dir_all(&out).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), out.join(f)).unwrap();
    }
    let mut tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("tokenizer.json")).unwrap())
            .unwrap();
    let pattern = &mut tok["pre_tokenizer"]["pattern"]["Regex"];
    assert_eq!(pattern.as_str(), Some("\\d+|\\S|\\n"));
    *pattern = "\\d|\\S|\\n".into();
    std::fs::write(out.join("tokenizer.json"), tok.to_string()).unwrap();
    out
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn frame(path: &Path) -> helixlab_store::Frame {
    helixlab_store::Frame::query(path, |q| q).unwrap()
}

// Long (about 100 lines) because one study's stages are run in order and each table they write
// is checked before the next stage reads it.
#[test]
fn numbers_of_several_tokens_are_extracted_and_patched_at_each_prompts_own_positions() {
    let tmp = tempfile::tempdir().unwrap();
    let model = digit_toy(tmp.path());
    let p = write_study(
        tmp.path(),
        "study.toml",
        &model,
        "kind = \"addition\"\ntemplate = \"{a}+{b}=\"\na = [0, 39]\nb = [5, 14]",
        "sites = [\"hook_resid_pre\"]\nlayers = \"all\"\n\
         positions = [\"a\", \"a_first\", \"b\", \"last\"]\nbatch_size = 64",
        "[analysis]\nposition = \"a\"\n\n[patch]\npairs = 24\ncorrect_only = false\n\
         kinds = [\"layer\", \"helix\", \"mean_ablation\"]",
    );
    let ps = p.to_str().unwrap();
    let run = tmp.path().join("run");
    run_ok(&["accuracy", "--pipeline", ps]);
    let problems = frame(&run.join("problems.parquet"));
    let layouts = problems.str("token_layout").unwrap();
    let (a, b) = (problems.i64("a").unwrap(), problems.i64("b").unwrap());
    for ((a, b), l) in a.iter().zip(&b).zip(&layouts) {
        assert_eq!(
            *l,
            format!("{},{}", a.to_string().len(), b.to_string().len())
        );
    }
    run_ok(&["extract", "--pipeline", ps]);

    // Every named position, prompt by prompt, equals the plain forward of that prompt alone at
    // the index its digits give (a ragged batch of 64 prompts of 4 to 6 tokens).
    for (a, b) in [(7, 5), (12, 9), (3, 14), (39, 11)] {
        let prompt = format!("{a}+{b}=");
        let out = tmp.path().join(format!("{a}-{b}.safetensors"));
        let (ok, _, err) =
            common::model_run(&model, &prompt, &["blocks.1.hook_resid_pre"], &out, &[]);
        assert!(ok, "{err}");
        let t = candle_core::safetensors::load(&out, &candle_core::Device::Cpu).unwrap();
        let acts = t["blocks.1.hook_resid_pre"].to_vec2::<f32>().unwrap();
        let (la, lb) = (a.to_string().len(), b.to_string().len());
        let id = (a * 10 + (b - 5)) as usize;
        for (name, index) in [
            ("a", la - 1),
            ("a_first", 0),
            ("b", la + lb),
            ("last", la + lb + 1),
        ] {
            let m = helixlab_store::read::activations(&run, "hook_resid_pre", 1, name).unwrap();
            let got = m.row(id);
            let d = got
                .iter()
                .zip(&acts[index])
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(d < 1e-4, "{prompt} at {name} (token {index}): {d}");
        }
    }

    // Pairs share their layout; patching a at each pair's own offset in batches equals one
    // pair per forward from the embedding.
    run_ok(&["spectral", "--pipeline", ps]);
    run_ok(&["fit", "--pipeline", ps]);
    run_ok(&["pairs", "--pipeline", ps]);
    let pairs = frame(&run.join("patch/pairs.parquet"));
    let (ca, xa, ops) = (
        pairs.i64("clean_a").unwrap(),
        pairs.i64("corrupt_a").unwrap(),
        pairs.str("operand").unwrap(),
    );
    let mut mixed = std::collections::BTreeSet::new();
    for i in (0..ca.len()).filter(|&i| ops[i] == "a") {
        assert_eq!(ca[i].to_string().len(), xa[i].to_string().len(), "pair {i}");
        mixed.insert(ca[i].to_string().len());
    }
    assert_eq!(mixed.len(), 2, "pairs of one- and two-digit a");
    run_ok(&["patch", "--pipeline", ps]);
    let sorted = |p: &Path| {
        helixlab_store::Frame::query(p, |q| {
            q.sort(["layer", "kind", "pair_id"], Default::default())
        })
        .unwrap()
    };
    let batched = sorted(&run.join("patch/patching.parquet"));
    let (ok, _, err) = helixlab_with(
        &["patch", "--force", "--pipeline", ps],
        &[("HELIXLAB_PATCH_UNBATCHED", "1")],
    );
    assert!(ok, "{err}");
    let alone = sorted(&run.join("patch/patching.parquet"));
    let (x, y) = (
        batched.f64("patched_logit").unwrap(),
        alone.f64("patched_logit").unwrap(),
    );
    assert_eq!(x.len(), 2 * 24 * 3, "2 layers x 24 pairs x 3 kinds");
    let worst = max_diff(&x, &y);
    assert!(
        worst < 1e-4,
        "batched and one-pair patching differ by {worst}"
    );
    // The patch did something: the layer patch moves the clean logit.
    let clean = batched.f64("clean_logit").unwrap();
    assert!(
        x.iter().zip(&clean).any(|(p, c)| (p - c).abs() > 1e-2),
        "no patch changed a logit"
    );
    let (bd, ad) = (
        batched.f64("answer_logprob_diff").unwrap(),
        alone.f64("answer_logprob_diff").unwrap(),
    );
    let worst_lp = max_diff(&bd, &ad);
    assert!(
        worst_lp < 1e-4,
        "log P differs between batched and one pair: {worst_lp}"
    );

    // Against plain forwards: patching resid_pre of layer 0 at a's last digit with the corrupt
    // prompt's is running the prompt whose a ends in the corrupt a's last digit. log P of the
    // corrupt answer (two digits: teacher forced) in that prompt minus in the clean one is the
    // table's answer_logprob_diff.
    let layer0 = helixlab_store::Frame::query(&run.join("patch/patching.parquet"), |q| {
        use polars::prelude::{col, lit};
        q.filter(col("layer").eq(lit(0u32)).and(col("kind").eq(lit("layer"))))
            .sort(["pair_id"], Default::default())
    })
    .unwrap();
    let ids = layer0.i64("pair_id").unwrap();
    let diffs = layer0.f64("answer_logprob_diff").unwrap();
    let (cb, pair_ids) = (pairs.i64("clean_b").unwrap(), pairs.i64("pair_id").unwrap());
    let logprob = |prompt: &str, answer: &str| -> f64 {
        let text = format!("{prompt}{}", &answer[..answer.len() - 1]);
        let out = tmp.path().join("lp.safetensors");
        let (ok, _, err) = common::model_run(&model, &text, &[], &out, &[]);
        assert!(ok, "{err}");
        let t = candle_core::safetensors::load(&out, &candle_core::Device::Cpu).unwrap();
        let logits = t["logits"].to_vec2::<f32>().unwrap();
        let first = logits.len() - answer.len();
        answer
            .bytes()
            .enumerate()
            .map(|(j, c)| {
                let row = &logits[first + j];
                let max = row.iter().fold(f32::MIN, |m, &v| m.max(v)) as f64;
                let z: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
                // The word-level vocabulary gives "0".."9" the ids 0..9.
                row[(c - b'0') as usize] as f64 - max - z.ln()
            })
            .sum()
    };
    let mut checked = 0;
    for (&id, &diff) in ids.iter().zip(&diffs) {
        let i = (0..ops.len())
            .find(|&i| ops[i] == "a" && pair_ids[i] == id)
            .unwrap();
        let (a, x, b) = (ca[i], xa[i], cb[i]);
        let answer = (x + b).to_string();
        if answer.len() < 2 {
            continue;
        }
        let a_text = a.to_string();
        let hybrid = format!("{}{}", &a_text[..a_text.len() - 1], x % 10);
        let want =
            logprob(&format!("{hybrid}+{b}="), &answer) - logprob(&format!("{a}+{b}="), &answer);
        assert!(
            (diff - want).abs() < 1e-4,
            "pair {id} ({a} <- {x}, b {b}): {diff} vs {want}"
        );
        eprintln!("pair {id}: a {a} <- {x}, b {b}: log P diff {diff:.4}, plain forwards {want:.4}");
        checked += 1;
        if checked == 4 {
            break;
        }
    }
    assert_eq!(checked, 4);
    eprintln!(
        "multi-token patching: {} rows, batched = one pair per forward within {worst:.1e}",
        x.len()
    );
}

/// The reference of tools/make_multi_token_reference.py (HF transformers, teacher forced).
fn reference() -> serde_json::Value {
    let path = root().join("crates/patch/tests/fixtures/multi_token_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn close(what: &str, got: f64, want: &serde_json::Value) {
    let want = want.as_f64().unwrap();
    assert!(
        (got - want).abs() < 1e-3 * want.abs().max(1.0),
        "{what}: helixlab {got}, HF {want}"
    );
}

// Long (about 110 lines) because three stages run on one study and each table is compared with
// the same reference, pair by pair.
#[test]
fn patch_last_components_and_neurons_score_answers_of_several_tokens_as_hf_does() {
    let tmp = tempfile::tempdir().unwrap();
    let model = digit_toy(tmp.path());
    let p = write_study(
        tmp.path(),
        "study.toml",
        &model,
        "kind = \"addition\"\ntemplate = \"{a}+{b}=\"\na = [0, 39]\nb = [5, 14]",
        "sites = [\"hook_resid_post\"]\nlayers = \"all\"\npositions = [\"a\", \"last\"]\n\
         batch_size = 64",
        "[patch]\npairs = 6\ncorrect_only = false\ncomponent_fit_problems = 40\nhead_top = 4\n\n\
         [neurons]\ntop = 8\nablation_problems = 40",
    );
    let ps = p.to_str().unwrap();
    let run = tmp.path().join("run");
    for stage in [
        "accuracy",
        "extract",
        "pairs",
        "patch-last",
        "components",
        "neurons",
    ] {
        run_ok(&[stage, "--pipeline", ps]);
    }
    let reference = reference();
    let refs = reference["pairs"].as_array().unwrap();
    // The pairs the reference was made for, in pair_id order; answers of one and two digits.
    let pairs = helixlab_store::Frame::query(&run.join("patch/pairs.parquet"), |q| {
        use polars::prelude::{col, lit};
        q.filter(col("operand").eq(lit("last")))
            .sort(["pair_id"], Default::default())
    })
    .unwrap();
    let cols = ["clean_a", "clean_b", "corrupt_a", "corrupt_b"].map(|c| pairs.i64(c).unwrap());
    assert_eq!(cols[0].len(), refs.len());
    for (i, r) in refs.iter().enumerate() {
        let want: Vec<i64> = ["clean", "corrupt"]
            .iter()
            .flat_map(|k| r[k].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()))
            .collect();
        assert_eq!(
            (0..4).map(|c| cols[c][i]).collect::<Vec<_>>(),
            want,
            "pair {i}"
        );
    }
    let lengths: std::collections::BTreeSet<usize> = refs
        .iter()
        .map(|r| r["answer_tokens"].as_array().unwrap().len())
        .collect();
    assert_eq!(lengths.len(), 2, "a batch of one- and two-token answers");

    // patch-last, kind `layer`, at both layers.
    let rows = |table: &str, effect: &str| {
        helixlab_store::Frame::query(&run.join("patch").join(table), |q| {
            use polars::prelude::{col, lit};
            q.filter(col("effect").eq(lit(effect)))
        })
        .unwrap()
    };
    let last = rows("last_token.parquet", "layer");
    let (pid, layer) = (last.i64("pair_id").unwrap(), last.i64("layer").unwrap());
    let (ld, lp) = (
        last.f64("logit_diff").unwrap(),
        last.f64("answer_logprob_diff").unwrap(),
    );
    for i in 0..pid.len() {
        let want = &refs[pid[i] as usize]["last_layer"][layer[i] as usize];
        let what = format!("patch-last pair {} layer {}", pid[i], layer[i]);
        close(&what, ld[i], &want["logit_diff"]);
        close(&what, lp[i], &want["logprob_diff"]);
    }
    assert_eq!(pid.len(), 2 * refs.len());

    // components: total and direct effect of every attention layer, MLP and head.
    let mut checked = 0;
    for effect in ["total", "direct"] {
        let t = rows("components.parquet", effect);
        let (comp, pid, layer, head) = (
            t.str("component").unwrap(),
            t.i64("pair_id").unwrap(),
            t.i64("layer").unwrap(),
            t.i64("head").unwrap(),
        );
        let (ld, lp) = (
            t.f64("logit_diff").unwrap(),
            t.f64("answer_logprob_diff").unwrap(),
        );
        for i in (0..pid.len()).filter(|&i| comp[i] != "heads_top" && comp[i] != "mlps_top") {
            let head = (comp[i] == "head").then_some(head[i]);
            let want = refs[pid[i] as usize]["components"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| {
                    c["component"] == comp[i].as_str()
                        && c["layer"] == layer[i]
                        && c["head"].as_i64() == head
                })
                .unwrap_or_else(|| {
                    panic!("{} {} {head:?} not in the reference", comp[i], layer[i])
                });
            let what = format!(
                "{effect} of {} {} {head:?}, pair {}",
                comp[i], layer[i], pid[i]
            );
            close(&what, ld[i], &want[effect]["logit_diff"]);
            close(&what, lp[i], &want[effect]["logprob_diff"]);
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        2 * refs.len() * 2 * (2 + 4),
        "2 effects x pairs x 12 components"
    );

    // neurons: the top neurons' mean total effect, first-token logit and whole answer.
    let top = frame(&run.join("neurons/top.parquet"));
    let (layer, neuron) = (top.i64("layer").unwrap(), top.i64("neuron").unwrap());
    let (total, logprob) = (
        top.f64("total").unwrap(),
        top.f64("total_answer_logprob_diff").unwrap(),
    );
    let n = &reference["neurons"];
    for i in 0..layer.len() {
        let (l, j) = (layer[i] as usize, neuron[i] as usize);
        close(
            &format!("neuron L{l}N{j} total"),
            total[i],
            &n["total"][l][j],
        );
        close(
            &format!("neuron L{l}N{j} log P"),
            logprob[i],
            &n["total_logprob"][l][j],
        );
    }
    assert_eq!(layer.len(), 8);
    eprintln!(
        "answers of several tokens: patch-last, {checked} component effects and 8 neurons equal HF"
    );
}

/// The GPT-2 parity checkpoint with its own word-level tokenizer (one token per number), in
/// `dir`.
fn word_toy(dir: &Path) -> PathBuf {
    let src = root().join("crates/model/tests/fixtures/parity/gpt2_tied");
    let out = dir.join("toy-words");
    std::fs::create_dir_all(&out).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(src.join(f), out.join(f)).unwrap();
    }
    out
}

/// Every table of `dir` (not recursive), by file name.
fn tables_in(dir: &Path) -> std::collections::BTreeMap<String, polars::prelude::DataFrame> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .map(|p| {
            let df = helixlab_store::read::scan(&p).unwrap().collect().unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), df)
        })
        .collect()
}

/// Prompts with an instruction before the problem, as the paper's: with prefix reuse (the
/// default) every patched forward of `patch`, `patch-last`, `components` and `neurons` runs
/// only the positions from the patched one on, over the clean run's keys and values. Every
/// table those stages write equals the one of a study that runs every prompt whole
/// (`share_prefixes = false`): floats within 1e-5 of the column's largest |value|, the rest
/// equal.
// Long (about 90 lines) because the two studies run the same ten stages before their tables are
// compared column by column.
#[test]
fn patched_stages_reusing_the_clean_prefix_equal_whole_prompts() {
    use polars::prelude::DataType;
    let tmp = tempfile::tempdir().unwrap();
    let model = word_toy(tmp.path());
    let runs: Vec<PathBuf> = ["shared", "whole"]
        .iter()
        .map(|name| {
            let dir = tmp.path().join(name);
            std::fs::create_dir_all(&dir).unwrap();
            let p = write_study(
                &dir,
                "study.toml",
                &model,
                "kind = \"addition\"\ntemplate = \"*-*\\n{a}+{b}=\"\na = [0, 39]\nb = [5, 14]",
                &format!(
                    "sites = [\"hook_resid_pre\", \"hook_resid_post\"]\nlayers = \"all\"\n\
                     positions = [\"a\", \"last\"]\nbatch_size = 64\nshare_prefixes = {}",
                    *name == "shared"
                ),
                "[analysis]\nposition = \"a\"\n\n[patch]\npairs = 16\ncorrect_only = false\n\
                 kinds = [\"layer\", \"helix\", \"mean_ablation\"]\ncomponent_fit_problems = 200\n\n\
                 [neurons]\ntop = 6\nablation_problems = 200\nkeep = [0, 64]",
            );
            let ps = p.to_str().unwrap();
            for stage in [
                "accuracy",
                "extract",
                "spectral",
                "fit",
                "pairs",
                "patch",
                "patch-last",
                "components",
                "neurons",
            ] {
                run_ok(&[stage, "--pipeline", ps]);
            }
            dir.join("run")
        })
        .collect();
    // The shared run skipped work: a-token patches start at the a token (position 4 of 8).
    let token_blocks = |run: &Path| {
        let t: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("patch/timing.json")).unwrap())
                .unwrap();
        t["token_blocks_run"].as_u64().unwrap()
    };
    let (shared, whole) = (token_blocks(&runs[0]), token_blocks(&runs[1]));
    assert!(
        shared * 10 < whole * 7,
        "prefix reuse ran {shared} token-blocks, whole prompts {whole}"
    );
    let mut compared = 0;
    for sub in ["patch", "neurons"] {
        let (a, b) = (tables_in(&runs[0].join(sub)), tables_in(&runs[1].join(sub)));
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>(),
            "{sub}"
        );
        for (name, x) in &a {
            let y = &b[name];
            assert_eq!(x.shape(), y.shape(), "{sub}/{name}");
            assert!(x.height() > 0, "{sub}/{name} is empty");
            for (cx, cy) in x.columns().iter().zip(y.columns()) {
                let what = format!("{sub}/{name} column {}", cx.name());
                if cx.dtype().is_float() {
                    let f = |c: &polars::prelude::Column| -> Vec<f64> {
                        let c = c.cast(&DataType::Float64).unwrap();
                        c.f64()
                            .unwrap()
                            .iter()
                            .map(|v| v.unwrap_or(f64::NAN))
                            .collect()
                    };
                    let (fx, fy) = (f(cx), f(cy));
                    let scale = fy
                        .iter()
                        .filter(|v| v.is_finite())
                        .fold(1e-6, |m: f64, v| m.max(v.abs()));
                    for (i, (u, v)) in fx.iter().zip(&fy).enumerate() {
                        assert!(
                            (u.is_nan() && v.is_nan()) || (u - v).abs() <= 1e-5 * scale,
                            "{what} row {i}: {u} against {v} (scale {scale})"
                        );
                    }
                } else {
                    assert!(cx.equals_missing(cy), "{what} differs");
                }
                compared += 1;
            }
        }
    }
    assert!(compared > 50, "{compared} columns compared");
}
