//! `helixlab components` (docs/method.md E5): which MLPs, attention layers and heads move the
//! answer, directly or through later layers, and what they carry.
//!
//! For every last-token pair (clean and corrupt problems with different answers), at the last
//! position:
//! - total effect (TE): the clean run with one component's output replaced by the corrupt
//!   run's (`hook_mlp_out`, `hook_attn_out`, or one head's `attn.hook_z`), everything after it
//!   recomputed (resumed at the component's block);
//! - direct effect (DE): the component's change (corrupt - clean output; for a head, the change
//!   of its layer's attention output when only that head's z is patched) added to the clean
//!   final residual stream before the final norm, so it reaches the logits only directly. No
//!   later block runs.
//!
//! Then heads and MLPs are ranked by TE and the top k patched together (`heads_top`,
//! `mlps_top`, with k in the `layer` column); the MLP circuit is the smallest top-k set
//! reaching `patch.circuit_fraction` of the best joint patch. The top heads and the circuit
//! MLPs are fitted with helix(a,b), helix(a+b), helix(a,b,a+b) (on the outputs of
//! `patch.component_fit_problems` correct problems, PCA to 100) and the fits patched in; heads
//! get the paper's type scores (`component_roles.parquet`).
//!
//! Tables: components.parquet (one row per pair x component x effect), components_summary
//! (means), component_roles (ranks, DE/TE, fit ratios, head types, circuit membership).

use std::collections::{BTreeMap, BTreeSet};

use candle_core::{DType, Tensor};
use helixlab_model::{Batch, ForwardOutput, KvCache, Model, Positions, Tokenizer};
use helixlab_model::{Edit, ForwardRequest, HookPoint, Intervention};
use helixlab_numeric::multi_helix::{MultiFit, MultiHelix};
use helixlab_numeric::{split, Pca};
use helixlab_pipeline::{Pipeline, TaskKind};
use helixlab_store::stage::{Outcome, Progress};
use helixlab_store::table::{Table, Values};
use helixlab_study::answers::{AnswerScoring, Scored};
use ndarray::Array2;

use crate::effects::{means_table, Effect, EffectKey, EffectMean, EffectRows, Patched};
use crate::head_attention::head_attention;
use crate::inputs::{load, prompt_ids, read_pairs};
use crate::pairs::{problems, Pair, ProblemInfo};
use crate::path_patching::{path_patch_batch, PathRows};
use crate::{PatchError, Result};
use helixlab_pipeline::Position;
use helixlab_store::shard::Shard;
use helixlab_store::{tables, Frame, Manifest, RunLayout, StageRun};
use std::path::Path;

/// A component whose output is patched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Component {
    /// The MLP of a layer (`hook_mlp_out`).
    Mlp(usize),
    /// The attention of a layer (`hook_attn_out`).
    Attn(usize),
    /// One head (`attn.hook_z`, that head only).
    Head(usize, usize),
}

impl Component {
    fn layer(self) -> usize {
        match self {
            Component::Mlp(l) | Component::Attn(l) | Component::Head(l, _) => l,
        }
    }

    fn key(self, effect: Effect) -> EffectKey {
        let (component, head) = match self {
            Component::Mlp(_) => (Patched::Mlp, None),
            Component::Attn(_) => (Patched::Attn, None),
            Component::Head(_, h) => (Patched::Head, Some(h as i64)),
        };
        EffectKey {
            component,
            layer: self.layer() as u32,
            head,
            effect,
        }
    }
}

/// What one forward captured at the prompt's last position, per layer.
struct LastCaptures {
    /// The prompt's last position in each sequence (the sequence's last unless answers were
    /// appended).
    at: Positions,
    /// The corrupt answer scored (for the corrupt prompts' own run, only `first` is read).
    scored: Scored,
    /// `hook_resid_pre` of every layer, every position (to resume from); clean runs only.
    resid_pre: Vec<Tensor>,
    /// Every block's keys and values, for patched forwards that run the positions from the
    /// patched one on (`helixlab_study::clean_forward`); clean runs only.
    cache: Option<KvCache>,
    /// `(b, 1, d)`.
    attn_out: Vec<Tensor>,
    /// `(b, 1, d)`.
    mlp_out: Vec<Tensor>,
    /// `(b, 1, heads, d_head)`.
    z: Vec<Tensor>,
    /// The last block's output, `(b, d)`.
    final_resid: Tensor,
}

fn capture_last(
    model: &Model,
    batch: &Batch,
    scoring: &AnswerScoring,
    with_resid: bool,
    record: Option<&Pipeline>,
) -> Result<LastCaptures> {
    let n = model.config().n_layers;
    let at = scoring.prompt_last();
    let mut req = ForwardRequest::new();
    for l in 0..n {
        req = req
            .capture(HookPoint::AttnOut(l), at.clone())
            .capture(HookPoint::MlpOut(l), at.clone())
            .capture(HookPoint::AttnZ(l), at.clone());
    }
    req = scoring.request(req);
    if with_resid {
        for l in 0..n {
            req = req.capture(HookPoint::ResidPre(l), Positions::All);
        }
    }
    let (out, cache) = match record {
        Some(p) => helixlab_study::clean_forward(p, model, batch, &req)?,
        None => (model.forward(batch, &req)?, None),
    };
    let get = |hook: HookPoint| -> Result<Tensor> { Ok(out.capture(hook)?.clone()) };
    Ok(LastCaptures {
        cache,
        at,
        scored: scoring.score(&out)?,
        attn_out: (0..n)
            .map(|l| get(HookPoint::AttnOut(l)))
            .collect::<Result<_>>()?,
        mlp_out: (0..n)
            .map(|l| get(HookPoint::MlpOut(l)))
            .collect::<Result<_>>()?,
        z: (0..n)
            .map(|l| get(HookPoint::AttnZ(l)))
            .collect::<Result<_>>()?,
        final_resid: scoring.final_residual(&out)?,
        resid_pre: if with_resid {
            (0..n)
                .map(|l| get(HookPoint::ResidPre(l)))
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        },
    })
}

impl LastCaptures {
    /// A patched forward of the clean batch, over the clean run's cache when there is one.
    fn forward(&self, model: &Model, batch: &Batch, req: &ForwardRequest) -> Result<ForwardOutput> {
        helixlab_study::patched_forward(model, batch, self.cache.as_ref(), req)
    }
}

/// The intervention that puts `value` in place of `component`'s output at positions `at`.
fn replace(component: Component, value: Tensor, at: &Positions) -> Intervention {
    let (hook, index) = match component {
        Component::Mlp(l) => (HookPoint::MlpOut(l), None),
        Component::Attn(l) => (HookPoint::AttnOut(l), None),
        Component::Head(l, h) => (HookPoint::AttnZ(l), Some(vec![h])),
    };
    Intervention {
        hook,
        positions: at.clone(),
        index,
        edit: Edit::Replace,
        value,
    }
}

/// The corrupt run's value of `component`, shaped for [`replace`].
fn corrupt_value(component: Component, corrupt: &LastCaptures) -> Result<Tensor> {
    Ok(match component {
        Component::Mlp(l) => corrupt.mlp_out[l].clone(),
        Component::Attn(l) => corrupt.attn_out[l].clone(),
        Component::Head(l, h) => corrupt.z[l].narrow(2, h, 1)?,
    })
}

/// The clean batch with `interventions`, resumed at the earliest layer they touch, scored.
fn patched_logits(
    model: &Model,
    batch: &Batch,
    scoring: &AnswerScoring,
    clean: &LastCaptures,
    interventions: Vec<Intervention>,
) -> Result<Scored> {
    let first = interventions
        .iter()
        .filter_map(|i| i.hook.layer())
        .min()
        .unwrap_or(0);
    let mut req = ForwardRequest::new().resume(first, clean.resid_pre[first].clone());
    for i in interventions {
        req = req.intervene(i);
    }
    scoring.score(&clean.forward(model, batch, &scoring.request(req))?)
}

/// The change of `component`'s contribution to the residual stream at the last position,
/// `(b, d)`: for layers' outputs the corrupt minus clean output; for a head, the change of its
/// layer's attention output with only that head patched (one block run).
fn contribution_change(
    model: &Model,
    batch: &Batch,
    clean: &LastCaptures,
    corrupt: &LastCaptures,
    component: Component,
) -> Result<Tensor> {
    Ok(match component {
        Component::Mlp(l) => (&corrupt.mlp_out[l] - &clean.mlp_out[l])?.squeeze(1)?,
        Component::Attn(l) => (&corrupt.attn_out[l] - &clean.attn_out[l])?.squeeze(1)?,
        Component::Head(l, _) => {
            let req = ForwardRequest::new()
                .resume(l, clean.resid_pre[l].clone())
                .intervene(replace(
                    component,
                    corrupt_value(component, corrupt)?,
                    &clean.at,
                ))
                .capture(HookPoint::AttnOut(l), clean.at.clone());
            let out = clean.forward(model, batch, &req)?;
            (out.capture(HookPoint::AttnOut(l))? - &clean.attn_out[l])?.squeeze(1)?
        }
    })
}

fn encode(tok: &Tokenizer, p: &Pipeline, model: &Model, probs: &[&ProblemInfo]) -> Result<Batch> {
    Ok(model.batch(&prompt_ids(tok, p, probs.iter().copied())?)?)
}

/// One batch of pairs run: the clean sequences (prompts, followed by the corrupt answers where
/// they are several tokens) with how they are scored, their captures (and the residual stream
/// to resume from), and the corrupt prompts' captures.
struct PairRun<'m> {
    batch: Batch,
    scoring: AnswerScoring<'m>,
    clean: LastCaptures,
    corrupt: LastCaptures,
}

fn capture_pairs<'m>(
    tok: &Tokenizer,
    p: &Pipeline,
    model: &'m Model,
    chunk: &[Pair],
) -> Result<PairRun<'m>> {
    let scoring = AnswerScoring::corrupt(model, chunk);
    let clean_ids = prompt_ids(tok, p, chunk.iter().map(|x| &x.clean))?;
    let batch = model.batch(&scoring.sequences(clean_ids))?;
    let clean = capture_last(model, &batch, &scoring, true, Some(p))?;
    let corrupt_p: Vec<&ProblemInfo> = chunk.iter().map(|x| &x.corrupt).collect();
    let corrupt = capture_last(
        model,
        &encode(tok, p, model, &corrupt_p)?,
        &AnswerScoring::prompts(model),
        false,
        None,
    )?;
    Ok(PairRun {
        batch,
        scoring,
        clean,
        corrupt,
    })
}

/// The fits of one component's output over the fit sample.
struct ComponentFits {
    fits: Vec<(String, MultiFit)>,
}

impl ComponentFits {
    fn value(&self, name: &str, pairs: &[Pair], shape: &[usize], model: &Model) -> Result<Tensor> {
        let (_, f) = self
            .fits
            .iter()
            .find(|(n, _)| n == name)
            .expect("named from the fits");
        let ab: Vec<(i64, i64)> = pairs
            .iter()
            .map(|x| (x.corrupt.a, x.corrupt.b.unwrap_or(0)))
            .collect();
        let v: Vec<f32> = f.predict(&ab).iter().map(|&x| x as f32).collect();
        Ok(Tensor::from_vec(v, shape, model.device())?.to_dtype(model.dtype())?)
    }
}

/// Fits helix(a,b), helix(a+b), helix(a,b,a+b) to each component's last-position output over
/// `sample` problems.
fn fit_components(
    model: &Model,
    tok: &Tokenizer,
    p: &Pipeline,
    sample: &[&ProblemInfo],
    components: &[Component],
    progress: &dyn Progress,
) -> Result<BTreeMap<Component, ComponentFits>> {
    let cfg = model.config();
    let mut rows: BTreeMap<Component, Vec<f32>> = BTreeMap::new();
    progress.start("component fits: forwards", sample.len() as u64);
    for chunk in sample.chunks(p.extract.batch_size.max(1)) {
        let batch = encode(tok, p, model, chunk)?;
        let output_of = |c: &Component| match c {
            Component::Mlp(l) => HookPoint::MlpOut(*l),
            Component::Attn(l) => HookPoint::AttnOut(*l),
            Component::Head(l, _) => HookPoint::AttnZ(*l),
        };
        let mut req = ForwardRequest::new();
        for c in components {
            req = req.capture(output_of(c), Positions::last());
        }
        let out = model.forward(&batch, &req)?;
        for c in components {
            let t = out.capture(output_of(c))?;
            let t = match c {
                Component::Head(_, h) => t.narrow(2, *h, 1)?,
                _ => t.clone(),
            };
            let t = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            rows.entry(*c).or_default().extend(t);
        }
        progress.advance(chunk.len() as u64);
    }
    progress.finish();
    let ab: Vec<(i64, i64)> = sample.iter().map(|x| (x.a, x.b.unwrap_or(0))).collect();
    let mut out = BTreeMap::new();
    for (c, v) in rows {
        let d = match c {
            Component::Head(..) => cfg.d_head,
            _ => cfg.d_model,
        };
        let x = Array2::from_shape_vec((sample.len(), d), v.iter().map(|&x| x as f64).collect())
            .expect("n x d");
        let pca = Pca::fit(x.view(), 100)?;
        let mut fits = Vec::new();
        for set in MultiHelix::paper_sets() {
            let basis = MultiHelix::for_sample(set.clone(), p.fit.periods.clone(), &ab);
            fits.push((
                MultiHelix::variant_name(&set),
                MultiFit::fit_in(basis, &ab, x.view(), &pca)?,
            ));
        }
        out.insert(c, ComponentFits { fits });
    }
    Ok(out)
}

/// The mean total effect of a component (0 when not measured).
fn te(means: &BTreeMap<EffectKey, EffectMean>, c: Component, effect: Effect) -> f64 {
    means.get(&c.key(effect)).map_or(0.0, |m| m.logit_diff)
}

/// The smallest top-k prefix whose effect reaches `fraction` of the best prefix.
pub fn circuit_size(curve: &[f64], fraction: f64) -> usize {
    let best = curve.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    curve
        .iter()
        .position(|&v| v >= fraction * best)
        .map_or(curve.len(), |i| i + 1)
}

/// The paper's head scores: (score for "a,b", score for "a+b").
pub fn head_scores(te: f64, de: f64, te_ab: f64, te_sum: f64, te_full: f64) -> (f64, f64) {
    let ratio = |x: f64| {
        if te_full != 0.0 {
            (x / te_full).min(1.0)
        } else {
            0.0
        }
    };
    let de_te = if te != 0.0 { de / te } else { 0.0 };
    (
        ratio(te_ab) * (1.0 - de_te).min(1.0),
        ratio(te_sum) * de_te.min(1.0),
    )
}

/// Which part of a sharded `components` a shard runs, and the private directory it writes to.
///
/// The stage runs as two phases, each gathered before the next starts, because its second pass
/// (top-k joint patches, fits, path patching, head attention) needs the ranking that the first
/// pass's means over every pair give:
/// - phase 1: the shard's slice of the pairs patched one component at a time (TE and DE), into
///   `patch/component_singles.parquet`;
/// - phase 2: from the gathered phase 1 every shard ranks the heads and MLPs and fits the top
///   ones (the same work in every shard: the fits read the component-fit sample, not the
///   pairs), then runs the top-k and fit patches and path patching on its slice of the pairs
///   and head attention on its slice of the sample. Shard 0's part of components.parquet
///   starts with phase 1's rows, so the gathered table holds the unsharded rows in their
///   order; the summary and roles are made after gathering ([`finish_gathered`]).
#[derive(Clone, Copy, Debug)]
pub enum ComponentsShard<'a> {
    /// Phase 1 of shard `.0`, written to `.1`.
    Effects(Shard, &'a Path),
    /// Phase 2 of shard `.0`, written to `.1`.
    Joint(Shard, &'a Path),
}

impl ComponentsShard<'_> {
    fn shard(&self) -> (Shard, &Path) {
        match *self {
            ComponentsShard::Effects(s, d) | ComponentsShard::Joint(s, d) => (s, d),
        }
    }
}

/// Every single component in the order the stage patches them: per layer its attention, its
/// MLP, its heads.
fn single_components(n_layers: usize, n_heads: usize) -> Vec<Component> {
    let mut singles = Vec::new();
    for l in 0..n_layers {
        singles.push(Component::Attn(l));
        singles.push(Component::Mlp(l));
        singles.extend((0..n_heads).map(|h| Component::Head(l, h)));
    }
    singles
}

/// `singles` ranked by mean total effect, largest first (ties keep `singles`' order): the
/// heads and the MLPs.
fn rank_components(
    singles: &[Component],
    means: &BTreeMap<EffectKey, EffectMean>,
) -> (Vec<Component>, Vec<Component>) {
    let rank = |filter: &dyn Fn(&Component) -> bool| -> Vec<Component> {
        let mut v: Vec<Component> = singles.iter().copied().filter(|c| filter(c)).collect();
        v.sort_by(|a, b| te(means, *b, Effect::Total).total_cmp(&te(means, *a, Effect::Total)));
        v
    };
    (
        rank(&|c| matches!(c, Component::Head(..))),
        rank(&|c| matches!(c, Component::Mlp(_))),
    )
}

/// The MLP circuit: the shortest top-k prefix of `mlps` reaching `patch.circuit_fraction` of
/// the best joint patch.
fn mlp_circuit(
    p: &Pipeline,
    means: &BTreeMap<EffectKey, EffectMean>,
    mlps: &[Component],
) -> BTreeSet<Component> {
    let curve: Vec<f64> = (1..=mlps.len())
        .map(|k| {
            means
                .get(&EffectKey {
                    component: Patched::TopMlps,
                    layer: k as u32,
                    head: None,
                    effect: Effect::Total,
                })
                .map_or(0.0, |m| m.logit_diff)
        })
        .collect();
    mlps.iter()
        .copied()
        .take(circuit_size(&curve, p.patch.circuit_fraction))
        .collect()
}

/// `helixlab components`: TE and DE of every MLP, attention layer and head at the last token,
/// top-k curves, the MLP circuit, and fits of the top heads and circuit MLPs. With a `shard`,
/// one phase of one shard ([`ComponentsShard`]).
// Long (about 230 lines) because E5 is one sequence over shared state: the clean and corrupt
// captures of each batch feed the single, joint, top-k and circuit patches, whose means pick the
// heads and MLPs that the fits then read; its steps are in helpers (capture_last, patched_logits,
// fit_components, rank_components, roles_table).
pub fn run_components(
    p: &Pipeline,
    force: bool,
    progress: &dyn Progress,
    shard: Option<ComponentsShard>,
) -> Result<Outcome> {
    let run = RunLayout::new(p.run_dir());
    if p.task.kind != TaskKind::Addition {
        return Err(PatchError::Input(format!(
            "{}: task.kind: the component experiment fits a, b and a+b, so it needs an \
             addition task, not {:?}",
            p.path.display(),
            p.task.kind
        )));
    }
    let (study, mut m) = load(
        p,
        "components",
        serde_json::json!({
            "position": "last", "periods": p.fit.periods, "patch": p.patch,
            "batch_size": p.extract.batch_size,
        }),
    )?;
    let (model, tok) = (&study.model, &study.tokenizer);
    let cfg = model.config().clone();
    m.input_table(&run, tables::PAIRS)?;
    let outputs = [
        tables::COMPONENTS,
        tables::COMPONENTS_SUMMARY,
        tables::COMPONENT_ROLES,
        tables::PATH_PATCHING,
        tables::HEAD_ATTENTION,
    ];
    if !force && m.tables_fresh(&run, &outputs) {
        return Ok(Outcome::UpToDate);
    }
    m.begin();
    let all_pairs = read_pairs(&run, Position::Last)?;
    let chunk_size = p.extract.batch_size.max(1);
    let pairs = match shard {
        Some(s) => all_pairs[s.shard().0.range(all_pairs.len(), chunk_size)].to_vec(),
        None => all_pairs.clone(),
    };
    let singles = single_components(cfg.n_layers, cfg.n_heads);
    let mut rows = match shard {
        Some(ComponentsShard::Joint(..)) => gathered_singles(&run, &m)?,
        _ => single_effects(p, &study, &singles, &pairs, progress)?,
    };
    if let Some(ComponentsShard::Effects(_, dir)) = shard {
        m.write_table(
            &RunLayout::new(dir),
            tables::COMPONENT_SINGLES,
            &rows.table(),
        )?;
        return Ok(m.outcome());
    }
    let (heads, mlps) = rank_components(&singles, &rows.means());
    // Fits of the top heads and of every MLP (the circuit is known only after pass 2; fitting
    // all MLPs costs one PCA per layer).
    let top_heads: Vec<Component> = heads.iter().copied().take(p.patch.head_top).collect();
    let fit_targets: Vec<Component> = top_heads.iter().chain(&mlps).copied().collect();
    let mut problems = problems(run.root(), p.patch.correct_only)?;
    problems.retain(|x| x.b.is_some());
    let order = split::permutation(problems.len(), p.patch.seed);
    let sample: Vec<&ProblemInfo> = order
        .iter()
        .take(p.patch.component_fit_problems)
        .map(|&i| &problems[i])
        .collect();
    if sample.len() < 10 {
        return Err(PatchError::Input(format!(
            "{}: {} correct problems; the component fits need at least 10",
            run.path(tables::PROBLEMS).display(),
            sample.len()
        )));
    }
    let fits = fit_components(model, tok, p, &sample, &fit_targets, progress)?;
    // A phase-2 shard other than the first writes only its own rows (the first carries phase
    // 1's, so that the gathered table starts with them).
    if matches!(shard, Some(ComponentsShard::Joint(s, _)) if s.index != 0) {
        rows = EffectRows::default();
    }
    joint_effects(
        p,
        &study,
        (&heads, &mlps),
        &fits,
        &pairs,
        &mut rows,
        progress,
    )?;
    // Pass 3: path patching from each top head to the later top heads and MLPs.
    let mut paths = PathRows::default();
    let senders: Vec<(usize, usize)> = top_heads
        .iter()
        .filter_map(|c| match c {
            Component::Head(l, h) => Some((*l, *h)),
            _ => None,
        })
        .collect();
    let forced = all_pairs.iter().any(|x| x.corrupt.answer_tokens.len() > 1);
    if !forced && !senders.is_empty() {
        progress.start("components: path patching", pairs.len() as u64);
        for chunk in pairs.chunks(chunk_size) {
            let clean_p: Vec<&ProblemInfo> = chunk.iter().map(|x| &x.clean).collect();
            let corrupt_p: Vec<&ProblemInfo> = chunk.iter().map(|x| &x.corrupt).collect();
            let batches = (
                &encode(tok, p, model, &clean_p)?,
                &encode(tok, p, model, &corrupt_p)?,
            );
            path_patch_batch(model, batches, chunk, &senders, &senders, &mut paths)?;
            progress.advance(chunk.len() as u64);
        }
        progress.finish();
    }
    let attention_sample = match shard {
        Some(s) => &sample[s.shard().0.range(sample.len(), chunk_size)],
        None => &sample[..],
    };
    let attention = head_attention(model, tok, p, attention_sample, &senders)?;
    let out = match shard {
        Some(s) => RunLayout::new(s.shard().1),
        None => RunLayout::new(run.root()),
    };
    m.write_table(&out, tables::COMPONENTS, &rows.table())?;
    if shard.is_none() {
        let means = rows.means();
        let circuit = mlp_circuit(p, &means, &mlps);
        let roles = roles_table(p, &means, &heads, &mlps, &top_heads, &circuit);
        m.write_table(&out, tables::COMPONENTS_SUMMARY, &means_table(&means))?;
        m.write_table(&out, tables::COMPONENT_ROLES, &roles)?;
    }
    m.write_table(&out, tables::PATH_PATCHING, &paths.table())?;
    m.write_table(&out, tables::HEAD_ATTENTION, &attention)?;
    Ok(m.outcome())
}

/// Phase 1's rows, gathered: they must be complete and made by this same work (settings,
/// inputs, model, version), or phase 2 would rank by another study's effects.
fn gathered_singles(run: &RunLayout, m: &StageRun) -> Result<EffectRows> {
    let path = run.path(tables::COMPONENT_SINGLES);
    let hint = "run phase 1 first (`helixlab components --shards N --phase 1`, then \
                `helixlab gather components --shards N --phase 1`)";
    let Some(made) = Manifest::verified_for(&path, hint)? else {
        return Err(PatchError::Input(format!(
            "{}: not there or not complete; {hint}",
            path.display()
        )));
    };
    if !made.same_work(m.manifest()) {
        return Err(PatchError::Input(format!(
            "{}: made by other work than this phase 2 (settings, inputs, model or version \
             differ); rerun phase 1",
            path.display()
        )));
    }
    let f = Frame::open(&path)?.ok_or_else(|| run.missing(tables::COMPONENT_SINGLES))?;
    EffectRows::from_frame(&f)
}

/// Pass 1: each component alone, total and direct, over `pairs`.
fn single_effects(
    p: &Pipeline,
    study: &helixlab_study::StudyModel,
    singles: &[Component],
    pairs: &[Pair],
    progress: &dyn Progress,
) -> Result<EffectRows> {
    let (model, tok) = (&study.model, &study.tokenizer);
    let mut rows = EffectRows::default();
    progress.start("components: total and direct effects", pairs.len() as u64);
    for chunk in pairs.chunks(p.extract.batch_size.max(1)) {
        let PairRun {
            batch,
            scoring,
            clean,
            corrupt,
        } = capture_pairs(tok, p, model, chunk)?;
        let mut finals = Vec::with_capacity(singles.len());
        for &c in singles {
            let scored = patched_logits(
                model,
                &batch,
                &scoring,
                &clean,
                vec![replace(c, corrupt_value(c, &corrupt)?, &clean.at)],
            )?;
            for (i, pair) in chunk.iter().enumerate() {
                rows.push_scored(c.key(Effect::Total), pair, &clean.scored, &scored, i);
            }
            let delta = contribution_change(model, &batch, &clean, &corrupt, c)?;
            finals.push((&clean.final_resid + delta)?);
        }
        // Every direct effect of the chunk in one final norm + unembedding. The direct path
        // changes the final residual at the prompt's last position only, so the answer tokens
        // after it keep their clean log P: the first token's change is the whole answer's.
        let de = Scored::from_first(
            model
                .logits_from_final_residual(&Tensor::cat(&finals, 0)?)?
                .to_dtype(DType::F32)?
                .to_vec2::<f32>()?,
        );
        for (j, &c) in singles.iter().enumerate() {
            for (i, pair) in chunk.iter().enumerate() {
                rows.push_first_token(
                    c.key(Effect::Direct),
                    pair,
                    (&clean.scored, i),
                    (&de, j * chunk.len() + i),
                );
            }
        }
        progress.advance(chunk.len() as u64);
    }
    progress.finish();
    Ok(rows)
}

/// Pass 2: the top-k joint patches of the ranked `(heads, mlps)` and the fits patched in, over
/// `pairs`, appended to `rows`.
fn joint_effects(
    p: &Pipeline,
    study: &helixlab_study::StudyModel,
    (heads, mlps): (&[Component], &[Component]),
    fits: &BTreeMap<Component, ComponentFits>,
    pairs: &[Pair],
    rows: &mut EffectRows,
    progress: &dyn Progress,
) -> Result<()> {
    let (model, tok) = (&study.model, &study.tokenizer);
    let cfg = model.config();
    let fit_names: Vec<String> = MultiHelix::paper_sets()
        .iter()
        .map(|s| MultiHelix::variant_name(s))
        .collect();
    let max_heads = heads.len().min(64);
    progress.start("components: top-k and fits", pairs.len() as u64);
    for chunk in pairs.chunks(p.extract.batch_size.max(1)) {
        let PairRun {
            batch,
            scoring,
            clean,
            corrupt,
        } = capture_pairs(tok, p, model, chunk)?;
        let joint = |set: &[Component]| -> Result<Vec<Intervention>> {
            // Heads of one layer go in one intervention on that layer's z.
            let mut by_layer: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            let mut out = Vec::new();
            for &c in set {
                match c {
                    Component::Head(l, h) => by_layer.entry(l).or_default().push(h),
                    _ => out.push(replace(c, corrupt_value(c, &corrupt)?, &clean.at)),
                }
            }
            for (l, hs) in by_layer {
                let idx = Tensor::new(
                    hs.iter().map(|&h| h as u32).collect::<Vec<_>>(),
                    model.device(),
                )?;
                out.push(Intervention {
                    hook: HookPoint::AttnZ(l),
                    positions: clean.at.clone(),
                    index: Some(hs),
                    edit: Edit::Replace,
                    value: corrupt.z[l].index_select(&idx, 2)?,
                });
            }
            Ok(out)
        };
        for (name, ranked, max_k) in [
            (Patched::TopHeads, heads, max_heads),
            (Patched::TopMlps, mlps, mlps.len()),
        ] {
            let mut ks: Vec<usize> = (1..=max_k).collect();
            if max_k < ranked.len() {
                ks.push(ranked.len());
            }
            for k in ks {
                let scored = patched_logits(model, &batch, &scoring, &clean, joint(&ranked[..k])?)?;
                let key = EffectKey {
                    component: name,
                    layer: k as u32,
                    head: None,
                    effect: Effect::Total,
                };
                for (i, pair) in chunk.iter().enumerate() {
                    rows.push_scored(key.clone(), pair, &clean.scored, &scored, i);
                }
            }
        }
        for (&c, f) in fits {
            let shape: Vec<usize> = match c {
                Component::Head(..) => vec![chunk.len(), 1, 1, cfg.d_head],
                _ => vec![chunk.len(), 1, cfg.d_model],
            };
            for name in &fit_names {
                let value = f.value(name, chunk, &shape, model)?;
                let replaced = vec![replace(c, value, &clean.at)];
                let scored = patched_logits(model, &batch, &scoring, &clean, replaced)?;
                for (i, pair) in chunk.iter().enumerate() {
                    let key = c.key(Effect::Patch(name.clone()));
                    rows.push_scored(key, pair, &clean.scored, &scored, i);
                }
            }
        }
        progress.advance(chunk.len() as u64);
    }
    progress.finish();
    Ok(())
}

/// After phase 2 of a sharded `components` is gathered: components_summary and
/// component_roles from every row of components.parquet (with its manifest, as the unsharded
/// stage writes them), and phase 1's table removed (its rows are in components.parquet).
/// Does nothing when both are current.
pub fn finish_gathered(p: &Pipeline) -> Result<()> {
    let run = RunLayout::new(p.run_dir());
    let rows_path = run.path(tables::COMPONENTS);
    let Some(mut manifest) = Manifest::verified_for(&rows_path, "run `helixlab components` first")?
    else {
        return Err(run.missing(tables::COMPONENTS).into());
    };
    let (summary_path, roles_path) = (
        run.path(tables::COMPONENTS_SUMMARY),
        run.path(tables::COMPONENT_ROLES),
    );
    if !(manifest.is_fresh(&summary_path) && manifest.is_fresh(&roles_path)) {
        let f = Frame::open(&rows_path)?.ok_or_else(|| run.missing(tables::COMPONENTS))?;
        let means = EffectRows::from_frame(&f)?.means();
        // The single components, in the order the stage patched them, from the rows.
        let mut singles: Vec<Component> = means
            .keys()
            .filter(|k| k.effect == Effect::Total)
            .filter_map(|k| match (k.component, k.head) {
                (Patched::Attn, _) => Some(Component::Attn(k.layer as usize)),
                (Patched::Mlp, _) => Some(Component::Mlp(k.layer as usize)),
                (Patched::Head, Some(h)) => Some(Component::Head(k.layer as usize, h as usize)),
                _ => None,
            })
            .collect();
        singles.sort_by_key(|c| match *c {
            Component::Attn(l) => (l, 0, 0),
            Component::Mlp(l) => (l, 1, 0),
            Component::Head(l, h) => (l, 2, h),
        });
        let (heads, mlps) = rank_components(&singles, &means);
        let top_heads: Vec<Component> = heads.iter().copied().take(p.patch.head_top).collect();
        let circuit = mlp_circuit(p, &means, &mlps);
        let roles = roles_table(p, &means, &heads, &mlps, &top_heads, &circuit);
        manifest.parts.clear();
        for (path, table) in [(&summary_path, &means_table(&means)), (&roles_path, &roles)] {
            manifest.rows = table.rows() as u64;
            table.write(path, &manifest)?;
        }
    }
    Manifest::remove_table(&run.path(tables::COMPONENT_SINGLES))?;
    Ok(())
}

/// One row per head and MLP: rank by TE, TE, DE, DE/TE, the fits' TE over TE, and for the top
/// heads the type scores; MLPs say whether they are in the circuit.
fn roles_table(
    p: &Pipeline,
    means: &BTreeMap<EffectKey, EffectMean>,
    heads: &[Component],
    mlps: &[Component],
    top_heads: &[Component],
    circuit: &BTreeSet<Component>,
) -> Table {
    let (ab, sum, full) = ("helix(a,b)", "helix(a+b)", "helix(a,b,a+b)");
    // Scores of the top heads; the `mixed_heads` lowest best-scores are mixed.
    let mut scored: Vec<(Component, f64, f64)> = top_heads
        .iter()
        .map(|&c| {
            let (s_ab, s_sum) = head_scores(
                te(means, c, Effect::Total),
                te(means, c, Effect::Direct),
                te(means, c, Effect::Patch(ab.into())),
                te(means, c, Effect::Patch(sum.into())),
                te(means, c, Effect::Patch(full.into())),
            );
            (c, s_ab, s_sum)
        })
        .collect();
    scored.sort_by(|x, y| x.1.max(x.2).total_cmp(&y.1.max(y.2)));
    let mut types: BTreeMap<Component, (f64, f64, &str)> = BTreeMap::new();
    for (i, (c, s_ab, s_sum)) in scored.iter().enumerate() {
        let t = if i < p.patch.mixed_heads.min(scored.len().saturating_sub(1)) {
            "mixed"
        } else if s_ab >= s_sum {
            "a,b"
        } else {
            "a+b"
        };
        types.insert(*c, (*s_ab, *s_sum, t));
    }
    let mut t = RolesCols::default();
    for (ranked, kind) in [(heads, "head"), (mlps, "mlp")] {
        for (r, &c) in ranked.iter().enumerate() {
            let total = te(means, c, Effect::Total);
            let direct = te(means, c, Effect::Direct);
            let fitted = |name: &str| {
                means.get(&c.key(Effect::Patch(name.into()))).map(|m| {
                    if total != 0.0 {
                        m.logit_diff / total
                    } else {
                        f64::NAN
                    }
                })
            };
            t.component.push(kind.into());
            t.layer.push(c.layer() as u32);
            t.head.push(match c {
                Component::Head(_, h) => Some(h as i64),
                _ => None,
            });
            t.rank.push(r as u32 + 1);
            t.total.push(total);
            t.direct.push(direct);
            t.de_over_te.push(if total != 0.0 {
                direct / total
            } else {
                f64::NAN
            });
            t.ab.push(fitted(ab));
            t.sum.push(fitted(sum));
            t.full.push(fitted(full));
            let ty = types.get(&c);
            t.score_ab.push(ty.map(|x| x.0));
            t.score_sum.push(ty.map(|x| x.1));
            t.role.push(match (c, ty) {
                (Component::Head(..), Some(x)) => x.2.to_string(),
                (Component::Mlp(_), _) if circuit.contains(&c) => "circuit".into(),
                _ => String::new(),
            });
        }
    }
    Table::new()
        .column("component", Values::Str(t.component))
        .column("layer", Values::U32(t.layer))
        .column("head", Values::OptI64(t.head))
        .column("rank", Values::U32(t.rank))
        .column("total_effect", Values::F64(t.total))
        .column("direct_effect", Values::F64(t.direct))
        .column("de_over_te", Values::F64(t.de_over_te))
        .column("te_fit_ab_over_te", Values::OptF64(t.ab))
        .column("te_fit_sum_over_te", Values::OptF64(t.sum))
        .column("te_fit_ab_sum_over_te", Values::OptF64(t.full))
        .column("score_ab", Values::OptF64(t.score_ab))
        .column("score_sum", Values::OptF64(t.score_sum))
        .column("role", Values::Str(t.role))
}

#[derive(Default)]
struct RolesCols {
    component: Vec<String>,
    layer: Vec<u32>,
    head: Vec<Option<i64>>,
    rank: Vec<u32>,
    total: Vec<f64>,
    direct: Vec<f64>,
    de_over_te: Vec<f64>,
    ab: Vec<Option<f64>>,
    sum: Vec<Option<f64>>,
    full: Vec<Option<f64>>,
    score_ab: Vec<Option<f64>>,
    score_sum: Vec<Option<f64>>,
    role: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use helixlab_model::LoadOptions;

    fn toy() -> (Model, Batch, Batch) {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/models/toy-adder");
        let model = Model::load(&dir, &LoadOptions::default()).unwrap();
        let tok = Tokenizer::for_checkpoint(&dir).unwrap();
        let enc = |ps: &[&str]| {
            let seqs: Vec<Vec<u32>> = ps.iter().map(|p| tok.encode(p, false).unwrap()).collect();
            model.batch(&seqs).unwrap()
        };
        let clean = enc(&["12+34=", "70+5=", "3+3="]);
        let corrupt = enc(&["40+41=", "8+88=", "61+9="]);
        (model, clean, corrupt)
    }

    fn max_abs(t: &Tensor) -> f32 {
        t.abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// A plain run's captures of `batch`, with the residual stream to resume from.
    fn captured(model: &Model, batch: &Batch) -> LastCaptures {
        capture_last(model, batch, &AnswerScoring::prompts(model), true, None).unwrap()
    }

    #[test]
    fn component_changes_add_up_to_the_change_of_the_final_residual() {
        let (model, clean_b, corrupt_b) = toy();
        let clean = captured(&model, &clean_b);
        let corrupt = captured(&model, &corrupt_b);
        let n = model.config().n_layers;
        // The embedding's change: resid_pre of block 0 at the last position.
        let last = |t: &Tensor| {
            t.narrow(1, t.dim(1).unwrap() - 1, 1)
                .unwrap()
                .squeeze(1)
                .unwrap()
        };
        let mut sum = (last(&corrupt.resid_pre[0]) - last(&clean.resid_pre[0])).unwrap();
        for l in 0..n {
            for c in [Component::Attn(l), Component::Mlp(l)] {
                let d = contribution_change(&model, &clean_b, &clean, &corrupt, c).unwrap();
                sum = (sum + d).unwrap();
            }
            // A layer's heads' changes add up to its attention output's change (the output
            // projection is linear in z).
            let mut heads = Tensor::zeros_like(&clean.final_resid).unwrap();
            for h in 0..model.config().n_heads {
                let d =
                    contribution_change(&model, &clean_b, &clean, &corrupt, Component::Head(l, h))
                        .unwrap();
                heads = (heads + d).unwrap();
            }
            let attn = (&corrupt.attn_out[l] - &clean.attn_out[l])
                .unwrap()
                .squeeze(1)
                .unwrap();
            let err = max_abs(&(heads - &attn).unwrap());
            assert!(
                err < 1e-4 * max_abs(&attn).max(1.0),
                "layer {l}: heads vs attn {err}"
            );
        }
        let target = (&corrupt.final_resid - &clean.final_resid).unwrap();
        let err = max_abs(&(sum - &target).unwrap());
        assert!(err < 1e-4 * max_abs(&target), "identity off by {err}");
        // With every change added, the direct path gives the corrupt run's logits.
        let logits = model
            .logits_from_final_residual(&(&clean.final_resid + &target).unwrap())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (a, b) in logits.iter().zip(&corrupt.scored.first) {
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() < 1e-3, "{x} vs {y}");
            }
        }
    }

    #[test]
    fn patching_a_component_with_its_own_clean_value_changes_nothing() {
        let (model, clean_b, _) = toy();
        let clean = captured(&model, &clean_b);
        for c in [Component::Mlp(0), Component::Attn(1), Component::Head(1, 2)] {
            let own = corrupt_value(c, &clean).unwrap();
            let scoring = AnswerScoring::prompts(&model);
            let replaced = vec![replace(c, own, &clean.at)];
            let scored = patched_logits(&model, &clean_b, &scoring, &clean, replaced).unwrap();
            for (a, b) in scored.first.iter().zip(&clean.scored.first) {
                for (x, y) in a.iter().zip(b) {
                    assert!((x - y).abs() < 1e-4, "{c:?}: {x} vs {y}");
                }
            }
        }
    }

    #[test]
    fn the_circuit_is_the_shortest_prefix_reaching_the_fraction() {
        assert_eq!(circuit_size(&[1.0, 5.0, 9.6, 10.0, 9.0], 0.95), 3);
        assert_eq!(circuit_size(&[10.0, 1.0], 0.95), 1);
    }

    #[test]
    fn head_scores_follow_the_paper() {
        // A head that acts through later layers (DE 0) and whose a,b fit does everything.
        let (ab, sum) = head_scores(2.0, 0.0, 2.0, 0.5, 2.0);
        assert_eq!((ab, sum), (1.0, 0.0));
        // A head that writes the answer directly and is described by a+b.
        let (ab, sum) = head_scores(2.0, 2.0, 0.2, 1.8, 2.0);
        assert!((ab - 0.0).abs() < 1e-12 && (sum - 0.9).abs() < 1e-12);
    }
}
