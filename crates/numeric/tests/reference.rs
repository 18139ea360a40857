//! PCA, least squares, the ridge probe and R^2 against numpy / scikit-learn
//! (tools/make_numeric_reference.py wrote the expected values; `make reference` redoes it).

use helixlab_numeric::{lstsq, Pca, RidgeProbe};
use ndarray::Axis;

mod support;
use support::{matrix, reference, vector};

fn max_diff(a: impl IntoIterator<Item = f64>, b: impl IntoIterator<Item = f64>) -> f64 {
    a.into_iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

// Tolerance: both sides are f64 SVDs of well-conditioned 60 x 12 data; they agree to ~1e-12,
// checked at 1e-9.
const TOL: f64 = 1e-9;

#[test]
fn pca_matches_scikit_learn() {
    let r = reference();
    let x = matrix(&r["X"]);
    let p = Pca::fit(x.view(), 5).unwrap();
    let want = &r["pca"];
    assert!(max_diff(p.mean.iter().copied(), vector(&want["mean"])) < TOL);
    assert!(
        max_diff(
            p.explained_variance.iter().copied(),
            vector(&want["explained_variance"])
        ) < TOL
    );
    assert!(
        max_diff(
            p.explained_variance_ratio().iter().copied(),
            vector(&want["explained_variance_ratio"])
        ) < TOL
    );
    // Same signs too: both apply svd_flip's rule (largest |entry| of a component positive).
    let comps = matrix(&want["components"]);
    let diff = max_diff(p.components.iter().copied(), comps.iter().copied());
    assert!(diff < 1e-8, "components differ by {diff}");
}

#[test]
fn least_squares_matches_numpy_on_a_rank_deficient_helix_basis() {
    let r = reference();
    let a = matrix(&r["lstsq"]["A"]);
    let b = matrix(&r["lstsq"]["B"]);
    let got = lstsq(a.view(), b.view()).unwrap();
    let want = matrix(&r["lstsq"]["coef"]);
    let diff = max_diff(got.iter().copied(), want.iter().copied());
    assert!(diff < 1e-8, "coefficients differ by {diff}");
}

#[test]
fn the_ridge_probe_matches_scikit_learn() {
    let r = reference();
    let x = matrix(&r["X"]);
    let train: Vec<usize> = serde_json::from_value(r["probe"]["train_rows"].clone()).unwrap();
    let test: Vec<usize> = serde_json::from_value(r["probe"]["test_rows"].clone()).unwrap();
    let xs = vector(&r["xs"]);
    for (t, want) in r["probe"]["by_period"].as_object().unwrap() {
        let t: i64 = t.parse().unwrap();
        let label = |i: &usize| (xs[*i] as i64) % t;
        let ytr: Vec<i64> = train.iter().map(label).collect();
        let yte: Vec<i64> = test.iter().map(label).collect();
        let probe = RidgeProbe::fit(x.select(Axis(0), &train).view(), &ytr, 1.0).unwrap();
        let pred = probe.predict(x.select(Axis(0), &test).view());
        let want_pred: Vec<i64> = serde_json::from_value(want["predictions"].clone()).unwrap();
        assert_eq!(pred, want_pred, "T = {t}");
        let acc = probe.accuracy(x.select(Axis(0), &test).view(), &yte);
        assert!((acc - want["accuracy"].as_f64().unwrap()).abs() < 1e-12);
    }
}
