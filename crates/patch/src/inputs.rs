//! What the patching stages (pairs, patch, patch-last, components, neuron-grads) read: the
//! analysed operand, the study's model with the stage's run record, and the drawn pairs.

use std::collections::BTreeMap;

use helixlab_pipeline::{AnalysisTarget, Pipeline, Position};
use helixlab_store::{tables, Frame, RunLayout, StageRun};
use helixlab_study::StudyModel;
use polars::prelude::{col, lit};

use helixlab_model::{ForwardRequest, HookPoint, Logits, Positions, Tokenizer};

use crate::pairs::{problems, Pair, ProblemInfo};
use crate::{PatchError, Result};

/// The `[analysis]` target, whose position must be an operand's token (`a` or `b`).
pub(crate) fn target(p: &Pipeline) -> Result<AnalysisTarget> {
    let t = p.analysis_target().map_err(|(field, message)| {
        PatchError::Input(format!("{}: {field}: {message}", p.path.display()))
    })?;
    if t.position != Position::A && t.position != Position::B {
        return Err(PatchError::Input(format!(
            "{}: analysis.position: patching varies an operand at its own token (a or b), \
             not `{}`",
            p.path.display(),
            t.position
        )));
    }
    Ok(t)
}

/// The record of a run of `stage` with `settings` (the study's name added, so two studies
/// writing one run directory do not take each other's tables as current).
pub(crate) fn stage_run(p: &Pipeline, stage: &str, mut settings: serde_json::Value) -> StageRun {
    if let serde_json::Value::Object(m) = &mut settings {
        m.insert("pipeline".into(), serde_json::json!(p.name));
    }
    StageRun::new(stage, settings)
}

/// The study's model and the record of a run of `stage` that names it.
pub(crate) fn load(
    p: &Pipeline,
    stage: &str,
    settings: serde_json::Value,
) -> Result<(StudyModel, StageRun)> {
    let study = StudyModel::load(p)?;
    let run = stage_run(p, stage, settings).with_model(study.identity.clone());
    Ok((study, run))
}

/// The pairs of pairs.parquet for `operand` (`a`, `b` or `last`), joined with their problems.
pub(crate) fn read_pairs(run: &RunLayout, operand: Position) -> Result<Vec<Pair>> {
    let path = run.path(tables::PAIRS);
    Frame::require(run, tables::PAIRS)?;
    let df = Frame::query(&path, |lf| {
        lf.filter(col("operand").eq(lit(operand.name())))
    })?;
    if df.height() == 0 {
        return Err(PatchError::Input(format!(
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
            PatchError::Input(format!(
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
pub(crate) fn prompt_ids<'a>(
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
pub(crate) fn clean_run_request(n_layers: usize) -> ForwardRequest {
    let mut req = ForwardRequest::new().logits(Logits::Last);
    for l in 0..n_layers {
        req = req.capture(HookPoint::ResidPre(l), Positions::All);
    }
    req
}
