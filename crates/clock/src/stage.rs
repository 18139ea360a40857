//! `helixlab clock`: reads problems.parquet, answer_logits.parquet (when every answer is one
//! token) and the activations at `[clock] site`, and writes
//! `<run>/clock/{line_fit,linear_addition,distances,carry,logit_shapes}.parquet`.

use std::path::Path;

use helixlab_pipeline::{Pipeline, TaskKind};
use helixlab_store::read;
use helixlab_store::stage::{Outcome, Progress};
use helixlab_store::table::{Table, Values};
use helixlab_store::{tables, Frame, RunLayout, StageRun};
use ndarray::Array2;
use polars::prelude::DataFrame;

use crate::carry::{carry_test, CarryRule, WrongAnswer};
use crate::distances::by_offset;
use crate::line::{LineFit, Readout};
use crate::logit_shape::shape;
use crate::{ClockError, Result};

/// One problem of problems.parquet, as this stage reads it.
struct Problem {
    a: i64,
    b: i64,
    answer: i64,
    correct: bool,
    /// The number the model wrote, when it wrote one.
    pred: Option<i64>,
}

fn column_err(path: &Path, e: impl std::fmt::Display) -> ClockError {
    ClockError::Input(format!("{}: {e}", path.display()))
}

fn opt_i64(df: &DataFrame, path: &Path, c: &str) -> Result<Vec<Option<i64>>> {
    let s = df
        .column(c)
        .and_then(|s| s.cast(&polars::prelude::DataType::Int64))
        .map_err(|e| column_err(path, e))?;
    Ok(s.i64().map_err(|e| column_err(path, e))?.iter().collect())
}

fn read_problems(path: &Path) -> Result<Vec<Problem>> {
    let f = Frame::query(path, |q| q)?;
    let (a, b, answer, pred) = (
        f.i64("a")?,
        opt_i64(f.df(), path, "b")?,
        opt_i64(f.df(), path, "answer")?,
        opt_i64(f.df(), path, "pred_value")?,
    );
    let correct = f.bool("correct")?;
    Ok((0..a.len())
        .filter_map(|i| {
            Some(Problem {
                a: a[i],
                b: b[i]?,
                answer: answer[i]?,
                correct: correct[i],
                pred: pred[i],
            })
        })
        .collect())
}

/// The rows of one (site, layer) averaged per number of the analysis target, as a matrix.
fn numbers(p: &Pipeline, site: &str, layer: usize) -> Result<(Vec<i64>, Array2<f64>)> {
    let target = p.analysis_target().map_err(|(field, message)| {
        ClockError::Input(format!("{}: {field}: {message}", p.path.display()))
    })?;
    let m = read::activations(&p.run_dir(), site, layer, target.position.name())?;
    let rows = m
        .mean_by(target.number_column, target.range)
        .map_err(ClockError::Input)?;
    let x = Array2::from_shape_vec((rows.numbers.len(), rows.d), rows.values).expect("n x d");
    Ok((rows.numbers, x))
}

/// The site and layer of the numbers' representation: `[clock]`'s, or layer 0's output.
fn site_and_layer(p: &Pipeline) -> Result<(String, usize)> {
    let extracted = |s: &str| p.extract.sites.iter().any(|x| x.name() == s);
    let site = match &p.clock.site {
        Some(s) if extracted(s.name()) => s.name().to_string(),
        Some(s) => {
            return Err(ClockError::Input(format!(
                "{}: clock.site `{s}` is not extracted (extract.sites: {})",
                p.path.display(),
                p.extract
                    .sites
                    .iter()
                    .map(|x| x.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
        None if extracted("hook_resid_post") => "hook_resid_post".into(),
        None if extracted("hook_resid_pre") => "hook_resid_pre".into(),
        None => {
            return Err(ClockError::Input(format!(
                "{}: clock.site: the numbers' representation is read at hook_resid_post or \
                 hook_resid_pre, and neither is extracted (set [clock] site)",
                p.path.display()
            )))
        }
    };
    // Layer 0's output is resid_post of layer 0, the same activations as resid_pre of layer 1.
    let layer = p
        .clock
        .layer
        .unwrap_or(if site == "hook_resid_pre" { 1 } else { 0 });
    Ok((site, layer))
}

/// Runs the stage unless its tables are current (or `force`).
// Long (about 150 lines) because it gathers five small tables, each from its own analysis
// module, in one pass over the inputs it records.
pub fn run(p: &Pipeline, force: bool, progress: &dyn Progress) -> Result<Outcome> {
    if p.task.kind != TaskKind::Addition {
        return Err(ClockError::Input(format!(
            "{}: task.kind: the clock stage adds a and b (linear addition, carries), so it needs \
             an addition task, not {:?}",
            p.path.display(),
            p.task.kind
        )));
    }
    let c = &p.clock;
    let layout = RunLayout::new(p.run_dir());
    let (site, wanted) = site_and_layer(p)?;
    let site = site.as_str();
    let (work, inputs) =
        read::extracted_partitions(layout.root(), [site], p.extract.layers.listed())?;
    // Without a [clock] layer, the earliest extracted one stands in for layer 0's output.
    let layer = match p.clock.layer {
        Some(_) => wanted,
        None if work.iter().any(|(_, l)| *l == wanted) => wanted,
        None => work.iter().map(|(_, l)| *l).min().unwrap_or(wanted),
    };
    if !work.iter().any(|(_, l)| *l == layer) {
        return Err(ClockError::Input(format!(
            "{}: clock.layer {layer}: not extracted at {site} (layers: {})",
            p.path.display(),
            work.iter()
                .map(|(_, l)| l.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut run = StageRun::new(
        "clock",
        serde_json::json!({ "clock": c, "analysis": p.analysis }),
    );
    run.inputs(inputs);
    run.input_table(&layout, tables::PROBLEMS)?;
    let logits_path = layout.path(tables::ANSWER_LOGITS);
    let have_logits = run.optional_input_table(&layout, tables::ANSWER_LOGITS)?;
    if !force && run.tables_fresh(&layout, &tables::CLOCK) {
        return Ok(Outcome::UpToDate);
    }
    run.begin();
    let problems = read_problems(&layout.path(tables::PROBLEMS))?;
    progress.start("clock", 2 + work.len() as u64);

    // The line and linear addition.
    let (nums, x) = numbers(p, site, layer)?;
    let fit = LineFit::fit(&nums, x.view(), c.pcs)?;
    let (lo, hi) = (nums[0], nums[nums.len() - 1]);
    let line_fit = Table::new()
        .strs("site", [site])
        .u32s("layer", [layer as u32])
        .column("number_min", Values::I64(vec![lo]))
        .column("number_max", Values::I64(vec![hi]))
        .u32s("pcs", [fit.z.ncols() as u32])
        .f64s("explained_variance", [fit.explained])
        .f64s("r2", [fit.r2])
        .f64s("r2_uniform", [fit.r2_uniform])
        .f64s("slope_norm", [fit.slope.dot(&fit.slope).sqrt()]);
    let mut la = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for readout in Readout::ALL {
        let answers: Vec<(i64, bool, bool)> = problems
            .iter()
            .filter_map(|q| {
                let got = fit.add(q.a, q.b, readout)?;
                Some((q.a + q.b, got == q.answer, q.correct))
            })
            .collect();
        for &alpha in &c.alphas {
            let under: Vec<&(i64, bool, bool)> = answers.iter().filter(|x| x.0 < alpha).collect();
            let share = |f: fn(&(i64, bool, bool)) -> bool| {
                under.iter().filter(|x| f(x)).count() as f64 / under.len() as f64
            };
            la.0.push(readout.name().to_string());
            la.1.push(readout.rule(lo, hi, fit.z.ncols()));
            la.2.push(alpha);
            la.3.push(under.len() as u32);
            la.4.push(share(|x| x.1));
            la.5.push(share(|x| x.2));
        }
    }
    let linear = Table::new()
        .column("readout", Values::Str(la.0))
        .column("rule", Values::Str(la.1))
        .column("alpha", Values::I64(la.2))
        .column("problems", Values::U32(la.3))
        .column("accuracy", Values::F64(la.4))
        .column("model_accuracy", Values::F64(la.5));
    progress.advance(1);

    // Distances, every layer.
    let mut d = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for (_, layer) in &work {
        let (nums, x) = numbers(p, site, *layer)?;
        for r in &c.distance_ranges {
            for (dn, mean, pairs) in by_offset(&nums, x.view(), *r) {
                d.0.push(*layer as u32);
                d.1.push(r[0]);
                d.2.push(r[1]);
                d.3.push(dn);
                d.4.push(mean);
                d.5.push(pairs);
            }
        }
        progress.advance(1);
    }
    let n = d.0.len();
    let distances = Table::new()
        .column("site", Values::Str(vec![site.to_string(); n]))
        .column("layer", Values::U32(d.0))
        .column("a_min", Values::I64(d.1))
        .column("a_max", Values::I64(d.2))
        .column("dn", Values::I64(d.3))
        .column("distance", Values::F64(d.4))
        .column("pairs", Values::U32(d.5));

    // Errors and carries.
    let wrong: Vec<WrongAnswer> = problems
        .iter()
        .filter(|q| !q.correct)
        .filter_map(|q| {
            let error = q.pred? - q.answer;
            (error != 0).then_some(WrongAnswer {
                a: q.a,
                b: q.b,
                error,
            })
        })
        .collect();
    let share = |e: i64| wrong.iter().filter(|w| w.error == e).count() as f64 / wrong.len() as f64;
    let tests: Vec<_> = CarryRule::ALL
        .iter()
        .map(|&r| carry_test(&wrong, r))
        .collect();
    let k = tests.len();
    let carry = Table::new()
        .strs("rule", tests.iter().map(|t| t.rule.name()))
        .u32s("errors", std::iter::repeat_n(wrong.len() as u32, k))
        .f64s("share_minus_10", std::iter::repeat_n(share(-10), k))
        .f64s("share_plus_10", std::iter::repeat_n(share(10), k))
        .u32s("minus_10", tests.iter().map(|t| t.minus_ten.0))
        .u32s("minus_10_carry", tests.iter().map(|t| t.minus_ten.1))
        .u32s("other", tests.iter().map(|t| t.other.0))
        .u32s("other_carry", tests.iter().map(|t| t.other.1))
        .f64s("chi2", tests.iter().map(|t| t.chi2))
        .f64s("p_value", tests.iter().map(|t| t.p_value))
        .strs(
            "test",
            std::iter::repeat_n("chi-squared, 2 x 2, Yates's correction", k),
        );
    progress.advance(1);

    // The logits over every answer.
    let shapes = if have_logits {
        logit_shapes(&logits_path)?
    } else {
        empty_shapes()
    };
    progress.finish();
    run.write_table(&layout, tables::LINE_FIT, &line_fit)?;
    run.write_table(&layout, tables::LINEAR_ADDITION, &linear)?;
    run.write_table(&layout, tables::DISTANCES, &distances)?;
    run.write_table(&layout, tables::CARRY, &carry)?;
    run.write_table(&layout, tables::LOGIT_SHAPES, &shapes)?;
    Ok(run.outcome())
}

/// logit_shapes.parquet from answer_logits.parquet: one row per problem.
fn logit_shapes(path: &Path) -> Result<Table> {
    let f = Frame::query(path, |q| q)?;
    let (k, logits) = f.vectors("logits")?;
    let first = f.i64("first_answer")?;
    let mut planner = rustfft::FftPlanner::new();
    let (mut slope, mut freq, mut period) = (Vec::new(), Vec::new(), Vec::new());
    for row in logits.chunks(k.max(1)) {
        let s = shape(row, &mut planner);
        slope.push(s.slope);
        freq.push(s.frequency as u32);
        period.push(s.period);
    }
    let ids = f.i64("prompt_id")?;
    let keys = Table::new()
        .u32s("prompt_id", ids.iter().map(|&v| v as u32))
        .column("a", Values::I64(f.i64("a")?))
        .column("b", Values::I64(f.i64("b")?))
        .column("answer", Values::I64(f.i64("answer")?))
        .column("first_answer", Values::I64(first))
        .u32s("answers", std::iter::repeat_n(k as u32, ids.len()));
    Ok(keys
        .column("slope", Values::F64(slope))
        .column("frequency", Values::U32(freq))
        .column("period", Values::F64(period)))
}

/// An empty logit_shapes table (a task whose answers are not one token each has no logits over
/// every answer), with the columns of a full one.
fn empty_shapes() -> Table {
    let ints = || Values::I64(Vec::new());
    Table::new()
        .column("prompt_id", Values::U32(Vec::new()))
        .column("a", ints())
        .column("b", ints())
        .column("answer", ints())
        .column("first_answer", ints())
        .column("answers", Values::U32(Vec::new()))
        .column("slope", Values::F64(Vec::new()))
        .column("frequency", Values::U32(Vec::new()))
        .column("period", Values::F64(Vec::new()))
}
