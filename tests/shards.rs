//! Sharded stages through the real CLI: `accuracy` and `extract` as 3 shards (by `--shard`
//! and by a Slurm array task's environment) give the tables of the unsharded run, row for row;
//! a committed shard is skipped; gathering names the shards that are missing; the next stage
//! reads the gathered tables; `patch` and `patch-last` as 3 shards of the pairs give the
//! unsharded rows, summaries and fits; `components` (two phases of 3 shards) and `neurons`
//! (3 shards of the top neurons and the sweep) give every table of the unsharded run; stages
//! that do not shard refuse an index.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use polars::prelude::*;

/// The study in `dir` (its run in `dir/run`): 20 x 20 problems, batches of 64, so the 3
/// shards take 3, 2 and 2 batches.
fn study(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    write_study(
        dir,
        "study.toml",
        &toy_adder(),
        &addition((0, 19), (0, 19)),
        "sites = [\"hook_resid_pre\", \"hook_resid_post\"]\nlayers = \"all\"\n\
         positions = [\"a\", \"last\"]\nbatch_size = 64",
        "[analysis]\nposition = \"a\"\n\n[spectral]\ndiscover = 2",
    )
}

fn read(path: &Path) -> DataFrame {
    let file = if path.is_dir() {
        path.join("part-0.parquet")
    } else {
        path.to_path_buf()
    };
    ParquetReader::new(std::fs::File::open(&file).unwrap())
        .finish()
        .unwrap()
}

/// Every table the two stages write, relative to the run.
fn tables(run: &Path) -> Vec<String> {
    let mut out = vec![
        "problems.parquet".to_string(),
        "answer_logits.parquet".into(),
    ];
    for site in ["hook_resid_pre", "hook_resid_post"] {
        for layer in 0..2 {
            out.push(format!("activations/site={site}/layer={layer}"));
        }
    }
    for t in &out {
        assert!(
            helixlab_store::Manifest::read_for(&run.join(t)).is_some(),
            "{t} is not complete in {}",
            run.display()
        );
    }
    out
}

#[test]
fn shards_give_the_unsharded_tables_and_are_committed_once() {
    let tmp = tempfile::tempdir().unwrap();
    let single = study(&tmp.path().join("single"));
    let sharded = study(&tmp.path().join("sharded"));
    let (s, p) = (single.to_str().unwrap(), sharded.to_str().unwrap());
    for stage in ["accuracy", "extract"] {
        run_ok(&[stage, "--pipeline", s]);
    }
    // accuracy by --shard, out of order; extract as a Slurm array with indices 5..=7.
    for i in [2, 0] {
        let out = run_ok(&["accuracy", "--pipeline", p, "--shard", &format!("{i}/3")]);
        assert!(
            out.contains(&format!("shard {i}/3: 2 table part(s)")),
            "{out}"
        );
    }
    let (ok, _, stderr) = helixlab(&["gather", "accuracy", "--pipeline", p, "--shards", "3"]);
    assert!(
        !ok && stderr.contains("shards 1 of 3 of accuracy are not committed"),
        "{stderr}"
    );
    let (ok, _, stderr) = helixlab(&["spectral", "--pipeline", p]);
    assert!(!ok, "spectral ran before extract was gathered");
    assert!(stderr.contains("helixlab extract"), "{stderr}");
    let out = run_ok(&["accuracy", "--pipeline", p, "--shard", "1/3"]);
    assert!(
        out.contains("accuracy: gathered 2 table(s)"),
        "the last shard gathers: {out}"
    );
    for id in [7, 5, 6] {
        let env = [
            ("SLURM_ARRAY_TASK_ID", id.to_string()),
            ("SLURM_ARRAY_TASK_MIN", "5".into()),
            ("SLURM_ARRAY_TASK_COUNT", "3".into()),
        ];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (ok, out, stderr) = helixlab_with(&["extract", "--pipeline", p], &env);
        assert!(ok, "{stderr}");
        assert!(
            out.contains(&format!("extract shard {}/3", id - 5)),
            "{out}"
        );
    }
    // A retried shard is skipped; the set is gathered once.
    let out = run_ok(&["extract", "--pipeline", p, "--shard", "0/3"]);
    assert!(
        out.contains("committed already") && out.contains("gathered already"),
        "{out}"
    );
    let (single_run, sharded_run) = (
        tmp.path().join("single/run"),
        tmp.path().join("sharded/run"),
    );
    for t in tables(&single_run) {
        let (want, got) = (read(&single_run.join(&t)), read(&sharded_run.join(&t)));
        assert_eq!(want.height(), got.height(), "{t}");
        assert!(
            want.equals_missing(&got),
            "{t} differs from the unsharded run's"
        );
        let m = helixlab_store::Manifest::read_for(&sharded_run.join(&t)).unwrap();
        assert_eq!(m.parts.len(), 3, "{t} records its parts");
    }
    // The parts are gone once gathered; the commits stay, with where each shard ran.
    let commits: Vec<PathBuf> = glob(&sharded_run.join("shards"), ".commit.json");
    assert_eq!(commits.len(), 6, "{commits:?}");
    assert!(glob(&sharded_run.join("shards"), ".parquet").is_empty());
    let commit: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&commits[0]).unwrap()).unwrap();
    assert!(commit["tables"].as_object().unwrap().len() >= 2, "{commit}");
    // The next stages read the gathered tables, and the unsharded stage calls them current.
    run_ok(&["spectral", "--pipeline", p]);
    let out = run_ok(&["extract", "--pipeline", p]);
    assert!(out.contains("up to date"), "{out}");
    let (ok, _, stderr) = helixlab(&["spectral", "--pipeline", p, "--shard", "0/2"]);
    assert!(
        !ok && stderr.contains("spectral does not take a shard"),
        "{stderr}"
    );

    // patch: 3 shards of the pairs give the unsharded rows, and the summary of all of them.
    for stage in ["spectral", "fit", "pairs"] {
        run_ok(&[stage, "--pipeline", s]);
        run_ok(&[stage, "--pipeline", p]);
    }
    run_ok(&["patch", "--pipeline", s]);
    for i in [1, 0, 2] {
        run_ok(&["patch", "--pipeline", p, "--shard", &format!("{i}/3")]);
    }
    for t in ["patch/patching.parquet", "patch/patching_summary.parquet"] {
        let (want, got) = (read(&single_run.join(t)), read(&sharded_run.join(t)));
        assert!(want.height() > 0, "{t}");
        assert!(
            want.equals_missing(&got),
            "{t} differs from the unsharded run's"
        );
    }
    let out = run_ok(&["patch", "--pipeline", p]);
    assert!(out.contains("up to date"), "{out}");

    // patch-last: the same, and its fits (which need no pair) made once after gathering.
    run_ok(&["patch-last", "--pipeline", s]);
    for i in [2, 1, 0] {
        run_ok(&["patch-last", "--pipeline", p, "--shard", &format!("{i}/3")]);
    }
    for t in [
        "patch/last_token.parquet",
        "patch/last_token_summary.parquet",
        "patch/last_fits.parquet",
    ] {
        let (want, got) = (read(&single_run.join(t)), read(&sharded_run.join(t)));
        assert!(want.height() > 0, "{t}");
        assert!(
            want.equals_missing(&got),
            "{t} differs from the unsharded run's"
        );
    }
    let out = run_ok(&["patch-last", "--pipeline", p]);
    assert!(out.contains("up to date"), "{out}");

    // components: phase 1 (each component alone) as 3 shards, then phase 2 (top-k, fits, path
    // patching, head attention), which the shards pick by default once phase 1 is in.
    run_ok(&["components", "--pipeline", s]);
    let (ok, _, stderr) = helixlab(&[
        "components",
        "--pipeline",
        p,
        "--shard",
        "0/3",
        "--phase",
        "2",
    ]);
    assert!(
        !ok && stderr.contains("component_singles.parquet"),
        "phase 2 ran before phase 1: {stderr}"
    );
    for i in [2, 0, 1] {
        let out = run_ok(&["components", "--pipeline", p, "--shard", &format!("{i}/3")]);
        assert!(
            out.contains(&format!("components phase 1 shard {i}/3")),
            "{out}"
        );
    }
    for i in [1, 2, 0] {
        let out = run_ok(&["components", "--pipeline", p, "--shard", &format!("{i}/3")]);
        assert!(
            out.contains(&format!("components phase 2 shard {i}/3")),
            "{out}"
        );
    }
    let component_tables = [
        "patch/components.parquet",
        "patch/components_summary.parquet",
        "patch/component_roles.parquet",
        "patch/path_patching.parquet",
        "patch/head_attention.parquet",
    ];
    same(&single_run, &sharded_run, &component_tables);
    assert!(
        !sharded_run.join("patch/component_singles.parquet").exists(),
        "phase 1's table is folded into components.parquet"
    );
    let out = run_ok(&["components", "--pipeline", p]);
    assert!(out.contains("up to date"), "{out}");
    let out = run_ok(&[
        "gather",
        "components",
        "--pipeline",
        p,
        "--shards",
        "3",
        "--phase",
        "1",
    ]);
    assert!(out.contains("gathered already"), "{out}");

    // neurons: slices of the top neurons and of the sparsity sweep; what needs every top
    // neuron is made after gathering.
    run_ok(&["neurons", "--pipeline", s]);
    for i in [2, 0, 1] {
        run_ok(&["neurons", "--pipeline", p, "--shard", &format!("{i}/3")]);
    }
    let neuron_tables = [
        "neurons/attribution.parquet",
        "neurons/top.parquet",
        "neurons/sparsity.parquet",
        "neurons/preactivations.parquet",
        "neurons/fits.parquet",
        "neurons/fit_terms.parquet",
        "neurons/periods.parquet",
        "neurons/mlps.parquet",
        "neurons/logit_lens.parquet",
    ];
    same(&single_run, &sharded_run, &neuron_tables);
    assert!(!sharded_run.join("neurons/lens_directions.parquet").exists());
    let out = run_ok(&["neurons", "--pipeline", p]);
    assert!(out.contains("up to date"), "{out}");
    // The gather jobs `helixlab slurm` writes run after the last shard has gathered.
    for (stage, phase) in [("components", "2"), ("neurons", "1")] {
        let out = run_ok(&[
            "gather",
            stage,
            "--pipeline",
            p,
            "--shards",
            "3",
            "--phase",
            phase,
        ]);
        assert!(out.contains("gathered already"), "{out}");
    }
    same(&single_run, &sharded_run, &neuron_tables);

    let (ok, _, stderr) = helixlab(&["extract", "--pipeline", p, "--shard", "3/3"]);
    assert!(!ok && stderr.contains("--shard \"3/3\""), "{stderr}");
}

/// Asserts that each of `tables` has rows and equals, value for value, in both runs.
fn same(single: &Path, sharded: &Path, tables: &[&str]) {
    for t in tables {
        let (want, got) = (read(&single.join(t)), read(&sharded.join(t)));
        assert!(want.height() > 0, "{t} is empty");
        assert!(
            want.equals_missing(&got),
            "{t} differs from the unsharded run's:\n{want}\n{got}"
        );
    }
}

/// Files under `dir` whose names end with `suffix`.
fn glob(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn slurm_writes_one_job_per_stage_and_arrays_for_the_sharded_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let p = study(tmp.path());
    let script = tmp.path().join("submit.sh");
    run_ok(&[
        "slurm",
        "--pipeline",
        p.to_str().unwrap(),
        "--shards",
        "4",
        "--out",
        script.to_str().unwrap(),
    ]);
    // A stand-in sbatch that records its arguments and hands out job ids.
    let log = tmp.path().join("sbatch.log");
    let fake = tmp.path().join("sbatch");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nn=$(wc -l < {log} 2>/dev/null || echo 0)\necho \"$@\" >> {log}\necho $((100 + n))\n",
            log = log.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["+x", fake.to_str().unwrap()])
        .status()
        .unwrap();
    let out = std::process::Command::new("bash")
        .arg(&script)
        .env("SBATCH", &fake)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = std::fs::read_to_string(&log).unwrap();
    let calls: Vec<&str> = calls.lines().collect();
    assert_eq!(calls.len(), 19, "{calls:#?}");
    assert!(calls[0].contains("--array=0-3") && calls[0].contains("--gres=gpu:1"));
    assert!(!calls[0].contains("--dependency"), "{}", calls[0]);
    assert!(calls[1].contains("--dependency=afterok:100") && calls[1].contains("gather accuracy"));
    assert!(
        !calls[1].contains("--gres"),
        "gathering needs no GPU: {}",
        calls[1]
    );
    assert!(
        calls[8].contains("--array=0-3") && calls[8].contains(" patch "),
        "{}",
        calls[8]
    );
    assert!(calls[10].contains("--array=0-3") && calls[10].contains(" patch-last "));
    // components in two phases, each an array and its gather; neurons one array.
    assert!(calls[12].contains("--array=0-3") && calls[12].contains("components --pipeline"));
    assert!(calls[12].contains("--phase 1") && calls[14].contains("--phase 2"));
    assert!(calls[15].contains("gather components") && calls[15].contains("--phase 2"));
    assert!(calls[16].contains("--array=0-3") && calls[16].contains(" neurons "));
    assert!(calls[18].contains("--dependency=afterok:117") && calls[18].contains(" report "));
}
