//! Problems to token ids, with every operand located as a run of tokens (one token for the
//! paper's models, several for models that write numbers digit by digit) and every answer
//! checked to be in the vocabulary: the check that runs before any heavy work.

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
    /// Named positions (`a`, `a_first`, `b`, ..., `last`), counted from the end (-1 = last
    /// token). With one-token numbers they are the same for every prompt of a task; a number
    /// the tokenizer splits moves the positions after it.
    pub positions: BTreeMap<Position, i64>,
    /// How many tokens each operand takes, in template order: prompts with the same layout
    /// have every named position at the same offset.
    pub layout: Vec<u32>,
    /// The answer's tokens (the bare number, no special tokens), when the task has one.
    pub answer_tokens: Option<Vec<u32>>,
    /// The answer's first token (the paper's metrics score it).
    pub answer_token: Option<u32>,
}

impl Encoded {
    /// The layout as problems.parquet records it: tokens per operand, comma separated.
    pub fn token_layout(&self) -> String {
        self.layout
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// `text` without whitespace: a number's tokens read back as it, whether the decoder joins them
/// directly (BPE) or with spaces (a word-level vocabulary), and whatever space the first token
/// carries.
fn squeezed(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

/// The tokens `[first, last]` of `span` in `toks`: the first may carry the whitespace before
/// the number (GPT-NeoX's " 37" after "number."), the last must end where the number ends, and
/// none may reach past it.
fn operand_tokens(
    prompt: &str,
    toks: &[(u32, (usize, usize))],
    span: &std::ops::Range<usize>,
) -> Option<(usize, usize)> {
    let inside: Vec<usize> = (0..toks.len())
        .filter(|&i| {
            let (s, e) = toks[i].1;
            e > span.start && s < span.end
        })
        .collect();
    let (&first, &last) = (inside.first()?, inside.last()?);
    let (s, _) = toks[first].1;
    let (_, e) = toks[last].1;
    let clean_start = s == span.start
        || (s < span.start && prompt[s..span.start].chars().all(char::is_whitespace));
    (clean_start && e == span.end && last - first + 1 == inside.len()).then_some((first, last))
}

/// `shard`'s slice of the encoded prompts, in whole batches of `batch` (all of them without a
/// shard), so that each batch is the one the unsharded run makes.
pub fn slice(
    encoded: Vec<Encoded>,
    shard: Option<helixlab_store::shard::Shard>,
    batch: usize,
) -> Vec<Encoded> {
    match shard {
        Some(s) => {
            let r = s.range(encoded.len(), batch);
            encoded.into_iter().skip(r.start).take(r.len()).collect()
        }
        None => encoded,
    }
}

/// Encodes every problem of the pipeline's task; fails on the first number that the tokens do
/// not line up with (a token covering the number and the text beside it), a number that is not
/// in the vocabulary, or a prompt longer than `context` tokens (the model's positions), naming
/// it. Numbers may take several tokens each.
// Long (about 110 lines) because each refusal builds a message that quotes the prompt's tokens.
pub fn encode_task(p: &Pipeline, tok: &Tokenizer, context: Option<usize>) -> Result<Vec<Encoded>> {
    let task = &p.task;
    let err = |message: String| ExtractError::Study {
        pipeline: p.path.clone(),
        message,
    };
    let quoted = |ids: &[u32]| -> Vec<String> {
        ids.iter()
            .map(|&id| format!("{:?}", tok.decode(&[id]).unwrap_or_default()))
            .collect()
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
        let mut layout = Vec::new();
        for (name, span) in task.operand_spans(&problem) {
            let text = &problem.prompt[span.clone()];
            let (first, last) = operand_tokens(&problem.prompt, &toks, &span).ok_or_else(|| {
                let pieces = |keep: &dyn Fn(usize, usize) -> bool| -> Vec<String> {
                    toks.iter()
                        .filter(|(_, (s, e))| keep(*s, *e))
                        .map(|(_, (s, e))| format!("{:?}", &problem.prompt[*s..*e]))
                        .collect()
                };
                let number = pieces(&|s, e| e > span.start && s < span.end);
                err(format!(
                    "operand {name} = {text:?} of prompt {:?} does not line up with its tokens \
                     ({}): a token covers the number and the text beside it, so no token \
                     position holds the number alone (prompt tokens: {})",
                    problem.prompt,
                    number.join(" "),
                    pieces(&|_, _| true).join(" ")
                ))
            })?;
            // An unknown-word token can cover the number too: the tokens must read back as it.
            let ids: Vec<u32> = toks[first..=last].iter().map(|(id, _)| *id).collect();
            if squeezed(&tok.decode(&ids)?) != text {
                return Err(err(format!(
                    "operand {name} = {text:?} of prompt {:?} is not in the vocabulary: its \
                     tokens {} read back as {:?}",
                    problem.prompt,
                    quoted(&ids).join(" "),
                    tok.decode(&ids)?
                )));
            }
            let (at_last, at_first) = Position::of_operand(name).expect("operands are positions");
            positions.insert(at_last, last as i64 - n);
            positions.insert(at_first, first as i64 - n);
            layout.push((last - first + 1) as u32);
        }
        positions.insert(Position::Last, -1);
        let answer_tokens = match problem.answer {
            None => None,
            Some(ans) => {
                let text = ans.to_string();
                let ids = tok.encode(&text, false).map_err(|e| {
                    err(format!(
                        "the answer {ans} (of prompt {:?}) is not in the vocabulary: {e}",
                        problem.prompt
                    ))
                })?;
                if ids.is_empty() || squeezed(&tok.decode(&ids)?) != text {
                    return Err(err(format!(
                        "the answer {ans} (of prompt {:?}) is not in the vocabulary: its tokens \
                         {} read back as {:?}",
                        problem.prompt,
                        quoted(&ids).join(" "),
                        tok.decode(&ids)?
                    )));
                }
                Some(ids)
            }
        };
        out.push(Encoded {
            problem,
            ids: toks.into_iter().map(|(id, _)| id).collect(),
            positions,
            layout,
            answer_token: answer_tokens.as_ref().map(|a| a[0]),
            answer_tokens,
        });
    }
    if out.is_empty() {
        return Err(err("the task has no problems".into()));
    }
    Ok(out)
}

/// The pipeline's named extraction positions, each with its offset from the end when that is
/// the same for every problem (always, when every number is one token) and `None` when it
/// varies (numbers of several tokens), so that extraction addresses each prompt's own.
pub fn extraction_offsets(p: &Pipeline, encoded: &[Encoded]) -> Vec<(Position, Option<i64>)> {
    p.extract
        .positions
        .iter()
        .map(|name| {
            let off = encoded[0].positions[name];
            let same = encoded.iter().all(|e| e.positions[name] == off);
            (*name, same.then_some(off))
        })
        .collect()
}
