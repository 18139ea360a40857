//! The line the paper fits to the numbers' representation, and "linear addition" on it (Fig 36).
//!
//! The representation of the numbers lo..=hi (one row per number) is projected on its first
//! `pcs` principal components, z(n), and a least-squares line z(n) = c + n w + e(n) is fitted in
//! that space, one column at a time. Linear addition adds two numbers as if the representation
//! were that line. The paper does not say how it handles the intercept or what "nearest" means;
//! helixlab's choices, recorded in the `rule` column of linear_addition.parquet:
//! - the intercept: a sum of two points of the line carries it twice, so one c is taken away,
//!   s = z(a) + z(b) - c (on an exact line s = z(a + b); what remains is e(a) + e(b));
//! - "nearest", two readouts: `line`, the integer n in [2 lo, 2 hi] whose point c + n w of the
//!   fitted line is nearest to s (Euclidean distance in the PC space; every sum can be written);
//!   `representations`, the number n in lo..=hi whose own z(n) is nearest to s (a sum above hi
//!   has no representation, so it is always wrong there, which is why the paper plots accuracy
//!   against a threshold on a + b).

use helixlab_numeric::Pca;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};

use crate::{ClockError, Result};

/// How linear addition reads its answer back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readout {
    /// The nearest integer point of the fitted line.
    Line,
    /// The nearest number's own representation.
    Representations,
}

impl Readout {
    /// Both readouts, in table order.
    pub const ALL: [Readout; 2] = [Readout::Line, Readout::Representations];

    /// The name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Readout::Line => "line",
            Readout::Representations => "representations",
        }
    }

    /// What the readout does, in words, for the `rule` column.
    pub fn rule(self, lo: i64, hi: i64, pcs: usize) -> String {
        let sum = "s = z(a) + z(b) - c (one intercept taken away)";
        match self {
            Readout::Line => format!(
                "{sum}; answer: the integer n in {}..={} whose point c + n w of the fitted line \
                 is nearest to s (Euclidean, in the first {pcs} PCs)",
                2 * lo,
                2 * hi
            ),
            Readout::Representations => format!(
                "{sum}; answer: the number n in {lo}..={hi} whose own z(n) is nearest to s \
                 (Euclidean, in the first {pcs} PCs; sums above {hi} cannot be written)"
            ),
        }
    }
}

/// A line through the first PCs of the numbers' representation.
#[derive(Clone, Debug)]
pub struct LineFit {
    /// The numbers, ascending.
    pub numbers: Vec<i64>,
    /// Their coordinates on the first PCs, `numbers x pcs`.
    pub z: Array2<f64>,
    /// c.
    pub intercept: Array1<f64>,
    /// w.
    pub slope: Array1<f64>,
    /// R^2 of the line over every coordinate (variance weighted: dominated by the first PCs).
    pub r2: f64,
    /// R^2 averaged over the PCs, each weighted alike (scikit-learn's default for several
    /// outputs).
    pub r2_uniform: f64,
    /// Share of the representation's variance in the PCs kept.
    pub explained: f64,
}

impl LineFit {
    /// Fits the line to rows `x` (one per number in `numbers`) in their first `pcs` PCs.
    pub fn fit(numbers: &[i64], x: ArrayView2<f64>, pcs: usize) -> Result<LineFit> {
        if numbers.len() < 3 {
            return Err(ClockError::Input(format!(
                "a line through {} numbers is not a fit (need 3)",
                numbers.len()
            )));
        }
        let pca = Pca::fit(x, pcs)?;
        let z = pca.transform(x);
        let n: Array1<f64> = numbers.iter().map(|&v| v as f64).collect();
        let n_mean = n.mean().expect("numbers");
        let dn = &n - n_mean;
        let var_n = dn.dot(&dn);
        let z_mean = z.mean_axis(Axis(0)).expect("rows");
        let slope: Array1<f64> = z
            .axis_iter(Axis(1))
            .zip(&z_mean)
            .map(|(col, &m)| dn.dot(&(&col - m)) / var_n)
            .collect();
        let intercept = &z_mean - &(&slope * n_mean);
        let (mut res, mut tot, mut uniform, mut cols) = (0.0, 0.0, 0.0, 0);
        for (j, col) in z.axis_iter(Axis(1)).enumerate() {
            let (mut r, mut t) = (0.0, 0.0);
            for (i, &v) in col.iter().enumerate() {
                let p = intercept[j] + slope[j] * n[i];
                r += (v - p) * (v - p);
                t += (v - z_mean[j]) * (v - z_mean[j]);
            }
            res += r;
            tot += t;
            if t > 0.0 {
                uniform += 1.0 - r / t;
                cols += 1;
            }
        }
        Ok(LineFit {
            numbers: numbers.to_vec(),
            z,
            intercept,
            slope,
            r2: 1.0 - res / tot,
            r2_uniform: uniform / cols.max(1) as f64,
            explained: pca.explained_variance_ratio().sum(),
        })
    }

    fn row(&self, n: i64) -> Option<ArrayView1<'_, f64>> {
        self.numbers.binary_search(&n).ok().map(|i| self.z.row(i))
    }

    /// Linear addition's answer to a + b (`None` when a or b has no representation).
    pub fn add(&self, a: i64, b: i64, readout: Readout) -> Option<i64> {
        let s = &self.row(a)? + &self.row(b)? - &self.intercept;
        let (lo, hi) = (self.numbers[0], self.numbers[self.numbers.len() - 1]);
        Some(match readout {
            Readout::Line => {
                // The squared distance to c + n w is a parabola in n: the nearest integer point
                // is the rounded vertex, clipped to the sums there are.
                let t = (&s - &self.intercept).dot(&self.slope) / self.slope.dot(&self.slope);
                (t.round() as i64).clamp(2 * lo, 2 * hi)
            }
            Readout::Representations => {
                let dist = |i: usize| {
                    let d = &s - &self.z.row(i);
                    d.dot(&d)
                };
                let best = (0..self.numbers.len())
                    .min_by(|&i, &j| dist(i).total_cmp(&dist(j)))
                    .expect("numbers");
                self.numbers[best]
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exact_line_adds_every_sum_and_its_readouts_differ_only_above_the_range() {
        // A representation that is a line in 3 dimensions, plus a constant offset.
        let numbers: Vec<i64> = (0..=20).collect();
        let x = Array2::from_shape_fn((21, 3), |(i, j)| 1.0 + (j as f64 + 1.0) * i as f64);
        let fit = LineFit::fit(&numbers, x.view(), 2).unwrap();
        assert!((fit.r2 - 1.0).abs() < 1e-12, "r2 {}", fit.r2);
        for (a, b) in [(0, 0), (3, 4), (12, 7), (20, 20)] {
            assert_eq!(fit.add(a, b, Readout::Line), Some(a + b));
            let rep = fit.add(a, b, Readout::Representations).unwrap();
            assert_eq!(rep, (a + b).min(20), "{a} + {b}");
        }
        assert_eq!(fit.add(21, 0, Readout::Line), None);
    }

    #[test]
    fn a_bent_representation_makes_linear_addition_miss() {
        // A circle: far from a line, so sums land off the numbers' own points.
        let numbers: Vec<i64> = (0..10).collect();
        let x = Array2::from_shape_fn((10, 2), |(i, j)| {
            let t = std::f64::consts::TAU * i as f64 / 10.0;
            if j == 0 {
                t.cos()
            } else {
                t.sin()
            }
        });
        let fit = LineFit::fit(&numbers, x.view(), 2).unwrap();
        assert!(fit.r2 < 0.5, "r2 {}", fit.r2);
        let wrong = (0..10)
            .flat_map(|a| (0..10).map(move |b| (a, b)))
            .filter(|&(a, b)| fit.add(a, b, Readout::Line) != Some(a + b))
            .count();
        assert!(wrong > 50, "{wrong} of 100 wrong");
    }
}
