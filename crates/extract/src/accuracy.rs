//! `helixlab accuracy`: every prompt of the task through the model; one row per prompt with
//! the predicted token, whether it is the answer, the answer's logit and rank, its tokens and
//! the log-probability of the whole answer.
//!
//! When every answer is one token (the paper's models), a problem is correct when the greedy
//! token at the last position is the answer's, as in the paper. When some answer takes several
//! tokens (a model that writes numbers digit by digit), one teacher-forced forward over prompt +
//! answer scores every answer token at once: a problem is correct when greedy decoding would
//! write every answer token and then stop the number (the token after it does not continue it
//! with a digit). The wrong ones are then decoded greedily, a few tokens, to read the number the
//! model writes instead (`pred_value`, for the error histogram).

use helixlab_model::{ForwardRequest, HookPoint, Logits, ModelError, Positions, Tokenizer};
use helixlab_pipeline::Pipeline;
use helixlab_store::problems::{self, ProblemRow};
use helixlab_store::table::{Table, Values};
use helixlab_store::{tables, RunLayout, StageRun};
use helixlab_study::pairs::log_softmax_at;
use helixlab_study::StudyModel;

use crate::prompts::{encode_task, Encoded};
use crate::{ExtractError, Outcome, Progress, Result};
use helixlab_store::shard::Shard;

/// The table this stage writes.
pub fn output(p: &Pipeline) -> std::path::PathBuf {
    RunLayout::new(p.run_dir()).path(tables::PROBLEMS)
}

/// The index and value of the largest entry.
fn argmax(l: &[f32]) -> (usize, f32) {
    l.iter()
        .enumerate()
        .fold((0usize, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
}

fn check_finite(e: &Encoded, l: &[f32]) -> Result<()> {
    if l.iter().any(|v| !v.is_finite()) {
        return Err(ExtractError::NonFinite {
            what: format!(
                "the logits of prompt {} ({:?})",
                e.problem.prompt_id, e.problem.prompt
            ),
        });
    }
    Ok(())
}

/// A problem's row before its predicted text is known.
fn row(e: &Encoded, first: &[f32], logprob: f64, correct: bool) -> ProblemRow {
    let (pred, top) = argmax(first);
    let answer_logit = e.answer_token.map(|t| first[t as usize]);
    ProblemRow {
        prompt_id: e.problem.prompt_id,
        a: e.problem.a,
        b: e.problem.b,
        answer: e.problem.answer,
        prompt: e.problem.prompt.clone(),
        answer_token: e.answer_token,
        pred_token: Some(pred as u32),
        pred_text: None,
        pred_value: None,
        correct: Some(correct),
        answer_logit,
        answer_rank: answer_logit.map(|al| first.iter().filter(|&&v| v > al).count() as u32),
        top_logit: Some(top),
        answer_tokens: e.answer_tokens.clone(),
        answer_logprob: Some(logprob as f32),
        token_layout: Some(e.token_layout()),
    }
}

fn to_rows(t: helixlab_model::Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(t.to_dtype(helixlab_model::DType::F32)
        .and_then(|t| t.to_vec2::<f32>())
        .map_err(ModelError::from)?)
}

/// The answers the task can have, when every one is a token of its own and they run without
/// a gap (0..=198 for a + b with a, b in 0..=99): the first of them and each one's token. The
/// last position's logits at these tokens are answer_logits.parquet (the paper's Figs 41-42).
pub struct AnswerTokens {
    /// The smallest answer.
    pub first: i64,
    /// The token of `first + i`.
    pub tokens: Vec<u32>,
}

impl AnswerTokens {
    /// `None` when some answer is several tokens, answers are missing between the smallest
    /// and the largest, or one number is written with two different tokens.
    pub fn of(encoded: &[Encoded]) -> Option<AnswerTokens> {
        let mut by_value = std::collections::BTreeMap::new();
        for e in encoded {
            let (value, tokens) = (e.problem.answer?, e.answer_tokens.as_ref()?);
            if tokens.len() != 1 || *by_value.entry(value).or_insert(tokens[0]) != tokens[0] {
                return None;
            }
        }
        let first = *by_value.keys().next()?;
        let last = *by_value.keys().next_back()?;
        (by_value.len() as i64 == last - first + 1 && by_value.len() > 1).then(|| AnswerTokens {
            first,
            tokens: by_value.into_values().collect(),
        })
    }
}

/// One-token answers: the last position's logits, as the paper scores them, and their values at
/// `answers`' tokens (appended to `answer_logits`).
fn score_last(
    study: &StudyModel,
    p: &Pipeline,
    chunk: &[Encoded],
    answers: Option<&AnswerTokens>,
    answer_logits: &mut Vec<f32>,
) -> Result<Vec<ProblemRow>> {
    let tok = &study.tokenizer;
    let seqs: Vec<Vec<u32>> = chunk.iter().map(|e| e.ids.clone()).collect();
    let logits = study
        .forward_prompts(p, &seqs, &ForwardRequest::new().logits(Logits::Last))?
        .logits
        .expect("logits were asked for");
    let mut rows = Vec::with_capacity(chunk.len());
    for (e, l) in chunk.iter().zip(to_rows(logits)?) {
        check_finite(e, &l)?;
        if let Some(a) = answers {
            answer_logits.extend(a.tokens.iter().map(|&t| l[t as usize]));
        }
        let t = e.answer_token.expect("scored problems have answers");
        let mut r = row(e, &l, log_softmax_at(&l, t as usize), false);
        let pred = r.pred_token.expect("set by row");
        let pred_text = tok.decode(&[pred])?;
        r.correct = Some(pred == t);
        r.pred_value = pred_text.trim().parse().ok();
        r.pred_text = Some(pred_text);
        rows.push(r);
    }
    Ok(rows)
}

/// Whether `text` (a token's) starts or continues a decimal number: digits only, after the
/// whitespace a first token may carry.
fn is_digits(text: &str, first: bool) -> bool {
    let t = if first { text.trim_start() } else { text };
    !t.is_empty() && t.chars().all(|c| c.is_ascii_digit())
}

/// Answers of several tokens: one forward over prompt + answer, the final residual stream read
/// at the position before each answer token and after the last one.
fn score_teacher_forced(
    study: &StudyModel,
    p: &Pipeline,
    chunk: &[Encoded],
) -> Result<Vec<ProblemRow>> {
    let (model, tok) = (&study.model, &study.tokenizer);
    let answers: Vec<&Vec<u32>> = chunk
        .iter()
        .map(|e| {
            e.answer_tokens
                .as_ref()
                .expect("scored problems have answers")
        })
        .collect();
    let seqs: Vec<Vec<u32>> = chunk
        .iter()
        .zip(&answers)
        .map(|(e, a)| [e.ids.as_slice(), a.as_slice()].concat())
        .collect();
    // Every sequence reads as many positions (the longest answer's + 1); shorter answers
    // repeat their last position, which is never read.
    let m = answers.iter().map(|a| a.len()).max().unwrap_or(1) + 1;
    let per: Vec<Vec<i64>> = answers
        .iter()
        .map(|a| {
            let n = a.len() as i64;
            (0..m as i64).map(|j| -(n + 1) + j.min(n)).collect()
        })
        .collect();
    let last_block = HookPoint::ResidPost(model.config().n_layers - 1);
    let out = study.forward_prompts(
        p,
        &seqs,
        &ForwardRequest::new().capture(last_block, Positions::Each(per)),
    )?;
    let resid = out.capture(last_block)?;
    let d = model.config().d_model;
    let logits = to_rows(
        model.logits_from_final_residual(
            &resid
                .reshape((chunk.len() * m, d))
                .map_err(ModelError::from)?,
        )?,
    )?;
    let mut rows = Vec::with_capacity(chunk.len());
    for (i, (e, a)) in chunk.iter().zip(&answers).enumerate() {
        let at = |j: usize| &logits[i * m + j];
        let mut logprob = 0.0;
        let mut all = true;
        for (j, &t) in a.iter().enumerate() {
            check_finite(e, at(j))?;
            logprob += log_softmax_at(at(j), t as usize);
            all &= argmax(at(j)).0 == t as usize;
        }
        check_finite(e, at(a.len()))?;
        let after = tok.decode(&[argmax(at(a.len())).0 as u32])?;
        let continues = after.chars().next().is_some_and(|c| c.is_ascii_digit());
        let mut r = row(e, at(0), logprob, all && !continues);
        if r.correct == Some(true) {
            let answer = e.problem.answer.expect("scored problems have answers");
            r.pred_text = Some(answer.to_string());
            r.pred_value = Some(answer);
        }
        rows.push(r);
    }
    Ok(rows)
}

/// The number each prompt's greedy continuation writes: `steps` tokens (the first, `first`, is
/// known from the scoring forward; the rest decoded with a key/value cache), read while they
/// are digits. Returns (text, value): the digits, or the first token's text when the
/// continuation does not start with a number.
fn greedy_numbers(
    study: &StudyModel,
    prompts: &[Vec<u32>],
    first: &[u32],
    steps: usize,
) -> Result<Vec<(String, Option<i64>)>> {
    let tok: &Tokenizer = &study.tokenizer;
    let seqs: Vec<Vec<u32>> = prompts
        .iter()
        .zip(first)
        .map(|(s, &f)| [s.as_slice(), &[f]].concat())
        .collect();
    let rest = study.model.greedy(&seqs, steps.saturating_sub(1))?;
    let written: Vec<Vec<u32>> = first
        .iter()
        .zip(rest)
        .map(|(&f, r)| [&[f][..], &r].concat())
        .collect();
    written
        .iter()
        .map(|w| {
            let digits: Vec<u32> = w
                .iter()
                .enumerate()
                .take_while(|(j, &t)| is_digits(&tok.decode(&[t]).unwrap_or_default(), *j == 0))
                .map(|(_, &t)| t)
                .collect();
            if digits.is_empty() {
                return Ok((tok.decode(&w[..1.min(w.len())])?, None));
            }
            let text = tok.decode(&digits)?;
            // A word-level decoder joins tokens with spaces ("1 0").
            let value = text
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect::<String>()
                .parse()
                .ok();
            Ok((text, value))
        })
        .collect()
}

/// Runs the accuracy sweep unless problems.parquet is current (or `force`).
// Long (about 80 lines) because it lists the unscored tasks' rows, scores the batches and reads
// the wrong answers' numbers in one pass the progress bar follows.
///
/// With a `shard`, only its slice of the problems (whole batches) is scored; the answer
/// tokens are still those of the whole task, so every shard's tables have one schema.
pub fn run(
    p: &Pipeline,
    force: bool,
    progress: &dyn Progress,
    shard: Option<Shard>,
) -> Result<Outcome> {
    let study = StudyModel::load(p)?;
    let (model, tok) = (&study.model, &study.tokenizer);
    let encoded = encode_task(p, tok, model.config().max_positions)?;
    study.sites(p)?;
    let path = output(p);
    let layout = RunLayout::new(p.run_dir());
    let logits_path = layout.path(tables::ANSWER_LOGITS);
    let answers = AnswerTokens::of(&encoded);
    let encoded = crate::prompts::slice(encoded, shard, p.extract.batch_size);
    let outputs: Vec<std::path::PathBuf> = std::iter::once(path.clone())
        .chain(answers.as_ref().map(|_| logits_path.clone()))
        .collect();
    let mut run = StageRun::new(
        "accuracy",
        serde_json::json!({ "task": p.task, "share_prefixes": p.extract.share_prefixes }),
    )
    .with_model(study.identity.clone());
    if !force && run.is_fresh(&outputs) {
        return Ok(Outcome::UpToDate);
    }
    run.begin();
    // A table from an earlier task would be read as this one's.
    if answers.is_none() && logits_path.exists() {
        std::fs::remove_file(&logits_path).map_err(|e| {
            ExtractError::Input(format!("{}: cannot remove: {e}", logits_path.display()))
        })?;
    }
    let mut answer_logits = Vec::new();
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
            answer_tokens: None,
            answer_logprob: None,
            token_layout: Some(e.token_layout()),
        }));
    }
    let longest = encoded
        .iter()
        .filter_map(|e| e.answer_tokens.as_ref().map(Vec::len))
        .max()
        .unwrap_or(0);
    progress.start("accuracy", encoded.len() as u64);
    for chunk in encoded.chunks(p.extract.batch_size).filter(|_| scored) {
        rows.extend(if longest > 1 {
            score_teacher_forced(&study, p, chunk)?
        } else {
            score_last(&study, p, chunk, answers.as_ref(), &mut answer_logits)?
        });
        progress.advance(chunk.len() as u64);
    }
    progress.finish();
    // What the wrong ones write instead, greedily: the answer's length and one more token.
    // Batched by prompt length, so that a batch carries few pads.
    let mut wrong: Vec<usize> = (0..rows.len())
        .filter(|&i| rows[i].correct == Some(false) && rows[i].pred_text.is_none())
        .collect();
    wrong.sort_by_key(|&i| (encoded[i].ids.len(), i));
    if !wrong.is_empty() {
        progress.start("accuracy: reading wrong answers", wrong.len() as u64);
        for chunk in wrong.chunks(p.extract.batch_size) {
            let prompts: Vec<Vec<u32>> = chunk.iter().map(|&i| encoded[i].ids.clone()).collect();
            let first: Vec<u32> = chunk
                .iter()
                .map(|&i| rows[i].pred_token.expect("scored rows have a prediction"))
                .collect();
            let read = greedy_numbers(&study, &prompts, &first, longest + 1)?;
            for (&i, (text, value)) in chunk.iter().zip(read) {
                rows[i].pred_text = Some(text);
                rows[i].pred_value = value;
            }
            progress.advance(chunk.len() as u64);
        }
        progress.finish();
    }
    if let (Some(a), false) = (&answers, answer_logits.is_empty()) {
        run.write_table(
            &layout,
            tables::ANSWER_LOGITS,
            &answer_table(&rows, a, answer_logits),
        )?;
    }
    let mut manifest = run.finished();
    manifest.rows = rows.len() as u64;
    problems::write(&path, &rows, &manifest)?;
    run.record(path, rows.len() as u64);
    Ok(run.outcome())
}

/// answer_logits.parquet: one row per problem, the last position's logits at the tokens of
/// every answer the task can have (`first_answer` + i).
fn answer_table(rows: &[ProblemRow], a: &AnswerTokens, logits: Vec<f32>) -> Table {
    let n = rows.len();
    Table::new()
        .u32s("prompt_id", rows.iter().map(|r| r.prompt_id))
        .column("a", Values::I64(rows.iter().map(|r| r.a).collect()))
        .column("b", Values::OptI64(rows.iter().map(|r| r.b).collect()))
        .column(
            "answer",
            Values::OptI64(rows.iter().map(|r| r.answer).collect()),
        )
        .column("first_answer", Values::I64(vec![a.first; n]))
        .column(
            "logits",
            Values::Vector {
                d: a.tokens.len(),
                values: logits,
            },
        )
}
