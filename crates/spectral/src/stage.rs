//! `helixlab spectral`: reads the activations the pipeline's `[analysis]` section selects and
//! writes `<run>/spectral/{spectra,pca,pca_scores,similarity,separability,periods}.parquet`.

use std::path::Path;

use helixlab_numeric::Pca;
use helixlab_pipeline::{AnalysisTarget, Pipeline};
use helixlab_store::read::{self, NumberRows};
use helixlab_store::stage::{Outcome, Progress};
use helixlab_store::table::{Table, Values};
use helixlab_store::{tables, RunLayout, StageRun, TableName};
use ndarray::{s, Array2, ArrayView2};

use crate::{fourier, geometry, periods, separability, Result, SpectralError};

/// The tables this stage writes, in writing order.
pub const TABLES: [TableName; 6] = tables::SPECTRAL;

/// The rows of one (site, layer), one per number in `span`, as a matrix.
pub(crate) fn number_matrix(
    run_dir: &Path,
    target: &AnalysisTarget,
    span: [i64; 2],
    site: &str,
    layer: usize,
) -> Result<(NumberRows, Array2<f64>)> {
    let m = read::activations(run_dir, site, layer, target.position.name())?;
    let rows = m
        .mean_by(target.number_column, span)
        .map_err(SpectralError::Input)?;
    if rows.numbers.len() < 4 {
        return Err(SpectralError::Input(format!(
            "site {site} layer {layer}: {} numbers of `{}` in {:?} at position `{}` (need 4)",
            rows.numbers.len(),
            target.number,
            span,
            target.position
        )));
    }
    let x = Array2::from_shape_vec((rows.numbers.len(), rows.d), rows.values.clone())
        .expect("rows x d values");
    Ok((rows, x))
}

fn contiguous(numbers: &[i64], what: &str) -> Result<()> {
    if let Some(w) = numbers.windows(2).find(|w| w[1] != w[0] + 1) {
        return Err(SpectralError::Input(format!(
            "{what}: numbers must be consecutive for a spectrum, but {} is followed by {}",
            w[0], w[1]
        )));
    }
    Ok(())
}

#[derive(Default)]
struct Key {
    site: Vec<String>,
    layer: Vec<u32>,
}

impl Key {
    fn push(&mut self, site: &str, layer: usize) {
        self.site.push(site.to_string());
        self.layer.push(layer as u32);
    }
    fn table(&self) -> Table {
        Table::new()
            .column("site", Values::Str(self.site.clone()))
            .column("layer", Values::U32(self.layer.clone()))
    }
}

/// Runs the stage unless its tables are current (or `force`).
// Long (about 200 lines) because it fills six tables column by column in one pass over the (site,
// layer) partitions, each loaded once; the analyses themselves are in fourier, geometry,
// separability and periods.
pub fn run(p: &Pipeline, force: bool, progress: &dyn Progress) -> Result<Outcome> {
    let target = p.analysis_target().map_err(|(field, message)| {
        SpectralError::Input(format!("{}: {field}: {message}", p.path.display()))
    })?;
    let run_dir = p.run_dir();
    let (work, inputs) = read::extracted_partitions(
        &run_dir,
        target.sites.iter().map(|s| s.name()),
        p.extract.layers.listed(),
    )?;
    let ranges = p
        .spectral
        .ranges
        .clone()
        .unwrap_or_else(|| vec![target.range]);
    let span = ranges
        .iter()
        .fold(target.range, |s, r| [s[0].min(r[0]), s[1].max(r[1])]);
    let mut run = StageRun::new(
        "spectral",
        serde_json::json!({ "analysis": target, "spectral": p.spectral, "ranges": ranges }),
    );
    run.inputs(inputs);
    let layout = RunLayout::new(&run_dir);
    if !force && run.tables_fresh(&layout, &TABLES) {
        return Ok(Outcome::UpToDate);
    }
    run.begin();

    let (mut sk, mut pk, mut psk, mut simk, mut sepk, mut perk): (Key, Key, Key, Key, Key, Key) =
        Default::default();
    let (mut s_lo, mut s_hi, mut s_detrend, mut s_k, mut s_freq, mut s_period, mut s_power) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut p_lo, mut p_hi, mut p_std, mut p_comp, mut p_evr, mut p_r2) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut ps_lo, mut ps_hi, mut ps_std, mut ps_x, mut ps_1, mut ps_2, mut ps_3) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut sim_x, mut sim_y, mut sim_d, mut sim_c) = (vec![], vec![], vec![], vec![]);
    let (mut sep_t, mut sep_acc, mut sep_null, mut sep_chance, mut sep_tr, mut sep_te) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut per_rank, mut per_t, mut per_r2, mut per_lin) = (vec![], vec![], vec![], vec![]);

    progress.start("spectral", work.len() as u64);
    for (site, layer) in &work {
        // Spectra may look at windows wider than the analysis range (the paper's 0..=360).
        let (rows, x) = number_matrix(&run_dir, &target, span, site, *layer)?;
        let what = format!("site {site} layer {layer}");
        // Without configured windows, the window is the numbers there are (a task such as
        // a - 23 starts at 23; a * 1.5 has even numbers only, which get PCA but no spectrum).
        let explicit = p.spectral.ranges.is_some();
        let windows = if explicit {
            ranges.clone()
        } else {
            vec![[rows.numbers[0], rows.numbers[rows.numbers.len() - 1]]]
        };
        for r in &windows {
            let idx: Vec<usize> = (0..rows.numbers.len())
                .filter(|&i| (r[0]..=r[1]).contains(&rows.numbers[i]))
                .collect();
            let nums: Vec<i64> = idx.iter().map(|&i| rows.numbers[i]).collect();
            if nums.first() != Some(&r[0]) || nums.last() != Some(&r[1]) {
                return Err(SpectralError::Input(format!(
                    "{what}: spectral range {r:?} is not covered by the extracted numbers {}..={}",
                    rows.numbers[0],
                    rows.numbers[rows.numbers.len() - 1]
                )));
            }
            let regular = nums.windows(2).all(|w| w[1] == w[0] + 1);
            if explicit {
                contiguous(&nums, &what)?;
            }
            let xr = x.select(ndarray::Axis(0), &idx);
            for detrend in [false, true].into_iter().filter(|_| regular) {
                for pt in fourier::spectrum(xr.view(), detrend) {
                    sk.push(site, *layer);
                    s_lo.push(r[0]);
                    s_hi.push(r[1]);
                    s_detrend.push(detrend);
                    s_k.push(pt.k as u32);
                    s_freq.push(pt.frequency);
                    s_period.push(pt.period);
                    s_power.push(pt.power);
                }
            }
            let xf: Vec<f64> = nums.iter().map(|&v| v as f64).collect();
            for standardised in [true, false] {
                let data = if standardised {
                    geometry::standardise(xr.view())
                } else {
                    xr.clone()
                };
                let comps = geometry::components(&xf, data.view(), 10)?;
                for c in &comps {
                    pk.push(site, *layer);
                    p_lo.push(r[0]);
                    p_hi.push(r[1]);
                    p_std.push(standardised);
                    p_comp.push(c.index as u32);
                    p_evr.push(c.explained_variance_ratio);
                    p_r2.push(c.r2_vs_number);
                }
                for (i, &num) in nums.iter().enumerate() {
                    psk.push(site, *layer);
                    ps_lo.push(r[0]);
                    ps_hi.push(r[1]);
                    ps_std.push(standardised);
                    ps_x.push(num);
                    let score = |k: usize| comps.get(k).map_or(0.0, |c| c.scores[i]);
                    ps_1.push(score(0));
                    ps_2.push(score(1));
                    ps_3.push(score(2));
                }
            }
        }
        // Similarity, probes and periods: the analysis range only.
        let keep: Vec<usize> = (0..rows.numbers.len())
            .filter(|&i| (target.range[0]..=target.range[1]).contains(&rows.numbers[i]))
            .collect();
        let numbers: Vec<i64> = keep.iter().map(|&i| rows.numbers[i]).collect();
        let x = x.select(ndarray::Axis(0), &keep);
        let (dist, cos) = geometry::similarity(x.view());
        for (i, &xi) in numbers.iter().enumerate() {
            for (j, &yj) in numbers.iter().enumerate() {
                simk.push(site, *layer);
                sim_x.push(xi);
                sim_y.push(yj);
                sim_d.push(dist[[i, j]]);
                sim_c.push(cos[[i, j]]);
            }
        }
        let sp = &p.spectral;
        for s in separability::separability(
            &numbers,
            x.view(),
            &sp.probe_periods,
            sp.probe_holdout,
            sp.probe_alpha,
            sp.seed,
        )? {
            sepk.push(site, *layer);
            sep_t.push(s.period);
            sep_acc.push(s.accuracy);
            sep_null.push(s.accuracy_shuffled);
            sep_chance.push(s.chance);
            sep_tr.push(s.n_train as u32);
            sep_te.push(s.n_test as u32);
        }
        let coords = pca_coordinates(x.view(), 100)?;
        let xf: Vec<f64> = numbers.iter().map(|&v| v as f64).collect();
        let d = periods::discover(&xf, coords.view(), sp.discover);
        for found in &d.periods {
            perk.push(site, *layer);
            per_rank.push(found.rank as u32);
            per_t.push(found.period);
            per_r2.push(found.r2);
            per_lin.push(d.r2_linear);
        }
        progress.advance(1);
    }
    progress.finish();

    let tables = [
        sk.table()
            .column("range_lo", Values::I64(s_lo))
            .column("range_hi", Values::I64(s_hi))
            .column("detrended", Values::Bool(s_detrend))
            .column("k", Values::U32(s_k))
            .column("frequency", Values::F64(s_freq))
            .column("period", Values::OptF64(s_period))
            .column("power", Values::F64(s_power)),
        pk.table()
            .column("range_lo", Values::I64(p_lo))
            .column("range_hi", Values::I64(p_hi))
            .column("standardized", Values::Bool(p_std))
            .column("component", Values::U32(p_comp))
            .column("explained_variance_ratio", Values::F64(p_evr))
            .column("r2_vs_number", Values::F64(p_r2)),
        psk.table()
            .column("range_lo", Values::I64(ps_lo))
            .column("range_hi", Values::I64(ps_hi))
            .column("standardized", Values::Bool(ps_std))
            .column("x", Values::I64(ps_x))
            .column("pc1", Values::F64(ps_1))
            .column("pc2", Values::F64(ps_2))
            .column("pc3", Values::F64(ps_3)),
        simk.table()
            .column("x", Values::I64(sim_x))
            .column("y", Values::I64(sim_y))
            .column("distance", Values::F64(sim_d))
            .column("cosine", Values::F64(sim_c)),
        sepk.table()
            .column("period", Values::U32(sep_t))
            .column("accuracy", Values::F64(sep_acc))
            .column("accuracy_shuffled", Values::F64(sep_null))
            .column("chance", Values::F64(sep_chance))
            .column("n_train", Values::U32(sep_tr))
            .column("n_test", Values::U32(sep_te)),
        perk.table()
            .column("rank", Values::U32(per_rank))
            .column("period", Values::F64(per_t))
            .column("r2", Values::F64(per_r2))
            .column("r2_linear_only", Values::F64(per_lin)),
    ];
    for (name, t) in TABLES.iter().zip(&tables) {
        run.write_table(&layout, *name, t)?;
    }
    Ok(run.outcome())
}

/// Coordinates on up to `k` principal components: the representation with its noise floor
/// cut, where the period search runs.
fn pca_coordinates(x: ArrayView2<f64>, k: usize) -> Result<Array2<f64>> {
    let pca = Pca::fit(x, k)?;
    Ok(pca.transform(x).slice(s![.., ..pca.k()]).to_owned())
}
