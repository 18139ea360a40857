//! Problems to token ids, with every operand located as one token and every answer checked to
//! be one token: the check that runs before any heavy work.

use std::collections::BTreeMap;

use helixlab_model::Tokenizer;
use helixlab_pipeline::{Pipeline, Position, Problem};

use crate::{ExtractError, Result};

/// A problem with its tokens.
#[derive(Clone, Debug)]
pub struct Encoded {
    /// The problem.
    pub problem: Problem,
    /// Token ids of the prompt (with special tokens if the task asks for them).
    pub ids: Vec<u32>,
    /// Named positions (`a`, `b`, `x`, `last`), counted from the end (-1 = last token).
    pub positions: BTreeMap<Position, i64>,
    /// The answer as one token (the bare number, no special tokens).
    pub answer_token: Option<u32>,
}

/// Encodes every problem of the pipeline's task; fails on the first number that is not a
/// single token, a position that does not resolve, or a prompt longer than `context` tokens
/// (the model's positions), naming it.
pub fn encode_task(p: &Pipeline, tok: &Tokenizer, context: Option<usize>) -> Result<Vec<Encoded>> {
    let task = &p.task;
    let err = |message: String| ExtractError::Study {
        pipeline: p.path.clone(),
        message,
    };
    let mut out = Vec::new();
    for problem in task.problems() {
        let toks = tok.encode_with_offsets(&problem.prompt, task.special_tokens)?;
        if let Some(limit) = context.filter(|&l| toks.len() > l) {
            return Err(err(format!(
                "prompt {:?} has {} tokens, more than the model's context of {limit} positions",
                problem.prompt,
                toks.len()
            )));
        }
        let n = toks.len() as i64;
        let mut positions = BTreeMap::new();
        for (name, span) in task.operand_spans(&problem) {
            // The token must cover exactly the number, or the number with the whitespace
            // before it (GPT-NeoX's " 37" after "number.").
            let idx = toks
                .iter()
                .position(|(_, (s, e))| {
                    *e == span.end
                        && *s <= span.start
                        && problem.prompt[*s..span.start]
                            .chars()
                            .all(char::is_whitespace)
                })
                .ok_or_else(|| {
                    let pieces = |keep: &dyn Fn(usize, usize) -> bool| -> Vec<String> {
                        toks.iter()
                            .filter(|(_, (s, e))| keep(*s, *e))
                            .map(|(_, (s, e))| format!("{:?}", &problem.prompt[*s..*e]))
                            .collect()
                    };
                    let number = pieces(&|s, e| e > span.start && s < span.end);
                    err(format!(
                        "operand {name} = {:?} of prompt {:?} is {} tokens here ({}), not one: \
                         this tokenizer splits the number, and the single-token studies need \
                         every operand and answer to be one token (prompt tokens: {})",
                        &problem.prompt[span.clone()],
                        problem.prompt,
                        number.len(),
                        number.join(" "),
                        pieces(&|_, _| true).join(" ")
                    ))
                })?;
            // An unknown-word token can span the number too: the token must read back as it.
            let text = &problem.prompt[span.clone()];
            if tok.decode(&[toks[idx].0])?.trim() != text {
                return Err(err(format!(
                    "operand {name} = {text:?} of prompt {:?} is not in the vocabulary as one token",
                    problem.prompt
                )));
            }
            positions.insert(
                name.parse().expect("operands are positions"),
                idx as i64 - n,
            );
        }
        positions.insert(Position::Last, -1);
        let answer_token = match problem.answer {
            None => None,
            Some(ans) => Some(tok.single_token(&ans.to_string())?.ok_or_else(|| {
                let pieces: Vec<String> = tok
                    .encode(&ans.to_string(), false)
                    .unwrap_or_default()
                    .iter()
                    .map(|&id| format!("{:?}", tok.decode(&[id]).unwrap_or_default()))
                    .collect();
                err(format!(
                    "the answer {ans} (of prompt {:?}) is not a single token ({}): the \
                     single-token studies need every answer to be one token",
                    problem.prompt,
                    pieces.join(" ")
                ))
            })?),
        };
        out.push(Encoded {
            problem,
            ids: toks.into_iter().map(|(id, _)| id).collect(),
            positions,
            answer_token,
        });
    }
    if out.is_empty() {
        return Err(err("the task has no problems".into()));
    }
    Ok(out)
}

/// The pipeline's named extraction positions as offsets from the end, which must be the same
/// for every problem (they are when every number is one token).
pub fn extraction_offsets(p: &Pipeline, encoded: &[Encoded]) -> Result<Vec<(Position, i64)>> {
    let first = &encoded[0];
    let mut out = Vec::new();
    for name in &p.extract.positions {
        let off = first.positions[name];
        if let Some(e) = encoded.iter().find(|e| e.positions[name] != off) {
            return Err(ExtractError::Study {
                pipeline: p.path.clone(),
                message: format!(
                    "position `{name}` is {off} from the end in {:?} but {} in {:?}; \
                     extraction needs one offset for the whole task",
                    first.problem.prompt, e.positions[name], e.problem.prompt
                ),
            });
        }
        out.push((*name, off));
    }
    Ok(out)
}
