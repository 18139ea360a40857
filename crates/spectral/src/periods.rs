//! Discovered periods: which k periods, with a linear term and a bias, best explain the
//! representation of the numbers, found greedily on a fine frequency grid.
//!
//! Start from the basis [x / max x, 1]. At each step, try every candidate period T on the grid
//! (frequencies j / (4 n) for n numbers, so periods from n down to 2 in quarter steps of the
//! DFT resolution), add the pair cos(2 pi x / T), sin(2 pi x / T), and keep the T that removes
//! the most residual sum of squares. The search works on an orthonormalised basis, so scoring
//! a candidate costs two projections, not a new least-squares fit.
//!
//! Why greedy: the exhaustive search over k periods is combinatorial, and each accepted
//! period's neighbours lose their gain once it is in the basis (they are nearly collinear with
//! it), so the steps do not pick the same peak twice.

use ndarray::{Array1, Array2, ArrayView2, Axis};

/// One discovered period.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Discovered {
    /// 1 for the first period found.
    pub rank: usize,
    /// The period, in numbers.
    pub period: f64,
    /// R^2 of the basis with periods 1..=rank, a linear term and a bias.
    pub r2: f64,
}

/// Result of the search.
#[derive(Clone, Debug, PartialEq)]
pub struct Discovery {
    /// R^2 of the linear term and bias alone.
    pub r2_linear: f64,
    /// The periods, in the order found.
    pub periods: Vec<Discovered>,
}

/// Adds `v` to the orthonormal columns `q` (Gram-Schmidt, twice for stability); returns false
/// (and adds nothing) when `v` is in their span.
fn push_orthonormal(q: &mut Vec<Array1<f64>>, mut v: Array1<f64>) -> bool {
    let scale = v.dot(&v).sqrt().max(1e-300);
    for _ in 0..2 {
        for b in q.iter() {
            let c = b.dot(&v);
            v.scaled_add(-c, b);
        }
    }
    let norm = v.dot(&v).sqrt();
    if norm < 1e-9 * scale || norm == 0.0 {
        return false;
    }
    q.push(v / norm);
    true
}

fn orthogonalised(q: &[Array1<f64>], mut v: Array1<f64>) -> Option<Array1<f64>> {
    let scale = v.dot(&v).sqrt();
    for _ in 0..2 {
        for b in q {
            let c = b.dot(&v);
            v.scaled_add(-c, b);
        }
    }
    let norm = v.dot(&v).sqrt();
    (norm > 1e-9 * scale && norm > 0.0).then(|| v / norm)
}

/// Candidate periods for `n` numbers: from n down to 2.
pub fn candidate_periods(n: usize) -> Vec<f64> {
    (4..=2 * n).map(|j| 4.0 * n as f64 / j as f64).collect()
}

/// Greedy search for `k` periods explaining the rows of `y` (one per number in `xs`).
pub fn discover(xs: &[f64], y: ArrayView2<f64>, k: usize) -> Discovery {
    let n = xs.len();
    let max_x = xs.iter().cloned().fold(f64::MIN, f64::max).max(1e-12);
    let mean = y.mean_axis(Axis(0)).expect("rows");
    let ss_tot: f64 = (&y - &mean).iter().map(|v| v * v).sum();
    let mut q: Vec<Array1<f64>> = Vec::new();
    push_orthonormal(&mut q, Array1::ones(n));
    push_orthonormal(&mut q, xs.iter().map(|x| x / max_x).collect());
    // Residual of y after projecting on q.
    let mut r: Array2<f64> = y.to_owned();
    for b in &q {
        let c = b.dot(&r);
        for (i, mut row) in r.outer_iter_mut().enumerate() {
            row.scaled_add(-b[i], &c);
        }
    }
    let ss = |r: &Array2<f64>| r.iter().map(|v| v * v).sum::<f64>();
    let r2 = |ss_res: f64| {
        if ss_tot > 0.0 {
            1.0 - ss_res / ss_tot
        } else {
            1.0
        }
    };
    let r2_linear = r2(ss(&r));
    let grid = candidate_periods(n);
    let mut found = Vec::new();
    for rank in 1..=k {
        let mut best: Option<(f64, f64, Vec<Array1<f64>>)> = None;
        for &t in &grid {
            let w = 2.0 * std::f64::consts::PI / t;
            let mut extra: Vec<Array1<f64>> = Vec::new();
            let mut local = q.clone();
            for f in [f64::cos, f64::sin] {
                let v: Array1<f64> = xs.iter().map(|&x| f(w * x)).collect();
                if let Some(o) = orthogonalised(&local, v) {
                    local.push(o.clone());
                    extra.push(o);
                }
            }
            let gain: f64 = extra
                .iter()
                .map(|o| {
                    let c = o.dot(&r);
                    c.dot(&c)
                })
                .sum();
            if best.as_ref().is_none_or(|b| gain > b.0 + 1e-12 * ss_tot) {
                best = Some((gain, t, extra));
            }
        }
        let Some((_, t, extra)) = best else { break };
        for o in extra {
            let c = o.dot(&r);
            for (i, mut row) in r.outer_iter_mut().enumerate() {
                row.scaled_add(-o[i], &c);
            }
            q.push(o);
        }
        found.push(Discovered {
            rank,
            period: t,
            r2: r2(ss(&r)),
        });
    }
    Discovery {
        r2_linear,
        periods: found,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planted_periods_are_found() {
        let xs: Vec<f64> = (0..100).map(|x| x as f64).collect();
        let two_pi = 2.0 * std::f64::consts::PI;
        let y = Array2::from_shape_fn((100, 4), |(i, j)| {
            let x = xs[i];
            let a = (two_pi * x / 10.0).cos() * (j as f64 + 1.0);
            let b = 0.5 * (two_pi * x / 5.0).sin();
            let c = 0.3 * (two_pi * x / 7.3).cos();
            a + b + c + 0.01 * x
        });
        let d = discover(&xs, y.view(), 3);
        let periods: Vec<f64> = d.periods.iter().map(|p| p.period).collect();
        assert_eq!(periods[0], 10.0);
        assert_eq!(periods[1], 5.0);
        assert!((periods[2] - 7.3).abs() < 0.1, "{periods:?}");
        assert!(d.periods[2].r2 > 0.99 && d.r2_linear < 0.1);
    }
}
