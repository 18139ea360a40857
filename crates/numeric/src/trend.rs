//! The trend of an equally spaced series and the strongest period of what remains, as the
//! paper reads the final logits over every answer (Figs 41-42) and a neuron's logit lens
//! (Figs 39-40): fit a least-squares line, take it away, scale what remains to [-1, 1], and take
//! the strongest frequency k >= 1 of its discrete Fourier transform (numpy's `rfft`); the period
//! is the series' length / k, so on 199 answers period 10 reads 9.95 and the longest 199.

use rustfft::{num_complex::Complex, FftPlanner};

/// A series' trend and the strongest period of what remains.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TopPeriod {
    /// Slope of the least-squares line of the values against their index.
    pub slope: f64,
    /// The strongest frequency k >= 1 of the detrended, scaled values (cycles over the series).
    pub frequency: usize,
    /// Length / frequency (NaN when the detrended values are constant).
    pub period: f64,
}

/// The trend and top period of `values` (equally spaced).
pub fn top_period(values: &[f64], planner: &mut FftPlanner<f64>) -> TopPeriod {
    let k = values.len();
    let x_mean = (k as f64 - 1.0) / 2.0;
    let y = values;
    let y_mean = y.iter().sum::<f64>() / k as f64;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (i, &v) in y.iter().enumerate() {
        let dx = i as f64 - x_mean;
        sxy += dx * (v - y_mean);
        sxx += dx * dx;
    }
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let rest: Vec<f64> = y
        .iter()
        .enumerate()
        .map(|(i, &v)| v - y_mean - slope * (i as f64 - x_mean))
        .collect();
    let (lo, hi) = rest
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let scale = y.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    if hi - lo <= 1e-9 * scale || k < 3 {
        return TopPeriod {
            slope,
            frequency: 0,
            period: f64::NAN,
        };
    }
    let mut buf: Vec<Complex<f64>> = rest
        .iter()
        .map(|&v| Complex::new(2.0 * (v - lo) / (hi - lo) - 1.0, 0.0))
        .collect();
    planner.plan_fft_forward(k).process(&mut buf);
    let frequency = (1..=k / 2)
        .max_by(|&i, &j| buf[i].norm().total_cmp(&buf[j].norm()).then(j.cmp(&i)))
        .expect("k >= 3");
    TopPeriod {
        slope,
        frequency,
        period: k as f64 / frequency as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_falling_line_with_a_ten_cycle_reads_its_slope_and_period() {
        let logits: Vec<f64> = (0..199)
            .map(|n| {
                let n = n as f64;
                5.0 - 0.03 * n + (std::f64::consts::TAU * n / 9.95).cos()
            })
            .collect();
        let s = top_period(&logits, &mut FftPlanner::new());
        assert!((s.slope + 0.03).abs() < 2e-3, "slope {}", s.slope);
        assert_eq!(s.frequency, 20);
        assert!((s.period - 9.95).abs() < 1e-12);
    }

    #[test]
    fn a_straight_line_has_no_period() {
        let logits: Vec<f64> = (0..50).map(|n| n as f64).collect();
        let s = top_period(&logits, &mut FftPlanner::new());
        assert!((s.slope - 1.0).abs() < 1e-9);
        assert!(s.period.is_nan());
    }
}
