//! Bases of functions of a number x, evaluated row per number (method.md E3).
//!
//! Helix: `[cos(2 pi x / T), sin(2 pi x / T) for T in periods] + [x / scale] + [1]`, in that
//! order, with `scale` the largest x of the fitted sample (the paper's `x / max(x)`). Circle: the
//! same without the linear term. Polynomial: `[(x / scale)^1 .. (x / scale)^n, 1]`: the paper's
//! code used raw powers up to x^9, whose columns differ by 18 orders of magnitude and make the
//! least squares ill-conditioned; scaled to [0, 1] they do not.

use ndarray::Array2;

/// Which functions.
#[derive(Clone, Debug, PartialEq)]
pub enum BasisKind {
    /// A cos/sin pair per period, then optionally the linear term; always a bias.
    Helix {
        /// Periods T.
        periods: Vec<f64>,
        /// Include x / scale.
        linear: bool,
    },
    /// Scaled powers 1..=degree and a bias.
    Poly {
        /// Highest power.
        degree: usize,
    },
}

/// A basis with its scale fixed by the sample it was fitted on.
#[derive(Clone, Debug, PartialEq)]
pub struct Basis {
    /// The functions.
    pub kind: BasisKind,
    /// x is divided by this (the fitted sample's largest |x|, at least 1).
    pub scale: f64,
}

fn fmt_period(t: f64) -> String {
    if t.fract() == 0.0 {
        format!("{t:.0}")
    } else {
        format!("{t:.2}")
    }
}

impl Basis {
    /// The basis of `kind` scaled for the sample `xs`.
    pub fn for_sample(kind: BasisKind, xs: &[f64]) -> Basis {
        let scale = xs.iter().fold(1.0f64, |m, x| m.max(x.abs()));
        Basis { kind, scale }
    }

    /// Column names: `cos_T`, `sin_T`, `linear`, `x^k`, `bias`.
    pub fn names(&self) -> Vec<String> {
        let mut out = Vec::new();
        match &self.kind {
            BasisKind::Helix { periods, linear } => {
                for &t in periods {
                    out.push(format!("cos_{}", fmt_period(t)));
                    out.push(format!("sin_{}", fmt_period(t)));
                }
                if *linear {
                    out.push("linear".into());
                }
            }
            BasisKind::Poly { degree } => {
                for k in 1..=*degree {
                    out.push(format!("x^{k}"));
                }
            }
        }
        out.push("bias".into());
        out
    }

    /// Functions excluding the bias: the parameter count the paper quotes (helix with four
    /// periods: 9).
    pub fn n_params(&self) -> usize {
        self.names().len() - 1
    }

    /// The design matrix, one row per x.
    pub fn eval(&self, xs: &[f64]) -> Array2<f64> {
        let p = self.n_params() + 1;
        let mut m = Array2::zeros((xs.len(), p));
        for (i, &x) in xs.iter().enumerate() {
            let mut j = 0;
            let mut put = |v: f64| {
                m[[i, j]] = v;
                j += 1;
            };
            match &self.kind {
                BasisKind::Helix { periods, linear } => {
                    for &t in periods {
                        let w = 2.0 * std::f64::consts::PI * x / t;
                        put(w.cos());
                        put(w.sin());
                    }
                    if *linear {
                        put(x / self.scale);
                    }
                }
                BasisKind::Poly { degree } => {
                    for k in 1..=*degree {
                        put((x / self.scale).powi(k as i32));
                    }
                }
            }
            put(1.0);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_paper_helix_has_nine_parameters_in_order() {
        let b = Basis::for_sample(
            BasisKind::Helix {
                periods: vec![2.0, 5.0, 10.0, 100.0],
                linear: true,
            },
            &[0.0, 50.0, 99.0],
        );
        assert_eq!(b.n_params(), 9);
        assert_eq!(b.names()[..3], ["cos_2", "sin_2", "cos_5"]);
        let m = b.eval(&[25.0]);
        assert!((m[[0, 6]] - 0.0).abs() < 1e-12); // cos(2 pi 25 / 100)
        assert!((m[[0, 8]] - 25.0 / 99.0).abs() < 1e-12 && m[[0, 9]] == 1.0);
        let p = Basis::for_sample(BasisKind::Poly { degree: 3 }, &[0.0, 10.0]);
        assert_eq!(p.eval(&[5.0]).row(0).to_vec(), vec![0.5, 0.25, 0.125, 1.0]);
    }
}
