//! PCA of the number representation and pairwise geometry between numbers.

use helixlab_numeric::stats::linear_r2;
use helixlab_numeric::{NumericError, Pca};
use ndarray::{Array2, ArrayView2, Axis};

/// One principal component of a number range.
#[derive(Clone, Debug, PartialEq)]
pub struct Component {
    /// 1-based index.
    pub index: usize,
    /// Its share of the total variance.
    pub explained_variance_ratio: f64,
    /// R^2 of the line `score ~ x`: how linear in the number this component is.
    pub r2_vs_number: f64,
    /// Score of each number on it.
    pub scores: Vec<f64>,
}

/// Each dimension scaled to zero mean and unit variance over the numbers (constant dimensions
/// are only centred), as the paper standardises before its PC1 plot.
pub fn standardise(x: ArrayView2<f64>) -> Array2<f64> {
    let mean = x.mean_axis(Axis(0)).expect("rows");
    let sd = x
        .var_axis(Axis(0), 0.0)
        .mapv(|v| if v > 0.0 { v.sqrt() } else { 1.0 });
    (&x - &mean) / &sd
}

/// The first `k` principal components of the rows of `x` (one per number in `xs`).
pub fn components(
    xs: &[f64],
    x: ArrayView2<f64>,
    k: usize,
) -> Result<Vec<Component>, NumericError> {
    let pca = Pca::fit(x, k)?;
    let scores = pca.transform(x);
    let ratio = pca.explained_variance_ratio();
    Ok((0..pca.k())
        .map(|i| {
            let s: Vec<f64> = scores.column(i).to_vec();
            Component {
                index: i + 1,
                explained_variance_ratio: ratio[i],
                r2_vs_number: linear_r2(xs, &s),
                scores: s,
            }
        })
        .collect())
}

/// Pairwise Euclidean distances and cosine similarities between rows (`n x n` each).
pub fn similarity(x: ArrayView2<f64>) -> (Array2<f64>, Array2<f64>) {
    let gram = x.dot(&x.t());
    let n = x.nrows();
    let norms: Vec<f64> = (0..n).map(|i| gram[[i, i]].max(0.0).sqrt()).collect();
    let mut dist = Array2::zeros((n, n));
    let mut cos = Array2::zeros((n, n));
    for i in 0..n {
        for j in 0..n {
            let d2 = gram[[i, i]] + gram[[j, j]] - 2.0 * gram[[i, j]];
            dist[[i, j]] = d2.max(0.0).sqrt();
            let nn = norms[i] * norms[j];
            cos[[i, j]] = if nn > 0.0 { gram[[i, j]] / nn } else { 0.0 };
        }
    }
    (dist, cos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn a_line_of_numbers_has_a_linear_first_component() {
        let xs: Vec<f64> = (0..20).map(|x| x as f64).collect();
        let x = Array2::from_shape_fn((20, 3), |(i, j)| {
            i as f64 * (j as f64 + 1.0) + if j == 2 { (i % 2) as f64 } else { 0.0 }
        });
        let c = components(&xs, standardise(x.view()).view(), 2).unwrap();
        assert!(c[0].r2_vs_number > 0.99 && c[0].explained_variance_ratio > 0.9);
        let (d, cs) = similarity(array![[3.0, 4.0], [0.0, 1.0]].view());
        assert!((d[[0, 1]] - (9.0f64 + 9.0).sqrt()).abs() < 1e-12);
        assert!((cs[[0, 1]] - 0.8).abs() < 1e-12 && (cs[[1, 1]] - 1.0).abs() < 1e-12);
    }
}
