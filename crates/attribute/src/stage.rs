//! `helixlab neurons`: every experiment of docs/method.md E6 in one stage, in the order each
//! needs the one before: attribution ranks the neurons; the top ones are patched exactly and
//! get total and direct effects; the sparsity sweep keeps the top k and mean-ablates the rest;
//! the top neurons' preactivations over the whole task grid give their periods and fits; the
//! fits are patched in; the circuit MLPs (from `helixlab components`, when it has run) are
//! compared by a+b fraction and DE/TE.

use std::collections::{BTreeMap, BTreeSet};

use helixlab_numeric::split;
use helixlab_numeric::stats::linear_r2;
use helixlab_pipeline::{Pipeline, Position, TaskKind};
use helixlab_store::shard::Shard;
use helixlab_store::stage::{Outcome, Progress};
use helixlab_store::table::{Table, Values};
use helixlab_store::{tables, Frame, Manifest, RunLayout};
use helixlab_study::pairs::{load, problems, read_pairs, ProblemInfo};
use ndarray::Array2;
use polars::prelude::{col, lit};
use std::path::Path;

use crate::forwards::{
    answer_logits, attribution, evaluate, mean_activations, neuron_effects, preactivations, Keep,
    Neuron, NeuronEffect,
};
use crate::logit_lens::{direction_period, lens_rows, logit_lens, Lens};
use crate::neuron_fit::{fit_neurons, NeuronFit};
use crate::periods::{near, periods, Periods};
use crate::{AttributeError, Result};
use helixlab_numeric::trend::TopPeriod;

/// The numbers of neurons kept by the sparsity sweep: `keep` when given (capped at `total`),
/// else 0, the powers of two below `total`, and `total`.
pub fn keep_grid(total: usize, keep: &[usize]) -> Vec<usize> {
    let ks: BTreeSet<usize> = if keep.is_empty() {
        std::iter::once(0)
            .chain((0..).map(|i| 1usize << i).take_while(|&k| k < total))
            .chain(std::iter::once(total))
            .collect()
    } else {
        keep.iter().map(|&k| k.min(total)).collect()
    };
    ks.into_iter().collect()
}

/// Spearman's rank correlation (average ranks for ties).
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    fn ranks(v: &[f64]) -> Vec<f64> {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
        let mut r = vec![0.0; v.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
                j += 1;
            }
            for &k in &idx[i..=j] {
                r[k] = (i + j) as f64 / 2.0;
            }
            i = j + 1;
        }
        r
    }
    let (rx, ry) = (ranks(x), ranks(y));
    let n = x.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let cov: f64 = rx.iter().zip(&ry).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = rx.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = ry.iter().map(|b| (b - my).powi(2)).sum();
    cov / (vx * vy).sqrt()
}

/// The MLP layers of the components stage's circuit, when it has run.
fn circuit_mlps(run: &RunLayout) -> Result<Option<BTreeSet<usize>>> {
    let path = run.path(tables::COMPONENT_ROLES);
    if !path.exists() {
        return Ok(None);
    }
    let df = Frame::query(&path, |lf| {
        lf.filter(
            col("component")
                .eq(lit("mlp"))
                .and(col("role").eq(lit("circuit"))),
        )
    })?;
    Ok(Some(
        df.i64("layer")?.into_iter().map(|l| l as usize).collect(),
    ))
}

/// The a x b grid of the task's problems: its corners and sizes, and each problem's cell.
struct Grid {
    a0: i64,
    b0: i64,
    n_a: usize,
    n_b: usize,
}

impl Grid {
    fn of(probs: &[&ProblemInfo]) -> Grid {
        let a = probs.iter().map(|p| p.a);
        let b = probs.iter().map(|p| p.b.unwrap_or(0));
        let (a0, a1) = (a.clone().min().unwrap_or(0), a.max().unwrap_or(0));
        let (b0, b1) = (b.clone().min().unwrap_or(0), b.max().unwrap_or(0));
        Grid {
            a0,
            b0,
            n_a: (a1 - a0 + 1) as usize,
            n_b: (b1 - b0 + 1) as usize,
        }
    }

    /// The (a, b) of cell `c`.
    fn at(&self, c: usize) -> (i64, i64) {
        (
            self.a0 + (c / self.n_b) as i64,
            self.b0 + (c % self.n_b) as i64,
        )
    }

    fn cell(&self, p: &ProblemInfo) -> usize {
        (p.a - self.a0) as usize * self.n_b + (p.b.unwrap_or(0) - self.b0) as usize
    }

    /// Values per cell (cells no problem fills hold the mean, so the FFT sees no step).
    fn fill(&self, probs: &[&ProblemInfo], values: &[f64]) -> (Vec<f32>, Vec<f64>) {
        let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
        let mut stored = vec![f32::NAN; self.n_a * self.n_b];
        let mut filled = vec![mean; self.n_a * self.n_b];
        for (p, &v) in probs.iter().zip(values) {
            stored[self.cell(p)] = v as f32;
            filled[self.cell(p)] = v;
        }
        (stored, filled)
    }
}

/// `helixlab neurons`.
///
/// With a `shard` (its index and the directory it writes to), the shard exactly patches its
/// slice of the top neurons and runs its slice of the sparsity sweep's k (real and fitted).
/// What every slice needs, it computes in full, the same in every shard: the attribution over
/// every pair (which ranks the top neurons), the mean activations, the clean answer logits,
/// the preactivation grid and the fits (three forwards per pair and one per problem, against
/// two per pair for every top neuron in the exact patches). It writes its slice's rows of
/// top, preactivations, fits and fit_terms; shard 0 also attribution and periods; and
/// `neurons/lens_directions.parquet` (its neurons' logit-lens periods). After gathering,
/// [`finish_gathered`] makes what needs every top neuron: top's rank correlation, mlps and
/// logit_lens, and puts sparsity in the unsharded order.
// Long (about 200 lines) because the experiments feed each other in order (ranking, top
// neurons, means, grid, fits); their forwards are in `forwards`, their tables below.
pub fn run_neurons(
    p: &Pipeline,
    force: bool,
    progress: &dyn Progress,
    shard: Option<(Shard, &Path)>,
) -> Result<Outcome> {
    let run = RunLayout::new(p.run_dir());
    if p.task.kind != TaskKind::Addition {
        return Err(AttributeError::Input(format!(
            "{}: task.kind: the neuron stage fits a, b and a+b, so it needs an addition task, \
             not {:?}",
            p.path.display(),
            p.task.kind
        )));
    }
    let (study, mut m) = load(
        p,
        "neurons",
        serde_json::json!({
            "neurons": p.neurons, "hook": "mlp.hook_post", "position": "last",
            "batch_size": p.extract.batch_size,
        }),
    )?;
    let (model, tok) = (&study.model, &study.tokenizer);
    let cfg = model.config().clone();
    m.input_table(&run, tables::PAIRS)?;
    // The grid and the ablation sample are every problem, not only the pairs'.
    m.input_table(&run, tables::PROBLEMS)?;
    m.optional_input_table(&run, tables::COMPONENT_ROLES)?;
    if !force && m.tables_fresh(&run, &tables::NEURONS) {
        return Ok(Outcome::UpToDate);
    }
    m.begin();
    let s = &p.neurons;
    let pairs = read_pairs(&run, Position::Last)?;
    let all = problems(run.root(), false)?;
    let all_refs: Vec<&ProblemInfo> = all.iter().collect();
    let mut seen = BTreeSet::new();
    let evaluated: Vec<&ProblemInfo> = pairs
        .iter()
        .map(|x| &x.clean)
        .filter(|x| seen.insert(x.prompt_id))
        .collect();
    let total = cfg.n_layers * cfg.d_mlp;
    // The shard's slice of `n` items (all of them unsharded).
    let slice = |n: usize| match shard {
        Some((s, _)) => s.range(n, 1),
        None => 0..n,
    };

    let mut steps: Vec<(&str, f64)> = Vec::new();
    let mut clock = std::time::Instant::now();
    let mut lap = |name: &'static str, steps: &mut Vec<(&str, f64)>| {
        steps.push((name, clock.elapsed().as_secs_f64()));
        clock = std::time::Instant::now();
    };
    // 1. Attribution over every neuron.
    progress.start("neuron attribution", pairs.len() as u64);
    let score = attribution(model, tok, p, &pairs, &mut |n| progress.advance(n as u64))?;
    progress.finish();
    lap("attribution", &mut steps);
    let mut order: Vec<usize> = (0..total).collect();
    order.sort_by(|&i, &j| score[j].abs().total_cmp(&score[i].abs()).then(i.cmp(&j)));
    let neuron = |i: usize| -> Neuron { (i / cfg.d_mlp, i % cfg.d_mlp) };
    let top: Vec<Neuron> = order
        .iter()
        .take(s.top.min(total))
        .map(|&i| neuron(i))
        .collect();

    // 2. The top neurons patched one by one (the shard's slice of them).
    let mine = slice(top.len());
    progress.start(
        "top neurons: exact, total and direct effects",
        pairs.len() as u64,
    );
    let effects = neuron_effects(model, tok, p, &pairs, &top[mine.clone()], &mut |n| {
        progress.advance(n as u64)
    })?;
    progress.finish();
    lap("top_neuron_effects", &mut steps);

    // 3. Sparsity: the top k kept, every other neuron at its mean.
    let sample: Vec<&ProblemInfo> = split::permutation(all.len(), s.seed)
        .into_iter()
        .take(s.ablation_problems)
        .map(|i| &all[i])
        .collect();
    let means = mean_activations(model, tok, p, &sample)?;
    let base = answer_logits(model, tok, p, &evaluated)?;
    let grid_k = keep_grid(total, &s.keep);
    let fit_k: Vec<usize> = grid_k.iter().copied().filter(|&k| k <= top.len()).collect();
    let (grid_k, fit_k) = (
        grid_k[slice(grid_k.len())].to_vec(),
        fit_k[slice(fit_k.len())].to_vec(),
    );
    let kept = |k: usize| -> Vec<Neuron> { order.iter().take(k).map(|&i| neuron(i)).collect() };
    let mut sparsity = SparsityRows::default();
    progress.start("sparsity sweep", grid_k.len() as u64);
    for &k in &grid_k {
        let keep = Keep {
            kept: &kept(k),
            fits: None,
        };
        let (acc, diff) = evaluate(model, tok, p, (&evaluated, &base), &means, &keep)?;
        sparsity.push("real", k, total, acc, diff, evaluated.len());
        progress.advance(1);
    }
    progress.finish();
    lap("sparsity", &mut steps);

    // 5. Preactivations of the top neurons over every problem of the task; 6. their fits.
    progress.start("top neurons: preactivation grid", all.len() as u64);
    let pre = preactivations(model, tok, p, &all_refs, &top, &mut |n| {
        progress.advance(n as u64)
    })?;
    progress.finish();
    lap("preactivations", &mut steps);
    let grid = Grid::of(&all_refs);
    let ab: Vec<(i64, i64)> = all.iter().map(|x| (x.a, x.b.unwrap_or(0))).collect();
    let mut y = Array2::zeros((all.len(), top.len()));
    for (k, v) in pre.iter().enumerate() {
        for (i, &x) in v.iter().enumerate() {
            y[[i, k]] = x;
        }
    }
    let fits = fit_neurons(&ab, y.view(), &s.periods)?;
    lap("fits", &mut steps);
    let grids = Grids::of(&grid, &all_refs, &pre, &fits);

    // 7. The top k's preactivations replaced by their fits (the rest mean-ablated).
    let fit_map: BTreeMap<Neuron, NeuronFit> =
        top.iter().copied().zip(fits.iter().cloned()).collect();
    progress.start("fits patched in", fit_k.len() as u64);
    for &k in &fit_k {
        let keep = Keep {
            kept: &kept(k),
            fits: Some(&fit_map),
        };
        let (acc, diff) = evaluate(model, tok, p, (&evaluated, &base), &means, &keep)?;
        sparsity.push("fit", k, total, acc, diff, evaluated.len());
        progress.advance(1);
    }
    progress.finish();
    lap("fits_patched_in", &mut steps);

    // Tables.
    let circuit = circuit_mlps(&run)?;
    let found = TopNeurons {
        top: &top[mine.clone()],
        first_rank: mine.start,
        scores: order[mine.clone()].iter().map(|&i| score[i]).collect(),
        effects: &effects,
        circuit: circuit.as_ref(),
    };
    let answers = answer_tokens(&all);
    if let Some((s, dir)) = shard {
        let out = RunLayout::new(dir);
        let first = s.index == 0;
        let attribution_table = match first {
            true => attribution_table(&score, &order, cfg.d_mlp),
            false => attribution_table(&[], &[], cfg.d_mlp),
        };
        let cells = grid.n_a * grid.n_b;
        let shares = first.then(|| period_shares(&grids.periods));
        let (preact_table, fits_table, terms_table) =
            grid_tables(&found, &fits[mine.clone()], &grid, grids.slice(mine, cells));
        let directions = lens_directions(model, &found, answers.as_ref())?;
        for (name, table) in [
            (tables::NEURON_ATTRIBUTION, attribution_table),
            (tables::NEURON_TOP, top_table(&found)),
            (tables::NEURON_SPARSITY, sparsity.table()),
            (tables::NEURON_PREACTIVATIONS, preact_table),
            (tables::NEURON_FITS, fits_table),
            (tables::NEURON_FIT_TERMS, terms_table),
            (
                tables::NEURON_PERIODS,
                shares.unwrap_or_else(|| period_shares(&[])),
            ),
            (tables::NEURON_LENS_DIRECTIONS, directions),
        ] {
            m.write_table(&out, name, &table)?;
        }
        return Ok(m.outcome());
    }
    let lens = match answers {
        Some((first, tokens)) => Some((
            first,
            tokens.len(),
            logit_lens(model, &top, &effects, &tokens)?,
        )),
        None => None,
    };
    let period_ab: Vec<Option<f64>> = grids.periods.iter().map(|x| x.sum).collect();
    let lens_table = lens_table(lens, &period_ab);
    let shares = period_shares(&grids.periods);
    let ab_fraction: Vec<f64> = fits.iter().map(|f| f.ab_fraction()).collect();
    let (preact_table, fits_table, terms_table) = grid_tables(&found, &fits, &grid, grids);
    for (name, table) in [
        (
            tables::NEURON_ATTRIBUTION,
            attribution_table(&score, &order, cfg.d_mlp),
        ),
        (tables::NEURON_TOP, top_table(&found)),
        (tables::NEURON_SPARSITY, sparsity.table()),
        (tables::NEURON_PREACTIVATIONS, preact_table),
        (tables::NEURON_FITS, fits_table),
        (tables::NEURON_FIT_TERMS, terms_table),
        (tables::NEURON_PERIODS, shares),
        (
            tables::NEURON_MLPS,
            mlps_table(&top, &ab_fraction, &effects, circuit.as_ref()),
        ),
        (tables::NEURON_LOGIT_LENS, lens_table),
    ] {
        m.write_table(&run, name, &table)?;
    }
    let timing: serde_json::Map<String, serde_json::Value> = steps
        .iter()
        .map(|(k, v)| (format!("{k}_s"), serde_json::json!(v)))
        .collect();
    let mut timing = serde_json::Value::Object(timing);
    timing["neurons_fitted"] = serde_json::json!(top.len());
    timing["pairs"] = serde_json::json!(pairs.len());
    helixlab_store::atomic::write(
        &run.neuron_timing(),
        (serde_json::to_string_pretty(&timing).expect("json") + "\n").as_bytes(),
    )?;
    Ok(m.outcome())
}

/// The first answer and the token of each answer first..=last, when every answer of the task is
/// one token and none is missing in between (else there is no lens over every answer).
fn answer_tokens(all: &[ProblemInfo]) -> Option<(i64, Vec<u32>)> {
    let mut by: BTreeMap<i64, u32> = BTreeMap::new();
    for p in all {
        if p.answer_tokens.len() != 1
            || *by.entry(p.answer).or_insert(p.answer_token) != p.answer_token
        {
            return None;
        }
    }
    let (&first, &last) = (by.keys().next()?, by.keys().next_back()?);
    (by.len() as i64 == last - first + 1).then(|| (first, by.into_values().collect()))
}

/// logit_lens.parquet: one row per lens neuron (none when the answers are not one token each).
fn lens_table(lens: Option<(i64, usize, Vec<Lens>)>, period_ab: &[Option<f64>]) -> Table {
    let (first, answers, rows) = lens.unwrap_or((0, 0, Vec::new()));
    let n = rows.len();
    Table::new()
        .u32s("rank", rows.iter().map(|r| r.rank as u32))
        .u32s("layer", rows.iter().map(|r| r.neuron.0 as u32))
        .u32s("neuron", rows.iter().map(|r| r.neuron.1 as u32))
        .f64s("direct", rows.iter().map(|r| r.direct))
        .f64s("cumulative_share", rows.iter().map(|r| r.cumulative_share))
        .column(
            "fit_period_ab",
            Values::OptF64(rows.iter().map(|r| period_ab[r.rank - 1]).collect()),
        )
        .f64s("lens_slope", rows.iter().map(|r| r.period.slope))
        .u32s(
            "lens_frequency",
            rows.iter().map(|r| r.period.frequency as u32),
        )
        .f64s("lens_period", rows.iter().map(|r| r.period.period))
        .column("first_answer", Values::I64(vec![first; n]))
        .u32s("answers", std::iter::repeat_n(answers as u32, n))
}

/// What the tables say about top neurons, in rank order: all of them, or a shard's slice.
struct TopNeurons<'a> {
    top: &'a [Neuron],
    /// The rank of `top[0]` less one (0 but in a shard).
    first_rank: usize,
    scores: Vec<f64>,
    effects: &'a [NeuronEffect],
    circuit: Option<&'a BTreeSet<usize>>,
}

impl TopNeurons<'_> {
    fn ranks(&self) -> impl Iterator<Item = u32> {
        (self.first_rank + 1..=self.first_rank + self.top.len()).map(|r| r as u32)
    }
}

fn de_over_te(e: &NeuronEffect) -> f64 {
    if e.total != 0.0 {
        e.direct / e.total
    } else {
        f64::NAN
    }
}

/// The top neurons' grids: the preactivation as stored (missing cells NaN), the fit's values,
/// and the dominant periods.
struct Grids {
    stored: Vec<f32>,
    fitted: Vec<f32>,
    periods: Vec<Periods>,
}

impl Grids {
    fn of(grid: &Grid, probs: &[&ProblemInfo], pre: &[Vec<f64>], fits: &[NeuronFit]) -> Grids {
        let cells = grid.n_a * grid.n_b;
        let mut g = Grids {
            stored: Vec::with_capacity(pre.len() * cells),
            fitted: Vec::with_capacity(pre.len() * cells),
            periods: Vec::with_capacity(pre.len()),
        };
        for (v, fit) in pre.iter().zip(fits) {
            let (stored, filled) = grid.fill(probs, v);
            g.stored.extend(stored);
            g.periods.push(periods(&filled, grid.n_a, grid.n_b));
            g.fitted.extend((0..cells).map(|c| {
                let (a, b) = grid.at(c);
                fit.predict(a, b) as f32
            }));
        }
        g
    }

    /// The grids of neurons `range` (each `cells` long).
    fn slice(&self, range: std::ops::Range<usize>, cells: usize) -> Grids {
        let flat = range.start * cells..range.end * cells;
        Grids {
            stored: self.stored[flat.clone()].to_vec(),
            fitted: self.fitted[flat].to_vec(),
            periods: self.periods[range].to_vec(),
        }
    }
}

/// attribution.parquet (every neuron, `order` ranks them).
fn attribution_table(score: &[f64], order: &[usize], d_mlp: usize) -> Table {
    let total = score.len();
    let mut rank = vec![0u32; total];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r as u32 + 1;
    }
    Table::new()
        .u32s("layer", (0..total).map(|i| (i / d_mlp) as u32))
        .u32s("neuron", (0..total).map(|i| (i % d_mlp) as u32))
        .f64s("score", score.iter().copied())
        .f64s("abs_score", score.iter().map(|v| v.abs()))
        .u32s("rank", rank.iter().copied())
}

/// top.parquet.
fn top_table(t: &TopNeurons) -> Table {
    let exact: Vec<f64> = t.effects.iter().map(|e| e.exact).collect();
    let n = t.top.len();
    Table::new()
        .u32s("rank", t.ranks())
        .u32s("layer", t.top.iter().map(|x| x.0 as u32))
        .u32s("neuron", t.top.iter().map(|x| x.1 as u32))
        .f64s("score", t.scores.iter().copied())
        .f64s("exact", exact.iter().copied())
        .f64s("total", t.effects.iter().map(|e| e.total))
        .f64s("direct", t.effects.iter().map(|e| e.direct))
        .f64s("de_over_te", t.effects.iter().map(de_over_te))
        .f64s(
            "total_answer_logprob_diff",
            t.effects.iter().map(|e| e.total_logprob),
        )
        .column(
            "in_circuit_mlp",
            Values::OptI64(
                t.top
                    .iter()
                    .map(|x| t.circuit.map(|c| i64::from(c.contains(&x.0))))
                    .collect(),
            ),
        )
        .f64s(
            "rank_correlation",
            std::iter::repeat_n(spearman(&t.scores, &exact), n),
        )
}

/// preactivations.parquet, fits.parquet and fit_terms.parquet of `t`'s neurons (with their
/// `fits` and grids `g`).
fn grid_tables(t: &TopNeurons, fits: &[NeuronFit], grid: &Grid, g: Grids) -> (Table, Table, Table) {
    let (n, cells) = (t.top.len(), grid.n_a * grid.n_b);
    let ids = |table: Table| {
        table
            .u32s("rank", t.ranks())
            .u32s("layer", t.top.iter().map(|x| x.0 as u32))
            .u32s("neuron", t.top.iter().map(|x| x.1 as u32))
    };
    let preactivations = ids(Table::new())
        .column("a_min", Values::I64(vec![grid.a0; n]))
        .column("b_min", Values::I64(vec![grid.b0; n]))
        .u32s("n_a", std::iter::repeat_n(grid.n_a as u32, n))
        .u32s("n_b", std::iter::repeat_n(grid.n_b as u32, n))
        .column(
            "preactivation",
            Values::Vector {
                d: cells,
                values: g.stored,
            },
        )
        .column(
            "fitted",
            Values::Vector {
                d: cells,
                values: g.fitted,
            },
        );
    let period = |f: fn(&Periods) -> Option<f64>| Values::OptF64(g.periods.iter().map(f).collect());
    let fits_table = ids(Table::new())
        .f64s("nrmse", fits.iter().map(|f| f.nrmse))
        .f64s("ab_fraction", fits.iter().map(|f| f.ab_fraction()))
        .column("period_a", period(|x| x.a))
        .column("period_b", period(|x| x.b))
        .column("period_ab", period(|x| x.sum))
        .strs("top_terms", fits.iter().map(|f| f.top_terms(3)))
        .f64s("linear_a", fits.iter().map(|f| f.linear[0]))
        .f64s("linear_b", fits.iter().map(|f| f.linear[1]))
        .f64s("linear_ab", fits.iter().map(|f| f.linear[2]))
        .f64s("bias", fits.iter().map(|f| f.bias))
        .f64s("total", t.effects.iter().map(|e| e.total))
        .f64s("de_over_te", t.effects.iter().map(de_over_te));
    let terms: Vec<(Neuron, &crate::neuron_fit::Term)> = t
        .top
        .iter()
        .zip(fits)
        .flat_map(|(&n, f)| f.terms.iter().map(move |term| (n, term)))
        .collect();
    let fit_terms = Table::new()
        .u32s("layer", terms.iter().map(|x| x.0 .0 as u32))
        .u32s("neuron", terms.iter().map(|x| x.0 .1 as u32))
        .strs("operand", terms.iter().map(|x| x.1.operand))
        .f64s("period", terms.iter().map(|x| x.1.period))
        .f64s("alpha", terms.iter().map(|x| x.1.alpha))
        .f64s("beta", terms.iter().map(|x| x.1.beta))
        .f64s("amplitude", terms.iter().map(|x| x.1.amplitude()))
        .f64s("shift", terms.iter().map(|x| x.1.shift()));
    (preactivations, fits_table, fit_terms)
}

/// periods.parquet: the share of the top neurons whose dominant period in a, b and a+b is
/// 2, 5, 10 and 100 (no rows for no neurons: a shard's empty part).
fn period_shares(periods: &[Periods]) -> Table {
    let mut rows: Vec<(&str, f64, f64)> = Vec::new();
    for (var, get) in [
        ("a", (|x: &Periods| x.a) as fn(&Periods) -> Option<f64>),
        ("b", |x: &Periods| x.b),
        ("a+b", |x: &Periods| x.sum),
    ] {
        for &target in &[2.0, 5.0, 10.0, 100.0] {
            if periods.is_empty() {
                continue;
            }
            let hits = periods.iter().filter(|x| near(get(x), target)).count();
            rows.push((var, target, hits as f64 / periods.len() as f64));
        }
    }
    Table::new()
        .strs("variable", rows.iter().map(|x| x.0))
        .f64s("period", rows.iter().map(|x| x.1))
        .f64s("share", rows.iter().map(|x| x.2))
}

/// lens_directions.parquet (a shard's, folded into logit_lens.parquet after gathering): the
/// logit-lens trend and period of each of `t`'s neurons, and the answers read; no rows when
/// the answers are not one token each.
fn lens_directions(
    model: &helixlab_model::Model,
    t: &TopNeurons,
    answers: Option<&(i64, Vec<u32>)>,
) -> Result<Table> {
    let mut rows: Vec<(u32, Neuron, TopPeriod)> = Vec::new();
    let (first, n_answers) = answers.map_or((0, 0), |(f, tokens)| (*f, tokens.len()));
    if let Some((_, tokens)) = answers {
        let ids = candle_core::Tensor::new(tokens.as_slice(), model.device())?;
        let mut planner = rustfft::FftPlanner::new();
        for (rank, &n) in t.ranks().zip(t.top) {
            rows.push((rank, n, direction_period(model, n, &ids, &mut planner)?));
        }
    }
    let n = rows.len();
    Ok(Table::new()
        .u32s("rank", rows.iter().map(|r| r.0))
        .u32s("layer", rows.iter().map(|r| r.1 .0 as u32))
        .u32s("neuron", rows.iter().map(|r| r.1 .1 as u32))
        .f64s("lens_slope", rows.iter().map(|r| r.2.slope))
        .u32s("lens_frequency", rows.iter().map(|r| r.2.frequency as u32))
        .f64s("lens_period", rows.iter().map(|r| r.2.period))
        .column("first_answer", Values::I64(vec![first; n]))
        .u32s("answers", std::iter::repeat_n(n_answers as u32, n)))
}

/// A column that may hold nulls, as options.
fn optional_f64s(f: &Frame, c: &str) -> Result<Vec<Option<f64>>> {
    let bad = |e: polars::prelude::PolarsError| {
        AttributeError::Input(format!("{}: {c}: {e}", f.path().display()))
    };
    Ok(f.df()
        .column(c)
        .and_then(|x| x.cast(&polars::prelude::DataType::Float64))
        .map_err(bad)?
        .f64()
        .map_err(bad)?
        .iter()
        .collect())
}

/// After the shards of `neurons` are gathered: top.parquet's rank correlation over every top
/// neuron, sparsity.parquet in the unsharded order (real, then fitted; by k), mlps.parquet and
/// logit_lens.parquet, with top's manifest, as the unsharded stage writes them; then the
/// shards' lens_directions.parquet is removed. Does nothing when mlps and logit_lens are
/// current.
pub fn finish_gathered(p: &Pipeline) -> Result<()> {
    let run = RunLayout::new(p.run_dir());
    let top_path = run.path(tables::NEURON_TOP);
    let Some(manifest) = Manifest::verified_for(&top_path, "run `helixlab neurons` first")? else {
        return Err(run.missing(tables::NEURON_TOP).into());
    };
    let mut whole = manifest.clone();
    whole.parts.clear();
    let (mlps_path, lens_path) = (
        run.path(tables::NEURON_MLPS),
        run.path(tables::NEURON_LOGIT_LENS),
    );
    let directions_path = run.path(tables::NEURON_LENS_DIRECTIONS);
    if !(whole.is_fresh(&mlps_path) && whole.is_fresh(&lens_path)) {
        let top_f = Frame::require(&run, tables::NEURON_TOP)?;
        let fits_f = Frame::require(&run, tables::NEURON_FITS)?;
        let layers = top_f.i64("layer")?;
        let top: Vec<Neuron> = layers
            .iter()
            .zip(top_f.i64("neuron")?)
            .map(|(&l, n)| (l as usize, n as usize))
            .collect();
        let (exact, total, direct, logprob) = (
            top_f.f64("exact")?,
            top_f.f64("total")?,
            top_f.f64("direct")?,
            top_f.f64("total_answer_logprob_diff")?,
        );
        let effects: Vec<NeuronEffect> = (0..top.len())
            .map(|i| NeuronEffect {
                exact: exact[i],
                total: total[i],
                direct: direct[i],
                total_logprob: logprob[i],
            })
            .collect();
        let circuit = circuit_mlps(&run)?;
        let found = TopNeurons {
            top: &top,
            first_rank: 0,
            scores: top_f.f64("score")?,
            effects: &effects,
            circuit: circuit.as_ref(),
        };
        let top_table = top_table(&found);
        // Sparsity rows as the unsharded stage orders them.
        let sp = Frame::require(&run, tables::NEURON_SPARSITY)?;
        let (kind, kept) = (sp.str("kind")?, sp.i64("kept")?);
        let (fraction, accuracy, diff, problems) = (
            sp.f64("kept_fraction")?,
            sp.f64("accuracy")?,
            sp.f64("logit_diff")?,
            sp.i64("problems")?,
        );
        let mut order: Vec<usize> = (0..kind.len()).collect();
        order.sort_by_key(|&i| (kind[i] != "real", kept[i]));
        let mut sparsity = SparsityRows::default();
        for i in order {
            sparsity
                .kind
                .push(if kind[i] == "real" { "real" } else { "fit" });
            sparsity.kept.push(kept[i] as u32);
            sparsity.fraction.push(fraction[i]);
            sparsity.accuracy.push(accuracy[i]);
            sparsity.logit_diff.push(diff[i]);
            sparsity.problems.push(problems[i] as u32);
        }
        let mlps = mlps_table(
            &top,
            &fits_f.f64("ab_fraction")?,
            &effects,
            circuit.as_ref(),
        );
        let dirs = Frame::require(&run, tables::NEURON_LENS_DIRECTIONS)?;
        let lens = if dirs.height() == 0 {
            None
        } else {
            let (slope, frequency, period) = (
                dirs.f64("lens_slope")?,
                dirs.i64("lens_frequency")?,
                dirs.f64("lens_period")?,
            );
            let rows = lens_rows(&top, &effects, &mut |i| {
                Ok(TopPeriod {
                    slope: slope[i],
                    frequency: frequency[i] as usize,
                    period: period[i],
                })
            })?;
            let (first, answers) = (dirs.i64("first_answer")?[0], dirs.i64("answers")?[0]);
            Some((first, answers as usize, rows))
        };
        let lens = lens_table(lens, &optional_f64s(&fits_f, "period_ab")?);
        let sparsity_path = run.path(tables::NEURON_SPARSITY);
        let sparsity_manifest = Manifest::read_for(&sparsity_path)
            .ok_or_else(|| run.missing(tables::NEURON_SPARSITY))?;
        // The gathered tables keep their manifests (and the parts they record).
        top_table.write(&top_path, &manifest)?;
        sparsity.table().write(&sparsity_path, &sparsity_manifest)?;
        for (path, table) in [(&mlps_path, &mlps), (&lens_path, &lens)] {
            whole.rows = table.rows() as u64;
            table.write(path, &whole)?;
        }
    }
    Manifest::remove_table(&directions_path)?;
    Ok(())
}

/// sparsity.parquet, column-wise.
#[derive(Default)]
struct SparsityRows {
    kind: Vec<&'static str>,
    kept: Vec<u32>,
    fraction: Vec<f64>,
    accuracy: Vec<f64>,
    logit_diff: Vec<f64>,
    problems: Vec<u32>,
}

impl SparsityRows {
    fn push(&mut self, kind: &'static str, k: usize, total: usize, acc: f64, diff: f64, n: usize) {
        self.kind.push(kind);
        self.kept.push(k as u32);
        self.fraction.push(k as f64 / total as f64);
        self.accuracy.push(acc);
        self.logit_diff.push(diff);
        self.problems.push(n as u32);
    }

    fn table(&self) -> Table {
        Table::new()
            .strs("kind", self.kind.iter().copied())
            .u32s("kept", self.kept.iter().copied())
            .f64s("kept_fraction", self.fraction.iter().copied())
            .f64s("accuracy", self.accuracy.iter().copied())
            .f64s("logit_diff", self.logit_diff.iter().copied())
            .u32s("problems", self.problems.iter().copied())
    }
}

/// mlps.parquet: per MLP layer with top neurons, their mean a+b fraction and mean DE/TE, and
/// the R^2 of a line through those points over the circuit MLPs (every such layer when the
/// components stage has not run).
fn mlps_table(
    top: &[Neuron],
    ab_fraction: &[f64],
    effects: &[NeuronEffect],
    circuit: Option<&BTreeSet<usize>>,
) -> Table {
    let mut by_layer: BTreeMap<usize, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for ((n, &frac), e) in top.iter().zip(ab_fraction).zip(effects) {
        let entry = by_layer.entry(n.0).or_default();
        if frac.is_finite() {
            entry.0.push(frac);
        }
        if e.total != 0.0 && (e.direct / e.total).is_finite() {
            entry.1.push(e.direct / e.total);
        }
    }
    let mean = |v: &[f64]| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let rows: Vec<(usize, bool, usize, f64, f64)> = by_layer
        .iter()
        .map(|(&l, (f, d))| {
            let count = top.iter().filter(|n| n.0 == l).count();
            (
                l,
                circuit.is_none_or(|c| c.contains(&l)),
                count,
                mean(f),
                mean(d),
            )
        })
        .collect();
    let (xs, ys): (Vec<f64>, Vec<f64>) = rows
        .iter()
        .filter(|r| r.1 && r.3.is_finite() && r.4.is_finite())
        .map(|r| (r.3, r.4))
        .unzip();
    let r2 = if xs.len() >= 3 {
        linear_r2(&xs, &ys)
    } else {
        f64::NAN
    };
    Table::new()
        .u32s("layer", rows.iter().map(|r| r.0 as u32))
        .column("circuit", Values::Bool(rows.iter().map(|r| r.1).collect()))
        .u32s("top_neurons", rows.iter().map(|r| r.2 as u32))
        .f64s("mean_ab_fraction", rows.iter().map(|r| r.3))
        .f64s("mean_de_over_te", rows.iter().map(|r| r.4))
        .f64s("r2", std::iter::repeat_n(r2, rows.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keep_grid_doubles_up_to_every_neuron() {
        assert_eq!(
            keep_grid(1024, &[]),
            vec![0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
        );
        assert_eq!(keep_grid(10, &[]), vec![0, 1, 2, 4, 8, 10]);
        assert_eq!(keep_grid(10, &[50, 3]), vec![3, 10]);
    }

    #[test]
    fn spearman_is_one_for_a_monotone_map_and_minus_one_reversed() {
        let x = [1.0, 2.0, 3.0, 4.0];
        assert!((spearman(&x, &[1.0, 4.0, 9.0, 16.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&x, &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
    }
}
