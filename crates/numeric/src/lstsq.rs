//! Minimum-norm least squares through the SVD, as `numpy.linalg.lstsq`.
//!
//! Why not QR: the bases the fits use are often rank deficient on integer inputs
//! (sin(2 pi x / 2) is zero for every integer x), and a QR solve then divides by zero. The SVD
//! solution drops singular values below `eps * max(n, p) * s_max`, exactly numpy's default, so
//! such columns get zero coefficients instead of infinities.

use linfa_linalg::svd::SVD;
use ndarray::{Array2, ArrayView2, Axis};

use crate::{NumericError, Result};

/// Solves `min ||a x - b||` for `x` (`p x k`), the minimum-norm solution when `a` (`n x p`)
/// is rank deficient.
pub fn lstsq(a: ArrayView2<f64>, b: ArrayView2<f64>) -> Result<Array2<f64>> {
    let (n, p) = a.dim();
    if b.nrows() != n {
        return Err(NumericError::Shape(format!(
            "least squares: {n} rows in the design, {} in the targets",
            b.nrows()
        )));
    }
    if n == 0 || p == 0 {
        return Ok(Array2::zeros((p, b.ncols())));
    }
    // linfa-linalg's SVD wants a tall matrix; for a wide one, decompose the transpose.
    let (u, s, vt) = if n >= p {
        let (u, s, vt) = a.svd(true, true)?;
        (u.expect("asked for U"), s, vt.expect("asked for Vt"))
    } else {
        let (u, s, vt) = a.t().svd(true, true)?;
        (
            vt.expect("asked for Vt").reversed_axes(),
            s,
            u.expect("asked for U").reversed_axes(),
        )
    };
    let smax = s.iter().cloned().fold(0.0, f64::max);
    let cutoff = f64::EPSILON * n.max(p) as f64 * smax;
    // x = V diag(1/s) U^T b over the kept singular values.
    let mut utb = u.t().dot(&b);
    for (mut row, &sv) in utb.axis_iter_mut(Axis(0)).zip(s.iter()) {
        if sv > cutoff {
            row.mapv_inplace(|v| v / sv);
        } else {
            row.fill(0.0);
        }
    }
    Ok(vt.t().dot(&utb))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn exact_systems_are_solved() {
        let a = array![[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]];
        let x = array![[3.0], [-1.0]];
        let b = a.dot(&x);
        let got = lstsq(a.view(), b.view()).unwrap();
        assert!((got - x).iter().all(|v| v.abs() < 1e-12));
    }

    #[test]
    fn a_zero_column_gets_a_zero_coefficient() {
        let a = array![[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]];
        let b = array![[2.0], [4.0], [6.0]];
        let got = lstsq(a.view(), b.view()).unwrap();
        assert!(
            (got[[0, 0]] - 2.0).abs() < 1e-12 && got[[1, 0]] == 0.0,
            "{got}"
        );
    }

    #[test]
    fn wide_systems_give_the_minimum_norm_solution() {
        // x1 + x2 = 2 has the minimum-norm solution (1, 1).
        let a = array![[1.0, 1.0]];
        let got = lstsq(a.view(), array![[2.0]].view()).unwrap();
        assert!((got[[0, 0]] - 1.0).abs() < 1e-12 && (got[[1, 0]] - 1.0).abs() < 1e-12);
    }
}
