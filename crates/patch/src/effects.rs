//! The paper's metrics for one patched run of a pair, collected column-wise, and their means.
//!
//! Every experiment scores the corrupt answer's logit at the last position: the logit
//! difference is that logit in the patched run minus in the clean run, the normalised form
//! divides by the corrupt run's own value minus the clean one, and accuracy counts patched runs
//! whose argmax is the corrupt answer. Beside them, the change in log P(corrupt answer): from
//! the last position's log-softmax, or, where the stage runs the answer's tokens too (patching
//! with answers of several tokens), the whole answer's.

use std::collections::BTreeMap;

use helixlab_store::table::{Table, Values};

use crate::pairs::Pair;
use helixlab_study::answers::Scored;

use helixlab_study::pairs::argmax;

/// The normalised effect of a patch on the corrupt answer's logit: 0 at the clean run, 1 at
/// the corrupt run (NaN when the two runs give the same logit).
pub fn normalized(patched: f64, clean: f64, corrupt: f64) -> f64 {
    if corrupt != clean {
        (patched - clean) / (corrupt - clean)
    } else {
        f64::NAN
    }
}

/// The paper's metrics of patched runs, one entry per run, in the columns both patching tables
/// write.
#[derive(Default)]
pub struct Scores {
    pub(crate) clean_logit: Vec<f64>,
    pub(crate) patched_logit: Vec<f64>,
    pub(crate) corrupt_logit: Vec<f64>,
    pub(crate) logit_diff: Vec<f64>,
    pub(crate) normalized: Vec<f64>,
    pub(crate) correct: Vec<bool>,
    pub(crate) answer_logprob_diff: Vec<f64>,
}

impl Scores {
    /// The columns of one patched run of `pair` from the clean run's logits and the patched
    /// run's at the last position, its log P change given; returns the patched run's argmax.
    fn push_logits(
        &mut self,
        pair: &Pair,
        clean: &[f32],
        patched: &[f32],
        logprob_diff: f64,
    ) -> usize {
        let target = pair.corrupt.answer_token as usize;
        let clean_l = clean[target] as f64;
        let patched_l = patched[target] as f64;
        let corrupt = pair.corrupt.answer_logit as f64;
        let top = argmax(patched);
        self.clean_logit.push(clean_l);
        self.patched_logit.push(patched_l);
        self.corrupt_logit.push(corrupt);
        self.logit_diff.push(patched_l - clean_l);
        self.normalized
            .push(normalized(patched_l, clean_l, corrupt));
        self.correct.push(top == target);
        self.answer_logprob_diff.push(logprob_diff);
        top
    }

    /// Scores sequence `i` of a patched batch against the same sequence of its clean batch,
    /// both scored by one [`AnswerScoring`](helixlab_study::answers::AnswerScoring) (the whole answer's log P where it was run);
    /// returns the patched run's argmax at the prompt's last position.
    pub fn push_scored(
        &mut self,
        pair: &Pair,
        clean: &Scored,
        patched: &Scored,
        i: usize,
    ) -> usize {
        let t = pair.corrupt.answer_token;
        // Each Scored holds its rows' log-sum-exp: the clean run's is not redone per patch.
        let logprob_diff = patched.logprob(i, t) - clean.logprob(i, t);
        self.push_logits(pair, &clean.first[i], &patched.first[i], logprob_diff)
    }

    /// The means over the runs `rows`.
    pub fn mean(&self, rows: &[usize]) -> EffectMean {
        let n = rows.len() as f64;
        let mean = |v: &[f64]| rows.iter().map(|&i| v[i]).sum::<f64>() / n;
        EffectMean {
            pairs: rows.len(),
            logit_diff: mean(&self.logit_diff),
            normalized: mean(&self.normalized),
            accuracy: rows.iter().filter(|&&i| self.correct[i]).count() as f64 / n,
        }
    }

    /// The scores a table [`Scores::columns`] wrote, read back.
    pub fn from_frame(f: &helixlab_store::Frame) -> crate::Result<Scores> {
        Ok(Scores {
            clean_logit: f.f64("clean_logit")?,
            patched_logit: f.f64("patched_logit")?,
            corrupt_logit: f.f64("corrupt_logit")?,
            logit_diff: f.f64("logit_diff")?,
            normalized: f.f64("normalized")?,
            correct: f.bool("correct")?,
            answer_logprob_diff: f.f64("answer_logprob_diff")?,
        })
    }

    /// `table` with the score columns added.
    pub fn columns(&self, table: Table) -> Table {
        table
            .column("clean_logit", Values::F64(self.clean_logit.clone()))
            .column("patched_logit", Values::F64(self.patched_logit.clone()))
            .column("corrupt_logit", Values::F64(self.corrupt_logit.clone()))
            .column("logit_diff", Values::F64(self.logit_diff.clone()))
            .column("normalized", Values::F64(self.normalized.clone()))
            .column("correct", Values::Bool(self.correct.clone()))
            .column(
                "answer_logprob_diff",
                Values::F64(self.answer_logprob_diff.clone()),
            )
    }
}

/// What a row patched, named as in the `component` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Patched {
    /// The residual stream after a block (`resid_post`, the last-token experiment).
    ResidPost,
    /// An MLP's output (`mlp`).
    Mlp,
    /// An attention layer's output (`attn`).
    Attn,
    /// One head's output (`head`).
    Head,
    /// The top k heads by total effect, jointly (`heads_top`, layer = k).
    TopHeads,
    /// The top k MLPs by total effect, jointly (`mlps_top`, layer = k).
    TopMlps,
}

impl Patched {
    const ALL: [Patched; 6] = [
        Patched::ResidPost,
        Patched::Mlp,
        Patched::Attn,
        Patched::Head,
        Patched::TopHeads,
        Patched::TopMlps,
    ];

    /// The component a table names.
    pub fn named(name: &str) -> Option<Patched> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Patched::ResidPost => "resid_post",
            Patched::Mlp => "mlp",
            Patched::Attn => "attn",
            Patched::Head => "head",
            Patched::TopHeads => "heads_top",
            Patched::TopMlps => "mlps_top",
        }
    }
}

/// What a row measured, named as in the `effect` column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// The total effect: the corrupt value patched in (`total`).
    Total,
    /// The direct effect: the change of the component's output added to the final residual
    /// only (`direct`).
    Direct,
    /// A patch of this kind or fit (`layer`, `pca9`, `helix(a,b)`, ...).
    Patch(String),
}

impl std::fmt::Display for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Effect::Total => f.write_str("total"),
            Effect::Direct => f.write_str("direct"),
            Effect::Patch(k) => f.write_str(k),
        }
    }
}

/// What was patched: a component, its layer, its head, and the effect measured. Keys order
/// as their names do, so tables list rows as they did when keys were strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectKey {
    /// Component.
    pub component: Patched,
    /// Layer (or k for a joint top-k patch).
    pub layer: u32,
    /// Head, for heads.
    pub head: Option<i64>,
    /// Effect or patch kind.
    pub effect: Effect,
}

impl EffectKey {
    fn sort_key(&self) -> (&'static str, u32, Option<i64>, String) {
        (
            self.component.name(),
            self.layer,
            self.head,
            self.effect.to_string(),
        )
    }
}

impl PartialOrd for EffectKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for EffectKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.sort_key().cmp(&other.sort_key())
    }
}

/// Per-pair rows.
#[derive(Default)]
pub struct EffectRows {
    keys: Vec<EffectKey>,
    pair_id: Vec<u32>,
    clean_answer: Vec<i64>,
    corrupt_answer: Vec<i64>,
    scores: Scores,
}

/// The means over pairs of one key.
#[derive(Clone, Debug, PartialEq)]
pub struct EffectMean {
    /// Pairs averaged.
    pub pairs: usize,
    /// Mean logit difference.
    pub logit_diff: f64,
    /// Mean normalised logit difference.
    pub normalized: f64,
    /// Share of patched runs whose argmax is the corrupt answer.
    pub accuracy: f64,
}

impl EffectRows {
    /// Records pair `pair` patched as `key` from the first answer token's logits alone:
    /// sequence `i` of `clean` against sequence `j` of `patched` (the direct effects, which
    /// change that position only).
    pub fn push_first_token(
        &mut self,
        key: EffectKey,
        pair: &Pair,
        (clean, i): (&Scored, usize),
        (patched, j): (&Scored, usize),
    ) {
        self.record(key, pair);
        let t = pair.corrupt.answer_token;
        let logprob_diff = patched.first_logprob(j, t) - clean.first_logprob(i, t);
        self.scores
            .push_logits(pair, &clean.first[i], &patched.first[j], logprob_diff);
    }

    fn record(&mut self, key: EffectKey, pair: &Pair) {
        self.keys.push(key);
        self.pair_id.push(pair.pair_id);
        self.clean_answer.push(pair.clean.answer);
        self.corrupt_answer.push(pair.corrupt.answer);
    }

    /// Records sequence `i` of a batch patched as `key`, scored by one [`AnswerScoring`](helixlab_study::answers::AnswerScoring) in the
    /// clean and the patched run.
    pub fn push_scored(
        &mut self,
        key: EffectKey,
        pair: &Pair,
        clean: &Scored,
        patched: &Scored,
        i: usize,
    ) {
        self.record(key, pair);
        self.scores.push_scored(pair, clean, patched, i);
    }

    /// The rows of a table [`EffectRows::table`] wrote (a gathered one), read back.
    pub fn from_frame(f: &helixlab_store::Frame) -> crate::Result<EffectRows> {
        let bad =
            |what: String| crate::PatchError::Input(format!("{}: {what}", f.path().display()));
        let components = f.str("component")?;
        let (layers, effects) = (f.i64("layer")?, f.str("effect")?);
        let heads: Vec<Option<i64>> = f
            .df()
            .column("head")
            .and_then(|c| c.cast(&polars::prelude::DataType::Int64))
            .map_err(|e| bad(e.to_string()))?
            .i64()
            .map_err(|e| bad(e.to_string()))?
            .iter()
            .collect();
        let mut keys = Vec::with_capacity(components.len());
        for i in 0..components.len() {
            let component = Patched::named(&components[i])
                .ok_or_else(|| bad(format!("unknown component {:?}", components[i])))?;
            let effect = match effects[i].as_str() {
                "total" => Effect::Total,
                "direct" => Effect::Direct,
                k => Effect::Patch(k.to_string()),
            };
            keys.push(EffectKey {
                component,
                layer: layers[i] as u32,
                head: heads[i],
                effect,
            });
        }
        Ok(EffectRows {
            keys,
            pair_id: f.i64("pair_id")?.into_iter().map(|v| v as u32).collect(),
            clean_answer: f.i64("clean_answer")?,
            corrupt_answer: f.i64("corrupt_answer")?,
            scores: Scores::from_frame(f)?,
        })
    }

    /// Rows recorded.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Means per key, in key order.
    pub fn means(&self) -> BTreeMap<EffectKey, EffectMean> {
        let mut idx: BTreeMap<EffectKey, Vec<usize>> = BTreeMap::new();
        for (i, k) in self.keys.iter().enumerate() {
            idx.entry(k.clone()).or_default().push(i);
        }
        idx.into_iter()
            .map(|(k, rows)| {
                let m = self.scores.mean(&rows);
                (k, m)
            })
            .collect()
    }

    /// The rows as a table (one row per pair x key).
    pub fn table(&self) -> Table {
        let n = self.len();
        let table = Table::new()
            .column(
                "component",
                Values::Str(
                    self.keys
                        .iter()
                        .map(|k| k.component.name().into())
                        .collect(),
                ),
            )
            .column(
                "layer",
                Values::U32(self.keys.iter().map(|k| k.layer).collect()),
            )
            .column(
                "head",
                Values::OptI64(self.keys.iter().map(|k| k.head).collect()),
            )
            .column(
                "effect",
                Values::Str(self.keys.iter().map(|k| k.effect.to_string()).collect()),
            )
            .column("pair_id", Values::U32(self.pair_id.clone()))
            .column("run", Values::Str(vec!["clean".into(); n]))
            .column("patched_from", Values::Str(vec!["corrupt".into(); n]))
            .column("clean_answer", Values::I64(self.clean_answer.clone()))
            .column("corrupt_answer", Values::I64(self.corrupt_answer.clone()));
        self.scores.columns(table)
    }
}

/// A table of means: one row per key.
pub fn means_table(means: &BTreeMap<EffectKey, EffectMean>) -> Table {
    let (keys, values) = (means.keys(), means.values());
    Table::new()
        .strs("component", keys.clone().map(|k| k.component.name()))
        .u32s("layer", keys.clone().map(|k| k.layer))
        .column(
            "head",
            Values::OptI64(keys.clone().map(|k| k.head).collect()),
        )
        .strs("effect", keys.map(|k| k.effect.to_string()))
        .u32s("pairs", values.clone().map(|m| m.pairs as u32))
        .f64s("logit_diff", values.clone().map(|m| m.logit_diff))
        .f64s("normalized", values.clone().map(|m| m.normalized))
        .f64s("accuracy", values.map(|m| m.accuracy))
}
