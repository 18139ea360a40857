//! The report's a/b-token patching section (docs/method.md E3): patching curves and the best
//! patch per kind, read from `<run>/patch/patching_summary.parquet`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::charts::{panels, Panel};
use helixlab_pipeline::{FitName, PatchKind, Pipeline};

use crate::sections::{distinct, matched_size, short, ByLayer, Tbl};
use crate::svg_lines::SvgLines;
use crate::Result;
use helixlab_store::{tables, RunLayout};

/// Writes the patching figure into `out` and returns the HTML section ("" when the stage has
/// not run).
pub fn patch_section(run: &RunLayout, out: &Path, p: &Pipeline) -> Result<String> {
    let Some(sum) = Tbl::open(&run.path(tables::PATCHING_SUMMARY))? else {
        return Ok(String::new());
    };
    let (s, l, k) = (sum.str("site")?, sum.i64("layer")?, sum.str("kind")?);
    let (ld, acc, norm) = (
        sum.f64("logit_diff")?,
        sum.f64("accuracy")?,
        sum.f64("normalized")?,
    );
    let sites = distinct(&s);
    // The helix against patches of its own size (pca9 and poly9 under the paper's periods).
    let periods = &p.fit.periods;
    let shown: Vec<String> = [
        Some(PatchKind::Layer),
        matched_size(&p.patch.pca_ks, periods).map(PatchKind::Pca),
        Some(PatchKind::Fit(FitName::Helix)),
        Some(PatchKind::Fit(FitName::HelixDiscovered)),
        Some(PatchKind::Fit(FitName::Circle)),
        matched_size(&p.fit.poly_degrees, periods).map(|d| PatchKind::Fit(FitName::Poly(d))),
        Some(PatchKind::Fit(FitName::HelixRandom)),
        Some(PatchKind::MeanAblation),
    ]
    .into_iter()
    .flatten()
    .map(|k| k.to_string())
    .collect();
    let rows = ByLayer {
        site: &s,
        layer: &l,
        name: &k,
    };
    let mut ps = Vec::new();
    for site in &sites {
        for (what, vals) in [("logit difference", &ld), ("accuracy", &acc)] {
            ps.push(Panel {
                title: format!("{}: {what}", short(site)),
                x_desc: "layer".into(),
                y_desc: what.into(),
                series: rows.lines(&shown, site, |i| vals[i]),
                vlines: vec![],
                x_ticks: None,
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
         <img src=\"patching.png\" alt=\"patching curves\">\n<p>Each patch kind at its best \
         layer, ranked; the first eight per site shown, the rest and every kind that moves \
         nothing (|logit difference| under 1e-6 at every layer) folded.</p>\n",
    );
    // Every kind, to hover and toggle (the PNG above shows the paper's selection).
    let all_kinds = distinct(&k);
    for site in &sites {
        let series = rows.lines(&all_kinds, site, |i| ld[i]);
        let title = format!(
            "{}: logit difference of every patch kind (click a kind to hide it)",
            short(site)
        );
        let chart = SvgLines {
            title: &title,
            x_label: "layer",
            y_label: "logit difference",
            series: &series,
        };
        html.push_str(&chart.render());
        html.push('\n');
    }
    let header = "<table border=1 cellpadding=4><tr><th>site</th><th>patch</th><th>max logit \
                  difference over layers</th><th>at layer</th><th>accuracy there</th>\
                  <th>normalised there</th></tr>\n";
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
        let moves =
            |kind: &str| (0..s.len()).any(|i| &s[i] == site && k[i] == kind && ld[i].abs() >= 1e-6);
        let row = |(kind, i): &(String, usize)| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{:.2}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td></tr>\n",
                crate::escape(site),
                crate::escape(kind),
                ld[*i],
                l[*i],
                acc[*i],
                norm[*i]
            )
        };
        let (moving, still): (Vec<_>, Vec<_>) =
            order.into_iter().partition(|(kind, _)| moves(kind));
        html.push_str(header);
        html.extend(moving.iter().take(8).map(row));
        html.push_str("</table>\n");
        let rest: Vec<_> = moving.iter().skip(8).chain(&still).collect();
        if !rest.is_empty() {
            let _ = write!(
                html,
                "<details><summary>{} more kinds at {} ({} of them move nothing)</summary>\n{header}",
                rest.len(),
                crate::escape(site),
                still.len()
            );
            html.extend(rest.into_iter().map(row));
            html.push_str("</table></details>\n");
        }
    }
    html.push_str(
        "<p>Every layer and kind: <code>patch/patching_summary.parquet</code>, e.g. \
         <code>SELECT site, kind, max(logit_diff) FROM 'patch/patching_summary.parquet' GROUP \
         BY site, kind ORDER BY 3 DESC</code>; every pair: <code>patch/patching.parquet</code>.</p>\n",
    );
    Ok(html)
}
