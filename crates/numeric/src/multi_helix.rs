//! Helices of several numbers at once (docs/method.md E4): at the last token of `a+b=` the model
//! holds a, b and the answer a+b, so the fit is a concatenation of one helix block per number,
//! `[cos(2 pi t / T), sin(2 pi t / T) for T in periods] + [t / max t]` for t in the chosen
//! operands, then one bias. helix(a+b) has 9 parameters, helix(a, b) 18, helix(a, b, a+b) 27
//! (with the paper's four periods).
//!
//! It lives here, with the arithmetic, because two stages use it: `patch` fits it at the last
//! token and on the outputs of heads and MLPs. Fitted like E3: PCA of the activations (one row per problem), least squares of the PCA
//! coordinates on the basis, mapped back to activation space.

use crate::{lstsq, NumericError, Pca};
use ndarray::{Array1, Array2, ArrayView2};

/// A number a problem holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operand {
    /// The first operand.
    A,
    /// The second operand.
    B,
    /// Their sum (the answer of `a+b=`).
    Sum,
}

impl Operand {
    /// Its value in problem (a, b).
    pub fn of(self, a: i64, b: i64) -> i64 {
        match self {
            Operand::A => a,
            Operand::B => b,
            Operand::Sum => a + b,
        }
    }

    /// `a`, `b`, `a+b`.
    pub fn name(self) -> &'static str {
        match self {
            Operand::A => "a",
            Operand::B => "b",
            Operand::Sum => "a+b",
        }
    }
}

/// Which numbers a multi-number helix describes.
#[derive(Clone, Debug, PartialEq)]
pub struct MultiHelix {
    /// One helix block per operand, in this order.
    pub operands: Vec<Operand>,
    /// Periods of every block.
    pub periods: Vec<f64>,
    /// Each block's linear term is t / scale (the fitted sample's largest t, at least 1).
    pub scales: Vec<f64>,
}

impl MultiHelix {
    /// The three fits of the paper: helix(a+b), helix(a,b), helix(a,b,a+b).
    pub fn paper_sets() -> Vec<Vec<Operand>> {
        vec![
            vec![Operand::Sum],
            vec![Operand::A, Operand::B],
            vec![Operand::A, Operand::B, Operand::Sum],
        ]
    }

    /// The variant name in tables: `helix(a+b)`, `helix(a,b)`, `helix(a,b,a+b)`.
    pub fn variant_name(operands: &[Operand]) -> String {
        let names: Vec<&str> = operands.iter().map(|o| o.name()).collect();
        format!("helix({})", names.join(","))
    }

    /// The basis for `operands`, scaled for the sample of problems `ab`.
    pub fn for_sample(operands: Vec<Operand>, periods: Vec<f64>, ab: &[(i64, i64)]) -> Self {
        let scales = operands
            .iter()
            .map(|o| {
                ab.iter()
                    .fold(1.0f64, |m, &(a, b)| m.max((o.of(a, b) as f64).abs()))
            })
            .collect();
        MultiHelix {
            operands,
            periods,
            scales,
        }
    }

    /// Functions without the bias.
    pub fn n_params(&self) -> usize {
        self.operands.len() * (2 * self.periods.len() + 1)
    }

    /// The design matrix, one row per problem.
    pub fn eval(&self, ab: &[(i64, i64)]) -> Array2<f64> {
        let mut m = Array2::zeros((ab.len(), self.n_params() + 1));
        for (i, &(a, b)) in ab.iter().enumerate() {
            let mut j = 0;
            for (o, scale) in self.operands.iter().zip(&self.scales) {
                let t = o.of(a, b) as f64;
                for &p in &self.periods {
                    let w = 2.0 * std::f64::consts::PI * t / p;
                    m[[i, j]] = w.cos();
                    m[[i, j + 1]] = w.sin();
                    j += 2;
                }
                m[[i, j]] = t / scale;
                j += 1;
            }
            m[[i, j]] = 1.0;
        }
        m
    }
}

/// A multi-number helix fitted to activations.
#[derive(Clone, Debug)]
pub struct MultiFit {
    /// The basis.
    pub basis: MultiHelix,
    /// `basis x d`.
    pub c: Array2<f64>,
    /// The activation mean.
    pub mean: Array1<f64>,
}

impl MultiFit {
    /// Fits rows `x` of problems `ab` in `pca` (fitted on the same rows).
    pub fn fit_in(
        basis: MultiHelix,
        ab: &[(i64, i64)],
        x: ArrayView2<f64>,
        pca: &Pca,
    ) -> Result<MultiFit, NumericError> {
        let z = pca.transform(x);
        let coef = lstsq(basis.eval(ab).view(), z.view())?;
        Ok(MultiFit {
            c: coef.dot(&pca.components),
            mean: pca.mean.clone(),
            basis,
        })
    }

    /// Predicted activations of problems `ab` (`n x d`).
    pub fn predict(&self, ab: &[(i64, i64)]) -> Array2<f64> {
        self.basis.eval(ab).dot(&self.c) + &self.mean
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split;
    use crate::stats::r2;

    #[test]
    fn blocks_are_concatenated_with_one_bias() {
        let ab = [(3, 4), (99, 99)];
        let h = MultiHelix::for_sample(
            vec![Operand::A, Operand::B, Operand::Sum],
            vec![2.0, 5.0, 10.0, 100.0],
            &ab,
        );
        assert_eq!(h.n_params(), 27);
        assert_eq!(h.scales, vec![99.0, 99.0, 198.0]);
        let m = h.eval(&[(3, 4)]);
        assert_eq!(m.ncols(), 28);
        // Block a: cos(2 pi 3 / 2) = -1; block b starts at column 9; a+b = 7 at column 18.
        assert!((m[[0, 0]] + 1.0).abs() < 1e-12);
        assert!((m[[0, 8]] - 3.0 / 99.0).abs() < 1e-12);
        assert!((m[[0, 9]] - 1.0).abs() < 1e-12); // cos(2 pi 4 / 2)
        assert!((m[[0, 26]] - 7.0 / 198.0).abs() < 1e-12);
        assert_eq!(m[[0, 27]], 1.0);
        assert_eq!(MultiHelix::variant_name(&h.operands), "helix(a,b,a+b)");
    }

    #[test]
    fn a_planted_sum_helix_is_found_by_the_sum_fit_not_by_ab() {
        // Activations that encode only a+b: helix(a+b) explains them, helix(a,b) cannot
        // (cos(a+b) is not linear in the a and b blocks).
        let ab: Vec<(i64, i64)> = (0..30).flat_map(|a| (0..30).map(move |b| (a, b))).collect();
        let periods = vec![2.0, 5.0, 10.0, 100.0];
        let truth = MultiHelix::for_sample(vec![Operand::Sum], periods.clone(), &ab);
        let c = Array2::from_shape_vec((10, 24), split::uniform(240, -1.0, 1.0, 5)).unwrap();
        let x = truth.eval(&ab).dot(&c);
        let pca = Pca::fit(x.view(), 24).unwrap();
        let sum = MultiFit::fit_in(truth.clone(), &ab, x.view(), &pca).unwrap();
        let split_ab = MultiFit::fit_in(
            MultiHelix::for_sample(vec![Operand::A, Operand::B], periods, &ab),
            &ab,
            x.view(),
            &pca,
        )
        .unwrap();
        let r_sum = r2(x.view(), sum.predict(&ab).view());
        let r_ab = r2(x.view(), split_ab.predict(&ab).view());
        assert!(r_sum > 0.999_999, "{r_sum}");
        assert!(r_ab < 0.9, "{r_ab}");
    }
}
