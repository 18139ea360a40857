//! The report's spectral and fit sections: figures and summary tables read from
//! `<run>/spectral/*.parquet` and `<run>/fit/*.parquet`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::charts::{heatmaps, hue, palette, panels, Heatmap, Mark, Panel, Series};
use crate::Result;

/// Result tables are read as [`Frame`]s (typed columns; errors name the table).
pub(crate) use helixlab_store::Frame as Tbl;

/// (site, layer) keys: sites in the order the stage wrote them (the pipeline's), layers
/// ascending.
fn keys(sites: &[String], layers: &[i64]) -> Vec<(String, i64)> {
    let mut order: Vec<&String> = Vec::new();
    for s in sites {
        if !order.contains(&s) {
            order.push(s);
        }
    }
    let mut k: Vec<(String, i64)> = sites.iter().cloned().zip(layers.iter().copied()).collect();
    k.sort_by_key(|(s, l)| (order.iter().position(|o| *o == s), *l));
    k.dedup();
    k
}

/// (site, layer, range low, range high).
type RangeKey = (String, i64, i64, i64);

/// Up to `n` layers spread over `layers` (first and last included).
fn spread(layers: &[i64], n: usize) -> Vec<i64> {
    if layers.len() <= n {
        return layers.to_vec();
    }
    let mut out: Vec<i64> = (0..n)
        .map(|i| layers[i * (layers.len() - 1) / (n - 1)])
        .collect();
    out.dedup();
    out
}

fn short(site: &str) -> String {
    site.trim_start_matches("hook_").to_string()
}

/// Writes the spectral figures into `out` and returns the HTML section ("" when the stage
/// has not run).
pub fn spectral_section(run: &Path, out: &Path, paper_periods: &[f64]) -> Result<String> {
    let dir = run.join("spectral");
    let Some(spectra) = Tbl::open(&dir.join("spectra.parquet"))? else {
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
    // PC1 against the number, standardised representation.
    if let Some(scores) = Tbl::open(&dir.join("pca_scores.parquet"))? {
        let pca = Tbl::open(&dir.join("pca.parquet"))?;
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
        for &(rlo, rhi) in &ranges {
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
                })
                .collect();
            panels(
                &out.join(&name),
                &format!("PC1 of the standardised representation, numbers {rlo}..={rhi} (R²: PC1 ~ number)"),
                &ps,
                3,
                420,
                300,
            )?;
            let _ = writeln!(html, "<img src=\"{name}\" alt=\"pc1 against the number\">");
        }
    }
    // Cosine similarity between numbers.
    if let Some(sim) = Tbl::open(&dir.join("similarity.parquet"))? {
        let (s, l, x, y, c) = (
            sim.str("site")?,
            sim.i64("layer")?,
            sim.i64("x")?,
            sim.i64("y")?,
            sim.f64("cosine")?,
        );
        let site0 = all_keys[0].0.clone();
        let layers: Vec<i64> = all_keys
            .iter()
            .filter(|k| k.0 == site0)
            .map(|k| k.1)
            .collect();
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
    }
    // Separability and discovered periods.
    if let Some(sep) = Tbl::open(&dir.join("separability.parquet"))? {
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
    }
    let discovered = Tbl::open(&dir.join("periods.parquet"))?;
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

/// Writes the fit figures into `out` and returns the HTML section ("" when the stage has not
/// run).
pub fn fit_section(run: &Path, out: &Path) -> Result<String> {
    let dir = run.join("fit");
    let Some(fits) = Tbl::open(&dir.join("fits.parquet"))? else {
        return Ok(String::new());
    };
    let mut html = String::from("<h2>Helix fits</h2>\n");
    let (s, l, v) = (fits.str("site")?, fits.i64("layer")?, fits.str("variant")?);
    let (r2_in, r2_out) = (fits.f64("r2_in")?, fits.f64("r2_out")?);
    let all_keys = keys(&s, &l);
    let mut sites: Vec<String> = Vec::new();
    for (site, _) in &all_keys {
        if !sites.contains(site) {
            sites.push(site.clone());
        }
    }
    let shown = [
        "helix",
        "helix_discovered",
        "circle",
        "poly9",
        "pca9",
        "helix_random",
        "helix_shuffled",
    ];
    let mut ps = Vec::new();
    for site in &sites {
        for (col, values) in [("in sample", &r2_in), ("held-out numbers", &r2_out)] {
            ps.push(Panel {
                title: format!("{}: R² {col}", short(site)),
                x_desc: "layer".into(),
                y_desc: "R²".into(),
                series: shown
                    .iter()
                    .enumerate()
                    .map(|(ci, name)| Series {
                        label: name.to_string(),
                        points: (0..s.len())
                            .filter(|&i| &s[i] == site && v[i] == *name)
                            .map(|i| (l[i] as f64, values[i].max(-0.5)))
                            .collect(),
                        mark: Mark::Line,
                        color: palette(ci),
                    })
                    .collect(),
                vlines: vec![],
            });
        }
    }
    panels(
        &out.join("fit_quality.png"),
        "Fit quality per layer (R² in activation space; clipped at -0.5)",
        &ps,
        2,
        520,
        360,
    )?;
    html.push_str("<img src=\"fit_quality.png\" alt=\"fit quality per layer\">\n");
    html.push_str(
        "<table border=1 cellpadding=4><tr><th>site</th><th>layer</th><th>helix R² (in / held out)</th>\
         <th>discovered-period helix</th><th>PCA-9</th><th>random periods</th><th>shuffled (held out)</th></tr>\n",
    );
    let get = |site: &str, layer: i64, name: &str, vals: &[f64]| {
        (0..s.len())
            .find(|&i| s[i] == site && l[i] == layer && v[i] == name)
            .map_or(f64::NAN, |i| vals[i])
    };
    for (site, layer) in &all_keys {
        let _ = writeln!(
            html,
            "<tr><td>{site}</td><td>{layer}</td><td>{:.3} / {:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td></tr>",
            get(site, *layer, "helix", &r2_in),
            get(site, *layer, "helix", &r2_out),
            get(site, *layer, "helix_discovered", &r2_in),
            get(site, *layer, "pca9", &r2_in),
            get(site, *layer, "helix_random", &r2_in),
            get(site, *layer, "helix_shuffled", &r2_out),
        );
    }
    html.push_str("</table>\n");

    // The helix subspace: one circle per period, coloured by x mod T, plus the line.
    if let Some(coords) = Tbl::open(&dir.join("helix_coords.parquet"))? {
        let (cs, cl, cv, cx, cb, cval) = (
            coords.str("site")?,
            coords.i64("layer")?,
            coords.str("variant")?,
            coords.i64("x")?,
            coords.str("basis")?,
            coords.f64("coordinate")?,
        );
        let site0 = all_keys[0].0.clone();
        let layers: Vec<i64> = all_keys
            .iter()
            .filter(|k| k.0 == site0)
            .map(|k| k.1)
            .collect();
        let mut ps = Vec::new();
        for layer in spread(&layers, 3) {
            let mut by: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
            for i in 0..cs.len() {
                if cs[i] == site0 && cl[i] == layer && cv[i] == "helix" {
                    by.entry(cb[i].clone()).or_default().insert(cx[i], cval[i]);
                }
            }
            let periods: Vec<String> = by
                .keys()
                .filter_map(|k| k.strip_prefix("cos_").map(str::to_string))
                .collect();
            let mut periods_sorted: Vec<(f64, String)> = periods
                .iter()
                .map(|p| (p.parse::<f64>().unwrap_or(0.0), p.clone()))
                .collect();
            periods_sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
            for (t, name) in periods_sorted {
                let (Some(c), Some(sn)) = (
                    by.get(&format!("cos_{name}")),
                    by.get(&format!("sin_{name}")),
                ) else {
                    continue;
                };
                let classes = (t.round() as usize).max(1);
                let mut series: Vec<Series> = Vec::new();
                for class in 0..classes.min(100) {
                    let pts: Vec<(f64, f64)> = c
                        .iter()
                        .filter(|(x, _)| (x.rem_euclid(classes as i64)) as usize == class)
                        .filter_map(|(x, cv)| sn.get(x).map(|sv| (*cv, *sv)))
                        .collect();
                    if !pts.is_empty() {
                        series.push(Series {
                            label: String::new(),
                            points: pts,
                            mark: Mark::Dots,
                            color: hue(class, classes),
                        });
                    }
                }
                ps.push(Panel {
                    title: format!("layer {layer}: T = {name}"),
                    x_desc: format!("cos_{name}"),
                    y_desc: format!("sin_{name}"),
                    series,
                    vlines: vec![],
                });
            }
            if let Some(lin) = by.get("linear") {
                ps.push(Panel {
                    title: format!("layer {layer}: linear"),
                    x_desc: "number".into(),
                    y_desc: "linear coordinate".into(),
                    series: vec![Series {
                        label: String::new(),
                        points: lin.iter().map(|(x, y)| (*x as f64, *y)).collect(),
                        mark: Mark::Dots,
                        color: palette(0),
                    }],
                    vlines: vec![],
                });
            }
        }
        if !ps.is_empty() {
            let per_row = ps.len().div_ceil(spread(&layers, 3).len().max(1));
            panels(
                &out.join("helix_circles.png"),
                &format!(
                    "The helix subspace at {}: C⁺(h − mean) per period, coloured by x mod T",
                    short(&site0)
                ),
                &ps,
                per_row,
                300,
                280,
            )?;
            html.push_str("<h3>The helix subspace</h3>\n<img src=\"helix_circles.png\" alt=\"helix circles\">\n");
        }
    }

    // Column norms of C per basis function across layers, and cosine similarity of C's rows.
    if let Some(coef) = Tbl::open(&dir.join("coefficients.parquet"))? {
        let (cs, cl, cv, cb) = (
            coef.str("site")?,
            coef.i64("layer")?,
            coef.str("variant")?,
            coef.str("basis")?,
        );
        let (d, flat) = coef.vectors("coefficient")?;
        let site0 = all_keys[0].0.clone();
        let rows: Vec<usize> = (0..cs.len())
            .filter(|&i| cs[i] == site0 && cv[i] == "helix" && cb[i] != "mean" && cb[i] != "bias")
            .collect();
        let mut names: Vec<String> = Vec::new();
        for &i in &rows {
            if !names.contains(&cb[i]) {
                names.push(cb[i].clone());
            }
        }
        let norm = |i: usize| {
            flat[i * d..(i + 1) * d]
                .iter()
                .map(|v| (*v as f64).powi(2))
                .sum::<f64>()
                .sqrt()
        };
        let norms = Panel {
            title: format!("{}: ‖C row‖ per basis function", short(&site0)),
            x_desc: "layer".into(),
            y_desc: "norm".into(),
            series: names
                .iter()
                .enumerate()
                .map(|(ci, name)| Series {
                    label: name.clone(),
                    points: rows
                        .iter()
                        .filter(|&&i| &cb[i] == name)
                        .map(|&i| (cl[i] as f64, norm(i)))
                        .collect(),
                    mark: Mark::Line,
                    color: palette(ci),
                })
                .collect(),
            vlines: vec![],
        };
        panels(
            &out.join("coef_norms.png"),
            "Helix coefficients C",
            &[norms],
            1,
            720,
            400,
        )?;
        let first_layer = rows.iter().map(|&i| cl[i]).min().unwrap_or(0);
        let at: Vec<usize> = rows
            .iter()
            .copied()
            .filter(|&i| cl[i] == first_layer)
            .collect();
        let cos = |a: usize, b: usize| {
            let (x, y) = (&flat[a * d..(a + 1) * d], &flat[b * d..(b + 1) * d]);
            let dot: f64 = x.iter().zip(y).map(|(p, q)| *p as f64 * *q as f64).sum();
            let n = norm(a) * norm(b);
            if n > 0.0 {
                dot / n
            } else {
                0.0
            }
        };
        let m = Heatmap {
            title: format!("layer {first_layer}, rows in order: {}", names.join(" ")),
            lo: 0,
            values: at
                .iter()
                .map(|&a| at.iter().map(|&b| cos(a, b)).collect())
                .collect(),
            range: (-1.0, 1.0),
        };
        heatmaps(
            &out.join("coef_cosine.png"),
            "Cosine similarity of C's rows",
            &[m],
            1,
            520,
        )?;
        html.push_str(
            "<h3>Helix coefficients</h3>\n<img src=\"coef_norms.png\" alt=\"C norms\">\n\
             <img src=\"coef_cosine.png\" alt=\"C cosine\">\n",
        );
    }

    // Continuity: numbers never fitted, placed by the fit.
    if let Some(cont) = Tbl::open(&dir.join("continuity.parquet"))? {
        let (cs, cl, cx, cd) = (
            cont.str("site")?,
            cont.i64("layer")?,
            cont.i64("x")?,
            cont.f64("decoded")?,
        );
        let ps: Vec<Panel> = all_keys
            .iter()
            .take(12)
            .map(|(site_k, layer_k)| {
                let pts: Vec<(f64, f64)> = (0..cs.len())
                    .filter(|&i| &cs[i] == site_k && cl[i] == *layer_k)
                    .map(|i| (cx[i] as f64, cd[i]))
                    .collect();
                let mae =
                    pts.iter().map(|p| (p.1 - p.0).abs()).sum::<f64>() / pts.len().max(1) as f64;
                Panel {
                    title: format!("{} layer {layer_k}: mean error {mae:.2}", short(site_k)),
                    x_desc: "number left out".into(),
                    y_desc: "placed at".into(),
                    series: vec![
                        Series {
                            label: String::new(),
                            points: pts.iter().map(|p| (p.0, p.0)).collect(),
                            mark: Mark::Line,
                            color: RGBColorExt::grey(),
                        },
                        Series {
                            label: String::new(),
                            points: pts,
                            mark: Mark::Dots,
                            color: palette(3),
                        },
                    ],
                    vlines: vec![],
                }
            })
            .collect();
        panels(
            &out.join("continuity.png"),
            "Continuity: fitted without the numbers ending in the digit, then placed",
            &ps,
            3,
            380,
            300,
        )?;
        html.push_str("<h3>Continuity</h3>\n<img src=\"continuity.png\" alt=\"continuity\">\n");
    }
    Ok(html)
}

struct RGBColorExt;
impl RGBColorExt {
    fn grey() -> plotters::style::RGBColor {
        plotters::style::RGBColor(170, 170, 170)
    }
}

/// Writes the patching figure into `out` and returns the HTML section ("" when the stage has
/// not run).
pub fn patch_section(run: &Path, out: &Path) -> Result<String> {
    let Some(sum) = Tbl::open(&run.join("patch").join("patching_summary.parquet"))? else {
        return Ok(String::new());
    };
    let (s, l, k) = (sum.str("site")?, sum.i64("layer")?, sum.str("kind")?);
    let (ld, acc, norm) = (
        sum.f64("logit_diff")?,
        sum.f64("accuracy")?,
        sum.f64("normalized")?,
    );
    let mut sites: Vec<String> = Vec::new();
    for x in &s {
        if !sites.contains(x) {
            sites.push(x.clone());
        }
    }
    let shown = [
        "layer",
        "pca9",
        "helix",
        "helix_discovered",
        "circle",
        "poly9",
        "helix_random",
        "mean_ablation",
    ];
    let mut ps = Vec::new();
    for site in &sites {
        for (what, vals) in [("logit difference", &ld), ("accuracy", &acc)] {
            ps.push(Panel {
                title: format!("{}: {what}", short(site)),
                x_desc: "layer".into(),
                y_desc: what.into(),
                series: shown
                    .iter()
                    .enumerate()
                    .map(|(ci, name)| Series {
                        label: name.to_string(),
                        points: (0..s.len())
                            .filter(|&i| &s[i] == site && k[i] == *name)
                            .map(|i| (l[i] as f64, vals[i]))
                            .collect(),
                        mark: Mark::Line,
                        color: palette(ci),
                    })
                    .collect(),
                vlines: vec![],
            });
        }
    }
    panels(
        &out.join("patching.png"),
        "Patching the operand's token with the corrupt number (paper Fig 4)",
        &ps,
        2,
        520,
        360,
    )?;
    let mut html = String::from(
        "<h2>Patching</h2>\n<p>Each clean prompt is run with the activation at the operand's \
         token replaced by a patch for the corrupt number; the logit difference is the corrupt \
         answer's logit patched minus clean (the paper's metric).</p>\n\
         <img src=\"patching.png\" alt=\"patching curves\">\n\
         <table border=1 cellpadding=4><tr><th>site</th><th>patch</th><th>max logit difference \
         over layers</th><th>at layer</th><th>accuracy there</th><th>normalised there</th></tr>\n",
    );
    for site in &sites {
        let mut best: BTreeMap<String, usize> = BTreeMap::new();
        for i in (0..s.len()).filter(|&i| &s[i] == site) {
            let e = best.entry(k[i].clone()).or_insert(i);
            if ld[i] > ld[*e] {
                *e = i;
            }
        }
        let mut order: Vec<(String, usize)> = best.into_iter().collect();
        order.sort_by(|a, b| ld[b.1].total_cmp(&ld[a.1]));
        for (kind, i) in order {
            let _ = writeln!(
                html,
                "<tr><td>{site}</td><td>{kind}</td><td>{:.2}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td></tr>",
                ld[i], l[i], acc[i], norm[i]
            );
        }
    }
    html.push_str("</table>\n");
    Ok(html)
}
