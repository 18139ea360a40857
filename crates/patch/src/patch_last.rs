//! `helixlab patch-last` (docs/method.md E4): does the last token hold a + b as a helix?
//!
//! At `hook_resid_post` of every layer, last position, over every correct problem: PCA (to
//! `patch.last_pca_dim` components), then the multi-number helices helix(a+b) (9 parameters),
//! helix(a,b) (18) and helix(a,b,a+b) (27), fitted like E3 (`last_fits.parquet`: R^2 of each,
//! and of the PCA-k baselines). Then for every last-token pair (any two correct problems with
//! different answers) the clean run's last position is replaced at that layer by: the corrupt
//! run's activation (`layer`), its PCA-k projection (`pca9`, `pca27`), or each helix's
//! prediction for the corrupt (a', b'), and scored by the paper's logit difference
//! (`last_token.parquet`, `last_token_summary.parquet`).
//!
//! The fits are made here rather than in the fit stage: they need every problem's row (not one
//! row per number) and exist only to be patched and compared.

use std::collections::{BTreeMap, BTreeSet};

use candle_core::Tensor;
use helixlab_model::Positions;
use helixlab_model::{ForwardRequest, HookPoint};
use helixlab_numeric::multi_helix::{MultiFit, MultiHelix};
use helixlab_numeric::stats::r2;
use helixlab_numeric::Pca;
use helixlab_pipeline::{Pipeline, TaskKind};
use helixlab_store::read;
use helixlab_store::stage::{Outcome, Progress};
use helixlab_store::table::{Table, Values};
use helixlab_study::answers::AnswerScoring;
use ndarray::{Array1, Array2, Axis};

use crate::effects::{means_table, Effect, EffectKey, EffectRows, Patched};
use crate::inputs::{clean_run_request, load, prompt_ids, read_pairs};
use crate::pairs::{problems, Pair};
use crate::{PatchError, Result};
use helixlab_pipeline::Position;
use helixlab_store::shard::Shard;
use helixlab_store::{tables, Frame, Manifest, RunLayout};
use std::path::Path;

/// The site of the experiment.
pub const SITE: &str = "hook_resid_post";

/// last_fits.parquet, column-wise: layer, variant, parameters, PCA size, R^2.
type FitRows = (Vec<u32>, Vec<String>, Vec<u32>, Vec<u32>, Vec<f64>);

/// One layer's patch values.
struct LayerPlan {
    layer: usize,
    offset: i64,
    pca: Pca,
    fits: Vec<(String, MultiFit)>,
    /// The extracted activation of each prompt a pair uses.
    prompts: BTreeMap<u32, Array1<f64>>,
}

/// What is patched in, by kind name.
fn patch_value(plan: &LayerPlan, kind: &str, pair: &Pair) -> Result<Array1<f64>> {
    let own = |id: u32| {
        plan.prompts
            .get(&id)
            .cloned()
            .ok_or_else(|| PatchError::Input(format!("prompt {id} has no extracted activation")))
    };
    if kind == "layer" {
        return own(pair.corrupt.prompt_id);
    }
    if let Some(k) = kind.strip_prefix("pca") {
        let k: usize = k.parse().expect("named by this module");
        let r = own(pair.corrupt.prompt_id)?.insert_axis(Axis(0));
        return Ok(plan.pca.reconstruct(r.view(), k).row(0).to_owned());
    }
    let (_, fit) = plan
        .fits
        .iter()
        .find(|(n, _)| n == kind)
        .expect("kinds come from the plan");
    let ab = [(pair.corrupt.a, pair.corrupt.b.unwrap_or(0))];
    Ok(fit.predict(&ab).row(0).to_owned())
}

/// `helixlab patch-last`: fits and patches the last token at every layer.
///
/// With a `shard` (its index and the directory it writes to), only its slice of the pairs
/// (whole batches) is patched and only `patch/last_token.parquet` is written there; the
/// summary and the fits are made after gathering ([`finish_gathered`]). Inputs are always the
/// run's.
// Long (about 130 lines) because the patched forwards of every batch share the clean run's
// captures; the fits and patch values are in helpers.
pub fn run_last(
    p: &Pipeline,
    force: bool,
    progress: &dyn Progress,
    shard: Option<(Shard, &Path)>,
) -> Result<Outcome> {
    let run = RunLayout::new(p.run_dir());
    if p.task.kind != TaskKind::Addition {
        return Err(PatchError::Input(format!(
            "{}: task.kind: the last-token experiment fits a, b and a+b, so it needs an \
             addition task, not {:?}",
            p.path.display(),
            p.task.kind
        )));
    }
    let (study, mut m) = load(
        p,
        "patch-last",
        serde_json::json!({
            "site": SITE, "position": "last", "periods": p.fit.periods,
            "patch": p.patch, "batch_size": p.extract.batch_size,
        }),
    )?;
    let (names, inputs) =
        read::extracted_partitions(run.root(), [SITE], p.extract.layers.listed())?;
    m.inputs(inputs);
    m.input_table(&run, tables::PAIRS)?;
    let outputs = [
        tables::LAST_TOKEN,
        tables::LAST_TOKEN_SUMMARY,
        tables::LAST_FITS,
    ];
    if !force && m.tables_fresh(&run, &outputs) {
        return Ok(Outcome::UpToDate);
    }
    m.begin();
    let pairs = read_pairs(&run, Position::Last)?;
    let batch = p.extract.batch_size.max(1);
    let pairs = match shard {
        Some((s, _)) => pairs[s.range(pairs.len(), batch)].to_vec(),
        None => pairs,
    };
    let needed: BTreeSet<u32> = pairs
        .iter()
        .flat_map(|x| [x.clean.prompt_id, x.corrupt.prompt_id])
        .collect();
    let mut kinds: Vec<String> = vec!["layer".into()];
    kinds.extend(p.patch.last_pca_ks.iter().map(|k| format!("pca{k}")));
    kinds.extend(
        MultiHelix::paper_sets()
            .iter()
            .map(|s| MultiHelix::variant_name(s)),
    );
    let layers: Vec<usize> = names.iter().map(|(_, l)| *l).collect();
    let (plans, fit_rows) = layer_fits(p, &run, &layers, &needed, progress)?;
    // Patches: one clean forward per batch, then each (layer, kind) resumes at that layer.
    let n_layers = study.model.config().n_layers;
    let mut rows = EffectRows::default();
    progress.start(
        "patch-last",
        (plans.len() * kinds.len() * pairs.len()) as u64,
    );
    for chunk in pairs.chunks(batch) {
        patch_chunk(
            p, &study, chunk, &plans, &kinds, n_layers, &mut rows, progress,
        )?;
    }
    progress.finish();
    if let Some((_, dir)) = shard {
        m.write_table(&RunLayout::new(dir), tables::LAST_TOKEN, &rows.table())?;
        return Ok(m.outcome());
    }
    m.write_table(&run, tables::LAST_TOKEN, &rows.table())?;
    m.write_table(
        &run,
        tables::LAST_TOKEN_SUMMARY,
        &means_table(&rows.means()),
    )?;
    m.write_table(&run, tables::LAST_FITS, &fits_table(fit_rows))?;
    Ok(m.outcome())
}

/// After the shards of `patch-last` are gathered: the summary from every row of
/// `patch/last_token.parquet` and the fits (which need no pair), with that table's manifest,
/// as the unsharded stage writes them. Does nothing when both are current.
pub fn finish_gathered(p: &Pipeline, progress: &dyn Progress) -> Result<()> {
    let run = RunLayout::new(p.run_dir());
    let rows_path = run.path(tables::LAST_TOKEN);
    let Some(mut manifest) = Manifest::verified_for(&rows_path, "run `helixlab patch-last` first")?
    else {
        return Err(run.missing(tables::LAST_TOKEN).into());
    };
    let (summary_path, fits_path) = (
        run.path(tables::LAST_TOKEN_SUMMARY),
        run.path(tables::LAST_FITS),
    );
    if manifest.is_fresh(&summary_path) && manifest.is_fresh(&fits_path) {
        return Ok(());
    }
    let f = Frame::open(&rows_path)?.ok_or_else(|| run.missing(tables::LAST_TOKEN))?;
    let summary = means_table(&EffectRows::from_frame(&f)?.means());
    let (names, _) = read::extracted_partitions(run.root(), [SITE], p.extract.layers.listed())?;
    let layers: Vec<usize> = names.iter().map(|(_, l)| *l).collect();
    let (_, fit_rows) = layer_fits(p, &run, &layers, &BTreeSet::new(), progress)?;
    let fits = fits_table(fit_rows);
    manifest.parts.clear();
    for (path, table) in [(&summary_path, &summary), (&fits_path, &fits)] {
        manifest.rows = table.rows() as u64;
        table.write(path, &manifest)?;
    }
    Ok(())
}

/// last_fits.parquet from its rows.
fn fits_table(fit_rows: FitRows) -> Table {
    Table::new()
        .column("site", Values::Str(vec![SITE.into(); fit_rows.0.len()]))
        .column("layer", Values::U32(fit_rows.0))
        .column("variant", Values::Str(fit_rows.1))
        .column("n_params", Values::U32(fit_rows.2))
        .column("pca_dim", Values::U32(fit_rows.3))
        .column("r2", Values::F64(fit_rows.4))
}

/// The fits of every layer over every correct problem, their quality, and the activations of
/// the prompts in `needed` (what the pairs patch in).
fn layer_fits(
    p: &Pipeline,
    run: &RunLayout,
    layers: &[usize],
    needed: &BTreeSet<u32>,
    progress: &dyn Progress,
) -> Result<(Vec<LayerPlan>, FitRows)> {
    let correct: BTreeSet<u32> = problems(run.root(), p.patch.correct_only)?
        .iter()
        .map(|x| x.prompt_id)
        .collect();
    let periods = p.fit.periods.clone();
    let mut plans = Vec::new();
    let mut fit_rows = FitRows::default();
    progress.start("last-token fits", layers.len() as u64);
    for layer in layers {
        let mat = read::activations(run.root(), SITE, *layer, Position::Last.name())?;
        let keep: Vec<usize> = (0..mat.rows())
            .filter(|&i| correct.contains(&mat.prompt_id[i]) && mat.b[i].is_some())
            .collect();
        if keep.len() < 10 {
            return Err(PatchError::Input(format!(
                "{SITE} layer {layer}: {} correct problems with a and b at the last token; \
                 the fits need at least 10",
                keep.len()
            )));
        }
        let ab: Vec<(i64, i64)> = keep
            .iter()
            .map(|&i| (mat.a[i], mat.b[i].expect("kept")))
            .collect();
        let mut x = Array2::zeros((keep.len(), mat.d));
        for (r, &i) in keep.iter().enumerate() {
            for (c, v) in mat.row(i).iter().enumerate() {
                x[[r, c]] = *v as f64;
            }
        }
        let pca = Pca::fit(x.view(), p.patch.last_pca_dim)?;
        let mut fits = Vec::new();
        for set in MultiHelix::paper_sets() {
            let basis = MultiHelix::for_sample(set.clone(), periods.clone(), &ab);
            let name = MultiHelix::variant_name(&set);
            let n_params = basis.n_params() as u32;
            let fit = MultiFit::fit_in(basis, &ab, x.view(), &pca)?;
            fit_rows.0.push(*layer as u32);
            fit_rows.1.push(name.clone());
            fit_rows.2.push(n_params);
            fit_rows.3.push(pca.k() as u32);
            fit_rows.4.push(r2(x.view(), fit.predict(&ab).view()));
            fits.push((name, fit));
        }
        for &k in &p.patch.last_pca_ks {
            fit_rows.0.push(*layer as u32);
            fit_rows.1.push(format!("pca{k}"));
            fit_rows.2.push(k.min(pca.k()) as u32);
            fit_rows.3.push(pca.k() as u32);
            fit_rows
                .4
                .push(r2(x.view(), pca.reconstruct(x.view(), k).view()));
        }
        let prompts = (0..mat.rows())
            .filter(|&i| needed.contains(&mat.prompt_id[i]))
            .map(|i| {
                (
                    mat.prompt_id[i],
                    mat.row(i).iter().map(|&v| v as f64).collect(),
                )
            })
            .collect();
        plans.push(LayerPlan {
            layer: *layer,
            offset: read::position_offset(run.root(), SITE, *layer, Position::Last.name())?,
            pca,
            fits,
            prompts,
        });
        progress.advance(1);
    }
    progress.finish();
    Ok((plans, fit_rows))
}

/// One batch of pairs: one clean forward, then each (layer, kind) resumed at its layer.
#[allow(clippy::too_many_arguments)]
fn patch_chunk(
    p: &Pipeline,
    study: &helixlab_study::StudyModel,
    chunk: &[Pair],
    plans: &[LayerPlan],
    kinds: &[String],
    n_layers: usize,
    rows: &mut EffectRows,
    progress: &dyn Progress,
) -> Result<()> {
    let (model, tok) = (&study.model, &study.tokenizer);
    {
        let answers = AnswerScoring::corrupt(model, chunk);
        let seqs = answers.sequences(prompt_ids(tok, p, chunk.iter().map(|pr| &pr.clean))?);
        let batch = model.batch(&seqs)?;
        // Patched forwards run only the positions from the patched one on, over the clean
        // run's keys and values.
        let (clean, cache) = helixlab_study::clean_forward(
            p,
            model,
            &batch,
            &answers.request(clean_run_request(n_layers)),
        )?;
        let clean_scored = answers.score(&clean)?;
        for plan in plans {
            for kind in kinds {
                let mut values = Vec::new();
                for pair in chunk {
                    values.extend(patch_value(plan, kind, pair)?.iter().map(|&v| v as f32));
                }
                let d = values.len() / chunk.len();
                let value = Tensor::from_vec(values, (chunk.len(), 1, d), model.device())?
                    .to_dtype(model.dtype())?;
                let req = ForwardRequest::new()
                    .replace(
                        HookPoint::ResidPost(plan.layer),
                        answers.shift(&Positions::At(vec![plan.offset])),
                        value,
                    )
                    .resume(
                        plan.layer,
                        clean.capture(HookPoint::ResidPre(plan.layer))?.clone(),
                    );
                let req = answers.request(req);
                let out = helixlab_study::patched_forward(model, &batch, cache.as_ref(), &req)?;
                let scored = answers.score(&out)?;
                for (i, pair) in chunk.iter().enumerate() {
                    let key = EffectKey {
                        component: Patched::ResidPost,
                        layer: plan.layer as u32,
                        head: None,
                        effect: Effect::Patch(kind.to_string()),
                    };
                    rows.push_scored(key, pair, &clean_scored, &scored, i);
                }
                progress.advance(chunk.len() as u64);
            }
        }
    }
    Ok(())
}
