//! Principal component analysis as `sklearn.decomposition.PCA(n_components=k)` with the full
//! SVD solver: centred data, components as rows, signs fixed by `svd_flip` (the largest
//! |entry| of each component is positive), explained variance with `n - 1` degrees of freedom.
//!
//! The explained-variance ratio is over the total variance of the data, not over the `k`
//! components kept (linfa-reduction's ratio is over the kept ones, which reads as 100 % for
//! any k).

use linfa_linalg::svd::{SvdSort, SVD};
use ndarray::{s, Array1, Array2, ArrayView2, Axis};

use crate::{NumericError, Result};

/// A fitted PCA.
#[derive(Clone, Debug)]
pub struct Pca {
    /// Column means of the fitted data (`d`).
    pub mean: Array1<f64>,
    /// Components as rows (`k x d`), orthonormal.
    pub components: Array2<f64>,
    /// Variance along each component (`k`), with `n - 1` degrees of freedom.
    pub explained_variance: Array1<f64>,
    /// Total variance of the data (sum over all directions), same convention.
    pub total_variance: f64,
}

impl Pca {
    /// Fits `k` components to the rows of `x` (`n x d`); `k` is clipped to `min(n, d)`.
    pub fn fit(x: ArrayView2<f64>, k: usize) -> Result<Pca> {
        let (n, d) = x.dim();
        if n < 2 || d == 0 {
            return Err(NumericError::Shape(format!(
                "PCA needs at least 2 rows and 1 column, got {n} x {d}"
            )));
        }
        let mean = x.mean_axis(Axis(0)).expect("n >= 2");
        let centred = &x - &mean;
        let k = k.min(n).min(d);
        // Only the right singular vectors are needed; decompose the tall orientation.
        let (s, vt) = if n >= d {
            let (_, s, vt) = centred.svd(false, true)?.sort_svd_desc();
            (s, vt.expect("asked for Vt"))
        } else {
            let (u, s, _) = centred.t().svd(true, false)?.sort_svd_desc();
            (s, u.expect("asked for U").reversed_axes())
        };
        let dof = (n - 1) as f64;
        let total_variance = s.iter().map(|v| v * v).sum::<f64>() / dof;
        let mut components = vt.slice(s![..k, ..]).to_owned();
        for mut row in components.outer_iter_mut() {
            let biggest = row
                .iter()
                .cloned()
                .fold(0.0f64, |m, v| if v.abs() > m.abs() { v } else { m });
            if biggest < 0.0 {
                row.mapv_inplace(|v| -v);
            }
        }
        let explained_variance = s.slice(s![..k]).mapv(|v| v * v / dof);
        Ok(Pca {
            mean,
            components,
            explained_variance,
            total_variance,
        })
    }

    /// Number of components.
    pub fn k(&self) -> usize {
        self.components.nrows()
    }

    /// Explained variance over the total variance of the data.
    pub fn explained_variance_ratio(&self) -> Array1<f64> {
        if self.total_variance == 0.0 {
            return Array1::zeros(self.k());
        }
        &self.explained_variance / self.total_variance
    }

    /// Coordinates of rows of `x` on the components (`n x k`).
    pub fn transform(&self, x: ArrayView2<f64>) -> Array2<f64> {
        (&x - &self.mean).dot(&self.components.t())
    }

    /// Rows back in the original space from coordinates on the first `coords.ncols()`
    /// components.
    pub fn inverse_transform(&self, coords: ArrayView2<f64>) -> Array2<f64> {
        let k = coords.ncols();
        coords.dot(&self.components.slice(s![..k, ..])) + &self.mean
    }

    /// Rows of `x` projected on the first `k` components, in the original space.
    pub fn reconstruct(&self, x: ArrayView2<f64>, k: usize) -> Array2<f64> {
        let k = k.min(self.k());
        let coords = (&x - &self.mean).dot(&self.components.slice(s![..k, ..]).t());
        self.inverse_transform(coords.view())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn a_line_has_one_component_with_all_the_variance() {
        let x = array![[0.0, 0.0], [1.0, 2.0], [2.0, 4.0], [3.0, 6.0]];
        let p = Pca::fit(x.view(), 2).unwrap();
        let r = p.explained_variance_ratio();
        assert!((r[0] - 1.0).abs() < 1e-12 && r[1].abs() < 1e-12, "{r}");
        let c = p.components.row(0);
        assert!((c[0] - 1.0 / 5f64.sqrt()).abs() < 1e-12 && c[1] > 0.0);
        let back = p.reconstruct(x.view(), 1);
        assert!((back - &x).iter().all(|v| v.abs() < 1e-12));
    }

    #[test]
    fn wide_data_uses_the_transpose() {
        let x = array![
            [1.0, 0.0, 2.0, 0.0],
            [0.0, 1.0, 0.0, 3.0],
            [1.0, 1.0, 1.0, 1.0]
        ];
        let p = Pca::fit(x.view(), 5).unwrap();
        assert_eq!(p.k(), 3);
        let back = p.reconstruct(x.view(), 3);
        assert!((back - &x).iter().all(|v| v.abs() < 1e-10));
        let g = p.components.dot(&p.components.t());
        assert!((g[[0, 0]] - 1.0).abs() < 1e-10 && g[[0, 1]].abs() < 1e-10);
    }
}
