//! The model runs of the neuron stage, one function per experiment: attribution scores from
//! one forward and one backward per batch of pairs; per-neuron exact patches, total and direct
//! effects; mean activations; forwards with neurons mean-ablated or replaced by their fits;
//! the preactivation grid.
//!
//! A neuron is `(layer, index)` at `mlp.hook_post` (its activation) or `mlp.hook_pre` (its
//! preactivation), always at the last token, where the answer is predicted.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};
use helixlab_model::{
    Batch, Capture, Edit, ForwardRequest, HookPoint, Intervention, Logits, Model,
};
use helixlab_model::{KvCache, Positions, Tokenizer};
use helixlab_pipeline::Pipeline;
use helixlab_study::answers::{AnswerScoring, Scored};
use helixlab_study::pairs::{argmax, clean_run_request, prompt_ids, Pair, ProblemInfo};

use crate::neuron_fit::NeuronFit;
use crate::Result;

/// A neuron: layer and index within its MLP.
pub type Neuron = (usize, usize);

fn encode<'a>(
    model: &Model,
    tok: &Tokenizer,
    p: &Pipeline,
    probs: impl IntoIterator<Item = &'a ProblemInfo>,
) -> Result<Batch> {
    Ok(model.batch(&prompt_ids(tok, p, probs)?)?)
}

fn f32s2(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(t.to_dtype(DType::F32)?.to_vec2::<f32>()?)
}

/// `(b, 1, d)` captured at the last token as `(b, d)` rows.
fn last_rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    f32s2(&t.squeeze(1)?)
}

/// A request capturing `mlp.hook_post` of every layer at the last token.
fn with_posts(req: ForwardRequest, n_layers: usize) -> ForwardRequest {
    posts_at(req, n_layers, &Positions::last())
}

/// A request capturing `mlp.hook_post` of every layer at `at`.
fn posts_at(mut req: ForwardRequest, n_layers: usize, at: &Positions) -> ForwardRequest {
    for l in 0..n_layers {
        req = req.capture(HookPoint::MlpPost(l), at.clone());
    }
    req
}

/// One forward and one backward of `batch` under `req` (a capture of `ln_final` at the last
/// token added): the gradient of the sum of `answers`' logits (one token per sequence, at the
/// last position) with respect to every neuron's activation (`mlp.hook_post`) at the last
/// token, per layer `(b, 1, d_mlp)`. The logits are the answers' only
/// ([`Model::token_logits`]), not the whole vocabulary's.
pub fn last_token_gradients(
    model: &Model,
    batch: &Batch,
    req: ForwardRequest,
    answers: &[u32],
) -> Result<(helixlab_model::ForwardOutput, Vec<Tensor>)> {
    let targets: Vec<Capture> = (0..model.config().n_layers)
        .map(|l| Capture {
            hook: HookPoint::MlpPost(l),
            positions: Positions::last(),
        })
        .collect();
    let req = req.capture(HookPoint::LnFinal, Positions::last());
    let at = req.captures.len() - 1;
    Ok(model.forward_with_grad(batch, &req, &targets, |out| {
        let h = out.captures[at].squeeze(1)?;
        model
            .token_logits(&h, answers)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?
            .sum_all()
    })?)
}

/// Attribution patching: for every neuron, the sum over `pairs` of
/// d(logit of the clean answer in the corrupt run) / d(activation) x (clean - corrupt
/// activation), layer-major (`layer * d_mlp + neuron`). The gradients are of the batch's sum of
/// logits, so a batch adds its pairs' terms: nothing is averaged.
pub fn attribution(
    model: &Model,
    tok: &Tokenizer,
    p: &Pipeline,
    pairs: &[Pair],
    on_batch: &mut dyn FnMut(usize),
) -> Result<Vec<f64>> {
    let cfg = model.config();
    let (n_layers, d_mlp) = (cfg.n_layers, cfg.d_mlp);
    let mut score = vec![0f64; n_layers * d_mlp];
    for chunk in pairs.chunks(p.extract.batch_size.max(1)) {
        // Clean prompts that share a prefix (the paper's instruction) run it once.
        let clean = helixlab_study::forward_prompts(
            p,
            model,
            &prompt_ids(tok, p, chunk.iter().map(|x| &x.clean))?,
            &with_posts(ForwardRequest::new(), n_layers),
        )?;
        let answers: Vec<u32> = chunk.iter().map(|x| x.clean.answer_token).collect();
        let corrupt_batch = encode(model, tok, p, chunk.iter().map(|x| &x.corrupt))?;
        let (corrupt, grads) = last_token_gradients(
            model,
            &corrupt_batch,
            with_posts(ForwardRequest::new(), n_layers),
            &answers,
        )?;
        for (l, g) in grads.iter().enumerate() {
            let g = last_rows(g)?;
            let ca = last_rows(clean.capture(HookPoint::MlpPost(l))?)?;
            let xa = last_rows(corrupt.capture(HookPoint::MlpPost(l))?)?;
            for i in 0..chunk.len() {
                for j in 0..d_mlp {
                    score[l * d_mlp + j] += g[i][j] as f64 * (ca[i][j] - xa[i][j]) as f64;
                }
            }
        }
        on_batch(chunk.len());
    }
    Ok(score)
}

/// What patching one neuron does, summed or averaged over the pairs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NeuronEffect {
    /// Exact patching in attribution's direction, summed over pairs (comparable to the
    /// attribution score): the corrupt run with the neuron's clean activation, change of the
    /// clean answer's logit.
    pub exact: f64,
    /// Total effect, mean over pairs: the clean run with the neuron's corrupt activation,
    /// change of the corrupt answer's logit (the components stage's TE).
    pub total: f64,
    /// Direct effect, mean over pairs: (corrupt - clean activation) x the neuron's W_out row
    /// added to the clean final residual before the final norm, change of the corrupt
    /// answer's logit.
    pub direct: f64,
    /// The total effect's change of log P(corrupt answer), mean over pairs: the whole answer's
    /// where it is several tokens (teacher forced), else the answer token's log-softmax.
    pub total_logprob: f64,
}

/// One neuron's value for every sequence of a batch, `(b, 1, 1)`.
fn one_value(model: &Model, v: Vec<f32>) -> Result<Tensor> {
    let b = v.len();
    Ok(Tensor::from_vec(v, (b, 1, 1), model.device())?.to_dtype(model.dtype())?)
}

/// A clean or corrupt run of a batch, as the neuron patches resume from it.
struct BaseRun<'a> {
    batch: &'a Batch,
    /// Its output, with the residual stream entering every block.
    out: &'a helixlab_model::ForwardOutput,
    /// How it is scored (the corrupt run: its prompts; the clean run: the corrupt answers).
    scoring: &'a AnswerScoring<'a>,
    /// Its scores.
    scored: &'a Scored,
    /// Every block's keys and values over the batch (`None` for a padded batch).
    cache: Option<&'a KvCache>,
}

/// `base` resumed at neuron `(l, n)`'s block with that neuron set to `values` at the prompt's
/// last token: the change of each sequence's `targets` logit there and of its log P(target
/// answer), each summed. Only the positions from the prompt's last token on run when the batch
/// has a cache (the earlier positions cannot see the patch).
fn neuron_patch(
    model: &Model,
    base: &BaseRun,
    (l, n): Neuron,
    values: Vec<f32>,
    targets: &[u32],
) -> Result<(f64, f64)> {
    let resid = base.out.capture(HookPoint::ResidPre(l))?;
    let req = base.scoring.request(
        ForwardRequest::new()
            .intervene(Intervention {
                hook: HookPoint::MlpPost(l),
                positions: base.scoring.prompt_last(),
                index: Some(vec![n]),
                edit: Edit::Replace,
                value: one_value(model, values)?,
            })
            .resume(l, resid.clone()),
    );
    let out = helixlab_study::patched_forward(model, base.batch, base.cache, &req)?;
    let scored = base.scoring.score(&out)?;
    let (clean, patched) = (base.scored, &scored);
    Ok(targets
        .iter()
        .enumerate()
        .fold((0.0, 0.0), |(d, lp), (i, &t)| {
            let logit = |s: &Scored| s.first[i][t as usize] as f64;
            (
                d + logit(patched) - logit(clean),
                lp + patched.logprob(i, t) - clean.logprob(i, t),
            )
        }))
}

/// Exact patches, total and direct effects of each of `neurons` over `pairs`.
pub fn neuron_effects(
    model: &Model,
    tok: &Tokenizer,
    p: &Pipeline,
    pairs: &[Pair],
    neurons: &[Neuron],
    on_batch: &mut dyn FnMut(usize),
) -> Result<Vec<NeuronEffect>> {
    let cfg = model.config();
    let n_layers = cfg.n_layers;
    let mut effects = vec![NeuronEffect::default(); neurons.len()];
    let mut directions: BTreeMap<usize, Tensor> = BTreeMap::new();
    for &(l, _) in neurons {
        if let std::collections::btree_map::Entry::Vacant(e) = directions.entry(l) {
            e.insert(model.neuron_directions(l)?.to_dtype(DType::F32)?);
        }
    }
    for chunk in pairs.chunks(p.extract.batch_size.max(1)) {
        // The clean run, patched for the total effect, runs the corrupt answer after the prompt
        // where it is several tokens; the corrupt run, patched toward the clean answer's first
        // token (attribution's direction), is the prompt alone.
        let clean_scoring = AnswerScoring::corrupt(model, chunk);
        let corrupt_scoring = AnswerScoring::prompts(model);
        let at = clean_scoring.prompt_last();
        let clean_ids = prompt_ids(tok, p, chunk.iter().map(|x| &x.clean))?;
        let clean_batch = model.batch(&clean_scoring.sequences(clean_ids))?;
        let corrupt_batch = encode(model, tok, p, chunk.iter().map(|x| &x.corrupt))?;
        // Both runs record their keys and values: a neuron patch runs the positions from the
        // prompt's last token on.
        let (clean, clean_cache) = helixlab_study::clean_forward(
            p,
            model,
            &clean_batch,
            &clean_scoring.request(posts_at(clean_run_request(n_layers), n_layers, &at)),
        )?;
        let (corrupt, corrupt_cache) = helixlab_study::clean_forward(
            p,
            model,
            &corrupt_batch,
            &corrupt_scoring.request(with_posts(clean_run_request(n_layers), n_layers)),
        )?;
        let (clean_scored, corrupt_scored) = (
            clean_scoring.score(&clean)?,
            corrupt_scoring.score(&corrupt)?,
        );
        let final_clean = clean_scoring.final_residual(&clean)?.to_dtype(DType::F32)?;
        let (clean_t, corrupt_t): (Vec<u32>, Vec<u32>) = chunk
            .iter()
            .map(|x| (x.clean.answer_token, x.corrupt.answer_token))
            .unzip();
        for (k, &(l, n)) in neurons.iter().enumerate() {
            let ca: Vec<f32> = last_rows(clean.capture(HookPoint::MlpPost(l))?)?
                .iter()
                .map(|r| r[n])
                .collect();
            let xa: Vec<f32> = last_rows(corrupt.capture(HookPoint::MlpPost(l))?)?
                .iter()
                .map(|r| r[n])
                .collect();
            // Exact, in attribution's direction: the corrupt run with the clean activation.
            let corrupt_run = BaseRun {
                batch: &corrupt_batch,
                out: &corrupt,
                scoring: &corrupt_scoring,
                scored: &corrupt_scored,
                cache: corrupt_cache.as_ref(),
            };
            effects[k].exact += neuron_patch(model, &corrupt_run, (l, n), ca.clone(), &clean_t)?.0;
            // Total effect: the clean run with the corrupt activation.
            let clean_run = BaseRun {
                batch: &clean_batch,
                out: &clean,
                scoring: &clean_scoring,
                scored: &clean_scored,
                cache: clean_cache.as_ref(),
            };
            let (total, logprob) = neuron_patch(model, &clean_run, (l, n), xa.clone(), &corrupt_t)?;
            effects[k].total += total;
            effects[k].total_logprob += logprob;
            // Direct effect: the change through W_out, straight to the final norm (at the
            // prompt's last token only, so the answer tokens after it are unchanged).
            let delta: Vec<f32> = xa.iter().zip(&ca).map(|(x, c)| x - c).collect();
            let delta = Tensor::from_vec(delta, (chunk.len(), 1), model.device())?;
            let row = directions[&l].narrow(0, n, 1)?;
            let resid = (&final_clean + delta.broadcast_mul(&row)?)?;
            let out = f32s2(&model.logits_from_final_residual(&resid)?)?;
            for (i, &t) in corrupt_t.iter().enumerate() {
                let t = t as usize;
                effects[k].direct += (out[i][t] - clean_scored.first[i][t]) as f64;
            }
        }
        on_batch(chunk.len());
    }
    let n = pairs.len().max(1) as f64;
    for e in &mut effects {
        e.total /= n;
        e.direct /= n;
        e.total_logprob /= n;
    }
    Ok(effects)
}

/// The mean activation (`mlp.hook_post`, last token) of every neuron over `probs`, per layer.
pub fn mean_activations(
    model: &Model,
    tok: &Tokenizer,
    p: &Pipeline,
    probs: &[&ProblemInfo],
) -> Result<Vec<Vec<f64>>> {
    let cfg = model.config();
    let mut sum = vec![vec![0f64; cfg.d_mlp]; cfg.n_layers];
    for chunk in probs.chunks(p.extract.batch_size.max(1)) {
        let out = model.forward(
            &encode(model, tok, p, chunk.iter().copied())?,
            &with_posts(ForwardRequest::new(), cfg.n_layers),
        )?;
        for (l, s) in sum.iter_mut().enumerate() {
            for row in last_rows(out.capture(HookPoint::MlpPost(l))?)? {
                for (j, v) in row.into_iter().enumerate() {
                    s[j] += v as f64;
                }
            }
        }
    }
    let n = probs.len().max(1) as f64;
    Ok(sum
        .into_iter()
        .map(|s| s.into_iter().map(|v| v / n).collect())
        .collect())
}

/// How the neurons of an evaluation run are set: the `kept` ones keep their own activation (or,
/// with a fit, get the fit's preactivation); every other neuron is set to its mean.
pub struct Keep<'a> {
    /// The neurons kept.
    pub kept: &'a [Neuron],
    /// Fits of kept neurons whose preactivation is replaced by the fit.
    pub fits: Option<&'a BTreeMap<Neuron, NeuronFit>>,
}

/// The logit of each problem's answer at the last token, nothing edited: what [`evaluate`]
/// measures changes against (computed once for every point of a sweep).
pub fn answer_logits(
    model: &Model,
    tok: &Tokenizer,
    p: &Pipeline,
    probs: &[&ProblemInfo],
) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(probs.len());
    for chunk in probs.chunks(p.extract.batch_size.max(1)) {
        let batch = encode(model, tok, p, chunk.iter().copied())?;
        let req = ForwardRequest::new().logits(Logits::Last);
        let logits = f32s2(&model.forward(&batch, &req)?.logits.expect("asked"))?;
        out.extend(
            chunk
                .iter()
                .zip(logits)
                .map(|(pr, l)| l[pr.answer_token as usize]),
        );
    }
    Ok(out)
}

/// Accuracy and mean logit difference (answer logit with the edits minus `base`, its value
/// without them, from [`answer_logits`]) over `probs` under `keep`, mean activations `means`.
pub fn evaluate(
    model: &Model,
    tok: &Tokenizer,
    p: &Pipeline,
    (probs, base): (&[&ProblemInfo], &[f32]),
    means: &[Vec<f64>],
    keep: &Keep,
) -> Result<(f64, f64)> {
    let cfg = model.config();
    let mut kept_by_layer: Vec<Vec<usize>> = vec![Vec::new(); cfg.n_layers];
    for &(l, n) in keep.kept {
        kept_by_layer[l].push(n);
    }
    let (mut correct, mut diff) = (0usize, 0f64);
    let size = p.extract.batch_size.max(1);
    for (c, chunk) in probs.chunks(size).enumerate() {
        let batch = encode(model, tok, p, chunk.iter().copied())?;
        let base = &base[c * size..c * size + chunk.len()];
        let b = chunk.len();
        let mut req = ForwardRequest::new().logits(Logits::Last);
        for (l, kept) in kept_by_layer.iter().enumerate() {
            let ablate: Vec<usize> = (0..cfg.d_mlp).filter(|j| !kept.contains(j)).collect();
            if !ablate.is_empty() {
                let row: Vec<f32> = ablate.iter().map(|&j| means[l][j] as f32).collect();
                let value = Tensor::from_vec(row.repeat(b), (b, 1, ablate.len()), model.device())?
                    .to_dtype(model.dtype())?;
                req = req.intervene(Intervention {
                    hook: HookPoint::MlpPost(l),
                    positions: Positions::last(),
                    index: Some(ablate),
                    edit: Edit::Replace,
                    value,
                });
            }
            if let (Some(fits), false) = (keep.fits, kept.is_empty()) {
                let mut v = Vec::with_capacity(b * kept.len());
                for pr in chunk {
                    let bv = pr.b.unwrap_or(0);
                    v.extend(kept.iter().map(|&j| fits[&(l, j)].predict(pr.a, bv) as f32));
                }
                let value = Tensor::from_vec(v, (b, 1, kept.len()), model.device())?
                    .to_dtype(model.dtype())?;
                req = req.intervene(Intervention {
                    hook: HookPoint::MlpPre(l),
                    positions: Positions::last(),
                    index: Some(kept.clone()),
                    edit: Edit::Replace,
                    value,
                });
            }
        }
        let out = f32s2(&model.forward(&batch, &req)?.logits.expect("asked"))?;
        for (i, pr) in chunk.iter().enumerate() {
            let t = pr.answer_token as usize;
            correct += usize::from(argmax(&out[i]) == t);
            diff += (out[i][t] - base[i]) as f64;
        }
    }
    let n = probs.len().max(1) as f64;
    Ok((correct as f64 / n, diff / n))
}

/// The preactivation (`mlp.hook_pre`, last token) of each of `neurons` for each of `probs`:
/// `values[k][i]` for neuron k, problem i.
pub fn preactivations(
    model: &Model,
    tok: &Tokenizer,
    p: &Pipeline,
    probs: &[&ProblemInfo],
    neurons: &[Neuron],
    on_batch: &mut dyn FnMut(usize),
) -> Result<Vec<Vec<f64>>> {
    let mut layers: Vec<usize> = neurons.iter().map(|x| x.0).collect();
    layers.sort_unstable();
    layers.dedup();
    let mut values = vec![Vec::with_capacity(probs.len()); neurons.len()];
    for chunk in probs.chunks(p.extract.batch_size.max(1)) {
        let mut req = ForwardRequest::new();
        for &l in &layers {
            req = req.capture(HookPoint::MlpPre(l), Positions::last());
        }
        let out = model.forward(&encode(model, tok, p, chunk.iter().copied())?, &req)?;
        let mut rows = BTreeMap::new();
        for &l in &layers {
            rows.insert(l, last_rows(out.capture(HookPoint::MlpPre(l))?)?);
        }
        for (k, &(l, n)) in neurons.iter().enumerate() {
            values[k].extend(rows[&l].iter().map(|r| r[n] as f64));
        }
        on_batch(chunk.len());
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::neuron_fit::Term;
    use helixlab_model::LoadOptions;

    fn toy() -> (Model, Tokenizer, Pipeline) {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/models/toy-adder");
        let model = Model::load(&dir, &LoadOptions::default()).unwrap();
        let tok = Tokenizer::for_checkpoint(&dir).unwrap();
        let text = format!(
            "[model]\ndir = \"{}\"\n[task]\nkind = \"addition\"\ntemplate = \"{{a}}+{{b}}=\"\n\
             a = [0, 9]\nb = [0, 9]\n[extract]\nsites = [\"hook_resid_post\"]\nlayers = \"all\"\n\
             positions = [\"a\"]\n[output]\ndir = \"unused\"\n",
            dir.display()
        );
        let p = Pipeline::from_toml(&text, std::path::Path::new("test.toml")).unwrap();
        (model, tok, p)
    }

    fn problem(tok: &Tokenizer, a: i64, b: i64) -> ProblemInfo {
        ProblemInfo {
            prompt_id: 0,
            a,
            b: Some(b),
            answer: a + b,
            prompt: format!("{a}+{b}="),
            answer_token: tok.encode(&(a + b).to_string(), false).unwrap()[0],
            answer_logit: 0.0,
            token_layout: "1,1".into(),
            answer_tokens: tok.encode(&(a + b).to_string(), false).unwrap(),
        }
    }

    /// Every neuron kept, each "fitted" by its own exact preactivation (a fit that is only a
    /// bias, on the one problem it is evaluated on): the fits patched in change nothing.
    #[test]
    fn fits_equal_to_the_real_preactivations_change_nothing() {
        let (model, tok, p) = toy();
        let cfg = model.config().clone();
        let pr = problem(&tok, 12, 34);
        let all: Vec<Neuron> = (0..cfg.n_layers)
            .flat_map(|l| (0..cfg.d_mlp).map(move |n| (l, n)))
            .collect();
        let pre = preactivations(&model, &tok, &p, &[&pr], &all, &mut |_| ()).unwrap();
        let fits: BTreeMap<Neuron, NeuronFit> = all
            .iter()
            .zip(&pre)
            .map(|(&n, v)| {
                let term = Term {
                    operand: "a",
                    period: 10.0,
                    alpha: 0.0,
                    beta: 0.0,
                };
                let fit = NeuronFit {
                    linear: [0.0; 3],
                    terms: vec![term],
                    bias: v[0],
                    nrmse: 0.0,
                };
                (n, fit)
            })
            .collect();
        let means = vec![vec![0.0; cfg.d_mlp]; cfg.n_layers];
        let keep = Keep {
            kept: &all,
            fits: Some(&fits),
        };
        let base = answer_logits(&model, &tok, &p, &[&pr]).unwrap();
        let (acc, diff) = evaluate(&model, &tok, &p, (&[&pr], &base), &means, &keep).unwrap();
        assert!(diff.abs() < 1e-5, "{diff}");
        assert_eq!(acc, 1.0);
        // The same fits shifted by one: the answer's logit moves.
        let shifted: BTreeMap<Neuron, NeuronFit> = fits
            .into_iter()
            .map(|(n, mut f)| {
                f.bias += 1.0;
                (n, f)
            })
            .collect();
        let keep = Keep {
            kept: &all,
            fits: Some(&shifted),
        };
        let (_, diff) = evaluate(&model, &tok, &p, (&[&pr], &base), &means, &keep).unwrap();
        assert!(diff.abs() > 1e-2, "{diff}");
    }
}
