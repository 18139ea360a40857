//! The report's fit section (docs/method.md E3): fit quality, the helix subspace, C's norms
//! and cosines, continuity, read from `<run>/fit/*.parquet`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::charts::{heatmaps, hue, palette, panels, Heatmap, Mark, Panel, Series};
use helixlab_pipeline::{FitName, FitSection};

use crate::sections::{distinct, first_site, keys, matched_size, short, spread, ByLayer, Tbl};
use crate::Result;
use helixlab_store::{tables, RunLayout};

/// Writes the fit figures into `out` and returns the HTML section ("" when the stage has not
/// run).
pub fn fit_section(run: &RunLayout, out: &Path, cfg: &FitSection) -> Result<String> {
    let Some(fits) = Tbl::open(&run.path(tables::FITS))? else {
        return Ok(String::new());
    };
    let mut html = String::from("<h2>Helix fits</h2>\n");
    let (s, l, v) = (fits.str("site")?, fits.i64("layer")?, fits.str("variant")?);
    let (r2_in, r2_out) = (fits.f64("r2_in")?, fits.f64("r2_out")?);
    let all_keys = keys(&s, &l);
    let sites = distinct(all_keys.iter().map(|k| &k.0));
    // The helix against baselines of its own size (poly9 and pca9 under the paper's periods).
    let poly = matched_size(&cfg.poly_degrees, &cfg.periods).map(FitName::Poly);
    let pca = matched_size(&cfg.pca_baselines, &cfg.periods).map(FitName::Pca);
    let pca_name = pca.as_ref().map_or(String::new(), FitName::to_string);
    let shown: Vec<String> = [
        Some(FitName::Helix),
        Some(FitName::HelixDiscovered),
        Some(FitName::Circle),
        poly,
        pca,
        Some(FitName::HelixRandom),
        Some(FitName::HelixShuffled),
    ]
    .into_iter()
    .flatten()
    .map(|f| f.to_string())
    .collect();
    let rows = ByLayer {
        site: &s,
        layer: &l,
        name: &v,
    };
    let mut ps = Vec::new();
    for site in &sites {
        for (col, values) in [("in sample", &r2_in), ("held-out numbers", &r2_out)] {
            ps.push(Panel {
                title: format!("{}: R² {col}", short(site)),
                x_desc: "layer".into(),
                y_desc: "R²".into(),
                series: rows.lines(&shown, site, |i| values[i].max(-0.5)),
                vlines: vec![],
                x_ticks: None,
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
    html.push_str(&format!(
        "<table border=1 cellpadding=4><tr><th>site</th><th>layer</th><th>helix R² (in / held out)</th>\
         <th>discovered-period helix</th><th>{pca_name}</th><th>random periods</th><th>shuffled (held out)</th></tr>\n",
    ));
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
            get(site, *layer, &pca_name, &r2_in),
            get(site, *layer, "helix_random", &r2_in),
            get(site, *layer, "helix_shuffled", &r2_out),
        );
    }
    html.push_str("</table>\n");

    helix_circles(run, out, &all_keys, &mut html)?;

    coefficient_figures(run, out, &all_keys, &mut html)?;

    continuity_figure(run, out, &all_keys, &mut html)?;
    Ok(html)
}

/// The helix subspace: one circle per period, coloured by x mod T, plus the line.
// Long (about 105 lines): one figure, one circle panel per period plus the linear term, laid out
// together.
fn helix_circles(
    run: &RunLayout,
    out: &Path,
    all_keys: &[(String, i64)],
    html: &mut String,
) -> Result<()> {
    let Some(coords) = Tbl::open(&run.path(tables::HELIX_COORDS))? else {
        return Ok(());
    };
    let (cs, cl, cv, cx, cb, cval) = (
        coords.str("site")?,
        coords.i64("layer")?,
        coords.str("variant")?,
        coords.i64("x")?,
        coords.str("basis")?,
        coords.f64("coordinate")?,
    );
    let (site0, layers) = first_site(all_keys);
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
                x_ticks: None,
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
                x_ticks: None,
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
        html.push_str(
            "<h3>The helix subspace</h3>\n<img src=\"helix_circles.png\" alt=\"helix circles\">\n",
        );
    }
    Ok(())
}

/// Column norms of C per basis function across layers, and cosine similarity of C's rows.
fn coefficient_figures(
    run: &RunLayout,
    out: &Path,
    all_keys: &[(String, i64)],
    html: &mut String,
) -> Result<()> {
    let Some(coef) = Tbl::open(&run.path(tables::COEFFICIENTS))? else {
        return Ok(());
    };
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
        x_ticks: None,
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
    Ok(())
}

/// Continuity: numbers never fitted, placed by the fit.
fn continuity_figure(
    run: &RunLayout,
    out: &Path,
    all_keys: &[(String, i64)],
    html: &mut String,
) -> Result<()> {
    let Some(cont) = Tbl::open(&run.path(tables::CONTINUITY))? else {
        return Ok(());
    };
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
            let mae = pts.iter().map(|p| (p.1 - p.0).abs()).sum::<f64>() / pts.len().max(1) as f64;
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
                x_ticks: None,
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
    Ok(())
}

struct RGBColorExt;
impl RGBColorExt {
    fn grey() -> plotters::style::RGBColor {
        plotters::style::RGBColor(170, 170, 170)
    }
}
