//! The report's last-token section (docs/method.md E4): patching the last token with the
//! helix fits and the fits' R², read from `<run>/patch/last_*.parquet`.

use std::fmt::Write as _;
use std::path::Path;

use crate::charts::{panels, Panel, Series};
use crate::sections::{line, Tbl};
use crate::Result;
use helixlab_store::{tables, RunLayout};

/// Patching the last token with the helix fits (paper Fig 5) and the fits' R^2.
// Long (about 110 lines): the last-token figure and its two tables from the same summary, in the
// order the section shows them.
pub fn last_token_section(run: &RunLayout, out: &Path) -> Result<String> {
    let Some(sum) = Tbl::open(&run.path(tables::LAST_TOKEN_SUMMARY))? else {
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
            x_ticks: None,
        },
        Panel {
            title: "last token: accuracy".into(),
            x_desc: "layer (resid_post)".into(),
            y_desc: "accuracy".into(),
            series: by_kind(&acc),
            vlines: vec![],
            x_ticks: None,
        },
    ];
    if let Some(f) = Tbl::open(&run.path(tables::LAST_FITS))? {
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
            x_ticks: None,
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
