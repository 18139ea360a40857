//! The neuron logit lens (the paper's Figs 39-40): what a neuron writes, read straight through
//! the unembedding. For a neuron n of layer l, its W_out row (the direction it adds to the
//! residual stream, scaled by its activation) times the unembedding, at the tokens of every
//! possible answer, without the final norm (as the original code; a norm would rescale the
//! whole residual stream, not this direction alone). The activation only scales the vector, so
//! its top period (line taken away, Fourier transform; [`helixlab_numeric::trend`]) is the
//! direction's own. The neurons read are the top direct-effect ones: by direct effect,
//! largest first, until they hold 80 % of the positive direct effect of the top neurons.

use candle_core::{DType, Tensor};
use helixlab_model::Model;
use helixlab_numeric::trend::{top_period, TopPeriod};

use crate::forwards::{Neuron, NeuronEffect};
use crate::Result;

/// The share of the top neurons' positive direct effect the lens neurons hold.
pub const DE_SHARE: f64 = 0.8;

/// One neuron's lens.
#[derive(Clone, Debug, PartialEq)]
pub struct Lens {
    /// The neuron.
    pub neuron: Neuron,
    /// Its rank among the top neurons by attribution (1 = first).
    pub rank: usize,
    /// Its direct effect (mean over pairs).
    pub direct: f64,
    /// The positive direct effect of it and the neurons before it, over all of it.
    pub cumulative_share: f64,
    /// Trend and top period of its logits over the answers.
    pub period: TopPeriod,
}

/// The neurons the lens reads: indices into `effects`, largest direct effect first, with the
/// cumulative share of the positive direct effect.
pub fn lens_neurons(effects: &[NeuronEffect]) -> Vec<(usize, f64)> {
    let total: f64 = effects.iter().map(|e| e.direct.max(0.0)).sum();
    let mut order: Vec<usize> = (0..effects.len())
        .filter(|&i| effects[i].direct > 0.0)
        .collect();
    order.sort_by(|&i, &j| {
        effects[j]
            .direct
            .total_cmp(&effects[i].direct)
            .then(i.cmp(&j))
    });
    let mut out = Vec::new();
    let mut sum = 0.0;
    for i in order {
        if sum >= DE_SHARE * total {
            break;
        }
        sum += effects[i].direct;
        out.push((i, sum / total));
    }
    out
}

/// The trend and top period of what neuron `(l, n)` writes, read through the unembedding at
/// `ids` (the answers' tokens).
pub fn direction_period(
    model: &Model,
    (l, n): Neuron,
    ids: &Tensor,
    planner: &mut rustfft::FftPlanner<f64>,
) -> Result<TopPeriod> {
    let row = model.neuron_directions(l)?.narrow(0, n, 1)?;
    let logits = model
        .unembed_without_norm(&row)?
        .index_select(ids, 1)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    Ok(top_period(&logits, planner))
}

/// The lens rows of the top direct-effect neurons among `top` (with their `effects`), each
/// neuron's period given by `period` (from its index in `top`).
pub fn lens_rows(
    top: &[Neuron],
    effects: &[NeuronEffect],
    period: &mut dyn FnMut(usize) -> Result<TopPeriod>,
) -> Result<Vec<Lens>> {
    let mut out = Vec::new();
    for (i, share) in lens_neurons(effects) {
        out.push(Lens {
            neuron: top[i],
            rank: i + 1,
            direct: effects[i].direct,
            cumulative_share: share,
            period: period(i)?,
        });
    }
    Ok(out)
}

/// The lens of the top direct-effect neurons among `top` (with their `effects`), over
/// `answer_tokens` (the tokens of the answers first..=last).
pub fn logit_lens(
    model: &Model,
    top: &[Neuron],
    effects: &[NeuronEffect],
    answer_tokens: &[u32],
) -> Result<Vec<Lens>> {
    let ids = Tensor::new(answer_tokens, model.device())?;
    let mut planner = rustfft::FftPlanner::new();
    lens_rows(top, effects, &mut |i| {
        direction_period(model, top[i], &ids, &mut planner)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn de(direct: f64) -> NeuronEffect {
        NeuronEffect {
            direct,
            ..Default::default()
        }
    }

    #[test]
    fn the_lens_reads_the_largest_direct_effects_up_to_eighty_percent() {
        // Positive DE 10: 5 + 3 reach 80 %; the negative one is never read.
        let e = [de(1.0), de(5.0), de(-4.0), de(3.0), de(1.0)];
        let got = lens_neurons(&e);
        assert_eq!(got.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 3]);
        assert!((got[1].1 - 0.8).abs() < 1e-12);
    }
}
