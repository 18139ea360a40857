//! The Fourier spectrum along the number axis (docs/method.md E2).
//!
//! For numbers x = lo..=hi (n consecutive values) and every model dimension, the values are
//! centred (their mean removed, which only zeroes the k = 0 term), optionally detrended (their
//! least-squares line removed), transformed with an unnormalised DFT of length n, and the
//! power |F_k|^2 is averaged over dimensions, for k = 0..=n/2. Frequency k completes k cycles
//! over the window: period n / k numbers. This is `np.abs(np.fft.fft(Xc, axis=0))**2` averaged
//! over axis 1, which the reference script computes.

use ndarray::ArrayView2;
use rustfft::num_complex::Complex;
use rustfft::FftPlanner;

/// Power at one frequency.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SpectrumPoint {
    /// Frequency index k (cycles over the window).
    pub k: usize,
    /// Cycles per number, k / n.
    pub frequency: f64,
    /// Period in numbers, n / k (`None` for k = 0).
    pub period: Option<f64>,
    /// Mean over dimensions of |F_k|^2.
    pub power: f64,
}

/// The spectrum of the rows of `x` (`n` consecutive numbers x `d` dimensions).
pub fn spectrum(x: ArrayView2<f64>, detrend: bool) -> Vec<SpectrumPoint> {
    let (n, d) = x.dim();
    if n == 0 || d == 0 {
        return Vec::new();
    }
    let fft = FftPlanner::<f64>::new().plan_fft_forward(n);
    let mut power = vec![0.0; n / 2 + 1];
    let t: Vec<f64> = (0..n).map(|i| i as f64).collect();
    let t_mean = (n as f64 - 1.0) / 2.0;
    let t_ss: f64 = t.iter().map(|v| (v - t_mean) * (v - t_mean)).sum();
    let mut buf = vec![Complex::new(0.0, 0.0); n];
    for col in x.columns() {
        let mean = col.sum() / n as f64;
        let slope = if detrend && t_ss > 0.0 {
            col.iter()
                .zip(&t)
                .map(|(v, ti)| (v - mean) * (ti - t_mean))
                .sum::<f64>()
                / t_ss
        } else {
            0.0
        };
        for ((b, v), ti) in buf.iter_mut().zip(col.iter()).zip(&t) {
            *b = Complex::new(v - mean - slope * (ti - t_mean), 0.0);
        }
        fft.process(&mut buf);
        for (p, c) in power.iter_mut().zip(&buf) {
            *p += c.norm_sqr();
        }
    }
    power
        .into_iter()
        .enumerate()
        .map(|(k, p)| SpectrumPoint {
            k,
            frequency: k as f64 / n as f64,
            period: (k > 0).then(|| n as f64 / k as f64),
            power: p / d as f64,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn a_period_ten_wave_peaks_at_period_ten() {
        let x = Array2::from_shape_fn((100, 3), |(i, j)| {
            (2.0 * std::f64::consts::PI * i as f64 / 10.0 + j as f64).cos() + 0.5 * i as f64
        });
        let s = spectrum(x.view(), true);
        let best = s[1..]
            .iter()
            .max_by(|a, b| a.power.total_cmp(&b.power))
            .unwrap();
        assert_eq!(best.period, Some(10.0));
        assert_eq!(s.len(), 51);
        // Without detrending, the linear ramp dominates the lowest frequencies.
        let raw = spectrum(x.view(), false);
        assert!(raw[1].power > raw[10].power);
    }
}
