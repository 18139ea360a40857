//! `helixlab accuracy`: every prompt of the task through the model; one row per prompt with
//! the predicted token, whether it is the answer, the answer's logit and rank.

use helixlab_model::{ForwardRequest, Logits};
use helixlab_pipeline::Pipeline;
use helixlab_store::problems::{self, ProblemRow};
use helixlab_store::{tables, RunLayout, StageRun};
use helixlab_study::StudyModel;

use crate::prompts::encode_task;
use crate::{Outcome, Progress, Result};

/// The table this stage writes.
pub fn output(p: &Pipeline) -> std::path::PathBuf {
    RunLayout::new(p.run_dir()).path(tables::PROBLEMS)
}

/// Runs the accuracy sweep unless problems.parquet is current (or `force`).
pub fn run(p: &Pipeline, force: bool, progress: &dyn Progress) -> Result<Outcome> {
    let study = StudyModel::load(p)?;
    let (model, tok) = (&study.model, &study.tokenizer);
    let encoded = encode_task(p, tok, model.config().max_positions)?;
    study.sites(p)?;
    let path = output(p);
    let mut run = StageRun::new(
        "accuracy",
        serde_json::json!({ "task": p.task, "share_prefixes": p.extract.share_prefixes }),
    )
    .with_model(study.identity.clone());
    if !force && run.is_fresh(std::slice::from_ref(&path)) {
        return Ok(Outcome::UpToDate);
    }
    run.begin();
    let mut rows = Vec::with_capacity(encoded.len());
    // A task without answers (bare numbers) has nothing to score: its problems are listed
    // without running the model (an encoder such as BERT has no head to run).
    let scored = encoded.iter().any(|e| e.answer_token.is_some());
    if !scored {
        rows.extend(encoded.iter().map(|e| ProblemRow {
            prompt_id: e.problem.prompt_id,
            a: e.problem.a,
            b: e.problem.b,
            answer: e.problem.answer,
            prompt: e.problem.prompt.clone(),
            answer_token: None,
            pred_token: None,
            pred_text: None,
            pred_value: None,
            correct: None,
            answer_logit: None,
            answer_rank: None,
            top_logit: None,
        }));
    }
    progress.start("accuracy", encoded.len() as u64);
    for chunk in encoded.chunks(p.extract.batch_size).filter(|_| scored) {
        let seqs: Vec<Vec<u32>> = chunk.iter().map(|e| e.ids.clone()).collect();
        let logits = study
            .forward_prompts(p, &seqs, &ForwardRequest::new().logits(Logits::Last))?
            .logits
            .expect("logits were asked for")
            .to_dtype(helixlab_model::DType::F32)
            .map_err(helixlab_model::ModelError::from)?
            .to_vec2::<f32>()
            .map_err(helixlab_model::ModelError::from)?;
        for (e, l) in chunk.iter().zip(logits) {
            if l.iter().any(|v| !v.is_finite()) {
                return Err(crate::ExtractError::NonFinite {
                    what: format!(
                        "the logits of prompt {} ({:?})",
                        e.problem.prompt_id, e.problem.prompt
                    ),
                });
            }
            let (pred, top) =
                l.iter()
                    .enumerate()
                    .fold((0usize, f32::NEG_INFINITY), |best, (i, &v)| {
                        if v > best.1 {
                            (i, v)
                        } else {
                            best
                        }
                    });
            let pred_text = tok.decode(&[pred as u32])?;
            let answer_logit = e.answer_token.map(|t| l[t as usize]);
            rows.push(ProblemRow {
                prompt_id: e.problem.prompt_id,
                a: e.problem.a,
                b: e.problem.b,
                answer: e.problem.answer,
                prompt: e.problem.prompt.clone(),
                answer_token: e.answer_token,
                pred_token: Some(pred as u32),
                pred_value: pred_text.trim().parse().ok(),
                pred_text: Some(pred_text),
                correct: e.answer_token.map(|t| t == pred as u32),
                answer_logit,
                answer_rank: answer_logit.map(|al| l.iter().filter(|&&v| v > al).count() as u32),
                top_logit: Some(top),
            });
        }
        progress.advance(chunk.len() as u64);
    }
    progress.finish();
    let mut manifest = run.finished();
    manifest.rows = rows.len() as u64;
    problems::write(&path, &rows, &manifest)?;
    run.record(path, rows.len() as u64);
    Ok(run.outcome())
}
