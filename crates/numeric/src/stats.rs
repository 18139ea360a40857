//! Goodness of fit.

use ndarray::{ArrayView2, Axis};

/// R^2 of `pred` for `actual` over all cells, against each column's mean:
/// `1 - sum (actual - pred)^2 / sum (actual - column mean)^2`. This is the variance-weighted
/// R^2 of a multi-output fit (scikit-learn's `r2_score(..., multioutput="variance_weighted")`).
pub fn r2(actual: ArrayView2<f64>, pred: ArrayView2<f64>) -> f64 {
    let Some(mean) = actual.mean_axis(Axis(0)) else {
        return f64::NAN;
    };
    r2_against(
        actual,
        pred,
        mean.as_slice().expect("a fresh array is contiguous"),
    )
}

/// R^2 against a given per-column reference mean (for out-of-sample scores, where the mean is
/// the training one).
pub fn r2_against(actual: ArrayView2<f64>, pred: ArrayView2<f64>, mean: &[f64]) -> f64 {
    let (mut ss_res, mut ss_tot) = (0.0, 0.0);
    for (ra, rp) in actual.outer_iter().zip(pred.outer_iter()) {
        for ((&a, &p), &m) in ra.iter().zip(rp.iter()).zip(mean) {
            ss_res += (a - p) * (a - p);
            ss_tot += (a - m) * (a - m);
        }
    }
    if ss_tot == 0.0 {
        return f64::NAN;
    }
    1.0 - ss_res / ss_tot
}

/// Mean squared error over all cells.
pub fn mse(actual: ArrayView2<f64>, pred: ArrayView2<f64>) -> f64 {
    let n = actual.len().max(1) as f64;
    actual
        .iter()
        .zip(pred.iter())
        .map(|(a, p)| (a - p) * (a - p))
        .sum::<f64>()
        / n
}

/// R^2 of the least-squares line `y ~ x` (the squared Pearson correlation).
pub fn linear_r2(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (&a, &b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx == 0.0 || syy == 0.0 {
        return 0.0;
    }
    sxy * sxy / (sxx * syy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn r2_is_one_for_a_perfect_fit_and_zero_for_the_mean() {
        let y = array![[1.0, 2.0], [3.0, 5.0], [5.0, 11.0]];
        assert_eq!(r2(y.view(), y.view()), 1.0);
        let m = array![[3.0, 6.0], [3.0, 6.0], [3.0, 6.0]];
        assert!(r2(y.view(), m.view()).abs() < 1e-12);
        assert!((linear_r2(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]) - 1.0).abs() < 1e-12);
    }
}
