//! The shape of the final logits over every possible answer (Figs 41-42): for one problem, the
//! logits at the tokens of the answers first..=last (0..=198 for a, b in 0..=99). A line fitted
//! to them has, in the paper's models, a negative slope (a bias to small answers); what remains
//! after it is periodic, most often with period 10. The arithmetic is
//! [`helixlab_numeric::trend::top_period`] (line, detrend, scale, FFT), shared with the neuron
//! logit lens.

pub use helixlab_numeric::trend::TopPeriod as LogitShape;
use rustfft::FftPlanner;

/// The shape of `logits` (one per answer, consecutive answers).
pub fn shape(logits: &[f32], planner: &mut FftPlanner<f64>) -> LogitShape {
    let values: Vec<f64> = logits.iter().map(|&v| v as f64).collect();
    helixlab_numeric::trend::top_period(&values, planner)
}
