//! Tasks: the addition grid and the paper's other a-token tasks, as problems with prompts.

use serde::{Deserialize, Serialize};

/// What the model is asked, which fixes the answer and which operands exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// `{a}+{b}=` -> a + b.
    Addition,
    /// Bare numbers `{x}` (no answer): the representation of x alone.
    Numbers,
    /// `{a}-23=` -> a - 23 (a >= 23).
    Subtract23,
    /// `{a}//5=` -> a // 5.
    FloorDiv5,
    /// `{a}*1.5=` -> a * 1.5 (even a only).
    Times1_5,
    /// `{a} modulo 2=` -> a mod 2.
    Modulo2,
    /// `x-{a}=0, x=` -> a.
    Solve,
}

impl TaskKind {
    /// The placeholders the template must contain.
    pub fn operands(&self) -> &'static [&'static str] {
        match self {
            TaskKind::Addition => &["a", "b"],
            TaskKind::Numbers => &["x"],
            _ => &["a"],
        }
    }

    /// The answer, or `None` when the problem is not part of the task (e.g. odd a for
    /// `Times1_5`) or the task has no answer.
    fn answer(&self, a: i64, b: i64) -> Option<Option<i64>> {
        Some(match self {
            TaskKind::Addition => Some(a + b),
            TaskKind::Numbers => None,
            TaskKind::Subtract23 => {
                if a < 23 {
                    return None;
                }
                Some(a - 23)
            }
            TaskKind::FloorDiv5 => Some(a / 5),
            TaskKind::Times1_5 => {
                if a % 2 != 0 {
                    return None;
                }
                Some(a * 3 / 2)
            }
            TaskKind::Modulo2 => Some(a % 2),
            TaskKind::Solve => Some(a),
        })
    }
}

/// The most problems a task may have (ranges are checked against it before prompts are built).
pub const MAX_PROBLEMS: u64 = 10_000_000;

/// The task section of a pipeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// Which task.
    pub kind: TaskKind,
    /// The prompt, with `{a}`, `{b}` (addition) or `{x}` (numbers) placeholders.
    pub template: String,
    /// Inclusive range of the first operand (`a`, or `x` for numbers).
    pub a: [i64; 2],
    /// Inclusive range of `b` (addition only).
    #[serde(default)]
    pub b: Option<[i64; 2]>,
    /// Let the tokenizer add its special tokens (Llama 3's BOS). The answer token is always
    /// the bare number without them.
    #[serde(default)]
    pub special_tokens: bool,
}

/// One prompt of a task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Row number within the task, stable across runs.
    pub prompt_id: u32,
    /// First operand (x for the numbers task).
    pub a: i64,
    /// Second operand (addition).
    pub b: Option<i64>,
    /// The correct answer, if the task has one.
    pub answer: Option<i64>,
    /// The prompt text.
    pub prompt: String,
}

impl Task {
    /// Every problem of the task, `a` major, in a fixed order.
    pub fn problems(&self) -> Vec<Problem> {
        let b_range = match (self.kind, self.b) {
            (TaskKind::Addition, Some(b)) => Some(b),
            _ => None,
        };
        let mut out = Vec::new();
        for a in self.a[0]..=self.a[1] {
            let bs: Vec<Option<i64>> = match b_range {
                Some(r) => (r[0]..=r[1]).map(Some).collect(),
                None => vec![None],
            };
            for b in bs {
                let Some(answer) = self.kind.answer(a, b.unwrap_or(0)) else {
                    continue;
                };
                let mut prompt = self.template.replace("{a}", &a.to_string());
                prompt = prompt.replace("{x}", &a.to_string());
                if let Some(b) = b {
                    prompt = prompt.replace("{b}", &b.to_string());
                }
                out.push(Problem {
                    prompt_id: out.len() as u32,
                    a,
                    b,
                    answer,
                    prompt,
                });
            }
        }
        out
    }

    /// Character spans of each operand in `template` rendered for `p`, by name, in template
    /// order; used to find the operand's token.
    pub fn operand_spans(&self, p: &Problem) -> Vec<(&'static str, std::ops::Range<usize>)> {
        let mut spans = Vec::new();
        let mut rendered = String::new();
        let mut rest = self.template.as_str();
        while let Some(start) = rest.find('{') {
            rendered.push_str(&rest[..start]);
            let after = &rest[start..];
            let (name, value): (&'static str, String) = if after.starts_with("{a}") {
                ("a", p.a.to_string())
            } else if after.starts_with("{x}") {
                ("x", p.a.to_string())
            } else if after.starts_with("{b}") {
                ("b", p.b.map(|b| b.to_string()).unwrap_or_default())
            } else {
                rendered.push('{');
                rest = &after[1..];
                continue;
            };
            spans.push((name, rendered.len()..rendered.len() + value.len()));
            rendered.push_str(&value);
            rest = &after[3..];
        }
        spans
    }

    /// Checks the template against the kind: every operand placeholder present.
    pub fn validate(&self) -> Result<(), String> {
        for op in self.kind.operands() {
            if !self.template.contains(&format!("{{{op}}}")) {
                return Err(format!(
                    "template {:?} lacks the placeholder {{{op}}} that task kind {:?} needs",
                    self.template, self.kind
                ));
            }
        }
        if self.a[0] > self.a[1] || self.a[0] < 0 {
            return Err(format!(
                "range a = {:?} must be [low, high] with 0 <= low <= high",
                self.a
            ));
        }
        // Checked before any prompt is built: a range of a billion numbers would otherwise
        // build every prompt first and run out of memory.
        let count = (self.a[1] - self.a[0] + 1) as u128
            * self.b.map_or(1, |b| (b[1] - b[0] + 1).max(0) as u128);
        if count > MAX_PROBLEMS as u128 {
            return Err(format!(
                "the ranges give {count} problems; a study holds at most {MAX_PROBLEMS} \
                 (prompt ids are 32-bit and every prompt is run): narrow a or b"
            ));
        }
        match (self.kind, self.b) {
            (TaskKind::Addition, None) => {
                Err("the addition task needs a range b = [low, high]".into())
            }
            (TaskKind::Addition, Some(b)) if b[0] > b[1] || b[0] < 0 => Err(format!(
                "range b = {b:?} must be [low, high] with 0 <= low <= high"
            )),
            (TaskKind::Addition, _) => Ok(()),
            (_, Some(_)) => Err(format!(
                "range b is only for the addition task, not {:?}",
                self.kind
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addition() -> Task {
        Task {
            kind: TaskKind::Addition,
            template: "Output ONLY a number.\n{a}+{b}=".into(),
            a: [0, 99],
            b: Some([0, 99]),
            special_tokens: false,
        }
    }

    #[test]
    fn addition_grid_is_a_major_with_answers() {
        let p = addition().problems();
        assert_eq!(p.len(), 10_000);
        assert_eq!(p[0].prompt, "Output ONLY a number.\n0+0=");
        assert_eq!((p[150].a, p[150].b, p[150].answer), (1, Some(50), Some(51)));
        assert_eq!(p[150].prompt_id, 150);
    }

    #[test]
    fn operand_spans_point_at_the_numbers() {
        let t = addition();
        let p = &t.problems()[3745];
        let spans = t.operand_spans(p);
        assert_eq!(&p.prompt[spans[0].1.clone()], "37");
        assert_eq!(&p.prompt[spans[1].1.clone()], "45");
        assert_eq!((spans[0].0, spans[1].0), ("a", "b"));
    }

    #[test]
    fn other_tasks_filter_and_answer() {
        let t = Task {
            kind: TaskKind::Times1_5,
            template: "Output ONLY a number.\n{a}*1.5=".into(),
            a: [0, 99],
            b: None,
            special_tokens: false,
        };
        let p = t.problems();
        assert_eq!(p.len(), 50);
        assert_eq!(p[3].answer, Some(9));
        let t = Task {
            kind: TaskKind::Subtract23,
            template: "{a}-23=".into(),
            a: [0, 99],
            b: None,
            special_tokens: false,
        };
        assert_eq!(t.problems()[0].a, 23);
        let bad = Task {
            template: "{a}=".into(),
            ..addition()
        };
        assert!(bad.validate().unwrap_err().contains("{b}"));
    }
}
