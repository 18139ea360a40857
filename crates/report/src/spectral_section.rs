//! The report's spectral section (docs/method.md E2, section 5): spectra, PCA, similarity and
//! separability figures read from `<run>/spectral/*.parquet`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::charts::{heatmaps, palette, panels, Heatmap, Mark, Panel, Series};
use crate::sections::{first_site, keys, short, spread, RangeKey, Tbl};
use crate::Result;
use helixlab_store::{tables, RunLayout};

/// Writes the spectral figures into `out` and returns the HTML section ("" when the stage
/// has not run).
// Long (about 110 lines): the spectrum figures per range and the discovered-period table share
// the strongest-period map built from the spectra; the other figures are in their own functions.
pub fn spectral_section(run: &RunLayout, out: &Path, paper_periods: &[f64]) -> Result<String> {
    let Some(spectra) = Tbl::open(&run.path(tables::SPECTRA))? else {
        return Ok(String::new());
    };
    let mut html = String::from("<h2>Number representation (spectral)</h2>\n");
    let (site, layer) = (spectra.str("site")?, spectra.i64("layer")?);
    let (lo, hi) = (spectra.i64("range_lo")?, spectra.i64("range_hi")?);
    let detr = spectra.bool("detrended")?;
    let (k, period, power) = (
        spectra.i64("k")?,
        spectra.f64("period")?,
        spectra.f64("power")?,
    );
    let mut ranges: Vec<(i64, i64)> = lo.iter().copied().zip(hi.iter().copied()).collect();
    ranges.sort();
    ranges.dedup();
    let all_keys = keys(&site, &layer);
    // Strongest periods below 25 (the paper's 2, 5, 10 live there), raw spectrum.
    let mut strongest: BTreeMap<RangeKey, Vec<(f64, f64)>> = BTreeMap::new();
    for i in 0..site.len() {
        if !detr[i] && period[i] < 25.0 && k[i] > 0 {
            strongest
                .entry((site[i].clone(), layer[i], lo[i], hi[i]))
                .or_default()
                .push((power[i], period[i]));
        }
    }
    for &(rlo, rhi) in &ranges {
        let name = format!("spectrum_{rlo}_{rhi}.png");
        let n = (rhi - rlo + 1) as f64;
        let chosen: Vec<(String, i64)> = all_keys.iter().take(12).cloned().collect();
        let ps: Vec<Panel> = chosen
            .iter()
            .map(|(s, l)| {
                let series = [false, true]
                    .iter()
                    .enumerate()
                    .map(|(ci, &d)| Series {
                        label: if d { "detrended" } else { "raw" }.into(),
                        points: (0..site.len())
                            .filter(|&i| {
                                &site[i] == s
                                    && layer[i] == *l
                                    && (lo[i], hi[i]) == (rlo, rhi)
                                    && detr[i] == d
                                    && k[i] > 0
                            })
                            .map(|i| (k[i] as f64, power[i].max(1e-30).log10()))
                            .collect(),
                        mark: Mark::Line,
                        color: palette(ci),
                    })
                    .collect();
                Panel {
                    title: format!("{} layer {l}", short(s)),
                    x_desc: "frequency k (period = n / k)".into(),
                    y_desc: "log10 power".into(),
                    series,
                    vlines: paper_periods.iter().map(|t| n / t).collect(),
                    x_ticks: None,
                }
            })
            .collect();
        crate::charts::panels(
            &out.join(&name),
            &format!("Fourier power along the number axis, numbers {rlo}..={rhi} (red: the paper's periods)"),
            &ps,
            3,
            420,
            300,
        )?;
        let _ = writeln!(
            html,
            "<h3>Spectrum, numbers {rlo}..={rhi}</h3>\n<img src=\"{name}\" alt=\"spectrum\">"
        );
    }
    pca_figures(run, out, &all_keys, &ranges, &mut html)?;
    similarity_figure(run, out, &all_keys, &mut html)?;
    separability_figure(run, out, &all_keys, &mut html)?;
    let discovered = Tbl::open(&run.path(tables::PERIODS))?;
    let mut found: BTreeMap<(String, i64), Vec<f64>> = BTreeMap::new();
    if let Some(p) = &discovered {
        let (s, l, t) = (p.str("site")?, p.i64("layer")?, p.f64("period")?);
        for i in 0..s.len() {
            found.entry((s[i].clone(), l[i])).or_default().push(t[i]);
        }
    }
    html.push_str(
        "<table border=1 cellpadding=4><tr><th>site</th><th>layer</th><th>range</th>\
         <th>strongest periods below 25 (raw spectrum)</th><th>discovered periods (greedy)</th></tr>\n",
    );
    for ((s, l, rlo, rhi), mut v) in strongest {
        v.sort_by(|a, b| b.0.total_cmp(&a.0));
        let top: Vec<String> = v.iter().take(4).map(|p| format!("{:.2}", p.1)).collect();
        let disc: Vec<String> = found
            .get(&(s.clone(), l))
            .map(|d| d.iter().map(|t| format!("{t:.2}")).collect())
            .unwrap_or_default();
        let _ = writeln!(
            html,
            "<tr><td>{s}</td><td>{l}</td><td>{rlo}..={rhi}</td><td>{}</td><td>{}</td></tr>",
            top.join(", "),
            disc.join(", ")
        );
    }
    html.push_str("</table>\n");
    Ok(html)
}

/// PC1 against the number, standardised representation.
fn pca_figures(
    run: &RunLayout,
    out: &Path,
    all_keys: &[(String, i64)],
    ranges: &[(i64, i64)],
    html: &mut String,
) -> Result<()> {
    let Some(scores) = Tbl::open(&run.path(tables::PCA_SCORES))? else {
        return Ok(());
    };
    let pca = Tbl::open(&run.path(tables::PCA))?;
    let mut r2: BTreeMap<RangeKey, f64> = BTreeMap::new();
    if let Some(p) = &pca {
        let (s, l, lo, hi, st, c, r) = (
            p.str("site")?,
            p.i64("layer")?,
            p.i64("range_lo")?,
            p.i64("range_hi")?,
            p.bool("standardized")?,
            p.i64("component")?,
            p.f64("r2_vs_number")?,
        );
        for i in 0..s.len() {
            if st[i] && c[i] == 1 {
                r2.insert((s[i].clone(), l[i], lo[i], hi[i]), r[i]);
            }
        }
    }
    let (s, l, lo, hi, st, x, pc1) = (
        scores.str("site")?,
        scores.i64("layer")?,
        scores.i64("range_lo")?,
        scores.i64("range_hi")?,
        scores.bool("standardized")?,
        scores.i64("x")?,
        scores.f64("pc1")?,
    );
    for &(rlo, rhi) in ranges {
        let name = format!("pc1_{rlo}_{rhi}.png");
        let ps: Vec<Panel> = all_keys
            .iter()
            .take(12)
            .map(|(site_k, layer_k)| Panel {
                title: format!(
                    "{} layer {layer_k}: R² {:.2}",
                    short(site_k),
                    r2.get(&(site_k.clone(), *layer_k, rlo, rhi))
                        .copied()
                        .unwrap_or(f64::NAN)
                ),
                x_desc: "number".into(),
                y_desc: "PC1".into(),
                series: vec![Series {
                    label: String::new(),
                    points: (0..s.len())
                        .filter(|&i| {
                            &s[i] == site_k
                                && l[i] == *layer_k
                                && (lo[i], hi[i]) == (rlo, rhi)
                                && st[i]
                        })
                        .map(|i| (x[i] as f64, pc1[i]))
                        .collect(),
                    mark: Mark::Dots,
                    color: palette(0),
                }],
                vlines: vec![],
                x_ticks: None,
            })
            .collect();
        panels(
            &out.join(&name),
            &format!(
                "PC1 of the standardised representation, numbers {rlo}..={rhi} (R²: PC1 ~ number)"
            ),
            &ps,
            3,
            420,
            300,
        )?;
        let _ = writeln!(html, "<img src=\"{name}\" alt=\"pc1 against the number\">");
    }
    Ok(())
}

/// Cosine similarity between numbers.
fn similarity_figure(
    run: &RunLayout,
    out: &Path,
    all_keys: &[(String, i64)],
    html: &mut String,
) -> Result<()> {
    let Some(sim) = Tbl::open(&run.path(tables::SIMILARITY))? else {
        return Ok(());
    };
    let (s, l, x, y, c) = (
        sim.str("site")?,
        sim.i64("layer")?,
        sim.i64("x")?,
        sim.i64("y")?,
        sim.f64("cosine")?,
    );
    let (site0, layers) = first_site(all_keys);
    let lo = x.iter().copied().min().unwrap_or(0);
    let n = (x.iter().copied().max().unwrap_or(0) - lo + 1) as usize;
    let maps: Vec<Heatmap> = spread(&layers, 4)
        .into_iter()
        .map(|layer_k| {
            let mut m = vec![vec![0.0; n]; n];
            for i in 0..s.len() {
                if s[i] == site0 && l[i] == layer_k {
                    m[(x[i] - lo) as usize][(y[i] - lo) as usize] = c[i];
                }
            }
            Heatmap {
                title: format!("{} layer {layer_k}", short(&site0)),
                lo,
                values: m,
                range: (-0.2, 1.0),
            }
        })
        .collect();
    heatmaps(
        &out.join("similarity.png"),
        "Cosine similarity between numbers (viridis, -0.2 to 1)",
        &maps,
        4,
        360,
    )?;
    html.push_str("<h3>Similarity</h3>\n<img src=\"similarity.png\" alt=\"similarity\">\n");
    Ok(())
}

/// Separability and discovered periods.
fn separability_figure(
    run: &RunLayout,
    out: &Path,
    all_keys: &[(String, i64)],
    html: &mut String,
) -> Result<()> {
    let Some(sep) = Tbl::open(&run.path(tables::SEPARABILITY))? else {
        return Ok(());
    };
    let (s, l, t, acc, null) = (
        sep.str("site")?,
        sep.i64("layer")?,
        sep.i64("period")?,
        sep.f64("accuracy")?,
        sep.f64("accuracy_shuffled")?,
    );
    let ps: Vec<Panel> = all_keys
        .iter()
        .take(12)
        .map(|(site_k, layer_k)| {
            let rows: Vec<usize> = (0..s.len())
                .filter(|&i| &s[i] == site_k && l[i] == *layer_k)
                .collect();
            Panel {
                title: format!("{} layer {layer_k}", short(site_k)),
                x_desc: "T".into(),
                y_desc: "held-out accuracy".into(),
                series: vec![
                    Series {
                        label: "x mod T".into(),
                        points: rows.iter().map(|&i| (t[i] as f64, acc[i])).collect(),
                        mark: Mark::Line,
                        color: palette(0),
                    },
                    Series {
                        label: "shuffled labels".into(),
                        points: rows.iter().map(|&i| (t[i] as f64, null[i])).collect(),
                        mark: Mark::Line,
                        color: palette(7),
                    },
                    Series {
                        label: "chance".into(),
                        points: rows
                            .iter()
                            .map(|&i| (t[i] as f64, 1.0 / t[i] as f64))
                            .collect(),
                        mark: Mark::Dots,
                        color: palette(3),
                    },
                ],
                vlines: vec![],
                x_ticks: None,
            }
        })
        .collect();
    panels(
        &out.join("separability.png"),
        "Linear separability of x mod T (ridge probe on held-out numbers)",
        &ps,
        3,
        420,
        300,
    )?;
    html.push_str(
        "<h3>Mod-T separability</h3>\n<img src=\"separability.png\" alt=\"separability\">\n",
    );
    Ok(())
}
