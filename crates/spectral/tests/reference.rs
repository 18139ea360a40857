//! The Fourier spectrum and cosine similarity against numpy
//! (crates/numeric/tests/fixtures/reference.json, from tools/make_numeric_reference.py).

use helixlab_spectral::fourier::spectrum;
use helixlab_spectral::geometry::similarity;

#[path = "../../numeric/tests/support/mod.rs"]
mod support;
use support::{matrix, reference};

#[test]
fn the_spectrum_matches_numpy_raw_and_detrended() {
    let r = reference();
    let x = matrix(&r["X"]);
    for (detrend, key) in [(false, "raw"), (true, "detrended")] {
        let got = spectrum(x.view(), detrend);
        let want: Vec<f64> = serde_json::from_value(r["spectrum"][key].clone()).unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            // Relative 1e-9 (powers span many orders of magnitude); k = 0 is ~0 on both sides.
            assert!(
                (g.power - w).abs() <= 1e-9 * w.abs().max(1e-6),
                "{key} k = {}: {} vs {w}",
                g.k,
                g.power
            );
        }
        assert_eq!(got[6].period, Some(10.0));
    }
}

#[test]
fn cosine_similarity_matches_numpy() {
    let r = reference();
    let x = matrix(&r["X"]);
    let (_, cos) = similarity(x.view());
    let want = matrix(&r["cosine_first_rows"]);
    for i in 0..3 {
        for j in 0..60 {
            assert!((cos[[i, j]] - want[[i, j]]).abs() < 1e-12);
        }
    }
}
