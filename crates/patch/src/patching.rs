//! `helixlab patch` (docs/method.md E3): each clean prompt run with the activation at the
//! analysed operand's token replaced, layer by layer, by a patch for the corrupt number; one
//! row per pair x site x layer x patch kind (`patch/patching.parquet`) and the means the
//! figures plot (`patch/patching_summary.parquet`).

use std::collections::{BTreeMap, BTreeSet};

use candle_core::Tensor;
use helixlab_model::shared_prefix_split;
use helixlab_model::{ForwardRequest, HookPoint, Model, Positions};
use helixlab_pipeline::{AnalysisTarget, FitName, PatchKind, Pipeline, Position, Site};
use helixlab_store::read;
use helixlab_store::shard::Shard;
use helixlab_store::stage::{Outcome, Progress};
use helixlab_store::table::{Table, Values};
use helixlab_store::{tables, Frame, Manifest, RunLayout};
use helixlab_study::answers::AnswerScoring;
use std::path::Path;

use crate::effects::Scores;
use crate::inputs::{clean_run_request, load, prompt_ids, read_pairs, target};
use crate::pairs::Pair;
use crate::patches::{fit_predictors, FitPredictor, NumberActivations};
use crate::{PatchError, Result};

/// One summary row.
struct SummaryRow {
    site: String,
    layer: u32,
    kind: String,
    chosen: String,
    pairs: usize,
    logit_diff: f64,
    normalized: f64,
    accuracy: f64,
    clean_accuracy: f64,
    logit_diff_held_out: f64,
}

fn summary_row(
    rows: &Rows,
    key: &(String, u32, String),
    idx: &[usize],
    chosen: &str,
) -> SummaryRow {
    let mean = |v: &[f64]| idx.iter().map(|&i| v[i]).sum::<f64>() / idx.len().max(1) as f64;
    let share = |v: &[bool]| idx.iter().filter(|&&i| v[i]).count() as f64 / idx.len().max(1) as f64;
    let held: Vec<usize> = idx
        .iter()
        .copied()
        .filter(|&i| rows.corrupt_held_out[i])
        .collect();
    SummaryRow {
        site: key.0.clone(),
        layer: key.1,
        kind: key.2.clone(),
        chosen: chosen.to_string(),
        pairs: idx.len(),
        logit_diff: mean(&rows.scores.logit_diff),
        normalized: mean(&rows.scores.normalized),
        accuracy: share(&rows.scores.correct),
        clean_accuracy: share(&rows.clean_correct),
        logit_diff_held_out: if held.is_empty() {
            f64::NAN
        } else {
            held.iter().map(|&i| rows.scores.logit_diff[i]).sum::<f64>() / held.len() as f64
        },
    }
}

/// Means per (site, layer, kind), then for each number of periods the best subset of the
/// paper's periods (`helix_best<params>`): chosen by its mean logit difference over layers on
/// the even pairs, reported on the odd ones, so the choice is not scored on the pairs that
/// made it (the original code never updated its running best).
// Long (about 110 lines) because the best-subset rows are chosen on even pairs and scored on odd
// ones over the same groups as the plain means, which it builds first.
fn summarize(rows: &Rows, paper: &[f64]) -> Table {
    let mut groups: Vec<((String, u32, String), Vec<usize>)> = Vec::new();
    let mut index: BTreeMap<(String, u32, String), usize> = BTreeMap::new();
    for i in 0..rows.kind.len() {
        let key = (rows.site[i].clone(), rows.layer[i], rows.kind[i].clone());
        let g = *index.entry(key.clone()).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(i);
    }
    let mut out: Vec<SummaryRow> = groups
        .iter()
        .map(|(k, idx)| summary_row(rows, k, idx, ""))
        .collect();
    let periods_of = |kind: &str| -> Option<usize> {
        match kind.parse::<PatchKind>().ok()? {
            PatchKind::Fit(f) => f.helix_periods(paper.len()),
            _ => None,
        }
    };
    let mut sites: Vec<String> = Vec::new();
    for (k, _) in &groups {
        if !sites.contains(&k.0) {
            sites.push(k.0.clone());
        }
    }
    for site in &sites {
        for n in 1..=paper.len() {
            let candidates: Vec<String> = groups
                .iter()
                .filter(|(k, _)| &k.0 == site && periods_of(&k.2) == Some(n))
                .map(|(k, _)| k.2.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let half = |idx: &[usize], even: bool| -> Vec<usize> {
                idx.iter()
                    .copied()
                    .filter(|&i| rows.pair_id[i].is_multiple_of(2) == even)
                    .collect()
            };
            let score = |kind: &String| -> f64 {
                let per_layer: Vec<f64> = groups
                    .iter()
                    .filter(|(k, _)| &k.0 == site && &k.2 == kind)
                    .map(|(_, idx)| {
                        let sel = half(idx, true);
                        sel.iter().map(|&i| rows.scores.logit_diff[i]).sum::<f64>()
                            / sel.len().max(1) as f64
                    })
                    .collect();
                per_layer.iter().sum::<f64>() / per_layer.len().max(1) as f64
            };
            let Some(best) = candidates
                .iter()
                .max_by(|a, b| score(a).total_cmp(&score(b)))
            else {
                continue;
            };
            for ((s, layer, kind), idx) in &groups {
                if s == site && kind == best {
                    let eval = half(idx, false);
                    let key = (
                        s.clone(),
                        *layer,
                        PatchKind::HelixBest(2 * n + 1).to_string(),
                    );
                    out.push(summary_row(rows, &key, &eval, best));
                }
            }
        }
    }
    let rows = || out.iter();
    Table::new()
        .strs("site", rows().map(|r| r.site.clone()))
        .u32s("layer", rows().map(|r| r.layer))
        .strs("kind", rows().map(|r| r.kind.clone()))
        .strs("chosen", rows().map(|r| r.chosen.clone()))
        .u32s("pairs", rows().map(|r| r.pairs as u32))
        .f64s("logit_diff", rows().map(|r| r.logit_diff))
        .f64s("normalized", rows().map(|r| r.normalized))
        .f64s("accuracy", rows().map(|r| r.accuracy))
        .f64s("clean_accuracy", rows().map(|r| r.clean_accuracy))
        .f64s("logit_diff_held_out", rows().map(|r| r.logit_diff_held_out))
}

/// The numbers the fit stage held out (fit/split.parquet).
fn held_out_numbers(run: &RunLayout) -> Result<BTreeSet<i64>> {
    let split = Frame::require(run, tables::SPLIT)?;
    let held = split.bool("held_out")?;
    Ok(split
        .i64("x")?
        .into_iter()
        .zip(held)
        .filter_map(|(x, h)| h.then_some(x))
        .collect())
}

/// Per-row results, column-wise.
#[derive(Default)]
struct Rows {
    site: Vec<String>,
    layer: Vec<u32>,
    kind: Vec<String>,
    pair_id: Vec<u32>,
    clean_number: Vec<i64>,
    corrupt_number: Vec<i64>,
    scores: Scores,
    clean_correct: Vec<bool>,
    corrupt_held_out: Vec<bool>,
}

/// What the patch stage measured about its own speed.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchTiming {
    /// Forwards run (batches), including the clean ones.
    pub forwards: usize,
    /// Token-blocks (one block on one position of one prompt) run over all forwards: a
    /// patched forward runs the blocks from the patched one on, over the positions from the
    /// patched one on.
    pub token_blocks_run: usize,
    /// Token-blocks one whole forward per patch would have run.
    pub token_blocks_full: usize,
}

/// What one (site, layer) patches: its activations, fits, kinds and the patched offset.
struct LayerPlan {
    site: Site,
    layer: usize,
    acts: NumberActivations,
    fits: Vec<FitPredictor>,
    kinds: Vec<PatchKind>,
    /// The patched position of each prompt, by prompt id (the same for every prompt when
    /// every number is one token).
    offsets: BTreeMap<u32, i64>,
}

impl LayerPlan {
    /// Where the patch goes in each clean prompt of `chunk`: one offset for the batch when they
    /// agree, else each prompt's own. A pair's problems share their token layout, so the
    /// corrupt value belongs at the clean prompt's offset; a pair that does not is refused.
    fn positions(&self, chunk: &[Pair]) -> Result<Positions> {
        let at = |id: u32| {
            self.offsets.get(&id).copied().ok_or_else(|| {
                PatchError::Input(format!(
                    "prompt {id} has no row at {} layer {} (rerun `helixlab extract`)",
                    self.site.name(),
                    self.layer
                ))
            })
        };
        let mut each = Vec::with_capacity(chunk.len());
        for pair in chunk {
            let (c, x) = (at(pair.clean.prompt_id)?, at(pair.corrupt.prompt_id)?);
            if c != x {
                return Err(PatchError::Input(format!(
                    "pair {}: the patched position is {c} from the end in the clean prompt {:?} \
                     but {x} in the corrupt one {:?}; pairs must share their token layout \
                     (rerun `helixlab pairs`)",
                    pair.pair_id, pair.clean.prompt, pair.corrupt.prompt
                )));
            }
            each.push(vec![c]);
        }
        Ok(if each.iter().all(|o| o == &each[0]) {
            Positions::At(each[0].clone())
        } else {
            Positions::Each(each)
        })
    }
}

/// The patch kinds of one (site, layer): the activation, its PCA-k projections, every stored
/// fit, the mean and the helix ablation, or only those `patch.kinds` names.
fn kinds_for(
    p: &Pipeline,
    fits: &[FitPredictor],
    site: &Site,
    layer: usize,
) -> Result<Vec<PatchKind>> {
    let mut kinds = vec![PatchKind::Layer];
    kinds.extend(p.patch.pca_ks.iter().map(|&k| PatchKind::Pca(k)));
    kinds.extend(fits.iter().map(|f| PatchKind::Fit(f.variant.clone())));
    kinds.push(PatchKind::MeanAblation);
    if fits.iter().any(|f| f.variant == FitName::Helix) {
        kinds.push(PatchKind::FitAblation(FitName::Helix));
    }
    if p.patch.kinds.is_empty() {
        return Ok(kinds);
    }
    if let Some(missing) = p.patch.kinds.iter().find(|k| !kinds.contains(k)) {
        return Err(PatchError::Input(format!(
            "{}: patch.kinds: no patch kind `{missing}` at {} layer {layer} (there are: {})",
            p.path.display(),
            site.name(),
            kinds
                .iter()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    kinds.retain(|k| p.patch.kinds.contains(k));
    Ok(kinds)
}

/// The plan of every analysed (site, layer): patch values come from the tables.
fn plan_layers(
    p: &Pipeline,
    t: &AnalysisTarget,
    run: &RunLayout,
    work: &[(Site, usize)],
    pairs: &[Pair],
) -> Result<Vec<LayerPlan>> {
    let max_k = p.patch.pca_ks.iter().copied().max().unwrap_or(1);
    let needed: BTreeSet<u32> = pairs
        .iter()
        .flat_map(|x| [x.clean.prompt_id, x.corrupt.prompt_id])
        .collect();
    let mut plans = Vec::new();
    for (site, layer) in work {
        let acts = NumberActivations::load(run, (site.name(), *layer), t, max_k, &needed)?;
        let fits = fit_predictors(run, site.name(), *layer)?;
        let kinds = kinds_for(p, &fits, site, *layer)?;
        let offsets = read::position_offsets(run.root(), site.name(), *layer, t.position.name())?;
        plans.push(LayerPlan {
            site: site.clone(),
            layer: *layer,
            acts,
            fits,
            kinds,
            offsets,
        });
    }
    Ok(plans)
}

/// The analysed operand of a pair's clean or corrupt problem.
fn operand_of(t: &AnalysisTarget, pair: &Pair, clean: bool) -> i64 {
    let pr = if clean { &pair.clean } else { &pair.corrupt };
    if t.position == Position::B {
        pr.b.unwrap_or(0)
    } else {
        pr.a
    }
}

/// `helixlab patch`: patches the analysed operand's token, every analysed site and layer,
/// every kind, for every pair.
///
/// With a `shard` (its index and the directory it writes to), only its slice of the pairs
/// (whole batches) is patched and only `patch/patching.parquet` is written there; the summary
/// needs every pair and is made after gathering ([`summarize_gathered`]). Inputs are always
/// the run's.
pub fn run_patch(
    p: &Pipeline,
    force: bool,
    progress: &dyn Progress,
    shard: Option<(Shard, &Path)>,
) -> Result<Outcome> {
    let t = target(p)?;
    let layout = RunLayout::new(p.run_dir());
    let out = match shard {
        Some((_, dir)) => RunLayout::new(dir),
        None => layout.clone(),
    };
    let (study, mut m) = load(
        p,
        "patch",
        serde_json::json!({ "analysis": t, "patch": p.patch, "batch_size": p.extract.batch_size }),
    )?;
    let (names, inputs) = read::extracted_partitions(
        layout.root(),
        t.sites.iter().map(|s| s.name()),
        p.extract.layers.listed(),
    )?;
    m.inputs(inputs);
    let work: Vec<(Site, usize)> = names
        .into_iter()
        .map(|(name, layer)| {
            let site = t
                .sites
                .iter()
                .find(|s| s.name() == name)
                .expect("from t.sites");
            (site.clone(), layer)
        })
        .collect();
    m.input_table(&layout, tables::PAIRS)?;
    m.input_table(&layout, tables::COEFFICIENTS)?;
    if !force && m.tables_fresh(&layout, &[tables::PATCHING, tables::PATCHING_SUMMARY]) {
        return Ok(Outcome::UpToDate);
    }
    m.begin();
    let pairs = read_pairs(&layout, t.position)?;
    let batch = p.extract.batch_size.max(1);
    let pairs = match shard {
        Some((s, _)) => pairs[s.range(pairs.len(), batch)].to_vec(),
        None => pairs,
    };
    let held_out = held_out_numbers(&layout)?;
    let plans = plan_layers(p, &t, &layout, &work, &pairs)?;
    let total: usize = plans.iter().map(|x| x.kinds.len()).sum::<usize>() * pairs.len();
    progress.start("patch", total as u64);
    // The unbatched mode (one pair per forward, every forward from the embedding) exists to
    // measure what batching and resuming save; it must give the same numbers.
    let unbatched = std::env::var_os("HELIXLAB_PATCH_UNBATCHED").is_some();
    let mut rows = Rows::default();
    let mut timing = PatchTiming {
        forwards: 0,
        token_blocks_run: 0,
        token_blocks_full: 0,
    };
    let chunk_size = if unbatched {
        1
    } else {
        p.extract.batch_size.max(1)
    };
    for chunk in pairs.chunks(chunk_size) {
        patch_chunk(
            p,
            &study.model,
            &study.tokenizer,
            PatchBatch {
                t: &t,
                chunk,
                plans: &plans,
                held_out: &held_out,
                unbatched,
            },
            &mut rows,
            &mut timing,
            progress,
        )?;
    }
    progress.finish();
    if shard.is_some() {
        let table = patching_table(&t, rows);
        m.write_table(&out, tables::PATCHING, &table)?;
        return Ok(m.outcome());
    }
    let summary = summarize(&rows, &p.fit.periods);
    let table = patching_table(&t, rows);
    m.write_table(&layout, tables::PATCHING, &table)?;
    m.write_table(&layout, tables::PATCHING_SUMMARY, &summary)?;
    // How much resuming saved, measured on this run (not part of the manifest, which is
    // compared on reruns).
    let timing_json = serde_json::json!({
        "mode": if unbatched { "unbatched: one pair per forward, no resume" } else { "batched, resumed at the patched layer and position" },
        "forwards": timing.forwards,
        "token_blocks_run": timing.token_blocks_run,
        "token_blocks_if_one_full_forward_per_patch": timing.token_blocks_full,
        "wall_s": m.elapsed(),
    });
    helixlab_store::atomic::write(
        &layout.patch_timing(),
        (serde_json::to_string_pretty(&timing_json).expect("json") + "\n").as_bytes(),
    )?;
    Ok(m.outcome())
}

/// After the shards of `patch` are gathered: `patch/patching_summary.parquet` from every row
/// of `patch/patching.parquet`, with that table's manifest (the work is the same), as the
/// unsharded stage writes it. Does nothing when the summary is current.
pub fn summarize_gathered(p: &Pipeline) -> Result<()> {
    let layout = RunLayout::new(p.run_dir());
    let (rows_path, summary_path) = (
        layout.path(tables::PATCHING),
        layout.path(tables::PATCHING_SUMMARY),
    );
    let Some(mut manifest) = Manifest::verified_for(&rows_path, "run `helixlab patch` first")?
    else {
        return Err(layout.missing(tables::PATCHING).into());
    };
    if manifest.is_fresh(&summary_path) {
        return Ok(());
    }
    let f = Frame::open(&rows_path)?.ok_or_else(|| layout.missing(tables::PATCHING))?;
    let u32s =
        |c: &str| -> Result<Vec<u32>> { Ok(f.i64(c)?.into_iter().map(|v| v as u32).collect()) };
    let rows = Rows {
        site: f.str("site")?,
        layer: u32s("layer")?,
        kind: f.str("kind")?,
        pair_id: u32s("pair_id")?,
        clean_number: f.i64("clean_number")?,
        corrupt_number: f.i64("corrupt_number")?,
        scores: Scores::from_frame(&f)?,
        clean_correct: f.bool("clean_correct")?,
        corrupt_held_out: f.bool("corrupt_held_out")?,
    };
    let summary = summarize(&rows, &p.fit.periods);
    manifest.rows = summary.rows() as u64;
    manifest.parts.clear();
    summary.write(&summary_path, &manifest)?;
    Ok(())
}

/// One batch of pairs for [`patch_chunk`].
struct PatchBatch<'a> {
    t: &'a AnalysisTarget,
    chunk: &'a [Pair],
    plans: &'a [LayerPlan],
    held_out: &'a BTreeSet<i64>,
    unbatched: bool,
}

/// One clean forward for a batch of pairs, then one patched forward per (site, layer, kind),
/// resumed at the patched layer where the hook is a block's input.
// Long (about 105 lines) because the clean forward, each patched forward resumed from it and the
// row bookkeeping share one batch's tensors.
fn patch_chunk(
    p: &Pipeline,
    model: &Model,
    tok: &helixlab_model::Tokenizer,
    b: PatchBatch<'_>,
    rows: &mut Rows,
    timing: &mut PatchTiming,
    progress: &dyn Progress,
) -> Result<()> {
    let PatchBatch {
        t,
        chunk,
        plans,
        held_out,
        unbatched,
    } = b;
    let n_layers = model.config().n_layers;
    let prompts = prompt_ids(tok, p, chunk.iter().map(|pr| &pr.clean))?;
    let answers = AnswerScoring::corrupt(model, chunk);
    let seqs = answers.sequences(prompts);
    let batch = model.batch(&seqs)?;
    // One clean forward: its logits and the residual stream entering every block. Prompts
    // that share a prefix (the paper's instruction) run it once, as in extraction.
    let req = answers.request(clean_run_request(n_layers));
    let split = (p.extract.share_prefixes
        && !unbatched
        && !answers.is_forced()
        && model.config().arch.is_causal_lm())
    .then(|| shared_prefix_split(&seqs))
    .flatten();
    // The clean run records its keys and values: a patched forward runs only the positions
    // from the patched one on (the ones before it cannot see the patch).
    let (clean, cache) = match split {
        Some(split) => {
            let (out, cache) = model.forward_shared_prefix_recording(&seqs, split, &req)?;
            (out, Some(cache))
        }
        None if !unbatched => helixlab_study::clean_forward(p, model, &batch, &req)?,
        None => (model.forward(&batch, &req)?, None),
    };
    let tokens = chunk.len() * batch.seq_len;
    timing.forwards += 1;
    timing.token_blocks_run += n_layers * tokens;
    let clean_scored = answers.score(&clean)?;
    for plan in plans {
        let hook = plan.site.at(plan.layer);
        for kind in &plan.kinds {
            let d = plan.acts.x.ncols();
            let mut values = Vec::with_capacity(chunk.len() * d);
            for pair in chunk {
                let v = plan.acts.patch(
                    kind,
                    operand_of(t, pair, false),
                    pair.corrupt.prompt_id,
                    pair.clean.prompt_id,
                    &plan.fits,
                )?;
                values.extend(v.iter().map(|&x| x as f32));
            }
            let value = Tensor::from_vec(values, (chunk.len(), 1, d), model.device())?
                .to_dtype(model.dtype())?;
            let at = plan.positions(chunk)?;
            let mut req =
                answers.request(ForwardRequest::new().replace(hook, answers.shift(&at), value));
            // Resume at the patched block from the clean residual stream when the hook
            // is that block's input: the blocks before it would compute the same thing.
            if let (HookPoint::ResidPre(l), false) = (hook, unbatched) {
                req = req.resume(l, clean.capture(HookPoint::ResidPre(l))?.clone());
            }
            let out = helixlab_study::patched_forward(model, &batch, cache.as_ref(), &req)?;
            timing.token_blocks_run += out.layers_run.len() * out.positions_run.len() * chunk.len();
            timing.token_blocks_full += n_layers * tokens;
            timing.forwards += 1;
            let scored = answers.score(&out)?;
            for (i, pair) in chunk.iter().enumerate() {
                let top = rows.scores.push_scored(pair, &clean_scored, &scored, i);
                rows.site.push(plan.site.name().to_string());
                rows.layer.push(plan.layer as u32);
                rows.kind.push(kind.to_string());
                rows.pair_id.push(pair.pair_id);
                rows.clean_number.push(operand_of(t, pair, true));
                rows.corrupt_number.push(operand_of(t, pair, false));
                rows.clean_correct
                    .push(top == pair.clean.answer_token as usize);
                rows.corrupt_held_out
                    .push(held_out.contains(&operand_of(t, pair, false)));
            }
            progress.advance(chunk.len() as u64);
        }
    }
    Ok(())
}

/// patching.parquet: one row per pair x site x layer x kind.
fn patching_table(t: &AnalysisTarget, rows: Rows) -> Table {
    let n = rows.kind.len();
    let table = Table::new()
        .column("operand", Values::Str(vec![t.position.to_string(); n]))
        .column("site", Values::Str(rows.site))
        .column("layer", Values::U32(rows.layer))
        .column("kind", Values::Str(rows.kind))
        .column("pair_id", Values::U32(rows.pair_id))
        .column("run", Values::Str(vec!["clean".into(); n]))
        .column("patched_from", Values::Str(vec!["corrupt".into(); n]))
        .column("clean_number", Values::I64(rows.clean_number))
        .column("corrupt_number", Values::I64(rows.corrupt_number));
    rows.scores
        .columns(table)
        .column("clean_correct", Values::Bool(rows.clean_correct))
        .column("corrupt_held_out", Values::Bool(rows.corrupt_held_out))
}
