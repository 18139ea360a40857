//! A linear probe: does a linear map read a label (e.g. x mod 10) off the activations?
//! Defined as scikit-learn's `make_pipeline(StandardScaler(), RidgeClassifier(alpha))`: features
//! standardised on the training rows (constant features keep scale 1), one-vs-rest targets in
//! {-1, +1}, ridge regression with an intercept, the class with the largest score wins (ties to
//! the smallest class).
//!
//! Why ridge and not logistic regression: closed form, so the probe is deterministic and
//! exactly comparable with the reference, and it needs no iteration settings.

use ndarray::{Array1, Array2, ArrayView2, Axis};

use crate::{lstsq, NumericError, Result};

/// A fitted probe.
#[derive(Clone, Debug)]
pub struct RidgeProbe {
    classes: Vec<i64>,
    mean: Array1<f64>,
    scale: Array1<f64>,
    weights: Array2<f64>,
    intercept: Array1<f64>,
}

impl RidgeProbe {
    /// Fits on rows of `x` with labels `y`.
    pub fn fit(x: ArrayView2<f64>, y: &[i64], alpha: f64) -> Result<RidgeProbe> {
        let (n, d) = x.dim();
        if n != y.len() || n < 2 {
            return Err(NumericError::Shape(format!(
                "probe: {n} rows and {} labels (needs at least 2)",
                y.len()
            )));
        }
        let mut classes = y.to_vec();
        classes.sort_unstable();
        classes.dedup();
        let mean = x.mean_axis(Axis(0)).expect("n >= 2");
        // Population standard deviation, as StandardScaler.
        let var = x.var_axis(Axis(0), 0.0);
        let scale = var.mapv(|v| if v > 0.0 { v.sqrt() } else { 1.0 });
        let z = (&x - &mean) / &scale;
        // scikit-learn's LabelBinarizer gives one column for two classes; the two-column
        // one-vs-rest form decides identically (its columns are negatives of each other).
        let mut t = Array2::from_elem((n, classes.len()), -1.0);
        for (i, label) in y.iter().enumerate() {
            let c = classes.binary_search(label).expect("from y");
            t[[i, c]] = 1.0;
        }
        let t_mean = t.mean_axis(Axis(0)).expect("n >= 2");
        let tc = &t - &t_mean;
        // The standardised features are already centred. Solve the ridge normal equations in
        // whichever of the primal (d x d) or dual (n x n) form is smaller.
        let weights = if d <= n {
            let mut g = z.t().dot(&z);
            for i in 0..d {
                g[[i, i]] += alpha;
            }
            lstsq(g.view(), z.t().dot(&tc).view())?
        } else {
            let mut g = z.dot(&z.t());
            for i in 0..n {
                g[[i, i]] += alpha;
            }
            z.t().dot(&lstsq(g.view(), tc.view())?)
        };
        Ok(RidgeProbe {
            classes,
            mean,
            scale,
            weights,
            intercept: t_mean,
        })
    }

    /// Scores per class (`n x classes`).
    pub fn decision(&self, x: ArrayView2<f64>) -> Array2<f64> {
        ((&x - &self.mean) / &self.scale).dot(&self.weights) + &self.intercept
    }

    /// Predicted labels.
    pub fn predict(&self, x: ArrayView2<f64>) -> Vec<i64> {
        self.decision(x)
            .outer_iter()
            .map(|row| {
                let mut best = 0;
                for (j, &v) in row.iter().enumerate() {
                    if v > row[best] {
                        best = j;
                    }
                }
                self.classes[best]
            })
            .collect()
    }

    /// Fraction of rows whose label is predicted.
    pub fn accuracy(&self, x: ArrayView2<f64>, y: &[i64]) -> f64 {
        let pred = self.predict(x);
        let hits = pred.iter().zip(y).filter(|(p, t)| p == t).count();
        hits as f64 / y.len().max(1) as f64
    }

    /// The classes seen in training, ascending.
    pub fn classes(&self) -> &[i64] {
        &self.classes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn a_parity_feature_is_read_off() {
        let x = Array2::from_shape_fn((40, 3), |(i, j)| match j {
            0 => (i % 2) as f64,
            1 => i as f64,
            _ => ((i * 7) % 5) as f64,
        });
        let y: Vec<i64> = (0..40).map(|i| (i % 2) as i64).collect();
        let p = RidgeProbe::fit(x.view(), &y, 1.0).unwrap();
        assert_eq!(p.accuracy(x.view(), &y), 1.0);
        assert_eq!(p.classes(), &[0, 1]);
    }
}
