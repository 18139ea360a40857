//! Bad inputs and faults, as a hostile or unlucky user would meet them, through the real CLI
//! (one test per finding of the reliability review): stale, foreign, partial and corrupt
//! inputs are refused or redone, never taken as complete; paths stay inside the model
//! directory; work is bounded before it starts; non-finite values stop a stage; leftovers are
//! cleaned; the report escapes what it prints; a closed stdout ends quietly; killing any stage
//! at any point and rerunning gives the tables of an uninterrupted run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;
use common::{addition, helixlab, root, run_ok, toy_adder, write_study};

/// A copy of a shipped toy model, so a test may damage it.
fn copy_model(from: &Path, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
    to.to_path_buf()
}

/// A 20 x 20 study of `model` with the a and last tokens of every layer.
fn small_study(dir: &Path, model: &Path) -> PathBuf {
    write_study(
        dir,
        "study.toml",
        model,
        &addition((0, 19), (0, 19)),
        "sites = [\"hook_resid_pre\"]\nlayers = \"all\"\npositions = [\"a\", \"last\"]",
        "[analysis]\nposition = \"a\"\n\n[spectral]\ndiscover = 2\n\n[neurons]\ntop = 20",
    )
}

fn fails_with(args: &[&str], expect: &[&str]) -> String {
    let (ok, _, stderr) = helixlab(args);
    assert!(!ok, "helixlab {args:?} succeeded");
    for e in expect {
        assert!(stderr.contains(e), "expected {e:?} in:\n{stderr}");
    }
    stderr
}

fn partition(run: &Path, layer: usize) -> PathBuf {
    run.join(format!("activations/site=hook_resid_pre/layer={layer}"))
}

#[test]
fn weights_swapped_for_others_of_the_same_size_are_another_model() {
    let tmp = tempfile::tempdir().unwrap();
    let model = copy_model(&toy_adder(), &tmp.path().join("model"));
    let p = small_study(tmp.path(), &model);
    let ps = p.to_str().unwrap();
    run_ok(&["accuracy", "--pipeline", ps]);
    assert!(run_ok(&["accuracy", "--pipeline", ps]).contains("up to date"));
    let plain = root().join("data/models/toy-adder-plain/model.safetensors");
    assert_eq!(
        std::fs::metadata(&plain).unwrap().len(),
        std::fs::metadata(model.join("model.safetensors"))
            .unwrap()
            .len()
    );
    std::fs::copy(&plain, model.join("model.safetensors")).unwrap();
    let out = run_ok(&["accuracy", "--pipeline", ps]);
    assert!(
        out.contains("wrote"),
        "the old model's results stood:\n{out}"
    );
}

#[test]
fn foreign_partial_and_corrupt_partitions_are_refused_and_redone() {
    let tmp = tempfile::tempdir().unwrap();
    let p = small_study(tmp.path(), &toy_adder());
    let ps = p.to_str().unwrap();
    let run = tmp.path().join("run");
    run_ok(&["extract", "--pipeline", ps]);
    // Another model's partition, copied in (its own footer names that model).
    let other = tempfile::tempdir().unwrap();
    let q = small_study(other.path(), &root().join("data/models/toy-adder-plain"));
    run_ok(&["extract", "--pipeline", q.to_str().unwrap()]);
    let part = |run: &Path| partition(run, 1).join("part-0.parquet");
    std::fs::copy(part(&other.path().join("run")), part(&run)).unwrap();
    fails_with(
        &["spectral", "--pipeline", ps],
        &["layer=1", "do not match its manifest", "helixlab extract"],
    );
    let out = run_ok(&["extract", "--pipeline", ps]);
    assert!(
        out.contains("wrote 1 table(s)"),
        "the copied-in partition stood:\n{out}"
    );
    run_ok(&["spectral", "--pipeline", ps]);
    // One flipped byte in a data page.
    let mut bytes = std::fs::read(part(&run)).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(part(&run), &bytes).unwrap();
    fails_with(
        &["spectral", "--pipeline", ps, "--force"],
        &["layer=1", "do not match its manifest"],
    );
    // Truncated, manifest kept: not up to date.
    std::fs::write(part(&run), &bytes[..bytes.len() / 3]).unwrap();
    let out = run_ok(&["extract", "--pipeline", ps]);
    assert!(out.contains("wrote 1 table(s)"), "{out}");
    // A partition whose manifest is gone: the analysis refuses rather than skip the layer.
    std::fs::remove_file(partition(&run, 0).join("_manifest.json")).unwrap();
    fails_with(
        &["spectral", "--pipeline", ps, "--force"],
        &["layer=0", "no manifest"],
    );
    // A layer the study extracts that is not there at all: refused, not skipped.
    run_ok(&["extract", "--pipeline", ps]);
    std::fs::remove_dir_all(partition(&run, 1)).unwrap();
    fails_with(
        &["spectral", "--pipeline", ps, "--force"],
        &["layer=1", "extracts layer 1", "helixlab extract"],
    );
}

#[test]
fn shards_outside_the_model_directory_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for name in [
        "../x.safetensors",
        "/etc/passwd",
        "../../../../../../etc/passwd",
    ] {
        let dir = tmp.path().join("m");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(toy_adder().join("config.json"), dir.join("config.json")).unwrap();
        std::fs::copy(
            toy_adder().join("model.safetensors"),
            tmp.path().join("x.safetensors"),
        )
        .unwrap();
        let index = serde_json::json!({"weight_map": {"wte.weight": name}});
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
        fails_with(
            &["model", "check", dir.to_str().unwrap()],
            &[
                "model.safetensors.index.json",
                "not a file inside the model directory",
            ],
        );
    }
}

#[test]
fn unbounded_work_is_refused_before_it_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let p = small_study(tmp.path(), &toy_adder());
    let text = std::fs::read_to_string(&p).unwrap();
    let huge = tmp.path().join("huge.toml");
    std::fs::write(&huge, text.replace("a = [0, 19]", "a = [0, 1000000000]")).unwrap();
    let start = std::time::Instant::now();
    fails_with(
        &["accuracy", "--pipeline", huge.to_str().unwrap()],
        &["huge.toml", "problems", "at most 10000000"],
    );
    assert!(start.elapsed().as_secs() < 10);
    std::fs::write(&huge, text.replace("discover = 2", "discover = 100000")).unwrap();
    fails_with(
        &["spectral", "--pipeline", huge.to_str().unwrap()],
        &["spectral.discover", "at most 32"],
    );
}

#[test]
fn nan_weights_stop_the_stage_with_nothing_written() {
    let tmp = tempfile::tempdir().unwrap();
    let model = copy_model(&toy_adder(), &tmp.path().join("model"));
    let path = model.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)> = BTreeMap::new();
    for (name, view) in st.tensors() {
        let mut data = view.data().to_vec();
        if name == "transformer.ln_f.weight" {
            for c in data.chunks_mut(4) {
                c.copy_from_slice(&f32::NAN.to_le_bytes());
            }
        }
        tensors.insert(name, (view.dtype(), view.shape().to_vec(), data));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, (d, s, b))| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
    let p = small_study(tmp.path(), &model);
    fails_with(
        &["accuracy", "--pipeline", p.to_str().unwrap()],
        &["non-finite", "logits of prompt 0"],
    );
    assert!(!tmp.path().join("run/problems.manifest.json").exists());
}

#[test]
fn leftover_temp_files_are_removed_by_the_next_run() {
    let tmp = tempfile::tempdir().unwrap();
    let p = small_study(tmp.path(), &toy_adder());
    let ps = p.to_str().unwrap();
    let run = tmp.path().join("run");
    run_ok(&["extract", "--pipeline", ps]);
    let junk = partition(&run, 0).join(".part-0.parquet.tmp-999999");
    std::fs::write(&junk, vec![0u8; 1 << 16]).unwrap();
    run_ok(&["extract", "--pipeline", ps, "--force"]);
    assert!(!junk.exists());
}

#[test]
fn the_report_escapes_the_study_name() {
    let tmp = tempfile::tempdir().unwrap();
    let p = small_study(tmp.path(), &toy_adder());
    let text = "name = \"<script>alert(1)</script>\"\n".to_string()
        + &std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, text).unwrap();
    let ps = p.to_str().unwrap();
    run_ok(&["accuracy", "--pipeline", ps]);
    run_ok(&["report", "--pipeline", ps]);
    let html = std::fs::read_to_string(tmp.path().join("run/report/index.html")).unwrap();
    // The page's one script is its own self-check; the name's never runs.
    assert!(!html.contains("<script>alert"), "{html}");
    assert_eq!(html.matches("<script").count(), 1, "{html}");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let p = small_study(tmp.path(), &toy_adder());
    run_ok(&["accuracy", "--pipeline", p.to_str().unwrap()]);
    let table = tmp.path().join("run/problems.parquet");
    let mut child = Command::new(env!("CARGO_BIN_EXE_helixlab"))
        .args(["inspect", table.to_str().unwrap(), "--rows", "400"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(101), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn settings_that_would_do_nothing_or_the_wrong_thing_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let p = small_study(tmp.path(), &toy_adder());
    let good = std::fs::read_to_string(&p).unwrap();
    let bad = tmp.path().join("bad.toml");
    let check = |text: String, expect: &[&str]| {
        std::fs::write(&bad, text).unwrap();
        fails_with(&["extract", "--pipeline", bad.to_str().unwrap()], expect);
    };
    check(
        good.replace("layers = \"all\"", "layers = []"),
        &["extract.layers", "empty list"],
    );
    check(
        good.replace("layers = \"all\"", "layers = [-1]"),
        &["-1 is not a layer", "counted from 0"],
    );
    check(good.clone() + "\n[fit]\npca_dim = 0\n", &["fit.pca_dim"]);
    check(
        good.replace("position = \"a\"", "position = \"a\"\nrange = [0, 150]"),
        &["analysis.range", "[0, 150]", "beyond the task", "[0, 19]"],
    );
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    check(
        good.replace(
            &tmp.path().join("run").display().to_string(),
            &file.display().to_string(),
        ),
        &["output.dir", "is a file, not a directory"],
    );
}

#[test]
fn a_config_with_fewer_layers_than_the_weights_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let model = copy_model(&toy_adder(), &tmp.path().join("model"));
    let config = std::fs::read_to_string(model.join("config.json")).unwrap();
    std::fs::write(
        model.join("config.json"),
        config.replace("\"n_layer\": 2", "\"n_layer\": 1"),
    )
    .unwrap();
    fails_with(
        &[
            "model",
            "run",
            model.to_str().unwrap(),
            "--prompt",
            "1+2=",
            "--out",
            tmp.path().join("o.safetensors").to_str().unwrap(),
        ],
        &["config.json", "1 layers", "tensors of layer 1", "unused"],
    );
}

#[test]
fn two_extractions_of_one_run_take_turns() {
    let tmp = tempfile::tempdir().unwrap();
    let p = small_study(tmp.path(), &toy_adder());
    let ps = p.to_str().unwrap();
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_helixlab"))
            .args(["extract", "--pipeline", ps, "--force"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for c in [a, b] {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    run_ok(&["spectral", "--pipeline", ps]);
}

/// Every table of a run by path, read by polars (content, not bytes: footers carry times).
fn tables(run: &Path) -> BTreeMap<String, polars::prelude::DataFrame> {
    let mut out = BTreeMap::new();
    let mut stack = vec![run.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            if p.is_dir() {
                stack.push(p);
            } else if name.ends_with(".parquet") && !name.starts_with('.') {
                let df = helixlab_store::read::scan(&p).unwrap().collect().unwrap();
                out.insert(p.strip_prefix(run).unwrap().display().to_string(), df);
            }
        }
    }
    out
}

/// Equal content, NaN equal to NaN (the normalised effect is NaN where two runs tie).
fn same(a: &polars::prelude::DataFrame, b: &polars::prelude::DataFrame) -> bool {
    use polars::prelude::DataType;
    a.get_column_names() == b.get_column_names()
        && a.height() == b.height()
        && a.columns().iter().zip(b.columns()).all(|(x, y)| {
            let (x, y) = (x.as_materialized_series(), y.as_materialized_series());
            match x.dtype() {
                DataType::Float64 | DataType::Float32 => {
                    let f = |s: &polars::prelude::Series| -> Vec<Option<u64>> {
                        let s = s.cast(&DataType::Float64).unwrap();
                        s.f64()
                            .unwrap()
                            .iter()
                            .map(|v| v.map(|v| if v.is_nan() { u64::MAX } else { v.to_bits() }))
                            .collect()
                    };
                    f(x) == f(y)
                }
                _ => x.equals_missing(y),
            }
        })
}

/// kill -9 of each stage at seeded random moments, then a rerun of the study: the tables equal
/// those of a run that was never interrupted.
#[test]
fn killed_at_any_point_a_rerun_gives_the_uninterrupted_tables() {
    let stages = [
        "accuracy",
        "extract",
        "spectral",
        "fit",
        "pairs",
        "patch",
        "components",
        "neurons",
    ];
    let clean = tempfile::tempdir().unwrap();
    let p = small_study(clean.path(), &toy_adder());
    for s in stages {
        run_ok(&[s, "--pipeline", p.to_str().unwrap()]);
    }
    let want = tables(&clean.path().join("run"));
    for seed in 0..3u64 {
        let tmp = tempfile::tempdir().unwrap();
        let p = small_study(tmp.path(), &toy_adder());
        let ps = p.to_str().unwrap();
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        for s in stages {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let delay = std::time::Duration::from_millis((state >> 33) % 400);
            let mut child = Command::new(env!("CARGO_BIN_EXE_helixlab"))
                .args([s, "--pipeline", ps])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(delay);
            let _ = child.kill();
            let _ = child.wait();
            // The stage reruns whole or finishes what was left; the next stage needs it.
            run_ok(&[s, "--pipeline", ps]);
        }
        let got = tables(&tmp.path().join("run"));
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "seed {seed}"
        );
        for (k, df) in &got {
            assert!(same(df, &want[k]), "seed {seed}: {k} differs");
        }
    }
}
