//! The fit of docs/method.md E3: PCA of the activations to `k` components (fitted on the same
//! sample), ordinary least squares of each PCA coordinate on the basis (no separate intercept:
//! the bias is a basis column), then back to activation space: `C = coef . components`
//! (`basis x d`) and `prediction(x) = basis(x) . C + mean`.

use helixlab_numeric::{lstsq, NumericError, Pca};
use ndarray::{Array1, Array2, ArrayView2};

use helixlab_numeric::Basis;

/// A fitted basis-to-activation map.
#[derive(Clone, Debug)]
pub struct LinearFit {
    /// The basis, scaled for the fitted sample.
    pub basis: Basis,
    /// The PCA it was fitted in.
    pub pca: Pca,
    /// Least-squares coefficients in PCA space (`basis x k`).
    pub coef: Array2<f64>,
    /// The map in activation space (`basis x d`).
    pub c: Array2<f64>,
    /// Mean of the basis over the fitted sample.
    pub basis_mean: Array1<f64>,
}

impl LinearFit {
    /// Fits activations `x` (one row per number in `xs`) with `basis` in `pca_dim` components.
    pub fn fit(
        basis: Basis,
        xs: &[f64],
        x: ArrayView2<f64>,
        pca_dim: usize,
    ) -> Result<LinearFit, NumericError> {
        Self::fit_in(basis, xs, x, Pca::fit(x, pca_dim)?)
    }

    /// Fits in a PCA already fitted to the same rows `x` (a study fits many bases to one
    /// sample; the PCA is the expensive part and does not depend on the basis).
    pub fn fit_in(
        basis: Basis,
        xs: &[f64],
        x: ArrayView2<f64>,
        pca: Pca,
    ) -> Result<LinearFit, NumericError> {
        let z = pca.transform(x);
        let b = basis.eval(xs);
        let coef = lstsq(b.view(), z.view())?;
        let c = coef.dot(&pca.components);
        let basis_mean = b.mean_axis(ndarray::Axis(0)).expect("rows");
        Ok(LinearFit {
            basis,
            pca,
            coef,
            c,
            basis_mean,
        })
    }

    /// Predicted activations for numbers `xs` (`n x d`).
    pub fn predict(&self, xs: &[f64]) -> Array2<f64> {
        self.basis.eval(xs).dot(&self.c) + &self.pca.mean
    }

    /// The activation mean the predictions are relative to.
    pub fn mean(&self) -> &Array1<f64> {
        &self.pca.mean
    }

    /// Coordinates of activations in the basis (`n x basis`): `C^+ (h - mean)` plus the
    /// basis mean of the fitted sample, so that an activation the fit predicts exactly gets back
    /// its own basis values (cos, sin, x / scale): where it sits on each circle and on the line.
    pub fn coordinates(&self, x: ArrayView2<f64>) -> Result<Array2<f64>, NumericError> {
        // The bias row of C is zero up to rounding (the PCA coordinates are centred), so it is
        // left out of the pseudo-inverse rather than amplified by it.
        let p = self.c.nrows() - 1;
        let c = self.c.slice(ndarray::s![..p, ..]);
        let centred = (&x - &self.pca.mean).reversed_axes();
        let mut coords = Array2::zeros((x.nrows(), p + 1));
        coords
            .slice_mut(ndarray::s![.., ..p])
            .assign(&lstsq(c.t(), centred.view())?.reversed_axes());
        Ok(coords + &self.basis_mean)
    }

    /// For each activation, the number on `grid` whose prediction is nearest (compared in the
    /// fit's PCA space, which orders distances as the full space does).
    pub fn decode(&self, x: ArrayView2<f64>, grid: &[f64]) -> Vec<f64> {
        let z = self.pca.transform(x);
        let g = self.basis.eval(grid).dot(&self.coef);
        z.outer_iter()
            .map(|row| {
                let mut best = (f64::INFINITY, grid[0]);
                for (gi, grow) in g.outer_iter().enumerate() {
                    let d: f64 = grow
                        .iter()
                        .zip(row.iter())
                        .map(|(a, b)| (a - b).powi(2))
                        .sum();
                    if d < best.0 {
                        best = (d, grid[gi]);
                    }
                }
                best.1
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use helixlab_numeric::split;
    use helixlab_numeric::stats::r2;
    use helixlab_numeric::BasisKind;
    use ndarray::Array2;

    fn helix(periods: &[f64], xs: &[f64]) -> Basis {
        Basis::for_sample(
            BasisKind::Helix {
                periods: periods.to_vec(),
                linear: true,
            },
            xs,
        )
    }

    /// A synthetic helix with a known C, plus noise, in 40 dimensions.
    fn synthetic() -> (Vec<f64>, Array2<f64>, Array2<f64>) {
        let xs: Vec<f64> = (0..100).map(|x| x as f64).collect();
        let b = helix(&[2.0, 5.0, 10.0, 100.0], &xs);
        let noise = split::uniform(100 * 40, -0.05, 0.05, 3);
        let c_true = Array2::from_shape_vec((10, 40), split::uniform(400, -1.0, 1.0, 4)).unwrap();
        let x = b.eval(&xs).dot(&c_true) + Array2::from_shape_vec((100, 40), noise).unwrap();
        (xs, x, c_true)
    }

    #[test]
    fn a_synthetic_helix_is_recovered() {
        let (xs, x, c_true) = synthetic();
        let f = LinearFit::fit(helix(&[2.0, 5.0, 10.0, 100.0], &xs), &xs, x.view(), 100).unwrap();
        let fit_r2 = r2(x.view(), f.predict(&xs).view());
        assert!(fit_r2 > 0.995, "R^2 {fit_r2}");
        // sin(2 pi x / 2) is zero on integers: its row of C is unidentifiable and comes out
        // zero; every other row matches the planted one (the bias row absorbs the mean).
        for (j, name) in f.basis.names().iter().enumerate() {
            if name == "sin_2" {
                assert!(f.c.row(j).iter().all(|v| v.abs() < 1e-9));
            } else if name != "bias" {
                let err = (&f.c.row(j) - &c_true.row(j))
                    .mapv(f64::abs)
                    .fold(0.0, |m: f64, v| m.max(*v));
                assert!(err < 0.05, "{name}: max error {err}");
            }
        }
        // The coordinates of the data on the basis are the basis itself.
        let coords = f.coordinates(x.view()).unwrap();
        let lin = f.basis.names().iter().position(|n| n == "linear").unwrap();
        assert!(
            (coords[[50, lin]] - 50.0 / 99.0).abs() < 0.03,
            "{}",
            coords.row(50)
        );
        let decoded = f.decode(x.select(ndarray::Axis(0), &[33]).view(), &xs);
        assert_eq!(decoded, vec![33.0]);
    }

    #[test]
    fn shuffled_numbers_do_not_fit_held_out_rows() {
        let (xs, x, _) = synthetic();
        let test = split::holdout(100, 0.2, 0);
        let tr: Vec<usize> = (0..100).filter(|&i| !test[i]).collect();
        let te: Vec<usize> = (0..100).filter(|&i| test[i]).collect();
        let perm = split::permutation(tr.len(), 9);
        let xs_tr: Vec<f64> = tr.iter().map(|&i| xs[i]).collect();
        let shuffled: Vec<f64> = perm.iter().map(|&i| xs_tr[i]).collect();
        let xs_te: Vec<f64> = te.iter().map(|&i| xs[i]).collect();
        let x_tr = x.select(ndarray::Axis(0), &tr);
        let x_te = x.select(ndarray::Axis(0), &te);
        let periods = [2.0, 5.0, 10.0, 100.0];
        let real = LinearFit::fit(helix(&periods, &xs_tr), &xs_tr, x_tr.view(), 100).unwrap();
        let fake = LinearFit::fit(helix(&periods, &shuffled), &shuffled, x_tr.view(), 100).unwrap();
        let r_real = r2(x_te.view(), real.predict(&xs_te).view());
        let r_fake = r2(x_te.view(), fake.predict(&xs_te).view());
        assert!(
            r_real > 0.99 && r_fake < 0.1,
            "real {r_real}, shuffled {r_fake}"
        );
    }
}
