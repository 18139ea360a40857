//! `problems.parquet`: one row per prompt of the task, with what the model answered.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float32Array, Int64Array, ListArray, StringArray, UInt32Array,
};
use arrow::datatypes::{DataType, Field, Schema, UInt32Type};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;

use crate::manifest::Manifest;
use crate::read::{optional_column, typed_column};
use crate::{atomic, io, Result, StoreError};

/// One prompt and the model's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct ProblemRow {
    /// Row id within the task.
    pub prompt_id: u32,
    /// First operand (x for bare numbers).
    pub a: i64,
    /// Second operand.
    pub b: Option<i64>,
    /// Correct answer.
    pub answer: Option<i64>,
    /// The prompt.
    pub prompt: String,
    /// The token of the answer (the bare number, no special tokens).
    pub answer_token: Option<u32>,
    /// Argmax token at the last position (`None` for tasks without answers, which are not run).
    pub pred_token: Option<u32>,
    /// Its text.
    pub pred_text: Option<String>,
    /// The predicted token read as a number, when it is one.
    pub pred_value: Option<i64>,
    /// pred_token == answer_token.
    pub correct: Option<bool>,
    /// Logit of the answer token.
    pub answer_logit: Option<f32>,
    /// Rank of the answer token among all tokens (0 = top).
    pub answer_rank: Option<u32>,
    /// The largest logit.
    pub top_logit: Option<f32>,
    /// Every token of the answer (one for the paper's models; digit by digit for SmolLM2).
    pub answer_tokens: Option<Vec<u32>>,
    /// log P(answer | prompt): the sum over the answer's tokens of the log-softmax of the
    /// logits before each, the tokens before it given (teacher forcing).
    pub answer_logprob: Option<f32>,
    /// How many tokens each operand takes, in template order (`"2,1"`: a two tokens, b one).
    /// Problems with the same layout have every named position at the same offset, so
    /// patching pairs them only with each other.
    pub token_layout: Option<String>,
}

/// The arrow schema of problems.parquet.
pub fn schema() -> Schema {
    Schema::new(vec![
        Field::new("prompt_id", DataType::UInt32, false),
        Field::new("a", DataType::Int64, false),
        Field::new("b", DataType::Int64, true),
        Field::new("answer", DataType::Int64, true),
        Field::new("prompt", DataType::Utf8, false),
        Field::new("answer_token", DataType::UInt32, true),
        Field::new("pred_token", DataType::UInt32, true),
        Field::new("pred_text", DataType::Utf8, true),
        Field::new("pred_value", DataType::Int64, true),
        Field::new("correct", DataType::Boolean, true),
        Field::new("answer_logit", DataType::Float32, true),
        Field::new("answer_rank", DataType::UInt32, true),
        Field::new("top_logit", DataType::Float32, true),
        Field::new(
            "answer_tokens",
            DataType::List(Arc::new(Field::new("item", DataType::UInt32, true))),
            true,
        ),
        Field::new("answer_logprob", DataType::Float32, true),
        Field::new("token_layout", DataType::Utf8, true),
    ])
}

fn batch(rows: &[ProblemRow]) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_iter_values(
            rows.iter().map(|r| r.prompt_id),
        )),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.a))),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.b))),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.answer))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.prompt),
        )),
        Arc::new(UInt32Array::from_iter(rows.iter().map(|r| r.answer_token))),
        Arc::new(UInt32Array::from_iter(rows.iter().map(|r| r.pred_token))),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.pred_text.as_deref()),
        )),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.pred_value))),
        Arc::new(BooleanArray::from_iter(rows.iter().map(|r| r.correct))),
        Arc::new(Float32Array::from_iter(rows.iter().map(|r| r.answer_logit))),
        Arc::new(UInt32Array::from_iter(rows.iter().map(|r| r.answer_rank))),
        Arc::new(Float32Array::from_iter(rows.iter().map(|r| r.top_logit))),
        Arc::new(ListArray::from_iter_primitive::<UInt32Type, _, _>(
            rows.iter().map(|r| {
                r.answer_tokens
                    .as_ref()
                    .map(|t| t.iter().map(|&x| Some(x)).collect::<Vec<_>>())
            }),
        )),
        Arc::new(Float32Array::from_iter(
            rows.iter().map(|r| r.answer_logprob),
        )),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.token_layout.as_deref()),
        )),
    ];
    RecordBatch::try_new(Arc::new(schema()), cols)
}

/// Writes `rows` to `path` (temp + rename), then its manifest.
pub fn write(path: &Path, rows: &[ProblemRow], manifest: &Manifest) -> Result<()> {
    let fmt = |e: &dyn std::fmt::Display| StoreError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let (temp, file) = atomic::Temp::create(path)?;
    let props = crate::activations::writer_properties(manifest);
    let mut w = ArrowWriter::try_new(file, Arc::new(schema()), Some(props)).map_err(|e| fmt(&e))?;
    for chunk in rows.chunks(65_536) {
        w.write(&batch(chunk).map_err(|e| fmt(&e))?)
            .map_err(|e| fmt(&e))?;
    }
    w.close().map_err(|e| fmt(&e))?;
    temp.commit()?;
    manifest.write_for(path)
}

/// Value `i` of an optional column, `None` where the column is absent or the value null.
fn at<A: Array, T>(c: Option<&A>, i: usize, value: impl Fn(&A, usize) -> T) -> Option<T> {
    c.filter(|c| c.is_valid(i)).map(|c| value(c, i))
}

/// Reads `path` (problems.parquet) back, row by row. Columns recorded only by later versions
/// (`answer_tokens`, `answer_logprob`, `token_layout`, ...) read as `None` where a table lacks
/// them; `prompt_id`, `a` and `prompt` are required.
///
/// With arrow's reader rather than polars: every stage that runs the model reads this table
/// first, and for the toy's 10,000 problems polars' query planning and thread pools took
/// longer than its gradient pass (`perf`).
pub fn read(path: &Path) -> Result<Vec<ProblemRow>> {
    read_where(path, |_| true)
}

/// [`read`], keeping only the rows whose prompt id passes `keep` (the others are decoded but
/// not copied out: the patching stages need a few hundred of the toy's 10,000).
pub fn read_where(path: &Path, keep: impl Fn(u32) -> bool) -> Result<Vec<ProblemRow>> {
    let fmt = |message: String| StoreError::Format {
        path: path.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(path).map_err(io(path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(65_536).build())
        .map_err(|e| fmt(e.to_string()))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| fmt(e.to_string()))?;
        let (u32s, i64s, f32s) = ("u32", "i64", "f32");
        let id = typed_column::<UInt32Array>(&batch, "prompt_id", u32s).map_err(fmt)?;
        let a = typed_column::<Int64Array>(&batch, "a", i64s).map_err(fmt)?;
        let prompt = typed_column::<StringArray>(&batch, "prompt", "a string").map_err(fmt)?;
        let b = optional_column::<Int64Array>(&batch, "b", i64s).map_err(fmt)?;
        let answer = optional_column::<Int64Array>(&batch, "answer", i64s).map_err(fmt)?;
        let answer_token =
            optional_column::<UInt32Array>(&batch, "answer_token", u32s).map_err(fmt)?;
        let pred_token = optional_column::<UInt32Array>(&batch, "pred_token", u32s).map_err(fmt)?;
        let pred_text =
            optional_column::<StringArray>(&batch, "pred_text", "a string").map_err(fmt)?;
        let pred_value = optional_column::<Int64Array>(&batch, "pred_value", i64s).map_err(fmt)?;
        let correct =
            optional_column::<BooleanArray>(&batch, "correct", "a boolean").map_err(fmt)?;
        let answer_logit =
            optional_column::<Float32Array>(&batch, "answer_logit", f32s).map_err(fmt)?;
        let answer_rank =
            optional_column::<UInt32Array>(&batch, "answer_rank", u32s).map_err(fmt)?;
        let top_logit = optional_column::<Float32Array>(&batch, "top_logit", f32s).map_err(fmt)?;
        let answer_tokens =
            optional_column::<ListArray>(&batch, "answer_tokens", "a list").map_err(fmt)?;
        let answer_logprob =
            optional_column::<Float32Array>(&batch, "answer_logprob", f32s).map_err(fmt)?;
        let token_layout =
            optional_column::<StringArray>(&batch, "token_layout", "a string").map_err(fmt)?;
        if id.null_count() + a.null_count() + prompt.null_count() > 0 {
            return Err(fmt("null in `prompt_id`, `a` or `prompt`".into()));
        }
        let token_values = match answer_tokens {
            Some(l) => Some(
                l.values()
                    .as_any()
                    .downcast_ref::<UInt32Array>()
                    .ok_or_else(|| fmt("column `answer_tokens` is not a list of u32".into()))?,
            ),
            None => None,
        };
        // A row's tokens from the list's offsets: `ListArray::value` makes an array per row.
        let tokens = |l: &ListArray, i: usize| -> Vec<u32> {
            let (lo, hi) = (
                l.value_offsets()[i] as usize,
                l.value_offsets()[i + 1] as usize,
            );
            let v = token_values.expect("answer_tokens present");
            (lo..hi)
                .filter(|&k| v.is_valid(k))
                .map(|k| v.value(k))
                .collect()
        };
        for i in 0..batch.num_rows() {
            if !keep(id.value(i)) {
                continue;
            }
            rows.push(ProblemRow {
                prompt_id: id.value(i),
                a: a.value(i),
                b: at(b, i, Int64Array::value),
                answer: at(answer, i, Int64Array::value),
                prompt: prompt.value(i).to_string(),
                answer_token: at(answer_token, i, UInt32Array::value),
                pred_token: at(pred_token, i, UInt32Array::value),
                pred_text: at(pred_text, i, |c, i| c.value(i).to_string()),
                pred_value: at(pred_value, i, Int64Array::value),
                correct: at(correct, i, BooleanArray::value),
                answer_logit: at(answer_logit, i, Float32Array::value),
                answer_rank: at(answer_rank, i, UInt32Array::value),
                top_logit: at(top_logit, i, Float32Array::value),
                answer_tokens: at(answer_tokens, i, tokens),
                answer_logprob: at(answer_logprob, i, Float32Array::value),
                token_layout: at(token_layout, i, |c, i| c.value(i).to_string()),
            });
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::StageRun;

    fn row(i: u32) -> ProblemRow {
        let answered = !i.is_multiple_of(3);
        ProblemRow {
            prompt_id: i,
            a: i as i64 * 7,
            b: i.is_multiple_of(2).then_some(i as i64),
            answer: answered.then_some(i as i64 * 8),
            prompt: format!("{}+{}=", i * 7, i),
            answer_token: answered.then_some(1000 + i),
            pred_token: Some(5),
            pred_text: answered.then(|| format!("t{i}")),
            pred_value: None,
            correct: answered.then_some(i % 4 == 1),
            answer_logit: answered.then_some(i as f32 / 4.0),
            answer_rank: Some(i),
            top_logit: Some(-(i as f32)),
            answer_tokens: answered.then(|| (0..i % 3 + 1).map(|k| 10 * i + k).collect()),
            answer_logprob: answered.then_some(-0.5 * i as f32),
            token_layout: (!i.is_multiple_of(5)).then(|| "1,2".to_string()),
        }
    }

    #[test]
    fn problems_read_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("problems.parquet");
        let rows: Vec<ProblemRow> = (0..70_000).map(row).collect();
        let manifest = StageRun::new("accuracy", serde_json::json!({})).finished();
        write(&path, &rows, &manifest).unwrap();
        assert_eq!(read(&path).unwrap(), rows);
    }

    #[test]
    fn older_tables_read_with_their_later_columns_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("problems.parquet");
        let schema = Arc::new(Schema::new(vec![
            Field::new("prompt_id", DataType::UInt32, false),
            Field::new("a", DataType::Int64, false),
            Field::new("prompt", DataType::Utf8, false),
            Field::new("answer", DataType::Int64, true),
        ]));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from(vec![4u32])),
            Arc::new(Int64Array::from(vec![3i64])),
            Arc::new(StringArray::from(vec!["3+1="])),
            Arc::new(Int64Array::from(vec![Some(4i64)])),
        ];
        let mut w =
            ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema.clone(), None)
                .unwrap();
        w.write(&RecordBatch::try_new(schema, cols).unwrap())
            .unwrap();
        w.close().unwrap();
        let got = read(&path).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].prompt_id, got[0].a, got[0].answer), (4, 3, Some(4)));
        assert_eq!(got[0].prompt, "3+1=");
        assert!(got[0].answer_tokens.is_none() && got[0].token_layout.is_none());
        assert!(got[0].b.is_none() && got[0].correct.is_none());

        // A required column missing, or a column of another type, is named.
        let schema = Arc::new(Schema::new(vec![
            Field::new("prompt_id", DataType::UInt32, false),
            Field::new("a", DataType::Utf8, false),
        ]));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from(vec![4u32])),
            Arc::new(StringArray::from(vec!["x"])),
        ];
        let mut w =
            ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema.clone(), None)
                .unwrap();
        w.write(&RecordBatch::try_new(schema, cols).unwrap())
            .unwrap();
        w.close().unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(
            e.contains("problems.parquet") && e.contains("`a` is not i64"),
            "{e}"
        );
    }
}
