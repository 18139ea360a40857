//! The training loop: AdamW with warm-up and cosine decay, global gradient clipping,
//! loss on the last position only, periodic evaluation on the training and held-out sums.

use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use crate::data::{addition, Example, Sampler, Split};
use crate::model::TinyGpt2;
use crate::recipe::Recipe;

/// One line of the training log.
#[derive(Clone, Debug, Serialize)]
pub struct StepLog {
    /// Step (1-based, after the update).
    pub step: usize,
    /// Mean cross-entropy of the step's batch.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Addition accuracy on the training split (evaluation steps only).
    pub train_accuracy: Option<f64>,
    /// Addition accuracy on the held-out split (evaluation steps only).
    pub heldout_accuracy: Option<f64>,
    /// Seconds since the start.
    pub elapsed_s: f64,
}

/// A trained model and how it got there.
pub struct Trained {
    /// The model.
    pub model: TinyGpt2,
    /// The addition split it was trained on.
    pub split: Split,
    /// Every step's log line.
    pub log: Vec<StepLog>,
    /// Wall time of the loop, seconds.
    pub wall_s: f64,
}

impl Trained {
    /// The last evaluation: (train accuracy, held-out accuracy).
    pub fn final_accuracy(&self) -> (f64, f64) {
        self.log
            .iter()
            .rev()
            .find_map(|l| Some((l.train_accuracy?, l.heldout_accuracy?)))
            .unwrap_or((f64::NAN, f64::NAN))
    }
}

fn to_tensors(batch: &[Example]) -> candle_core::Result<(Tensor, Tensor)> {
    let ids: Vec<u32> = batch.iter().flat_map(|e| e.input).collect();
    let targets: Vec<u32> = batch.iter().map(|e| e.target).collect();
    Ok((
        Tensor::from_vec(ids, (batch.len(), 4), &Device::Cpu)?,
        Tensor::from_vec(targets, batch.len(), &Device::Cpu)?,
    ))
}

/// Fraction of `pairs` whose argmax answer is a + b.
pub fn addition_accuracy(model: &TinyGpt2, pairs: &[(u32, u32)]) -> candle_core::Result<f64> {
    let mut correct = 0usize;
    for chunk in pairs.chunks(2000) {
        let examples: Vec<Example> = chunk.iter().map(|&(a, b)| addition(a, b)).collect();
        let (ids, targets) = to_tensors(&examples)?;
        let pred = model.forward_last(&ids)?.detach().argmax(1)?;
        correct += pred
            .eq(&targets)?
            .to_dtype(candle_core::DType::F32)?
            .sum_all()?
            .to_scalar::<f32>()? as usize;
    }
    Ok(correct as f64 / pairs.len() as f64)
}

/// Trains `recipe` from `seed`, calling `on_step` after every step (for progress display).
/// `steps` overrides the recipe's step count (the schedule stretches to it). Deterministic
/// for a seed on a given machine and thread count.
pub fn train(
    recipe: &Recipe,
    seed: u64,
    steps: Option<usize>,
    mut on_step: impl FnMut(&StepLog),
) -> candle_core::Result<Trained> {
    let recipe = &Recipe {
        steps: steps.unwrap_or(recipe.steps),
        ..recipe.clone()
    };
    let steps = recipe.steps;
    let mut rng = StdRng::seed_from_u64(seed);
    let split = Split::new(&mut rng, recipe.train_fraction);
    let model = TinyGpt2::init(recipe.shape, &mut rng)?;
    let sampler = Sampler::new(&split, recipe.auxiliary_tasks);
    let vars = model.vars();
    let params = |weight_decay| ParamsAdamW {
        lr: recipe.lr,
        beta1: recipe.betas.0,
        beta2: recipe.betas.1,
        eps: 1e-8,
        weight_decay,
    };
    // Vectors (biases, layer-norm gains and shifts) optionally escape the decay.
    let (matrices, vectors): (Vec<_>, Vec<_>) = vars
        .iter()
        .cloned()
        .partition(|v| recipe.decay_vectors || v.rank() >= 2);
    let mut opt = AdamW::new(matrices, params(recipe.weight_decay))?;
    let mut opt_vectors = AdamW::new(vectors, params(0.0))?;
    let (train_pairs, held_pairs) = (split.training(), split.held_out());
    let start = Instant::now();
    let mut log = Vec::with_capacity(steps);
    for step in 0..steps {
        let lr = recipe.lr_at(step);
        opt.set_learning_rate(lr);
        opt_vectors.set_learning_rate(lr);
        let batch = sampler.batch(&mut rng, recipe.batch_addition, recipe.batch_auxiliary);
        let (ids, targets) = to_tensors(&batch)?;
        let logits = model.forward_last(&ids)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &targets)?;
        let mut grads = loss.backward()?;
        let mut sq = 0f64;
        for v in &vars {
            if let Some(g) = grads.get(v) {
                sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
        }
        let norm = sq.sqrt();
        if norm > recipe.grad_clip {
            let scale = recipe.grad_clip / (norm + 1e-6);
            for v in &vars {
                if let Some(g) = grads.remove(v) {
                    grads.insert(v, (g * scale)?);
                }
            }
        }
        opt.step(&grads)?;
        opt_vectors.step(&grads)?;
        let evaluate = (step + 1) % recipe.eval_every == 0 || step + 1 == steps;
        let (train_accuracy, heldout_accuracy) = if evaluate {
            (
                Some(addition_accuracy(&model, &train_pairs)?),
                Some(addition_accuracy(&model, &held_pairs)?),
            )
        } else {
            (None, None)
        };
        let line = StepLog {
            step: step + 1,
            loss: loss.to_scalar::<f32>()? as f64,
            lr,
            grad_norm: norm,
            train_accuracy,
            heldout_accuracy,
            elapsed_s: start.elapsed().as_secs_f64(),
        };
        on_step(&line);
        log.push(line);
    }
    Ok(Trained {
        model,
        split,
        log,
        wall_s: start.elapsed().as_secs_f64(),
    })
}
