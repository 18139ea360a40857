//! The clean/corrupt pairs the causal stages (patch, patch-last, components, neurons) read,
//! with their problems, and the pieces of a patched forward those stages share: the stage's
//! run record naming the model, the prompts' token ids, the clean run to resume from, and the
//! argmax the paper's accuracy counts.
//!
//! Not here: how pairs are drawn (`helixlab pairs`, in the patch crate) or scored.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use helixlab_model::{ForwardRequest, HookPoint, Logits, Positions, Tokenizer};
use helixlab_pipeline::{Pipeline, Position};
use helixlab_store::{read, tables, Frame, RunLayout, StageRun};

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
    problems_where(run_dir, correct_only, |_| true)
}

/// [`problems`] of the prompt ids that pass `keep`.
fn problems_where(
    run_dir: &Path,
    correct_only: bool,
    keep: impl Fn(u32) -> bool,
) -> Result<Vec<ProblemInfo>> {
    let mut out = Vec::new();
    for r in read::problem_rows(run_dir, keep)? {
        if correct_only && r.correct != Some(true) {
            continue;
        }
        let (Some(answer), Some(answer_token), Some(answer_logit)) =
            (r.answer, r.answer_token, r.answer_logit)
        else {
            continue;
        };
        out.push(ProblemInfo {
            prompt_id: r.prompt_id,
            a: r.a,
            b: r.b,
            answer,
            prompt: r.prompt,
            answer_token,
            answer_logit,
            token_layout: r.token_layout.unwrap_or_default(),
            answer_tokens: r
                .answer_tokens
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| vec![answer_token]),
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
    let (pid, clean, corrupt) = read::pair_ids(&path, operand.name())?;
    if pid.is_empty() {
        return Err(StageError::Input(format!(
            "{}: no pairs for `{operand}`; rerun `helixlab pairs`",
            path.display()
        )));
    }
    let wanted: BTreeSet<u32> = clean.iter().chain(&corrupt).copied().collect();
    let by_id: BTreeMap<u32, _> = problems_where(run.root(), false, |id| wanted.contains(&id))?
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
