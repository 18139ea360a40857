//! Training recipes: the settings that, measured in a PyTorch prototype, make a 2-layer
//! GPT-2 learn addition with periodic number features.

use serde::{Deserialize, Serialize};

use crate::model::Shape;
use crate::vocab::VOCAB_SIZE;

/// Everything that defines a training run besides the seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    /// Name (`adder-decimal`, `adder-plain`).
    pub name: String,
    /// Train on the auxiliary tasks too (they make T = 10 the dominant period).
    pub auxiliary_tasks: bool,
    /// Model sizes.
    pub shape: Shape,
    /// Optimiser steps.
    pub steps: usize,
    /// Addition examples per batch.
    pub batch_addition: usize,
    /// Auxiliary examples per batch (when auxiliary_tasks).
    pub batch_auxiliary: usize,
    /// Fraction of the 10,000 addition problems used for training.
    pub train_fraction: f64,
    /// Peak learning rate (AdamW).
    pub lr: f64,
    /// AdamW betas.
    pub betas: (f64, f64),
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Decay vectors (biases, layer-norm parameters) too, not only matrices.
    #[serde(default = "yes")]
    pub decay_vectors: bool,
    /// Linear warm-up steps.
    pub warmup_steps: usize,
    /// Cosine decay ends at this fraction of the peak rate.
    pub final_lr_fraction: f64,
    /// Global gradient-norm clip.
    pub grad_clip: f64,
    /// Evaluate every this many steps.
    pub eval_every: usize,
}

fn yes() -> bool {
    true
}

impl Recipe {
    /// The recipe names `helixlab train --recipe` accepts.
    pub const NAMES: &'static str = "adder-decimal, adder-plain";

    /// A named recipe.
    pub fn named(name: &str) -> Option<Self> {
        let base = Recipe {
            name: name.to_string(),
            auxiliary_tasks: true,
            shape: Shape {
                layers: 2,
                d_model: 128,
                heads: 4,
                vocab: VOCAB_SIZE,
                positions: 4,
            },
            steps: 2000,
            batch_addition: 512,
            batch_auxiliary: 256,
            train_fraction: 0.6,
            lr: 1e-3,
            betas: (0.9, 0.98),
            weight_decay: 1.0,
            decay_vectors: true,
            warmup_steps: 100,
            final_lr_fraction: 0.1,
            grad_clip: 1.0,
            eval_every: 250,
        };
        match name {
            "adder-decimal" => Some(base),
            // Without the auxiliary tasks addition is learnt much later: with the decimal
            // settings held-out accuracy was 44 % at step 1,500 of 2,000 and 38 % at 2,500 of
            // 4,000. Two changes get it there: a peak rate of 4e-3 over 4,000 steps, and no
            // weight decay on vectors (layer-norm gains, biases), which decay 1.0 otherwise
            // pulls towards zero every step (measured at 1,500 steps, lr 3e-3: 56 % held out
            // with them decayed, 67 % without; at 4,000 steps: 97.75 %).
            "adder-plain" => Some(Recipe {
                auxiliary_tasks: false,
                steps: 4000,
                lr: 4e-3,
                decay_vectors: false,
                ..base
            }),
            _ => None,
        }
    }

    /// Learning rate at `step` (0-based): linear warm-up, then cosine decay to
    /// `final_lr_fraction` of the peak at the last step.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = (self.steps - self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.lr * (self.final_lr_fraction + (1.0 - self.final_lr_fraction) * cosine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_ten_percent() {
        let r = Recipe::named("adder-decimal").unwrap();
        assert!((r.lr_at(0) - 1e-5).abs() < 1e-12);
        assert!((r.lr_at(99) - 1e-3).abs() < 1e-12);
        assert!((r.lr_at(100) - 1e-3).abs() < 1e-12);
        assert!((r.lr_at(r.steps) - 1e-4).abs() < 1e-12);
        assert!(r.lr_at(1300) < r.lr_at(1200));
        assert!(!Recipe::named("adder-plain").unwrap().auxiliary_tasks);
        assert!(Recipe::named("adder").is_none());
    }
}
