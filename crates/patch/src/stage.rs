//! `helixlab pairs` (-> `<run>/patch/pairs.parquet`) and `helixlab patch`
//! (-> `<run>/patch/patching.parquet`, one row per pair x site x layer x patch kind, and
//! `patching_summary.parquet`, the means the figures plot).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Tensor};
use helixlab_model::{
    dtype_name, parse_device, parse_dtype, ForwardRequest, HookPoint, LoadOptions, Logits,
};
use helixlab_model::{shared_prefix_split, Model, Positions, Tokenizer};
use helixlab_pipeline::{AnalysisTarget, Pipeline};
use helixlab_store::manifest::{now_unix, sha256_file};
use helixlab_store::read;
use helixlab_store::stage::{Outcome, Progress};
use helixlab_store::table::{Table, Values};
use helixlab_store::{Manifest, ModelFacts, ModelIdentity};
use polars::prelude::{col, lit};

use crate::pairs::{draw, problems, Pair};
use crate::patches::{fit_predictors, Kind, NumberActivations};
use crate::{PatchError, Result};

/// Where the stages write table `name`.
pub fn table_path(run_dir: &Path, name: &str) -> PathBuf {
    run_dir.join("patch").join(format!("{name}.parquet"))
}

fn target(p: &Pipeline) -> Result<AnalysisTarget> {
    let t = p.analysis_target().map_err(|(field, message)| {
        PatchError::Input(format!("{}: {field}: {message}", p.path.display()))
    })?;
    if t.position != "a" && t.position != "b" {
        return Err(PatchError::Input(format!(
            "{}: analysis.position: patching varies an operand at its own token (a or b), \
             not `{}`",
            p.path.display(),
            t.position
        )));
    }
    Ok(t)
}

pub(crate) fn manifest(p: &Pipeline, stage: &str, settings: serde_json::Value) -> Manifest {
    Manifest {
        stage: stage.into(),
        settings,
        inputs: Default::default(),
        model: None,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        completed_unix: 0,
        rows: 0,
        wall_s: 0.0,
    }
    .with_pipeline(p)
}

/// The study's model and tokenizer, and a manifest for `stage` with `settings` that names the
/// model it was made with.
pub(crate) fn load_with_manifest(
    p: &Pipeline,
    stage: &str,
    settings: serde_json::Value,
) -> Result<(Model, Tokenizer, Manifest)> {
    let opts = LoadOptions {
        dtype: parse_dtype(&p.model.dtype)?,
        device: parse_device(&p.model.device)?,
    };
    let model = Model::load(&p.model_dir(), &opts)?;
    let tok = Tokenizer::for_checkpoint(&p.model_dir())?;
    let mut m = manifest(p, stage, settings);
    m.model = Some(ModelIdentity::describe(
        &p.model.dir,
        ModelFacts {
            architecture: model.config().arch.model_type(),
            config_sha256: model.config_sha256(),
            weight_files: model.weight_files(),
            stored_types: model.stored_types(),
            compute_dtype: dtype_name(model.dtype()),
        },
        &p.model.dtype,
        &p.model.device,
    )?);
    Ok((model, tok, m))
}

/// Records the table at `path` as an input of `m` (its manifest's hash), or says which stage
/// writes it (`hint`).
pub(crate) fn add_input(m: &mut Manifest, path: &Path, hint: &str) -> Result<()> {
    let sha = sha256_file(&Manifest::path_for(path)).map_err(|_| {
        PatchError::Store(helixlab_store::StoreError::Missing {
            path: path.to_path_buf(),
            hint: hint.into(),
        })
    })?;
    m.inputs.insert(path.display().to_string(), sha);
    Ok(())
}

trait WithPipeline {
    fn with_pipeline(self, p: &Pipeline) -> Self;
}

impl WithPipeline for Manifest {
    fn with_pipeline(mut self, p: &Pipeline) -> Self {
        if let serde_json::Value::Object(m) = &mut self.settings {
            m.insert("pipeline".into(), serde_json::json!(p.name));
        }
        self
    }
}

/// `helixlab pairs`: draws the pairs unless pairs.parquet is current (or `force`).
pub fn run_pairs(p: &Pipeline, force: bool) -> Result<Outcome> {
    let t = target(p)?;
    let run = p.run_dir();
    let problems_path = run.join("problems.parquet");
    let mut m = manifest(
        p,
        "pairs",
        serde_json::json!({ "operand": t.position, "patch": p.patch }),
    );
    add_input(&mut m, &problems_path, "run `helixlab accuracy` first")?;
    let path = table_path(&run, "pairs");
    if !force && m.is_fresh(&path) {
        return Ok(Outcome::UpToDate);
    }
    let start = Instant::now();
    let problems = problems(&run, p.patch.correct_only)?;
    // The operand's pairs (E3), then the last-token pairs (E4, E5), each from the same seed.
    let mut pairs = Vec::new();
    for operand in [t.position.as_str(), "last"] {
        let drawn = draw(&problems, operand, p.patch.pairs, p.patch.seed)?;
        if drawn.is_empty() {
            return Err(PatchError::Input(format!(
                "{}: no clean/corrupt pairs for `{operand}`: the model gets too few problems right",
                problems_path.display()
            )));
        }
        pairs.extend(drawn.into_iter().map(|x| (operand.to_string(), x)));
    }
    let col_u32 = |f: &dyn Fn(&Pair) -> u32| Values::U32(pairs.iter().map(|x| f(&x.1)).collect());
    let col_i64 = |f: &dyn Fn(&Pair) -> i64| Values::I64(pairs.iter().map(|x| f(&x.1)).collect());
    let table = Table::new()
        .column(
            "operand",
            Values::Str(pairs.iter().map(|x| x.0.clone()).collect()),
        )
        .column("pair_id", col_u32(&|x| x.pair_id))
        .column("clean_prompt_id", col_u32(&|x| x.clean.prompt_id))
        .column("corrupt_prompt_id", col_u32(&|x| x.corrupt.prompt_id))
        .column("clean_a", col_i64(&|x| x.clean.a))
        .column("clean_b", col_i64(&|x| x.clean.b.unwrap_or(-1)))
        .column("corrupt_a", col_i64(&|x| x.corrupt.a))
        .column("corrupt_b", col_i64(&|x| x.corrupt.b.unwrap_or(-1)))
        .column("clean_answer", col_i64(&|x| x.clean.answer))
        .column("corrupt_answer", col_i64(&|x| x.corrupt.answer));
    m.completed_unix = now_unix();
    m.wall_s = start.elapsed().as_secs_f64();
    table.write(&path, &m)?;
    Ok(Outcome::Wrote {
        tables: vec![path],
        rows: pairs.len() as u64,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The pairs of pairs.parquet for `operand` (`a`, `b` or `last`), joined with their problems.
pub(crate) fn read_pairs(run: &Path, operand: &str) -> Result<Vec<Pair>> {
    let path = table_path(run, "pairs");
    if Manifest::read_for(&path).is_none() {
        return Err(PatchError::Store(helixlab_store::StoreError::Missing {
            path,
            hint: "run `helixlab pairs` first".into(),
        }));
    }
    let e = |source| {
        PatchError::Store(helixlab_store::StoreError::Polars {
            path: path.clone(),
            source,
        })
    };
    let df = read::scan(&path)?
        .filter(col("operand").eq(lit(operand)))
        .collect()
        .map_err(e)?;
    if df.height() == 0 {
        return Err(PatchError::Input(format!(
            "{}: no pairs for `{operand}`; rerun `helixlab pairs`",
            path.display()
        )));
    }
    let ids = |c: &str| -> Result<Vec<u32>> {
        Ok(df
            .column(c)
            .map_err(e)?
            .u32()
            .map_err(e)?
            .into_no_null_iter()
            .collect())
    };
    let (pid, clean, corrupt) = (
        ids("pair_id")?,
        ids("clean_prompt_id")?,
        ids("corrupt_prompt_id")?,
    );
    let by_id: BTreeMap<u32, _> = problems(run, false)?
        .into_iter()
        .map(|p| (p.prompt_id, p))
        .collect();
    let get = |id: u32| {
        by_id.get(&id).cloned().ok_or_else(|| {
            PatchError::Input(format!(
                "{}: prompt {id} is not in problems.parquet any more; rerun `helixlab pairs`",
                path.display()
            ))
        })
    };
    (0..pid.len())
        .map(|i| {
            Ok(Pair {
                pair_id: pid[i],
                clean: get(clean[i])?,
                corrupt: get(corrupt[i])?,
            })
        })
        .collect()
}

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
        logit_diff: mean(&rows.logit_diff),
        normalized: mean(&rows.normalized),
        accuracy: share(&rows.correct),
        clean_accuracy: share(&rows.clean_correct),
        logit_diff_held_out: if held.is_empty() {
            f64::NAN
        } else {
            held.iter().map(|&i| rows.logit_diff[i]).sum::<f64>() / held.len() as f64
        },
    }
}

/// Means per (site, layer, kind), then for each number of periods the best subset of the
/// paper's periods (`helix_best<params>`): chosen by its mean logit difference over layers on
/// the even pairs, reported on the odd ones, so the choice is not scored on the pairs that
/// made it (the original code never updated its running best).
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
        if kind == "helix" {
            return Some(paper.len());
        }
        let inner = kind.strip_prefix("helix[")?.strip_suffix(']')?;
        Some(inner.split(',').count())
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
                        sel.iter().map(|&i| rows.logit_diff[i]).sum::<f64>()
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
                    let key = (s.clone(), *layer, format!("helix_best{}", 2 * n + 1));
                    out.push(summary_row(rows, &key, &eval, best));
                }
            }
        }
    }
    Table::new()
        .column(
            "site",
            Values::Str(out.iter().map(|r| r.site.clone()).collect()),
        )
        .column("layer", Values::U32(out.iter().map(|r| r.layer).collect()))
        .column(
            "kind",
            Values::Str(out.iter().map(|r| r.kind.clone()).collect()),
        )
        .column(
            "chosen",
            Values::Str(out.iter().map(|r| r.chosen.clone()).collect()),
        )
        .column(
            "pairs",
            Values::U32(out.iter().map(|r| r.pairs as u32).collect()),
        )
        .column(
            "logit_diff",
            Values::F64(out.iter().map(|r| r.logit_diff).collect()),
        )
        .column(
            "normalized",
            Values::F64(out.iter().map(|r| r.normalized).collect()),
        )
        .column(
            "accuracy",
            Values::F64(out.iter().map(|r| r.accuracy).collect()),
        )
        .column(
            "clean_accuracy",
            Values::F64(out.iter().map(|r| r.clean_accuracy).collect()),
        )
        .column(
            "logit_diff_held_out",
            Values::F64(out.iter().map(|r| r.logit_diff_held_out).collect()),
        )
}

/// The numbers the fit stage held out (fit/split.parquet).
fn held_out_numbers(run: &Path) -> Result<std::collections::BTreeSet<i64>> {
    let path = run.join("fit").join("split.parquet");
    let e = |source| {
        PatchError::Store(helixlab_store::StoreError::Polars {
            path: path.clone(),
            source,
        })
    };
    let df = read::scan(&path)?.collect().map_err(e)?;
    let x = df.column("x").map_err(e)?.i64().map_err(e)?.clone();
    let h = df.column("held_out").map_err(e)?.bool().map_err(e)?.clone();
    Ok((0..df.height())
        .filter(|&i| h.get(i) == Some(true))
        .filter_map(|i| x.get(i))
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
    clean_logit: Vec<f64>,
    patched_logit: Vec<f64>,
    corrupt_logit: Vec<f64>,
    logit_diff: Vec<f64>,
    normalized: Vec<f64>,
    correct: Vec<bool>,
    clean_correct: Vec<bool>,
    corrupt_held_out: Vec<bool>,
}

/// What the patch stage measured about its own speed.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchTiming {
    /// Forwards run (batches), including the clean ones.
    pub forwards: usize,
    /// Blocks run over all forwards (a resumed forward runs only the blocks after the patch).
    pub blocks_run: usize,
    /// Blocks a full forward per patch would have run.
    pub blocks_full: usize,
}

/// `helixlab patch`: patches the analysed operand's token, every analysed site and layer,
/// every kind, for every pair.
pub fn run_patch(p: &Pipeline, force: bool, progress: &dyn Progress) -> Result<Outcome> {
    let t = target(p)?;
    let run = p.run_dir();
    let (model, tok, mut m) = load_with_manifest(
        p,
        "patch",
        serde_json::json!({ "analysis": t, "patch": p.patch, "batch_size": p.extract.batch_size }),
    )?;
    let (names, inputs) = read::extracted_partitions(&run, t.sites.iter().map(|s| s.name()))?;
    m.inputs.extend(inputs);
    let work: Vec<_> = names
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
    for table in ["patch/pairs.parquet", "fit/coefficients.parquet"] {
        let path = run.join(table);
        let sha = sha256_file(&Manifest::path_for(&path)).map_err(|_| {
            PatchError::Store(helixlab_store::StoreError::Missing {
                path: path.clone(),
                hint: "run `helixlab pairs` and `helixlab fit` first".into(),
            })
        })?;
        m.inputs.insert(path.display().to_string(), sha);
    }
    let out_path = table_path(&run, "patching");
    let summary_path = table_path(&run, "patching_summary");
    if !force && m.is_fresh(&out_path) && m.is_fresh(&summary_path) {
        return Ok(Outcome::UpToDate);
    }
    let start = Instant::now();
    let pairs = read_pairs(&run, &t.position)?;
    let held_out = held_out_numbers(&run)?;
    let operand = |pair: &Pair, clean: bool| -> i64 {
        let pr = if clean { &pair.clean } else { &pair.corrupt };
        if t.position == "b" {
            pr.b.unwrap_or(0)
        } else {
            pr.a
        }
    };
    // Patch values per (site, layer): from the tables.
    let max_k = p.patch.pca_ks.iter().copied().max().unwrap_or(1);
    let needed: std::collections::BTreeSet<u32> = pairs
        .iter()
        .flat_map(|x| [x.clean.prompt_id, x.corrupt.prompt_id])
        .collect();
    let mut plans = Vec::new();
    for (site, layer) in &work {
        let acts = NumberActivations::load(
            &run,
            site.name(),
            *layer,
            &t.position,
            &t.number_column,
            t.range,
            max_k,
            &needed,
        )?;
        let fits = fit_predictors(&run, site.name(), *layer)?;
        let mut kinds = vec![Kind::Layer];
        kinds.extend(p.patch.pca_ks.iter().map(|&k| Kind::Pca(k)));
        kinds.extend(fits.iter().map(|f| Kind::Fit(f.variant.clone())));
        kinds.push(Kind::Mean);
        if fits.iter().any(|f| f.variant == "helix") {
            kinds.push(Kind::AblateFit("helix".into()));
        }
        if !p.patch.kinds.is_empty() {
            if let Some(missing) = p
                .patch
                .kinds
                .iter()
                .find(|k| !kinds.iter().any(|x| &x.name() == *k))
            {
                return Err(PatchError::Input(format!(
                    "{}: patch.kinds: no patch kind `{missing}` at {} layer {layer} (there \
                     are: {})",
                    p.path.display(),
                    site.name(),
                    kinds
                        .iter()
                        .map(|k| k.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            kinds.retain(|k| p.patch.kinds.contains(&k.name()));
        }
        let offset = read::position_offset(&run, site.name(), *layer, &t.position)?;
        plans.push((site.clone(), *layer, acts, fits, kinds, offset));
    }
    let n_layers = model.config().n_layers;
    let total: usize = plans.iter().map(|x| x.4.len()).sum::<usize>() * pairs.len();
    progress.start("patch", total as u64);
    let mut rows = Rows::default();
    let mut timing = PatchTiming {
        forwards: 0,
        blocks_run: 0,
        blocks_full: 0,
    };
    let f32s =
        |t: Tensor| -> Result<Vec<Vec<f32>>> { Ok(t.to_dtype(DType::F32)?.to_vec2::<f32>()?) };
    // The unbatched mode (one pair per forward, every forward from the embedding) exists to
    // measure what batching and resuming save; it must give the same numbers.
    let unbatched = std::env::var_os("HELIXLAB_PATCH_UNBATCHED").is_some();
    let chunk_size = if unbatched {
        1
    } else {
        p.extract.batch_size.max(1)
    };
    for chunk in pairs.chunks(chunk_size) {
        let seqs: Vec<Vec<u32>> = chunk
            .iter()
            .map(|pr| tok.encode(&pr.clean.prompt, p.task.special_tokens))
            .collect::<std::result::Result<_, _>>()?;
        let batch = model.batch(&seqs)?;
        // One clean forward: its logits and the residual stream entering every block. Prompts
        // that share a prefix (the paper's instruction) run it once, as in extraction.
        let mut req = ForwardRequest::new().logits(Logits::Last);
        for l in 0..n_layers {
            req = req.capture(HookPoint::ResidPre(l), Positions::All);
        }
        let split = (p.extract.share_prefixes && !unbatched && model.config().arch.is_causal_lm())
            .then(|| shared_prefix_split(&seqs))
            .flatten();
        let clean = match split {
            Some(split) => model.forward_shared_prefix(&seqs, split, &req)?,
            None => model.forward(&batch, &req)?,
        };
        timing.forwards += 1;
        timing.blocks_run += n_layers;
        let clean_logits = f32s(clean.logits.expect("asked for logits"))?;
        for (site, layer, acts, fits, kinds, offset) in &plans {
            let hook = site.at(*layer);
            for kind in kinds {
                let mut values = Vec::with_capacity(chunk.len() * acts.x.ncols());
                for pair in chunk {
                    let v = acts.patch(
                        kind,
                        operand(pair, false),
                        pair.corrupt.prompt_id,
                        pair.clean.prompt_id,
                        fits,
                    )?;
                    values.extend(v.iter().map(|&x| x as f32));
                }
                let d = acts.x.ncols();
                let value = Tensor::from_vec(values, (chunk.len(), 1, d), model.device())?
                    .to_dtype(model.dtype())?;
                let mut req = ForwardRequest::new().logits(Logits::Last).replace(
                    hook,
                    Positions::At(vec![*offset]),
                    value,
                );
                // Resume at the patched block from the clean residual stream when the hook
                // is that block's input: the blocks before it would compute the same thing.
                if let (HookPoint::ResidPre(l), false) = (hook, unbatched) {
                    req = req.resume(l, clean.captures[l].clone());
                    timing.blocks_run += n_layers - l;
                } else {
                    timing.blocks_run += n_layers;
                }
                timing.blocks_full += n_layers;
                timing.forwards += 1;
                let out = model.forward(&batch, &req)?;
                let logits = f32s(out.logits.expect("asked for logits"))?;
                for (i, pair) in chunk.iter().enumerate() {
                    let target = pair.corrupt.answer_token as usize;
                    let clean_l = clean_logits[i][target] as f64;
                    let patched = logits[i][target] as f64;
                    let corrupt = pair.corrupt.answer_logit as f64;
                    let argmax = logits[i]
                        .iter()
                        .enumerate()
                        .fold(
                            (0, f32::NEG_INFINITY),
                            |b, (j, &v)| if v > b.1 { (j, v) } else { b },
                        )
                        .0;
                    rows.site.push(site.name().to_string());
                    rows.layer.push(*layer as u32);
                    rows.kind.push(kind.name());
                    rows.pair_id.push(pair.pair_id);
                    rows.clean_number.push(operand(pair, true));
                    rows.corrupt_number.push(operand(pair, false));
                    rows.clean_logit.push(clean_l);
                    rows.patched_logit.push(patched);
                    rows.corrupt_logit.push(corrupt);
                    rows.logit_diff.push(patched - clean_l);
                    rows.normalized.push(if corrupt != clean_l {
                        (patched - clean_l) / (corrupt - clean_l)
                    } else {
                        f64::NAN
                    });
                    rows.correct.push(argmax == target);
                    rows.clean_correct
                        .push(argmax == pair.clean.answer_token as usize);
                    rows.corrupt_held_out
                        .push(held_out.contains(&operand(pair, false)));
                }
                progress.advance(chunk.len() as u64);
            }
        }
    }
    progress.finish();
    let summary = summarize(&rows, &p.fit.periods);
    let n = rows.kind.len();
    let table = Table::new()
        .column("operand", Values::Str(vec![t.position.clone(); n]))
        .column("site", Values::Str(rows.site))
        .column("layer", Values::U32(rows.layer))
        .column("kind", Values::Str(rows.kind))
        .column("pair_id", Values::U32(rows.pair_id))
        .column("run", Values::Str(vec!["clean".into(); n]))
        .column("patched_from", Values::Str(vec!["corrupt".into(); n]))
        .column("clean_number", Values::I64(rows.clean_number))
        .column("corrupt_number", Values::I64(rows.corrupt_number))
        .column("clean_logit", Values::F64(rows.clean_logit))
        .column("patched_logit", Values::F64(rows.patched_logit))
        .column("corrupt_logit", Values::F64(rows.corrupt_logit))
        .column("logit_diff", Values::F64(rows.logit_diff))
        .column("normalized", Values::F64(rows.normalized))
        .column("correct", Values::Bool(rows.correct))
        .column("clean_correct", Values::Bool(rows.clean_correct))
        .column("corrupt_held_out", Values::Bool(rows.corrupt_held_out));
    m.completed_unix = now_unix();
    m.wall_s = start.elapsed().as_secs_f64();
    table.write(&out_path, &m)?;
    summary.write(&summary_path, &m)?;
    // How much resuming saved, measured on this run (not part of the manifest, which is
    // compared on reruns).
    let timing_json = serde_json::json!({
        "mode": if unbatched { "unbatched: one pair per forward, no resume" } else { "batched, resumed at the patched layer" },
        "forwards": timing.forwards,
        "blocks_run": timing.blocks_run,
        "blocks_if_one_full_forward_per_patch": timing.blocks_full,
        "wall_s": start.elapsed().as_secs_f64(),
    });
    helixlab_store::atomic::write(
        &run.join("patch").join("timing.json"),
        (serde_json::to_string_pretty(&timing_json).expect("json") + "\n").as_bytes(),
    )?;
    Ok(Outcome::Wrote {
        tables: vec![out_path, summary_path],
        rows: n as u64,
        seconds: start.elapsed().as_secs_f64(),
    })
}
