//! The helix fit of docs/method.md E3 (PCA to k, least squares, C = coef . components) against the
//! same computation in numpy / scikit-learn (tools/make_numeric_reference.py).

use helixlab_fit::basis::{Basis, BasisKind};
use helixlab_fit::linear_fit::LinearFit;
use helixlab_numeric::stats::r2;

#[path = "../../numeric/tests/support/mod.rs"]
mod support;
use support::{matrix, reference};

#[test]
fn the_helix_fit_matches_numpy() {
    let r = reference();
    let x = matrix(&r["X"]);
    let xs: Vec<f64> = serde_json::from_value(r["xs"].clone()).unwrap();
    let want = &r["helix_fit"];
    let basis = Basis::for_sample(
        BasisKind::Helix {
            periods: vec![2.0, 5.0, 10.0, 100.0],
            linear: true,
        },
        &xs,
    );
    // The reference builds its design matrix independently; ours must equal it.
    let design = matrix(&r["lstsq"]["A"]);
    assert!((basis.eval(&xs) - &design).iter().all(|v| v.abs() < 1e-12));
    let k = want["pca_dim"].as_u64().unwrap() as usize;
    let f = LinearFit::fit(basis, &xs, x.view(), k).unwrap();
    let c = matrix(&want["C"]);
    let diff = (&f.c - &c).iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(diff < 1e-8, "C differs by {diff}");
    let pred = f.predict(&xs);
    let row7: Vec<f64> = serde_json::from_value(want["prediction_row_7"].clone()).unwrap();
    assert!(pred
        .row(7)
        .iter()
        .zip(&row7)
        .all(|(a, b)| (a - b).abs() < 1e-8));
    let got_r2 = r2(x.view(), pred.view());
    assert!(
        (got_r2 - want["r2"].as_f64().unwrap()).abs() < 1e-9,
        "R^2 {got_r2}"
    );
}
