//! `helixlab clock` against tools/make_clock_reference.py (HF transformers, numpy, scipy): the
//! line and linear addition, distances and logit shapes on the shipped toy adder over its
//! whole grid, and the carry test on the GPT-2 parity checkpoint (random weights, so thousands
//! of errors, where the toy adder makes 3).

use std::path::Path;

mod common;
use common::{run_ok, toy_adder, write_study};

fn reference() -> serde_json::Value {
    let path = common::root().join("crates/clock/tests/fixtures/clock_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn frame(path: &Path) -> helixlab_store::Frame {
    helixlab_store::Frame::query(path, |q| q).unwrap()
}

fn close(what: &str, got: f64, want: &serde_json::Value, tol: f64) {
    let want = want.as_f64().unwrap();
    assert!(
        (got - want).abs() <= tol * want.abs().max(1.0),
        "{what}: helixlab {got}, reference {want}"
    );
}

fn study(dir: &Path, model: &Path, range: u32) -> String {
    let p = write_study(
        dir,
        "study.toml",
        model,
        &common::addition((0, range), (0, range)),
        "sites = [\"hook_resid_post\"]\nlayers = \"all\"\npositions = [\"a\", \"last\"]\n\
         batch_size = 1000",
        "",
    );
    for stage in ["accuracy", "extract", "clock"] {
        run_ok(&[stage, "--pipeline", p.to_str().unwrap()]);
    }
    p.to_str().unwrap().to_string()
}

// Long (about 80 lines) because each of four tables is compared with its reference in turn.
#[test]
fn the_line_linear_addition_distances_and_logit_shapes_equal_numpy_on_the_toy_adder() {
    let tmp = tempfile::tempdir().unwrap();
    study(tmp.path(), &toy_adder(), 99);
    let r = reference();
    let clock = tmp.path().join("run/clock");

    let line = frame(&clock.join("line_fit.parquet"));
    for c in ["explained_variance", "r2", "r2_uniform", "slope_norm"] {
        close(c, line.f64(c).unwrap()[0], &r["line_fit"][c], 1e-4);
    }
    assert_eq!(line.i64("pcs").unwrap(), vec![50]);

    let linear = frame(&clock.join("linear_addition.parquet"));
    let (readout, alpha) = (linear.str("readout").unwrap(), linear.i64("alpha").unwrap());
    let want = r["linear_addition"].as_array().unwrap();
    assert_eq!(readout.len(), want.len());
    for (i, w) in want.iter().enumerate() {
        assert_eq!(
            (readout[i].as_str(), alpha[i]),
            (w["readout"].as_str().unwrap(), w["alpha"].as_i64().unwrap())
        );
        assert_eq!(
            linear.i64("problems").unwrap()[i],
            w["problems"].as_i64().unwrap()
        );
        for c in ["accuracy", "model_accuracy"] {
            close(
                &format!("{c} of {} at alpha {}", readout[i], alpha[i]),
                linear.f64(c).unwrap()[i],
                &w[c],
                1e-9,
            );
        }
    }
    assert!(
        linear.str("rule").unwrap()[0].contains("z(a) + z(b) - c"),
        "the rule is recorded"
    );

    let d = frame(&clock.join("distances.parquet"));
    let key: Vec<(i64, i64, i64, i64)> = (0..d.df().height())
        .map(|i| {
            (
                d.i64("layer").unwrap()[i],
                d.i64("a_min").unwrap()[i],
                d.i64("a_max").unwrap()[i],
                d.i64("dn").unwrap()[i],
            )
        })
        .collect();
    let (dist, pairs) = (d.f64("distance").unwrap(), d.i64("pairs").unwrap());
    for w in r["distances"].as_array().unwrap() {
        let k = ["layer", "a_min", "a_max", "dn"].map(|c| w[c].as_i64().unwrap());
        let i = key
            .iter()
            .position(|x| *x == (k[0], k[1], k[2], k[3]))
            .unwrap_or_else(|| panic!("{k:?} not in distances.parquet"));
        close(&format!("distance {k:?}"), dist[i], &w["distance"], 1e-4);
        assert_eq!(pairs[i], w["pairs"].as_i64().unwrap(), "{k:?}");
    }

    let s = frame(&clock.join("logit_shapes.parquet"));
    let ls = &r["logit_shapes"];
    let (slope, period) = (s.f64("slope").unwrap(), s.f64("period").unwrap());
    assert_eq!(slope.len() as u64, ls["problems"].as_u64().unwrap());
    let negative = slope.iter().filter(|&&v| v < 0.0).count() as f64 / slope.len() as f64;
    close(
        "share of negative slopes",
        negative,
        &ls["share_negative_slope"],
        1e-9,
    );
    for (i, w) in ls["first"].as_array().unwrap().iter().enumerate() {
        close(&format!("slope {i}"), slope[i], &w["slope"], 1e-4);
        close(&format!("period {i}"), period[i], &w["period"], 1e-9);
    }
    for w in ls["top_periods"].as_array().unwrap() {
        let (p, n) = (w[0].as_f64().unwrap(), w[1].as_u64().unwrap());
        let got = period.iter().filter(|&&v| (v - p).abs() < 1e-5).count() as u64;
        assert_eq!(got, n, "problems whose top period is {p}");
    }
}

#[test]
fn the_carry_test_equals_scipy_on_a_model_that_makes_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::root().join("crates/model/tests/fixtures/parity/gpt2_tied");
    study(tmp.path(), &model, 59);
    let carry = frame(&tmp.path().join("run/clock/carry.parquet"));
    let rules = carry.str("rule").unwrap();
    for (i, w) in reference()["carry"].as_array().unwrap().iter().enumerate() {
        assert_eq!(rules[i], w["rule"].as_str().unwrap());
        for c in [
            "errors",
            "minus_10",
            "minus_10_carry",
            "other",
            "other_carry",
        ] {
            assert_eq!(
                carry.i64(c).unwrap()[i],
                w[c].as_i64().unwrap(),
                "{c} under {}",
                rules[i]
            );
        }
        for c in ["share_minus_10", "share_plus_10", "chi2", "p_value"] {
            close(
                &format!("{c} under {}", rules[i]),
                carry.f64(c).unwrap()[i],
                &w[c],
                1e-9,
            );
        }
    }
}
