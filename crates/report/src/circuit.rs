//! The report's last-token and component sections (method.md E4, E5): figures and tables read
//! from `<run>/patch/last_*.parquet` and `<run>/patch/component*.parquet`.

use std::fmt::Write as _;
use std::path::Path;

use crate::analysis::Tbl;
use crate::charts::{heatmaps, palette, panels, Heatmap, Mark, Panel, Series};
use crate::Result;

fn line(label: &str, ci: usize, points: Vec<(f64, f64)>) -> Series {
    Series {
        label: label.into(),
        points,
        mark: Mark::Line,
        color: palette(ci),
    }
}

/// Patching the last token with the helix fits (paper Fig 5) and the fits' R^2.
pub fn last_token_section(run: &Path, out: &Path) -> Result<String> {
    let Some(sum) = Tbl::open(&run.join("patch").join("last_token_summary.parquet"))? else {
        return Ok(String::new());
    };
    let (l, e, ld, acc) = (
        sum.i64("layer")?,
        sum.str("effect")?,
        sum.f64("logit_diff")?,
        sum.f64("accuracy")?,
    );
    let mut kinds: Vec<String> = Vec::new();
    for k in &e {
        if !kinds.contains(k) {
            kinds.push(k.clone());
        }
    }
    let by_kind = |vals: &[f64]| -> Vec<Series> {
        kinds
            .iter()
            .enumerate()
            .map(|(ci, k)| {
                line(
                    k,
                    ci,
                    (0..l.len())
                        .filter(|&i| &e[i] == k)
                        .map(|i| (l[i] as f64, vals[i]))
                        .collect(),
                )
            })
            .collect()
    };
    let mut ps = vec![
        Panel {
            title: "last token: logit difference".into(),
            x_desc: "layer (resid_post)".into(),
            y_desc: "logit difference".into(),
            series: by_kind(&ld),
            vlines: vec![],
        },
        Panel {
            title: "last token: accuracy".into(),
            x_desc: "layer (resid_post)".into(),
            y_desc: "accuracy".into(),
            series: by_kind(&acc),
            vlines: vec![],
        },
    ];
    if let Some(f) = Tbl::open(&run.join("patch").join("last_fits.parquet"))? {
        let (fl, fv, r2) = (f.i64("layer")?, f.str("variant")?, f.f64("r2")?);
        let mut variants: Vec<String> = Vec::new();
        for v in &fv {
            if !variants.contains(v) {
                variants.push(v.clone());
            }
        }
        ps.push(Panel {
            title: "last token: R^2 of the fits (all correct problems)".into(),
            x_desc: "layer (resid_post)".into(),
            y_desc: "R^2".into(),
            series: variants
                .iter()
                .enumerate()
                .map(|(ci, v)| {
                    line(
                        v,
                        kinds
                            .iter()
                            .position(|k| k == v)
                            .unwrap_or(ci + kinds.len()),
                        (0..fl.len())
                            .filter(|&i| &fv[i] == v)
                            .map(|i| (fl[i] as f64, r2[i]))
                            .collect(),
                    )
                })
                .collect(),
            vlines: vec![],
        });
    }
    panels(
        &out.join("last_token.png"),
        "Patching the last token with helix(a+b), helix(a,b), helix(a,b,a+b) (paper Fig 5)",
        &ps,
        3,
        440,
        340,
    )?;
    let mut html = String::from(
        "<h2>Last token</h2>\n<p>At <code>hook_resid_post</code>, last position, every layer: \
         the clean run's activation replaced by the corrupt run's (<code>layer</code>), its \
         PCA-k projection, or a helix fitted over every correct problem evaluated at the \
         corrupt (a', b'). Pairs: any two correct problems with different answers.</p>\n\
         <img src=\"last_token.png\" alt=\"last-token patching\">\n\
         <table border=1 cellpadding=4><tr><th>patch</th><th>max logit difference over \
         layers</th><th>at layer</th><th>accuracy there</th></tr>\n",
    );
    for k in &kinds {
        if let Some(i) = (0..l.len())
            .filter(|&i| &e[i] == k)
            .max_by(|&a, &b| ld[a].total_cmp(&ld[b]))
        {
            let _ = writeln!(
                html,
                "<tr><td>{k}</td><td>{:.2}</td><td>{}</td><td>{:.2}</td></tr>",
                ld[i], l[i], acc[i]
            );
        }
    }
    html.push_str("</table>\n");
    Ok(html)
}

/// MLP and attention TE/DE per layer (Fig 6), top-k curves (Figs 25, 30), head effects
/// (Fig 24), circuit MLPs (Fig 7) and head types (Figs 26-28).
pub fn components_section(run: &Path, out: &Path) -> Result<String> {
    let Some(sum) = Tbl::open(&run.join("patch").join("components_summary.parquet"))? else {
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
    let roles = Tbl::open(&run.join("patch").join("component_roles.parquet"))?;
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
             mixed).</p>\n<table border=1 cellpadding=4><tr><th>component</th><th>rank</th>\
             <th>TE</th><th>DE</th><th>DE/TE</th><th>helix(a,b)/TE</th><th>helix(a+b)/TE</th>\
             <th>helix(a,b,a+b)/TE</th><th>role</th></tr>\n",
        );
        let fmt = |v: f64| {
            if v.is_nan() {
                "".to_string()
            } else {
                format!("{v:.2}")
            }
        };
        for i in 0..rc.len() {
            let name = if rc[i] == "head" {
                format!("L{}H{}", rl[i], rh[i])
            } else {
                format!("MLP {}", rl[i])
            };
            let _ =
                writeln!(
                html,
                "<tr><td>{name}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td></tr>",
                rank[i],
                te[i],
                de[i],
                fmt(if te[i] != 0.0 { de[i] / te[i] } else { f64::NAN }),
                fmt(ab[i]),
                fmt(sum_[i]),
                fmt(full[i]),
                role[i]
            );
        }
        html.push_str("</table>\n");
    }
    Ok(html)
}
