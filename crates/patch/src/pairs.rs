//! `helixlab pairs`: clean/corrupt pairs (docs/method.md E3-E5). For the operand `a`, a
//! correct clean problem a + b and a correct corrupt problem a' + b with the same b and a' != a
//! (so a different answer); for `b`, symmetrically; for `last` (the last-token and component
//! experiments), any two correct problems with different answers. Both problems of a pair have
//! the same token layout (numbers of several tokens: a' spelled with as many tokens as a), so
//! every named position is at the same offset in both. Drawn from problems.parquet with a
//! stored seed, one row per pair.

use std::collections::BTreeMap;

use helixlab_numeric::split;
use helixlab_pipeline::{Pipeline, Position};
use helixlab_store::stage::Outcome;
use helixlab_store::table::{Table, Values};
use helixlab_store::{tables, RunLayout};

use crate::inputs::{stage_run, target};
use crate::{PatchError, Result};

pub use helixlab_study::pairs::{problems, Pair, ProblemInfo};

/// `n` pairs in which `operand` (`a` or `b`) differs and the other operand is the same, or
/// (`last`) any two problems with different answers, drawn with `seed` from `problems`
/// (correct ones). Fewer when fewer exist.
pub fn draw(problems: &[ProblemInfo], operand: Position, n: usize, seed: u64) -> Vec<Pair> {
    let key = |p: &ProblemInfo| -> (Option<i64>, String) {
        // Group by the operand that stays fixed, and by the token layout: a patch replaces
        // like with like (with one-token numbers every problem has the same layout).
        let fixed = match operand {
            Position::B | Position::BFirst => Some(p.a),
            Position::Last => None,
            Position::A | Position::AFirst | Position::X | Position::XFirst => p.b,
        };
        (fixed, p.token_layout.clone())
    };
    let mut groups: BTreeMap<(Option<i64>, String), Vec<usize>> = BTreeMap::new();
    for (i, p) in problems.iter().enumerate() {
        groups.entry(key(p)).or_default().push(i);
    }
    let order = split::permutation(problems.len(), seed);
    let mut out = Vec::new();
    for (k, &ci) in order.iter().enumerate() {
        if out.len() == n {
            break;
        }
        let clean = &problems[ci];
        let candidates: Vec<usize> = groups[&key(clean)]
            .iter()
            .copied()
            .filter(|&j| problems[j].answer != clean.answer)
            .collect();
        if candidates.is_empty() {
            continue;
        }
        let pick = split::permutation(candidates.len(), seed ^ (k as u64 + 1) << 20)[0];
        out.push(Pair {
            pair_id: out.len() as u32,
            clean: clean.clone(),
            corrupt: problems[candidates[pick]].clone(),
        });
    }
    out
}

/// `helixlab pairs`: draws the pairs unless pairs.parquet is current (or `force`).
pub fn run_pairs(p: &Pipeline, force: bool) -> Result<Outcome> {
    let t = target(p)?;
    let run = RunLayout::new(p.run_dir());
    let problems_path = run.path(tables::PROBLEMS);
    let mut m = stage_run(
        p,
        "pairs",
        serde_json::json!({ "operand": t.position, "patch": p.patch }),
    );
    m.input_table(&run, tables::PROBLEMS)?;
    if !force && m.tables_fresh(&run, &[tables::PAIRS]) {
        return Ok(Outcome::UpToDate);
    }
    m.begin();
    let problems = problems(run.root(), p.patch.correct_only)?;
    // The operand's pairs (E3), then the last-token pairs (E4, E5), each from the same seed.
    let mut pairs = Vec::new();
    for operand in [t.position, Position::Last] {
        let drawn = draw(&problems, operand, p.patch.pairs, p.patch.seed);
        if drawn.is_empty() {
            return Err(PatchError::Input(format!(
                "{}: no clean/corrupt pairs for `{operand}`: the model gets too few problems right",
                problems_path.display()
            )));
        }
        pairs.extend(drawn.into_iter().map(|x| (operand.name().to_string(), x)));
    }
    let col_u32 = |f: &dyn Fn(&Pair) -> u32| Values::U32(pairs.iter().map(|x| f(&x.1)).collect());
    let col_i64 = |f: &dyn Fn(&Pair) -> i64| Values::I64(pairs.iter().map(|x| f(&x.1)).collect());
    let table = Table::new()
        .column(
            "operand",
            Values::Str(pairs.iter().map(|x| x.0.clone()).collect()),
        )
        .column("pair_id", col_u32(&|x| x.pair_id))
        .column("clean_prompt_id", col_u32(&|x| x.clean.prompt_id))
        .column("corrupt_prompt_id", col_u32(&|x| x.corrupt.prompt_id))
        .column("clean_a", col_i64(&|x| x.clean.a))
        .column("clean_b", col_i64(&|x| x.clean.b.unwrap_or(-1)))
        .column("corrupt_a", col_i64(&|x| x.corrupt.a))
        .column("corrupt_b", col_i64(&|x| x.corrupt.b.unwrap_or(-1)))
        .column("clean_answer", col_i64(&|x| x.clean.answer))
        .column("corrupt_answer", col_i64(&|x| x.corrupt.answer))
        .column(
            "token_layout",
            Values::Str(
                pairs
                    .iter()
                    .map(|x| x.1.clean.token_layout.clone())
                    .collect(),
            ),
        );
    m.write_table(&run, tables::PAIRS, &table)?;
    Ok(m.outcome())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> Vec<ProblemInfo> {
        let mut v = Vec::new();
        for a in 0..20 {
            for b in 0..20 {
                v.push(ProblemInfo {
                    prompt_id: (a * 20 + b) as u32,
                    a,
                    b: Some(b),
                    answer: a + b,
                    prompt: format!("{a}+{b}="),
                    answer_token: (a + b) as u32,
                    answer_logit: 1.0,
                    // Digit by digit: a and b of one or two tokens.
                    token_layout: format!("{},{}", a.to_string().len(), b.to_string().len()),
                    answer_tokens: vec![(a + b) as u32],
                });
            }
        }
        v
    }

    #[test]
    fn a_pairs_share_b_and_differ_in_the_answer() {
        let g = grid();
        let p = draw(&g, Position::A, 30, 42);
        assert_eq!(p.len(), 30);
        for pair in &p {
            assert_eq!(pair.clean.b, pair.corrupt.b);
            assert_ne!(pair.clean.a, pair.corrupt.a);
        }
        assert_eq!(p, draw(&g, Position::A, 30, 42));
        assert_ne!(p, draw(&g, Position::A, 30, 43));
        let q = draw(&g, Position::B, 10, 1);
        assert!(q
            .iter()
            .all(|x| x.clean.a == x.corrupt.a && x.clean.b != x.corrupt.b));
        let l = draw(&g, Position::Last, 40, 1);
        assert_eq!(l.len(), 40);
        assert!(l.iter().all(|x| x.clean.answer != x.corrupt.answer));
        // Not restricted to a shared operand.
        assert!(l
            .iter()
            .any(|x| x.clean.a != x.corrupt.a && x.clean.b != x.corrupt.b));
        // Like with like: both problems of every pair are spelled with as many tokens.
        for pair in p.iter().chain(&q).chain(&l) {
            assert_eq!(
                pair.clean.token_layout, pair.corrupt.token_layout,
                "{pair:?}"
            );
        }
        let layouts: std::collections::BTreeSet<_> =
            p.iter().map(|x| x.clean.token_layout.as_str()).collect();
        assert!(layouts.len() > 1, "{layouts:?}");
    }
}
