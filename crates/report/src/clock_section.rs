//! The report's "Why a clock" section (the paper's appendix), read from `<run>/clock/*.parquet`:
//! the line through layer 0 and linear addition against the model (Fig 36), distances between
//! a and a + dn (Fig 14), the carry test of the -10 errors (Figs 37-38), and the slope and top
//! period of the final logits over every answer (Figs 41-42).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::charts::{panels, Mark, Panel, Series};
use crate::sections::{line, spread, Tbl};
use crate::{escape, Result};
use helixlab_store::{tables, RunLayout};

fn fmt_p(p: f64) -> String {
    if p.is_nan() {
        "no test (an empty row or column)".into()
    } else {
        format!("{p:.3e}")
    }
}

/// The section, or nothing when `helixlab clock` has not run.
// Long (about 150 lines): four figures and two tables from five small tables, in the order the
// section shows them.
pub fn clock_section(run: &RunLayout, out: &Path) -> Result<String> {
    let Some(fit) = Tbl::open(&run.path(tables::LINE_FIT))? else {
        return Ok(String::new());
    };
    let mut html = String::from("<h2>Why a clock</h2>\n");
    let (site, layer) = (fit.str("site")?[0].clone(), fit.i64("layer")?[0]);
    let (lo, hi) = (fit.i64("number_min")?[0], fit.i64("number_max")?[0]);
    let _ = writeln!(
        html,
        "<p>A line fitted to the first {pcs} PCs ({ev:.1} % of the variance) of \
         <code>{site}</code> layer {layer} for the numbers {lo}..={hi}: R² {r2:.3} (variance \
         weighted; {r2u:.3} averaged over the PCs alike). The paper finds 0.997 in GPT-J.</p>",
        pcs = fit.i64("pcs")?[0],
        ev = 100.0 * fit.f64("explained_variance")?[0],
        site = escape(&site),
        r2 = fit.f64("r2")?[0],
        r2u = fit.f64("r2_uniform")?[0],
    );
    let mut ps = Vec::new();
    if let Some(la) = Tbl::open(&run.path(tables::LINEAR_ADDITION))? {
        let (readout, rule, alpha) = (la.str("readout")?, la.str("rule")?, la.i64("alpha")?);
        let (acc, model) = (la.f64("accuracy")?, la.f64("model_accuracy")?);
        let mut series = Vec::new();
        let mut rules = Vec::new();
        for name in crate::sections::distinct(&readout) {
            let rows: Vec<usize> = (0..readout.len()).filter(|&i| readout[i] == name).collect();
            rules.push(format!(
                "<li><code>{}</code>: {}</li>",
                escape(&name),
                escape(&rule[rows[0]])
            ));
            series.push(line(
                &format!("linear addition ({name})"),
                series.len(),
                rows.iter().map(|&i| (alpha[i] as f64, acc[i])).collect(),
            ));
            if series.len() == 1 {
                series.push(line(
                    "the model",
                    7,
                    rows.iter().map(|&i| (alpha[i] as f64, model[i])).collect(),
                ));
            }
        }
        ps.push(Panel {
            title: "linear addition against the model (Fig 36)".into(),
            x_desc: "alpha (problems with a + b < alpha)".into(),
            y_desc: "accuracy".into(),
            series,
            vlines: vec![],
            x_ticks: None,
        });
        let _ = writeln!(
            html,
            "<p>Linear addition adds the two numbers on that line and reads the answer back \
             (the paper does not say how; helixlab's two readouts):</p><ul>{}</ul>",
            rules.join("")
        );
    }
    if let Some(d) = Tbl::open(&run.path(tables::DISTANCES))? {
        let (l, amin, amax, dn, dist) = (
            d.i64("layer")?,
            d.i64("a_min")?,
            d.i64("a_max")?,
            d.i64("dn")?,
            d.f64("distance")?,
        );
        let mut layers: Vec<i64> = l.clone();
        layers.sort_unstable();
        layers.dedup();
        let shown = spread(&layers, 6);
        let mut ranges: Vec<(i64, i64)> = (0..l.len()).map(|i| (amin[i], amax[i])).collect();
        ranges.dedup();
        ranges.sort_unstable();
        ranges.dedup();
        for (r0, r1) in ranges {
            ps.push(Panel {
                title: format!("distance from a to a + dn, a in {r0}..={r1} (Fig 14)"),
                x_desc: "dn".into(),
                y_desc: format!(
                    "mean |x(a + dn) - x(a)| ({})",
                    crate::sections::short(&site)
                ),
                series: shown
                    .iter()
                    .enumerate()
                    .map(|(ci, &ly)| {
                        line(
                            &format!("layer {ly}"),
                            ci,
                            (0..l.len())
                                .filter(|&i| l[i] == ly && amin[i] == r0 && amax[i] == r1)
                                .map(|i| (dn[i] as f64, dist[i]))
                                .collect(),
                        )
                    })
                    .collect(),
                vlines: vec![10.0, 100.0],
                x_ticks: None,
            });
        }
    }
    let mut period_rows = String::new();
    if let Some(s) = Tbl::open(&run.path(tables::LOGIT_SHAPES))?.filter(|s| s.df().height() > 0) {
        let (slope, period) = (s.f64("slope")?, s.f64("period")?);
        let n = slope.len();
        let negative = slope.iter().filter(|&&v| v < 0.0).count();
        // Slopes binned into 40 bins between their extremes.
        let (smin, smax) = slope
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let width = ((smax - smin) / 40.0).max(1e-12);
        let mut bins = vec![0usize; 41];
        for &v in &slope {
            bins[((v - smin) / width) as usize] += 1;
        }
        ps.push(Panel {
            title: format!(
                "slope of the logits over every answer ({negative} of {n} negative; Fig 41)"
            ),
            x_desc: "slope (logit per unit of answer)".into(),
            y_desc: "problems".into(),
            series: vec![line(
                "",
                0,
                bins.iter()
                    .enumerate()
                    .map(|(i, &c)| (smin + (i as f64 + 0.5) * width, c as f64))
                    .collect(),
            )],
            vlines: vec![0.0],
            x_ticks: None,
        });
        let mut counts: BTreeMap<i64, (f64, usize)> = BTreeMap::new();
        for &p in period.iter().filter(|p| p.is_finite()) {
            counts.entry((p * 1e6).round() as i64).or_insert((p, 0)).1 += 1;
        }
        let mut top: Vec<(f64, usize)> = counts.into_values().collect();
        top.sort_by_key(|b| std::cmp::Reverse(b.1));
        ps.push(Panel {
            title: "top period of the detrended logits (Fig 42)".into(),
            x_desc: "period (answers)".into(),
            y_desc: "problems".into(),
            series: vec![Series {
                label: String::new(),
                points: top.iter().map(|&(p, c)| (p, c as f64)).collect(),
                mark: Mark::Dots,
                color: crate::charts::palette(3),
            }],
            vlines: vec![2.0, 5.0, 10.0, 100.0],
            x_ticks: None,
        });
        for (p, c) in top.iter().take(6) {
            let _ = write!(
                period_rows,
                "<tr><td>{p:.3}</td><td>{c}</td><td>{:.1} %</td></tr>",
                100.0 * *c as f64 / n as f64
            );
        }
    }
    if !ps.is_empty() {
        panels(&out.join("clock.png"), "Why a clock", &ps, 2, 520, 360)?;
        html.push_str("<img src=\"clock.png\" alt=\"linear addition, distances, logit shapes\">\n");
    }
    if !period_rows.is_empty() {
        let _ = writeln!(
            html,
            "<p>Final logits over every answer, per problem: a fitted line taken away, what \
             remains scaled to [-1, 1], its strongest Fourier frequency (period = answers / \
             frequency; on 199 answers period 10 reads 9.95). The paper: period 10 most often, \
             slopes mostly negative.</p>\n<table border=1 cellpadding=4><tr><th>top period</th>\
             <th>problems</th><th>share</th></tr>{period_rows}</table>"
        );
    }
    if let Some(c) = Tbl::open(&run.path(tables::CARRY))? {
        let (rule, errors) = (c.str("rule")?, c.i64("errors")?);
        let (m, mc, o, oc) = (
            c.i64("minus_10")?,
            c.i64("minus_10_carry")?,
            c.i64("other")?,
            c.i64("other_carry")?,
        );
        let (chi2, p) = (c.f64("chi2")?, c.f64("p_value")?);
        let share = |a: i64, b: i64| {
            if b > 0 {
                format!("{:.1} %", 100.0 * a as f64 / b as f64)
            } else {
                "-".into()
            }
        };
        let _ =
            writeln!(
            html,
            "<p>The carry test (Figs 37-38): of {} wrong answers that are numbers, {:.1} % are \
             off by -10 and {:.1} % by +10. Do the -10 errors need a carry more often than the \
             others? (chi-squared test of the 2 x 2 table, Yates's correction; the paper finds \
             no significant difference in GPT-J)</p>\n<table border=1 cellpadding=4><tr>\
             <th>carry when</th><th>-10 errors</th><th>with a carry</th><th>other errors</th>\
             <th>with a carry</th><th>chi²</th><th>p</th></tr>",
            errors.first().copied().unwrap_or(0),
            100.0 * c.f64("share_minus_10")?.first().copied().unwrap_or(f64::NAN),
            100.0 * c.f64("share_plus_10")?.first().copied().unwrap_or(f64::NAN),
        );
        for i in 0..rule.len() {
            let _ = writeln!(
                html,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{:.3}</td><td>{}</td></tr>",
                escape(&rule[i]),
                m[i],
                share(mc[i], m[i]),
                o[i],
                share(oc[i], o[i]),
                chi2[i],
                fmt_p(p[i])
            );
        }
        html.push_str("</table>\n");
    }
    Ok(html)
}
