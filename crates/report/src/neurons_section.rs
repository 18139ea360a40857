//! The report's neuron section (docs/method.md E6), read from `<run>/neurons/*.parquet`: the
//! top neurons' preactivations beside their fits (paper Figs 8, 31), accuracy against neurons
//! kept for the real and the fitted preactivations (Figs 9, 33), attribution against exact
//! patching, the layers of the top neurons (Fig 32), the cumulative direct effect (Fig 34),
//! NRMSE against total effect (Fig 35), a+b fraction against DE/TE per MLP (Fig 10) and the
//! neurons' dominant periods (Fig 31).

use std::fmt::Write as _;
use std::path::Path;

use crate::charts::{heatmaps, palette, panels, Heatmap, Mark, Panel, Series};
use crate::neuron_grids::{NeuronGrid, GRID_SCRIPT};
use crate::sections::{line, Tbl};
use crate::Result;
use helixlab_store::{tables, RunLayout};

/// Preactivation grids of the top neurons in the PNG, with their fits.
const SHOWN: usize = 6;
/// Top neurons whose grids the page draws interactively.
const INTERACTIVE: usize = 12;

fn dots(label: &str, ci: usize, points: Vec<(f64, f64)>) -> Series {
    Series {
        label: label.into(),
        points,
        mark: Mark::Dots,
        color: palette(ci),
    }
}

/// The smallest number of the ranked `values` whose sum reaches `share` of the total (by
/// magnitude of the sum), and the cumulative curve.
fn cumulative(values: &[f64], share: f64) -> (Option<usize>, Vec<(f64, f64)>) {
    let total: f64 = values.iter().sum();
    let mut run = 0.0;
    let mut curve = vec![(0.0, 0.0)];
    let mut reached = None;
    for (i, v) in values.iter().enumerate() {
        run += v;
        let frac = if total != 0.0 { run / total } else { f64::NAN };
        curve.push(((i + 1) as f64, frac));
        if reached.is_none() && frac >= share {
            reached = Some(i + 1);
        }
    }
    (reached, curve)
}

/// The top neurons as the top and fits tables give them, in rank order.
struct Top {
    layer: Vec<i64>,
    neuron: Vec<i64>,
    score: Vec<f64>,
    exact: Vec<f64>,
    total: Vec<f64>,
    direct: Vec<f64>,
    rho: f64,
    nrmse: Vec<f64>,
    ab_frac: Vec<f64>,
    terms: Vec<String>,
}

impl Top {
    /// `None` when `helixlab neurons` has not run.
    fn read(run: &RunLayout) -> Result<Option<Top>> {
        let Some(top) = Tbl::open(&run.path(tables::NEURON_TOP))? else {
            return Ok(None);
        };
        let fits = Tbl::require(run, tables::NEURON_FITS)?;
        Ok(Some(Top {
            layer: top.i64("layer")?,
            neuron: top.i64("neuron")?,
            score: top.f64("score")?,
            exact: top.f64("exact")?,
            total: top.f64("total")?,
            direct: top.f64("direct")?,
            rho: top
                .f64("rank_correlation")?
                .first()
                .copied()
                .unwrap_or(f64::NAN),
            nrmse: fits.f64("nrmse")?,
            ab_frac: fits.f64("ab_fraction")?,
            terms: fits.str("top_terms")?,
        }))
    }
}

/// What the summary quotes from the figures' tables.
struct Quoted {
    kind: Vec<String>,
    kept: Vec<i64>,
    acc: Vec<f64>,
    all: usize,
    one_pct: i64,
    de80: Option<usize>,
    r2: f64,
}

/// The section; empty when `helixlab neurons` has not run.
pub fn neurons_section(run: &RunLayout, out: &Path) -> Result<String> {
    let Some(t) = Top::read(run)? else {
        return Ok(String::new());
    };
    let grids = preactivation_figure(run, out, &t)?;
    let q = experiments_figure(run, out, &t)?;
    Ok(summary(&t, &q) + &grids + &logit_lens_table(run)?)
}

/// The neuron logit lens (paper Figs 39-40): how many lens neurons write each top period onto
/// the answers, grouped by the period in a+b of their own preactivations.
fn logit_lens_table(run: &RunLayout) -> Result<String> {
    let Some(t) = Tbl::open(&run.path(tables::NEURON_LOGIT_LENS))?.filter(|t| t.df().height() > 0)
    else {
        return Ok(String::new());
    };
    let (fit, lens, answers) = (
        t.f64("fit_period_ab")?,
        t.f64("lens_period")?,
        t.i64("answers")?,
    );
    let key = |v: f64| {
        if v.is_finite() {
            format!("{v:.2}")
        } else {
            "-".into()
        }
    };
    let mut groups: std::collections::BTreeMap<String, std::collections::BTreeMap<String, usize>> =
        Default::default();
    for (f, l) in fit.iter().zip(&lens) {
        *groups
            .entry(key(*f))
            .or_default()
            .entry(key(*l))
            .or_default() += 1;
    }
    let mut rows: Vec<(usize, String, String)> = groups
        .into_iter()
        .map(|(f, ls)| {
            let n = ls.values().sum();
            let mut ls: Vec<(String, usize)> = ls.into_iter().collect();
            ls.sort_by_key(|x| std::cmp::Reverse(x.1));
            let listed: Vec<String> = ls.iter().map(|(p, c)| format!("{p} ({c})")).collect();
            (n, f, listed.join(", "))
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut html = format!(
        "<p>The neuron logit lens (paper Figs 39-40): the {} neurons holding 80 % of the top \
         neurons' positive direct effect, each one's W_out row through the unembedding (no final \
         norm) over the {} answers; the top period of what it writes, grouped by the period in \
         a+b of its own preactivation grid (<code>neurons/logit_lens.parquet</code>).</p>\n\
         <table border=1 cellpadding=4><tr><th>period in a+b (fit)</th><th>neurons</th>\
         <th>top period written onto the answers (neurons)</th></tr>\n",
        fit.len(),
        answers.first().copied().unwrap_or(0)
    );
    for (n, f, listed) in rows {
        let _ = writeln!(html, "<tr><td>{f}</td><td>{n}</td><td>{listed}</td></tr>");
    }
    html.push_str("</table>\n");
    Ok(html)
}

/// The first top neurons' preactivations over the grid beside their fits, as a PNG; returns
/// the interactive grids of the first [`INTERACTIVE`] for the page.
fn preactivation_figure(run: &RunLayout, out: &Path, t: &Top) -> Result<String> {
    let (layer, neuron, nrmse) = (&t.layer, &t.neuron, &t.nrmse);
    let pre = Tbl::require(run, tables::NEURON_PREACTIVATIONS)?;
    let (n_a, n_b) = (pre.i64("n_a")?, pre.i64("n_b")?);
    let ((d, real), (_, fitted)) = (pre.vectors("preactivation")?, pre.vectors("fitted")?);
    let (a_min, b_min) = (pre.i64("a_min")?, pre.i64("b_min")?);
    // Heatmaps: real over fitted, for the first few top neurons.
    let mut maps = Vec::new();
    let shown = SHOWN.min(layer.len());
    for k in 0..shown {
        let (na, nb) = (n_a[k] as usize, n_b[k] as usize);
        let grid = |v: &[f32]| -> Vec<Vec<f64>> {
            (0..na)
                .map(|i| (0..nb).map(|j| v[k * d + i * nb + j] as f64).collect())
                .collect()
        };
        let r = grid(&real);
        let lo = r
            .iter()
            .flatten()
            .copied()
            .filter(|v| v.is_finite())
            .fold(f64::INFINITY, f64::min);
        let hi = r
            .iter()
            .flatten()
            .copied()
            .filter(|v| v.is_finite())
            .fold(f64::NEG_INFINITY, f64::max);
        let range = (lo, hi.max(lo + 1e-9));
        maps.push(Heatmap {
            title: format!("#{} L{}N{}: preactivation", k + 1, layer[k], neuron[k]),
            lo: a_min[k].min(b_min[k]),
            values: r,
            range,
        });
        maps.push(Heatmap {
            title: format!("fit, NRMSE {:.3}", nrmse[k]),
            lo: a_min[k].min(b_min[k]),
            values: grid(&fitted),
            range,
        });
    }
    if shown == 0 {
        return Ok(String::new());
    }
    let mut html = format!(
        "<p>The first {} top neurons' preactivation (left) and fit (right) over the grid, a to the \
         right and b upwards, on one scale per neuron (blue negative, red positive); point at a \
         cell to read it (<code>neurons/preactivations.parquet</code>).</p>\n<div>",
        INTERACTIVE.min(layer.len())
    );
    for k in 0..INTERACTIVE.min(layer.len()) {
        let (na, nb) = (n_a[k] as usize, n_b[k] as usize);
        html.push_str(
            &NeuronGrid {
                title: format!(
                    "#{} L{}N{}, NRMSE {:.3}",
                    k + 1,
                    layer[k],
                    neuron[k],
                    nrmse[k]
                ),
                n: (na, nb),
                min: (a_min[k], b_min[k]),
                real: &real[k * d..k * d + na * nb],
                fit: &fitted[k * d..k * d + na * nb],
            }
            .render(),
        );
    }
    html.push_str("</div>\n");
    html.push_str(GRID_SCRIPT);
    heatmaps(
        &out.join("neuron_preactivations.png"),
        "Top neurons' preactivation at the last token and its fit, x: a, y: b (paper Figs 8, 31)",
        &maps,
        4,
        300,
    )?;
    Ok(html)
}

/// Accuracy against neurons kept, attribution against exact patching, the top 1 %'s layers,
/// cumulative DE, NRMSE against TE, a+b fraction against DE/TE, period shares.
// Long (about 165 lines): eight panels, each a few lines of data and a few of labels.
fn experiments_figure(run: &RunLayout, out: &Path, t: &Top) -> Result<Quoted> {
    let (score, exact, total, direct, nrmse, rho) =
        (&t.score, &t.exact, &t.total, &t.direct, &t.nrmse, t.rho);
    // Sparsity: real and fitted preactivations.
    let sp = Tbl::require(run, tables::NEURON_SPARSITY)?;
    let (kind, kept, acc, ld) = (
        sp.str("kind")?,
        sp.i64("kept")?,
        sp.f64("accuracy")?,
        sp.f64("logit_diff")?,
    );
    let curve = |which: &str, v: &[f64]| -> Vec<(f64, f64)> {
        (0..kind.len())
            .filter(|&i| kind[i] == which)
            .map(|i| (((kept[i] + 1) as f64).log2(), v[i]))
            .collect()
    };
    // The layers of the top 1 % of all neurons by |attribution|.
    let attribution = Tbl::require(run, tables::NEURON_ATTRIBUTION)?;
    let (all_layer, all_rank) = (attribution.i64("layer")?, attribution.i64("rank")?);
    let all = all_layer.len();
    let one_pct = all.div_ceil(100) as i64;
    let n_layers = all_layer.iter().copied().max().unwrap_or(0) + 1;
    let mut per_layer = vec![0usize; n_layers as usize];
    for (i, &l) in all_layer.iter().enumerate() {
        if all_rank[i] <= one_pct {
            per_layer[l as usize] += 1;
        }
    }
    let mlps = Tbl::require(run, tables::NEURON_MLPS)?;
    let (ml, circuit, mab, mdt, r2) = (
        mlps.i64("layer")?,
        mlps.bool("circuit")?,
        mlps.f64("mean_ab_fraction")?,
        mlps.f64("mean_de_over_te")?,
        mlps.f64("r2")?.first().copied().unwrap_or(f64::NAN),
    );
    let mut by_de: Vec<f64> = direct.clone();
    by_de.sort_by(|x, y| y.total_cmp(x));
    let (de80, de_curve) = cumulative(&by_de, 0.8);
    let periods = Tbl::require(run, tables::NEURON_PERIODS)?;
    let (var, per, share) = (
        periods.str("variable")?,
        periods.f64("period")?,
        periods.f64("share")?,
    );
    let period_series: Vec<Series> = ["a", "b", "a+b"]
        .iter()
        .enumerate()
        .map(|(ci, v)| {
            line(
                &format!("period in {v}"),
                ci,
                (0..var.len())
                    .filter(|&i| var[i] == *v)
                    .map(|i| (per[i].log10(), share[i]))
                    .collect(),
            )
        })
        .collect();
    let ps = vec![
        Panel {
            title: "accuracy with the top k neurons kept, the rest mean-ablated".into(),
            x_desc: "neurons kept (log scale)".into(),
            y_desc: "accuracy".into(),
            series: vec![
                line("real", 0, curve("real", &acc)),
                line("fits", 1, curve("fit", &acc)),
            ],
            vlines: vec![],
            x_ticks: Some(kept_tick),
        },
        Panel {
            title: "logit difference of the answer".into(),
            x_desc: "neurons kept (log scale)".into(),
            y_desc: "kept minus clean".into(),
            series: vec![
                line("real", 0, curve("real", &ld)),
                line("fits", 1, curve("fit", &ld)),
            ],
            vlines: vec![],
            x_ticks: Some(kept_tick),
        },
        Panel {
            title: format!("attribution vs exact patching (Spearman {rho:.2})"),
            x_desc: "attribution score".into(),
            y_desc: "exact patch, summed over pairs".into(),
            series: vec![dots(
                "",
                0,
                score.iter().copied().zip(exact.iter().copied()).collect(),
            )],
            vlines: vec![],
            x_ticks: None,
        },
        Panel {
            title: format!("layers of the top 1 % ({one_pct} neurons; circuit MLPs: red)"),
            x_desc: "layer".into(),
            y_desc: "neurons".into(),
            series: vec![dots(
                "",
                2,
                per_layer
                    .iter()
                    .enumerate()
                    .map(|(l, &c)| (l as f64, c as f64))
                    .collect(),
            )],
            vlines: (0..ml.len())
                .filter(|&i| circuit[i])
                .map(|i| ml[i] as f64)
                .collect(),
            x_ticks: None,
        },
        Panel {
            title: "cumulative direct effect of the top neurons".into(),
            x_desc: "neurons, by direct effect".into(),
            y_desc: "share of the summed DE".into(),
            series: vec![line("", 3, de_curve)],
            vlines: de80.map(|k| k as f64).into_iter().collect(),
            x_ticks: None,
        },
        Panel {
            title: "fit quality against total effect".into(),
            x_desc: "total effect".into(),
            y_desc: "NRMSE".into(),
            series: vec![dots(
                "",
                4,
                total.iter().copied().zip(nrmse.iter().copied()).collect(),
            )],
            vlines: vec![],
            x_ticks: None,
        },
        Panel {
            title: format!("per MLP: a+b fraction vs DE/TE (R^2 {r2:.2})"),
            x_desc: "mean a+b fraction of its top neurons".into(),
            y_desc: "mean DE/TE".into(),
            series: vec![dots(
                "",
                5,
                mab.iter().copied().zip(mdt.iter().copied()).collect(),
            )],
            vlines: vec![],
            x_ticks: None,
        },
        Panel {
            title: "share of top neurons whose dominant period is near T".into(),
            x_desc: "period T (log scale)".into(),
            y_desc: "share (within 5 %)".into(),
            series: period_series,
            vlines: vec![],
            x_ticks: Some(period_tick),
        },
    ];
    panels(
        &out.join("neurons.png"),
        "Neurons at the last token (paper Figs 9, 10, 31-35)",
        &ps,
        2,
        520,
        340,
    )?;
    Ok(Quoted {
        kind,
        kept,
        acc,
        all,
        one_pct,
        de80,
        r2,
    })
}

/// The numbers the paper quotes, and a table of the top 20 neurons.
fn summary(t: &Top, q: &Quoted) -> String {
    let (layer, neuron, score, exact, total, direct) =
        (&t.layer, &t.neuron, &t.score, &t.exact, &t.total, &t.direct);
    let (nrmse, ab_frac, terms, rho) = (&t.nrmse, &t.ab_frac, &t.terms, t.rho);
    let (kind, kept, acc, all, one_pct, de80, r2) =
        (&q.kind, &q.kept, &q.acc, q.all, q.one_pct, q.de80, q.r2);
    let near = (0..kind.len())
        .filter(|&i| kind[i] == "real")
        .min_by_key(|&i| (kept[i] - one_pct).abs());
    let mut sorted = nrmse.clone();
    sorted.sort_by(f64::total_cmp);
    let mut html = String::from(
        "<h2>Neurons</h2>\n<p>Attribution patching over every MLP neuron (<code>mlp.hook_post</code>, \
         last token): the gradient of the clean answer's logit in the corrupt run times the clean \
         minus corrupt activation, summed over the last-token pairs. The top neurons are patched \
         exactly one at a time; total effect (TE) and direct effect (DE) as in the components \
         section. Sparsity: the top k neurons keep their activation (or their preactivation is \
         replaced by its fit), every other neuron is set to its mean. Fits: N(a,b) = slopes in a, \
         b, a+b plus cos/sin terms of each at the study's periods plus a bias, by least squares; \
         NRMSE = RMSE / (max - min).</p>\n\
         <img src=\"neuron_preactivations.png\" alt=\"top neurons' preactivations and fits\">\n\
         <img src=\"neurons.png\" alt=\"neuron experiments\">\n<ul>\n",
    );
    if let Some(i) = near {
        let _ = writeln!(
            html,
            "<li>{} of {all} neurons kept ({:.1} %): accuracy {:.1} %.</li>",
            kept[i],
            100.0 * kept[i] as f64 / all as f64,
            100.0 * acc[i]
        );
    }
    if let Some(k) = de80 {
        let _ = writeln!(
            html,
            "<li>{k} of the {} top neurons give 80 % of their summed direct effect.</li>",
            direct.len()
        );
    }
    if let (Some(lo), Some(hi)) = (sorted.first(), sorted.last()) {
        let _ = writeln!(
            html,
            "<li>NRMSE of the fits: {lo:.3} to {hi:.3}, median {:.3}.</li>",
            sorted[sorted.len() / 2]
        );
    }
    let _ = writeln!(
        html,
        "<li>Attribution against exact patching: Spearman {rho:.3}; a+b fraction against DE/TE over \
         the circuit MLPs: R<sup>2</sup> {r2:.3} (NaN with fewer than 3 MLPs).</li>\n</ul>"
    );
    html.push_str(
        "<table border=1 cellpadding=4><tr><th>rank</th><th>neuron</th><th>attribution</th>\
         <th>exact</th><th>TE</th><th>DE</th><th>NRMSE</th><th>a+b fraction</th>\
         <th>largest fitted terms</th></tr>\n",
    );
    for k in 0..layer.len().min(20) {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>L{}N{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td>\
             <td>{:.3}</td><td>{:.2}</td><td>{}</td></tr>",
            k + 1,
            layer[k],
            neuron[k],
            score[k],
            exact[k],
            total[k],
            direct[k],
            nrmse[k],
            ab_frac[k],
            terms[k]
        );
    }
    html.push_str("</table>\n");
    html
}

/// A tick of the log2(k + 1) axis, as k (whole powers of two only).
fn kept_tick(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 && v >= 0.0 {
        format!("{}", 2f64.powi(v.round() as i32) as i64 - 1)
    } else {
        String::new()
    }
}

/// A tick of the log10 T axis, as T.
fn period_tick(v: f64) -> String {
    let t = 10f64.powf(v);
    if t >= 10.0 {
        format!("{t:.0}")
    } else {
        format!("{t:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cumulative_share_counts_the_neurons_that_reach_it() {
        let (k, curve) = cumulative(&[5.0, 3.0, 1.0, 1.0], 0.8);
        assert_eq!(k, Some(2));
        assert_eq!(curve.last(), Some(&(4.0, 1.0)));
    }
}
