//! Closed-form neuron fits (docs/method.md E6): a neuron's preactivation over the a x b grid
//! as N(a, b) = sum over t in {a, b, a+b} of c_t t + sum over T and t of
//! A_{T,t} cos(2 pi (t - d_{T,t}) / T) + bias.
//!
//! With the periods fixed, A cos(2 pi (t - d) / T) = alpha cos(2 pi t / T) + beta sin(2 pi t / T),
//! so the fit is one linear least-squares problem, exact, solved for every neuron at once (the
//! original ran 2,500 epochs of SGD per neuron). The linear terms are fitted on t / 100 so the
//! design is well conditioned, and reported per unit of t. Since a+b is a + b, the three slopes
//! are not identified one by one (only the slope in a, c_a + c_{a+b}, and in b): the least
//! squares solution of minimum norm is the one reported. The periodic terms are identified
//! (sin(2 pi t / 2) is zero at integers, so its coefficient is 0).

use helixlab_numeric::lstsq::lstsq;
use ndarray::{Array2, ArrayView2};

use crate::Result;

/// The variables of a neuron fit, in the order of its terms.
pub const OPERANDS: [&str; 3] = ["a", "b", "a+b"];

/// The scale the linear terms are fitted at.
const LINEAR_SCALE: f64 = 100.0;

fn variables(a: i64, b: i64) -> [f64; 3] {
    [a as f64, b as f64, (a + b) as f64]
}

/// The design matrix of the fit for these (a, b): per variable its linear term, then cos and
/// sin per period; the bias last.
pub fn design(ab: &[(i64, i64)], periods: &[f64]) -> Array2<f64> {
    let width = 3 * (1 + 2 * periods.len()) + 1;
    let mut x = Array2::zeros((ab.len(), width));
    for (r, &(a, b)) in ab.iter().enumerate() {
        let mut c = 0;
        for t in variables(a, b) {
            x[[r, c]] = t / LINEAR_SCALE;
            c += 1;
            for &period in periods {
                let w = 2.0 * std::f64::consts::PI * t / period;
                x[[r, c]] = w.cos();
                x[[r, c + 1]] = w.sin();
                c += 2;
            }
        }
        x[[r, c]] = 1.0;
    }
    x
}

/// One periodic term of a neuron fit: A cos(2 pi (t - shift) / T).
#[derive(Clone, Debug, PartialEq)]
pub struct Term {
    /// `a`, `b` or `a+b`.
    pub operand: &'static str,
    /// T.
    pub period: f64,
    /// The cosine coefficient.
    pub alpha: f64,
    /// The sine coefficient.
    pub beta: f64,
}

impl Term {
    /// A = sqrt(alpha^2 + beta^2).
    pub fn amplitude(&self) -> f64 {
        self.alpha.hypot(self.beta)
    }

    /// d in [0, T): alpha cos + beta sin = A cos(2 pi (t - d) / T).
    pub fn shift(&self) -> f64 {
        let phase = self.beta.atan2(self.alpha);
        (phase * self.period / (2.0 * std::f64::consts::PI)).rem_euclid(self.period)
    }

    /// The term in words, e.g. `5.00 cos(2π(a+b - 3.0)/10)`.
    pub fn words(&self) -> String {
        format!(
            "{:.2} cos(2π({} - {:.1})/{})",
            self.amplitude(),
            self.operand,
            self.shift(),
            self.period
        )
    }
}

/// The fit of one neuron.
#[derive(Clone, Debug, PartialEq)]
pub struct NeuronFit {
    /// c_t per unit of t, for a, b, a+b (the minimum-norm split, see the module doc).
    pub linear: [f64; 3],
    /// The periodic terms, per variable then period.
    pub terms: Vec<Term>,
    /// The constant.
    pub bias: f64,
    /// RMSE / (max - min) of the fitted values.
    pub nrmse: f64,
}

impl NeuronFit {
    /// Squared a+b amplitudes over all squared amplitudes (NaN for a neuron with no periodic
    /// part at all).
    pub fn ab_fraction(&self) -> f64 {
        let sq = |t: &Term| t.amplitude().powi(2);
        let all: f64 = self.terms.iter().map(sq).sum();
        let ab: f64 = self
            .terms
            .iter()
            .filter(|t| t.operand == "a+b")
            .map(sq)
            .sum();
        ab / all
    }

    /// The `n` periodic terms of largest amplitude, in words, largest first.
    pub fn top_terms(&self, n: usize) -> String {
        let mut terms: Vec<&Term> = self.terms.iter().collect();
        terms.sort_by(|x, y| y.amplitude().total_cmp(&x.amplitude()));
        terms
            .iter()
            .take(n)
            .map(|t| t.words())
            .collect::<Vec<_>>()
            .join(" + ")
    }

    /// The fitted value at (a, b).
    pub fn predict(&self, a: i64, b: i64) -> f64 {
        let mut v = self.bias;
        let t = variables(a, b);
        for (i, c) in self.linear.iter().enumerate() {
            v += c * t[i];
        }
        for term in &self.terms {
            let i = OPERANDS
                .iter()
                .position(|&o| o == term.operand)
                .expect("named here");
            let w = 2.0 * std::f64::consts::PI * t[i] / term.period;
            v += term.alpha * w.cos() + term.beta * w.sin();
        }
        v
    }
}

/// The coefficients of every neuron (columns of `y`, one row per (a, b)) by least squares.
pub fn coefficients(ab: &[(i64, i64)], y: ArrayView2<f64>, periods: &[f64]) -> Result<Array2<f64>> {
    Ok(lstsq(design(ab, periods).view(), y)?)
}

/// Fits every neuron (columns of `y`, one row per (a, b)).
pub fn fit_neurons(
    ab: &[(i64, i64)],
    y: ArrayView2<f64>,
    periods: &[f64],
) -> Result<Vec<NeuronFit>> {
    let coef = coefficients(ab, y, periods)?;
    let pred = design(ab, periods).dot(&coef);
    let per_var = 1 + 2 * periods.len();
    Ok((0..y.ncols())
        .map(|n| {
            let c = coef.column(n);
            let mut linear = [0.0; 3];
            let mut terms = Vec::new();
            for (v, operand) in OPERANDS.iter().enumerate() {
                let base = v * per_var;
                linear[v] = c[base] / LINEAR_SCALE;
                for (k, &period) in periods.iter().enumerate() {
                    terms.push(Term {
                        operand,
                        period,
                        alpha: c[base + 1 + 2 * k],
                        beta: c[base + 2 + 2 * k],
                    });
                }
            }
            let col = y.column(n);
            let (lo, hi) = col
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
                    (l.min(v), h.max(v))
                });
            let mse = col
                .iter()
                .zip(pred.column(n))
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>()
                / col.len() as f64;
            NeuronFit {
                linear,
                terms,
                bias: c[3 * per_var],
                nrmse: mse.sqrt() / (hi - lo),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(n: i64) -> Vec<(i64, i64)> {
        (0..n).flat_map(|a| (0..n).map(move |b| (a, b))).collect()
    }

    /// A planted neuron: known terms in a, b and a+b plus small seeded noise.
    #[test]
    fn a_planted_neuron_is_recovered_with_its_amplitudes_and_shifts() {
        let ab = grid(50);
        let periods = [2.0, 5.0, 10.0, 100.0];
        let two_pi = 2.0 * std::f64::consts::PI;
        let mut noise = helixlab_numeric::split::uniform(ab.len(), -0.01, 0.01, 7).into_iter();
        let y: Vec<f64> = ab
            .iter()
            .map(|&(a, b)| {
                let s = (a + b) as f64;
                5.0 * (two_pi * (s - 3.0) / 10.0).cos()
                    + 2.0 * (two_pi * (a as f64 - 1.0) / 5.0).cos()
                    + 0.03 * b as f64
                    - 1.5
                    + noise.next().unwrap()
            })
            .collect();
        let y = Array2::from_shape_vec((ab.len(), 1), y).unwrap();
        let fit = &fit_neurons(&ab, y.view(), &periods).unwrap()[0];
        let term = |o: &str, t: f64| {
            fit.terms
                .iter()
                .find(|x| x.operand == o && x.period == t)
                .unwrap()
                .clone()
        };
        let ab10 = term("a+b", 10.0);
        assert!((ab10.amplitude() - 5.0).abs() < 1e-2, "{ab10:?}");
        assert!((ab10.shift() - 3.0).abs() < 1e-2, "{ab10:?}");
        let a5 = term("a", 5.0);
        assert!((a5.amplitude() - 2.0).abs() < 1e-2 && (a5.shift() - 1.0).abs() < 1e-2);
        // a+b is a + b: only the linear part's slopes in a and in b are identified.
        let [ca, cb, cab] = fit.linear;
        assert!(
            (ca + cab).abs() < 1e-3 && (cb + cab - 0.03).abs() < 1e-3,
            "{:?}",
            fit.linear
        );
        assert!(fit.nrmse < 0.01, "{}", fit.nrmse);
        assert!(
            fit.top_terms(1).starts_with("5.00 cos(2π(a+b - 3.0)/10)"),
            "{}",
            fit.top_terms(2)
        );
        // 25 / (25 + 4) of the squared amplitude is in a+b.
        assert!((fit.ab_fraction() - 25.0 / 29.0).abs() < 1e-3);
        for &(a, b) in &ab[..20] {
            let want = 5.0 * (two_pi * ((a + b) as f64 - 3.0) / 10.0).cos()
                + 2.0 * (two_pi * (a as f64 - 1.0) / 5.0).cos()
                + 0.03 * b as f64
                - 1.5;
            assert!((fit.predict(a, b) - want).abs() < 0.02);
        }
    }

    #[test]
    fn a_pure_noise_neuron_fits_badly() {
        let ab = grid(40);
        let y = helixlab_numeric::split::uniform(ab.len(), -1.0, 1.0, 3);
        let y = Array2::from_shape_vec((ab.len(), 1), y).unwrap();
        let fit = &fit_neurons(&ab, y.view(), &[2.0, 5.0, 10.0, 100.0]).unwrap()[0];
        // Uniform noise on [-1, 1]: RMSE near 1/sqrt(3) of a range near 2.
        assert!(fit.nrmse > 0.25, "{}", fit.nrmse);
    }

    /// Against numpy's lstsq on the same design (tools/make_neuron_fit_reference.py): the
    /// fitted values, every identified periodic coefficient (all but sin(2 pi t / 2), which is
    /// zero at integers) and the identified slopes, to 1e-8.
    #[test]
    fn fits_equal_numpys_least_squares() {
        let text = include_str!("../tests/fixtures/neuron_fit_reference.json");
        let r: serde_json::Value = serde_json::from_str(text).unwrap();
        let floats = |v: &serde_json::Value| -> Vec<f64> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        };
        let periods = floats(&r["periods"]);
        let ab: Vec<(i64, i64)> = r["ab"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_i64().unwrap(), p[1].as_i64().unwrap()))
            .collect();
        let ys: Vec<Vec<f64>> = r["y"].as_array().unwrap().iter().map(floats).collect();
        let mut y = Array2::zeros((ab.len(), ys.len()));
        for (n, col) in ys.iter().enumerate() {
            for (i, v) in col.iter().enumerate() {
                y[[i, n]] = *v;
            }
        }
        let fits = fit_neurons(&ab, y.view(), &periods).unwrap();
        let mut worst = 0f64;
        for (n, fit) in fits.iter().enumerate() {
            let want = floats(&r["fitted"][n]);
            for (i, &(a, b)) in ab.iter().enumerate() {
                worst = worst.max((fit.predict(a, b) - want[i]).abs());
            }
            let c = floats(&r["coefficients"][n]);
            let per_var = 1 + 2 * periods.len();
            for (v, _) in OPERANDS.iter().enumerate() {
                for (k, &t) in periods.iter().enumerate() {
                    let term = &fit.terms[v * periods.len() + k];
                    worst = worst.max((term.alpha - c[v * per_var + 1 + 2 * k]).abs());
                    if t != 2.0 {
                        worst = worst.max((term.beta - c[v * per_var + 2 + 2 * k]).abs());
                    }
                }
            }
            // The slopes in a and in b (a+b's is shared between them).
            let slope = |v: usize| (c[v * per_var] + c[2 * per_var]) / LINEAR_SCALE;
            worst = worst.max((fit.linear[0] + fit.linear[2] - slope(0)).abs());
            worst = worst.max((fit.linear[1] + fit.linear[2] - slope(1)).abs());
        }
        assert!(worst <= 1e-8, "{worst:e}");
    }
}
