//! The report's component section (docs/method.md E5): MLP, attention and head effects, the
//! circuit and head types, read from `<run>/patch/component*.parquet`.

use std::fmt::Write as _;
use std::path::Path;

use crate::charts::{heatmaps, panels, Heatmap, Panel};
use crate::sections::{line, Tbl};
use crate::svg_heatmap::SvgHeatmap;
use crate::Result;
use helixlab_store::{tables, RunLayout};

/// MLP and attention TE/DE per layer (Fig 6), top-k curves (Figs 25, 30), head effects
/// (Fig 24), circuit MLPs (Fig 7) and head types (Figs 26-28).
// Long (about 160 lines): one figure after another from the same two tables, in the order the
// section shows them.
pub fn components_section(run: &RunLayout, out: &Path) -> Result<String> {
    let Some(sum) = Tbl::open(&run.path(tables::COMPONENTS_SUMMARY))? else {
        return Ok(String::new());
    };
    let (c, l, h, e, ld) = (
        sum.str("component")?,
        sum.i64("layer")?,
        sum.i64("head")?,
        sum.str("effect")?,
        sum.f64("logit_diff")?,
    );
    let pick = |comp: &str, effect: &str| -> Vec<(f64, f64)> {
        (0..c.len())
            .filter(|&i| c[i] == comp && e[i] == effect)
            .map(|i| (l[i] as f64, ld[i]))
            .collect()
    };
    let roles = Tbl::open(&run.path(tables::COMPONENT_ROLES))?;
    let mut circuit_k = None;
    if let Some(r) = &roles {
        let (rc, role) = (r.str("component")?, r.str("role")?);
        circuit_k = Some(
            (0..rc.len())
                .filter(|&i| rc[i] == "mlp" && role[i] == "circuit")
                .count() as f64,
        );
    }
    let ps = vec![
        Panel {
            title: "MLPs and attention: total and direct effect".into(),
            x_desc: "layer".into(),
            y_desc: "logit difference".into(),
            series: vec![
                line("MLP TE", 0, pick("mlp", "total")),
                line("MLP DE", 1, pick("mlp", "direct")),
                line("attention TE", 2, pick("attn", "total")),
                line("attention DE", 3, pick("attn", "direct")),
            ],
            vlines: vec![],
            x_ticks: None,
        },
        Panel {
            title: "top-k patched together (circuit: dashed)".into(),
            x_desc: "k (ranked by total effect)".into(),
            y_desc: "logit difference".into(),
            series: vec![
                line("heads", 4, pick("heads_top", "total")),
                line("MLPs", 5, pick("mlps_top", "total")),
            ],
            vlines: circuit_k.into_iter().collect(),
            x_ticks: None,
        },
    ];
    panels(
        &out.join("components.png"),
        "Components at the last token (paper Figs 6, 25)",
        &ps,
        2,
        520,
        360,
    )?;
    // Heads: layers x heads.
    let n_layers = (0..c.len())
        .filter(|&i| c[i] == "head")
        .map(|i| l[i] + 1)
        .max()
        .unwrap_or(0) as usize;
    let n_heads = (0..c.len())
        .filter(|&i| c[i] == "head")
        .map(|i| h[i] + 1)
        .max()
        .unwrap_or(0) as usize;
    let mut maps = Vec::new();
    for effect in ["total", "direct"] {
        let mut v = vec![vec![0.0; n_heads]; n_layers];
        for i in (0..c.len()).filter(|&i| c[i] == "head" && e[i] == effect) {
            v[l[i] as usize][h[i] as usize] = ld[i];
        }
        let lo = v.iter().flatten().cloned().fold(0.0f64, f64::min);
        let hi = v.iter().flatten().cloned().fold(0.0f64, f64::max);
        maps.push(Heatmap {
            title: format!("head {effect} effect, {lo:.2} (dark) to {hi:.2} (yellow)"),
            lo: 0,
            values: v,
            range: (lo, hi.max(lo + 1e-9)),
        });
    }
    if n_layers > 0 {
        heatmaps(
            &out.join("heads.png"),
            "Heads at the last token, x: layer, y: head (paper Fig 24)",
            &maps,
            2,
            420,
        )?;
    }
    let mut html = String::from(
        "<h2>Components</h2>\n<p>Total effect (TE): the clean run with one component's output \
         at the last token replaced by the corrupt run's, everything after it recomputed. \
         Direct effect (DE): that change added to the final residual stream before the final \
         norm, reaching the logits only directly. Metric: the corrupt answer's logit, patched \
         minus clean. Top-k: components ranked by TE, patched together; the MLP circuit is the \
         smallest top-k set reaching the configured fraction of the best.</p>\n\
         <img src=\"components.png\" alt=\"component effects\">\n\
         <img src=\"heads.png\" alt=\"head effects\">\n",
    );
    if n_layers > 0 {
        html.push_str(
            "<p>The same head effects to hover (each cell's tooltip names the head and gives \
             its mean logit difference; red raises the corrupt answer, blue lowers it):</p>\n",
        );
        let name = |l: usize, h: usize| format!("L{l}H{h}");
        for (effect, m) in ["total", "direct"].iter().zip(&maps) {
            let title = format!("head {effect} effect (mean logit difference)");
            let svg = SvgHeatmap {
                title: &title,
                x_label: "layer",
                y_label: "head",
                values: &m.values,
                name: &name,
                ticks: (&[], &[]),
            };
            html.push_str(&svg.render());
            html.push('\n');
        }
    }
    html.push_str(&attention_figure(run, out)?);
    html.push_str(&path_patching_figure(run)?);
    if let Some(r) = roles {
        let (rc, rl, rh, rank, te, de) = (
            r.str("component")?,
            r.i64("layer")?,
            r.i64("head")?,
            r.i64("rank")?,
            r.f64("total_effect")?,
            r.f64("direct_effect")?,
        );
        let (ab, sum_, full, role) = (
            r.f64("te_fit_ab_over_te")?,
            r.f64("te_fit_sum_over_te")?,
            r.f64("te_fit_ab_sum_over_te")?,
            r.str("role")?,
        );
        html.push_str(
            "<p>Ranked heads and MLPs. The fit columns are the TE of the component's output \
             replaced by a helix fit's prediction for the corrupt problem, over the component's \
             own TE (paper Figs 7, 26-28); heads are typed by the paper's scores (a,b / a+b / \
             mixed).</p>\n",
        );
        let fmt = |v: f64| {
            if v.is_nan() {
                "".to_string()
            } else {
                format!("{v:.2}")
            }
        };
        // The first ten heads and MLPs by rank open; the rest folded (448 heads do not read).
        let header = "<table border=1 cellpadding=4><tr><th>component</th><th>rank</th>\
                      <th>TE</th><th>DE</th><th>DE/TE</th><th>helix(a,b)/TE</th>\
                      <th>helix(a+b)/TE</th><th>helix(a,b,a+b)/TE</th><th>role</th></tr>\n";
        let row =
            |i: usize| {
                let name = if rc[i] == "head" {
                    format!("L{}H{}", rl[i], rh[i])
                } else {
                    format!("MLP {}", rl[i])
                };
                format!(
                "<tr><td>{name}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td></tr>\n",
                rank[i],
                te[i],
                de[i],
                fmt(if te[i] != 0.0 { de[i] / te[i] } else { f64::NAN }),
                fmt(ab[i]),
                fmt(sum_[i]),
                fmt(full[i]),
                role[i]
            )
            };
        let (open, rest): (Vec<usize>, Vec<usize>) = (0..rc.len()).partition(|&i| rank[i] <= 10);
        html.push_str(header);
        html.extend(open.into_iter().map(row));
        html.push_str("</table>\n");
        if !rest.is_empty() {
            let _ = write!(
                html,
                "<details><summary>{} more heads and MLPs, by rank</summary>\n{header}",
                rest.len()
            );
            html.extend(rest.into_iter().map(row));
            html.push_str("</table></details>\n");
        }
        html.push_str(
            "<p>Every row: <code>patch/component_roles.parquet</code>, e.g. \
             <code>SELECT component, layer, head, rank, total_effect, direct_effect, role FROM \
             'patch/component_roles.parquet' ORDER BY abs(total_effect) DESC LIMIT 20</code>.</p>\n",
        );
    }
    Ok(html)
}

/// Path patching (paper Fig 29): the mean logit difference of each sender head's corrupt output
/// reaching the logits only through one receiver, as a receivers x senders heatmap.
fn path_patching_figure(run: &RunLayout) -> Result<String> {
    let Some(t) = Tbl::open(&run.path(tables::PATH_PATCHING))?.filter(|t| t.df().height() > 0)
    else {
        return Ok(String::new());
    };
    let (sl, sh, kind, rl, rh, ld) = (
        t.i64("sender_layer")?,
        t.i64("sender_head")?,
        t.str("receiver")?,
        t.i64("receiver_layer")?,
        t.i64("receiver_head")?,
        t.f64("logit_diff")?,
    );
    let sender = |i: usize| format!("L{}H{}", sl[i], sh[i]);
    let receiver = |i: usize| match kind[i].as_str() {
        "head" => format!("L{}H{}", rl[i], rh[i]),
        _ => format!("MLP {}", rl[i]),
    };
    let mut senders: Vec<(i64, i64, String)> =
        (0..sl.len()).map(|i| (sl[i], sh[i], sender(i))).collect();
    senders.sort();
    senders.dedup();
    let mut receivers: Vec<(i64, bool, i64, String)> = (0..sl.len())
        .map(|i| (rl[i], kind[i] == "mlp", rh[i], receiver(i)))
        .collect();
    receivers.sort();
    receivers.dedup();
    let mut sums = vec![vec![(0.0, 0usize); senders.len()]; receivers.len()];
    for (i, v) in ld.iter().enumerate() {
        let x = receivers
            .iter()
            .position(|r| r.3 == receiver(i))
            .expect("listed");
        let y = senders
            .iter()
            .position(|s| s.2 == sender(i))
            .expect("listed");
        sums[x][y].0 += v;
        sums[x][y].1 += 1;
    }
    // A receiver before its sender was not run: blank (NaN) rather than zero.
    let values: Vec<Vec<f64>> = sums
        .iter()
        .map(|c| {
            c.iter()
                .map(|&(s, n)| if n > 0 { s / n as f64 } else { f64::NAN })
                .collect()
        })
        .collect();
    let xs: Vec<String> = receivers.iter().map(|r| r.3.clone()).collect();
    let ys: Vec<String> = senders.iter().map(|s| s.2.clone()).collect();
    let name = |x: usize, y: usize| format!("{} via {}", ys[y], xs[x]);
    let svg = SvgHeatmap {
        title: "path patching: sender (row) to the logits through one receiver (column)",
        x_label: "receiver",
        y_label: "sender head",
        values: &values,
        name: &name,
        ticks: (&xs, &ys),
    }
    .render();
    Ok(format!(
        "<p>Path patching (paper Fig 29): a top head's corrupt output, added to the residual \
         stream, reaches the logits only through one later top head's input (its query, key \
         and value) or one later MLP's; the mean change of the corrupt answer's logit over the \
         pairs (<code>patch/path_patching.parquet</code>; grey: receiver not after the \
         sender).</p>\n{svg}\n"
    ))
}

/// Where the top heads look (paper Fig 28): mean attention from the last token to a, b and
/// itself against the head's layer, coloured by the head's type.
fn attention_figure(run: &RunLayout, out: &Path) -> Result<String> {
    let Some(t) = Tbl::open(&run.path(tables::HEAD_ATTENTION))?.filter(|t| t.df().height() > 0)
    else {
        return Ok(String::new());
    };
    let (l, h) = (t.i64("layer")?, t.i64("head")?);
    let cols = [
        t.f64("attn_to_a")?,
        t.f64("attn_to_b")?,
        t.f64("attn_to_self")?,
    ];
    let mut means: std::collections::BTreeMap<(i64, i64), ([f64; 3], [usize; 3])> =
        Default::default();
    for i in 0..l.len() {
        let e = means.entry((l[i], h[i])).or_default();
        for (j, c) in cols.iter().enumerate() {
            if c[i].is_finite() {
                e.0[j] += c[i];
                e.1[j] += 1;
            }
        }
    }
    let mut role = std::collections::BTreeMap::new();
    if let Some(r) = Tbl::open(&run.path(tables::COMPONENT_ROLES))? {
        let (rc, rl, rh, rr) = (
            r.str("component")?,
            r.i64("layer")?,
            r.i64("head")?,
            r.str("role")?,
        );
        for i in (0..rc.len()).filter(|&i| rc[i] == "head" && !rr[i].is_empty()) {
            role.insert((rl[i], rh[i]), rr[i].clone());
        }
    }
    let types = ["a,b", "a+b", "mixed"];
    let ps: Vec<Panel> = ["a", "b", "itself"]
        .iter()
        .enumerate()
        .map(|(j, to)| Panel {
            title: format!("attention from the last token to {to}"),
            x_desc: "layer".into(),
            y_desc: "mean attention probability".into(),
            series: types
                .iter()
                .enumerate()
                .map(|(ci, ty)| crate::charts::Series {
                    label: format!("{ty} heads"),
                    points: means
                        .iter()
                        .filter(|(k, _)| role.get(*k).map(String::as_str) == Some(*ty))
                        .filter(|(_, v)| v.1[j] > 0)
                        .map(|(k, v)| (k.0 as f64, v.0[j] / v.1[j] as f64))
                        .collect(),
                    mark: crate::charts::Mark::Dots,
                    color: crate::charts::palette(ci),
                })
                .collect(),
            vlines: vec![],
            x_ticks: None,
        })
        .collect();
    panels(
        &out.join("head_attention.png"),
        "Where the top heads look (paper Fig 28)",
        &ps,
        3,
        420,
        340,
    )?;
    Ok(
        "<p>Where the top heads look (paper Fig 28): each top head's attention from the last \
        token to the a token, the b token and itself, averaged over the component-fit sample \
        (<code>patch/head_attention.parquet</code>, one row per prompt and head), coloured by \
        the head's type.</p>\n<img src=\"head_attention.png\" alt=\"head attention\">\n"
            .to_string(),
    )
}
