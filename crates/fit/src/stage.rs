//! `helixlab fit`: reads the activations the pipeline's `[analysis]` section selects (and the
//! discovered periods, when `spectral` ran) and writes
//! `<run>/fit/{fits,coefficients,predictions,helix_coords,continuity,split}.parquet`.

use std::path::Path;

use discovered_table::discovered_periods;
use helixlab_numeric::stats::{mse, r2};
use helixlab_numeric::{split, Pca};
use helixlab_pipeline::{AnalysisTarget, FitName, Pipeline};
use helixlab_store::read;
use helixlab_store::stage::{Outcome, Progress};
use helixlab_store::table::{Table, Values};
use helixlab_store::{tables, RunLayout, StageRun, TableName};
use ndarray::{Array2, ArrayView2, Axis};

use crate::linear_fit::LinearFit;
use crate::variants::{variants, Family, Method};
use crate::{FitError, Result};
use helixlab_numeric::{Basis, BasisKind};

/// The tables this stage writes, in writing order.
pub const TABLES: [TableName; 6] = tables::FIT;

/// Suffix of the stored training-split fits (`helix:train`): fitted without the held-out
/// numbers.
pub const TRAIN_SUFFIX: &str = ":train";

/// Variants whose per-number predictions and helix coordinates are written.
pub const DETAILED: [FitName; 2] = [FitName::Helix, FitName::HelixDiscovered];

mod discovered_table {
    //! The discovered periods of the spectral stage (spectral/periods.parquet).
    use std::path::Path;

    use helixlab_store::Frame;

    /// Periods by (site, layer), in rank order.
    pub fn discovered_periods(
        path: &Path,
    ) -> Result<std::collections::BTreeMap<(String, u32), Vec<f64>>, String> {
        let text = |e: helixlab_store::StoreError| e.to_string();
        let f = Frame::query(path, |lf| lf).map_err(text)?;
        let (site, layer) = (f.str("site").map_err(text)?, f.i64("layer").map_err(text)?);
        let (rank, period) = (f.i64("rank").map_err(text)?, f.f64("period").map_err(text)?);
        let mut rows: Vec<(String, u32, u32, f64)> = (0..f.height())
            .map(|i| (site[i].clone(), layer[i] as u32, rank[i] as u32, period[i]))
            .collect();
        rows.sort_by_key(|r| (r.0.clone(), r.1, r.2));
        let mut out: std::collections::BTreeMap<(String, u32), Vec<f64>> = Default::default();
        for (s, l, _, t) in rows {
            out.entry((s, l)).or_default().push(t);
        }
        Ok(out)
    }
}

fn number_matrix(
    run_dir: &Path,
    target: &AnalysisTarget,
    site: &str,
    layer: usize,
) -> Result<(Vec<i64>, Array2<f64>)> {
    let m = read::activations(run_dir, site, layer, target.position.name())?;
    let rows = m
        .mean_by(target.number_column, target.range)
        .map_err(FitError::Input)?;
    if rows.numbers.len() < 8 {
        return Err(FitError::Input(format!(
            "site {site} layer {layer}: {} numbers of `{}` in {:?} at position `{}` (a fit \
             with a held-out split needs at least 8)",
            rows.numbers.len(),
            target.number,
            target.range,
            target.position
        )));
    }
    let x = Array2::from_shape_vec((rows.numbers.len(), rows.d), rows.values).expect("n x d");
    Ok((rows.numbers, x))
}

/// Scores of one variant.
struct Scores {
    r2_in: f64,
    mse_in: f64,
    r2_out: f64,
    mse_out: f64,
    n_params: usize,
    continuity_mae: Option<f64>,
}

impl Scores {
    /// R^2 and MSE of `pred` on the fitted rows and of `pred_out` on the rows left out.
    fn of(
        fitted: (ArrayView2<f64>, ArrayView2<f64>),
        left_out: (ArrayView2<f64>, ArrayView2<f64>),
        n_params: usize,
    ) -> Scores {
        Scores {
            r2_in: r2(fitted.0, fitted.1),
            mse_in: mse(fitted.0, fitted.1),
            r2_out: r2(left_out.0, left_out.1),
            mse_out: mse(left_out.0, left_out.1),
            n_params,
            continuity_mae: None,
        }
    }
}

#[derive(Default)]
struct Out {
    // fits
    f_site: Vec<String>,
    f_layer: Vec<u32>,
    f_variant: Vec<String>,
    f_family: Vec<String>,
    f_periods: Vec<Vec<f64>>,
    f_params: Vec<u32>,
    f_pca: Vec<u32>,
    f_n: Vec<u32>,
    f_train: Vec<u32>,
    f_test: Vec<u32>,
    f_r2_in: Vec<f64>,
    f_mse_in: Vec<f64>,
    f_r2_out: Vec<f64>,
    f_mse_out: Vec<f64>,
    f_cont: Vec<Option<f64>>,
    // coefficients
    c_site: Vec<String>,
    c_layer: Vec<u32>,
    c_variant: Vec<String>,
    c_basis: Vec<String>,
    c_index: Vec<u32>,
    c_scale: Vec<f64>,
    c_vec: Vec<f32>,
    // predictions
    p_site: Vec<String>,
    p_layer: Vec<u32>,
    p_variant: Vec<String>,
    p_x: Vec<i64>,
    p_held: Vec<bool>,
    p_vec: Vec<f32>,
    // helix coordinates
    h_site: Vec<String>,
    h_layer: Vec<u32>,
    h_variant: Vec<String>,
    h_x: Vec<i64>,
    h_basis: Vec<String>,
    h_value: Vec<f64>,
    // continuity
    k_site: Vec<String>,
    k_layer: Vec<u32>,
    k_x: Vec<i64>,
    k_decoded: Vec<f64>,
}

/// Runs the stage unless its tables are current (or `force`).
// Long (about 180 lines) because every variant of every (site, layer) shares one split, one set
// of PCAs and the output columns; scoring and the detail tables are in score and record_detail.
pub fn run(p: &Pipeline, force: bool, progress: &dyn Progress) -> Result<Outcome> {
    let target = p.analysis_target().map_err(|(field, message)| {
        FitError::Input(format!("{}: {field}: {message}", p.path.display()))
    })?;
    let layout = RunLayout::new(p.run_dir());
    let run_dir = layout.root();
    let cfg = &p.fit;
    let (work, inputs) = read::extracted_partitions(
        run_dir,
        target.sites.iter().map(|s| s.name()),
        p.extract.layers.listed(),
    )?;
    let mut run = StageRun::new("fit", serde_json::json!({ "analysis": target, "fit": cfg }));
    run.inputs(inputs);
    // The spectral stage's periods, when it ran: a fit of the model's own periods.
    let periods_path = layout.path(tables::PERIODS);
    let discovered = if run.optional_input_table(&layout, tables::PERIODS)? {
        Some(discovered_periods(&periods_path).map_err(FitError::Input)?)
    } else {
        None
    };
    if !force && run.tables_fresh(&layout, &TABLES) {
        return Ok(Outcome::UpToDate);
    }
    run.begin();
    let mut out = Out::default();
    let mut split_numbers: Option<(Vec<i64>, Vec<bool>)> = None;
    progress.start("fit", work.len() as u64);
    for (site, layer) in &work {
        let (numbers, x) = number_matrix(run_dir, &target, site, *layer)?;
        let n = numbers.len();
        // The split is drawn once from the seed over the numbers and must be the same numbers
        // at every (site, layer): it is stored once.
        let held_out = match &split_numbers {
            None => {
                let h = split::holdout(n, cfg.holdout, cfg.seed);
                split_numbers = Some((numbers.clone(), h.clone()));
                h
            }
            Some((nums, h)) if nums == &numbers => h.clone(),
            Some(_) => {
                return Err(FitError::Input(format!(
                    "site {site} layer {layer}: a different set of numbers than the first \
                     (site, layer); re-extract so every partition covers the same prompts"
                )))
            }
        };
        let found = discovered
            .as_ref()
            .and_then(|d| d.get(&(site.clone(), *layer as u32)).cloned())
            .filter(|v| !v.is_empty());
        let n_random = found.as_ref().map_or(cfg.periods.len(), Vec::len);
        let random = split::uniform(n_random, 2.0, n as f64, cfg.seed.wrapping_add(17));
        let list = variants(
            &cfg.periods,
            found.as_deref(),
            &random,
            &cfg.poly_degrees,
            &cfg.pca_baselines,
            cfg.continuity_digit,
        );
        let xs: Vec<f64> = numbers.iter().map(|&v| v as f64).collect();
        let samples = Samples::new(&numbers, x.view(), &held_out, cfg)?;
        for v in &list {
            let s = score(
                &v.method,
                v.family,
                &samples,
                &numbers,
                &xs,
                x.view(),
                cfg,
                &mut |d| {
                    record_detail(
                        &mut out,
                        site,
                        *layer,
                        &v.name,
                        &numbers,
                        &held_out,
                        x.view(),
                        d,
                    )
                },
            )?;
            out.f_site.push(site.clone());
            out.f_layer.push(*layer as u32);
            out.f_variant.push(v.name.to_string());
            out.f_family.push(v.family.as_str().into());
            out.f_periods.push(v.periods());
            out.f_params.push(s.n_params as u32);
            out.f_pca.push(cfg.pca_dim.min(n).min(x.ncols()) as u32);
            out.f_n.push(n as u32);
            let n_test = held_out.iter().filter(|&&h| h).count();
            out.f_train.push((n - n_test) as u32);
            out.f_test.push(n_test as u32);
            out.f_r2_in.push(s.r2_in);
            out.f_mse_in.push(s.mse_in);
            out.f_r2_out.push(s.r2_out);
            out.f_mse_out.push(s.mse_out);
            out.f_cont.push(s.continuity_mae);
        }
        progress.advance(1);
    }
    progress.finish();
    let (split_x, split_h) = split_numbers.unwrap_or_default();
    let d_model = if out.c_basis.is_empty() {
        1
    } else {
        out.c_vec.len() / out.c_basis.len()
    };
    let tables = [
        Table::new()
            .column("x", Values::I64(split_x))
            .column("held_out", Values::Bool(split_h)),
        Table::new()
            .column("site", Values::Str(out.c_site))
            .column("layer", Values::U32(out.c_layer))
            .column("variant", Values::Str(out.c_variant))
            .column("basis", Values::Str(out.c_basis))
            .column("basis_index", Values::U32(out.c_index))
            .column("x_scale", Values::F64(out.c_scale))
            .column(
                "coefficient",
                Values::Vector {
                    d: d_model,
                    values: out.c_vec,
                },
            ),
        Table::new()
            .column("site", Values::Str(out.p_site))
            .column("layer", Values::U32(out.p_layer))
            .column("variant", Values::Str(out.p_variant))
            .column("x", Values::I64(out.p_x))
            .column("held_out", Values::Bool(out.p_held))
            .column(
                "prediction",
                Values::Vector {
                    d: d_model,
                    values: out.p_vec,
                },
            ),
        Table::new()
            .column("site", Values::Str(out.h_site))
            .column("layer", Values::U32(out.h_layer))
            .column("variant", Values::Str(out.h_variant))
            .column("x", Values::I64(out.h_x))
            .column("basis", Values::Str(out.h_basis))
            .column("coordinate", Values::F64(out.h_value)),
        Table::new()
            .column("site", Values::Str(out.k_site))
            .column("layer", Values::U32(out.k_layer))
            .column("x", Values::I64(out.k_x.clone()))
            .column("decoded", Values::F64(out.k_decoded.clone()))
            .column(
                "error",
                Values::F64(
                    out.k_x
                        .iter()
                        .zip(&out.k_decoded)
                        .map(|(&x, &d)| d - x as f64)
                        .collect(),
                ),
            ),
        Table::new()
            .column("site", Values::Str(out.f_site))
            .column("layer", Values::U32(out.f_layer))
            .column("variant", Values::Str(out.f_variant))
            .column("family", Values::Str(out.f_family))
            .column("periods", Values::ListF64(out.f_periods))
            .column("n_params", Values::U32(out.f_params))
            .column("pca_dim", Values::U32(out.f_pca))
            .column("n_numbers", Values::U32(out.f_n))
            .column("n_train", Values::U32(out.f_train))
            .column("n_test", Values::U32(out.f_test))
            .column("r2_in", Values::F64(out.f_r2_in))
            .column("mse_in", Values::F64(out.f_mse_in))
            .column("r2_out", Values::F64(out.f_r2_out))
            .column("mse_out", Values::F64(out.f_mse_out))
            .column("continuity_mae", Values::OptF64(out.f_cont)),
    ];
    for (name, t) in TABLES.iter().zip(&tables) {
        run.write_table(&layout, *name, t)?;
    }
    Ok(run.outcome())
}

/// What a variant leaves behind beyond its scores.
enum Detail<'a> {
    /// A fit whose coefficients are stored: the in-sample fit (suffix `None`; predictions and
    /// coordinates too for [`DETAILED`]), or another one stored as `<variant><suffix>`.
    Fit(&'a LinearFit, Option<&'static str>),
    /// Continuity: the numbers left out and where the fit places them.
    Continuity(&'a [i64], &'a [f64]),
}

#[allow(clippy::too_many_arguments)]
fn record_detail(
    out: &mut Out,
    site: &str,
    layer: usize,
    variant: &FitName,
    numbers: &[i64],
    held_out: &[bool],
    x: ArrayView2<f64>,
    detail: Detail,
) -> Result<()> {
    match detail {
        Detail::Continuity(xs, decoded) => {
            for (&xv, &dv) in xs.iter().zip(decoded) {
                out.k_site.push(site.into());
                out.k_layer.push(layer as u32);
                out.k_x.push(xv);
                out.k_decoded.push(dv);
            }
        }
        Detail::Fit(f, suffix) => {
            let stored = format!("{variant}{}", suffix.unwrap_or(""));
            let names = f.basis.names();
            let rows = names
                .iter()
                .cloned()
                .chain(std::iter::once("mean".to_string()));
            for (j, name) in rows.enumerate() {
                out.c_site.push(site.into());
                out.c_layer.push(layer as u32);
                out.c_variant.push(stored.clone());
                out.c_basis.push(name);
                out.c_index.push(j as u32);
                out.c_scale.push(f.basis.scale);
                let row = if j < names.len() {
                    f.c.row(j).to_owned()
                } else {
                    f.mean().clone()
                };
                out.c_vec.extend(row.iter().map(|&v| v as f32));
            }
            if suffix.is_none() && DETAILED.contains(variant) {
                let xs: Vec<f64> = numbers.iter().map(|&v| v as f64).collect();
                let pred = f.predict(&xs);
                let coords = f.coordinates(x)?;
                for (i, &num) in numbers.iter().enumerate() {
                    out.p_site.push(site.into());
                    out.p_layer.push(layer as u32);
                    out.p_variant.push(variant.to_string());
                    out.p_x.push(num);
                    out.p_held.push(held_out[i]);
                    out.p_vec.extend(pred.row(i).iter().map(|&v| v as f32));
                    for (j, name) in names.iter().enumerate() {
                        out.h_site.push(site.into());
                        out.h_layer.push(layer as u32);
                        out.h_variant.push(variant.to_string());
                        out.h_x.push(num);
                        out.h_basis.push(name.clone());
                        out.h_value.push(coords[[i, j]]);
                    }
                }
            }
        }
    }
    Ok(())
}

fn rows_where(mask: &[bool], keep: bool) -> Vec<usize> {
    (0..mask.len()).filter(|&i| mask[i] == keep).collect()
}

/// The three samples every variant fits (all numbers, the training split, all but the
/// continuity digit) with their PCAs, computed once per (site, layer).
struct Samples {
    pca_all: Pca,
    tr: Vec<usize>,
    te: Vec<usize>,
    pca_tr: Pca,
    keep: Vec<usize>,
    gone: Vec<usize>,
    pca_keep: Pca,
}

impl Samples {
    fn new(
        numbers: &[i64],
        x: ArrayView2<f64>,
        held_out: &[bool],
        cfg: &helixlab_pipeline::FitSection,
    ) -> Result<Samples> {
        let tr = rows_where(held_out, false);
        let te = rows_where(held_out, true);
        let left_out: Vec<bool> = numbers
            .iter()
            .map(|v| v.rem_euclid(10) == cfg.continuity_digit)
            .collect();
        let keep = rows_where(&left_out, false);
        let gone = rows_where(&left_out, true);
        Ok(Samples {
            pca_all: Pca::fit(x, cfg.pca_dim)?,
            pca_tr: Pca::fit(x.select(Axis(0), &tr).view(), cfg.pca_dim)?,
            pca_keep: Pca::fit(x.select(Axis(0), &keep).view(), cfg.pca_dim)?,
            tr,
            te,
            keep,
            gone,
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn score(
    method: &Method,
    family: Family,
    samples: &Samples,
    numbers: &[i64],
    xs: &[f64],
    x: ArrayView2<f64>,
    cfg: &helixlab_pipeline::FitSection,
    detail: &mut dyn FnMut(Detail) -> Result<()>,
) -> Result<Scores> {
    let (tr, te) = (&samples.tr, &samples.te);
    let pick = |idx: &[usize]| -> (Vec<f64>, Array2<f64>) {
        (idx.iter().map(|&i| xs[i]).collect(), x.select(Axis(0), idx))
    };
    let (xs_tr, x_tr) = pick(tr);
    let (xs_te, x_te) = pick(te);
    let fit = |kind: &BasisKind, xs: &[f64], x: ArrayView2<f64>, pca: &Pca| {
        LinearFit::fit_in(Basis::for_sample(kind.clone(), xs), xs, x, pca.clone())
    };
    Ok(match method {
        Method::Basis(kind) => {
            let all = fit(kind, xs, x, &samples.pca_all)?;
            let pred = all.predict(xs);
            detail(Detail::Fit(&all, None))?;
            let part = fit(kind, &xs_tr, x_tr.view(), &samples.pca_tr)?;
            // The training-split fits of the main helices are kept, so that patching can
            // place numbers these fits never saw.
            if matches!(family, Family::Helix) {
                detail(Detail::Fit(&part, Some(TRAIN_SUFFIX)))?;
            }
            let pred_te = part.predict(&xs_te);
            Scores::of(
                (x, pred.view()),
                (x_te.view(), pred_te.view()),
                all.basis.n_params(),
            )
        }
        Method::Shuffled(kind) => {
            let perm = split::permutation(xs.len(), cfg.seed.wrapping_add(29));
            let shuffled: Vec<f64> = perm.iter().map(|&i| xs[i]).collect();
            let all = fit(kind, &shuffled, x, &samples.pca_all)?;
            let pred = all.predict(&shuffled);
            // Kept as a patch that must fail: the map from numbers to activations is scrambled.
            detail(Detail::Fit(&all, None))?;
            // Train rows get shuffled numbers; held-out rows are predicted from their own.
            let perm_tr = split::permutation(tr.len(), cfg.seed.wrapping_add(31));
            let xs_tr_shuf: Vec<f64> = perm_tr.iter().map(|&i| xs_tr[i]).collect();
            let part = fit(kind, &xs_tr_shuf, x_tr.view(), &samples.pca_tr)?;
            let pred_te = part.predict(&xs_te);
            Scores::of(
                (x, pred.view()),
                (x_te.view(), pred_te.view()),
                all.basis.n_params(),
            )
        }
        Method::Continuity(kind) => {
            let (keep, gone) = (&samples.keep, &samples.gone);
            let (xs_k, x_k) = pick(keep);
            let (xs_g, x_g) = pick(gone);
            let part = fit(kind, &xs_k, x_k.view(), &samples.pca_keep)?;
            let pred_k = part.predict(&xs_k);
            let pred_g = part.predict(&xs_g);
            let (lo, hi) = (xs[0], xs[xs.len() - 1]);
            let grid: Vec<f64> = (0..=((hi - lo) * 10.0).round() as usize)
                .map(|i| lo + i as f64 / 10.0)
                .collect();
            let decoded = part.decode(x_g.view(), &grid);
            let gone_numbers: Vec<i64> = gone.iter().map(|&i| numbers[i]).collect();
            detail(Detail::Continuity(&gone_numbers, &decoded))?;
            let mae = decoded
                .iter()
                .zip(&xs_g)
                .map(|(d, t)| (d - t).abs())
                .sum::<f64>()
                / decoded.len().max(1) as f64;
            Scores {
                continuity_mae: (!decoded.is_empty()).then_some(mae),
                ..Scores::of(
                    (x_k.view(), pred_k.view()),
                    (x_g.view(), pred_g.view()),
                    part.basis.n_params(),
                )
            }
        }
        Method::Pca(k) => {
            // The first k components of a larger PCA are the PCA with k components.
            let rec = samples.pca_all.reconstruct(x, *k);
            let rec_te = samples.pca_tr.reconstruct(x_te.view(), *k);
            Scores::of((x, rec.view()), (x_te.view(), rec_te.view()), *k)
        }
    })
}
