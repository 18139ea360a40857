//! The clean/corrupt pairs the causal stages (patch, patch-last, components, neurons) read,
//! with their problems, and the pieces of a patched forward those stages share: the stage's
//! run record naming the model, the prompts' token ids, the clean run to resume from, and the
//! argmax the paper's accuracy counts.
//!
//! Not here: how pairs are drawn (`helixlab pairs`, in the patch crate) or scored.

use std::collections::BTreeMap;
use std::path::Path;

use helixlab_model::{ForwardRequest, HookPoint, Logits, Positions, Tokenizer};
use helixlab_pipeline::{Pipeline, Position};
use helixlab_store::{read, tables, Frame, RunLayout, StageRun};
use polars::prelude::{col, lit};

use crate::{Result, StageError, StudyModel};

/// One problem as the patch stage needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct ProblemInfo {
    /// Row id.
    pub prompt_id: u32,
    /// Operands.
    pub a: i64,
    /// Second operand.
    pub b: Option<i64>,
    /// Answer.
    pub answer: i64,
    /// Prompt text.
    pub prompt: String,
    /// Answer token.
    pub answer_token: u32,
    /// The logit of its answer in its own run.
    pub answer_logit: f32,
    /// Tokens per operand (`"2,1"`); empty for tables written before layouts were recorded.
    pub token_layout: String,
    /// Every token of the answer (`[answer_token]` for tables written before they were
    /// recorded).
    pub answer_tokens: Vec<u32>,
}

/// A clean/corrupt pair.
#[derive(Clone, Debug, PartialEq)]
pub struct Pair {
    /// 0-based within the experiment.
    pub pair_id: u32,
    /// The prompt that is run.
    pub clean: ProblemInfo,
    /// The prompt whose number is patched in.
    pub corrupt: ProblemInfo,
}

/// The problems of a run (problems.parquet) in prompt-id order: only those the model answers
/// correctly when `correct_only` (the paper's rule), else all of them (benchmarks on
/// random-weight checkpoints, which answer nothing correctly).
pub fn problems(run_dir: &Path, correct_only: bool) -> Result<Vec<ProblemInfo>> {
    let df = read::problems(run_dir)?;
    let table = RunLayout::new(run_dir).path(tables::PROBLEMS);
    let e = |source| {
        StageError::Store(helixlab_store::StoreError::Polars {
            path: table.clone(),
            source,
        })
    };
    let col = |n: &str| df.column(n).map(|c| c.as_materialized_series().clone());
    let id = col("prompt_id").map_err(e)?;
    let a = col("a").map_err(e)?;
    let b = col("b").map_err(e)?;
    let answer = col("answer").map_err(e)?;
    let prompt = col("prompt").map_err(e)?;
    let token = col("answer_token").map_err(e)?;
    let correct = col("correct").map_err(e)?;
    let logit = col("answer_logit").map_err(e)?;
    let layout = col("token_layout").ok();
    let answer_tokens = col("answer_tokens").ok();
    let answer_tokens = match &answer_tokens {
        Some(l) => Some(l.list().map_err(e)?),
        None => None,
    };
    let layout = match &layout {
        Some(l) => Some(l.str().map_err(e)?),
        None => None,
    };
    let (id, a, b, answer, prompt, token, correct, logit) = (
        id.u32().map_err(e)?,
        a.i64().map_err(e)?,
        b.i64().map_err(e)?,
        answer.i64().map_err(e)?,
        prompt.str().map_err(e)?,
        token.u32().map_err(e)?,
        correct.bool().map_err(e)?,
        logit.f32().map_err(e)?,
    );
    let mut out = Vec::new();
    for i in 0..df.height() {
        if correct_only && correct.get(i) != Some(true) {
            continue;
        }
        let (Some(pid), Some(av), Some(ans), Some(pr), Some(tok), Some(lg)) = (
            id.get(i),
            a.get(i),
            answer.get(i),
            prompt.get(i),
            token.get(i),
            logit.get(i),
        ) else {
            continue;
        };
        out.push(ProblemInfo {
            prompt_id: pid,
            a: av,
            b: b.get(i),
            answer: ans,
            prompt: pr.to_string(),
            answer_token: tok,
            answer_logit: lg,
            token_layout: layout
                .and_then(|l| l.get(i))
                .unwrap_or_default()
                .to_string(),
            answer_tokens: answer_tokens
                .and_then(|l| l.get_as_series(i))
                .and_then(|s| s.u32().ok().map(|c| c.into_no_null_iter().collect()))
                .filter(|t: &Vec<u32>| !t.is_empty())
                .unwrap_or_else(|| vec![tok]),
        });
    }
    Ok(out)
}

/// The record of a run of `stage` with `settings` (the study's name added, so two studies
/// writing one run directory do not take each other's tables as current).
pub fn stage_run(p: &Pipeline, stage: &str, mut settings: serde_json::Value) -> StageRun {
    if let serde_json::Value::Object(m) = &mut settings {
        m.insert("pipeline".into(), serde_json::json!(p.name));
    }
    StageRun::new(stage, settings)
}

/// The study's model and the record of a run of `stage` that names it.
pub fn load(
    p: &Pipeline,
    stage: &str,
    settings: serde_json::Value,
) -> Result<(StudyModel, StageRun)> {
    let study = StudyModel::load(p)?;
    let run = stage_run(p, stage, settings).with_model(study.identity.clone());
    Ok((study, run))
}

/// The pairs of pairs.parquet for `operand` (`a`, `b` or `last`), joined with their problems.
pub fn read_pairs(run: &RunLayout, operand: Position) -> Result<Vec<Pair>> {
    let path = run.path(tables::PAIRS);
    Frame::check(run, tables::PAIRS)?;
    let df = Frame::query(&path, |lf| {
        lf.filter(col("operand").eq(lit(operand.name())))
    })?;
    if df.height() == 0 {
        return Err(StageError::Input(format!(
            "{}: no pairs for `{operand}`; rerun `helixlab pairs`",
            path.display()
        )));
    }
    let ids =
        |c: &str| -> Result<Vec<u32>> { Ok(df.i64(c)?.into_iter().map(|v| v as u32).collect()) };
    let (pid, clean, corrupt) = (
        ids("pair_id")?,
        ids("clean_prompt_id")?,
        ids("corrupt_prompt_id")?,
    );
    let by_id: BTreeMap<u32, _> = problems(run.root(), false)?
        .into_iter()
        .map(|p| (p.prompt_id, p))
        .collect();
    let get = |id: u32| {
        by_id.get(&id).cloned().ok_or_else(|| {
            StageError::Input(format!(
                "{}: prompt {id} is not in problems.parquet any more; rerun `helixlab pairs`",
                path.display()
            ))
        })
    };
    (0..pid.len())
        .map(|i| {
            Ok(Pair {
                pair_id: pid[i],
                clean: get(clean[i])?,
                corrupt: get(corrupt[i])?,
            })
        })
        .collect()
}

/// The token ids of `problems`' prompts.
pub fn prompt_ids<'a>(
    tok: &Tokenizer,
    p: &Pipeline,
    problems: impl IntoIterator<Item = &'a ProblemInfo>,
) -> Result<Vec<Vec<u32>>> {
    Ok(problems
        .into_iter()
        .map(|pr| tok.encode(&pr.prompt, p.task.special_tokens))
        .collect::<std::result::Result<_, _>>()?)
}

/// The clean run a patched forward resumes from: the last position's logits and the residual
/// stream entering every block.
pub fn clean_run_request(n_layers: usize) -> ForwardRequest {
    let mut req = ForwardRequest::new().logits(Logits::Last);
    for l in 0..n_layers {
        req = req.capture(HookPoint::ResidPre(l), Positions::All);
    }
    req
}

pub use helixlab_numeric::logits::{argmax, log_softmax_at, log_sum_exp};
