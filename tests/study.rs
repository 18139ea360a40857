//! End-to-end tests of the study spine on the shipped toy adder, through the real CLI:
//! accuracy, extract, report and inspect; reruns that do nothing; incremental extraction;
//! an interrupted extraction; bad pipeline files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{addition, helixlab, helixlab_with, root, run_ok, toy_adder, write_study};

/// A pipeline on the toy adder over a 50 x 50 grid, writing under `dir`.
fn pipeline(dir: &Path, layers: &str, extra_task: &str) -> PathBuf {
    write_study(
        dir,
        "study.toml",
        &toy_adder(),
        &format!("{}\n{extra_task}", addition((0, 49), (0, 49))),
        &format!(
            "sites = [\"hook_resid_pre\", \"hook_resid_post\"]\nlayers = {layers}\n\
             positions = [\"a\", \"b\", \"last\"]\nbatch_size = 400"
        ),
        "",
    )
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn a_study_runs_and_a_rerun_does_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline(tmp.path(), "\"all\"", "");
    let ps = p.to_str().unwrap();
    let out = run_ok(&["accuracy", "--pipeline", ps]);
    // problems.parquet and answer_logits.parquet, 2500 rows each.
    assert!(out.contains("wrote 2 table(s), 5000 rows"), "{out}");
    let out = run_ok(&["extract", "--pipeline", ps]);
    assert!(out.contains("wrote 4 table(s), 30000 rows"), "{out}");
    let run = tmp.path().join("run");
    let before = snapshot(&run);
    assert!(before
        .keys()
        .any(|k| k.ends_with("activations/site=hook_resid_post/layer=1/part-0.parquet")));
    let out = run_ok(&["accuracy", "--pipeline", ps]);
    assert!(out.contains("up to date"), "{out}");
    let out = run_ok(&["extract", "--pipeline", ps]);
    assert!(out.contains("up to date"), "{out}");
    assert_eq!(before, snapshot(&run), "a rerun changed files");

    // The report draws from the tables.
    let out = run_ok(&["report", "--pipeline", ps]);
    assert!(out.contains("index.html"), "{out}");
    let html = std::fs::read_to_string(run.join("report/index.html")).unwrap();
    assert!(html.contains("problems correct"), "{html}");
    for fig in ["accuracy_heatmap.png", "error_histogram.png"] {
        let bytes = std::fs::read(run.join("report").join(fig)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 2000, "{fig}");
    }

    // inspect shows schema, provenance and rows.
    let out = run_ok(&["inspect", run.join("problems.parquet").to_str().unwrap()]);
    assert!(
        out.contains("rows: 2500")
            && out.contains("helixlab.manifest")
            && out.contains("answer_rank"),
        "{out}"
    );
    let part = run.join("activations/site=hook_resid_pre/layer=0");
    let out = run_ok(&["inspect", part.to_str().unwrap()]);
    assert!(
        out.contains("rows: 7500") && out.contains("array[f32, 128]"),
        "{out}"
    );
}

#[test]
fn adding_a_layer_extracts_only_that_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline(tmp.path(), "[0]", "");
    run_ok(&["extract", "--pipeline", p.to_str().unwrap()]);
    let run = tmp.path().join("run");
    let layer0 = snapshot(&run.join("activations/site=hook_resid_pre/layer=0"));
    let p = pipeline(tmp.path(), "[0, 1]", "");
    let out = run_ok(&["extract", "--pipeline", p.to_str().unwrap()]);
    assert!(out.contains("wrote 2 table(s)"), "{out}");
    assert!(out.contains("layer=1") && !out.contains("layer=0"), "{out}");
    assert_eq!(
        layer0,
        snapshot(&run.join("activations/site=hook_resid_pre/layer=0"))
    );
    assert!(run
        .join("activations/site=hook_resid_post/layer=1/_manifest.json")
        .exists());
}

#[test]
fn an_interrupted_extraction_leaves_nothing_complete_and_a_rerun_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline(tmp.path(), "\"all\"", "");
    let ps = p.to_str().unwrap();
    let (ok, _, _) = helixlab_with(
        &["extract", "--pipeline", ps],
        &[("HELIXLAB_ABORT_AFTER_BATCHES", "3")],
    );
    assert!(!ok, "the aborted run must fail");
    let run = tmp.path().join("run");
    let files = snapshot(&run);
    assert!(!files.is_empty(), "the aborted run had started writing");
    assert!(
        !files
            .keys()
            .any(|k| k.ends_with("_manifest.json") || k.ends_with("part-0.parquet")),
        "an interrupted run left a table that looks complete: {:?}",
        files.keys().collect::<Vec<_>>()
    );
    let (ok, _, stderr) = helixlab_with(
        &[
            "inspect",
            run.join("activations/site=hook_resid_pre/layer=0")
                .to_str()
                .unwrap(),
        ],
        &[],
    );
    assert!(!ok && stderr.contains("part-0.parquet"), "{stderr}");
    let out = run_ok(&["extract", "--pipeline", ps]);
    assert!(out.contains("wrote 4 table(s), 30000 rows"), "{out}");
}

#[test]
fn bad_pipeline_files_fail_with_clear_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let fail = |text: &str, expect: &[&str]| {
        let p = tmp.path().join("bad.toml");
        std::fs::write(&p, text).unwrap();
        for stage in ["accuracy", "extract"] {
            let (ok, _, stderr) = helixlab(&[stage, "--pipeline", p.to_str().unwrap()]);
            assert!(!ok, "{stage} accepted {text}");
            for e in expect {
                assert!(stderr.contains(e), "{stage}: expected {e:?} in:\n{stderr}");
            }
        }
    };
    let good = std::fs::read_to_string(pipeline(tmp.path(), "\"all\"", "")).unwrap();
    fail(
        &good.replace("[output]", "[output]\ncolour = \"red\""),
        &["bad.toml", "colour"],
    );
    fail(
        &good.replace("toy-adder", "no-such-model"),
        &["no-such-model"],
    );
    fail(
        &good.replace("a = [0, 49]", "a = [200, 210]"),
        &["\"200\"", "not in the vocabulary"],
    );
    fail(
        &good.replace("a = [0, 49]", "a = [150, 199]"),
        &["answer 200", "not in the vocabulary"],
    );
    fail(
        &good.replace("hook_resid_post", "hook_resid_middle"),
        &["bad.toml", "hook_resid_middle"],
    );
    fail(
        &good.replace("hook_resid_post", "mlp.hook_pre_linear"),
        &["gated"],
    );
    let (ok, _, stderr) = helixlab(&["accuracy", "--pipeline", "/nonexistent/study.toml"]);
    assert!(
        !ok && stderr.contains("/nonexistent/study.toml"),
        "{stderr}"
    );
}

/// The Makefile's stage targets on a study: the first `make` runs every stage, a second one
/// has nothing to do (`make -q` says so) and leaves every file as it was.
#[test]
fn a_second_make_does_no_work() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline(tmp.path(), "[1]", "");
    let run = tmp.path().join("run");
    let vars = [
        format!("PIPE_FILE={}", p.display()),
        format!("RUN={}", run.display()),
        format!("HELIXLAB={}", env!("CARGO_BIN_EXE_helixlab")),
        "BUILD_BINARY=".to_string(),
    ];
    let make = |extra: &[&str]| {
        let out = Command::new("make")
            .current_dir(root())
            .args(extra)
            .args(&vars)
            .arg("report")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = make(&[]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("helixlab") && stdout.contains("report"),
        "{stdout}"
    );
    assert!(run.join("report/index.html").exists());
    let before = snapshot(&run);
    let (code, stdout, _) = make(&["-q"]);
    assert_eq!(
        code,
        Some(0),
        "make -q: targets are not up to date\n{stdout}"
    );
    let (code, stdout, stderr) = make(&[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        !stdout.contains("--pipeline"),
        "the second make ran a stage:\n{stdout}"
    );
    assert_eq!(before, snapshot(&run));
}

/// The store's matrix reader returns one (site, layer, position) ordered by prompt, with its
/// labels, and its rows equal a direct capture through the runtime.
#[test]
fn the_matrix_reader_matches_a_direct_capture() {
    use helixlab_model::{ForwardRequest, HookPoint, LoadOptions, Model, Positions, Tokenizer};
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline(tmp.path(), "[1]", "");
    run_ok(&["extract", "--pipeline", p.to_str().unwrap()]);
    let m = helixlab_store::read::activations(&tmp.path().join("run"), "hook_resid_pre", 1, "a")
        .unwrap();
    assert_eq!((m.rows(), m.d), (2500, 128));
    assert_eq!((m.a[0], m.b[0], m.answer[0]), (0, Some(0), Some(0)));
    assert_eq!((m.a[1234], m.b[1234]), (24, Some(34)));
    let dir = root().join("data/models/toy-adder");
    let model = Model::load(&dir, &LoadOptions::default()).unwrap();
    let tok = Tokenizer::for_checkpoint(&dir).unwrap();
    let ids = tok.encode("24+34=", false).unwrap();
    let batch = model.batch(&[ids]).unwrap();
    let req = ForwardRequest::new().capture(HookPoint::ResidPre(1), Positions::At(vec![-4]));
    let direct: Vec<f32> = model.forward(&batch, &req).unwrap().captures[0]
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let max = direct
        .iter()
        .zip(m.row(1234))
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(
        max < 1e-5,
        "stored activation differs from a direct capture by {max}"
    );
    let missing =
        helixlab_store::read::activations(&tmp.path().join("run"), "hook_resid_pre", 0, "a");
    assert!(missing.unwrap_err().to_string().contains("layer 0"));
}
