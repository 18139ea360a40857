//! Dominant periods of a neuron's preactivation over the a x b grid (docs/method.md E6): in a
//! and in b from the grid's 2-D FFT (the frequency along that axis with the most magnitude,
//! summed over the other axis), in a+b from a 1-D FFT over the values averaged per a+b in
//! order. The mean is removed first, so the constant never wins.

use rustfft::num_complex::Complex;
use rustfft::FftPlanner;

/// The dominant periods of one neuron; `None` where the peak has no component along that
/// variable (frequency 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Periods {
    /// Period in a.
    pub a: Option<f64>,
    /// Period in b.
    pub b: Option<f64>,
    /// Period in a+b.
    pub sum: Option<f64>,
}

fn fft(planner: &mut FftPlanner<f64>, data: &mut [Complex<f64>]) {
    planner.plan_fft_forward(data.len()).process(data);
}

/// Periods of `grid` (row-major, `n_a` rows of `n_b`, a = a0 + row, b = b0 + column).
pub fn periods(grid: &[f64], n_a: usize, n_b: usize) -> Periods {
    assert_eq!(grid.len(), n_a * n_b);
    let mean = grid.iter().sum::<f64>() / grid.len() as f64;
    let mut planner = FftPlanner::new();
    let mut c: Vec<Complex<f64>> = grid.iter().map(|&v| Complex::new(v - mean, 0.0)).collect();
    for row in c.chunks_mut(n_b) {
        fft(&mut planner, row);
    }
    let mut column = vec![Complex::new(0.0, 0.0); n_a];
    for j in 0..n_b {
        for i in 0..n_a {
            column[i] = c[i * n_b + j];
        }
        fft(&mut planner, &mut column);
        for i in 0..n_a {
            c[i * n_b + j] = column[i];
        }
    }
    // Each variable's period is the frequency with the most spectral mass summed over the other
    // variable's frequencies (the spectrum of a real grid is symmetric: half of each axis has
    // every peak). A variable the grid does not depend on has no mass and no period.
    let mag: Vec<f64> = c.iter().map(|v| v.norm()).collect();
    let scale = mag.iter().fold(0.0f64, |m, &v| m.max(v));
    let along = |n_k: usize, at: &dyn Fn(usize) -> f64| -> Option<f64> {
        (1..=n_k / 2)
            .map(|k| (k, at(k)))
            .max_by(|x, y| x.1.total_cmp(&y.1))
            .filter(|&(_, m)| m > 1e-9 * scale.max(f64::MIN_POSITIVE))
            .map(|(k, _)| n_k as f64 / k as f64)
    };
    let period_a = along(n_a, &|ka| (0..n_b).map(|kb| mag[ka * n_b + kb]).sum());
    let period_b = along(n_b, &|kb| (0..n_a).map(|ka| mag[ka * n_b + kb]).sum());
    // a + b: the mean per sum, in order of the sum.
    let n_sum = n_a + n_b - 1;
    let (mut total, mut count) = (vec![0.0; n_sum], vec![0usize; n_sum]);
    for i in 0..n_a {
        for j in 0..n_b {
            total[i + j] += grid[i * n_b + j] - mean;
            count[i + j] += 1;
        }
    }
    let mut s: Vec<Complex<f64>> = total
        .iter()
        .zip(&count)
        .map(|(t, &n)| Complex::new(t / n as f64, 0.0))
        .collect();
    let m = s.iter().map(|v| v.re).sum::<f64>() / n_sum as f64;
    s.iter_mut().for_each(|v| v.re -= m);
    fft(&mut planner, &mut s);
    let top = (1..=n_sum / 2)
        .max_by(|&x, &y| s[x].norm().total_cmp(&s[y].norm()))
        .filter(|&k| s[k].norm() > 0.0);
    Periods {
        a: period_a,
        b: period_b,
        sum: top.map(|k| n_sum as f64 / k as f64),
    }
}

/// Whether `period` is within 5 % of `target`.
pub fn near(period: Option<f64>, target: f64) -> bool {
    period.is_some_and(|p| (p - target).abs() <= 0.05 * target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(f: impl Fn(f64, f64) -> f64) -> Vec<f64> {
        (0..100)
            .flat_map(|a| (0..100).map(move |b| (a as f64, b as f64)))
            .map(|(a, b)| f(a, b))
            .collect()
    }

    #[test]
    fn the_planted_periods_are_found() {
        let tau = 2.0 * std::f64::consts::PI;
        let g = grid(|a, b| 3.0 * (tau * a / 10.0).cos() + (tau * b / 5.0).sin() + 7.0);
        let p = periods(&g, 100, 100);
        assert_eq!((p.a, p.b), (Some(10.0), Some(5.0)));
        let p = periods(&grid(|a, _| (tau * a / 2.0).cos()), 100, 100);
        assert_eq!((p.a, p.b), (Some(2.0), None), "b has no part in it");
        let g = grid(|a, b| (tau * (a + b) / 10.0).cos());
        let p = periods(&g, 100, 100);
        assert_eq!((p.a, p.b), (Some(10.0), Some(10.0)));
        assert!(near(p.sum, 10.0), "{:?}", p.sum);
        let g = grid(|a, b| (tau * (a + b) / 2.0).cos());
        assert!(near(periods(&g, 100, 100).sum, 2.0));
        assert!(!near(Some(11.0), 10.0) && near(Some(10.4), 10.0));
    }
}
