//! `helixlab compare` over two finished toy studies (the decimal and the plain toy adder):
//! every (study, site, kind) row is the largest mean logit difference over layers of that run's
//! patching_summary.parquet, and every fit row the largest held-out R^2 of its fits.parquet,
//! each recomputed here with a polars group-by.

use std::path::{Path, PathBuf};

use polars::prelude::*;

mod common;
use common::{helixlab, root, run_ok, write_study};

fn finished_study(dir: &Path, model: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = write_study(
        dir,
        "study.toml",
        model,
        &common::addition((0, 39), (0, 39)),
        "sites = [\"hook_resid_pre\"]\nlayers = \"all\"\npositions = [\"a\", \"last\"]\n\
         batch_size = 800",
        "[fit]\npca_dim = 20\n\n[patch]\npairs = 20",
    );
    for stage in ["accuracy", "extract", "spectral", "fit", "pairs", "patch"] {
        run_ok(&[stage, "--pipeline", p.to_str().unwrap()]);
    }
    dir.join("run")
}

/// (site, name) -> (max over layers, its layer), from `table` by polars.
fn maxima(table: &Path, name: &str, value: &str) -> Vec<(String, String, f64, i64)> {
    let best = helixlab_store::Frame::query(table, |q| {
        q.filter(col(value).is_not_nan())
            .sort(
                [value],
                SortMultipleOptions::default().with_order_descending(true),
            )
            .group_by_stable([col("site"), col(name)])
            .agg([col(value).first(), col("layer").first()])
    })
    .unwrap();
    let (s, n, v, l) = (
        best.str("site").unwrap(),
        best.str(name).unwrap(),
        best.f64(value).unwrap(),
        best.i64("layer").unwrap(),
    );
    (0..s.len())
        .map(|i| (s[i].clone(), n[i].clone(), v[i], l[i]))
        .collect()
}

#[test]
fn compare_lists_each_runs_best_layer_per_patch_kind_and_fit() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = [
        finished_study(&tmp.path().join("decimal"), &common::toy_adder()),
        finished_study(
            &tmp.path().join("plain"),
            &root().join("data/models/toy-adder-plain"),
        ),
    ];
    let out = tmp.path().join("compare");
    let (r0, r1, o) = (
        runs[0].to_str().unwrap(),
        runs[1].to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let said = run_ok(&["compare", r0, r1, "--out", o]);
    assert!(said.contains("compare.html"), "{said}");
    let t = helixlab_store::Frame::query(&out.join("compare.parquet"), |q| q).unwrap();
    let (study, exp, site, name) = (
        t.str("study").unwrap(),
        t.str("experiment").unwrap(),
        t.str("site").unwrap(),
        t.str("name").unwrap(),
    );
    let (value, layer) = (t.f64("value").unwrap(), t.i64("layer").unwrap());
    let mut checked = 0;
    // Both runs are named `run`, so the table names them by their paths.
    for run in &runs {
        let s = run.to_str().unwrap();
        for (experiment, table, col_name, v) in [
            (
                "patch",
                "patch/patching_summary.parquet",
                "kind",
                "logit_diff",
            ),
            ("fit", "fit/fits.parquet", "variant", "r2_out"),
        ] {
            let want = maxima(&run.join(table), col_name, v);
            assert!(!want.is_empty());
            for (ws, wn, wv, wl) in want {
                let i = (0..study.len())
                    .find(|&i| {
                        study[i] == s && exp[i] == experiment && site[i] == ws && name[i] == wn
                    })
                    .unwrap_or_else(|| panic!("{s} {experiment} {ws} {wn} not compared"));
                assert!(
                    (value[i] - wv).abs() < 1e-12,
                    "{s} {wn}: {} vs {wv}",
                    value[i]
                );
                assert_eq!(layer[i], wl, "{s} {wn}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, study.len(), "every row is one of the runs' maxima");
    let page = std::fs::read_to_string(out.join("compare.html")).unwrap();
    assert!(page.contains("<th>helix</th>") && page.contains("Patching at"));
    // A run that is not a finished study is refused, naming the table it lacks.
    let (ok, _, err) = helixlab(&["compare", r0, tmp.path().to_str().unwrap(), "--out", o]);
    assert!(!ok);
    assert!(err.contains("fits.parquet"), "{err}");
}
