//! The study report: figures (PNG) and an `index.html` read from a run's Parquet tables.
//!
//! Reads `problems.parquet`, the spectral tables and the fit tables; writes `<run>/report/`.
//! Figures: correctness over the (a, b) grid and the histogram of errors (answer - truth);
//! the Fourier spectrum with the paper's periods marked, PC1 against the number, cosine
//! similarity between numbers, mod-T separability (paper Figs 2, 13, 15); fit quality per
//! layer, the helix subspace as one circle per period, the norms and cosine similarities of C,
//! and the continuity test (Figs 3, 16, 17, 18).
//!
//! A key design decision is that text is drawn with a font committed in the crate
//! (DejaVu Sans, assets/), registered with plotters' ab_glyph backend: the report renders
//! the same on a machine with no system fonts, and the bitmap backend never panics for want
//! of one.
#![deny(missing_docs)]

pub mod charts;
mod clock_section;
pub mod compare;
mod components_section;
mod figures;
mod fit_section;
mod last_token_section;
pub mod neuron_grids;
mod neurons_section;
mod patching_section;
mod sections;
mod spectral_section;
pub mod svg_heatmap;
pub mod svg_lines;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use helixlab_pipeline::Pipeline;
use helixlab_store::{atomic, read, tables, Manifest, RunLayout};
use polars::prelude::*;

pub use figures::{accuracy_heatmap, error_histogram};

/// The most tokens an answer of problems.parquet takes (1 for tables without the column).
fn longest_answer(path: &Path) -> u32 {
    helixlab_store::Frame::query(path, |q| {
        q.select([col("answer_tokens").list().len().max().alias("n")])
    })
    .ok()
    .and_then(|f| f.i64("n").ok())
    .and_then(|v| v.first().copied())
    .map_or(1, |n| n.max(1) as u32)
}

/// What the page checks about itself once loaded, for a headless browser (tools/browser_check.py)
/// to read from the `data-check` attribute of `<body>`: images that did not load, contents links
/// without their target, the interactive heatmaps drawn, and any script or resource error.
const SELF_CHECK: &str = "<script>window.helixlabErrors=[];\
addEventListener('error',function(e){helixlabErrors.push(String(e.message||(e.target&&(e.target.src||e.target.href))))},true);\
addEventListener('load',function(){var im=Array.from(document.images),ln=Array.from(document.querySelectorAll('a[href^=\"#\"]'));\
document.body.setAttribute('data-check',JSON.stringify({images:im.length,\
broken:im.filter(function(i){return !(i.complete&&i.naturalWidth>0)}).map(function(i){return i.getAttribute('src')}),\
links:ln.length,dangling:ln.filter(function(a){return !document.getElementById(a.getAttribute('href').slice(1))}).map(function(a){return a.getAttribute('href')}),\
heatmaps:document.querySelectorAll('svg.heatmap').length,\
grids:document.querySelectorAll('figure.ngrid canvas').length,\
grid_cells:Array.from(document.querySelectorAll('figure.ngrid canvas')).map(function(c){return +(c.getAttribute('data-drawn')||0)}),\
layer_ticks:Array.from(document.querySelectorAll('svg.heatmap text.xtick.layer')).map(function(t){return t.textContent}),\
errors:helixlabErrors}))});</script>\n";

/// `text` with the characters HTML gives a meaning escaped, so study names, paths, templates
/// and manifests show as written and never run as markup.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `html` with an id on every section heading and a list of links to them after the intro.
pub fn with_contents(html: &str) -> String {
    let mut body = String::with_capacity(html.len() + 1024);
    let mut links = String::new();
    let mut rest = html;
    let mut n = 0;
    while let Some(i) = rest.find("<h2>") {
        let Some(end) = rest[i..].find("</h2>") else {
            break;
        };
        let title = &rest[i + 4..i + end];
        n += 1;
        let _ = write!(links, "<li><a href=\"#s{n}\">{title}</a></li>");
        body.push_str(&rest[..i]);
        let _ = write!(body, "<h2 id=\"s{n}\">{title}</h2>");
        rest = &rest[i + end + 5..];
    }
    body.push_str(rest);
    if n == 0 {
        return body;
    }
    let nav = format!("<nav><h2 id=\"contents\">Contents</h2><ol>{links}</ol></nav>\n");
    match body.find("</p>\n") {
        Some(i) => format!("{}{nav}{}", &body[..i + 5], &body[i + 5..]),
        None => nav + &body,
    }
}

/// Errors of the report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Reading a table failed.
    #[error(transparent)]
    Store(#[from] helixlab_store::StoreError),
    /// Drawing a figure failed.
    #[error("{path}: {message}")]
    Figure {
        /// The figure file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A column had an unexpected type.
    #[error("{table}: {source}")]
    Table {
        /// The table.
        table: PathBuf,
        /// The cause.
        source: PolarsError,
    },
}

/// Result alias.
pub type Result<T> = std::result::Result<T, ReportError>;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("the committed font parses"));
    });
}

/// Correctness of every problem, by (a, b), read from problems.parquet.
pub struct Correctness {
    /// (a, b, correct, predicted value - answer).
    pub rows: Vec<(i64, i64, bool, Option<i64>)>,
}

fn correctness(run_dir: &Path) -> Result<Correctness> {
    let table = RunLayout::new(run_dir).path(tables::PROBLEMS);
    let df = read::problems(run_dir)?;
    let err = |source| ReportError::Table {
        table: table.clone(),
        source,
    };
    let a = df.column("a").and_then(|c| c.i64().cloned()).map_err(err)?;
    let b = df.column("b").and_then(|c| c.i64().cloned()).map_err(err)?;
    let correct = df
        .column("correct")
        .and_then(|c| c.bool().cloned())
        .map_err(err)?;
    let pred = df
        .column("pred_value")
        .and_then(|c| c.i64().cloned())
        .map_err(err)?;
    let answer = df
        .column("answer")
        .and_then(|c| c.i64().cloned())
        .map_err(err)?;
    let rows = (0..df.height())
        .filter_map(|i| {
            let (a, b, ok) = (a.get(i)?, b.get(i)?, correct.get(i)?);
            let error = match (pred.get(i), answer.get(i)) {
                (Some(p), Some(t)) => Some(p - t),
                _ => None,
            };
            Some((a, b, ok, error))
        })
        .collect();
    Ok(Correctness { rows })
}

/// Writes `<run>/report/` for the pipeline: figures, then index.html (last, atomically).
pub fn write_report(p: &Pipeline) -> Result<PathBuf> {
    register_font();
    let layout = RunLayout::new(p.run_dir());
    let run = &layout;
    let out = layout.report_dir();
    std::fs::create_dir_all(&out).map_err(|e| ReportError::Figure {
        path: out.clone(),
        message: e.to_string(),
    })?;
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>helixlab: {name}</title>\
         <style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}} \
         img{{max-width:100%}} pre{{background:#f4f4f4;padding:1em;overflow-x:auto}}</style>\
         </head><body>\n{SELF_CHECK}<h1>helixlab study: {name}</h1>\n<p>Model <code>{model}</code> \
         ({dtype}, {device}); task <code>{kind:?}</code>, template <code>{template}</code>.</p>\n",
        name = escape(&p.name),
        model = escape(&p.model.dir),
        dtype = p.model.dtype,
        device = p.model.device,
        kind = p.task.kind,
        template = escape(&format!("{:?}", p.task.template)),
    );
    let problems_path = run.path(tables::PROBLEMS);
    let scored = if Manifest::read_for(&problems_path).is_some() {
        Some(correctness(run.root())?).filter(|c| !c.rows.is_empty())
    } else {
        None
    };
    if let Some(c) = scored {
        let n = c.rows.len();
        let ok = c.rows.iter().filter(|r| r.2).count();
        let heat = out.join("accuracy_heatmap.png");
        accuracy_heatmap(&c, &heat)?;
        let hist = out.join("error_histogram.png");
        let wrong_numeric = error_histogram(&c, &hist)?;
        let longest = longest_answer(&problems_path);
        let scoring = if longest > 1 {
            format!(
                " Answers of up to {longest} tokens are scored whole: a problem is correct when \
                 greedy decoding writes every answer token and then ends the number (one \
                 teacher-forced forward), and a wrong answer is the number greedy decoding \
                 writes."
            )
        } else {
            String::new()
        };
        let _ = write!(
            html,
            "<h2>Accuracy</h2>\n<p>{ok} of {n} problems correct ({:.1} %); {wrong_numeric} wrong \
             answers are numbers.{scoring}</p>\n<img src=\"accuracy_heatmap.png\" alt=\"correctness over a and b\">\n\
             <img src=\"error_histogram.png\" alt=\"histogram of answer minus truth\">\n",
            100.0 * ok as f64 / n.max(1) as f64
        );
        if let Some(m) = Manifest::read_for(&problems_path) {
            let _ = writeln!(
                html,
                "<details><summary>How problems.parquet was made</summary><pre>{}</pre></details>",
                escape(&serde_json::to_string_pretty(&m).unwrap_or_default())
            );
        }
    } else if Manifest::read_for(&problems_path).is_some() {
        html.push_str("<p>The task has no answers to score (bare numbers).</p>\n");
    } else {
        html.push_str("<p>No problems.parquet yet: run <code>helixlab accuracy</code>.</p>\n");
    }
    html.push_str(&spectral_section::spectral_section(
        run,
        &out,
        &p.fit.periods,
    )?);
    html.push_str(&fit_section::fit_section(run, &out, &p.fit)?);
    html.push_str(&clock_section::clock_section(run, &out)?);
    html.push_str(&patching_section::patch_section(run, &out, p)?);
    html.push_str(&last_token_section::last_token_section(run, &out)?);
    html.push_str(&components_section::components_section(run, &out)?);
    html.push_str(&neurons_section::neurons_section(run, &out)?);
    for table in [
        tables::PERIODS,
        tables::FITS,
        tables::LINE_FIT,
        tables::PATCHING,
        tables::LAST_TOKEN,
        tables::COMPONENTS,
        tables::NEURON_TOP,
    ] {
        let stage = table.writer;
        if let Some(m) = Manifest::read_for(&run.path(table)) {
            let _ = writeln!(
                html,
                "<details><summary>How the {stage} tables were made</summary><pre>{}</pre></details>",
                escape(&serde_json::to_string_pretty(&m).unwrap_or_default())
            );
        }
    }
    html.push_str("</body></html>\n");
    let html = with_contents(&html);
    let index = out.join("index.html");
    atomic::write(&index, html.as_bytes())?;
    Ok(index)
}
