//! Bases of functions of a number x, evaluated row per number (docs/method.md E3), and the
//! typed names of their functions ([`BasisTerm`]: `cos_T`, `sin_T`, `linear`, `x^k`, `bias`),
//! which the fit stage writes and the patch stage reads back to evaluate a stored fit.
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

/// One function of a basis, named as in `coefficients.parquet`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BasisTerm {
    /// `cos_T`: cos(2 pi x / T).
    Cos(f64),
    /// `sin_T`: sin(2 pi x / T).
    Sin(f64),
    /// `linear`: x / scale.
    Linear,
    /// `x^k`: (x / scale)^k.
    Power(u32),
    /// `bias`: 1.
    Bias,
}

impl BasisTerm {
    /// The function's value at `x`, with `scale` the basis' scale.
    pub fn eval(self, x: f64, scale: f64) -> f64 {
        let angle = |t: f64| 2.0 * std::f64::consts::PI * x / t;
        match self {
            BasisTerm::Cos(t) => angle(t).cos(),
            BasisTerm::Sin(t) => angle(t).sin(),
            BasisTerm::Linear => x / scale,
            BasisTerm::Power(k) => (x / scale).powi(k as i32),
            BasisTerm::Bias => 1.0,
        }
    }
}

impl std::fmt::Display for BasisTerm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Whole periods print without decimals, as the fit names do (`helix[2,10]`).
        let period = |t: f64| {
            if t.fract() == 0.0 {
                format!("{t:.0}")
            } else {
                format!("{t:.2}")
            }
        };
        match *self {
            BasisTerm::Cos(t) => write!(f, "cos_{}", period(t)),
            BasisTerm::Sin(t) => write!(f, "sin_{}", period(t)),
            BasisTerm::Linear => f.write_str("linear"),
            BasisTerm::Power(k) => write!(f, "x^{k}"),
            BasisTerm::Bias => f.write_str("bias"),
        }
    }
}

impl std::str::FromStr for BasisTerm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |what: &str| format!("basis function `{s}`: {what}");
        let period = |t: &str| -> Result<f64, String> {
            t.parse::<f64>()
                .ok()
                .filter(|t| *t > 0.0)
                .ok_or_else(|| bad("bad period"))
        };
        Ok(if let Some(t) = s.strip_prefix("cos_") {
            BasisTerm::Cos(period(t)?)
        } else if let Some(t) = s.strip_prefix("sin_") {
            BasisTerm::Sin(period(t)?)
        } else if let Some(k) = s.strip_prefix("x^") {
            BasisTerm::Power(k.parse().map_err(|_| bad("bad power"))?)
        } else if s == "linear" {
            BasisTerm::Linear
        } else if s == "bias" {
            BasisTerm::Bias
        } else {
            return Err(format!(
                "unknown basis function `{s}` (cos_T, sin_T, linear, x^k, bias)"
            ));
        })
    }
}

impl Basis {
    /// The basis of `kind` scaled for the sample `xs`.
    pub fn for_sample(kind: BasisKind, xs: &[f64]) -> Basis {
        let scale = xs.iter().fold(1.0f64, |m, x| m.max(x.abs()));
        Basis { kind, scale }
    }

    /// The functions in column order: `cos_T`, `sin_T` per period and `linear` (helix), or
    /// `x^1..x^n` (polynomial); then `bias`.
    pub fn terms(&self) -> Vec<BasisTerm> {
        let mut out = Vec::new();
        match &self.kind {
            BasisKind::Helix { periods, linear } => {
                for &t in periods {
                    out.extend([BasisTerm::Cos(t), BasisTerm::Sin(t)]);
                }
                if *linear {
                    out.push(BasisTerm::Linear);
                }
            }
            BasisKind::Poly { degree } => {
                out.extend((1..=*degree as u32).map(BasisTerm::Power));
            }
        }
        out.push(BasisTerm::Bias);
        out
    }

    /// Column names, as [`BasisTerm`] prints them.
    pub fn names(&self) -> Vec<String> {
        self.terms().iter().map(|t| t.to_string()).collect()
    }

    /// Functions excluding the bias: the parameter count the paper quotes (helix with four
    /// periods: 9).
    pub fn n_params(&self) -> usize {
        self.names().len() - 1
    }

    /// The design matrix, one row per x.
    pub fn eval(&self, xs: &[f64]) -> Array2<f64> {
        let terms = self.terms();
        Array2::from_shape_fn((xs.len(), terms.len()), |(i, j)| {
            terms[j].eval(xs[i], self.scale)
        })
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

    #[test]
    fn term_names_parse_back() {
        for name in ["cos_2", "sin_100", "cos_7.50", "linear", "x^9", "bias"] {
            let t: BasisTerm = name.parse().unwrap();
            assert_eq!(t.to_string(), name);
        }
        assert!("cos_x".parse::<BasisTerm>().unwrap_err().contains("period"));
        assert!("tan_2"
            .parse::<BasisTerm>()
            .unwrap_err()
            .contains("unknown"));
    }
}
