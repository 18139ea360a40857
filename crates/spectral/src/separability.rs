//! Mod-T linear separability (docs/method.md section 5): a held-out ridge probe for x mod T. Real
//! periodic structure makes x mod T linearly readable for the model's periods; a period that
//! only shows up in the spectrum through token-frequency artefacts need not be. Each probe is
//! paired with the same probe on shuffled labels, its null.

use helixlab_numeric::{split, NumericError, RidgeProbe};
use ndarray::{ArrayView2, Axis};

/// The probe for one period.
#[derive(Clone, Debug, PartialEq)]
pub struct Separability {
    /// The period T.
    pub period: u32,
    /// Held-out accuracy of the probe for x mod T.
    pub accuracy: f64,
    /// Held-out accuracy with the training labels shuffled (the null).
    pub accuracy_shuffled: f64,
    /// 1 / T.
    pub chance: f64,
    /// Training rows.
    pub n_train: usize,
    /// Held-out rows.
    pub n_test: usize,
}

/// Probes x mod T for each period on the rows of `x` (one per number in `xs`).
pub fn separability(
    xs: &[i64],
    x: ArrayView2<f64>,
    periods: &[u32],
    holdout: f64,
    alpha: f64,
    seed: u64,
) -> Result<Vec<Separability>, NumericError> {
    let test = split::holdout(xs.len(), holdout, seed);
    let train_idx: Vec<usize> = (0..xs.len()).filter(|&i| !test[i]).collect();
    let test_idx: Vec<usize> = (0..xs.len()).filter(|&i| test[i]).collect();
    let xtr = x.select(Axis(0), &train_idx);
    let xte = x.select(Axis(0), &test_idx);
    let perm = split::permutation(train_idx.len(), seed.wrapping_add(1));
    let mut out = Vec::new();
    for &t in periods {
        let label = |i: &usize| xs[*i].rem_euclid(t as i64);
        let ytr: Vec<i64> = train_idx.iter().map(label).collect();
        let yte: Vec<i64> = test_idx.iter().map(label).collect();
        let probe = RidgeProbe::fit(xtr.view(), &ytr, alpha)?;
        let shuffled: Vec<i64> = perm.iter().map(|&i| ytr[i]).collect();
        let null = RidgeProbe::fit(xtr.view(), &shuffled, alpha)?;
        out.push(Separability {
            period: t,
            accuracy: probe.accuracy(xte.view(), &yte),
            accuracy_shuffled: null.accuracy(xte.view(), &yte),
            chance: 1.0 / t as f64,
            n_train: train_idx.len(),
            n_test: test_idx.len(),
        });
    }
    Ok(out)
}
