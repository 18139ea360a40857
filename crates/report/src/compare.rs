//! `helixlab compare RUN...`: one table across studies, as the paper's Table 1 (and Figs 19, 22,
//! 23): for every run, the best layer of each patch kind at the analysed operand (the largest
//! mean logit difference over layers, from patch/patching_summary.parquet) and of each fit
//! (the largest held-out R^2, from fit/fits.parquet). Writes `compare.parquet` and
//! `compare.html` in the output directory.
//!
//! Not here: running the studies (each run directory is a finished study's).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use helixlab_store::table::{Table, Values};
use helixlab_store::{atomic, tables, Frame, RunLayout, StageRun};

use crate::{escape, Result};

/// One run's best layer of one measure.
#[derive(Clone, Debug, PartialEq)]
pub struct Best {
    /// The study: the run directory's name.
    pub study: String,
    /// `patch` (logit difference) or `fit` (held-out R^2).
    pub experiment: &'static str,
    /// The site.
    pub site: String,
    /// The patch kind or fit variant.
    pub name: String,
    /// The best value over layers.
    pub value: f64,
    /// The layer where it is reached.
    pub layer: i64,
    /// Layers compared.
    pub layers: u32,
}

/// The best layer of each (site, name) of `value` (NaN rows are skipped).
fn best_by(
    study: &str,
    experiment: &'static str,
    site: &[String],
    name: &[String],
    layer: &[i64],
    value: &[f64],
) -> Vec<Best> {
    let mut by: BTreeMap<(String, String), (f64, i64, u32)> = BTreeMap::new();
    for i in 0..site.len() {
        let e = by
            .entry((site[i].clone(), name[i].clone()))
            .or_insert((f64::NEG_INFINITY, -1, 0));
        e.2 += 1;
        if value[i] > e.0 {
            (e.0, e.1) = (value[i], layer[i]);
        }
    }
    by.into_iter()
        .filter(|(_, v)| v.1 >= 0)
        .map(|((site, name), (value, layer, layers))| Best {
            study: study.to_string(),
            experiment,
            site,
            name,
            value,
            layer,
            layers,
        })
        .collect()
}

/// The name of each run in the table: its directory's name (`data/runs/<study>`), or the path
/// as given when two runs share a name.
pub fn study_labels(runs: &[PathBuf]) -> Vec<String> {
    let names: Vec<String> = runs
        .iter()
        .map(|r| {
            r.file_name()
                .map_or_else(|| r.display().to_string(), |n| n.to_string_lossy().into())
        })
        .collect();
    let unique = names
        .iter()
        .all(|n| names.iter().filter(|m| *m == n).count() == 1);
    if unique {
        names
    } else {
        runs.iter().map(|r| r.display().to_string()).collect()
    }
}

/// What `run` (named `study`) contributes: its patching kinds and its fits, each at its best
/// layer.
pub fn run_bests(run: &Path, study: &str, stage: &mut StageRun) -> Result<Vec<Best>> {
    let layout = RunLayout::new(run);
    let study = study.to_string();
    let mut out = Vec::new();
    stage.input_table(&layout, tables::FITS)?;
    let f = Frame::require(&layout, tables::FITS)?;
    out.extend(best_by(
        &study,
        "fit",
        &f.str("site")?,
        &f.str("variant")?,
        &f.i64("layer")?,
        &f.f64("r2_out")?,
    ));
    if stage.optional_input(&layout.path(tables::PATCHING_SUMMARY))? {
        let s = Frame::require(&layout, tables::PATCHING_SUMMARY)?;
        out.extend(best_by(
            &study,
            "patch",
            &s.str("site")?,
            &s.str("kind")?,
            &s.i64("layer")?,
            &s.f64("logit_diff")?,
        ));
    }
    Ok(out)
}

/// `helixlab compare`: the table and page of `runs` in `out`; returns the page.
pub fn compare(runs: &[PathBuf], out: &Path) -> Result<PathBuf> {
    let mut stage = StageRun::new(
        "compare",
        serde_json::json!({ "runs": runs.iter().map(|r| r.display().to_string()).collect::<Vec<_>>() }),
    );
    stage.begin();
    let mut rows = Vec::new();
    for (run, study) in runs.iter().zip(study_labels(runs)) {
        rows.extend(run_bests(run, &study, &mut stage)?);
    }
    let table = Table::new()
        .strs("study", rows.iter().map(|r| r.study.clone()))
        .strs("experiment", rows.iter().map(|r| r.experiment))
        .strs("site", rows.iter().map(|r| r.site.clone()))
        .strs("name", rows.iter().map(|r| r.name.clone()))
        .strs(
            "metric",
            rows.iter().map(|r| match r.experiment {
                "patch" => "max mean logit difference over layers",
                _ => "max held-out R^2 over layers",
            }),
        )
        .f64s("value", rows.iter().map(|r| r.value))
        .column("layer", Values::I64(rows.iter().map(|r| r.layer).collect()))
        .u32s("layers", rows.iter().map(|r| r.layers));
    std::fs::create_dir_all(out).map_err(|e| crate::ReportError::Figure {
        path: out.to_path_buf(),
        message: e.to_string(),
    })?;
    stage.write(&out.join("compare.parquet"), &table)?;
    let page = out.join("compare.html");
    atomic::write(&page, page_html(&rows, runs).as_bytes())?;
    Ok(page)
}

/// One table per (experiment, site): a row per kind or variant, a column per study.
fn page_html(rows: &[Best], runs: &[PathBuf]) -> String {
    let mut studies: Vec<&str> = Vec::new();
    for r in rows {
        if !studies.contains(&r.study.as_str()) {
            studies.push(&r.study);
        }
    }
    let mut html = String::from(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>helixlab: compare</title>\
         <style>body{font-family:sans-serif;max-width:70em;margin:2em auto} \
         td,th{padding:3px 8px} td{text-align:right}</style></head><body>\n\
         <h1>helixlab: studies compared</h1>\n<p>Each cell: the best layer's value and the \
         layer (in brackets). Patching: the largest mean logit difference over layers at the \
         analysed operand (the paper's Table 1); fits: the largest held-out R². From \
         <code>compare.parquet</code>:</p>\n<pre>SELECT * FROM 'compare.parquet' ORDER BY \
         experiment, site, name, study</pre>\n<p>Runs:</p><ul>",
    );
    for r in runs {
        let _ = write!(
            html,
            "<li><code>{}</code></li>",
            escape(&r.display().to_string())
        );
    }
    html.push_str("</ul>\n");
    let mut groups: Vec<(&str, &str)> = Vec::new();
    for r in rows {
        if !groups.contains(&(r.experiment, r.site.as_str())) {
            groups.push((r.experiment, &r.site));
        }
    }
    for (experiment, site) in groups {
        let _ = write!(
            html,
            "<h2>{} at <code>{}</code></h2>\n<table border=1><tr><th>{}</th>",
            if experiment == "patch" {
                "Patching"
            } else {
                "Fits"
            },
            escape(site),
            if experiment == "patch" {
                "patch kind"
            } else {
                "fit"
            }
        );
        for s in &studies {
            let _ = write!(html, "<th>{}</th>", escape(s));
        }
        html.push_str("</tr>\n");
        let mut names: Vec<&str> = Vec::new();
        for r in rows
            .iter()
            .filter(|r| r.experiment == experiment && r.site == site)
        {
            if !names.contains(&r.name.as_str()) {
                names.push(&r.name);
            }
        }
        for name in names {
            let _ = write!(html, "<tr><th>{}</th>", escape(name));
            for s in &studies {
                match rows.iter().find(|r| {
                    r.experiment == experiment && r.site == site && r.name == name && r.study == *s
                }) {
                    Some(r) => {
                        let _ = write!(html, "<td>{:.3} ({})</td>", r.value, r.layer);
                    }
                    None => html.push_str("<td>-</td>"),
                }
            }
            html.push_str("</tr>\n");
        }
        html.push_str("</table>\n");
    }
    html.push_str("</body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_layer_is_the_largest_value_and_nan_is_skipped() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let b = best_by(
            "toy",
            "patch",
            &s(&["r", "r", "r", "r"]),
            &s(&["layer", "layer", "helix", "helix"]),
            &[0, 1, 0, 1],
            &[1.0, 3.0, f64::NAN, 2.0],
        );
        assert_eq!(b.len(), 2);
        let helix = b.iter().find(|x| x.name == "helix").unwrap();
        assert_eq!((helix.value, helix.layer, helix.layers), (2.0, 1, 2));
        let layer = b.iter().find(|x| x.name == "layer").unwrap();
        assert_eq!((layer.value, layer.layer), (3.0, 1));
    }
}
